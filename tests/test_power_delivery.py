"""The power-delivery tree in runs: placement on nodes, the safety layer's limits at every instant, and its counts.

Hand-worked cases (placement by the documented rule; a rack breaker that moves power from a low-value to a
high-value job at the next clearing), a hypothesis property over random trees, limits, policies and mechanisms
("no element over its limit at any instant", from the recorded per-element series, whose roots integrate to the
energy books), and errors for trees that cannot work.
"""
from __future__ import annotations

import numpy as np
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import constant_supply, jobs_table, scenario, simulate
from dcsim.cluster import Cluster
from dcsim.errors import ScenarioError
from dcsim.policy import load_policy
from dcsim.seeding import Streams
from dcsim.workload import build_jobs

MECHANISMS = ["posted_price", "uniform_price", "pay_as_bid", "vcg", "kelly"]
POLICIES = ["always_on", "race_to_idle", "renewable_follower", "price_threshold", "deadline_slack", "truthful"]
H100_IDLE_W, H100_TDP_W, H100_MIN_W = 78.8, 700.0, 200.0


def _tree(gpus, **topology):
    return scenario(cluster={"gpus": gpus}, horizon_s=1200, facility={"topology": topology})


def test_placement_follows_the_documented_rule_and_jobs_csv_records_the_node():
    # 16 GPUs, 8 per node. A 4-GPU job goes to node 0 (both fit, equal free: lowest index); a 2-GPU job then
    # best-fits into node 0 (4 free, not 8); an 8-GPU job needs a whole node: node 1; a 2-GPU job after it
    # fits node 0's last 2.
    sc = _tree(16, gpus_per_node=8, nodes_per_rack=2)
    jobs = jobs_table([(0.0, 4, 4e6), (1.0, 2, 2e6), (2.0, 8, 8e6), (3.0, 2, 2e6), (4.0, 1, 100.0)])
    r = simulate(sc, jobs)
    assert r.jobs["node"].tolist()[:4] == [0, 0, 1, 0]
    assert r.jobs["node"].iloc[4] == -1  # never placed: the cluster was full until the horizon
    assert r.jobs["status"].astype(str).iloc[4] == "queued"


def test_no_topology_no_node_column_and_no_facility_outputs():
    r = simulate(scenario(cluster={"gpus": 2}), jobs_table([(0.0, 1, 100.0)]))
    assert "node" not in r.jobs.columns and r.elements is None and r.facility is None


def _two_jobs_on_one_rack(rack_w, horizon_s):
    """One rack of two 1-GPU nodes; a low-value job arrives at t = 0, a high-value one at t = 1; rounds every 300 s.
    Returns the run and the nodes of the low- and high-value jobs."""
    sc = scenario(cluster={"gpus": 2}, horizon_s=horizon_s, market={"interval_s": 300},
                  facility={"topology": {"gpus_per_node": 1, "nodes_per_rack": 2, "limits": {"rack_w": rack_w}}})
    jobs = jobs_table([{"arrival_s": 0.0, "gpus": 1, "work_gpu_s": 1e6, "value_tokens": 1.0},
                       {"arrival_s": 1.0, "gpus": 1, "work_gpu_s": 1e6, "value_tokens": 100.0}])
    r = simulate(sc, jobs)
    low, high = (f"node{n}" for n in r.jobs["node"].tolist())
    return r, low, high


