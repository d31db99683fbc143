"""The batched policy interface: observations as arrays, actions as enums or typed arrays, and policy lookup."""
from __future__ import annotations

import importlib
import inspect
import math
from dataclasses import dataclass
from enum import IntEnum
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np

from dcsim.errors import PolicyError

if TYPE_CHECKING:
    from dcsim.learning import Feedback

ENTRY_POINT_GROUP = "dcsim.policies"


class GpuState(IntEnum):
    """Power state of a GPU. The ``*ING`` states are timed transitions that draw transition energy."""

    OFF = 0
    SLEEP = 1
    IDLE = 2
    ACTIVE = 3
    WAKING = 4
    ENTERING_SLEEP = 5
    BOOTING = 6
    SHUTTING_DOWN = 7


class Admission(IntEnum):
    """What to do with a deferrable job now: start queueing it, or hold it back until the next decision."""

    RUN = 0
    DEFER = 1


class ServingAdmission(IntEnum):
    """What to do with an arriving LLM request (serving runs, docs/serving.md)."""

    SERVE = 0
    DENY = 1


class IdleAction(IntEnum):
    """What a GPU that just ran out of work does."""

    STAY_IDLE = 0
    SLEEP = 1
    POWER_OFF = 2


@dataclass(frozen=True)
class MarketView:
    """The shared state every agent sees at a decision instant (scalars).

    Attributes:
        time_s: Simulation time, s since the scenario start.
        hour_utc: Hour of day (UTC, fractional) at ``time_s``.
        renewable_w: Renewable power available now, W.
        demand_w: Cluster power draw now, W.
        renewable_fraction: ``min(1, renewable_w / demand_w)`` (1 when demand is 0).
        price_tokens_per_kwh: Token price of the current market round.
        base_price_tokens_per_kwh: The price when renewable supply covers demand (p0).
        grid_carbon_g_per_kwh: Grid carbon intensity now.
        grid_price_usd_per_mwh: Grid energy price now.
        battery_soc: Battery state of charge in [0, 1] (0 without a battery).
        queue_length: Jobs waiting to start.
        deferred_jobs: Jobs a policy is holding back.
        next_round_s: Time of the next periodic market round.
    """

    time_s: float
    hour_utc: float
    renewable_w: float
    demand_w: float
    renewable_fraction: float
    price_tokens_per_kwh: float
    base_price_tokens_per_kwh: float
    grid_carbon_g_per_kwh: float
    grid_price_usd_per_mwh: float
    battery_soc: float
    queue_length: int
    deferred_jobs: int
    next_round_s: float


class Dispatch(IntEnum):
    """What the facility agent tells the battery to do until its next decision (``dispatch``)."""

    HOLD = 0
    CHARGE = 1  # from the bus: surplus renewable first, then the grid where facility.battery.grid_charging allows
    DISCHARGE = 2  # to the bus: the load first, then grid export where an export price is set and positive


@dataclass(frozen=True)
class BatteryCommand:
    """A facility agent's battery decision: a :class:`Dispatch` and its bus-side rate, W (>= 0; ignored for HOLD).

    The engine clips the rate to the battery's power limit, and to 0 when the state of charge is already at the
    bound the command moves towards; each clipping is recorded (``dispatch.csv``, ``summary.json``).
    """

    command: Dispatch
    rate_w: float = 0.0


@dataclass(frozen=True)
class FacilityObservation:
    """What the facility agent sees when it dispatches the battery (at every market round), all scalars.

    Sign convention: ``net_load_w`` is positive when the load exceeds renewable power (a deficit the battery or the
    grid must serve), negative when renewable power is in surplus.

    Attributes:
        market: The shared state every agent sees (time, renewable power, IT demand, grid price, ...).
        load_w: Facility power now: the cluster's draw plus cooling and overhead (with ``facility.cooling``), W.
        net_load_w: ``load_w − market.renewable_w``, W.
        soc_j: Battery state of charge, J.
        capacity_j: Battery capacity, J.
        min_soc_j, max_soc_j: The state of charge's bounds (``facility.battery.min_soc/max_soc`` × capacity), J.
        max_charge_w, max_discharge_w: Bus-side power limits, W.
        round_trip_efficiency: ``η`` (``η_c = η_d = √η``).
        grid_charging: Whether CHARGE may draw on the grid.
        import_cap_w: Grid import limit, W (inf = none).
        export_price_usd_per_mwh: Export price now, USD/MWh (NaN without export).
        export_cap_w: Export limit, W (0 without export, inf = none).
        demand_charge_usd_per_kw: Demand charge rate on each billing window's peak, USD/kW.
        window_peak_w: Largest demand-interval mean grid import so far in the current billing window, W.
        interval_import_j: Grid import so far in the current demand interval, J.
        interval_end_s: End of the current demand interval, s.
    """

    market: MarketView
    load_w: float
    net_load_w: float
    soc_j: float
    capacity_j: float
    min_soc_j: float
    max_soc_j: float
    max_charge_w: float
    max_discharge_w: float
    round_trip_efficiency: float
    grid_charging: bool
    import_cap_w: float
    export_price_usd_per_mwh: float
    export_cap_w: float
    demand_charge_usd_per_kw: float
    window_peak_w: float
    interval_import_j: float
    interval_end_s: float


