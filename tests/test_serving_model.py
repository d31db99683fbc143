"""The serving queue: a hand-worked run, the accounting identities (every request accounted for, energy and cost
books), determinism, the policy hook's checks and the rule baselines."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcsim.config import parse_scenario
from dcsim.errors import PolicyError
from dcsim.policy import Policy, ServingAdmission, ServingDecision
from dcsim.runner import run_scenario
from policies.serving import DenyOverSlo, FullKV, PriceAware, QualityFloor

CONFIGS = "name,times,energies,scores\nfull,1,1,1\nhalf,0.5,0.4,0.8\n"


class Scripted(Policy):
    """Admission and configuration given per request id."""

    name = "scripted"

    def __init__(self, admission, config):
        super().__init__()
        self.a, self.k = admission, config

    def serve(self, obs):
        ids = obs.request_ids
        return ServingDecision(np.array([self.a[i] for i in ids], dtype=np.int8),
                               np.array([self.k[i] for i in ids], dtype=np.int64))


def test_hand_worked_profit(tmp_path):
    # One GPU, one request at a time: prefill 1000 tokens/s, decode 10 tokens/s, 400 W busy, 100 W idle.
    trace = tmp_path / "azure.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     "2023-01-01 00:00:00,1000,100\n"   # r0: 1 s prefill + 10 s decode
                     "2023-01-01 00:00:05,2000,50\n"    # r1: 2 + 5 s
                     "2023-01-01 00:00:06,0,200\n"      # r2: arrives to a full queue
                     "2023-01-01 00:00:20,500,10\n")    # r3: denied
    configs = tmp_path / "configs.csv"
    configs.write_text(CONFIGS)
    price = tmp_path / "price.csv"
    price.write_text("time,price_usd_per_mwh\n2023-01-01T00:00:00Z,100\n2023-01-01T00:01:00Z,200\n")
    sc = parse_scenario({
        "name": "hand", "start": "2023-01-01T00:00:00Z", "horizon_s": 120,
        "cluster": {"gpus": 1, "power": {"idle_w": 100.0}},
        "workload": {"llm_serving": {
            "arrivals": {"source": "azure_trace", "path": str(trace)}, "max_batch": 1, "max_queue": 1,
            "batching": {"prefill_tokens_per_s": 1000, "decode_tokens_per_s": 10, "batch_sizes": [1],
                         "relative_throughput": [1.0], "power_w": [400.0]},
            "configurations": str(configs),
            "revenue": {"usd_per_prompt_token": 1e-6, "usd_per_output_token": 1e-4, "scale_by_quality": True},
            "slo": {"ttft_s": 5, "e2e_s": 12},
            "price_usd_per_mwh": {"path": str(price)}}},
    })
    serve, deny = ServingAdmission.SERVE, ServingAdmission.DENY
    run = run_scenario(sc, Scripted([serve, serve, serve, deny], [0, 1, 0, 0]))
    r = run.result.requests
    s = run.summary
    assert r["status"].astype(str).tolist() == ["served", "served", "dropped", "denied"]
    assert r["drop_reason"].tolist()[2] == "queue_full"
    # r0: 0 → 11 s, first token at 1 s. r1 (half: times 0.5): waits 5 → 11, runs 3.5 s to 14.5, first token at 12.
    assert r["start_s"].tolist()[:2] == [0.0, 11.0]
    assert r["finish_s"].tolist()[:2] == pytest.approx([11.0, 14.5])
    assert r["ttft_s"].tolist()[:2] == pytest.approx([1.0, 12.0 - 5.0])
    assert s["slo_attainment"]["ttft"] == 0.5 and s["slo_attainment"]["e2e"] == 1.0  # e2e 11 and 9.5 s
    # dynamic energy: 300 W × 11 s; r1 draws 300 W × 0.4/0.5 for 3.5 s = 0.4 × (300 W × 7 s)
    e0, e1 = 300 * 11, 0.4 * 300 * 7
    assert r["energy_j"].tolist()[:2] == pytest.approx([e0, e1])
    first_minute_j = 100 * 60 + e0 + e1  # all the work is done in the first price step
    cost = first_minute_j / 3.6e9 * 100 + 100 * 60 / 3.6e9 * 200
    revenue = (1000e-6 + 100e-4) * 1.0 + (2000e-6 + 50e-4) * 0.8
    assert s["energy_cost_usd"] == pytest.approx(cost, rel=1e-12)
    assert s["revenue_usd"] == pytest.approx(revenue, rel=1e-12)
    assert s["profit_usd"] == pytest.approx(revenue - cost, rel=1e-12)
    assert s["success_rate"] == 0.5 and s["denial_rate"] == 0.25 and s["mean_quality"] == pytest.approx(0.9)
    assert run.result.steps["price_usd_per_mwh"].tolist() == [100.0, 200.0]


def _random_scenario(tmp_path, seed, rate, gpus, max_batch, max_queue, max_wait, horizon):
    configs = tmp_path / "configs.csv"
    configs.write_text(CONFIGS)
    price = tmp_path / "price.csv"
    price.write_text("time,price_usd_per_mwh\n" + "".join(
        f"2023-01-01T00:{m:02d}:00Z,{(37 * m) % 90 - 10}\n" for m in range(60)))
    return parse_scenario({
        "name": "prop", "start": "2023-01-01T00:00:00Z", "horizon_s": horizon, "seed": seed,
        "cluster": {"gpus": gpus},
        "workload": {"llm_serving": {
            "arrivals": {"source": "poisson", "rate_per_s": rate, "prompt_tokens": 300, "mean_output_tokens": 40},
            "max_batch": max_batch, "max_queue": max_queue, "max_wait_s": max_wait,
            "configurations": str(configs), "price_usd_per_mwh": {"path": str(price)}}},
        "supply": {"fill": "hold"},
    })


class RandomServe(Policy):
    """Denies a third of the requests and picks configurations at random (policy stream)."""

    name = "random_serve"

    def serve(self, obs):
        m = len(obs)
        deny = self.rng.random(m) < 1 / 3
        return ServingDecision(np.where(deny, ServingAdmission.DENY, ServingAdmission.SERVE).astype(np.int8),
                               self.rng.integers(0, obs.config_quality.size, size=m))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), rate=st.floats(0.05, 3.0), gpus=st.integers(1, 4),
       max_batch=st.integers(1, 8), max_queue=st.one_of(st.none(), st.integers(0, 20)),
       max_wait=st.one_of(st.none(), st.floats(1.0, 60.0)), horizon=st.floats(30.0, 400.0))
def test_every_request_accounted_for_and_books_balance(tmp_path, seed, rate, gpus, max_batch, max_queue, max_wait,
                                                       horizon):
    sc = _random_scenario(tmp_path, seed, rate, gpus, max_batch, max_queue, max_wait, horizon)
    run = run_scenario(sc, RandomServe())
    r, steps, s = run.result.requests, run.result.steps, run.summary
    q = s["requests"]
    assert q["served"] + q["denied"] + q["dropped"] + q["pending"] == q["arrived"] == len(r)
    status = r["status"].astype(str)
    assert not (status == "future").any()
    # energy: the meter's books equal idle power of every GPU over the horizon plus each request's share
    idle_w = sc.cluster.power_spec()["idle_w"]
    started = status.isin(["served", "in_service"])
    assert steps["energy_j"].sum() == pytest.approx(gpus * idle_w * horizon + r.loc[started, "energy_j"].sum(),
                                                    rel=1e-9)
    assert (r.loc[~started, "energy_j"] == 0).all()
    # cost: energy of each price step times its price
    assert s["energy_cost_usd"] == pytest.approx(
        float((steps["energy_j"] / 3.6e9 * steps["price_usd_per_mwh"]).sum()), rel=1e-9, abs=1e-15)
    assert steps["start_s"].iloc[0] == 0 and steps["end_s"].iloc[-1] == horizon
    # times: causal, within the horizon, waits bounded by max_wait
    served = r[status == "served"]
    assert (served["start_s"] >= served["arrival_s"]).all() and (served["finish_s"] <= horizon).all()
    assert (served["first_token_s"] >= served["start_s"] - 1e-9).all()
    assert (served["first_token_s"] <= served["finish_s"] + 1e-9).all()
    if max_wait is not None:
        assert (r["wait_s"].dropna() <= max_wait + 1e-9).all()
        late = r[(status == "queued")]
        assert (horizon - late["arrival_s"] <= max_wait + 1e-9).all()
    if max_queue is not None:
        assert (status == "queued").sum() <= max_queue
    assert s["revenue_usd"] == pytest.approx(float(served["revenue_usd"].sum()))
    assert q["denied"] == int(steps["denied"].sum())


def test_batch_never_exceeds_max_batch(tmp_path):
    sc = _random_scenario(tmp_path, 1, 4.0, 2, 3, None, None, 300.0)
    r = run_scenario(sc, FullKV()).result.requests
    r = r[r["start_s"].notna()]
    end = r["finish_s"].fillna(np.inf).to_numpy()
    for g in (0, 1):
        on = r[r["gpu"] == g]
        times = np.sort(on["start_s"].to_numpy())
        active = [int(((on["start_s"] <= t) & (end[on.index] > t)).sum()) for t in times]
        assert max(active) <= 3


def test_same_seed_same_run(tmp_path):
    sc = _random_scenario(tmp_path, 7, 1.0, 2, 4, 5, 30.0, 200.0)
    a = run_scenario(sc, RandomServe()).result.requests
    b = run_scenario(sc, RandomServe()).result.requests
    assert a.equals(b)


class BadShape(Policy):
    name = "bad_shape"

    def serve(self, obs):
        return ServingDecision(np.zeros(len(obs) + 1, dtype=np.int8), np.zeros(len(obs), dtype=np.int64))


class BadConfig(Policy):
    name = "bad_config"

    def serve(self, obs):
        return ServingDecision(np.zeros(len(obs), dtype=np.int8), np.full(len(obs), 5, dtype=np.int64))


@pytest.mark.parametrize("policy, what", [(BadShape(), "shape"), (BadConfig(), "rows 0..1")])
def test_bad_policy_output_is_refused(tmp_path, policy, what):
    sc = _random_scenario(tmp_path, 0, 1.0, 1, 1, None, None, 60.0)
    with pytest.raises(PolicyError, match=what):
        run_scenario(sc, policy)


# ------------------------------------------------------------------------------------------- baselines
def _obs(price=50.0, queue=0, free=4, rate=1.0, m=3, ttft=10.0):
    from dcsim.policy import RequestObservation, ServingView

    view = ServingView(0.0, 0.0, price, queue, 0, free, 1, 4, rate, ttft, 60.0)
    # rows: full (q 1, e 1), snap_a (q .97, e .8), snap_b (q .9, e .6), snap_c (q .78, e .5)
    return RequestObservation(np.arange(m), np.ones(m), np.ones(m), np.ones(m), np.array([1, .85, .7, .6]),
                              np.array([1, .8, .6, .5]), np.array([1, .97, .9, .78]), view)


def test_full_kv_and_quality_floor_choose_by_the_table():
    assert FullKV().serve(_obs()).config.tolist() == [0, 0, 0]
    assert QualityFloor(min_quality=0.9).serve(_obs()).config.tolist() == [2, 2, 2]
    assert QualityFloor(min_quality=0.95).serve(_obs()).config.tolist() == [1, 1, 1]
    assert QualityFloor(min_quality=1.0).serve(_obs()).config.tolist() == [0, 0, 0]
    assert (QualityFloor().serve(_obs()).admission == ServingAdmission.SERVE).all()


def test_price_aware_compresses_as_the_price_rises():
    p = PriceAware(low_usd_per_mwh=0, high_usd_per_mwh=90)
    chosen = [int(p.serve(_obs(price=x)).config[0]) for x in (-20, 0, 30, 60, 90, 500)]
    assert chosen == [0, 0, 1, 2, 3, 3]
    floor = PriceAware(low_usd_per_mwh=0, high_usd_per_mwh=90, min_quality=0.9)
    assert int(floor.serve(_obs(price=500)).config[0]) == 2


def test_deny_over_slo_estimates_wait_from_the_queue():
    # 4 free slots, nobody queued: the first 4 arrivals start; the 5th waits 1 / rate s
    d = DenyOverSlo(fraction=1.0)
    out = d.serve(_obs(free=4, rate=0.2, m=6, ttft=10.0))  # 5th: 1/0.2 = 5 s ok; 6th: 2/0.2 = 10 s ok
    assert (out.admission == ServingAdmission.SERVE).all()
    out = d.serve(_obs(free=0, queue=1, rate=0.2, m=2, ttft=10.0))  # ahead 2 → 10 s ok, then 3 → 15 s deny
    assert out.admission.tolist() == [ServingAdmission.SERVE, ServingAdmission.DENY]
    out = d.serve(_obs(free=0, queue=0, rate=0.0, m=1))
    assert out.admission.tolist() == [ServingAdmission.DENY]


def test_bad_baseline_parameters_are_refused():
    for make in (lambda: QualityFloor(min_quality=2), lambda: PriceAware(low_usd_per_mwh=5, high_usd_per_mwh=5),
                 lambda: DenyOverSlo(fraction=0)):
        with pytest.raises(ValueError):
            make()


def test_deny_over_slo_keeps_waits_near_the_target(tmp_path):
    sc = _random_scenario(tmp_path, 3, 6.0, 1, 2, None, None, 400.0)
    base = run_scenario(sc, FullKV()).summary
    deny = run_scenario(sc, DenyOverSlo()).summary
    assert deny["denial_rate"] > 0 and base["denial_rate"] == 0
    assert deny["slo_attainment"]["ttft"] > base["slo_attainment"]["ttft"]
    assert math.isclose(deny["success_rate"] + deny["denial_rate"] + deny["drop_rate"]
                        + deny["requests"]["pending"] / deny["requests"]["arrived"], 1.0)


def test_action_timeline_shares_per_price_step(tmp_path):
    from dcsim.serving.plots import action_timeline, plot_serving

    sc = _random_scenario(tmp_path, 2, 2.0, 2, 4, None, None, 240.0)
    result = run_scenario(sc, RandomServe()).result
    tl = action_timeline(result.requests, result.steps, [c.name for c in result.configs])
    assert len(tl) == len(result.steps) == 4  # minute price steps over 4 minutes
    shares = tl[["full", "half", "denied"]].sum(axis=1)
    assert np.allclose(shares[tl["full"].notna()], 1.0)
    r = result.requests
    first = r[r["arrival_s"] < 60]
    assert tl["denied"].iloc[0] == pytest.approx((first["status"].astype(str) == "denied").mean())
    assert plot_serving(result, tmp_path / "plots")[0].stat().st_size > 0
