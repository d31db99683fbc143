"""Loaders that turn workload trace files (Alibaba GPU pods, Azure LLM requests, SWF, dcsim's own CSV) into job tables.

Every loader returns a table that has passed :func:`dcsim.jobs.normalize_jobs` (columns
``JOB_COLUMNS``, sorted by arrival) plus a few trace-specific extra columns, and records in
``DataFrame.attrs`` how many rows it read and why it dropped each one it did not keep, so that
``attrs["rows_read"] == attrs["jobs"] + sum(attrs[k] for k in attrs if k.startswith("dropped_"))``.

Options shared by every loader (all keyword-only):

* ``time_offset_s`` (s): subtracted from the trace's own arrival times (seconds since the
  trace's origin) before scaling; jobs that would then arrive before t=0 are dropped
  (``attrs["dropped_before_offset"]``). Pass the trace time of the first job you want to make it
  arrive at t=0.
* ``time_scale`` (dimensionless, > 0): multiplies times measured from the offset, hence every
  inter-arrival time (< 1 compresses the load, > 1 stretches it). Job sizes are not scaled.
* ``max_jobs``: keep only the first ``max_jobs`` jobs by arrival (``attrs["dropped_max_jobs"]``).
* ``value_tokens_per_gpu_s`` (tokens per GPU-second): job value = this x ``work_gpu_s``.
* ``deferrable_fraction`` (0..1) and ``rng``: exactly ``round(fraction x n)`` of the ``n`` kept
  jobs are marked deferrable, chosen by ``rng`` (a ``numpy.random.Generator``) without replacement.
  ``rng`` is required when the fraction is strictly between 0 and 1; dcsim never uses a global RNG.
* ``deadline_slack`` (dimensionless, > 0): if set, ``deadline_s = arrival_s + slack x work_gpu_s /
  gpus`` (the job's duration at full clock); otherwise no deadline (NaN).
* ``clock_sensitivity`` (exponent beta in [0, 1] of work rate = f**beta).

Bad option values raise ``ValueError`` (``TypeError`` for an ``rng`` of the wrong type). Anything
wrong with a file (missing, unreadable, missing column, a value that is not a number or out of
range, a bad timestamp, nothing left after filtering) raises :class:`dcsim.errors.TraceError`
naming the file, the column and data row (1-based, header excluded), the value and what is allowed.

Formats and modelling choices are described in ``docs/workload-traces.md``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from dcsim import dataquality
from dcsim.errors import TraceError
from dcsim.gridseries import header_names
from dcsim.jobs import normalize_jobs

#: Columns a cluster-trace-gpu-v2023 pod list must have (``name`` and ``qos`` are kept if present).
ALIBABA_POD_COLUMNS: tuple[str, ...] = (
    "num_gpu",
    "gpu_milli",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)

#: Kubernetes pod phases that appear in the pod list.
ALIBABA_POD_PHASES: tuple[str, ...] = ("Pending", "Running", "Succeeded", "Failed")

#: Columns of the Azure LLM inference trace.
AZURE_LLM_COLUMNS: tuple[str, ...] = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")

#: Number of whitespace-separated fields on an SWF data line.
SWF_FIELDS = 18

#: Columns ``load_job_csv`` accepts: the job-table columns plus an optional ``job_id``.
JOB_CSV_REQUIRED: tuple[str, ...] = ("arrival_s", "gpus", "work_gpu_s")
JOB_CSV_OPTIONAL: tuple[str, ...] = ("deadline_s", "deferrable", "value_tokens", "clock_sensitivity", "job_id")

#: Numbers in a trace larger than this in magnitude are not data (times, work, tokens), refused.
MAX_TRACE_NUMBER = 1.0e15
#: Largest GPU count a job may ask for (the largest cluster a scenario allows).
MAX_JOB_GPUS = 10_000_000

#: Interpolations of a utilisation profile between its intervals.
UTILISATION_INTERPOLATIONS: tuple[str, ...] = ("step", "linear")

_TRUE_WORDS = frozenset({"true", "1", "yes"})
_FALSE_WORDS = frozenset({"false", "0", "no"})


@dataclass(frozen=True)
class _Common:
    """The options every loader shares, validated once."""

    time_offset_s: float
    time_scale: float
    max_jobs: int | None
    value_tokens_per_gpu_s: float
    deferrable_fraction: float
    rng: np.random.Generator | None
    deadline_slack: float | None
    clock_sensitivity: float

    def __post_init__(self) -> None:
        if not _is_real(self.time_offset_s) or not math.isfinite(self.time_offset_s):
            raise ValueError(f"time_offset_s must be a finite number of seconds, got {self.time_offset_s!r}")
        if not _is_real(self.time_scale) or not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ValueError(f"time_scale must be a finite number > 0, got {self.time_scale!r}")
        if self.max_jobs is not None and not _is_count(self.max_jobs):
            raise ValueError(f"max_jobs must be None or an integer >= 1, got {self.max_jobs!r}")
        if not _is_real(self.value_tokens_per_gpu_s) or not (
            math.isfinite(self.value_tokens_per_gpu_s) and self.value_tokens_per_gpu_s >= 0
        ):
            raise ValueError(
                f"value_tokens_per_gpu_s must be a finite number >= 0, got {self.value_tokens_per_gpu_s!r}"
            )
        if not _is_real(self.deferrable_fraction) or not 0.0 <= self.deferrable_fraction <= 1.0:
            raise ValueError(f"deferrable_fraction must be in [0, 1], got {self.deferrable_fraction!r}")
        if self.rng is not None and not isinstance(self.rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(self.rng).__name__}")
        if 0.0 < self.deferrable_fraction < 1.0 and self.rng is None:
            raise ValueError(
                f"deferrable_fraction={self.deferrable_fraction!r} needs rng (a numpy.random.Generator) to "
                "choose the deferrable jobs; dcsim never draws from a global RNG"
            )
        if self.deadline_slack is not None and (
            not _is_real(self.deadline_slack) or not (math.isfinite(self.deadline_slack) and self.deadline_slack > 0)
        ):
            raise ValueError(f"deadline_slack must be None or a finite number > 0, got {self.deadline_slack!r}")
        if not _is_real(self.clock_sensitivity) or not 0.0 <= self.clock_sensitivity <= 1.0:
            raise ValueError(f"clock_sensitivity must be in [0, 1], got {self.clock_sensitivity!r}")


def load_alibaba_pods(
    path: str | Path,
    *,
    censored: Literal["drop", "cap"] = "drop",
    trace_end_s: float | None = None,
    unscheduled: Literal["drop", "keep"] = "drop",
    time_offset_s: float = 0.0,
    time_scale: float = 1.0,
    max_jobs: int | None = None,
    value_tokens_per_gpu_s: float = 1.0,
    deferrable_fraction: float = 0.0,
    rng: np.random.Generator | None = None,
    deadline_slack: float | None = None,
    clock_sensitivity: float = 1.0,
) -> pd.DataFrame:
    """Load an Alibaba cluster-trace-gpu-v2023 pod list (``openb_pod_list_*.csv``) as jobs.

    Columns used: ``num_gpu``, ``gpu_milli``, ``pod_phase``, ``creation_time``,
    ``deletion_time``, ``scheduled_time`` (all times in seconds since the trace origin); ``name``
    becomes ``job_id`` and ``qos`` is kept when present. Treatment, in the order applied:

    1. CPU-only pods (``num_gpu == 0``) are dropped (``dropped_cpu_only``).
    2. Unscheduled pods (empty ``scheduled_time``; in the public trace exactly the ``Pending``
       pods) never ran, so their ``deletion_time - creation_time`` is a wait, not a run time.
       ``unscheduled="drop"`` drops them (``dropped_unscheduled``); ``"keep"`` keeps them with
       start = ``creation_time``. A ``scheduled_time`` of 0 is a real time (the first pod of the
       public trace is created and scheduled at 0), not a missing value.
    3. ``trace_end_s`` is the end of the observation window (default: the largest time in the
       three time columns over all rows). Pods created at or after it are dropped
       (``dropped_after_trace_end``; none with the default).
    4. Censored pods are those whose end was not observed within the window:
       ``pod_phase == "Running"`` (the pod had not terminated on its own when the trace was
       taken), an empty or non-positive ``deletion_time``, or a ``deletion_time`` after
       ``trace_end_s``. ``censored="drop"`` drops them (``dropped_censored``); ``censored="cap"``
       keeps them (``capped_censored``) with end = ``min(deletion_time, trace_end_s)``, or
       ``trace_end_s`` when ``deletion_time`` is missing; ``censored_end_moved`` counts those
       whose end the cap changed. With the default ``trace_end_s`` the recorded
       ``deletion_time`` of a ``Running`` pod is kept as its end (every pod in the public file
       has one); its true run time may be longer. Kept censored rows have ``censored == True``.
       ``censored_in_file`` counts ``Running``/no-end rows over all rows read.
    5. Pods whose end is not after their start are dropped (``dropped_nonpositive_duration``).

    Each kept pod becomes one job: ``arrival`` = ``creation_time``; pod duration
    ``pod_duration_s`` = end - start with start = ``scheduled_time`` (``creation_time`` for a kept
    unscheduled pod); ``gpus = num_gpu``;
    ``work_gpu_s = pod_duration_s x num_gpu x gpu_milli / 1000``. A GPU-sharing pod
    (``num_gpu == 1``, ``gpu_milli < 1000``) thus takes one whole GPU in dcsim (which does not
    share GPUs) with work equal to the GPU-seconds its share used, i.e. it is assumed to run
    ``1000 / gpu_milli`` times faster on a whole GPU; total GPU-seconds of the trace are
    preserved, pod lifetimes are not.

    Args:
        path: The pod list CSV.
        censored: ``"drop"`` or ``"cap"`` (see above).
        trace_end_s: End of the observation window in trace seconds (see 3 and 4); None = the
            largest time in the file.
        unscheduled: ``"drop"`` or ``"keep"`` (see above).
        time_offset_s: Trace time (s) that becomes t=0; earlier pods are dropped.
        time_scale: Multiplier of inter-arrival times (dimensionless, > 0).
        max_jobs: Keep at most this many jobs (the earliest).
        value_tokens_per_gpu_s: Job value in tokens per GPU-second of work.
        deferrable_fraction: Fraction of jobs marked deferrable (0..1).
        rng: Chooses the deferrable jobs; required when 0 < deferrable_fraction < 1.
        deadline_slack: Deadline = arrival + slack x duration at full clock; None = no deadline.
        clock_sensitivity: Exponent beta of work rate = f**beta for every job.

    Returns:
        A normalized job table with extra columns ``job_id`` (if ``name`` exists), ``qos`` (if
        present), ``pod_phase``, ``censored`` and ``pod_duration_s``. ``attrs`` holds
        ``source``, ``format``, ``rows_read``, ``dropped_cpu_only``, ``dropped_unscheduled``,
        ``dropped_after_trace_end``, ``censored_in_file`` (``Running`` or no-end rows among all
        rows read, CPU-only included), ``dropped_censored``, ``capped_censored``, ``censored_end_moved``,
        ``dropped_nonpositive_duration``, ``dropped_before_offset``, ``dropped_max_jobs``,
        ``trace_end_s``, ``raw_first_arrival_s`` and ``jobs``.

    Raises:
        TraceError: The file is missing or malformed, or no pod is left.
        ValueError: An option is out of range.
    """
    common = _Common(
        time_offset_s, time_scale, max_jobs, value_tokens_per_gpu_s, deferrable_fraction, rng, deadline_slack,
        clock_sensitivity,
    )
    if censored not in ("drop", "cap"):
        raise ValueError(f"censored must be 'drop' or 'cap', got {censored!r}")
    if unscheduled not in ("drop", "keep"):
        raise ValueError(f"unscheduled must be 'drop' or 'keep', got {unscheduled!r}")
    if trace_end_s is not None and (not _is_real(trace_end_s) or not math.isfinite(trace_end_s)):
        raise ValueError(f"trace_end_s must be None or a finite number of seconds, got {trace_end_s!r}")
    path = Path(path)
    df = _read_csv(path)
    _require_columns(df, path, ALIBABA_POD_COLUMNS)
    num_gpu = _numbers(df, path, "num_gpu", whole=True, minimum=0, maximum=MAX_JOB_GPUS,
                       allowed="a whole number of GPUs >= 0")
    gpu_milli = _numbers(df, path, "gpu_milli", minimum=0, allowed="a number of milli-GPUs in [0, 1000]")
    creation = _numbers(df, path, "creation_time", allowed="a time in seconds")
    scheduled = _numbers(df, path, "scheduled_time", allow_empty=True, allowed="a time in seconds or empty")
    deletion = _numbers(df, path, "deletion_time", allow_empty=True, allowed="a time in seconds or empty")
    phase = _text(df, "pod_phase")
    _raise_first(
        path, df, "pod_phase", ~np.isin(phase, ALIBABA_POD_PHASES), f"one of {', '.join(ALIBABA_POD_PHASES)}"
    )
    gpu_pod = num_gpu >= 1
    _raise_first(
        path, df, "gpu_milli", gpu_pod & ~((gpu_milli > 0) & (gpu_milli <= 1000)),
        "a number of milli-GPUs in (0, 1000] for a pod with num_gpu >= 1",
    )
    _raise_first(
        path, df, "scheduled_time", scheduled < creation, "a time at or after creation_time, or empty"
    )

    times = np.concatenate([creation, scheduled, deletion])
    end_of_trace = float(np.nanmax(times)) if trace_end_s is None else float(trace_end_s)
    unsched = np.isnan(scheduled)
    no_end = np.isnan(deletion) | (deletion <= 0)
    running = (phase == "Running") | no_end
    recorded_end = np.where(no_end, np.inf, deletion)
    # End not observed within the window: still running when the trace was taken, or ended after it.
    is_censored = running | (recorded_end > end_of_trace)
    start = np.where(unsched, creation, scheduled)
    end = np.minimum(recorded_end, end_of_trace)

    keep = gpu_pod.copy()
    counts: dict[str, int | float | str] = {"rows_read": int(len(df)), "dropped_cpu_only": int((~gpu_pod).sum())}
    drop_unsched = keep & unsched if unscheduled == "drop" else np.zeros_like(keep)
    counts["dropped_unscheduled"] = int(drop_unsched.sum())
    keep &= ~drop_unsched
    late = keep & (creation >= end_of_trace)
    counts["dropped_after_trace_end"] = int(late.sum())
    keep &= ~late
    counts["censored_in_file"] = int(running.sum())
    kept_censored = keep & is_censored
    if censored == "drop":
        counts["dropped_censored"] = int(kept_censored.sum())
        counts["capped_censored"] = 0
        counts["censored_end_moved"] = 0
        keep &= ~kept_censored
    else:
        counts["dropped_censored"] = 0
        counts["capped_censored"] = int(kept_censored.sum())
        counts["censored_end_moved"] = int((kept_censored & (end != recorded_end)).sum())
    duration = end - start
    nonpositive = keep & ~(duration > 0)
    counts["dropped_nonpositive_duration"] = int(nonpositive.sum())
    keep &= ~nonpositive
    counts["trace_end_s"] = end_of_trace

    idx = np.flatnonzero(keep)
    extras: dict[str, np.ndarray] = {}
    if "name" in df.columns:
        _refuse_duplicate_ids(path, df, "name", _text(df, "name"))
        extras["job_id"] = _text(df, "name")[idx]
    if "qos" in df.columns:
        extras["qos"] = _text(df, "qos")[idx]
    extras["pod_phase"] = phase[idx]
    extras["censored"] = is_censored[idx]
    extras["pod_duration_s"] = duration[idx]
    work = duration[idx] * num_gpu[idx] * gpu_milli[idx] / 1000.0
    return _finish(
        path, "alibaba_pods", common, counts,
        raw_arrival_s=creation[idx], gpus=num_gpu[idx], work_gpu_s=work, extras=extras,
    )


def load_azure_llm(
    path: str | Path,
    *,
    tokens_per_gpu_s_prefill: float = 3000.0,
    tokens_per_gpu_s_decode: float = 30.0,
    gpus_per_request: int = 1,
    time_offset_s: float = 0.0,
    time_scale: float = 1.0,
    max_jobs: int | None = None,
    value_tokens_per_gpu_s: float = 1.0,
    deferrable_fraction: float = 0.0,
    rng: np.random.Generator | None = None,
    deadline_slack: float | None = None,
    clock_sensitivity: float = 0.3,
) -> pd.DataFrame:
    """Load an Azure LLM inference trace (``TIMESTAMP,ContextTokens,GeneratedTokens``) as jobs.

    Each request is one job on ``gpus_per_request`` GPUs. ``TIMESTAMP`` is a date-time string
    (ISO 8601; zone-less values are read as UTC); the raw arrival is seconds since the earliest
    request, then offset and scaled. Token model (one request at a time on its GPUs, no
    batching)::

        duration_s = ContextTokens / tokens_per_gpu_s_prefill + GeneratedTokens / tokens_per_gpu_s_decode
        work_gpu_s = gpus_per_request x duration_s

    Default rates are a back-of-envelope estimate for a ~70B-parameter model in 16-bit weights
    on H100 SXM GPUs, not a measurement: prefill is compute-bound at ~2 x 70e9 = 1.4e11 FLOP per
    token; at ~40 % of the H100's ~989 TFLOP/s dense BF16 that is ~3,000 tokens/s per GPU. Decode
    at batch size 1 is memory-bound: every generated token reads all ~140 GB of weights, and at
    the H100's ~3.35 TB/s that is ~24 tokens per GPU-second, so a request sees tens of tokens/s
    (30 by default). These rates describe a request served alone: a production server batches
    many requests, so its GPU-seconds per request are lower by roughly the batch size. To model
    batched serving, raise ``tokens_per_gpu_s_decode`` to the per-GPU throughput of the batched
    server. Requests with zero context and zero generated tokens are dropped
    (``dropped_zero_tokens``).

    ``clock_sensitivity`` defaults to 0.3 because with these rates decode takes ~95 % of a
    typical request's GPU time and decode is memory-bound: lowering the SM clock barely slows it
    (DESIGN.md: ~0.2-0.4 for memory-bound kinds).

    Args:
        path: The trace CSV.
        tokens_per_gpu_s_prefill: Prompt (context) tokens processed per second by one request on
            its GPUs (with one GPU per request: tokens per GPU-second), > 0.
        tokens_per_gpu_s_decode: Tokens generated per second by one request on its GPUs, > 0.
        gpus_per_request: GPUs each request holds while it runs (integer >= 1).
        time_offset_s: Seconds after the earliest request that become t=0; earlier requests are
            dropped.
        time_scale: Multiplier of inter-arrival times (dimensionless, > 0).
        max_jobs: Keep at most this many jobs (the earliest).
        value_tokens_per_gpu_s: Job value in tokens per GPU-second of work.
        deferrable_fraction: Fraction of jobs marked deferrable (0..1).
        rng: Chooses the deferrable jobs; required when 0 < deferrable_fraction < 1.
        deadline_slack: Deadline = arrival + slack x duration at full clock; None = no deadline.
        clock_sensitivity: Exponent beta of work rate = f**beta for every request (default 0.3).

    Returns:
        A normalized job table with extra columns ``context_tokens`` and ``generated_tokens``.
        ``attrs`` holds ``source``, ``format``, ``rows_read``, ``dropped_zero_tokens``,
        ``dropped_before_offset``, ``dropped_max_jobs``, ``first_timestamp_utc`` (ISO 8601 string
        of the earliest request), ``span_s`` (last - first request, s), ``raw_first_arrival_s``
        and ``jobs``.

    Raises:
        TraceError: The file is missing or malformed, or no request is left.
        ValueError: An option is out of range.
    """
    common = _Common(
        time_offset_s, time_scale, max_jobs, value_tokens_per_gpu_s, deferrable_fraction, rng, deadline_slack,
        clock_sensitivity,
    )
    for name, rate in (
        ("tokens_per_gpu_s_prefill", tokens_per_gpu_s_prefill),
        ("tokens_per_gpu_s_decode", tokens_per_gpu_s_decode),
    ):
        if not _is_real(rate) or not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"{name} must be a finite number of tokens per second > 0, got {rate!r}")
    if not _is_count(gpus_per_request):
        raise ValueError(f"gpus_per_request must be an integer >= 1, got {gpus_per_request!r}")
    path = Path(path)
    df = _read_csv(path)
    _require_columns(df, path, AZURE_LLM_COLUMNS)
    stamp_text = df["TIMESTAMP"].fillna("").astype(str).str.strip()
    dataquality.check_time_zone_forms(path, stamp_text.set_axis(df.index), "TIMESTAMP", 1, "data row")
    stamps = pd.to_datetime(stamp_text, format="ISO8601", utc=True, errors="coerce")
    _raise_first(
        path, df, "TIMESTAMP", stamps.isna().to_numpy(),
        "an ISO 8601 date-time such as '2023-11-16 18:15:46.680590'",
    )
    context = _numbers(df, path, "ContextTokens", whole=True, minimum=0, allowed="a whole number of tokens >= 0")
    generated = _numbers(df, path, "GeneratedTokens", whole=True, minimum=0, allowed="a whole number of tokens >= 0")
    first = stamps.min()
    raw_arrival = (stamps - first).dt.total_seconds().to_numpy(dtype=float)
    counts: dict[str, int | float | str] = {"rows_read": int(len(df))}
    zero = (context + generated) == 0
    counts["dropped_zero_tokens"] = int(zero.sum())
    counts["first_timestamp_utc"] = first.isoformat()
    counts["span_s"] = float(raw_arrival.max())
    idx = np.flatnonzero(~zero)
    duration = context[idx] / float(tokens_per_gpu_s_prefill) + generated[idx] / float(tokens_per_gpu_s_decode)
    gpus = np.full(idx.size, int(gpus_per_request), dtype=np.int64)
    extras = {"context_tokens": context[idx].astype(np.int64), "generated_tokens": generated[idx].astype(np.int64)}
    return _finish(
        path, "azure_llm", common, counts,
        raw_arrival_s=raw_arrival[idx], gpus=gpus, work_gpu_s=gpus * duration, extras=extras,
    )


def load_swf(
    path: str | Path,
    *,
    procs_per_gpu: int = 1,
    time_offset_s: float = 0.0,
    time_scale: float = 1.0,
    max_jobs: int | None = None,
    value_tokens_per_gpu_s: float = 1.0,
    deferrable_fraction: float = 0.0,
    rng: np.random.Generator | None = None,
    deadline_slack: float | None = None,
    clock_sensitivity: float = 1.0,
) -> pd.DataFrame:
    """Load a Standard Workload Format log (Parallel Workloads Archive) as jobs.

    Lines starting with ``;`` are header comments and blank lines are skipped; every other line
    must hold 18 whitespace-separated numbers, -1 meaning missing. Fields used: 1 job number
    (``job_id``), 2 submit time (s, the arrival), 4 run time (s, the duration), 5 allocated
    processors, 8 requested processors (used when field 5 is -1). ``gpus = ceil(processors /
    procs_per_gpu)`` and ``work_gpu_s = gpus x run time``. Jobs with run time <= 0 (including
    -1) are dropped (``dropped_nonpositive_runtime``), then jobs with processors <= 0
    (``dropped_nonpositive_procs``). The status field is not used: a cancelled job that ran for a
    positive time is kept.

    Args:
        path: The SWF file.
        procs_per_gpu: Processors that map to one GPU (integer >= 1).
        time_offset_s: Submit time (s) that becomes t=0; earlier jobs are dropped.
        time_scale: Multiplier of inter-arrival times (dimensionless, > 0).
        max_jobs: Keep at most this many jobs (the earliest).
        value_tokens_per_gpu_s: Job value in tokens per GPU-second of work.
        deferrable_fraction: Fraction of jobs marked deferrable (0..1).
        rng: Chooses the deferrable jobs; required when 0 < deferrable_fraction < 1.
        deadline_slack: Deadline = arrival + slack x duration at full clock; None = no deadline.
        clock_sensitivity: Exponent beta of work rate = f**beta for every job.

    Returns:
        A normalized job table with extra columns ``job_id`` (int) and ``processors``. ``attrs``
        holds ``source``, ``format``, ``rows_read`` (data lines), ``dropped_nonpositive_runtime``,
        ``dropped_nonpositive_procs``, ``dropped_before_offset``, ``dropped_max_jobs``,
        ``raw_first_arrival_s`` and ``jobs``.

    Raises:
        TraceError: The file is missing or malformed, or no job is left.
        ValueError: An option is out of range.
    """
    common = _Common(
        time_offset_s, time_scale, max_jobs, value_tokens_per_gpu_s, deferrable_fraction, rng, deadline_slack,
        clock_sensitivity,
    )
    if not _is_count(procs_per_gpu):
        raise ValueError(f"procs_per_gpu must be an integer >= 1, got {procs_per_gpu!r}")
    path = Path(path)
    text = _read_text(path)
    numbered = [
        (number, line) for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith(";")
    ]
    if not numbered:
        raise TraceError(path, "file", "no data lines", "an SWF log with at least one job line")
    line_numbers = np.array([n for n, _ in numbered])
    fields = pd.Series([line for _, line in numbered], dtype=object).str.split()
    lengths = fields.str.len().to_numpy()
    bad_len = np.flatnonzero(lengths != SWF_FIELDS)
    if bad_len.size:
        i = bad_len[0]
        raise TraceError(
            path, f"line {line_numbers[i]}", f"{lengths[i]} fields: {numbered[i][1].strip()}",
            f"{SWF_FIELDS} whitespace-separated fields",
        )
    table = pd.DataFrame(fields.tolist(), columns=[f"field {k}" for k in range(1, SWF_FIELDS + 1)])
    where = [f"line {n}" for n in line_numbers]

    def field(k: int, what: str, allowed: str) -> np.ndarray:
        return _numbers(table, path, f"field {k}", allowed=allowed, label=f"field {k} ({what})", rows=where)

    job_number = field(1, "job number", "a whole number")
    submit = field(2, "submit time", "a time in seconds >= 0")
    _raise_first(path, table, "field 2", submit < 0, "a time in seconds >= 0", label="field 2 (submit time)",
                 rows=where)
    run_time = field(4, "run time", "a number of seconds, -1 if missing")
    allocated = field(5, "allocated processors", "a number of processors, -1 if missing")
    requested = field(8, "requested processors", "a number of processors, -1 if missing")
    procs = np.where(allocated == -1, requested, allocated)

    counts: dict[str, int | float | str] = {"rows_read": len(table)}
    keep = run_time > 0
    counts["dropped_nonpositive_runtime"] = int((~keep).sum())
    bad_procs = keep & ~(procs > 0)
    counts["dropped_nonpositive_procs"] = int(bad_procs.sum())
    keep &= ~bad_procs
    _refuse_duplicate_ids(path, table, "field 1", table["field 1"].to_numpy(dtype=object),
                          label="field 1 (job number)", rows=where)
    idx = np.flatnonzero(keep)
    gpus = np.ceil(procs[idx] / procs_per_gpu).astype(np.int64)
    extras = {"job_id": job_number[idx].astype(np.int64), "processors": procs[idx]}
    return _finish(
        path, "swf", common, counts,
        raw_arrival_s=submit[idx], gpus=gpus, work_gpu_s=gpus * run_time[idx], extras=extras,
    )


def load_job_csv(
    path: str | Path,
    *,
    time_offset_s: float = 0.0,
    time_scale: float = 1.0,
    max_jobs: int | None = None,
    value_tokens_per_gpu_s: float = 1.0,
    deferrable_fraction: float = 0.0,
    rng: np.random.Generator | None = None,
    deadline_slack: float | None = None,
    clock_sensitivity: float = 1.0,
) -> pd.DataFrame:
    """Load dcsim's own job CSV: one row per job, columns named as in ``JOB_COLUMNS``.

    Required columns: ``arrival_s`` (s, >= 0), ``gpus`` (whole, >= 1), ``work_gpu_s`` (GPU-s,
    > 0). Optional columns: ``deadline_s`` (absolute s, after ``arrival_s``), ``deferrable``
    (``true``/``false``, ``1``/``0``, ``yes``/``no``, any case), ``value_tokens`` (>= 0),
    ``clock_sensitivity`` (0..1) and ``job_id`` (kept as text). Any other column is an error, so a
    misspelt name does not silently fall back to a default. A missing optional column, or an
    empty cell in one, takes the default from the options: no deadline (or ``deadline_slack``),
    not deferrable (or chosen by ``deferrable_fraction``/``rng`` among the rows without a value),
    ``value_tokens_per_gpu_s x work_gpu_s``, ``clock_sensitivity``.

    ``time_offset_s`` and ``time_scale`` move and stretch arrivals; a deadline given in the file
    keeps its distance from its job's arrival (``deadline - arrival`` is not scaled).

    Args:
        path: The job CSV.
        time_offset_s: Arrival time (s) in the file that becomes t=0; earlier jobs are dropped.
        time_scale: Multiplier of inter-arrival times (dimensionless, > 0).
        max_jobs: Keep at most this many jobs (the earliest).
        value_tokens_per_gpu_s: Value in tokens per GPU-second of work, for rows without a value.
        deferrable_fraction: Fraction of rows without a ``deferrable`` value marked deferrable.
        rng: Chooses the deferrable jobs; required when 0 < deferrable_fraction < 1.
        deadline_slack: For rows without a deadline: deadline = arrival + slack x duration at
            full clock; None = no deadline.
        clock_sensitivity: Exponent beta for rows without one.

    Returns:
        A normalized job table (plus ``job_id`` when the file has it). ``attrs`` holds ``source``,
        ``format``, ``rows_read``, ``dropped_before_offset``, ``dropped_max_jobs``,
        ``raw_first_arrival_s`` and ``jobs``.

    Raises:
        TraceError: The file is missing or malformed, or no job is left.
        ValueError: An option is out of range.
    """
    common = _Common(
        time_offset_s, time_scale, max_jobs, value_tokens_per_gpu_s, deferrable_fraction, rng, deadline_slack,
        clock_sensitivity,
    )
    path = Path(path)
    df = _read_csv(path)
    known = JOB_CSV_REQUIRED + JOB_CSV_OPTIONAL
    unknown = [c for c in df.columns if c not in known]
    if unknown:
        raise TraceError(path, f"column {unknown[0]!r}", unknown[0], f"only the columns {', '.join(known)}")
    _require_columns(df, path, JOB_CSV_REQUIRED)
    arrival = _numbers(df, path, "arrival_s", minimum=0, allowed="a time in seconds >= 0")
    gpus = _numbers(df, path, "gpus", whole=True, minimum=1, maximum=MAX_JOB_GPUS,
                    allowed="a whole number of GPUs >= 1")
    work = _numbers(df, path, "work_gpu_s", allowed="a number of GPU-seconds > 0")
    _raise_first(path, df, "work_gpu_s", ~(work > 0), "a number of GPU-seconds > 0")
    given: dict[str, np.ndarray] = {}
    if "deadline_s" in df.columns:
        allowed = "a time in seconds after arrival_s, or empty"
        deadline = _numbers(df, path, "deadline_s", allow_empty=True, allowed=allowed)
        _raise_first(path, df, "deadline_s", deadline <= arrival, allowed)
        given["deadline_s"] = deadline
    if "deferrable" in df.columns:
        words = np.char.lower(_text(df, "deferrable").astype(str))
        valid = np.isin(words, list(_TRUE_WORDS | _FALSE_WORDS)) | (words == "")
        _raise_first(path, df, "deferrable", ~valid, "true/false, 1/0, yes/no, or empty")
        given["deferrable"] = np.where(words == "", np.nan, np.isin(words, list(_TRUE_WORDS)).astype(float))
    if "value_tokens" in df.columns:
        given["value_tokens"] = _numbers(
            df, path, "value_tokens", allow_empty=True, minimum=0, allowed="a number of tokens >= 0, or empty"
        )
    if "clock_sensitivity" in df.columns:
        allowed = "a number in [0, 1], or empty"
        beta = _numbers(df, path, "clock_sensitivity", allow_empty=True, minimum=0, allowed=allowed)
        _raise_first(path, df, "clock_sensitivity", beta > 1, allowed)
        given["clock_sensitivity"] = beta
    extras = {}
    if "job_id" in df.columns:
        _refuse_duplicate_ids(path, df, "job_id", _text(df, "job_id"))
        extras["job_id"] = _text(df, "job_id")
    counts: dict[str, int | float | str] = {"rows_read": int(len(df))}
    return _finish(
        path, "job_csv", common, counts,
        raw_arrival_s=arrival, gpus=gpus.astype(np.int64), work_gpu_s=work, extras=extras, given=given,
    )


def load_utilisation(
    path: str | Path,
    *,
    gpus: int,
    horizon_s: float,
    arrivals_rng: np.random.Generator | None = None,
    rng: np.random.Generator | None = None,
    interval_s: float = 3600.0,
    column: str = "cpu_load",
    utilisation_scale: float = 1.0,
    interpolation: Literal["step", "linear"] = "step",
    job_duration_s: float = 600.0,
    duration_distribution: Literal["exponential", "constant"] = "exponential",
    gpus_per_job: int = 1,
    repeat: bool = False,
    time_offset_s: float = 0.0,
    time_scale: float = 1.0,
    max_jobs: int | None = None,
    value_tokens_per_gpu_s: float = 1.0,
    deferrable_fraction: float = 0.0,
    deadline_slack: float | None = None,
    clock_sensitivity: float = 1.0,
) -> pd.DataFrame:
    """Turn a utilisation profile (SustainDC style: an index and ``cpu_load`` in [0, 1]) into jobs.

    The file has an index column (its header may be empty, as in SustainDC's
    ``Alibaba_CPU_Data_Hourly_1.csv``) and a utilisation column (``column``). The index is either
    consecutive integers (row ``k`` covers ``[(k - k0) x interval_s, (k - k0 + 1) x interval_s)`` of
    profile time) or ISO 8601 timestamps at a regular step, which then sets ``interval_s``. Profile
    time 0 is the first row; ``time_offset_s`` of profile time becomes t = 0.

    **Rescaling.** The target utilisation is ``u(t) = utilisation_scale x cpu_load``, a fraction of the
    cluster's ``gpus`` that must stay within [0, 1].

    **Interpolation.** ``"step"`` holds each row's value over its interval; ``"linear"`` interpolates
    between interval midpoints (held flat before the first and after the last midpoint).

    **Jobs.** Arrivals are a Poisson process of rate ``lambda(t) = u(t) x gpus / (gpus_per_job x
    job_duration_s)`` (drawn from ``arrivals_rng``, by thinning under ``"linear"``); each job holds
    ``gpus_per_job`` GPUs for a duration at full clock drawn from ``rng``, exponential (default) or
    constant with mean ``job_duration_s``. By Little's law the expected number of busy GPUs is then
    ``u(t) x gpus`` (an infinite-server queue, exact once the cluster never runs out of GPUs; in
    intervals of high utilisation jobs may wait). So that the run starts in that steady state, the
    jobs that would be running at t = 0 arrive at t = 0: a Poisson number with mean
    ``lambda(0) x job_duration_s``, with the residual durations of jobs in progress (exponential
    again, or uniform on [0, job_duration_s] for constant durations). The profile must cover the
    horizon from ``time_offset_s`` unless ``repeat`` replays it from its start.

    Args:
        path: The profile CSV.
        gpus: Cluster size the utilisation refers to (the scenario's ``cluster.gpus``).
        horizon_s: Length of the run, s (jobs are generated on ``[0, horizon_s)``).
        arrivals_rng: Draws the arrival times (the ``arrivals`` stream); required.
        rng: Draws durations and chooses deferrable jobs (the ``service`` stream); required.
        interval_s: Length of one row with an integer index, s.
        column: The utilisation column.
        utilisation_scale: Multiplier of the file's values (e.g. 0.01 for a profile in percent).
        interpolation: ``"step"`` or ``"linear"`` (see above).
        job_duration_s: Mean job duration at full clock, s.
        duration_distribution: ``"exponential"`` or ``"constant"``.
        gpus_per_job: GPUs each job holds (integer >= 1, at most ``gpus``).
        repeat: Replay the profile from its start when the run outlasts it.
        time_offset_s: Profile time (s) that becomes t = 0.
        time_scale: Must be 1 (stretch the profile with ``interval_s`` instead).
        max_jobs: Keep at most this many jobs (the earliest).
        value_tokens_per_gpu_s: Job value in tokens per GPU-second of work.
        deferrable_fraction: Fraction of jobs marked deferrable (0..1).
        deadline_slack: Deadline = arrival + slack x duration at full clock; None = no deadline.
        clock_sensitivity: Exponent beta of work rate = f**beta for every job.

    Returns:
        A normalized job table with the extra column ``offered_utilisation`` (u at the job's
        arrival). ``attrs`` holds ``source``, ``format``, ``rows_read``, ``interval_s``,
        ``profile_span_s``, ``mean_utilisation`` (time average of u over the horizon),
        ``jobs_running_at_start``, ``dropped_before_offset`` (0), ``dropped_max_jobs``,
        ``unsorted_rows``, ``raw_first_arrival_s`` and ``jobs``.

    Raises:
        TraceError: The file is missing or malformed: not two columns, a bad or repeated index, a
            utilisation that is not a number or leaves [0, 1] after scaling.
        ValueError: An option is out of range, or the profile is shorter than the run without
            ``repeat``.
    """
    common = _Common(time_offset_s, time_scale, max_jobs, value_tokens_per_gpu_s, deferrable_fraction, rng,
                     deadline_slack, clock_sensitivity)
    run_time = dataclasses.replace(common, time_offset_s=0.0)  # arrivals are drawn in run time already
    if time_scale != 1.0:
        raise ValueError(f"time_scale must be 1 for a utilisation profile (got {time_scale!r}); stretch it with "
                         "interval_s")
    if not _is_count(gpus) or gpus > MAX_JOB_GPUS:
        raise ValueError(f"gpus must be the cluster size, an integer in [1, {MAX_JOB_GPUS}], got {gpus!r}")
    if not _is_count(gpus_per_job) or gpus_per_job > gpus:
        raise ValueError(f"gpus_per_job must be an integer in [1, gpus={gpus}], got {gpus_per_job!r}")
    for name, value, high in (("horizon_s", horizon_s, MAX_TRACE_NUMBER), ("interval_s", interval_s, 1e9),
                              ("job_duration_s", job_duration_s, 1e9), ("utilisation_scale", utilisation_scale, 1e6)):
        if not _is_real(value) or not (math.isfinite(value) and 0 < value <= high):
            raise ValueError(f"{name} must be a number in (0, {high:g}], got {value!r}")
    if interpolation not in UTILISATION_INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {UTILISATION_INTERPOLATIONS}, got {interpolation!r}")
    if duration_distribution not in ("exponential", "constant"):
        raise ValueError(f"duration_distribution must be 'exponential' or 'constant', got {duration_distribution!r}")
    if not isinstance(repeat, bool):
        raise ValueError(f"repeat must be true or false, got {repeat!r}")
    for name, gen in (("arrivals_rng", arrivals_rng), ("rng", rng)):
        if not isinstance(gen, np.random.Generator):
            raise TypeError(f"{name} must be a numpy.random.Generator (dcsim never draws from a global RNG), "
                            f"got {type(gen).__name__}")
    path = Path(path)
    df = _read_csv(path)
    if column not in df.columns:
        raise TraceError(path, "header", list(df.columns),
                         f"an index column and a utilisation column {column!r} (SustainDC: ',cpu_load')")
    if len(df.columns) != 2:
        raise TraceError(path, "header", list(df.columns), f"two columns: an index and {column!r}")
    index_col = next(c for c in df.columns if c != column)
    step_s, starts = _profile_index(path, df, index_col, float(interval_s))
    util = _numbers(df, path, column, minimum=0, allowed="a utilisation fraction >= 0") * float(utilisation_scale)
    _raise_first(path, df, column, util > 1.0,
                 f"a utilisation in [0, 1] after utilisation_scale={utilisation_scale:g} (a profile in percent "
                 "needs utilisation_scale: 0.01)")
    order = np.argsort(starts, kind="stable")
    counts: dict[str, int | float | str] = {"rows_read": int(len(df))}
    unsorted = int((np.diff(starts) < 0).sum())
    starts, util = starts[order], util[order]
    span = float(starts[-1] + step_s)
    t0 = float(time_offset_s)
    if t0 < 0 or (t0 + horizon_s > span and not repeat):
        raise ValueError(f"the profile covers [0, {span:g}) s of profile time but the run needs "
                         f"[{t0:g}, {t0 + horizon_s:g}) s; set repeat: true, shorten the horizon or change "
                         "time_offset_s")

    def u_at(t_s: np.ndarray) -> np.ndarray:
        """Target utilisation at run times ``t_s`` (profile time ``t0 + t``, wrapped when repeating)."""
        tp = np.mod(t0 + np.asarray(t_s, dtype=float), span)
        if interpolation == "step":
            k = np.clip(np.searchsorted(starts, tp, side="right") - 1, 0, len(util) - 1)
            return util[k]
        mids = starts + step_s / 2
        return np.interp(tp, mids, util)

    rate_per_u = gpus / (gpus_per_job * float(job_duration_s))  # arrivals/s at utilisation 1
    peak = float(util.max()) * rate_per_u
    n_candidates = arrivals_rng.poisson(peak * horizon_s) if peak > 0 else 0
    candidates = np.sort(arrivals_rng.uniform(0.0, horizon_s, size=n_candidates))
    u_cand = u_at(candidates)
    keep = arrivals_rng.random(candidates.size) * float(util.max()) < u_cand  # thinning to rate u(t)
    arrival = candidates[keep]
    u_arr = u_cand[keep]
    u0 = float(u_at(np.array([0.0]))[0])
    n0 = int(rng.poisson(u0 * rate_per_u * job_duration_s))
    if duration_distribution == "exponential":
        duration = rng.exponential(job_duration_s, size=arrival.size)
        residual = rng.exponential(job_duration_s, size=n0)
    else:
        duration = np.full(arrival.size, float(job_duration_s))
        residual = rng.uniform(0.0, job_duration_s, size=n0)
    arrival = np.concatenate([np.zeros(n0), arrival])
    duration = np.concatenate([residual, duration])
    u_arr = np.concatenate([np.full(n0, u0), u_arr])
    positive = duration > 0  # a residual of exactly 0 is no job
    arrival, duration, u_arr = arrival[positive], duration[positive], u_arr[positive]
    if interpolation == "linear":
        grid = np.linspace(0.0, horizon_s, 100_001)
        values = u_at(grid)
        mean_u = float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(grid)) / horizon_s)
    else:
        mean_u = _step_mean(starts, util, span, t0, horizon_s)
    counts.update({"interval_s": step_s, "profile_span_s": span, "mean_utilisation": mean_u,
                   "jobs_running_at_start": n0})
    job_gpus = np.full(arrival.size, int(gpus_per_job), dtype=np.int64)
    out = _finish(path, "utilisation", run_time, counts, raw_arrival_s=arrival, gpus=job_gpus,
                  work_gpu_s=job_gpus * duration, extras={"offered_utilisation": u_arr})
    out.attrs["unsorted_rows"] = unsorted
    if unsorted:
        dataquality.warn(out.attrs, f"{path}: the profile's rows are not in index order ({unsorted} step(s) back); "
                                    "sorted by index")
    return out


def _step_mean(starts: np.ndarray, util: np.ndarray, span: float, t0: float, horizon_s: float) -> float:
    """Exact time average over ``[t0, t0 + horizon_s)`` of the step profile (repeated with period ``span``)."""
    edges = np.append(starts, span)
    cum = np.concatenate([[0.0], np.cumsum(util * np.diff(edges))])

    def integral(t: float) -> float:  # integral of u over [0, t) of profile time, t >= 0
        periods, rest = divmod(t, span)
        k = int(np.clip(np.searchsorted(edges, rest, side="right") - 1, 0, len(util) - 1))
        return periods * cum[-1] + cum[k] + util[k] * (rest - edges[k])

    return float((integral(t0 + horizon_s) - integral(t0)) / horizon_s)


def _profile_index(path: Path, df: pd.DataFrame, col: str, interval_s: float) -> tuple[float, np.ndarray]:
    """Interval length (s) and each row's start in profile time from an integer or timestamp index."""
    text = df[col].fillna("").astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    if np.isfinite(numbers).all():
        whole = numbers == np.round(numbers)
        _raise_first(path, df, col, ~whole | (np.abs(numbers) > MAX_TRACE_NUMBER),
                     "a whole interval number (or ISO 8601 timestamps in every row)")
        _refuse_duplicate_ids(path, df, col, text.to_numpy(dtype=object))
        k = numbers - numbers.min()
        ordered = np.sort(k)
        missing = np.flatnonzero(np.diff(ordered) != 1)
        if missing.size:
            after = ordered[missing[0]] + numbers.min()
            raise TraceError(path, f"column {col!r}", f"no row for interval {after + 1:g}",
                             "consecutive interval numbers (one row per interval)")
        return interval_s, k * interval_s
    dataquality.check_time_zone_forms(path, text.set_axis(df.index), col, 1, "data row")
    stamps = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    _raise_first(path, df, col, stamps.isna().to_numpy(),
                 "an ISO 8601 timestamp such as '2023-01-01T00:00:00Z' (or whole interval numbers in every row)")
    _refuse_duplicate_ids(path, df, col, stamps.astype(str).to_numpy(dtype=object))
    seconds = (stamps - stamps.min()).dt.total_seconds().to_numpy(dtype=float)
    ordered = np.sort(seconds)
    steps = np.diff(ordered)
    step = float(np.median(steps)) if steps.size else interval_s
    irregular = np.flatnonzero(steps != step)
    if irregular.size:
        raise TraceError(path, f"column {col!r}", f"a step of {steps[irregular[0]]:g} s where the others are {step:g} s",
                         "timestamps at one regular step (one row per interval)")
    return step, seconds


def _finish(
    path: Path,
    fmt: str,
    common: _Common,
    counts: dict[str, int | float | str],
    *,
    raw_arrival_s: np.ndarray,
    gpus: np.ndarray,
    work_gpu_s: np.ndarray,
    extras: dict[str, np.ndarray],
    given: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Apply the shared options to the kept rows and build the normalized job table.

    ``given`` holds per-row values from the file for optional job columns (NaN = empty cell),
    in the raw time frame for ``deadline_s``.
    """
    given = given or {}
    arrival = (np.asarray(raw_arrival_s, dtype=float) - common.time_offset_s) * common.time_scale
    back = np.flatnonzero(np.diff(arrival) < 0)
    counts["unsorted_rows"] = int(back.size)
    after = np.flatnonzero(arrival >= 0)
    counts["dropped_before_offset"] = int(arrival.size - after.size)
    order = after[np.argsort(arrival[after], kind="stable")]
    dropped_max = 0
    if common.max_jobs is not None and order.size > common.max_jobs:
        dropped_max = int(order.size - common.max_jobs)
        order = order[: common.max_jobs]
    counts["dropped_max_jobs"] = dropped_max
    if order.size == 0:
        summary = ", ".join(f"{k}={v}" for k, v in counts.items() if k == "rows_read" or k.startswith("dropped_"))
        raise TraceError(path, "rows after filtering", summary, "at least one job left after the filters")

    n = order.size
    arrival = arrival[order]
    gpus = np.asarray(gpus)[order].astype(np.int64)
    work = np.asarray(work_gpu_s, dtype=float)[order]
    picked = {k: np.asarray(v)[order] for k, v in given.items()}

    deadline = np.full(n, np.nan)
    if common.deadline_slack is not None:
        deadline = arrival + common.deadline_slack * work / gpus
    if "deadline_s" in picked:
        relative = picked["deadline_s"] - np.asarray(raw_arrival_s, dtype=float)[order]
        deadline = np.where(np.isnan(relative), deadline, arrival + relative)

    deferrable = np.zeros(n, dtype=bool)
    undecided = np.ones(n, dtype=bool)
    if "deferrable" in picked:
        undecided = np.isnan(picked["deferrable"])
        deferrable = np.where(undecided, False, picked["deferrable"] == 1.0)
    deferrable[undecided] = _choose_deferrable(int(undecided.sum()), common)

    value = common.value_tokens_per_gpu_s * work
    if "value_tokens" in picked:
        value = np.where(np.isnan(picked["value_tokens"]), value, picked["value_tokens"])
    beta = np.full(n, float(common.clock_sensitivity))
    if "clock_sensitivity" in picked:
        beta = np.where(np.isnan(picked["clock_sensitivity"]), beta, picked["clock_sensitivity"])

    table = pd.DataFrame(
        {
            "arrival_s": arrival,
            "gpus": gpus,
            "work_gpu_s": work,
            "deadline_s": deadline,
            "deferrable": deferrable,
            "value_tokens": value,
            "clock_sensitivity": beta,
        }
    )
    for name, values in extras.items():
        table[name] = np.asarray(values)[order]
    try:
        out = normalize_jobs(table, str(path))
    except ValueError as exc:  # our own checks should have caught it; still name the file
        raise TraceError(path, "job table", str(exc), "values within the job-table contract") from exc
    out.attrs = {
        "source": str(path),
        "format": fmt,
        **counts,
        "raw_first_arrival_s": float(np.asarray(raw_arrival_s, dtype=float)[order[0]]),
        "jobs": int(len(out)),
        "warnings": [],
    }
    if back.size and fmt != "utilisation":
        dataquality.warn(out.attrs, f"{path}: the rows are not in arrival order ({back.size} job(s) arrive "
                                    "before the job listed above them); jobs are sorted by arrival")
    return out


def _choose_deferrable(n: int, common: _Common) -> np.ndarray:
    """Mark exactly ``round(fraction x n)`` of ``n`` jobs deferrable, chosen by the rng."""
    fraction = common.deferrable_fraction
    mask = np.zeros(n, dtype=bool)
    if fraction >= 1.0:
        mask[:] = True
    elif fraction > 0.0 and n > 0:
        assert common.rng is not None  # _Common guarantees it
        k = int(math.floor(fraction * n + 0.5))
        mask[common.rng.choice(n, size=k, replace=False)] = True
    return mask


def _is_count(value: object) -> bool:
    """Whether ``value`` is an integer >= 1 (bools excluded)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise TraceError(path, "file", str(path), "an existing, readable file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TraceError(path, "file", f"byte {exc.start} is not UTF-8", "a UTF-8 text file") from exc
    except OSError as exc:
        raise TraceError(path, "file", str(exc), "an existing, readable file") from exc


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV with every cell as text (empty cells as ""), wrapping pandas' errors."""
    if not path.is_file():
        raise TraceError(path, "file", str(path), "an existing, readable file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError as exc:
        raise TraceError(path, "file", "no header or data", "a CSV file with a header row") from exc
    except pd.errors.ParserError as exc:
        raise dataquality.ragged_row_error(path, exc) from exc
    except UnicodeDecodeError as exc:
        raise TraceError(path, "file", f"byte {exc.start} is not UTF-8", "a UTF-8 text file") from exc
    except OSError as exc:
        raise TraceError(path, "file", str(exc), "an existing, readable file") from exc
    dataquality.check_no_implicit_index(path, df)
    df.columns = header_names(df.columns)
    if df.empty:
        raise TraceError(path, "file", "a header and no data rows", "at least one data row")
    return df


def _require_columns(df: pd.DataFrame, path: Path, required: tuple[str, ...]) -> None:
    for col in required:
        if col not in df.columns:
            raise TraceError(
                path, f"column {col!r}", f"header {list(df.columns)}",
                f"a header with the columns {', '.join(required)}",
            )


def _text(df: pd.DataFrame, col: str) -> np.ndarray:
    """A column's cells as stripped strings (short rows' missing cells become "")."""
    return df[col].fillna("").astype(str).str.strip().to_numpy(dtype=object)


def _numbers(
    df: pd.DataFrame,
    path: Path,
    col: str,
    *,
    allowed: str,
    allow_empty: bool = False,
    whole: bool = False,
    minimum: float | None = None,
    maximum: float = MAX_TRACE_NUMBER,
    label: str | None = None,
    rows: list[str] | None = None,
) -> np.ndarray:
    """Parse a text column as finite floats (NaN for empty cells when allowed) or raise TraceError.

    Values of magnitude above ``maximum`` (1e15 unless given: 1e308 is not a time or an amount of
    work) are refused; the message then says ``at most ...``.
    """
    text = df[col].fillna("").astype(str).str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    empty = (text == "").to_numpy()
    bad = ~np.isfinite(values) & ~(empty & allow_empty)
    if whole:
        bad |= np.isfinite(values) & (values != np.round(values))
    if minimum is not None:
        bad |= values < minimum
    _raise_first(path, df, col, bad, allowed, label=label, rows=rows)
    _raise_first(path, df, col, np.abs(values) > maximum, f"{allowed}, at most {maximum:g} in magnitude",
                 label=label, rows=rows)
    return values


def _refuse_duplicate_ids(
    path: Path, df: pd.DataFrame, col: str, ids: np.ndarray, *, label: str | None = None,
    rows: list[str] | None = None, what: str = "job id",
) -> None:
    """Refuse an id (``what``: a job id unless given) that appears on two rows (empty ids are not ids), naming both rows."""
    ids = pd.Series(ids, dtype=object).astype(str).str.strip()
    named = ids != ""
    dup = (ids.duplicated(keep="first") & named).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((ids == ids.iloc[i]).to_numpy())[0])
        where = rows[first] if rows is not None else f"data row {first + 1}"
        _raise_first(path, df, col, dup, f"each {what} on one row only (this one is also on {where})",
                     label=label, rows=rows)


def _raise_first(
    path: Path,
    df: pd.DataFrame,
    col: str,
    bad: np.ndarray,
    allowed: str,
    *,
    label: str | None = None,
    rows: list[str] | None = None,
) -> None:
    """Raise a TraceError naming the first row where ``bad`` is True, if any."""
    bad = np.asarray(bad, dtype=bool)
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    where = rows[i] if rows is not None else f"data row {i + 1}"
    value = df[col].iloc[i]
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        value = "<empty>"
    raise TraceError(path, f"{label or f'column {col!r}'}, {where}", value, allowed)
