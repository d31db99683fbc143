"""Cooling and PUE wired into runs: hand-worked steady state, the lag after a load step, books balanced."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dcsim.config import parse_scenario
from dcsim.errors import ScenarioError
from dcsim.facility.config import CoolingConfig
from dcsim.facility.cooling import CoolingModel
from dcsim.facility.plant import CoolingPlant
from dcsim.runner import run_scenario
from tests.test_cli import dcsim_cli, ok, user_error

EPW = Path(__file__).resolve().parents[2] / "shared" / "traces" / "weather" / "USA_CA_San.Jose-Mineta.epw"


def scenario(cooling: dict, workload: dict | None = None, supply: dict | None = None, **extra):
    data = {
        "name": "plant", "horizon_s": 3 * 3600.0, "seed": 3,
        "cluster": {"gpus": 16, "power": {"idle_w": 100.0}},
        "workload": workload or {"arrivals": {"process": "poisson", "rate_per_s": 1e-9},
                                 "duration_s": {"distribution": "constant", "value": 60}},
        "facility": {"cooling": cooling},
        **extra,
    }
    if supply is not None:
        data["supply"] = supply
    return parse_scenario(data)


def step_workload(tmp_path: Path) -> dict:
    """One 16-GPU job arriving at t = 1000 s that outlasts the run: IT power steps from idle to full once."""
    path = tmp_path / "jobs.csv"
    path.write_text("job_id,arrival_s,gpus,work_gpu_s,deadline_s,deferrable,value_tokens,clock_sensitivity\n"
                    "j0,1000,16,1e9,,false,1,1.0\n")
    return {"trace": {"format": "csv", "path": str(path)}}


def test_constant_load_and_temperature_give_the_hand_worked_pue():
    # 16 idle GPUs at 100 W: IT = 1600 W for the whole run, and the room starts settled.
    sc = scenario({"weather": {"dry_bulb_c": 30.0}, "design_it_power_w": 2000.0, "fan_power_w": 100.0,
                   "overhead_w": 50.0})
    run = run_scenario(sc)
    assert run.summary["jobs"]["arrived"] == 0
    # By hand: T_evap = 15 − 2 = 13 °C = 286.15 K, T_cond = 30 + 8 = 38 °C = 311.15 K,
    # COP = 0.5 · 286.15 / 25 = 5.723; P_fac = 1600 + 1600/5.723 + 100 + 50 = 2029.5736…
    cop = 0.5 * 286.15 / 25.0
    facility_w = 1600.0 + 1600.0 / cop + 100.0 + 50.0
    f = run.summary["facility"]
    assert f["pue_energy_weighted"] == pytest.approx(facility_w / 1600.0, rel=1e-12)
    assert f["pue_time_mean"] == pytest.approx(facility_w / 1600.0, rel=1e-12)
    assert run.summary["energy_j"]["consumed"] == pytest.approx(facility_w * sc.horizon_s, rel=1e-12)
    ts = run.result.timeseries
    assert np.allclose(ts["pue"], facility_w / 1600.0, rtol=1e-12)
    # Room at steady state: T_supply + P_IT/G, G = 2000 W / 12 K.
    assert np.allclose(ts["room_temp_c"], 24.0 + 1600.0 / (2000.0 / 12.0), rtol=1e-12)
    assert run.summary["carbon_kg"] == pytest.approx(facility_w * sc.horizon_s / 3.6e6 * 250.0 / 1000.0, rel=1e-12)
    # The market covers cooling and overhead as base load: with every GPU idle (unbilled), all of facility power.
    assert np.allclose(run.result.rounds["base_load_w"], facility_w, rtol=1e-12)


def test_cooling_lags_a_load_step(tmp_path):
    tau = 900.0
    sc = scenario({"weather": {"dry_bulb_c": 30.0}, "time_constant_s": tau}, workload=step_workload(tmp_path))
    run = run_scenario(sc)
    jobs, ts = run.result.jobs, run.result.timeseries
    t_start = float(jobs["start_s"].iloc[0])
    after = ts[ts["time_s"] > t_start]
    p0, p1 = 16 * 100.0, float(after["power_w"].iloc[0])
    after = after[np.cumprod(after["power_w"].to_numpy() == p1).astype(bool)]  # while the step holds
    assert p1 > 5 * p0 and after["time_s"].iloc[-1] - t_start > 10 * tau  # precondition: a step, held long
    model = CoolingModel(sc.facility.cooling.params(16 * 700.0))
    k = float(model.electric_per_heat(30.0))
    fan = 0.05 * 16 * 700.0
    heat = p1 + (p0 - p1) * np.exp(-(after["time_s"].to_numpy() - t_start) / tau)  # the closed form
    assert np.allclose(after["cooling_power_w"], fan + k * heat, rtol=1e-9)
    steady = fan + k * p1
    first = after.iloc[0]
    assert first["cooling_power_w"] < 0.9 * steady  # the lag is visible at the first record after the step
    assert after["cooling_power_w"].iloc[-1] == pytest.approx(steady, rel=1e-4)
    assert np.all(np.diff(after["cooling_power_w"].to_numpy()) >= -1e-9)


@pytest.mark.parametrize("supply", [None, {
    "solar": {"capacity_w": 6000, "latitude": 37.36, "longitude": -121.93},
    "battery": {"capacity_wh": 2000, "max_charge_w": 1500, "max_discharge_w": 1500, "initial_soc": 0.5}}])
def test_books_balance_with_cooling_on(supply, tmp_path):
    workload = {"arrivals": {"process": "poisson", "rate_per_s": 0.01}, "gpus_per_job": {"values": [1, 2, 4]},
                "duration_s": {"distribution": "exponential", "mean": 900}}
    sc = scenario({"weather": {"dry_bulb_c": 22.0}, "economiser": "air", "overhead_w": 300.0}, workload=workload,
                  supply=supply, start="2023-06-21T15:00:00Z")
    run = run_scenario(sc)
    e, f = run.result.energy, run.result.facility
    scale = e["consumed_j"]
    assert run.summary["jobs"]["completed"] > 10
    assert abs(e["consumed_j"] - (e["renewable_used_j"] + e["battery_out_j"] + e["grid_j"] + e["unserved_j"])) < 1e-9 * scale
    assert abs(e["renewable_generated_j"] - (e["renewable_used_j"] + e["charged_j"] + e["curtailed_j"])) < 1e-9 * scale
    soc_change = e["battery_soc_end_j"] - e["battery_soc_start_j"]
    assert abs(e["charged_j"] - e["battery_out_j"] - soc_change - e["battery_loss_j"]) < 1e-9 * scale
    # Facility energy = what the books consumed = IT + cooling + overhead; IT = the GPUs' own meters.
    assert abs(e["consumed_j"] - f["facility_energy_j"]) < 1e-9 * scale
    assert abs(f["facility_energy_j"] - (f["it_energy_j"] + f["cooling_energy_j"] + f["overhead_energy_j"])) < 1e-9 * scale
    assert abs(f["it_energy_j"] - float(run.result.gpu_energy_j.sum())) < 1e-9 * scale
    assert f["overhead_energy_j"] == pytest.approx(300.0 * sc.horizon_s, rel=1e-12)
    assert f["pue_energy_weighted"] > 1.0
    if supply is not None:
        assert e["renewable_used_j"] > 0 and e["charged_j"] + e["battery_out_j"] > 0


def test_heat_stored_in_the_room_closes_the_heat_balance(tmp_path):
    # Constant k: cooling − fans = k·∫Q dt, and ∫Q dt = E_IT − τ·(Q_end − Q_0) (the heat not removed is stored).
    tau = 1200.0
    sc = scenario({"weather": {"dry_bulb_c": 35.0}, "time_constant_s": tau}, workload=step_workload(tmp_path))
    run = run_scenario(sc)
    f, ts = run.result.facility, run.result.timeseries
    model = CoolingModel(sc.facility.cooling.params(16 * 700.0))
    k = float(model.electric_per_heat(35.0))
    g = 16 * 700.0 / 12.0
    q0, q_end = 1600.0, g * (float(ts["room_temp_c"].iloc[-1]) - 24.0)
    fan_j = 0.05 * 16 * 700.0 * sc.horizon_s
    assert f["cooling_energy_j"] - fan_j == pytest.approx(k * (f["it_energy_j"] - tau * (q_end - q0)), rel=1e-9)


def test_plant_matches_the_pure_model_across_weather_steps():
    # A plant over an EPW-like weather history (patched in) against CoolingModel.run on the merged step grid.
    cfg = CoolingConfig.model_validate({"weather": {"dry_bulb_c": 20.0}, "economiser": "air"})
    plant = CoolingPlant(cfg, 10_000.0, 4000.0, pd.Timestamp("2023-01-01", tz="UTC"), 5000.0)
    plant.change_s, plant.dry_bulb_c = [0.0, 700.0, 1900.0], [18.0, 23.0, 31.0]
    plant.k = [float(plant.model.electric_per_heat(t)) for t in plant.dry_bulb_c]
    plant._k, plant._next_change_s = plant.k[0], 700.0
    events = [(300.0, 4000.0), (1200.0, 8000.0), (1900.0, 2500.0), (4000.0, 9000.0), (5000.0, 9000.0)]
    total = sum(plant.energy_to(t, p) for t, p in events)
    grid = [0.0, 300.0, 700.0, 1200.0, 1900.0, 4000.0]
    it = [4000.0, 8000.0, 8000.0, 2500.0, 9000.0, 9000.0]
    dry = [18.0, 18.0, 23.0, 23.0, 31.0, 31.0]
    ref = CoolingModel(cfg.params(10_000.0)).run(grid, it[:6], dry, 5000.0, heat0_w=4000.0)
    assert total == pytest.approx(float(np.sum(ref.facility_j)), rel=1e-12)
    assert plant.heat_w == pytest.approx(float(ref.heat_end_w[-1]), rel=1e-12)


@pytest.mark.skipif(not EPW.is_file(), reason="public weather file absent")
def test_epw_weather_drives_the_run():
    sc = scenario({"weather": {"epw": str(EPW)}}, horizon_s=86400.0, start="2023-07-15T07:00:00Z")
    run = run_scenario(sc)
    ts = run.result.timeseries
    assert ts["outdoor_dry_bulb_c"].max() - ts["outdoor_dry_bulb_c"].min() > 3.0  # a summer day's swing
    hot = ts["outdoor_dry_bulb_c"].to_numpy() > ts["outdoor_dry_bulb_c"].median()
    assert ts["pue"][hot].mean() > ts["pue"][~hot].mean()  # constant IT: hotter air, dearer cooling


def test_bad_cooling_values_are_named():
    with pytest.raises(ScenarioError) as exc:
        scenario({"weather": {"dry_bulb_c": 30.0}, "chilled_water_c": 30.0})
    assert "facility.cooling" in str(exc.value) and "chilled_water_c" in str(exc.value)
    with pytest.raises(ScenarioError) as exc:
        scenario({"weather": {"dry_bulb_c": 30.0}, "time_constant_s": -5})
    assert "facility.cooling.time_constant_s" in str(exc.value)
    with pytest.raises(ScenarioError) as exc:
        scenario({"weather": {"dry_bulb_c": 30.0}, "fan_power": 3})
    assert "facility.cooling.fan_power" in str(exc.value) and "fan_power_w" in str(exc.value)


def test_battery_dispatch_is_accepted_with_a_battery_and_refused_without():
    # wired now (tests/test_facility_dispatch.py runs it); it still needs supply.battery
    base = {"cluster": {"gpus": 4}, "workload": {"arrivals": {"process": "poisson", "rate_per_s": 0.01},
                                                 "duration_s": {"distribution": "constant", "value": 60}},
            "facility": {"battery": {"grid_charging": True}}}
    sc = parse_scenario(base | {"supply": {"battery": {"capacity_wh": 100, "max_charge_w": 10, "max_discharge_w": 10}}})
    assert sc.facility.battery.grid_charging
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(base)
    assert "facility.battery" in str(exc.value) and "add supply.battery" in str(exc.value)


def test_cooling_off_adds_nothing():
    sc = parse_scenario({"name": "off", "horizon_s": 3600, "cluster": {"gpus": 4},
                         "workload": {"arrivals": {"process": "poisson", "rate_per_s": 0.01}, "duration_s": {"distribution": "constant", "value": 60}}})
    run = run_scenario(sc)
    assert run.result.facility is None and "facility" not in run.summary
    assert "pue" not in run.result.timeseries.columns
    assert math.isclose(run.result.energy["consumed_j"], float(run.result.gpu_energy_j.sum()), rel_tol=1e-9)


# ------------------------------------------------------------------------------------------ command line
COOLING_YAML = """\
name: cool
horizon_s: 2h
cluster: {gpus: 4, gpu_model: H100}
workload:
  arrivals: {process: poisson, rate_per_s: 0.005}
  duration_s: {distribution: constant, value: 600}
