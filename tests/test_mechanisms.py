"""The four clearing mechanisms against hand computations, auction theory and invariants."""
from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from dcsim.market import BidBook, SupplyCurve
from dcsim.mechanisms import MECHANISMS, Kelly, PayAsBid, PostedPrice, UniformPrice, Vcg

RICH = 1e9  # a wallet no budget test reaches


def curve(blocks_w, cost, names=None, base_load_w=0.0, round_s=3600.0) -> SupplyCurve:
    names = names or tuple(f"block{i}" for i in range(len(blocks_w)))
    return SupplyCurve(np.asarray(blocks_w, float), np.asarray(cost, float), tuple(names), base_load_w, round_s)


def steps(rows):
    """A bid book from per-agent lists of (watts, price) steps, padded with empty steps."""
    k = max(len(r) for r in rows)
    w = np.zeros((len(rows), k))
    p = np.zeros((len(rows), k))
    for i, row in enumerate(rows):
        for j, (watts, price) in enumerate(row):
            w[i, j], p[i, j] = watts, price
    return BidBook(w, p, np.zeros(len(rows)))


def test_registry_names_every_mechanism():
    assert MECHANISMS == {"posted_price": PostedPrice, "uniform_price": UniformPrice, "pay_as_bid": PayAsBid,
                          "vcg": Vcg, "kelly": Kelly}
    for cls in MECHANISMS.values():
        assert "llocation" in cls.__doc__ and "Payment" in cls.__doc__, cls


# ---------------------------------------------------------------------------------------------- posted
def test_posted_price_formula_and_multi_step_bids():
    # ρ = renewable / (base load + Σ requests) = 300 / (100 + 500) = 0.5 → p = 2·e^{3·0.5}.
    supply = curve([300.0, 50.0, 1000.0], [0.0, 0.5, 2.0], ("renewable", "battery", "grid"), base_load_w=100.0)
    book = steps([[(200.0, 40.0), (100.0, 5.0)], [(200.0, 40.0)]])
    c = PostedPrice(2.0, 3.0).clear(book, supply, np.full(2, RICH))
    p = 2.0 * math.exp(1.5)
    assert c.price_tokens_per_kwh == pytest.approx(p)
    assert p > 5.0  # agent 0's second block is priced below p, so it is not taken
    np.testing.assert_allclose(c.allocations_w, [200.0, 200.0])
    np.testing.assert_allclose(c.debits_tokens, c.allocations_w * p * 3600 / 3.6e6)
    assert not c.rationed
    # Renewables covering all demand give p0.
    assert PostedPrice(2.0, 3.0).clear(book, curve([1e4], [0.0], ("renewable",)), np.full(2, RICH)).price_tokens_per_kwh == 2.0


# ----------------------------------------------------------------------------------------- uniform
H = 3600.0 / 3.6e6  # kWh per W over a one-hour round


def test_uniform_jump_from_renewable_to_grid_price():
    supply = curve([100.0, 1000.0], [0.01, 1.0], ("renewable", "grid"))
    # 150 W wanted: renewables (100 W) cannot cover it, so the marginal unit is grid power at 1.0.
    c = UniformPrice().clear(BidBook.single_step([50.0] * 3, [2.0] * 3), supply, np.full(3, RICH))
    assert c.price_tokens_per_kwh == 1.0
    np.testing.assert_allclose(c.allocations_w, [50.0] * 3)
    np.testing.assert_allclose(c.debits_tokens, 1.0 * c.allocations_w * H)
    assert not c.rationed
    # 80 W wanted: renewables cover it and the price stays at their cost.
    c = UniformPrice().clear(BidBook.single_step([40.0, 40.0], [2.0, 2.0]), supply, np.full(2, RICH))
    assert c.price_tokens_per_kwh == 0.01
    np.testing.assert_allclose(c.allocations_w, [40.0, 40.0])
    np.testing.assert_allclose(c.debits_tokens, 0.01 * c.allocations_w * H)


