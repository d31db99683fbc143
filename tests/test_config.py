"""Tests of scenario validation: defaults, durations, error messages, paths, overrides and the JSON schema."""
from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dcsim.config import (
    BatteryConfig,
    ClusterConfig,
    Constant,
    GpuChoice,
    GridConfig,
    MarketConfig,
    OutputConfig,
    PolicyConfig,
    Poisson,
    PowerOverrides,
    Scenario,
    SeriesSource,
    SolarConfig,
    SupplyConfig,
    Transitions,
    WorkloadConfig,
    apply_overrides,
    json_schema,
    load_scenario,
    parse_scenario,
    read_scenario_mapping,
    scenario_to_dict,
)
from dcsim.errors import ScenarioError

REPO = Path(__file__).resolve().parents[1]

MINIMAL = {
    "cluster": {"gpus": 4},
    "workload": {
        "arrivals": {"process": "poisson", "rate_per_s": 0.01},
        "duration_s": {"distribution": "constant", "value": 60},
    },
}

# Every section present, so that a key can be injected anywhere. Maps a dotted section to its model.
FULL = {
    "name": "full",
    "start": "2023-06-21T00:00:00Z",
    "horizon_s": 3600,
    "cluster": {"gpus": 4, "gpu_model": "A100", "power": {"gamma": 2.0}, "transitions": {"wake_s": 10}},
    "workload": {
        "arrivals": {"process": "poisson", "rate_per_s": 0.01},
        "duration_s": {"distribution": "constant", "value": 60},
        "gpus_per_job": {"values": [1, 2], "weights": [1, 1]},
    },
    "supply": {
        "solar": {"capacity_w": 1000, "latitude": 37.0, "longitude": -122.0},
        "battery": {"capacity_wh": 100, "max_charge_w": 10, "max_discharge_w": 10},
        "grid": {"carbon_g_per_kwh": {"constant": 100}, "price_usd_per_mwh": {"constant": 30}},
    },
    "market": {"interval_s": 300},
    "policy": {"name": "always_on"},
    "outputs": {"plots": False},
}
SECTIONS = {
    "": Scenario,
    "cluster": ClusterConfig,
    "cluster.power": PowerOverrides,
    "cluster.transitions": Transitions,
    "workload": WorkloadConfig,
    "workload.arrivals": Poisson,
    "workload.duration_s": Constant,
    "workload.gpus_per_job": GpuChoice,
    "supply": SupplyConfig,
    "supply.solar": SolarConfig,
    "supply.battery": BatteryConfig,
    "supply.grid": GridConfig,
    "supply.grid.carbon_g_per_kwh": SeriesSource,
    "supply.grid.price_usd_per_mwh": SeriesSource,
    "market": MarketConfig,
    "policy": PolicyConfig,
    "outputs": OutputConfig,
}
# Discriminator values: the error-path code treats them specially (see the union-tag path test below).
UNION_TAGS = {"poisson", "mmpp", "diurnal", "exponential", "lognormal", "constant", "uniform", "pareto"}


def with_changes(base: dict, dotted: str, value) -> dict:
    """A deep copy of ``base`` with ``value`` set at a dotted key (creating nothing: the parent must exist)."""
    data = copy.deepcopy(base)
    node = data
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return data


def problems_of(data, **kwargs) -> list[tuple[str, object, str]]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, **kwargs)
    return info.value.problems


