"""The dispatched battery wired into runs: books balanced at every step, hand-worked demand charges and export
revenue, the fixed rule unchanged, the facility agent's decisions clipped and recorded, bad values named."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcsim.config import BatteryConfig, parse_scenario
from dcsim.errors import PolicyError, ScenarioError
from dcsim.facility.battery import peak_demand_w
from dcsim.facility.config import BatteryDispatchConfig
from dcsim.facility.dispatch_battery import DispatchedBattery
from dcsim.policy import BatteryCommand, Dispatch, FacilityObservation, Policy
from dcsim.runner import run_scenario
from policies.rules import BatteryThreshold
from tests.test_cli import dcsim_cli, ok, user_error

REPO = Path(__file__).resolve().parents[1]
IDLE_W = 100.0
N_GPUS = 16
LOAD_W = IDLE_W * N_GPUS  # no jobs arrive: the cluster draws its idle power all run


# ------------------------------------------------------------------------------------------ test policies
class ChargeAlways(Policy):
    """CHARGE at a fixed rate at every round."""

    name = "charge_always"

    def __init__(self, rate_w: float = 1000.0):
        super().__init__()
        self.rate_w = rate_w

    def dispatch(self, obs: FacilityObservation) -> BatteryCommand:
        return BatteryCommand(Dispatch.CHARGE, self.rate_w)


class DischargeAlways(ChargeAlways):
    """DISCHARGE at a fixed rate at every round."""

    name = "discharge_always"

    def dispatch(self, obs: FacilityObservation) -> BatteryCommand:
        return BatteryCommand(Dispatch.DISCHARGE, self.rate_w)


class RandomDispatch(Policy):
    """A random command and rate (up to 1.5× the limit) at every round, from the policy's own stream."""

    name = "random_dispatch"

    def dispatch(self, obs: FacilityObservation) -> BatteryCommand:
        command = Dispatch(int(self.rng.integers(3)))
        limit = obs.max_charge_w if command is Dispatch.CHARGE else obs.max_discharge_w
        return BatteryCommand(command, float(self.rng.uniform(0.0, 1.5 * limit)))


class BadCommand(Policy):
    name = "bad_command"

    def __init__(self, what: str = "rate"):
        super().__init__()
        self.what = what

    def dispatch(self, obs: FacilityObservation):
        return {"rate": BatteryCommand(Dispatch.CHARGE, math.nan), "enum": BatteryCommand(7, 10.0),
                "type": (Dispatch.CHARGE, 10.0)}[self.what]


def idle_scenario(battery: dict, facility_battery: dict | None, policy: str = "always_on", params=None, **extra):
    """16 idle GPUs at 100 W (no jobs), no renewable power, 3 h, rounds every 300 s."""
    data = {
        "name": "dispatch", "horizon_s": 3 * 3600.0, "seed": 5,
        "cluster": {"gpus": N_GPUS, "power": {"idle_w": IDLE_W}},
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": 1e-9},
                     "duration_s": {"distribution": "constant", "value": 60}},
        "supply": {"battery": battery, "grid": {"price_usd_per_mwh": {"constant": 50.0}}},
        "policy": {"name": policy, "params": params or {}},
        **extra,
    }
    if facility_battery is not None:
        data["facility"] = {"battery": facility_battery}
    return parse_scenario(data)


# 1 kWh = 3.6 MJ, half full, η = 0.81 so η_c = η_d = 0.9
SMALL = {"capacity_wh": 1000.0, "max_charge_w": 5000.0, "max_discharge_w": 5000.0, "round_trip_efficiency": 0.81,
         "initial_soc": 0.5}


def assert_books_balance(e: dict, scale: float) -> None:
    """The run's energy identities (GridTotals) to 1e-9 of ``scale``."""
    tol = 1e-9 * scale
    assert abs(e["consumed_j"] - (e["renewable_used_j"] + e["battery_out_j"] + e["grid_j"] + e["unserved_j"])) < tol
    assert abs(e["renewable_generated_j"] - (e["renewable_used_j"] + e["charged_j"] - e["charge_from_grid_j"]
                                             + e["renewable_export_j"] + e["curtailed_j"])) < tol
    soc = e["battery_soc_end_j"] - e["battery_soc_start_j"]
    out = e["battery_out_j"] + e["battery_export_j"]
    assert abs(e["charged_j"] - out - soc - e["battery_loss_j"]) < tol
    assert abs(e["grid_import_j"] - (e["grid_j"] + e["charge_from_grid_j"])) < tol
    assert abs(e["grid_export_j"] - (e["renewable_export_j"] + e["battery_export_j"])) < tol


