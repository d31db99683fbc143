"""The token market during serving runs: a hand-worked constrained case (the clock the allocation leaves, and the
throughput and energy it gives), the unconstrained market leaving the serving results as they were, the token
price of the uniform-price auction against the $/MWh price, and token conservation on random runs."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcsim.config import parse_scenario
from dcsim.outputs import write_run
from dcsim.runner import run_scenario
from tests.test_serving_model import RandomServe, _random_scenario


def _tiny(tmp_path, *, import_cap_w=None, market=None, horizon_s=95.0, requests=10):
    """One GPU serving ``requests`` requests that all arrive at t = 0, one at a time (batch 1), each 100 output
    tokens at 10 tokens/s (10 s alone); 100 W idle, 400 W busy (300 W above idle), DVFS exponent γ = 2."""
    trace = tmp_path / "azure.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     + "".join("2023-01-01 00:00:00,0,100\n" for _ in range(requests)))
    data = {
        "name": "tiny_market", "start": "2023-01-01T00:00:00Z", "horizon_s": horizon_s,
        "cluster": {"gpus": 1, "power": {"idle_w": 100.0, "min_cap_w": 150.0, "gamma": 2.0}},
        "workload": {"llm_serving": {
            "arrivals": {"source": "azure_trace", "path": str(trace)}, "max_batch": 1,
            "batching": {"prefill_tokens_per_s": 1000, "decode_tokens_per_s": 10, "batch_sizes": [1],
                         "relative_throughput": [1.0], "power_w": [400.0]},
            "revenue": {"usd_per_output_token": 1e-4},
            "price_usd_per_mwh": {"constant": 100.0}}},
        "market": market or {"mechanism": "posted_price", "base_price_tokens_per_kwh": 1.0, "scarcity_kappa": 0.0,
                             "interval_s": 50.0, "endowment_interval_s": 50.0, "endowment_tokens": 0.0,
                             "initial_tokens": 10.0},
    }
    if import_cap_w is not None:
        data["supply"] = {"grid": {"import_cap_w": import_cap_w}}
    return parse_scenario(data)


def test_unconstrained_market_leaves_the_hand_worked_run_as_it_was(tmp_path):
    run = run_scenario(_tiny(tmp_path))
    r, s = run.result.requests, run.summary
    assert r["finish_s"].tolist()[:9] == pytest.approx([10.0 * k for k in range(1, 10)])
    assert r["status"].astype(str).tolist() == ["served"] * 9 + ["in_service"]
    assert r["energy_j"].tolist()[:9] == pytest.approx([3000.0] * 9)  # 300 W × 10 s
    assert s["market"]["throttled_gpu_s"] == 0 and s["market"]["paused_gpu_s"] == 0
    rounds = run.result.rounds
    assert rounds["time_s"].tolist() == [0.0, 50.0] and not rounds["rationed"].any()
    # billed: 300 W above idle for 95 s at 1 token/kWh (posted price p0·e^0)
    assert s["energy_cost_tokens"] == pytest.approx(300 * 95 / 3.6e6, rel=1e-12)


def test_import_cap_below_demand_slows_the_clock_as_the_dvfs_law_predicts(tmp_path):
    # The cap leaves 175 − 100 W (idle base load) = 75 W above idle for the GPU's 300 W demand: the posted-price
    # round rations it to 75 W, so the clock is f = (75 / 300)^(1/γ) = 0.5: each request takes 20 s instead of
    # 10, and draws 75 W instead of 300, so uses 75 × 20 = 1500 J instead of 3000 (DVFS saves energy at γ = 2).
    run = run_scenario(_tiny(tmp_path, import_cap_w=175.0))
    r, s = run.result.requests, run.summary
    assert r["status"].astype(str).tolist() == ["served"] * 4 + ["in_service"] + ["queued"] * 5
    assert r["finish_s"].tolist()[:4] == pytest.approx([20.0, 40.0, 60.0, 80.0], rel=1e-12)
    assert r["energy_j"].tolist()[:4] == pytest.approx([1500.0] * 4, rel=1e-12)
    rounds = run.result.rounds
    assert rounds["rationed"].all() and rounds["allocated_w"].tolist() == pytest.approx([75.0, 75.0])
    assert s["market"]["throttled_gpu_s"] == pytest.approx(95.0) and s["market"]["paused_gpu_s"] == 0
    assert s["energy_cost_tokens"] == pytest.approx(75 * 95 / 3.6e6, rel=1e-12)
    # metered energy: idle 100 W plus 75 W for 95 s; USD at 100 $/MWh
    assert s["energy"]["consumed_j"] == pytest.approx(175 * 95, rel=1e-12)
    assert s["energy_cost_usd"] == pytest.approx(175 * 95 / 3.6e9 * 100, rel=1e-12)
    # throughput halves: 9 → 4 completions in 95 s, revenue with them (100 tokens × 1e-4 USD each)
    assert s["requests"]["served"] == 4 and s["revenue_usd"] == pytest.approx(4 * 100 * 1e-4)


def test_allocation_below_min_cap_pauses_the_gpu_until_a_round_grants_power(tmp_path):
    # 140 W cap: 40 W above idle, below min_cap 150 W − idle 100 W = 50 W: the GPU pauses from the round at t = 0
    run = run_scenario(_tiny(tmp_path, import_cap_w=140.0))
    r, s = run.result.requests, run.summary
    assert s["requests"]["served"] == 0 and s["market"]["paused_gpu_s"] == pytest.approx(95.0)
    assert r["status"].astype(str).tolist() == ["in_service"] + ["queued"] * 9
    assert s["energy"]["consumed_j"] == pytest.approx(100 * 95, rel=1e-12) and s["energy_cost_tokens"] == 0
    assert (run.result.rounds["paused_gpus"] == 1).all()


def test_an_empty_wallet_pauses_the_gpu_and_the_endowment_resumes_it(tmp_path):
    # Posted price 1 token/kWh over 50 s rounds: a wallet of w tokens buys w × 3.6e6 / 50 W. 5.5e-4 tokens buy
    # 39.6 W, below the 50 W the minimum cap needs: paused from t = 0. At t = 50 the endowment (1 token) buys far
    # more than the 300 W asked: the GPU resumes at full clock, so requests finish at 60, 70, 80, 90 s.
    market = {"mechanism": "posted_price", "base_price_tokens_per_kwh": 1.0, "scarcity_kappa": 0.0,
              "interval_s": 50.0, "endowment_interval_s": 50.0, "endowment_tokens": 1.0, "initial_tokens": 5.5e-4}
    run = run_scenario(_tiny(tmp_path, market=market))
    r, s = run.result.requests, run.summary
    assert run.result.rounds["allocated_w"].tolist() == pytest.approx([0.0, 300.0])
    assert r["finish_s"].tolist()[:4] == pytest.approx([60.0, 70.0, 80.0, 90.0])
    assert s["requests"]["served"] == 4 and s["market"]["paused_gpu_s"] == pytest.approx(50.0)
    assert s["energy_cost_tokens"] == pytest.approx(300 * 45 / 3.6e6, rel=1e-12)  # billed from t = 50 only


def test_uniform_price_token_price_is_the_usd_price_at_the_exchange_rate(tmp_path):
    # unlimited grid: the auction clears at the grid block's cost, 10 tokens/USD × 100 $/MWh / 1000 = 1 token/kWh
    market = {"mechanism": "uniform_price", "interval_s": 50.0, "endowment_interval_s": 50.0,
              "supply_curve": {"grid_tokens_per_usd": 10.0}}
    run = run_scenario(_tiny(tmp_path, market=market))
    assert run.result.rounds["price_tokens_per_kwh"].tolist() == pytest.approx([1.0, 1.0])
    s = run.summary
    # the tokens billed for energy above idle are its USD cost at the exchange rate
    assert s["energy_cost_tokens"] == pytest.approx(300 * 95 / 3.6e9 * 100 * 10, rel=1e-12)
    assert s["requests"]["served"] == 9


def test_revenue_is_minted_into_the_serving_gpu_wallet_and_tokens_are_conserved(tmp_path):
    run = run_scenario(_tiny(tmp_path))
    t, s = run.result.tokens, run.summary
    # initial 10 tokens + 9 served × 100 output tokens × 1e-4 USD × 10 tokens/USD
    assert t["minted"] == pytest.approx(10.0 + 9 * 100 * 1e-4 * 10, rel=1e-12)
    assert t["minted"] == pytest.approx(t["spent"] + t["held"] + t["burned"], rel=1e-12)
    ledger = run.result.ledger
    credited = ledger.loc[ledger["kind"] == "credit_job_value", "tokens"].sum()
    assert credited == pytest.approx(9 * 100 * 1e-4 * 10, rel=1e-12)
    assert s["tokens"]["held"] == pytest.approx(float(run.result.wallets.sum()))


def test_serving_run_directory_has_the_market_tables(tmp_path):
    run = run_scenario(_tiny(tmp_path, import_cap_w=175.0))
    written = {p.name for p in write_run(run, tmp_path / "out")}
    assert {"rounds.csv", "ledger.csv", "allocations.npz", "requests.csv", "summary.json"} <= written
    alloc = np.load(tmp_path / "out" / "allocations.npz")
    assert alloc["alloc_w"].shape == (2, 1) and alloc["alloc_w"][:, 0].tolist() == pytest.approx([75.0, 75.0])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), rate=st.floats(0.05, 3.0), gpus=st.integers(1, 4),
       max_batch=st.integers(1, 8), horizon=st.floats(30.0, 400.0),
       cap_w=st.one_of(st.none(), st.floats(0.0, 3000.0)),
       mechanism=st.sampled_from(["posted_price", "uniform_price", "pay_as_bid", "kelly", "vcg"]),
       initial=st.floats(0.0, 2.0), interval=st.sampled_from([20.0, 60.0]),
       max_queue=st.one_of(st.none(), st.integers(0, 20)), max_wait=st.one_of(st.none(), st.floats(1.0, 60.0)))
def test_tokens_conserved_and_allocations_within_supply(tmp_path, seed, rate, gpus, max_batch, horizon, cap_w,
                                                        mechanism, initial, interval, max_queue, max_wait):
    sc = _random_scenario(tmp_path, seed, rate, gpus, max_batch, max_queue, max_wait, horizon)
    sc = parse_scenario({**_dump(sc), "market": {"mechanism": mechanism, "initial_tokens": initial,
                                                  "interval_s": interval, "endowment_interval_s": 2 * interval},
                         "supply": {"fill": "hold", "grid": {"import_cap_w": cap_w}}})
    run = run_scenario(sc, RandomServe())
    t, q = run.result.tokens, run.summary["requests"]
    assert t["minted"] == pytest.approx(t["spent"] + t["held"] + t["burned"], rel=1e-9, abs=1e-12)
    assert (run.result.wallets >= 0).all()
    ledger = run.result.ledger
    sign = ledger["kind"].map(lambda k: 1.0 if k.startswith(("mint", "credit")) else -1.0)
    assert float((sign * ledger["tokens"]).sum()) == pytest.approx(t["held"], rel=1e-9, abs=1e-9)
    rounds = run.result.rounds
    assert (rounds["allocated_w"] <= rounds["sellable_w"] * (1 + 1e-9) + 1e-9).all()
    assert q["served"] + q["denied"] + q["dropped"] + q["pending"] == q["arrived"]
    r = run.result.requests
    if max_wait is not None:  # a request waits at most max_wait_s, paused GPUs or not
        assert (r["wait_s"].dropna() <= max_wait + 1e-9).all()
    in_batch = r[r["status"].astype(str) == "in_service"].groupby("gpu").size()
    assert (in_batch <= max_batch).all()
    e = run.summary["energy"]
    assert e["consumed_j"] == pytest.approx(e["idle_j"] + e["requests_j"], rel=1e-9)
    assert math.isfinite(run.summary["energy_cost_tokens"])


def _dump(sc):
    from dcsim.config import scenario_to_dict

    return scenario_to_dict(sc)