@dataclass(frozen=True)
class CoolingCommand:
    """A facility agent's cooling decision: the supply-air (IT inlet) setpoint until its next decision, °C.

    It must lie within ``facility.cooling.setpoint_control``'s ``[min_c, max_c]``; the chilled water follows it
    (or stays, with ``chilled_water: fixed``).
    """

    supply_air_c: float


@dataclass(frozen=True)
class CoolingObservation:
    """What the facility agent sees when it sets the cooling setpoint (at every market round), all scalars.

    Attributes:
        market: The shared state every agent sees (time, renewable power, IT demand, grid price, ...).
        outdoor_dry_bulb_c, outdoor_wet_bulb_c: Outdoor temperatures now, °C (the wet-bulb equals the dry-bulb
            for a constant weather without ``wet_bulb_c``).
        supply_air_c: Supply-air (IT inlet) setpoint in force, °C.
        chilled_water_c: Chilled-water temperature in force, °C.
        room_temp_c: Room (return) air temperature now, °C.
        it_power_w: IT power now (the cluster's draw), W.
        cooling_power_w: Cooling power now (chiller, economiser auxiliaries, fans), W.
        electric_per_heat: ``k`` now: cooling-plant electric W per W of heat removed (chiller and economiser).
        levels_c: The setpoints an RL facility agent chooses among, °C, increasing.
        electric_per_heat_by_level: ``k`` now at each of ``levels_c`` (same weather).
        min_c, max_c: The range a command must lie in, °C.
        inlet_limit_c: Inlet temperature above which time counts as a violation, °C.
    """

    market: MarketView
    outdoor_dry_bulb_c: float
    outdoor_wet_bulb_c: float
    supply_air_c: float
    chilled_water_c: float
    room_temp_c: float
    it_power_w: float
    cooling_power_w: float
    electric_per_heat: float
    levels_c: tuple[float, ...]
    electric_per_heat_by_level: tuple[float, ...]
    min_c: float
    max_c: float
    inlet_limit_c: float


@dataclass(frozen=True)
class GpuSpecView:
    """Power figures of the cluster's GPUs (one model per cluster), W."""

    idle_w: float
    tdp_w: float
    min_cap_w: float
    full_power_w: float
    gamma: float
    utilisation: float


