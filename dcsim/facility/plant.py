"""The cooling plant during a run: turns the cluster's IT power into facility power between events, exactly.

The run-time side of :mod:`dcsim.facility.cooling`. Between two events the IT power is constant and the
outdoor temperatures are constant between weather steps (hourly EPW records, or constants), so the room's
heat removal ``Q`` follows the closed form ``Q(t) = P_IT + (Q_0 − P_IT)·e^(−t/τ)`` and the facility energy
of an interval is exact (:meth:`CoolingModel.advance`'s formula, evaluated here on plain floats because it
runs at every event; ``tests/test_facility_plant.py`` checks the two agree). An interval that spans a
weather step is split there.
"""
from __future__ import annotations

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

    # ------------------------------------------------------------------------------------------- now
    def cooling_power_w(self) -> float:
        """Cooling power now (chiller + economiser auxiliaries + fans), W, at the heat removal now."""
        return self._k * self.heat_w + self.fan_w

    def extra_power_w(self) -> float:
        """Facility power above IT now (cooling + fixed overhead), W: the market's extra base load."""
        return self._k * self.heat_w + self.fan_w + self.overhead_w

    def room_temperature_c(self) -> float:
        """Room (return) air temperature now, °C."""
        return float(self.model.room_temperature_c(self.heat_w))

    def outdoor_dry_bulb_c(self) -> float:
        """Outdoor dry-bulb temperature now, °C."""
        return float(self.dry_bulb_c[self._i])

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
