"""Synthetic arrivals and distributions against their analytic moments; seeded streams; step series."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import scenario
from dcsim.config import Constant, Diurnal, Exponential, LogNormal, Mmpp, Pareto, Uniform
from dcsim.errors import SeriesRangeError
from dcsim.seeding import Streams
from dcsim.timeseries import StepSeries
from dcsim.workload import diurnal_rate_per_s, distribution_mean, mmpp_times, poisson_times, sample, synthetic_jobs


def test_poisson_count_and_uniformity():
    rng = np.random.default_rng(1)
    rate, T = 2.0, 50_000.0
    t = poisson_times(rate, 0.0, T, rng)
    assert abs(t.size - rate * T) < 4 * math.sqrt(rate * T)
    gaps = np.diff(t)
    # exponential gaps: mean 1/λ, coefficient of variation 1
    assert abs(gaps.mean() - 1 / rate) < 4 * gaps.std() / math.sqrt(gaps.size)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.03)


def test_mmpp_long_run_rate_and_burstiness():
    cfg = Mmpp(process="mmpp", rates_per_s=(0.1, 2.0), mean_sojourn_s=(900.0, 100.0))
    counts = [mmpp_times(cfg, 100_000.0, np.random.default_rng(s)).size for s in range(20)]
    expected = (0.1 * 900 + 2.0 * 100) / 1000 * 100_000
    mean, se = np.mean(counts), np.std(counts, ddof=1) / math.sqrt(len(counts))
    assert abs(mean - expected) < 3 * se
    # bursty: counts per 100 s window are over-dispersed (variance/mean > 1, Poisson would be 1)
    t = mmpp_times(cfg, 200_000.0, np.random.default_rng(0))
    per_window = np.bincount((t // 100).astype(int))
    assert per_window.var() / per_window.mean() > 3


def test_diurnal_peak_to_trough():
    cfg = Diurnal(process="diurnal", mean_rate_per_s=1.0, amplitude=0.5, peak_hour_utc=14.0)
    start = pd.Timestamp("2023-01-01T00:00:00Z")
    assert diurnal_rate_per_s(cfg, np.array([14 * 3600.0]), start)[0] == pytest.approx(1.5)
    assert diurnal_rate_per_s(cfg, np.array([2 * 3600.0]), start)[0] == pytest.approx(0.5)
    from dcsim.workload import diurnal_times

    t = diurnal_times(cfg, 30 * 86400.0, start, np.random.default_rng(2))
    hour = (t // 3600 % 24).astype(int)
    peak, trough = np.sum(hour == 14), np.sum(hour == 2)
    # mean of cos over the hour after the peak: sin(2π/24)/(2π/24); the trough hour is its negative
    c = math.sin(2 * math.pi / 24) / (2 * math.pi / 24)
    expected = (1 + 0.5 * c) / (1 - 0.5 * c)
    # counts are Poisson (~54,000 in the trough hours over 30 days, ~160,000 at peak): the ratio's
    # relative standard error is ~0.5 %, so 2 % is four standard errors
    assert peak / trough == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("dist", [
    Exponential(distribution="exponential", mean=300.0),
    LogNormal(distribution="lognormal", mean=300.0, sigma=0.8),
    Constant(distribution="constant", value=42.0),
    Uniform(distribution="uniform", low=10.0, high=50.0),
    Pareto(distribution="pareto", shape=3.5, scale=100.0),
])
def test_distribution_means(dist):
    x = sample(dist, 200_000, np.random.default_rng(3))
    se = x.std() / math.sqrt(x.size)
    assert abs(x.mean() - distribution_mean(dist)) <= max(4 * se, 1e-9)
    assert np.all(x > 0)


def test_synthetic_jobs_columns_and_deadlines():
    sc = scenario(horizon_s=36_000, workload={"arrivals": {"process": "poisson", "rate_per_s": 0.05},
                                              "gpus_per_job": {"values": [1, 4], "weights": [3, 1]},
                                              "duration_s": {"distribution": "constant", "value": 100},
                                              "deadline_slack": 3.0, "deferrable_fraction": 0.25,
                                              "value_tokens_per_gpu_s": 0.5})
    jobs = synthetic_jobs(sc.workload, sc.horizon_s, pd.Timestamp(sc.start), Streams(5))
    assert set(jobs["gpus"].unique()) == {1, 4}
    assert (jobs["gpus"] == 4).mean() == pytest.approx(0.25, abs=0.03)
    np.testing.assert_allclose(jobs["work_gpu_s"], 100.0 * jobs["gpus"])
    np.testing.assert_allclose(jobs["deadline_s"], jobs["arrival_s"] + 300.0)
    np.testing.assert_allclose(jobs["value_tokens"], 0.5 * jobs["work_gpu_s"])
    assert jobs["deferrable"].mean() == pytest.approx(0.25, abs=0.03)
    assert jobs["arrival_s"].is_monotonic_increasing and jobs["arrival_s"].max() < sc.horizon_s


def test_streams_are_named_and_independent_of_order():
    s = Streams(11)
    a1 = s.generator("arrivals").random(5)
    s.generator("service").random(100)
    a2 = s.generator("arrivals").random(5)
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, s.generator("service").random(5))
    assert not np.array_equal(a1, Streams(12).generator("arrivals").random(5))
    with pytest.raises(ValueError):
        Streams(-1)


def test_step_series_values_fill_rules_and_change_times():
    s = StepSeries("x", np.array([0.0, 10.0, 25.0]), np.array([1.0, 2.0, 3.0]), end_s=30.0)
    assert [s.value_at(t) for t in (0.0, 9.999, 10.0, 29.0)] == [1.0, 1.0, 2.0, 3.0]
    with pytest.raises(SeriesRangeError, match="outside the series span"):
        s.value_at(30.0)
    with pytest.raises(SeriesRangeError):
        s.change_times(0.0, 40.0)
    held = StepSeries("x", s.times_s, s.values, end_s=30.0, fill="hold")
    assert held.value_at(1e6) == 3.0
    rep = StepSeries("x", s.times_s, s.values, end_s=30.0, fill="repeat")
    assert rep.value_at(35.0) == 1.0 and rep.value_at(41.0) == 2.0
    np.testing.assert_array_equal(rep.change_times(0.0, 61.0), [0, 10, 25, 30, 40, 55, 60])
    with pytest.raises(ValueError):
        StepSeries("bad", np.array([0.0, 0.0]), np.array([1.0, 2.0]), end_s=1.0)


def test_step_series_from_pandas_aligns_to_start():
    idx = pd.date_range("2023-06-21T00:00:00Z", periods=3, freq="h")
    s = StepSeries.from_pandas("p", pd.Series([5.0, np.nan, 7.0], index=idx), pd.Timestamp("2023-06-21T01:00:00Z"))
    np.testing.assert_array_equal(s.times_s, [-3600.0, 3600.0])
    assert s.value_at(0.0) == 5.0 and s.value_at(3600.0) == 7.0 and s.end_s == 3600.0 + 7200.0