def test_uniform_multi_step_bids_cross_on_a_vertical_demand_segment():
    # Supply: 80 W @0.1, 50 W @0.4, 100 W @1.0. Demand steps: A 60 W @5, 40 W @0.5; B 50 W @3, 50 W @0.2.
    # Demand strictly above p: 200 W below 0.2, 150 W on [0.2, 0.5), 110 W on [0.5, 3).
    # S(0.4) = 130 < 150 = D⁺(0.4); S(0.5) = 130 >= 110 = D⁺(0.5): p* = 0.5, where demand is the vertical
    # segment [110, 150] and supply (130) lies on it. A's 40 W block at 0.5 gets the 20 W left.
    supply = curve([80.0, 50.0, 100.0], [0.1, 0.4, 1.0])
    book = steps([[(60.0, 5.0), (40.0, 0.5)], [(50.0, 3.0), (50.0, 0.2)]])
    c = UniformPrice().clear(book, supply, np.full(2, RICH))
    assert c.price_tokens_per_kwh == 0.5
    np.testing.assert_allclose(c.allocations_w, [80.0, 50.0])
    np.testing.assert_allclose(c.debits_tokens, 0.5 * c.allocations_w * H)
    np.testing.assert_array_equal(c.prices_tokens_per_kwh, [0.5, 0.5])
    assert c.rationed  # part of A's marginal block went unserved


def test_uniform_ties_at_the_margin_share_pro_rata():
    # 100 W @0.01. A 80 W @2 is filled; B 60 W and C 40 W tie at 1.0 and share the 20 W left 60:40.
    c = UniformPrice().clear(BidBook.single_step([80.0, 60.0, 40.0], [2.0, 1.0, 1.0]), curve([100.0], [0.01]),
                             np.full(3, RICH))
    assert c.price_tokens_per_kwh == 1.0
    np.testing.assert_allclose(c.allocations_w, [80.0, 12.0, 8.0])


def test_uniform_price_is_the_highest_rejected_bid_when_supply_is_short():
    # 100 W @0.01; A 80 W @5, B 80 W @3. Demand exceeds supply at every price below 3, so p* = 3 (B's bid),
    # A is filled and B gets the 20 W left.
    c = UniformPrice().clear(BidBook.single_step([80.0, 80.0], [5.0, 3.0]), curve([100.0], [0.01]), np.full(2, RICH))
    assert c.price_tokens_per_kwh == 3.0
    np.testing.assert_allclose(c.allocations_w, [80.0, 20.0])
    assert c.rationed
    # Nothing for sale at all: nobody gets power and the price is the highest bid.
    c = UniformPrice().clear(BidBook.single_step([80.0, 80.0], [5.0, 3.0]), curve([0.0], [0.01]), np.full(2, RICH))
    assert c.price_tokens_per_kwh == 5.0 and not c.allocations_w.any()


def test_uniform_budget_capped_demand_crosses_between_steps():
    supply = curve([100.0, 1000.0], [0.01, 1.0], ("renewable", "grid"))
    # One agent wants 200 W at up to 10 but holds 0.075 tokens: it can pay for 75/p W at price p
    # (0.075 tokens / (p · 1e-3 kWh per W)). Supply is 100 W on [0.01, 1): 75/p = 100 at p = 0.75.
    c = UniformPrice().clear(BidBook.single_step([200.0], [10.0]), supply, np.array([0.075]))
    assert c.price_tokens_per_kwh == pytest.approx(0.75)
    np.testing.assert_allclose(c.allocations_w, [100.0])
    np.testing.assert_allclose(c.debits_tokens, [0.075])
    # With a second, unconstrained agent wanting 60 W: 30/p + 60 = 100 at p = 0.75; A gets 40 W.
    c = UniformPrice().clear(BidBook.single_step([200.0, 60.0], [10.0, 10.0]), supply, np.array([0.03, RICH]))
    assert c.price_tokens_per_kwh == pytest.approx(0.75)
    np.testing.assert_allclose(c.allocations_w, [40.0, 60.0])
    # Price-blind bidders (infinite bids) with wallets: budgets set a finite price that sells all supply.
    c = UniformPrice().clear(BidBook.single_step([500.0, 500.0], [np.inf, np.inf]), curve([100.0], [0.0]),
                             np.array([0.05, 0.15]))
    assert c.price_tokens_per_kwh == pytest.approx(2.0)  # (0.05 + 0.15) / (100 W · 1e-3 kWh/W)
    np.testing.assert_allclose(c.allocations_w, [25.0, 75.0])


