"""Shared state buffers: per-GPU and per-job arrays that Python indexes fast and numpy sees whole."""
from __future__ import annotations

import array

import numpy as np

_NP_TYPES = {"d": np.float64, "q": np.int64, "b": np.int8}


def buffer(n: int, typecode: str, fill: float | int) -> tuple[array.array, np.ndarray]:
    """An ``array.array`` and a numpy view of the same memory: fast scalar access from Python on the
    per-job hot path, whole-array numpy operations at market rounds.

    Args:
        n: Length (GPUs or jobs).
        typecode: ``"d"`` (float64), ``"q"`` (int64) or ``"b"`` (int8).
        fill: Initial value of every element.
    """
    buf = array.array(typecode, [fill]) * n
    return buf, np.frombuffer(buf, dtype=_NP_TYPES[typecode])
