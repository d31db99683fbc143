"""Does shading a bid pay? One agent's expected surplus as it scales its bid, others bidding truthfully (lesson 4).

Six GPU agents each want 1 kW above idle for a 5-minute round; the Token Manager sells 3 kW (2 kW of
solar at 0.01 tokens/kWh, 1 kW of grid at 0.6). Agent 0 values power at 7 tokens/kWh; the five
others draw their values uniformly from 1 to 12 tokens/kWh and bid them truthfully. Agent 0 bids
``shade × 7`` (under Kelly it offers ``shade ×`` its request's value in tokens). For each shade factor
the script averages agent 0's surplus (value of the power it gets minus what it pays) over the same
random draws of the others' values, under each dcsim mechanism, ``pay_as_bid`` (the first-price rule:
every winner pays its own bid) among them. Run it from the repository root:

    python docs/tutorials/examples/shading.py
"""
from __future__ import annotations

import numpy as np

from dcsim.market import J_PER_KWH, BidBook, SupplyCurve
from dcsim.mechanisms import Kelly, PayAsBid, PostedPrice, UniformPrice, Vcg

ROUND_S = 300.0
KWH_PER_W = ROUND_S / J_PER_KWH
N_OTHERS, DRAWS, OWN_VALUE = 5, 400, 7.0
SHADES = [0.0, 0.1, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2]
supply = SupplyCurve(blocks_w=np.array([2000.0, 1000.0]), cost_tokens_per_kwh=np.array([0.01, 0.6]),
                     names=("renewable", "grid"), base_load_w=0.0, round_s=ROUND_S)
request_w = np.full(N_OTHERS + 1, 1000.0)
wallets = np.full(N_OTHERS + 1, 1000.0)                 # budgets never bind here


mechanisms = {
    "pay_as_bid (first price)": PayAsBid().clear,
    "uniform_price": UniformPrice().clear,
    "vcg": Vcg(quantum_w=50.0).clear,
    "kelly": Kelly().clear,
    "posted_price": PostedPrice(1.0, 2.0).clear,
}
rng = np.random.default_rng(4)
others = rng.uniform(1.0, 12.0, size=(DRAWS, N_OTHERS))
surplus = {name: np.zeros(len(SHADES)) for name in mechanisms}
for draw in others:
    values = np.concatenate([[OWN_VALUE], draw])
    for k, shade in enumerate(SHADES):
        bid = values.copy()
        bid[0] = shade * OWN_VALUE
        book = BidBook.single_step(request_w, bid, bid * request_w * KWH_PER_W)
        for name, clear in mechanisms.items():
            c = clear(book, supply, wallets)
            energy_kwh = c.allocations_w[0] * KWH_PER_W
            surplus[name][k] += OWN_VALUE * energy_kwh - c.prices_tokens_per_kwh[0] * energy_kwh
print("Agent 0's mean surplus per round, tokens (the best in bold):\n")
print("| mechanism | " + " | ".join(f"shade {s:g}" for s in SHADES) + " | best shade |")
print("|:---|" + "---:|" * (len(SHADES) + 1))
for name, total in surplus.items():
    mean = total / DRAWS
    top = np.flatnonzero(np.isclose(mean, mean.max(), rtol=0, atol=1e-9))   # every shade reaching the best
    cells = [f"**{m:.4f}**" if k in top else f"{m:.4f}" for k, m in enumerate(mean)]
    best = f"{SHADES[top[0]]:g}" if top.size == 1 else f"any of {SHADES[top[0]]:g}–{SHADES[top[-1]]:g}"
    print(f"| {name} | " + " | ".join(cells) + f" | {best} |")
