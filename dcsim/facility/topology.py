"""Power-delivery tree: GPUs under nodes, racks, PDUs and feeds, each element with a limit in W, and job placement.

A tree is a ``networkx.DiGraph`` with edges from parent to child. GPU leaves carry ``kind="gpu"`` and
``gpu=<index>`` (0 … n−1); every other vertex is an *element* with a ``kind`` (``"node"``, ``"rack"``,
``"pdu"``, ``"feed"`` or any name) and an optional ``limit_w`` (absent or None: no limit). Every
element has at most one parent and every GPU exactly one, so the GPUs under the elements form a
laminar family; :class:`PowerTree` keeps that family as a sparse 0/1 matrix ``members`` (elements ×
GPUs) so that the power of every element is one product, ``members @ gpu_power_w``.

Errors are :class:`ValueError` with a message that names the element, the value and what is allowed
(the scenario layer turns them into :class:`dcsim.errors.ScenarioError` entries); a GraphML file that
cannot be read is a :class:`dcsim.errors.TraceError`.
"""
from __future__ import annotations

import array
import math
from pathlib import Path
from typing import Sequence

import networkx as nx
import numpy as np
import scipy.sparse as sp

from dcsim.errors import TraceError

GPU_KIND = "gpu"
#: The levels of a regular tree, leaf-most first.
REGULAR_LEVELS = ("node", "rack", "pdu", "feed")
_NO_FIT = np.iinfo(np.int64).max  # the free count placement gives an element without room


