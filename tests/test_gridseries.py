"""Tests for dcsim.gridseries: carbon-intensity and price loaders on hand-built files and real traces."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcsim.errors import TraceError
from dcsim.gridseries import load_carbon_intensity, load_price, load_series_csv
from dcsim.timeseries import StepSeries

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"

EM_HEADER = (
    "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
    "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,Data Source,"
    "Data Estimated,Data Estimation Method"
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _utc(*stamps: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([pd.Timestamp(s) for s in stamps]).tz_convert("UTC")


def _trace(relative: str) -> Path:
    path = TRACES / relative
    if not path.is_file():
        pytest.skip(f"real trace {relative} not present at {TRACES}")
    return path


# --------------------------------------------------------------------------- carbon formats


@pytest.fixture
def em_file(tmp_path: Path) -> Path:
    return _write(
        tmp_path,
        "em.csv",
        EM_HEADER
        + "\n2023-01-01 00:00:00,USA,CAISO,US-CAL-CISO,238.69,309.75,48.08,39.45,caiso.com,false,\n"
        "2023-01-01 01:00:00,USA,CAISO,US-CAL-CISO,220.25,283.77,53.92,40.63,caiso.com,false,\n"
        "2023-01-01 02:00:00,USA,CAISO,US-CAL-CISO,223.4,286.91,53.54,39.9,caiso.com,true,TIME_SLICER\n",
    )


def test_electricitymaps_direct_values_exact(em_file: Path) -> None:
    s = load_carbon_intensity(em_file)
    assert s.name == "carbon_g_per_kwh"
    assert s.dtype == np.float64
    assert s.tolist() == [238.69, 220.25, 223.4]
    assert s.index.equals(_utc("2023-01-01T00:00Z", "2023-01-01T01:00Z", "2023-01-01T02:00Z"))
    assert str(s.index.tz) == "UTC"
    assert s.attrs["format"] == "electricitymaps"
    assert s.attrs["dropped_nan_rows"] == 0


def test_electricitymaps_lca_column_selectable(em_file: Path) -> None:
    assert load_carbon_intensity(em_file, column="lca").tolist() == [309.75, 283.77, 286.91]
    assert load_carbon_intensity(em_file, fmt="electricitymaps", column="direct").tolist() == [238.69, 220.25, 223.4]


def test_electricitymaps_unknown_column_choice_is_trace_error(em_file: Path) -> None:
    with pytest.raises(TraceError, match="'direct', 'lca'") as info:
        load_carbon_intensity(em_file, column="Renewable Percentage")
    assert info.value.path == em_file


def test_eia930_drops_nan_rows_and_counts_them(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "eia.csv",
        "timestamp,WND,SUN,WAT,OIL,NG,COL,NUC,OTH,avg_CI\n"
        "2022-01-01 00:00:00+00:00,3130.0,1367.0,2304.0,44.0,6764.0,19.0,2265.0,189.0,222.5\n"
        "2022-01-01 01:00:00+00:00,,,,,,,,,\n"
        "2022-01-01 02:00:00+00:00,2657.0,0.0,2859.0,41.0,9221.0,19.0,2265.0,1111.0,271.25\n"
        "2022-01-01 03:00:00+00:00,2657.0,0.0,2859.0,41.0,9221.0,19.0,2265.0,1111.0,NaN\n",
    )
    s = load_carbon_intensity(path)
    assert s.attrs["format"] == "eia930"
    assert s.attrs["dropped_nan_rows"] == 2
    assert s.tolist() == [222.5, 271.25]
    assert s.index.equals(_utc("2022-01-01T00:00Z", "2022-01-01T02:00Z"))


def test_moer_kg_per_kwh_scaled_to_g(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "moer.csv", "time,moer_kg_per_kwh\n2019-04-30T00:00:00Z,0.25\n2019-04-30T01:00:00Z,0.5\n"
    )
    s = load_carbon_intensity(path)
    assert s.attrs["format"] == "moer"
    assert s.tolist() == [250.0, 500.0]


def test_generic_csv_naive_is_utc_and_offsets_are_converted(tmp_path: Path) -> None:
    naive = _write(tmp_path, "naive.csv", "time,carbon_g_per_kwh\n2024-05-01 00:00,100\n2024-05-01 01:00,200\n")
    s = load_carbon_intensity(naive)
    assert s.attrs["format"] == "csv"
    assert s.index.equals(_utc("2024-05-01T00:00Z", "2024-05-01T01:00Z"))
    offset = _write(
        tmp_path,
        "ci.csv",
        "time,carbon_g_per_kwh,other\n"
        "2024-05-01T02:00:00+02:00,100\n"  # 00:00 UTC
        "2024-05-01T03:00:00+02:00,200,7\n"  # 01:00 UTC
        "2024-05-01T04:00:00+02:00,300,8\n",
    )
    s = load_carbon_intensity(offset)
    assert s.index.equals(_utc("2024-05-01T00:00Z", "2024-05-01T01:00Z", "2024-05-01T02:00Z"))
    assert s.tolist() == [100.0, 200.0, 300.0]


def test_generic_csv_mixing_naive_and_offset_times_is_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "ci.csv",
        "time,carbon_g_per_kwh\n2024-05-01 00:00,100\n2024-05-01T03:00:00+02:00,200\n2024-05-01T02:00:00Z,300\n",
    )
    with pytest.raises(TraceError, match=r"ci.csv: column 'time' at line 3: got '2024-05-01T03:00:00\+02:00'; "
                                         r"expected every timestamp in one form: line 2 is without a UTC offset"):
        load_carbon_intensity(path)


def test_generic_csv_named_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "ci.csv", "time,a,b\n2024-05-01T00:00Z,1,10\n2024-05-01T01:00Z,2,20\n")
    assert load_carbon_intensity(path, fmt="csv", column="b").tolist() == [10.0, 20.0]
    with pytest.raises(TraceError, match="none is named 'carbon_g_per_kwh'"):
        load_carbon_intensity(path)  # two candidate columns and no name: ambiguous


def test_unsorted_rows_come_back_sorted(tmp_path: Path) -> None:
    path = _write(tmp_path, "ci.csv", "time,v\n2024-05-01T02:00Z,3\n2024-05-01T00:00Z,1\n2024-05-01T01:00Z,2\n")
    s = load_carbon_intensity(path)
    assert s.index.is_monotonic_increasing
    assert s.tolist() == [1.0, 2.0, 3.0]


def test_series_feeds_step_series(em_file: Path) -> None:
    s = load_carbon_intensity(em_file)
    steps = StepSeries.from_pandas("grid carbon_g_per_kwh", s, start=pd.Timestamp("2023-01-01T00:00Z"))
    assert steps.value_at(0.0) == 238.69
    assert steps.value_at(3599.0) == 238.69
    assert steps.value_at(3600.0) == 220.25
    assert steps.end_s == 3 * 3600.0


# --------------------------------------------------------------------------- price formats


def test_caiso_oasis_values_exact(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "caiso.csv",
        "INTERVALSTARTTIME_GMT,INTERVALENDTIME_GMT,NODE,MARKET,VALUE\n"
        "2023-01-01T00:00:00-00:00,2023-01-01T01:00:00-00:00,TH_NP15_GEN-APND,CAISO_DAM,140.32825\n"
        "2023-01-01T01:00:00-00:00,2023-01-01T02:00:00-00:00,TH_NP15_GEN-APND,CAISO_DAM,-3.5\n",
    )
    s = load_price(path)
    assert s.name == "price_usd_per_mwh"
    assert s.attrs["format"] == "caiso_oasis"
    assert s.tolist() == [140.32825, -3.5]  # negative prices are real and kept
    assert s.index.equals(_utc("2023-01-01T00:00Z", "2023-01-01T01:00Z"))


def test_caiso_oasis_keeps_lmp_rows_only(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "caiso.csv",
        "INTERVALSTARTTIME_GMT,NODE,MARKET,LMP_TYPE,VALUE\n"
        "2023-01-01T00:00:00-00:00,N,DAM,LMP,50\n"
        "2023-01-01T00:00:00-00:00,N,DAM,MCC,-1\n"
        "2023-01-01T01:00:00-00:00,N,DAM,MCE,49\n"
        "2023-01-01T01:00:00-00:00,N,DAM,LMP,51\n",
    )
    assert load_price(path).tolist() == [50.0, 51.0]


def test_caiso_oasis_mixed_nodes_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "caiso.csv",
        "INTERVALSTARTTIME_GMT,NODE,MARKET,VALUE\n2023-01-01T00:00Z,A,DAM,1\n2023-01-01T00:00Z,B,DAM,2\n",
    )
    with pytest.raises(TraceError, match="column 'NODE'.*single node"):
        load_price(path)


def test_ercot_local_offsets_converted_across_dst(tmp_path: Path) -> None:
    # Hand-checked: CST is UTC-6, CDT is UTC-5. 12 March 2023 skips 02:00 local; 5 November repeats 01:00.
    path = _write(
        tmp_path,
        "ercot.csv",
        "Datetime,Price (USD/MWh)\n"
        "2023-03-12 01:00:00-06:00,19.06\n"
        "2023-03-12 03:00:00-05:00,16.91\n"
        "2023-11-05 01:00:00-05:00,22.49\n"
        "2023-11-05 01:00:00-06:00,25.61\n",
    )
    s = load_price(path)
    assert s.attrs["format"] == "ercot"
    assert s.index.equals(
        _utc("2023-03-12T07:00Z", "2023-03-12T08:00Z", "2023-11-05T06:00Z", "2023-11-05T07:00Z")
    )
    assert s.tolist() == [19.06, 16.91, 22.49, 25.61]


def test_ercot_without_offset_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "ercot.csv", "Datetime,Price (USD/MWh)\n2023-01-01 00:00:00-06:00,1\n2023-11-05 01:00:00,2\n"
    )
    with pytest.raises(TraceError, match=r"column 'Datetime' at line 3.*UTC offset"):
        load_price(path)


def test_price_generic_csv(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.csv", "time,price_usd_per_mwh\n2023-01-01T00:00Z,30\n2023-01-01T00:05Z,31.5\n")
    assert load_price(path).tolist() == [30.0, 31.5]


# --------------------------------------------------------------------------- errors


def test_missing_file_is_trace_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(TraceError, match="nope.csv") as info:
        load_carbon_intensity(missing)
    assert info.value.field == "file"


def test_unknown_format_lists_allowed(tmp_path: Path, em_file: Path) -> None:
    with pytest.raises(TraceError, match="'electricitymaps'") as info:
        load_carbon_intensity(em_file, fmt="watttime")
    assert info.value.field == "fmt" and info.value.value == "watttime"


def test_unrecognised_header_is_trace_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", "when,what\n2023-01-01,1\n")
    with pytest.raises(TraceError, match="header") as info:
        load_price(path)
    assert info.value.path == path


def test_missing_column_names_column_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "eia.csv", "timestamp,WND\n2022-01-01 00:00:00+00:00,1\n")
    with pytest.raises(TraceError) as info:
        load_carbon_intensity(path, fmt="eia930")
    message = str(info.value)
    assert str(path) in message
    assert "avg_CI" in message
    assert info.value.field == "header" and "(missing: 'avg_CI')" in message


def test_unparseable_timestamp_names_line_and_value(tmp_path: Path) -> None:
    path = _write(tmp_path, "m.csv", "time,moer_kg_per_kwh\n2019-04-30T00:00:00Z,0.1\n30/04/2019 01h,0.2\n")
    with pytest.raises(TraceError) as info:
        load_carbon_intensity(path)
    assert info.value.field == "column 'time' at line 3"
    assert info.value.value == "30/04/2019 01h"
    assert str(path) in str(info.value)


def test_missing_timestamp_is_trace_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "m.csv", "time,moer_kg_per_kwh\n2019-04-30T00:00:00Z,0.1\n,0.2\n")
    with pytest.raises(TraceError, match="line 3"):
        load_carbon_intensity(path)


def test_non_numeric_value_names_column_line_and_value(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "em.csv",
        EM_HEADER + "\n2023-01-01 00:00:00,USA,CAISO,US-CAL-CISO,238.69,309.75,48,39,x,false,\n"
        "2023-01-01 01:00:00,USA,CAISO,US-CAL-CISO,n/a?,283.77,53,40,x,false,\n",
    )
    with pytest.raises(TraceError) as info:
        load_carbon_intensity(path)
    assert info.value.field == "column 'Carbon Intensity gCO₂eq/kWh (direct)' at line 3"
    assert info.value.value == "n/a?"
    assert str(path) in str(info.value) and "finite number" in str(info.value)


def test_negative_carbon_refused_but_negative_price_kept(tmp_path: Path) -> None:
    path = _write(tmp_path, "v.csv", "time,v\n2023-01-01T00:00Z,-1\n")
    with pytest.raises(TraceError, match=">= 0"):
        load_carbon_intensity(path)
    assert load_price(path).tolist() == [-1.0]


def test_infinite_value_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "v.csv", "time,v\n2023-01-01T00:00Z,inf\n")
    with pytest.raises(TraceError, match="line 2"):
        load_price(path)


def test_duplicate_time_refused(tmp_path: Path) -> None:
    # Same instant written in two offsets: a duplicate once in UTC.
    path = _write(tmp_path, "v.csv", "time,v\n2023-01-01T00:00Z,1\n2023-01-01T01:00Z,2\n2023-01-01T02:00+01:00,3\n")
    with pytest.raises(TraceError) as info:
        load_price(path)
    assert info.value.field == "column 'time' at line 4"


def test_empty_and_all_nan_files_refused(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="empty"):
        load_price(_write(tmp_path, "empty.csv", ""))
    with pytest.raises(TraceError, match="no numeric values"):
        load_price(_write(tmp_path, "nan.csv", "time,v\n2023-01-01T00:00Z,\n2023-01-01T01:00Z,NaN\n"))


def test_ragged_csv_row_names_its_line_and_extra_cells(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.csv", "time,v\n2023-01-01T00:00Z,1\n2023-01-01T01:00Z,2,3,4\n")
    with pytest.raises(TraceError) as info:
        load_price(path)
    assert info.value.field == "line 3"
    assert "4 cells, 2 extra cells beyond the header's 2" in str(info.value)


def test_every_row_one_cell_too_many_is_refused_not_shifted(tmp_path: Path) -> None:
    # pandas would silently take the first cells as the index and read every value under the wrong name
    path = _write(tmp_path, "r.csv", "time,v\n2023-01-01T00:00Z,1,9\n2023-01-01T01:00Z,2,9\n")
    with pytest.raises(TraceError) as info:
        load_price(path)
    assert info.value.field == "line 2" and "1 extra cell beyond the header's 2 (on every data row)" in str(info.value)


def test_load_series_csv_custom_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "s.csv", "ts,x\n2023-01-01T00:00Z,5\n2023-01-01T00:30Z,-2\n")
    s = load_series_csv(path, "x", "thing_w", time_column="ts")
    assert s.name == "thing_w" and s.tolist() == [5.0, -2.0]
    with pytest.raises(TraceError, match="thing_w >= 0"):
        load_series_csv(path, "x", "thing_w", time_column="ts", non_negative=True)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0, max_value=5000, allow_nan=False), min_size=1, max_size=30),
    step_s=st.integers(min_value=1, max_value=7200),
)
def test_generic_csv_round_trip(tmp_path_factory, values: list[float], step_s: int) -> None:
    times = pd.Timestamp("2024-02-28T22:00Z") + pd.to_timedelta(np.arange(len(values)) * step_s, unit="s")
    path = tmp_path_factory.mktemp("rt") / "ci.csv"
    pd.DataFrame({"time": times.strftime("%Y-%m-%dT%H:%M:%S%z"), "carbon_g_per_kwh": [repr(v) for v in values]}).to_csv(
        path, index=False
    )
    s = load_carbon_intensity(path)
    assert s.tolist() == values
    assert (s.index == times).all()


# --------------------------------------------------------------------------- real traces (skip when absent)


def test_real_electricitymaps_2023() -> None:
    s = load_carbon_intensity(_trace("carbon/electricitymaps_US-CAL-CISO_2023_hourly.csv"))
    assert len(s) == 8760
    assert s.attrs["dropped_nan_rows"] == 0
    assert s.index[0] == pd.Timestamp("2023-01-01T00:00Z")
    assert s.index[-1] == pd.Timestamp("2023-12-31T23:00Z")
    assert (np.diff(s.index.asi8) == np.diff(s.index.asi8)[0]).all()  # strictly hourly, no gaps
    assert s.iloc[0] == 238.69
    lca = load_carbon_intensity(_trace("carbon/electricitymaps_US-CAL-CISO_2023_hourly.csv"), column="lca")
    assert lca.iloc[0] == 309.75
    assert (lca >= s).all()  # life-cycle intensity includes the direct emissions


def test_real_eia930_nan_cells() -> None:
    path = _trace("carbon/eia930_CISO_2022_fuelmix_avgCI.csv")
    raw = pd.read_csv(path)
    assert int(raw.isna().sum().sum()) == 27  # as the traces README says
    s = load_carbon_intensity(path)
    assert s.attrs["format"] == "eia930"
    assert s.attrs["dropped_nan_rows"] == int(raw["avg_CI"].isna().sum()) == 3
    assert len(s) == 8760 - 3
    assert s.index[0] == pd.Timestamp("2022-01-01T00:00Z")
    assert s.iloc[0] == pytest.approx(222.29592090536002, rel=1e-15)
    assert 50 < s.median() < 500


def test_real_moer() -> None:
    s = load_carbon_intensity(_trace("carbon/caiso_sgip_moer_PGE_hourly_2019-05_2021-08.csv"))
    assert s.attrs["format"] == "moer"
    assert len(s) == 20544
    assert s.iloc[0] == pytest.approx(159.32)
    assert 100 < s.median() < 1000  # marginal rates of gas plants, g/kWh


def test_real_caiso_np15() -> None:
    s = load_price(_trace("price/caiso_TH_NP15_dam_2023_gmt.csv"))
    assert s.attrs["format"] == "caiso_oasis"
    assert len(s) == 8760
    assert s.index[0] == pd.Timestamp("2023-01-01T00:00Z")
    assert s.iloc[0] == 140.32825


def test_real_ercot_hourly_in_utc_across_dst() -> None:
    s = load_price(_trace("price/ercot_HB_HUBAVG_dam_2023_local.csv"))
    assert s.attrs["format"] == "ercot"
    assert len(s) == 8760
    assert s.index[0] == pd.Timestamp("2023-01-01T06:00Z")  # midnight CST
    assert s.index[-1] == pd.Timestamp("2024-01-01T05:00Z")  # 23:00 CST on 31 December
    # The local file skips an hour in March and repeats one in November; in UTC it is evenly hourly.
    assert set(np.diff(s.index.asi8) // 10**6) == {3600}
