"""Generates the tutorials in docs/tutorials/ by running every lesson's commands and writing what they print.

Each lesson is a list of real command lines (``python -m dcsim ...`` or a small example script) and a function
that writes the page's Markdown from what those commands printed and wrote: summary and comparison tables,
tables computed from the run directories' CSV files, and plots copied into ``img/``. Nothing that shows a
result is typed by hand, so a page cannot drift from what the code does; rerun this script after changing
the code or a teaching scenario::

    python tools/make_tutorials.py                    # every lesson at the scenarios' own horizon -> docs/tutorials
    python tools/make_tutorials.py --horizon 2h --out /tmp/tut   # a quick build (what tests/test_tutorials.py runs)
    python tools/make_tutorials.py --only 2           # one lesson
    python tools/make_tutorials.py --write-data       # regenerate docs/tutorials/data/irregular_solar.csv

The commands run in a scratch folder that links ``scenarios/`` and ``docs/`` from the repository, so the
command lines on the pages are exactly the ones that ran, and run directories (``runs/tutorials/...``)
never land in the working tree. With ``--horizon H`` every ``run`` and ``compare`` command gets
``--horizon H`` appended, and the page shows it.
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "tutorials"
DATA_CSV = REPO / "docs" / "tutorials" / "data" / "irregular_solar.csv"
MAX_IMAGE_BYTES = 150_000
J_PER_KWH = 3.6e6


# --------------------------------------------------------------------------------------------- running
def shown_command(command: str, horizon: str | None) -> str:
    """The command line as it runs and as the page shows it: ``--horizon H`` appended to ``python -m dcsim run``
    and ``compare`` commands when a reduced horizon is asked for."""
    words = shlex.split(command)
    if horizon and words[:3] == ["python", "-m", "dcsim"] and words[3] in ("run", "compare"):
        return f"{command} --horizon {horizon}"
    return command


@dataclass
class Result:
    """What one command printed and where it wrote."""

    command: str  # as shown on the page (with --horizon when given)
    stdout: str
    out_dir: Path | None  # the command's --out folder in the scratch folder, if it has one
    wall_s: float


@dataclass
class Lesson:
    """One tutorial page: its commands (name → command line, run in order) and the function writing its page."""

    number: int
    slug: str
    title: str
    commands: dict[str, str]
    write: Callable[["Context", dict[str, Result]], str]

    @property
    def filename(self) -> str:
        return f"{self.number:02d}-{self.slug}.md"


@dataclass
class Context:
    """Where commands run and pages go, and the reduced horizon if any."""

    scratch: Path
    out: Path
    horizon: str | None
    images: list[Path] = field(default_factory=list)

    def shown(self, command: str) -> str:
        return shown_command(command, self.horizon)

    def run(self, command: str) -> Result:
        """Run ``command`` in the scratch folder; raise with its output if it fails."""
        shown = self.shown(command)
        argv = shlex.split(shown)
        if argv[0] == "python":
            argv[0] = sys.executable
        env = dict(os.environ, MPLBACKEND="Agg", PYTHONHASHSEED="0")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=self.scratch, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"command failed (exit {proc.returncode}): {shown}\n--- stdout\n{proc.stdout[-3000:]}"
                               f"\n--- stderr\n{proc.stderr[-3000:]}")
        out = None
        if "--out" in argv:
            out = self.scratch / argv[argv.index("--out") + 1]
        elif argv[1:4] == ["-m", "dcsim", "report"]:
            out = self.scratch / argv[4]
        return Result(shown, proc.stdout, out, wall)

    def image(self, source: Path | bytes, name: str, alt: str) -> str:
        """Copy a PNG (a file or its bytes) into ``img/`` and return the Markdown that shows it."""
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        if not data.startswith(b"\x89PNG"):
            raise RuntimeError(f"{name}: not a PNG image")
        if len(data) > MAX_IMAGE_BYTES:
            raise RuntimeError(f"{name}: {len(data):,} bytes, more than the {MAX_IMAGE_BYTES:,} allowed for a tutorial image")
        path = self.out / "img" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.images.append(path)
        return f"![{alt}](img/{name})"


def report_png(report_html: Path, alt: str) -> bytes:
    """The PNG a ``dcsim report`` page embeds under the section image ``alt`` (e.g. "Wallets over time")."""
    text = report_html.read_text(encoding="utf-8")
    for found_alt, data in re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', text):
        if found_alt == alt:
            return base64.b64decode(data)
    raise RuntimeError(f"{report_html}: no image {alt!r}")


# --------------------------------------------------------------------------------------------- formatting
def console(result: Result, output: bool = True) -> str:
    """A fenced block with the command and (optionally) what it printed."""
    body = f"$ {result.command}"
    if output and result.stdout.strip():
        body += "\n" + result.stdout.rstrip()
    return f"```console\n{body}\n```"


def command_block(*results: Result) -> str:
    return "```bash\n" + "\n".join(r.command for r in results) + "\n```"


def comparison_md(result: Result) -> str:
    """The comparison tables a ``compare`` command printed (its comparison.md), headings moved down a level."""
    text = (result.out_dir / "comparison.md").read_text(encoding="utf-8")
    if text.strip() not in result.stdout:
        raise RuntimeError(f"{result.command}: printed tables differ from comparison.md")
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", text, flags=re.M).strip()


def fmt(x: float, digits: int = 3) -> str:
    """A number for prose: ``digits`` significant digits, thousands separated; ``n/a`` when missing."""
    if x is None or not np.isfinite(x):
        return "n/a"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def more_less(a: float, b: float, more: str = "more", less: str = "less", same: str = "the same") -> str:
    if not (np.isfinite(a) and np.isfinite(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
        return same
    return more if a > b else less


# --------------------------------------------------------------------------------------------- reading outputs
def summary(run: Result) -> dict:
    return json.loads((run.out_dir / "summary.json").read_text(encoding="utf-8"))


def rounds(run: Result) -> pd.DataFrame:
    return pd.read_csv(run.out_dir / "rounds.csv")


def cmp_summary(result: Result) -> pd.DataFrame:
    """summary.csv of a comparison, indexed by (arm, metric)."""
    return pd.read_csv(result.out_dir / "summary.csv").set_index(["arm", "metric"])


def cmp_diff(result: Result) -> pd.DataFrame:
    """differences.csv of a comparison, indexed by (arm, metric)."""
    return pd.read_csv(result.out_dir / "differences.csv").set_index(["arm", "metric"])


def mean_of(table: pd.DataFrame, arm: str, metric: str) -> float:
    return float(table.loc[(arm, metric), "mean"]) if (arm, metric) in table.index else math.nan


def metric_table(result: Result, metrics: dict[str, str], scale: dict[str, float] | None = None) -> str:
    """Mean ± 95% CI half-width per arm (rows) for chosen metrics (columns) from a comparison's summary.csv."""
    table = cmp_summary(result)
    arms = list(dict.fromkeys(table.index.get_level_values(0)))
    rows = []
    for arm in arms:
        row = [f"`{arm}`"]
        for metric in metrics:
            if (arm, metric) not in table.index:
                row.append("n/a")
                continue
            r = table.loc[(arm, metric)]
            k = (scale or {}).get(metric, 1.0)
            mean, half = r["mean"] * k, (r["ci_high"] - r["mean"]) * k
            row.append(fmt(mean, 4) + (f" ± {fmt(half, 2)}" if np.isfinite(half) and half > 0 else ""))
        rows.append(row)
    return md_table(["arm", *metrics.values()], rows)


def diff_text(result: Result, arm: str, metric: str, unit: str = "", scale: float = 1.0, digits: int = 3) -> str:
    """``+1.2 kg [0.6, 1.8], p = 0.004`` for a paired difference in a comparison's differences.csv."""
    d = cmp_diff(result)
    if (arm, metric) not in d.index:
        return "n/a"
    r = d.loc[(arm, metric)]
    if not np.isfinite(r["mean_diff"]):
        return "n/a"
    unit = f" {unit}" if unit else ""
    ci = f" [{fmt(r['ci_low'] * scale, digits)}, {fmt(r['ci_high'] * scale, digits)}]" if np.isfinite(r["ci_low"]) else ""
    p = f", p = {r['p_value']:.2g}" if np.isfinite(r["p_value"]) else ""
    sign = "+" if r["mean_diff"] > 0 else ""
    return f"{sign}{fmt(r['mean_diff'] * scale, digits)}{unit}{ci}{p}"


def scenario_of(run: Result) -> dict:
    """The resolved scenario a run recorded in its metadata.yaml."""
    import yaml

    return yaml.safe_load((run.out_dir / "metadata.yaml").read_text(encoding="utf-8"))["scenario"]


def rows_before(rd: pd.DataFrame, hours: list[float]) -> list[pd.Series]:
    """For each hour h, the last round strictly before h hours (so not the round on the hour itself)."""
    t = rd["time_s"].to_numpy(float)
    out = []
    for h in hours:
        at = np.flatnonzero(t < h * 3600.0 - 1e-6)
        if at.size and h * 3600.0 <= t.max() + 300.0:
            out.append(rd.iloc[at[-1]])
    return out


def clock(time_s: float) -> str:
    """``hh:mm`` since the teaching scenarios' start (local midnight in California)."""
    minutes = int(round(time_s / 60.0))
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def toy_rows(result: Result) -> dict[str, list[str]]:
    """The Markdown table an example script printed, as first cell → cells."""
    rows = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 1 and not cells[0].startswith(":") and cells[0] != "mechanism":
            rows[cells[0]] = cells
    return rows


def p_value(result: Result, arm: str, metric: str) -> float:
    d = cmp_diff(result)
    return float(d.loc[(arm, metric), "p_value"]) if (arm, metric) in d.index else math.nan


def local_hour(time_s: pd.Series | np.ndarray) -> np.ndarray:
    """Hours since the teaching scenarios' start, 2023-06-21 00:00 local time in California (PDT)."""
    return np.asarray(time_s, dtype=float) / 3600.0


def page_header(ctx: Context, lesson: Lesson) -> str:
    horizon = (f"**This is a quick build at a reduced horizon ({ctx.horizon})**: every `run` and `compare` "
               "command below ran with `--horizon " + ctx.horizon + "`, so the numbers describe only the start of "
               "the day and some sentences may not fit them.") if ctx.horizon else \
        "Every command ran at its scenario's own horizon (one day)."
    return (f"# Lesson {lesson.number}: {lesson.title}\n\n"
            f"<!-- Generated by tools/make_tutorials.py: edit the script, not this page. -->\n\n"
            f"*Generated by [`tools/make_tutorials.py`](../../tools/make_tutorials.py), which ran every command on "
            f"this page and copied what it printed; nothing that shows a result is typed by hand. {horizon} "
            f"Run the commands from the repository root; each `--out` folder must be new (or add `--overwrite`).*\n")


