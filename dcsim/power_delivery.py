"""The power-delivery tree in a run: placement on nodes, the safety layer's limits, and per-element power.

Built by the core only when a scenario has ``facility.topology`` (docs/facility.md). It

- places a k-GPU job by the rule of :func:`dcsim.facility.topology.place_job` (one node if one has room, else one
  rack, ...), offering the idle GPUs first and all free GPUs (sleeping and off ones wake) only when the idle ones
  cannot hold the job; the free GPUs are kept per element as they change (:class:`~dcsim.facility.topology.FreeGpus`,
  resynchronised through the cluster's ``on_pools_changed`` hook), so a placement makes no pass over every GPU;
- enforces the tree's limits with :func:`dcsim.facility.safety.enforce_limits` on every market clearing
  (hierarchical, priority-aware capping: lowest job value first, then most deadline slack) and limits a job
  starting between rounds to the headroom left on every element above its GPUs;
- records the power through every element over every interval between events (the series a run writes as
  ``elements.csv``) and counts the interventions and the capped W·s per element.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import simpy

from dcsim.cluster import ACTIVE, Cluster
from dcsim.config import Scenario
from dcsim.facility.safety import enforce_limits
from dcsim.facility.topology import FreeGpus, PowerTree

if TYPE_CHECKING:
    from dcsim.dispatch import Dispatcher


class PowerDelivery:
    """The tree above the GPUs, its limits and what flowed through it.

    Args:
        scenario: The validated scenario (its ``facility.topology`` and ``facility.safety``).
        env: The SimPy environment.
        cluster: The GPUs (their draw, caps and free pools).
    """

    def __init__(self, scenario: Scenario, env: simpy.Environment, cluster: Cluster):
        self.env = env
        self.cluster = cluster
        self.tree: PowerTree = scenario.facility.topology.build(cluster.n_gpus)
        self.enforcing = scenario.facility.safety and bool(np.isfinite(self.tree.limit_w).any())
        self.jobs: Dispatcher | None = None  # wired by the core
        tree = self.tree
        self._node_of_gpu = np.full(cluster.n_gpus, -1, dtype=np.int64)
        # a GPU's node: its parent element when that element is a "node" (numbered among the nodes), else -1
        node_index = {e: i for i, e in enumerate(i for i, k in enumerate(tree.kinds) if k == "node")}
        for g, e in enumerate(tree.gpu_parent.tolist()):
            self._node_of_gpu[g] = node_index.get(e, -1)
        self._limit_w = tree.limit_w
        # power through every element as one reduceat over the members' CSR arrays (every element feeds a GPU,
        # so no row is empty): much cheaper per event than a scipy product
        members = tree.members.tocsr()
        members.sort_indices()
        self._gpu_idx = members.indices.astype(np.int64)
        self._row_ptr = members.indptr[:-1].astype(np.int64)
        # each GPU's ancestors, padded with a sentinel element E that has no limit (room +inf)
        levels, level = [], np.asarray(tree.gpu_parent, dtype=np.int64)
        while (level >= 0).any():  # one tree level per pass, all GPUs at once
            levels.append(level)
            level = np.where(level >= 0, tree.parent[np.maximum(level, 0)], -1)
        self._ancestors = np.full((cluster.n_gpus, max(1, len(levels))), tree.n_elements, dtype=np.int64)
        for d, level in enumerate(levels):
            self._ancestors[level >= 0, d] = level[level >= 0]
        # the same with only the elements that have a limit, left-packed (a start's headroom looks at these alone)
        has_limit = np.append(np.isfinite(tree.limit_w), False)[self._ancestors]
        packed = np.take_along_axis(self._ancestors, np.argsort(~has_limit, axis=1, kind="stable"), axis=1)
        self._limited_ancestors = np.where(np.sort(~has_limit, axis=1), tree.n_elements, packed)[
            :, :max(1, int(has_limit.sum(axis=1).max(initial=0)))]
        self._row_end = members.indptr[1:].astype(np.int64)
        self._level_starts = self._contiguous_levels(tree)
        # the element series: (start of an interval, power through every element over it)
        self._last_t = 0.0
        self._last_w: np.ndarray | None = None
        self.series_t: list[float] = []
        self.series_w: list[np.ndarray] = []
        # the full series is kept on the allocation snapshots' rule (outputs.allocations; null: up to 1024 GPUs),
        # since it holds a row of every element per event; the peak per element is always kept
        keep = scenario.outputs.allocations
        self.keep_series = bool(keep or (keep is None and cluster.n_gpus <= 1024))
        self.peak_w = np.zeros(tree.n_elements)
        # interventions
        self.capped_ws = np.zeros(tree.n_elements)  # W·s removed at each element
        self._capped_w_now = np.zeros(tree.n_elements)  # W removed at the last clearing, held until the next
        self._capped_since = 0.0
        self.counts = {"safety_calls": 0, "safety_interventions": 0, "overrides": 0, "paused_gpus": 0,
                       "shortfall_w_max": 0.0}
        # the free pools per element: the idle ones, and all free ones (idle, sleeping, off)
        self.free_idle = FreeGpus(tree, cluster.free_idle)
        self.free_any = FreeGpus(tree, [*cluster.free_idle, *cluster.free_sleep, *cluster.free_off])

    # ------------------------------------------------------------------------------------ placement
    def place(self, k: int) -> list[int] | None:
        """``k`` free GPUs for a job (idle ones if they can hold it, else any free), removed from the free pools;
        None when fewer than ``k`` are free."""
        cl = self.cluster
        if len(cl.free_idle) >= k:
            chosen = self.free_idle.place(k)
        else:
            chosen = self.free_any.place(k)
            if chosen is None:
                return None
        taken = chosen.tolist()
        for g in taken:
            for pool in (cl.free_idle, cl.free_sleep, cl.free_off):
                if g in pool:
                    del pool[g]
                    break
        self.pools_changed(taken)
        return taken

    def pools_changed(self, gpus: list[int]) -> None:
        """The cluster's ``on_pools_changed`` hook: ``gpus`` may have joined, left or moved between the free pools;
        bring the per-element free counts in line with the pools."""
        cl = self.cluster
        idle, sleep, off = cl.free_idle, cl.free_sleep, cl.free_off
        free_idle, free_any = self.free_idle, self.free_any
        for g in gpus:
            if g in idle:
                free_idle.add(g)
                free_any.add(g)
            else:
                free_idle.discard(g)
                if g in sleep or g in off:
                    free_any.add(g)
                else:
                    free_any.discard(g)

    def node_of_gpu(self, g: int) -> int:
        """The node GPU ``g`` is under (-1 when it is not under a node)."""
        return int(self._node_of_gpu[g])

    # ------------------------------------------------------------------------------------ the safety layer
    def limit_current(self) -> np.ndarray:
        """After a change no policy decided (a GPU starts waking or booting): the running jobs' allocations
        (per GPU, above idle, W), capped again if some element is now over its limit."""
        cl = self.cluster
        if not np.any(self.through_w() > self._limit_w):
            return cl.alloc_w
        return self.limit_clearing(cl.alloc_w.copy(), cl.state == ACTIVE, between_rounds=True)

    def limit_clearing(self, alloc_w: np.ndarray, active: np.ndarray, between_rounds: bool = False) -> np.ndarray:
        """The clearing's per-GPU allocation above idle (W), capped so that no element exceeds its limit.

        The per-GPU power each running job would draw is what :meth:`Dispatcher.apply_allocations` would give
        it (its GPUs' minimum, paused below the board's minimum cap); GPUs not running draw what they draw now.
        """
        self._book_capped()
        if not self.enforcing:
            return alloc_w
        if not between_rounds:
            self._capped_w_now = np.zeros(self.tree.n_elements)
        cl, jobs = self.cluster, self.jobs
        n = cl.n_gpus
        request = cl.power_w.copy()
        floor = request.copy()
        paused_w = request.copy()
        value = np.zeros(n)
        slack = np.full(n, np.inf)
        owners = cl.assigned[active]
        if owners.size:
            running = np.unique(owners)
            job_alloc = np.full(jobs.status.size, np.inf)
            np.minimum.at(job_alloc, owners, alloc_w[active])
            a = job_alloc[owners]
            a = np.where(cl.below_min_cap(a) | (a <= 0), 0.0, np.minimum(a, cl.span_w))
            request[active] = cl.idle_w + a
            floor[active] = np.where(a > 0, cl.min_cap_w, cl.idle_w)
            paused_w[active] = cl.idle_w
            value[active] = jobs.value_tokens[owners] / jobs.job_gpus_n[owners]
            left = jobs.remaining_now(running)
            slack_job = np.full(jobs.status.size, np.inf)
            slack_job[running] = jobs.deadline_s[running] - self.env.now - left
            slack[active] = slack_job[owners]
        floor = np.minimum(floor, request)
        res = enforce_limits(self.tree, request, floor, paused_w, value, slack)
        self.counts["safety_calls"] += 1
        self._capped_w_now = self._capped_w_now + res.capped_w  # held until the next clearing
        if res.overrides:
            self.counts["safety_interventions"] += res.interventions
            self.counts["overrides"] += res.overrides
            self.counts["paused_gpus"] += int(np.count_nonzero(res.paused & active))
            self.counts["shortfall_w_max"] = max(self.counts["shortfall_w_max"], float(res.shortfall_w.max()))
            cut = res.cap_w < request
            alloc_w = alloc_w.copy()
            alloc_w[cut & active] = np.where(res.paused[cut & active], 0.0, res.cap_w[cut & active] - cl.idle_w)
        return alloc_w

    def start_headroom_w(self, gpus: list[int]) -> float:
        """Most power above idle each GPU of a job starting now may get without an element above it going over."""
        if not self.enforcing:
            return math.inf
        n_el = self.tree.n_elements
        if len(gpus) == 1:
            above = self._limited_ancestors[gpus[0]]
            above = above[above < n_el]
            per_element = 1
        else:  # the elements above and how many of the job's GPUs each feeds
            above, per_element = np.unique(self._limited_ancestors[gpus], return_counts=True)
            keep = above < n_el
            above, per_element = above[keep], per_element[keep]
        if not above.size:
            return math.inf  # no element above the job has a limit
        room = (self._limit_w[above] - self._through_of(above)) / per_element
        return max(0.0, float(room.min()))

    def _through_of(self, elements: np.ndarray) -> np.ndarray:
        """Power through ``elements`` now, W, summing their GPUs only; each element's sum is the reduceat segment
        :meth:`through_w` has for it, so the values are the same to the last bit."""
        lo, hi = self._row_ptr[elements].tolist(), self._row_end[elements].tolist()
        gpu_idx, power_w = self._gpu_idx, self.cluster.power_w
        if len(lo) == 1:
            return np.add.reduceat(power_w[gpu_idx[lo[0]:hi[0]]], [0])
        sizes = np.subtract(hi, lo)
        start = np.zeros(len(lo), dtype=np.int64)
        np.cumsum(sizes[:-1], out=start[1:])
        return np.add.reduceat(power_w[np.concatenate([gpu_idx[a:b] for a, b in zip(lo, hi)])], start)

    def through_w(self) -> np.ndarray:
        """Power through every element now, W."""
        if self._level_starts is not None:  # no gather: each level's segments are consecutive runs of GPUs
            power_w = self.cluster.power_w
            return np.concatenate([np.add.reduceat(power_w, starts) for starts in self._level_starts])
        return np.add.reduceat(self.cluster.power_w[self._gpu_idx], self._row_ptr)

    def _contiguous_levels(self, tree: PowerTree) -> list[np.ndarray] | None:
        """For a regular tree whose every element feeds a run of consecutive GPUs and whose levels, in element
        order, tile the GPUs 0 … n−1: each level's first GPUs (reduceat over the GPU power itself then sums the
        same segments as over the gathered members, to the bit); else None (sums go through the gather)."""
        if not tree.level_offset or tree.n_gpus == 0:
            return None
        size = self._row_end - self._row_ptr
        if (size == 0).any():
            return None
        first = self._gpu_idx[self._row_ptr]
        # every row is a run: its last GPU is its first + size − 1 (rows are sorted and hold distinct GPUs)
        if not np.array_equal(self._gpu_idx[self._row_end - 1], first + size - 1):
            return None
        bounds = sorted(tree.level_offset.values()) + [tree.n_elements]
        levels = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            starts = first[lo:hi]
            if starts[0] != 0 or not np.array_equal(starts[1:], starts[:-1] + size[lo:hi - 1]) \
                    or starts[-1] + size[hi - 1] != tree.n_gpus:
                return None
            levels.append(starts)
        return levels

    # ------------------------------------------------------------------------------------ the series
    def observe(self) -> None:
        """Called at every event before anything changes: the cluster's draw held since the previous event."""
        now = self.env.now
        if now == self._last_t:
            return  # an empty interval: same-instant events
        p = self.through_w()
        np.maximum(self.peak_w, p, out=self.peak_w)
        if self.keep_series and (self._last_w is None or not np.array_equal(p, self._last_w)):
            self.series_t.append(self._last_t)
            self.series_w.append(p)
            self._last_w = p
        self._last_t = now

    def _book_capped(self) -> None:
        now = self.env.now
        self.capped_ws += self._capped_w_now * (now - self._capped_since)
        self._capped_since = now

    def close(self) -> None:
        """At the horizon: book the last interval's capped power and the last power row."""
        self._book_capped()
        self._capped_w_now = np.zeros_like(self._capped_w_now)

    def element_table(self) -> pd.DataFrame | None:
        """Power through every element (W, one column per element) from each row's ``time_s`` to the next row's;
        None when the series is not kept."""
        if not self.keep_series:
            return None
        tree = self.tree
        data = np.stack(self.series_w) if self.series_w else np.zeros((0, tree.n_elements))
        df = pd.DataFrame(data, columns=list(tree.names))
        df.insert(0, "time_s", self.series_t)
        return df

    def summary(self) -> dict:
        """Counts for ``summary.json``: interventions, overrides and capped W·s per element kind and element."""
        tree = self.tree
        kinds = np.asarray(tree.kinds)
        by_kind = {k: float(self.capped_ws[kinds == k].sum()) for k in dict.fromkeys(tree.kinds)}
        by_element = {name: float(w) for name, w in zip(tree.names, self.capped_ws) if w > 0}
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(np.isfinite(tree.limit_w), self.peak_w / tree.limit_w, np.nan)
        return {
            "elements": int(tree.n_elements),
            "safety": bool(self.enforcing),
            **{k: (float(v) if isinstance(v, float) else int(v)) for k, v in self.counts.items()},
            "capped_ws_by_kind": by_kind,
            "capped_ws_by_element": by_element,
            "peak_over_limit_ratio_max": float(np.nanmax(ratio)) if np.isfinite(ratio).any() else None,
        }