def write_yaml(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ defaults


def test_minimal_scenario_parses_with_the_documented_defaults():
    sc = parse_scenario(copy.deepcopy(MINIMAL))
    assert sc.name == "scenario"
    assert sc.description == ""
    assert sc.start == datetime(2023, 6, 21, tzinfo=timezone.utc)
    assert sc.horizon_s == 86400.0
    assert sc.warmup_s == 0.0
    assert sc.seed == 0
    # cluster
    assert sc.cluster.gpus == 4
    assert sc.cluster.gpu_model == "H100"
    assert sc.cluster.initial_state == "idle"
    t = sc.cluster.transitions
    assert (t.wake_s, t.wake_j, t.sleep_s, t.sleep_j) == (30.0, 3000.0, 10.0, 500.0)
    assert (t.boot_s, t.boot_j, t.shutdown_s, t.shutdown_j) == (180.0, 30000.0, 30.0, 2000.0)
    assert sc.cluster.power_spec() == {"tdp_w": 700.0, "idle_w": 78.8, "min_cap_w": 200.0, "sleep_w": 10.0,
                                       "off_w": 0.0, "gamma": 2.5, "utilisation": 1.0}
    # workload
    w = sc.workload
    assert w.trace is None
    assert w.arrivals == Poisson(process="poisson", rate_per_s=0.01)
    assert w.gpus_per_job.values == [1] and w.gpus_per_job.weights is None
    assert w.deadline_slack is None
    assert w.deferrable_fraction == 0.0
    assert w.value_tokens_per_gpu_s == 0.01
    assert w.clock_sensitivity == 1.0
    assert w.max_queue is None
    assert w.drop_expired is True
    # supply: grid only, with constant carbon and price
    s = sc.supply
    assert (s.solar, s.wind, s.power_trace, s.battery) == (None, None, None, None)
    assert s.grid.import_cap_w is None
    assert s.grid.carbon_g_per_kwh.constant == 250.0 and s.grid.carbon_g_per_kwh.path is None
    assert s.grid.price_usd_per_mwh.constant == 50.0 and s.grid.price_usd_per_mwh.path is None
    assert s.fill == "error"
    # market
    m = sc.market
    assert m.mechanism == "posted_price"
    assert m.interval_s == 300.0
    assert m.hysteresis_fraction == 0.2
    assert m.base_price_tokens_per_kwh == 1.0
    assert m.scarcity_kappa == 2.0
    assert m.initial_tokens == 10.0
    assert m.endowment_tokens == 1.0
    assert m.endowment_interval_s == 3600.0
    assert m.carry_over_cap_tokens is None
    # policy and outputs
    assert sc.policy.name == "always_on" and sc.policy.params == {}
    assert sc.outputs == OutputConfig(jobs_table=True, rounds_table=True, timeseries_table=True, plots=False)


def test_power_spec_of_a_datasheet_model_uses_its_figures_and_overrides():
    sc = parse_scenario(with_changes(MINIMAL, "cluster", {"gpus": 2, "gpu_model": "A100", "power": {"tdp_w": 350}}))
    spec = sc.cluster.power_spec()
    assert spec["tdp_w"] == 350.0  # overridden
    assert spec["idle_w"] == 60.0 and spec["min_cap_w"] == 100.0  # A100 datasheet


def test_start_is_converted_to_utc_and_must_carry_a_zone():
    sc = parse_scenario(with_changes(MINIMAL, "start", "2023-06-21T00:00:00-07:00"))
    assert sc.start == datetime(2023, 6, 21, 7, tzinfo=timezone.utc)
    assert sc.start.tzinfo == timezone.utc
    [(field, value, message)] = problems_of(with_changes(MINIMAL, "start", "2023-06-21T00:00:00"))
    assert field == "start"
    assert value == "2023-06-21T00:00:00"
    assert "timezone-aware" in message


def test_every_problem_is_reported_at_once():
    data = with_changes(MINIMAL, "cluster", {"gpus": 0, "gpu_model": "B200"})
    data["seed"] = -1
    problems = problems_of(data)
    assert sorted(p[0] for p in problems) == ["cluster.gpu_model", "cluster.gpus", "seed"]


def test_missing_required_sections_are_named():
    problems = problems_of({"name": "x"})
    assert sorted(p[0] for p in problems) == ["cluster", "workload"]
    assert all(p[2] == "Field required" for p in problems)


def test_a_scenario_that_is_not_a_mapping_is_refused():
    [(field, value, message)] = problems_of([1, 2])
    assert (field, value) == ("", [1, 2])
    assert "mapping" in message


# ------------------------------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    "text, seconds",
    [("90s", 90.0), ("15min", 900.0), ("6h", 21600.0), ("2d", 172800.0), ("1.5h", 5400.0), ("120", 120.0),
     (120, 120.0), (0.5, 0.5), (" 10 min ", 600.0), ("1e3s", 1000.0)],
)
def test_durations_accept_numbers_and_units(text, seconds):
    data = copy.deepcopy(MINIMAL)
    data["horizon_s"] = text
    data["market"] = {"interval_s": text, "endowment_interval_s": text}
    data["cluster"]["transitions"] = {"wake_s": text}
    sc = parse_scenario(data)
    assert sc.horizon_s == seconds
    assert sc.market.interval_s == seconds
    assert sc.market.endowment_interval_s == seconds
    assert sc.cluster.transitions.wake_s == seconds


