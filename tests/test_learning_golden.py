"""Golden regression for the learners' default action layout: short trainings of Q-learning and the DQN on
learn_solar, against reference files written by the code before action layouts existed (commit 53043ca).

An exact regression test: the default layout (``policy.params.actions: bid``) must train exactly as the learners
did before idle and admission decisions were added (same rewards, decisions, updates, Q-table and job table).
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
        tables = [pol.table.q] + ([pol.table_b.q] if pol.table_b is not None else [])
        result["q_sha256"] = [hashlib.sha256(np.ascontiguousarray(q).tobytes()).hexdigest() for q in tables]
    return result


@pytest.mark.parametrize("name,episodes", [("qlearning", 3), ("dqn", 2)])
def test_the_default_layout_trains_as_before_layouts_existed(name, episodes):
    if name == "dqn":
        pytest.importorskip("torch")
    path = GOLDEN / f"{name}.json"
    got = learner_outputs(name, episodes)
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        pytest.skip(f"golden file rewritten: {path}")
    assert path.exists(), f"no golden file {path}: run with DCSIM_UPDATE_GOLDEN=1"
    want = json.loads(path.read_text(encoding="utf-8"))
    assert got == want
    # and saying the default out loud changes nothing
    assert learner_outputs(name, 1, {"actions": "bid"})["curve"][0] == want["curve"][0]
