"""The SimPy model of the datacenter: arrivals, dispatch, GPU power states, completions, supply and market rounds."""
from __future__ import annotations

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
from dcsim.gpu_models import active_power_w, clock_fraction_for_cap
from dcsim.market import J_PER_KWH, MECHANISMS, RoundSupply, jain_index
from dcsim.policy import (
    Admission,
    AgentObservation,
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


PENDING_STATUSES = (JobStatus.DEFERRED, JobStatus.QUEUED, JobStatus.STARTING, JobStatus.RUNNING)


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
    counters: dict[str, float] = field(default_factory=dict)


class Simulation:
    """One run of a scenario under a policy.

    All per-GPU and per-job state lives in numpy arrays; SimPy drives time through a handful of
    processes (arrivals, supply changes, market rounds) and timeout callbacks (power-state
    transitions, job completions). A job's completion time is kept in a heap and moved whenever its
    clock changes; stale entries are skipped by version, so nothing is polled.

    Args:
        scenario: The validated scenario.
        policy: The decision policy.
        jobs: The job table (see :mod:`dcsim.jobs`).
        supply: Supply series aligned to the scenario start.
        streams: The run's random streams.
        progress: A callable ``(sim_time_s) -> None`` called at each periodic round, or None.
    """

    def __init__(self, scenario: Scenario, policy: Policy, jobs: pd.DataFrame, supply: SupplyInputs,
                 streams: Streams, progress: Callable[[float], None] | None = None):
        self.scenario = scenario
        self.policy = policy
        self.supply = supply
        self.progress = progress
        self.env = simpy.Environment()
        self.horizon_s = scenario.horizon_s
        self.start = pd.Timestamp(scenario.start)
        self._hour0 = self.start.hour + self.start.minute / 60 + self.start.second / 3600

        cl = scenario.cluster
        spec = cl.power_spec()
        self.idle_w, self.tdp_w, self.min_cap_w = spec["idle_w"], spec["tdp_w"], spec["min_cap_w"]
        self.gamma, self.util = spec["gamma"], spec["utilisation"]
        self.full_power_w = self.idle_w + (self.tdp_w - self.idle_w) * self.util
        self.full_incr_w = self.full_power_w - self.idle_w
        self.gpu_view = GpuSpecView(self.idle_w, self.tdp_w, self.min_cap_w, self.full_power_w, self.gamma, self.util)
        tr = cl.transitions
        self.transition_s = {
            GpuState.WAKING: tr.wake_s, GpuState.ENTERING_SLEEP: tr.sleep_s,
            GpuState.BOOTING: tr.boot_s, GpuState.SHUTTING_DOWN: tr.shutdown_s,
        }
        energy = {GpuState.WAKING: tr.wake_j, GpuState.ENTERING_SLEEP: tr.sleep_j,
                  GpuState.BOOTING: tr.boot_j, GpuState.SHUTTING_DOWN: tr.shutdown_j}
        self.state_power_w = np.zeros(len(GpuState))
        self.state_power_w[GpuState.OFF] = spec["off_w"]
        self.state_power_w[GpuState.SLEEP] = spec["sleep_w"]
        self.state_power_w[GpuState.IDLE] = self.idle_w
        self.state_power_w[GpuState.ACTIVE] = self.idle_w
        for st, dur in self.transition_s.items():
            self.state_power_w[st] = energy[st] / dur if dur > 0 else 0.0

        # ---- GPU arrays
        n = self.n_gpus = cl.gpus
        initial = {"idle": GpuState.IDLE, "sleep": GpuState.SLEEP, "off": GpuState.OFF}[cl.initial_state]
        self.state = np.full(n, initial, dtype=np.int8)
        self.assigned = np.full(n, -1, dtype=np.int64)
        self.power_w = np.full(n, self.state_power_w[initial])
        self.billable_w = np.zeros(n)  # power above idle of running GPUs: what agents pay for
        self.energy_j = np.zeros(n)
        self.billable_j = np.zeros(n)  # since the last settlement
        self.meter_t = np.zeros(n)
        self.alloc_w = np.zeros(n)  # allocated power above idle
        self.clock = np.zeros(n)
        self.wake_after = np.zeros(n, dtype=bool)
        self.total_power_w = float(self.power_w.sum())
        pools: dict[int, dict[int, None]] = {GpuState.IDLE: {}, GpuState.SLEEP: {}, GpuState.OFF: {}}
        self.free_idle, self.free_sleep, self.free_off = pools[GpuState.IDLE], pools[GpuState.SLEEP], pools[GpuState.OFF]
        pools[initial].update(dict.fromkeys(range(n)))

        # ---- market and wallets
        mk = scenario.market
        self.mechanism = MECHANISMS[mk.mechanism]
        self.wallet = np.full(n, mk.initial_tokens)
        self.tokens = {"minted": mk.initial_tokens * n, "spent": 0.0, "burned": 0.0, "job_value_credited": 0.0,
                       "endowed": 0.0, "debit_shortfall": 0.0}
        self.bid_request_w = np.full(n, self.full_power_w)
        self.bid_max_price = np.full(n, np.inf)
        self.round_price = mk.base_price_tokens_per_kwh
        self.round_sellable_w = math.inf
        self.allocated_sum_w = 0.0
        self.next_round_s = 0.0
        self.round_index = 0
        self.renewable_at_round_w = 0.0
        self.demand_at_round_w = 0.0
        self._endow_every = int(round(mk.endowment_interval_s / mk.interval_s))

        # ---- jobs
        self.jobs_in = jobs
        m = self.n_jobs = len(jobs)
        self.arrival_s = jobs["arrival_s"].to_numpy(float)
        self.job_gpus_n = jobs["gpus"].to_numpy(np.int64)
        self.work_gpu_s = jobs["work_gpu_s"].to_numpy(float)
        self.deadline_s = np.nan_to_num(jobs["deadline_s"].to_numpy(float), nan=np.inf)
        self.deferrable = jobs["deferrable"].to_numpy(bool)
        self.value_tokens = jobs["value_tokens"].to_numpy(float)
        self.beta = jobs["clock_sensitivity"].to_numpy(float)
        self.duration_full_s = self.work_gpu_s / self.job_gpus_n
        self.status = np.full(m, JobStatus.FUTURE, dtype=np.int8)
        self.drop_reason = np.zeros(m, dtype=np.int8)
        self.start_s = np.full(m, np.nan)
        self.finish_s = np.full(m, np.nan)
        self.remaining_s = self.duration_full_s.copy()  # at full clock
        self.rate = np.zeros(m)
        self.last_s = np.zeros(m)
        self.version = np.zeros(m, dtype=np.int64)
        self.pending_ready = np.zeros(m, dtype=np.int64)
        self.job_energy_j = np.zeros(m)
        self.energy_mark_j = np.zeros(m)
        self.job_gpu_ids: dict[int, np.ndarray] = {}
        self.queue: deque[int] = deque()
        self.deferred: list[int] = []
        self.completion_heap: list[tuple[float, int, int]] = []
        self._timer_times: set[float] = set()
        self._job_scratch = np.zeros(m)
        self._last_debit = 0.0

        # ---- supply state
        self.books = EnergyBooks(scenario.supply.battery, scenario.supply.grid.import_cap_w)
        self.import_cap_w = self.books.import_cap_w
        self.renewable_w = float(supply.renewable_w.value_at(0.0))
        self.carbon = float(supply.carbon_g_per_kwh.value_at(0.0))
        self.grid_price = float(supply.grid_price_usd_per_mwh.value_at(0.0))
        self._t_books = 0.0

        # ---- records
        self.round_rows: list[dict[str, Any]] = []
        self.ts_rows: list[tuple] = []
        self.n_events = 0
        self._calls = {m: policy.overrides(m) for m in ("bid", "admit", "on_idle")}
        policy.reset(streams.generator("policy"), self.gpu_view, n)

    # ------------------------------------------------------------------------------------ bookkeeping
    def _advance(self) -> None:
        """Book energy by source from the last event to now at the power that held in between."""
        now = self.env.now
        dt = now - self._t_books
        if dt > 0:
            self.books.advance(dt, max(0.0, self.total_power_w), self.renewable_w, self.carbon, self.grid_price)
            self._t_books = now

    def _flush(self, idx) -> None:
        """Bring the per-GPU energy meters of ``idx`` up to now."""
        now = self.env.now
        dt = now - self.meter_t[idx]
        self.energy_j[idx] += self.power_w[idx] * dt
        self.billable_j[idx] += self.billable_w[idx] * dt
        self.meter_t[idx] = now

    def _set_power(self, idx, power_w, billable_w) -> None:
        self._flush(idx)
        self.total_power_w += float(np.sum(power_w - self.power_w[idx]))
        self.power_w[idx] = power_w
        self.billable_w[idx] = billable_w

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
        jobs = self.assigned[idx]
        has = jobs >= 0
        j = jobs[has]
        remaining = np.zeros(idx.size)
        remaining[has] = self._remaining_now(j)
        slack = np.full(idx.size, np.inf)
        slack[has] = self.deadline_s[j] - self.env.now - remaining[has]
        beta = np.ones(idx.size)
        beta[has] = self.beta[j]
        value = np.zeros(idx.size)
        value[has] = self.value_tokens[j]
        return AgentObservation(idx, self.state[idx].copy(), has, remaining, slack, beta, value,
                                self.wallet[idx].copy(), self._market_view(), self.gpu_view)

    # ------------------------------------------------------------------------------------ power states
    def _begin_transition(self, idx: np.ndarray, state: GpuState) -> None:
        duration = self.transition_s[state]
        self.state[idx] = state
        self._set_power(idx, self.state_power_w[state], 0.0)
        if duration <= 0:
            self._end_transition(idx, count=False)
            return
        ev = self.env.timeout(duration)
        ev.callbacks.append(lambda _ev, idx=idx: self._end_transition(idx))

    def _end_transition(self, idx: np.ndarray, count: bool = True) -> None:
        if count:
            self._advance()
            self.n_events += 1
        target = _TRANSITION_TARGET[GpuState(int(self.state[idx[0]]))]
        self.state[idx] = target
        self._set_power(idx, self.state_power_w[target], 0.0)
        if target == GpuState.IDLE:
            for j in np.unique(self.assigned[idx]):
                if j < 0:
                    continue
                self.pending_ready[j] -= int(np.sum(self.assigned[idx] == j))
                if self.pending_ready[j] == 0:
                    self._start_job(int(j))
        else:
            waking = idx[self.wake_after[idx]]
            if waking.size:
                self.wake_after[waking] = False
                self._begin_transition(waking, GpuState.WAKING if target == GpuState.SLEEP else GpuState.BOOTING)

    # ------------------------------------------------------------------------------------ jobs
    def _claim(self, j: int, k: int) -> None:
        taken: list[int] = []
        for pool in (self.free_idle, self.free_sleep, self.free_off):
            while len(taken) < k and pool:
                taken.append(pool.popitem()[0])
        idx = np.fromiter(taken, dtype=np.int64, count=k)
        self.assigned[idx] = j
        self.job_gpu_ids[j] = idx
        st = self.state[idx]
        ready = st == GpuState.IDLE
        self.pending_ready[j] = k - int(ready.sum())
        if self.pending_ready[j] == 0:
            self._start_job(j)
            return
        self.status[j] = JobStatus.STARTING
        asleep, off = st == GpuState.SLEEP, st == GpuState.OFF
        self.wake_after[idx[~(ready | asleep | off)]] = True
        if asleep.any():
            self._begin_transition(idx[asleep], GpuState.WAKING)
        if off.any():
            self._begin_transition(idx[off], GpuState.BOOTING)

    def _spot_allocation(self, idx: np.ndarray) -> float:
        """Power above idle for a job starting between rounds: its agents' standing bids cleared at the
        round's price, limited by their budgets for the rest of the round and by unallocated supply."""
        price = self.round_price
        if np.any(self.bid_max_price[idx] < price):
            return 0.0
        want = np.clip(self.bid_request_w[idx] - self.idle_w, 0.0, self.full_incr_w)
        left_s = max(self.next_round_s - self.env.now, 1e-9)
        self._flush(idx)
        spendable = self.wallet[idx] - price * self.billable_j[idx] / J_PER_KWH
        afford = np.maximum(spendable, 0.0) * J_PER_KWH / (price * left_s)
        a = float(np.min(np.minimum(want, afford)))
        headroom = max(0.0, self.round_sellable_w - self.allocated_sum_w)
        return min(a, headroom / idx.size)

    def _apply_caps(self, jobs: np.ndarray, alloc_w: np.ndarray) -> None:
        """Set running jobs' power allocation above idle (one value per job, for all its GPUs) and move
        their completion times."""
        now = self.env.now
        cap = self.idle_w + alloc_w
        f = clock_fraction_for_cap(cap, self.idle_w, self.tdp_w, self.util, self.gamma, self.min_cap_w)
        alloc_w = np.where(f > 0, alloc_w, 0.0)  # a paused job holds no allocation
        power = active_power_w(f, self.idle_w, self.tdp_w, self.util, self.gamma)
        rate = f ** self.beta[jobs]
        for pos, j in enumerate(jobs.tolist()):
            idx = self.job_gpu_ids[j]
            self._set_power(idx, power[pos], power[pos] - self.idle_w)
            self.allocated_sum_w += (alloc_w[pos] - self.alloc_w[idx[0]]) * idx.size
            self.alloc_w[idx] = alloc_w[pos]
            self.clock[idx] = f[pos]
            if rate[pos] != self.rate[j]:
                self.remaining_s[j] = max(0.0, self.remaining_s[j] - self.rate[j] * (now - self.last_s[j]))
                self.last_s[j] = now
                self.rate[j] = rate[pos]
                self.version[j] += 1
                if rate[pos] > 0:
                    heapq.heappush(self.completion_heap, (now + self.remaining_s[j] / rate[pos], j, int(self.version[j])))
        self._arm()

    def _start_job(self, j: int) -> None:
        idx = self.job_gpu_ids[j]
        now = self.env.now
        self.status[j] = JobStatus.RUNNING
        self.start_s[j] = now
        self.last_s[j] = now
        self.rate[j] = 0.0
        self.state[idx] = GpuState.ACTIVE
        self._flush(idx)
        self.energy_mark_j[j] = float(self.energy_j[idx].sum())
        self._apply_caps(np.array([j]), np.array([self._spot_allocation(idx)]))

    def _complete(self, j: int) -> None:
        idx = self.job_gpu_ids.pop(j)
        now = self.env.now
        self.status[j] = JobStatus.COMPLETED
        self.finish_s[j] = now
        self.remaining_s[j] = 0.0
        self._set_power(idx, self.idle_w, 0.0)
        self.job_energy_j[j] = float(self.energy_j[idx].sum()) - self.energy_mark_j[j]
        share = self.value_tokens[j] / idx.size
        self.wallet[idx] += share
        self.tokens["minted"] += self.value_tokens[j]
        self.tokens["job_value_credited"] += self.value_tokens[j]
        self.allocated_sum_w -= float(self.alloc_w[idx].sum())
        self.alloc_w[idx] = 0.0
        self.clock[idx] = 0.0
        self.state[idx] = GpuState.IDLE
        self.assigned[idx] = -1
        self.free_idle.update(dict.fromkeys(idx.tolist()))

    def _drop(self, j: int, reason: DropReason) -> None:
        self.status[j] = JobStatus.DROPPED
        self.drop_reason[j] = reason
        self.finish_s[j] = self.env.now

    def _dispatch(self) -> None:
        """Start queued jobs in arrival order while enough GPUs are free (strict FCFS, no backfilling)."""
        drop_expired = self.scenario.workload.drop_expired
        now = self.env.now
        while self.queue:
            j = self.queue[0]
            if drop_expired and self.deadline_s[j] < now:
                self.queue.popleft()
                self._drop(j, DropReason.DEADLINE_EXPIRED)
                continue
            k = int(self.job_gpus_n[j])
            if k > len(self.free_idle) + len(self.free_sleep) + len(self.free_off):
                break
            self.queue.popleft()
            self._claim(j, k)

    def _idle_decisions(self) -> None:
        """Ask the policy what GPUs left idle with nothing queued should do."""
        if not self._calls["on_idle"] or not self.free_idle or self.queue:
            return
        idx = np.fromiter(self.free_idle.keys(), dtype=np.int64)
        actions = check_actions(self.policy.on_idle(self._agent_obs(idx)), idx.size, IdleAction,
                                f"policy {self.policy.name!r} on_idle")
        for action, state, pool in ((IdleAction.SLEEP, GpuState.ENTERING_SLEEP, self.free_sleep),
                                    (IdleAction.POWER_OFF, GpuState.SHUTTING_DOWN, self.free_off)):
            chosen = idx[actions == action]
            if chosen.size:
                for g in chosen.tolist():
                    del self.free_idle[g]
                    pool[g] = None
                self._begin_transition(chosen, state)

    def _enqueue(self, jobs: list[int]) -> None:
        cap = self.scenario.workload.max_queue
        for j in jobs:
            if cap is not None and len(self.queue) >= cap:
                self._drop(j, DropReason.QUEUE_FULL)
            else:
                self.status[j] = JobStatus.QUEUED
                self.queue.append(j)

    def _admission(self, jobs: np.ndarray) -> None:
        """Ask the policy about deferrable jobs (``jobs``, already arrived); queue or hold each."""
        now = self.env.now
        if self.scenario.workload.drop_expired:
            expired = self.deadline_s[jobs] < now
            for j in jobs[expired].tolist():
                self._drop(j, DropReason.DEADLINE_EXPIRED)
            jobs = jobs[~expired]
        if jobs.size == 0:
            return
        obs = JobObservation(
            jobs, self.job_gpus_n[jobs], self.duration_full_s[jobs],
            self.deadline_s[jobs] - now - self.duration_full_s[jobs], now - self.arrival_s[jobs],
            self.value_tokens[jobs], self._market_view(),
        )
        actions = check_actions(self.policy.admit(obs), jobs.size, Admission, f"policy {self.policy.name!r} admit")
        run = actions == Admission.RUN
        self._enqueue(jobs[run].tolist())
        for j in jobs[~run].tolist():
            self.status[j] = JobStatus.DEFERRED
        self.deferred = jobs[~run].tolist()

    def _reconsider_deferred(self) -> None:
        if self.deferred:
            held = np.array(self.deferred, dtype=np.int64)
            self.deferred = []
            self._admission(held)
            self._dispatch()

    # ------------------------------------------------------------------------------------ completions
    def _arm(self) -> None:
        """Make sure a timer is pending for the earliest valid completion."""
        heap = self.completion_heap
        while heap and (self.version[heap[0][1]] != heap[0][2] or self.status[heap[0][1]] != JobStatus.RUNNING):
            heapq.heappop(heap)
        if not heap:
            return
        t = heap[0][0]
        if t in self._timer_times or (self._timer_times and t > min(self._timer_times)):
            return
        self._timer_times.add(t)
        ev = self.env.timeout(max(0.0, t - self.env.now))
        ev.callbacks.append(lambda _ev, t=t: self._on_timer(t))

    def _on_timer(self, t: float) -> None:
        self._timer_times.discard(t)
        self._advance()
        self.n_events += 1
        now = self.env.now
        due = now + 1e-9 * max(1.0, now)
        heap = self.completion_heap
        done = False
        while heap and heap[0][0] <= due:
            _, j, version = heapq.heappop(heap)
            if self.version[j] == version and self.status[j] == JobStatus.RUNNING:
                self._complete(j)
                done = True
        if done:
            self._dispatch()
            self._idle_decisions()
        self._arm()

    # ------------------------------------------------------------------------------------ market
    def _settle(self) -> None:
        """Charge every agent for the energy above idle it used since the last settlement."""
        self._flush(slice(None))
        debit = self.round_price * self.billable_j / J_PER_KWH
        self.tokens["debit_shortfall"] += float(np.maximum(debit - self.wallet, 0.0).sum())
        debit = np.minimum(debit, self.wallet)
        self.wallet -= debit
        self.tokens["spent"] += float(debit.sum())
        self.billable_j[:] = 0.0
        self._last_debit = float(debit.sum())

    def _round(self, trigger: str) -> None:
        self._advance()
        self.n_events += 1
        now = self.env.now
        mk = self.scenario.market
        self._settle()
        minted = burned = 0.0
        if trigger == "periodic" and self.round_index > 0 and self.round_index % self._endow_every == 0:
            if mk.carry_over_cap_tokens is not None:
                over = np.maximum(self.wallet - mk.carry_over_cap_tokens, 0.0)
                burned = float(over.sum())
                self.wallet -= over
            self.wallet += mk.endowment_tokens
            minted = mk.endowment_tokens * self.n_gpus
            self.tokens["minted"] += minted
            self.tokens["endowed"] += minted
            self.tokens["burned"] += burned

        self.total_power_w = float(self.power_w.sum())  # resynchronise the running sum
        everyone = np.arange(self.n_gpus)
        if self._calls["bid"]:
            bids = check_bids(self.policy.bid(self._agent_obs(everyone)), self.n_gpus, f"policy {self.policy.name!r} bid")
            self.bid_request_w, self.bid_max_price = bids.request_w, bids.max_price_tokens_per_kwh
        running = np.fromiter(self.job_gpu_ids.keys(), dtype=np.int64, count=len(self.job_gpu_ids))
        running = running[self.status[running] == JobStatus.RUNNING]
        active = self.state == GpuState.ACTIVE
        request = np.where(active, np.clip(self.bid_request_w - self.idle_w, 0.0, self.full_incr_w), 0.0)
        base_load = self.total_power_w - float(self.billable_w.sum())
        round_s = self.next_round_after(now) - now
        supply = RoundSupply(self.renewable_w, self.books.discharge_available_w(), self.import_cap_w, base_load, round_s)
        clearing = self.mechanism(request, self.bid_max_price, self.wallet, supply,
                                  mk.base_price_tokens_per_kwh, mk.scarcity_kappa)
        alloc = np.where(active, clearing.allocations_w, 0.0)
        # A gang-scheduled job runs at the pace of its slowest GPU: every GPU of a job gets the job's minimum.
        scratch = self._job_scratch
        scratch[running] = np.inf
        np.minimum.at(scratch, self.assigned[active], alloc[active])
        job_alloc = scratch[running]
        self.round_price = clearing.price_tokens_per_kwh
        self.round_sellable_w = supply.sellable_w
        self.next_round_s = now + round_s
        self.renewable_at_round_w = self.renewable_w
        demand_w = base_load + float(request.sum())
        self.demand_at_round_w = demand_w
        if running.size:
            self._apply_caps(running, job_alloc)
        bidders = request > 0
        self.round_rows.append({
            "round": len(self.round_rows), "time_s": now, "trigger": trigger,
            "price_tokens_per_kwh": clearing.price_tokens_per_kwh,
            "renewable_w": self.renewable_w, "renewable_fraction": 1.0 if demand_w <= 0 else min(1.0, self.renewable_w / demand_w),
            "battery_w": supply.battery_w, "grid_cap_w": supply.grid_w, "base_load_w": base_load,
            "sellable_w": supply.sellable_w, "requested_w": float(request.sum()), "allocated_w": self.allocated_sum_w,
            "demand_w": demand_w, "rationed": clearing.rationed, "bidders": int(bidders.sum()),
            "paused_gpus": int(np.sum(active & (self.clock == 0))),
            "jain_allocation_over_request": jain_index(alloc[bidders] / request[bidders]),
            "tokens_debited": self._last_debit, "tokens_minted": minted, "tokens_burned": burned,
            "tokens_held": float(self.wallet.sum()),
        })
        self._record(f"round:{trigger}")
        self._reconsider_deferred()
        self._dispatch()

    def next_round_after(self, t: float) -> float:
        """Time of the first periodic round strictly after ``t`` (capped at the horizon)."""
        interval = self.scenario.market.interval_s
        k = math.floor(t / interval + 1e-9) + 1
        return min(k * interval, self.horizon_s)

    # ------------------------------------------------------------------------------------ processes
    def _arrivals(self):
        arrival = self.arrival_s
        m = self.n_jobs
        i = 0
        too_large = self.job_gpus_n > self.n_gpus
        while i < m and arrival[i] < self.horizon_s:
            t = arrival[i]
            if t > self.env.now:
                yield self.env.timeout(t - self.env.now)
            i1 = i + 1
            while i1 < m and arrival[i1] == t:
                i1 += 1
            self._advance()
            self.n_events += 1
            batch = np.arange(i, i1)
            for j in batch[too_large[batch]].tolist():
                self._drop(j, DropReason.TOO_LARGE)
            batch = batch[~too_large[batch]]
            hold = self.deferrable[batch] & self._calls["admit"]
            self._enqueue(batch[~hold].tolist())
            if hold.any():
                held = np.concatenate([np.array(self.deferred, dtype=np.int64), batch[hold]])
                self.deferred = []
                self._admission(held)
            self._dispatch()
            i = i1

    def _supply_changes(self):
        times = self.supply.change_times(self.horizon_s)
        renewable = np.atleast_1d(self.supply.renewable_w.value_at(times))
        carbon = np.atleast_1d(self.supply.carbon_g_per_kwh.value_at(times))
        price = np.atleast_1d(self.supply.grid_price_usd_per_mwh.value_at(times))
        band = self.scenario.market.hysteresis_fraction
        for i, t in enumerate(times.tolist()):
            if t > self.env.now:
                yield self.env.timeout(t - self.env.now)
            self._advance()
            self.n_events += 1
            self.renewable_w, self.carbon, self.grid_price = float(renewable[i]), float(carbon[i]), float(price[i])
            if t == 0.0:
                continue
            moved = abs(self.renewable_w - self.renewable_at_round_w)
            if band is not None and moved > band * max(self.demand_at_round_w, 1e-9):
                self._round("supply")
            else:
                self._record("supply")
                self._reconsider_deferred()

    def _market(self):
        interval = self.scenario.market.interval_s
        k = 0
        while k * interval < self.horizon_s:
            t = k * interval
            if t > self.env.now:
                yield self.env.timeout(t - self.env.now)
            self.round_index = k
            self._round("periodic")
            if self.progress is not None:
                self.progress(self.env.now)
            k += 1

    def _record(self, event: str) -> None:
        b = self.books.totals
        self.ts_rows.append((
            self.env.now, event, max(0.0, self.total_power_w), self.renewable_w, self.books.soc_j, self.round_price,
            self.carbon, self.grid_price, len(self.queue), len(self.job_gpu_ids), int(np.sum(self.state == GpuState.ACTIVE)),
            int(np.sum(self.state == GpuState.SLEEP)), b.consumed_j, b.renewable_used_j, b.battery_out_j, b.grid_j,
            b.unserved_j, b.curtailed_j, b.charged_j,
        ))

    # ------------------------------------------------------------------------------------ run
    def run(self) -> RunResult:
        """Run to the horizon and return the results."""
        wall0 = time.perf_counter()
        self.env.process(self._supply_changes())
        self.env.process(self._market())
        self.env.process(self._arrivals())
        self.env.run(until=self.horizon_s)
        self._advance()
        self._settle()
        self._record("end")
        wall_s = time.perf_counter() - wall0
        return RunResult(
            scenario=self.scenario, policy=self.policy, jobs=self._job_table(), rounds=pd.DataFrame(self.round_rows),
            timeseries=pd.DataFrame(self.ts_rows, columns=TIMESERIES_COLUMNS),
            energy=self.books.totals.as_dict() | {"battery_soc_start_j": self.books.initial_soc_j,
                                                  "battery_soc_end_j": self.books.soc_j},
            tokens=dict(self.tokens) | {"held": float(self.wallet.sum())},
            gpu_energy_j=self.energy_j.copy(),
            counters={"events": self.n_events, "wall_s": wall_s, "simulated_s": self.horizon_s},
        )

    def _job_table(self) -> pd.DataFrame:
        status = self.status
        ended = (status == JobStatus.COMPLETED) | (status == JobStatus.DROPPED)
        df = self.jobs_in.copy()
        df["status"] = pd.Categorical.from_codes(status, categories=[s.name.lower() for s in JobStatus])
        df["drop_reason"] = pd.Categorical.from_codes(self.drop_reason, categories=[r.name.lower() for r in DropReason])
        df["start_s"] = self.start_s
        df["finish_s"] = np.where(ended, self.finish_s, np.nan)
        df["wait_s"] = self.start_s - self.arrival_s
        df["duration_full_clock_s"] = self.duration_full_s
        done = status == JobStatus.COMPLETED
        df["slowdown"] = np.where(done, (self.finish_s - self.arrival_s) / self.duration_full_s, np.nan)
        df["deadline_missed"] = np.isfinite(self.deadline_s) & (
            (done & (self.finish_s > self.deadline_s)) | (self.drop_reason == DropReason.DEADLINE_EXPIRED))
        df["energy_j"] = np.where(done, self.job_energy_j, np.nan)
        return df


TIMESERIES_COLUMNS = [
    "time_s", "event", "power_w", "renewable_w", "battery_soc_j", "price_tokens_per_kwh", "carbon_g_per_kwh",
    "grid_price_usd_per_mwh", "queue_length", "jobs_running", "gpus_active", "gpus_sleeping",
    "consumed_j", "renewable_used_j", "battery_out_j", "grid_j", "unserved_j", "curtailed_j", "charged_j",
]