# ============================================================================================= lesson 1
L1 = {
    "run": "python -m dcsim run scenarios/teach_scarcity.yaml --plots --out runs/tutorials/scarcity",
    "compare": ("python -m dcsim compare scenarios/teach_scarcity.yaml --policies always_on price_threshold "
                "--seeds 5 --variant flat market.scarcity_kappa=0 --variant scarce market.scarcity_kappa=2 "
                "--baseline flat --out runs/tutorials/scarcity-kappa"),
}


def write_lesson1(ctx: Context, r: dict[str, Result]) -> str:
    run, cmp = r["run"], r["compare"]
    s = summary(run)
    rd = rounds(run)
    market = scenario_of(run)["market"]
    p0, kappa = market["base_price_tokens_per_kwh"], market["scarcity_kappa"]
    formula = p0 * np.exp(kappa * (1 - rd["renewable_fraction"]))
    max_err = float(np.max(np.abs(rd["price_tokens_per_kwh"] - formula))) if len(rd) else math.nan
    rows = [[clock(x.time_s), f"{x.renewable_w / 1000:.1f}", f"{x.demand_w / 1000:.1f}",
             f"{x.renewable_fraction:.3f}", f"{x.price_tokens_per_kwh:.3f}",
             f"{p0 * math.exp(kappa * (1 - x.renewable_fraction)):.3f}"]
            for x in rows_before(rd, [0.1, 4, 6, 7, 8, 9, 10, 12, 15, 18, 19, 20, 22, 24])]
    by_hour = md_table(["time", "renewable R (kW)", "demand D (kW)", "ρ", "price (tokens/kWh)",
                        "p0·exp(κ(1−ρ))"], rows)
    n_supply = int((rd["trigger"] == "supply").sum())
    trigger_text = (f"None of the {len(rd)} rounds was triggered by the hysteresis band: the clear-sky series steps "
                    f"every 15 minutes and no step moved supply by 20 % of demand, so every round came from the "
                    f"5-minute clock" if n_supply == 0 else
                    f"{n_supply} of the {len(rd)} rounds were extra rounds triggered by a supply step larger than 20 % "
                    f"of demand; the rest came from the 5-minute clock")
    err_text = "exactly 0" if max_err == 0 else f"{max_err:.1e} tokens/kWh (rounding)"
    kwh = 1 / J_PER_KWH
    e = s["energy_j"]
    table = cmp_summary(cmp)
    pt_flat, pt_scarce = "price_threshold@flat", "price_threshold@scarce"
    cov_flat, cov_scarce = mean_of(table, pt_flat, "renewable_share"), mean_of(table, pt_scarce, "renewable_share")
    ao_price_flat, ao_price = mean_of(table, "always_on@flat", "token_price.mean"), mean_of(table, "always_on@scarce", "token_price.mean")
    physical = ["renewable_share", "carbon_kg", "energy_kwh.consumed", "jobs.completed", "wait_s.mean"]
    diffs = cmp_diff(cmp)
    ao_zero = all((("always_on@scarce", m) in diffs.index and diffs.loc[("always_on@scarce", m), "mean_diff"] == 0)
                  for m in physical)
    flat_same = all(math.isclose(mean_of(table, pt_flat, m), mean_of(table, "always_on@flat", m), rel_tol=1e-12)
                    for m in physical)
    held_back = mean_of(table, pt_scarce, "jobs.pending_by_state.deferred")
    still_running = mean_of(table, pt_scarce, "jobs.pending_by_state.running")
    queued = mean_of(table, pt_scarce, "jobs.pending_by_state.queued")
    return f"""{page_header(ctx, LESSONS[0])}
**What you learn:** how the posted scarcity price turns the renewable share of demand into a price, and that a
price changes what happens only when policies listen to it.

## The rule

The Token Manager holds a market round every 5 minutes (and an extra one when the sun moves supply by more
than 20 % of demand). In the teaching mode, `market.mechanism: posted_price`, it posts one price for the round:

```
p = p0 · exp(κ (1 − ρ)),      ρ = min(1, R / D)
```

`R` is the renewable power at the round and `D` the demand: the power every GPU draws anyway (idle, sleeping,
waking) plus all the power above idle that the agents ask for. With the sun covering everything (ρ = 1) the
price is `p0`; with no sun (ρ = 0) it is `p0·e^κ`. In [`scenarios/teach_scarcity.yaml`](../../scenarios/teach_scarcity.yaml)
`p0` = 1 token/kWh and κ = 2, so the price moves between 1 and e² ≈ 7.39 tokens/kWh. Agents pay it for the
energy they use above idle; the grid is unlimited here, so nobody is rationed.

The scenario is small on purpose: 32 H100 GPUs, Poisson job arrivals, a 30 kW clear-sky solar plant in San
Jose on 21 June 2023 (pvlib's clear-sky model, no weather file), no battery (so ρ follows the sun alone) and
wallets large enough that budgets never bind (that is [lesson 3](03-budgets-and-fairness.md)).

## Run the day

{console(run)}

Every GPU ran `always_on`: every job starts at once at full power, whatever the price. The sun covered
{pct(s['renewable_share'])} of the {fmt(e['consumed'] * kwh, 4)} kWh consumed; with no battery,
{fmt(e['curtailed'] * kwh, 3)} kWh of midday solar had nowhere to go and was curtailed. The mean price over the
{s['market']['rounds']} rounds was {fmt(s['token_price']['mean'])} tokens/kWh, and its correlation with the
renewable fraction was {fmt(s['token_price']['corr_with_renewable_fraction'])}.{" No job waited: with 32 GPUs and about half of them busy, every job found a free GPU at once." if s['wait_s']['p99'] == 0 else ""}

{ctx.image(run.out_dir / 'plots' / 'price_vs_renewable.png', '01-price-vs-renewable.png', 'token price and renewable fraction over the day, and price against renewable fraction')}

Left: price (blue) and ρ (green) over the day, in hours since local midnight. Right: one point per round —
the exponential `p0·exp(κ(1−ρ))` traced out by the day. The price is flat at p0·e^κ all night, falls through the
morning as the panels wake, sits at p0 while the sun covers demand, and climbs again towards dusk. The zig-zags
in the morning and evening are `D` moving, not the sun: ρ = R/D, and every job that starts or ends between two
rounds changes the power asked for. {trigger_text}.

The run directory's `rounds.csv` has one row per round; a few of them (times in hours since local midnight),
with the formula recomputed from the row's own ρ:

{by_hour}

Over all {len(rd)} rounds the largest difference between the logged price and `p0·exp(κ(1−ρ))` is
{err_text}: the price is the formula, nothing else. Where the power came from:

{ctx.image(run.out_dir / 'plots' / 'power_by_source.png', '01-power-by-source.png', 'power by source over the day')}

## A price only matters if someone listens

`always_on` pays whatever it is asked. `price_threshold` (see `python -m dcsim list`) holds back deferrable jobs
(half the jobs here) and throttles running ones to the GPU's minimum power cap while the price is above
2 tokens/kWh. With κ = 2 that is whenever ρ < 1 − ln(2)/2 ≈ 0.65. Compare both policies with scarcity pricing
switched off (`flat`: κ = 0, the price is always p0) and on (`scarce`: κ = 2), over five seeds with common
random numbers (every arm sees the same jobs and the same sun for a given seed), each policy against itself
under the flat price:

{command_block(cmp)}

It prints (and writes as `comparison.md`):

{comparison_md(cmp)}

Read the difference table column by column.

- **`always_on`**: switching scarcity pricing on changed the mean price from {fmt(ao_price_flat)} to
  {fmt(ao_price)} tokens/kWh{" and nothing else: every physical metric has a difference of exactly 0. The price moved tokens from the wallets to the Token Manager, but no GPU did anything differently" if ao_zero else "; some physical metrics changed too (budgets must have bound)"}.
- **`price_threshold`**: with a flat price of 1 it never crosses its threshold of 2, so under `flat` it
  {"behaves exactly like `always_on` (the two `@flat` columns agree)" if flat_same else "should behave like `always_on`, but the two `@flat` columns differ"}.
  Under `scarce` it defers and throttles whenever the sun is short: the renewable share of the energy consumed went from {pct(cov_flat)}
  to {pct(cov_scarce)} ({diff_text(cmp, pt_scarce, 'renewable_share', 'points', scale=100)}), carbon
  {diff_text(cmp, pt_scarce, 'carbon_kg', 'kg')}, and the mean wait {diff_text(cmp, pt_scarce, 'wait_s.mean', 's')}.
  The price bought cleaner power with waiting time. Jobs completed changed by
  {diff_text(cmp, pt_scarce, 'jobs.completed')}: at the end of the day {fmt(held_back)} jobs on average were
  still held back for the sun, {fmt(queued)} were queued for a GPU and {fmt(still_running)} were running
  (against {fmt(mean_of(table, pt_flat, 'jobs.pending_by_state.running'))} running and none waiting under `flat`).

## Try it

```bash
python -m dcsim run scenarios/teach_scarcity.yaml --set market.scarcity_kappa=4 --plots --out runs/kappa4
python -m dcsim run scenarios/teach_scarcity.yaml --set supply.solar.capacity_w=60000 --plots --out runs/bigsolar
python -m dcsim run scenarios/teach_scarcity.yaml --policy price_threshold --set policy.params.threshold_tokens_per_kwh=4 --out runs/thr4
```

A bigger κ makes the night dearer but leaves the midday price at p0; a bigger plant widens the cheap hours.
`docs/market.md` has the rule with its edge cases (no demand means ρ = 1; rationing when demand exceeds supply).
"""


# ============================================================================================= lesson 2
L2 = {
    "toy": "python docs/tutorials/examples/one_round.py",
    "compare": ("python -m dcsim compare scenarios/teach_market.yaml --policies truthful --seeds 5 "
                "--variant posted market.mechanism=posted_price --variant uniform market.mechanism=uniform_price "
                "--variant vcg market.mechanism=vcg --variant kelly market.mechanism=kelly --baseline uniform "
                "--out runs/tutorials/mechanisms"),
    "run_posted": "python -m dcsim run scenarios/teach_market.yaml --set market.mechanism=posted_price --out runs/tutorials/market-posted",
    "report_posted": "python -m dcsim report runs/tutorials/market-posted",
    "run_uniform": "python -m dcsim run scenarios/teach_market.yaml --set market.mechanism=uniform_price --out runs/tutorials/market-uniform",
    "report_uniform": "python -m dcsim report runs/tutorials/market-uniform",
}


