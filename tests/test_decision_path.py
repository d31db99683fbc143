"""The decision path's fast forms give exactly what the whole-array forms give, and still reject bad answers."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dcsim.config import parse_scenario
from dcsim.engine import Simulation
from dcsim.errors import PolicyError
from dcsim.policy import Bids, IdleAction, check_actions, check_bids, load_policy
from dcsim.seeding import Streams
from dcsim.supply import build_supply
from dcsim.workload import build_jobs


def _warmed(policy: str, gpus: int = 48, warm_s: float = 5_400.0) -> Simulation:
    """A small busy world (deadlines, multi-GPU jobs, solar) run for ``warm_s`` so GPUs hold jobs part-done."""
    sc = parse_scenario({
        "name": "decision-path", "start": "2023-06-21T07:00:00Z", "horizon_s": 86_400.0, "seed": 7,
        "cluster": {"gpus": gpus, "gpu_model": "H100"},
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": gpus / 900.0},
                     "duration_s": {"distribution": "exponential", "mean": 1_200.0},
                     "gpus_per_job": {"values": [1, 2, 4], "weights": [0.6, 0.3, 0.1]},
                     "deadline_slack": 3.0, "deferrable_fraction": 0.5},
        "supply": {"solar": {"capacity_w": 300.0 * gpus, "latitude": 37.36, "longitude": -121.93}},
        "market": {"interval_s": 300, "initial_tokens": 50.0},
        "policy": {"name": policy},
    })
    streams = Streams(sc.seed)
    sim = Simulation(sc, load_policy(policy), build_jobs(sc, streams), build_supply(sc), streams)
    for process in (sim._supply_changes(), sim._market(), sim._arrivals()):
        sim.env.process(process)
    sim.env.run(until=warm_s)
    return sim


def _assert_same_obs(a, b) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            assert np.array_equal(x, y), f.name
        else:
            assert x == y, f.name


def test_few_agent_observation_equals_the_whole_array_one():
    sim = _warmed("truthful")
    dec = sim.decisions
    busy = np.flatnonzero(sim.cluster.assigned >= 0)
    assert busy.size >= 8 and busy.size < sim.n_gpus  # both kinds of agent below
    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 5, 16):
        for _ in range(5):
            idx = np.sort(rng.choice(sim.n_gpus, size=n, replace=False)).astype(np.int64)
            _assert_same_obs(dec.agent_obs(idx), dec._agent_obs_arrays(idx))
    one = dec.agent_obs(busy[:1].astype(np.int64))
    j = int(sim.cluster.assigned[busy[0]])
    # by hand: remaining work now and slack from the job's own buffers
    rem = max(0.0, sim.jobs.remaining_s[j] - sim.jobs.rate[j] * (sim.env.now - sim.jobs.last_s[j]))
    assert one.has_job[0] and one.job_remaining_s[0] == rem > 0
    assert one.job_slack_s[0] == sim.jobs.deadline_s[j] - sim.env.now - rem
    assert one.job_gpus[0] == sim.jobs.job_gpus_n[j] and one.wallet_tokens[0] == sim.market.wallet[busy[0]]


def test_few_agent_observation_with_feedback_equals_the_whole_array_one():
    sim_a, sim_b = _warmed("qlearning"), _warmed("qlearning")
    idx = np.array([1, 4, 9], dtype=np.int64)
    a, b = sim_a.decisions.agent_obs(idx), sim_b.decisions._agent_obs_arrays(idx)
    for name in ("reward", "dt_s", "first", "components"):
        assert np.array_equal(getattr(a.feedback, name), getattr(b.feedback, name))
    _assert_same_obs(dataclasses.replace(a, feedback=None), dataclasses.replace(b, feedback=None))


def test_truthful_prices_a_few_agents_as_it_prices_many():
    sim = _warmed("truthful")
    everyone = sim.decisions.agent_obs(np.arange(sim.n_gpus, dtype=np.int64))
    many = sim.policy.bid(everyone)
    for g in range(sim.n_gpus):
        few = sim.policy.bid(sim.decisions.agent_obs(np.array([g], dtype=np.int64)))
        assert few.request_w[0] == many.request_w[g] and few.max_price_tokens_per_kwh[0] == many.max_price_tokens_per_kwh[g]
    assert np.any(many.max_price_tokens_per_kwh > 0) and np.any(many.max_price_tokens_per_kwh == 0)


@pytest.mark.parametrize("n", [1, 3, 40])
def test_bad_bids_are_rejected_in_either_form(n):
    good = np.full(n, 500.0)
    assert check_bids(Bids(good, good), n, "p").request_w is good
    for bad in (np.nan, -1.0):
        values = good.copy()
        values[n // 2] = bad
        with pytest.raises(PolicyError, match="NaN or negative"):
            check_bids(Bids(values, good), n, "p")
        with pytest.raises(PolicyError, match="NaN or negative"):
            check_bids(Bids(good, values), n, "p")
    as_ints = check_bids(Bids(np.full(n, 500), good), n, "p")
    assert as_ints.request_w.dtype == np.float64 and np.array_equal(as_ints.request_w, good)


@pytest.mark.parametrize("n", [1, 3, 40])
def test_bad_actions_are_rejected_in_either_form(n):
    ok = np.full(n, IdleAction.SLEEP, dtype=np.int8)
    assert np.array_equal(check_actions(ok, n, IdleAction, "p"), ok)
    for bad in (-1, len(IdleAction)):
        values = ok.astype(np.int64)
        values[n - 1] = bad
        with pytest.raises(PolicyError, match=f"returned {bad}; allowed"):
            check_actions(values, n, IdleAction, "p")
    with pytest.raises(PolicyError, match="float64 values"):
        check_actions(np.zeros(n), n, IdleAction, "p")
