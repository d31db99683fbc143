"""An example user policy for docs/policy-api.md: run deferrable work while renewable power flows.

Run it from this folder (Python puts the current folder on the import path)::

    python -m dcsim run --policy my_policy:SunChaser --horizon 6h --out /tmp/sun_chaser
"""
from __future__ import annotations

import numpy as np

from dcsim.errors import PolicyError
from dcsim.policy import Admission, AgentObservation, Bids, GpuSpecView, IdleAction, JobObservation, Policy


class SunChaser(Policy):
    """Holds deferrable jobs and throttles running ones while renewable power is short of demand.

    Args:
        min_renewable_fraction: Renewable share of demand below which the policy economises, in [0, 1].
        low_power_fraction: Share of the dynamic power range (``full_power_w - idle_w``) requested
            while economising, in [0, 1]; never below the GPU's minimum cap, so jobs keep running.
        margin_s: Slack, s, a deferred job must keep beyond the wait until the next market round.
    """

    name = "sun_chaser"

    def __init__(self, min_renewable_fraction: float = 0.5, low_power_fraction: float = 0.3,
                 margin_s: float = 600.0):
        super().__init__()
        if not 0 <= min_renewable_fraction <= 1 or not 0 <= low_power_fraction <= 1 or margin_s < 0:
            raise PolicyError("min_renewable_fraction and low_power_fraction must lie in [0, 1], margin_s >= 0")
        self.min_renewable_fraction = min_renewable_fraction
        self.low_power_fraction = low_power_fraction
        self.margin_s = margin_s

    def reset(self, rng: np.random.Generator, gpu: GpuSpecView, n_gpus: int) -> None:
        super().reset(rng, gpu, n_gpus)  # keeps self.rng
        self.calls = {"bid": 0, "admit": 0, "on_idle": 0}

    def _economise(self, renewable_fraction: float) -> bool:
        return renewable_fraction < self.min_renewable_fraction

    def bid(self, obs: AgentObservation) -> Bids:
        self.calls["bid"] += 1
        g = obs.gpu
        share = self.low_power_fraction if self._economise(obs.market.renewable_fraction) else 1.0
        low = max(g.idle_w + share * (g.full_power_w - g.idle_w), g.min_cap_w)
        # A job that cannot finish in time at the low cap asks for full power.
        urgent = obs.has_job & (obs.job_slack_s < obs.job_remaining_s)
        request_w = np.where(urgent, g.full_power_w, low)
        return Bids(request_w, np.full(len(obs), np.inf))

    def admit(self, obs: JobObservation) -> np.ndarray:
        self.calls["admit"] += 1
        m = obs.market
        if not self._economise(m.renewable_fraction):
            return np.full(len(obs), Admission.RUN, dtype=np.int8)
        wait_s = max(m.next_round_s - m.time_s, 0.0)
        can_wait = obs.slack_s > wait_s + self.margin_s  # +inf slack (no deadline) can always wait
        return np.where(can_wait, Admission.DEFER, Admission.RUN).astype(np.int8)

    def on_idle(self, obs: AgentObservation) -> np.ndarray:
        self.calls["on_idle"] += 1
        # Held jobs will want GPUs soon: keep that many awake, put the rest to sleep.
        keep = min(obs.market.deferred_jobs, len(obs))
        actions = np.full(len(obs), IdleAction.SLEEP, dtype=np.int8)
        actions[:keep] = IdleAction.STAY_IDLE
        return actions

    def state_dict(self) -> dict:
        return {"min_renewable_fraction": self.min_renewable_fraction,
                "low_power_fraction": self.low_power_fraction, "margin_s": self.margin_s, "calls": self.calls}
