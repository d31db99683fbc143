"""Token market data: bid books, the merit-order supply curve, clearings, and market statistics."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class BidBook:
    """Every agent's demand for one round, as a mechanism sees it (arrays; n agents, K steps).

    Attributes:
        steps_w: ``(n, K)`` power blocks above idle, W, >= 0. Block k of agent i is wanted at any price up
            to ``steps_price[i, k]``; an agent's total request is the row sum.
        steps_price: ``(n, K)`` marginal value of each block, tokens/kWh, non-increasing along K.
        kelly_tokens: ``(n,)`` tokens offered for the round under proportional share, >= 0.
    """

    steps_w: np.ndarray
    steps_price: np.ndarray
    kelly_tokens: np.ndarray

    @classmethod
    def single_step(cls, request_w: np.ndarray, max_price: np.ndarray, kelly_tokens: np.ndarray | None = None) -> "BidBook":
        """One block per agent: ``request_w`` wanted at any price up to ``max_price``."""
        request_w = np.asarray(request_w, dtype=float)
        kelly = np.zeros(request_w.shape) if kelly_tokens is None else np.asarray(kelly_tokens, dtype=float)
        return cls(request_w[:, None], np.asarray(max_price, dtype=float)[:, None], kelly)

    @property
    def request_w(self) -> np.ndarray:
        """Total power each agent asks for, W, shape ``(n,)``."""
        return self.steps_w.sum(axis=1)


@dataclass(frozen=True)
class SupplyCurve:
    """The merit-order supply for one round: blocks in ascending cost, base load served first.

    Attributes:
        blocks_w: ``(m,)`` power each source block can give until the next round, W.
        cost_tokens_per_kwh: ``(m,)`` cost of each block, ascending.
        names: Source of each block (e.g. ``("renewable", "battery", "grid")``).
        base_load_w: Power already committed (idle and transition draw), taken from the cheapest blocks
            before any agent's bid.
        round_s: Seconds until the next periodic round (the longest an allocation lasts).
    """

    blocks_w: np.ndarray
    cost_tokens_per_kwh: np.ndarray
    names: tuple[str, ...]
    base_load_w: float
    round_s: float

    def residual(self) -> tuple[np.ndarray, np.ndarray]:
        """Blocks left for the auction after the base load takes the cheapest power: ``(blocks_w, cost)``."""
        blocks = np.asarray(self.blocks_w, dtype=float)
        used_before = np.concatenate([[0.0], np.cumsum(blocks)[:-1]])
        left = np.clip(blocks - np.clip(self.base_load_w - used_before, 0.0, None), 0.0, None)
        return left, np.asarray(self.cost_tokens_per_kwh, dtype=float)

    @property
    def sellable_w(self) -> float:
        return float(self.residual()[0].sum())


@dataclass(frozen=True)
class Clearing:
    """Result of one round.

    Attributes:
        allocations_w: Power above idle each agent may draw this round, W, shape ``(n,)``.
        prices_tokens_per_kwh: Price each agent pays per kWh it actually uses, shape ``(n,)``.
        debits_tokens: The most each agent can be charged this round (allocation × price × round),
            shape ``(n,)``; settlement charges energy actually used, which is never more.
        price_tokens_per_kwh: The round's headline price.
        rationed: Whether demand exceeded sellable supply and allocations were scaled down.
    """

    allocations_w: np.ndarray
    prices_tokens_per_kwh: np.ndarray
    debits_tokens: np.ndarray
    price_tokens_per_kwh: float
    rationed: bool


def scarcity_price(renewable_w: float, demand_w: float, base_price: float, kappa: float) -> tuple[float, float]:
    """Posted scarcity price ``p = p0·exp(κ(1 − ρ))`` with ρ = ``min(1, renewable / demand)``.

    Returns:
        ``(price_tokens_per_kwh, rho)``; with no demand ρ = 1.
    """
    rho = 1.0 if demand_w <= 0 else min(1.0, renewable_w / demand_w)
    return base_price * float(np.exp(kappa * (1.0 - rho))), rho


def affordable_w(wallet_tokens: np.ndarray, price_tokens_per_kwh: float, round_s: float) -> np.ndarray:
    """Highest constant power each wallet can pay for over ``round_s`` at the price, W."""
    if price_tokens_per_kwh <= 0 or round_s <= 0:
        return np.full(np.shape(wallet_tokens), np.inf)
    return np.asarray(wallet_tokens) * J_PER_KWH / (price_tokens_per_kwh * round_s)


def jain_index(x: np.ndarray) -> float:
    """Jain's fairness index ``(Σx)² / (n Σx²)`` in (0, 1]; 1 for an empty or all-zero vector."""
    x = np.asarray(x, dtype=float)
    sq = float(np.sum(x * x))
    return 1.0 if x.size == 0 or sq == 0 else float(np.sum(x) ** 2 / (x.size * sq))


