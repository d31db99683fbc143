"""Policy comparison (common random numbers, paired statistics), HTML reports, and the compare/report CLI."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import scenario
from dcsim.compare import (EXCLUDED_METRICS, HEADLINE_METRICS, compare, flatten_summary, mean_ci,
                           paired_difference, workload_hash)
from dcsim.errors import DcsimError
from dcsim.policy import Bids, Policy
from dcsim.report import COMPARISON_SECTIONS, NO_ALLOCATIONS, RUN_SECTIONS, write_report
from dcsim.seeding import Streams
from dcsim.workload import build_jobs

REPO = Path(__file__).resolve().parents[1]
SEEDS = list(range(1, 9))


class Throttled(Policy):
    """Worse than always-on by construction: asks for the GPU's minimum power cap, so every job runs at the
    lowest clock, holds its GPUs longer, and the jobs queued behind it wait longer."""

    name = "throttled"

    def bid(self, obs):
        n = len(obs)
        return Bids(np.full(n, obs.gpu.min_cap_w), np.full(n, np.inf))


def queueing_scenario():
    """Two GPUs for an hour, 1.5 GPUs of work offered on average: always-on queues a little, a throttled
    cluster (slower than the arrival rate) queues a lot. Deadlines and deferrable jobs exercise those columns."""
    return scenario(cluster={"gpus": 2},
                    workload={"arrivals": {"process": "poisson", "rate_per_s": 0.005},
                              "duration_s": {"distribution": "constant", "value": 300},
                              "deadline_slack": 3.0, "deferrable_fraction": 0.5})


@pytest.fixture(scope="module")
def identical():
    return compare(queueing_scenario(), ["always_on", "policies.rules:AlwaysOn"], SEEDS[:5], jobs=1)


@pytest.fixture(scope="module")
def worse():
    return compare(queueing_scenario(), ["always_on", "test_compare:Throttled"], SEEDS, jobs=1)


# --------------------------------------------------------------------------------------------- statistics
def test_mean_ci_is_the_t_interval():
    n, mean, std, lo, hi = mean_ci(np.array([1.0, 2.0, 3.0, np.nan]))
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert (n, mean, std) == (3, 2.0, 1.0)
    assert lo == pytest.approx(2.0 - half) and hi == pytest.approx(2.0 + half)
    assert mean_ci(np.array([5.0, 5.0])) == (2, 5.0, 0.0, 5.0, 5.0)
    assert mean_ci(np.array([np.nan]))[0] == 0


def test_paired_difference_matches_scipy_and_handles_degenerate_cases():
    a = np.array([3.0, 5.0, 4.0, 8.0, np.nan])
    b = np.array([1.0, 4.0, 4.5, 5.0, 2.0])
    n, d, lo, hi, p = paired_difference(a, b)
    diffs = np.array([2.0, 1.0, -0.5, 3.0])  # the NaN pair is dropped
    half = stats.t.ppf(0.975, 3) * diffs.std(ddof=1) / 2.0
    assert n == 4 and d == pytest.approx(diffs.mean())
    assert (lo, hi) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert p == pytest.approx(stats.ttest_rel(a[:4], b[:4]).pvalue)
    # identical results: a definite [0, 0] and p = 1, not the t-test's NaN
    assert paired_difference(np.array([1.0, 2.0, 7.0]), np.array([1.0, 2.0, 7.0])) == (3, 0.0, 0.0, 0.0, 1.0)
    # floating-point rounding is not an effect
    assert paired_difference(np.array([0.1 + 0.2, 1.0]), np.array([0.3, 1.0])) == (2, 0.0, 0.0, 0.0, 1.0)
    # a deterministic shift: zero-width interval, p = 0
    assert paired_difference(np.array([2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0])) == (3, 1.0, 1.0, 1.0, 0.0)
    assert math.isnan(paired_difference(np.array([2.0]), np.array([1.0]))[4])


def test_flatten_summary_converts_energy_and_drops_wall_clock():
    summary = {"scenario": "s", "seed": 3, "energy_j": {"consumed": 7.2e6, "grid": None},
               "wait_s": {"mean": None, "p95": 4.0}, "jobs": {"completed": 5, "dropped_by_reason": {"deadline": 2}},
               "performance": {"events": 10, "wall_s": 0.5, "events_per_wall_s": 20.0}}
    flat = flatten_summary(summary)
    assert flat["energy_kwh.consumed"] == 2.0 and math.isnan(flat["energy_kwh.grid"])
    assert math.isnan(flat["wait_s.mean"]) and flat["wait_s.p95"] == 4.0
    assert flat["jobs.completed"] == 5.0 and flat["jobs.dropped_by_reason.deadline"] == 2.0
    assert flat["performance.events"] == 10.0
    assert not set(flat) & EXCLUDED_METRICS and "scenario" not in flat


# --------------------------------------------------------------------------------------------- compare
def test_identical_policies_differ_by_exactly_zero(identical):
    runs = identical.runs
    assert runs["metric"].isin(["jobs.completed", "wait_s.mean"]).any()
    done = runs.loc[runs["metric"] == "jobs.completed", "value"]
    assert done.min() > 0  # a world where something happens, so a zero difference means something
    diffs = identical.differences
    assert set(diffs["arm"]) == {"policies.rules:AlwaysOn"} and set(diffs["baseline"]) == {"always_on"}
    compared = diffs.loc[diffs["n"] > 0]
    assert len(compared) >= len(HEADLINE_METRICS)
    assert (compared["ci_low"] <= 0).all() and (compared["ci_high"] >= 0).all()
    assert (compared[["mean_diff", "ci_low", "ci_high"]] == 0).all().all()
    assert (compared["p_value"] == 1.0).all()
    a = runs.loc[runs["arm"] == "always_on", ["seed", "metric", "value"]].reset_index(drop=True)
    b = runs.loc[runs["arm"] == "policies.rules:AlwaysOn", ["seed", "metric", "value"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_a_policy_worse_by_construction_is_significantly_worse(worse):
    diffs = worse.differences.set_index("metric")
    wait = diffs.loc["wait_s.mean"]
    assert wait["arm"] == "test_compare:Throttled"
    assert wait["mean_diff"] > 0 and wait["ci_low"] > 0 and wait["p_value"] < 0.01
    completed = diffs.loc["jobs.completed"]
    assert completed["mean_diff"] < 0 and completed["p_value"] < 0.01


def test_workload_is_common_across_policies_and_differs_across_seeds(worse):
    wl = worse.workloads
    by_seed = wl.groupby("seed")["jobs_sha256"].nunique()
    assert (by_seed == 1).all()
    per_seed = wl.drop_duplicates("seed").set_index("seed")["jobs_sha256"]
    assert per_seed.nunique() == len(SEEDS)
    assert worse.common_workload()["identical"].all()
    # the hash is the workload's: it equals the hash of the job table built straight from the seed
    sc = queueing_scenario().model_copy(update={"seed": SEEDS[0]})
    assert per_seed[SEEDS[0]] == workload_hash(build_jobs(sc, Streams(SEEDS[0])))


def test_workload_hash_sees_every_workload_column():
    jobs = build_jobs(queueing_scenario(), Streams(0))
    base = workload_hash(jobs)
    assert workload_hash(jobs.copy()) == base
    for column, change in [("arrival_s", 1e-9), ("gpus", 1), ("work_gpu_s", 1.0), ("value_tokens", 0.5)]:
        other = jobs.copy()
        other.loc[0, column] = other.loc[0, column] + change
        assert workload_hash(other) != base, column
    other = jobs.copy()
    other.loc[0, "deferrable"] = not other.loc[0, "deferrable"]
    assert workload_hash(other) != base


def test_parallel_and_serial_runs_give_identical_tables():
    sc = queueing_scenario()
    policies = ["always_on", "race_to_idle", "test_compare:Throttled"]
    serial = compare(sc, policies, [1, 2, 3], jobs=1)
    parallel = compare(sc, policies, [1, 2, 3], jobs=2)
    for name in ("runs", "summary", "differences", "workloads"):
        pd.testing.assert_frame_equal(getattr(serial, name), getattr(parallel, name), obj=name)


def test_variants_run_every_policy_under_every_setting():
    sc = queueing_scenario()
    c = compare(sc, ["always_on", "race_to_idle"], [1, 2], jobs=1, baseline="slow",
                variants={"fast": ["market.interval_s=60"], "slow": ["market.interval_s=900"]})
    assert c.arms == ["always_on@fast", "race_to_idle@fast", "always_on@slow", "race_to_idle@slow"]
    assert c.baseline_of == {"always_on@fast": "always_on@slow", "race_to_idle@fast": "race_to_idle@slow"}
    rounds = c.summary.set_index(["arm", "metric"]).loc[:, "mean"]
    assert rounds[("always_on@fast", "market.rounds")] == 60 and rounds[("always_on@slow", "market.rounds")] == 4
    assert c.common_workload()["identical"].all()
    # a policy as the baseline compares within each variant
    c = compare(sc, ["always_on", "race_to_idle"], [1, 2], jobs=1,
                variants={"fast": ["market.interval_s=60"], "slow": []})
    assert c.baseline_of == {"race_to_idle@fast": "always_on@fast", "race_to_idle@slow": "always_on@slow"}


def test_timings_compare_each_policy_with_itself_on_a_fixed_tick():
    sunny = scenario(cluster={"gpus": 4}, horizon_s=4 * 3600, start="2023-06-21T14:00:00Z",
                     workload={"arrivals": {"process": "poisson", "rate_per_s": 0.004},
                               "duration_s": {"distribution": "exponential", "mean": 900}, "deferrable_fraction": 0.5},
                     supply={"solar": {"capacity_w": 1500, "latitude": 37.4, "longitude": -121.9}})
    c = compare(sunny, ["always_on", "renewable_follower"], [1, 2, 3], jobs=1, timings=["event", "fixed:15min"],
                baseline="event")
    assert c.arms == ["always_on@event", "renewable_follower@event", "always_on@fixed:15min",
                      "renewable_follower@fixed:15min"]
    assert c.baseline_of == {"always_on@fixed:15min": "always_on@event",
                             "renewable_follower@fixed:15min": "renewable_follower@event"}
    assert c.common_workload()["identical"].all()  # a tick changes when policies decide, not the world
    follower = c.differences.set_index(["arm", "metric"]).loc["renewable_follower@fixed:15min"]
    assert (follower["mean_diff"].abs() > 0).any()  # the follower's decisions moved to the tick
    with pytest.raises(DcsimError, match="fixed:SECONDS"):
        compare(sunny, ["always_on"], [1], jobs=1, timings=["fixed"])


@pytest.mark.parametrize("kwargs, message", [
    ({"policies": ["always_on", "always_on"]}, "once"),
    ({"policies": ["always_on", "no_such_policy"]}, "unknown policy"),
    ({"baseline": "race_to_idle"}, "baseline"),
    ({"seeds": [1, 1]}, "distinct"),
    ({"variants": {"v": ["policy.name=race_to_idle"]}}, "cannot set the policy"),
    ({"variants": {"v": ["cluster.gpus=-1"]}}, "cluster.gpus"),
])
def test_bad_comparisons_fail_before_running(kwargs, message):
    args = {"policies": ["always_on"], "seeds": [1], "jobs": 1, **kwargs}
    with pytest.raises(DcsimError, match=message):
        compare(queueing_scenario(), args.pop("policies"), args.pop("seeds"), **args)


# --------------------------------------------------------------------------------------------- reports and CLI
TINY = """\
name: tiny
start: 2023-06-21T16:00:00Z
horizon_s: 1h
seed: 0
cluster: {gpus: 2, gpu_model: H100}
workload:
  arrivals: {process: poisson, rate_per_s: 0.005}
  duration_s: {distribution: constant, value: 300}
  deadline_slack: 3.0
