"""Tests for dcsim.renewables: pvlib solar, windpowerlib wind and the wind-speed / power loaders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dcsim.errors import TraceError
from dcsim.renewables import load_power_csv, load_wind_speed, solar_power_w, wind_power_w

# pvlib 0.16 and windpowerlib 0.2.2 call pandas APIs that pandas 3 deprecates; not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:pvlib"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:windpowerlib"),
]

pvlib = pytest.importorskip("pvlib")
windpowerlib = pytest.importorskip("windpowerlib")

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
LAT, LON = 37.36, -121.92  # San Jose, CA


def _trace(relative: str) -> Path:
    path = TRACES / relative
    if not path.is_file():
        pytest.skip(f"real trace {relative} not present at {TRACES}")
    return path


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _curve(turbine_type: str) -> tuple[np.ndarray, np.ndarray, float]:
    """The turbine's power curve and nominal power straight from windpowerlib (not through dcsim)."""
    turbine = windpowerlib.WindTurbine(turbine_type=turbine_type, hub_height=100)
    curve = turbine.power_curve.sort_values("wind_speed")
    return curve["wind_speed"].to_numpy(float), curve["value"].to_numpy(float), float(turbine.nominal_power)


def _write_epw(
    path: Path,
    dhi: "callable",
    temp_air_c: float = 20.0,
    tz_hours: float = -8.0,
    lat: float = LAT,
    lon: float = LON,
) -> Path:
    """A synthetic EPW: 8760 hourly records, diffuse light only (GHI = DHI, DNI = 0).

    Record years are mixed like a typical year (January from 2012, the rest from 2015). ``dhi`` maps
    arrays (month, day, hour 0-23 = the hour's start in local standard time) to W/m2.
    """
    start = pd.Timestamp("2015-01-01")
    stamps = start + pd.to_timedelta(np.arange(8760), unit="h")
    month, day, hour0 = stamps.month.to_numpy(), stamps.day.to_numpy(), stamps.hour.to_numpy()
    year = np.where(month == 1, 2012, 2015)
    diffuse = np.asarray(dhi(month, day, hour0), dtype=int)
    header = [
        f"LOCATION,Testville,CA,USA,SYNTH,000000,{lat},{lon},{tz_hours},10.0",
        "DESIGN CONDITIONS,0",
        "TYPICAL/EXTREME PERIODS,0",
        "GROUND TEMPERATURES,0",
        "HOLIDAYS/DAYLIGHT SAVINGS,No,0,0,0",
        "COMMENTS 1,synthetic test file",
        "COMMENTS 2,",
        "DATA PERIODS,1,1,Data,Sunday,1/ 1,12/31",
    ]
    lines = [
        f"{y},{m},{d},{h + 1},60,?9,{temp_air_c},5.0,50,101325,0,0,300,{g},0,{g},0,0,0,0,180,2.0,"
        f"0,0,20,77777,9,999999999,0,0.1,0,88,0.2,0,0"
        for y, m, d, h, g in zip(year, month, day, hour0, diffuse)
    ]
    path.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- solar, clear sky


def test_clear_sky_night_is_exactly_zero() -> None:
    # Local midnight in San Jose (UTC-8 in January, UTC-7 in July).
    times = pd.DatetimeIndex(["2023-01-15T08:00Z", "2023-07-15T07:00Z", "2023-07-15T10:30Z"])
    p = solar_power_w(times, LAT, LON, capacity_w=1e6)
    assert p.tolist() == [0.0, 0.0, 0.0]


def test_clear_sky_summer_noon_positive_and_below_capacity() -> None:
    # Solar noon at 121.92 W is about 20:08 UTC.
    times = pd.DatetimeIndex(["2023-06-21T20:08Z"])
    capacity_w = 1e6
    p = float(solar_power_w(times, 37.0, LON, capacity_w=capacity_w).iloc[0])
    # Clear-sky plane-of-array irradiance at noon is near 1000 W/m2, times 0.86 system efficiency.
    assert 0.6 * capacity_w < p < capacity_w


