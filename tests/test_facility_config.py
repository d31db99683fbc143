"""Tests for dcsim.facility.config: valid facility sections build their models; bad ones name field, value and rule."""
from __future__ import annotations

import re
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from dcsim.config import BatteryConfig, ClusterConfig
from dcsim.errors import ScenarioError
from dcsim.facility.config import FacilityConfig, parse_facility
from dcsim.facility.cooling import CoolingModel

CLUSTER = ClusterConfig(gpus=64, gpu_model="H100")  # idle 78.8 W, TDP 700 W
BATTERY = BatteryConfig(capacity_wh=1000.0, max_charge_w=500.0, max_discharge_w=500.0)

FULL = {
    "topology": {"gpus_per_node": 8, "nodes_per_rack": 4, "racks_per_pdu": 1, "pdus_per_feed": 2,
                 "limits": {"node_w": 5000, "rack_w": 18000, "feed_w": 40000}},
    "cooling": {"weather": {"dry_bulb_c": 30, "wet_bulb_c": 20}, "condenser": "water", "economiser": "water",
                "time_constant_s": "10min"},
    "failures": {"gpu": {"mtbf_s": "5000h", "mttr_s": "4h"}, "node": {"mtbf_s": "2000h", "mttr_s": "8h", "failure_shape": 1.5},
                 "scheduled": [{"element": "pdu1", "start_s": "2h", "duration_s": "30min"}],
                 "renewable_trips": {"mean_time_between_s": "3d", "mean_duration_s": "20min"}, "on_failure": "lose"},
    "battery": {"min_soc": 0.1, "max_soc": 0.9, "grid_charging": True, "export_price_usd_per_mwh": {"constant": 30},
                "demand_charge_usd_per_kw": 12.5},
}


def _problems(data, cluster=CLUSTER, battery=BATTERY, **kw) -> list[tuple[str, object, str]]:
    with pytest.raises(ScenarioError) as info:
        parse_facility(data, cluster, battery, **kw)
    return info.value.problems


def test_full_section_builds_every_model() -> None:
    assert FacilityConfig.model_validate(FULL).battery.demand_charge_usd_per_kw == 12.5
    fac = parse_facility({k: v for k, v in FULL.items() if k != "battery"}, CLUSTER, BATTERY)  # battery: tests/test_facility_dispatch.py
    tree = fac.topology.build(CLUSTER.gpus)
    assert tree.n_gpus == 64 and tree.kinds.count("rack") == 2 and tree.kinds.count("feed") == 1
    assert dict(zip(tree.names, tree.limit_w))["rack1"] == 18000.0
    assert fac.failures.gpu.mtbf_s == 5000 * 3600.0 and fac.failures.scheduled[0].duration_s == 1800.0
    params = fac.cooling.params(design_it_power_w=64 * 700.0)
    assert params.design_it_power_w == 44800.0 and params.time_constant_s == 600.0 and params.condenser == "water"
    model = CoolingModel(params)
    assert float(model.steady_pue(40000.0, 30.0, 20.0)) > 1.0
    assert FacilityConfig().topology is None  # everything off by default


def test_unknown_key_suggests_and_lists_allowed() -> None:
    [(field, value, message)] = _problems({"topology": {"gpus_per_nod": 8}})
    assert field == "facility.topology.gpus_per_nod" and value == 8
    assert "did you mean 'gpus_per_node'?" in message and "allowed here: gpus_per_node, nodes_per_rack" in message


