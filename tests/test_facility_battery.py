"""Tests for dcsim.facility.battery: hand-worked dispatch, energy conservation, agreement with EnergyBooks, tariffs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcsim.config import BatteryConfig
from dcsim.energy import EnergyBooks
from dcsim.facility.battery import (
    BatteryParams,
    Dispatch,
    demand_charge_usd,
    dispatch_step,
    export_revenue_usd,
    peak_demand_w,
)
from dcsim.timeseries import StepSeries

KWH = 3.6e6


def _battery(**changes) -> BatteryParams:
    # 10 kWh, 2 kW each way, η = 0.81 so η_c = η_d = 0.9
    return BatteryParams(**(dict(capacity_j=10 * KWH, max_charge_w=2000.0, max_discharge_w=2000.0,
                                 round_trip_efficiency=0.81) | changes))


# --------------------------------------------------------------------------------------------- dispatch
def test_charge_for_an_hour_by_hand() -> None:
    step = dispatch_step(_battery(), 5 * KWH, Dispatch.CHARGE, 2000.0, 3600.0)
    assert step.charged_j == pytest.approx(2 * KWH)  # 2 kW for 1 h from the bus
    assert step.soc_end_j == pytest.approx(6.8 * KWH)  # stores 0.9 of it
    assert step.loss_j == pytest.approx(0.2 * KWH)
    assert step.bound_at_s is None and step.active_s == 3600.0 and step.bus_power_w == -2000.0


def test_charge_stops_exactly_when_full() -> None:
    # From 9 kWh, 1 kWh of room at 1.8 kW stored: full after 2000 s; then it holds.
    step = dispatch_step(_battery(), 9 * KWH, Dispatch.CHARGE, 2000.0, 3600.0)
    assert step.bound_at_s == pytest.approx(2000.0) and step.active_s == pytest.approx(2000.0)
    assert step.soc_end_j == 10 * KWH
    assert step.charged_j == pytest.approx(2000.0 * 2000.0)


def test_discharge_stops_at_min_soc() -> None:
    # min SoC 20 % = 2 kWh; from 3 kWh, 1 kWh × η_d = 0.9 kWh deliverable; at 1.5 kW that takes 2160 s.
    b = _battery(min_soc_fraction=0.2)
    step = dispatch_step(b, 3 * KWH, Dispatch.DISCHARGE, 1500.0, 7200.0)
    assert step.bound_at_s == pytest.approx(2160.0)
    assert step.discharged_j == pytest.approx(0.9 * KWH) and step.soc_end_j == 2 * KWH
    assert step.loss_j == pytest.approx(0.9 * KWH * (1 / 0.9 - 1))
    assert step.bus_power_w == pytest.approx(1500.0)


def test_hold_and_zero_rate_change_nothing() -> None:
    b = _battery()
    for step in (dispatch_step(b, 4 * KWH, Dispatch.HOLD, 0.0, 100.0),
                 dispatch_step(b, 4 * KWH, Dispatch.CHARGE, 0.0, 100.0)):
        assert step.soc_end_j == 4 * KWH and step.charged_j == step.discharged_j == step.loss_j == 0.0


@pytest.mark.parametrize("args, message", [
    ((11 * KWH, Dispatch.HOLD, 0.0, 1.0), r"soc_j = .* is outside \[0.0, 36000000.0\] J"),
    ((5 * KWH, Dispatch.CHARGE, 2500.0, 1.0), r"CHARGE at rate_w = 2500.0 W; expected a rate in \[0, 2000\] W \(max_charge_w\)"),
    ((5 * KWH, Dispatch.DISCHARGE, -1.0, 1.0), r"DISCHARGE at rate_w = -1.0 W.*max_discharge_w"),
    ((5 * KWH, Dispatch.HOLD, 0.0, -1.0), r"dt_s must be a finite number >= 0"),
])
def test_dispatch_errors(args, message) -> None:
    with pytest.raises(ValueError, match=message):
        dispatch_step(_battery(), *args)


def test_param_errors() -> None:
    with pytest.raises(ValueError, match="round_trip_efficiency must be in"):
        _battery(round_trip_efficiency=0.0)
    with pytest.raises(ValueError, match="min_soc_fraction < max_soc_fraction"):
        _battery(min_soc_fraction=0.5, max_soc_fraction=0.5)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1), st.lists(st.tuples(st.sampled_from(list(Dispatch)), st.floats(0, 1), st.floats(0, 20000)),
                                min_size=1, max_size=30),
       st.floats(0.5, 1.0))
def test_energy_is_conserved_over_any_schedule(soc0, commands, eta) -> None:
    b = _battery(round_trip_efficiency=eta, min_soc_fraction=0.1, max_soc_fraction=0.95)
    soc = b.soc_min_j + soc0 * (b.soc_max_j - b.soc_min_j)
    start = soc
    charged = discharged = loss = 0.0
    for command, rate, dt in commands:
        step = dispatch_step(b, soc, command, rate * 2000.0, dt)
        assert b.soc_min_j <= step.soc_end_j <= b.soc_max_j
        assert step.soc_end_j - step.soc_start_j == pytest.approx(
            step.charged_j * b.eta_c - step.discharged_j / b.eta_d, abs=1e-9 * b.capacity_j)
        charged, discharged, loss, soc = charged + step.charged_j, discharged + step.discharged_j, loss + step.loss_j, step.soc_end_j
    # bus energy in − out = stored + lost, to 1e-9 of the capacity
    assert charged - discharged == pytest.approx((soc - start) + loss, abs=1e-9 * b.capacity_j)


def test_agrees_with_the_energy_books_battery() -> None:
    # EnergyBooks charges from surplus renewable power and discharges into a deficit; the dispatchable
    # battery driven by the same rates must end at the same state of charge (same η split, same bounds).
    cfg = BatteryConfig(capacity_wh=10_000.0, max_charge_w=2000.0, max_discharge_w=2000.0,
                        round_trip_efficiency=0.81, initial_soc=0.9)
    books = EnergyBooks(cfg, import_cap_w=None)
    b = BatteryParams.from_config(cfg)
    soc = books.soc_j
    schedule = [(1500.0, 3000.0, 3600.0), (4000.0, 1000.0, 7200.0), (500.0, 500.0, 100.0)]  # demand, renewable, dt
    for demand_w, renewable_w, dt_s in schedule:
        books.advance(dt_s, demand_w, renewable_w, carbon_g_per_kwh=0.0, price_usd_per_mwh=0.0)
        if renewable_w > demand_w:
            step = dispatch_step(b, soc, Dispatch.CHARGE, min(renewable_w - demand_w, b.max_charge_w), dt_s)
        elif demand_w > renewable_w:
            step = dispatch_step(b, soc, Dispatch.DISCHARGE, min(demand_w - renewable_w, b.max_discharge_w), dt_s)
        else:
            step = dispatch_step(b, soc, Dispatch.HOLD, 0.0, dt_s)
        soc = step.soc_end_j
        assert soc == pytest.approx(books.soc_j, abs=1e-6)
    assert books.totals.charged_j > 0 and books.totals.battery_out_j > 0


# --------------------------------------------------------------------------------------------- tariffs
def test_peak_demand_by_hand() -> None:
    # 100 kW for 10 min, 400 kW for 5 min (first 15-min interval: mean 200 kW); then 50 kW for 15 min;
    # then 300 kW for 15 min in the second 30-min billing window.
    times = np.array([0.0, 600.0, 900.0, 1800.0])
    power = np.array([100e3, 400e3, 50e3, 300e3])
    starts, peaks = peak_demand_w(times, power, end_s=2700.0, demand_interval_s=900.0, billing_window_s=1800.0)
    assert starts.tolist() == [0.0, 1800.0]
    np.testing.assert_allclose(peaks, [200e3, 300e3], rtol=1e-12)
    assert demand_charge_usd(peaks, usd_per_kw=15.0) == pytest.approx((200 + 300) * 15.0)


def test_peak_demand_matches_fine_sampling() -> None:
    rng = np.random.default_rng(11)
    times = np.sort(np.concatenate([[0.0], rng.uniform(1, 86400 * 3, 200)]))
    power = rng.uniform(0, 1e6, times.size)
    end_s = 86400.0 * 3
    starts, peaks = peak_demand_w(times, power, end_s, demand_interval_s=900.0, billing_window_s=86400.0)
    # Brute force: the power at the middle of every second (no change time falls inside most seconds,
    # and the error of the few that do is bounded by the jump).
    mid = np.arange(int(end_s)) + 0.5
    p = power[np.searchsorted(times, mid, side="right") - 1]
    means = p.reshape(-1, 900).mean(axis=1)
    brute = means.reshape(3, -1).max(axis=1)
    assert starts.tolist() == [0.0, 86400.0, 172800.0]
    np.testing.assert_allclose(peaks, brute, rtol=2e-3)


def test_partial_demand_interval_is_averaged_over_what_it_covers() -> None:
    # Data from t = 450 s: the first 15-min interval is half covered; 600 kW there is a 600 kW mean.
    _, peaks = peak_demand_w(np.array([450.0]), np.array([600e3]), end_s=900.0)
    assert peaks.tolist() == [600e3]


def test_export_revenue_by_hand() -> None:
    # 1 MW exported for 2 h; the price steps from 40 to −10 USD/MWh at t = 1.5 h: 1.5·40 − 0.5·10 = 55 USD.
    price = StepSeries("export price_usd_per_mwh", np.array([0.0, 5400.0]), np.array([40.0, -10.0]), end_s=1e6)
    assert export_revenue_usd([0.0], [1e6], 7200.0, price) == pytest.approx(55.0, rel=1e-12)
    # export changing inside a price step: 0.5 MW for 1 h then 1 MW for 0.5 h at 40, then 1 MW for 0.5 h at −10
    assert export_revenue_usd([0.0, 3600.0], [0.5e6, 1e6], 7200.0, price) == pytest.approx(20 + 20 - 5, rel=1e-12)


def test_tariff_input_errors() -> None:
    price = StepSeries.constant("p", 10.0)
    with pytest.raises(ValueError, match=r"export_w\[1\] = -5.0"):
        export_revenue_usd([0.0, 1.0], [1.0, -5.0], 2.0, price)
    with pytest.raises(ValueError, match="strictly increasing"):
        peak_demand_w([0.0, 0.0], [1.0, 2.0], 5.0)
    with pytest.raises(ValueError, match=r"power_w\[0\] = nan"):
        peak_demand_w([0.0], [np.nan], 5.0)
    with pytest.raises(ValueError, match="billing_window_s >= demand_interval_s"):
        peak_demand_w([0.0], [1.0], 5.0, demand_interval_s=900.0, billing_window_s=60.0)