@pytest.mark.parametrize("text", ["6 hours", "6hr", "h", "1w", "-5s", "", "five minutes", "6h30min"])
def test_malformed_durations_are_refused_with_the_units_allowed(text):
    [(field, value, message)] = problems_of(with_changes(MINIMAL, "horizon_s", text))
    assert field == "horizon_s"
    assert value == text
    assert "s, min, h or d" in message


@pytest.mark.parametrize("text, fragment", [("0s", "≥ 1e-06 and ≤ 1e+09"), (0, "≥ 1e-06 and ≤ 1e+09"), ("-1", "s, min, h or d")])
def test_a_horizon_must_be_positive(text, fragment):
    [(field, value, message)] = problems_of(with_changes(MINIMAL, "horizon_s", text))
    assert field == "horizon_s"
    assert fragment in message


def test_warmup_may_be_zero_but_must_be_shorter_than_the_horizon():
    assert parse_scenario({**MINIMAL, "horizon_s": "1h", "warmup_s": "0s"}).warmup_s == 0.0
    [(field, _, message)] = problems_of({**MINIMAL, "horizon_s": "1h", "warmup_s": "60min"})
    assert field == ""
    assert "warmup_s must be shorter than horizon_s" in message


@settings(max_examples=200, deadline=None)
@given(value=st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False),  # 1e4 d < MAX_TIME_S
       unit=st.sampled_from([("s", 1.0), ("min", 60.0), ("h", 3600.0), ("d", 86400.0)]))
def test_any_positive_number_with_a_unit_parses_exactly(value, unit):
    suffix, factor = unit
    sc = parse_scenario({**MINIMAL, "horizon_s": f"{value!r}{suffix}"})
    assert sc.horizon_s == value * factor


# ------------------------------------------------------------------------------------------ unknown keys


def test_full_fixture_is_valid():
    sc = parse_scenario(copy.deepcopy(FULL))
    assert sc.name == "full" and sc.supply.solar is not None


def test_misspelt_key_names_the_dotted_path_value_and_what_to_do():
    data = copy.deepcopy(MINIMAL)
    data["cluster"]["gpu_modle"] = "A100"
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data)
    assert info.value.problems == [
        ("cluster.gpu_modle", "A100",
         "unknown key (did you mean 'gpu_model'?); allowed here: gpus, gpu_model, power, transitions, initial_state"),
    ]
    text = str(info.value)
    assert "cluster.gpu_modle" in text and "'A100'" in text and "unknown key" in text


def test_misspelt_key_error_lists_the_allowed_keys_of_its_section():
    data = copy.deepcopy(MINIMAL)
    data["cluster"]["gpu_modle"] = "A100"
    [(field, value, message)] = problems_of(data)
    assert "gpu_model" in message
    assert "initial_state" in message


@settings(max_examples=150, deadline=None)
@given(section=st.sampled_from(sorted(SECTIONS)),
       key=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
       value=st.one_of(st.integers(-5, 5), st.text(max_size=5), st.booleans(), st.none()))
def test_any_unknown_key_anywhere_is_rejected_with_its_dotted_path(section, key, value):
    model = SECTIONS[section]
    if key in model.model_fields or key in UNION_TAGS:
        return
    dotted = f"{section}.{key}" if section else key
    problems = problems_of(with_changes(FULL, dotted, value))
    [(field, got, message)] = problems
    assert (field, got) == (dotted, value)
    assert message.startswith("unknown key")
    assert message.endswith("allowed here: " + ", ".join(model.model_fields))


