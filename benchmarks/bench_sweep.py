"""A sweep's wall time on each backend: in this process, the local process pool, and an embedded Ray.

The sweep is the quickstart scenario (scaled to ``--gpus`` GPUs with arrivals scaled alike) over a grid of
``market.scarcity_kappa`` values × one policy × ``--seeds`` seeds, each backend into a fresh folder so every cell
runs. The Ray row is the cells' time in a Ray session started beforehand (its start is reported apart); pool and
Ray both use ``--workers`` workers, and an untimed one-cell sweep first pays this process's imports.
It also checks that every backend wrote the identical table (the point of the backends is that only the wall
time differs).

    python benchmarks/bench_sweep.py                       # 12 cells of 256 GPUs for 6 h, 2 workers
    python benchmarks/bench_sweep.py --gpus 512 --horizon 12h --workers 2 --json sweep.json

Reports rates and ratios only; nothing here asserts a time. On a shared machine other processes compete for the
cores, so run it when the machine is quiet (``uptime`` shows the load).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from dcsim.backends import RayBackend, have_ray
from dcsim.cli import QUICKSTART, _builtin
from dcsim.sweep import sweep


def run(backend: str, workers: int, args: argparse.Namespace, out: Path) -> dict:
    grid = {"market.scarcity_kappa": [str(k) for k in args.kappas]}
    # the quickstart has 64 GPUs at 0.004 jobs/s: keep its load per GPU
    overrides = [f"cluster.gpus={args.gpus}", f"workload.arrivals.rate_per_s={0.004 * args.gpus / 64}",
                 f"horizon_s={args.horizon}", "supply.solar.capacity_w=" + str(30000 * args.gpus / 64)]
    seeds = list(range(1, args.seeds + 1))
    t0 = time.perf_counter()
    result = sweep(_builtin(QUICKSTART), grid, [args.policy], seeds, out, overrides=overrides, backend=backend,
                   jobs=workers)
    wall = time.perf_counter() - t0
    cells = len(result.ran)
    return {"backend": backend, "workers": workers, "cells": cells, "wall_s": wall, "cells_per_s": cells / wall,
            "table": result.table}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=256)
    parser.add_argument("--horizon", default="6h")
    parser.add_argument("--kappas", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--policy", default="renewable_follower")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        warm = argparse.Namespace(**(vars(args) | {"kappas": args.kappas[:1], "seeds": 1}))
        run("local", 1, warm, Path(tmp) / "warm-up")  # imports and caches, not timed
        rows.append(run("local", 1, args, Path(tmp) / "serial"))
        rows.append(run("local", args.workers, args, Path(tmp) / "pool"))
        if have_ray():
            t0 = time.perf_counter()
            with RayBackend(args.workers):  # the sweep below runs in this session: its time is the cells' alone
                start = time.perf_counter() - t0
                row = run("ray", args.workers, args, Path(tmp) / "ray")
            rows.append(row | {"ray_start_s": start})
        else:
            print("Ray is not installed (pip install 'dcsim[ray]'): the Ray row is missing", file=sys.stderr)
    for row in rows[1:]:
        pd.testing.assert_frame_equal(row["table"], rows[0]["table"], check_exact=True)
    serial = rows[0]["wall_s"]
    pool = rows[1]["wall_s"]
    print(f"sweep: {rows[0]['cells']} cells ({len(args.kappas)} kappas × {args.seeds} seeds, {args.policy}), "
          f"{args.gpus} GPUs for {args.horizon} each; {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'backend':<18}{'wall s':>9}{'cells/s':>9}{'vs serial':>11}{'vs pool':>9}")
    for row in rows:
        label = f"{row['backend']} ×{row['workers']}"
        print(f"{label:<18}{row['wall_s']:>9.1f}{row['cells_per_s']:>9.2f}{serial / row['wall_s']:>10.2f}×"
              f"{pool / row['wall_s']:>8.2f}×")
    if len(rows) > 2:
        r = rows[2]
        total = r["wall_s"] + r["ray_start_s"]
        print(f"the Ray row excludes starting Ray ({r['ray_start_s']:.1f} s); with it: {total:.1f} s = "
              f"{pool / total:.2f}× the pool")
    print("every backend wrote the identical table")
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "table"} for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
