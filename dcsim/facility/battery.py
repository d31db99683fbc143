"""Dispatchable battery (charge from the grid, hold, discharge at a rate) with exact energy, and demand/export tariffs.

Consistent with :class:`dcsim.energy.EnergyBooks`: state of charge in J, the round-trip efficiency
``η`` split evenly, ``η_c = η_d = √η``. Charging at bus power ``c`` W stores ``c·η_c``; discharging
``d`` W to the bus draws ``d/η_d`` from storage. Rates are bus-side (what the site's meter sees).
Within an interval at a constant command the state of charge moves linearly until it reaches a
bound, at

    t* = (SoC_max − SoC)/(c·η_c)   (charging)      t* = (SoC − SoC_min)·η_d/d   (discharging)

after which the battery holds; the interval is split there exactly, so
``ΔSoC = charged·η_c − discharged/η_d`` and ``charged − discharged = ΔSoC + loss`` to rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dcsim.config import BatteryConfig
from dcsim.energy import J_PER_MWH, J_PER_WH
from dcsim.policy import Dispatch  # noqa: F401  (re-exported: the command a facility agent gives)
from dcsim.timeseries import StepSeries


@dataclass(frozen=True)
class BatteryParams:
    """A battery's limits.

    Attributes:
        capacity_j: Usable energy capacity, J (> 0).
        max_charge_w: Largest bus-side charging power, W (>= 0).
        max_discharge_w: Largest bus-side discharging power, W (>= 0).
        round_trip_efficiency: ``η`` in (0, 1]; ``η_c = η_d = √η``.
        min_soc_fraction: Lowest allowed state of charge, fraction of capacity.
        max_soc_fraction: Highest allowed state of charge, fraction of capacity.
    """

    capacity_j: float
    max_charge_w: float
    max_discharge_w: float
    round_trip_efficiency: float = 0.9
    min_soc_fraction: float = 0.0
    max_soc_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not (self.capacity_j > 0 and math.isfinite(self.capacity_j)):
            raise ValueError(f"capacity_j must be a finite number > 0, got {self.capacity_j!r}")
        for name in ("max_charge_w", "max_discharge_w"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not 0 < self.round_trip_efficiency <= 1:
            raise ValueError(f"round_trip_efficiency must be in (0, 1], got {self.round_trip_efficiency!r}")
        if not 0 <= self.min_soc_fraction < self.max_soc_fraction <= 1:
            raise ValueError(f"need 0 <= min_soc_fraction < max_soc_fraction <= 1, got {self.min_soc_fraction!r} "
                             f"and {self.max_soc_fraction!r}")

    @classmethod
    def from_config(cls, battery: BatteryConfig, min_soc_fraction: float = 0.0,
                    max_soc_fraction: float = 1.0) -> "BatteryParams":
        """The limits of a scenario's ``supply.battery`` (capacity given in Wh there)."""
        return cls(battery.capacity_wh * J_PER_WH, battery.max_charge_w, battery.max_discharge_w,
                   battery.round_trip_efficiency, min_soc_fraction, max_soc_fraction)

    @property
    def eta_c(self) -> float:
        return math.sqrt(self.round_trip_efficiency)

    @property
    def eta_d(self) -> float:
        return math.sqrt(self.round_trip_efficiency)

    @property
    def soc_min_j(self) -> float:
        return self.min_soc_fraction * self.capacity_j

    @property
    def soc_max_j(self) -> float:
        return self.max_soc_fraction * self.capacity_j


@dataclass(frozen=True)
class BatteryStep:
    """One interval of battery operation (energies J, bus side unless said otherwise).

    Attributes:
        soc_start_j, soc_end_j: State of charge at the interval's ends, J.
        charged_j: Energy taken from the bus.
        discharged_j: Energy delivered to the bus.
        loss_j: Conversion losses, ``charged·(1 − η_c) + discharged·(1/η_d − 1)``.
        bound_at_s: Time into the interval at which the state of charge reached a bound (the battery
            holds from then on), or None if it did not.
        active_s: Seconds spent charging or discharging (``dt_s`` unless a bound was reached).
    """

    soc_start_j: float
    soc_end_j: float
    charged_j: float
    discharged_j: float
    loss_j: float
    bound_at_s: float | None
    active_s: float

    @property
    def bus_power_w(self) -> float:
        """Mean bus power over the active part, W: positive discharging, negative charging, 0 holding."""
        return 0.0 if self.active_s == 0 else (self.discharged_j - self.charged_j) / self.active_s


