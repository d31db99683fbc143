"""Fuzz suite of bad scenario input and CLI misuse: each is a clear error naming the field and value, never a traceback.

The numeric fields are found by walking the pydantic models from ``Scenario`` down, so a field added to the
schema is fuzzed without touching this file; a new section with required fields needs an entry in ``EXAMPLES``
(``test_every_section_of_the_schema_is_reached`` fails until it has one), and a section valid only beside another
(failures of tree elements beside the tree) an entry in ``SIBLINGS``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Union

import annotated_types
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AfterValidator, BaseModel
from pydantic.fields import FieldInfo

from dcsim import config as C
from dcsim.config import load_scenario, parse_scenario
from dcsim.errors import ScenarioError
from dcsim.facility.config import (
    ComponentFailures,
    CoolingConfig,
    FailuresConfig,
    RenewableTrips,
    TopologyConfig,
    WeatherConfig,
)
from dcsim.serving import config as SV

from test_cli import dcsim_cli, ok, user_error

REPO = Path(__file__).resolve().parents[1]
EXISTING_FILE = str(REPO / "traces" / "example_jobs.csv")  # any existing file satisfies a path field's check
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

BASE = {
    "name": "fuzz", "start": "2023-06-21T00:00:00Z", "horizon_s": 3600, "seed": 0,
    "cluster": {"gpus": 2, "gpu_model": "H100"},
    "workload": {"arrivals": {"process": "poisson", "rate_per_s": 0.002},
                 "duration_s": {"distribution": "constant", "value": 300}},
    "market": {"initial_tokens": 1000},
}

#: A valid instance of every section that has required fields or is a variant (placed where the schema puts it).
EXAMPLES: dict[type[BaseModel], dict] = {
    C.Poisson: {"process": "poisson", "rate_per_s": 0.002},
    C.Mmpp: {"process": "mmpp", "rates_per_s": [0.001, 0.01], "mean_sojourn_s": [600, 300]},
    C.Diurnal: {"process": "diurnal", "mean_rate_per_s": 0.002},
    C.Exponential: {"distribution": "exponential", "mean": 300},
    C.LogNormal: {"distribution": "lognormal", "mean": 300},
    C.Constant: {"distribution": "constant", "value": 300},
    C.Uniform: {"distribution": "uniform", "low": 100, "high": 500},
    C.Pareto: {"distribution": "pareto", "shape": 2.5, "scale": 100},
    C.TraceWorkload: {"format": "csv", "path": EXISTING_FILE},
    C.SolarConfig: {"capacity_w": 2000, "latitude": 37.4, "longitude": -121.9},
    C.WindConfig: {"wind_speed_file": EXISTING_FILE},
    C.PowerTraceConfig: {"path": EXISTING_FILE},
    C.BatteryConfig: {"capacity_wh": 1000, "max_charge_w": 500, "max_discharge_w": 500},
    C.FixedStep: {"fixed_step": 600},
    C.SeriesSource: {"constant": 100.0},
    CoolingConfig: {"weather": {"dry_bulb_c": 25.0}},
    WeatherConfig: {"dry_bulb_c": 25.0},
    # a tree that fits BASE's 2 GPUs: one GPU per node, both nodes in one rack, one PDU, one feed
    TopologyConfig: {"gpus_per_node": 1, "nodes_per_rack": 2, "racks_per_pdu": 1, "pdus_per_feed": 1},
    # failures of every kind; node/PDU/feed failures and the scheduled outage (of rack0) need the tree: SIBLINGS
    FailuresConfig: {"gpu": {"mtbf_s": 86400, "mttr_s": 3600}, "node": {"mtbf_s": 86400, "mttr_s": 3600},
                     "scheduled": [{"element": "rack0", "start_s": 600, "duration_s": 300}],
                     "renewable_trips": {"mean_time_between_s": 7200, "mean_duration_s": 600}},
    ComponentFailures: {"mtbf_s": 86400, "mttr_s": 3600},
    RenewableTrips: {"mean_time_between_s": 7200, "mean_duration_s": 600},
    SV.LlmServingConfig: {"arrivals": {"source": "poisson", "rate_per_s": 0.1}},
    SV.AzureTraceArrivals: {"source": "azure_trace", "path": EXISTING_FILE},
    SV.InvocationArrivals: {"source": "invocations", "path": EXISTING_FILE},
    SV.PoissonArrivals: {"source": "poisson", "rate_per_s": 0.1},
}

#: Sections valid only beside another one: placing the section also places these siblings (unless already there).
SIBLINGS: dict[type[BaseModel], dict] = {
    FailuresConfig: {"topology": EXAMPLES[TopologyConfig]},
}

#: Left out of the walk: battery dispatch is refused until it is wired into runs (dcsim/facility/config.py), so no
#: base holding it is valid; tests/test_facility_config.py checks its fields.
NOT_WALKED = {"FacilityConfig.battery"}

#: Numbers with no upper bound in the schema, and why that is safe (every other number has both bounds).
UNBOUNDED_ABOVE = {
    "PowerOverrides.gamma": "only f**gamma with f in [0, 1]: a large gamma underflows to idle power, never overflows",
    "Scenario.seed": "SeedSequence takes any non-negative integer",
}


# ------------------------------------------------------------------------------------------- the schema walk
def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _members(tp: Any) -> list[Any]:
    tp = _strip(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [m for a in typing.get_args(tp) for m in _members(a)]
    return [tp]


def _constraints(tp: Any, info: FieldInfo | None = None) -> dict[str, float]:
    """Bounds declared on a leaf (``gt``, ``ge``, ``lt``, ``le``) read from the annotation and the Field."""
    found: dict[str, float] = {}
    metas = list(info.metadata) if info is not None else []
    todo = [tp]
    while todo:
        t = todo.pop()
        if typing.get_origin(t) is Annotated:
            todo.append(typing.get_args(t)[0])
            for m in typing.get_args(t)[1:]:
                metas.extend(m.metadata if isinstance(m, FieldInfo) else [m])
        elif typing.get_origin(t) in (Union, types.UnionType):
            todo.extend(a for a in typing.get_args(t) if a is not type(None))
    for m in metas:
        for name in ("gt", "ge", "lt", "le"):
            if isinstance(m, getattr(annotated_types, name.capitalize())):
                found[name] = float(getattr(m, name))
    return found


class Leaf(typing.NamedTuple):
    """One numeric field (or the first item of a numeric list/tuple field) and a valid scenario that holds it."""

    path: tuple[str, ...]  #: keys down to the field; an item adds "0"
    owner: str  #: "Model.field"
    integer: bool
    bounds: dict[str, float]
    base: dict

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def _place(base: dict, path: tuple[str, ...], model: type[BaseModel]) -> dict:
    data = copy.deepcopy(base)
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    for key, value in SIBLINGS.get(model, {}).items():
        node.setdefault(key, copy.deepcopy(value))
    example = EXAMPLES.get(model)
    if example is not None:
        node[path[-1]] = copy.deepcopy(example)
        if model in (C.TraceWorkload, SV.LlmServingConfig):  # exactly one of arrivals, trace and llm_serving
            node.pop("arrivals", None)
            node.pop("duration_s", None)
    elif not isinstance(node.get(path[-1]), dict):
        node[path[-1]] = {}
    return data


def _walk(model: type[BaseModel] = C.Scenario, path: tuple[str, ...] = (), base: dict | None = None):
    """Yield ``(kind, ...)`` for every leaf and section under ``model``: ("leaf", Leaf) and ("section", model, path, base)."""
    base = copy.deepcopy(BASE) if base is None else base
    yield "section", model, path, base
    for name, info in model.model_fields.items():
        if f"{model.__name__}.{name}" in NOT_WALKED:
            continue
        here = path + (name,)
        numeric = [m for m in _members(info.annotation) if m in (int, float)]
        items = [m for m in _members(info.annotation) if typing.get_origin(m) in (list, tuple)]
        if numeric:
            yield "leaf", Leaf(here, f"{model.__name__}.{name}", numeric[0] is int,
                               _constraints(info.annotation, info), base)
        elif items and _strip(typing.get_args(items[0])[0]) in (int, float):
            item_tp = typing.get_args(items[0])[0]
            yield "leaf", Leaf(here + ("0",), f"{model.__name__}.{name}", _strip(item_tp) is int,
                               _constraints(item_tp), base)
        for sub in _members(info.annotation):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                yield from _walk(sub, here, _place(base, here, sub))


WALK = list(_walk())
LEAVES = [w[1] for w in WALK if w[0] == "leaf"]
SECTIONS = [(w[1], w[2], w[3]) for w in WALK if w[0] == "section"]
VARIANTS = {m for model, _, _ in SECTIONS for info in model.model_fields.values()
            for m in _members(info.annotation)
            if len([a for a in _members(info.annotation) if a is not type(None)]) > 1
            and isinstance(m, type) and issubclass(m, BaseModel)}


def _is_data_path(info: FieldInfo) -> bool:
    """Whether a field is a path resolved against the scenario file (``DataPath``, possibly ``| None``)."""
    metas = list(info.metadata)
    todo = [info.annotation]
    while todo:
        t = todo.pop()
        if typing.get_origin(t) is Annotated:
            metas.extend(typing.get_args(t)[1:])
            todo.append(typing.get_args(t)[0])
        elif typing.get_origin(t) in (Union, types.UnionType):
            todo.extend(typing.get_args(t))
    return any(isinstance(m, AfterValidator) and m.func is C._resolve_path for m in metas)


DATA_PATHS = [(path + (name,), base) for model, path, base in SECTIONS
              for name, info in model.model_fields.items() if _is_data_path(info)]


def with_value(base: dict, path: tuple[str, ...], value: Any) -> dict:
    """``base`` with the leaf at ``path`` set to ``value`` (an item path keeps the list's other items)."""
    data = copy.deepcopy(base)
    node: Any = data
    for key in path[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if path[-1].isdigit():
        if not isinstance(node, list):  # a list/tuple field its base leaves at the default: write it out
            parent = data
            for key in path[:-2]:
                parent = parent.setdefault(key, {})
            node = parent[path[-2]] = [1, 1]
        node[int(path[-1])] = value
    else:
        node[path[-1]] = value
    return data


def problems(data: dict) -> list[tuple[str, Any, str]]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data)
    assert "Traceback" not in str(info.value)
    return info.value.problems


def _same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def the_problem_at(data: dict, dotted: str, value: Any) -> str:
    """The message of the one problem reported at ``dotted`` with ``value``."""
    found = problems(data)
    at = [(f, v, m) for f, v, m in found if f == dotted]
    assert at, f"no problem at {dotted}; got {found}"
    field, got, message = at[0]
    assert _same(got, value), (got, value)
    return message


def _bound_texts(leaf: Leaf) -> list[str]:
    return [f"{v:g}" for v in leaf.bounds.values()]


# ------------------------------------------------------------------------------------------- the walk itself
def test_every_section_of_the_schema_is_reached_and_every_base_is_valid():
    reached = {model for model, _, _ in SECTIONS}
    everything = {m for mod in (C, SV) for m in vars(mod).values()
                  if isinstance(m, type) and issubclass(m, C._Model) and m is not C._Model}
    assert everything <= reached, f"not reached from Scenario: {everything - reached}"
    for model, path, base in SECTIONS:
        parse_scenario(base)  # a section needing an example it lacks fails here
    dotted = {leaf.dotted for leaf in LEAVES}
    for known in ("horizon_s", "cluster.gpus", "workload.arrivals.rates_per_s.0", "supply.battery.capacity_wh",
                  "market.scarcity_kappa", "supply.grid.price_usd_per_mwh.constant", "decision_timing.fixed_step",
                  "reward.latency_per_s", "supply.wind.hub_height_m", "workload.duration_s.sigma",
                  "facility.topology.gpus_per_node", "facility.topology.feeds", "facility.topology.limits.rack_w",
                  "facility.failures.node.mtbf_s", "facility.failures.feed.failure_shape",
                  "facility.failures.renewable_trips.duration_shape"):
        assert known in dotted
    assert len(LEAVES) >= 80
    assert {p for p, _ in DATA_PATHS} >= {("workload", "trace", "path"), ("supply", "wind", "wind_speed_file"),
                                          ("facility", "topology", "graphml")}


def test_every_number_in_the_schema_is_bounded_on_both_sides():
    for leaf in LEAVES:
        assert {"gt", "ge"} & set(leaf.bounds), f"{leaf.owner} has no lower bound"
        if leaf.owner not in UNBOUNDED_ABOVE:
            assert {"lt", "le"} & set(leaf.bounds), f"{leaf.owner} has no upper bound; add one or explain it"


# ------------------------------------------------------------------------------------------- non-finite numbers
NON_FINITE = [math.inf, -math.inf, math.nan, "inf", "-inf", "nan", "NaN", "Infinity", "+inf"]


@FUZZ
@given(leaf=st.sampled_from(LEAVES), value=st.sampled_from(NON_FINITE))
def test_non_finite_numbers_are_refused_naming_the_field_and_value(leaf, value):
    message = the_problem_at(with_value(leaf.base, leaf.path, value), leaf.dotted, value)
    assert ("finite" in message or "whole number" in message), message
    for text in _bound_texts(leaf):
        assert text in message, (leaf.owner, message)


@pytest.mark.parametrize("text", [".inf", "-.inf", ".nan", ".NaN", ".Inf"])
def test_yaml_infinity_and_nan_are_refused_in_every_numeric_field(text, tmp_path):
    path = tmp_path / "s.yaml"
    for leaf in LEAVES:
        data = with_value(leaf.base, leaf.path, "@@")
        path.write_text(yaml.safe_dump(data).replace("'@@'", text), encoding="utf-8")
        with pytest.raises(ScenarioError) as info:
            load_scenario(path)
        assert info.value.path == path
        fields = [f for f, _, _ in info.value.problems]
        assert leaf.dotted in fields, (leaf.dotted, info.value.problems)
        value = yaml.safe_load(text)
        assert f"(got {value!r})" in str(info.value)


# ------------------------------------------------------------------------------------------- out of range
@st.composite
def out_of_range(draw):
    """A leaf and a number just or far outside one of its bounds."""
    leaf = draw(st.sampled_from(LEAVES))
    b = leaf.bounds
    sides = []
    if "gt" in b or "ge" in b:
        lo = b.get("gt", b.get("ge"))
        top = lo if "gt" in b else lo - max(1e-9, abs(lo) * 1e-9)
        sides.append(st.floats(min_value=-1e308, max_value=top, allow_nan=False))
        sides.append(st.sampled_from([top, -1.0 if top >= -1.0 else top, -1e308]))
    if "lt" in b or "le" in b:
        hi = b.get("lt", b.get("le"))
        bottom = hi if "lt" in b else hi + max(1e-9, abs(hi) * 1e-9)
        sides.append(st.floats(min_value=bottom, max_value=1e308, allow_nan=False))
        sides.append(st.sampled_from([bottom, 1e308]))
    value = draw(st.one_of(sides))
    if leaf.integer:
        value = math.floor(value) if value < b.get("gt", b.get("ge", 0.0)) else math.ceil(value)
    return leaf, value


@FUZZ
@given(case=out_of_range())
def test_numbers_outside_their_range_are_refused_with_the_range(case):
    leaf, value = case
    message = the_problem_at(with_value(leaf.base, leaf.path, value), leaf.dotted, value)
    assert message.startswith("must be a "), message
    for text in _bound_texts(leaf):
        assert text in message, (leaf.owner, message)


@FUZZ
@given(leaf=st.sampled_from(LEAVES),
       value=st.one_of(st.sampled_from(["abc", "", "1,5", "12 kW", [], [1, 2], {"a": 1}, True, False]),
                       st.text(alphabet="xyz!?", min_size=1, max_size=5)))
def test_wrong_types_in_numeric_fields_are_refused_naming_the_field(leaf, value):
    found = problems(with_value(leaf.base, leaf.path, value))
    fields = [f for f, _, _ in found]
    assert leaf.dotted in fields, (leaf.dotted, found)


# ------------------------------------------------------------------------------------------- counts and cross-field
@FUZZ
@given(rate=st.floats(1e-6, 1e9), horizon=st.floats(1.0, C.MAX_TIME_S))
def test_expected_arrivals_beyond_what_a_run_can_hold_are_refused(rate, horizon):
    data = with_value(with_value(BASE, ("workload", "arrivals", "rate_per_s"), rate), ("horizon_s",), horizon)
    data["market"]["interval_s"] = horizon  # keep the round count out of it
    data["market"]["endowment_interval_s"] = horizon
    if rate * horizon <= 1e8:
        parse_scenario(data)
    else:
        message = the_problem_at(data, "workload.arrivals.rate_per_s", rate)
        assert "1e+08" in message and f"{rate * horizon:.3g}" in message


@FUZZ
@given(interval=st.floats(1e-6, 1e3), horizon=st.floats(1.0, 1e9))
def test_more_market_rounds_than_a_run_can_hold_are_refused(interval, horizon):
    data = copy.deepcopy(BASE)
    data.update(horizon_s=horizon)
    data["workload"]["arrivals"]["rate_per_s"] = 1e-6
    data["market"].update(interval_s=interval, endowment_interval_s=interval)
    if horizon / interval <= 1e8:
        parse_scenario(data)
    else:
        assert "market rounds" in the_problem_at(data, "market.interval_s", interval)


@FUZZ
@given(first=st.floats(0, 1e6), second=st.floats(1e-3, 1e6))
def test_inconsistent_pairs_are_refused(first, second):
    pairs = [  # (data, consistent?, a fragment of the error)
        ({**BASE, "warmup_s": first, "horizon_s": second}, first < second, "warmup_s must be shorter"),
        ({**BASE, "market": {"interval_s": second, "endowment_interval_s": second, "round_jitter_s": first}},
         first < second, "round_jitter_s must be shorter"),
    ]
    if first >= 1e-6:
        pairs.append((with_value(BASE, ("workload", "duration_s"),
                                 {"distribution": "uniform", "low": first, "high": second}),
                      second >= first, "high must be >= low"))
    for data, consistent, fragment in pairs:
        if consistent:
            parse_scenario(data)
        else:
            assert any(fragment in m for _, _, m in problems(data))


@FUZZ
@given(wake_s=st.floats(0, 1e3), wake_j=st.floats(0, 1e15))
def test_a_transition_may_not_draw_more_power_than_the_bound(wake_s, wake_j):
    data = with_value(BASE, ("cluster", "transitions"), {"wake_s": wake_s, "wake_j": wake_j})
    if wake_s == 0 and wake_j > 0:
        assert any("needs wake_s > 0" in m for _, _, m in problems(data))
    elif wake_j > 1e15 * wake_s:
        assert "W during the transition" in the_problem_at(data, "cluster.transitions.wake_s", wake_s)
    else:
        parse_scenario(data)


# ------------------------------------------------------------------------------------------- keys and files
@FUZZ
@given(section=st.sampled_from(SECTIONS), key=st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True))
def test_unknown_keys_in_any_section_name_the_dotted_path(section, key):
    model, path, base = section
    if key in model.model_fields:
        return
    data = copy.deepcopy(base)
    node = data
    for part in path:
        node = node[part]
    node[key] = 1
    dotted = ".".join(path + (key,))
    message = the_problem_at(data, dotted, 1)
    assert message.startswith("unknown key")
    assert ", ".join(model.model_fields) in message


