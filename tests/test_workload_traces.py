"""Tests of the workload trace loaders: hand-worked fixtures, malformed files, real public traces."""
from __future__ import annotations

import csv
import importlib.util
import math
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcsim.errors import TraceError
from dcsim.jobs import JOB_COLUMNS
from dcsim.workload_traces import load_alibaba_pods, load_azure_llm, load_job_csv, load_swf

REPO = Path(__file__).resolve().parents[1]
SHARED_TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"

POD_HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time"
)
# name, num_gpu, gpu_milli, qos, phase, creation, deletion, scheduled
POD_ROWS = [
    ("p-cpu", 0, 0, "BE", "Succeeded", 0, 100, 0),  # CPU-only: dropped
    ("p-cens", 1, 1000, "LS", "Running", 10, 500, 20),  # censored (still Running)
    ("p-frac", 1, 250, "BE", "Succeeded", 30, 430, 30),  # quarter of a GPU for 400 s
    ("p-multi", 4, 1000, "Burstable", "Failed", 50, 350, 150),  # 4 GPUs for 200 s
    ("p-pend", 1, 500, "BE", "Pending", 60, 90, ""),  # never scheduled
    ("p-late", 2, 1000, "LS", "Succeeded", 320, 400, 320),  # 2 GPUs for 80 s
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _pods_csv(tmp_path: Path, rows=POD_ROWS, name: str = "pods.csv") -> Path:
    lines = [POD_HEADER]
    for pod, num_gpu, milli, qos, phase, created, deleted, scheduled in rows:
        lines.append(f"{pod},4000,8192,{num_gpu},{milli},,{qos},{phase},{created},{deleted},{scheduled}")
    return _write(tmp_path / name, "\n".join(lines) + "\n")


def _accounted(attrs: dict) -> int:
    return attrs["jobs"] + sum(v for k, v in attrs.items() if k.startswith("dropped_"))


# ---------------------------------------------------------------- Alibaba pods


def test_alibaba_drop_keeps_finished_gpu_pods_with_share_weighted_work(tmp_path):
    jobs = load_alibaba_pods(_pods_csv(tmp_path))
    assert jobs["job_id"].tolist() == ["p-frac", "p-multi", "p-late"]
    assert jobs["arrival_s"].tolist() == [30.0, 50.0, 320.0]
    assert jobs["gpus"].tolist() == [1, 4, 2]
    # 400 s x 1 GPU x 250/1000; 200 s x 4 GPUs; 80 s x 2 GPUs
    assert jobs["work_gpu_s"].tolist() == [100.0, 800.0, 160.0]
    assert jobs["pod_duration_s"].tolist() == [400.0, 200.0, 80.0]
    assert jobs["qos"].tolist() == ["BE", "Burstable", "LS"]
    assert not jobs["censored"].any()
    assert jobs["deadline_s"].isna().all()
    assert not jobs["deferrable"].any()
    assert jobs["value_tokens"].tolist() == [100.0, 800.0, 160.0]
    assert jobs["clock_sensitivity"].tolist() == [1.0, 1.0, 1.0]
    a = jobs.attrs
    assert (a["rows_read"], a["dropped_cpu_only"], a["dropped_unscheduled"]) == (6, 1, 1)
    assert (a["censored_in_file"], a["dropped_censored"], a["capped_censored"]) == (1, 1, 0)
    assert a["dropped_after_trace_end"] == 0 and a["dropped_nonpositive_duration"] == 0
    assert a["trace_end_s"] == 500.0
    assert a["format"] == "alibaba_pods" and a["jobs"] == 3 and _accounted(a) == 6
    assert list(jobs.columns[: len(JOB_COLUMNS)]) == list(JOB_COLUMNS)


def test_alibaba_cap_keeps_censored_pod_until_recorded_deletion(tmp_path):
    jobs = load_alibaba_pods(_pods_csv(tmp_path), censored="cap")
    cens = jobs.set_index("job_id").loc["p-cens"]
    assert (cens["arrival_s"], cens["work_gpu_s"], bool(cens["censored"])) == (10.0, 480.0, True)
    assert jobs["job_id"].tolist() == ["p-cens", "p-frac", "p-multi", "p-late"]
    a = jobs.attrs
    assert (a["capped_censored"], a["censored_end_moved"], a["dropped_censored"]) == (1, 0, 0)
    assert _accounted(jobs.attrs) == 6


def test_alibaba_trace_end_window_caps_and_drops(tmp_path):
    jobs = load_alibaba_pods(_pods_csv(tmp_path), censored="cap", trace_end_s=300.0)
    # every scheduled GPU pod created before 300 s ends after it, so all are censored at 300 s
    assert jobs["job_id"].tolist() == ["p-cens", "p-frac", "p-multi"]
    assert jobs["work_gpu_s"].tolist() == [280.0, 270.0 * 0.25, 150.0 * 4]
    assert jobs["censored"].tolist() == [True, True, True]
    a = jobs.attrs
    assert (a["dropped_after_trace_end"], a["capped_censored"], a["censored_end_moved"]) == (1, 3, 3)
    assert _accounted(a) == 6
    with pytest.raises(TraceError, match="rows after filtering") as err:
        load_alibaba_pods(_pods_csv(tmp_path), censored="drop", trace_end_s=300.0)
    assert "pods.csv" in str(err.value)


def test_alibaba_unscheduled_keep_uses_creation_time(tmp_path):
    jobs = load_alibaba_pods(_pods_csv(tmp_path), unscheduled="keep")
    pend = jobs.set_index("job_id").loc["p-pend"]
    assert (pend["arrival_s"], pend["gpus"], pend["work_gpu_s"]) == (60.0, 1, 30.0 * 0.5)
    assert jobs.attrs["dropped_unscheduled"] == 0 and _accounted(jobs.attrs) == 6


def test_alibaba_missing_deletion_time_is_censored(tmp_path):
    rows = [("q-1", 1, 1000, "LS", "Succeeded", 0, "", 5), ("q-2", 1, 1000, "LS", "Succeeded", 10, 40, 10)]
    dropped = load_alibaba_pods(_pods_csv(tmp_path, rows))
    assert dropped["job_id"].tolist() == ["q-2"] and dropped.attrs["dropped_censored"] == 1
    capped = load_alibaba_pods(_pods_csv(tmp_path, rows), censored="cap")
    # no recorded end: the pod runs until the trace end (40 s, the largest time in the file)
    assert capped["work_gpu_s"].tolist() == [35.0, 30.0]
    assert capped.attrs["censored_end_moved"] == 1


def test_alibaba_time_offset_scale_and_max_jobs(tmp_path):
    jobs = load_alibaba_pods(_pods_csv(tmp_path), time_offset_s=40.0, time_scale=0.5, max_jobs=1)
    # p-frac (30 s) arrives before the offset; p-multi at (50 - 40) x 0.5; p-late cut by max_jobs
    assert jobs["job_id"].tolist() == ["p-multi"]
    assert jobs["arrival_s"].tolist() == [5.0]
    assert jobs["work_gpu_s"].tolist() == [800.0]  # sizes are not scaled
    assert (jobs.attrs["dropped_before_offset"], jobs.attrs["dropped_max_jobs"]) == (1, 1)
    assert jobs.attrs["raw_first_arrival_s"] == 50.0
    assert _accounted(jobs.attrs) == 6


def test_alibaba_value_deadline_and_clock_options(tmp_path):
    jobs = load_alibaba_pods(
        _pods_csv(tmp_path), value_tokens_per_gpu_s=2.0, deadline_slack=3.0, clock_sensitivity=0.5
    )
    assert jobs["value_tokens"].tolist() == [200.0, 1600.0, 320.0]
    # deadline = arrival + 3 x work / gpus (duration at full clock)
    assert jobs["deadline_s"].tolist() == [30.0 + 300.0, 50.0 + 600.0, 320.0 + 240.0]
    assert jobs["clock_sensitivity"].tolist() == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    ("column", "bad", "expected"),
    [("num_gpu", "two", "num_gpu"), ("creation_time", "", "creation_time"), ("gpu_milli", "1500", "gpu_milli"),
     ("pod_phase", "Sleeping", "pod_phase")],
)
def test_alibaba_bad_cell_names_file_column_and_row(tmp_path, column, bad, expected):
    path = _pods_csv(tmp_path)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[2, column] = bad
    df.to_csv(path, index=False)
    with pytest.raises(TraceError) as err:
        load_alibaba_pods(path)
    message = str(err.value)
    assert "pods.csv" in message and expected in message and "data row 3" in message
    assert err.value.value == (bad if bad else "<empty>")