def _supply_at(p, blocks, cost):
    return sum(b for b, c in zip(blocks, cost) if c <= p)


def _demand_above(p, book, wallets, round_s):
    total = 0.0
    for i in range(len(wallets)):
        if wallets[i] <= 0:
            continue
        q = sum(w for w, v in zip(book.steps_w[i], book.steps_price[i]) if v > p and w > 0)
        with np.errstate(over="ignore", divide="ignore"):
            cap = math.inf if p <= 0 else wallets[i] * 3.6e6 / (p * round_s)
        total += min(q, cap)
    return total


def power(most_w):
    """0, or at least a milliwatt: subnormal powers only test float underflow."""
    return st.one_of(st.just(0.0), st.floats(1e-3, most_w))


def bid_books(max_agents=6, max_steps=3, infinite=True):
    """Random bid books with wallets: (book, wallets)."""
    price = st.floats(0.0, 6.0)
    if infinite:
        price = st.one_of(price, st.just(math.inf))

    @st.composite
    def build(draw):
        n = draw(st.integers(1, max_agents))
        k = draw(st.integers(1, max_steps))
        w = np.array(draw(st.lists(st.lists(st.one_of(power(400), st.integers(0, 40).map(lambda x: 10.0 * x)),
                                            min_size=k, max_size=k), min_size=n, max_size=n)))
        p = -np.sort(-np.array(draw(st.lists(st.lists(price, min_size=k, max_size=k), min_size=n, max_size=n))), axis=1)
        # Tokens are 0 or at least a micro-token: subnormal wallets only test float underflow.
        tokens = st.one_of(st.just(0.0), st.floats(1e-6, 20))
        wallets = np.array(draw(st.lists(tokens, min_size=n, max_size=n)))
        kelly = np.array(draw(st.lists(tokens, min_size=n, max_size=n)))
        return BidBook(w, p, kelly), wallets

    return build()


@st.composite
def supplies(draw):
    """(renewable_w, battery_w, grid_w, costs, base_load_w, round_s) for a three-block merit order."""
    renewable = draw(power(3000))
    battery = draw(power(500))
    grid = draw(power(3000))
    c_r = draw(st.one_of(st.just(0.0), st.floats(1e-6, 0.1)))
    c_b = draw(st.floats(0.1, 1.0))
    c_g = draw(st.floats(1.0, 5.0))
    base = draw(power(2000))
    round_s = draw(st.sampled_from([60.0, 300.0, 3600.0]))
    return renewable, battery, grid, (c_r, c_b, c_g), base, round_s


def make_curve(renewable, battery, grid, costs, base, round_s):
    return curve([renewable, battery, grid], costs, ("renewable", "battery", "grid"), base, round_s)


@settings(max_examples=300, deadline=None)
@given(bid_books(), supplies())
def test_uniform_price_is_the_supply_demand_intersection(book_wallets, sup):
    book, wallets = book_wallets
    supply = make_curve(*sup)
    c = UniformPrice().clear(book, supply, wallets)
    blocks, cost = supply.residual()
    p = c.price_tokens_per_kwh
    round_s = supply.round_s
    if not np.any((book.steps_w > 0) & (wallets[:, None] > 0)):
        assert not c.allocations_w.any()
        return
    # Supply covers the demand strictly above p* ...
    assert _supply_at(p, blocks, cost) >= _demand_above(p, book, wallets, round_s) * (1 - 1e-9) - 1e-9
    # ... and at any lower price it does not.
    if p > 0:
        below = p * (1 - 1e-7) - 1e-12 if math.isfinite(p) else 1e300
        assert _supply_at(below, blocks, cost) < _demand_above(below, book, wallets, round_s)
    # Everyone pays p*; bids strictly above p* are filled within budget.
    h = round_s / 3.6e6
    np.testing.assert_array_equal(c.prices_tokens_per_kwh, p)
    served = c.allocations_w > 0
    np.testing.assert_allclose(c.debits_tokens[served], c.allocations_w[served] * p * h, rtol=1e-9, atol=1e-12)
    assert np.all(c.debits_tokens[~served] == 0)
    if math.isfinite(p):
        for i in range(len(wallets)):
            if wallets[i] > 0:
                firm = sum(w for w, v in zip(book.steps_w[i], book.steps_price[i]) if v > p)
                with np.errstate(over="ignore", divide="ignore"):
                    cap = math.inf if p <= 0 else wallets[i] / (p * h)
                assert c.allocations_w[i] >= min(firm, cap) * (1 - 1e-9) - 1e-9


