"""The DQN-style serving learner (policies/serving_dqn.py): on the tiny Poisson scenario where one configuration is
best by hand (tests/test_serving_learner.py) it learns that row and beats FullKV on held-out paired seeds; its
numpy acting matches the torch network; checkpoints round-trip and refuse what does not fit; without torch the
core imports and the policy says what to install; `train --policy serving_dqn` through the CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blocked_imports import import_blocker
from dcsim.errors import PolicyError
from dcsim.runner import run_scenario
from dcsim.serving.training import evaluate_serving, serving_evaluation_table, train_serving
from test_cli import dcsim_cli, ok, user_error
from test_serving_cli import _poisson_scenario
from test_serving_learner import _tiny

torch = pytest.importorskip("torch")
from policies.serving_dqn import FEATURES, META_FILE, WEIGHTS_FILE, ServingDQN, feature_matrix  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# The module fixture `trained` takes seconds: under `pytest -n N --dist loadgroup` the tests that use it
# form one xdist group, so it is built once, on one worker (without xdist the mark does nothing).
SERVING_DQN_TRAINED = pytest.mark.xdist_group("serving_dqn_trained")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("servdqn")
    sc = _tiny(tmp)
    curve = train_serving(sc, 5, tmp / "train", params={"epsilon_decay_decisions": 3000}, learner="serving_dqn")
    return sc, tmp / "train", curve


@SERVING_DQN_TRAINED
def test_trained_dqn_picks_the_best_configuration_and_beats_full_kv(trained):
    # row 2 (snap_b) is the clearly best configuration, worked by hand in test_config_2_is_clearly_best_by_hand
    sc, out, curve = trained
    assert curve["seed"].tolist() == [3, 4, 5, 6, 7] and curve["epsilon"].iloc[0] == 1.0
    assert curve["share_config_2"].iloc[-1] > curve["share_config_2"].iloc[0]
    seeds = [10_000 + i for i in range(4)]  # held out: the training used seeds 3..7
    runs = evaluate_serving(sc, out / "checkpoint", seeds, ["serving_full_kv"], learner="serving_dqn")
    learner = runs[runs.arm == "serving_dqn"].set_index("seed")
    full = runs[runs.arm == "serving_full_kv"].set_index("seed")
    for seed in seeds:
        mix = json.loads(learner.loc[seed, "served_by_config"])
        assert mix.get("snap_b", 0) / sum(mix.values()) > 0.8
        assert learner.loc[seed, "denial_rate"] < 0.05
        assert learner.loc[seed, "profit_usd"] > full.loc[seed, "profit_usd"]  # paired: same requests per seed
    table, md = serving_evaluation_table(runs, "serving_dqn")
    assert table.set_index("arm").loc["serving_full_kv", "diff_ci_low"] > 0
    assert "**serving_dqn** beats **serving_full_kv**" in md


@SERVING_DQN_TRAINED
def test_numpy_acting_is_the_online_network(trained):
    _, out, _ = trained
    p = ServingDQN(checkpoint=str(out / "checkpoint"), learn=False)
    x = np.random.default_rng(0).random((7, len(FEATURES))).astype(np.float32)
    with torch.no_grad():
        expected = p.learner.model.online(torch.as_tensor(x)).numpy()
    assert p.q_values(x) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_feature_matrix_scales_the_context():
    f = {"wait_over_ttft": np.array([0.0, 2.0, np.inf]), "occupancy": np.array([0.5] * 3),
         "price_position": np.array([0.25] * 3), "prompt_tokens": np.array([0.0, np.e - 1, 0.0]),
         "output_tokens": np.array([0.0] * 3), "hour_utc": np.array([0.0, 6.0, 12.0])}
    x = feature_matrix(f)
    assert x.shape == (3, len(FEATURES)) and x.dtype == np.float32
    assert x[:, 0].tolist() == pytest.approx([0.0, 0.5, 1.0])  # wait ÷ TTFT clipped at 4, infinite reads 4
    assert x[1, 3] == pytest.approx(0.1) and x[:, 5].tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-7)


@SERVING_DQN_TRAINED
def test_checkpoint_round_trip_and_refusals(trained, tmp_path):
    sc, out, _ = trained
    a = ServingDQN(checkpoint=str(out / "checkpoint"), learn=False)
    b = ServingDQN(checkpoint=str(out / "checkpoint" / WEIGHTS_FILE), learn=False)
    a.save_checkpoint(tmp_path / "again")
    c = ServingDQN(checkpoint=str(tmp_path / "again"), learn=False)
    assert a.reward_scale == c.reward_scale and a.learnt == c.learnt > 0
    ra = run_scenario(sc.model_copy(update={"seed": 99}), policy=b).result.requests
    rc = run_scenario(sc.model_copy(update={"seed": 99}), policy=c).result.requests
    assert ra["config"].tolist() == rc["config"].tolist() and ra["status"].tolist() == rc["status"].tolist()
    other = tmp_path / "two"
    other.mkdir()
    two = _tiny(other, configs="name,times,energies,scores\nfull,1,1,1\nhalf,0.5,0.4,0.8\n", horizon_s=60)
    with pytest.raises(PolicyError, match=r"serving_dqn\.pt: field 'architecture\.n_actions': 5 actions .* 2 rows, "
                                          r"so expected 3 actions"):
        run_scenario(two, policy=ServingDQN(checkpoint=str(out / "checkpoint"), learn=False))
    meta = json.loads((tmp_path / "again" / META_FILE).read_text())
    (tmp_path / "again" / META_FILE).write_text(json.dumps(meta | {"features": ["x"]}))
    with pytest.raises(PolicyError, match=r"serving_dqn\.json: field 'features': got \['x'\]"):
        ServingDQN(checkpoint=str(tmp_path / "again"))
    with pytest.raises(PolicyError, match="file not found"):
        ServingDQN(checkpoint=str(tmp_path / "nowhere"))


def test_bad_parameters_are_named():
    with pytest.raises(PolicyError, match=r"params\.batch_size: got 0"):
        ServingDQN(batch_size=0)
    with pytest.raises(PolicyError, match=r"params\.hidden: got \[\]"):
        ServingDQN(hidden=[])
    with pytest.raises(PolicyError, match=r"serving_dqn: params\.slo_penalty"):
        ServingDQN(slo_penalty=-1)


def test_without_torch_the_core_imports_and_the_policy_says_what_to_install(tmp_path):
    block = import_blocker(tmp_path, "torch")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), str(ROOT)]))
    code = ("import dcsim, dcsim.runner, dcsim.serving.training, policies.serving_learner, policies.serving_dqn\n"
            "from dcsim.policy import load_policy\n"
            "try:\n    load_policy('policies.serving_dqn:ServingDQN', {})\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("PolicyError") and "needs torch" in proc.stdout and "[dqn]" in proc.stdout
    proc = user_error(dcsim_cli("train", _poisson_scenario(tmp_path), "--policy", "serving_dqn", "--episodes", "1",
                                "--out", "tr", "--quiet", cwd=tmp_path, env={"PYTHONPATH": str(block)}))
    assert "needs torch" in proc.stderr


def test_train_serving_dqn_through_the_cli(tmp_path):
    ok(dcsim_cli("train", _poisson_scenario(tmp_path), "--policy", "serving_dqn", "--episodes", "2",
                 "--eval-seeds", "2", "--baselines", "serving_full_kv", "--out", "tr", "--quiet",
                 "--set", "policy.params.updates_per_episode=20", cwd=tmp_path, timeout=300))
    out = tmp_path / "tr"
    for name in ("learning_curve.csv", "checkpoint/serving_dqn.pt", "checkpoint/serving_dqn.json",
                 "train_state.json", "evaluation.md", "evaluation_runs.csv"):
        assert (out / name).is_file(), name
    assert set(pd.read_csv(out / "evaluation_runs.csv")["arm"]) == {"serving_dqn", "serving_full_kv"}
    assert json.loads((out / "train_state.json").read_text())["policy"] == "serving_dqn"
    ok(dcsim_cli("run", _poisson_scenario(tmp_path), "--policy", "policies.serving_dqn:ServingDQN",
                 "--checkpoint", out / "checkpoint", "--out", "ev", cwd=tmp_path))
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["policy"] == "serving_dqn"
