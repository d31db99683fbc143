"""Streams a run's job table in fixed-size chunks of arrivals, so a run holds only the jobs it is working on.

A synthetic workload (Poisson, MMPP, diurnal) is drawn from the ``arrivals`` and ``service`` streams with the same
numbers in the same order as :func:`dcsim.workload.synthetic_jobs` draws them for the whole table at once, so a
streamed run and a whole-table run of the same seed see identical jobs. How, without holding every job:

- Arrival times are sorted uniforms. Every uniform of a Poisson piece is drawn again (from a saved copy of the
  generator) for each window of time, keeping those inside the window, sorted: the same values in the same order
  as one sort of them all. A window holds about :data:`WINDOW_JOBS` arrivals; drawing is cheap next to simulating.
- The ``service`` stream draws the GPUs of all jobs, then their durations, then their deferrable flags, each as
  one block. Three copies of that generator are positioned at the blocks' starts (by drawing the blocks before
  them once, in chunks) and read forward together. numpy draws these element by element, so drawing a block in
  chunks gives the same values as drawing it whole (``tests/test_streaming.py`` checks each distribution).

A trace-replay workload stays a whole table (its loaders read whole files); :class:`TableSource` hands it out in
the same chunks.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

from dcsim.config import Diurnal, Mmpp, Poisson, WorkloadConfig
from dcsim.seeding import Streams

#: Rows per chunk of the job table (a chunk is kept until every job in it has ended).
CHUNK_JOBS = 1 << 16
#: About this many arrivals are sorted at once when streaming sorted uniforms.
WINDOW_JOBS = 1 << 20
#: With ``outputs.stream_jobs: auto`` a synthetic workload of more jobs than this streams its job table.
STREAM_AUTO_JOBS = 1_000_000
_DRAW = 1 << 20  # uniforms drawn per call when re-drawing a piece


def _copy(rng: np.random.Generator) -> np.random.Generator:
    out = np.random.Generator(type(rng.bit_generator)())
    out.bit_generator.state = rng.bit_generator.state
    return out


def _skip_uniforms(rng: np.random.Generator, n: int) -> None:
    """Advance ``rng`` past ``n`` uniform draws (drawn in chunks: the same state as one draw of ``n``)."""
    while n > 0:
        k = min(n, _DRAW)
        rng.random(k)
        n -= k


def _sorted_uniforms(rng: np.random.Generator, n: int, t0_s: float, t1_s: float) -> Iterator[np.ndarray]:
    """``np.sort(rng.uniform(t0_s, t1_s, size=n))`` in ascending pieces, without holding all ``n``; ``rng`` is
    advanced past the ``n`` draws as if they had been drawn at once."""
    if n <= WINDOW_JOBS:
        yield np.sort(rng.uniform(t0_s, t1_s, size=n))
        return
    start = _copy(rng)
    _skip_uniforms(rng, n)
    windows = -(-n // WINDOW_JOBS)
    edges = t0_s + (t1_s - t0_s) * np.arange(windows + 1) / windows
    edges[0], edges[-1] = -np.inf, np.inf  # every draw falls in exactly one window, whatever the rounding
    for w in range(windows):
        lo, hi = edges[w], edges[w + 1]
        g, left, kept = _copy(start), n, []
        while left > 0:
            k = min(left, _DRAW)
            u = g.uniform(t0_s, t1_s, size=k)
            kept.append(u[(u >= lo) & (u < hi)])
            left -= k
        yield np.sort(np.concatenate(kept))


def _poisson_pieces(rate_per_s: float, t0_s: float, t1_s: float, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """:func:`dcsim.workload.poisson_times` in ascending pieces."""
    n = rng.poisson(rate_per_s * (t1_s - t0_s))
    yield from _sorted_uniforms(rng, int(n), t0_s, t1_s)


def _mmpp_pieces(cfg: Mmpp, horizon_s: float, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """:func:`dcsim.workload.mmpp_times` in ascending pieces (the same draws in the same order)."""
    mean = np.asarray(cfg.mean_sojourn_s, dtype=float)
    state = int(rng.random() < mean[1] / mean.sum())
    t = 0.0
    while t < horizon_s:
        end = min(horizon_s, t + rng.exponential(mean[state]))
        if cfg.rates_per_s[state] > 0:
            yield from _poisson_pieces(cfg.rates_per_s[state], t, end, rng)
        t, state = end, 1 - state


def _diurnal_pieces(cfg: Diurnal, horizon_s: float, start: pd.Timestamp,
                    rng: np.random.Generator) -> Iterator[np.ndarray]:
    """:func:`dcsim.workload.diurnal_times` in ascending pieces: the thinning draws come after all candidates'
    uniforms, one per candidate in sorted order, so a second generator reads them alongside."""
    from dcsim.workload import diurnal_rate_per_s

    peak = cfg.mean_rate_per_s * (1 + cfg.amplitude)
    n = int(rng.poisson(peak * horizon_s))
    thin = _copy(rng)
    _skip_uniforms(thin, n)
    for candidates in _sorted_uniforms(rng, n, 0.0, horizon_s):
        keep = thin.random(candidates.size) * peak < diurnal_rate_per_s(cfg, candidates, start)
        yield candidates[keep]


def _arrival_pieces(cfg: WorkloadConfig, horizon_s: float, start: pd.Timestamp,
                    rng: np.random.Generator) -> Iterator[np.ndarray]:
    arr = cfg.arrivals
    if isinstance(arr, Poisson):
        return _poisson_pieces(arr.rate_per_s, 0.0, horizon_s, rng)
    if isinstance(arr, Mmpp):
        return _mmpp_pieces(arr, horizon_s, rng)
    assert isinstance(arr, Diurnal)
    return _diurnal_pieces(arr, horizon_s, start, rng)


def _rechunk(pieces: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The concatenation of ``pieces`` cut into arrays of ``size`` (the last one shorter)."""
    held, count = [], 0
    for p in pieces:
        held.append(p)
        count += p.size
        while count >= size:
            joined = np.concatenate(held)
            yield joined[:size]
            rest = joined[size:]
            held, count = [rest], rest.size
    if count:
        yield np.concatenate(held)


