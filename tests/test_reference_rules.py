"""Issue 14: the learners' richer actions, the in-set reference rules, double Q-learning and the progress bins,
each checked against a hand-worked expectation or an independent construction."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from dcsim.cli import main
from dcsim.errors import PolicyError
from dcsim.learning import FEATURES, BidAction, bids_from_actions, job_value_per_kwh, pace_power_w
from dcsim.policy import AgentObservation, GpuSpecView, GpuState, MarketView, load_policy
from dcsim.runner import run_scenario
from dcsim.train import evaluation_table
from conftest import scenario
from policies.qlearning import BIN_SETS, QLearning, pace_needed
from policies.qtable import QTable, double_q_update
from policies.reference import REFERENCE_RULES, ReferenceRule, parse_reference

H100 = GpuSpecView(idle_w=78.8, tdp_w=700.0, min_cap_w=200.0, full_power_w=700.0, gamma=2.5, utilisation=1.0)


def _obs(price=1.0, remaining_s=(3600.0, 3600.0, 1800.0), slack_s=(7200.0, math.inf, -60.0), value=(3.6, 7.2, 1.8),
         gpus=(1, 2, 1)):
    n = len(remaining_s)
    market = MarketView(time_s=0.0, hour_utc=12.0, renewable_w=0.0, demand_w=1.0, renewable_fraction=0.0,
                        price_tokens_per_kwh=price, base_price_tokens_per_kwh=1.0, grid_carbon_g_per_kwh=0.0,
                        grid_price_usd_per_mwh=0.0, battery_soc=0.0, queue_length=0, deferred_jobs=0,
                        next_round_s=300.0)
    return AgentObservation(gpu_ids=np.arange(n), state=np.full(n, GpuState.ACTIVE), has_job=np.ones(n, bool),
                            job_remaining_s=np.array(remaining_s), job_slack_s=np.array(slack_s),
                            job_clock_sensitivity=np.ones(n), job_value_tokens=np.array(value),
                            job_gpus=np.array(gpus), wallet_tokens=np.full(n, 10.0), market=market, gpu=H100)


# ------------------------------------------------------------------------------------------------ actions
def test_two_block_actions_bid_a_price_blind_floor_and_a_priced_rest():
    obs = _obs()
    b = bids_from_actions(np.array([BidAction.FLOOR_THEN_LIMIT, BidAction.FLOOR_THEN_VALUE, BidAction.FULL]), obs,
                          block_limit_multiple=2.0)
    # floor: 200 − 78.8 = 121.2 W at any price; the rest 700 − 200 = 500 W at the limit
    np.testing.assert_allclose(b.steps_w, [[121.2, 500.0], [121.2, 500.0], [621.2, 0.0]])
    # value per kWh of the second row: 7.2 / 2 GPUs = 3.6 tokens over 1 h × 0.6212 kW = 5.795 tokens/kWh
    assert b.steps_price[0].tolist() == [math.inf, 2.0]
    assert b.steps_price[1, 0] == math.inf and b.steps_price[1, 1] == pytest.approx(3.6 / 0.6212)
    assert b.steps_price[2].tolist() == [math.inf, 0.0]  # a single block: its unused step is 0 W at price 0
    assert np.all(np.diff(b.steps_price, axis=1) <= 0)  # demand curves non-increasing
    np.testing.assert_allclose(job_value_per_kwh(obs), [3.6 / 0.6212, 3.6 / 0.6212, 1.8 / 0.3106])


def test_single_block_actions_bid_as_before_the_new_actions():
    obs = _obs(price=3.0)
    b = bids_from_actions(np.array([BidAction.FULL, BidAction.FULL_IF_CHEAP, BidAction.MIN_CAP]), obs, 1.1)
    assert b.steps_w is None  # the plain form, exactly as the 5-action set bid
    np.testing.assert_allclose(b.request_w, [700.0, 700.0, 200.0])
    np.testing.assert_allclose(b.max_price_tokens_per_kwh, [math.inf, 1.1, math.inf])


def test_pace_requests_the_power_that_meets_the_deadline():
    obs = _obs()
    # row 0: 1 h of work, 3 h to the deadline, safety 1.25 -> 2.4 h: f = 1/2.4, P = 78.8 + 621.2 f^2.5
    f = 1.0 / 2.4
    expected0 = 78.8 + 621.2 * f ** 2.5
    # that is below the 200 W minimum cap, so the cap; row 1 has no deadline (full power), row 2 is late (full)
    np.testing.assert_allclose(pace_power_w(obs, 1.25), [max(expected0, 200.0), 700.0, 700.0])
    tight = _obs(remaining_s=(3600.0,), slack_s=(900.0,), value=(1.0,), gpus=(1,))
    f = 1.0 / (4500.0 / 1.25 / 3600.0)  # 1 h of work in 1 h exactly (4500 s / 1.25)
    assert pace_power_w(tight, 1.25)[0] == pytest.approx(78.8 + 621.2 * min(f, 1.0) ** 2.5)
    b = bids_from_actions(np.array([BidAction.PACE]), tight)
    assert b.request_w[0] == pytest.approx(700.0) and b.max_price_tokens_per_kwh[0] == math.inf


# ------------------------------------------------------------------------------------------------ reference rules
def test_reference_rule_switches_on_the_price():
    rule = ReferenceRule(rule="full_cheap_else_min")
    assert rule.actions(_obs(price=2.7)).tolist() == [BidAction.FULL] * 3  # 2.7 <= e
    assert rule.actions(_obs(price=2.8)).tolist() == [BidAction.MIN_CAP] * 3
    custom = ReferenceRule(cheap="PACE", dear="PAUSE", price_multiple=1.5)
    assert custom.actions(_obs(price=1.5)).tolist() == [BidAction.PACE] * 3
    assert custom.actions(_obs(price=1.6)).tolist() == [BidAction.PAUSE] * 3


def test_reference_rule_errors_name_the_field_and_what_is_allowed():
    with pytest.raises(PolicyError, match="rule='nope'; allowed: full_cheap_else_min"):
        ReferenceRule(rule="nope")
    with pytest.raises(PolicyError, match="dear='SLOW'; allowed: FULL, FULL_IF_CHEAP"):
        ReferenceRule(dear="SLOW")
    with pytest.raises(PolicyError, match="price_multiple=-1.0; allowed: a finite number > 0"):
        ReferenceRule(price_multiple=-1)
    with pytest.raises(PolicyError, match="--reference 'bogus': unknown rule 'bogus'"):
        parse_reference("bogus")
    with pytest.raises(PolicyError, match="'price_multiple' is not key=value"):
        parse_reference("pace:price_multiple")
    with pytest.raises(PolicyError, match="--reference 'pace:speed=2'.*allowed keys"):
        parse_reference("pace:speed=2")
    assert parse_reference("full_cheap_else_min:price_multiple=2") == (
        "ref:full_cheap_else_min:price_multiple=2", {"rule": "full_cheap_else_min", "price_multiple": 2})
    assert set(REFERENCE_RULES) >= {"full_cheap_else_min", "floor_limit", "pace"}


SUNNY = dict(horizon_s=8 * 3600, seed=5, start="2023-06-21T15:00:00Z", cluster={"gpus": 6},
             workload={"arrivals": {"process": "poisson", "rate_per_s": 0.002},
                       "duration_s": {"distribution": "exponential", "mean": 1800}, "deadline_slack": 3.0},
             supply={"solar": {"capacity_w": 2500, "latitude": 37.36, "longitude": -121.93}},
             market={"mechanism": "posted_price", "scarcity_kappa": 2.0, "initial_tokens": 20.0})


def test_a_q_table_can_express_the_reference_rule_exactly():
    """A frozen Q-table whose greedy action is FULL in every state of the cheap price bins (p < e·p0) and MIN_CAP
    elsewhere runs exactly as the reference rule: the rule lies in the learners' own policy class."""
    sc = scenario(**SUNNY)
    pol = QLearning(learn=False)
    pol.reset(np.random.default_rng(0), None, 6)
    radices, names = pol.discretizer.radices, pol.discretizer.names
    digits = np.array(np.unravel_index(np.arange(pol.discretizer.n_states), radices))
    cheap = digits[names.index("price_log_ratio")] < 2
    pol.table.q[0, cheap, BidAction.FULL] = 1.0
    pol.table.q[0, ~cheap, BidAction.MIN_CAP] = 1.0
    a = run_scenario(sc, policy=pol).result
    b = run_scenario(sc, policy=ReferenceRule(rule="full_cheap_else_min")).result
    assert (a.rounds["price_tokens_per_kwh"] > math.e).any() and (a.rounds["price_tokens_per_kwh"] < math.e).any()
    pd.testing.assert_frame_equal(a.jobs, b.jobs)