# ------------------------------------------------------------------------------------------ every step balances
STEP = st.tuples(
    st.sampled_from([None, Dispatch.HOLD, Dispatch.CHARGE, Dispatch.DISCHARGE]),  # None: leave the command
    st.floats(0.0, 8000.0),  # requested rate, W (beyond the 5 kW limits too)
    st.floats(0.0, 4000.0),  # dt, s
    st.floats(0.0, 6000.0),  # load, W
    st.floats(0.0, 6000.0),  # renewable, W
    st.sampled_from([-20.0, 0.0, 40.0]),  # export price now, USD/MWh
)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(STEP, min_size=1, max_size=30), grid_charging=st.booleans(),
       export=st.booleans(), export_cap=st.sampled_from([None, 0.0, 1500.0]),
       import_cap=st.sampled_from([None, 2000.0]), soc0=st.floats(0.2, 0.8), eta=st.floats(0.5, 1.0),
       fixed=st.booleans())
def test_books_balance_at_every_step_and_soc_stays_in_bounds(steps, grid_charging, export, export_cap, import_cap,
                                                             soc0, eta, fixed):
    battery = BatteryConfig(capacity_wh=2000.0, max_charge_w=5000.0, max_discharge_w=5000.0,
                            round_trip_efficiency=eta, initial_soc=soc0)
    cfg = BatteryDispatchConfig(min_soc=0.2, max_soc=0.8, grid_charging=grid_charging,
                                export_price_usd_per_mwh={"constant": 40.0} if export else None,
                                export_cap_w=export_cap if export else None, demand_interval_s=600,
                                billing_window_s=1800)
    b = DispatchedBattery(battery, import_cap, cfg, 40.0 if export else None)
    eta_c = eta_d = math.sqrt(eta)
    cap_w = math.inf if import_cap is None else import_cap
    x_cap = 0.0 if not export else (math.inf if export_cap is None else export_cap)
    now = 0.0
    for command, rate, dt, load, renewable, price in steps:
        if command is not None and not fixed:
            b.decide(now, command, rate)
        if export:
            b.export_price_usd_per_mwh = price
        before = b.totals.as_dict() | {"soc": b.soc_j}
        b.advance(dt, load, renewable, 300.0, 50.0)
        now += dt
        after = b.totals.as_dict() | {"soc": b.soc_j}
        d = {k: after[k] - before[k] for k in after}
        tol = 1e-9 * max(1.0, (load + renewable + 10000.0) * dt, b.capacity_j)
        assert b.soc_min_j - 1e-9 * b.capacity_j <= b.soc_j <= b.soc_max_j + 1e-9 * b.capacity_j
        assert all(v >= -tol for k, v in d.items() if k not in ("soc", "export_revenue_usd"))
        # the bus: supply + import + discharge = served load + charge + export + curtailed
        discharged = d["battery_out_j"] + d["battery_export_j"]
        assert abs(d["renewable_generated_j"] + d["grid_import_j"] + discharged
                   - (d["consumed_j"] - d["unserved_j"] + d["charged_j"] + d["grid_export_j"] + d["curtailed_j"])) < tol
        assert abs(d["consumed_j"] - load * dt) < tol and abs(d["renewable_generated_j"] - renewable * dt) < tol
        assert abs(d["consumed_j"] - (d["renewable_used_j"] + d["battery_out_j"] + d["grid_j"] + d["unserved_j"])) < tol
        assert abs(d["soc"] - (d["charged_j"] * eta_c - discharged / eta_d)) < tol
        assert abs(d["charged_j"] - discharged - d["soc"] - d["battery_loss_j"]) < tol
        assert abs(d["grid_import_j"] - (d["grid_j"] + d["charge_from_grid_j"])) < tol
        assert abs(d["grid_export_j"] - (d["renewable_export_j"] + d["battery_export_j"])) < tol
        # limits: the grid's import cap and the export cap, the battery's power; no grid charging unless allowed
        if dt > 0:
            assert d["grid_import_j"] <= cap_w * dt + tol
            assert d["grid_export_j"] <= x_cap * dt + tol
        assert d["charged_j"] <= 5000.0 * dt + tol and discharged <= 5000.0 * dt + tol
        if fixed or not grid_charging:
            assert d["charge_from_grid_j"] == 0.0
        if fixed:
            assert d["battery_export_j"] == 0.0
        if not export or price <= 0:
            assert d["grid_export_j"] == 0.0
        # unserved only beyond what the grid's cap can carry (the battery never takes power the load needs)
        beyond_w = max(0.0, load - renewable - cap_w)
        assert d["unserved_j"] <= beyond_w * dt + tol
        if beyond_w > 0:
            assert d["charge_from_grid_j"] == 0.0


