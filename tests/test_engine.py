"""Hand-worked timelines and energies: each expected number is computed here from the model's equations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import constant_supply, jobs_table, scenario, simulate
from dcsim.gpu_models import GPU_MODELS
from dcsim.policy import Bids, Policy

H100 = GPU_MODELS["H100"]
IDLE, FULL = H100.idle_w, H100.full_power_w
SPAN = H100.tdp_w - H100.idle_w


def power_at(f: float) -> float:
    return IDLE + SPAN * f**H100.gamma


def test_single_job_energy_and_timeline():
    sc = scenario(horizon_s=3000)
    r = simulate(sc, jobs_table([(100.0, 1, 1000.0)]))
    job = r.jobs.iloc[0]
    assert job["status"] == "completed"
    assert job["start_s"] == 100.0 and job["finish_s"] == 1100.0 and job["wait_s"] == 0.0
    assert job["energy_j"] == pytest.approx(FULL * 1000.0, rel=1e-12)
    expected = IDLE * (3000.0 - 1000.0) + FULL * 1000.0
    assert r.energy["consumed_j"] == pytest.approx(expected, rel=1e-12)
    assert r.energy["grid_j"] == pytest.approx(expected, rel=1e-12)
    assert r.gpu_energy_j.sum() == pytest.approx(expected, rel=1e-12)


def test_idle_cluster_uses_exactly_idle_power():
    sc = scenario(horizon_s=7200, cluster={"gpus": 5})
    r = simulate(sc, jobs_table([]))
    assert r.energy["consumed_j"] == pytest.approx(5 * IDLE * 7200, rel=1e-12)
    np.testing.assert_allclose(r.gpu_energy_j, IDLE * 7200, rtol=1e-12)


def test_wake_up_delay_is_real():
    tr = {"wake_s": 30, "wake_j": 3000, "sleep_s": 10, "sleep_j": 500}
    sc = scenario(horizon_s=1000, cluster={"gpus": 1, "initial_state": "sleep", "transitions": tr})
    r = simulate(sc, jobs_table([(100.0, 1, 500.0)]))
    job = r.jobs.iloc[0]
    assert job["start_s"] == 130.0 and job["wait_s"] == 30.0 and job["finish_s"] == 630.0
    expected = H100.sleep_w * 100 + 3000 + FULL * 500 + IDLE * (1000 - 630)
    assert r.energy["consumed_j"] == pytest.approx(expected, rel=1e-12)


def test_race_to_idle_sleeps_and_wakes_on_the_exact_timeline():
    tr = {"wake_s": 30, "wake_j": 3000, "sleep_s": 10, "sleep_j": 500}
    sc = scenario(horizon_s=1000, cluster={"gpus": 1, "transitions": tr}, policy={"name": "race_to_idle"})
    r = simulate(sc, jobs_table([(0.0, 1, 100.0), (200.0, 1, 100.0)]))
    # The round at t = 0 (before the arrival at t = 0) finds the GPU idle with nothing queued: it starts to
    # sleep, so the first job waits for sleep entry (0-10) and wake-up (10-40).
    assert list(r.jobs["start_s"]) == [40.0, 230.0]
    assert list(r.jobs["finish_s"]) == [140.0, 330.0]
    # enter sleep 0-10, wake 10-40, run 40-140, enter sleep 140-150, sleep 150-200, wake 200-230,
    # run 230-330, enter sleep 330-340, sleep to 1000
    expected = 500 + 3000 + FULL * 100 + 500 + H100.sleep_w * 50 + 3000 + FULL * 100 + 500 + H100.sleep_w * 660
    assert r.energy["consumed_j"] == pytest.approx(expected, rel=1e-12)


A100 = GPU_MODELS["A100"]


def a100_power_at(f: float) -> float:
    return A100.idle_w + (A100.tdp_w - A100.idle_w) * f**A100.gamma


class ClockAfter(Policy):
    """Bids full power until ``t_switch``, then the A100 cap that gives clock fraction ``f``."""

    name = "clock_after"

    def __init__(self, t_switch: float = 300.0, f: float = 0.5):
        super().__init__()
        self.t_switch, self.f = t_switch, f

    def bid(self, obs):
        f = 1.0 if obs.market.time_s < self.t_switch else self.f
        return Bids(np.full(len(obs), a100_power_at(f)), np.full(len(obs), np.inf))


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_cap_that_halves_the_clock_stretches_remaining_time(beta):
    # An A100 can be capped to half clock (~82 W above idle, cap 142 W > its 100 W minimum);
    # an H100 cannot: half clock needs 188.6 W, under its 200 W minimum cap (see the pause test).
    sc = scenario(horizon_s=4000, cluster={"gpu_model": "A100"}, market={"interval_s": 300})
    jobs = jobs_table([{"arrival_s": 10.0, "gpus": 1, "work_gpu_s": 1000.0, "clock_sensitivity": beta}])
    r = simulate(sc, jobs, policy=ClockAfter())
    # full clock 10-300 (290 s of work done), then rate 0.5**beta for the remaining 710 s of work
    rate = 0.5**beta
    finish = 300.0 + 710.0 / rate
    assert r.jobs.iloc[0]["finish_s"] == pytest.approx(finish, rel=1e-12)
    expected = A100.full_power_w * 290 + a100_power_at(0.5) * (finish - 300)
    assert r.jobs.iloc[0]["energy_j"] == pytest.approx(expected, rel=1e-9)
    if beta == 1.0:
        assert finish - 300.0 == pytest.approx(2 * 710.0)  # half the clock, twice the remaining time


def test_cap_below_min_cap_pauses_the_job():
    sc = scenario(horizon_s=2000, market={"interval_s": 300})
    r = simulate(sc, jobs_table([(10.0, 1, 1000.0)]), policy=HalfClockAfterH100())
    assert power_at(0.5) < H100.min_cap_w
    assert np.isnan(r.jobs.iloc[0]["finish_s"]) and r.jobs.iloc[0]["status"] == "running"
    assert (r.rounds.loc[r.rounds["time_s"] >= 300, "paused_gpus"] == 1).all()
    # paused at idle power from t = 300 on
    assert r.energy["consumed_j"] == pytest.approx(IDLE * 10 + FULL * 290 + IDLE * 1700, rel=1e-12)


class HalfClockAfterH100(Policy):
    name = "half_clock_h100"

    def bid(self, obs):
        f = 1.0 if obs.market.time_s < 300 else 0.5
        return Bids(np.full(len(obs), power_at(f)), np.full(len(obs), np.inf))


def test_job_that_cannot_fit_is_dropped_and_deadline_drops_are_reasoned():
    sc = scenario(horizon_s=3000, cluster={"gpus": 2})
    jobs = jobs_table([
        (0.0, 2, 2000.0),  # occupies both GPUs until t = 1000
        (5.0, 3, 10.0),  # needs 3 of 2 GPUs
        {"arrival_s": 10.0, "gpus": 1, "work_gpu_s": 50.0, "deadline_s": 500.0},  # waits past its deadline
        (20.0, 1, 50.0),
    ])
    r = simulate(sc, jobs)
    by = r.jobs.set_index("arrival_s")
    assert by.loc[5.0, "status"] == "dropped" and by.loc[5.0, "drop_reason"] == "too_large"
    assert by.loc[10.0, "status"] == "dropped" and by.loc[10.0, "drop_reason"] == "deadline_expired"
    assert bool(by.loc[10.0, "deadline_missed"])
    assert by.loc[10.0, "finish_s"] == 600.0  # noticed at the first dispatch after its deadline: the 600 s round
    assert by.loc[20.0, "start_s"] == 1000.0 and by.loc[20.0, "finish_s"] == 1050.0


def test_fcfs_head_of_line_blocking():
    sc = scenario(horizon_s=3000, cluster={"gpus": 2})
    jobs = jobs_table([(0.0, 1, 100.0), (1.0, 2, 100.0), (2.0, 1, 10.0)])
    r = simulate(sc, jobs)
    # The 2-GPU job waits for the first job; the small job behind it may not overtake (strict FCFS).
    assert list(r.jobs["start_s"]) == [0.0, 100.0, 150.0]


def test_import_cap_rations_power_pro_rata_and_slows_jobs():
    cap_w = 2 * IDLE + 500.0  # room for 250 W above idle per GPU
    sc = scenario(horizon_s=5000, cluster={"gpus": 2}, supply={"grid": {"import_cap_w": cap_w}})
    r = simulate(sc, jobs_table([(0.0, 1, 600.0), (0.0, 1, 600.0)]))
    # Round 0 ran before the arrivals at t = 0, so the jobs start on spot allocations, first come first
    # served: the first gets all 500 W of headroom, the second nothing (paused). From the round at 300 s
    # both get 250 W pro rata; after the first finishes, the round at 900 s gives the second all 500 W.
    f = lambda above_idle_w: (above_idle_w / SPAN) ** (1 / H100.gamma)  # noqa: E731
    finish_first = 300.0 + (600.0 - 300.0 * f(500)) / f(250)
    assert 600 < finish_first < 900
    finish_second = 900.0 + (600.0 - 600.0 * f(250)) / f(500)
    assert sorted(r.jobs["finish_s"]) == pytest.approx([finish_first, finish_second], rel=1e-12)
    rounds = r.rounds
    assert (rounds["allocated_w"] <= rounds["sellable_w"] + 1e-9).all()
    assert bool(rounds.loc[rounds["time_s"] == 300.0, "rationed"].iloc[0])
    assert r.counters["peak_overallocation_w"] <= 1e-9
    assert r.energy["unserved_j"] == pytest.approx(0.0, abs=1e-6)  # allocations kept the draw within the cap


def test_posted_price_follows_renewable_fraction():
    p0, kappa = 2.0, 1.5
    sc = scenario(horizon_s=1200, cluster={"gpus": 4},
                  market={"base_price_tokens_per_kwh": p0, "scarcity_kappa": kappa, "interval_s": 300})
    renewable = 100.0
    r = simulate(sc, jobs_table([]), supply=constant_supply(renewable_w=renewable))
    rho = renewable / (4 * IDLE)  # nobody bids: demand is the idle base load
    assert r.rounds["price_tokens_per_kwh"].tolist() == pytest.approx([p0 * math.exp(kappa * (1 - rho))] * 4)


def test_settlement_charges_energy_above_idle_at_the_round_price():
    sc = scenario(horizon_s=600, market={"interval_s": 300, "initial_tokens": 100.0, "endowment_tokens": 0.0,
                                         "endowment_interval_s": 300, "scarcity_kappa": 0.0,
                                         "base_price_tokens_per_kwh": 3.0})
    r = simulate(sc, jobs_table([(0.0, 1, 450.0)]))
    spent = 3.0 * (FULL - IDLE) * 450.0 / 3.6e6
    assert r.tokens["spent"] == pytest.approx(spent, rel=1e-12)
    assert r.tokens["held"] == pytest.approx(100.0 - spent, rel=1e-12)


def test_budget_limits_allocation_and_job_value_pays_back():
    # 0.01 tokens at 1 token/kWh buy 36 kJ: over a 300 s round, 120 W above idle — below the 200 W min cap
    # (121.2 W above idle), so the job pauses until its wallet is endowed.
    sc = scenario(horizon_s=900, market={"interval_s": 300, "initial_tokens": 0.01, "endowment_tokens": 10.0,
                                         "endowment_interval_s": 600, "scarcity_kappa": 0.0})
    r = simulate(sc, jobs_table([{"arrival_s": 0.0, "gpus": 1, "work_gpu_s": 100.0, "value_tokens": 5.0}]))
    job = r.jobs.iloc[0]
    assert job["start_s"] == 0.0
    assert job["finish_s"] == pytest.approx(700.0)  # paused 0-600, full clock from the endowed round at 600
    spent = (FULL - IDLE) * 100.0 / 3.6e6
    assert r.tokens["minted"] == pytest.approx(0.01 + 10.0 + 5.0)
    assert r.tokens["held"] == pytest.approx(0.01 + 10.0 + 5.0 - spent, rel=1e-12)


def test_battery_covers_the_night_then_grid():
    sc = scenario(horizon_s=3600, cluster={"gpus": 1}, supply={"battery": {
        "capacity_wh": 10.0, "max_charge_w": 100.0, "max_discharge_w": 50.0, "round_trip_efficiency": 0.81,
        "initial_soc": 1.0}})
    r = simulate(sc, jobs_table([]))
    # 36 kJ stored, delivered at 50 W with η_d = 0.9: empty after 36000·0.9/50 = 648 s
    assert r.energy["battery_out_j"] == pytest.approx(50.0 * 648.0, rel=1e-12)
    assert r.energy["grid_j"] == pytest.approx(IDLE * 3600 - 50.0 * 648.0, rel=1e-12)
    assert r.energy["battery_soc_end_j"] == 0.0
