"""Writes docs/serving-tutorial.md: the quality / energy / profit trade-off of the serving baselines on the Azure
conv trace with CAISO prices, from real runs (needs ../shared/traces).

    PYTHONPATH=. python tools/make_serving_tutorial.py                 # the committed page (6 h, 5 seeds)
    PYTHONPATH=. python tools/make_serving_tutorial.py --horizon 20min --seeds 2 --out /tmp/tut

Part 1 runs each rule baseline once on the replayed trace (a trace replay draws nothing at random, so every seed
gives the same run). Part 2 counts the same trace per minute into an invocations file (``Time,TIMESTAMP``),
whose arrivals are redrawn within each minute by the ``arrivals`` stream, and compares the baselines over
seeds with paired confidence intervals (``dcsim compare``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "scenarios" / "llm_serving.yaml"
TRACE = REPO.parent / "shared" / "traces" / "workload" / "AzureLLMInferenceTrace_conv.csv"
POLICIES = {"policies.serving:FullKV": "full KV", "policies.serving:QualityFloor": "quality floor 0.9",
            "policies.serving:PriceAware": "price-aware", "policies.serving:DenyOverSlo": "deny over SLO"}
GPUS = 3  # fewer than the scenario's 8, so that capacity binds and the configurations matter


def per_minute(trace: Path, out: Path) -> tuple[Path, int, int]:
    """Count the trace's requests per minute into ``out`` (``Time,TIMESTAMP``); returns the path and the trace's
    mean prompt and output tokens (rounded), which every invocation then carries."""
    df = pd.read_csv(trace, parse_dates=["TIMESTAMP"])
    counts = df.groupby(pd.Grouper(key="TIMESTAMP", freq="1min"))["TIMESTAMP"].count()
    counts.index.name = "Time"
    counts.to_csv(out)
    return out, int(round(df["ContextTokens"].mean())), int(round(df["GeneratedTokens"].mean()))


def _row(label: str, s: dict) -> list[str]:
    slo = s["slo_attainment"]
    return [label, f"{s['success_rate']:.1%}", f"{s['denial_rate']:.1%}", f"{s['drop_rate']:.1%}",
            f"{s['mean_quality']:.3f}", f"{slo['ttft']:.1%}", f"{slo['e2e']:.1%}", f"{s['energy']['consumed_kwh']:.1f}",
            f"${s['revenue_usd']:.2f}", f"${s['energy_cost_usd']:.2f}", f"${s['profit_usd']:.2f}"]


def more_less(a: float, b: float, more: str, less: str) -> str:
    return more if a > b else less if a < b else "the same"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", default="6h")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "docs"), help="folder of the page (images go to OUT/img)")
    args = parser.parse_args(argv)
    if not TRACE.is_file():
        print(f"error: {TRACE} is absent; the tutorial runs on ../shared/traces", file=sys.stderr)
        return 2
    from dcsim.compare import compare
    from dcsim.config import load_scenario
    from dcsim.policy import load_policy
    from dcsim.runner import run_scenario
    from dcsim.serving.plots import timeline_figure
    from dcsim.plots import pyplot

    out = Path(args.out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    base = [f"horizon_s={args.horizon}", f"cluster.gpus={GPUS}"]
    sc = load_scenario(SCENARIO, base)
    header = ["policy", "success", "denied", "dropped", "mean quality", "TTFT SLO", "e2e SLO", "energy (kWh)",
              "revenue", "energy cost", "profit"]
    rows, runs = [], {}
    for name, label in POLICIES.items():
        params = sc.policy.params if name == sc.policy.name else {}
        run = run_scenario(sc, load_policy(name, params))
        runs[name] = run
        rows.append(_row(label, run.summary))
    plt = pyplot()
    fig = timeline_figure(runs["policies.serving:PriceAware"].result)
    fig.savefig(out / "img" / "serving_timeline.png", dpi=100)
    plt.close(fig)

    inv_path, prompt, output = per_minute(TRACE, out / "img" / ".conv_per_minute.csv")
    inv = [f"workload.llm_serving.arrivals={{source: invocations, path: {inv_path}, prompt_tokens: {prompt}, "
           f"output_tokens: {output}, repeat: true}}"]
    cmp = compare(load_scenario(SCENARIO, base + inv), list(POLICIES), seeds=list(range(args.seeds)), jobs=1,
                  backend="local")
    inv_path.unlink()
    metrics = ["success_rate", "denial_rate", "mean_quality", "slo_attainment.ttft", "revenue_usd",
               "energy_cost_usd", "profit_usd"]
    d = cmp.differences.set_index(["arm", "metric"])
    diff_rows = []
    for name in list(POLICIES)[1:]:
        cells = [POLICIES[name] + " − full KV"]
        for m in metrics:
            r = d.loc[(name, m)]
            cells.append(f"{r['mean_diff']:+.4g} [{r['ci_low']:.4g}, {r['ci_high']:.4g}]")
        diff_rows.append(cells)
    full = runs["policies.serving:FullKV"].summary
    floor = runs["policies.serving:QualityFloor"].summary
    deny = runs["policies.serving:DenyOverSlo"].summary
    shown = f"--horizon {args.horizon} --set cluster.gpus={GPUS}"
    page = f"""# Tutorial: the quality / energy / profit trade-off of LLM serving

