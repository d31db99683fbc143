"""The PettingZoo ParallelEnv: one agent per GPU, an admission agent (and a facility agent with a battery or a cooling
setpoint to decide), each step one engine decision."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from dcsim.config import Scenario
from dcsim.envs.bridge import DecisionKind
from dcsim.envs.episode import Episodes, Step, resolve_scenario
from dcsim.envs.facility import (COOLING_FEATURES, FACILITY_FEATURES, DispatchAction, cooling_features,
                                 facility_features)
from dcsim.envs.features import (FEATURE_BOUND, GPU_FEATURES, JOB_FEATURES, global_feature_names, global_features,
                                 gpu_features, job_features)
from dcsim.errors import DcsimError
from dcsim.learning import BidAction
from dcsim.policy import Admission, IdleAction

ADMISSION_AGENT = "admission"
FACILITY_AGENT = "facility"


class DcsimParallelEnv(ParallelEnv):
    """A dcsim scenario as a PettingZoo ParallelEnv.

    Agents: ``gpu_0`` … ``gpu_{n-1}`` (one per GPU), ``admission`` (the deferrable jobs waiting at an instant)
    and, only with ``facility.battery`` or ``facility.cooling.setpoint_control``, ``facility`` (the battery's
    dispatch and the cooling setpoint at each market round: two steps at the same instant). Every agent
    lives for the whole episode. At each step only some agents decide (those the engine asks at that instant:
    every GPU at a market round, the GPUs of a starting job, the GPUs just idle, the admission agent, or the
    facility agent); ``infos[agent]["deciding"]`` and the ``deciding`` (``decision_dispatch``) observation
    feature say which. The ``actions`` dict needs entries only for deciding agents; an absent or non-deciding
    agent's action is ignored. (The PettingZoo parallel API and its ``parallel_api_test`` require an observation
    for every live agent and never let an agent come back once gone, so non-deciding agents, the facility agent
    between rounds too, are present in the observation dicts, with their current state.)

    A GPU agent observes the global block and its own row of the per-GPU block; it acts with
    ``MultiDiscrete([8, 3])``: a :class:`~dcsim.learning.BidAction` (used at BID decisions) and an
    :class:`~dcsim.policy.IdleAction` (used at IDLE decisions). The admission agent observes the global block and
    the admission slots and acts with an :class:`~dcsim.policy.Admission` per slot. The facility agent observes
    the global block, the battery's block (:data:`~dcsim.envs.facility.FACILITY_FEATURES`, with a battery) and the
    cooling block (:data:`~dcsim.envs.facility.COOLING_FEATURES`, with setpoint control); it acts with
    ``Discrete(7)``, a :class:`~dcsim.envs.facility.DispatchAction`, with a battery alone, else with
    ``MultiDiscrete([7, L])`` (battery and setpoint) or ``MultiDiscrete([L])`` (setpoint alone): the last entry is
    the index of one of the ``L`` setpoint ``levels_c``, used at ``cooling_setpoint`` steps; the first, at
    ``dispatch`` steps.

    Rewards: each GPU agent's reward since the previous step from the engine's reward meter, which mixes its own
    accruals and the cluster's by the scenario's ``reward.team_fraction``; the admission and facility agents
    receive the team reward (the mean over GPU agents). ``infos[agent]["dt_s"]`` is the simulated time since the
    previous step.

    Args:
        scenario: A scenario file (path) or :class:`~dcsim.config.Scenario`.
        overrides: ``key=value`` overrides of the scenario file.
        admission_slots: Deferrable jobs per admission step.
        forecast_hours: Hours ahead of the renewable-forecast features.
        facility_agent: With ``facility.battery``, decide the battery's dispatch too, and with
            ``facility.cooling.setpoint_control`` the setpoint (False: the battery keeps its fixed rule, the setpoint
            stays, and the spaces are those of a scenario without either).
    """

    metadata = {"name": "dcsim_cluster_v0", "render_modes": []}

    def __init__(self, scenario: str | Path | Scenario, overrides: list[str] | None = None, *,
                 admission_slots: int = 8, forecast_hours: tuple[float, ...] = (1.0, 2.0, 3.0),
                 facility_agent: bool = True):
        self.scenario = resolve_scenario(scenario, overrides)
        self.episodes = Episodes(self.scenario, admission_slots, facility_agent)
        self.n_gpus = n = self.scenario.cluster.gpus
        self.slots = admission_slots
        self.forecast_hours = tuple(float(h) for h in forecast_hours)
        self.gpu_agents = [f"gpu_{g}" for g in range(n)]
        self.facility = self.episodes.facility  # the facility agent dispatches the battery
        self.cooling = self.episodes.cooling  # ... and/or sets the cooling setpoint
        has_facility = self.facility or self.cooling
        self.possible_agents = self.gpu_agents + [ADMISSION_AGENT] + ([FACILITY_AGENT] if has_facility else [])
        self.agents: list[str] = []
        self.global_names = global_feature_names(self.forecast_hours)
        g = len(self.global_names)
        self._obs_spaces = {a: spaces.Box(-FEATURE_BOUND, FEATURE_BOUND, (g + len(GPU_FEATURES),), np.float32)
                            for a in self.gpu_agents}
        self._obs_spaces[ADMISSION_AGENT] = spaces.Box(-FEATURE_BOUND, FEATURE_BOUND,
                                                       (g + admission_slots * len(JOB_FEATURES),), np.float32)
        self._act_spaces = {a: spaces.MultiDiscrete([len(BidAction), len(IdleAction)]) for a in self.gpu_agents}
        self._act_spaces[ADMISSION_AGENT] = spaces.MultiDiscrete([len(Admission)] * admission_slots)
        if has_facility:
            width = g + len(FACILITY_FEATURES) * self.facility + len(COOLING_FEATURES) * self.cooling
            self._obs_spaces[FACILITY_AGENT] = spaces.Box(-FEATURE_BOUND, FEATURE_BOUND, (width,), np.float32)
            if not self.cooling:  # a battery alone: one DispatchAction, as before setpoint control
                self._act_spaces[FACILITY_AGENT] = spaces.Discrete(len(DispatchAction))
            else:
                self._act_spaces[FACILITY_AGENT] = spaces.MultiDiscrete(
                    [len(DispatchAction)] * self.facility + [len(self.episodes.setpoint_levels)])
        self._next_seed = self.scenario.seed
        self._full_power_w = None
        self.last_result = None

    @functools.lru_cache(maxsize=None)
    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_spaces[agent]

    @functools.lru_cache(maxsize=None)
    def action_space(self, agent: str) -> spaces.Space:
        return self._act_spaces[agent]

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        episode_seed = self._next_seed if seed is None else int(seed)
        self._next_seed = episode_seed + 1
        self.last_result = None
        step = self.episodes.reset(episode_seed)
        self.agents = list(self.possible_agents)
        return self._observe(step), self._infos(step)

    def step(self, actions: dict[str, Any]):
        step = self.episodes.step
        kind = step.decision.kind
        if kind is DecisionKind.ADMIT:
            chosen = np.asarray(self._action_of(actions, ADMISSION_AGENT)).reshape(-1)[:step.deciders.size]
        elif kind is DecisionKind.DISPATCH:
            chosen = np.asarray(self._action_of(actions, FACILITY_AGENT)).reshape(-1)[:1]
        elif kind is DecisionKind.COOLING:
            chosen = np.asarray(self._action_of(actions, FACILITY_AGENT)).reshape(-1)[-1:]
        else:
            col = 0 if kind is DecisionKind.BID else 1
            chosen = np.array([int(np.asarray(self._action_of(actions, f"gpu_{g}")).reshape(-1)[col])
                               for g in step.deciders.tolist()], dtype=np.int64)
        step = self.episodes.act(chosen.astype(np.int64))
        rewards = {a: float(r) for a, r in zip(self.gpu_agents, step.rewards)}
        rewards[ADMISSION_AGENT] = float(step.rewards.mean())
        if FACILITY_AGENT in self.possible_agents:
            rewards[FACILITY_AGENT] = rewards[ADMISSION_AGENT]
        done = step.done
        terminations = {a: done for a in self.agents}
        truncations = {a: False for a in self.agents}
        infos = self._infos(step)
        if done:
            self.last_result = step.result
            obs = {a: np.zeros(self._obs_spaces[a].shape, np.float32) for a in self.agents}
            self.agents = []
        else:
            obs = self._observe(step)
        return obs, rewards, terminations, truncations, infos

    def close(self) -> None:
        self.episodes.close()

    # ------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _action_of(actions: dict[str, Any], agent: str) -> Any:
        """A deciding agent's action (agents not deciding may be left out of ``actions``)."""
        if agent not in actions:
            raise DcsimError(f"actions: no entry for {agent!r}, which decides at this step (infos[{agent!r}]"
                             "['deciding']); only agents not deciding may be left out")
        return actions[agent]

    def _observe(self, step: Step) -> dict[str, np.ndarray]:
        d = step.decision
        if self._full_power_w is None:
            self._full_power_w = d.cluster.gpu.full_power_w * self.n_gpus
        glob = global_features(d, self.episodes.supply, self.scenario.horizon_s, self.forecast_hours,
                               self._full_power_w)
        per_gpu = gpu_features(d, self.scenario.market.interval_s)
        obs = {a: np.concatenate([glob, per_gpu[g]]) for g, a in enumerate(self.gpu_agents)}
        obs[ADMISSION_AGENT] = np.concatenate([glob, job_features(d, self.slots, self.n_gpus, step.first_job).ravel()])
        if FACILITY_AGENT in self.possible_agents:
            parts = [glob]
            if self.facility:
                parts.append(facility_features(d.facility, d.kind is DecisionKind.DISPATCH, self._full_power_w))
            if self.cooling:
                parts.append(cooling_features(d.cooling, d.kind is DecisionKind.COOLING, self._full_power_w))
            obs[FACILITY_AGENT] = np.concatenate(parts)
        return obs

    def _infos(self, step: Step) -> dict[str, dict[str, Any]]:
        deciding = set()
        if not step.done:
            if step.decision.kind is DecisionKind.ADMIT:
                deciding = {ADMISSION_AGENT}
            elif step.decision.kind in (DecisionKind.DISPATCH, DecisionKind.COOLING):
                deciding = {FACILITY_AGENT}
            else:
                deciding = {f"gpu_{g}" for g in step.deciders.tolist()}
        kind = None if step.done else step.decision.kind.value
        return {a: {"dt_s": step.dt_s, "time_s": step.time_s, "decision": kind, "deciding": a in deciding}
                for a in self.possible_agents}