class PowerTree:
    """The elements of a power-delivery tree as arrays, for vectorised sums over the GPUs below each element.

    Build one with :func:`regular_tree` or :func:`tree_from_graph`, not directly.

    Attributes:
        n_gpus: Number of GPUs (leaves).
        names: Element names (``str`` of the graph vertex), in element-index order.
        kinds: Each element's kind.
        limit_w: Each element's limit, W (``inf``: no limit), shape ``(E,)``.
        parent: Each element's parent element index, −1 for a root, shape ``(E,)``.
        gpu_parent: Each GPU's parent element index, shape ``(n_gpus,)``.
        members: ``(E, n_gpus)`` CSR matrix, 1 where the GPU is below the element (at any depth).
        size: Number of GPUs below each element, shape ``(E,)``.
        height: 1 for an element with only GPUs below it, else 1 + the tallest child element, shape ``(E,)``.
        level_of_gpu: Regular trees only (else empty): for each kind in :data:`REGULAR_LEVELS`, each GPU's
            index among the elements of that kind (``level_of_gpu["rack"][g]`` is GPU g's rack number),
            for ``np.bincount`` sums.
        level_offset: Regular trees only: element index of the first element of each kind.
    """

    def __init__(self, names: Sequence[str], kinds: Sequence[str], limit_w: np.ndarray, parent: np.ndarray,
                 gpu_parent: np.ndarray, graph: nx.DiGraph | None = None,
                 level_of_gpu: dict[str, np.ndarray] | None = None, level_offset: dict[str, int] | None = None):
        self.names = tuple(names)
        self.kinds = tuple(kinds)
        self.limit_w = np.asarray(limit_w, dtype=float)
        self.parent = np.asarray(parent, dtype=np.int64)
        self.gpu_parent = np.asarray(gpu_parent, dtype=np.int64)
        self.n_gpus = int(self.gpu_parent.size)
        self.level_of_gpu = level_of_gpu or {}
        self.level_offset = level_offset or {}
        self._graph = graph
        n_el = len(self.names)
        # Every (ancestor, GPU) pair, one depth at a time: at most depth passes over the GPU array.
        rows, cols = [], []
        cur = self.gpu_parent.copy()
        gpus = np.arange(self.n_gpus)
        while True:
            ok = cur >= 0
            if not ok.any():
                break
            rows.append(cur[ok])
            cols.append(gpus[ok])
            cur, gpus = self.parent[cur[ok]], gpus[ok]
        rows_a = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        cols_a = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        self.members = sp.csr_matrix((np.ones(rows_a.size), (rows_a, cols_a)), shape=(n_el, self.n_gpus))
        self.size = np.asarray(self.members.sum(axis=1)).ravel().astype(np.int64)
        height = np.zeros(n_el, dtype=np.int64)
        height[self.gpu_parent[self.gpu_parent >= 0]] = 1
        for _ in range(n_el + 1):  # heights grow by one per pass; a tree settles within its depth
            has_parent = self.parent >= 0
            new = height.copy()
            np.maximum.at(new, self.parent[has_parent], height[has_parent] + 1)
            if np.array_equal(new, height):
                break
            height = new
        self.height = height
        #: Element indices grouped by height, lowest first: elements of one height never nest.
        self.by_height = [np.flatnonzero(height == h) for h in range(1, int(height.max(initial=0)) + 1)]
        #: ``members`` restricted to each group of :attr:`by_height` (sliced once: slicing a CSR matrix is slow).
        self.members_by_height = [self.members[idx] for idx in self.by_height]
        #: :attr:`by_height` with each group of consecutive indices as a slice (a view, not a copy, when read:
        #: every level of a regular tree is one), for placement.
        self.height_groups: list[slice | np.ndarray] = [
            slice(int(idx[0]), int(idx[-1]) + 1) if int(idx[-1]) - int(idx[0]) + 1 == idx.size else idx
            for idx in self.by_height]
        self._children: list[np.ndarray] | None = None
        self._gpu_children: list[np.ndarray] | None = None

    @property
    def n_elements(self) -> int:
        return len(self.names)

    @property
    def graph(self) -> nx.DiGraph:
        """The tree as a DiGraph (built on first use for regular trees)."""
        if self._graph is None:
            g = nx.DiGraph()
            for name, kind, limit in zip(self.names, self.kinds, self.limit_w):
                g.add_node(name, kind=kind, limit_w=None if math.isinf(limit) else float(limit))
            g.add_nodes_from((f"gpu{i}", {"kind": GPU_KIND, "gpu": i}) for i in range(self.n_gpus))
            g.add_edges_from((self.names[p], self.names[e]) for e, p in enumerate(self.parent) if p >= 0)
            g.add_edges_from((self.names[p], f"gpu{i}") for i, p in enumerate(self.gpu_parent))
            self._graph = g
        return self._graph

    def element_power_w(self, gpu_power_w: np.ndarray) -> np.ndarray:
        """Power through every element, W: the sum over the GPUs below it, shape ``(E,)``."""
        return self.members @ np.asarray(gpu_power_w, dtype=float)

    def children(self, element: int) -> tuple[np.ndarray, np.ndarray]:
        """The element's child elements and child GPUs (index arrays, ascending)."""
        if self._children is None:
            order = np.argsort(self.parent, kind="stable")
            bounds = np.searchsorted(self.parent[order], np.arange(-1, self.n_elements + 1))
            self._children = [order[bounds[e + 1]:bounds[e + 2]] for e in range(self.n_elements)]
            gorder = np.argsort(self.gpu_parent, kind="stable")
            gb = np.searchsorted(self.gpu_parent[gorder], np.arange(self.n_elements + 1))
            self._gpu_children = [gorder[gb[e]:gb[e + 1]] for e in range(self.n_elements)]
        return self._children[element], self._gpu_children[element]

    def roots(self) -> np.ndarray:
        return np.flatnonzero(self.parent < 0)

    def check_limits(self, idle_w: float | np.ndarray) -> None:
        """Raise if any element's limit is below the idle power of the GPUs it feeds.

        Args:
            idle_w: Idle power of one GPU, W (a number, or one value per GPU).

        Raises:
            ValueError: Naming the first such element, its limit and the idle power below it.
        """
        idle = np.broadcast_to(np.asarray(idle_w, dtype=float), (self.n_gpus,))
        floor_w = self.element_power_w(idle)
        bad = np.flatnonzero(self.limit_w < floor_w * (1 - 1e-12))
        if bad.size:
            e = int(bad[0])
            more = f" ({bad.size - 1} more element(s) likewise)" if bad.size > 1 else ""
            raise ValueError(
                f"{self.kinds[e]} {self.names[e]!r} has limit_w {self.limit_w[e]:g} W, below the idle power of the "
                f"{self.size[e]} GPU(s) it feeds ({floor_w[e]:g} W); a limit must be at least that{more}")