@pytest.mark.parametrize(
    "data, expected_field",
    [
        (with_changes(MINIMAL, "workload.arrivals.poisson", 1), "workload.arrivals.poisson"),
        (with_changes(MINIMAL, "workload.duration_s.constant", 3), "workload.duration_s.constant"),
        ({"name": "workload", "cluster": {"gpus": 2}}, "workload"),
    ],
)
def test_error_paths_are_right_when_keys_or_values_look_like_union_tags(data, expected_field):
    assert [p[0] for p in problems_of(data)] == [expected_field]


def test_policy_params_and_trace_options_are_free_form(tmp_path):
    # They are checked by the policy and the trace loader, which know their keyword arguments.
    sc = parse_scenario(with_changes(MINIMAL, "policy", {"name": "x.y:Z", "params": {"anything": [1, 2]}}))
    assert sc.policy.params == {"anything": [1, 2]}
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("arrival_s,gpus,work_gpu_s\n0,1,10\n", encoding="utf-8")
    data = _trace_scenario(str(jobs))
    data["workload"]["trace"]["options"] = {"time_scale": 0.5, "whatever": "x"}
    assert parse_scenario(data).workload.trace.options == {"time_scale": 0.5, "whatever": "x"}


# ------------------------------------------------------------------------------------------ discriminators


def test_wrong_arrival_process_names_the_field_and_lists_the_processes():
    data = with_changes(MINIMAL, "workload.arrivals.process", "poison")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data)
    assert info.value.problems == [
        ("workload.arrivals.process", "poison", "must be one of 'poisson', 'mmpp', 'diurnal'"),
    ]


def test_wrong_distribution_names_the_field_and_lists_the_distributions():
    [(field, value, message)] = problems_of(with_changes(MINIMAL, "workload.duration_s.distribution", "weibull"))
    assert (field, value) == ("workload.duration_s.distribution", "weibull")
    for name in ("exponential", "lognormal", "constant", "uniform", "pareto"):
        assert f"'{name}'" in message


def test_missing_discriminator_is_named():
    data = with_changes(MINIMAL, "workload.arrivals", {"rate_per_s": 0.01})
    [(field, value, message)] = problems_of(data)
    assert field == "workload.arrivals"
    assert message == "needs the key 'process' saying which kind it is"


def test_errors_inside_a_union_member_use_the_path_the_user_wrote():
    data = with_changes(MINIMAL, "workload.arrivals.rate_per_s", -1)
    [(field, value, message)] = problems_of(data)
    assert (field, value) == ("workload.arrivals.rate_per_s", -1)
    assert "> 0" in message


def test_wrong_literal_lists_the_allowed_values():
    [(field, value, message)] = problems_of(with_changes(MINIMAL, "cluster.gpu_model", "B200"))
    assert (field, value) == ("cluster.gpu_model", "B200")
    assert message == "must be one of 'V100', 'A100', 'H100' or 'custom'"


# ------------------------------------------------------------------------------------------ paths


def _trace_scenario(path: str) -> dict:
    return {"name": "trace", "cluster": {"gpus": 2},
            "workload": {"trace": {"format": "csv", "path": path}}}


