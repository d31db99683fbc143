"""The few-agent decision path (issue 12): observations built from Python values, bids and idle actions checked and
priced as Python numbers, and the rules' Python-number forms give exactly what the numpy forms give, on random
inputs and on whole runs; bad answers are still rejected with the same errors."""
from __future__ import annotations

import copy
import dataclasses
import math
import pickle

import numpy as np
import pytest

import dcsim.decisions
import dcsim.learning
import policies.rules
from dcsim.config import parse_scenario
from dcsim.engine import Simulation
from dcsim.errors import PolicyError
from dcsim.learning import pace_power_w
from dcsim.policy import (
    AgentObservation,
    Bids,
    GpuSpecView,
    IdleAction,
    ROW_FIELDS,
    MarketView,
    check_actions,
    check_bids,
    few_actions,
    few_agent_observation,
    few_bid_values,
    load_policy,
)
from dcsim.runner import run_scenario
from dcsim.seeding import Streams
from dcsim.supply import build_supply
from dcsim.workload import build_jobs

RULES = ["truthful", "deadline_slack", "renewable_follower", "price_threshold", "race_to_idle", "reference"]
GPU = GpuSpecView(idle_w=70.0, tdp_w=700.0, min_cap_w=200.0, full_power_w=700.0, gamma=1.7, utilisation=1.0)
F64_BITS = np.uint64


def _scenario(policy: str, gpus: int = 24, horizon_s: float = 4 * 3600.0, **extra) -> dict:
    data = {
        "name": "fast-paths", "start": "2023-06-21T06:00:00Z", "horizon_s": horizon_s, "seed": 11,
        "cluster": {"gpus": gpus, "gpu_model": "H100"},
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": gpus / 1200.0},
                     "duration_s": {"distribution": "exponential", "mean": 1_500.0},
                     "gpus_per_job": {"values": [1, 2, 4], "weights": [0.6, 0.3, 0.1]},
                     "deadline_slack": 2.5, "deferrable_fraction": 0.4},
        "supply": {"solar": {"capacity_w": 300.0 * gpus, "latitude": 37.36, "longitude": -121.93}},
        "market": {"interval_s": 300, "initial_tokens": 20.0},
        "policy": {"name": policy},
    }
    data.update(extra)
    return data


def _warmed(policy: str, warm_s: float = 5_400.0) -> Simulation:
    sc = parse_scenario(_scenario(policy, horizon_s=86_400.0))
    streams = Streams(sc.seed)
    sim = Simulation(sc, load_policy(policy), build_jobs(sc, streams), build_supply(sc), streams)
    for process in (sim._supply_changes(), sim._market(), sim._arrivals()):
        sim.env.process(process)
    sim.env.run(until=warm_s)
    return sim


def _bits(a) -> np.ndarray:
    """Float64 values as their bit patterns (tells -0.0 from 0.0 and compares NaN payloads)."""
    return np.asarray(a, dtype=np.float64).view(F64_BITS)


def _same_obs(a: AgentObservation, b: AgentObservation) -> None:
    for f in dataclasses.fields(AgentObservation):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            if x.dtype.kind == "f":
                x, y = _bits(x), _bits(y)
            assert np.array_equal(x, y), f.name
        else:
            assert x == y, f.name


# ------------------------------------------------------------------------------------ the lazy observation
def test_a_few_agent_observation_reads_as_the_array_one():
    sim = _warmed("truthful")
    dec = sim.decisions
    rng = np.random.default_rng(5)
    fields = [f.name for f in dataclasses.fields(AgentObservation)]
    for n in (1, 2, 7, 16):
        for _ in range(5):
            ids = sorted(rng.choice(sim.n_gpus, size=n, replace=False).tolist())
            lazy, eager = dec._few_obs(ids), dec._agent_obs_arrays(np.array(ids, dtype=np.int64))
            assert len(lazy) == len(eager) == n
            # the Python values first (no array built yet), then every field as arrays
            for name in fields[:9]:
                assert lazy.as_list(name) == getattr(eager, name).tolist(), name
            assert lazy.rows("job_slack_s", "has_job", "job_gpus") == list(zip(
                eager.job_slack_s.tolist(), eager.has_job.tolist(), eager.job_gpus.tolist()))
            _same_obs(lazy, eager)
    assert tuple(f.name for f in dataclasses.fields(MarketView)) == dcsim.policy._MARKET_FIELDS
    assert tuple(f.name for f in dataclasses.fields(AgentObservation)) == dcsim.policy._AGENT_FIELDS


