"""Spikes as events, and the dense layer ``W s[t] + b`` computed at a cost proportional to them.

An input layer of a spiking network multiplies a weight matrix by a 0/1 tensor that is almost
all zeros: a time-to-first-spike image fires at most once per pixel over hundreds of steps, an
N-MNIST recording fills about 1 % of its (step, channel) cells.  :class:`SpikeEvents` holds
such a batch by its nonzero entries only, and :func:`event_linear` computes::

    y[t, b, :] = bias + sum_{c : x[t, b, c] != 0} x[t, b, c] * W[:, c]

with work proportional to the number of events (plus writing ``y``) instead of ``T B C O``,
forward and the weight/bias gradient backward.  It serves the first layer of a network (its
input is data, as :class:`SpikeEvents` or dense, no gradient) and the layers after sparse
spiking ones (a dense spike tensor that needs its gradient: that one, ``gy W``, is dense, so
only the forward and the weight gradient gain -- most for a small readout after a layer that
fires rarely, e.g. FastSNN's single-spike neurons).
"""

from __future__ import annotations

import importlib.util
import warnings

import torch
from torch import Tensor

from ._backend import backends, register, register_auto, resolve

__all__ = ["SpikeEvents", "event_linear", "EVENT_LINEAR_BACKENDS", "attach_events", "known_events"]



_KNOWN_EVENTS = "_spikescan_events"


def attach_events(x: Tensor, events: "SpikeEvents") -> Tensor:
    """Record on ``x`` that ``events`` are exactly its nonzero entries (values all 1 unless
    ``events.values``), so that :meth:`SpikeEvents.from_dense` of ``x`` returns them without a
    pass over ``x``; an in-place change of ``x`` or of a view of it afterwards (their shared
    ``_version``) voids the record -- writes through ``x.data``, which bypass the version
    counter as they bypass autograd, do not.  For producers that know their spikes (a
    single-spike layer: at most one per neuron)."""
    if tuple(x.shape) != events.shape or x.dtype != events.dtype:
        raise ValueError(f"events {events.shape} {events.dtype} do not describe x {tuple(x.shape)} {x.dtype}")
    setattr(x, _KNOWN_EVENTS, (events, x._version))
    return x


def known_events(x: Tensor) -> "SpikeEvents | None":
    """The events recorded on ``x`` by :func:`attach_events`, if ``x`` is unchanged since."""
    known = getattr(x, _KNOWN_EVENTS, None)
    if known is None or known[1] != x._version:
        return None
    return known[0]