@dataclass(frozen=True)
class AgentObservation:
    """One observation for all GPU agents deciding at an instant; every array has shape ``(n,)``.

    Attributes:
        gpu_ids: Which GPUs these rows are.
        state: :class:`GpuState` values.
        has_job: Whether a job is assigned to the GPU.
        job_remaining_s: Remaining time of the assigned job at full clock, s (0 without a job).
        job_slack_s: Deadline minus now minus remaining full-clock time, s (+inf without a deadline).
        job_clock_sensitivity: beta of the assigned job (work rate = f**beta), 1 without a job.
        job_value_tokens: Value the assigned job pays on completion (0 without a job).
        job_gpus: GPUs the assigned job runs on (0 without a job); its value is shared among them.
        wallet_tokens: Tokens each agent holds.
        market: Shared state.
        gpu: Power figures.
        feedback: For policies with ``wants_feedback``: each agent's reward and elapsed time since its previous
            decision (:class:`dcsim.learning.Feedback`); None otherwise.
    """

    gpu_ids: np.ndarray
    state: np.ndarray
    has_job: np.ndarray
    job_remaining_s: np.ndarray
    job_slack_s: np.ndarray
    job_clock_sensitivity: np.ndarray
    job_value_tokens: np.ndarray
    job_gpus: np.ndarray
    wallet_tokens: np.ndarray
    market: MarketView
    gpu: GpuSpecView
    feedback: Feedback | None = None

    def __len__(self) -> int:
        ids = self.__dict__.get("_ids")
        return len(ids) if ids is not None else int(self.gpu_ids.size)

    def as_list(self, name: str) -> list:
        """Array field ``name`` as a list of Python numbers, ``getattr(obs, name).tolist()``, without building the
        array when the engine made this observation from Python values (a few deciding agents)."""
        d = self.__dict__
        rows = d.get("_rows")
        if rows is not None and name not in d:
            if name == "gpu_ids":
                return list(d["_ids"])
            k = _ROW_INDEX[name]
            return [r[k] for r in rows]
        return getattr(self, name).tolist()

    def rows(self, *names: str) -> list[tuple]:
        """Per agent, a tuple of the named array fields' Python values: ``list(zip(*(obs.as_list(n) for n in
        names)))``, for policies that decide a few agents one by one."""
        d = self.__dict__
        rows = d.get("_rows")
        if rows is not None:
            ks = []
            for n in names:
                k = _ROW_INDEX.get(n)
                if k is None or n in d:  # gpu_ids, or an array already built: read it as the arrays
                    break
                ks.append(k)
            else:
                if len(rows) == 1:
                    r = rows[0]
                    return [tuple([r[k] for k in ks])]
                return [tuple([r[k] for k in ks]) for r in rows]
        return list(zip(*(self.as_list(n) for n in names)))

    def market_values(self) -> tuple:
        """The :class:`MarketView`'s field values in field order, without building the view when the engine made
        this observation from Python values (``tuple(getattr(obs.market, f) for f in fields(MarketView))``)."""
        d = self.__dict__
        values = d.get("_market")
        if values is not None and "market" not in d:
            return values
        view = self.market.__dict__
        return tuple([view[f] for f in _MARKET_FIELDS])

    def __getattr__(self, name: str) -> Any:
        # Only reached for a field not yet in the instance: an observation of a few agents keeps the Python values
        # read at its decision instant (one tuple per agent) and builds each array, and the market view, on first
        # access.
        d = self.__dict__
        rows = d.get("_rows")
        if rows is not None:
            k = _ROW_INDEX.get(name)
            if k is not None:
                value = d[name] = np.array([r[k] for r in rows], dtype=_ROW_DTYPES[k])
                return value
            if name == "gpu_ids":
                value = d[name] = np.array(d["_ids"], dtype=np.int64)
                return value
            if name == "market":
                value = d[name] = _market_view(d["_market"])
                return value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict:
        for f in _AGENT_FIELDS:  # an observation of a few agents: build what is still lazy
            getattr(self, f)
        return {k: v for k, v in self.__dict__.items() if k in _AGENT_FIELDS}


#: The fields of a few-agent observation's per-agent tuples (:func:`few_agent_observation`), in order, and dtypes.
ROW_FIELDS = ("state", "has_job", "job_remaining_s", "job_slack_s", "job_clock_sensitivity", "job_value_tokens",
              "job_gpus", "wallet_tokens")
_ROW_INDEX = {name: k for k, name in enumerate(ROW_FIELDS)}
_ROW_DTYPES = (np.int8, np.bool_, np.float64, np.float64, np.float64, np.float64, np.int64, np.float64)
_AGENT_FIELDS = ("gpu_ids", "state", "has_job", "job_remaining_s", "job_slack_s", "job_clock_sensitivity",
                 "job_value_tokens", "job_gpus", "wallet_tokens", "market", "gpu", "feedback")
_MARKET_FIELDS = ("time_s", "hour_utc", "renewable_w", "demand_w", "renewable_fraction", "price_tokens_per_kwh",
                  "base_price_tokens_per_kwh", "grid_carbon_g_per_kwh", "grid_price_usd_per_mwh", "battery_soc",
                  "queue_length", "deferred_jobs", "next_round_s")
#: The :class:`MarketView`'s fields in order (what :meth:`AgentObservation.market_values` returns the values of).
MARKET_FIELDS = _MARKET_FIELDS


def _market_view(values: tuple) -> MarketView:
    """A :class:`MarketView` of the field values ``values`` (in field order), built without its generated
    ``__init__``; equal, field for field, to ``MarketView(*values)``."""
    view = object.__new__(MarketView)
    view.__dict__.update(zip(_MARKET_FIELDS, values))
    return view


_new = object.__new__


