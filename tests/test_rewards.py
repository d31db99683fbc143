"""The engine's per-agent rewards: hand-worked intervals, and conservation against the run's own tables."""
from __future__ import annotations

import numpy as np
import pytest

from dcsim.learning import REWARD_COMPONENTS, episode_reward, episode_totals
from dcsim.policy import Bids, Policy
from dcsim.runner import run_scenario
from conftest import constant_supply, jobs_table, scenario, simulate


class Recorder(Policy):
    """Bids full power (or nothing, for odd GPUs when ``pause_odd``) and records every feedback it gets."""

    name = "recorder"
    wants_feedback = True

    def __init__(self, pause_odd: bool = False):
        super().__init__()
        self.pause_odd = pause_odd
        self.calls: list[tuple[float, np.ndarray, object]] = []

    def bid(self, obs):
        self.calls.append((obs.market.time_s, obs.gpu_ids.copy(), obs.feedback))
        bids = Bids.full_power(obs)
        if self.pause_odd:
            bids.request_w[obs.gpu_ids % 2 == 1] = 0.0
        return bids

    def end_episode(self, obs):
        self.calls.append((obs.market.time_s, obs.gpu_ids.copy(), obs.feedback))


def test_one_job_hand_worked():
    # One H100 (idle 78.8 W, full power 700 W) runs one 100 s job worth 5 tokens from t = 10 s.
    # No renewable power: the posted price is p0·e^κ = 1·e^2 tokens/kWh all run.
    sc = scenario(horizon_s=900, market={"interval_s": 300, "initial_tokens": 100.0})
    jobs = jobs_table([{"arrival_s": 10.0, "gpus": 1, "work_gpu_s": 100.0, "value_tokens": 5.0}])
    pol = Recorder()
    res = simulate(sc, jobs, pol, constant_supply(renewable_w=0.0))
    times = [t for t, _, _ in pol.calls]
    assert times == [0.0, 10.0, 300.0, 600.0, 900.0]  # rounds, the job's spot bid, the horizon
    fbs = [fb for _, _, fb in pol.calls]
    assert fbs[0].first.all() and not fbs[1].first.any()
    np.testing.assert_allclose([fb.dt_s[0] for fb in fbs], [0.0, 10.0, 290.0, 300.0, 300.0])
    spec = sc.cluster.power_spec()
    idle, span_w = spec["idle_w"], spec["tdp_w"] - spec["idle_w"]
    price = np.exp(2.0)
    spent = price * span_w * 100.0 / 3.6e6
    comps = fbs[2].components[0]
    assert comps[REWARD_COMPONENTS.index("value_tokens")] == pytest.approx(5.0)
    assert comps[REWARD_COMPONENTS.index("spent_tokens")] == pytest.approx(spent, rel=1e-9)
    assert comps[REWARD_COMPONENTS.index("latency_s")] == pytest.approx(100.0)
    # energy over 10 s → 300 s: 100 s at idle + span, 190 s at idle
    assert comps[REWARD_COMPONENTS.index("energy_kwh")] == pytest.approx(((idle + span_w) * 100 + idle * 190) / 3.6e6)
    assert fbs[2].reward[0] == pytest.approx(5.0 - spent)
    # nothing happens after the job: only idle energy, which costs nothing under the default weights
    assert fbs[3].reward[0] == 0.0 and fbs[4].reward[0] == 0.0
    assert res.agent_returns[0] == pytest.approx(5.0 - spent)
    assert res.tokens["spent"] == pytest.approx(spent, rel=1e-9)


WEIGHTS = [
    {},
    {"latency_per_s": 0.001, "slo_per_miss": 2.0, "drop_per_job": 3.0, "energy_per_kwh": 0.5},
    {"latency_per_s": 0.001, "slo_per_miss": 2.0, "drop_per_job": 3.0, "team_fraction": 0.4},
    {"carbon_per_kg": 1.5, "energy_per_kwh": 0.2, "team_fraction": 1.0},
]


@pytest.mark.parametrize("reward", WEIGHTS)
@pytest.mark.parametrize("pause_odd", [False, True])
def test_rewards_sum_to_the_runs_totals(reward, pause_odd):
    """Conservation: summed over agents and decisions, the feedback equals the reward of the run's totals."""
    sc = scenario(horizon_s=4 * 3600, cluster={"gpus": 6},
                  workload={"arrivals": {"process": "poisson", "rate_per_s": 0.004},
                            "duration_s": {"distribution": "exponential", "mean": 900},
                            "gpus_per_job": {"values": [1, 2, 8], "weights": [0.6, 0.3, 0.1]},
                            "deadline_slack": 1.5, "max_queue": 4, "value_tokens_per_gpu_s": 0.002},
                  market={"interval_s": 600, "initial_tokens": 50.0, "endowment_tokens": 2.0},
                  supply={"grid": {"carbon_g_per_kwh": {"constant": 400.0}}},
                  reward=reward)
    res = run_scenario(sc, policy=Recorder(pause_odd=pause_odd)).result
    totals = episode_totals(res)
    assert totals["value_tokens"] > 0 and totals["spent_tokens"] > 0
    if reward.get("drop_per_job"):
        assert totals["dropped_jobs"] > 0 and totals["deadline_misses"] + totals["latency_s"] > 0
    assert res.agent_returns.sum() == pytest.approx(episode_reward(totals, sc.reward), rel=1e-9, abs=1e-9)


