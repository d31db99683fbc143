"""The Token Manager's market during a serving run: :class:`dcsim.market_round.MarketRound` over the serving GPUs.

A serving run reuses the GPU-job engine's market machinery as it is — the round (:mod:`dcsim.market_round`), the
mechanisms (:mod:`dcsim.mechanisms`), the energy meter's supply view (:class:`dcsim.meter.EnergyMeter`) and the
cluster's per-GPU billable-energy meters (:class:`dcsim.cluster.Cluster`) — wired to the serving queue
(docs/serving.md, "The token market"):

* **Agents.** Every serving GPU is an agent with a wallet. It stays on (``ACTIVE``) the whole run and, being
  price-blind, asks every round for the most power above idle it can draw: ``D_max = max_b (power_w(b) −
  idle_w) × max_k φ_k`` (its largest batch, every request in the most power-hungry configuration).
* **Supply.** All energy comes from the grid: the supply curve has no renewable or battery block, and the grid
  block is ``supply.grid.import_cap_w`` (or, unlimited, all demand) at ``grid_tokens_per_usd × price / 1000``
  tokens/kWh (``price`` the run's $/MWh series at the round). The GPUs' idle draw is the base load, served first.
* **What the GPU pays.** It is billed, at its round's price, for the energy above idle it actually draws: the
  serving model keeps each GPU's billable power and energy in the cluster's billable meters (``billable_w``,
  ``billable_off``) whenever its batch or clock changes; the cluster's draw (``power_w``, idle + billable) is
  brought up to date at each round, and its total-energy meters are not used (the serving model meters energy
  and USD cost itself).
* **What the GPU earns.** A completed request's revenue (USD) is minted into its GPU's wallet at the exchange
  rate, ``revenue_usd × grid_tokens_per_usd`` tokens (as a completed job's value is, in a job run), at the next
  round (or the horizon): wallets matter only when a round clears, so the balance each round sees is the same.
* **What an allocation below demand does.** The allocation ``a_g`` caps the GPU's power above idle until the next
  round. With its batch drawing ``D_g`` above idle at full clock, ``D_g <= a_g`` runs at full clock; otherwise the
  GPU lowers its clock to ``f = (a_g / D_g)^(1/γ)`` (the cluster's DVFS law ``P = P_idle + D·f^γ``, work rate
  ``f``, as for jobs), so every request on it advances ``f`` times slower and it draws exactly ``a_g``. An
  allocation below the board's minimum cap (``P_idle + a_g < min_cap_w``) cannot be enforced: the GPU pauses (no
  progress, idle power) and takes no new request until a round grants it enough. Until the first round clears,
  every GPU holds what it asks for.

With an unconstrained market (no import cap, wallets that never run dry) every allocation covers its GPU's draw,
no clock changes, and the serving results are those of a run without the market, to the bit.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import simpy

from dcsim.cluster import ACTIVE, Cluster
from dcsim.market_round import MarketRound
from dcsim.meter import EnergyMeter
from dcsim.timeseries import StepSeries


def _no_bids(_gpus: np.ndarray):  # pragma: no cover - serving GPUs never start between rounds
    raise AssertionError("serving GPUs bid only at rounds")


class ServingMarket:
    """Wallets and rounds for the GPUs of a serving run (see the module docstring).

    Args:
        scenario: The serving scenario (its ``market``, ``cluster``, ``supply.grid`` and ``outputs`` sections).
        streams: The run's named streams (``market``: round jitter).
        env: The serving run's SimPy environment.
        max_dynamic_w: ``D_max``, the most power above idle a GPU can draw, W.
        price: The energy price, USD/MWh.
        carbon: The grid carbon intensity, g/kWh (read for the supply curve's carbon adder).
        apply_caps: Called with each round's allocations (W above idle, shape ``(n,)``); applies them to the
            serving GPUs and returns the allocation each GPU holds (0 for a paused GPU).
    """

    def __init__(self, scenario: Any, streams: Any, env: simpy.Environment, max_dynamic_w: float,
                 price: StepSeries, carbon: StepSeries, apply_caps: Callable[[np.ndarray], np.ndarray]):
        self.env = env
        self.price, self.carbon = price, carbon
        self._apply_caps = apply_caps
        self.cluster = cl = Cluster(scenario, env, None)
        cl.span_w = float(max_dynamic_w)
        cl.full_power_w = cl.idle_w + cl.span_w
        n = cl.n_gpus
        for g in range(n):  # every serving GPU is on and serving: idle power, full clock, holding its ask
            cl.set_power(g, cl.idle_w, 0.0, 0.0)
        cl.state[:] = ACTIVE
        for pool in (cl.free_idle, cl.free_sleep, cl.free_off):
            pool.clear()
        cl.clock[:] = 1.0
        cl.alloc_w[:] = cl.span_w
        cl.total_power_w = float(cl.power_w.sum())
        cl.allocated_sum_w = float(cl.alloc_w.sum())
        supply = SimpleNamespace(renewable_w=StepSeries.constant("renewable_w", 0.0), carbon_g_per_kwh=carbon,
                                 grid_price_usd_per_mwh=price, export_price_usd_per_mwh=None)
        self.meter = EnergyMeter(scenario, supply, env, cl)
        self.round = MarketRound(scenario, streams, env, cl, self.meter, self, _no_bids, lambda: None,
                                 bids_at_start=False)
        self.tokens_per_usd = float(scenario.market.supply_curve.grid_tokens_per_usd)

    # the Dispatcher seam MarketRound calls
    def apply_allocations(self, alloc_w: np.ndarray, active: np.ndarray) -> None:
        held = self._apply_caps(np.where(active, alloc_w, 0.0))
        self.cluster.alloc_w[:] = held

    def run_round(self, index: int) -> None:
        """The periodic round ``index`` now: the supply view at this instant, then the Token Manager's round."""
        now = self.env.now
        cl = self.cluster
        # the serving model keeps each GPU's billable power (above idle) current; its draw follows from it
        np.add(cl.billable_w, cl.idle_w, out=cl.power_w)
        self.meter.set_supply(0.0, float(self.carbon.value_at(now)), float(self.price.value_at(now)))
        self.round.round_index = index
        self.round.run_round("periodic")

    def credit(self, g: int, revenue_usd: float) -> None:
        """A request GPU ``g`` served completed now: its revenue is minted into ``g``'s wallet at the exchange rate."""
        tokens = revenue_usd * self.tokens_per_usd
        if tokens != 0.0:
            self.round.credit_job_value([g], tokens, tokens)

    def close(self) -> None:
        """At the horizon: book the credits since the last round and settle."""
        self.round.close()

    def below_min_cap(self, cap_w: float) -> bool:
        return bool(self.cluster.below_min_cap(np.array([cap_w]))[0])