def _check_limit(value: object, where: str) -> float:
    if value is None:
        return math.inf
    try:
        limit = float(value)  # GraphML attributes may arrive as strings
    except (TypeError, ValueError):
        raise ValueError(f"{where}: limit_w must be a number of W > 0 or absent, got {value!r}") from None
    if not limit > 0:
        raise ValueError(f"{where}: limit_w must be a number of W > 0 or absent, got {value!r}")
    return limit


def regular_tree(n_gpus: int, gpus_per_node: int, nodes_per_rack: int, racks_per_pdu: int, pdus_per_feed: int,
                 feeds: int | None = None, limits_w: dict[str, float | None] | None = None) -> PowerTree:
    """A regular tree: ``gpus_per_node`` GPUs per node, ``nodes_per_rack`` nodes per rack, and so on.

    GPUs fill node 0 first, nodes fill rack 0 first, and so on; the last element of each level may be
    partly filled. Element names are ``node3``, ``rack0``, ``pdu1``, ``feed0``; element indices run
    nodes first, then racks, PDUs and feeds.

    Args:
        n_gpus: GPUs to cover (>= 1).
        gpus_per_node, nodes_per_rack, racks_per_pdu, pdus_per_feed: Fan-out of each level (>= 1).
        feeds: Number of feeds; None: as many as needed. Fewer or more than needed is an error (a feed
            would be over-full, or feed no GPU).
        limits_w: Limit of every element of a kind, W, by kind (``{"rack": 40e3, "feed": 1e6}``); a kind
            left out or None has no limit.

    Raises:
        ValueError: A fan-out below 1, too few feeds to cover the GPUs or more than they fill, a limit that
            is not > 0, or an unknown kind in ``limits_w``.
    """
    fan = {"gpus_per_node": gpus_per_node, "nodes_per_rack": nodes_per_rack, "racks_per_pdu": racks_per_pdu,
           "pdus_per_feed": pdus_per_feed}
    for name, value in [("n_gpus", n_gpus), *fan.items()]:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    limits_w = dict(limits_w or {})
    unknown = set(limits_w) - set(REGULAR_LEVELS)
    if unknown:
        raise ValueError(f"limits_w has unknown kind(s) {sorted(unknown)}; allowed: {', '.join(REGULAR_LEVELS)}")
    counts = [math.ceil(n_gpus / gpus_per_node)]
    for per in (nodes_per_rack, racks_per_pdu, pdus_per_feed):
        counts.append(math.ceil(counts[-1] / per))
    if feeds is not None:
        if not isinstance(feeds, (int, np.integer)) or isinstance(feeds, bool) or feeds < 1:
            raise ValueError(f"feeds must be a whole number >= 1 or None, got {feeds!r}")
        capacity = feeds * pdus_per_feed * racks_per_pdu * nodes_per_rack * gpus_per_node
        if capacity < n_gpus:
            raise ValueError(
                f"feeds = {feeds!r} does not cover the {n_gpus} GPUs: {feeds!r} feed(s) × {pdus_per_feed} × "
                f"{racks_per_pdu} × {nodes_per_rack} × {gpus_per_node} hold {capacity} GPUs; "
                f"need at least {counts[-1]} feed(s)")
        if feeds > counts[-1]:  # the extra feeds would feed no GPU (a graph refuses such elements too)
            spare = f"feed{counts[-1]}" if feeds == counts[-1] + 1 else f"feed{counts[-1]} … feed{feeds - 1}"
            raise ValueError(
                f"feeds = {feeds!r} leaves {spare} with no GPUs: at {pdus_per_feed} × "
                f"{racks_per_pdu} × {nodes_per_rack} × {gpus_per_node} GPUs per feed the {n_gpus} GPUs fill "
                f"{counts[-1]} feed(s); give at most {counts[-1]}, or leave feeds out")
        counts[-1] = int(feeds)
    names, kinds, limits = [], [], []
    offsets: dict[str, int] = {}
    level_of_gpu: dict[str, np.ndarray] = {}
    below = np.arange(n_gpus) // gpus_per_node  # each GPU's node number
    per_next = (nodes_per_rack, racks_per_pdu, pdus_per_feed)
    for level, (kind, count) in enumerate(zip(REGULAR_LEVELS, counts)):
        offsets[kind] = len(names)
        limit = _check_limit(limits_w.get(kind), f"{kind} limit")
        level_of_gpu[kind] = below
        names.extend(f"{kind}{i}" for i in range(count))
        kinds.extend([kind] * count)
        limits.extend([limit] * count)
        if level < len(per_next):
            below = below // per_next[level]
    parent = np.full(len(names), -1, dtype=np.int64)
    for level, kind in enumerate(REGULAR_LEVELS[:-1]):
        lo = offsets[kind]
        parent[lo:lo + counts[level]] = np.arange(counts[level]) // per_next[level] + offsets[REGULAR_LEVELS[level + 1]]
    gpu_parent = level_of_gpu["node"] + offsets["node"]
    return PowerTree(names, kinds, np.asarray(limits), parent, gpu_parent,
                     level_of_gpu=level_of_gpu, level_offset=offsets)


