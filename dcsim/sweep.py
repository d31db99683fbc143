"""Sweeps a grid of scenario settings × policies × seeds as resumable cells, and tabulates each metric's mean and
95% CI over seeds per grid point and policy.

A *cell* is one run: a grid point (one value for each ``--grid`` key), a policy and a seed. Each finished cell is
saved at once as ``cells/<id>.json`` (written to a temporary file and renamed, so a cell file is either whole or
absent), where ``<id>`` is a hash of the cell's fully resolved scenario. Running the same sweep again into the
same folder skips every cell whose file is there: an interrupted sweep resumes where it stopped, and a grid that
grows reuses the cells it shares with the old one. A cell whose scenario changed (an edited scenario file, other
``--set`` values) has another id and runs again.

For a seed, every grid point and policy sees the workload and supply that seed draws (common random numbers),
unless the grid changes the workload itself. The tables:

- ``sweep.csv`` (or ``.parquet``): one row per (grid point, policy, metric): the grid keys' values, ``policy``,
  ``metric``, ``n``, ``mean``, ``std``, ``ci_low``, ``ci_high`` (a t-interval over seeds, as in ``compare``).
- ``cells.csv`` (or ``.parquet``): one row per cell: the grid values, ``policy``, ``seed``, ``cell`` (its id),
  ``jobs_sha256`` and every flattened summary metric.
- ``sweep.md``: the headline metrics as mean ± half-width per grid point and policy; ``sweep.yaml``: what was
  swept and on which backend.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import yaml

from dcsim.compare import (HEADLINE_METRICS, _arm_scenarios, _fmt, flatten_summary, markdown_table, mean_ci,
                           run_summary)
from dcsim.config import Scenario, scenario_to_dict
from dcsim.errors import DcsimError

CELLS_DIR = "cells"
SWEEP_FILE = "sweep.yaml"

#: Keys a grid may not sweep: they are the sweep's other dimensions.
RESERVED_KEYS = ("policy", "policy.name", "seed")


# --------------------------------------------------------------------------------------------- the grid
def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``KEY=V1,V2,...`` strings (as ``--grid`` takes them) as ``key → [raw values]``, in the order given.

    Values are YAML, as in ``--set``; commas inside brackets, braces or quotes do not split
    (``workload.gpus_per_job={values: [1, 2], weights: [0.5, 0.5]},{values: [1], weights: [1]}`` is two values).

    Raises:
        DcsimError: a malformed item, a key given twice or reserved (``policy``, ``seed``), or a value
            repeated within a key.
    """
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        values = [v.strip() for v in _split_top_level(raw)] if sep else []
        if not key or not values or any(v == "" for v in values):
            raise DcsimError(f"--grid {item!r}: expected KEY=V1,V2,... with non-empty values, "
                             "e.g. --grid market.scarcity_kappa=0.5,1,2")
        if key in RESERVED_KEYS:
            raise DcsimError(f"--grid {item!r}: the policy and the seed are the sweep's own dimensions; "
                             "use --policies and --seeds/--seed-list")
        if key in grid:
            raise DcsimError(f"--grid {key}: given twice; list all its values in one --grid")
        if len(set(values)) != len(values):
            raise DcsimError(f"--grid {item!r}: a value is repeated")
        grid[key] = values
    return grid


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets, braces or quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the grid's values (the first key varies slowest); one empty point for no grid."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _table_value(raw: str) -> Any:
    """A grid value as a table cell: the YAML scalar it parses to, or the text as written for anything else."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return value if isinstance(value, (bool, int, float, str)) or value is None else raw


# --------------------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    """One run of a sweep: a grid point, a policy and a seed, with its resolved scenario and id."""

    point: dict[str, str]
    policy: str
    seed: int
    scenario: Scenario
    id: str


def cell_id(scenario: Scenario) -> str:
    """A cell's id: the first 20 hex digits of the SHA-256 of its resolved scenario (as canonical JSON)."""
    text = json.dumps(scenario_to_dict(scenario), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _run_cell(cell: Cell) -> tuple[dict[str, Any], str]:
    """What a worker does for a cell: run it and send back its summary and workload hash."""
    return run_summary(cell.scenario)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename (all or nothing)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_cell(path: Path, cell: Cell) -> dict[str, Any] | None:
    """The saved record of ``cell``, or None when its file is absent or is not a record of this cell."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("cell") != cell.id or not isinstance(record.get("summary"), dict):
        return None
    return record


# --------------------------------------------------------------------------------------------- results
@dataclass
class SweepResult:
    """The result of :func:`sweep`.

    Attributes:
        keys: The grid keys, in order (the first columns of both tables).
        table: One row per (grid point, policy, metric): grid values, ``policy``, ``metric``, ``n``, ``mean``,
            ``std``, ``ci_low``, ``ci_high``.
        cells: One row per cell: grid values, ``policy``, ``seed``, ``cell``, ``jobs_sha256``, metrics.
        ran: Ids of the cells run by this call (the others were already saved).
        skipped: Ids of the cells found saved and not run again.
        files: The files written.
    """

    keys: list[str]
    table: pd.DataFrame
    cells: pd.DataFrame
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def to_markdown(self, metrics: Sequence[str] | None = None) -> str:
        """The headline metrics as ``mean ± half-width of the 95% CI`` per grid point and policy."""
        present = set(self.table["metric"])
        metrics = [m for m in (metrics or HEADLINE_METRICS) if m in present]
        index = self.keys + ["policy"]
        wide = self.table.set_index(index + ["metric"])
        rows = []
        for group, _ in self.table.groupby(index, sort=False):
            group = group if isinstance(group, tuple) else (group,)
            row = [str(v) for v in group]
            for m in metrics:
                r = wide.loc[group + (m,)]
                half = r["ci_high"] - r["mean"]
                row.append(_fmt(r["mean"]) + ("" if not np.isfinite(half) else f" ± {_fmt(half)}"))
            rows.append(row)
        header = index + [HEADLINE_METRICS.get(m, m) for m in metrics]
        seeds = int(self.table["n"].max()) if len(self.table) else 0
        return (f"Mean ± 95% CI over up to {seeds} seeds per grid point and policy.\n\n"
                + markdown_table(header, rows) + "\n")


def sweep(scenario: Scenario | str | Path, grid: dict[str, list[str]], policies: Sequence[str],
          seeds: Sequence[int], out: str | Path, *, overrides: Sequence[str] | None = None,
          backend: str | None = None, jobs: int | None = None, address: str | None = None,
          table_format: str = "csv", progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Run every grid point × policy × seed not yet saved in ``out``, then write the sweep's tables.

    Args:
        scenario: A validated :class:`Scenario` or the path of a scenario file.
        grid: Key → raw values (see :func:`parse_grid`); each key is a ``--set`` path.
        policies: Policy names, each once; a policy keeps the scenario's ``policy.params`` only if it is the
            scenario's own policy.
        seeds: Distinct non-negative root seeds.
        out: The sweep folder. If it holds cells of an earlier run of the same cells, they are not run again.
        overrides: ``KEY=VALUE`` settings applied before the grid's (as ``--set``).
        backend: ``"local"``, ``"ray"`` or None (see :func:`dcsim.backends.make_backend`).
        jobs: Workers (default: the CPU count; 1: in this process).
        address: A Ray cluster to run on.
        table_format: ``"csv"`` or ``"parquet"`` for ``sweep`` and ``cells``.
        progress: Called as ``progress(done, total)`` over all cells, saved ones included, after each cell.

    Raises:
        DcsimError: (or a subclass) for a bad scenario, grid value, policy, seed list, backend or format,
            before any cell runs; or from a failed cell, naming its policy and seed. Cells finished before a
            failure or an interruption stay saved.
    """
    from dcsim.backends import make_backend
    from dcsim.policy import load_policy
    from dcsim.tables import TABLE_FORMATS, require_pyarrow, write_table

    policies = list(policies)
    seeds = [int(s) for s in seeds]
    if not policies or len(set(policies)) != len(policies):
        raise DcsimError(f"sweep needs one or more distinct policies; got {policies}")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise DcsimError(f"seeds must be distinct non-negative integers; got {seeds}")
    if table_format not in TABLE_FORMATS:
        raise DcsimError(f"--format {table_format!r}: allowed: {', '.join(TABLE_FORMATS)}")
    if table_format == "parquet":
        require_pyarrow("--format parquet")
    for key in grid:
        if key in RESERVED_KEYS:
            raise DcsimError(f"--grid {key}: the policy and the seed are the sweep's own dimensions")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DcsimError(f"--out {out}: exists and is not a directory")
    runner = make_backend(backend, jobs, address)

    points = grid_points(grid)
    variants = {str(i): [f"{k}={v}" for k, v in point.items()] for i, point in enumerate(points)}
    arm_scenarios = _arm_scenarios(scenario, policies, list(overrides or []), variants)  # every problem, up front
    for p in policies:
        sc = arm_scenarios[(p, "0")]
        load_policy(sc.policy.name, sc.policy.params)
    cells = []
    for i, point in enumerate(points):
        for p in policies:
            for seed in seeds:
                sc = arm_scenarios[(p, str(i))].model_copy(update={"seed": seed})
                cells.append(Cell(point, p, seed, sc, cell_id(sc)))

    cell_dir = out / CELLS_DIR
    records: dict[str, dict[str, Any]] = {}
    for cell in cells:
        record = _read_cell(cell_dir / f"{cell.id}.json", cell)
        if record is not None:
            records[cell.id] = record
    todo = [cell for cell in cells if cell.id not in records]
    skipped = [cell.id for cell in cells if cell.id in records]
    base = next(iter(arm_scenarios.values()))
    meta = {"scenario": base.name,
            "scenario_source": str(scenario) if not isinstance(scenario, Scenario) else "<in-memory Scenario>",
            "overrides": list(overrides or []), "grid": {k: list(v) for k, v in grid.items()},
            "policies": policies, "seeds": seeds, "cells": len(cells), "table_format": table_format,
            "dcsim_version": __import__("dcsim").__version__, "backend": "none (every cell was saved)"}

    def on_done(i: int, result: tuple[dict[str, Any], str]) -> None:
        cell = todo[i]
        summary, digest = result
        record = {"cell": cell.id, "point": cell.point, "policy": cell.policy, "seed": cell.seed,
                  "jobs_sha256": digest, "summary": summary}
        _write_atomic(cell_dir / f"{cell.id}.json", json.dumps(record, indent=1) + "\n")
        records[cell.id] = record
        if progress:
            progress(len(records), len(cells))

    if todo:
        with runner:  # a backend that cannot start (no cluster at --address) fails before anything is written
            meta["backend"] = runner.describe()
            cell_dir.mkdir(parents=True, exist_ok=True)
            for stale in ("sweep.csv", "sweep.parquet", "cells.csv", "cells.parquet", "sweep.md"):
                (out / stale).unlink(missing_ok=True)  # an earlier result: it would look finished if we stop now
            _write_atomic(out / SWEEP_FILE, yaml.safe_dump(meta | {"complete": False}, sort_keys=False))
            if progress:
                progress(len(skipped), len(cells))
            runner.run(_run_cell, todo, on_done)
    elif progress:
        progress(len(skipped), len(cells))

    keys = list(grid)
    result = _tabulate(keys, cells, records)
    result.ran = [cell.id for cell in todo]
    result.skipped = skipped
    files = [write_table(result.table, out, "sweep", table_format),
             write_table(result.cells, out, "cells", table_format)]
    (out / "sweep.md").write_text(result.to_markdown(), encoding="utf-8")
    meta.update({"ran": len(result.ran), "skipped": len(skipped), "complete": True})
    _write_atomic(out / SWEEP_FILE, yaml.safe_dump(meta, sort_keys=False))
    result.files = files + [out / "sweep.md", out / SWEEP_FILE]
    return result


def _tabulate(keys: list[str], cells: list[Cell], records: dict[str, dict[str, Any]]) -> SweepResult:
    """The per-cell and per-(point, policy) tables from the saved cell records, in grid × policy × seed order."""
    cell_rows = []
    for cell in cells:
        record = records[cell.id]
        row = {k: _table_value(cell.point[k]) for k in keys}
        row.update({"policy": cell.policy, "seed": cell.seed, "cell": cell.id, "jobs_sha256": record["jobs_sha256"]})
        row.update(flatten_summary(record["summary"]))
        cell_rows.append(row)
    per_cell = pd.DataFrame(cell_rows)
    fixed = set(keys) | {"policy", "seed", "cell", "jobs_sha256"}
    metrics = [c for c in per_cell.columns if c not in fixed]
    rows = []
    order = []
    for cell in cells:
        group = (tuple(cell.point[k] for k in keys), cell.policy)
        if group not in order:
            order.append(group)
    for point, policy in order:
        mask = np.ones(len(per_cell), dtype=bool)
        for i, cell in enumerate(cells):
            mask[i] = tuple(cell.point[k] for k in keys) == point and cell.policy == policy
        group = per_cell.loc[mask]
        head = {k: _table_value(v) for k, v in zip(keys, point)} | {"policy": policy}
        for m in metrics:
            n, mean, std, lo, hi = mean_ci(group[m].to_numpy(float))
            rows.append(head | {"metric": m, "n": n, "mean": mean, "std": std, "ci_low": lo, "ci_high": hi})
    table = pd.DataFrame(rows, columns=keys + ["policy", "metric", "n", "mean", "std", "ci_low", "ci_high"])
    return SweepResult(keys, table, per_cell)