def _night_stats(run: Result) -> dict[str, float]:
    """Rounds in which the agents asked for more than was for sale, and how the allocation was shared then."""
    rd = rounds(run)
    short = rd[rd["requested_w"] > rd["sellable_w"] + 1e-6]
    return {"short_rounds": len(short), "rounds": len(rd),
            "paused": float(short["paused_gpus"].mean()) if len(short) else math.nan,
            "jain": float(short["jain_allocation_over_request"].mean()) if len(short) else math.nan,
            "paid": float(short["mean_paid_tokens_per_kwh"].mean()) if len(short) else math.nan}


def write_lesson2(ctx: Context, r: dict[str, Result]) -> str:
    cmp = r["compare"]
    t = cmp_summary(cmp)
    arms = ["truthful@posted", "truthful@uniform", "truthful@vcg", "truthful@kelly"]
    spent = {a: mean_of(t, a, "tokens.spent") for a in arms}
    price = {a: mean_of(t, a, "token_price.mean") for a in arms}
    done = {a: mean_of(t, a, "jobs.completed") for a in arms}
    extra = metric_table(cmp, {"token_price.mean": "mean headline price (tokens/kWh)",
                               "tokens.spent": "tokens spent", "market.rationed_rounds": "rationed rounds",
                               "market.jain_fairness_mean": "Jain index (mean)",
                               "market.welfare_ratio_mean": "welfare ratio (mean)",
                               "market.gini_wallets_end": "Gini of wallets (end)"})
    night = {k: _night_stats(r[f"run_{k}"]) for k in ("posted", "uniform")}
    heat_posted = ctx.image(report_png(r["report_posted"].out_dir / "report.html", "Per-GPU allocation heatmap"),
                            "02-heatmap-posted.png", "per-GPU allocation over the day under posted_price")
    heat_uniform = ctx.image(report_png(r["report_uniform"].out_dir / "report.html", "Per-GPU allocation heatmap"),
                             "02-heatmap-uniform.png", "per-GPU allocation over the day under uniform_price")
    night_rows = [[f"`{k}`", f"{v['short_rounds']} of {v['rounds']}", fmt(v["paused"], 3), fmt(v["jain"], 3),
                   fmt(v["paid"], 3)] for k, v in night.items()]
    toy = toy_rows(r["toy"])
    paid = {k: float(v[-2]) for k, v in toy.items()}
    served = {k: float(v[-1]) for k, v in toy.items()}
    posted_paused = night["posted"]["paused"]
    posted_stop = ("in seed 1's run below not one GPU paused in a short round" if posted_paused == 0 else
                   f"in seed 1's run below {fmt(posted_paused)} GPUs were paused on average in a short round "
                   "(an allocation scaled below the minimum power cap pauses a job)")
    return f"""{page_header(ctx, LESSONS[1])}
**What you learn:** what `posted_price`, `uniform_price`, `vcg` and `kelly` each do with the same bids and the same
supply: who gets power and what each agent pays, first in one round you can check by hand, then over a day.

Every mechanism is a pure function `clear(bids, supply, wallets)` in `dcsim/mechanisms.py`;
[`docs/market.md`](../market.md) has the equations. Pick one with `market.mechanism` in a scenario, or on the
command line with `--set market.mechanism=vcg`.

## One round by hand

Four agents each ask for 1 kW above idle for a 5-minute round and value it at 8, 6, 4 and 2 tokens/kWh. There is
1.5 kW of solar (merit-order cost 0.01 tokens/kWh) and 1 kW of grid (0.6): 2.5 kW for 4 kW of demand.
[`examples/one_round.py`](examples/one_round.py) clears this round with each mechanism:

{console(r['toy'])}

(`agent i`: power allocated @ the price that agent pays per kWh; tokens paid and value served are for the
5-minute round.)

- **`posted_price`** ignores the bids when setting the price: ρ = 1.5 kW / 4 kW = 0.375 gives
  `exp(2 × 0.625)` ≈ 3.49. Everyone bidding at least that (agents 0–2) wants 1 kW; 3 kW is more than the 2.5 kW
  for sale, so all three are scaled by the same factor (pro-rata rationing) and agent 2, who values power at 4,
  gets as much as agent 0, who values it at 8.
- **`uniform_price`** finds where supply meets demand: at any price below 4, agents 0–2 want 3 kW > 2.5 kW; at
  4, agents 0 and 1 are served in full and agent 2 (whose bid *is* the price) gets the remaining 0.5 kW.
  Everyone pays the clearing price 4, the highest bid that cannot be filled in full.
- **`vcg`** serves the same agents (it maximises declared value minus supply cost) but charges each its
  *externality*: the value the others lose because it is there. Without agent 0 its 1 kW would go to agent 2
  (0.5 kW at 4) and agent 3 (0.5 kW at 2): 3 tokens/kWh on average. Agent 2 displaces only agent 3 (value 2),
  so it pays 2. Every VCG payment is at most the uniform price here, and VCG collects
  {fmt(paid['vcg'], 3)} tokens against {fmt(paid['uniform_price'], 3)} for the same allocation. The headline price
  VCG logs (4) is the marginal value at the cut, not what anyone paid.
- **`kelly`** divides the supply in proportion to the tokens offered, at one price μ = Σ offers / supply. Here
  every agent offers what its whole request is worth to it (8, 6, 4, 2 tokens/kWh × 1 kW × 5 min), so
  μ = 8 and agent `i` gets `b_i / μ`: agent 3 gets 250 W and pays what the full 1 kW was worth to it. Kelly
  charges exactly the offer and sells all the supply, the lowest bidder included: the agents pay
  {fmt(paid['kelly'], 3)} tokens for power worth {fmt(served['kelly'], 3)} tokens to them. Offering one's full
  value is not what a Kelly bidder should do ([lesson 4](04-learning-bidders.md)).

## The same day, four ways

[`scenarios/teach_market.yaml`](../../scenarios/teach_market.yaml): 32 H100s, one-GPU jobs, 30 kW of clear-sky
solar and a grid import capped at 8 kW, so the night is really short of power. Every GPU runs the `truthful`
bidder: it asks for full power at a price equal to its job's value per kWh of the energy the job still needs
(the job pays its whole value only on completion, so a nearly finished job bids high). Five seeds, every
mechanism on the same jobs and sun, each compared with `uniform_price`:

{command_block(cmp)}

{comparison_md(cmp)}

More market metrics from the same comparison's `summary.csv` (mean ± 95% CI half-width over the seeds):

{extra}

What happened:

- **`posted_price`** completed {fmt(done['truthful@posted'], 4)} jobs a day on average against
  {fmt(done['truthful@uniform'], 4)} under `uniform_price`{" (the most of the four)" if max(done, key=done.get) == "truthful@posted" else ""}. Its price never exceeds p0·e² ≈ 7.39 tokens/kWh,
  below every truthful bid here (a fresh job is worth ~11.6 tokens/kWh at full clock), so every agent takes the
  posted price and rationing shares the night's power pro rata: each running job slows down ({posted_stop}).
  Pro-rata rationing gives every bidder the same fraction of its request, so its Jain index is 1 by
  construction.
- **`uniform_price` and `vcg`** give the night's power to the highest bids (jobs close to completion) in
  full and nothing to the rest, whose jobs pause: the efficient allocation of the declared values (welfare
  ratio near 1), but fewer jobs finish. Agents spent {fmt(spent['truthful@uniform'], 4)} tokens under
  `uniform_price` and {fmt(spent['truthful@vcg'], 4)} under `vcg`. In the hand-worked round VCG charged less
  than the uniform price for the same allocation; over a day the two runs drift apart (different jobs pause,
  wallets differ), so the day's totals are not a round-by-round comparison. VCG's *headline* price is the
  marginal value at the cut, not what agents paid (see `docs/market.md`), so compare tokens spent, not headlines.
- **`kelly`** had the highest mean price ({fmt(price['truthful@kelly'])} tokens/kWh) and spent
  {fmt(spent['truthful@kelly'], 4)} tokens: the engine's default Kelly offer is the request's value at the
  agent's own limit price, and under Kelly an offer is a payment. The Gini of the wallets at the end of the day
  was {fmt(mean_of(t, 'truthful@kelly', 'market.gini_wallets_end'))}, against
  {fmt(mean_of(t, 'truthful@uniform', 'market.gini_wallets_end'))} under `uniform_price`.

## Who gets the power

The per-GPU allocation heatmap from `python -m dcsim report` (one row per GPU, one column per round; colour =
power above idle allocated) of seed 1 under `posted_price` and under `uniform_price`:

{command_block(r['run_posted'], r['report_posted'], r['run_uniform'], r['report_uniform'])}

`posted_price`:

{heat_posted}

`uniform_price`:

{heat_uniform}

At night `posted_price` paints in-between colours (every running GPU gets part of what it asked for) and
`uniform_price` only full or nothing. From the two runs' `rounds.csv`, over the rounds in which the agents asked
for more than was for sale:

{md_table(['mechanism', 'short rounds', 'paused GPUs (mean)', 'Jain index (mean)', 'mean price paid (tokens/kWh)'], night_rows)}

(Dark cells are GPUs with no power above idle: either idle with no job or paused for want of an allocation.)

## Try it

```bash
python -m dcsim run scenarios/teach_market.yaml --set market.mechanism=vcg --set market.vcg_quantum_w=50 --out runs/vcg50
python -m dcsim run scenarios/teach_market.yaml --set market.mechanism=kelly --policy always_on --out runs/kelly-blind
python -m dcsim run scenarios/teach_market.yaml --set supply.grid.import_cap_w=null --set market.mechanism=uniform_price --out runs/nocap
```

Before running the last one, predict the price: without the import cap nothing is scarce, so what sets the
uniform price, and which two values can it take? (Look at `grid_cost_tokens_per_kwh` in `rounds.csv` and at
`market.supply_curve` in the scenario reference.)
"""


