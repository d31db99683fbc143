"""The learners' Python-number paths for small batches (``dcsim.learning.SMALL_BATCH``) against their numpy paths.

Each fast path claims the numpy path's float64 operations in the same order, so the results must be equal bit
for bit: these tests run both on the same random inputs (signed zeros, bin edges, NaN, infinite slack included)
and compare bytes. ``SMALL_BATCH = 0`` turns every fast path off; whole trainings with and without them must
give the same rewards, decisions, job tables and Q-tables.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dcsim.learning as learning
from dcsim.learning import FEATURES, observation_features
from dcsim.policy import AgentObservation, GpuSpecView, MarketView
from policies.qlearning import BIN_SETS, LAYOUT_BINS, pace_needed
from policies.qtable import Discretizer, QTable, double_q_update

GPU = GpuSpecView(idle_w=78.8, tdp_w=700.0, min_cap_w=200.0, full_power_w=700.0, gamma=2.5, utilisation=1.0)


def both(monkeypatch, fn):
    """``fn()`` with the fast paths on (the default) and off."""
    fast = fn()
    monkeypatch.setattr(learning, "SMALL_BATCH", 0)
    slow = fn()
    monkeypatch.setattr(learning, "SMALL_BATCH", 16)
    return fast, slow


def same(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def awkward(rng: np.random.Generator, n: int, edges: list[float]) -> np.ndarray:
    """Values on and next to the edges, signed zeros and plain random numbers."""
    pool = np.array(edges + [np.nextafter(e, -np.inf) for e in edges] + [0.0, -0.0, 1e-300, -5.0, 5.0])
    out = np.where(rng.random(n) < 0.5, rng.choice(pool, n), rng.normal(0.0, 2.0, n))
    return out.astype(np.float32) if rng.random() < 0.5 else out


@pytest.mark.parametrize("seed", range(20))
def test_discretizer_small_path_equals_np_digitize(monkeypatch, seed):
    rng = np.random.default_rng(seed)
    bins = BIN_SETS["progress"] | LAYOUT_BINS
    disc = Discretizer({k: np.asarray(v) for k, v in bins.items()})
    n = int(rng.integers(1, 17))
    cols = {name: awkward(rng, n, list(edges)) for name, edges in bins.items()}
    cols["decision_kind"] = rng.integers(0, 3, n)
    fast, slow = both(monkeypatch, lambda: disc.index(cols))
    assert same(fast, slow)
    cols["slack_h" if "slack_h" in cols else "price_log_ratio"][rng.integers(0, n)] = np.nan
    for path in (16, 0):
        monkeypatch.setattr(learning, "SMALL_BATCH", path)
        with pytest.raises(ValueError, match="contains NaN"):
            disc.index(cols)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.floats(-1.5, 2.5, width=32), st.floats(0.0, 2.0, width=32)),
                min_size=1, max_size=16))
def test_pace_needed_small_path_equals_numpy(rows):
    x = np.zeros((len(rows), len(FEATURES)), dtype=np.float32)
    for i, (has, deadline, slack, remaining) in enumerate(rows):
        x[i, [FEATURES.index(c) for c in ("has_job", "has_deadline", "slack_h", "remaining_h")]] = \
            (has, deadline, slack, remaining)
    fast = pace_needed(x)
    learning.SMALL_BATCH = 0
    try:
        slow = pace_needed(x)
    finally:
        learning.SMALL_BATCH = 16
    assert same(fast, slow)


def random_obs(rng: np.random.Generator, n: int) -> AgentObservation:
    has = rng.random(n) < 0.7
    slack = np.where(rng.random(n) < 0.3, np.inf, rng.choice([-0.0, 0.0, -20000.0, 40000.0, 3600.0], n)
                     * rng.random(n))
    remaining = np.where(has, rng.choice([0.0, -0.0, 1.0, 30000.0], n) * rng.random(n) + rng.exponential(900.0, n),
                         rng.choice([0.0, -0.0], n))
    t = float(rng.uniform(0.0, 86400.0))
    market = MarketView(time_s=t, hour_utc=(t / 3600.0) % 24, renewable_w=1.0, demand_w=2.0,
                        renewable_fraction=float(rng.random()), price_tokens_per_kwh=float(rng.choice([0.0, np.inf,
                        rng.exponential(2.0)])), base_price_tokens_per_kwh=1.5, grid_carbon_g_per_kwh=300.0,
                        grid_price_usd_per_mwh=60.0, battery_soc=float(rng.random()),
                        queue_length=int(rng.integers(0, 50)), deferred_jobs=int(rng.integers(0, 5)),
                        next_round_s=t + float(rng.uniform(-10.0, 400.0)))
    return AgentObservation(
        gpu_ids=rng.permutation(64)[:n], state=np.zeros(n, dtype=np.int8), has_job=has, job_remaining_s=remaining,
        job_slack_s=slack, job_clock_sensitivity=np.where(has, rng.uniform(0.2, 1.0, n), 1.0),
        job_value_tokens=np.where(has, rng.choice([0.0, 1e-9, 5.0, 1e4], n) * rng.random(n), 0.0),
        job_gpus=np.where(has, rng.integers(1, 9, n), 0).astype(np.int64),
        wallet_tokens=rng.choice([0.0, 0.5, 100.0, 1e6], n) * rng.random(n), market=market, gpu=GPU)


@pytest.mark.parametrize("seed", range(30))
def test_observation_features_small_path_equals_numpy(monkeypatch, seed):
    rng = np.random.default_rng(seed)
    obs = random_obs(rng, int(rng.integers(1, 17)))
    # before the cast to float32, which would hide a difference in the last bits
    fast, slow = both(monkeypatch, lambda: learning._observation_features64(obs, 64, 300.0))
    assert fast.dtype == np.float64 and same(fast, slow)
    fast, slow = both(monkeypatch, lambda: observation_features(obs, 64, 300.0))
    assert fast.dtype == np.float32 and same(fast, slow)


def random_update(rng: np.random.Generator, schedule: str, n_tables: int):
    """A Q-table with random entries (zeros of both signs among them) and a batch to update it with."""
    n_states, n_actions = 12, 5
    table = QTable(n_states, n_actions, n_tables, alpha=0.3, gamma=0.95, tau_s=600.0, alpha_schedule=schedule,
                   alpha_decay_exponent=0.7)
    table.q[...] = rng.choice([0.0, -0.0, 1.0, -2.5], table.q.shape) * rng.random(table.q.shape)
    table.visits[...] = rng.integers(0, 20, table.q.shape)
    n = int(rng.integers(1, 17))
    batch = dict(table=rng.integers(0, n_tables, n) if n_tables > 1 else 0,
                 state=rng.integers(0, 4, n), action=rng.integers(0, n_actions, n),
                 reward=rng.choice([0.0, -0.0, 3.0], n) * rng.random(n), next_state=rng.integers(0, 4, n),
                 dt_s=rng.choice([0.0, 60.0, 3600.0], n) * rng.random(n), terminal=rng.random(n) < 0.2)
    return table, batch


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("schedule", ["visits", "constant"])
def test_q_update_small_path_equals_numpy(monkeypatch, seed, schedule):
    rng = np.random.default_rng(seed)
    table, batch = random_update(rng, schedule, 1 + seed % 3)
    consistent = bool(seed % 2)
    twin = QTable.from_state_dict(table.state_dict())

    def run(t):
        return lambda: t.update(**batch, consistent=consistent)

    fast = run(table)()
    monkeypatch.setattr(learning, "SMALL_BATCH", 0)
    slow = run(twin)()
    assert same(fast, slow) and same(table.q, twin.q) and same(table.visits, twin.visits)


@pytest.mark.parametrize("seed", range(40))
def test_double_q_update_small_path_equals_numpy(monkeypatch, seed):
    rng = np.random.default_rng(seed)
    a, batch = random_update(rng, "visits", 1 + seed % 2)
    b, _ = random_update(rng, "visits", 1 + seed % 2)
    n = batch["state"].size
    first = rng.random(n) < 0.5
    allowed = None
    if seed % 3 == 0:
        allowed = rng.random((n, a.n_actions)) < 0.5
        allowed[np.arange(n), rng.integers(0, a.n_actions, n)] = True
    twins = tuple(QTable.from_state_dict(t.state_dict()) for t in (a, b))
    double_q_update((a, b), first, **batch, consistent=bool(seed % 2), next_allowed=allowed)
    monkeypatch.setattr(learning, "SMALL_BATCH", 0)
    double_q_update(twins, first, **batch, consistent=bool(seed % 2), next_allowed=allowed)
    for got, want in zip((a, b), twins):
        assert same(got.q, want.q) and same(got.visits, want.visits)


def test_bad_updates_raise_the_numpy_paths_errors():
    table = QTable(4, 3)
    for bad, match in ((dict(reward=np.array([np.nan])), "reward must be finite"),
                       (dict(dt_s=np.array([-1.0])), "dt_s must be finite"),
                       (dict(state=np.array([9])), "state must lie"),
                       (dict(action=np.array([3])), "action must lie")):
        args = dict(table=0, state=np.array([1]), action=np.array([0]), reward=np.array([1.0]),
                    next_state=np.array([2]), dt_s=np.array([5.0])) | bad
        with pytest.raises(ValueError, match=match):
            table.update(**args)
    assert not table.q.any() and not table.visits.any()


def training(name: str, params: dict, overrides: tuple[str, ...] = ()) -> dict:
    from dcsim.config import load_scenario
    from dcsim.policy import load_policy
    from dcsim.runner import run_scenario
    from pathlib import Path
    sc = load_scenario(Path(__file__).resolve().parents[1] / "scenarios" / "learn_solar.yaml", ["horizon_s=3h", *overrides])
    pol = load_policy(name, {"epsilon_decay_decisions": 300.0} | params)
    out = []
    for k in range(2):
        res = run_scenario(sc.model_copy(update={"seed": sc.seed + k}), policy=pol)
        out.append((repr(res.summary["reward"]["per_gpu"]), pol.decisions, pol.updates,
                    hashlib.sha256(res.result.jobs.to_csv(index=False).encode()).hexdigest()))
    if name == "qlearning":
        out.append([hashlib.sha256(t.q.tobytes()).hexdigest() for t in (pol.table, pol.table_b) if t is not None])
    return {"runs": out}


@pytest.mark.parametrize("params", [{}, {"actions": "bid+idle"}, {"actions": "all"}, {"double": False},
                                    {"tables": "per_agent", "consistent": True}])
def test_qlearning_trains_identically_with_and_without_the_fast_paths(monkeypatch, params):
    fast, slow = both(monkeypatch, lambda: training("qlearning", params))
    assert fast == slow


def test_team_reward_feedback_is_identical_with_and_without_the_fast_paths(monkeypatch):
    """The reward meter's small-batch path with a team share of the reward (``reward.team_fraction``)."""
    fast, slow = both(monkeypatch, lambda: training("qlearning", {}, ("reward.team_fraction=0.3",)))
    assert fast == slow


