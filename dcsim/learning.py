"""Rewards and transitions for learning policies (torch-free).

The engine meters, per GPU agent, what it accrued between two of its decisions (tokens earned and spent,
energy, carbon, job latency, deadline misses, a share of dropped jobs) and hands the weighted sum to the
policy with the time elapsed, as :class:`Feedback` on the observation. :class:`TransitionBuilder` turns the
stream of feedback into semi-Markov transitions ``(obs, action, reward, next_obs, Δt)`` for the learners.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcsim.config import RewardConfig

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


def episode_totals(jobs, energy: dict[str, float], tokens: dict[str, float]) -> dict[str, float]:
    """The cluster's totals of :data:`REWARD_COMPONENTS` over a whole run, from its tables.

    This is what the engine's per-agent feedback sums to over all agents and decisions (value credited on
    completion, tokens paid, energy drawn, grid carbon, sojourn of completed jobs, late completions, drops),
    so any policy, learning or not, can be scored on the same reward.
    """
    status = jobs["status"].astype(str)
    done = (status == "completed").to_numpy()
    finish = jobs["finish_s"].to_numpy(float)
    deadline = jobs["deadline_s"].to_numpy(float)
    late = done & np.isfinite(deadline) & (finish > deadline)
    return {
        "value_tokens": float(jobs.loc[done, "value_tokens"].sum()),
        "spent_tokens": float(tokens["spent"]),
        "energy_kwh": float(energy["consumed_j"]) / 3.6e6,
        "carbon_kg": float(energy["carbon_g"]) / 1000.0,
        "latency_s": float((finish[done] - jobs["arrival_s"].to_numpy(float)[done]).sum()),
        "deadline_misses": float(late.sum()),
        "dropped_jobs": float((status == "dropped").sum()),
    }


def episode_reward(totals: dict[str, float], cfg: RewardConfig) -> float:
    """The weighted reward of a run's totals (see :func:`episode_totals`)."""
    return float(reward_weights(cfg) @ np.array([totals[k] for k in REWARD_COMPONENTS]))