# --------------------------------------------------------------------------------------------- VCG
# Quanta of 1 kW over a one-hour round are 1 kWh each, so a value of v tokens/kWh is v tokens per quantum.
Q = Vcg(quantum_w=1000.0)


def quanta_book(values):
    """One 1 kW step per declared quantum value; ``values[i]`` lists agent i's values, highest first."""
    return steps([[(1000.0, v) for v in vals] or [(0.0, 0.0)] for vals in values])


def _welfare(values, costs):
    """Best welfare: match the highest values with the cheapest supply quanta while value >= cost."""
    d = sorted((v for vals in values for v in vals), reverse=True)
    return sum(v - c for v, c in zip(d, sorted(costs)) if v >= c)


def test_vcg_payments_equal_externalities_on_a_hand_worked_example():
    # Supply quanta: 2 renewable @0.5, 3 grid @3 (5 in all). A values [10, 8, 4], B [7, 5], C [6, 3.5].
    # Efficient: 10A 8A 7B 6C 5B served (values >= costs 0.5 0.5 3 3 3); 4A and 3.5C rejected (no supply).
    # W = 36 − 10 = 26. Headline = max(best rejected 4, marginal cost 3) = 4.
    # A: without A, 7 6 5 3.5 are served at 0.5 0.5 3 3 → W^{-A} = 21.5 − 7 = 14.5; others' welfare with A
    #    present = 7 + 6 + 5 − 10 = 8; P_A = 14.5 − 8 = 6.5 = max(3.5, 3) + max(none, 3).
    # B: without B, 10 8 6 4 3.5 all served → W^{-B} = 31.5 − 10 = 21.5; with B: 10 + 8 + 6 − 10 = 14;
    #    P_B = 7.5 = max(4, 3) + max(3.5, 3).
    # C: without C, 10 8 7 5 4 served → W^{-C} = 34 − 10 = 24; with C: 10 + 8 + 7 + 5 − 10 = 20; P_C = 4.
    values = [[10, 8, 4], [7, 5], [6, 3.5]]
    supply = curve([2000.0, 3000.0], [0.5, 3.0], ("renewable", "grid"))
    c = Q.clear(quanta_book(values), supply, np.full(3, RICH))
    np.testing.assert_allclose(c.allocations_w, [2000.0, 2000.0, 1000.0])
    np.testing.assert_allclose(c.debits_tokens, [6.5, 7.5, 4.0])
    np.testing.assert_allclose(c.prices_tokens_per_kwh, [3.25, 3.75, 4.0])
    assert c.price_tokens_per_kwh == 4.0 and c.rationed
    # The same payments from the welfare definition, computed independently.
    costs = [0.5, 0.5, 3, 3, 3]
    total = _welfare(values, costs)
    won = [2, 2, 1]
    for i in range(3):
        others = [v for j, vals in enumerate(values) if j != i for v in vals]
        externality = _welfare([others], costs) - (total - sum(values[i][: won[i]]))
        assert c.debits_tokens[i] == pytest.approx(externality)


def test_vcg_budget_rule_trims_the_lowest_quanta_and_reclears():
    # As above but B holds 5 tokens: its values are capped at 5 (what its wallet pays for one quantum),
    # and its two quanta would cost max(4, 3) + max(3.5, 3) = 7.5 > 5. Its cheapest term (3.5) fits, so it
    # keeps one quantum. Re-cleared: 10A 8A 6C 5B 4A served, 3.5C rejected; A pays max(3.5, 3) + 3 + 3 = 9.5,
    # B pays max(3.5, 3) = 3.5 <= 5, C pays 3 (no one else is rejected).
    values = [[10, 8, 4], [7, 5], [6, 3.5]]
    supply = curve([2000.0, 3000.0], [0.5, 3.0], ("renewable", "grid"))
    c = Q.clear(quanta_book(values), supply, np.array([RICH, 5.0, RICH]))
    np.testing.assert_allclose(c.allocations_w, [3000.0, 1000.0, 1000.0])
    np.testing.assert_allclose(c.debits_tokens, [9.5, 3.5, 3.0])
    assert c.debits_tokens[1] <= 5.0
    # The headline is the marginal price of the efficient allocation before trimming.
    assert c.price_tokens_per_kwh == 4.0