def _books(import_cap_w=None, export_cap_w=None, export_price=None, **cfg) -> DispatchedBattery:
    """2 kWh, 5 kW each way, η = 1 (so the flows are plain sums), half full, SoC in [0.2, 0.8]."""
    battery = BatteryConfig(capacity_wh=2000.0, max_charge_w=5000.0, max_discharge_w=5000.0,
                            round_trip_efficiency=1.0, initial_soc=0.5)
    price = None if export_price is None else {"constant": export_price}
    config = BatteryDispatchConfig(min_soc=0.2, max_soc=0.8, export_price_usd_per_mwh=price,
                                   export_cap_w=export_cap_w, **cfg)
    return DispatchedBattery(battery, import_cap_w, config, export_price)


def test_grid_charging_yields_to_the_load_under_the_import_cap():
    # cap 2 kW, load 1.5 kW, CHARGE at 3 kW from the grid: the load first, so only 0.5 kW charges
    b = _books(import_cap_w=2000.0, grid_charging=True)
    b.decide(0.0, Dispatch.CHARGE, 3000.0)
    b.advance(100.0, 1500.0, 0.0, 0.0, 0.0)
    t = b.totals
    assert (t.grid_j, t.charge_from_grid_j, t.grid_import_j, t.unserved_j) == (150e3, 50e3, 200e3, 0.0)
    b.advance(100.0, 2500.0, 0.0, 0.0, 0.0)  # above the cap: nothing charges, 0.5 kW unserved
    assert (t.charge_from_grid_j, t.unserved_j, t.grid_import_j) == (50e3, 50e3, 400e3)


@pytest.mark.parametrize("renewable_w, ren_export_w, bat_export_w, curtailed_w", [
    (2500.0, 1000.0, 500.0, 0.0),  # surplus 1 kW exported first, the battery fills the 1.5 kW cap
    (3500.0, 1500.0, 0.0, 500.0),  # surplus 2 kW: 1.5 kW exported, 0.5 kW curtailed, the battery has no room
])
def test_export_cap_is_shared_by_surplus_then_battery(renewable_w, ren_export_w, bat_export_w, curtailed_w):
    b = _books(export_cap_w=1500.0, export_price=40.0)
    b.decide(0.0, Dispatch.DISCHARGE, 2000.0)
    b.advance(10.0, 1500.0, renewable_w, 0.0, 0.0)
    t = b.totals
    assert (t.renewable_export_j, t.battery_export_j, t.curtailed_j, t.battery_out_j) == (
        10 * ren_export_w, 10 * bat_export_w, 10 * curtailed_w, 0.0)
    assert t.export_revenue_usd == pytest.approx(10 * (ren_export_w + bat_export_w) * 40.0 / 3.6e9, rel=1e-12)


def test_fixed_rule_exports_the_surplus_it_cannot_store():
    # surplus 6 kW, the fixed rule charges at most 5 kW; 1 kW goes out (cap 3 kW) while the price is positive
    b = _books(export_cap_w=3000.0, export_price=40.0)
    b.advance(10.0, 1000.0, 7000.0, 0.0, 0.0)
    t = b.totals
    assert (t.charged_j, t.renewable_export_j, t.curtailed_j, t.battery_export_j) == (50e3, 10e3, 0.0, 0.0)
    b.export_price_usd_per_mwh = -1.0  # a negative price: curtail instead
    b.advance(10.0, 1000.0, 7000.0, 0.0, 0.0)
    assert (t.renewable_export_j, t.curtailed_j) == (10e3, 10e3)


