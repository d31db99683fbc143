"""The compiled per-job path (dcsim/kernel.py, dcsim/compiled.py) against the Python path: the same outputs, bit
for bit.

An exact regression test: the kernel does the Python path's operations in the same order, and orders job events
against rounds and supply changes by SimPy's own (time, priority, event id), so every file of a run must be the
same. The worlds here push the parts where the two could part: queues and every kind of drop, gang jobs, caps
and pauses under scarce supply, shortfalls beyond the import cap, a battery filling and emptying inside intervals,
the cooling plant, all four mechanisms, endowments with burns,
tiny chunks and slots that must grow, and hand-made traces whose arrivals, completions and rounds fall on the
same instants.
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcsim.arrivals import SyntheticSource, TableSource
from dcsim.compiled import compiled_reason, numba_available, use_compiled
from dcsim.config import parse_scenario
from dcsim.engine import Simulation
from dcsim.errors import DcsimError
from dcsim.metrics import summarize
from dcsim.policy import load_policy
from dcsim.seeding import Streams
from dcsim.supply import build_supply
from dcsim.workload import build_job_source

needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed (extra 'fast')")


def _world(gpus=24, horizon_s=6 * 3600, rate=0.02, mean_s=900.0, gpus_per_job=None, mechanism="posted_price",
           solar_w=None, import_cap_w=None, market=None, workload=None, seed=3, **extra):
    data = {
        "name": "compiled-check", "start": "2023-06-21T12:00:00Z", "horizon_s": horizon_s, "seed": seed,
        "cluster": {"gpus": gpus, "gpu_model": "H100"},
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": rate},
                     "duration_s": {"distribution": "exponential", "mean": mean_s},
                     **({"gpus_per_job": gpus_per_job} if gpus_per_job else {}), **(workload or {})},
        "supply": {"solar": {"capacity_w": solar_w if solar_w is not None else 400.0 * gpus,
                             "latitude": 37.36, "longitude": -121.93},
                   **({"grid": {"import_cap_w": import_cap_w}} if import_cap_w is not None else {})},
        "market": {"interval_s": 300, "initial_tokens": 50.0, "mechanism": mechanism, **(market or {})},
        "policy": {"name": "always_on"},
        "outputs": {"jobs_table": True, "timeseries_table": True},
    }
    data.update(extra)
    return parse_scenario(data)


def _run(sc, compiled: bool, jobs=None, chunk_jobs: int | None = None):
    streams = Streams(sc.seed)
    if jobs is not None:
        source = jobs if chunk_jobs is None else TableSource(jobs, chunk_jobs=chunk_jobs)
    elif chunk_jobs is not None:
        source = SyntheticSource(sc.workload, sc.horizon_s, pd.Timestamp(sc.start), streams, chunk_jobs=chunk_jobs)
    else:
        source = build_job_source(sc, streams)
    sim = Simulation(sc, load_policy(sc.policy.name, sc.policy.params), source, build_supply(sc), streams,
                     compiled=compiled)
    result = sim.run()
    assert result.engine == ("compiled" if compiled else "python")
    return result


def _summary(result) -> dict:
    s = summarize(result)
    s.pop("performance")  # wall-clock fields
    return json.loads(json.dumps(s))


def _assert_same(a, b) -> None:
    """Every output of two runs equal, bit for bit."""
    assert a.counters["events"] == b.counters["events"]
    assert a.counters["peak_overallocation_w"] == b.counters["peak_overallocation_w"]
    assert a.jobs_table().to_csv(index=False) == b.jobs_table().to_csv(index=False)
    for name in ("rounds", "timeseries", "ledger", "decisions"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True)
    assert a.energy == b.energy and a.tokens == b.tokens
    assert np.array_equal(a.gpu_energy_j, b.gpu_energy_j) and np.array_equal(a.wallets, b.wallets)
    assert a.facility == b.facility
    assert _summary(a) == _summary(b)


CASES = {
    # a queue, gang jobs, deadlines that expire in it, and a full queue
    "queues_and_drops": dict(gpus=16, rate=0.04, mean_s=1200.0,
                             gpus_per_job={"values": [1, 2, 4, 8, 32], "weights": [0.5, 0.2, 0.15, 0.1, 0.05]},
                             workload={"deadline_slack": 1.5, "max_queue": 12, "clock_sensitivity": 0.6}),
    # little sun and a tight grid: rationed rounds, caps below the minimum (paused jobs), unserved demand
    "scarce_supply_uniform": dict(mechanism="uniform_price", solar_w=2000.0, import_cap_w=3000.0,
                                  workload={"clock_sensitivity": 0.4}),
    "scarce_supply_vcg": dict(gpus=12, mechanism="vcg", solar_w=1500.0, import_cap_w=2500.0),
    "scarce_supply_kelly": dict(mechanism="kelly", solar_w=2500.0, import_cap_w=4000.0,
                                market={"initial_tokens": 0.5}),
    # small wallets, endowments with demurrage and a carry-over cap: budgets bind at job starts
    "budgets_and_burns": dict(solar_w=500.0, market={"initial_tokens": 0.2, "endowment_tokens": 0.05,
                                                     "endowment_interval_s": 1800, "demurrage_fraction": 0.1,
                                                     "carry_over_cap_tokens": 0.3}),


    # at night-level sun the grid cap is below the idle draw: unserved demand, booked by the books' shortfall branch
    "shortfall": dict(solar_w=300.0, import_cap_w=1000.0),
    # a supply battery that fills in the afternoon sun and empties after sunset, inside intervals (split steps)
    "battery": dict(horizon_s=14 * 3600, rate=0.01, supply={
        "solar": {"capacity_w": 30_000.0, "latitude": 37.36, "longitude": -121.93},
        "battery": {"capacity_wh": 3000.0, "max_charge_w": 4000.0, "max_discharge_w": 3000.0,
                    "round_trip_efficiency": 0.9, "initial_soc": 0.2}}),
    # the cooling plant at fixed setpoints: facility energy between events (the room's closed form), books on it
    "cooling": dict(facility={"cooling": {"weather": {"dry_bulb_c": 31.0}, "economiser": "air",
                                          "overhead_w": 500.0}}, solar_w=6000.0),
    "cooling_no_lag": dict(facility={"cooling": {"weather": {"dry_bulb_c": 18.0, "wet_bulb_c": 12.0},
                                                 "economiser": "water", "condenser": "water",
                                                 "time_constant_s": 0}}),
    # a battery and an import cap: discharge limited, then unserved
    "battery_and_cap": dict(solar_w=3000.0, import_cap_w=1500.0, supply={
        "solar": {"capacity_w": 3000.0, "latitude": 37.36, "longitude": -121.93},
        "grid": {"import_cap_w": 1500.0},
        "battery": {"capacity_wh": 2000.0, "max_charge_w": 1000.0, "max_discharge_w": 800.0, "initial_soc": 1.0}}),
}

# What each case is there for, seen in its outputs (so a case that stopped exercising its part fails).
FEATURES = {
    "queues_and_drops": lambda r: (r.jobs_table()["drop_reason"].value_counts()[
        ["queue_full", "deadline_expired", "too_large"]] > 0).all(),
    "scarce_supply_uniform": lambda r: (r.rounds["allocated_w"] == 0).any()
    and r.jobs_table().query("status == 'completed'")["slowdown"].median() > 2,
    "scarce_supply_vcg": lambda r: r.rounds["rationed"].sum() > 0 and r.energy["unserved_j"] > 0,
    "scarce_supply_kelly": lambda r: r.rounds["rationed"].sum() > 0,
    "budgets_and_burns": lambda r: r.tokens["burned"] > 100 and r.tokens["debit_shortfall"] > 0,
    "shortfall": lambda r: r.energy["unserved_j"] > 1e6,
    "battery": lambda r: r.energy["charged_j"] > 0 and r.energy["battery_out_j"] > 0
    and r.timeseries["battery_soc_j"].max() == 3000.0 * 3600 and r.timeseries["battery_soc_j"].min() == 0.0,
    "battery_and_cap": lambda r: r.energy["battery_out_j"] > 0 and r.energy["unserved_j"] > 0,
    "cooling": lambda r: r.facility["pue_energy_weighted"] > 1.05,
    "cooling_no_lag": lambda r: r.facility["pue_energy_weighted"] > 1.0,
}


@needs_numba
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_compiled_path_writes_the_python_paths_outputs(case):
    sc = _world(**CASES[case])
    compiled, python = _run(sc, True), _run(sc, False)
    assert FEATURES[case](python)
    _assert_same(compiled, python)


@needs_numba
def test_tiny_chunks_and_growing_slots_give_the_same_outputs():
    """4 GPUs and ~1,800 jobs in an hour, the table in chunks of 37 rows: chunks end out of order, the slots
    outgrow 2 × GPUs + 1024 mid-run and the heap and timers grow."""
    sc = _world(gpus=4, horizon_s=3600, rate=0.5, mean_s=400.0)
    compiled = _run(sc, True, chunk_jobs=37)
    assert int((compiled.jobs_table()["status"] == "queued").sum()) > 2 * 4 + 1024
    _assert_same(compiled, _run(sc, False, chunk_jobs=37))


def _tied_trace() -> pd.DataFrame:
    """Arrivals on whole seconds, many on the 5-minute round times and several at one instant (also t = 0),
    work in whole GPU-seconds at full clock (so completions fall on arrivals and rounds), gang jobs."""
    rng = np.random.default_rng(11)
    n = 400
    arrival = np.sort(np.concatenate([np.zeros(3), rng.integers(0, 12, size=n - 40) * 300.0,
                                      rng.integers(1, 3600, size=37).astype(float)]))
    gpus = rng.choice([1, 1, 1, 2, 4], size=n)
    duration = rng.choice([300.0, 600.0, 150.0, 1.0, 7.0, 900.0], size=n)
    return pd.DataFrame({"arrival_s": arrival, "gpus": gpus.astype(np.int64), "work_gpu_s": duration * gpus,
                         "deadline_s": np.where(rng.random(n) < 0.3, arrival + 2 * duration, np.nan),
                         "deferrable": False, "value_tokens": duration * gpus * 0.001,
                         "clock_sensitivity": 1.0})


@needs_numba
@pytest.mark.parametrize("solar_w", [8000.0, 50_000.0])
def test_jobs_and_rounds_at_the_same_instants_order_as_on_the_python_path(solar_w):
    jobs = _tied_trace()
    sc = _world(gpus=12, horizon_s=3 * 3600, solar_w=solar_w)
    compiled, python = _run(sc, True, jobs=jobs, chunk_jobs=29), _run(sc, False, jobs=jobs, chunk_jobs=29)
    table = python.jobs_table()
    rounds = set(python.rounds["time_s"].tolist())
    finished = set(table["finish_s"].dropna().tolist())
    assert finished & set(table["arrival_s"].tolist()) and finished & rounds  # the ties this test is about
    assert set(table["arrival_s"].tolist()) & rounds
    _assert_same(compiled, python)


@needs_numba
def test_the_cooling_plant_under_a_weather_file_gives_the_same_outputs():
    """Hourly EPW weather (the shared San Jose typical year): intervals split at weather steps."""
    from pathlib import Path

    epw = Path(__file__).resolve().parents[2] / "shared" / "traces" / "weather" / "USA_CA_San.Jose-Mineta.epw"
    if not epw.exists():
        pytest.skip(f"{epw} is absent (the shared traces)")
    sc = _world(horizon_s=10 * 3600, facility={"cooling": {"weather": {"epw": str(epw)}, "economiser": "air"}})
    compiled, python = _run(sc, True), _run(sc, False)
    assert python.timeseries["outdoor_dry_bulb_c"].nunique() > 3
    _assert_same(compiled, python)
    assert compiled.facility == python.facility


@needs_numba
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gpus=st.integers(1, 20), rate=st.floats(0.001, 0.1), mean_s=st.floats(30.0, 3000.0),
       mechanism=st.sampled_from(["posted_price", "uniform_price", "vcg", "kelly"]),
       solar_w=st.floats(0.0, 20_000.0), import_cap_w=st.one_of(st.none(), st.floats(500.0, 20_000.0)),
       slack=st.one_of(st.none(), st.floats(1.1, 4.0)), beta=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_random_worlds_give_the_same_outputs(gpus, rate, mean_s, mechanism, solar_w, import_cap_w, slack, beta,
                                             seed):
    sc = _world(gpus=gpus, horizon_s=7200, rate=rate, mean_s=mean_s, mechanism=mechanism, solar_w=solar_w,
                import_cap_w=import_cap_w, seed=seed,
                gpus_per_job={"values": [1, 2, 3], "weights": [0.7, 0.2, 0.1]},
                workload={"deadline_slack": slack, "clock_sensitivity": beta})
    _assert_same(_run(sc, True), _run(sc, False))


@needs_numba
def test_which_runs_take_the_compiled_path(monkeypatch):
    sc = _world(horizon_s=600)
    assert compiled_reason(sc, load_policy("always_on", {})) is None
    assert compiled_reason(sc, load_policy("truthful", {})) is None  # a built-in rule: its compiled form
    assert compiled_reason(sc, load_policy("qlearning", {})) is None  # a Q-table: its compiled form
    if importlib.util.find_spec("torch") is not None:
        assert compiled_reason(sc, load_policy("dqn", {})) is None  # a DQN: its compiled form (BID_DQN)
    topology = _world(horizon_s=600, facility={"topology": {"gpus_per_node": 8, "nodes_per_rack": 3}})
    assert compiled_reason(topology, load_policy("always_on", {})) == "facility.topology is configured"
    assert compiled_reason(_world(**dict(CASES["cooling"], horizon_s=600)), load_policy("always_on", {})) is None
    assert compiled_reason(_world(**dict(CASES["battery"], horizon_s=600)), load_policy("always_on", {})) is None
    rich = load_policy("qlearning", {"actions": "bid+idle"})  # a learner's layout without a compiled form
    with pytest.raises(DcsimError, match="action layout is 'bid[+]idle'"):
        use_compiled(sc, rich, True)
    assert use_compiled(sc, load_policy("always_on", {}), None, 10_000)
    assert not use_compiled(sc, load_policy("always_on", {}), None, 9_999)  # too few jobs to repay loading numba
    assert not use_compiled(sc, rich, None, 10**6)
    monkeypatch.setenv("DCSIM_COMPILED", "1")
    assert use_compiled(sc, load_policy("always_on", {}), None, 10)
    assert not use_compiled(sc, rich, None, 10)
    monkeypatch.setenv("DCSIM_COMPILED", "0")
    assert not use_compiled(sc, load_policy("always_on", {}), None, 10**6)


@needs_numba
def test_without_numba_the_same_run_takes_the_python_path(tmp_path):
    """numba blocked in a fresh interpreter: dcsim imports, an eligible run takes the Python path (and says so in
    its summary) and writes what the compiled path writes here."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from blocked_imports import import_blocker

    root = Path(__file__).resolve().parents[1]
    block = import_blocker(tmp_path, "numba", "llvmlite")
    code = ("import sys, json; sys.path.insert(0, 'tests'); import test_compiled as t; "
            "r = t._run(t._world(**t.CASES['queues_and_drops']), None); "
            "print(json.dumps({'engine': r.engine, 'jobs': r.jobs_table().to_csv(index=False), "
            "'summary': t._summary(r)}))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), str(root)]), DCSIM_COMPILED="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    check = subprocess.run([sys.executable, "-c", "import dcsim.compiled as c; print(c.numba_available())"],
                           capture_output=True, text=True, env=env, cwd=root)
    assert check.stdout.strip() == "False"
    compiled = _run(_world(**CASES["queues_and_drops"]), True)
    assert out["engine"] == "python"
    assert out["jobs"] == compiled.jobs_table().to_csv(index=False) and out["summary"] == _summary(compiled)


@needs_numba
def test_the_kernels_queue_and_placements_are_the_python_dispatchers():
    """At the horizon of an overloaded run the queue (slots, in order), every running job's GPUs and the free
    pool are the same on both paths: the kernel takes slots and GPUs in the Python path's order."""
    sc = _world(**CASES["queues_and_drops"])
    sims = []
    for compiled in (True, False):
        streams = Streams(sc.seed)
        sim = Simulation(sc, load_policy("always_on", {}), build_job_source(sc, streams), build_supply(sc), streams,
                         compiled=compiled)
        sim.run()
        sims.append(sim)
    c, p = sims
    assert len(p.jobs.queue) > 0 and len(p.jobs.job_gpus) > 0
    assert list(c.jobs.queue) == list(p.jobs.queue)
    assert c.jobs.job_gpus == p.jobs.job_gpus
    assert c.jobs.queue_length() == len(p.jobs.queue) and c.jobs.running_count() == len(p.jobs.job_gpus)
    assert list(c.cluster.free_idle) == list(p.cluster.free_idle)


def test_a_cold_kernel_cache_is_announced_once_and_a_warm_one_not(monkeypatch, caplog):
    """The first compiled run of an installation compiles the kernel (about a minute): it says so once, with the
    cache's folder; with numba's index present, or once said in this process, nothing."""
    import logging
    from types import SimpleNamespace

    from dcsim import compiled

    def fake(index: dict):
        cache_file = SimpleNamespace(_load_index=lambda: index, _index_path="/some/where/__pycache__/k.nbi")
        return SimpleNamespace(run_until=SimpleNamespace(signatures=[], _cache=SimpleNamespace(_cache_file=cache_file)))

    caplog.set_level(logging.WARNING, logger="dcsim.compiled")
    monkeypatch.setattr(compiled, "_COLD_NOTED", False)
    compiled.note_first_compile(fake({"key": "file"}))
    assert not caplog.records
    monkeypatch.setattr(compiled, "_COLD_NOTED", False)
    compiled.note_first_compile(fake({}))
    compiled.note_first_compile(fake({}))
    assert len(caplog.records) == 1 and "/some/where/__pycache__" in caplog.records[0].getMessage()
    assert "once per installation" in caplog.records[0].getMessage()
