"""Incremental placement against the rule it replaced: per-element free counts kept as the pools change must give
exactly the placements (and so the jobs.csv) of the old rule, which built the free mask and summed it over the
tree at every start.

The old code is kept here, verbatim apart from names, as the slow reference: ``_reference_place_job`` (mask →
``members @ free`` → lexsort), ``_reference_take``, the old ``PowerDelivery.place`` (a mask from the pools per
start), the old ``PowerDelivery.start_headroom_w`` (every ancestor, the power through every element) and the old
``PowerDelivery.through_w`` (the members' GPUs gathered, then summed). The
checks: on random trees and random changes to the free set, the counts equal ``members @ mask`` and the choice
equals the reference's; in runs on random trees, policies that sleep and switch off GPUs, and failures that take
GPUs out and bring them back, every placement, start headroom and element sum equals the reference's at that
instant, and a run with the reference code writes the same job table, element series, facility counts and
energy books.
"""
from __future__ import annotations

import math
import tempfile
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import constant_supply, scenario, simulate
from dcsim.facility.topology import FreeGpus, PowerTree, place_job, regular_tree, tree_from_graph
from dcsim.policy import load_policy
from dcsim.power_delivery import PowerDelivery
from dcsim.seeding import Streams
from dcsim.workload import build_jobs


# ------------------------------------------------------------------------- the old rule (the slow reference)
def _reference_place_job(tree: PowerTree, free: np.ndarray, k: int) -> np.ndarray | None:
    free = np.asarray(free, dtype=bool)
    if int(free.sum()) < k:
        return None
    free_per = np.rint(tree.members @ free.astype(float)).astype(np.int64)
    fits = np.flatnonzero(free_per >= k)
    if fits.size:
        best = fits[np.lexsort((fits, free_per[fits], tree.height[fits]))[0]]
        taken = _reference_take(tree, free, free_per, tree.children(int(best)), k)
    else:
        orphan_gpus = np.flatnonzero(tree.gpu_parent < 0)
        taken = _reference_take(tree, free, free_per, (tree.roots(), orphan_gpus), k)
    return np.sort(np.asarray(taken, dtype=np.int64))


def _reference_take(tree, free, free_per, children, k) -> list[int]:
    elements, gpus = children
    unit_free = np.concatenate([free_per[elements], np.ones(int(free[gpus].sum()), dtype=np.int64)])
    unit_id = np.concatenate([elements, -1 - gpus[free[gpus]]])
    alive = unit_free > 0
    taken: list[int] = []
    while k > 0:
        idx = np.flatnonzero(alive)
        fit = idx[unit_free[idx] >= k]
        if fit.size:
            u = fit[np.lexsort((fit, unit_free[fit]))[0]]
            need = k
        else:
            u = idx[np.lexsort((idx, -unit_free[idx]))[0]]
            need = int(unit_free[u])
        alive[u] = False
        uid = int(unit_id[u])
        if uid < 0:
            taken.append(-1 - uid)
        elif need == free_per[uid]:
            row = tree.members.indices[tree.members.indptr[uid]:tree.members.indptr[uid + 1]]
            taken.extend(row[free[row]].tolist())
        else:
            taken.extend(_reference_take(tree, free, free_per, tree.children(uid), need))
        k -= need
    return taken


def _reference_choice(power: PowerDelivery, k: int) -> list[int] | None:
    """The old ``PowerDelivery.place`` without its side effects: a mask from the pools, idle ones first."""
    cl = power.cluster
    free = np.zeros(cl.n_gpus, dtype=bool)
    if len(cl.free_idle) >= k:
        free[list(cl.free_idle)] = True
        chosen = _reference_place_job(power.tree, free, k)
    else:
        chosen = None
    if chosen is None:
        for pool in (cl.free_idle, cl.free_sleep, cl.free_off):
            if pool:
                free[list(pool)] = True
        chosen = _reference_place_job(power.tree, free, k)
    return None if chosen is None else chosen.tolist()


def _reference_place(power: PowerDelivery, k: int) -> list[int] | None:
    """The old ``PowerDelivery.place``: the reference choice, taken out of the pools."""
    taken = _reference_choice(power, k)
    if taken is None:
        return None
    cl = power.cluster
    for g in taken:
        for pool in (cl.free_idle, cl.free_sleep, cl.free_off):
            if g in pool:
                del pool[g]
                break
    return taken


def _reference_through_w(power: PowerDelivery) -> np.ndarray:
    """The old ``PowerDelivery.through_w``: the members' GPUs gathered, one reduceat."""
    return np.add.reduceat(power.cluster.power_w[power._gpu_idx], power._row_ptr)


