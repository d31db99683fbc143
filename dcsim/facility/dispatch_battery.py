"""The dispatched battery during a run: exact energy books with grid charging, grid export and demand charges.

Bound in the energy meter in place of :class:`dcsim.energy.EnergyBooks` only when a scenario sets
``facility.battery`` (so the default path is untouched). Each interval between events is booked at constant
load ``L`` and renewable power ``R`` under the battery command in force (a facility agent's :class:`Dispatch`
and rate, or the fixed rule when the policy does not dispatch), split exactly where the state of charge reaches
a bound, as :mod:`dcsim.facility.battery` does. Every sub-interval balances the bus:

    R + import + discharge = (L − unserved) + charge + export + curtailed

Flows (all W during a sub-interval, booked as J): ``surplus = max(R − L, 0)``, ``deficit = max(L − R, 0)``.

- CHARGE at ``c``: from the surplus first (``min(surplus, c)``), then from the grid when ``grid_charging`` is on,
  within what the import cap leaves after the load (``min(c − from_surplus, cap − deficit)``).
- DISCHARGE at ``d``: to the load first (``min(deficit, d)``), then exported, within what the export cap leaves
  after exported surplus renewable power.
- The fixed rule (no ``dispatch`` in the policy): CHARGE at ``max_charge_w`` from the surplus only when
  ``R >= L``, else DISCHARGE at ``max_discharge_w`` to the load only: :class:`EnergyBooks`' rule, with the state
  of charge held within ``[min_soc, max_soc]``.
- Surplus renewable power neither stored nor exported is curtailed. Power is exported only while the export
  price is positive (curtailing costs nothing; exporting at a negative price would cost money).

Grid import (load + charging) carries the grid's carbon and price; export earns the export price. Demand
charges bill, per billing window, the peak of the grid import's mean over fixed demand intervals counted from
the scenario start (the last one, cut by the horizon, is averaged over the part covered), times USD/kW.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dcsim.config import BatteryConfig
from dcsim.energy import J_PER_KWH, J_PER_MWH, EnergyBooks, EnergyTotals
from dcsim.facility.battery import BatteryParams
from dcsim.facility.config import BatteryDispatchConfig
from dcsim.policy import Dispatch

_CHARGE, _DISCHARGE, _HOLD = Dispatch.CHARGE, Dispatch.DISCHARGE, Dispatch.HOLD

#: Columns of ``dispatch.csv``: one row per decision of the facility agent.
DISPATCH_COLUMNS = ["time_s", "command", "requested_w", "rate_w", "clipped_w", "clipped_by", "soc_j"]


@dataclass
class GridTotals(EnergyTotals):
    """:class:`EnergyTotals` with the grid's two directions, J (revenue USD).

    The inherited fields keep their meaning for the load: ``grid_j`` is grid energy served to the load,
    ``battery_out_j`` battery energy served to the load, ``charged_j`` all energy the battery took from the bus
    (surplus renewable and grid). Identities (to floating-point precision):

        consumed = renewable_used + battery_out + grid + unserved
        renewable_generated = renewable_used + (charged − charge_from_grid) + renewable_export + curtailed
        ΔSoC = charged·η_c − (battery_out + battery_export)/η_d
        grid_import = grid + charge_from_grid,   grid_export = renewable_export + battery_export
    """

    charge_from_grid_j: float = 0.0
    battery_export_j: float = 0.0
    renewable_export_j: float = 0.0
    grid_import_j: float = 0.0
    grid_export_j: float = 0.0
    export_revenue_usd: float = 0.0


class DispatchedBattery(EnergyBooks):
    """The energy books of a run with ``facility.battery``: the battery obeys the command in force.

    Args:
        battery: The scenario's ``supply.battery``.
        import_cap_w: Grid import limit, W (None = unlimited).
        config: The scenario's ``facility.battery``.
        export_price_usd_per_mwh: The export price at t = 0 (None without export); the meter updates
            :attr:`export_price_usd_per_mwh` at each change.

    Attributes:
        command: The :class:`Dispatch` in force, or None for the fixed rule (until the policy's first decision,
            and always for a policy that does not dispatch).
        rate_w: Its bus-side rate after clipping, W.
        decision_rows: One :data:`DISPATCH_COLUMNS` row per decision.
        peaks_w: Billing window index → the largest demand-interval mean grid import in it so far, W.
    """

    def __init__(self, battery: BatteryConfig, import_cap_w: float | None, config: BatteryDispatchConfig,
                 export_price_usd_per_mwh: float | None):
        super().__init__(battery, import_cap_w)
        self.totals = GridTotals()
        self.params = p = BatteryParams.from_config(battery, config.min_soc, config.max_soc)
        self.config = config
        self.soc_min_j, self.soc_max_j = p.soc_min_j, p.soc_max_j
        self.grid_charging = config.grid_charging
        self.exports = export_price_usd_per_mwh is not None
        cap_w = math.inf if config.export_cap_w is None else float(config.export_cap_w)
        self.export_cap_w = cap_w if self.exports else 0.0
        self.export_price_usd_per_mwh = float(export_price_usd_per_mwh) if self.exports else math.nan
        self.command: Dispatch | None = None
        self.rate_w = 0.0
        self.decision_rows: list[tuple] = []
        # demand metering: fixed intervals [k·Δ, (k+1)·Δ) from t = 0, billing windows of a whole number of them
        self.demand_interval_s = float(config.demand_interval_s)
        self.intervals_per_window = int(round(config.billing_window_s / config.demand_interval_s))
        self.t_s = 0.0
        self._k = 0  # the demand interval now being metered
        self._interval_end_s = self.demand_interval_s
        self.interval_import_j = 0.0
        self.peaks_w: dict[int, float] = {}
        self._closed = False

    # ------------------------------------------------------------------------------------------- decisions
    def decide(self, now_s: float, command: Dispatch, rate_w: float) -> tuple:
        """Put a facility agent's command in force from now, clipped to the power limit and the state of charge's
        bounds; returns (and records) its :data:`DISPATCH_COLUMNS` row."""
        p = self.params
        requested = float(rate_w)
        clipped_by = ""
        if command is _HOLD:
            rate = 0.0
        else:
            limit = p.max_charge_w if command is _CHARGE else p.max_discharge_w
            rate = min(requested, limit)
            if rate < requested:
                clipped_by = "max_charge_w" if command is _CHARGE else "max_discharge_w"
            full = self.soc_j >= self.soc_max_j if command is _CHARGE else self.soc_j <= self.soc_min_j
            if full and rate > 0:
                rate, clipped_by = 0.0, "max_soc" if command is _CHARGE else "min_soc"
        self.command, self.rate_w = command, rate
        row = (now_s, command.name, requested, rate, requested - rate if command is not _HOLD else 0.0,
               clipped_by, self.soc_j)
        self.decision_rows.append(row)
        return row

    def discharge_available_w(self) -> float:
        """Power the battery delivers to the bus now under the command in force, W (what the market may sell)."""
        if self.soc_j <= self.soc_min_j:
            return 0.0
        if self.command is None:
            return self.max_discharge_w
        return self.rate_w if self.command is _DISCHARGE else 0.0

    # ------------------------------------------------------------------------------------------- books
    def advance(self, dt_s: float, demand_w: float, renewable_w: float, carbon_g_per_kwh: float,
                price_usd_per_mwh: float) -> None:
        """Book ``dt_s`` seconds at constant demand and renewable power (both W, >= 0) under the command in force."""
        t = self.totals
        lo, hi = self.soc_min_j, self.soc_max_j
        cap = self.import_cap_w
        eta_c, eta_d = self.eta_c, self.eta_d
        export_price = self.export_price_usd_per_mwh
        room_w = self.export_cap_w if export_price > 0 else 0.0  # NaN > 0 is False: no export without a price
        if renewable_w >= demand_w:
            used_w, surplus, deficit = demand_w, renewable_w - demand_w, 0.0
        else:
            used_w, surplus, deficit = renewable_w, 0.0, demand_w - renewable_w
        command = self.command
        if command is None:  # the fixed rule: store the surplus, cover the deficit; never the grid
            if renewable_w >= demand_w:
                command, rate, from_grid, to_grid = _CHARGE, self.max_charge_w, False, False
            else:
                command, rate, from_grid, to_grid = _DISCHARGE, self.max_discharge_w, False, False
        else:
            rate, from_grid, to_grid = self.rate_w, self.grid_charging, True
        while dt_s > 0:
            step = dt_s
            charge_surplus = charge_grid = discharge_load = discharge_export = 0.0
            if command is _CHARGE and self.soc_j < hi:
                charge_surplus = min(surplus, rate)
                if from_grid:
                    charge_grid = min(rate - charge_surplus, max(0.0, cap - deficit))
            charge_w = charge_surplus + charge_grid
            if charge_w > 0:
                step = min(step, (hi - self.soc_j) / (charge_w * eta_c))
            renewable_export = min(surplus - charge_surplus, room_w)
            curtailed_w = surplus - charge_surplus - renewable_export
            if command is _DISCHARGE and self.soc_j > lo:
                discharge_load = min(deficit, rate)
                if to_grid:
                    discharge_export = min(rate - discharge_load, room_w - renewable_export)
            discharge_w = discharge_load + discharge_export
            if discharge_w > 0:
                step = min(step, (self.soc_j - lo) * eta_d / discharge_w)
            need_w = deficit - discharge_load
            grid_w = min(need_w, cap)
            unserved_w = need_w - grid_w
            import_w = grid_w + charge_grid
            export_w = renewable_export + discharge_export

            t.consumed_j += demand_w * step
            t.renewable_used_j += used_w * step
            t.renewable_generated_j += renewable_w * step
            t.curtailed_j += curtailed_w * step
            t.charged_j += charge_w * step
            t.battery_out_j += discharge_load * step
            t.battery_loss_j += (charge_w * (1 - eta_c) + discharge_w * (1 / eta_d - 1)) * step
            t.grid_j += grid_w * step
            t.unserved_j += unserved_w * step
            t.carbon_g += import_w * step * carbon_g_per_kwh / J_PER_KWH
            t.cost_usd += import_w * step * price_usd_per_mwh / J_PER_MWH
            t.charge_from_grid_j += charge_grid * step
            t.battery_export_j += discharge_export * step
            t.renewable_export_j += renewable_export * step
            t.grid_import_j += import_w * step
            if export_w > 0:
                t.grid_export_j += export_w * step
                t.export_revenue_usd += export_w * step * export_price / J_PER_MWH
            self._meter_demand(import_w, step)

            if step < dt_s:  # the battery reached a bound inside the interval: pin it exactly and go on
                self.soc_j = hi if charge_w > 0 else lo
            else:
                self.soc_j = min(hi, max(lo, self.soc_j + (charge_w * eta_c - discharge_w / eta_d) * step))
            dt_s -= step

    def _meter_demand(self, import_w: float, step: float) -> None:
        """Add ``import_w`` over the next ``step`` seconds to the demand intervals it covers."""
        t0 = self.t_s
        t1 = t0 + step
        while t1 >= self._interval_end_s:
            self.interval_import_j += import_w * (self._interval_end_s - t0)
            t0 = self._interval_end_s
            self._close_interval(self.demand_interval_s)
        self.interval_import_j += import_w * (t1 - t0)
        self.t_s = t1

    def _close_interval(self, span_s: float) -> None:
        window = self._k // self.intervals_per_window
        mean_w = self.interval_import_j / span_s
        if mean_w > self.peaks_w.get(window, -math.inf):
            self.peaks_w[window] = mean_w
        self._k += 1
        self._interval_end_s = (self._k + 1) * self.demand_interval_s
        self.interval_import_j = 0.0

    def window_peak_w(self) -> float:
        """Largest demand-interval mean grid import so far in the billing window now running, W (0 if none yet)."""
        return max(0.0, self.peaks_w.get(self._k // self.intervals_per_window, 0.0))

    def interval_end_s(self) -> float:
        return self._interval_end_s

    def close(self) -> None:
        """At the horizon: meter the demand interval the horizon cuts, over the part it covers."""
        if not self._closed:
            covered = self.t_s - self._k * self.demand_interval_s
            if covered > 0:
                self._close_interval(covered)
            self._closed = True

    # ------------------------------------------------------------------------------------------- results
    def demand_charge_usd(self) -> float:
        """``Σ_windows max(peak, 0)/1000 × demand_charge_usd_per_kw``, USD."""
        return sum(max(p, 0.0) for p in self.peaks_w.values()) / 1000.0 * self.config.demand_charge_usd_per_kw

    def summary(self) -> dict[str, Any]:
        """``summary.json`` → ``facility.battery``: the grid's two directions, tariffs and the agent's decisions."""
        t = self.totals
        demand = self.demand_charge_usd()
        windows = sorted(self.peaks_w)
        rows = self.decision_rows
        by_command = {d.name: sum(1 for r in rows if r[1] == d.name) for d in Dispatch}
        return {
            "dispatch": "policy" if rows else "fixed rule",
            "grid_import_j": t.grid_import_j,
            "grid_export_j": t.grid_export_j,
            "charge_from_grid_j": t.charge_from_grid_j,
            "battery_export_j": t.battery_export_j,
            "renewable_export_j": t.renewable_export_j,
            "grid_energy_cost_usd": t.cost_usd,
            "export_revenue_usd": t.export_revenue_usd,
            "demand_charge_usd": demand,
            "net_grid_bill_usd": t.cost_usd + demand - t.export_revenue_usd,
            "peak_demand_w": max((self.peaks_w[w] for w in windows), default=0.0),
            "peak_demand_by_window_w": [self.peaks_w[w] for w in windows],
            "demand_interval_s": self.demand_interval_s,
            "billing_window_s": float(self.config.billing_window_s),
            "soc_bounds_j": [self.soc_min_j, self.soc_max_j],
            "decisions": len(rows),
            "decisions_by_command": by_command,
            "clipped_decisions": sum(1 for r in rows if r[5]),
            "clipped_w_total": float(sum(r[4] for r in rows)),
        }
