"""Surrogate gradients: the derivative used in place of the Dirac delta of the Heaviside step.

A spiking neuron fires ``s = H(x)`` with ``x = u - threshold``.  ``dH/dx`` is a Dirac delta,
zero almost everywhere, so backpropagation uses a smooth, peaked "surrogate" derivative
instead (Neftci, Mostafa & Zenke 2019, "Surrogate gradient learning in spiking neural
networks").  The forward pass stays the exact step.

Each surrogate is a small frozen dataclass with

- ``kind``: a string naming the formula (``"fast_sigmoid"``, ``"atan"``, ``"sigmoid"``,
  ``"triangle"``),
- ``param``: the one float that parameterises it (slope, alpha or width), always ``> 0``,
- ``grad(x)``: the surrogate derivative evaluated elementwise,
- ``primitive(x)``: an antiderivative of ``grad`` (a smooth stand-in for ``H``), for plots and
  tests.

Compiled kernels (numba / Triton) cannot call Python objects; they receive ``(kind, param)``
and implement the same formula.  :func:`surrogate_grad` is the pure reference of that
dispatch, so kernel tests can compare against it.

Formulas (``x = u - threshold``):

==============  =========================================================  ==========================
kind            grad(x)                                                    primitive(x)
==============  =========================================================  ==========================
fast_sigmoid    ``1 / (slope*|x| + 1)^2``                                  ``x / (slope*|x| + 1)``
atan            ``(alpha/2) / (1 + (pi/2*alpha*x)^2)``                     ``arctan(pi/2*alpha*x)/pi + 1/2``
sigmoid         ``slope * sig(slope*x) * (1 - sig(slope*x))``              ``sig(slope*x)``
triangle        ``max(0, 1 - |x|/width) / width``                          piecewise quadratic, 0 to 1
==============  =========================================================  ==========================
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from . import defaults as _defaults

__all__ = [
    "Surrogate",
    "FastSigmoid",
    "ATan",
    "Sigmoid",
    "Triangle",
    "get",
    "surrogate_grad",
    "DEFAULT",
]


def _check_param(value, name: str, cls_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{cls_name}: {name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{cls_name}: {name} must be a finite number > 0, got {value!r}")
    return value


class Surrogate:
    """Base class: subclasses are frozen dataclasses with one positive float field.

    ``kind`` names the formula, ``param`` returns the value of that field.  Custom surrogates
    may subclass this; the sequential references accept any subclass, while compiled kernels
    only know the built-in kinds listed in :func:`surrogate_grad`.
    """

    kind: ClassVar[str] = ""
    _param_name: ClassVar[str] = ""

    @property
    def param(self) -> float:
        return getattr(self, self._param_name)

    def __post_init__(self) -> None:
        # frozen dataclass: write the validated float back with object.__setattr__
        value = _check_param(getattr(self, self._param_name), self._param_name, type(self).__name__)
        object.__setattr__(self, self._param_name, value)

    def grad(self, x: Tensor) -> Tensor:
        """Surrogate derivative of ``H`` at ``x`` (elementwise, same dtype as ``x``)."""
        return surrogate_grad(self.kind, self.param, x)

    def primitive(self, x: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass(frozen=True)
class FastSigmoid(Surrogate):
    """SuperSpike surrogate ``1 / (slope*|x| + 1)^2`` (Zenke & Ganguli 2018, "SuperSpike").

    It is the derivative of the "fast sigmoid" ``x / (slope*|x| + 1)``.  FastSNN's
    ``(beta*|V| + 1)^-2`` with ``beta = 100`` and the SPSN paper's LIF baseline surrogate
    ``1 / (100*|u| + 1)^2`` are this function with ``slope=100``.  ``slope=25`` is the
    snnTorch default and spikescan's default.  Peak value 1 at ``x = 0``.
    """

    slope: float = 25.0
    kind: ClassVar[str] = "fast_sigmoid"
    _param_name: ClassVar[str] = "slope"

    def primitive(self, x: Tensor) -> Tensor:
        return x / (self.slope * x.abs() + 1.0)


@dataclass(frozen=True)
class ATan(Surrogate):
    """Arctan surrogate ``(alpha/2) / (1 + (pi/2*alpha*x)^2)`` (Fang et al. 2021, SpikingJelly).

    Derivative of ``arctan(pi/2 * alpha * x) / pi + 1/2``; SpikingJelly's
    ``surrogate.ATan(alpha=2.0)``, used by the PSU papers.  Peak value ``alpha/2``.
    """

    alpha: float = 2.0
    kind: ClassVar[str] = "atan"
    _param_name: ClassVar[str] = "alpha"

    def primitive(self, x: Tensor) -> Tensor:
        return torch.atan(x * (math.pi / 2.0 * self.alpha)) / math.pi + 0.5


@dataclass(frozen=True)
class Sigmoid(Surrogate):
    """Sigmoid surrogate ``slope * sig(slope*x) * (1 - sig(slope*x))``.

    Derivative of ``sigmoid(slope * x)`` (Zenke & Vogels 2021, "The remarkable robustness of
    surrogate gradient learning"; SpikingJelly ``surrogate.Sigmoid(alpha=4.0)``).  Peak
    ``slope/4``.
    """

    slope: float = 4.0
    kind: ClassVar[str] = "sigmoid"
    _param_name: ClassVar[str] = "slope"

    def primitive(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.slope * x)


@dataclass(frozen=True)
class Triangle(Surrogate):
    """Triangle (piecewise-linear) surrogate ``max(0, 1 - |x|/width) / width``.

    Esser et al. 2016 / Bellec et al. 2018 ("pseudo-derivative" of LSNNs, there with a
    dampening factor).  Integrates to 1 and has compact support ``|x| < width``: outside it
    the gradient is exactly zero.
    """

    width: float = 1.0
    kind: ClassVar[str] = "triangle"
    _param_name: ClassVar[str] = "width"

    def primitive(self, x: Tensor) -> Tensor:
        w = self.width
        y = x.clamp(-w, w) / w  # in [-1, 1]
        return 0.5 + y - torch.sign(y) * y * y / 2.0


DEFAULT = FastSigmoid(_defaults.SURROGATE_SLOPE)
"""The surrogate used when none is given: ``FastSigmoid(slope=25.0)`` (:mod:`spikescan.defaults`)."""

_CLASSES = {"fast_sigmoid": FastSigmoid, "atan": ATan, "sigmoid": Sigmoid, "triangle": Triangle}
_ALIASES = {
    "fast_sigmoid": "fast_sigmoid",
    "fastsigmoid": "fast_sigmoid",
    "superspike": "fast_sigmoid",
    "atan": "atan",
    "arctan": "atan",
    "sigmoid": "sigmoid",
    "triangle": "triangle",
}


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"surrogate kind must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    try:
        return _ALIASES[key]
    except KeyError:
        raise ValueError(
            f"unknown surrogate {name!r}; expected one of {sorted(_ALIASES)} or a Surrogate instance"
        ) from None


_CALL = re.compile(r"\s*([A-Za-z_-]+)\s*\(\s*(?:([a-z_]+)\s*=\s*)?([^()=,\s]+)\s*\)\s*")


def get(name_or_obj=None, **kw) -> Surrogate:
    """Return a surrogate from an instance, a name, or ``None`` (the default ``FastSigmoid(25)``).

    Names (case-insensitive): ``"fast_sigmoid"``/``"superspike"``, ``"atan"``/``"arctan"``,
    ``"sigmoid"``, ``"triangle"``.  Keyword arguments go to the constructor, e.g.
    ``get("fast_sigmoid", slope=100.0)``.  A name may carry its parameter as a call, the form
    of a surrogate's ``repr`` (so a config file can name one): ``"fast_sigmoid(100)"``,
    ``"FastSigmoid(slope=100.0)"``, ``"atan(alpha=2)"``.  Raises ``ValueError`` for an unknown name or a
    non-positive parameter, and when keywords are given together with an instance or ``None``.
    """
    if isinstance(name_or_obj, Surrogate):
        if kw:
            raise ValueError(f"surrogate: keyword arguments {sorted(kw)} given with an instance")
        return name_or_obj
    if name_or_obj is None:
        if kw:
            raise ValueError(f"surrogate: keyword arguments {sorted(kw)} given without a name")
        return DEFAULT
    if not isinstance(name_or_obj, str):
        raise TypeError(
            f"surrogate must be a Surrogate instance, a name or None, got {type(name_or_obj).__name__}"
        )
    call = _CALL.fullmatch(name_or_obj)
    if call is not None:
        if kw:
            raise ValueError(f"surrogate {name_or_obj!r}: keyword arguments {sorted(kw)} given with a parameter")
        name_or_obj, key, value = call.groups()
        cls = _CLASSES[_canonical(name_or_obj)]
        if key is not None and key != cls._param_name:
            raise ValueError(f"surrogate {call.string!r}: {cls.__name__} takes only {cls._param_name!r}, got {key!r}")
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"surrogate {call.string!r}: the parameter must be a number, got {value!r}") from None
        return cls(value)
    cls = _CLASSES[_canonical(name_or_obj)]
    try:
        return cls(**kw)
    except TypeError as e:
        raise ValueError(
            f"surrogate {name_or_obj!r}: bad keyword arguments {sorted(kw)}; "
            f"{cls.__name__} takes only {cls._param_name!r}"
        ) from e


def surrogate_grad(kind: str, param: float, x: Tensor) -> Tensor:
    """Pure reference of the surrogate derivative named by ``(kind, param)``, at ``x``.

    The formula compiled kernels must reproduce; see the module docstring for the table.
    ``kind`` accepts the same names as :func:`get`.  The result has the dtype of ``x``.
    """
    kind = _canonical(kind)
    param = _check_param(param, "param", f"surrogate_grad({kind!r})")
    if kind == "fast_sigmoid":
        return (param * x.abs() + 1.0).reciprocal().square()
    if kind == "atan":
        return (param / 2.0) / (1.0 + (x * (math.pi / 2.0 * param)).square())
    if kind == "sigmoid":
        s = torch.sigmoid(param * x)
        return param * s * (1.0 - s)
    # triangle
    return (1.0 - x.abs() / param).clamp_min(0.0) / param