def _reference_headroom_w(power: PowerDelivery, gpus: list[int]) -> float:
    """The old ``PowerDelivery.start_headroom_w``: every ancestor, the power through every element."""
    if not power.enforcing:
        return math.inf
    above, per_element = np.unique(power._ancestors[gpus], return_counts=True)
    keep = above < power.tree.n_elements
    above, per_element = above[keep], per_element[keep]
    if not above.size:
        return math.inf
    room = (power.tree.limit_w[above] - _reference_through_w(power)[above]) / per_element
    return max(0.0, float(room.min()))


# ------------------------------------------------------------------------- random trees
@st.composite
def graph_trees(draw, max_gpus: int = 24, orphans: bool = False) -> PowerTree:
    """A random tree: elements with random parents (roots allowed), every leaf element feeding >= 1 GPU, the other
    GPUs under random elements (and, with ``orphans``, some under no element at all)."""
    n_el = draw(st.integers(1, 10))
    parent = [-1] + [draw(st.integers(-1, i - 1)) for i in range(1, n_el)]
    leaves = [e for e in range(n_el) if e not in parent]
    n = draw(st.integers(len(leaves), max(len(leaves), max_gpus)))
    gpu_parent = list(leaves) + [draw(st.integers(-1 if orphans else 0, n_el - 1)) for _ in range(n - len(leaves))]
    gpu_parent = draw(st.permutations(gpu_parent))
    names = [f"e{i}" for i in range(n_el)]
    return PowerTree(names, ["element"] * n_el, np.full(n_el, np.inf), np.array(parent), np.array(gpu_parent))


@st.composite
def regular_trees(draw) -> PowerTree:
    n = draw(st.integers(1, 40))
    return regular_tree(n, draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 3)),
                        draw(st.integers(1, 2)))


@settings(max_examples=200, deadline=None)
@given(st.one_of(regular_trees(), graph_trees(orphans=True)), st.data())
def test_counts_follow_the_changes_and_placement_matches_the_old_rule(tree, data) -> None:
    n = tree.n_gpus
    start = data.draw(st.lists(st.integers(0, n - 1), max_size=n))
    free = FreeGpus(tree, start)
    for _ in range(data.draw(st.integers(1, 30))):
        g = data.draw(st.integers(0, n - 1))
        if data.draw(st.booleans()):
            free.add(g)
        else:
            free.discard(g)
        mask = free.mask.copy()
        assert free.count == int(mask.sum())
        np.testing.assert_array_equal(free.per_element, np.rint(tree.members @ mask.astype(float)).astype(np.int64))
        k = data.draw(st.integers(1, n))
        want = _reference_place_job(tree, mask, k)
        for got in (free.place(k), place_job(tree, mask, k)):
            if want is None:
                assert got is None
            else:
                assert got.tolist() == want.tolist()
        np.testing.assert_array_equal(free.mask, mask)  # placing chooses; it does not take


def test_free_gpus_add_and_discard_are_idempotent() -> None:
    t = regular_tree(6, 2, 2, 1, 1)  # nodes {0,1} {2,3} {4,5}; racks {0-3} {4,5}; a PDU and a feed per rack
    free = FreeGpus(t, [0, 0, 3])
    free.add(3)
    free.discard(5)
    assert free.count == 2
    assert dict(zip(t.names, free.per_element.tolist())) == {
        "node0": 1, "node1": 1, "node2": 0, "rack0": 2, "rack1": 0, "pdu0": 2, "pdu1": 0, "feed0": 2, "feed1": 0}
    with pytest.raises(ValueError, match="k must be a whole number >= 1, got 0"):
        free.place(0)
    assert free.place(3) is None


# ------------------------------------------------------------------------- in runs
POLICIES = ["always_on", "race_to_idle", "renewable_follower"]


