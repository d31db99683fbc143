"""Pauses a simulation at each policy call and resumes it with an action: the engine in a worker thread (no gym).

The engine calls its policy synchronously from inside SimPy callbacks (``docs/engine.md``); an environment needs
the opposite: return control to the caller at a decision and continue when it brings an action. The
:class:`SimulationBridge` runs :meth:`dcsim.engine.Simulation.run` in a worker thread whose policy, a
:class:`BridgePolicy`, hands each decision to the caller and blocks until the caller answers. The hand-off is a
baton of two locks (each side releases the other's and waits on its own; the item handed over lies in one slot),
one lock operation per side and step instead of a queue's condition variables. Exactly one of the two threads
runs at any time (strict alternation), so a run is as deterministic as a plain one: the same seed and the same
actions give the same decisions and the same results.

At every decision the bridge also reads every agent's reward since the previous decision off the engine's
reward meter (:class:`dcsim.reward_meter.RewardMeter`), so the rewards handed out over an episode sum to the
scenario's reward of the whole run (:func:`dcsim.learning.episode_reward`).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from dcsim.config import Scenario
from dcsim.engine import RunResult, Simulation
from dcsim.errors import DcsimError
from dcsim.learning import Feedback
from dcsim.policy import (AgentObservation, BatteryCommand, CoolingCommand, CoolingObservation, FacilityObservation,
                          GpuSpecView, JobObservation, Policy)
from dcsim.seeding import Streams
from dcsim.supply import SupplyInputs, build_supply
from dcsim.workload import build_jobs


class DecisionKind(str, Enum):
    """Which of the engine's decisions a step is (the policy method the engine called)."""

    BID = "bid"  # GPU agents bid for the coming round (or for a job starting between rounds)
    ADMIT = "admit"  # deferrable jobs wait for run / defer
    IDLE = "on_idle"  # idle GPUs with nothing queued: stay idle / sleep / power off
    DISPATCH = "dispatch"  # the facility agent commands the battery (each market round; only with facility.battery)
    COOLING = "cooling_setpoint"  # the facility agent sets the supply air (each round; with its setpoint_control)


@dataclass(frozen=True)
class Decision:
    """One policy call of the engine, paused until it gets its answer.

    Attributes:
        kind: The decision.
        time_s: Simulated time of the decision, s.
        agents: ``(n,)`` the GPUs deciding (BID, IDLE), the job ids awaiting admission (ADMIT), or ``[0]``, the
            one facility agent (DISPATCH).
        observation: The engine's observation of the deciders (a :class:`~dcsim.policy.FacilityObservation` for
            DISPATCH).
        cluster: The observation of every GPU at the decision (for per-GPU features).
        rewards: ``(n_gpus,)`` each GPU agent's reward since the previous decision (the scenario's ``reward:``
            with its ``team_fraction`` mix), from the engine's reward meter.
        dt_s: Simulated time since the previous decision (since t = 0 for the first), s.
        facility: With ``facility.battery`` and a bridge that dispatches, the facility agent's observation now (at
            every decision, for the facility features), else None.
        cooling: With ``facility.cooling.setpoint_control`` and a bridge that sets it, the facility agent's cooling
            observation now (at every decision), else None.
    """

    kind: DecisionKind
    time_s: float
    agents: np.ndarray
    observation: AgentObservation | JobObservation | FacilityObservation
    cluster: AgentObservation
    rewards: np.ndarray
    dt_s: float
    facility: FacilityObservation | None = None
    cooling: CoolingObservation | None = None


@dataclass(frozen=True)
class EpisodeEnd:
    """The run reached its horizon: the rewards since the last decision and the whole run's result."""

    time_s: float
    rewards: np.ndarray
    dt_s: float
    result: RunResult


class _Stop(BaseException):
    """Raised inside the worker's policy call to unwind an abandoned run (BaseException: nothing catches it)."""


_STOP = object()
_FACILITY_AGENT = np.zeros(1, dtype=np.int64)