def few_agent_observation(ids: list[int], rows: list[tuple], market: tuple, gpu: GpuSpecView,
                          feedback: Feedback | None) -> AgentObservation:
    """An :class:`AgentObservation` of a few agents ``ids`` from Python values read at the decision instant:
    ``rows`` holds one tuple per agent of the :data:`ROW_FIELDS` values, ``market`` the :class:`MarketView`'s field
    values in field order. The arrays and the market view are built on first access (equal, dtype included, to
    those of an observation built from arrays); :meth:`AgentObservation.as_list` and
    :meth:`AgentObservation.rows` read the values without building them."""
    obs = _new(AgentObservation)
    obs.__dict__.update(_ids=ids, _rows=rows, _market=market, gpu=gpu, feedback=feedback)
    return obs


@dataclass(frozen=True)
class JobObservation:
    """One observation for all deferrable jobs awaiting an admission decision; arrays have shape ``(m,)``.

    Attributes:
        job_ids: Row numbers in the run's job table.
        gpus: GPUs each job needs.
        duration_s: Duration at full clock, s.
        slack_s: Deadline minus now minus duration, s (+inf without a deadline).
        waited_s: Time since arrival, s.
        value_tokens: Value paid on completion.
        market: Shared state.
    """

    job_ids: np.ndarray
    gpus: np.ndarray
    duration_s: np.ndarray
    slack_s: np.ndarray
    waited_s: np.ndarray
    value_tokens: np.ndarray
    market: MarketView

    def __len__(self) -> int:
        return int(self.job_ids.size)


@dataclass(frozen=True)
class ServingView:
    """The state of an LLM serving run at a decision instant (scalars), shared by the requests deciding.

    Attributes:
        time_s: Simulation time, s since the scenario start.
        hour_utc: Hour of day (UTC, fractional) at ``time_s``.
        price_usd_per_mwh: Energy price now.
        queue_length: Admitted requests waiting for a batch slot.
        in_service: Requests in the GPUs' batches.
        free_slots: Batch slots free now (``gpus × max_batch − in_service``).
        gpus: GPUs serving.
        max_batch: Batch slots per GPU.
        completion_rate_per_s: Requests completed per second, exponentially weighted over the last ~60 s
            (0 before the first completion).
        slo_ttft_s: The time-to-first-token target, s.
        slo_e2e_s: The end-to-end latency target, s.
    """

    time_s: float
    hour_utc: float
    price_usd_per_mwh: float
    queue_length: int
    in_service: int
    free_slots: int
    gpus: int
    max_batch: int
    completion_rate_per_s: float
    slo_ttft_s: float
    slo_e2e_s: float


@dataclass(frozen=True)
class RequestObservation:
    """One observation for all LLM requests arriving at an instant; request arrays have shape ``(m,)``, the
    configuration arrays shape ``(k,)`` (one entry per row of the configuration table, in its order).

    Attributes:
        request_ids: Row numbers in the run's request table.
        prompt_tokens: Prompt tokens of each request.
        output_tokens: Output tokens of each request.
        service_s: Each request's service time alone on a GPU (batch 1) in the reference configuration, s.
        config_time_factor: Service time of each configuration relative to the reference.
        config_energy_factor: Energy of each configuration relative to the reference.
        config_quality: Quality score of each configuration in [0, 1].
        serving: Shared state.
    """

    request_ids: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    service_s: np.ndarray
    config_time_factor: np.ndarray
    config_energy_factor: np.ndarray
    config_quality: np.ndarray
    serving: ServingView

    def __len__(self) -> int:
        return int(self.request_ids.size)


@dataclass(frozen=True)
class ServingDecision:
    """What happens to each arriving request: admission, and the configuration that serves it.

    Attributes:
        admission: ``(m,)`` :class:`ServingAdmission` values.
        config: ``(m,)`` row index into the configuration table (ignored for denied requests).
    """

    admission: np.ndarray
    config: np.ndarray