class SpikeEvents:
    """A batch of spikes as events: the sparse form of a time-first tensor ``x`` ``[T, B, C]``.

    Rows ``r = t * B + b`` are in CSR form: the events of row ``r`` are at channels
    ``channels[crow[r]:crow[r + 1]]`` with values ``values[...]`` (all 1 when ``values`` is
    None, the usual case of binary spikes); every other entry of ``x`` is 0.  ``dtype`` is the
    floating dtype of the dense equivalent (what :meth:`dense` returns and what a layer
    computes in).  Build one with :meth:`from_dense`, :meth:`from_coo`, or the data sets of
    :mod:`spikescan.data.events`.  ``check=False`` skips the O(E) validation of the indices.
    """

    __slots__ = ("crow", "channels", "values", "shape", "dtype")

    def __init__(self, crow: Tensor, channels: Tensor, shape, values: Tensor | None = None, *,
                 dtype: torch.dtype = torch.float32, check: bool = True):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 0:
            raise ValueError(f"shape must be (T, B, C) with non-negative sizes, got {shape}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}")
        for name, t in (("crow", crow), ("channels", channels)):
            if not isinstance(t, Tensor) or t.dim() != 1 or t.dtype != torch.int64:
                raise TypeError(f"{name} must be a 1-d int64 tensor, got "
                                f"{t.dtype if isinstance(t, Tensor) else type(t).__name__}")
        T, B, C = shape
        if crow.numel() != T * B + 1:
            raise ValueError(f"crow must have T * B + 1 = {T * B + 1} entries for shape {shape}, got {crow.numel()}")
        if values is not None and (not isinstance(values, Tensor) or values.shape != channels.shape
                                   or not values.is_floating_point()):
            raise ValueError("values must be None or a floating tensor with one entry per event")
        if check:
            if int(crow[0]) != 0 or int(crow[-1]) != channels.numel() or bool((crow[1:] < crow[:-1]).any()):
                raise ValueError(f"crow must rise from 0 to the number of events {channels.numel()}")
            if channels.numel() and (int(channels.min()) < 0 or int(channels.max()) >= C):
                raise ValueError(f"channels must lie in [0, {C}), got [{int(channels.min())}, {int(channels.max())}]")
            if values is not None and not bool(torch.isfinite(values).all()):
                raise ValueError("values must be finite")
        self.crow, self.channels, self.values, self.shape, self.dtype = crow, channels, values, shape, dtype

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_dense(cls, x: Tensor, *, max_density: float | None = None) -> "SpikeEvents | None":
        """The events of a dense ``[T, B, C]`` tensor (its nonzero entries; values kept unless all are 1).

        With ``max_density``, returns None instead when more than that fraction of ``x`` is
        nonzero (decided by the counting pass, before any event is gathered).  When ``x``'s
        producer recorded its events (:func:`attach_events`, e.g. the single-spike kernels,
        which know each neuron's spike time) and ``x`` was not modified since, those are
        returned without reading ``x``.
        """
        if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
            raise ValueError(f"x must be a floating tensor [T, B, C], got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        known = known_events(x)
        if known is not None:  # its producer listed them: no pass over x
            return None if max_density is not None and known.density > max_density else known
        T, B, C = x.shape
        flat = x.detach().reshape(T * B, C)
        if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64) and _numba_available():
            return cls._from_dense_cpu(flat.contiguous(), x.shape, x.dtype, max_density)
        counts = (flat != 0).sum(1)
        if max_density is not None and int(counts.sum()) > max_density * flat.numel():
            return None
        rows, channels = flat.nonzero(as_tuple=True)  # row-major: already sorted by row
        vals = flat[rows, channels]
        values = None if bool((vals == 1).all()) else vals
        crow = torch.zeros(T * B + 1, dtype=torch.int64, device=x.device)
        crow[1:] = counts.cumsum(0)
        return cls(crow, channels, (T, B, C), values, dtype=x.dtype, check=False)

    @classmethod
    def _from_dense_cpu(cls, flat: Tensor, shape, dtype, max_density):
        from ._kernels import event_numba as K
        from ._kernels._cpu import parallel_for

        R, C = flat.shape
        counts = torch.empty(R, dtype=torch.int64)
        non_unit = torch.empty(R, dtype=torch.int64)
        a = flat.numpy()
        parallel_for(R, R * C, lambda lo, hi, _b: K.row_counts(a, counts.numpy(), non_unit.numpy(), lo, hi))
        crow = torch.zeros(R + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=crow[1:])
        total = int(crow[-1])
        if max_density is not None and total > max_density * flat.numel():
            return None
        want_values = bool(non_unit.any())
        channels = torch.empty(total, dtype=torch.int64)
        values = torch.empty(total if want_values else 0, dtype=flat.dtype)
        parallel_for(R, R * C, lambda lo, hi, _b: K.fill_events(a, crow.numpy(), channels.numpy(), values.numpy(),
                                                                 want_values, lo, hi))
        return cls(crow, channels, shape, values if want_values else None, dtype=dtype, check=False)

    @classmethod
    def from_coo(cls, t: Tensor, b: Tensor, c: Tensor, shape, values: Tensor | None = None, *,
                 dtype: torch.dtype = torch.float32) -> "SpikeEvents":
        """Events at ``(t[e], b[e], c[e])`` in any order (duplicates add up, as in the dense sum)."""
        T, B, C = (int(s) for s in shape)
        t, b, c = (torch.as_tensor(v, dtype=torch.int64) for v in (t, b, c))
        if not (t.shape == b.shape == c.shape) or t.dim() != 1:
            raise ValueError("t, b, c must be 1-d and of one length")
        for name, v, hi in (("t", t, T), ("b", b, B), ("c", c, C)):
            if v.numel() and (int(v.min()) < 0 or int(v.max()) >= hi):
                raise ValueError(f"{name} must lie in [0, {hi}), got [{int(v.min())}, {int(v.max())}]")
        rows = t * B + b
        order = torch.argsort(rows, stable=True)
        crow = torch.zeros(T * B + 1, dtype=torch.int64, device=rows.device)
        crow[1:] = torch.bincount(rows, minlength=T * B).cumsum(0)
        vals = None if values is None else torch.as_tensor(values)[order]
        return cls(crow, c[order], (T, B, C), vals, dtype=dtype, check=False)

    # -- views --------------------------------------------------------------------------------
    @property
    def num_events(self) -> int:
        return self.channels.numel()

    @property
    def density(self) -> float:
        """Events per entry of the dense tensor."""
        n = self.shape[0] * self.shape[1] * self.shape[2]
        return self.num_events / n if n else 0.0

    @property
    def device(self) -> torch.device:
        return self.channels.device

    def dense(self) -> Tensor:
        """The dense ``[T, B, C]`` tensor (in :attr:`dtype`)."""
        T, B, C = self.shape
        rows = torch.repeat_interleave(torch.arange(T * B, device=self.device), self.crow.diff())
        out = torch.zeros(T * B, C, dtype=self.dtype, device=self.device)
        vals = torch.ones(self.num_events, dtype=self.dtype, device=self.device) if self.values is None \
            else self.values.to(self.dtype)
        out.index_put_((rows, self.channels), vals, accumulate=True)
        return out.reshape(T, B, C)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "SpikeEvents":
        """On ``device`` and/or with dense dtype ``dtype`` (as ``Tensor.to(device, dtype)``)."""
        if isinstance(device, torch.dtype) and dtype is None:
            device, dtype = None, device
        dtype = self.dtype if dtype is None else dtype
        dev = self.device if device is None else torch.device(device)
        values = None if self.values is None else self.values.to(dev, dtype)
        return SpikeEvents(self.crow.to(dev), self.channels.to(dev), self.shape, values, dtype=dtype, check=False)

    def counts_by_channel(self) -> Tensor:
        """Events per input channel, ``[C]`` (the nonzero inputs each weight column sees)."""
        return torch.bincount(self.channels, minlength=self.shape[2])

    def __repr__(self) -> str:
        return (f"SpikeEvents(shape={self.shape}, events={self.num_events}, density={self.density:.3%}, "
                f"dtype={self.dtype}, device={self.device})")


