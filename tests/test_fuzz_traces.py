"""Fuzz suite of broken traces: every trace format, every kind of damage, a clear error and never a traceback.

Each format is described once (:class:`Spec`: how to write a valid file of generated rows and how to
load it); hypothesis draws the rows and the damage: a required column renamed, bytes that are not
UTF-8, an empty file, random binary, a non-finite or absurd number in a value cell, a timestamp in
another time-zone form, a repeated time or id, rows out of order. A damaged file must raise
:class:`dcsim.errors.TraceError` naming the file, the place (column and line or row, or the header)
and the value; rows out of order are sorted with a warning that says so. The budget is fixed
(``max_examples`` below) so the file runs in well under a minute.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcsim.dataquality import DataQualityWarning
from dcsim.errors import TraceError
from dcsim.gridseries import load_carbon_intensity, load_price
from dcsim.renewables import load_power_csv, load_wind_speed, solar_power_w
from dcsim.workload_traces import load_alibaba_pods, load_azure_llm, load_job_csv, load_swf, load_utilisation
from tests.test_data_quality import SCENARIO_HEAD

BUDGET = settings(max_examples=8, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

EM_HEADER = ["Datetime (UTC)", "Country", "Zone Id", "Carbon Intensity gCO₂eq/kWh (direct)",
             "Carbon Intensity gCO₂eq/kWh (LCA)"]
T0 = pd.Timestamp("2023-01-01T00:00:00")


def _stamp(k: int, form: str) -> str:
    """Row ``k``'s hourly timestamp in a time-zone form: naive, 'Z', '+00:00' or ERCOT's '-06:00'."""
    t = T0 + pd.Timedelta(hours=k)
    if form == "-06:00":
        return f"{t - pd.Timedelta(hours=6):%Y-%m-%d %H:%M:%S}-06:00"
    return f"{t:%Y-%m-%dT%H:%M:%S}" + {"naive": "", "Z": "Z", "+00:00": "+00:00"}[form]


def _other_form(text: str, form: str) -> str:
    """The same instant written in another time-zone form than the file's ``form``."""
    if form == "naive":
        return text + "+00:00"
    return pd.Timestamp(text).tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S")  # offset dropped


@dataclass
class Spec:
    """How to write and load one trace format.

    ``make_row(k, x)`` gives row ``k``'s cells from a number ``x`` in [0, 1]; ``required`` are
    header positions a file must have; ``numeric`` the value cells a loader reads; ``time`` the
    timestamp cell (None: no ISO timestamps); ``ids`` the cell that must not repeat (time or job id);
    ``first_line`` the file line of data row 0 and ``where(i)`` how messages name data row ``i``.
    """

    name: str
    header: list[str] | None
    make_row: Callable[[int, float], list[str]]
    load: Callable[[Path], object]
    required: list[int]
    numeric: list[int]
    time: int | None = None
    form: str = "naive"
    ids: int | None = None
    pre: list[str] = field(default_factory=list)
    sep: str = ","
    suffix: str = ".csv"
    series: bool = True

    @property
    def first_line(self) -> int:
        return len(self.pre) + (1 if self.header is not None else 0) + 1

    def where(self, i: int) -> str:
        if self.series or self.name == "swf":
            return f"line {self.first_line + i}"
        return f"data row {i + 1}"

    def text(self, rows: list[list[str]], header: list[str] | None = None) -> str:
        lines = list(self.pre)
        if self.header is not None:
            lines.append(self.sep.join(header or self.header))
        lines += [self.sep.join(r) for r in rows]
        return "\n".join(lines) + "\n"


def _rng_pair() -> dict:
    return {"arrivals_rng": np.random.default_rng(0), "rng": np.random.default_rng(1)}