def test_a_kept_observation_keeps_its_decision_instant():
    """A policy that keeps an observation and reads it later sees the values of its decision instant, not the
    engine's state at the time of reading."""
    sim = _warmed("truthful")
    dec = sim.decisions
    busy = int(np.flatnonzero(sim.cluster.assigned >= 0)[0])
    lazy = dec._few_obs([busy])
    then = dec._agent_obs_arrays(np.array([busy], dtype=np.int64))
    sim.env.run(until=sim.env.now + 1_800.0)  # the world moves on: time, the job's progress, the market
    assert dec.market_view() != then.market
    _same_obs(lazy, then)
    # copies and pickles carry every field, built
    for other in (copy.copy(lazy), copy.deepcopy(lazy), pickle.loads(pickle.dumps(lazy)),
                  dataclasses.replace(lazy, feedback=None)):
        _same_obs(other, then)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lazy.nope  # noqa: B018
    with pytest.raises(dataclasses.FrozenInstanceError):
        lazy.state = None


def test_an_empty_few_agent_observation():
    market = tuple(range(13))
    obs = few_agent_observation([], [], market, GPU, None)
    assert len(obs) == 0 and obs.as_list("job_remaining_s") == [] and obs.rows("state", "has_job") == []
    assert obs.gpu_ids.dtype == np.int64 and obs.gpu_ids.shape == (0,) and obs.has_job.dtype == np.bool_
    assert obs.market == MarketView(*market)


# ------------------------------------------------------------------------------------ checking answers
def _random_bids(rng: np.random.Generator, n: int):
    """Bids of every kind, valid and not: NaN, negatives, signed zeros, wrong shapes, increasing prices, many
    blocks, Kelly offers, lists and other dtypes."""
    pool = np.array([0.0, -0.0, 1.0, 250.0, 630.0, 700.0, np.inf, np.nan, -1.0, 1e-300])
    valid = pool[:7]

    def arr(values, shape):
        return rng.choice(values, size=shape)

    kind = rng.integers(8)
    req = arr(valid if rng.random() < 0.8 else pool, n)
    price = arr(valid if rng.random() < 0.8 else pool, n)
    if kind == 0:
        return Bids(req, price)
    if kind == 1:  # other containers and dtypes: the numpy check decides
        return Bids(req.tolist(), price.astype(np.float32))
    if kind == 2:
        return Bids(req, price[: max(n - 1, 0)])
    if kind == 3:
        return Bids(req, price, kelly_tokens=arr(valid[:6], n))
    if kind == 4:
        return Bids(req, price, steps_w=arr(valid[:6], (n, 2)))  # steps without prices
    k = int(rng.integers(0, 4))
    steps_w = arr(valid if rng.random() < 0.7 else pool, (n, k))
    steps_price = arr(valid if rng.random() < 0.7 else pool, (n, k))
    if rng.random() < 0.6:
        steps_price = -np.sort(-steps_price, axis=1)  # non-increasing, mostly valid
    return Bids(req, price, steps_w, steps_price)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 16])
def test_few_bid_values_accept_what_check_bids_accepts(n):
    rng = np.random.default_rng(100 + n)
    accepted = declined_valid = 0
    for _ in range(600):
        bids = _random_bids(rng, n)
        values = few_bid_values(bids, n)
        try:
            with np.errstate(invalid="ignore"):  # np.diff of inf - inf in check_bids
                checked = check_bids(bids, n, "p")
        except PolicyError:
            assert values is None
            continue
        if values is None:  # a form the Python path leaves to numpy (lists, kelly, > 2 blocks, ...)
            declined_valid += 1
            continue
        accepted += 1
        request_w, max_price, steps = values
        assert _bits(request_w).tolist() == _bits(checked.request_w).tolist()
        assert _bits(max_price).tolist() == _bits(checked.max_price_tokens_per_kwh).tolist()
        if steps is None:
            assert checked.steps_w is None
        else:
            assert [list(w) for w, _ in steps] == checked.steps_w.tolist()
            assert [list(p) for _, p in steps] == checked.steps_price.tolist()
    assert accepted > 50 and declined_valid > 20


@pytest.mark.parametrize("n", [1, 3, 16])
def test_few_wants_equal_the_array_wants(n):
    sim = _warmed("truthful")
    market = sim.market
    rng = np.random.default_rng(7 + n)
    compared = 0
    for _ in range(500):
        bids = _random_bids(rng, n)
        values = few_bid_values(bids, n)
        if values is None:
            continue
        with np.errstate(invalid="ignore"):
            checked = check_bids(bids, n, "p")
        for price in (0.0, 1.0, 250.0, float(rng.choice([1e-9, 3.3, math.inf]))):
            want = market.want_at_price(checked, price)
            few = market.few_wants_at_price(*values, price)
            assert np.array_equal(np.array(few), want)  # ±0 aside (it never leaves the spot allocation)
            compared += 1
            if values[2] is None:  # the dispatcher's own single-block form is the one _wants_at_price had
                assert few == market._wants_at_price(checked, price)
    assert compared > 200