@st.composite
def runs(draw):
    """A small busy scenario with a tree (regular with limits, or a random GraphML graph), a policy, an initial
    state and, half the time, failures (GPU and, on regular trees, node failures and a rack outage)."""
    gpus = draw(st.integers(2, 24))
    graph = None
    if draw(st.booleans()):
        per_node = draw(st.integers(1, 4))
        topology = {"gpus_per_node": per_node, "nodes_per_rack": draw(st.integers(1, 3)),
                    "racks_per_pdu": draw(st.integers(1, 2)), "pdus_per_feed": draw(st.integers(1, 2)),
                    "limits": {"rack_w": draw(st.sampled_from([None, 2500.0, 6000.0]))}}
    else:  # a random tree as GraphML; some elements limited to 200-600 W per GPU they feed
        tree = draw(graph_trees(max_gpus=gpus))
        gpus = tree.n_gpus
        graph = nx.DiGraph()
        for e, (name, size) in enumerate(zip(tree.names, tree.size.tolist())):
            per_gpu_w = draw(st.sampled_from([None, 200.0, 600.0]))
            graph.add_node(name, kind="element", **({} if per_gpu_w is None else {"limit_w": per_gpu_w * size}))
            if tree.parent[e] >= 0:
                graph.add_edge(tree.names[tree.parent[e]], name)
        for g, e in enumerate(tree.gpu_parent.tolist()):
            graph.add_node(f"gpu{g}", kind="gpu", gpu=g)
            graph.add_edge(tree.names[e], f"gpu{g}")
        topology = {}
    facility = {"topology": topology}
    if draw(st.booleans()):
        facility["failures"] = {"gpu": {"mtbf_s": draw(st.sampled_from([900, 3000])), "mttr_s": 300},
                                "on_failure": draw(st.sampled_from(["requeue", "lose"]))}
        if graph is None:
            facility["failures"]["node"] = {"mtbf_s": 2400, "mttr_s": 200}
            facility["failures"]["scheduled"] = [{"element": "rack0", "start_s": 600, "duration_s": 600}]
    data = {
        "seed": draw(st.integers(0, 10_000)), "horizon_s": 3600,
        "cluster": {"gpus": gpus, "initial_state": draw(st.sampled_from(["idle", "sleep", "off"]))},
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": draw(st.sampled_from([0.01, 0.04]))},
                     "gpus_per_job": {"values": [1, 2, 3, 5], "weights": [0.4, 0.3, 0.2, 0.1]},
                     "duration_s": {"distribution": "exponential", "mean": 300}, "value_tokens_per_gpu_s": 0.001},
        "market": {"interval_s": 300},
        "policy": {"name": draw(st.sampled_from(POLICIES))},
        "facility": facility,
    }
    return data, graph


def _run(data: dict, graph: nx.DiGraph | None, reference: bool):
    """Run the scenario; ``reference``: with the old placement, start headroom and element sums in place of the
    new ones; else the new ones, each checked against the reference at every call. Returns the result."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        if graph is not None:
            path = Path(tmp) / "tree.graphml"
            nx.write_graphml(graph, path)
            data["facility"]["topology"] = {"graphml": str(path)}
        sc = scenario(**data)
        if reference:
            stack.enter_context(mock.patch.object(PowerDelivery, "place", _reference_place))
            stack.enter_context(mock.patch.object(PowerDelivery, "start_headroom_w", _reference_headroom_w))
            stack.enter_context(mock.patch.object(PowerDelivery, "through_w", _reference_through_w))
        else:
            place, headroom, through = PowerDelivery.place, PowerDelivery.start_headroom_w, PowerDelivery.through_w

            def checked_place(self, k):
                want = _reference_choice(self, k)
                for pool in (self.free_idle, self.free_any):  # the counts agree with the pools before the choice
                    np.testing.assert_array_equal(pool.per_element, np.rint(
                        self.tree.members @ pool.mask.astype(float)).astype(np.int64))
                got = place(self, k)
                assert got == want
                return got

            def checked_headroom(self, gpus):
                got = headroom(self, gpus)
                assert got == _reference_headroom_w(self, gpus)  # the same float, not only close
                return got

            def checked_through(self):
                got = through(self)
                np.testing.assert_array_equal(got, _reference_through_w(self))  # to the bit
                return got

            stack.enter_context(mock.patch.object(PowerDelivery, "place", checked_place))
            stack.enter_context(mock.patch.object(PowerDelivery, "start_headroom_w", checked_headroom))
            stack.enter_context(mock.patch.object(PowerDelivery, "through_w", checked_through))
        jobs = build_jobs(sc, Streams(sc.seed))
        return simulate(sc, jobs, policy=load_policy(sc.policy.name), supply=constant_supply(renewable_w=2000.0))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs())
def test_runs_place_jobs_exactly_as_the_old_rule(case) -> None:
    data, graph = case
    new = _run({**data, "facility": {**data["facility"]}}, graph, reference=False)
    old = _run({**data, "facility": {**data["facility"]}}, graph, reference=True)
    pd.testing.assert_frame_equal(new.jobs, old.jobs, check_exact=True)
    if old.elements is None:
        assert new.elements is None
    else:
        pd.testing.assert_frame_equal(new.elements, old.elements, check_exact=True)
    assert new.facility == old.facility and new.energy == old.energy