def _numba_available() -> bool:
    return importlib.util.find_spec("numba") is not None


def _numba_unsupported(x, **context) -> str | None:
    if x.device.type != "cpu":
        return f"the numba event kernels run on the CPU; the events are on {x.device}"
    return None if _numba_available() else "the numba event kernels need numba (pip install numba)"


# The implementations are branches of one autograd function: a backend registers its name.
register("event_linear", "numba", unsupported=_numba_unsupported,
         description="CPU kernels over the events' CSR rows")("numba")
register("event_linear", "sparse", description="torch's CSR matmul (any device)")("sparse")
register("event_linear", "dense", description="the reference: the dense tensor times W")("dense")
register_auto("event_linear", lambda x, **context: ("numba", "sparse"))
#: ``"numba"`` (CPU kernels), ``"sparse"`` (torch's CSR matmul, any device), ``"dense"`` (the
#: reference: the dense tensor times W), ``"auto"``: numba on the CPU when it is installed, else sparse.
EVENT_LINEAR_BACKENDS = ("auto", *backends("event_linear"))


def _resolve(backend: str, x: "SpikeEvents") -> str:
    return resolve("event_linear", backend, x).fn


def _csr(x: SpikeEvents, dtype: torch.dtype) -> Tensor:
    T, B, C = x.shape
    vals = torch.ones(x.num_events, dtype=dtype, device=x.device) if x.values is None else x.values.to(dtype)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": it is what this backend uses
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(x.crow, x.channels, vals, (T * B, C), check_invariants=False)