def _types(levels, max_len):
    """Every non-increasing list of quantum values from ``levels`` with 0..max_len quanta."""
    out = [()]
    for n in range(1, max_len + 1):
        out += [tuple(sorted(t, reverse=True)) for t in itertools.combinations_with_replacement(levels, n)]
    return out


def _outcomes(types, n_agents, supply):
    """Quanta won and payment of every agent under every reported profile: arrays shaped (T,)*n + (n,)."""
    shape = (len(types),) * n_agents
    won = np.zeros(shape + (n_agents,))
    paid = np.zeros(shape + (n_agents,))
    for idx in itertools.product(range(len(types)), repeat=n_agents):
        c = Q.clear(quanta_book([list(types[k]) for k in idx]), supply, np.full(n_agents, RICH))
        won[idx] = c.allocations_w / 1000.0
        paid[idx] = c.debits_tokens
    return won, paid


def _assert_truthful_dominant(types, won, paid):
    n_agents = won.ndim - 1
    t_count = len(types)
    # True value of the first m quanta for each type (extra quanta claimed beyond the true ones are worth 0).
    worth = np.zeros((t_count, 4 * n_agents + 1))
    for k, t in enumerate(types):
        cum = np.concatenate([[0.0], np.cumsum(t)])
        worth[k] = np.concatenate([cum, np.full(worth.shape[1] - cum.size, cum[-1])])
    for i in range(n_agents):
        w_i = np.moveaxis(won[..., i], i, -1).reshape(-1, t_count)  # rows: others' reports; cols: i's report
        p_i = np.moveaxis(paid[..., i], i, -1).reshape(-1, t_count)
        m = w_i.astype(int)
        for truth in range(t_count):
            utility = worth[truth][m] - p_i  # (others, report)
            best_lie = utility.max(axis=1)
            assert np.all(utility[:, truth] >= best_lie - 1e-9), (i, types[truth])


def test_vcg_truthful_bidding_is_weakly_dominant_three_agents():
    # 3 agents, 0–3 quanta each valued in {1, 3, 4}, supply 2 quanta @0.5 and 3 @3 (a value ties the grid cost).
    types = _types((1.0, 3.0, 4.0), 3)
    supply = curve([2000.0, 3000.0], [0.5, 3.0], ("renewable", "grid"))
    won, paid = _outcomes(types, 3, supply)
    assert won.sum(axis=-1).max() == 5  # supply binds in some profiles
    _assert_truthful_dominant(types, won, paid)


@pytest.mark.parametrize("blocks,cost", [([1000.0, 2000.0], [0.0, 2.5]), ([3000.0, 1000.0], [1.0, 4.5]),
                                         ([0.0, 2000.0], [0.2, 2.0])])
def test_vcg_truthful_bidding_is_weakly_dominant_two_agents(blocks, cost):
    types = _types((0.5, 2.0, 3.5, 5.0), 3)
    won, paid = _outcomes(types, 2, curve(blocks, cost))
    _assert_truthful_dominant(types, won, paid)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.integers(0, 8), max_size=4), min_size=1, max_size=4),
       st.lists(st.tuples(st.integers(0, 4), st.integers(0, 8)), min_size=1, max_size=3))
