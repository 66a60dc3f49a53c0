"""LLVM-level helpers for the numba kernels.

:func:`prefer_wide_vectors` lets LLVM use 512-bit vectors in one kernel on CPUs that have them
(its default tuning for such CPUs stays at 256 bits).  :func:`specialise` compiles one variant
of a kernel template with its flags and the kernels it calls bound as constants, cached on disk.

The row helpers (:func:`add_row`, :func:`add_scaled_row`, :func:`copy_row`,
:func:`row_has_nonzero`) exist because LLVM leaves a loop over two numpy slices scalar when it
cannot prove them disjoint; as separate (not inlined) functions their loops are versioned on a
run-time overlap check and vectorize.  Inline, ``gwt[channels[e]] += g`` over 41 767 events of 200
columns took 7.6 ms on the development CPU, through :func:`add_row` 1.2 ms, the same sums.

(Non-temporal "streaming" stores of the outputs were tried as well -- a row computed into a
cache-resident buffer, then written out whole cache lines at a time without the read for
ownership of a normal store.  On the development CPU, whose 300 MB last-level cache holds much
of a training step's arrays, they made the fused SPSN forward slower, 30.6 vs 27.2 ms for
[10000, 4096] and 116 vs 110 ms for [10000, 16384], so the kernels use normal stores.)
"""

from __future__ import annotations

import types as pytypes

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


def specialise(template, jit_options: dict, flags: dict, kernels: dict):
    """``njit(**jit_options)`` of ``template`` with ``flags`` and ``kernels`` bound as its globals.

    The compiled code sees each flag as a constant (as it would a closure's cell), so branches
    on a flag vanish from the loops.  Closures would be the plain way to write this, but (1)
    numba keys a closure's disk cache on a pickle of its cells, and a numba dispatcher pickles
    with a per-process uuid, so a closure over the kernels it calls misses the cache in every new
    process and adds a cache file each time; (2) the variants of one closure share a qualname,
    hence a cache index that concurrent processes overwrite, and symbol names that can clash
    when variants compiled in different processes meet in one.  Each variant is therefore a
    function of its own name, ``<template>__<flag><value>...``, which names its cache index and
    its symbols: ``flags`` must hold every value the kernels were specialised on (whether the
    template reads it or not).
    """
    for name in kernels:
        if name not in template.__code__.co_names:
            raise NameError(f"{template.__name__} does not use the global {name!r}")
    suffix = "_".join(f"{name.strip('_').lower()}{int(value)}" for name, value in sorted(flags.items()))
    fn = pytypes.FunctionType(template.__code__, {**template.__globals__, **flags, **kernels},
                              f"{template.__name__}__{suffix}", template.__defaults__)
    fn.__qualname__ = fn.__name__
    fn.__module__ = template.__module__
    fn.__doc__ = template.__doc__
    return njit(**jit_options)(fn)


_ROW_JIT = dict(fastmath=False, cache=True, nogil=True, error_model="numpy")


@njit(**_ROW_JIT)
def add_row(dst, src):
    """``dst[j] += src[j]`` (module docstring: why a function of its own)."""
    for j in range(dst.shape[0]):
        dst[j] += src[j]


@njit(**_ROW_JIT)
def add_scaled_row(dst, a, src):
    """``dst[j] += a * src[j]`` (the product rounded, then the sum: no FMA)."""
    for j in range(dst.shape[0]):
        dst[j] += a * src[j]


@njit(**_ROW_JIT)
def copy_row(dst, src):
    """``dst[j] = src[j]``."""
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@njit(**_ROW_JIT)
def row_has_nonzero(row) -> bool:
    """Whether ``row`` has an entry that is not 0 (NaN counts: ``NaN != 0``), without an early exit
    so that the loop vectorizes."""
    found = False
    for j in range(row.shape[0]):
        found |= row[j] != 0
    return found


