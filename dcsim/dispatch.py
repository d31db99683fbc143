"""Job queue, dispatch and placement: per-job state, FCFS starts on free GPUs, clocks and completion times."""
from __future__ import annotations

import heapq
import math
from collections import deque
from enum import IntEnum
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd
import simpy

from dcsim.buffers import buffer
from dcsim.cluster import ACTIVE, IDLE, OFF, SLEEP, WAKING, BOOTING, Cluster

if TYPE_CHECKING:
    from dcsim.market_round import MarketRound
    from dcsim.power_delivery import PowerDelivery
    from dcsim.reward_meter import RewardMeter


class JobStatus(IntEnum):
    """Where a job is. Every job ends a run as COMPLETED, DROPPED, KILLED or one of the pending states."""

    FUTURE = 0  # not yet arrived
    DEFERRED = 1  # held back by the policy
    QUEUED = 2  # waiting for GPUs
    STARTING = 3  # GPUs claimed, some still waking
    RUNNING = 4
    COMPLETED = 5
    DROPPED = 6
    KILLED = 7  # lost to a GPU, node, PDU or feed failure (facility.failures.on_failure: lose)


class DropReason(IntEnum):
    NONE = 0
    TOO_LARGE = 1  # needs more GPUs than the cluster has
    QUEUE_FULL = 2
    DEADLINE_EXPIRED = 3  # deadline passed while waiting or deferred


QUEUED, DEFERRED, STARTING = int(JobStatus.QUEUED), int(JobStatus.DEFERRED), int(JobStatus.STARTING)
RUNNING, COMPLETED, DROPPED = int(JobStatus.RUNNING), int(JobStatus.COMPLETED), int(JobStatus.DROPPED)
# Completions due within this many ulps of the timer's time happen at that instant (``now + remaining / rate``
# computed for different jobs can differ in the last bits); anything further apart completes later.
SAME_INSTANT_ULPS = 4


