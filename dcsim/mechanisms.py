"""Clearing mechanisms: posted scarcity price, uniform-price and pay-as-bid auctions, VCG over power quanta,
Kelly share.

Every mechanism is a small frozen dataclass of its parameters with one pure method,
``clear(bids, supply, wallets) -> Clearing``, vectorised over agents. Units: power in W, prices in
tokens/kWh, wallets and debits in tokens; an allocation of ``a`` W held for ``round_s`` seconds is
``a · round_s / 3.6e6`` kWh.

Rules shared by all four (``docs/market.md`` has the equations):

- The auction sells ``supply.residual()``: the merit-order blocks left after the base load has
  taken the cheapest power. Every supply block cost and bid price is assumed >= 0.
- ``0 <= allocation_i <= request_i`` (row sum of ``bids.steps_w``) and ``Σ allocation <= sellable``.
- Budgets bind: ``debit_i = allocation_i · round_kWh_per_W · price_i <= wallet_i``. An agent with an
  empty wallet gets nothing. Debits are clipped to the wallet to absorb last-ulp rounding.
- ``price_tokens_per_kwh`` (the headline) never falls when renewable supply shrinks, all else fixed.
- Ties are broken deterministically (pro rata where power is divisible, lower agent index first for
  VCG's indivisible quanta), so the same inputs always give the same clearing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcsim.market import J_PER_KWH, BidBook, Clearing, SupplyCurve, affordable_w, scarcity_price

# Relative slack for comparing sums of floats that are equal in exact arithmetic.
_REL_TOL = 1e-12


def _inputs(bids: BidBook, wallets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bid steps as float ``(n, K)`` arrays and wallets as ``(n,)``, checked for matching shapes."""
    steps_w = np.asarray(bids.steps_w, dtype=float)
    steps_price = np.asarray(bids.steps_price, dtype=float)
    if steps_w.ndim == 1:
        steps_w, steps_price = steps_w[:, None], steps_price[:, None]
    wallets = np.asarray(wallets, dtype=float).reshape(-1)
    if steps_w.shape != steps_price.shape or steps_w.shape[0] != wallets.shape[0]:
        raise ValueError(
            f"bid book and wallets disagree: steps_w {steps_w.shape}, steps_price {steps_price.shape}, "
            f"wallets {wallets.shape}"
        )
    return np.clip(steps_w, 0.0, None), steps_price, np.clip(wallets, 0.0, None)


def _kwh_per_w(supply: SupplyCurve) -> float:
    """Energy one watt held for the round delivers, kWh."""
    return max(float(supply.round_s), 0.0) / J_PER_KWH


def _finish(alloc_w: np.ndarray, prices: np.ndarray, wallets: np.ndarray, kwh_per_w: float,
            price: float, rationed: bool) -> Clearing:
    """Build the Clearing: debits = allocation × round energy × price, never above the wallet."""
    debits = np.where(alloc_w > 0, alloc_w * kwh_per_w * np.where(alloc_w > 0, prices, 0.0), 0.0)
    return Clearing(alloc_w, prices, np.minimum(debits, wallets), float(price), bool(rationed))


def _idle_price(blocks_w: np.ndarray, cost: np.ndarray) -> float:
    """Headline when nobody demands anything: the cost of the cheapest power still for sale.

    With nothing for sale either, the highest block cost (0 with no blocks), so that shrinking
    supply never lowers the price."""
    for_sale = blocks_w > 0
    if np.any(for_sale):
        return float(np.min(cost[for_sale]))
    return float(np.max(cost)) if cost.size else 0.0


def _budget_power(budget: np.ndarray, price: float) -> np.ndarray:
    """Highest quantity each budget buys at a price: ``budget / price`` (∞ at a zero price, 0 at ∞)."""
    if price <= 0:
        return np.full(budget.shape, np.inf)
    with np.errstate(invalid="ignore", over="ignore"):
        out = budget / price
    return np.where(np.isinf(budget), np.inf, out)


