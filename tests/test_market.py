"""The posted scarcity price mechanism on hand-built cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcsim.market import RoundSupply, affordable_w, clear_posted_price, jain_index, scarcity_price


def test_scarcity_price_formula():
    assert scarcity_price(0.0, 100.0, 2.0, 1.5) == (pytest.approx(2.0 * math.exp(1.5)), 0.0)
    assert scarcity_price(50.0, 100.0, 2.0, 1.5) == (pytest.approx(2.0 * math.exp(0.75)), 0.5)
    assert scarcity_price(500.0, 100.0, 2.0, 1.5) == (2.0, 1.0)  # surplus: ρ capped at 1
    assert scarcity_price(0.0, 0.0, 2.0, 1.5) == (2.0, 1.0)  # no demand


def test_affordable_power():
    # 1 token at 2 tokens/kWh buys 0.5 kWh = 1.8 MJ; over 300 s that is 6 kW.
    assert affordable_w(np.array([1.0]), 2.0, 300.0)[0] == pytest.approx(6000.0)


def test_posted_price_budget_max_price_and_rationing():
    supply = RoundSupply(renewable_w=100.0, battery_w=0.0, grid_w=500.0, base_load_w=100.0, round_s=3600.0)
    request = np.array([300.0, 300.0, 300.0, 300.0])
    wallets = np.array([100.0, 100.0, 0.1, 100.0])
    max_price = np.array([np.inf, np.inf, np.inf, 0.5])
    c = clear_posted_price(request, max_price, wallets, supply, base_price=1.0, kappa=1.0)
    rho = 100.0 / (100.0 + 1200.0)
    price = math.exp(1 - rho)
    assert c.price_tokens_per_kwh == pytest.approx(price)
    want = np.array([300.0, 300.0, 0.1 * 1000 / price, 0.0])  # wallet 0.1 affords 0.1/price kWh over 1 h
    assert want.sum() > 500.0 and c.rationed  # 639.7 W wanted, 500 W sellable (100 + 500 − 100 base load)
    expected = want * (500.0 / want.sum())
    np.testing.assert_allclose(c.allocations_w, expected)
    np.testing.assert_allclose(c.debits_tokens, expected * price * 3600 / 3.6e6)
    assert np.all(c.debits_tokens <= wallets + 1e-12)


def test_rationing_scales_everyone_by_the_same_factor():
    supply = RoundSupply(0.0, 0.0, 500.0, 100.0, 300.0)
    c = clear_posted_price(np.array([200.0, 400.0]), np.full(2, np.inf), np.full(2, 1e9), supply, 1.0, 0.0)
    assert c.rationed
    np.testing.assert_allclose(c.allocations_w, [400.0 / 3, 800.0 / 3])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1000), st.floats(0, 100), st.floats(0, 20)), min_size=1, max_size=20),
       st.floats(0, 5000), st.floats(0, 5000), st.floats(0, 3000))
def test_posted_price_properties(agents, renewable, grid, base):
    request, wallets, max_price = (np.array(x) for x in zip(*agents))
    supply = RoundSupply(renewable, 0.0, grid, base, 300.0)
    c = clear_posted_price(request, max_price, wallets, supply, 1.0, 2.0)
    assert np.all(c.allocations_w >= 0)
    assert np.all(c.allocations_w <= request * (1 + 1e-12))
    assert c.allocations_w.sum() <= supply.sellable_w * (1 + 1e-9) + 1e-9
    assert np.all(c.debits_tokens <= wallets * (1 + 1e-9) + 1e-12)
    # less renewable never lowers the price
    c2 = clear_posted_price(request, max_price, wallets, RoundSupply(renewable * 0.5, 0.0, grid, base, 300.0), 1.0, 2.0)
    assert c2.price_tokens_per_kwh >= c.price_tokens_per_kwh


def test_jain_index():
    assert jain_index(np.array([1.0, 1.0, 1.0])) == 1.0
    assert jain_index(np.array([1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.25)
    assert jain_index(np.array([])) == 1.0