def test_clear_sky_horizontal_panel_equals_ghi_scaling() -> None:
    # Horizontal, isotropic: POA = GHI. At 25 degC cells and no losses, PVWatts gives capacity * GHI/1000.
    times = pd.date_range("2023-03-20T14:00Z", periods=12, freq="1h")
    capacity_w = 250e3
    p = solar_power_w(times, LAT, LON, capacity_w, tilt_deg=0.0, system_efficiency=1.0)
    ghi = pvlib.location.Location(LAT, LON, tz="UTC", altitude=0.0).get_clearsky(times)["ghi"].to_numpy()
    assert ghi.max() > 500  # the check covers daylight
    np.testing.assert_allclose(p.to_numpy(), capacity_w * ghi / 1000.0, rtol=1e-9, atol=1e-6)


def test_solar_linear_in_capacity_and_efficiency() -> None:
    times = pd.date_range("2023-06-21T15:00Z", periods=8, freq="30min")
    base = solar_power_w(times, LAT, LON, 1e6, system_efficiency=1.0)
    assert base.max() > 0
    np.testing.assert_allclose(solar_power_w(times, LAT, LON, 2e6, system_efficiency=0.5), base, rtol=1e-12)


def test_solar_output_index_is_utc_and_naive_means_utc() -> None:
    naive = pd.date_range("2023-06-21 18:00", periods=3, freq="1h")
    local = naive.tz_localize("UTC").tz_convert("America/Los_Angeles")
    a = solar_power_w(naive, LAT, LON, 1e6)
    b = solar_power_w(local, LAT, LON, 1e6)
    assert str(a.index.tz) == "UTC" and a.name == "solar_power_w"
    assert a.index.equals(b.index)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())


def test_default_tilt_is_latitude() -> None:
    times = pd.date_range("2023-12-21T16:00Z", periods=6, freq="1h")
    np.testing.assert_array_equal(
        solar_power_w(times, LAT, LON, 1e6).to_numpy(), solar_power_w(times, LAT, LON, 1e6, tilt_deg=LAT).to_numpy()
    )


def test_winter_favours_steeper_tilt() -> None:
    # Low winter sun: a latitude-tilted array beats a flat one over a clear December day.
    day = pd.date_range("2023-12-21T14:00Z", periods=12, freq="1h")
    assert solar_power_w(day, LAT, LON, 1e6).sum() > 1.2 * solar_power_w(day, LAT, LON, 1e6, tilt_deg=0).sum()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"latitude": 91.0}, "latitude"),
        ({"capacity_w": -1.0}, "capacity_w"),
        ({"tilt_deg": 95.0}, "tilt_deg"),
        ({"system_efficiency": 0.0}, "system_efficiency"),
        ({"azimuth_deg": float("nan")}, "azimuth_deg"),
    ],
)
def test_solar_bad_parameters_name_the_field(kwargs: dict, field: str) -> None:
    args = {"latitude": LAT, "longitude": LON, "capacity_w": 1e6} | kwargs
    with pytest.raises(ValueError, match=field):
        solar_power_w(pd.DatetimeIndex(["2023-06-21T20:00Z"]), **args)


def test_solar_times_must_be_datetimeindex() -> None:
    with pytest.raises(ValueError, match="DatetimeIndex"):
        solar_power_w(pd.Index([1.0, 2.0]), LAT, LON, 1e6)


# --------------------------------------------------------------------------- solar, EPW weather


def _dhi_code(month, day, hour):
    """A DHI that differs by month, day and hour so a wrong lookup shows (W/m2, <= 1000)."""
    return 100 + 25 * (month % 4) + 3 * (day % 7) + 20 * (hour % 12)


