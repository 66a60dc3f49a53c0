"""The sequential reference of leaky integration: the recurrence as written, one step at a time."""

from __future__ import annotations

from typing import Optional

import torch


def leaky_step(x_t: torch.Tensor, u: torch.Tensor, decay, scale=1.0) -> torch.Tensor:
    """One step ``u[t] = decay * u[t-1] + scale * x[t]`` (no validation)."""
    return decay * u + scale * x_t


def leaky_reference(y: torch.Tensor, decay: torch.Tensor, v0: Optional[torch.Tensor],
                     chunk_size: Optional[int] = None) -> torch.Tensor:
    """Reference: ``u[t] = decay * u[t-1] + y[t]`` one step at a time (autograd runs through it).

    ``y`` is the already scaled input (``scale * x``); kernel contract of ``parallel.SCAN_KERNELS``.
    """
    u = v0 if v0 is not None else y.new_zeros(())
    out = []
    for y_t in y.unbind(0):  # unbind, not y[t]: each y[t]'s backward would build a full [T, ...] grad
        u = leaky_step(y_t, u, decay)
        out.append(u)
    return torch.stack(out)


