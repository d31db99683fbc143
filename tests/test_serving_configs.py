"""The serving configuration table loader: values read as written, bad cells named by file, row, column."""
from pathlib import Path

import pytest

from dcsim.errors import TraceError
from dcsim.serving import ServingConfig, load_serving_configs

EXAMPLE = Path(__file__).resolve().parents[1] / "traces" / "serving_configs_example.csv"


def _write(tmp_path, text):
    p = tmp_path / "configs.csv"
    p.write_text(text)
    return p


def test_reads_rows_as_written(tmp_path):
    p = _write(tmp_path, "name,times,energies,scores\nfull,1,1,1\nsnap64,0.5,0.4,0.8\n")
    assert load_serving_configs(p) == [ServingConfig("full", 1.0, 1.0, 1.0),
                                       ServingConfig("snap64", 0.5, 0.4, 0.8)]


@pytest.mark.parametrize("row, column", [
    ("snap,0,1,0.5", "times"), ("snap,1,-2,0.5", "energies"), ("snap,1,1,1.5", "scores"),
    ("snap,1,x,0.5", "energies"), (",1,1,0.5", "name"), ("full,1,1,0.5", "name"),
])
def test_bad_cell_names_file_row_and_column(tmp_path, row, column):
    p = _write(tmp_path, f"name,times,energies,scores\nfull,1,1,1\n{row}\n")
    with pytest.raises(TraceError) as err:
        load_serving_configs(p)
    msg = str(err.value)
    assert str(p) in msg and f"column {column!r}" in msg and "data row 2" in msg


def test_missing_column_is_named(tmp_path):
    p = _write(tmp_path, "name,times,scores\nfull,1,1\n")
    with pytest.raises(TraceError, match="energies"):
        load_serving_configs(p)


def test_example_table_loads():
    configs = load_serving_configs(EXAMPLE)
    assert configs[0].name == "full_kv" and all(0 <= c.quality <= 1 for c in configs)