def dispatch_step(params: BatteryParams, soc_j: float, command: Dispatch, rate_w: float, dt_s: float) -> BatteryStep:
    """Run the battery for ``dt_s`` seconds at one command, exactly (splitting where a bound is reached).

    Args:
        params: The battery.
        soc_j: State of charge at the start, J, within ``[soc_min_j, soc_max_j]``.
        command: HOLD, CHARGE or DISCHARGE.
        rate_w: Bus-side power of the command, W, in ``[0, max_charge_w]`` or ``[0, max_discharge_w]``
            (ignored when holding).
        dt_s: Interval length, s (>= 0).

    Raises:
        ValueError: A state of charge outside its bounds, a rate outside its limit, or a negative ``dt_s``.
    """
    command = Dispatch(command)
    lo, hi = params.soc_min_j, params.soc_max_j
    tol = 1e-12 * params.capacity_j
    if not lo - tol <= soc_j <= hi + tol:
        raise ValueError(f"soc_j = {soc_j!r} is outside [{lo!r}, {hi!r}] J (min/max_soc_fraction × capacity)")
    if not (dt_s >= 0 and math.isfinite(dt_s)):
        raise ValueError(f"dt_s must be a finite number >= 0, got {dt_s!r}")
    soc_j = min(hi, max(lo, float(soc_j)))
    if command is Dispatch.HOLD or rate_w == 0 or dt_s == 0:
        if command is not Dispatch.HOLD:
            _check_rate(params, command, rate_w)
        return BatteryStep(soc_j, soc_j, 0.0, 0.0, 0.0, None, 0.0)
    _check_rate(params, command, rate_w)
    if command is Dispatch.CHARGE:
        t_bound = (hi - soc_j) / (rate_w * params.eta_c)
    else:
        t_bound = (soc_j - lo) * params.eta_d / rate_w
    active = min(dt_s, t_bound)
    hit = t_bound <= dt_s
    if command is Dispatch.CHARGE:
        charged, discharged = rate_w * active, 0.0
        end = hi if hit else min(hi, soc_j + charged * params.eta_c)
    else:
        charged, discharged = 0.0, rate_w * active
        end = lo if hit else max(lo, soc_j - discharged / params.eta_d)
    loss = charged * (1 - params.eta_c) + discharged * (1 / params.eta_d - 1)
    return BatteryStep(soc_j, end, charged, discharged, loss, t_bound if hit else None, active)


def _check_rate(params: BatteryParams, command: Dispatch, rate_w: float) -> None:
    limit = params.max_charge_w if command is Dispatch.CHARGE else params.max_discharge_w
    name = "max_charge_w" if command is Dispatch.CHARGE else "max_discharge_w"
    if not (0 <= rate_w <= limit):
        raise ValueError(f"{command.name} at rate_w = {rate_w!r} W; expected a rate in [0, {limit:g}] W ({name})")


# ------------------------------------------------------------------------------------------- tariffs
def _step_energy_at(times_s: np.ndarray, power_w: np.ndarray, at_s: np.ndarray) -> np.ndarray:
    """Cumulative energy ``∫_{t_0}^{at} P dt`` of a step function, J (exact: linear between change times)."""
    knots = np.concatenate([[0.0], np.cumsum(power_w[:-1] * np.diff(times_s))])
    # Past the last knot the last power holds; np.interp would flatten, so extend by hand.
    inside = np.interp(np.minimum(at_s, times_s[-1]), times_s, knots)
    return inside + power_w[-1] * np.maximum(at_s - times_s[-1], 0.0)


