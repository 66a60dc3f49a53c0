"""SPSN data augmentation (Pommier et al., §IV-B) as composable, seedable transforms.

Both act on one sample ``[T, ..., C]`` (time first, channels last, e.g. a binned SHD sample
``[T, 700]``) and keep its shape:

- :class:`RandomChannelShift`: translate along the channel axis by
  ``round(U(-k_shift * C, k_shift * C))`` channels (the paper: "shifted by a random factor along
  the channel axis ... chosen uniformly in [-k_shift, k_shift] and rounded to the nearest
  integer"), filling with zeros.  With ``C = 700`` and ``k_shift = 0.1``: offsets in -70..70.
- :class:`RandomScale`: zoom time and channels by one common factor ``s ~ U(1 - k_scale,
  1 + k_scale)`` with nearest-neighbour sampling, cropping what leaves the grid and zero-filling
  what enters it (the paper: "conceptually similar to a zoom applied to an image").

Each transform draws its parameter from ``generator`` (a ``torch.Generator``) or, without one,
from torch's global RNG; the same seed gives the same augmentation.  In ``DataLoader`` workers
prefer the global RNG (seeded per worker by the loader): a generator object is copied into every
worker with the same state.  ``draw()`` returns the next random parameter and ``apply(x, param)``
is the deterministic part, so ``t(x) == t.apply(x, t.draw())``.
"""

from __future__ import annotations

import math

import torch

from .._checks import check_choice

__all__ = ["RandomChannelShift", "RandomScale", "Compose"]


def _check_sample(x, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [T, ..., C], got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name} must be one sample [T, ..., C] with at least 2 dims, got shape {tuple(x.shape)}")
    return x


def _check_fraction(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= v < 1.0):
        raise ValueError(f"{name} must be a number in [0, 1), got {v!r}")
    return float(v)


def _uniform(lo: float, hi: float, generator) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))


class RandomChannelShift:
    """Shift the last (channel) axis by a random whole number of channels, zero fill.

    ``apply(x, offset)``: ``out[..., c] = x[..., c - offset]`` where ``0 <= c - offset < C``, else 0.
    """

    def __init__(self, k_shift: float = 0.1, generator: torch.Generator | None = None):
        self.k_shift = _check_fraction(k_shift, "k_shift")
        self.generator = generator

    def draw(self, num_channels: int) -> int:
        """``round(U(-k_shift * C, k_shift * C))`` (Python rounding)."""
        m = self.k_shift * num_channels
        return int(round(_uniform(-m, m, self.generator)))

    @staticmethod
    def apply(x: torch.Tensor, offset: int) -> torch.Tensor:
        _check_sample(x)
        c = x.shape[-1]
        out = torch.zeros_like(x)
        if abs(offset) < c:
            if offset >= 0:
                out[..., offset:] = x[..., : c - offset]
            else:
                out[..., :offset] = x[..., -offset:]
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_sample(x)
        return self.apply(x, self.draw(x.shape[-1]))

    def __repr__(self) -> str:
        return f"RandomChannelShift(k_shift={self.k_shift})"


def _nearest_source(n: int, factor: float, anchor: str, device) -> torch.Tensor:
    """Source index (``-1`` = outside) of each of ``n`` output positions under a zoom by ``factor``."""
    i = torch.arange(n, dtype=torch.float64, device=device)
    c = (n - 1) / 2.0 if anchor == "center" else 0.0
    src = torch.floor((i - c) / factor + c + 0.5).to(torch.long)
    return torch.where((src >= 0) & (src < n), src, torch.full_like(src, -1))


class RandomScale:
    """Zoom time and channels by one random factor ``s`` (nearest neighbour), shape preserved.

    ``apply(x, s)``: output position ``i`` along an axis of length ``n`` reads input position
    ``round((i - a) / s + a)`` (half up), zero where that falls outside ``[0, n)``; ``a`` is the
    axis centre ``(n - 1) / 2`` (``anchor="center"``, as an image zoom) or 0 (``anchor="start"``:
    the sample keeps its onset at step 0 and channel 0).  ``s > 1`` stretches (and crops),
    ``s < 1`` shrinks (and zero-pads).
    """

    def __init__(self, k_scale: float = 0.3, generator: torch.Generator | None = None,
                 anchor: str = "center"):
        self.k_scale = _check_fraction(k_scale, "k_scale")
        check_choice(anchor, "anchor", ("center", "start"))
        self.generator, self.anchor = generator, anchor

    def draw(self) -> float:
        """``U(1 - k_scale, 1 + k_scale)``."""
        return _uniform(1.0 - self.k_scale, 1.0 + self.k_scale, self.generator)

    def apply(self, x: torch.Tensor, factor: float) -> torch.Tensor:
        _check_sample(x)
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
            raise ValueError(f"factor must be a finite number > 0, got {factor!r}")
        t_src = _nearest_source(x.shape[0], factor, self.anchor, x.device)
        c_src = _nearest_source(x.shape[-1], factor, self.anchor, x.device)
        out = x.index_select(0, t_src.clamp(min=0)).index_select(-1, c_src.clamp(min=0))
        out[t_src < 0] = 0
        out[..., c_src < 0] = 0
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.draw())

    def __repr__(self) -> str:
        return f"RandomScale(k_scale={self.k_scale}, anchor={self.anchor!r})"


class Compose:
    """Apply transforms in order: ``Compose([RandomChannelShift(0.1), RandomScale(0.3)])``."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for k, t in enumerate(self.transforms):
            if not callable(t):
                raise TypeError(f"transforms[{k}] must be callable, got {type(t).__name__}")

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"
