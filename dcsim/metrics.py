"""The run summary: energy by source, coverage, carbon, cost, job outcomes, waits and token economics."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from dcsim.engine import RunResult
from dcsim.job_log import JobTotals
from dcsim.learning import episode_reward, episode_totals
from dcsim.market import J_PER_KWH, gini


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else math.nan


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def price_statistics(rounds: pd.DataFrame) -> dict[str, float]:
    """Mean price, volatility (std of log returns between consecutive positive prices) and Pearson correlation
    of price with renewable fraction, over rounds with a finite price."""
    if rounds.empty:
        return {"mean": math.nan, "volatility": math.nan, "corr_with_renewable_fraction": math.nan}
    finite = np.isfinite(rounds["price_tokens_per_kwh"].to_numpy(float))  # Kelly with nothing to sell: ∞
    if not finite.any():
        return {"mean": math.nan, "volatility": math.nan, "corr_with_renewable_fraction": math.nan}
    price = rounds["price_tokens_per_kwh"].to_numpy(float)[finite]
    rho = rounds["renewable_fraction"].to_numpy(float)[finite]
    # log returns between consecutive rounds with positive prices (a zero price has no log)
    both = (price[:-1] > 0) & (price[1:] > 0)
    returns = np.log(price[1:][both] / price[:-1][both])
    corr = math.nan
    if price.size > 2 and np.std(price) > 0 and np.std(rho) > 0:
        corr = float(np.corrcoef(price, rho)[0, 1])
    return {
        "mean": float(price.mean()),
        "volatility": float(np.std(returns, ddof=1)) if returns.size > 1 else math.nan,
        "corr_with_renewable_fraction": corr,
    }


def _nanmean(rounds: pd.DataFrame, column: str) -> float:
    if rounds.empty or rounds[column].isna().all():
        return math.nan
    return float(rounds[column].mean())


def token_flows(tokens: dict[str, float]) -> dict[str, float]:
    """``summary.json``'s token flows of a run's market (:attr:`dcsim.market_round.MarketRound.tokens` + held)."""
    return {k: tokens[k] for k in ("minted", "spent", "held", "burned", "debit_shortfall")}


def market_statistics(scenario: Any, rounds: pd.DataFrame, wallets: np.ndarray) -> dict[str, Any]:
    """``summary.json``'s market block: mechanism, rounds, rationed rounds, fairness, welfare, wallet inequality."""
    return {
        "mechanism": scenario.market.mechanism,
        "rounds": int(len(rounds)),
        "rationed_rounds": int(rounds["rationed"].sum()) if not rounds.empty else 0,
        "jain_fairness_mean": _nanmean(rounds, "jain_allocation_over_request"),
        "welfare_ratio_mean": _nanmean(rounds, "welfare_ratio"),
        "gini_wallets_end": gini(wallets),
    }


def energy_cost_tokens(result: RunResult) -> float:
    """What the energy consumed cost at the merit-order token prices: renewable and battery energy at their
    configured costs, grid energy at the exchange rate times its USD cost plus the carbon adder."""
    sc = result.scenario.market.supply_curve
    e = result.energy
    return (e["renewable_used_j"] / J_PER_KWH * sc.renewable_tokens_per_kwh
            + e["battery_out_j"] / J_PER_KWH * sc.battery_tokens_per_kwh
            + sc.grid_tokens_per_usd * e["cost_usd"] + sc.carbon_adder_tokens_per_kg * e["carbon_g"] / 1000.0)


def job_totals(result: RunResult) -> JobTotals:
    """What the summary reads from the job table: collected by the run as jobs ended, or from ``result.jobs``."""
    if result.job_totals is not None:
        return result.job_totals
    return JobTotals.of_table(result.jobs, result.scenario.warmup_s, result.scenario.horizon_s)