# ============================================================================================= lesson 3
L3 = {
    "run": "python -m dcsim run scenarios/teach_budgets.yaml --plots --out runs/tutorials/budgets",
    "report": "python -m dcsim report runs/tutorials/budgets",
    "compare": ("python -m dcsim compare scenarios/teach_budgets.yaml --policies always_on --seeds 5 "
                "--variant plain --variant cap market.carry_over_cap_tokens=3 "
                "--variant demurrage market.demurrage_fraction=0.2 --variant generous market.endowment_tokens=2 "
                "--baseline plain --out runs/tutorials/budgets-compare"),
}


def write_lesson3(ctx: Context, r: dict[str, Result]) -> str:
    run, cmp = r["run"], r["compare"]
    s = summary(run)
    tok = s["tokens"]
    ledger = pd.read_csv(run.out_dir / "ledger.csv")
    by_kind = ledger.groupby("kind", sort=True)["tokens"].agg(["count", "sum"])
    ledger_rows = [[f"`{k}`", int(v["count"]), f"{v['sum']:,.2f}"] for k, v in by_kind.iterrows()]
    minted = float(by_kind["sum"].filter(like="mint").sum() + by_kind["sum"].filter(like="credit").sum())
    burned = float(by_kind["sum"].filter(like="burn").sum())
    debited = float(by_kind["sum"].get("debit_energy", 0.0))
    balance = minted - debited - burned - tok["held"]
    rd = rounds(run)
    busy = rd[rd["bidders"] > 0]
    all_paused = busy[busy["paused_gpus"] >= busy["bidders"]]
    nothing = busy["allocated_w"] <= 1e-6
    jain_all = float(busy["jain_allocation_over_request"].mean()) if len(busy) else math.nan
    jain_some = float(busy.loc[~nothing, "jain_allocation_over_request"].mean()) if (~nothing).any() else math.nan
    hours = local_hour(rd["time_s"])
    periods = [(0, 8, "00:00–08:00"), (8, 16, "08:00–16:00"), (16, 24, "16:00–24:00")]
    period_rows = []
    for lo, hi, label in periods:
        part = rd[(hours >= lo) & (hours < hi)]
        if len(part):
            period_rows.append([label, f"{part['paused_gpus'].mean():.1f}", f"{part['bidders'].mean():.1f}",
                                f"{part['price_tokens_per_kwh'].mean():.2f}",
                                f"{part['tokens_debited'].sum():,.1f}"])
    gini_rows = [[clock(x.time_s), f"{x.tokens_held:,.1f}", f"{x.gini_wallets:.3f}", int(x.paused_gpus),
                  int(x.bidders), f"{x.price_tokens_per_kwh:.2f}"]
                 for x in rows_before(rd, [3, 6, 9, 12, 15, 18, 21, 24])]
    jobs = s["jobs"]
    t = cmp_summary(cmp)
    burn_cap, burn_dem = mean_of(t, "always_on@cap", "tokens.burned"), mean_of(t, "always_on@demurrage", "tokens.burned")
    verdicts = []
    for variant in ("generous", "cap", "demurrage"):
        arm = f"always_on@{variant}"
        better = [mean_of(t, arm, "market.jain_fairness_mean") > mean_of(t, "always_on@plain", "market.jain_fairness_mean"),
                  mean_of(t, arm, "market.gini_wallets_end") < mean_of(t, "always_on@plain", "market.gini_wallets_end"),
                  mean_of(t, arm, "jobs.completed") > mean_of(t, "always_on@plain", "jobs.completed")]
        verdicts.append(f"`{variant}` " + ("improved all three" if all(better) else "worsened all three" if not any(better)
                                           else f"improved {sum(better)} of the three"))
    agree = all(v.endswith("all three") for v in verdicts)
    agree_text = ("Here the three measures agreed because one thing drove them all, how much the wallets could pay "
                  "for at night; they need not agree in general (a round in which every agent gets nothing has a "
                  "perfect Jain index)." if agree else
                  "The measures disagreed: a variant can spread power more evenly and still finish fewer jobs.")
    tokens_table = metric_table(cmp, {"tokens.minted": "minted", "tokens.spent": "spent", "tokens.burned": "burned",
                                      "tokens.held": "held at the end", "market.gini_wallets_end": "Gini of wallets (end)",
                                      "market.jain_fairness_mean": "Jain index (mean)", "jobs.completed": "jobs completed"})
    wallets_png = ctx.image(run.out_dir / "plots" / "wallets.png", "03-wallets.png",
                            "tokens held, minted and debited over the day, and the Gini coefficient of wallets")
    heat_png = ctx.image(report_png(r["report"].out_dir / "report.html", "Per-GPU allocation heatmap"),
                         "03-heatmap.png", "per-GPU allocation over the day with tight budgets")
    return f"""{page_header(ctx, LESSONS[2])}
**What you learn:** where tokens come from and where they go (the ledger), what an endowment, a carry-over cap
and demurrage do, and how to read the two fairness measures dcsim reports: the Jain index of allocations and the
Gini coefficient of wallets.

## The token economy

Every GPU agent has a wallet. Tokens enter the economy in three ways and leave it in two:

| flow | ledger kind | when |
|:---|:---|:---|
| initial balance | `mint_initial` | at t = 0, `market.initial_tokens` per GPU |
| endowment | `mint_endowment` | every `endowment_interval_s` (a whole number of rounds), `endowment_tokens` per GPU |
| job value | `credit_job_value` | when a job completes, its value split over the GPUs that ran it |
| energy | `debit_energy` | at each round, for the energy used above idle at the price each agent held |
| demurrage, cap | `burn_demurrage`, `burn_carry_over` | at each endowment, before it is paid: `demurrage_fraction` of every wallet, then anything above `carry_over_cap_tokens` |

so tokens are conserved: minted = held + spent + burned. A budget binds: an agent is never allocated more power
than its wallet can pay for until the next round, so an empty wallet means no power above idle and a paused job.

[`scenarios/teach_budgets.yaml`](../../scenarios/teach_budgets.yaml) makes budgets bind: 32 H100s, posted
scarcity price (lesson 1), 30 kW of solar with a 20 kWh battery, and wallets that start at 2 tokens with
0.5 tokens an hour on top. A GPU at full power uses 0.62 kWh an hour above idle: 0.62 tokens an hour in full sun,
4.6 at night. Jobs pay 1.8 tokens per GPU-hour on completion. Every GPU runs `always_on`, which pays any price
while its wallet lasts.

## One day on a budget

{console(run)}

The ledger (`ledger.csv`, one row per flow per round) summed by kind:

{md_table(['kind', 'entries', 'tokens'], ledger_rows)}

Minted ({minted:,.2f}) − debited ({debited:,.2f}) − burned ({burned:,.2f}) − held at the end ({tok['held']:,.2f})
= {balance:.1e}: the books balance to rounding.

The wallets over the day (`plots/wallets.png`, written by `--plots`): tokens held, endowments minted and energy
debited, and the Gini coefficient of the wallets:

{wallets_png}

`python -m dcsim report` writes a self-contained HTML page of the run (the same plots, the ledger, and a per-GPU
allocation heatmap when the run recorded `allocations.npz`, as runs of up to 1024 GPUs do by default). Its
heatmap, one row per GPU and one column per round, coloured by the power above idle allocated:

{command_block(r['report'])}

{heat_png}

Budgets bite before the sun is up. The day starts at midnight with 2 tokens per wallet; at the night price
that is under half an hour at full power, so wallets run dry in the small hours. After that each hourly
endowment (the steps of the "endowments minted" line) buys a running GPU a few minutes of power, and then its job
pauses again: the dark stretches of the heatmap, broken by thin bright stripes on the hour. Of the {len(busy)}
rounds with at least one job running, {len(all_paused)} had every one of those jobs paused. Once the sun is up
the price falls towards p0 = 1, completed jobs pay their value into the wallets, pauses become rarer, and the
day's savings carry the evening. By period, from `rounds.csv` (means over rounds; tokens debited summed):

{md_table(['hours', 'paused GPUs', 'GPUs with a job', 'price (tokens/kWh)', 'tokens debited'], period_rows)}

A paused job keeps its GPUs, so new jobs queue behind it: {jobs['dropped']:,} jobs were dropped when their
deadline passed while they waited, and {jobs['deadline_misses']:,} missed their deadline in all. The state of the
economy at a few moments (the last round before each hour shown, that is before that hour's endowment):

{md_table(['time', 'tokens held', 'Gini of wallets', 'paused GPUs', 'GPUs with a job', 'price'], gini_rows)}

### Two fairness measures, two different questions

- **Jain index of allocations** (`jain_allocation_over_request` per round, `market.jain_fairness_mean` in the
  summary): `(Σx)² / (n Σx²)` over the agents that asked for power, with x = allocation / request. It is 1 when
  every bidder gets the same fraction of what it asked, 1/n when one gets everything. By convention it is also 1
  when *nobody* gets anything: {int(nothing.sum())} of the {len(busy)} rounds above allocated nothing at all and
  count as perfectly fair. Over the rounds with bidders its mean is {fmt(jain_all)}; leaving out the rounds that
  allocated nothing, {fmt(jain_some)}. Read it together with `paused_gpus`.
- **Gini coefficient of wallets** (`gini_wallets` per round, `market.gini_wallets_end` at the end): 0 when all
  wallets hold the same, towards 1 when one holds everything. Wallets start equal (Gini 0); they drift apart
  because only GPUs with a job spend, and job value is credited to the GPUs that ran the job, so a GPU that
  happens to finish long, valuable jobs gets richer. Every endowment pulls it down for a moment (the same amount
  added to every wallet makes them more equal): the dips on the hour in the plot above. When most wallets are empty, a few non-empty ones make the Gini high even if they hold little.

## Endowments, a carry-over cap and demurrage

Four variants over five seeds, each against the plain budget: `cap` burns anything above 3 tokens at each
endowment, `demurrage` burns 20 % of every wallet at each endowment, `generous` pays 2 tokens an hour instead of 0.5:

{command_block(cmp)}

{comparison_md(cmp)}

The token flows of the same comparison (from its `summary.csv`; mean ± 95% CI half-width over the seeds):

{tokens_table}

What happened:

- **`generous`**: four times the endowment keeps more GPUs running at night: jobs completed
  {diff_text(cmp, 'always_on@generous', 'jobs.completed')}, deadline misses
  {diff_text(cmp, 'always_on@generous', 'jobs.deadline_misses')}, but carbon
  {diff_text(cmp, 'always_on@generous', 'carbon_kg', 'kg')}: the extra night work runs on grid power. The tight
  budget had been cutting carbon by stopping work, not by moving it to the sunny hours (`always_on` never
  moves work).
- **`cap`** and **`demurrage`** burn the tokens agents save in the sunny hours ({fmt(burn_cap, 4)} and
  {fmt(burn_dem, 4)} tokens on average), savings that would have paid for night work. So they act
  like a tighter night budget: renewable share {diff_text(cmp, 'always_on@cap', 'renewable_share', 'points', scale=100)}
  and {diff_text(cmp, 'always_on@demurrage', 'renewable_share', 'points', scale=100)}, jobs completed
  {diff_text(cmp, 'always_on@cap', 'jobs.completed')} and {diff_text(cmp, 'always_on@demurrage', 'jobs.completed')}.
  Both are meant to stop hoarding; here hoarding was what carried work into the night. The end-of-day Gini is
  {more_less(mean_of(t, 'always_on@cap', 'market.gini_wallets_end'), mean_of(t, 'always_on@plain', 'market.gini_wallets_end'), '*higher*', '*lower*')}
  with the cap: the few tokens left at midnight ({fmt(mean_of(t, 'always_on@cap', 'tokens.held'))} on average,
  against {fmt(mean_of(t, 'always_on@plain', 'tokens.held'))} without it) sit in a few wallets.

Which of these is "fair" depends on the question: equal shares of power in each round (Jain), equal wealth
(Gini), or jobs finished. Against the plain budget (mean Jain index up, end-of-day Gini down, more jobs
completed counting as better): {"; ".join(verdicts)}. {agree_text}

## Try it

```bash
python -m dcsim run scenarios/teach_budgets.yaml --set market.endowment_interval_s=15min --set market.endowment_tokens=0.125 --out runs/smooth
python -m dcsim run scenarios/teach_budgets.yaml --set market.mechanism=kelly --out runs/budget-kelly
python -m dcsim run scenarios/teach_budgets.yaml --policy price_threshold --out runs/budget-thr
```

The first pays the same 0.5 tokens an hour in quarter-hour instalments (the endowment interval must be a whole
number of 5-minute rounds); the second sells power by proportional share (lesson 2); the last throttles and
holds back deferrable work while the price is above 2 tokens/kWh. Compare their ledgers and fairness measures
with the run above.
"""


