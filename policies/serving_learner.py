"""A tabular contextual-bandit learner for LLM serving runs: per request, deny or serve with one configuration.

Each arriving request is a request-level agent that decides once: action 0 is DENY, action ``1 + k`` is SERVE
with row ``k`` of the configuration table. Its state is a binned context (:data:`FEATURE_EDGES`): the estimated
queue wait relative to the TTFT target, the batch occupancy, where the price now lies in the range of prices
seen so far, the request's prompt and output tokens and the hour of day. The transition closes when the request
finishes (served, or dropped; a denied request closes at once); its reward (:func:`request_rewards`, USD) is

    r_i = revenue_i − energy_i / 3.6e9 × price(start_i) − slo_penalty × V_i × missed_i

with ``revenue_i`` what the run paid for it (quality-scaled if ``revenue.scale_by_quality``), ``energy_i`` its
share of the GPUs' dynamic energy (J; idle power is paid whatever is decided, so it is left out), priced at the
price in force when it started, ``V_i = usd_per_prompt_token × P_i + usd_per_output_token × D_i`` its full
(unscaled) value, and ``missed_i = 1`` for a dropped request or a served one whose TTFT or end-to-end latency
exceeds the SLO. A denied request's reward is 0. Requests still pending at the horizon are not learnt from.

Because a request decides once and its reward is its own, the update is a contextual bandit's (no bootstrap):
``Q(s, a) ← Q(s, a) + α (r − Q(s, a))`` with ``α = 1/n`` on the n-th visit, so ``Q(s, a)`` is the running
mean of the rewards seen there (:class:`policies.qtable.QTable` with ``gamma = 0`` and terminal transitions).
The learner ignores the effect of its decision on later requests (a served request lengthens the queue
others see) except through the SLO penalty that later, slower requests then pay: an honest simplification.
Rewards are booked after a run from its request table (:meth:`ServingQ.learn_from`), so learning happens
between episodes, not within one (docs/serving.md, "Learning policy"). numpy only; no torch.

:class:`ServingLearner` holds what every serving learner shares (actions, context, epsilon-greedy acting, the
decision log, the rewards booked after a run); :class:`ServingQ` adds the table, and
:class:`policies.serving_dqn.ServingDQN` an MLP value function in its place.
"""
from __future__ import annotations

import abc
import bisect
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dcsim.atomic import replacing
from dcsim.errors import PolicyError
from dcsim.policy import Policy, RequestObservation, ServingAdmission, ServingDecision
from policies.qtable import Discretizer, EpsilonSchedule, QTable

#: Bin edges of the context features (see :class:`policies.qtable.Discretizer`: a value on an edge goes above).
FEATURE_EDGES: dict[str, list[float]] = {
    "wait_over_ttft": [1e-9, 0.5, 1.0, 2.0],   # estimated queue wait ÷ slo.ttft_s (0: a slot is free)
    "occupancy": [0.25, 0.5, 0.75, 1.0],       # requests in service ÷ (GPUs × max_batch)
    "price_position": [1 / 3, 2 / 3],          # (price − lowest seen) ÷ (highest − lowest seen)
    "prompt_tokens": [512.0, 2048.0],
    "output_tokens": [64.0, 256.0],
    "hour_utc": [6.0, 12.0, 18.0],
}
#: Action 0: deny; action 1 + k: serve with configuration row k.
DENY_ACTION = 0
#: Checkpoint file names inside a checkpoint folder.
TABLE_FILE, META_FILE = "serving_q.npz", "serving_q.json"


def _discretizer() -> Discretizer:
    return Discretizer({k: np.array(v) for k, v in FEATURE_EDGES.items()})


