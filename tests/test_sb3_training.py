"""Stable-Baselines3 learners through the Gymnasium env: `train --algo sb3:...` smoke trainings (tiny budgets),
the held-out-seed evaluation, TensorBoard logs, and clear errors."""
from __future__ import annotations

import pandas as pd
import pytest

from test_cli import dcsim_cli, ok, user_error

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

TINY_RL = """\
name: tiny_rl
start: 2023-06-21T15:00:00Z
horizon_s: 2h
seed: 3
cluster: {gpus: 4, gpu_model: H100}
workload:
  arrivals: {process: poisson, rate_per_s: 0.003}
  gpus_per_job: {values: [1, 2], weights: [0.7, 0.3]}
  duration_s: {distribution: lognormal, mean: 900, sigma: 0.5}
  deadline_slack: 3.0
  deferrable_fraction: 0.5
  value_tokens_per_gpu_s: 0.001
supply:
  solar: {capacity_w: 3000, latitude: 37.36, longitude: -121.93}
market: {interval_s: 10min, initial_tokens: 5}
reward: {slo_per_miss: 1.0, drop_per_job: 2.0}
"""


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
    events = list((tmp_path / "tb").glob("PPO_*/events.out.tfevents.*"))
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
    assert "--resume applies to --policy" in proc.stderr
    proc = user_error(dcsim_cli("train", tiny_rl, "--algo", "sb3:PPO", "--timesteps", "8", "--algo-option",
                                "n_stepz=4", "--out", "y", cwd=tmp_path, timeout=300))
    assert "--algo-option" in proc.stderr and "n_stepz" in proc.stderr
    assert not (tmp_path / "y").exists()
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob("*.partial"))


def test_missing_extra_says_install_dcsim_rl(tiny_rl, tmp_path):
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'stable_baselines3':\n"
        "            raise ImportError('No module named ' + repr(name))\n"
        "sys.meta_path.insert(0, _Block())\n", encoding="utf-8")
    proc = user_error(dcsim_cli("train", tiny_rl, "--algo", "sb3:PPO", cwd=tmp_path, env={"PYTHONPATH": str(block)}))
    assert "install dcsim[rl]" in proc.stderr and "stable_baselines3" in proc.stderr