@dataclass(frozen=True, init=False)
class Bids:
    """What each agent asks of the market for the coming round.

    The simple form is one block per agent: ``request_w`` at any price up to ``max_price``. A richer
    demand curve can be given as ``steps_w``/``steps_price`` (blocks of power above idle with
    non-increasing marginal values), and proportional-share markets read ``kelly_tokens``.

    Attributes:
        request_w: ``(n,)`` power cap wanted if running a job, W (total board power; the engine clips it
            to ``[0, full_power_w]``; below the GPU's minimum cap the job pauses).
        max_price_tokens_per_kwh: ``(n,)`` highest price the agent pays; above it it takes no power.
        steps_w: Optional ``(n, K)`` finite blocks of power above idle, W; when given they replace
            ``request_w``/``max_price`` as the demand curve (a row longer than the GPU's range is scaled down
            in proportion).
        steps_price: Optional ``(n, K)`` marginal value of each block, tokens/kWh, non-increasing along K.
        kelly_tokens: Optional ``(n,)`` tokens offered for the round under the ``kelly`` mechanism; by default
            the engine offers ``min(wallet, v × request × round)`` with v = ``max_price``, or the posted-price
            ceiling p0·e^κ for a price-blind agent.
    """

    request_w: np.ndarray
    max_price_tokens_per_kwh: np.ndarray
    steps_w: np.ndarray | None = None
    steps_price: np.ndarray | None = None
    kelly_tokens: np.ndarray | None = None

    def __init__(self, request_w: np.ndarray, max_price_tokens_per_kwh: np.ndarray, steps_w: np.ndarray | None = None,
                 steps_price: np.ndarray | None = None, kelly_tokens: np.ndarray | None = None):
        # the dataclass's own __init__, without its five object.__setattr__ calls (a bid per job start)
        self.__dict__.update(request_w=request_w, max_price_tokens_per_kwh=max_price_tokens_per_kwh, steps_w=steps_w,
                             steps_price=steps_price, kelly_tokens=kelly_tokens)

    @classmethod
    def full_power(cls, obs: AgentObservation) -> "Bids":
        """Ask for full power at any price (what a price-blind GPU does)."""
        n = len(obs)
        return cls(np.full(n, obs.gpu.full_power_w), np.full(n, np.inf))


class Policy:
    """Base class of decision policies. Every method is batched over the agents deciding at that instant.

    Override any of :meth:`bid`, :meth:`admit`, :meth:`on_idle`, :meth:`dispatch`, :meth:`cooling_setpoint` (GPU-job
    runs) and :meth:`serve` (LLM serving runs); the defaults are "full power at any price", "run every job now",
    "stay idle", (not overriding :meth:`dispatch`) the battery's fixed rule, (not overriding
    :meth:`cooling_setpoint`) the configured fixed setpoint and "serve every request with the reference
    configuration". The engine skips calling a method a subclass does not override, so a policy pays only for the
    decisions it makes.

    Args:
        **params: The scenario's ``policy.params``; unknown ones are an error.
    """

    #: Registered name (set by subclasses).
    name = "base"
    #: Learning policies set this: the engine then meters rewards and attaches ``feedback`` to agent observations.
    wants_feedback = False

    def __init__(self, **params: Any):
        if params:
            raise PolicyError(f"policy {self.name!r} takes no parameter(s) {sorted(params)}")

    def reset(self, rng: np.random.Generator, gpu: GpuSpecView, n_gpus: int) -> None:
        """Called once before a run with the policy's own random stream."""
        self.rng = rng

    def bid(self, obs: AgentObservation) -> Bids:
        """Bids of every agent for the coming market round."""
        return Bids.full_power(obs)

    def admit(self, obs: JobObservation) -> np.ndarray:
        """An :class:`Admission` per deferrable job (array of shape ``(m,)``)."""
        return np.full(len(obs), Admission.RUN, dtype=np.int8)

    def on_idle(self, obs: AgentObservation) -> np.ndarray:
        """An :class:`IdleAction` per GPU that just became idle (array of shape ``(n,)``)."""
        return np.full(len(obs), IdleAction.STAY_IDLE, dtype=np.int8)

    def dispatch(self, obs: FacilityObservation) -> BatteryCommand:
        """The facility agent's battery command until the next market round (asked at every round, and only with
        ``facility.battery``). A policy that does not override this keeps the fixed rule (docs/model.md: charge from
        surplus renewable power, discharge on a deficit); this default, never called by the engine, holds."""
        return BatteryCommand(Dispatch.HOLD)

    def cooling_setpoint(self, obs: CoolingObservation) -> CoolingCommand:
        """The facility agent's supply-air setpoint until the next market round (asked at every round, and only with
        ``facility.cooling.setpoint_control``). A policy that does not override this keeps the configured
        ``facility.cooling.supply_air_c``; this default, never called by the engine, keeps the setpoint in force."""
        return CoolingCommand(obs.supply_air_c)

    def serve(self, obs: RequestObservation) -> ServingDecision:
        """Admission and configuration of each LLM request arriving now (serving runs): by default serve every
        request with the first configuration of the table (the reference)."""
        m = len(obs)
        return ServingDecision(np.full(m, ServingAdmission.SERVE, dtype=np.int8), np.zeros(m, dtype=np.int64))

    def end_episode(self, obs: AgentObservation) -> None:
        """Called once at the horizon with every agent's observation (and, for learning policies, the feedback
        accrued since each agent's last decision)."""

    def state_dict(self) -> dict[str, Any]:
        """Parameters and learnt state worth recording in a run's metadata."""
        return {}

    def overrides(self, method: str) -> bool:
        """Whether this policy's class overrides ``method`` of :class:`Policy`."""
        return getattr(type(self), method) is not getattr(Policy, method)


