"""numpy's own float64 inner loops, callable from the compiled kernel: numpy's results, bit for bit.

numpy computes ``log``, ``exp``, ``**`` and friends on arrays with SIMD kernels chosen for the CPU at import (on
an AVX-512 machine, for instance, ``np.power`` differs from the C library's ``pow`` in the last bit for a few values
in a thousand). The compiled per-job path (:mod:`dcsim.kernel`) must give the Python path's bits, so where the
Python path calls a numpy function on float64 arrays, the kernel calls the same numpy inner loop on the same
numbers, one element at a time, through its address:

- :func:`loop_address` reads a ufunc's loop for a type signature from the ufunc object (numpy's C struct
  ``PyUFuncObject``: its ``functions``, ``data`` and ``types`` tables);
- :class:`NumpyLoops` keeps the addresses of ``power``, ``log``, ``log1p``, ``log2``, ``sin``, ``cos``, ``exp`` and
  ``matmul`` and scratch blocks the kernel writes arguments into, and checks on probe values that a call gives
  exactly what numpy gives on arrays (every position of arrays of lengths 1–16, 40 and 257; the matrix product over
  1–16 rows at once); a loop that fails is not used (:attr:`NumpyLoops.reason`, ``learner_reason`` say why);
- :func:`power`, :func:`power_base`, :func:`unary`, :func:`matmul_rows` and :func:`matmul_f32` (float32, a DQN's
  acting network) are the kernel's calls of them
  (``power(..., scalar=True)``: the exponent broadcast, as ``array ** float`` does once numpy's fast paths for 2, 1,
  0.5, −1 and 0 are past; the kernel's ``_gamma_pow`` takes those first);
- :func:`rng_random` and :func:`rng_integers` draw from a numpy generator through its bit generator's own
  ``next_double``/``next_uint32`` (:func:`bit_generator_addresses`), as ``Generator.random()`` and
  ``Generator.integers(0, k)`` do.

Reading the struct needs no compiler and no numpy headers; the layout it reads (``PyObject_HEAD``, four ``int``
fields, then the ``functions``, ``data``, ``ntypes`` and ``name``/``types`` pointers) has been numpy's public C API
since numpy 1.x, and the probe catches a numpy where it is not.
"""
from __future__ import annotations

import ctypes
import sys

import numpy as np

__all__ = ["NumpyLoops", "bit_generator_addresses", "loop_address", "matmul_f32", "matmul_rows", "numpy_loops", "power",
           "power_base", "rng_integers", "rng_random", "unary"]

_PTR = ctypes.sizeof(ctypes.c_void_p)
_HEAD = 2 * _PTR  # PyObject_HEAD: ob_refcnt, ob_type (a release build of CPython)


def loop_address(ufunc: np.ufunc, types: str) -> tuple[int, int]:
    """``(function, data)`` addresses of ``ufunc``'s inner loop for the type signature ``types`` (numpy type
    characters, inputs then outputs: ``"ddd"`` is float64, float64 -> float64).

    Raises:
        LookupError: the ufunc has no such loop, or its struct does not read as numpy's ``PyUFuncObject``.
    """
    if not isinstance(ufunc, np.ufunc) or hasattr(sys, "gettotalrefcount"):
        raise LookupError("not a numpy ufunc in a release build of CPython")
    base = id(ufunc)
    nin, nout, nargs = (ctypes.c_int.from_address(base + _HEAD + 4 * i).value for i in range(3))
    if (nin, nout, nargs) != (ufunc.nin, ufunc.nout, ufunc.nargs) or len(types) != nargs:
        raise LookupError(f"{ufunc.__name__}: its struct does not read as numpy's PyUFuncObject")
    at = base + _HEAD + 16
    functions = ctypes.c_void_p.from_address(at).value
    data = ctypes.c_void_p.from_address(at + _PTR).value
    ntypes = ctypes.c_int.from_address(at + 2 * _PTR).value
    name = ctypes.c_void_p.from_address(at + 3 * _PTR).value
    table = ctypes.c_void_p.from_address(at + 4 * _PTR).value
    if not functions or not table or ntypes != ufunc.ntypes or not name \
            or ctypes.string_at(name) != ufunc.__name__.encode():
        raise LookupError(f"{ufunc.__name__}: its struct does not read as numpy's PyUFuncObject")
    want = bytes(np.dtype(c).num for c in types)
    codes = ctypes.string_at(table, ntypes * nargs)
    for i in range(ntypes):
        if codes[i * nargs:(i + 1) * nargs] == want:
            fn = ctypes.c_void_p.from_address(functions + _PTR * i).value
            arg = ctypes.c_void_p.from_address(data + _PTR * i).value if data else None
            if not fn:
                break
            return int(fn), int(arg or 0)
    raise LookupError(f"{ufunc.__name__}: no inner loop for {types!r}")