def test_evaluation_table_compares_learners_with_the_best_reference_rule():
    runs = pd.DataFrame({"arm": ["L"] * 3 + ["base"] * 3 + ["ref:a"] * 3 + ["ref:b"] * 3, "seed": [1, 2, 3] * 4,
                         "return_per_gpu": [1.0, 2.0, 3.5, 0.0, 1.0, 2.0, 5.0, 6.0, 7.5, 4.0, 4.0, 4.0],
                         "jobs_completed": 1.0, "tokens_spent": 1.0, "energy_kwh": 1.0})
    table, md = evaluation_table(runs, ["L"], ["ref:a", "ref:b"])
    row = table.set_index("arm").loc["L"]
    assert row["vs"] == "base"  # the reference rules are not baselines
    assert row["diff_mean"] == pytest.approx(np.mean([1.0, 1.0, 1.5]))
    assert "**L** loses to the best reference rule **ref:a**: paired difference -4.000" in md
    assert "**ref:a** beats the best baseline **base**" in md


def test_cli_reference_needs_eval_seeds_and_a_known_rule(tmp_path, capsys):
    from conftest import BASE
    import yaml

    sc_file = tmp_path / "s.yaml"
    sc_file.write_text(yaml.safe_dump(json.loads(json.dumps(BASE))))
    assert main(["train", str(sc_file), "--policy", "qlearning", "--out", str(tmp_path / "a"), "-q",
                 "--eval-seeds", "1", "--reference", "nope"]) == 2
    assert "--reference 'nope': unknown rule 'nope'; allowed: full_cheap_else_min" in capsys.readouterr().err
    assert main(["train", str(sc_file), "--policy", "qlearning", "--out", str(tmp_path / "b"), "-q",
                 "--reference", "pace"]) == 2
    assert "give --eval-seeds" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before any training


