"""The energy meter: books the cluster's draw by source between events, at the supply that held in between."""
from __future__ import annotations

import pandas as pd
import simpy

from dcsim.cluster import Cluster
from dcsim.config import Scenario
from dcsim.energy import EnergyBooks
from dcsim.facility.dispatch_battery import DispatchedBattery
from dcsim.facility.plant import CoolingPlant
from dcsim.supply import SupplyInputs


class EnergyMeter:
    """The supply now (renewable power, grid carbon and price) and the exact energy books up to now.

    Power is piecewise constant between events, so each :meth:`advance` books ``P·Δt`` at the power and supply
    that held since the previous one (renewable first, then battery, then grid; see :class:`EnergyBooks`).
    The metered power is the cluster's draw (IT power), or with ``facility.cooling`` the facility power: IT +
    cooling + overhead, booked as each interval's exact facility energy (:class:`CoolingPlant`) at its mean
    power, so the books' energy, carbon and cost are exact; the split by source uses that mean power. With
    ``facility.battery`` the books are a :class:`DispatchedBattery` (grid charging, export, demand charges; the
    battery obeys the facility agent's command), also reachable as :attr:`battery` (None otherwise).

    Args:
        scenario: The validated scenario (its ``supply`` section).
        supply: Supply series aligned to the scenario start.
        env: The SimPy environment (its clock).
        cluster: The cluster whose draw is metered.
    """

    def __init__(self, scenario: Scenario, supply: SupplyInputs, env: simpy.Environment, cluster: Cluster):
        self.env = env
        self.cluster = cluster
        self.books = EnergyBooks(scenario.supply.battery, scenario.supply.grid.import_cap_w)
        self.renewable_w = float(supply.renewable_w.value_at(0.0))
        self.carbon = float(supply.carbon_g_per_kwh.value_at(0.0))  # g/kWh
        self.grid_price = float(supply.grid_price_usd_per_mwh.value_at(0.0))  # USD/MWh
        self._t_books = 0.0
        self.battery: DispatchedBattery | None = None
        if scenario.facility.battery is not None:  # a dispatchable battery with grid options: its own books
            export = supply.export_price_usd_per_mwh
            self.battery = DispatchedBattery(scenario.supply.battery, scenario.supply.grid.import_cap_w,
                                             scenario.facility.battery,
                                             None if export is None else float(export.value_at(0.0)))
            self.books = self.battery
            self._export_price = export
            self.set_supply = self._set_supply_and_export_price
        self.cooling: CoolingPlant | None = None
        cooling = scenario.facility.cooling
        if cooling is not None:
            design_w = scenario.cluster.gpus * scenario.cluster.power_spec()["tdp_w"]
            self.cooling = CoolingPlant(cooling, design_w, max(0.0, cluster.total_power_w),
                                        pd.Timestamp(scenario.start), scenario.horizon_s)
            self.advance = self._advance_facility  # the engine binds meter.advance once: no test on the hot path

    def advance(self) -> None:
        """Book energy by source from the last event to now at the power that held in between."""
        now = self.env.now
        dt = now - self._t_books
        if dt > 0:
            self.books.advance(dt, max(0.0, self.cluster.total_power_w), self.renewable_w, self.carbon, self.grid_price)
            self._t_books = now

    def _advance_facility(self) -> None:
        """:meth:`advance` with cooling: book the interval's exact facility energy at its mean power."""
        now = self.env.now
        dt = now - self._t_books
        if dt > 0:
            facility_j = self.cooling.energy_to(now, max(0.0, self.cluster.total_power_w))
            self.books.advance(dt, facility_j / dt, self.renewable_w, self.carbon, self.grid_price)
            self._t_books = now

    def extra_load_w(self) -> float:
        """Facility power above the cluster's draw now (cooling + overhead), W; 0 without cooling."""
        return 0.0 if self.cooling is None else self.cooling.extra_power_w()

    def set_supply(self, renewable_w: float, carbon_g_per_kwh: float, grid_price_usd_per_mwh: float) -> None:
        """The supply changes now (call :meth:`advance` first)."""
        self.renewable_w, self.carbon, self.grid_price = renewable_w, carbon_g_per_kwh, grid_price_usd_per_mwh

    def _set_supply_and_export_price(self, renewable_w: float, carbon_g_per_kwh: float,
                                     grid_price_usd_per_mwh: float) -> None:
        """:meth:`set_supply` with ``facility.battery``: the export price now, too (its changes are supply events)."""
        self.renewable_w, self.carbon, self.grid_price = renewable_w, carbon_g_per_kwh, grid_price_usd_per_mwh
        if self._export_price is not None:
            self.battery.export_price_usd_per_mwh = float(self._export_price.value_at(self.env.now))

    def sellable_w(self, base_load_w: float) -> float:
        """Power the real supply can serve above ``base_load_w`` now: renewable + battery + grid import cap."""
        return max(0.0, self.renewable_w + self.books.discharge_available_w() + self.books.import_cap_w - base_load_w)
