"""Rewards and transitions for learning policies (torch-free).

The engine meters, per GPU agent, what it accrued between two of its decisions (tokens earned and spent,
energy, carbon, job latency, deadline misses, a share of dropped jobs) and hands the weighted sum to the
policy with the time elapsed, as :class:`Feedback` on the observation. :class:`TransitionBuilder` turns the
stream of feedback into semi-Markov transitions ``(obs, action, reward, next_obs, Δt)`` for the learners.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from dcsim.config import RewardConfig
from dcsim.errors import PolicyError
from dcsim.policy import MARKET_FIELDS, Admission, AgentObservation, Bids, GpuSpecView, IdleAction, JobObservation

#: Batches of at most this many rows take the Python-number paths of the learners (features, bins, bids, the
#: Q-table update): a per-job decision is one row, where numpy's per-call overhead dominates. Each such path does
#: the numpy path's float64 operations in the same order (transcendental functions stay in numpy), so results are
#: bit-identical; ``tests/test_learning_fast_path.py`` checks both paths against each other. 0 turns them off.
SMALL_BATCH = 16

#: Quantities metered per agent between decisions, in this order (columns of ``Feedback.components``).
REWARD_COMPONENTS = ("value_tokens", "spent_tokens", "energy_kwh", "carbon_kg", "latency_s", "deadline_misses",
                     "dropped_jobs")


def reward_weights(cfg: RewardConfig) -> np.ndarray:
    """Signed weight of each of :data:`REWARD_COMPONENTS`: value is a gain, everything else a cost."""
    return np.array([cfg.value_per_token, -cfg.energy_cost_per_token, -cfg.energy_per_kwh, -cfg.carbon_per_kg,
                     -cfg.latency_per_s, -cfg.slo_per_miss, -cfg.drop_per_job])


@dataclass(frozen=True)
class Feedback:
    """What each deciding agent accrued since its previous decision (arrays aligned with the observation's rows).

    Attributes:
        reward: ``(n,)`` the scenario's reward over the interval: ``(1 − w)·own + w·team`` with ``w`` the
            reward's ``team_fraction`` and ``team`` the cluster's accruals divided by the number of GPUs.
        dt_s: ``(n,)`` seconds since the agent's previous decision (since t = 0 for its first).
        first: ``(n,)`` True where this is the agent's first decision of the run.
        components: ``(n, 7)`` the agent's own accruals, columns as :data:`REWARD_COMPONENTS`.
    """

    reward: np.ndarray
    dt_s: np.ndarray
    first: np.ndarray
    components: np.ndarray


def episode_totals(result) -> dict[str, float]:
    """The cluster's totals of :data:`REWARD_COMPONENTS` over a whole run (a :class:`~dcsim.engine.RunResult`),
    from its tables.

    This is what the engine's per-agent feedback sums to over all agents and decisions, so any policy,
    learning or not, can be scored on the same reward: value credited on completion, tokens paid, energy
    drawn, grid carbon, each arrived job's time in the system (arrival to completion, drop or horizon),
    deadline misses as the job table counts them (late completions, expired drops, jobs pending past their
    deadline at the horizon) and drops.
    """
    from dcsim.metrics import job_totals

    totals, energy, tokens = job_totals(result), result.energy, result.tokens
    return {
        "value_tokens": totals.value_completed(),
        "spent_tokens": float(tokens["spent"]),
        "energy_kwh": float(energy["consumed_j"]) / 3.6e6,
        "carbon_kg": float(energy["carbon_g"]) / 1000.0,
        "latency_s": totals.latency_s(),
        "deadline_misses": float(totals.deadline_misses),
        "dropped_jobs": float(totals.status_counts["dropped"]),
    }


def episode_reward(totals: dict[str, float], cfg: RewardConfig) -> float:
    """The weighted reward of a run's totals (see :func:`episode_totals`)."""
    return float(reward_weights(cfg) @ np.array([totals[k] for k in REWARD_COMPONENTS]))


# --------------------------------------------------------------------------------------------- actions
class BidAction(IntEnum):
    """The discrete bids a learning agent chooses between for its running job (one per agent and decision).

    FULL is 0 so that an untrained agent (all values tied, ties go to the lowest index) runs its job. Members
    5–7 were added for issue 14: the two-block bids ``price_threshold`` uses (a price-blind floor at the
    minimum cap plus the rest of the range at a price limit) and the pacing of ``deadline_slack``.
    """

    FULL = 0  # full power at any price
    FULL_IF_CHEAP = 1  # full power, only if the price is at most ``cheap_multiple`` × p0
    HALF = 2  # half of the dynamic range above idle, at any price
    MIN_CAP = 3  # the board's minimum power cap, at any price
    PAUSE = 4  # ask for no power above idle: the job pauses and pays nothing
    FLOOR_THEN_VALUE = 5  # the minimum cap at any price + the rest up to full power at <= the job's value per kWh
    FLOOR_THEN_LIMIT = 6  # the minimum cap at any price + the rest at <= ``block_limit_multiple`` × p0
    PACE = 7  # the lowest power that still meets the deadline (with ``pace_safety``), at any price; FULL without one


#: Actions whose bid is two blocks (a price-blind floor and a priced rest).
TWO_BLOCK_ACTIONS = (BidAction.FLOOR_THEN_VALUE, BidAction.FLOOR_THEN_LIMIT)


def job_value_per_kwh(obs: AgentObservation) -> np.ndarray:
    """Each agent's share of its job's value per kWh of the energy above idle its remaining work needs at full
    clock, tokens/kWh (what ``truthful`` bids; 0 without a job or without remaining work)."""
    g = obs.gpu
    energy_kwh = obs.job_remaining_s * (g.full_power_w - g.idle_w) / 3.6e6
    share = obs.job_value_tokens / np.maximum(obs.job_gpus, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(obs.has_job & (energy_kwh > 0), share / np.where(energy_kwh > 0, energy_kwh, 1.0), 0.0)


def pace_power_w(obs: AgentObservation, safety: float = 1.25) -> np.ndarray:
    """Board power that finishes each job by ``now + (deadline − now) / safety``, W: the work rate needed is
    remaining ÷ time left, the clock ``f = rate^(1/β)`` and ``P = P_idle + (P_tdp − P_idle)·u·f^γ``, at least
    the minimum cap; full power for a job without a deadline or already past what the safety allows.

    For a few rows (:data:`SMALL_BATCH`) the same operations run on Python numbers, except the two powers, which
    stay numpy's on arrays of the same length (numpy's ``**`` may dispatch SIMD kernels that differ from
    Python's ``pow`` in the last bit)."""
    g = obs.gpu
    if len(obs) <= SMALL_BATCH:
        return _pace_power_small(obs, safety)
    time_left_s = (obs.job_slack_s + obs.job_remaining_s) / safety
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(time_left_s > 0, obs.job_remaining_s / np.where(time_left_s > 0, time_left_s, 1.0), np.inf)
        beta = np.maximum(obs.job_clock_sensitivity, 1e-6)
        f = np.clip(rate, 0.0, 1.0) ** (1.0 / beta)
    power_w = g.idle_w + (g.tdp_w - g.idle_w) * g.utilisation * f ** g.gamma
    return np.where(np.isfinite(obs.job_slack_s) & obs.has_job, np.clip(power_w, g.min_cap_w, g.full_power_w),
                    g.full_power_w)


def _pace_power_small(obs: AgentObservation, safety: float) -> np.ndarray:
    """:func:`pace_power_w` for a few rows, operation for operation (Python's ``max``/``min`` keep their first
    argument on ties and NaN, as ``np.maximum``/``np.clip`` do here; see tests/test_rule_fast_paths.py)."""
    g = obs.gpu
    rows = obs.rows("job_slack_s", "job_remaining_s", "job_clock_sensitivity", "has_job")
    clipped, exponent = [], []
    for sl, r, b, _ in rows:
        time_left_s = (sl + r) / safety
        rate = r / time_left_s if time_left_s > 0 else math.inf
        clipped.append(min(max(rate, 0.0), 1.0))
        exponent.append(1.0 / max(b, 1e-6))
    # bases in [0, 1] (or NaN), exponents > 0: no floating-point warning to silence
    f = np.array(clipped, dtype=np.float64) ** np.array(exponent, dtype=np.float64)
    scale = (g.tdp_w - g.idle_w) * g.utilisation
    lo, hi, full = g.min_cap_w, g.full_power_w, g.full_power_w
    out = []
    for (sl, _, _, has), fg in zip(rows, (f ** g.gamma).tolist()):
        out.append(min(max(g.idle_w + scale * fg, lo), hi) if has and math.isfinite(sl) else full)
    return np.array(out, dtype=np.float64)


_PACE = int(BidAction.PACE)
_TWO_BLOCK = frozenset(int(a) for a in TWO_BLOCK_ACTIONS)
_N_BID_ACTIONS = len(BidAction)


def _bids_small(chosen: list[int], obs: AgentObservation, span: float, floor_w: float, cheap_multiple: float,
                block_limit_multiple: float, pace_safety: float) -> Bids:
    """:func:`bids_from_actions` for a few rows, as Python numbers: the numpy path's levels, prices and (where a
    row takes a two-block action) demand curves, operation for operation; ``PACE`` rows request
    :func:`pace_power_w` of every row, as there."""
    gpu = obs.gpu
    levels = (gpu.full_power_w, gpu.full_power_w, gpu.idle_w + 0.5 * span, floor_w, gpu.idle_w,
              gpu.full_power_w, gpu.full_power_w, gpu.full_power_w)
    p0 = obs.market_values()[_MV_P0]
    cheap = cheap_multiple * p0
    request = [float(levels[a]) for a in chosen]
    if _PACE in chosen:
        pace = pace_power_w(obs, pace_safety).tolist()
        request = [pace[i] if a == _PACE else r for i, (a, r) in enumerate(zip(chosen, request))]
    price = [cheap if a == BidAction.FULL_IF_CHEAP else math.inf for a in chosen]
    n = len(chosen)
    if not any(a in _TWO_BLOCK for a in chosen):
        return Bids(np.array(request, dtype=float), np.array(price, dtype=float))
    # job_value_per_kwh, row by row
    energy_span = gpu.full_power_w - gpu.idle_w
    has, remaining, value, gpus = (list(c) for c in zip(*obs.rows("has_job", "job_remaining_s", "job_value_tokens",
                                                                  "job_gpus")))
    limit = block_limit_multiple * p0
    steps_w, steps_price = [], []
    for i, a in enumerate(chosen):
        if a in _TWO_BLOCK:
            if a == BidAction.FLOOR_THEN_VALUE:
                energy_kwh = remaining[i] * energy_span / 3.6e6
                share = value[i] / max(gpus[i], 1)
                rest = share / energy_kwh if has[i] and energy_kwh > 0 else 0.0
            else:
                rest = limit
            steps_w.append((floor_w - gpu.idle_w, gpu.full_power_w - floor_w))
            steps_price.append((math.inf, rest))
        else:
            steps_w.append((request[i] - gpu.idle_w, 0.0))
            steps_price.append((price[i], 0.0))
    return Bids(np.array(request, dtype=float), np.array(price, dtype=float),
                np.array(steps_w, dtype=float).reshape(n, 2), np.array(steps_price, dtype=float).reshape(n, 2))


def bids_from_action_list(actions: list[int], obs: AgentObservation, cheap_multiple: float = 1.1,
                          block_limit_multiple: float = 2.0, pace_safety: float = 1.25) -> Bids:
    """:func:`bids_from_actions` of ``np.array(actions, dtype=np.int64)`` for a few rows' actions given as Python
    ints (the learners' few-row path), without the array when no row takes ``PACE``."""
    if len(actions) <= SMALL_BATCH and all(0 <= a < _N_BID_ACTIONS for a in actions):
        gpu = obs.gpu
        return _bids_small(actions, obs, gpu.full_power_w - gpu.idle_w, max(gpu.min_cap_w, gpu.idle_w),
                           cheap_multiple, block_limit_multiple, pace_safety)
    return bids_from_actions(np.array(actions, dtype=np.int64), obs, cheap_multiple, block_limit_multiple, pace_safety)


def bids_from_actions(actions: np.ndarray, obs: AgentObservation, cheap_multiple: float = 1.1,
                      block_limit_multiple: float = 2.0, pace_safety: float = 1.25) -> Bids:
    """Turn :class:`BidAction` values into the engine's :class:`~dcsim.policy.Bids`.

    Single-block actions give the plain ``request_w``/``max_price`` form; only when some row takes a two-block
    action are the bids given as a two-step demand curve for every row (a single block as ``[block, 0]``), so
    a run that never uses the two-block actions bids exactly as before they existed.

    Args:
        actions: ``(n,)`` :class:`BidAction` values.
        obs: The observation the actions answer.
        cheap_multiple: ``FULL_IF_CHEAP``'s price limit, × p0.
        block_limit_multiple: ``FLOOR_THEN_LIMIT``'s limit on the block above the minimum cap, × p0.
        pace_safety: ``PACE`` plans to finish by ``now + (deadline − now) / pace_safety`` (>= 1).
    """
    gpu = obs.gpu
    actions = np.asarray(actions)
    span = gpu.full_power_w - gpu.idle_w
    floor_w = max(gpu.min_cap_w, gpu.idle_w)
    if actions.ndim == 1 and actions.size <= SMALL_BATCH and actions.dtype.kind in "iu":
        chosen = actions.tolist()
        if all(0 <= a < _N_BID_ACTIONS for a in chosen):
            return _bids_small(chosen, obs, span, floor_w, cheap_multiple, block_limit_multiple, pace_safety)
    levels = np.array([gpu.full_power_w, gpu.full_power_w, gpu.idle_w + 0.5 * span, floor_w, gpu.idle_w,
                       gpu.full_power_w, gpu.full_power_w, gpu.full_power_w])
    request = levels[actions]
    pace = actions == BidAction.PACE
    if pace.any():
        request = np.where(pace, pace_power_w(obs, pace_safety), request)
    p0 = obs.market.base_price_tokens_per_kwh
    price = np.where(actions == BidAction.FULL_IF_CHEAP, cheap_multiple * p0, np.inf)
    two = np.isin(actions, TWO_BLOCK_ACTIONS)
    if not two.any():
        return Bids(request, price)
    rest_price = np.where(actions == BidAction.FLOOR_THEN_VALUE, job_value_per_kwh(obs), block_limit_multiple * p0)
    first_w = np.where(two, floor_w - gpu.idle_w, request - gpu.idle_w)
    second_w = np.where(two, gpu.full_power_w - floor_w, 0.0)
    steps_w = np.stack([first_w, second_w], axis=1)
    # a single block's unused second step is 0 W at price 0: non-increasing along the row, and never inf − inf
    steps_price = np.stack([np.where(two, np.inf, price), np.where(two, rest_price, 0.0)], axis=1)
    return Bids(request, price, steps_w, steps_price)


# --------------------------------------------------------------------------------------------- observations
#: Columns of :func:`observation_features`, in order (the DQN's input; the Q-table's bins read some of them).
FEATURES = ("has_job", "has_deadline", "slack_h", "remaining_h", "value_over_cost", "wallet_rounds", "price_log_ratio",
            "renewable_fraction", "hour_sin", "hour_cos", "battery_soc", "queue_per_gpu", "clock_sensitivity",
            "job_gpus_log2", "round_left_frac")


def observation_features(obs: AgentObservation, n_gpus: int, interval_s: float) -> np.ndarray:
    """A fixed-length, roughly unit-scaled feature vector per agent, ``(n, len(FEATURES))`` float32.

    ``value_over_cost`` is ln(job value per GPU ÷ the tokens its remaining work costs at full power at the
    current price), clipped to ±3: above 0 the job is worth running now. ``wallet_rounds`` is ln(1 + wallet ÷
    the cost of one round at full power). ``price_log_ratio`` is ln(price ÷ p0) / 2.
    """
    return _observation_features64(obs, n_gpus, interval_s).astype(np.float32)


def _observation_features64(obs: AgentObservation, n_gpus: int, interval_s: float) -> np.ndarray:
    """:func:`observation_features` before the cast to float32."""
    if len(obs) <= SMALL_BATCH:
        rows = observation_feature_rows(obs, n_gpus, interval_s)
        if rows is not None:
            return np.array(rows, dtype=float).reshape(len(obs), len(FEATURES))
    m = obs.market
    gpu = obs.gpu
    span_kw = (gpu.full_power_w - gpu.idle_w) / 1000.0
    p0 = m.base_price_tokens_per_kwh
    # a headline price can be 0 or infinite (an auction cleared by price-blind bids): keep features finite
    price = float(np.clip(m.price_tokens_per_kwh, 1e-6 * p0, 1e6 * p0))
    has = obs.has_job.astype(float)
    deadline = np.isfinite(obs.job_slack_s)
    slack_h = np.where(deadline, np.clip(obs.job_slack_s / 3600.0, -4.0, 8.0) / 4.0, 2.0)
    remaining_h = np.clip(obs.job_remaining_s / 3600.0, 0.0, 8.0) / 4.0
    share = obs.job_value_tokens / np.maximum(obs.job_gpus, 1)
    cost = price * span_kw * np.maximum(obs.job_remaining_s, 1.0) / 3600.0
    value_over_cost = np.where(obs.has_job, np.clip(np.log(np.maximum(share, 1e-12) / cost), -3.0, 3.0), 0.0)
    round_cost = price * span_kw * interval_s / 3600.0
    wallet_rounds = np.log1p(obs.wallet_tokens / round_cost) / 5.0
    hour = 2.0 * np.pi * m.hour_utc / 24.0
    left = np.clip((m.next_round_s - m.time_s) / interval_s, 0.0, 1.0)
    n = len(obs)
    cols = [has, deadline.astype(float), slack_h, remaining_h, value_over_cost / 3.0, wallet_rounds,
            np.full(n, np.log(price / p0) / 2.0), np.full(n, m.renewable_fraction),
            np.full(n, np.sin(hour)), np.full(n, np.cos(hour)), np.full(n, m.battery_soc),
            np.full(n, np.log1p(m.queue_length / max(n_gpus, 1))), obs.job_clock_sensitivity * has,
            np.log2(np.maximum(obs.job_gpus, 1)) / 5.0, np.full(n, left)]
    return np.stack(cols, axis=1)


def _clip(x: float, lo: float, hi: float) -> float:
    """``np.clip`` of one float64 (numpy's rule: ``lo`` only if ``x < lo``, so −0.0 and NaN pass through)."""
    return lo if x < lo else (hi if x > hi else x)


#: Positions of the market fields the features read in :meth:`AgentObservation.market_values`.
_MV = {name: k for k, name in enumerate(MARKET_FIELDS)}
_MV_TIME, _MV_HOUR, _MV_RENEWABLE, _MV_PRICE, _MV_P0, _MV_SOC, _MV_QUEUE, _MV_DEFERRED, _MV_NEXT = (
    _MV[f] for f in ("time_s", "hour_utc", "renewable_fraction", "price_tokens_per_kwh", "base_price_tokens_per_kwh",
                     "battery_soc", "queue_length", "deferred_jobs", "next_round_s"))
#: The per-agent fields the features read, in :data:`dcsim.policy.ROW_FIELDS` order.
_FEATURE_ROW_FIELDS = ("state", "has_job", "job_remaining_s", "job_slack_s", "job_clock_sensitivity",
                       "job_value_tokens", "job_gpus", "wallet_tokens")


def observation_feature_rows(obs: AgentObservation, n_gpus: int, interval_s: float,
                             rows: list[tuple] | None = None, market: tuple | None = None) -> list[list] | None:
    """:func:`observation_features` before the cast to float32, as one list of float64 Python numbers per row, for
    a few rows: each float64 operation of the numpy path in its order; the logarithms are numpy's, one call over
    all rows as there. None where a division by zero (numpy: inf and a warning) would raise in Python: the numpy
    path runs then.

    Args:
        obs: The observation.
        n_gpus, interval_s: As :func:`observation_features`.
        rows: ``obs.rows(*_FEATURE_ROW_FIELDS)`` if the caller has it already.
        market: ``obs.market_values()`` if the caller has it already.
    """
    if rows is None:
        rows = obs.rows(*_FEATURE_ROW_FIELDS)
    if market is None:
        market = obs.market_values()
    gpu = obs.gpu
    span_kw = (gpu.full_power_w - gpu.idle_w) / 1000.0
    p0 = market[_MV_P0]
    lo, hi = 1e-6 * p0, 1e6 * p0
    price = market[_MV_PRICE]
    # float(np.clip(price, lo, hi)): the Python form is numpy's rule for lo <= hi (a p0 >= 0)
    price = float(_clip(price, lo, hi) if lo <= hi else np.clip(price, lo, hi))
    p_span = price * span_kw
    round_cost = p_span * interval_s / 3600.0
    try:
        ratio = [max(r[5] / max(r[6], 1), 1e-12) / (p_span * max(r[2], 1.0) / 3600.0) for r in rows]
        wallet_ratio = [r[7] / round_cost for r in rows]
    except ZeroDivisionError:
        return None
    log_ratio = np.log(np.array(ratio, dtype=float)).tolist()
    wallet_rounds = (np.log1p(np.array(wallet_ratio, dtype=float)) / 5.0).tolist()
    gpus_log2 = (np.log2(np.array([max(r[6], 1) for r in rows], dtype=np.int64)) / 5.0).tolist()
    hour = 2.0 * np.pi * market[_MV_HOUR] / 24.0
    left = float(_clip((market[_MV_NEXT] - market[_MV_TIME]) / interval_s, 0.0, 1.0))
    shared = [float(np.log(price / p0) / 2.0), float(market[_MV_RENEWABLE]), float(np.sin(hour)),
              float(np.cos(hour)), float(market[_MV_SOC]), float(np.log1p(market[_MV_QUEUE] / max(n_gpus, 1)))]
    out = []
    for i, (_, has_job, remaining_s, slack_s, beta, _, _, _) in enumerate(rows):
        has = 1.0 if has_job else 0.0
        deadline = math.isfinite(slack_s)
        slack_h = _clip(slack_s / 3600.0, -4.0, 8.0) / 4.0 if deadline else 2.0
        remaining_h = _clip(remaining_s / 3600.0, 0.0, 8.0) / 4.0
        value_over_cost = _clip(log_ratio[i], -3.0, 3.0) if has_job else 0.0
        out.append([has, 1.0 if deadline else 0.0, slack_h, remaining_h, value_over_cost / 3.0, wallet_rounds[i],
                    *shared, beta * has, gpus_log2[i], left])
    return out


def pace_needed_value(has: float, deadline: float, slack: float, remaining: float) -> float:
    """One row's ``pace_needed`` (:func:`policies.qlearning.pace_needed`) from its ``has_job``, ``has_deadline``,
    ``slack_h`` and ``remaining_h`` feature values: remaining ÷ (slack + remaining) of the unscaled hours, 2 where
    the deadline has passed or cannot be met at full clock, 0 without a deadline or a job. The few-row paths and the
    compiled kernel (which compiles this very function) use it."""
    slack_h, remaining_h = 4.0 * slack, 4.0 * remaining
    left_h = slack_h + remaining_h
    need = remaining_h / left_h if left_h > 0 else 2.0
    if slack_h < 0:
        need = 2.0
    return need if deadline > 0 and has > 0 else 0.0


# --------------------------------------------------------------------------------------------- action layouts
class ActionKind(IntEnum):
    """Which decision a learning agent makes: a running job's bid, an idle GPU's power choice, a deferrable job's
    admission. A row's kind follows from its features (:func:`decision_kinds`)."""

    BID = 0
    IDLE = 1
    ADMIT = 2


#: The enum of each kind's actions.
KIND_ENUMS: dict[ActionKind, type[IntEnum]] = {ActionKind.BID: BidAction, ActionKind.IDLE: IdleAction,
                                               ActionKind.ADMIT: Admission}
#: The learners' action layouts (``policy.params.actions``): which kinds they decide, in this order.
LAYOUT_KINDS: dict[str, tuple[ActionKind, ...]] = {
    "bid": (ActionKind.BID,),
    "bid+idle": (ActionKind.BID, ActionKind.IDLE),
    "all": (ActionKind.BID, ActionKind.IDLE, ActionKind.ADMIT),
}
#: Columns added to :data:`FEATURES` by the richer layouts: 1 on a deferrable job's admission row; the jobs held
#: back per GPU, ln(1 + held ÷ GPUs).
EXTRA_FEATURES = ("decision_admit", "deferred_per_gpu")
#: Admission rows have no wallet; they see this ``wallet_rounds`` (two rounds at full power) so that the hand-off
#: to the bid kind lands in the bins of a GPU that can pay.
ADMIT_WALLET_ROUNDS = float(np.log(3.0) / 5.0)


class ActionLayout:
    """The flat action space of a learner: the actions of each kind it decides, one block after another.

    ``"bid"`` (the default) is the eight :class:`BidAction` values, exactly the action space before layouts
    existed; ``"bid+idle"`` appends the three :class:`~dcsim.policy.IdleAction` values (8–10); ``"all"`` also the
    two :class:`~dcsim.policy.Admission` values (11, 12). A row may only take the actions of its own kind
    (:meth:`mask`).

    Args:
        name: A key of :data:`LAYOUT_KINDS`.

    Raises:
        PolicyError: Unknown layout name.
    """

    def __init__(self, name: str):
        if name not in LAYOUT_KINDS:
            raise PolicyError(f"policy parameter actions={name!r}; allowed: {', '.join(LAYOUT_KINDS)}")
        self.name = name
        self.kinds = LAYOUT_KINDS[name]
        self.offset: dict[ActionKind, int] = {}
        start = 0
        for kind in self.kinds:
            self.offset[kind] = start
            start += len(KIND_ENUMS[kind])
        self.n_actions = start
        self.features = FEATURES if name == "bid" else FEATURES + EXTRA_FEATURES
        self._masks = np.zeros((len(ActionKind), self.n_actions), dtype=bool)
        for kind in self.kinds:
            self._masks[kind, self.offset[kind]:self.offset[kind] + len(KIND_ENUMS[kind])] = True

    @property
    def rich(self) -> bool:
        """Whether the layout decides more than bids (its rows carry :data:`EXTRA_FEATURES` and masks)."""
        return self.name != "bid"

    def action_names(self) -> list[str]:
        """``KIND.MEMBER`` for every flat action, in order (e.g. ``BID.FULL``, ``IDLE.SLEEP``, ``ADMIT.DEFER``)."""
        return [f"{kind.name}.{m.name}" for kind in self.kinds for m in KIND_ENUMS[kind]]

    def size(self, kind: ActionKind) -> int:
        return len(KIND_ENUMS[kind])

    def mask(self, kinds: np.ndarray) -> np.ndarray:
        """``(n, n_actions)`` bool: the actions each row of kind ``kinds[i]`` may take."""
        return self._masks[np.asarray(kinds, dtype=np.int64)]

    def describe(self) -> str:
        return f"{self.name!r} ({self.n_actions} actions: {', '.join(self.action_names())})"


def decision_kinds(features: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """The :class:`ActionKind` of each feature row (columns ``names``): ADMIT where ``decision_admit`` is set,
    else BID where the GPU has a job, else IDLE."""
    has = features[:, names.index("has_job")] > 0.5
    kinds = np.where(has, int(ActionKind.BID), int(ActionKind.IDLE))
    if "decision_admit" in names:
        kinds = np.where(features[:, names.index("decision_admit")] > 0.5, int(ActionKind.ADMIT), kinds)
    return kinds.astype(np.int64)


def rich_features(base: np.ndarray, deferred_jobs: int, n_gpus: int, admit: bool = False) -> np.ndarray:
    """:data:`FEATURES` columns ``base`` with :data:`EXTRA_FEATURES` appended."""
    n = base.shape[0]
    extra = np.stack([np.full(n, 1.0 if admit else 0.0), np.full(n, np.log1p(deferred_jobs / max(n_gpus, 1)))],
                     axis=1)
    return np.concatenate([base, extra.astype(np.float32)], axis=1).astype(np.float32)


def admission_features(obs: JobObservation, gpu: GpuSpecView, n_gpus: int, interval_s: float) -> np.ndarray:
    """Feature rows for deferrable jobs awaiting admission, ``(m, len(FEATURES) + len(EXTRA_FEATURES))``.

    Each row is what one GPU of the job would observe if the job started now (has_job, its slack, its full
    duration as remaining work, its value per GPU against the cost at the current price, clock sensitivity 1),
    with a nominal wallet (:data:`ADMIT_WALLET_ROUNDS`) and ``decision_admit`` = 1. Clearing ``decision_admit``
    gives the bid-kind state the job is handed to when it runs.
    """
    m = len(obs)
    market = obs.market
    agent = AgentObservation(
        gpu_ids=np.zeros(m, dtype=np.int64), state=np.zeros(m, dtype=np.int8), has_job=np.ones(m, dtype=bool),
        job_remaining_s=np.asarray(obs.duration_s, dtype=float), job_slack_s=np.asarray(obs.slack_s, dtype=float),
        job_clock_sensitivity=np.ones(m), job_value_tokens=np.asarray(obs.value_tokens, dtype=float),
        job_gpus=np.asarray(obs.gpus, dtype=np.int64), wallet_tokens=np.zeros(m), market=market, gpu=gpu)
    base = observation_features(agent, n_gpus, interval_s)
    base[:, FEATURES.index("wallet_rounds")] = ADMIT_WALLET_ROUNDS
    return rich_features(base, market.deferred_jobs, n_gpus, admit=True)


# --------------------------------------------------------------------------------------------- transitions
@dataclass(frozen=True)
class Transitions:
    """A batch of semi-Markov transitions ``(obs, action, reward, next_obs, Δt)``.

    ``reward`` is what the agent accrued from its decision until its next one, each engine interval
    discounted by ``γ^(elapsed/τ)`` at the interval's start; the learner discounts the continuation by
    ``γ^(dt_s/τ)``. ``terminal`` marks transitions cut by the end of an episode (no continuation).
    """

    obs: np.ndarray  # (B, F) float32
    action: np.ndarray  # (B,) int64
    reward: np.ndarray  # (B,) float64
    next_obs: np.ndarray  # (B, F) float32
    dt_s: np.ndarray  # (B,) float64
    terminal: np.ndarray  # (B,) bool
    agent: np.ndarray  # (B,) int64

    def __len__(self) -> int:
        return int(self.action.size)

    def discount(self, gamma: float, tau_s: float) -> np.ndarray:
        """``γ^(Δt/τ)·(1 − terminal)`` per transition."""
        return np.where(self.terminal, 0.0, gamma ** (self.dt_s / tau_s))


class TransitionBuilder:
    """Assembles each agent's transitions from its decisions and the engine's feedback.

    An agent's transition opens when it decides (:meth:`start`), collects the feedback of every later call
    (:meth:`accrue`, also calls where the agent had nothing to decide, e.g. after its job finished) and closes
    at its next real decision or at the end of the episode (:meth:`close`).
    """

    def __init__(self, n_agents: int, n_features: int, gamma: float, tau_s: float):
        self.gamma, self.tau_s = gamma, tau_s
        self.open = np.zeros(n_agents, dtype=bool)
        self.obs = np.zeros((n_agents, n_features), dtype=np.float32)
        self.action = np.zeros(n_agents, dtype=np.int64)
        self.reward = np.zeros(n_agents)
        self.elapsed_s = np.zeros(n_agents)

    def accrue(self, agents: np.ndarray, reward: np.ndarray, dt_s: np.ndarray) -> None:
        """Add feedback (reward over the last ``dt_s``) to the agents' open transitions."""
        live = self.open[agents]
        if live.any():
            a = agents[live]
            self.reward[a] += self.gamma ** (self.elapsed_s[a] / self.tau_s) * reward[live]
            self.elapsed_s[a] += dt_s[live]

    def close(self, agents: np.ndarray, next_obs: np.ndarray, terminal: bool) -> Transitions | None:
        """Close the open transitions of ``agents`` (rows of ``next_obs``); None when none was open."""
        live = self.open[agents]
        if not live.any():
            return None
        a = agents[live]
        self.open[a] = False
        return Transitions(self.obs[a].copy(), self.action[a].copy(), self.reward[a].copy(),
                           np.asarray(next_obs[live], dtype=np.float32), self.elapsed_s[a].copy(),
                           np.full(a.size, terminal), a.copy())

    def start(self, agents: np.ndarray, obs: np.ndarray, actions: np.ndarray) -> None:
        self.open[agents] = True
        self.obs[agents] = obs
        self.action[agents] = actions
        self.reward[agents] = 0.0
        self.elapsed_s[agents] = 0.0

    # The few-row forms (a job starting: one agent per GPU of the job) take and give Python lists; ``agents`` must be
    # distinct (the numpy forms' fancy-index assignments would apply a repeated agent once). Each does the numpy
    # form's float64 operations in its order, the discount's power by numpy on an array of the same length.
    def accrue_few(self, agents: list[int], reward: list[float], dt_s: list[float]) -> None:
        """:meth:`accrue` for a few distinct agents."""
        is_open = self.open
        live = [i for i, g in enumerate(agents) if is_open.item(g)]
        if not live:
            return
        total, elapsed, tau_s = self.reward, self.elapsed_s, self.tau_s
        discount = (self.gamma ** (np.array([elapsed.item(agents[i]) for i in live]) / tau_s)).tolist()
        for k, i in enumerate(live):
            g = agents[i]
            total[g] = total.item(g) + discount[k] * reward[i]
            elapsed[g] = elapsed.item(g) + dt_s[i]

    def close_few(self, agents: list[int]) -> tuple[list[int], list[int], list[int], list[float], list[float]] | None:
        """:meth:`close` for a few distinct agents: ``(live, agents, actions, rewards, elapsed_s)`` of the open
        transitions (``live``: their positions in ``agents``), or None when none was open. Their observations stay in
        :attr:`obs` until the agents' next :meth:`start_few`."""
        is_open = self.open
        live = [i for i, g in enumerate(agents) if is_open.item(g)]
        if not live:
            return None
        closed = [agents[i] for i in live]
        action, reward, elapsed = self.action, self.reward, self.elapsed_s
        for g in closed:
            is_open[g] = False
        return (live, closed, [action.item(g) for g in closed], [reward.item(g) for g in closed],
                [elapsed.item(g) for g in closed])

    def start_few(self, agents: list[int], obs: np.ndarray, actions: list[int]) -> None:
        """:meth:`start` for a few distinct agents (``obs``: their float32 feature rows)."""
        is_open, store, action, reward, elapsed = self.open, self.obs, self.action, self.reward, self.elapsed_s
        for i, g in enumerate(agents):
            is_open[g] = True
            store[g] = obs[i]
            action[g] = actions[i]
            reward[g] = 0.0
            elapsed[g] = 0.0


class ReplayBuffer:
    """A fixed-capacity ring of transitions in numpy arrays (the DQN's replay; also what a run exports)."""

    FIELDS = ("obs", "action", "reward", "next_obs", "dt_s", "terminal")

    def __init__(self, capacity: int, n_features: int, features: tuple[str, ...] = FEATURES):
        self.capacity = int(capacity)
        #: Names of the observation columns (what :meth:`save` records and :meth:`load` checks).
        self.features = tuple(features)
        self.n_features = n_features
        self.data = {"obs": np.zeros((capacity, n_features), np.float32), "action": np.zeros(capacity, np.int64),
                     "reward": np.zeros(capacity), "next_obs": np.zeros((capacity, n_features), np.float32),
                     "dt_s": np.zeros(capacity), "terminal": np.zeros(capacity, bool)}
        self.size = 0
        self.pos = 0

    def __len__(self) -> int:
        return self.size

    def add(self, tr: Transitions) -> None:
        n = len(tr)
        if n == 0 or self.capacity == 0:
            return
        if n > self.capacity:  # keep the newest
            tr = Transitions(*(getattr(tr, f)[-self.capacity:] for f in (*self.FIELDS, "agent")))
            n = self.capacity
        idx = (self.pos + np.arange(n)) % self.capacity
        for f in self.FIELDS:
            self.data[f][idx] = getattr(tr, f)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def add_few(self, obs: np.ndarray, action: list[int], reward: list[float], next_obs: np.ndarray,
                dt_s: list[float], terminal: bool) -> bool:
        """:meth:`add` of a few transitions given as their float32 rows (``obs``, ``next_obs``) and Python values,
        slot by slot; False (nothing stored) where :meth:`add` must run (more rows than :data:`SMALL_BATCH` or the
        capacity)."""
        n = len(action)
        capacity = self.capacity
        if not 0 < n <= min(SMALL_BATCH, capacity):
            return n == 0 or capacity == 0  # add() stores nothing either
        d = self.data
        o, a, r, o2, dt, term = d["obs"], d["action"], d["reward"], d["next_obs"], d["dt_s"], d["terminal"]
        pos = self.pos
        for i in range(n):
            slot = (pos + i) % capacity
            o[slot] = obs[i]
            a[slot] = action[i]
            r[slot] = reward[i]
            o2[slot] = next_obs[i]
            dt[slot] = dt_s[i]
            term[slot] = terminal
        self.pos = (pos + n) % capacity
        self.size = min(self.size + n, capacity)
        return True

    def sample(self, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
        """``batch`` transitions drawn uniformly with replacement."""
        idx = rng.integers(0, self.size, size=batch)
        return {f: self.data[f][idx] for f in self.FIELDS}

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of the stored transitions, oldest first."""
        order = (self.pos - self.size + np.arange(self.size)) % self.capacity if self.capacity else np.arange(0)
        return {f: self.data[f][order].copy() for f in self.FIELDS}

    def save(self, path) -> None:
        """Write the ring as it stands (slots, write position), so a reload samples exactly as this buffer would."""
        used = self.capacity if self.size == self.capacity else self.size
        np.savez_compressed(path, features=np.array(self.features), pos=np.array(self.pos),
                            capacity=np.array(self.capacity),
                            **{f: self.data[f][:used] for f in self.FIELDS})

    @classmethod
    def load(cls, path, capacity: int | None = None, features: tuple[str, ...] = FEATURES,
             n_actions: int | None = None) -> "ReplayBuffer":
        """Read transitions written by :meth:`save` into a buffer of ``capacity`` (default: the saved one);
        errors name the file and what is wrong. ``features`` are the observation columns expected (the
        learner's action layout decides them); ``n_actions``, if given, bounds the stored actions."""
        from pathlib import Path

        path = Path(path)
        if not path.is_file():
            raise PolicyError(f"{path}: no transitions file (expected a transitions.npz written by `dcsim train`)")
        try:
            with np.load(path) as z:
                data = {f: z[f] for f in cls.FIELDS}
                saved_features = tuple(str(x) for x in z["features"])
                pos, saved_capacity = int(z["pos"]), int(z["capacity"])
        except Exception as exc:  # a truncated or foreign file: numpy and zipfile raise several kinds
            raise PolicyError(f"{path}: not a dcsim transitions file ({exc.__class__.__name__}: {exc}); expected "
                              f"arrays {', '.join(('features', 'pos', 'capacity') + cls.FIELDS)}") from None
        expected = tuple(features)
        features = saved_features
        if features != expected:
            raise PolicyError(f"{path}: features {list(features)} differ from the expected {list(expected)} (a "
                              "transitions file of another action layout: policy.params.actions decides the features)")
        n = data["action"].size
        for f in cls.FIELDS:
            want = (n, len(expected)) if f in ("obs", "next_obs") else (n,)
            if data[f].shape != want:
                raise PolicyError(f"{path}: field {f!r}: got shape {data[f].shape}; expected {want} "
                                  "(one row per transition)")
        if saved_capacity < n or not 0 <= pos < max(saved_capacity, 1):
            raise PolicyError(f"{path}: fields 'capacity'={saved_capacity}, 'pos'={pos} with {n} transitions; "
                              "expected capacity >= transitions and 0 <= pos < capacity")
        capacity = saved_capacity if capacity is None else capacity
        if n_actions is not None and n and not (0 <= data["action"].min() and data["action"].max() < n_actions):
            raise PolicyError(f"{path}: field 'action': values in [{data['action'].min()}, {data['action'].max()}]; "
                              f"expected 0 <= action < {n_actions} (transitions of another action layout)")
        buf = cls(max(capacity, n), len(expected), expected)
        if buf.capacity == saved_capacity:  # the same ring: restore slots and write position exactly
            for f in cls.FIELDS:
                buf.data[f][:n] = data[f]
            buf.size, buf.pos = n, pos % buf.capacity
        else:  # another size: oldest first
            order = (pos - n + np.arange(n)) % n if n == saved_capacity else np.arange(n)
            buf.add(Transitions(*(data[f][order] for f in cls.FIELDS), np.zeros(n, np.int64)))
        return buf