def test_relative_trace_path_resolves_against_the_scenario_folder_not_the_cwd(tmp_path, monkeypatch):
    jobs = tmp_path / "project" / "data" / "jobs.csv"
    jobs.parent.mkdir(parents=True)
    jobs.write_text("arrival_s,gpus,work_gpu_s\n0,1,10\n", encoding="utf-8")
    write_yaml(tmp_path / "project" / "scenarios" / "s.yaml", _trace_scenario("../data/jobs.csv"))
    # A decoy where "../data/jobs.csv" would point from the current directory.
    decoy = tmp_path / "elsewhere" / "data" / "jobs.csv"
    decoy.parent.mkdir(parents=True)
    decoy.write_text("arrival_s,gpus,work_gpu_s\n0,1,10\n", encoding="utf-8")
    (tmp_path / "elsewhere" / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere" / "cwd")
    sc = load_scenario(tmp_path / "project" / "scenarios" / "s.yaml")
    assert sc.workload.trace.path == jobs.resolve()
    assert sc.workload.trace.path.is_absolute()
    # A scenario path given relative to the cwd resolves the same way.
    assert load_scenario(Path("../../project/scenarios/s.yaml")).workload.trace.path == jobs.resolve()
    # The resolved scenario records the absolute path.
    assert scenario_to_dict(sc)["workload"]["trace"]["path"] == str(jobs.resolve())


def test_missing_trace_file_is_reported_with_the_resolved_path(tmp_path, monkeypatch):
    scenario_file = write_yaml(tmp_path / "scenarios" / "s.yaml", _trace_scenario("../data/nope.csv"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScenarioError) as info:
        load_scenario(scenario_file)
    resolved = (tmp_path / "data" / "nope.csv").resolve()
    assert info.value.path == scenario_file
    [(field, value, message)] = info.value.problems
    assert field == "workload.trace.path"
    assert value == "../data/nope.csv"
    assert message == f"an existing file (resolved to {resolved}, which does not exist)"
    assert str(scenario_file) in str(info.value)


@pytest.mark.parametrize("dotted", ["supply.solar.weather_epw", "supply.grid.carbon_g_per_kwh.path"])
def test_every_data_path_resolves_against_the_scenario_folder(tmp_path, dotted):
    data = copy.deepcopy(FULL)
    if dotted.startswith("supply.grid"):
        data["supply"]["grid"]["carbon_g_per_kwh"] = {}
    data = with_changes(data, dotted, "missing.file")
    scenario_file = write_yaml(tmp_path / "sub" / "s.yaml", data)
    with pytest.raises(ScenarioError) as info:
        load_scenario(scenario_file)
    [(field, value, message)] = info.value.problems
    assert field == dotted
    assert str((tmp_path / "sub" / "missing.file").resolve()) in message


def test_an_in_memory_scenario_needs_absolute_paths(tmp_path):
    [(field, value, message)] = problems_of(_trace_scenario("jobs.csv"))
    assert field == "workload.trace.path"
    assert "relative path needs a scenario file" in message
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("arrival_s,gpus,work_gpu_s\n0,1,10\n", encoding="utf-8")
    assert parse_scenario(_trace_scenario(str(jobs))).workload.trace.path == jobs.resolve()
    # ... or an explicit base folder.
    assert parse_scenario(_trace_scenario("jobs.csv"), base_dir=tmp_path).workload.trace.path == jobs.resolve()


def test_a_missing_scenario_file_is_a_scenario_error(tmp_path):
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path / "nope.yaml")
    assert info.value.problems == [("", str(tmp_path / "nope.yaml"), "an existing scenario file")]


# ------------------------------------------------------------------------------------------ overrides


def test_overrides_set_nested_keys_with_yaml_typed_values():
    data = copy.deepcopy(MINIMAL)
    apply_overrides(data, [
        "cluster.gpus=3",
        "cluster.gpu_model=A100",
        "horizon_s=6h",
        "outputs.plots=true",
        "supply.grid.import_cap_w=null",
        "workload.gpus_per_job.values=[1, 2, 4]",
        "policy.params={threshold: 2.5, strict: yes}",
        "description=a=b",
        " seed = 7 ",
    ])
    assert data["cluster"] == {"gpus": 3, "gpu_model": "A100"}
    assert data["horizon_s"] == "6h"
    assert data["outputs"] == {"plots": True}
    assert data["supply"] == {"grid": {"import_cap_w": None}}
    assert data["workload"]["gpus_per_job"] == {"values": [1, 2, 4]}
    assert data["policy"] == {"params": {"threshold": 2.5, "strict": True}}
    assert data["description"] == "a=b"
    assert data["seed"] == 7 and isinstance(data["seed"], int)
    sc = parse_scenario(data)
    assert sc.cluster.gpus == 3 and sc.horizon_s == 21600.0 and sc.outputs.plots is True


def test_override_replaces_a_whole_section_when_given_a_mapping():
    data = copy.deepcopy(MINIMAL)
    apply_overrides(data, ["workload.arrivals={process: diurnal, mean_rate_per_s: 0.02}"])
    sc = parse_scenario(data)
    assert sc.workload.arrivals.process == "diurnal"
    assert sc.workload.arrivals.amplitude == 0.5


def test_override_without_equals_sign_is_refused():
    with pytest.raises(ScenarioError) as info:
        apply_overrides(copy.deepcopy(MINIMAL), ["cluster.gpus"])
    assert info.value.problems == [("--set", "cluster.gpus", "expected KEY=VALUE, e.g. cluster.gpus=128")]


def test_override_inside_a_scalar_is_refused():
    with pytest.raises(ScenarioError) as info:
        apply_overrides(copy.deepcopy(MINIMAL), ["cluster.gpus.count=3"])
    [(field, value, message)] = info.value.problems
    assert (field, value) == ("cluster.gpus.count", 3)
    assert "'gpus'" in message and "not a mapping" in message


def test_override_with_malformed_yaml_is_refused():
    with pytest.raises(ScenarioError) as info:
        apply_overrides(copy.deepcopy(MINIMAL), ["cluster.gpus=[1, 2"])
    [(field, value, message)] = info.value.problems
    assert (field, value) == ("cluster.gpus", "[1, 2")
    assert message.startswith("a YAML value")


def test_load_scenario_applies_overrides_before_validation(tmp_path):
    path = write_yaml(tmp_path / "s.yaml", MINIMAL)
    sc = load_scenario(path, ["cluster.gpus=3", "market.interval_s=1min", "market.endowment_interval_s=10min"])
    assert sc.cluster.gpus == 3
    assert (sc.market.interval_s, sc.market.endowment_interval_s) == (60.0, 600.0)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, ["cluster.gpu_modle=A100"])
    assert info.value.path == path
    assert [p[0] for p in info.value.problems] == ["cluster.gpu_modle"]


