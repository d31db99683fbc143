"""Assembles a scenario's supply side into step series: renewable power, grid carbon intensity and price."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dcsim.config import Scenario, SeriesSource, SupplyConfig
from dcsim.dataquality import series_record
from dcsim.errors import ScenarioError, SeriesRangeError
from dcsim.timeseries import StepSeries


@dataclass(frozen=True)
class SupplyInputs:
    """Everything time-varying on the supply side, aligned to the scenario's t = 0.

    Attributes:
        renewable_w: Total renewable power (solar + wind + power trace), W.
        carbon_g_per_kwh: Grid carbon intensity.
        grid_price_usd_per_mwh: Grid energy price.
        export_price_usd_per_mwh: Price paid for grid export (``facility.battery.export_price_usd_per_mwh``), or
            None without export; its changes are supply events.
        components: The individual renewable series by name (for plots and tables).
        data_quality: One record per series read from a file, by scenario field (e.g.
            ``"supply.grid.carbon_g_per_kwh"``): source, rows read, dropped, filled, clipped, the
            longest gap and warnings (:func:`dcsim.dataquality.series_record`).
    """

    renewable_w: StepSeries
    carbon_g_per_kwh: StepSeries
    grid_price_usd_per_mwh: StepSeries
    components: dict[str, StepSeries]
    data_quality: dict[str, dict] = field(default_factory=dict)
    export_price_usd_per_mwh: StepSeries | None = None

    def change_times(self, horizon_s: float) -> np.ndarray:
        """Sorted unique times in ``[0, horizon_s)`` at which any supply series may change."""
        series = (self.renewable_w, self.carbon_g_per_kwh, self.grid_price_usd_per_mwh)
        if self.export_price_usd_per_mwh is not None:
            series += (self.export_price_usd_per_mwh,)
        parts = [s.change_times(0.0, horizon_s) for s in series]
        return np.unique(np.concatenate(parts + [np.array([0.0])]))


def _sum_series(name: str, series: list[StepSeries], horizon_s: float) -> StepSeries:
    """Sum step series on the union of their change times over ``[0, horizon_s)``."""
    if not series:
        return StepSeries.constant(name, 0.0)
    if len(series) == 1:
        return series[0]
    times = np.unique(np.concatenate([s.change_times(0.0, horizon_s) for s in series] + [np.array([0.0])]))
    values = np.sum([s.value_at(times) for s in series], axis=0)
    return StepSeries(name, times, values, end_s=horizon_s, fill="error")


def _grid_series(name: str, source: SeriesSource, kind: str, start: pd.Timestamp, cfg: SupplyConfig,
                 quality: dict[str, dict], field_name: str) -> StepSeries:
    if source.constant is not None:
        return StepSeries.constant(name, source.constant)
    from dcsim import gridseries

    loader = gridseries.load_carbon_intensity if kind == "carbon" else gridseries.load_price
    data = loader(source.path, fmt=source.format, column=source.column, gap_fill=cfg.gap_fill,
                  gap_warning_h=cfg.gap_warning_h)
    quality[field_name] = series_record(data.attrs)
    data.index = data.index + pd.Timedelta(seconds=source.time_shift_s)
    return StepSeries.from_pandas(name, data, start, fill=cfg.fill)


#: Modelled renewable power is rounded to this many decimals of a watt (1 mW).
POWER_DECIMALS = 3


def _cpu_independent(power_w: pd.Series) -> pd.Series:
    """Modelled power rounded to :data:`POWER_DECIMALS` decimals of a watt, so that a scenario gives the same run
    on every CPU. pvlib and windpowerlib compute with NumPy's ``exp``/``log``/``cos``, whose vectorised (AVX-512) and scalar
    kernels differ in the last bit; the simulation turns such a bit into a different event (lesson 2's Kelly column
    moved from 350.8 to 348.2 jobs on a CPU without AVX-512). A last-bit difference (~1e-12 W at 10 kW) changes the
    rounded value only when it straddles a 1 mW boundary, about once in 10⁹ values."""
    return power_w.round(POWER_DECIMALS)


def build_supply(scenario: Scenario) -> SupplyInputs:
    """Build the supply series a run needs (reads weather and trace files named in the scenario)."""
    cfg = scenario.supply
    start = pd.Timestamp(scenario.start)
    horizon = scenario.horizon_s
    components: dict[str, StepSeries] = {}
    quality: dict[str, dict] = {}
    gaps = {"gap_fill": cfg.gap_fill, "gap_warning_h": cfg.gap_warning_h}
    if cfg.solar is not None:
        from dcsim import renewables

        s = cfg.solar
        n_steps = int(np.ceil(horizon / s.resolution_s)) + 1
        times = pd.date_range(start, periods=n_steps, freq=pd.Timedelta(seconds=s.resolution_s))
        # pvlib gives instantaneous power at each timestamp; we hold the value at the step's midpoint.
        mid = times + pd.Timedelta(seconds=s.resolution_s / 2)
        power = renewables.solar_power_w(
            mid, latitude=s.latitude, longitude=s.longitude, capacity_w=s.capacity_w,
            weather_epw=s.weather_epw, tilt_deg=s.tilt_deg, azimuth_deg=s.azimuth_deg, altitude_m=s.altitude_m,
        )
        if s.weather_epw is not None:
            quality["supply.solar.weather_epw"] = series_record(power.attrs)
        power.index = times
        power = _cpu_independent(power)
        components["solar_w"] = StepSeries.from_pandas("solar_w", power, start, fill="error", period_s=s.resolution_s)
    if cfg.wind is not None:
        from dcsim import renewables

        w = cfg.wind
        speed = renewables.load_wind_speed(w.wind_speed_file, fmt=w.format, **gaps)
        quality["supply.wind.wind_speed_file"] = series_record(speed.attrs)
        speed.index = speed.index + pd.Timedelta(seconds=w.time_shift_s)
        try:
            power = renewables.wind_power_w(
                speed, turbine_type=w.turbine_type, hub_height_m=w.hub_height_m, n_turbines=w.n_turbines,
                measurement_height_m=w.measurement_height_m,
            )
        except ValueError as exc:
            raise ScenarioError(None, [("supply.wind.turbine_type", w.turbine_type, str(exc))]) from None
        components["wind_w"] = StepSeries.from_pandas("wind_w", _cpu_independent(power), start, fill=cfg.fill)
    if cfg.power_trace is not None:
        from dcsim import renewables

        p = cfg.power_trace
        power = renewables.load_power_csv(p.path, time_column=p.time_column, power_column=p.power_column, **gaps)
        quality["supply.power_trace.path"] = series_record(power.attrs)
        power = power * p.scale
        components["power_trace_w"] = StepSeries.from_pandas("power_trace_w", power, start, fill=cfg.fill)
    renewable = _sum_series("renewable_w", list(components.values()), horizon)
    carbon = _grid_series("carbon_g_per_kwh", cfg.grid.carbon_g_per_kwh, "carbon", start, cfg, quality,
                          "supply.grid.carbon_g_per_kwh")
    price = _grid_series("grid_price_usd_per_mwh", cfg.grid.price_usd_per_mwh, "price", start, cfg, quality,
                         "supply.grid.price_usd_per_mwh")
    export = None
    dispatch = scenario.facility.battery
    if dispatch is not None and dispatch.export_price_usd_per_mwh is not None:
        export = _grid_series("export_price_usd_per_mwh", dispatch.export_price_usd_per_mwh, "price", start, cfg,
                              quality, "facility.battery.export_price_usd_per_mwh")
    fields = {"renewable_w": "supply (solar/wind/power_trace)", "carbon_g_per_kwh": "supply.grid.carbon_g_per_kwh",
              "grid_price_usd_per_mwh": "supply.grid.price_usd_per_mwh",
              "export_price_usd_per_mwh": "facility.battery.export_price_usd_per_mwh"}
    checks = [(fields.get(s.name, f"supply ({s.name})"), s)
              for s in (carbon, price, *components.values(), *([export] if export is not None else []))]
    for field, series in checks:
        try:
            series.change_times(0.0, horizon)  # fail now, before the run, if a series does not cover it
        except SeriesRangeError as exc:
            raise ScenarioError(None, [(field, f"{series.start_s:.0f}..{series.end_s:.0f} s", str(exc))]) from None
    return SupplyInputs(renewable, carbon, price, components, quality, export)
