"""Vectorised tabular semi-Markov Q-learning: Q tables, epsilon-greedy acting, and observation binning.

Decisions in dcsim happen at irregular instants, so a transition that took ``dt_s`` seconds is
discounted by ``gamma ** (dt_s / tau_s)``: ``gamma`` is the discount per ``tau_s`` seconds, not per
decision. Everything here works on whole batches (one row per deciding agent) with numpy only, so
this module imports without torch. Randomness comes only from a ``numpy.random.Generator`` that
the caller passes in.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dcsim import learning as _learning
from dcsim.atomic import replacing
from dcsim.errors import PolicyError

ALPHA_SCHEDULES = ("constant", "visits")

EPSILON_KINDS = ("exponential", "linear")


@dataclass(frozen=True)
class EpsilonSchedule:
    """Epsilon-greedy exploration rate as a function of the number of decisions made so far.

    Attributes:
        start: Epsilon before any decision, in [0, 1].
        end: Epsilon that the schedule tends to (exponential) or reaches (linear), in [0, 1].
        decay_decisions: Decisions over which epsilon decays: the e-folding count for
            ``"exponential"``, the count at which ``end`` is reached for ``"linear"``. Positive.
        kind: ``"exponential"``: ``end + (start - end) * exp(-d / decay_decisions)``;
            ``"linear"``: ``start + (end - start) * min(d / decay_decisions, 1)``.
    """

    start: float = 1.0
    end: float = 0.05
    decay_decisions: float = 50_000.0
    kind: str = "exponential"

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"EpsilonSchedule.{name}: got {value!r}; expected a number in [0, 1]")
        if not self.decay_decisions > 0 or not math.isfinite(self.decay_decisions):
            raise ValueError(f"EpsilonSchedule.decay_decisions: got {self.decay_decisions!r}; expected a positive finite number")
        if self.kind not in EPSILON_KINDS:
            raise ValueError(f"EpsilonSchedule.kind: got {self.kind!r}; expected one of {EPSILON_KINDS}")

    def value(self, decisions: int | np.ndarray) -> float | np.ndarray:
        """Epsilon after ``decisions`` decisions (a scalar gives a float, an array an array)."""
        if type(decisions) is int and decisions >= 0:  # the learners' count: the same operations on one float64
            d = np.float64(decisions)
            if self.kind == "exponential":
                return float(self.end + (self.start - self.end) * np.exp(-d / self.decay_decisions))
            return float(self.start + (self.end - self.start) * min(d / self.decay_decisions, 1.0))
        d = np.asarray(decisions, dtype=float)
        if np.any(d < 0):
            raise ValueError(f"EpsilonSchedule.value: decisions must be >= 0, got {decisions!r}")
        if self.kind == "exponential":
            eps = self.end + (self.start - self.end) * np.exp(-d / self.decay_decisions)
        else:
            eps = self.start + (self.end - self.start) * np.minimum(d / self.decay_decisions, 1.0)
        return float(eps) if eps.ndim == 0 else eps


class QTable:
    """One or more tabular Q functions with a vectorised semi-Markov Q-learning update.

    ``n_tables=1`` gives one table shared (pooled) by every agent; ``n_tables=n_agents`` gives each
    agent its own. Every method takes a ``table`` argument: an int, or an int array with one entry
    per row, naming the table that row reads and writes.

    Args:
        n_states: Number of discrete states (e.g. ``Discretizer.n_states``).
        n_actions: Number of actions.
        n_tables: Number of independent tables.
        alpha: Learning rate for ``alpha_schedule="constant"``, in (0, 1]. Unused by ``"visits"``.
        gamma: Discount factor per ``tau_s`` seconds, in [0, 1].
        tau_s: Time unit of ``gamma`` in seconds: a transition of ``dt_s`` seconds is discounted by
            ``gamma ** (dt_s / tau_s)``.
        initial_q: Value every entry starts at.
        alpha_schedule: ``"constant"``: every update uses ``alpha``. ``"visits"``: the n-th update
            of entry ``(t, s, a)`` uses ``n ** -alpha_decay_exponent``; with the default exponent 1
            this makes each entry the running mean of its targets, and for exponents in (0.5, 1]
            the rates satisfy the Robbins-Monro conditions, under which tabular Q-learning
            converges to the optimal Q when every pair is visited infinitely often. Exponents
            below 1 forget early (biased) targets faster and usually converge much sooner when
            the effective discount is close to 1.
        alpha_decay_exponent: The exponent of the ``"visits"`` schedule, in (0.5, 1].

    Attributes:
        q: Float64 array ``(n_tables, n_states, n_actions)``.
        visits: Int64 array of the same shape: updates applied to each entry.
    """

    def __init__(
        self,
        n_states: int,
        n_actions: int,
        n_tables: int = 1,
        alpha: float = 0.1,
        gamma: float = 0.99,
        tau_s: float = 3600.0,
        initial_q: float = 0.0,
        alpha_schedule: str = "constant",
        alpha_decay_exponent: float = 1.0,
    ):
        for name, value in (("n_states", n_states), ("n_actions", n_actions), ("n_tables", n_tables)):
            if int(value) != value or value < 1:
                raise ValueError(f"QTable.{name}: got {value!r}; expected a positive integer")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"QTable.alpha: got {alpha!r}; expected a number in (0, 1]")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"QTable.gamma: got {gamma!r}; expected a number in [0, 1]")
        if not tau_s > 0 or not math.isfinite(tau_s):
            raise ValueError(f"QTable.tau_s: got {tau_s!r}; expected a positive number of seconds")
        if not math.isfinite(initial_q):
            raise ValueError(f"QTable.initial_q: got {initial_q!r}; expected a finite number")
        if alpha_schedule not in ALPHA_SCHEDULES:
            raise ValueError(f"QTable.alpha_schedule: got {alpha_schedule!r}; expected one of {ALPHA_SCHEDULES}")
        if not 0.5 < alpha_decay_exponent <= 1.0:
            raise ValueError(f"QTable.alpha_decay_exponent: got {alpha_decay_exponent!r}; expected a number in (0.5, 1]")
        self.n_states, self.n_actions, self.n_tables = int(n_states), int(n_actions), int(n_tables)
        self.alpha, self.gamma, self.tau_s = float(alpha), float(gamma), float(tau_s)
        self.initial_q = float(initial_q)
        self.alpha_schedule = alpha_schedule
        self.alpha_decay_exponent = float(alpha_decay_exponent)
        shape = (self.n_tables, self.n_states, self.n_actions)
        self.q = np.full(shape, self.initial_q, dtype=np.float64)
        self.visits = np.zeros(shape, dtype=np.int64)

    # ----------------------------------------------------------------------------------- acting
    def greedy(self, table: int | np.ndarray, state: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """Greedy actions, ties broken by the lowest action index.

        Args:
            table: Table per row (int or ``(n,)`` ints).
            state: ``(n,)`` state indices.
            allowed: Optional ``(n, n_actions)`` bool mask; only allowed actions are chosen.

        Returns:
            ``(n,)`` int64 action indices.
        """
        table, state = self._rows(table, state)
        values = self.q[table, state]
        if allowed is not None:
            allowed = self._mask(allowed, state.size)
            values = np.where(allowed, values, -np.inf)
        return np.argmax(values, axis=1).astype(np.int64)

    def act(
        self,
        table: int | np.ndarray,
        state: np.ndarray,
        epsilon: float | np.ndarray,
        rng: np.random.Generator,
        allowed: np.ndarray | None = None,
    ) -> np.ndarray:
        """Epsilon-greedy actions: with probability ``epsilon`` a uniformly random (allowed) action.

        Exactly two uniform draws per row are taken from ``rng`` whatever the Q values are, so two
        policies that differ only in their tables consume the random stream identically.

        Args:
            table: Table per row (int or ``(n,)`` ints).
            state: ``(n,)`` state indices.
            epsilon: Exploration probability, scalar or ``(n,)``, in [0, 1].
            rng: The only source of randomness.
            allowed: Optional ``(n, n_actions)`` bool mask; every row needs an allowed action.

        Returns:
            ``(n,)`` int64 action indices.
        """
        table, state = self._rows(table, state)
        n = state.size
        eps = np.broadcast_to(np.asarray(epsilon, dtype=float), (n,))
        if np.any((eps < 0) | (eps > 1)) or not np.all(np.isfinite(eps)):
            raise ValueError(f"QTable.act: epsilon must lie in [0, 1], got {epsilon!r}")
        explore = rng.random(n) < eps
        u = rng.random(n)
        greedy = self.greedy(table, state, allowed)
        if allowed is None:
            random_action = np.minimum((u * self.n_actions).astype(np.int64), self.n_actions - 1)
        else:
            allowed = self._mask(allowed, n)
            count = allowed.sum(axis=1)
            # The k-th allowed action (k uniform over the allowed count), found via the running count.
            k = np.minimum((u * count).astype(np.int64), count - 1)
            random_action = np.argmax(np.cumsum(allowed, axis=1) > k[:, None], axis=1).astype(np.int64)
        return np.where(explore, random_action, greedy)

    # --------------------------------------------------------------------------------- learning
    def update(
        self,
        table: int | np.ndarray,
        state: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_state: np.ndarray,
        dt_s: np.ndarray,
        terminal: np.ndarray | bool = False,
        consistent: bool = False,
        bootstrap: np.ndarray | None = None,
    ) -> np.ndarray:
        """Apply one batch of semi-Markov Q-learning updates in place.

        For each row, with target ``y = r + gamma ** (dt_s / tau_s) * (1 - terminal) * max_a' Q[t, s', a']``:
        ``Q[t, s, a] <- Q[t, s, a] + alpha_n * (y - Q[t, s, a])``.

        Batch semantics: the rows are applied as if one at a time in batch order, except that every
        bootstrap term ``max_a' Q[t, s', a']`` is read from the table as it stood before the batch
        (the agents in a batch decided at the same instant, so none saw another's update). So a
        batch equals applying its rows one by one whenever no row bootstraps from a ``(t, s')``
        that an earlier row of the batch updates: bit for bit if its ``(t, s, a)`` are distinct,
        up to rounding otherwise. Rows that repeat an entry ``(t, s, a)`` thus compose like
        sequential updates toward their fixed targets, each with its own learning rate; the result
        is deterministic and never depends on rows for other entries. With ``"visits"`` and
        exponent 1 an entry is the running mean of all its targets so far, whatever their order;
        with ``"constant"`` later rows weigh more: ``Q <- (1-alpha)^k Q + sum_j alpha (1-alpha)^(k-j) y_j``.

        Args:
            table: Table per row (int or ``(n,)`` ints).
            state: ``(n,)`` states where the actions were taken.
            action: ``(n,)`` actions taken.
            reward: ``(n,)`` reward for the whole holding time, already discounted to the decision
                instant by the caller if it accrued over time (e.g. a reward rate ``c`` per second
                gives ``c * tau_s * (1 - gamma ** (dt_s / tau_s)) / -log(gamma)``).
            next_state: ``(n,)`` states at the next decision; ignored (may be any int) where terminal.
            dt_s: ``(n,)`` holding times in seconds, >= 0.
            terminal: ``(n,)`` bools (or one bool): the episode ended, so nothing is bootstrapped.
            consistent: Use the consistent Bellman operator (Bellemare et al., "Increasing the Action Gap",
                AAAI 2016): a row whose next state is its own state bootstraps from ``Q[t, s, a]`` (repeating
                the action) instead of ``max_a' Q[t, s, a']``. Optimal actions stay optimal; an action that
                leaves the state unchanged (waiting) can no longer borrow the value of the best action in
                that state, which widens the action gaps that state aliasing and noise otherwise swamp.

            bootstrap: Optional ``(n,)`` values of the next states to use instead of ``max_a' Q[t, s', a']``
                (double Q-learning passes the other table's value of this table's greedy next action).

        Returns:
            ``(n,)`` TD errors ``y - Q[t, s, a]`` measured against the table before the batch.
        """
        small = self._update_small(table, state, action, reward, next_state, dt_s, terminal, consistent, bootstrap)
        if small is not None:
            return small
        table, state = self._rows(table, state)
        n = state.size
        action = self._index("action", action, n, self.n_actions)
        terminal = np.broadcast_to(np.asarray(terminal, dtype=bool), (n,))
        next_state = np.asarray(next_state)
        if next_state.shape == (n,):
            next_state = np.where(terminal, 0, next_state).astype(next_state.dtype)
        next_state = self._index("next_state", next_state, n, self.n_states)
        reward = np.broadcast_to(np.asarray(reward, dtype=float), (n,))
        dt_s = np.broadcast_to(np.asarray(dt_s, dtype=float), (n,))
        if not np.all(np.isfinite(reward)):
            raise ValueError("QTable.update: reward must be finite")
        if not np.all(np.isfinite(dt_s)) or np.any(dt_s < 0):
            raise ValueError("QTable.update: dt_s must be finite and >= 0 seconds")

        discount = np.power(self.gamma, dt_s / self.tau_s)
        if bootstrap is not None:
            best_next = np.broadcast_to(np.asarray(bootstrap, dtype=float), (n,))
            if not np.all(np.isfinite(best_next[~terminal])):
                raise ValueError("QTable.update: bootstrap must be finite where not terminal")
        else:
            best_next = self.q[table, next_state].max(axis=1)
        if consistent:
            best_next = np.where(next_state == state, self.q[table, state, action], best_next)
        boot = np.where(terminal, 0.0, best_next)
        target = reward + discount * boot

        flat = (table * self.n_states + state) * self.n_actions + action
        q_flat = self.q.reshape(-1)
        visits_flat = self.visits.reshape(-1)
        td_error = target - q_flat[flat]

        # Rank of each row among the rows with the same entry, in batch order (stable sort).
        order = np.argsort(flat, kind="stable")
        sorted_flat = flat[order]
        starts = np.flatnonzero(np.r_[True, sorted_flat[1:] != sorted_flat[:-1]])
        sizes = np.diff(np.r_[starts, n])
        group = np.repeat(np.arange(starts.size), sizes)
        rank = np.arange(n) - starts[group] + 1  # 1-based
        rate = self._rates(visits_flat[sorted_flat] + rank)
        # Sequential updates toward fixed targets y_j telescope to Q + sum_j w_j (y_j - Q) with
        # w_j = rate_j * prod_{i>j} (1 - rate_i). The products are taken per group, one
        # vectorised pass per distinct group size, so an entry's result never depends on rows of
        # other entries (not even in rounding) and a group of one gets exactly Q + rate * td.
        weight_sorted = rate.copy()
        for size in np.unique(sizes[sizes > 1]):
            cells = starts[sizes == size][:, None] + np.arange(size)
            keep = 1.0 - rate[cells]
            later = np.ones_like(keep)
            later[:, :-1] = np.cumprod(keep[:, :0:-1], axis=1)[:, ::-1]
            weight_sorted[cells] = rate[cells] * later
        weight = np.empty(n)
        weight[order] = weight_sorted
        np.add.at(q_flat, flat, weight * td_error)
        np.add.at(visits_flat, flat, 1)
        return td_error

    def _update_small(self, table: Any, state: Any, action: Any, reward: Any, next_state: Any, dt_s: Any,
                      terminal: Any, consistent: bool, bootstrap: Any) -> np.ndarray | None:
        """:meth:`update` as Python numbers for a batch of at most :data:`dcsim.learning.SMALL_BATCH` rows with
        distinct entries ``(t, s, a)``; None (the caller takes the numpy path) for anything else, invalid input
        included, so errors stay the numpy path's. Every float64 operation is the numpy path's, in its order;
        the two powers (the discount and the visits rate) are taken by the same numpy calls on arrays of the same
        length and order."""
        rows = _small_rows(state, table, action, next_state, reward, dt_s, terminal, bootstrap)
        if rows is None:
            return None
        n, state, table, action, next_state, reward, dt_s, terminal, bootstrap = rows
        return self._update_rows(n, table, state, action, reward, next_state, dt_s, terminal, consistent, bootstrap)

    def _update_rows(self, n: int, table: list, state: list, action: list, reward: list, next_state: list,
                     dt_s: list, terminal: list, consistent: bool, bootstrap: list | None) -> np.ndarray | None:
        """The rows of :meth:`_update_small` as Python lists (None, nothing changed, where the numpy path must
        run). ``next_state`` is set to 0 where terminal, as the numpy path does."""
        n_states, n_actions, n_tables = self.n_states, self.n_actions, self.n_tables
        isfinite = math.isfinite
        flat = []
        for i in range(n):
            t, s, a = table[i], state[i], action[i]
            term = terminal[i]
            if term is True or term == 1:
                next_state[i] = 0
            s2 = next_state[i]
            if not (type(t) is int and type(s) is int and type(a) is int and type(s2) is int and 0 <= t < n_tables
                    and 0 <= s < n_states and 0 <= a < n_actions and 0 <= s2 < n_states):
                return None
            dt = dt_s[i]
            if not (isfinite(reward[i]) and isfinite(dt) and dt >= 0):
                return None
            if bootstrap is not None and not term and not isfinite(bootstrap[i]):
                return None
            flat.append((t * n_states + s) * n_actions + a)
        if n > 1 and len(set(flat)) != n:
            return None  # an entry updated twice in one batch: the numpy path composes the rates
        q_flat = self.q.reshape(-1)
        if bootstrap is None:
            best_next = []
            for i in range(n):
                start = (table[i] * n_states + next_state[i]) * n_actions
                row = q_flat[start:start + n_actions].tolist()
                best = max(row)
                if best == 0.0 and any(v == 0.0 and math.copysign(1.0, v) < 0 for v in row):
                    return None  # which zero numpy's max returns is its own business
                best_next.append(best)
        else:
            best_next = bootstrap
        visits_flat = self.visits.reshape(-1)
        # the numpy path's np.power(gamma, dt_s / tau_s) over the batch (the division is exact either way)
        tau_s = self.tau_s
        discount = np.power(self.gamma, np.array([d / tau_s for d in dt_s], dtype=float)).tolist()
        q_now = [q_flat.item(k) for k in flat]
        td_error = []
        for i in range(n):
            boot = best_next[i]
            if consistent and next_state[i] == state[i]:
                boot = q_now[i]
            if terminal[i]:
                boot = 0.0
            td_error.append(reward[i] + discount[i] * boot - q_now[i])
        # the numpy path takes the rates in the order of the stably sorted entries: so do we
        if n == 1:
            rate = self._rates_of([visits_flat.item(flat[0]) + 1])
        else:
            order = sorted(range(n), key=flat.__getitem__)
            rate_sorted = self._rates_of([visits_flat.item(flat[i]) + 1 for i in order])
            rate = [0.0] * n
            for k, i in enumerate(order):
                rate[i] = rate_sorted[k]
        for i in range(n):
            k = flat[i]
            q_flat[k] = q_now[i] + rate[i] * td_error[i]
            visits_flat[k] += 1
        return np.array(td_error, dtype=float)

    def _rates_of(self, visit_number: list[int]) -> list[float]:
        """:meth:`_rates` of Python ints, as Python floats (the same numpy power on an array of the same length)."""
        if self.alpha_schedule == "constant":
            return [self.alpha] * len(visit_number)
        return np.power(np.array(visit_number, dtype=float), -self.alpha_decay_exponent).tolist()

    def _rates(self, visit_number: np.ndarray) -> np.ndarray:
        if self.alpha_schedule == "constant":
            return np.full(visit_number.shape, self.alpha)
        return np.power(visit_number.astype(float), -self.alpha_decay_exponent)

    # ----------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays that fully describe the table (copies), for ``from_state_dict`` or ``np.savez``."""
        return {
            "q": self.q.copy(),
            "visits": self.visits.copy(),
            "alpha": np.array(self.alpha),
            "gamma": np.array(self.gamma),
            "tau_s": np.array(self.tau_s),
            "initial_q": np.array(self.initial_q),
            "alpha_schedule": np.array(self.alpha_schedule),
            "alpha_decay_exponent": np.array(self.alpha_decay_exponent),
        }

    @classmethod
    def from_state_dict(cls, d: dict[str, Any], source: str | Path | None = None) -> QTable:
        """Rebuild a table from ``state_dict()`` output.

        Args:
            d: Mapping with the keys of ``state_dict()``.
            source: File the mapping came from, named in error messages.

        Raises:
            PolicyError: A key is missing or unknown, or a value has the wrong shape or kind.
        """
        where = f"{source}: " if source is not None else "Q-table state: "
        expected = set(_STATE_KEYS)
        missing, unknown = sorted(expected - set(d)), sorted(set(d) - expected)
        if missing:
            raise PolicyError(f"{where}field {missing[0]!r}: missing; expected keys {sorted(expected)}")
        if unknown:
            raise PolicyError(f"{where}field {unknown[0]!r}: unknown key; expected keys {sorted(expected)}")
        q = np.asarray(d["q"])
        if q.ndim != 3 or q.dtype.kind != "f" or 0 in q.shape:
            raise PolicyError(f"{where}field 'q': got {q.dtype} array of shape {q.shape}; "
                              "expected a float array of shape (n_tables, n_states, n_actions)")
        visits = np.asarray(d["visits"])
        if visits.shape != q.shape or visits.dtype.kind not in "iu":
            raise PolicyError(f"{where}field 'visits': got {visits.dtype} array of shape {visits.shape}; "
                              f"expected an integer array of shape {q.shape} (the shape of 'q')")
        scalars = {}
        for key in _STATE_KEYS[2:]:
            value = np.asarray(d[key])
            if value.ndim != 0:
                raise PolicyError(f"{where}field {key!r}: got an array of shape {value.shape}; expected a scalar")
            scalars[key] = value.item()
        try:
            out = cls(q.shape[1], q.shape[2], q.shape[0], alpha=float(scalars["alpha"]), gamma=float(scalars["gamma"]),
                      tau_s=float(scalars["tau_s"]), initial_q=float(scalars["initial_q"]),
                      alpha_schedule=str(scalars["alpha_schedule"]),
                      alpha_decay_exponent=float(scalars["alpha_decay_exponent"]))
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"{where}{exc}") from None
        out.q[...] = q
        out.visits[...] = visits
        return out

    def save(self, path: str | Path) -> Path:
        """Write ``state_dict()`` to ``path`` as an uncompressed ``.npz`` (exactly that name)."""
        path = Path(path)
        with replacing(path) as tmp, open(tmp, "wb") as fh:  # a kill mid-write leaves the previous table
            np.savez(fh, **self.state_dict())
        return path

    @classmethod
    def load(cls, path: str | Path, *, n_states: int | None = None, n_actions: int | None = None,
             n_tables: int | None = None) -> QTable:
        """Read a table written by ``save``, optionally checking its shape.

        Args:
            path: The ``.npz`` file.
            n_states, n_actions, n_tables: If given, the loaded table must have this size.

        Raises:
            PolicyError: The file is missing or unreadable, or a field is missing, malformed or of
                another size than asked for; the message names the file, the field, the value and
                what was expected.
        """
        path = Path(path)
        if not path.is_file():
            raise PolicyError(f"{path}: file not found; expected a Q table written by QTable.save (.npz)")
        try:
            with np.load(path, allow_pickle=False) as npz:
                d = {key: npz[key] for key in npz.files}
        except Exception as exc:  # numpy raises several kinds for a non-npz file
            raise PolicyError(f"{path}: cannot be read as a .npz Q table ({exc})") from None
        out = cls.from_state_dict(d, source=path)
        for name, want in (("n_tables", n_tables), ("n_states", n_states), ("n_actions", n_actions)):
            if want is not None and getattr(out, name) != want:
                raise PolicyError(f"{path}: field 'q': got shape {out.q.shape} ({name}={getattr(out, name)}); "
                                  f"expected {name}={want}")
        return out

    # --------------------------------------------------------------------------------- helpers
    def _rows(self, table: int | np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        state = np.asarray(state)
        if state.ndim != 1:
            raise ValueError(f"QTable: state must be a 1-D array of indices, got shape {state.shape}")
        n = state.size
        return self._index("table", np.broadcast_to(np.asarray(table), (n,)), n, self.n_tables), \
            self._index("state", state, n, self.n_states)

    @staticmethod
    def _index(name: str, values: Any, n: int, size: int) -> np.ndarray:
        values = np.asarray(values)
        if values.shape != (n,):
            raise ValueError(f"QTable: {name} must have shape ({n},), got {values.shape}")
        if n and values.dtype.kind not in "iub":
            raise ValueError(f"QTable: {name} must hold integers, got dtype {values.dtype}")
        values = values.astype(np.int64, copy=False)
        if n and (values.min() < 0 or values.max() >= size):
            raise ValueError(f"QTable: {name} must lie in [0, {size}), got values in [{values.min()}, {values.max()}]")
        return values

    def _mask(self, allowed: np.ndarray, n: int) -> np.ndarray:
        allowed = np.asarray(allowed)
        if allowed.shape != (n, self.n_actions) or allowed.dtype != bool:
            raise ValueError(f"QTable: allowed must be a bool array of shape ({n}, {self.n_actions}), "
                             f"got {allowed.dtype} {allowed.shape}")
        if n and not allowed.any(axis=1).all():
            raise ValueError(f"QTable: allowed has rows with no allowed action: {np.flatnonzero(~allowed.any(axis=1))[:5]}")
        return allowed


def _small_ints(values: Any, n: int) -> list | None:
    """``(n,)`` integer array (or, for a table, one integer) as a list of Python ints; None otherwise."""
    if type(values) is np.ndarray:
        if values.dtype.kind not in "iu":
            return None
        if values.shape == (n,):
            return values.tolist()
        return [int(values)] * n if values.ndim == 0 else None
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        return [int(values)] * n
    return None


def _small_floats(values: Any, n: int) -> list | None:
    """``(n,)`` array or a scalar as a list of n Python floats (float64, as ``np.asarray(..., dtype=float)``)."""
    if type(values) is np.ndarray:
        if values.dtype.kind not in "fiu":
            return None
        if values.shape == (n,):
            return [float(v) for v in values.tolist()]
        return [float(values)] * n if values.ndim == 0 else None
    if isinstance(values, (int, float, np.integer, np.floating)) and not isinstance(values, bool):
        return [float(values)] * n
    return None


def _small_rows(state: Any, table: Any, action: Any, next_state: Any, reward: Any, dt_s: Any, terminal: Any,
                bootstrap: Any) -> tuple | None:
    """The arguments of :meth:`QTable.update` as Python lists for a small batch (None: take the numpy path)."""
    if type(state) is not np.ndarray or state.ndim != 1 or state.dtype.kind not in "iu":
        return None
    n = state.shape[0]
    if n == 0 or n > _learning.SMALL_BATCH:
        return None
    if type(terminal) is np.ndarray:
        if terminal.dtype != bool or terminal.shape not in ((n,), ()):
            return None
        terminal = terminal.tolist() if terminal.ndim else [bool(terminal)] * n
    elif isinstance(terminal, (bool, np.bool_)):
        terminal = [bool(terminal)] * n
    else:
        return None
    cols = (_small_ints(table, n), _small_ints(action, n), _small_ints(next_state, n) if type(next_state) is
            np.ndarray and next_state.shape == (n,) else None, _small_floats(reward, n), _small_floats(dt_s, n))
    if any(c is None for c in cols):
        return None
    if bootstrap is not None:
        bootstrap = _small_floats(bootstrap, n)
        if bootstrap is None:
            return None
    table, action, next_state, reward, dt_s = cols
    return n, state.tolist(), table, action, next_state, reward, dt_s, terminal, bootstrap


def double_q_update(tables: tuple[QTable, QTable], first: np.ndarray, table: int | np.ndarray, state: np.ndarray,
                    action: np.ndarray, reward: np.ndarray, next_state: np.ndarray, dt_s: np.ndarray,
                    terminal: np.ndarray | bool = False, consistent: bool = False,
                    next_allowed: np.ndarray | None = None) -> None:
    """One batch of double Q-learning updates (van Hasselt, "Double Q-learning", NIPS 2010), semi-Markov.

    Rows where ``first`` is True update ``tables[0]`` toward ``r + γ^(Δt/τ)·Q_B(s', argmax_a Q_A(s', a))``; the
    others update ``tables[1]`` with the roles swapped. The table that picks the next action is not the one that
    values it, so the noise in one does not inflate the other's target: single Q-learning's ``max`` over noisy
    estimates over-estimates (E[max] >= max E), and through a self-loop (an action such as PAUSE that returns to
    its own state) that bias feeds back into itself.

    Args:
        tables: The two tables ``(A, B)``, of the same shape.
        first: ``(n,)`` bools: the rows that update ``A`` (a fair coin per row from the caller's stream).
        table, state, action, reward, next_state, dt_s, terminal, consistent: As :meth:`QTable.update`.
        next_allowed: Optional ``(n, n_actions)`` bool mask of the actions allowed in each next state: the
            greedy next action is picked among them (learners whose decision kinds have their own actions).
    """
    a, b = tables
    if _double_q_update_small(tables, first, table, state, action, reward, next_state, dt_s, terminal, consistent,
                              next_allowed):
        return
    n = np.asarray(state).size
    first = np.broadcast_to(np.asarray(first, dtype=bool), (n,))
    t = np.broadcast_to(np.asarray(table), (n,))
    terminal = np.broadcast_to(np.asarray(terminal, dtype=bool), (n,))
    cols = [np.broadcast_to(np.asarray(v), (n,)) for v in (state, action, reward, next_state, dt_s)]
    state, action, reward, next_state, dt_s = cols
    next_state = np.where(terminal, 0, next_state)
    for own, other, rows in ((a, b, first), (b, a, ~first)):
        if rows.any():
            best = own.greedy(t[rows], next_state[rows], None if next_allowed is None else next_allowed[rows])
            own.update(t[rows], state[rows], action[rows], reward[rows], next_state[rows], dt_s[rows], terminal[rows],
                       consistent=consistent, bootstrap=other.q[t[rows], next_state[rows], best])


def _greedy_small(q_flat: np.ndarray, start: int, n_actions: int, allowed: list | None) -> int | None:
    """``np.argmax`` of one Q row (``-inf`` where not allowed): the first maximum; None if nothing is allowed."""
    row = q_flat[start:start + n_actions].tolist()
    best, best_value = -1, 0.0
    for k, v in enumerate(row):
        if allowed is not None and not allowed[k]:
            continue
        if best < 0 or v > best_value:
            best, best_value = k, v
    return best if best >= 0 else None


def _double_q_update_small(tables: tuple[QTable, QTable], first: Any, table: Any, state: Any, action: Any,
                           reward: Any, next_state: Any, dt_s: Any, terminal: Any, consistent: bool,
                           next_allowed: np.ndarray | None) -> bool:
    """:func:`double_q_update` as Python numbers for a small batch; False (nothing done) where the numpy path
    must run. Each table's half is the numpy path's, in its order (A's rows first, then B's against the updated
    A); a half that :meth:`QTable._update_rows` declines runs through :meth:`QTable.update`."""
    a, b = tables
    rows = _small_rows(state, table, action, next_state, reward, dt_s, terminal, None)
    if rows is None or a.q.shape != b.q.shape:
        return False
    n, state_l, table_l, action_l, next_l, reward_l, dt_l, terminal_l, _ = rows
    if type(first) is not np.ndarray or first.dtype != bool or first.shape != (n,):
        return False
    if next_allowed is not None:
        if type(next_allowed) is not np.ndarray or next_allowed.dtype != bool or next_allowed.shape != (n, a.n_actions):
            return False
        allowed_l = next_allowed.tolist()
    else:
        allowed_l = None
    return _double_q_update_lists(tables, first.tolist(), table_l, state_l, action_l, reward_l, next_l, dt_l,
                                  terminal_l, consistent, allowed_l)


def _double_q_update_lists(tables: tuple[QTable, QTable], first_l: list[bool], table_l: list[int], state_l: list[int],
                           action_l: list[int], reward_l: list[float], next_l: list[int], dt_l: list[float],
                           terminal_l: list[bool], consistent: bool, allowed_l: list[list[bool]] | None) -> bool:
    """:func:`double_q_update` of a few rows given as Python values (ints, floats, bools; ``allowed_l`` one row of
    ``n_actions`` bools per row or None); False (nothing done) where the numpy path must run."""
    a, b = tables
    n = len(state_l)
    if a.q.shape != b.q.shape or not 0 < n <= _learning.SMALL_BATCH:
        return False
    n_states, n_actions = a.n_states, a.n_actions
    next_l = [0 if terminal_l[i] else next_l[i] for i in range(n)]
    for i in range(n):
        if not (0 <= table_l[i] < a.n_tables and 0 <= next_l[i] < n_states):
            return False
        if allowed_l is not None and not any(allowed_l[i]):
            return False
    columns = (table_l, state_l, action_l, reward_l, next_l, dt_l, terminal_l)
    for own, other, pick in ((a, b, True), (b, a, False)):
        idx = [i for i in range(n) if first_l[i] is pick]
        if not idx:
            continue
        own_flat, other_flat = own.q.reshape(-1), other.q.reshape(-1)
        boot = []
        for i in idx:
            start = (table_l[i] * n_states + next_l[i]) * n_actions
            best = _greedy_small(own_flat, start, n_actions, None if allowed_l is None else allowed_l[i])
            boot.append(other_flat.item(start + best))
        # the half's rows (all of them: the lists themselves; _update_rows only zeroes terminal next states)
        sub = list(columns) if len(idx) == n else [[col[i] for i in idx] for col in columns]
        if own._update_rows(len(idx), *sub, consistent, boot) is None:
            t, s, act, r, s2, dt, term = (np.array(c) for c in sub)
            own.update(t.astype(np.int64), s.astype(np.int64), act.astype(np.int64), r.astype(float),
                       s2.astype(np.int64), dt.astype(float), term.astype(bool), consistent=consistent,
                       bootstrap=np.array(boot, dtype=float))
    return True


_STATE_KEYS = ("q", "visits", "alpha", "gamma", "tau_s", "initial_q", "alpha_schedule", "alpha_decay_exponent")


class Discretizer:
    """Maps continuous feature columns to one state index by binning each feature.

    Feature ``f`` with increasing edges ``e_0 < ... < e_{m-1}`` falls into bin ``k = np.digitize(x, e)``:
    bin 0 is ``x < e_0``, bin ``k`` is ``e_{k-1} <= x < e_k``, bin ``m`` is ``x >= e_{m-1}`` (a value
    on an edge goes to the bin above it). The state index is the mixed-radix number of the bins,
    features in the order given, the last varying fastest (``np.ravel_multi_index``).

    Args:
        bins: Feature name -> 1-D strictly increasing finite edges (at least one edge).

    Attributes:
        edges: Feature name -> float64 edges.
        names: Feature names in index order.
        radices: Bins per feature (edges + 1).
        n_states: Product of the radices.
    """

    def __init__(self, bins: dict[str, np.ndarray]):
        if not bins:
            raise ValueError("Discretizer: bins must name at least one feature")
        self.edges: dict[str, np.ndarray] = {}
        for name, edges in bins.items():
            edges = np.asarray(edges, dtype=float)
            if edges.ndim != 1 or edges.size == 0 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
                raise ValueError(f"Discretizer: bins[{name!r}]: got {edges!r}; expected a non-empty 1-D array of "
                                 "strictly increasing finite edges")
            self.edges[name] = edges
        self.names: tuple[str, ...] = tuple(self.edges)
        self.radices: tuple[int, ...] = tuple(e.size + 1 for e in self.edges.values())
        self.n_states: int = int(np.prod(self.radices))
        # the small-batch path: edges as Python floats and each feature's stride in the mixed-radix index
        self._edge_lists = tuple(e.tolist() for e in self.edges.values())
        strides, stride = [], self.n_states
        for r in self.radices:
            stride //= r
            strides.append(stride)
        self._strides = tuple(strides)

    def index(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """State indices (int64) for feature columns that broadcast to a common shape.

        Raises:
            ValueError: A feature is missing, unknown or NaN.
        """
        missing, unknown = set(self.names) - set(features), set(features) - set(self.names)
        if missing or unknown:
            raise ValueError(f"Discretizer.index: missing features {sorted(missing)}, unknown features {sorted(unknown)}; "
                             f"expected {list(self.names)}")
        small = self._index_small([features[name] for name in self.names])
        if small is not None:
            return small
        columns = np.broadcast_arrays(*(np.asarray(features[name], dtype=float) for name in self.names))
        digits = []
        for name, column in zip(self.names, columns):
            if np.isnan(column).any():
                raise ValueError(f"Discretizer.index: feature {name!r} contains NaN")
            digits.append(np.digitize(column, self.edges[name]))
        return np.ravel_multi_index(tuple(digits), self.radices).astype(np.int64)

    def _index_small(self, columns: list[Any]) -> np.ndarray | None:
        """:meth:`index` as Python numbers for 1-D numpy columns of one length <=
        :data:`dcsim.learning.SMALL_BATCH` (None for anything else). ``np.digitize`` over increasing edges is ``searchsorted(edges, x, side="right")``, i.e.
        ``bisect_right``; comparing float64 values is exact, so the bins are the same."""
        n = -1
        for column in columns:
            if type(column) is not np.ndarray or column.ndim != 1 or column.dtype.kind not in "fiub" \
                    or (n >= 0 and column.shape[0] != n):
                return None
            n = column.shape[0]
        if n > _learning.SMALL_BATCH or n < 0:
            return None
        index = [0] * n
        for name, column, edges, stride in zip(self.names, columns, self._edge_lists, self._strides):
            values = column.tolist()  # float32 and int values convert to float64 exactly, as np.digitize does
            for i, x in enumerate(values):
                if x != x:
                    raise ValueError(f"Discretizer.index: feature {name!r} contains NaN")
                index[i] += bisect_right(edges, x) * stride
        return np.array(index, dtype=np.int64)

    def describe(self) -> list[str]:
        """Human-readable bin table: one line per feature with its stride and bins."""
        lines = [f"{self.n_states} states = " + " x ".join(f"{r} ({n})" for n, r in zip(self.names, self.radices))]
        stride = self.n_states
        for name, edges in self.edges.items():
            stride //= edges.size + 1
            parts = [f"[0] {name} < {edges[0]:g}"]
            parts += [f"[{k}] {edges[k - 1]:g} <= {name} < {edges[k]:g}" for k in range(1, edges.size)]
            parts.append(f"[{edges.size}] {name} >= {edges[-1]:g}")
            lines.append(f"{name} (stride {stride}): " + "; ".join(parts))
        return lines
