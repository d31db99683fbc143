"""Tests for dcsim.facility.cooling: hand-worked steady states, exact integrals vs an ODE solver, lag, economiser, EPW."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

from dcsim.errors import TraceError
from dcsim.facility.cooling import (
    CoolingModel,
    CoolingParams,
    epw_temperatures_at,
    read_epw_temperatures,
    wet_bulb_stull_c,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pvlib")

SHARED_EPW = Path(__file__).resolve().parents[2] / "shared" / "traces" / "weather" / "USA_CA_San.Jose-Mineta.epw"
K = 273.15


def _model(**changes) -> CoolingModel:
    base = dict(design_it_power_w=1e6, overhead_w=20e3)  # fans default to 5 % of design: 50 kW
    return CoolingModel(CoolingParams(**(base | changes)))


# --------------------------------------------------------------------------------------------- steady state
def test_steady_state_air_cooled_by_hand() -> None:
    m = _model()
    # Evaporator 15 − 2 = 13 °C, condenser 30 + 8 = 38 °C: Carnot 286.15 / 25, half of it.
    cop = 0.5 * (13 + K) / 25.0
    assert float(m.cop(30.0)) == pytest.approx(cop, rel=1e-12)
    assert cop == pytest.approx(5.723, abs=1e-9)
    it_w = 800e3
    facility_w = it_w + 50e3 + it_w / cop + 20e3
    assert float(m.steady_facility_power_w(it_w, 30.0)) == pytest.approx(facility_w, rel=1e-12)
    assert float(m.steady_pue(it_w, 30.0)) == pytest.approx(facility_w / it_w, rel=1e-12)
    # Room air at steady state: 24 °C + 800 kW / (1 MW / 12 K) = 33.6 °C.
    assert float(m.room_temperature_c(it_w)) == pytest.approx(33.6, rel=1e-12)
    # A settled room stays settled, and an hour costs exactly P_fac · 3600 s.
    step = m.advance(it_w, it_w, 3600.0, 30.0)
    assert float(step.heat_end_w) == pytest.approx(it_w, rel=1e-15)
    assert float(step.facility_j) == pytest.approx(facility_w * 3600.0, rel=1e-12)


def test_figures_quoted_in_the_docs() -> None:
    # docs/facility.md: COP at AHRI 550/590 air-cooled rating conditions, and steady PUE at 80 % load.
    ahri = CoolingModel(CoolingParams(design_it_power_w=1e6, chilled_water_c=6.7))
    assert float(ahri.cop(35.0)) == pytest.approx(0.5 * (4.7 + K) / (35.0 + 8.0 - 4.7), rel=1e-12)
    assert round(float(ahri.cop(35.0)), 2) == 3.63
    plain = CoolingModel(CoolingParams(design_it_power_w=1e6))
    pue = plain.steady_pue(800e3, np.array([0.0, 25.0, 30.0, 35.0]))
    np.testing.assert_allclose(pue, [1.146, 1.20, 1.24, 1.27], atol=0.005)
    assert float(pue[0]) == pytest.approx(1 + 50e3 / 800e3 + 1 / 12.0, rel=1e-12)  # fans + COP at its cap
    econ = CoolingModel(CoolingParams(design_it_power_w=1e6, economiser="air"))
    assert float(econ.steady_pue(800e3, 20.0)) == pytest.approx(1 + 50e3 / 800e3 + 0.03, rel=1e-12)


def test_water_cooled_uses_the_wet_bulb() -> None:
    m = _model(condenser="water")
    # Condenser at wet-bulb 20 + 8 = 28 °C: lift 15 K.
    assert float(m.electric_per_heat(35.0, 20.0)) == pytest.approx(15.0 / (0.5 * (13 + K)), rel=1e-12)
    with pytest.raises(ValueError, match="needs the outdoor wet-bulb"):
        m.electric_per_heat(35.0)


def test_cop_is_capped_for_small_lifts() -> None:
    m = _model(max_cop=12.0)
    assert m.cop(np.array([5.0, 4.0, -10.0])).tolist() == [12.0, 12.0, 12.0]  # zero or negative lift
    assert float(m.cop(40.0)) < float(m.cop(30.0)) < float(m.cop(20.0))


def test_air_economiser_changeover() -> None:
    m = _model(economiser="air")  # full free cooling at dry-bulb <= 24 − 4 = 20 °C, none at >= 24 °C
    phi = m.economiser_fraction(np.array([10.0, 20.0, 22.0, 24.0, 30.0]))
    assert phi.tolist() == [1.0, 1.0, 0.5, 0.0, 0.0]
    k = m.electric_per_heat(np.array([10.0, 22.0, 30.0]))
    cop22 = 0.5 * (13 + K) / 17.0  # condenser 22 + 8 = 30 °C
    np.testing.assert_allclose(k, [0.03, 0.5 / cop22 + 0.5 * 0.03, 1 / (0.5 * (13 + K) / 25.0)], rtol=1e-12)
    # Continuous across both ends of the band.
    edges = m.electric_per_heat(np.array([20.0 - 1e-9, 20.0 + 1e-9, 24.0 - 1e-9, 24.0 + 1e-9]))
    assert edges[0] == pytest.approx(edges[1], abs=1e-9) and edges[2] == pytest.approx(edges[3], abs=1e-9)
    # Free cooling is cheaper than the chiller whenever it runs.
    assert float(m.steady_pue(1e6, 10.0)) < float(_model().steady_pue(1e6, 10.0))


def test_water_economiser_follows_the_wet_bulb() -> None:
    m = _model(economiser="water", condenser="water")  # full below 15 − 4 = 11 °C wet-bulb
    assert m.economiser_fraction(30.0, np.array([10.0, 13.0, 15.0])).tolist() == [1.0, 0.5, 0.0]


# --------------------------------------------------------------------------------------------- dynamics
def test_cooling_lags_a_step_in_it_power() -> None:
    m = _model(time_constant_s=600.0)
    step = m.advance(500e3, 1e6, 600.0, 30.0)
    assert float(step.heat_end_w) == pytest.approx(1e6 - 500e3 * math.exp(-1.0), rel=1e-12)  # 63 % of the step
    long = m.advance(500e3, 1e6, 6000.0, 30.0)
    assert float(long.heat_end_w) == pytest.approx(1e6, rel=1e-4)  # settled after 10 τ
    # Heat not yet removed is stored in the room: Σ(P_IT − Q)dt = τ·(Q_end − Q_0).
    assert float(step.it_j - step.heat_removed_j) == pytest.approx(600.0 * (float(step.heat_end_w) - 500e3), rel=1e-12)
    # and cooling power trails: less than at steady state during the rise
    assert float(step.facility_j) < float(m.steady_facility_power_w(1e6, 30.0)) * 600.0


def test_no_lag_when_time_constant_is_zero() -> None:
    m = _model(time_constant_s=0.0)
    step = m.advance(0.0, 1e6, 100.0, 30.0)
    assert float(step.heat_end_w) == 1e6
    assert float(step.facility_j) == pytest.approx(float(m.steady_facility_power_w(1e6, 30.0)) * 100.0, rel=1e-12)


def test_exact_integral_matches_an_ode_solver() -> None:
    m = _model(time_constant_s=900.0, economiser="air")
    times = np.array([0.0, 300.0, 1000.0, 1100.0, 4000.0])
    it_w = np.array([200e3, 900e3, 100e3, 700e3, 700e3])
    dry_c = np.array([30.0, 30.0, 22.0, 18.0, 25.0])
    end_s = 7000.0
    exact = m.run(times, it_w, dry_c, end_s, heat0_w=400e3)

    p = m.params
    q, total = 400e3, 0.0
    for t0, t1, it, dry in zip(times, np.append(times[1:], end_s), it_w, dry_c):
        k = float(m.electric_per_heat(dry))

        def rhs(_t, y, it=it, k=k):  # y = (Q, facility energy)
            return [(it - y[0]) / p.time_constant_s, it + p.fan_w + p.overhead_w + k * y[0]]

        sol = solve_ivp(rhs, (t0, t1), [q, 0.0], method="DOP853", rtol=1e-11, atol=1e-6)
        q, total = sol.y[0, -1], total + sol.y[1, -1]
    assert float(exact.facility_j.sum()) == pytest.approx(total, rel=1e-9)
    assert float(exact.heat_end_w[-1]) == pytest.approx(q, rel=1e-9)
    # The books add up per interval.
    parts = exact.it_j + exact.chiller_j + exact.economiser_j + exact.fan_j + exact.overhead_j
    np.testing.assert_allclose(exact.facility_j, parts, rtol=1e-15)


def test_run_starts_settled_by_default_and_checks_times() -> None:
    m = _model()
    r = m.run([0.0], [600e3], [30.0], 3600.0)
    assert float(r.facility_j[0]) == pytest.approx(float(m.steady_facility_power_w(600e3, 30.0)) * 3600, rel=1e-12)
    with pytest.raises(ValueError, match="strictly increasing"):
        m.run([0.0, 0.0], [1.0, 1.0], [30.0, 30.0], 10.0)
    with pytest.raises(ValueError, match=r"dry_bulb_c needs one value per time in times_s \(2\), got shape \(3,\)"):
        m.run([0.0, 5.0], [1.0, 1.0], [30.0, 30.0, 30.0], 10.0)
    with pytest.raises(ValueError, match="dt_s must be >= 0"):
        m.advance(0.0, 1.0, -1.0, 30.0)


@pytest.mark.parametrize("changes, message", [
    (dict(design_it_power_w=0.0), "design_it_power_w must be > 0"),
    (dict(second_law_efficiency=1.5), r"second_law_efficiency must be <= 1"),
    (dict(time_constant_s=-1.0), "time_constant_s must be >= 0"),
    (dict(condenser="glycol"), "condenser must be 'air' or 'water'"),
    (dict(economiser="yes"), "economiser must be 'none', 'air' or 'water'"),
    (dict(fan_power_w=-5.0), "fan_power_w must be >= 0"),
])
def test_parameter_errors(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        CoolingParams(**(dict(design_it_power_w=1e6) | changes))


# --------------------------------------------------------------------------------------------- weather
def test_stull_wet_bulb_against_the_papers_example() -> None:
    # Stull (2011): T = 20 °C, RH = 50 % gives Tw = 13.7 °C.
    assert float(wet_bulb_stull_c(20.0, 50.0)) == pytest.approx(13.7, abs=0.05)
    t = np.array([-10.0, 0.0, 15.0, 35.0, 45.0])
    for rh in (10.0, 40.0, 80.0):
        assert np.all(wet_bulb_stull_c(t, rh) < t)
    np.testing.assert_allclose(wet_bulb_stull_c(t, 99.0), t, atol=0.3)  # saturated air: wet-bulb ≈ dry-bulb


def test_epw_temperatures_from_a_generated_file(tmp_path: Path) -> None:
    from test_renewables import _write_epw  # the suite's synthetic EPW writer (RH 50 %, dew 5 °C)

    path = _write_epw(tmp_path / "w.epw", lambda m, d, h: np.zeros(m.shape), temp_air_c=20.0)
    frame = read_epw_temperatures(path)
    assert len(frame) == 8760 and np.all(frame["dry_bulb_c"] == 20.0)
    np.testing.assert_allclose(frame["wet_bulb_c"], 13.7, atol=0.05)
    at = epw_temperatures_at(path, pd.DatetimeIndex(["2024-02-29T12:00Z", "2023-07-01T00:00Z"]))
    assert at["dry_bulb_c"].tolist() == [20.0, 20.0]

    lines = path.read_text(encoding="utf-8").splitlines()
    lines[8] = lines[8].replace(",5.0,50,", ",5.0,999,", 1)
    bad = tmp_path / "bad.epw"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(TraceError, match=r"bad.epw: field 'relative_humidity' at data record 1 .*got 999.0; expected a value in \[0, 110\] %"):
        read_epw_temperatures(bad)
    with pytest.raises(TraceError, match="missing.epw"):
        read_epw_temperatures(tmp_path / "missing.epw")


def test_shared_epw_wet_bulb_between_dew_point_and_dry_bulb() -> None:
    if not SHARED_EPW.is_file():
        pytest.skip(f"shared EPW not present at {SHARED_EPW}")
    import pvlib

    frame = read_epw_temperatures(SHARED_EPW)
    weather, _ = pvlib.iotools.read_epw(str(SHARED_EPW))
    dew = weather["temp_dew"].to_numpy(float)
    assert len(frame) == 8760
    assert np.all(frame["wet_bulb_c"] <= frame["dry_bulb_c"])
    # Psychrometrics: T_dew ≤ T_wb. Stull's fit is within ~1 K, and a few records of this file disagree with
    # themselves (e.g. 2016-12-10 09:00: dry-bulb = dew point = 12.8 °C but RH 75 %), so ask it of 98 %.
    assert np.mean(frame["wet_bulb_c"].to_numpy() >= dew - 1.0) > 0.98
    # A July afternoon in San Jose (local standard time 15:00 = 23:00 UTC) is warmer than a January night.
    at = epw_temperatures_at(SHARED_EPW, pd.DatetimeIndex(["2023-07-15T23:00Z", "2023-01-15T11:00Z"]))
    assert at["dry_bulb_c"].iloc[0] > at["dry_bulb_c"].iloc[1]
