"""Piecewise-constant time series in simulation seconds, the form every supply and grid input takes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from dcsim.errors import SeriesRangeError

Fill = Literal["error", "hold", "repeat"]


@dataclass(frozen=True)
class StepSeries:
    """A right-continuous step function: ``value(t) = values[i]`` for ``times_s[i] <= t < times_s[i+1]``.

    Times are float seconds since the scenario's ``start``. The last value holds until ``end_s``
    (the end of the span the source covers); past ``end_s`` the ``fill`` rule decides:
    ``"error"`` refuses, ``"hold"`` keeps the last value, ``"repeat"`` wraps around (a typical year
    or day replayed).

    Attributes:
        name: What the series is, with its unit (e.g. ``"grid carbon_g_per_kwh"``).
        times_s: Strictly increasing change times, first one ``<= 0`` once aligned to a scenario.
        values: Value on each step (same length as ``times_s``).
        end_s: End of the covered span (exclusive).
        fill: Rule for times at or past ``end_s``.
    """

    name: str
    times_s: np.ndarray
    values: np.ndarray
    end_s: float
    fill: Fill = "error"

    def __post_init__(self) -> None:
        times = np.asarray(self.times_s, dtype=float)
        values = np.asarray(self.values, dtype=float)
        if times.ndim != 1 or times.shape != values.shape or times.size == 0:
            raise ValueError(f"{self.name}: times and values must be equal-length non-empty 1-D arrays")
        if np.any(np.diff(times) <= 0):
            raise ValueError(f"{self.name}: times must be strictly increasing")
        if not self.end_s > times[-1]:
            raise ValueError(f"{self.name}: end_s ({self.end_s}) must be after the last time ({times[-1]})")
        object.__setattr__(self, "times_s", times)
        object.__setattr__(self, "values", values)

    @classmethod
    def constant(cls, name: str, value: float) -> "StepSeries":
        """A series that never changes (fills forever)."""
        return cls(name, np.array([0.0]), np.array([float(value)]), end_s=1.0, fill="hold")

    @classmethod
    def from_pandas(
        cls,
        name: str,
        series: pd.Series,
        start: pd.Timestamp,
        fill: Fill = "error",
        period_s: float | None = None,
    ) -> "StepSeries":
        """Build from a pandas Series indexed by tz-aware timestamps (each value holds until the next).

        Args:
            name: Name with unit.
            series: Values indexed by a tz-aware DatetimeIndex; NaN rows are dropped.
            start: The scenario's t=0 (tz-aware).
            fill: Rule past the end of the data.
            period_s: Length of the last step; defaults to the median spacing of the index.
        """
        s = series.dropna().sort_index()
        s = s[~s.index.duplicated(keep="first")]
        if s.empty:
            raise ValueError(f"{name}: no values")
        start = pd.Timestamp(start)
        times = (s.index - start).total_seconds().to_numpy(dtype=float)
        if period_s is None:
            period_s = float(np.median(np.diff(times))) if times.size > 1 else 3600.0
        return cls(name, times, s.to_numpy(dtype=float), end_s=float(times[-1] + period_s), fill=fill)

    @property
    def start_s(self) -> float:
        return float(self.times_s[0])

    def _wrap(self, t: np.ndarray) -> np.ndarray:
        span = self.end_s - self.start_s
        return self.start_s + np.mod(t - self.start_s, span)

    def value_at(self, t_s: float | np.ndarray) -> float | np.ndarray:
        """Value at time(s) ``t_s``; raises :class:`SeriesRangeError` outside the span under ``fill='error'``."""
        t = np.asarray(t_s, dtype=float)
        if self.fill == "repeat":
            t = self._wrap(t)
        before = t < self.start_s
        after = t >= self.end_s
        if self.fill == "error" and (np.any(before) or np.any(after)):
            bad = float(np.min(t[before])) if np.any(before) else float(np.max(t[after]))
            raise SeriesRangeError(
                f"{self.name}: time {bad:.0f} s is outside the series span "
                f"[{self.start_s:.0f}, {self.end_s:.0f}) s; set supply.fill to 'hold' or 'repeat', "
                f"or shorten the horizon"
            )
        idx = np.clip(np.searchsorted(self.times_s, t, side="right") - 1, 0, self.times_s.size - 1)
        out = self.values[idx]
        return float(out) if out.ndim == 0 else out

    def change_times(self, t0_s: float, t1_s: float) -> np.ndarray:
        """Times in ``[t0_s, t1_s)`` at which the value may change (the steps, repeated if wrapping).

        Raises :class:`SeriesRangeError` if ``t1_s`` runs past the span under ``fill='error'``.
        """
        if self.fill == "error" and (t1_s > self.end_s or t0_s < self.start_s):
            raise SeriesRangeError(
                f"{self.name}: the run needs [{t0_s:.0f}, {t1_s:.0f}) s but the series covers "
                f"[{self.start_s:.0f}, {self.end_s:.0f}) s; set supply.fill to 'hold' or 'repeat', or shorten the horizon"
            )
        if self.fill != "repeat":
            times = self.times_s
            return times[(times >= t0_s) & (times < t1_s)]
        span = self.end_s - self.start_s
        k0 = int(np.floor((t0_s - self.start_s) / span))
        k1 = int(np.floor((t1_s - self.start_s) / span))
        reps = [self.times_s + k * span for k in range(k0, k1 + 1)]
        times = np.concatenate(reps)
        return times[(times >= t0_s) & (times < t1_s)]
