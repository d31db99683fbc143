"""Learning policies end to end: they learn what a hand analysis says is optimal, checkpoints reproduce actions,
training is deterministic and resumable, and bad checkpoints or options get clear errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dcsim.cli import main
from dcsim.errors import DcsimError, PolicyError
from dcsim.learning import FEATURES, BidAction
from dcsim.policy import load_policy
from dcsim.runner import run_scenario
from dcsim.train import train
from conftest import scenario

torch = pytest.importorskip("torch")

# Eight H100s, no renewable power: the posted price is p0·e^κ = 7.39 tokens/kWh all day, so a GPU at full power
# pays 0.621 kW × 7.39 ≈ 4.6 tokens an hour while its job is worth 0.36 tokens per GPU-hour. Running at any
# power loses tokens (power above idle costs more than the work is worth at every cap), so the optimal bid is
# PAUSE and the best return is 0; a policy that runs jobs has a negative return.
LOSING = dict(
    horizon_s=6 * 3600, seed=3,
    cluster={"gpus": 8},
    workload={"arrivals": {"process": "poisson", "rate_per_s": 0.002},
              "duration_s": {"distribution": "exponential", "mean": 1800}, "value_tokens_per_gpu_s": 1e-4},
    market={"initial_tokens": 100.0, "endowment_tokens": 0.0, "interval_s": 300},
)
DQN_PARAMS = {"hidden": [32, 32], "lr": 3e-3, "batch_size": 64, "min_replay": 64, "updates_per_round": 4,
              "epsilon_decay_decisions": 800.0, "gamma": 0.9}


def _returns(sc, name, params, seeds):
    return np.array([run_scenario(sc.model_copy(update={"seed": s}), policy=load_policy(name, params))
                     .summary["reward"]["per_gpu"] for s in seeds])


@pytest.mark.parametrize("name", ["qlearning", "dqn"])
def test_short_training_improves_on_the_initial_policy(tmp_path, name, record_property):
    sc = scenario(**LOSING, policy={"name": name, "params": DQN_PARAMS if name == "dqn" else
                                    {"epsilon_decay_decisions": 800.0, "alpha": 0.2}})
    seeds = list(range(100, 105))
    params = dict(sc.policy.params)
    before = _returns(sc, name, params | {"learn": False}, seeds)  # the untrained policy, greedy
    train(sc, name, 12, tmp_path / "t", keep_transitions=0)
    after = _returns(sc, name, params | {"learn": False, "checkpoint": str(tmp_path / "t" / "checkpoint")}, seeds)
    margin = float(after.mean() - before.mean())
    record_property("return_per_gpu_before", float(before.mean()))
    record_property("return_per_gpu_after", float(after.mean()))
    print(f"{name}: return per GPU {before.mean():.4f} -> {after.mean():.4f} (margin {margin:+.4f}, optimum 0)")
    assert before.mean() < 0  # the untrained greedy policy runs jobs and loses tokens
    assert margin > 0 and after.mean() > 0.5 * before.mean()  # it learnt to pause, closing most of the gap to 0
    assert after.max() <= 1e-12  # no policy beats the analytic optimum of 0


def test_learnt_policy_pauses_when_power_costs_more_than_work_is_worth(tmp_path):
    # a constant α: 12 short episodes are too few for the visit-count schedule's shrinking steps to settle 8 actions
    sc = scenario(**LOSING, policy={"name": "qlearning", "params": {"epsilon_decay_decisions": 800.0, "alpha": 0.2,
                                                                    "alpha_schedule": "constant"}})
    train(sc, "qlearning", 12, tmp_path / "t", keep_transitions=0)
    pol = load_policy("qlearning", {"learn": False, "checkpoint": str(tmp_path / "t" / "checkpoint")})
    pol.reset(np.random.default_rng(0), None, 8)
    q = pol.acting_q()[0]  # double Q-learning acts on the mean of its two tables
    visited = (pol.table.visits[0] + pol.table_b.visits[0]).sum(axis=1) > 50
    assert visited.any()
    # the greedy action buys no power: PAUSE, or FULL_IF_CHEAP, which buys nothing at 7.39 > 1.1 × p0
    assert np.all(np.isin(q[visited].argmax(axis=1), [BidAction.PAUSE, BidAction.FULL_IF_CHEAP]))
    # every other action buys at least the minimum cap at 7.39 tokens/kWh (the two-block ones their floor)
    paying = [BidAction.FULL, BidAction.HALF, BidAction.MIN_CAP, BidAction.FLOOR_THEN_VALUE,
              BidAction.FLOOR_THEN_LIMIT, BidAction.PACE]
    assert np.all(q[visited][:, paying].max(axis=1) < q[visited].max(axis=1))


def _features(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, size=(n, len(FEATURES))).astype(np.float32)
    x[:, FEATURES.index("has_job")] = 1.0
    return x


@pytest.mark.parametrize("name", ["qlearning", "dqn"])
def test_checkpoint_round_trip_gives_identical_actions(tmp_path, name):
    sc = scenario(**LOSING, policy={"name": name, "params": DQN_PARAMS if name == "dqn" else {}})
    pol = load_policy(name, dict(sc.policy.params))
    for k in range(2):
        run_scenario(sc.model_copy(update={"seed": k}), policy=pol)
    pol.save_checkpoint(tmp_path / "ck")
    back = load_policy(name, dict(sc.policy.params) | {"learn": False, "checkpoint": str(tmp_path / "ck")})
    back.reset(np.random.default_rng(1), None, 8)
    x, agents = _features(), np.arange(64) % 8
    np.testing.assert_array_equal(pol.choose(x, agents), back.choose(x, agents))
    if name == "qlearning":
        np.testing.assert_array_equal(pol.table.q, back.table.q)
    # and whole runs: the frozen original and the reloaded copy act alike
    pol.learning = False
    a = run_scenario(sc.model_copy(update={"seed": 50}), policy=pol).result
    b = run_scenario(sc.model_copy(update={"seed": 50}), policy=back).result
    pd.testing.assert_frame_equal(a.jobs, b.jobs)
    np.testing.assert_array_equal(a.agent_returns, b.agent_returns)


def _curve(path):
    return pd.read_csv(path / "learning_curve.csv").drop(columns=["wall_s"])


@pytest.mark.parametrize("name", ["qlearning", "dqn"])
def test_training_is_deterministic_and_resumable(tmp_path, name):
    sc = scenario(**LOSING, policy={"name": name, "params": DQN_PARAMS if name == "dqn" else {}})
    train(sc, name, 4, tmp_path / "a", keep_transitions=1000)
    train(sc, name, 4, tmp_path / "b", keep_transitions=1000)
    train(sc, name, 2, tmp_path / "c", keep_transitions=1000)
    train(sc, name, 4, tmp_path / "c", resume=True, keep_transitions=1000)
    ref = _curve(tmp_path / "a")
    assert ref["decisions"].iloc[-1] > 0 and ref["updates"].iloc[-1] > 0
    for other in ("b", "c"):
        pd.testing.assert_frame_equal(ref, _curve(tmp_path / other))
        if name == "qlearning":
            qa = np.load(tmp_path / "a" / "checkpoint" / "qlearning.npz")["q"]
            np.testing.assert_array_equal(qa, np.load(tmp_path / other / "checkpoint" / "qlearning.npz")["q"])
        else:
            wa = torch.load(tmp_path / "a" / "checkpoint" / "dqn.pt", weights_only=True)["online"]
            wb = torch.load(tmp_path / other / "checkpoint" / "dqn.pt", weights_only=True)["online"]
            for k in wa:
                assert torch.equal(wa[k], wb[k]), k
    # another root seed trains differently
    train(scenario(**(LOSING | {"seed": 4}), policy={"name": name, "params": sc.policy.params}), name, 2,
          tmp_path / "d", keep_transitions=0)
    assert not _curve(tmp_path / "d").equals(ref.head(2))


def test_dqn_init_from_qlearning_transitions(tmp_path):
    sc = scenario(**LOSING)
    train(sc, "qlearning", 2, tmp_path / "ql", keep_transitions=5000)
    with np.load(tmp_path / "ql" / "transitions.npz") as z:
        n = z["action"].size
    assert n > 0
    pol = load_policy("dqn", DQN_PARAMS | {"init_from": str(tmp_path / "ql"), "init_steps": 50})
    run_scenario(sc, policy=pol)
    assert pol.pretrained_on == (str(tmp_path / "ql" / "transitions.npz"), n)
    assert pol.learner.steps_done >= 50
    assert pol.decisions >= n  # exploration continues from the pre-training's decisions


def test_checkpoint_errors(tmp_path, capsys):
    sc = scenario(**LOSING, policy={"name": "qlearning"})
    train(sc, "qlearning", 1, tmp_path / "ql", keep_transitions=0)
    ck = tmp_path / "ql" / "checkpoint"
    # a missing checkpoint
    with pytest.raises(PolicyError, match="checkpoint spec not found"):
        load_policy("dqn", {"checkpoint": str(tmp_path / "nowhere")}).reset(np.random.default_rng(0), None, 8)
    # a Q-learning checkpoint given to the DQN
    (ck / "dqn.json").write_text((ck / "qlearning.json").read_text())
    with pytest.raises(PolicyError, match="a checkpoint of policy 'qlearning'; expected 'dqn'"):
        load_policy("dqn", {"checkpoint": str(ck)}).reset(np.random.default_rng(0), None, 8)
    # a DQN checkpoint with another architecture
    pol = load_policy("dqn", DQN_PARAMS)
    run_scenario(sc, policy=pol)
    pol.save_checkpoint(tmp_path / "dq")
    with pytest.raises(PolicyError, match="does not match this policy's"):
        load_policy("dqn", {"hidden": [16], "checkpoint": str(tmp_path / "dq")}).reset(np.random.default_rng(0), None, 8)
    # an observation spec from another feature set
    spec = json.loads((tmp_path / "dq" / "dqn.json").read_text())
    spec["features"] = spec["features"][:-1]
    (tmp_path / "dq" / "dqn.json").write_text(json.dumps(spec))
    with pytest.raises(PolicyError, match="observation spec"):
        load_policy("dqn", DQN_PARAMS | {"checkpoint": str(tmp_path / "dq")}).reset(np.random.default_rng(0), None, 8)
    # the CLI: a missing checkpoint path is named, with what to give instead
    assert main(["run", "--policy", "dqn", "--checkpoint", str(tmp_path / "nope"), "-q", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "nope" in err and "train" in err
    assert not (tmp_path / "r").exists()  # nothing written


def test_train_option_errors(tmp_path):
    sc = scenario(**LOSING)
    with pytest.raises(DcsimError, match="--resume"):
        train(sc, "qlearning", 2, tmp_path / "x", resume=True)
    with pytest.raises(DcsimError, match="--init-from applies to --policy dqn"):
        train(sc, "qlearning", 2, tmp_path / "x", init_from=tmp_path)
    with pytest.raises(DcsimError, match="no transitions.npz"):
        train(sc, "dqn", 2, tmp_path / "x", init_from=tmp_path)
    with pytest.raises(PolicyError, match="allowed: qlearning, dqn"):
        train(sc, "always_on", 2, tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("keep me")
    with pytest.raises(DcsimError, match="not empty"):
        train(sc, "qlearning", 1, tmp_path / "full")
    assert (tmp_path / "full" / "f").read_text() == "keep me"


def test_cerebras_learner_outside_its_venv_is_a_clear_error(tmp_path):
    try:
        import cerebras.pytorch  # noqa: F401
        pytest.skip("cerebras.pytorch is importable here")
    except ImportError:
        pass
    with pytest.raises(PolicyError, match="setup_cerebras_venv"):
        train(scenario(**LOSING), "dqn", 1, tmp_path / "c", learner="cerebras-cpu")


def test_cli_train_writes_curves_checkpoint_and_evaluation(tmp_path, capsys):
    out = tmp_path / "t"
    sc_file = tmp_path / "s.yaml"
    import yaml

    from conftest import BASE
    data = json.loads(json.dumps(BASE))
    data.update({k: v for k, v in LOSING.items()})
    data["market"] = LOSING["market"]
    sc_file.write_text(yaml.safe_dump(data))
    assert main(["train", str(sc_file), "--policy", "qlearning", "--episodes", "3", "--out", str(out), "-q",
                 "--eval-seeds", "3", "--baselines", "always_on"]) == 0
    for f in ("learning_curve.csv", "learning_curve.png", "checkpoint/qlearning.npz", "checkpoint/qlearning.json",
              "transitions.npz", "train_state.json", "evaluation.csv", "evaluation.md", "evaluation_runs.csv"):
        assert (out / f).is_file(), f
    ev = pd.read_csv(out / "evaluation.csv")
    assert set(ev["arm"]) == {"qlearning", "always_on"}
    # `run --checkpoint` on the first evaluation seed reproduces the evaluation's run
    runs = pd.read_csv(out / "evaluation_runs.csv")
    first = runs[runs.arm == "qlearning"].iloc[0]
    assert main(["run", str(sc_file), "--policy", "qlearning", "--checkpoint", str(out / "checkpoint"), "-q",
                 "--seed", str(int(first["seed"])), "--out", str(tmp_path / "r")]) == 0
    assert "learn: false" in (tmp_path / "r" / "metadata.yaml").read_text()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["reward"]["per_gpu"] == pytest.approx(first["return_per_gpu"], rel=1e-12)


def test_learner_options_apply_to_the_dqn_only(tmp_path):
    with pytest.raises(DcsimError, match="--learner-option applies to --policy dqn"):
        train(scenario(**LOSING), "qlearning", 1, tmp_path / "x", learner_options={"num_csx": 1})
    with pytest.raises(PolicyError, match="with learner 'torch'.*num_csx"):  # no cluster settings for torch
        train(scenario(**LOSING), "dqn", 1, tmp_path / "y", learner_options={"num_csx": 1})
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_per_agent_tables_learn_separately_and_need_the_same_cluster(tmp_path):
    sc = scenario(**LOSING, policy={"name": "qlearning", "params": {"tables": "per_agent"}})
    pol = load_policy("qlearning", {"tables": "per_agent"})
    run_scenario(sc, policy=pol)
    assert pol.table.q.shape[0] == 8
    visits = pol.table.visits.sum(axis=(1, 2))
    assert (visits > 0).sum() >= 2 and len(set(visits.tolist())) > 1  # each agent's own experience
    pol.save_checkpoint(tmp_path / "ck")
    with pytest.raises(PolicyError, match="holds 8 tables; this scenario has 4 GPUs"):
        load_policy("qlearning", {"checkpoint": str(tmp_path / "ck")}).reset(np.random.default_rng(0), None, 4)
    back = load_policy("qlearning", {"checkpoint": str(tmp_path / "ck"), "learn": False})
    back.reset(np.random.default_rng(0), None, 8)
    np.testing.assert_array_equal(back.table.q, pol.table.q)
