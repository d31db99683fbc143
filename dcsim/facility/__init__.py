"""Facility models (power-delivery tree, safety capping, cooling, failures, battery dispatch) as pure components.

Each module is usable on its own, over numpy arrays; :mod:`dcsim.power_delivery` (the tree, limits and
safety layer) and :mod:`dcsim.outages` (failures) wire them into runs (see ``docs/facility.md``).
"""
# dcsim.config imports dcsim.facility.config part-way through (Scenario.facility); importing it here first
# makes ``import dcsim.facility.<anything>`` work in either order.
import dcsim.config  # noqa: F401,E402
