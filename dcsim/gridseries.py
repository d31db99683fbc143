"""Loaders for grid carbon-intensity and electricity-price series from public trace formats.

Every loader returns a ``pandas.Series`` of float64 values indexed by a sorted, tz-aware UTC
``DatetimeIndex`` named ``"time"``. Each value holds from its timestamp until the next one (the
step form :meth:`dcsim.timeseries.StepSeries.from_pandas` expects). Rows whose value is empty or
NaN are dropped and counted in ``series.attrs["dropped_nan_rows"]``; the gaps they and any missing
rows leave are held, interpolated or refused by ``gap_fill`` and recorded in ``attrs``
(:mod:`dcsim.dataquality`). Rows out of time order are sorted, with a warning. Every other defect
(missing file, unknown format, missing column, unparseable timestamp, naive and offset timestamps
mixed, a unit in the column name other than the loader's, a non-numeric, infinite or out-of-range
value, duplicate timestamp) raises :class:`dcsim.errors.TraceError` naming the file, the column and
line, the value and what is allowed.

Formats (see ``docs/supply-data.md``):

* carbon intensity, gCO2/kWh: ``electricitymaps``, ``eia930``, ``moer`` (kg/kWh, scaled by 1000),
  ``csv``;
* price, USD/MWh: ``caiso_oasis``, ``ercot`` (local time with a UTC offset), ``csv``.

The generic ``csv`` format is a ``time`` column (ISO 8601; a timestamp without an offset is read as
UTC) plus one value column.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from dcsim import dataquality
from dcsim.dataquality import DEFAULT_GAP_WARNING_H
from dcsim.errors import TraceError

CARBON_NAME = "carbon_g_per_kwh"
PRICE_NAME = "price_usd_per_mwh"

CARBON_FORMATS: tuple[str, ...] = ("electricitymaps", "eia930", "moer", "csv")
PRICE_FORMATS: tuple[str, ...] = ("caiso_oasis", "ercot", "csv")

_ISO_EXAMPLE = "ISO 8601 timestamps such as '2023-01-01T00:00:00Z' (a time without an offset is read as UTC)"
_OFFSET_PATTERN = r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"

_EM_TIME = "Datetime (UTC)"
_EIA_TIME, _EIA_VALUE = "timestamp", "avg_CI"
_MOER_TIME, _MOER_VALUE = "time", "moer_kg_per_kwh"
_CAISO_TIME, _CAISO_VALUE = "INTERVALSTARTTIME_GMT", "VALUE"
_ERCOT_TIME, _ERCOT_VALUE = "Datetime", "Price (USD/MWh)"
_CSV_TIME = "time"

#: What a column with an empty header cell is called in messages (pandas would say 'Unnamed: 0').
EMPTY_HEADER = "<empty header name in column {}>"

#: Values beyond these are not data (a unit or a missing-value code), refused with the allowed range.
CARBON_RANGE_G_PER_KWH = (0.0, 5000.0)
PRICE_RANGE_USD_PER_MWH = (-100_000.0, 100_000.0)


# --------------------------------------------------------------------------- public loaders


def load_carbon_intensity(
    path: str | Path,
    fmt: str = "auto",
    column: str | None = None,
    *,
    gap_fill: str = "hold",
    gap_warning_h: float | None = DEFAULT_GAP_WARNING_H,
) -> pd.Series:
    """Load a grid carbon-intensity series in gCO2/kWh.

    Args:
        path: CSV file to read.
        fmt: ``"auto"`` (detect from the header), ``"electricitymaps"``, ``"eia930"``, ``"moer"``
            or ``"csv"``.
        column: Which value column to read. ``electricitymaps``: ``None`` or ``"direct"`` for the
            direct (operational) intensity, ``"lca"`` for the life-cycle one (the full header names
            are accepted too). ``csv``: the value column's name; ``None`` picks
            ``"carbon_g_per_kwh"`` or else the only column besides ``time``. ``eia930`` and
            ``moer`` have one value column, so ``column`` must be ``None`` or that name.
        gap_fill: ``"hold"``, ``"linear"`` or ``"error"`` for gaps in the data
            (:func:`dcsim.dataquality.apply_gaps`).
        gap_warning_h: Warn when the longest gap is longer than this many hours (None: never).

    Returns:
        Series named ``"carbon_g_per_kwh"`` (gCO2/kWh, >= 0) on a sorted UTC index. ``attrs`` holds
        ``source`` (the path), ``format``, ``column`` (the column read), ``rows_read``,
        ``dropped_nan_rows``, ``unsorted_rows``, the gap record of
        :func:`dcsim.dataquality.apply_gaps` and ``warnings`` (also the implausible-value checks of
        :func:`dcsim.dataquality.check_carbon`).

    Raises:
        TraceError: The file cannot be read as the format, or a value is missing its timestamp,
            non-numeric, outside [0, 5000] gCO2/kWh or duplicated in time.
    """
    path = Path(path)
    _check_fmt(path, fmt, CARBON_FORMATS)
    df = _read_csv(path)
    if fmt == "auto":
        fmt = _detect_carbon_format(path, df.columns)

    scale = 1.0
    if fmt == "electricitymaps":
        _require_columns(path, df, [_EM_TIME], fmt)
        time_col, value_col = _EM_TIME, _electricitymaps_column(path, df.columns, column)
    elif fmt == "eia930":
        time_col, value_col = _EIA_TIME, _fixed_column(path, column, _EIA_VALUE, fmt)
        _require_columns(path, df, [time_col, value_col], fmt)
    elif fmt == "moer":
        time_col, value_col = _MOER_TIME, _fixed_column(path, column, _MOER_VALUE, fmt)
        _require_columns(path, df, [time_col, value_col], fmt)
        scale = 1000.0  # kg/kWh -> g/kWh
    else:  # csv
        _require_columns(path, df, [_CSV_TIME], fmt)
        time_col, value_col = _CSV_TIME, _csv_value_column(path, df.columns, column, CARBON_NAME)
        dataquality.check_unit(path, value_col, "g/kWh", CARBON_NAME)

    times = _parse_times(path, df[time_col], time_col)
    with np.errstate(over="ignore"):  # 1e308 kg/kWh overflows to inf here and is refused by the range check
        values = _parse_values(path, df[value_col], value_col) * scale
    _check_non_negative(path, df[value_col], values, value_col, "a carbon intensity >= 0")
    _check_range(path, df[value_col], values, value_col, CARBON_RANGE_G_PER_KWH, "gCO2/kWh")
    series = _finish(path, times, values, df.index, CARBON_NAME, fmt, value_col, time_col,
                     gap_fill=gap_fill, gap_warning_h=gap_warning_h)
    dataquality.check_carbon(path, series)
    return series


def load_price(
    path: str | Path,
    fmt: str = "auto",
    column: str | None = None,
    *,
    gap_fill: str = "hold",
    gap_warning_h: float | None = DEFAULT_GAP_WARNING_H,
) -> pd.Series:
    """Load an electricity price series in USD/MWh (negative prices are kept: they happen).

    Args:
        path: CSV file to read.
        fmt: ``"auto"`` (detect from the header), ``"caiso_oasis"``, ``"ercot"`` or ``"csv"``.
        column: Only for ``csv``: the value column; ``None`` picks ``"price_usd_per_mwh"`` or else
            the only column besides ``time``.
        gap_fill: ``"hold"``, ``"linear"`` or ``"error"`` for gaps in the data.
        gap_warning_h: Warn when the longest gap is longer than this many hours (None: never).

    Returns:
        Series named ``"price_usd_per_mwh"`` on a sorted UTC index, each value holding from its
        interval's start. ``attrs`` as for :func:`load_carbon_intensity`.

    Raises:
        TraceError: The file cannot be read as the format; an ``ercot`` timestamp lacks its UTC
            offset; a ``caiso_oasis`` file mixes several nodes or markets; a value lies outside
            [-100000, 100000] USD/MWh.
    """
    path = Path(path)
    _check_fmt(path, fmt, PRICE_FORMATS)
    df = _read_csv(path)
    if fmt == "auto":
        fmt = _detect_price_format(path, df.columns)
    if column is not None and fmt != "csv":
        raise TraceError(path, "column", column, f"no column choice for format {fmt!r} (leave column=None)")

    if fmt == "caiso_oasis":
        time_col, value_col = _CAISO_TIME, _CAISO_VALUE
        _require_columns(path, df, [time_col, value_col], fmt)
        df = _caiso_single_series(path, df)
    elif fmt == "ercot":
        time_col, value_col = _ERCOT_TIME, _ERCOT_VALUE
        _require_columns(path, df, [time_col, value_col], fmt)
        _require_offsets(path, df[time_col], time_col)
    else:  # csv
        _require_columns(path, df, [_CSV_TIME], fmt)
        time_col, value_col = _CSV_TIME, _csv_value_column(path, df.columns, column, PRICE_NAME)
        dataquality.check_unit(path, value_col, "USD/MWh", PRICE_NAME)

    times = _parse_times(path, df[time_col], time_col)
    values = _parse_values(path, df[value_col], value_col)
    _check_range(path, df[value_col], values, value_col, PRICE_RANGE_USD_PER_MWH, "USD/MWh")
    return _finish(path, times, values, df.index, PRICE_NAME, fmt, value_col, time_col,
                   gap_fill=gap_fill, gap_warning_h=gap_warning_h)


def load_series_csv(
    path: str | Path,
    value_column: str,
    name: str,
    time_column: str = "time",
    non_negative: bool = False,
    *,
    value_range: tuple[float, float] | None = None,
    gap_fill: str = "hold",
    gap_warning_h: float | None = DEFAULT_GAP_WARNING_H,
) -> pd.Series:
    """Load one value column of a generic time-indexed CSV file.

    Args:
        path: CSV file with a header line.
        value_column: Column holding the values (any numeric unit; ``name`` should say which).
        name: Name of the returned series, with its unit (e.g. ``"power_w"``).
        time_column: Column holding ISO 8601 timestamps; a time without an offset is read as UTC.
        non_negative: Refuse negative values.
        value_range: ``(low, high)`` the values must lie in, in the unit of ``name``; None: any
            finite value.
        gap_fill: ``"hold"``, ``"linear"`` or ``"error"`` for gaps in the data.
        gap_warning_h: Warn when the longest gap is longer than this many hours (None: never).

    Returns:
        float64 Series on a sorted UTC index; NaN rows dropped and counted in
        ``attrs["dropped_nan_rows"]``; ``attrs`` as for :func:`load_carbon_intensity`.

    Raises:
        TraceError: Missing file or column, unparseable timestamp or value, duplicate timestamp,
            negative value where ``non_negative``, a value outside ``value_range``, or a unit in the
            value column's name other than the one ``name`` states.
    """
    path = Path(path)
    df = _read_csv(path)
    _require_columns(path, df, [time_column, value_column], "csv")
    unit = dataquality.unit_in_name(name)
    if unit is not None:
        dataquality.check_unit(path, value_column, dataquality.canonical_unit(unit) or unit, name)
    times = _parse_times(path, df[time_column], time_column)
    values = _parse_values(path, df[value_column], value_column)
    if non_negative:
        _check_non_negative(path, df[value_column], values, value_column, f"{name} >= 0")
    if value_range is not None:
        _check_range(path, df[value_column], values, value_column, value_range, unit or "")
    return _finish(path, times, values, df.index, name, "csv", value_column, time_column,
                   gap_fill=gap_fill, gap_warning_h=gap_warning_h)


# --------------------------------------------------------------------------- format detection


def _check_fmt(path: Path, fmt: str, formats: Sequence[str]) -> None:
    if fmt != "auto" and fmt not in formats:
        raise TraceError(path, "fmt", fmt, "one of " + ", ".join(repr(f) for f in ("auto", *formats)))


def _em_intensity_columns(columns: Iterable[str]) -> dict[str, str]:
    """Map ``"direct"``/``"lca"`` to Electricity Maps' header names (matched case-insensitively)."""
    found: dict[str, str] = {}
    for col in columns:
        low = str(col).strip().lower()
        if low.startswith("carbon intensity"):
            if low.endswith("(direct)"):
                found["direct"] = col
            elif low.endswith("(lca)"):
                found["lca"] = col
    return found


def _detect_carbon_format(path: Path, columns: pd.Index) -> str:
    cols = set(columns)
    if _EM_TIME in cols and _em_intensity_columns(columns):
        return "electricitymaps"
    if {_EIA_TIME, _EIA_VALUE} <= cols:
        return "eia930"
    if {_MOER_TIME, _MOER_VALUE} <= cols:
        return "moer"
    if _CSV_TIME in cols:
        return "csv"
    raise TraceError(
        path,
        "header",
        list(columns),
        "a carbon-intensity header: electricitymaps ('Datetime (UTC)', 'Carbon Intensity gCO₂eq/kWh (direct)'), "
        "eia930 ('timestamp', 'avg_CI'), moer ('time', 'moer_kg_per_kwh') or csv ('time' + a value column)",
    )


def _detect_price_format(path: Path, columns: pd.Index) -> str:
    cols = set(columns)
    if {_CAISO_TIME, _CAISO_VALUE} <= cols:
        return "caiso_oasis"
    if {_ERCOT_TIME, _ERCOT_VALUE} <= cols:
        return "ercot"
    if _CSV_TIME in cols:
        return "csv"
    raise TraceError(
        path,
        "header",
        list(columns),
        "a price header: caiso_oasis ('INTERVALSTARTTIME_GMT', ..., 'VALUE'), "
        "ercot ('Datetime', 'Price (USD/MWh)') or csv ('time' + a value column)",
    )


