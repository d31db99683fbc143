"""One market round cleared by hand with each of dcsim's four mechanisms (lesson 2).

Four GPU agents each ask for 1 kW above idle for a 5-minute round and value it at 8, 6, 4 and
2 tokens/kWh. The Token Manager has 1.5 kW of solar (0.01 tokens/kWh) and 1 kW of grid import
(0.6 tokens/kWh) to sell: 2.5 kW for 4 kW of demand. Run it from the repository root:

    python docs/tutorials/examples/one_round.py
"""
from __future__ import annotations

import numpy as np

from dcsim.market import J_PER_KWH, BidBook, SupplyCurve
from dcsim.mechanisms import Kelly, PostedPrice, UniformPrice, Vcg

ROUND_S = 300.0
KWH_PER_W = ROUND_S / J_PER_KWH                    # energy one watt held for the round delivers
values = np.array([8.0, 6.0, 4.0, 2.0])            # tokens/kWh
request_w = np.full(4, 1000.0)
wallets = np.full(4, 100.0)                        # large: budgets do not bind here
# Under Kelly an agent offers tokens, not a price: a truthful agent offers what its request is worth.
kelly_tokens = values * request_w * KWH_PER_W
bids = BidBook.single_step(request_w, values, kelly_tokens)
supply = SupplyCurve(blocks_w=np.array([1500.0, 1000.0]), cost_tokens_per_kwh=np.array([0.01, 0.6]),
                     names=("renewable", "grid"), base_load_w=0.0, round_s=ROUND_S)

mechanisms = {
    "posted_price": PostedPrice(base_price_tokens_per_kwh=1.0, kappa=2.0),
    "uniform_price": UniformPrice(),
    "vcg": Vcg(quantum_w=10.0),
    "kelly": Kelly(),
}
print("| mechanism | headline price | " + " | ".join(f"agent {i} (v={v:g})" for i, v in enumerate(values))
      + " | sold (W) | tokens paid | value served |")
print("|:---|---:|" + "---:|" * len(values) + "---:|---:|---:|")
for name, mechanism in mechanisms.items():
    c = mechanism.clear(bids, supply, wallets)
    cells = [f"{a:,.0f} W @ {p:.3g}" if a > 0 else "—" for a, p in zip(c.allocations_w, c.prices_tokens_per_kwh)]
    value_served = float(np.sum(values * c.allocations_w) * KWH_PER_W)
    print(f"| {name} | {c.price_tokens_per_kwh:.4g} | " + " | ".join(cells)
          + f" | {c.allocations_w.sum():,.0f} | {c.debits_tokens.sum():.4f} | {value_served:.4f} |")
