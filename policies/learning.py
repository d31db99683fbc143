"""The shared machinery of learning bidders: features, ε-greedy decisions, transitions, checkpoints.

A learning agent decides when its GPU runs a job: at every market round and when its job starts it picks
one of :class:`~dcsim.learning.BidAction`. Agents without a running job have nothing to decide; the reward
they accrue meanwhile (a job's value arrives when it completes) goes to their open transition, which
closes at their next real decision. Subclasses provide :meth:`LearningPolicy.choose` (greedy actions),
:meth:`LearningPolicy.learn` (use a batch of transitions) and checkpoints.
"""
from __future__ import annotations

import json
from abc import ABCMeta, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from dcsim.atomic import write_text_atomic
from dcsim.errors import PolicyError
from dcsim.learning import (
    FEATURES,
    BidAction,
    ReplayBuffer,
    TransitionBuilder,
    Transitions,
    bids_from_actions,
    observation_features,
)
from dcsim.policy import AgentObservation, Bids, GpuSpecView, GpuState, Policy
from policies.qtable import EpsilonSchedule

#: Reference market round for feature scaling, s (features must not depend on the scenario's settings).
REFERENCE_ROUND_S = 300.0
N_ACTIONS = len(BidAction)


class LearningPolicy(Policy, metaclass=ABCMeta):
    """Base of :class:`~policies.qlearning.QLearning` and :class:`~policies.dqn.DQN`.

    Args:
        gamma: Discount per ``tau_s`` of simulated time (the continuation after Δt is discounted by γ^(Δt/τ)).
        tau_s: Time unit of the discount, s.
        epsilon_start, epsilon_end, epsilon_decay_decisions, epsilon_kind: ε-greedy schedule over the
            decisions made so far (all agents, all episodes).
        learn: False freezes the policy: greedy actions (ε = 0), no updates (evaluation).
        cheap_multiple: The price limit of ``FULL_IF_CHEAP``, in units of p0.
        block_limit_multiple: ``FLOOR_THEN_LIMIT``'s limit on the block above the minimum cap, in units of p0.
        pace_safety: ``PACE`` plans to finish by now + (deadline − now) / pace_safety (>= 1).
        checkpoint: Start from this checkpoint (a file written by ``dcsim train``).
        keep_transitions: How many of the latest transitions to keep for export (``transitions.npz``).
    """

    name = "learning"
    wants_feedback = True

    def __init__(self, gamma: float = 0.99, tau_s: float = 3600.0, epsilon_start: float = 1.0,
                 epsilon_end: float = 0.05, epsilon_decay_decisions: float = 20_000.0, epsilon_kind: str = "exponential",
                 learn: bool = True, cheap_multiple: float = 1.1, checkpoint: str | None = None,
                 keep_transitions: int = 0, block_limit_multiple: float = 2.0, pace_safety: float = 1.25):
        super().__init__()
        if not 0.0 < gamma <= 1.0:
            raise PolicyError(f"policy {self.name!r}: gamma={gamma!r}; allowed: 0 < gamma <= 1")
        if tau_s <= 0:
            raise PolicyError(f"policy {self.name!r}: tau_s={tau_s!r}; allowed: > 0 seconds")
        if epsilon_kind not in ("exponential", "linear"):
            raise PolicyError(f"policy {self.name!r}: epsilon_kind={epsilon_kind!r}; allowed: exponential, linear")
        self.gamma, self.tau_s = float(gamma), float(tau_s)
        self.schedule = EpsilonSchedule(epsilon_start, epsilon_end, epsilon_decay_decisions, epsilon_kind)
        self.learning = bool(learn)
        self.cheap_multiple = float(cheap_multiple)
        if not block_limit_multiple > 0:
            raise PolicyError(f"policy {self.name!r}: block_limit_multiple={block_limit_multiple!r}; allowed: > 0")
        if not pace_safety >= 1:
            raise PolicyError(f"policy {self.name!r}: pace_safety={pace_safety!r}; allowed: >= 1")
        self.block_limit_multiple, self.pace_safety = float(block_limit_multiple), float(pace_safety)
        self.checkpoint = checkpoint
        self.keep_transitions = int(keep_transitions)
        self.decisions = 0
        self.updates = 0
        self.n_gpus = 0
        self.recorded: ReplayBuffer | None = None
        self._loaded = False

    # ---------------------------------------------------------------------------- engine callbacks
    def reset(self, rng: np.random.Generator, gpu: GpuSpecView, n_gpus: int) -> None:
        """Start an episode. Learnt state persists across episodes (the trainer reuses the policy)."""
        super().reset(rng, gpu, n_gpus)
        if not self._loaded:
            self.n_gpus = n_gpus
            self.build(n_gpus)
            if self.checkpoint is not None:
                self.load_checkpoint(Path(self.checkpoint))
            self._loaded = True
        elif n_gpus != self.n_gpus and self.per_agent:
            raise PolicyError(f"policy {self.name!r} keeps per-agent state for {self.n_gpus} GPUs; "
                              f"this scenario has {n_gpus}")
        self.builder = TransitionBuilder(n_gpus, len(FEATURES), self.gamma, self.tau_s)
        if self.keep_transitions and self.recorded is None:
            self.recorded = ReplayBuffer(self.keep_transitions, len(FEATURES))

    def bid(self, obs: AgentObservation) -> Bids:
        feats = observation_features(obs, self.n_gpus, REFERENCE_ROUND_S)
        ids = obs.gpu_ids
        fb = obs.feedback
        self.builder.accrue(ids, fb.reward, fb.dt_s)
        deciding = obs.has_job & (obs.state == GpuState.ACTIVE)
        actions = np.full(len(obs), int(BidAction.FULL), dtype=np.int64)  # no job: the bid is ignored
        if deciding.any():
            agents, x = ids[deciding], feats[deciding]
            self._consume(self.builder.close(agents, x, terminal=False))
            chosen = self.choose(x, agents)
            if self.learning:
                eps = float(self.schedule.value(self.decisions))
                explore = self.rng.random(agents.size) < eps
                if explore.any():
                    chosen = chosen.copy()
                    chosen[explore] = self.rng.integers(0, N_ACTIONS, size=int(explore.sum()))
            actions[deciding] = chosen
            self.builder.start(agents, x, chosen)
            self.decisions += int(agents.size)
        return bids_from_actions(actions, obs, self.cheap_multiple, self.block_limit_multiple, self.pace_safety)

    def end_episode(self, obs: AgentObservation) -> None:
        """Close every open transition at the horizon (terminal: the episode ends there)."""
        fb = obs.feedback
        self.builder.accrue(obs.gpu_ids, fb.reward, fb.dt_s)
        feats = observation_features(obs, self.n_gpus, REFERENCE_ROUND_S)
        self._consume(self.builder.close(obs.gpu_ids, feats, terminal=True))
        self.finish_episode()

    def _consume(self, tr: Transitions | None) -> None:
        if tr is None:
            return
        if self.recorded is not None:
            self.recorded.add(tr)
        if self.learning:
            self.learn(tr)

    # ---------------------------------------------------------------------------- subclass hooks
    per_agent = False

    def build(self, n_gpus: int) -> None:
        """Create the learnt state for ``n_gpus`` agents (first episode only)."""

    @abstractmethod
    def choose(self, features: np.ndarray, agents: np.ndarray) -> np.ndarray:
        """Greedy :class:`BidAction` per row."""

    def learn(self, tr: Transitions) -> None:
        """Use a batch of closed transitions."""

    def finish_episode(self) -> None:
        """Called after the last transitions of an episode."""

    @abstractmethod
    def save_checkpoint(self, path: Path) -> Path:
        """Write the learnt state into folder ``path``; returns the main file."""

    @abstractmethod
    def load_checkpoint(self, path: Path) -> None:
        """Load what :meth:`save_checkpoint` wrote (the folder or its main file)."""

    def epsilon(self) -> float:
        return float(self.schedule.value(self.decisions)) if self.learning else 0.0

    def export_transitions(self, path: Path) -> int:
        """Write the kept transitions (``keep_transitions``) to ``path``; returns how many."""
        if self.recorded is None:
            return 0
        self.recorded.save(path)
        return len(self.recorded)

    def state_dict(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "tau_s": self.tau_s, "learn": self.learning, "decisions": self.decisions,
                "updates": self.updates, "epsilon": self.epsilon(), "checkpoint": self.checkpoint}


