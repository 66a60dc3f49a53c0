"""Launch helpers shared by the Triton kernels (imported only when a Triton kernel is used).

``fp_fusion=False`` is passed to every launch: the forward kernels must perform the reference's
``decay * v`` then ``+ x`` as two rounded operations (as PyTorch does), otherwise an FMA would
change the last bit of the membrane and, rarely, a spike at the threshold.
"""

from __future__ import annotations

import triton
import triton.language as tl

LAUNCH = dict(enable_fp_fusion=False)


def block_for(N: int) -> int:
    """Neurons per program: large layers 256 (few programs per SM suffice), small ones fewer so
    that every SM gets a program."""
    if N >= 1 << 18:
        return 256
    if N >= 1 << 14:
        return 128
    return 64


def grid(N: int, block: int) -> tuple[int]:
    return (triton.cdiv(N, block),)


@triton.jit
def surrogate(x, p, CODE: tl.constexpr):
    """Surrogate derivative of ``H`` at ``x``; ``CODE`` as in ``_common.SURROGATE_CODES``."""
    if CODE == 0:  # fast sigmoid
        r = 1.0 / (p * tl.abs(x) + 1.0)
        g = r * r
    elif CODE == 1:  # atan
        y = x * (1.5707963267948966 * p)
        g = (0.5 * p) / (1.0 + y * y)
    elif CODE == 2:  # sigmoid
        sg = 1.0 / (1.0 + tl.exp(-(p * x)))
        g = p * sg * (1.0 - sg)
    else:  # triangle
        g = tl.maximum(1.0 - tl.abs(x) / p, 0.0) / p
    return g
