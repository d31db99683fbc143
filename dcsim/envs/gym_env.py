"""The Gymnasium env: one controller decides for the whole cluster at every engine decision (semi-Markov)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dcsim.config import Scenario
from dcsim.envs.bridge import DecisionKind
from dcsim.envs.episode import Episodes, Step, resolve_scenario
from dcsim.envs.facility import (COOLING_FEATURES, FACILITY_FEATURES, DispatchAction, cooling_features,
                                 facility_features)
from dcsim.envs.features import (FEATURE_BOUND, GPU_FEATURES, JOB_FEATURES, clip_in_place, global_feature_names,
                                 global_features, global_values, gpu_features, gpu_values_into, job_features,
                                 job_values)
from dcsim.errors import DcsimError
from dcsim.learning import BidAction
from dcsim.policy import Admission, IdleAction

ACTION_LAYOUTS = ("per_agent", "shared")
_N_BID, _N_IDLE, _N_ADMIT, _N_DISPATCH = len(BidAction), len(IdleAction), len(Admission), len(DispatchAction)
_N_SHARED = _N_BID * _N_IDLE * _N_ADMIT  # the shared layout without a battery


class DcsimEnv(gym.Env):
    """A dcsim scenario as a Gymnasium env: each step is one engine decision (a market round's bids, a job
    starting between rounds, deferrable jobs waiting for admission, idle GPUs, and with ``facility.battery`` the
    facility agent's battery dispatch and, with ``facility.cooling.setpoint_control``, its cooling setpoint at each
    market round).

    Observation: a flat ``float32`` Box, the concatenation of the global block, the per-GPU block (row-major,
    ``n_gpus × len(GPU_FEATURES)``), the admission block (``admission_slots × len(JOB_FEATURES)``) and, only with
    ``facility.battery``, the facility block (``FACILITY_FEATURES``, names ``facility.<name>``) and, only with
    ``facility.cooling.setpoint_control``, the cooling block (``COOLING_FEATURES``, names ``cooling.<name>``); the
    column names are :attr:`observation_names` (see :mod:`dcsim.envs.features` and :mod:`dcsim.envs.facility`).

    Action (``action_layout``):

    - ``"per_agent"``: ``MultiDiscrete`` of a :class:`~dcsim.learning.BidAction` (8) per GPU, then an
      :class:`~dcsim.policy.IdleAction` (3) per GPU, then an :class:`~dcsim.policy.Admission` (2) per slot, then
      (only with ``facility.battery``) one :class:`~dcsim.envs.facility.DispatchAction` (7), then (only with
      ``facility.cooling.setpoint_control``) one setpoint level (an index into its ``levels_c``). A step reads only
      the part of its decision (``decision_*`` in the observation, ``facility.decision_dispatch`` for dispatch,
      ``cooling.decision_setpoint`` for the setpoint), and of it only the rows deciding (``deciding`` per GPU,
      ``present`` per slot); the rest is ignored.
    - ``"shared"``: ``Discrete(48)``, one choice for every decider: ``a = 6·bid + 2·idle + admit`` (for learners
      that need a discrete action, such as DQN); with ``facility.battery`` ``Discrete(336)``,
      ``a = 48·dispatch + 6·bid + 2·idle + admit`` (so ``a < 48`` means the same as without a battery, and HOLD);
      with ``L`` setpoint levels the size is multiplied by ``L`` and ``a = 48·D·level + ...`` (``D`` = 7 with a
      battery, else 1).

    The power cap of a running job is its bid (:class:`~dcsim.learning.BidAction`): FULL, HALF (half the range
    above idle) and MIN_CAP (the board's minimum cap) at any price; PAUSE stops it; FULL_IF_CHEAP takes full
    power only at a price up to ``cheap_multiple`` × p0 (1.1); FLOOR_THEN_VALUE and FLOOR_THEN_LIMIT bid the
    minimum cap at any price plus the rest up to full power at the job's value per kWh or at
    ``block_limit_multiple`` × p0 (2); PACE runs at the lowest power that still meets the deadline.
    The battery's command (:class:`~dcsim.envs.facility.DispatchAction`) is HOLD, or CHARGE / DISCHARGE at 25,
    50 or 100 % of its power limit until the next round.

    Reward: the scenario's ``reward:`` summed over all GPU agents, accrued since the previous step (read off the
    engine's reward meter); over an episode it sums to the run's reward (``summary.json`` ``reward.total``).
    ``info["dt_s"]`` is the simulated time since the previous step (0 for further steps at the same instant), so
    a learner can discount by ``γ^dt``. The episode terminates at the scenario's horizon.

    Seeding: ``reset(seed=s)`` runs the scenario with root seed ``s``; ``reset()`` without a seed runs the next
    seed after the previous episode's (the scenario's own ``seed`` first), so a sequence of episodes is
    reproducible from its first seed.

    Args:
        scenario: A scenario file (path) or :class:`~dcsim.config.Scenario`.
        overrides: ``key=value`` overrides of the scenario file (as ``--set`` on the command line).
        admission_slots: Deferrable jobs per admission step.
        forecast_hours: Hours ahead of the renewable-forecast features.
        facility_agent: With ``facility.battery``, decide the battery's dispatch too, and with
            ``facility.cooling.setpoint_control`` the cooling setpoint (False: the battery keeps its fixed rule, the
            setpoint stays, and the spaces are those of a scenario without either).
        action_layout: ``"per_agent"`` or ``"shared"``.
    """

    metadata = {"render_modes": []}

    def __init__(self, scenario: str | Path | Scenario, overrides: list[str] | None = None, *,
                 admission_slots: int = 8, forecast_hours: tuple[float, ...] = (1.0, 2.0, 3.0),
                 action_layout: str = "per_agent", facility_agent: bool = True):
        if action_layout not in ACTION_LAYOUTS:
            raise DcsimError(f"action_layout={action_layout!r}: allowed: {', '.join(ACTION_LAYOUTS)}")
        self.scenario = resolve_scenario(scenario, overrides)
        self.episodes = Episodes(self.scenario, admission_slots, facility_agent)
        self.n_gpus = n = self.scenario.cluster.gpus
        self.slots = admission_slots
        self.forecast_hours = tuple(float(h) for h in forecast_hours)
        self.action_layout = action_layout
        self.facility = facility = self.episodes.facility
        self.cooling = cooling = self.episodes.cooling
        self._n_levels = n_levels = len(self.episodes.setpoint_levels)
        self.observation_names = (list(global_feature_names(self.forecast_hours))
                                  + [f"gpu{g}.{f}" for g in range(n) for f in GPU_FEATURES]
                                  + [f"slot{s}.{f}" for s in range(admission_slots) for f in JOB_FEATURES]
                                  + ([f"facility.{f}" for f in FACILITY_FEATURES] if facility else [])
                                  + ([f"cooling.{f}" for f in COOLING_FEATURES] if cooling else []))
        self.observation_space = spaces.Box(-FEATURE_BOUND, FEATURE_BOUND, (len(self.observation_names),), np.float32)
        self._n_dispatch = _N_DISPATCH if facility else 1
        g = len(global_feature_names(self.forecast_hours))  # where the blocks of the flat observation end
        j = g + n * len(GPU_FEATURES) + admission_slots * len(JOB_FEATURES)
        self._blocks = (g, g + n * len(GPU_FEATURES), j, j + (len(FACILITY_FEATURES) if facility else 0))
        if action_layout == "per_agent":
            self.action_space = spaces.MultiDiscrete([_N_BID] * n + [_N_IDLE] * n + [_N_ADMIT] * admission_slots
                                                     + ([_N_DISPATCH] if facility else [])
                                                     + ([n_levels] if cooling else []))
        else:
            self.action_space = spaces.Discrete(_N_SHARED * self._n_dispatch * (n_levels if cooling else 1))
        self._next_seed = self.scenario.seed
        self._full_power_w = None
        self.last_result = None
        self.episode_seeds: list[int] = []  # the root seed of every episode started, in order

    # ------------------------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        episode_seed = self._next_seed if seed is None else int(seed)
        self._next_seed = episode_seed + 1
        self.last_result = None
        step = self.episodes.reset(episode_seed)
        self.episode_seeds.append(episode_seed)
        return self._observe(step), self._info(step)

    def step(self, action):
        step = self.episodes.step
        if step is None or step.done:
            raise DcsimError("the episode has ended: call reset() before step()")
        step = self.episodes.act(self._decider_actions(step, action))
        reward = float(step.rewards.sum())
        if step.done:
            self.last_result = step.result
            return np.zeros(self.observation_space.shape, np.float32), reward, True, False, self._info(step)
        return self._observe(step), reward, False, False, self._info(step)

    def close(self) -> None:
        self.episodes.close()

    # ------------------------------------------------------------------------------------ helpers
    def _decider_actions(self, step: Step, action) -> np.ndarray:
        kind = step.decision.kind
        n, k = self.n_gpus, step.deciders.size
        if self.action_layout == "shared":
            a = int(np.asarray(action).reshape(()))
            if not 0 <= a < self.action_space.n:
                raise DcsimError(f"action {a!r}: allowed: an integer in [0, {self.action_space.n})")
            value = {DecisionKind.BID: (a % _N_SHARED) // (_N_IDLE * _N_ADMIT),
                     DecisionKind.IDLE: (a // _N_ADMIT) % _N_IDLE, DecisionKind.ADMIT: a % _N_ADMIT,
                     DecisionKind.DISPATCH: (a // _N_SHARED) % self._n_dispatch,
                     DecisionKind.COOLING: a // (_N_SHARED * self._n_dispatch)}[kind]
            return np.full(k, value, dtype=np.int64)
        a = np.asarray(action)
        if a.shape != self.action_space.shape:
            raise DcsimError(f"action of shape {a.shape}: expected {self.action_space.shape} (a BidAction per GPU, "
                             "an IdleAction per GPU, an Admission per slot"
                             + (", a DispatchAction" if self.facility else "")
                             + (", a setpoint level" if self.cooling else "") + ")")
        facility_at = 2 * n + self.slots
        if kind is DecisionKind.DISPATCH:
            return a[facility_at:facility_at + 1]
        if kind is DecisionKind.COOLING:
            return a[-1:]
        if kind is DecisionKind.BID:
            return a[:n][step.deciders]
        if kind is DecisionKind.IDLE:
            return a[n:2 * n][step.deciders]
        return a[2 * n:2 * n + k]

    def _observe(self, step: Step) -> np.ndarray:
        """The flat observation of ``step``: each block written into one new float32 array, then clipped once
        (the values :meth:`_observe_by_blocks` gives, with fewer intermediate arrays)."""
        d = step.decision
        if self._full_power_w is None:
            self._full_power_w = d.cluster.gpu.full_power_w * self.n_gpus
        g, c, j, f = self._blocks
        out = np.empty(self.observation_space.shape, np.float32)
        out[:g] = global_values(d.kind, d.cluster.market, d.cluster.gpu_ids.size, self.episodes.supply,
                                self.scenario.horizon_s, self.forecast_hours, self._full_power_w)
        deciding = np.zeros(self.n_gpus)
        if d.kind is DecisionKind.BID or d.kind is DecisionKind.IDLE:
            deciding[d.agents] = 1.0
        gpu_values_into(out[g:c].reshape(self.n_gpus, len(GPU_FEATURES)), d.cluster, self.n_gpus,
                        self.scenario.market.interval_s, deciding)
        if d.kind is DecisionKind.ADMIT:
            out[c:j] = job_values(d.observation, self.slots, self.n_gpus, step.first_job).ravel()
        else:
            out[c:j] = 0.0
        if self.facility:
            out[j:f] = facility_features(d.facility, d.kind is DecisionKind.DISPATCH, self._full_power_w)
        if self.cooling:
            out[f:] = cooling_features(d.cooling, d.kind is DecisionKind.COOLING, self._full_power_w)
        return clip_in_place(out)

    def _observe_by_blocks(self, step: Step) -> np.ndarray:
        """:meth:`_observe` from the block functions of :mod:`dcsim.envs.features` (the reference it is tested
        against)."""
        d = step.decision
        parts = [global_features(d, self.episodes.supply, self.scenario.horizon_s, self.forecast_hours,
                                 self._full_power_w),
                 gpu_features(d, self.scenario.market.interval_s).ravel(),
                 job_features(d, self.slots, self.n_gpus, step.first_job).ravel()]
        if self.facility:
            parts.append(facility_features(d.facility, d.kind is DecisionKind.DISPATCH, self._full_power_w))
        if self.cooling:
            parts.append(cooling_features(d.cooling, d.kind is DecisionKind.COOLING, self._full_power_w))
        return np.concatenate(parts).astype(np.float32)

    @staticmethod
    def _info(step: Step) -> dict[str, Any]:
        return {"dt_s": step.dt_s, "time_s": step.time_s,
                "decision": None if step.done else step.decision.kind.value, "deciders": int(step.deciders.size)}
