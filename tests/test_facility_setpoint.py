"""The facility agent's cooling setpoint (``facility.cooling.setpoint_control``): hand-worked COP savings, the room's
stored heat against an ODE solver, inlet violations, the default unchanged, the rule, and bad input."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

from dcsim.config import parse_scenario
from dcsim.errors import PolicyError, ScenarioError
from dcsim.facility.config import CoolingConfig
from dcsim.facility.plant import CoolingPlant
from dcsim.policy import CoolingCommand, CoolingObservation, Policy
from dcsim.runner import run_scenario
from policies.rules import CoolingFollowOutdoor

HOT = {"weather": {"dry_bulb_c": 30.0}, "design_it_power_w": 2000.0, "fan_power_w": 100.0, "time_constant_s": 0.0}


def scenario(cooling: dict, horizon_s: float = 3 * 3600.0, **extra):
    """16 GPUs idle at 100 W (no job arrives): IT power 1600 W for the whole run; market rounds every 15 min."""
    data = {
        "name": "setpoint", "horizon_s": horizon_s, "seed": 3,
        "cluster": {"gpus": 16, "power": {"idle_w": 100.0}},
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": 1e-9},
                     "duration_s": {"distribution": "constant", "value": 60}},
        "market": {"interval_s": 900},
        "facility": {"cooling": cooling},
        **extra,
    }
    return parse_scenario(data)


class Setpoints(Policy):
    """Sets the supply air from a schedule: ``schedule(time_s) -> °C``; records what it saw."""

    name = "setpoints"

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule
        self.seen: list[CoolingObservation] = []

    def cooling_setpoint(self, obs):
        self.seen.append(obs)
        return CoolingCommand(self.schedule(obs.market.time_s))


def _plant(cooling: dict, it_w: float = 1600.0) -> CoolingPlant:
    config = CoolingConfig.model_validate(cooling)
    return CoolingPlant(config, 2000.0, it_w, pd.Timestamp("2023-07-01T00:00:00Z"), 10 * 3600.0)


# ------------------------------------------------------------------------------------------------ hand-worked
def test_raising_the_setpoint_cuts_chiller_power_by_the_cop_formula():
    plant = _plant(HOT | {"setpoint_control": {}})
    it_w = 1600.0
    plant.energy_to(3600.0, it_w)
    before_w, cooling_1h = plant.cooling_power_w(), plant.cooling_j
    plant.set_supply_air(27.0)
    plant.energy_to(7200.0, it_w)
    after_w = plant.cooling_power_w()
    # By hand: at 24 °C the chilled water is 15 °C, T_evap = 13 °C = 286.15 K, T_cond = 30 + 8 = 311.15 K,
    # COP = 0.5 · 286.15 / 25 = 5.723. At 27 °C the chilled water follows to 18 °C: T_evap = 289.15 K, lift 22 K,
    # COP = 0.5 · 289.15 / 22 = 6.57159… Chiller power 1600/5.723 = 279.57 W → 1600/6.57159 = 243.47 W.
    assert before_w == pytest.approx(1600.0 / 5.723 + 100.0, rel=1e-12)
    assert after_w == pytest.approx(1600.0 / (0.5 * 289.15 / 22.0) + 100.0, rel=1e-12)
    assert before_w - after_w == pytest.approx(36.10, abs=0.01)
    assert plant.cooling_j - cooling_1h == pytest.approx(after_w * 3600.0, rel=1e-12)
    assert plant.chilled_water_c == 18.0 and plant.room_temperature_c() == pytest.approx(27.0 + 1600.0 / (2000 / 12))


def test_with_fixed_chilled_water_only_the_air_economiser_gains():
    # Chiller alone, chilled water fixed at 15 °C: raising the supply air changes nothing.
    plant = _plant(HOT | {"setpoint_control": {"chilled_water": "fixed"}})
    k24 = plant.electric_per_heat_now()
    plant.set_supply_air(27.0)
    assert plant.electric_per_heat_now() == k24 == pytest.approx(1 / 5.723, rel=1e-12)
    # An air economiser at 22 °C outdoors: share φ = (24 − 22)/4 = 0.5 at 24 °C, 1 at 27 °C (capped).
    plant = _plant(HOT | {"weather": {"dry_bulb_c": 22.0}, "economiser": "air",
                          "setpoint_control": {"chilled_water": "fixed"}})
    cop = 0.5 * 286.15 / (22.0 + 8.0 - 13.0)
    assert plant.electric_per_heat_now() == pytest.approx(0.5 / cop + 0.5 * 0.03, rel=1e-12)
    plant.set_supply_air(27.0)
    assert plant.electric_per_heat_now() == pytest.approx(0.03, rel=1e-12)


def test_a_run_at_a_raised_setpoint_saves_what_the_cop_gives():
    fixed = run_scenario(scenario(HOT | {"setpoint_control": {}}))
    raised = run_scenario(scenario(HOT | {"setpoint_control": {}}), policy=Setpoints(lambda t: 27.0))
    hours = 3.0
    saved_j = 1600.0 * hours * 3600.0 * (1 / 5.723 - 1 / (0.5 * 289.15 / 22.0))
    f0, f1 = fixed.summary["facility"], raised.summary["facility"]
    assert f0["cooling_energy_j"] - f1["cooling_energy_j"] == pytest.approx(saved_j, rel=1e-9)
    assert f0["setpoint"]["control"] == "fixed" and f1["setpoint"]["control"] == "policy"
    assert f1["setpoint"]["mean_supply_air_c"] == pytest.approx(27.0, rel=1e-12)
    assert f1["setpoint"]["decisions"] == 12 and f1["setpoint"]["inlet_violation_s"] == 0.0
    ts = raised.result.timeseries
    assert (ts["supply_air_c"] == 27.0).all() and (ts["chilled_water_c"] == 18.0).all()


def test_inlet_violations_are_the_time_above_the_limit():
    cooling = HOT | {"setpoint_control": {"levels_c": [24, 27, 30], "max_c": 32}}
    half = 1.5 * 3600.0
    policy = Setpoints(lambda t: 24.0 if t < half else 30.0)
    run = run_scenario(scenario(cooling), policy=policy)
    sp = run.summary["facility"]["setpoint"]
    assert sp["inlet_violation_s"] == pytest.approx(half, rel=1e-12)
    assert sp["inlet_violation_fraction"] == pytest.approx(0.5, rel=1e-12)
    assert sp["inlet_violation_k_h"] == pytest.approx(3.0 * 1.5, rel=1e-12)  # 3 K above 27 °C for 1.5 h
    assert sp["mean_supply_air_c"] == pytest.approx(27.0, rel=1e-12) and sp["setpoint_changes"] == 1
    ts = run.result.timeseries
    late = ts["time_s"] >= half
    assert ts.loc[late, "inlet_over_limit"].all() and not ts.loc[~late, "inlet_over_limit"].any()
    assert ts["inlet_violation_s"].iloc[-1] == pytest.approx(half)
    # the observation the policy saw: the setpoint in force and the limit
    assert policy.seen[0].supply_air_c == 24.0 and policy.seen[-1].supply_air_c == 30.0
    assert policy.seen[0].inlet_limit_c == 27.0 and policy.seen[0].levels_c == (24.0, 27.0, 30.0)
    assert policy.seen[0].outdoor_dry_bulb_c == 30.0


# ------------------------------------------------------------------------------------------------ stored heat
def _ode_reference(cooling: dict, it_w: float, schedule: list[tuple[float, float]], end_s: float):
    """The room's ODE ``C·dT/dt = P − max(G·(T − T_supply(t)), 0)`` by solve_ivp: heat removed, final T."""
    design, dt_k, tau = 2000.0, 12.0, cooling["time_constant_s"]
    g = design / dt_k
    c = g * tau
    times = [s for s, _ in schedule] + [end_s]
    temp = 24.0 + it_w / g  # settled at the configured 24 °C
    removed = 0.0
    for (t0, supply), t1 in zip(schedule, times[1:]):
        def rhs(_t, y, supply=supply):
            q = max(g * (y[0] - supply), 0.0)
            return [(it_w - q) / c, q]
        sol = solve_ivp(rhs, (t0, t1), [temp, 0.0], rtol=1e-10, atol=1e-9, method="LSODA")
        temp, removed = sol.y[0, -1], removed + sol.y[1, -1]
    return removed, temp


