"""Energy books on hand-worked intervals: the split by source, battery limits hit mid-interval, import caps."""
from __future__ import annotations

import pytest

from dcsim.config import BatteryConfig
from dcsim.energy import EnergyBooks


def books(capacity_wh=1.0, soc=0.5, charge_w=100.0, discharge_w=50.0, eta=0.81, cap=None):
    battery = BatteryConfig(capacity_wh=capacity_wh, max_charge_w=charge_w, max_discharge_w=discharge_w,
                            round_trip_efficiency=eta, initial_soc=soc)
    return EnergyBooks(battery, cap)


def test_no_battery_split_and_carbon_cost():
    b = EnergyBooks(None, None)
    b.advance(10.0, demand_w=100.0, renewable_w=40.0, carbon_g_per_kwh=360.0, price_usd_per_mwh=100.0)
    t = b.totals
    assert (t.consumed_j, t.renewable_used_j, t.grid_j, t.curtailed_j) == (1000.0, 400.0, 600.0, 0.0)
    assert t.carbon_g == pytest.approx(600.0 / 3.6e6 * 360.0)
    assert t.cost_usd == pytest.approx(600.0 / 3.6e9 * 100.0)


def test_surplus_is_curtailed_without_battery():
    b = EnergyBooks(None, None)
    b.advance(5.0, 100.0, 300.0, 0.0, 0.0)
    assert (b.totals.renewable_used_j, b.totals.curtailed_j, b.totals.grid_j) == (500.0, 1000.0, 0.0)


def test_battery_fills_mid_interval():
    # 1 Wh = 3600 J, half full; η = 0.81 → η_c = 0.9; surplus 200 W, charge limit 100 W stores 90 W:
    # full after 1800 / 90 = 20 s; then all 200 W surplus is curtailed for the last 10 s.
    b = books()
    b.advance(30.0, demand_w=100.0, renewable_w=300.0, carbon_g_per_kwh=0.0, price_usd_per_mwh=0.0)
    t = b.totals
    assert t.charged_j == pytest.approx(2000.0)
    assert t.curtailed_j == pytest.approx(100.0 * 20 + 200.0 * 10)
    assert t.battery_loss_j == pytest.approx(200.0)
    assert b.soc_j == 3600.0


def test_battery_empties_mid_interval_then_grid():
    # 900 J stored, η_d = 0.9, deficit 100 W, discharge limit 50 W draws 55.6 W from the store:
    # empty after 900 · 0.9 / 50 = 16.2 s.
    b = books(capacity_wh=1.0, soc=0.25)
    b.advance(20.0, demand_w=100.0, renewable_w=0.0, carbon_g_per_kwh=0.0, price_usd_per_mwh=0.0)
    t = b.totals
    assert t.battery_out_j == pytest.approx(50.0 * 16.2)
    assert t.grid_j == pytest.approx(50.0 * 16.2 + 100.0 * 3.8)
    assert b.soc_j == 0.0
    assert b.discharge_available_w() == 0.0


def test_import_cap_books_unserved():
    b = EnergyBooks(None, 60.0)
    b.advance(10.0, 100.0, 0.0, 0.0, 0.0)
    assert (b.totals.grid_j, b.totals.unserved_j) == (600.0, 400.0)


def test_many_small_steps_equal_one_big_step():
    a, c = books(soc=0.3), books(soc=0.3)
    a.advance(100.0, 80.0, 20.0, 300.0, 50.0)
    for _ in range(1000):
        c.advance(0.1, 80.0, 20.0, 300.0, 50.0)
    for key, value in a.totals.as_dict().items():
        assert getattr(c.totals, key) == pytest.approx(value, rel=1e-9, abs=1e-9), key
