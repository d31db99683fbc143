"""Data quality of loaded traces: gaps and their fill, time-zone and unit checks, sanity warnings, the report.

Every loader records what it did to a file's rows in the series' or table's ``attrs`` (rows read,
dropped, filled, clipped, sorted; the longest gap), and warns with :class:`DataQualityWarning` when
something looks wrong but can still be used (a long gap, an unsorted file, a near-clear-sky weather
file, an implausible carbon intensity). :func:`series_record` turns those ``attrs`` into the entry
``summary.json`` and ``metadata.yaml`` carry under ``data_quality``. Nothing here is a hard failure
except what the caller asks for (``gap_fill="error"``) and what cannot be read at all (mixed time-zone
forms, unknown units), which raise :class:`dcsim.errors.TraceError`.

See ``docs/supply-data.md`` ("Data quality") for the definitions and thresholds.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from dcsim.errors import TraceError

GapFill = Literal["hold", "linear", "error"]
GAP_FILLS: tuple[str, ...] = ("hold", "linear", "error")

#: A step longer than this many nominal steps (the median spacing) is a gap.
GAP_FACTOR = 1.5
#: Default threshold of the console warning on a long gap, hours.
DEFAULT_GAP_WARNING_H = 6.0
#: Offsets of one file may change only at daylight-saving changes, which lie months apart.
MIN_DAYS_BETWEEN_OFFSET_CHANGES = 28

# Carbon sanity (gCO2/kWh): no grid's average or marginal intensity reaches this (lignite is ~1,100).
CARBON_WARN_ABOVE_G_PER_KWH = 1500.0
#: A day whose mean is below this fraction of the median daily mean is implausible for one grid.
CARBON_LOW_DAY_FRACTION = 0.25
#: A one-step change larger than this many times the median step change is a jump ...
CARBON_JUMP_FACTOR = 20.0
#: ... and larger than this (gCO2/kWh), so flat series do not warn on small steps.
CARBON_JUMP_MIN_G_PER_KWH = 100.0

# Solar sanity: a typical-year (TMY) file gives ~0.7-0.85 of the clear-sky annual yield; a file at
# clear sky on nearly every day (e.g. "Climate Normals" irradiance) is no typical year.
SOLAR_YIELD_RATIO_WARN = 0.92
#: A day is "clear-sky-like" when its GHI is at least this fraction of the clear-sky day's.
CLEAR_DAY_GHI_FRACTION = 0.9
SOLAR_CLEAR_DAYS_WARN = 0.9

_OFFSET_RE = re.compile(
    r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?P<off>[Zz]|[+-]\d{2}(?::?\d{2})?)?\s*$"
)


class DataQualityWarning(UserWarning):
    """A trace could be used but looks wrong or was changed (gap filled, rows sorted, implausible values).

    The command line prints these as ``warning: ...``; the same text is recorded in the run's
    ``data_quality`` report.
    """


def warn(attrs: dict[str, Any], message: str) -> None:
    """Record ``message`` in ``attrs["warnings"]`` and emit it as a :class:`DataQualityWarning`."""
    attrs.setdefault("warnings", []).append(message)
    warnings.warn(message, DataQualityWarning, stacklevel=3)


def plain(value: Any) -> Any:
    """``value`` with numpy scalars turned into Python numbers (for messages, YAML and JSON)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- time zones


