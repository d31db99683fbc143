"""Serving runs end to end through the CLI (in a subprocess, writing to tmp_path): metrics printed, summary and
tables written, the shipped scenario runs on the shared traces, and says clearly when they are absent."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import SHARED_TRACES
from test_cli import dcsim_cli, ok, user_error

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "scenarios" / "llm_serving.yaml"
METRICS = ("success_rate", "denial_rate", "mean_quality", "slo_attainment", "revenue_usd", "energy_cost_usd",
           "profit_usd")


def _poisson_scenario(tmp_path):
    data = {"name": "svcli", "horizon_s": "20min", "cluster": {"gpus": 2},
            "workload": {"llm_serving": {
                "arrivals": {"source": "poisson", "rate_per_s": 1.5, "prompt_tokens": 200, "mean_output_tokens": 50},
                "max_batch": 4, "max_wait_s": 30,
                "configurations": str(REPO / "traces" / "serving_configs_example.csv")}},
            "policy": {"name": "policies.serving:DenyOverSlo"}}
    path = tmp_path / "svcli.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_serving_run_prints_and_writes_the_metrics(tmp_path):
    proc = ok(dcsim_cli("run", _poisson_scenario(tmp_path), "--out", "out", cwd=tmp_path))
    for label in ("success rate / denial rate", "mean quality", "SLO attainment ttft / e2e",
                  "revenue / energy cost / profit", "requests / wall-second"):
        assert label in proc.stdout, proc.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert all(k in summary for k in METRICS)
    requests = pd.read_csv(tmp_path / "out" / "requests.csv")
    steps = pd.read_csv(tmp_path / "out" / "price_steps.csv")
    q = summary["requests"]
    assert q["arrived"] == len(requests) > 0
    assert q["served"] == int((requests["status"] == "served").sum())
    assert summary["energy_cost_usd"] == pytest.approx(float(steps["energy_cost_usd"].sum()))
    meta = yaml.safe_load((tmp_path / "out" / "metadata.yaml").read_text(encoding="utf-8"))
    assert meta["scenario"]["workload"]["llm_serving"]["max_batch"] == 4


def test_validate_data_reads_the_serving_inputs(tmp_path):
    proc = ok(dcsim_cli("validate", "--data", _poisson_scenario(tmp_path), cwd=tmp_path))
    assert "workload.llm_serving.configurations" in proc.stdout


@pytest.mark.skipif(not SHARED_TRACES.is_dir(), reason="../shared/traces is absent")
def test_the_shipped_scenario_runs_on_the_shared_traces(tmp_path):
    proc = ok(dcsim_cli("run", SCENARIO, "--horizon", "10min", "--out", "out", cwd=tmp_path, timeout=300))
    assert "revenue / energy cost / profit" in proc.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["requests"]["arrived"] > 1000 and summary["energy_cost_usd"] > 0
    assert summary["data_quality"]["workload.llm_serving.price_usd_per_mwh"]["format"] == "caiso_oasis"


def test_the_shipped_scenario_says_when_the_shared_traces_are_absent(tmp_path):
    copy = tmp_path / "scenarios" / "llm_serving.yaml"
    copy.parent.mkdir()
    shutil.copy(SCENARIO, copy)  # its ../../shared/traces now points into tmp_path, where there is none
    proc = user_error(dcsim_cli("run", copy, "--out", "out", cwd=tmp_path))
    assert "workload.llm_serving.arrivals.path: an existing file" in proc.stderr
    assert "AzureLLMInferenceTrace_conv.csv, which does not exist" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_training_on_a_serving_scenario_is_refused_clearly(tmp_path):
    proc = user_error(dcsim_cli("train", _poisson_scenario(tmp_path), "--policy", "qlearning", "--episodes", "1",
                                "--out", "tr", cwd=tmp_path))
    assert "workload.llm_serving" in proc.stderr and "serving_q" in proc.stderr
    assert "qlearning and dqn do not choose serving configurations" in proc.stderr


def test_train_serving_q_writes_the_curve_checkpoint_and_paired_evaluation(tmp_path):
    proc = ok(dcsim_cli("train", _poisson_scenario(tmp_path), "--policy", "serving_q", "--episodes", "2",
                        "--eval-seeds", "2", "--out", "tr", "--quiet", cwd=tmp_path, timeout=300))
    out = tmp_path / "tr"
    for name in ("learning_curve.csv", "learning_curve.png", "checkpoint/serving_q.npz", "checkpoint/serving_q.json",
                 "train_state.json", "evaluation.md", "evaluation.csv", "evaluation_runs.csv"):
        assert (out / name).is_file(), name
    curve = pd.read_csv(out / "learning_curve.csv")
    assert curve["episode"].tolist() == [0, 1] and curve["seed"].tolist() == [0, 1]
    runs = pd.read_csv(out / "evaluation_runs.csv")
    arms = {"serving_q", "serving_full_kv", "serving_quality_floor", "serving_price_aware", "serving_deny_over_slo"}
    assert set(runs["arm"]) == arms
    assert sorted(runs["seed"].unique().tolist()) == [10_000, 10_001]  # held out: seed + --eval-offset
    table = pd.read_csv(out / "evaluation.csv").set_index("arm")
    # the paired difference is the mean over seeds of (learner − arm) profit, from the runs table
    wide = runs.pivot(index="seed", columns="arm", values="profit_usd")
    for arm in arms - {"serving_q"}:
        assert table.loc[arm, "learner_minus_arm"] == pytest.approx((wide["serving_q"] - wide[arm]).mean())
    assert "paired profit difference" in (out / "evaluation.md").read_text()
    # the checkpoint runs frozen through `run --checkpoint`
    ok(dcsim_cli("run", _poisson_scenario(tmp_path), "--policy", "policies.serving_learner:ServingQ",
                 "--checkpoint", out / "checkpoint", "--out", "ev", cwd=tmp_path))
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["policy"] == "serving_q"


def test_train_serving_q_refuses_what_it_does_not_support(tmp_path):
    proc = user_error(dcsim_cli("train", _poisson_scenario(tmp_path), "--policy", "serving_q", "--episodes", "1",
                                "--out", "tr", "--resume", cwd=tmp_path))
    assert "--resume: not supported when training the serving learner" in proc.stderr


def test_report_of_a_serving_run_shows_the_serving_figures(tmp_path):
    ok(dcsim_cli("run", _poisson_scenario(tmp_path), "--out", "sv", cwd=tmp_path))
    ok(dcsim_cli("report", "sv", cwd=tmp_path))
    page = (tmp_path / "sv" / "report.html").read_text(encoding="utf-8")
    for title in ("Configuration and denials against the energy price", "Latency against the SLOs",
                  "Price steps: energy, cost and decisions", "Token market: wallets over time",
                  "Token market: ledger"):
        assert title in page
    # the timeline, the latency CDFs and the token market's wallets and allocation heatmap
    assert page.count("<img") == 4
    summary = json.loads((tmp_path / "sv" / "summary.json").read_text())
    steps = pd.read_csv(tmp_path / "sv" / "price_steps.csv")
    assert page.count("<tr>") >= len(steps)  # one table row per price step (and the summary's rows)
    assert f"{summary['requests']['arrived']:,}".replace(",", "") in page.replace(",", "")
    # without the request table the sections say so instead of failing
    (tmp_path / "sv" / "requests.csv").unlink()
    ok(dcsim_cli("report", "sv", cwd=tmp_path))
    assert "requests.csv is not in this run directory" in (tmp_path / "sv" / "report.html").read_text()
