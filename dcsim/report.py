"""Self-contained HTML reports of a run directory or a comparison directory: plots embedded as base64 PNG,
inline CSS, no scripts and no external URLs, so the page opens from disk in any browser."""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from dcsim import plots
from dcsim.errors import DcsimError
from dcsim.tables import read_table, table_path

#: Section titles of a run report, in page order (tests and readers look them up by these words).
RUN_SECTIONS = {
    "summary": "Summary",
    "power": "Power by source over time",
    "price": "Token price against renewable fraction",
    "queue": "Queue and waits",
    "wallets": "Wallets over time",
    "allocations": "Per-GPU allocation heatmap",
    "ledger": "Token ledger",
    "scenario": "Scenario",
}

#: Section titles of a serving run's report (``summary.json`` kind ``llm_serving``), in page order.
SERVING_SECTIONS = {
    "summary": "Summary",
    "timeline": "Configuration and denials against the energy price",
    "latency": "Latency against the SLOs",
    "steps": "Price steps: energy, cost and decisions",
    "wallets": "Token market: wallets over time",
    "allocations": "Token market: per-GPU allocation heatmap",
    "ledger": "Token market: ledger",
    "scenario": "Scenario",
}

#: Section titles of a comparison report, in page order.
COMPARISON_SECTIONS = {
    "overview": "Overview",
    "means": "Mean ± 95% CI over seeds",
    "differences": "Paired differences against the baseline",
    "plot": "Comparison plot",
    "paired": "Paired results by seed",
    "workload": "Common random numbers",
}

