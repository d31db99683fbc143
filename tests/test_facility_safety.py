"""Tests for dcsim.facility.safety: hand-worked capping cases and properties over random trees and requests."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from dcsim.facility.safety import enforce_limits, priority_rank
from dcsim.facility.topology import PowerTree, regular_tree, tree_from_graph

INF = np.inf


def _run(tree: PowerTree, request, min_w, paused_w, value=None, slack=None):
    n = tree.n_gpus
    value = np.arange(n, dtype=float) if value is None else np.asarray(value, float)
    slack = np.full(n, INF) if slack is None else np.asarray(slack, float)
    return enforce_limits(tree, np.asarray(request, float), np.broadcast_to(np.asarray(min_w, float), (n,)),
                          np.broadcast_to(np.asarray(paused_w, float), (n,)), value, slack)


# --------------------------------------------------------------------------------------------- by hand
def test_within_limits_nothing_changes() -> None:
    t = regular_tree(4, 2, 2, 1, 1, limits_w={"node": 1400.0, "rack": 2800.0})
    r = _run(t, [700.0] * 4, 200.0, 80.0)
    assert r.cap_w.tolist() == [700.0] * 4 and not r.paused.any()
    assert r.overrides == 0 and r.interventions == 0 and r.capped_w.sum() == 0.0


def test_node_limit_caps_lowest_value_first() -> None:
    # One node, 4 GPUs asking 700 W, limit 2000 W: 800 W must go. Lowest value (GPU 2) gives up to 500 W
    # (700 → 200 = its min), then the next (GPU 0) the remaining 300 W (700 → 400).
    t = regular_tree(4, 4, 1, 1, 1, limits_w={"node": 2000.0})
    r = _run(t, [700.0] * 4, 200.0, 80.0, value=[2.0, 5.0, 1.0, 9.0])
    assert r.cap_w.tolist() == [400.0, 700.0, 200.0, 700.0]
    assert r.capped_w[0] == 800.0 and r.element_power_w[0] == 2000.0
    assert r.overrides == 2 and r.interventions == 1 and not r.paused.any()


def test_equal_value_most_slack_capped_first() -> None:
    t = regular_tree(3, 3, 1, 1, 1, limits_w={"node": 1800.0})
    r = _run(t, [700.0] * 3, 200.0, 80.0, value=[1.0, 1.0, 1.0], slack=[50.0, INF, 10.0])
    assert r.cap_w.tolist() == [700.0, 400.0, 700.0]  # GPU 1 (no deadline) first
    assert priority_rank(np.ones(3), np.array([50.0, INF, 10.0])).tolist() == [1, 0, 2]


def test_hierarchy_rack_cuts_after_nodes() -> None:
    # Rack of 2 nodes × 2 GPUs, all asking 700 W, min 200 W. node0's 1000 W limit (node1 has none) takes
    # 400 W off GPU 0, the lowest value in node0 (700 → 300 W). The rack then draws 1000 + 1400 = 2400 W
    # against 2200 W: 200 W more go in value order, GPU 0 down to its min (100 W), then GPU 1 (100 W).
    t = regular_tree(4, 2, 2, 1, 1, limits_w={"node": 1000.0, "rack": 2200.0})
    t_node0_only = t.limit_w.copy()
    t_node0_only[1] = INF  # node1 has no binding limit (it asks 1400 W)
    t = PowerTree(t.names, t.kinds, t_node0_only, t.parent, t.gpu_parent)
    r = _run(t, [700.0] * 4, 200.0, 80.0, value=[0.0, 1.0, 2.0, 3.0])
    assert r.cap_w.tolist() == [200.0, 600.0, 700.0, 700.0]
    names = list(t.names)
    assert r.capped_w[names.index("node0")] == 400.0 and r.capped_w[names.index("rack0")] == 200.0
    assert r.element_power_w[names.index("rack0")] == 2200.0
    assert r.interventions == 2 and r.overrides == 2


def test_pause_when_min_power_does_not_fit() -> None:
    # Node limit 300 W, two GPUs with min cap 200 W: even at min they draw 400 W. GPU 0 (lowest value) pauses
    # (draws 80 W idle), freeing 120 W: 280 W, so 20 W go back to GPU 1, which runs at 220 W.
    t = regular_tree(2, 2, 1, 1, 1, limits_w={"node": 300.0})
    r = _run(t, [700.0, 700.0], 200.0, 80.0, value=[0.0, 1.0])
    assert r.cap_w.tolist() == [80.0, 220.0] and r.paused.tolist() == [True, False]
    assert r.capped_w[0] == 1100.0 and r.element_power_w[0] == 300.0 and r.feasible


def test_infeasible_reports_the_shortfall() -> None:
    # Paused power alone (2 × 80 W) exceeds the 150 W limit: everything pauses, 10 W over is reported.
    t = regular_tree(2, 2, 1, 1, 1, limits_w={"node": 150.0})
    r = _run(t, [700.0, 700.0], 200.0, 80.0)
    assert r.paused.all() and r.cap_w.tolist() == [80.0, 80.0]
    assert r.shortfall_w[0] == pytest.approx(10.0) and not r.feasible
    with pytest.raises(ValueError, match="below the idle power"):  # the up-front check rejects such a tree
        t.check_limits(80.0)


def test_idle_gpus_are_not_capped() -> None:
    # An idle GPU gives its draw as request, min and paused power: only the running one can give way.
    t = regular_tree(2, 2, 1, 1, 1, limits_w={"node": 500.0})
    r = enforce_limits(t, np.array([80.0, 700.0]), np.array([80.0, 200.0]), np.array([80.0, 80.0]),
                       value=np.array([0.0, 10.0]), slack_s=np.full(2, INF))
    assert r.cap_w.tolist() == [80.0, 420.0]


@pytest.mark.parametrize("field, arrays, message", [
    ("shape", dict(request_w=np.ones(3)), r"request_w must have shape \(2,\)"),
    ("order", dict(min_w=np.array([300.0, 100.0])), r"GPU 0: request_w = 200, min_w = 300.*min_w <= request_w"),
    ("paused", dict(paused_w=np.array([10.0, 150.0])), r"GPU 1: .*paused_w <= min_w"),
    ("nan", dict(value=np.array([0.0, np.nan])), r"value\[1\] = nan; expected a finite number"),
    ("slack", dict(slack_s=np.array([np.nan, 1.0])), r"slack_s\[0\] is NaN"),
])
def test_input_errors_name_the_gpu(field, arrays, message) -> None:
    t = regular_tree(2, 2, 1, 1, 1)
    kw = dict(request_w=np.full(2, 200.0), min_w=np.full(2, 100.0), paused_w=np.full(2, 50.0),
              value=np.zeros(2), slack_s=np.full(2, INF)) | arrays
    with pytest.raises(ValueError, match=message):
        enforce_limits(t, **kw)


# --------------------------------------------------------------------------------------------- properties
@st.composite
def _cases(draw):
    """A random tree (elements nest by index), requests, floors, priorities and limits above the paused power."""
    n = draw(st.integers(1, 12))
    n_el = draw(st.integers(1, 7))
    parent = [draw(st.integers(-1, e - 1)) for e in range(n_el)]
    gpu_parent = draw(st.lists(st.integers(0, n_el - 1), min_size=n, max_size=n))
    g = nx.DiGraph()
    for e in range(n_el):
        g.add_node(f"e{e}", kind="element")
        if parent[e] >= 0:
            g.add_edge(f"e{parent[e]}", f"e{e}")
    for i, p in enumerate(gpu_parent):
        g.add_node(i, kind="gpu", gpu=i)
        g.add_edge(f"e{p}", i)
    g.remove_nodes_from([v for v in list(g) if g.nodes[v]["kind"] == "element" and
                         not any(g.nodes[d]["kind"] == "gpu" for d in nx.descendants(g, v))])
    floats = st.floats(0, 1, allow_nan=False)
    paused_w = np.array([draw(st.floats(0, 100)) for _ in range(n)])
    min_w = paused_w + np.array([draw(st.floats(0, 200)) for _ in range(n)])
    request_w = min_w + np.array([draw(st.floats(0, 600)) for _ in range(n)])
    for v in g:
        if g.nodes[v]["kind"] == "element" and draw(st.booleans()):
            below = [d for d in nx.descendants(g, v) if g.nodes[d]["kind"] == "gpu"]
            floor = paused_w[below].sum()
            g.nodes[v]["limit_w"] = floor + draw(floats) * 1.3 * (request_w[below].sum() - floor) + 1e-3
    tree = tree_from_graph(g, n)
    value = np.array([draw(st.integers(0, 3)) for _ in range(n)], dtype=float)
    slack = np.array([draw(st.sampled_from([0.0, 10.0, INF])) for _ in range(n)])
    return tree, request_w, min_w, paused_w, value, slack


def _laminar_bound(tree: PowerTree, request_w: np.ndarray) -> float:
    """Least total power any feasible answer removes: f(e) = max(excess_e, Σ f(children)), summed over roots."""
    excess = np.maximum(tree.element_power_w(request_w) - tree.limit_w, 0.0)

    def f(e: int) -> float:
        kids = np.flatnonzero(tree.parent == e)
        return max(excess[e], sum(f(int(c)) for c in kids))

    return sum(f(int(r)) for r in tree.roots())


@settings(max_examples=400, deadline=None)
@given(_cases())
def test_no_element_over_its_limit_and_caps_are_minimal(case) -> None:
    tree, request_w, min_w, paused_w, value, slack = case
    r = enforce_limits(tree, request_w, min_w, paused_w, value, slack)
    event("paused" if r.paused.any() else "capped" if r.overrides else "untouched")
    tol = 1e-9 * max(1.0, request_w.sum())
    power = tree.element_power_w(r.cap_w)
    assert r.feasible  # limits are above the paused power by construction
    assert np.all(power <= tree.limit_w + tol)
    assert np.all(r.cap_w <= request_w + tol)
    assert np.all((r.cap_w >= min_w - tol) | r.paused)
    np.testing.assert_allclose(r.cap_w[r.paused], paused_w[r.paused], atol=tol)
    np.testing.assert_allclose(r.capped_w.sum(), (request_w - r.cap_w).sum(), atol=tol)
    if r.paused.any():  # pausing only below an element whose GPUs cannot all fit even at their min power
        infeasible_at_min = tree.element_power_w(min_w) > tree.limit_w
        for g in np.flatnonzero(r.paused):
            ancestors = tree.members[:, g].nonzero()[0]
            assert infeasible_at_min[ancestors].any()
        return
    if np.all(tree.element_power_w(request_w) <= tree.limit_w):
        assert np.array_equal(r.cap_w, request_w) and r.interventions == 0
    # Minimal: exactly the least total cut, and a capped GPU always has an ancestor sitting at its limit.
    assert (request_w - r.cap_w).sum() == pytest.approx(_laminar_bound(tree, request_w), abs=tol)
    at_limit = power >= tree.limit_w - tol
    for g in np.flatnonzero(r.cap_w < request_w - tol):
        assert at_limit[tree.members[:, g].nonzero()[0]].any()


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 30), st.integers(1, 4), st.integers(1, 3), st.data())
def test_regular_tree_property(n, per_node, per_rack, data) -> None:
    t = regular_tree(n, per_node, per_rack, 2, 1, limits_w={
        "node": data.draw(st.sampled_from([None, 1200.0, 2500.0])),
        "rack": data.draw(st.sampled_from([None, 2000.0, 6000.0])),
        "feed": data.draw(st.sampled_from([None, 8000.0, 20000.0]))})
    request = np.array(data.draw(st.lists(st.sampled_from([80.0, 300.0, 700.0]), min_size=n, max_size=n)))
    running = request > 80.0
    min_w = np.where(running, 200.0, request)
    r = enforce_limits(t, request, min_w, np.full(n, 80.0) * running + request * ~running,
                       value=np.arange(n, dtype=float), slack_s=np.full(n, INF))
    tol = 1e-9 * request.sum()
    assert np.all(t.element_power_w(r.cap_w) <= t.limit_w + tol) or not r.feasible
    assert not (r.cap_w[~running] != request[~running]).any()  # idle GPUs untouched


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0.0, 5.0, INF])), min_size=1, max_size=40))
def test_priority_rank_matches_a_plain_sort(rows) -> None:
    value = np.array([v for v, _ in rows], dtype=float)
    slack = np.array([s for _, s in rows])
    expected = sorted(range(len(rows)), key=lambda i: (value[i], -slack[i], i))
    assert np.argsort(priority_rank(value, slack)).tolist() == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(200, 700), st.integers(0, 5)), min_size=1, max_size=20), st.floats(0, 1))
def test_one_element_matches_a_plain_greedy(rows, frac) -> None:
    # A single node: the cut must equal cutting GPUs one by one in priority order, each to its min.
    request = np.array([r for r, _ in rows])
    value = np.array([v for _, v in rows], dtype=float)
    n = request.size
    limit = 200.0 * n + frac * (request.sum() - 200.0 * n) + 1e-6
    t = regular_tree(n, n, 1, 1, 1, limits_w={"node": limit})
    r = enforce_limits(t, request, np.full(n, 200.0), np.full(n, 80.0), value, np.full(n, INF))
    want = request.copy()
    excess = request.sum() - limit
    for i in sorted(range(n), key=lambda i: (value[i], i)):
        if excess <= 0:
            break
        cut = min(excess, want[i] - 200.0)
        want[i] -= cut
        excess -= cut
    np.testing.assert_allclose(r.cap_w, want, atol=1e-6)