@FUZZ
@given(section=st.sampled_from([s for s in SECTIONS if s[1]]), value=st.sampled_from([5, "abc", [1, 2], True, 0.5]))
def test_a_section_given_a_scalar_or_list_names_the_section(section, value):
    model, path, base = section
    found = problems(with_value(base, path, value))
    at = [m for f, _, m in found if f == ".".join(path)]
    assert at, (path, found)
    if model not in VARIANTS:  # a plain section: its keys are listed (a variant's union says which kinds)
        assert any(", ".join(model.model_fields) in m for m in at), at


@pytest.mark.parametrize("path, base", DATA_PATHS, ids=[".".join(p) for p, _ in DATA_PATHS])
def test_a_missing_data_file_names_the_field_and_the_resolved_path(path, base, tmp_path):
    scenario_file = tmp_path / "s.yaml"
    scenario_file.write_text(yaml.safe_dump(with_value(base, path, "no/such.csv")), encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(scenario_file)
    [(field, value, message)] = info.value.problems
    assert (field, value) == (".".join(path), "no/such.csv")
    assert str((tmp_path / "no" / "such.csv").resolve()) in message


# ------------------------------------------------------------------------------------------- the CLI (subprocess)
TINY = {**BASE, "horizon_s": 1800, "workload": {**BASE["workload"], "arrivals": {"process": "poisson", "rate_per_s": 0.01}}}


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    """A finished run directory and the hashes of its files, which no failing command may change."""
    folder = tmp_path_factory.mktemp("cli")
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY), encoding="utf-8")
    ok(dcsim_cli("run", "tiny.yaml", "--out", "run", "-q", cwd=folder))
    return folder, _hashes(folder / "run")


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


