"""The shared machinery of learning agents: features, ε-greedy decisions over an action layout, transitions,
checkpoints.

With the default layout (``actions: bid``) a learning agent decides when its GPU runs a job: at every market
round and when its job starts it picks one of :class:`~dcsim.learning.BidAction`. Agents without a running job
have nothing to decide; the reward they accrue meanwhile (a job's value arrives when it completes) goes to
their open transition, which closes at their next real decision. The richer layouts (``bid+idle``, ``all``;
:class:`~dcsim.learning.ActionLayout`) add an idle GPU's choice (:class:`~dcsim.policy.IdleAction`) and a
deferrable job's admission (:class:`~dcsim.policy.Admission`, decided by a job-level agent handing over to the
bid kind; docs/learning.md "Action layouts"). Subclasses provide :meth:`LearningPolicy.choose` (greedy actions
among the allowed ones), :meth:`LearningPolicy.learn` (use a batch of transitions) and checkpoints.
"""
from __future__ import annotations

import json
from abc import ABCMeta, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from dcsim.atomic import write_text_atomic
from dcsim import learning as _learning
from dcsim.errors import PolicyError
from dcsim.learning import (
    _FEATURE_ROW_FIELDS,
    _MV_DEFERRED,
    FEATURES,
    ActionKind,
    ActionLayout,
    BidAction,
    ReplayBuffer,
    TransitionBuilder,
    Transitions,
    admission_features,
    bids_from_action_list,
    bids_from_actions,
    decision_kinds,
    observation_feature_rows,
    observation_features,
    rich_features,
)
from dcsim.policy import AgentObservation, Bids, GpuSpecView, GpuState, JobObservation, Policy
from policies.qtable import EpsilonSchedule