def test_setpoint_steps_store_and_release_the_rooms_heat_as_the_ode_does():
    cooling = HOT | {"time_constant_s": 600.0, "setpoint_control": {"levels_c": [18, 24, 30], "max_c": 32}}
    it_w = 1600.0
    # down by 6 K (the room's mass gives up C·6 K), then up by 12 K at a low load: the coil is off for a while
    schedule = [(0.0, 24.0), (1800.0, 18.0), (5400.0, 30.0), (6000.0, 24.0)]
    plant = _plant(cooling, it_w)
    for t, supply in schedule:
        plant.energy_to(t, it_w)
        plant.set_supply_air(supply)
    plant.energy_to(9000.0, it_w)
    removed, temp = _ode_reference(cooling, it_w, schedule, 9000.0)
    assert plant.heat_removed_j == pytest.approx(removed, rel=1e-6)
    assert plant.room_temperature_c() == pytest.approx(temp, abs=1e-6)
    # conservation: heat removed = IT energy − C·(T_end − T_start)
    g = 2000.0 / 12.0
    stored = g * 600.0 * (plant.room_temperature_c() - (24.0 + it_w / g))
    assert plant.heat_removed_j == pytest.approx(it_w * 9000.0 - stored, rel=1e-12)


def test_a_step_up_turns_the_coil_off_until_the_room_has_warmed():
    cooling = HOT | {"time_constant_s": 600.0, "setpoint_control": {"max_c": 32, "levels_c": [24, 32]}}
    it_w = 200.0  # Q = 200 W; a step of 8 K takes G·8 = 1333 W off it: Q = −1133 W, coil off
    plant = _plant(cooling, it_w)
    plant.energy_to(600.0, it_w)
    plant.set_supply_air(32.0)
    g = 2000.0 / 12.0
    q = it_w - g * 8.0
    assert plant.cooling_power_w() == 100.0  # fans only
    off_s = -q * 600.0 / it_w  # the room warms at P/C until it reaches the new setpoint
    plant.energy_to(600.0 + off_s / 2, it_w)
    assert plant.cooling_power_w() == 100.0 and plant.heat_removed_j == pytest.approx(it_w * 600.0)
    plant.energy_to(600.0 + off_s, it_w)
    assert plant.heat_w == pytest.approx(0.0, abs=1e-9)
    assert plant.room_temperature_c() == pytest.approx(32.0)
    plant.energy_to(600.0 + off_s + 600.0, it_w)  # then Q = P(1 − e^(−t/τ))
    assert plant.heat_w == pytest.approx(it_w * (1 - math.exp(-1.0)), rel=1e-12)


