"""Renewable power in watts from weather: solar through pvlib, wind through windpowerlib, or a power trace.

Every function returns a float64 ``pandas.Series`` of power in W (>= 0, positive = generation) on a
tz-aware UTC ``DatetimeIndex``. Times given without a timezone are read as UTC.

* :func:`solar_power_w`: clear-sky (pvlib ``Location.get_clearsky``, Ineichen with the Linke
  turbidity table shipped in pvlib) or an EnergyPlus weather file (``pvlib.iotools.read_epw``),
  transposed to the plane of array (``pvlib.irradiance.get_total_irradiance``), through a
  PVWatts DC model (``pvlib.pvsystem.pvwatts_dc``) with cell temperature from
  ``pvlib.temperature.sapm_cell`` when the weather has air temperature and wind.
* :func:`wind_power_w`: a windpowerlib turbine power curve (``windpowerlib.WindTurbine``,
  ``windpowerlib.power_output.power_curve``), with the wind speed carried to hub height by
  windpowerlib's Hellman or logarithmic profile when it was measured at another height.
* :func:`load_wind_speed`, :func:`load_power_csv`: read wind speed (m/s) and power (W) traces.

Assumptions and their reasons are in ``docs/supply-data.md``.
"""
from __future__ import annotations

import difflib
import functools
import re
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from dcsim import dataquality
from dcsim.dataquality import DEFAULT_GAP_WARNING_H
from dcsim.errors import TraceError
from dcsim.gridseries import (
    _check_non_negative,
    _check_range as _check_trace_range,
    _csv_value_column,
    _finish,
    _parse_times,
    _parse_values,
    _read_csv,
    _require_columns,
    load_series_csv,
)

SOLAR_NAME = "solar_power_w"
WIND_NAME = "wind_power_w"
WIND_SPEED_NAME = "wind_speed_m_s"
POWER_NAME = "power_w"

WIND_SPEED_FORMATS: tuple[str, ...] = ("nrel_wtk", "csv")

#: Ground reflectance used when the weather file gives none (pvlib's own default).
DEFAULT_ALBEDO = 0.25
#: Cell temperature assumed without weather, degC (the PVWatts reference temperature).
REFERENCE_CELL_TEMPERATURE_C = 25.0
#: SAPM thermal parameters: an open-rack glass/polymer module, the common utility-scale mount.
_SAPM_THERMAL = "open_rack_glass_polymer"

_WTK_SPEED = re.compile(r"^wind speed at (\d+(?:\.\d+)?)\s*m \(m/s\)$", re.IGNORECASE)
_WTK_ANY_SPEED = re.compile(r"^wind speed at (\d+(?:\.\d+)?)\s*m\b", re.IGNORECASE)

#: Wind speeds beyond this are not data (the strongest gusts measured are ~113 m/s), m/s.
WIND_SPEED_MAX_M_S = 100.0
#: Power-trace values beyond this are not data (a petawatt is ~50x the world's generating capacity), W.
POWER_MAX_W = 1.0e15
_WTK_TIME_COLUMNS = ("Year", "Month", "Day", "Hour", "Minute")


# --------------------------------------------------------------------------- solar