#: Reference market round for feature scaling, s (features must not depend on the scenario's settings).
REFERENCE_ROUND_S = 300.0
N_ACTIONS = len(BidAction)
_ACTIVE = int(GpuState.ACTIVE)
_FULL = int(BidAction.FULL)


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
        actions: The action layout (:class:`~dcsim.learning.ActionLayout`): ``"bid"`` (the default: bids for a
            running job only, exactly the learners before layouts existed), ``"bid+idle"`` (also what an idle GPU
            does) or ``"all"`` (also run / defer for deferrable jobs). Checkpoints record it.
    """

    name = "learning"
    wants_feedback = True

    def __init__(self, gamma: float = 0.99, tau_s: float = 3600.0, epsilon_start: float = 1.0,
                 epsilon_end: float = 0.05, epsilon_decay_decisions: float = 20_000.0, epsilon_kind: str = "exponential",
                 learn: bool = True, cheap_multiple: float = 1.1, checkpoint: str | None = None,
                 keep_transitions: int = 0, block_limit_multiple: float = 2.0, pace_safety: float = 1.25,
                 actions: str = "bid"):
        super().__init__()
        try:
            self.layout = ActionLayout(actions)
        except PolicyError as exc:
            raise PolicyError(f"policy {self.name!r}: {exc}") from None
        self.features = self.layout.features
        self.n_actions = self.layout.n_actions
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
        # the reward terms a job-level (admission) agent is charged while it waits; set by the engine
        self.latency_per_s = self.slo_per_miss = self.drop_per_job = 0.0
        self.drop_expired = False

    # ---------------------------------------------------------------------------- engine callbacks
    def reset(self, rng: np.random.Generator, gpu: GpuSpecView, n_gpus: int) -> None:
        """Start an episode. Learnt state persists across episodes (the trainer reuses the policy)."""
        super().reset(rng, gpu, n_gpus)
        self.gpu = gpu
        if not self._loaded:
            self.n_gpus = n_gpus
            self.build(n_gpus)
            if self.checkpoint is not None:
                self.load_checkpoint(Path(self.checkpoint))
            self._loaded = True
        elif n_gpus != self.n_gpus and self.per_agent:
            raise PolicyError(f"policy {self.name!r} keeps per-agent state for {self.n_gpus} GPUs; "
                              f"this scenario has {n_gpus}")
        self.builder = TransitionBuilder(n_gpus, len(self.features), self.gamma, self.tau_s)
        # job-level admission agents: job id -> (features, flat action, decided at s, absolute deadline s, GPUs)
        self.waiting: dict[int, tuple[np.ndarray, int, float, float, int]] = {}
        if self.keep_transitions and self.recorded is None:
            self.recorded = ReplayBuffer(self.keep_transitions, len(self.features), self.features)

    def use_reward(self, reward: Any, drop_expired: bool) -> None:
        """Take the scenario's reward weights (a :class:`~dcsim.config.RewardConfig`) that a held deferrable
        job is charged while it waits (called by the engine for policies that want feedback)."""
        self.latency_per_s = float(reward.latency_per_s)
        self.slo_per_miss = float(reward.slo_per_miss)
        self.drop_per_job = float(reward.drop_per_job)
        self.drop_expired = bool(drop_expired)

    def overrides(self, method: str) -> bool:
        """The engine asks for idle and admission decisions only where the action layout decides them (so the
        default ``bid`` layout runs exactly as before layouts existed)."""
        if method == "on_idle":
            return ActionKind.IDLE in self.layout.kinds
        if method == "admit":
            return ActionKind.ADMIT in self.layout.kinds
        return super().overrides(method)

    def _features(self, obs: AgentObservation) -> np.ndarray:
        feats = observation_features(obs, self.n_gpus, REFERENCE_ROUND_S)
        if self.layout.rich:
            feats = rich_features(feats, obs.market.deferred_jobs, self.n_gpus)
        return feats

    def _decide(self, x: np.ndarray, agents: np.ndarray, kind: ActionKind) -> np.ndarray:
        """ε-greedy flat actions of ``kind`` for feature rows ``x`` (greedy among the kind's actions)."""
        if self.layout.rich:
            chosen = self.choose(x, agents, self.layout.mask(np.full(agents.size, int(kind))))
        else:
            chosen = self.choose(x, agents)
        if self.learning:
            eps = float(self.schedule.value(self.decisions))
            explore = self.rng.random(agents.size) < eps
            if explore.any():
                chosen = chosen.copy()
                lo = self.layout.offset[kind]
                chosen[explore] = lo + self.rng.integers(0, self.layout.size(kind), size=int(explore.sum()))
        self.decisions += int(agents.size)
        return chosen

    def bid(self, obs: AgentObservation) -> Bids:
        if 0 < len(obs) <= _learning.SMALL_BATCH:
            bids = self._bid_few(obs)
            if bids is not None:
                return bids
        feats = self._features(obs)
        ids = obs.gpu_ids
        fb = obs.feedback
        self.builder.accrue(ids, fb.reward, fb.dt_s)
        deciding = obs.has_job & (obs.state == GpuState.ACTIVE)
        actions = np.full(len(obs), int(BidAction.FULL), dtype=np.int64)  # no job: the bid is ignored
        if deciding.any():
            agents, x = ids[deciding], feats[deciding]
            self._consume(self.builder.close(agents, x, terminal=False))
            chosen = self._decide(x, agents, ActionKind.BID)
            actions[deciding] = chosen  # the bid block starts at 0 in every layout
            self.builder.start(agents, x, chosen)
        return bids_from_actions(actions, obs, self.cheap_multiple, self.block_limit_multiple, self.pace_safety)

    # ---------------------------------------------------------------------------- the few-row path
    # A job starting asks its few GPUs to bid (one row per GPU): :meth:`bid` takes these Python-number steps then,
    # the numpy path's operations in its order (features: :func:`~dcsim.learning.observation_feature_rows`; the
    # transitions: ``TransitionBuilder.*_few``), the same draws from the policy's stream in the same order (one
    # ``random()`` per row is ``random(n)``, one ``integers(0, k)`` per explored row ``integers(0, k, size)``), and
    # the subclass's :meth:`choose_rows` / :meth:`learn_rows`. ``tests/test_learning_fast_path.py`` checks it against
    # the numpy path (``dcsim.learning.SMALL_BATCH = 0``).
    def _bid_few(self, obs: AgentObservation) -> Bids | None:
        """:meth:`bid` for a few distinct agents; None (nothing done) where the numpy path must run (also where a
        subclass or the instance replaced a step it would skip: ``_features``, ``_decide``, ``_consume``)."""
        fb = obs.feedback
        if fb is None or not (self._plain("_features", LearningPolicy) and self._plain("_decide", LearningPolicy)
                              and self._plain("_consume", LearningPolicy)):
            return None
        n = len(obs)
        ids = obs.as_list("gpu_ids")
        if len(set(ids)) != n:
            return None
        rows = obs.rows(*_FEATURE_ROW_FIELDS)
        market = obs.market_values()
        base = observation_feature_rows(obs, self.n_gpus, REFERENCE_ROUND_S, rows, market)
        if base is None:
            return None
        if self.layout.rich:  # rich_features: decision_admit 0 and the jobs held back per GPU
            extra = [0.0, float(np.log1p(market[_MV_DEFERRED] / max(self.n_gpus, 1)))]
            base = [r + extra for r in base]
        x = np.array(base, dtype=np.float32).reshape(n, len(self.features))
        builder = self.builder
        builder.accrue_few(ids, fb.reward.tolist(), fb.dt_s.tolist())
        deciding = [i for i, r in enumerate(rows) if r[1] and r[0] == _ACTIVE]
        actions = [_FULL] * n  # no job: the bid is ignored
        if deciding:
            if len(deciding) == n:
                agents, xd = ids, x
            else:
                agents, xd = [ids[i] for i in deciding], x[deciding]
            xl = xd.tolist()
            closed = builder.close_few(agents)
            if closed is not None:
                live, closed_agents, acts, rewards, elapsed = closed
                if len(live) == len(agents):
                    self._consume_few(closed_agents, acts, rewards, xd, xl, elapsed, False)
                else:
                    self._consume_few(closed_agents, acts, rewards, xd[live], [xl[i] for i in live], elapsed, False)
            chosen = self._decide_few(xl, xd, agents, ActionKind.BID)
            for i, a in zip(deciding, chosen):
                actions[i] = a  # the bid block starts at 0 in every layout
            builder.start_few(agents, xd, chosen)
        return bids_from_action_list(actions, obs, self.cheap_multiple, self.block_limit_multiple, self.pace_safety)

    def _decide_few(self, rows: list[list[float]], x: np.ndarray, agents: list[int], kind: ActionKind) -> list[int]:
        """:meth:`_decide` for a few rows (``rows``: ``x.tolist()``), as Python ints."""
        chosen = self.choose_rows(rows, x, agents, kind)
        if self.learning:
            eps = float(self.schedule.value(self.decisions))
            rng = self.rng
            explore = [rng.random() < eps for _ in agents]  # rng.random(n) < eps
            if True in explore:
                lo, size = self.layout.offset[kind], self.layout.size(kind)
                chosen = [lo + int(rng.integers(0, size)) if e else c for e, c in zip(explore, chosen)]
        self.decisions += len(agents)
        return chosen

    def _consume_few(self, agents: list[int], actions: list[int], rewards: list[float], next_x: np.ndarray,
                     next_rows: list[list[float]], elapsed_s: list[float], terminal: bool) -> None:
        """:meth:`_consume` of the transitions just closed by ``TransitionBuilder.close_few``."""
        if self.recorded is None and not self.learning:
            return
        obs_x = self.builder.obs[agents]
        if self.recorded is None and self.learn_rows(agents, obs_x, actions, rewards, next_x, next_rows, elapsed_s,
                                                     terminal):
            return
        k = len(agents)
        self._consume(Transitions(obs_x, np.array(actions, dtype=np.int64), np.array(rewards, dtype=float),
                                  np.array(next_x, dtype=np.float32), np.array(elapsed_s, dtype=float),
                                  np.full(k, terminal), np.array(agents, dtype=np.int64)))

    def _plain(self, name: str, owner: type) -> bool:
        """Whether method ``name`` is still ``owner``'s own: neither a subclass nor the instance replaced it (a
        few-row form of a method runs only then, so a replaced :meth:`choose` or :meth:`learn` is called)."""
        return name not in self.__dict__ and getattr(type(self), name) is owner.__dict__[name]

    def choose_rows(self, rows: list[list[float]], x: np.ndarray, agents: list[int], kind: ActionKind) -> list[int]:
        """:meth:`choose` for a few feature rows of ``kind`` (``rows``: ``x.tolist()``), as Python ints. Subclasses
        may answer from the Python values; this default calls :meth:`choose`."""
        ids = np.array(agents, dtype=np.int64)
        if self.layout.rich:
            chosen = self.choose(x, ids, self.layout.mask(np.full(len(agents), int(kind))))
        else:
            chosen = self.choose(x, ids)
        return np.asarray(chosen, dtype=np.int64).tolist()

    def learn_rows(self, agents: list[int], obs: np.ndarray, actions: list[int], rewards: list[float],
                   next_obs: np.ndarray, next_rows: list[list[float]], dt_s: list[float], terminal: bool) -> bool:
        """:meth:`learn` of a few transitions given as Python values (``obs``, ``next_obs``: their float32 rows;
        ``next_rows``: ``next_obs.tolist()``). Returns False, having changed nothing, where the subclass wants the
        :class:`~dcsim.learning.Transitions` (then :meth:`learn` gets them); this default always does."""
        return False

    def on_idle(self, obs: AgentObservation) -> np.ndarray:
        """What each idle GPU does (layouts ``bid+idle`` and ``all``): its open transition (opened at its last bid
        or idle decision) closes here and an idle one opens."""
        ids = obs.gpu_ids
        fb = obs.feedback
        self.builder.accrue(ids, fb.reward, fb.dt_s)
        x = self._features(obs)
        self._consume(self.builder.close(ids, x, terminal=False))
        chosen = self._decide(x, ids, ActionKind.IDLE)
        self.builder.start(ids, x, chosen)
        return (chosen - self.layout.offset[ActionKind.IDLE]).astype(np.int8)

    def admit(self, obs: JobObservation) -> np.ndarray:
        """RUN or DEFER for each deferrable job (layout ``all``), by a job-level agent.

        A job's transition opens at its admission decision. DEFER closes at the job's next admission decision
        (it is offered again at the next round or supply change) with the job's share — ÷ its GPUs, the scale of
        a GPU agent's reward — of what waiting cost: ``latency_per_s``·Δt, and ``slo_per_miss + drop_per_job``
        if it expired and was dropped meanwhile (terminal). RUN hands the job over to the GPU agents at once: the
        transition closes with reward 0 and Δt = 0 at the bid-kind state of the same features, so
        ``Q(s, RUN) = max_bid Q(s_bid, ·)``, the value one of its GPUs expects from running it now.
        """
        now = obs.market.time_s
        ids = np.asarray(obs.job_ids, dtype=np.int64)
        x = admission_features(obs, self.gpu, self.n_gpus, REFERENCE_ROUND_S)
        self._close_waiting(now, offered=set(ids.tolist()), offered_x=dict(zip(ids.tolist(), x)))
        agents = self.n_gpus + ids
        chosen = self._decide(x, agents, ActionKind.ADMIT)
        local = chosen - self.layout.offset[ActionKind.ADMIT]
        run = local == 0
        if run.any():
            handed = x[run].copy()
            handed[:, self.features.index("decision_admit")] = 0.0
            k = int(run.sum())
            self._consume(Transitions(x[run].copy(), chosen[run].copy(), np.zeros(k), handed, np.zeros(k),
                                      np.zeros(k, dtype=bool), agents[run].copy()))
        deadline = now + np.asarray(obs.slack_s, dtype=float) + np.asarray(obs.duration_s, dtype=float)
        for i in np.flatnonzero(~run).tolist():
            self.waiting[int(ids[i])] = (x[i].copy(), int(chosen[i]), now, float(deadline[i]), int(obs.gpus[i]))
        return local.astype(np.int8)

    def _close_waiting(self, now: float, offered: set[int], offered_x: dict[int, np.ndarray],
                       end: bool = False) -> None:
        """Close the transitions of held (deferred) jobs: those offered again now, those that expired and were
        dropped (``drop_expired``), and at the horizon (``end``) all."""
        rows = []
        for j, (x0, a, t0, deadline, k) in list(self.waiting.items()):
            if j in offered:
                rows.append((x0, a, -self.latency_per_s * (now - t0) / k, offered_x[j], now - t0, False, j))
            elif self.drop_expired and deadline < now:  # dropped at the round after its deadline passed
                cost = self.latency_per_s * (deadline - t0) + self.slo_per_miss + self.drop_per_job
                rows.append((x0, a, -cost / k, x0, max(deadline - t0, 0.0), True, j))
            elif end:  # still held at the horizon: its wait so far, and a miss if the deadline has passed
                cost = self.latency_per_s * (now - t0) + (self.slo_per_miss if deadline < now else 0.0)
                rows.append((x0, a, -cost / k, x0, now - t0, True, j))
            else:
                continue
            del self.waiting[j]
        if rows:
            obs0, act, rew, nxt, dt, term, job = zip(*rows)
            self._consume(Transitions(np.stack(obs0), np.array(act, dtype=np.int64), np.array(rew, dtype=float),
                                      np.stack(nxt), np.array(dt, dtype=float), np.array(term, dtype=bool),
                                      self.n_gpus + np.array(job, dtype=np.int64)))

    def end_episode(self, obs: AgentObservation) -> None:
        """Close every open transition at the horizon (terminal: the episode ends there)."""
        fb = obs.feedback
        self.builder.accrue(obs.gpu_ids, fb.reward, fb.dt_s)
        feats = self._features(obs)
        self._consume(self.builder.close(obs.gpu_ids, feats, terminal=True))
        if self.waiting:
            self._close_waiting(obs.market.time_s, set(), {}, end=True)
        self.finish_episode()

    def next_mask(self, next_obs: np.ndarray) -> np.ndarray | None:
        """The actions allowed at each transition's next state (None with the ``bid`` layout: all of them)."""
        if not self.layout.rich:
            return None
        return self.layout.mask(decision_kinds(next_obs, self.features))

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
    def choose(self, features: np.ndarray, agents: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """Greedy flat action per row (a :class:`BidAction` with the ``bid`` layout), among the ``allowed``
        ``(n, n_actions)`` actions where a mask is given."""

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
        out = {"gamma": self.gamma, "tau_s": self.tau_s, "learn": self.learning, "decisions": self.decisions,
               "updates": self.updates, "epsilon": self.epsilon(), "checkpoint": self.checkpoint}
        if self.layout.rich:  # the default layout's metadata stays as it was
            out["actions"] = self.layout.name
        return out


def write_spec(path: Path, spec: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(spec, indent=2, sort_keys=True) + "\n")


def read_spec(path: Path, kind: str, layout: ActionLayout | None = None) -> dict[str, Any]:
    """Read a checkpoint's JSON spec; errors name the file and what was expected. ``layout`` is the loading
    policy's action layout (default ``bid``); a checkpoint without ``actions`` is of the ``bid`` layout."""
    layout = layout or ActionLayout("bid")
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
    saved = spec.get("actions", "bid")
    if saved != layout.name:
        known = ActionLayout(saved).describe() if isinstance(saved, str) and saved in ("bid", "bid+idle", "all") \
            else f"{saved!r} (not a known layout)"
        raise PolicyError(f"{path}: field 'actions': a checkpoint of action layout {known}; this policy's layout is "
                          f"{layout.describe()}: set policy.params.actions={saved!r} to load it, or retrain")
    if layout.rich:
        if spec.get("n_actions") != layout.n_actions:
            raise PolicyError(f"{path}: field 'n_actions': got {spec.get('n_actions')!r}; layout {layout.name!r} "
                              f"has {layout.n_actions} actions")
        if tuple(spec.get("features", ())) != layout.features:
            raise PolicyError(f"{path}: field 'features': got {spec.get('features')}; layout {layout.name!r} "
                              f"observes {list(layout.features)}")
        return spec
    if spec.get("n_actions") != N_ACTIONS:
        raise PolicyError(f"{path}: a checkpoint for {spec.get('n_actions')} actions; this dcsim's learners choose "
                          f"among {N_ACTIONS} ({', '.join(BidAction.__members__)}): a checkpoint of the old "
                          "5-action set (before FLOOR_THEN_VALUE, FLOOR_THEN_LIMIT and PACE) cannot be loaded; "
                          "retrain it with `python -m dcsim train`")
    if tuple(spec.get("features", ())) != FEATURES:
        raise PolicyError(f"{path}: observation spec {spec.get('features')} with {spec.get('n_actions')} actions "
                          f"does not match this dcsim's {list(FEATURES)} with {N_ACTIONS} actions")
    return spec
