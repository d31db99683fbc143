"""Compares policies fairly: every policy runs on the same seeds (common random numbers), and each metric is
reported as mean ± 95% CI per policy and as a paired difference against a baseline with its CI and p-value.

For a seed ``s`` every policy sees the same jobs and the same supply series, because the engine derives the
workload and supply streams from the root seed only (never from the policy). A difference between two policies
on seed ``s`` is then a difference the policies made, not the luck of the draw, and the paired differences over
seeds have a much smaller variance than the difference of two independent means. Each run also reports a
SHA-256 hash of its job table, so the common workload can be checked rather than assumed.

Besides policies, a comparison can vary the scenario: ``variants`` maps a label to ``--set`` style overrides
(``{"fast_rounds": ["market.interval_s=60"], "slow_rounds": ["market.interval_s=900"]}``), and every
policy × variant combination (an *arm*) runs on every seed. ``timings=["event", "fixed:900"]`` is the
shorthand for variants that set ``decision_timing``: the same world seen at event boundaries or on a fixed tick.
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from dcsim.backends import make_backend
from dcsim.config import (PolicyConfig, Scenario, apply_overrides, parse_scenario, read_scenario_mapping,
                          scenario_to_dict)
from dcsim.errors import DcsimError, PolicyError

J_PER_KWH = 3.6e6

#: Metrics shown in the Markdown tables, the plot and the report: flattened summary name → label with unit.
HEADLINE_METRICS: dict[str, str] = {
    "renewable_share": "renewable share (fraction)",
    "renewable_battery_share": "renewable + battery share (fraction)",
    "carbon_kg": "carbon (kg CO2)",
    "grid_cost_usd": "grid cost (USD)",
    "energy_kwh.consumed": "energy consumed (kWh)",
    "jobs.completed": "jobs completed",
    "jobs.deadline_misses": "deadline misses",
    "wait_s.mean": "mean wait (s)",
    "wait_s.p95": "p95 wait (s)",
    "token_price.mean": "mean token price (tokens/kWh)",
    "welfare_tokens.welfare": "welfare (tokens)",
    "reward.per_gpu": "reward per GPU (scenario weights)",
    # serving runs (docs/serving.md)
    "success_rate": "success rate (fraction)",
    "denial_rate": "denial rate (fraction)",
    "mean_quality": "mean quality (served)",
    "slo_attainment.ttft": "TTFT SLO attainment (fraction)",
    "slo_attainment.e2e": "e2e SLO attainment (fraction)",
    "revenue_usd": "revenue (USD)",
    "energy_cost_usd": "energy cost (USD)",
    "energy_cost_tokens": "energy billed by the market (tokens)",
    "profit_usd": "profit (USD)",
}

#: Summary entries that are not outcomes of the simulated world: the run's identity and wall-clock timings
#: (these differ between two runs of the same seed, so they would break exact pairing).
EXCLUDED_METRICS = frozenset({"seed", "horizon_s", "performance.wall_s", "performance.events_per_wall_s",
                              "performance.simulated_s_per_wall_s", "performance.requests_per_wall_s"})

#: Columns of the job table that define the workload (hashed to check common random numbers).
WORKLOAD_COLUMNS = ("arrival_s", "gpus", "work_gpu_s", "deadline_s", "deferrable", "value_tokens")
#: The same for a serving run's request table.
REQUEST_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")

CONFIDENCE = 0.95

#: Differences (and spreads) no larger than this times the magnitude of the values are floating-point rounding
#: (e.g. the same sum taken in another order), not effects, and count as zero.
ROUNDING_RTOL = 1e-12


# --------------------------------------------------------------------------------------------- per run
def flatten_summary(summary: dict[str, Any]) -> dict[str, float]:
    """A run summary as ``metric name → float``: nested keys joined with dots, ``energy_j.*`` converted to
    ``energy_kwh.*`` (kWh), missing values (``None``) as NaN; strings, :data:`EXCLUDED_METRICS` and the
    ``data_quality`` records (inputs, not outcomes) left out."""
    flat: dict[str, float] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
            return
        if prefix in EXCLUDED_METRICS or prefix.startswith("data_quality."):  # inputs, not outcomes
            return
        if node is None:
            flat[prefix] = math.nan
        elif isinstance(node, (bool, int, float, np.integer, np.floating)):
            flat[prefix] = float(node)

    for key, value in summary.items():
        if key == "energy_j" and isinstance(value, dict):
            for sub, joules in value.items():
                flat[f"energy_kwh.{sub}"] = math.nan if joules is None else float(joules) / J_PER_KWH
        else:
            walk(key, value)
    return flat


def request_hash(requests: pd.DataFrame) -> str:
    """SHA-256 over a serving run's request columns (:data:`REQUEST_COLUMNS`, float64, little-endian), in row
    order: the workload of a serving run, which every policy must share on a seed."""
    digest = hashlib.sha256()
    for name in REQUEST_COLUMNS:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(requests[name].to_numpy(np.float64)).astype("<f8").tobytes())
    return digest.hexdigest()


def workload_hash(jobs: pd.DataFrame) -> str:
    """SHA-256 over the workload columns of a job table (:data:`WORKLOAD_COLUMNS`), in row order.

    Each column is hashed as its name and its values in a fixed dtype (float64, int64 or uint8), with every
    NaN written as the same bit pattern, so equal tables give equal hashes on any platform.
    """
    digest = hashlib.sha256()
    for name in WORKLOAD_COLUMNS:
        column = jobs[name]
        if name == "gpus":
            values = column.to_numpy(np.int64)
        elif name == "deferrable":
            values = column.to_numpy(bool).astype(np.uint8)
        else:
            values = column.to_numpy(np.float64, na_value=np.nan)
            values = np.where(np.isnan(values), np.nan, values)
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


def run_summary(scenario: Scenario) -> tuple[dict[str, Any], str]:
    """Run one scenario and return only its summary and workload hash (what a worker sends back: a few kB, not
    the run's tables)."""
    from dcsim.runner import run_scenario

    try:
        run = run_scenario(scenario)
    except DcsimError as exc:
        # re-raised as the base class: its message says everything and it pickles across processes
        raise DcsimError(f"policy {scenario.policy.name!r}, seed {scenario.seed}: {exc}") from None
    if run.summary.get("kind") == "llm_serving":
        return run.summary, request_hash(run.result.requests)
    jobs = run.result.jobs
    if jobs is None:  # streamed: read the workload columns back from its file
        jobs = run.result.job_file.read(list(WORKLOAD_COLUMNS))
    return run.summary, workload_hash(jobs)


def _run_one(scenario: Scenario) -> tuple[dict[str, float], str]:
    """Run one (policy, variant, seed) and return its flattened summary and workload hash."""
    summary, digest = run_summary(scenario)
    return flatten_summary(summary), digest


# --------------------------------------------------------------------------------------------- statistics
def mean_ci(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[int, float, float, float, float]:
    """``(n, mean, std, ci_low, ci_high)`` of the finite entries of ``values``: a t-interval with ``n − 1``
    degrees of freedom. With zero spread the interval is the mean itself; with fewer than two values it is NaN."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return 0, math.nan, math.nan, math.nan, math.nan
    mean = float(x.mean())
    if n < 2:
        return n, mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    if std <= ROUNDING_RTOL * float(np.max(np.abs(x))):
        return n, mean, 0.0, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return n, mean, std, mean - half, mean + half


def paired_difference(values: np.ndarray, baseline: np.ndarray,
                      confidence: float = CONFIDENCE) -> tuple[int, float, float, float, float]:
    """``(n, mean_diff, ci_low, ci_high, p_value)`` of ``values − baseline`` paired by position, over the pairs
    where both are finite.

    The CI is a t-interval on the differences and the p-value comes from the paired t-test
    (:func:`scipy.stats.ttest_rel`). A difference no larger than :data:`ROUNDING_RTOL` times the larger of its
    two values is floating-point rounding and counts as exactly zero. Cases a t-test leaves as NaN or inf get
    definite answers:

    - every difference zero (identical results): mean 0, CI ``[0, 0]`` and ``p = 1.0``, not NaN;
    - every difference equal and non-zero (a deterministic shift): CI ``[d, d]`` and ``p = 0.0`` (the limit
      of the t-test as the spread goes to zero, which is also what scipy returns).

    With fewer than two pairs (and not all zero) the CI and p-value are NaN.
    """
    from scipy import stats

    a = np.asarray(values, dtype=float)
    b = np.asarray(baseline, dtype=float)
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    d = a - b
    d[np.abs(d) <= ROUNDING_RTOL * np.maximum(np.abs(a), np.abs(b))] = 0.0
    n = int(d.size)
    if n == 0:
        return 0, math.nan, math.nan, math.nan, math.nan
    mean = float(d.mean())
    if np.all(d == 0):
        return n, 0.0, 0.0, 0.0, 1.0
    if n < 2:
        return n, mean, math.nan, math.nan, math.nan
    std = float(d.std(ddof=1))
    if std <= ROUNDING_RTOL * float(np.max(np.abs(d))):
        return n, mean, mean, mean, 0.0
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    p_value = float(stats.ttest_rel(a, b).pvalue)
    return n, mean, mean - half, mean + half, p_value


# --------------------------------------------------------------------------------------------- results
@dataclass
class Comparison:
    """The result of :func:`compare`.

    Attributes:
        scenario_name: The scenario's ``name``.
        arms: Arm labels in run order: the policy name, or ``"policy@variant"`` when variants are compared.
        arm_policy: Arm label → policy name.
        arm_variant: Arm label → variant label (``""`` without variants).
        baseline_of: Arm label → the arm it is compared against (absent for baseline arms).
        seeds: The root seeds, in order.
        runs: Long table, one row per (arm, seed, metric): ``arm, policy, variant, seed, metric, value``.
        workloads: One row per (arm, seed): ``arm, policy, variant, seed, jobs_sha256``.
        summary: One row per (arm, metric): ``arm, policy, variant, metric, n, mean, std, ci_low, ci_high``
            (95% t-interval over seeds).
        differences: One row per (non-baseline arm, metric): ``arm, baseline, metric, n, arm_mean,
            baseline_mean, mean_diff, ci_low, ci_high, p_value`` (difference = arm − baseline, paired by seed).
        headline: The metrics shown in tables and plots (see :data:`HEADLINE_METRICS`).
        meta: What was compared and how (written to ``comparison.yaml``).
    """

    scenario_name: str
    arms: list[str]
    arm_policy: dict[str, str]
    arm_variant: dict[str, str]
    baseline_of: dict[str, str]
    seeds: list[int]
    runs: pd.DataFrame
    workloads: pd.DataFrame
    summary: pd.DataFrame
    differences: pd.DataFrame
    headline: list[str] = field(default_factory=lambda: list(HEADLINE_METRICS))
    meta: dict[str, Any] = field(default_factory=dict)

    def common_workload(self) -> pd.DataFrame:
        """Per (variant, seed): how many distinct job-table hashes the policies saw (1 = common random numbers
        hold) and whether they hold. Variants may change the workload on purpose, so they are checked apart."""
        grouped = self.workloads.groupby(["variant", "seed"], sort=False)["jobs_sha256"].nunique()
        out = grouped.rename("distinct_hashes").reset_index()
        out["identical"] = out["distinct_hashes"] == 1
        return out

    def to_markdown(self, metrics: Sequence[str] | None = None) -> str:
        """Markdown: a mean ± 95% CI table, a paired-difference table and the workload check."""
        metrics = list(metrics) if metrics is not None else self.headline
        label = {m: HEADLINE_METRICS.get(m, m) for m in metrics}
        seeds = _seed_text(self.seeds)
        lines = [f"## {self.scenario_name}: {len(self.arms)} arms × {len(self.seeds)} seeds ({seeds})", ""]
        lines += ["### Mean ± 95% CI over seeds", ""]
        table = self.summary.set_index(["arm", "metric"])
        rows = []
        for m in metrics:
            row = [label[m]]
            for arm in self.arms:
                if (arm, m) in table.index:
                    r = table.loc[(arm, m)]
                    half = r["ci_high"] - r["mean"]
                    row.append(_fmt(r["mean"]) + ("" if not np.isfinite(half) else f" ± {_fmt(half)}"))
                else:
                    row.append("n/a")
            rows.append(row)
        lines += markdown_table(["metric", *self.arms], rows).splitlines()
        if self.baseline_of:
            pairs = [(arm, base) for arm, base in self.baseline_of.items()]
            lines += ["", "### Paired difference against the baseline (arm − baseline): mean [95% CI], p-value", ""]
            diff = self.differences.set_index(["arm", "metric"])
            rows = []
            for m in metrics:
                row = [label[m]]
                for arm, _ in pairs:
                    row.append(_diff_cell(diff.loc[(arm, m)]) if (arm, m) in diff.index else "n/a")
                rows.append(row)
            lines += markdown_table(["metric", *[f"{a} − {b}" for a, b in pairs]], rows).splitlines()
            lines += ["", "\\* p < 0.05, \\*\\* p < 0.01 (paired t-test over seeds)."]
        check = self.common_workload()
        bad = check.loc[~check["identical"]]
        lines += [""]
        if bad.empty:
            lines.append("Common random numbers: for every seed, every policy saw the identical job table (SHA-256).")
        else:
            which = ", ".join(f"seed {s}" + (f" ({v})" if v else "") for v, s in zip(bad["variant"], bad["seed"]))
            lines.append(f"**Common random numbers do not hold**: the job table differs between policies for {which}.")
        return "\n".join(lines) + "\n"

    def write(self, out: str | Path, report: bool = True, table_format: str = "csv") -> list[Path]:
        """Write ``runs``, ``summary``, ``differences`` and ``workloads`` tables (``.csv``, or ``.parquet`` with
        ``table_format="parquet"``), ``comparison.md``, ``comparison.yaml``, ``comparison.png`` and (with
        ``report``) ``report.html`` into ``out``."""
        import yaml

        from dcsim.tables import write_table

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for stem, df in (("runs", self.runs), ("summary", self.summary),
                         ("differences", self.differences), ("workloads", self.workloads)):
            written.append(write_table(df, out, stem, table_format))
        (out / "comparison.md").write_text(self.to_markdown(), encoding="utf-8")
        written.append(out / "comparison.md")
        (out / "comparison.yaml").write_text(yaml.safe_dump(self.meta, sort_keys=False), encoding="utf-8")
        written.append(out / "comparison.yaml")
        written.append(plot_comparison(self.summary, self.arms, self.headline, out / "comparison.png"))
        if report:
            from dcsim.report import write_comparison_report

            written.append(write_comparison_report(out))
        return written


def _seed_text(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


def _fmt(x: float) -> str:
    """A number for a table: 4 significant digits, thousands separated, ``n/a`` for NaN."""
    if x is None or not np.isfinite(x):
        return "n/a"
    if abs(x) >= 1e4:
        return f"{x:,.0f}"
    return f"{x:.4g}"


def _stars(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "\\*\\*" if p < 0.01 else "\\*" if p < 0.05 else ""


def _diff_cell(r: pd.Series) -> str:
    if not np.isfinite(r["mean_diff"]):
        return "n/a"
    sign = "+" if r["mean_diff"] > 0 else ""
    ci = f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if np.isfinite(r["ci_low"]) else ""
    p = f" p={r['p_value']:.2g}" if np.isfinite(r["p_value"]) else ""
    return f"{sign}{_fmt(r['mean_diff'])}{ci}{p}{_stars(r['p_value'])}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (first column left-aligned, the others right-aligned)."""
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


#: Flattened summary metrics that can be negative; every other metric is a count, energy, share, price or time >= 0.
SIGNED_METRICS = ("reward.", "welfare_tokens.", "token_price.corr_with_renewable_fraction")


def ci_whiskers(table: pd.DataFrame, arms: Sequence[str], metric: str) -> np.ndarray:
    """Error-bar lengths ``(2, arms)`` (below, above the mean) of each arm's 95% CI for ``metric`` in ``table``
    (summary indexed by arm and metric); a metric that cannot be negative has its lower end clipped at 0."""
    rows = [table.loc[(a, metric)] if (a, metric) in table.index else None for a in arms]
    mean = np.array([np.nan if r is None else r["mean"] for r in rows], dtype=float)
    low = np.array([np.nan if r is None else r["ci_low"] for r in rows], dtype=float)
    high = np.array([np.nan if r is None else r["ci_high"] for r in rows], dtype=float)
    if not metric.startswith(SIGNED_METRICS):
        low = np.maximum(low, 0.0)
    below = np.where(np.isfinite(low), mean - low, 0.0)
    above = np.where(np.isfinite(high), high - mean, 0.0)
    return np.nan_to_num(np.vstack([below, above]))


def plot_comparison(summary: pd.DataFrame, arms: Sequence[str], metrics: Sequence[str], path: Path) -> Path:
    """Bar chart of each metric's mean per arm with 95% CI error bars, one panel per metric; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(metrics)
    ncols = min(5, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows + 0.6), squeeze=False)
    table = summary.set_index(["arm", "metric"])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    x = np.arange(len(arms))
    for ax, metric in zip(axes.flat, metrics):
        means = np.array([table.loc[(a, metric), "mean"] if (a, metric) in table.index else np.nan for a in arms],
                         dtype=float)
        ax.bar(x, np.nan_to_num(means), yerr=ci_whiskers(table, arms, metric), capsize=4,
               color=[colors[i % len(colors)] for i in range(len(arms))])
        ax.set_title(HEADLINE_METRICS.get(metric, metric), fontsize=11)
        ax.set_xticks(x, arms, rotation=30, ha="right", fontsize=10)
        ax.tick_params(axis="y", labelsize=10)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle("mean over seeds with 95% confidence intervals", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- compare
_DEFAULT_POLICY = PolicyConfig.model_fields["name"].default


def _with_policy(scenario: Scenario, policy: str) -> Scenario:
    """``scenario`` run by ``policy``: its own parameters are kept only if it is the scenario's policy."""
    params = scenario.policy.params if policy == scenario.policy.name else {}
    return scenario.model_copy(update={"policy": PolicyConfig(name=policy, params=params)})


def _param_key(override: str) -> str | None:
    """The parameter a ``policy.params.K[.sub]=V`` override sets (None for any other override)."""
    key = override.split("=", 1)[0].strip()
    return key.split(".")[2] if key.startswith("policy.params.") and key.count(".") >= 2 else None


def _policies_taking(policies: list[str], param_overrides: list[str]) -> dict[str, set[str]]:
    """Parameter → the compared policies that take it; a parameter none of them takes is an error naming it."""
    from dcsim.policy import policy_class, policy_parameters

    allowed = {p: policy_parameters(policy_class(p)) for p in policies}
    takes = {}
    for item in param_overrides:
        key = _param_key(item)
        takes[key] = {p for p in policies if key in allowed[p]}
        if not takes[key]:
            listed = "; ".join(f"{p}: {', '.join(a) if a else 'none'}" for p, a in allowed.items())
            raise PolicyError(f"--set {item}: no compared policy takes the parameter {key!r}; allowed: {listed}")
    return takes


def _arm_scenarios(scenario: Scenario | str | Path, policies: list[str], overrides: list[str],
                   variants: dict[str, list[str]]) -> dict[tuple[str, str], Scenario]:
    """Validate one scenario per (policy, variant); every configuration problem surfaces here, before any run."""
    if isinstance(scenario, Scenario) and not overrides and list(variants) == [""]:
        return {(p, ""): _with_policy(scenario, p) for p in policies}
    if isinstance(scenario, Scenario):
        raw, path = scenario_to_dict(scenario), None
    else:
        path = Path(scenario)
        raw = read_scenario_mapping(path)
    param_overrides = [o for o in overrides if _param_key(o) is not None]
    overrides = [o for o in overrides if _param_key(o) is None]
    if overrides:
        apply_overrides(raw, list(overrides), path)
    takes = _policies_taking(policies, param_overrides)
    out = {}
    for variant, extra in variants.items():
        if any(item.split("=", 1)[0].strip() in ("policy", "policy.name", "seed") for item in extra):
            raise DcsimError(f"variant {variant!r}: a variant cannot set the policy or the seed "
                             f"(they are the comparison's other dimensions); got {extra}")
        for p in policies:
            data = copy.deepcopy(raw)
            configured = data.get("policy") if isinstance(data.get("policy"), dict) else {}
            if configured.get("name", _DEFAULT_POLICY) != p:
                data["policy"] = {"name": p}  # another policy's parameters would not fit this one
            apply_overrides(data, [o for o in param_overrides if p in takes[_param_key(o)]] + list(extra), path)
            out[(p, variant)] = parse_scenario(data, path=path)
    return out


def _resolve_baselines(baseline: str, arms: dict[str, tuple[str, str]], policies: list[str],
                       variant_labels: list[str]) -> dict[str, str]:
    """Arm → baseline arm. ``baseline`` names an arm, a policy (compared within each variant) or a variant
    (each policy compared with itself under that variant)."""
    label_of = {key: label for label, key in arms.items()}
    if baseline in arms:
        return {label: baseline for label in arms if label != baseline}
    if baseline in policies and baseline in variant_labels:
        raise DcsimError(f"baseline {baseline!r} names both a policy and a variant; name an arm 'policy@variant'")
    if baseline in policies:
        return {label: label_of[(baseline, v)] for label, (p, v) in arms.items() if p != baseline}
    if baseline in variant_labels:
        return {label: label_of[(p, baseline)] for label, (p, v) in arms.items() if v != baseline}
    raise DcsimError(f"baseline {baseline!r} is not one of the compared policies {policies}"
                     + (f", variants {variant_labels} or arms {list(arms)}" if variant_labels != [""] else ""))


def _positive_duration(text: str) -> bool:
    from dcsim.config import _parse_duration

    try:
        value = _parse_duration(text)
    except ValueError:
        return False
    return isinstance(value, float) and math.isfinite(value) and value > 0


def timing_variants(timings: Sequence[str]) -> dict[str, list[str]]:
    """Variants that set ``decision_timing``: ``"event"`` (decisions at event boundaries) or ``"fixed:S"``
    (decisions only every S seconds, S a duration such as ``900`` or ``15min``), labelled as given."""
    out: dict[str, list[str]] = {}
    for timing in timings:
        label = str(timing).strip()
        step = label[len("fixed:"):].strip() if label.startswith("fixed:") else ""
        allowed = "expected 'event' or 'fixed:SECONDS' with a duration > 0 (e.g. fixed:900 or fixed:15min)"
        if label in out:
            raise DcsimError(f"--timing {label!r} is named twice")
        if label == "event":
            out[label] = ["decision_timing=event"]
        elif step and _positive_duration(step):
            out[label] = [f"decision_timing={{fixed_step: {step}}}"]
        else:
            raise DcsimError(f"--timing {label!r}: {allowed}")
    return out


def compare(scenario: Scenario | str | Path, policies: Sequence[str], seeds: Sequence[int],
            baseline: str | None = None, jobs: int | None = None, timings: Sequence[str] | None = None, *,
            variants: dict[str, list[str]] | None = None, overrides: Sequence[str] | None = None,
            progress: Callable[[int, int], None] | None = None, backend: str | None = None,
            address: str | None = None) -> Comparison:
    """Run every policy (× variant) on every seed and compare them with paired statistics.

    Each run is the scenario with its ``seed`` and ``policy.name`` replaced, so for a given seed every policy
    sees the same workload and supply (common random numbers; checked by hashing each run's job table). A
    policy keeps the scenario's ``policy.params`` only if it is the scenario's own policy; an override
    ``policy.params.K=V`` in ``overrides`` sets ``K`` for every compared policy that takes a parameter ``K``
    (and is an error if none does).

    Args:
        scenario: A validated :class:`Scenario`, or the path of a scenario file.
        policies: Policy names (registered, or ``"package.module:Class"``); each at most once.
        seeds: Root seeds, each at most once; every arm runs on all of them.
        baseline: What the other arms are compared against: a policy (within each variant), a variant (each
            policy against itself), or an arm ``"policy@variant"``. Default: the first policy.
        jobs: Workers (default: the local CPU count); 1 runs every simulation in this process.
        timings: Decision timings to compare, ``"event"`` or ``"fixed:SECONDS"``: a shorthand for variants that
            set ``decision_timing`` (see :func:`timing_variants`), labelled as given; with ``baseline="event"``
            each policy is compared with itself seen through the fixed tick. Not combined with ``variants``.
        variants: Optional label → ``KEY=VALUE`` overrides applied to the raw scenario mapping (as ``--set``
            does); every policy runs under every variant. A variant cannot set ``policy`` or ``seed``.
        overrides: ``KEY=VALUE`` overrides applied to the scenario before the variants (as ``--set``).
        progress: Called as ``progress(done, total)`` after each run finishes.
        backend: Where the runs execute: ``"local"`` (a process pool), ``"ray"`` (Ray), or None: Ray when it is
            installed and more than one worker is wanted, else local (see :func:`dcsim.backends.make_backend`).
            Every backend gives identical results for the same seeds.
        address: A Ray cluster to run on (with ``backend="ray"`` or None); default an embedded local Ray.

    Returns:
        A :class:`Comparison`. Paired differences whose values are all exactly zero (identical results) get
        CI ``[0, 0]`` and p-value 1.0 rather than the NaN a t-test gives; see :func:`paired_difference`.

    Raises:
        DcsimError: (or a subclass) for a bad scenario, policy, seed list, baseline or variant, before any
            simulation runs; or from a failed run, naming its policy and seed.
    """
    from dcsim.policy import load_policy

    policies = list(policies)
    seeds = [int(s) for s in seeds]
    if not policies:
        raise DcsimError("compare needs at least one policy")
    if len(set(policies)) != len(policies):
        raise DcsimError(f"each policy may be named once; got {policies} (use variants for different parameters)")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise DcsimError(f"seeds must be distinct non-negative integers; got {seeds}")
    if timings:
        if variants:
            raise DcsimError("give timings or variants, not both (a variant can set decision_timing itself)")
        variants = timing_variants(timings)
    variants = {"": []} if not variants else {str(k): list(v) for k, v in variants.items()}
    if "" in variants and len(variants) > 1:
        raise DcsimError("variant labels must be non-empty")
    if any("@" in label for label in variants):
        raise DcsimError(f"variant labels may not contain '@'; got {list(variants)}")
    jobs = (os.cpu_count() or 1) if jobs is None else int(jobs)
    if jobs < 1:
        raise DcsimError(f"jobs must be >= 1; got {jobs}")
    runner = make_backend(backend, jobs, address)  # a bad backend fails before any run

    arm_scenarios = _arm_scenarios(scenario, policies, list(overrides or []), variants)
    has_variants = list(variants) != [""]
    arms = {(f"{p}@{v}" if has_variants else p): (p, v) for v in variants for p in policies}
    for label, key in arms.items():
        sc = arm_scenarios[key]
        load_policy(sc.policy.name, sc.policy.params)  # an unknown policy or bad parameters fail before any run
    baseline_of = _resolve_baselines(baseline if baseline is not None else policies[0], arms, policies,
                                     list(variants))

    tasks = [(label, seed) for label in arms for seed in seeds]
    scenarios = [arm_scenarios[arms[label]].model_copy(update={"seed": seed}) for label, seed in tasks]
    results: list[tuple[dict[str, float], str] | None] = [None] * len(tasks)
    finished = 0

    def on_done(i: int, result: tuple[dict[str, float], str]) -> None:
        nonlocal finished
        results[i] = result
        finished += 1
        if progress:
            progress(finished, len(tasks))

    with runner:
        runner.run(_run_one, scenarios, on_done)
        ran_on = runner.describe()

    base = next(iter(arm_scenarios.values()))
    comparison = _tabulate(base.name, arms, baseline_of, seeds, tasks, results)
    comparison.meta = {
        "scenario": base.name,
        "scenario_source": str(scenario) if not isinstance(scenario, Scenario) else "<in-memory Scenario>",
        "overrides": list(overrides or []),
        "policies": policies,
        "variants": {k: v for k, v in variants.items() if k} or None,
        "timings": list(timings) if timings else None,
        "seeds": seeds,
        "baseline": baseline if baseline is not None else policies[0],
        "baseline_of": baseline_of,
        "arms": {label: {"policy": p, "variant": v, "params": dict(arm_scenarios[(p, v)].policy.params)}
                 for label, (p, v) in arms.items()},
        "headline_metrics": comparison.headline,
        "confidence": CONFIDENCE,
        "jobs": jobs,
        "backend": ran_on,
        "dcsim_version": __import__("dcsim").__version__,
        "resolved_scenario": scenario_to_dict(base.model_copy(update={"seed": seeds[0]})),
    }
    return comparison


def _tabulate(name: str, arms: dict[str, tuple[str, str]], baseline_of: dict[str, str], seeds: list[int],
              tasks: list[tuple[str, int]], results: list) -> Comparison:
    """Build the long, summary, difference and workload tables from per-run results (in task order)."""
    metrics: list[str] = []
    seen: set[str] = set()
    for flat, _ in results:
        for m in flat:
            if m not in seen:
                seen.add(m)
                metrics.append(m)
    arm_labels = list(arms)
    values = {label: np.full((len(seeds), len(metrics)), np.nan) for label in arm_labels}
    seed_row = {s: i for i, s in enumerate(seeds)}
    long_rows, workload_rows = [], []
    for (label, seed), (flat, digest) in zip(tasks, results):
        p, v = arms[label]
        row = values[label][seed_row[seed]]
        for j, m in enumerate(metrics):
            row[j] = flat.get(m, math.nan)
            long_rows.append((label, p, v, seed, m, row[j]))
        workload_rows.append((label, p, v, seed, digest))
    runs = pd.DataFrame(long_rows, columns=["arm", "policy", "variant", "seed", "metric", "value"])
    workloads = pd.DataFrame(workload_rows, columns=["arm", "policy", "variant", "seed", "jobs_sha256"])

    summary_rows = []
    for label in arm_labels:
        p, v = arms[label]
        for j, m in enumerate(metrics):
            summary_rows.append((label, p, v, m, *mean_ci(values[label][:, j])))
    summary = pd.DataFrame(summary_rows, columns=["arm", "policy", "variant", "metric", "n", "mean", "std",
                                                  "ci_low", "ci_high"])
    diff_rows = []
    for label, base in baseline_of.items():
        for j, m in enumerate(metrics):
            a, b = values[label][:, j], values[base][:, j]
            n, d, lo, hi, p_value = paired_difference(a, b)
            diff_rows.append((label, base, m, n, _finite_mean(a), _finite_mean(b), d, lo, hi, p_value))
    differences = pd.DataFrame(diff_rows, columns=["arm", "baseline", "metric", "n", "arm_mean", "baseline_mean",
                                                   "mean_diff", "ci_low", "ci_high", "p_value"])
    headline = [m for m in HEADLINE_METRICS if m in seen]
    return Comparison(name, arm_labels, {k: p for k, (p, _) in arms.items()}, {k: v for k, (_, v) in arms.items()},
                      baseline_of, seeds, runs, workloads, summary, differences, headline)


def _finite_mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan
