"""numpy's own float64 inner loops, callable from the compiled kernel: numpy's results, bit for bit.

numpy computes ``log``, ``exp``, ``**`` and friends on arrays with SIMD kernels chosen for the CPU at import (on
an AVX-512 machine, for instance, ``np.power`` differs from the C library's ``pow`` in the last bit for a few values
in a thousand). The compiled per-job path (:mod:`dcsim.kernel`) must give the Python path's bits, so where the
Python path calls a numpy function on float64 arrays, the kernel calls the same numpy inner loop on the same
numbers, one element at a time, through its address:

- :func:`loop_address` reads a ufunc's loop for a type signature from the ufunc object (numpy's C struct
  ``PyUFuncObject``: its ``functions``, ``data`` and ``types`` tables);
- :class:`NumpyLoops` keeps the addresses and a scratch block the kernel writes arguments into, and checks on
  probe values that a call gives exactly what numpy gives on arrays (of lengths 1–40, every position; an exponent
  as an array and as a broadcast scalar); without that it is not used (:attr:`NumpyLoops.reason` says why);
- :func:`power` is the kernel's ``np.power`` of two float64 numbers (``scalar=True``: the exponent broadcast, as
  ``array ** float`` does once numpy's fast paths for 2, 1, 0.5, −1 and 0 are past; the kernel's
  ``_gamma_pow`` takes those first).

Reading the struct needs no compiler and no numpy headers; the layout it reads (``PyObject_HEAD``, four ``int``
fields, then the ``functions``, ``data``, ``ntypes`` and ``name``/``types`` pointers) has been numpy's public C API
since numpy 1.x, and the probe catches a numpy where it is not.
"""
from __future__ import annotations

import ctypes
import sys

import numpy as np

__all__ = ["NumpyLoops", "loop_address", "numpy_loops", "power"]

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


# the int64 block the kernel reads: the power loop, its data, and the addresses of its argument block
FN, DATA, ARGS, DIMS, STEPS, STEPS_SCALAR = range(6)
N_ADDR = 6
# the float64 scratch block: base, exponent, result
X, E, OUT = range(3)


class NumpyLoops:
    """The addresses of numpy's float64 power loop and of a scratch block for one element, checked.

    Attributes:
        addr: ``int64`` addresses the kernel reads (indices ``FN``, ``DATA``, ``ARGS``, ``DIMS``, ``STEPS``,
            ``STEPS_SCALAR``); zeros when not usable.
        io: ``float64`` scratch: base, exponent, result.
        reason: None when usable; else why not (the compiled paths that need numpy's power then run in Python).
    """

    def __init__(self) -> None:
        self.io = np.zeros(3)
        self._args = np.zeros(3, dtype=np.int64)
        self._dims = np.ones(1, dtype=np.int64)
        self._steps = np.array([8, 8, 8], dtype=np.int64)
        self._steps_scalar = np.array([8, 0, 8], dtype=np.int64)
        self.addr = np.zeros(N_ADDR, dtype=np.int64)
        self.reason: str | None = None
        try:
            fn, data = loop_address(np.power, "ddd")
        except LookupError as exc:
            self.reason = f"numpy's float64 power loop cannot be called from the kernel ({exc})"
            return
        io = self.io.ctypes.data
        self._args[:] = (io + 8 * X, io + 8 * E, io + 8 * OUT)
        self.addr[:] = (fn, data, self._args.ctypes.data, self._dims.ctypes.data, self._steps.ctypes.data,
                        self._steps_scalar.ctypes.data)
        if not self._matches_numpy():
            self.addr[:] = 0
            self.reason = "numpy's float64 power loop, called one element at a time, does not give numpy's results"

    def _call(self, x: float, e: float, scalar: bool) -> float:
        return _power_py(self.addr, self.io, x, e, scalar)

    def _matches_numpy(self) -> bool:
        """Whether one-element calls give numpy's ``a ** b`` and ``a ** float`` on arrays of lengths 1–40 (every
        position), over the values the pace bid meets (bases in [0, 1], exponents 1/β and γ) and beyond."""
        rng = np.random.default_rng(20261204)
        for n in list(range(1, 41)) + [257]:
            base = np.concatenate([rng.random(n - n // 4), rng.uniform(0.0, 8.0, n // 4)])
            exponent = 1.0 / np.maximum(rng.random(n) * 3.0, 1e-6)
            if n % 5 == 0:
                base[0], exponent[-1] = 0.0, 1.0
            scalar = float(rng.uniform(0.3, 4.0))
            for got, want in ((lambda b, e: self._call(b, e, False), (base ** exponent).tolist()),
                              (lambda b, _: self._call(b, scalar, True), (base ** scalar).tolist())):
                if [got(b, e) for b, e in zip(base.tolist(), exponent.tolist())] != want:
                    return False
        return True


_LOOPS: NumpyLoops | None = None


def numpy_loops() -> NumpyLoops:
    """This process's :class:`NumpyLoops` (built and checked once)."""
    global _LOOPS
    if _LOOPS is None:
        _LOOPS = NumpyLoops()
    return _LOOPS


def _power_py(addr: np.ndarray, io: np.ndarray, x: float, e: float, scalar: bool) -> float:
    """Reference form of :func:`power` without numba (tests): the same loop through ctypes."""
    loop = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(int(addr[FN]))
    io[X], io[E] = x, e
    loop(int(addr[ARGS]), int(addr[DIMS]), int(addr[STEPS_SCALAR if scalar else STEPS]), int(addr[DATA]))
    return float(io[OUT])


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

    def power(addr, io, x, e, scalar):
        """numpy's float64 ``x ** e`` (``scalar``: the exponent broadcast, as ``array ** float``), through the loop
        at ``addr`` with scratch ``io`` (:class:`NumpyLoops`); compiled into the kernel by :mod:`dcsim.kernel`."""
        io[X] = x
        io[E] = e
        _call_loop(addr[FN], addr[ARGS], addr[DIMS], addr[STEPS_SCALAR] if scalar else addr[STEPS], addr[DATA])
        return io[OUT]
except ImportError:  # pragma: no cover - without numba there is no kernel to call it
    power = _power_py