Generated by `tools/make_serving_tutorial.py --horizon {args.horizon} --seeds {args.seeds}` from real runs of
`scenarios/llm_serving.yaml` (the Azure conv trace replayed, CAISO NP15 day-ahead prices, the made-up example
configuration table `traces/serving_configs_example.csv`) on {GPUS} H100s instead of 8, so that capacity binds.
The model is described in [serving.md](serving.md); the numbers below depend on its assumed batching and power
curves, so read them as the model's trade-off, not as measurements.

## 1. Four rule baselines on the trace

```bash
python -m dcsim run scenarios/llm_serving.yaml {shown} --policy policies.serving:FullKV
python -m dcsim run scenarios/llm_serving.yaml {shown} --policy policies.serving:QualityFloor
python -m dcsim run scenarios/llm_serving.yaml {shown}                       # price-aware (the scenario's policy)
python -m dcsim run scenarios/llm_serving.yaml {shown} --policy policies.serving:DenyOverSlo --plots
```

{_table(header, rows)}

What to read in it:

* **Full KV** serves every admitted request at quality 1; on {GPUS} GPUs {full['drop_rate']:.1%} of the requests
  wait past `max_wait_s` (60 s) and are dropped, and {full['slo_attainment']['ttft']:.1%} of the served ones see
  their first token within the 2 s target.
* **Quality floor 0.9** (SnapKV keeping 256 tokens: 0.7× time, 0.66× energy) serves
  {floor['success_rate']:.1%} of the requests (full KV: {full['success_rate']:.1%}) at quality 0.9. With revenue
  scaled by quality its revenue is {more_less(floor['revenue_usd'], full['revenue_usd'], 'higher', 'lower')}
  (${floor['revenue_usd']:.2f} against ${full['revenue_usd']:.2f}), its energy cost
  {more_less(floor['energy_cost_usd'], full['energy_cost_usd'], 'higher', 'lower')}
  (${floor['energy_cost_usd']:.2f} against ${full['energy_cost_usd']:.2f}).
* **Price-aware** picks its configuration from the price (55 → 100 $/MWh spans its ranks, never below quality
  0.85); its timeline over the run:
  ![configuration chosen against the price](img/serving_timeline.png)
* **Deny over SLO** denies {deny['denial_rate']:.1%} upfront and drops {deny['drop_rate']:.1%}; the requests
  it serves meet the TTFT target {deny['slo_attainment']['ttft']:.1%} of the time (full KV:
  {full['slo_attainment']['ttft']:.1%}); its profit is ${deny['profit_usd']:.2f} (full KV: ${full['profit_usd']:.2f}).
* **Energy** costs at most {max(r.summary['energy_cost_usd'] / r.summary['revenue_usd'] for r in runs.values()):.1%}
  of revenue in these runs, with token prices of the order of public API prices; profit leaves out the
  GPUs' own cost, which dominates a real service's.

A trace replay draws nothing at random, so another seed gives the same numbers: there is nothing to average.

## 2. Paired confidence intervals over seeds

Counting the trace per minute gives an invocations file (`Time,TIMESTAMP`, see [serving.md](serving.md#arrivals))
whose arrivals each seed redraws within each minute; every request then has the trace's mean tokens
({prompt} prompt, {output} output). All policies see the same requests on a seed (common random numbers, checked
by hashing the request table), so paired differences are tight:

```python
import pandas as pd
df = pd.read_csv("../shared/traces/workload/AzureLLMInferenceTrace_conv.csv", parse_dates=["TIMESTAMP"])
counts = df.groupby(pd.Grouper(key="TIMESTAMP", freq="1min"))["TIMESTAMP"].count()
counts.index.name = "Time"
counts.to_csv("conv_per_minute.csv")
```

```bash
python -m dcsim compare scenarios/llm_serving.yaml {shown} --seeds {args.seeds} \\
  --set "workload.llm_serving.arrivals={{source: invocations, path: $PWD/conv_per_minute.csv, prompt_tokens: {prompt}, output_tokens: {output}, repeat: true}}" \\
  --policies {' '.join(POLICIES)}
```

Paired difference against full KV, mean [95% CI] over {args.seeds} seeds:

{_table(["arm"] + metrics, diff_rows)}
"""
    (out / "serving-tutorial.md").write_text(page, encoding="utf-8")
    print(f"wrote {out / 'serving-tutorial.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
