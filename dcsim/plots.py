"""Figures of a run, built from its tables: power by source, price against renewable fraction, queue and
waits, wallets. ``--plots`` saves them as PNG; the HTML report embeds the same figures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.engine import RunResult


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def power_by_source(ts: pd.DataFrame) -> dict[str, np.ndarray]:
    """Mean power by source over each interval between time-series records, W (from the energy books)."""
    t = ts["time_s"].to_numpy(float)
    dt = np.diff(t)
    ok = dt > 0
    out = {"t_h": t[:-1][ok] / 3600.0}
    for col in ("renewable_used_j", "battery_out_j", "grid_j", "unserved_j", "curtailed_j", "charged_j"):
        out[col.replace("_j", "_w")] = np.diff(ts[col].to_numpy(float))[ok] / dt[ok]
    out["dt_h"] = dt[ok] / 3600.0
    return out


def power_figure(ts: pd.DataFrame, title: str = "mean power by source between records"):
    """Stacked power by source (renewable, battery, grid, unserved) with the renewable power available."""
    plt = pyplot()
    p = power_by_source(ts)
    kw = 1e-3
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.stackplot(p["t_h"], p["renewable_used_w"] * kw, p["battery_out_w"] * kw, p["grid_w"] * kw,
                 p["unserved_w"] * kw, labels=["renewable", "battery", "grid", "unserved"], step="post",
                 colors=["#4daf4a", "#984ea3", "#999999", "#e41a1c"])
    ax.step(ts["time_s"] / 3600.0, ts["renewable_w"] * kw, where="post", color="#ff7f00", lw=1.2,
            label="renewable available")
    ax.set_xlabel("time since start (h)")
    ax.set_ylabel("power (kW)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def price_figure(rounds: pd.DataFrame):
    """Token price and renewable fraction over time, and price against renewable fraction (one point a round)."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    t_h = rounds["time_s"] / 3600.0
    ax1.step(t_h, rounds["price_tokens_per_kwh"], where="post", color="#377eb8")
    ax1.set_xlabel("time since start (h)")
    ax1.set_ylabel("token price (tokens/kWh)", color="#377eb8")
    ax1b = ax1.twinx()
    ax1b.step(t_h, rounds["renewable_fraction"], where="post", color="#4daf4a")
    ax1b.set_ylabel("renewable fraction of demand", color="#4daf4a")
    ax1b.set_ylim(0, 1.05)
    ax2.scatter(rounds["renewable_fraction"], rounds["price_tokens_per_kwh"], s=10, alpha=0.6)
    ax2.set_xlabel("renewable fraction of demand")
    ax2.set_ylabel("token price (tokens/kWh)")
    ax2.set_title("one point per market round")
    fig.tight_layout()
    return fig


def queue_figure(ts: pd.DataFrame | None, jobs: pd.DataFrame | None):
    """Queued and running jobs over time, and the histogram of waits before start."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if ts is not None:
        ax1.step(ts["time_s"] / 3600.0, ts["queue_length"], where="post", label="queued")
        ax1.step(ts["time_s"] / 3600.0, ts["jobs_running"], where="post", label="running")
        ax1.legend()
    else:
        ax1.text(0.5, 0.5, "timeseries.csv not written", ha="center", transform=ax1.transAxes)
    ax1.set_xlabel("time since start (h)")
    ax1.set_ylabel("jobs")
    waits = jobs["wait_s"].dropna().to_numpy(float) if jobs is not None else np.array([])
    if waits.size:
        ax2.hist(waits, bins=50)
    else:
        ax2.text(0.5, 0.5, "no job started" if jobs is not None else "jobs.csv not written", ha="center",
                 transform=ax2.transAxes)
    ax2.set_xlabel("wait before start (s)")
    ax2.set_ylabel("jobs")
    fig.tight_layout()
    return fig


def wallets_figure(rounds: pd.DataFrame):
    """Tokens held, minted and debited over time, and the Gini coefficient of wallets."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    t_h = rounds["time_s"] / 3600.0
    ax1.step(t_h, rounds["tokens_held"], where="post", label="held (all wallets)")
    ax1.step(t_h, rounds["tokens_minted"].cumsum(), where="post", label="endowments minted (cumulative)")
    ax1.step(t_h, rounds["tokens_debited"].cumsum(), where="post", label="debited for energy (cumulative)")
    ax1.set_xlabel("time since start (h)")
    ax1.set_ylabel("tokens")
    ax1.legend(fontsize=8)
    ax2.step(t_h, rounds["gini_wallets"], where="post", color="#984ea3")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("time since start (h)")
    ax2.set_ylabel("Gini coefficient of wallets")
    ax2.set_title("inequality of wallets")
    fig.tight_layout()
    return fig


def plot_run(result: RunResult, out: Path) -> list[Path]:
    """Write the standard plots of a run into ``out``; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    title = f"Power by source — {result.scenario.name} / {result.policy.name}"
    figures = {"power_by_source.png": power_figure(result.timeseries, title),
               "queue_and_waits.png": queue_figure(result.timeseries, result.jobs)}
    if not result.rounds.empty:
        figures["price_vs_renewable.png"] = price_figure(result.rounds)
        figures["wallets.png"] = wallets_figure(result.rounds)
    plt = pyplot()
    files = []
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        files.append(out / name)
    return files
