"""The serving section and its inputs: scenario checks, the invocations loader (errors by file/row/column), the
expansion of counts into arrivals, and the Azure trace replay."""

import numpy as np
import pytest

from dcsim.config import parse_scenario
from dcsim.errors import ScenarioError, TraceError
from dcsim.seeding import Streams
from dcsim.serving.arrivals import build_requests, expand_counts, load_invocations

POISSON = {"source": "poisson", "rate_per_s": 1.0}


def serving_scenario(serving=None, **top):
    data = {"name": "s", "horizon_s": 600, "cluster": {"gpus": 2},
            "workload": {"llm_serving": {"arrivals": POISSON, **(serving or {})}}, **top}
    return parse_scenario(data)


def problems(exc):
    return {field: message for field, _, message in exc.value.problems}


def _write(tmp_path, text, name="inv.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------------- the section
def test_section_defaults_parse():
    sc = serving_scenario()
    s = sc.workload.llm_serving
    assert s.max_batch <= s.batching.batch_sizes[-1] and s.configurations is None


@pytest.mark.parametrize("serving, field", [
    ({"max_batch": 65}, "workload.llm_serving.max_batch"),
    ({"max_batch": 0}, "workload.llm_serving.max_batch"),
    ({"batching": {"batch_sizes": [2, 4], "relative_throughput": [1, 2], "power_w": [300, 400]}},
     "workload.llm_serving.batching.batch_sizes"),
    ({"batching": {"batch_sizes": [1, 4], "relative_throughput": [1, 2, 3], "power_w": [300, 400]}},
     "workload.llm_serving.batching.relative_throughput"),
    ({"batching": {"batch_sizes": [1, 4], "relative_throughput": [2, 3], "power_w": [300, 400]}},
     "workload.llm_serving.batching.relative_throughput"),
    ({"slo": {"ttft_s": 0}}, "workload.llm_serving.slo.ttft_s"),
    ({"revenue": {"usd_per_output_token": -1}}, "workload.llm_serving.revenue.usd_per_output_token"),
    ({"arrivals": {"source": "poisson", "rate_per_s": 0}}, "workload.llm_serving.arrivals.rate_per_s"),
    ({"arrivals": {"source": "nope"}}, "workload.llm_serving.arrivals"),
    ({"configurations": "/no/such/file.csv"}, "workload.llm_serving.configurations"),
    ({"max_batch": 1, "batching": {"batch_sizes": [1], "relative_throughput": [1], "power_w": [50]}},
     "workload.llm_serving.batching.power_w"),
])
def test_bad_values_name_the_field(serving, field):
    with pytest.raises(ScenarioError) as exc:
        serving_scenario(serving)
    assert any(f.startswith(field) for f in problems(exc)), problems(exc)


def test_serving_refuses_what_it_does_not_model():
    with pytest.raises(ScenarioError) as exc:
        serving_scenario(supply={"battery": {"capacity_wh": 10, "max_charge_w": 1, "max_discharge_w": 1}},
                         decision_timing={"fixed_step": 60})
    found = problems(exc)
    assert "supply.battery" in found and "decision_timing" in found


def test_serving_alone_in_workload():
    with pytest.raises(ScenarioError) as exc:
        parse_scenario({"cluster": {"gpus": 1}, "workload": {
            "llm_serving": {"arrivals": POISSON},
            "arrivals": {"process": "poisson", "rate_per_s": 1},
            "duration_s": {"distribution": "constant", "value": 1}}})
    assert "llm_serving" in str(exc.value)


def test_too_many_poisson_arrivals_refused():
    with pytest.raises(ScenarioError) as exc:
        serving_scenario({"arrivals": {"source": "poisson", "rate_per_s": 1e6}}, horizon_s=1e6)
    assert "workload.llm_serving.arrivals.rate_per_s" in problems(exc)


# ------------------------------------------------------------------------------------------- invocations
def test_invocations_with_interval_numbers(tmp_path):
    p = _write(tmp_path, "Time,TIMESTAMP\n0,3\n1,0\n2,5\n")
    start, counts, step = load_invocations(p, interval_s=30)
    assert step == 30 and start.tolist() == [0, 30, 60] and counts.tolist() == [3, 0, 5]


def test_invocations_with_timestamps_read_their_step(tmp_path):
    p = _write(tmp_path, "Time,TIMESTAMP\n2023-11-16 18:16:00,4\n2023-11-16 18:15:00,2\n")
    start, counts, step = load_invocations(p, interval_s=999)
    assert step == 60 and start.tolist() == [0, 60] and counts.tolist() == [2, 4]  # sorted by time


@pytest.mark.parametrize("text, column, row", [
    ("Time,TIMESTAMP\n0,3\n1,-1\n", "TIMESTAMP", 2),
    ("Time,TIMESTAMP\n0,3\n1,2.5\n", "TIMESTAMP", 2),
    ("Time,TIMESTAMP\n0,3\n1,x\n", "TIMESTAMP", 2),
    ("Time,TIMESTAMP\n0,3\n1,\n", "TIMESTAMP", 2),
    ("Time,TIMESTAMP\n0,3\n0.5,2\n", "Time", 2),
    ("Time,TIMESTAMP\n0,3\n0,2\n", "Time", 2),
    ("Time,TIMESTAMP\n2023-01-01T00:00:00Z,3\nlater,2\n", "Time", 2),
])
def test_bad_invocation_cells_name_file_row_and_column(tmp_path, text, column, row):
    p = _write(tmp_path, text)
    with pytest.raises(TraceError) as err:
        load_invocations(p)
    msg = str(err.value)
    assert str(p) in msg and f"column {column!r}" in msg and f"data row {row}" in msg, msg


@pytest.mark.parametrize("text, what", [
    ("Time,count\n0,3\n", "TIMESTAMP"),
    ("Time,TIMESTAMP\n0,3\n2,1\n", "no row for interval 1"),
    ("Time,TIMESTAMP\n2023-01-01T00:00:00Z,1\n2023-01-01T00:01:00Z,1\n2023-01-01T00:03:00Z,1\n", "regular step"),
])
def test_invocation_file_defects_are_named(tmp_path, text, what):
    p = _write(tmp_path, text)
    with pytest.raises(TraceError, match=what):
        load_invocations(p)


def test_missing_invocation_file_is_named(tmp_path):
    with pytest.raises(TraceError, match="existing"):
        load_invocations(tmp_path / "absent.csv")


def test_counts_expand_into_their_intervals():
    rng = np.random.default_rng(1)
    start, counts = np.array([0.0, 60.0, 120.0]), np.array([5, 0, 7])
    t = expand_counts(start, counts, 60.0, rng)
    assert t.size == 12 and np.all(np.diff(t) >= 0)
    per_interval = np.bincount((t // 60).astype(int), minlength=3)
    assert per_interval.tolist() == counts.tolist()


def test_invocation_arrivals_use_the_arrivals_stream_and_repeat(tmp_path):
    p = _write(tmp_path, "Time,TIMESTAMP\n0,2\n1,3\n")
    sc = serving_scenario({"arrivals": {"source": "invocations", "path": str(p), "interval_s": 10,
                                        "prompt_tokens": 7, "output_tokens": 9, "repeat": True}}, horizon_s=50)
    a = build_requests(sc.workload.llm_serving, sc.horizon_s, Streams(3))
    b = build_requests(sc.workload.llm_serving, sc.horizon_s, Streams(3))
    c = build_requests(sc.workload.llm_serving, sc.horizon_s, Streams(4))
    # 50 s = 2.5 replays of the 20 s file: 2 full (10 requests) and the first interval of a third (2)
    assert len(a) == 12 and np.array_equal(a.arrival_s, b.arrival_s) and not np.array_equal(a.arrival_s, c.arrival_s)
    assert set(a.prompt_tokens.tolist()) == {7.0} and set(a.output_tokens.tolist()) == {9.0}
    assert np.bincount((a.arrival_s // 10).astype(int)).tolist() == [2, 3, 2, 3, 2]


def test_azure_trace_replay_keeps_tokens_and_period(tmp_path):
    p = _write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                         "2023-11-16 18:00:00,10,1\n2023-11-16 18:00:02,20,2\n2023-11-16 18:00:04,30,3\n",
               name="azure.csv")
    sc = serving_scenario({"arrivals": {"source": "azure_trace", "path": str(p), "repeat": True}}, horizon_s=13)
    r = build_requests(sc.workload.llm_serving, sc.horizon_s, Streams(0))
    # span 4 s + one mean gap (2 s) = a 6 s period: arrivals 0,2,4, 6,8,10, 12
    assert r.arrival_s.tolist() == [0, 2, 4, 6, 8, 10, 12]
    assert r.prompt_tokens.tolist() == [10, 20, 30, 10, 20, 30, 10]
    assert r.output_tokens.tolist() == [1, 2, 3, 1, 2, 3, 1]
