"""A Q-table's compiled form (rule BID_QTABLE in dcsim/kernel.py): runs on the compiled path write the Python path's
outputs, bit for bit, and leave the policy in the same state: tables, visit counts, decision and update counts,
the policy stream's generator state.

At a job start the kernel does what ``LearningPolicy.bid`` does for ``qlearning`` with the ``bid`` layout: the
reward meter's feedback of the job's agents (numpy's own matrix product over its rows), their features (numpy's own
log, log1p, log2, sin and cos loops, dcsim/npmath.py), and, learning, the open transitions' accrual and close, the
(double) Q update (numpy's powers for the discount and the visits rate; rows repeating an entry composed as
``QTable.update`` does), ε from the schedule (numpy's exp), exploration drawn from the policy's own bit generator,
the new transitions; then the greedy or explored action per agent and what its bid buys. The reward meter's per-job
bookkeeping (starts, completions, drops) moves into the kernel with it. Rounds stay in Python on the same memory.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcsim.compiled import compiled_reason
from dcsim.engine import Simulation
from dcsim.learning import BidAction
from dcsim.policy import load_policy
from dcsim.seeding import Streams
from dcsim.supply import build_supply
from dcsim.workload import build_job_source
from policies.qlearning import QLearning
from test_compiled import CASES, _assert_same, _world, needs_numba

WORLDS = {
    # gang jobs with deadlines, a scarce market: prices on both sides of FULL_IF_CHEAP's and the bins' edges
    "scarce": dict(gpus=16, rate=0.03, mean_s=900.0, solar_w=3000.0, import_cap_w=4000.0,
                   gpus_per_job={"values": [1, 2, 4], "weights": [0.7, 0.2, 0.1]},
                   workload={"deadline_slack": 3.0, "clock_sensitivity": 0.7}),
    # a queue, drops of three kinds (queue full, too large, expired), 32-GPU jobs (more rows than the few-row path)
    "queues_and_drops": dict(CASES["queues_and_drops"], gpus=40),
    # small wallets with endowments: budgets bind at starts; a battery in the books
    "budgets_battery": dict(CASES["budgets_and_burns"], supply={
        "solar": {"capacity_w": 9600.0, "latitude": 37.36, "longitude": -121.93},
        "battery": {"capacity_wh": 20_000.0, "max_charge_w": 5000.0, "max_discharge_w": 5000.0,
                    "initial_soc": 0.5}}),
    "cooling_vcg": dict(CASES["cooling"], mechanism="vcg"),
}
POLICIES = {
    "double": {}, "single": {"double": False}, "per_agent": {"tables": "per_agent", "double": False},
    "price_slack_bins": {"bins": "price_slack", "cheap_multiple": 1.3, "block_limit_multiple": 1.5,
                         "pace_safety": 1.6},
}


def _scenario(world: str, **extra):
    sc = _world(**dict(WORLDS[world], **extra))
    return sc.model_copy(update={"policy": sc.policy.model_copy(update={"name": "qlearning"})})


def _run(sc, policy, compiled: bool):
    streams = Streams(sc.seed)
    result = Simulation(sc, policy, build_job_source(sc, streams), build_supply(sc), streams, compiled=compiled).run()
    assert result.engine == ("compiled" if compiled else "python")
    return result


def _frozen(sc, params: dict, seed: int = 1, train: bool = False):
    """A frozen qlearning policy with tables built for ``sc``: random ones (every action greedy somewhere), or
    trained for two episodes on the Python path."""
    policy = load_policy("qlearning", dict(params, learn=train))
    _run(sc, policy, False)  # builds the tables (and, training, fills them)
    if train:
        _run(sc, policy, False)
        policy.learning = False
    else:
        rng = np.random.default_rng(seed)
        for table in (policy.table, policy.table_b):
            if table is not None:
                table.q[:] = rng.normal(size=table.q.shape)
    return policy


def _assert_same_learner(sc, policy):
    a, b = _run(sc, copy.deepcopy(policy), False), _run(sc, copy.deepcopy(policy), True)
    _assert_same(a, b)
    assert np.array_equal(a.agent_returns, b.agent_returns)
    return a, b


@needs_numba
@pytest.mark.parametrize("world", sorted(WORLDS))
@pytest.mark.parametrize("variant", sorted(POLICIES))
def test_a_frozen_tables_compiled_form_writes_the_python_paths_outputs(world, variant):
    sc = _scenario(world)
    policy = _frozen(sc, POLICIES[variant])
    assert compiled_reason(sc, policy) is None
    before = policy.decisions
    a, _ = _assert_same_learner(sc, policy)
    assert a.decisions["method"].eq("bid").all() and len(a.decisions) > 20
    # the policy's own decision count moved as on the Python path (the kernel keeps it, rounds add theirs)
    p_python, p_compiled = copy.deepcopy(policy), copy.deepcopy(policy)
    _run(sc, p_python, False)
    _run(sc, p_compiled, True)
    assert p_python.decisions == p_compiled.decisions > before


@needs_numba
def test_every_action_and_the_worlds_drops_and_gangs_go_through_the_compiled_form():
    """Six random tables in the queue world: together they take every BidAction at job starts (counted on the
    Python path), and each run's outputs are the compiled path's; the world drops jobs and runs gang jobs wider
    than the few-row path's 16 rows."""
    sc = _scenario("queues_and_drops")
    chosen = set()
    original = QLearning.choose_rows

    def counting(self, rows, x, agents, kind):
        out = original(self, rows, x, agents, kind)
        chosen.update(out)
        return out

    for seed in range(1, 7):
        policy = _frozen(sc, {}, seed=seed)
        python = copy.deepcopy(policy)
        python.choose_rows = counting.__get__(python)  # an instance's own method: the Python path for sure
        a, b = _run(sc, python, False), _run(sc, copy.deepcopy(policy), True)
        _assert_same(a, b)
        assert np.array_equal(a.agent_returns, b.agent_returns)
    jobs = a.jobs_table()
    assert {int(act) for act in BidAction} <= chosen
    assert (jobs["status"] == "dropped").sum() >= 3 and (jobs["gpus"] > 16).any()


