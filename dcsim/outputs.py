"""Writes a run directory: metadata.yaml, summary.json, tables (CSV or Parquet) and plots."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

import dcsim
from dcsim.config import scenario_to_dict
from dcsim.runner import Run


def choose_run_dir(base: Path, name: str) -> Path:
    """A fresh directory ``base/name``, or ``base/name-2``, ``-3``... if taken (nothing is overwritten)."""
    candidate = base / name
    k = 2
    while candidate.exists():
        candidate = base / f"{name}-{k}"
        k += 1
    return candidate


def check_out_dir(out: Path, overwrite: bool) -> Path:
    """Check, before a run, that ``out`` may be written: a folder (or nothing yet) with no file on the way, empty
    unless ``overwrite``. Nothing is created; :func:`dcsim.atomic.atomic_output_dir` also probes writing."""
    from dcsim.atomic import check_output_dir

    return check_output_dir(out, overwrite)


def _versions() -> dict[str, str]:
    import numpy
    import pandas
    import simpy

    return {"dcsim": dcsim.__version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "pandas": pandas.__version__, "simpy": simpy.__version__}


def write_tables(tables: dict[str, pd.DataFrame], out: Path, fmt: str) -> list[Path]:
    """Write a run's tables (stem → DataFrame) into ``out``, all in one format: ``fmt`` (``outputs.format``),
    with ``auto`` resolved from their total row count (see :func:`dcsim.tables.choose_format`)."""
    from dcsim.tables import choose_format, write_table

    chosen = choose_format(fmt, sum(len(df) for df in tables.values()))
    return [write_table(df, out, stem, chosen) for stem, df in tables.items()]


def _write_allocations(out: Path, alloc_w: np.ndarray, rounds: pd.DataFrame) -> Path:
    """``allocations.npz``: each GPU's allocation (W above idle) at every round, with the round times."""
    path = out / "allocations.npz"
    time_s = rounds["time_s"].to_numpy(float) if not rounds.empty else np.zeros(0)
    np.savez_compressed(path, alloc_w=alloc_w, time_s=time_s)
    return path


def _write_streamed_jobs(r, out: Path, tables: dict[str, pd.DataFrame]) -> list[Path]:
    """A streamed run: its job table is already written (in the format chosen when the run began); move it in and
    write the other tables in the same format."""
    from dcsim.tables import write_table

    chosen = r.job_file.format
    path = r.job_file.move_to(out)
    for suffix in (".csv", ".parquet"):  # a folder never holds two versions of a table
        stale = path.with_suffix(suffix)
        if stale != path and stale.is_file():
            stale.unlink()
    return [path] + [write_table(df, out, stem, chosen) for stem, df in tables.items()]


def write_run(run: Run, out: Path, plots: bool = False) -> list[Path]:
    """Write everything about ``run`` into ``out`` (created if needed); returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    r = run.result
    sc = r.scenario
    written = []
    meta = {
        "scenario": scenario_to_dict(sc),
        "seed": sc.seed,
        "policy": {"name": r.policy.name, "state": r.policy.state_dict()},
        "versions": _versions(),
        "data_quality": run.summary.get("data_quality", {}),
    }
    path = out / "metadata.yaml"
    path.write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    written.append(path)
    path = out / "summary.json"
    path.write_text(json.dumps(run.summary, indent=2) + "\n", encoding="utf-8")
    written.append(path)
    if run.summary.get("kind") == "llm_serving":  # a serving run (dcsim.serving.model.ServingResult)
        tables = {"requests": (True, r.requests), "price_steps": (True, r.steps),
                  "decisions": (True, r.decisions), "rounds": (sc.outputs.rounds_table, r.rounds),
                  "ledger": (sc.outputs.ledger_table, r.ledger)}
        written.extend(write_tables({stem: df for stem, (wanted, df) in tables.items() if wanted}, out,
                                    sc.outputs.format))
        if r.allocations_w is not None:
            written.append(_write_allocations(out, r.allocations_w, r.rounds))
        if plots or sc.outputs.plots:
            from dcsim.serving.plots import plot_serving

            written.extend(plot_serving(r, out / "plots"))
        return written
    tables = {"jobs": (sc.outputs.jobs_table, r.jobs), "rounds": (sc.outputs.rounds_table, r.rounds),
              "timeseries": (sc.outputs.timeseries_table, r.timeseries),
              "ledger": (sc.outputs.ledger_table, r.ledger),
              "decisions": (sc.outputs.decision_log, r.decisions),
              "events": (sc.outputs.trace_events and r.events is not None, r.events),
              "elements": (r.elements is not None, r.elements),
              "dispatch": (r.dispatch is not None, r.dispatch)}
    wanted_tables = {stem: df for stem, (wanted, df) in tables.items() if wanted}
    if r.jobs is None and "jobs" in wanted_tables and r.job_file is not None:  # streamed as the run went
        del wanted_tables["jobs"]
        written.extend(_write_streamed_jobs(r, out, wanted_tables))
    else:
        written.extend(write_tables(wanted_tables, out, sc.outputs.format))
    if r.allocations_w is not None:
        written.append(_write_allocations(out, r.allocations_w, r.rounds))
    if plots or sc.outputs.plots:
        from dcsim.plots import plot_run

        written.extend(plot_run(r, out / "plots"))
    return written