# ------------------------------------------------------------------------------------------ demand charges
def test_demand_peaks_by_hand_and_against_the_pure_tariff():
    # Import steps (no battery action: HOLD, no renewable): 10 kW for 600 s, 20 kW to 1200 s, 5 kW to 2400 s,
    # 8 kW to the end at 2550 s. Demand intervals 900 s, billing windows 1800 s.
    #   [0, 900):     (10k·600 + 20k·300)/900 = 13 333.3 W    window 0
    #   [900, 1800):  (20k·300 + 5k·600)/900  = 10 000 W      window 0 → peak 13 333.3 W
    #   [1800, 2550): (5k·600 + 8k·150)/750   = 5 600 W       window 1 (cut by the end: the part covered)
    battery = BatteryConfig(capacity_wh=1000.0, max_charge_w=100.0, max_discharge_w=100.0, initial_soc=0.5)
    cfg = BatteryDispatchConfig(demand_interval_s=900, billing_window_s=1800, demand_charge_usd_per_kw=12.0)
    b = DispatchedBattery(battery, None, cfg, None)
    b.decide(0.0, Dispatch.HOLD, 0.0)
    times, loads = [0.0, 600.0, 1200.0, 2400.0], [10e3, 20e3, 5e3, 8e3]
    for t0, t1, load in zip(times, times[1:] + [2550.0], loads):
        b.advance(t1 - t0, load, 0.0, 0.0, 0.0)
    b.close()
    peaks = [b.peaks_w[w] for w in sorted(b.peaks_w)]
    assert peaks == pytest.approx([40e3 / 3, 5600.0], rel=1e-12)
    assert b.demand_charge_usd() == pytest.approx((40 / 3 + 5.6) * 12.0, rel=1e-12)
    _, pure = peak_demand_w(times, loads, 2550.0, 900.0, 1800.0)
    assert peaks == pytest.approx(pure.tolist(), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(1.0, 3000.0), st.floats(0.0, 1e4)), min_size=1, max_size=25))
def test_online_demand_metering_matches_the_pure_tariff(pieces):
    battery = BatteryConfig(capacity_wh=1.0, max_charge_w=0.0, max_discharge_w=0.0, initial_soc=0.0)
    b = DispatchedBattery(battery, None, BatteryDispatchConfig(demand_interval_s=600, billing_window_s=3600), None)
    times = np.concatenate([[0.0], np.cumsum([dt for dt, _ in pieces])])
    for dt, load in pieces:
        b.advance(dt, load, 0.0, 0.0, 0.0)
    b.close()
    _, pure = peak_demand_w(times[:-1], [p for _, p in pieces], float(times[-1]), 600.0, 3600.0)
    assert [b.peaks_w[w] for w in sorted(b.peaks_w)] == pytest.approx(pure.tolist(), rel=1e-9, abs=1e-9)


def test_demand_charge_of_a_constant_load_run_by_hand():
    # min_soc = initial_soc: the fixed rule cannot discharge, and there is no surplus to charge, so the grid
    # carries the 1.6 kW idle load all 3 h: three 1 h billing windows, each with a 1.6 kW peak.
    sc = idle_scenario(SMALL, {"min_soc": 0.5, "demand_charge_usd_per_kw": 9.0, "billing_window_s": 3600})
    run = run_scenario(sc)
    bat = run.summary["facility"]["battery"]
    assert bat["dispatch"] == "fixed rule" and bat["decisions"] == 0
    assert bat["peak_demand_by_window_w"] == pytest.approx([LOAD_W] * 3, rel=1e-12)
    assert bat["demand_charge_usd"] == pytest.approx(3 * 1.6 * 9.0, rel=1e-12)
    assert run.result.energy["battery_soc_end_j"] == run.result.energy["battery_soc_start_j"] == 0.5 * 3.6e6


