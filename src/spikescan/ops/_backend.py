"""The one backend registry of :mod:`spikescan.ops`.

Every implementation of an op registers itself next to its code::

    @register("lif", "fused", unsupported=fused_unsupported, description="...")
    def _lif_fused(x, ...): ...

``unsupported(x, **context)`` returns why that backend cannot run the call (a sentence), or
``None`` when it can.  :func:`resolve` is the only place that turns a ``backend=`` argument
into an implementation: an unknown name, and a named backend that cannot run the input, raise
a ``ValueError`` worded here; ``"auto"`` takes the first backend of the op's preference list
(:func:`register_auto`) that can run the input.  A named backend is never swapped for another.

The time-fused kernels are the ``"fused"`` backends; which kernel family runs them (numba on the
CPU, Triton on CUDA) is :func:`kernel_impl`, and whether either can run is
:func:`kernels_unavailable` -- the one availability check, with the one install hint.
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Callable, Iterator, NamedTuple, Sequence

import torch

__all__ = ["Backend", "register", "register_auto", "backends", "resolve", "kernel_impl", "kernels_unavailable",
           "fused_unsupported", "force_kernels"]


class Backend(NamedTuple):
    """One implementation of an op: ``fn`` and the test ``unsupported(x, **context) -> reason | None``."""

    op: str
    name: str
    fn: Callable
    unsupported: Callable[..., str | None]
    description: str


_REGISTRY: dict[str, dict[str, Backend]] = {}
_AUTO: dict[str, Callable[..., Sequence[str]]] = {}


def _always(x, **context) -> None:
    return None


def register(op: str, name: str, *, unsupported: Callable[..., str | None] | None = None, description: str = ""):
    """Decorator: register ``fn`` as backend ``name`` of ``op``."""
    if name == "auto":
        raise ValueError("'auto' is not a backend; give the op a preference list with register_auto")

    def decorate(fn: Callable) -> Callable:
        _REGISTRY.setdefault(op, {})[name] = Backend(op, name, fn, unsupported or _always, description)
        return fn

    return decorate


def register_auto(op: str, preference: Callable[..., Sequence[str]]) -> None:
    """``preference(x, **context)`` lists the op's backends best first for that call; ``"auto"``
    takes the first that can run it."""
    _AUTO[op] = preference


def _table(op: str) -> dict[str, Backend]:
    try:
        return _REGISTRY[op]
    except KeyError:
        raise ValueError(f"unknown op {op!r}; ops with backends: {sorted(_REGISTRY)}") from None


def backends(op: str, x: torch.Tensor | None = None, **context) -> tuple[str, ...]:
    """The backend names of ``op`` (e.g. ``backends("lif")``), or, given an input ``x`` (and the
    call's context, e.g. ``surrogate=``), those that can run it; ``"auto"`` is always valid too."""
    table = _table(op)
    if x is None:
        return tuple(table)
    return tuple(name for name, b in table.items() if b.unsupported(x, **context) is None)


def describe(op: str) -> dict[str, str]:
    """``{backend: one-line description}`` of ``op``, for help texts."""
    return {name: b.description for name, b in _table(op).items()}


def resolve(op: str, backend: str, x: torch.Tensor, **context) -> Backend:
    """The implementation ``backend`` (or, for ``"auto"``, the preferred one) of ``op`` for this call."""
    table = _table(op)
    if backend == "auto":
        preferred = _AUTO[op](x, **context)
        for name in preferred:
            b = table[name]
            if b.unsupported(x, **context) is None:
                return b
        raise ValueError(f"no backend of {op} can run this input: "
                         + "; ".join(f"{n}: {table[n].unsupported(x, **context)}" for n in preferred))
    if not isinstance(backend, str) or backend not in table:
        choices = ", ".join(repr(n) for n in ("auto", *table))
        raise ValueError(f"backend must be one of {choices}, got {backend!r}")
    b = table[backend]
    reason = b.unsupported(x, **context)
    if reason is not None:
        can = [n for n, other in table.items() if n != backend and other.unsupported(x, **context) is None]
        alternatives = ", ".join(repr(n) for n in can) if can else "none"
        raise ValueError(f"backend={backend!r} of {op} cannot run this input: {reason}; backends that can: "
                         f"{alternatives} (or 'auto', which picks one)")
    return b


# --------------------------------------------------------------------------------------------
# the fused kernels' availability
# --------------------------------------------------------------------------------------------

_HAS_NUMBA = importlib.util.find_spec("numba") is not None
_HAS_TRITON = importlib.util.find_spec("triton") is not None

# Tests set this to "triton" (force_kernels) to run the Triton kernels on CPU tensors in Triton's
# interpreter (TRITON_INTERPRET=1 set before triton is imported).
_FORCED: str | None = None


@contextlib.contextmanager
def force_kernels(impl: str | None) -> Iterator[None]:
    """Inside the block every fused op runs the ``impl`` kernels ("numba", "triton") whatever the device."""
    global _FORCED
    if impl not in (None, "numba", "triton"):
        raise ValueError(f"impl must be None, 'numba' or 'triton', got {impl!r}")
    previous, _FORCED = _FORCED, impl
    try:
        yield
    finally:
        _FORCED = previous


def kernels_unavailable(device: torch.device | str) -> str | None:
    """Why the fused kernels cannot run on ``device`` (with what to install), or ``None`` when they can."""
    device = torch.device(device)
    if _FORCED is not None:
        return None
    if device.type == "cpu":
        return None if _HAS_NUMBA else "the fused kernels on the CPU need numba (pip install numba)"
    if device.type == "cuda":
        if not _HAS_TRITON:
            return "the fused kernels on CUDA need triton (pip install triton)"
        return None if torch.cuda.is_available() else "no CUDA device is visible"
    return f"the fused kernels run on CPU (numba) and CUDA (Triton) tensors, not on {device}"


def fused_unsupported(x, *, surrogate=None, **context) -> str | None:
    """The ``unsupported`` test of every ``"fused"`` backend: the device (:func:`kernels_unavailable`)
    and, when the op takes one, a built-in surrogate (the kernels branch on its kind)."""
    from ._kernels._common import SURROGATE_CODES

    reason = kernels_unavailable(x.device)
    if reason is None and surrogate is not None and getattr(surrogate, "kind", "") not in SURROGATE_CODES:
        reason = (f"the fused kernels implement only the built-in surrogates {sorted(SURROGATE_CODES)}, "
                  f"got {type(surrogate).__name__} (kind {getattr(surrogate, 'kind', '')!r})")
    return reason


def kernel_impl(device: torch.device) -> str:
    """``"numba"`` or ``"triton"``: the kernel family that runs the fused ops on ``device``."""
    if _FORCED is not None:
        return _FORCED
    reason = kernels_unavailable(device)
    if reason is not None:
        raise ValueError(reason)
    return "numba" if torch.device(device).type == "cpu" else "triton"


def stores_states(device: torch.device) -> bool:
    """Whether the fused kernels on ``device`` keep every step's state for the backward (Triton),
    rather than a checkpoint every ``_common.SEGMENT`` steps that the backward recomputes from (numba)."""
    return kernel_impl(device) == "triton"


def kernel_module(package: str, device: torch.device):
    """The ``numba_kernels`` or ``triton_kernels`` module of an op package for ``device``.

    Both modules of a package have the same host functions (same names, keyword arguments), so
    the caller never branches on the family.
    """
    return importlib.import_module(f"{package}.{kernel_impl(device)}_kernels")