def tree_from_graph(graph: nx.DiGraph, n_gpus: int) -> PowerTree:
    """Check a DiGraph (edges parent → child) and turn it into a :class:`PowerTree`.

    Args:
        graph: GPU vertices carry ``kind="gpu"`` and ``gpu=<index>``; other vertices are elements with a
            ``kind`` (default ``"element"``) and an optional ``limit_w`` (W, > 0).
        n_gpus: The cluster's GPU count; the graph must hold GPUs 0 … n_gpus−1, each once.

    Raises:
        ValueError: Not a directed graph, a cycle, a vertex with two parents, a GPU with children or no
            parent, a GPU index missing, repeated or out of range, an element that feeds no GPU, or a bad
            ``limit_w``. The message names the vertex and the value.
    """
    if not isinstance(graph, nx.DiGraph):
        raise ValueError(f"a power tree must be a directed graph (networkx.DiGraph, edges parent → child), "
                         f"got {type(graph).__name__}")
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        path = " → ".join(str(u) for u, _ in cycle) + f" → {cycle[0][0]}"
        raise ValueError(f"the power tree has a cycle: {path}; power flows from feeds down to GPUs only")
    for v in graph.nodes:
        preds = list(graph.predecessors(v))
        if len(preds) > 1:
            raise ValueError(f"{v!r} has {len(preds)} parents ({', '.join(map(repr, preds))}); "
                             f"in a power tree every element and GPU has one parent")
    gpu_of: dict[object, int] = {}
    vertex_of: dict[int, object] = {}
    for v, data in graph.nodes(data=True):
        if data.get("kind") != GPU_KIND:
            continue
        index = data.get("gpu")
        try:
            index_i = int(index)
            ok = float(index) == index_i
        except (TypeError, ValueError):
            ok = False
        if not ok or not 0 <= index_i < n_gpus:
            raise ValueError(f"GPU vertex {v!r} has gpu = {index!r}; expected a whole number in [0, {n_gpus - 1}]")
        if index_i in vertex_of:
            raise ValueError(f"GPU {index_i} appears twice in the power tree ({vertex_of[index_i]!r} and {v!r})")
        if graph.out_degree(v):
            raise ValueError(f"GPU vertex {v!r} has children ({', '.join(map(repr, graph.successors(v)))}); "
                             f"GPUs are the leaves of the power tree")
        if not graph.in_degree(v):
            raise ValueError(f"GPU vertex {v!r} (gpu {index_i}) has no parent; every GPU must be fed by an element")
        gpu_of[v] = index_i
        vertex_of[index_i] = v
    if len(gpu_of) != n_gpus:
        missing = sorted(set(range(n_gpus)) - set(vertex_of))
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise ValueError(f"the power tree does not cover the GPUs: it holds {len(gpu_of)} of {n_gpus}; "
                         f"missing GPU(s) {shown}")
    elements = [v for v in graph.nodes if v not in gpu_of]
    index_of = {v: i for i, v in enumerate(elements)}
    parent = np.full(len(elements), -1, dtype=np.int64)
    gpu_parent = np.full(n_gpus, -1, dtype=np.int64)
    limits = np.empty(len(elements))
    kinds = []
    for v in elements:
        data = graph.nodes[v]
        limits[index_of[v]] = _check_limit(data.get("limit_w"), f"element {v!r}")
        kinds.append(str(data.get("kind", "element")))
        for p in graph.predecessors(v):
            parent[index_of[v]] = index_of[p]
    for v, g in gpu_of.items():
        gpu_parent[g] = index_of[next(graph.predecessors(v))]
    tree = PowerTree([str(v) for v in elements], kinds, limits, parent, gpu_parent, graph=graph)
    empty = np.flatnonzero(tree.size == 0)
    if empty.size:
        raise ValueError(f"element {elements[int(empty[0])]!r} feeds no GPU; remove it or put GPUs below it")
    return tree


