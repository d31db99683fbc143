"""Facility models (power-delivery tree, safety capping, cooling, failures, battery dispatch) as pure components.

Scenario files carry them as ``facility:`` (:mod:`dcsim.facility.config`). Wired into runs so far: cooling and
PUE (:mod:`dcsim.facility.plant`, called by :class:`dcsim.meter.EnergyMeter`); the other modules are usable on
their own, over numpy arrays (see ``docs/facility.md``).
"""

import dcsim.config  # noqa: E402,F401  (dcsim.config imports dcsim.facility.config part-way: load it first)