def check_time_zone_forms(
    path: Path, text: pd.Series, column: str, first_data_line: int = 2, where: str = "line"
) -> None:
    """Refuse a time column that mixes naive and offset timestamps, or offsets other than daylight saving.

    Args:
        path: The file (for the message).
        text: Stripped timestamp text, indexed by data-row number (as ``read_csv`` numbered it).
        column: The column's name.
        first_data_line: File line (or row number) of data row 0.
        where: ``"line"`` (messages say ``column 'time' at line 5``) or ``"data row"`` (``column
            'TIMESTAMP', data row 4``, as the workload loaders count).

    Raises:
        TraceError: Naming the first line whose form differs: an offset where the first line has
            none or the reverse; a second offset not one hour from the first, a third offset, or an
            offset change less than :data:`MIN_DAYS_BETWEEN_OFFSET_CHANGES` days after the previous.
    """
    if text.empty:
        return
    found = text.str.extract(_OFFSET_RE)["off"]
    has_offset = found.notna().to_numpy()
    line0 = f"{where} {int(text.index[0]) + first_data_line}"
    sep = " at" if where == "line" else ","

    def refuse(pos: int, allowed: str) -> None:
        raise TraceError(
            path, f"column {column!r}{sep} {where} {int(text.index[pos]) + first_data_line}", text.iloc[pos], allowed
        )

    if has_offset.any() and not has_offset.all():
        pos = int(np.flatnonzero(has_offset != has_offset[0])[0])
        first = "with a UTC offset" if has_offset[0] else "without a UTC offset"
        refuse(pos, f"every timestamp in one form: {line0} is {first} ('{text.iloc[0]}'), this one is not "
                    "(mixed forms would shift part of the series)")
    if not has_offset[0]:
        return
    minutes = found.map(_offset_minutes).to_numpy(dtype=float)
    distinct = list(dict.fromkeys(minutes.tolist()))
    if len(distinct) == 1:
        return
    allowed_dst = "one UTC offset, or two offsets one hour apart that change only at daylight-saving changes"
    if len(distinct) > 2:
        refuse(int(np.flatnonzero(minutes == distinct[2])[0]), allowed_dst + " (this is a third offset)")
    if abs(distinct[0] - distinct[1]) != 60:
        refuse(int(np.flatnonzero(minutes == distinct[1])[0]), allowed_dst + f" ({line0} has offset "
               f"{_offset_text(distinct[0])}, this one {_offset_text(distinct[1])})")
    times = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    changes = np.flatnonzero(minutes[1:] != minutes[:-1]) + 1
    change_times = times.iloc[changes].to_numpy()
    gaps = np.diff(change_times) / np.timedelta64(1, "D") if changes.size > 1 else np.array([])
    close = np.flatnonzero(np.abs(gaps) < MIN_DAYS_BETWEEN_OFFSET_CHANGES)
    if close.size:
        refuse(int(changes[close[0] + 1]), allowed_dst + f" (the offset changed on {where} "
               f"{int(text.index[changes[close[0]]]) + first_data_line} and again here, less than "
               f"{MIN_DAYS_BETWEEN_OFFSET_CHANGES} days later)")


def _offset_minutes(text: str) -> float:
    if text in ("Z", "z"):
        return 0.0
    sign = -1.0 if text[0] == "-" else 1.0
    digits = text[1:].replace(":", "")
    return sign * (int(digits[:2]) * 60 + (int(digits[2:4]) if len(digits) > 2 else 0))


def _offset_text(minutes: float) -> str:
    sign = "-" if minutes < 0 else "+"
    m = int(abs(minutes))
    return f"{sign}{m // 60:02d}:{m % 60:02d}"


# --------------------------------------------------------------------------- units in column names

#: Unit spellings recognised in column names (lower case, spaces as "_"), by what they measure.
_UNIT_SPELLINGS: dict[str, tuple[str, ...]] = {
    "m/s": ("m_s", "m/s", "mps", "m_per_s", "m.s-1", "ms-1"),
    "other speed": ("km_h", "km/h", "kmh", "kph", "km_per_h", "mph", "mi/h", "kn", "kt", "kts", "knots", "knot",
                    "ft_s", "ft/s", "fps"),
    "W": ("w", "watt", "watts"),
    "other power": ("kw", "mw", "gw", "hp", "kva", "mva", "btu/h"),
    "energy": ("wh", "kwh", "mwh", "gwh", "j", "kj", "mj"),
    "g/kWh": ("g_per_kwh", "g/kwh", "gco2/kwh", "gco2eq/kwh", "gco₂eq/kwh", "gco2_per_kwh", "gco2e/kwh"),
    "other carbon": ("kg_per_kwh", "kg/kwh", "kg_per_mwh", "kg/mwh", "lb_per_mwh", "lb/mwh", "lbs/mwh",
                     "lbs_per_mwh", "t_per_mwh", "t/mwh", "g_per_mwh", "g/mwh", "tco2/mwh"),
    "USD/MWh": ("usd_per_mwh", "usd/mwh", "$/mwh", "dollars_per_mwh"),
    "other price": ("usd_per_kwh", "usd/kwh", "$/kwh", "cents_per_kwh", "¢/kwh", "c/kwh", "eur_per_mwh", "eur/mwh",
                    "€/mwh", "gbp_per_mwh", "gbp/mwh", "£/mwh"),
    "fraction": ("fraction", "frac", "pct", "percent", "%"),
}
_UNIT_OF = {spelling: unit for unit, spellings in _UNIT_SPELLINGS.items() for spelling in spellings}