def test_grid_charging_by_hand():
    # CHARGE at 1 kW from the grid: stores 0.9 kW, from 1.8 MJ to full (3.6 MJ) in 2000 s; import 2.6 kW until then.
    sc = idle_scenario(SMALL, {"grid_charging": True, "demand_charge_usd_per_kw": 10.0, "billing_window_s": 3600},
                       policy="tests.test_facility_dispatch:ChargeAlways")
    run = run_scenario(sc)
    e, bat = run.result.energy, run.summary["facility"]["battery"]
    assert e["charge_from_grid_j"] == pytest.approx(1000.0 * 2000.0, rel=1e-12)
    assert e["battery_soc_end_j"] == pytest.approx(3.6e6, rel=1e-12)
    assert e["battery_loss_j"] == pytest.approx(0.1 * 2e6, rel=1e-12)
    # [0, 900) and [900, 1800) at 2.6 kW; [1800, 2700) (2.6k·200 + 1.6k·700)/900; then 1.6 kW
    assert bat["peak_demand_by_window_w"] == pytest.approx([2600.0, LOAD_W, LOAD_W], rel=1e-12)
    assert bat["demand_charge_usd"] == pytest.approx((2.6 + 1.6 + 1.6) * 10.0, rel=1e-12)
    assert run.summary["grid_cost_usd"] == pytest.approx((LOAD_W * sc.horizon_s + 2e6) * 50.0 / 3.6e9, rel=1e-12)
    assert run.summary["carbon_kg"] == pytest.approx((LOAD_W * sc.horizon_s + 2e6) / 3.6e6 * 250.0 / 1000, rel=1e-12)
    # rounds at 0, 300, ..., 1800 charge; from 2100 s on the battery is full: each later decision is clipped
    d = run.result.dispatch
    assert len(d) == 36 and (d["command"] == "CHARGE").all()
    assert (d.loc[d["time_s"] >= 2000.0, "clipped_by"] == "max_soc").all()
    assert (d.loc[d["time_s"] < 2000.0, "clipped_by"] == "").all()
    assert bat["clipped_decisions"] == int((d["time_s"] >= 2000.0).sum()) == 36 - 7  # 7 rounds before 2000 s
    assert_books_balance(e, e["consumed_j"])


def test_without_grid_charging_charge_takes_only_surplus():
    sc = idle_scenario(SMALL, {"grid_charging": False}, policy="tests.test_facility_dispatch:ChargeAlways")
    run = run_scenario(sc)
    e = run.result.energy
    assert e["charge_from_grid_j"] == 0.0 and e["charged_j"] == 0.0  # no renewable power, nothing charges
    assert e["grid_j"] == pytest.approx(LOAD_W * sc.horizon_s, rel=1e-12)


# ------------------------------------------------------------------------------------------ export revenue
@pytest.mark.parametrize("cap_w", [None, 1000.0])
def test_export_revenue_by_hand(cap_w):
    # DISCHARGE at 3 kW with an export price of 40 USD/MWh: 1.6 kW serves the load, the rest is exported (at most
    # cap_w). The store gives (1.6 kW + export)/0.9 until 1.8 MJ is gone.
    fb = {"export_price_usd_per_mwh": {"constant": 40.0}}
    if cap_w is not None:
        fb["export_cap_w"] = cap_w
    sc = idle_scenario(SMALL, fb, policy="tests.test_facility_dispatch:DischargeAlways", params={"rate_w": 3000.0})
    run = run_scenario(sc)
    e, bat = run.result.energy, run.summary["facility"]["battery"]
    export_w = 1400.0 if cap_w is None else cap_w
    empty_s = 1.8e6 * 0.9 / (LOAD_W + export_w)
    assert e["battery_export_j"] == pytest.approx(export_w * empty_s, rel=1e-12)
    assert e["battery_out_j"] == pytest.approx(LOAD_W * empty_s, rel=1e-12)
    assert bat["export_revenue_usd"] == pytest.approx(export_w * empty_s * 40.0 / 3.6e9, rel=1e-12)
    assert e["grid_j"] == pytest.approx(LOAD_W * (sc.horizon_s - empty_s), rel=1e-12)
    assert bat["net_grid_bill_usd"] == pytest.approx(e["grid_j"] * 50.0 / 3.6e9 - bat["export_revenue_usd"], rel=1e-12)
    assert e["battery_soc_end_j"] == 0.0
    d = run.result.dispatch
    assert (d.loc[d["time_s"] > empty_s, "clipped_by"] == "min_soc").all()
    assert_books_balance(e, e["consumed_j"])


def test_an_export_price_file_steps_the_revenue(tmp_path):
    # 40 USD/MWh for the first hour, 80 after; the battery (20 kWh, 60 % full) exports 1.4 kW all 3 h
    path = tmp_path / "export.csv"
    path.write_text("time,price_usd_per_mwh\n2023-06-21T00:00:00Z,40\n2023-06-21T01:00:00Z,80\n"
                    "2023-06-21T04:00:00Z,80\n", encoding="utf-8")
    big = SMALL | {"capacity_wh": 20000.0, "initial_soc": 0.6}
    sc = idle_scenario(big, {"export_price_usd_per_mwh": {"path": str(path), "format": "csv"}},
                       policy="tests.test_facility_dispatch:DischargeAlways", params={"rate_w": 3000.0},
                       start="2023-06-21T00:00:00Z")
    run = run_scenario(sc)
    bat = run.summary["facility"]["battery"]
    assert run.result.energy["battery_export_j"] == pytest.approx(1400.0 * sc.horizon_s, rel=1e-12)
    assert bat["export_revenue_usd"] == pytest.approx(1400.0 * (3600 * 40 + 7200 * 80) / 3.6e9, rel=1e-12)
    assert "facility.battery.export_price_usd_per_mwh" in str(run.summary["data_quality"])  # the file's record


