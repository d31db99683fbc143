"""The learners' action layouts (``policy.params.actions``): masks per decision kind, transitions that span kinds
(hand-worked semi-Markov discounting), the admission agent's hand-off, checkpoints that record the layout, and
tiny end-to-end trainings with ``actions: all`` whose books balance."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dcsim.errors import PolicyError
from dcsim.learning import (
    EXTRA_FEATURES,
    FEATURES,
    ActionKind,
    ActionLayout,
    BidAction,
    Feedback,
    decision_kinds,
    episode_reward,
    episode_totals,
)
from dcsim.policy import (
    Admission,
    AgentObservation,
    GpuSpecView,
    GpuState,
    IdleAction,
    JobObservation,
    MarketView,
    load_policy,
)
from dcsim.runner import run_scenario
from dcsim.train import train
from conftest import scenario

GPU = GpuSpecView(idle_w=78.8, tdp_w=700.0, min_cap_w=200.0, full_power_w=700.0, gamma=2.5, utilisation=1.0)
TAU = 3600.0
GAMMA = 0.9


def _market(t: float, deferred: int = 0) -> MarketView:
    return MarketView(time_s=t, hour_utc=(t / 3600.0) % 24, renewable_w=0.0, demand_w=1000.0, renewable_fraction=0.0,
                      price_tokens_per_kwh=2.0, base_price_tokens_per_kwh=1.0, grid_carbon_g_per_kwh=300.0,
                      grid_price_usd_per_mwh=60.0, battery_soc=0.0, queue_length=0, deferred_jobs=deferred,
                      next_round_s=t + 300.0)


def _agents(t: float, has_job: list[bool], reward: list[float], dt: list[float],
            ids: list[int] | None = None) -> AgentObservation:
    n = len(has_job)
    has = np.array(has_job)
    return AgentObservation(
        gpu_ids=np.arange(n) if ids is None else np.array(ids, dtype=np.int64),
        state=np.where(has, int(GpuState.ACTIVE), int(GpuState.IDLE)).astype(np.int8),
        has_job=has, job_remaining_s=np.where(has, 1800.0, 0.0), job_slack_s=np.where(has, 3600.0, np.inf),
        job_clock_sensitivity=np.ones(n), job_value_tokens=np.where(has, 2.0, 0.0),
        job_gpus=np.where(has, 1, 0).astype(np.int64), wallet_tokens=np.full(n, 10.0), market=_market(t), gpu=GPU,
        feedback=Feedback(np.array(reward, float), np.array(dt, float), np.zeros(n, bool), np.zeros((n, 7))))


def _jobs(t: float, ids: list[int], gpus: list[int], slack_s: list[float], duration_s: float = 1800.0,
          deferred: int = 0) -> JobObservation:
    m = len(ids)
    return JobObservation(np.array(ids, dtype=np.int64), np.array(gpus, dtype=np.int64), np.full(m, duration_s),
                          np.array(slack_s, float), np.zeros(m), np.full(m, 2.0), _market(t, deferred))


class _Scripted:
    """Mix-in: greedy choices come from a script (per kind), and every consumed transition is recorded."""

    script: dict[int, list[int]]

    def choose(self, features, agents, allowed=None):
        kinds = decision_kinds(features, self.features)
        out = np.array([self.script[int(k)].pop(0) for k in kinds], dtype=np.int64)
        if allowed is not None:
            assert allowed[np.arange(out.size), out].all(), "the script picked an action outside the mask"
        return out

    def learn(self, tr):
        self.seen.append(tr)
        super().learn(tr)


def _scripted(actions: str, script: dict[ActionKind, list[int]], **params):
    from policies.qlearning import QLearning

    cls = type("ScriptedQ", (_Scripted, QLearning), {})
    pol = cls(actions=actions, gamma=GAMMA, tau_s=TAU, epsilon_start=0.0, epsilon_end=0.0, double=False,
              alpha_schedule="constant", alpha=1.0, **params)
    pol.script = {int(k): list(v) for k, v in script.items()}
    pol.seen = []
    pol.reset(np.random.default_rng(0), GPU, 2)
    return pol


# ------------------------------------------------------------------------------------------------ layouts
def test_layouts_are_blocks_of_the_kinds_enums_and_masks_select_a_kind():
    bid, idle, full = ActionLayout("bid"), ActionLayout("bid+idle"), ActionLayout("all")
    assert bid.n_actions == len(BidAction) and bid.features == FEATURES and not bid.rich
    assert idle.n_actions == len(BidAction) + len(IdleAction)
    assert full.n_actions == len(BidAction) + len(IdleAction) + len(Admission)
    assert full.features == FEATURES + EXTRA_FEATURES
    names = full.action_names()
    assert names[:len(BidAction)] == [f"BID.{m.name}" for m in BidAction]
    assert names[full.offset[ActionKind.IDLE] + IdleAction.SLEEP] == "IDLE.SLEEP"
    assert names[full.offset[ActionKind.ADMIT] + Admission.DEFER] == "ADMIT.DEFER"
    masks = full.mask(np.array([ActionKind.BID, ActionKind.IDLE, ActionKind.ADMIT]))
    assert masks.sum(axis=1).tolist() == [len(BidAction), len(IdleAction), len(Admission)]
    assert not (masks[0] & masks[1]).any() and not (masks[1] & masks[2]).any()  # each action has one kind
    assert masks.any(axis=0).all()  # and every action belongs to a kind
    with pytest.raises(PolicyError, match=r"actions='idle'.*allowed: bid, bid\+idle, all"):
        load_policy("qlearning", {"actions": "idle"})


@pytest.mark.parametrize("name", ["qlearning", "dqn"])
def test_greedy_choices_respect_the_mask(name):
    if name == "dqn":
        pytest.importorskip("torch")
    pol = load_policy(name, {"actions": "all"})
    pol.reset(np.random.default_rng(0), GPU, 4)
    if name == "qlearning":
        pol.table.q[...] = 0.0
        pol.table_b.q[...] = 0.0
        pol.table.q[..., 0] = pol.table_b.q[..., 0] = 100.0  # BID.FULL is the best action everywhere
    else:
        import torch

        with torch.no_grad():  # the learner's online network; the acting copy follows it at a sync
            last = [m for m in pol.learner.model.online.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.weight.zero_()
            last.bias.zero_()
            last.bias[0] = 100.0
        pol._sync()
    x = np.zeros((3, len(pol.features)), dtype=np.float32)
    x[0, FEATURES.index("has_job")] = 1.0  # bid kind
    x[2, pol.features.index("decision_admit")] = 1.0  # admission kind (row 1: idle)
    kinds = decision_kinds(x, pol.features)
    assert kinds.tolist() == [ActionKind.BID, ActionKind.IDLE, ActionKind.ADMIT]
    got = pol.choose(x, np.arange(3), pol.layout.mask(kinds))
    assert got.tolist() == [0, pol.layout.offset[ActionKind.IDLE], pol.layout.offset[ActionKind.ADMIT]]
    assert pol.choose(x, np.arange(3)).tolist() == [0, 0, 0]  # without the mask FULL would win everywhere


# ------------------------------------------------------------------------------------------------ transitions
def test_a_transition_spans_kinds_with_semi_markov_discounting():
    """Agent 0: bid (t=0) → its job completes, the GPU goes idle and decides SLEEP (t=600) → wakes for a new job
    and bids again (t=1500). Hand-worked: each transition sums the feedback of every call in between, each piece
    discounted by γ^(elapsed/τ) at its start, and closes at the next decision of whatever kind."""
    pol = _scripted("bid+idle", {ActionKind.BID: [int(BidAction.HALF), int(BidAction.FULL), int(BidAction.PACE)],
                                 ActionKind.IDLE: [8 + int(IdleAction.SLEEP)]})
    pol.bid(_agents(0.0, [True, False], [0.0, 0.0], [0.0, 0.0]))
    pol.bid(_agents(300.0, [True, False], [1.0, 0.0], [300.0, 300.0]))  # a round: agent 0 decides again
    assert len(pol.seen) == 1 and pol.seen[0].reward.tolist() == [1.0] and pol.seen[0].dt_s.tolist() == [300.0]
    pol.bid(_agents(450.0, [False, False], [0.5, 0.0], [150.0, 150.0]))  # job done: nothing to decide, accrue
    out = pol.on_idle(_agents(600.0, [False], [0.25], [150.0], ids=[0]))  # the idle GPU decides
    assert out.dtype == np.int8 and out.tolist() == [IdleAction.SLEEP]  # the engine gets the IdleAction itself
    bid_to_idle = pol.seen[-1]
    assert bid_to_idle.action[0] == int(BidAction.FULL)
    want = 0.5 + GAMMA ** (150.0 / TAU) * 0.25
    assert bid_to_idle.reward[0] == pytest.approx(want, rel=1e-12) and bid_to_idle.dt_s[0] == 300.0
    assert decision_kinds(bid_to_idle.next_obs, pol.features).tolist() == [ActionKind.IDLE]
    # asleep: rounds ask nothing of it; then its new job starts and it bids
    pol.bid(_agents(900.0, [False, False], [-0.1, 0.0], [300.0, 300.0]))
    pol.bid(_agents(1500.0, [True, False], [-0.2, 0.0], [600.0, 600.0]))
    idle_to_bid = pol.seen[-1]
    assert idle_to_bid.action[0] == 8 + int(IdleAction.SLEEP) and idle_to_bid.dt_s[0] == 900.0
    want = -0.1 + GAMMA ** (300.0 / TAU) * -0.2
    assert idle_to_bid.reward[0] == pytest.approx(want, rel=1e-12)
    assert decision_kinds(idle_to_bid.next_obs, pol.features).tolist() == [ActionKind.BID]


def test_the_q_update_bootstraps_from_the_next_states_own_kind():
    pol = _scripted("bid+idle", {ActionKind.BID: [int(BidAction.FULL)], ActionKind.IDLE: [8]})
    pol.on_idle(_agents(0.0, [False], [0.0], [0.0], ids=[0]))
    x_bid = pol._features(_agents(600.0, [True, True], [0.0, 0.0], [0.0, 0.0]))
    s_bid = pol.states(x_bid[:1])[0]
    pol.table.q[0, s_bid, :8] = np.arange(8.0)  # best bid: 7
    pol.table.q[0, s_bid, 8:] = 50.0  # idle entries of a bid state: never reachable, must not leak into the target
    pol.bid(_agents(600.0, [True, False], [1.5, 0.0], [600.0, 600.0]))
    (tr,) = pol.seen
    s_idle = pol.states(tr.obs)[0]
    assert pol.table.q[0, s_idle, 8] == pytest.approx(1.5 + GAMMA ** (600.0 / TAU) * 7.0, rel=1e-12)


def test_admission_hands_over_to_the_bid_kind_and_charges_the_wait():
    from dcsim.config import RewardConfig

    pol = _scripted("all", {ActionKind.ADMIT: [11 + int(Admission.DEFER), 11 + int(Admission.DEFER),
                                                11 + int(Admission.RUN)]})
    pol.use_reward(RewardConfig(latency_per_s=0.01, slo_per_miss=1.0, drop_per_job=2.0), drop_expired=True)
    # job 5 (2 GPUs) and job 6 (1 GPU, deadline at t = 300 + 1800 = 2100 s) are deferred at t = 0
    out = pol.admit(_jobs(0.0, [5, 6], [2, 1], [7200.0, 300.0]))
    assert out.tolist() == [Admission.DEFER, Admission.DEFER] and not pol.seen
    # t = 3000: job 5 is offered again and runs; job 6 was not offered: its deadline passed, so it was dropped
    out = pol.admit(_jobs(3000.0, [5], [2], [4200.0], deferred=1))
    assert out.tolist() == [Admission.RUN]
    closed, run = pol.seen
    assert sorted(closed.agent.tolist()) == [2 + 5, 2 + 6]  # job agents are numbered after the 2 GPUs
    d, j = closed.agent.tolist().index(2 + 6), closed.agent.tolist().index(2 + 5)
    assert closed.terminal[d] and not closed.terminal[j]
    assert closed.reward[d] == pytest.approx(-(0.01 * 2100.0 + 1.0 + 2.0), rel=1e-12)  # one GPU: all of it
    assert closed.action[j] == 11 + Admission.DEFER and closed.dt_s[j] == 3000.0
    assert closed.reward[j] == pytest.approx(-0.01 * 3000.0 / 2, rel=1e-12)  # a 2-GPU job: each GPU's share
    assert decision_kinds(closed.next_obs[j:j + 1], pol.features).tolist() == [ActionKind.ADMIT]
    # RUN: handed over at once (Δt = 0, reward 0) to the bid-kind state of the same job
    assert run.action.tolist() == [11 + Admission.RUN] and run.reward[0] == 0.0 and run.dt_s[0] == 0.0
    assert decision_kinds(run.next_obs, pol.features).tolist() == [ActionKind.BID]
    np.testing.assert_array_equal(run.next_obs[0, :len(FEATURES)], run.obs[0, :len(FEATURES)])


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("name", ["qlearning", "dqn"])
def test_a_checkpoint_of_another_layout_is_a_clear_error(tmp_path, name):
    if name == "dqn":
        pytest.importorskip("torch")
    pol = load_policy(name, {"actions": "all"})
    pol.reset(np.random.default_rng(0), GPU, 4)
    if name == "qlearning":
        assert pol.table.q.shape[-1] == ActionLayout("all").n_actions
    else:
        assert pol.learner.architecture()["n_actions"] == ActionLayout("all").n_actions
        assert pol.learner.architecture()["n_features"] == len(FEATURES + EXTRA_FEATURES)
    pol.save_checkpoint(tmp_path / "ck")
    for other in ("bid", "bid+idle"):
        with pytest.raises(PolicyError, match=r"action layout 'all' \(13 actions.*this policy's layout is "
                                              rf"'{other.replace('+', '[+]')}' .*actions='all'"):
            load_policy(name, {"actions": other, "checkpoint": str(tmp_path / "ck")}).reset(
                np.random.default_rng(0), GPU, 4)
    back = load_policy(name, {"actions": "all", "checkpoint": str(tmp_path / "ck"), "learn": False})
    back.reset(np.random.default_rng(0), GPU, 4)
    x = np.random.default_rng(1).normal(size=(16, len(back.features))).astype(np.float32)
    mask = back.layout.mask(decision_kinds(x, back.features))
    np.testing.assert_array_equal(back.choose(x, np.arange(16) % 4, mask), pol.choose(x, np.arange(16) % 4, mask))
    # a default-layout checkpoint (no 'actions' field, as before layouts) is refused by a richer layout
    plain = load_policy(name, {})
    plain.reset(np.random.default_rng(0), GPU, 4)
    plain.save_checkpoint(tmp_path / "plain")
    with pytest.raises(PolicyError, match=r"action layout 'bid' \(8 actions.*this policy's layout is 'all'"):
        load_policy(name, {"actions": "all", "checkpoint": str(tmp_path / "plain")}).reset(
            np.random.default_rng(0), GPU, 4)


# ------------------------------------------------------------------------------------------------ end to end
TINY = dict(horizon_s=4 * 3600, seed=5, cluster={"gpus": 6},
            workload={"arrivals": {"process": "poisson", "rate_per_s": 0.003},
                      "duration_s": {"distribution": "exponential", "mean": 1200}, "deferrable_fraction": 0.6,
                      "deadline_slack": 3.0, "value_tokens_per_gpu_s": 1e-3, "drop_expired": True},
            market={"initial_tokens": 20.0, "endowment_tokens": 1.0, "interval_s": 300},
            reward={"slo_per_miss": 1.0, "drop_per_job": 2.0, "latency_per_s": 1e-4})
DQN_SMALL = {"hidden": [16, 16], "batch_size": 32, "min_replay": 32, "updates_per_round": 2}


def _books_balance(run, sc) -> None:
    r = run.result
    e, t = r.energy, r.tokens
    consumed = e["consumed_j"]
    assert abs(e["renewable_used_j"] + e["battery_out_j"] + e["grid_j"] + e["unserved_j"] - consumed) <= 1e-9 * consumed
    assert abs(r.gpu_energy_j.sum() - consumed) <= 1e-9 * consumed
    assert abs(t["minted"] - (t["held"] + t["spent"] + t["burned"])) <= 1e-9 * t["minted"]
    total = episode_reward(episode_totals(r), sc.reward)
    assert abs(r.agent_returns.sum() - total) <= 1e-9 * max(1.0, abs(total), t["minted"])
    s = run.summary["jobs"]
    assert s["arrived"] == s["completed"] + s["dropped"] + s["pending"]


@pytest.mark.parametrize("name", ["qlearning", "dqn"])
def test_a_tiny_training_with_every_decision_kind_runs_and_its_books_balance(tmp_path, name):
    if name == "dqn":
        pytest.importorskip("torch")
    params = {"actions": "all", "epsilon_decay_decisions": 300.0} | (DQN_SMALL if name == "dqn" else {})
    sc = scenario(**TINY, policy={"name": name, "params": params})
    curve = train(sc, name, 3, tmp_path / "t", keep_transitions=20_000)
    assert len(curve) == 3 and curve["updates"].iloc[-1] > 0
    spec = (tmp_path / "t" / "checkpoint" / f"{name}.json").read_text()
    assert '"actions": "all"' in spec
    # the kept transitions: every action lies in its row's own kind, and all three kinds were decided
    from dcsim.learning import ReplayBuffer

    layout = ActionLayout("all")
    data = ReplayBuffer.load(tmp_path / "t" / "transitions.npz", features=layout.features,
                             n_actions=layout.n_actions).snapshot()
    kinds = decision_kinds(data["obs"], layout.features)
    assert layout.mask(kinds)[np.arange(kinds.size), data["action"]].all()
    assert set(kinds.tolist()) == {ActionKind.BID, ActionKind.IDLE, ActionKind.ADMIT}
    taken = set(layout.action_names()[a].split(".")[0] for a in np.unique(data["action"]))
    assert taken == {"BID", "IDLE", "ADMIT"}
    # the trained policy, frozen, on a fresh seed: its decisions reach the engine and the books balance
    pol = load_policy(name, params | {"learn": False, "checkpoint": str(tmp_path / "t" / "checkpoint")})
    run = run_scenario(sc.model_copy(update={"seed": 99}), policy=pol)
    _books_balance(run, sc)
    decided = set(run.result.decisions["method"].astype(str))
    assert {"bid", "admit", "on_idle"} <= decided


def test_idle_actions_reach_only_idle_gpus_and_bids_only_running_ones():
    """Exploring at random (ε = 1) through a whole run: an idle decision is only ever asked of, and answered for,
    GPUs without a job, and every bid action goes to a GPU running one."""
    from policies.qlearning import QLearning

    seen = {"idle_with_job": 0, "idle": 0, "bid_rows": 0, "bid_without_job": 0}

    class Watch(QLearning):
        def on_idle(self, obs):
            out = super().on_idle(obs)
            seen["idle"] += len(obs)
            seen["idle_with_job"] += int(obs.has_job.sum())
            assert out.min() >= 0 and out.max() < len(IdleAction)
            return out

        def learn(self, tr):
            kinds = decision_kinds(tr.obs, self.features)
            bid = tr.action < len(BidAction)
            seen["bid_rows"] += int(bid.sum())
            seen["bid_without_job"] += int((bid & (kinds != ActionKind.BID)).sum())
            super().learn(tr)

    sc = scenario(**TINY)
    pol = Watch(actions="bid+idle", epsilon_start=1.0, epsilon_end=1.0)
    run = run_scenario(sc, policy=pol)
    assert seen["idle"] > 0 and seen["bid_rows"] > 0
    assert seen["idle_with_job"] == 0 and seen["bid_without_job"] == 0
    states = run.result.timeseries
    assert "admit" not in set(run.result.decisions["method"].astype(str))  # bid+idle asks no admissions
    _books_balance(run, sc)
    assert math.isfinite(run.summary["reward"]["per_gpu"]) and len(states) > 0


def test_the_cli_names_both_layouts_when_a_checkpoint_does_not_fit(tmp_path, capsys):
    import yaml

    from dcsim.cli import main

    sc = scenario(**TINY, policy={"name": "qlearning", "params": {"actions": "all"}})
    train(sc, "qlearning", 1, tmp_path / "t", keep_transitions=0)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sc.model_dump(mode="json", exclude={"policy"})))
    code = main(["run", str(path), "--policy", "qlearning", "--set", "policy.params.actions=bid", "--checkpoint",
                 str(tmp_path / "t" / "checkpoint"), "-q", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert "qlearning.json" in err and "'all' (13 actions" in err and "'bid' (8 actions" in err, err
    assert not (tmp_path / "r").exists()
    # with the layout it was trained with, it runs
    assert main(["run", str(path), "--policy", "qlearning", "--set", "policy.params.actions=all", "--checkpoint",
                 str(tmp_path / "t" / "checkpoint"), "-q", "--out", str(tmp_path / "r")]) == 0


@pytest.mark.parametrize("name", ["qlearning", "dqn"])
def test_run_checkpoint_reads_the_action_layout_from_the_checkpoint(tmp_path, name):
    """``run --checkpoint`` without ``--set policy.params.actions``: the layout the checkpoint records, so the run is
    the one with the layout given explicitly (same decisions and job table); a default-layout checkpoint needs
    nothing either."""
    import json

    import yaml

    from dcsim.cli import main

    if name == "dqn":
        pytest.importorskip("torch")
    params = {"actions": "bid+idle"} | (DQN_SMALL if name == "dqn" else {})
    sc = scenario(**TINY, policy={"name": name, "params": params})
    train(sc, name, 1, tmp_path / "t", keep_transitions=0)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sc.model_dump(mode="json", exclude={"policy"})))
    ckpt = tmp_path / "t" / "checkpoint"
    small = [f"policy.params.{k}={json.dumps(v)}" for k, v in params.items() if k != "actions"]
    sets = [a for s in small for a in ("--set", s)]
    assert main(["run", str(path), "--policy", name, *sets, "--checkpoint", str(ckpt), "-q",
                 "--out", str(tmp_path / "auto")]) == 0
    assert main(["run", str(path), "--policy", name, *sets, "--set", "policy.params.actions=bid+idle", "--checkpoint",
                 str(ckpt), "-q", "--out", str(tmp_path / "given")]) == 0
    meta = yaml.safe_load((tmp_path / "auto" / "metadata.yaml").read_text())
    assert "bid+idle" in json.dumps(meta)
    for table in ("jobs.csv", "decisions.csv"):
        assert (tmp_path / "auto" / table).read_bytes() == (tmp_path / "given" / table).read_bytes()
    assert "on_idle" in (tmp_path / "auto" / "decisions.csv").read_text()  # the bid+idle layout decides idle GPUs
    # the file itself (not its folder) as --checkpoint: the spec beside it
    file = ckpt / ("qlearning.npz" if name == "qlearning" else "dqn.pt")
    assert main(["run", str(path), "--policy", name, *sets, "--checkpoint", str(file), "-q",
                 "--out", str(tmp_path / "file")]) == 0
    # a default-layout checkpoint records no layout and runs as before
    plain = scenario(**TINY, policy={"name": name, "params": {k: v for k, v in params.items() if k != "actions"}})
    train(plain, name, 1, tmp_path / "p", keep_transitions=0)
    assert main(["run", str(path), "--policy", name, *sets, "--checkpoint", str(tmp_path / "p" / "checkpoint"), "-q",
                 "--out", str(tmp_path / "plain")]) == 0