def test_epw_replays_typical_year_by_local_month_day_hour(tmp_path: Path) -> None:
    epw = _write_epw(tmp_path / "synthetic.epw", _dhi_code)
    times = pd.DatetimeIndex(
        [
            "2023-07-04T20:00Z",  # 12:00 PST on 4 July        -> record (7, 4, 12)
            "2023-07-04T20:45Z",  # same hour                 -> same record
            "2023-01-01T03:00Z",  # 19:00 PST on 31 Dec 2022  -> record (12, 31, 19)
            "2024-02-29T20:00Z",  # leap day, no record       -> record (2, 28, 12)
            "2031-01-05T08:00Z",  # 00:00 PST, from the 2012 part of the file -> (1, 5, 0)
        ]
    )
    capacity_w = 1000.0
    # Horizontal panel, diffuse-only sky: POA = DHI exactly; no temperature effect when gamma = 0.
    p = solar_power_w(
        times, LAT, LON, capacity_w, weather_epw=epw, tilt_deg=0.0, system_efficiency=1.0, temperature_coeff_per_c=0.0
    )
    expected_dhi = [
        _dhi_code(7, 4, 12),
        _dhi_code(7, 4, 12),
        _dhi_code(12, 31, 19),
        _dhi_code(2, 28, 12),
        _dhi_code(1, 5, 0),
    ]
    np.testing.assert_allclose(p.to_numpy(), capacity_w * np.array(expected_dhi) / 1000.0, rtol=1e-12)
    assert p.index.equals(times)


def test_epw_hot_cells_make_less_power(tmp_path: Path) -> None:
    cold = _write_epw(tmp_path / "cold.epw", lambda m, d, h: np.full(m.shape, 800), temp_air_c=0.0)
    hot = _write_epw(tmp_path / "hot.epw", lambda m, d, h: np.full(m.shape, 800), temp_air_c=40.0)
    times = pd.DatetimeIndex(["2023-06-21T20:00Z"])
    kw = dict(tilt_deg=0.0, system_efficiency=1.0)
    p_cold = float(solar_power_w(times, LAT, LON, 1e6, weather_epw=cold, **kw).iloc[0])
    p_hot = float(solar_power_w(times, LAT, LON, 1e6, weather_epw=hot, **kw).iloc[0])
    assert p_hot < 0.8e6 < p_cold  # 800 W/m2 at 25 degC would give exactly 0.8 of capacity
    # Without a temperature coefficient the air temperature does not matter.
    kw0 = dict(kw, temperature_coeff_per_c=0.0)
    assert solar_power_w(times, LAT, LON, 1e6, weather_epw=cold, **kw0).iloc[0] == pytest.approx(0.8e6, rel=1e-12)
    assert solar_power_w(times, LAT, LON, 1e6, weather_epw=hot, **kw0).iloc[0] == pytest.approx(0.8e6, rel=1e-12)


def test_epw_missing_value_code_is_trace_error(tmp_path: Path) -> None:
    epw = _write_epw(tmp_path / "bad.epw", lambda m, d, h: np.where((m == 3) & (d == 1) & (h == 5), 9999, 10))
    with pytest.raises(TraceError, match="field 'ghi'") as info:
        solar_power_w(pd.DatetimeIndex(["2023-06-21T20:00Z"]), LAT, LON, 1e6, weather_epw=epw)
    assert info.value.path == epw and info.value.value == 9999


def test_epw_missing_file_is_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="nope.epw"):
        solar_power_w(pd.DatetimeIndex(["2023-06-21T20:00Z"]), LAT, LON, 1e6, weather_epw=tmp_path / "nope.epw")


def test_epw_far_from_site_warns(tmp_path: Path) -> None:
    epw = _write_epw(tmp_path / "far.epw", _dhi_code, lat=50.0)
    with pytest.warns(UserWarning, match="weather file is for"):
        solar_power_w(pd.DatetimeIndex(["2023-06-21T20:00Z"]), LAT, LON, 1e6, weather_epw=epw)