def test_non_learning_policies_get_no_feedback():
    sc = scenario()
    res = simulate(sc, jobs_table([(0.0, 1, 100.0)]))
    assert res.agent_returns is None


def _obs(price, n=3):
    from dcsim.policy import AgentObservation, GpuSpecView, MarketView

    market = MarketView(time_s=100.0, hour_utc=12.0, renewable_w=0.0, demand_w=1000.0, renewable_fraction=0.0,
                        price_tokens_per_kwh=price, base_price_tokens_per_kwh=1.0, grid_carbon_g_per_kwh=300.0,
                        grid_price_usd_per_mwh=50.0, battery_soc=0.5, queue_length=2, deferred_jobs=0,
                        next_round_s=250.0)
    gpu = GpuSpecView(idle_w=78.8, tdp_w=700.0, min_cap_w=200.0, full_power_w=700.0, gamma=2.5, utilisation=1.0)
    return AgentObservation(np.arange(n), np.full(n, 3), np.array([True, True, False]), np.array([3600.0, 0.0, 0.0]),
                            np.array([7200.0, np.inf, np.inf]), np.ones(n), np.array([3.6, 1.0, 0.0]),
                            np.array([1, 2, 0]), np.array([5.0, 0.0, 1e9]), market, gpu)


@pytest.mark.parametrize("price", [0.0, 1.0, 7.39, np.inf])
def test_features_are_finite_and_hand_checked(price):
    from dcsim.learning import FEATURES, observation_features

    x = observation_features(_obs(price), n_gpus=3, interval_s=300.0)
    assert x.shape == (3, len(FEATURES)) and np.isfinite(x).all()
    col = {name: x[:, i] for i, name in enumerate(FEATURES)}
    np.testing.assert_allclose(col["has_job"], [1, 1, 0])
    np.testing.assert_allclose(col["slack_h"], [0.5, 2.0, 2.0])  # 2 h / 4; no deadline → 2
    np.testing.assert_allclose(col["remaining_h"], [0.25, 0.0, 0.0])
    np.testing.assert_allclose(col["round_left_frac"], 0.5)
    if price == 1.0:
        # one GPU-hour of work worth 3.6 tokens against 0.6212 kWh at 1 token/kWh: ln(3.6/0.6212)/3
        assert col["value_over_cost"][0] == pytest.approx(np.log(3.6 / 0.6212) / 3, rel=1e-6)
        assert col["price_log_ratio"][0] == pytest.approx(0.0)


def test_bid_actions_map_to_hand_worked_bids():
    from dcsim.learning import BidAction, bids_from_actions

    obs = _obs(2.0)
    actions = np.array([BidAction.FULL, BidAction.FULL_IF_CHEAP, BidAction.PAUSE])
    b = bids_from_actions(actions, obs, cheap_multiple=1.1)
    np.testing.assert_allclose(b.request_w, [700.0, 700.0, 78.8])
    np.testing.assert_allclose(b.max_price_tokens_per_kwh, [np.inf, 1.1, np.inf])
    b = bids_from_actions(np.array([BidAction.HALF, BidAction.MIN_CAP, BidAction.HALF]), obs)
    np.testing.assert_allclose(b.request_w, [78.8 + 0.5 * 621.2, 200.0, 78.8 + 0.5 * 621.2])


def test_a_job_paused_past_its_deadline_is_charged_latency_and_a_miss():
    # One job (arrives at 10 s, deadline 500 s) whose GPU asks for no power: it never finishes. Its GPU accrues its
    # latency while it sits there (own), and at the horizon the job counts as a deadline miss.
    sc = scenario(horizon_s=900, market={"interval_s": 300}, reward={"latency_per_s": 0.01, "slo_per_miss": 5.0})
    jobs = jobs_table([{"arrival_s": 10.0, "gpus": 1, "work_gpu_s": 100.0, "value_tokens": 5.0, "deadline_s": 500.0}])
    class PauseAll(Recorder):
        def bid(self, obs):
            super().bid(obs)
            return Bids(np.zeros(len(obs)), np.full(len(obs), np.inf))

    pol = PauseAll()
    res = simulate(sc, jobs, pol, constant_supply())
    comps = np.array([fb.components[0] for _, _, fb in pol.calls])
    lat = comps[:, REWARD_COMPONENTS.index("latency_s")]
    np.testing.assert_allclose(lat, [0.0, 0.0, 290.0, 300.0, 300.0])  # from its start at 10 s, continuously
    np.testing.assert_allclose(comps[:, REWARD_COMPONENTS.index("deadline_misses")], [0, 0, 0, 0, 1])
    assert res.agent_returns[0] == pytest.approx(-0.01 * 890.0 - 5.0)
    assert bool(res.jobs["deadline_missed"].iloc[0])