def test_a_dumped_scenario_validates_again():
    from dcsim.config import load_scenario, scenario_to_dict

    sc = load_scenario(REPO / "scenarios" / "facility_battery.yaml")
    assert parse_scenario(scenario_to_dict(sc)).facility == sc.facility


def test_a_negative_export_price_exports_nothing():
    sc = idle_scenario(SMALL, {"export_price_usd_per_mwh": {"constant": -5.0}},
                       policy="tests.test_facility_dispatch:DischargeAlways", params={"rate_w": 3000.0})
    e = run_scenario(sc).result.energy
    assert e["grid_export_j"] == 0.0
    assert e["battery_out_j"] == pytest.approx(1.8e6 * 0.9, rel=1e-12)  # it still serves the load


def test_rate_beyond_the_power_limit_is_clipped_and_recorded():
    sc = idle_scenario(SMALL | {"max_discharge_w": 500.0}, {}, policy="tests.test_facility_dispatch:DischargeAlways",
                       params={"rate_w": 3000.0})
    run = run_scenario(sc)
    d = run.result.dispatch
    first = d.iloc[0]
    assert (first["requested_w"], first["rate_w"], first["clipped_w"], first["clipped_by"]) == (
        3000.0, 500.0, 2500.0, "max_discharge_w")
    # 500 W of the 1.6 kW load from the battery (the rest from the grid) until its 1.8 MJ are gone: 1.8e6·0.9/500 s
    e = run.result.energy
    assert e["battery_out_j"] == pytest.approx(1.8e6 * 0.9, rel=1e-12)
    assert e["grid_j"] == pytest.approx(LOAD_W * sc.horizon_s - 1.8e6 * 0.9, rel=1e-12)


# ------------------------------------------------------------------------------------------ fixed rule unchanged
def _solar_scenario(facility: dict | None, policy: str = "always_on"):
    data = {
        "name": "fixed", "horizon_s": 12 * 3600.0, "seed": 11, "start": "2023-06-21T14:00:00Z",
        "cluster": {"gpus": 16, "gpu_model": "A100"},
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": 0.004}, "gpus_per_job": {"values": [1, 2, 4]},
                     "duration_s": {"distribution": "exponential", "mean": 1800}},
        "supply": {"solar": {"capacity_w": 9000, "latitude": 33.45, "longitude": -112.07},
                   "battery": {"capacity_wh": 8000, "max_charge_w": 3000, "max_discharge_w": 3000,
                               "initial_soc": 0.4}},
        "policy": {"name": policy},
    }
    if facility is not None:
        data["facility"] = facility
    return parse_scenario(data)


def _without(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("performance", "facility", "data_quality")}


def test_facility_battery_with_a_non_dispatching_policy_keeps_the_fixed_rule_exactly():
    off = run_scenario(_solar_scenario(None))
    on = run_scenario(_solar_scenario({"battery": {}}))
    assert off.summary["jobs"]["completed"] > 20 and off.result.energy["charged_j"] > 0  # the battery works
    assert off.result.energy["battery_out_j"] > 0
    assert _without(on.summary) == _without(off.summary)
    assert {k: on.result.energy[k] for k in off.result.energy} == off.result.energy
    pd.testing.assert_frame_equal(on.result.rounds, off.result.rounds)
    pd.testing.assert_frame_equal(on.result.timeseries[off.result.timeseries.columns], off.result.timeseries)
    assert "facility" not in off.summary and on.summary["facility"]["battery"]["dispatch"] == "fixed rule"
    assert off.result.dispatch is None


