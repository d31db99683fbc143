"""Data quality made visible (issue 16) and trace order, time zones, ids and units (issue 17 item 4).

Every case is a small file generated under ``tmp_path``; expectations are hand-worked (gap lengths,
interpolated values, Poisson and Little's-law means with their standard errors).
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dcsim.dataquality import DataQualityWarning, check_time_zone_forms, unit_in_name
from dcsim.errors import ScenarioError, TraceError
from dcsim.gridseries import load_carbon_intensity, load_price
from dcsim.renewables import load_power_csv, load_wind_speed, solar_power_w
from dcsim.runner import run_scenario
from dcsim.seeding import Streams
from dcsim.supply import build_supply
from dcsim.workload import build_jobs
from dcsim.workload_traces import load_azure_llm, load_job_csv, load_swf, load_utilisation
from tests.conftest import scenario
from tests.test_cli import dcsim_cli, ok, user_error

LAT, LON = 37.36, -121.93


def _write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def _hourly_carbon(values: list[float | None], start: str = "2023-01-01T00:00Z", name: str = "carbon_g_per_kwh") -> str:
    times = pd.date_range(start, periods=len(values), freq="h")
    rows = [f"{t:%Y-%m-%dT%H:%M:%SZ},{'' if v is None else v}" for t, v in zip(times, values)]
    return f"time,{name}\n" + "\n".join(rows) + "\n"


def _quality_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, DataQualityWarning)]


# --------------------------------------------------------------------------- gaps: hold, linear, error


def test_gap_of_23_empty_rows_is_held_recorded_and_warned(tmp_path: Path) -> None:
    path = _write(tmp_path, "ci.csv", _hourly_carbon([400.0] + [None] * 23 + [300.0, 310.0]))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        s = load_carbon_intensity(path)
    a = s.attrs
    assert (a["rows_read"], a["dropped_nan_rows"], a["gaps"], a["filled_steps"]) == (26, 23, 1, 23)
    assert a["longest_gap_h"] == 23.0 and a["gap_fill"] == "hold" and a["step_s"] == 3600.0
    assert a["longest_gap_start"] == "2023-01-01T01:00:00+00:00"
    assert s.tolist() == [400.0, 300.0, 310.0]  # the value before the gap holds 24 h in the step series
    [message] = _quality_warnings(record)
    assert str(path) in message and "23 h" in message and "6 h warning threshold" in message
    assert message in a["warnings"]


def test_gap_linear_fill_interpolates_each_missing_hour(tmp_path: Path) -> None:
    path = _write(tmp_path, "ci.csv", _hourly_carbon([100.0, None, None, None, 500.0, 510.0]))
    s = load_carbon_intensity(path, gap_fill="linear")
    assert s.tolist() == [100.0, 200.0, 300.0, 400.0, 500.0, 510.0]
    assert s.index.equals(pd.date_range("2023-01-01T00:00Z", periods=6, freq="h"))
    assert s.attrs["filled_steps"] == 3 and s.attrs["longest_gap_h"] == 3.0 and s.attrs["gap_fill"] == "linear"


def test_gap_linear_fills_missing_rows_not_only_empty_cells(tmp_path: Path) -> None:
    text = "time,price_usd_per_mwh\n2023-01-01T00:00Z,10\n2023-01-01T01:00Z,20\n2023-01-01T04:00Z,50\n"
    s = load_price(_write(tmp_path, "p.csv", text), gap_fill="linear")
    assert s.tolist() == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert s.attrs["dropped_nan_rows"] == 0 and s.attrs["filled_steps"] == 2


def test_gap_error_names_file_line_and_gap(tmp_path: Path) -> None:
    path = _write(tmp_path, "ci.csv", _hourly_carbon([100.0, 110.0, None, None, 140.0]))
    with pytest.raises(TraceError) as info:
        load_carbon_intensity(path, gap_fill="error")
    message = str(info.value)
    assert message.startswith(f"{path}: column 'time' at line 6: got 'a gap of 2 h after 2023-01-01 01:00:00+00:00'")
    assert "'hold' or 'linear'" in message


def test_gap_warning_threshold_configurable_and_no_gap_no_record(tmp_path: Path) -> None:
    path = _write(tmp_path, "ci.csv", _hourly_carbon([100.0, 105.0, None, None, 130.0]))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert load_carbon_intensity(path).attrs["longest_gap_h"] == 2.0  # under the 6 h default: quiet
        load_carbon_intensity(path, gap_warning_h=None)
        assert not _quality_warnings(record)
        load_carbon_intensity(path, gap_warning_h=1.5)
        assert len(_quality_warnings(record)) == 1
    full = load_carbon_intensity(_write(tmp_path, "f.csv", _hourly_carbon([1.0, 2.0, 3.0])))
    assert (full.attrs["gaps"], full.attrs["longest_gap_h"], full.attrs["longest_gap_start"]) == (0, 0.0, None)


def test_supply_gap_fill_reaches_the_step_series_and_the_report(tmp_path: Path) -> None:
    path = _write(tmp_path, "ci.csv", _hourly_carbon([100.0, None, 300.0, 300.0, 300.0]))
    start = "2023-01-01T00:00:00Z"
    sc = scenario(start=start, horizon_s=3600 * 4,
                  supply={"gap_fill": "linear", "grid": {"carbon_g_per_kwh": {"path": str(path)}}})
    supply = build_supply(sc)
    assert supply.carbon_g_per_kwh.value_at(3600.0 + 1.0) == 200.0
    record = supply.data_quality["supply.grid.carbon_g_per_kwh"]
    assert record["dropped_nan_rows"] == 1 and record["filled_steps"] == 1 and record["gap_fill"] == "linear"
    held = build_supply(scenario(start=start, horizon_s=3600 * 4,
                                 supply={"grid": {"carbon_g_per_kwh": {"path": str(path)}}}))
    assert held.carbon_g_per_kwh.value_at(3600.0 + 1.0) == 100.0
    with pytest.raises(TraceError, match="gap of 1 h"):
        build_supply(scenario(start=start, horizon_s=3600 * 4,
                              supply={"gap_fill": "error", "grid": {"carbon_g_per_kwh": {"path": str(path)}}}))
    with pytest.raises(ScenarioError, match="supply.gap_fill"):
        scenario(supply={"gap_fill": "spline"})


# --------------------------------------------------------------------------- order, time zones, duplicates


def test_unsorted_rows_are_sorted_with_a_warning(tmp_path: Path) -> None:
    text = "time,carbon_g_per_kwh\n2023-01-01T02:00Z,3\n2023-01-01T00:00Z,1\n2023-01-01T01:00Z,2\n"
    with pytest.warns(DataQualityWarning, match=r"not in time order \(1 step\(s\) back in time, the first at line 3\)"):
        s = load_carbon_intensity(_write(tmp_path, "ci.csv", text))
    assert s.tolist() == [1.0, 2.0, 3.0] and s.attrs["unsorted_rows"] == 1


@pytest.mark.parametrize(
    "stamps, line, why",
    [
        (["2023-01-01T00:00:00Z", "2023-01-01T01:00:00", "2023-01-01T02:00:00Z"], 3, "every timestamp in one form"),
        (["2023-01-01 00:00", "2023-01-01 01:00", "2023-01-01 02:00+00:00"], 4, "every timestamp in one form"),
        (["2023-01-01T00:00:00+00:00", "2023-01-01T06:00:00+05:00", "2023-01-01T02:00:00+00:00"], 3,
         "offsets one hour apart"),
        (["2023-01-01T00:00:00+01:00", "2023-01-01T01:00:00+02:00", "2023-01-01T02:00:00+03:00"], 4,
         "third offset"),
        (["2023-01-01T00:00:00-06:00", "2023-01-01T02:00:00-05:00", "2023-01-01T02:00:00-06:00"], 4,
         "less than 28 days later"),
    ],
)
def test_mixed_time_zone_forms_are_refused_naming_the_first_offending_line(
    tmp_path: Path, stamps: list[str], line: int, why: str
) -> None:
    text = "time,price_usd_per_mwh\n" + "".join(f"{t},{k}\n" for k, t in enumerate(stamps))
    path = _write(tmp_path, "p.csv", text)
    with pytest.raises(TraceError, match=why) as info:
        load_price(path)
    assert info.value.field == f"column 'time' at line {line}" and info.value.value == stamps[line - 2]


def test_daylight_saving_offsets_months_apart_are_accepted(tmp_path: Path) -> None:
    text = ("Datetime,Price (USD/MWh)\n2023-03-12 01:00:00-06:00,10\n2023-03-12 03:00:00-05:00,11\n"
            "2023-11-05 01:00:00-05:00,12\n2023-11-05 01:00:00-06:00,13\n")
    s = load_price(_write(tmp_path, "ercot.csv", text))
    assert s.index.equals(pd.DatetimeIndex(["2023-03-12T07:00Z", "2023-03-12T08:00Z", "2023-11-05T06:00Z",
                                            "2023-11-05T07:00Z"]).tz_convert("UTC"))


def test_time_zone_check_on_hand_built_text() -> None:
    path = Path("x.csv")
    check_time_zone_forms(path, pd.Series(["2023-01-01"] * 2), "time")  # dates only: one (naive) form
    check_time_zone_forms(path, pd.Series(["2023-01-01T00:00+0530", "2023-01-01T01:00+05:30"]), "time")
    with pytest.raises(TraceError, match="line 3"):
        check_time_zone_forms(path, pd.Series(["2023-01-01T00:00Z", "2023-01-01T01:00"]), "time")


def test_azure_mixed_time_zones_refused(tmp_path: Path) -> None:
    text = ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6+00:00,10,10\n"
            "2023-11-16 18:15:47.6,10,10\n")
    with pytest.raises(TraceError, match=r"column 'TIMESTAMP', data row 2: got '2023-11-16 18:15:47.6'"):
        load_azure_llm(_write(tmp_path, "az.csv", text))


def test_duplicate_job_ids_refused_naming_both_rows(tmp_path: Path) -> None:
    text = "arrival_s,gpus,work_gpu_s,job_id\n0,1,10,a\n5,1,10,b\n7,1,10,a\n"
    with pytest.raises(TraceError) as info:
        load_job_csv(_write(tmp_path, "jobs.csv", text))
    assert str(info.value).endswith("column 'job_id', data row 3: got 'a'; expected each job id on one row only "
                                    "(this one is also on data row 1)")
    swf = "; header\n" + "1 0 -1 10 1 -1 -1 1 -1 -1 1 -1 -1 -1 -1 -1 -1 -1\n" * 2
    with pytest.raises(TraceError, match=r"field 1 \(job number\), line 3: got '1'; .*also on line 2"):
        load_swf(_write(tmp_path, "log.swf", swf))
    empty_ids = "arrival_s,gpus,work_gpu_s,job_id\n0,1,10,\n5,1,10,\n"
    assert len(load_job_csv(_write(tmp_path, "ok.csv", empty_ids))) == 2  # no id is not a repeated id


def test_unsorted_job_csv_is_sorted_and_said(tmp_path: Path) -> None:
    text = "arrival_s,gpus,work_gpu_s\n50,1,10\n0,1,20\n"
    with pytest.warns(DataQualityWarning, match="not in arrival order"):
        jobs = load_job_csv(_write(tmp_path, "jobs.csv", text))
    assert jobs["arrival_s"].tolist() == [0.0, 50.0] and jobs.attrs["unsorted_rows"] == 1


# --------------------------------------------------------------------------- units in column names


@pytest.mark.parametrize("name, unit", [("wind_speed_km_h", "km_h"), ("speed (km/h)", "km/h"),
                                        ("wind_speed_mph", "mph"), ("power_kw", "kw"), ("Price (USD/MWh)", "USD/MWh"),
                                        ("wind_speed", None), ("avg_CI", None), ("kw_as_w", "w"),
                                        ("Carbon Intensity gCO₂eq/kWh (direct)", None)])
def test_unit_in_name(name: str, unit: str | None) -> None:
    assert unit_in_name(name) == unit


def test_unknown_units_are_refused_not_read_as_the_default(tmp_path: Path) -> None:
    wind = _write(tmp_path, "w.csv", "time,wind_speed_km_h\n2023-01-01T00:00Z,36\n")
    with pytest.raises(TraceError) as info:
        load_wind_speed(wind)
    assert "column 'wind_speed_km_h': got \"unit 'km_h'\"" in str(info.value) and "values in m/s" in str(info.value)
    with pytest.raises(TraceError, match="unit 'kW'"):
        load_power_csv(_write(tmp_path, "p.csv", "time,power_kW\n2023-01-01T00:00Z,36\n"), power_column="power_kW")
    with pytest.raises(TraceError, match="unit 'lb_per_mwh'"):
        load_carbon_intensity(_write(tmp_path, "c.csv", "time,carbon_lb_per_mwh\n2023-01-01T00:00Z,900\n"))
    with pytest.raises(TraceError, match="unit 'EUR/MWh'"):
        load_price(_write(tmp_path, "e.csv", "time,price (EUR/MWh)\n2023-01-01T00:00Z,90\n"))
    wtk = ("SiteID,1,Data Timezone,0,Longitude,-128,Latitude,40\nYear,Month,Day,Hour,Minute,wind speed at 100m (km/h)\n"
           "2019,1,1,0,0,36\n")
    with pytest.raises(TraceError, match="unit 'km/h'"):
        load_wind_speed(_write(tmp_path, "wtk.csv", wtk))
    assert load_wind_speed(_write(tmp_path, "ok.csv", "time,wind_speed_m_s\n2023-01-01T00:00Z,3\n")).tolist() == [3.0]


# --------------------------------------------------------------------------- non-finite and absurd values


@pytest.mark.parametrize("text", ["1e308", "-1e308", "inf", "-inf", "Infinity", "9e99"])
@pytest.mark.parametrize(
    "loader, header, allowed",
    [
        (load_carbon_intensity, "carbon_g_per_kwh", r"\[0, 5000\] gCO2/kWh|finite|>= 0"),
        (load_price, "price_usd_per_mwh", r"\[-100000, 100000\] USD/MWh|finite"),
        (load_wind_speed, "wind_speed_m_s", r"\[0, 100\] m/s|finite|>= 0"),
        (load_power_csv, "power_w", r"\[0, 1e\+15\]|finite|>= 0"),
    ],
)
def test_non_finite_and_absurd_trace_values_name_file_line_value_and_range(
    tmp_path: Path, loader, header: str, allowed: str, text: str
) -> None:
    path = _write(tmp_path, "s.csv", f"time,{header}\n2023-01-01T00:00Z,1\n2023-01-01T01:00Z,{text}\n")
    with pytest.raises(TraceError, match=allowed) as info:
        loader(path)
    assert info.value.path == path and info.value.field == f"column {header!r} at line 3" and info.value.value == text


def test_nan_cells_are_recorded_fills(tmp_path: Path) -> None:
    path = _write(tmp_path, "s.csv", "time,wind_speed_m_s\n2023-01-01T00:00Z,1\n2023-01-01T01:00Z,nan\n"
                                     "2023-01-01T02:00Z,3\n2023-01-01T03:00Z,4\n")
    s = load_wind_speed(path, gap_fill="linear")
    assert s.tolist() == [1.0, 2.0, 3.0, 4.0] and s.attrs["dropped_nan_rows"] == 1 and s.attrs["filled_steps"] == 1


@pytest.mark.parametrize("column, value, allowed", [
    ("gpus", "1e308", "at most 1e\\+07"), ("arrival_s", "1e308", "at most 1e\\+15"),
    ("work_gpu_s", "1e300", "at most 1e\\+15"), ("arrival_s", "inf", "a time in seconds"),
    ("work_gpu_s", "nan", "GPU-seconds"),
])
def test_job_csv_absurd_numbers(tmp_path: Path, column: str, value: str, allowed: str) -> None:
    cells = {"arrival_s": "0", "gpus": "1", "work_gpu_s": "10", column: value}
    path = _write(tmp_path, "j.csv", "arrival_s,gpus,work_gpu_s\n" + ",".join(cells[c] for c in
                                                                               ("arrival_s", "gpus", "work_gpu_s")) + "\n")
    with pytest.raises(TraceError, match=allowed) as info:
        load_job_csv(path)
    assert info.value.field == f"column {column!r}, data row 1" and info.value.value == value


# --------------------------------------------------------------------------- implausible carbon


def test_implausible_carbon_day_on_a_gas_grid_warns_with_numbers(tmp_path: Path) -> None:
    days = [450.0 + 20 * np.sin(np.arange(24) / 24 * 2 * np.pi) for _ in range(6)]
    days[3] = np.full(24, 30.0)  # a few tens of g/kWh for a whole day
    path = _write(tmp_path, "ci.csv", _hourly_carbon([round(float(v), 2) for v in np.concatenate(days)]))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        s = load_carbon_intensity(path)
    messages = _quality_warnings(record)
    assert any("1 day(s) with a mean below 0.25 x the median daily mean" in m and "lowest 30 on 2023-01-04" in m
               for m in messages), messages
    assert any("2 jump(s) larger than 100 gCO2/kWh" in m and "(the largest 30 -> 450 at 2023-01-05T00:00:00+00:00)" in m
               for m in messages), messages
    assert s.attrs["warnings"] == messages


def test_plausible_carbon_is_quiet_and_too_high_warns(tmp_path: Path) -> None:
    values = [round(300 + 80 * math.sin(k / 24 * 2 * math.pi), 2) for k in range(24 * 5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataQualityWarning)
        load_carbon_intensity(_write(tmp_path, "ok.csv", _hourly_carbon(values)))
    with pytest.warns(DataQualityWarning, match=r"1 value\(s\) above 1500 gCO2/kWh \(the highest 2500"):
        load_carbon_intensity(_write(tmp_path, "hi.csv", _hourly_carbon(values[:-1] + [2500.0])))


# --------------------------------------------------------------------------- messages


def test_empty_header_name_instead_of_unnamed(tmp_path: Path) -> None:
    with pytest.raises(TraceError) as info:
        load_carbon_intensity(_write(tmp_path, "c.csv", ",x\n2023-01-01T00:00Z,5\n"))
    assert "<empty header name in column 1>" in str(info.value) and "Unnamed" not in str(info.value)
    with pytest.raises(TraceError) as info:
        load_job_csv(_write(tmp_path, "j.csv", "arrival_s,,work_gpu_s\n0,1,2\n"))
    assert "<empty header name in column 2>" in str(info.value) and "Unnamed" not in str(info.value)


@pytest.mark.parametrize("fmt", ["moer", "csv", "eia930"])
def test_missing_column_messages_quote_cleanly(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(TraceError) as info:
        load_carbon_intensity(_write(tmp_path, "c.csv", "when,moer\n2023-01-01T00:00Z,5\n"), fmt=fmt)
    message = str(info.value)
    assert '"' not in message and "got ['when', 'moer']" in message and "(missing: 'time" in message


def _write_epw(path: Path, ghi, dni, dhi, lat: float = LAT, lon: float = LON, tz_hours: float = -8.0) -> Path:
    """A synthetic EPW year (8760 hourly records) with the given irradiance arrays (W/m2)."""
    stamps = pd.Timestamp("2015-01-01") + pd.to_timedelta(np.arange(8760), unit="h")
    header = [f"LOCATION,Testville,CA,USA,SYNTH,000000,{lat},{lon},{tz_hours},10.0", "DESIGN CONDITIONS,0",
              "TYPICAL/EXTREME PERIODS,0", "GROUND TEMPERATURES,0", "HOLIDAYS/DAYLIGHT SAVINGS,No,0,0,0",
              "COMMENTS 1,synthetic", "COMMENTS 2,", "DATA PERIODS,1,1,Data,Sunday,1/ 1,12/31"]
    lines = [f"2015,{t.month},{t.day},{t.hour + 1},60,?9,20.0,5.0,50,101325,0,0,300,{g:.0f},{b:.0f},{d:.0f},"
             f"0,0,0,0,180,2.0,0,0,20,77777,9,999999999,0,0.1,0,88,0.2,0,0"
             for t, g, b, d in zip(stamps, ghi, dni, dhi)]
    path.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    return path


def _clear_sky_year(lat: float = LAT, lon: float = LON) -> pd.DataFrame:
    import pvlib

    local = pd.date_range("2015-01-01", periods=8760, freq="h", tz="Etc/GMT+8")
    mid = (local + pd.Timedelta(minutes=30)).tz_convert("UTC")
    return pvlib.location.Location(lat, lon, altitude=10).get_clearsky(mid, model="ineichen")


def test_clear_sky_like_weather_file_warns_with_its_numbers(tmp_path: Path) -> None:
    sky = _clear_sky_year()
    clear = _write_epw(tmp_path / "normals.epw", sky["ghi"], sky["dni"], sky["dhi"])
    times = pd.date_range("2023-06-21", periods=4, freq="6h", tz="UTC")
    with pytest.warns(DataQualityWarning, match="near clear sky") as record:
        p = solar_power_w(times, LAT, LON, 1e6, weather_epw=clear)
    a = p.attrs
    assert a["yield_ratio"] > 0.92 and a["clear_sky_day_fraction"] > 0.9
    message = str(record[0].message)
    assert f"{a['annual_yield_kwh_per_kw']:.0f} kWh/kW" in message and f"{a['yield_ratio']:.0%}" in message
    # The same year at 70 % of clear sky on alternate days, as a typical year might be: no warning.
    day = np.arange(8760) // 24
    cloud = np.where(day % 2 == 0, 1.0, 0.4)
    cloudy = _write_epw(tmp_path / "tmy.epw", sky["ghi"] * cloud, sky["dni"] * cloud, sky["dhi"] * cloud)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataQualityWarning)
        q = solar_power_w(times, LAT, LON, 1e6, weather_epw=cloudy)
    assert 0.6 < q.attrs["yield_ratio"] < 0.8 and abs(q.attrs["clear_sky_day_fraction"] - 0.5) < 0.01


def test_csv_given_as_weather_epw_says_not_an_epw_file(tmp_path: Path) -> None:
    csv = _write(tmp_path, "weather.csv", "time,ghi\n2023-01-01T00:00Z,0\n")
    with pytest.raises(TraceError, match="not an EPW file: line 1: got 'time,ghi'; expected an EnergyPlus"):
        solar_power_w(pd.DatetimeIndex(["2023-06-21T20:00Z"]), LAT, LON, 1e6, weather_epw=csv)


def test_epw_bad_value_shown_as_a_plain_number(tmp_path: Path) -> None:
    sky = _clear_sky_year()
    ghi = sky["ghi"].to_numpy().copy()
    ghi[100] = 9999
    epw = _write_epw(tmp_path / "bad.epw", ghi, sky["dni"], sky["dhi"])
    with pytest.raises(TraceError) as info:
        solar_power_w(pd.DatetimeIndex(["2023-06-21T20:00Z"]), LAT, LON, 1e6, weather_epw=epw)
    assert "got 9999.0;" in str(info.value) and "np.float64" not in str(info.value)
    assert "line 109" in str(info.value)


# --------------------------------------------------------------------------- utilisation profiles


SUSTAINDC = ",cpu_load\n" + "".join(f"{k + 1},{u}\n" for k, u in enumerate([0.2, 0.5, 0.4, 0.3, 0.6, 0.25]))


def _profile(tmp_path: Path, text: str = SUSTAINDC) -> Path:
    return _write(tmp_path, "profile.csv", text)


def test_utilisation_profile_arrivals_per_interval_follow_the_profile(tmp_path: Path) -> None:
    gpus, duration = 1000, 600.0
    jobs = load_utilisation(_profile(tmp_path), gpus=gpus, horizon_s=6 * 3600, arrivals_rng=np.random.default_rng(3),
                            rng=np.random.default_rng(4), job_duration_s=duration)
    arrivals = jobs["arrival_s"].to_numpy()
    profile = np.array([0.2, 0.5, 0.4, 0.3, 0.6, 0.25])
    expected = profile * gpus / duration * 3600  # Poisson mean per hour (Little: busy = rate x duration)
    later = arrivals[arrivals > 0]
    counts = np.histogram(later, bins=np.arange(7) * 3600.0)[0]
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected)), (counts, expected)
    at_start = int((arrivals == 0).sum())
    assert jobs.attrs["jobs_running_at_start"] == at_start
    assert abs(at_start - 0.2 * gpus) < 4 * math.sqrt(0.2 * gpus)
    assert jobs.attrs["mean_utilisation"] == pytest.approx(profile.mean(), abs=1e-12)
    assert (jobs["gpus"] == 1).all() and jobs["offered_utilisation"].isin(profile).all()


def test_utilisation_profile_options_and_errors(tmp_path: Path) -> None:
    rngs = {"arrivals_rng": np.random.default_rng(0), "rng": np.random.default_rng(1)}
    percent = _profile(tmp_path, ",cpu_load\n1,20\n2,50\n")
    with pytest.raises(TraceError, match=r"column 'cpu_load', data row 1: got '20'; .*utilisation_scale: 0.01"):
        load_utilisation(percent, gpus=10, horizon_s=7200, **rngs)
    scaled = load_utilisation(percent, gpus=10, horizon_s=7200, utilisation_scale=0.01, **rngs)
    assert scaled.attrs["mean_utilisation"] == pytest.approx(0.35)
    with pytest.raises(ValueError, match="set repeat: true"):
        load_utilisation(percent, gpus=10, horizon_s=3 * 3600, utilisation_scale=0.01, **rngs)
    repeated = load_utilisation(percent, gpus=10, horizon_s=3 * 3600, utilisation_scale=0.01, repeat=True, **rngs)
    assert repeated.attrs["mean_utilisation"] == pytest.approx((0.2 + 0.5 + 0.2) / 3)
    with pytest.raises(TraceError, match="no row for interval 3"):
        load_utilisation(_profile(tmp_path, ",cpu_load\n1,0.2\n2,0.5\n4,0.1\n"), gpus=10, horizon_s=3600, **rngs)
    with pytest.raises(TraceError, match="each job id on one row only"):
        load_utilisation(_profile(tmp_path, ",cpu_load\n1,0.2\n1,0.5\n"), gpus=10, horizon_s=3600, **rngs)
    stamped = _profile(tmp_path, "time,cpu_load\n2023-01-01T00:00Z,0.1\n2023-01-01T00:30Z,0.3\n")
    assert load_utilisation(stamped, gpus=10, horizon_s=3600, **rngs).attrs["interval_s"] == 1800.0
    with pytest.raises(TypeError, match="arrivals_rng"):
        load_utilisation(stamped, gpus=10, horizon_s=3600, rng=np.random.default_rng(0))
    with pytest.raises(TraceError, match="two columns"):
        load_utilisation(_profile(tmp_path, ",cpu_load,x\n1,0.2,3\n"), gpus=10, horizon_s=3600, **rngs)


def _busy_fraction(jobs: pd.DataFrame, gpus: int, horizon_s: float) -> float:
    """Time-average share of GPUs holding a job over [0, horizon_s), from the run's job table."""
    started = jobs[jobs["start_s"].notna()]
    end = started["finish_s"].fillna(horizon_s).clip(upper=horizon_s)
    return float((started["gpus"] * (end - started["start_s"])).sum() / (gpus * horizon_s))


def test_utilisation_round_trip_mean_of_a_run_equals_the_profile_within_its_standard_error(tmp_path: Path) -> None:
    path = _profile(tmp_path)
    gpus, horizon = 40, 6 * 3600.0
    fractions = []
    for seed in range(8):
        sc = scenario(seed=seed, horizon_s=horizon, cluster={"gpus": gpus},
                      workload={"arrivals": None, "duration_s": None,
                                "trace": {"format": "utilisation", "path": str(path),
                                          "options": {"job_duration_s": 300.0}}})
        run = run_scenario(sc)
        fractions.append(_busy_fraction(run.result.jobs, gpus, horizon))
        assert run.summary["data_quality"]["workload.trace.path"]["format"] == "utilisation"
    fractions = np.array(fractions)
    target = np.mean([0.2, 0.5, 0.4, 0.3, 0.6, 0.25])
    se = fractions.std(ddof=1) / math.sqrt(fractions.size)
    assert 0 < se < 0.02  # the test has power: a 10 % rescaling error would be several SE away
    assert abs(fractions.mean() - target) < 4 * se, (fractions.mean(), target, se)


# --------------------------------------------------------------------------- the report in a run directory


#: A small scenario starting when the generated traces do, up to its ``supply:`` section (a format string).
SCENARIO_HEAD = """\
name: dq
start: 2023-01-01T00:00:00Z
horizon_s: 6h
cluster: {{gpus: 2, gpu_model: H100}}
workload:
  arrivals: {{process: poisson, rate_per_s: 0.001}}
  duration_s: {{distribution: constant, value: 300}}
supply:
  fill: hold
"""
SCENARIO = SCENARIO_HEAD + """\
  gap_warning_h: {warn}
  grid:
    carbon_g_per_kwh: {{path: ci.csv}}
"""