@needs_numba
def test_a_table_trained_on_the_python_path_then_frozen_gives_the_same_outputs():
    sc = _scenario("scarce", horizon_s=4 * 3600)
    policy = _frozen(sc, {}, train=True)
    assert policy.table.visits.sum() > 0
    _assert_same_learner(sc, policy)


def test_what_keeps_a_learner_on_the_python_path_is_named():
    sc = _scenario("scarce", horizon_s=600)
    assert compiled_reason(sc, load_policy("qlearning", {})) is None
    assert "-0.0" in compiled_reason(sc, load_policy("qlearning", {"initial_q": -0.0}))
    assert "layout" in compiled_reason(sc, load_policy("qlearning", {"learn": False, "actions": "bid+idle"}))
    frozen = load_policy("qlearning", {"learn": False})
    frozen.choose_rows = lambda *a: [0]  # an instance that replaced a step runs its own code
    assert "not QLearning's own" in compiled_reason(sc, frozen)


def _assert_same_training(sc, params: dict, episodes: int = 2):
    """Train two copies of a policy on each path, episode by episode: every output and the learnt state equal."""
    a_pol = load_policy("qlearning", params)
    b_pol = copy.deepcopy(a_pol)
    for _ in range(episodes):
        a, b = _run(sc, a_pol, False), _run(sc, b_pol, True)
        _assert_same(a, b)
        assert np.array_equal(a.agent_returns, b.agent_returns)
        for ta, tb in ((a_pol.table, b_pol.table), (a_pol.table_b, b_pol.table_b)):
            if ta is not None:
                assert np.array_equal(ta.q, tb.q) and np.array_equal(ta.visits, tb.visits)
        assert (a_pol.decisions, a_pol.updates) == (b_pol.decisions, b_pol.updates)
        assert a_pol.rng.bit_generator.state == b_pol.rng.bit_generator.state
        if a_pol.recorded is not None:  # the kept transitions (what `dcsim train` exports): the same ring
            ra, rb = a_pol.recorded, b_pol.recorded
            assert (ra.pos, ra.size) == (rb.pos, rb.size) and ra.size > 0
            for field in ra.FIELDS:
                assert np.array_equal(ra.data[field], rb.data[field])
    assert a_pol.updates > 0
    return a_pol


TRAINING = {
    "double": {}, "single": {"double": False},
    "per_agent_consistent": {"tables": "per_agent", "double": False, "consistent": True},
    "double_consistent_constant_linear": {"consistent": True, "alpha_schedule": "constant", "alpha": 0.3,
                                          "epsilon_kind": "linear", "epsilon_decay_decisions": 500.0},
    "price_slack_bins": {"bins": "price_slack", "epsilon_end": 0.2, "gamma": 0.9, "tau_s": 600.0},
    # what `dcsim train` runs: the transitions kept for export (a ring small enough to wrap within an episode)
    "kept_transitions": {"keep_transitions": 700},
}


@needs_numba
@pytest.mark.parametrize("world", sorted(WORLDS))
@pytest.mark.parametrize("variant", sorted(TRAINING))
def test_training_on_the_compiled_path_learns_what_the_python_path_learns(world, variant):
    _assert_same_training(_scenario(world), TRAINING[variant])


