"""The SimPy model of the datacenter: arrivals, dispatch, GPU power states, completions, supply and market rounds."""
from __future__ import annotations

import array
import heapq
import math
import time
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable

import numpy as np
import pandas as pd
import simpy

from dcsim.config import Scenario
from dcsim.energy import EnergyBooks
from dcsim.learning import REWARD_COMPONENTS, Feedback, reward_weights
from dcsim.market import J_PER_KWH, BidBook, SupplyCurve, build_mechanism, gini, jain_index, welfare_ratio
from dcsim.policy import (
    Admission,
    AgentObservation,
    Bids,
    GpuSpecView,
    GpuState,
    IdleAction,
    JobObservation,
    MarketView,
    Policy,
    check_actions,
    check_bids,
)
from dcsim.seeding import Streams
from dcsim.supply import SupplyInputs


class JobStatus(IntEnum):
    """Where a job is. Every job ends a run as COMPLETED, DROPPED or one of the pending states."""

    FUTURE = 0  # not yet arrived
    DEFERRED = 1  # held back by the policy
    QUEUED = 2  # waiting for GPUs
    STARTING = 3  # GPUs claimed, some still waking
    RUNNING = 4
    COMPLETED = 5
    DROPPED = 6



class DropReason(IntEnum):
    NONE = 0
    TOO_LARGE = 1  # needs more GPUs than the cluster has
    QUEUE_FULL = 2
    DEADLINE_EXPIRED = 3  # deadline passed while waiting or deferred


_TRANSITION_TARGET = {
    GpuState.WAKING: GpuState.IDLE,
    GpuState.BOOTING: GpuState.IDLE,
    GpuState.ENTERING_SLEEP: GpuState.SLEEP,
    GpuState.SHUTTING_DOWN: GpuState.OFF,
}


@dataclass
class RunResult:
    """Everything a run produced, before it is written out."""

    scenario: Scenario
    policy: Policy
    jobs: pd.DataFrame
    rounds: pd.DataFrame
    timeseries: pd.DataFrame
    energy: dict[str, float]
    tokens: dict[str, float]
    gpu_energy_j: np.ndarray
    ledger: pd.DataFrame
    wallets: np.ndarray
    decisions: pd.DataFrame
    allocations_w: np.ndarray | None = None  # (rounds, gpus) power above idle granted at each round, W
    events: pd.DataFrame | None = None
    agent_returns: np.ndarray | None = None  # learning policies: each agent's summed feedback rewards
    counters: dict[str, float] = field(default_factory=dict)


_OFF, _SLEEP, _IDLE, _ACTIVE = int(GpuState.OFF), int(GpuState.SLEEP), int(GpuState.IDLE), int(GpuState.ACTIVE)
_WAKING, _ENTERING_SLEEP, _BOOTING, _SHUTTING_DOWN = (int(GpuState.WAKING), int(GpuState.ENTERING_SLEEP),
                                                       int(GpuState.BOOTING), int(GpuState.SHUTTING_DOWN))
_QUEUED, _DEFERRED, _STARTING = int(JobStatus.QUEUED), int(JobStatus.DEFERRED), int(JobStatus.STARTING)
_RUNNING, _COMPLETED, _DROPPED = int(JobStatus.RUNNING), int(JobStatus.COMPLETED), int(JobStatus.DROPPED)
_TARGET = {int(k): int(v) for k, v in _TRANSITION_TARGET.items()}
_SLEEP_ACTION, _OFF_ACTION = int(IdleAction.SLEEP), int(IdleAction.POWER_OFF)
_NP_TYPES = {"d": np.float64, "q": np.int64, "b": np.int8}
# Events due within this many ulps of the event time happen at that instant (completions computed as
# ``now + remaining / rate`` by different jobs can differ in the last bits); anything further apart is later.
SAME_INSTANT_ULPS = 4


def _buffer(n: int, typecode: str, fill: float | int) -> tuple[array.array, np.ndarray]:
    """An ``array.array`` and a numpy view of the same memory: fast scalar access from Python on the
    per-job hot path, whole-array numpy operations at market rounds."""
    buf = array.array(typecode, [fill]) * n
    return buf, np.frombuffer(buf, dtype=_NP_TYPES[typecode])