@pytest.mark.parametrize("n", [0, 1, 4, 16])
def test_few_actions_accept_what_check_actions_accepts(n):
    rng = np.random.default_rng(n)
    for _ in range(300):
        dtype = rng.choice([np.int8, np.int64, np.uint8, np.float64, np.bool_])
        values = rng.integers(-1, len(IdleAction) + 1, size=n if rng.random() < 0.9 else n + 1).astype(dtype)
        got = few_actions(values, n, IdleAction)
        try:
            want = check_actions(values, n, IdleAction, "p").tolist()
        except PolicyError:
            assert got is None
            continue
        assert got is None or got == want
    assert few_actions([1] * n, n, IdleAction) is None  # a list: numpy's check decides


def test_the_engine_still_rejects_bad_answers_at_a_job_start_and_a_completion():
    class BadBid(policies.rules.Truthful):
        def bid(self, obs):
            return Bids(np.full(len(obs), np.nan), np.full(len(obs), 1.0))

    class BadIdle(policies.rules.Truthful):
        def on_idle(self, obs):
            return np.full(len(obs), 7, dtype=np.int8)

    for cls, match in ((BadBid, "bid: Bids.request_w has NaN or negative values"),
                       (BadIdle, "on_idle returned 7; allowed")):
        sim = _warmed("truthful", warm_s=60.0)
        sim.policy = sim.decisions.policy = cls()
        busy = int(np.flatnonzero(sim.cluster.assigned < 0)[0])
        with pytest.raises(PolicyError, match=match):
            if cls is BadBid:
                sim.decisions.start_wants([busy], 1.0)
            else:
                sim.decisions._few_idle_actions([busy])


# ------------------------------------------------------------------------------------ the rules
def _random_obs(rng: np.random.Generator, n: int) -> AgentObservation:
    """An observation of ``n`` agents with awkward values: signed zeros, infinite and negative slack, NaN,
    tiny and large betas, idle agents."""
    special = np.array([0.0, -0.0, 1e-300, 1.0, 37.5, 600.0, 3_600.0, 1e9, np.inf, -np.inf, np.nan, -5.0])

    def col(scale):
        x = rng.exponential(scale, size=n)
        mask = rng.random(n) < 0.25
        x[mask] = rng.choice(special, size=int(mask.sum()))
        return x

    has = rng.random(n) < 0.8
    beta = rng.choice(np.array([0.0, 1e-7, 0.3, 0.5, 1.0, 1.0, 2.0, np.nan]), size=n)
    market = MarketView(1_000.0, 7.3, 1e5, 2e5, float(rng.choice([0.0, 0.3, 0.5, 1.0])), 1.2, 1.0, 300.0, 40.0,
                        0.0, 3, 1, 1_200.0)
    return AgentObservation(np.arange(n, dtype=np.int64), rng.integers(0, 8, size=n).astype(np.int8), has,
                            np.where(has, col(900.0), 0.0), np.where(has, col(1_800.0), np.inf),
                            np.where(has, beta, 1.0),
                            np.where(has, col(50.0), 0.0), np.where(has, rng.integers(1, 9, size=n), 0),
                            col(20.0), market, GPU)


def _rows(obs: AgentObservation, keep: np.ndarray) -> AgentObservation:
    return dataclasses.replace(obs, **{f: getattr(obs, f)[keep] for f in dcsim.policy._AGENT_FIELDS[:9]})


def _lazy(obs: AgentObservation) -> AgentObservation:
    """``obs`` as the engine builds a few agents' observation: from Python values, each array built when read."""
    return few_agent_observation(obs.gpu_ids.tolist(), list(zip(*(obs.as_list(f) for f in ROW_FIELDS))),
                                 tuple(getattr(obs.market, f) for f in dcsim.policy._MARKET_FIELDS), GPU, None)