@needs_numba
@pytest.mark.parametrize("world", ["scarce", "queues_and_drops"])
def test_a_team_reward_trains_the_same_on_both_paths(world):
    """reward.team_fraction > 0 (learn_grid, learn_shift): each agent's reward mixes in the cluster's accruals since
    its last decision (RewardMeter._team_now, every agent's meters summed row by row), on both paths alike."""
    sc = _scenario(world)
    sc = sc.model_copy(update={"reward": sc.reward.model_copy(update={"team_fraction": 0.4})})
    assert compiled_reason(sc, load_policy("qlearning", {})) is None
    for params in ({}, {"double": False, "keep_transitions": 300}):
        _assert_same_training(sc, params)


@needs_numba
def test_the_queue_world_composes_repeated_entries_in_one_update(monkeypatch):
    """Gang jobs whose agents close the same (state, action) at one start: QTable.update's numpy batch (the
    composition of repeated entries) runs on the Python path there, and the compiled path learns the same."""
    from policies.qtable import QTable

    repeated = []
    update = QTable.update

    def counting(self, table, state, action, *args, **kwargs):
        flat = (np.asarray(table) * self.n_states + np.asarray(state)) * self.n_actions + np.asarray(action)
        if np.size(flat) > 1 and np.unique(flat).size < np.size(flat):
            repeated.append(np.size(flat))
        return update(self, table, state, action, *args, **kwargs)

    monkeypatch.setattr(QTable, "update", counting)
    sc = _scenario("queues_and_drops")
    for params in ({}, {"double": False}):
        _assert_same_training(sc, params, episodes=1)
    assert len(repeated) >= 10


#: A random world: a few GPUs, arrivals, durations, sun, a mechanism, deadlines, clock sensitivity, drops.
RANDOM_WORLD = dict(gpus=st.integers(1, 12), rate=st.floats(0.002, 0.08), mean_s=st.floats(5.0, 2000.0),
                    solar_w=st.floats(0.0, 15_000.0),
                    mechanism=st.sampled_from(["posted_price", "uniform_price", "vcg", "kelly"]),
                    slack=st.one_of(st.none(), st.floats(1.05, 4.0)), beta=st.floats(0.0, 1.0),
                    drop_expired=st.booleans(), seed=st.integers(0, 2**16))


def _random_scenario(gpus, rate, mean_s, solar_w, mechanism, slack, beta, drop_expired, seed):
    sc = _world(gpus=gpus, horizon_s=3 * 3600, rate=rate, mean_s=mean_s, solar_w=solar_w, mechanism=mechanism,
                seed=seed, gpus_per_job={"values": [1, 2, 3], "weights": [0.7, 0.2, 0.1]},
                workload={"deadline_slack": slack, "clock_sensitivity": beta, "drop_expired": drop_expired})
    return sc.model_copy(update={"policy": sc.policy.model_copy(update={"name": "qlearning"})})


@needs_numba
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variant=st.sampled_from(sorted(TRAINING)), **RANDOM_WORLD)
def test_random_worlds_train_the_same_on_both_paths(variant, **world):
    _assert_same_training(_random_scenario(**world), TRAINING[variant])


@needs_numba
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variant=st.sampled_from(sorted(POLICIES)), **RANDOM_WORLD)
def test_random_worlds_under_a_frozen_table_give_the_same_outputs(variant, **world):
    sc = _random_scenario(**world)
    _assert_same_learner(sc, _frozen(sc, POLICIES[variant], seed=world["seed"]))


@needs_numba
def test_a_frozen_table_that_keeps_transitions_records_what_the_python_path_records():
    """A frozen policy still opens and closes its transitions on the Python path; with ``keep_transitions`` they are
    recorded, so the kernel opens, closes and records them too (and, frozen, learns nothing from them)."""
    sc = _scenario("queues_and_drops")
    policy = _frozen(sc, {"keep_transitions": 300})
    policy.recorded = None  # (building the tables recorded some already) a fresh ring at the next reset
    a_pol, b_pol = copy.deepcopy(policy), copy.deepcopy(policy)
    _assert_same(_run(sc, a_pol, False), _run(sc, b_pol, True))
    ra, rb = a_pol.recorded, b_pol.recorded
    assert (ra.pos, ra.size) == (rb.pos, rb.size) and ra.size == 300
    for field in ra.FIELDS:
        assert np.array_equal(ra.data[field], rb.data[field])
    assert np.array_equal(a_pol.table.q, b_pol.table.q) and a_pol.updates == b_pol.updates == 0