def solar_power_w(
    times: pd.DatetimeIndex,
    latitude: float,
    longitude: float,
    capacity_w: float,
    weather_epw: Path | str | None = None,
    tilt_deg: float | None = None,
    azimuth_deg: float = 180.0,
    altitude_m: float = 0.0,
    system_efficiency: float = 0.86,
    temperature_coeff_per_c: float = -0.004,
) -> pd.Series:
    """AC-side power of a fixed-tilt PV array at the given instants, in W.

    Without weather the sky is clear (pvlib Ineichen clear-sky model) and the cells sit at 25 degC:
    an upper envelope, not a forecast. With ``weather_epw`` the irradiance, air temperature, wind
    and albedo come from an EnergyPlus EPW file. EPW files of typical years (TMY/TMYx) stitch months
    from different years, so their own years are ignored: each requested time is converted to the
    file's local standard time (its ``TZ`` field, no daylight saving) and looked up by
    month/day/hour, which replays the typical year on any date. 29 February uses 28 February. An EPW
    record is the mean over its hour, so every time within that hour gets the same power, computed
    with the sun's position at the middle of the hour.

    Args:
        times: Instants to evaluate (tz-aware, or naive meaning UTC).
        latitude: Site latitude in degrees north, in [-90, 90].
        longitude: Site longitude in degrees east, in [-180, 180].
        capacity_w: DC nameplate in W: the array's output at 1000 W/m2 plane-of-array irradiance and
            25 degC cells, before ``system_efficiency``.
        weather_epw: EPW weather file, or None for clear sky.
        tilt_deg: Panel tilt from horizontal in degrees, [0, 90]; None means ``abs(latitude)``.
        azimuth_deg: Direction the panels face, degrees clockwise from north (180 = south; use 0
            in the southern hemisphere).
        altitude_m: Site altitude in m above sea level (clear-sky model and solar position).
        system_efficiency: Fraction of DC power that reaches the bus (inverter, wiring, soiling,
            mismatch), in (0, 1]. 0.86 is PVWatts' default 14 % loss.
        temperature_coeff_per_c: Power temperature coefficient in 1/degC (negative: hotter cells
            make less power).

    Returns:
        Series named ``"solar_power_w"`` in W, >= 0, indexed by ``times`` in UTC.

    Raises:
        ValueError: A parameter is out of range (the message names it and the allowed range).
        TraceError: The weather file is missing or unreadable, or has implausible values.

    ``attrs`` of the result record the weather's data quality (:func:`epw_quality`; clear sky has
    none) and ``clipped_values``, the instants where the PV model gave a negative power, set to 0.
    """
    times_utc = _utc_index(times, "times")
    _check_range("latitude", latitude, -90.0, 90.0)
    _check_range("longitude", longitude, -180.0, 180.0)
    _check_range("capacity_w", capacity_w, 0.0, np.inf)
    tilt = abs(float(latitude)) if tilt_deg is None else float(tilt_deg)
    _check_range("tilt_deg", tilt, 0.0, 90.0)
    _check_range("azimuth_deg", azimuth_deg, 0.0, 360.0)
    _check_range("altitude_m", altitude_m, -500.0, 9000.0)
    _check_range("system_efficiency", system_efficiency, 0.0, 1.0, low_open=True)
    _check_range("temperature_coeff_per_c", temperature_coeff_per_c, -0.05, 0.05)
    if times_utc.size == 0:
        return pd.Series([], index=times_utc, name=SOLAR_NAME, dtype="float64")

    import pvlib  # imported here: pvlib is heavy and only supply needs it

    location = pvlib.location.Location(latitude, longitude, tz="UTC", altitude=altitude_m)
    with warnings.catch_warnings():
        # pvlib 0.16 still calls DatetimeIndex.dayofyear, deprecated in pandas 3; harmless noise.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pvlib")
        power = _solar_dc_w(
            location, times_utc, weather_epw, latitude, longitude, tilt, azimuth_deg, capacity_w,
            temperature_coeff_per_c,
        ) * system_efficiency
        attrs = {"source": "pvlib clear sky (Ineichen)", "format": "clear_sky", "warnings": []}
        if weather_epw is not None:
            attrs = {"source": str(weather_epw), "format": "epw", **epw_quality(Path(weather_epw))}
            for message in attrs["warnings"]:
                warnings.warn(message, dataquality.DataQualityWarning, stacklevel=2)
    negative = power < 0.0
    attrs["clipped_values"] = int(negative.sum())
    out = pd.Series(np.where(negative, 0.0, power), index=times_utc, name=SOLAR_NAME, dtype="float64")
    out.attrs.update(attrs)
    return out


def _solar_dc_w(
    location,
    times_utc: pd.DatetimeIndex,
    weather_epw: Path | str | None,
    latitude: float,
    longitude: float,
    tilt: float,
    azimuth_deg: float,
    capacity_w: float,
    temperature_coeff_per_c: float,
) -> np.ndarray:
    """DC power in W at ``times_utc`` (before system losses), clear sky or from an EPW file."""
    if weather_epw is None:
        solpos = location.get_solarposition(times_utc)
        sky = location.get_clearsky(times_utc, model="ineichen", solar_position=solpos)
        return _pv_dc_w(
            solpos, sky["ghi"], sky["dni"], sky["dhi"], DEFAULT_ALBEDO, None, None,
            tilt, azimuth_deg, capacity_w, temperature_coeff_per_c,
        )
    return _solar_from_epw(
        Path(weather_epw), times_utc, location, latitude, longitude,
        tilt, azimuth_deg, capacity_w, temperature_coeff_per_c,
    )


