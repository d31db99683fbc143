"""Engine throughput at 1k, 10k and 100k GPUs, next to the raw SimPy timeout rate in the same process.

Each size runs a rule-based policy on Poisson arrivals scaled with the cluster (100 jobs per GPU per
simulated day, mean duration 520 s: about 60 % utilisation), a clear-sky solar plant through pvlib,
and posted-price market rounds every 5 minutes. The 100k size runs a shorter horizon.

    python benchmarks/bench_engine.py                 # 1k and 10k for a day, 100k for 2 h
    python benchmarks/bench_engine.py --sizes 10000 --horizon 86400 --policy race_to_idle
    python benchmarks/bench_engine.py --sizes 10000 --horizon 7200 --policy truthful --mechanism vcg
    python benchmarks/bench_engine.py --json results.json
    python benchmarks/bench_engine.py --sizes 10000 --cooling   # facility.cooling on
    python benchmarks/bench_engine.py --side-by-side --sizes 10000 --horizon 7200   # every policy vs always_on
    python benchmarks/bench_engine.py --side-by-side --sizes 10000 --horizon 3600 --policies qlearning dqn --greedy
    python benchmarks/bench_engine.py --target --sizes 10000 100000 --horizon 86400  # the target workload

``--side-by-side`` runs every registered policy (or ``--policies``) on the same world in this process, one after
the other, timing ``Simulation.run()`` alone by CPU time, and prints jobs per CPU-second and the ratio to
``always_on``. ``--target`` runs the target workload (single-GPU jobs of 10 minutes' mean work at 80 % load,
5-minute rounds: about 1.15M jobs per simulated day per 10k GPUs), each size in a fresh process so its peak RSS
(``resource.getrusage``) is its own, and reports wall and CPU seconds with and without building the jobs.
    python benchmarks/bench_engine.py --sizes 1000 10000 --facility   # with a power-delivery tree and limits
    python benchmarks/bench_engine.py --sizes 1000 --horizon 21600 --facility --cpu   # Simulation.run() CPU seconds
    python benchmarks/bench_engine.py --sizes 1000 10000 --battery --policy policies.rules:BatteryThreshold
                                      # facility.battery: the dispatched books (and, with that policy, dispatch)

Reports rates and ratios only; nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import simpy

from dcsim.config import parse_scenario
from dcsim.runner import run_scenario

JOBS_PER_GPU_PER_DAY = 100.0
MEAN_DURATION_S = 520.0
# The target workload (issue 12): single-GPU jobs, 10 minutes' mean work, 80 % load.
TARGET_MEAN_WORK_S = 600.0
TARGET_LOAD = 0.8


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
                   target: bool = False, cooling: bool = False, facility: bool = False, battery: bool = False,
                   params: dict | None = None):
    """The benchmark world at ``gpus`` GPUs; ``target``: the target workload's arrivals and work instead;
    ``cooling``: facility.cooling on at a constant outdoor temperature; ``facility``: the power-delivery
    tree with binding rack limits (:data:`FACILITY`); ``battery``: a battery (1 kWh, 0.5 kW each way per GPU) under
    ``facility.battery`` with grid charging, export and a demand charge."""
    rate_per_s = (TARGET_LOAD * gpus / TARGET_MEAN_WORK_S) if target else JOBS_PER_GPU_PER_DAY * gpus / 86400.0
    mean_s = TARGET_MEAN_WORK_S if target else MEAN_DURATION_S
    data = {
        "name": f"bench-{gpus}",
        "start": "2023-06-21T07:00:00Z",
        "horizon_s": horizon_s,
        "seed": 1,
        "cluster": {"gpus": gpus, "gpu_model": "H100"},
        "workload": {
            "arrivals": {"process": "poisson", "rate_per_s": rate_per_s},
            "duration_s": {"distribution": "exponential", "mean": mean_s},
        },
        # Solar peaks near half the cluster's full power, so prices move through the day.
        "supply": {"solar": {"capacity_w": 400.0 * gpus, "latitude": 37.36, "longitude": -121.93}},
        "market": {"interval_s": 300, "initial_tokens": 1000.0, "mechanism": mechanism},
        "policy": {"name": policy, "params": dict(params or {})},
        "outputs": {"jobs_table": False, "timeseries_table": False},
    }
    if cooling:  # facility.cooling at a constant outdoor temperature: the per-event facility-energy path
        data["facility"] = {"cooling": {"weather": {"dry_bulb_c": 25.0}, "economiser": "air"}}
    if facility:
        data["facility"] = dict(data.get("facility", {}), **FACILITY)
    if battery:  # the dispatched battery's books on every event; dispatch at rounds if the policy decides it
        data["supply"]["battery"] = {"capacity_wh": 1000.0 * gpus, "max_charge_w": 500.0 * gpus,
                                     "max_discharge_w": 500.0 * gpus}
        data["facility"] = dict(data.get("facility", {}), battery={
            "min_soc": 0.1, "grid_charging": True, "export_price_usd_per_mwh": {"constant": 30.0},
            "demand_charge_usd_per_kw": 10.0})
    return parse_scenario(data)


def timed_run(gpus: int, horizon_s: float, policy: str, mechanism: str = "posted_price",
              target: bool = False, facility: bool = False, jobs_table: bool = False,
              params: dict | None = None, compiled: bool | None = None) -> dict:
    """Build the world (jobs, supply) and run it, timing the build and ``Simulation.run()`` by wall and CPU time.

    The jobs come from :func:`dcsim.workload.build_job_source`: above a million jobs they are streamed in chunks
    (``outputs.stream_jobs: auto``). ``jobs_table``: the run also writes its job table (streamed runs append it to
    a temporary Parquet file as jobs end, which is part of the run's time; the file is removed afterwards).
    ``compiled``: the per-job path (``Simulation``'s argument: None = compiled where the run can be and numba is
    installed; the first compiled run of a process also loads numba's cached machine code, ~0.5 s, inside the run)."""
    from dcsim.engine import Simulation
    from dcsim.policy import load_policy
    from dcsim.seeding import Streams
    from dcsim.supply import build_supply
    from dcsim.workload import build_job_source

    sc = bench_scenario(gpus, horizon_s, policy, mechanism, target, facility=facility, params=params)
    if jobs_table:
        sc = sc.model_copy(update={"outputs": sc.outputs.model_copy(update={"jobs_table": True})})
    wall0, cpu0 = time.perf_counter(), time.process_time()
    streams = Streams(sc.seed)
    sim = Simulation(sc, load_policy(sc.policy.name, sc.policy.params), build_job_source(sc, streams),
                     build_supply(sc), streams, compiled=compiled)
    wall1, cpu1 = time.perf_counter(), time.process_time()
    result = sim.run()
    wall2, cpu2 = time.perf_counter(), time.process_time()
    counts = result.job_totals.status_counts
    arrived = sum(counts.values()) - counts["future"]
    return {"gpus": gpus, "policy": policy, "mechanism": mechanism, "horizon_s": horizon_s, "jobs": arrived,
            "streamed": sim.streamed, "jobs_table": jobs_table, "per_job_path": result.engine,
            "jobs_file_mib": None if result.job_file is None else result.job_file.path.stat().st_size / 2**20,
            "completed": counts["completed"], "events": result.counters["events"],
            "decisions": int(len(result.decisions)), "build_wall_s": wall1 - wall0, "build_cpu_s": cpu1 - cpu0,
            "run_wall_s": wall2 - wall1, "run_cpu_s": cpu2 - cpu1,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def side_by_side(sizes: list[int], horizon_s: float, policies: list[str], mechanism: str,
                 greedy: bool = False, repeat: int = 1) -> list[dict]:
    """Every policy on the same world in this process; jobs per CPU-second of ``Simulation.run()`` and the
    ratio to ``always_on``'s (run first). ``greedy``: each learning policy also runs frozen (``learn: false``:
    greedy actions, no updates; an untrained policy, so this times evaluation, not a trained policy's choices).
    ``repeat``: each run that many times, the least CPU time kept (the usual estimate on a shared machine: noise
    only ever adds time)."""
    from dcsim.policy import policy_class

    from dcsim.compiled import numba_available

    # always_on first, on the Python per-job path and (numba installed) on the compiled one; the built-in rules take
    # the compiled path with their compiled forms (dcsim.kernel_rules), qlearning its Q-table form (dcsim.kernel's
    # BID_QTABLE), dqn its network form (BID_DQN)
    compiled = numba_available()
    runs = [("always_on (python)", "always_on", None, False)] + (
        [("always_on", "always_on", None, None)] if compiled else [])
    from dcsim.errors import DcsimError
    from dcsim.policy import load_policy

    for p in policies:
        if p == "always_on":
            continue
        try:
            pol = load_policy(p, {})
        except DcsimError as exc:  # e.g. mappo without a checkpoint: not something to time here
            print(f"skipped {p}: {str(exc).splitlines()[0]}")
            continue
        if pol.overrides("serve"):
            print(f"skipped {p}: an LLM-serving policy (it decides nothing in a GPU-job run)")
            continue
        runs.append((p, p, None, None))
    if greedy:
        runs = [r for run in runs for r in ([run, (f"{run[0]} (greedy)", run[1], {"learn": False}, None)]
                                            if policy_class(run[1]).wants_feedback else [run])]
    if compiled:  # load (or compile) the kernel's machine code before anything is timed
        timed_run(4, 600.0, "always_on", mechanism, compiled=True)
        # and once with a rule's decisions: the kernel's rule code, and the decision log's first large table
        # (pandas' string dtype imports pyarrow, ~0.2 s once per process), are not per-job costs
        timed_run(400, 3600.0, "truthful", mechanism, compiled=True)
    header = f"{'GPUs':>7} {'policy':>19} {'jobs':>9} {'events':>9} {'decisions':>9} {'run cpu s':>9} " \
             f"{'run wall s':>10} {'jobs/cpu-s':>10} {'vs python always_on':>19} {'vs compiled':>11}"
    print(header)
    print("-" * len(header))
    rows = []
    for gpus in sizes:
        base = base_compiled = None
        for label, policy, params, path in runs:
            tries = [timed_run(gpus, horizon_s, policy, mechanism, params=params, compiled=path)
                     for _ in range(max(1, repeat))]
            row = min(tries, key=lambda r: r["run_cpu_s"])
            row["run_cpu_s_tries"] = [r["run_cpu_s"] for r in tries]
            row["policy"] = label
            row["jobs_per_cpu_s"] = row["jobs"] / row["run_cpu_s"]
            base = base or row["jobs_per_cpu_s"]
            if label == "always_on" and row["per_job_path"] == "compiled":
                base_compiled = row["jobs_per_cpu_s"]
            row["ratio_to_always_on"] = row["jobs_per_cpu_s"] / base  # always_on on the Python path
            row["ratio_to_compiled_always_on"] = None if base_compiled is None else row["jobs_per_cpu_s"] / base_compiled
            rows.append(row)
            vs_compiled = "" if base_compiled is None else f"{row['ratio_to_compiled_always_on']:.2f}"
            print(f"{gpus:>7,} {label:>19} {row['jobs']:>9,} {row['events']:>9,} {row['decisions']:>9,} "
                  f"{row['run_cpu_s']:>9.2f} {row['run_wall_s']:>10.2f} {row['jobs_per_cpu_s']:>10,.0f} "
                  f"{row['ratio_to_always_on']:>19.2f} {vs_compiled:>11}  {row['per_job_path']}")
            sys.stdout.flush()
    return rows


def target_runs(sizes: list[int], horizon_s: float, policy: str, jobs_table: bool = False) -> list[dict]:
    """The target workload at each size, each in a fresh process (its own peak RSS)."""
    header = f"{'GPUs':>8} {'sim h':>6} {'jobs':>11} {'events':>11} {'build s':>8} {'run wall s':>10} " \
             f"{'run cpu s':>9} {'total wall s':>12} {'jobs/s':>8} {'peak RSS MiB':>12}"
    print(f"target workload: single-GPU jobs, {TARGET_MEAN_WORK_S:.0f} s mean work, {TARGET_LOAD:.0%} load, "
          f"5-minute rounds, policy {policy}")
    print(header)
    print("-" * len(header))
    rows = []
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
            "from bench_engine import timed_run; print(json.dumps(timed_run(*json.loads(sys.argv[1]))))")
    for gpus in sizes:
        args = json.dumps([gpus, horizon_s, policy, "posted_price", True, False, jobs_table])
        proc = subprocess.run([sys.executable, "-c", code, args], check=True, capture_output=True, text=True,
                              env=dict(os.environ, MPLBACKEND="Agg"))
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["total_wall_s"] = row["build_wall_s"] + row["run_wall_s"]
        row["jobs_per_s"] = row["jobs"] / row["run_wall_s"]
        rows.append(row)
        print(f"{gpus:>8,} {horizon_s / 3600:>6.1f} {row['jobs']:>11,} {row['events']:>11,} {row['build_wall_s']:>8.1f} "
              f"{row['run_wall_s']:>10.1f} {row['run_cpu_s']:>9.1f} {row['total_wall_s']:>12.1f} "
              f"{row['jobs_per_s']:>8,.0f} {row['peak_rss_mib']:>12,.0f}  streamed={row['streamed']}"
              + ("" if row["jobs_file_mib"] is None else f" jobs file {row['jobs_file_mib']:,.0f} MiB"))
        sys.stdout.flush()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--horizon", type=float, default=86_400.0, help="simulated seconds for sizes below 100k")
    parser.add_argument("--large-horizon", type=float, default=7_200.0, help="simulated seconds at >= 100k GPUs")
    parser.add_argument("--policy", default="always_on")
    parser.add_argument("--mechanism", default="posted_price", help="posted_price, uniform_price, vcg or kelly")
    parser.add_argument("--cooling", action="store_true", help="turn facility.cooling on (constant 25 °C outdoors)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--side-by-side", action="store_true",
                        help="run every policy (or --policies) on the same world; jobs/s and ratio to always_on")
    parser.add_argument("--policies", nargs="+", help="with --side-by-side: these policies (default: all registered)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="with --side-by-side: run each policy this many times and keep the least CPU time")
    parser.add_argument("--greedy", action="store_true",
                        help="with --side-by-side: also run each learning policy frozen (learn: false, greedy)")
    parser.add_argument("--target", action="store_true", help="the target workload, with peak RSS per size")
    parser.add_argument("--jobs-table", action="store_true",
                        help="with --target: also write the job table (streamed runs: Parquet appends as jobs end)")
    parser.add_argument("--battery", action="store_true",
                        help="add supply.battery under facility.battery (grid charging, export, demand charge)")
    parser.add_argument("--facility", action="store_true",
                        help="add a power-delivery tree with binding rack limits (the safety layer on)")
    parser.add_argument("--cpu", action="store_true",
                        help="time Simulation.run() alone by CPU seconds (steadier than wall time on a busy machine)")
    args = parser.parse_args(argv)
    print(f"python {platform.python_version()}, simpy {simpy.__version__}, {platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.side_by_side or args.target:
        if args.side_by_side:
            from dcsim.policy import registered_policies
            rows = side_by_side(args.sizes, args.horizon, args.policies or list(registered_policies()), args.mechanism,
                                greedy=args.greedy, repeat=args.repeat)
        else:
            rows = target_runs(args.sizes, args.horizon, args.policy, args.jobs_table)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        if args.json:
            Path(args.json).write_text(json.dumps({"runs": rows}, indent=2), encoding="utf-8")
        return 0

    if args.cpu:
        rows = []
        for gpus in args.sizes:
            horizon = args.large_horizon if gpus >= 100_000 else args.horizon
            row = timed_run(gpus, horizon, args.policy, args.mechanism, facility=args.facility)
            row["facility"] = args.facility
            rows.append(row)
            print(f"{gpus:>8,} GPUs {horizon / 3600:.1f} h facility={'on' if args.facility else 'off'}: "
                  f"{row['events']:,} events, run {row['run_cpu_s']:.2f} CPU s ({row['run_wall_s']:.2f} wall s), "
                  f"{row['events'] / row['run_cpu_s']:,.0f} events per CPU-s")
        if args.json:
            Path(args.json).write_text(json.dumps({"runs": rows}, indent=2), encoding="utf-8")
        return 0

    simpy_rate = raw_simpy_rate()
    print(f"raw SimPy timeouts, 1 pending: {simpy_rate:,.0f} events/s")
    print("'SimPy@depth' is raw SimPy with as many pending timeouts as the run had running jobs on average\n")
    header = f"{'GPUs':>8} {'policy':>14} {'sim h':>6} {'jobs':>10} {'events':>10} {'wall s':>8} " \
             f"{'events/s':>10} {'jobs/s':>9} {'sim-s/wall-s':>12} {'vs SimPy':>8} {'SimPy@depth':>11} {'vs @depth':>9}"
    print(header)
    print("-" * len(header))
    rows = []
    for gpus in args.sizes:
        horizon = args.large_horizon if gpus >= 100_000 else args.horizon
        sc = bench_scenario(gpus, horizon, args.policy, args.mechanism, cooling=args.cooling, facility=args.facility,
                            battery=args.battery)
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
            "gpus": gpus, "policy": args.policy, "cooling": args.cooling, "facility": args.facility,
            "battery": args.battery, "horizon_s": horizon,
            "jobs": jobs,
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