facility:
  cooling: {weather: {dry_bulb_c: 28}, overhead_w: 200}
"""


def test_cli_run_with_cooling_writes_pue_and_its_plot(tmp_path):
    (tmp_path / "cool.yaml").write_text(COOLING_YAML, encoding="utf-8")
    ok(dcsim_cli("run", "cool.yaml", "--out", "out", "--plots", "-q", cwd=tmp_path))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    ts = pd.read_csv(tmp_path / "out" / "timeseries.csv")
    assert summary["facility"]["pue_energy_weighted"] > 1.0
    assert {"facility_power_w", "cooling_power_w", "pue", "room_temp_c", "outdoor_dry_bulb_c"} <= set(ts.columns)
    assert (tmp_path / "out" / "plots" / "pue_vs_outdoor.png").is_file()


def test_cli_bad_cooling_value_is_a_user_error(tmp_path):
    (tmp_path / "cool.yaml").write_text(COOLING_YAML.replace("dry_bulb_c: 28", "dry_bulb_c: 95"), encoding="utf-8")
    proc = user_error(dcsim_cli("run", "cool.yaml", "--out", "out", cwd=tmp_path))
    assert "cool.yaml" in proc.stderr and "facility.cooling.weather.dry_bulb_c" in proc.stderr and "95" in proc.stderr
    assert not (tmp_path / "out").exists()