def unit_in_name(column: str) -> str | None:
    """The unit a column name states, as written (e.g. ``"km/h"``), or None when it states none.

    A unit is a bracketed suffix (``"speed (km/h)"``, ``"power [kW]"``) or a known unit spelling at the
    end of the name after ``_`` or a space (``"wind_speed_km_h"``, ``"power_kw"``).
    """
    name = str(column).strip()
    bracket = re.search(r"[(\[]([^)\]]*)[)\]]\s*$", name)
    if bracket:
        inner = bracket.group(1).strip()
        key = inner.lower().replace(" ", "_")
        if key in _UNIT_OF or "/" in inner or "per" in key.split("_"):
            return inner
        return None
    tokens = re.split(r"[_\s]+", name.lower())
    for n in (3, 2, 1):
        if len(tokens) > n:
            tail = "_".join(tokens[-n:])
            if tail in _UNIT_OF:
                return "_".join(re.split(r"[_\s]+", name)[-n:])
    return None


def canonical_unit(spelling: str) -> str | None:
    """The unit a spelling stands for (``"m_s"`` -> ``"m/s"``, ``"kw"`` -> ``"other power"``), or None."""
    return _UNIT_OF.get(spelling.strip().lower().replace(" ", "_"))


def check_unit(path: Path, column: str, unit: str, spelled: str) -> None:
    """Refuse a value column whose name states a unit other than ``unit`` (``"m/s"``, ``"W"``, ...).

    Args:
        path: The file (for the message).
        column: The column's name.
        unit: The unit the loader reads (a key of the recognised units).
        spelled: How a matching column would be named, for the message (e.g. ``"wind_speed_m_s"``).

    Raises:
        TraceError: The name carries a unit that is not ``unit`` (known or not).
    """
    found = unit_in_name(column)
    if found is None:
        return
    if canonical_unit(found) == unit:
        return
    raise TraceError(
        path, f"column {column!r}", f"unit {found!r}",
        f"values in {unit} (e.g. a column named {spelled!r}); dcsim does not convert {found!r}: "
        "convert the column, or name the column to read explicitly",
    )


# --------------------------------------------------------------------------- gaps


def nominal_step_s(times: pd.DatetimeIndex) -> float:
    """The series' nominal step: the most common spacing of sorted ``times`` in seconds (the shortest of
    equally common ones, to the millisecond); 3600 for a single time."""
    if times.size < 2:
        return 3600.0
    spacing_ms = np.rint(np.diff(_ns(times)) / 1e6).astype(np.int64)
    values, counts = np.unique(spacing_ms, return_counts=True)
    return float(values[np.argmax(counts)]) / 1e3


def _ns(times: pd.DatetimeIndex) -> np.ndarray:
    """Nanoseconds since the epoch, whatever resolution the index has."""
    return times.as_unit("ns").asi8