def test_alibaba_missing_column_names_it(tmp_path):
    text = "name,num_gpu,gpu_milli,pod_phase,creation_time,deletion_time\np,1,1000,Running,0,5\n"
    path = _write(tmp_path / "pods.csv", text)
    with pytest.raises(TraceError, match="scheduled_time") as err:
        load_alibaba_pods(path)
    assert "pods.csv" in str(err.value)


# ---------------------------------------------------------------- Azure LLM

AZURE_TEXT = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:50.0000000,1500,60
2023-11-16 18:15:46.5000000,3000,30
2023-11-16 18:16:46.5000000,0,0
2023-11-16 18:16:00.2500000,500,4
"""


def test_azure_token_model_hand_computed(tmp_path):
    path = _write(tmp_path / "azure.csv", AZURE_TEXT)
    jobs = load_azure_llm(path, tokens_per_gpu_s_prefill=1000.0, tokens_per_gpu_s_decode=20.0)
    assert jobs["arrival_s"].tolist() == [0.0, 3.5, 13.75]
    # 3000/1000 + 30/20; 1500/1000 + 60/20; 500/1000 + 4/20
    assert jobs["work_gpu_s"].tolist() == [4.5, 4.5, 0.7]
    assert jobs["gpus"].tolist() == [1, 1, 1]
    assert jobs["context_tokens"].tolist() == [3000, 1500, 500]
    assert jobs["generated_tokens"].tolist() == [30, 60, 4]
    assert jobs["clock_sensitivity"].tolist() == [0.3, 0.3, 0.3]
    a = jobs.attrs
    assert (a["rows_read"], a["dropped_zero_tokens"], a["jobs"]) == (4, 1, 3) and _accounted(a) == 4
    assert a["span_s"] == 60.0
    assert a["first_timestamp_utc"] == "2023-11-16T18:15:46.500000+00:00"


def test_azure_default_rates_and_multi_gpu_requests(tmp_path):
    path = _write(tmp_path / "azure.csv", AZURE_TEXT)
    jobs = load_azure_llm(path, gpus_per_request=2)
    # defaults: 3000 prefill tokens/s, 30 decode tokens/s; work = 2 GPUs x time
    expected = [2 * (3000 / 3000 + 30 / 30), 2 * (1500 / 3000 + 60 / 30), 2 * (500 / 3000 + 4 / 30)]
    assert jobs["work_gpu_s"].tolist() == pytest.approx(expected, rel=1e-15)
    assert jobs["gpus"].tolist() == [2, 2, 2]


def test_azure_bad_timestamp_and_tokens(tmp_path):
    path = _write(tmp_path / "azure.csv", AZURE_TEXT.replace("2023-11-16 18:16:00.2500000", "yesterday"))
    with pytest.raises(TraceError, match=r"column 'TIMESTAMP', data row 4") as err:
        load_azure_llm(path)
    assert "azure.csv" in str(err.value) and err.value.value == "yesterday"
    path = _write(tmp_path / "azure2.csv", AZURE_TEXT.replace(",60\n", ",-60\n"))
    with pytest.raises(TraceError, match=r"azure2.csv: column 'GeneratedTokens', data row 1"):
        load_azure_llm(path)


@pytest.mark.parametrize("option", [{"tokens_per_gpu_s_decode": 0.0}, {"gpus_per_request": 0},
                                    {"tokens_per_gpu_s_prefill": float("nan")}])
def test_azure_rejects_bad_options(tmp_path, option):
    path = _write(tmp_path / "azure.csv", AZURE_TEXT)
    with pytest.raises(ValueError):
        load_azure_llm(path, **option)


# ---------------------------------------------------------------- SWF

SWF_TEXT = """; Version: 2.2
; Computer: test cluster
; MaxProcs: 64
1 0 5 100 4 -1 -1 4 200 -1 1 1 1 -1 1 -1 -1 -1
2 10 0 50 -1 -1 -1 6 100 -1 1 1 1 -1 1 -1 -1 -1
3 20 0 -1 8 -1 -1 8 100 -1 0 1 1 -1 1 -1 -1 -1

