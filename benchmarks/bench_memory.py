"""Where a run's memory goes: resident memory after each step of the target workload (issue 12).

    python benchmarks/bench_memory.py 100000 3600     # GPUs, simulated seconds

Prints RSS (``/proc/self/status``, Linux) and peak RSS (``resource.getrusage``) after the imports, building the
jobs (``build_job_source``: a streamed source above a million jobs, else the whole table), the supply, the engine and
the run. Works on older trees too (falls back to ``build_jobs``), so two checkouts can be compared with PYTHONPATH.
"""
from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _report(step: str, extra: str = "") -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{step:<14} rss {_rss_mib():8.0f} MiB   peak {peak:8.0f} MiB   cpu {time.process_time():7.1f} s  {extra}",
          flush=True)


def main(argv: list[str]) -> None:
    gpus, horizon_s = int(argv[0]), float(argv[1])
    from bench_engine import bench_scenario
    from dcsim.engine import Simulation
    from dcsim.policy import load_policy
    from dcsim.seeding import Streams
    from dcsim.supply import build_supply

    try:
        from dcsim.workload import build_job_source as build
    except ImportError:  # a tree from before streamed jobs
        from dcsim.workload import build_jobs as build
    sc = bench_scenario(gpus, horizon_s, "always_on", "posted_price", True)
    _report("imports")
    streams = Streams(sc.seed)
    jobs = build(sc, streams)
    _report("jobs", type(jobs).__name__)
    supply = build_supply(sc)
    _report("supply")
    sim = Simulation(sc, load_policy("always_on", {}), jobs, supply, streams)
    del jobs
    _report("Simulation()")
    result = sim.run()
    _report("run()", f"events {result.counters['events']:,}")


if __name__ == "__main__":
    main(sys.argv[1:])
