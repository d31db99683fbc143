"""Failures in runs: hand-worked requeue and loss, GPU energy while failed, renewable trips, failure counts against
renewal theory, and every book balanced with failures on (hypothesis)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import constant_supply, jobs_table, scenario, simulate
from dcsim.facility.failures import expected_availability, expected_failures
from dcsim.policy import load_policy
from dcsim.seeding import Streams
from dcsim.workload import build_jobs

H100_IDLE_W = 78.8


def _one_gpu_outage(on_failure):
    # One GPU under node0; node0 is out from t = 100 for 50 s; a 1000 s job runs from t = 0.
    sc = scenario(cluster={"gpus": 1}, horizon_s=3000,
                  facility={"topology": {"gpus_per_node": 1, "nodes_per_rack": 1},
                            "failures": {"scheduled": [{"element": "node0", "start_s": 100, "duration_s": 50}],
                                         "on_failure": on_failure}})
    return sc, simulate(sc, jobs_table([(0.0, 1, 1000.0)]))


def test_a_requeued_job_starts_again_after_the_repair_and_the_boot():
    sc, r = _one_gpu_outage("requeue")
    job = r.jobs.iloc[0]
    boot_s = sc.cluster.transitions.boot_s  # repaired GPUs come back OFF
    assert job["status"] == "completed" and job["requeues"] == 1
    assert job["start_s"] == pytest.approx(150.0 + boot_s)
    assert job["finish_s"] == pytest.approx(150.0 + boot_s + 1000.0)
    f = r.facility["failures"]
    assert f["scheduled"] == {"components": 1, "failures": 1, "downtime_s": 50.0}
    assert f["jobs_requeued"] == 1 and f["jobs_killed"] == 0
    # the job's energy counts both attempts: 100 s and 1000 s at full power
    assert job["energy_j"] == pytest.approx(1100.0 * 700.0)


def test_a_lost_job_ends_killed_at_the_failure():
    _, r = _one_gpu_outage("lose")
    job = r.jobs.iloc[0]
    assert job["status"] == "killed" and job["finish_s"] == 100.0 and job["requeues"] == 0
    assert job["energy_j"] == pytest.approx(100.0 * 700.0)
    assert r.facility["failures"]["jobs_killed"] == 1


def test_failed_gpus_draw_nothing_and_come_back_off():
    # No jobs: a GPU draws idle power until it first fails, nothing while down, and off power once repaired
    # (it stays OFF: nothing claims it). Exact per GPU against the drawn outages.
    sc = scenario(cluster={"gpus": 40}, horizon_s=20000,
                  facility={"failures": {"gpu": {"mtbf_s": 8000, "mttr_s": 1500}}})
    r = simulate(sc, jobs_table([]))
    from dcsim.engine import Simulation

    sim = Simulation(sc, load_policy("always_on"), jobs_table([]), constant_supply(), Streams(sc.seed))
    comp, start, end = sim.outages.events["gpu"].down_intervals()
    off_w = sim.cluster.state_power_w[0]
    T = sc.horizon_s
    expected = np.full(40, H100_IDLE_W * T)
    for g in range(40):
        mine = comp == g
        if mine.any():
            first = start[mine].min()
            down = float(np.sum(end[mine] - start[mine]))
            expected[g] = H100_IDLE_W * first + off_w * (T - first - down)
    np.testing.assert_allclose(r.gpu_energy_j, expected, rtol=1e-9, atol=1e-6)
    assert r.facility["failures"]["gpu"]["failures"] == int((~sim.outages.events["gpu"].up).sum())


def test_renewable_trips_cut_the_plant_to_nothing_while_tripped():
    sc = scenario(cluster={"gpus": 2}, horizon_s=40000,
                  facility={"failures": {"renewable_trips": {"mean_time_between_s": 5000, "mean_duration_s": 1000}}})
    r = simulate(sc, jobs_table([(0.0, 1, 500.0)]), supply=constant_supply(renewable_w=1000.0))
    trips = r.facility["failures"]["renewable_trips"]
    assert trips["trips"] >= 1
    assert r.energy["renewable_generated_j"] == pytest.approx(1000.0 * (sc.horizon_s - trips["downtime_s"]), rel=1e-9)


def test_gpu_failure_counts_and_downtime_match_renewal_theory():
    # 400 GPUs, MTBF 10 h, MTTR 2 h, over 2 days: E[N(T)] and E[up fraction] from alternating renewal theory
    # (Ross); tolerances from the standard errors over the GPUs (4 σ).
    n, mtbf, mttr, T = 400, 36000.0, 7200.0, 172800.0
    sc = scenario(cluster={"gpus": n}, horizon_s=T, market={"interval_s": 3600},
                  facility={"failures": {"gpu": {"mtbf_s": mtbf, "mttr_s": mttr}}})
    r = simulate(sc, jobs_table([]))
    f = r.facility["failures"]["gpu"]
    mean_n = n * expected_failures(mtbf, mttr, T)
    # per-GPU counts are at most Poisson-dispersed here (a repair time only thins failures)
    assert abs(f["failures"] - mean_n) <= 4 * math.sqrt(mean_n)
    down_fraction = f["downtime_s"] / (n * T)
    expected_down = 1 - expected_availability(mtbf, mttr, T)
    # a GPU's down fraction lies in [0, 1]: its variance is at most p(1 − p)
    se = math.sqrt(expected_down * (1 - expected_down) / n)
    assert abs(down_fraction - expected_down) <= 4 * se


@st.composite
def cases(draw):
    gpus = draw(st.integers(2, 12))
    facility = {"failures": {"gpu": {"mtbf_s": draw(st.sampled_from([600, 3000])), "mttr_s": 300},
                             "on_failure": draw(st.sampled_from(["requeue", "lose"]))}}
    if draw(st.booleans()):
        facility["topology"] = {"gpus_per_node": 2, "nodes_per_rack": 2,
                                "limits": {"rack_w": draw(st.sampled_from([None, 1200.0, 2000.0]))}}
        facility["failures"]["node"] = {"mtbf_s": 2000, "mttr_s": 200}
        facility["failures"]["scheduled"] = [{"element": "rack0", "start_s": draw(st.sampled_from([0, 900])),
                                              "duration_s": 600}]
    if draw(st.booleans()):
        facility["failures"]["renewable_trips"] = {"mean_time_between_s": 900, "mean_duration_s": 300}
    data = {
        "seed": draw(st.integers(0, 10_000)), "horizon_s": 3600,
        "cluster": {"gpus": gpus, "initial_state": draw(st.sampled_from(["idle", "sleep", "off"]))},
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": 0.02},
                     "gpus_per_job": {"values": [1, 2, 3], "weights": [0.5, 0.3, 0.2]},
                     "duration_s": {"distribution": "exponential", "mean": 300},
                     "deadline_slack": draw(st.sampled_from([None, 3.0])), "value_tokens_per_gpu_s": 0.001,
                     "deferrable_fraction": draw(st.sampled_from([0.0, 0.5]))},
        "market": {"mechanism": draw(st.sampled_from(["posted_price", "uniform_price", "kelly"])),
                   "interval_s": 300, "initial_tokens": draw(st.sampled_from([0.05, 1e9])),
                   "endowment_tokens": 0.05, "endowment_interval_s": 600},
        "policy": {"name": draw(st.sampled_from(["always_on", "race_to_idle", "renewable_follower", "truthful"]))},
        "facility": facility,
    }
    return scenario(**data), draw(st.sampled_from([0.0, 800.0 * gpus]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_books_balance_and_every_job_is_accounted_for_with_failures(case):
    sc, renewable_w = case
    jobs = build_jobs(sc, Streams(sc.seed))
    r = simulate(sc, jobs, policy=load_policy(sc.policy.name), supply=constant_supply(renewable_w=renewable_w))
    e = r.energy
    scale = max(e["consumed_j"], 1.0)
    assert abs(e["renewable_used_j"] + e["battery_out_j"] + e["grid_j"] + e["unserved_j"] - e["consumed_j"]) <= 1e-9 * scale
    assert abs(r.gpu_energy_j.sum() - e["consumed_j"]) <= 1e-9 * scale
    assert (r.gpu_energy_j >= -1e-9).all()
    tk = r.tokens
    assert abs(tk["minted"] - (tk["held"] + tk["spent"] + tk["burned"])) <= 1e-9 * max(tk["minted"], 1.0)
    status = r.jobs["status"].astype(str)
    assert set(status) <= {"future", "completed", "dropped", "killed", "deferred", "queued", "starting", "running"}
    arrived = status != "future"
    assert int(arrived.sum()) == int(sum((status == s).sum() for s in
                                         ("completed", "dropped", "killed", "deferred", "queued", "starting", "running")))
    f = r.facility["failures"]
    if sc.facility.failures.on_failure == "lose":
        assert f["jobs_requeued"] == 0 and int((status == "killed").sum()) == f["jobs_killed"]
    else:
        assert f["jobs_killed"] == 0 and int(r.jobs["requeues"].sum()) == f["jobs_requeued"]
    done = r.jobs[status == "completed"]
    assert (done["finish_s"] - done["start_s"] >= done["duration_full_clock_s"] * (1 - 1e-9)).all()
    if r.elements is not None and sc.facility.topology.limits.rack_w is not None:
        assert (r.elements.filter(like="rack").to_numpy() <= sc.facility.topology.limits.rack_w * (1 + 1e-9)).all()
