"""The serving queue against queueing theory, with tolerances from the standard error over seeded replications.

* One configuration, batch size 1, Poisson arrivals, exponential service (no prompt tokens; output tokens
  exponential): M/M/c, so the mean wait is Erlang C / (cμ − λ).
* One GPU batching up to 64 requests with no throughput gain from batching (relative throughput 1 at every
  batch size): each of ``b`` requests advances at 1/b of its speed, i.e. M/M/1 processor sharing, whose mean
  sojourn is 1/(μ − λ) (P(more than 64 in the system) = ρ^65, negligible at ρ = 0.5).
"""
import math

import numpy as np
import pytest

from dcsim.config import parse_scenario
from dcsim.runner import run_scenario
from test_theory import erlang_c

REPLICATIONS = 8
HORIZON_S = 30_000.0
WARMUP_S = 3_000.0
DECODE_TOKENS_PER_S = 30.0
MEAN_OUTPUT_TOKENS = 300.0  # mean service 10 s


def _scenario(seed, gpus, rate, max_batch, batch_sizes, relative):
    return parse_scenario({
        "name": "theory", "horizon_s": HORIZON_S, "warmup_s": WARMUP_S, "seed": seed, "cluster": {"gpus": gpus},
        "workload": {"llm_serving": {
            "arrivals": {"source": "poisson", "rate_per_s": rate, "prompt_tokens": 0,
                         "mean_output_tokens": MEAN_OUTPUT_TOKENS},
            "max_batch": max_batch,
            "batching": {"decode_tokens_per_s": DECODE_TOKENS_PER_S, "batch_sizes": batch_sizes,
                         "relative_throughput": relative, "power_w": [400.0] * len(batch_sizes)}}},
    })


def _mean_and_se(values):
    values = np.asarray(values, dtype=float)
    return values.mean(), values.std(ddof=1) / math.sqrt(values.size)


def _after_warmup(run):
    r = run.result.requests
    return r[(r["arrival_s"] >= WARMUP_S) & (r["status"].astype(str) == "served")]


@pytest.mark.slow
def test_mmc_mean_wait_matches_erlang_c():
    c, lam = 4, 0.3
    mu = DECODE_TOKENS_PER_S / MEAN_OUTPUT_TOKENS
    wq = erlang_c(c, lam / mu) / (c * mu - lam)
    waits, e2e = [], []
    for seed in range(REPLICATIONS):
        served = _after_warmup(run_scenario(_scenario(seed, c, lam, 1, [1], [1.0])))
        waits.append(served["wait_s"].mean())
        e2e.append(served["e2e_s"].mean())
    mean, se = _mean_and_se(waits)
    assert abs(mean - wq) < 3 * se, f"mean wait {mean:.3f} s vs Erlang C {wq:.3f} s (SE {se:.3f})"
    mean, se = _mean_and_se(e2e)
    assert abs(mean - (wq + 1 / mu)) < 3 * se, f"mean sojourn {mean:.3f} s vs {wq + 1 / mu:.3f} s (SE {se:.3f})"


@pytest.mark.slow
def test_batching_without_gain_is_processor_sharing():
    lam = 0.05
    mu = DECODE_TOKENS_PER_S / MEAN_OUTPUT_TOKENS
    sojourns, waits = [], []
    for seed in range(REPLICATIONS):
        served = _after_warmup(run_scenario(_scenario(seed, 1, lam, 64, [1, 64], [1.0, 1.0])))
        sojourns.append(served["e2e_s"].mean())
        waits.append(served["wait_s"].max())
    mean, se = _mean_and_se(sojourns)
    expected = 1 / (mu - lam)
    assert abs(mean - expected) < 3 * se, f"mean sojourn {mean:.3f} s vs M/M/1-PS {expected:.3f} s (SE {se:.3f})"
    assert max(waits) == 0.0  # a slot was always free: nobody queued