def test_books_balance_in_a_run_with_the_rule_and_cooling():
    sc = _solar_scenario({"battery": {"min_soc": 0.1, "max_soc": 0.9, "grid_charging": True,
                                      "export_price_usd_per_mwh": {"constant": 30.0}, "export_cap_w": 2000,
                                      "demand_charge_usd_per_kw": 5.0},
                          "cooling": {"weather": {"dry_bulb_c": 30.0}, "overhead_w": 150.0}},
                         policy="policies.rules:BatteryThreshold")
    sc = sc.model_copy(update={"policy": sc.policy.model_copy(update={"params": {
        "charge_below_usd_per_mwh": 60.0, "discharge_above_usd_per_mwh": 100.0, "shave_above_w": 3000.0}})})
    run = run_scenario(sc)
    e, bat = run.result.energy, run.summary["facility"]["battery"]
    assert_books_balance(e, e["consumed_j"])
    assert abs(e["consumed_j"] - run.summary["facility"]["facility_energy_j"]) < 1e-9 * e["consumed_j"]
    assert bat["decisions"] == len(run.result.rounds) and bat["decisions_by_command"]["CHARGE"] > 0
    assert bat["decisions_by_command"]["DISCHARGE"] > 0  # peak shaving above 3 kW of net load
    cap = 8000 * 3600.0
    soc = run.result.timeseries["battery_soc_j"]
    assert soc.min() >= 0.1 * cap - 1e-9 * cap and soc.max() <= 0.9 * cap + 1e-9 * cap
    ts = run.result.timeseries
    assert np.all(np.diff(ts["grid_import_j"]) >= 0) and ts["grid_import_j"].iloc[-1] == e["grid_import_j"]


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), grid_charging=st.booleans(), export=st.booleans(),
       import_cap=st.sampled_from([None, 3000.0]))
def test_random_dispatch_in_runs_keeps_the_books_and_the_bounds(seed, grid_charging, export, import_cap):
    fb = {"min_soc": 0.15, "max_soc": 0.85, "grid_charging": grid_charging, "demand_charge_usd_per_kw": 1.0}
    if export:
        fb |= {"export_price_usd_per_mwh": {"constant": 20.0}, "export_cap_w": 2500.0}
    sc = _solar_scenario({"battery": fb})
    sc = sc.model_copy(update={"seed": seed, "horizon_s": 4 * 3600.0, "supply": sc.supply.model_copy(
        update={"grid": sc.supply.grid.model_copy(update={"import_cap_w": import_cap})})})
    run = run_scenario(sc, policy=RandomDispatch())  # an instance: importing this module by name would nest @given
    e = run.result.energy
    assert_books_balance(e, e["consumed_j"])
    cap = 8000 * 3600.0
    soc = run.result.timeseries["battery_soc_j"]
    assert soc.min() >= 0.15 * cap * (1 - 1e-12) and soc.max() <= 0.85 * cap * (1 + 1e-12)
    d = run.result.dispatch
    assert len(d) == len(run.result.rounds)
    assert np.all(d["rate_w"] <= 3000.0) and np.allclose(d["clipped_w"], np.where(
        d["command"] == "HOLD", 0.0, d["requested_w"] - d["rate_w"]))
    if not grid_charging:
        assert e["charge_from_grid_j"] == 0.0
    if not export:
        assert e["grid_export_j"] == 0.0


# ------------------------------------------------------------------------------------------ the rule
def _obs(net_w: float, price: float, grid_charging: bool = True, export_price: float = math.nan) -> FacilityObservation:
    from dcsim.policy import MarketView

    market = MarketView(0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 250.0, price, 0.5, 0, 0, 300.0)
    return FacilityObservation(market, 5000.0, net_w, 1e6, 2e6, 0.0, 2e6, 2000.0, 3000.0, 0.9, grid_charging,
                               math.inf, export_price, math.inf, 0.0, 0.0, 0.0, 900.0)


