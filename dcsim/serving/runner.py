"""Runs a serving scenario (``workload.llm_serving``) end to end and summarises it for summary.json."""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pandas as pd

from dcsim.errors import ScenarioError, SeriesRangeError
from dcsim.policy import Policy
from dcsim.serving.arrivals import build_requests
from dcsim.serving.configurations import load_serving_configs
from dcsim.serving.model import REFERENCE, ServingResult, ServingSimulation
from dcsim.timeseries import StepSeries

#: Joules in a megawatt-hour.
J_PER_MWH = 3.6e9


def price_series(scenario: Any, quality: dict[str, dict]) -> StepSeries:
    """The serving run's energy price (USD/MWh): ``workload.llm_serving.price_usd_per_mwh``, else the grid's."""
    from dcsim.supply import _grid_series

    own = scenario.workload.llm_serving.price_usd_per_mwh
    source, field = ((own, "workload.llm_serving.price_usd_per_mwh") if own is not None
                     else (scenario.supply.grid.price_usd_per_mwh, "supply.grid.price_usd_per_mwh"))
    series = _grid_series("price_usd_per_mwh", source, "price", pd.Timestamp(scenario.start), scenario.supply,
                          quality, field)
    try:
        series.change_times(0.0, scenario.horizon_s)
    except SeriesRangeError as exc:
        raise ScenarioError(None, [(field, f"{series.start_s:.0f}..{series.end_s:.0f} s", str(exc))]) from None
    return series


def carbon_series(scenario: Any, quality: dict[str, dict]) -> StepSeries:
    """The grid carbon intensity the serving run's market prices through its carbon adder (g/kWh): read only when
    ``market.supply_curve.carbon_adder_tokens_per_kg`` is set (else the series is never used: a constant 0)."""
    from dcsim.supply import _grid_series

    source = scenario.supply.grid.carbon_g_per_kwh
    if scenario.market.supply_curve.carbon_adder_tokens_per_kg == 0 and source.constant is None:
        return StepSeries.constant("grid carbon_g_per_kwh", 0.0)
    return _grid_series("carbon_g_per_kwh", source, "carbon", pd.Timestamp(scenario.start), scenario.supply,
                        quality, "supply.grid.carbon_g_per_kwh")


def read_serving_data(scenario: Any, streams: Any):
    """Read every input of a serving run: the requests, the configuration table and the price series.

    Returns:
        ``(requests, configs, price, quality)``; ``quality`` holds one data-quality record per file read, by
        scenario field (what ``validate --data`` prints and ``summary.json`` keeps).
    """
    cfg = scenario.workload.llm_serving
    quality: dict[str, dict] = {}
    requests = build_requests(cfg, scenario.horizon_s, streams)
    if cfg.arrivals.source != "poisson":
        quality["workload.llm_serving.arrivals.path"] = {
            k: v for k, v in requests.attrs.items() if isinstance(v, (int, float, str))}
    configs = [REFERENCE]
    if cfg.configurations is not None:
        configs = load_serving_configs(cfg.configurations)
        quality["workload.llm_serving.configurations"] = {"source": str(cfg.configurations),
                                                          "format": "serving_configs", "rows_read": len(configs)}
    price = price_series(scenario, quality)
    return requests, configs, price, quality


def read_carbon(scenario: Any, quality: dict[str, dict]) -> StepSeries:
    """:func:`carbon_series`, its range checked against the horizon like the price's."""
    series = carbon_series(scenario, quality)
    try:
        series.change_times(0.0, scenario.horizon_s)
    except SeriesRangeError as exc:
        raise ScenarioError(None, [("supply.grid.carbon_g_per_kwh", f"{series.start_s:.0f}..{series.end_s:.0f} s",
                                    str(exc))]) from None
    return series


def simulate_serving(scenario: Any, policy: Policy, streams: Any,
                     progress: Callable[[float], None] | None = None) -> tuple[ServingResult, dict]:
    """Build the requests, configurations and price of ``scenario`` and simulate; returns the result and the
    data-quality records of the files read."""
    requests, configs, price, quality = read_serving_data(scenario, streams)
    carbon = read_carbon(scenario, quality)
    result = ServingSimulation(scenario, policy, requests, configs, price, streams, progress=progress,
                               carbon=carbon).run()
    return result, quality


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else math.nan


def _stats(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()) if values.size else math.nan, "p50": _pct(values, 50),
            "p95": _pct(values, 95), "p99": _pct(values, 99)}


