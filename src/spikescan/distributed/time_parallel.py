"""Splitting the time axis of a spiking network over the ranks of a process group.

Temporal-parallelization paper (``temporal_parallelization_lif_cuda_jax``), §3.2: with k devices,
each simulates one contiguous segment of the T time steps and only the state at the segment
boundaries crosses devices.  Here every rank of a ``torch.distributed`` group holds its own
segment ``x_local = x[t0:t1]`` (time first, ``[T_r, B, ...]``; segments may differ in length,
rank r holds the r-th segment in time order); :func:`segment_bounds` / :func:`local_segment`
cut a sequence evenly.

Linear neurons (leaky integration, SPSN, LI) -- :func:`leaky_integrate_split`, exact, one
collective each way.  For ``u[t] = d u[t-1] + s x[t]`` (``u[-1] = v0``), rank r

1. scans its segment from a zero state: ``w[tau]`` (any local backend of
   :func:`spikescan.ops.leaky_integrate`);
2. all-gathers ``(P_r, e_r) = (d**T_r, w[T_r - 1])`` -- the segment's decay product and final
   zero-start state -- from every rank (ONE ``all_gather``);
3. forms its carry-in by the exclusive scan over the lower ranks,
   ``c_0 = v0``, ``c_{j+1} = P_j c_j + e_j``, and outputs ``u[tau] = w[tau] + d**(tau+1) c_r``.

The backward is the mirror image: the reverse-time scan ``g[t] = grad_u[t] + d g[t+1]`` is
done locally from a zero end state, the ranks all-gather ``(P_r, h_r[0])`` and each adds
``d**(T_r - tau) G_r`` with the reverse carry ``G_r`` from the higher ranks
(``G_{W-1} = 0``, ``G_{j-1} = P_j G_j + h_j[0]``).  Then ``grad x = s g``,
``grad s = sum g x``, ``grad d = sum g[t] u[t-1]`` (``u[-1] = c_r``), ``grad v0 = d g[0]`` on
rank 0.  Results and gradients equal the single-process ones up to float round-off.

Exact LIF (reset is nonlinear, no carry formula) -- :func:`lif_split`, a pipeline: rank k
receives rank k-1's final post-reset state (``recv``), runs :func:`spikescan.ops.lif.lif` on its
segment with ``v0`` = that state, and sends its own final state on (``isend``).  The backward
runs the pipeline in reverse, passing the gradient of the state from rank k+1 to rank k.  With
``micro_batches=M`` the batch is cut in M parts and each part is handed on as soon as it is
done, so rank k works on part m while rank k+1 works on part m-1; in a network with L such
layers the ranks run a wavefront over (time segments x layers x parts), finishing after about
``(L M + k - 1)`` part-steps instead of ``k L M`` (see :mod:`spikescan.bench.scaling`).

Gradient convention.  The loss of a time-split run is the SUM over ranks of each rank's loss on
its own segment (or the same loss computed on every rank from :func:`gather_time`).  Gradients
wrt a rank's local tensors (its ``x_local``) are complete on that rank.  Parameters (decay,
scale, threshold, v0, weights) are replicated on every rank and receive one contribution per
rank: with ``reduce_grads=True`` (default) the split ops all-reduce (sum) the gradients of their
own parameter arguments in the backward, so every rank ends with the single-process gradient;
:class:`TimeSplit` instead passes ``reduce_grads=False`` and sums every parameter's gradient once
at the end of the backward.  Every rank must call each split op, and backpropagate through it,
in the same order (SPMD), or the collectives wait for each other until the group's timeout.
No double backward.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import defaults as _defaults
from .._checks import check_time_first
from ..nn.container import TimeDistributed
from ..nn.leaky import LI, LIF, input_factor
from ..nn.spsn import SPSN
from ..ops.firing import gumbel_spike, sigmoid_bernoulli
from ..ops.lif import lif
from ..ops._params import compute_dtype, param
from ..ops.leaky import leaky_integrate
from ._comm import PeerFailure, global_rank, guard, rank_of, world_of

__all__ = ["segment_bounds", "local_segment", "gather_time", "leaky_integrate_split", "spsn_split", "lif_split",
           "TimeSplit", "SUPPORTED_LAYERS", "PeerFailure"]


# --------------------------------------------------------------------------------------------
# segments
# --------------------------------------------------------------------------------------------


def segment_bounds(T: int, parts: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: T steps cut into ``parts`` contiguous segments, the first
    ``T % parts`` one step longer than the rest.  Every segment gets at least one step."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be an int >= 1, got {T!r}")
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ValueError(f"parts must be an int >= 1, got {parts!r}")
    if parts > T:
        raise ValueError(f"cannot split T = {T} steps over {parts} ranks: every rank needs at least one step")
    base, extra = divmod(T, parts)
    bounds, start = [], 0
    for r in range(parts):
        stop = start + base + (r < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def local_segment(x: Tensor, group: Optional[dist.ProcessGroup] = None) -> Tensor:
    """This rank's segment of the full sequence ``x`` ``[T, ...]`` (a view), per :func:`segment_bounds`."""
    check_time_first(x, "x")
    start, stop = segment_bounds(x.shape[0], world_of(group))[rank_of(group)]
    return x[start:stop]


