"""Typed settings of the facility models (pydantic), with errors that name the field, the value and what is allowed.

The scenario's ``facility`` section (``Scenario.facility``, checked by :func:`facility_problems` from a
scenario validator). :func:`parse_facility` validates a ``facility`` mapping on its own, reporting
fields as ``facility.<...>``.

Import order: this module builds on models of :mod:`dcsim.config`, which imports it (for
``Scenario.facility``) after defining them. Importing this module first therefore imports
:mod:`dcsim.config` first (``dcsim/facility/__init__.py`` does), and ``_problems``, defined after
``Scenario``, is imported where it is used.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_serializer, model_validator

from dcsim.config import (
    BatteryConfig,
    ClusterConfig,
    MAX_GPUS,
    MAX_QUANTITY,
    DataPath,
    DurationS,
    PositiveDurationS,
    SeriesSource,
    _Model,
)
from dcsim.errors import ScenarioError, TraceError
from dcsim.facility.cooling import CoolingParams

if TYPE_CHECKING:
    from dcsim.facility.topology import PowerTree

#: largest Weibull shape of up, repair or trip times (beyond it the draw is a constant to float precision)
MAX_SHAPE = 1000.0

_LEVEL_FIELDS = {"node": "node_w", "rack": "rack_w", "pdu": "pdu_w", "feed": "feed_w"}


# --------------------------------------------------------------------------------------------- topology
class LimitsConfig(_Model):
    """Limit of every element of a level, W; null = no limit at that level."""

    node_w: float | None = Field(None, gt=0, le=MAX_QUANTITY)
    rack_w: float | None = Field(None, gt=0, le=MAX_QUANTITY)
    pdu_w: float | None = Field(None, gt=0, le=MAX_QUANTITY)
    feed_w: float | None = Field(None, gt=0, le=MAX_QUANTITY)


class TopologyConfig(_Model):
    """The power-delivery tree: a regular tree given by fan-outs and per-level limits, or a GraphML file."""

    gpus_per_node: int = Field(8, ge=1, le=MAX_GPUS)
    nodes_per_rack: int = Field(4, ge=1, le=MAX_GPUS)
    racks_per_pdu: int = Field(4, ge=1, le=MAX_GPUS)
    pdus_per_feed: int = Field(4, ge=1, le=MAX_GPUS)
    feeds: int | None = Field(None, ge=1, le=MAX_GPUS, description="null: as many as the GPUs need")
    limits: LimitsConfig = LimitsConfig()
    graphml: DataPath | None = Field(
        None, description="a GraphML tree (GPU vertices kind='gpu', gpu=<index>; elements kind, limit_w) instead of fan-outs")

    @model_validator(mode="after")
    def _one_form(self) -> "TopologyConfig":
        if self.graphml is not None:
            regular = sorted(self.model_fields_set - {"graphml"})
            if regular:
                raise ValueError(f"give either 'graphml' or the regular tree's fields, not both (also given: "
                                 f"{', '.join(regular)}); a GraphML tree carries its own limits")
        return self

    def build(self, n_gpus: int) -> PowerTree:
        """The tree for ``n_gpus`` GPUs (raises ValueError or TraceError, see :mod:`dcsim.facility.topology`)."""
        from dcsim.facility.topology import read_graphml_tree, regular_tree  # networkx only when a tree is given

        if self.graphml is not None:
            return read_graphml_tree(self.graphml, n_gpus)
        limits = {kind: getattr(self.limits, name) for kind, name in _LEVEL_FIELDS.items()}
        return regular_tree(n_gpus, self.gpus_per_node, self.nodes_per_rack, self.racks_per_pdu, self.pdus_per_feed,
                            feeds=self.feeds, limits_w=limits)


# --------------------------------------------------------------------------------------------- cooling
class WeatherConfig(_Model):
    """Outdoor temperatures: an EPW weather file (read with pvlib), or constants."""

    epw: DataPath | None = None
    dry_bulb_c: float | None = Field(None, ge=-90, le=70)
    wet_bulb_c: float | None = Field(None, ge=-90, le=70)

    @model_validator(mode="after")
    def _one_source(self) -> "WeatherConfig":
        if (self.epw is None) == (self.dry_bulb_c is None):
            raise ValueError("give exactly one of 'epw' (a weather file) or 'dry_bulb_c' (a constant)")
        if self.epw is not None and self.wet_bulb_c is not None:
            raise ValueError("wet_bulb_c goes with a constant dry_bulb_c; with 'epw' the wet-bulb comes from the file")
        if self.wet_bulb_c is not None and self.wet_bulb_c > self.dry_bulb_c:
            raise ValueError(f"wet_bulb_c ({self.wet_bulb_c:g}) cannot exceed dry_bulb_c ({self.dry_bulb_c:g})")
        return self


class SetpointControlConfig(_Model):
    """The facility agent's supply-air setpoint: asked at every market round (``Policy.cooling_setpoint``).

    The supply air is the IT inlet (cold-aisle) temperature in this one-zone model. ASHRAE TC 9.9 (2021 thermal
    guidelines) recommends 18-27 °C at the inlet and allows 15-32 °C for class A1 equipment; time with the
    setpoint above ``inlet_limit_c`` is recorded as inlet violations (summary.json, the time series).
    """

    levels_c: list[Annotated[float, Field(ge=5, le=45)]] = Field(
        [18.0, 21.0, 24.0, 27.0], min_length=2, max_length=64,
        description="the setpoints an RL facility agent chooses among, °C, increasing")
    min_c: float = Field(18.0, ge=5, le=45, description="lowest setpoint a policy may command, °C")
    max_c: float = Field(27.0, ge=5, le=45, description="highest setpoint a policy may command, °C (A1 allows 32)")
    inlet_limit_c: float = Field(27.0, ge=5, le=45, description="inlet temperature above which time counts as a "
                                                                "violation, °C (ASHRAE recommended upper: 27)")
    chilled_water: Literal["follow", "fixed"] = Field(
        "follow", description="follow: chilled_water_c moves with the setpoint (same coil offset); fixed: it stays")

    @field_validator("levels_c")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"levels must be strictly increasing, got {v}")
        return v

    @model_validator(mode="after")
    def _in_range(self) -> "SetpointControlConfig":
        if self.min_c >= self.max_c:
            raise ValueError(f"min_c ({self.min_c:g}) must be below max_c ({self.max_c:g})")
        outside = [x for x in self.levels_c if not self.min_c <= x <= self.max_c]
        if outside:
            raise ValueError(f"levels_c {outside} lie outside [min_c, max_c] = [{self.min_c:g}, {self.max_c:g}]")
        return self

    def chilled_water_at(self, supply_air_c: float, base_supply_air_c: float, base_chilled_water_c: float) -> float:
        """Chilled-water temperature at setpoint ``supply_air_c``, °C (``base_*``: the configured fixed setpoints;
        exactly ``base_chilled_water_c`` at ``base_supply_air_c``)."""
        if self.chilled_water == "fixed":
            return base_chilled_water_c
        return base_chilled_water_c + (supply_air_c - base_supply_air_c)


class CoolingConfig(_Model):
    """The cooling plant and room (see docs/facility.md for each default's source or assumption)."""

    weather: WeatherConfig
    design_it_power_w: float | None = Field(None, gt=0, le=MAX_QUANTITY, description="null: the cluster's GPUs at TDP")
    supply_air_c: float = Field(24.0, ge=5, le=45, description="ASHRAE TC 9.9 recommends 18-27 °C inlet")
    design_delta_t_k: float = Field(12.0, gt=0, le=100)
    time_constant_s: DurationS = Field(600.0, description="room thermal time constant; 0 = cooling follows IT at once")
    chilled_water_c: float = Field(15.0, ge=1, le=40)
    evaporator_approach_k: float = Field(2.0, ge=0, le=100)
    condenser: Literal["air", "water"] = "air"
    condenser_approach_k: float = Field(8.0, ge=0, le=100)
    second_law_efficiency: float = Field(0.5, gt=0, le=1)
    max_cop: float = Field(12.0, gt=0, le=1000)
    economiser: Literal["none", "air", "water"] = "none"
    economiser_approach_k: float = Field(4.0, gt=0, le=100)
    economiser_power_per_w: float = Field(0.03, ge=0, le=10)
    fan_power_w: float | None = Field(None, ge=0, le=MAX_QUANTITY, description="null: 5 % of design_it_power_w")
    overhead_w: float = Field(0.0, ge=0, le=MAX_QUANTITY)
    setpoint_control: SetpointControlConfig | None = Field(
        None, description="the facility agent chooses supply_air_c at each market round; null: fixed setpoints")

    @model_validator(mode="after")
    def _consistent(self) -> "CoolingConfig":
        if self.chilled_water_c >= self.supply_air_c:
            raise ValueError(f"chilled_water_c ({self.chilled_water_c:g}) must be below supply_air_c "
                             f"({self.supply_air_c:g}): the coil cools the air with colder water")
        sc = self.setpoint_control
        if sc is not None:
            if not sc.min_c <= self.supply_air_c <= sc.max_c:
                raise ValueError(f"supply_air_c ({self.supply_air_c:g}), the setpoint until the first decision, must "
                                 f"lie within setpoint_control's [min_c, max_c] = [{sc.min_c:g}, {sc.max_c:g}]")
            if sc.chilled_water == "fixed" and sc.min_c <= self.chilled_water_c:
                raise ValueError(f"setpoint_control.min_c ({sc.min_c:g}) must be above chilled_water_c "
                                 f"({self.chilled_water_c:g}) with chilled_water 'fixed'")
            lowest = sc.chilled_water_at(sc.min_c, self.supply_air_c, self.chilled_water_c)
            if lowest < 1.0:
                raise ValueError(f"at setpoint_control.min_c ({sc.min_c:g}) the chilled water following the setpoint "
                                 f"would be {lowest:g} °C, below 1 °C; raise min_c or use chilled_water 'fixed'")
        wants_wet = [f"{name} 'water'" for name in ("condenser", "economiser") if getattr(self, name) == "water"]
        if wants_wet and self.weather.dry_bulb_c is not None and self.weather.wet_bulb_c is None:
            raise ValueError(f"{' and '.join(wants_wet)} needs the outdoor wet-bulb: give weather.wet_bulb_c, "
                             f"or weather.epw")
        return self

    def params(self, design_it_power_w: float) -> CoolingParams:
        """:class:`CoolingParams` with ``design_it_power_w`` filled in where this config leaves it null."""
        fields = self.model_dump(exclude={"weather", "design_it_power_w", "setpoint_control"})
        return CoolingParams(design_it_power_w=self.design_it_power_w or float(design_it_power_w), **fields)


# --------------------------------------------------------------------------------------------- failures
class ComponentFailures(_Model):
    """Failures of one kind of component: up times with mean ``mtbf_s``, repairs with mean ``mttr_s``."""

    mtbf_s: PositiveDurationS
    mttr_s: PositiveDurationS
    failure_shape: float = Field(1.0, gt=0, le=MAX_SHAPE, description="Weibull shape of up times; 1 = exponential")
    repair_shape: float = Field(1.0, gt=0, le=MAX_SHAPE, description="Weibull shape of repair times; 1 = exponential")


class ScheduledOutage(_Model):
    """A planned outage of one tree element (e.g. ``pdu3`` or ``feed0``)."""

    element: str
    start_s: DurationS
    duration_s: PositiveDurationS


class RenewableTrips(_Model):
    """Trips of the renewable plant: it delivers nothing while tripped."""

    mean_time_between_s: PositiveDurationS
    mean_duration_s: PositiveDurationS
    duration_shape: float = Field(1.0, gt=0, le=MAX_SHAPE)


class FailuresConfig(_Model):
    """Failure and repair processes, all drawn from the ``failures`` stream."""

    gpu: ComponentFailures | None = None
    node: ComponentFailures | None = None
    pdu: ComponentFailures | None = None
    feed: ComponentFailures | None = None
    scheduled: list[ScheduledOutage] = Field(default_factory=list)
    renewable_trips: RenewableTrips | None = None
    on_failure: Literal["requeue", "lose"] = Field("requeue", description="what happens to a job on a failed GPU")


# --------------------------------------------------------------------------------------------- battery
class BatteryDispatchConfig(_Model):
    """Control of ``supply.battery`` by a facility agent, grid export and demand charges."""

    min_soc: float = Field(0.0, ge=0, le=1)
    max_soc: float = Field(1.0, ge=0, le=1)
    grid_charging: bool = Field(False, description="may the battery charge from the grid")
    export_price_usd_per_mwh: SeriesSource | None = Field(None, description="null: no export")
    export_cap_w: float | None = Field(None, ge=0, le=MAX_QUANTITY,
                                       description="null = unlimited (with an export price)")
    demand_charge_usd_per_kw: float = Field(0.0, ge=0, le=MAX_QUANTITY)
    demand_interval_s: PositiveDurationS = 900.0
    billing_window_s: PositiveDurationS = 30 * 86400.0

    @field_validator("export_price_usd_per_mwh")
    @classmethod
    def _price_series(cls, v: SeriesSource | None) -> SeriesSource | None:
        if v is not None and v.format not in ("auto", "caiso_oasis", "ercot", "csv"):
            raise ValueError(f"format {v.format!r} is a carbon format; a price takes auto, caiso_oasis, ercot or csv")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "BatteryDispatchConfig":
        if self.min_soc >= self.max_soc:
            raise ValueError(f"min_soc ({self.min_soc:g}) must be below max_soc ({self.max_soc:g})")
        ratio = self.billing_window_s / self.demand_interval_s
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ValueError(f"billing_window_s ({self.billing_window_s:g}) must be a whole multiple of "
                             f"demand_interval_s ({self.demand_interval_s:g})")
        if self.export_cap_w is not None and self.export_price_usd_per_mwh is None:
            raise ValueError("export_cap_w needs export_price_usd_per_mwh (without a price there is no export)")
        return self


# --------------------------------------------------------------------------------------------- facility
class FacilityConfig(_Model):
    """The facility around the GPUs; every part is off when left out."""

    topology: TopologyConfig | None = None
    safety: bool = Field(True, description="enforce the topology's limits by capping (needs a topology)")
    cooling: CoolingConfig | None = None
    failures: FailuresConfig | None = None
    battery: BatteryDispatchConfig | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """Leave ``safety`` out of a dump without a topology, so a dumped scenario (metadata.yaml, a worker's
        copy) validates again: ``safety`` given without a topology is an error (:func:`facility_problems`)."""
        data = handler(self)
        if self.topology is None and isinstance(data, dict):
            data.pop("safety", None)
        return data


def facility_problems(facility: FacilityConfig, cluster: ClusterConfig,
                      battery: BatteryConfig | None) -> list[tuple[str, Any, str]]:
    """Checks that need the rest of the scenario: the tree against the cluster, outages against the tree.

    Returns:
        ``(field, value, message)`` entries as :class:`ScenarioError` takes them (empty when all is well).
    """
    problems: list[tuple[str, Any, str]] = []
    tree = None
    if facility.topology is not None:
        try:
            tree = facility.topology.build(cluster.gpus)
        except (ValueError, TraceError) as exc:
            problems.append(("facility.topology", facility.topology.graphml or facility.topology.feeds, str(exc)))
        if tree is not None:
            idle_w = cluster.power_spec()["idle_w"]
            try:
                tree.check_limits(idle_w)
            except ValueError as exc:
                problems.append(("facility.topology.limits", _limit_shown(facility.topology), str(exc)))
    fl = facility.failures
    if fl is not None:
        for kind in ("node", "pdu", "feed"):
            if getattr(fl, kind) is not None and facility.topology is None:
                problems.append((f"facility.failures.{kind}", getattr(fl, kind).model_dump(),
                                 f"{kind} failures need facility.topology (which GPUs a {kind} feeds)"))
        if fl.scheduled and facility.topology is None:
            problems.append(("facility.failures.scheduled", [s.element for s in fl.scheduled],
                             "scheduled outages name tree elements, so they need facility.topology"))
        elif tree is not None:
            names = set(tree.names)
            for i, outage in enumerate(fl.scheduled):
                if outage.element not in names:
                    problems.append((f"facility.failures.scheduled.{i}.element", outage.element,
                                     f"an element of the power tree ({_names_by_kind(tree)})"))
    if facility.battery is not None and battery is None:
        problems.append(("facility.battery", facility.battery.model_dump(mode="json"),
                         "battery dispatch needs a battery: add supply.battery"))
    elif facility.battery is not None:
        lo, hi = facility.battery.min_soc, facility.battery.max_soc
        if not lo <= battery.initial_soc <= hi:
            problems.append(("supply.battery.initial_soc", battery.initial_soc,
                             f"a state of charge within facility.battery's [min_soc, max_soc] = [{lo:g}, {hi:g}]"))
    if facility.topology is None and facility.safety and "safety" in facility.model_fields_set:
        problems.append(("facility.safety", facility.safety, "the safety layer enforces facility.topology's limits; "
                                                             "add a topology or leave safety out"))
    return problems


def _names_by_kind(tree: PowerTree) -> str:
    """``node0 … node7, rack0 … rack1, feed0``: the element names, one span per kind."""
    spans = []
    for kind in dict.fromkeys(tree.kinds):
        names = [n for n, k in zip(tree.names, tree.kinds) if k == kind]
        spans.append(names[0] if len(names) == 1 else f"{names[0]} … {names[-1]}")
    return ", ".join(spans)


def _limit_shown(topology: TopologyConfig) -> Any:
    return str(topology.graphml) if topology.graphml is not None else topology.limits.model_dump()


def parse_facility(data: Any, cluster: ClusterConfig, battery: BatteryConfig | None = None,
                   path: Path | None = None, base_dir: Path | None = None) -> FacilityConfig:
    """Validate a ``facility`` mapping and check it against the cluster and battery; report every problem.

    Raises:
        ScenarioError: Naming each field as ``facility.<...>``, its value and what is allowed.
    """
    from dcsim.config import _problems  # defined after Scenario, which imports this module

    if not isinstance(data, dict):
        raise ScenarioError(path, [("facility", data, "a mapping of parts (topology, cooling, failures, battery)")])
    if base_dir is None and path is not None:
        base_dir = Path(path).resolve().parent
    from dcsim.config import _problems  # defined after Scenario (see the module docstring)

    try:
        facility = FacilityConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = _problems(exc, data, root=FacilityConfig)
        raise ScenarioError(path, [("facility." + f if f else "facility", v, m) for f, v, m in problems]) from None
    problems = facility_problems(facility, cluster, battery)
    if problems:
        raise ScenarioError(path, problems)
    return facility
