"""Observation features of the RL environments: named, unit-scaled float32 columns built from a paused decision.

Three blocks, each with its column names (what ``docs/rl.md`` documents):

- :data:`GLOBAL_FEATURES`: time of day, renewable power now and its forecast from the supply series
  (``forecast_<h>h``: the renewable power ``h`` hours ahead, read off the scenario's own supply series, so a
  perfect forecast), the token and grid prices, queue lengths, the battery, and which decision this is;
- :data:`GPU_FEATURES`: per GPU, :data:`dcsim.learning.FEATURES` (job slack, remaining work, wallet, ...)
  plus its power state and whether it is deciding now;
- :data:`JOB_FEATURES`: per admission slot, the deferrable job waiting there (GPUs, duration, slack, wait,
  value), or zeros with ``present`` = 0;
- with ``facility.battery`` only, :data:`dcsim.envs.facility.FACILITY_FEATURES`: the facility agent's block.

Every value is clipped to ``[-FEATURE_BOUND, FEATURE_BOUND]``.
"""
from __future__ import annotations

import numpy as np

from dcsim.envs.bridge import Decision, DecisionKind
from dcsim.learning import FEATURES, _observation_features64, observation_features
from dcsim.policy import AgentObservation, GpuState, JobObservation, MarketView
from dcsim.supply import SupplyInputs

FEATURE_BOUND = 10.0
#: The decisions of the global block's one-hot ``decision_*`` columns. DISPATCH (only with ``facility.battery``) is
#: flagged in the facility block instead (:data:`dcsim.envs.facility.FACILITY_FEATURES`), so that scenarios
#: without a battery keep today's columns; at a DISPATCH step these three read 0.
DECISION_KINDS = (DecisionKind.BID, DecisionKind.ADMIT, DecisionKind.IDLE)
GPU_FEATURES = FEATURES + ("power_state", "deciding")
JOB_FEATURES = ("present", "gpus_frac", "duration_h", "slack_h", "waited_h", "value_log")


def global_feature_names(forecast_hours: tuple[float, ...]) -> tuple[str, ...]:
    """Names of the global block for forecasts ``forecast_hours`` ahead."""
    return (("hour_sin", "hour_cos", "renewable_frac") + tuple(f"forecast_{h:g}h" for h in forecast_hours)
            + ("price_log_ratio", "grid_price_per_100usd_mwh", "queue_per_gpu", "deferred_per_gpu", "battery_soc")
            + tuple(f"decision_{k.value}" for k in DECISION_KINDS))


def global_features(d: Decision, supply: SupplyInputs, horizon_s: float, forecast_hours: tuple[float, ...],
                    full_power_w: float) -> np.ndarray:
    """The global block at decision ``d``; renewable power is a fraction of the cluster's full power."""
    return global_features_of(d.kind, d.cluster.market, d.cluster.gpu_ids.size, supply, horizon_s, forecast_hours,
                              full_power_w)


def global_features_of(kind: DecisionKind, m: MarketView, n_gpus: int, supply: SupplyInputs, horizon_s: float,
                       forecast_hours: tuple[float, ...], full_power_w: float) -> np.ndarray:
    """The global block of a ``kind`` decision seeing market ``m`` (what a policy inside dcsim has at hand)."""
    return _clip(global_values(kind, m, n_gpus, supply, horizon_s, forecast_hours, full_power_w))


def global_values(kind: DecisionKind, m: MarketView, n_gpus: int, supply: SupplyInputs, horizon_s: float,
                  forecast_hours: tuple[float, ...], full_power_w: float) -> np.ndarray:
    """:func:`global_features_of` before the float32 cast and the clip, float64."""
    hour = 2.0 * np.pi * m.hour_utc / 24.0
    ahead = np.minimum(m.time_s + 3600.0 * np.asarray(forecast_hours, dtype=float), np.nextafter(horizon_s, 0.0))
    forecast = np.atleast_1d(supply.renewable_w.value_at(ahead)) if forecast_hours else np.zeros(0)
    p0 = m.base_price_tokens_per_kwh
    price = float(np.clip(m.price_tokens_per_kwh, 1e-6 * p0, 1e6 * p0))
    n = n_gpus
    one_hot = np.array([kind is k for k in DECISION_KINDS], dtype=float)
    return np.concatenate([
        [np.sin(hour), np.cos(hour), m.renewable_w / full_power_w], np.asarray(forecast, float) / full_power_w,
        [np.log(price / p0) / 2.0, m.grid_price_usd_per_mwh / 100.0, m.queue_length / n, m.deferred_jobs / n,
         m.battery_soc], one_hot])


