"""One full training step of FastSNN's F-MNIST network: spikescan vs snnTorch, SpikingJelly, Norse.

The step is the training loop's (:func:`spikescan.train.loop.run_epoch`): fetch the next batch
from the real loader, forward, cross-entropy on the max-membrane readout, backward, Adam step.
Network (presets ``fastsnn-fmnist`` and its LIF baseline ``fastsnn-fmnist-lif``): 784 TTFS
inputs, T = 784 steps of 1 ms, ``Linear(784, 200)``, 200 hidden neurons (tau 10 ms), ``Linear(200,
10)``, 10 readout neurons with an infinite threshold (tau 20 ms), logits ``max_t V_out[t]``,
batch 128.  With ``b = exp(-dt / tau)`` and threshold 1::

    hidden, LIF baseline:   v[t] = b v'[t-1] + I[t],  s[t] = H(v[t] - 1),  v'[t] = v[t] - s[t]
                            (reset at the spike's step; the reset's s[t] is detached)
    hidden, single spike:   v[t] = b v[t-1] + c I[t],  S~[t] = H(v[t] - 1),  s = g(phi(S~))
                            (FastSNN: only the first spike; phi a running double sum, g(0) = 0,
                            g(1) = 1, g(n >= 2) = 0; c = 1 - b as eq. 5 in the preset, c = 1
                            also runs)
    readout:                V[t] = b_out V[t-1] + W2 s[t] + b2,  logits = max_t V[t]

Surrogate of ``H``: ``1 / (100 |v - 1| + 1)^2`` (fast sigmoid, slope 100).

Implementations, all from the SAME initial weights (copied from the spikescan model):

* ``spikescan`` -- the model :func:`spikescan.train.loop.build_model` builds: event-driven
  input layer on the loader's :class:`~spikescan.ops.events.SpikeEvents`, time-fused CPU
  kernels for the neuron and the readout.
* ``spikescan-dense`` -- the same model with both ``EventLinear`` layers in ``mode="dense"``
  fed the densified batch: what the event input contributes.
* ``snntorch`` -- its tutorial loop: ``for step in range(T): cur1 = fc1(x[step]); spk1, mem1 =
  lif1(cur1, mem1); ...`` with ``snn.Leaky(beta, threshold=1, spike_grad=
  surrogate.fast_sigmoid(slope=100), reset_mechanism="none")``, the loop subtracting
  ``spk1.detach()`` from ``mem1``.  snnTorch's own ``"subtract"`` cannot be used: with the
  default ``reset_delay=True`` it subtracts the threshold one step late and undecayed
  (``mem[t] = b mem[t-1] + I[t] - s[t-1]``), with ``reset_delay=False`` the reset keeps the
  spike's surrogate gradient.  Readout: ``snn.Leaky(beta_out, reset_mechanism="none")``, its
  membrane recorded per step.
* ``spikingjelly`` -- multi-step ``layer.Linear(step_mode="m")`` and ``neuron.LIFNode(tau =
  1/(1 - b), decay_input=False, v_reset=None, detach_reset=True, step_mode="m")`` (soft reset
  at the spike's step: the same neuron).  SpikingJelly has no slope-100 fast sigmoid (its
  ``SuperSpike`` is ``alpha / (|x| + 1)^2``, ``SoftSign`` ``alpha / (2 (alpha |x| + 1)^2)``), so
  the surrogate is a ``surrogate.SurrogateFunctionBase`` subclass (its documented extension
  point); with a surrogate it does not know, SpikingJelly runs its Torch reference loop on the
  CPU.  Readout: ``LIFNode(v_threshold=inf, v_reset=0, store_v_seq=True)``, ``v_seq.amax(0)``.
* ``norse`` -- ``norse.torch.LIBoxCell`` stepped over time (membrane ``v + dt/tau (i - v)``
  with ``dt/tau = 1 - b`` and the current scaled by ``1/(1 - b)``: ``b v + I`` up to rounding),
  the spike ``H(v - 1)`` with the fast sigmoid and the detached subtract reset in the loop.
  Norse's ``LIFBoxCell`` is not used because its slope-parameterised surrogate cannot express
  this one: in Norse 1.1.0 ``SuperSpike``'s backward ignores ``alpha`` (it is ``1 / (|x| + 1)^2``
  for every alpha), so ``LIFBoxParameters(method="super", alpha=100)`` trains with slope 1.
  Readout: a second ``LIBoxCell``.

Single spike in the peers: no peer has a single-spike neuron, so each loop keeps the first spike
of its LIF's spikes ``S~`` with FastSNN's running sums (``count += S~; phi += count; s = g(phi)``,
per step in the loop; after SpikingJelly's multi-step node, over its output): a refractory mask
that lets only the first spike through.  Written so, the gradient is FastSNN's (the
spike gradient reaches ``S~`` at the steps before the first spike through phi's adjoint); a mask
``S~ * (1 - spiked_before)`` gives the same forward but a different surrogate gradient, so the
check below would not hold.  What the peer's LIF does after the first spike (its reset, later
spikes) changes neither the forward nor the gradient (``g = g' = 0`` there).

Correctness before timing: the first ``--check-batches`` batches of one seeded shuffle go
through every implementation from the same weights (no optimizer step); each one's loss must
equal spikescan's within ``--loss-rtol`` and its gradient of the first Linear weight within
``--grad-rtol`` (relative Frobenius error), else the benchmark stops with the numbers.  Two
checks: ``initial``, the weights every timed step starts from (at initialisation the network is
nearly silent: ~10 hidden spikes in a batch of 128 x 200 neurons x 784 steps, so the loss
hardly depends on the spikes), and ``active``, the same with the first Linear weight scaled by
``--check-scale`` (default 4: ~10^4 hidden spikes a batch, several per neuron in the LIF, so
the resets and the first-spike masks are exercised; divided by the hidden input factor ``c``,
so that both presets see the same currents).  The implementations differ only by
float32 rounding: the event-driven layer sums a neuron's input current in another order than a
dense matmul (relative ~1e-7 per current; the weight gradient, a sum over T x B terms of both
signs, to ~1e-5 .. 1e-4 relative, hence ``--grad-rtol 1e-3``), and a membrane within that of the
threshold could spike in one implementation and not the other (one such flip moves a sample's
logits by up to a readout weight, ~0.07, the batch's mean loss by up to ~5e-4 relative, which
``--loss-rtol 1e-4`` reports); the hidden spike counts are recorded next to the loss.

Timing: ``--warmup`` untimed steps, then ``--steps`` (spikescan) / ``--peer-steps`` (peers,
seconds per step at T = 784) timed steps, interleaved round by round so that background load hits
every implementation alike; median seconds per step, the ratio to ``spikescan`` and the
projected seconds per epoch (``len(loader)`` batches).  The fetch of a batch is part of every
step: the same loader of :class:`~spikescan.data.events.EncodedSpikes` for all, the peers (and
``spikescan-dense``) densifying it with ``SpikeEvents.dense()``, which is cheaper than the
loader's dense path (per-sample encoding, ``event_input="off"``).  The fetch alone is timed too.

Writes ``results.json`` and ``train_step.png`` into ``--out``.  Run: ``spikescan bench
train-step --data-dir PATH`` or ``python -m spikescan.bench.train_step``.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import _common as C

PRESETS = ("fastsnn-fmnist", "fastsnn-fmnist-lif")
PEERS = {"snntorch": "snntorch", "spikingjelly": "spikingjelly.activation_based", "norse": "norse.torch"}
SPIKESCAN, SPIKESCAN_DENSE = "spikescan", "spikescan-dense"
DEFAULT_DATA_DIR = os.path.join("..", "shared", "data", "fashion-mnist")
IDX_HINT = "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], " \
           "t10k-labels-idx1-ubyte[.gz]"




class DisagreementError(ValueError):
    """An implementation's loss or gradient differs from spikescan's: it would time another network."""


@dataclass(frozen=True)
class NetSpec:
    """What the peers need to rebuild the spikescan network (read off the built model)."""

    neuron: str  # "single-spike" or "lif"
    n_in: int
    n_hidden: int
    n_out: int
    beta_hidden: float  # exp(-dt / tau_hidden)
    beta_out: float  # exp(-dt / tau_out)
    threshold: float
    slope: float  # fast-sigmoid surrogate slope
    input_scale: float = 1.0  # the hidden layer's input factor: 1 or 1 - beta_hidden (FastSNN eq. 5)


def spec_of(model: nn.Module) -> NetSpec:
    """The :class:`NetSpec` of a FastSNN ``FeedForwardSNN``; raises where the peers would compute another network."""
    from ..nn.leaky import LIF
    from ..nn.single_spike import MaxMembraneReadout, SingleSpikeLIF

    layers = list(model)
    if len(layers) != 4 or not isinstance(layers[3], MaxMembraneReadout):
        raise ValueError("the peers implement Linear -> neuron -> Linear -> MaxMembraneReadout; "
                         f"the preset built {[type(m).__name__ for m in layers]}")
    fc1, hidden, fc2, readout = layers
    sur = hidden.surrogate
    if getattr(sur, "kind", "") != "fast_sigmoid":
        raise ValueError(f"the peers implement the fast-sigmoid surrogate, the preset has {sur}")
    if readout.input_scale != 1.0 or readout.mem.learn:
        raise ValueError("the peers implement a readout with input scale 1 and a fixed tau")
    beta_hidden = float(hidden.mem())
    if isinstance(hidden, SingleSpikeLIF):
        if hidden.input_scale not in (1.0, "one_minus_decay") or hidden.straight_through or hidden.mem.learn:
            raise ValueError("the peers implement the single-spike LIF with input scale 1 or 1 - beta, fixed "
                             "tau, no straight-through g")
        neuron = "single-spike"
        input_scale = 1.0 - beta_hidden if hidden.input_scale == "one_minus_decay" else 1.0
    elif isinstance(hidden, LIF):
        if (hidden.syn is not None or hidden.input_scale != 1.0 or hidden.reset != "subtract"
                or not hidden.detach_reset or isinstance(hidden.threshold, torch.Tensor)):
            raise ValueError("the peers implement the LIF without synaptic current, input scale 1, "
                             "detached subtract reset and a fixed threshold")
        neuron = "lif"
        input_scale = 1.0
    else:
        raise ValueError(f"the peers implement the single-spike LIF and the LIF, not {type(hidden).__name__}")
    return NetSpec(neuron=neuron, n_in=fc1.in_features, n_hidden=fc1.out_features, n_out=fc2.out_features,
                   beta_hidden=beta_hidden, beta_out=float(readout.mem()),
                   threshold=float(hidden.threshold), slope=float(sur.param), input_scale=input_scale)


class FastSigmoidSpike(torch.autograd.Function):
    """``H(x) = (x >= 0)``, backward ``1 / (slope |x| + 1)^2``: the surrogate as a user writes it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.slope = slope
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad / (ctx.slope * x.abs() + 1.0) ** 2, None


