"""Output safety: bad output locations fail before simulating, --overwrite replaces a folder whole, interrupted
runs never look finished, `train --resume` after a kill anywhere reproduces an uninterrupted training, and
broken checkpoints or resume states are clear errors that leave earlier results alone.

Kills are real (subprocesses stopped with SIGINT, SIGTERM, SIGKILL) or, to reach every write of a training,
simulated in process by stopping at the n-th rename (the files on disk are then what a kill there leaves).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcsim.cli import main
from dcsim.config import parse_scenario
from dcsim.errors import DcsimError
from dcsim.train import train
from test_cli import REPO, TINY, ok, user_error

FUZZ = settings(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Four H100s losing tokens on every job (the learning tests' LOSING world, smaller): trains in ~0.1 s an episode.
TRAIN = {
    "name": "learn", "start": "2023-06-21T00:00:00Z", "horizon_s": 4 * 3600, "seed": 3,
    "cluster": {"gpus": 4, "gpu_model": "H100"},
    "workload": {"arrivals": {"process": "poisson", "rate_per_s": 0.002},
                 "duration_s": {"distribution": "exponential", "mean": 1800}, "value_tokens_per_gpu_s": 1e-4},
    "market": {"initial_tokens": 100.0, "endowment_tokens": 0.0, "interval_s": 300},
}
DQN_PARAMS = {"hidden": [16, 16], "batch_size": 32, "min_replay": 32, "updates_per_round": 2,
              "epsilon_decay_decisions": 500.0}
# Long enough (a month of 64 busy GPUs) that a run is still simulating when the test stops it.
LONG = ["--horizon", "60d", "--set", "cluster.gpus=64", "--set", "workload.arrivals.rate_per_s=0.2"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MPLBACKEND"] = "Agg"
    return env


def cli(*args, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dcsim", *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _default_sigint() -> None:
    # a test suite started in the background (`pytest &`) inherits SIGINT ignored, and Python keeps it ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dcsim", *map(str, args)], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def wait_for(predicate, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Poll until ``predicate()`` holds; fails if the process ends first."""
    end = time.monotonic() + timeout_s
    while not predicate():
        assert proc.poll() is None, f"ended before the test could stop it: {proc.communicate()}"
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.02)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def partials(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if ".partial" in p.name)


@pytest.fixture
def tiny(tmp_path) -> Path:
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    return tmp_path


