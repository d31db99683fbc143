"""Cost of one decision call through the engine's decision dispatcher, at one deciding agent and at many.

Builds the 10k-GPU world of ``benchmarks/bench_engine.py``, runs it for a simulated hour so GPUs hold jobs,
then times the dispatcher's calls (``ask_bids`` for a bid, ``idle_decisions`` for ``on_idle``) for ``n``
deciding agents, and the policy's own method on a prebuilt observation of the same agents. The difference is
what the engine adds to a decision: building the observation, checking the answer, logging the call.

    python benchmarks/bench_decisions.py
    python benchmarks/bench_decisions.py --gpus 10000 --agents 1 10 100 10000 --policy truthful

Reports CPU microseconds (``time.process_time``, best of ``--repeats``); nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import bench_scenario  # noqa: E402

from dcsim.engine import Simulation  # noqa: E402
from dcsim.policy import load_policy  # noqa: E402
from dcsim.seeding import Streams  # noqa: E402
from dcsim.supply import build_supply  # noqa: E402
from dcsim.workload import build_jobs  # noqa: E402


def _per_call_us(fn, calls: int, repeats: int) -> float:
    """Best-of-``repeats`` CPU microseconds per call of ``fn``."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - t0) / calls)
    return best * 1e6


def _idle_actions(dec, idx: np.ndarray) -> np.ndarray:
    """The dispatcher's ``on_idle`` call for agents ``idx`` (observation, policy, check, log)."""
    if hasattr(dec, "idle_actions"):
        return dec.idle_actions(idx)
    from dcsim.policy import IdleAction, check_actions  # a tree from before idle_actions existed
    dec.log_decision("on_idle", idx.size)
    return check_actions(dec.policy.on_idle(dec.agent_obs(idx)), idx.size, IdleAction, "on_idle")


def warmed_simulation(gpus: int, policy: str, warm_s: float) -> Simulation:
    """A simulation of the benchmark world run for ``warm_s`` simulated seconds (GPUs busy, rounds cleared)."""
    sc = bench_scenario(gpus, 86_400.0, policy)
    streams = Streams(sc.seed)
    sim = Simulation(sc, load_policy(sc.policy.name, sc.policy.params), build_jobs(sc, streams), build_supply(sc),
                     streams)
    for process in (sim._supply_changes(), sim._market(), sim._arrivals()):
        sim.env.process(process)
    sim.env.run(until=warm_s)
    return sim


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=10_000)
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 10, 100, 1_000, 10_000])
    parser.add_argument("--policy", nargs="+", default=["truthful", "deadline_slack", "renewable_follower"])
    parser.add_argument("--warm", type=float, default=3_600.0, help="simulated seconds run before timing")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    header = f"{'policy':>20} {'method':>8} {'agents':>7} {'call µs':>9} {'policy µs':>10} {'engine µs':>10} " \
             f"{'engine µs/agent':>15}"
    print(f"{args.gpus:,} GPUs, CPU µs per call, best of {args.repeats}")
    print(header)
    print("-" * len(header))
    for name in args.policy:
        sim = warmed_simulation(args.gpus, name, args.warm)
        dec, policy = sim.decisions, sim.policy
        busy = np.flatnonzero(sim.cluster.assigned >= 0)
        for method in ("bid", "on_idle"):
            if not dec.calls[method]:
                continue
            for n in args.agents:
                if method == "bid":
                    idx = (busy if busy.size >= n else np.arange(args.gpus))[:n].astype(np.int64)
                    call = lambda idx=idx: dec.ask_bids(idx)  # noqa: E731
                    obs = dec.agent_obs(idx)
                    own = lambda obs=obs: policy.bid(obs)  # noqa: E731
                else:
                    idx = np.arange(n, dtype=np.int64)
                    obs = dec.agent_obs(idx)
                    call = lambda idx=idx: _idle_actions(dec, idx)  # noqa: E731
                    own = lambda obs=obs: policy.on_idle(obs)  # noqa: E731
                calls = max(20, 20_000 // max(n, 1) if n < 1000 else 20)
                rows_before = len(dec.decision_rows)
                total_us = _per_call_us(call, calls, args.repeats)
                del dec.decision_rows[rows_before:]
                own_us = _per_call_us(own, calls, args.repeats)
                engine_us = total_us - own_us
                print(f"{name:>20} {method:>8} {n:>7,} {total_us:>9.1f} {own_us:>10.1f} {engine_us:>10.1f} "
                      f"{engine_us / n:>15.3f}")
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