# the int64 block the kernel reads: each loop's function and data, then the addresses of the argument blocks
POW_FN, POW_DATA, LOG_FN, LOG_DATA, LOG1P_FN, LOG1P_DATA, LOG2_FN, LOG2_DATA, SIN_FN, SIN_DATA, COS_FN, COS_DATA, \
    MM_FN, MM_DATA, EXP_FN, EXP_DATA = range(16)
ARGS, DIMS, STEPS, STEPS_SCALAR, STEPS_BASE, ARGS_U, STEPS_U, ARGS_MM, DIMS_MM, STEPS_MM = range(16, 26)
# the float32 matrix product (a DQN's acting network): its loop, then its argument, dims and steps blocks
FMM_FN, FMM_DATA, ARGS_FMM, DIMS_FMM, STEPS_FMM = range(26, 31)
N_ADDR = 31
#: The unary loops :func:`unary` calls, by the index of their function's address in :attr:`NumpyLoops.addr`.
UNARY = {"log": LOG_FN, "log1p": LOG1P_FN, "log2": LOG2_FN, "sin": SIN_FN, "cos": COS_FN, "exp": EXP_FN}
#: The matrix product's inner size (the reward's seven components) and the rows its probe checks.
MM_K, MM_PROBE_ROWS = 7, 16
# the float64 scratch block: base, exponent, result; the matrix product's vector, its results, then its rows (the
# number of rows a block holds is (io.size - MM_OUT) // (MM_K + 1): see mm_rows_at)
X, E, OUT = range(3)
MM_W = 3
MM_OUT = MM_W + MM_K
# the int64 scratch: dims and steps of each call form, and its argument blocks (addresses)
_I_DIMS, _I_STEPS, _I_STEPS_SCALAR, _I_STEPS_BASE, _I_ARGS = 0, 1, 4, 7, 10
_I_STEPS_U, _I_ARGS_U = 13, 15
_I_DIMS_MM, _I_STEPS_MM, _I_ARGS_MM = 17, 21, 30
_I_DIMS_FMM, _I_STEPS_FMM, _I_ARGS_FMM = 33, 37, 46
N_IB = 49
#: The float32 matrix products the probe checks: (inputs, outputs) of a layer, for 1–16, 40 and 257 rows.
FMM_PROBE_SHAPES = ((15, 64), (64, 64), (64, 8), (16, 32), (32, 8), (15, 1), (1, 8), (7, 130))
FMM_PROBE_ROWS = tuple(range(1, 17)) + (40, 257)


def mm_rows_at(io) -> int:
    """Where the matrix product's rows start in scratch ``io`` (after its results)."""
    return MM_OUT + (io.size - MM_OUT) // (MM_K + 1)