CLI_MISUSE = [  # (arguments after `run tiny.yaml --out run --overwrite -q`, fragments the error must hold)
    (["--set", "cluster.gpuz=4"], ["cluster.gpuz", "unknown key", "did you mean 'gpus'"]),
    (["--set", "cluster.gpus"], ["--set", "KEY=VALUE", "'cluster.gpus'"]),
    (["--set", "=3"], ["--set", "dotted field name"]),
    (["--set", "market.scarcity_kappa=.inf"], ["market.scarcity_kappa", "inf", "≤ 100"]),
    (["--seed", "abc"], ["--seed", "invalid int value: 'abc'"]),
    (["--horizon", "-1h"], ["horizon_s", "'-1h'", "duration"]),
    (["--policy", "no_such_policy"], ["unknown policy 'no_such_policy'", "always_on"]),
    (["--set", "market.mechanism=auction"], ["market.mechanism", "'auction'", "posted_price"]),
]


@pytest.mark.parametrize("args, fragments", CLI_MISUSE, ids=[" ".join(a) for a, _ in CLI_MISUSE])
def test_cli_misuse_is_a_clear_error_and_leaves_the_earlier_run_alone(args, fragments, earlier_run):
    folder, before = earlier_run
    proc = user_error(dcsim_cli("run", "tiny.yaml", "--out", "run", "--overwrite", "-q", *args, cwd=folder))
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr)
    assert _hashes(folder / "run") == before