def read_graphml_tree(path: str | Path, n_gpus: int) -> PowerTree:
    """Read a power tree from a GraphML file (see :func:`tree_from_graph` for the attributes).

    Raises:
        TraceError: The file is missing, is not GraphML, or its graph is not a valid power tree for
            ``n_gpus`` GPUs (the message says why).
    """
    path = Path(path)
    if not path.is_file():
        raise TraceError(path, "file", str(path), "an existing GraphML file describing the power tree")
    try:
        graph = nx.read_graphml(path)
    except Exception as exc:  # networkx raises ParseError, KeyError, NetworkXError ... for broken files
        raise TraceError(path, "file", f"{type(exc).__name__}: {exc}", "a GraphML file") from None
    if not graph.is_directed():
        raise TraceError(path, "graph edgedefault", "undirected", "a directed graph (edgedefault=\"directed\")")
    try:
        return tree_from_graph(nx.DiGraph(graph), n_gpus)
    except ValueError as exc:
        raise TraceError(path, "graph", str(exc), "a power tree covering the cluster's GPUs") from None


# ------------------------------------------------------------------------------------------- placement
def place_job(tree: PowerTree, free: np.ndarray, k: int) -> np.ndarray | None:
    """Choose ``k`` free GPUs for a gang-scheduled job, keeping it as low in the tree as it fits.

    The rule:
      1. The job goes under the *lowest* element (smallest :attr:`PowerTree.height`) that has at least
         ``k`` free GPUs — in a regular tree one node if any node has room, else one rack, then one PDU,
         then one feed; among those of that height the one with the fewest free GPUs (best fit, to keep
         large holes for large jobs), then the lowest index. If no element has room, the whole cluster
         is used.
      2. Inside the chosen element (or across the roots), the GPUs are taken child by child: if some child
         has room for all that is left, the best-fitting one (fewest free, then lowest index) gets it;
         otherwise the child with the most free GPUs (then lowest index) gives all of its free GPUs and the
         rule repeats for the rest. Taking a child's share applies the same rule inside it.

    Args:
        tree: The power tree.
        free: Boolean mask of free GPUs, shape ``(n_gpus,)``.
        k: GPUs needed (>= 1).

    Returns:
        The chosen GPU indices, ascending, or None when fewer than ``k`` GPUs are free.

    Raises:
        ValueError: ``k`` below 1 or ``free`` of the wrong shape.
    """
    free = np.asarray(free, dtype=bool)
    if free.shape != (tree.n_gpus,):
        raise ValueError(f"free must have shape ({tree.n_gpus},), got {free.shape}")
    k = _check_k(k)
    if int(free.sum()) < k:
        return None
    free_per = np.rint(tree.members @ free.astype(float)).astype(np.int64)
    return _place(tree, free, free_per, k)


def _check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a whole number >= 1, got {k!r}")
    return int(k)


def _place(tree: PowerTree, free: np.ndarray, free_per: np.ndarray, k: int) -> np.ndarray:
    """:func:`place_job`'s rule given the free mask and each element's free count (at least ``k`` GPUs free).

    Step 1 walks the heights lowest first and stops at the first with room: within one height the best fit
    is the smallest count >= k, ties to the lowest index (``argmin`` keeps the first minimum, and the
    indices of a height ascend), which is the order (height, free count, index) of the rule. Under an element
    of height 1 (GPUs only, each a unit of one) step 2 reduces to the first ``k`` free GPUs by index.
    """
    for height, group in enumerate(tree.height_groups, start=1):
        count = free_per[group]
        at = int(np.argmin(np.where(count >= k, count, _NO_FIT)))
        if count[at] >= k:
            best = group.start + at if isinstance(group, slice) else int(group[at])
            children = tree.children(best)
            if height == 1:  # only GPUs below: step 2 takes the first k free ones, by index
                gpus = children[1]
                return gpus[free[gpus]][:k]
            taken = _take(tree, free, free_per, children, k)
            break
    else:
        orphan_gpus = np.flatnonzero(tree.gpu_parent < 0)
        taken = _take(tree, free, free_per, (tree.roots(), orphan_gpus), k)
    return np.sort(np.asarray(taken, dtype=np.int64))