@pytest.mark.parametrize("net_w, price, grid_charging, export_price, expected", [
    (4500.0, 50.0, True, math.nan, (Dispatch.DISCHARGE, 500.0)),  # shave the net load above 4 kW
    (-700.0, 50.0, True, math.nan, (Dispatch.CHARGE, 700.0)),  # store the surplus
    (1000.0, 20.0, True, math.nan, (Dispatch.CHARGE, 2000.0)),  # cheap grid: full charge rate
    (3500.0, 20.0, True, math.nan, (Dispatch.CHARGE, 500.0)),  # ... only up to the shaving level
    (1000.0, 20.0, False, math.nan, (Dispatch.HOLD, 0.0)),  # no grid charging allowed
    (1000.0, 120.0, True, math.nan, (Dispatch.DISCHARGE, 1000.0)),  # dear grid: cover the deficit
    (1000.0, 120.0, True, 150.0, (Dispatch.DISCHARGE, 3000.0)),  # ... and export when that pays as much
    (1000.0, 60.0, True, math.nan, (Dispatch.HOLD, 0.0)),
])
def test_battery_threshold_rule(net_w, price, grid_charging, export_price, expected):
    rule = BatteryThreshold(charge_below_usd_per_mwh=30.0, discharge_above_usd_per_mwh=100.0, shave_above_w=4000.0)
    cmd = rule.dispatch(_obs(net_w, price, grid_charging, export_price))
    assert (cmd.command, cmd.rate_w) == expected


def test_battery_threshold_rule_refuses_crossed_thresholds():
    with pytest.raises(ValueError, match="charge_below_usd_per_mwh"):
        BatteryThreshold(charge_below_usd_per_mwh=90.0, discharge_above_usd_per_mwh=80.0)


# ------------------------------------------------------------------------------------------ bad values
@pytest.mark.parametrize("battery, field, words", [
    ({"export_cap_w": 2e15, "export_price_usd_per_mwh": {"constant": 1.0}}, "facility.battery.export_cap_w", "1e+15"),
    ({"demand_charge_usd_per_kw": -1}, "facility.battery.demand_charge_usd_per_kw", "≥ 0"),
    ({"demand_charge_usd_per_kw": 1e16}, "facility.battery.demand_charge_usd_per_kw", "1e+15"),
    ({"export_cap_w": 100}, "facility.battery", "needs export_price_usd_per_mwh"),
    ({"min_soc": 0.6}, "supply.battery.initial_soc", "[min_soc, max_soc] = [0.6, 1]"),
    ({"export_price_usd_per_mwh": {"constant": 1.0, "format": "moer"}}, "facility.battery.export_price_usd_per_mwh",
     "carbon format"),
])
def test_bad_values_are_named(battery, field, words):
    with pytest.raises(ScenarioError) as exc:
        idle_scenario(SMALL, battery)
    text = str(exc.value)
    assert field in text and words in text, text


def test_facility_battery_needs_supply_battery():
    with pytest.raises(ScenarioError, match="battery dispatch needs a battery: add supply.battery"):
        parse_scenario({"cluster": {"gpus": 4}, "facility": {"battery": {}},
                        "workload": {"arrivals": {"process": "poisson", "rate_per_s": 0.01},
                                     "duration_s": {"distribution": "constant", "value": 60}}})


@pytest.mark.parametrize("what, words", [("rate", "rate_w = nan"), ("enum", "allowed: Dispatch values"),
                                         ("type", "expected dcsim.policy.BatteryCommand")])
def test_a_bad_command_names_the_policy(what, words):
    sc = idle_scenario(SMALL, {}, policy="tests.test_facility_dispatch:BadCommand", params={"what": what})
    with pytest.raises(PolicyError) as exc:
        run_scenario(sc)
    assert "policy 'bad_command' dispatch" in str(exc.value) and words in str(exc.value)


# ------------------------------------------------------------------------------------------ command line
def test_cli_runs_the_example_scenario(tmp_path):
    out = tmp_path / "run"
    proc = ok(dcsim_cli("run", REPO / "scenarios" / "facility_battery.yaml", "--horizon", "6h", "--out", out,
                        cwd=tmp_path))
    assert "net grid bill" in proc.stdout
    import json

    summary = json.loads((out / "summary.json").read_text())
    bat = summary["facility"]["battery"]
    assert bat["dispatch"] == "policy" and bat["decisions"] > 0
    d = pd.read_csv(out / "dispatch.csv")
    assert len(d) == bat["decisions"] and set(d["command"]) <= {"HOLD", "CHARGE", "DISCHARGE"}
    e = summary["energy_j"]
    assert abs(e["consumed"] - (e["renewable"] + e["battery"] + e["grid"] + e["unserved"])) < 1e-9 * e["consumed"]


def test_cli_bad_battery_value_is_a_user_error(tmp_path):
    proc = user_error(dcsim_cli("run", REPO / "scenarios" / "facility_battery.yaml", "--set",
                                "facility.battery.export_cap_w=-3", "--out", tmp_path / "x", cwd=tmp_path))
    assert "facility.battery.export_cap_w" in proc.stderr