SPECS = [
    Spec("electricitymaps", EM_HEADER,
         lambda k, x: [_stamp(k, "naive").replace("T", " "), "USA", "US-CAL-CISO", f"{100 + 300 * x:.2f}",
                       f"{150 + 300 * x:.2f}"],
         lambda p: load_carbon_intensity(p, fmt="electricitymaps"), [0, 3], [3], time=0, ids=0),
    Spec("eia930", ["timestamp", "avg_CI"], lambda k, x: [_stamp(k, "+00:00"), f"{200 + 100 * x:.3f}"],
         lambda p: load_carbon_intensity(p, fmt="eia930"), [0, 1], [1], time=0, form="+00:00", ids=0),
    Spec("moer", ["time", "moer_kg_per_kwh"], lambda k, x: [_stamp(k, "Z"), f"{0.2 + 0.3 * x:.4f}"],
         lambda p: load_carbon_intensity(p, fmt="moer"), [0, 1], [1], time=0, form="Z", ids=0),
    Spec("carbon csv", ["time", "carbon_g_per_kwh"], lambda k, x: [_stamp(k, "naive"), f"{50 + 400 * x:.2f}"],
         lambda p: load_carbon_intensity(p, fmt="csv"), [0], [1], time=0, ids=0),
    Spec("caiso_oasis", ["INTERVALSTARTTIME_GMT", "NODE", "VALUE"],
         lambda k, x: [_stamp(k, "+00:00"), "TH_NP15", f"{-20 + 120 * x:.2f}"],
         lambda p: load_price(p, fmt="caiso_oasis"), [0, 2], [2], time=0, form="+00:00", ids=0),
    Spec("ercot", ["Datetime", "Price (USD/MWh)"], lambda k, x: [_stamp(k, "-06:00"), f"{10 + 90 * x:.2f}"],
         lambda p: load_price(p, fmt="ercot"), [0, 1], [1], time=0, form="-06:00", ids=0),
    Spec("price csv", ["time", "price_usd_per_mwh"], lambda k, x: [_stamp(k, "Z"), f"{-50 + 150 * x:.2f}"],
         lambda p: load_price(p, fmt="csv"), [0], [1], time=0, form="Z", ids=0),
    Spec("wind csv", ["time", "wind_speed_m_s"], lambda k, x: [_stamp(k, "naive"), f"{25 * x:.2f}"],
         lambda p: load_wind_speed(p, fmt="csv"), [0], [1], time=0, ids=0),
    Spec("nrel_wtk", ["Year", "Month", "Day", "Hour", "Minute", "wind speed at 100m (m/s)"],
         lambda k, x: [str(v) for v in ((T0 + pd.Timedelta(hours=k)).year, (T0 + pd.Timedelta(hours=k)).month,
                                        (T0 + pd.Timedelta(hours=k)).day, (T0 + pd.Timedelta(hours=k)).hour, 0)]
         + [f"{25 * x:.2f}"],
         lambda p: load_wind_speed(p, fmt="nrel_wtk"), [0, 1, 2, 3, 4, 5], [0, 3, 5],
         pre=["SiteID,7,Data Timezone,0,Longitude,-128.7,Latitude,39.9"]),
    Spec("power csv", ["time", "power_w"], lambda k, x: [_stamp(k, "Z"), f"{1e6 * x:.1f}"],
         lambda p: load_power_csv(p), [0, 1], [1], time=0, form="Z", ids=0),
    Spec("alibaba", ["name", "num_gpu", "gpu_milli", "pod_phase", "creation_time", "deletion_time",
                     "scheduled_time"],
         lambda k, x: [f"pod-{k}", "1", "1000", "Succeeded", str(10 * k), str(10 * k + 100 + int(50 * x)),
                       str(10 * k + 1)],
         lambda p: load_alibaba_pods(p), [1, 2, 3, 4, 5, 6], [1, 2, 4, 5, 6], ids=0, series=False),
    Spec("azure_llm", ["TIMESTAMP", "ContextTokens", "GeneratedTokens"],
         lambda k, x: [_stamp(k, "naive").replace("T", " ") + ".5", str(100 + int(900 * x)), str(1 + int(99 * x))],
         lambda p: load_azure_llm(p), [0, 1, 2], [1, 2], time=0, series=False),
    Spec("swf", None,
         lambda k, x: [str(k + 1), str(60 * k), "0", str(100 + int(900 * x)), "4"] + ["-1"] * 2 + ["4"]
         + ["-1"] * 10,
         lambda p: load_swf(p), [], [0, 1, 3, 4, 7], ids=0, pre=["; synthetic log"], sep=" ", suffix=".swf",
         series=False),
    Spec("job csv", ["arrival_s", "gpus", "work_gpu_s", "job_id"],
         lambda k, x: [str(5.0 * k), "1", f"{10 + 100 * x:.3f}", f"j{k}"],
         lambda p: load_job_csv(p), [0, 1, 2], [0, 1, 2], ids=3, series=False),
    Spec("utilisation", ["", "cpu_load"], lambda k, x: [str(k + 1), f"{x:.3f}"],
         lambda p: load_utilisation(p, gpus=8, horizon_s=3600.0, **_rng_pair()), [1], [1], ids=0, series=False),
]
BY_NAME = {s.name: s for s in SPECS}
ids = [s.name for s in SPECS]

