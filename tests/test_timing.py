"""Decision timing (event vs fixed-step), the decision log, market-round jitter and the event trace."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import scenario
from dcsim.runner import run_scenario

WORLD = dict(
    seed=5, horizon_s=6 * 3600, cluster={"gpus": 4},
    workload={"arrivals": {"process": "poisson", "rate_per_s": 0.004},
              "duration_s": {"distribution": "exponential", "mean": 900}, "deferrable_fraction": 0.5},
    supply={"solar": {"capacity_w": 1500, "latitude": 37.4, "longitude": -121.9}},
    market={"interval_s": 300},
    policy={"name": "renewable_follower"},
    start="2023-06-21T13:00:00Z",
)


def test_fixed_step_defers_every_decision_to_the_tick():
    r = run_scenario(scenario(decision_timing={"fixed_step": 900}, **WORLD)).result
    d = r.decisions
    assert set(d["method"]) == {"bid", "admit", "on_idle"}
    assert np.all(np.mod(d["time_s"], 900.0) == 0.0), d[np.mod(d["time_s"], 900.0) != 0]
    # a deferrable job arriving between ticks is decided at the next tick, never at its arrival
    deferrable = r.jobs[r.jobs["deferrable"]]
    admit_times = d.loc[d["method"] == "admit", "time_s"].to_numpy()
    horizon = WORLD["horizon_s"]
    for t in deferrable["arrival_s"]:
        assert t not in admit_times
        next_tick = np.ceil(t / 900.0) * 900.0
        if next_tick < horizon:  # a job arriving in the last partial tick is still undecided at the end
            assert next_tick in admit_times


def test_event_timing_decides_at_the_event():
    r = run_scenario(scenario(**WORLD)).result
    d = r.decisions
    admit_times = set(d.loc[d["method"] == "admit", "time_s"])
    deferrable_arrivals = set(r.jobs.loc[r.jobs["deferrable"], "arrival_s"])
    assert deferrable_arrivals <= admit_times  # each deferrable job is decided the instant it arrives
    bid_times = set(d.loc[d["method"] == "bid", "time_s"])
    starts = set(r.jobs["start_s"].dropna())
    assert starts <= bid_times | set(r.rounds["time_s"])  # agents bid when their job starts
    assert not np.all(np.mod(d["time_s"], 900.0) == 0.0)


def test_same_world_different_timing():
    event = run_scenario(scenario(**WORLD))
    fixed = run_scenario(scenario(decision_timing={"fixed_step": 900}, **WORLD))
    cols = ["arrival_s", "gpus", "work_gpu_s", "deferrable"]
    assert event.result.jobs[cols].equals(fixed.result.jobs[cols])  # the same jobs
    assert event.summary["wait_s"] != fixed.summary["wait_s"]


def test_round_jitter_moves_rounds_within_the_window_reproducibly():
    runs = [run_scenario(scenario(market={"interval_s": 300, "round_jitter_s": 120}, seed=s, horizon_s=7200,
                                  workload=WORLD["workload"])).result for s in (1, 1, 2)]
    periodic = [r.rounds.loc[r.rounds["trigger"] == "periodic", "time_s"].to_numpy() for r in runs]
    k = np.arange(24) * 300.0
    offsets = periodic[0] - k
    assert np.all((offsets >= 0) & (offsets < 120)) and np.ptp(offsets) > 0
    np.testing.assert_array_equal(periodic[0], periodic[1])
    assert not np.array_equal(periodic[0], periodic[2])
    unjittered = run_scenario(scenario(horizon_s=7200, workload=WORLD["workload"])).result
    np.testing.assert_array_equal(unjittered.rounds["time_s"], k)


def test_event_trace_replays_every_job():
    r = run_scenario(scenario(outputs={"trace_events": True}, policy={"name": "race_to_idle"},
                              **{k: v for k, v in WORLD.items() if k != "policy"})).result
    ev = r.events
    assert ev["time_s"].is_monotonic_increasing
    by_kind = ev.groupby("kind")["agent"].apply(set)
    jobs = r.jobs
    assert by_kind["arrival"] == set(jobs.index[jobs["status"] != "future"])
    assert by_kind["start"] == set(jobs.index[jobs["start_s"].notna()])
    assert by_kind["complete"] == set(jobs.index[jobs["status"] == "completed"])
    starts = ev[ev["kind"] == "start"].set_index("agent")["time_s"]
    np.testing.assert_array_equal(starts.sort_index().to_numpy(), jobs.loc[starts.sort_index().index, "start_s"])
    assert (ev["kind"] == "round").sum() == len(r.rounds)
    assert {"entering_sleep", "sleep", "waking", "idle"} <= set(ev.loc[ev["kind"] == "power_state", "details"])


def test_fixed_step_must_be_positive():
    from dcsim.errors import ScenarioError

    with pytest.raises(ScenarioError, match="decision_timing"):
        scenario(decision_timing={"fixed_step": 0}, **{k: v for k, v in WORLD.items()})
