"""The Token Manager's round: supply curve, bid book, clearing, settlement, endowment, wallets and the ledger."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import simpy

from dcsim.buffers import buffer
from dcsim.cluster import ACTIVE, Cluster
from dcsim.config import Scenario
from dcsim.market import J_PER_KWH, BidBook, Clearing, SupplyCurve, build_mechanism, gini, jain_index, welfare_ratio
from dcsim.meter import EnergyMeter
from dcsim.policy import Bids
from dcsim.seeding import Streams

if TYPE_CHECKING:
    from dcsim.dispatch import Dispatcher
    from dcsim.power_delivery import PowerDelivery
    from dcsim.reward_meter import RewardMeter


def round_schedule(scenario: Scenario, streams: Streams) -> np.ndarray:
    """Periodic round times: k·interval, each delayed by U(0, jitter) from the ``market`` stream."""
    mk = scenario.market
    times = np.arange(0.0, scenario.horizon_s, mk.interval_s)
    if mk.round_jitter_s > 0:
        times = times + streams.generator("market").uniform(0.0, mk.round_jitter_s, size=times.size)
    return times[times < scenario.horizon_s]


class MarketRound:
    """Wallets, prices and the rounds that set every GPU's power allocation.

    Each agent pays for the energy above idle it actually uses, at the price it held while using it: energy
    is metered by the cluster (``billable_off + billable_w·t``), priced into ``owed_tokens`` whenever an
    agent's price changes, and debited at each round's settlement. Tokens are conserved:
    minted = held + spent + burned (debits are clipped to wallets; the clipped rest is ``debit_shortfall``).

    Args:
        scenario: The validated scenario (its ``market`` and ``outputs`` sections).
        streams: The run's random streams (``market``: round jitter).
        env: The SimPy environment.
        cluster: The GPUs (their billable energy meters and allocations).
        meter: The energy meter (the supply now).
        jobs: The dispatcher that applies a round's allocations to running jobs.
        start_wants: Asks the agents of a job starting now for their bids and returns the power above idle each
            buys at a price (the decision dispatcher's :meth:`~dcsim.decisions.DecisionDispatcher.start_wants`).
        round_bids: Every agent's bids for a round, called once the round's end is known (None when the
            policy does not bid: the standing bids stay).
        bids_at_start: Whether a starting job's agents bid at its start (event timing with a bidding policy).
    """

    def __init__(self, scenario: Scenario, streams: Streams, env: simpy.Environment, cluster: Cluster,
                 meter: EnergyMeter, jobs: "Dispatcher", start_wants: Callable[[list[int], float], list[float]],
                 round_bids: Callable[[], Bids | None], bids_at_start: bool):
        self.env = env
        self.cluster = cluster
        self.meter = meter
        self.jobs = jobs
        self._start_wants = start_wants
        self._round_bids = round_bids
        self._bids_at_start = bids_at_start
        self.rewards: RewardMeter | None = None  # wired by the core for learning policies
        self.power: PowerDelivery | None = None  # wired by the core with a power-delivery tree
        mk = self.config = scenario.market
        n = self.n_gpus = cluster.n_gpus
        self.horizon_s = scenario.horizon_s
        self.mechanism = build_mechanism(mk)
        self.mechanism_name = mk.mechanism
        self.tokens = {"minted": mk.initial_tokens * n, "spent": 0.0, "burned": 0.0, "debit_shortfall": 0.0}
        self._wal, self.wallet = buffer(n, "d", mk.initial_tokens)
        self._aprice, self.agent_price = buffer(n, "d", mk.base_price_tokens_per_kwh)  # what each agent pays now
        self._owed, self.owed_tokens = buffer(n, "d", 0.0)  # billable energy already priced this round
        self.bid_request_w = np.full(n, cluster.full_power_w)
        self.bid_max_price = np.full(n, np.inf)
        self.want_w = [cluster.span_w] * n  # power above idle each agent buys at the current round's price
        self.round_price = mk.base_price_tokens_per_kwh
        self.round_index = 0
        self.renewable_at_round_w = 0.0
        self.demand_at_round_w = 0.0
        self._endow_every = int(round(mk.endowment_interval_s / mk.interval_s))
        self._credited_since_round = 0.0
        self._agent_ledger = scenario.outputs.ledger_detail == "agent"
        self.ledger_rows: list[tuple] = []
        if mk.initial_tokens > 0:
            self.ledger_rows = ([(0, 0.0, "mint_initial", g, mk.initial_tokens) for g in range(n)] if self._agent_ledger
                                else [(0, 0.0, "mint_initial", -1, mk.initial_tokens * n)])
        self.peak_overallocation_w = -math.inf  # max over time of allocated − sellable power (must stay <= 0)
        self.round_rows: list[dict[str, Any]] = []
        keep = scenario.outputs.allocations
        self.alloc_rows: list[np.ndarray] | None = [] if (keep or (keep is None and n <= 1024)) else None
        self.round_times = round_schedule(scenario, streams)
        # Before the first round (delayed by jitter), jobs start against the real supply and the first round time.
        self.next_round_s = float(self.round_times[0]) if self.round_times.size else self.horizon_s
        self.round_sellable_w = meter.sellable_w(cluster.total_power_w + meter.extra_load_w())

    def next_round_after(self, t: float) -> float:
        """Time of the first periodic round strictly after ``t`` (capped at the horizon)."""
        k = int(np.searchsorted(self.round_times, t, side="right"))
        return float(self.round_times[k]) if k < self.round_times.size else self.horizon_s

    # ------------------------------------------------------------------------------------ the round
    def run_round(self, trigger: str) -> None:
        """Settle, endow (periodic rounds on the endowment schedule), collect bids, clear them against the
        supply curve, apply the allocations to running jobs and log the round."""
        now = self.env.now
        cl = self.cluster
        self.ledger("credit_job_value", self._credited_since_round)
        self._credited_since_round = 0.0
        debited = self.settle()
        flows = {}
        if trigger == "periodic" and self.round_index > 0 and self.round_index % self._endow_every == 0:
            flows = self._endow()
        cl.total_power_w = float(cl.power_w.sum())  # resynchronise the running sum
        round_s = self.next_round_after(now) - now
        self.next_round_s = now + round_s  # so bidders see when this round's allocation ends
        bids = self._round_bids()
        if bids is not None:
            self.bid_request_w, self.bid_max_price = bids.request_w, bids.max_price_tokens_per_kwh
        active = cl.state == ACTIVE
        book = self._bid_book(bids, active, round_s)
        request = book.request_w
        # Power the Token Manager must cover before selling any: unbilled GPU draw (idle, transitions) and the
        # facility's cooling and overhead now (0 without facility.cooling).
        base_load = cl.total_power_w - float(cl.billable_w.sum()) + self.meter.extra_load_w()
        demand_w = base_load + float(request.sum())
        supply = self._supply_curve(base_load, demand_w, round_s)
        clearing = self.mechanism.clear(book, supply, self.wallet.copy())
        alloc = np.where(active, clearing.allocations_w, 0.0)
        if self.power is not None:  # the safety layer: no tree element over its limit
            alloc = self.power.limit_clearing(alloc, active)
        self.round_price = clearing.price_tokens_per_kwh
        self.agent_price[:] = clearing.prices_tokens_per_kwh
        if bids is not None:  # standing bids for jobs that start before the next round
            self.want_w = self.want_at_price(bids, self.round_price).tolist()
        # Jobs starting before the next round draw on what the real supply has left (the curve's grid block
        # was sized to this round's demand only to keep it finite).
        meter = self.meter
        self.round_sellable_w = meter.sellable_w(base_load)
        self.renewable_at_round_w = meter.renewable_w
        self.demand_at_round_w = demand_w
        self.jobs.apply_allocations(alloc, active)
        cl.allocated_sum_w = float(cl.alloc_w.sum())  # resynchronise the running sum
        self._log_round(trigger, now, clearing, book, supply, request, base_load, demand_w, active, debited, flows)

    def _log_round(self, trigger: str, now: float, clearing: Clearing, book: BidBook, supply: SupplyCurve,
                   request: np.ndarray, base_load: float, demand_w: float, active: np.ndarray, debited: float,
                   flows: dict[str, float]) -> None:
        """Append the round's row (and the allocation snapshot) once its allocations are applied."""
        cl = self.cluster
        renewable_w = self.meter.renewable_w
        bidders = request > 0
        granted = cl.alloc_w
        if self.alloc_rows is not None:
            self.alloc_rows.append(granted.astype(np.float32))
        self.round_rows.append({
            "round": len(self.round_rows), "time_s": now, "trigger": trigger, "mechanism": self.mechanism_name,
            "price_tokens_per_kwh": clearing.price_tokens_per_kwh,
            "mean_paid_tokens_per_kwh": float(np.average(clearing.prices_tokens_per_kwh, weights=granted))
            if granted.sum() > 0 else math.nan,
            "renewable_w": renewable_w,
            "renewable_fraction": 1.0 if demand_w <= 0 else min(1.0, renewable_w / demand_w),
            "battery_w": float(self.meter.books.discharge_available_w()),
            "grid_w": float(supply.blocks_w[supply.names.index("grid")]),
            "grid_cost_tokens_per_kwh": float(supply.cost_tokens_per_kwh[supply.names.index("grid")]),
            "base_load_w": base_load, "sellable_w": supply.sellable_w, "requested_w": float(request.sum()),
            "allocated_w": cl.allocated_sum_w, "demand_w": demand_w, "rationed": bool(clearing.rationed),
            "bidders": int(bidders.sum()), "paused_gpus": int(np.sum(active & (cl.clock == 0))),
            "jain_allocation_over_request": jain_index(granted[bidders] / request[bidders]),
            "welfare_ratio": welfare_ratio(book, supply, granted),
            "tokens_debited": debited, "tokens_minted": flows.get("mint_endowment", 0.0),
            "tokens_burned": flows.get("burn_demurrage", 0.0) + flows.get("burn_carry_over", 0.0),
            "tokens_held": float(self.wallet.sum()), "gini_wallets": gini(self.wallet),
        })

    def _supply_curve(self, base_load_w: float, demand_w: float, round_s: float) -> SupplyCurve:
        """The round's merit order: renewable, battery and grid blocks sorted by token cost.

        The grid block is the import cap, or, when unlimited, enough to serve all demand (a finite curve)."""
        sc = self.config.supply_curve
        meter = self.meter
        # Wholesale prices can be negative; the token market sells at non-negative costs (floored at 0).
        grid_cost = max(0.0, sc.grid_tokens_per_usd * meter.grid_price / 1000.0
                        + sc.carbon_adder_tokens_per_kg * meter.carbon / 1000.0)
        blocks = np.array([meter.renewable_w, meter.books.discharge_available_w(),
                           min(meter.books.import_cap_w, max(demand_w, 0.0))])
        cost = np.array([sc.renewable_tokens_per_kwh, sc.battery_tokens_per_kwh, grid_cost])
        order = np.argsort(cost, kind="stable")
        names = ("renewable", "battery", "grid")
        return SupplyCurve(blocks[order], cost[order], tuple(names[i] for i in order), base_load_w, round_s)

    def _bid_book(self, bids: Bids | None, active: np.ndarray, round_s: float) -> BidBook:
        """Turn the agents' bids into the mechanism's bid book: only GPUs running a job demand power, within
        their dynamic range (a demand curve longer than the range is scaled down in proportion); Kelly offers
        default to the request's value at the agent's max price, or p0·e^κ for a price-blind agent."""
        cl = self.cluster
        request = np.where(active, np.clip(self.bid_request_w - cl.idle_w, 0.0, cl.span_w), 0.0)
        if bids is not None and bids.steps_w is not None:
            steps = bids.steps_w * active[:, None]
            total = steps.sum(axis=1)
            scale = np.where(total > cl.span_w, cl.span_w / np.where(total > 0, total, 1.0), 1.0)
            steps_w, steps_price = steps * scale[:, None], bids.steps_price
        else:
            steps_w, steps_price = request[:, None], self.bid_max_price[:, None]
        if bids is not None and bids.kelly_tokens is not None:
            kelly = np.where(active, np.minimum(bids.kelly_tokens, self.wallet), 0.0)
        else:
            # Offer what the request is worth at the agent's own limit; a price-blind agent values power at the
            # posted-price ceiling p0·e^κ (scarcity pricing's price with no renewable power). Using the last
            # clearing price instead would make a zero price reproduce itself.
            mk = self.config
            ceiling = mk.base_price_tokens_per_kwh * math.exp(mk.scarcity_kappa)
            value = np.where(np.isfinite(self.bid_max_price), self.bid_max_price, ceiling)
            kelly = np.minimum(self.wallet, value * steps_w.sum(axis=1) * round_s / J_PER_KWH)
        return BidBook(steps_w, steps_price, kelly)

    # ------------------------------------------------------------------------------------ between rounds
    def spot_allocation(self, gpus: list[int]) -> float:
        """Power above idle for a job starting between rounds: its agents' standing bids cleared at the
        round's headline price, limited by each agent's budget for the rest of the round and by unallocated
        supply. Its agents pay the headline price from now on (energy used before is settled at the old one)."""
        price = self.round_price
        now = self.env.now
        left_s = max(self.next_round_s - now, math.ulp(self.next_round_s))  # > 0 even at the round itself
        if self._bids_at_start:  # a job start is a decision point: its agents bid now
            for g, want in zip(gpus, self._start_wants(gpus, price)):
                self.want_w[g] = want
        cl = self.cluster
        boff, bw = cl._boff, cl._bw
        a = cl.span_w
        for g in gpus:
            self._reprice(g, price, now)
            if price > 0:
                # what the agent already owes this round, including energy used at the current price
                owes = self._owed[g] + price * (boff[g] + bw[g] * now) / J_PER_KWH
                afford = max(self._wal[g] - owes, 0.0) * J_PER_KWH / (price * left_s)
            else:
                afford = math.inf
            a = min(a, self.want_w[g], afford)
        headroom = max(0.0, self.round_sellable_w - cl.allocated_sum_w)
        if self.power is not None:  # and within what the tree elements above the job have left
            a = min(a, self.power.start_headroom_w(gpus))
        return max(0.0, min(a, headroom / len(gpus)))

    def want_at_price(self, bids: Bids, price: float) -> np.ndarray:
        """Power above idle each bidder buys at a posted ``price``: its blocks priced at or above it."""
        cl = self.cluster
        if bids.steps_w is not None:
            want = np.sum(np.where(bids.steps_price >= price, bids.steps_w, 0.0), axis=1)
        else:
            want = np.where(bids.max_price_tokens_per_kwh >= price, bids.request_w - cl.idle_w, 0.0)
        return np.clip(want, 0.0, cl.span_w)

    def _wants_at_price(self, bids: Bids, price: float) -> list[float]:
        """:meth:`want_at_price` as a list; a few single-block bids (a job starting) are priced as Python numbers."""
        if bids.steps_w is not None or bids.request_w.size > 16:
            return self.want_at_price(bids, price).tolist()
        cl = self.cluster
        idle_w, span_w = cl.idle_w, cl.span_w
        return [min(max(r - idle_w if p >= price else 0.0, 0.0), span_w)
                for r, p in zip(bids.request_w.tolist(), bids.max_price_tokens_per_kwh.tolist())]

    def few_wants_at_price(self, request_w: list[float], max_price: list[float], steps: list | None,
                           price: float) -> list[float]:
        """:meth:`want_at_price` of a few checked bids given as Python numbers (:func:`dcsim.policy.few_bid_values`),
        operation for operation: a row's blocks priced at or above ``price``, summed (at most two, so in numpy's
        order), clipped to ``[0, span]``."""
        cl = self.cluster
        idle_w, span_w = cl.idle_w, cl.span_w
        if steps is None:
            return [min(max(r - idle_w if p >= price else 0.0, 0.0), span_w) for r, p in zip(request_w, max_price)]
        wants = []
        for w_row, p_row in steps:
            want = 0.0
            for k, (w, p) in enumerate(zip(w_row, p_row)):
                x = w if p >= price else 0.0
                want = x if k == 0 else want + x
            wants.append(min(max(want, 0.0), span_w))
        return wants

    def _reprice(self, g: int, price: float, now: float) -> None:
        """Book what agent ``g`` owes for billable energy so far at its old price, then switch its price."""
        if self._aprice[g] != price:
            cl = self.cluster
            used_j = cl._boff[g] + cl._bw[g] * now
            if used_j > 0:
                self._owed[g] += self._aprice[g] * used_j / J_PER_KWH
            cl._boff[g] = -cl._bw[g] * now
            self._aprice[g] = price

    def credit_job_value(self, gpus: list[int], share: float, value: float) -> None:
        """A job completed now: each of its ``gpus`` receives ``share`` of its ``value`` (tokens, minted)."""
        wal = self._wal
        for g in gpus:
            wal[g] += share
        self.tokens["minted"] += value
        if self._agent_ledger:
            row, now = len(self.round_rows), self.env.now
            for g in gpus:
                self.ledger_rows.append((row, now, "credit_job_value", g, share))
        else:
            self._credited_since_round += value

    # ------------------------------------------------------------------------------------ tokens
    def settle(self) -> float:
        """Charge every agent for the energy above idle it used since the last settlement, each at the
        price it held while using it. Books the debits in the ledger and returns their total."""
        now = self.env.now
        cl = self.cluster
        used_j = cl.billable_off + cl.billable_w * now
        # only energy actually used is charged (an infinite price on no energy must not give NaN)
        charge = np.multiply(self.agent_price, used_j, out=np.zeros(self.n_gpus), where=used_j > 0)
        debit = self.owed_tokens + charge / J_PER_KWH
        self.tokens["debit_shortfall"] += float(np.maximum(debit - self.wallet, 0.0).sum())
        debit = np.minimum(debit, self.wallet)
        self.wallet -= debit
        if self.rewards is not None:
            self.rewards.settled += debit
        total = float(debit.sum())
        self.tokens["spent"] += total
        cl.billable_off[:] = -cl.billable_w * now
        self.owed_tokens[:] = 0.0
        self.ledger("debit_energy", debit)
        return total

    def close(self) -> None:
        """At the horizon: book job value credited since the last round and settle."""
        self.ledger("credit_job_value", self._credited_since_round)
        self.settle()

    def _endow(self) -> dict[str, float]:
        """Pay the periodic endowment after burning demurrage and anything above the carry-over cap."""
        mk = self.config
        flows = {"burn_demurrage": 0.0, "burn_carry_over": 0.0, "mint_endowment": 0.0}
        if mk.demurrage_fraction > 0:
            decay = self.wallet * mk.demurrage_fraction
            flows["burn_demurrage"] = float(decay.sum())
            self.wallet -= decay
            self.ledger("burn_demurrage", decay)
        if mk.carry_over_cap_tokens is not None:
            over = np.maximum(self.wallet - mk.carry_over_cap_tokens, 0.0)
            flows["burn_carry_over"] = float(over.sum())
            self.wallet -= over
            self.ledger("burn_carry_over", over)
        self.wallet += mk.endowment_tokens
        flows["mint_endowment"] = mk.endowment_tokens * self.n_gpus
        self.ledger("mint_endowment", np.full(self.n_gpus, mk.endowment_tokens))
        self.tokens["minted"] += flows["mint_endowment"]
        self.tokens["burned"] += flows["burn_demurrage"] + flows["burn_carry_over"]
        return flows

    def ledger(self, kind: str, tokens: np.ndarray | float, agent: int = -1) -> None:
        """Book a token flow: per agent (agent detail) or summed with agent = -1 (round detail); zeros are skipped."""
        row = len(self.round_rows)
        now = self.env.now
        if isinstance(tokens, np.ndarray):
            if self._agent_ledger:
                nz = np.flatnonzero(tokens)
                self.ledger_rows.extend(zip([row] * nz.size, [now] * nz.size, [kind] * nz.size, nz.tolist(),
                                            tokens[nz].tolist()))
                return
            tokens = float(tokens.sum())
        if tokens != 0.0:
            self.ledger_rows.append((row, now, kind, agent, tokens))
