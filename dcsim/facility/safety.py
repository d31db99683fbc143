"""Safety layer: hierarchical, priority-aware power capping that keeps every power-tree element within its limit.

:func:`enforce_limits` is a pure function of the requested per-GPU power, each GPU's floors, the job
priorities and the tree. It works bottom-up, like the leaf-to-root controllers of Dynamo (Wu et al.,
"Dynamo: Facebook's Data Center-Wide Power Management System", ISCA 2016): elements of one height
are handled together (they never nest), lower ones first, so a rack sees the power its nodes
already allow. At an element over its limit by ``X`` W:

1. **Cap.** The GPUs below it give up power in priority order, lowest first — lowest job value, then
   most deadline slack, then lowest GPU index — each down to its ``min_w`` before the next is touched,
   until exactly ``X`` W are removed. (Dynamo splits a cut evenly inside a priority group; here every
   GPU is its own group, so the order is strict.)
2. **Pause**, only when capping everything to ``min_w`` is not enough (the limit is below the sum of the
   floors): GPUs are paused in the same order — a paused GPU draws ``paused_w`` (its job stops, as a job
   given less than the board's minimum cap does in dcsim) — until the element fits; whatever the last
   pause freed beyond the need is handed back to the still-running GPUs, highest priority first, up
   to the power they had when the element's turn came.
3. **Infeasible**: if pausing every GPU below it still leaves the element over, it is reported in
   ``shortfall_w`` (then the limit is below the paused power of what it feeds, which
   :meth:`PowerTree.check_limits` rejects up front when ``paused_w`` is the idle power).

Without pausing the result is minimal: a GPU is capped only if one of its ancestors ends exactly at
its limit, and the total power removed equals the least any feasible answer must remove,
``Σ_roots f(e)`` with ``f(e) = max(excess_e, Σ_children f(c))``. With pausing it is feasible but not
necessarily minimal (a pause is a step, not a slope).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcsim.facility.topology import PowerTree


@dataclass(frozen=True)
class SafetyResult:
    """What the safety layer allows.

    Attributes:
        cap_w: Power each GPU may draw, W, shape ``(n_gpus,)``; ``min_w ≤ cap_w ≤ request_w`` for running
            GPUs, ``paused_w`` for paused ones.
        paused: GPUs whose job must pause (their cap is below ``min_w``), shape ``(n_gpus,)``.
        capped_w: Power removed at each element's turn, W, shape ``(E,)`` (0 where it was within limit).
        element_power_w: Power through each element after capping, W, shape ``(E,)``.
        shortfall_w: How far an element stays over its limit with everything below it paused, W, shape
            ``(E,)``; all zero unless the limits are infeasible.
        request_w: The requests the caps answer, W, shape ``(n_gpus,)``.
    """

    cap_w: np.ndarray
    paused: np.ndarray
    capped_w: np.ndarray
    element_power_w: np.ndarray
    shortfall_w: np.ndarray
    request_w: np.ndarray

    @property
    def overrides(self) -> int:
        """Number of GPUs given less than they asked for."""
        return int(np.count_nonzero(self.cap_w < self.request_w))

    @property
    def interventions(self) -> int:
        """Number of elements that had to cap."""
        return int(np.count_nonzero(self.capped_w > 0))

    @property
    def feasible(self) -> bool:
        return not bool(np.any(self.shortfall_w > 0))


def priority_rank(value: np.ndarray, slack_s: np.ndarray) -> np.ndarray:
    """Each GPU's place in the capping order, 0 = capped first.

    Lowest ``value`` first; among equal values the most ``slack_s`` first (``inf`` = no deadline); then
    the lowest GPU index.
    """
    value = np.asarray(value, dtype=float)
    slack = np.asarray(slack_s, dtype=float)
    # Two stable sorts (slack, then value) order by value, then slack, then index; faster than lexsort on floats.
    order = np.argsort(-slack, kind="stable")
    order = order[np.argsort(value[order], kind="stable")]
    rank = np.empty(value.size, dtype=np.int64)
    rank[order] = np.arange(value.size)
    return rank


def _check_inputs(tree: PowerTree, arrays: dict[str, np.ndarray]) -> None:
    for name, arr in arrays.items():
        if arr.shape != (tree.n_gpus,):
            raise ValueError(f"{name} must have shape ({tree.n_gpus},), one value per GPU; got {arr.shape}")
        if name != "slack_s" and not np.all(np.isfinite(arr)):
            i = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise ValueError(f"{name}[{i}] = {arr[i].item()!r}; expected a finite number")
    if np.any(np.isnan(arrays["slack_s"])):
        i = int(np.flatnonzero(np.isnan(arrays["slack_s"]))[0])
        raise ValueError(f"slack_s[{i}] is NaN; expected a number of seconds or inf (no deadline)")
    paused, low, req = arrays["paused_w"], arrays["min_w"], arrays["request_w"]
    for bad, what in ((paused < 0, "paused_w >= 0"), (paused > low, "paused_w <= min_w"), (low > req, "min_w <= request_w")):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"GPU {i}: request_w = {req[i]:g}, min_w = {low[i]:g}, paused_w = {paused[i]:g}; "
                             f"expected {what} (an idle or sleeping GPU gives its draw for all three)")


def enforce_limits(tree: PowerTree, request_w: np.ndarray, min_w: np.ndarray, paused_w: np.ndarray,
                   value: np.ndarray, slack_s: np.ndarray) -> SafetyResult:
    """Cap the requested per-GPU power so that no element of ``tree`` exceeds its limit.

    Args:
        tree: The power-delivery tree with its limits.
        request_w: Power each GPU would draw as asked (its cap, or its draw when not running), W.
        min_w: Lowest power each GPU may be capped to while its job keeps running, W (the board's minimum
            cap for a running GPU; the draw itself for an idle, sleeping or off GPU).
        paused_w: What each GPU draws if its job is paused, W (idle power; the draw itself when not running).
        value: Priority of each GPU's job (e.g. job value in tokens, per GPU or per job); lower is capped first.
        slack_s: Deadline slack of each GPU's job, s (``inf`` when none); more slack is capped first among
            equal values.

    Returns:
        The caps, pauses and per-element interventions (:class:`SafetyResult`).

    Raises:
        ValueError: An array of the wrong shape, a non-finite value, or ``paused_w ≤ min_w ≤ request_w``
            violated (naming the GPU).
    """
    arrays = {name: np.asarray(a, dtype=float) for name, a in (("request_w", request_w), ("min_w", min_w),
                                                                ("paused_w", paused_w), ("value", value),
                                                                ("slack_s", slack_s))}
    _check_inputs(tree, arrays)
    req, low, paused_w = arrays["request_w"], arrays["min_w"], arrays["paused_w"]
    rank = None  # computed only if some element is over its limit
    p = req.copy()
    paused = np.zeros(tree.n_gpus, dtype=bool)
    capped = np.zeros(tree.n_elements)
    shortfall = np.zeros(tree.n_elements)
    for level, level_members in zip(tree.by_height, tree.members_by_height):
        excess = level_members @ p - tree.limit_w[level]
        over_mask = excess > 0
        if not over_mask.any():
            continue
        over, need = level[over_mask], excess[over_mask]
        if rank is None:
            rank = priority_rank(arrays["value"], arrays["slack_s"])
        sub = level_members[over_mask]
        seg = np.repeat(np.arange(over.size), np.diff(sub.indptr))
        order = np.argsort(seg * np.int64(tree.n_gpus) + rank[sub.indices])  # by element, then priority
        g, seg = sub.indices[order], seg[order]
        head = np.where(paused[g], 0.0, np.maximum(p[g] - low[g], 0.0))
        first = sub.indptr[:-1]  # where each element's GPUs start in g (seg is sorted)
        before = np.cumsum(head) - head
        before -= before[first][seg]  # headroom of lower-priority GPUs in the same element
        room = np.bincount(seg, weights=head, minlength=over.size)
        ok = room >= need
        cut = np.where(ok[seg], np.clip(need[seg] - before, 0.0, head), 0.0)
        p[g] -= cut
        capped[over[ok]] += need[ok]
        for i in np.flatnonzero(~ok):
            gpus = g[sub.indptr[i]:sub.indptr[i + 1]]  # this element's GPUs, lowest priority first
            e = int(over[i])
            capped[e], shortfall[e] = _pause(p, paused, gpus, low, paused_w, tree.limit_w[e])
    return SafetyResult(cap_w=p, paused=paused, capped_w=capped, element_power_w=tree.members @ p,
                        shortfall_w=shortfall, request_w=req)


def _pause(p: np.ndarray, paused: np.ndarray, gpus: np.ndarray, low: np.ndarray, paused_w: np.ndarray,
           limit_w: float) -> tuple[float, float]:
    """One element that capping alone cannot fix: pause lowest priority first, hand back the overshoot.

    ``gpus`` are the element's GPUs, lowest priority first. Updates ``p`` and ``paused`` in place and
    returns (power removed, shortfall) for the element, W.
    """
    entry = p[gpus].copy()
    running = ~paused[gpus]
    at_min = np.where(running, low[gpus], p[gpus])
    need = at_min.sum() - limit_w
    gain = np.where(running, low[gpus] - paused_w[gpus], 0.0)
    cum = np.cumsum(gain)
    if cum[-1] < need:  # pausing everything is not enough: infeasible
        stop = gpus.size
        overshoot = 0.0
        shortfall = float(need - cum[-1])
    else:
        stop = int(np.searchsorted(cum, need)) + 1  # smallest prefix whose pauses cover the need
        overshoot = float(cum[stop - 1] - need)
        shortfall = 0.0
    new = at_min.copy()
    pause_now = np.zeros(gpus.size, dtype=bool)
    pause_now[:stop] = gain[:stop] > 0
    new[pause_now] = paused_w[gpus][pause_now]
    # Hand the overshoot back to still-running GPUs, highest priority first, up to their entry power.
    back = np.where(running & ~pause_now, entry - new, 0.0)[::-1]
    give = np.clip(overshoot - (np.cumsum(back) - back), 0.0, back)[::-1]
    new += give
    p[gpus] = new
    paused[gpus[pause_now]] = True
    return float((entry - new).sum()), shortfall
