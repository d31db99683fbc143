"""Request arrivals of a serving run: the Azure LLM trace, invocation counts per interval, or a Poisson process.

Every builder returns a :class:`Requests` table in simulation seconds (t = 0 is the scenario's start), sorted by
arrival, with each request's prompt and output tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dcsim.config import MAX_COUNT
from dcsim.errors import TraceError
from dcsim.workload_traces import (
    MAX_TRACE_NUMBER, _numbers, _profile_index, _read_csv, _require_columns, load_azure_llm,
)

#: Columns of an invocations file: interval start (timestamp or interval number) and the requests in it.
INVOCATION_COLUMNS = ("Time", "TIMESTAMP")


@dataclass(frozen=True)
class Requests:
    """The requests of a run, sorted by arrival; every array has shape ``(n,)``.

    Attributes:
        arrival_s: Arrival time, s since the scenario's start.
        prompt_tokens: Prompt (context) tokens.
        output_tokens: Output (generated) tokens (a continuous amount for Poisson arrivals).
        attrs: Where they came from (source file, rows read, repeats, ...).
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.arrival_s.size)


def load_invocations(path: str | Path, *, interval_s: float = 60.0) -> tuple[np.ndarray, np.ndarray, float]:
    """Read an invocations file: ``Time`` (interval start) and ``TIMESTAMP`` (requests in that interval).

    ``Time`` holds either whole interval numbers (then each interval lasts ``interval_s``) or ISO 8601 timestamps
    at one regular step (the step is read from the file); there is one row per interval, none missing. This is
    the layout of an Azure trace counted per interval (``df.groupby(pd.Grouper(key="TIMESTAMP", freq=...))``
    written with the index named ``Time``).

    Returns:
        ``(start_s, counts, step_s)``: each interval's start in seconds after the first interval (sorted), its
        whole request count, and the interval length.

    Raises:
        TraceError: naming the file, the data row and the column of the first bad cell (missing column, a count
            that is not a whole number >= 0, a bad or irregular time, a missing or repeated interval).
    """
    path = Path(path)
    df = _read_csv(path)
    _require_columns(df, path, INVOCATION_COLUMNS)
    counts = _numbers(df, path, "TIMESTAMP", whole=True, minimum=0, maximum=MAX_COUNT,
                      allowed="a whole number of requests >= 0 in the interval")
    step_s, start_s = _profile_index(path, df, "Time", float(interval_s))
    order = np.argsort(start_s, kind="stable")
    total = float(counts.sum())
    if total > MAX_COUNT:
        raise TraceError(path, "column 'TIMESTAMP'", f"{total:g} requests in all",
                         f"at most {MAX_COUNT:g} requests in one file")
    return start_s[order], counts[order].astype(np.int64), float(step_s)


def expand_counts(start_s: np.ndarray, counts: np.ndarray, step_s: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times from counts per interval: ``counts[i]`` times drawn uniformly in ``[start_s[i], start_s[i] +
    step_s)`` by ``rng`` (the ``arrivals`` stream), sorted."""
    starts = np.repeat(np.asarray(start_s, dtype=float), np.asarray(counts, dtype=np.int64))
    return np.sort(starts + rng.uniform(0.0, step_s, size=starts.size))


def _tile(arrival_s: np.ndarray, period_s: float, horizon_s: float, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    """Repeat ``arrival_s`` (and the matching ``columns``) every ``period_s`` until ``horizon_s``."""
    copies = max(1, math.ceil(horizon_s / period_s))
    if copies * arrival_s.size > MAX_COUNT:
        raise ValueError(f"replaying {arrival_s.size} requests every {period_s:g} s for {horizon_s:g} s gives "
                         f"{copies * arrival_s.size:.3g} requests; at most {MAX_COUNT:g}")
    shifts = np.repeat(np.arange(copies) * period_s, arrival_s.size)
    tiled = np.tile(arrival_s, copies) + shifts
    keep = tiled < horizon_s
    return (tiled[keep], *(np.tile(c, copies)[keep] for c in columns))


def build_requests(serving, horizon_s: float, streams) -> Requests:
    """The requests of a serving run from its ``workload.llm_serving.arrivals`` (arrivals before the horizon).

    Args:
        serving: The scenario's :class:`dcsim.serving.config.LlmServingConfig`.
        horizon_s: The run's horizon, s.
        streams: The run's :class:`dcsim.seeding.Streams` (``arrivals`` for times, ``service`` for Poisson
            output tokens).
    """
    src = serving.arrivals
    if src.source == "poisson":
        rng = streams.generator("arrivals")
        n = int(rng.poisson(src.rate_per_s * horizon_s))
        arrival = np.sort(rng.uniform(0.0, horizon_s, size=n))  # n uniform points: a Poisson process given n
        output = streams.generator("service").exponential(src.mean_output_tokens, size=n)
        return Requests(arrival, np.full(n, float(src.prompt_tokens)), output,
                        {"source": "poisson", "requests": n})
    if src.source == "invocations":
        start, counts, step = load_invocations(src.path, interval_s=src.interval_s)
        period = float(start[-1] + step)
        arrival = expand_counts(start, counts, step, streams.generator("arrivals"))
        attrs = {"source": str(src.path), "format": "invocations", "intervals": int(start.size),
                 "interval_s": step, "requests_in_file": int(counts.sum())}
        if src.repeat:
            (arrival,) = _tile(arrival, period, horizon_s)
        arrival = arrival[arrival < horizon_s]
        n = arrival.size
        return Requests(arrival, np.full(n, float(src.prompt_tokens)), np.full(n, float(src.output_tokens)),
                        {**attrs, "requests": int(n)})
    table = load_azure_llm(src.path, time_offset_s=src.time_offset_s, time_scale=src.time_scale,
                           max_jobs=src.max_requests)
    arrival = table["arrival_s"].to_numpy(float)
    prompt = table["context_tokens"].to_numpy(float)
    output = table["generated_tokens"].to_numpy(float)
    attrs = {k: v for k, v in table.attrs.items() if k != "warnings"}
    if src.repeat:
        # one replay lasts the trace's span plus one mean gap, so the last request and the next replay's first
        # are as far apart as two requests are on average
        gap = float(np.diff(arrival).mean()) if arrival.size > 1 else 1.0
        period = float(arrival[-1] - arrival[0]) + gap
        if not period > 0 or period > MAX_TRACE_NUMBER:
            raise TraceError(src.path, "TIMESTAMP", period, "a trace spanning a positive time to repeat")
        arrival, prompt, output = _tile(arrival - arrival[0], period, horizon_s, prompt, output)
        attrs["repeat_period_s"] = period
    keep = arrival < horizon_s
    return Requests(arrival[keep], prompt[keep], output[keep], {**attrs, "requests": int(keep.sum())})