def gpu_features(d: Decision, interval_s: float) -> np.ndarray:
    """The per-GPU block at decision ``d``, ``(n_gpus, len(GPU_FEATURES))``."""
    obs = d.cluster
    n = obs.gpu_ids.size
    deciding = np.zeros(n)
    if d.kind is DecisionKind.BID or d.kind is DecisionKind.IDLE:
        deciding[d.agents] = 1.0
    return gpu_rows(obs, n, interval_s, deciding)


def gpu_rows(obs: AgentObservation, n_gpus: int, interval_s: float, deciding: np.ndarray) -> np.ndarray:
    """Per-GPU rows of the GPUs in ``obs`` (``deciding`` 1 or 0 per row) in a cluster of ``n_gpus``."""
    base = observation_features(obs, n_gpus, interval_s)
    state = obs.state.astype(float) / (len(GpuState) - 1)
    return _clip(np.column_stack([base, state, deciding]))


def gpu_values_into(out: np.ndarray, obs: AgentObservation, n_gpus: int, interval_s: float,
                    deciding: np.ndarray) -> None:
    """Write :func:`gpu_rows` before the clip into ``out`` (float32, ``(len(obs), len(GPU_FEATURES))``): each
    value is the float64 one cast to float32 once, as :func:`gpu_rows`' casts give it."""
    out[:, :len(FEATURES)] = _observation_features64(obs, n_gpus, interval_s)
    out[:, len(FEATURES)] = obs.state.astype(float) / (len(GpuState) - 1)
    out[:, len(FEATURES) + 1] = deciding


def job_features(d: Decision, slots: int, n_gpus: int, first: int = 0) -> np.ndarray:
    """The admission block at decision ``d``, ``(slots, len(JOB_FEATURES))``: waiting jobs ``first`` to
    ``first + slots - 1`` (more jobs than slots are asked about in several steps at the same instant)."""
    if d.kind is DecisionKind.ADMIT:
        return job_rows(d.observation, slots, n_gpus, first)
    return np.zeros((slots, len(JOB_FEATURES)), dtype=np.float32)


def job_rows(o: JobObservation, slots: int, n_gpus: int, first: int = 0) -> np.ndarray:
    """The admission block of waiting jobs ``o``, ``(slots, len(JOB_FEATURES))``, from job ``first`` on."""
    return _clip(job_values(o, slots, n_gpus, first))


def job_values(o: JobObservation, slots: int, n_gpus: int, first: int = 0) -> np.ndarray:
    """:func:`job_rows` before the float32 cast and the clip, float64."""
    out = np.zeros((slots, len(JOB_FEATURES)))
    sl = slice(first, min(len(o), first + slots))
    m = sl.stop - sl.start
    slack_h = np.where(np.isfinite(o.slack_s[sl]), np.clip(o.slack_s[sl] / 3600.0, -4.0, 8.0) / 4.0, 2.0)
    out[:m] = np.column_stack([np.ones(m), o.gpus[sl] / n_gpus, o.duration_s[sl] / 3600.0 / 4.0, slack_h,
                               o.waited_s[sl] / 3600.0 / 4.0, np.log1p(o.value_tokens[sl]) / 5.0])
    return out


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0), -FEATURE_BOUND, FEATURE_BOUND)


def clip_in_place(x: np.ndarray) -> np.ndarray:
    """:func:`_clip` of a float32 array, in place: NaN → 0, ±inf → ±float32 max, then clipped to ±FEATURE_BOUND."""
    np.nan_to_num(x, copy=False, nan=0.0)
    return np.clip(x, -FEATURE_BOUND, FEATURE_BOUND, out=x)
