"""Time-fused kernels: exact LIF, leaky integration and the SPSN step, one pass over T each way.

The exact LIF (with reset) is not a linear recurrence, so it cannot be scanned in parallel over
time; what makes it fast is running all ``T`` steps of a layer inside ONE kernel that reads the
input once, keeps each neuron's state in a register (or a cache-resident local), and writes the
spikes once -- and the backward (BPTT) likewise, in reverse time (temporal-parallelization
paper, ``../shared/papers/temporal_parallelization_lif_cuda_jax.txt``: "one thread per neuron
looping over T, saving only the pre-reset membrane"; on the CPU we save less still, see below).
The same treatment makes the linear neurons run at memory speed.

Kernels (``ops/_kernels``): numba on the CPU (compiled on first use, cached on disk; the
neurons are split over ``torch.get_num_threads()`` threads), Triton on CUDA (imported only when
a CUDA tensor arrives, so the package imports and runs without triton).  Compute dtypes are
float32 and float64; float16/bfloat16 inputs are computed in float32 and cast back.

What each op keeps for its backward, per (t, neuron):

- :func:`lif_fused`: on the CPU, its input ``x`` (the caller's own tensor when it is already a
  contiguous float32/float64 one: nothing new) and a post-reset state checkpoint every 32 steps,
  4 / 32 = 0.125 bytes in float32; the backward recomputes each 32-step segment's membranes
  from them.  On CUDA the pre-reset membrane ``v``, 4 bytes in float32.  Nothing when no
  gradient is needed (then the forward writes only the spikes).
- :func:`leaky_integrate_fused`: nothing beyond its own output ``u`` (only when ``decay`` needs
  a gradient) and its input ``x`` (only when ``scale`` does).
- :func:`fused_spsn`: on the CPU, state checkpoints every 32 steps, 2 x 4 / 32 = 0.25 bytes in
  float32 (the backward recomputes each 32-step segment from ``x`` and regenerates the noise);
  on CUDA the currents and membranes ``i, u``, 8 bytes in float32.  Never a random tensor.

Memory traffic of one float32 training step per (t, neuron), kernels only (the per-neuron
parameter gradients are summed inside the backward kernels -- and skipped, in kernels compiled
without them, when no parameter needs a gradient -- and an incoming gradient that is the same at
every step, e.g. of ``s.sum()``, is read as one cached row):

- LIF (CPU): forward reads ``x``, writes ``s``; backward reads ``x`` (and ``grad_s``, ``grad_v``
  when they are full tensors), writes ``grad_x``: 4 x 4 bytes + 0.125 (+4 per full incoming
  gradient).  CUDA: forward also writes ``v``, backward reads ``v`` instead of ``x``: 5 x 4.
- SPSN step (CPU): forward reads ``x``, writes ``s``; backward reads ``x`` (and ``grad_s``),
  writes ``grad_x``: 4 x 4 bytes + 0.25 (+4 for a full ``grad_s``).

CPU kernels advance each neuron several steps per sweep over a block of neurons (4 in the
forwards, 2 in the LIF backward), so state and parameters stay in registers across those steps
and a step costs one load of the input and one store per output instead of eight or more
loads/stores; that made the LIF forward about 2x and its backward about 1.7x faster than one
step per sweep on the 2-core development CPU (see ``_kernels/lif_numba.py``).  Constants reach
the kernels as tuples (registers), not arrays, so that loops calling the vectorized ``exp``
vectorize; the compute-bound SPSN kernels ask LLVM for 512-bit vectors where the CPU has them
(``_kernels/_numba_lowlevel.py``).

Large CPU outputs (>= 8 MiB) get transparent huge pages and are reused from a small pool once
no tensor uses them (``_kernels/_cpu.py``; ``SPIKESCAN_CPU_POOL=0`` turns the pool off): the
page faults of fresh memory otherwise cost more than the kernels themselves.  On a 2-core CPU
run with ``OMP_WAIT_POLICY=PASSIVE``: PyTorch's spinning OpenMP threads otherwise take the
second core from the kernels' worker thread.

Numerics: the forward kernels perform the reference's floating-point operations in the same
order (no FMA contraction), so LIF spikes and membranes and leaky-integration outputs equal the
sequential references bit for bit on the CPU.  The SPSN step's integrations are bit-identical
too; its sigmoid/logit use a vectorized exp (float32, about 2 ulp, ``_kernels/_numba_math.py``)
or the device's, so a draw lying within rounding of the firing boundary may differ from
``torch.sigmoid``'s decision.  The backward accumulates the parameter gradients per neuron in time order (the
references sum with torch reductions), so they agree to rounding.  The backward functions are
``once_differentiable`` (no double backward; the reference backends support it).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .. import surrogate as _surrogate
from .._checks import check_choice, check_finite, check_time_first
from ._kernels import _common as KC

__all__ = ["lif_fused", "leaky_integrate_fused", "fused_spsn", "spsn_uniforms", "is_available",
           "supports_lif", "lif_backend", "leaky_integrate_backend", "scan_kernel"]

_KERNEL_DTYPES = (torch.float32, torch.float64)


# --------------------------------------------------------------------------------------------
# dispatch and layout helpers
# --------------------------------------------------------------------------------------------


def _triton_ok() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def is_available(device: torch.device | str = "cpu") -> bool:
    """Whether the fused kernels can run on ``device`` (CPU: numba; CUDA: Triton and a GPU)."""
    device = torch.device(device)
    if device.type == "cpu":
        import importlib.util

        return importlib.util.find_spec("numba") is not None
    if device.type == "cuda":
        return torch.cuda.is_available() and _triton_ok()
    return False


# Tests set this to "triton" to run the Triton kernels on CPU tensors in Triton's interpreter
# (TRITON_INTERPRET=1 set before triton is imported).
_FORCE_IMPL: str | None = None


def supports_lif(x: Tensor, surrogate) -> bool:
    """Whether :func:`lif_backend` can run ``x`` with ``surrogate`` (for ``backend="auto"``)."""
    kind = getattr(_surrogate.get(surrogate), "kind", "")
    return kind in KC.SURROGATE_CODES and is_available(x.device)


def _impl_for(x: Tensor) -> str:
    if _FORCE_IMPL is not None:
        return _FORCE_IMPL
    if x.device.type == "cpu":
        return "numba"
    if x.device.type == "cuda":
        if not _triton_ok():
            raise RuntimeError("the fused kernels on CUDA need triton (pip install triton); "
                               "use backend='sequential' or install it")
        return "triton"
    raise ValueError(f"the fused kernels run on CPU (numba) and CUDA (Triton), not on {x.device}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in _KERNEL_DTYPES else torch.float32


def _empty(shape, like: Tensor) -> Tensor:
    """An uninitialised output buffer (large CPU ones backed by huge pages, see ``_cpu.empty``)."""
    from ._kernels._cpu import empty

    return empty(shape, like)


def _flat(t: Tensor, T: int, N: int, dtype: torch.dtype) -> Tensor:
    """``t`` as a C-contiguous ``[T, N]`` tensor of ``dtype`` (a view when it already is one)."""
    t = t.detach()
    if t.dtype == dtype and t.is_contiguous():
        return t.view(T, N)
    out = _empty((T, N), t.new_empty((), dtype=dtype))
    out.view(t.shape).copy_(t)
    return out


def _grad_rows(g: Tensor, T: int, N: int, dtype: torch.dtype) -> Tensor:
    """An incoming gradient as ``[T, N]``, or as one ``[1, N]`` row when it is the same at every
    step (e.g. the expanded gradient of ``s.sum()``), which the kernels then read from cache."""
    if T > 1 and g.dim() > 0 and g.stride(0) == 0:
        return _flat(g[:1], 1, N, dtype)
    return _flat(g, T, N, dtype)


def _vec(p: Tensor, rest: torch.Size, N: int, dtype: torch.dtype) -> Tensor:
    """A parameter broadcastable to ``rest`` as a contiguous per-neuron ``[N]`` vector."""
    return p.detach().to(dtype).expand(rest).reshape(N).contiguous()


def _meta(*params) -> list:
    """``(shape, dtype)`` of each parameter (``None`` for an absent one), for the backward."""
    return [None if p is None else (p.shape, p.dtype) for p in params]


def _param_grads(ctx, per_neuron, rest: torch.Size) -> list:
    """Per-neuron ``[N]`` gradients summed back to their parameters' shapes and dtypes.

    ``per_neuron[i]`` belongs to forward input ``1 + i`` (input 0 is ``x``); ``None`` where the
    parameter is absent or needs no gradient.
    """
    out = []
    for i, (g, meta) in enumerate(zip(per_neuron, ctx.param_meta)):
        if meta is None or not ctx.needs_input_grad[1 + i]:
            out.append(None)
        else:
            shape, dtype = meta
            out.append(g.reshape(rest).sum_to_size(shape).to(dtype))
    return out


def _numpy(*tensors):
    return tuple(t.numpy() for t in tensors)


def _numpy_dtype(dtype: torch.dtype) -> str:
    return "float32" if dtype == torch.float32 else "float64"


def _scalars(dtype: torch.dtype, values) -> tuple:
    """Kernel constants as a tuple of numpy scalars of ``dtype``.

    A tuple is passed to numba by value, so its items are registers inside a kernel's loops; the
    items of an array argument are loads that LLVM must assume the loop's stores may change,
    which can keep it from vectorizing the loop (see ``_numba_math.exp_consts``).
    """
    scalar = np.dtype(_numpy_dtype(dtype)).type
    return tuple(scalar(v) for v in values)


def _exp_args(dtype: torch.dtype):
    """``(constants, fast)`` for the kernels' ``exp_row``: the vectorized exp in float32 only."""
    from ._kernels._numba_math import exp_consts

    return exp_consts(_numpy_dtype(dtype)), dtype == torch.float32


