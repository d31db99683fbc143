"""The Cerebras DQN learner: CPU backend against plain torch, offline CSX validation, one backend per process.

These tests run only where cerebras.pytorch is installed (the venv built by
tools/setup_cerebras_venv.sh); elsewhere each is skipped with the reason. Each backend runs in a
subprocess of its own (``_run_backend.py``), because cerebras.pytorch allows one backend per
process. No conftest.py here on purpose: the suite's modules do ``from conftest import ...``, and
a second conftest module would take that name.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

RUNNER = Path(__file__).resolve().parent / "_run_backend.py"


def _cerebras_missing() -> str | None:
    """Why cerebras.pytorch cannot be used here, or None when it can (found without importing it)."""
    try:
        found = importlib.util.find_spec("cerebras.pytorch") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return ("cerebras.pytorch is not installed in this Python; run these tests with "
                ".venv-cerebras/bin/python -m pytest tests/cerebras (build it with bash tools/setup_cerebras_venv.sh)")
    return None


_MISSING = _cerebras_missing()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))


@pytest.fixture
def cerebras_lib_dir() -> Path:
    """``cerebras/pytorch/lib`` inside the installed package: holds ``torch-cirh-opt``, which validate_only runs."""
    spec = importlib.util.find_spec("cerebras.pytorch")
    return Path(spec.origin).parent / "lib"


@pytest.fixture
def run_backend(tmp_path):
    """Run ``_run_backend.py`` with this Python in ``tmp_path`` (cerebras.pytorch writes into the current directory).

    Returns ``(returncode, last JSON line or None, full output)``.
    """

    def run(*args: str, path_prepend: Path | None = None, timeout: float = 600):
        env = dict(os.environ, MPLBACKEND="Agg")
        if path_prepend is not None:
            env["PATH"] = f"{path_prepend}{os.pathsep}{env.get('PATH', '')}"
        proc = subprocess.run([sys.executable, str(RUNNER), *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=timeout)
        output = proc.stdout + proc.stderr
        result = None
        for line in reversed(proc.stdout.strip().splitlines()):
            if line.startswith("{"):
                result = json.loads(line)
                break
        return proc.returncode, result, output

    return run


def _train(run_backend, tmp_path, learner, *extra):
    out = tmp_path / f"{learner}.npz"
    rc, result, output = run_backend("train", "--learner", learner, "--out", str(out), *extra)
    assert rc == 0, output[-4000:]
    return np.load(out), result


def test_cpu_backend_matches_plain_torch_with_sgd(run_backend, tmp_path):
    """50 SGD steps (clipping and Polyak on, three rounds) from the same weights and batches: same losses and weights to 1e-5."""
    torch_run, torch_info = _train(run_backend, tmp_path, "torch")
    cs_run, cs_info = _train(run_backend, tmp_path, "cerebras-cpu")
    assert torch_info["steps"] == cs_info["steps"] == 50
    assert cs_info["kind"] == "cerebras-cpu" and cs_info["steps_done"] == 50
    weights = [k for k in torch_run.files if k.startswith(("initial/", "online/", "target/"))]
    assert len(weights) == 3 * 6  # three Linear layers, weight and bias, three snapshots
    for k in (w for w in weights if w.startswith("initial/")):
        np.testing.assert_array_equal(cs_run[k], torch_run[k], err_msg=k)
    np.testing.assert_allclose(cs_run["losses"], torch_run["losses"], rtol=0, atol=1e-5)
    for k in weights:
        np.testing.assert_allclose(cs_run[k], torch_run[k], rtol=0, atol=1e-5, err_msg=k)
    # Guard against a comparison that cannot fail: training moved the weights well past the tolerance.
    moved = max(np.abs(torch_run[f"online/{k[8:]}"] - torch_run[k]).max() for k in weights if k.startswith("initial/"))
    assert moved > 1e-2
    assert np.abs(np.diff(torch_run["losses"])).max() > 1e-3


@pytest.mark.parametrize("learner", ["torch", "cerebras-cpu"])
def test_weights_loaded_after_training_reach_the_trained_network(run_backend, tmp_path, learner):
    run, _ = _train(run_backend, tmp_path, learner, "--rounds", "5,5")
    assert bool(run["reload_online_equal"])
    assert abs(float(run["reload_loss"]) - run["losses"][0]) < 1e-6
    assert abs(float(run["reload_loss"]) - run["losses"][-1]) > 1e-4  # training had moved away from there
    resumed = run["resume_losses"]
    assert abs(resumed[0] - resumed[1]) < 1e-6


def test_only_one_backend_per_process(run_backend, tmp_path):
    cs_run, _ = _train(run_backend, tmp_path, "cerebras-cpu", "--rounds", "1")
    assert "only one backend per process" in str(cs_run["second_backend_error"])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_csx_validate_only_traces_and_lowers_the_dqn_step_offline(run_backend, tmp_path, cerebras_lib_dir, optimizer):
    art = tmp_path / "artifacts"
    rc, result, output = run_backend("validate", "--artifacts", str(art), "--optimizer", optimizer,
                                     path_prepend=cerebras_lib_dir)
    assert rc == 0 and result is not None, output[-4000:]
    assert result["ok"], result
    assert result["losses_nan"] and result["n_losses"] == 2  # nothing ran
    assert result["weights_unchanged"]
    assert any(p.endswith("cirh.mlir") for p in result["mlir"]), result["mlir"]  # lowered to Cerebras IR


def test_csx_validate_only_finds_the_lowering_tool_without_path(run_backend, tmp_path):
    """The learner puts cerebras/pytorch/lib on PATH itself when torch-cirh-opt is not on it."""
    rc, result, output = run_backend("validate", "--artifacts", str(tmp_path / "artifacts"))
    assert rc == 0 and result is not None and result["ok"], output[-4000:]


def test_csx_validate_only_rejects_an_unsupported_op(run_backend, tmp_path, cerebras_lib_dir):
    """validate_only is a real check: the aten smooth_l1_loss op (instead of cstorch.nn.SmoothL1Loss) fails it."""
    rc, result, output = run_backend("validate", "--artifacts", str(tmp_path / "artifacts"), "--aten-loss",
                                     path_prepend=cerebras_lib_dir)
    assert rc == 3 and result is not None and not result["ok"], output[-4000:]
    assert "smooth_l1_loss" in result["error"] and "does not yet support" in result["error"]