@pytest.mark.parametrize("override, field, fragment", [
    ("cluster.gpus=abc", "cluster.gpus", "whole number ≥ 1"),
    ("supply.grid.price_usd_per_mwh.constant=nan", "supply.grid.price_usd_per_mwh.constant", "finite"),
    ("seed=-1", "seed", "≥ 0"),
    ("horizon_s=1e12", "horizon_s", "≤ 1e+09"),
    ("market.vcg_quantum_w=.inf", "market.vcg_quantum_w", "≤ 1e+15"),
])
def test_set_overrides_with_bad_numbers_name_the_field(override, field, fragment, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(TINY), encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, [override])
    [(got_field, value, message)] = info.value.problems
    assert got_field == field and fragment in message
    assert f"(got {value!r})" in str(info.value)


def test_cli_compare_and_validate_misuse(earlier_run):
    folder, before = earlier_run
    proc = user_error(dcsim_cli("compare", "tiny.yaml", "--policies", "always_on", "--seeds", "0", "--out", "run",
                                "--overwrite", "-q", cwd=folder))
    assert "--seeds 0" in proc.stderr
    proc = user_error(dcsim_cli("compare", "tiny.yaml", "--policies", "always_on", "nope", "--seeds", "1", "--out", "run",
                                "--overwrite", "-q", cwd=folder))
    assert "unknown policy 'nope'" in proc.stderr
    bad = folder / "bad.yaml"
    bad.write_text(yaml.safe_dump(TINY).replace("horizon_s: 1800", "horizon_s: .inf"), encoding="utf-8")
    proc = user_error(dcsim_cli("validate", "bad.yaml", cwd=folder))
    assert "bad.yaml" in proc.stderr and "horizon_s" in proc.stderr and "inf" in proc.stderr
    assert _hashes(folder / "run") == before


