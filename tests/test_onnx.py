"""ONNX export of trained policies and the ``onnx`` policy: the export chooses the torch network's actions, a run
with it is the frozen DQN's run, and bad checkpoints, files and missing extras are clear errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dcsim.config import load_scenario
from dcsim.errors import DcsimError, PolicyError
from dcsim.learning import FEATURES, BidAction
from dcsim.policy import load_policy
from dcsim.runner import run_scenario
from blocked_imports import import_blocker
from test_cli import dcsim_cli, ok, user_error
from tiny_scenarios import tiny_rl_yaml

ort = pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[1]
ONNX_POLICY = "policies.onnx_policy:OnnxPolicy"
# Nearly every test here shares the module fixtures `trained`, `exported` and `sb3_trainings` (seconds each): under
# `pytest -n N --dist loadgroup` the module is one xdist group, so they are built once (without xdist: no effect).
pytestmark = pytest.mark.xdist_group("onnx_trained")

# Solar in the afternoon, deferrable jobs with deadlines and a tight wallet: the features move over the run, so a
# DQN's greedy actions vary (checked below: a run where every agent always chose FULL would prove little).
TINY = tiny_rl_yaml("tiny_onnx", rate_per_s=0.004, tail="""policy:
  name: dqn
  params: {hidden: [16, 16], min_replay: 8, updates_per_round: 8, lr: 0.01, cheap_multiple: 1.7, pace_safety: 1.5}
""")
# the policy's name and the wall-clock measures of speed are the only fields of summary.json allowed to differ
WALL_CLOCK = {"wall_s", "events_per_wall_s", "simulated_s_per_wall_s"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-episode DQN training of TINY (its folder) and the scenario file."""
    pytest.importorskip("torch")
    from dcsim.train import train

    folder = tmp_path_factory.mktemp("onnx")
    path = folder / "tiny.yaml"
    path.write_text(TINY, encoding="utf-8")
    train(load_scenario(path), "dqn", 2, folder / "dqn", keep_transitions=0)
    return folder / "dqn", path


@pytest.fixture(scope="module")
def exported(trained):
    pytest.importorskip("onnxscript")
    from policies.onnx_export import export_onnx

    folder, _ = trained
    out = folder.parent / "dqn.onnx"
    export_onnx(folder, out)
    return out


def _frozen_dqn(trained):
    folder, _ = trained
    return load_policy("dqn", {"hidden": [16, 16], "checkpoint": str(folder / "checkpoint"), "learn": False})


def _compared(summary: dict) -> dict:
    out = {k: v for k, v in summary.items() if k != "policy"}
    out["performance"] = {k: v for k, v in summary["performance"].items() if k not in WALL_CLOCK}
    return out


def _recording(policy):
    """Record every batch of greedy actions ``policy.choose`` returns."""
    chosen, choose = [], policy.choose

    def wrapped(features, agents):
        actions = choose(features, agents)
        chosen.append(np.asarray(actions).copy())
        return actions

    policy.choose = wrapped
    return chosen


# ------------------------------------------------------------------------------------------------ same actions
def test_onnx_policy_chooses_the_dqn_actions_on_random_observations(trained, exported):
    sc = load_scenario(trained[1])
    dqn = _frozen_dqn(trained)
    run_scenario(sc, policy=dqn)  # builds and loads the network
    onnx_policy = load_policy(ONNX_POLICY, {"checkpoint": str(exported)})
    rng = np.random.default_rng(7)
    for scale in (0.5, 1.0, 3.0):  # inside, around and well outside the features' usual range
        x = rng.normal(0.0, scale, size=(4096, len(FEATURES))).astype(np.float32)
        want = dqn.choose(x, np.arange(len(x)))
        got = onnx_policy.choose(x, np.arange(len(x)))
        assert got.dtype == np.int64 and np.array_equal(got, want)
        assert len(np.unique(want)) >= 3  # the comparison covers several actions, not one constant
    one = x[:1]
    assert np.array_equal(onnx_policy.choose(one, np.arange(1)), dqn.choose(one, np.arange(1)))