def test_real_epw_san_jose_year() -> None:
    epw = _trace("weather/USA_CA_San.Jose-Mineta.epw")
    times = pd.date_range("2023-01-01", periods=8760, freq="1h", tz="UTC")
    p = solar_power_w(times, 37.359, -121.924, 1e6, weather_epw=epw)
    assert p.index.equals(times)
    assert (p >= 0).all() and p.notna().all()
    local_midnight = p[p.index.tz_convert("Etc/GMT+8").hour == 0]
    assert (local_midnight == 0).all()
    yield_kwh_per_kwp = p.sum() / 1e6  # hourly samples: W-hours per W = kWh per kW
    # PVWatts-class estimates for a latitude-tilt array in San Jose are about 1,600-1,800 kWh/kWp.
    assert 1400 < yield_kwh_per_kwp < 2000
    assert p.max() < 1e6
    clear = solar_power_w(times, 37.359, -121.924, 1e6)
    assert p.sum() < clear.sum()


# --------------------------------------------------------------------------- wind


def _index(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2023-01-01", periods=n, freq="10min", tz="UTC")


def test_wind_zero_below_cut_in() -> None:
    speeds, power, _ = _curve("E-101/3050")
    cut_in = speeds[np.flatnonzero(power > 0)[0] - 1]  # last curve speed still at zero power
    below = np.array([0.0, 0.3 * cut_in, cut_in])
    p = wind_power_w(pd.Series(below, index=_index(3)), n_turbines=4)
    assert p.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("turbine_type", ["E-115/3000", "V126/3300"])
def test_wind_nominal_power_between_rated_and_cut_out(turbine_type: str) -> None:
    speeds, power, nominal_w = _curve(turbine_type)
    assert power.max() == nominal_w  # these turbines' curves top out at their nominal power
    at_max = speeds[power == power.max()]
    rated, cut_out = at_max.min(), at_max.max()
    test_speeds = np.linspace(rated, cut_out, 7)
    p = wind_power_w(pd.Series(test_speeds, index=_index(7)), turbine_type=turbine_type, n_turbines=3)
    np.testing.assert_array_equal(p.to_numpy(), np.full(7, 3 * nominal_w))


def test_wind_default_turbine_plateau_is_its_curve_maximum() -> None:
    # windpowerlib lists E-101/3050 at 3.05 MW nominal, but its power curve tops out at 3.0 MW;
    # dcsim follows the curve.
    speeds, power, _ = _curve("E-101/3050")
    at_max = speeds[power == power.max()]
    test_speeds = np.linspace(at_max.min(), at_max.max(), 5)
    p = wind_power_w(pd.Series(test_speeds, index=_index(5)), n_turbines=2)
    np.testing.assert_array_equal(p.to_numpy(), np.full(5, 2 * power.max()))


def test_wind_zero_above_cut_out_and_interpolates_between_points() -> None:
    speeds, power, _ = _curve("E-101/3050")
    i = np.flatnonzero(power > 0)[2]  # a point on the rising part of the curve
    mid = 0.5 * (speeds[i] + speeds[i + 1])
    cut_out = speeds[power > 0].max()
    p = wind_power_w(pd.Series([mid, cut_out + 0.6, 40.0], index=_index(3)))
    assert p.iloc[0] == pytest.approx(0.5 * (power[i] + power[i + 1]), rel=1e-12)
    assert p.iloc[1] == 0.0 and p.iloc[2] == 0.0


def test_wind_hellman_height_correction_hand_checked() -> None:
    # 5 m/s at 10 m with the 1/7 power law: 5 * (100/10)**(1/7) = 6.9475 m/s at a 100 m hub.
    at_10m = wind_power_w(pd.Series([5.0], index=_index(1)), measurement_height_m=10.0)
    at_hub = wind_power_w(pd.Series([5.0 * 10 ** (1 / 7)], index=_index(1)))
    assert 5.0 * 10 ** (1 / 7) == pytest.approx(6.9475, abs=1e-4)
    assert at_10m.iloc[0] == pytest.approx(at_hub.iloc[0], rel=1e-12)
    assert at_10m.iloc[0] > wind_power_w(pd.Series([5.0], index=_index(1))).iloc[0]


def test_wind_logarithmic_height_correction_hand_checked() -> None:
    z0 = 0.1
    v_hub = 5.0 * np.log(100 / z0) / np.log(10 / z0)  # 7.5 m/s
    a = wind_power_w(
        pd.Series([5.0], index=_index(1)),
        measurement_height_m=10.0,
        height_profile="logarithmic",
        roughness_length_m=z0,
    )
    b = wind_power_w(pd.Series([v_hub], index=_index(1)))
    assert v_hub == pytest.approx(7.5, abs=1e-12)
    assert a.iloc[0] == pytest.approx(b.iloc[0], rel=1e-12)
    with pytest.raises(ValueError, match="roughness"):
        wind_power_w(pd.Series([5.0], index=_index(1)), measurement_height_m=10.0, height_profile="logarithmic")


def test_wind_unknown_turbine_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        wind_power_w(pd.Series([5.0], index=_index(1)), turbine_type="E-101/9999")
    message = str(info.value)
    assert "E-101/9999" in message and "E-101/3050" in message and "get_turbine_types" in message


def test_wind_rejects_negative_speed_and_keeps_nan() -> None:
    with pytest.raises(ValueError, match="-1.0"):
        wind_power_w(pd.Series([5.0, -1.0], index=_index(2)))
    p = wind_power_w(pd.Series([np.nan, 13.0], index=_index(2)))
    assert np.isnan(p.iloc[0]) and p.iloc[1] > 0


def test_wind_index_converted_to_utc() -> None:
    local = pd.date_range("2023-07-01", periods=2, freq="1h", tz="America/Chicago")
    p = wind_power_w(pd.Series([13.0, 13.0], index=local))
    assert str(p.index.tz) == "UTC" and p.index[0] == pd.Timestamp("2023-07-01T05:00Z")
    assert p.name == "wind_power_w"


# --------------------------------------------------------------------------- loaders

WTK_META = "SiteID,0,Site Timezone,-9,Data Timezone,{tz},Longitude,-128.77481,Latitude,39.970406\n"


def test_nrel_wtk_layout_exact(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "wtk.csv",
        WTK_META.format(tz=0)
        + "Year,Month,Day,Hour,Minute,wind speed at 100m (m/s)\n"
        "2019,1,1,0,0,13.97\n2019,1,1,0,15,14.01\n2019,1,1,0,30,0\n",
    )
    s = load_wind_speed(path)
    assert s.name == "wind_speed_m_s" and s.attrs["format"] == "nrel_wtk"
    assert s.tolist() == [13.97, 14.01, 0.0]
    assert s.index.equals(pd.DatetimeIndex(["2019-01-01T00:00Z", "2019-01-01T00:15Z", "2019-01-01T00:30Z"]))
    assert s.attrs["height_m"] == 100.0
    assert s.attrs["latitude"] == 39.970406 and s.attrs["longitude"] == -128.77481


def test_nrel_wtk_data_timezone_converted_to_utc(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "wtk.csv",
        WTK_META.format(tz=-8) + "Year,Month,Day,Hour,Minute,wind speed at 80m (m/s)\n2019,12,31,20,0,5\n",
    )
    s = load_wind_speed(path, fmt="nrel_wtk")
    assert s.index[0] == pd.Timestamp("2020-01-01T04:00Z")
    assert s.attrs["height_m"] == 80.0


def test_nrel_wtk_several_heights_need_a_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "wtk.csv",
        WTK_META.format(tz=0)
        + "Year,Month,Day,Hour,Minute,wind speed at 80m (m/s),wind speed at 100m (m/s)\n2019,1,1,0,0,5,6\n",
    )
    with pytest.raises(TraceError, match="column="):
        load_wind_speed(path)
    s = load_wind_speed(path, column="wind speed at 80m (m/s)")
    assert s.tolist() == [5.0] and s.attrs["height_m"] == 80.0


