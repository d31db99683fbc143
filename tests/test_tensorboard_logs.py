"""`train --policy ... --tensorboard DIR`: TensorBoard scalars are the learning curve's numbers, episode by episode."""
from __future__ import annotations

import pandas as pd
import pytest

from test_cli import dcsim_cli, ok, user_error
from tiny_scenarios import tiny_rl_yaml

TINY_RL = tiny_rl_yaml()

pytest.importorskip("tensorboard")


def _scalars(folder):
    """Every scalar in the event files, read back with TensorBoard's own reader (the writer stores scalars as
    0-d tensors of the scalars plugin, which is what TensorBoard's Scalars tab reads)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: [(e.step, float(make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


def test_qlearning_training_logs_its_learning_curve_to_tensorboard(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_RL, encoding="utf-8")
    proc = ok(dcsim_cli("train", "tiny.yaml", "--policy", "qlearning", "--episodes", "3", "--out", "out",
                        "--tensorboard", "tb", cwd=tmp_path, timeout=600))
    assert "TensorBoard logs in" in proc.stdout
    curve = pd.read_csv(tmp_path / "out" / "learning_curve.csv")
    logged = _scalars(tmp_path / "tb" / "qlearning_1")
    for column in ("return_per_gpu", "epsilon_end", "decisions", "jobs_completed"):
        steps, values = zip(*logged[f"train/{column}"])
        assert list(steps) == curve["episode"].tolist()
        assert values == pytest.approx(curve[column].tolist(), rel=1e-6)  # stored as float32
    assert "train/loss_mean" not in logged  # NaN for Q-learning: not logged
    assert not any(tag in logged for tag in ("train/episode", "train/seed"))

    ok(dcsim_cli("train", "tiny.yaml", "--policy", "qlearning", "--episodes", "1", "--out", "out2",
                 "--tensorboard", "tb", "--quiet", cwd=tmp_path, timeout=600))
    assert (tmp_path / "tb" / "qlearning_2").is_dir()  # a second run gets its own folder


def test_tensorboard_folder_that_cannot_be_created_is_a_clear_error(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_RL, encoding="utf-8")
    (tmp_path / "afile").write_text("x")
    proc = user_error(dcsim_cli("train", "tiny.yaml", "--policy", "qlearning", "--episodes", "1", "--out", "out",
                                "--tensorboard", "afile", cwd=tmp_path))
    assert "--tensorboard afile" in proc.stderr and "Traceback" not in proc.stderr