# ------------------------------------------------------------------------------------------------ learning
def test_double_q_learning_removes_the_over_estimation_of_a_noisy_max():
    """van Hasselt's example: from state 0, STOP ends the episode with reward 0; GO moves (reward 0) to state 1,
    where each of 8 actions ends it with reward N(−0.1, 1). The true Q(0, GO) = −0.1 < Q(0, STOP) = 0. Single
    Q-learning bootstraps from max of 8 noisy estimates and over-estimates GO (it prefers it); double Q does not."""
    rng = np.random.default_rng(7)
    single = QTable(2, 8, alpha=0.1, gamma=1.0)
    a, b = QTable(2, 8, alpha=0.1, gamma=1.0), QTable(2, 8, alpha=0.1, gamma=1.0)
    go, stop = 0, 1
    est_single, est_double = [], []
    for episode in range(3000):
        r = rng.normal(-0.1, 1.0)
        act = int(rng.integers(8))
        coin = rng.random(2) < 0.5
        one = np.zeros(1, np.int64)
        # state 1 -> terminal, then state 0 --GO--> state 1 (both learners see the same experience)
        single.update(0, one + 1, one + act, np.array([r]), one, np.zeros(1), terminal=True)
        double_q_update((a, b), coin[:1], 0, one + 1, one + act, np.array([r]), one, np.zeros(1), terminal=True)
        single.update(0, one, one + go, np.zeros(1), one + 1, np.zeros(1))
        double_q_update((a, b), coin[1:], 0, one, one + go, np.zeros(1), one + 1, np.zeros(1))
        if episode >= 1000:
            est_single.append(single.q[0, 0, go])
            est_double.append(0.5 * (a.q[0, 0, go] + b.q[0, 0, go]))
    # Each of the 8 estimates is a constant-α running mean of N(−0.1, 1) samples: stationary sd
    # sqrt(α / (2 − α)) = 0.229, and E[max of 8 iid normals] = −0.1 + 1.4236·sd = 0.226: single Q's target.
    theory = -0.1 + 1.4236 * math.sqrt(0.1 / 1.9)
    assert abs(np.mean(est_single) - theory) < 0.08
    # double Q values A's greedy pick with B's independent estimate: unbiased for that action, so about −0.1
    assert abs(np.mean(est_double) + 0.1) < 0.08
    assert stop == 1 and np.all(single.q[0, 0, stop] == 0.0)  # STOP was never taken: still its initial value


def test_bootstrap_replaces_the_max_in_the_target():
    t = QTable(2, 2, alpha=1.0, gamma=0.5, tau_s=1.0)
    t.q[0, 1] = [4.0, 8.0]
    t.update(0, np.array([0]), np.array([0]), np.array([1.0]), np.array([1]), np.array([1.0]),
             bootstrap=np.array([2.0]))
    assert t.q[0, 0, 0] == 1.0 + 0.5 * 2.0  # the given value, not max(4, 8)
    with pytest.raises(ValueError, match="bootstrap must be finite"):
        t.update(0, np.array([0]), np.array([0]), np.array([1.0]), np.array([1]), np.array([1.0]),
                 bootstrap=np.array([np.nan]))


def _feature_rows(rows):
    x = np.zeros((len(rows), len(FEATURES)), np.float32)
    for i, values in enumerate(rows):
        for name, v in values.items():
            x[i, FEATURES.index(name)] = v
    return x


