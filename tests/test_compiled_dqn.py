"""A DQN's compiled form (rule BID_DQN in dcsim/kernel.py): runs on the compiled path write the Python path's outputs,
bit for bit, and leave the policy in the same state: the replay ring, the network's weights, the losses, the decision
and update counts, the policy stream's generator state.

The kernel does the Q-learner's steps (the reward meter's feedback, the features, the transitions, ε-greedy
exploration from the policy's own bit generator; tests/test_compiled_learner.py) with the DQN's own: the greedy
actions from the acting network (numpy's float32 matrix product, called through its loop, over the deciding rows at
once, as ``ActingWeights.q_values`` does on the Python path), the closed transitions into the replay ring, and, every
``learn_every_s``, ``DQN.learning_round`` in Python (torch gradient steps on samples of the replay), called by the
kernel at the decision where ``DQN.bid`` would call it.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dcsim.compiled import compiled_reason  # noqa: E402
from dcsim.errors import PolicyError  # noqa: E402
from dcsim.policy import load_policy  # noqa: E402
from policies.dqn import DQN, ActingWeights  # noqa: E402
from test_compiled import _assert_same, needs_numba  # noqa: E402
from test_compiled_learner import WORLDS, _run, _scenario  # noqa: E402

#: Small replays and batches, so that learning rounds start within the first hours of a 6-hour world.
BASE = {"min_replay": 32, "batch_size": 32, "hidden": [32, 16]}
TRAINING = {
    "rounds": {},  # learning at the market rounds (learn_every_s = the 300 s round)
    "every_60s": {"learn_every_s": 60.0},  # learning rounds at job starts between market rounds
    "every_450s_single_sgd": {"learn_every_s": 450.0, "double": False, "optimizer": "sgd", "lr": 0.01},
    "linear_eps_wrapping_replay": {"epsilon_kind": "linear", "epsilon_decay_decisions": 800.0, "replay_capacity": 500,
                                   "updates_per_round": 2},
    # what `dcsim train` runs: the transitions kept for export (a ring small enough to wrap within an episode)
    "kept_transitions": {"keep_transitions": 700, "hidden": [64, 64]},
}


def _dqn_scenario(world: str):
    sc = _scenario(world)
    return sc.model_copy(update={"policy": sc.policy.model_copy(update={"name": "dqn"})})


def _assert_same_state(a_pol: DQN, b_pol: DQN) -> None:
    assert (a_pol.decisions, a_pol.updates) == (b_pol.decisions, b_pol.updates)
    assert a_pol.rng.bit_generator.state == b_pol.rng.bit_generator.state
    assert a_pol.losses == b_pol.losses
    assert np.array_equal(a_pol.acting.flat, b_pol.acting.flat)
    for name, tensor in a_pol.learner.online_state_dict().items():
        assert torch.equal(tensor, b_pol.learner.online_state_dict()[name])
    rings = [(a_pol.replay, b_pol.replay)] + ([(a_pol.recorded, b_pol.recorded)] if a_pol.recorded else [])
    for ra, rb in rings:
        assert (ra.pos, ra.size) == (rb.pos, rb.size) and ra.size > 0
        for field in ra.FIELDS:
            assert np.array_equal(ra.data[field], rb.data[field])


def _assert_same_training(sc, params: dict, episodes: int = 2) -> DQN:
    """Train two copies of a DQN on each path, episode by episode: every output and the learnt state equal."""
    a_pol = load_policy("dqn", dict(BASE, **params))
    assert compiled_reason(sc, a_pol) is None
    b_pol = copy.deepcopy(a_pol)
    for _ in range(episodes):
        a, b = _run(sc, a_pol, False), _run(sc, b_pol, True)
        _assert_same(a, b)
        assert np.array_equal(a.agent_returns, b.agent_returns)
        _assert_same_state(a_pol, b_pol)
    assert a_pol.updates > 0 and len(a_pol.losses) == a_pol.updates
    return a_pol


@needs_numba
@pytest.mark.parametrize("world", sorted(WORLDS))
@pytest.mark.parametrize("variant", sorted(TRAINING))
def test_training_a_dqn_on_the_compiled_path_learns_what_the_python_path_learns(world, variant):
    _assert_same_training(_dqn_scenario(world), TRAINING[variant])


@needs_numba
def test_a_team_reward_trains_a_dqn_the_same_on_both_paths():
    sc = _dqn_scenario("queues_and_drops")
    sc = sc.model_copy(update={"reward": sc.reward.model_copy(update={"team_fraction": 0.4})})
    _assert_same_training(sc, {"learn_every_s": 120.0})


def _random_network(policy: DQN, seed: int, scale: float = 0.5) -> None:
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in policy.learner.model.online.parameters():
            p.copy_(torch.from_numpy(rng.normal(0.0, scale, tuple(p.shape)).astype(np.float32)))
    policy._sync()


@needs_numba
@pytest.mark.parametrize("world", ["scarce", "queues_and_drops"])
def test_frozen_dqns_act_the_same_on_both_paths_and_take_every_action_but_one(world, monkeypatch):
    """Four frozen DQNs with random networks: the same outputs on both paths; on the Python path their decisions
    together took at least seven of the eight BidActions (random networks rarely prefer PACE)."""
    sc = _dqn_scenario(world)
    policy = load_policy("dqn", dict(BASE, learn=False))
    _run(sc, policy, False)  # builds the network
    taken = set()
    q_values = ActingWeights.q_values

    def counting(self, x):
        q = q_values(self, x)
        taken.update(q.argmax(axis=1).tolist())
        return q

    for seed in (3, 4, 7, 11):
        _random_network(policy, seed)
        monkeypatch.setattr(ActingWeights, "q_values", counting)
        a = _run(sc, copy.deepcopy(policy), False)
        monkeypatch.setattr(ActingWeights, "q_values", q_values)
        b = _run(sc, copy.deepcopy(policy), True)
        _assert_same(a, b)
        assert np.array_equal(a.agent_returns, b.agent_returns)
    assert len(taken) >= 7


def test_numpy_acting_gives_torchs_q_values_and_their_argmax():
    """The acting network by numpy (ActingWeights) against torch's forward pass of the same network: Q-values within
    float32 rounding, and the same argmax wherever the best two are apart by more than that rounding."""
    policy = load_policy("dqn", {"hidden": [64, 64]})
    policy.reset(np.random.default_rng(3), None, 8)
    rng = np.random.default_rng(11)
    for rows in (1, 3, 16, 100, 5000):
        x = rng.normal(0.0, 1.0, (rows, len(policy.features))).astype(np.float32)
        with torch.no_grad():
            want = policy.actor(torch.from_numpy(x)).numpy()
        got = policy.acting.q_values(x)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        top2 = np.sort(want, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-5
        assert np.array_equal(got.argmax(axis=1)[clear], want.argmax(axis=1)[clear])
        assert policy.choose(x, np.arange(rows)).tolist() == got.argmax(axis=1).tolist()
        assert policy.choose_rows(x.tolist(), x, list(range(rows)), 0) == got.argmax(axis=1).tolist()


def test_the_acting_weights_follow_the_learner_in_place():
    """A learning round's refresh copies the online network into the same numpy memory (what the kernel reads)."""
    policy = load_policy("dqn", {"hidden": [16]})
    policy.reset(np.random.default_rng(3), None, 4)
    flat = policy.acting.flat
    with torch.no_grad():
        for p in policy.learner.model.online.parameters():
            p.add_(1.0)
    policy._sync()
    assert policy.acting.flat is flat
    w, b = policy.acting.layers[0]
    layer = policy.actor.layers[0]
    assert np.array_equal(w, layer.weight.detach().numpy().T) and np.array_equal(b, layer.bias.detach().numpy())