def test_a_finite_run_summary_holds_a_number_wherever_one_is_defined(earlier_run):
    """summary.json of the earlier run and of a boundary run (tokens, prices, carbon, job value and reward weights
    at their upper bounds) holds no null beyond the metrics this scenario's structure leaves undefined."""
    folder, _ = earlier_run
    summary = json.loads((folder / "run" / "summary.json").read_text())
    assert summary["jobs"]["completed"] > 0
    _assert_defined(summary)
    boundary = copy.deepcopy(TINY)
    boundary["market"].update(initial_tokens=C.MAX_QUANTITY, endowment_tokens=C.MAX_QUANTITY)
    boundary["workload"]["value_tokens_per_gpu_s"] = C.MAX_QUANTITY
    boundary["reward"] = {k: C.MAX_QUANTITY for k in C.RewardConfig.model_fields if k != "team_fraction"}
    boundary["supply"] = {"grid": {"price_usd_per_mwh": {"constant": C.MAX_QUANTITY},
                                   "carbon_g_per_kwh": {"constant": C.MAX_QUANTITY}}}
    (folder / "boundary.yaml").write_text(yaml.safe_dump(boundary), encoding="utf-8")
    ok(dcsim_cli("run", "boundary.yaml", "--out", "boundary", "-q", cwd=folder))
    summary = json.loads((folder / "boundary" / "summary.json").read_text())
    assert summary["jobs"]["completed"] > 0
    _assert_defined(summary)


