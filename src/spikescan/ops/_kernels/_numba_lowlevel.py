"""LLVM-level helpers for the numba kernels.

:func:`prefer_wide_vectors` lets LLVM use 512-bit vectors in one kernel on CPUs that have them
(its default tuning for such CPUs stays at 256 bits).

(Non-temporal "streaming" stores of the outputs were tried as well -- a row computed into a
cache-resident buffer, then written out whole cache lines at a time without the read for
ownership of a normal store.  On the development CPU, whose 300 MB last-level cache holds much
of a training step's arrays, they made the fused SPSN forward slower, 30.6 vs 27.2 ms for
[10000, 4096] and 116 vs 110 ms for [10000, 16384], so the kernels use normal stores.)
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic


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
