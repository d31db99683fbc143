"""End-to-end tests of the command line, run in a subprocess with every output under ``tmp_path``."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy
import numpy as np
import pandas as pd
import pytest
import simpy
import yaml

import dcsim
from dcsim.config import json_schema, load_scenario, scenario_to_dict
from dcsim.seeding import Streams
from dcsim.workload import build_jobs

REPO = Path(__file__).resolve().parents[1]
SHARED_TRACES = REPO.parent / "shared" / "traces"
SCENARIO_FILES = sorted((REPO / "scenarios").glob("*.yaml"))
QUICKSTART = REPO / "dcsim" / "builtin" / "quickstart.yaml"
POLICIES = ["always_on", "race_to_idle", "renewable_follower", "price_threshold", "deadline_slack"]
JOB_STATUSES = {"completed", "dropped", "deferred", "queued", "starting", "running"}
PLOTS = ["power_by_source.png", "price_vs_renewable.png", "queue_and_waits.png", "wallets.png"]

# Two GPUs, two hours, overloaded (~2.2 GPUs of work offered per GPU) with tight deadlines: jobs end
# completed, dropped and still pending, so every status path is exercised.
TINY = """\
name: tiny
start: 2023-06-21T00:00:00Z
horizon_s: 2h
seed: 0
cluster: {gpus: 2, gpu_model: H100}
workload:
  arrivals: {process: poisson, rate_per_s: 0.01}
  gpus_per_job: {values: [1, 2], weights: [0.5, 0.5]}
  duration_s: {distribution: constant, value: 300}
  deadline_slack: 2.0
market: {interval_s: 5min, initial_tokens: 1000}
"""

BAD = """\
name: bad
cluster:
  gpus: 2
  gpu_modle: A100
workload:
  arrivals: {process: poison, rate_per_s: 0.01}
  duration_s: {distribution: constant, value: 60}