def registered_policies() -> dict[str, str]:
    """Registered policy names → ``"module:Class"``, from the ``dcsim.policies`` entry points."""
    found: dict[str, str] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return dict(sorted(found.items()))


def _import(target: str) -> type:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise PolicyError(f"policy {target!r}: expected a registered name or 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PolicyError(f"policy {target!r}: cannot import module {module_name!r} ({exc})") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise PolicyError(f"policy {target!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, Policy)):
        raise PolicyError(f"policy {target!r}: {attr!r} is not a subclass of dcsim.policy.Policy")
    return obj


def load_policy(name: str, params: dict[str, Any] | None = None) -> Policy:
    """Instantiate a policy by registered name or ``"package.module:Class"`` string.

    Raises:
        PolicyError: Unknown name, import failure, or bad parameters; the message lists the known names.
    """
    cls = policy_class(name)
    allowed = policy_parameters(cls)
    unknown = sorted(set(params or {}) - set(allowed))
    if unknown:
        raise PolicyError(f"policy {name!r}: unknown parameter(s) {', '.join(map(repr, unknown))}; allowed: "
                          f"{', '.join(allowed) if allowed else 'none (it takes no parameters)'}")
    try:
        return cls(**(params or {}))
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"policy {name!r}: bad parameters {params or {}}: {exc}") from None


def policy_class(name: str) -> type[Policy]:
    """The policy class a registered name or ``"package.module:Class"`` string stands for.

    Raises:
        PolicyError: Unknown name or import failure.
    """
    registry = registered_policies()
    if ":" in name:
        return _import(name)
    if name in registry:
        return _import(registry[name])
    known = ", ".join(registry) or "(none: is dcsim installed with `pip install -e .`?)"
    raise PolicyError(f"unknown policy {name!r}; registered policies: {known}; or give 'package.module:Class'")


def policy_parameters(cls: type[Policy]) -> list[str]:
    """The keyword parameters a policy class accepts: the named parameters of its ``__init__`` and of every
    base class's ``__init__`` that it passes ``**kwargs`` on to, up to :class:`Policy` (which takes none)."""
    names: list[str] = []
    for klass in cls.__mro__:
        if klass is Policy or not (isinstance(klass, type) and issubclass(klass, Policy)):
            break
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        passes_on = False
        for p in inspect.signature(init).parameters.values():
            if p.kind is p.VAR_KEYWORD:
                passes_on = True
            elif p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names:
                names.append(p.name)
        if not passes_on:
            break
    return names


_FEW = 16  # up to this many actions are range-checked as Python numbers


def _enum_size(enum: type[IntEnum]) -> int:
    """Members of an action enum (cached: ``len()`` of an enum class walks its members)."""
    size = _ENUM_SIZES.get(enum)
    if size is None:
        size = _ENUM_SIZES[enum] = len(enum)
    return size


_ENUM_SIZES: dict[type, int] = {}


def check_actions(values: Any, n: int, enum: type[IntEnum], who: str) -> np.ndarray:
    """Validate a policy's action array: shape ``(n,)`` and every value a member of ``enum``."""
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise PolicyError(f"{who} returned shape {arr.shape}; expected ({n},) — one {enum.__name__} per agent")
    if n:
        # the action enums are 0..k-1, so a range check is a membership check (and much cheaper than np.isin);
        # a few actions are checked as Python numbers (cheaper than numpy reductions)
        if arr.dtype.kind in "iu":
            vals = arr.tolist() if n <= _FEW else (int(arr.min()), int(arr.max()))
            ok = 0 <= min(vals) and max(vals) < _enum_size(enum)
        else:
            ok = False
        if not ok:
            if arr.dtype.kind in "iu":
                bad = arr[(arr < 0) | (arr >= len(enum))][0].item()
                what = f"{bad!r}"
            else:
                what = f"{arr.dtype} values such as {arr[0].item()!r}"
            raise PolicyError(f"{who} returned {what}; allowed: integer {enum.__name__} values "
                              f"{ {m.name: m.value for m in enum} }")
    return arr.astype(np.int8, copy=False)