def apply_gaps(
    path: Path,
    series: pd.Series,
    fill: str,
    time_column: str,
    line_of: dict[pd.Timestamp, int] | None = None,
    warning_h: float | None = DEFAULT_GAP_WARNING_H,
) -> pd.Series:
    """Find gaps in a sorted series, fill them by ``fill`` and record what was done in ``attrs``.

    A gap is a step longer than :data:`GAP_FACTOR` nominal steps (:func:`nominal_step_s`); its length is the time with no data
    beyond one nominal step (hourly data missing 23 rows has a 23 h gap), and it spans
    ``round(step / nominal) - 1`` missing steps. ``"hold"`` keeps the value before the gap until the
    next row (the step series' own rule); ``"linear"`` inserts values at every missing step,
    interpolated between the rows either side; ``"error"`` refuses the first gap.

    Records ``attrs``: ``step_s``, ``gap_fill``, ``gaps``, ``filled_steps``, ``longest_gap_h`` and
    ``longest_gap_start`` (ISO 8601 UTC, None without gaps), and warns when the longest gap exceeds
    ``warning_h`` hours (None: never).

    Raises:
        TraceError: ``fill == "error"`` and the series has a gap (names the line after it), or an
            unknown ``fill``.
    """
    if fill not in GAP_FILLS:
        raise TraceError(path, "gap fill", fill, "one of " + ", ".join(repr(f) for f in GAP_FILLS))
    times = series.index
    step = nominal_step_s(times)
    dt = np.diff(_ns(times)) / 1e9
    gap = np.flatnonzero(dt > GAP_FACTOR * step)
    missing = np.maximum(np.rint(dt[gap] / step).astype(np.int64) - 1, 1)
    lengths_h = (dt[gap] - step) / 3600.0
    attrs = dict(series.attrs)
    attrs.update({"step_s": step, "gap_fill": fill, "gaps": int(gap.size), "filled_steps": 0,
                  "longest_gap_h": 0.0, "longest_gap_start": None})
    if gap.size:
        k = int(np.argmax(lengths_h))
        start = times[gap[k]] + pd.Timedelta(seconds=step)
        attrs["longest_gap_h"] = float(lengths_h[k])
        attrs["longest_gap_start"] = start.isoformat()
        after = times[gap[0] + 1]
        where = f"line {line_of[after]}" if line_of and after in line_of else f"{after.isoformat()}"
        if fill == "error":
            raise TraceError(
                path, f"column {time_column!r} at {where}", f"a gap of {lengths_h[0]:g} h after {times[gap[0]]}",
                f"rows every {step:g} s with no gap (or set the gap fill to 'hold' or 'linear')",
            )
        attrs["filled_steps"] = int(missing.sum())
        if fill == "linear":
            series = _linear_fill(series, gap, missing, step)
    out = series.copy()
    out.attrs = attrs
    if gap.size and warning_h is not None and attrs["longest_gap_h"] > warning_h:
        how = {"hold": "the value before it is held", "linear": "filled by linear interpolation"}[fill]
        warn(out.attrs, f"{path}: {attrs['gaps']} gap(s) in the data, the longest {attrs['longest_gap_h']:g} h "
                        f"from {attrs['longest_gap_start']} (over the {warning_h:g} h warning threshold); {how}")
    return out


def _linear_fill(series: pd.Series, gap: np.ndarray, missing: np.ndarray, step: float) -> pd.Series:
    """Insert linearly interpolated values at each missing nominal step of each gap."""
    values = series.to_numpy(dtype=float)
    t_ns = _ns(series.index)
    new_t, new_v = [], []
    for i, m in zip(gap, missing):
        k = np.arange(1, m + 1)
        t = t_ns[i] + np.rint(k * step * 1e9).astype(np.int64)
        t = t[t < t_ns[i + 1]]
        frac = (t - t_ns[i]) / (t_ns[i + 1] - t_ns[i])
        new_t.append(t)
        new_v.append(values[i] + frac * (values[i + 1] - values[i]))
    if not new_t:
        return series
    index = pd.DatetimeIndex(np.concatenate([t_ns, *new_t]), tz="UTC")
    filled = pd.Series(np.concatenate([values, *new_v]), index=index, name=series.name).sort_index()
    filled.index.name = series.index.name
    return filled


# --------------------------------------------------------------------------- sanity checks