def test_nrel_wtk_bad_rows_name_line_and_value(tmp_path: Path) -> None:
    head = WTK_META.format(tz=0) + "Year,Month,Day,Hour,Minute,wind speed at 100m (m/s)\n"
    bad_speed = _write(tmp_path, "a.csv", head + "2019,1,1,0,0,5\n2019,1,1,0,15,fast\n")
    with pytest.raises(TraceError) as info:
        load_wind_speed(bad_speed)
    assert info.value.field == "column 'wind speed at 100m (m/s)' at line 4" and info.value.value == "fast"
    assert str(bad_speed) in str(info.value)
    bad_date = _write(tmp_path, "b.csv", head + "2019,13,1,0,0,5\n")
    with pytest.raises(TraceError, match="line 3"):
        load_wind_speed(bad_date)
    negative = _write(tmp_path, "c.csv", head + "2019,1,1,0,0,-5\n")
    with pytest.raises(TraceError, match=">= 0"):
        load_wind_speed(negative)


def test_wind_speed_generic_csv(tmp_path: Path) -> None:
    path = _write(tmp_path, "w.csv", "time,wind_speed\n2023-01-01T00:00Z,4.5\n2023-01-01T01:00-01:00,\n")
    s = load_wind_speed(path)
    assert s.attrs["format"] == "csv" and s.attrs["dropped_nan_rows"] == 1
    assert s.tolist() == [4.5]