class BridgePolicy(Policy):
    """The worker thread's policy: forwards each engine call to the bridge and returns the caller's answer."""

    name = "env"
    wants_feedback = True

    def __init__(self, bridge: "SimulationBridge"):
        super().__init__()
        self._bridge = bridge

    def reset(self, rng: np.random.Generator, gpu: GpuSpecView, n_gpus: int) -> None:
        self.rng, self.gpu, self.n_gpus = rng, gpu, n_gpus

    def bid(self, obs: AgentObservation):
        return self._bridge._decide(DecisionKind.BID, obs.gpu_ids, obs)

    def admit(self, obs: JobObservation) -> np.ndarray:
        return self._bridge._decide(DecisionKind.ADMIT, obs.job_ids, obs)

    def on_idle(self, obs: AgentObservation) -> np.ndarray:
        return self._bridge._decide(DecisionKind.IDLE, obs.gpu_ids, obs)

    def end_episode(self, obs: AgentObservation) -> None:
        self._bridge._absorb(obs.feedback)


class DispatchingBridgePolicy(BridgePolicy):
    """A :class:`BridgePolicy` that also forwards the battery's dispatch (the engine asks it only with
    ``facility.battery``; a plain :class:`BridgePolicy` leaves the battery on its fixed rule)."""

    def dispatch(self, obs: FacilityObservation) -> BatteryCommand:
        return self._bridge._decide(DecisionKind.DISPATCH, _FACILITY_AGENT, obs)


class _Cooling:
    """Mixin: forwards the cooling setpoint too (the engine asks it only with ``facility.cooling.setpoint_control``)."""

    def cooling_setpoint(self, obs: CoolingObservation) -> CoolingCommand:
        return self._bridge._decide(DecisionKind.COOLING, _FACILITY_AGENT, obs)


class CoolingBridgePolicy(_Cooling, BridgePolicy):
    """A :class:`BridgePolicy` that forwards the cooling setpoint (the battery, if any, on its fixed rule)."""


class DispatchingCoolingBridgePolicy(_Cooling, DispatchingBridgePolicy):
    """A :class:`DispatchingBridgePolicy` that forwards the cooling setpoint too."""


def _bridge_policy(dispatch: bool, cooling: bool) -> type[BridgePolicy]:
    return {(False, False): BridgePolicy, (True, False): DispatchingBridgePolicy,
            (False, True): CoolingBridgePolicy, (True, True): DispatchingCoolingBridgePolicy}[(dispatch, cooling)]