def request_rewards(result: Any, slo_penalty: float) -> pd.DataFrame:
    """Each closed request's reward in USD (module docstring) from a finished serving run.

    Args:
        result: A :class:`dcsim.serving.model.ServingResult`.
        slo_penalty: Share of a request's full value charged when it is dropped or misses an SLO (>= 0).

    Returns:
        One row per request whose transition closed (served, denied or dropped; pending ones are left out),
        indexed by request id, with ``revenue_usd``, ``energy_cost_usd``, ``penalty_usd`` and ``reward_usd``.
    """
    r = result.requests
    cfg = result.scenario.workload.llm_serving
    status = r["status"].astype(str).to_numpy()
    closed = np.isin(status, ("served", "denied", "dropped"))
    steps = result.steps
    start = r["start_s"].to_numpy(float)
    # the price in force at each start: the step whose [start_s, end_s) holds it (the last step for t = horizon)
    k = np.clip(np.searchsorted(steps["start_s"].to_numpy(float), np.nan_to_num(start), side="right") - 1,
                0, len(steps) - 1)
    price = steps["price_usd_per_mwh"].to_numpy(float)[k]
    served = status == "served"
    energy_cost = np.where(served | (status == "dropped"), r["energy_j"].to_numpy(float) / 3.6e9 * price, 0.0)
    energy_cost = np.where(np.isfinite(energy_cost), energy_cost, 0.0)
    value = (cfg.revenue.usd_per_prompt_token * r["prompt_tokens"].to_numpy(float)
             + cfg.revenue.usd_per_output_token * r["output_tokens"].to_numpy(float))
    late = served & ((r["ttft_s"].to_numpy(float) > cfg.slo.ttft_s) | (r["e2e_s"].to_numpy(float) > cfg.slo.e2e_s))
    missed = late | (status == "dropped")
    penalty = np.where(missed, slo_penalty * value, 0.0)
    revenue = r["revenue_usd"].to_numpy(float)
    out = pd.DataFrame({"revenue_usd": revenue, "energy_cost_usd": energy_cost, "penalty_usd": penalty,
                        "reward_usd": revenue - energy_cost - penalty})
    return out[closed]


