"""One episode as a sequence of steps, shared by the Gymnasium and PettingZoo envs (no gym or pettingzoo import).

A step is one engine decision (:class:`~dcsim.envs.bridge.Decision`); an admission decision about more
deferrable jobs than the env has slots becomes several steps at the same instant (``dt_s`` = 0 after the first).
Actions arrive as named enums per decider and are turned into what the engine's policy call returns:
:class:`~dcsim.learning.BidAction` → :class:`~dcsim.policy.Bids` (via :func:`dcsim.learning.bids_from_actions`),
:class:`~dcsim.policy.Admission` and :class:`~dcsim.policy.IdleAction` arrays as they are, and (with
``facility.battery``) :class:`~dcsim.envs.facility.DispatchAction` → :class:`~dcsim.policy.BatteryCommand` (via
:func:`dcsim.envs.facility.command_of`), and (with ``facility.cooling.setpoint_control``) a setpoint level's index →
:class:`~dcsim.policy.CoolingCommand` (via :func:`dcsim.envs.facility.setpoint_of`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcsim.config import Scenario, load_scenario
from dcsim.engine import RunResult
from dcsim.envs.bridge import Decision, DecisionKind, EpisodeEnd, SimulationBridge
from dcsim.envs.facility import DispatchAction, command_of, setpoint_of
from dcsim.errors import DcsimError
from dcsim.learning import BidAction, bids_from_actions
from dcsim.policy import Admission, IdleAction
from dcsim.supply import build_supply

#: The enum each decision kind's actions come from.
ACTION_ENUMS = {DecisionKind.BID: BidAction, DecisionKind.ADMIT: Admission, DecisionKind.IDLE: IdleAction,
                DecisionKind.DISPATCH: DispatchAction}


@dataclass
class Step:
    """Where the episode stands: the decision to make now (None once it has ended) and what accrued before it.

    Attributes:
        decision: The paused engine decision, or None at the end.
        first_job: For admission, the first of the waiting jobs this step asks about.
        deciders: ``(k,)`` GPUs (BID, IDLE), job ids (ADMIT) or ``[0]``, the facility agent (DISPATCH, COOLING),
            this step decides for.
        rewards: ``(n_gpus,)`` each GPU agent's reward since the previous step.
        dt_s: Simulated time since the previous step, s.
        time_s: Simulated time now, s.
        result: The finished run (at the end), else None.
    """

    decision: Decision | None
    first_job: int
    deciders: np.ndarray
    rewards: np.ndarray
    dt_s: float
    time_s: float
    result: RunResult | None = None

    @property
    def done(self) -> bool:
        return self.decision is None


def resolve_scenario(scenario: str | Path | Scenario, overrides: list[str] | None = None) -> Scenario:
    """A scenario object from a path (with ``key=value`` overrides) or as given."""
    if isinstance(scenario, Scenario):
        if overrides:
            raise DcsimError("overrides apply to a scenario file; got a Scenario object")
        return scenario
    return load_scenario(scenario, overrides)


class Episodes:
    """Runs episodes of one scenario step by step.

    Args:
        scenario: The scenario (its ``policy:`` is ignored: the env's caller decides).
        admission_slots: Deferrable jobs asked about per step.
        facility_agent: With ``facility.battery``, the battery's dispatch is a step too (DISPATCH), and with
            ``facility.cooling.setpoint_control`` the cooling setpoint (COOLING); False leaves the battery on its
            fixed rule and the setpoint fixed (the env as before the facility agent). Without either: no effect.
    """

    def __init__(self, scenario: Scenario, admission_slots: int, facility_agent: bool = True):
        if not isinstance(admission_slots, int) or admission_slots < 1:
            raise DcsimError(f"admission_slots={admission_slots!r}: allowed: an integer >= 1")
        self.scenario = scenario
        self.n_gpus = scenario.cluster.gpus
        self.slots = admission_slots
        self.supply = build_supply(scenario)  # independent of the seed: built once
        #: Whether the scenario has a dispatchable battery (``facility.battery``): then DISPATCH steps come too.
        self.facility = bool(facility_agent) and scenario.facility.battery is not None
        cooling = scenario.facility.cooling
        control = None if cooling is None else cooling.setpoint_control
        #: Whether the facility agent sets the cooling setpoint (``facility.cooling.setpoint_control``): COOLING steps.
        self.cooling = bool(facility_agent) and control is not None
        #: The setpoint levels a COOLING step's action indexes, °C (empty without setpoint control).
        self.setpoint_levels: tuple[float, ...] = tuple(control.levels_c) if self.cooling else ()
        self._bridge: SimulationBridge | None = None
        self.step: Step | None = None
        self._admit_actions: list[np.ndarray] = []

    def reset(self, seed: int) -> Step:
        """Start an episode with root seed ``seed`` (abandoning any running one) and return its first step."""
        self.close()
        self._bridge = SimulationBridge(self.scenario.model_copy(update={"seed": int(seed)}), self.supply,
                                        dispatch=self.facility, cooling=self.cooling)
        first = self._bridge.start()
        if isinstance(first, EpisodeEnd):
            raise DcsimError(f"scenario {self.scenario.name!r}: the run made no decision before its horizon; "
                             "an env needs at least one (a market round, an arrival or an idle GPU)")
        self.step = self._from(first)
        return self.step

    def act(self, actions: np.ndarray) -> Step:
        """Answer the current step with one enum value per decider (``len(step.deciders)``) and advance."""
        step = self.step
        if step is None or step.done:
            raise DcsimError("the episode has ended: call reset() before step()")
        d = step.decision
        a = np.asarray(actions)
        if d.kind is DecisionKind.COOLING:
            n_choices = len(self.setpoint_levels)
            allowed = [f"{i}={c:g} °C" for i, c in enumerate(self.setpoint_levels)]
            what = "setpoint level"
        else:
            enum = ACTION_ENUMS[d.kind]
            n_choices, allowed, what = len(enum), [f"{m.value}={m.name}" for m in enum], enum.__name__
        out_of_range = a.size and (a.min() < 0 or a.max() >= n_choices)
        if a.shape != step.deciders.shape or a.dtype.kind not in "iu" or out_of_range:
            raise DcsimError(f"{d.kind.value} action {a.tolist()!r}: expected {step.deciders.size} integer "
                             f"{what} values in {allowed}")
        a = a.astype(np.int64)
        if d.kind is DecisionKind.ADMIT:
            self._admit_actions.append(a)
            nxt = step.first_job + self.slots
            if nxt < len(d.observation):  # more jobs wait at this instant: the next chunk is a step of its own
                self.step = Step(d, nxt, d.agents[nxt:nxt + self.slots], np.zeros(self.n_gpus), 0.0, d.time_s)
                return self.step
            answer = np.concatenate(self._admit_actions).astype(np.int8)
            self._admit_actions = []
        elif d.kind is DecisionKind.BID:
            answer = bids_from_actions(a, d.observation)
        elif d.kind is DecisionKind.DISPATCH:
            answer = command_of(int(a[0]), d.observation)
        elif d.kind is DecisionKind.COOLING:
            answer = setpoint_of(int(a[0]), self.setpoint_levels)
        else:
            answer = a.astype(np.int8)
        self.step = self._from(self._bridge.answer(answer))
        return self.step

    def _from(self, item: Decision | EpisodeEnd) -> Step:
        if isinstance(item, EpisodeEnd):
            return Step(None, 0, np.zeros(0, np.int64), item.rewards, item.dt_s, item.time_s, item.result)
        deciders = item.agents[:self.slots] if item.kind is DecisionKind.ADMIT else item.agents
        return Step(item, 0, deciders, item.rewards, item.dt_s, item.time_s)

    def close(self) -> None:
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None
        self._admit_actions = []