class SimulationBridge:
    """One episode of a scenario, run in a worker thread that pauses at every policy call.

    Usage: :meth:`start` returns the first :class:`Decision` (or :class:`EpisodeEnd`); :meth:`answer` with the
    policy method's return value (a :class:`~dcsim.policy.Bids` for BID, an action array for ADMIT and IDLE, a
    :class:`~dcsim.policy.BatteryCommand` for DISPATCH, a :class:`~dcsim.policy.CoolingCommand` for COOLING)
    returns the next. :meth:`close` abandons a run that has not ended.

    Args:
        scenario: The scenario, with the episode's seed.
        supply: Supply series already built for this scenario (reused across episodes), or None.
        dispatch: Pause at the battery's dispatch too (DISPATCH decisions; with ``facility.battery`` only), instead
            of leaving the battery on its fixed rule.
        cooling: Pause at the cooling setpoint too (COOLING decisions; with ``facility.cooling.setpoint_control``
            only), instead of keeping the configured setpoint.
    """

    def __init__(self, scenario: Scenario, supply: SupplyInputs | None = None, *, dispatch: bool = False,
                 cooling: bool = False):
        self.scenario = scenario
        self.dispatch = dispatch
        self.cooling = cooling
        self._supply = supply
        # the baton: the worker waits on _sim_turn, the caller on _caller_turn; each side releases the other's
        self._sim_turn = threading.Lock()
        self._sim_turn.acquire()
        self._caller_turn = threading.Lock()
        self._caller_turn.acquire()
        self._slot: Any = None  # what the side that last released the baton handed over
        self._thread: threading.Thread | None = None
        self.sim: Simulation | None = None
        self._pending = np.zeros(scenario.cluster.gpus)
        self._last_s = 0.0
        self._stopping = False
        self.finished = False

    # ------------------------------------------------------------------------------------ caller side
    def start(self) -> Decision | EpisodeEnd:
        """Build the run (jobs, supply, engine) and run it up to its first decision."""
        streams = Streams(self.scenario.seed)
        jobs = build_jobs(self.scenario, streams)
        supply = self._supply if self._supply is not None else build_supply(self.scenario)
        self.supply = supply
        self.sim = Simulation(self.scenario, _bridge_policy(self.dispatch, self.cooling)(self), jobs, supply, streams)
        self._thread = threading.Thread(target=self._work, name="dcsim-env-simulation", daemon=True)
        self._thread.start()
        return self._receive()

    def answer(self, action: Any) -> Decision | EpisodeEnd:
        """Resume the paused run with ``action`` and run it to its next decision or its end."""
        if self.finished or self._thread is None:
            raise DcsimError("the episode has ended: call reset() before step()")
        self._hand_to_sim(action)
        return self._receive()

    def close(self) -> None:
        """Abandon the run (if it is paused at a decision) and wait for its thread to end."""
        thread = self._thread
        if thread is not None and thread.is_alive() and not self.finished:
            self._hand_to_sim(_STOP)
            thread.join()
        self._thread = None
        self.finished = True

    def _hand_to_sim(self, item: Any) -> None:
        self._slot = item
        self._sim_turn.release()

    def _receive(self) -> Decision | EpisodeEnd:
        self._caller_turn.acquire()
        item, self._slot = self._slot, None
        if isinstance(item, BaseException):
            self.finished = True
            self._thread.join()
            raise item
        if isinstance(item, EpisodeEnd):
            self.finished = True
            self._thread.join()
        return item

    # ------------------------------------------------------------------------------------ worker side
    def _work(self) -> None:
        try:
            result = self.sim.run()
        except _Stop:
            return
        except BaseException as exc:  # a bad action or a model error: re-raised in the caller's thread
            self._hand_to_caller(exc)
            return
        now = self.sim.env.now
        rewards, self._pending = self._pending, np.zeros_like(self._pending)
        self._hand_to_caller(EpisodeEnd(now, rewards, now - self._last_s, result))

    def _hand_to_caller(self, item: Any) -> None:
        self._slot = item
        self._caller_turn.release()

    def _absorb(self, feedback: Feedback | None) -> None:
        if feedback is not None and feedback.reward.size:
            np.add.at(self._pending, self._fb_agents, feedback.reward)

    def _decide(self, kind: DecisionKind, agents: np.ndarray,
                obs: AgentObservation | JobObservation | FacilityObservation) -> Any:
        if self._stopping:  # SimPy turns the first _Stop into a failed process event that surfaces only when
            raise _Stop()   # it is processed; same-instant events before it may call the policy again
        sim = self.sim
        now = sim.env.now
        if kind is DecisionKind.BID or kind is DecisionKind.IDLE:  # the deciders' feedback came with their observation
            self._fb_agents = agents
            self._absorb(obs.feedback)
        everyone = np.arange(sim.n_gpus)
        cluster = sim.decisions.agent_obs(everyone)  # every other agent's reward up to now, read off the meter
        self._fb_agents = everyone
        self._absorb(cluster.feedback)
        rewards, self._pending = self._pending, np.zeros_like(self._pending)
        facility = None
        if self.dispatch and sim.meter.battery is not None:
            facility = obs if kind is DecisionKind.DISPATCH else sim.decisions.facility_obs()
        cooling = None
        if self.cooling and sim._setpoint:
            cooling = obs if kind is DecisionKind.COOLING else sim.decisions.cooling_obs()
        decision = Decision(kind, now, np.asarray(agents), obs, cluster, rewards, now - self._last_s, facility,
                            cooling)
        self._last_s = now
        self._hand_to_caller(decision)
        self._sim_turn.acquire()  # the caller's answer (or _STOP) is in the slot
        action, self._slot = self._slot, None
        if action is _STOP:
            self._stopping = True
            raise _Stop()
        return action