# ------------------------------------------------------------------------------------------ cluster / market rules


def test_custom_gpu_model_requires_its_power_figures():
    [(field, value, message)] = problems_of(with_changes(MINIMAL, "cluster", {"gpus": 2, "gpu_model": "custom"}))
    assert field == "cluster"
    assert message == "gpu_model 'custom' needs power.tdp_w, power.idle_w, power.min_cap_w"
    [(field, value, message)] = problems_of(
        with_changes(MINIMAL, "cluster", {"gpus": 2, "gpu_model": "custom", "power": {"tdp_w": 500}}))
    assert message == "gpu_model 'custom' needs power.idle_w, power.min_cap_w"


def test_custom_gpu_model_with_its_figures_is_valid():
    sc = parse_scenario(with_changes(MINIMAL, "cluster", {
        "gpus": 2, "gpu_model": "custom", "power": {"tdp_w": 500, "idle_w": 50, "min_cap_w": 150}}))
    assert sc.cluster.power_spec() == {"tdp_w": 500.0, "idle_w": 50.0, "min_cap_w": 150.0, "sleep_w": 10.0,
                                       "off_w": 0.0, "gamma": 2.5, "utilisation": 1.0}


@pytest.mark.parametrize("power, fragment", [
    ({"tdp_w": 500, "idle_w": 600, "min_cap_w": 550}, "idle_w < tdp_w"),
    ({"tdp_w": 500, "idle_w": 50, "min_cap_w": 40}, "idle_w <= min_cap_w <= tdp_w"),
])
def test_power_figures_must_be_ordered(power, fragment):
    [(field, _, message)] = problems_of(with_changes(MINIMAL, "cluster", {"gpus": 2, "gpu_model": "custom", "power": power}))
    assert field == "cluster"
    assert fragment in message