def _same_bids(a: Bids, b: Bids, rows: np.ndarray) -> None:
    for name in ("request_w", "max_price_tokens_per_kwh", "steps_w", "steps_price", "kelly_tokens"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None:
            assert y is None, name
            continue
        y = np.asarray(y)[rows]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(_bits(x), _bits(y)), name


@pytest.mark.parametrize("name", RULES)
def test_each_rule_decides_a_few_agents_as_it_decides_many(name):
    """The few-row forms (Python numbers) against the same rows decided within a batch of 40 (numpy), bit for
    bit, on eager and lazy observations."""
    policy = load_policy(name)
    rng = np.random.default_rng(len(name))
    for _ in range(150):
        many = _random_obs(rng, 40)
        n = int(rng.integers(0, 17))
        rows = np.sort(rng.choice(40, size=n, replace=False))
        few = _rows(many, rows)
        lazy = _lazy(few)
        for method in ("bid", "on_idle"):
            if not policy.overrides(method):
                continue
            with np.errstate(all="ignore"):
                whole = getattr(policy, method)(many)
                for obs in (few, lazy):
                    part = getattr(policy, method)(obs)
                    if method == "bid":
                        _same_bids(part, whole, rows)
                    else:
                        assert part.dtype == whole.dtype and np.array_equal(part, whole[rows])


@pytest.mark.parametrize("rule", ["full_cheap_else_min", "floor_value", "floor_limit"])
def test_reference_rules_choose_for_a_few_agents_as_for_many(rule, monkeypatch):
    """The reference rules' few-row choice (Python values) against a batch of 40, at cheap and dear prices, rows
    with and without a running job: the same actions; and the same bids as with every few-row path off (a bid's
    form depends on its own rows' actions, so it is compared on the same rows)."""
    policy = load_policy("reference", {"rule": rule})
    rng = np.random.default_rng(len(rule))
    seen = set()
    for _ in range(150):
        many = _random_obs(rng, 40)  # its price 1.2 p0 is cheap for these rules; half the time make it dear
        price = float(rng.choice([1.2, 5.0]))
        many = dataclasses.replace(many, market=dataclasses.replace(many.market, price_tokens_per_kwh=price))
        n = int(rng.integers(0, 17))
        rows = np.sort(rng.choice(40, size=n, replace=False))
        few = _rows(many, rows)
        lazy = _lazy(few)
        with np.errstate(all="ignore"):
            whole_actions = policy.actions(many)
            fast = [(policy.actions(obs), policy.bid(obs)) for obs in (few, lazy)]
            monkeypatch.setattr(dcsim.learning, "SMALL_BATCH", -1)
            slow = [(policy.actions(obs), policy.bid(obs)) for obs in (few, lazy)]
            monkeypatch.undo()
        for (a_fast, b_fast), (a_slow, b_slow) in zip(fast, slow):
            assert a_fast.dtype == whole_actions.dtype and np.array_equal(a_fast, whole_actions[rows])
            assert np.array_equal(a_fast, a_slow)
            _same_bids(b_fast, b_slow, np.arange(n))
        seen.update(whole_actions.tolist())
    assert len(seen) >= 2  # both actions of the rule were chosen


def test_pace_power_of_a_few_rows_is_the_numpy_one_bit_for_bit():
    rng = np.random.default_rng(12)
    for _ in range(400):
        many = _random_obs(rng, 40)
        n = int(rng.integers(1, 17))
        rows = np.sort(rng.choice(40, size=n, replace=False))
        for safety in (1.0, 1.25, 3):
            with np.errstate(all="ignore"):
                whole = pace_power_w(many, safety)
                part = pace_power_w(_rows(many, rows), safety)
            assert part.dtype == np.float64 and np.array_equal(_bits(part), _bits(whole[rows]))


# ------------------------------------------------------------------------------------ whole runs
def _outputs(data: dict) -> dict:
    out = run_scenario(parse_scenario(data))
    r = out.result
    summary = {k: v for k, v in out.summary.items() if k != "performance"}
    return {"summary": summary, "jobs": r.jobs.to_csv(index=False), "rounds": r.rounds.to_csv(index=False),
            "decisions": r.decisions.to_csv(index=False), "ledger": r.ledger.to_csv(index=False),
            "events": r.counters["events"]}


@pytest.mark.parametrize("name", RULES)
def test_runs_are_the_same_with_the_few_agent_paths_off(name, monkeypatch):
    data = _scenario(name, gpus=12, horizon_s=3 * 3600.0)
    fast = _outputs(data)
    monkeypatch.setattr(dcsim.decisions, "_SMALL_N", 0)  # every decision through the whole-array forms
    monkeypatch.setattr(policies.rules, "_FEW", -1)
    monkeypatch.setattr(dcsim.learning, "SMALL_BATCH", -1)
    slow = _outputs(data)
    assert fast["summary"]["jobs"]["completed"] > 10
    assert fast == slow
