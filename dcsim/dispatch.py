"""Job queue, dispatch and placement: per-job state, FCFS starts on free GPUs, clocks and completion times."""
from __future__ import annotations

import array
import heapq
import math
from collections import deque
from enum import IntEnum
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd
import simpy

from dcsim.cluster import ACTIVE, IDLE, OFF, SLEEP, WAKING, BOOTING, Cluster

if TYPE_CHECKING:
    from dcsim.job_log import JobLog
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


FUTURE = int(JobStatus.FUTURE)
QUEUED, DEFERRED, STARTING = int(JobStatus.QUEUED), int(JobStatus.DEFERRED), int(JobStatus.STARTING)
RUNNING, COMPLETED, DROPPED = int(JobStatus.RUNNING), int(JobStatus.COMPLETED), int(JobStatus.DROPPED)
_NP = {"d": np.float64, "q": np.int64, "b": np.int8}
#: The slot buffers: (array attribute, numpy view attribute or None, typecode, fill).
_SLOT_BUFFERS = (
    ("_gid", "gid", "q", -1), ("_arr", "arrival_s", "d", 0.0), ("_k", "job_gpus_n", "q", 1),
    ("_deadline", "deadline_s", "d", math.inf), ("_value", "value_tokens", "d", 0.0),
    ("_beta", "beta", "d", 1.0), ("_dur", "duration_full_s", "d", 0.0), ("_stat", "status", "b", int(JobStatus.FUTURE)),
    ("_why", "drop_reason", "b", 0), ("_start", "start_s", "d", math.nan), ("_finish", "finish_s", "d", math.nan),
    ("_rem", "remaining_s", "d", 0.0), ("_rate", "rate", "d", 0.0), ("_last", "last_s", "d", 0.0),
    ("_jal", "job_alloc_w", "d", 0.0), ("_jen", "job_energy_j", "d", 0.0), ("_mark", None, "d", 0.0),
    ("_req", None, "q", 0),
)
# Completions due within this many ulps of the timer's time happen at that instant (``now + remaining / rate``
# computed for different jobs can differ in the last bits); anything further apart completes later.
SAME_INSTANT_ULPS = 4


