"""Cooling and PUE: chiller COP from outdoor temperature, an economiser, fans, and a first-order room thermal state.

The room is one lumped zone. Its air and equipment store heat (capacitance ``C``, J/K); the cooling
units take heat out at ``Q = G·(T_room − T_supply)`` with a fixed airflow conductance ``G`` (W/K), so

    C·dT_room/dt = P_IT − G·(T_room − T_supply)   ⇔   τ·dQ/dt = P_IT − Q,   τ = C/G.

Heat removal ``Q`` therefore lags IT power with time constant ``τ``; at steady state ``Q = P_IT``
and ``T_room = T_supply + P_IT/G``. ``G = design_it_power_w / design_delta_t_k``.

Electric power of the cooling plant per W of heat removed, constant while the outdoor temperatures
are (they change only at weather-series steps):

    k = (1 − φ)/COP + φ·a_econ
    COP = min(COP_max, η_II · T_evap / (T_cond − T_evap))      (kelvin; Carnot COP times a second-law efficiency)
    T_evap = chilled_water_c − evaporator_approach_k
    T_cond = T_ref + condenser_approach_k, T_ref = dry-bulb (air-cooled) or wet-bulb (water-cooled)
    φ = clip((T_set − T_econ)/economiser_approach_k, 0, 1)  … economiser share of the heat
        (T_econ = dry-bulb, T_set = supply_air_c for an air-side economiser;
         T_econ = wet-bulb, T_set = chilled_water_c for a water-side one; φ = 0 with none)

Facility power ``P_fac = P_IT + P_fan + k·Q + P_overhead``. Between events ``P_IT`` and ``k`` are
constant, so (``Δ`` the interval, ``Q_0`` the heat removal at its start):

    Q(t)     = P_IT + (Q_0 − P_IT)·e^(−t/τ)
    ∫Q dt    = P_IT·Δ + (Q_0 − P_IT)·τ·(1 − e^(−Δ/τ))
    E_cool   = P_fan·Δ + k·∫Q dt,     E_fac = P_IT·Δ + E_cool + P_overhead·Δ

exact, with no time step. Sources of every coefficient and which defaults are assumptions:
``docs/facility.md``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from dcsim.errors import TraceError

ZERO_C_IN_K = 273.15


@dataclass(frozen=True)
class CoolingParams:
    """Parameters of the cooling model (temperatures °C, differences K, powers W, times s).

    Attributes:
        design_it_power_w: IT power the cooling is sized for, W (sets the airflow conductance ``G``).
        supply_air_c: Supply (cold-aisle) air setpoint, °C. Default 24 °C: inside the ASHRAE TC 9.9
            recommended inlet range 18–27 °C.
        design_delta_t_k: Air temperature rise across the IT at design power, K (assumption: 12 K).
        time_constant_s: Room thermal time constant ``τ = C/G``, s (assumption: 600 s); 0 = no lag.
        chilled_water_c: Chilled-water supply temperature, °C (assumption: 15 °C, below the supply air).
        evaporator_approach_k: Evaporator refrigerant below the chilled water, K (assumption: 2 K).
        condenser: ``"air"``: condenser rejects to outdoor dry-bulb air; ``"water"``: to a cooling tower
            following the outdoor wet-bulb.
        condenser_approach_k: Condensing temperature above the outdoor reference, K (assumption: 8 K).
        second_law_efficiency: Chiller COP as a fraction of Carnot, ``η_II`` (assumption: 0.5).
        max_cop: Upper bound on the chiller COP (assumption: 12), for small lifts.
        economiser: ``"none"``, ``"air"`` (outdoor dry-bulb vs supply air) or ``"water"`` (wet-bulb vs
            chilled water).
        economiser_approach_k: How far below its setpoint the outdoor reference must be for full free
            cooling, K (assumption: 4 K); between that and the setpoint the share falls linearly.
        economiser_power_per_w: Pump and fan power per W of heat the economiser removes (assumption: 0.03).
        fan_power_w: Air-handler fan power, W, constant (fixed airflow, consistent with a fixed ``G``);
            None: 5 % of ``design_it_power_w`` (assumption).
        overhead_w: Fixed overhead (lighting, offices, UPS standing loss), W (default 0).
    """

    design_it_power_w: float
    supply_air_c: float = 24.0
    design_delta_t_k: float = 12.0
    time_constant_s: float = 600.0
    chilled_water_c: float = 15.0
    evaporator_approach_k: float = 2.0
    condenser: Literal["air", "water"] = "air"
    condenser_approach_k: float = 8.0
    second_law_efficiency: float = 0.5
    max_cop: float = 12.0
    economiser: Literal["none", "air", "water"] = "none"
    economiser_approach_k: float = 4.0
    economiser_power_per_w: float = 0.03
    fan_power_w: float | None = None
    overhead_w: float = 0.0

    def __post_init__(self) -> None:
        positive = ("design_it_power_w", "design_delta_t_k", "second_law_efficiency", "max_cop",
                    "economiser_approach_k")
        non_negative = ("time_constant_s", "evaporator_approach_k", "condenser_approach_k",
                        "economiser_power_per_w", "overhead_w")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in non_negative:
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.fan_power_w is not None and not self.fan_power_w >= 0:
            raise ValueError(f"fan_power_w must be >= 0 or None, got {self.fan_power_w!r}")
        if not self.second_law_efficiency <= 1:
            raise ValueError(f"second_law_efficiency must be <= 1 (a fraction of Carnot), got {self.second_law_efficiency!r}")
        if self.condenser not in ("air", "water"):
            raise ValueError(f"condenser must be 'air' or 'water', got {self.condenser!r}")
        if self.economiser not in ("none", "air", "water"):
            raise ValueError(f"economiser must be 'none', 'air' or 'water', got {self.economiser!r}")
        if self.chilled_water_c - self.evaporator_approach_k <= -ZERO_C_IN_K:
            raise ValueError("chilled_water_c - evaporator_approach_k must be above absolute zero")

    @property
    def conductance_w_per_k(self) -> float:
        """``G``, W of heat removed per K of room air above the supply setpoint."""
        return self.design_it_power_w / self.design_delta_t_k

    @property
    def fan_w(self) -> float:
        return 0.05 * self.design_it_power_w if self.fan_power_w is None else float(self.fan_power_w)

    @property
    def needs_wet_bulb(self) -> bool:
        return self.condenser == "water" or self.economiser == "water"


@dataclass(frozen=True)
class CoolingInterval:
    """Energy of one or more intervals at piecewise-constant inputs (J; arrays when given arrays).

    ``facility_j = it_j + chiller_j + economiser_j + fan_j + overhead_j`` and
    ``heat_removed_j = it_j − (stored heat at the end − at the start)``, both exact.
    """

    heat_end_w: np.ndarray | float
    it_j: np.ndarray | float
    heat_removed_j: np.ndarray | float
    chiller_j: np.ndarray | float
    economiser_j: np.ndarray | float
    fan_j: np.ndarray | float
    overhead_j: np.ndarray | float

    @property
    def cooling_j(self):
        return self.chiller_j + self.economiser_j + self.fan_j

    @property
    def facility_j(self):
        return self.it_j + self.cooling_j + self.overhead_j


class CoolingModel:
    """Evaluates the cooling model for given outdoor temperatures and IT power.

    Args:
        params: The model's parameters.
    """

    def __init__(self, params: CoolingParams):
        self.params = params

    # ------------------------------------------------------------------ instantaneous relations
    def cop(self, condenser_reference_c: np.ndarray | float) -> np.ndarray:
        """Chiller COP at an outdoor reference temperature (dry-bulb for air-cooled, wet-bulb for water), °C."""
        p = self.params
        t_evap_k = p.chilled_water_c - p.evaporator_approach_k + ZERO_C_IN_K
        t_cond_k = np.asarray(condenser_reference_c, dtype=float) + p.condenser_approach_k + ZERO_C_IN_K
        lift_k = t_cond_k - t_evap_k
        with np.errstate(divide="ignore", invalid="ignore"):
            carnot = np.where(lift_k > 0, t_evap_k / np.where(lift_k > 0, lift_k, 1.0), np.inf)
        return np.minimum(p.max_cop, p.second_law_efficiency * carnot)

    def economiser_fraction(self, dry_bulb_c, wet_bulb_c=None) -> np.ndarray:
        """Share ``φ`` of the heat the economiser removes (0 … 1)."""
        p = self.params
        if p.economiser == "none":
            return np.zeros_like(np.asarray(dry_bulb_c, dtype=float))
        if p.economiser == "air":
            reference, setpoint = np.asarray(dry_bulb_c, dtype=float), p.supply_air_c
        else:
            reference, setpoint = self._wet(wet_bulb_c), p.chilled_water_c
        return np.clip((setpoint - reference) / p.economiser_approach_k, 0.0, 1.0)

    def electric_per_heat(self, dry_bulb_c, wet_bulb_c=None) -> np.ndarray:
        """``k``: cooling-plant electric W (chiller + economiser auxiliaries) per W of heat removed."""
        p = self.params
        reference = self._wet(wet_bulb_c) if p.condenser == "water" else np.asarray(dry_bulb_c, dtype=float)
        phi = self.economiser_fraction(dry_bulb_c, wet_bulb_c)
        return (1.0 - phi) / self.cop(reference) + phi * p.economiser_power_per_w

    def steady_facility_power_w(self, it_power_w, dry_bulb_c, wet_bulb_c=None) -> np.ndarray:
        """Facility power once the room has settled (``Q = P_IT``), W."""
        p = self.params
        it = np.asarray(it_power_w, dtype=float)
        return it * (1.0 + self.electric_per_heat(dry_bulb_c, wet_bulb_c)) + p.fan_w + p.overhead_w

    def steady_pue(self, it_power_w, dry_bulb_c, wet_bulb_c=None) -> np.ndarray:
        """PUE at steady state: facility power / IT power (IT power > 0)."""
        return self.steady_facility_power_w(it_power_w, dry_bulb_c, wet_bulb_c) / np.asarray(it_power_w, dtype=float)

    def room_temperature_c(self, heat_w) -> np.ndarray:
        """Room (return) air temperature at a heat-removal rate, °C: ``T_supply + Q/G``."""
        return self.params.supply_air_c + np.asarray(heat_w, dtype=float) / self.params.conductance_w_per_k

    def _wet(self, wet_bulb_c) -> np.ndarray:
        if wet_bulb_c is None:
            raise ValueError("this cooling model needs the outdoor wet-bulb temperature (condenser or economiser "
                             "'water'); give wet_bulb_c, or use condenser 'air' with economiser 'air' or 'none'")
        return np.asarray(wet_bulb_c, dtype=float)

    # ------------------------------------------------------------------ exact integration
    def advance(self, heat_w, it_power_w, dt_s, dry_bulb_c, wet_bulb_c=None) -> CoolingInterval:
        """Integrate intervals of length ``dt_s`` at constant IT power and outdoor temperatures, exactly.

        All arguments broadcast, so many independent intervals can be evaluated at once.

        Args:
            heat_w: Heat removal ``Q_0`` at the start, W (``it_power_w`` of the previous steady state).
            it_power_w: IT power during the interval, W (>= 0).
            dt_s: Interval length, s (>= 0).
            dry_bulb_c: Outdoor dry-bulb temperature, °C.
            wet_bulb_c: Outdoor wet-bulb temperature, °C (needed only for water-side parts).
        """
        p = self.params
        q0 = np.asarray(heat_w, dtype=float)
        it = np.asarray(it_power_w, dtype=float)
        dt = np.asarray(dt_s, dtype=float)
        if np.any(dt < 0):
            raise ValueError(f"dt_s must be >= 0, got {dt_s!r}")
        if np.any(it < 0):
            raise ValueError(f"it_power_w must be >= 0, got {it_power_w!r}")
        tau = p.time_constant_s
        if tau == 0:
            q_end = np.broadcast_to(it, np.broadcast(q0, it, dt).shape).copy()  # no lag: Q follows P_IT
            heat_j = it * dt
        else:
            decayed = -np.expm1(-dt / tau)  # 1 − e^(−Δ/τ), accurate for small Δ/τ
            q_end = it + (q0 - it) * (1.0 - decayed)
            heat_j = it * dt + (q0 - it) * tau * decayed
        phi = self.economiser_fraction(dry_bulb_c, wet_bulb_c)
        reference = self._wet(wet_bulb_c) if p.condenser == "water" else np.asarray(dry_bulb_c, dtype=float)
        chiller_j = (1.0 - phi) * heat_j / self.cop(reference)
        return CoolingInterval(
            heat_end_w=q_end, it_j=it * dt, heat_removed_j=heat_j, chiller_j=chiller_j,
            economiser_j=phi * p.economiser_power_per_w * heat_j, fan_j=p.fan_w * dt, overhead_j=p.overhead_w * dt,
        )

    def run(self, times_s, it_power_w, dry_bulb_c, end_s: float, wet_bulb_c=None,
            heat0_w: float | None = None) -> CoolingInterval:
        """Integrate a piecewise-constant history: values hold from ``times_s[i]`` to the next time (or ``end_s``).

        Args:
            times_s: Change times, s, strictly increasing.
            it_power_w, dry_bulb_c, wet_bulb_c: Values on each interval (same length as ``times_s``).
            end_s: End of the last interval, s (> ``times_s[-1]``).
            heat0_w: Heat removal at ``times_s[0]``, W; None: the room starts settled at the first IT power.

        Returns:
            Per-interval energies (arrays) and the heat removal at each interval's end.
        """
        t = np.asarray(times_s, dtype=float)
        if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) <= 0) or not end_s > t[-1]:
            raise ValueError("times_s must be a non-empty, strictly increasing array with end_s after its last time")
        it = np.asarray(it_power_w, dtype=float)
        for name, values in (("it_power_w", it_power_w), ("dry_bulb_c", dry_bulb_c), ("wet_bulb_c", wet_bulb_c)):
            if values is not None and np.shape(values) != t.shape:
                raise ValueError(f"{name} needs one value per time in times_s ({t.size}), got shape {np.shape(values)}")
        dt = np.diff(np.append(t, end_s))
        tau = self.params.time_constant_s
        keep = np.exp(-dt / tau) if tau > 0 else np.zeros_like(dt)  # τ = 0: no memory of the last interval
        q_start = np.empty_like(it)
        q = float(it[0]) if heat0_w is None else float(heat0_w)
        for i in range(it.size):  # Q_{i+1} = P_i + (Q_i − P_i)·e^(−Δ_i/τ): a short linear recurrence
            q_start[i] = q
            q = it[i] + (q - it[i]) * keep[i]
        return self.advance(q_start, it, dt, dry_bulb_c, wet_bulb_c)


# ------------------------------------------------------------------------------------------- weather
def wet_bulb_stull_c(dry_bulb_c, relative_humidity_pct) -> np.ndarray:
    """Wet-bulb temperature from dry-bulb and relative humidity (Stull 2011), °C.

    R. Stull, "Wet-Bulb Temperature from Relative Humidity and Air Temperature", J. Appl. Meteor.
    Climatol. 50 (2011) 2267–2269: an empirical fit at standard sea-level pressure, stated valid for
    RH 5–99 % and −20–50 °C (errors within about ±1 K there).
    """
    t = np.asarray(dry_bulb_c, dtype=float)
    rh = np.asarray(relative_humidity_pct, dtype=float)
    return (t * np.arctan(0.151977 * np.sqrt(rh + 8.313659)) + np.arctan(t + rh) - np.arctan(rh - 1.676331)
            + 0.00391838 * rh ** 1.5 * np.arctan(0.023101 * rh) - 4.686035)


def read_epw_temperatures(path: str | Path) -> pd.DataFrame:
    """Outdoor dry-bulb and wet-bulb temperatures from an EnergyPlus weather file (via ``pvlib.iotools.read_epw``).

    Returns:
        One row per record, indexed as pvlib gives it (the start of each record's hour, in the file's
        local standard time; a typical year mixes years), with ``dry_bulb_c`` (the EPW dry-bulb) and
        ``wet_bulb_c`` (Stull 2011 from dry-bulb and relative humidity, at most the dry-bulb; the EPW
        has no wet-bulb field).

    Raises:
        TraceError: The file is missing or unreadable, or a temperature or humidity is out of range
            (naming the field, the record and the value; EPW missing-value codes are not filled in).
    """
    from dcsim.renewables import _read_epw  # the project's checked EPW reader (cached)

    path = Path(path)
    weather, _ = _read_epw(path)
    rh = weather["relative_humidity"].to_numpy(dtype=float)
    bad = ~((rh >= 0.0) & (rh <= 110.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TraceError(path, f"field 'relative_humidity' at data record {i + 1} ({weather.index[i]})", float(rh[i]),
                         "a value in [0, 110] % (EPW missing-value codes such as 999 are not filled in)")
    dry = weather["temp_air"].to_numpy(dtype=float)
    wet = np.minimum(wet_bulb_stull_c(dry, np.minimum(rh, 100.0)), dry)
    return pd.DataFrame({"dry_bulb_c": dry, "wet_bulb_c": wet}, index=weather.index)


def epw_temperatures_at(path: str | Path, times_utc: pd.DatetimeIndex) -> pd.DataFrame:
    """Dry-bulb and wet-bulb at given instants, replaying the EPW's typical year.

    Each instant takes the record of its hour by local-standard-time month, day and hour (any year);
    29 February, which typical years lack, replays 28 February.

    Raises:
        TraceError: As :func:`read_epw_temperatures`, or the file lacks a needed hour.
    """
    path = Path(path)
    frame = read_epw_temperatures(path)
    local = pd.DatetimeIndex(times_utc).tz_convert(frame.index.tz)
    key = np.asarray(local.month * 10000 + local.day * 100 + local.hour)
    table = pd.Index(frame.index.month * 10000 + frame.index.day * 100 + frame.index.hour)
    if not table.is_unique:
        raise TraceError(path, "records", "a month/day/hour appears twice", "one year of hourly records")
    pos = table.get_indexer(key)
    feb29 = (pos < 0) & (key // 100 == 229)
    pos[feb29] = table.get_indexer(key[feb29] - 100)
    if (pos < 0).any():
        missing = local[pos < 0][0]
        raise TraceError(path, "records", f"no record for {missing:%m-%d %H}:00 local", "a full year of hourly records")
    return pd.DataFrame(frame.to_numpy()[pos], columns=frame.columns, index=pd.DatetimeIndex(times_utc))
