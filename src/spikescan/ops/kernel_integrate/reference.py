"""The sequential reference of a causal-kernel membrane: the sum as written, one step at a time."""

from __future__ import annotations

import torch


def kernel_integrate_reference(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``v[t] = sum_{j=0}^{min(t, K-1)} kernel[j] x[t - j]`` for each step ``t`` in turn (autograd
    runs through it); ``x`` ``[T, *rest]``, ``kernel`` ``[K]``, no validation."""
    out = []
    for t in range(x.shape[0]):
        j = min(t + 1, kernel.shape[0])
        window = x[t - j + 1:t + 1].flip(0)  # x[t], x[t-1], ..., x[t-j+1]
        out.append(torch.tensordot(kernel[:j], window, dims=1))
    return torch.stack(out)