def test_run_directory_records_data_quality_and_console_warns(tmp_path: Path) -> None:
    _write(tmp_path, "ci.csv", _hourly_carbon([400.0, None, None, None, 410.0, 420.0, 430.0]))
    _write(tmp_path, "dq.yaml", SCENARIO.format(warn=2))
    proc = ok(dcsim_cli("run", "dq.yaml", "--out", "out", "--quiet", cwd=tmp_path))
    assert "warning: " in proc.stderr and "longest 3 h" in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    record = summary["data_quality"]["supply.grid.carbon_g_per_kwh"]
    assert (record["rows_read"], record["dropped_nan_rows"], record["filled_steps"]) == (7, 3, 3)
    assert record["longest_gap_h"] == 3.0 and record["source"] == str(tmp_path / "ci.csv")
    assert len(record["warnings"]) == 1
    meta = yaml.safe_load((tmp_path / "out" / "metadata.yaml").read_text(encoding="utf-8"))
    assert meta["data_quality"] == summary["data_quality"]


def test_validate_data_reads_the_files(tmp_path: Path) -> None:
    _write(tmp_path, "ci.csv", _hourly_carbon([400.0, None, 410.0] + [420.0] * 5))
    _write(tmp_path, "dq.yaml", SCENARIO.format(warn=6))
    proc = ok(dcsim_cli("validate", "--data", "dq.yaml", cwd=tmp_path))
    assert "supply.grid.carbon_g_per_kwh:" in proc.stdout and "dropped nan rows 1" in proc.stdout
    assert "1 gap(s), longest 1 h (hold)" in proc.stdout
    _write(tmp_path, "ci.csv", _hourly_carbon([400.0, 1e308]))
    ok(dcsim_cli("validate", "dq.yaml", cwd=tmp_path))  # without --data the files are not read
    proc = user_error(dcsim_cli("validate", "--data", "dq.yaml", cwd=tmp_path))
    assert "ci.csv: column 'carbon_g_per_kwh' at line 3: got '1e+308'" in proc.stderr
    assert "[0, 5000] gCO2/kWh" in proc.stderr


def test_jobs_from_a_trace_carry_their_counts_into_the_report(tmp_path: Path) -> None:
    path = _write(tmp_path, "jobs.csv", "arrival_s,gpus,work_gpu_s\n0,1,10\n100,1,10\n99999,1,10\n")
    sc = scenario(horizon_s=3600, workload={"arrivals": None, "duration_s": None,
                                            "trace": {"format": "csv", "path": str(path)}})
    jobs = build_jobs(sc, Streams(0))
    assert jobs.attrs["rows_read"] == 3 and jobs.attrs["dropped_after_horizon"] == 1 and jobs.attrs["jobs"] == 2