@needs_numba
def test_what_has_no_compiled_dqn_form_is_named():
    sc = _dqn_scenario("scarce")
    assert "action layout is 'bid+idle'" in compiled_reason(sc, load_policy("dqn", {"actions": "bid+idle"}))
    replaced = load_policy("dqn", {})
    replaced.choose = lambda *a: np.zeros(1, np.int64)
    assert "not DQN's own per-decision path" in compiled_reason(sc, replaced)

    class Mine(DQN):
        pass

    assert "not DQN's own per-decision path" in compiled_reason(sc, Mine())


@needs_numba
def test_an_error_in_a_learning_round_called_by_the_kernel_reaches_the_caller():
    sc = _dqn_scenario("scarce")
    policy = load_policy("dqn", BASE)

    def failing(batches):
        raise PolicyError("learner went away")

    _run(sc, policy, False)
    policy.learner.steps = failing
    with pytest.raises(PolicyError, match="learner went away"):
        _run(sc, policy, True)


@needs_numba
def test_a_frozen_dqn_that_keeps_transitions_records_what_the_python_path_records():
    sc = _dqn_scenario("scarce")
    policy = load_policy("dqn", dict(BASE, learn=False, keep_transitions=250))
    _run(sc, policy, False)  # builds the network
    _random_network(policy, 7)
    policy.recorded = None  # (building the network recorded some already) a fresh ring at the next reset
    a_pol, b_pol = copy.deepcopy(policy), copy.deepcopy(policy)
    _assert_same(_run(sc, a_pol, False), _run(sc, b_pol, True))
    ra, rb = a_pol.recorded, b_pol.recorded
    assert (ra.pos, ra.size) == (rb.pos, rb.size) and ra.size == 250
    for field in ra.FIELDS:
        assert np.array_equal(ra.data[field], rb.data[field])
    assert len(a_pol.replay) == len(b_pol.replay) == 0 and a_pol.updates == b_pol.updates == 0