def summarize(result: RunResult) -> dict[str, Any]:
    """Build ``summary.json``'s content from a run. Every number is computed from the run's own tables."""
    sc = result.scenario
    e = result.energy
    totals = job_totals(result)
    counts = totals.status_counts
    waits = totals.waits()
    slowdown = totals.slowdowns()
    consumed = e["consumed_j"]
    generated = e["renewable_generated_j"]
    drops = totals.drops_by_reason()
    pending = {s: counts[s] for s in ("deferred", "queued", "starting", "running")}
    wall = result.counters["wall_s"]
    rounds = result.rounds
    value_done = totals.value_completed()
    energy_cost = energy_cost_tokens(result)
    summary = {
        "scenario": sc.name,
        "policy": result.policy.name,
        "seed": sc.seed,
        "horizon_s": sc.horizon_s,
        "energy_j": {
            "consumed": consumed,
            "renewable": e["renewable_used_j"],
            "battery": e["battery_out_j"],
            "grid": e["grid_j"],
            "unserved": e["unserved_j"],
            "renewable_generated": generated,
            "curtailed": e["curtailed_j"],
            "battery_charged": e["charged_j"],
            "battery_losses": e["battery_loss_j"],
        },
        # Shares of the energy consumed: renewable power used directly, and with the battery's output added (the
        # battery charges only from surplus renewable power, but it may start the run charged: its initial charge
        # is not renewable energy of the run, so the two shares are reported apart).
        "renewable_share": e["renewable_used_j"] / consumed if consumed > 0 else math.nan,
        "renewable_battery_share": ((e["renewable_used_j"] + e["battery_out_j"]) / consumed if consumed > 0
                                    else math.nan),
        # renewable energy used, stored or exported (charging from the grid and export exist with facility.battery)
        "renewable_utilisation": ((e["renewable_used_j"] + (e["charged_j"] - e.get("charge_from_grid_j", 0.0))
                                   + e.get("renewable_export_j", 0.0)) / generated if generated > 0 else math.nan),
        "carbon_kg": e["carbon_g"] / 1000.0,
        "grid_cost_usd": e["cost_usd"],
        "jobs": {
            "arrived": int(sum(counts.values()) - counts["future"]),
            "completed": counts["completed"],
            "dropped": counts["dropped"],
            "dropped_by_reason": {str(k): int(v) for k, v in drops.items()},
            "pending": int(sum(pending.values())),
            "pending_by_state": pending,
            "deadline_misses": totals.deadline_misses,
            "counted_after_warmup": totals.counted,
        },
        "wait_s": {
            "mean": float(waits.mean()) if waits.size else math.nan,
            "p50": _pct(waits, 50), "p95": _pct(waits, 95), "p99": _pct(waits, 99),
        },
        "slowdown": {
            "mean": float(slowdown.mean()) if slowdown.size else math.nan,
            "p95": _pct(slowdown, 95), "p99": _pct(slowdown, 99),
        },
        "token_price": price_statistics(result.rounds),
        "tokens": token_flows(result.tokens),
        "market": market_statistics(sc, rounds, result.wallets),
        "welfare_tokens": {
            "value_of_completed_jobs": value_done,
            "energy_cost": energy_cost,
            "welfare": value_done - energy_cost,
        },
        "reward": _reward_summary(result),
        "performance": {
            "events": int(result.counters["events"]),
            "wall_s": wall,
            "events_per_wall_s": result.counters["events"] / wall if wall > 0 else math.nan,
            "simulated_s_per_wall_s": sc.horizon_s / wall if wall > 0 else math.nan,
            "per_job_path": result.engine,  # "compiled" (numba, dcsim/kernel.py) or "python": the same results
        },
    }
    if result.facility is not None:
        summary["facility"] = dict(result.facility)
    if sc.facility.failures is not None:  # every job accounted for: arrived = completed + dropped + pending + killed
        summary["jobs"]["killed"] = counts["killed"]
    return _nan_to_none(summary)


def _reward_summary(result: RunResult) -> dict[str, Any]:
    """The scenario's reward (``reward:`` weights) over the whole run, for any policy: per GPU, in total and by
    component (the same totals a learning policy's feedback sums to)."""
    totals = episode_totals(result)
    total = episode_reward(totals, result.scenario.reward)
    return {"per_gpu": total / result.scenario.cluster.gpus, "total": total, "components": totals}


