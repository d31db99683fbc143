"""Writes and reads dcsim's output tables as CSV or Parquet, so every reader accepts either format.

A table is named by its stem (``jobs``, ``rounds``...) and lives in a folder as ``STEM.csv`` or ``STEM.parquet``.
CSV needs nothing beyond pandas; Parquet needs pyarrow (the ``parquet`` extra: ``pip install 'dcsim[parquet]'``).
``auto`` picks Parquet only for large outputs (more than :data:`PARQUET_AUTO_ROWS` rows in a run's tables), so
small runs keep their CSV files.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from dcsim.errors import DcsimError

#: Table formats a writer accepts (``auto`` is resolved by :func:`choose_format`).
TABLE_FORMATS = ("csv", "parquet")

#: With ``outputs.format: auto`` a run whose tables hold more rows than this in total is written as Parquet.
PARQUET_AUTO_ROWS = 1_000_000

_SUFFIX = {"csv": ".csv", "parquet": ".parquet"}

PARQUET_INSTALL = "pip install 'dcsim[parquet]' (or pip install pyarrow)"


def have_pyarrow() -> bool:
    """Whether pyarrow can be imported (Parquet tables need it)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def require_pyarrow(what: str) -> None:
    """Raise a :class:`DcsimError` naming ``what`` asked for Parquet when pyarrow is not installed."""
    if not have_pyarrow():
        raise DcsimError(f"{what}: Parquet tables need pyarrow, which is not installed; {PARQUET_INSTALL}, "
                         "or choose csv")


def choose_format(fmt: str, rows: int) -> str:
    """The concrete format for ``fmt`` (``auto``, ``csv`` or ``parquet``) and a run of ``rows`` table rows.

    ``auto`` is ``parquet`` above :data:`PARQUET_AUTO_ROWS` rows and ``csv`` otherwise; without pyarrow it stays
    ``csv`` and warns (the run is already done, so its tables are written rather than lost).
    """
    if fmt in TABLE_FORMATS:
        return fmt
    if fmt != "auto":
        raise DcsimError(f"table format {fmt!r}: allowed: auto, {', '.join(TABLE_FORMATS)}")
    if rows <= PARQUET_AUTO_ROWS:
        return "csv"
    if not have_pyarrow():
        warnings.warn(f"{rows:,} table rows would be written as Parquet (outputs.format: auto), but pyarrow is not "
                      f"installed; writing CSV instead ({PARQUET_INSTALL})", stacklevel=2)
        return "csv"
    return "parquet"


def write_table(df: pd.DataFrame, folder: Path, stem: str, fmt: str) -> Path:
    """Write ``df`` as ``folder/STEM.csv`` or ``folder/STEM.parquet`` (``fmt``) and return the path.

    A table of the same stem in the other format is removed, so a folder never holds two versions of a table.
    """
    if fmt not in TABLE_FORMATS:
        raise DcsimError(f"table format {fmt!r}: allowed: {', '.join(TABLE_FORMATS)}")
    path = Path(folder) / f"{stem}{_SUFFIX[fmt]}"
    if fmt == "parquet":
        require_pyarrow(str(path))
        df.to_parquet(path, index=False, engine="pyarrow")
    else:
        df.to_csv(path, index=False)
    for other, suffix in _SUFFIX.items():
        stale = path.with_suffix(suffix)
        if other != fmt and stale.is_file():
            stale.unlink()
    return path


def table_path(folder: Path, stem: str) -> Path | None:
    """The file holding table ``stem`` in ``folder`` (CSV or Parquet), or None if there is none.

    Raises:
        DcsimError: if both a CSV and a Parquet version are there (which one is current is unknown).
    """
    found = [Path(folder) / f"{stem}{suffix}" for suffix in _SUFFIX.values()]
    found = [p for p in found if p.is_file()]
    if len(found) > 1:
        raise DcsimError(f"{folder}: holds both {found[0].name} and {found[1].name}; remove the stale one")
    return found[0] if found else None


def read_table(folder: Path, stem: str, **csv_options) -> pd.DataFrame | None:
    """Table ``stem`` from ``folder`` as a DataFrame, whichever format it was written in; None if absent.

    Args:
        folder: The run (or comparison, or sweep) folder.
        stem: The table's name without suffix, e.g. ``"jobs"``.
        **csv_options: Passed to :func:`pandas.read_csv` when the table is a CSV file.
    """
    path = table_path(folder, stem)
    if path is None:
        return None
    if path.suffix == ".parquet":
        require_pyarrow(f"reading {path}")
        return pd.read_parquet(path, engine="pyarrow")
    return pd.read_csv(path, **csv_options)
