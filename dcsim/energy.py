"""Exact energy books between events: demand served by renewable, then battery, then grid."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from dcsim.config import BatteryConfig

J_PER_WH = 3600.0
J_PER_KWH = 3.6e6
J_PER_MWH = 3.6e9


@dataclass
class EnergyTotals:
    """Cumulative energy by flow, J (carbon in g, cost in USD). All fields are non-negative.

    Identities (each holds to floating-point precision):
        consumed = renewable_used + battery_out + grid + unserved
        renewable_generated = renewable_used + charged + curtailed
        battery soc change = charged·η_c − battery_out/η_d   (losses = charged·(1−η_c) + battery_out·(1/η_d − 1))
    """

    consumed_j: float = 0.0
    renewable_used_j: float = 0.0
    battery_out_j: float = 0.0
    grid_j: float = 0.0
    unserved_j: float = 0.0
    renewable_generated_j: float = 0.0
    charged_j: float = 0.0
    curtailed_j: float = 0.0
    battery_loss_j: float = 0.0
    carbon_g: float = 0.0
    cost_usd: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class EnergyBooks:
    """Integrates piecewise-constant demand and supply exactly, splitting an interval where the battery
    fills or empties.

    Args:
        battery: Battery settings, or None for none. Round-trip efficiency η is split evenly:
            η_c = η_d = √η.
        import_cap_w: Grid import limit, W (None = unlimited). Demand beyond all supply is booked as
            ``unserved`` (a physical shortfall the market failed to prevent).
    """

    def __init__(self, battery: BatteryConfig | None, import_cap_w: float | None):
        self.totals = EnergyTotals()
        self.import_cap_w = math.inf if import_cap_w is None else float(import_cap_w)
        if battery is None:
            self.capacity_j = 0.0
            self.soc_j = 0.0
            self.max_charge_w = self.max_discharge_w = 0.0
            self.eta_c = self.eta_d = 1.0
        else:
            self.capacity_j = battery.capacity_wh * J_PER_WH
            self.soc_j = battery.initial_soc * self.capacity_j
            self.max_charge_w = battery.max_charge_w
            self.max_discharge_w = battery.max_discharge_w
            self.eta_c = self.eta_d = math.sqrt(battery.round_trip_efficiency)
        self.initial_soc_j = self.soc_j

    @property
    def soc_fraction(self) -> float:
        return self.soc_j / self.capacity_j if self.capacity_j > 0 else 0.0

    def discharge_available_w(self) -> float:
        """Power the battery can deliver now, W (its limit while not empty)."""
        return self.max_discharge_w if self.soc_j > 0 else 0.0

    def advance(self, dt_s: float, demand_w: float, renewable_w: float, carbon_g_per_kwh: float,
                price_usd_per_mwh: float) -> None:
        """Book ``dt_s`` seconds at constant demand and renewable power (both W, >= 0)."""
        t = self.totals
        if self.capacity_j == 0.0 and (renewable_w >= demand_w or demand_w - renewable_w <= self.import_cap_w):
            # No battery and no shortfall (the common case): one interval, no splitting.
            used_w = min(renewable_w, demand_w)
            grid_w = demand_w - used_w
            t.consumed_j += demand_w * dt_s
            t.renewable_used_j += used_w * dt_s
            t.renewable_generated_j += renewable_w * dt_s
            t.curtailed_j += (renewable_w - used_w) * dt_s
            if grid_w > 0.0:
                t.grid_j += grid_w * dt_s
                t.carbon_g += grid_w * dt_s * carbon_g_per_kwh / J_PER_KWH
                t.cost_usd += grid_w * dt_s * price_usd_per_mwh / J_PER_MWH
            return
        while dt_s > 0:
            step = dt_s
            charge_w = discharge_w = 0.0
            if renewable_w >= demand_w:
                used_w = demand_w
                surplus = renewable_w - demand_w
                if self.soc_j < self.capacity_j:
                    charge_w = min(surplus, self.max_charge_w)
                    if charge_w > 0:
                        step = min(step, (self.capacity_j - self.soc_j) / (charge_w * self.eta_c))
                curtailed_w = surplus - charge_w
                need_w = 0.0
            else:
                used_w = renewable_w
                curtailed_w = 0.0
                deficit = demand_w - renewable_w
                if self.soc_j > 0:
                    discharge_w = min(deficit, self.max_discharge_w)
                    if discharge_w > 0:
                        step = min(step, self.soc_j * self.eta_d / discharge_w)
                need_w = deficit - discharge_w
            grid_w = min(need_w, self.import_cap_w)
            unserved_w = need_w - grid_w

            t.consumed_j += demand_w * step
            t.renewable_used_j += used_w * step
            t.renewable_generated_j += renewable_w * step
            t.curtailed_j += curtailed_w * step
            t.charged_j += charge_w * step
            t.battery_out_j += discharge_w * step
            t.battery_loss_j += (charge_w * (1 - self.eta_c) + discharge_w * (1 / self.eta_d - 1)) * step
            t.grid_j += grid_w * step
            t.unserved_j += unserved_w * step
            t.carbon_g += grid_w * step * carbon_g_per_kwh / J_PER_KWH
            t.cost_usd += grid_w * step * price_usd_per_mwh / J_PER_MWH

            if step < dt_s:  # the battery hit a limit inside the interval: pin it exactly and go on
                self.soc_j = self.capacity_j if charge_w > 0 else 0.0
            else:
                self.soc_j = min(self.capacity_j, max(0.0, self.soc_j + (charge_w * self.eta_c - discharge_w / self.eta_d) * step))
            dt_s -= step