def summary_table(summary: dict[str, Any]) -> str:
    """A short human-readable table of the headline numbers."""
    if summary.get("kind") == "llm_serving":
        from dcsim.serving.runner import serving_table

        return serving_table(summary)
    kwh = 1 / 3.6e6
    e = summary["energy_j"]
    j = summary["jobs"]
    w = summary["wait_s"]

    def f(x: Any, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    rows = [
        ("scenario / policy / seed", f"{summary['scenario']} / {summary['policy']} / {summary['seed']}"),
        ("energy consumed", f"{f(e['consumed'] * kwh, ',.1f')} kWh"),
        ("  from renewable / battery / grid", f"{f(e['renewable'] * kwh, ',.1f')} / {f(e['battery'] * kwh, ',.1f')} / {f(e['grid'] * kwh, ',.1f')} kWh"),
        ("  unserved", f"{f(e['unserved'] * kwh, ',.3f')} kWh"),
        ("renewable share / with battery", f"{f(summary['renewable_share'], '.1%')} / {f(summary['renewable_battery_share'], '.1%')} of energy consumed"),
        ("renewable curtailed", f"{f(e['curtailed'] * kwh, ',.1f')} kWh"),
        ("carbon", f"{f(summary['carbon_kg'], ',.1f')} kg CO2"),
        ("grid cost", f"${f(summary['grid_cost_usd'], ',.2f')}"),
        ("jobs completed / dropped / pending", f"{j['completed']:,} / {j['dropped']:,} / {j['pending']:,}  (of {j['arrived']:,} arrived)"),
        ("wait p50 / p95 / p99", f"{f(w['p50'], ',.1f')} / {f(w['p95'], ',.1f')} / {f(w['p99'], ',.1f')} s"),
        ("deadline misses", f"{j['deadline_misses']:,}"),
        ("mean token price", f"{f(summary['token_price']['mean'], '.3f')} tokens/kWh"),
        ("tokens minted / spent / held", f"{f(summary['tokens']['minted'], ',.1f')} / {f(summary['tokens']['spent'], ',.1f')} / {f(summary['tokens']['held'], ',.1f')}"),
        ("reward per GPU (scenario's weights)", f"{f(summary['reward']['per_gpu'], ',.3f')}"),
        ("events / wall-second", f"{f(summary['performance']['events_per_wall_s'], ',.0f')}"),
    ]
    fac = summary.get("facility", {})
    if "pue_energy_weighted" in fac:  # facility.cooling: energy above is facility energy (IT + cooling + overhead)
        rows.insert(2, ("  PUE energy-weighted / time mean", f"{f(fac['pue_energy_weighted'], '.4f')} / "
                                                             f"{f(fac['pue_time_mean'], '.4f')}"))
    if "setpoint" in fac:  # facility.cooling.setpoint_control: the setpoint the facility agent kept, and its cost
        sp = fac["setpoint"]
        at = next(i for i, (k, _) in enumerate(rows) if k.startswith("  PUE")) + 1
        rows.insert(at, ("  supply-air setpoint mean / inlet violations",
                         f"{f(sp['mean_supply_air_c'], '.2f')} °C ({sp['control']}) / "
                         f"{f(sp['inlet_violation_s'] / 3600, ',.2f')} h above {sp['inlet_limit_c']:g} °C"))
    if "battery" in fac:  # facility.battery: the grid's two directions and the tariffs
        bat = fac["battery"]
        at = next(i for i, (k, _) in enumerate(rows) if k == "grid cost") + 1
        rows[at:at] = [
            ("  grid import / export", f"{f(bat['grid_import_j'] * kwh, ',.1f')} / {f(bat['grid_export_j'] * kwh, ',.1f')} kWh"),
            ("  export revenue / demand charge", f"${f(bat['export_revenue_usd'], ',.2f')} / ${f(bat['demand_charge_usd'], ',.2f')}"),
            ("  net grid bill", f"${f(bat['net_grid_bill_usd'], ',.2f')}  (battery: {bat['dispatch']})"),
        ]
    if "power_delivery" in fac:  # facility.topology: the safety layer's work
        pd_ = fac["power_delivery"]
        capped = ", ".join(f"{k} {v * kwh:,.1f}" for k, v in pd_["capped_ws_by_kind"].items())
        rows.append(("power delivery: safety interventions", f"{pd_['safety_interventions']:,} (overrides "
                     f"{pd_['overrides']:,}); capped kWh by element kind: {capped}" if pd_["safety"] else "safety layer off"))
    if "failures" in fac:  # facility.failures: counts by component kind, and what happened to the jobs
        fl = fac["failures"]
        kinds = [k for k, v in fl.items() if isinstance(v, dict) and ("failures" in v or "trips" in v)]
        counts = ", ".join(f"{k} {fl[k].get('failures', fl[k].get('trips', 0)):,}" for k in kinds)
        rows.append(("failures", f"{counts}; jobs requeued / killed {fl['jobs_requeued']:,} / {fl['jobs_killed']:,}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