# ============================================================================================= lesson 4
L4 = {
    "toy": "python docs/tutorials/examples/shading.py",
    "learn": "python docs/tutorials/examples/learn_shading.py --plot runs/tutorials/learn_shading.png",
    "compare": ("python -m dcsim compare scenarios/teach_market.yaml --policies truthful always_on --seeds 5 "
                "--variant posted market.mechanism=posted_price --variant uniform market.mechanism=uniform_price "
                "--variant vcg market.mechanism=vcg --baseline truthful --out runs/tutorials/bidders"),
    "run_blind_vcg": ("python -m dcsim run scenarios/teach_market.yaml --policy always_on --set market.mechanism=vcg "
                      "--out runs/tutorials/vcg-price-blind"),
}


_ESTIMATE = re.compile(r"^(-?[\d.]+)(?: ± ([\d.]+))?(?: %)?(?: \[([\d.]+)–([\d.]+)\])?$")


def _learn_tables(result: Result) -> list[dict[str, list[str]]]:
    """The Markdown tables learn_shading.py printed, in order, each as first cell → the other cells."""
    tables: list[dict[str, list[str]]] = []
    current: dict[str, list[str]] | None = None
    for line in result.stdout.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if current is None:  # the header row starts a table
            current = {}
            tables.append(current)
        elif not cells[0].startswith(":"):
            current[cells[0]] = cells[1:]
    if len(tables) != 2:
        raise RuntimeError(f"{result.command}: expected two tables, found {len(tables)}")
    return tables


def _est(cell: str) -> tuple[float, float, float, float]:
    """``mean ± half [lowest–highest]`` (each part after the mean optional) as four floats (NaN when absent)."""
    m = _ESTIMATE.match(cell.strip())
    if not m:
        raise RuntimeError(f"learn_shading.py: cannot read the table cell {cell!r}")
    return tuple(float(g) if g is not None else math.nan for g in m.groups())  # type: ignore[return-value]


def _learn_text(result: Result) -> dict[str, str]:
    """Sentences about the learning experiment, each worded from the numbers the script printed."""
    shades, outcomes = _learn_tables(result)
    names = [n for n in shades if not n.startswith("pay-as-bid equilibrium")]
    est = {n: [_est(c) for c in shades[n][:-1]] for n in names}
    q_gap = {n: _est(shades[n][-1]) for n in names}
    theory = [_est(c)[0] for c in next(v for k, v in shades.items() if k.startswith("pay-as-bid equilibrium"))[:-1]]
    out = {n: [_est(c) for c in outcomes[n]] for n in names}  # price, price T, eff, eff T, surplus, surplus T, gain
    labels = ["1–3.75", "3.75–6.5", "6.5–9.25", "9.25–12"]

    def shade(n: str, b: int) -> str:
        mean, half, lo, hi = est[n][b]
        return f"{mean:.2f} ± {half:.2f}"

    def gain(n: str) -> str:
        mean, half, _, _ = out[n][6]
        return f"{mean:.2f} ± {half:.2f}"

    pab = est["pay_as_bid"]
    below = [b for b in range(4) if pab[b][0] + pab[b][1] < 1]
    pab_where = ("in every value bin, with the whole confidence interval below 1" if len(below) == 4 else
                 "in the bins " + ", ".join(labels[b] for b in below) + " (the others' intervals reach 1)")
    top_diff = pab[3][0] - theory[3]
    pab_top = (f"For the highest values the learners bid {shade('pay_as_bid', 3)} of their value (every agent in "
               f"[{pab[3][2]:g}, {pab[3][3]:g}]) against {theory[3]:.2f} in the continuous-bid equilibrium: "
               + ("close to it" if abs(top_diff) <= 0.05 else
                  f"{'more' if top_diff < 0 else 'less'} shading than the equilibrium"))
    p_pab, _, _, _ = out["pay_as_bid"][0]
    p_uni, p_uni_h, _, _ = out["uniform_price"][0]
    p_uni_truth = out["uniform_price"][1][0]
    same_uv = shades["uniform_price"] == shades["vcg"] and outcomes["uniform_price"] == outcomes["vcg"]
    uni = est["uniform_price"]
    g_uni, g_uni_h, _, _ = out["uniform_price"][6]
    g_pab = out["pay_as_bid"][6]
    kel = est["kelly"]
    upper_at_one = all(uni[b][0] - uni[b][1] <= 1 <= uni[b][0] + uni[b][1] for b in (2, 3))
    near_one = "at 1 within the noise" if upper_at_one else "not at 1 within the noise"
    indifferent = ("That spread is indifference, not profitable shading. A winner's price does not depend on its own "
                   "bid, so every shade that wins the same rounds earns the same; a low-value agent almost never wins, "
                   "so all its shades earn about 0. Truthful bidding is only *weakly* dominant: the Q-values of many "
                   "shades tie up to noise, and the greedy choice among tied entries is whichever the noise favoured. "
                   "The tables' belief that truthful bidding loses "
                   f"{q_gap['uniform_price'][0]:.2f} ± {q_gap['uniform_price'][1]:.2f} tokens/kWh (against "
                   f"{q_gap['pay_as_bid'][0]:.2f} under `pay_as_bid`) is the upward bias of a maximum over noisy "
                   f"estimates: on the held-out rounds agent 0's learned shades gain {g_uni:.2f} ± {g_uni_h:.2f} "
                   "tokens per kWh it wanted over truthful bids"
                   + (" (the interval includes 0)" if abs(g_uni) <= g_uni_h else ", a loss: shading costs it a little")
                   + '. So the hypothesis "at or near 1" holds where a bid decides something, and shows up as '
                   "indifference where it does not.")
    rising = all(kel[b][0] < kel[b + 1][0] for b in range(3))
    p_uni_lower = p_uni + p_uni_h < p_uni_truth
    effs = {n: out[n][2][0] for n in names}
    low_eff = [n for n in names if effs[n] < 97]
    same_uv_text = ("the two rows are identical, for the reason the toy gave: with one 1 kW block per bidder both "
                    "charge every winner the highest rejected bid. " if same_uv else "")
    return {
        "pab": (f"**`pay_as_bid`**: the learned shade settled below 1 {pab_where}. {pab_top}. The learners play a "
                "coarser game than the theory (one shade per value bin, shades on a 0.1 grid), so the equilibrium "
                "line is a reference, not a prediction to the second decimal. "
                + (f"In the lowest bin the spread across agents is wide ([{pab[0][2]:g}, {pab[0][3]:g}]): an agent "
                   "valuing power under 3.75 tokens/kWh rarely wins whatever it bids, so its shades earn nearly the "
                   "same (nothing) and the table has little to tell them apart. " if pab[0][3] - pab[0][2] >= 0.3 else "")
                + f"The check on the held-out rounds agrees: agent 0 would lose {gain('pay_as_bid')} "
                "tokens per kWh it wanted by switching to truthful bids"
                + (", so shading pays." if g_pab[0] - g_pab[1] > 0 else "; the interval includes 0.")),
        "uv": (f"**`uniform_price` and `vcg`**: {same_uv_text}For the two upper value bins the learned shade is "
               f"{shade('uniform_price', 2)} and {shade('uniform_price', 3)}, {near_one}, but single agents sit "
               f"anywhere from {min(uni[2][2], uni[3][2]):g} to {max(uni[2][3], uni[3][3]):g}; in the lower bins "
               f"the mean is {shade('uniform_price', 0)} and {shade('uniform_price', 1)}, with agents from "
               f"{min(uni[0][2], uni[1][2]):g} to {max(uni[0][3], uni[1][3]):g}. "
               + (indifferent if g_uni <= g_uni_h else
                  f"Agent 0's learned shades gain {g_uni:.2f} ± {g_uni_h:.2f} tokens per kWh it wanted over truthful "
                  "bids on the held-out rounds: here the learners found shading that pays, which the theory of a "
                  "(k+1)-th price auction with one block per bidder does not predict. Look for the cause (ties at "
                  "the clearing price, the 0.6 grid cost acting as a reserve price) before trusting it.")),
        "kelly": (f"**`kelly`**: offers fell far below the value of the request in every bin, from "
                  f"{shade('kelly', 0)} for the lowest values to {shade('kelly', 3)} for the highest"
                  + ("" if all(k[0] + k[1] < 1 for k in kel) else " (some intervals reach 1)")
                  + f". For comparison, the symmetric equilibrium offer `(N − 1)/N²` times the 3 kW for sale over the "
                  f"1 kW wanted is {5 / 36 * 3:.2f} of the request's value for six identical bidders."
                  + (" The fraction rises with the value: against the others' offers a low-value agent's best reply "
                     "is to offer little or nothing (staying out was best in the toy), a high-value agent's is to buy "
                     "a larger share." if rising else "")),
        "revenue": (f"Revenue: with learned bids the mean price paid under `pay_as_bid` was {p_pab:.2f} tokens/kWh. "
                    f"Revenue equivalence says the pay-as-bid equilibrium and truthful uniform pricing earn the same on "
                    f"average, {1 + 11 * 3 / 7:.2f} here ({p_uni_truth:.2f} on these held-out rounds); the learners "
                    f"leave the seller {'less' if p_pab < p_uni_truth else 'more'}. "
                    + (f"Under `uniform_price` the learned bids also paid less than truthful ones ({p_uni:.2f} ± "
                       f"{p_uni_h:.2f} against {p_uni_truth:.2f}): the price is the highest *rejected* bid, a loser's, "
                       "and the losers' indifferent shading lowers it for the winners at no cost to themselves. "
                       if p_uni_lower else
                       f"Under `uniform_price` the learned bids paid {p_uni:.2f} ± {p_uni_h:.2f} against "
                       f"{p_uni_truth:.2f} for truthful ones. ")
                    + ("Efficiency (welfare over the best possible, from the true values) stayed at 97 % or more "
                       "under every mechanism." if not low_eff else
                       "Efficiency (welfare over the best possible, from the true values) stayed at 97 % or more "
                       "except under " + ", ".join(f"`{n}` ({effs[n]:.1f} % learned, {out[n][3][0]:.1f} % truthful)"
                                                   for n in low_eff)
                       + (", which splits the power in proportion to the offers rather than serving the highest "
                          "values first." if low_eff == ["kelly"] else "."))),
    }


