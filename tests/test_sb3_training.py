"""Stable-Baselines3 learners through the Gymnasium env: `train --algo sb3:...` smoke trainings (tiny budgets),
the held-out-seed evaluation, TensorBoard logs, and clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blocked_imports import import_blocker
from test_cli import dcsim_cli, ok, user_error
from tiny_scenarios import tiny_rl_yaml

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

TINY_RL = tiny_rl_yaml()


@pytest.fixture
def tiny_rl(tmp_path):
    path = tmp_path / "tiny_rl.yaml"
    path.write_text(TINY_RL, encoding="utf-8")
    return path


def test_ppo_smoke_training_with_evaluation_and_tensorboard(tiny_rl, tmp_path):
    proc = ok(dcsim_cli("train", tiny_rl, "--algo", "sb3:PPO", "--timesteps", "96", "--algo-option", "n_steps=48",
                        "--algo-option", "batch_size=16", "--eval-seeds", "2", "--baselines", "always_on",
                        "--out", "out", "--tensorboard", "tb", "-j", "1", cwd=tmp_path, timeout=600))
    out = tmp_path / "out"
    assert "sb3:PPO" in proc.stdout and "always_on" in proc.stdout
    assert (out / "model.zip").stat().st_size > 0
    curve = pd.read_csv(out / "learning_curve.csv")
    assert len(curve) >= 1 and curve["seed"].tolist() == list(range(3, 3 + len(curve)))  # episode k: seed + k
    runs = pd.read_csv(out / "evaluation_runs.csv")
    assert sorted(runs["arm"].unique()) == ["always_on", "sb3:PPO"]
    assert sorted(runs["seed"].unique()) == [10003, 10004]  # held out: seed + 10000 onwards
    table = pd.read_csv(out / "evaluation.csv")
    assert table.loc[table.arm == "sb3:PPO", "vs"].item() == "always_on"
    events = list((tmp_path / "tb").glob("out-PPO_*/events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


@pytest.mark.parametrize("algo, options", [("DQN", {"learning_starts": 16, "train_freq": 4}),
                                           ("A2C", {"n_steps": 8})])
def test_dqn_and_a2c_train_through_the_env(tiny_rl, tmp_path, algo, options):
    from stable_baselines3 import A2C, DQN

    from dcsim.config import load_scenario
    from dcsim.envs.sb3 import MODEL_FILE, evaluate_model, train_sb3

    sc = load_scenario(tiny_rl)
    curve = train_sb3(sc, f"sb3:{algo}", 100, tmp_path / "o", algo_options=options)
    assert len(curve) >= 1
    model = {"DQN": DQN, "A2C": A2C}[algo].load(tmp_path / "o" / MODEL_FILE)
    rows = evaluate_model(model, sc, [21], f"sb3:{algo}", f"sb3:{algo}")
    again = evaluate_model(model, sc, [21], f"sb3:{algo}", f"sb3:{algo}")
    assert rows.equals(again)  # greedy evaluation of a saved model is reproducible


def test_unknown_algo_is_a_user_error(tiny_rl, tmp_path):
    proc = user_error(dcsim_cli("train", tiny_rl, "--algo", "sb3:SAC", cwd=tmp_path))
    assert "--algo 'sb3:SAC': allowed: sb3:PPO, sb3:A2C, sb3:DQN" in proc.stderr
    proc = user_error(dcsim_cli("train", tiny_rl, cwd=tmp_path))
    assert "--policy" in proc.stderr and "--algo" in proc.stderr and "neither" in proc.stderr
    proc = user_error(dcsim_cli("train", tiny_rl, "--algo", "sb3:PPO", "--policy", "dqn", cwd=tmp_path))
    assert "not both" in proc.stderr
    proc = user_error(dcsim_cli("train", tiny_rl, "--algo", "sb3:PPO", "--resume", "--out", "x", cwd=tmp_path))
    assert "--resume: x/model.zip not found" in proc.stderr
    proc = user_error(dcsim_cli("train", tiny_rl, "--algo", "sb3:PPO", "--resume", cwd=tmp_path))
    assert "--resume needs --out" in proc.stderr
    proc = user_error(dcsim_cli("train", tiny_rl, "--algo", "sb3:PPO", "--timesteps", "8", "--algo-option",
                                "n_stepz=4", "--out", "y", cwd=tmp_path, timeout=300))
    assert "--algo-option" in proc.stderr and "n_stepz" in proc.stderr
    assert not (tmp_path / "y").exists()
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob("*.partial"))


def test_missing_extra_says_install_dcsim_rl(tiny_rl, tmp_path):
    block = import_blocker(tmp_path, "stable_baselines3")
    proc = user_error(dcsim_cli("train", tiny_rl, "--algo", "sb3:PPO", cwd=tmp_path, env={"PYTHONPATH": str(block)}))
    assert "install dcsim[rl]" in proc.stderr and "stable_baselines3" in proc.stderr


# ------------------------------------------------------------------------------------------------ --resume
def test_resume_continues_from_model_zip_with_the_episode_count_carried(tiny_rl, tmp_path):
    import yaml
    from stable_baselines3 import PPO

    from dcsim.config import load_scenario
    from dcsim.envs.sb3 import MODEL_FILE, train_sb3

    sc = load_scenario(tiny_rl)
    out = tmp_path / "o"
    first = train_sb3(sc, "sb3:PPO", 64, out, algo_options={"n_steps": 32, "batch_size": 16})
    before = PPO.load(out / MODEL_FILE, device="cpu")
    done = int(before.num_timesteps)
    curve = train_sb3(sc, "sb3:PPO", done + 100, out, resume=True)
    assert len(curve) > len(first)
    assert curve.iloc[:len(first)].equals(first)  # the earlier episodes are kept as they were
    assert curve["episode"].tolist() == list(range(len(curve)))  # numbering carries on
    assert curve["seed"].tolist() == [sc.seed + k for k in range(len(curve))]  # episode k: seed + k
    assert pd.read_csv(out / "learning_curve.csv").equals(curve)
    after = PPO.load(out / MODEL_FILE, device="cpu")
    assert after.num_timesteps >= done + 100
    meta = yaml.safe_load((out / "train_metadata.yaml").read_text())
    assert meta["resumed_at_timesteps"] == [done] and meta["timesteps_done"] == after.num_timesteps
    assert meta["algo_options"] == {"n_steps": 32, "batch_size": 16}  # kept from the first training
    assert after.n_steps == 32


def test_resume_starts_from_the_saved_weights(tiny_rl, tmp_path):
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor

    from dcsim.config import load_scenario
    from dcsim.envs.gym_env import DcsimEnv
    from dcsim.envs.sb3 import MODEL_FILE, _resume, train_sb3

    sc = load_scenario(tiny_rl)
    out = tmp_path / "o"
    train_sb3(sc, "sb3:PPO", 64, out, algo_options={"n_steps": 32, "batch_size": 16})
    saved = PPO.load(out / MODEL_FILE, device="cpu").policy.state_dict()
    env = Monitor(DcsimEnv(sc))
    model, _, earlier = _resume(PPO, env, sc, "sb3:PPO", 10_000, out, {}, None)
    fresh = PPO("MlpPolicy", env, seed=sc.seed, device="cpu", n_steps=32, batch_size=16).policy.state_dict()
    env.close()
    loaded = model.policy.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert not all(torch.equal(fresh[k], saved[k]) for k in saved)  # training moved the weights: a real check
    assert len(earlier) >= 1


def test_resume_refuses_another_algo_scenario_action_set_or_budget(tiny_rl, tmp_path):
    import yaml

    from dcsim.config import load_scenario
    from dcsim.envs.sb3 import train_sb3
    from dcsim.errors import DcsimError

    sc = load_scenario(tiny_rl)
    out = tmp_path / "o"
    train_sb3(sc, "sb3:PPO", 40, out, algo_options={"n_steps": 20, "batch_size": 10})
    with pytest.raises(DcsimError, match="holds a sb3:PPO training; asked for --algo sb3:A2C"):
        train_sb3(sc, "sb3:A2C", 400, out, resume=True)
    with pytest.raises(DcsimError, match="cluster.gpus: trained with 4, given 5"):
        train_sb3(sc.model_copy(update={"cluster": sc.cluster.model_copy(update={"gpus": 5})}), "sb3:PPO", 400,
                  out, resume=True)
    with pytest.raises(DcsimError, match="already trained 40 steps"):
        train_sb3(sc, "sb3:PPO", 40, out, resume=True)
    with pytest.raises(DcsimError, match="keeps the settings"):
        train_sb3(sc, "sb3:PPO", 400, out, resume=True, algo_options={"n_steps": 8})
    meta_path = out / "train_metadata.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta_path.write_text(yaml.safe_dump(meta | {"action_layout": "shared"}))
    with pytest.raises(DcsimError, match="field 'action_layout'.*another action set"):
        train_sb3(sc, "sb3:PPO", 400, out, resume=True)
    old_bids = meta["action_set"] | {"BidAction": meta["action_set"]["BidAction"][:5]}
    meta_path.write_text(yaml.safe_dump(meta | {"action_set": old_bids}))
    with pytest.raises(DcsimError, match="field 'action_set'.*another action set"):
        train_sb3(sc, "sb3:PPO", 400, out, resume=True)
    old = old_action_set_training(sc, out, tmp_path / "old")
    meta_path.write_text(yaml.safe_dump(meta))
    with pytest.raises(DcsimError, match=r"action space has sizes \[5, 5, 5"):
        train_sb3(sc, "sb3:PPO", 400, old, resume=True)


def test_resume_of_another_action_set_from_the_command_line_is_a_user_error(tiny_rl, tmp_path):
    from dcsim.config import load_scenario
    from dcsim.envs.sb3 import train_sb3

    sc = load_scenario(tiny_rl)
    train_sb3(sc, "sb3:PPO", 20, tmp_path / "o", algo_options={"n_steps": 20, "batch_size": 10})
    old_action_set_training(sc, tmp_path / "o", tmp_path / "old")
    proc = user_error(dcsim_cli("train", tiny_rl, "--algo", "sb3:PPO", "--resume", "--out", "old", "--timesteps",
                                "100", cwd=tmp_path, timeout=300))
    assert "another action set" in proc.stderr and "Traceback" not in proc.stderr


def old_action_set_training(sc, real_training: Path, folder: Path) -> Path:
    """A PPO model.zip of the old 5-bid action set (same observations), with the real training's metadata."""
    import gymnasium as gym
    import yaml
    from gymnasium import spaces
    from stable_baselines3 import PPO

    from dcsim.envs.gym_env import DcsimEnv

    real = DcsimEnv(sc)
    n, slots = sc.cluster.gpus, real.slots

    class OldEnv(gym.Env):
        observation_space = real.observation_space
        action_space = spaces.MultiDiscrete([5] * n + [3] * n + [2] * slots)

        def reset(self, *, seed=None, options=None):
            return np.zeros(self.observation_space.shape, np.float32), {}

        def step(self, action):
            return np.zeros(self.observation_space.shape, np.float32), 0.0, True, False, {}

    real.close()
    folder.mkdir()
    PPO("MlpPolicy", OldEnv(), n_steps=8, batch_size=8, device="cpu").save(folder / "model.zip")
    meta = yaml.safe_load((real_training / "train_metadata.yaml").read_text())
    meta.pop("action_set")  # as written before train_metadata.yaml recorded it
    (folder / "train_metadata.yaml").write_text(yaml.safe_dump(meta))
    (folder / "learning_curve.csv").write_text((real_training / "learning_curve.csv").read_text())
    return folder


