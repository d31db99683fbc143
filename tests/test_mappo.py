"""MAPPO through the PettingZoo env (policies/mappo.py): the semi-Markov GAE and the clipped loss against
hand-worked numbers, a tiny-budget `train --algo mappo` end to end, the trained actor run inside dcsim making the
env's decisions, checkpoints that reload to the same actions, and clear errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from blocked_imports import import_blocker
from test_cli import dcsim_cli, ok, user_error
from tiny_scenarios import tiny_rl_yaml

from dcsim.config import load_scenario
from dcsim.errors import DcsimError, PolicyError
from policies.mappo import MappoConfig, semi_markov_gae

TINY_MAPPO = tiny_rl_yaml("tiny_mappo", reward_extra=", team_fraction: 0.25")


@pytest.fixture
def tiny_path(tmp_path):
    path = tmp_path / "tiny_mappo.yaml"
    path.write_text(TINY_MAPPO, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ GAE (no torch)
def test_gae_hand_worked():
    """Three steps, the last ending the episode; discounts γ^(dt/τ) of 0.5, 1 (same instant) and 0.9.

    t=2: δ = 2 − 0 (no bootstrap past the end) = 2, A = 2
    t=1: δ = 0 + 1·0 − 1 = −1, A = −1 + 1·0.5·2 = 0
    t=0: δ = 1 + 0.5·1 − 0.5 = 1, A = 1 + 0.5·0.5·0 = 1
    """
    adv, ret = semi_markov_gae([1.0, 0.0, 2.0], [0.5, 1.0, 0.0, 9.0], [0.5, 1.0, 0.9], [0, 0, 1], lam=0.5)
    assert adv == pytest.approx([1.0, 0.0, 2.0], abs=1e-12)
    assert ret == pytest.approx([1.5, 1.0, 2.0], abs=1e-12)


def test_gae_limits_are_td_error_and_monte_carlo_return():
    """λ = 0 gives the one-step TD error; λ = 1 gives the discounted return minus V, and no value crosses a done."""
    rng = np.random.default_rng(5)
    T = 12
    r, v = rng.normal(size=T), rng.normal(size=T + 1)
    dt_s = rng.exponential(600.0, T) * (rng.random(T) > 0.3)  # some steps at the same instant (dt = 0)
    disc = np.exp(np.log(0.99) * dt_s / 3600.0)
    done = np.zeros(T)
    done[5] = done[-1] = 1.0  # two episodes back to back
    adv0, _ = semi_markov_gae(r, v, disc, done, lam=0.0)
    assert adv0 == pytest.approx(r + disc * (1 - done) * v[1:] - v[:-1], abs=1e-12)
    _, ret1 = semi_markov_gae(r, v, disc, done, lam=1.0)
    mc = np.zeros(T)
    for t in range(T):  # the discounted sum of rewards to the end of t's episode
        total, scale, k = 0.0, 1.0, t
        while True:
            total += scale * r[k]
            if done[k]:
                break
            scale *= disc[k]
            k += 1
        mc[t] = total
    assert ret1 == pytest.approx(mc, abs=1e-12)


# ------------------------------------------------------------------------------------------ the clipped loss
def test_clipped_loss_hand_worked():
    """ε = 0.2, old log-probabilities 0. Per sample max(−A·ρ, −A·clip(ρ)):

    ρ = 1.5, A = +1: max(−1.5, −1.2) = −1.2, clipped: no gradient
    ρ = 0.5, A = +1: max(−0.5, −0.8) = −0.5, gradient −A·ρ/5 = −0.1
    ρ = 1.5, A = −1: max(+1.5, +1.2) = +1.5, gradient +0.3
    ρ = 0.5, A = −1: max(+0.5, +0.8) = +0.8, clipped: no gradient
    ρ = 1.1, A = +1: max(−1.1, −1.1) = −1.1 (inside the band), gradient −0.22
    mean −0.5 / 5 = −0.1; four of five ratios lie outside [0.8, 1.2].
    """
    torch = pytest.importorskip("torch")
    from policies.mappo import clipped_policy_loss

    new = torch.log(torch.tensor([1.5, 0.5, 1.5, 0.5, 1.1], dtype=torch.float64)).requires_grad_(True)
    loss, clipfrac = clipped_policy_loss(new, torch.zeros(5, dtype=torch.float64),
                                         torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0], dtype=torch.float64), 0.2)
    assert loss.item() == pytest.approx(-0.1, abs=1e-12)
    assert clipfrac.item() == pytest.approx(0.8)
    loss.backward()
    assert new.grad.tolist() == pytest.approx([0.0, -0.1, 0.3, 0.0, -0.22], abs=1e-12)


def test_idle_rows_use_only_the_idle_head():
    """At on_idle steps a GPU's distribution is over the IdleActions alone (the bid head does not leak in)."""
    torch = pytest.importorskip("torch")
    from dcsim.learning import BidAction
    from dcsim.policy import IdleAction
    from policies.mappo import build_networks, gpu_log_probs

    n_bid, n_idle = len(BidAction), len(IdleAction)
    nets = build_networks(6, 4, 5, hidden=8, seed=1)
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(2))
    logp = gpu_log_probs(nets, x, torch.tensor([0, 1, 1])).detach()
    assert logp.shape == (3, n_bid)
    assert logp.exp().sum(dim=1).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
    assert logp[1:, n_idle:].exp().abs().max().item() == 0.0  # choices only bids have: impossible at idle rows
    logits = nets["gpu"](x).detach()
    assert logp[1:, :n_idle].numpy() == pytest.approx(torch.log_softmax(logits[1:, n_bid:], -1).numpy(), abs=1e-6)
    assert logp[0].numpy() == pytest.approx(torch.log_softmax(logits[0, :n_bid], -1).numpy(), abs=1e-6)


