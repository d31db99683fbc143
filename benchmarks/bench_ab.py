"""Engine speed of two source trees, measured interleaved (A B A B ...) so a noisy machine affects both alike.

Each case runs ``benchmarks/bench_engine.py`` of this checkout in a subprocess whose ``PYTHONPATH`` points at
one tree, alternating the trees, and reports each tree's median engine wall time and events/s and the ratio.

    python benchmarks/bench_ab.py --a /tmp/old_checkout --b . --reps 3
    python benchmarks/bench_ab.py --a /tmp/old --b . --case 10000:7200:always_on --case 1000:86400:always_on

Reports rates and ratios only; nothing here asserts a time.
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
DEFAULT_CASES = ["10000:7200:always_on", "1000:86400:always_on", "10000:7200:truthful"]


def run_once(tree: Path, gpus: int, horizon_s: float, policy: str) -> dict:
    """One benchmark run of ``tree``'s dcsim; returns bench_engine's row for the size."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        env = dict(os.environ, PYTHONPATH=str(tree.resolve()), MPLBACKEND="Agg")
        subprocess.run([sys.executable, str(BENCH), "--sizes", str(gpus), "--horizon", str(horizon_s),
                        "--large-horizon", str(horizon_s), "--policy", policy, "--json", str(out)],
                       cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())["runs"][0]


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
    header = f"{'GPUs':>7} {'sim h':>6} {'policy':>10} {'events':>9} {'A wall s':>9} {'B wall s':>9} " \
             f"{'A events/s':>11} {'B events/s':>11} {'B/A speed':>9}"
    print(header)
    print("-" * len(header))
    for case in cases:
        gpus_s, horizon_s, policy = case.split(":")
        gpus, horizon = int(gpus_s), float(horizon_s)
        runs = {"a": [], "b": []}
        for _ in range(args.reps):
            for key in ("a", "b"):
                runs[key].append(run_once(getattr(args, key), gpus, horizon, policy))
        events = {key: {r["events"] for r in rows} for key, rows in runs.items()}
        wall = {key: statistics.median(r["engine_wall_s"] for r in rows) for key, rows in runs.items()}
        rate = {key: statistics.median(r["events_per_s"] for r in rows) for key, rows in runs.items()}
        same = "" if events["a"] == events["b"] else f"  (event counts differ: {events})"
        print(f"{gpus:>7,} {horizon / 3600:>6.1f} {policy:>10} {min(events['b']):>9,} {wall['a']:>9.2f} "
              f"{wall['b']:>9.2f} {rate['a']:>11,.0f} {rate['b']:>11,.0f} {wall['a'] / wall['b']:>9.2f}{same}")
        sys.stdout.flush()
        results.append({"case": case, "runs": runs, "median_wall_s": wall, "median_events_per_s": rate})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