# ------------------------------------------------------------------------------------------------ speed without change
def test_equal_runs_groups_consecutive_equal_sizes():
    from dcsim.envs.sb3_policy import equal_runs

    assert equal_runs([8, 8, 8, 3, 3, 2]) == [(8, 3), (3, 2), (2, 1)]
    assert equal_runs([2, 3, 2]) == [(2, 1), (3, 1), (2, 1)]  # only consecutive ones: the order is kept
    assert equal_runs([]) == []


@pytest.mark.parametrize("batch", [1, 5])
def test_grouped_distribution_is_sb3s_multicategorical_bit_for_bit(batch):
    """Samples (same generator state), log-probabilities, entropies, modes and gradients are SB3's own."""
    import torch
    from stable_baselines3.common.distributions import MultiCategoricalDistribution

    from dcsim.envs.sb3_policy import GroupedMultiCategoricalDistribution

    dims = [8] * 4 + [3] * 4 + [2] * 3 + [8]
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(batch, sum(dims), generator=gen)).requires_grad_()
    stock, grouped = MultiCategoricalDistribution(dims), GroupedMultiCategoricalDistribution(dims)
    torch.manual_seed(7)
    a = stock.proba_distribution(logits).sample()
    torch.manual_seed(7)
    assert torch.equal(grouped.proba_distribution(logits).sample(), a)
    assert torch.equal(grouped.mode(), stock.mode())
    weights = torch.randn(batch, generator=gen)
    grads = []
    for dist in (stock, grouped):
        dist.proba_distribution(logits)  # a fresh distribution, as each minibatch of a training
        logp, ent = dist.log_prob(a), dist.entropy()
        grads.append((logp, ent, torch.autograd.grad((weights * logp).mean() + 0.01 * ent.mean(), logits)[0]))
    for s, g in zip(*grads):
        assert torch.equal(s, g)
    # and against the definition: log p(a) is the sum over dimensions of log softmax(logits of the dimension)[a]
    parts = torch.split(logits.detach(), dims, dim=1)
    by_hand = sum(torch.log_softmax(p, dim=1)[torch.arange(batch), a[:, i]] for i, p in enumerate(parts))
    assert torch.allclose(grads[1][0].detach(), by_hand, atol=1e-5)


