"""Launch helpers shared by the Triton kernels (imported only when a Triton kernel is used).

``fp_fusion=False`` is passed to every launch: the forward kernels must perform the reference's
``decay * v`` then ``+ x`` as two rounded operations (as PyTorch does), otherwise an FMA would
change the last bit of the membrane and, rarely, a spike at the threshold.
"""

from __future__ import annotations

import triton

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
