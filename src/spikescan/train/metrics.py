"""NeuroBench-style cost metrics of a network: static (weights) and workload (what one evaluation did).

Definitions follow NeuroBench 2.3.0 (``neurobench.metrics``; Yik et al., "The NeuroBench
framework for benchmarking neuromorphic computing algorithms and systems", Nature
Communications 2025).  Synaptic layers are ``nn.Linear`` and ``nn.Conv1d/2d/3d`` (subclasses
included, e.g. an event-driven ``Linear``); activation layers are every
:class:`~spikescan.nn.SpikingNeuron` and ``nn.ReLU`` / ``nn.Sigmoid`` (NeuroBench's own
activation set, plus our neurons).  A layer found inside another of its kind is not searched
further.

Static (:func:`static_metrics`):

- ``parameter_count``: ``sum(p.numel() for p in model.parameters())``.
- ``footprint_bytes``: bytes of every parameter and buffer, ``numel * element_size``.
- ``connection_sparsity``: zero weights / all weights over the ``weight`` tensors of the synaptic
  layers (biases excluded).  NeuroBench rounds it to 4 decimals; this does not.

Workload, summed over the forward passes of a :class:`WorkloadMeter` and divided by the samples:

- activation sparsity of layer ``l``: ``1 - nonzero(out_l) / numel(out_l)`` over every step and
  sample (NeuroBench ``ActivationSparsityByLayer``); ``activation_sparsity_total`` pools all
  layers (``ActivationSparsity``, equal to it when every batch has the same number of steps).
- spikes (nonzero outputs) per sample of each layer, and per neuron per sample; a neuron is one
  entry of the per-step output ``out[t, b]`` (time-first ``[T, B, *features]``).
- synaptic operations of a layer with weight ``W`` on input ``x`` (bias not counted)::

      effective = sum over input entries x[r, i] != 0 of  #{o : W[o, i] != 0}
      dense     = rows(x) * in_features * out_features          (every pair, zeros too)

  (a convolution counts the same pairs, through its kernel positions and padding).  A call
  whose input holds only 0, 1 and -1 is spiking: its effective operations are accumulates
  (``effective_acs``), any other call's are multiply-accumulates (``effective_macs``).
  NeuroBench ``SynapticOperations`` (``Effective_ACs``, ``Effective_MACs``, ``Dense``) computes
  exactly this by running a 0/1 copy of the layer on a 0/1 copy of its input.

The counts come from forward hooks, on what the layers receive and return; nothing is
recomputed (fused neuron kernels hide their insides, and need not show them).  A ``Linear``'s
input or an activation output costs one pass over it (a numba kernel on the CPU, a few
reductions on a GPU), and a spiking layer's output that is the next ``Linear``'s input (the
same tensor) is counted once; a convolution also runs its 0/1 copy with one output channel per
group.  Counts stay on the tensors' device until :meth:`WorkloadMeter.counts` reads them.

Not counted, as in NeuroBench: synaptic operations that a module computes with ``F.linear``
inside its own ``forward`` (the recurrent weights of :class:`~spikescan.nn.RLIF`), which no hook
sees.  Not measured: NeuroBench's ``membrane_updates``, which needs every step's membrane that
the time-parallel neurons never store.

Extension point: sparse inputs.  A synaptic layer's input may be an object instead of a tensor
(e.g. an event batch for an event-driven first layer).  It is counted without densifying it
when it has

- ``count_nonzero_by_channel()`` (or ``counts_by_channel()``): the nonzero entries of each input
  channel over all rows, ``[in_features]``;
- ``shape``: its dense shape ``[..., in_features]``;
- optionally ``is_binary`` (every entry is 0, 1 or -1) or ``values`` (None: implicit ones; else
  the nonzero values, spiking when all are +-1).  With neither, it is taken as spiking.

See :func:`input_counts`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from ..nn.base import SpikingNeuron
from ..ops._kernels._cpu import parallel_for

__all__ = [
    "ACTIVATION_LAYERS", "SYNAPTIC_LAYERS", "WorkloadMeter", "connection_sparsity", "footprint_bytes", "input_counts",
    "parameter_count", "static_metrics", "summarise", "workload_metrics",
]

#: layers whose weights are synapses (NeuroBench's stateless connection layers)
SYNAPTIC_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: layers whose outputs are activations (NeuroBench's ReLU/Sigmoid, and our spiking neurons)
ACTIVATION_LAYERS: tuple[type[nn.Module], ...] = (SpikingNeuron, nn.ReLU, nn.Sigmoid)

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _find(model: nn.Module, kinds: tuple[type[nn.Module], ...]) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every ``kinds`` module in ``model`` (itself included), not below one."""
    found, seen = [], set()

    def visit(prefix: str, module: nn.Module) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        if isinstance(module, kinds):
            found.append((prefix, module))
            return
        for name, child in module.named_children():
            visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return found