@pytest.mark.parametrize("data, field, message", [
    ({"topology": {"limits": {"rack_w": 500}}}, "facility.topology.limits",
     r"rack 'rack0' has limit_w 500 W, below the idle power of the 32 GPU\(s\) it feeds \(2521.6 W\)"),
    ({"topology": {"limits": {"node_w": 0}}}, "facility.topology.limits.node_w", "greater than 0"),
    ({"topology": {"feeds": 1, "racks_per_pdu": 1, "pdus_per_feed": 1}}, "facility.topology",
     r"feeds = 1 does not cover the 64 GPUs"),
    ({"topology": {"feeds": 3, "racks_per_pdu": 1, "pdus_per_feed": 1}}, "facility.topology",
     r"feeds = 3 leaves feed2 with no GPUs"),
    ({"topology": {"graphml": "/nonexistent/tree.graphml"}}, "facility.topology.graphml", "an existing file"),
    ({"failures": {"gpu": {"mtbf_s": 0, "mttr_s": "1h"}}}, "facility.failures.gpu.mtbf_s", "greater than or equal to 0.000001"),  # PositiveDurationS: at least 1 µs
    ({"failures": {"gpu": {"mtbf_s": "-5h", "mttr_s": "1h"}}}, "facility.failures.gpu.mtbf_s", "a duration"),
    ({"failures": {"gpu": {"mtbf_s": "5h"}}}, "facility.failures.gpu.mttr_s", "Field required"),
    ({"failures": {"on_failure": "retry"}}, "facility.failures.on_failure", "must be one of 'requeue' or 'lose'"),
    ({"failures": {"node": {"mtbf_s": "5h", "mttr_s": "1h"}}}, "facility.failures.node", "need facility.topology"),
    ({"topology": {}, "failures": {"scheduled": [{"element": "pdu9", "start_s": 0, "duration_s": 10}]}},
     "facility.failures.scheduled.0.element", r"an element of the power tree \(node0 … node7, rack0 … rack1, pdu0, feed0\)"),
    ({"cooling": {"weather": {"dry_bulb_c": 20}, "economiser": "water"}}, "facility.cooling",
     r"economiser 'water' needs the outdoor wet-bulb: give weather.wet_bulb_c"),
    ({"cooling": {"weather": {}}}, "facility.cooling.weather", "exactly one of 'epw'"),
    ({"cooling": {"weather": {"dry_bulb_c": 20, "wet_bulb_c": 25}}}, "facility.cooling.weather",
     r"wet_bulb_c \(25\) cannot exceed dry_bulb_c \(20\)"),
    ({"cooling": {"weather": {"dry_bulb_c": 20}, "chilled_water_c": 25}}, "facility.cooling",
     r"chilled_water_c \(25\) must be below supply_air_c \(24\)"),
    ({"cooling": {"weather": {"dry_bulb_c": 20}, "second_law_efficiency": 1.2}}, "facility.cooling.second_law_efficiency",
     "less than or equal to 1"),
    ({"battery": {"min_soc": 0.8, "max_soc": 0.2}}, "facility.battery", r"min_soc \(0.8\) must be below max_soc \(0.2\)"),
    ({"battery": {"demand_interval_s": "15min", "billing_window_s": "20min"}}, "facility.battery",
     r"billing_window_s \(1200\) must be a whole multiple of demand_interval_s \(900\)"),
    ({"battery": {"export_cap_w": 100}}, "facility.battery", "export_cap_w needs export_price_usd_per_mwh"),
    ({"safety": True}, "facility.safety", "enforces facility.topology's limits"),
])
def test_bad_values_name_field_value_and_rule(data, field, message) -> None:
    problems = _problems(data)
    assert any(f == field and re.search(message, m) for f, _, m in problems), problems


def test_battery_dispatch_needs_a_battery() -> None:
    [(field, _, message)] = _problems({"battery": {}}, battery=None)
    assert field == "facility.battery" and "add supply.battery" in message


def test_every_problem_reported_at_once() -> None:
    problems = _problems({"topology": {"gpus_per_node": 0}, "failures": {"gpu": {"mtbf_s": 0, "mttr_s": 0}}})
    assert {f for f, _, _ in problems} == {"facility.topology.gpus_per_node", "facility.failures.gpu.mtbf_s",
                                           "facility.failures.gpu.mttr_s"}


def test_not_a_mapping() -> None:
    [(field, value, message)] = _problems(["topology"])
    assert field == "facility" and "a mapping" in message


def test_graphml_path_resolves_against_the_scenario_folder(tmp_path: Path) -> None:
    g = nx.DiGraph()
    g.add_node("feed", kind="feed", limit_w=1e6)
    for i in range(CLUSTER.gpus):
        g.add_node(f"g{i}", kind="gpu", gpu=i)
        g.add_edge("feed", f"g{i}")
    nx.write_graphml(g, tmp_path / "tree.graphml")
    fac = parse_facility({"topology": {"graphml": "tree.graphml"}}, CLUSTER, None, path=tmp_path / "s.yaml")
    tree = fac.topology.build(CLUSTER.gpus)
    assert tree.names == ("feed",) and tree.size.tolist() == [64]
    np.testing.assert_array_equal(tree.element_power_w(np.ones(64)), [64.0])
    problems = _problems({"topology": {"graphml": "tree.graphml", "gpus_per_node": 4}}, path=tmp_path / "s.yaml")
    assert problems[0][0] == "facility.topology" and "either 'graphml' or the regular tree's fields" in problems[0][2]
    small = ClusterConfig(gpus=65)
    [(field, _, message)] = _problems({"topology": {"graphml": "tree.graphml"}}, cluster=small, path=tmp_path / "s.yaml")
    assert field == "facility.topology" and "holds 64 of 65" in message