# ------------------------------------------------------------------------------------------ end to end
def test_smoke_training_cli_evaluates_and_logs(tiny_path, tmp_path):
    """A tiny budget end to end: checkpoint, curve (episode k on seed + k; the team rewards handed out sum to
    the run's reward), TensorBoard scalars, and the paired-CI evaluation of the trained actor on held-out seeds,
    which `run --checkpoint` with the saved folder reproduces."""
    proc = ok(dcsim_cli("train", tiny_path, "--algo", "mappo", "--episodes", "2", "--eval-seeds", "2",
                        "--horizon", "1h", "--baselines", "always_on", "--algo-option", "update_epochs=2",
                        "--out", "out", "--tensorboard", "tb", "-j", "1", cwd=tmp_path, timeout=300))
    out = tmp_path / "out"
    assert "mappo" in proc.stdout and "always_on" in proc.stdout
    assert (out / "checkpoint" / "mappo.pt").stat().st_size > 0
    curve = pd.read_csv(out / "learning_curve.csv")
    assert curve["seed"].tolist() == [3, 4]
    assert curve["team_return_per_gpu"].to_numpy() == pytest.approx(curve["return_per_gpu"].to_numpy(), abs=1e-9)
    assert np.isfinite(curve[["pg_loss", "v_loss", "entropy"]].to_numpy()).all()
    runs = pd.read_csv(out / "evaluation_runs.csv")
    assert sorted(runs["arm"].unique()) == ["always_on", "mappo"]
    assert sorted(runs["seed"].unique()) == [10003, 10004]  # held out: seed + 10000 onwards
    table = pd.read_csv(out / "evaluation.csv")
    assert table.loc[table.arm == "mappo", "vs"].item() == "always_on"
    assert "paired difference" in (out / "evaluation.md").read_text(encoding="utf-8")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (log,) = (tmp_path / "tb").glob("MAPPO_*")
    acc = EventAccumulator(str(log))
    acc.Reload()
    assert {"charts/return_per_gpu", "losses/pg_loss", "losses/v_loss"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("charts/return_per_gpu")] == [0, 1]

    ok(dcsim_cli("run", tiny_path, "--policy", "policies.mappo:MappoPolicy", "--checkpoint", out / "checkpoint",
                 "--seed", "10003", "--horizon", "1h", "--out", "r", "-q", cwd=tmp_path, timeout=300))
    summary = json.loads((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))
    expected = runs.loc[(runs.arm == "mappo") & (runs.seed == 10003), "return_per_gpu"].item()
    assert summary["reward"]["per_gpu"] == pytest.approx(expected, abs=1e-12)


def _diverse_checkpoint(scenario, folder):
    """A checkpoint whose actor's choices depend on the observation (a fresh actor is near-uniform, so its
    greedy choices barely vary): the heads' weights are scaled up."""
    torch = pytest.importorskip("torch")
    from policies.mappo import MappoTrainer

    trainer = MappoTrainer(scenario, MappoConfig())
    with torch.no_grad():
        for name in ("gpu", "admit"):
            trainer.nets[name][-1].weight.mul_(300.0)
    trainer.save(folder)
    trainer.close()
    return trainer


