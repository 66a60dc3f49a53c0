"""Readout reductions over time and the classification losses built on them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_time_first

TIME_REDUCTIONS = ("mean", "max", "last")
#: ``readout`` values of a run: a reduction over time of the LI readout membrane, or
#: ``"max-membrane"`` (the network ends in FastSNN's max-membrane readout and outputs logits).
READOUTS = TIME_REDUCTIONS + ("max-membrane",)


def reduce_time(u: torch.Tensor, readout: str = "mean") -> torch.Tensor:
    """Collapse the readout membrane ``u [T, B, C]`` over time into logits ``[B, C]``.

    ``"mean"`` is SPSN eq. 20 (mean over time, the paper's best), ``"max"`` the max-over-time
    readout (FastSNN, infinite-threshold output neurons), ``"last"`` the last step.  With LEFT
    padding every sample ends at the last step, so these need no lengths.
    """
    check_time_first(u, "u", min_dim=3)
    check_choice(readout, "readout", TIME_REDUCTIONS)
    if readout == "mean":
        return u.mean(0)
    if readout == "max":
        return u.amax(0)
    return u[-1]


def readout_logits(out: torch.Tensor, readout: str = "mean") -> torch.Tensor:
    """Logits ``[B, C]`` from a network's output: ``reduce_time(out, readout)``, or ``out`` itself
    for ``readout="max-membrane"`` (FastSNN: the readout layer already took ``max_t V[t]``)."""
    check_choice(readout, "readout", READOUTS)
    if readout == "max-membrane":
        if out.dim() != 2:
            raise ValueError(f"readout 'max-membrane' expects logits [B, C], got shape {tuple(out.shape)}")
        return out
    return reduce_time(out, readout)


def readout_cross_entropy(u: torch.Tensor, target: torch.Tensor, readout: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``softmax(readout_logits(u))`` against class indices (SPSN eq. 20, FastSNN eq. 18-19)."""
    logits = readout_logits(u, readout)
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must be [B={logits.shape[0]}] class indices, got shape {tuple(target.shape)}")
    return F.cross_entropy(logits, target)