def write_lesson4(ctx: Context, r: dict[str, Result]) -> str:
    learn = _learn_text(r["learn"])
    cmp = r["compare"]
    t = cmp_summary(cmp)
    extra = metric_table(cmp, {"tokens.spent": "tokens spent", "tokens.held": "tokens held (end)",
                               "market.gini_wallets_end": "Gini of wallets (end)", "jobs.completed": "jobs completed",
                               "market.rationed_rounds": "rationed rounds"})
    same_posted = all(math.isclose(mean_of(t, "truthful@posted", m), mean_of(t, "always_on@posted", m), rel_tol=1e-9)
                      for m in ("jobs.completed", "tokens.spent", "carbon_kg"))
    vcg_blind_price = mean_of(t, "always_on@vcg", "token_price.mean")
    blind = rounds(r["run_blind_vcg"])
    hours = local_hour(blind["time_s"])
    night = blind[(hours < 6) | (hours >= 21)]
    night_rows = [[f"{len(night)}", f"{night['sellable_w'].mean() / 1000:.2f}", f"{night['requested_w'].mean() / 1000:.2f}",
                   f"{night['allocated_w'].mean() / 1000:.2f}", f"{night['paused_gpus'].mean():.1f}",
                   f"{night['bidders'].mean():.1f}", fmt(night['price_tokens_per_kwh'].mean(), 4),
                   fmt(night['mean_paid_tokens_per_kwh'].mean(), 3)]] if len(night) else [["0"] + ["n/a"] * 7]
    # "unsold": more than a tenth of the power for sale went unallocated (VCG never trades a remainder below one
    # quantum per agent, so a few tens of W always stay behind)
    unsold = len(night) and night["allocated_w"].mean() < 0.9 * night["sellable_w"].mean()
    mostly_paused = len(night) and night["paused_gpus"].mean() > night["bidders"].mean() / 2
    paid, headline = night["mean_paid_tokens_per_kwh"].mean(), night["price_tokens_per_kwh"].mean()
    blind_text = ("At night less power was allocated than was for sale while most GPUs with a job sat paused, and "
                  f"the agents that did get power paid {fmt(paid, 3)} tokens/kWh on average against a headline of "
                  f"{fmt(headline, 4)}." if unsold and mostly_paused else
                  f"At night the power for sale was sold ({night['allocated_w'].mean() / 1000:.2f} of "
                  f"{night['sellable_w'].mean() / 1000:.2f} kW on average; VCG trades whole 10 W quanta); most GPUs "
                  "with a job still sat paused because demand exceeded supply, and the winners paid "
                  f"{fmt(paid, 3)} tokens/kWh on average against a headline of {fmt(headline, 4)}.")
    return f"""{page_header(ctx, LESSONS[3])}
**What you learn:** why a bidder shades its bid below its value under a pay-your-bid (first-price) rule and has no
reason to under a second-price (VCG) rule, whether bidders that learn by trial and error (tabular Q-learning)
find that out for themselves, and what happens on a real day when bids carry values and when they do not.

## The theory in one paragraph per rule

A bidder with value `v` per kWh bids `b`. Its surplus when it wins `x` kWh is `(v − price) · x`.

- **Pay-your-bid (first price).** The winner pays `b`. Bidding `b = v` wins often but earns nothing when it wins;
  bidding lower earns `v − b` per kWh but wins less often. The best bid is below `v`: for one unit and `n` bidders
  whose values are independent and uniform on `[0, v̄]`, the symmetric equilibrium bid is `(n − 1)/n · v`. Bids are
  shaded.
- **Second price / VCG.** The winner pays the externality it imposes on the others, which depends on the *others'*
  bids only. Its own bid only decides whether (and how much) it wins, and it wins exactly when winning is worth
  the price. Bidding `v` is weakly dominant: shading can only lose a profitable unit, overbidding can only win an
  unprofitable one. dcsim's `vcg` keeps that property as long as budgets and the wallet cap on values do not bind
  (`docs/market.md`).
- **Uniform price.** Everyone pays the clearing price. For bidders who each want one block, the price is the
  highest rejected bid and the rule is a (k+1)-th price auction: truthful, like VCG. A bidder wanting several
  blocks can lower the price it pays on all of them by withholding demand on its marginal ones ("demand
  reduction"), so multi-block bidders have a reason to shade.
- **Posted price.** The price does not depend on the bids at all. A bid is only a yes or no at the posted price,
  and any bid at or above it gets the same outcome: nothing to gain by misreporting.
- **Kelly proportional share.** An offer is a payment: the agent pays exactly what it offered and gets a share in
  proportion. With `N` symmetric bidders of value `v` per kWh sharing supply `E`, the Nash equilibrium offer is
  `b* = vE(N − 1)/N²` (docs/market.md): each gets `E/N`, worth `vE/N`, and offers `(N − 1)/N` of that. The price
  `v(N − 1)/N` sits below the value; price-anticipating bidders shade, most when they are few.

dcsim's `pay_as_bid` mechanism is the multi-unit first-price rule: it allocates like `uniform_price` (highest bids
first, while they cover the supply cost) and every winner pays its own bid (`docs/market.md`).

## Does shading pay? One bidder against truthful rivals

[`examples/shading.py`](examples/shading.py): six agents want 1 kW each, 3 kW are for sale. Agent 0 values power at
7 tokens/kWh and bids `shade × 7`; the other five draw values uniformly between 1 and 12 and bid them
truthfully. The script averages agent 0's surplus over 400 draws of the rivals (the same draws for every shade),
clearing each round with each dcsim mechanism:

{console(r['toy'])}

- **`pay_as_bid`** (first price): bidding the value (shade 1) earns exactly 0; the best shade is below 1. Shading is
  the best response.
- **`uniform_price` and `vcg`**: the best bid is the value itself, as the theory says. The two rows are equal
  because the 3 kW for sale are exactly three requests: the fourth-highest bid is rejected whole, and both rules
  charge a winner that bid. (In lesson 2's round the marginal bidder was served in part, and VCG charged less.)
- **`posted_price`**: any bid at or above the posted price gives the same surplus; below it the agent gets nothing.
- **`kelly`**: every positive offer loses here. The rivals offer the full value of their requests, so the price
  μ = Σ offers / supply exceeds agent 0's value of 7 and the best reply is to stay out (shade 0). Against such
  aggressive rivals Kelly punishes truthful offers hardest; against rivals at the Kelly equilibrium the best
  offer is positive but still far below the value.

## Do Q-learning bidders shade?

The toy asked what one bidder should do against truthful rivals. Here *every* bidder learns, and nobody is told
the theory. [`examples/learn_shading.py`](examples/learn_shading.py) repeats the same market (six agents wanting
1 kW, 3 kW for sale) for 3,000 rounds at irregular times: the gap to the next round is exponential with a mean of
5 minutes, and an allocation lasts until the next round. Before each round every agent draws a fresh value,
uniform on 1–12 tokens/kWh. Each agent is an independent tabular Q-learner (`policies/qtable.py`, one table per
agent):

- **state**: which of four value bins its value falls in, so what it learns is a bid function;
- **action**: a shade factor from 0.1, 0.2, …, 1.0, 1.2; it bids `shade × value` (under `kelly` it offers
  `shade ×` what its request is worth over the round, `shade × value × 1 kW × round`);
- **reward**: the value of the energy it got minus what it paid, discounted to the moment it bid;
- **update**: semi-Markov Q-learning, `Q ← Q + α (r + γ^(Δt/τ) max Q(s′) − Q)`, with `Δt` the actual gap to its
  next bid and γ = 0.5 per τ = 5 minutes, so a long gap counts the future for less (the updates are applied ten
  rounds at a time, which keeps the script fast); ε-greedy exploration with ε decaying from 1 to 0.02.

The same values, round times and exploration draws are used under every mechanism, four seeds each. Afterwards
each agent's greedy shade per bin is read off its table, and the greedy policies are replayed on 400 held-out
rounds:

{console(r['learn'])}

{ctx.image(ctx.scratch / 'runs' / 'tutorials' / 'learn_shading.png', '04-learn-shading.png', 'learned shade against value under four mechanisms')}

The points are the mean over agents and seeds with the seeds' 95 % interval; the dashed line is `b(v)/v` in the
symmetric pay-as-bid equilibrium with continuous bids, `b(v) = E[Y | Y < v]` with `Y` the third-highest of the
other five values.

{learn['pab']}

{learn['uv']}

{learn['kelly']}

{learn['revenue']}

Two caveats. The agents learn at the same time, so each one's environment changes while it learns; nothing
guarantees that independent Q-learners reach an equilibrium, and the tables above are where they were after
3,000 rounds, not a limit (`--rounds 15000 --seeds 2` runs longer, in about a minute). And the state is the value alone: an agent cannot condition on the others' past bids, so it learns a bid
function, not a strategy against particular rivals.

The learning policies that run inside a whole datacenter simulation (`qlearning`, `dqn`) choose among eight
power-and-price actions per GPU and cannot express a shade factor, which is why this experiment is a repeated
auction at the level of the mechanisms. Training them on a scenario is `python -m dcsim train ...`, documented
in [docs/learning.md](../learning.md).

## A whole day: stating values or not

On a full day every agent runs the same policy, so the question becomes what the mechanism does when *all*
bidders state their values (`truthful`) and when none does (`always_on`: full power at any price, an infinite
bid). Same scenario as [lesson 2](02-four-mechanisms.md) (`teach_market.yaml`, night power capped at 8 kW),
five seeds, each `always_on` arm against `truthful` under the same mechanism:

{command_block(cmp)}

{comparison_md(cmp)}

{ctx.image(cmp.out_dir / 'comparison.png', '04-comparison.png', 'comparison of truthful and price-blind bidders under three mechanisms')}

Token flows from the same comparison's `summary.csv`:

{extra}

- **`posted_price`**: {"the two policies produced identical days (every difference is exactly 0)" if same_posted else "the two policies differ"}.
  The posted price never exceeds p0·e² ≈ 7.39 tokens/kWh and every truthful value here is higher, so the truthful
  bidder always says yes — just like the price-blind one. Under a posted price the bid's only job is to say no
  when the price exceeds the value.
- **`uniform_price`**: price-blind bids make the night's clearing price whatever the wallets can pay (the
  budget-limited demand `Σ wallet/price` meets supply), so the agents pay all they have: tokens spent rose by
  {diff_text(cmp, 'always_on@uniform', 'tokens.spent')} and the wallets ended almost empty and very unequal.
  Jobs completed {diff_text(cmp, 'always_on@uniform', 'jobs.completed')}.
- **`vcg`**: the mean headline price of the price-blind arm is {fmt(vcg_blind_price, 4)} tokens/kWh. VCG turns an
  infinite bid into the most the agent's wallet pays per quantum for its whole request, so a price-blind bidder
  declares what it can afford and can pay for everything it wins — yet it still pays only its externality, not
  its declared value. Against truthful bidders, tokens spent changed by {diff_text(cmp, 'always_on@vcg', 'tokens.spent')}
  and jobs completed by {diff_text(cmp, 'always_on@vcg', 'jobs.completed')}: with wallets as the only limit,
  price-blind bidders outbid every finite value at night and drain their wallets, as under the uniform price.

Seed 1 with price-blind bidders under `vcg`, its night rounds (before 06:00 and from 21:00) from `rounds.csv`:

{command_block(r['run_blind_vcg'])}

{md_table(['night rounds', 'for sale (kW)', 'asked for (kW)', 'allocated (kW)', 'paused GPUs', 'GPUs with a job', 'headline price', 'mean price paid'], night_rows)}

{blind_text} VCG's truthfulness needs values that are stated; an "infinite" value is not one, so the wallet cap
stands in for it: the agent says it will pay whatever its wallet allows, and the auction takes it at its word.
"""


