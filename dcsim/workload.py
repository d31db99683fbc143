"""Synthetic job streams (Poisson, bursty MMPP, diurnal) and the dispatch to trace loaders."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dcsim.config import Diurnal, Distribution, Mmpp, Poisson, Scenario, WorkloadConfig
from dcsim.errors import ScenarioError
from dcsim.jobs import normalize_jobs
from dcsim.seeding import Streams


def poisson_times(rate_per_s: float, t0_s: float, t1_s: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times of a homogeneous Poisson process on ``[t0_s, t1_s)``: N ~ Poisson(λT), times sorted uniform."""
    n = rng.poisson(rate_per_s * (t1_s - t0_s))
    return np.sort(rng.uniform(t0_s, t1_s, size=n))


def mmpp_times(cfg: Mmpp, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
    """Two-state MMPP: exponential sojourns in each state, Poisson arrivals at that state's rate.

    The first state is drawn from the stationary distribution (time fractions ∝ mean sojourns).
    """
    mean = np.asarray(cfg.mean_sojourn_s, dtype=float)
    state = int(rng.random() < mean[1] / mean.sum())
    t, pieces = 0.0, []
    while t < horizon_s:
        end = min(horizon_s, t + rng.exponential(mean[state]))
        if cfg.rates_per_s[state] > 0:
            pieces.append(poisson_times(cfg.rates_per_s[state], t, end, rng))
        t, state = end, 1 - state
    return np.concatenate(pieces) if pieces else np.empty(0)


def diurnal_rate_per_s(cfg: Diurnal, t_s: np.ndarray, start: pd.Timestamp) -> np.ndarray:
    """Arrival rate at ``t_s``: ``mean * (1 + A cos(2π (hour_utc - peak) / 24))``."""
    hour0 = start.hour + start.minute / 60 + start.second / 3600
    hour = hour0 + np.asarray(t_s) / 3600.0
    return cfg.mean_rate_per_s * (1 + cfg.amplitude * np.cos(2 * np.pi * (hour - cfg.peak_hour_utc) / 24))


def diurnal_times(cfg: Diurnal, horizon_s: float, start: pd.Timestamp, rng: np.random.Generator) -> np.ndarray:
    """Non-homogeneous Poisson arrivals by thinning a process at the peak rate."""
    peak = cfg.mean_rate_per_s * (1 + cfg.amplitude)
    candidates = poisson_times(peak, 0.0, horizon_s, rng)
    keep = rng.random(candidates.size) * peak < diurnal_rate_per_s(cfg, candidates, start)
    return candidates[keep]


def sample(dist: Distribution, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` values from a configured distribution."""
    kind = dist.distribution
    if kind == "exponential":
        return rng.exponential(dist.mean, size=n)
    if kind == "lognormal":
        mu = math.log(dist.mean) - dist.sigma**2 / 2  # so that the mean is dist.mean
        return rng.lognormal(mu, dist.sigma, size=n)
    if kind == "constant":
        return np.full(n, dist.value)
    if kind == "uniform":
        return rng.uniform(dist.low, dist.high, size=n)
    if kind == "pareto":
        return dist.scale * (1 + rng.pareto(dist.shape, size=n))
    raise ValueError(f"unknown distribution {kind!r}")


def distribution_mean(dist: Distribution) -> float:
    """Analytic mean of a configured distribution."""
    return {
        "exponential": lambda d: d.mean,
        "lognormal": lambda d: d.mean,
        "constant": lambda d: d.value,
        "uniform": lambda d: (d.low + d.high) / 2,
        "pareto": lambda d: d.scale * d.shape / (d.shape - 1),
    }[dist.distribution](dist)


def synthetic_jobs(cfg: WorkloadConfig, horizon_s: float, start: pd.Timestamp, streams: Streams) -> pd.DataFrame:
    """Generate the job table for ``[0, horizon_s)``: arrival times from the ``arrivals`` stream, sizes and
    flags from the ``service`` stream (so the same seed gives the same jobs whatever the policy)."""
    arrivals_rng = streams.generator("arrivals")
    service_rng = streams.generator("service")
    arr = cfg.arrivals
    if isinstance(arr, Poisson):
        times = poisson_times(arr.rate_per_s, 0.0, horizon_s, arrivals_rng)
    elif isinstance(arr, Mmpp):
        times = mmpp_times(arr, horizon_s, arrivals_rng)
    else:
        times = diurnal_times(arr, horizon_s, start, arrivals_rng)
    n = times.size
    weights = None
    if cfg.gpus_per_job.weights is not None:
        weights = np.asarray(cfg.gpus_per_job.weights, dtype=float)
        weights = weights / weights.sum()
    gpus = service_rng.choice(np.asarray(cfg.gpus_per_job.values), size=n, p=weights)
    duration_s = sample(cfg.duration_s, n, service_rng)
    deferrable = service_rng.random(n) < cfg.deferrable_fraction
    return job_frame(cfg, times, gpus, duration_s, deferrable)


def job_frame(cfg: WorkloadConfig, times: np.ndarray, gpus: np.ndarray, duration_s: np.ndarray,
              deferrable: np.ndarray) -> pd.DataFrame:
    """The synthetic job table of jobs arriving at ``times`` (sorted) with these draws (the whole table, or one
    chunk of it streamed by :mod:`dcsim.arrivals`: the same expressions, so the same numbers)."""
    n = times.size
    work = duration_s * gpus
    deadline = times + cfg.deadline_slack * duration_s if cfg.deadline_slack else np.full(n, np.nan)
    df = pd.DataFrame(
        {
            "arrival_s": times,
            "gpus": gpus.astype(np.int64),
            "work_gpu_s": work,
            "deadline_s": deadline,
            "deferrable": deferrable,
            "value_tokens": cfg.value_tokens_per_gpu_s * work,
            "clock_sensitivity": np.full(n, cfg.clock_sensitivity),
        }
    )
    return normalize_jobs(df, "synthetic")


def build_jobs(scenario: Scenario, streams: Streams) -> pd.DataFrame:
    """The run's job table, from the synthetic process or the configured trace, limited to the horizon.

    Trace options come from ``workload.trace.options``; the workload's ``value_tokens_per_gpu_s``,
    ``deferrable_fraction``, ``deadline_slack`` and ``clock_sensitivity`` are passed as defaults (the
    Azure loader keeps its own memory-bound ``clock_sensitivity`` default unless the options set it).
    ``time_offset_s: first`` aligns the trace's first kept job with t = 0. A ``utilisation`` profile
    gets the cluster size, the horizon and the ``arrivals`` and ``service`` streams. The loader's
    ``attrs`` (rows read, dropped, warnings) stay on the returned table.
    """
    if scenario.workload.llm_serving is not None:
        from dcsim.errors import DcsimError

        raise DcsimError("workload.llm_serving: a serving scenario has requests, not GPU jobs; it runs with `run`, "
                         "`compare` and `sweep` (docs/serving.md), not with the GPU-job engine (train, envs)")
    cfg = scenario.workload
    start = pd.Timestamp(scenario.start)
    if cfg.arrivals is not None:
        return synthetic_jobs(cfg, scenario.horizon_s, start, streams)
    from dcsim import workload_traces  # imported lazily: pandas-heavy loaders only when a trace is used

    loaders = {
        "alibaba": workload_traces.load_alibaba_pods,
        "azure_llm": workload_traces.load_azure_llm,
        "swf": workload_traces.load_swf,
        "csv": workload_traces.load_job_csv,
        "utilisation": workload_traces.load_utilisation,
    }
    trace = cfg.trace
    options = {
        "value_tokens_per_gpu_s": cfg.value_tokens_per_gpu_s,
        "deferrable_fraction": cfg.deferrable_fraction,
        "deadline_slack": cfg.deadline_slack,
    }
    if trace.format != "azure_llm":
        options["clock_sensitivity"] = cfg.clock_sensitivity
    options.update(trace.options)
    align_first = options.get("time_offset_s") == "first"
    if align_first:
        options["time_offset_s"] = 0.0
    if trace.format == "utilisation":  # a profile becomes jobs on this cluster over this run
        options = {"gpus": scenario.cluster.gpus, "horizon_s": scenario.horizon_s,
                   "arrivals_rng": streams.generator("arrivals"), **options}
        options["rng"] = streams.generator("service")
    elif 0 < options.get("deferrable_fraction", 0) < 1:
        options["rng"] = streams.generator("service")
    try:
        jobs = loaders[trace.format](trace.path, **options)
    except (TypeError, ValueError) as exc:
        given = {k: v for k, v in trace.options.items()}
        raise ScenarioError(None, [("workload.trace.options", given, f"valid options of the {trace.format!r} loader: {exc}")]) from None
    if align_first and len(jobs):
        shift = float(jobs["arrival_s"].min())
        jobs["arrival_s"] -= shift
        jobs["deadline_s"] -= shift
    attrs = dict(jobs.attrs)
    kept = jobs[jobs["arrival_s"] < scenario.horizon_s].reset_index(drop=True)
    attrs["dropped_after_horizon"] = int(len(jobs) - len(kept))
    attrs["jobs"] = int(len(kept))
    kept.attrs = attrs
    return kept


def build_job_source(scenario: Scenario, streams: Streams):
    """The run's jobs for the engine: a :class:`~dcsim.arrivals.SyntheticSource` streaming the synthetic table in
    chunks when the run streams its jobs (``outputs.stream_jobs``), else the whole table of :func:`build_jobs`."""
    from dcsim.arrivals import SyntheticSource, streams_jobs

    cfg = scenario.workload
    if cfg.llm_serving is None and cfg.arrivals is not None and scenario.outputs.stream_jobs is not False:
        source = SyntheticSource(cfg, scenario.horizon_s, pd.Timestamp(scenario.start), streams)
        if streams_jobs(scenario, source):
            return source
    return build_jobs(scenario, streams)