def test_pace_needed_and_progress_bins_map_hand_built_observations():
    # slack_h and remaining_h are hours / 4
    x = _feature_rows([
        {"has_job": 1, "has_deadline": 1, "slack_h": 3 / 4, "remaining_h": 1 / 4},  # 1 h of work in 4 h: 0.25
        {"has_job": 1, "has_deadline": 1, "slack_h": 0.5 / 4, "remaining_h": 1.5 / 4},  # 1.5 in 2 h: 0.75
        {"has_job": 1, "has_deadline": 1, "slack_h": -0.5 / 4, "remaining_h": 0.1 / 4},  # late
        {"has_job": 1, "has_deadline": 0, "slack_h": 2.0, "remaining_h": 0.5 / 4},  # no deadline: 0
    ])
    np.testing.assert_allclose(pace_needed(x), [0.25, 0.75, 2.0, 0.0], rtol=1e-6)
    pol = QLearning(bins="progress")
    assert pol.discretizer.n_states == 324
    # digits (pace, remaining, price, renewable, value_over_cost, wallet); price, renewable etc. are 0 here -> bin
    # 1 for price (0 >= 0.05? no: bin 0), renewable 0, value_over_cost 0 >= 0: bin 1, wallet 0: bin 0
    expected = [np.ravel_multi_index(d, pol.discretizer.radices) for d in
                [(0, 2, 0, 0, 1, 0), (1, 2, 0, 0, 1, 0), (2, 0, 0, 0, 1, 0), (0, 1, 0, 0, 1, 0)]]
    assert pol.states(x).tolist() == expected
    assert QLearning(bins="price_slack").discretizer.n_states == 144
    with pytest.raises(PolicyError, match="bins='nope'; allowed: price_slack, progress"):
        QLearning(bins="nope")
    assert set(BIN_SETS["progress"]) >= {"pace_needed", "remaining_h"}


def test_checkpoints_of_the_old_action_set_are_refused(tmp_path):
    sc = scenario(**SUNNY)
    pol = load_policy("qlearning", {})
    run_scenario(sc, policy=pol)
    pol.save_checkpoint(tmp_path / "ck")
    spec = json.loads((tmp_path / "ck" / "qlearning.json").read_text())
    spec["n_actions"] = 5
    (tmp_path / "ck" / "qlearning.json").write_text(json.dumps(spec))
    with pytest.raises(PolicyError, match="qlearning.json: a checkpoint for 5 actions.*old 5-action set.*retrain"):
        load_policy("qlearning", {"checkpoint": str(tmp_path / "ck")}).reset(np.random.default_rng(0), None, 6)
    # and a checkpoint of the other bin set names the setting to change
    pol.save_checkpoint(tmp_path / "ck2")
    with pytest.raises(PolicyError, match="set policy.params.bins to the checkpoint's 'progress'"):
        load_policy("qlearning", {"bins": "price_slack", "checkpoint": str(tmp_path / "ck2")}).reset(
            np.random.default_rng(0), None, 6)


def test_double_q_checkpoint_acts_as_the_trained_policy(tmp_path):
    sc = scenario(**SUNNY)
    pol = load_policy("qlearning", {"double": True})
    for k in range(2):
        run_scenario(sc.model_copy(update={"seed": k}), policy=pol)
    assert not np.array_equal(pol.table.q, pol.table_b.q)  # the coin split the updates
    pol.save_checkpoint(tmp_path / "ck")
    back = load_policy("qlearning", {"double": True, "learn": False, "checkpoint": str(tmp_path / "ck")})
    back.reset(np.random.default_rng(0), None, 6)
    x = np.random.default_rng(1).normal(size=(50, len(FEATURES))).astype(np.float32)
    x[:, FEATURES.index("has_job")] = 1
    np.testing.assert_array_equal(pol.choose(x, np.zeros(50, np.int64)), back.choose(x, np.zeros(50, np.int64)))


def test_double_dqn_target_values_the_online_networks_choice_with_the_target_network():
    torch = pytest.importorskip("torch")
    from policies.dqn_core import DQNLoss

    g = torch.Generator().manual_seed(0)
    loss = DQNLoss(3, 4, (8,), generator=g, double=True)
    with torch.no_grad():  # make the target differ from the online network
        for p in loss.target.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    obs, nxt = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    action, reward, discount = torch.tensor([0, 1, 2, 3, 0]), torch.randn(5, generator=g), torch.full((5,), 0.9)
    with torch.no_grad():
        pick = loss.online(nxt).argmax(dim=1)
        y = reward + discount * loss.target(nxt)[torch.arange(5), pick]
        y_single = reward + discount * loss.target(nxt).max(dim=1).values
        q = loss.online(obs)[torch.arange(5), action]
    expected = torch.nn.functional.smooth_l1_loss(q, y)
    assert torch.allclose(loss(obs, action, reward, nxt, discount), expected)
    assert not torch.allclose(y, y_single)  # the check can tell the two targets apart
    loss.double = False
    assert torch.allclose(loss(obs, action, reward, nxt, discount), torch.nn.functional.smooth_l1_loss(q, y_single))