def _level(quantity: np.ndarray, budget: np.ndarray, target: float) -> float:
    """Largest price ``p`` with ``Σ_i min(quantity_i, budget_i / p) >= target`` (water-filling level).

    ``g(p) = Σ min(q_i, β_i/p)`` falls continuously from ``Σ_{β>0} q`` (p → 0) to ``Σ_{β=∞} q``
    (p → ∞). Sorting agents by the price ``t_i = β_i/q_i`` at which their budget starts to bind makes
    ``g`` explicit on each interval ``[t_(j), t_(j+1)]``: ``g(p) = A_j + B_j / p`` with ``A_j`` the
    quantity of agents not yet budget-bound and ``B_j`` the budgets of those that are, so the level
    is found in closed form after one sort.

    Returns:
        The level; 0 when even ``p → 0`` falls short, ∞ when unbounded budgets alone reach the target.
    """
    q = np.asarray(quantity, dtype=float)
    beta = np.asarray(budget, dtype=float)
    live = (q > 0) & (beta > 0)
    q, beta = q[live], beta[live]
    unbounded = np.isinf(beta)
    fixed_q = float(q[unbounded].sum())
    if target <= fixed_q * (1 + _REL_TOL):
        return np.inf
    q, beta = q[~unbounded], beta[~unbounded]
    need = target - fixed_q
    if need > float(q.sum()) * (1 + _REL_TOL) or q.size == 0:
        return 0.0
    with np.errstate(over="ignore"):  # a vanishing quantity: never budget-bound (t = ∞)
        t = beta / q
    order = np.argsort(t, kind="stable")
    t, q, beta = t[order], q[order], beta[order]
    q_from = np.cumsum(q[::-1])[::-1]  # Σ_{l >= j} q_(l)
    beta_before = np.concatenate([[0.0], np.cumsum(beta)[:-1]])  # Σ_{l < j} β_(l)
    g_at_t = q_from + beta_before / t
    j = int(np.count_nonzero(g_at_t >= need * (1 - _REL_TOL))) - 1  # g falls with j
    if j < 0:
        return 0.0
    a_j = float(q_from[j + 1]) if j + 1 < q.size else 0.0
    b_j = float(beta_before[j] + beta[j])
    if need - a_j <= 0:
        return float(t[j + 1]) if j + 1 < t.size else np.inf
    return b_j / (need - a_j)


# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PostedPrice:
    """Posted scarcity price with budget limits and pro-rata rationing.

    Price: ``p = p0 · exp(κ (1 − ρ))`` with ``ρ = min(1, R / D)``, ``R`` the power of the supply
    blocks named ``"renewable"`` (before base load) and ``D = base_load_w + Σ_i request_i``.

    Allocation: agent i takes every block it bids at ``>= p``, limited by what its wallet pays for at
    ``p`` over the round: ``want_i = min(Σ_k w_ik [v_ik >= p], wallet_i / (p · h))`` with ``h`` the
    round's kWh per W. If ``Σ want > sellable`` every allocation is scaled by ``sellable / Σ want``.

    Payment: everyone pays ``p`` per kWh used. The headline is ``p``; it ignores the supply costs
    (the teaching mode). An empty wallet gets nothing, even at a zero price.

    Attributes:
        base_price_tokens_per_kwh: ``p0``, the price when renewables cover all demand, tokens/kWh.
        kappa: Scarcity steepness ``κ`` (>= 0).
    """

    base_price_tokens_per_kwh: float
    kappa: float

    def clear(self, bids: BidBook, supply: SupplyCurve, wallets: np.ndarray) -> Clearing:
        steps_w, steps_price, wallets = _inputs(bids, wallets)
        blocks = np.asarray(supply.blocks_w, dtype=float)
        renewable_w = float(sum(b for b, name in zip(blocks, supply.names) if name == "renewable"))
        demand_w = float(supply.base_load_w) + float(steps_w.sum())
        price, _ = scarcity_price(renewable_w, demand_w, self.base_price_tokens_per_kwh, self.kappa)
        taken = (steps_w * (steps_price >= price)).sum(axis=1)
        want = np.where(wallets > 0, np.minimum(taken, affordable_w(wallets, price, supply.round_s)), 0.0)
        total = float(want.sum())
        sellable = supply.sellable_w
        rationed = total > sellable * (1 + _REL_TOL)  # not for the last ulp of a sum taken in another order
        alloc = want * (sellable / total) if total > sellable else want
        return _finish(alloc, np.full(alloc.shape, price), wallets, _kwh_per_w(supply), price, rationed)


# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UniformPrice:
    """Multi-unit uniform-price auction over the merit-order curve; every winner pays the clearing price.

    Curves at a price ``p`` (``h`` = the round's kWh per W, ``β_i = wallet_i / h``):

    - residual supply ``S(p) = Σ_j s_j [c_j <= p]`` (blocks left after base load, cost ``c_j``);
    - budget-limited demand strictly above p, ``D⁺(p) = Σ_i min(Σ_k w_ik [v_ik > p], β_i / p)``;
    - and including bids at p, ``D(p)`` (the same with ``v_ik >= p``).

    Clearing price: ``p* = min{p >= 0 : S(p) >= D⁺(p)}``, the intersection of the two step curves.
    Because ``S`` rises and ``D⁺`` falls, the set is an interval ``[p*, ∞)``, so ``p*`` is unique and
    less supply can only raise it. ``p*`` is either a supply cost, a bid price, or (when a budget binds
    between two of those) the root of ``Σ_i min(Q_i, β_i/p) = S``, found in closed form.

    Why ``D⁺`` and not ``D``: at a bid price the demand curve is a vertical segment
    ``[D⁺(p), D(p)]``; the curves cross wherever supply lies on it. If demand exceeds supply at every
    price below the highest bid, ``p*`` is the highest bid that cannot be filled in full (the highest
    rejected bid), and the bids at ``p*`` share what is left. Requiring ``S >= D`` instead would skip
    that bid price, leaving power unsold that a bidder values above its cost.

    Allocation: bids strictly above ``p*`` are filled (within budget at ``p*``); bids exactly at
    ``p*`` share ``min(S(p*), D(p*)) − D⁺(p*)`` pro rata to their budget-limited size. Payment:
    ``p*`` per kWh for every winner; the headline is ``p*``. ``rationed`` says that demand at
    ``p*`` went partly unserved. With no demand the headline is the cheapest residual supply cost.
    """

    def clear(self, bids: BidBook, supply: SupplyCurve, wallets: np.ndarray) -> Clearing:
        steps_w, steps_price, wallets = _inputs(bids, wallets)
        n = wallets.size
        h = _kwh_per_w(supply)
        blocks_w, cost = supply.residual()
        for_sale = blocks_w > 0
        s_cost, s_w = cost[for_sale], blocks_w[for_sale]
        cum_s = np.cumsum(s_w)

        active = (steps_w > 0) & (steps_price >= 0) & (wallets[:, None] > 0)
        w = np.where(active, steps_w, 0.0)
        budget = np.full(n, np.inf) if h <= 0 else wallets / h  # W · tokens/kWh
        if not np.any(active):
            return _finish(np.zeros(n), np.zeros(n), wallets, h, _idle_price(blocks_w, cost), False)

        def supply_at(p: float) -> float:
            k = int(np.searchsorted(s_cost, p, side="right"))
            return float(cum_s[k - 1]) if k > 0 else 0.0

        def demand_above(p: float) -> np.ndarray:
            return np.minimum((w * (steps_price > p)).sum(axis=1), _budget_power(budget, p))

        def clears(p: float) -> bool:
            d = float(demand_above(p).sum())
            return supply_at(p) >= d * (1 - _REL_TOL)

        cand = np.unique(np.concatenate([s_cost, steps_price[active]]))
        lo, hi = 0, cand.size - 1  # clears(cand[-1]) holds: nobody bids above the highest bid price
        while lo < hi:
            mid = (lo + hi) // 2
            if clears(float(cand[mid])):
                hi = mid
            else:
                lo = mid + 1
        k = lo
        price = float(cand[k])

        if k > 0:
            # Between the last failing candidate and this one nothing changes but the budgets: if they
            # alone bring demand down to supply, the curves cross strictly inside the interval.
            below = float(cand[k - 1])
            s_between = supply_at(below)
            q_between = (w * (steps_price >= price)).sum(axis=1)
            if float(np.minimum(q_between, _budget_power(budget, price)).sum()) < s_between * (1 - _REL_TOL):
                root = _level(q_between, budget, s_between)
                price = float(min(max(root, below), price))
                alloc = np.minimum(q_between, _budget_power(budget, price))
                total = float(alloc.sum())
                if total > s_between:
                    alloc = alloc * (s_between / total)
                return _finish(alloc, np.full(n, price), wallets, h, price, False)

        cap = _budget_power(budget, price)
        firm = np.minimum((w * (steps_price > price)).sum(axis=1), cap)
        incl = np.minimum((w * (steps_price >= price)).sum(axis=1), cap)
        tie = incl - firm
        s_here = supply_at(price)
        left = max(0.0, min(s_here, float(incl.sum())) - float(firm.sum()))
        tie_total = float(tie.sum())
        alloc = firm + (tie * (left / tie_total) if tie_total > 0 else 0.0)
        total = float(alloc.sum())
        if total > s_here:  # only by rounding
            alloc = alloc * (s_here / total)
        rationed = float(incl.sum()) > s_here * (1 + _REL_TOL)
        return _finish(alloc, np.full(n, price), wallets, h, price, rationed)


# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Vcg:
    r"""Multi-unit second price (VCG) over power quanta, with the Token Manager as a seller with costs.

    Units. Block k of agent i becomes ``⌊w_ik / quantum_w⌋`` quanta valued ``v_ik`` tokens/kWh
    (a remainder under one quantum is not traded); residual supply block j becomes
    ``⌊s_j / quantum_w⌋`` quanta costing ``c_j``. Finite values are capped at what the agent's wallet
    could pay for one quantum, ``wallet_i / e`` (``e`` = kWh in one quantum over the round); an infinite
    (price-blind) value becomes what the wallet pays per quantum for the agent's whole request,
    ``wallet_i / (q_i · e)`` with ``q_i`` its quanta, so a price-blind agent can afford all it wins.
    Empty wallets bid nothing.

    Efficient allocation. Sort demand quanta by value, highest first (ties: lower agent index, then
    block order) into ``d_1 >= d_2 >= …`` and supply quanta by cost into ``s_1 <= s_2 <= …``;
    serve ``Q* = #{q : d_q >= s_q}`` quanta (the two sequences cross once). Welfare
    ``W = Σ_{q<=Q*} (d_q − s_q)``.

    Payment (Clarke pivot). Agent i wins ``m_i`` quanta. Its payment is the welfare the others lose
    by its presence, supply cost included: ``P_i = W^{−i} − (W − V_i)``, with ``V_i`` the value of
    i's quanta and ``W^{−i}`` the optimum without i. Let ``d^{−i}`` be the others' demand sorted: its
    first ``Q* − m_i`` entries are the others' winning quanta, the rest the others' rejected quanta in
    order. Without i the others are served while ``d^{−i}_q >= s_q``, up to ``Q^{−i}``, and
    ``Q* − m_i <= Q^{−i} <= Q*``. Then

    .. math::
        P_i = \sum_{q=Q^*-m_i+1}^{Q^{-i}} d^{-i}_q - \sum_{q\le Q^{-i}} s_q + \sum_{q\le Q^*} s_q
            = \sum_{q=Q^*-m_i+1}^{Q^{-i}} d^{-i}_q + \sum_{q=Q^{-i}+1}^{Q^*} s_q
            = \sum_{r=1}^{m_i} \max\bigl(d^{-i}_{Q^*-m_i+r},\; s_{Q^*-m_i+r}\bigr),

    the last step because ``d^{−i}_q >= s_q`` exactly for ``q <= Q^{−i}``. So each quantum i wins costs
    the larger of the others' next-best rejected value (which it displaces) and the supply cost of
    the corresponding marginal quantum (which it forces the Token Manager to sell). Missing rejected
    quanta count as ``−∞``. ``P_i <= V_i`` (individual rationality). Effective price:
    ``price_i = P_i / (m_i · e)`` tokens/kWh (0 when nothing is won); ``debit_i = P_i``.

    Budget rule. Payment as a function of quanta won is the sum of the ``m`` smallest terms of the
    V-shaped sequence ``max(d^{−i}_q, s_q)``, so an agent whose payment exceeds its wallet keeps only
    its ``m'`` highest-value quanta, ``m'`` the most whose ``m'`` smallest terms fit in the wallet,
    drops the rest of its demand, and the whole clearing is recomputed; repeat until every payment
    fits (each pass removes at least one quantum, so it ends; an agent once trimmed stays within
    budget, since others trimming only lowers its terms). Truthful bidding is a dominant strategy
    only where budgets (and the value cap) do not bind.

    Headline price. The marginal price of the efficient allocation of the declared (wallet-capped)
    values before any budget trimming: ``max(d_{Q*+1}, s_{Q*})``, i.e. the higher of the best rejected
    value and the cost of the last quantum served (``d_1`` when nothing is served; the cheapest
    residual cost when nothing is demanded). Less supply shifts every ``s_q`` up and ``Q*`` down, and
    ``d_{Q*'+1} >= d_{Q*} >= s_{Q*}``, so it never falls.

    Cost: ``O(U log U)`` for ``U`` demand quanta, plus ``O(U + Q* log U)`` per budget pass; the loop
    over budget passes (not over agents) is the only Python loop. Supply quanta are never
    materialised (an unlimited grid is fine).

    Attributes:
        quantum_w: Size of one traded power quantum, W.
    """

    quantum_w: float = 10.0

    def __post_init__(self) -> None:
        if not self.quantum_w > 0:
            raise ValueError(f"Vcg.quantum_w must be > 0 W, got {self.quantum_w!r}")

    def clear(self, bids: BidBook, supply: SupplyCurve, wallets: np.ndarray) -> Clearing:
        steps_w, steps_price, wallets = _inputs(bids, wallets)
        n = wallets.size
        h = _kwh_per_w(supply)
        e = self.quantum_w * h  # kWh in one quantum over the round
        blocks_w, cost = supply.residual()
        s_units = np.floor(blocks_w / self.quantum_w + 1e-9)
        cum_s = np.cumsum(s_units)
        cost_ext = np.concatenate([cost, [np.inf]])
        total_s = float(cum_s[-1]) if cum_s.size else 0.0

        def s_at(position: np.ndarray) -> np.ndarray:
            """Cost of the supply quantum at 1-based positions (∞ past the end)."""
            return cost_ext[np.searchsorted(cum_s, position, side="left")]

        # Budget in "tokens/kWh × quanta": a payment of Σ terms (tokens/kWh) costs Σ terms · e tokens.
        budget = np.full(n, np.inf) if e <= 0 else wallets / e
        # Each agent's steps in falling value order (the BidBook promises it; sorting makes it so), so
        # that creation order within an agent is its value order.
        desc = np.argsort(-steps_price, axis=1, kind="stable")
        steps_w = np.take_along_axis(steps_w, desc, axis=1)
        counts = np.where(wallets[:, None] > 0, np.floor(steps_w / self.quantum_w + 1e-9), 0).astype(np.int64)
        # Finite values are capped at what the wallet pays for one quantum (the budget rule below trims what
        # it cannot afford). A price-blind (infinite) value becomes the most the wallet pays per quantum for
        # the agent's whole request, so it can afford all it wins: capping it at one quantum's worth and
        # then trimming would leave power unsold while price-blind agents sit paused.
        raw = np.take_along_axis(steps_price, desc, axis=1)
        whole_request = budget / np.maximum(counts.sum(axis=1), 1)
        value = np.where(np.isinf(raw), whole_request[:, None], np.minimum(raw, budget[:, None]))
        counts_flat = counts.ravel()
        units_val = np.repeat(value.ravel(), counts_flat)
        units_own = np.repeat(np.repeat(np.arange(n), counts.shape[1]), counts_flat)
        if units_val.size == 0:
            return _finish(np.zeros(n), np.zeros(n), wallets, h, _idle_price(blocks_w, cost), False)

        order = np.argsort(-units_val, kind="stable")  # highest value first; ties: agent, then block
        val = units_val[order]
        own = units_own[order]
        u = val.size
        # Quanta were created agent-major in value order, so the inverse permutation lists the sorted
        # positions agent by agent, each agent's in value order.
        by_agent = np.empty(u, dtype=np.int64)
        by_agent[order] = np.arange(u)
        rank = np.empty(u, dtype=np.int64)
        starts = np.searchsorted(own[by_agent], np.arange(n))
        rank[by_agent] = np.arange(u) - np.repeat(starts, np.bincount(own, minlength=n))

        keep = np.ones(u, dtype=bool)  # quanta still demanded after budget trimming
        headline = None
        while True:
            pos = np.cumsum(keep) - 1  # position among kept quanta (valid where keep)
            kept = np.flatnonzero(keep)
            kv = val[kept]
            q_star = int(np.count_nonzero(kv >= s_at(np.arange(1, kv.size + 1))))
            if headline is None:
                best_rejected = kv[q_star] if q_star < kv.size else -np.inf
                marginal_cost = s_at(np.array([q_star]))[0] if q_star > 0 else -np.inf
                headline = float(max(best_rejected, marginal_cost))
            won = keep & (pos < q_star)
            lost = keep & (pos >= q_star)
            m = np.bincount(own[won], minlength=n)

            # Others' r-th best rejected quantum for winner i: index j = (r−1) + #{l : p_l − l <= r−1}
            # over i's own rejected quanta at positions p_l (l-th of i's) in the rejected list.
            n_rej = int(np.count_nonzero(lost))
            rej_val = val[kept[q_star:]]
            big = n_rej + 2
            sel = by_agent[lost[by_agent]]  # i's rejected quanta, agent-major, in list order
            p_sel = pos[sel] - q_star
            l_sel = rank[sel] - m[own[sel]]
            keys = own[sel].astype(np.int64) * big + (p_sel - l_sel)
            w_idx = by_agent[won[by_agent]]  # agent-major, so the look-ups below are sorted queries
            w_own = own[w_idx]
            r0 = rank[w_idx]  # r − 1: a winner's quanta are its top m_i
            base = w_own.astype(np.int64) * big
            n_before = (np.searchsorted(keys, base + np.minimum(r0, n_rej), side="right")
                        - np.searchsorted(keys, base, side="left"))
            j = r0 + n_before
            if n_rej:
                displaced = np.where(j < n_rej, rej_val[np.minimum(j, n_rej - 1)], -np.inf)
            else:
                displaced = np.full(j.shape, -np.inf)
            terms = np.maximum(displaced, s_at(q_star - m[w_own] + r0 + 1))
            pay = np.bincount(w_own, weights=terms, minlength=n)

            over = pay > budget * (1 + _REL_TOL)
            if not np.any(over):
                break
            # Trim each over-budget agent to the most quanta whose smallest terms fit its wallet.
            pick = over[w_own]
            t_own = w_own[pick]
            # A term above the wallet never fits; clipping it keeps infinite terms out of the sums.
            t_val = np.minimum(terms[pick], 2.0 * budget[t_own] + 1.0)
            srt = np.lexsort((t_val, t_own))
            t_own, t_val = t_own[srt], t_val[srt]
            csum = np.cumsum(t_val)
            grp_start = np.searchsorted(t_own, t_own, side="left")
            within = csum - np.where(grp_start > 0, csum[grp_start - 1], 0.0)
            fits = within <= budget[t_own] * (1 + _REL_TOL)
            new_cap = np.full(n, np.iinfo(np.int64).max)
            new_cap[over] = 0
            np.add.at(new_cap, t_own[fits], 1)
            keep &= rank < new_cap[own]

        alloc = m * self.quantum_w
        prices = np.divide(pay, m, out=np.zeros(n), where=m > 0)
        rationed = n_rej > 0 and q_star >= total_s
        return _finish(alloc.astype(float), prices, wallets, h, headline, rationed)


# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kelly:
    """Kelly proportional share with requests as caps (water-filling).

    Bids: ``b_i = min(kelly_tokens_i, wallet_i)``, set to 0 below ``min_bid_tokens`` or when the agent
    requests nothing. With ``d_i`` the request and ``S`` the sellable supply (both in kWh over the
    round, ``x = a · h``), the allocation is ``x_i = min(d_i, b_i / μ)`` at one price ``μ``
    tokens/kWh for everyone:

    - ``μ_fill`` = the largest ``μ`` with ``Σ_i min(d_i, b_i/μ) >= min(S, Σ_{b_i>0} d_i)``;
    - ``μ = min(Σ b / S, μ_fill)``.

    When no request binds, ``x_i = b_i / Σb · S`` and ``μ = Σb / S``: the textbook rule. When some
    requests bind, the capped agents' unused share is re-divided among the others in proportion to
    their bids (water-filling), and the price falls to the level ``μ_fill < Σb/S`` at which the
    uncapped agents' bids exactly buy their shares. Charging ``Σb/S`` there would debit an uncapped
    agent more than it bid (its share grew), so the level is what keeps ``debit_i = x_i μ <= b_i <=
    wallet_i``. When supply exceeds every request, everyone gets its request at
    ``μ = min(Σb/S, min_i b_i/d_i)``. ``Σ allocations = sellable`` whenever the bidders' requests
    cover it; agents bidding 0 get nothing.

    Payment: ``μ`` per kWh actually used, so a fully used uncapped allocation costs exactly ``b_i``.
    Headline: ``μ`` (0 with no bids; ∞ with bids but nothing to sell). It falls as ``S`` grows, so
    less renewable supply never lowers it.

    Attributes:
        min_bid_tokens: Offers below this are ignored, tokens.
    """

    min_bid_tokens: float = 0.0

    def clear(self, bids: BidBook, supply: SupplyCurve, wallets: np.ndarray) -> Clearing:
        steps_w, _, wallets = _inputs(bids, wallets)
        n = wallets.size
        h = _kwh_per_w(supply)
        request_w = steps_w.sum(axis=1)
        offer = np.minimum(np.clip(np.asarray(bids.kelly_tokens, dtype=float).reshape(-1), 0.0, None), wallets)
        offer = np.where((offer >= self.min_bid_tokens) & (offer > 0) & (request_w > 0), offer, 0.0)
        total_bid = float(offer.sum())
        sellable_w = supply.sellable_w
        if total_bid <= 0:
            return _finish(np.zeros(n), np.zeros(n), wallets, h, 0.0, False)
        if h <= 0:  # a zero-length round: nothing to sell or pay for
            return _finish(np.zeros(n), np.zeros(n), wallets, h, 0.0, False)
        demand_kwh = np.where(offer > 0, request_w * h, 0.0)
        supply_kwh = sellable_w * h
        ratio = total_bid / supply_kwh if supply_kwh > 0 else np.inf
        bidders = offer > 0
        if float(demand_kwh.sum()) <= supply_kwh:
            # Every request fits: serve it exactly, at the highest price each bidder still affords.
            with np.errstate(over="ignore", divide="ignore"):  # vanishing requests afford any price
                mu = min(ratio, float(np.min(offer[bidders] / demand_kwh[bidders])))
            share_kwh = demand_kwh
        elif supply_kwh <= 0:
            mu, share_kwh = np.inf, np.zeros(n)
        else:
            mu = min(ratio, _level(demand_kwh, offer, supply_kwh))
            with np.errstate(over="ignore"):
                share_kwh = np.minimum(demand_kwh, offer / mu)
        alloc = share_kwh / h
        total = float(alloc.sum())
        if total > sellable_w:  # only by rounding
            alloc = alloc * (sellable_w / total)
        rationed = float(demand_kwh.sum()) > supply_kwh * (1 + _REL_TOL)
        return _finish(alloc, np.full(n, mu), wallets, h, mu, rationed)


# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PayAsBid:
    """Pay-as-bid ("first-price", discriminatory) multi-unit auction over the merit-order curve.

    Budgets first: each agent's blocks, highest value first, are kept while paying its own bid for them
    fits its wallet: a block is cut to the power whose cost at its own price, added to the cost of the
    blocks before it, stays within ``wallet_i``. An infinite (price-blind) value becomes what the wallet
    pays per kWh for the agent's whole request, ``wallet_i / (request_i · h)``.

    Allocation: the :class:`UniformPrice` rule on these budget-feasible bids (who wins does not depend on
    what winners pay). Payment: every winner pays its own bid on each block it won, blocks filled highest
    value first: ``price_i = Σ_k v_ik · won_ik / a_i``. Headline: the uniform clearing price ``p*`` (the
    marginal price); what agents pay is ``prices_tokens_per_kwh`` (``mean_paid_tokens_per_kwh`` in the round
    table). Truthful bidding is not an equilibrium here: a winner gains by shading its bid towards ``p*``.
    """

    def clear(self, bids: BidBook, supply: SupplyCurve, wallets: np.ndarray) -> Clearing:
        steps_w, steps_price, wallets = _inputs(bids, wallets)
        n = wallets.size
        h = _kwh_per_w(supply)
        desc = np.argsort(-steps_price, axis=1, kind="stable")
        w = np.take_along_axis(steps_w, desc, axis=1)
        v = np.take_along_axis(steps_price, desc, axis=1)
        if h > 0:
            request_kwh = w.sum(axis=1) * h
            with np.errstate(over="ignore"):  # a vanishing request: wallet / request overflows to inf, which is fine
                blind = np.divide(wallets, request_kwh, out=np.zeros(n), where=request_kwh > 0)
            v = np.where(np.isinf(v), blind[:, None], v)
            cost = w * v * h  # tokens for each whole block at the agent's own price
            room = np.clip(wallets[:, None] - (np.cumsum(cost, axis=1) - cost), 0.0, None)
            cut = np.divide(room, v * h, out=np.zeros_like(room), where=v > 0)
            w = np.where(cost > room, np.minimum(w, cut), w)
        w = np.where(wallets[:, None] > 0, w, 0.0)
        uniform = UniformPrice().clear(BidBook(w, v, bids.kelly_tokens), supply, np.full(n, np.inf))
        alloc = uniform.allocations_w
        won = np.clip(alloc[:, None] - (np.cumsum(w, axis=1) - w), 0.0, w)
        # shares of the allocation first, then the values: won·v can underflow to 0 for a tiny (denormal) allocation
        share = np.divide(won, alloc[:, None], out=np.zeros_like(won), where=alloc[:, None] > 0)
        prices = np.where(alloc > 0, (share * v).sum(axis=1), 0.0)
        return _finish(alloc, prices, wallets, h, uniform.price_tokens_per_kwh, uniform.rationed)


#: Mechanism classes by scenario name (``market.mechanism``).
MECHANISMS: dict[str, type] = {
    "posted_price": PostedPrice,
    "uniform_price": UniformPrice,
    "pay_as_bid": PayAsBid,
    "vcg": Vcg,
    "kelly": Kelly,
}
