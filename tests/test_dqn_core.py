"""DQN core: one learner step against a hand computation in numpy, determinism, checkpoints, learner kinds."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from policies.dqn_core import (  # noqa: E402
    LEARNER_KINDS, DQNLoss, QNetwork, TorchLearner, architecture, make_learner, polyak_update,
)

# A 3-feature, 2-hidden, 2-action net with hand-set weights, and a 3-transition batch whose
# TD errors fall on both sides of the smooth-L1 kink (|e| < 1 and |e| > 1) and whose middle row
# is terminal (discount 0).
W1 = np.array([[0.5, -0.2, 0.1], [-0.3, 0.4, 0.2]])
B1 = np.array([0.1, -0.1])
W2 = np.array([[1.0, -0.5], [0.3, 0.8]])
B2 = np.array([0.05, -0.02])
# Target net: deliberately different from the online net, so the test tells them apart.
TW1 = W1 + 0.1
TB1 = B1 - 0.05
TW2 = W2 * 0.9
TB2 = B2 + 0.1
BATCH = {
    "obs": np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 2.0], [3.0, 0.5, -1.0]], dtype=np.float32),
    "action": np.array([0, 1, 1], dtype=np.int64),
    "reward": np.array([1.0, -0.5, 2.5], dtype=np.float32),
    "next_obs": np.array([[0.5, 1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 2.0, 0.0]], dtype=np.float32),
    # gamma**(dt/tau) * (1 - terminal), as the caller computes it: 0.99**2, terminal, 0.99**0.5
    "discount": np.array([0.99 ** 2, 0.0, 0.99 ** 0.5], dtype=np.float32),
}


def _set(net, w1, b1, w2, b2):
    sd = {"layers.0.weight": w1, "layers.0.bias": b1, "layers.2.weight": w2, "layers.2.bias": b2}
    net.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in sd.items()})


def _hand_step(lr, tau, delta, clip):
    """One SGD step of the DQN loss, by hand in float64: returns the loss and the new online and target weights."""
    x, a, r = BATCH["obs"].astype(float), BATCH["action"], BATCH["reward"].astype(float)
    xn, d = BATCH["next_obs"].astype(float), BATCH["discount"].astype(float)
    n = len(a)
    relu = lambda z: np.maximum(z, 0.0)  # noqa: E731
    # Online forward pass.
    z1 = x @ W1.T + B1
    h = relu(z1)
    q_all = h @ W2.T + B2
    q = q_all[np.arange(n), a]
    # Target: reward + per-transition discount * max over actions of the target net.
    q_next = relu(xn @ TW1.T + TB1) @ TW2.T + TB2
    y = r + d * q_next.max(axis=1)
    e = q - y
    loss = np.mean(np.where(np.abs(e) < delta, 0.5 * e ** 2 / delta, np.abs(e) - 0.5 * delta))
    # Backward pass.
    dq = np.where(np.abs(e) < delta, e / delta, np.sign(e)) / n
    dq_all = np.zeros_like(q_all)
    dq_all[np.arange(n), a] = dq
    g_w2, g_b2 = dq_all.T @ h, dq_all.sum(0)
    dz1 = (dq_all @ W2) * (z1 > 0)
    g_w1, g_b1 = dz1.T @ x, dz1.sum(0)
    grads = [g_w1, g_b1, g_w2, g_b2]
    if clip is not None:
        norm = np.sqrt(sum((g ** 2).sum() for g in grads))
        grads = [g * min(1.0, clip / (norm + 1e-6)) for g in grads]
    online = [p - lr * g for p, g in zip([W1, B1, W2, B2], grads)]
    target = [(1 - tau) * t + tau * o for t, o in zip([TW1, TB1, TW2, TB2], online)]
    return loss, online, target


def _hand_learner(lr, tau, delta, clip):
    learner = TorchLearner(3, 2, hidden=(2,), lr=lr, optimizer="sgd", polyak_tau=tau, huber_delta=delta,
                           grad_clip=clip, device="cpu")
    _set(learner.model.online, W1, B1, W2, B2)
    _set(learner.model.target, TW1, TB1, TW2, TB2)
    return learner


@pytest.mark.parametrize("delta,clip", [(1.0, None), (0.7, None), (1.0, 0.05)])
def test_sgd_step_matches_hand_computation(delta, clip):
    lr, tau = 0.1, 0.25
    loss, online, target = _hand_step(lr, tau, delta, clip)
    learner = _hand_learner(lr, tau, delta, clip)
    got = learner.step(BATCH)
    assert got == pytest.approx(loss, abs=1e-6)
    names = ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]
    got_online = learner.online_state_dict()
    got_target = learner.model.target.state_dict()
    for name, want_o, want_t in zip(names, online, target):
        np.testing.assert_allclose(got_online[name].numpy(), want_o, atol=1e-6, rtol=0)
        np.testing.assert_allclose(got_target[name].numpy(), want_t, atol=1e-6, rtol=0)


def test_hand_batch_exercises_both_huber_branches_and_a_terminal_row():
    """Guards the test above: the batch must hit both smooth-L1 branches, a terminal row, and clipping must bind."""
    x, a = BATCH["obs"].astype(float), BATCH["action"]
    q = (np.maximum(x @ W1.T + B1, 0) @ W2.T + B2)[np.arange(3), a]
    q_next = np.maximum(BATCH["next_obs"] @ TW1.T + TB1, 0) @ TW2.T + TB2
    e = np.abs(q - (BATCH["reward"] + BATCH["discount"] * q_next.max(1)))
    assert (e < 1).any() and (e > 1).any()
    assert (BATCH["discount"] == 0).any()
    # With clip 0.05 the clipped update must differ from the unclipped one.
    assert not np.allclose(_hand_step(0.1, 0.25, 1.0, 0.05)[1][0], _hand_step(0.1, 0.25, 1.0, None)[1][0])


def test_loss_uses_the_target_net_and_gives_it_no_gradient():
    model = DQNLoss(3, 2, hidden=(2,))
    _set(model.online, W1, B1, W2, B2)
    _set(model.target, TW1, TB1, TW2, TB2)
    t = {k: torch.as_tensor(v) for k, v in BATCH.items()}
    loss = model(t["obs"], t["action"], t["reward"], t["next_obs"], t["discount"])
    loss.backward()
    assert all(p.grad is None for p in model.target.parameters())
    assert all(p.grad is not None for p in model.online.parameters())
    assert loss.item() == pytest.approx(_hand_step(0.1, 0.0, 1.0, None)[0], abs=1e-6)


def test_target_starts_as_a_copy_of_online():
    model = DQNLoss(4, 3, hidden=(5,), generator=torch.Generator().manual_seed(1))
    for o, t in zip(model.online.state_dict().values(), model.target.state_dict().values()):
        assert torch.equal(o, t)


def test_polyak_update_blends_in_place():
    online, target = QNetwork(2, 2, (3,)), QNetwork(2, 2, (3,))
    before = [p.detach().clone() for p in target.parameters()]
    polyak_update(target, online, 0.3)
    for b, o, t in zip(before, online.parameters(), target.parameters()):
        torch.testing.assert_close(t.detach(), 0.7 * b + 0.3 * o.detach(), rtol=0, atol=1e-7)
    polyak_update(target, online, 1.0)
    for o, t in zip(online.parameters(), target.parameters()):
        assert torch.equal(o.detach(), t.detach())
    with pytest.raises(ValueError, match="tau"):
        polyak_update(target, online, 1.5)


def _random_batches(n, size=32, n_features=16, n_actions=5, seed=7):
    rng = np.random.default_rng(seed)
    return [{"obs": rng.normal(size=(size, n_features)).astype(np.float32),
             "action": rng.integers(0, n_actions, size).astype(np.int64),
             "reward": rng.normal(size=size).astype(np.float32),
             "next_obs": rng.normal(size=(size, n_features)).astype(np.float32),
             "discount": (0.99 ** rng.uniform(0, 3, size) * (rng.random(size) > 0.1)).astype(np.float32)}
            for _ in range(n)]


def test_same_seed_same_weights_different_seed_different_weights():
    batches = _random_batches(20)
    runs = {}
    for name, seed in [("a", 3), ("b", 3), ("c", 4)]:
        learner = TorchLearner(16, 5, seed=seed, device="cpu")
        losses = learner.steps(batches)
        runs[name] = (losses, learner.online_state_dict())
    assert runs["a"][0] == runs["b"][0]
    for k in runs["a"][1]:
        assert torch.equal(runs["a"][1][k], runs["b"][1][k])
    assert any(not torch.equal(runs["a"][1][k], runs["c"][1][k]) for k in runs["a"][1])


def test_learner_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    TorchLearner(16, 5, seed=0, device="cpu").step(_random_batches(1)[0])
    assert torch.equal(state, torch.random.get_rng_state())


def test_state_dict_round_trip_resumes_identically():
    batches = _random_batches(10)
    a = TorchLearner(16, 5, seed=1, device="cpu")
    a.steps(batches[:5])
    sd = a.state_dict()
    b = TorchLearner(16, 5, seed=99, device="cpu")
    b.load_state_dict(sd)
    assert b.steps_done == 5
    # Both continue with Adam's moments restored: same losses and weights afterwards.
    assert a.steps(batches[5:]) == b.steps(batches[5:])
    for k, v in a.state_dict()["target"].items():
        assert torch.equal(v, b.state_dict()["target"][k])
    for k, v in a.online_state_dict().items():
        assert torch.equal(v, b.online_state_dict()[k])


def test_state_dict_rejects_another_architecture():
    sd = TorchLearner(16, 5, hidden=(8,), device="cpu").state_dict()
    with pytest.raises(ValueError, match="does not match"):
        TorchLearner(16, 5, hidden=(64, 64), device="cpu").load_state_dict(sd)


def test_load_online_weights_sets_online_and_target():
    src = TorchLearner(16, 5, seed=5, device="cpu").online_state_dict()
    dst = TorchLearner(16, 5, seed=6, device="cpu")
    dst.load_online_weights(src)
    for k, v in src.items():
        assert torch.equal(dst.model.online.state_dict()[k], v)
        assert torch.equal(dst.model.target.state_dict()[k], v)


def test_online_state_dict_is_a_cpu_copy():
    learner = TorchLearner(16, 5, device="cpu")
    sd = learner.online_state_dict()
    assert all(v.device.type == "cpu" for v in sd.values())
    sd["layers.0.weight"].add_(1.0)
    assert not torch.equal(sd["layers.0.weight"], learner.model.online.state_dict()["layers.0.weight"])
    # An acting network takes the weights as they are.
    net = QNetwork(16, 5)
    net.load_state_dict(learner.online_state_dict())


def test_batch_errors_name_the_key():
    learner = TorchLearner(16, 5, device="cpu")
    batch = _random_batches(1)[0]
    with pytest.raises(KeyError, match="discount"):
        learner.step({k: v for k, v in batch.items() if k != "discount"})
    with pytest.raises(ValueError, match="obs"):
        learner.step({**batch, "obs": batch["obs"][:, :3]})


def test_architecture_is_json_able():
    import json

    arch = architecture(16, 5, (64, 64))
    assert json.loads(json.dumps(arch)) == {"type": "mlp", "activation": "relu", "n_features": 16,
                                            "n_actions": 5, "hidden": [64, 64]}
    with pytest.raises(ValueError):
        architecture(0, 5, (64,))


def test_make_learner_kinds():
    assert isinstance(make_learner("torch", n_features=4, n_actions=2, device="cpu"), TorchLearner)
    with pytest.raises(ValueError, match="allowed: torch, cerebras-cpu, csx"):
        make_learner("tpu", n_features=4, n_actions=2)
    assert LEARNER_KINDS == ("torch", "cerebras-cpu", "csx")
    with pytest.raises(ValueError, match="optimizer"):
        make_learner("torch", n_features=4, n_actions=2, optimizer="rmsprop")


@pytest.mark.parametrize("kind", ["cerebras-cpu", "csx"])
def test_make_learner_cerebras_outside_its_venv_says_how_to_get_it(kind):
    try:
        import cerebras.pytorch  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("cerebras.pytorch is importable here; tests/cerebras covers these kinds")
    with pytest.raises(ImportError, match=r"tools/setup_cerebras_venv\.sh.*\.venv-cerebras/bin/python -m dcsim train"):
        make_learner(kind, n_features=4, n_actions=2)
