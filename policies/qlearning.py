"""Tabular semi-Markov Q-learning bidders (numpy only; no torch needed).

Each agent's observation is binned into one of 144 states (see :data:`BINS`; ``docs/learning.md`` has the
table). At every decision the agent takes the ε-greedy :class:`~dcsim.learning.BidAction`; every closed
transition updates ``Q[s, a] += α (r + γ^(Δt/τ) max Q[s′] − Q[s, a])``, vectorised over the batch of agents
that decided at that instant.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from pathlib import Path
from typing import Any

import numpy as np

from dcsim import learning as _learning
from dcsim.errors import PolicyError
from dcsim.learning import FEATURES, ActionKind, Transitions, decision_kinds, pace_needed_value
from policies.learning import LearningPolicy, read_spec, write_spec
from policies.qtable import Discretizer, QTable, _double_q_update_lists, double_q_update

#: Bin edges over (scaled) feature columns; see :func:`dcsim.learning.observation_features` for the scales.
#: ``pace_needed`` is derived from two of them (:func:`pace_needed`).
BIN_SETS: dict[str, dict[str, list[float]]] = {
    # the 144 states before issue 14: neither remaining work nor the clock the deadline needs
    "price_slack": {
        "slack_h": [0.0, 0.25, 1.0],  # scaled by 1/4: late | 0-1 h | 1-4 h | >= 4 h or no deadline
        "price_log_ratio": [0.05, 0.5],  # ln(p/p0)/2: p <= 1.105 p0 | <= e p0 | more
        "renewable_fraction": [1 / 3, 2 / 3],
        "value_over_cost": [0.0],  # job value share vs its remaining energy cost at full power now: below | above
        "wallet_rounds": [float(np.log(2.0) / 5.0)],  # wallet below | above one 5-minute round at full power
    },
    # 324 states: progress (remaining work) and the pace the deadline needs replace the slack
    "progress": {
        "pace_needed": [0.5, 1.0],  # clock fraction the deadline needs: < 0.5 | 0.5-1 | >= 1 (full clock, or late)
        "remaining_h": [0.25 / 4, 1.0 / 4],  # scaled by 1/4: < 15 min | 15 min-1 h | >= 1 h of full-clock work
        "price_log_ratio": [0.05, 0.5],
        "renewable_fraction": [1 / 3, 2 / 3],
        "value_over_cost": [0.0],
        "wallet_rounds": [float(np.log(2.0) / 5.0)],
    },
}
#: The default bin set.
BINS: dict[str, list[float]] = BIN_SETS["progress"]
#: Bins the richer action layouts (``actions: bid+idle | all``) add: the decision kind (bid | idle | admit, from
#: :func:`dcsim.learning.decision_kinds`) and whether any job is queued.
LAYOUT_BINS: dict[str, list[float]] = {"decision_kind": [0.5, 1.5], "queue_per_gpu": [1e-6]}
_DERIVED = ("pace_needed", "decision_kind")


def pace_needed(features: np.ndarray) -> np.ndarray:
    """The clock fraction (work rate at β = 1) that finishes each job by its deadline: remaining ÷ (slack +
    remaining), from the ``slack_h`` and ``remaining_h`` feature columns; 2 where the deadline has passed or
    cannot be met at full clock (slack < 0), 0 without a deadline or a job. Both columns are clipped (slack to
    [−4, 8] h, remaining work to 8 h), so the value is exact for jobs within those ranges."""
    col = _PACE_COLUMNS
    if features.ndim == 2 and features.shape[0] <= _learning.SMALL_BATCH:
        return _pace_needed_small(features)
    slack_h = 4.0 * features[:, col["slack_h"]].astype(float)
    remaining_h = 4.0 * features[:, col["remaining_h"]].astype(float)
    left_h = slack_h + remaining_h
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.where(left_h > 0, remaining_h / np.where(left_h > 0, left_h, 1.0), 2.0)
    need = np.where(slack_h < 0, 2.0, need)
    return np.where((features[:, col["has_deadline"]] > 0) & (features[:, col["has_job"]] > 0), need, 0.0)


_PACE_COLUMNS = {name: FEATURES.index(name) for name in ("has_job", "has_deadline", "slack_h", "remaining_h")}


def _pace_needed_small(features: np.ndarray) -> np.ndarray:
    """:func:`pace_needed` as Python numbers for a few rows: the same float64 operations in the same order."""
    col = _PACE_COLUMNS
    rows = features[:, [col["has_job"], col["has_deadline"], col["slack_h"], col["remaining_h"]]].tolist()
    return np.array([pace_needed_value(*row) for row in rows], dtype=float)


_BID, _IDLE, _ADMIT = int(ActionKind.BID), int(ActionKind.IDLE), int(ActionKind.ADMIT)


def _greedy_double_rows(a: np.ndarray, b: np.ndarray, tables: list[int], states: list[int],
                        masks: list[list[bool]] | None) -> list[int]:
    """Per row, ``argmax`` (the first maximum) of ``0.5 * (A + B)`` over the allowed actions (``-inf`` elsewhere) of
    tables ``a`` and ``b`` (``(n_tables, n_states, n_actions)``) at ``(tables[i], states[i])``, as Python ints."""
    out = []
    for i, s in enumerate(states):
        row_a, row_b = a[tables[i], s].tolist(), b[tables[i], s].tolist()
        mask = None if masks is None else masks[i]
        best, best_value = 0, -math.inf
        for k in range(len(row_a)):
            v = 0.5 * (row_a[k] + row_b[k]) if mask is None or mask[k] else -math.inf
            if k == 0 or v > best_value:
                best, best_value = k, v
        out.append(best)
    return out


def _greedy_rows(q: np.ndarray, tables: list[int], states: list[int], masks: list[list[bool]] | None) -> list[int]:
    """:meth:`QTable.greedy` as Python ints: per row, ``np.argmax`` of ``q[tables[i], states[i]]`` with ``-inf`` where
    not allowed (the first maximum; the first NaN if there is one, as numpy)."""
    out = []
    for i, s in enumerate(states):
        row = q[tables[i], s].tolist()
        if masks is not None:
            mask = masks[i]
            row = [v if mask[k] else -math.inf for k, v in enumerate(row)]
        best, best_value = 0, row[0]
        if best_value == best_value:
            for k in range(1, len(row)):
                v = row[k]
                if v != v:
                    best = k
                    break
                if v > best_value:
                    best, best_value = k, v
        out.append(best)
    return out


class QLearning(LearningPolicy):
    """Tabular semi-Markov Q-learning over binned observations.

    Args:
        alpha: Learning rate (``alpha_schedule="constant"``) in (0, 1].
        alpha_schedule: ``"visits"`` (the default since issue 14: the n-th update of an entry uses n^-exponent,
            so the table converges and the frozen greedy snapshot is not a random draw from a moving target) or
            ``"constant"``.
        alpha_decay_exponent: Exponent of the ``"visits"`` schedule, in (0.5, 1]; default 0.7.
        tables: ``"shared"`` (one table pooled by all agents) or ``"per_agent"``.
        initial_q: Starting value of every entry.
        consistent: Use the consistent Bellman operator: a transition back to its own state bootstraps from the
            action it repeats, not from the state's best action (see :meth:`policies.qtable.QTable.update`).
        bins: A bin set of :data:`BIN_SETS` (``"progress"``, the default, or ``"price_slack"``, the old 144 states).
        double: Double Q-learning (van Hasselt 2010; the default since issue 14): two tables, each transition
            updates one of them (a fair coin from the policy's stream) toward the other's value of its own greedy
            next action; acting is greedy in their mean. Removes the over-estimation that ``max`` over noisy
            estimates feeds through self-loops such as PAUSE. A checkpoint stores both tables
            (``qlearning.npz`` and ``qlearning_b.npz``); a loaded checkpoint decides whether the policy is double.
        **kwargs: See :class:`~policies.learning.LearningPolicy` (gamma, tau_s, ε schedule, learn, checkpoint...).
    """

    name = "qlearning"

    def __init__(self, alpha: float = 0.1, alpha_schedule: str = "visits", alpha_decay_exponent: float = 0.7,
                 tables: str = "shared", initial_q: float = 0.0, consistent: bool = False, bins: str = "progress",
                 double: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        if tables not in ("shared", "per_agent"):
            raise PolicyError(f"policy 'qlearning': tables={tables!r}; allowed: shared, per_agent")
        if bins not in BIN_SETS:
            raise PolicyError(f"policy 'qlearning': bins={bins!r}; allowed: {', '.join(BIN_SETS)}")
        self.bins = bins
        self.double = bool(double)
        self.table_b: QTable | None = None
        self.alpha, self.alpha_schedule, self.alpha_decay_exponent = alpha, alpha_schedule, alpha_decay_exponent
        self.tables, self.initial_q = tables, initial_q
        self.consistent = bool(consistent)
        self.per_agent = tables == "per_agent"
        if self.per_agent and ActionKind.ADMIT in self.layout.kinds:
            raise PolicyError("policy 'qlearning': tables='per_agent' with actions='all' is not supported (admission "
                              "decisions are made by job-level agents, which have no table of their own); use "
                              "tables='shared' or actions='bid+idle'")
        self.discretizer = Discretizer({k: np.asarray(v) for k, v in self.bin_edges().items()})
        self.table: QTable | None = None

    def bin_edges(self) -> dict[str, list[float]]:
        """The bins of this policy: its bin set, plus :data:`LAYOUT_BINS` with a richer action layout."""
        return BIN_SETS[self.bins] | (LAYOUT_BINS if self.layout.rich else {})

    def build(self, n_gpus: int) -> None:
        try:
            self.table = QTable(self.discretizer.n_states, self.n_actions, n_gpus if self.per_agent else 1,
                                alpha=self.alpha, gamma=self.gamma, tau_s=self.tau_s, initial_q=self.initial_q,
                                alpha_schedule=self.alpha_schedule, alpha_decay_exponent=self.alpha_decay_exponent)
        except ValueError as exc:
            raise PolicyError(f"policy 'qlearning': {exc}") from None
        self.table_b = self._copy(self.table) if self.double else None

    @staticmethod
    def _copy(table: QTable) -> QTable:
        out = QTable.from_state_dict(table.state_dict())
        return out

    def states(self, features: np.ndarray) -> np.ndarray:
        cols = {}
        for name in self.discretizer.names:
            if name == "pace_needed":
                cols[name] = pace_needed(features)
            elif name == "decision_kind":
                cols[name] = decision_kinds(features, self.features)
            else:
                cols[name] = features[:, self.features.index(name)]
        return self.discretizer.index(cols)

    def acting_q(self) -> np.ndarray:
        """The Q values actions are chosen by: the table, or the mean of the two with ``double``."""
        return self.table.q if self.table_b is None else 0.5 * (self.table.q + self.table_b.q)

    def _tables(self, agents: np.ndarray) -> np.ndarray | int:
        return agents if self.per_agent else 0

    def choose(self, features: np.ndarray, agents: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        if self.table_b is None:
            return self.table.greedy(self._tables(agents), self.states(features), allowed)
        states = self.states(features)
        if states.size <= _learning.SMALL_BATCH:
            return self._choose_double_small(agents, states, allowed)
        t = np.broadcast_to(np.asarray(self._tables(agents)), agents.shape)
        q = self.acting_q()[t, states]
        if allowed is not None:
            q = np.where(allowed, q, -np.inf)
        return np.argmax(q, axis=1).astype(np.int64)

    def _choose_double_small(self, agents: np.ndarray, states: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
        """:meth:`choose` with two tables as Python numbers for a few rows: ``argmax`` (first maximum) of
        ``0.5 * (A + B)`` over the allowed actions, the numpy path's operations on the rows it reads."""
        tables = agents.tolist() if self.per_agent else [0] * states.size
        masks = allowed.tolist() if allowed is not None else None
        return np.array(_greedy_double_rows(self.table.q, self.table_b.q, tables, states.tolist(), masks),
                        dtype=np.int64)

    # ---------------------------------------------------------------------------- the few-row path
    def _state_specs(self) -> list[tuple]:
        """Per discretizer feature, in index order: (how to read it, column(s), edges as Python floats, stride)."""
        specs = self.__dict__.get("_specs")
        if specs is None:
            col = self.features.index
            specs = []
            for name, edges, stride in zip(self.discretizer.names, self.discretizer._edge_lists,
                                           self.discretizer._strides):
                if name == "pace_needed":
                    specs.append((1, tuple(col(c) for c in ("has_job", "has_deadline", "slack_h", "remaining_h")),
                                  edges, stride))
                elif name == "decision_kind":
                    admit = col("decision_admit") if "decision_admit" in self.features else -1
                    specs.append((2, (col("has_job"), admit), edges, stride))
                else:
                    specs.append((0, col(name), edges, stride))
            self._specs = specs
        return specs

    def _state_rows(self, rows: list[list[float]]) -> list[int]:
        """:meth:`states` of float32 feature rows given as Python numbers (``features.tolist()``): the derived
        columns by :func:`pace_needed`'s and :func:`~dcsim.learning.decision_kinds`' operations, the bins by
        ``bisect_right`` (``np.digitize``). A NaN goes to :meth:`states`, which names it."""
        specs = self._state_specs()
        out = []
        for r in rows:
            index = 0
            for how, col, edges, stride in specs:
                if how == 0:
                    v = r[col]
                elif how == 1:
                    v = pace_needed_value(r[col[0]], r[col[1]], r[col[2]], r[col[3]])
                else:
                    v = _BID if r[col[0]] > 0.5 else _IDLE
                    if col[1] >= 0 and r[col[1]] > 0.5:
                        v = _ADMIT
                if v != v:
                    return self.states(np.array(rows, dtype=np.float32)).tolist()
                index += bisect_right(edges, v) * stride
            out.append(index)
        return out

    def _mask_rows(self, kinds: list[int]) -> list[list[bool]] | None:
        """The layout's allowed actions per row of kind ``kinds[i]`` as Python bools (None with the ``bid``
        layout)."""
        if not self.layout.rich:
            return None
        masks = self.__dict__.get("_kind_masks")
        if masks is None:
            masks = self._kind_masks = self.layout._masks.tolist()
        return [masks[k] for k in kinds]

    def _next_kinds(self, rows: list[list[float]]) -> list[int]:
        """:func:`~dcsim.learning.decision_kinds` of feature rows given as Python numbers."""
        has = self.features.index("has_job")
        admit = self.features.index("decision_admit") if "decision_admit" in self.features else -1
        return [_ADMIT if admit >= 0 and r[admit] > 0.5 else (_BID if r[has] > 0.5 else _IDLE) for r in rows]

    def choose_rows(self, rows: list[list[float]], x: np.ndarray, agents: list[int], kind: ActionKind) -> list[int]:
        if not (self._plain("choose", QLearning) and self._plain("states", QLearning)):
            return super().choose_rows(rows, x, agents, kind)
        states = self._state_rows(rows)
        tables = agents if self.per_agent else [0] * len(states)
        masks = self._mask_rows([int(kind)] * len(states))
        if self.table_b is None:
            return _greedy_rows(self.table.q, tables, states, masks)
        return _greedy_double_rows(self.table.q, self.table_b.q, tables, states, masks)

    def learn_rows(self, agents: list[int], obs: np.ndarray, actions: list[int], rewards: list[float],
                   next_obs: np.ndarray, next_rows: list[list[float]], dt_s: list[float], terminal: bool) -> bool:
        """:meth:`learn` as Python numbers: the same states, the same coins from the policy's stream and the same
        updates (:meth:`QTable._update_rows`, :func:`~policies.qtable.double_q_update`'s few-row form)."""
        k = len(agents)
        if not (self._plain("learn", QLearning) and self._plain("states", QLearning)):
            return False
        if self.table_b is None and self.layout.rich:
            return False  # the masked bootstrap: the numpy path
        s, s2 = self._state_rows(obs.tolist()), self._state_rows(next_rows)
        tables = list(agents) if self.per_agent else [0] * k
        terminals = [terminal] * k
        if self.table_b is None:
            if self.table._update_rows(k, tables, s, list(actions), list(rewards), s2, list(dt_s), terminals,
                                       self.consistent, None) is None:
                return False  # nothing changed: the numpy path decides (and names any error)
        else:
            allowed = self._mask_rows(self._next_kinds(next_rows)) if self.layout.rich else None
            rng = self.rng
            first = [rng.random() < 0.5 for _ in range(k)]  # rng.random(n) < 0.5
            pair = (self.table, self.table_b)
            if not _double_q_update_lists(pair, first, tables, s, list(actions), list(rewards), s2, list(dt_s),
                                          terminals, self.consistent, allowed):
                t = np.array(agents, dtype=np.int64) if self.per_agent else 0
                double_q_update(pair, np.array(first, dtype=bool), t, np.array(s, dtype=np.int64),
                                np.array(actions, dtype=np.int64), np.array(rewards, dtype=float),
                                np.array(s2, dtype=np.int64), np.array(dt_s, dtype=float), np.full(k, terminal),
                                consistent=self.consistent,
                                next_allowed=None if allowed is None else np.array(allowed, dtype=bool))
        self.updates += k
        return True

    def learn(self, tr: Transitions) -> None:
        tables, s, s2 = self._tables(tr.agent), self.states(tr.obs), self.states(tr.next_obs)
        allowed = self.next_mask(tr.next_obs)  # None with the bid layout: the max over every action, as before
        if self.table_b is None:
            boot = None
            if allowed is not None:  # the best next action of the next state's own kind
                t = np.broadcast_to(np.asarray(tables), s2.shape)
                boot = np.where(allowed, self.table.q[t, s2], -np.inf).max(axis=1)
                boot = np.where(tr.terminal, 0.0, boot)
            self.table.update(tables, s, tr.action, tr.reward, s2, tr.dt_s, tr.terminal, consistent=self.consistent,
                              bootstrap=boot)
        else:
            double_q_update((self.table, self.table_b), self.rng.random(len(tr)) < 0.5, tables, s, tr.action,
                            tr.reward, s2, tr.dt_s, tr.terminal, consistent=self.consistent, next_allowed=allowed)
        self.updates += len(tr)

    # ---------------------------------------------------------------------------- checkpoints
    def spec(self) -> dict[str, Any]:
        return {"policy": self.name, "features": list(self.features), "n_actions": self.n_actions,
                "actions": self.layout.name, "bins": self.bin_edges(), "bin_set": self.bins, "double": self.double,
                "tables": self.tables, "n_gpus": self.n_gpus, "decisions": self.decisions, "updates": self.updates}

    def save_checkpoint(self, path: Path) -> Path:
        """Write ``qlearning.npz`` (the Q-table; with ``double`` also ``qlearning_b.npz``, the second) and
        ``qlearning.json`` (observation spec) into folder ``path``."""
        path.mkdir(parents=True, exist_ok=True)
        self.table.save(path / "qlearning.npz")
        if self.table_b is not None:
            self.table_b.save(path / "qlearning_b.npz")
        write_spec(path / "qlearning.json", self.spec())
        return path / "qlearning.npz"

    def load_checkpoint(self, path: Path) -> None:
        """Load a checkpoint: the ``.npz``, or the folder holding ``qlearning.npz`` and ``qlearning.json``."""
        npz = path / "qlearning.npz" if path.is_dir() else path
        spec = read_spec(npz.with_suffix(".json"), self.name, self.layout)
        if spec.get("bins") != self.bin_edges():
            raise PolicyError(f"{npz.with_suffix('.json')}: bins {spec.get('bins')} differ from this policy's "
                              f"bins={self.bins!r} {self.bin_edges()} (set policy.params.bins to the checkpoint's "
                              f"{spec.get('bin_set', 'price_slack')!r}, or retrain)")
        table = QTable.load(npz, n_states=self.discretizer.n_states, n_actions=self.n_actions)
        if table.n_tables not in (1, self.n_gpus):
            raise PolicyError(f"{npz}: field 'q' holds {table.n_tables} tables; this scenario has {self.n_gpus} GPUs "
                              "(per-agent tables need the same number of GPUs)")
        self.table = table
        self.double = bool(spec.get("double", False))
        self.table_b = None
        if self.double:  # the second table of double Q-learning: the policy acts on the mean of the two
            b = npz.with_name("qlearning_b.npz")
            if not b.is_file():
                raise PolicyError(f"{b}: not found; {npz.with_suffix('.json')} says the checkpoint is double "
                                  "Q-learning, whose second table this file holds")
            self.table_b = QTable.load(b, n_states=self.discretizer.n_states, n_actions=self.n_actions,
                                       n_tables=table.n_tables)
        self.per_agent = table.n_tables > 1
        self.tables = "per_agent" if self.per_agent else "shared"
        self.decisions = int(spec.get("decisions", 0))
        self.updates = int(spec.get("updates", 0))

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"alpha": self.alpha, "alpha_schedule": self.alpha_schedule,
                                       "tables": self.tables, "states": self.discretizer.n_states,
                                       "consistent": self.consistent, "bins": self.bins, "double": self.double}
