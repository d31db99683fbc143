"""Rule baselines for LLM serving runs: which configuration serves each request, and whether to deny it.

Each acts on the whole batch of requests arriving at an instant (:class:`dcsim.policy.RequestObservation`) and
returns a :class:`dcsim.policy.ServingDecision`; none draws random numbers.
"""
from __future__ import annotations

import math

import numpy as np

from dcsim.policy import Policy, RequestObservation, ServingAdmission, ServingDecision


def _serve_all(obs: RequestObservation, config: int) -> ServingDecision:
    m = len(obs)
    return ServingDecision(np.zeros(m, dtype=np.int8), np.full(m, config, dtype=np.int64))  # 0 = SERVE


_BEST: dict[tuple, int] = {}


def _best_quality(obs: RequestObservation) -> int:
    """The highest-quality configuration; among equals the least energy, then the first row (cached per table)."""
    q, e = obs.config_quality, obs.config_energy_factor
    key = (q.tobytes(), e.tobytes())
    best = _BEST.get(key)
    if best is None:
        best = _BEST[key] = int(np.lexsort((np.arange(q.size), e, -q))[0])
    return best


class FullKV(Policy):
    """Serve every request with the highest-quality configuration (full KV cache in the example table)."""

    name = "serving_full_kv"

    def serve(self, obs: RequestObservation) -> ServingDecision:
        return _serve_all(obs, _best_quality(obs))


class QualityFloor(Policy):
    """Serve every request with the least-energy configuration whose quality is at least ``min_quality``
    (the highest-quality one if none reaches it).

    Args:
        min_quality: The quality floor in [0, 1].
    """

    name = "serving_quality_floor"

    def __init__(self, min_quality: float = 0.9):
        super().__init__()
        if not 0.0 <= float(min_quality) <= 1.0:
            raise ValueError(f"min_quality must be in [0, 1], got {min_quality!r}")
        self.min_quality = float(min_quality)

    def serve(self, obs: RequestObservation) -> ServingDecision:
        key = (obs.config_quality.tobytes(), obs.config_energy_factor.tobytes())
        if getattr(self, "_key", None) != key:  # the table is the same at every call of a run: choose once
            ok = np.flatnonzero(obs.config_quality >= self.min_quality)
            if ok.size == 0:
                self._choice = _best_quality(obs)
            else:
                e = obs.config_energy_factor[ok]
                self._choice = int(ok[np.lexsort((ok, -obs.config_quality[ok], e))[0]])
            self._key = key
        return _serve_all(obs, self._choice)

    def state_dict(self) -> dict:
        return {"min_quality": self.min_quality}


class PriceAware(Policy):
    """Compress harder when energy is dear: the configurations are ranked from the highest quality to the least
    energy, and the price picks a rank linearly between ``low_usd_per_mwh`` (best quality) and
    ``high_usd_per_mwh`` (least energy), never below ``min_quality``.

    Args:
        low_usd_per_mwh: At or below this price, the best-quality configuration.
        high_usd_per_mwh: At or above this price, the least-energy configuration (above the floor).
        min_quality: Configurations below this quality are never used (unless none reaches it).
    """

    name = "serving_price_aware"

    def __init__(self, low_usd_per_mwh: float = 30.0, high_usd_per_mwh: float = 120.0, min_quality: float = 0.0):
        super().__init__()
        low, high = float(low_usd_per_mwh), float(high_usd_per_mwh)
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ValueError(f"need finite low_usd_per_mwh < high_usd_per_mwh, got {low_usd_per_mwh!r}, "
                             f"{high_usd_per_mwh!r}")
        if not 0.0 <= float(min_quality) <= 1.0:
            raise ValueError(f"min_quality must be in [0, 1], got {min_quality!r}")
        self.low, self.high, self.min_quality = low, high, float(min_quality)

    def ranking(self, obs: RequestObservation) -> np.ndarray:
        """Usable configuration rows from the best quality to the least energy (cached per table)."""
        key = (obs.config_quality.tobytes(), obs.config_energy_factor.tobytes())
        if getattr(self, "_key", None) != key:
            self._ranked, self._key = self._rank(obs), key
        return self._ranked

    def _rank(self, obs: RequestObservation) -> np.ndarray:
        q, e = obs.config_quality, obs.config_energy_factor
        ok = np.flatnonzero(q >= self.min_quality)
        if ok.size == 0:
            return np.array([_best_quality(obs)])
        return ok[np.lexsort((ok, e[ok], -q[ok]))]

    def serve(self, obs: RequestObservation) -> ServingDecision:
        ranked = self.ranking(obs)
        x = (obs.serving.price_usd_per_mwh - self.low) / (self.high - self.low)
        rank = int(math.floor(min(1.0, max(0.0, x)) * (ranked.size - 1) + 0.5))  # nearest rank, halves up
        return _serve_all(obs, int(ranked[rank]))

    def state_dict(self) -> dict:
        return {"low_usd_per_mwh": self.low, "high_usd_per_mwh": self.high, "min_quality": self.min_quality}


class DenyOverSlo(Policy):
    """Deny a request whose estimated queue wait exceeds ``fraction`` × the TTFT target; serve the others with
    the highest-quality configuration.

    The estimate for the ``j``-th request arriving now (0-based) is 0 while a slot is free for it, else the
    requests ahead of it in the queue beyond the free slots, divided by the current completion rate
    (:attr:`dcsim.policy.ServingView.completion_rate_per_s`; with no completions seen yet a request that must
    queue is estimated to wait forever).

    Args:
        fraction: Share of ``slo_ttft_s`` the estimated wait may take (> 0).
    """

    name = "serving_deny_over_slo"

    def __init__(self, fraction: float = 1.0):
        super().__init__()
        if not (math.isfinite(float(fraction)) and float(fraction) > 0):
            raise ValueError(f"fraction must be a finite number > 0, got {fraction!r}")
        self.fraction = float(fraction)

    def serve(self, obs: RequestObservation) -> ServingDecision:
        view = obs.serving
        m = len(obs)
        rate = view.completion_rate_per_s
        limit = self.fraction * view.slo_ttft_s
        deny = np.zeros(m, dtype=bool)
        admitted = 0  # requests served earlier in this batch also take slots or queue places ahead
        for j in range(m):
            ahead = view.queue_length + admitted - view.free_slots + 1
            wait = 0.0 if ahead <= 0 else (ahead / rate if rate > 0 else math.inf)
            if wait > limit:
                deny[j] = True
            else:
                admitted += 1
        admission = np.where(deny, ServingAdmission.DENY, ServingAdmission.SERVE).astype(np.int8)
        return ServingDecision(admission, np.full(m, _best_quality(obs), dtype=np.int64))

    def state_dict(self) -> dict:
        return {"fraction": self.fraction}