def _pv_dc_w(
    solpos: pd.DataFrame,
    ghi: pd.Series,
    dni: pd.Series,
    dhi: pd.Series,
    albedo: float | pd.Series,
    temp_air_c: pd.Series | None,
    wind_speed_m_s: pd.Series | None,
    tilt_deg: float,
    azimuth_deg: float,
    capacity_w: float,
    gamma_per_c: float,
) -> np.ndarray:
    """Plane-of-array irradiance, cell temperature and PVWatts DC power (W) on ``solpos``'s index."""
    import pvlib

    zenith = solpos["apparent_zenith"]
    # With the sun below the horizon no beam reaches the panel, but a tilted plane's incidence
    # angle can still be < 90 deg there; hourly weather records near sunrise would leak beam.
    dni = dni.where(zenith < 90.0, 0.0)
    poa = pvlib.irradiance.get_total_irradiance(
        surface_tilt=tilt_deg,
        surface_azimuth=azimuth_deg,
        solar_zenith=zenith,
        solar_azimuth=solpos["azimuth"],
        dni=dni,
        ghi=ghi,
        dhi=dhi,
        albedo=albedo,
        model="isotropic",
    )
    poa_global = poa["poa_global"].clip(lower=0.0).fillna(0.0)
    if temp_air_c is None or wind_speed_m_s is None:
        temp_cell = REFERENCE_CELL_TEMPERATURE_C
    else:
        params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"][_SAPM_THERMAL]
        temp_cell = pvlib.temperature.sapm_cell(poa_global, temp_air_c, wind_speed_m_s, **params)
    dc = pvlib.pvsystem.pvwatts_dc(
        effective_irradiance=poa_global,
        temp_cell=temp_cell,
        pdc0=float(capacity_w),
        gamma_pdc=float(gamma_per_c),
        temp_ref=REFERENCE_CELL_TEMPERATURE_C,
    )
    return np.asarray(dc, dtype=float)


def _solar_from_epw(
    path: Path,
    times_utc: pd.DatetimeIndex,
    location,
    latitude: float,
    longitude: float,
    tilt_deg: float,
    azimuth_deg: float,
    capacity_w: float,
    gamma_per_c: float,
) -> np.ndarray:
    weather, meta = _read_epw(path)
    if abs(float(meta["latitude"]) - latitude) > 1.0 or abs(float(meta["longitude"]) - longitude) > 1.0:
        warnings.warn(
            f"{path}: weather file is for ({meta['latitude']}, {meta['longitude']}) but the site is at "
            f"({latitude}, {longitude}); the irradiance will not match the sun's position there",
            stacklevel=4,
        )
    epw_tz = weather.index.tz
    hour_start = times_utc.tz_convert(epw_tz).floor("h")
    # Each distinct hour is computed once, however finely the caller samples it.
    _, first, which = np.unique(hour_start.asi8, return_index=True, return_inverse=True)
    hours = hour_start[first]
    keys = np.asarray(hours.month * 10000 + hours.day * 100 + hours.hour)
    epw_keys = pd.Index(weather.index.month * 10000 + weather.index.day * 100 + weather.index.hour)
    if not epw_keys.is_unique:
        raise TraceError(path, "records", "a month/day/hour appears twice", "one year of hourly records")
    pos = epw_keys.get_indexer(keys)
    # Typical years have no 29 February; replay 28 February then.
    leap = (pos < 0) & np.asarray((hours.month == 2) & (hours.day == 29))
    pos[leap] = epw_keys.get_indexer(keys[leap] - 100)
    if (pos < 0).any():
        missing = hours[pos < 0][0]
        raise TraceError(
            path, "records", f"no record for {missing:%m-%d %H}:00 local", "a full year of hourly records (8760)"
        )
    rows = weather.iloc[pos]
    mid_utc = (hours + pd.Timedelta(minutes=30)).tz_convert("UTC")
    solpos = location.get_solarposition(mid_utc)
    albedo = rows["albedo"].to_numpy(dtype=float) if "albedo" in rows else np.full(len(rows), np.nan)
    albedo = np.where((albedo > 0.0) & (albedo < 1.0), albedo, DEFAULT_ALBEDO)

    def on_mid(column: str) -> pd.Series:
        return pd.Series(rows[column].to_numpy(dtype=float), index=mid_utc)

    dc_w = _pv_dc_w(
        solpos, on_mid("ghi"), on_mid("dni"), on_mid("dhi"), pd.Series(albedo, index=mid_utc),
        on_mid("temp_air"), on_mid("wind_speed"), tilt_deg, azimuth_deg, capacity_w, gamma_per_c,
    )
    return dc_w[which]