@pytest.mark.parametrize("seed", range(30))
def test_bids_from_actions_small_path_equals_numpy(monkeypatch, seed):
    rng = np.random.default_rng(seed)
    obs = random_obs(rng, int(rng.integers(1, 17)))
    # single-block actions; two-block ones from seed 10; PACE from seed 20 (its powers numpy's on both paths)
    high = int(learning.BidAction.PAUSE) + 1 if seed < 10 else len(learning.BidAction) - (seed < 20)
    actions = rng.integers(0, high, len(obs))
    fast, slow = both(monkeypatch, lambda: learning.bids_from_actions(actions, obs, 1.1, 2.0, 1.25))
    for field in ("request_w", "max_price_tokens_per_kwh", "steps_w", "steps_price"):
        a, b = getattr(fast, field), getattr(slow, field)
        assert (a is None and b is None) or same(a, b), field


@pytest.mark.parametrize("kind", ["exponential", "linear"])
def test_epsilon_of_an_int_count_equals_the_array_path(kind):
    from policies.qtable import EpsilonSchedule
    sched = EpsilonSchedule(1.0, 0.05, 777.7, kind)
    counts = [0, 1, 2, 3, 500, 777, 778, 10_000, 123_457, 2_000_001]
    counts += np.random.default_rng(0).integers(0, 50_000, 200).tolist()
    for d in counts:
        fast = sched.value(d)
        assert type(fast) is float and fast == float(sched.value(np.array(d))) == float(sched.value(np.array([d]))[0])
    with pytest.raises(ValueError, match="must be >= 0"):
        sched.value(-1)