class _GatherTime(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        W, r = world_of(group), rank_of(group)
        # on x's device: NCCL only moves GPU tensors
        lengths = torch.zeros(W, dtype=torch.int64, device=x.device)
        local_len = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
        with guard("gather_time (segment lengths)", group):
            dist.all_gather(list(lengths.split(1)), local_len, group=group)
        lens = [int(v) for v in lengths]
        t_max = max(lens)
        padded = x.new_zeros((t_max,) + tuple(x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(W)]
        with guard("gather_time", group):
            dist.all_gather(parts, padded.contiguous(), group=group)
        ctx.start = sum(lens[:r])
        ctx.length = lens[r]
        return torch.cat([p[:n] for p, n in zip(parts, lens)])

    @staticmethod
    def backward(ctx, grad):
        # every rank computes the same loss from the gathered sequence, so the sum over ranks
        # of each rank's own slice of that gradient is the single-process gradient
        return grad[ctx.start: ctx.start + ctx.length], None


def gather_time(x_local: Tensor, group: Optional[dist.ProcessGroup] = None) -> Tensor:
    """The full sequence ``[T, ...]`` on every rank, concatenated in rank order (differentiable).

    For losses that need the whole time axis (max over time, a readout on the last step):
    compute the SAME loss on every rank from the gathered output; the backward hands each rank
    only its own slice of the gradient, which matches the sum-over-ranks convention.
    """
    check_time_first(x_local, "x_local")
    return _GatherTime.apply(x_local, group)


# --------------------------------------------------------------------------------------------
# leaky integration, split
# --------------------------------------------------------------------------------------------


def _all_gather(t: Tensor, group, what: str) -> list[Tensor]:
    out = [torch.empty_like(t) for _ in range(world_of(group))]
    with guard(what, group):
        dist.all_gather(out, t.contiguous(), group=group)
    return out


def _all_reduce_grads(grads: list[Optional[Tensor]], group, what: str) -> list[Optional[Tensor]]:
    """Sum the non-None tensors over the group with ONE all_reduce (flattened)."""
    present = [g for g in grads if g is not None]
    if not present or world_of(group) == 1:
        return grads
    flat = torch.cat([g.reshape(-1).to(torch.float64 if g.dtype == torch.float64 else torch.float32)
                      for g in present])
    with guard(what, group):
        dist.all_reduce(flat, group=group)
    out, offset = [], 0
    for g in grads:
        if g is None:
            out.append(None)
        else:
            out.append(flat[offset: offset + g.numel()].reshape(g.shape).to(g.dtype))
            offset += g.numel()
    return out


def _powers(d: Tensor, n: int) -> Tensor:
    """``[n, *d.shape]`` with ``p[i] = d**(i+1)`` (no negative exponents, exact for d in {0, 1})."""
    k = torch.arange(1, n + 1, dtype=d.dtype, device=d.device).reshape((n,) + (1,) * d.dim())
    return d.unsqueeze(0) ** k


class _SplitScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, d, s, v0, group, backend, reduce_grads):
        W, r = world_of(group), rank_of(group)
        T_r = x.shape[0]
        y = x if s is None else x * s
        w = leaky_integrate(y, d, backend=backend)  # zero-start local scan
        P = (d ** T_r).expand(w.shape[1:])
        gathered = _all_gather(torch.stack([P, w[-1]]), group, "leaky_integrate_split forward all_gather")
        carry = None if v0 is None else v0.expand(w.shape[1:])
        for j in range(r):  # exclusive scan over the lower ranks
            Pj, ej = gathered[j]
            carry = ej.clone() if carry is None else Pj * carry + ej
        pw = _powers(d, T_r)
        u = w if carry is None else w + pw * carry
        ctx.group, ctx.backend, ctx.reduce, ctx.rank, ctx.world = group, backend, reduce_grads, r, W
        ctx.save_for_backward(x if (s is not None and ctx.needs_input_grad[2]) else None, d, s, v0,
                              u if ctx.needs_input_grad[1] else None, carry, pw)
        return u

    @staticmethod
    def backward(ctx, grad_u):
        x, d, s, v0, u, carry, pw = ctx.saved_tensors
        group, r, W = ctx.group, ctx.rank, ctx.world
        T_r = grad_u.shape[0]
        h = leaky_integrate(grad_u.flip(0), d, backend=ctx.backend).flip(0)  # zero-end local reverse scan
        P = (d ** T_r).expand(h.shape[1:])
        gathered = _all_gather(torch.stack([P, h[0]]), group, "leaky_integrate_split backward all_gather")
        G = None
        for j in range(W - 1, r, -1):  # reverse exclusive scan over the higher ranks
            Pj, hj = gathered[j]
            G = hj.clone() if G is None else Pj * G + hj
        g = h if G is None else h + pw.flip(0) * G  # d**(T_r - tau) * G
        grad_x = grad_d = grad_s = grad_v0 = None
        if ctx.needs_input_grad[0]:
            grad_x = g if s is None else g * s
        if ctx.needs_input_grad[1]:
            prev = torch.zeros_like(u[:1]) if carry is None else carry.unsqueeze(0)
            u_prev = torch.cat([prev.expand_as(u[:1]), u[:-1]])
            grad_d = (g * u_prev).sum(0).sum_to_size(d.shape)
        if s is not None and ctx.needs_input_grad[2]:
            grad_s = (g * x).sum(0).sum_to_size(s.shape)
        if v0 is not None and ctx.needs_input_grad[3]:
            grad_v0 = (d * g[0]).sum_to_size(v0.shape) if r == 0 else torch.zeros_like(v0)
        if ctx.reduce:
            grad_d, grad_s, grad_v0 = _all_reduce_grads([grad_d, grad_s, grad_v0], group,
                                                        "leaky_integrate_split parameter-gradient all_reduce")
        return grad_x, grad_d, grad_s, grad_v0, None, None, None


def leaky_integrate_split(x_local: Tensor, decay, *, scale=1.0, v0=None,
                          group: Optional[dist.ProcessGroup] = None, backend: str = "auto",
                          reduce_grads: bool = True) -> Tensor:
    """Leaky integration ``u[t] = decay u[t-1] + scale x[t]`` (``u[-1] = v0``) with time split over ``group``.

    Every rank passes its own contiguous segment ``x_local`` ``[T_r, *rest]`` (rank order = time
    order; lengths may differ) and the SAME ``decay``, ``scale`` and ``v0`` (the global initial
    state; only rank 0 uses its value).  Returns this rank's segment of the single-process
    :func:`spikescan.ops.leaky_integrate` result.  Algorithm and gradients: module docstring
    (one ``all_gather`` forward, one backward, plus one ``all_reduce`` of the parameter
    gradients when ``reduce_grads``).

    Args:
        x_local: floating ``[T_r, *rest]``, ``T_r >= 1``; float16/bfloat16 computed in float32.
        decay: float or tensor broadcastable to ``rest`` (per neuron), values in ``[0, 1]``.
        scale: float or tensor broadcastable to ``rest``.
        v0: None (zero) or float / tensor broadcastable to ``rest``.
        group: process group (default: the world).
        backend: local scan backend (see :func:`spikescan.ops.leaky_integrate`).
        reduce_grads: sum the gradients of ``decay``, ``scale`` and ``v0`` over the ranks in the
            backward, so each rank holds the single-process gradient (see the module docstring).
    """
    check_time_first(x_local, "x_local")
    compute = compute_dtype(x_local.dtype)
    d = param(decay, "decay", x_local, align=True, low=0.0, high=1.0)
    unit = isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale == 1
    s = None if unit else param(scale, "scale", x_local, align=True)
    v = None if v0 is None else param(v0, "v0", x_local, align=True)
    u = _SplitScan.apply(x_local.to(compute), d, s, v, group, backend, bool(reduce_grads))
    return u.to(x_local.dtype)


def spsn_split(x_local: Tensor, decay_syn, decay_mem, *, firing: str = "sb", noise: Optional[Tensor] = None,
               generator: Optional[torch.Generator] = None, gs_tau: float = 1.0, logit_scale: float = 1.0,
               group: Optional[dist.ProcessGroup] = None, backend: str = "auto", reduce_grads: bool = True,
               return_membrane: bool = False):
    """SPSN (SPSN paper eq. 5, 7, 13-19) with time split over ``group``.

    ``i[t] = a i[t-1] + x[t]`` (skipped when ``decay_syn`` is None), ``u[t] = b u[t-1] + (1-b) i[t]``
    -- both by :func:`leaky_integrate_split` -- then firing on the local segment:
    ``firing="sb"`` :func:`spikescan.ops.firing.sigmoid_bernoulli`, ``"gs"``
    :func:`spikescan.ops.firing.gumbel_spike`.  The noise is this rank's own: ``noise`` (this
    segment's slice of a global noise tensor: uniforms for "sb", logistic samples for "gs") or
    ``generator`` (seed it per rank, e.g. ``seed + rank``).
    """
    current = x_local if decay_syn is None else leaky_integrate_split(
        x_local, decay_syn, group=group, backend=backend, reduce_grads=reduce_grads)
    b = decay_mem
    u = leaky_integrate_split(current, b, scale=1.0 - b, group=group, backend=backend, reduce_grads=reduce_grads)
    if firing == "sb":
        s = sigmoid_bernoulli(u, generator=generator, noise=noise)
    elif firing == "gs":
        s = gumbel_spike(u, tau=gs_tau, generator=generator, logit_scale=logit_scale, noise=noise)
    else:
        raise ValueError(f"firing must be 'sb' or 'gs', got {firing!r}")
    return (s, u) if return_membrane else s


# --------------------------------------------------------------------------------------------
# exact LIF, pipelined
# --------------------------------------------------------------------------------------------

# point-to-point tags: forward states and backward state-gradients never share a tag
_TAG_FWD, _TAG_BWD = 1 << 20, 1 << 21


class _LIFOpts:
    def __init__(self, group, micro_batches, reduce_grads, lif_kwargs, build_graph):
        self.group = group
        self.micro_batches = micro_batches
        self.reduce = reduce_grads
        self.lif_kwargs = lif_kwargs
        self.build_graph = build_graph


def _batch_slice(t, start: int, stop: int, batch: int):
    """``t``'s part for batch rows ``start:stop`` when it varies along the batch dim, else ``t``."""
    if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == batch and batch > 1:
        return t[start:stop]
    return t


def _aligned(value, x: Tensor):
    """A tensor parameter reshaped to ``x.shape[1:]``'s rank (floats and None pass through)."""
    if isinstance(value, Tensor) and value.dim() > 0:
        return value.reshape((1,) * (x.dim() - 1 - value.dim()) + tuple(value.shape))
    return value


class _LIFPipeline(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, decay, threshold, v_reset, v0, opts: _LIFOpts):
        group = opts.group
        W, r = world_of(group), rank_of(group)
        prev_rank = global_rank(group, r - 1) if r > 0 else None
        next_rank = global_rank(group, r + 1) if r < W - 1 else None
        B = x.shape[1]
        bounds = [(int(c[0]), int(c[-1]) + 1) for c in torch.arange(B).tensor_split(opts.micro_batches) if len(c)]
        params = {"decay": decay, "threshold": threshold, "v_reset": v_reset}
        build = opts.build_graph
        # one full-shaped leaf per tensor parameter; each part uses its batch slice of it
        leaves = {k: (v.detach().requires_grad_(ctx.needs_input_grad[i + 1]) if isinstance(v, Tensor) else v)
                  for i, (k, v) in enumerate(params.items())}
        v0_leaf = v0.detach().requires_grad_(ctx.needs_input_grad[4]) if isinstance(v0, Tensor) else v0
        parts, sends = [], []
        for m, (b0, b1) in enumerate(bounds):
            if prev_rank is not None:
                state = x.new_empty((b1 - b0,) + tuple(x.shape[2:]))
                with guard(f"lif_split forward recv of the state from rank {r - 1}", group):
                    dist.recv(state, src=prev_rank, group=None, tag=_TAG_FWD + m)
                state.requires_grad_(build)
            with torch.enable_grad() if build else torch.no_grad():
                if prev_rank is None:  # sliced under grad mode, so the slice stays on v0's graph
                    state = _batch_slice(v0_leaf, b0, b1, B)
                xm = x[:, b0:b1].detach().requires_grad_(build and ctx.needs_input_grad[0])
                kw = {k: _batch_slice(v, b0, b1, B) for k, v in leaves.items()}
                s, st = lif(xm, kw["decay"], kw["threshold"], v_reset=kw["v_reset"], v0=state, return_state=True,
                            **opts.lif_kwargs)
            if next_rank is not None:
                with guard(f"lif_split forward send of the state to rank {r + 1}", group):
                    sends.append(dist.isend(st.detach().contiguous(), dst=next_rank, tag=_TAG_FWD + m))
            parts.append((xm, state, s, st))
        with guard(f"lif_split forward send of the state to rank {r + 1}", group):
            for w in sends:
                w.wait()
        ctx.opts, ctx.bounds, ctx.leaves, ctx.v0_leaf, ctx.parts = opts, bounds, leaves, v0_leaf, parts
        ctx.ranks = (r, W, prev_rank, next_rank)
        ctx.batch = B
        return torch.cat([p[2].detach() for p in parts], dim=1)

    @staticmethod
    def backward(ctx, grad_s):
        opts, bounds, leaves, v0_leaf = ctx.opts, ctx.bounds, ctx.leaves, ctx.v0_leaf
        group = opts.group
        r, W, prev_rank, next_rank = ctx.ranks
        tensor_leaves = {k: v for k, v in leaves.items() if isinstance(v, Tensor) and v.requires_grad}
        grads = {k: torch.zeros_like(v) for k, v in tensor_leaves.items()}
        grad_v0 = torch.zeros_like(v0_leaf) if isinstance(v0_leaf, Tensor) and v0_leaf.requires_grad else None
        grad_x = torch.zeros_like(grad_s) if ctx.needs_input_grad[0] else None
        sends = []
        for m, ((b0, b1), (xm, state, s, st)) in enumerate(zip(bounds, ctx.parts)):
            outputs, grad_outputs = [s], [grad_s[:, b0:b1]]
            if next_rank is not None:
                g_state = st.new_empty(st.shape)
                with guard(f"lif_split backward recv of the state gradient from rank {r + 1}", group):
                    dist.recv(g_state, src=next_rank, tag=_TAG_BWD + m)
                outputs.append(st)
                grad_outputs.append(g_state)
            inputs, names = [], []
            if grad_x is not None:
                inputs.append(xm), names.append("x")
            for k, v in tensor_leaves.items():
                inputs.append(v), names.append(k)
            state_needs = isinstance(state, Tensor) and state.requires_grad
            if state_needs:
                inputs.append(state), names.append("state")
            got = dict(zip(names, torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True))) \
                if inputs else {}
            if grad_x is not None and got.get("x") is not None:
                grad_x[:, b0:b1] = got["x"]
            for k in tensor_leaves:
                if got.get(k) is not None:
                    grads[k] += got[k]
            g_in = got.get("state")
            if prev_rank is not None:
                g_in = torch.zeros_like(state) if g_in is None else g_in
                with guard(f"lif_split backward send of the state gradient to rank {r - 1}", group):
                    sends.append(dist.isend(g_in.contiguous(), dst=prev_rank, tag=_TAG_BWD + m))
            elif grad_v0 is not None and g_in is not None:
                # rank 0: the part's state is v0 (or its batch slice): accumulate into v0's gradient
                if _batch_slice(v0_leaf, b0, b1, ctx.batch) is not v0_leaf:
                    grad_v0[b0:b1] += g_in
                else:
                    grad_v0 += g_in.sum_to_size(grad_v0.shape)
        with guard(f"lif_split backward send of the state gradient to rank {r - 1}", group):
            for w in sends:
                w.wait()
        ctx.parts = None  # free the local graphs
        names = list(grads)
        vals = [grads[k] for k in names] + [grad_v0]
        if opts.reduce:
            vals = _all_reduce_grads(vals, group, "lif_split parameter-gradient all_reduce")
        reduced = dict(zip(names, vals[:-1]))
        out_params = [reduced.get(k) if ctx.needs_input_grad[i + 1] else None
                      for i, k in enumerate(("decay", "threshold", "v_reset"))]
        return (grad_x, *out_params, vals[-1] if ctx.needs_input_grad[4] else None, None)