@functools.lru_cache(maxsize=8)
def _read_epw_cached(path_str: str, mtime_ns: int) -> tuple[pd.DataFrame, dict]:
    import pvlib

    return pvlib.iotools.read_epw(path_str)


def _read_epw(path: Path) -> tuple[pd.DataFrame, dict]:
    """Read and sanity-check an EPW file (cached per path and modification time)."""
    if not path.is_file():
        raise TraceError(path, "file", str(path), "an existing EnergyPlus weather (.epw) file")
    first = _first_line(path, what="an EnergyPlus weather (.epw) file")
    if not first.upper().startswith("LOCATION,"):
        raise TraceError(path, "not an EPW file: line 1", first[:60],
                         "an EnergyPlus weather (.epw) file, whose first line starts with 'LOCATION,'")
    try:
        weather, meta = _read_epw_cached(str(path), path.stat().st_mtime_ns)
    except Exception as exc:  # pvlib surfaces pandas/IO errors of many kinds
        raise TraceError(path, "file", f"{type(exc).__name__}: {exc}", "an EnergyPlus weather (.epw) file") from exc
    checks = {
        "ghi": (0.0, 1500.0, "W/m2"),
        "dni": (0.0, 1500.0, "W/m2"),
        "dhi": (0.0, 1000.0, "W/m2"),
        "temp_air": (-90.0, 70.0, "degC"),
        "wind_speed": (0.0, 60.0, "m/s"),
    }
    for column, (low, high, unit) in checks.items():
        values = weather[column].to_numpy(dtype=float)
        bad = ~((values >= low) & (values <= high))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise TraceError(
                path,
                f"field {column!r} at data record {i + 1} (line {i + 9}, {weather.index[i]})",
                float(values[i]),
                f"a value in [{low:g}, {high:g}] {unit} (EPW missing-value codes such as 9999 are not filled in)",
            )
    return weather, meta


