"""The built-in rules' compiled forms (dcsim/kernel_rules.py): runs on the compiled path write the Python path's
outputs, bit for bit, decision log included.

The kernel makes a rule's per-event decisions (a starting job's bids, a deferrable arrival's admission, what
GPUs that ran out of work do) with the rule's own floating-point operations, and takes over the sleep and wake
transitions those decisions cause. Each world here is checked to exercise what it is there for on the Python path:
deferrals, sleeping GPUs, GPUs claimed while entering sleep (woken as soon as they settle), jobs starting on
waking GPUs, and both sides of each rule's price test.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcsim.cluster import Cluster
from dcsim.compiled import compiled_reason
from dcsim.dispatch import Dispatcher
from dcsim.kernel_rules import KernelRule, kernel_rule_of
from dcsim.policy import load_policy
from policies.rules import RaceToIdle, Truthful
from test_compiled import CASES, _assert_same, _run, _world, needs_numba

RULES = {
    "race_to_idle": {}, "truthful": {}, "truthful_sleeps": {"sleep_when_idle": True}, "price_threshold": {},
    "price_threshold_no_throttle": {"throttle_to_min_cap": False}, "renewable_follower": {},
    "deadline_slack": {}, "reference": {}, "reference_min": {"rule": "full_cheap_else_min"},
    "reference_pace": {"rule": "full_cheap_else_pace"}, "reference_floor_limit": {"rule": "floor_limit"},
    "reference_floor_value": {"rule": "floor_value"},
    "reference_custom": {"cheap": "FULL_IF_CHEAP", "dear": "HALF", "price_multiple": 1.5},
    "reference_pause": {"cheap": "MIN_CAP", "dear": "PAUSE", "price_multiple": 2.0},
}
# deferrable jobs with deadlines, gang jobs, a scarce market (prices on both sides of the rules' tests)
WORLDS = {
    "scarce": dict(gpus=16, rate=0.03, mean_s=900.0, solar_w=3000.0, import_cap_w=4000.0,
                   gpus_per_job={"values": [1, 2, 4], "weights": [0.7, 0.2, 0.1]},
                   workload={"deferrable_fraction": 0.5, "deadline_slack": 3.0, "clock_sensitivity": 0.7}),
    # bursts of short jobs on a few GPUs: GPUs claimed while entering sleep, jobs waiting for waking GPUs
    "bursty": dict(gpus=6, rate=0.05, mean_s=20.0, horizon_s=4 * 3600,
                   workload={"deferrable_fraction": 0.3, "deadline_slack": 2.0, "max_queue": 5}),
    "queues_and_drops": dict(CASES["queues_and_drops"], workload=dict(CASES["queues_and_drops"]["workload"],
                                                                      deferrable_fraction=0.4)),
    "cooling_vcg": dict(CASES["cooling"], mechanism="vcg", workload={"deferrable_fraction": 0.5}),
}


def _scenario(world: str, rule: str):
    name = "reference" if rule.startswith("reference") else rule.removesuffix("_sleeps").removesuffix("_no_throttle")
    sc = _world(**WORLDS[world])
    return sc.model_copy(update={"policy": sc.policy.model_copy(update={"name": name, "params": RULES[rule]})})


class _Counts:
    """What a Python-path run did, counted on its own objects."""

    def __init__(self, monkeypatch):
        self.deferred = self.claimed_entering_sleep = self.started_after_waking = 0
        defer, end, ready = Dispatcher.defer, Cluster.end_transition, Dispatcher.gpus_ready
        counts = self

        def counting_defer(jobs, held):
            counts.deferred += len(held)
            defer(jobs, held)

        def counting_end(cl, gpus):
            counts.claimed_entering_sleep += sum(cl.wake_after[g] for g in gpus)
            return end(cl, gpus)

        def counting_ready(jobs, gpus):
            counts.started_after_waking += len(gpus)
            ready(jobs, gpus)

        monkeypatch.setattr(Dispatcher, "defer", counting_defer)
        monkeypatch.setattr(Cluster, "end_transition", counting_end)
        monkeypatch.setattr(Dispatcher, "gpus_ready", counting_ready)


@needs_numba
@pytest.mark.parametrize("world", sorted(WORLDS))
@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_rules_compiled_form_writes_the_python_paths_outputs(world, rule, monkeypatch):
    sc = _scenario(world, rule)
    policy = load_policy(sc.policy.name, sc.policy.params)
    assert compiled_reason(sc, policy) is None
    compiled = _run(sc, True)
    counts = _Counts(monkeypatch)
    python = _run(sc, False)
    _assert_same(compiled, python)
    methods = set(python.decisions["method"])
    form, _ = kernel_rule_of(policy)
    assert methods == {m for m in ("bid", "admit", "on_idle") if form.decides(m)}  # every kind it decides, logged
    if form.admit and world == "scarce":
        assert counts.deferred > 0
    sleeps = form.on_idle == 2
    assert (python.timeseries["gpus_sleeping"].max() > 0) == sleeps
    if sleeps and world == "bursty":
        assert counts.claimed_entering_sleep > 0 and counts.started_after_waking > 0


@needs_numba
def test_the_bursty_world_prices_both_sides_of_the_rules_tests():
    """The bursty world's price tests (price_threshold's 2 tokens/kWh, reference's e·p0 and 1.5·p0) see prices on both sides."""
    rounds = _run(_scenario("bursty", "price_threshold"), False).rounds
    price, p0 = rounds["price_tokens_per_kwh"], 1.0
    assert (price > 2.0).any() and (price <= 1.5 * p0).any() and (price > np.e * p0).any()