def lif_split(x_local: Tensor, decay, threshold=_defaults.THRESHOLD, *, reset: str = _defaults.RESET,
              v_reset=_defaults.V_RESET, surrogate=None, v0=None, detach_reset: bool = _defaults.DETACH_RESET,
              backend: str = "auto", micro_batches: int = 1,
              group: Optional[dist.ProcessGroup] = None, reduce_grads: bool = True) -> Tensor:
    """Exact LIF with reset (:func:`spikescan.ops.lif.lif`) with time split over ``group``, pipelined.

    Rank k waits for rank k-1's final post-reset state, runs ``lif`` on its segment from it and
    sends its own final state to rank k+1; the backward passes the state gradient from rank k+1
    back to rank k.  ``micro_batches=M`` cuts the batch (dim 1) into M parts handed on one by
    one, so that the ranks overlap (module docstring).  The result and all gradients equal the
    single-process ``lif`` (the arithmetic per step is the same; only the state crosses ranks).

    Args:
        x_local: this rank's segment ``[T_r, B, ...]`` of the input current (rank order = time
            order), at least 2 dims.
        decay, threshold, reset, v_reset, surrogate, detach_reset, backend: as in
            :func:`spikescan.ops.lif.lif`, the same on every rank.
        v0: the global initial state (used by rank 0 only), None for 0.
        micro_batches: parts of the batch dim for the pipeline (same on every rank), 1 .. B.
        group: process group (default: the world).
        reduce_grads: sum parameter (``decay``, ``threshold``, ``v_reset``, ``v0``) gradients over
            the ranks in the backward.

    Returns:
        spikes ``[T_r, B, ...]`` of this rank's segment.
    """
    check_time_first(x_local, "x_local", min_dim=2)
    if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or micro_batches < 1:
        raise ValueError(f"micro_batches must be an int >= 1, got {micro_batches!r}")
    if micro_batches > x_local.shape[1]:
        raise ValueError(f"micro_batches ({micro_batches}) cannot exceed the batch size {x_local.shape[1]}")
    params = [_aligned(p, x_local) for p in (decay, threshold, v_reset, v0)]
    needs = x_local.requires_grad or any(isinstance(p, Tensor) and p.requires_grad for p in params)
    opts = _LIFOpts(group, micro_batches, bool(reduce_grads),
                    dict(reset=reset, surrogate=surrogate, detach_reset=detach_reset, backend=backend),
                    build_graph=torch.is_grad_enabled() and needs)
    return _LIFPipeline.apply(x_local, *params, opts)