def parameter_count(model: nn.Module) -> int:
    """Number of parameters (NeuroBench ``ParameterCount``)."""
    return sum(p.numel() for p in model.parameters())


def footprint_bytes(model: nn.Module) -> int:
    """Bytes of the parameters and buffers (NeuroBench ``Footprint``)."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def connection_sparsity(model: nn.Module) -> float:
    """Zero weights / all weights of the synaptic layers (NeuroBench ``ConnectionSparsity``, unrounded); 0.0 if none."""
    zeros = total = 0
    for _, layer in _find(model, SYNAPTIC_LAYERS):
        w = layer.weight.detach()
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total if total else 0.0


def static_metrics(model: nn.Module) -> dict:
    """``{"parameter_count", "footprint_bytes", "connection_sparsity"}`` of ``model``."""
    return {"parameter_count": parameter_count(model), "footprint_bytes": footprint_bytes(model),
            "connection_sparsity": connection_sparsity(model)}


def _count_nonzero_by_channel(a, lo, hi, nz):
    """``nz[c] = #{lo <= r < hi : a[r, c] != 0}`` of a 2-d array; returns whether those rows hold only 0, 1 and -1.

    Plain Python here, compiled by numba on first use (:func:`_numba_kernel`): one pass over the
    rows, int32 counters per channel (flushed every 2**30 rows), the inner loop over contiguous
    channels.
    """
    C = a.shape[1]
    bad = np.zeros(C, np.int32)
    for start in range(lo, hi, 1 << 30):
        acc = np.zeros(C, np.int32)
        for r in range(start, min(hi, start + (1 << 30))):
            row = a[r]
            for c in range(C):
                v = row[c]
                n = np.int32(v != 0)
                acc[c] += n
                bad[c] |= n & np.int32(abs(v) != 1)
        for c in range(C):
            nz[c] += acc[c]
    return bad.max() == 0 if C else True


_kernel = None  # the compiled kernel once made; False where numba is unavailable


def _numba_kernel():
    global _kernel
    if _kernel is None:
        try:
            from numba import njit
        except ImportError:  # numba is a dependency; without it the torch reductions count the same
            _kernel = False
        else:
            _kernel = njit(fastmath=False, cache=True, nogil=True, error_model="numpy")(_count_nonzero_by_channel)
    return _kernel


def _tensor_counts(x: Tensor, channels: int) -> tuple[Tensor, Tensor | bool]:
    """Nonzero entries of each channel (last dim) of ``x``, and whether it holds only 0, 1 and -1."""
    flat = x.detach().reshape(-1, channels)
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64) and flat.numel():
        kernel = _numba_kernel()
        if kernel:
            a = flat.resolve_conj().resolve_neg().numpy()
            parts = []

            def rows(lo: int, hi: int, _block: int) -> None:  # on torch.get_num_threads() threads
                nz = np.zeros(channels, np.int64)
                parts.append((nz, kernel(a, lo, hi, nz)))

            parallel_for(a.shape[0], a.size, rows)
            return torch.from_numpy(sum(p[0] for p in parts)), all(p[1] for p in parts)
    nz = torch.count_nonzero(flat, dim=0)
    binary = ~((flat != 0) & (flat.abs() != 1)).any()
    return nz, binary


def input_counts(x, channels: int) -> tuple[Tensor, int, Tensor | bool]:
    """``(nonzero entries of each channel [channels] int64, rows, spiking)`` of a synaptic layer's input.

    ``x`` is a tensor ``[..., channels]`` (channels last; ``rows = numel / channels``) or a sparse
    input object as the module docstring describes.  ``spiking``: every entry is 0, 1 or -1 (a bool,
    or a 0-d bool tensor that has not been synchronised to the host).
    """
    if isinstance(x, Tensor):
        if x.shape[-1:] != (channels,):
            raise ValueError(f"input must have {channels} channels in its last dim, got shape {tuple(x.shape)}")
        nz, binary = _tensor_counts(x, channels)
        return nz, x.numel() // channels if channels else 0, binary
    count = getattr(x, "count_nonzero_by_channel", None) or getattr(x, "counts_by_channel", None)
    shape = getattr(x, "shape", None)
    if count is None or shape is None:
        raise TypeError(f"cannot count a synaptic input of type {type(x).__name__}: expected a tensor or an object "
                        "with count_nonzero_by_channel() and shape (see spikescan.train.metrics)")
    shape = tuple(int(s) for s in shape)
    if shape[-1:] != (channels,):
        raise ValueError(f"input must have {channels} channels in its last dim, got shape {shape}")
    nz = torch.as_tensor(count()).to(torch.int64).reshape(channels)
    binary = getattr(x, "is_binary", None)
    if binary is None:
        values = getattr(x, "values", None)
        if isinstance(values, Tensor):
            binary = bool(((values == 1) | (values == -1)).all())
        else:  # values None: implicit ones; no values attribute at all: events
            binary = True
    return nz, math.prod(shape[:-1]), binary


def _conv_counts(layer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor | bool]:
    """``(effective ops, dense ops, spiking)`` of a convolution: ``sum conv(x != 0, W != 0)``.

    Summing over output channels first leaves a convolution with one output channel per group,
    computed in float64 (exact integers; no TF32).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"convolution {type(layer).__name__} takes tensors only, got {type(x).__name__}")
    x = x.detach()
    if x.dim() == layer.weight.dim() - 1:  # unbatched input
        x = x.unsqueeze(0)
    g = layer.groups
    w = (layer.weight.detach() != 0).to(torch.float64)
    w = w.unflatten(0, (g, -1)).sum(1)  # [groups, in/groups, *kernel]
    effective = layer._conv_forward((x != 0).to(torch.float64), w, None).sum().to(torch.int64)
    full = torch.full_like(w, layer.out_channels // g)
    per_row = layer._conv_forward(torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device), full, None)
    dense = per_row.sum().to(torch.int64) * x.shape[0]
    _, binary = _tensor_counts(x, x.shape[-1]) if x.numel() else (None, True)
    return effective, dense, binary


