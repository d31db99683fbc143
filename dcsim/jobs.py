"""The job table: the one form every workload source (synthetic or trace) produces."""
from __future__ import annotations

import numpy as np
import pandas as pd

#: Columns of a job table, their dtypes and meaning.
JOB_COLUMNS: dict[str, tuple[str, str]] = {
    "arrival_s": ("float64", "arrival time, seconds since the scenario start"),
    "gpus": ("int64", "GPUs the job needs at once (gang-scheduled), >= 1"),
    "work_gpu_s": ("float64", "total work in GPU-seconds at full clock (duration at full clock = work_gpu_s / gpus)"),
    "deadline_s": ("float64", "absolute completion deadline in seconds since start; NaN = none"),
    "deferrable": ("bool", "whether a policy may hold the job back before it starts"),
    "value_tokens": ("float64", "tokens paid to the GPUs that ran the job when it completes"),
    "clock_sensitivity": ("float64", "exponent beta in work rate = f**beta (1 = compute-bound, ~0.2-0.4 memory-bound)"),
}


def empty_jobs() -> pd.DataFrame:
    """A job table with no rows and the right dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=d) for c, (d, _) in JOB_COLUMNS.items()})


def normalize_jobs(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check a job table, cast dtypes, sort by arrival and reset the index.

    Args:
        df: Table with at least ``JOB_COLUMNS``; extra columns are kept (e.g. a trace's own job id).
        source: What produced it (a file path or "synthetic"), named in errors.

    Raises:
        ValueError: A required column is missing or a value is out of range.
    """
    missing = [c for c in JOB_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: job table lacks columns {missing}")
    out = df.copy()
    for col, (dtype, _) in JOB_COLUMNS.items():
        out[col] = out[col].astype(dtype)
    checks = {
        "arrival_s": np.isfinite(out["arrival_s"]),
        "gpus": out["gpus"] >= 1,
        "work_gpu_s": np.isfinite(out["work_gpu_s"]) & (out["work_gpu_s"] > 0),
        "value_tokens": np.isfinite(out["value_tokens"]) & (out["value_tokens"] >= 0),
        "clock_sensitivity": (out["clock_sensitivity"] >= 0) & (out["clock_sensitivity"] <= 1),
    }
    for col, ok in checks.items():
        if not bool(np.all(ok)):
            bad = out.loc[~ok.to_numpy(), col].iloc[0]
            raise ValueError(f"{source}: column {col!r} has an invalid value {bad!r} ({JOB_COLUMNS[col][1]})")
    out = out.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    return out