def test_onnx_policy_run_is_the_frozen_dqn_run(trained, exported):
    sc = load_scenario(trained[1])
    dqn = _frozen_dqn(trained)
    dqn_actions = _recording(dqn)
    a = run_scenario(sc, policy=dqn)
    onnx_policy = load_policy(ONNX_POLICY, {"checkpoint": str(exported)})
    onnx_actions = _recording(onnx_policy)
    b = run_scenario(sc, policy=onnx_policy)
    assert len(dqn_actions) == len(onnx_actions) > 10
    assert all(np.array_equal(x, y) for x, y in zip(dqn_actions, onnx_actions))
    assert len(np.unique(np.concatenate(dqn_actions))) >= 2  # the run exercises more than one bid
    assert _compared(a.summary) == _compared(b.summary)
    assert a.result.jobs.equals(b.result.jobs)
    # the bid settings came from the training's scenario, not the defaults
    assert (onnx_policy.cheap_multiple, onnx_policy.pace_safety) == (1.7, 1.5)


def test_export_and_run_from_the_command_line_give_the_same_summary(trained, tmp_path):
    pytest.importorskip("onnxscript")
    folder, scenario = trained
    proc = ok(dcsim_cli("export", folder, "--onnx", "p.onnx", cwd=tmp_path, timeout=300))
    assert "FULL, FULL_IF_CHEAP" in proc.stdout and "p.onnx" in proc.stdout
    ok(dcsim_cli("run", scenario, "--checkpoint", folder / "checkpoint", "--out", "torch", "-q", cwd=tmp_path))
    ok(dcsim_cli("run", scenario, "--policy", ONNX_POLICY, "--checkpoint", "p.onnx", "--out", "onnx", "-q",
                 cwd=tmp_path))
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("torch", "onnx"))
    assert a["policy"] == "dqn" and b["policy"] == "onnx"
    assert _compared(a) == _compared(b)


def test_export_metadata_names_the_action_set_features_and_bid_settings(trained, exported):
    import onnx

    from policies.onnx_policy import read_metadata

    model = onnx.load(str(exported))
    assert [i.name for i in model.graph.input] == ["obs"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == len(FEATURES)  # dynamic batch, fixed width
    assert [o.name for o in model.graph.output] == ["q_values", "action"]
    meta = read_metadata(exported)
    assert meta["kind"] == "dqn"
    assert json.loads(meta["features"]) == list(FEATURES)
    assert json.loads(meta["actions"]) == {"BidAction": list(BidAction.__members__)}
    assert json.loads(meta["bid_params"]) == {"cheap_multiple": 1.7, "block_limit_multiple": 2.0, "pace_safety": 1.5}
    assert meta["source"] == str((trained[0] / "checkpoint" / "dqn.pt").resolve())


def test_export_accepts_the_checkpoint_folder_and_its_dqn_pt(trained, exported, tmp_path):
    from policies.onnx_export import export_onnx

    folder, _ = trained
    x = np.random.default_rng(3).normal(size=(512, len(FEATURES))).astype(np.float32)
    want = load_policy(ONNX_POLICY, {"checkpoint": str(exported)}).choose(x, np.arange(512))
    for source in (folder / "checkpoint", folder / "checkpoint" / "dqn.pt"):
        out = tmp_path / f"{source.name}.onnx"
        export_onnx(source, out)
        assert np.array_equal(load_policy(ONNX_POLICY, {"checkpoint": str(out)}).choose(x, np.arange(512)), want)


# ------------------------------------------------------------------------------------------------ bad input
def test_export_of_a_missing_or_wrong_checkpoint_is_a_clear_error(trained, tmp_path):
    pytest.importorskip("onnxscript")
    folder, scenario = trained
    proc = user_error(dcsim_cli("export", "nowhere", "--onnx", "x.onnx", cwd=tmp_path))
    assert "CHECKPOINT nowhere: no such file or folder" in proc.stderr and "--policy dqn" in proc.stderr
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    proc = user_error(dcsim_cli("export", "junk", "--onnx", "x.onnx", cwd=tmp_path))
    assert "without dqn.pt" in proc.stderr and "notes.txt" in proc.stderr
    proc = user_error(dcsim_cli("export", folder, "--onnx", "no/such/folder/x.onnx", cwd=tmp_path))
    assert "folder no/such/folder does not exist" in proc.stderr
    # a corrupt dqn.pt
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dqn.json").write_text((folder / "checkpoint" / "dqn.json").read_text())
    (bad / "dqn.pt").write_bytes(b"not a torch file")
    proc = user_error(dcsim_cli("export", bad, "--onnx", "x.onnx", cwd=tmp_path, timeout=300))
    assert "cannot load DQN weights" in proc.stderr and "dqn.pt" in proc.stderr
    # a checkpoint of the old 5-action set
    spec = json.loads((folder / "checkpoint" / "dqn.json").read_text())
    (bad / "dqn.json").write_text(json.dumps(spec | {"n_actions": 5}))
    proc = user_error(dcsim_cli("export", bad, "--onnx", "x.onnx", cwd=tmp_path, timeout=300))
    assert "a checkpoint for 5 actions" in proc.stderr
    # a Q-learning training has no network
    ok(dcsim_cli("train", scenario, "--policy", "qlearning", "--episodes", "1", "--out", "q", "-q", cwd=tmp_path,
                 timeout=300))
    proc = user_error(dcsim_cli("export", "q", "--onnx", "x.onnx", cwd=tmp_path, timeout=300))
    assert "'qlearning'" in proc.stderr and "no network" in proc.stderr
    proc = user_error(dcsim_cli("export", "q/checkpoint", "--onnx", "x.onnx", cwd=tmp_path, timeout=300))
    assert "Q-learning checkpoint" in proc.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_onnx_policy_bad_paths_and_files_are_clear_errors(trained, exported, tmp_path):
    with pytest.raises(PolicyError, match="needs the exported model"):
        load_policy(ONNX_POLICY, {})
    with pytest.raises(PolicyError, match="no such file"):
        load_policy(ONNX_POLICY, {"checkpoint": str(tmp_path / "missing.onnx")})
    with pytest.raises(PolicyError, match="is a folder"):
        load_policy(ONNX_POLICY, {"checkpoint": str(tmp_path)})
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(PolicyError, match="not a readable ONNX model"):
        load_policy(ONNX_POLICY, {"checkpoint": str(junk)})
    with pytest.raises(PolicyError, match="does not learn"):
        load_policy(ONNX_POLICY, {"checkpoint": str(exported), "learn": True})
    # from the command line: a missing file, and a rule-based policy given --checkpoint
    _, scenario = trained
    proc = user_error(dcsim_cli("run", scenario, "--policy", ONNX_POLICY, "--checkpoint", "missing.onnx",
                                cwd=tmp_path))
    assert "--checkpoint missing.onnx: no such file" in proc.stderr
    proc = user_error(dcsim_cli("run", scenario, "--policy", ONNX_POLICY, "--checkpoint", junk, cwd=tmp_path))
    assert "not a readable ONNX model" in proc.stderr


def _with_metadata(src: Path, dst: Path, **changes: str) -> Path:
    import onnx

    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props} | {f"dcsim.{k}": v for k, v in changes.items()}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(dst))
    return dst