class SyntheticSource:
    """The synthetic job table of :func:`dcsim.workload.synthetic_jobs`, in chunks of ``chunk_jobs`` rows.

    Args:
        cfg: The workload (``arrivals`` set).
        horizon_s: Jobs arrive on ``[0, horizon_s)``.
        start: The scenario start (the diurnal profile's clock).
        streams: The run's streams (``arrivals`` and ``service`` are used).
        chunk_jobs: Rows per chunk.
    """

    def __init__(self, cfg: WorkloadConfig, horizon_s: float, start: pd.Timestamp, streams: Streams,
                 chunk_jobs: int = CHUNK_JOBS):
        self.cfg, self.horizon_s, self.start, self.streams = cfg, horizon_s, start, streams
        self.chunk_jobs = chunk_jobs
        self.attrs: dict = {}
        self.n_jobs = self._count()

    def _count(self) -> int:
        """How many jobs the whole table has (the service blocks start at multiples of it)."""
        rng = self.streams.generator("arrivals")
        arr = self.cfg.arrivals
        if isinstance(arr, Poisson):
            return int(rng.poisson(arr.rate_per_s * self.horizon_s))
        return sum(p.size for p in _arrival_pieces(self.cfg, self.horizon_s, self.start, rng))

    def chunks(self) -> Iterator[pd.DataFrame]:
        """The job table's rows in order, ``chunk_jobs`` at a time (each a normalised job table)."""
        from dcsim.workload import job_frame, sample

        cfg, n = self.cfg, self.n_jobs
        times = _arrival_pieces(cfg, self.horizon_s, self.start, self.streams.generator("arrivals"))
        values = np.asarray(cfg.gpus_per_job.values)
        weights = None
        if cfg.gpus_per_job.weights is not None:
            weights = np.asarray(cfg.gpus_per_job.weights, dtype=float)
            weights = weights / weights.sum()
        gpus_rng = self.streams.generator("service")
        duration_rng = _copy(gpus_rng)
        self._skip(duration_rng, n, lambda g, k: g.choice(values, size=k, p=weights))
        flags_rng = _copy(duration_rng)
        self._skip(flags_rng, n, lambda g, k: sample(cfg.duration_s, k, g))
        done = 0
        for t in _rechunk(times, self.chunk_jobs):
            k = t.size
            gpus = gpus_rng.choice(values, size=k, p=weights)
            duration_s = sample(cfg.duration_s, k, duration_rng)
            deferrable = flags_rng.random(k) < cfg.deferrable_fraction
            frame = job_frame(cfg, t, gpus, duration_s, deferrable)
            frame.index = pd.RangeIndex(done, done + k)
            done += k
            yield frame
        if done != n:  # the count and the stream disagree: a bug, not a user error
            raise AssertionError(f"streamed {done} jobs, counted {n}")

    @staticmethod
    def _skip(rng: np.random.Generator, n: int, draw) -> None:
        while n > 0:
            k = min(n, _DRAW)
            draw(rng, k)
            n -= k


    def empty(self) -> pd.DataFrame:
        """The table with no rows (its columns and dtypes)."""
        from dcsim.jobs import empty_jobs

        return empty_jobs()


class TableSource:
    """A whole job table (a trace replay, or a table built in memory) handed out in chunks of rows."""

    def __init__(self, jobs: pd.DataFrame, chunk_jobs: int = CHUNK_JOBS):
        self.table = jobs
        self.chunk_jobs = chunk_jobs
        self.attrs = dict(jobs.attrs)
        self.n_jobs = len(jobs)

    def chunks(self) -> Iterator[pd.DataFrame]:
        for lo in range(0, self.n_jobs, self.chunk_jobs):
            yield self.table.iloc[lo:lo + self.chunk_jobs]


    def empty(self) -> pd.DataFrame:
        return self.table.iloc[:0]


def streams_jobs(scenario, source) -> bool:
    """Whether a run streams its job table (``outputs.stream_jobs``; ``auto``: a synthetic workload of more than
    :data:`STREAM_AUTO_JOBS` jobs)."""
    wanted = scenario.outputs.stream_jobs
    if wanted == "auto":
        return isinstance(source, SyntheticSource) and source.n_jobs > STREAM_AUTO_JOBS
    return bool(wanted)


def job_source(jobs) -> SyntheticSource | TableSource:
    """``jobs`` as a source: a source is returned as it is, a DataFrame is wrapped in a :class:`TableSource`."""
    if isinstance(jobs, pd.DataFrame):
        return TableSource(jobs)
    return jobs