def check_carbon(path: Path, series: pd.Series) -> None:
    """Warn (never fail) on implausible carbon intensities: very high values, jumps, implausibly low days.

    The low-day check is skipped for the ``moer`` format: a marginal rate is near zero when renewables
    are curtailed.

    Warnings go into ``series.attrs["warnings"]`` with the numbers that triggered them.
    """
    values = series.to_numpy(dtype=float)
    attrs = series.attrs
    high = values > CARBON_WARN_ABOVE_G_PER_KWH
    if high.any():
        i = int(np.argmax(values))
        warn(attrs, f"{path}: {int(high.sum())} value(s) above {CARBON_WARN_ABOVE_G_PER_KWH:g} gCO2/kWh (the highest "
                    f"{values[i]:g} at {series.index[i].isoformat()}); no grid averages that much: check the unit")
    if values.size >= 3:
        step = np.abs(np.diff(values))
        limit = max(CARBON_JUMP_FACTOR * float(np.median(step)), CARBON_JUMP_MIN_G_PER_KWH)
        jumps = np.flatnonzero(step > limit)
        if jumps.size:
            i = int(jumps[np.argmax(step[jumps])])
            warn(attrs, f"{path}: {jumps.size} jump(s) larger than {limit:g} gCO2/kWh between consecutive rows "
                        f"(the largest {values[i]:g} -> {values[i + 1]:g} at {series.index[i + 1].isoformat()})")
    daily = series.groupby(series.index.floor("D")).mean()
    # A marginal (MOER) rate is legitimately near zero on days when renewables are curtailed.
    if daily.size >= 3 and attrs.get("format") != "moer":
        median_day = float(daily.median())
        low = daily[daily < CARBON_LOW_DAY_FRACTION * median_day]
        if low.size and median_day > 0:
            warn(attrs, f"{path}: {low.size} day(s) with a mean below {CARBON_LOW_DAY_FRACTION:g} x the median daily "
                        f"mean {median_day:.4g} gCO2/kWh (the lowest {float(low.min()):.4g} on "
                        f"{low.idxmin():%Y-%m-%d}); implausible for one grid")


def series_record(attrs: dict[str, Any]) -> dict[str, Any]:
    """The ``data_quality`` entry of one loaded series or job table: its ``attrs``, as plain YAML/JSON data."""
    record: dict[str, Any] = {}
    for key, value in attrs.items():
        value = plain(value)
        if isinstance(value, (list, tuple)):
            value = [plain(v) for v in value]
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        if isinstance(value, (str, int, float, bool, list, type(None))):
            record[key] = value
    record.setdefault("warnings", [])
    return record


def run_report(jobs_attrs: dict[str, Any], supply_quality: dict[str, dict]) -> dict[str, dict]:
    """The run's ``data_quality`` section: one record per data file, keyed by the scenario field naming it.

    Args:
        jobs_attrs: ``attrs`` of the job table (a trace loader's counts; empty for synthetic jobs).
        supply_quality: :attr:`dcsim.supply.SupplyInputs.data_quality`.
    """
    report: dict[str, dict] = {}
    if jobs_attrs.get("source"):
        report["workload.trace.path"] = series_record(jobs_attrs)
    report.update(supply_quality)
    return report


_PANDAS_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def ragged_row_error(path: Path, exc: Exception) -> TraceError:
    """A :class:`TraceError` for a CSV row with more cells than the header, from pandas' ``ParserError``.

    pandas says ``Expected 4 fields in line 3, saw 5``; this names the line, both counts and how many cells
    are extra. An error of another kind keeps pandas' text.
    """
    m = _PANDAS_FIELDS.search(str(exc))
    if m is None:
        return TraceError(path, "csv layout", str(exc).strip(), "rows with as many cells as the header")
    header, line, seen = int(m.group(1)), int(m.group(2)), int(m.group(3))  # pandas counts skipped lines too
    extra = seen - header
    return TraceError(path, f"line {line}", f"{seen} cells, {extra} extra cell{'s' if extra != 1 else ''} "
                      f"beyond the header's {header}", f"at most {header} cells per row, as in the header")


def check_no_implicit_index(path: Path, df: pd.DataFrame, skiprows: int = 0) -> None:
    """Refuse a CSV whose every data row has more cells than the header.

    pandas then silently takes the surplus leading cells as the row index, which shifts every column by one:
    the values would be read under the wrong names.
    """
    if isinstance(df.index, pd.RangeIndex):
        return
    extra = df.index.nlevels
    line = 2 + skiprows  # the first data line (1-based, after the header)
    raise TraceError(path, f"line {line}", f"{len(df.columns) + extra} cells, {extra} extra cell"
                     f"{'s' if extra != 1 else ''} beyond the header's {len(df.columns)} (on every data row)",
                     f"at most {len(df.columns)} cells per row, as in the header")
