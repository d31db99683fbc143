"""Speed of the learning policies: batched acting, learner steps, and whole runs against a rule-based policy.

    python benchmarks/bench_learning.py                 # acting at 1k/10k/100k agents, learner steps, runs
    python benchmarks/bench_learning.py --json out.json

Reports rates (decisions/s, steps/s, simulated s per wall s) and ratios, never pass/fail: the machines here
are shared and noisy, so read the numbers, do not assert on them.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from dcsim.config import load_scenario
from dcsim.learning import FEATURES
from dcsim.policy import load_policy
from dcsim.runner import run_scenario


def _best_of(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def acting(sizes: list[int]) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    policies = {"qlearning": load_policy("qlearning", {})}
    try:
        policies["dqn"] = load_policy("dqn", {})
    except Exception as exc:  # torch missing: report and go on
        print(f"dqn skipped: {exc}")
    for name, pol in policies.items():
        pol.reset(np.random.default_rng(0), None, max(sizes))
        for n in sizes:
            x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
            agents = np.arange(n)
            t = _best_of(lambda: pol.choose(x, agents))
            rows.append({"policy": name, "agents": n, "decisions_per_s": n / t, "us_per_decision": 1e6 * t / n})
        one = rng.normal(size=(1, len(FEATURES))).astype(np.float32)
        t = _best_of(lambda: [pol.choose(one, np.zeros(1, np.int64)) for _ in range(200)]) / 200
        rows.append({"policy": name, "agents": 1, "decisions_per_s": 1 / t, "us_per_decision": 1e6 * t})
    return rows


def learner_steps(batch: int, steps: int) -> list[dict]:
    try:
        from policies.dqn_core import TorchLearner
    except ImportError as exc:
        print(f"learner skipped: {exc}")
        return []
    rng = np.random.default_rng(0)
    f = len(FEATURES)
    data = {"obs": rng.normal(size=(batch, f)).astype(np.float32), "action": rng.integers(0, 5, batch),
            "reward": rng.normal(size=batch).astype(np.float32), "next_obs": rng.normal(size=(batch, f)).astype(np.float32),
            "discount": np.full(batch, 0.9, np.float32)}
    import torch

    rows = []
    torch.set_num_threads(1)  # as the dqn policy does (torch_threads=1)
    for opt in ("adam", "sgd"):
        lr = TorchLearner(f, 5, (64, 64), optimizer=opt, device="cpu")
        lr.step(data)
        t0 = time.perf_counter()
        for _ in range(steps):
            lr.step(data)
        dt = time.perf_counter() - t0
        rows.append({"learner": f"torch-cpu {opt}", "net": f"{f}-64-64-5", "batch": batch, "steps_per_s": steps / dt})
    return rows


def runs(scenario: str, horizon: str) -> list[dict]:
    sc = load_scenario(scenario, [f"horizon_s={horizon}"])
    rows = []
    base = None
    run_scenario(sc)  # warm-up: imports and the solar model's first call are not the policy's cost
    for name, params in (("always_on", {}), ("price_threshold", {}), ("qlearning", {}), ("dqn", {})):
        try:
            pol = load_policy(name, params)
        except Exception as exc:
            print(f"{name} skipped: {exc}")
            continue
        t0 = time.perf_counter()
        s = run_scenario(sc, policy=pol).summary
        wall = time.perf_counter() - t0
        rate = sc.horizon_s / wall
        base = base or rate
        rows.append({"policy": name, "gpus": sc.cluster.gpus, "wall_s": wall, "simulated_s_per_wall_s": rate,
                     "ratio_to_always_on": rate / base, "decisions": getattr(pol, "decisions", None),
                     "events": s["performance"]["events"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--scenario", default="scenarios/quickstart.yaml")
    ap.add_argument("--horizon", default="1d")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    out = {"acting": acting(args.sizes), "learner": learner_steps(args.batch, args.steps),
           "runs": runs(args.scenario, args.horizon)}
    for section, rows in out.items():
        print(f"\n{section}")
        for r in rows:
            print("  " + ", ".join(f"{k}={v:,.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