def test_onnx_policy_refuses_a_model_of_another_action_set_or_features(exported, tmp_path):
    pytest.importorskip("onnx")
    old = list(BidAction.__members__)[:5]
    path = _with_metadata(exported, tmp_path / "old.onnx", actions=json.dumps({"BidAction": old}))
    with pytest.raises(PolicyError, match="another action set"):
        load_policy(ONNX_POLICY, {"checkpoint": str(path)})
    path = _with_metadata(exported, tmp_path / "feat.onnx", features=json.dumps(list(FEATURES)[:-1] + ["other"]))
    with pytest.raises(PolicyError, match="observation features"):
        load_policy(ONNX_POLICY, {"checkpoint": str(path)})
    path = _with_metadata(exported, tmp_path / "sb3.onnx", kind="sb3", algo="sb3:PPO")
    with pytest.raises(PolicyError, match="Stable-Baselines3"):
        load_policy(ONNX_POLICY, {"checkpoint": str(path)})


def test_setup_cfg_registers_the_onnx_policy():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    entries = dict(line.split(" = ") for line in cfg["options.entry_points"]["dcsim.policies"].strip().splitlines())
    assert entries["onnx"] == ONNX_POLICY
    extra = cfg["options.extras_require"]["onnx"].split()
    assert {e.split(">=")[0] for e in extra} == {"onnx", "onnxruntime", "onnxscript"}


def test_without_the_onnx_extra_the_core_imports_and_export_says_what_to_install(trained, tmp_path):
    block = import_blocker(tmp_path, "onnx", "onnxruntime", "onnxscript")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), str(ROOT)]))
    code = "import dcsim, dcsim.cli, dcsim.runner, policies.onnx_policy, policies.onnx_export; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    folder, scenario = trained
    proc = user_error(dcsim_cli("export", folder, "--onnx", "x.onnx", cwd=tmp_path, env={"PYTHONPATH": str(block)}))
    assert "install dcsim[onnx]" in proc.stderr and "onnx" in proc.stderr
    (tmp_path / "m.onnx").write_bytes(b"x")
    proc = user_error(dcsim_cli("run", scenario, "--policy", ONNX_POLICY, "--checkpoint", "m.onnx", cwd=tmp_path,
                                env={"PYTHONPATH": str(block)}))
    assert "install dcsim[onnx]" in proc.stderr and "onnxruntime" in proc.stderr


