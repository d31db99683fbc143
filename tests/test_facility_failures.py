"""Tests for dcsim.facility.failures: counts and availability against renewal theory, Weibull moments, outages."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dcsim.facility.failures import (
    alternating_renewal,
    draw_durations,
    expected_availability,
    expected_failures,
    outages_from_intervals,
    renewable_trips,
)
from dcsim.seeding import Streams


def _rng(seed: int = 0) -> np.random.Generator:
    return Streams(seed).generator("failures")


# --------------------------------------------------------------------------------------------- theory
@pytest.mark.parametrize("mtbf_s, mttr_s, horizon_s", [(100.0, 10.0, 1000.0), (50.0, 40.0, 300.0), (1e5, 3600.0, 86400.0)])
def test_failure_counts_match_renewal_theory(mtbf_s, mttr_s, horizon_s) -> None:
    n = 4000  # independent components: each one's count is one replication
    counts = alternating_renewal(_rng(1), n, mtbf_s, mttr_s, horizon_s).failures_per_component()
    se = counts.std(ddof=1) / math.sqrt(n)
    assert abs(counts.mean() - expected_failures(mtbf_s, mttr_s, horizon_s)) < 4 * se + 1e-12


def test_quick_repairs_give_poisson_counts() -> None:
    # MTTR ≪ MTBF: failures are (nearly) a Poisson process, mean = variance = T/MTBF.
    n, mtbf_s, horizon_s = 5000, 200.0, 2000.0
    counts = alternating_renewal(_rng(2), n, mtbf_s, 1e-6, horizon_s).failures_per_component()
    mean = horizon_s / mtbf_s
    assert abs(counts.mean() - mean) < 4 * math.sqrt(mean / n)
    # Var of the sample variance of a Poisson(λ) sample ≈ (λ + 2λ²)/n.
    assert abs(counts.var(ddof=1) - mean) < 4 * math.sqrt((mean + 2 * mean ** 2) / n)


def test_availability_matches_mtbf_over_mtbf_plus_mttr() -> None:
    n, mtbf_s, mttr_s, horizon_s = 3000, 500.0, 50.0, 20000.0
    events = alternating_renewal(_rng(3), n, mtbf_s, mttr_s, horizon_s)
    up_fraction = 1.0 - events.downtime_s() / horizon_s
    se = up_fraction.std(ddof=1) / math.sqrt(n)
    assert abs(up_fraction.mean() - expected_availability(mtbf_s, mttr_s, horizon_s)) < 4 * se
    assert expected_availability(mtbf_s, mttr_s, 1e12) == pytest.approx(mtbf_s / (mtbf_s + mttr_s), rel=1e-9)


@pytest.mark.parametrize("shape", [0.7, 1.0, 2.5])
def test_weibull_durations_have_the_asked_mean_and_variance(shape) -> None:
    mean_s, n = 1000.0, 200_000
    x = draw_durations(_rng(4), n, mean_s, shape)
    scale = mean_s / math.gamma(1 + 1 / shape)
    var = scale ** 2 * (math.gamma(1 + 2 / shape) - math.gamma(1 + 1 / shape) ** 2)
    assert abs(x.mean() - mean_s) < 4 * math.sqrt(var / n)
    # the variance, with the standard error of a sample variance from the fourth central moment
    m4 = np.mean((x - x.mean()) ** 4)
    assert abs(x.var(ddof=1) - var) < 4 * math.sqrt((m4 - var ** 2) / n)


def test_weibull_failure_rate_follows_the_renewal_theorem() -> None:
    # Long run: failures per unit time → 1/(MTBF + MTTR) whatever the shapes (elementary renewal theorem).
    n, mtbf_s, mttr_s, horizon_s = 2000, 100.0, 20.0, 24000.0
    counts = alternating_renewal(_rng(5), n, mtbf_s, mttr_s, horizon_s, failure_shape=2.0,
                                 repair_shape=0.8).failures_per_component()
    se = counts.std(ddof=1) / math.sqrt(n)
    # The start-up transient adds O(1) failures per component: allow it besides the sampling error.
    assert abs(counts.mean() - horizon_s / (mtbf_s + mttr_s)) < 4 * se + 1.0


# --------------------------------------------------------------------------------------------- structure
def test_events_are_sorted_alternating_and_reproducible() -> None:
    a = alternating_renewal(_rng(6), 50, 300.0, 30.0, 5000.0)
    b = alternating_renewal(_rng(6), 50, 300.0, 30.0, 5000.0)
    assert np.array_equal(a.time_s, b.time_s) and np.array_equal(a.component, b.component)
    assert np.all(np.diff(a.time_s) >= 0) and np.all((a.time_s >= 0) & (a.time_s < 5000.0))
    for c in range(50):  # each component: down, up, down, up, ... starting with a failure
        ups = a.up[a.component == c]
        assert np.array_equal(ups, np.arange(ups.size) % 2 == 1)
    comp, start, end = a.down_intervals()
    assert np.all(end > start) and np.all(end <= 5000.0)
    other = alternating_renewal(_rng(7), 50, 300.0, 30.0, 5000.0)
    assert not np.array_equal(a.time_s, other.time_s)


def test_scheduled_outages_merge_and_clip() -> None:
    ev = outages_from_intervals(component=[0, 0, 1, 2], start_s=[10.0, 15.0, 5.0, 60.0],
                                duration_s=[10.0, 10.0, 100.0, 5.0], n_components=3, horizon_s=50.0)
    # component 0: [10, 20) ∪ [15, 25) = [10, 25); component 1: [5, 105) clipped; component 2 starts past the horizon
    assert ev.time_s.tolist() == [5.0, 10.0, 25.0]
    assert ev.component.tolist() == [1, 0, 0] and ev.up.tolist() == [False, False, True]
    assert ev.downtime_s().tolist() == [15.0, 45.0, 0.0]
    assert ev.is_down_at(12.0).tolist() == [True, True, False]
    assert ev.is_down_at(25.0).tolist() == [False, True, False]
    assert ev.failures_per_component().tolist() == [1, 1, 0]


def test_renewable_trips_use_their_own_means() -> None:
    ev = renewable_trips(_rng(8), mean_time_between_trips_s=1000.0, mean_trip_s=100.0, horizon_s=1e7)
    n = ev.failures_per_component()[0]
    expected = expected_failures(1000.0, 100.0, 1e7)
    assert abs(n - expected) < 5 * math.sqrt(expected)
    assert 1 - ev.downtime_s()[0] / 1e7 == pytest.approx(1000.0 / 1100.0, abs=0.005)


@pytest.mark.parametrize("kwargs, message", [
    (dict(mtbf_s=0.0), r"mtbf_s must be a finite number of seconds > 0, got 0.0"),
    (dict(mttr_s=-1.0), r"mttr_s must be a finite number of seconds > 0, got -1.0"),
    (dict(horizon_s=math.inf), r"horizon_s must be a finite number"),
    (dict(n_components=-2), r"n_components must be a whole number >= 0"),
    (dict(failure_shape=0.0), r"Weibull shape must be a finite number > 0"),
])
def test_bad_rates_are_errors(kwargs, message) -> None:
    args = dict(n_components=3, mtbf_s=10.0, mttr_s=1.0, horizon_s=100.0) | kwargs
    with pytest.raises(ValueError, match=message):
        alternating_renewal(_rng(), **args)


def test_bad_outages_name_the_outage() -> None:
    with pytest.raises(ValueError, match=r"outage 1: got 0.0; expected a duration_s > 0"):
        outages_from_intervals([0, 1], [0.0, 5.0], [1.0, 0.0], 2, 10.0)
    with pytest.raises(ValueError, match=r"outage 0: got 4; expected a component in \[0, 1\]"):
        outages_from_intervals([4], [0.0], [1.0], 2, 10.0)


def test_no_components_no_events() -> None:
    assert len(alternating_renewal(_rng(), 0, 10.0, 1.0, 100.0)) == 0


def test_many_cycles_of_many_components_stay_in_bounded_blocks() -> None:
    # 20k components × ~100 cycles each: drawn in blocks of at most ~2M values, same theory.
    n, mtbf_s, mttr_s, horizon_s = 20_000, 90.0, 10.0, 10_000.0
    counts = alternating_renewal(_rng(9), n, mtbf_s, mttr_s, horizon_s).failures_per_component()
    se = counts.std(ddof=1) / math.sqrt(n)
    assert abs(counts.mean() - expected_failures(mtbf_s, mttr_s, horizon_s)) < 4 * se