# ------------------------------------------------------------------------------------------------ defaults
@pytest.mark.parametrize("tau", [0.0, 600.0])
def test_a_policy_that_does_not_decide_keeps_todays_run_bit_for_bit(tau):
    workload = {"arrivals": {"process": "poisson", "rate_per_s": 0.004},
                "duration_s": {"distribution": "lognormal", "mean": 1200, "sigma": 0.5}}
    base = {"weather": {"dry_bulb_c": 23.0}, "economiser": "air", "time_constant_s": tau}
    plain = run_scenario(scenario(base, workload=workload))
    controlled = run_scenario(scenario(base | {"setpoint_control": {"levels_c": [20, 24, 27]}}, workload=workload))
    a, b = plain.result, controlled.result
    assert a.jobs.equals(b.jobs) and a.energy == b.energy and a.tokens == b.tokens and a.rounds.equals(b.rounds)
    assert b.timeseries[a.timeseries.columns].equals(a.timeseries)
    fa, fb = dict(a.facility), dict(b.facility)
    assert fb.pop("setpoint")["control"] == "fixed" and fa == fb
    assert "supply_air_c" not in a.timeseries and "setpoint" not in a.facility
    assert "cooling_setpoint" not in set(b.decisions["method"])
    # a policy choosing the configured setpoint at every round changes nothing either
    same = run_scenario(scenario(base | {"setpoint_control": {"levels_c": [20, 24, 27]}}, workload=workload),
                        policy=Setpoints(lambda t: 24.0)).result
    assert same.jobs.equals(a.jobs) and same.energy == a.energy


def test_without_setpoint_control_the_policy_is_not_asked():
    policy = Setpoints(lambda t: 27.0)
    run = run_scenario(scenario(HOT), policy=policy)
    assert policy.seen == [] and "setpoint" not in run.summary["facility"]


# ------------------------------------------------------------------------------------------------ the rule
def _obs(levels, ks, limit=27.0):
    return CoolingObservation(market=None, outdoor_dry_bulb_c=20.0, outdoor_wet_bulb_c=20.0, supply_air_c=24.0,
                              chilled_water_c=15.0, room_temp_c=30.0, it_power_w=1.0, cooling_power_w=1.0,
                              electric_per_heat=ks[0], levels_c=tuple(levels), electric_per_heat_by_level=tuple(ks),
                              min_c=levels[0], max_c=levels[-1], inlet_limit_c=limit)