class _RewardMeter:
    """Meters each agent's reward components between its decisions (only built for learning policies).

    Value credited, deadline misses and settled tokens are counted as they happen; energy, unsettled token
    liabilities and the latency of running jobs (each GPU of a k-GPU job accrues 1/k s per s) are read off
    linear meters at decision time. What no agent owns — time jobs spend waiting before they start, deadlines
    missed while waiting, dropped jobs — is shared equally by all agents. At the horizon, jobs still pending
    are charged their time so far and, past their deadline, a miss. Carbon is attributed to an agent by its
    share of the cluster's energy over its own interval. Totals equal :func:`dcsim.learning.episode_totals`.
    """

    def __init__(self, sim: "Simulation"):
        n = sim.n_gpus
        cfg = sim.scenario.reward
        self.sim = sim
        self.n = n
        self.weights = reward_weights(cfg)
        self.team_fraction = cfg.team_fraction
        self.value = np.zeros(n)
        self.misses = np.zeros(n)
        self.settled = np.zeros(n)
        self.lat_off = np.zeros(n)  # own latency(t) = lat_off + lat_rate·t
        self.lat_rate = np.zeros(n)
        self.shared = np.zeros(3)  # latency_s, deadline misses, drops that no agent owns
        self.last_s = np.zeros(n)
        self.first = np.ones(n, dtype=bool)
        self.snap = np.zeros((n, 5))  # own value, spent, energy_j, latency_s, misses
        self.snap_shared = np.zeros((n, 3))
        self.snap_cluster = np.zeros((n, 2))  # cluster consumed_j and carbon_g
        self.snap_team = np.zeros((n, len(REWARD_COMPONENTS)))
        self.returns = np.zeros(n)  # undiscounted sum of all feedback rewards per agent

    def start(self, j: int, gpus: list[int], now: float) -> None:
        """Job ``j`` starts running: its wait is shared; from now its GPUs accrue its latency."""
        self.shared[0] += now - self.sim.arrival_s[j]
        k = len(gpus)
        for g in gpus:
            self.lat_off[g] -= now / k
            self.lat_rate[g] += 1.0 / k

    def complete(self, gpus: list[int], value_share: float, now: float, late: bool) -> None:
        k = len(gpus)
        for g in gpus:
            self.value[g] += value_share
            self.lat_off[g] += now / k
            self.lat_rate[g] -= 1.0 / k
            if late:
                self.misses[g] += 1.0 / k

    def drop(self, j: int, now: float, expired: bool) -> None:
        self.shared += (now - self.sim.arrival_s[j], 1.0 if expired else 0.0, 1.0)

    def close(self, now: float) -> None:
        """At the horizon: pending jobs past their deadline count as misses (running ones to their GPUs), and
        jobs that never started are charged the time they waited."""
        sim = self.sim
        for j, gpus in sim.job_gpus.items():
            if sim._stat[j] == _RUNNING:
                if sim._deadline[j] < now:
                    for g in gpus:
                        self.misses[g] += 1.0 / len(gpus)
            else:  # claimed GPUs still waking: not started
                self.shared += (now - sim.arrival_s[j], 1.0 if sim._deadline[j] < now else 0.0, 0.0)
        for j in list(sim.queue) + list(sim.deferred):
            self.shared += (now - sim.arrival_s[j], 1.0 if sim._deadline[j] < now else 0.0, 0.0)

    def _spent(self, idx: np.ndarray) -> np.ndarray:
        """Tokens paid plus owed (not yet settled) by agents ``idx`` up to now."""
        sim = self.sim
        used = sim.billable_off[idx] + sim.billable_w[idx] * sim.env.now
        liability = sim.owed_tokens[idx] + np.multiply(sim.agent_price[idx], used, out=np.zeros(idx.size),
                                                       where=used > 0) / J_PER_KWH
        return self.settled[idx] + liability

    def _own(self, idx: np.ndarray) -> np.ndarray:
        sim = self.sim
        now = sim.env.now
        return np.stack([self.value[idx], self._spent(idx), sim.energy_off[idx] + sim.power_w[idx] * now,
                         self.lat_off[idx] + self.lat_rate[idx] * now, self.misses[idx]], axis=1)

    def _team_now(self) -> np.ndarray:
        books = self.sim.books.totals
        own = self._own(np.arange(self.n)).sum(axis=0)
        return np.array([own[0], own[1], books.consumed_j / J_PER_KWH, books.carbon_g / 1000.0,
                         own[3] + self.shared[0], own[4] + self.shared[1], self.shared[2]])

    def feedback(self, idx: np.ndarray) -> Feedback:
        """Rewards of agents ``idx`` since their previous decision; starts their next interval now."""
        sim = self.sim
        now = sim.env.now
        sim._advance()
        own = self._own(idx)
        d_own = own - self.snap[idx]
        d_shared = (self.shared[None, :] - self.snap_shared[idx]) / self.n
        books = sim.books.totals
        cluster = np.array([books.consumed_j, books.carbon_g])
        d_cluster = cluster - self.snap_cluster[idx]
        carbon_kg = np.divide(d_own[:, 2] * d_cluster[:, 1], d_cluster[:, 0], out=np.zeros(idx.size),
                              where=d_cluster[:, 0] > 0) / 1000.0
        comps = np.stack([d_own[:, 0], d_own[:, 1], d_own[:, 2] / J_PER_KWH, carbon_kg, d_own[:, 3] + d_shared[:, 0],
                          d_own[:, 4] + d_shared[:, 1], d_shared[:, 2]], axis=1)
        reward = comps @ self.weights
        if self.team_fraction > 0:
            team = self._team_now()
            team_reward = ((team[None, :] - self.snap_team[idx]) @ self.weights) / self.n
            reward = (1.0 - self.team_fraction) * reward + self.team_fraction * team_reward
            self.snap_team[idx] = team
        fb = Feedback(reward, now - self.last_s[idx], self.first[idx].copy(), comps)
        self.snap[idx] = own
        self.snap_shared[idx] = self.shared
        self.snap_cluster[idx] = cluster
        self.last_s[idx] = now
        self.first[idx] = False
        self.returns[idx] += reward
        return fb


