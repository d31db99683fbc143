"""Tests of the Cerebras DQN learner: they run only where cerebras.pytorch imports (the venv built by tools/setup_cerebras_venv.sh).

Elsewhere every test here is skipped with the reason. Each backend runs in a subprocess of its
own (``_run_backend.py``), because cerebras.pytorch allows one backend per process.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RUNNER = HERE / "_run_backend.py"


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


def pytest_collection_modifyitems(config, items):
    reason = _cerebras_missing()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


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
