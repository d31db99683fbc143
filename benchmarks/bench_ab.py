"""Engine speed of two source trees, measured interleaved (A B A B ...) so a noisy machine affects both alike.

Each case runs the scenario of ``benchmarks/bench_engine.py`` (this checkout's) in a subprocess whose
``PYTHONPATH`` points at one tree, alternating the trees. The subprocess builds the jobs and the supply, then
times ``Simulation.run()`` alone, by wall clock and by the process's CPU time (``time.process_time``: on a
shared machine CPU time moves far less than wall time when other work competes for the cores). Reports each
tree's median and the ratio A/B (above 1: B is faster).

    python benchmarks/bench_ab.py --a /tmp/old_checkout --b . --reps 5
    python benchmarks/bench_ab.py --a /tmp/old --b . --case 10000:7200:always_on --case 1000:86400:always_on

Reports times and ratios only; nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().with_name("bench_engine.py")
DEFAULT_CASES = ["10000:7200:always_on", "1000:86400:always_on", "10000:3600:truthful"]


_CHILD = """
import json, sys, time
sys.path.insert(1, {bench_dir!r})
from bench_engine import bench_scenario
from dcsim.engine import Simulation
from dcsim.policy import load_policy
from dcsim.seeding import Streams
from dcsim.supply import build_supply
from dcsim.workload import build_jobs
sc = bench_scenario({gpus}, {horizon_s}, {policy!r})
streams = Streams(sc.seed)
sim = Simulation(sc, load_policy(sc.policy.name, sc.policy.params), build_jobs(sc, streams), build_supply(sc), streams)
wall0, cpu0 = time.perf_counter(), time.process_time()
result = sim.run()
print(json.dumps({{"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0,
                  "events": result.counters["events"], "engine": sys.modules["dcsim.engine"].__file__}}))
"""


def run_once(tree: Path, gpus: int, horizon_s: float, policy: str) -> dict:
    """One timed engine run with ``tree``'s dcsim: wall and CPU seconds of ``Simulation.run()`` and its events."""
    code = _CHILD.format(bench_dir=str(BENCH.parent), gpus=gpus, horizon_s=horizon_s, policy=policy)
    env = dict(os.environ, PYTHONPATH=str(tree.resolve()), MPLBACKEND="Agg")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp, env=env, check=True, capture_output=True,
                              text=True)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    if not Path(row["engine"]).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: the run imported dcsim from {row['engine']}, not from the tree")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, type=Path, help="source tree A (the baseline), e.g. an old checkout")
    parser.add_argument("--b", required=True, type=Path, help="source tree B (the change)")
    parser.add_argument("--case", action="append", help="GPUS:HORIZON_S:POLICY (repeatable; default: three cases)")
    parser.add_argument("--reps", type=int, default=3, help="runs of each tree per case, interleaved")
    parser.add_argument("--json", help="also write every run to this JSON file")
    args = parser.parse_args(argv)
    cases = args.case or DEFAULT_CASES
    results = []
    header = f"{'GPUs':>7} {'sim h':>6} {'policy':>10} {'events':>9} {'A cpu s':>8} {'B cpu s':>8} {'A/B cpu':>7} " \
             f"{'A wall s':>8} {'B wall s':>8} {'A/B wall':>8}"
    print(header)
    print("-" * len(header))
    for case in cases:
        gpus_s, horizon_s, policy = case.split(":")
        gpus, horizon = int(gpus_s), float(horizon_s)
        runs: dict[str, list[dict]] = {"a": [], "b": []}
        for _ in range(args.reps):
            for key in ("a", "b"):
                runs[key].append(run_once(getattr(args, key), gpus, horizon, policy))
        events = {key: {r["events"] for r in rows} for key, rows in runs.items()}
        med = {(key, m): statistics.median(r[m] for r in rows) for key, rows in runs.items() for m in ("cpu_s", "wall_s")}
        same = "" if events["a"] == events["b"] else f"  (event counts differ: {events})"
        print(f"{gpus:>7,} {horizon / 3600:>6.1f} {policy:>10} {min(events['b']):>9,} {med['a', 'cpu_s']:>8.2f} "
              f"{med['b', 'cpu_s']:>8.2f} {med['a', 'cpu_s'] / med['b', 'cpu_s']:>7.3f} {med['a', 'wall_s']:>8.2f} "
              f"{med['b', 'wall_s']:>8.2f} {med['a', 'wall_s'] / med['b', 'wall_s']:>8.3f}{same}")
        sys.stdout.flush()
        results.append({"case": case, "runs": runs,
                        "median": {f"{key}_{m}": v for (key, m), v in med.items()}})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