class ServingLearner(Policy, abc.ABC):
    """What the serving learners share: per-request deny / serve-with-configuration actions, the request context
    (:meth:`features`), epsilon-greedy acting, the decision log and the per-request rewards booked after a run
    (:meth:`learn_from`). A subclass says how a context is encoded (:meth:`encode`), valued (:meth:`action_values`)
    and learnt from (:meth:`fit`), and how it is checkpointed.

    Args:
        learn: Explore (epsilon-greedy) and record decisions for :meth:`learn_from`; False: greedy, frozen.
        slo_penalty: Share of a request's full value (USD) charged when it is dropped or misses an SLO (>= 0).
        epsilon_start, epsilon_end, epsilon_decay_decisions: The exploration schedule (exponential,
            :class:`policies.qtable.EpsilonSchedule`) over the requests learnt from so far, carried across
            episodes and checkpoints.
    """

    wants_feedback = True  # a learning policy: `run --checkpoint` and `train` take it

    def __init__(self, learn: bool = True, slo_penalty: float = 1.0, epsilon_start: float = 1.0,
                 epsilon_end: float = 0.02, epsilon_decay_decisions: float = 20_000.0):
        super().__init__()
        if not (math.isfinite(float(slo_penalty)) and float(slo_penalty) >= 0):
            raise PolicyError(f"policy {self.name}: params.slo_penalty: got {slo_penalty!r}; expected a number >= 0")
        try:
            self.epsilon = EpsilonSchedule(float(epsilon_start), float(epsilon_end), float(epsilon_decay_decisions))
        except ValueError as exc:
            raise PolicyError(f"policy {self.name}: params.epsilon_*: {exc}") from None
        self.learn = bool(learn)
        self.slo_penalty = float(slo_penalty)
        self.decisions = 0
        self.learnt = 0
        self.price_lo, self.price_hi = math.inf, -math.inf
        self._log: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    # ------------------------------------------------------------------------------------ what a subclass says
    @abc.abstractmethod
    def encode(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """The requests' contexts as the learner keeps them (rows: one per request)."""

    @abc.abstractmethod
    def action_values(self, context: np.ndarray, n_configs: int) -> np.ndarray:
        """``(m, 1 + n_configs)`` values of deny and serve-with-each-row for the contexts (the greedy choice
        reads them; ties go to the lowest action)."""

    @abc.abstractmethod
    def fit(self, context: np.ndarray, action: np.ndarray, reward_usd: np.ndarray) -> None:
        """Learn from closed requests: their contexts, actions and rewards (USD), in decision order."""

    def _refuse_action_count(self, default_where: str, field: str, have: int, n_configs: int) -> None:
        """Raise: a loaded table or network of ``have`` actions does not fit this run's ``n_configs`` rows."""
        where = self._source if self._source is not None else default_where
        raise PolicyError(f"{where}: field '{field}': {have} actions (deny + {have - 1} configurations); this run's "
                          f"configuration table has {n_configs} rows, so expected {1 + n_configs} actions: train on "
                          "this table, or run with the table the checkpoint was trained on")

    # ------------------------------------------------------------------------------------ acting
    def reset(self, rng: np.random.Generator, gpu: Any, n_gpus: int) -> None:
        super().reset(rng, gpu, n_gpus)
        self._log = []

    def features(self, obs: RequestObservation) -> dict[str, np.ndarray]:
        """The context of each request arriving now (shape ``(m,)`` per feature; see :data:`FEATURE_EDGES`).

        The wait estimate of the ``j``-th request of the call (0-based) counts the ``j`` before it as queued
        ahead: ``max(0, queue + j − free_slots + 1) ÷ completion_rate`` (infinite with no completions seen yet),
        as :class:`policies.serving.DenyOverSlo` estimates it.
        """
        v = obs.serving
        m = len(obs)
        ahead = np.maximum(0.0, v.queue_length + np.arange(m) - v.free_slots + 1.0)
        rate = v.completion_rate_per_s
        with np.errstate(divide="ignore", invalid="ignore"):
            wait = np.where(ahead > 0, ahead / rate if rate > 0 else np.inf, 0.0)
        price = float(v.price_usd_per_mwh)
        self.price_lo, self.price_hi = min(self.price_lo, price), max(self.price_hi, price)
        span = self.price_hi - self.price_lo
        position = (price - self.price_lo) / span if span > 0 else 0.5
        return {"wait_over_ttft": wait / v.slo_ttft_s,
                "occupancy": np.full(m, v.in_service / (v.gpus * v.max_batch)),
                "price_position": np.full(m, position),
                "prompt_tokens": np.asarray(obs.prompt_tokens, dtype=float),
                "output_tokens": np.asarray(obs.output_tokens, dtype=float),
                "hour_utc": np.full(m, v.hour_utc)}

    def exploration_rate(self) -> float:
        """ε now: the schedule read at the number of requests learnt from so far (the table's visits), so
        exploration lasts until learning has happened; learning is between episodes, so ε is constant in one."""
        return float(self.epsilon.value(self.learnt))

    def serve(self, obs: RequestObservation) -> ServingDecision:
        m = len(obs)
        context = self.encode(self.features(obs))
        values = self.action_values(context, obs.config_quality.size)
        n_actions = values.shape[1]
        action = np.argmax(values, axis=1).astype(np.int64)  # ties: the lowest action index
        if self.learn:
            eps = self.exploration_rate()
            explore = self.rng.random(m) < eps
            random_action = np.minimum((self.rng.random(m) * n_actions).astype(np.int64), n_actions - 1)
            action = np.where(explore, random_action, action)
            self._log.append((np.asarray(obs.request_ids, dtype=np.int64).copy(), context, action))
        self.decisions += m
        admission = np.where(action == DENY_ACTION, ServingAdmission.DENY, ServingAdmission.SERVE).astype(np.int8)
        return ServingDecision(admission, np.maximum(action - 1, 0))

    # ------------------------------------------------------------------------------------ learning
    def learn_from(self, result: Any) -> dict[str, float]:
        """Book every closed request of a finished run (:meth:`fit` on each, in decision order).

        Returns:
            ``updates`` (requests learnt from), ``reward_usd`` (their total reward), ``penalty_usd`` and the share
            of each action among the logged decisions (``share_deny``, ``share_config_<k>``).
        """
        if not self._log:
            return {"updates": 0, "reward_usd": 0.0, "penalty_usd": 0.0}
        ids = np.concatenate([x[0] for x in self._log])
        context = np.concatenate([x[1] for x in self._log])
        action = np.concatenate([x[2] for x in self._log])
        self._log = []
        rewards = request_rewards(result, self.slo_penalty)
        keep = np.isin(ids, rewards.index.to_numpy())
        r = rewards.loc[ids[keep], "reward_usd"].to_numpy(float)
        self.fit(context[keep], action[keep], r)
        n_actions = 1 + len(result.configs)
        share = np.bincount(action, minlength=n_actions) / action.size
        out = {"updates": int(keep.sum()), "reward_usd": float(r.sum()),
               "penalty_usd": float(rewards.loc[ids[keep], "penalty_usd"].sum()), "share_deny": float(share[0])}
        out |= {f"share_config_{k}": float(share[1 + k]) for k in range(n_actions - 1)}
        return out

    def state_dict(self) -> dict:
        return {"learn": self.learn, "slo_penalty": self.slo_penalty, "decisions": self.decisions}


class ServingQ(ServingLearner):
    """Tabular contextual-bandit admission and configuration choice for serving runs (module docstring).

    Args:
        learn: Explore (epsilon-greedy) and record decisions for :meth:`learn_from`; False: greedy, frozen.
        checkpoint: A checkpoint folder (or its ``serving_q.npz``) written by :meth:`save_checkpoint` to start from.
        slo_penalty: Share of a request's full value (USD) charged when it is dropped or misses an SLO (>= 0).
        epsilon_start, epsilon_end, epsilon_decay_decisions: The exploration schedule (exponential,
            :class:`policies.qtable.EpsilonSchedule`) over the requests learnt from so far (the table's visit
            count), carried across episodes and checkpoints.
    """

    name = "serving_q"

    def __init__(self, learn: bool = True, checkpoint: str | None = None, slo_penalty: float = 1.0,
                 epsilon_start: float = 1.0, epsilon_end: float = 0.02, epsilon_decay_decisions: float = 20_000.0):
        super().__init__(learn, slo_penalty, epsilon_start, epsilon_end, epsilon_decay_decisions)
        self.disc = _discretizer()
        self._edges = [self.disc.edges[name].tolist() for name in self.disc.names]
        self.table: QTable | None = None
        self._source: Path | None = None
        self._prior: np.ndarray | None = None
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)

    def encode(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return self.states(features)

    def action_values(self, context: np.ndarray, n_configs: int) -> np.ndarray:
        self._table_for(n_configs)
        return self.greedy_values(context)

    def fit(self, context: np.ndarray, action: np.ndarray, reward_usd: np.ndarray) -> None:
        self.update(context, action, reward_usd)

    def states(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """State indices of feature columns: :meth:`policies.qtable.Discretizer.index`'s bins and mixed-radix order
        (a value on an edge goes to the bin above), with a plain-Python path for the usual one-request call."""
        columns = [np.asarray(features[name], dtype=float) for name in self.disc.names]
        if columns[0].size == 1:
            index = 0
            for column, edges, radix in zip(columns, self._edges, self.disc.radices):
                index = index * radix + bisect.bisect_right(edges, float(column.reshape(-1)[0]))
            return np.array([index], dtype=np.int64)
        return self.disc.index(features)

    def _table_for(self, k: int) -> QTable:
        n_actions = 1 + k
        if self.table is None:
            self.table = QTable(self.disc.n_states, n_actions, gamma=0.0, alpha_schedule="visits")
        elif self.table.n_actions != n_actions:
            self._refuse_action_count("the policy's table", "q", self.table.n_actions, k)
        return self.table

    def prior(self) -> np.ndarray:
        """``(n_actions,)``: each action's visit-weighted mean value over all states (0 for an action never
        tried); cached until the next :meth:`update`."""
        if self._prior is None:
            q, n = self.table.q[0], self.table.visits[0]
            total = n.sum(axis=0)
            self._prior = np.divide((q * n).sum(axis=0), total, out=np.zeros(q.shape[1]), where=total > 0)
        return self._prior

    def greedy_values(self, state: np.ndarray | None = None) -> np.ndarray:
        """Values the greedy choice reads, ``(n_states, n_actions)`` (or the rows of ``state``): ``Q`` where
        visited, else the action's :meth:`prior` (a context never seen borrows what the action earns elsewhere)."""
        q, n = self.table.q[0], self.table.visits[0]
        if state is not None:
            q, n = q[state], n[state]
        return np.where(n > 0, q, self.prior()[None, :])

    def update(self, state: np.ndarray, action: np.ndarray, reward_usd: np.ndarray) -> None:
        """Bandit updates ``Q(s, a) ← Q(s, a) + (r − Q(s, a)) / n(s, a)``, in the order given."""
        n = np.asarray(state).size
        self._prior = None
        self.learnt += n
        self.table.update(0, state, action, reward_usd, state, np.zeros(n), terminal=True)

    # ------------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, folder: str | Path) -> Path:
        """Write the table (``serving_q.npz``) and the feature bins, price range and counters (``serving_q.json``)."""
        if self.table is None:
            raise PolicyError("policy serving_q: nothing to save (no serving decision made yet)")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.table.save(folder / TABLE_FILE)
        meta = {"policy": self.name, "feature_edges": FEATURE_EDGES, "n_states": self.disc.n_states,
                "n_actions": self.table.n_actions, "decisions": self.decisions,
                "price_lo_usd_per_mwh": self.price_lo if math.isfinite(self.price_lo) else None,
                "price_hi_usd_per_mwh": self.price_hi if math.isfinite(self.price_hi) else None,
                "slo_penalty": self.slo_penalty}
        with replacing(folder / META_FILE) as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return folder

    def load_checkpoint(self, path: str | Path) -> None:
        """Read a checkpoint folder (or its ``serving_q.npz``) written by :meth:`save_checkpoint`.

        Raises:
            PolicyError: A file is missing or malformed, or its table has another number of states than these
                feature bins give (the message names the file, the field, the value and what was expected). A
                table of another number of actions is refused at the first decision, where the run's
                configuration table is known.
        """
        path = Path(path)
        folder = path.parent if path.suffix == ".npz" else path
        table_path, meta_path = folder / TABLE_FILE, folder / META_FILE
        self.table = QTable.load(table_path, n_states=self.disc.n_states, n_tables=1)
        self._prior = None
        self._source = table_path
        if not meta_path.is_file():
            raise PolicyError(f"{meta_path}: file not found; expected the serving_q.json written beside {TABLE_FILE}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{meta_path}: not JSON ({exc})") from None
        edges = meta.get("feature_edges")
        if edges != FEATURE_EDGES:
            raise PolicyError(f"{meta_path}: field 'feature_edges': got {edges!r}; expected {FEATURE_EDGES!r} "
                              "(the bins of this version of policies/serving_learner.py)")
        self.decisions = int(meta.get("decisions", 0))
        self.learnt = int(self.table.visits.sum())
        lo, hi = meta.get("price_lo_usd_per_mwh"), meta.get("price_hi_usd_per_mwh")
        self.price_lo = math.inf if lo is None else float(lo)
        self.price_hi = -math.inf if hi is None else float(hi)

    def state_dict(self) -> dict:
        return super().state_dict() | {"n_states": self.disc.n_states,
                                       "n_actions": None if self.table is None else self.table.n_actions}