supply:
  solar: {capacity_w: 1500, latitude: 37.36, longitude: -121.93}
market: {interval_s: 5min, initial_tokens: 1000}
"""


def dcsim_cli(*args, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run([sys.executable, "-m", "dcsim", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def sections(page: str) -> dict[str, str]:
    """Section id → its HTML."""
    return dict(re.findall(r'<section id="([a-z]+)">(.*?)</section>', page, flags=re.S))


def assert_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page and 'src="http' not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    work = tmp_path_factory.mktemp("report")
    (work / "tiny.yaml").write_text(TINY, encoding="utf-8")
    dcsim_cli("run", "tiny.yaml", "--out", work / "run", "--quiet", cwd=work)
    return work / "run"


def test_run_report_is_self_contained_with_every_section(run_dir):
    proc = dcsim_cli("report", run_dir, cwd=run_dir.parent)
    path = run_dir / "report.html"
    assert str(path) in proc.stdout
    page = path.read_text(encoding="utf-8")
    assert_self_contained(page)
    found = sections(page)
    assert list(found) == list(RUN_SECTIONS)
    for key, title in RUN_SECTIONS.items():
        assert f"<h2>{title}</h2>" in found[key]
    for key in ("power", "price", "queue", "wallets"):
        assert found[key].count('src="data:image/png;base64,') == 1, key
    # small runs record per-GPU allocations (allocations.npz), so the heatmap is drawn
    assert (run_dir / "allocations.npz").is_file()
    assert NO_ALLOCATIONS not in found["allocations"] and found["allocations"].count('src="data:image/png;base64,') == 1
    assert "mint_initial" in found["ledger"] and "renewable share of energy consumed" in found["summary"]


def test_run_report_says_when_allocations_were_not_recorded(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "allocations.npz").unlink()
    page = write_report(copy).read_text(encoding="utf-8")
    assert_self_contained(page)
    heatmap = sections(page)["allocations"]
    assert NO_ALLOCATIONS in heatmap and "<img" not in heatmap


def test_report_of_a_folder_without_a_run_is_a_user_error(tmp_path):
    with pytest.raises(DcsimError, match="not a run directory"):
        write_report(tmp_path)


def test_compare_command_end_to_end(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    out = tmp_path / "cmp"
    proc = dcsim_cli("compare", "tiny.yaml", "--policies", "always_on", "race_to_idle", "--seed-list", "1", "2", "3",
                     "--jobs", "2", "--out", out, cwd=tmp_path)
    assert "| metric | always_on | race_to_idle |" in proc.stdout
    assert "race_to_idle − always_on" in proc.stdout and "Common random numbers" in proc.stdout
    for name in ("runs.csv", "summary.csv", "differences.csv", "workloads.csv", "comparison.md", "comparison.yaml",
                 "comparison.png", "report.html"):
        assert (out / name).is_file(), name
    runs = pd.read_csv(out / "runs.csv")
    assert {"policy", "seed", "metric", "value"} <= set(runs.columns)
    assert sorted(runs["seed"].unique()) == [1, 2, 3] and set(runs["policy"]) == {"always_on", "race_to_idle"}
    assert set(pd.read_csv(out / "differences.csv")["baseline"]) == {"always_on"}
    assert (out / "comparison.md").read_text(encoding="utf-8") in proc.stdout
    page = (out / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    found = sections(page)
    assert list(found) == list(COMPARISON_SECTIONS)
    for key in ("plot", "paired"):
        assert found[key].count('src="data:image/png;base64,') == 1, key
    assert "identical job table" in found["workload"]
    assert not list(tmp_path.glob("runs"))  # nothing written outside --out
    proc = dcsim_cli("compare", "tiny.yaml", "--policies", "always_on", "--timing", "event", "fixed:600",
                     "--baseline", "event", "--seeds", "2", "--jobs", "1", "--out", tmp_path / "timing", "--quiet",
                     cwd=tmp_path)
    assert proc.stdout == ""
    diffs = pd.read_csv(tmp_path / "timing" / "differences.csv")
    assert set(zip(diffs["arm"], diffs["baseline"])) == {("always_on@fixed:600", "always_on@event")}
    # `report` on a comparison directory rewrites its page
    (out / "report.html").unlink()
    dcsim_cli("report", out, cwd=tmp_path)
    assert (out / "report.html").is_file()
