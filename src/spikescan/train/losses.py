"""Readout reductions over time and the classification losses built on them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_time_first

READOUTS = ("mean", "max", "last")


def reduce_time(u: torch.Tensor, readout: str = "mean") -> torch.Tensor:
    """Collapse the readout membrane ``u [T, B, C]`` over time into logits ``[B, C]``.

    ``"mean"`` is SPSN eq. 20 (mean over time, the paper's best), ``"max"`` the max-over-time
    readout (FastSNN, infinite-threshold output neurons), ``"last"`` the last step.  With LEFT
    padding every sample ends at the last step, so these need no lengths.
    """
    check_time_first(u, "u", min_dim=3)
    check_choice(readout, "readout", READOUTS)
    if readout == "mean":
        return u.mean(0)
    if readout == "max":
        return u.amax(0)
    return u[-1]


def readout_cross_entropy(u: torch.Tensor, target: torch.Tensor, readout: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``softmax(reduce_time(u))`` against class indices (SPSN eq. 20)."""
    logits = reduce_time(u, readout)
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must be [B={logits.shape[0]}] class indices, got shape {tuple(target.shape)}")
    return F.cross_entropy(logits, target)