# Neurons per block of the CPU LIF backward: its recomputation buffer, (SEGMENT + 1) x block
# elements, stays in L2 (135 KiB in float32).
_LIF_BACKWARD_BLOCK = 1024


def _run_cpu(N: int, T: int, fn, max_block: int = 4096) -> None:
    """Run a numba kernel over neurons ``0 .. N-1``; an empty batch (``N = 0``) has nothing to run
    (its outputs are empty and its parameter gradients, sums over no neuron, zero)."""
    if N == 0:
        return
    from ._kernels._cpu import parallel_for

    parallel_for(N, T * N, fn, max_block)


def _check_n(N: int) -> None:
    if N >= 2**31:
        raise ValueError(f"the fused kernels index neurons with 32-bit integers; got {N} neurons per step")


# --------------------------------------------------------------------------------------------
# exact LIF
# --------------------------------------------------------------------------------------------


class _LIFFused(torch.autograd.Function):
    """Inputs already validated; ``x`` in a kernel dtype.  Returns ``(s, v, v_post_last)``.

    The membrane ``v`` is written only when asked for (``need_v``).  For the backward the CPU
    kernel keeps the input and a state checkpoint every :data:`_common.SEGMENT` steps and
    recomputes the membranes; the Triton kernel keeps the membrane itself (``v`` is then written
    whenever a gradient is needed).
    """

    @staticmethod
    def forward(ctx, x, decay, threshold, v_reset, v0, zero_reset: bool, code: int, param: float,
                detach: bool, need_v: bool, impl: str):
        ctx.set_materialize_grads(False)
        T, rest = x.shape[0], x.shape[1:]
        N = math.prod(rest)
        _check_n(N)
        dt = x.dtype
        grad = any(ctx.needs_input_grad[:5])
        store_v = need_v or (grad and impl != "numba")
        xf = _flat(x, T, N, dt)
        d, th, vr = (_vec(p, rest, N, dt) for p in (decay, threshold, v_reset))
        v0v = xf.new_zeros(N) if v0 is None else _vec(v0, rest, N, dt)
        s = _empty((T, N), xf)
        v = _empty((T, N), xf) if store_v else xf.new_empty(1, N)
        vlast = xf.new_empty(N)
        if impl == "numba":
            from ._kernels import lif_numba as K

            seg = KC.SEGMENT
            ck = xf.new_empty(-(-T // seg), N) if grad else xf.new_empty(1, N)
            args = _numpy(xf, d, th, vr, v0v)
            outs = _numpy(s, v, ck, vlast)
            flags = (bool(store_v), bool(grad))
            _run_cpu(N, T, lambda lo, hi, bs: K.lif_forward(*args, bool(zero_reset), lo, hi, bs, seg, *flags, *outs))
            if grad:
                ctx.save_for_backward(d, th, vr, xf, ck)
        else:
            from ._kernels import lif_triton as K

            K.forward(xf, d, th, vr, v0v, bool(zero_reset), s, v, vlast)
            if grad:
                ctx.save_for_backward(d, th, vr, v, v0v)
        ctx.meta = (T, rest, zero_reset, code, param, detach, impl)
        ctx.param_meta = _meta(decay, threshold, v_reset, v0)
        v_out = v.view(x.shape) if need_v else v.new_empty(0)
        return s.view(x.shape), v_out, vlast.view(rest)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_s, g_v, g_last):
        T, rest, zero_reset, code, param, detach, impl = ctx.meta
        d, th, vr, *state = ctx.saved_tensors  # state: (x, checkpoints) on the CPU, (v, v0) on CUDA
        N = d.shape[0]
        dt = d.dtype
        has_gv = g_v is not None and g_v.numel() > 0
        gs = d.new_zeros(1, N) if g_s is None else _grad_rows(g_s, T, N, dt)
        gv = _grad_rows(g_v, T, N, dt) if has_gv else d.new_zeros(1, N)
        gl = d.new_zeros(N) if g_last is None else g_last.detach().to(dt).reshape(N).contiguous()
        gx = _empty((T, N), d)
        gd, gth, gvr, gv0 = (d.new_empty(N) for _ in range(4))
        if impl == "numba":
            from ._kernels import lif_numba as K

            xf, ck = state
            ec, fast = _exp_args(dt)
            consts = _scalars(dt, (1.0, param, param / 2.0, math.pi / 2.0 * param, 1.0 / param))
            pgrad = any(ctx.needs_input_grad[1:4])  # decay, threshold, v_reset
            args = _numpy(xf, ck, gs, gv, gl, d, th, vr)
            flags = (bool(zero_reset), bool(detach), int(code), consts, ec, fast, pgrad, has_gv)
            outs = _numpy(gx, gd, gth, gvr, gv0)
            _run_cpu(N, T, lambda lo, hi, bs: K.lif_backward(*args, *flags, lo, hi, bs, KC.SEGMENT, *outs),
                     _LIF_BACKWARD_BLOCK)
        else:
            from ._kernels import lif_triton as K

            v, v0v = state
            K.backward(v, gs, gv, gl, d, th, vr, v0v, bool(zero_reset), bool(detach), int(code), float(param),
                       gx, gd, gth, gvr, gv0)
        grads = _param_grads(ctx, (gd, gth, gvr, gv0), rest)
        return (gx.view((T,) + tuple(rest)), *grads, None, None, None, None, None, None)


def lif_backend(x: Tensor, decay: Tensor, threshold: Tensor, v_reset: Tensor, v0: Tensor | None, *,
                reset: str, surrogate: _surrogate.Surrogate, detach_reset: bool, need_membrane: bool = True):
    """The ``"fused"`` backend of :func:`spikescan.ops.lif.lif` (its backend contract).

    Receives validated arguments, returns ``(s, v, v_post_last)`` in ``x.dtype``.  With
    ``need_membrane=False`` and nothing requiring a gradient (inference), the membrane is not
    written to memory (one write pass less) and ``v`` is returned empty.
    """
    code, param = KC.surrogate_constants(surrogate.kind, surrogate.param)
    impl = _impl_for(x)
    dt = _compute_dtype(x.dtype)
    s, v, last = _LIFFused.apply(x.to(dt), decay, threshold, v_reset, v0, reset == "zero", code, param,
                                 bool(detach_reset), bool(need_membrane), impl)
    return s.to(x.dtype), v.to(x.dtype), last.to(x.dtype)


def lif_fused(x: Tensor, decay, threshold=1.0, *, reset: str = "subtract", v_reset=0.0, surrogate=None,
              v0=None, detach_reset: bool = False, return_membrane: bool = False, return_state: bool = False,
              check: bool | None = None):
    """:func:`spikescan.ops.lif.lif` computed by the time-fused kernel (same arguments but ``backend``).

    One kernel pass over ``T`` forward, one in reverse time backward.  For the backward the CPU
    kernel keeps the input and a state checkpoint every 32 steps (0.125 bytes per (t, neuron)
    beyond the input in float32) and recomputes the membranes segment by segment; the CUDA
    kernel keeps the pre-reset membrane (4 bytes).  The forward writes nothing but the spikes
    (and the final state) unless the membrane is asked for.  All built-in surrogates (by
    ``kind`` and ``param``), both resets, per-neuron ``decay``/``threshold``/``v_reset``/``v0``
    with gradients, ``detach_reset``.
    """
    from .lif import _RESETS, _param, _check_v_reset

    check_time_first(x, "x")
    _impl_for(x)  # unsupported device: fail before the parameter checks touch it
    check_finite(x, "x", check)
    check_choice(reset, "reset", _RESETS)
    decay = _param(decay, "decay", x, low=0.0, high=1.0)
    threshold = _param(threshold, "threshold", x, low=0.0, low_inclusive=False)
    v_reset_t = _param(v_reset, "v_reset", x)
    _check_v_reset(reset, v_reset)  # after _param: v_reset is a number or a floating tensor
    v_reset = v_reset_t
    if v0 is not None:
        v0 = _param(v0, "v0", x)
    surrogate = _surrogate.get(surrogate)
    s, v, state = lif_backend(x, decay, threshold, v_reset, v0, reset=reset, surrogate=surrogate,
                              detach_reset=bool(detach_reset), need_membrane=bool(return_membrane))
    if not (return_membrane or return_state):
        return s
    out = (s,)
    if return_membrane:
        out += (v,)
    if return_state:
        out += (state,)
    return out


# --------------------------------------------------------------------------------------------
# leaky integration
# --------------------------------------------------------------------------------------------


class _ScanFused(torch.autograd.Function):
    """``u[t] = decay * u[t-1] + scale * x[t]``; inputs validated, ``x`` in a kernel dtype."""

    @staticmethod
    def forward(ctx, x, decay, scale, v0, impl: str):
        T, rest = x.shape[0], x.shape[1:]
        N = math.prod(rest)
        _check_n(N)
        dt = x.dtype
        xf = _flat(x, T, N, dt)
        d = _vec(decay, rest, N, dt)
        c = xf.new_ones(N) if scale is None else _vec(scale, rest, N, dt)
        v0v = xf.new_zeros(N) if v0 is None else _vec(v0, rest, N, dt)
        u = _empty((T, N), xf)
        if impl == "numba":
            from ._kernels import scan_numba as K

            args = _numpy(xf, d, c, v0v)
            un = u.numpy()
            _run_cpu(N, T, lambda lo, hi, bs: K.scan_forward(*args, lo, hi, bs, un))
        else:
            from ._kernels import scan_triton as K

            K.forward(xf, d, c, v0v, u)
        need_d = ctx.needs_input_grad[1]
        need_c = scale is not None and ctx.needs_input_grad[2]
        ctx.save_for_backward(u if need_d else None, xf if need_c else None, d, c, v0v)
        ctx.meta = (T, rest, impl)
        ctx.param_meta = _meta(decay, scale, v0)
        return u.view(x.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_u):
        u, xf, d, c, v0v = ctx.saved_tensors
        T, rest, impl = ctx.meta
        N = d.shape[0]
        dt = d.dtype
        gu = _grad_rows(g_u, T, N, dt)
        u_in = d.new_zeros(1, N) if u is None else u
        x_in = d.new_zeros(1, N) if xf is None else xf
        gx = _empty((T, N), d)
        gd, gc, gv0 = (d.new_empty(N) for _ in range(3))
        if impl == "numba":
            from ._kernels import scan_numba as K

            args = _numpy(gu, u_in, x_in, d, c, v0v)
            outs = _numpy(gx, gd, gc, gv0)
            _run_cpu(N, T, lambda lo, hi, bs: K.scan_backward(*args, lo, hi, bs, *outs))
        else:
            from ._kernels import scan_triton as K

            K.backward(gu, u_in, x_in, d, c, v0v, gx, gd, gc, gv0)
        grads = _param_grads(ctx, (gd, gc, gv0), rest)
        return (gx.view((T,) + tuple(rest)), *grads, None)


def leaky_integrate_backend(x: Tensor, decay: Tensor, scale: Tensor | None, v0: Tensor | None) -> Tensor:
    """The ``"fused"`` path of :func:`spikescan.ops.scan.leaky_integrate`, after its validation.

    ``decay``/``scale``/``v0``: tensors in the compute dtype aligned to ``x.shape[1:]`` (as
    ``scan._param`` returns them), ``scale=None`` for 1, ``v0=None`` for 0.  Forward and
    backward one pass each (B*F = 4096, forward + backward: T = 1000 3.7 ms, T = 10 000 34 ms,
    against 13 / 297 ms for :func:`scan_kernel` under ``scan``'s shared reverse-scan backward).
    """
    dt = _compute_dtype(x.dtype)
    return _ScanFused.apply(x.to(dt), decay, scale, v0, _impl_for(x)).to(x.dtype)


def scan_kernel(y: Tensor, decay: Tensor, v0: Tensor | None, chunk_size=None) -> Tensor:
    """A forward kernel with the contract of :data:`spikescan.ops.scan._BACKENDS` (fused, one pass).

    Registered there it gets the shared reverse-scan backward of ``scan.py`` (two extra flips);
    :func:`leaky_integrate_fused` has its own single-pass backward instead.
    """
    dt = _compute_dtype(y.dtype)
    with torch.no_grad():
        return _ScanFused.apply(y.to(dt), decay, None, v0, _impl_for(y)).to(y.dtype)


def leaky_integrate_fused(x, decay, *, scale=1.0, v0=None, chunk_size=None, check: bool | None = None) -> Tensor:
    """:func:`spikescan.ops.scan.leaky_integrate` by the time-fused kernel (same arguments but ``backend``).

    ``u[t] = decay * u[t-1] + scale * x[t]``, ``u[-1] = v0``: one pass forward; the backward is
    one reverse-time pass computing ``g_rev[t] = grad_u[t] + decay * g_rev[t+1]``,
    ``grad_x = scale * g_rev``, ``grad_decay = sum_t g_rev[t] u[t-1]``,
    ``grad_scale = sum_t g_rev[t] x[t]``, ``grad_v0 = decay * g_rev[0]``, each summed to the
    parameter's shape.  ``chunk_size`` is accepted and ignored (no chunks).
    """
    from .scan import _compute_dtype as _scan_dtype
    from .scan import _param

    check_time_first(x, "x")
    _impl_for(x)  # unsupported device: fail before the parameter checks touch it
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or a positive int, got {chunk_size!r}")
    check_finite(x, "x", check)
    compute = _scan_dtype(x.dtype)
    d = _param(decay, "decay", x, compute, low=0.0, high=1.0)
    unit_scale = isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale == 1
    c = None if unit_scale else _param(scale, "scale", x, compute)
    v = None if v0 is None else _param(v0, "v0", x, compute)
    return leaky_integrate_backend(x, d, c, v)


# --------------------------------------------------------------------------------------------
# SPSN step
# --------------------------------------------------------------------------------------------


def _keys(seed: int, T: int, device: torch.device) -> Tensor:
    return torch.from_numpy(KC.step_keys(seed, T)).to(device)


def spsn_uniforms(seed: int, shape, *, dtype: torch.dtype = torch.float32, device="cpu") -> Tensor:
    """The uniforms ``U[t, ...]`` in (0, 1) that :func:`fused_spsn` draws for ``seed`` and ``shape``.

    Materialised by the same kernel code (numba on CPU, Triton on CUDA) for tests and for
    reproducing a sample with the unfused ops: ``sigmoid_bernoulli(u, noise=U)`` and
    ``gumbel_spike(u, noise=torch.logit(U))`` see the same draws as the fused step.
    """
    seed = KC.normalize_seed(seed)
    shape = torch.Size(shape)
    if len(shape) < 1 or shape[0] < 1:
        raise ValueError(f"shape must be time-first [T, ...] with T >= 1, got {tuple(shape)}")
    if dtype not in _KERNEL_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    device = torch.device(device)
    T, N = shape[0], math.prod(shape[1:])
    _check_n(N)
    out = torch.empty(T, N, dtype=dtype, device=device)
    keys = _keys(seed, T, device)
    if _impl_for(out) == "numba":
        from ._kernels import spsn_numba as K

        kn, on = keys.numpy().view("uint32"), out.numpy()
        _run_cpu(N, T, lambda lo, hi, bs: K.fill_uniforms(kn, lo, hi, on))
    else:
        from ._kernels import spsn_triton as K

        K.uniforms(keys, out)
    return out.view(shape)


# Neurons per block of the CPU SPSN kernels: the backward's segment buffers (2 x 33 x block
# elements) must stay in L2.  Measured (T=4000, N=4096, ns per element): blocks of 512: forward
# 1.84, backward 2.27; 1024: 1.68, 1.98; 2048: 1.63, 1.93.
_SPSN_BLOCK = 2048


class _SPSNFused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, beta, seed: int, gs_mode: bool, tau: float, c: float, impl: str):
        T, rest = x.shape[0], x.shape[1:]
        N = math.prod(rest)
        _check_n(N)
        dt = x.dtype
        xf = _flat(x, T, N, dt)
        a = _vec(alpha, rest, N, dt)
        b = _vec(beta, rest, N, dt)
        keys = _keys(seed, T, x.device)
        s = _empty((T, N), xf)
        if impl == "numba":
            from ._kernels import spsn_numba as K

            seg = KC.SEGMENT
            nseg = -(-T // seg)
            ck_i = xf.new_empty(nseg, N)
            ck_u = xf.new_empty(nseg, N)
            consts = _scalars(dt, (1.0, 2.0**-24, c, tau, c / tau))
            args = _numpy(xf, a, b) + (keys.numpy().view("uint32"), bool(gs_mode), consts, *_exp_args(dt))
            outs = _numpy(s, ck_i, ck_u)
            _run_cpu(N, T, lambda lo, hi, bs: K.spsn_forward(*args, lo, hi, bs, seg, *outs), _SPSN_BLOCK)
            saved = (xf, a, b, keys, ck_i, ck_u)
        else:
            from ._kernels import spsn_triton as K

            i_all = _empty((T, N), xf)
            u_all = _empty((T, N), xf)
            K.forward(xf, a, b, keys, bool(gs_mode), float(c), s, i_all, u_all)
            saved = (None, a, b, keys, i_all, u_all)
        ctx.save_for_backward(*saved)
        ctx.meta = (T, rest, bool(gs_mode), float(tau), float(c), impl)
        ctx.param_meta = _meta(alpha, beta)
        return s.view(x.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_s):
        xf, a, b, keys, st_i, st_u = ctx.saved_tensors
        T, rest, gs_mode, tau, c, impl = ctx.meta
        N = a.shape[0]
        dt = a.dtype
        gs = _grad_rows(g_s, T, N, dt)
        gx = _empty((T, N), a)
        ga, gb = a.new_empty(N), a.new_empty(N)
        if impl == "numba":
            from ._kernels import spsn_numba as K

            consts = _scalars(dt, (1.0, 2.0**-24, c, tau, c / tau))
            pgrad = any(ctx.needs_input_grad[1:3])  # alpha, beta
            args = _numpy(xf, gs, a, b) + (keys.numpy().view("uint32"), gs_mode, consts, *_exp_args(dt), pgrad)
            ck = _numpy(st_i, st_u)
            outs = _numpy(gx, ga, gb)
            _run_cpu(N, T, lambda lo, hi, bs: K.spsn_backward(*args, lo, hi, bs, KC.SEGMENT, *ck, *outs),
                     _SPSN_BLOCK)
        else:
            from ._kernels import spsn_triton as K

            K.backward(xf, gs, a, b, keys, gs_mode, c, tau, st_i, st_u, gx, ga, gb)
        grads = _param_grads(ctx, (ga, gb), rest)
        return (gx.view((T,) + tuple(rest)), *grads, None, None, None, None, None)


_FIRINGS = ("sb", "gs")


def fused_spsn(x: Tensor, alpha, beta, *, seed: int | None = None, firing: str = "sb", tau: float = 1.0,
               logit_scale: float = 1.0, check: bool | None = None) -> Tensor:
    """One SPSN layer step over the whole sequence in one fused kernel (SPSN eq. 5-7, 17-19).

    Computes, with no intermediate ``[T, ...]`` tensor and no stored random numbers::

        i[t] = alpha * i[t-1] + x[t]                       i[-1] = 0
        u[t] = beta * u[t-1] + (1 - beta) * i[t]           u[-1] = 0
        "sb":  s[t] = U[t] < sigmoid(u[t])                 backward: grad_s * p^2 (1 - p)
        "gs":  s[t] = logit_scale * u[t] + logit(U[t]) > 0 backward: straight-through,
               grad_s * (logit_scale / tau) * q (1 - q), q = sigmoid((logit_scale u + logit U) / tau)

    i.e. ``sigmoid_bernoulli`` / ``gumbel_spike`` of ``leaky_integrate(leaky_integrate(x, alpha),
    beta, scale=1 - beta)``, where ``U[t]`` are counter-based uniforms: a hash of
    ``(seed, t, neuron)`` (see :func:`spsn_uniforms`, which materialises them).

    Args:
        x: input current ``[T, *rest]``, floating (half types computed in float32).
        alpha, beta: synaptic and membrane decay in ``[0, 1]``, floats or tensors broadcastable
            to ``x.shape[1:]``; differentiable.
        seed: int; ``None`` draws one from torch's global generator (so ``torch.manual_seed``
            makes the call reproducible).  The same seed, shape and inputs give the same spikes.
        firing: ``"sb"`` (Sigmoid-Bernoulli) or ``"gs"`` (binary Gumbel-softmax).
        tau, logit_scale: Gumbel-softmax temperature and logit scale (see ``gumbel_spike``).
        check: scan ``x`` for NaN/Inf (default: only in debug mode).

    Returns:
        spikes (0/1) with the shape and dtype of ``x``; gradients flow to ``x``, ``alpha``, ``beta``.
    """
    from .firing import _check_positive
    from .scan import _param

    check_time_first(x, "x")
    impl = _impl_for(x)
    check_finite(x, "x", check)
    check_choice(firing, "firing", _FIRINGS)
    tau = _check_positive(tau, "tau")
    logit_scale = _check_positive(logit_scale, "logit_scale")
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    seed = KC.normalize_seed(seed)
    compute = _compute_dtype(x.dtype)
    a = _param(alpha, "alpha", x, compute, low=0.0, high=1.0)
    b = _param(beta, "beta", x, compute, low=0.0, high=1.0)
    s = _SPSNFused.apply(x.to(compute), a, b, seed, firing == "gs", tau, logit_scale, impl)
    return s.to(x.dtype)
