"""The one copy of the ops' parameter validation and dtype rules.

* Compute dtype: float16/bfloat16 inputs are computed in float32, float32/float64 in their own
  dtype (:func:`compute_dtype`).  Under ``torch.autocast`` an op returns the autocast dtype
  (:func:`output_dtype`); its state is float32 inside either way.
* Parameters (``decay``, ``threshold``, ``v0``, ...) are Python numbers or floating tensors
  broadcastable to the input's per-step shape ``x.shape[1:]``; :func:`param` validates one
  (finite, in range, on ``x``'s device) and returns it as a tensor in the compute dtype.
* Under ``torch.compile`` the checks that would read tensor values (a host sync, which the
  compiler turns into a graph break) are skipped: the shapes, dtypes and devices are still
  checked, values only in eager mode.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import as_param_tensor, compute_dtype

__all__ = ["compute_dtype", "param", "output_dtype", "check_v_reset"]


def param(value, name: str, x: Tensor, *, align: bool = False, **bounds) -> Tensor:
    """Validated parameter tensor in the compute dtype of ``x``.

    Python numbers are built directly in the compute dtype (0.999 must not round to float16).
    ``align=True`` prepends size-1 dims up to the rank of ``x.shape[1:]`` (what the chunked
    scans index by), else the tensor keeps its own shape.
    """
    compute = compute_dtype(x.dtype)
    t = as_param_tensor(value, name, x, dtype=compute, **bounds)  # rejects shapes that would enlarge x's
    t = t.to(compute)
    if align:
        rest = x.shape[1:]
        t = t.reshape((1,) * (len(rest) - t.dim()) + tuple(t.shape))
    return t


def check_v_reset(reset: str, v_reset) -> None:
    """``v_reset`` must be 0 with ``reset="subtract"`` (a Python number is checked without a device sync)."""
    if reset != "subtract":
        return
    if isinstance(v_reset, torch.Tensor):
        if torch.compiler.is_compiling():
            return
        nonzero = bool((v_reset.detach() != 0).any())
    else:
        nonzero = v_reset != 0
    if nonzero:
        raise ValueError("v_reset is used only with reset='zero'; with reset='subtract' leave it at 0")


def output_dtype(x: Tensor) -> torch.dtype:
    """The dtype an op returns for input ``x``: the autocast dtype inside ``torch.autocast`` for
    ``x``'s device type, else ``x.dtype``."""
    device = x.device.type
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype
