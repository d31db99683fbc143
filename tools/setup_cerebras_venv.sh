#!/usr/bin/env bash
# Build .venv-cerebras at the repository root: cerebras-pytorch 2.10.0 plus dcsim (editable),
# pytest and hypothesis, for the Cerebras DQN learner (docs/cerebras.md).
#
# cerebras-pytorch 2.10.0 pins torch==2.4.0 and numpy==1.25.0, which clash with the main
# environment (torch 2.13), so it gets a venv of its own. dcsim's own dependencies are resolved
# under a constraints file that holds torch and numpy at those pins, so installing dcsim never
# moves them. Idempotent: a venv that already imports everything at the right versions is kept
# (only dcsim's editable install is refreshed, so that new entry points in setup.cfg show up).
#
# Usage: bash tools/setup_cerebras_venv.sh     (PYTHON=python3.11 by default; VENV to relocate)
# Exit status: 0 when the venv works; non-zero with a one-line reason when it cannot be built.
set -uo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv-cerebras}"
PYTHON="${PYTHON:-python3.11}"
CEREBRAS_VERSION="2.10.0"
TORCH_PIN="2.4.0"
NUMPY_PIN="1.25.0"

fail() {
    echo "setup_cerebras_venv: cannot build $VENV: $*" >&2
    exit 1
}

venv_works() {
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" - "$TORCH_PIN" "$NUMPY_PIN" "$PWD" <<'PY' >/dev/null 2>&1
import pathlib, sys
import cerebras.pytorch, dcsim, hypothesis, numpy, pytest, threadpoolctl, torch  # noqa: F401
torch_pin, numpy_pin, repo = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]).resolve()
assert torch.__version__.split("+")[0] == torch_pin, torch.__version__
assert numpy.__version__ == numpy_pin, numpy.__version__
# dcsim must be this checkout (editable), not a copy installed from elsewhere.
assert repo in pathlib.Path(dcsim.__file__).resolve().parents, dcsim.__file__
PY
}

if venv_works; then
    # Refresh dcsim's editable install (no dependencies, a few seconds): its metadata, e.g. the
    # dcsim.policies entry points, is written at install time and goes stale when setup.cfg changes.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e . 2>&1 | grep -v "is ignored" >&2
    venv_works || fail "refreshing dcsim's editable install broke the venv"
    echo "setup_cerebras_venv: $VENV already works (cerebras-pytorch, torch $TORCH_PIN, numpy $NUMPY_PIN, dcsim refreshed)"
    exit 0
fi

command -v "$PYTHON" >/dev/null 2>&1 || fail "$PYTHON not found (cerebras-pytorch $CEREBRAS_VERSION ships wheels for CPython 3.11 only)"
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
    || fail "$PYTHON is not CPython 3.11 (cerebras-pytorch $CEREBRAS_VERSION ships cp311 wheels only)"

if [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || fail "'$PYTHON -m venv $VENV' failed"
fi

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
printf 'torch==%s\nnumpy==%s\n' "$TORCH_PIN" "$NUMPY_PIN" >"$constraints"

pip_install() {
    "$VENV/bin/python" -m pip install --disable-pip-version-check -c "$constraints" "$@"
}

echo "setup_cerebras_venv: installing cerebras-pytorch==$CEREBRAS_VERSION (pulls torch==$TORCH_PIN, ~3 GB) into $VENV"
pip_install "cerebras-pytorch==$CEREBRAS_VERSION" \
    || fail "pip could not install cerebras-pytorch==$CEREBRAS_VERSION (no network, or no space for ~3 GB?)"
echo "setup_cerebras_venv: installing dcsim (editable) with pytest and hypothesis, torch/numpy held at $TORCH_PIN/$NUMPY_PIN"
pip_install -e ".[test]" \
    || fail "pip could not install dcsim's dependencies alongside numpy==$NUMPY_PIN"

venv_works || {
    "$VENV/bin/python" -c "import cerebras.pytorch, dcsim, torch, numpy; print(torch.__version__, numpy.__version__)" >&2
    fail "the built venv does not import cerebras.pytorch and dcsim at torch $TORCH_PIN / numpy $NUMPY_PIN"
}
echo "setup_cerebras_venv: $VENV ready: $VENV/bin/python -m dcsim train SCENARIO --policy dqn --learner cerebras-cpu"
