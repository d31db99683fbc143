"""Tabular semi-Markov Q-learning bidders (numpy only; no torch needed).

Each agent's observation is binned into one of 144 states (see :data:`BINS`; ``docs/learning.md`` has the
table). At every decision the agent takes the ε-greedy :class:`~dcsim.learning.BidAction`; every closed
transition updates ``Q[s, a] += α (r + γ^(Δt/τ) max Q[s′] − Q[s, a])``, vectorised over the batch of agents
that decided at that instant.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dcsim.errors import PolicyError
from dcsim.learning import FEATURES, Transitions
from policies.learning import N_ACTIONS, LearningPolicy, read_spec, write_spec
from policies.qtable import Discretizer, QTable

#: Bin edges over (scaled) feature columns; see :func:`dcsim.learning.observation_features` for the scales.
BINS: dict[str, list[float]] = {
    "slack_h": [0.0, 0.25, 1.0],  # scaled by 1/4: late | 0-1 h | 1-4 h | >= 4 h or no deadline
    "price_log_ratio": [0.05, 0.5],  # ln(p/p0)/2: p <= 1.105 p0 | <= e p0 | more
    "renewable_fraction": [1 / 3, 2 / 3],
    "value_over_cost": [0.0],  # job value share vs its remaining energy cost at full power now: below | above
    "wallet_rounds": [float(np.log(2.0) / 5.0)],  # wallet below | above one 5-minute round at full power
}
_COLUMNS = {name: FEATURES.index(name) for name in BINS}


class QLearning(LearningPolicy):
    """Tabular semi-Markov Q-learning over binned observations.

    Args:
        alpha: Learning rate (``alpha_schedule="constant"``) in (0, 1].
        alpha_schedule: ``"constant"`` or ``"visits"`` (the n-th update of an entry uses n^-exponent).
        alpha_decay_exponent: Exponent of the ``"visits"`` schedule, in (0.5, 1].
        tables: ``"shared"`` (one table pooled by all agents) or ``"per_agent"``.
        initial_q: Starting value of every entry.
        consistent: Use the consistent Bellman operator: a transition back to its own state bootstraps from the
            action it repeats, not from the state's best action (see :meth:`policies.qtable.QTable.update`).
        **kwargs: See :class:`~policies.learning.LearningPolicy` (gamma, tau_s, ε schedule, learn, checkpoint...).
    """

    name = "qlearning"

    def __init__(self, alpha: float = 0.1, alpha_schedule: str = "constant", alpha_decay_exponent: float = 1.0,
                 tables: str = "shared", initial_q: float = 0.0, consistent: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        if tables not in ("shared", "per_agent"):
            raise PolicyError(f"policy 'qlearning': tables={tables!r}; allowed: shared, per_agent")
        self.alpha, self.alpha_schedule, self.alpha_decay_exponent = alpha, alpha_schedule, alpha_decay_exponent
        self.tables, self.initial_q = tables, initial_q
        self.consistent = bool(consistent)
        self.per_agent = tables == "per_agent"
        self.discretizer = Discretizer({k: np.asarray(v) for k, v in BINS.items()})
        self.table: QTable | None = None

    def build(self, n_gpus: int) -> None:
        try:
            self.table = QTable(self.discretizer.n_states, N_ACTIONS, n_gpus if self.per_agent else 1, alpha=self.alpha,
                                gamma=self.gamma, tau_s=self.tau_s, initial_q=self.initial_q,
                                alpha_schedule=self.alpha_schedule, alpha_decay_exponent=self.alpha_decay_exponent)
        except ValueError as exc:
            raise PolicyError(f"policy 'qlearning': {exc}") from None

    def states(self, features: np.ndarray) -> np.ndarray:
        return self.discretizer.index({k: features[:, c] for k, c in _COLUMNS.items()})

    def _tables(self, agents: np.ndarray) -> np.ndarray | int:
        return agents if self.per_agent else 0

    def choose(self, features: np.ndarray, agents: np.ndarray) -> np.ndarray:
        return self.table.greedy(self._tables(agents), self.states(features))

    def learn(self, tr: Transitions) -> None:
        self.table.update(self._tables(tr.agent), self.states(tr.obs), tr.action, tr.reward, self.states(tr.next_obs),
                          tr.dt_s, tr.terminal, consistent=self.consistent)
        self.updates += len(tr)

    # ---------------------------------------------------------------------------- checkpoints
    def spec(self) -> dict[str, Any]:
        return {"policy": self.name, "features": list(FEATURES), "n_actions": N_ACTIONS, "bins": BINS,
                "tables": self.tables, "n_gpus": self.n_gpus, "decisions": self.decisions, "updates": self.updates}

    def save_checkpoint(self, path: Path) -> Path:
        """Write ``qlearning.npz`` (the Q-table) and ``qlearning.json`` (observation spec) into folder ``path``."""
        path.mkdir(parents=True, exist_ok=True)
        self.table.save(path / "qlearning.npz")
        write_spec(path / "qlearning.json", self.spec())
        return path / "qlearning.npz"

    def load_checkpoint(self, path: Path) -> None:
        """Load a checkpoint: the ``.npz``, or the folder holding ``qlearning.npz`` and ``qlearning.json``."""
        npz = path / "qlearning.npz" if path.is_dir() else path
        spec = read_spec(npz.with_suffix(".json"), self.name)
        if spec.get("bins") != BINS:
            raise PolicyError(f"{npz.with_suffix('.json')}: bins {spec.get('bins')} differ from this dcsim's {BINS}")
        table = QTable.load(npz, n_states=self.discretizer.n_states, n_actions=N_ACTIONS)
        if table.n_tables not in (1, self.n_gpus):
            raise PolicyError(f"{npz}: field 'q' holds {table.n_tables} tables; this scenario has {self.n_gpus} GPUs "
                              "(per-agent tables need the same number of GPUs)")
        self.table = table
        self.per_agent = table.n_tables > 1
        self.tables = "per_agent" if self.per_agent else "shared"
        self.decisions = int(spec.get("decisions", 0))
        self.updates = int(spec.get("updates", 0))

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"alpha": self.alpha, "alpha_schedule": self.alpha_schedule,
                                       "tables": self.tables, "states": self.discretizer.n_states,
                                       "consistent": self.consistent}
