"""Regression tests for bugs found in review, each with the case that exposed it."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import constant_supply, jobs_table, scenario, simulate
from dcsim.cli import _builtin
from dcsim.config import load_scenario
from dcsim.errors import PolicyError, ScenarioError
from dcsim.gpu_models import GPU_MODELS
from dcsim.policy import Bids, Policy, check_bids
from dcsim.runner import run_scenario

H100 = GPU_MODELS["H100"]
SPAN = H100.tdp_w - H100.idle_w


@pytest.mark.parametrize("mechanism", ["uniform_price", "vcg"])
def test_negative_grid_price_never_gives_negative_token_prices(mechanism):
    overrides = ["policy.name=truthful", f"market.mechanism={mechanism}", "horizon_s=2h",
                 "supply.grid.price_usd_per_mwh.constant=-20"]
    run = run_scenario(load_scenario(_builtin("quickstart.yaml"), overrides))
    assert (run.result.rounds["price_tokens_per_kwh"] >= 0).all()
    assert run.summary["tokens"]["spent"] >= 0 and run.summary["grid_cost_usd"] < 0  # the USD books keep the sign


def test_rounding_does_not_mark_a_round_rationed_with_an_unlimited_grid():
    run = run_scenario(load_scenario(_builtin("quickstart.yaml")))
    assert run.summary["market"]["rationed_rounds"] == 0


def test_infinite_demand_blocks_are_rejected():
    bids = Bids(np.zeros(1), np.zeros(1), np.array([[np.inf]]), np.array([[1.0]]))
    with pytest.raises(PolicyError, match="steps_w must be finite"):
        check_bids(bids, 1, "test")


class Recorder(Policy):
    name = "recorder"

    def __init__(self):
        super().__init__()
        self.seen = []

    def bid(self, obs):
        self.seen.append(obs)
        return Bids.full_power(obs)


def test_observation_tells_agents_how_many_gpus_share_the_job_value():
    sc = scenario(horizon_s=900, cluster={"gpus": 3})
    policy = Recorder()
    simulate(sc, jobs_table([{"arrival_s": 10.0, "gpus": 2, "work_gpu_s": 2000.0, "value_tokens": 6.0}]), policy=policy)
    at_start = [o for o in policy.seen if o.market.time_s == 10.0][0]
    assert at_start.job_gpus.tolist() == [2, 2] and at_start.job_value_tokens.tolist() == [6.0, 6.0]


def test_truthful_bid_uses_each_gpus_share_of_the_value():
    from policies.rules import Truthful

    sc = scenario(horizon_s=900, cluster={"gpus": 2})
    recorder, truthful = Recorder(), Truthful()
    simulate(sc, jobs_table([{"arrival_s": 10.0, "gpus": 2, "work_gpu_s": 2000.0, "value_tokens": 6.0}]),
             policy=recorder)
    obs = [o for o in recorder.seen if o.market.time_s == 10.0][0]
    price = truthful.bid(obs).max_price_tokens_per_kwh
    # each GPU: 3 tokens over 1000 s at 621.2 W above idle
    np.testing.assert_allclose(price, 3.0 / (1000.0 * SPAN / 3.6e6))


def test_jobs_before_a_jittered_first_round_respect_supply_and_see_the_first_round():
    cap = 2 * H100.idle_w + 300.0  # 300 W above idle for two GPUs
    sc = scenario(horizon_s=1800, cluster={"gpus": 2}, supply={"grid": {"import_cap_w": cap}},
                  market={"interval_s": 300, "round_jitter_s": 200})
    policy = Recorder()
    r = simulate(sc, jobs_table([(0.0, 1, 500.0), (0.0, 1, 500.0)]), policy=policy)
    first_round = float(r.rounds["time_s"].iloc[0])
    assert 0 < first_round < 200
    assert r.counters["peak_overallocation_w"] <= 1e-9
    start_obs = [o for o in policy.seen if o.market.time_s == 0.0]
    assert start_obs and all(o.market.next_round_s == first_round for o in start_obs)


class HalfPower(Policy):
    name = "half_power"

    def bid(self, obs):
        g = obs.gpu
        return Bids(np.full(len(obs), g.idle_w + (g.full_power_w - g.idle_w) / 2), np.full(len(obs), np.inf))


def test_fixed_step_round_zero_clears_the_policys_bids():
    sc = scenario(horizon_s=1800, cluster={"gpus": 1}, decision_timing={"fixed_step": 600},
                  market={"interval_s": 300})
    r = simulate(sc, jobs_table([(0.0, 1, 5000.0)]), policy=HalfPower())
    d = r.decisions
    assert d.iloc[0]["method"] == "bid" and d.iloc[0]["time_s"] == 0.0  # the tick decides before round 0
    running = r.rounds[r.rounds["bidders"] > 0]
    np.testing.assert_allclose(running["requested_w"], SPAN / 2)
    # the job arriving at t = 0 starts on the tick's standing bid: half the dynamic range from the start
    assert r.energy["consumed_j"] == pytest.approx((H100.idle_w + SPAN / 2) * 1800, rel=1e-12)


def test_grid_series_formats_are_checked_at_validation():
    with pytest.raises(ScenarioError, match="price format"):
        scenario(supply={"grid": {"carbon_g_per_kwh": {"constant": 100, "format": "ercot"}}})
    with pytest.raises(ScenarioError, match="carbon format"):
        scenario(supply={"grid": {"price_usd_per_mwh": {"constant": 50, "format": "moer"}}})


def test_vcg_sells_short_supply_to_price_blind_bidders_with_finite_wallets():
    # Three price-blind agents want 100 W each (10 quanta of 10 W) for an hour; 200 W is for sale at
    # 1 token/kWh. A 5-token wallet pays for its whole request at up to 5 / (10 quanta × 0.01 kWh) =
    # 50 tokens/kWh, far above the cost, so all 200 W must be sold (capping the value at one quantum's
    # worth and trimming left most of it unsold).
    from dcsim.market import BidBook, SupplyCurve
    from dcsim.mechanisms import Vcg

    book = BidBook.single_step(np.full(3, 100.0), np.full(3, np.inf))
    supply = SupplyCurve(np.array([200.0]), np.array([1.0]), ("grid",), 0.0, 3600.0)
    c = Vcg(10.0).clear(book, supply, np.full(3, 5.0))
    assert c.allocations_w.sum() == pytest.approx(200.0)
    assert np.all(c.debits_tokens <= 5.0)


def test_completions_ask_on_idle_only_about_the_gpus_they_freed():
    class Counting(Policy):
        name = "counting"

        def __init__(self):
            super().__init__()
            self.sizes = []

        def on_idle(self, obs):
            self.sizes.append((obs.market.time_s, len(obs)))
            return np.zeros(len(obs), dtype=np.int8)

    sc = scenario(horizon_s=1000, cluster={"gpus": 8}, market={"interval_s": 600})
    policy = Counting()
    simulate(sc, jobs_table([(10.0, 1, 100.0), (20.0, 2, 400.0)]), policy=policy)
    # rounds (t = 0, 600) ask about every idle GPU; the completions at 110 and 220 about the GPUs they freed
    assert policy.sizes == [(0.0, 8), (110.0, 1), (220.0, 2), (600.0, 8)]


def test_actions_must_be_integer_enum_values():
    from dcsim.policy import IdleAction, check_actions

    with pytest.raises(PolicyError, match="IdleAction"):
        check_actions(np.array([True, False]), 2, IdleAction, "test")
    with pytest.raises(PolicyError, match="IdleAction"):
        check_actions(np.array([1.0]), 1, IdleAction, "test")
    assert check_actions(np.array([IdleAction.SLEEP, IdleAction.STAY_IDLE]), 2, IdleAction, "test").tolist() == [1, 0]
