"""The action timeline of a serving run against the energy price: which configurations served the requests
arriving in each price step, the share denied, and the price (``run --plots`` saves it as PNG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.plots import pyplot


def action_timeline(requests: pd.DataFrame, steps: pd.DataFrame, configs: list[str]) -> pd.DataFrame:
    """Per price step: the share of arriving requests admitted with each configuration and denied (rows sum to
    1 where anything arrived), with the step's start, end and price.

    Args:
        requests: The run's request table (``arrival_s``, ``status``, ``config``).
        steps: The run's price-step table (``start_s``, ``end_s``, ``price_usd_per_mwh``).
        configs: Configuration names in table order (the columns, in that order).
    """
    edges = steps["start_s"].to_numpy(float)
    step = np.clip(np.searchsorted(edges, requests["arrival_s"].to_numpy(float), side="right") - 1, 0,
                   len(steps) - 1)
    status = requests["status"].astype(str).to_numpy()
    label = np.where(status == "denied", "denied", requests["config"].astype(str).to_numpy())
    counts = pd.crosstab(step, label).reindex(index=range(len(steps)), columns=[*configs, "denied"], fill_value=0)
    total = counts.sum(axis=1).to_numpy(float)
    shares = counts.div(np.where(total > 0, total, np.nan), axis=0)
    out = steps[["start_s", "end_s", "price_usd_per_mwh"]].reset_index(drop=True)
    return pd.concat([out, shares.reset_index(drop=True)], axis=1)


def timeline_figure(result):
    """Stacked shares of each configuration (and denials) per price step, with the price on a second axis."""
    return timeline_figure_of(result.requests, result.steps, [c.name for c in result.configs],
                              f"{result.scenario.name} / {result.policy.name}: configuration chosen against the price")


def timeline_figure_of(requests: pd.DataFrame, steps: pd.DataFrame, names: list[str], title: str):
    """:func:`timeline_figure` from the tables (``requests.csv``, ``price_steps.csv``) and configuration names."""
    plt = pyplot()
    tl = action_timeline(requests, steps, names)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    t0 = tl["start_s"].to_numpy(float) / 3600.0
    width = (tl["end_s"] - tl["start_s"]).to_numpy(float) / 3600.0
    bottom = np.zeros(len(tl))
    for name in [*names, "denied"]:
        share = tl[name].fillna(0.0).to_numpy(float)
        ax.bar(t0, share, width=width, bottom=bottom, align="edge", label=name,
               color="0.2" if name == "denied" else None, linewidth=0)
        bottom += share
    ax.set_xlabel("time since start (h)")
    ax.set_ylabel("share of arriving requests")
    ax.set_ylim(0, 1)
    price_ax = ax.twinx()
    price_ax.step(np.append(t0, t0[-1] + width[-1]), np.append(tl["price_usd_per_mwh"], tl["price_usd_per_mwh"].iloc[-1]),
                  where="post", color="crimson", label="price")
    price_ax.set_ylabel("energy price (USD/MWh)", color="crimson")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncols=min(6, len(names) + 1), frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_serving(result, folder: Path) -> list[Path]:
    """Save the serving figures into ``folder``; returns the files written."""
    plt = pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    fig = timeline_figure(result)
    path = folder / "serving_timeline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def latency_figure(requests: pd.DataFrame, slo_ttft_s: float | None, slo_e2e_s: float | None):
    """Empirical CDFs of TTFT and end-to-end latency of the served requests, with the SLOs marked."""
    plt = pyplot()
    served = requests["status"].astype(str).to_numpy() == "served"
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, col, slo, label in ((axes[0], "ttft_s", slo_ttft_s, "TTFT (s)"), (axes[1], "e2e_s", slo_e2e_s, "end to end (s)")):
        x = np.sort(requests.loc[served, col].to_numpy(float))
        if x.size:
            ax.step(x, np.arange(1, x.size + 1) / x.size, where="post")
        if slo is not None:
            ax.axvline(slo, color="crimson", linestyle="--", label=f"SLO {slo:g} s")
            ax.legend(loc="lower right")
        ax.set_xlabel(label)
        ax.set_ylabel("share of served requests")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
