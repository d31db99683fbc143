"""The learners' few-row bid path (a job starting: ``LearningPolicy._bid_few``) against the numpy path.

Each piece claims the numpy path's float64 operations in the same order and the same draws from the policy's
stream, so results must be equal bit for bit (actions equal): these tests run both forms on the same inputs and
compare bytes, and whole trainings with ``dcsim.learning.SMALL_BATCH = 0`` (every fast path off) against the default.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

import dcsim.learning as learning
from dcsim.learning import FEATURES, ReplayBuffer, TransitionBuilder, Transitions
from dcsim.policy import AgentObservation, MarketView, few_agent_observation
from test_learning_fast_path import GPU, both, random_obs, same, training


def lazy_copy(obs: AgentObservation) -> AgentObservation:
    """The observation as the engine builds it for a few agents: Python tuples, arrays built on first access."""
    rows = list(zip(*(getattr(obs, f).tolist() for f in learning._FEATURE_ROW_FIELDS)))
    return few_agent_observation(obs.gpu_ids.tolist(), rows, obs.market_values(), obs.gpu, obs.feedback)


# ------------------------------------------------------------------------------------------ the draws
@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937, np.random.Philox,
                                           np.random.SFC64])
def test_one_draw_per_row_equals_the_batched_draws(bit_generator):
    """``random()`` n times is ``random(n)`` and ``integers(0, k)`` m times is ``integers(0, k, size=m)``: the same
    values and the same stream state after, interleaved as ``_decide`` and ``learn`` interleave them."""
    for seed in range(40):
        a, b = (np.random.Generator(bit_generator(seed)) for _ in range(2))
        plan = np.random.default_rng(seed + 1000)
        for _ in range(100):
            n, k = int(plan.integers(1, 17)), int(plan.integers(1, 14))
            batched = (a.random(n) < 0.3).tolist()
            single = [b.random() < 0.3 for _ in range(n)]
            assert batched == single
            m = sum(batched)
            if m:
                assert a.integers(0, k, size=m).tolist() == [int(b.integers(0, k)) for _ in range(m)]
        # the same state after: the next draws of every kind agree (a buffered half of a 64-bit word included)
        for draw in (lambda g: g.integers(0, 1000, size=3), lambda g: g.random(3),
                     lambda g: g.bit_generator.random_raw(3)):
            assert draw(a).tolist() == draw(b).tolist()


# ------------------------------------------------------------------------------------------ features and bids
@pytest.mark.parametrize("seed", range(30))
def test_feature_rows_of_a_lazy_observation_equal_the_numpy_features(monkeypatch, seed):
    rng = np.random.default_rng(seed)
    obs = random_obs(rng, int(rng.integers(1, 17)))
    rows = learning.observation_feature_rows(lazy_copy(obs), 64, 300.0)
    monkeypatch.setattr(learning, "SMALL_BATCH", 0)
    slow = learning._observation_features64(obs, 64, 300.0)
    if rows is None:  # a division by zero in Python: the numpy path's inf
        assert not np.isfinite(slow).all()
        return
    assert same(np.array(rows, dtype=float).reshape(slow.shape), slow)
    assert same(np.array(rows, dtype=np.float32).reshape(slow.shape), slow.astype(np.float32))


@pytest.mark.parametrize("seed", range(40))
def test_bids_of_an_action_list_equal_the_numpy_bids(monkeypatch, seed):
    rng = np.random.default_rng(seed)
    obs = random_obs(rng, int(rng.integers(1, 17)))
    actions = rng.integers(0, len(learning.BidAction), len(obs))  # PACE and the two-block actions included
    fast = learning.bids_from_action_list(actions.tolist(), lazy_copy(obs), 1.1, 2.0, 1.25)
    monkeypatch.setattr(learning, "SMALL_BATCH", 0)
    slow = learning.bids_from_actions(actions, obs, 1.1, 2.0, 1.25)
    for field in ("request_w", "max_price_tokens_per_kwh", "steps_w", "steps_price"):
        a, b = getattr(fast, field), getattr(slow, field)
        assert (a is None and b is None) or same(a, b), field


def test_market_values_are_the_views_fields_in_order():
    obs = random_obs(np.random.default_rng(3), 4)
    from dataclasses import fields
    assert obs.market_values() == tuple(getattr(obs.market, f.name) for f in fields(MarketView))
    lazy = lazy_copy(obs)
    assert lazy.market_values() == obs.market_values() and "market" not in lazy.__dict__
    assert lazy.market == obs.market


# ------------------------------------------------------------------------------------------ transitions and replay
@pytest.mark.parametrize("seed", range(30))
def test_transition_builder_few_forms_equal_the_array_forms(seed):
    rng = np.random.default_rng(seed)
    n_agents, f = 12, 5
    fast, slow = (TransitionBuilder(n_agents, f, 0.97, 900.0) for _ in range(2))
    for _ in range(30):
        k = int(rng.integers(1, 6))
        agents = rng.permutation(n_agents)[:k]
        reward = rng.choice([0.0, -0.0, 1.5, -3.0], k) * rng.random(k)
        dt = rng.choice([0.0, 60.0, 1e4], k) * rng.random(k)
        fast.accrue_few(agents.tolist(), reward.tolist(), dt.tolist())
        slow.accrue(agents, reward, dt)
        x = rng.normal(size=(k, f)).astype(np.float32)
        if rng.random() < 0.7:
            got, want = fast.close_few(agents.tolist()), slow.close(agents, x, terminal=False)
            assert (got is None) == (want is None)
            if got is not None:
                live, closed, actions, rewards, elapsed = got
                assert same(np.array(closed), want.agent) and same(np.array(actions, dtype=np.int64), want.action)
                assert same(np.array(rewards), want.reward) and same(np.array(elapsed), want.dt_s)
                assert same(fast.obs[closed], want.obs) and same(x[live], want.next_obs)
        acts = rng.integers(0, 8, k)
        fast.start_few(agents.tolist(), x, acts.tolist())
        slow.start(agents, x, acts)
        for name in ("open", "obs", "action", "reward", "elapsed_s"):
            assert same(getattr(fast, name), getattr(slow, name)), name


@pytest.mark.parametrize("capacity", [0, 1, 5, 7, 64])
def test_replay_add_few_equals_add(capacity):
    rng = np.random.default_rng(capacity)
    fast, slow = (ReplayBuffer(capacity, 3) for _ in range(2))
    for _ in range(40):
        k = int(rng.integers(1, 17))
        tr = Transitions(rng.normal(size=(k, 3)).astype(np.float32), rng.integers(0, 8, k), rng.normal(size=k),
                         rng.normal(size=(k, 3)).astype(np.float32), rng.random(k) * 100, np.full(k, bool(k % 2)),
                         np.arange(k))
        if not fast.add_few(tr.obs, tr.action.tolist(), tr.reward.tolist(), tr.next_obs, tr.dt_s.tolist(),
                            bool(k % 2)):
            assert k > capacity  # declined: the caller adds the Transitions
            fast.add(tr)
        slow.add(tr)
        assert (fast.pos, fast.size) == (slow.pos, slow.size)
        for name in ReplayBuffer.FIELDS:
            assert same(fast.data[name], slow.data[name]), name


# ------------------------------------------------------------------------------------------ Q-learning's rows
def qlearning_policy(params: dict, n_gpus: int = 8):
    from dcsim.policy import load_policy
    pol = load_policy("qlearning", params)
    pol.reset(np.random.default_rng(0), GPU, n_gpus)
    rng = np.random.default_rng(1)
    for t in (pol.table, pol.table_b):
        if t is not None:
            t.q[...] = rng.choice([0.0, -0.0, 1.0, -2.0], t.q.shape) * rng.integers(0, 3, t.q.shape)
    return pol


def awkward_features(rng: np.random.Generator, n: int, names: tuple[str, ...]) -> np.ndarray:
    """Feature rows with values on and next to the bin edges (float32), both kinds of rows and some NaN-free zeros."""
    pool = np.array([0.0, -0.0, 0.05, 0.5, 1 / 3, 2 / 3, 0.0625, 0.25, 1.0, 2.0, -0.1, np.log(2.0) / 5.0, 0.7,
                     1e-6, np.nextafter(0.05, 0), np.nextafter(0.5, 1)], dtype=np.float32)
    x = np.where(rng.random((n, len(names))) < 0.6, rng.choice(pool, (n, len(names))),
                 rng.normal(0.0, 1.0, (n, len(names)))).astype(np.float32)
    for flag in ("has_job", "has_deadline", "decision_admit"):
        if flag in names:
            x[:, names.index(flag)] = rng.random(n) < 0.5
    return x


@pytest.mark.parametrize("params", [{}, {"actions": "bid+idle"}, {"actions": "all"}, {"double": False},
                                    {"double": False, "actions": "bid+idle"}, {"tables": "per_agent"},
                                    {"bins": "price_slack"}])
@pytest.mark.parametrize("seed", range(6))
def test_qlearning_rows_equal_its_numpy_states_and_choices(monkeypatch, params, seed):
    pol = qlearning_policy(params)
    rng = np.random.default_rng(seed)
    from dcsim.learning import ActionKind
    for _ in range(20):
        n = int(rng.integers(1, 17))
        x = awkward_features(rng, n, pol.features)
        agents = rng.integers(0, pol.n_gpus, n)
        states = pol._state_rows(x.tolist())
        for kind in pol.layout.kinds:
            fast = pol.choose_rows(x.tolist(), x, agents.tolist(), kind)
            monkeypatch.setattr(learning, "SMALL_BATCH", 0)
            want_states = pol.states(x)
            mask = pol.layout.mask(np.full(n, int(kind))) if pol.layout.rich else None
            slow = pol.choose(x, agents, mask)
            monkeypatch.setattr(learning, "SMALL_BATCH", 16)
            assert states == want_states.tolist() and fast == slow.tolist()


def test_qlearning_rows_name_a_nan_as_the_numpy_path_does():
    pol = qlearning_policy({})
    x = np.zeros((2, len(pol.features)), dtype=np.float32)
    x[1, pol.features.index("wallet_rounds")] = np.nan
    with pytest.raises(ValueError, match="'wallet_rounds' contains NaN"):
        pol._state_rows(x.tolist())


def test_greedy_rows_take_numpys_argmax_with_nan_and_masks():
    from policies.qlearning import _greedy_rows
    rng = np.random.default_rng(0)
    q = rng.choice([0.0, -0.0, 1.0, np.nan, -np.inf, 2.0], (2, 6, 5))
    for _ in range(300):
        n = int(rng.integers(1, 9))
        t, s = rng.integers(0, 2, n), rng.integers(0, 6, n)
        mask = rng.random((n, 5)) < 0.6
        mask[np.arange(n), rng.integers(0, 5, n)] = True
        want = np.argmax(np.where(mask, q[t, s], -np.inf), axis=1)
        assert _greedy_rows(q, t.tolist(), s.tolist(), mask.tolist()) == want.tolist()
        assert _greedy_rows(q, t.tolist(), s.tolist(), None) == np.argmax(q[t, s], axis=1).tolist()


# ------------------------------------------------------------------------------------------ the DQN's rows
@pytest.mark.parametrize("params", [{}, {"actions": "all"}, {"hidden": [7]}, {"hidden": [16, 8, 4]}])
def test_dqn_rows_choose_as_the_acting_network(params):
    pytest.importorskip("torch")
    from dcsim.learning import ActionKind
    from dcsim.policy import load_policy
    pol = load_policy("dqn", params)
    pol.reset(np.random.default_rng(0), GPU, 8)
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 17))
        x = rng.normal(0.0, 3.0, (n, len(pol.features))).astype(np.float32)
        if rng.random() < 0.1:
            x[:] = 0.0  # ties between actions
        for kind in pol.layout.kinds:
            mask = pol.layout.mask(np.full(n, int(kind))) if pol.layout.rich else None
            want = pol.choose(x, np.arange(n), mask)
            assert pol.choose_rows(x.tolist(), x, list(range(n)), kind) == want.tolist()


def test_dqn_rows_follow_the_acting_network_after_a_sync():
    torch = pytest.importorskip("torch")
    from dcsim.policy import load_policy
    pol = load_policy("dqn", {"hidden": [8, 8]})
    pol.reset(np.random.default_rng(0), GPU, 4)
    with torch.no_grad():
        for p in pol.learner.model.online.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
    pol._sync()
    x = np.random.default_rng(2).normal(0.0, 3.0, (64, len(pol.features))).astype(np.float32)
    for i in range(0, 64, 4):
        assert pol.choose_rows(x[i:i + 4].tolist(), x[i:i + 4], [0, 1, 2, 3], learning.ActionKind.BID) == \
            pol.choose(x[i:i + 4], np.arange(4)).tolist()


def test_dqn_rows_with_a_nan_take_the_networks_argmax():
    pytest.importorskip("torch")
    from dcsim.policy import load_policy
    pol = load_policy("dqn", {"hidden": [8]})
    pol.reset(np.random.default_rng(0), GPU, 4)
    x = np.zeros((2, len(pol.features)), dtype=np.float32)
    x[1, 0] = np.nan
    assert pol.choose_rows(x.tolist(), x, [0, 1], learning.ActionKind.BID) == pol.choose(x, np.arange(2)).tolist()


# ------------------------------------------------------------------------------------------ whole trainings


@pytest.mark.parametrize("params", [{}, {"actions": "all"}, {"double": False, "keep_transitions": 300}])
def test_dqn_trains_identically_with_and_without_the_fast_paths(monkeypatch, params):
    pytest.importorskip("torch")
    from dcsim.policy import load_policy
    from dcsim.config import load_scenario
    from dcsim.runner import run_scenario
    from pathlib import Path

    def run():
        sc = load_scenario(Path(__file__).resolve().parents[1] / "scenarios" / "learn_solar.yaml", ["horizon_s=3h"])
        pol = load_policy("dqn", {"epsilon_decay_decisions": 300.0, "hidden": [16, 16], "batch_size": 32,
                                  "min_replay": 32, "updates_per_round": 2} | params)
        out = []
        for k in range(2):
            res = run_scenario(sc.model_copy(update={"seed": sc.seed + k}), policy=pol)
            out.append((repr(res.summary["reward"]["per_gpu"]), pol.decisions, pol.updates,
                        hashlib.sha256(res.result.jobs.to_csv(index=False).encode()).hexdigest()))
        weights = b"".join(v.numpy().tobytes() for v in pol.learner.state_dict()["online"].values())
        replay = b"".join(v.tobytes() for v in pol.replay.data.values())
        out.append((hashlib.sha256(weights).hexdigest(), hashlib.sha256(replay).hexdigest(), repr(pol.losses),
                    repr(pol.rng.bit_generator.state)))
        if pol.recorded is not None:
            out.append(hashlib.sha256(b"".join(v.tobytes() for v in pol.recorded.data.values())).hexdigest())
        return out

    fast, slow = both(monkeypatch, run)
    assert fast == slow


@pytest.mark.parametrize("params", [{"keep_transitions": 400}, {"bins": "price_slack", "alpha_schedule": "constant"},
                                    {"double": False, "actions": "bid+idle"}])
def test_qlearning_trains_identically_with_and_without_the_few_row_path(monkeypatch, params):
    fast, slow = both(monkeypatch, lambda: training("qlearning", params))
    assert fast == slow


@pytest.mark.parametrize("name", ["qlearning", "dqn"])
def test_a_replaced_choose_and_learn_are_called_on_the_few_row_path(name):
    """The few-row path skips ``choose`` and ``learn`` only while they are the class's own: a subclass's or an
    instance's replacement is called for every decision and transition, as on the numpy path."""
    if name == "dqn":
        pytest.importorskip("torch")
    from pathlib import Path
    from dcsim.config import load_scenario
    from dcsim.policy import load_policy
    from dcsim.runner import run_scenario
    sc = load_scenario(Path(__file__).resolve().parents[1] / "scenarios" / "learn_solar.yaml", ["horizon_s=2h"])
    pol = load_policy(name, {"hidden": [8]} if name == "dqn" else {})
    seen = {"choose": [], "learn": 0}
    choose, learn = pol.choose, pol.learn

    def choose_recorded(features, agents, allowed=None):
        out = choose(features, agents, allowed)
        seen["choose"].append(len(out))
        return out

    def learn_recorded(tr):
        seen["learn"] += len(tr)
        return learn(tr)

    pol.choose, pol.learn = choose_recorded, learn_recorded
    run_scenario(sc, policy=pol)
    assert sum(seen["choose"]) == pol.decisions and min(seen["choose"]) <= learning.SMALL_BATCH
    assert seen["learn"] > 0 and (name == "dqn" or seen["learn"] == pol.updates)
