"""PNG plots of a run: power by source, token price against renewable fraction, queue, and wallets."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dcsim.engine import RunResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def power_by_source(ts) -> dict[str, np.ndarray]:
    """Mean power by source over each interval between time-series records, W (from the energy books)."""
    t = ts["time_s"].to_numpy(float)
    dt = np.diff(t)
    ok = dt > 0
    out = {"t_h": t[:-1][ok] / 3600.0}
    for col in ("renewable_used_j", "battery_out_j", "grid_j", "unserved_j", "curtailed_j", "charged_j"):
        out[col.replace("_j", "_w")] = np.diff(ts[col].to_numpy(float))[ok] / dt[ok]
    out["dt_h"] = dt[ok] / 3600.0
    return out


def plot_run(result: RunResult, out: Path) -> list[Path]:
    """Write the standard plots of a run into ``out``; returns the files."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    files = []
    ts, rounds, jobs = result.timeseries, result.rounds, result.jobs

    p = power_by_source(ts)
    fig, ax = plt.subplots(figsize=(10, 4))
    kw = 1e-3
    ax.stackplot(p["t_h"], p["renewable_used_w"] * kw, p["battery_out_w"] * kw, p["grid_w"] * kw, p["unserved_w"] * kw,
                 labels=["renewable", "battery", "grid", "unserved"], step="post",
                 colors=["#4daf4a", "#984ea3", "#999999", "#e41a1c"])
    ax.step(ts["time_s"] / 3600.0, ts["renewable_w"] * kw, where="post", color="#ff7f00", lw=1.2, label="renewable available")
    ax.set_xlabel("time since start (h)")
    ax.set_ylabel("power (kW)")
    ax.set_title(f"Power by source — {result.scenario.name} / {result.policy.name}")
    ax.legend(loc="upper right", fontsize=8)
    files.append(_save(fig, out / "power_by_source.png"))

    if not rounds.empty:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        ax1.step(rounds["time_s"] / 3600.0, rounds["price_tokens_per_kwh"], where="post", color="#377eb8")
        ax1.set_xlabel("time since start (h)")
        ax1.set_ylabel("token price (tokens/kWh)", color="#377eb8")
        ax1b = ax1.twinx()
        ax1b.step(rounds["time_s"] / 3600.0, rounds["renewable_fraction"], where="post", color="#4daf4a")
        ax1b.set_ylabel("renewable fraction of demand", color="#4daf4a")
        ax1b.set_ylim(0, 1.05)
        ax2.scatter(rounds["renewable_fraction"], rounds["price_tokens_per_kwh"], s=10, alpha=0.6)
        ax2.set_xlabel("renewable fraction of demand")
        ax2.set_ylabel("token price (tokens/kWh)")
        ax2.set_title("price against renewable fraction")
        fig.tight_layout()
        files.append(_save(fig, out / "price_vs_renewable.png"))

        fig, ax = plt.subplots(figsize=(10, 3.5))
        ax.plot(rounds["time_s"] / 3600.0, rounds["tokens_held"], label="tokens held (all wallets)")
        ax.set_xlabel("time since start (h)")
        ax.set_ylabel("tokens")
        ax.legend()
        files.append(_save(fig, out / "wallets.png"))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.step(ts["time_s"] / 3600.0, ts["queue_length"], where="post", label="queued")
    ax1.step(ts["time_s"] / 3600.0, ts["jobs_running"], where="post", label="running")
    ax1.set_xlabel("time since start (h)")
    ax1.set_ylabel("jobs")
    ax1.legend()
    waits = jobs["wait_s"].dropna().to_numpy(float)
    if waits.size:
        ax2.hist(waits, bins=50)
    ax2.set_xlabel("wait before start (s)")
    ax2.set_ylabel("jobs")
    fig.tight_layout()
    files.append(_save(fig, out / "queue_and_waits.png"))
    return files


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
