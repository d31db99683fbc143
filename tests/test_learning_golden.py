"""Golden regression for the learners' default action layout: short trainings of Q-learning and the DQN on
learn_solar, against reference files written by the code before action layouts existed (commit 53043ca).

An exact regression test: the default layout (``policy.params.actions: bid``) must train exactly as the learners
did before idle and admission decisions were added (same rewards, decisions, updates, Q-table and job table).
Discrete outcomes (decisions, updates, completed jobs, the job table) must match exactly. The reward and the
Q-tables are compared to a relative 1e-9: numpy picks its SIMD kernels for ``log``/``exp``/``**`` by the CPU,
so the same code gives results a few ulps apart on machines with and without AVX-512 (seen: the reference
commit's own code reproduces this machine's numbers exactly and another machine's only to ~1e-15), and those
differences grow slowly through the Q updates. The Q-tables are kept in ``qlearning_tables.npz``.

When a change is meant to move the learners' results, regenerate the files and say so in the commit:

    DCSIM_UPDATE_GOLDEN=1 python -m pytest -q -p no:cacheprovider tests/test_learning_golden.py
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from dcsim.config import load_scenario
from dcsim.policy import load_policy
from dcsim.runner import run_scenario

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden" / "learners_default_layout"
UPDATE = os.environ.get("DCSIM_UPDATE_GOLDEN") == "1"
# The night and the sunrise of learn_solar: prices move, jobs run, pause and complete.
OVERRIDES = ["horizon_s=5h"]
PARAMS = {"qlearning": {"epsilon_decay_decisions": 500.0},
          "dqn": {"hidden": [16, 16], "batch_size": 32, "min_replay": 32, "updates_per_round": 2,
                  "epsilon_decay_decisions": 500.0}}


def learner_outputs(name: str, episodes: int, params: dict | None = None) -> dict:
    """Per-episode reward, decisions and updates of a short training, the last episode's job table (as a digest
    of its CSV) and, for Q-learning, a digest of the learnt tables."""
    sc = load_scenario(REPO / "scenarios" / "learn_solar.yaml", OVERRIDES)
    pol = load_policy(name, dict(PARAMS[name]) | dict(params or {}))
    curve = []
    for k in range(episodes):
        out = run_scenario(sc.model_copy(update={"seed": sc.seed + k}), policy=pol)
        curve.append({"reward_per_gpu": repr(out.summary["reward"]["per_gpu"]), "decisions": pol.decisions,
                      "updates": pol.updates, "jobs_completed": out.summary["jobs"]["completed"],
                      "jobs_csv_sha256": hashlib.sha256(out.result.jobs.to_csv(index=False).encode()).hexdigest()})
    result = {"curve": curve}
    if name == "qlearning":
        result["q_tables"] = [np.array(pol.table.q)] + ([np.array(pol.table_b.q)] if pol.table_b is not None else [])
    return result


def assert_same_training(got: dict, want: dict, want_tables: list[np.ndarray] | None) -> None:
    """Discrete outcomes exactly; rewards and Q-tables to a relative 1e-9 (see the module's docstring)."""
    assert len(got["curve"]) == len(want["curve"])
    for episode, (g, w) in enumerate(zip(got["curve"], want["curve"])):
        assert {k: v for k, v in g.items() if k != "reward_per_gpu"} == \
            {k: v for k, v in w.items() if k != "reward_per_gpu"}, f"episode {episode}"
        assert float(g["reward_per_gpu"]) == pytest.approx(float(w["reward_per_gpu"]), rel=1e-9, abs=1e-12), \
            f"episode {episode}"
    if want_tables is not None:
        assert len(got["q_tables"]) == len(want_tables)
        for q, ref in zip(got["q_tables"], want_tables):
            assert q.shape == ref.shape
            np.testing.assert_allclose(q, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name,episodes", [("qlearning", 3), ("dqn", 2)])
def test_the_default_layout_trains_as_before_layouts_existed(name, episodes):
    if name == "dqn":
        pytest.importorskip("torch")
    path = GOLDEN / f"{name}.json"
    tables_path = GOLDEN / f"{name}_tables.npz"
    got = learner_outputs(name, episodes)
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        tables = got.pop("q_tables", None)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        if tables is not None:
            np.savez(tables_path, *tables)
        pytest.skip(f"golden file rewritten: {path}")
    assert path.exists(), f"no golden file {path}: run with DCSIM_UPDATE_GOLDEN=1"
    want = json.loads(path.read_text(encoding="utf-8"))
    want_tables = None
    if "q_tables" in got:
        with np.load(tables_path) as npz:
            want_tables = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    assert_same_training(got, want, want_tables)
    # and saying the default out loud changes nothing
    assert learner_outputs(name, 1, {"actions": "bid"})["curve"][0] == want["curve"][0]
