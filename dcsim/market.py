"""Token market: round supply, clearing mechanisms (pure functions over arrays) and wallets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class RoundSupply:
    """Power the Token Manager can sell in a round, W.

    Attributes:
        renewable_w: Renewable power now.
        battery_w: Battery discharge power available now (0 when empty).
        grid_w: Grid import cap (``inf`` when unlimited).
        base_load_w: Power already committed before the auction: every GPU's draw that the market does
            not allocate (idle, sleeping, off, transitions, and the idle part of running GPUs).
        round_s: Seconds until the next periodic round (the longest this round's allocation lasts).
    """

    renewable_w: float
    battery_w: float
    grid_w: float
    base_load_w: float
    round_s: float

    @property
    def total_w(self) -> float:
        return self.renewable_w + self.battery_w + self.grid_w

    @property
    def sellable_w(self) -> float:
        """Power left for allocation after the base load (never negative)."""
        return max(0.0, self.total_w - self.base_load_w)


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


def clear_posted_price(
    request_w: np.ndarray,
    max_price: np.ndarray,
    wallets: np.ndarray,
    supply: RoundSupply,
    base_price: float,
    kappa: float,
) -> Clearing:
    """Posted scarcity price with budget limits and pro-rata rationing.

    Allocation rule: the price comes from the renewable fraction of full demand (base load plus all
    requests). Each agent whose ``max_price`` is at least the price gets ``min(request, affordable)``;
    if the total exceeds sellable supply, every allocation is scaled by the same factor.

    Args:
        request_w: Power above idle each agent asks for, W, shape ``(n,)``.
        max_price: Highest price each agent accepts, tokens/kWh.
        wallets: Tokens each agent holds.
        supply: The round's supply.
        base_price: p0, tokens/kWh.
        kappa: Scarcity steepness κ.
    """
    demand_w = supply.base_load_w + float(np.sum(request_w))
    price, _ = scarcity_price(supply.renewable_w, demand_w, base_price, kappa)
    want = np.where(max_price >= price, np.minimum(request_w, affordable_w(wallets, price, supply.round_s)), 0.0)
    total = float(np.sum(want))
    sellable = supply.sellable_w
    rationed = total > sellable
    alloc = want * (sellable / total) if rationed else want
    prices = np.full(alloc.shape, price)
    return Clearing(alloc, prices, alloc * price * supply.round_s / J_PER_KWH, price, rationed)


#: Mechanisms by scenario name: each clears ``(request_w, max_price, wallets, supply, base_price, kappa)``.
MECHANISMS: dict[str, Callable[..., Clearing]] = {"posted_price": clear_posted_price}


def jain_index(x: np.ndarray) -> float:
    """Jain's fairness index ``(Σx)² / (n Σx²)`` in (0, 1]; 1 for an empty or all-zero vector."""
    x = np.asarray(x, dtype=float)
    sq = float(np.sum(x * x))
    return 1.0 if x.size == 0 or sq == 0 else float(np.sum(x) ** 2 / (x.size * sq))