class Simulation:
    """One run of a scenario under a policy.

    Per-GPU and per-job state lives in flat arrays (numpy views over ``array.array`` buffers). SimPy
    drives time through three processes (arrivals, supply changes, market rounds) and timeout
    callbacks (power-state transitions, job completions). Job completion times sit in a heap and are
    moved when a job's clock changes; stale entries are skipped by version, so nothing is polled.
    Per-GPU energy is kept as ``E(t) = offset + P·t``, so a power change is one update.

    Args:
        scenario: The validated scenario.
        policy: The decision policy.
        jobs: The job table (see :mod:`dcsim.jobs`).
        supply: Supply series aligned to the scenario start.
        streams: The run's random streams.
        progress: Called with the simulated time at each periodic round, or None.
    """

    def __init__(self, scenario: Scenario, policy: Policy, jobs: pd.DataFrame, supply: SupplyInputs,
                 streams: Streams, progress: Callable[[float], None] | None = None):
        self.scenario = scenario
        self.policy = policy
        self.supply = supply
        self.progress = progress
        self.env = simpy.Environment()
        self.horizon_s = scenario.horizon_s
        start = pd.Timestamp(scenario.start)
        self._hour0 = start.hour + start.minute / 60 + start.second / 3600

        cl = scenario.cluster
        spec = cl.power_spec()
        self.idle_w, self.tdp_w, self.min_cap_w = spec["idle_w"], spec["tdp_w"], spec["min_cap_w"]
        # a cap that rounds a few ulps short of the board's minimum (idle + (min − idle)) is still the minimum
        self._min_cap_floor_w = self.min_cap_w - SAME_INSTANT_ULPS * math.ulp(self.min_cap_w)
        self.gamma, self.util = spec["gamma"], spec["utilisation"]
        self.span_w = (self.tdp_w - self.idle_w) * self.util
        self.full_power_w = self.idle_w + self.span_w
        self.gpu_view = GpuSpecView(self.idle_w, self.tdp_w, self.min_cap_w, self.full_power_w, self.gamma, self.util)
        tr = cl.transitions
        self.transition_s = {_WAKING: tr.wake_s, _ENTERING_SLEEP: tr.sleep_s, _BOOTING: tr.boot_s,
                             _SHUTTING_DOWN: tr.shutdown_s}
        energy = {_WAKING: tr.wake_j, _ENTERING_SLEEP: tr.sleep_j, _BOOTING: tr.boot_j, _SHUTTING_DOWN: tr.shutdown_j}
        self.state_power_w = [0.0] * len(GpuState)
        self.state_power_w[_OFF] = spec["off_w"]
        self.state_power_w[_SLEEP] = spec["sleep_w"]
        self.state_power_w[_IDLE] = self.state_power_w[_ACTIVE] = self.idle_w
        for st, dur in self.transition_s.items():
            self.state_power_w[st] = energy[st] / dur if dur > 0 else 0.0

        # ---- GPU state
        n = self.n_gpus = cl.gpus
        initial = {"idle": _IDLE, "sleep": _SLEEP, "off": _OFF}[cl.initial_state]
        self._st, self.state = _buffer(n, "b", initial)
        self._asg, self.assigned = _buffer(n, "q", -1)
        self._pw, self.power_w = _buffer(n, "d", self.state_power_w[initial])
        self._bw, self.billable_w = _buffer(n, "d", 0.0)  # power above idle of running GPUs: what agents pay for
        self._eoff, self.energy_off = _buffer(n, "d", 0.0)  # energy(t) = energy_off + power_w * t
        self._boff, self.billable_off = _buffer(n, "d", 0.0)  # billable energy since settlement, same form
        self._al, self.alloc_w = _buffer(n, "d", 0.0)  # allocated power above idle
        self._ck, self.clock = _buffer(n, "d", 0.0)
        self._wal, self.wallet = _buffer(n, "d", scenario.market.initial_tokens)
        self.wake_after = bytearray(n)
        self.total_power_w = float(self.power_w.sum())
        self.free_idle: dict[int, None] = {}
        self.free_sleep: dict[int, None] = {}
        self.free_off: dict[int, None] = {}
        {_IDLE: self.free_idle, _SLEEP: self.free_sleep, _OFF: self.free_off}[initial].update(dict.fromkeys(range(n)))

        # ---- market and wallets
        mk = scenario.market
        self.mechanism = build_mechanism(mk)
        self.mechanism_name = mk.mechanism
        self.tokens = {"minted": mk.initial_tokens * n, "spent": 0.0, "burned": 0.0, "debit_shortfall": 0.0}
        self.bid_request_w = np.full(n, self.full_power_w)
        self.bid_max_price = np.full(n, np.inf)
        self._want = [self.span_w] * n  # power above idle each agent buys at the current round's price
        self.round_price = mk.base_price_tokens_per_kwh
        self.round_sellable_w = math.inf
        self.allocated_sum_w = 0.0
        self.next_round_s = 0.0
        self.round_index = 0
        self.renewable_at_round_w = 0.0
        self.demand_at_round_w = 0.0
        self._endow_every = int(round(mk.endowment_interval_s / mk.interval_s))
        self._aprice, self.agent_price = _buffer(n, "d", mk.base_price_tokens_per_kwh)  # what each agent pays now
        self._owed, self.owed_tokens = _buffer(n, "d", 0.0)  # billable energy already priced this round
        self._credited_since_round = 0.0
        self._agent_ledger = scenario.outputs.ledger_detail == "agent"
        self.ledger_rows: list[tuple] = []
        if mk.initial_tokens > 0:
            self.ledger_rows = ([(0, 0.0, "mint_initial", g, mk.initial_tokens) for g in range(n)] if self._agent_ledger
                                else [(0, 0.0, "mint_initial", -1, mk.initial_tokens * n)])
        self.peak_overallocation_w = -math.inf  # max over time of allocated − sellable power (must stay <= 0)

        # ---- jobs: static columns as numpy (vector work) and lists (scalar work)
        self.jobs_in = jobs
        m = len(jobs)
        self.arrival_s = jobs["arrival_s"].to_numpy(float)
        self.job_gpus_n = jobs["gpus"].to_numpy(np.int64)
        self.deadline_s = np.nan_to_num(jobs["deadline_s"].to_numpy(float), nan=np.inf)
        self.deferrable = jobs["deferrable"].to_numpy(bool)
        self.value_tokens = jobs["value_tokens"].to_numpy(float)
        self.beta = jobs["clock_sensitivity"].to_numpy(float)
        self.duration_full_s = jobs["work_gpu_s"].to_numpy(float) / self.job_gpus_n
        self._k, self._deadline = self.job_gpus_n.tolist(), self.deadline_s.tolist()
        self._beta, self._value = self.beta.tolist(), self.value_tokens.tolist()
        # ---- jobs: dynamic state
        self._stat, self.status = _buffer(m, "b", int(JobStatus.FUTURE))
        self._why, self.drop_reason = _buffer(m, "b", 0)
        self._start, self.start_s = _buffer(m, "d", math.nan)
        self._finish, self.finish_s = _buffer(m, "d", math.nan)
        self._rem, self.remaining_s = _buffer(m, "d", 0.0)  # full-clock seconds left as of last_s
        self.remaining_s[:] = self.duration_full_s
        self._rate, self.rate = _buffer(m, "d", 0.0)
        self._last, self.last_s = _buffer(m, "d", 0.0)
        self._jal, self.job_alloc_w = _buffer(m, "d", 0.0)
        self._jen, self.job_energy_j = _buffer(m, "d", 0.0)
        self._mark = array.array("d", [0.0]) * m
        self._ver = [0] * m
        self._pending = [0] * m
        self.job_gpus: dict[int, list[int]] = {}
        self.queue: deque[int] = deque()
        self.deferred: list[int] = []
        self.heap: list[tuple[float, int, int]] = []
        self._timers: list[float] = []
        self._scratch = np.zeros(m)

        # ---- supply
        self.books = EnergyBooks(scenario.supply.battery, scenario.supply.grid.import_cap_w)
        self.renewable_w = float(supply.renewable_w.value_at(0.0))
        self.carbon = float(supply.carbon_g_per_kwh.value_at(0.0))
        self.grid_price = float(supply.grid_price_usd_per_mwh.value_at(0.0))
        self._t_books = 0.0

        # ---- records
        self.round_rows: list[dict[str, Any]] = []
        self.ts_rows: list[tuple] = []
        self.n_events = 0
        self._calls = {name: policy.overrides(name) for name in ("bid", "admit", "on_idle")}
        timing = scenario.decision_timing
        self.tick_s: float | None = None if timing == "event" else timing.fixed_step
        self._tick_bids: Bids | None = None
        self.decision_rows: list[tuple] = []
        self._trace: list[tuple] | None = [] if scenario.outputs.trace_events else None
        self.round_times = self._round_schedule(streams)
        # Before the first round (delayed by jitter), jobs start against the real supply and the first round time.
        self.next_round_s = float(self.round_times[0]) if self.round_times.size else self.horizon_s
        self.round_sellable_w = max(0.0, self.renewable_w + self.books.discharge_available_w()
                                    + self.books.import_cap_w - self.total_power_w)
        keep = scenario.outputs.allocations
        self._alloc_rows: list[np.ndarray] | None = [] if (keep or (keep is None and n <= 1024)) else None
        self._drop_expired = scenario.workload.drop_expired
        self._max_queue = scenario.workload.max_queue
        self._meter = _RewardMeter(self) if policy.wants_feedback else None
        policy.reset(streams.generator("policy"), self.gpu_view, n)

    # ------------------------------------------------------------------------------------ bookkeeping
    def _advance(self) -> None:
        """Book energy by source from the last event to now at the power that held in between."""
        now = self.env.now
        dt = now - self._t_books
        if dt > 0:
            self.books.advance(dt, max(0.0, self.total_power_w), self.renewable_w, self.carbon, self.grid_price)
            self._t_books = now

    def _set_power(self, g: int, power_w: float, billable_w: float) -> None:
        """Change one GPU's power draw now (energy meters stay exact: ``offset += (old − new)·t``)."""
        now = self.env.now
        old = self._pw[g]
        if old != power_w:
            self._eoff[g] += (old - power_w) * now
            self._pw[g] = power_w
            self.total_power_w += power_w - old
        old = self._bw[g]
        if old != billable_w:
            self._boff[g] += (old - billable_w) * now
            self._bw[g] = billable_w

    def gpu_energy_now(self) -> np.ndarray:
        """Energy each GPU has used since t = 0, J."""
        return self.energy_off + self.power_w * self.env.now

    def _cap(self, alloc_w: float) -> tuple[float, float, float]:
        """Clock fraction, power and effective allocation of a running GPU given power ``alloc_w`` above idle.

        ``f`` solves ``idle + span·f**gamma = idle + alloc``; a cap below the board's minimum cannot be
        enforced, so the job pauses (f = 0, idle power, no allocation held).
        """
        if self.idle_w + alloc_w < self._min_cap_floor_w or alloc_w <= 0:
            return 0.0, self.idle_w, 0.0
        ratio = min(alloc_w / self.span_w, 1.0)
        return ratio ** (1.0 / self.gamma), self.idle_w + self.span_w * ratio, alloc_w

    # ------------------------------------------------------------------------------------ observations
    def _market_view(self) -> MarketView:
        now = self.env.now
        demand = max(0.0, self.total_power_w)
        return MarketView(
            time_s=now, hour_utc=(self._hour0 + now / 3600.0) % 24.0, renewable_w=self.renewable_w, demand_w=demand,
            renewable_fraction=1.0 if demand <= 0 else min(1.0, self.renewable_w / demand),
            price_tokens_per_kwh=self.round_price,
            base_price_tokens_per_kwh=self.scenario.market.base_price_tokens_per_kwh,
            grid_carbon_g_per_kwh=self.carbon, grid_price_usd_per_mwh=self.grid_price,
            battery_soc=self.books.soc_fraction, queue_length=len(self.queue), deferred_jobs=len(self.deferred),
            next_round_s=self.next_round_s,
        )

    def _remaining_now(self, jobs: np.ndarray) -> np.ndarray:
        return np.maximum(0.0, self.remaining_s[jobs] - self.rate[jobs] * (self.env.now - self.last_s[jobs]))

    def _agent_obs(self, idx: np.ndarray) -> AgentObservation:
        n = idx.size
        jobs = self.assigned[idx]
        has = jobs >= 0
        remaining, slack = np.zeros(n), np.full(n, np.inf)
        beta, value, job_gpus = np.ones(n), np.zeros(n), np.zeros(n, dtype=np.int64)
        if has.any():
            j = jobs[has]
            remaining[has] = self._remaining_now(j)
            slack[has] = self.deadline_s[j] - self.env.now - remaining[has]
            beta[has] = self.beta[j]
            value[has] = self.value_tokens[j]
            job_gpus[has] = self.job_gpus_n[j]
        feedback = None if self._meter is None else self._meter.feedback(idx)
        return AgentObservation(idx, self.state[idx].copy(), has, remaining, slack, beta, value, job_gpus,
                                self.wallet[idx].copy(), self._market_view(), self.gpu_view, feedback)

    # ------------------------------------------------------------------------------------ power states
    def _begin_transition(self, gpus: list[int], state: int) -> None:
        power = self.state_power_w[state]
        if self._trace is not None:
            for g in gpus:
                self._trace.append((self.env.now, "power_state", g, GpuState(state).name.lower()))
        for g in gpus:
            self._st[g] = state
            self._set_power(g, power, 0.0)
        duration = self.transition_s[state]
        if duration <= 0:
            self._end_transition(gpus, count=False)
            return
        ev = self.env.timeout(duration)
        ev.callbacks.append(lambda _ev, gpus=gpus: self._end_transition(gpus))

    def _end_transition(self, gpus: list[int], count: bool = True) -> None:
        if count:
            self._advance()
            self.n_events += 1
        target = _TARGET[self._st[gpus[0]]]
        power = self.state_power_w[target]
        if self._trace is not None:
            for g in gpus:
                self._trace.append((self.env.now, "power_state", g, GpuState(target).name.lower()))
        for g in gpus:
            self._st[g] = target
            self._set_power(g, power, 0.0)
        if target == _IDLE:
            pending = self._pending
            for g in gpus:
                j = self._asg[g]
                if j >= 0:
                    pending[j] -= 1
                    if pending[j] == 0:
                        self._start_job(j)
        else:
            again = [g for g in gpus if self.wake_after[g]]
            for g in again:
                self.wake_after[g] = 0
            if again:
                self._begin_transition(again, _WAKING if target == _SLEEP else _BOOTING)
        self._arm()

    # ------------------------------------------------------------------------------------ jobs
    def _claim(self, j: int, k: int) -> None:
        if k == 1 and self.free_idle:  # the common case: one GPU, already idle
            g = self.free_idle.popitem()[0]
            self._asg[g] = j
            self.job_gpus[j] = [g]
            self._start_job(j)
            return
        taken: list[int] = []
        for pool in (self.free_idle, self.free_sleep, self.free_off):
            while len(taken) < k and pool:
                taken.append(pool.popitem()[0])
        st, asg = self._st, self._asg
        for g in taken:
            asg[g] = j
        self.job_gpus[j] = taken
        not_ready = [g for g in taken if st[g] != _IDLE]
        if not not_ready:
            self._start_job(j)
            return
        self._pending[j] = len(not_ready)
        self._stat[j] = _STARTING
        asleep = [g for g in not_ready if st[g] == _SLEEP]
        off = [g for g in not_ready if st[g] == _OFF]
        for g in not_ready:
            if st[g] != _SLEEP and st[g] != _OFF:
                self.wake_after[g] = 1  # mid-transition to sleep/off: wake as soon as it settles
        if asleep:
            self._begin_transition(asleep, _WAKING)
        if off:
            self._begin_transition(off, _BOOTING)

    def _spot_allocation(self, gpus: list[int]) -> float:
        """Power above idle for a job starting between rounds: its agents' standing bids cleared at the
        round's headline price, limited by each agent's budget for the rest of the round and by unallocated
        supply. Its agents pay the headline price from now on (energy used before is settled at the old one)."""
        price = self.round_price
        now = self.env.now
        left_s = max(self.next_round_s - now, math.ulp(self.next_round_s))  # > 0 even at the round itself
        if self._calls["bid"] and self.tick_s is None:  # a job start is a decision point: its agents bid now
            bids = self._ask_bids(np.asarray(gpus, dtype=np.int64))
            for g, want in zip(gpus, self._want_at_price(bids, price).tolist()):
                self._want[g] = want
        a = self.span_w
        for g in gpus:
            self._reprice(g, price, now)
            if price > 0:
                # what the agent already owes this round, including energy used at the current price
                owes = self._owed[g] + price * (self._boff[g] + self._bw[g] * now) / J_PER_KWH
                afford = max(self._wal[g] - owes, 0.0) * J_PER_KWH / (price * left_s)
            else:
                afford = math.inf
            a = min(a, self._want[g], afford)
        headroom = max(0.0, self.round_sellable_w - self.allocated_sum_w)
        return max(0.0, min(a, headroom / len(gpus)))

    def _want_at_price(self, bids: Bids, price: float) -> np.ndarray:
        """Power above idle each bidder buys at a posted ``price``: its blocks priced at or above it."""
        if bids.steps_w is not None:
            want = np.sum(np.where(bids.steps_price >= price, bids.steps_w, 0.0), axis=1)
        else:
            want = np.where(bids.max_price_tokens_per_kwh >= price, bids.request_w - self.idle_w, 0.0)
        return np.clip(want, 0.0, self.span_w)

    def _reprice(self, g: int, price: float, now: float) -> None:
        """Book what agent ``g`` owes for billable energy so far at its old price, then switch its price."""
        if self._aprice[g] != price:
            used_j = self._boff[g] + self._bw[g] * now
            if used_j > 0:
                self._owed[g] += self._aprice[g] * used_j / J_PER_KWH
            self._boff[g] = -self._bw[g] * now
            self._aprice[g] = price

    def _set_job_alloc(self, j: int, alloc_w: float) -> None:
        """Give every GPU of job ``j`` ``alloc_w`` above idle (a gang runs at its slowest GPU's pace, so all
        its GPUs get the same) and move its completion if its clock changed."""
        f, power, alloc_w = self._cap(alloc_w)
        billable = power - self.idle_w
        for g in self.job_gpus[j]:
            self._set_power(g, power, billable)
            self.allocated_sum_w += alloc_w - self._al[g]
            self._al[g] = alloc_w
            self._ck[g] = f
        self._jal[j] = alloc_w
        beta = self._beta[j]
        rate = 0.0 if f == 0.0 else (f if beta == 1.0 else f**beta)  # a paused job makes no progress, even at β = 0
        old = self._rate[j]
        if rate != old:
            now = self.env.now
            remaining = self._rem[j] - old * (now - self._last[j])
            self._rem[j] = remaining = remaining if remaining > 0.0 else 0.0
            self._last[j] = now
            self._rate[j] = rate
            self._ver[j] += 1
            if rate > 0:
                heapq.heappush(self.heap, (now + remaining / rate, j, self._ver[j]))

    def _start_job(self, j: int) -> None:
        gpus = self.job_gpus[j]
        now = self.env.now
        if self._trace is not None:
            self._trace.append((now, "start", j, "gpus=" + " ".join(map(str, gpus))))
        self._stat[j] = _RUNNING
        self._start[j] = now
        if self._meter is not None:
            self._meter.start(j, gpus, now)
        self._last[j] = now
        mark = 0.0
        for g in gpus:
            self._st[g] = _ACTIVE
            mark += self._eoff[g] + self._pw[g] * now
        self._mark[j] = mark
        self._set_job_alloc(j, self._spot_allocation(gpus))
        over = self.allocated_sum_w - self.round_sellable_w
        if over > self.peak_overallocation_w:
            self.peak_overallocation_w = over

    def _complete(self, j: int) -> None:
        gpus = self.job_gpus.pop(j)
        now = self.env.now
        if self._trace is not None:
            self._trace.append((now, "complete", j, ""))
        self._stat[j] = _COMPLETED
        self._finish[j] = now
        self._rem[j] = 0.0
        value = self._value[j]
        share = value / len(gpus)
        energy = 0.0
        idle = self.idle_w
        free = self.free_idle
        for g in gpus:
            energy += self._eoff[g] + self._pw[g] * now
            self._set_power(g, idle, 0.0)
            self._wal[g] += share
            self.allocated_sum_w -= self._al[g]
            self._al[g] = 0.0
            self._ck[g] = 0.0
            self._st[g] = _IDLE
            self._asg[g] = -1
            free[g] = None
        self._jen[j] = energy - self._mark[j]
        if self._meter is not None:
            self._meter.complete(gpus, share, now, now > self._deadline[j])
        self.tokens["minted"] += value
        if self._agent_ledger:
            for g in gpus:
                self.ledger_rows.append((len(self.round_rows), now, "credit_job_value", g, share))
        else:
            self._credited_since_round += value

    def _drop(self, j: int, reason: DropReason) -> None:
        self._trace_event("drop", j, reason.name.lower())
        self._stat[j] = _DROPPED
        self._why[j] = int(reason)
        if self._meter is not None:
            self._meter.drop(j, self.env.now, reason == DropReason.DEADLINE_EXPIRED)
        self._finish[j] = self.env.now

    def _dispatch(self) -> None:
        """Start queued jobs in arrival order while enough GPUs are free (strict FCFS, no backfilling)."""
        queue = self.queue
        if not queue:
            return
        drop_expired = self._drop_expired
        now = self.env.now
        free = len(self.free_idle) + len(self.free_sleep) + len(self.free_off)
        while queue:
            j = queue[0]
            if drop_expired and self._deadline[j] < now:
                queue.popleft()
                self._drop(j, DropReason.DEADLINE_EXPIRED)
                continue
            k = self._k[j]
            if k > free:
                break
            queue.popleft()
            free -= k
            self._claim(j, k)

    def _drop_expired_queued(self) -> None:
        """Drop every queued job whose deadline has passed, not only the head (done at market rounds)."""
        if not self._drop_expired or not self.queue:
            return
        now = self.env.now
        deadline = self._deadline
        if any(deadline[j] < now for j in self.queue):
            keep = deque()
            for j in self.queue:
                if deadline[j] < now:
                    self._drop(j, DropReason.DEADLINE_EXPIRED)
                else:
                    keep.append(j)
            self.queue = keep

    def _idle_decisions(self, at_tick: bool = False, freed: list[int] | None = None) -> None:
        """Ask the policy what idle GPUs with nothing queued should do: after completions, the GPUs those jobs
        just freed (``freed``); at rounds and ticks, every idle GPU. Under fixed-step timing only at ticks."""
        if not self._calls["on_idle"] or not self.free_idle or self.queue or (self.tick_s is not None and not at_tick):
            return
        if freed is None:
            idx = np.fromiter(self.free_idle.keys(), dtype=np.int64, count=len(self.free_idle))
        else:
            idx = np.array([g for g in freed if g in self.free_idle], dtype=np.int64)
            if idx.size == 0:
                return
        self._log_decision("on_idle", idx.size)
        actions = check_actions(self.policy.on_idle(self._agent_obs(idx)), idx.size, IdleAction,
                                f"policy {self.policy.name!r} on_idle")
        for action, state, pool in ((_SLEEP_ACTION, _ENTERING_SLEEP, self.free_sleep),
                                    (_OFF_ACTION, _SHUTTING_DOWN, self.free_off)):
            chosen = idx[actions == action].tolist()
            if chosen:
                for g in chosen:
                    del self.free_idle[g]
                    pool[g] = None
                self._begin_transition(chosen, state)

    def _enqueue(self, jobs: list[int]) -> None:
        cap = self._max_queue
        for j in jobs:
            if cap is not None and len(self.queue) >= cap:
                self._drop(j, DropReason.QUEUE_FULL)
            else:
                self._stat[j] = _QUEUED
                self.queue.append(j)

    def _admission(self, jobs: np.ndarray) -> list[int]:
        """Ask the policy about deferrable jobs that have arrived; queue each or return it as held."""
        now = self.env.now
        if self.scenario.workload.drop_expired:
            expired = self.deadline_s[jobs] < now
            for j in jobs[expired].tolist():
                self._drop(j, DropReason.DEADLINE_EXPIRED)
            jobs = jobs[~expired]
        if jobs.size == 0:
            return []
        self._log_decision("admit", jobs.size)
        obs = JobObservation(
            jobs, self.job_gpus_n[jobs], self.duration_full_s[jobs],
            self.deadline_s[jobs] - now - self.duration_full_s[jobs], now - self.arrival_s[jobs],
            self.value_tokens[jobs], self._market_view(),
        )
        actions = check_actions(self.policy.admit(obs), jobs.size, Admission, f"policy {self.policy.name!r} admit")
        run = actions == Admission.RUN
        self._enqueue(jobs[run].tolist())
        held = jobs[~run].tolist()
        for j in held:
            self._stat[j] = _DEFERRED
            self._trace_event("defer", j, "")
        return held

    def _reconsider_deferred(self, at_tick: bool = False) -> None:
        """Offer every held job to the policy again (at rounds and supply changes; at ticks only under
        fixed-step timing)."""
        if self.deferred and (self.tick_s is None or at_tick):
            self.deferred = self._admission(np.array(self.deferred, dtype=np.int64))
            self._dispatch()

    # ------------------------------------------------------------------------------------ completions
    def _arm(self) -> None:
        """Make sure a timer is pending at the earliest valid completion."""
        heap, ver, stat = self.heap, self._ver, self._stat
        while heap:
            _, j, v = heap[0]
            if ver[j] == v and stat[j] == _RUNNING:
                break
            heapq.heappop(heap)
        else:
            return
        t = heap[0][0]
        timers = self._timers
        if timers and t >= timers[0]:
            return  # an earlier timer is pending; it re-arms when it fires
        heapq.heappush(timers, t)
        self.env.timeout(self._delay_to(t)).callbacks.append(self._on_timer)

    def _on_timer(self, _ev: simpy.Event) -> None:
        heapq.heappop(self._timers)
        self._advance()
        self.n_events += 1
        now = self.env.now
        due = now + SAME_INSTANT_ULPS * math.ulp(now)
        heap, ver, stat = self.heap, self._ver, self._stat
        freed: list[int] = []
        while heap and heap[0][0] <= due:
            _, j, v = heapq.heappop(heap)
            if ver[j] == v and stat[j] == _RUNNING:
                freed.extend(self.job_gpus[j])
                self._complete(j)
        if freed:
            self._dispatch()
            if self._calls["on_idle"]:
                self._idle_decisions(freed=freed)
        self._arm()

    # ------------------------------------------------------------------------------------ market
    def _settle(self) -> float:
        """Charge every agent for the energy above idle it used since the last settlement, each at the
        price it held while using it. Books the debits in the ledger and returns their total."""
        now = self.env.now
        used_j = self.billable_off + self.billable_w * now
        # only energy actually used is charged (an infinite price on no energy must not give NaN)
        charge = np.multiply(self.agent_price, used_j, out=np.zeros(self.n_gpus), where=used_j > 0)
        debit = self.owed_tokens + charge / J_PER_KWH
        self.tokens["debit_shortfall"] += float(np.maximum(debit - self.wallet, 0.0).sum())
        debit = np.minimum(debit, self.wallet)
        self.wallet -= debit
        if self._meter is not None:
            self._meter.settled += debit
        total = float(debit.sum())
        self.tokens["spent"] += total
        self.billable_off[:] = -self.billable_w * now
        self.owed_tokens[:] = 0.0
        self._ledger("debit_energy", debit)
        return total

    def _endow(self) -> dict[str, float]:
        """Pay the periodic endowment after burning demurrage and anything above the carry-over cap."""
        mk = self.scenario.market
        flows = {"burn_demurrage": 0.0, "burn_carry_over": 0.0, "mint_endowment": 0.0}
        if mk.demurrage_fraction > 0:
            decay = self.wallet * mk.demurrage_fraction
            flows["burn_demurrage"] = float(decay.sum())
            self.wallet -= decay
            self._ledger("burn_demurrage", decay)
        if mk.carry_over_cap_tokens is not None:
            over = np.maximum(self.wallet - mk.carry_over_cap_tokens, 0.0)
            flows["burn_carry_over"] = float(over.sum())
            self.wallet -= over
            self._ledger("burn_carry_over", over)
        self.wallet += mk.endowment_tokens
        flows["mint_endowment"] = mk.endowment_tokens * self.n_gpus
        self._ledger("mint_endowment", np.full(self.n_gpus, mk.endowment_tokens))
        self.tokens["minted"] += flows["mint_endowment"]
        self.tokens["burned"] += flows["burn_demurrage"] + flows["burn_carry_over"]
        return flows

    def _supply_curve(self, base_load_w: float, demand_w: float, round_s: float) -> SupplyCurve:
        """The round's merit order: renewable, battery and grid blocks sorted by token cost.

        The grid block is the import cap, or, when unlimited, enough to serve all demand (a finite curve)."""
        sc = self.scenario.market.supply_curve
        # Wholesale prices can be negative; the token market sells at non-negative costs (floored at 0).
        grid_cost = max(0.0, sc.grid_tokens_per_usd * self.grid_price / 1000.0
                        + sc.carbon_adder_tokens_per_kg * self.carbon / 1000.0)
        blocks = np.array([self.renewable_w, self.books.discharge_available_w(),
                           min(self.books.import_cap_w, max(demand_w, 0.0))])
        cost = np.array([sc.renewable_tokens_per_kwh, sc.battery_tokens_per_kwh, grid_cost])
        order = np.argsort(cost, kind="stable")
        names = ("renewable", "battery", "grid")
        return SupplyCurve(blocks[order], cost[order], tuple(names[i] for i in order), base_load_w, round_s)

    def _bid_book(self, bids: Bids | None, active: np.ndarray, round_s: float) -> BidBook:
        """Turn the agents' bids into the mechanism's bid book: only GPUs running a job demand power, within
        their dynamic range (a demand curve longer than the range is scaled down in proportion); Kelly offers
        default to the request's value at the agent's max price, or p0·e^κ for a price-blind agent."""
        request = np.where(active, np.clip(self.bid_request_w - self.idle_w, 0.0, self.span_w), 0.0)
        if bids is not None and bids.steps_w is not None:
            steps = bids.steps_w * active[:, None]
            total = steps.sum(axis=1)
            scale = np.where(total > self.span_w, self.span_w / np.where(total > 0, total, 1.0), 1.0)
            steps_w, steps_price = steps * scale[:, None], bids.steps_price
        else:
            steps_w, steps_price = request[:, None], self.bid_max_price[:, None]
        if bids is not None and bids.kelly_tokens is not None:
            kelly = np.where(active, np.minimum(bids.kelly_tokens, self.wallet), 0.0)
        else:
            # Offer what the request is worth at the agent's own limit; a price-blind agent values power at the
            # posted-price ceiling p0·e^κ (scarcity pricing's price with no renewable power). Using the last
            # clearing price instead would make a zero price reproduce itself.
            mk = self.scenario.market
            ceiling = mk.base_price_tokens_per_kwh * math.exp(mk.scarcity_kappa)
            value = np.where(np.isfinite(self.bid_max_price), self.bid_max_price, ceiling)
            kelly = np.minimum(self.wallet, value * steps_w.sum(axis=1) * round_s / J_PER_KWH)
        return BidBook(steps_w, steps_price, kelly)

    def _ledger(self, kind: str, tokens: np.ndarray | float, agent: int = -1) -> None:
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

    def _round(self, trigger: str) -> None:
        self._advance()
        self.n_events += 1
        now = self.env.now
        self._ledger("credit_job_value", self._credited_since_round)
        self._credited_since_round = 0.0
        debited = self._settle()
        flows = {}
        if trigger == "periodic" and self.round_index > 0 and self.round_index % self._endow_every == 0:
            flows = self._endow()

        self.total_power_w = float(self.power_w.sum())  # resynchronise the running sum
        round_s = self.next_round_after(now) - now
        self.next_round_s = now + round_s  # so bidders see when this round's allocation ends
        bids = None
        if self._calls["bid"]:
            # event timing: agents bid at the round; fixed-step timing: the round uses the last tick's bids
            bids = self._ask_bids(np.arange(self.n_gpus)) if self.tick_s is None else self._tick_bids
        if bids is not None:
            self.bid_request_w, self.bid_max_price = bids.request_w, bids.max_price_tokens_per_kwh
        active = self.state == _ACTIVE
        book = self._bid_book(bids, active, round_s)
        request = book.request_w
        base_load = self.total_power_w - float(self.billable_w.sum())
        demand_w = base_load + float(request.sum())
        supply = self._supply_curve(base_load, demand_w, round_s)
        clearing = self.mechanism.clear(book, supply, self.wallet.copy())
        alloc = np.where(active, clearing.allocations_w, 0.0)
        self.round_price = clearing.price_tokens_per_kwh
        self.agent_price[:] = clearing.prices_tokens_per_kwh
        if bids is not None:  # standing bids for jobs that start before the next round
            self._want = self._want_at_price(bids, self.round_price).tolist()
        # Jobs starting before the next round draw on what the real supply has left (the curve's grid block
        # was sized to this round's demand only to keep it finite).
        self.round_sellable_w = max(0.0, self.renewable_w + self.books.discharge_available_w()
                                    + self.books.import_cap_w - base_load)
        self.renewable_at_round_w = self.renewable_w
        self.demand_at_round_w = demand_w

        # A gang-scheduled job runs at the pace of its slowest GPU: each job gets its GPUs' minimum.
        owners = self.assigned[active]
        if owners.size:
            running = np.unique(owners)
            scratch = self._scratch
            scratch[running] = np.inf
            np.minimum.at(scratch, owners, alloc[active])
            new = scratch[running]
            new = np.where(self.idle_w + new < self._min_cap_floor_w, 0.0, new)  # below min cap: paused
            moved = new != self.job_alloc_w[running]
            for j, a in zip(running[moved].tolist(), new[moved].tolist()):
                self._set_job_alloc(j, a)
            self._arm()
        self.allocated_sum_w = float(self.alloc_w.sum())  # resynchronise the running sum
        bidders = request > 0
        granted = self.alloc_w
        if self._alloc_rows is not None:
            self._alloc_rows.append(granted.astype(np.float32))
        self.round_rows.append({
            "round": len(self.round_rows), "time_s": now, "trigger": trigger, "mechanism": self.mechanism_name,
            "price_tokens_per_kwh": clearing.price_tokens_per_kwh,
            "mean_paid_tokens_per_kwh": float(np.average(clearing.prices_tokens_per_kwh, weights=granted))
            if granted.sum() > 0 else math.nan,
            "renewable_w": self.renewable_w,
            "renewable_fraction": 1.0 if demand_w <= 0 else min(1.0, self.renewable_w / demand_w),
            "battery_w": float(self.books.discharge_available_w()), "grid_w": float(supply.blocks_w[supply.names.index("grid")]),
            "grid_cost_tokens_per_kwh": float(supply.cost_tokens_per_kwh[supply.names.index("grid")]),
            "base_load_w": base_load, "sellable_w": supply.sellable_w, "requested_w": float(request.sum()),
            "allocated_w": self.allocated_sum_w, "demand_w": demand_w, "rationed": bool(clearing.rationed),
            "bidders": int(bidders.sum()), "paused_gpus": int(np.sum(active & (self.clock == 0))),
            "jain_allocation_over_request": jain_index(granted[bidders] / request[bidders]),
            "welfare_ratio": welfare_ratio(book, supply, granted),
            "tokens_debited": debited, "tokens_minted": flows.get("mint_endowment", 0.0),
            "tokens_burned": flows.get("burn_demurrage", 0.0) + flows.get("burn_carry_over", 0.0),
            "tokens_held": float(self.wallet.sum()), "gini_wallets": gini(self.wallet),
        })
        self._record(f"round:{trigger}")
        self._trace_event("round", -1, f"{trigger} price={clearing.price_tokens_per_kwh:.6g} allocated_w={self.allocated_sum_w:.6g}")
        self._drop_expired_queued()
        self._reconsider_deferred()
        self._dispatch()
        self._idle_decisions()
        self._arm()

    def _round_schedule(self, streams: Streams) -> np.ndarray:
        """Periodic round times: k·interval, each delayed by U(0, jitter) from the ``market`` stream."""
        mk = self.scenario.market
        times = np.arange(0.0, self.horizon_s, mk.interval_s)
        if mk.round_jitter_s > 0:
            times = times + streams.generator("market").uniform(0.0, mk.round_jitter_s, size=times.size)
        return times[times < self.horizon_s]

    def next_round_after(self, t: float) -> float:
        """Time of the first periodic round strictly after ``t`` (capped at the horizon)."""
        k = int(np.searchsorted(self.round_times, t, side="right"))
        return float(self.round_times[k]) if k < self.round_times.size else self.horizon_s

    # ------------------------------------------------------------------------------------ processes
    def _arrivals(self):
        arrival = self.arrival_s.tolist()
        horizon = self.horizon_s
        env = self.env
        n_gpus = self.n_gpus
        k, deferrable = self._k, self.deferrable.tolist()
        screen = self._calls["admit"]
        for j, t in enumerate(arrival):
            if t >= horizon:
                break
            if t > env.now:
                yield env.timeout(self._delay_to(t))
            self._advance()
            self.n_events += 1
            if k[j] > n_gpus:
                self._drop(j, DropReason.TOO_LARGE)
                continue
            self._trace_event("arrival", j, f"gpus={k[j]}")
            if screen and deferrable[j]:
                if self.tick_s is None:
                    self.deferred.extend(self._admission(np.array([j])))
                else:  # fixed-step timing: the job waits for the next tick's decision
                    self._stat[j] = _DEFERRED
                    self.deferred.append(j)
            else:
                self._enqueue((j,))
            self._dispatch()
            self._arm()

    def _supply_changes(self):
        times = self.supply.change_times(self.horizon_s)
        renewable = np.atleast_1d(self.supply.renewable_w.value_at(times)).tolist()
        carbon = np.atleast_1d(self.supply.carbon_g_per_kwh.value_at(times)).tolist()
        price = np.atleast_1d(self.supply.grid_price_usd_per_mwh.value_at(times)).tolist()
        band = self.scenario.market.hysteresis_fraction
        for i, t in enumerate(times.tolist()):
            if t > self.env.now:
                yield self.env.timeout(self._delay_to(t))
            self._advance()
            self.n_events += 1
            self.renewable_w, self.carbon, self.grid_price = renewable[i], carbon[i], price[i]
            self._trace_event("supply", -1, f"renewable_w={self.renewable_w:.6g} carbon={self.carbon:.6g} price={self.grid_price:.6g}")
            if t == 0.0:
                continue
            moved = abs(self.renewable_w - self.renewable_at_round_w)
            if band is not None and moved > band * max(self.demand_at_round_w, 1e-9):
                self._round("supply")
            else:
                self._record("supply")
                self._reconsider_deferred()
                self._arm()

    def _market(self):
        for k, t in enumerate(self.round_times.tolist()):
            if t > self.env.now:
                yield self.env.timeout(self._delay_to(t))
            self.round_index = k
            self._round("periodic")
            if self.progress is not None:
                self.progress(self.env.now)

    def _ticks(self):
        """Fixed-step decision timing: every tick, the policy bids, reconsiders held jobs and idle GPUs."""
        t = 0.0
        while t < self.horizon_s:
            if t > self.env.now:
                yield self.env.timeout(self._delay_to(t))
            self._advance()
            self.n_events += 1
            self._trace_event("tick", -1, "")
            if self._calls["bid"]:
                self._tick_bids = self._ask_bids(np.arange(self.n_gpus))
                self._want = self._want_at_price(self._tick_bids, self.round_price).tolist()
            self._reconsider_deferred(at_tick=True)
            self._dispatch()
            self._idle_decisions(at_tick=True)
            self._arm()
            t += self.tick_s

    def _delay_to(self, t: float) -> float:
        """The delay that makes SimPy's clock land exactly on ``t`` (``now + (t − now)`` can fall an ulp short)."""
        now = self.env.now
        delay = t - now if t > now else 0.0
        while now + delay < t:
            delay = math.nextafter(delay, math.inf)
        return delay

    def _log_decision(self, method: str, agents: int) -> None:
        self.decision_rows.append((self.env.now, method, agents))
        if self._trace is not None:
            self._trace.append((self.env.now, "decision", -1, f"{method} x{agents}"))

    def _trace_event(self, kind: str, agent: int, details: str) -> None:
        if self._trace is not None:
            self._trace.append((self.env.now, kind, agent, details))

    def _ask_bids(self, idx: np.ndarray) -> Bids:
        self._log_decision("bid", idx.size)
        return check_bids(self.policy.bid(self._agent_obs(idx)), idx.size, f"policy {self.policy.name!r} bid")

    def _record(self, event: str) -> None:
        b = self.books.totals
        self.ts_rows.append((
            self.env.now, event, max(0.0, self.total_power_w), self.renewable_w, self.books.soc_j, self.round_price,
            self.carbon, self.grid_price, len(self.queue), len(self.job_gpus), int(np.count_nonzero(self.state == _ACTIVE)),
            int(np.count_nonzero(self.state == _SLEEP)), b.consumed_j, b.renewable_used_j, b.battery_out_j, b.grid_j,
            b.unserved_j, b.curtailed_j, b.charged_j,
        ))

    # ------------------------------------------------------------------------------------ run
    def run(self) -> RunResult:
        """Run to the horizon and return the results."""
        wall0 = time.perf_counter()
        self.env.process(self._supply_changes())
        if self.tick_s is not None:  # the tick at t = 0 comes first, so round 0 clears the policy's bids
            self.env.process(self._ticks())
        self.env.process(self._market())
        self.env.process(self._arrivals())
        self.env.run(until=self.horizon_s)
        self._advance()
        self._ledger("credit_job_value", self._credited_since_round)
        self._settle()
        self._record("end")
        if self._meter is not None:
            self._meter.close(self.env.now)
            self.policy.end_episode(self._agent_obs(np.arange(self.n_gpus)))
        wall_s = time.perf_counter() - wall0
        return RunResult(
            scenario=self.scenario, policy=self.policy, jobs=self._job_table(), rounds=pd.DataFrame(self.round_rows),
            timeseries=pd.DataFrame(self.ts_rows, columns=TIMESERIES_COLUMNS),
            energy=self.books.totals.as_dict() | {"battery_soc_start_j": self.books.initial_soc_j,
                                                  "battery_soc_end_j": self.books.soc_j},
            tokens=dict(self.tokens) | {"held": float(self.wallet.sum())},
            gpu_energy_j=self.gpu_energy_now(),
            ledger=pd.DataFrame(self.ledger_rows, columns=["round", "time_s", "kind", "agent", "tokens"]),
            wallets=self.wallet.copy(),
            decisions=pd.DataFrame(self.decision_rows, columns=["time_s", "method", "agents"]),
            allocations_w=None if self._alloc_rows is None else
            (np.stack(self._alloc_rows) if self._alloc_rows else np.zeros((0, self.n_gpus), dtype=np.float32)),
            events=None if self._trace is None else pd.DataFrame(self._trace, columns=["time_s", "kind", "agent", "details"]),
            agent_returns=None if self._meter is None else self._meter.returns.copy(),
            counters={"events": self.n_events, "wall_s": wall_s, "simulated_s": self.horizon_s,
                      "peak_overallocation_w": self.peak_overallocation_w},
        )

    def _job_table(self) -> pd.DataFrame:
        status = self.status
        done = status == _COMPLETED
        ended = done | (status == _DROPPED)
        df = self.jobs_in.copy()
        df["status"] = pd.Categorical.from_codes(status, categories=[s.name.lower() for s in JobStatus])
        df["drop_reason"] = pd.Categorical.from_codes(self.drop_reason, categories=[r.name.lower() for r in DropReason])
        df["start_s"] = self.start_s
        df["finish_s"] = np.where(ended, self.finish_s, np.nan)
        df["wait_s"] = self.start_s - self.arrival_s
        df["duration_full_clock_s"] = self.duration_full_s
        df["slowdown"] = np.where(done, (self.finish_s - self.arrival_s) / self.duration_full_s, np.nan)
        pending = ~ended & (status != int(JobStatus.FUTURE))
        df["deadline_missed"] = np.isfinite(self.deadline_s) & (
            (done & (self.finish_s > self.deadline_s)) | (self.drop_reason == int(DropReason.DEADLINE_EXPIRED))
            | (pending & (self.deadline_s < self.horizon_s)))
        df["energy_j"] = np.where(done, self.job_energy_j, np.nan)
        return df


TIMESERIES_COLUMNS = [
    "time_s", "event", "power_w", "renewable_w", "battery_soc_j", "price_tokens_per_kwh", "carbon_g_per_kwh",
    "grid_price_usd_per_mwh", "queue_length", "jobs_running", "gpus_active", "gpus_sleeping",
    "consumed_j", "renewable_used_j", "battery_out_j", "grid_j", "unserved_j", "curtailed_j", "charged_j",
]
