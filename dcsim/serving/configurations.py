"""Load a table of LLM serving configurations (relative time, relative energy, quality score)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dcsim.workload_traces import (
    _numbers, _raise_first, _read_csv, _refuse_duplicate_ids, _require_columns, _text,
)

COLUMNS = ("name", "times", "energies", "scores")
#: largest relative time or energy of a configuration against the reference
MAX_FACTOR = 1000.0


@dataclass(frozen=True)
class ServingConfig:
    """One serving configuration (e.g. full KV cache, or SnapKV keeping 256 tokens).

    Attributes:
        name: Unique label.
        time_factor: Service time relative to the reference configuration (> 0, 1 = reference).
        energy_factor: Energy per request relative to the reference configuration (> 0).
        quality: Output quality score in [0, 1] (1 = as good as the reference).
    """

    name: str
    time_factor: float
    energy_factor: float
    quality: float


def load_serving_configs(path: str | Path) -> list[ServingConfig]:
    """Read a CSV with the columns ``name,times,energies,scores``, one configuration per row.

    ``times`` and ``energies`` are relative to a reference configuration (positive, at most ``MAX_FACTOR``);
    ``scores`` is the quality in [0, 1]. Extra columns are ignored.

    Raises:
        TraceError: naming the file, the data row and the column of the first bad cell.
    """
    path = Path(path)
    df = _read_csv(path)
    _require_columns(df, path, COLUMNS)
    names = _text(df, "name")
    _raise_first(path, df, "name", names == "", "a non-empty configuration name")
    _refuse_duplicate_ids(path, df, "name", names, what="configuration name")
    times = _numbers(df, path, "times", allowed="a number > 0 (time relative to the reference)",
                     minimum=0.0, maximum=MAX_FACTOR)
    _raise_first(path, df, "times", times <= 0, "a number > 0 (time relative to the reference)")
    energies = _numbers(df, path, "energies", allowed="a number > 0 (energy relative to the reference)",
                        minimum=0.0, maximum=MAX_FACTOR)
    _raise_first(path, df, "energies", energies <= 0, "a number > 0 (energy relative to the reference)")
    scores = _numbers(df, path, "scores", allowed="a quality score in [0, 1]", minimum=0.0, maximum=1.0)
    return [ServingConfig(str(n), float(t), float(e), float(s))
            for n, t, e, s in zip(names, times, energies, scores)]