# ============================================================================================= lesson 5
L5 = {
    "regular": ("python -m dcsim compare scenarios/teach_timing.yaml --policies always_on renewable_follower "
                "--timing event fixed:900 --baseline event --seeds 5 --out runs/tutorials/timing-regular"),
    "irregular": ("python -m dcsim compare scenarios/teach_irregular.yaml --policies always_on renewable_follower "
                  "--timing event fixed:900 --baseline event --seeds 5 --out runs/tutorials/timing-irregular"),
    "run_event": ("python -m dcsim run scenarios/teach_irregular.yaml --trace-events --plots "
                  "--out runs/tutorials/irregular-event"),
    "run_fixed": ("python -m dcsim run scenarios/teach_irregular.yaml --trace-events "
                  "--set 'decision_timing={fixed_step: 900}' --out runs/tutorials/irregular-fixed"),
}


def _gaps(times: np.ndarray) -> str:
    d = np.diff(np.sort(np.asarray(times, dtype=float)))
    if d.size == 0:
        return "n/a"
    return f"{d.min():,.0f} / {np.median(d):,.0f} / {d.max():,.0f}"


def _cv(times: np.ndarray) -> float:
    d = np.diff(np.sort(np.asarray(times, dtype=float)))
    return float(d.std() / d.mean()) if d.size > 1 and d.mean() > 0 else math.nan


def write_lesson5(ctx: Context, r: dict[str, Result]) -> str:
    reg, irr = r["regular"], r["irregular"]
    ev, fx = r["run_event"], r["run_fixed"]
    arm = "renewable_follower@fixed:900"
    metrics = {"renewable_share": ("renewable share (percentage points)", 100.0, ""),
               "carbon_kg": ("carbon (kg CO2)", 1.0, ""), "energy_kwh.consumed": ("energy consumed (kWh)", 1.0, ""),
               "jobs.completed": ("jobs completed", 1.0, ""), "wait_s.mean": ("mean wait (s)", 1.0, ""),
               "welfare_tokens.welfare": ("welfare (tokens)", 1.0, "")}
    side = [[label, diff_text(reg, arm, m, scale=k), diff_text(irr, arm, m, scale=k)]
            for m, (label, k, _) in metrics.items()]
    # the two worlds' timings, from the runs' own tables
    jobs_ev = pd.read_csv(ev.out_dir / "jobs.csv")
    rd_ev = rounds(ev)
    events_ev = pd.read_csv(ev.out_dir / "events.csv")
    supply_t = events_ev.loc[events_ev["kind"] == "supply", "time_s"].to_numpy(float)
    periodic = rd_ev.loc[rd_ev["trigger"] == "periodic", "time_s"].to_numpy(float)
    world_rows = [
        ["job inter-arrival times: coefficient of variation (1 for Poisson)", f"{_cv(jobs_ev['arrival_s'].to_numpy(float)):.2f}"],
        ["supply changes: count; min / median / max gap (s)", f"{supply_t.size}; {_gaps(supply_t)}"],
        ["periodic rounds: min / median / max gap (s)", _gaps(periodic)],
        ["extra rounds triggered by a supply change", f"{int((rd_ev['trigger'] == 'supply').sum())}"],
    ]
    dec = []
    for label, run in (("event", ev), ("fixed:900", fx)):
        d = pd.read_csv(run.out_dir / "decisions.csv")
        counts = d.groupby("method")["agents"].agg(["count", "sum"])
        row = [f"`{label}`"]
        for method in ("bid", "admit", "on_idle"):
            row.append(f"{int(counts.loc[method, 'count']):,} / {int(counts.loc[method, 'sum']):,}" if method in counts.index else "0 / 0")
        se = summary(run)
        row += [f"{se['performance']['events']:,}", pct(se["renewable_share"]), fmt(se["wait_s"]["mean"], 4)]
        dec.append(row)
    ev_counts = events_ev["kind"].value_counts()
    kinds = ", ".join(f"{k} {int(v):,}" for k, v in ev_counts.items())
    p_reg, p_irr = p_value(reg, arm, "renewable_share"), p_value(irr, arm, "renewable_share")
    tr, ti = cmp_summary(reg), cmp_summary(irr)
    base = "renewable_follower@event"
    levels = md_table(["mean over the seeds", "regular world", "irregular world"], [
        ["jobs arrived", fmt(mean_of(tr, base, "jobs.arrived"), 4), fmt(mean_of(ti, base, "jobs.arrived"), 4)],
        ["renewable energy generated (kWh)", fmt(mean_of(tr, base, "energy_kwh.renewable_generated"), 4),
         fmt(mean_of(ti, base, "energy_kwh.renewable_generated"), 4)],
        ["market rounds", fmt(mean_of(tr, base, "market.rounds"), 4), fmt(mean_of(ti, base, "market.rounds"), 4)]])
    dec_ev, dec_fx = dec[0], dec[1]
    arrivals = scenario_of(ev)["workload"]["arrivals"]
    rates, sojourn = arrivals["rates_per_s"], arrivals["mean_sojourn_s"]
    mmpp_daily = 86400.0 * (rates[0] * sojourn[0] + rates[1] * sojourn[1]) / (sojourn[0] + sojourn[1])
    mmpp_note = "" if ctx.horizon else (
        f"\n(The bursty process brings {fmt(mmpp_daily)} jobs a day in the long run; its daily count varies so much "
        f"that the five seeds here happen to bring {fmt(mean_of(ti, base, 'jobs.arrived'))} on average. The paired "
        "differences are not affected: both timings of a seed see the same jobs.)")
    return f"""{page_header(ctx, LESSONS[4])}
**What you learn:** what changes when the same world is seen through a fixed decision tick instead of at event
boundaries, why the answer depends on how irregular the world is, and which knobs make a dcsim world irregular.

## Two ways to decide

`decision_timing: event` (the default) asks the policy at every event that needs a decision: a deferrable job
arrives (admit or hold), a job starts (bid), a GPU runs out of work (stay idle or sleep), a market round
(bid, reconsider held jobs). `decision_timing: {{fixed_step: 900}}` asks only every 900 s, as fixed-step
simulators do: a round uses the bids of the last tick, an arriving deferrable job waits for the next tick to be
admitted, an idle GPU waits for the tick to go to sleep. The world does not wait: jobs still arrive, finish and
start from the queue at their own times, the sun still moves, rounds still clear.

`compare --timing event fixed:900` runs every policy both ways on the same seeds; with `--baseline event` each
policy is compared with itself.

## A regular world

[`scenarios/teach_timing.yaml`](../../scenarios/teach_timing.yaml): 32 H100s, Poisson arrivals, a clear-sky sun in
15-minute steps, a market round exactly every 5 minutes. Half the jobs are deferrable; `renewable_follower` holds
them while renewables cover less than half of demand, asks for power in proportion to the renewable share (never
less than half of a GPU's dynamic range) and puts idle GPUs to sleep.

{command_block(reg)}

{comparison_md(reg)}

`always_on` never decides anything that depends on time, so it cannot tell the two timings apart (every
difference is exactly 0). For `renewable_follower` the tick costs little here: the sun moves smoothly and the
solar series itself changes only every 15 minutes (renewable share
{diff_text(reg, arm, 'renewable_share', 'points', scale=100)}). The visible cost is waiting: a deferrable job
that arrives between ticks waits for the next one (mean wait {diff_text(reg, arm, 'wait_s.mean', 's')}).

## An irregular world

[`scenarios/teach_irregular.yaml`](../../scenarios/teach_irregular.yaml) turns on the three irregularity knobs:

- **bursty arrivals**: `workload.arrivals: {{process: mmpp, ...}}`, a two-state Markov-modulated Poisson process
  (calm: one job per 1000 s; bursts of ~20 min at twelve per 1000 s);
- **market-round jitter**: `market.round_jitter_s: 2min` delays each 5-minute round by U(0, 120 s), drawn from the
  `market` random stream;
- **supply at irregular timestamps**: `supply.power_trace` reads [`data/irregular_solar.csv`](data/irregular_solar.csv),
  a synthetic solar meter with passing clouds that logs a row only when its output moves by more than 1 kW (or an
  hour has passed). Every row is a supply-change event at its own time; a change larger than 20 % of demand
  also triggers an extra market round (`market.hysteresis_fraction`).

One day of it, once deciding at events and once on the 900 s tick, with the event log on (`--trace-events`
writes `events.csv`: time, kind, agent, details — every event, for replaying the day step by step):

{command_block(ev, fx)}

{ctx.image(ev.out_dir / 'plots' / 'power_by_source.png', '05-power-irregular.png', 'power by source over the irregular day')}

How irregular it is, from the event-timed run's `jobs.csv`, `events.csv` and `rounds.csv`:

{md_table(['measure', 'value'], world_rows)}

Events in the log: {kinds}. What the policy was asked, from each run's `decisions.csv` (policy calls / agent
decisions; one call decides for every agent deciding at that instant):

{md_table(['timing', 'bid', 'admit', 'on_idle', 'events', 'renewable share', 'mean wait (s)'], dec)}

Now the comparison over five seeds:

{command_block(irr)}

{comparison_md(irr)}

## The two worlds side by side

The effect of the fixed tick on `renewable_follower` (fixed:900 − event, paired over the five seeds; mean
[95% CI], p-value), in each world:

{md_table(['metric', 'regular world', 'irregular world'], side)}

For the renewable share the paired test gives p = {fmt(p_reg, 2)} in the regular world and p = {fmt(p_irr, 2)}
in the irregular one. The same policy, seen through the same 900 s tick, loses more in a world whose changes
do not wait for the tick. In the irregular day above the event-timed policy was asked to bid {dec_ev[1].split(' / ')[0]}
times and to admit jobs {dec_ev[2].split(' / ')[0]} times; on the tick, {dec_fx[1].split(' / ')[0]} and
{dec_fx[2].split(' / ')[0]} times. Between two ticks a cloud can come and go (the meter's rows are as little as
seconds apart) and a burst can bring a dozen jobs, and the policy acts on what it saw at the last tick. Which
knob costs most is an experiment worth running (see "Try it"): the comparison above changes all three at once.

How much a fixed tick costs is a property of the world, not of the policy alone, which is why a policy tuned on
a fixed-step simulator can do better or worse at event granularity. The two worlds also differ in their levels,
so compare the *differences* within each world, not the levels across them:

{levels}
{mmpp_note}

## Try it

```bash
python -m dcsim compare scenarios/teach_irregular.yaml --policies renewable_follower --timing event fixed:300 fixed:900 fixed:3600 --baseline event --seeds 5
python -m dcsim compare scenarios/teach_irregular.yaml --policies renewable_follower --timing event fixed:900 --baseline event --seeds 5 --set 'workload.arrivals={{process: poisson, rate_per_s: 0.0026}}'
python -m dcsim compare scenarios/teach_irregular.yaml --policies renewable_follower --baseline calm --variant calm market.round_jitter_s=0 --variant jitter market.round_jitter_s=4min
python -m dcsim run scenarios/teach_irregular.yaml --trace-events --out runs/replay && python -c "import pandas as pd; print(pd.read_csv('runs/replay/events.csv').head(40))"
```

The second swaps the bursty arrivals for Poisson arrivals at about the same mean rate, keeping the clouds and the
jitter: how much of the tick's cost was the bursts?
"""