4 30 0 0 2 -1 -1 2 100 -1 5 1 1 -1 1 -1 -1 -1
5 40 0 70 -1 -1 -1 -1 100 -1 1 1 1 -1 1 -1 -1 -1
;  a comment between jobs
6 5 0 30 1 -1 -1 1 60 -1 1 2 1 -1 1 -1 -1 -1
"""


def test_swf_fields_comments_and_missing_values(tmp_path):
    jobs = load_swf(_write(tmp_path / "log.swf", SWF_TEXT))
    assert jobs["job_id"].tolist() == [1, 6, 2]
    assert jobs["arrival_s"].tolist() == [0.0, 5.0, 10.0]
    assert jobs["gpus"].tolist() == [4, 1, 6]  # job 2: allocated -1, requested 6
    assert jobs["work_gpu_s"].tolist() == [400.0, 30.0, 300.0]
    a = jobs.attrs
    assert (a["rows_read"], a["dropped_nonpositive_runtime"], a["dropped_nonpositive_procs"]) == (6, 2, 1)
    assert a["jobs"] == 3 and _accounted(a) == 6


def test_swf_procs_per_gpu_rounds_up(tmp_path):
    jobs = load_swf(_write(tmp_path / "log.swf", SWF_TEXT), procs_per_gpu=4)
    assert jobs["gpus"].tolist() == [1, 1, 2]
    assert jobs["work_gpu_s"].tolist() == [100.0, 30.0, 100.0]
    assert jobs["processors"].tolist() == [4.0, 1.0, 6.0]


def test_swf_wrong_field_count_names_line(tmp_path):
    path = _write(tmp_path / "log.swf", SWF_TEXT.replace("2 10 0 50 -1", "2 10 0 50"))
    with pytest.raises(TraceError, match=r"log.swf: line 5: got '17 fields"):
        load_swf(path)


def test_swf_non_numeric_field_names_field_and_line(tmp_path):
    path = _write(tmp_path / "log.swf", SWF_TEXT.replace("6 5 0 30 1", "6 5 0 thirty 1"))
    # line numbers count comment and blank lines
    with pytest.raises(TraceError, match=r"field 4 \(run time\), line 11") as err:
        load_swf(path)
    assert err.value.value == "thirty"


def test_swf_comments_only_is_an_error(tmp_path):
    with pytest.raises(TraceError, match="no data lines"):
        load_swf(_write(tmp_path / "log.swf", "; Version: 2.2\n\n"))


# ---------------------------------------------------------------- dcsim's job CSV


def test_job_csv_minimal_columns_take_defaults(tmp_path):
    path = _write(tmp_path / "jobs.csv", "arrival_s,gpus,work_gpu_s\n5,2,40\n0,1,10.5\n")
    jobs = load_job_csv(path, value_tokens_per_gpu_s=2.0)
    assert jobs["arrival_s"].tolist() == [0.0, 5.0]
    assert jobs["gpus"].tolist() == [1, 2]
    assert jobs["work_gpu_s"].tolist() == [10.5, 40.0]
    assert jobs["deadline_s"].isna().all()
    assert jobs["deferrable"].tolist() == [False, False]
    assert jobs["value_tokens"].tolist() == [21.0, 80.0]
    assert jobs["clock_sensitivity"].tolist() == [1.0, 1.0]
    assert list(jobs.columns) == list(JOB_COLUMNS)


def test_job_csv_file_values_win_and_empty_cells_take_defaults(tmp_path):
    text = (
        "job_id,arrival_s,gpus,work_gpu_s,deadline_s,deferrable,value_tokens,clock_sensitivity\n"
        "a,0,2,40,100,TRUE,7,0.25\n"
        "b,10,4,40,,,,\n"
    )
    jobs = load_job_csv(_write(tmp_path / "jobs.csv", text), deadline_slack=2.0, clock_sensitivity=0.5)
    assert jobs["job_id"].tolist() == ["a", "b"]
    assert jobs["deadline_s"].tolist() == [100.0, 10.0 + 2.0 * 40 / 4]
    assert jobs["deferrable"].tolist() == [True, False]
    assert jobs["value_tokens"].tolist() == [7.0, 40.0]
    assert jobs["clock_sensitivity"].tolist() == [0.25, 0.5]


def test_job_csv_offset_scale_keep_relative_deadlines(tmp_path):
    text = "arrival_s,gpus,work_gpu_s,deadline_s\n90,1,1,95\n100,1,1,\n110,1,1,200\n130,1,1,\n"
    jobs = load_job_csv(_write(tmp_path / "jobs.csv", text), time_offset_s=100.0, time_scale=0.5)
    assert jobs["arrival_s"].tolist() == [0.0, 5.0, 15.0]
    assert jobs["deadline_s"].tolist()[1] == 5.0 + 90.0
    assert jobs.attrs["dropped_before_offset"] == 1 and _accounted(jobs.attrs) == 4
    capped = load_job_csv(_write(tmp_path / "jobs.csv", text), max_jobs=2)
    assert capped["arrival_s"].tolist() == [90.0, 100.0] and capped.attrs["dropped_max_jobs"] == 2


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("arrival_s,gpus,work_gpu_s\n0,2.5,1\n", r"column 'gpus', data row 1: got '2.5'"),
        ("arrival_s,gpus,work_gpu_s\n0,1,1\n1,1,abc\n", r"column 'work_gpu_s', data row 2: got 'abc'"),
        ("arrival_s,gpus,work_gpu_s\n0,1,0\n", r"column 'work_gpu_s', data row 1"),
        ("arrival_s,gpus,work_gpu_s\n-1,1,1\n", r"column 'arrival_s', data row 1"),
        ("arrival_s,gpus,work_gpu_s,deadline_s\n5,1,1,5\n", r"column 'deadline_s', data row 1"),
        ("arrival_s,gpus,work_gpu_s,deferrable\n0,1,1,maybe\n", r"column 'deferrable', data row 1"),
        ("arrival_s,gpus,work_gpu_s,clock_sensitivity\n0,1,1,1.5\n", r"column 'clock_sensitivity'"),
        ("arrival_s,gpus,work_gpu_s,deadline\n0,1,1,5\n", r"column 'deadline'"),
        ("arrival_s,gpus\n0,1\n", r"column 'work_gpu_s'"),
        ("arrival_s,gpus,work_gpu_s\n", r"no data rows"),
        ("", r"file"),
        ("arrival_s,gpus,work_gpu_s\n0,1,1\n0,1,1,9,9\n", r"line 3: got \"5 cells, 2 extra cells"),
    ],
)
def test_job_csv_malformed_raises_trace_error_naming_file(tmp_path, text, match):
    path = _write(tmp_path / "broken_jobs.csv", text)
    with pytest.raises(TraceError, match=match) as err:
        load_job_csv(path)
    assert str(err.value).startswith(str(path))


def test_missing_file_is_a_trace_error(tmp_path):
    for loader in (load_alibaba_pods, load_azure_llm, load_swf, load_job_csv):
        with pytest.raises(TraceError, match="nope.csv: file"):
            loader(tmp_path / "nope.csv")


def test_non_utf8_file_is_a_trace_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("arrival_s,gpus,work_gpu_s\n0,1,1\n\xe9".encode("latin-1"))
    with pytest.raises(TraceError, match="UTF-8"):
        load_job_csv(path)


# ---------------------------------------------------------------- shared options


def _many_jobs_csv(tmp_path: Path, n: int = 40) -> Path:
    lines = ["arrival_s,gpus,work_gpu_s"] + [f"{i},1,{i + 1}" for i in range(n)]
    return _write(tmp_path / "many.csv", "\n".join(lines) + "\n")


def test_deferrable_selection_is_exact_and_seeded(tmp_path):
    path = _many_jobs_csv(tmp_path)
    first = load_job_csv(path, deferrable_fraction=0.3, rng=np.random.default_rng(7))
    again = load_job_csv(path, deferrable_fraction=0.3, rng=np.random.default_rng(7))
    other = load_job_csv(path, deferrable_fraction=0.3, rng=np.random.default_rng(8))
    assert first["deferrable"].sum() == 12  # round(0.3 x 40)
    rounded = load_job_csv(path, deferrable_fraction=0.34, rng=np.random.default_rng(7))
    assert rounded["deferrable"].sum() == 14  # round(13.6), not truncated
    assert first["deferrable"].tolist() == again["deferrable"].tolist()
    assert first["deferrable"].tolist() != other["deferrable"].tolist()
    assert load_job_csv(path, deferrable_fraction=1.0)["deferrable"].all()
    assert not load_job_csv(path, deferrable_fraction=0.0)["deferrable"].any()


def test_deferrable_fraction_only_chooses_among_rows_without_a_value(tmp_path):
    text = "arrival_s,gpus,work_gpu_s,deferrable\n0,1,1,false\n1,1,1,\n2,1,1,\n3,1,1,true\n"
    jobs = load_job_csv(_write(tmp_path / "j.csv", text), deferrable_fraction=1.0)
    assert jobs["deferrable"].tolist() == [False, True, True, True]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"deferrable_fraction": 0.5}, ValueError),  # needs an rng
        ({"deferrable_fraction": 0.5, "rng": np.random.RandomState(0)}, TypeError),
        ({"deferrable_fraction": 1.5}, ValueError),
        ({"time_scale": 0.0}, ValueError),
        ({"time_offset_s": float("inf")}, ValueError),
        ({"max_jobs": 0}, ValueError),
        ({"max_jobs": True}, ValueError),
        ({"deadline_slack": -1.0}, ValueError),
        ({"clock_sensitivity": 1.2}, ValueError),
        ({"value_tokens_per_gpu_s": -1.0}, ValueError),
    ],
)
def test_bad_shared_options_are_rejected(tmp_path, options, error):
    path = _many_jobs_csv(tmp_path)
    with pytest.raises(error):
        load_job_csv(path, **options)


@settings(max_examples=40, deadline=None)
@given(
    arrivals=st.lists(st.integers(0, 10_000), min_size=1, max_size=30),
    offset=st.integers(0, 10_000),
    scale=st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0]),
    max_jobs=st.one_of(st.none(), st.integers(1, 30)),
)
def test_every_row_is_accounted_for_and_arrivals_follow_offset_and_scale(arrivals, offset, scale, max_jobs):
    lines = ["arrival_s,gpus,work_gpu_s"] + [f"{a},1,1" for a in arrivals]
    kept = sorted(a for a in arrivals if a >= offset)[: max_jobs or None]
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp) / "jobs.csv", "\n".join(lines) + "\n")
        if not kept:
            with pytest.raises(TraceError, match="rows after filtering"):
                load_job_csv(path, time_offset_s=offset, time_scale=scale, max_jobs=max_jobs)
            return
        jobs = load_job_csv(path, time_offset_s=offset, time_scale=scale, max_jobs=max_jobs)
    assert jobs.attrs["rows_read"] == len(arrivals) == _accounted(jobs.attrs)
    assert jobs["arrival_s"].tolist() == [(a - offset) * scale for a in kept]


# ---------------------------------------------------------------- the committed example fixture


def _example_module():
    spec = importlib.util.spec_from_file_location("make_example_jobs", REPO / "traces" / "make_example_jobs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_jobs_csv_is_reproduced_by_its_script(tmp_path):
    out = _example_module().write_example_jobs(tmp_path / "example_jobs.csv")
    assert out.read_bytes() == (REPO / "traces" / "example_jobs.csv").read_bytes()


def test_example_jobs_csv_loads_as_a_varied_job_table():
    jobs = load_job_csv(REPO / "traces" / "example_jobs.csv")
    assert len(jobs) == 50 and jobs["job_id"].is_unique
    assert set(jobs["gpus"]) <= {1, 2, 4, 8} and jobs["gpus"].nunique() > 1
    assert 0 < jobs["deferrable"].sum() < 50
    assert 0 < jobs["deadline_s"].notna().sum() < 50
    assert set(jobs["clock_sensitivity"]) == {0.3, 1.0}
    assert (jobs["deadline_s"].dropna() > jobs.loc[jobs["deadline_s"].notna(), "arrival_s"]).all()


# ---------------------------------------------------------------- real public traces


def _real(name: str) -> Path:
    path = SHARED_TRACES / "workload" / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def test_real_alibaba_pod_counts_match_an_independent_count():
    path = _real("openb_pod_list_default.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    cpu_only = sum(int(r["num_gpu"]) == 0 for r in rows)
    censored = sum(r["pod_phase"] == "Running" or r["deletion_time"] in ("", "0") for r in rows)
    gpu = [r for r in rows if int(r["num_gpu"]) > 0]
    unscheduled = sum(r["scheduled_time"] == "" for r in gpu)
    gpu_scheduled_censored = sum(r["scheduled_time"] != "" and r["pod_phase"] == "Running" for r in gpu)
    work_all = sum(
        (float(r["deletion_time"]) - float(r["scheduled_time"])) * int(r["num_gpu"]) * int(r["gpu_milli"]) / 1000
        for r in gpu if r["scheduled_time"] != ""
    )

    dropped = load_alibaba_pods(path)
    a = dropped.attrs
    assert a["rows_read"] == len(rows) == 8152
    assert a["censored_in_file"] == censored == 5193  # the count the traces README states
    assert (a["dropped_cpu_only"], a["dropped_unscheduled"], a["dropped_censored"]) == (
        cpu_only, unscheduled, gpu_scheduled_censored)
    assert _accounted(a) == len(rows)
    assert not dropped["censored"].any() and (dropped["pod_phase"] != "Running").all()

    capped = load_alibaba_pods(path, censored="cap")
    assert capped.attrs["capped_censored"] == gpu_scheduled_censored
    assert capped.attrs["censored_end_moved"] == 0
    assert capped["work_gpu_s"].sum() == pytest.approx(work_all, rel=1e-12)
    assert _accounted(capped.attrs) == len(rows)


def test_real_azure_trace_has_19366_requests_over_about_an_hour():
    path = _real("AzureLLMInferenceTrace_conv.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    stamps = [datetime.fromisoformat(r["TIMESTAMP"][:26]) for r in rows]  # 7 fractional digits -> 6
    span_s = (max(stamps) - min(stamps)).total_seconds()
    work = sum(int(r["ContextTokens"]) / 3000 + int(r["GeneratedTokens"]) / 30 for r in rows)

    jobs = load_azure_llm(path)
    assert len(jobs) == len(rows) == 19366
    assert jobs.attrs["span_s"] == pytest.approx(span_s, abs=1e-6)
    assert 3000 < span_s < 3700
    assert jobs["arrival_s"].iloc[-1] == pytest.approx(span_s, abs=1e-6)
    assert jobs["work_gpu_s"].sum() == pytest.approx(work, rel=1e-12)
    assert math.isclose(jobs["clock_sensitivity"].unique()[0], 0.3)


def test_job_csv_with_an_extra_cell_on_every_row_is_refused_end_to_end(tmp_path):
    """A job CSV whose rows all carry one cell more than the header used to run with every column shifted."""
    from tests.test_cli import dcsim_cli, user_error

    (tmp_path / "jobs.csv").write_text("job_id,arrival_s,gpus,work_gpu_s\na,0,1,100,x\nb,5,1,100,x\n",
                                       encoding="utf-8")
    (tmp_path / "s.yaml").write_text(
        "name: ragged\nstart: 2023-06-21T00:00:00Z\nhorizon_s: 3600\ncluster: {gpus: 2, gpu_model: H100}\n"
        "workload:\n  trace: {format: csv, path: jobs.csv}\n", encoding="utf-8")
    err = user_error(dcsim_cli("run", "s.yaml", "--out", "out", cwd=tmp_path)).stderr
    assert "jobs.csv: line 2" in err and "1 extra cell beyond the header's 4" in err, err
    assert not (tmp_path / "out").exists()
