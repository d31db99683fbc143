"""Tests for dcsim.facility.topology: building and checking power trees, vectorised sums, and job placement."""
from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcsim.errors import TraceError
from dcsim.facility.topology import (
    REGULAR_LEVELS,
    PowerTree,
    place_job,
    read_graphml_tree,
    regular_tree,
    tree_from_graph,
)


def _chain_graph(n_gpus: int = 2) -> nx.DiGraph:
    """feed → rack → node → GPUs, the smallest real tree."""
    g = nx.DiGraph()
    g.add_node("feed", kind="feed", limit_w=5000.0)
    g.add_node("rack", kind="rack")
    g.add_node("node", kind="node", limit_w=1500.0)
    g.add_edges_from([("feed", "rack"), ("rack", "node")])
    for i in range(n_gpus):
        g.add_node(f"g{i}", kind="gpu", gpu=i)
        g.add_edge("node", f"g{i}")
    return g


# --------------------------------------------------------------------------------------------- building
def test_regular_tree_structure_by_hand() -> None:
    # 10 GPUs, 2 per node, 2 nodes per rack, 2 racks per PDU, 1 PDU per feed: 5 nodes, 3 racks, 2 PDUs, 2 feeds.
    t = regular_tree(10, 2, 2, 2, 1, limits_w={"rack": 1000.0})
    assert t.names[:5] == ("node0", "node1", "node2", "node3", "node4")
    assert [t.kinds.count(k) for k in REGULAR_LEVELS] == [5, 3, 2, 2]
    assert t.level_of_gpu["node"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert t.level_of_gpu["rack"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert t.level_of_gpu["pdu"].tolist() == [0] * 8 + [1, 1]
    # the last rack holds one partly filled node: 2 GPUs
    assert t.size.tolist() == [2, 2, 2, 2, 2, 4, 4, 2, 8, 2, 8, 2]
    assert t.height.tolist() == [1] * 5 + [2] * 3 + [3] * 2 + [4] * 2
    limits = dict(zip(t.names, t.limit_w))
    assert limits["rack1"] == 1000.0 and np.isinf(limits["node0"]) and np.isinf(limits["feed1"])
    assert t.parent[t.names.index("rack2")] == t.names.index("pdu1")
    assert t.roots().tolist() == [t.names.index("feed0"), t.names.index("feed1")]


def test_level_index_arrays_sum_like_the_member_matrix() -> None:
    t = regular_tree(37, 4, 3, 2, 2)
    p = np.random.default_rng(5).uniform(50, 700, 37)
    total = t.element_power_w(p)
    for kind in REGULAR_LEVELS:
        by_bincount = np.bincount(t.level_of_gpu[kind], weights=p)
        lo = t.level_offset[kind]
        np.testing.assert_allclose(total[lo:lo + by_bincount.size], by_bincount, rtol=1e-12)
    assert total[t.roots()].sum() == pytest.approx(p.sum(), rel=1e-12)


def test_graph_round_trip_keeps_the_tree() -> None:
    t = regular_tree(12, 2, 3, 1, 2, limits_w={"node": 1500.0, "feed": 9000.0})
    back = tree_from_graph(t.graph, 12)
    assert back.names == t.names and back.kinds == t.kinds
    np.testing.assert_array_equal(back.limit_w, t.limit_w)
    assert (back.members != t.members).nnz == 0


def test_graphml_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "tree.graphml"
    nx.write_graphml(_chain_graph(3), path)
    t = read_graphml_tree(path, 3)
    assert dict(zip(t.names, t.limit_w))["node"] == 1500.0
    assert t.element_power_w(np.array([100.0, 200.0, 300.0])).tolist() == [600.0, 600.0, 600.0]


def test_graphml_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="missing.graphml"):
        read_graphml_tree(tmp_path / "missing.graphml", 2)
    broken = tmp_path / "broken.graphml"
    broken.write_text("<graphml><graph", encoding="utf-8")
    with pytest.raises(TraceError, match="broken.graphml: file"):
        read_graphml_tree(broken, 2)
    short = tmp_path / "short.graphml"
    nx.write_graphml(_chain_graph(2), short)
    with pytest.raises(TraceError, match=r"does not cover the GPUs: it holds 2 of 3; missing GPU\(s\) 2"):
        read_graphml_tree(short, 3)
    undirected = tmp_path / "undirected.graphml"
    nx.write_graphml(nx.Graph(_chain_graph(2)), undirected)
    with pytest.raises(TraceError, match="directed"):
        read_graphml_tree(undirected, 2)


def test_regular_tree_errors() -> None:
    with pytest.raises(ValueError, match=r"feeds = 1 does not cover the 64 GPUs.*hold 32 GPUs; need at least 2"):
        regular_tree(64, 8, 4, 1, 1, feeds=1)
    # 4 GPUs at 2 per node and one node per rack, PDU and feed fill 2 feeds; feeds 2 and 3 would feed nothing
    with pytest.raises(ValueError, match=r"feeds = 4 leaves feed2 … feed3 with no GPUs.*fill 2 feed\(s\); give at most 2"):
        regular_tree(4, 2, 1, 1, 1, feeds=4)
    assert regular_tree(4, 2, 1, 1, 1, feeds=2).size.tolist() == [2, 2, 2, 2, 2, 2, 2, 2]  # exactly enough
    with pytest.raises(ValueError, match="feeds must be a whole number >= 1 or None, got 0"):
        regular_tree(4, 2, 1, 1, 1, feeds=0)
    with pytest.raises(ValueError, match="gpus_per_node must be a whole number >= 1, got 0"):
        regular_tree(4, 0, 1, 1, 1)
    with pytest.raises(ValueError, match=r"unknown kind\(s\) \['row'\]"):
        regular_tree(4, 2, 1, 1, 1, limits_w={"row": 10.0})
    with pytest.raises(ValueError, match="rack limit: limit_w must be a number of W > 0"):
        regular_tree(4, 2, 1, 1, 1, limits_w={"rack": -1.0})


@pytest.mark.parametrize("change, message", [
    (lambda g: g.add_edge("node", "feed"), r"cycle: .*feed → rack → node → feed"),
    (lambda g: (g.add_node("rack2", kind="rack"), g.add_edge("rack2", "node")), r"'node' has 2 parents"),
    (lambda g: g.add_node("g9", kind="gpu", gpu=1) or g.add_edge("node", "g9"), r"GPU 1 appears twice"),
    (lambda g: g.add_node("g9", kind="gpu", gpu=7) or g.add_edge("node", "g9"), r"gpu = 7; expected a whole number in \[0, 1\]"),
    (lambda g: g.add_node("g9", kind="gpu", gpu=1.5), r"gpu = 1.5"),
    (lambda g: g.remove_edge("node", "g1"), r"'g1' \(gpu 1\) has no parent"),
    (lambda g: g.add_edge("g0", "rack9"), r"GPU vertex 'g0' has children"),
    (lambda g: g.add_edge("feed", "spare"), r"element 'spare' feeds no GPU"),
    (lambda g: g.nodes["node"].update(limit_w="lots"), r"element 'node': limit_w must be a number of W > 0"),
    (lambda g: g.nodes["node"].update(limit_w=0), r"element 'node': limit_w must be a number of W > 0 or absent, got 0"),
])
def test_graph_errors_name_the_vertex(change, message) -> None:
    g = _chain_graph(2)
    change(g)
    with pytest.raises(ValueError, match=message):
        tree_from_graph(g, 2)


def test_graph_must_be_directed() -> None:
    with pytest.raises(ValueError, match="must be a directed graph"):
        tree_from_graph(nx.Graph(_chain_graph(2)), 2)


def test_limit_below_idle_power_is_an_error() -> None:
    t = regular_tree(8, 4, 1, 1, 1, limits_w={"node": 300.0})
    t.check_limits(75.0)  # 4 × 75 = 300 W: exactly at the limit is allowed
    with pytest.raises(ValueError, match=r"node 'node0' has limit_w 300 W, below the idle power of the 4 GPU\(s\) "
                                         r"it feeds \(315.2 W\).*\(1 more element\(s\) likewise\)"):
        t.check_limits(78.8)


# --------------------------------------------------------------------------------------------- placement
def test_placement_hand_worked() -> None:
    t = regular_tree(10, 2, 2, 2, 1)  # nodes {0,1} {2,3} {4,5} {6,7} {8,9}; racks {0-3} {4-7} {8,9}
    free = np.ones(10, dtype=bool)
    free[[0, 3]] = False
    assert place_job(t, free, 1).tolist() == [1]  # best fit: node0 has exactly one free GPU (node1 too; lower index)
    assert place_job(t, free, 2).tolist() == [4, 5]  # the first whole free node
    assert place_job(t, free, 3).tolist() == [4, 5, 6]  # one rack (rack1); node2 whole, then best fit node3
    assert place_job(t, free, 5).tolist() == [1, 4, 5, 6, 7]  # one PDU: rack1 whole, then one GPU from rack0
    assert place_job(t, free, 8).tolist() == [1, 2, 4, 5, 6, 7, 8, 9]  # the whole cluster: feeds, largest first
    assert place_job(t, free, 9) is None


def test_placement_level_comes_before_best_fit() -> None:
    # 5 GPUs, 3 per node: node1 is a partial node of 2. For one GPU, node0 with 1 free is the best fit,
    # even though node1 is the smaller element.
    t = regular_tree(5, 3, 1, 1, 1)
    free = np.array([False, False, True, True, True])
    assert place_job(t, free, 1).tolist() == [2]


def test_placement_prefers_the_fullest_fitting_node() -> None:
    t = regular_tree(12, 4, 3, 1, 1)
    free = np.zeros(12, dtype=bool)
    free[[0, 1, 2]] = True  # node0: 3 free
    free[[4, 5]] = True  # node1: 2 free (best fit for 2)
    free[8:12] = True  # node2: 4 free
    assert place_job(t, free, 2).tolist() == [4, 5]
    assert place_job(t, free, 4).tolist() == [8, 9, 10, 11]
    assert place_job(t, free, 7).tolist() == [0, 1, 2, 8, 9, 10, 11]  # node2 whole, then node0 (fits the 3 left)


def test_placement_input_errors() -> None:
    t = regular_tree(4, 2, 1, 1, 1)
    with pytest.raises(ValueError, match=r"free must have shape \(4,\)"):
        place_job(t, np.ones(3, bool), 1)
    with pytest.raises(ValueError, match="k must be a whole number >= 1, got 0"):
        place_job(t, np.ones(4, bool), 0)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 40), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2),
       st.data())
