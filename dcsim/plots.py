"""Figures of a run, built from its tables: power by source, price against renewable fraction, queue and
waits, wallets, and PUE against outdoor temperature with cooling on. ``--plots`` saves them as PNG; the HTML report embeds the same figures."""
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


#: Mean power below this is floating-point residue of the energy books (e.g. 1e-10 J of "unserved"), not a source, W.
_NEGLIGIBLE_W = 1e-6


def power_figure(ts: pd.DataFrame, title: str = "mean power by source between records"):
    """Stacked power by source (renewable, battery, grid, unserved) with the renewable power available."""
    plt = pyplot()
    p = power_by_source(ts)
    kw = 1e-3
    fig, ax = plt.subplots(figsize=(10, 4))
    bands = [(p[k] * kw, label, color) for k, label, color in
             (("renewable_used_w", "renewable", "#4daf4a"), ("battery_out_w", "battery", "#984ea3"),
              ("grid_w", "grid", "#999999"), ("unserved_w", "unserved", "#e41a1c"))
             if np.any(p[k] > _NEGLIGIBLE_W)]  # a source that never delivered is neither drawn nor listed
    if bands:
        ax.stackplot(p["t_h"], *[b[0] for b in bands], labels=[b[1] for b in bands], step="post",
                     colors=[b[2] for b in bands])
    if np.any(ts["renewable_w"].to_numpy(float) > _NEGLIGIBLE_W):
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
        # log-spaced bins on a log axis, so the tail shows; waits of 0 s (started at once) get their own bar
        zero = int(np.sum(waits <= 0))
        positive = waits[waits > 0]
        if positive.size:
            low, high = positive.min(), positive.max()
            edges = np.geomspace(low, high * (1 + 1e-9), 41) if high > low else np.array([low * 0.9, low * 1.1])
            ax2.hist(positive, bins=edges, color="#377eb8", label="waited")
            ax2.set_xscale("log")
        if zero:
            ax2.set_title(f"{zero:,} of {waits.size:,} jobs started without waiting (not shown)", fontsize=9)
    else:
        ax2.text(0.5, 0.5, "no job started" if jobs is not None else "jobs.csv not written", ha="center",
                 transform=ax2.transAxes)
    ax2.set_xlabel("wait before start (s, log scale)")
    ax2.set_ylabel("jobs")
    fig.tight_layout()
    return fig


#: Ledger entry kinds by the flow they are in the wallet books (``held = minted + credited − debited − burned``).
WALLET_FLOWS = {"minted": "mint_", "credited": "credit_", "debited": "debit_", "burned": "burn_"}


def wallet_flows(ledger: pd.DataFrame) -> pd.DataFrame:
    """Cumulative token flows of all wallets after each ledger time, from the ledger.

    Returns:
        One row per distinct ledger time: ``time_s``, cumulative ``minted`` (initial and endowments),
        ``credited`` (job value), ``debited`` (energy), ``burned`` (demurrage, carry-over cap), and
        ``held = minted + credited − debited − burned``, tokens.
    """
    kind = ledger["kind"].astype(str)
    flow = pd.Series("other", index=ledger.index)
    for name, prefix in WALLET_FLOWS.items():
        flow[kind.str.startswith(prefix)] = name
    if (flow == "other").any():
        raise ValueError(f"ledger kinds {sorted(set(kind[flow == 'other']))} are not mint_/credit_/debit_/burn_")
    table = (ledger.assign(flow=flow).pivot_table(index="time_s", columns="flow", values="tokens", aggfunc="sum")
             .reindex(columns=list(WALLET_FLOWS)).fillna(0.0).sort_index().cumsum())
    table["held"] = table["minted"] + table["credited"] - table["debited"] - table["burned"]
    return table.reset_index()


def wallets_figure(rounds: pd.DataFrame, ledger: pd.DataFrame | None = None):
    """Tokens held with the flows that explain them (minted, job value credited, debited, burned; from the ledger,
    flows that stay zero are left out), and the Gini coefficient of wallets."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    t_h = rounds["time_s"] / 3600.0
    ax1.step(t_h, rounds["tokens_held"], where="post", label="held (all wallets)", lw=2)
    if ledger is not None and not ledger.empty:
        flows = wallet_flows(ledger)
        labels = {"minted": "minted: initial + endowments", "credited": "credited: job value",
                  "debited": "debited for energy", "burned": "burned"}
        for name, label in labels.items():
            if flows[name].abs().max() > 0:
                ax1.step(flows["time_s"] / 3600.0, flows[name], where="post", label=f"{label} (cumulative)")
    else:  # no ledger: only the flows the round table has
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


def pue_figure(ts: pd.DataFrame):
    """PUE against the outdoor dry-bulb at each time-series record (runs with ``facility.cooling``), coloured by
    time, with the room air temperature beside it."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    points = ax1.scatter(ts["outdoor_dry_bulb_c"], ts["pue"], c=ts["time_s"] / 3600.0, s=12, cmap="viridis")
    fig.colorbar(points, ax=ax1, label="time since start (h)")
    ax1.set_xlabel("outdoor dry-bulb (°C)")
    ax1.set_ylabel("PUE (facility / IT power)")
    ax1.set_title("PUE against outdoor temperature")
    ax2.step(ts["time_s"] / 3600.0, ts["room_temp_c"], where="post", color="#e41a1c", label="room air")
    ax2.step(ts["time_s"] / 3600.0, ts["outdoor_dry_bulb_c"], where="post", color="#377eb8", label="outdoor dry-bulb")
    ax2.set_xlabel("time since start (h)")
    ax2.set_ylabel("temperature (°C)")
    ax2.set_title("room and outdoor temperature")
    ax2.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_run(result: RunResult, out: Path) -> list[Path]:
    """Write the standard plots of a run into ``out``; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    title = f"Power by source — {result.scenario.name} / {result.policy.name}"
    figures = {"power_by_source.png": power_figure(result.timeseries, title),
               "queue_and_waits.png": queue_figure(result.timeseries, result.jobs_table())}
    if "pue" in result.timeseries.columns:
        figures["pue_vs_outdoor.png"] = pue_figure(result.timeseries)
    if not result.rounds.empty:
        figures["price_vs_renewable.png"] = price_figure(result.rounds)
        figures["wallets.png"] = wallets_figure(result.rounds, result.ledger)
    plt = pyplot()
    files = []
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        files.append(out / name)
    return files
