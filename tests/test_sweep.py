"""The sweep: grid parsing, cells that match direct runs, CIs over seeds, and restarts that run only missing cells."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from conftest import BASE, scenario
from dcsim import sweep as sweep_module
from dcsim.compare import flatten_summary, workload_hash
from dcsim.errors import DcsimError, ScenarioError
from dcsim.runner import run_scenario
from dcsim.sweep import CELLS_DIR, grid_points, parse_grid, sweep
from test_cli import dcsim_cli, ok, user_error

SEEDS = [3, 4, 5]
POLICIES = ["always_on", "race_to_idle"]
GRID = {"market.scarcity_kappa": ["0.5", "2"], "cluster.gpus": ["1", "2"]}


WORKLOAD = {"arrivals": {"process": "poisson", "rate_per_s": 0.003}, "duration_s": {"distribution": "constant", "value": 300}}


def small(**changes):
    """One or two GPUs for an hour under a constant price: a cell takes a few milliseconds."""
    return scenario(workload=WORKLOAD, **changes)


def counting(monkeypatch) -> list[tuple]:
    """Record every cell a sweep runs (id, policy, seed), in this process (``jobs=1``)."""
    ran: list[tuple] = []
    real = sweep_module._run_cell

    def run(cell):
        ran.append((cell.id, cell.policy, cell.seed))
        return real(cell)

    monkeypatch.setattr(sweep_module, "_run_cell", run)
    return ran


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    return out, sweep(small(), GRID, POLICIES, SEEDS, out, jobs=1)


# --------------------------------------------------------------------------------------------- the grid
def test_parse_grid_splits_values_at_top_level_commas_only():
    grid = parse_grid(["market.scarcity_kappa=0.5, 1,2",
                       "workload.gpus_per_job={values: [1, 2], weights: [0.5, 0.5]},{values: [1], weights: [1]}",
                       "name='a,b',c"])
    assert grid == {"market.scarcity_kappa": ["0.5", "1", "2"],
                    "workload.gpus_per_job": ["{values: [1, 2], weights: [0.5, 0.5]}", "{values: [1], weights: [1]}"],
                    "name": ["'a,b'", "c"]}
    assert grid_points({"a": ["1", "2"], "b": ["x", "y", "z"]})[:4] == [
        {"a": "1", "b": "x"}, {"a": "1", "b": "y"}, {"a": "1", "b": "z"}, {"a": "2", "b": "x"}]
    assert grid_points({}) == [{}]


@pytest.mark.parametrize("items, message", [
    (["market.scarcity_kappa"], "expected KEY=V1,V2"),
    (["market.scarcity_kappa=1,,2"], "non-empty values"),
    (["=1,2"], "expected KEY"),
    (["seed=1,2"], "the sweep's own dimensions"),
    (["policy.name=a,b"], "the sweep's own dimensions"),
    (["cluster.gpus=1", "cluster.gpus=2"], "given twice"),
    (["cluster.gpus=1,1"], "repeated"),
])
def test_bad_grids_are_refused(items, message):
    with pytest.raises(DcsimError, match=message):
        parse_grid(items)


def test_a_bad_grid_value_names_the_field_before_any_cell_runs(tmp_path, monkeypatch):
    ran = counting(monkeypatch)
    with pytest.raises(ScenarioError, match=r"cluster\.gpus.*'many'"):
        sweep(small(), {"market.scarcity_kappa": ["1"], "cluster.gpus": ["1", "many"]}, POLICIES, SEEDS,
              tmp_path / "s", jobs=1)
    assert ran == []


# --------------------------------------------------------------------------------------------- results
def test_every_cell_is_the_run_of_its_settings(done):
    out, result = done
    assert len(result.cells) == 4 * len(POLICIES) * len(SEEDS) and len(result.ran) == len(result.cells)
    assert sorted(p.stem for p in (out / CELLS_DIR).glob("*.json")) == sorted(result.cells["cell"])
    for _, row in result.cells.iloc[[0, 7, 17, 23]].iterrows():
        sc = small(cluster={"gpus": int(row["cluster.gpus"])}, market={"scarcity_kappa": row["market.scarcity_kappa"]},
                   policy={"name": row["policy"]}, seed=int(row["seed"]))
        direct = run_scenario(sc)
        flat = flatten_summary(direct.summary)
        assert row["jobs_sha256"] == workload_hash(direct.result.jobs)
        for metric in ("carbon_kg", "jobs.completed", "token_price.mean", "energy_kwh.consumed"):
            assert row[metric] == flat[metric], metric
        record = json.loads((out / CELLS_DIR / f"{row['cell']}.json").read_text())
        assert record["summary"]["jobs"] == direct.summary["jobs"] and record["seed"] == row["seed"]


def test_the_table_holds_the_t_interval_over_seeds(done):
    _, result = done
    cells, table = result.cells, result.table
    assert list(table.columns[:4]) == ["market.scarcity_kappa", "cluster.gpus", "policy", "metric"]
    assert len(table.groupby(["market.scarcity_kappa", "cluster.gpus", "policy"])) == 4 * len(POLICIES)
    for (kappa, gpus, policy), group in cells.groupby(["market.scarcity_kappa", "cluster.gpus", "policy"]):
        x = group["energy_kwh.consumed"].to_numpy(float)
        row = table[(table["market.scarcity_kappa"] == kappa) & (table["cluster.gpus"] == gpus)
                    & (table["policy"] == policy) & (table["metric"] == "energy_kwh.consumed")].iloc[0]
        half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
        assert row["n"] == len(SEEDS) and row["mean"] == pytest.approx(x.mean(), rel=1e-12)
        assert row["ci_high"] - row["mean"] == pytest.approx(half, rel=1e-9)
    # the grid changes the world: more GPUs use more energy in the same seeds
    e = table[table["metric"] == "energy_kwh.consumed"].groupby("cluster.gpus")["mean"].mean()
    assert e[2] > e[1]


def test_seeds_share_the_workload_across_policies_and_prices(done):
    _, result = done
    per_seed = result.cells.groupby(["cluster.gpus", "seed"])["jobs_sha256"].nunique()
    assert (per_seed == 1).all()
    assert result.cells.groupby("cluster.gpus")["jobs_sha256"].nunique().min() == len(SEEDS)


# --------------------------------------------------------------------------------------------- restarts
def test_a_restart_runs_only_the_deleted_cells(done, tmp_path, monkeypatch):
    import shutil

    src, first = done
    out = tmp_path / "again"
    shutil.copytree(src, out)
    cell_dir = out / CELLS_DIR
    before = {p.name: p.stat().st_mtime_ns for p in cell_dir.glob("*.json")}
    gone = first.cells.iloc[[2, 13]]
    for cell in gone["cell"]:
        (cell_dir / f"{cell}.json").unlink()
    ran = counting(monkeypatch)
    again = sweep(small(), GRID, POLICIES, SEEDS, out, jobs=1)
    expected = {(r["cell"], r["policy"], r["seed"]) for _, r in gone.iterrows()}
    assert set(ran) == expected and len(ran) == 2
    assert sorted(again.ran) == sorted(gone["cell"]) and len(again.skipped) == len(first.cells) - 2
    for name, mtime in before.items():
        if name[:-5] not in set(gone["cell"]):
            assert (cell_dir / name).stat().st_mtime_ns == mtime, name  # untouched
    pd.testing.assert_frame_equal(again.table, first.table, check_exact=True)
    pd.testing.assert_frame_equal(again.cells, first.cells, check_exact=True)
    ran.clear()
    sweep(small(), GRID, POLICIES, SEEDS, out, jobs=1)
    assert ran == []


def test_an_interrupted_sweep_keeps_its_finished_cells_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "s"
    grid = {"market.scarcity_kappa": ["1", "3"]}

    def stop_after_three(done_cells, total):
        if done_cells == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(small(), grid, ["always_on"], SEEDS, out, jobs=1, progress=stop_after_three)
    saved = sorted(p.name for p in (out / CELLS_DIR).iterdir())
    assert len(saved) == 3 and all(name.endswith(".json") for name in saved)  # no temporary files left
    assert not (out / "sweep.csv").exists()
    ran = counting(monkeypatch)
    result = sweep(small(), grid, ["always_on"], SEEDS, out, jobs=1)
    assert len(ran) == 3 and len(result.skipped) == 3 and len(result.cells) == 6


def test_an_interrupted_rerun_does_not_look_finished(done, tmp_path):
    """A finished sweep rerun after cells were deleted, then stopped: its old tables are gone, and sweep.yaml says
    the sweep is not complete, so nothing in the folder passes for a finished result."""
    import shutil

    src, first = done
    out = tmp_path / "rerun"
    shutil.copytree(src, out)
    assert yaml.safe_load((out / "sweep.yaml").read_text())["complete"] is True
    for cell in first.cells["cell"].iloc[:3]:
        (out / CELLS_DIR / f"{cell}.json").unlink()

    def stop_at_once(done_cells, total):
        if done_cells < total:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(small(), GRID, POLICIES, SEEDS, out, jobs=1, progress=stop_at_once)
    assert not (out / "sweep.csv").exists() and not (out / "cells.csv").exists() and not (out / "sweep.md").exists()
    assert yaml.safe_load((out / "sweep.yaml").read_text())["complete"] is False
    result = sweep(small(), GRID, POLICIES, SEEDS, out, jobs=1)
    assert sorted(result.ran) == sorted(first.cells["cell"].iloc[:3])
    pd.testing.assert_frame_equal(result.table, first.table, check_exact=True)
    assert yaml.safe_load((out / "sweep.yaml").read_text())["complete"] is True


def test_a_changed_scenario_is_a_different_cell(done, tmp_path, monkeypatch):
    import shutil

    src, _ = done
    out = tmp_path / "changed"
    shutil.copytree(src, out)
    ran = counting(monkeypatch)
    result = sweep(small(), {"market.scarcity_kappa": ["0.5"], "cluster.gpus": ["1"]}, ["always_on"], SEEDS, out,
                   jobs=1, overrides=["horizon_s=1800"])
    assert len(ran) == len(SEEDS) and result.skipped == []


# --------------------------------------------------------------------------------------------- CLI
TINY_SWEEP = json.loads(json.dumps(BASE)) | {"workload": WORKLOAD}


def test_sweep_command_end_to_end_and_restart(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(TINY_SWEEP), encoding="utf-8")
    args = ["sweep", "s.yaml", "--grid", "market.scarcity_kappa=0.5,2", "--policies", "always_on", "race_to_idle",
            "--seed-list", "1", "2", "--jobs", "2", "--backend", "local", "--out", "sw"]
    proc = ok(dcsim_cli(*args, cwd=tmp_path))
    assert "| market.scarcity_kappa | policy |" in proc.stdout and "ran 8 cells, 0 already saved" in proc.stdout
    table = pd.read_csv(tmp_path / "sw" / "sweep.csv")
    assert set(table["market.scarcity_kappa"]) == {0.5, 2.0}
    assert set(table.loc[table["metric"] == "carbon_kg", "n"]) == {2}
    assert (tmp_path / "sw" / "sweep.md").read_text(encoding="utf-8") in proc.stdout
    meta = yaml.safe_load((tmp_path / "sw" / "sweep.yaml").read_text())
    assert meta["backend"] == {"backend": "local", "workers": 2} and meta["cells"] == 8
    next(iter((tmp_path / "sw" / CELLS_DIR).glob("*.json"))).unlink()
    proc = ok(dcsim_cli(*args, "-q", cwd=tmp_path))
    assert proc.stdout == ""
    assert yaml.safe_load((tmp_path / "sw" / "sweep.yaml").read_text())["ran"] == 1
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "sw" / "sweep.csv"), table)


@pytest.mark.parametrize("extra, message", [
    (["--grid", "market.scarcity_kappa"], "expected KEY=V1,V2"),
    (["--grid", "market.scarcity_kapa=1,2"], "scarcity_kapa"),
    (["--backend", "local", "--address", "auto"], "--address auto: joins a Ray cluster"),
    (["--out", "taken"], "holds no sweep.yaml"),
])
def test_sweep_command_user_errors(tmp_path, extra, message):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(TINY_SWEEP), encoding="utf-8")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    proc = user_error(dcsim_cli("sweep", "s.yaml", "--policies", "always_on", "--seeds", "1", *extra, cwd=tmp_path))
    assert message in proc.stderr
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep"
    assert not (tmp_path / "runs").exists()