def _check_steps(times_s, power_w, end_s: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(times_s, dtype=float)
    p = np.asarray(power_w, dtype=float)
    if t.ndim != 1 or t.shape != p.shape or t.size == 0 or np.any(np.diff(t) <= 0) or not end_s > t[-1]:
        raise ValueError("times_s and power_w must be equal-length 1-D arrays, times strictly increasing, "
                         "with end_s after the last time")
    if not np.all(np.isfinite(p)):
        i = int(np.flatnonzero(~np.isfinite(p))[0])
        raise ValueError(f"power_w[{i}] = {p[i].item()!r}; expected a finite number of W")
    return t, p


def peak_demand_w(times_s, power_w, end_s: float, demand_interval_s: float = 900.0,
                  billing_window_s: float = 30 * 86400.0, origin_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Peak demand per billing window: the largest mean power over any demand interval in it, W.

    Demand intervals are fixed clock intervals ``[origin + i·Δ, origin + (i+1)·Δ)`` (15 min is the usual
    utility convention); a billing window holds whole demand intervals when ``billing_window_s`` is a
    multiple of ``demand_interval_s``. The power is a step function (``power_w[i]`` from ``times_s[i]``
    to the next time, the last to ``end_s``); each interval's mean is exact. A demand interval cut by
    the start or end of the data is averaged over the part covered.

    Returns:
        ``(window_start_s, peak_w)`` for every billing window the data touches.
    """
    t, p = _check_steps(times_s, power_w, end_s)
    if not (demand_interval_s > 0 and billing_window_s >= demand_interval_s):
        raise ValueError(f"need demand_interval_s > 0 and billing_window_s >= demand_interval_s, got "
                         f"{demand_interval_s!r} and {billing_window_s!r}")
    first = math.floor((t[0] - origin_s) / demand_interval_s)
    last = math.ceil((end_s - origin_s) / demand_interval_s)
    edges = origin_s + demand_interval_s * np.arange(first, last + 1)
    edges = np.clip(edges, t[0], end_s)
    energy = _step_energy_at(t, p, edges)
    span = np.diff(edges)
    used = span > 0
    mean_w = np.diff(energy)[used] / span[used]
    window = np.floor((edges[:-1][used] - origin_s) / billing_window_s).astype(np.int64)
    windows, where = np.unique(window, return_inverse=True)
    peak = np.full(windows.size, -np.inf)
    np.maximum.at(peak, where, mean_w)
    return origin_s + windows * billing_window_s, peak


def demand_charge_usd(peak_w: np.ndarray, usd_per_kw: float) -> float:
    """Demand charge: ``Σ_windows max(peak, 0)/1000 · usd_per_kw`` (a negative peak, net export, costs nothing)."""
    return float(np.sum(np.maximum(np.asarray(peak_w, dtype=float), 0.0)) / 1000.0 * usd_per_kw)


def export_revenue_usd(times_s, export_w, end_s: float, price_usd_per_mwh: StepSeries) -> float:
    """Revenue of power exported to the grid, ``∫ export_w · price dt``, USD (exact for step functions).

    Args:
        times_s, export_w: Export power as a step function, W (>= 0), until ``end_s``.
        end_s: End of the span, s.
        price_usd_per_mwh: The export price series (may be negative: then exporting costs money).
    """
    t, p = _check_steps(times_s, export_w, end_s)
    if np.any(p < 0):
        i = int(np.flatnonzero(p < 0)[0])
        raise ValueError(f"export_w[{i}] = {p[i].item()!r}; export power is >= 0 (imports are booked elsewhere)")
    knots = np.union1d(t, price_usd_per_mwh.change_times(float(t[0]), float(end_s)))
    knots = knots[(knots >= t[0]) & (knots < end_s)]
    dt = np.diff(np.append(knots, end_s))
    power = p[np.searchsorted(t, knots, side="right") - 1]
    price = np.asarray(price_usd_per_mwh.value_at(knots), dtype=float)
    return float(np.sum(power * dt * price) / J_PER_MWH)