@intrinsic
def prefer_wide_vectors(typingctx):
    """Let LLVM vectorize the calling kernel with the widest vectors the CPU has.

    On AVX-512 CPUs LLVM's default tuning prefers 256-bit vectors, which halves the throughput
    of compute-bound loops; this sets the function attribute ``"prefer-vector-width"="512"`` on
    the function being compiled, for it alone (on a CPU without 512-bit vectors it changes
    nothing).  Call it first thing in a kernel whose inner loop should vectorize.  It pays for
    compute-bound loops -- the fused SPSN forward (RNG and exp per element): 3.4 instead of
    5.4 ms for [1000, 4096] on 2 threads of the development CPU (Xeon, AVX-512) -- and not for
    the LIF kernels (forward 2.5 instead of 2.3 ms, backward 4.3 instead of 3.7 ms for
    [1000, 8192]: slower), which therefore do not call it.

    llvmlite accepts only a fixed list of function attributes; a string attribute is added
    through the underlying set (should a future llvmlite not allow that, the call does nothing).
    """

    def codegen(context, builder, sig, args):
        try:
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except (AttributeError, TypeError):  # llvmlite internals changed: keep the default width
            pass
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def assume_disjoint_arrays(typingctx):
    """Promise LLVM that the float arrays passed to the calling kernel do not overlap where one
    of them is written: marks the kernel's float data-pointer arguments ``noalias`` (C's
    ``restrict``).

    A loop that reads and writes many arrays gets no run-time overlap checks past LLVM's limit
    on their number and stays scalar; with the promise it vectorizes without checks.  Only for
    kernels whose callers pass disjoint arrays (distinct buffers or distinct rows of one), or the
    same array to arguments that are all only read.  Integer arrays, and the arrays' bookkeeping
    pointers (reference counts), are left as they are.
    """

    def codegen(context, builder, sig, args):
        for arg in builder.function.args:
            kind = arg.type
            if isinstance(kind, ir.PointerType) and isinstance(getattr(kind, "pointee", None),
                                                                (ir.FloatType, ir.DoubleType)):
                arg.add_attribute("noalias")
        return context.get_dummy_value()

    return types.void(), codegen


# --------------------------------------------------------------------------------------------
# borrowed views
# --------------------------------------------------------------------------------------------
#
# A numba view (``a[i]``, ``a[lo:hi]``) holds a reference to its parent's buffer: making it and
# dropping it are two calls into numba's runtime with atomic updates of the reference count,
# which numba's pruning pass leaves in place when the view crosses a call (an exception check
# is a branch).  A kernel driver that passes a dozen row views per time step to its sweep
# kernels spent half its time there (FastSNN F-MNIST events backward: 12 of 23 ms on one thread).
# These views carry no reference (a null meminfo, as numba's own ``carray``): the caller keeps
# the parent alive while a view is used -- true for a kernel's arguments and for arrays it
# allocated itself, as long as the view does not escape the kernel.


def _view_codegen(context, builder, aryty, ary_value, outty, index, lo, hi):
    """The struct of a null-meminfo view: row ``index`` (or none) of ``ary``, then ``lo:hi`` of it."""
    from numba.core import cgutils
    from numba.np.arrayobj import make_array, populate_array

    ary = make_array(aryty)(context, builder, ary_value)
    shapes = cgutils.unpack_tuple(builder, ary.shape)
    strides = cgutils.unpack_tuple(builder, ary.strides)
    data = ary.data
    if index is not None:
        data = cgutils.pointer_add(builder, data, builder.mul(index, strides[0]))
        shape, stride = shapes[1], strides[1]
    else:
        shape, stride = shapes[0], strides[0]
    if lo is not None:
        data = cgutils.pointer_add(builder, data, builder.mul(lo, stride))
        shape = builder.sub(hi, lo)
    out = make_array(outty)(context, builder)
    populate_array(out, data=data, shape=[shape], strides=[stride], itemsize=ary.itemsize, meminfo=None,
                   parent=None)
    return out._getvalue()


def _view_type(aryty):
    return types.Array(aryty.dtype, 1, "C" if aryty.layout == "C" else "A", readonly=not aryty.mutable)


@intrinsic
def row_view(typingctx, ary, index):
    """``ary[index]`` of a 2-D array, as a view without a reference (section above); no bounds
    check (``0 <= index < ary.shape[0]`` is the caller's)."""
    if not (isinstance(ary, types.Array) and ary.ndim == 2 and isinstance(index, types.Integer)):
        return None
    outty = _view_type(ary)

    def codegen(context, builder, sig, args):
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        return _view_codegen(context, builder, sig.args[0], args[0], sig.return_type, i, None, None)

    return outty(ary, index), codegen


@intrinsic
def row_slice_view(typingctx, ary, index, lo, hi):
    """``ary[index, lo:hi]`` of a 2-D array (``ary[lo:hi]`` of a 1-D one when ``index`` is
    ``None``), as a view without a reference; ``0 <= lo <= hi <= len`` is the caller's."""
    if not (isinstance(ary, types.Array) and isinstance(lo, types.Integer) and isinstance(hi, types.Integer)):
        return None
    one_d = isinstance(index, types.NoneType)
    if one_d and ary.ndim != 1 or not one_d and (ary.ndim != 2 or not isinstance(index, types.Integer)):
        return None
    outty = _view_type(ary)

    def codegen(context, builder, sig, args):
        i = None if one_d else context.cast(builder, args[1], sig.args[1], types.intp)
        a = context.cast(builder, args[2], sig.args[2], types.intp)
        b = context.cast(builder, args[3], sig.args[3], types.intp)
        return _view_codegen(context, builder, sig.args[0], args[0], sig.return_type, i, a, b)

    return outty(ary, index, lo, hi), codegen
