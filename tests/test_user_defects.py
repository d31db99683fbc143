"""Regression tests for the defects a new user hit (issue 15), end to end through the CLI where they are CLI
behaviour: every command runs in a subprocess and writes under ``tmp_path``."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from test_cli import REPO, TINY, dcsim_cli, ok, user_error

THRESHOLD = "policy.params.threshold_tokens_per_kwh"


def _metadata(out) -> dict:
    return yaml.safe_load((out / "metadata.yaml").read_text(encoding="utf-8"))


def _summary(out) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------ 1. policy parameters with --policy
@pytest.mark.parametrize("order", ["policy-first", "set-first"])
def test_run_applies_policy_params_given_with_policy_in_either_order(tmp_path, order):
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    flags = [["--policy", "price_threshold"], ["--set", f"{THRESHOLD}=4"]]
    if order == "set-first":
        flags.reverse()
    ok(dcsim_cli("run", "tiny.yaml", *flags[0], *flags[1], "--horizon", "30min", "--out", "o", "-q", cwd=tmp_path))
    meta = _metadata(tmp_path / "o")
    assert meta["scenario"]["policy"] == {"name": "price_threshold", "params": {"threshold_tokens_per_kwh": 4}}
    assert meta["policy"]["state"]["threshold_tokens_per_kwh"] == 4  # what the policy object was built with


def test_run_params_change_behaviour(tmp_path):
    """A threshold above every price never defers: the run equals always_on; the default threshold (2) lies below
    tiny's night price p0·e^κ, so it defers and throttles and spends fewer tokens."""
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    common = ["--horizon", "1h", "-q"]
    ok(dcsim_cli("run", "tiny.yaml", "--policy", "price_threshold", "--set", f"{THRESHOLD}=1000", "--out", "high",
                 *common, cwd=tmp_path))
    ok(dcsim_cli("run", "tiny.yaml", "--policy", "price_threshold", "--out", "default", *common, cwd=tmp_path))
    ok(dcsim_cli("run", "tiny.yaml", "--out", "always", *common, cwd=tmp_path))
    high, default, always = (_summary(tmp_path / d) for d in ("high", "default", "always"))
    assert high["tokens"]["spent"] == pytest.approx(always["tokens"]["spent"], rel=1e-12)
    assert default["tokens"]["spent"] < high["tokens"]["spent"]