# ------------------------------------------------------------------------------------------------ Stable-Baselines3
@pytest.fixture(scope="module")
def sb3_trainings(trained):
    """Tiny PPO (per_agent layout) and DQN (shared layout) trainings of TINY through the env."""
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("onnxscript")
    from dcsim.envs.sb3 import train_sb3

    _, path = trained
    sc = load_scenario(path)
    out = {}
    for algo, options in (("sb3:PPO", {"n_steps": 32, "batch_size": 16}),
                          ("sb3:DQN", {"learning_starts": 16, "train_freq": 4})):
        folder = path.parent / algo.replace(":", "-")
        train_sb3(sc, algo, 64, folder, algo_options=options)
        out[algo] = folder
    return sc, out


@pytest.mark.parametrize("algo", ["sb3:PPO", "sb3:DQN"])
def test_sb3_export_gives_the_models_greedy_actions_and_runs_through_the_env(sb3_trainings, tmp_path, algo):
    from stable_baselines3 import DQN, PPO

    from dcsim.envs.sb3 import MODEL_FILE, evaluate_model
    from policies.onnx_export import export_onnx
    from policies.onnx_policy import OnnxEnvModel

    sc, folders = sb3_trainings
    out = tmp_path / "m.onnx"
    meta = export_onnx(folders[algo], out)
    assert meta["kind"] == "sb3" and meta["algo"] == algo
    model = {"sb3:PPO": PPO, "sb3:DQN": DQN}[algo].load(folders[algo] / MODEL_FILE, device="cpu")
    onnx_model = OnnxEnvModel(out)
    width = model.observation_space.shape[0]
    x = np.random.default_rng(5).uniform(-2.0, 2.0, size=(1000, width)).astype(np.float32)
    want, _ = model.predict(x, deterministic=True)
    got, _ = onnx_model.predict(x)
    assert got.shape == want.shape and np.array_equal(got, want)
    assert len(np.unique(want)) >= 3
    one, _ = onnx_model.predict(x[0])
    assert np.array_equal(one, model.predict(x[0], deterministic=True)[0])
    a = evaluate_model(model, sc, [31], algo, algo)
    b = evaluate_model(onnx_model, sc, [31], algo, algo)
    assert a.equals(b)
    with pytest.raises(DcsimError, match="observation of shape"):
        onnx_model.predict(x[:, :-1])
    from dcsim.envs.gym_env import DcsimEnv

    layout = "per_agent" if algo == "sb3:PPO" else "shared"
    onnx_model.check_env(DcsimEnv(sc, action_layout=layout))
    bigger = sc.model_copy(update={"cluster": sc.cluster.model_copy(update={"gpus": 5})})
    with pytest.raises(DcsimError, match="another scenario size"):
        onnx_model.check_env(DcsimEnv(bigger, action_layout=layout))


def test_sb3_and_dqn_exports_are_not_interchangeable(sb3_trainings, exported, tmp_path):
    from policies.onnx_export import export_onnx
    from policies.onnx_policy import OnnxEnvModel

    _, folders = sb3_trainings
    out = tmp_path / "ppo.onnx"
    export_onnx(folders["sb3:PPO"], out)
    with pytest.raises(PolicyError, match="Stable-Baselines3 model"):
        load_policy(ONNX_POLICY, {"checkpoint": str(out)})
    with pytest.raises(PolicyError, match="expected 'sb3'"):
        OnnxEnvModel(exported)


def test_sb3_export_of_another_action_set_is_a_clear_error(sb3_trainings, tmp_path):
    from policies.onnx_export import export_onnx
    from test_sb3_training import old_action_set_training

    sc, folders = sb3_trainings
    folder = old_action_set_training(sc, folders["sb3:PPO"], tmp_path / "old")
    with pytest.raises(DcsimError, match=r"action space has sizes \[5, 5, 5"):
        export_onnx(folder, tmp_path / "x.onnx")
    (folder / "train_metadata.yaml").unlink()
    with pytest.raises(DcsimError, match="no train_metadata.yaml"):
        export_onnx(folder, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
