"""Batch variable-length samples into time-first tensors ``[T_max, B, ...]``."""

from __future__ import annotations

import torch

from .._checks import check_choice

__all__ = ["pad_collate"]


def pad_collate(batch, pad: str = "left", value: float = 0.0):
    """Stack ``(x [T_i, ...], label)`` pairs into ``(x [T_max, B, ...], labels [B], lengths [B])``.

    ``pad="left"`` (default) puts the padding before each sample, so that every sample *ends*
    at the last step ``T_max - 1``; this is what the SPSN authors' code does, and it matters for
    readouts that look at the end of the sequence or average over it.  ``pad="right"`` puts it
    after (every sample starts at step 0).  Padding is filled with ``value``.  ``lengths`` holds
    each ``T_i`` (int64) so a model can mask the padded steps; ``labels`` is int64.

    Use as ``DataLoader(ds, batch_size=..., collate_fn=pad_collate)``, or
    ``functools.partial(pad_collate, pad="right")``.
    """
    check_choice(pad, "pad", ("left", "right"))
    if len(batch) == 0:
        raise ValueError("batch must hold at least one sample")
    xs, labels = [], []
    for k, item in enumerate(batch):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"batch[{k}] must be an (x, label) pair")
        x, y = item
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 1:
            raise ValueError(f"batch[{k}][0] must be a tensor [T, ...] with T >= 1, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        xs.append(x)
        labels.append(int(y))
    rest, dtype = xs[0].shape[1:], xs[0].dtype
    for k, x in enumerate(xs):
        if x.shape[1:] != rest:
            raise ValueError(f"batch[{k}] has per-step shape {tuple(x.shape[1:])}, batch[0] has {tuple(rest)}")
        if x.dtype != dtype:
            raise ValueError(f"batch[{k}] has dtype {x.dtype}, batch[0] has {dtype}")
    lengths = torch.tensor([x.shape[0] for x in xs], dtype=torch.long)
    t_max = int(lengths.max())
    out = xs[0].new_empty((t_max, len(xs), *rest))
    for b, x in enumerate(xs):
        n = x.shape[0]
        data, padding = (slice(t_max - n, None), slice(0, t_max - n)) if pad == "left" else \
            (slice(0, n), slice(n, None))
        out[data, b] = x
        out[padding, b] = value
    return out, torch.tensor(labels, dtype=torch.long), lengths