def keep_first_spike(s: torch.Tensor, count, phi):
    """One step of FastSNN's first-spike mask: ``count += s; phi += count; g(phi)`` -> ``(spike, count, phi)``."""
    count = s if count is None else count + s
    phi = count if phi is None else phi + count
    return torch.relu(phi * (1.0 - phi) + 1.0) * phi, count, phi


class _PeerNet(nn.Module):
    """Common part of the peer networks: ``fc1``, ``fc2`` (weights copied in), a hidden spike counter."""

    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        self.count_spikes = False
        self.spike_count: float | None = None

    def _count(self, spikes: torch.Tensor) -> None:
        if self.count_spikes:
            self.spike_count = float(spikes.detach().sum())


class SnnTorchNet(_PeerNet):
    """snnTorch's tutorial network: ``fc1 -> snn.Leaky -> fc2 -> snn.Leaky`` stepped in a Python loop."""

    def __init__(self, spec: NetSpec):
        import snntorch as snn
        from snntorch import surrogate

        super().__init__(spec)
        self.fc1 = nn.Linear(spec.n_in, spec.n_hidden)
        # reset_mechanism="none": the loop resets at the spike's step (see the module docstring)
        self.lif1 = snn.Leaky(beta=spec.beta_hidden, threshold=spec.threshold, reset_mechanism="none",
                              spike_grad=surrogate.fast_sigmoid(slope=spec.slope))
        self.fc2 = nn.Linear(spec.n_hidden, spec.n_out)
        self.lif2 = snn.Leaky(beta=spec.beta_out, reset_mechanism="none")  # readout: only its membrane is used

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        single = self.spec.neuron == "single-spike"
        count = phi = None
        total = 0.0
        mem2_rec = []
        for step in range(x.shape[0]):
            cur1 = self.fc1(x[step])
            if self.spec.input_scale != 1.0:
                cur1 = cur1 * self.spec.input_scale
            spk1, mem1 = self.lif1(cur1, mem1)
            if single:
                spk1, count, phi = keep_first_spike(spk1, count, phi)
            else:
                mem1 = mem1 - spk1.detach() * self.spec.threshold
            if self.count_spikes:
                total = total + spk1.detach().sum()
            cur2 = self.fc2(spk1)
            _, mem2 = self.lif2(cur2, mem2)
            mem2_rec.append(mem2)
        if self.count_spikes:
            self.spike_count = float(total)
        return torch.stack(mem2_rec).amax(0)


