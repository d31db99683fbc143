"""The scenario's ``workload.llm_serving`` section: request arrivals, the batching model, SLOs, configurations and money.

Import order: this module builds on models of :mod:`dcsim.config`, which imports it (for
``WorkloadConfig.llm_serving``) after defining them, as :mod:`dcsim.facility.config` does.
``dcsim/serving/__init__.py`` imports :mod:`dcsim.config` first, so importing this module alone works too.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from dcsim.config import (
    MAX_COUNT,
    MAX_QUANTITY,
    DataPath,
    PositiveDurationS,
    PositiveQuantity,
    Quantity,
    SeriesSource,
    _FieldProblems,
    _Model,
)

#: Largest batch a GPU may hold (continuous batching slots).
MAX_BATCH = 4096
#: Most tokens one request may have in its prompt or output.
MAX_TOKENS = 10_000_000


class AzureTraceArrivals(_Model):
    """Requests from an Azure LLM inference trace (``TIMESTAMP,ContextTokens,GeneratedTokens``; conv or code)."""

    source: Literal["azure_trace"]
    path: DataPath
    time_offset_s: float = Field(0.0, ge=0, le=1e9, description="trace seconds after its first request that become t = 0")
    time_scale: float = Field(1.0, gt=0, le=MAX_QUANTITY, description="multiplies inter-arrival times (< 1: more load)")
    max_requests: int | None = Field(None, ge=1, le=int(MAX_COUNT), description="keep only the first N requests")
    repeat: bool = Field(False, description="replay the trace end to end until the horizon (the conv file spans 1 h)")


class InvocationArrivals(_Model):
    """Request counts per interval from a CSV with the columns ``Time,TIMESTAMP`` (interval start, count).

    Each interval's count becomes that many arrivals drawn uniformly within the interval (``arrivals`` stream).
    """

    source: Literal["invocations"]
    path: DataPath
    interval_s: PositiveDurationS = Field(
        60.0, description="interval length when `Time` holds interval numbers; timestamps give their own step")
    prompt_tokens: int = Field(1000, ge=0, le=MAX_TOKENS, description="prompt tokens of every request")
    output_tokens: int = Field(250, ge=0, le=MAX_TOKENS, description="output tokens of every request")
    repeat: bool = Field(False, description="replay the file end to end until the horizon")


class PoissonArrivals(_Model):
    """Poisson arrivals (for tests and theory): fixed prompt tokens, exponentially distributed output tokens."""

    source: Literal["poisson"]
    rate_per_s: PositiveQuantity
    prompt_tokens: int = Field(0, ge=0, le=MAX_TOKENS, description="prompt tokens of every request")
    mean_output_tokens: float = Field(
        250.0, gt=0, le=MAX_TOKENS,
        description="mean of the exponentially distributed output tokens (a continuous amount; `service` stream)")


ServingArrivals = Annotated[Union[AzureTraceArrivals, InvocationArrivals, PoissonArrivals],
                            Field(discriminator="source")]


class BatchingConfig(_Model):
    """How a GPU's speed and power depend on its batch size (linear between the points given).

    A request alone on a GPU (batch 1, reference configuration) runs prefill at ``prefill_tokens_per_s`` and decode
    at ``decode_tokens_per_s``. With ``b`` requests in the batch the GPU's total throughput is
    ``relative_throughput(b)`` times its batch-1 throughput, shared equally: each request advances at
    ``relative_throughput(b) / b`` of its batch-1 speed. The GPU draws ``power_w(b)`` (``idle_w`` of the cluster's
    GPU model at ``b = 0``).
    """

    prefill_tokens_per_s: PositiveQuantity = Field(3000.0, description="prompt tokens/s of one request alone")
    decode_tokens_per_s: PositiveQuantity = Field(30.0, description="output tokens/s of one request alone")
    batch_sizes: list[Annotated[int, Field(ge=1, le=MAX_BATCH)]] = Field(
        [1, 2, 4, 8, 16, 32, 64], description="batch sizes of the points below, increasing, the first 1")
    relative_throughput: list[Annotated[float, Field(gt=0, le=MAX_BATCH)]] = Field(
        [1.0, 1.95, 3.8, 7.2, 13.0, 21.0, 28.0],
        description="GPU throughput at each batch size / throughput at batch 1 (assumption; docs/serving.md)")
    power_w: list[Annotated[float, Field(gt=0, le=MAX_QUANTITY)]] = Field(
        [350.0, 380.0, 430.0, 500.0, 580.0, 650.0, 690.0],
        description="GPU board power at each batch size (assumption for an H100 SXM; docs/serving.md)")

    @model_validator(mode="after")
    def _points(self) -> "BatchingConfig":
        sizes = self.batch_sizes
        problems = []
        if not sizes or sizes[0] != 1:
            problems.append(("batch_sizes", sizes, "a non-empty list starting at batch size 1"))
        elif any(b <= a for a, b in zip(sizes, sizes[1:])):
            problems.append(("batch_sizes", sizes, "strictly increasing batch sizes"))
        for name in ("relative_throughput", "power_w"):
            if len(getattr(self, name)) != len(sizes):
                problems.append((name, getattr(self, name), f"one value per batch size ({len(sizes)} values)"))
        if not problems and self.relative_throughput[0] != 1.0:
            problems.append(("relative_throughput", self.relative_throughput,
                             "1.0 at batch size 1 (throughput is relative to batch 1)"))
        if problems:
            raise _FieldProblems(problems)
        return self


class SloConfig(_Model):
    """Latency targets of a served request."""

    ttft_s: PositiveDurationS = Field(10.0, description="time to first token: arrival to the end of prefill")
    e2e_s: PositiveDurationS = Field(60.0, description="end to end: arrival to the last output token")


class RevenueConfig(_Model):
    """What a served request earns, in USD (paid when it completes)."""

    usd_per_prompt_token: Quantity = Field(0.0, description="revenue per prompt token of a completed request")
    usd_per_output_token: Quantity = Field(1.0e-5, description="revenue per output token of a completed request")
    scale_by_quality: bool = Field(False, description="multiply a request's revenue by its configuration's quality")


class LlmServingConfig(_Model):
    """An LLM inference service on the cluster's GPUs (docs/serving.md); its presence makes the run a serving run."""

    arrivals: ServingArrivals
    max_batch: int = Field(16, ge=1, le=MAX_BATCH, description="requests a GPU serves at once (continuous batching)")
    batching: BatchingConfig = BatchingConfig()
    slo: SloConfig = SloConfig()
    configurations: DataPath | None = Field(
        None, description="CSV `name,times,energies,scores`; null = one reference configuration (1, 1, 1)")
    revenue: RevenueConfig = RevenueConfig()
    price_usd_per_mwh: SeriesSource | None = Field(
        None, description="energy price series; null = supply.grid.price_usd_per_mwh")
    max_queue: int | None = Field(None, ge=0, le=int(MAX_COUNT), description="a request arriving to a full queue is dropped")
    max_wait_s: PositiveDurationS | None = Field(None, description="a request still waiting this long is dropped")

    @model_validator(mode="after")
    def _batch_in_table(self) -> "LlmServingConfig":
        largest = self.batching.batch_sizes[-1]
        if self.max_batch > largest:
            raise _FieldProblems([("max_batch", self.max_batch,
                                   f"at most the largest batch size in batching.batch_sizes ({largest})")])
        if self.price_usd_per_mwh is not None and self.price_usd_per_mwh.format not in ("auto", "caiso_oasis",
                                                                                        "ercot", "csv"):
            raise _FieldProblems([("price_usd_per_mwh.format", self.price_usd_per_mwh.format,
                                   "a price format: auto, caiso_oasis, ercot or csv")])
        return self


