"""Facility models (power-delivery tree, safety capping, cooling, failures, battery dispatch) as pure components.

Not yet wired into runs: nothing here is called by :mod:`dcsim.engine` or read from scenario files
(see ``docs/facility.md``). Each module is usable on its own, over numpy arrays.
"""

import dcsim.config  # noqa: E402,F401  (dcsim.config imports dcsim.facility.config part-way: load it first)
