"""Containers that adapt per-step layers to time-first sequences."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_time_first


class TimeDistributed(nn.Module):
    """Apply a per-step module (Conv2d, BatchNorm2d, Flatten, ...) to every step of ``[T, B, ...]``.

    The time and batch dims are merged, ``y = module(x.reshape(T*B, ...))``, and split again, so
    the wrapped module sees one big batch: one kernel launch instead of T.  ``nn.Linear`` needs no
    wrapper: it already acts on the last dim of ``[T, B, F]``.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_time_first(x, "x", min_dim=2)
        t, b = x.shape[:2]
        y = self.module(x.reshape(t * b, *x.shape[2:]))
        return y.reshape(t, b, *y.shape[1:])