def _electricitymaps_column(path: Path, columns: pd.Index, column: str | None) -> str:
    found = _em_intensity_columns(columns)
    key = "direct" if column is None else column
    if key in found.values():
        return key
    if key.lower() in ("direct", "lca"):
        if key.lower() in found:
            return found[key.lower()]
        raise TraceError(
            path, "header", list(columns),
            f"an electricitymaps file with the column 'Carbon Intensity gCO₂eq/kWh ({key.lower()})'",
        )
    raise TraceError(path, "column", column, "'direct', 'lca' or None (direct) for format 'electricitymaps'")


def _fixed_column(path: Path, column: str | None, only: str, fmt: str) -> str:
    if column is None or column == only:
        return only
    raise TraceError(path, "column", column, f"None or {only!r} for format {fmt!r}")


def _csv_value_column(path: Path, columns: pd.Index, column: str | None, default: str) -> str:
    if column is not None:
        if column not in columns:
            raise TraceError(path, "header", list(columns), f"a header with the column {column!r} (column=)")
        return column
    if default in columns:
        return default
    others = [c for c in columns if c != _CSV_TIME]
    if len(others) == 1:
        return others[0]
    raise TraceError(
        path, "header", list(columns),
        f"'time' and one value column, or the column to read given as column= ({len(others)} candidates; "
        f"none is named {default!r})",
    )