# --------------------------------------------------------------------------------------------
# whole networks
# --------------------------------------------------------------------------------------------

# Per-step layers: they act on each time step independently (and on each sample), so running
# them on a rank's segment is exact.  Elementwise activations and Dropout qualify; Dropout
# draws its mask from each rank's own RNG.
_STATELESS = (nn.Linear, nn.Identity, nn.Dropout, nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.ELU,
              nn.SiLU, nn.Softplus, nn.LayerNorm)
# Modules allowed inside TimeDistributed, which merges T and B: anything without statistics
# over the merged batch (BatchNorm is not: its statistics would span only this rank's segment).
_PER_SAMPLE = _STATELESS + (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
                            nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Sequential)

SUPPORTED_LAYERS = {
    "neurons": ("SPSN (both integrations split, firing local)", "LI (readout, split)",
                "LIF / PLIF (synaptic integration split, membrane by the lif_split pipeline)"),
    "per-step": tuple(t.__name__ for t in _STATELESS) + ("Flatten(start_dim >= 2)",
                                                          "TimeDistributed(<per-sample module>)"),
}


def _check_per_sample(module: nn.Module, where: str) -> None:
    for name, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"TimeSplit cannot split {where}: {type(sub).__name__} ({name or 'the module'}) "
                             f"normalizes over the merged time x batch axis, which a time segment only partly holds")
        if not isinstance(sub, _PER_SAMPLE + (TimeDistributed,)):
            raise ValueError(f"TimeSplit cannot split {where}: {type(sub).__name__} ({name or 'the module'}) is not "
                             f"a known per-sample module; supported: {', '.join(t.__name__ for t in _PER_SAMPLE)}")


