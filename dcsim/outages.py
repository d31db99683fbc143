"""Failures in a run: GPU, node, PDU and feed outages and renewable trips, drawn from the ``failures`` stream.

Built by the core only when a scenario has ``facility.failures`` (docs/facility.md). All outage times are drawn
up front with :mod:`dcsim.facility.failures` (each kind from its own child of the ``failures`` stream, so adding
one kind does not move another's draws) and replayed by one core process in time order:

- a GPU goes down when any component above it (itself, its node, PDU or feed, or a scheduled outage of one of
  them) fails, and comes back, OFF (it must boot), when all of them are repaired. A down GPU draws nothing and
  is out of the free pools; a transition it was in never ends.
- the job on a GPU that goes down is stopped and charged for the energy it used: ``on_failure: requeue`` puts it
  back at the head of the queue with all its work to do again, ``lose`` ends it as KILLED.
- while the renewable plant is tripped it delivers nothing (the market sees it at its next round).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import simpy

from dcsim.cluster import ACTIVE, IDLE, OFF, Cluster
from dcsim.config import Scenario
from dcsim.dispatch import JobStatus
from dcsim.facility.failures import OutageEvents, alternating_renewal, outages_from_intervals, renewable_trips
from dcsim.seeding import Streams

if TYPE_CHECKING:
    from dcsim.dispatch import Dispatcher
    from dcsim.facility.topology import PowerTree
    from dcsim.meter import EnergyMeter
    from dcsim.supply import SupplyInputs

KINDS = ("gpu", "node", "pdu", "feed", "scheduled")
RUNNING, QUEUED, KILLED = int(JobStatus.RUNNING), int(JobStatus.QUEUED), int(JobStatus.KILLED)


class Outages:
    """The outage schedule of a run and what each outage does to GPUs, jobs and the renewable supply.

    Args:
        scenario: The validated scenario (``facility.failures``; node, PDU and feed outages need the tree).
        streams: The run's random streams (``failures``).
        env: The SimPy environment.
        cluster: The GPUs.
        jobs: The dispatcher (stops jobs on failed GPUs).
        meter: The energy meter (renewable trips).
        supply: The supply series (the renewable power when a trip ends).
        tree: The power-delivery tree, or None.
    """

    def __init__(self, scenario: Scenario, streams: Streams, env: simpy.Environment, cluster: Cluster,
                 jobs: "Dispatcher", meter: "EnergyMeter", supply: "SupplyInputs", tree: "PowerTree | None"):
        self.env = env
        self.supply = supply
        self.cluster = cluster
        self.jobs = jobs
        self.meter = meter
        fl = scenario.facility.failures
        self.requeue = fl.on_failure == "requeue"
        horizon = scenario.horizon_s
        n = cluster.n_gpus
        seeds = streams.seed_sequence("failures").spawn(len(KINDS) + 1)  # one child per kind, renewable last
        self.events: dict[str, OutageEvents] = {}
        self._gpus_of: dict[str, list[list[int]]] = {}
        for i, kind in enumerate(KINDS):
            rng = np.random.Generator(np.random.PCG64(seeds[i]))
            if kind == "gpu":
                if fl.gpu is None:
                    continue
                ev = alternating_renewal(rng, n, fl.gpu.mtbf_s, fl.gpu.mttr_s, horizon, fl.gpu.failure_shape,
                                         fl.gpu.repair_shape)
                gpus_of = [[g] for g in range(n)]
            elif kind == "scheduled":
                if not fl.scheduled:
                    continue
                names = list(tree.names)
                elements = [names.index(s.element) for s in fl.scheduled]
                ev = outages_from_intervals(np.arange(len(elements)), [s.start_s for s in fl.scheduled],
                                            [s.duration_s for s in fl.scheduled], len(elements), horizon)
                gpus_of = [tree.members[e].indices.tolist() for e in elements]
            else:
                cfg = getattr(fl, kind)
                if cfg is None:
                    continue
                elements = [e for e, k in enumerate(tree.kinds) if k == kind]
                ev = alternating_renewal(rng, len(elements), cfg.mtbf_s, cfg.mttr_s, horizon, cfg.failure_shape,
                                         cfg.repair_shape)
                gpus_of = [tree.members[e].indices.tolist() for e in elements]
            self.events[kind] = ev
            self._gpus_of[kind] = gpus_of
        self.trips: OutageEvents | None = None
        if fl.renewable_trips is not None:
            rt = fl.renewable_trips
            rng = np.random.Generator(np.random.PCG64(seeds[-1]))
            self.trips = renewable_trips(rng, rt.mean_time_between_s, rt.mean_duration_s, horizon,
                                         trip_shape=rt.duration_shape)
        self.down = np.zeros(n, dtype=np.int64)  # how many failed components each GPU is under
        # the GPU list of each GPU's current transition (the one its end callback carries); None after a failure,
        # so the end of a transition a failure cut short is recognised and ignored
        self._transition: list[list[int] | None] = [None] * n
        self._orphan = bytearray(n)  # claimed by a job that was stopped while the GPU woke
        self.tripped = False
        self.counts = {"jobs_requeued": 0, "jobs_killed": 0, "gpu_downs": 0}

    # ------------------------------------------------------------------------------------ the schedule
    def schedule(self) -> list[tuple[float, str, int, bool]]:
        """Every state change in time order: ``(time_s, kind, component, up)`` (``kind`` ``renewable`` for trips);
        at one instant repairs come before failures."""
        rows = []
        for kind, ev in self.events.items():
            rows += zip(ev.time_s.tolist(), [kind] * len(ev), ev.component.tolist(), ev.up.tolist())
        if self.trips is not None:
            ev = self.trips
            rows += zip(ev.time_s.tolist(), ["renewable"] * len(ev), ev.component.tolist(), ev.up.tolist())
        rows.sort(key=lambda r: (r[0], not r[3]))
        return rows

    def apply(self, kind: str, component: int, up: bool) -> None:
        """One state change, now."""
        if kind == "renewable":
            self.tripped = not up
            self.meter.set_supply(self.renewable_trace_w(), self.meter.carbon, self.meter.grid_price)
            return
        gpus = self._gpus_of[kind][component]
        if up:
            self._repair(gpus)
        else:
            self._fail(gpus)

    def renewable_trace_w(self) -> float:
        """The renewable power now: the supply trace's, or 0 while tripped."""
        return 0.0 if self.tripped else float(self.supply.renewable_w.value_at(self.env.now))

    # ------------------------------------------------------------------------------------ GPUs and jobs
    def _fail(self, gpus: list[int]) -> None:
        cl, jobs = self.cluster, self.jobs
        now = self.env.now
        down = self.down
        newly = []
        for g in gpus:
            down[g] += 1
            if down[g] == 1:
                newly.append(g)
        if not newly:
            return
        self.counts["gpu_downs"] += len(newly)
        for j in dict.fromkeys(cl._asg[g] for g in newly if cl._asg[g] >= 0):
            self._stop_job(j, newly)
        for g in newly:
            for pool in (cl.free_idle, cl.free_sleep, cl.free_off):
                pool.pop(g, None)
            self._transition[g] = None
            self._orphan[g] = 0
            cl.wake_after[g] = 0
            cl._st[g] = OFF
            cl._asg[g] = -1
            cl.set_power(g, 0.0, 0.0, now)
        if cl.on_pools_changed is not None:
            cl.on_pools_changed(newly)

    def _repair(self, gpus: list[int]) -> None:
        cl = self.cluster
        now = self.env.now
        off_w = cl.state_power_w[OFF]
        for g in gpus:
            self.down[g] -= 1
            if self.down[g] == 0:
                cl._st[g] = OFF
                cl.set_power(g, off_w, 0.0, now)
                cl.free_off[g] = None
        if cl.on_pools_changed is not None:
            cl.on_pools_changed(gpus)

    def _stop_job(self, j: int, failed: list[int]) -> None:
        """Stop job ``j`` (one of its GPUs just failed): free its other GPUs, requeue it or end it as KILLED."""
        jobs, cl = self.jobs, self.cluster
        now = self.env.now
        gpus = jobs.job_gpus.pop(j)
        running = jobs._stat[j] == RUNNING
        if running:  # the energy it used until now (agents pay for it through the billable meters)
            jobs._jen[j] += sum(cl._eoff[g] + cl._pw[g] * now for g in gpus) - jobs._mark[j]
        if jobs.rewards is not None and running:
            jobs.rewards.complete(gpus, 0.0, now, False)  # its GPUs stop accruing its latency
        failed_set = set(failed)
        for g in gpus:
            cl.allocated_sum_w -= cl._al[g]
            cl._al[g] = 0.0
            cl._ck[g] = 0.0
            cl._asg[g] = -1
            if g in failed_set:
                continue
            if cl._st[g] == ACTIVE or cl._st[g] == IDLE:
                cl._st[g] = IDLE
                cl.set_power(g, cl.idle_w, 0.0, now)
                cl.free_idle[g] = None
            else:  # still waking or booting for this job: free once it settles
                self._orphan[g] = 1
                cl.wake_after[g] = 0
        if cl.on_pools_changed is not None:
            cl.on_pools_changed(gpus)
        jobs._ver[j] += 1  # its completion entry is stale now
        jobs._rate[j] = 0.0
        jobs._pending[j] = 0
        if self.requeue:
            self.counts["jobs_requeued"] += 1
            jobs.requeued[j] += 1
            jobs._rem[j] = jobs.duration_full_s[j]
            jobs._start[j] = float("nan")
            jobs._jal[j] = 0.0
            jobs._stat[j] = QUEUED
            jobs.queue.appendleft(j)  # it arrived before everything still waiting
        else:
            self.counts["jobs_killed"] += 1
            jobs._stat[j] = KILLED
            jobs._finish[j] = now
            if jobs.rewards is not None:
                jobs.rewards.drop(j, now, False)
        if jobs._trace is not None:
            jobs._trace.append((now, "requeue" if self.requeue else "kill", jobs._gid[j], "gpu failure"))
        if not self.requeue:
            jobs._end(j)

    # ------------------------------------------------------------------------------------ transitions
    def began_transition(self, gpus: list[int]) -> None:
        """Remember which transition each GPU is in (by the list its end callback will carry)."""
        for g in gpus:
            self._transition[g] = gpus

    def transition_survivors(self, gpus: list[int]) -> tuple[list[int], list[int]]:
        """Of GPUs whose transition ends now: those to settle (not failed since it began), and those of them whose
        job was stopped meanwhile (to be freed once settled)."""
        current = self._transition
        kept = [g for g in gpus if current[g] is gpus]
        orphans = [g for g in kept if self._orphan[g]]
        return kept, orphans

    def free_orphans(self, gpus: list[int]) -> None:
        cl = self.cluster
        for g in gpus:
            self._orphan[g] = 0
            if cl._st[g] == IDLE:
                cl.free_idle[g] = None
            elif cl._st[g] == OFF:
                cl.free_off[g] = None
            else:
                cl.free_sleep[g] = None
        if cl.on_pools_changed is not None:
            cl.on_pools_changed(gpus)

    # ------------------------------------------------------------------------------------ summary
    def summary(self) -> dict:
        """Counts for ``summary.json``: failures and downtime by kind, stopped jobs, renewable trips."""
        out: dict = {"on_failure": "requeue" if self.requeue else "lose"}
        for kind, ev in self.events.items():
            out[kind] = {"components": int(ev.n_components), "failures": int(ev.failures_per_component().sum()),
                         "downtime_s": float(ev.downtime_s().sum())}
        if self.trips is not None:
            out["renewable_trips"] = {"trips": int(self.trips.failures_per_component().sum()),
                                      "downtime_s": float(self.trips.downtime_s().sum())}
        out.update({k: int(v) for k, v in self.counts.items()})
        return out

