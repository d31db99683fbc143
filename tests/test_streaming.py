"""Streamed job tables (dcsim/arrivals.py, dcsim/job_log.py) against whole ones: the same draws, the same rows.

An exact regression test, not a theory test: a streamed run must write byte for byte the jobs.csv, and the same
summary, as the run that builds the whole table first. The chunks and windows are made tiny here so that a small
run crosses many of them, with jobs ending out of order across chunk boundaries.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dcsim import arrivals
from dcsim.arrivals import SyntheticSource, TableSource, _sorted_uniforms
from dcsim.config import load_scenario
from dcsim.engine import Simulation
from dcsim.metrics import summarize
from dcsim.policy import load_policy
from dcsim.seeding import Streams
from dcsim.supply import build_supply
from dcsim.workload import build_jobs, sample, synthetic_jobs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_windows(monkeypatch):
    """Windows of ~40 arrivals and draws of 23 values at a time, so small tables cross many of both."""
    monkeypatch.setattr(arrivals, "WINDOW_JOBS", 40)
    monkeypatch.setattr(arrivals, "_DRAW", 23)


def _chunked(draw, n, sizes, seed=5):
    g = np.random.Generator(np.random.PCG64(seed))
    out, left, i = [], n, 0
    while left > 0:
        k = min(sizes[i % len(sizes)], left)
        out.append(draw(g, k))
        left -= k
        i += 1
    return np.concatenate(out), g.random()


@pytest.mark.parametrize("dist", [
    {"distribution": "exponential", "mean": 600.0}, {"distribution": "lognormal", "mean": 900.0, "sigma": 0.5},
    {"distribution": "uniform", "low": 10.0, "high": 50.0}, {"distribution": "pareto", "shape": 2.5, "scale": 60.0},
    {"distribution": "constant", "value": 300.0}])
def test_a_block_drawn_in_chunks_is_the_block_drawn_whole(dist):
    from dcsim.config import WorkloadConfig

    d = WorkloadConfig.model_validate({"arrivals": {"process": "poisson", "rate_per_s": 1.0},
                                       "duration_s": dist}).duration_s
    whole, after_whole = _chunked(lambda g, k: sample(d, k, g), 5001, [5001])
    parts, after_parts = _chunked(lambda g, k: sample(d, k, g), 5001, [7, 1000, 333, 64])
    assert np.array_equal(whole, parts) and after_whole == after_parts


@pytest.mark.parametrize("values,p", [([1], None), ([1, 2, 8], None), ([1, 2, 8], [0.6, 0.3, 0.1])])
def test_gpu_choices_drawn_in_chunks_are_drawn_whole(values, p):
    draw = lambda g, k: g.choice(np.asarray(values), size=k, p=p)  # noqa: E731
    whole, after_whole = _chunked(draw, 4001, [4001])
    parts, after_parts = _chunked(draw, 4001, [5, 999, 64])
    assert np.array_equal(whole, parts) and after_whole == after_parts


def test_sorted_uniforms_stream_is_the_sort_of_all(tiny_windows):
    g1, g2 = (np.random.Generator(np.random.PCG64(11)) for _ in range(2))
    want = np.sort(g1.uniform(3.0, 900.0, size=1001))
    got = np.concatenate(list(_sorted_uniforms(g2, 1001, 3.0, 900.0)))
    assert np.array_equal(want, got)
    assert g1.random() == g2.random()  # the generator is left where one draw of all would leave it


ARRIVALS = {
    "poisson": {"process": "poisson", "rate_per_s": 0.5},
    "mmpp": {"process": "mmpp", "rates_per_s": [0.05, 1.5], "mean_sojourn_s": [600.0, 200.0]},
    "diurnal": {"process": "diurnal", "mean_rate_per_s": 0.4, "amplitude": 0.8, "peak_hour_utc": 3.0},
}


@pytest.mark.parametrize("process", sorted(ARRIVALS))
def test_a_streamed_synthetic_table_is_the_whole_table(process, tiny_windows):
    from dcsim.config import WorkloadConfig

    cfg = WorkloadConfig.model_validate({
        "arrivals": ARRIVALS[process], "gpus_per_job": {"values": [1, 2, 4], "weights": [0.5, 0.3, 0.2]},
        "duration_s": {"distribution": "lognormal", "mean": 900.0, "sigma": 0.7}, "deadline_slack": 2.5,
        "deferrable_fraction": 0.4, "value_tokens_per_gpu_s": 0.002})
    start = pd.Timestamp("2023-06-21T15:00:00Z")
    whole = synthetic_jobs(cfg, 7200.0, start, Streams(4))
    source = SyntheticSource(cfg, 7200.0, start, Streams(4), chunk_jobs=31)
    parts = list(source.chunks())
    assert len(whole) > 500 and source.n_jobs == len(whole) and len(parts) == math.ceil(len(whole) / 31)
    pd.testing.assert_frame_equal(pd.concat(parts), whole, check_exact=True)


def _scenario(name: str, *overrides: str):
    return load_scenario(REPO / "scenarios" / f"{name}.yaml", list(overrides))


def _runs(sc, policy: str, chunk_jobs: int, fmt: str = "csv"):
    """The same scenario run whole (the table built first) and streamed (chunks of ``chunk_jobs``)."""
    sc = sc.model_copy(update={"outputs": sc.outputs.model_copy(update={"format": fmt})})
    streams = Streams(sc.seed)
    whole = Simulation(sc, load_policy(policy, {}), build_jobs(sc, streams), build_supply(sc), streams,
                       stream_jobs=False).run()
    source = SyntheticSource(sc.workload, sc.horizon_s, pd.Timestamp(sc.start), Streams(sc.seed), chunk_jobs=chunk_jobs)
    streamed = Simulation(sc, load_policy(policy, {}), source, build_supply(sc), Streams(sc.seed),
                          stream_jobs=True).run()
    return whole, streamed


def _summary(result) -> dict:
    s = summarize(result)
    s.pop("performance")  # wall-clock fields
    return json.loads(json.dumps(s))


CASES = [  # scenario, overrides, policy: drops (queue full, expired deadlines), deferrals, pauses, failures, a tree
    ("quickstart", ["horizon_s=6h", "cluster.gpus=6", "workload.max_queue=4", "workload.drop_expired=true"],
     "deadline_slack"),
    ("teach_market", [], "price_threshold"),
    ("facility_failures", ["horizon_s=4h"], "always_on"),
    ("facility_failures", ["horizon_s=4h", "facility.failures.on_failure=lose"], "race_to_idle"),
]


@pytest.mark.parametrize("name,overrides,policy", CASES)
def test_a_streamed_run_writes_the_whole_runs_jobs_csv_and_summary(name, overrides, policy, tiny_windows):
    whole, streamed = _runs(_scenario(name, *overrides), policy, chunk_jobs=17)
    assert streamed.jobs is None and whole.jobs is not None and len(whole.jobs) > 17 * 3
    assert streamed.job_file.path.read_bytes() == whole.jobs.to_csv(index=False).encode()
    assert _summary(streamed) == _summary(whole)
    assert streamed.counters["events"] == whole.counters["events"]


def test_a_table_kept_in_many_chunks_is_the_table_kept_in_one():
    sc = _scenario("quickstart", "horizon_s=6h")
    streams = Streams(sc.seed)
    jobs = build_jobs(sc, streams)
    one = Simulation(sc, load_policy("truthful", {}), jobs, build_supply(sc), Streams(sc.seed)).run()
    many = Simulation(sc, load_policy("truthful", {}), TableSource(jobs, chunk_jobs=13), build_supply(sc),
                      Streams(sc.seed)).run()
    pd.testing.assert_frame_equal(one.jobs, many.jobs, check_exact=True)
    assert _summary(one) == _summary(many)


def test_slots_grow_when_more_jobs_wait_than_they_hold(monkeypatch):
    """4 GPUs and ~1,800 jobs in one hour: the queue outgrows the first slots (2 × GPUs + 1024), and the buffers
    are reallocated mid-run; the streamed table is still the whole one."""
    sc = _scenario("quickstart", "horizon_s=1h", "cluster.gpus=4", "workload.arrivals.rate_per_s=0.5")
    whole, streamed = _runs(sc, "truthful", chunk_jobs=101)
    assert int((whole.jobs["status"] == "queued").sum()) > 2 * 4 + 1024
    assert streamed.job_file.path.read_bytes() == whole.jobs.to_csv(index=False).encode()
    assert _summary(streamed) == _summary(whole)


def test_a_streamed_parquet_table_reads_back_as_the_whole_table(tiny_windows):
    pytest.importorskip("pyarrow")
    whole, streamed = _runs(_scenario("quickstart", "horizon_s=6h"), "always_on", chunk_jobs=19, fmt="parquet")
    pd.testing.assert_frame_equal(streamed.jobs_table(), whole.jobs, check_exact=True)


def test_run_and_write_stream_the_jobs_table_into_the_run_folder(tmp_path):
    from dcsim.outputs import write_run
    from dcsim.runner import run_scenario
    from dcsim.tables import read_table

    sc = _scenario("quickstart", "horizon_s=6h")
    whole = run_scenario(sc)
    streamed = run_scenario(sc.model_copy(update={"outputs": sc.outputs.model_copy(update={"stream_jobs": True})}))
    assert streamed.result.jobs is None
    write_run(whole, tmp_path / "whole")
    write_run(streamed, tmp_path / "streamed")
    assert (tmp_path / "streamed" / "jobs.csv").read_bytes() == (tmp_path / "whole" / "jobs.csv").read_bytes()
    for stem in ("rounds", "timeseries", "ledger"):
        pd.testing.assert_frame_equal(read_table(tmp_path / "whole", stem), read_table(tmp_path / "streamed", stem))
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("whole", "streamed"))
    for s in (a, b):
        s.pop("performance")
    assert a == b


def test_a_trace_replay_streams_its_output_from_the_whole_table(tmp_path):
    """A trace stays a whole table in memory, but its job table can still be written as jobs end."""
    from dcsim.outputs import write_run
    from dcsim.runner import run_scenario

    sc = _scenario("example_jobs")
    whole = run_scenario(sc)
    streamed = run_scenario(sc.model_copy(update={"outputs": sc.outputs.model_copy(update={"stream_jobs": True})}))
    assert streamed.result.jobs is None and len(whole.result.jobs) > 0
    write_run(whole, tmp_path / "whole")
    write_run(streamed, tmp_path / "streamed")
    assert (tmp_path / "streamed" / "jobs.csv").read_bytes() == (tmp_path / "whole" / "jobs.csv").read_bytes()