def test_rack_breaker_moves_power_to_the_higher_value_job_at_the_next_clearing():
    # One rack of two 1-GPU nodes, limit 1000 W. The low-value job starts alone at t = 0 (700 W, the rack's
    # headroom allows it); the high-value job starts at t = 1 and gets what is left: 1000 − 700 = 300 W. At the
    # round at t = 300 the safety layer caps the lowest value first: low 300 W, high 700 W (hand-worked).
    r, low, high = _two_jobs_on_one_rack(rack_w=1000.0, horizon_s=900)
    el = r.elements.set_index("time_s")
    assert el.loc[0.0, low] == pytest.approx(H100_TDP_W) and el.loc[0.0, high] == pytest.approx(H100_IDLE_W)
    assert el.loc[1.0, low] == pytest.approx(H100_TDP_W) and el.loc[1.0, high] == pytest.approx(300.0)
    assert el.loc[300.0, low] == pytest.approx(300.0) and el.loc[300.0, high] == pytest.approx(H100_TDP_W)
    assert (el["rack0"] <= 1000.0 * (1 + 1e-12)).all()
    pd_ = r.facility["power_delivery"]
    # the rounds at 300 and 600 each cut 400 W at rack0, held 300 s each (the round at 0 had nothing to cut)
    assert pd_["capped_ws_by_element"] == {"rack0": pytest.approx(400.0 * 600)}
    assert pd_["overrides"] == 2 and pd_["paused_gpus"] == 0


def test_limits_below_what_the_minimum_caps_need_pause_the_lowest_value_job():
    # Rack limit 350 W: both GPUs running at the 200 W minimum would need 400 W; at the round the low-value
    # job pauses (idle 78.8 W) and the high-value one gets the rest, 350 − 78.8 = 271.2 W.
    r, low, high = _two_jobs_on_one_rack(rack_w=350.0, horizon_s=600)
    row = r.elements.set_index("time_s").loc[300.0]
    assert row[low] == pytest.approx(H100_IDLE_W) and row[high] == pytest.approx(350.0 - H100_IDLE_W)
    assert r.facility["power_delivery"]["paused_gpus"] >= 1


@st.composite
def cases(draw):
    per_node = draw(st.integers(1, 4))
    gpus = draw(st.integers(2, 16))
    data = {
        "seed": draw(st.integers(0, 10_000)),
        "horizon_s": 3600,
        "cluster": {"gpus": gpus, "gpu_model": draw(st.sampled_from(["A100", "H100"])),
                    "initial_state": draw(st.sampled_from(["idle", "sleep", "off"]))},
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": 0.02},
                     "gpus_per_job": {"values": [1, 2, 4], "weights": [0.5, 0.3, 0.2]},
                     "duration_s": {"distribution": "exponential", "mean": draw(st.sampled_from([120, 600]))},
                     "deadline_slack": draw(st.sampled_from([None, 2.0])),
                     "deferrable_fraction": draw(st.sampled_from([0.0, 0.5])), "value_tokens_per_gpu_s": 0.001},
        "market": {"mechanism": draw(st.sampled_from(MECHANISMS)), "interval_s": draw(st.sampled_from([60, 300])),
                   "initial_tokens": draw(st.sampled_from([0.05, 1e9])), "endowment_tokens": 0.05,
                   "endowment_interval_s": 600},
        "policy": {"name": draw(st.sampled_from(POLICIES))},
        "decision_timing": draw(st.sampled_from(["event", {"fixed_step": 450}])),
    }
    base = scenario(**data)
    cl = Cluster(base, simpy.Environment(), None)
    floor_w = max(cl.state_power_w)  # the most a GPU draws without a policy deciding it (idle or a transition)
    span_w = cl.tdp_w - floor_w
    fractions = {kind: draw(st.sampled_from([None, 0.1, 0.5, 0.9, 1.5])) for kind in ("node", "rack", "pdu", "feed")}
    fanout = {"gpus_per_node": per_node, "nodes_per_rack": draw(st.integers(1, 3)),
              "racks_per_pdu": draw(st.integers(1, 2)), "pdus_per_feed": draw(st.integers(1, 2))}
    sizes = {"node": per_node}
    sizes["rack"] = sizes["node"] * fanout["nodes_per_rack"]
    sizes["pdu"] = sizes["rack"] * fanout["racks_per_pdu"]
    sizes["feed"] = sizes["pdu"] * fanout["pdus_per_feed"]
    # a full element's worth of floors plus a fraction of its span: always feasible (pausing reaches the floor)
    limits = {f"{k}_w": (None if f is None else sizes[k] * (floor_w + f * span_w)) for k, f in fractions.items()}
    data["facility"] = {"topology": {**fanout, "limits": limits}}
    return scenario(**data)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_no_element_is_ever_over_its_limit(sc):
    jobs = build_jobs(sc, Streams(sc.seed))
    r = simulate(sc, jobs, policy=load_policy(sc.policy.name), supply=constant_supply(renewable_w=0.0))
    tree = sc.facility.topology.build(sc.cluster.gpus)
    el = r.elements
    assert list(el.columns) == ["time_s", *tree.names]
    power = el[list(tree.names)].to_numpy()
    limit = np.where(np.isfinite(tree.limit_w), tree.limit_w, np.inf)
    assert r.facility["power_delivery"]["shortfall_w_max"] == 0.0
    over = power - limit * (1 + 1e-9)
    assert (over <= 0).all(), f"element {tree.names[int(np.argmax(over.max(axis=0)))]} over its limit"
    # The series covers every instant: the roots' power integrated over it is the energy the books consumed.
    t = np.append(el["time_s"].to_numpy(), sc.horizon_s)
    assert (np.diff(t) >= 0).all()
    roots = tree.roots()
    energy_j = float(np.sum(power[:, roots].sum(axis=1) * np.diff(t)))
    assert energy_j == pytest.approx(r.energy["consumed_j"], rel=1e-9, abs=1e-6)
    # Every job accounted for, as without a tree; a job's node is that of its GPUs (regular tree: g // per_node).
    status = r.jobs["status"].astype(str)
    assert set(status) <= {"completed", "dropped", "deferred", "queued", "starting", "running"}
    placed = r.jobs["start_s"].notna() | (status == "starting")  # starting: GPUs claimed, still waking
    assert (r.jobs.loc[placed, "node"] >= 0).all() and (r.jobs.loc[~placed, "node"] == -1).all()
    # Tokens still conserved with the safety layer cutting allocations.
    tk = r.tokens
    assert abs(tk["minted"] - (tk["held"] + tk["spent"] + tk["burned"])) <= 1e-9 * max(tk["minted"], 1.0)


