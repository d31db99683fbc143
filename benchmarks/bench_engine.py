"""Engine throughput at 1k, 10k and 100k GPUs, next to the raw SimPy timeout rate in the same process.

Each size runs a rule-based policy on Poisson arrivals scaled with the cluster (100 jobs per GPU per
simulated day, mean duration 520 s: about 60 % utilisation), a clear-sky solar plant through pvlib,
and posted-price market rounds every 5 minutes. The 100k size runs a shorter horizon.

    python benchmarks/bench_engine.py                 # 1k and 10k for a day, 100k for 2 h
    python benchmarks/bench_engine.py --sizes 10000 --horizon 86400 --policy race_to_idle
    python benchmarks/bench_engine.py --sizes 10000 --horizon 7200 --policy truthful --mechanism vcg
    python benchmarks/bench_engine.py --json results.json
    python benchmarks/bench_engine.py --sizes 1000 10000 --facility   # with a power-delivery tree and limits

Reports rates and ratios only; nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
import simpy

from dcsim.config import parse_scenario
from dcsim.runner import run_scenario

JOBS_PER_GPU_PER_DAY = 100.0
MEAN_DURATION_S = 520.0


def raw_simpy_rate(pending: int = 1, n_events: int = 400_000) -> float:
    """Timeouts per wall-second of bare SimPy processes, with ``pending`` timeouts in the event heap.

    ``pending = 1`` is SimPy's best case (one process). A naive SimPy model of a cluster keeps one
    pending timeout per running job, and the heap's depth then dominates the cost (DESIGN.md: 150-400k
    events/s at 10k-100k pending), so each size is also compared with SimPy at its own concurrency.
    """
    env = simpy.Environment()
    rng = np.random.default_rng(0)
    per = n_events // pending + 1
    gaps = rng.exponential(1.0, size=(pending, per)).tolist()

    def ticker(env, delays):
        for d in delays:
            yield env.timeout(d)

    for row in gaps:
        env.process(ticker(env, row))
    t0 = time.perf_counter()
    env.run()
    return pending * per / (time.perf_counter() - t0)


# --facility: 8 GPUs per node, 4 nodes per rack, 8 racks per PDU, 4 PDUs per feed; racks limited to 80 % of a
# full rack at TDP (H100: 32 × 700 W × 0.8), so the safety layer caps at busy rounds.
FACILITY = {"topology": {"gpus_per_node": 8, "nodes_per_rack": 4, "racks_per_pdu": 8, "pdus_per_feed": 4,
                         "limits": {"rack_w": 0.8 * 32 * 700.0}}}


def bench_scenario(gpus: int, horizon_s: float, policy: str, mechanism: str = "posted_price",
                   facility: bool = False):
    return parse_scenario({
        "name": f"bench-{gpus}",
        "start": "2023-06-21T07:00:00Z",
        "horizon_s": horizon_s,
        "seed": 1,
        "cluster": {"gpus": gpus, "gpu_model": "H100"},
        "workload": {
            "arrivals": {"process": "poisson", "rate_per_s": JOBS_PER_GPU_PER_DAY * gpus / 86400.0},
            "duration_s": {"distribution": "exponential", "mean": MEAN_DURATION_S},
        },
        # Solar peaks near half the cluster's full power, so prices move through the day.
        "supply": {"solar": {"capacity_w": 400.0 * gpus, "latitude": 37.36, "longitude": -121.93}},
        "market": {"interval_s": 300, "initial_tokens": 1000.0, "mechanism": mechanism},
        "policy": {"name": policy},
        "outputs": {"jobs_table": False, "timeseries_table": False},
        **({"facility": FACILITY} if facility else {}),
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--horizon", type=float, default=86_400.0, help="simulated seconds for sizes below 100k")
    parser.add_argument("--large-horizon", type=float, default=7_200.0, help="simulated seconds at >= 100k GPUs")
    parser.add_argument("--policy", default="always_on")
    parser.add_argument("--mechanism", default="posted_price", help="posted_price, uniform_price, vcg or kelly")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--facility", action="store_true",
                        help="add a power-delivery tree with binding rack limits (the safety layer on)")
    args = parser.parse_args(argv)

    simpy_rate = raw_simpy_rate()
    print(f"python {platform.python_version()}, simpy {simpy.__version__}, {platform.machine()}")
    print(f"raw SimPy timeouts, 1 pending: {simpy_rate:,.0f} events/s")
    print("'SimPy@depth' is raw SimPy with as many pending timeouts as the run had running jobs on average\n")
    header = f"{'GPUs':>8} {'policy':>14} {'sim h':>6} {'jobs':>10} {'events':>10} {'wall s':>8} " \
             f"{'events/s':>10} {'jobs/s':>9} {'sim-s/wall-s':>12} {'vs SimPy':>8} {'SimPy@depth':>11} {'vs @depth':>9}"
    print(header)
    print("-" * len(header))
    rows = []
    for gpus in args.sizes:
        horizon = args.large_horizon if gpus >= 100_000 else args.horizon
        sc = bench_scenario(gpus, horizon, args.policy, args.mechanism, args.facility)
        wall0 = time.perf_counter()
        run = run_scenario(sc)
        total_wall = time.perf_counter() - wall0  # includes job generation and solar modelling
        perf = run.summary["performance"]
        jobs = run.summary["jobs"]["arrived"]
        # mean number of running jobs, sampled at market rounds (each benchmark job uses one GPU)
        running = run.result.rounds["bidders"].mean() if not run.result.rounds.empty else 1.0
        depth = max(1, int(round(running)))
        depth_rate = raw_simpy_rate(pending=depth)
        row = {
            "gpus": gpus, "policy": args.policy, "facility": args.facility, "horizon_s": horizon, "jobs": jobs,
            "completed": run.summary["jobs"]["completed"], "events": perf["events"],
            "engine_wall_s": perf["wall_s"], "total_wall_s": total_wall,
            "events_per_s": perf["events_per_wall_s"], "jobs_per_s": jobs / perf["wall_s"],
            "sim_s_per_wall_s": perf["simulated_s_per_wall_s"],
            "ratio_to_raw_simpy": perf["events_per_wall_s"] / simpy_rate,
            "mean_running_jobs": float(running), "raw_simpy_at_depth_events_per_s": depth_rate,
            "ratio_to_raw_simpy_at_depth": perf["events_per_wall_s"] / depth_rate,
        }
        rows.append(row)
        print(f"{gpus:>8,} {args.policy:>14} {horizon / 3600:>6.1f} {jobs:>10,} {perf['events']:>10,} "
              f"{perf['wall_s']:>8.1f} {row['events_per_s']:>10,.0f} {row['jobs_per_s']:>9,.0f} "
              f"{row['sim_s_per_wall_s']:>12,.0f} {row['ratio_to_raw_simpy']:>8.2f} {depth_rate:>11,.0f} "
              f"{row['ratio_to_raw_simpy_at_depth']:>9.2f}")
        sys.stdout.flush()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"raw_simpy_events_per_s": simpy_rate, "runs": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