def test_placement_stays_in_the_lowest_level_that_fits(n, per_node, per_rack, per_pdu, per_feed, data) -> None:
    t = regular_tree(n, per_node, per_rack, per_pdu, per_feed)
    free = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    k = data.draw(st.integers(1, n))
    got = place_job(t, free, k)
    if free.sum() < k:
        assert got is None
        return
    assert got.size == k and np.unique(got).size == k and free[got].all()
    for kind in REGULAR_LEVELS:  # the first level with an element holding k free GPUs keeps the job together
        free_per = np.bincount(t.level_of_gpu[kind][free], minlength=t.level_of_gpu[kind].max() + 1)
        if free_per.max() >= k:
            assert np.unique(t.level_of_gpu[kind][got]).size == 1, kind
            chosen = t.level_of_gpu[kind][got[0]]
            assert free_per[chosen] == free_per[free_per >= k].min()  # best fit
            break


def test_placement_on_an_uneven_graph() -> None:
    # feed → {rack A → nodes a1 (2 GPUs), a2 (1 GPU)}, plus GPU 3 straight under the feed.
    g = nx.DiGraph()
    g.add_nodes_from([("feed", {"kind": "feed"}), ("A", {"kind": "rack"}), ("a1", {"kind": "node"}),
                      ("a2", {"kind": "node"})])
    g.add_edges_from([("feed", "A"), ("A", "a1"), ("A", "a2")])
    for i, parent in enumerate(["a1", "a1", "a2", "feed"]):
        g.add_node(i, kind="gpu", gpu=i)
        g.add_edge(parent, i)
    t = tree_from_graph(g, 4)
    assert isinstance(t, PowerTree) and t.height.tolist() == [3, 2, 1, 1]
    free = np.ones(4, dtype=bool)
    assert place_job(t, free, 3).tolist() == [0, 1, 2]  # rack A holds 3
    assert place_job(t, free, 1).tolist() == [2]  # node a2: best fit among the lowest elements with room
    assert place_job(t, free, 4).tolist() == [0, 1, 2, 3]
    free[2] = False
    assert place_job(t, free, 1).tolist() == [0]  # a1 (height 1) before the feed's own GPU 3 (height 3)
