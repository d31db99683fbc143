"""Market building blocks on hand-built cases: scarcity price, budgets, posted-price clearing, supply curve,
Jain, Gini and the welfare ratio."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dcsim.market import (BidBook, SupplyCurve, affordable_w, efficient_welfare, gini, jain_index, scarcity_price,
                          welfare_ratio)
from dcsim.mechanisms import PostedPrice


def curve(renewable, grid, base, round_s, battery=0.0):
    return SupplyCurve(np.array([renewable, battery, grid]), np.array([0.01, 0.5, 1.0]),
                       ("renewable", "battery", "grid"), base, round_s)


def test_scarcity_price_formula():
    assert scarcity_price(0.0, 100.0, 2.0, 1.5) == (pytest.approx(2.0 * math.exp(1.5)), 0.0)
    assert scarcity_price(50.0, 100.0, 2.0, 1.5) == (pytest.approx(2.0 * math.exp(0.75)), 0.5)
    assert scarcity_price(500.0, 100.0, 2.0, 1.5) == (2.0, 1.0)  # surplus: ρ capped at 1
    assert scarcity_price(0.0, 0.0, 2.0, 1.5) == (2.0, 1.0)  # no demand


def test_affordable_power():
    # 1 token at 2 tokens/kWh buys 0.5 kWh = 1.8 MJ; over 300 s that is 6 kW.
    assert affordable_w(np.array([1.0]), 2.0, 300.0)[0] == pytest.approx(6000.0)


def test_supply_curve_serves_base_load_from_the_cheapest_blocks():
    s = SupplyCurve(np.array([100.0, 50.0, 1000.0]), np.array([0.01, 0.1, 1.0]), ("renewable", "battery", "grid"),
                    120.0, 300.0)
    blocks, cost = s.residual()
    np.testing.assert_array_equal(blocks, [0.0, 30.0, 1000.0])
    assert s.sellable_w == 1030.0


def test_posted_price_budget_max_price_and_rationing():
    supply = curve(renewable=100.0, grid=500.0, base=100.0, round_s=3600.0)
    request = np.array([300.0, 300.0, 300.0, 300.0])
    wallets = np.array([100.0, 100.0, 0.1, 100.0])
    max_price = np.array([np.inf, np.inf, np.inf, 0.5])
    c = PostedPrice(1.0, 1.0).clear(BidBook.single_step(request, max_price), supply, wallets)
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
    c = PostedPrice(1.0, 0.0).clear(BidBook.single_step(np.array([200.0, 400.0]), np.full(2, np.inf)),
                                    curve(0.0, 500.0, 100.0, 300.0), np.full(2, 1e9))
    assert c.rationed
    np.testing.assert_allclose(c.allocations_w, [400.0 / 3, 800.0 / 3])


def test_jain_index():
    assert jain_index(np.array([1.0, 1.0, 1.0])) == 1.0
    assert jain_index(np.array([1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.25)
    assert jain_index(np.array([])) == 1.0


def test_gini():
    assert gini(np.array([5.0, 5.0, 5.0, 5.0])) == 0.0
    assert gini(np.array([0.0, 0.0, 0.0, 8.0])) == pytest.approx(3 / 4)  # one holds all: (n − 1)/n
    assert gini(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.25)  # Σ|xi − xj| / (2 n² mean) = 20 / 80
    assert gini(np.zeros(3)) == 0.0


def test_welfare_ratio_hand_worked():
    # Agent 0 values 50 W at 3 and 50 W more at 1; agent 1 values 100 W at 2. Supply: 100 W at 0.5, then 1.5.
    # Efficient: 50 W @3 (gain 2.5) + 50 W @2 (1.5) on the cheap block, 50 W @2 on the dear one (0.5),
    # and stop (1 < 1.5): welfare rate 125 + 75 + 25 = 225 (tokens/kWh × W).
    book = BidBook(np.array([[50.0, 50.0], [100.0, 0.0]]), np.array([[3.0, 1.0], [2.0, 2.0]]), np.zeros(2))
    s = SupplyCurve(np.array([100.0, 1000.0]), np.array([0.5, 1.5]), ("renewable", "grid"), 0.0, 300.0)
    assert efficient_welfare(book, s) == pytest.approx(225.0)
    assert welfare_ratio(book, s, np.array([50.0, 100.0])) == pytest.approx(1.0)
    # Giving agent 0 its low-value block instead: value 150 + 100, cost 50 + 75 → 175 / 225
    assert welfare_ratio(book, s, np.array([100.0, 50.0])) == pytest.approx(175.0 / 225.0)
    infinite = BidBook(np.array([[10.0]]), np.array([[np.inf]]), np.zeros(1))
    assert math.isnan(welfare_ratio(infinite, s, np.array([10.0])))  # a price-blind bid has no finite value