@pytest.mark.parametrize("mechanism", ["posted_price", "kelly"])
def test_the_largest_scarcity_exponent_still_gives_a_summary_of_numbers(mechanism):
    from dcsim.runner import run_scenario

    data = copy.deepcopy(TINY)
    data["market"].update(mechanism=mechanism, scarcity_kappa=C.MAX_SCARCITY_KAPPA, initial_tokens=C.MAX_QUANTITY)
    _assert_defined(json.loads(json.dumps(run_scenario(parse_scenario(data)).summary)))


def _assert_defined(summary: dict) -> None:
    """No null in a summary but where the metric is undefined: no renewable supply (coverage of nothing, its
    correlation), price-blind bids (welfare ratio), fewer than three priced rounds (volatility), or no job
    completed (slowdowns)."""
    allowed = {"renewable_utilisation", "token_price.corr_with_renewable_fraction", "market.welfare_ratio_mean"}
    if summary["jobs"]["completed"] == 0:
        allowed |= {"slowdown.mean", "slowdown.p95", "slowdown.p99"}
    if summary["market"]["rounds"] < 3 or summary["token_price"]["mean"] is None:
        allowed |= {"token_price.volatility", "token_price.mean"}
    assert _nulls(summary) <= allowed, _nulls(summary) - allowed


def _nulls(obj: Any, prefix: str = "") -> set[str]:
    if isinstance(obj, dict):
        return {k for key, v in obj.items() for k in _nulls(v, f"{prefix}{key}.")}
    return {prefix.rstrip(".")} if obj is None else set()