class Dispatcher:
    """The jobs: their static columns, their dynamic state, the queue and the completion heap.

    Job completion times sit in a heap and are moved when a job's clock changes; stale entries are skipped
    by version, so nothing is polled. A k-GPU job is gang-scheduled: it runs at its slowest GPU's pace.

    Args:
        jobs: The job table (see :mod:`dcsim.jobs`).
        env: The SimPy environment.
        cluster: The GPUs jobs are placed on.
        drop_expired: Drop waiting jobs whose deadline has passed.
        max_queue: Longest queue (None = unbounded); arrivals beyond it are dropped.
        trace: The event trace, or None.
    """

    def __init__(self, jobs: pd.DataFrame, env: simpy.Environment, cluster: Cluster, drop_expired: bool,
                 max_queue: int | None, trace: list[tuple] | None):
        self.env = env
        self.cluster = cluster
        self._trace = trace
        self.drop_expired = drop_expired
        self._max_queue = max_queue
        self.market: MarketRound | None = None  # wired by the core: prices a starting job's power
        self.rewards: RewardMeter | None = None  # wired by the core for learning policies
        self.on_due: Callable[[simpy.Event], None] | None = None  # the core's completion-timer handler
        self.power: PowerDelivery | None = None  # wired by the core with a power-delivery tree: places jobs
        self.placed: dict[int, list[int]] = {}  # with a tree: every job's GPUs, kept after it ends
        self.requeued: np.ndarray | None = None  # with failures: how often each job was requeued

        # static columns as numpy (vector work) and lists (scalar work)
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
        # dynamic state
        self._stat, self.status = buffer(m, "b", int(JobStatus.FUTURE))
        self._why, self.drop_reason = buffer(m, "b", 0)
        self._start, self.start_s = buffer(m, "d", math.nan)
        self._finish, self.finish_s = buffer(m, "d", math.nan)
        self._rem, self.remaining_s = buffer(m, "d", 0.0)  # full-clock seconds left as of last_s
        self.remaining_s[:] = self.duration_full_s
        self._rate, self.rate = buffer(m, "d", 0.0)
        self._last, self.last_s = buffer(m, "d", 0.0)
        self._jal, self.job_alloc_w = buffer(m, "d", 0.0)
        self._jen, self.job_energy_j = buffer(m, "d", 0.0)
        self._mark = buffer(m, "d", 0.0)[0]  # GPUs' energy meters at the start
        self._ver = [0] * m
        self._pending = [0] * m  # GPUs still waking before the job can start
        self.job_gpus: dict[int, list[int]] = {}  # running or starting jobs' GPUs
        self.queue: deque[int] = deque()
        self.deferred: list[int] = []
        self.heap: list[tuple[float, int, int]] = []  # (completion time, job, version)
        self._timers: list[float] = []
        self._scratch = np.zeros(m)

    # ------------------------------------------------------------------------------------ queue
    def enqueue(self, jobs: list[int]) -> None:
        cap = self._max_queue
        for j in jobs:
            if cap is not None and len(self.queue) >= cap:
                self.drop(j, DropReason.QUEUE_FULL)
            else:
                self._stat[j] = QUEUED
                self.queue.append(j)

    def defer(self, jobs: list[int]) -> None:
        """Mark ``jobs`` as held back by the policy (the caller keeps the list of held jobs)."""
        for j in jobs:
            self._stat[j] = DEFERRED
            if self._trace is not None:
                self._trace.append((self.env.now, "defer", j, ""))

    def hold(self, j: int) -> None:
        """Fixed-step timing: arrived deferrable job ``j`` waits, held, for the next tick's admission decision."""
        self._stat[j] = DEFERRED
        self.deferred.append(j)

    def drop(self, j: int, reason: DropReason) -> None:
        if self._trace is not None:
            self._trace.append((self.env.now, "drop", j, reason.name.lower()))
        self._stat[j] = DROPPED
        self._why[j] = int(reason)
        if self.rewards is not None:
            self.rewards.drop(j, self.env.now, reason == DropReason.DEADLINE_EXPIRED)
        self._finish[j] = self.env.now

    def dispatch(self) -> None:
        """Start queued jobs in arrival order while enough GPUs are free (strict FCFS, no backfilling)."""
        queue = self.queue
        if not queue:
            return
        drop_expired = self.drop_expired
        now = self.env.now
        cl = self.cluster
        free = len(cl.free_idle) + len(cl.free_sleep) + len(cl.free_off)  # GPUs not claimed, in any state
        while queue:
            j = queue[0]
            if drop_expired and self._deadline[j] < now:
                queue.popleft()
                self.drop(j, DropReason.DEADLINE_EXPIRED)
                continue
            k = self._k[j]
            if k > free:
                break
            queue.popleft()
            free -= k
            self._claim(j, k)

    def drop_expired_queued(self) -> None:
        """Drop every queued job whose deadline has passed, not only the head (done at market rounds)."""
        if not self.drop_expired or not self.queue:
            return
        now = self.env.now
        deadline = self._deadline
        if any(deadline[j] < now for j in self.queue):
            keep = deque()
            for j in self.queue:
                if deadline[j] < now:
                    self.drop(j, DropReason.DEADLINE_EXPIRED)
                else:
                    keep.append(j)
            self.queue = keep

    # ------------------------------------------------------------------------------------ placement and starts
    def _claim(self, j: int, k: int) -> None:
        """Place job ``j`` on ``k`` free GPUs, idle ones first, then sleeping, then off ones (which wake)."""
        cl = self.cluster
        if self.power is not None:
            self._claim_placed(j, self.power.place(k))
            return
        if k == 1 and cl.free_idle:  # the common case: one GPU, already idle
            g = cl.free_idle.popitem()[0]
            cl._asg[g] = j
            self.job_gpus[j] = [g]
            self._start_job(j)
            return
        taken: list[int] = []
        for pool in (cl.free_idle, cl.free_sleep, cl.free_off):
            while len(taken) < k and pool:
                taken.append(pool.popitem()[0])
        self._claim_placed(j, taken)

    def _claim_placed(self, j: int, taken: list[int]) -> None:
        """Give job ``j`` the GPUs ``taken`` (already out of the free pools): start it, or wake them first."""
        cl = self.cluster
        if self.power is not None:
            self.placed[j] = taken
        st, asg = cl._st, cl._asg
        for g in taken:
            asg[g] = j
        self.job_gpus[j] = taken
        not_ready = [g for g in taken if st[g] != IDLE]
        if not not_ready:
            self._start_job(j)
            return
        self._pending[j] = len(not_ready)
        self._stat[j] = STARTING
        asleep = [g for g in not_ready if st[g] == SLEEP]
        off = [g for g in not_ready if st[g] == OFF]
        for g in not_ready:
            if st[g] != SLEEP and st[g] != OFF:
                cl.wake_after[g] = 1  # mid-transition to sleep/off: wake as soon as it settles
        if asleep:
            cl.begin_transition(asleep, WAKING)
        if off:
            cl.begin_transition(off, BOOTING)

    def gpus_ready(self, gpus: list[int]) -> None:
        """``gpus`` finished waking: start the jobs that were waiting only for them."""
        pending, asg = self._pending, self.cluster._asg
        for g in gpus:
            j = asg[g]
            if j >= 0:
                pending[j] -= 1
                if pending[j] == 0:
                    self._start_job(j)

    def _start_job(self, j: int) -> None:
        gpus = self.job_gpus[j]
        now = self.env.now
        if self._trace is not None:
            self._trace.append((now, "start", j, "gpus=" + " ".join(map(str, gpus))))
        self._stat[j] = RUNNING
        self._start[j] = now
        if self.rewards is not None:
            self.rewards.start(j, gpus, now)
        self._last[j] = now
        cl = self.cluster
        st, eoff, pw = cl._st, cl._eoff, cl._pw
        mark = 0.0
        for g in gpus:
            st[g] = ACTIVE
            mark += eoff[g] + pw[g] * now
        self._mark[j] = mark
        market = self.market
        self.set_job_alloc(j, market.spot_allocation(gpus))
        over = cl.allocated_sum_w - market.round_sellable_w
        if over > market.peak_overallocation_w:
            market.peak_overallocation_w = over

    # ------------------------------------------------------------------------------------ clocks
    def set_job_alloc(self, j: int, alloc_w: float) -> None:
        """Give every GPU of job ``j`` ``alloc_w`` above idle (a gang runs at its slowest GPU's pace, so all
        its GPUs get the same) and move its completion if its clock changed."""
        cl = self.cluster
        now = self.env.now
        f, power, alloc_w = cl.cap(alloc_w)
        billable = power - cl.idle_w
        al, ck = cl._al, cl._ck
        for g in self.job_gpus[j]:
            cl.set_power(g, power, billable, now)
            cl.allocated_sum_w += alloc_w - al[g]
            al[g] = alloc_w
            ck[g] = f
        self._jal[j] = alloc_w
        beta = self._beta[j]
        rate = 0.0 if f == 0.0 else (f if beta == 1.0 else f**beta)  # a paused job makes no progress, even at β = 0
        old = self._rate[j]
        if rate != old:
            remaining = self._rem[j] - old * (now - self._last[j])
            self._rem[j] = remaining = remaining if remaining > 0.0 else 0.0
            self._last[j] = now
            self._rate[j] = rate
            self._ver[j] += 1
            if rate > 0:
                heapq.heappush(self.heap, (now + remaining / rate, j, self._ver[j]))

    def apply_allocations(self, alloc_w: np.ndarray, active: np.ndarray) -> None:
        """Set every running job's power above idle from a per-GPU allocation: each job gets its GPUs' minimum
        (gang scheduling); below the minimum cap it pauses."""
        cl = self.cluster
        owners = cl.assigned[active]
        if owners.size:
            running = np.unique(owners)
            scratch = self._scratch
            scratch[running] = np.inf
            np.minimum.at(scratch, owners, alloc_w[active])
            new = scratch[running]
            new = np.where(cl.below_min_cap(new), 0.0, new)  # below min cap: paused
            moved = new != self.job_alloc_w[running]
            for j, a in zip(running[moved].tolist(), new[moved].tolist()):
                self.set_job_alloc(j, a)
            self.arm()

    def remaining_now(self, jobs: np.ndarray) -> np.ndarray:
        """Full-clock seconds of work left now for ``jobs``."""
        return np.maximum(0.0, self.remaining_s[jobs] - self.rate[jobs] * (self.env.now - self.last_s[jobs]))

    # ------------------------------------------------------------------------------------ completions
    def arm(self) -> None:
        """Make sure a timer is pending at the earliest valid completion."""
        heap, ver, stat = self.heap, self._ver, self._stat
        while heap:
            _, j, v = heap[0]
            if ver[j] == v and stat[j] == RUNNING:
                break
            heapq.heappop(heap)
        else:
            return
        t = heap[0][0]
        timers = self._timers
        if timers and t >= timers[0]:
            return  # an earlier timer is pending; it re-arms when it fires
        heapq.heappush(timers, t)
        self.env.timeout(delay_to(self.env.now, t)).callbacks.append(self.on_due)

    def complete_due(self) -> list[int]:
        """Complete every job due by now (within a few ulps); returns the GPUs they freed."""
        heapq.heappop(self._timers)
        now = self.env.now
        due = now + SAME_INSTANT_ULPS * math.ulp(now)
        heap, ver, stat = self.heap, self._ver, self._stat
        freed: list[int] = []
        while heap and heap[0][0] <= due:
            _, j, v = heapq.heappop(heap)
            if ver[j] == v and stat[j] == RUNNING:
                freed.extend(self.job_gpus[j])
                self._complete(j)
        return freed

    def _complete(self, j: int) -> None:
        gpus = self.job_gpus.pop(j)
        now = self.env.now
        if self._trace is not None:
            self._trace.append((now, "complete", j, ""))
        self._stat[j] = COMPLETED
        self._finish[j] = now
        self._rem[j] = 0.0
        value = self._value[j]
        share = value / len(gpus)
        energy = 0.0
        cl = self.cluster
        idle = cl.idle_w
        free = cl.free_idle
        eoff, pw, al, ck, st, asg = cl._eoff, cl._pw, cl._al, cl._ck, cl._st, cl._asg
        set_power = cl.set_power
        for g in gpus:
            energy += eoff[g] + pw[g] * now
            set_power(g, idle, 0.0, now)
            cl.allocated_sum_w -= al[g]
            al[g] = 0.0
            ck[g] = 0.0
            st[g] = IDLE
            asg[g] = -1
            free[g] = None
        if cl.on_pools_changed is not None:
            cl.on_pools_changed(gpus)
        self._jen[j] += energy - self._mark[j]  # += : a requeued job's earlier attempts count too
        if self.rewards is not None:
            self.rewards.complete(gpus, share, now, now > self._deadline[j])
        self.market.credit_job_value(gpus, share, value)

    # ------------------------------------------------------------------------------------ output
    def job_table(self, horizon_s: float) -> pd.DataFrame:
        """The per-job table: the input columns plus status, times, slowdown, deadline misses and energy."""
        status = self.status
        done = status == COMPLETED
        killed = status == int(JobStatus.KILLED)
        ended = done | (status == DROPPED) | killed
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
            | (pending & (self.deadline_s < horizon_s)))
        df["energy_j"] = np.where(done | killed, self.job_energy_j, np.nan)
        if self.power is not None:  # with a power-delivery tree: the node each job ran on (-1: not placed)
            df["node"] = self.power.node_of_jobs(self.placed, len(df))
        if self.requeued is not None:  # with failures: how often each job was stopped and queued again
            df["requeues"] = self.requeued
        return df


def delay_to(now: float, t: float) -> float:
    """The delay that makes SimPy's clock land exactly on ``t`` (``now + (t − now)`` can fall an ulp short)."""
    delay = t - now if t > now else 0.0
    while now + delay < t:
        delay = math.nextafter(delay, math.inf)
    return delay