class _EventLinear(torch.autograd.Function):
    """``W x + b`` from events; ``dense`` is the dense input when it needs a gradient (else None)."""

    @staticmethod
    def forward(ctx, x: SpikeEvents, dense, weight: Tensor, bias: Tensor, impl: str):
        T, B, C = x.shape
        O = weight.shape[0]
        ctx.x, ctx.impl = x, impl
        ctx.save_for_backward(weight)
        if impl == "numba":
            out = numba_event_linear(x, weight.detach(), bias.detach())
        else:
            out = torch.sparse.mm(_csr(x, weight.dtype), weight.detach().t()) + bias.detach()
        return out.reshape(T, B, O)

    @staticmethod
    def backward(ctx, gout: Tensor):
        x, impl = ctx.x, ctx.impl
        (weight,) = ctx.saved_tensors
        T, B, C = x.shape
        g = gout.reshape(T * B, gout.shape[-1])
        gx = gw = gb = None
        if impl == "numba":
            from ._kernels._cpu import empty

            g = g.contiguous()
            if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
                gwt, gb_full = numba_event_linear_param_grads(x, g, bool(ctx.needs_input_grad[3]))
                gw = gwt.t() if ctx.needs_input_grad[2] else None
                gb = gb_full if ctx.needs_input_grad[3] else None
            if ctx.needs_input_grad[1]:
                # a dense GEMM into a reused buffer: the [T B, C] result is written once, at
                # memory speed (a fresh 80 MB tensor per step costs its page faults again)
                gx = torch.mm(g, weight.detach().to(g.dtype), out=empty((T * B, C), g)).reshape(T, B, C)
        else:
            if ctx.needs_input_grad[2]:
                gw = torch.sparse.mm(_csr(x, g.dtype).t(), g).t()
            if ctx.needs_input_grad[3]:
                gb = g.sum(0)
            if ctx.needs_input_grad[1]:
                gx = (g @ weight.detach().to(g.dtype)).reshape(T, B, C)
        return None, gx, gw, gb, None


def numba_event_linear(x: SpikeEvents, weight: Tensor, bias: Tensor) -> Tensor:
    """``W x + b`` ``[T * B, O]`` by the numba kernel (no autograd; CPU; ``weight``/``bias`` of one
    float32/float64 dtype): each row is the bias plus the weight columns of its events in CSR order."""
    from ._kernels import event_numba as K
    from ._kernels._cpu import empty, parallel_for

    T, B, _ = x.shape
    O = weight.shape[0]
    wt = weight.t().contiguous()
    out = empty((T * B, O), weight)  # pooled: no page faults on a fresh 80 MB every step
    args = (x.crow.numpy(), x.channels.numpy(), _values(x, weight.dtype), x.values is not None, wt.numpy(),
            bias.contiguous().numpy(), out.numpy())
    parallel_for(T * B, x.num_events * O + T * B * O, lambda lo, hi, _block: K.event_linear_forward(*args, lo, hi))
    return out


def numba_event_linear_param_grads(x: SpikeEvents, g: Tensor, want_bias: bool) -> tuple[Tensor, Tensor]:
    """``(gwt [C, O], gb [O])`` of :func:`numba_event_linear` for the output gradient ``g``
    ``[T * B, O]`` (contiguous): ``gwt[c] = sum`` over the events of channel ``c`` of ``value * g[row]``
    in CSR order, ``gb`` the sum of ``g``'s rows in order (zeros unless ``want_bias``); results do
    not depend on the thread count."""
    from ._kernels import event_numba as K
    from ._kernels._cpu import parallel_for

    C, O = x.shape[2], g.shape[1]
    gwt = torch.empty(C, O, dtype=g.dtype)
    gb = torch.empty(O, dtype=g.dtype)
    args = (x.crow.numpy(), x.channels.numpy(), _values(x, g.dtype), x.values is not None, g.numpy(), gwt.numpy(),
            gb.numpy(), bool(want_bias))
    # columns split over threads: each thread walks every event for its own columns
    parallel_for(O, x.num_events * O + g.numel(), lambda lo, hi, _block: K.event_linear_weight_grad(*args, lo, hi))
    return gwt, gb