def test_wind_speed_unknown_format(tmp_path: Path) -> None:
    path = _write(tmp_path, "w.csv", "time,wind_speed\n2023-01-01T00:00Z,4.5\n")
    with pytest.raises(TraceError, match="'nrel_wtk'"):
        load_wind_speed(path, fmt="merra2")


def test_load_power_csv(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.csv", "time,power_w\n2023-01-01T00:00Z,1500.5\n2023-01-01T00:05Z,0\n")
    s = load_power_csv(path)
    assert s.name == "power_w" and s.tolist() == [1500.5, 0.0]
    other = _write(tmp_path, "q.csv", "t,kw_as_w\n2023-01-01T00:00Z,7\n")
    assert load_power_csv(other, time_column="t", power_column="kw_as_w").tolist() == [7.0]
    no_power = _write(tmp_path, "r.csv", "time,kw_as_w\n2023-01-01T00:00Z,7\n")
    with pytest.raises(TraceError, match="missing: 'power_w'"):
        load_power_csv(no_power)
    negative = _write(tmp_path, "n.csv", "time,power_w\n2023-01-01T00:00Z,-7\n")
    with pytest.raises(TraceError, match="line 2"):
        load_power_csv(negative)


def test_real_nrel_wtk_2019() -> None:
    s = load_wind_speed(_trace("weather/nrel_wtk_wind100m_2019_15min_39.97_-128.77.csv"))
    assert len(s) == 35040  # 365 days of 15-minute steps
    assert s.index[0] == pd.Timestamp("2019-01-01T00:00Z")
    assert s.index[-1] == pd.Timestamp("2019-12-31T23:45Z")
    assert set(np.diff(s.index.asi8) // 10**6) == {900}
    assert s.iloc[0] == 13.97 and s.attrs["height_m"] == 100.0
    p = wind_power_w(s)
    capacity_factor = p.mean() / _curve("E-101/3050")[1].max()
    # Offshore, 9.5 m/s mean at 100 m: a high but sub-unity capacity factor.
    assert 0.4 < capacity_factor < 0.8