class FreeGpus:
    """A set of free GPUs of a tree, kept as a mask and a count per element and changed one GPU at a time.

    A change walks the GPU's ancestors (the tree's depth), so :meth:`place` runs the rule of :func:`place_job`
    without a pass over every GPU: it costs the chosen element's children, plus one look at each height's
    counts up to the first that fits.

    Args:
        tree: The power tree.
        free: GPUs free at the start (indices), or None for none.
    """

    def __init__(self, tree: PowerTree, free: Sequence[int] | None = None):
        self.tree = tree
        self._mask = bytearray(tree.n_gpus)
        #: Boolean view of the set, shape ``(n_gpus,)`` (read-only by convention: change it with add/discard).
        self.mask = np.frombuffer(self._mask, dtype=bool) if tree.n_gpus else np.zeros(0, dtype=bool)
        self._per = array.array("q", [0]) * tree.n_elements
        #: Free GPUs below each element (at any depth), shape ``(E,)``.
        self.per_element = np.frombuffer(self._per, dtype=np.int64) if tree.n_elements else np.zeros(0, np.int64)
        self.count = 0
        self._gpu_parent = tree.gpu_parent.tolist()
        self._parent = tree.parent.tolist()
        for g in free or ():
            self.add(g)

    def add(self, g: int) -> None:
        """Put GPU ``g`` in the set (nothing if it is there)."""
        if self._mask[g]:
            return
        self._mask[g] = 1
        self.count += 1
        per, parent = self._per, self._parent
        e = self._gpu_parent[g]
        while e >= 0:
            per[e] += 1
            e = parent[e]

    def discard(self, g: int) -> None:
        """Take GPU ``g`` out of the set (nothing if it is not there)."""
        if not self._mask[g]:
            return
        self._mask[g] = 0
        self.count -= 1
        per, parent = self._per, self._parent
        e = self._gpu_parent[g]
        while e >= 0:
            per[e] -= 1
            e = parent[e]

    def place(self, k: int) -> np.ndarray | None:
        """:func:`place_job` on this set: the ``k`` GPUs the rule chooses (ascending; the set is not changed),
        or None when fewer than ``k`` are free.

        Raises:
            ValueError: ``k`` below 1.
        """
        k = _check_k(k)
        if self.count < k:
            return None
        return _place(self.tree, self.mask, self.per_element, k)


def _take(tree: PowerTree, free: np.ndarray, free_per: np.ndarray, children: tuple[np.ndarray, np.ndarray],
          k: int) -> list[int]:
    """Step 2 of the rule under one element: ``k`` of the free GPUs below ``children`` (its child elements and
    child GPUs). Plain Python over the children (a fan-out, not the cluster): cheaper than numpy at that size."""
    elements, gpus = children
    # Units to draw from: child elements (their free counts) and free child GPUs (one each, as ids -1 - g),
    # in this order; ties go to the earlier unit.
    unit_free = free_per[elements].tolist()
    unit_id = elements.tolist()
    free_gpus = gpus[free[gpus]].tolist()
    unit_free += [1] * len(free_gpus)
    unit_id += [-1 - g for g in free_gpus]
    alive = [c > 0 for c in unit_free]
    taken: list[int] = []
    while k > 0:
        u = -1  # best fit: the fewest free that hold all k
        for i, c in enumerate(unit_free):
            if alive[i] and c >= k and (u < 0 or c < unit_free[u]):
                u = i
        if u >= 0:
            need = k
        else:  # none holds them all: the unit with the most free gives all it has
            for i, c in enumerate(unit_free):
                if alive[i] and (u < 0 or c > unit_free[u]):
                    u = i
            need = unit_free[u]
        alive[u] = False
        uid = unit_id[u]
        if uid < 0:
            taken.append(-1 - uid)
        elif need == unit_free[u]:
            row = tree.members.indices[tree.members.indptr[uid]:tree.members.indptr[uid + 1]]
            taken.extend(row[free[row]].tolist())
        else:
            taken.extend(_take(tree, free, free_per, tree.children(uid), need))
        k -= need
    return taken