def _flatten(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        out = []
        for child in model:
            out.extend(_flatten(child))
        return out
    return [model]


class _ReduceAtEnd(torch.autograd.Function):
    """Identity whose backward schedules the parameter-gradient all_reduce for the end of the backward."""

    @staticmethod
    def forward(ctx, x, owner):
        ctx.owner = owner
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        # the same mechanism DistributedDataParallel uses: a callback run once the whole
        # backward graph has finished, so every parameter's .grad holds its local sum
        torch.autograd.Variable._execution_engine.queue_callback(ctx.owner.reduce_gradients)
        return grad, None


class TimeSplit(nn.Module):
    """Run a feed-forward spiking network with its time axis split over the ranks of ``group``.

    ``model`` is an ``nn.Sequential`` (nested ones are flattened; e.g.
    :class:`spikescan.train.models.FeedForwardSNN`) of

    * neuron layers, computed with the split ops of this module: :class:`spikescan.nn.SPSN`
      (both leaky integrations by :func:`leaky_integrate_split`, firing on the local segment
      from the layer's ``generator`` -- seed it per rank -- or from ``noise``),
      :class:`spikescan.nn.LI` (split integrations), :class:`spikescan.nn.LIF` and
      :class:`spikescan.nn.PLIF` (synaptic integration split, membrane with reset by the
      :func:`lif_split` pipeline with ``micro_batches``);
    * per-step layers run locally on the segment: ``Linear``, ``Identity``, ``Dropout``,
      ``LayerNorm``, elementwise activations, ``Flatten(start_dim >= 2)`` and
      :class:`spikescan.nn.TimeDistributed` around per-sample modules (Conv, pooling, ...).

    Anything else raises ``ValueError`` at construction: the PSU family (IPSU/RPSU learn a
    T x T matrix over the WHOLE sequence, PSU's reset term is not a first-order recurrence),
    :class:`spikescan.nn.SingleSpikeLIF` and max-over-time readouts (they need the whole time
    axis: gather it with :func:`gather_time` instead), BatchNorm (statistics over time), and
    unknown modules.

    ``forward(x_local)`` takes this rank's segment ``[T_r, B, ...]`` and returns this rank's
    segment of the output.  Loss: sum over ranks (module docstring).  After the backward, every
    parameter's ``.grad`` is summed over the ranks automatically (``reduce_gradients="auto"``,
    one flattened ``all_reduce`` scheduled at the end of the backward); with ``"manual"`` call
    :meth:`reduce_gradients` yourself after ``backward()`` -- needed when gradients are
    accumulated over several ``backward()`` calls before a step, since "auto" sums the ranks'
    ``.grad`` after every backward (accumulated sums would be summed again).  Parameters must
    start equal on all ranks (same seed, or broadcast them).
    """

    def __init__(self, model: nn.Module, group: Optional[dist.ProcessGroup] = None, *, micro_batches: int = 1,
                 reduce_gradients: str = "auto"):
        super().__init__()
        if reduce_gradients not in ("auto", "manual"):
            raise ValueError(f"reduce_gradients must be 'auto' or 'manual', got {reduce_gradients!r}")
        if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or micro_batches < 1:
            raise ValueError(f"micro_batches must be an int >= 1, got {micro_batches!r}")
        self.model = model
        self.group = group
        self.micro_batches = micro_batches
        self.auto_reduce = reduce_gradients == "auto"
        self._layers = _flatten(model)
        for i, layer in enumerate(self._layers):
            self._check_layer(i, layer)

    @staticmethod
    def _check_layer(i: int, layer: nn.Module) -> None:
        where = f"layer {i} ({type(layer).__name__})"
        if isinstance(layer, (SPSN, LI, LIF)):
            return
        if isinstance(layer, nn.Flatten):
            if layer.start_dim < 2:  # negative dims may reach T or B for low-rank inputs
                raise ValueError(f"TimeSplit cannot split {where}: Flatten(start_dim={layer.start_dim}) merges the "
                                 f"time or batch dim; use start_dim >= 2")
            return
        if isinstance(layer, TimeDistributed):
            _check_per_sample(layer.module, where)
            return
        if isinstance(layer, _STATELESS):
            return
        raise ValueError(
            f"TimeSplit cannot split {where}: supported neurons are SPSN, LI, LIF/PLIF and per-step layers "
            f"{', '.join(SUPPORTED_LAYERS['per-step'])}; the PSU family, SingleSpikeLIF, max-over-time readouts and "
            f"other modules need the whole time axis (use gather_time) or are unknown")

    def forward(self, x_local: Tensor, noise: Optional[Sequence[Tensor]] = None) -> Tensor:
        """This rank's output segment; ``noise``: one local noise tensor per SPSN layer, in order (optional)."""
        check_time_first(x_local, "x_local", min_dim=2)
        group = self.group
        noise_iter = iter(noise) if noise is not None else None
        h = x_local
        for layer in self._layers:
            if isinstance(layer, SPSN):
                nz = next(noise_iter) if noise_iter is not None else None
                h = spsn_split(h, layer.syn() if layer.syn is not None else None, layer.mem(), firing=layer.firing,
                               noise=nz, generator=None if nz is not None else layer.generator,
                               gs_tau=layer.gs_tau, logit_scale=layer.logit_scale, group=group,
                               backend=layer.backend, reduce_grads=False)
            elif isinstance(layer, LI):
                cur = h if layer.syn is None else leaky_integrate_split(h, layer.syn(), group=group,
                                                                        backend=layer.backend, reduce_grads=False)
                b = layer.mem()
                h = leaky_integrate_split(cur, b, scale=input_factor(layer.input_scale, b), group=group,
                                          backend=layer.backend, reduce_grads=False)
            elif isinstance(layer, LIF):
                b = layer.mem()
                cur = h if layer.syn is None else leaky_integrate_split(h, layer.syn(), group=group,
                                                                        reduce_grads=False)
                cur = cur * input_factor(layer.input_scale, b)
                h = lif_split(cur, b, layer.threshold, reset=layer.reset, v_reset=layer.v_reset,
                              surrogate=layer.surrogate, detach_reset=layer.detach_reset, backend=layer.backend,
                              micro_batches=min(self.micro_batches, cur.shape[1]), group=group, reduce_grads=False)
            else:
                h = layer(h)
        if self.auto_reduce and torch.is_grad_enabled() and h.requires_grad:
            h = _ReduceAtEnd.apply(h, self)
        return h

    def reduce_gradients(self) -> None:
        """Sum every parameter's ``.grad`` over the ranks (one flattened all_reduce); missing grads count as 0."""
        params = [p for p in self.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        reduced = _all_reduce_grads(grads, self.group, "TimeSplit parameter-gradient all_reduce")
        for p, g in zip(params, reduced):
            p.grad = g
