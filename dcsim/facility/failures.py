"""Failure and repair processes: GPU/node failures, PDU/feed outages and renewable trips as sorted event arrays.

Every random draw comes from the ``numpy.random.Generator`` handed in (the run's ``failures``
stream, :class:`dcsim.seeding.Streams`); nothing here keeps state between calls.

A component alternates between up and down, starting up at t = 0: up for a time drawn with mean
``mtbf_s`` (exponential, or Weibull with shape ``k``: scale ``mtbf_s / Γ(1 + 1/k)``), then down for
a time with mean ``mttr_s`` (exponential, or Weibull), and so on (an alternating renewal process).
With exponential up and down times at rates ``λ = 1/MTBF`` and ``μ = 1/MTTR``, the expected number
of failures in ``[0, T]`` and the expected up-time fraction are

    E[N(T)] = λμ/(λ+μ)·T + λ²/(λ+μ)²·(1 − e^(−(λ+μ)T))
    E[up fraction] = μ/(λ+μ) + λ/((λ+μ)²·T)·(1 − e^(−(λ+μ)T))   → MTBF/(MTBF+MTTR)

(renewal theory; the transient terms come from starting up). As MTTR → 0 the failures are a
Poisson process of rate λ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


_MAX_BLOCK_DRAWS = 2_000_000


@dataclass(frozen=True)
class OutageEvents:
    """State changes of a set of components over ``[0, horizon_s)``, sorted by time, then component.

    Attributes:
        time_s: Event times, s.
        component: Component index of each event.
        up: State after the event: False = failure (outage starts), True = repair (outage ends). A
            component still down at the horizon has no repair event.
        n_components: Number of components.
        horizon_s: End of the span covered, s.
    """

    time_s: np.ndarray
    component: np.ndarray
    up: np.ndarray
    n_components: int
    horizon_s: float

    def __len__(self) -> int:
        return int(self.time_s.size)

    def failures_per_component(self) -> np.ndarray:
        """Number of failures (outage starts) of each component."""
        return np.bincount(self.component[~self.up], minlength=self.n_components)

    def down_intervals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Outages as ``(component, start_s, end_s)``, ``end_s`` clipped to the horizon."""
        order = np.lexsort((self.time_s, self.component))  # per component, in time: down, up, down, up ...
        comp, time, up = self.component[order], self.time_s[order], self.up[order]
        starts = np.flatnonzero(~up)
        nxt = starts + 1
        closed = (nxt < comp.size) & (comp[np.minimum(nxt, comp.size - 1)] == comp[starts])
        ends = np.where(closed, time[np.minimum(nxt, comp.size - 1)], self.horizon_s)
        return comp[starts], time[starts], ends

    def downtime_s(self) -> np.ndarray:
        """Total down time of each component within the horizon, s."""
        comp, start, end = self.down_intervals()
        return np.bincount(comp, weights=end - start, minlength=self.n_components)

    def is_down_at(self, t_s: float) -> np.ndarray:
        """Boolean mask of components down at time ``t_s`` (an event at ``t_s`` counts as done)."""
        comp, start, end = self.down_intervals()
        hit = (start <= t_s) & (t_s < end)
        return np.bincount(comp[hit], minlength=self.n_components) > 0


def draw_durations(rng: np.random.Generator, size, mean_s: float, shape: float = 1.0) -> np.ndarray:
    """Durations with mean ``mean_s``: exponential for ``shape == 1``, else Weibull of that shape.

    Raises:
        ValueError: ``mean_s`` or ``shape`` not > 0.
    """
    if not (mean_s > 0 and math.isfinite(mean_s)):
        raise ValueError(f"a mean time must be a finite number of seconds > 0, got {mean_s!r}")
    if not (shape > 0 and math.isfinite(shape)):
        raise ValueError(f"a Weibull shape must be a finite number > 0, got {shape!r}")
    if shape == 1.0:
        return rng.exponential(mean_s, size)
    return mean_s / math.gamma(1.0 + 1.0 / shape) * rng.weibull(shape, size)


