"""Scenario files: YAML validated into typed pydantic models, with errors that name field, value and what is allowed."""
from __future__ import annotations

import difflib
import re
import types
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dcsim.errors import ScenarioError
from dcsim.gpu_models import GPU_MODELS

_UNITS_S = {"s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _parse_duration(value: Any) -> Any:
    """Accept seconds as a number or strings such as ``"90s"``, ``"15min"``, ``"6h"``, ``"2d"``."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(s|min|m|h|d)?\s*", value)
        if not match:
            raise ValueError("a duration: seconds as a number, or a number with unit s, min, h or d (e.g. '6h')")
        return float(match.group(1)) * _UNITS_S[match.group(2) or "s"]
    return value


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Resolve relative to the scenario file's folder and require the file to exist."""
    base = (info.context or {}).get("base_dir")
    path = Path(value).expanduser()
    if not path.is_absolute():
        if base is None:
            raise ValueError("a relative path needs a scenario file to resolve against; give an absolute path")
        path = Path(base) / path
    path = path.resolve()
    if not path.is_file():
        raise ValueError(f"an existing file (resolved to {path}, which does not exist)")
    return path


# Bounds on what the model can compute. Every number in a scenario is finite (``_Model`` refuses inf and nan);
# these keep the products the engine forms (power × time × GPUs × price × e^κ, squared in variances) far from
# float overflow, keep times inside what pandas' Timedelta holds, and keep counts inside memory.
MAX_TIME_S = 1e9  #: longest horizon, duration or time shift (about 31.7 years)
MIN_STEP_S = 1e-6  #: shortest positive duration: horizon, round interval, tick, resolution, job duration
MAX_QUANTITY = 1e15  #: largest power (W), energy (J, Wh), token amount, price, reward weight or scale factor
MAX_COUNT = 1e8  #: most arrivals, market rounds, decision ticks, supply steps or VCG quanta one run may need
MAX_GPUS = 10_000_000  #: largest cluster (and largest job)
MAX_SCARCITY_KAPPA = 100.0  #: e^κ stays below 1e44, so p0·e^κ times any energy stays finite
MAX_LOGNORMAL_SIGMA = 10.0  #: beyond it samples under- or overflow (μ = ln(mean) − σ²/2)
MAX_HEIGHT_M = 500.0  #: highest hub or measurement height the wind loader accepts

_DURATION_PATTERN = r"^\s*[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?\s*(s|min|m|h|d)?\s*$"
_DurationInput = Union[Annotated[float, Field(ge=0)], Annotated[str, Field(pattern=_DURATION_PATTERN)]]
# Field() comes before the validator so the JSON schema describes the accepted input (number or "6h").
DurationS = Annotated[float, Field(ge=0, le=MAX_TIME_S),
                      BeforeValidator(_parse_duration, json_schema_input_type=_DurationInput)]
PositiveDurationS = Annotated[float, Field(ge=MIN_STEP_S, le=MAX_TIME_S),
                              BeforeValidator(_parse_duration, json_schema_input_type=_DurationInput)]
JobSeconds = Annotated[float, Field(ge=MIN_STEP_S, le=MAX_TIME_S)]  #: a job-duration parameter (plain seconds)
TimeShiftS = Annotated[float, Field(ge=-MAX_TIME_S, le=MAX_TIME_S)]
Quantity = Annotated[float, Field(ge=0, le=MAX_QUANTITY)]
PositiveQuantity = Annotated[float, Field(gt=0, le=MAX_QUANTITY)]
SignedQuantity = Annotated[float, Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY)]
Count = Annotated[int, Field(ge=0, le=int(MAX_COUNT))]
DataPath = Annotated[Path, AfterValidator(_resolve_path)]
Fill = Literal["error", "hold", "repeat"]


class _Model(BaseModel):
    # allow_inf_nan=False: inf and nan (also YAML .inf/.nan and the strings "inf", "nan") are refused in every
    # float field of every section
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        """Refuse true/false (YAML also reads yes/no/on/off so) where a number is wanted, instead of reading 1/0."""
        if not isinstance(data, dict):
            return data
        problems = []
        for key, value in data.items():
            field = cls.model_fields.get(key) if isinstance(key, str) else None
            if field is None or not _is_numeric(field.annotation):
                continue
            items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
            problems += [(key if i is None else f"{key}.{i}", v, "a number, not true/false")
                         for i, v in items if isinstance(v, bool)]
        if problems:
            raise _FieldProblems(problems)
        return data


