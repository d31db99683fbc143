"""Cost of one call of each facility component at 1k, 10k and 100k GPUs (they are not wired into runs yet).

Times, per call: the element power sums of a regular tree (``members @ p``), the safety layer with
no element over its limit, with rack limits at 80 % of a full rack's TDP (most racks over: capping),
and with rack limits at 80 % of a full rack's minimum caps (most racks must pause GPUs); a placement
of an 8-GPU job on a half-free cluster; and one exact cooling interval. The tree is 8 GPUs per node,
4 nodes per rack, 8 racks per PDU, 4 PDUs per feed; running GPUs ask 700 W (min 200 W, idle 78.8 W).

    python benchmarks/bench_facility.py
    python benchmarks/bench_facility.py --sizes 100000 --repeat 20 --json facility.json

Reports times only; nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

from dcsim.facility.cooling import CoolingModel, CoolingParams
from dcsim.facility.safety import enforce_limits
from dcsim.facility.topology import FreeGpus, place_job, regular_tree

IDLE_W, MIN_W, TDP_W = 78.8, 200.0, 700.0


def _per_call_us(fn, repeat: int) -> float:
    fn()  # warm caches (scipy's CSR slices, the tree's child lists)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat * 1e6


def bench(gpus: int, repeat: int) -> dict:
    rng = np.random.default_rng(0)
    per_rack = 8 * 4
    loose = regular_tree(gpus, 8, 4, 8, 4)
    # rack limit at 80 % of a full rack's TDP: racks running more than ~80 % hot must cap
    tight = regular_tree(gpus, 8, 4, 8, 4, limits_w={"rack": 0.8 * per_rack * TDP_W})
    pausing = regular_tree(gpus, 8, 4, 8, 4, limits_w={"rack": 0.8 * per_rack * MIN_W})
    running = rng.random(gpus) < 0.9
    request = np.where(running, TDP_W, IDLE_W)
    min_w = np.where(running, MIN_W, IDLE_W)
    paused_w = np.full(gpus, IDLE_W)
    value = rng.random(gpus)
    slack = np.full(gpus, np.inf)
    free = rng.random(gpus) < 0.5
    counted = FreeGpus(loose, np.flatnonzero(free).tolist())
    some_free = int(np.flatnonzero(free)[0])

    def leave_and_rejoin() -> None:
        counted.discard(some_free)
        counted.add(some_free)
    cooling = CoolingModel(CoolingParams(design_it_power_w=gpus * TDP_W, economiser="air"))
    over = tight.element_power_w(request) > tight.limit_w
    return {
        "gpus": gpus,
        "racks": loose.kinds.count("rack"),
        "racks_over_limit": int(over.sum()),
        "element_sums_us": _per_call_us(lambda: loose.element_power_w(request), repeat),
        "safety_within_limits_us": _per_call_us(lambda: enforce_limits(loose, request, min_w, paused_w, value, slack), repeat),
        "safety_capping_us": _per_call_us(lambda: enforce_limits(tight, request, min_w, paused_w, value, slack), repeat),
        "safety_pausing_us": _per_call_us(lambda: enforce_limits(pausing, request, min_w, paused_w, value, slack),
                                          max(1, repeat // 10)),
        "place_8_gpu_job_us": _per_call_us(lambda: place_job(loose, free, 8), repeat),
        "place_8_gpu_job_counted_us": _per_call_us(lambda: counted.place(8), repeat),
        "place_1_gpu_job_counted_us": _per_call_us(lambda: counted.place(1), repeat),
        "free_set_change_us": _per_call_us(leave_and_rejoin, repeat),
        "cooling_interval_us": _per_call_us(lambda: cooling.advance(0.5 * gpus * TDP_W, 0.6 * gpus * TDP_W, 300.0, 22.0),
                                            repeat),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    rows = [bench(n, args.repeat) for n in args.sizes]
    keys = [k for k in rows[0] if k.endswith("_us")]
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {platform.machine()}; µs per call")
    print(f"{'gpus':>8} {'racks':>6} {'over':>5} " + " ".join(f"{k[:-3]:>24}" for k in keys))
    for r in rows:
        print(f"{r['gpus']:>8} {r['racks']:>6} {r['racks_over_limit']:>5} " + " ".join(f"{r[k]:>24.1f}" for k in keys))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