def alternating_renewal(rng: np.random.Generator, n_components: int, mtbf_s: float, mttr_s: float, horizon_s: float,
                        failure_shape: float = 1.0, repair_shape: float = 1.0) -> OutageEvents:
    """Failures and repairs of ``n_components`` independent components, all up at t = 0.

    Args:
        rng: The ``failures`` stream.
        n_components: How many components (>= 0).
        mtbf_s: Mean time between failures (mean up time), s (> 0).
        mttr_s: Mean time to repair (mean down time), s (> 0).
        horizon_s: Events at or after this time are left out, s (> 0).
        failure_shape: Weibull shape of up times (1 = exponential; < 1 infant mortality, > 1 wear-out).
        repair_shape: Weibull shape of down times (1 = exponential).

    Raises:
        ValueError: A mean, shape or horizon not > 0, or a negative count (the message names it).
    """
    if int(n_components) != n_components or n_components < 0:
        raise ValueError(f"n_components must be a whole number >= 0, got {n_components!r}")
    if not (horizon_s > 0 and math.isfinite(horizon_s)):
        raise ValueError(f"horizon_s must be a finite number of seconds > 0, got {horizon_s!r}")
    for name, value in (("mtbf_s", mtbf_s), ("mttr_s", mttr_s)):
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    n = int(n_components)
    clock = np.zeros(n)
    active = np.arange(n)
    # Enough cycles per block that most components finish in one or two blocks, within ~2M draws a block.
    cycles = int(min(4096, max(4, math.ceil(1.25 * horizon_s / (mtbf_s + mttr_s)) + 4)))
    times, comps, ups = [], [], []
    while active.size:
        block = max(4, min(cycles, _MAX_BLOCK_DRAWS // active.size))
        up_s = draw_durations(rng, (active.size, block), mtbf_s, failure_shape)
        down_s = draw_durations(rng, (active.size, block), mttr_s, repair_shape)
        cycle_end = clock[active, None] + np.cumsum(up_s + down_s, axis=1)
        fail = cycle_end - down_s
        keep_f = fail < horizon_s
        keep_r = cycle_end < horizon_s
        rows = np.broadcast_to(active[:, None], fail.shape)
        times += [fail[keep_f], cycle_end[keep_r]]
        comps += [rows[keep_f], rows[keep_r]]
        ups += [np.zeros(int(keep_f.sum()), bool), np.ones(int(keep_r.sum()), bool)]
        clock[active] = cycle_end[:, -1]
        active = active[clock[active] < horizon_s]
    return _sorted_events(times, comps, ups, n, horizon_s)


def outages_from_intervals(component, start_s, duration_s, n_components: int, horizon_s: float) -> OutageEvents:
    """Events for given outages (e.g. scheduled PDU or feed maintenance); overlapping outages merge.

    Args:
        component: Component index of each outage.
        start_s: Start of each outage, s (>= 0).
        duration_s: Length of each outage, s (> 0).
        n_components: Number of components.
        horizon_s: End of the span covered, s.

    Raises:
        ValueError: Naming the outage (its position) whose component, start or duration is out of range.
    """
    comp = np.asarray(component, dtype=np.int64).ravel()
    start = np.asarray(start_s, dtype=float).ravel()
    dur = np.asarray(duration_s, dtype=float).ravel()
    if not comp.size == start.size == dur.size:
        raise ValueError(f"component, start_s and duration_s need one entry per outage; got {comp.size}, "
                         f"{start.size} and {dur.size}")
    for bad, what, values in ((~((comp >= 0) & (comp < n_components)), f"a component in [0, {n_components - 1}]", comp),
                              (~(np.isfinite(start) & (start >= 0)), "a start_s >= 0", start),
                              (~(np.isfinite(dur) & (dur > 0)), "a duration_s > 0", dur)):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"outage {i}: got {values[i].item()!r}; expected {what}")
    order = np.lexsort((start, comp))
    comp, start, end = comp[order], start[order], start[order] + dur[order]
    times, comps, ups = [], [], []
    i = 0
    while i < comp.size:  # merge overlapping or touching outages of one component
        j, stop = i, end[i]
        while j + 1 < comp.size and comp[j + 1] == comp[i] and start[j + 1] <= stop:
            j += 1
            stop = max(stop, end[j])
        if start[i] < horizon_s:
            times.append([start[i]]); comps.append([comp[i]]); ups.append([False])
            if stop < horizon_s:
                times.append([stop]); comps.append([comp[i]]); ups.append([True])
        i = j + 1
    return _sorted_events(times, comps, ups, n_components, horizon_s)


def renewable_trips(rng: np.random.Generator, mean_time_between_trips_s: float, mean_trip_s: float, horizon_s: float,
                    n_sources: int = 1, trip_shape: float = 1.0) -> OutageEvents:
    """Trips of renewable plants: each source delivers nothing while tripped.

    An alternating renewal process per source (up time mean ``mean_time_between_trips_s``,
    exponential; trip length mean ``mean_trip_s``, Weibull shape ``trip_shape``).
    """
    return alternating_renewal(rng, n_sources, mean_time_between_trips_s, mean_trip_s, horizon_s,
                               repair_shape=trip_shape)


def expected_failures(mtbf_s: float, mttr_s: float, horizon_s: float) -> float:
    """``E[N(T)]`` of one component with exponential up and down times, starting up (module docstring)."""
    lam, mu = 1.0 / mtbf_s, 1.0 / mttr_s
    s = lam + mu
    return lam * mu / s * horizon_s + lam ** 2 / s ** 2 * -math.expm1(-s * horizon_s)


def expected_availability(mtbf_s: float, mttr_s: float, horizon_s: float) -> float:
    """Expected up-time fraction over ``[0, T]`` with exponential up and down times, starting up."""
    lam, mu = 1.0 / mtbf_s, 1.0 / mttr_s
    s = lam + mu
    return mu / s + lam / (s ** 2 * horizon_s) * -math.expm1(-s * horizon_s)


def _sorted_events(times, comps, ups, n: int, horizon_s: float) -> OutageEvents:
    t = np.concatenate([np.asarray(x, float) for x in times]) if times else np.zeros(0)
    c = np.concatenate([np.asarray(x, np.int64) for x in comps]) if comps else np.zeros(0, np.int64)
    u = np.concatenate([np.asarray(x, bool) for x in ups]) if ups else np.zeros(0, bool)
    order = np.lexsort((u, c, t))
    return OutageEvents(time_s=t[order], component=c[order], up=u[order], n_components=int(n),
                        horizon_s=float(horizon_s))
