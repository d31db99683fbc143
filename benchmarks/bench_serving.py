"""Requests per wall-second of the LLM serving model over a day of the Azure conv trace (replayed), per policy.

Runs ``scenarios/llm_serving.yaml`` (8 H100s, continuous batching up to 16, CAISO prices) with each rule
baseline and reports requests simulated per wall-second, events per wall-second and simulated seconds per
wall-second. Needs ``../shared/traces``; with ``--synthetic`` it uses Poisson arrivals at the trace's mean rate
instead (no files needed).

    python benchmarks/bench_serving.py
    python benchmarks/bench_serving.py --horizon 6h --policies policies.serving:FullKV --json serving.json
    python benchmarks/bench_serving.py --synthetic

Reports times only; nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from dcsim.config import load_scenario
from dcsim.policy import load_policy
from dcsim.runner import run_scenario

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "llm_serving.yaml"
POLICIES = ("policies.serving:FullKV", "policies.serving:QualityFloor", "policies.serving:PriceAware",
            "policies.serving:DenyOverSlo")
#: The conv trace's mean arrival rate (19,366 requests in its 58 minutes), for --synthetic.
CONV_RATE_PER_S = 19_366 / 3_502.0


def bench(policy: str, horizon: str, synthetic: bool) -> dict:
    overrides = [f"horizon_s={horizon}"]
    if synthetic:
        overrides += ["workload.llm_serving.arrivals={'source': 'poisson', 'rate_per_s': %r, 'prompt_tokens': 1000, "
                      "'mean_output_tokens': 250}" % CONV_RATE_PER_S,
                      "workload.llm_serving.price_usd_per_mwh={'constant': 50}"]
    sc = load_scenario(SCENARIO, overrides)
    params = sc.policy.params if policy == sc.policy.name else {}
    run = run_scenario(sc, load_policy(policy, params))
    s = run.summary
    perf = s["performance"]
    return {"policy": policy, "horizon_s": sc.horizon_s, "requests": s["requests"]["arrived"],
            "wall_s": perf["wall_s"], "requests_per_wall_s": perf["requests_per_wall_s"],
            "events_per_wall_s": perf["events"] / perf["wall_s"],
            "simulated_s_per_wall_s": perf["simulated_s_per_wall_s"], "profit_usd": s["profit_usd"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", default="24h", help="simulated time (default a day)")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES))
    parser.add_argument("--synthetic", action="store_true", help="Poisson arrivals at the trace's rate, no files")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'policy':34s} {'requests':>9s} {'wall s':>8s} {'req/wall-s':>11s} {'events/wall-s':>14s} "
          f"{'sim-s/wall-s':>13s}")
    for policy in args.policies:
        row = bench(policy, args.horizon, args.synthetic)
        rows.append(row)
        print(f"{policy:34s} {row['requests']:9,d} {row['wall_s']:8.1f} {row['requests_per_wall_s']:11,.0f} "
              f"{row['events_per_wall_s']:14,.0f} {row['simulated_s_per_wall_s']:13,.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"python": platform.python_version(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