def write_spec(path: Path, spec: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(spec, indent=2, sort_keys=True) + "\n")


def read_spec(path: Path, kind: str) -> dict[str, Any]:
    """Read a checkpoint's JSON spec; errors name the file and what was expected."""
    if not path.is_file():
        raise PolicyError(f"{path}: checkpoint spec not found (a {kind} checkpoint is written by "
                          f"`python -m dcsim train SCENARIO --policy {kind}`)")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: not valid JSON ({exc}); expected the checkpoint spec written by "
                          f"`python -m dcsim train SCENARIO --policy {kind}`") from None
    if not isinstance(spec, dict):
        raise PolicyError(f"{path}: got a JSON {type(spec).__name__}; expected an object (the checkpoint spec "
                          f"written by `python -m dcsim train SCENARIO --policy {kind}`)")
    for field in ("decisions", "updates"):
        value = spec.get(field, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PolicyError(f"{path}: field {field!r}: got {value!r}; expected an integer >= 0")
    if spec.get("policy") != kind:
        raise PolicyError(f"{path}: a checkpoint of policy {spec.get('policy')!r}; expected {kind!r}")
    if spec.get("n_actions") != N_ACTIONS:
        raise PolicyError(f"{path}: a checkpoint for {spec.get('n_actions')} actions; this dcsim's learners choose "
                          f"among {N_ACTIONS} ({', '.join(BidAction.__members__)}): a checkpoint of the old "
                          "5-action set (before FLOOR_THEN_VALUE, FLOOR_THEN_LIMIT and PACE) cannot be loaded; "
                          "retrain it with `python -m dcsim train`")
    if tuple(spec.get("features", ())) != FEATURES:
        raise PolicyError(f"{path}: observation spec {spec.get('features')} with {spec.get('n_actions')} actions "
                          f"does not match this dcsim's {list(FEATURES)} with {N_ACTIONS} actions")
    return spec