_ACT = ("nonzero", "entries", "neuron_samples")
_SYN = ("effective_acs", "effective_macs", "dense")


class WorkloadMeter:
    """Counts activations and synaptic operations of ``model`` in the forward passes inside :meth:`batch`.

    ::

        meter = WorkloadMeter(model)
        with torch.no_grad():
            for x, y in test_loader:
                with meter.batch(samples=y.shape[0]):   # hooks on only inside the block
                    out = model(x)
        summarise(model, meter)                        # or meter.result()

    Outside :meth:`batch` no hook is attached, so batches that are not measured (training) cost
    nothing.  :meth:`counts` gives the raw sums as a flat ``{name: number}`` dict: sum it over
    data-parallel ranks (e.g. ``ddp.all_reduce_metrics(meter.counts(), op="sum")``) and pass the
    sums to :func:`workload_metrics` / :func:`summarise`, or add them to a meter with :meth:`update`.
    Layer names are ``model.named_modules()``'s (build the meter on the bare model, not a DDP wrapper).
    """

    def __init__(self, model: nn.Module, *, synaptic_layers: tuple[type[nn.Module], ...] = SYNAPTIC_LAYERS,
                 activation_layers: tuple[type[nn.Module], ...] = ACTIVATION_LAYERS):
        self.model = model
        self.synaptic = _find(model, tuple(synaptic_layers))
        self.activation = _find(model, tuple(activation_layers))
        self._synapse_names = {m: n for n, m in self.synaptic}
        self._counted: set = set()  # synaptic layers whose hook ran since the current neuron call began
        self._active = False
        self._pending: dict[str, int | Tensor] = {}
        self._last = None  # (tensor, its version, (nonzero by channel, spiking)) of the last activation output
        self.reset()

    def keys(self) -> list[str]:
        """The keys of :meth:`counts`, in module order."""
        return (["samples"] + [f"activation/{n}/{k}" for n, _ in self.activation for k in _ACT]
                + [f"synapse/{n}/{k}" for n, _ in self.synaptic for k in _SYN])

    def reset(self) -> None:
        """Forget every count."""
        self._totals: dict[str, int | Tensor] = dict.fromkeys(self.keys(), 0)

    def _add(self, key: str, value) -> None:
        self._pending[key] = self._pending.get(key, 0) + value

    def _stats(self, x: Tensor, channels: int):
        last = self._last
        if last is not None and last[0] is x and last[1] == x._version:
            return last[2][0], x.numel() // channels, last[2][1]
        return input_counts(x, channels)

    def _on_activation(self, name: str):
        def hook(_module, inputs, kwargs, out):
            # a layer that runs its input layer inside itself (SingleSpikeLIF(x, input_layer=...),
            # one fused kernel): that layer's own forward, and its hook, never ran
            # (when it falls back to calling that layer, the layer's hook counted it: not again)
            fused = kwargs.get("input_layer")
            if fused in self._synapse_names and fused not in self._counted and inputs:
                self._count_synapse(self._synapse_names[fused], fused, inputs[0])
            if isinstance(out, tuple):
                out = out[0]
            if not isinstance(out, Tensor) or out.dim() < 2 or not out.numel():
                return
            with torch.no_grad():
                nz, binary = _tensor_counts(out, out.shape[-1])
            self._last = (out, out._version, (nz, binary))
            self._add(f"activation/{name}/nonzero", nz.sum())
            self._add(f"activation/{name}/entries", out.numel())
            self._add(f"activation/{name}/neuron_samples", out[0].numel())  # B * neurons: time-first
            # ... and the layer fed by its spikes inside the same call (output_layer=...), whose
            # input is this output
            fed = kwargs.get("output_layer")
            if fed in self._synapse_names and fed not in self._counted:
                self._count_synapse(self._synapse_names[fed], fed, out)
        return hook

    def _on_synapse(self, name: str):
        def hook(layer, inputs, _out):
            if inputs:
                self._count_synapse(name, layer, inputs[0])
                self._counted.add(layer)
        return hook

    def _before_activation(self, _module, _inputs, kwargs):
        for key in ("input_layer", "output_layer"):
            fused = kwargs.get(key)
            if fused is not None:
                self._counted.discard(fused)  # whether its hook runs during this call is what counts

    def _count_synapse(self, name: str, layer: nn.Module, x) -> None:
        """Add the synaptic operations of ``layer`` (named ``name``) on its input ``x``."""
        with torch.no_grad():
            if isinstance(layer, _CONV):
                effective, dense, binary = _conv_counts(layer, x)
            else:
                nz, rows, binary = self._stats(x, layer.weight.shape[1])
                fan_out = torch.count_nonzero(layer.weight.detach(), dim=0).to(nz.device)
                effective = (nz * fan_out).sum()
                dense = rows * layer.weight.shape[0] * layer.weight.shape[1]
        if isinstance(binary, Tensor):  # stays on the device: no synchronisation per call
            self._add(f"synapse/{name}/effective_acs", effective * binary)
            self._add(f"synapse/{name}/effective_macs", effective * ~binary)
        else:
            self._add(f"synapse/{name}/effective_{'acs' if binary else 'macs'}", effective)
        self._add(f"synapse/{name}/dense", dense)

    @contextlib.contextmanager
    def batch(self, samples: int) -> Iterator["WorkloadMeter"]:
        """Count the forward passes inside the block as one batch of ``samples`` samples.

        The counts are added when the block ends without an exception (a failed batch adds nothing).
        """
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise ValueError(f"samples must be a non-negative int (the batch size), got {samples!r}")
        if self._active:
            raise RuntimeError("WorkloadMeter.batch() blocks do not nest")
        self._active, self._pending, self._last = True, {}, None
        self._counted = set()
        handles = [m.register_forward_hook(self._on_activation(n), with_kwargs=True) for n, m in self.activation]
        handles += [m.register_forward_pre_hook(self._before_activation, with_kwargs=True) for _, m in self.activation]
        handles += [m.register_forward_hook(self._on_synapse(n)) for n, m in self.synaptic]
        try:
            yield self
            self._pending["samples"] = samples
            for key, value in self._pending.items():
                self._totals[key] = self._totals.get(key, 0) + value
        finally:
            for h in handles:
                h.remove()
            self._active, self._pending, self._last = False, {}, None

    def update(self, counts: Mapping[str, float]) -> None:
        """Add raw counts (another meter's :meth:`counts`, e.g. of another rank)."""
        for key, value in counts.items():
            self._totals[key] = self._totals.get(key, 0) + value

    def counts(self) -> dict[str, int]:
        """The raw sums: ``samples``, ``activation/<layer>/{nonzero,entries,neuron_samples}``,
        ``synapse/<layer>/{effective_acs,effective_macs,dense}`` (one host sync per device count)."""
        return {k: int(v) for k, v in self._totals.items()}

    def result(self) -> dict:
        """:func:`workload_metrics` of the counts so far."""
        return workload_metrics(self.counts())


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def workload_metrics(counts: Mapping[str, float]) -> dict:
    """The per-sample workload metrics of raw counts (:meth:`WorkloadMeter.counts`, or their sum over ranks).

    Keys: ``samples``; ``activation_sparsity`` ``{layer: float}``; ``activation_sparsity_total``;
    ``spikes_per_sample`` ``{layer: float}``; ``spikes_per_neuron_per_sample`` ``{layer: float}``;
    ``synaptic_ops_per_sample`` ``{"effective_acs", "effective_macs", "dense"}`` (NeuroBench's
    ``Effective_ACs``, ``Effective_MACs``, ``Dense``); ``synaptic_ops_per_sample_by_layer``
    ``{layer: {same three}}``.  A layer is named as in ``model.named_modules()``.
    """
    act: dict[str, dict[str, float]] = {}
    syn: dict[str, dict[str, float]] = {}
    for key, value in counts.items():
        kind, _, rest = key.partition("/")
        name, _, field = rest.rpartition("/")
        if kind == "activation" and field in _ACT:
            act.setdefault(name, dict.fromkeys(_ACT, 0))[field] += value
        elif kind == "synapse" and field in _SYN:
            syn.setdefault(name, dict.fromkeys(_SYN, 0))[field] += value
        elif key != "samples":
            raise ValueError(f"unknown workload count {key!r}")
    samples = counts.get("samples", 0)
    nonzero = sum(a["nonzero"] for a in act.values())
    entries = sum(a["entries"] for a in act.values())
    return {
        "samples": int(samples),
        "activation_sparsity": {n: 1.0 - _ratio(a["nonzero"], a["entries"]) if a["entries"] else 0.0
                                for n, a in act.items()},
        "activation_sparsity_total": 1.0 - _ratio(nonzero, entries) if entries else 0.0,
        "spikes_per_sample": {n: _ratio(a["nonzero"], samples) for n, a in act.items()},
        "spikes_per_neuron_per_sample": {n: _ratio(a["nonzero"], a["neuron_samples"]) for n, a in act.items()},
        "synaptic_ops_per_sample": {k: _ratio(sum(s[k] for s in syn.values()), samples) for k in _SYN},
        "synaptic_ops_per_sample_by_layer": {n: {k: _ratio(s[k], samples) for k in _SYN} for n, s in syn.items()},
    }


def summarise(model: nn.Module, workload: WorkloadMeter | Mapping[str, float] | None = None) -> dict:
    """Static metrics of ``model`` and, given a meter or its raw counts, the workload metrics: one JSON-able dict.

    Keys: ``parameter_count``, ``footprint_bytes``, ``connection_sparsity`` (:func:`static_metrics`),
    then those of :func:`workload_metrics` when ``workload`` is given.
    """
    out = static_metrics(model)
    if workload is not None:
        out.update(workload.result() if isinstance(workload, WorkloadMeter) else workload_metrics(workload))
    return out