def gini(x: np.ndarray) -> float:
    """Gini coefficient of non-negative holdings: 0 when equal, → 1 when one holds everything."""
    x = np.sort(np.asarray(x, dtype=float))
    total = float(x.sum())
    n = x.size
    if n == 0 or total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * x) / (n * total))


def _value_of(book: BidBook, alloc_w: np.ndarray) -> float:
    """Declared value rate of allocations: each agent's marginal-value steps integrated up to its allocation."""
    before = np.cumsum(book.steps_w, axis=1) - book.steps_w
    taken = np.clip(np.asarray(alloc_w)[:, None] - before, 0.0, book.steps_w)
    # an infinite marginal value on an untaken block must count 0 (inf × 0 would be NaN)
    return float(np.sum(np.multiply(book.steps_price, taken, out=np.zeros_like(taken), where=taken > 0)))


def _cost_of(blocks_w: np.ndarray, cost: np.ndarray, quantity_w: float) -> float:
    before = np.cumsum(blocks_w) - blocks_w
    return float(np.sum(cost * np.clip(quantity_w - before, 0.0, blocks_w)))


def efficient_welfare(book: BidBook, supply: SupplyCurve) -> float:
    """Best welfare rate achievable in a round, tokens/kWh × W: the highest declared values served by the
    cheapest residual supply while value ≥ cost (budgets ignored)."""
    blocks, cost = supply.residual()
    w = book.steps_w.ravel()
    p = book.steps_price.ravel()
    keep = w > 0
    order = np.argsort(-p[keep], kind="stable")
    dw, dp = w[keep][order], p[keep][order]
    if dw.size == 0 or blocks.size == 0:
        return 0.0
    cum_d, cum_s = np.cumsum(dw), np.cumsum(blocks)
    cap = min(cum_d[-1], cum_s[-1])  # from the cumulative sums themselves, so the last edge is never lost to rounding
    edges = np.unique(np.concatenate([[0.0, cap], cum_d, cum_s]))
    edges = edges[edges <= cap]
    if edges.size < 2:
        return 0.0
    mid = (edges[:-1] + edges[1:]) / 2
    d_at = dp[np.minimum(np.searchsorted(cum_d, mid, side="right"), dp.size - 1)]
    c_at = cost[np.minimum(np.searchsorted(cum_s, mid, side="right"), cost.size - 1)]
    return float(np.sum(np.clip(d_at - c_at, 0.0, None) * np.diff(edges)))


def welfare_ratio(book: BidBook, supply: SupplyCurve, alloc_w: np.ndarray) -> float:
    """Achieved / efficient welfare of a round (declared values minus merit-order supply cost).

    NaN when some agent declared an infinite value (a price-blind bidder: welfare is unbounded) or when
    nothing could be gained (no demand, or every value below cost)."""
    if np.any(np.isinf(book.steps_price) & (book.steps_w > 0)):
        return math.nan
    best = efficient_welfare(book, supply)
    if best <= 0:
        return math.nan
    blocks, cost = supply.residual()
    achieved = _value_of(book, alloc_w) - _cost_of(blocks, cost, float(np.sum(alloc_w)))
    return achieved / best


def build_mechanism(cfg):
    """The clearing mechanism a scenario's ``market`` section names, with its parameters."""
    from dcsim import mechanisms

    name = cfg.mechanism
    if name == "posted_price":
        return mechanisms.PostedPrice(cfg.base_price_tokens_per_kwh, cfg.scarcity_kappa)
    if name == "vcg":
        return mechanisms.Vcg(quantum_w=cfg.vcg_quantum_w)
    return mechanisms.MECHANISMS[name]()