@pytest.mark.parametrize("interval, endowment, ok", [
    ("5min", "1h", True), ("5min", "5min", True), (0.1, 0.3, True), ("5min", "12min", False),
    ("5min", "1min", False), ("1h", "90min", False),
])
def test_endowment_interval_must_be_a_whole_multiple_of_the_round_interval(interval, endowment, ok):
    data = with_changes(MINIMAL, "market", {"interval_s": interval, "endowment_interval_s": endowment})
    if ok:
        parse_scenario(data)
        return
    [(field, value, message)] = problems_of(data)
    assert field == "market"
    assert "must be a whole multiple of interval_s" in message


def test_endowment_error_states_both_intervals_in_seconds():
    [(_, _, message)] = problems_of(with_changes(MINIMAL, "market", {"interval_s": "5min", "endowment_interval_s": "12min"}))
    assert message.startswith("endowment_interval_s (720) must be a whole multiple of interval_s (300)")


def test_transition_energy_needs_transition_time():
    [(field, _, message)] = problems_of(with_changes(MINIMAL, "cluster.transitions", {"wake_s": 0, "wake_j": 10}))
    assert field == "cluster.transitions"
    assert message == "wake_j > 0 needs wake_s > 0 (energy is spread over the transition time)"


def test_workload_needs_exactly_one_source():
    [(field, _, message)] = problems_of(with_changes(MINIMAL, "workload", {"duration_s": {"distribution": "constant", "value": 1}}))
    assert field == "workload"
    assert message == "give exactly one of 'arrivals' (synthetic), 'trace' or 'llm_serving'"


# ------------------------------------------------------------------------------------------ YAML files


def test_malformed_yaml_names_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ncluster:\n  gpus: 2\n   gpu_model: A100\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        read_scenario_mapping(path)
    assert info.value.path == path
    [(where, value, message)] = info.value.problems
    assert where == "line 4, column 13"
    assert value == "mapping values are not allowed here"
    assert message == "valid YAML"
    assert str(path) in str(info.value) and "line 4, column 13" in str(info.value)


def test_unclosed_bracket_names_where_the_parser_stopped(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("cluster: {gpus: 2\nworkload: x\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    [(where, _, _)] = info.value.problems
    assert where.startswith("line 2, column ")


def test_empty_file_reads_as_empty_mapping_and_fails_on_required_sections(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n", encoding="utf-8")
    assert read_scenario_mapping(path) == {}
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert sorted(p[0] for p in info.value.problems) == ["cluster", "workload"]


def test_non_utf8_file_is_refused(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ScenarioError) as info:
        read_scenario_mapping(path)
    assert info.value.problems[0][2] == "a UTF-8 text file"


def test_resolved_scenario_round_trips_through_yaml():
    sc = parse_scenario(copy.deepcopy(FULL))
    dumped = scenario_to_dict(sc)
    again = parse_scenario(yaml.safe_load(yaml.safe_dump(dumped)))
    assert again == sc


# ------------------------------------------------------------------------------------------ JSON schema


def test_json_schema_is_json_with_the_top_level_sections():
    text = json.dumps(json_schema())
    schema = json.loads(text)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "dcsim scenario"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"name", "description", "start", "horizon_s", "warmup_s", "seed",
                                         "cluster", "workload", "supply", "market", "policy", "reward", "decision_timing",
                                         "outputs", "facility"}
    assert schema["required"] == ["cluster", "workload"]
    # Nested models forbid unknown keys too, so an editor flags misspellings.
    assert schema["$defs"]["ClusterConfig"]["additionalProperties"] is False
    assert "gpu_model" in schema["$defs"]["ClusterConfig"]["properties"]


def test_json_schema_is_a_valid_draft_2020_12_schema():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(json_schema())


def test_json_schema_accepts_the_quickstart_scenario():
    jsonschema = pytest.importorskip("jsonschema")
    data = read_scenario_mapping(REPO / "dcsim" / "builtin" / "quickstart.yaml")
    data = json.loads(json.dumps(data, default=str))  # YAML timestamps as strings, as an editor sees them
    errors = sorted(".".join(map(str, e.absolute_path))
                    for e in jsonschema.Draft202012Validator(json_schema()).iter_errors(data))
    assert errors == []