def summarize_serving(result: ServingResult) -> dict[str, Any]:
    """``summary.json`` of a serving run. Every number comes from the run's request and price-step tables.

    Rates are over the requests that arrived; quality, latency and SLO attainment over the served (completed)
    requests that arrived at or after ``warmup_s``.
    """
    from dcsim.metrics import _nan_to_none, market_statistics, price_statistics, token_flows

    sc = result.scenario
    cfg = sc.workload.llm_serving
    r = result.requests
    status = r["status"].astype(str).to_numpy()
    arrived = int(len(r))
    counts = {s: int((status == s).sum()) for s in ("served", "denied", "dropped", "queued", "in_service")}
    served = status == "served"
    counted = served & (r["arrival_s"].to_numpy(float) >= sc.warmup_s)
    ttft = r.loc[counted, "ttft_s"].to_numpy(float)
    e2e = r.loc[counted, "e2e_s"].to_numpy(float)
    waits = r.loc[(r["arrival_s"] >= sc.warmup_s) & r["start_s"].notna(), "wait_s"].to_numpy(float)
    drops = r.loc[status == "dropped", "drop_reason"].astype(str).value_counts()
    steps = result.steps
    revenue = float(r["revenue_usd"].sum())
    cost = float(steps["energy_cost_usd"].sum())
    energy = float(steps["energy_j"].sum())
    tokens_per_usd = sc.market.supply_curve.grid_tokens_per_usd
    mix = r.loc[served, "config"].astype(str).value_counts()
    wall = result.counters["wall_s"]

    def share(x: int) -> float:
        return x / arrived if arrived else math.nan

    summary = {
        "scenario": sc.name, "policy": result.policy.name, "seed": sc.seed, "horizon_s": sc.horizon_s,
        "kind": "llm_serving",
        "success_rate": share(counts["served"]),
        "denial_rate": share(counts["denied"]),
        "drop_rate": share(counts["dropped"]),
        "mean_quality": float(r.loc[counted, "quality"].mean()) if counted.any() else math.nan,
        "slo_attainment": {"ttft": float((ttft <= cfg.slo.ttft_s).mean()) if ttft.size else math.nan,
                           "e2e": float((e2e <= cfg.slo.e2e_s).mean()) if e2e.size else math.nan,
                           "ttft_s": cfg.slo.ttft_s, "e2e_s": cfg.slo.e2e_s},
        "revenue_usd": revenue,
        "energy_cost_usd": cost,
        # what the Token Manager charged the GPUs for their energy above idle, at its round prices (tokens)
        "energy_cost_tokens": result.tokens["spent"],
        "profit_usd": revenue - cost,
        "requests": {"arrived": arrived, **{k: counts[k] for k in ("served", "denied", "dropped")},
                     "dropped_by_reason": {str(k): int(v) for k, v in drops.items()},
                     "pending": counts["queued"] + counts["in_service"],
                     "pending_by_state": {"queued": counts["queued"], "in_service": counts["in_service"]},
                     "served_by_config": {str(k): int(v) for k, v in mix.items()},
                     "counted_after_warmup": int(counted.sum())},
        "latency_s": {"wait": _stats(waits), "ttft": _stats(ttft), "e2e": _stats(e2e)},
        "energy": {"consumed_j": energy, "consumed_kwh": energy / 3.6e6,
                   "idle_j": result.totals["idle_energy_j"], "requests_j": float(r["energy_j"].sum()),
                   "mean_price_paid_usd_per_mwh": cost / energy * J_PER_MWH if energy > 0 else math.nan},
        # tokens are dcsim's internal currency, USD the external one: revenue, energy_cost and profit are the USD
        # figures at the market's exchange rate; minted ... debit_shortfall are the market's own flows
        "tokens": {"tokens_per_usd": tokens_per_usd, "revenue": revenue * tokens_per_usd,
                   "energy_cost": cost * tokens_per_usd, "profit": (revenue - cost) * tokens_per_usd,
                   **token_flows(result.tokens)},
        "token_price": price_statistics(result.rounds),
        "market": market_statistics(sc, result.rounds, result.wallets)
        | {"throttled_gpu_s": float(result.clock["throttled_s"].sum()),
           "paused_gpu_s": float(result.clock["paused_s"].sum())},
        "performance": {"events": int(result.counters["events"]), "wall_s": wall,
                        "requests_per_wall_s": arrived / wall if wall > 0 else math.nan,
                        "simulated_s_per_wall_s": sc.horizon_s / wall if wall > 0 else math.nan},
    }
    return _nan_to_none(summary)


def serving_table(summary: dict[str, Any]) -> str:
    """A short human-readable table of a serving run's headline numbers."""
    def f(x: Any, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    q = summary["requests"]
    lat = summary["latency_s"]
    slo = summary["slo_attainment"]
    rows = [
        ("scenario / policy / seed", f"{summary['scenario']} / {summary['policy']} / {summary['seed']}"),
        ("requests served / denied / dropped / pending",
         f"{q['served']:,} / {q['denied']:,} / {q['dropped']:,} / {q['pending']:,}  (of {q['arrived']:,} arrived)"),
        ("success rate / denial rate", f"{f(summary['success_rate'], '.2%')} / {f(summary['denial_rate'], '.2%')}"),
        ("mean quality (served)", f"{f(summary['mean_quality'], '.4f')}"),
        ("SLO attainment ttft / e2e", f"{f(slo['ttft'], '.2%')} (≤ {slo['ttft_s']:g} s) / "
                                      f"{f(slo['e2e'], '.2%')} (≤ {slo['e2e_s']:g} s)"),
        ("ttft p50 / p95 / p99", f"{f(lat['ttft']['p50'], ',.2f')} / {f(lat['ttft']['p95'], ',.2f')} / "
                                 f"{f(lat['ttft']['p99'], ',.2f')} s"),
        ("e2e p50 / p95 / p99", f"{f(lat['e2e']['p50'], ',.1f')} / {f(lat['e2e']['p95'], ',.1f')} / "
                                f"{f(lat['e2e']['p99'], ',.1f')} s"),
        ("energy consumed", f"{f(summary['energy']['consumed_kwh'], ',.1f')} kWh "
                            f"(mean price {f(summary['energy']['mean_price_paid_usd_per_mwh'], ',.2f')} $/MWh)"),
        ("revenue / energy cost / profit", f"${f(summary['revenue_usd'], ',.2f')} / ${f(summary['energy_cost_usd'], ',.2f')} / "
                                           f"${f(summary['profit_usd'], ',.2f')}"),
        ("tokens spent on energy / mean token price", f"{f(summary['energy_cost_tokens'], ',.3f')} tokens / "
                                                      f"{f(summary['token_price']['mean'], ',.3f')} tokens/kWh"),
        ("GPU-s throttled / paused by the market", f"{f(summary['market']['throttled_gpu_s'], ',.0f')} / "
                                                   f"{f(summary['market']['paused_gpu_s'], ',.0f')}"),
        ("requests / wall-second", f"{f(summary['performance']['requests_per_wall_s'], ',.0f')}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