def check_bids(bids: Any, n: int, who: str) -> Bids:
    """Validate a policy's bids: a :class:`Bids` with float arrays of shape ``(n,)``, no NaN, none negative."""
    if not isinstance(bids, Bids):
        raise PolicyError(f"{who} returned {type(bids).__name__}; expected dcsim.policy.Bids")
    req = np.asarray(bids.request_w, dtype=float)
    price = np.asarray(bids.max_price_tokens_per_kwh, dtype=float)
    for label, arr in (("request_w", req), ("max_price_tokens_per_kwh", price)):
        if arr.shape != (n,):
            raise PolicyError(f"{who}: Bids.{label} has shape {arr.shape}; expected ({n},)")
        # NaN >= 0 is False, so this one comparison rejects NaN and negative values alike (a few bids are
        # checked as Python numbers, cheaper than a numpy comparison and reduction)
        if not (all(v >= 0 for v in arr.tolist()) if n <= _FEW else (arr >= 0).all()):
            raise PolicyError(f"{who}: Bids.{label} has NaN or negative values; expected >= 0")
    if (bids.steps_w is None and bids.steps_price is None and bids.kelly_tokens is None
            and req is bids.request_w and price is bids.max_price_tokens_per_kwh):
        return bids  # already float arrays of the right shape: nothing to convert
    steps_w = steps_price = kelly = None
    if (bids.steps_w is None) != (bids.steps_price is None):
        raise PolicyError(f"{who}: Bids.steps_w and Bids.steps_price must be given together")
    if bids.steps_w is not None:
        steps_w = np.asarray(bids.steps_w, dtype=float)
        steps_price = np.asarray(bids.steps_price, dtype=float)
        if steps_w.ndim != 2 or steps_w.shape[0] != n or steps_w.shape != steps_price.shape:
            raise PolicyError(f"{who}: Bids.steps_w/steps_price have shapes {steps_w.shape}/{steps_price.shape}; "
                              f"expected equal ({n}, K)")
        if not np.all(np.isfinite(steps_w)) or np.any(steps_w < 0):
            raise PolicyError(f"{who}: Bids.steps_w must be finite and >= 0 W")
        if np.any(np.isnan(steps_price)) or np.any(steps_price < 0):
            raise PolicyError(f"{who}: Bids.steps_price has NaN or negative values; expected >= 0 (inf allowed)")
        with np.errstate(invalid="ignore"):  # inf − inf (two price-blind blocks) is NaN, and NaN > 0 is False
            rising = np.any(np.diff(steps_price, axis=1) > 0)
        if rising:
            raise PolicyError(f"{who}: Bids.steps_price must be non-increasing along each row (marginal values)")
    if bids.kelly_tokens is not None:
        kelly = np.asarray(bids.kelly_tokens, dtype=float)
        if kelly.shape != (n,) or np.any(~np.isfinite(kelly)) or np.any(kelly < 0):
            raise PolicyError(f"{who}: Bids.kelly_tokens must be finite, >= 0 and of shape ({n},)")
    return Bids(req, price, steps_w, steps_price, kelly)


_F8 = np.dtype(np.float64)


def few_actions(values: Any, n: int, enum: type[IntEnum]) -> list[int] | None:
    """For a few agents: the actions :func:`check_actions` would accept, as a list of Python ints (what
    ``check_actions(values, n, enum, who).tolist()`` gives), for an integer array of shape ``(n,)``; None for
    anything else, valid or not (then :func:`check_actions` decides, and names the error)."""
    if type(values) is not np.ndarray or values.shape != (n,) or values.dtype.kind not in "iu":
        return None
    vals = values.tolist()
    size = _enum_size(enum)
    for v in vals:
        if not 0 <= v < size:
            return None
    return vals