def _is_numeric(annotation: Any) -> bool:
    """Whether a field holds a number or a list/tuple of numbers (``X | None`` and constraints looked through)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_numeric(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_is_numeric(a) for a in get_args(annotation))
    if origin in (list, tuple):
        return _is_numeric(get_args(annotation)[0])
    return annotation in (int, float)


class _FieldProblems(ValueError):
    """Cross-field checks' findings, each located at one field (dotted, relative to the model that raised it)."""

    def __init__(self, problems: list[tuple[str, Any, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{field}: {message}" for field, _, message in problems))


# --------------------------------------------------------------------------------------------- cluster
class PowerOverrides(_Model):
    """Power figures overriding the chosen GPU model's (all W, except ``gamma`` and ``utilisation``)."""

    tdp_w: PositiveQuantity | None = None
    idle_w: Quantity | None = None
    min_cap_w: Quantity | None = None
    sleep_w: Quantity | None = None
    off_w: Quantity | None = None
    gamma: float | None = Field(None, gt=0, description="power ~ f**gamma; 2-3 for compute-bound work")
    utilisation: float | None = Field(None, gt=0, le=1)


class Transitions(_Model):
    """Power-state transition times (s) and energies (J). Energy is spread evenly over the transition."""

    wake_s: DurationS = 30.0
    wake_j: Quantity = 3000.0
    sleep_s: DurationS = 10.0
    sleep_j: Quantity = 500.0
    boot_s: DurationS = 180.0
    boot_j: Quantity = 30000.0
    shutdown_s: DurationS = 30.0
    shutdown_j: Quantity = 2000.0

    @model_validator(mode="after")
    def _energy_needs_time(self) -> "Transitions":
        for kind in ("wake", "sleep", "boot", "shutdown"):
            if getattr(self, f"{kind}_s") == 0 and getattr(self, f"{kind}_j") > 0:
                raise ValueError(f"{kind}_j > 0 needs {kind}_s > 0 (energy is spread over the transition time)")
            if getattr(self, f"{kind}_j") > MAX_QUANTITY * getattr(self, f"{kind}_s"):
                power_w = getattr(self, f"{kind}_j") / getattr(self, f"{kind}_s")
                raise _FieldProblems([(f"{kind}_s", getattr(self, f"{kind}_s"),
                                       f"{kind}_j / {kind}_s = {power_w:.3g} W during the transition; at most "
                                       f"{MAX_QUANTITY:g} W (lengthen {kind}_s or lower {kind}_j)")])
        return self


class ClusterConfig(_Model):
    """The GPUs: how many, which model, and power-state transitions."""

    gpus: int = Field(..., ge=1, le=MAX_GPUS)
    gpu_model: Literal["V100", "A100", "H100", "custom"] = "H100"
    power: PowerOverrides = PowerOverrides()
    transitions: Transitions = Transitions()
    initial_state: Literal["idle", "sleep", "off"] = "idle"

    @model_validator(mode="after")
    def _custom_complete(self) -> "ClusterConfig":
        if self.gpu_model == "custom":
            missing = [k for k in ("tdp_w", "idle_w", "min_cap_w") if getattr(self.power, k) is None]
            if missing:
                raise ValueError(f"gpu_model 'custom' needs power.{', power.'.join(missing)}")
        spec = self.power_spec()
        if not (spec["off_w"] <= spec["sleep_w"] <= spec["idle_w"] < spec["tdp_w"]):
            raise ValueError("power figures must satisfy off_w <= sleep_w <= idle_w < tdp_w")
        if not (spec["idle_w"] <= spec["min_cap_w"] <= spec["tdp_w"]):
            raise ValueError("power figures must satisfy idle_w <= min_cap_w <= tdp_w")
        full_w = spec["idle_w"] + (spec["tdp_w"] - spec["idle_w"]) * spec["utilisation"]
        if full_w + 1e-9 < spec["min_cap_w"]:
            raise ValueError(f"a running job draws idle_w + (tdp_w - idle_w) * utilisation = {full_w:g} W at full clock, "
                             f"below min_cap_w = {spec['min_cap_w']:g} W, so no job could ever run; raise utilisation "
                             f"or lower min_cap_w")
        return self

    def power_spec(self) -> dict[str, float]:
        """Resolved power figures: the model's datasheet values with overrides applied."""
        base = GPU_MODELS.get(self.gpu_model)
        values: dict[str, float] = {}
        for key in ("tdp_w", "idle_w", "min_cap_w", "sleep_w", "off_w", "gamma", "utilisation"):
            override = getattr(self.power, key)
            if override is not None:
                values[key] = float(override)
            elif base is not None:
                values[key] = float(getattr(base, key))
            else:
                values[key] = {"sleep_w": 10.0, "off_w": 0.0, "gamma": 2.5, "utilisation": 1.0}[key]
        return values


# --------------------------------------------------------------------------------------------- workload
class Poisson(_Model):
    process: Literal["poisson"]
    rate_per_s: PositiveQuantity


class Mmpp(_Model):
    """Two-state Markov-modulated Poisson process (bursty arrivals)."""

    process: Literal["mmpp"]
    rates_per_s: tuple[Quantity, Quantity] = Field(..., description="arrival rate in the calm and the burst state")
    mean_sojourn_s: tuple[PositiveDurationS, PositiveDurationS] = Field(..., description="mean time in each state")

    @field_validator("rates_per_s")
    @classmethod
    def _rates(cls, v: tuple[float, float]) -> tuple[float, float]:
        if min(v) < 0 or max(v) <= 0:
            raise ValueError("rates must be >= 0 with at least one > 0")
        return v


class Diurnal(_Model):
    """Non-homogeneous Poisson with rate ``mean * (1 + amplitude * cos(2π (hour - peak_hour) / 24))`` (UTC hours)."""

    process: Literal["diurnal"]
    mean_rate_per_s: PositiveQuantity
    amplitude: float = Field(0.5, ge=0, le=1)
    peak_hour_utc: float = Field(14.0, ge=0, lt=24)


Arrivals = Annotated[Union[Poisson, Mmpp, Diurnal], Field(discriminator="process")]


class Exponential(_Model):
    distribution: Literal["exponential"]
    mean: JobSeconds


class LogNormal(_Model):
    """Log-normal given by its mean and the sigma of the underlying normal."""

    distribution: Literal["lognormal"]
    mean: JobSeconds
    sigma: float = Field(1.0, gt=0, le=MAX_LOGNORMAL_SIGMA)


class Constant(_Model):
    distribution: Literal["constant"]
    value: JobSeconds


class Uniform(_Model):
    distribution: Literal["uniform"]
    low: JobSeconds
    high: JobSeconds

    @model_validator(mode="after")
    def _order(self) -> "Uniform":
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self


class Pareto(_Model):
    """Lomax-shifted Pareto with minimum ``scale`` and tail index ``shape`` (> 1 for a finite mean)."""

    distribution: Literal["pareto"]
    shape: float = Field(..., gt=1, le=MAX_QUANTITY)
    scale: JobSeconds


Distribution = Annotated[Union[Exponential, LogNormal, Constant, Uniform, Pareto], Field(discriminator="distribution")]


class GpuChoice(_Model):
    """GPUs per job drawn from ``values`` with ``weights`` (normalised)."""

    values: list[Annotated[int, Field(ge=1, le=MAX_GPUS)]] = [1]
    weights: list[Quantity] | None = None

    @model_validator(mode="after")
    def _lengths(self) -> "GpuChoice":
        if not self.values:
            raise ValueError("values must not be empty")
        if self.weights is not None and (len(self.weights) != len(self.values) or sum(self.weights) <= 0):
            raise ValueError("weights must have one entry per value and a positive sum")
        return self


class TraceWorkload(_Model):
    """Replay a job trace."""

    format: Literal["alibaba", "azure_llm", "swf", "csv", "utilisation"]
    path: DataPath
    options: dict[str, Any] = Field(default_factory=dict, description="keyword options of the format's loader")


class WorkloadConfig(_Model):
    """Where jobs come from and what they are like."""

    arrivals: Arrivals | None = None
    trace: TraceWorkload | None = None
    gpus_per_job: GpuChoice = GpuChoice()
    duration_s: Distribution | None = Field(
        None, description="job duration at full clock, s (the job's work is duration × GPUs in GPU-seconds)"
    )
    deadline_slack: float | None = Field(
        None, gt=1, le=MAX_QUANTITY, description="deadline = arrival + slack × full-clock duration; none when null"
    )
    deferrable_fraction: float = Field(0.0, ge=0, le=1)
    value_tokens_per_gpu_s: Quantity = 0.01
    clock_sensitivity: float = Field(1.0, ge=0, le=1, description="work rate = f**beta; 1 compute-bound")
    max_queue: Count | None = None
    drop_expired: bool = Field(True, description="drop a waiting job once its deadline has passed")
    llm_serving: "LlmServingConfig | None" = Field(
        None, description="an LLM inference service instead of GPU jobs (docs/serving.md); replaces arrivals/trace")

    @model_validator(mode="after")
    def _one_source(self) -> "WorkloadConfig":
        if self.llm_serving is not None:
            if self.arrivals is not None or self.trace is not None:
                raise ValueError("give 'llm_serving' alone: its own 'arrivals' replace workload.arrivals and "
                                 "workload.trace")
            return self
        if (self.arrivals is None) == (self.trace is None):
            raise ValueError("give exactly one of 'arrivals' (synthetic), 'trace' or 'llm_serving'")
        if self.arrivals is not None and self.duration_s is None:
            raise ValueError("synthetic arrivals need 'duration_s' (a distribution)")
        return self


# --------------------------------------------------------------------------------------------- supply
class SolarConfig(_Model):
    """PV plant through pvlib: an EPW weather file, or pvlib's clear-sky model at the site."""

    capacity_w: float = Field(..., ge=0, le=MAX_QUANTITY, description="DC output at 1000 W/m² and 25 °C")
    latitude: float = Field(..., ge=-90, le=90)
    longitude: float = Field(..., ge=-180, le=180)
    weather_epw: DataPath | None = None
    tilt_deg: float | None = Field(None, ge=0, le=90)
    azimuth_deg: float = Field(180.0, ge=0, lt=360)
    altitude_m: float = Field(0.0, ge=-500, le=9000)
    resolution_s: PositiveDurationS = Field(900.0, description="step of the solar power series")


class WindConfig(_Model):
    """Wind farm through windpowerlib power curves, from a wind-speed series."""

    wind_speed_file: DataPath
    format: Literal["auto", "nrel_wtk", "csv"] = "auto"
    turbine_type: str = "E-101/3050"
    hub_height_m: float = Field(100.0, gt=0, le=MAX_HEIGHT_M)
    measurement_height_m: float = Field(100.0, gt=0, le=MAX_HEIGHT_M)
    n_turbines: int = Field(1, ge=1, le=int(MAX_COUNT))
    time_shift_s: TimeShiftS = Field(0.0, description="added to the file's timestamps (replay another year's data)")


class PowerTraceConfig(_Model):
    """A renewable power series in a CSV (time, power in W)."""

    path: DataPath
    time_column: str = "time"
    power_column: str = "power_w"
    scale: Quantity = 1.0


class BatteryConfig(_Model):
    """A battery charged only from surplus renewable power."""

    capacity_wh: PositiveQuantity
    max_charge_w: Quantity
    max_discharge_w: Quantity
    round_trip_efficiency: float = Field(0.9, gt=0, le=1)
    initial_soc: float = Field(0.5, ge=0, le=1)


class SeriesSource(_Model):
    """A series from a file (``path`` + ``format``, optionally ``column``) or a constant."""

    path: DataPath | None = None
    format: Literal["auto", "electricitymaps", "eia930", "moer", "caiso_oasis", "ercot", "csv"] = "auto"
    column: str | None = Field(None, description="value column (e.g. 'lca' for Electricity Maps life-cycle intensity)")
    constant: SignedQuantity | None = None
    time_shift_s: TimeShiftS = Field(0.0, description="added to the file's timestamps (replay another year's data)")

    @model_validator(mode="after")
    def _one(self) -> "SeriesSource":
        if (self.path is None) == (self.constant is None):
            raise ValueError("give exactly one of 'path' or 'constant'")
        return self


class GridConfig(_Model):
    """Grid import: cap, carbon intensity (gCO2/kWh, never negative) and price (USD/MWh, may be negative)."""

    import_cap_w: Quantity | None = Field(None, description="null = unlimited")
    carbon_g_per_kwh: SeriesSource = SeriesSource(constant=250.0)
    price_usd_per_mwh: SeriesSource = SeriesSource(constant=50.0)

    @field_validator("carbon_g_per_kwh")
    @classmethod
    def _carbon_series(cls, v: SeriesSource) -> SeriesSource:
        if v.constant is not None and v.constant < 0:
            raise ValueError("a carbon intensity constant must be >= 0")
        if v.format not in ("auto", "electricitymaps", "eia930", "moer", "csv"):
            raise ValueError(f"format {v.format!r} is a price format; carbon takes auto, electricitymaps, eia930, moer or csv")
        return v

    @field_validator("price_usd_per_mwh")
    @classmethod
    def _price_series(cls, v: SeriesSource) -> SeriesSource:
        if v.format not in ("auto", "caiso_oasis", "ercot", "csv"):
            raise ValueError(f"format {v.format!r} is a carbon format; price takes auto, caiso_oasis, ercot or csv")
        return v


class SupplyConfig(_Model):
    solar: SolarConfig | None = None
    wind: WindConfig | None = None
    power_trace: PowerTraceConfig | None = None
    battery: BatteryConfig | None = None
    grid: GridConfig = GridConfig()
    fill: Fill = Field("error", description="what series do past their data: error, hold the last value, repeat")
    gap_fill: Literal["hold", "linear", "error"] = Field(
        "hold", description="gaps inside a data file (empty or missing rows): hold the value before the gap, "
                            "interpolate linearly, or refuse the file")
    gap_warning_h: float | None = Field(
        6.0, ge=0, le=MAX_TIME_S / 3600.0, allow_inf_nan=False,
        description="warn on the console when a file's longest gap is longer than this; null = never")


# --------------------------------------------------------------------------------------------- market
class SupplyCurveConfig(_Model):
    """Token cost of each supply source in the merit order (tokens/kWh), cheapest first."""

    renewable_tokens_per_kwh: Quantity = Field(0.01, description="near-zero marginal cost")
    battery_tokens_per_kwh: Quantity = Field(0.5, description="wear and opportunity cost of discharging")
    grid_tokens_per_usd: Quantity = Field(10.0, description="exchange rate applied to the grid price")
    carbon_adder_tokens_per_kg: Quantity = Field(0.0, description="τ: tokens per kg CO2 added to grid power")


class MarketConfig(_Model):
    """The Token Manager: rounds, the clearing mechanism and wallets."""

    mechanism: Literal["posted_price", "uniform_price", "pay_as_bid", "vcg", "kelly"] = "posted_price"
    supply_curve: SupplyCurveConfig = SupplyCurveConfig()
    vcg_quantum_w: PositiveQuantity = Field(10.0, description="size of the power quanta VCG trades, W")
    interval_s: PositiveDurationS = 300.0
    hysteresis_fraction: float | None = Field(
        0.2, gt=0, le=MAX_QUANTITY, description="extra round when renewable power moves by more than this fraction of demand"
    )
    base_price_tokens_per_kwh: PositiveQuantity = Field(1.0, description="p0 in p = p0·exp(κ(1 − ρ))")
    scarcity_kappa: float = Field(2.0, ge=0, le=MAX_SCARCITY_KAPPA, description="κ in p = p0·exp(κ(1 − ρ))")
    initial_tokens: Quantity = Field(10.0, description="per GPU")
    endowment_tokens: Quantity = Field(1.0, description="per GPU per endowment")
    endowment_interval_s: PositiveDurationS = 3600.0
    carry_over_cap_tokens: Quantity | None = Field(None, description="wallet cap; tokens above it are burned")
    demurrage_fraction: float = Field(0.0, ge=0, lt=1, description="share of each wallet burned at every endowment")
    round_jitter_s: DurationS = Field(0.0, description="each periodic round is delayed by U(0, jitter) s (market stream)")

    @model_validator(mode="after")
    def _jitter_below_interval(self) -> "MarketConfig":
        if self.round_jitter_s >= self.interval_s:
            raise ValueError("round_jitter_s must be shorter than interval_s (rounds keep their order)")
        return self

    @model_validator(mode="after")
    def _endowment_on_rounds(self) -> "MarketConfig":
        ratio = self.endowment_interval_s / self.interval_s
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ValueError(
                f"endowment_interval_s ({self.endowment_interval_s:g}) must be a whole multiple of interval_s "
                f"({self.interval_s:g}), since endowments are paid at round boundaries after settlement"
            )
        return self


class FixedStep(_Model):
    """Policies decide only on a fixed tick, as fixed-step simulators do (the world still moves between ticks)."""

    fixed_step: PositiveDurationS = Field(..., description="seconds between decision ticks")


class PolicyConfig(_Model):
    """Which policy decides, by registered name or ``"package.module:Class"``, and its parameters."""

    name: str = "always_on"
    params: dict[str, Any] = Field(default_factory=dict)


class RewardConfig(_Model):
    """Per-agent reward the engine computes between an agent's decisions (for learning policies).

    ``R = −α·latency − β·energy_cost − γ·SLO − drops + δ·value − energy − carbon``, each term a named weight
    times a quantity the agent accrued since its last decision (see ``docs/learning.md``). Units are
    reward per unit of the named quantity; a reward unit is a token by default (β = δ = 1).
    """

    value_per_token: Quantity = Field(1.0, description="δ: per token of job value credited on completion")
    energy_cost_per_token: Quantity = Field(1.0, description="β: per token paid for power")
    energy_per_kwh: Quantity = Field(0.0, description="per kWh the GPU drew (all states, idle included)")
    carbon_per_kg: Quantity = Field(0.0, description="per kg CO2 of grid energy attributed by energy share")
    latency_per_s: Quantity = Field(0.0, description="α: per second of job sojourn (arrival to completion)")
    slo_per_miss: Quantity = Field(0.0, description="γ: per job finishing after its deadline")
    drop_per_job: Quantity = Field(0.0, description="per dropped job (no owner: shared by all agents)")
    team_fraction: float = Field(0.0, ge=0, le=1, description="0: own reward; 1: the cluster mean; between: a mix")


class OutputConfig(_Model):
    jobs_table: bool = True
    rounds_table: bool = True
    timeseries_table: bool = True
    ledger_table: bool = True
    ledger_detail: Literal["round", "agent"] = Field(
        "round", description="ledger.csv rows: flows summed per round and kind, or one row per agent and flow")
    decision_log: bool = Field(True, description="decisions.csv: one row per policy call (time, method, agents)")
    trace_events: bool = Field(False, description="events.csv: every event (time, kind, agent, details) for replay")
    allocations: bool | None = Field(
        None, description="allocations.npz: each GPU's power allocation at every round; null = only up to 1024 GPUs")
    plots: bool = False
    format: Literal["auto", "csv", "parquet"] = Field(
        "auto", description="jobs/rounds/timeseries/ledger/decisions/events tables: csv, parquet (needs pyarrow) or "
                            "auto (parquet when the run's tables hold more than 1,000,000 rows, csv below)")
    stream_jobs: bool | Literal["auto"] = Field(
        "auto", description="write ended jobs' rows to the jobs table as the run goes (memory for the jobs in the "
                            "system, not all jobs); auto: for synthetic workloads of more than 1,000,000 jobs")


# Imported here, not at the top: dcsim.facility.config builds on the models above (see its docstring).
from dcsim.facility.config import FacilityConfig, facility_problems  # noqa: E402
# The same for the serving section (dcsim/serving/config.py), which WorkloadConfig names by a forward reference.
from dcsim.serving.config import LlmServingConfig, serving_problems  # noqa: E402

WorkloadConfig.model_rebuild()


class Scenario(_Model):
    """A complete scenario: everything a run needs besides the code."""

    name: str = Field("scenario", pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    start: datetime = Field(datetime(2023, 6, 21, tzinfo=timezone.utc), description="t = 0, ISO 8601 with UTC offset")
    horizon_s: PositiveDurationS = 86400.0
    warmup_s: DurationS = Field(0.0, description="jobs arriving earlier are left out of wait statistics")
    seed: int = Field(0, ge=0)
    cluster: ClusterConfig
    workload: WorkloadConfig
    supply: SupplyConfig = SupplyConfig()
    market: MarketConfig = MarketConfig()
    policy: PolicyConfig = PolicyConfig()
    reward: RewardConfig = RewardConfig()
    decision_timing: Union[Literal["event"], FixedStep] = Field(
        "event", description="'event': policies decide at event boundaries; {fixed_step: S}: only every S seconds")
    outputs: OutputConfig = OutputConfig()
    facility: FacilityConfig = FacilityConfig()

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("a timezone-aware time such as 2023-06-21T00:00:00Z")
        return v.astimezone(timezone.utc)

    @model_validator(mode="after")
    def _warmup(self) -> "Scenario":
        if self.warmup_s >= self.horizon_s:
            raise ValueError("warmup_s must be shorter than horizon_s")
        return self

    @model_validator(mode="after")
    def _facility(self) -> "Scenario":
        """The facility's checks against the cluster and the battery (docs/facility.md)."""
        problems = facility_problems(self.facility, self.cluster, self.supply.battery)
        if problems:
            raise _FieldProblems(problems)
        return self

    @model_validator(mode="after")
    def _serving(self) -> "Scenario":
        """A serving run's checks against the rest of the scenario (docs/serving.md)."""
        problems = serving_problems(self)
        if problems:
            raise _FieldProblems(problems)
        return self

    @model_validator(mode="after")
    def _computable(self) -> "Scenario":
        """Refuse runs that would schedule or hold more than ``MAX_COUNT`` things (arrivals, rounds, ticks, ...)."""
        horizon = self.horizon_s
        counts: list[tuple[str, float, float, str]] = []  # (field, value, count, what is counted)
        arr = self.workload.arrivals
        if isinstance(arr, Poisson):
            counts.append(("workload.arrivals.rate_per_s", arr.rate_per_s, arr.rate_per_s * horizon,
                           "rate_per_s × horizon_s expected arrivals"))
        elif isinstance(arr, Mmpp):
            counts.append(("workload.arrivals.rates_per_s", list(arr.rates_per_s), max(arr.rates_per_s) * horizon,
                           "max(rates_per_s) × horizon_s expected arrivals"))
            counts.append(("workload.arrivals.mean_sojourn_s", list(arr.mean_sojourn_s),
                           horizon / min(arr.mean_sojourn_s), "horizon_s / min(mean_sojourn_s) state changes"))
        elif isinstance(arr, Diurnal):
            counts.append(("workload.arrivals.mean_rate_per_s", arr.mean_rate_per_s,
                           arr.mean_rate_per_s * (1 + arr.amplitude) * horizon,
                           "mean_rate_per_s × (1 + amplitude) × horizon_s candidate arrivals"))
        counts.append(("market.interval_s", self.market.interval_s, horizon / self.market.interval_s,
                       "horizon_s / interval_s market rounds"))
        if isinstance(self.decision_timing, FixedStep):
            counts.append(("decision_timing.fixed_step", self.decision_timing.fixed_step,
                           horizon / self.decision_timing.fixed_step, "horizon_s / fixed_step decision ticks"))
        if self.supply.solar is not None:
            counts.append(("supply.solar.resolution_s", self.supply.solar.resolution_s,
                           horizon / self.supply.solar.resolution_s, "horizon_s / resolution_s solar steps"))
        if self.market.mechanism == "vcg":
            tdp_w = self.cluster.power_spec()["tdp_w"]
            counts.append(("market.vcg_quantum_w", self.market.vcg_quantum_w,
                           self.cluster.gpus * tdp_w / self.market.vcg_quantum_w,
                           "gpus × tdp_w / vcg_quantum_w quanta a round may trade"))
        problems = [(field, value, f"{what} = {count:.3g}; at most {MAX_COUNT:g} in one run")
                    for field, value, count, what in counts if count > MAX_COUNT]
        if problems:
            raise _FieldProblems(problems)
        return self


# --------------------------------------------------------------------------------------------- loading
def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ScenarioError(None, [(dotted, value, f"cannot set inside {key!r}, which is not a mapping")])
        node = child
    node[keys[-1]] = value


def apply_overrides(data: dict, overrides: list[str], path: Path | None = None) -> dict:
    """Apply ``key.sub=value`` strings (value parsed as YAML) to a raw scenario mapping."""
    for item in overrides:
        if "=" not in item:
            raise ScenarioError(path, [("--set", item, "expected KEY=VALUE, e.g. cluster.gpus=128")])
        key, raw = item.split("=", 1)
        if not all(part.strip() for part in key.split(".")):
            raise ScenarioError(path, [("--set", item, "KEY=VALUE with KEY a dotted field name, e.g. cluster.gpus=128")])
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ScenarioError(path, [(key, raw, f"a YAML value ({exc.__class__.__name__})")]) from None
        _set_dotted(data, key.strip(), value)
    return data


_TAG_KEYS = ("process", "distribution", "source")


def _user_loc(loc: tuple, data: Any) -> list[str]:
    """The error location as the user wrote it: drop the union tags pydantic inserts (``...exponential.mean``)."""
    parts: list[str] = []
    node = data
    skipped_at: int | None = None
    for part in loc:
        # pydantic inserts a discriminated union's tag (e.g. 'poisson') right after the union's field; skip it
        # once per level, so a real key that happens to equal the tag is still reported
        if isinstance(node, dict) and skipped_at != len(parts) and any(node.get(k) == part for k in _TAG_KEYS):
            skipped_at = len(parts)
            continue
        if _is_member_label(part, node):
            continue
        parts.append(str(part))
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return parts


def _is_member_label(part: Any, node: Any) -> bool:
    """Whether ``part`` is the member label pydantic puts after a plain union's field (``FixedStep``,
    ``literal['event']``) rather than a key the user wrote."""
    if not isinstance(part, str) or (isinstance(node, dict) and part in node):
        return False
    return part.startswith("literal[") or part in {m.__name__ for m in _Model.__subclasses__()}


def _leaf_type(parts: list[str], data: Any) -> Any:
    """The annotation (with its constraints) of the field or item at the user's path ``parts``; None if unknown."""
    model: type[BaseModel] | None = Scenario
    annotation: Any = None
    node = data
    for part in parts:
        if model is not None:
            field = model.model_fields.get(part)
            if field is None:
                return None
            annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
            node = node.get(part) if isinstance(node, dict) else None
        else:  # an item of a list or tuple
            inner = _strip_optional(annotation)
            if get_origin(inner) not in (list, tuple) or not part.isdigit():
                return None
            annotation = get_args(inner)[0]
            node = node[int(part)] if isinstance(node, list) and int(part) < len(node) else None
        model = _model_for(annotation, node)
    return annotation


def _strip_optional(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` → ``X`` (constraints are dropped)."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType) and type(None) in get_args(annotation):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _allowed_number(annotation: Any) -> str | None:
    """What a numeric field accepts, e.g. ``"a finite number > 0 and ≤ 1e+09"`` (None if not numeric)."""
    bounds: list[str] = []
    nullable = False
    todo = [annotation]
    while todo:
        tp = todo.pop()
        origin = get_origin(tp)
        if origin is Annotated:
            todo.append(get_args(tp)[0])
            for meta in get_args(tp)[1:]:
                for item in getattr(meta, "metadata", [meta]):
                    for attr, symbol in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
                        if getattr(item, attr, None) is not None:
                            bounds.append(f"{symbol} {getattr(item, attr):g}")
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            nullable = nullable or len(members) < len(get_args(tp))
            if len(members) != 1:
                return None
            todo.append(members[0])
        elif tp not in (int, float):
            return None
    kind = "a whole number" if _strip_optional(annotation) is int else "a finite number"
    text = kind + (" " + " and ".join(bounds) if bounds else "")
    return text + (", or null" if nullable else "")


_NUMBER_ERRORS = {"finite_number", "greater_than", "greater_than_equal", "less_than", "less_than_equal",
                  "float_parsing", "float_type", "int_parsing", "int_type", "int_from_float"}


def _model_for(annotation: Any, node: Any) -> type[BaseModel] | None:
    """The pydantic model a field's annotation stands for, picking a union member by its tag in ``node``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _model_for(get_args(annotation)[0], node)
    if origin in (Union, types.UnionType):
        members = [m for m in (_model_for(a, node) for a in get_args(annotation)) if m is not None]
        for member in members:
            for key in _TAG_KEYS:
                field = member.model_fields.get(key)
                if field is not None and isinstance(node, dict) and node.get(key) in get_args(field.annotation):
                    return member
        return members[0] if len(members) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _allowed_keys(parts: list[str], data: Any, root: type[BaseModel] = Scenario) -> list[str] | None:
    """The keys allowed in the mapping that holds the unknown key at ``parts`` (None if not a model)."""
    model: type[BaseModel] | None = root
    node = data
    for part in parts[:-1]:
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return None
        node = node.get(part) if isinstance(node, dict) else None
        model = _model_for(field.annotation, node)
    return list(model.model_fields) if model is not None else None


def _problems(exc: ValidationError, data: Any, root: type[BaseModel] = Scenario) -> list[tuple[str, Any, str]]:
    problems = []
    for err in exc.errors(include_url=False):
        parts = _user_loc(err["loc"], data)
        value = err.get("input")
        message = err["msg"]
        ctx = err.get("ctx", {})
        if err["type"] == "value_error" and isinstance(ctx.get("error"), _FieldProblems):
            problems += [(".".join(parts + field.split(".")), v, m) for field, v, m in ctx["error"].problems]
            continue
        if err["type"] == "literal_error" and isinstance(value, dict) and any("literal[" in str(p) for p in err["loc"]):
            continue  # a mapping given to a 'string or section' field: the section's own errors say what is wrong
        if err["type"] in _NUMBER_ERRORS or (err["type"] == "value_error" and message.startswith("Value error, a duration")):
            allowed = _allowed_number(_leaf_type(parts, data))
            if allowed is not None:
                message = f"must be {allowed}" if err["type"] in _NUMBER_ERRORS else f"{message}; in seconds: {allowed}"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(parts, data, root)
            message = "unknown key"
            if allowed:
                close = difflib.get_close_matches(parts[-1], allowed, n=1)
                message += (f" (did you mean {close[0]!r}?)" if close else "") + f"; allowed here: {', '.join(allowed)}"
            else:
                message += " (`python -m dcsim schema` lists the allowed keys)"
        elif err["type"] == "union_tag_invalid":
            key = str(ctx.get("discriminator", "")).strip("'")
            parts.append(key)
            value = ctx.get("tag")
            message = f"must be one of {ctx.get('expected_tags')}"
        elif err["type"] == "union_tag_not_found":
            key = str(ctx.get("discriminator", "")).strip("'")
            message = f"needs the key {key!r} saying which kind it is"
        elif err["type"] == "model_type":
            model = next((m for m in _Model.__subclasses__() if m.__name__ == ctx.get("class_name")), None)
            if model is not None:
                message = f"a mapping (section) with the keys {', '.join(model.model_fields)}"
        elif err["type"] == "literal_error":
            message = f"must be one of {ctx.get('expected')}"
        message = message.removeprefix("Value error, ")
        problems.append((".".join(parts), value, message))
    return problems


def parse_scenario(data: Any, path: Path | None = None, base_dir: Path | None = None) -> Scenario:
    """Validate a raw mapping into a :class:`Scenario`; every problem is reported at once."""
    if not isinstance(data, dict):
        raise ScenarioError(path, [("", data, "a YAML mapping of sections (cluster, workload, ...)")])
    if base_dir is None and path is not None:
        base_dir = Path(path).resolve().parent
    try:
        return Scenario.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ScenarioError(path, _problems(exc, data)) from None


def read_scenario_mapping(path: str | Path) -> dict:
    """Read a scenario file's YAML into a mapping, with file-level errors as :class:`ScenarioError`."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(path, [("", str(path), "an existing scenario file")])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "file"
        raise ScenarioError(path, [(where, getattr(exc, "problem", str(exc)), "valid YAML")]) from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(path, [("", exc.reason, "a UTF-8 text file")]) from None
    return data if data is not None else {}


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read, override and validate a scenario file."""
    path = Path(path)
    data = read_scenario_mapping(path)
    if overrides:
        apply_overrides(data, overrides, path)
    return parse_scenario(data, path=path)


def scenario_to_dict(scenario: Scenario) -> dict:
    """The resolved scenario as plain YAML-safe data (paths absolute, durations in seconds)."""
    return scenario.model_dump(mode="json")  # FacilityConfig's serializer leaves out safety without a topology


def json_schema() -> dict:
    """JSON Schema of scenario files (for editor completion)."""
    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "dcsim scenario"
    return schema