def epw_quality(path: Path) -> dict:
    """Data quality of an EPW year: albedo fills and how it compares with pvlib's clear sky at its site.

    The file's year is set against the Ineichen clear sky (pvlib's Linke turbidity climatology) at the
    location the file states, hour by hour (sun at each record's mid-hour):

    * ``annual_yield_kwh_per_kw``: AC energy of 1 kW DC, tilted at the latitude toward the equator,
      with the default 0.86 system efficiency, over the file's year; ``clear_sky_yield_kwh_per_kw``
      the same under clear sky; ``yield_ratio`` the first over the second (typical-year files give
      about 0.7-0.85).
    * ``clear_sky_day_fraction``: share of days whose GHI is at least
      :data:`dcsim.dataquality.CLEAR_DAY_GHI_FRACTION` of the clear-sky day's.

    A ratio above :data:`dcsim.dataquality.SOLAR_YIELD_RATIO_WARN` or a clear-day fraction above
    :data:`dcsim.dataquality.SOLAR_CLEAR_DAYS_WARN` adds a warning (e.g. "Climate Normals" files whose
    irradiance is near clear sky every day). Cached per path and modification time.

    Returns:
        A dict for the ``data_quality`` report, ``warnings`` included (not emitted here).
    """
    _read_epw(path)  # refuses a missing or malformed file with its own message before the cache is asked
    return dict(_epw_quality_cached(str(path), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _epw_quality_cached(path_str: str, mtime_ns: int) -> tuple:
    import pvlib

    path = Path(path_str)
    weather, meta = _read_epw(path)
    lat, lon = float(meta["latitude"]), float(meta["longitude"])
    location = pvlib.location.Location(lat, lon, tz="UTC", altitude=float(meta.get("altitude", 0.0) or 0.0))
    mid_utc = (weather.index + pd.Timedelta(minutes=30)).tz_convert("UTC")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pvlib")
        solpos = location.get_solarposition(mid_utc)
        sky = location.get_clearsky(mid_utc, model="ineichen", solar_position=solpos)
        tilt, azimuth = abs(lat), (180.0 if lat >= 0 else 0.0)

        def on_mid(values) -> pd.Series:
            return pd.Series(np.asarray(values, dtype=float), index=mid_utc)

        albedo = weather["albedo"].to_numpy(dtype=float) if "albedo" in weather else np.full(len(weather), np.nan)
        filled_albedo = int((~((albedo > 0.0) & (albedo < 1.0))).sum())
        albedo = np.where((albedo > 0.0) & (albedo < 1.0), albedo, DEFAULT_ALBEDO)
        dc_file = _pv_dc_w(solpos, on_mid(weather["ghi"]), on_mid(weather["dni"]), on_mid(weather["dhi"]),
                           on_mid(albedo), on_mid(weather["temp_air"]), on_mid(weather["wind_speed"]),
                           tilt, azimuth, 1000.0, -0.004)
        dc_clear = _pv_dc_w(solpos, sky["ghi"], sky["dni"], sky["dhi"], DEFAULT_ALBEDO, None, None,
                            tilt, azimuth, 1000.0, -0.004)
    eff = 0.86
    yield_file = float(np.clip(dc_file, 0, None).sum()) * eff / 1000.0  # Wh per W = kWh per kW
    yield_clear = float(np.clip(dc_clear, 0, None).sum()) * eff / 1000.0
    day = weather.index.floor("D")
    ghi_day = pd.Series(weather["ghi"].to_numpy(dtype=float), index=day).groupby(level=0).sum()
    clear_day = pd.Series(sky["ghi"].to_numpy(dtype=float), index=day).groupby(level=0).sum()
    lit = clear_day > 0
    clear_days = float((ghi_day[lit] >= dataquality.CLEAR_DAY_GHI_FRACTION * clear_day[lit]).mean()) if lit.any() else 0.0
    ratio = yield_file / yield_clear if yield_clear > 0 else float("nan")
    out = {"rows_read": int(len(weather)), "filled_albedo_hours": filled_albedo,
           "annual_yield_kwh_per_kw": round(yield_file, 1), "clear_sky_yield_kwh_per_kw": round(yield_clear, 1),
           "yield_ratio": round(ratio, 4), "clear_sky_day_fraction": round(clear_days, 4), "warnings": []}
    if ratio > dataquality.SOLAR_YIELD_RATIO_WARN or clear_days > dataquality.SOLAR_CLEAR_DAYS_WARN:
        out["warnings"].append(
            f"{path}: the weather is near clear sky: annual PV yield {yield_file:.0f} kWh/kW is {ratio:.0%} of "
            f"pvlib's clear-sky {yield_clear:.0f} kWh/kW at ({lat}, {lon}) and {clear_days:.0%} of days reach "
            f"{dataquality.CLEAR_DAY_GHI_FRACTION:.0%} of clear-sky GHI (a typical-year file gives about 70-85 % "
            f"and far fewer clear days); is it a typical year (TMY) and not a climate-normals or clear-sky file?")
    return tuple(out.items())


# --------------------------------------------------------------------------- wind


def wind_power_w(
    wind_speed_m_s: pd.Series,
    turbine_type: str = "E-101/3050",
    hub_height_m: float = 100.0,
    n_turbines: int = 1,
    measurement_height_m: float = 100.0,
    height_profile: Literal["hellman", "logarithmic"] = "hellman",
    roughness_length_m: float | None = None,
) -> pd.Series:
    """Electrical power of a group of identical wind turbines from a wind-speed series, in W.

    Power follows the turbine's power curve from windpowerlib's turbine library, interpolated
    linearly between its points, 0 below its first and above its last wind speed (cut-out), at the
    standard air density the curve was measured at (no density correction). Wake losses between
    turbines are ignored: the group makes ``n_turbines`` times one turbine's power.

    Args:
        wind_speed_m_s: Wind speed in m/s (>= 0; NaN gives NaN power) on a DatetimeIndex.
        turbine_type: A windpowerlib turbine type with a power curve, e.g. ``"E-101/3050"``.
        hub_height_m: Hub height in m.
        n_turbines: Number of turbines, >= 1.
        measurement_height_m: Height in m at which the wind speed was measured. If it differs from
            the hub height the speed is carried up with ``height_profile``.
        height_profile: ``"hellman"`` (power law; exponent 1/7 without a roughness length, else
            1/ln(h/z0)) or ``"logarithmic"`` (log law; needs ``roughness_length_m``).
        roughness_length_m: Surface roughness length z0 in m (about 0.0002 open sea, 0.03 open
            farmland, 0.1 crops, 1 forest).

    Returns:
        Series named ``"wind_power_w"`` in W on the input's index converted to UTC.

    Raises:
        ValueError: Unknown turbine type (the message lists valid ones), a negative wind speed,
            or an out-of-range parameter.
    """
    if not isinstance(wind_speed_m_s, pd.Series):
        raise ValueError(f"wind_speed_m_s: expected a pandas Series, got {type(wind_speed_m_s).__name__}")
    index = _utc_index(wind_speed_m_s.index, "wind_speed_m_s.index")
    speed = wind_speed_m_s.to_numpy(dtype=float)
    if np.any(speed < 0) or np.any(np.isinf(speed)):
        bad = speed[(speed < 0) | np.isinf(speed)][0]
        raise ValueError(f"wind_speed_m_s: got {bad!r} m/s; expected finite speeds >= 0 (NaN allowed)")
    _check_range("hub_height_m", hub_height_m, 0.0, 500.0, low_open=True)
    _check_range("measurement_height_m", measurement_height_m, 0.0, 500.0, low_open=True)
    if int(n_turbines) != n_turbines or n_turbines < 1:
        raise ValueError(f"n_turbines: got {n_turbines!r}; expected an integer >= 1")
    if height_profile not in ("hellman", "logarithmic"):
        raise ValueError(f"height_profile: got {height_profile!r}; expected 'hellman' or 'logarithmic'")
    if roughness_length_m is not None:
        _check_range("roughness_length_m", roughness_length_m, 0.0, min(hub_height_m, measurement_height_m),
                     low_open=True)
    curve_speeds, curve_power_w, _ = turbine_power_curve(turbine_type)

    import windpowerlib

    if measurement_height_m != hub_height_m:
        if height_profile == "hellman":
            speed = windpowerlib.wind_speed.hellman(
                speed, measurement_height_m, hub_height_m, roughness_length=roughness_length_m
            )
        else:
            if roughness_length_m is None:
                raise ValueError("roughness_length_m: the logarithmic profile needs a roughness length in m")
            speed = windpowerlib.wind_speed.logarithmic_profile(
                speed, measurement_height_m, hub_height_m, roughness_length_m
            )
    power = windpowerlib.power_output.power_curve(np.asarray(speed, dtype=float), curve_speeds, curve_power_w)
    return pd.Series(np.asarray(power, dtype=float) * int(n_turbines), index=index, name=WIND_NAME, dtype="float64")


@functools.lru_cache(maxsize=32)
def turbine_power_curve(turbine_type: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Power curve of a windpowerlib turbine type.

    Args:
        turbine_type: Turbine type as listed by ``windpowerlib.get_turbine_types()``.

    Returns:
        ``(wind_speeds_m_s, power_w, nominal_power_w)``; the arrays are read-only.

    Raises:
        ValueError: Unknown type, or a type without a power curve; the message lists valid types.
    """
    import windpowerlib

    with warnings.catch_warnings():
        # windpowerlib 0.2.2 calls DataFrame.dropna(inplace=True), deprecated in pandas 3.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"windpowerlib")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"windpowerlib")
        types = windpowerlib.get_turbine_types(print_out=False)
        with_curve = sorted(types.loc[types["has_power_curve"].astype(bool), "turbine_type"].astype(str))
        if turbine_type not in with_curve:
            close = difflib.get_close_matches(str(turbine_type), with_curve, n=3, cutoff=0.5)
            hint = f"did you mean {close}? " if close else ""
            raise ValueError(
                f"turbine_type: got {turbine_type!r}; {hint}expected a windpowerlib turbine type with a "
                f"power curve, e.g. {with_curve[:6]} ({len(with_curve)} in all; "
                f"see windpowerlib.get_turbine_types())"
            )
        turbine = windpowerlib.WindTurbine(turbine_type=turbine_type, hub_height=100.0)
    curve = turbine.power_curve.sort_values("wind_speed")
    speeds = curve["wind_speed"].to_numpy(dtype=float).copy()
    power_w = curve["value"].to_numpy(dtype=float).copy()
    speeds.flags.writeable = False
    power_w.flags.writeable = False
    return speeds, power_w, float(turbine.nominal_power)


# --------------------------------------------------------------------------- trace loaders


def load_wind_speed(
    path: str | Path,
    fmt: str = "auto",
    column: str | None = None,
    *,
    gap_fill: str = "hold",
    gap_warning_h: float | None = DEFAULT_GAP_WARNING_H,
) -> pd.Series:
    """Load a wind-speed series in m/s.

    Formats:
        ``nrel_wtk``: NREL WIND Toolkit CSV. Line 1 is site metadata as key,value pairs
        (``SiteID,...,Data Timezone,0,...,Longitude,...,Latitude,...``); line 2 the header
        ``Year,Month,Day,Hour,Minute,wind speed at 100m (m/s)``. Times are in the ``Data Timezone``
        offset (hours from UTC) and are converted to UTC. ``attrs`` gets ``height_m``,
        ``latitude`` and ``longitude``.
        ``csv``: a ``time`` column (ISO 8601, naive = UTC) and a speed column, by default
        ``wind_speed_m_s`` or ``wind_speed``.

    Args:
        path: File to read.
        fmt: ``"auto"`` (an ``nrel_wtk`` file starts with ``SiteID``), ``"nrel_wtk"`` or ``"csv"``.
        column: Speed column to read; for ``nrel_wtk`` needed only when the file has several heights.
        gap_fill: ``"hold"``, ``"linear"`` or ``"error"`` for gaps in the data.
        gap_warning_h: Warn when the longest gap is longer than this many hours (None: never).

    Returns:
        Series named ``"wind_speed_m_s"`` (m/s, >= 0) on a sorted UTC index; NaN rows dropped and
        counted in ``attrs["dropped_nan_rows"]``; the data-quality record of
        :func:`dcsim.gridseries.load_carbon_intensity` in ``attrs``.

    Raises:
        TraceError: The file cannot be read as the format, or holds a bad time or a speed outside
            [0, 100] m/s, or its speed column is in another unit (e.g. km/h).
    """
    path = Path(path)
    if fmt != "auto" and fmt not in WIND_SPEED_FORMATS:
        raise TraceError(path, "fmt", fmt, "one of " + ", ".join(repr(f) for f in ("auto", *WIND_SPEED_FORMATS)))
    if fmt == "auto":
        fmt = "nrel_wtk" if _first_line(path).startswith("SiteID") else "csv"
    if fmt == "nrel_wtk":
        return _load_nrel_wtk(path, column, gap_fill, gap_warning_h)

    df = _read_csv(path)
    _require_columns(path, df, ["time"], fmt)
    if column is None and "wind_speed_m_s" not in df.columns and "wind_speed" in df.columns:
        column = "wind_speed"
    value_col = _csv_value_column(path, df.columns, column, WIND_SPEED_NAME)
    dataquality.check_unit(path, value_col, "m/s", WIND_SPEED_NAME)
    times = _parse_times(path, df["time"], "time")
    values = _parse_values(path, df[value_col], value_col)
    _check_non_negative(path, df[value_col], values, value_col, "a wind speed >= 0 m/s")
    _check_trace_range(path, df[value_col], values, value_col, (0.0, WIND_SPEED_MAX_M_S), "m/s")
    return _finish(path, times, values, df.index, WIND_SPEED_NAME, fmt, value_col, "time",
                   gap_fill=gap_fill, gap_warning_h=gap_warning_h)


def load_power_csv(
    path: str | Path,
    time_column: str = "time",
    power_column: str = "power_w",
    *,
    gap_fill: str = "hold",
    gap_warning_h: float | None = DEFAULT_GAP_WARNING_H,
) -> pd.Series:
    """Load a power trace in W (e.g. a metered PV or wind plant's output).

    Args:
        path: CSV file with a header line.
        time_column: Column of ISO 8601 timestamps (naive = UTC).
        power_column: Column of power in W (>= 0); a name stating another unit (``power_kw``) is refused.
        gap_fill: ``"hold"``, ``"linear"`` or ``"error"`` for gaps in the data.
        gap_warning_h: Warn when the longest gap is longer than this many hours (None: never).

    Returns:
        Series named ``"power_w"`` on a sorted UTC index; NaN rows dropped and counted in
        ``attrs["dropped_nan_rows"]``.

    Raises:
        TraceError: Missing file or column, bad time, non-numeric, negative or absurd (> 1e15 W) power.
    """
    return load_series_csv(path, power_column, POWER_NAME, time_column=time_column, non_negative=True,
                           value_range=(0.0, POWER_MAX_W), gap_fill=gap_fill, gap_warning_h=gap_warning_h)


def _first_line(path: Path, what: str = "a readable UTF-8 text file") -> str:
    if not path.is_file():
        raise TraceError(path, "file", str(path), "an existing readable file")
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return fh.readline().strip()
    except UnicodeDecodeError as exc:
        raise TraceError(path, "file", f"byte {exc.start} of line 1 is not UTF-8", what) from exc
    except OSError as exc:
        raise TraceError(path, "file", str(exc), what) from exc


def _load_nrel_wtk(path: Path, column: str | None, gap_fill: str, gap_warning_h: float | None) -> pd.Series:
    meta_line = _first_line(path)
    fields = [f.strip() for f in meta_line.split(",")]
    meta = dict(zip(fields[0::2], fields[1::2]))
    if "SiteID" not in meta:
        raise TraceError(path, "line 1", meta_line, "NREL WIND Toolkit site metadata starting 'SiteID,'")
    tz_text = meta.get("Data Timezone", "0")
    try:
        tz_hours = float(tz_text)
    except ValueError as exc:
        raise TraceError(path, "line 1 'Data Timezone'", tz_text, "an offset from UTC in hours, e.g. 0 or -8") from exc

    df = _read_csv(path, skiprows=1)
    _require_columns(path, df, list(_WTK_TIME_COLUMNS), "nrel_wtk")
    speed_columns = {c: float(m.group(1)) for c in df.columns if (m := _WTK_SPEED.match(c))}
    other_units = [c for c in df.columns if _WTK_ANY_SPEED.match(c) and c not in speed_columns]
    if column is None and not speed_columns and other_units:
        dataquality.check_unit(path, other_units[0], "m/s", "wind speed at 100m (m/s)")
    if column is None:
        if len(speed_columns) != 1:
            raise TraceError(
                path, "column", list(speed_columns) or "none",
                "exactly one 'wind speed at <h>m (m/s)' column, or pass column= to choose one",
            )
        column = next(iter(speed_columns))
    elif column not in df.columns:
        raise TraceError(path, "header", list(df.columns), f"a header with the column {column!r} (column=)")
    dataquality.check_unit(path, column, "m/s", "wind speed at 100m (m/s)")

    first_data_line = 3  # metadata line, header line, then data
    parts = {}
    for name in _WTK_TIME_COLUMNS:
        numbers = _parse_values(path, df[name], name, first_data_line)
        not_integer = ~np.isfinite(numbers) | (numbers != np.round(numbers)) | (np.abs(numbers) > 1e6)
        if not_integer.any():
            i = int(np.flatnonzero(not_integer)[0])
            raise TraceError(path, f"column {name!r} at line {i + first_data_line}", df[name].iloc[i],
                             "an integer (of at most 6 digits)")
        parts[name.lower()] = numbers.astype(np.int64)
    local = pd.to_datetime(pd.DataFrame(parts), errors="coerce")
    bad = local.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        when = "-".join(str(df[c].iloc[i]) for c in _WTK_TIME_COLUMNS)
        raise TraceError(path, f"columns Year..Minute at line {i + first_data_line}", when, "a valid date and time")
    times = pd.DatetimeIndex(local - pd.Timedelta(hours=tz_hours)).tz_localize("UTC")
    values = _parse_values(path, df[column], column, first_data_line)
    _check_non_negative(path, df[column], values, column, "a wind speed >= 0 m/s", first_data_line)
    _check_trace_range(path, df[column], values, column, (0.0, WIND_SPEED_MAX_M_S), "m/s", first_data_line)
    series = _finish(path, times, values, df.index, WIND_SPEED_NAME, "nrel_wtk", column, "Year..Minute",
                     first_data_line, gap_fill=gap_fill, gap_warning_h=gap_warning_h)
    series.attrs["height_m"] = speed_columns.get(column)
    for key in ("latitude", "longitude"):
        try:
            series.attrs[key] = float(meta[key.capitalize()])
        except (KeyError, ValueError):
            series.attrs[key] = None
    return series


# --------------------------------------------------------------------------- helpers


def _utc_index(times: pd.Index, what: str) -> pd.DatetimeIndex:
    if not isinstance(times, pd.DatetimeIndex):
        raise ValueError(f"{what}: expected a pandas DatetimeIndex, got {type(times).__name__}")
    return times.tz_localize("UTC") if times.tz is None else times.tz_convert("UTC")


def _check_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: got {value!r}; expected a number in {'(' if low_open else '['}{low:g}, {high:g}]")
    ok = (v > low if low_open else v >= low) and v <= high and np.isfinite(v)
    if not ok:
        raise ValueError(f"{name}: got {value!r}; expected a number in {'(' if low_open else '['}{low:g}, {high:g}]")