"""


def dcsim_cli(*args: str, cwd: Path, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m dcsim ARGS`` in ``cwd``, importing this checkout's dcsim (``env``: extra variables)."""
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MPLBACKEND"] = "Agg"
    return subprocess.run([sys.executable, "-m", "dcsim", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def user_error(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """A user error: exit status 2, a message on stderr, no Python traceback."""
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stderr.startswith("error: ")
    return proc


def needs_shared(path: Path) -> bool:
    return "shared/traces" in path.read_text(encoding="utf-8")


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    (folder / "tiny.yaml").write_text(TINY, encoding="utf-8")
    return folder


# The module fixture `base_run` takes seconds: under `pytest -n N --dist loadgroup` the tests that use it
# form one xdist group, so it is built once, on one worker (without xdist the mark does nothing).
CLI_BASE_RUN = pytest.mark.xdist_group("cli_base_run")


@pytest.fixture(scope="module")
def base_run(tiny_dir):
    """One full run of the tiny scenario with ``--seed 5 --plots`` (shared by the tests that only read it)."""
    proc = ok(dcsim_cli("run", "tiny.yaml", "--seed", "5", "--plots", "--out", "out", cwd=tiny_dir))
    return proc, tiny_dir / "out"


# ------------------------------------------------------------------------------------------ run outputs


@CLI_BASE_RUN
def test_run_writes_the_run_directory(base_run):
    proc, out = base_run
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    required = {"metadata.yaml", "summary.json", "jobs.csv", "rounds.csv", "timeseries.csv", "ledger.csv",
                "decisions.csv", "allocations.npz"}
    assert required <= set(files)
    assert {f"plots{os.sep}{name}" for name in PLOTS} <= set(files)
    for name in files:
        if name.startswith("plots"):
            assert name.endswith(".png") and (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        elif name == "allocations.npz":  # one row of per-GPU allocations per market round
            with np.load(out / name) as z:
                assert z["alloc_w"].shape == (len(pd.read_csv(out / "rounds.csv")), 2)  # tiny.yaml: 2 GPUs
        elif name.endswith(".csv"):
            pd.read_csv(out / name)
        else:
            assert name in required, name
    assert proc.stdout.rstrip().endswith(f"wrote {len(files)} files to out")
    assert "tiny / always_on / 5" in proc.stdout  # the summary table


@CLI_BASE_RUN
def test_metadata_holds_the_resolved_scenario_seed_and_versions(base_run, tiny_dir):
    _, out = base_run
    meta = yaml.safe_load((out / "metadata.yaml").read_text(encoding="utf-8"))
    assert meta["scenario"] == scenario_to_dict(load_scenario(tiny_dir / "tiny.yaml", ["seed=5"]))
    assert meta["scenario"]["horizon_s"] == 7200.0  # durations resolved to seconds
    assert meta["scenario"]["market"]["endowment_interval_s"] == 3600.0  # defaults filled in
    assert meta["seed"] == 5
    assert meta["policy"]["name"] == "always_on"
    assert meta["versions"] == {"dcsim": dcsim.__version__, "python": platform.python_version(),
                                "numpy": numpy.__version__, "pandas": pd.__version__, "simpy": simpy.__version__}


@CLI_BASE_RUN
def test_tables_read_in_one_line_and_account_for_every_job(base_run, tiny_dir):
    _, out = base_run
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    jobs = pd.read_csv(out / "jobs.csv")
    rounds = pd.read_csv(out / "rounds.csv")
    ts = pd.read_csv(out / "timeseries.csv")
    # Exactly the jobs the scenario generates with this seed arrived, one row each.
    expected = build_jobs(load_scenario(tiny_dir / "tiny.yaml", ["seed=5"]), Streams(5))
    assert len(jobs) == len(expected) == summary["jobs"]["arrived"]
    assert jobs["arrival_s"].tolist() == pytest.approx(expected["arrival_s"].tolist())
    assert jobs["gpus"].tolist() == expected["gpus"].tolist()
    status = jobs["status"].value_counts().to_dict()
    assert set(status) <= JOB_STATUSES
    assert status.get("completed", 0) == summary["jobs"]["completed"]
    assert status.get("dropped", 0) == summary["jobs"]["dropped"]
    pending = {s: status.get(s, 0) for s in ("deferred", "queued", "starting", "running")}
    assert pending == summary["jobs"]["pending_by_state"]
    assert summary["jobs"]["completed"] + summary["jobs"]["dropped"] + summary["jobs"]["pending"] == len(jobs)
    # The tiny scenario is overloaded: all three outcomes occur, so the counts above are not vacuous.
    assert summary["jobs"]["completed"] > 0 and summary["jobs"]["dropped"] > 0 and summary["jobs"]["pending"] > 0
    assert jobs.loc[jobs["status"] == "completed", "finish_s"].notna().all()
    assert jobs.loc[jobs["status"] == "dropped", "drop_reason"].ne("none").all()
    assert len(rounds) == summary["market"]["rounds"] > 0
    assert ts["time_s"].iloc[-1] == 7200.0
    assert summary["scenario"] == "tiny" and summary["seed"] == 5 and summary["policy"] == "always_on"
    assert summary["horizon_s"] == 7200.0


def test_seed_policy_set_and_horizon_options_take_effect(tiny_dir):
    out = tiny_dir / "overridden"
    proc = ok(dcsim_cli("run", "tiny.yaml", "--seed", "9", "--policy", "race_to_idle", "--set", "cluster.gpus=3",
                        "--horizon", "1h", "--out", out, "--quiet", cwd=tiny_dir))
    assert proc.stdout == ""  # --quiet
    meta = yaml.safe_load((out / "metadata.yaml").read_text(encoding="utf-8"))
    assert meta["seed"] == 9 and meta["scenario"]["seed"] == 9
    assert meta["scenario"]["policy"]["name"] == "race_to_idle" and meta["policy"]["name"] == "race_to_idle"
    assert meta["scenario"]["cluster"]["gpus"] == 3
    assert meta["scenario"]["horizon_s"] == 3600.0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert (summary["seed"], summary["policy"], summary["horizon_s"]) == (9, "race_to_idle", 3600.0)
    assert pd.read_csv(out / "timeseries.csv")["time_s"].iloc[-1] == 3600.0


@CLI_BASE_RUN
def test_a_second_run_into_a_non_empty_out_fails_and_leaves_it_untouched(base_run, tiny_dir):
    _, out = base_run
    before = snapshot(out)
    proc = user_error(dcsim_cli("run", "tiny.yaml", "--seed", "6", "--out", "out", "-q", cwd=tiny_dir))
    assert "directory exists and is not empty" in proc.stderr and "--overwrite" in proc.stderr
    assert snapshot(out) == before


def test_overwrite_replaces_a_non_empty_out_whole(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    user_error(dcsim_cli("run", "tiny.yaml", "--horizon", "10min", "--out", out, "-q", cwd=tmp_path))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    ok(dcsim_cli("run", "tiny.yaml", "--horizon", "10min", "--out", out, "-q", "--overwrite", cwd=tmp_path))
    assert not (out / "notes.txt").exists()  # the folder is swapped whole: nothing of its old contents stays
    assert yaml.safe_load((out / "metadata.yaml").read_text(encoding="utf-8"))["scenario"]["horizon_s"] == 600.0


def test_default_out_dir_is_under_runs_and_never_reused(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    ok(dcsim_cli("run", "tiny.yaml", "--horizon", "10min", "-q", cwd=tmp_path))
    proc = ok(dcsim_cli("run", "tiny.yaml", "--horizon", "10min", cwd=tmp_path))
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["tiny-always_on-seed0", "tiny-always_on-seed0-2"]
    n_files = len(list((runs / "tiny-always_on-seed0-2").iterdir()))
    assert proc.stdout.rstrip().endswith(f"wrote {n_files} files to {Path('runs') / 'tiny-always_on-seed0-2'}")
    for name in ("tiny-always_on-seed0", "tiny-always_on-seed0-2"):
        assert (runs / name / "summary.json").is_file()
    assert not (tmp_path / "tiny-always_on-seed0").exists()


def test_default_out_dir_names_a_class_policy_without_colon(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    ok(dcsim_cli("run", "tiny.yaml", "--horizon", "10min", "--seed", "4", "--policy", "policies.rules:RaceToIdle",
                 "-q", cwd=tmp_path))
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["tiny-policies.rules.RaceToIdle-seed4"]


def test_a_failed_run_leaves_no_run_directory(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    user_error(dcsim_cli("run", "tiny.yaml", "--policy", "nope", cwd=tmp_path))
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


# ------------------------------------------------------------------------------------------ errors


def test_malformed_scenario_names_the_file_and_fields_without_a_traceback(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad.yaml").write_text(BAD, encoding="utf-8")
    for command in ("run", "validate"):
        proc = user_error(dcsim_cli(command, Path("sub") / "bad.yaml", cwd=tmp_path))
        assert proc.stdout == ""
        assert f"{Path('sub') / 'bad.yaml'}: 2 problem(s) in the scenario" in proc.stderr
        assert "cluster.gpu_modle: unknown key" in proc.stderr
        assert "(got 'A100')" in proc.stderr
        assert "workload.arrivals.process: must be one of 'poisson', 'mmpp', 'diurnal' (got 'poison')" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]  # nothing written


def test_invalid_yaml_names_line_and_column(tmp_path):
    (tmp_path / "broken.yaml").write_text("cluster:\n  gpus: 2\n   bad: [\n", encoding="utf-8")
    proc = user_error(dcsim_cli("validate", "broken.yaml", cwd=tmp_path))
    assert "broken.yaml" in proc.stderr and "line 3, column 7" in proc.stderr


def test_missing_scenario_file_is_a_clean_error(tmp_path):
    proc = user_error(dcsim_cli("run", "nope.yaml", cwd=tmp_path))
    assert "nope.yaml" in proc.stderr and "an existing scenario file" in proc.stderr


def test_bad_set_override_is_a_clean_error(tiny_dir):
    proc = user_error(dcsim_cli("run", "tiny.yaml", "--set", "cluster.gpus", cwd=tiny_dir))
    assert "expected KEY=VALUE" in proc.stderr
    proc = user_error(dcsim_cli("validate", "tiny.yaml", "--set", "cluster.gpus=-1", cwd=tiny_dir))
    assert "cluster.gpus" in proc.stderr


def test_unknown_policy_lists_the_registered_policies(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    proc = user_error(dcsim_cli("run", "tiny.yaml", "--policy", "nope", "--out", "o", cwd=tmp_path))
    assert "unknown policy 'nope'" in proc.stderr
    for name in POLICIES:
        assert name in proc.stderr


def test_unknown_turbine_type_is_a_clean_error(tmp_path):
    (tmp_path / "wind.csv").write_text("time,wind_speed_m_s\n2023-06-21T00:00:00Z,8\n2023-06-21T06:00:00Z,9\n",
                                       encoding="utf-8")
    scenario = TINY.replace("market:", "supply:\n  wind: {wind_speed_file: wind.csv, format: csv, "
                                       "turbine_type: E-101/305}\n  fill: hold\nmarket:")
    (tmp_path / "wind.yaml").write_text(scenario, encoding="utf-8")
    proc = user_error(dcsim_cli("run", "wind.yaml", "--horizon", "10min", "--out", "o", cwd=tmp_path))
    assert "supply.wind.turbine_type" in proc.stderr


# ------------------------------------------------------------------------------------------ other commands


def test_validate_reports_each_good_file(tiny_dir):
    proc = ok(dcsim_cli("validate", "tiny.yaml", cwd=tiny_dir))
    assert proc.stdout == "tiny.yaml: ok (2 H100 GPUs, horizon 7200 s, policy always_on, mechanism posted_price)\n"
    proc = ok(dcsim_cli("validate", "tiny.yaml", "--set", "cluster.gpus=8", cwd=tiny_dir))
    assert proc.stdout.startswith("tiny.yaml: ok (8 H100 GPUs")


def test_validate_fails_on_the_first_bad_file(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    (tmp_path / "bad.yaml").write_text(BAD, encoding="utf-8")
    proc = user_error(dcsim_cli("validate", "tiny.yaml", "bad.yaml", cwd=tmp_path))
    assert proc.stdout.startswith("tiny.yaml: ok")
    assert "bad.yaml: 2 problem(s)" in proc.stderr


def test_schema_writes_json_to_a_file(tmp_path):
    proc = ok(dcsim_cli("schema", "-o", "schema.json", cwd=tmp_path))
    assert proc.stdout == ""
    schema = json.loads((tmp_path / "schema.json").read_text(encoding="utf-8"))
    assert schema == json.loads(json.dumps(json_schema()))
    assert {"cluster", "workload", "supply", "market", "policy", "outputs"} <= set(schema["properties"])
    assert json.loads(ok(dcsim_cli("schema", cwd=tmp_path)).stdout) == schema


def test_list_shows_the_baseline_policies_and_the_scenarios(tmp_path):
    proc = ok(dcsim_cli("list", "--scenarios-dir", REPO / "scenarios", cwd=tmp_path))
    lines = proc.stdout.splitlines()
    classes = {"always_on": "AlwaysOn", "race_to_idle": "RaceToIdle", "renewable_follower": "RenewableFollower",
               "price_threshold": "PriceThreshold", "deadline_slack": "DeadlineSlack"}
    for name, cls in classes.items():
        assert any(line.split() == [name, f"policies.rules:{cls}"] for line in lines), name
    assert any(line.split()[:1] == ["posted_price"] for line in lines)
    for model in ("V100", "A100", "H100"):
        assert any(line.split()[:1] == [model] for line in lines)
    for path in SCENARIO_FILES:
        assert f"  {path}" in lines


@pytest.mark.parametrize("command", [[], ["run"], ["validate"], ["schema"], ["list"]])
def test_help(command, tmp_path):
    proc = ok(dcsim_cli(*command, "--help", cwd=tmp_path))
    assert proc.stdout.startswith("usage: python -m dcsim")
    if command == ["run"]:
        for option in ("--seed", "--policy", "--horizon", "--set", "--out", "--overwrite", "--plots", "--quiet"):
            assert option in proc.stdout
    if not command:
        for sub in ("run", "validate", "schema", "list"):
            assert sub in proc.stdout


def test_no_command_prints_help_and_fails(tmp_path):
    proc = dcsim_cli(cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout.startswith("usage: python -m dcsim")


def test_run_without_a_scenario_runs_the_builtin_quickstart(tmp_path):
    ok(dcsim_cli("run", "--horizon", "2h", "--out", "qs", "-q", cwd=tmp_path))
    meta = yaml.safe_load((tmp_path / "qs" / "metadata.yaml").read_text(encoding="utf-8"))
    assert meta["scenario"] == scenario_to_dict(load_scenario(QUICKSTART, ["horizon_s=2h"]))
    assert meta["scenario"]["name"] == "quickstart"
    summary = json.loads((tmp_path / "qs" / "summary.json").read_text(encoding="utf-8"))
    assert summary["scenario"] == "quickstart" and summary["horizon_s"] == 7200.0
    assert summary["jobs"]["arrived"] == len(pd.read_csv(tmp_path / "qs" / "jobs.csv"))


# ------------------------------------------------------------------------------------------ the scenarios folder


def test_the_scenarios_folder_holds_the_examples():
    names = {p.name for p in SCENARIO_FILES}
    assert {"solar_day.yaml", "caiso_grid_week.yaml", "wind_farm.yaml", "alibaba_replay.yaml", "azure_llm.yaml",
            "example_jobs.yaml", "quickstart.yaml"} <= names


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=[p.name for p in SCENARIO_FILES])
def test_every_scenario_file_validates(path, tmp_path):
    if needs_shared(path) and not SHARED_TRACES.is_dir():
        pytest.skip("../shared/traces is absent")
    proc = ok(dcsim_cli("validate", path, cwd=tmp_path))
    assert proc.stdout.startswith(f"{path}: ok (")


@pytest.mark.parametrize("name", ["solar_day.yaml", "example_jobs.yaml"])
def test_example_scenarios_run(name, tmp_path):
    path = REPO / "scenarios" / name
    ok(dcsim_cli("run", path, "--horizon", "1h", "--out", "out", "-q", cwd=tmp_path))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["scenario"] == path.stem and summary["horizon_s"] == 3600.0
    assert summary["jobs"]["arrived"] > 0
    assert summary["jobs"]["arrived"] == len(pd.read_csv(tmp_path / "out" / "jobs.csv"))
    assert summary["energy_j"]["consumed"] > 0