def test_policy_in_dcsim_makes_the_actors_decisions_through_the_env(tiny_path, tmp_path):
    """The greedy actor through the PettingZoo env (the env's observations) and MappoPolicy inside a plain run
    (its own observations from what the engine hands a policy): the same actions at every decision, the same
    run."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pettingzoo")
    from dcsim.envs.parallel_env import DcsimParallelEnv
    from dcsim.runner import run_scenario
    from policies.mappo import MappoPolicy, gpu_log_probs, read_checkpoint

    sc = load_scenario(tiny_path).model_copy(update={"seed": 11})
    _diverse_checkpoint(sc, tmp_path / "ck")
    seen: dict[str, list] = {"bid": [], "on_idle": [], "admit": []}

    class Recording(MappoPolicy):
        def _gpu_actions(self, obs, kind, column):
            a = super()._gpu_actions(obs, kind, column)
            seen[kind.value].append(a)
            return a

        def admit(self, obs):
            a = super().admit(obs)
            seen["admit"].append(a)
            return a

    plain = run_scenario(sc, policy=Recording(checkpoint=str(tmp_path / "ck"))).result

    _, nets = read_checkpoint(tmp_path / "ck")
    env = DcsimParallelEnv(sc)
    g = len(env.global_names)
    chosen: dict[str, list] = {"bid": [], "on_idle": [], "admit": []}
    obs, infos = env.reset(seed=11)
    done = False
    while not done:
        kind = infos["gpu_0"]["decision"]
        with torch.no_grad():
            if kind == "admit":
                slots = obs["admission"][g:].reshape(env.slots, -1)
                k = int(slots[:, 0].sum())
                x = np.concatenate([np.tile(obs["admission"][:g], (k, 1)), slots[:k]], axis=1)
                a = nets["admit"](torch.from_numpy(x)).argmax(dim=-1).numpy()
                actions = {"admission": np.concatenate([a, np.zeros(env.slots - k, np.int64)])}
            else:
                col = 0 if kind == "bid" else 1
                who = [agent for agent in env.gpu_agents if infos[agent]["deciding"]]
                x = np.stack([obs[agent] for agent in who])
                a = gpu_log_probs(nets, torch.from_numpy(x), torch.full((len(who),), col)).argmax(dim=1).numpy()
                actions = {agent: np.array([v, 0] if col == 0 else [0, v]) for agent, v in zip(who, a)}
        chosen[kind].append(a)
        obs, _, terminations, _, infos = env.step(actions)
        done = terminations["gpu_0"]
    env.close()
    for kind in seen:
        assert chosen[kind], f"the scenario makes no {kind} decision"
        assert np.array_equal(np.concatenate(seen[kind]), np.concatenate(chosen[kind])), kind
    assert len(set(np.concatenate(seen["bid"]).tolist())) > 1  # the check is not of a constant policy
    assert env.last_result.jobs.equals(plain.jobs)
    assert env.last_result.energy == plain.energy and env.last_result.tokens == plain.tokens


def test_checkpoint_reloads_to_the_same_actor(tiny_path, tmp_path):
    """Saved and loaded (twice, and after copying the folder): the same logits on any input, the same runs."""
    torch = pytest.importorskip("torch")
    from dcsim.runner import run_scenario
    from policies.mappo import MappoPolicy, read_checkpoint

    sc = load_scenario(tiny_path)
    trainer = _diverse_checkpoint(sc, tmp_path / "ck")
    shutil.copytree(tmp_path / "ck", tmp_path / "copy")
    _, a = read_checkpoint(tmp_path / "ck")
    _, b = read_checkpoint(tmp_path / "copy" / "mappo.json")
    gen = torch.Generator().manual_seed(0)
    for name, width in (("gpu", trainer.dims["gpu_in"]), ("admit", trainer.dims["slot_in"]),
                        ("critic", trainer.dims["critic_in"])):
        x = torch.randn(16, width, generator=gen)
        with torch.no_grad():
            assert torch.equal(a[name](x), trainer.nets[name](x)) and torch.equal(b[name](x), a[name](x))
    one = run_scenario(sc, policy=MappoPolicy(checkpoint=str(tmp_path / "ck"))).result
    two = run_scenario(sc, policy=MappoPolicy(checkpoint=str(tmp_path / "copy"))).result
    assert one.jobs.equals(two.jobs) and one.tokens == two.tokens
    named = run_scenario(sc, policy=MappoPolicy(checkpoint=str(tmp_path / "ck"), scenario=str(tiny_path))).result
    assert named.jobs.equals(one.jobs)  # the training scenario named as a file: the same forecasts


def test_training_is_reproducible_from_the_seed(tiny_path, tmp_path):
    """The same scenario and seed: the same curve and the same weights (named streams, no global RNG)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pettingzoo")
    from policies.mappo import WEIGHTS_FILE, train_mappo

    sc = load_scenario(tiny_path)
    options = {"update_epochs": 1, "minibatches": 2}
    a = train_mappo(sc, 1, tmp_path / "a", algo_options=options)
    b = train_mappo(sc, 1, tmp_path / "b", algo_options=options)
    c = train_mappo(sc.model_copy(update={"seed": 4}), 1, tmp_path / "c", algo_options=options)
    pd.testing.assert_frame_equal(a, b)
    wa, wb, wc = (torch.load(tmp_path / x / "checkpoint" / WEIGHTS_FILE, weights_only=True) for x in "abc")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)  # another seed: another initialisation and episode