def test_vcg_allocation_is_efficient_and_payments_are_externalities(raw_values, raw_supply):
    values = [sorted((float(v) for v in vals), reverse=True) for vals in raw_values]
    raw_supply = sorted(raw_supply, key=lambda b: b[1])
    supply = curve([1000.0 * n for n, _ in raw_supply], [float(c) for _, c in raw_supply])
    costs = [float(c) for n, c in raw_supply for _ in range(n)]
    c = Q.clear(quanta_book(values), supply, np.full(len(values), RICH))
    won = (c.allocations_w / 1000.0).round().astype(int)
    total = _welfare(values, costs)
    served = int(won.sum())
    achieved = sum(sum(vals[:m]) for vals, m in zip(values, won)) - sum(sorted(costs)[:served])
    assert achieved == pytest.approx(total)
    for i, vals in enumerate(values):
        others = [v for j, o in enumerate(values) if j != i for v in o]
        externality = _welfare([others], costs) - (total - sum(vals[: won[i]]))
        assert c.debits_tokens[i] == pytest.approx(externality, abs=1e-9)
        assert c.debits_tokens[i] <= sum(vals[: won[i]]) + 1e-9  # individually rational


# ------------------------------------------------------------------------------------------- Kelly
def test_kelly_water_filling_hand_example():
    # 100 W; bids 1, 1, 2 tokens. Shares 25/25/50 W, but A asks for 10 W: its 15 W go to B and C 1:2 → 30, 60.
    # The price is the level at which B's 1 token buys 30 W for an hour (0.03 kWh): 33.3 tokens/kWh, below
    # Σb / S = 4 / 0.1 = 40, so no one is charged more than it bid.
    book = BidBook(np.array([[10.0], [1000.0], [1000.0]]), np.ones((3, 1)), np.array([1.0, 1.0, 2.0]))
    c = Kelly().clear(book, curve([100.0], [0.0]), np.full(3, 10.0))
    np.testing.assert_allclose(c.allocations_w, [10.0, 30.0, 60.0])
    assert c.price_tokens_per_kwh == pytest.approx(1.0 / 0.03)
    np.testing.assert_allclose(c.debits_tokens, [1.0 / 3.0, 1.0, 2.0])
    # Without caps: allocation ∝ bid and the price is Σb / S.
    book = BidBook(np.full((3, 1), 1000.0), np.ones((3, 1)), np.array([1.0, 1.0, 2.0]))
    c = Kelly().clear(book, curve([100.0], [0.0]), np.full(3, 10.0))
    np.testing.assert_allclose(c.allocations_w, [25.0, 25.0, 50.0])
    assert c.price_tokens_per_kwh == pytest.approx(40.0)
    # Bids are capped at the wallet; bids under min_bid_tokens are ignored.
    c = Kelly(min_bid_tokens=0.5).clear(book, curve([100.0], [0.0]), np.array([0.2, 1.0, 1.0]))
    np.testing.assert_allclose(c.allocations_w, [0.0, 50.0, 50.0])


@pytest.mark.parametrize("n_agents", [2, 3, 5])
def test_kelly_symmetric_best_response_equilibrium_price(n_agents):
    # Linear value v per kWh, 1 kWh for sale (1 kW for an hour), requests that never bind. Each agent's
    # utility is v·x_i(b) − b_i with x_i from the mechanism itself; iterate best responses to a fixed point.
    v = 2.0
    supply = curve([1000.0], [0.0])
    wallets = np.full(n_agents, RICH)
    requests = np.full((n_agents, 1), 1e7)

    def clear(b):
        return Kelly().clear(BidBook(requests, np.ones((n_agents, 1)), b), supply, wallets)

    def utility(b, i, bi):
        trial = b.copy()
        trial[i] = bi
        return v * clear(trial).allocations_w[i] * H - bi

    # Gauss–Seidel sweeps. The utility is flat at its maximum, so a best response is resolved only to
    # ~sqrt(machine eps) ≈ 1e-8 tokens; sweeps stop once no bid moves by more than 1e-7, and a price
    # Σb/S with N such bids is then good to ~N·1e-7 / (v(N−1)/N): 1e-5 relative covers N <= 5.
    b = np.full(n_agents, 0.1)
    for sweep in range(200):
        previous = b.copy()
        for i in range(n_agents):
            res = minimize_scalar(lambda x: -utility(b, i, x), bounds=(1e-12, v * 1.0), method="bounded",
                                  options={"xatol": 1e-13})
            b[i] = res.x
        if np.max(np.abs(b - previous)) < 1e-7:
            break
    assert sweep < 199, "best responses did not converge"
    c = clear(b)
    assert c.price_tokens_per_kwh == pytest.approx(v * (n_agents - 1) / n_agents, rel=1e-5)
    assert c.allocations_w.sum() == pytest.approx(1000.0, rel=1e-12)
    np.testing.assert_allclose(b, v * (n_agents - 1) / n_agents**2, rtol=1e-5)  # b* = vS(N−1)/N²