def test_unknown_policy_parameter_is_an_error_naming_it_and_the_allowed_ones(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    for flags in (["--policy", "price_threshold", "--set", "policy.params.lowpower=2"],
                  ["--set", "policy.params.lowpower=2", "--policy", "price_threshold"]):
        proc = user_error(dcsim_cli("run", "tiny.yaml", *flags, "--out", "o", "-q", cwd=tmp_path))
        assert "policy 'price_threshold': unknown parameter(s) 'lowpower'" in proc.stderr
        assert "allowed: threshold_tokens_per_kwh, throttle_to_min_cap" in proc.stderr
        assert not (tmp_path / "o").exists()
    proc = user_error(dcsim_cli("run", "tiny.yaml", "--set", "policy.params.lowpower=2", "-q", cwd=tmp_path))
    assert "policy 'always_on': unknown parameter(s) 'lowpower'; allowed: none" in proc.stderr


def test_compare_applies_policy_params_to_the_policies_that_take_them(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    ok(dcsim_cli("compare", "tiny.yaml", "--policies", "always_on", "price_threshold", "--seed-list", "0",
                 "--set", f"{THRESHOLD}=1000", "--horizon", "1h", "-j", "1", "--out", "c", "-q", cwd=tmp_path))
    meta = yaml.safe_load((tmp_path / "c" / "comparison.yaml").read_text(encoding="utf-8"))
    assert meta["arms"]["price_threshold"]["params"] == {"threshold_tokens_per_kwh": 1000}
    assert meta["arms"]["always_on"]["params"] == {}
    runs = pd.read_csv(tmp_path / "c" / "runs.csv").set_index(["policy", "metric"])["value"]
    ok(dcsim_cli("run", "tiny.yaml", "--policy", "price_threshold", "--horizon", "1h", "--out", "default", "-q",
                 cwd=tmp_path))
    # with the parameter, price_threshold never defers (same as always_on); with its default it spends less
    assert runs[("price_threshold", "tokens.spent")] == pytest.approx(runs[("always_on", "tokens.spent")], rel=1e-12)
    assert _summary(tmp_path / "default")["tokens"]["spent"] < runs[("price_threshold", "tokens.spent")]


def test_compare_rejects_a_parameter_no_compared_policy_takes(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    proc = user_error(dcsim_cli("compare", "tiny.yaml", "--policies", "always_on", "price_threshold", "--seeds", "1",
                                "--set", "policy.params.lowpower=2", "--out", "c", "-q", cwd=tmp_path))
    assert "no compared policy takes the parameter 'lowpower'" in proc.stderr
    assert "price_threshold: threshold_tokens_per_kwh, throttle_to_min_cap" in proc.stderr
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("order", ["policy-first", "set-first"])
def test_train_applies_policy_params_given_with_policy(tmp_path, order):
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    flags = [["--policy", "qlearning"], ["--set", "policy.params.alpha=0.37"]]
    if order == "set-first":
        flags.reverse()
    ok(dcsim_cli("train", "tiny.yaml", *flags[0], *flags[1], "--episodes", "1", "--horizon", "20min", "--out", "t",
                 "-q", cwd=tmp_path))
    state = json.loads((tmp_path / "t" / "train_state.json").read_text(encoding="utf-8"))
    assert state["state"]["alpha"] == 0.37
    proc = user_error(dcsim_cli("train", "tiny.yaml", "--policy", "qlearning", "--set", "policy.params.alfa=0.3",
                                "--episodes", "1", "--out", "t2", "-q", cwd=tmp_path))
    assert "unknown parameter(s) 'alfa'" in proc.stderr and "alpha" in proc.stderr


# ------------------------------------------------------------------ 3. the same run on every CPU
def _avx512_features() -> list[str]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return [k for k, on in __cpu_features__.items() if on and (k.startswith("AVX512") or k == "X86_V4")]


def test_a_run_does_not_depend_on_numpys_simd_kernels(tmp_path):
    """Lesson 2's Kelly column did not reproduce on another CPU: pvlib's NumPy exp/cos run AVX-512 kernels that
    differ from the scalar ones in the last bit, and Kelly's water-filling turned that bit into different events.
    The same run with NumPy's AVX-512 kernels switched off must write the same tables, byte for byte."""
    features = _avx512_features()
    if not features:
        pytest.skip("this CPU has no AVX-512 kernels to switch off")
    args = ["run", REPO / "scenarios" / "teach_market.yaml", "--set", "market.mechanism=kelly", "--horizon", "10h",
            "-q"]
    ok(dcsim_cli(*args, "--out", "simd", cwd=tmp_path))
    ok(dcsim_cli(*args, "--out", "scalar", cwd=tmp_path, env={"NPY_DISABLE_CPU_FEATURES": " ".join(features)}))
    for table in ("rounds.csv", "timeseries.csv", "jobs.csv", "ledger.csv"):
        assert (tmp_path / "simd" / table).read_bytes() == (tmp_path / "scalar" / table).read_bytes(), table


# ------------------------------------------------------------------ 2. renewable share, and with the battery
NIGHT_BATTERY = TINY + """\
supply:
  battery: {capacity_wh: 2000, max_charge_w: 1000, max_discharge_w: 1000, initial_soc: 1.0}
"""


def test_renewable_share_excludes_the_battery_and_both_are_reported(tmp_path):
    """No renewable source at all: the renewable share is 0, while the battery (charged at the start) served part
    of the energy, which only the renewable + battery share counts."""
    (tmp_path / "night.yaml").write_text(NIGHT_BATTERY, encoding="utf-8")
    proc = ok(dcsim_cli("run", "night.yaml", "--out", "o", cwd=tmp_path))
    s = _summary(tmp_path / "o")
    e = s["energy_j"]
    assert e["renewable"] == 0 and e["battery"] > 0
    assert s["renewable_share"] == 0.0
    assert s["renewable_battery_share"] == pytest.approx(e["battery"] / e["consumed"], rel=1e-12)
    assert "renewable_coverage" not in s
    line = next(l for l in proc.stdout.splitlines() if l.startswith("renewable share / with battery"))
    assert line.split()[-6:] == ["0.0%", "/", f"{s['renewable_battery_share']:.1%}", "of", "energy", "consumed"]


def test_renewable_share_is_renewable_energy_over_consumption_with_sun(tmp_path):
    ok(dcsim_cli("run", REPO / "scenarios" / "example_jobs.yaml", "--horizon", "1h", "--out", "o", "-q", cwd=tmp_path))
    s = _summary(tmp_path / "o")
    e = s["energy_j"]
    assert e["renewable"] > 0
    assert s["renewable_share"] == pytest.approx(e["renewable"] / e["consumed"], rel=1e-12)
    assert s["renewable_battery_share"] == pytest.approx((e["renewable"] + e["battery"]) / e["consumed"], rel=1e-12)
    assert s["renewable_share"] <= s["renewable_battery_share"] <= 1


# ------------------------------------------------------------------ 4. the example trace at the scenario's scale
def test_example_jobs_are_valued_at_the_scenarios_rate_and_worth_their_energy(tmp_path):
    """traces/example_jobs.csv's job values follow scenarios/example_jobs.yaml's value_tokens_per_gpu_s (within the
    generator's ±20 % for deferrable / urgent jobs), so in a run the job value credited is the same order as the
    tokens spent on energy, and the reward per GPU is below the tokens a GPU could ever receive."""
    scenario = yaml.safe_load((REPO / "scenarios" / "example_jobs.yaml").read_text(encoding="utf-8"))
    rate = scenario["workload"]["value_tokens_per_gpu_s"]
    jobs = pd.read_csv(REPO / "traces" / "example_jobs.csv")
    per_gpu_s = jobs["value_tokens"] / jobs["work_gpu_s"]
    assert per_gpu_s.between(0.79 * rate, 1.21 * rate).all(), per_gpu_s.describe()
    ok(dcsim_cli("run", REPO / "scenarios" / "example_jobs.yaml", "--out", "o", "-q", cwd=tmp_path))
    s = _summary(tmp_path / "o")
    credited = pd.read_csv(tmp_path / "o" / "ledger.csv").query("kind == 'credit_job_value'")["tokens"].sum()
    spent = s["tokens"]["spent"]
    assert 0.2 < credited / spent < 5, (credited, spent)
    gpus = scenario["cluster"]["gpus"]
    market = scenario["market"]
    receivable_per_gpu = market["initial_tokens"] + market["endowment_tokens"] * 3 + credited / gpus
    assert abs(s["reward"]["per_gpu"]) < receivable_per_gpu


# ------------------------------------------------------------------ 5. wallets reconcile; learn_grid's unserved energy
def test_wallet_plot_series_reconcile_held_including_job_value(tmp_path):
    """The wallet plot draws minted, job value credited, debited (and burned when non-zero) from the ledger; at every
    round, minted + credited − debited − burned is the held tokens the round table logged."""
    from dcsim.config import load_scenario
    from dcsim.plots import pyplot, wallet_flows, wallets_figure
    from dcsim.runner import run_scenario

    run = run_scenario(load_scenario(REPO / "scenarios" / "example_jobs.yaml", ["horizon_s=2h"]))
    fig = wallets_figure(run.result.rounds, run.result.ledger)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert "credited: job value (cumulative)" in lines and "burned (cumulative)" not in lines  # no burn here
    flows = wallet_flows(run.result.ledger)
    assert flows["credited"].iloc[-1] > 0
    at_rounds = pd.merge_asof(run.result.rounds[["time_s", "tokens_held"]], flows, on="time_s")
    assert (at_rounds["minted"] + at_rounds["credited"] - at_rounds["debited"] - at_rounds["burned"]).to_numpy() \
        == pytest.approx(at_rounds["tokens_held"].to_numpy(), abs=1e-9)
    plotted = lines["credited: job value (cumulative)"].get_ydata()
    assert plotted[-1] == pytest.approx(flows["credited"].iloc[-1])
    assert flows["held"].iloc[-1] == pytest.approx(run.summary["tokens"]["held"], abs=1e-9)
    pyplot().close(fig)


def test_learn_grid_unserved_energy_is_the_battery_emptying_inside_a_round(tmp_path):
    """learn_grid reports unserved energy with no rationed round: a round sells the battery's full discharge rate
    while it holds charge, the battery empties before the next round, and the rest of the round's demand exceeds
    the 6 kW grid cap (docs/model.md, "Unserved energy without rationing")."""
    ok(dcsim_cli("run", REPO / "scenarios" / "learn_grid.yaml", "--out", "o", "-q", cwd=tmp_path, timeout=300))
    s = _summary(tmp_path / "o")
    ts = pd.read_csv(tmp_path / "o" / "timeseries.csv")
    rounds = pd.read_csv(tmp_path / "o" / "rounds.csv")
    assert s["energy_j"]["unserved"] > 0 and not rounds["rationed"].any()
    grew = ts["unserved_j"].diff() > 1e-6
    assert grew.any()
    cap_w = yaml.safe_load((REPO / "scenarios" / "learn_grid.yaml").read_text())["supply"]["grid"]["import_cap_w"]
    for k in grew[grew].index:
        before, after = ts.loc[k - 1], ts.loc[k]
        assert before["battery_soc_j"] > 0 and after["battery_soc_j"] == 0  # the battery ran empty in between
        shortfall_w = before["power_w"] - before["renewable_w"] - cap_w  # once empty: demand beyond grid + sun
        assert shortfall_w > 0
        unserved_j = after["unserved_j"] - before["unserved_j"]
        assert unserved_j <= shortfall_w * (after["time_s"] - before["time_s"]) * (1 + 1e-9)


# ------------------------------------------------------------------ 6. smaller ones
@pytest.mark.parametrize("command", ["list", "schema"])
def test_piping_into_head_is_quiet(tmp_path, command):
    env = dict(__import__("os").environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(f"{sys.executable} -m dcsim {command} | head -1", shell=True, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_option_errors_name_the_option_not_the_quickstart_file(tmp_path):
    for args, option in ((["--set", "cluster.gpus=-3"], "--set cluster.gpus=-3"), (["--horizon", "5x"], "--horizon 5x")):
        proc = user_error(dcsim_cli("run", *args, "-q", cwd=tmp_path))
        assert proc.stderr.startswith("error: command line: 1 problem(s) in the options")
        assert f"  - {option}: " in proc.stderr and "quickstart.yaml" not in proc.stderr
    (tmp_path / "tiny.yaml").write_text(TINY.replace("gpus: 2,", "gpus: 0,"), encoding="utf-8")
    proc = user_error(dcsim_cli("run", "tiny.yaml", "--horizon", "5x", "-q", cwd=tmp_path))
    assert "(and 1 in tiny.yaml)" in proc.stderr and "  - tiny.yaml: cluster.gpus" in proc.stderr


def test_train_wrote_line_names_the_evaluation(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    proc = ok(dcsim_cli("train", "tiny.yaml", "--policy", "qlearning", "--episodes", "1", "--horizon", "20min",
                        "--eval-seeds", "1", "--baselines", "always_on", "--out", "t", cwd=tmp_path, timeout=300))
    wrote = next(l for l in proc.stdout.splitlines() if l.startswith("wrote "))
    assert "evaluation.md" in wrote and (tmp_path / "t" / "evaluation.md").is_file()


def test_wait_histogram_is_log_scaled_and_power_legend_omits_zero_sources():
    from dcsim.config import load_scenario
    from dcsim.plots import power_figure, pyplot, queue_figure
    from dcsim.runner import run_scenario

    run = run_scenario(load_scenario(REPO / "scenarios" / "example_jobs.yaml", ["horizon_s=2h"]))
    fig = queue_figure(run.result.timeseries, run.result.jobs)
    assert fig.axes[1].get_xscale() == "log"
    pyplot().close(fig)
    fig = power_figure(run.result.timeseries)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    e = run.summary["energy_j"]
    assert ("unserved" in labels) == (e["unserved"] > 1e-3) and ("battery" in labels) == (e["battery"] > 1e-3)
    assert "renewable" in labels and "grid" in labels
    pyplot().close(fig)


def test_ci_whiskers_stop_at_zero_for_non_negative_metrics():
    from dcsim.compare import ci_whiskers

    table = pd.DataFrame({"arm": ["a", "a"], "metric": ["jobs.deadline_misses", "reward.per_gpu"],
                          "mean": [1.0, 1.0], "ci_low": [-2.0, -2.0], "ci_high": [4.0, 4.0]}).set_index(["arm", "metric"])
    assert ci_whiskers(table, ["a"], "jobs.deadline_misses").tolist() == [[1.0], [3.0]]  # down to 0, not -2
    assert ci_whiskers(table, ["a"], "reward.per_gpu").tolist() == [[3.0], [3.0]]  # a reward may be negative


def test_compare_report_has_no_empty_header_row(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    ok(dcsim_cli("compare", "tiny.yaml", "--policies", "always_on", "race_to_idle", "--seeds", "2", "-j", "1",
                 "--horizon", "30min", "--out", "c", "-q", cwd=tmp_path))
    page = (tmp_path / "c" / "report.html").read_text(encoding="utf-8")
    assert "<tr><th></th>" not in page and "<th></th><th></th>" not in page


def test_readme_samples_are_what_the_commands_print(tmp_path):
    """README's summary table and error sample are the output of real runs (regenerate them when they change)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    proc = ok(dcsim_cli("run", "--seed", "1", "--out", "o", cwd=tmp_path, timeout=300))
    table = [l for l in proc.stdout.splitlines() if "  " in l and not l.startswith("events / wall-second")]
    assert table and all(f"\n{line}\n" in readme for line in table), "README's summary sample is stale"
    (tmp_path / "bad.yaml").write_text("name: bad\ncluster:\n  gpus: 2\n  gpu_modle: H100\n", encoding="utf-8")
    err = user_error(dcsim_cli("run", "bad.yaml", cwd=tmp_path)).stderr.strip()
    assert f"$ python -m dcsim run bad.yaml\n{err}\n" in readme, "README's error sample is stale"


def test_power_legend_of_a_run_without_renewables_lists_only_what_delivered(tmp_path):
    from dcsim.config import load_scenario
    from dcsim.plots import power_figure, pyplot
    from dcsim.runner import run_scenario

    (tmp_path / "night.yaml").write_text(NIGHT_BATTERY, encoding="utf-8")
    run = run_scenario(load_scenario(tmp_path / "night.yaml"))
    fig = power_figure(run.result.timeseries)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["battery", "grid"]
    pyplot().close(fig)