def _values(x: SpikeEvents, dtype: torch.dtype):
    """``x.values`` as a numpy array of ``dtype`` (an empty one when every value is 1)."""
    if x.values is None:
        return torch.empty(0, dtype=dtype).numpy()
    return x.values.to(dtype).contiguous().numpy()



def check_layer_params(x: SpikeEvents, weight, bias):
    """Validate the weight ``[O, C]`` and bias ``[O]`` (or None) of a layer fed by events ``x``
    ``[T, B, C]``; returns the bias, zeros of the weight's kind for None."""
    if not isinstance(weight, Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise TypeError("weight must be a floating tensor [out_features, in_features]")
    if weight.shape[1] != x.shape[2]:
        raise ValueError(f"weight has {weight.shape[1]} input features but the events have C = {x.shape[2]} "
                         f"channels (shape {x.shape})")
    if weight.device != x.device:
        raise ValueError(f"weight is on {weight.device} but the events are on {x.device}")
    if bias is None:
        return weight.new_zeros(weight.shape[0])
    if not isinstance(bias, Tensor) or bias.shape != (weight.shape[0],) or not bias.is_floating_point():
        raise ValueError(f"bias must be None or a floating tensor of shape ({weight.shape[0]},)")
    if bias.device != weight.device:
        raise ValueError(f"bias is on {bias.device} but weight is on {weight.device}")
    return bias

def event_linear(x, weight: Tensor, bias: Tensor | None = None, *, backend: str = "auto",
                 source: Tensor | None = None) -> Tensor:
    """``y[t, b] = W x[t, b] + bias`` computed from the events of ``x`` ``[T, B, C]`` -> ``[T, B, O]``.

    ``x`` is :class:`SpikeEvents` (data: no gradient), or a dense floating tensor ``[T, B, C]``
    that is converted to events in the forward (one pass); a dense ``x`` that requires grad (the
    spikes of a hidden layer) gets the dense input gradient ``gy W``.  ``weight`` ``[O, C]`` and
    ``bias`` ``[O]`` (or None) get gradients.  The result has ``weight``'s dtype; ``x``'s values
    are cast to it.  Every backend sums each output's terms in a fixed order, so results do not
    depend on the thread count; they equal ``nn.functional.linear`` up to float reassociation.
    ``source``: the dense tensor that events ``x`` were made from, to give it its gradient (as
    for a dense ``x``, without converting it again).
    """
    dense = source
    if source is not None and (not isinstance(x, SpikeEvents) or not isinstance(source, Tensor)
                               or tuple(source.shape) != x.shape):
        raise ValueError("source must be the dense tensor [T, B, C] that the SpikeEvents x were made from")
    if isinstance(x, Tensor):
        if x.dim() != 3 or not x.is_floating_point():
            raise ValueError(f"a dense x must be a floating tensor [T, B, C], got shape {tuple(x.shape)}, "
                             f"dtype {x.dtype}")
        dense = x if x.requires_grad else None
        x = SpikeEvents.from_dense(x)
    elif not isinstance(x, SpikeEvents):
        raise TypeError(f"x must be SpikeEvents or a dense tensor [T, B, C], got {type(x).__name__}")
    bias = check_layer_params(x, weight, bias)
    impl = _resolve(backend, x)
    if impl == "dense":
        return torch.nn.functional.linear(dense if dense is not None else x.dense().to(weight.dtype), weight, bias)
    if impl == "numba" and weight.dtype not in (torch.float32, torch.float64):
        dtype = weight.dtype  # half weights: compute in float32, return in theirs
        d32 = None if dense is None else dense.float()
        return _EventLinear.apply(x, d32, weight.float(), bias.float(), impl).to(dtype)
    return _EventLinear.apply(x, dense, weight, bias.to(weight.dtype), impl)