@settings(max_examples=200, deadline=None)
@given(bid_books(infinite=False), supplies())
def test_kelly_sells_all_supply_when_requests_cover_it(book_wallets, sup):
    book, wallets = book_wallets
    supply = make_curve(*sup)
    c = Kelly().clear(book, supply, wallets)
    bidding = (np.minimum(book.kelly_tokens, wallets) > 0) & (book.request_w > 0)
    want = float(book.request_w[bidding].sum())
    expected = min(want, supply.sellable_w) if supply.sellable_w > 0 else 0.0
    assert c.allocations_w.sum() == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert np.all(c.allocations_w[~bidding] == 0)


# ---------------------------------------------------------------------------------------- invariants
MECHANISM_CASES = [PostedPrice(1.0, 2.0), UniformPrice(), Vcg(10.0), Kelly()]


@pytest.mark.parametrize("mechanism", MECHANISM_CASES, ids=lambda m: type(m).__name__)
@settings(max_examples=150, deadline=None)
@given(book_wallets=bid_books(), sup=supplies())
def test_clearing_invariants(mechanism, book_wallets, sup):
    book, wallets = book_wallets
    supply = make_curve(*sup)
    c = mechanism.clear(book, supply, wallets)
    alloc = c.allocations_w
    assert alloc.shape == c.prices_tokens_per_kwh.shape == c.debits_tokens.shape == wallets.shape
    assert np.all(alloc >= 0)
    assert np.all(alloc <= book.request_w * (1 + 1e-9) + 1e-9)
    assert alloc.sum() <= supply.sellable_w * (1 + 1e-9) + 1e-9
    assert np.all(c.debits_tokens >= 0)
    assert np.all(c.debits_tokens <= wallets * (1 + 1e-9) + 1e-12)
    assert np.all(alloc[wallets == 0] == 0)
    h = supply.round_s / 3.6e6
    served = alloc > 0
    np.testing.assert_allclose(c.debits_tokens[served], alloc[served] * c.prices_tokens_per_kwh[served] * h,
                               rtol=1e-9, atol=1e-12)
    assert not math.isnan(c.price_tokens_per_kwh)


@pytest.mark.parametrize("mechanism", MECHANISM_CASES, ids=lambda m: type(m).__name__)
@settings(max_examples=150, deadline=None)
@given(book_wallets=bid_books(), sup=supplies(), shrink=st.floats(0.0, 1.0, exclude_max=True))
def test_less_renewable_never_lowers_the_price(mechanism, book_wallets, sup, shrink):
    book, wallets = book_wallets
    renewable, *rest = sup
    more = mechanism.clear(book, make_curve(renewable, *rest), wallets).price_tokens_per_kwh
    less = mechanism.clear(book, make_curve(renewable * shrink, *rest), wallets).price_tokens_per_kwh
    assume(not (math.isinf(more) and math.isinf(less)))
    assert less >= more * (1 - 1e-9) - 1e-12


def test_vcg_is_fast_enough_for_ten_thousand_agents():
    # 10k agents × 60 quanta of 10 W: the scale the engine clears every round.
    rng = np.random.default_rng(3)
    n = 10_000
    w = np.full((n, 3), 200.0)
    p = -np.sort(-rng.uniform(0.1, 5.0, (n, 3)), axis=1)
    supply = curve([1e6, 2e5, 2e6], [0.0, 0.5, 2.0], ("renewable", "battery", "grid"), 1e5, 300.0)
    start = time.perf_counter()
    c = Vcg(10.0).clear(BidBook(w, p, np.zeros(n)), supply, rng.uniform(0.0, 2.0, n))
    elapsed = time.perf_counter() - start
    assert c.allocations_w.sum() <= supply.sellable_w
    assert elapsed < 5.0  # about 0.2 s here; the bound only catches an accidental loop over agents
