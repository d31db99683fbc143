"""dcsim.npmath: numpy's own float64 loops called one element at a time give numpy's array results, bit for bit."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcsim import npmath

LOOPS = npmath.numpy_loops()
pytestmark = pytest.mark.skipif(LOOPS.reason is not None, reason=f"numpy's power loop unusable here: {LOOPS.reason}")


@pytest.mark.parametrize("ufunc, types", [(np.power, "ddd"), (np.log, "dd"), (np.log1p, "dd"), (np.exp, "dd")])
def test_the_loop_read_from_the_ufunc_object_is_numpys(ufunc, types):
    """A loop address called through ctypes gives exactly what the ufunc gives on an array of the same values."""
    import ctypes

    fn, data = npmath.loop_address(ufunc, types)
    rng = np.random.default_rng(7)
    x = rng.uniform(-700.0, 700.0, 2000) if ufunc is np.exp else np.exp(rng.uniform(-20.0, 20.0, 2000))
    y = rng.uniform(-3.0, 3.0, 2000)
    want = (ufunc(x, y) if ufunc.nin == 2 else ufunc(x)).tolist()
    ins = [np.zeros(1) for _ in range(ufunc.nin)]
    out = np.zeros(1)
    args = np.array([a.ctypes.data for a in ins] + [out.ctypes.data], dtype=np.int64)
    dims, steps = np.ones(1, dtype=np.int64), np.full(ufunc.nargs, 8, dtype=np.int64)
    loop = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(fn)
    got = []
    for xi, yi in zip(x.tolist(), y.tolist()):
        ins[0][0] = xi
        if ufunc.nin == 2:
            ins[1][0] = yi
        loop(int(args.ctypes.data), int(dims.ctypes.data), int(steps.ctypes.data), data)
        got.append(float(out[0]))
    assert got == want


def test_a_missing_signature_or_a_non_ufunc_is_a_lookup_error():
    with pytest.raises(LookupError, match="no inner loop"):
        npmath.loop_address(np.power, "???")  # numpy has no power of booleans
    with pytest.raises(LookupError):
        npmath.loop_address(math.pow, "ddd")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.05, 1e6)), min_size=1, max_size=40),
       st.floats(0.25, 5.0))
def test_power_one_element_at_a_time_is_numpys_array_power(rows, gamma):
    """The kernel's power (here its ctypes form) on each element equals numpy's ``a ** b`` and ``a ** float`` on
    the whole array: the pace bid's ``clipped ** (1/β)`` and ``f ** γ``."""
    base = np.array([b for b, _ in rows])
    exponent = np.array([e for _, e in rows])
    arr = [npmath._power_py(LOOPS.addr, LOOPS.io, b, e, False) for b, e in rows]
    assert arr == (base ** exponent).tolist()
    scalar = [npmath._power_py(LOOPS.addr, LOOPS.io, b, gamma, True) for b, _ in rows]
    assert scalar == (base ** gamma).tolist()


def test_the_compiled_power_is_numpys_and_differs_from_pow_where_numpy_does():
    """The njit'ed form gives numpy's bits; on a machine where numpy's SIMD power differs from the C library's
    ``pow`` the difference is reproduced, not hidden (else both agree there as well)."""
    numba = pytest.importorskip("numba")
    power = numba.njit(npmath.power)

    @numba.njit
    def each(addr, io, b, e, out, scalar):
        for i in range(b.size):
            out[i] = power(addr, io, b[i], e[i], scalar)

    rng = np.random.default_rng(11)
    b, e = rng.random(50_000), 1.0 / np.maximum(rng.random(50_000) * 3.0, 1e-6)
    out = np.empty_like(b)
    each(LOOPS.addr, LOOPS.io, b, e, out, False)
    numpy_bits = b ** e
    assert np.array_equal(out, numpy_bits)
    libm = np.array([math.pow(x, y) for x, y in zip(b.tolist(), e.tolist())])
    assert (out != libm).sum() == (numpy_bits != libm).sum()
    each(LOOPS.addr, LOOPS.io, b, np.full_like(b, 2.7), out, True)
    assert np.array_equal(out, b ** 2.7)


def test_unusable_loops_say_why_and_hold_no_addresses(monkeypatch):
    def refuse(ufunc, types):
        raise LookupError("its struct does not read as numpy's PyUFuncObject")

    monkeypatch.setattr(npmath, "loop_address", refuse)
    loops = npmath.NumpyLoops()
    assert loops.reason is not None and "power" in loops.reason and "PyUFuncObject" in loops.reason
    assert loops.learner_reason is not None
    assert loops.float32_reason is not None and "float32 matmul" in loops.float32_reason
    assert not loops.addr[:npmath.ARGS].any()  # no loop's address: the kernel never calls one
    assert not loops.addr[npmath.FMM_FN:npmath.FMM_DATA + 1].any()


@pytest.mark.skipif(LOOPS.float32_reason is not None, reason=f"{LOOPS.float32_reason}")
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 80), st.integers(1, 80), st.integers(0, 2**16))
def test_the_compiled_float32_matrix_product_is_numpys(m, n, p, seed):
    """A DQN's acting layer in the kernel (npmath.matmul_f32, njit'ed, on blocks inside larger scratch arrays, as
    the kernel keeps them) gives numpy's ``x @ w`` bit for bit, for any rows and layer sizes."""
    numba = pytest.importorskip("numba")
    mm = numba.njit(npmath.matmul_f32)

    @numba.njit
    def call(addr, ib, scratch, weights, m, n, p, at_x, at_w, at_out):
        sb, wb = scratch.ctypes.data, weights.ctypes.data
        mm(addr, ib, sb + 4 * at_x, wb + 4 * at_w, sb + 4 * at_out, m, n, p)

    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(m, n)) * 10.0 ** rng.uniform(-3, 3, (m, n))).astype(np.float32)
    w = rng.normal(size=(n, p)).astype(np.float32)
    at_x, at_w = int(rng.integers(0, 50)), int(rng.integers(0, 50))
    scratch = np.full(at_x + m * n + 7 + m * p, np.nan, np.float32)
    weights = np.full(at_w + n * p + 3, np.nan, np.float32)
    scratch[at_x:at_x + m * n] = x.reshape(-1)
    weights[at_w:at_w + n * p] = w.reshape(-1)
    loops = LOOPS.scratch()
    at_out = at_x + m * n + 7
    call(loops.addr, loops.ib, scratch, weights, m, n, p, at_x, at_w, at_out)
    assert scratch[at_out:at_out + m * p].tobytes() == (x @ w).reshape(-1).tobytes()


@pytest.mark.parametrize("n", [1, 2, 7, 33, 1000, 12_345])
def test_numpys_axis0_sum_of_a_c_ordered_block_is_the_row_by_row_sum(n):
    """What the compiled team reward relies on (RewardMeter._team_now: ``_own(all).sum(axis=0)``): numpy reduces a
    C-ordered (n, 5) block over its rows one row after another, starting from the first row."""
    rng = np.random.default_rng(n)
    block = np.ascontiguousarray(rng.normal(size=(n, 5)) * 10.0 ** rng.uniform(-4, 4, (n, 5)))
    total = block[0].copy()
    for row in block[1:]:
        total = total + row
    assert block.sum(axis=0).tolist() == total.tolist()