def few_bid_values(bids: Any, n: int) -> tuple[list[float], list[float], list | None] | None:
    """For a few agents: the values of bids :func:`check_bids` would accept, as Python floats: ``(request_w,
    max_price, steps)``, ``steps`` None or one ``(steps_w row, steps_price row)`` pair per agent. Only for a
    :class:`Bids` of float64 arrays with at most two blocks and no ``kelly_tokens``; None for anything else,
    valid or not (then :func:`check_bids` decides, and names the error)."""
    if type(bids) is not Bids or bids.kelly_tokens is not None:
        return None
    req, price = bids.request_w, bids.max_price_tokens_per_kwh
    if (type(req) is not np.ndarray or type(price) is not np.ndarray or req.dtype is not _F8
            or price.dtype is not _F8 or req.shape != (n,) or price.shape != (n,)):
        return None
    r, p = req.tolist(), price.tolist()
    for v in r:
        if not v >= 0:  # NaN or negative
            return None
    for v in p:
        if not v >= 0:
            return None
    sw, sp = bids.steps_w, bids.steps_price
    if sw is None and sp is None:
        return r, p, None
    if (type(sw) is not np.ndarray or type(sp) is not np.ndarray or sw.dtype is not _F8 or sp.dtype is not _F8
            or sw.ndim != 2 or sw.shape != sp.shape or sw.shape[0] != n or sw.shape[1] > 2):
        return None
    steps = list(zip(sw.tolist(), sp.tolist()))
    for w_row, p_row in steps:
        for w in w_row:
            if not (math.isfinite(w) and w >= 0):
                return None
        for v in p_row:
            if not v >= 0:  # NaN or negative (inf allowed)
                return None
        if len(p_row) == 2 and p_row[1] - p_row[0] > 0:  # np.diff(steps_price, axis=1) > 0
            return None
    return r, p, steps


def check_dispatch(command: Any, who: str) -> BatteryCommand:
    """Validate a policy's battery command: a :class:`BatteryCommand`, a :class:`Dispatch` and a finite rate >= 0 W."""
    if not isinstance(command, BatteryCommand):
        raise PolicyError(f"{who} returned {type(command).__name__}; expected dcsim.policy.BatteryCommand")
    try:
        kind = Dispatch(command.command)
    except ValueError:
        raise PolicyError(f"{who} returned command {command.command!r}; allowed: Dispatch values "
                          f"{ {m.name: m.value for m in Dispatch} }") from None
    try:
        rate = float(command.rate_w)
    except (TypeError, ValueError):
        rate = math.nan
    if not (math.isfinite(rate) and rate >= 0):
        raise PolicyError(f"{who} returned rate_w = {command.rate_w!r}; expected a finite number of W >= 0")
    return BatteryCommand(kind, rate)


def check_cooling(command: Any, min_c: float, max_c: float, who: str) -> CoolingCommand:
    """Validate a policy's cooling command: a :class:`CoolingCommand` with a finite setpoint in ``[min_c, max_c]``."""
    if not isinstance(command, CoolingCommand):
        raise PolicyError(f"{who} returned {type(command).__name__}; expected dcsim.policy.CoolingCommand")
    raw = command.supply_air_c
    number = isinstance(raw, (int, float, np.integer, np.floating)) and not isinstance(raw, bool)
    value = float(raw) if number else math.nan
    if not (math.isfinite(value) and min_c <= value <= max_c):
        raise PolicyError(f"{who} returned supply_air_c = {command.supply_air_c!r}; allowed: a number of °C within "
                          f"facility.cooling.setpoint_control's [min_c, max_c] = [{min_c:g}, {max_c:g}]")
    return CoolingCommand(value)


def check_serving(decision: Any, m: int, k: int, who: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate a policy's :class:`ServingDecision` for ``m`` requests and ``k`` configurations; returns the
    admission (int8) and configuration (int64) arrays."""
    if not isinstance(decision, ServingDecision):
        raise PolicyError(f"{who} returned {type(decision).__name__}; expected dcsim.policy.ServingDecision")
    admission = check_actions(decision.admission, m, ServingAdmission, f"{who} (admission)")
    config = np.asarray(decision.config)
    if config.shape != (m,):
        raise PolicyError(f"{who}: ServingDecision.config has shape {config.shape}; expected ({m},) — one "
                          f"configuration row per request")
    if config.dtype.kind in "iu" and m <= _FEW:  # a few rows: checked as Python numbers (cheaper than reductions)
        rows = config.tolist()
        if all(0 <= r < k for r in rows):
            return admission, config.astype(np.int64, copy=False)
    if m and (config.dtype.kind not in "iu" or config.min() < 0 or config.max() >= k):
        raise PolicyError(f"{who}: ServingDecision.config holds {config.dtype} values from {config.min()!r} to "
                          f"{config.max()!r}; allowed: integer rows 0..{k - 1} of the configuration table")
    return admission, config.astype(np.int64, copy=False)