def test_ppo_with_the_grouped_policy_trains_exactly_as_mlppolicy(tiny_rl):
    """The speed-up changes nothing: the same seed gives the same weights and the same episodes."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor

    from dcsim.config import load_scenario
    from dcsim.envs.gym_env import DcsimEnv
    from dcsim.envs.sb3 import policy_for, torch_threads

    sc = load_scenario(tiny_rl)
    trained = []
    for policy in ("MlpPolicy", policy_for("sb3:PPO")):
        env = Monitor(DcsimEnv(sc))
        with torch_threads():
            model = PPO(policy, env, seed=sc.seed, device="cpu", n_steps=32, batch_size=16, n_epochs=2)
            model.learn(total_timesteps=96)
        trained.append((model.policy.state_dict(), env.get_episode_rewards()))
        env.close()
    (stock, stock_returns), (grouped, grouped_returns) = trained
    assert type(model.policy).__name__ == "GroupedMlpPolicy"
    assert stock.keys() == grouped.keys() and all(torch.equal(stock[k], grouped[k]) for k in stock)
    assert stock_returns == grouped_returns and len(stock_returns) >= 1


def test_a_resumed_training_logs_to_its_own_tensorboard_run(tiny_rl, tmp_path):
    """Two trainings share a TensorBoard folder; resuming the first appends to the first's run, not the newest."""
    from dcsim.config import load_scenario
    from dcsim.envs.sb3 import train_sb3

    sc = load_scenario(tiny_rl)
    tb = tmp_path / "tb"
    options = {"n_steps": 16, "batch_size": 16}
    train_sb3(sc, "sb3:PPO", 16, tmp_path / "first", algo_options=options, tensorboard=tb)
    train_sb3(sc, "sb3:PPO", 16, tmp_path / "second", algo_options=options, tensorboard=tb)
    assert sorted(d.name for d in tb.iterdir()) == ["first-PPO_1", "second-PPO_1"]
    second = sorted(f.name for f in (tb / "second-PPO_1").iterdir())
    train_sb3(sc, "sb3:PPO", 32, tmp_path / "first", tensorboard=tb, resume=True)
    assert sorted(d.name for d in tb.iterdir()) == ["first-PPO_1", "second-PPO_1"]
    assert len(list((tb / "first-PPO_1").iterdir())) == 2  # the first run's events, then the resumed run's
    assert sorted(f.name for f in (tb / "second-PPO_1").iterdir()) == second
