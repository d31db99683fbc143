"""Validation against queueing theory (tolerances from standard errors over seeded replications).

With supply unconstrained, always-on GPUs and one-GPU jobs with exponential work, dcsim's cluster is an
M/M/c FCFS queue: the mean wait must match Erlang C and the time-average number in system must match
L = λ (Wq + 1/μ) (Little's law), each within 3 standard errors of the mean over replications.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import scenario
from dcsim.runner import run_scenario

C, LAM, MEAN_S = 4, 0.03, 100.0  # offered load a = 3 Erlang, utilisation 0.75
WARMUP_S, HORIZON_S, REPLICATIONS = 20_000.0, 220_000.0, 10


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in M/M/c with offered load a = λ/μ (Erlang C)."""
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


# The module fixture `replications` takes seconds: under `pytest -n N --dist loadgroup` the tests that use it
# form one xdist group, so it is built once, on one worker (without xdist the mark does nothing).
THEORY_REPLICATIONS = pytest.mark.xdist_group("theory_replications")


@pytest.fixture(scope="module")
def replications():
    out = []
    for seed in range(REPLICATIONS):
        sc = scenario(
            seed=seed, horizon_s=HORIZON_S, warmup_s=WARMUP_S, cluster={"gpus": C},
            workload={"arrivals": {"process": "poisson", "rate_per_s": LAM},
                      "duration_s": {"distribution": "exponential", "mean": MEAN_S}},
            outputs={"timeseries_table": False},
        )
        out.append(run_scenario(sc).result)
    return out


def _mean_and_se(values):
    values = np.asarray(values, dtype=float)
    return values.mean(), values.std(ddof=1) / math.sqrt(values.size)


def test_erlang_c_formula_on_a_known_value():
    # M/M/1: Erlang C reduces to the utilisation.
    assert erlang_c(1, 0.6) == pytest.approx(0.6)
    # Textbook value: c = 2, a = 1 → C = 1/3.
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)


@THEORY_REPLICATIONS
def test_mean_wait_matches_erlang_c(replications):
    mu = 1 / MEAN_S
    a = LAM / mu
    wq = erlang_c(C, a) / (C * mu - LAM)
    means = []
    for r in replications:
        jobs = r.jobs[(r.jobs["arrival_s"] >= WARMUP_S) & r.jobs["start_s"].notna()]
        means.append(jobs["wait_s"].mean())
    mean, se = _mean_and_se(means)
    assert abs(mean - wq) < 3 * se, f"mean wait {mean:.2f} s vs Erlang C {wq:.2f} s (SE {se:.2f})"


@THEORY_REPLICATIONS
def test_probability_of_waiting_matches_erlang_c(replications):
    fractions = []
    for r in replications:
        jobs = r.jobs[(r.jobs["arrival_s"] >= WARMUP_S) & r.jobs["start_s"].notna()]
        fractions.append((jobs["wait_s"] > 0).mean())
    mean, se = _mean_and_se(fractions)
    expected = erlang_c(C, LAM * MEAN_S)
    assert abs(mean - expected) < 3 * se, f"P(wait) {mean:.4f} vs {expected:.4f} (SE {se:.4f})"


@THEORY_REPLICATIONS
def test_littles_law_number_in_system(replications):
    mu = 1 / MEAN_S
    wq = erlang_c(C, LAM / mu) / (C * mu - LAM)
    expected_l = LAM * (wq + 1 / mu)
    ls = []
    for r in replications:
        arrival = r.jobs["arrival_s"].to_numpy()
        leave = np.nan_to_num(r.jobs["finish_s"].to_numpy(), nan=HORIZON_S)
        # time-average number in system over [warm-up, horizon], from each job's sojourn interval
        overlap = np.clip(np.minimum(leave, HORIZON_S) - np.maximum(arrival, WARMUP_S), 0.0, None)
        ls.append(overlap.sum() / (HORIZON_S - WARMUP_S))
    mean, se = _mean_and_se(ls)
    assert abs(mean - expected_l) < 3 * se, f"L {mean:.3f} vs λW {expected_l:.3f} (SE {se:.3f})"


@THEORY_REPLICATIONS
def test_utilisation_matches_offered_load(replications):
    busy = []
    for r in replications:
        start = r.jobs["start_s"].to_numpy()
        finish = np.nan_to_num(r.jobs["finish_s"].to_numpy(), nan=HORIZON_S)
        ok = ~np.isnan(start)
        overlap = np.clip(np.minimum(finish[ok], HORIZON_S) - np.maximum(start[ok], WARMUP_S), 0.0, None)
        busy.append(overlap.sum() / (C * (HORIZON_S - WARMUP_S)))
    mean, se = _mean_and_se(busy)
    assert abs(mean - LAM * MEAN_S / C) < 3 * se