# ============================================================================================= index and data
LESSONS = [
    Lesson(1, "scarcity-pricing", "Scarcity pricing over a solar day", L1, write_lesson1),
    Lesson(2, "four-mechanisms", "The four mechanisms on the same day", L2, write_lesson2),
    Lesson(3, "budgets-and-fairness", "Budgets, endowments and fairness", L3, write_lesson3),
    Lesson(4, "learning-bidders", "Learning bidders: first price against second price", L4, write_lesson4),
    Lesson(5, "irregular-vs-fixed-timing", "Irregular against fixed timing", L5, write_lesson5),
]


def write_index(ctx: Context, lessons: list[Lesson]) -> Path:
    rows = "\n".join(f"{l.number}. [{l.title}]({l.filename})" for l in LESSONS)
    built = (f"a quick build at a reduced horizon ({ctx.horizon})" if ctx.horizon
             else "every command at its scenario's own horizon")
    text = f"""# dcsim tutorials

<!-- Generated by tools/make_tutorials.py: edit the script, not this page. -->

Five short lessons on token markets for power, each a page of real commands with the tables and plots they
produced. Each lesson has its own small teaching scenario (`scenarios/teach_*.yaml`: 32 GPUs, one day, seconds to
run); the pages were generated by [`tools/make_tutorials.py`](../../tools/make_tutorials.py) ({built}).

{rows}

Start with lesson 1; the others stand alone. Every command runs from the repository root after
`pip install -e .`. To regenerate the pages after changing the code or a scenario:

```bash
python tools/make_tutorials.py                 # all lessons, full horizon, into docs/tutorials (about a minute)
python tools/make_tutorials.py --only 3        # one lesson
python tools/make_tutorials.py --horizon 2h --out /tmp/tutorials   # a quick build, as the tests do
```

`tests/test_tutorials.py` runs every lesson's commands at a 2-hour horizon, so a change that breaks a tutorial
command fails the tests.
"""
    path = ctx.out / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


def irregular_solar_trace(seed: int = 2023) -> pd.DataFrame:
    """A synthetic solar meter logged by exception: clear-sky bell times passing clouds, one row per >1 kW move.

    The bell is ``24 kW · sin(π x)^1.5`` between 06:00 and 20:30 local time (PDT, t = 0 at 07:00 UTC); clouds
    come and go as a two-state Markov chain (clear for ~20 min, cloudy for ~6 min, exponential) and cut output
    to 20–50 %. Sampled every 10 s, a row is logged when the output has moved by more than 1 kW since the last
    row or an hour has passed, so rows are 10 s to an hour apart. Covers 25 h from 2023-06-21T07:00Z.
    """
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2023-06-21T07:00:00Z")
    step_s = 10.0
    t = np.arange(0.0, 25 * 3600.0 + step_s, step_s)
    x = ((t / 3600.0) % 24 - 6.0) / 14.5
    clear = np.where((x > 0) & (x < 1), 24000.0 * np.sin(np.pi * np.clip(x, 0, 1)) ** 1.5, 0.0)
    attenuation = np.ones_like(t)
    cloudy, left_s, depth = False, rng.exponential(20 * 60), 1.0
    for i in range(t.size):
        left_s -= step_s
        if left_s <= 0:
            cloudy = not cloudy
            left_s = rng.exponential(6 * 60 if cloudy else 20 * 60)
            depth = rng.uniform(0.2, 0.5)
        attenuation[i] = depth if cloudy else 1.0
    power = clear * attenuation
    keep, last = [0], power[0]
    for i in range(1, t.size):
        if abs(power[i] - last) > 1000.0 or t[i] - t[keep[-1]] >= 3600.0:
            keep.append(i)
            last = power[i]
    index = start + pd.to_timedelta(t[keep], unit="s")
    return pd.DataFrame({"time": index.strftime("%Y-%m-%dT%H:%M:%SZ"), "power_w": np.round(power[keep], 1)})


# --------------------------------------------------------------------------------------------- main
def build_lesson(ctx: Context, lesson: Lesson) -> tuple[Path, float]:
    t0 = time.perf_counter()
    results = {name: ctx.run(command) for name, command in lesson.commands.items()}
    text = lesson.write(ctx, results)
    path = ctx.out / lesson.filename
    path.write_text(text.rstrip() + "\n", encoding="utf-8")
    return path, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", help="reduced horizon for every run and compare command, e.g. 2h (default: "
                                          "each scenario's own)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the pages (default: docs/tutorials)")
    parser.add_argument("--only", type=int, nargs="+", metavar="N", help="build only these lessons (1-5)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="lessons built at once (default: 2; `compare` also runs its seeds in parallel)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder with the run directories")
    parser.add_argument("--write-data", action="store_true",
                        help=f"write {DATA_CSV.relative_to(REPO)} (the irregular solar trace) and exit")
    args = parser.parse_args(argv)
    if args.write_data:
        DATA_CSV.parent.mkdir(parents=True, exist_ok=True)
        irregular_solar_trace().to_csv(DATA_CSV, index=False)
        print(f"wrote {DATA_CSV}")
        return 0
    lessons = [l for l in LESSONS if not args.only or l.number in args.only]
    if args.only and len(lessons) != len(set(args.only)):
        parser.error(f"--only: lessons are numbered 1 to {len(LESSONS)}")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="dcsim-tutorials-"))
    for name in ("scenarios", "docs"):
        (scratch / name).symlink_to(REPO / name, target_is_directory=True)
    ctx = Context(scratch=scratch, out=out, horizon=args.horizon)
    t0 = time.perf_counter()
    failed = False
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [(lesson, pool.submit(build_lesson, ctx, lesson)) for lesson in lessons]
            for lesson, future in futures:
                try:
                    path, wall = future.result()
                    print(f"lesson {lesson.number}: wrote {path} ({wall:.1f} s)")
                except Exception as exc:  # report every failing lesson, then fail
                    failed = True
                    print(f"lesson {lesson.number}: FAILED\n{exc}", file=sys.stderr)
        if not failed and not args.only:
            print(f"wrote {write_index(ctx, lessons)}")
            for stale in sorted(set((out / "img").glob("*.png")) - set(ctx.images)):
                stale.unlink()  # an image no page shows any more
                print(f"removed {stale}")
    finally:
        if args.keep:
            print(f"run directories kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