class NumpyLoops:
    """The addresses of numpy's float64 loops (``power``, ``log``, ``log1p``, ``log2``, ``sin``, ``cos`` and
    ``matmul``) and of scratch blocks for their arguments, each checked against numpy.

    Attributes:
        addr: ``int64`` addresses the kernel reads (the indices above); a loop that failed its check has zeros.
        io: ``float64`` scratch: base, exponent, result; a matrix product's rows, vector and result.
        ib: ``int64`` scratch: dims and steps of each form of call (a matrix product's row count is written at
            ``ib[_I_DIMS_MM + 1]``).
        reason: None when the power loop is usable; else why not (the compiled pace bid then runs in Python).
        learner_reason: None when every float64 loop is usable (a compiled learner needs them all); else why not.
        float32_reason: None when the float32 matrix product is usable (a compiled DQN acts through it); else why
            not.
    """

    def __init__(self) -> None:
        self._layout()
        failed = []
        for index, ufunc, types in ((POW_FN, np.power, "ddd"), (LOG_FN, np.log, "dd"), (LOG1P_FN, np.log1p, "dd"),
                                    (LOG2_FN, np.log2, "dd"), (SIN_FN, np.sin, "dd"), (COS_FN, np.cos, "dd"),
                                    (MM_FN, np.matmul, "ddd"), (EXP_FN, np.exp, "dd")):
            try:
                self.addr[index], self.addr[index + 1] = loop_address(ufunc, types)
                if not self._matches_numpy(index):
                    self.addr[index] = self.addr[index + 1] = 0
                    raise LookupError("called from outside numpy, it does not give numpy's results")
            except LookupError as exc:
                failed.append(f"numpy's float64 {ufunc.__name__} loop cannot be called from the kernel ({exc})")
                if index == POW_FN:
                    self.reason = failed[-1]
        self.learner_reason = failed[0] if failed else None
        try:
            self.addr[FMM_FN], self.addr[FMM_DATA] = loop_address(np.matmul, "fff")
            if not self._float32_matches_numpy():
                self.addr[FMM_FN] = self.addr[FMM_DATA] = 0
                raise LookupError("called from outside numpy, it does not give numpy's results")
        except LookupError as exc:
            self.float32_reason = f"numpy's float32 matmul loop cannot be called from the kernel ({exc})"

    def _layout(self, rows: int = MM_PROBE_ROWS) -> None:
        """Fresh scratch blocks (a matrix product of up to ``rows`` rows), and the addresses of their parts."""
        self.io = np.zeros(MM_OUT + rows * (MM_K + 1))
        self.ib = np.zeros(N_IB, dtype=np.int64)
        self.addr = np.zeros(N_ADDR, dtype=np.int64)
        self.reason: str | None = None
        self.learner_reason: str | None = None
        self.float32_reason: str | None = None
        io, ib = self.io.ctypes.data, self.ib.ctypes.data
        at = lambda i: io + 8 * i  # noqa: E731
        iat = lambda i: ib + 8 * i  # noqa: E731
        self.ib[_I_DIMS] = 1
        self.ib[_I_STEPS:_I_STEPS + 3] = (8, 8, 8)
        self.ib[_I_STEPS_SCALAR:_I_STEPS_SCALAR + 3] = (8, 0, 8)  # array ** float
        self.ib[_I_STEPS_BASE:_I_STEPS_BASE + 3] = (0, 8, 8)  # float ** array
        self.ib[_I_ARGS:_I_ARGS + 3] = (at(X), at(E), at(OUT))
        self.ib[_I_STEPS_U:_I_STEPS_U + 2] = (8, 8)
        self.ib[_I_ARGS_U:_I_ARGS_U + 2] = (at(X), at(OUT))
        # matmul's gufunc loop, (n?,k),(k,m?)->(n?,m?) for a C-ordered (rows, 7) @ (7,): outer 1, n rows, k 7, m 1
        self.ib[_I_DIMS_MM:_I_DIMS_MM + 4] = (1, 1, MM_K, 1)
        self.ib[_I_STEPS_MM:_I_STEPS_MM + 9] = (0, 0, 0, 8 * MM_K, 8, 8, 0, 8, 0)
        self.ib[_I_ARGS_MM:_I_ARGS_MM + 3] = (at(mm_rows_at(self.io)), at(MM_W), at(MM_OUT))
        self.addr[ARGS:STEPS_MM + 1] = (iat(_I_ARGS), iat(_I_DIMS), iat(_I_STEPS), iat(_I_STEPS_SCALAR),
                                        iat(_I_STEPS_BASE), iat(_I_ARGS_U), iat(_I_STEPS_U), iat(_I_ARGS_MM),
                                        iat(_I_DIMS_MM), iat(_I_STEPS_MM))
        self.addr[ARGS_FMM:STEPS_FMM + 1] = (iat(_I_ARGS_FMM), iat(_I_DIMS_FMM), iat(_I_STEPS_FMM))
        _f32_blocks(self.ib, 0, 0, 0, 1, 1, 1)  # the parts matmul_f32 does not write

    def scratch(self, rows: int = MM_PROBE_ROWS) -> "NumpyLoops":
        """The same checked loops with scratch blocks of their own, for a matrix product of up to ``rows`` rows (one
        per compiled run, so that two runs stepped in turn in one process never share argument memory)."""
        out = object.__new__(NumpyLoops)
        out._layout(max(int(rows), 1))
        out.addr[:ARGS] = self.addr[:ARGS]
        out.addr[FMM_FN:FMM_DATA + 1] = self.addr[FMM_FN:FMM_DATA + 1]
        out.reason, out.learner_reason, out.float32_reason = self.reason, self.learner_reason, self.float32_reason
        return out

    def _float32_matches_numpy(self) -> bool:
        """Whether calls of the float32 matrix product from outside numpy give numpy's ``x @ w`` for C-ordered
        float32 blocks, bit for bit, over the shapes of :data:`FMM_PROBE_SHAPES` and rows :data:`FMM_PROBE_ROWS`."""
        rng = np.random.default_rng(20261205)
        for n_in, n_out in FMM_PROBE_SHAPES:
            w = (rng.normal(size=(n_in, n_out)) * 10.0 ** rng.uniform(-2, 2, (n_in, n_out))).astype(np.float32)
            for m in FMM_PROBE_ROWS:
                x = (rng.normal(size=(m, n_in)) * 10.0 ** rng.uniform(-3, 3, (m, n_in))).astype(np.float32)
                out = np.full((m, n_out), np.nan, np.float32)
                _matmul_f32_py(self.addr, self.ib, x, w, out)
                if out.tobytes() != (x @ w).tobytes():
                    return False
        return True

    def _matches_numpy(self, index: int) -> bool:
        """Whether calls from outside numpy give numpy's array results: the powers one element at a time (lengths
        1–16, 40 and 257, every position; an exponent array, a broadcast exponent, a broadcast base), the unary
        functions one element at a time, the matrix product on ``(k, 7) @ (7,)`` for k = 1..16."""
        rng = np.random.default_rng(20261204)
        if index == MM_FN:
            w = rng.normal(size=MM_K) * 10.0 ** rng.uniform(-3, 3, MM_K)
            self.io[MM_W:MM_W + MM_K] = w
            at = mm_rows_at(self.io)
            for k in range(1, MM_PROBE_ROWS + 1):
                for _ in range(4):
                    a = rng.normal(size=(k, MM_K)) * 10.0 ** rng.uniform(-6, 6, (k, MM_K))
                    self.io[at:at + k * MM_K] = a.reshape(-1)
                    if _matmul_py(self.addr, self.io, self.ib, k) != (a @ w).tolist():
                        return False
            return True
        for n in list(range(1, 17)) + [40, 257]:
            if index != POW_FN:
                x = np.exp(rng.uniform(-30.0, 30.0, n)) if index in (LOG_FN, LOG1P_FN, LOG2_FN) \
                    else rng.uniform(-50.0, 50.0, n)
                ufunc = {LOG_FN: np.log, LOG1P_FN: np.log1p, LOG2_FN: np.log2, SIN_FN: np.sin, COS_FN: np.cos,
                         EXP_FN: np.exp}[index]
                want = ufunc(x).tolist()
                if [_unary_py(self.addr, self.io, index, v) for v in x.tolist()] != want:
                    return False
                continue
            base = np.concatenate([rng.random(n - n // 4), rng.uniform(0.0, 8.0, n // 4)])
            exponent = 1.0 / np.maximum(rng.random(n) * 3.0, 1e-6)
            if n % 5 == 0:
                base[0], exponent[-1] = 0.0, 1.0
            scalar = float(rng.uniform(0.3, 4.0))
            if [_power_py(self.addr, self.io, b, e, False) for b, e in zip(base.tolist(), exponent.tolist())] != \
                    (base ** exponent).tolist():
                return False
            if [_power_py(self.addr, self.io, b, scalar, True) for b in base.tolist()] != (base ** scalar).tolist():
                return False
            visits = rng.integers(1, 10_000, n).astype(float)
            if [_power_base_py(self.addr, self.io, 0.99, v / 3600.0) for v in visits.tolist()] != \
                    np.power(0.99, visits / 3600.0).tolist():
                return False
        return True


_LOOP = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)

# a numpy bit generator through its ctypes interface: its state, next_double and next_uint32, as int64 addresses
BG_STATE, BG_DOUBLE, BG_UINT32 = range(3)


def bit_generator_addresses(rng: np.random.Generator) -> np.ndarray:
    """``int64`` addresses of ``rng``'s bit generator state and of its ``next_double`` and ``next_uint32``: the
    kernel draws from the same stream, in the same state, as ``rng.random()`` and ``rng.integers(0, k)`` do."""
    c = rng.bit_generator.ctypes
    return np.array([c.state_address, ctypes.cast(c.next_double, ctypes.c_void_p).value,
                     ctypes.cast(c.next_uint32, ctypes.c_void_p).value], dtype=np.int64)


def _power_py(addr: np.ndarray, io: np.ndarray, x: float, e: float, scalar: bool) -> float:
    """Reference form of :func:`power` without numba (probes, tests): the same loop through ctypes."""
    io[X], io[E] = x, e
    _LOOP(int(addr[POW_FN]))(int(addr[ARGS]), int(addr[DIMS]), int(addr[STEPS_SCALAR if scalar else STEPS]),
                             int(addr[POW_DATA]))
    return float(io[OUT])


def _power_base_py(addr: np.ndarray, io: np.ndarray, x: float, e: float) -> float:
    """Reference form of :func:`power_base`."""
    io[X], io[E] = x, e
    _LOOP(int(addr[POW_FN]))(int(addr[ARGS]), int(addr[DIMS]), int(addr[STEPS_BASE]), int(addr[POW_DATA]))
    return float(io[OUT])


def _unary_py(addr: np.ndarray, io: np.ndarray, which: int, x: float) -> float:
    """Reference form of :func:`unary`."""
    io[X] = x
    _LOOP(int(addr[which]))(int(addr[ARGS_U]), int(addr[DIMS]), int(addr[STEPS_U]), int(addr[which + 1]))
    return float(io[OUT])


def _matmul_py(addr: np.ndarray, io: np.ndarray, ib: np.ndarray, k: int) -> list[float]:
    """Reference form of :func:`matmul_rows`."""
    ib[_I_DIMS_MM + 1] = k
    _LOOP(int(addr[MM_FN]))(int(addr[ARGS_MM]), int(addr[DIMS_MM]), int(addr[STEPS_MM]), int(addr[MM_DATA]))
    return io[MM_OUT:MM_OUT + k].tolist()


def _matmul_f32_py(addr: np.ndarray, ib: np.ndarray, x: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """Reference form of :func:`matmul_f32` on C-ordered float32 arrays: ``out[...] = x @ w``."""
    _f32_blocks(ib, x.ctypes.data, w.ctypes.data, out.ctypes.data, x.shape[0], x.shape[1], w.shape[1])
    _LOOP(int(addr[FMM_FN]))(int(addr[ARGS_FMM]), int(addr[DIMS_FMM]), int(addr[STEPS_FMM]), int(addr[FMM_DATA]))


def _f32_blocks(ib, a, b, out, m, n, p):
    """The argument, dims and steps blocks of numpy's matmul gufunc loop, ``(m?,n),(n,p?)->(m?,p?)``, for C-ordered
    float32 blocks ``(m, n) @ (n, p)`` at addresses ``a``, ``b`` and ``out``: one outer step, then each operand's
    strides in bytes (what numpy passes for C-ordered arrays). :func:`matmul_f32` writes the parts that vary."""
    ib[_I_ARGS_FMM:_I_ARGS_FMM + 3] = (a, b, out)
    ib[_I_DIMS_FMM:_I_DIMS_FMM + 4] = (1, m, n, p)
    ib[_I_STEPS_FMM:_I_STEPS_FMM + 9] = (0, 0, 0, 4 * n, 4, 4 * p, 4, 4 * p, 4)


_LOOPS: NumpyLoops | None = None


def numpy_loops() -> NumpyLoops:
    """This process's :class:`NumpyLoops` (built and checked once)."""
    global _LOOPS
    if _LOOPS is None:
        _LOOPS = NumpyLoops()
    return _LOOPS


try:  # the kernel's form: an indirect call through the address (a runtime value, so numba can cache the caller)
    from llvmlite import ir
    from numba import types as _nt
    from numba.extending import intrinsic

    @intrinsic
    def _call_loop(typingctx, fn, args, dims, steps, data):  # pragma: no cover - compiled
        """``fn(args, dims, steps, data)``: numpy's ``PyUFuncGenericFunction`` at address ``fn`` (every argument an
        address as int64)."""
        sig = _nt.void(_nt.int64, _nt.int64, _nt.int64, _nt.int64, _nt.int64)

        def codegen(context, builder, signature, values):
            i8p = ir.IntType(8).as_pointer()
            i64p = ir.IntType(64).as_pointer()
            fnty = ir.FunctionType(ir.VoidType(), [i8p.as_pointer(), i64p, i64p, i8p])
            f, a, d, s, x = values
            builder.call(builder.inttoptr(f, fnty.as_pointer()),
                         [builder.inttoptr(a, i8p.as_pointer()), builder.inttoptr(d, i64p),
                          builder.inttoptr(s, i64p), builder.inttoptr(x, i8p)])
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def _call_double(typingctx, fn, state):  # pragma: no cover - compiled
        """``double fn(void *state)`` at address ``fn`` (a bit generator's ``next_double``)."""
        def codegen(context, builder, signature, values):
            i8p = ir.IntType(8).as_pointer()
            fnty = ir.FunctionType(ir.DoubleType(), [i8p])
            return builder.call(builder.inttoptr(values[0], fnty.as_pointer()), [builder.inttoptr(values[1], i8p)])

        return _nt.float64(_nt.int64, _nt.int64), codegen

    @intrinsic
    def _call_uint32(typingctx, fn, state):  # pragma: no cover - compiled
        """``uint32_t fn(void *state)`` at address ``fn`` (a bit generator's ``next_uint32``), widened to int64."""
        def codegen(context, builder, signature, values):
            i8p = ir.IntType(8).as_pointer()
            fnty = ir.FunctionType(ir.IntType(32), [i8p])
            out = builder.call(builder.inttoptr(values[0], fnty.as_pointer()), [builder.inttoptr(values[1], i8p)])
            return builder.zext(out, ir.IntType(64))

        return _nt.int64(_nt.int64, _nt.int64), codegen

    def rng_random(bg):
        """``Generator.random()`` of the generator whose addresses ``bg`` holds (:func:`bit_generator_addresses`)."""
        return _call_double(bg[BG_DOUBLE], bg[BG_STATE])

    def rng_integers(bg, high):
        """``Generator.integers(0, high)`` (int64, ``high`` <= 2**32): numpy's bounded draw for a range that fits
        32 bits, Lemire's multiply with rejection on ``next_uint32`` (``buffered_bounded_lemire_uint32``)."""
        rng = high - 1
        if rng == 0:
            return 0
        excl = rng + 1
        m = _call_uint32(bg[BG_UINT32], bg[BG_STATE]) * excl
        leftover = m & 0xFFFFFFFF
        if leftover < excl:
            threshold = (0xFFFFFFFF - rng) % excl
            while leftover < threshold:
                m = _call_uint32(bg[BG_UINT32], bg[BG_STATE]) * excl
                leftover = m & 0xFFFFFFFF
        return m >> 32

    def power(addr, io, x, e, scalar):
        """numpy's float64 ``x ** e`` (``scalar``: the exponent broadcast, as ``array ** float``), through the loop
        at ``addr`` with scratch ``io`` (:class:`NumpyLoops`); compiled into the kernel by :mod:`dcsim.kernel`."""
        io[X] = x
        io[E] = e
        _call_loop(addr[POW_FN], addr[ARGS], addr[DIMS], addr[STEPS_SCALAR] if scalar else addr[STEPS],
                   addr[POW_DATA])
        return io[OUT]

    def power_base(addr, io, x, e):
        """numpy's ``np.power(x, array)`` for a float ``x``, at one element ``e`` of the array."""
        io[X] = x
        io[E] = e
        _call_loop(addr[POW_FN], addr[ARGS], addr[DIMS], addr[STEPS_BASE], addr[POW_DATA])
        return io[OUT]

    def unary(addr, io, which, x):
        """numpy's float64 ``f(x)`` for the loop whose function address is ``addr[which]`` (:data:`UNARY`)."""
        io[X] = x
        _call_loop(addr[which], addr[ARGS_U], addr[DIMS], addr[STEPS_U], addr[which + 1])
        return io[OUT]

    def matmul_rows(addr, io, ib, k):
        """numpy's ``A @ w`` for the ``(k, 7)`` rows at ``io[mm_rows_at(io):]`` and the vector at ``io[MM_W:]``: the results
        at ``io[MM_OUT:MM_OUT + k]`` (one call over all k rows, as numpy makes it: its per-row results depend on k)."""
        ib[_I_DIMS_MM + 1] = k
        _call_loop(addr[MM_FN], addr[ARGS_MM], addr[DIMS_MM], addr[STEPS_MM], addr[MM_DATA])

    def matmul_f32(addr, ib, a, b, out, m, n, p):
        """numpy's float32 ``(m, n) @ (n, p)`` of the C-ordered blocks at addresses ``a`` and ``b``, into ``out``
        (one call over all m rows, as numpy makes it; the blocks of :func:`_f32_blocks`)."""
        ib[_I_ARGS_FMM], ib[_I_ARGS_FMM + 1], ib[_I_ARGS_FMM + 2] = a, b, out
        ib[_I_DIMS_FMM + 1], ib[_I_DIMS_FMM + 2], ib[_I_DIMS_FMM + 3] = m, n, p
        s = _I_STEPS_FMM
        ib[s + 3], ib[s + 5], ib[s + 7] = 4 * n, 4 * p, 4 * p
        _call_loop(addr[FMM_FN], addr[ARGS_FMM], addr[DIMS_FMM], addr[STEPS_FMM], addr[FMM_DATA])
except ImportError:  # pragma: no cover - without numba there is no kernel to call them
    power, power_base, unary, matmul_rows = _power_py, _power_base_py, _unary_py, _matmul_py

    def matmul_f32(addr, ib, a, b, out, m, n, p):
        raise RuntimeError("matmul_f32 is the kernel's form (needs numba)")