def serving_problems(scenario) -> list[tuple[str, object, str]]:
    """What a serving scenario sets that a serving run does not model, or would count too many of.

    A serving run buys all its energy from the grid at the price series and keeps every GPU on: renewable supply,
    the battery, the facility and fixed-step decisions belong to the GPU-job engine and are refused rather than
    silently ignored. Returns ``(field, value, what is allowed)`` per problem (none for a GPU-job scenario).
    """
    serving = scenario.workload.llm_serving
    if serving is None:
        return []
    problems: list[tuple[str, object, str]] = []
    not_modelled = "not modelled in a serving run (workload.llm_serving); leave it out"
    for part in ("solar", "wind", "power_trace", "battery"):
        if getattr(scenario.supply, part) is not None:
            problems.append((f"supply.{part}", "given", f"{not_modelled}: all energy is bought from the grid"))
    for part in ("topology", "cooling", "failures", "battery"):
        if getattr(scenario.facility, part) is not None:
            problems.append((f"facility.{part}", "given", not_modelled))
    if scenario.decision_timing != "event":
        problems.append(("decision_timing", scenario.decision_timing,
                         "'event' in a serving run (requests are decided on arrival)"))
    idle_w = scenario.cluster.power_spec()["idle_w"]
    low = [w for w in serving.batching.power_w if w < idle_w]
    if low:
        problems.append(("workload.llm_serving.batching.power_w", serving.batching.power_w,
                         f"board power at or above the cluster's idle_w ({idle_w:g} W) at every batch size"))
    arrivals = serving.arrivals
    if isinstance(arrivals, PoissonArrivals) and arrivals.rate_per_s * scenario.horizon_s > MAX_COUNT:
        problems.append(("workload.llm_serving.arrivals.rate_per_s", arrivals.rate_per_s,
                         f"rate_per_s × horizon_s expected arrivals = {arrivals.rate_per_s * scenario.horizon_s:.3g}; "
                         f"at most {MAX_COUNT:g} in one run"))
    return problems
