"""The tiny learning scenario the RL tests train on: 4 H100s for 2 afternoon hours under a little solar, deferrable
jobs with deadlines, a tight wallet. Small enough for a training in seconds; the features still move over the run."""
from __future__ import annotations


def tiny_rl_yaml(name: str = "tiny_rl", rate_per_s: float = 0.003, reward_extra: str = "", tail: str = "") -> str:
    """The scenario's YAML; ``reward_extra`` adds keys to ``reward:`` (e.g. ``", team_fraction: 0.25"``), ``tail``
    adds top-level sections (e.g. a ``policy:`` block)."""
    return f"""\
name: {name}
start: 2023-06-21T15:00:00Z
horizon_s: 2h
seed: 3
cluster: {{gpus: 4, gpu_model: H100}}
workload:
  arrivals: {{process: poisson, rate_per_s: {rate_per_s}}}
  gpus_per_job: {{values: [1, 2], weights: [0.7, 0.3]}}
  duration_s: {{distribution: lognormal, mean: 900, sigma: 0.5}}
  deadline_slack: 3.0
  deferrable_fraction: 0.5
  value_tokens_per_gpu_s: 0.001
supply:
  solar: {{capacity_w: 3000, latitude: 37.36, longitude: -121.93}}
market: {{interval_s: 10min, initial_tokens: 5}}
reward: {{slo_per_miss: 1.0, drop_per_job: 2.0{reward_extra}}}
{tail}"""