NO_ALLOCATIONS = "per-GPU allocations were not recorded in this run"

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
.meta { color: #555; }
nav ol { columns: 2; font-size: 0.95em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: 0.6em 0; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 0.8em; }
.ok { color: #1b7a1b; } .bad { color: #b00020; font-weight: bold; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
details summary { cursor: pointer; color: #335; margin: 0.4em 0; }
"""

#: Heatmaps larger than this are block-averaged (rows = GPUs, columns = rounds) to keep the PNG small.
_HEATMAP_MAX_GPUS = 400
_HEATMAP_MAX_ROUNDS = 1500


# --------------------------------------------------------------------------------------------- helpers

def _png(fig, alt: str) -> str:
    """The figure as an ``<img>`` with a base64 PNG data URI (the figure is closed)."""
    plt = plots.pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return _img(buf.getvalue(), alt)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        if not math.isfinite(x):
            return "n/a"
        return f"{x:,.0f}" if abs(x) >= 1e4 else f"{x:.4g}"
    return str(x)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; numbers are formatted and right-aligned, everything is escaped; no header row when every
    header cell is empty."""
    out = ["<table>"] + (["<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>"] if any(header) else [])
    for row in rows:
        cells = []
        for value in row:
            numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            cells.append(f'<td class="num">{_esc(_fmt(value))}</td>' if numeric else f"<td>{_esc(_fmt(value))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _page(title: str, subtitle: str, sections: dict[str, str], bodies: dict[str, str]) -> str:
    toc = "".join(f'<li><a href="#{key}">{_esc(name)}</a></li>' for key, name in sections.items())
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{_esc(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
             f"<h1>{_esc(title)}</h1>", f'<p class="meta">{subtitle}</p>', f"<nav><ol>{toc}</ol></nav>"]
    for key, name in sections.items():
        parts += [f'<section id="{key}">', f"<h2>{_esc(name)}</h2>", bodies[key], "</section>"]
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"




def _flatten(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        rows: list[tuple[str, Any]] = []
        for key, value in node.items():
            rows += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix, node)]


def _missing(name: str, setting: str | None = None) -> str:
    why = f" (the scenario's outputs.{setting} was off)" if setting else ""
    return _note(f"{name} is not in this run directory{why}, so this section is empty.")


# --------------------------------------------------------------------------------------------- run report
def _summary_section(summary: dict[str, Any]) -> str:
    kwh = 1 / 3.6e6
    e = summary.get("energy_j", {})
    j = summary.get("jobs", {})
    w = summary.get("wait_s", {})
    tp = summary.get("token_price", {})
    tk = summary.get("tokens", {})

    def k(x):
        return None if x is None else x * kwh

    headline = [
        ("energy consumed (kWh)", k(e.get("consumed"))),
        ("from renewable / battery / grid (kWh)",
         " / ".join(_fmt(k(e.get(s))) for s in ("renewable", "battery", "grid"))),
        ("unserved energy (kWh)", k(e.get("unserved"))),
        ("renewable curtailed (kWh)", k(e.get("curtailed"))),
        ("renewable share of energy consumed (fraction)", summary.get("renewable_share")),
        ("renewable + battery share of energy consumed (fraction)", summary.get("renewable_battery_share")),
        ("carbon (kg CO2)", summary.get("carbon_kg")),
        ("grid cost (USD)", summary.get("grid_cost_usd")),
        ("jobs arrived / completed / dropped / pending",
         " / ".join(_fmt(j.get(s)) for s in ("arrived", "completed", "dropped", "pending"))),
        ("deadline misses", j.get("deadline_misses")),
        ("wait mean / p50 / p95 / p99 (s)", " / ".join(_fmt(w.get(s)) for s in ("mean", "p50", "p95", "p99"))),
        ("token price mean (tokens/kWh)", tp.get("mean")),
        ("token price volatility (std of log returns)", tp.get("volatility")),
        ("price correlation with renewable fraction", tp.get("corr_with_renewable_fraction")),
        ("tokens minted / spent / held / burned",
         " / ".join(_fmt(tk.get(s)) for s in ("minted", "spent", "held", "burned"))),
        ("Jain fairness of allocations (mean)", summary.get("market", {}).get("jain_fairness_mean")),
        ("welfare (tokens)", summary.get("welfare_tokens", {}).get("welfare")),
    ]
    full = _table(["key", "value"], _flatten(summary))
    return (_table(["metric", "value"], headline)
            + f"\n<details><summary>every entry of summary.json</summary>\n{full}\n</details>")


def _power_section(ts: pd.DataFrame | None) -> str:
    if ts is None:
        return _missing("timeseries.csv", "timeseries_table")
    return (_png(plots.power_figure(ts), RUN_SECTIONS["power"])
            + "<p>Energy is served renewable first, then battery, then grid; each band is the mean power over the "
              "interval between two time-series records (energy ÷ time), so the areas are the energy books.</p>")


def _price_section(rounds: pd.DataFrame | None) -> str:
    if rounds is None:
        return _missing("rounds.csv", "rounds_table")
    if rounds.empty:
        return _note("this run held no market rounds")
    return _png(plots.price_figure(rounds), RUN_SECTIONS["price"])


def _queue_section(ts: pd.DataFrame | None, jobs: pd.DataFrame | None) -> str:
    if ts is None and jobs is None:
        return _missing("timeseries.csv and jobs.csv")
    body = _png(plots.queue_figure(ts, jobs), RUN_SECTIONS["queue"])
    if jobs is not None:
        counts = jobs["status"].astype(str).value_counts()
        body += _table(["job status at the end", "jobs"], [(k, int(v)) for k, v in counts.items()])
    return body


def _wallets_section(rounds: pd.DataFrame | None, ledger: pd.DataFrame | None = None) -> str:
    if rounds is None:
        return _missing("rounds.csv", "rounds_table")
    if rounds.empty:
        return _note("this run held no market rounds")
    return (_png(plots.wallets_figure(rounds, ledger), RUN_SECTIONS["wallets"])
            + "<p>Held = minted + credited − debited − burned at every moment (the ledger's running totals).</p>")


def _block_mean(a: np.ndarray, axis: int, max_size: int) -> tuple[np.ndarray, int]:
    """Average consecutive blocks along ``axis`` so at most ``max_size`` remain; returns the array and block size."""
    size = a.shape[axis]
    block = max(1, math.ceil(size / max_size))
    if block == 1:
        return a, 1
    pad = (-size) % block
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, pad)
    padded = np.pad(a.astype(float), widths, constant_values=np.nan)
    shape = list(padded.shape)
    shape[axis: axis + 1] = [shape[axis] // block, block]
    return np.nanmean(padded.reshape(shape), axis=axis + 1), block


def _allocations_section(path: Path) -> str:
    if not path.is_file():
        return _note(f"{NO_ALLOCATIONS} (no allocations.npz in the run directory).")
    try:
        with np.load(path) as data:
            alloc_w = np.asarray(data["alloc_w"], dtype=float)
            time_s = np.asarray(data["time_s"], dtype=float)
    except (KeyError, ValueError, OSError) as exc:
        raise DcsimError(f"{path}: expected arrays 'alloc_w' (rounds, gpus) and 'time_s' (rounds,): {exc}") from None
    if alloc_w.ndim != 2 or time_s.shape != (alloc_w.shape[0],):
        raise DcsimError(f"{path}: alloc_w has shape {alloc_w.shape} and time_s {time_s.shape}; "
                         "expected (rounds, gpus) and (rounds,)")
    if alloc_w.size == 0:
        return _note(f"{NO_ALLOCATIONS} (allocations.npz is empty).")
    grid, gpu_block = _block_mean(alloc_w.T, 0, _HEATMAP_MAX_GPUS)  # rows: GPUs
    grid, round_block = _block_mean(grid, 1, _HEATMAP_MAX_ROUNDS)
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(10, max(2.5, min(8.0, 0.05 * grid.shape[0] + 2))))
    t_h = time_s / 3600.0
    t_end = t_h[-1] + (t_h[-1] - t_h[-2] if t_h.size > 1 else 1.0)
    image = ax.imshow(grid, aspect="auto", origin="lower", interpolation="nearest", cmap="viridis",
                      extent=(t_h[0], t_end, -0.5, alloc_w.shape[1] - 0.5))
    ax.set_xlabel("time since start (h)")
    ax.set_ylabel("GPU")
    fig.colorbar(image, ax=ax, label="allocation alloc_w (W)")
    text = f"{alloc_w.shape[1]:,} GPUs × {alloc_w.shape[0]:,} rounds."
    if gpu_block > 1 or round_block > 1:
        text += f" Shown as means over blocks of {gpu_block} GPU(s) × {round_block} round(s)."
    return _png(fig, RUN_SECTIONS["allocations"]) + f"<p>{_esc(text)}</p>"


def _ledger_section(ledger: pd.DataFrame | None) -> str:
    if ledger is None:
        return _missing("ledger.csv", "ledger_table")
    if ledger.empty:
        return _note("the ledger is empty")
    totals = ledger.groupby("kind", sort=True)["tokens"].agg(["count", "sum"]).reset_index()
    return _table(["entry kind", "entries", "tokens"],
                  [(k, int(c), float(s)) for k, c, s in totals.itertuples(index=False)])


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` into a run directory from the files a run wrote there; returns its path.

    Reads ``summary.json`` (required), ``metadata.yaml``, the ``rounds``, ``timeseries``, ``jobs`` and
    ``ledger`` tables (``.csv`` or ``.parquet``) and ``allocations.npz`` (arrays ``alloc_w`` of shape (rounds, gpus), W above idle, and
    ``time_s``) when present; a section whose file is absent says so instead of plotting.

    Raises:
        DcsimError: ``run_dir`` is not a run directory (no ``summary.json``).
    """
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise DcsimError(f"{run_dir}: not a run directory (no summary.json); make one with `python -m dcsim run`")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    meta_path = run_dir / "metadata.yaml"
    meta_text = meta_path.read_text(encoding="utf-8") if meta_path.is_file() else None
    if summary.get("kind") == "llm_serving":
        return _write_serving_report(run_dir, summary, meta_text)
    rounds = read_table(run_dir, "rounds")
    ts = read_table(run_dir, "timeseries")
    jobs = read_table(run_dir, "jobs")
    ledger = read_table(run_dir, "ledger")

    bodies = {
        "summary": _summary_section(summary),
        "power": _power_section(ts),
        "price": _price_section(rounds),
        "queue": _queue_section(ts, jobs),
        "wallets": _wallets_section(rounds, ledger),
        "allocations": _allocations_section(run_dir / "allocations.npz"),
        "ledger": _ledger_section(ledger),
        "scenario": (f"<details><summary>metadata.yaml (resolved scenario, seed, policy state, versions)</summary>"
                     f"<pre>{_esc(meta_text)}</pre></details>" if meta_text is not None
                     else _missing("metadata.yaml")),
    }
    horizon = summary.get("horizon_s")
    subtitle = (f"scenario <b>{_esc(summary.get('scenario'))}</b> · policy <b>{_esc(summary.get('policy'))}</b> · "
                f"seed {_esc(summary.get('seed'))} · horizon {_esc(_fmt(horizon))} s"
                f"{'' if horizon is None else f' ({horizon / 3600:.3g} h)'} · "
                f"mechanism {_esc(summary.get('market', {}).get('mechanism'))}")
    page = _page("dcsim run report", subtitle, RUN_SECTIONS, bodies)
    out = run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out


def _serving_config_names(requests: pd.DataFrame) -> list[str]:
    """Configuration names of a serving run's request table, from the best quality down (ties by name): the table's
    own row order is not in the run directory."""
    served = requests[requests["config"].notna() & (requests["config"].astype(str) != "")]
    q = served.groupby(served["config"].astype(str))["quality"].mean()
    return sorted(q.index, key=lambda name: (-q[name], name))


def _serving_summary_section(summary: dict[str, Any]) -> str:
    q = summary.get("requests", {})
    lat = summary.get("latency_s", {})
    slo = summary.get("slo_attainment", {})
    en = summary.get("energy", {})
    headline = [
        ("requests arrived / served / denied / dropped / pending",
         " / ".join(_fmt(q.get(s)) for s in ("arrived", "served", "denied", "dropped", "pending"))),
        ("success rate / denial rate / drop rate",
         " / ".join(_fmt(summary.get(s)) for s in ("success_rate", "denial_rate", "drop_rate"))),
        ("mean quality (served)", summary.get("mean_quality")),
        ("SLO attainment TTFT / e2e", f"{_fmt(slo.get('ttft'))} / {_fmt(slo.get('e2e'))}"),
        ("TTFT p50 / p95 / p99 (s)", " / ".join(_fmt(lat.get("ttft", {}).get(s)) for s in ("p50", "p95", "p99"))),
        ("e2e p50 / p95 / p99 (s)", " / ".join(_fmt(lat.get("e2e", {}).get(s)) for s in ("p50", "p95", "p99"))),
        ("energy consumed (kWh)", en.get("consumed_kwh")),
        ("mean price paid (USD/MWh)", en.get("mean_price_paid_usd_per_mwh")),
        ("revenue / energy cost / profit (USD)",
         " / ".join(_fmt(summary.get(s)) for s in ("revenue_usd", "energy_cost_usd", "profit_usd"))),
        ("energy billed by the market (tokens) / mean token price (tokens/kWh)",
         f"{_fmt(summary.get('energy_cost_tokens'))} / {_fmt(summary.get('token_price', {}).get('mean'))}"),
        ("tokens minted / spent / held",
         " / ".join(_fmt(summary.get("tokens", {}).get(s)) for s in ("minted", "spent", "held"))),
        ("GPU-s throttled / paused by the market",
         " / ".join(_fmt(summary.get("market", {}).get(s)) for s in ("throttled_gpu_s", "paused_gpu_s"))),
        ("served by configuration", ", ".join(f"{k}: {v}" for k, v in q.get("served_by_config", {}).items())),
    ]
    full = _table(["key", "value"], _flatten(summary))
    return (_table(["metric", "value"], headline)
            + f"\n<details><summary>every entry of summary.json</summary>\n{full}\n</details>")


def _write_serving_report(run_dir: Path, summary: dict[str, Any], meta_text: str | None) -> Path:
    """``report.html`` of a serving run (docs/serving.md): summary, action timeline against the price, latency
    CDFs against the SLOs, the price-step table and the scenario."""
    from dcsim.serving import plots as splots

    requests = read_table(run_dir, "requests")
    steps = read_table(run_dir, "price_steps")
    slo = summary.get("slo_attainment", {})
    if requests is None or steps is None:
        timeline = _missing("requests.csv" if requests is None else "price_steps.csv")
        latency = _missing("requests.csv") if requests is None else None
    else:
        names = _serving_config_names(requests)
        timeline = _png(splots.timeline_figure_of(requests, steps, names, "configuration chosen against the price"),
                        SERVING_SECTIONS["timeline"]) + (
            "<p>Per price step, the share of the requests arriving in it served with each configuration (legend from "
            "the best quality down) and denied; the red line is the energy price.</p>")
    if requests is not None:
        latency = _png(splots.latency_figure(requests, slo.get("ttft_s"), slo.get("e2e_s")), SERVING_SECTIONS["latency"])
    if steps is None:
        table = _missing("price_steps.csv")
    else:
        table = _table(["start (s)", "end (s)", "price (USD/MWh)", "energy (kWh)", "cost (USD)", "arrivals", "admitted",
                        "denied", "mean quality admitted"],
                       [[r.start_s, r.end_s, r.price_usd_per_mwh, r.energy_j / 3.6e6, r.energy_cost_usd, r.arrivals,
                         r.admitted, r.denied, r.mean_quality_admitted] for r in steps.itertuples(index=False)])
    bodies = {
        "summary": _serving_summary_section(summary),
        "timeline": timeline,
        "latency": latency,
        "steps": table,
        # the Token Manager's rounds run in serving runs too (docs/serving.md, "The token market")
        "wallets": _wallets_section(read_table(run_dir, "rounds"), read_table(run_dir, "ledger")),
        "allocations": _allocations_section(run_dir / "allocations.npz"),
        "ledger": _ledger_section(read_table(run_dir, "ledger")),
        "scenario": (f"<details><summary>metadata.yaml (resolved scenario, seed, policy state, versions)</summary>"
                     f"<pre>{_esc(meta_text)}</pre></details>" if meta_text is not None
                     else _missing("metadata.yaml")),
    }
    horizon = summary.get("horizon_s")
    subtitle = (f"serving run · scenario <b>{_esc(summary.get('scenario'))}</b> · policy "
                f"<b>{_esc(summary.get('policy'))}</b> · seed {_esc(summary.get('seed'))} · horizon "
                f"{_esc(_fmt(horizon))} s{'' if horizon is None else f' ({horizon / 3600:.3g} h)'}")
    out = run_dir / "report.html"
    out.write_text(_page("dcsim serving run report", subtitle, SERVING_SECTIONS, bodies), encoding="utf-8")
    return out


# --------------------------------------------------------------------------------------------- comparison
def _paired_plot(runs: pd.DataFrame, arms: list[str], metrics: list[str]) -> str:
    """One panel per metric: each seed's value per arm, the arms of one seed joined by a line."""
    from dcsim.compare import HEADLINE_METRICS

    plt = plots.pyplot()
    ncols = min(5, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        table = runs.loc[runs["metric"] == metric].pivot(index="seed", columns="arm", values="value")
        table = table.reindex(columns=arms)
        x = np.arange(len(arms))
        for _, row in table.iterrows():
            ax.plot(x, row.to_numpy(float), color="#999999", lw=0.7, alpha=0.7, marker="o", ms=3)
        ax.set_title(HEADLINE_METRICS.get(metric, metric), fontsize=11)
        ax.set_xticks(x, arms, rotation=30, ha="right", fontsize=10)
        ax.tick_params(axis="y", labelsize=10)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.tight_layout()
    return _png(fig, COMPARISON_SECTIONS["paired"])


def write_comparison_report(compare_dir: str | Path) -> Path:
    """Write ``report.html`` into a directory written by :meth:`dcsim.compare.Comparison.write`; returns its path.

    Raises:
        DcsimError: a file the comparison writes is missing.
    """
    import yaml

    from dcsim.compare import HEADLINE_METRICS, plot_comparison

    compare_dir = Path(compare_dir)
    tables = ["runs", "summary", "differences", "workloads"]
    missing = [] if (compare_dir / "comparison.yaml").is_file() else ["comparison.yaml"]
    missing += [f"{stem}.csv" for stem in tables if table_path(compare_dir, stem) is None]
    if missing:
        raise DcsimError(f"{compare_dir}: not a comparison directory (missing {', '.join(missing)}); "
                         "make one with `python -m dcsim compare`")
    meta = yaml.safe_load((compare_dir / "comparison.yaml").read_text(encoding="utf-8"))
    read = {"keep_default_na": False, "na_values": ["", "NaN", "nan"], "dtype": {"variant": str}}
    runs, summary, differences, workloads = (read_table(compare_dir, stem, **read) for stem in tables)
    for df in (runs, summary, differences, workloads):
        if "variant" in df:
            df["variant"] = df["variant"].fillna("")
    arms = list(meta["arms"])
    headline = [m for m in meta.get("headline_metrics", HEADLINE_METRICS) if m in set(summary["metric"])]
    label = {m: HEADLINE_METRICS.get(m, m) for m in summary["metric"].unique()}

    seeds = meta["seeds"]
    overview = _table(["", ""], [
        ("scenario", meta["scenario"]),
        ("scenario source", meta.get("scenario_source", "")),
        ("overrides", " ".join(meta.get("overrides") or []) or "none"),
        ("policies", ", ".join(meta["policies"])),
        ("variants", "; ".join(f"{k}: {' '.join(v) or '(as is)'}" for k, v in (meta.get("variants") or {}).items())
         or "none"),
        ("seeds", f"{len(seeds)}: {', '.join(map(str, seeds))}"),
        ("baseline", meta["baseline"]),
        ("dcsim", meta.get("dcsim_version", "")),
    ])
    overview += ("<p>Every arm runs on the same seeds. For a seed, every policy sees the same jobs and supply "
                 "(common random numbers), so differences are paired by seed: the tables give each arm's mean with a "
                 "95% t-interval over seeds, and the mean paired difference to the baseline with its 95% t-interval "
                 "and the paired t-test's p-value. Differences that are exactly zero for every seed are reported "
                 "as [0, 0] with p = 1.</p>")

    def means_table(metrics: list[str]) -> str:
        idx = summary.set_index(["arm", "metric"])
        rows = []
        for m in metrics:
            row = [label[m]]
            for arm in arms:
                r = idx.loc[(arm, m)] if (arm, m) in idx.index else None
                if r is None or not np.isfinite(r["mean"]):
                    row.append("n/a")
                else:
                    half = r["ci_high"] - r["mean"]
                    row.append(_fmt(r["mean"]) + (f" ± {_fmt(half)}" if np.isfinite(half) else ""))
            rows.append(row)
        return _table(["metric", *arms], rows)

    def diff_table(metrics: list[str]) -> str:
        rows = []
        wanted = differences.loc[differences["metric"].isin(metrics)].copy()
        wanted["order"] = wanted["metric"].map({m: i for i, m in enumerate(metrics)})
        for r in wanted.sort_values(["order"], kind="stable").itertuples(index=False):
            ci = f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if np.isfinite(r.ci_low) else "n/a"
            rows.append((label[r.metric], f"{r.arm} − {r.baseline}", r.mean_diff, ci, r.p_value, int(r.n)))
        return _table(["metric", "arm − baseline", "mean difference", "95% CI", "p-value", "pairs"], rows)

    rest = [m for m in summary["metric"].unique() if m not in headline]
    bodies = {
        "overview": overview,
        "means": means_table(headline)
        + f"<details><summary>all {len(rest) + len(headline)} metrics</summary>{means_table(headline + rest)}</details>",
        "differences": (diff_table(headline)
                        + f"<details><summary>all metrics</summary>{diff_table(headline + rest)}</details>")
        if not differences.empty else _note("only one arm: nothing to compare against"),
        "plot": _comparison_png(compare_dir / "comparison.png", summary, arms, headline, plot_comparison),
        "paired": _paired_plot(runs, arms, headline)
        + "<p>Each grey line is one seed: the same world seen by each arm.</p>",
        "workload": _workload_section(workloads),
    }
    subtitle = (f"scenario <b>{_esc(meta['scenario'])}</b> · {len(arms)} arms × {len(seeds)} seeds · "
                f"baseline <b>{_esc(meta['baseline'])}</b>")
    page = _page("dcsim policy comparison", subtitle, COMPARISON_SECTIONS, bodies)
    out = compare_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out


def _comparison_png(path: Path, summary: pd.DataFrame, arms: list[str], metrics: list[str], plot) -> str:
    if not path.is_file():
        plot(summary, arms, metrics, path)
    return _img(path.read_bytes(), COMPARISON_SECTIONS["plot"])


def _workload_section(workloads: pd.DataFrame) -> str:
    grouped = workloads.groupby(["variant", "seed"], sort=False)["jobs_sha256"].agg(["nunique", "first"])
    rows = []
    for (variant, seed), (distinct, digest) in grouped.iterrows():
        rows.append(((variant or "—"), int(seed), "identical" if distinct == 1 else f"{distinct} different",
                     digest[:16] + "…"))
    holds = bool((grouped["nunique"] == 1).all())
    verdict = ('<p class="ok">For every seed, every policy saw the identical job table (SHA-256 of arrival, GPUs, '
               'work, deadline, deferrable, value).</p>' if holds else
               '<p class="bad">Common random numbers do not hold: for some seed the policies saw different job '
               'tables; paired differences then mix policy effects with workload luck.</p>')
    return verdict + _table(["variant", "seed", "job tables across policies", "SHA-256 (first 16 hex digits)"], rows)