def test_a_subclass_that_decides_differently_stays_in_python():
    class Sleepier(Truthful):
        def on_idle(self, obs):
            return super().on_idle(obs)

    class Plain(RaceToIdle):
        pass

    class Declared(Truthful):
        def bid(self, obs):
            return super().bid(obs)

        def kernel_rule(self):
            return KernelRule(bid=1, on_idle=1)

    sc = _world(horizon_s=600)
    assert "not the one its compiled form describes" in compiled_reason(sc, Sleepier())
    assert compiled_reason(sc, Plain()) is None  # inherits both the method and its compiled form
    assert compiled_reason(sc, Declared()) is None  # says what it does
    mismatched = type("Mismatched", (RaceToIdle,), {"kernel_rule": lambda self: KernelRule(bid=1, on_idle=2)})
    assert "which the policy does not" in compiled_reason(sc, mismatched())


def test_runs_the_compiled_rules_cannot_take():
    zero = _world(horizon_s=600, cluster={"gpus": 4, "gpu_model": "H100", "transitions": {"sleep_s": 0.0, "sleep_j": 0.0}})
    assert "takes no time" in compiled_reason(zero, load_policy("race_to_idle", {}))
    assert compiled_reason(zero, load_policy("truthful", {})) is None  # never sleeps
    fixed = _world(horizon_s=600, decision_timing={"fixed_step": 60})
    assert compiled_reason(fixed, load_policy("truthful", {})) == "decision_timing is fixed_step"


@needs_numba
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(rule=st.sampled_from(sorted(RULES)), gpus=st.integers(1, 12), rate=st.floats(0.002, 0.08),
       mean_s=st.floats(5.0, 2000.0), solar_w=st.floats(0.0, 15_000.0),
       mechanism=st.sampled_from(["posted_price", "uniform_price", "vcg", "kelly"]),
       deferrable=st.floats(0.0, 1.0), slack=st.one_of(st.none(), st.floats(1.05, 4.0)),
       beta=st.floats(0.0, 1.0), drop_expired=st.booleans(), seed=st.integers(0, 2**16))
def test_random_worlds_under_every_rule_give_the_same_outputs(rule, gpus, rate, mean_s, solar_w, mechanism,
                                                              deferrable, slack, beta, drop_expired, seed):
    name = "reference" if rule.startswith("reference") else rule.removesuffix("_sleeps").removesuffix("_no_throttle")
    sc = _world(gpus=gpus, horizon_s=3 * 3600, rate=rate, mean_s=mean_s, solar_w=solar_w, mechanism=mechanism,
                seed=seed, gpus_per_job={"values": [1, 2, 3], "weights": [0.7, 0.2, 0.1]},
                workload={"deferrable_fraction": deferrable, "deadline_slack": slack, "clock_sensitivity": beta,
                          "drop_expired": drop_expired})
    sc = sc.model_copy(update={"policy": sc.policy.model_copy(update={"name": name, "params": RULES[rule]})})
    _assert_same(_run(sc, True), _run(sc, False))


@pytest.mark.parametrize("n", [5, 999, 4000])
def test_the_decision_log_of_tuples_and_blocks_is_the_frame_of_its_rows(n):
    """decision_frame equals pandas' own frame of the same rows as tuples: int and float times, blocks between
    tuples, every method name."""
    import pandas as pd

    from dcsim.decisions import DECISION_COLUMNS, DecisionBlock, decision_frame

    rng = np.random.default_rng(n)
    names = np.array(["bid", "admit", "on_idle"], dtype=object)
    rows, flat = [(0, "bid", 24)], [(0, "bid", 24)]
    while len(flat) < n:
        if rng.random() < 0.5:
            row = (float(rng.random() * 1e4), str(rng.choice(names)), int(rng.integers(1, 9)))
            rows.append(row)
            flat.append(row)
        else:
            k = int(rng.integers(1, 300))
            block = DecisionBlock(np.sort(rng.random(k) * 1e4), names[rng.integers(0, 3, k)],
                                  rng.integers(1, 9, k).astype(np.int64))
            rows.append(block)
            flat.extend(block.rows())
    pd.testing.assert_frame_equal(decision_frame(rows), pd.DataFrame(flat, columns=DECISION_COLUMNS),
                                  check_exact=True)


@needs_numba
def test_the_kernels_method_codes_are_the_logs_names():
    from dcsim import compiled, kernel

    assert list(compiled._LOG_NAMES) == list(kernel.LOG_METHODS) == ["bid", "admit", "on_idle"]


@needs_numba
def test_tiny_chunks_and_growing_slots_under_a_rule_that_holds_and_sleeps():
    """4 GPUs and ~1,800 jobs in an hour in chunks of 37 rows, half deferrable, under renewable_follower: the held
    jobs and pending wakes (per slot) grow with the slots mid-run."""
    sc = _world(gpus=4, horizon_s=3600, rate=0.5, mean_s=400.0, solar_w=1500.0,
                workload={"deferrable_fraction": 0.5})
    sc = sc.model_copy(update={"policy": sc.policy.model_copy(update={"name": "renewable_follower"})})
    compiled = _run(sc, True, chunk_jobs=37)
    table = compiled.jobs_table()
    assert int(table["status"].isin(["queued", "deferred"]).sum()) > 2 * 4 + 1024
    assert (table["status"] == "deferred").any()
    _assert_same(compiled, _run(sc, False, chunk_jobs=37))