@pytest.mark.parametrize("facility, field, message", [
    ({"topology": {"gpus_per_node": 8, "nodes_per_rack": 4, "racks_per_pdu": 1, "pdus_per_feed": 1,
                   "limits": {"rack_w": 500}}}, "facility.topology.limits", "below the idle power"),
    ({"topology": {"gpus_per_node": 8, "nodes_per_rack": 1, "racks_per_pdu": 1, "pdus_per_feed": 1, "feeds": 1}},
     "facility.topology", "does not cover the 64 GPUs"),
    ({"failures": {"gpu": {"mtbf_s": 0, "mttr_s": "1h"}}}, "facility.failures.gpu.mtbf_s", "must be a finite number ≥"),
    ({"failures": {"node": {"mtbf_s": "5h", "mttr_s": "1h"}}}, "facility.failures.node", "need facility.topology"),
    ({"topology": {}, "failures": {"scheduled": [{"element": "pdu9", "start_s": 0, "duration_s": 10}]}},
     "facility.failures.scheduled.0.element", "an element of the power tree"),
    ({"safety": True}, "facility.safety", "add a topology"),
])
def test_bad_facility_values_are_errors_naming_the_field(facility, field, message):
    with pytest.raises(ScenarioError) as exc:
        scenario(cluster={"gpus": 64}, facility=facility)
    fields = [f for f, _, _ in exc.value.problems]
    assert field in fields, fields
    assert message in str(exc.value)


def test_a_dumped_scenario_validates_again_with_and_without_a_topology():
    from dcsim.config import parse_scenario, scenario_to_dict

    for facility in ({}, {"topology": {"limits": {"rack_w": 20000}}}):
        sc = scenario(cluster={"gpus": 64}, facility=facility)
        again = parse_scenario(scenario_to_dict(sc))
        assert again.facility == sc.facility