# ------------------------------------------------------------------------------------------ errors
def test_unknown_algo_and_bad_options_are_user_errors(tiny_path, tmp_path):
    proc = user_error(dcsim_cli("train", tiny_path, "--algo", "mapo", cwd=tmp_path))
    assert "--algo 'mapo': allowed: sb3:PPO, sb3:A2C, sb3:DQN, mappo" in proc.stderr
    proc = user_error(dcsim_cli("train", tiny_path, "--algo", "mappo", "--algo-option", "clip=0.1", "--out", "x",
                                cwd=tmp_path))
    assert "--algo-option clip" in proc.stderr and "clip_coef" in proc.stderr
    proc = user_error(dcsim_cli("train", tiny_path, "--algo", "mappo", "--algo-option", "gae_lambda=2",
                                "--out", "x", cwd=tmp_path))
    assert "gae_lambda=2" in proc.stderr and "[0, 1]" in proc.stderr
    proc = user_error(dcsim_cli("train", tiny_path, "--algo", "mappo", "--episodes", "0", "--out", "x",
                                cwd=tmp_path))
    assert "--episodes 0" in proc.stderr
    proc = user_error(dcsim_cli("train", tiny_path, "--algo", "mappo", "--resume", "--out", "x", cwd=tmp_path))
    assert "--resume" in proc.stderr and "mappo" in proc.stderr
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob("*.partial"))


def test_config_refuses_bad_values():
    with pytest.raises(DcsimError, match="minibatches"):
        MappoConfig.from_options({"minibatches": 0})
    with pytest.raises(DcsimError, match="update_epochs"):
        MappoConfig.from_options({"update_epochs": 1.5})
    assert MappoConfig.from_options({"forecast_hours": 2}).forecast_hours == (2.0,)


def test_checkpoint_errors(tiny_path, tmp_path):
    """No checkpoint, a folder without one, and one of another action set: clear errors, no traceback."""
    pytest.importorskip("torch")
    from policies.mappo import META_FILE, MappoPolicy

    with pytest.raises(PolicyError, match="checkpoint="):
        MappoPolicy()
    with pytest.raises(PolicyError, match="learn=true"):
        MappoPolicy(checkpoint="x", learn=True)
    (tmp_path / "empty").mkdir()
    proc = user_error(dcsim_cli("run", tiny_path, "--policy", "policies.mappo:MappoPolicy", "--checkpoint",
                                tmp_path / "empty", "--out", "r1", "-q", cwd=tmp_path))
    assert "no mappo.json" in proc.stderr
    sc = load_scenario(tiny_path)
    _diverse_checkpoint(sc, tmp_path / "ck")
    meta_file = tmp_path / "ck" / META_FILE
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta["action_set"]["bid"] = meta["action_set"]["bid"][:3]
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    proc = user_error(dcsim_cli("run", tiny_path, "--policy", "policies.mappo:MappoPolicy", "--checkpoint",
                                tmp_path / "ck", "--out", "r2", "-q", cwd=tmp_path))
    assert "another action set" in proc.stderr and "retrain" in proc.stderr


def test_module_imports_without_torch_and_says_what_to_install(tiny_path, tmp_path):
    """policies.mappo and its GAE import and run with torch blocked; --algo mappo then says to install dcsim[rl]."""
    import subprocess
    import sys

    from test_cli import REPO

    block = import_blocker(tmp_path, "torch")
    env = {"PYTHONPATH": f"{REPO}:{block}", "PATH": "/usr/bin:/bin"}
    code = ("import sys, policies.mappo as m; a, r = m.semi_markov_gae([1.0], [0.0, 0.0], [1.0], [1.0], 0.9); "
            "assert a[0] == 1.0; assert 'torch' not in sys.modules; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr
    proc = user_error(dcsim_cli("train", tiny_path, "--algo", "mappo", "--out", "x", cwd=tmp_path,
                                env={"PYTHONPATH": str(block)}))
    assert "install dcsim[rl]" in proc.stderr and "torch" in proc.stderr
