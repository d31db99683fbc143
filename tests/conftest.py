"""Shared helpers: tiny scenarios built in code, and direct simulations over hand-built job tables."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dcsim.config import parse_scenario
from dcsim.engine import Simulation
from dcsim.jobs import empty_jobs, normalize_jobs
from dcsim.policy import load_policy
from dcsim.seeding import Streams
from dcsim.supply import SupplyInputs
from dcsim.timeseries import StepSeries

SHARED_TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"

# The suite's comparisons are seconds long, so starting an embedded Ray for each (the default when Ray is
# installed) would cost more than the runs; tests that exercise Ray ask for it by name. Subprocesses inherit this.
os.environ.setdefault("DCSIM_BACKEND", "local")

BASE = {
    "name": "t",
    "start": "2023-06-21T00:00:00Z",
    "horizon_s": 3600,
    "seed": 0,
    "cluster": {"gpus": 1, "gpu_model": "H100"},
    "workload": {"arrivals": {"process": "poisson", "rate_per_s": 0.001},
                 "duration_s": {"distribution": "constant", "value": 100}},
    # Wallets large enough that budgets never bind unless a test wants them to.
    "market": {"initial_tokens": 1.0e9},
}


def scenario(**changes):
    """BASE with nested changes merged in (``{"cluster": {"gpus": 4}}`` changes one key)."""
    data = copy.deepcopy(BASE)

    def merge(dst, src):
        for key, value in src.items():
            if isinstance(value, dict) and isinstance(dst.get(key), dict) and "process" not in value and "distribution" not in value:
                merge(dst[key], value)
            else:
                dst[key] = value

    merge(data, changes)
    return parse_scenario(data)


def jobs_table(rows):
    """A job table from ``(arrival_s, gpus, work_gpu_s)`` tuples or dicts with more columns."""
    if not rows:
        return empty_jobs()
    records = []
    for row in rows:
        rec = dict(zip(("arrival_s", "gpus", "work_gpu_s"), row)) if isinstance(row, tuple) else dict(row)
        rec.setdefault("deadline_s", np.nan)
        rec.setdefault("deferrable", False)
        rec.setdefault("value_tokens", 0.0)
        rec.setdefault("clock_sensitivity", 1.0)
        records.append(rec)
    return normalize_jobs(pd.DataFrame(records), "test")


def constant_supply(renewable_w=0.0, carbon=250.0, price=50.0):
    return SupplyInputs(StepSeries.constant("renewable_w", renewable_w), StepSeries.constant("carbon", carbon),
                        StepSeries.constant("price", price), {})


def simulate(sc, jobs, policy=None, supply=None):
    """Run the engine directly on a hand-built job table and supply."""
    policy = policy if policy is not None else load_policy(sc.policy.name, sc.policy.params)
    supply = supply if supply is not None else constant_supply()
    return Simulation(sc, policy, jobs, supply, Streams(sc.seed)).run()


@pytest.fixture
def shared_traces():
    if not SHARED_TRACES.is_dir():
        pytest.skip("../shared/traces is absent")
    return SHARED_TRACES
