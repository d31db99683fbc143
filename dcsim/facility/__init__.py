"""Facility models (power-delivery tree, safety capping, cooling, failures, battery dispatch) as pure components.

Scenario files carry them as ``facility:`` (:mod:`dcsim.facility.config`). Wired into runs: cooling and PUE
(:mod:`dcsim.facility.plant`, called by :class:`dcsim.meter.EnergyMeter`), the power-delivery tree, limits and
safety layer (:mod:`dcsim.power_delivery`) and failures (:mod:`dcsim.outages`); each module is also usable on its
own, over numpy arrays (see ``docs/facility.md``).
"""
# dcsim.config imports dcsim.facility.config part-way through (Scenario.facility); importing it here first
# makes ``import dcsim.facility.<anything>`` work in either order.
import dcsim.config  # noqa: F401,E402