def _spikingjelly_fast_sigmoid(slope: float):
    """The fast sigmoid as a SpikingJelly surrogate (``SurrogateFunctionBase`` subclass)."""
    from spikingjelly.activation_based import surrogate

    class FastSigmoid(surrogate.SurrogateFunctionBase):
        def __init__(self, slope: float = 100.0, spiking: bool = True):
            super().__init__(spiking=spiking, slope=slope)

        @staticmethod
        def spiking_function(x, slope):
            return FastSigmoidSpike.apply(x, slope)

        @staticmethod
        def primitive_function(x, slope):
            return 0.5 * slope * x / (1.0 + slope * x.abs()) + 0.5

    return FastSigmoid(slope)


class SpikingJellyNet(_PeerNet):
    """SpikingJelly multi-step network: ``layer.Linear`` / ``neuron.LIFNode`` with ``step_mode="m"``."""

    def __init__(self, spec: NetSpec):
        from spikingjelly.activation_based import layer, neuron

        super().__init__(spec)
        self.fc1 = layer.Linear(spec.n_in, spec.n_hidden, step_mode="m")
        # decay_input=True is SpikingJelly's (1 - 1/tau) v + x / tau: the (1 - beta) input factor
        self.lif1 = neuron.LIFNode(tau=1.0 / (1.0 - spec.beta_hidden), decay_input=spec.input_scale != 1.0,
                                   v_threshold=spec.threshold,
                                   v_reset=None, detach_reset=True, step_mode="m",
                                   surrogate_function=_spikingjelly_fast_sigmoid(spec.slope))
        self.fc2 = layer.Linear(spec.n_hidden, spec.n_out, step_mode="m")
        # readout: a LIF that never fires (hard reset so that the reset never computes inf * 0)
        self.out = neuron.LIFNode(tau=1.0 / (1.0 - spec.beta_out), decay_input=False, v_threshold=float("inf"),
                                  v_reset=0.0, step_mode="m", store_v_seq=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        s = self.lif1(self.fc1(x))
        if self.spec.neuron == "single-spike":
            # the running sums over the node's output: s.cumsum(0).cumsum(0) and g on the whole
            # [T, B, N] cost ~4x as much (torch's cumsum over dim 0 runs at ~0.3 GB/s on one thread)
            count = phi = None
            first = []
            for s_t in s:
                s_t, count, phi = keep_first_spike(s_t, count, phi)
                first.append(s_t)
            s = torch.stack(first)
        self._count(s)
        self.out(self.fc2(s))
        return self.out.v_seq.amax(0)


class NorseNet(_PeerNet):
    """Norse network: ``nn.Linear`` and ``norse.torch.LIBoxCell`` stepped in a loop, spike and reset in the loop."""

    def __init__(self, spec: NetSpec, dt: float = 1e-3):
        import norse.torch as norse

        super().__init__(spec)
        self.fc1 = nn.Linear(spec.n_in, spec.n_hidden)
        self.fc2 = nn.Linear(spec.n_hidden, spec.n_out)
        # LIBox: v + dt * tau_mem_inv * (i - v); dt * tau_mem_inv = 1 - b, i = I / (1 - b) gives b v + I
        self.cell1 = norse.LIBoxCell(p=norse.LIBoxParameters(tau_mem_inv=torch.tensor((1.0 - spec.beta_hidden) / dt)),
                                     dt=dt)
        self.cell2 = norse.LIBoxCell(p=norse.LIBoxParameters(tau_mem_inv=torch.tensor((1.0 - spec.beta_out) / dt)),
                                     dt=dt)
        self.in1, self.in2 = spec.input_scale / (1.0 - spec.beta_hidden), 1.0 / (1.0 - spec.beta_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from norse.torch.functional.leaky_integrator_box import LIBoxState

        single = self.spec.neuron == "single-spike"
        thr, slope = self.spec.threshold, self.spec.slope
        s1 = s2 = None
        count = phi = None
        total = 0.0
        v2_rec = []
        for x_t in x:
            v1, s1 = self.cell1(self.fc1(x_t) * self.in1, s1)
            z = FastSigmoidSpike.apply(v1 - thr, slope)
            if single:
                z, count, phi = keep_first_spike(z, count, phi)
            else:
                s1 = LIBoxState(v=v1 - z.detach() * thr)
            if self.count_spikes:
                total = total + z.detach().sum()
            v2, s2 = self.cell2(self.fc2(z) * self.in2, s2)
            v2_rec.append(v2)
        if self.count_spikes:
            self.spike_count = float(total)
        return torch.stack(v2_rec).amax(0)


PEER_NETS: dict[str, Callable[[NetSpec], _PeerNet]] = {
    "snntorch": SnnTorchNet, "spikingjelly": SpikingJellyNet, "norse": NorseNet}


def peer_status(peer: str) -> str | None:
    """``None`` when ``peer`` can run, else why not (not installed, import failed)."""
    module = PEERS[peer]
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return f"not installed (pip install {module.split('.')[0]}, or spikescan[peers])"
    try:
        importlib.import_module(module)
    except Exception as exc:  # installed but broken
        return f"import failed: {type(exc).__name__}: {exc}"
    return None


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def make_peer(peer: str, model: nn.Module) -> _PeerNet:
    """``peer``'s network with ``model``'s current weights (first and second Linear, biases)."""
    net = PEER_NETS[peer](spec_of(model))
    with torch.no_grad():
        for dst, src in ((net.fc1, model[0]), (net.fc2, model[2])):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    return net


def dense_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``EventLinear`` layers run dense (``mode="dense"``)."""
    from ..nn.linear import EventLinear

    dense = copy.deepcopy(model)
    for m in dense.modules():
        if isinstance(m, EventLinear):
            m.mode = "dense"
    return dense




@dataclass
class Impl:
    """One timed implementation: its model and whether it takes the batch densified."""

    name: str
    model: nn.Module
    dense_input: bool  # densify the loader's SpikeEvents

    def prepare(self, x):
        from ..ops.events import SpikeEvents

        if self.dense_input and isinstance(x, SpikeEvents):
            return x.dense()
        return x


def _spikescan_spike_count(model: nn.Module, x) -> tuple[torch.Tensor, float]:
    """Logits and the hidden spike count of a spikescan model (forward hook on the neuron)."""
    seen: list[float] = []
    def count(_m, _i, out):  # a tuple when the neuron ran the readout's input layer too (output_layer=)
        seen.append(float((out[0] if isinstance(out, tuple) else out).detach().sum()))

    handle = model[1].register_forward_hook(count)
    try:
        return model(x), seen[0]
    finally:
        handle.remove()


def loss_and_grad(impl: Impl, x, y, readout: str) -> dict[str, Any]:
    """Loss, logits, gradient of the first Linear weight and hidden spike count of one batch (no optimizer step)."""
    from ..train.losses import readout_cross_entropy

    model = impl.model
    model.zero_grad(set_to_none=True)
    xin = impl.prepare(x)
    if isinstance(model, _PeerNet):
        model.count_spikes = True
        try:
            u = model(xin)
        finally:
            model.count_spikes = False
        spikes = model.spike_count
        loss = F.cross_entropy(u, y)
        w1 = model.fc1.weight
    else:
        u, spikes = _spikescan_spike_count(model, xin)
        loss = readout_cross_entropy(u, y, readout)
        w1 = model[0].weight
    loss.backward()
    grad = w1.grad.detach().clone()
    model.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), "logits": u.detach(), "grad": grad, "spikes": spikes}


def check_agreement(impls: list[Impl], batches: list, readout: str, *, loss_rtol: float,
                    grad_rtol: float) -> dict[str, Any]:
    """Every implementation's loss and first-layer weight gradient against ``impls[0]`` (spikescan) per batch."""
    ref_name = impls[0].name
    per_batch = []
    for x, y in batches:
        got = {impl.name: loss_and_grad(impl, x, y, readout) for impl in impls}
        ref = got[ref_name]
        row: dict[str, Any] = {"loss": {k: v["loss"] for k, v in got.items()},
                               "hidden_spikes": {k: v["spikes"] for k, v in got.items()}, "vs": {}}
        gnorm = float(ref["grad"].norm())
        for name, res in got.items():
            if name == ref_name:
                continue
            diff = abs(res["loss"] - ref["loss"])
            row["vs"][name] = {
                "loss_abs_diff": diff,
                "loss_rel_diff": diff / max(abs(ref["loss"]), 1e-30),
                "logits_max_abs_diff": float((res["logits"] - ref["logits"]).abs().max()),
                "grad_rel_err": float((res["grad"] - ref["grad"]).norm()) / max(gnorm, 1e-30),
                "grad_max_abs_diff": float((res["grad"] - ref["grad"]).abs().max()),
                "grad_max_abs": float(ref["grad"].abs().max()),
                "hidden_spike_diff": (None if res["spikes"] is None or ref["spikes"] is None
                                      else res["spikes"] - ref["spikes"]),
            }
        per_batch.append(row)
    summary = {}
    for impl in impls[1:]:
        rows = [b["vs"][impl.name] for b in per_batch]
        loss_rel = max(r["loss_rel_diff"] for r in rows)
        grad_rel = max(r["grad_rel_err"] for r in rows)
        summary[impl.name] = {"max_loss_abs_diff": max(r["loss_abs_diff"] for r in rows),
                              "max_loss_rel_diff": loss_rel, "max_grad_rel_err": grad_rel,
                              "max_logits_abs_diff": max(r["logits_max_abs_diff"] for r in rows),
                              "max_abs_hidden_spike_diff": max(abs(r["hidden_spike_diff"] or 0) for r in rows),
                              "ok": loss_rel <= loss_rtol and grad_rel <= grad_rtol}
    return {"reference": ref_name, "batches": len(batches), "loss_rtol": loss_rtol, "grad_rtol": grad_rtol,
            "per_batch": per_batch, "summary": summary,
            "ok": all(s["ok"] for s in summary.values())}




def endless(loader) -> Iterator:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def make_step(impl: Impl, optimizer: torch.optim.Optimizer, batches: Iterator, readout: str) -> Callable[[], float]:
    """One training step of ``impl`` as :func:`spikescan.train.loop.run_epoch` runs it; returns the loss."""
    from ..train.losses import readout_cross_entropy

    model = impl.model
    peer = isinstance(model, _PeerNet)

    def step() -> float:
        x, y = next(batches)
        x = impl.prepare(x)
        u = model(x)
        loss = F.cross_entropy(u, y) if peer else readout_cross_entropy(u, y, readout)
        if not bool(torch.isfinite(loss.detach())):
            raise RuntimeError(f"{impl.name}: the loss is not finite")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def time_interleaved(steps: dict[str, Callable[[], Any]], repeats: dict[str, int], warmup: int,
                     device: torch.device) -> dict[str, C.Timing]:
    """``warmup`` untimed rounds, then rounds in which every implementation still short of its
    ``repeats`` runs one timed step: background load meets every implementation alike."""
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(max(repeats.values())):
        for name, fn in steps.items():
            if r < repeats[name]:
                C.synchronize(device)
                t0 = time.perf_counter()
                fn()
                C.synchronize(device)
                times[name].append(time.perf_counter() - t0)
    return {name: C.summarize(t) for name, t in times.items()}


def time_fetch(loader, dense: bool, repeats: int = 5) -> float:
    """Median seconds of fetching one batch (and densifying it, for ``dense``)."""
    from ..ops.events import SpikeEvents

    it = endless(loader)

    def fetch():
        x, _ = next(it)
        if dense and isinstance(x, SpikeEvents):
            x.dense()

    return C.time_fn(fetch, torch.device("cpu"), warmup=1, repeats=repeats).median_s




def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", nargs="+", choices=PRESETS, default=list(PRESETS),
                        help="FastSNN F-MNIST presets to run (default both: single-spike and the LIF baseline)")
    parser.add_argument("--peers", nargs="*", choices=tuple(PEERS), default=list(PEERS),
                        help="peer libraries (default all; one not installed is skipped with a note)")
    parser.add_argument("--no-dense", action="store_true",
                        help="skip spikescan-dense (the model with dense input layers)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="folder with Fashion-MNIST's four IDX files (.gz or not); default: the shared data "
                             "folder next to the repository")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of spikescan (default 5)")
    parser.add_argument("--peer-steps", type=int, default=2,
                        help="timed steps of each peer and spikescan-dense (default 2; seconds each at T = 784)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of every implementation first")
    parser.add_argument("--check-batches", type=int, default=2,
                        help="batches whose losses and gradients are compared before timing (default 2)")
    parser.add_argument("--check-scale", type=float, default=4.0,
                        help="first-layer weight factor of the 'active' check (1: only the 'initial' check)")
    parser.add_argument("--loss-rtol", type=float, default=1e-4, help="relative tolerance of the loss check")
    parser.add_argument("--grad-rtol", type=float, default=1e-3,
                        help="tolerance of the first-layer weight gradient's relative (Frobenius) error")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's (128)")
    parser.add_argument("--num-steps", type=int, default=None, help="T, default: the preset's (784)")
    parser.add_argument("--hidden", type=int, default=None, help="hidden neurons, default: the preset's (200)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--seed", type=int, default=0, help="weights and the shuffle")
    parser.add_argument("--out", default=os.path.join("bench_results", "train_step"),
                        help="folder for results.json and train_step.png")


def _validate(args: argparse.Namespace) -> None:
    for name in ("steps", "peer_steps", "check_batches"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    for name in ("batch_size", "num_steps", "hidden", "threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if not (math.isfinite(args.check_scale) and args.check_scale > 0):
        raise ValueError(f"--check-scale must be a finite number > 0, got {args.check_scale}")
    for name in ("loss_rtol", "grad_rtol"):
        v = getattr(args, name)
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v}")
    if not os.path.isdir(args.data_dir):
        raise FileNotFoundError(f"--data-dir {args.data_dir!r} is not a folder: pass the folder holding "
                                f"Fashion-MNIST's IDX files ({IDX_HINT})")


def _config(preset: str, args: argparse.Namespace):
    from ..train.presets import preset_config

    overrides: dict[str, Any] = {"data_dir": args.data_dir, "seed": args.seed}
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    if args.num_steps is not None:
        overrides["num_steps"] = args.num_steps
    if args.hidden is not None:
        overrides["hidden"] = [args.hidden]
    if args.threads is not None:
        overrides["threads"] = args.threads
    cfg = preset_config(preset, overrides)
    cfg.validate()
    return cfg


def _data_key(cfg) -> tuple:
    return (cfg.dataset, cfg.data_dir, cfg.encoding, cfg.num_steps, cfg.dt, cfg.seed, cfg.event_input)


def _loader(train, cfg, seed: int):
    from torch.utils.data import DataLoader

    from ..train import loop

    gen = torch.Generator().manual_seed(seed)
    return DataLoader(train, batch_size=cfg.batch_size, shuffle=True, collate_fn=loop._collate, generator=gen)


def run_preset(preset: str, args: argparse.Namespace, peers: list[str], datasets: dict) -> dict[str, Any]:
    """Check, then time every implementation on ``preset``; raises when a check fails."""
    from ..train import loop

    cfg = _config(preset, args)
    key = _data_key(cfg)
    if key not in datasets:
        t0 = time.perf_counter()
        datasets[key] = loop.build_datasets(cfg)
        print(f"  data: {len(datasets[key][0])} training samples encoded in {time.perf_counter() - t0:.1f}s")
    train, _test, n_in, n_classes = datasets[key]
    torch.manual_seed(cfg.seed)
    model = loop.build_model(cfg, n_in, n_classes)
    spec = spec_of(model)
    initial = copy.deepcopy(model.state_dict())
    names = [SPIKESCAN] + ([] if args.no_dense else [SPIKESCAN_DENSE]) + peers

    def fresh(name: str, w1_scale: float = 1.0) -> Impl:
        base = loop.build_model(cfg, n_in, n_classes)
        base.load_state_dict(initial)
        if w1_scale != 1.0:
            with torch.no_grad():
                base[0].weight.mul_(w1_scale)
        if name == SPIKESCAN:
            return Impl(name, base, dense_input=False)
        if name == SPIKESCAN_DENSE:
            return Impl(name, dense_model(base), dense_input=True)
        return Impl(name, make_peer(name, base), dense_input=True)

    print(f"  {preset}: {spec.neuron} hidden, T={cfg.num_steps} B={cfg.batch_size} "
          f"{spec.n_in}-{spec.n_hidden}-{spec.n_out}, beta {spec.beta_hidden:.6f} / {spec.beta_out:.6f}", flush=True)
    check_loader = _loader(train, cfg, cfg.seed)
    batches = [b for _, b in zip(range(args.check_batches), check_loader)]
    checks = {}
    # the 'active' check scales W1 by check_scale / c, so a hidden layer with the input factor c
    # gets the same currents as one without
    for label, scale in (("initial", 1.0), ("active", args.check_scale / spec.input_scale)):
        if label == "active" and args.check_scale == 1.0:
            continue
        check = check_agreement([fresh(n, scale) for n in names], batches, cfg.readout,
                                loss_rtol=args.loss_rtol, grad_rtol=args.grad_rtol)
        check["w1_scale"] = scale
        checks[label] = check
        spikes = [b["hidden_spikes"][SPIKESCAN] for b in check["per_batch"]]
        print(f"    check '{label}' (W1 x {scale:g}; spikescan's hidden spikes per batch: "
              f"{', '.join(f'{n:g}' for n in spikes)})", flush=True)
        for name, s in check["summary"].items():
            print(f"      {name:>15}: max |dloss| {s['max_loss_abs_diff']:.2e} (rel {s['max_loss_rel_diff']:.2e}), "
                  f"max |dlogits| {s['max_logits_abs_diff']:.1e}, W1 grad rel err {s['max_grad_rel_err']:.2e}, hidden spikes differ by <= "
                  f"{s['max_abs_hidden_spike_diff']:g} -> {'ok' if s['ok'] else 'FAILED'}", flush=True)
        if not any(spikes):
            print(f"      note: no hidden spike in the '{label}' check, so it tests the membranes and "
                  f"surrogates only; a larger --check-scale makes the network fire")
    result: dict[str, Any] = {"preset": preset, "spec": asdict(spec), "config": {
        "num_steps": cfg.num_steps, "batch_size": cfg.batch_size, "hidden": cfg.hidden, "lr": cfg.lr,
        "optimizer": cfg.optimizer, "readout": cfg.readout, "neuron_kwargs": cfg.neuron_kwargs,
        "event_input": cfg.event_input, "batches_per_epoch": len(check_loader)}, "check": checks}
    del batches
    if not all(c["ok"] for c in checks.values()):
        result["status"] = "check failed"
        return result
    impls = [fresh(n) for n in names]
    steps, repeats, fetch = {}, {}, {}
    for impl in impls:  # one shuffle for all: every implementation trains on the same batches
        opt = loop._optimizer(cfg, impl.model.parameters())
        steps[impl.name] = make_step(impl, opt, endless(_loader(train, cfg, cfg.seed + 1)), cfg.readout)
        repeats[impl.name] = args.steps if impl.name == SPIKESCAN else args.peer_steps
    for dense in (False, True):
        fetch["dense" if dense else "events"] = time_fetch(_loader(train, cfg, cfg.seed), dense)
    timings = time_interleaved(steps, repeats, args.warmup, torch.device("cpu"))
    ref = timings[SPIKESCAN].median_s
    n_batches = len(check_loader)
    result["timing"] = {name: {**t.to_dict(), "ratio_to_spikescan": t.median_s / ref,
                               "epoch_s": t.median_s * n_batches,
                               "fetch_s": fetch["dense" if impl.dense_input else "events"]}
                        for impl, (name, t) in zip(impls, timings.items())}
    result["fetch_s"] = fetch
    result["status"] = "ok"
    return result


def _tables(results: dict[str, Any]) -> str:
    rows = []
    for p in results["presets"]:
        for name, t in (p.get("timing") or {}).items():
            rows.append([p["preset"], name, C.fmt_seconds(t["median_s"]), C.fmt_seconds(t["iqr_s"]),
                         len(t["times_s"]), C.fmt_ratio(t["ratio_to_spikescan"]), f"{t['epoch_s']:.0f}s",
                         C.fmt_seconds(t["fetch_s"])])
    epoch = results["presets"][0]["config"]["batches_per_epoch"] if results["presets"] else "-"
    out = [C.format_table(["preset", "implementation", "s/step", "IQR", "steps", "x spikescan",
                           f"epoch ({epoch} batches)", "fetch"], rows)]
    rows = []
    for p in results["presets"]:
        for label, check in p["check"].items():
            spikes = "/".join(f"{b['hidden_spikes'][SPIKESCAN]:g}" for b in check["per_batch"])
            for name, s in check["summary"].items():
                rows.append([p["preset"], f"{label} (W1 x {check['w1_scale']:g})", spikes, name,
                             f"{s['max_loss_abs_diff']:.2e}", f"{s['max_loss_rel_diff']:.2e}",
                             f"{s['max_logits_abs_diff']:.1e}", f"{s['max_grad_rel_err']:.2e}", f"{s['max_abs_hidden_spike_diff']:g}",
                             "ok" if s["ok"] else "FAILED"])
    k = results["config"]["check_batches"]
    out.append(f"\nagreement with spikescan over the first {k} batches (same weights, no optimizer step):")
    out.append(C.format_table(["preset", "check", "spikescan spikes", "implementation", "max |dloss|", "rel",
                               "max |dlogits|", "W1 grad rel err", "spike count diff", "result"], rows))
    return "\n".join(out)


def _plot(results: dict[str, Any], path: str) -> None:
    presets = [p for p in results["presets"] if p.get("timing")]
    if not presets:
        return
    names = list(dict.fromkeys(n for p in presets for n in p["timing"]))
    fig, axes = C.new_figure(size=(2.0 + 1.1 * len(names), 4.2))
    ax = axes[0][0]
    width = 0.8 / len(presets)
    for j, p in enumerate(presets):
        xs = [i + (j - (len(presets) - 1) / 2) * width for i, n in enumerate(names) if n in p["timing"]]
        ys = [p["timing"][n]["median_s"] for n in names if n in p["timing"]]
        bars = ax.bar(xs, ys, width=width, label=p["preset"])
        for bar, n in zip(bars, [n for n in names if n in p["timing"]]):
            r = p["timing"][n]["ratio_to_spikescan"]
            ax.annotate(C.fmt_ratio(r), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("seconds per training step (median)")
    m = results["machine"]
    cfg = presets[0]["config"]
    ax.set_title(f"FastSNN F-MNIST step, T={cfg['num_steps']} B={cfg['batch_size']}; "
                 f"{m['torch_num_threads']} thread(s), {m['cpu_model']}", fontsize=8)
    ax.legend(fontsize=8)
    C.save_figure(fig, path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    _validate(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    info = C.machine_info(device)
    peers, unavailable = [], {}
    for peer in args.peers:
        why = peer_status(peer)
        if why is None:
            peers.append(peer)
        else:
            unavailable[peer] = why
            print(f"{peer}: skipped, {why}")
    print(f"train-step bench on {info['cpu_model']}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"presets {args.preset}; peers {peers}", flush=True)
    if (warn := C.load_warning(info)):
        print(warn)
    versions = {p: _version(PEERS[p].split(".")[0]) for p in peers}
    started = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "train-step", "machine": info,
        "what": "one training step: fetch a batch from the loader, forward, max-membrane cross-entropy, backward, "
                "Adam step (spikescan.train.loop.run_epoch without its metric hooks)",
        "config": {"presets": args.preset, "peers": peers, "unavailable": unavailable, "peer_versions": versions,
                   "steps": args.steps, "peer_steps": args.peer_steps, "warmup": args.warmup,
                   "check_batches": args.check_batches, "check_scale": args.check_scale,
                   "loss_rtol": args.loss_rtol, "grad_rtol": args.grad_rtol,
                   "threads": args.threads, "seed": args.seed, "data_dir": os.path.abspath(args.data_dir),
                   "dense_baseline": not args.no_dense},
        "presets": []}
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "results.json")
    datasets: dict = {}
    for preset in args.preset:
        res = run_preset(preset, args, peers, datasets)
        results["presets"].append(res)
        if res["status"] != "ok":
            results["seconds"] = time.perf_counter() - started
            C.write_json_atomic(json_path, results)
            bad = [f"{k} ('{label}' check: loss rel diff {v['max_loss_rel_diff']:.2e}, W1 grad rel err "
                   f"{v['max_grad_rel_err']:.2e})" for label, c in res["check"].items()
                   for k, v in c["summary"].items() if not v["ok"]]
            raise DisagreementError(f"{preset}: {'; '.join(bad)} disagree with spikescan on the first "
                                    f"{args.check_batches} batches (tolerances: loss {args.loss_rtol}, gradient "
                                    f"{args.grad_rtol}); nothing was timed, every number is in {json_path}")
    results["seconds"] = time.perf_counter() - started
    print(_tables(results))
    C.write_json_atomic(json_path, results)
    png = os.path.join(args.out, "train_step.png")
    _plot(results, png)
    print(f"-> {json_path}, {png}")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return C.run_main("train-step", __doc__, add_arguments, run, argv)


if __name__ == "__main__":  # pragma: no cover
    main()
