"""Runs a scenario end to end: streams, jobs, supply, policy, simulation and summary."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from dcsim.config import Scenario
from dcsim.dataquality import run_report
from dcsim.engine import RunResult, Simulation
from dcsim.metrics import summarize
from dcsim.policy import Policy, load_policy
from dcsim.seeding import Streams
from dcsim.supply import build_supply
from dcsim.workload import build_job_source


@dataclass
class Run:
    """A finished run: the raw result and its summary."""

    result: RunResult  # a dcsim.serving.model.ServingResult for a serving scenario
    summary: dict[str, Any]


def run_scenario(scenario: Scenario, policy: Policy | None = None,
                 progress: Callable[[float], None] | None = None) -> Run:
    """Run ``scenario`` (with its configured policy unless ``policy`` is given) and summarise it."""
    streams = Streams(scenario.seed)
    if policy is None:
        policy = load_policy(scenario.policy.name, scenario.policy.params)
    if scenario.workload.llm_serving is not None:  # a separate model: the serving queue (docs/serving.md)
        from dcsim.serving.runner import simulate_serving, summarize_serving

        serving, quality = simulate_serving(scenario, policy, streams, progress=progress)
        summary = summarize_serving(serving)
        summary["data_quality"] = quality
        return Run(serving, summary)
    jobs = build_job_source(scenario, streams)  # a streamed source or the whole table
    supply = build_supply(scenario)
    quality = run_report(jobs.attrs, supply.data_quality)  # before the engine: it may not keep the attrs
    result = Simulation(scenario, policy, jobs, supply, streams, progress=progress).run()
    summary = summarize(result)
    summary["data_quality"] = quality
    return Run(result, summary)