def _write_train_yaml(folder: Path, **changes) -> Path:
    path = folder / "learn.yaml"
    path.write_text(yaml.safe_dump(TRAIN | changes), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------- output location checks
# A policy that cannot be imported fails only when the run is built: seeing the --out error instead proves the
# location was checked before anything was simulated.
NOT_BUILT = ["--set", "policy.name=no_such_module:Policy"]


def _cli_error(capsys, *args) -> str:
    """``main(args)`` in process: exit status 2 and an ``error:`` line (no exception escapes)."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: "), err
    return err


def test_bad_out_locations_fail_before_simulating(tiny, capsys, monkeypatch):
    monkeypatch.chdir(tiny)
    (tiny / "afile").write_text("mine", encoding="utf-8")
    cases = {
        "afile": "is a file, not a folder",
        "afile/sub/run": "afile is a file, so no folder can be created under it",
    }
    if Path("/proc/self").is_dir():  # a special file system where no folder can be created
        cases["/proc/dcsim-test/run"] = "cannot create folder /proc/dcsim-test"
    for out, message in cases.items():
        for command in ("run", "compare"):
            extra = ["--policies", "always_on", "--seeds", "1"] if command == "compare" else []
            err = _cli_error(capsys, command, "tiny.yaml", *extra, *NOT_BUILT, "--out", out, "-q")
            assert f"--out {out}" in err and message in err, err
            assert "no_such_module" not in err  # the run was never built
    # and from the command line: the same message, no traceback
    proc = user_error(cli("run", "tiny.yaml", *NOT_BUILT, "--out", "afile/sub/run", "-q", cwd=tiny))
    assert "afile is a file" in proc.stderr
    assert (tiny / "afile").read_text(encoding="utf-8") == "mine"
    assert sorted(p.name for p in tiny.iterdir()) == ["afile", "tiny.yaml"]  # no partial folders left behind


def test_an_unwritable_folder_fails_before_simulating(tiny):
    locked = tiny / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # root ignores the mode bits: the /proc case above covers this then
            pytest.skip("running as root: chmod does not stop writing")
        proc = user_error(cli("run", "tiny.yaml", *NOT_BUILT, "--out", locked / "run", "-q", cwd=tiny))
        assert "cannot write into" in proc.stderr and "no_such_module" not in proc.stderr
    finally:
        locked.chmod(0o755)


def test_schema_output_checks_its_folder(tiny, capsys, monkeypatch):
    monkeypatch.chdir(tiny)
    assert "folder missing does not exist" in _cli_error(capsys, "schema", "-o", "missing/dcsim.schema.json")
    assert "is a folder" in _cli_error(capsys, "schema", "-o", ".")
    assert "is a file, not a folder" in _cli_error(capsys, "schema", "-o", "tiny.yaml/s.json")
    assert main(["schema", "-o", "s.json"]) == 0
    assert json.loads((tiny / "s.json").read_text(encoding="utf-8"))["title"] == "dcsim scenario"
    assert sorted(p.name for p in tiny.iterdir()) == ["s.json", "tiny.yaml"]  # no temporary files left


def test_train_out_at_a_file_fails_before_training(tmp_path):
    _write_train_yaml(tmp_path)
    (tmp_path / "afile").write_text("mine", encoding="utf-8")
    for out in ("afile", "afile/t"):
        proc = user_error(cli("train", "learn.yaml", "--policy", "qlearning", "--episodes", "1", "--out", out, "-q",
                              cwd=tmp_path))
        assert f"--out {out}" in proc.stderr and "is a file" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "learn.yaml"]


@FUZZ
@given(out=st.lists(st.sampled_from(["afile", "d", "e", "..", "."]), min_size=1, max_size=4))
def test_generated_out_paths_are_a_clear_error_or_a_clean_run(tmp_path_factory, out):
    """Any --out path either runs and leaves exactly one finished folder, or is refused naming --out, with the
    file in the way untouched."""
    root = tmp_path_factory.mktemp("gen")
    (root / "w").mkdir()
    (root / "w" / "afile").write_text("mine", encoding="utf-8")
    (root / "w" / "tiny.yaml").write_text(TINY, encoding="utf-8")
    target = "/".join(out)
    code = main(["run", str(root / "w" / "tiny.yaml"), "--horizon", "10min", "-q", "--out", str(root / "w" / target)])
    assert (root / "w" / "afile").read_text(encoding="utf-8") == "mine"
    assert not [p for p in root.rglob("*") if ".partial" in p.name]
    if code == 0:  # ".." is taken lexically ("d/afile/.." is "d"), as os.path.abspath does
        assert (Path(os.path.abspath(root / "w" / target)) / "summary.json").is_file()
    else:
        assert code == 2


# ----------------------------------------------------------------------------------- overwrite
def test_overwrite_replaces_a_run_folder_whole(tiny, monkeypatch):
    monkeypatch.chdir(tiny)
    assert main(["run", "tiny.yaml", "--out", "out", "--trace-events", "--plots", "-q"]) == 0
    assert (tiny / "out" / "events.csv").is_file() and (tiny / "out" / "plots").is_dir()
    assert (tiny / "out" / "allocations.npz").is_file()
    (tiny / "out" / "notes.txt").write_text("old", encoding="utf-8")
    assert main(["run", "tiny.yaml", "--out", "out", "--set", "outputs.allocations=false", "--horizon", "10min",
                 "-q", "--overwrite"]) == 0
    names = {p.name for p in (tiny / "out").iterdir()}
    assert "summary.json" in names and not names & {"events.csv", "plots", "notes.txt", "allocations.npz"}
    assert yaml.safe_load((tiny / "out" / "metadata.yaml").read_text())["scenario"]["horizon_s"] == 600.0
    assert partials(tiny) == []
    # --overwrite never swaps away the folder the user stands in
    monkeypatch.chdir(tiny / "out")
    assert main(["run", str(tiny / "tiny.yaml"), "--out", ".", "-q", "--overwrite"]) == 2
    assert "summary.json" in {p.name for p in (tiny / "out").iterdir()}


def test_overwrite_replaces_a_training_whole(tmp_path, capsys):
    scenario_file = _write_train_yaml(tmp_path)
    sc = parse_scenario(TRAIN | {"policy": {"name": "dqn", "params": DQN_PARAMS}})
    train(sc, "dqn", 1, tmp_path / "t", keep_transitions=0)
    assert (tmp_path / "t" / "checkpoint" / "dqn.pt").is_file()
    train(parse_scenario(TRAIN), "qlearning", 1, tmp_path / "t", keep_transitions=0, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "t" / "checkpoint").iterdir()) == ["qlearning.json", "qlearning.npz", "qlearning_b.npz"]
    assert not (tmp_path / "t" / "transitions.npz").exists()
    # a later `run --checkpoint` of the DQN cannot pick up the old network: it is gone
    err = _cli_error(capsys, "run", scenario_file, "--policy", "dqn", "--checkpoint", tmp_path / "t" / "checkpoint",
                     "-q", "--out", tmp_path / "r")
    assert "dqn.json" in err and not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------- interrupted runs
@pytest.mark.parametrize("sig, status, name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_an_interrupted_run_exits_non_zero_and_leaves_no_finished_folder(tiny, sig, status, name):
    assert main(["run", str(tiny / "tiny.yaml"), "--out", str(tiny / "out"), "--horizon", "10min", "-q"]) == 0
    before = snapshot(tiny / "out")
    proc = start("run", "tiny.yaml", *LONG, "--out", "out", "--overwrite", "-q", cwd=tiny)
    wait_for(lambda: partials(tiny), proc)  # the output place is probed: the simulation runs now
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert f"interrupted by {name}" in err and "nothing was written" in err and "Traceback" not in err
    assert snapshot(tiny / "out") == before  # the earlier run is untouched
    assert partials(tiny) == []  # nothing was written, so no partial folder either


def test_a_killed_run_never_leaves_a_folder_that_looks_finished(tiny):
    proc = start("run", "tiny.yaml", *LONG, "--out", "out", "-q", cwd=tiny)
    wait_for(lambda: partials(tiny), proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert not (tiny / "out").exists()
    assert all(".partial-" in p.name and not (p / "summary.json").exists() for p in partials(tiny))


def test_an_interrupted_comparison_stops_its_workers(tiny):
    proc = start("compare", "tiny.yaml", *LONG, "--policies", "always_on", "race_to_idle", "--seeds", "2", "-j", "2",
                 "--out", "cmp", "-q", cwd=tiny)
    wait_for(lambda: partials(tiny), proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)  # the workers are stopped, not waited for
    assert proc.returncode == 143 and "interrupted by SIGTERM" in err and "Traceback" not in err, err
    assert not (tiny / "cmp").exists() and partials(tiny) == []


# ----------------------------------------------------------------------------------- train --resume
def _curve(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "learning_curve.csv").drop(columns=["wall_s"])


def _same_training(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(_curve(a), _curve(b))
    ca, cb = a / "checkpoint", b / "checkpoint"
    assert sorted(p.name for p in ca.iterdir()) == sorted(p.name for p in cb.iterdir())
    if (ca / "qlearning.npz").exists():
        for key in ("q", "visits"):
            np.testing.assert_array_equal(np.load(ca / "qlearning.npz")[key], np.load(cb / "qlearning.npz")[key])
    else:
        import torch

        wa, wb = (torch.load(c / "dqn.pt", weights_only=True) for c in (ca, cb))
        for net in ("online", "target"):
            for key in wa[net]:
                assert torch.equal(wa[net][key], wb[net][key]), (net, key)
        ra, rb = np.load(ca / "replay.npz"), np.load(cb / "replay.npz")
        for key in ra.files:
            np.testing.assert_array_equal(ra[key], rb[key])
    if (a / "transitions.npz").exists() or (b / "transitions.npz").exists():
        ta, tb = np.load(a / "transitions.npz"), np.load(b / "transitions.npz")
        for key in ta.files:
            np.testing.assert_array_equal(ta[key], tb[key])
    sa, sb = (json.loads((f / "train_state.json").read_text()) for f in (a, b))
    assert sa == sb


class _Killed(BaseException):
    """Stands for SIGKILL: nothing catches it, so the files are left as they are at that instant."""


def _train_killed_at(n: int, monkeypatch, *args, **kwargs) -> bool:
    """Train, stopping dead before the n-th rename (os.replace / os.rename); True if it got that far."""
    calls = {"n": 0}
    real = {"replace": os.replace, "rename": os.rename}

    def counting(kind):
        def wrapper(src, dst, *a, **k):
            calls["n"] += 1
            if calls["n"] == n:
                raise _Killed
            return real[kind](src, dst, *a, **k)
        return wrapper

    monkeypatch.setattr(os, "replace", counting("replace"))
    monkeypatch.setattr(os, "rename", counting("rename"))
    try:
        train(*args, **kwargs)
        return False
    except _Killed:
        return True
    finally:
        monkeypatch.setattr(os, "replace", real["replace"])
        monkeypatch.setattr(os, "rename", real["rename"])


@pytest.mark.parametrize("name, stride", [("qlearning", 1), ("dqn", 3)])
def test_resume_after_a_kill_at_any_write_reproduces_the_uninterrupted_training(tmp_path, monkeypatch, name, stride):
    params = DQN_PARAMS if name == "dqn" else {}
    monkeypatch.setattr("dcsim.train.plot_learning_curve", lambda curve, path, title: path.write_bytes(b"png"))
    sc = parse_scenario(TRAIN | {"horizon_s": 7200, "policy": {"name": name, "params": params}})
    train(sc, name, 2, tmp_path / "ref", keep_transitions=300)
    n, points = 1, 0
    while True:
        out = tmp_path / f"k{n}"
        if not _train_killed_at(n, monkeypatch, sc, name, 2, out, keep_transitions=300):
            break  # n is past the last rename: every kill point was tried
        assert not (out / "train_state.json").exists() or (out / "learning_curve.png").exists()
        train(sc, name, 2, out, resume=True, keep_transitions=300)
        _same_training(tmp_path / "ref", out)
        assert not (tmp_path / f"k{n}.partial").exists()
        points += 1
        shutil.rmtree(out)
        n += stride
    print(f"{name}: resumed after {points} kill points")
    assert points >= (12 if name == "qlearning" else 5)


def test_resume_extends_a_finished_training_and_survives_a_kill_while_copying(tmp_path, monkeypatch):
    sc = parse_scenario(TRAIN | {"policy": {"name": "qlearning"}})
    train(sc, "qlearning", 3, tmp_path / "ref", keep_transitions=300)
    train(sc, "qlearning", 2, tmp_path / "t", keep_transitions=300)
    before = snapshot(tmp_path / "t")
    assert _train_killed_at(1, monkeypatch, sc, "qlearning", 3, tmp_path / "t", resume=True, keep_transitions=300)
    assert snapshot(tmp_path / "t") == before  # the finished training is untouched by the interrupted resume
    train(sc, "qlearning", 3, tmp_path / "t", resume=True, keep_transitions=300)
    _same_training(tmp_path / "ref", tmp_path / "t")


def test_train_killed_mid_training_then_resumed_matches_an_uninterrupted_run(tmp_path):
    _write_train_yaml(tmp_path, horizon_s=86400)  # about a second an episode: time to stop it in the middle
    args = ["learn.yaml", "--policy", "qlearning", "--episodes", "4", "-q"]
    # what the CLI runs: `--policy qlearning` sets the scenario's policy (so --set policy.params.K=V configures it)
    train(parse_scenario(TRAIN | {"horizon_s": 86400, "policy": {"name": "qlearning"}}), "qlearning", 4,
          tmp_path / "ref")
    for sig in (signal.SIGKILL, signal.SIGTERM):
        out = tmp_path / f"t{sig}"
        state = tmp_path / f"t{sig}.partial" / "train_state.json"
        proc = start("train", *args, "--out", out.name, cwd=tmp_path)
        wait_for(state.is_file, proc, timeout_s=240)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == (-9 if sig == signal.SIGKILL else 143), err
        assert not out.exists()  # no folder that looks finished
        if sig == signal.SIGTERM:
            assert f"partial output left in {out.name}.partial" in err and "--resume" in err
        ok(cli("train", *args, "--out", out.name, "--resume", cwd=tmp_path, timeout=300))
        _same_training(tmp_path / "ref", out)


# ----------------------------------------------------------------------------------- broken resume states
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("trained")
    scenario_file = _write_train_yaml(root)
    assert main(["train", str(scenario_file), "--policy", "qlearning", "--episodes", "2", "--out",
                 str(root / "ql"), "-q"]) == 0
    return root, scenario_file


def _broken_copy(trained, tmp_path_factory) -> tuple[Path, Path]:
    root, scenario_file = trained
    out = tmp_path_factory.mktemp("case") / "ql"
    shutil.copytree(root / "ql", out)
    return out, scenario_file


def _resume_fails(out: Path, scenario_file: Path, capsys, *extra: str) -> str:
    before = snapshot(out)
    code = main(["train", str(scenario_file), "--policy", "qlearning", "--episodes", "3", "--out", str(out),
                 "--resume", "-q", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: "), err
    assert snapshot(out) == before  # the earlier training is never overwritten
    return err


_CORRUPTIONS = ["empty", "truncate", "random"]


def _corrupt(path: Path, how: str, data) -> None:
    raw = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncate":  # at least the last non-blank byte goes (a JSON file without its newline is whole)
        path.write_bytes(raw[: data.draw(st.integers(0, max(len(raw.rstrip()) - 1, 0)))])
    else:
        path.write_bytes(data.draw(st.binary(min_size=1, max_size=256)))


@FUZZ
@given(how=st.sampled_from(_CORRUPTIONS), data=st.data())
def test_a_damaged_train_state_is_a_clear_error(trained, tmp_path_factory, capsys, how, data):
    out, scenario_file = _broken_copy(trained, tmp_path_factory)
    _corrupt(out / "train_state.json", how, data)
    err = _resume_fails(out, scenario_file, capsys)
    assert "train_state.json" in err


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=5)


@FUZZ
@given(field=st.sampled_from(["policy", "scenario", "episodes_done", "root_seed", "checkpoint", "kept_transitions",
                              "scenario_resolved"]), value=_JSON)
def test_wrong_typed_train_state_fields_are_named(trained, tmp_path_factory, capsys, field, value):
    out, scenario_file = _broken_copy(trained, tmp_path_factory)
    state = json.loads((out / "train_state.json").read_text())
    natural = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if state.get(field) == value or (field in ("episodes_done", "kept_transitions") and natural
                                     and (field == "kept_transitions" or value <= state["episodes_done"])):
        return  # a value of the right kind: not a damaged state
    state[field] = value
    (out / "train_state.json").write_text(json.dumps(state))
    err = _resume_fails(out, scenario_file, capsys)
    assert "train_state.json" in err or "learning_curve.csv" in err or str(out) in err, err


@FUZZ
@given(how=st.sampled_from(_CORRUPTIONS + ["missing"]), data=st.data())
def test_a_damaged_learning_curve_is_a_clear_error(trained, tmp_path_factory, capsys, how, data):
    out, scenario_file = _broken_copy(trained, tmp_path_factory)
    if how == "missing":
        (out / "learning_curve.csv").unlink()
    else:
        _corrupt(out / "learning_curve.csv", how, data)
        try:  # a truncation that keeps both rows whole is still a valid curve
            df = pd.read_csv(out / "learning_curve.csv")
            if len(df) >= 2 and list(df["episode"][:2]) == [0, 1]:
                return
        except Exception:
            pass
    err = _resume_fails(out, scenario_file, capsys)
    assert "learning_curve.csv" in err


@FUZZ
@given(target=st.sampled_from(["checkpoint/qlearning.npz", "checkpoint/qlearning.json", "transitions.npz"]),
       how=st.sampled_from(_CORRUPTIONS), data=st.data())
def test_damaged_checkpoint_files_are_clear_errors(trained, tmp_path_factory, capsys, target, how, data):
    out, scenario_file = _broken_copy(trained, tmp_path_factory)
    _corrupt(out / target, how, data)
    err = _resume_fails(out, scenario_file, capsys)
    assert Path(target).name in err, err
    if target.startswith("checkpoint/"):  # `run --checkpoint` names the file too, and writes nothing
        code = main(["run", str(scenario_file), "--policy", "qlearning", "--checkpoint", str(out / "checkpoint"), "-q",
                     "--out", str(out.parent / "r")])
        err = capsys.readouterr().err
        assert code == 2 and Path(target).name in err and not (out.parent / "r").exists(), err


@FUZZ
@given(field=st.sampled_from(["policy", "n_actions", "features", "decisions", "updates", "bins"]), value=_JSON)
def test_wrong_typed_checkpoint_specs_are_clear_errors(trained, tmp_path_factory, capsys, field, value):
    out, scenario_file = _broken_copy(trained, tmp_path_factory)
    spec_path = out / "checkpoint" / "qlearning.json"
    spec = json.loads(spec_path.read_text())
    natural = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if spec.get(field) == value or (field in ("decisions", "updates") and natural):
        return  # a value of the right kind: not a damaged spec
    spec[field] = value
    spec_path.write_text(json.dumps(spec))
    err = _resume_fails(out, scenario_file, capsys)
    assert "qlearning.json" in err, err


def test_resume_refuses_another_horizon_cluster_or_seed(trained, tmp_path_factory, capsys):
    out, scenario_file = _broken_copy(trained, tmp_path_factory)
    for extra, field in ((["--horizon", "1h"], "horizon_s: trained with 14400.0, given 3600.0"),
                         (["--set", "cluster.gpus=8"], "cluster.gpus: trained with 4, given 8"),
                         (["--set", "market.interval_s=600"], "market.interval_s")):
        err = _resume_fails(out, scenario_file, capsys, *extra)
        assert "trained on another version of the scenario" in err and field in err, err
    err = _resume_fails(out, scenario_file, capsys, "--seed", "4")
    assert "root seed 3" in err and "--seed 3" in err


def test_a_dqn_checkpoint_of_another_size_or_action_set_is_refused(trained, tmp_path_factory, capsys):
    root, scenario_file = trained
    out, _ = _broken_copy(trained, tmp_path_factory)
    spec = json.loads((out / "checkpoint" / "qlearning.json").read_text())
    spec["n_actions"] = spec["n_actions"] + 1
    (out / "checkpoint" / "qlearning.json").write_text(json.dumps(spec))
    err = _resume_fails(out, scenario_file, capsys)
    assert "qlearning.json" in err and "actions" in err
    # a per-agent table for 4 GPUs evaluated on 8
    sc = parse_scenario(TRAIN | {"policy": {"name": "qlearning", "params": {"tables": "per_agent"}}})
    train(sc, "qlearning", 1, out.parent / "pa", keep_transitions=0)
    code = main(["run", str(scenario_file), "--policy", "qlearning", "--set", "cluster.gpus=8", "--checkpoint",
                 str(out.parent / "pa" / "checkpoint"), "-q", "--out", str(out.parent / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "qlearning.npz" in err and "4 tables" in err and "8 GPUs" in err, err
    assert not (out.parent / "r").exists()


def test_resume_without_anything_to_resume_names_the_folder(tmp_path, capsys):
    sc = parse_scenario(TRAIN)
    with pytest.raises(DcsimError, match="nothing to resume"):
        train(sc, "qlearning", 2, tmp_path / "none", resume=True)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DcsimError, match="is a file"):
        train(sc, "qlearning", 2, tmp_path / "afile", resume=True)


def test_a_fresh_training_over_an_interrupted_one_needs_resume_or_overwrite(tmp_path):
    sc = parse_scenario(TRAIN)
    (tmp_path / "t.partial").mkdir()
    (tmp_path / "t.partial" / "train_metadata.yaml").write_text("x: 1\n")
    with pytest.raises(DcsimError, match="an interrupted training of it is in .*--resume.*--overwrite"):
        train(sc, "qlearning", 1, tmp_path / "t", keep_transitions=0)
    train(sc, "qlearning", 1, tmp_path / "t", keep_transitions=0, overwrite=True)
    assert (tmp_path / "t" / "checkpoint" / "qlearning.npz").is_file() and not (tmp_path / "t.partial").exists()


# ----------------------------------------------------------------------------------- hints
def test_checkpoint_with_a_rule_policy_names_the_option_and_the_learning_policies(tiny):
    (tiny / "ck").mkdir()
    proc = user_error(cli("run", "tiny.yaml", "--checkpoint", "ck", "-q", "--out", "r", cwd=tiny))
    assert "--checkpoint" in proc.stderr and "qlearning" in proc.stderr and "dqn" in proc.stderr
    assert "'always_on'" in proc.stderr and "learn" not in proc.stderr.split("rule-based")[0]
    assert not (tiny / "r").exists()


@pytest.mark.parametrize("timing", ["fixed:abc", "fixed:", "fixed:-5", "fixed:0", "tick"])
def test_a_bad_timing_names_the_option(tiny, timing):
    proc = user_error(cli("compare", "tiny.yaml", "--policies", "always_on", "--timing", "event", timing,
                          "--seeds", "1", "-q", "--out", "c", cwd=tiny))
    assert f"--timing '{timing}'" in proc.stderr and "fixed:SECONDS" in proc.stderr
    assert not (tiny / "c").exists()


def test_a_terminated_sweep_names_its_saved_cells_and_exits_143(tiny):
    """SIGTERM takes Ctrl-C's path in a sweep too: exit 143, the folder named, marked unfinished, resumable."""
    import yaml

    proc = start("sweep", "tiny.yaml", "--horizon", "2d", "--grid", "market.scarcity_kappa=0.5,1,2,3",
                 "--policies", "always_on", "--seeds", "2", "--jobs", "1", "--backend", "local", "--out", "sw",
                 cwd=tiny)
    wait_for(lambda: any((tiny / "sw" / "cells").glob("*.json")) if (tiny / "sw" / "cells").is_dir() else False,
             proc, timeout_s=240)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM; an unfinished sweep left in sw" in err and "run the same command again" in err
    assert "Traceback" not in err
    assert not (tiny / "sw" / "sweep.csv").exists()
    assert yaml.safe_load((tiny / "sw" / "sweep.yaml").read_text())["complete"] is False