class Dispatcher:
    """The jobs: their static columns, their dynamic state, the queue and the completion heap.

    Job completion times sit in a heap and are moved when a job's clock changes; stale entries are skipped
    by version, so nothing is polled. A k-GPU job is gang-scheduled: it runs at its slowest GPU's pace.

    Args:
        log: Where ended jobs' results go (the job table's chunks).
        chunk_jobs: Rows per chunk of the job table.
        env: The SimPy environment.
        cluster: The GPUs jobs are placed on.
        drop_expired: Drop waiting jobs whose deadline has passed.
        max_queue: Longest queue (None = unbounded); arrivals beyond it are dropped.
        trace: The event trace, or None.
        initial_slots: Jobs in the system the buffers first have room for (they grow as needed).
    """

    def __init__(self, log: JobLog, chunk_jobs: int, env: simpy.Environment, cluster: Cluster, drop_expired: bool,
                 max_queue: int | None, trace: list[tuple] | None, initial_slots: int = 1024):
        self.env = env
        self.cluster = cluster
        self._trace = trace
        self.drop_expired = drop_expired
        self._max_queue = max_queue
        self.market: MarketRound | None = None  # wired by the core: prices a starting job's power
        self.rewards: RewardMeter | None = None  # wired by the core for learning policies
        self.on_due: Callable[[simpy.Event], None] | None = None  # the core's completion-timer handler
        self.power: PowerDelivery | None = None  # wired by the core with a power-delivery tree: places jobs

        self.on_grow: list[Callable[[], None]] = []  # called after the slot buffers were reallocated
        self.requeued: np.ndarray | None = None  # with failures (track_requeues): how often each slot's job was requeued

        # Per-job state lives in slots: a job takes a free slot when it arrives and gives it back when it ends, so
        # the buffers hold the jobs in the system, not every job of the run. ``gid`` maps a slot to the job's row
        # in the job table (its id in traces, observations and outputs); ties between jobs are broken by it.
        self.log = log
        self.chunk_jobs = chunk_jobs
        self._cap = 0
        for a, v, tc, fill in _SLOT_BUFFERS:
            setattr(self, a, array.array(tc))
            if v is not None:
                setattr(self, v, np.frombuffer(getattr(self, a), dtype=_NP[tc]))
        self._ver: list[int] = []
        self._pending: list[int] = []  # GPUs still waking before the job can start
        self._chunk_of: list = []  # each slot's job's chunk of the job table and its row there (set by arrive)
        self._row_of: list[int] = []
        self._free: list[int] = []
        self._scratch = np.zeros(0)
        self._rows: tuple | None = None  # the current chunk's columns as lists, for arrive()
        self._grow(initial_slots)
        self.job_gpus: dict[int, list[int]] = {}  # running or starting jobs' GPUs
        self.queue: deque[int] = deque()
        self.deferred: list[int] = []
        self.heap: list[tuple[float, int, int, int]] = []  # (completion time, job id, version, slot)
        self._timers: list[float] = []

    # ------------------------------------------------------------------------------------ slots
    def _grow(self, slots: int) -> None:
        """Reallocate the slot buffers with room for ``slots`` jobs (more than now) and tell ``on_grow``."""
        old = self._cap
        new = max(slots, 2 * old, 16)
        for a, v, tc, fill in _SLOT_BUFFERS:
            buf = array.array(tc, getattr(self, a))
            buf.extend(array.array(tc, [fill]) * (new - old))
            setattr(self, a, buf)
            if v is not None:
                setattr(self, v, np.frombuffer(buf, dtype=_NP[tc]))
        self._ver.extend([0] * (new - old))
        self._pending.extend([0] * (new - old))
        self._chunk_of.extend([None] * (new - old))
        self._row_of.extend([0] * (new - old))
        self._scratch = np.zeros(new)
        self._free.extend(range(new - 1, old - 1, -1))  # the lowest slot is taken first
        self._cap = new
        if self.requeued is not None:
            self.requeued = np.frombuffer(self._req, dtype=np.int64)
        if self._rows is not None:
            self._bind_arrive()
        for f in self.on_grow:
            f()

    def track_requeues(self) -> None:
        """Count requeues per job (failures are configured): ``requeued[slot]`` and the table's ``requeues``."""
        self.requeued = np.frombuffer(self._req, dtype=np.int64)
        if self._rows is not None:
            self._bind_arrive()

    def open_chunk(self, index: int, frame: pd.DataFrame) -> None:
        """The arrivals reached chunk ``index`` of the job table: open its results and read its columns."""
        chunk = self.log.open(index, frame, index * self.chunk_jobs)
        gpus = frame["gpus"].to_numpy(np.int64)
        self._rows = (chunk, chunk.base, frame["arrival_s"].to_numpy(float).tolist(), gpus.tolist(),
                      np.nan_to_num(frame["deadline_s"].to_numpy(float), nan=np.inf).tolist(),
                      frame["deferrable"].to_numpy(bool).tolist(), frame["value_tokens"].to_numpy(float).tolist(),
                      frame["clock_sensitivity"].to_numpy(float).tolist(),
                      (frame["work_gpu_s"].to_numpy(float) / gpus).tolist())
        self._bind_arrive()

    def arrive(self, i: int) -> int:
        """Row ``i`` of the open chunk arrives: give it a slot (returned) holding its columns.

        :meth:`open_chunk` replaces this with a closure bound to the chunk's columns and the slot buffers (rebound
        when they grow), so the per-job path reads no attributes; this method is what it does."""
        self._bind_arrive()
        return self.arrive(i)

    def _bind_arrive(self) -> None:
        """Bind ``self.arrive`` to the open chunk's columns and the current slot buffers."""
        chunk, base, arrival, k, deadline, _, value, beta, duration = self._rows
        free, grow, chunk_of, row_of = self._free, self._grow, self._chunk_of, self._row_of
        gid, arr, kk, dl, val, bt = self._gid, self._arr, self._k, self._deadline, self._value, self._beta
        dur, rem, start, rate, jen, req = self._dur, self._rem, self._start, self._rate, self._jen, self._req
        tracked = self.requeued is not None  # requeues are counted only with failures; else _req stays 0
        nan = math.nan

        def arrive(i: int) -> int:
            if not free:
                grow(2 * self._cap)  # rebinds self.arrive to the new buffers
                return self.arrive(i)
            j = free.pop()
            # A freed slot is FUTURE with no drop reason (see _end); the finish time, the allocation and the last
            # clock change of its previous job are never read before this job sets them (the table masks pending
            # finishes).
            gid[j] = base + i
            chunk_of[j] = chunk
            row_of[j] = i
            arr[j] = arrival[i]
            kk[j] = k[i]
            dl[j] = deadline[i]
            val[j] = value[i]
            bt[j] = beta[i]
            dur[j] = rem[j] = duration[i]
            start[j] = nan
            rate[j] = jen[j] = 0.0
            if tracked:
                req[j] = 0
            return j

        self.arrive = arrive

    def _end(self, j: int) -> None:
        """Slot ``j``'s job ended (completed, dropped or killed): write its results into its chunk, free the slot."""
        chunk = self._chunk_of[j]
        i = self._row_of[j]
        chunk.status[i] = self._stat[j]
        why = self._why[j]
        if why:
            chunk.reason[i] = why
            self._why[j] = 0
        chunk.start[i] = self._start[j]
        chunk.finish[i] = self._finish[j]
        chunk.energy[i] = self._jen[j]
        if chunk.requeues is not None:
            chunk.requeues[i] = self._req[j]
        chunk.live -= 1
        if chunk.live == 0:
            self.log.chunk_ended(self._gid[j] // self.chunk_jobs)
        self._chunk_of[j] = None  # a free slot holds no chunk (the table hands chunks on and lets them go)
        self._gid[j] = -1
        self._stat[j] = FUTURE
        self._ver[j] += 1  # any completion entry of the old job is stale for the next one
        self._free.append(j)

    def _write_results(self, j: int) -> None:
        g = self._gid[j]
        chunk = self.log.chunks[g // self.chunk_jobs]
        i = g - chunk.base
        chunk.status[i] = self._stat[j]
        chunk.reason[i] = self._why[j]
        chunk.start[i] = self._start[j]
        chunk.finish[i] = self._finish[j]
        chunk.energy[i] = self._jen[j]
        if chunk.requeues is not None:
            chunk.requeues[i] = self._req[j]

    def close(self) -> None:
        """At the horizon: write the results so far of every job still in the system (pending jobs)."""
        for j in range(self._cap):
            if self._gid[j] >= 0:
                self._write_results(j)

    # ------------------------------------------------------------------------------------ queue
    def queue_length(self) -> int:
        return len(self.queue)

    def running_count(self) -> int:
        """Jobs running or starting (their GPUs claimed)."""
        return len(self.job_gpus)

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
                self._trace.append((self.env.now, "defer", self._gid[j], ""))

    def hold(self, j: int) -> None:
        """Fixed-step timing: arrived deferrable job ``j`` waits, held, for the next tick's admission decision."""
        self._stat[j] = DEFERRED
        self.deferred.append(j)

    def drop(self, j: int, reason: DropReason) -> None:
        if self._trace is not None:
            self._trace.append((self.env.now, "drop", self._gid[j], reason.name.lower()))
        self._stat[j] = DROPPED
        self._why[j] = int(reason)
        if self.rewards is not None:
            self.rewards.drop(j, self.env.now, reason == DropReason.DEADLINE_EXPIRED)
        self._finish[j] = self.env.now
        self._end(j)

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
        if self.power is not None:  # the job table's node: the node of its first GPU, where it was placed last
            g = self._gid[j]
            chunk = self.log.chunks[g // self.chunk_jobs]
            chunk.node[g - chunk.base] = self.power.node_of_gpu(taken[0])
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
            self._trace.append((now, "start", self._gid[j], "gpus=" + " ".join(map(str, gpus))))
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
                heapq.heappush(self.heap, (now + remaining / rate, self._gid[j], self._ver[j], j))

    def apply_allocations(self, alloc_w: np.ndarray, active: np.ndarray) -> None:
        """Set every running job's power above idle from a per-GPU allocation: each job gets its GPUs' minimum
        (gang scheduling); below the minimum cap it pauses."""
        moved = self.moved_allocations(alloc_w, active)
        if moved is not None:
            for j, a in zip(moved[0].tolist(), moved[1].tolist()):
                self.set_job_alloc(j, a)
            self.arm()

    def moved_allocations(self, alloc_w: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The running jobs whose allocation a per-GPU allocation changes, in job order, and their new allocations
        (their GPUs' minimum; 0 below the minimum cap); None when no GPU is active."""
        cl = self.cluster
        owners = cl.assigned[active]
        if not owners.size:
            return None
        running = np.unique(owners)
        running = running[np.argsort(self.gid[running])]  # in job order (slots are not)
        scratch = self._scratch
        scratch[running] = np.inf
        np.minimum.at(scratch, owners, alloc_w[active])
        new = scratch[running]
        new = np.where(cl.below_min_cap(new), 0.0, new)  # below min cap: paused
        moved = new != self.job_alloc_w[running]
        return running[moved], new[moved]

    def remaining_now(self, jobs: np.ndarray) -> np.ndarray:
        """Full-clock seconds of work left now for ``jobs``."""
        return np.maximum(0.0, self.remaining_s[jobs] - self.rate[jobs] * (self.env.now - self.last_s[jobs]))

    # ------------------------------------------------------------------------------------ completions
    def arm(self) -> None:
        """Make sure a timer is pending at the earliest valid completion."""
        heap, ver, stat = self.heap, self._ver, self._stat
        while heap:
            _, _, v, j = heap[0]
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
            _, _, v, j = heapq.heappop(heap)
            if ver[j] == v and stat[j] == RUNNING:
                freed.extend(self.job_gpus[j])
                self._complete(j)
        return freed

    def _complete(self, j: int) -> None:
        gpus = self.job_gpus.pop(j)
        now = self.env.now
        g = self._gid[j]
        if self._trace is not None:
            self._trace.append((now, "complete", g, ""))
        # The slot is freed below, so its status, finish and remaining work are not written: the results go
        # straight into the job table's chunk (as _end would).
        value = self._value[j]
        share = value / len(gpus)
        energy = 0.0
        cl = self.cluster
        idle = cl.idle_w
        free = cl.free_idle
        eoff, pw, al, ck, st, asg = cl._eoff, cl._pw, cl._al, cl._ck, cl._st, cl._asg
        set_power = cl.set_power
        for gpu in gpus:
            energy += eoff[gpu] + pw[gpu] * now
            set_power(gpu, idle, 0.0, now)
            cl.allocated_sum_w -= al[gpu]
            al[gpu] = 0.0
            ck[gpu] = 0.0
            st[gpu] = IDLE
            asg[gpu] = -1
            free[gpu] = None
        if cl.on_pools_changed is not None:
            cl.on_pools_changed(gpus)
        energy = self._jen[j] + (energy - self._mark[j])  # + : a requeued job's earlier attempts count too
        if self.rewards is not None:
            self.rewards.complete(gpus, share, now, now > self._deadline[j])
        self.market.credit_job_value(gpus, share, value)
        # _end, with what is known here written straight into the chunk
        chunk = self._chunk_of[j]
        i = self._row_of[j]
        chunk.status[i] = COMPLETED
        chunk.start[i] = self._start[j]
        chunk.finish[i] = now
        chunk.energy[i] = energy
        if chunk.requeues is not None:
            chunk.requeues[i] = self._req[j]
        chunk.live -= 1
        if chunk.live == 0:
            self.log.chunk_ended(g // self.chunk_jobs)
        self._chunk_of[j] = None  # a free slot holds no chunk (the table hands chunks on and lets them go)
        self._gid[j] = -1
        self._stat[j] = FUTURE
        self._ver[j] += 1  # any completion entry of the old job is stale for the next one
        self._free.append(j)


def delay_to(now: float, t: float) -> float:
    """The delay that makes SimPy's clock land exactly on ``t`` (``now + (t − now)`` can fall an ulp short)."""
    delay = t - now if t > now else 0.0
    while now + delay < t:
        delay = math.nextafter(delay, math.inf)
    return delay
