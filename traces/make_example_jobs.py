"""Generate traces/example_jobs.csv, dcsim's small example workload in its own job-CSV format.

The jobs are synthetic (no third-party data): Poisson arrivals, a mix of 1/2/4/8-GPU jobs with
log-normal durations, some memory-bound, some deferrable, some with deadlines. Values are rounded
so the file reads well and loads back exactly.

Usage::

    python traces/make_example_jobs.py [--out PATH] [--seed N] [--jobs N]

The committed file is the output of the defaults; ``tests/test_workload_traces.py`` checks that
regenerating it gives the same bytes.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_SEED = 20240601
DEFAULT_JOBS = 50
MEAN_INTERARRIVAL_S = 120.0
#: Job value per GPU-second, tokens: scenarios/example_jobs.yaml's ``value_tokens_per_gpu_s``, so a job is worth
#: about what its energy costs (an H100-second at full power, 700 J, costs 0.0002-0.0014 tokens at 1-7.4 tokens/kWh).
VALUE_TOKENS_PER_GPU_S = 0.001


def make_example_jobs(seed: int = DEFAULT_SEED, n_jobs: int = DEFAULT_JOBS) -> pd.DataFrame:
    """Build the example job table (columns as in ``dcsim.jobs.JOB_COLUMNS`` plus ``job_id``).

    Args:
        seed: Root seed of the numpy Generator that draws everything.
        n_jobs: Number of jobs.

    Returns:
        One row per job, arrivals in seconds from 0, sorted by arrival.
    """
    rng = np.random.default_rng(seed)
    arrival_s = np.round(np.cumsum(rng.exponential(MEAN_INTERARRIVAL_S, n_jobs)), 1)
    gpus = rng.choice([1, 2, 4, 8], size=n_jobs, p=[0.55, 0.25, 0.15, 0.05])
    duration_s = np.round(np.clip(rng.lognormal(np.log(900.0), 0.8, n_jobs), 60.0, 4 * 3600.0), 1)
    work_gpu_s = np.round(gpus * duration_s, 1)
    memory_bound = rng.random(n_jobs) < 0.3
    clock_sensitivity = np.where(memory_bound, 0.3, 1.0)
    deferrable = rng.random(n_jobs) < 0.4
    has_deadline = rng.random(n_jobs) < 0.5
    slack = rng.uniform(1.5, 4.0, n_jobs)
    deadline_s = np.where(has_deadline, np.round(arrival_s + slack * duration_s, 1), np.nan)
    value_tokens = np.round(work_gpu_s * VALUE_TOKENS_PER_GPU_S * np.where(deferrable, 0.8, 1.2), 4)
    return pd.DataFrame(
        {
            "job_id": [f"ex-{i:03d}" for i in range(n_jobs)],
            "arrival_s": arrival_s,
            "gpus": gpus.astype(np.int64),
            "work_gpu_s": work_gpu_s,
            "deadline_s": deadline_s,
            "deferrable": deferrable,
            "value_tokens": value_tokens,
            "clock_sensitivity": clock_sensitivity,
        }
    )


def write_example_jobs(out: Path, seed: int = DEFAULT_SEED, n_jobs: int = DEFAULT_JOBS) -> Path:
    """Write the example job table as CSV (empty deadline = none, booleans as true/false)."""
    table = make_example_jobs(seed, n_jobs)
    table["deferrable"] = np.where(table["deferrable"], "true", "false")
    table["value_tokens"] = [f"{v:.4f}" for v in table["value_tokens"]]  # tokens: 4 decimals, not 1
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, lineterminator="\n", float_format="%.1f")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "example_jobs.csv",
                        help="output CSV (default: example_jobs.csv next to this script)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS)
    args = parser.parse_args(argv)
    print(write_example_jobs(args.out, args.seed, args.jobs))


if __name__ == "__main__":
    main()