# --------------------------------------------------------------------------- reading and parsing


def _read_csv(path: Path, skiprows: int = 0) -> pd.DataFrame:
    """Read every cell as text (so that we, not pandas, decide what a bad value is)."""
    if not path.is_file():
        raise TraceError(path, "file", str(path), "an existing readable file")
    try:
        df = pd.read_csv(path, dtype=str, skiprows=skiprows, encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.EmptyDataError as exc:
        raise TraceError(path, "file", "empty", "a CSV file with a header line") from exc
    except pd.errors.ParserError as exc:
        raise dataquality.ragged_row_error(path, exc) from exc
    except UnicodeDecodeError as exc:
        raise TraceError(path, "encoding", str(exc), "a UTF-8 text file") from exc
    except OSError as exc:
        raise TraceError(path, "file", str(exc), "an existing readable file") from exc
    dataquality.check_no_implicit_index(path, df, skiprows)
    df.columns = header_names(df.columns)
    return df


def header_names(columns: Iterable[object]) -> list[str]:
    """Stripped header names, with pandas' ``'Unnamed: k'`` for an empty header cell spelled out."""
    names = []
    for k, col in enumerate(columns):
        name = str(col).strip()
        names.append(EMPTY_HEADER.format(k + 1) if name == "" or name.startswith("Unnamed: ") else name)
    return names


def _require_columns(path: Path, df: pd.DataFrame, required: Sequence[str], fmt: str) -> None:
    missing = [col for col in required if col not in df.columns]
    if missing:
        raise TraceError(
            path, "header", list(df.columns),
            f"a {fmt} file with the column(s) {', '.join(map(repr, required))} "
            f"(missing: {', '.join(map(repr, missing))})",
        )


def _line(raw: pd.Series, mask: np.ndarray, first_data_line: int) -> tuple[int, object]:
    """File line (1-based) and raw text of the first row where ``mask`` holds.

    The frame's index is the data-row number ``read_csv`` gave it, so filtered frames still point
    at the right line (blank lines, which ``read_csv`` skips, are not counted).
    """
    pos = int(np.flatnonzero(mask)[0])
    return int(raw.index[pos]) + first_data_line, raw.iloc[pos]


def _parse_times(path: Path, raw: pd.Series, column: str, first_data_line: int = 2) -> pd.DatetimeIndex:
    """Parse ISO 8601 text to a UTC index; a time without an offset is taken as UTC."""
    text = raw.str.strip()
    missing = text.isna().to_numpy() | (text == "").to_numpy()
    if missing.any():
        line, value = _line(raw, missing, first_data_line)
        raise TraceError(path, f"column {column!r} at line {line}", value, _ISO_EXAMPLE)
    dataquality.check_time_zone_forms(path, text, column, first_data_line)
    try:
        parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    except (ValueError, TypeError, OverflowError) as exc:  # errors="coerce" should prevent this
        raise TraceError(path, f"column {column!r}", str(exc), _ISO_EXAMPLE) from exc
    bad = parsed.isna().to_numpy()
    if bad.any():
        line, value = _line(raw, bad, first_data_line)
        raise TraceError(path, f"column {column!r} at line {line}", value, _ISO_EXAMPLE)
    return pd.DatetimeIndex(parsed, name="time")


def _require_offsets(path: Path, raw: pd.Series, column: str, first_data_line: int = 2) -> None:
    """Local wall-clock times are ambiguous at daylight-saving changes, so they must carry an offset."""
    text = raw.str.strip()
    has_offset = text.str.contains(_OFFSET_PATTERN, regex=True).fillna(False).to_numpy(dtype=bool)
    if not has_offset.all():
        line, value = _line(raw, ~has_offset, first_data_line)
        raise TraceError(
            path,
            f"column {column!r} at line {line}",
            value,
            "local time with its UTC offset, e.g. '2023-03-12 03:00:00-05:00'",
        )


def _parse_values(path: Path, raw: pd.Series, column: str, first_data_line: int = 2) -> np.ndarray:
    """Parse numbers; empty cells and NaN become NaN, anything else non-numeric or infinite is an error."""
    text = raw.str.strip()
    text = text.where(text != "")
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    nan_text = text.str.lower().isin(["nan", "na", "n/a", "null", "none", "-nan"]).to_numpy(dtype=bool)
    bad = (np.isnan(values) & text.notna().to_numpy() & ~nan_text) | np.isinf(values)
    if bad.any():
        line, value = _line(raw, bad, first_data_line)
        raise TraceError(path, f"column {column!r} at line {line}", value, "a finite number (or an empty cell)")
    return values


def _check_range(
    path: Path, raw: pd.Series, values: np.ndarray, column: str, bounds: tuple[float, float], unit: str,
    first_data_line: int = 2,
) -> None:
    """Refuse finite values outside ``bounds`` (absurd numbers such as 1e308 or missing-value codes)."""
    low, high = bounds
    outside = (values < low) | (values > high)  # NaN compares False
    if outside.any():
        line, value = _line(raw, outside, first_data_line)
        raise TraceError(path, f"column {column!r} at line {line}", value,
                         f"a number in [{low:g}, {high:g}] {unit} (or an empty cell)".replace("  ", " "))


def _check_non_negative(
    path: Path, raw: pd.Series, values: np.ndarray, column: str, allowed: str, first_data_line: int = 2
) -> None:
    negative = values < 0  # NaN compares False
    if negative.any():
        line, value = _line(raw, negative, first_data_line)
        raise TraceError(path, f"column {column!r} at line {line}", value, allowed)


def _finish(
    path: Path,
    times: pd.DatetimeIndex,
    values: np.ndarray,
    row_labels: pd.Index,
    name: str,
    fmt: str,
    value_column: str,
    time_column: str,
    first_data_line: int = 2,
    *,
    gap_fill: str = "hold",
    gap_warning_h: float | None = DEFAULT_GAP_WARNING_H,
) -> pd.Series:
    """Drop NaN rows (counting them), refuse duplicate times, sort (warning), fill gaps, label the series.

    ``row_labels`` are the data-row numbers of ``times``/``values`` (for line numbers in errors).
    """
    keep = ~np.isnan(values)
    dropped = int((~keep).sum())
    rows = np.asarray(row_labels)[keep]
    kept_times = times[keep]
    dup = kept_times.duplicated(keep="first")
    if dup.any():
        pos = int(rows[np.flatnonzero(dup)[0]])  # data-row number of the repeat
        raise TraceError(
            path,
            f"column {time_column!r} at line {pos + first_data_line}",
            str(kept_times[dup][0]),
            "each time at most once (this UTC time appears on an earlier line too)",
        )
    if kept_times.size == 0:
        raise TraceError(path, f"column {value_column!r}", "no numeric values", "at least one row with a value")
    lines = rows + first_data_line
    back = np.flatnonzero(np.diff(kept_times.asi8) < 0)
    series = pd.Series(values[keep], index=kept_times, name=name, dtype="float64").sort_index()
    series.index.name = "time"
    attrs = {"source": str(path), "format": fmt, "column": value_column, "rows_read": int(len(times)),
             "dropped_nan_rows": dropped, "unsorted_rows": int(back.size), "clipped_values": 0, "warnings": []}
    if back.size:
        dataquality.warn(attrs, f"{path}: rows are not in time order ({back.size} step(s) back in time, the first "
                                f"at line {int(lines[back[0] + 1])}); sorted by time")
    series.attrs.update(attrs)
    line_of = dict(zip(kept_times, lines.tolist()))
    return dataquality.apply_gaps(path, series, gap_fill, time_column, line_of, gap_warning_h)


def _caiso_single_series(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    """Keep the LMP rows of an OASIS file and refuse files that mix nodes or markets."""
    if "LMP_TYPE" in df.columns:
        df = df[df["LMP_TYPE"].str.strip() == "LMP"]
        if df.empty:
            raise TraceError(path, "column 'LMP_TYPE'", "no 'LMP' rows", "rows with LMP_TYPE 'LMP'")
    for col in ("NODE", "MARKET"):
        if col in df.columns:
            kinds = df[col].dropna().unique()
            if len(kinds) > 1:
                raise TraceError(
                    path, f"column {col!r}", sorted(map(str, kinds)), f"a single {col.lower()} per file"
                )
    return df
