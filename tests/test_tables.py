"""Output tables as CSV or Parquet: the same DataFrames either way, ``auto`` by row count, readers that accept
either, and clear errors when pyarrow is missing."""
from __future__ import annotations

import json
import sys
import warnings

import pandas as pd
import pytest
import yaml

from conftest import BASE, scenario
from dcsim import tables
from dcsim.cli import main
from dcsim.errors import DcsimError, ScenarioError
from dcsim.outputs import write_run
from dcsim.report import write_report
from dcsim.runner import run_scenario
from dcsim.tables import PARQUET_AUTO_ROWS, choose_format, read_table, write_table

STEMS = ("jobs", "rounds", "timeseries", "ledger", "decisions")
needs_pyarrow = pytest.mark.skipif(not tables.have_pyarrow(), reason="pyarrow not installed (extra `parquet`)")


def busy_run(fmt: str):
    """Two GPUs for two hours with deadlines and an agent-level ledger: every table has rows and mixed dtypes."""
    sc = scenario(horizon_s=7200, cluster={"gpus": 2},
                  workload={"arrivals": {"process": "poisson", "rate_per_s": 0.004},
                            "duration_s": {"distribution": "constant", "value": 600},
                            "deadline_slack": 2.0, "deferrable_fraction": 0.5},
                  policy={"name": "race_to_idle"}, outputs={"format": fmt, "ledger_detail": "agent"})
    return run_scenario(sc)


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("tables")
    out = {}
    for fmt in ("csv", "parquet") if tables.have_pyarrow() else ("csv",):
        out[fmt] = base / fmt
        write_run(busy_run(fmt), out[fmt])
    return out


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns as text (what a CSV round trip gives), everything else as it is."""
    return df.astype({c: str for c in df.columns if isinstance(df[c].dtype, pd.CategoricalDtype)})


def test_auto_is_csv_up_to_the_threshold_and_parquet_above():
    assert choose_format("auto", 0) == "csv"
    assert choose_format("auto", PARQUET_AUTO_ROWS) == "csv"
    expected = "parquet" if tables.have_pyarrow() else "csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert choose_format("auto", PARQUET_AUTO_ROWS + 1) == expected
    assert choose_format("csv", 10 * PARQUET_AUTO_ROWS) == "csv"
    assert choose_format("parquet", 0) == "parquet"
    with pytest.raises(DcsimError, match="'xlsx'.*allowed: auto, csv, parquet"):
        choose_format("xlsx", 1)


def test_a_small_run_with_the_default_format_still_writes_csv(tmp_path):
    run = busy_run("auto")
    written = write_run(run, tmp_path)
    names = {p.name for p in written}
    assert {f"{s}.csv" for s in STEMS} <= names and not list(tmp_path.glob("*.parquet"))


def test_outputs_format_rejects_other_values():
    data = json.loads(json.dumps(BASE)) | {"outputs": {"format": "xlsx"}}
    with pytest.raises(ScenarioError, match=r"outputs\.format.*'xlsx'"):
        from dcsim.config import parse_scenario

        parse_scenario(data)


@needs_pyarrow
def test_csv_and_parquet_give_the_same_dataframes(run_dirs):
    for stem in STEMS:
        assert (run_dirs["csv"] / f"{stem}.csv").is_file() and (run_dirs["parquet"] / f"{stem}.parquet").is_file()
        from_csv = read_table(run_dirs["csv"], stem)
        from_parquet = read_table(run_dirs["parquet"], stem)
        assert len(from_csv) > 0, stem
        # CSV carries no types (a categorical comes back as text), so compare values: every number bit for bit
        pd.testing.assert_frame_equal(_plain(from_csv), _plain(from_parquet), check_exact=True, check_dtype=False,
                                      obj=stem)
    assert not list(run_dirs["parquet"].glob("*.csv"))
    summaries = [json.loads((run_dirs[fmt] / "summary.json").read_text()) for fmt in ("csv", "parquet")]
    for s in summaries:
        s.pop("performance")  # wall-clock timings
    assert summaries[0] == summaries[1]


@needs_pyarrow
def test_parquet_keeps_the_engines_dataframe_exactly(tmp_path):
    run = busy_run("parquet")
    write_run(run, tmp_path)
    for stem, df in (("jobs", run.result.jobs), ("rounds", run.result.rounds), ("ledger", run.result.ledger)):
        pd.testing.assert_frame_equal(read_table(tmp_path, stem), df.reset_index(drop=True), check_exact=True)


@needs_pyarrow
def test_the_report_reads_a_parquet_run_like_a_csv_run(run_dirs):
    pages = {fmt: write_report(folder).read_text(encoding="utf-8") for fmt, folder in run_dirs.items()}
    for page in pages.values():
        assert "is not in this run directory" not in page and "no such table" not in page
    assert pages["csv"].count("<img") == pages["parquet"].count("<img") > 0


@needs_pyarrow
def test_auto_above_the_threshold_writes_every_table_as_parquet(tmp_path, monkeypatch):
    run = busy_run("auto")
    rows = sum(len(df) for df in (run.result.jobs, run.result.rounds, run.result.timeseries, run.result.ledger,
                                  run.result.decisions))
    monkeypatch.setattr(tables, "PARQUET_AUTO_ROWS", rows - 1)
    write_run(run, tmp_path / "above")
    assert sorted(p.stem for p in (tmp_path / "above").glob("*.parquet")) == sorted(STEMS)
    monkeypatch.setattr(tables, "PARQUET_AUTO_ROWS", rows)
    write_run(run, tmp_path / "at")
    assert not list((tmp_path / "at").glob("*.parquet"))


def test_a_table_in_both_formats_is_an_error_naming_both(tmp_path):
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "jobs.csv", index=False)
    (tmp_path / "jobs.parquet").write_bytes(b"PAR1")
    with pytest.raises(DcsimError, match="both jobs.csv and jobs.parquet"):
        read_table(tmp_path, "jobs")
    assert read_table(tmp_path, "rounds") is None


@needs_pyarrow
def test_writing_one_format_removes_the_other_version(tmp_path):
    df = pd.DataFrame({"a": [1.5, 2.5], "b": ["x", "y"]})
    write_table(df, tmp_path, "t", "csv")
    write_table(df, tmp_path, "t", "parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]
    pd.testing.assert_frame_equal(read_table(tmp_path, "t"), df)


@pytest.fixture
def no_pyarrow(monkeypatch):
    """pyarrow made unimportable, as on a machine without the `parquet` extra."""
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert not tables.have_pyarrow()


def test_parquet_without_pyarrow_fails_before_the_run_and_writes_nothing(tmp_path, no_pyarrow, capsys):
    data = json.loads(json.dumps(BASE)) | {"outputs": {"format": "parquet"}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "s.yaml: outputs.format: parquet" in err and "dcsim[parquet]" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(DcsimError, match="pyarrow"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path, "t", "parquet")
    assert not list(tmp_path.glob("t.*"))


def test_auto_without_pyarrow_writes_csv_and_says_so(tmp_path, no_pyarrow):
    with pytest.warns(UserWarning, match="pyarrow is not installed; writing CSV"):
        assert choose_format("auto", PARQUET_AUTO_ROWS + 1) == "csv"


@needs_pyarrow
def test_a_comparison_written_as_parquet_reports_like_one_written_as_csv(tmp_path):
    from dcsim.compare import compare
    from dcsim.report import write_comparison_report

    c = compare(scenario(cluster={"gpus": 2}), ["always_on", "race_to_idle"], [1, 2], jobs=1)
    c.write(tmp_path / "csv")
    c.write(tmp_path / "parquet", table_format="parquet")
    assert sorted(p.name for p in (tmp_path / "parquet").glob("*.parquet")) == \
        ["differences.parquet", "runs.parquet", "summary.parquet", "workloads.parquet"]
    assert not list((tmp_path / "parquet").glob("*.csv"))
    for stem in ("runs", "summary", "differences", "workloads"):
        frames = [read_table(tmp_path / fmt, stem) for fmt in ("csv", "parquet")]
        for df in frames:
            if "variant" in df:  # CSV writes the empty label as an empty field, read back as NaN
                df["variant"] = df["variant"].astype(object).fillna("").astype(str)
        pd.testing.assert_frame_equal(*frames, check_exact=True, check_dtype=False, obj=stem)
    pages = [write_comparison_report(tmp_path / fmt).read_text(encoding="utf-8") for fmt in ("csv", "parquet")]
    assert pages[0].count("<img") == pages[1].count("<img") > 0
    assert pages[0].count("<tr>") == pages[1].count("<tr>") > 0