rows_strategy = st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=3, max_size=10)


def _write_rows(tmp_path: Path, spec: Spec, rows: list[list[str]], header: list[str] | None = None) -> Path:
    path = tmp_path / f"trace{spec.suffix}"
    path.write_text(spec.text(rows, header), encoding="utf-8")
    return path


def _rows(spec: Spec, xs: list[float]) -> list[list[str]]:
    return [spec.make_row(k, x) for k, x in enumerate(xs)]


def _clear_error(spec: Spec, path: Path, *, where: str | None = None, value: object = None) -> TraceError:
    """Load ``path``: it must fail with a TraceError naming the file, a place and a value (no other exception)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        with pytest.raises(TraceError) as info:
            spec.load(path)
    err = info.value
    message = str(err)
    assert message.startswith(f"{path}: ") and err.path == path
    assert any(word in err.field for word in ("column", "line", "row", "header", "file", "encoding", "field")), err
    assert "got " in message and "expected " in message and "Unnamed" not in message and "np.float64" not in message
    if where is not None:
        assert where in err.field, (where, message)
    if value is not None:
        assert err.value == value, message
    return err


@pytest.mark.parametrize("name", ids)
def test_valid_generated_files_load(tmp_path: Path, name: str) -> None:
    spec = BY_NAME[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataQualityWarning)  # a clean file raises no data-quality warning
        out = spec.load(_write_rows(tmp_path, spec, _rows(spec, [0.1, 0.5, 0.9, 0.3])))
    assert len(out) >= 3


@pytest.mark.parametrize("name", [s.name for s in SPECS if s.header is not None and s.required])
@BUDGET
@given(xs=rows_strategy, data=st.data())
def test_wrong_columns(tmp_path: Path, name: str, xs: list[float], data) -> None:
    spec = BY_NAME[name]
    j = data.draw(st.sampled_from(spec.required), label="column")
    header = list(spec.header)
    header[j] = data.draw(st.text("abcxyz_ ", min_size=1, max_size=8).filter(
        lambda t: t.strip() not in spec.header and t.strip() != ""), label="new name")
    path = _write_rows(tmp_path, spec, _rows(spec, xs), header)
    _clear_error(spec, path)


@pytest.mark.parametrize("name", ids)
@BUDGET
@given(xs=rows_strategy, data=st.data(), junk=st.sampled_from([b"\xff", b"\xfe\xfd", b"\xc3\x28", b"\x80abc"]))
def test_non_utf8_bytes(tmp_path: Path, name: str, xs: list[float], data, junk: bytes) -> None:
    spec = BY_NAME[name]
    rows = _rows(spec, xs)
    i = data.draw(st.integers(0, len(rows) - 1), label="row")
    text = spec.text(rows).encode("utf-8")
    lines = text.split(b"\n")
    target = spec.first_line - 1 + i
    lines[target] = lines[target] + junk if spec.sep == " " else lines[target].replace(b",", b"," + junk, 1)
    path = tmp_path / f"trace{spec.suffix}"
    path.write_bytes(b"\n".join(lines))
    err = _clear_error(spec, path)
    assert "UTF-8" in str(err)


@pytest.mark.parametrize("name", [s.name for s in SPECS if s.header is not None and s.sep == ","])
@BUDGET
@given(xs=rows_strategy, data=st.data(), extra=st.integers(1, 3), every_row=st.booleans())
def test_ragged_rows_name_the_line_and_the_extra_cells(tmp_path: Path, name: str, xs: list[float], data,
                                                       extra: int, every_row: bool) -> None:
    """A row with more cells than the header is refused naming its line; so is a file whose every row has one
    cell too many (pandas would take the surplus as the index and read every value under the wrong name)."""
    spec = BY_NAME[name]
    rows = _rows(spec, xs)
    if every_row:
        extra = 1
        rows = [row + ["9"] for row in rows]
        i = 0
    else:
        i = data.draw(st.integers(0, len(rows) - 1), label="row")
        rows[i] = rows[i] + ["9"] * extra
    err = _clear_error(spec, _write_rows(tmp_path, spec, rows), where=f"line {spec.first_line + i}")
    assert f"{extra} extra cell" in str(err)


@pytest.mark.parametrize("name", ids)
def test_empty_and_header_only(tmp_path: Path, name: str) -> None:
    spec = BY_NAME[name]
    path = tmp_path / f"trace{spec.suffix}"
    path.write_bytes(b"")
    _clear_error(spec, path)
    path.write_text(spec.text([]), encoding="utf-8")
    _clear_error(spec, path)


@pytest.mark.parametrize("name", ids)
@BUDGET
@given(blob=st.binary(min_size=1, max_size=300))
def test_binary(tmp_path: Path, name: str, blob: bytes) -> None:
    spec = BY_NAME[name]
    path = tmp_path / f"trace{spec.suffix}"
    path.write_bytes(blob)
    _clear_error(spec, path)


NONFINITE = ["inf", "-inf", "Infinity", "1e308", "-1e308", "1e999", "9e99"]


@pytest.mark.parametrize("name", ids)
@BUDGET
@given(xs=rows_strategy, data=st.data(), bad=st.sampled_from(NONFINITE))
def test_non_finite_and_absurd_values(tmp_path: Path, name: str, xs: list[float], data, bad: str) -> None:
    spec = BY_NAME[name]
    rows = _rows(spec, xs)
    i = data.draw(st.integers(0, len(rows) - 1), label="row")
    j = data.draw(st.sampled_from(spec.numeric), label="cell")
    rows[i][j] = bad
    err = _clear_error(spec, _write_rows(tmp_path, spec, rows), where=spec.where(i))
    assert str(err.value) == bad or bad in str(err.value)


@pytest.mark.parametrize("name", [s.name for s in SPECS if s.time is not None])
@BUDGET
@given(xs=rows_strategy, data=st.data())
def test_mixed_time_zones(tmp_path: Path, name: str, xs: list[float], data) -> None:
    spec = BY_NAME[name]
    rows = _rows(spec, xs)
    i = data.draw(st.integers(1, len(rows) - 1), label="row")
    rows[i][spec.time] = _other_form(rows[i][spec.time], spec.form)
    _clear_error(spec, _write_rows(tmp_path, spec, rows), where=spec.where(i), value=rows[i][spec.time])


@pytest.mark.parametrize("name", [s.name for s in SPECS if s.ids is not None])
@BUDGET
@given(xs=rows_strategy, data=st.data())
def test_duplicate_times_and_ids(tmp_path: Path, name: str, xs: list[float], data) -> None:
    spec = BY_NAME[name]
    rows = _rows(spec, xs)
    i = data.draw(st.integers(0, len(rows) - 1), label="row")
    rows.insert(i + 1, list(rows[i]))
    _clear_error(spec, _write_rows(tmp_path, spec, rows), where=spec.where(i + 1))


@pytest.mark.parametrize("name", [s.name for s in SPECS if s.name not in ("utilisation", "azure_llm")])
@BUDGET
@given(xs=rows_strategy, seed=st.integers(0, 2**16))
def test_unsorted_rows_are_sorted_and_said(tmp_path: Path, name: str, xs: list[float], seed: int) -> None:
    spec = BY_NAME[name]
    rows = _rows(spec, xs)
    order = np.random.default_rng(seed).permutation(len(rows))
    if (order == np.arange(len(rows))).all():
        order = order[::-1]
    expected = spec.load(_write_rows(tmp_path, spec, rows))
    shuffled = [rows[k] for k in order]
    with pytest.warns(DataQualityWarning, match="sorted"):
        got = spec.load(_write_rows(tmp_path, spec, shuffled))
    if spec.series:
        pd.testing.assert_series_equal(got, expected, check_freq=False)
        assert got.attrs["unsorted_rows"] >= 1
    else:
        cols = ["arrival_s", "gpus", "work_gpu_s"]
        pd.testing.assert_frame_equal(got[cols].reset_index(drop=True), expected[cols].reset_index(drop=True))
        assert got.attrs["unsorted_rows"] >= 1


# --------------------------------------------------------------------------- EPW weather


EPW_TIMES = pd.DatetimeIndex(["2023-06-21T20:00Z"])


def _epw_text(ghi_at: dict[int, str] | None = None, records: int = 8760) -> str:
    stamps = pd.Timestamp("2015-01-01") + pd.to_timedelta(np.arange(records), unit="h")
    header = ["LOCATION,Testville,CA,USA,SYNTH,000000,37.36,-121.93,-8.0,10.0", "DESIGN CONDITIONS,0",
              "TYPICAL/EXTREME PERIODS,0", "GROUND TEMPERATURES,0", "HOLIDAYS/DAYLIGHT SAVINGS,No,0,0,0",
              "COMMENTS 1,synthetic", "COMMENTS 2,", "DATA PERIODS,1,1,Data,Sunday,1/ 1,12/31"]
    ghi_at = ghi_at or {}
    lines = [f"2015,{t.month},{t.day},{t.hour + 1},60,?9,20.0,5.0,50,101325,0,0,300,{ghi_at.get(k, '100')},0,100,"
             "0,0,0,0,180,2.0,0,0,20,77777,9,999999999,0,0.1,0,88,0.2,0,0" for k, t in enumerate(stamps)]
    return "\n".join(header + lines) + "\n"


def _epw_error(path: Path) -> TraceError:
    with pytest.raises(TraceError) as info:
        solar_power_w(EPW_TIMES, 37.36, -121.93, 1e6, weather_epw=path)
    assert str(info.value).startswith(f"{path}: ") and "np.float64" not in str(info.value)
    return info.value


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.sampled_from(NONFINITE + ["9999", "-5"]), record=st.integers(0, 8759))
def test_epw_non_finite_and_absurd_values(tmp_path: Path, bad: str, record: int) -> None:
    path = tmp_path / "w.epw"
    path.write_text(_epw_text({record: bad}), encoding="utf-8")
    err = _epw_error(path)
    assert f"data record {record + 1} (line {record + 9}" in err.field and "field 'ghi'" in err.field


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(min_size=0, max_size=300))
def test_epw_binary_empty_and_csv(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "w.epw"
    path.write_bytes(blob)
    _epw_error(path)


def test_epw_truncated_and_not_epw(tmp_path: Path) -> None:
    path = tmp_path / "w.epw"
    path.write_text(_epw_text(records=100), encoding="utf-8")
    assert "record" in _epw_error(path).field or "file" in _epw_error(path).field
    path.write_text("time,ghi\n2023-01-01T00:00Z,5\n", encoding="utf-8")
    assert "not an EPW file" in _epw_error(path).field


# --------------------------------------------------------------------------- through the command line

CLI_SCENARIO = SCENARIO_HEAD + "{supply}\n"


@pytest.mark.parametrize("supply, name, content", [
    ("  grid: {carbon_g_per_kwh: {path: bad.csv}}", "bad.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"),
    ("  solar: {capacity_w: 1000, latitude: 37, longitude: -122, weather_epw: bad.epw}", "bad.epw",
     b"time,ghi\n2023-01-01T00:00Z,5\n"),
    ("  wind: {wind_speed_file: bad.csv, format: csv}", "bad.csv",
     b"time,wind_speed_m_s\n2023-01-01T00:00Z,3\n2023-01-01T01:00,4\n"),
    ("  power_trace: {path: bad.csv}", "bad.csv", b"time,power_w\n2023-01-01T00:00Z,inf\n"),
])
def test_cli_refuses_broken_data_files_without_a_traceback(tmp_path: Path, supply: str, name: str,
                                                          content: bytes) -> None:
    from tests.test_cli import dcsim_cli, user_error

    (tmp_path / name).write_bytes(content)
    (tmp_path / "s.yaml").write_text(CLI_SCENARIO.format(supply=supply), encoding="utf-8")
    commands = [("validate", "--data", "s.yaml")]
    if name == "bad.epw":  # one run too: it fails before simulating and writes nothing
        commands.append(("run", "s.yaml", "--out", "out", "--quiet"))
    for args in commands:
        proc = user_error(dcsim_cli(*args, cwd=tmp_path))
        assert str(tmp_path / name) in proc.stderr and "got " in proc.stderr
    assert not (tmp_path / "out").exists()
