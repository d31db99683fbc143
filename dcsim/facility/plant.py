"""The cooling plant during a run: turns the cluster's IT power into facility power between events, exactly.

The run-time side of :mod:`dcsim.facility.cooling`. Between two events the IT power is constant and the
outdoor temperatures are constant between weather steps (hourly EPW records, or constants), so the room's
heat removal ``Q`` follows the closed form ``Q(t) = P_IT + (Q_0 − P_IT)·e^(−t/τ)`` and the facility energy
of an interval is exact (:meth:`CoolingModel.advance`'s formula, evaluated here on plain floats because it
runs at every event; ``tests/test_facility_plant.py`` checks the two agree). An interval that spans a
weather step is split there. With ``facility.cooling.setpoint_control`` the supply-air setpoint (and with it ``k``
and the room's stored heat) changes at the facility agent's decisions (:meth:`CoolingPlant.set_supply_air`).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from dcsim.facility.config import CoolingConfig
from dcsim.facility.cooling import CoolingModel, epw_temperatures_at

_HOUR_S = 3600.0


class CoolingPlant:
    """The room's thermal state and the cooling energy books of one run.

    The room starts settled at the IT power of t = 0 (``Q_0 = P_IT(0)``): a run begins in steady state.

    Args:
        config: The scenario's ``facility.cooling`` section.
        design_it_power_w: IT power the plant is sized for when the config leaves it null (the cluster at TDP), W.
        it_power_w: IT power at t = 0, W.
        start: The scenario's start (t = 0), UTC.
        horizon_s: The run's horizon, s.

    Attributes:
        it_j, cooling_j, overhead_j, facility_j: Energy booked so far, J
            (``facility = it + cooling + overhead``; cooling = chiller + economiser auxiliaries + fans).
        pue_time_integral_s: ``∫ P_fac/P_IT dt`` over the time IT power was > 0, s; with ``it_on_s`` (that time)
            gives the time-mean PUE.
    """

    def __init__(self, config: CoolingConfig, design_it_power_w: float, it_power_w: float, start: pd.Timestamp,
                 horizon_s: float):
        self.model = CoolingModel(config.params(design_it_power_w))
        p = self.model.params
        self.supply_air_c = p.supply_air_c  # the setpoints in force (fixed without facility.cooling.setpoint_control)
        self.chilled_water_c = p.chilled_water_c
        self.conductance_w_per_k = p.conductance_w_per_k
        self.tau_s = p.time_constant_s
        self.fan_w = p.fan_w
        self.overhead_w = p.overhead_w
        self.change_s, self.dry_bulb_c, self.wet_bulb_c = _weather(config, start, horizon_s)
        wet = self.wet_bulb_c if p.needs_wet_bulb else None
        self.k = np.asarray(self.model.electric_per_heat(self.dry_bulb_c, wet), dtype=float).tolist()
        self._i = 0  # index of the weather step now in force
        self._k = self.k[0]
        self._next_change_s = self.change_s[1] if len(self.change_s) > 1 else math.inf
        self.heat_w = float(it_power_w)
        self._t = 0.0
        self.it_j = self.cooling_j = self.overhead_j = self.facility_j = 0.0
        self.pue_time_integral_s = self.it_on_s = 0.0
        self.heat_removed_j = 0.0
        self.control = config.setpoint_control
        if self.control is not None:
            self._k_by_setpoint: dict[float, list[float]] = {self.supply_air_c: self.k}
            self.setpoint_integral_c_s = 0.0  # ∫ T_supply dt
            self.inlet_over_s = 0.0  # time with the inlet (supply air) above inlet_limit_c
            self.inlet_over_k_s = 0.0  # ∫ max(T_supply − limit, 0) dt
            self.setpoint_changes = 0
            self._interval = self._interval_tracking

    # ------------------------------------------------------------------------------------------- books
    def energy_to(self, now_s: float, it_power_w: float) -> float:
        """Book ``[last call, now_s]`` at constant IT power and return its facility energy, J."""
        total = 0.0
        while self._next_change_s <= now_s:  # the weather changes inside the interval: split there
            total += self._interval(self._next_change_s - self._t, it_power_w)
            self._t = self._next_change_s
            self._i += 1
            self._k = self.k[self._i]
            self._next_change_s = self.change_s[self._i + 1] if self._i + 1 < len(self.change_s) else math.inf
        if now_s > self._t:
            total += self._interval(now_s - self._t, it_power_w)
            self._t = now_s
        return total

    def _interval(self, dt_s: float, it_w: float) -> float:
        """``dt_s`` seconds at IT power ``it_w`` from the heat removal now: the closed-form exchange, then the books."""
        if dt_s <= 0.0:
            return 0.0
        q0 = self.heat_w
        if self.tau_s > 0.0:
            decayed = -math.expm1(-dt_s / self.tau_s)
            heat_j = it_w * dt_s + (q0 - it_w) * self.tau_s * decayed
            self.heat_w = it_w + (q0 - it_w) * (1.0 - decayed)
        else:
            heat_j = it_w * dt_s
            self.heat_w = it_w
        return self._book(dt_s, it_w, heat_j)

    _exchange = _interval  # the plain interval, also under a name that setpoint control does not rebind

    def _interval_tracking(self, dt_s: float, it_w: float) -> float:
        """:meth:`_interval` with setpoint control: the same books (the same arithmetic), plus the setpoint's time
        integral, the inlet violations, the heat removed, and a coil-off phase after a setpoint step up.

        A step up by ``Δ`` leaves the room temperature where it was, so ``Q = G·(T_room − T_supply)`` falls by
        ``G·Δ``; when that takes ``Q`` below 0 the room is colder than the new supply air, the coil removes nothing
        (``Q = 0``) and the room warms at ``P_IT/C`` until it reaches the setpoint, after ``−Q·τ/P_IT`` seconds;
        then the usual ``Q(t) = P_IT + (Q_0 − P_IT)·e^(−t/τ)`` from ``Q_0 = 0``.
        """
        if dt_s <= 0.0:
            return 0.0
        over_k = self.supply_air_c - self.control.inlet_limit_c
        self.setpoint_integral_c_s += self.supply_air_c * dt_s
        if over_k > 0.0:
            self.inlet_over_s += dt_s
            self.inlet_over_k_s += over_k * dt_s
        total = 0.0
        q0 = self.heat_w
        if q0 < 0.0:  # coil off (only after a step up, with τ > 0): the room warms towards the setpoint
            warm_s = -q0 * self.tau_s / it_w if it_w > 0.0 else math.inf
            if warm_s >= dt_s:
                self.heat_w = q0 + it_w * dt_s / self.tau_s
                return self._book(dt_s, it_w, 0.0)
            self.heat_w = 0.0
            total = self._book(warm_s, it_w, 0.0)
            dt_s -= warm_s
        return total + self._exchange(dt_s, it_w)

    def _book(self, dt_s: float, it_w: float, heat_j: float) -> float:
        """Add ``dt_s`` seconds at IT power ``it_w`` removing ``heat_j`` to the books; return the facility energy."""
        self.heat_removed_j += heat_j
        it_j = it_w * dt_s
        cooling_j = self._k * heat_j + self.fan_w * dt_s
        overhead_j = self.overhead_w * dt_s
        facility_j = it_j + cooling_j + overhead_j
        self.it_j += it_j
        self.cooling_j += cooling_j
        self.overhead_j += overhead_j
        self.facility_j += facility_j
        if it_w > 0.0:
            self.pue_time_integral_s += facility_j / it_w
            self.it_on_s += dt_s
        return facility_j

    # ------------------------------------------------------------------------------------------- setpoint
    def electric_per_heat_at(self, supply_air_c: float) -> list[float]:
        """``k`` at every weather step with supply-air setpoint ``supply_air_c`` (chilled water as
        ``setpoint_control.chilled_water`` says), cached; the configured setpoint gives today's table exactly."""
        table = self._k_by_setpoint.get(supply_air_c)
        if table is None:
            p = self.model.params
            chilled = self.control.chilled_water_at(supply_air_c, p.supply_air_c, p.chilled_water_c)
            model = CoolingModel(dataclasses.replace(p, supply_air_c=float(supply_air_c), chilled_water_c=chilled))
            wet = self.wet_bulb_c if p.needs_wet_bulb else None
            table = np.asarray(model.electric_per_heat(self.dry_bulb_c, wet), dtype=float).tolist()
            self._k_by_setpoint[supply_air_c] = table
        return table

    def set_supply_air(self, supply_air_c: float) -> None:
        """Put a new supply-air setpoint in force from now (book energy up to now first: :meth:`energy_to`).

        The setpoint changes ``k`` (chiller COP, economiser share) at once. The room's air and equipment keep their
        temperature, so the heat removal ``Q = G·(T_room − T_supply)`` steps by ``−G·Δ`` and then relaxes to
        ``P_IT`` with the time constant ``τ``: a step down costs the heat ``C·Δ`` (``C = G·τ``) taken out of the
        room's mass, a step up stores it (and, where ``Q`` would fall below 0, turns the coil off until the room
        has warmed to the new setpoint; see :meth:`_interval_tracking`). With ``τ = 0`` the room has no mass: ``Q``
        stays ``P_IT``.
        """
        supply_air_c = float(supply_air_c)
        if supply_air_c != self.supply_air_c:
            self.setpoint_changes += 1
            if self.tau_s > 0.0:
                self.heat_w -= self.conductance_w_per_k * (supply_air_c - self.supply_air_c)
        p = self.model.params
        self.k = self.electric_per_heat_at(supply_air_c)
        self._k = self.k[self._i]
        self.supply_air_c = supply_air_c
        self.chilled_water_c = self.control.chilled_water_at(supply_air_c, p.supply_air_c, p.chilled_water_c)

    def electric_per_heat_by_level(self) -> tuple[float, ...]:
        """``k`` now, at the weather now, at each of ``setpoint_control.levels_c``."""
        i = self._i
        return tuple(self.electric_per_heat_at(c)[i] for c in self.control.levels_c)

    def electric_per_heat_now(self) -> float:
        """``k`` now: cooling-plant electric W per W of heat removed at the setpoint and weather now."""
        return self._k

    def setpoint_summary(self) -> dict[str, float]:
        """``summary.json`` → ``facility.setpoint``: the time-mean setpoint and the inlet violations."""
        span = self._t
        c = self.control
        return {
            "mean_supply_air_c": self.setpoint_integral_c_s / span if span > 0 else self.supply_air_c,
            "final_supply_air_c": self.supply_air_c,
            "setpoint_changes": self.setpoint_changes,
            "inlet_limit_c": c.inlet_limit_c,
            "inlet_violation_s": self.inlet_over_s,
            "inlet_violation_fraction": self.inlet_over_s / span if span > 0 else 0.0,
            "inlet_violation_k_h": self.inlet_over_k_s / _HOUR_S,
        }

    # ------------------------------------------------------------------------------------------- now
    def cooling_power_w(self) -> float:
        """Cooling power now (chiller + economiser auxiliaries + fans), W, at the heat removal now."""
        return self._k * max(self.heat_w, 0.0) + self.fan_w  # Q < 0 only with the coil off (setpoint_control)

    def extra_power_w(self) -> float:
        """Facility power above IT now (cooling + fixed overhead), W: the market's extra base load."""
        return self._k * max(self.heat_w, 0.0) + self.fan_w + self.overhead_w

    def room_temperature_c(self) -> float:
        """Room (return) air temperature now, °C: ``T_supply + Q/G`` (below the setpoint while the coil is off)."""
        return self.supply_air_c + self.heat_w / self.conductance_w_per_k

    def outdoor_dry_bulb_c(self) -> float:
        """Outdoor dry-bulb temperature now, °C."""
        return float(self.dry_bulb_c[self._i])

    def outdoor_wet_bulb_c(self) -> float:
        """Outdoor wet-bulb temperature now, °C (the dry-bulb for constant weather without ``wet_bulb_c``)."""
        return float(self.wet_bulb_c[self._i])

    def summary(self) -> dict[str, float]:
        """PUE (energy-weighted and time-mean) and the energy by part, for ``summary.json``."""
        return {
            "pue_energy_weighted": self.facility_j / self.it_j if self.it_j > 0 else math.nan,
            "pue_time_mean": self.pue_time_integral_s / self.it_on_s if self.it_on_s > 0 else math.nan,
            "it_energy_j": self.it_j,
            "cooling_energy_j": self.cooling_j,
            "overhead_energy_j": self.overhead_j,
            "facility_energy_j": self.facility_j,
        }


def _weather(config: CoolingConfig, start: pd.Timestamp, horizon_s: float) -> tuple[list[float], list, list]:
    """Weather step times (s after the start, the first 0) with dry-bulb and wet-bulb temperatures, °C."""
    w = config.weather
    if w.epw is None:
        wet = w.wet_bulb_c if w.wet_bulb_c is not None else w.dry_bulb_c
        return [0.0], [float(w.dry_bulb_c)], [float(wet)]
    first = start.floor("h")
    n = int(math.ceil((horizon_s + (start - first).total_seconds()) / _HOUR_S)) + 1
    times = pd.date_range(first, periods=n, freq="h")
    temps = epw_temperatures_at(w.epw, times)
    change = np.maximum(0.0, (times - start).total_seconds().to_numpy(dtype=float))
    return change.tolist(), temps["dry_bulb_c"].tolist(), temps["wet_bulb_c"].tolist()