def test_follow_outdoor_rule_takes_the_coolest_setpoint_as_cheap_as_the_cheapest():
    rule = CoolingFollowOutdoor()
    levels = [18.0, 21.0, 24.0, 27.0, 30.0]
    # chiller working: k falls with the setpoint; the rule stops at the inlet limit (27), not at 30
    assert rule.cooling_setpoint(_obs(levels, [0.20, 0.18, 0.16, 0.14, 0.12])).supply_air_c == 27.0
    # free cooling from 24 °C up (k = the economiser's 0.03): the lowest of those
    assert rule.cooling_setpoint(_obs(levels, [0.10, 0.05, 0.03, 0.03, 0.03])).supply_air_c == 24.0
    assert CoolingFollowOutdoor(tolerance=1.0).cooling_setpoint(
        _obs(levels, [0.10, 0.05, 0.03, 0.03, 0.03])).supply_air_c == 21.0  # 0.05 <= 2 × 0.03
    assert CoolingFollowOutdoor(highest_c=30).cooling_setpoint(
        _obs(levels, [0.20, 0.18, 0.16, 0.14, 0.12])).supply_air_c == 30.0


def test_follow_outdoor_rule_in_a_run_with_an_economiser():
    cooling = {"weather": {"dry_bulb_c": 21.0}, "economiser": "air", "design_it_power_w": 2000.0,
               "fan_power_w": 100.0, "time_constant_s": 0.0, "setpoint_control": {}}
    run = run_scenario(scenario(cooling), policy=CoolingFollowOutdoor())
    # levels 18, 21, 24, 27: φ = (T − 21)/4 reaches 1 only at 25 °C, so 27 (φ = 1) is the only free level
    assert run.summary["facility"]["setpoint"]["mean_supply_air_c"] == pytest.approx(27.0)
    cooling["weather"] = {"dry_bulb_c": 15.0}  # φ = 1 from 19 °C: 21 is the coolest free level
    run = run_scenario(scenario(cooling), policy=CoolingFollowOutdoor())
    assert run.summary["facility"]["setpoint"]["mean_supply_air_c"] == pytest.approx(21.0)
    assert run.summary["facility"]["cooling_energy_j"] == pytest.approx(
        (1600.0 * 0.03 + 100.0) * 3 * 3600.0, rel=1e-12)


def test_follow_outdoor_rule_bad_parameters():
    with pytest.raises(ValueError, match="tolerance"):
        CoolingFollowOutdoor(tolerance=-1)
    with pytest.raises(ValueError, match="highest_c"):
        CoolingFollowOutdoor(highest_c=math.nan)


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("control, field, message", [
    ({"levels_c": [24, 21]}, "setpoint_control.levels_c", "strictly increasing"),
    ({"levels_c": [18, 30]}, "setpoint_control", "outside"),
    ({"levels_c": [24]}, "setpoint_control.levels_c", "at least 2"),
    ({"min_c": 27, "max_c": 24, "levels_c": [24, 27]}, "setpoint_control", "below max_c"),
    ({"min_c": 25, "levels_c": [25, 27]}, "facility.cooling", "supply_air_c"),
    ({"chilled_water": "warm"}, "setpoint_control.chilled_water", "follow"),
    ({"chilled_water": "fixed", "min_c": 15, "levels_c": [15, 24]}, "facility.cooling", "chilled_water_c"),
    ({"min_c": 9, "levels_c": [9, 24]}, "facility.cooling", "below 1 °C"),
    ({"level": [18, 24]}, "setpoint_control.level", ""),
])
def test_bad_setpoint_control_names_field_and_value(control, field, message):
    with pytest.raises(ScenarioError) as err:
        scenario(HOT | {"setpoint_control": control})
    text = str(err.value)
    assert field in text and message in text


@pytest.mark.parametrize("answer, message", [(35.0, r"\[18, 27\]"), (math.nan, "nan"), ("24", r"\[18, 27\]")])
def test_a_setpoint_out_of_range_is_a_clear_policy_error(answer, message):
    with pytest.raises(PolicyError, match=message) as err:
        run_scenario(scenario(HOT | {"setpoint_control": {}}), policy=Setpoints(lambda t: answer))
    assert "cooling_setpoint" in str(err.value)


def test_a_wrong_return_type_is_a_clear_policy_error():
    class Wrong(Policy):
        name = "wrong"

        def cooling_setpoint(self, obs):
            return 24.0

    with pytest.raises(PolicyError, match="expected dcsim.policy.CoolingCommand"):
        run_scenario(scenario(HOT | {"setpoint_control": {}}), policy=Wrong())
