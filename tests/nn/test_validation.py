"""What every module does with bad or unusual input: meta tensors, devices, non-finite parameters,
empty batches, sizes, time constants and dtypes -- one rule each, tested on every module."""

import re

import numpy as np
import pytest
import torch

from spikescan.nn import IPSU, LI, LIF, PLIF, PSU, RLIF, RPSU, SPSN, MaxMembraneReadout, SingleSpikeLIF
from spikescan.nn.leaky import LIF_BACKENDS
from spikescan.nn.spsn import SPSN_BACKENDS
from spikescan.ops import psu as psu_ops
from spikescan.ops import backends

F, T = 6, 12
SCAN = ("auto", *backends("leaky_integrate"))

# name -> (factory(**backend kwarg), backends, forward kwargs that return every output)
MODULES = {
    "LIF": (lambda **k: LIF(F, threshold=0.3, **k), LIF_BACKENDS, {}),
    "LIF-learned": (lambda **k: LIF(F, threshold=0.3, learn_tau=True, learn_threshold=True, **k), LIF_BACKENDS, {}),
    "PLIF": (lambda **k: PLIF(F, threshold=0.3, learn_threshold=True, **k), LIF_BACKENDS, {}),
    "RLIF": (lambda **k: RLIF(F, threshold=0.3, learn_tau=True, learn_threshold=True, recurrent_bias=True, **k),
             (None,), {"return_membrane": True}),
    "SPSN-sb": (lambda **k: SPSN(F, learn_tau=True, **k), SPSN_BACKENDS, {}),
    "SPSN-gs": (lambda **k: SPSN(F, learn_tau=True, firing="gs", **k), SPSN_BACKENDS, {}),
    "LI": (lambda **k: LI(F, learn_tau=True, **k), SCAN, {}),
    "PSU": (lambda **k: PSU(threshold=0.3, **k), psu_ops.BACKENDS, {"return_membrane": True}),
    "PSU-alpha": (lambda **k: PSU(threshold=0.3, learn_alpha=True, **k), psu_ops.BACKENDS, {"return_membrane": True}),
    "IPSU": (lambda **k: IPSU(T, threshold=0.3, learn_alpha=True, **k), psu_ops.BACKENDS, {"return_membrane": True}),
    "RPSU": (lambda **k: RPSU(T, threshold=0.3, **k), psu_ops.BACKENDS, {"return_membrane": True}),
    "SingleSpikeLIF": (lambda **k: SingleSpikeLIF(F, threshold=0.3, learn_tau=True, **k), SCAN,
                       {"return_membrane": True}),
    "MaxMembraneReadout": (lambda **k: MaxMembraneReadout(F, learn_tau=True, **k), SCAN, {}),
}
WITH_PARAMS = [n for n in MODULES if n != "LIF" and n != "PSU"]


def make(name, backend=None):
    factory = MODULES[name][0]
    m = factory() if backend is None else factory(backend=backend)
    if isinstance(m, SPSN):
        m.generator = torch.Generator().manual_seed(0)
    return m


def outputs(out):
    return out if isinstance(out, tuple) else (out,)


def x_for(shape=(T, 3, F), dtype=torch.float32, seed=0):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5).to(dtype)


# ---- meta tensors and devices (7a, 8) ----------------------------------------------------------


@pytest.mark.parametrize("name", WITH_PARAMS)
def test_meta_parameters_are_a_clear_error(name):
    """Before: RLIF gave a different spike count each call, PLIF an obscure torch device error."""
    m = make(name).to("meta")
    with pytest.raises(ValueError, match=rf"{type(m).__name__}'s parameters are on meta but x is on cpu"):
        m(x_for())


@pytest.mark.parametrize("name", MODULES)
def test_meta_input_is_a_clear_error(name):
    """Before: "Tensor.item() cannot be called on meta tensors" (or a device message)."""
    with pytest.raises(ValueError, match=r"x is a meta tensor \(no data\)"):
        make(name)(x_for().to("meta"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for a second real device")
@pytest.mark.parametrize("name", WITH_PARAMS)
def test_parameters_on_another_device_name_both_devices(name):
    m = make(name).cuda()
    with pytest.raises(ValueError, match=r"parameters are on cuda:0 but x is on cpu"):
        m(x_for())


def test_parameters_and_input_on_different_devices_name_both():
    """The device check itself (CPU-only machines have no second real device: x on meta here)."""
    from spikescan._checks import check_module_tensors

    with pytest.raises(ValueError, match=r"LIF's parameters are on cpu but x is on meta \(mem.log_tau\)"):
        check_module_tensors(LIF(4, learn_tau=True), torch.empty(3, 2, 4, device="meta"))


# ---- non-finite parameters (7b) -----------------------------------------------------------------


def _param_cases():
    for name in WITH_PARAMS:
        for pname, _ in make(name).named_parameters():
            for bad in (float("nan"), float("inf")):
                yield name, pname, bad


@pytest.mark.parametrize("name, pname, bad", list(_param_cases()))
def test_non_finite_parameter_is_rejected_by_name(name, pname, bad):
    """Before: IPSU/RPSU (weight, bias, alpha) and RLIF (recurrent weight, decay) fired spikes from
    NaN; log_tau = +-inf gives a finite decay that no op below could notice."""
    m = make(name)
    p = dict(m.named_parameters())[pname]
    with torch.no_grad():
        p.view(-1)[0] = bad
    with pytest.raises(ValueError, match=rf"{type(m).__name__} parameter {pname} must be finite"):
        m(x_for())


def test_parameter_check_costs_one_host_sync(monkeypatch):
    """All parameters of a module are checked with one device-to-host transfer, not one each."""
    from spikescan._checks import check_module_tensors

    m = make("RLIF")  # five parameters
    x = x_for()
    syncs = []
    for attr in ("__bool__", "item", "tolist"):
        real = getattr(torch.Tensor, attr)
        monkeypatch.setattr(torch.Tensor, attr, lambda self, *a, _real=real, **k: syncs.append(1) or _real(self, *a, **k))
    check_module_tensors(m, x)
    assert len(syncs) == 1


# ---- empty batches (8) ----------------------------------------------------------------------------


def _backend_cases():
    for name, (_, backends, _) in MODULES.items():
        for backend in backends:
            yield name, backend


@pytest.mark.parametrize("shape", [(T, 0, F), (T, 2, 0, F)])
@pytest.mark.parametrize("name, backend", list(_backend_cases()))
def test_empty_batch_gives_empty_outputs_and_zero_parameter_gradients(name, backend, shape):
    """Before: SPSN's fused step and the fused ops raised "range() arg 3 must not be zero"."""
    m = make(name, backend)
    x = x_for(shape).requires_grad_()
    outs = outputs(m(x, **MODULES[name][2]))
    readout = isinstance(m, MaxMembraneReadout)
    for o in outs:
        assert o.shape == (shape[1:] if readout else shape) and o.dtype == x.dtype
    sum(o.sum() for o in outs).backward()
    assert x.grad is not None and x.grad.shape == x.shape
    for pname, p in m.named_parameters():  # each gradient is a sum over no sample
        assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p)), pname


# ---- sizes (8) -------------------------------------------------------------------------------------

SIZED = {"LIF": LIF, "PLIF": PLIF, "RLIF": RLIF, "SPSN": SPSN, "LI": LI, "SingleSpikeLIF": SingleSpikeLIF,
         "MaxMembraneReadout": MaxMembraneReadout, "IPSU": IPSU, "RPSU": RPSU}


@pytest.mark.parametrize("cls", SIZED.values(), ids=SIZED.keys())
def test_size_must_be_a_positive_int(cls):
    """Before: LIF(2.5) silently had 2 features and LIF(-3) was accepted."""
    what = r"T \(number of time steps\)" if cls in (IPSU, RPSU) else "features"
    for bad in (2.5, 8.0, True, "8", None):
        with pytest.raises(TypeError, match=rf"{what} must be a positive int, got"):
            cls(bad)
    for bad in (0, -3):
        with pytest.raises(ValueError, match=rf"{what} must be a positive int \(>= 1\), got {bad}"):
            cls(bad)
    size = cls(np.int64(4)).T if cls in (IPSU, RPSU) else cls(np.int64(4)).features
    assert size == 4 and type(size) is int


@pytest.mark.parametrize("cls", [LIF, PLIF, RLIF])
def test_input_scale_is_checked_at_construction(cls):
    """Before: LIF(4, input_scale="none") failed at the first forward, in float()."""
    for bad in ("none", True, float("nan"), None):
        with pytest.raises(ValueError, match="input_scale must be 'one_minus_decay' or a finite number"):
            cls(4, input_scale=bad)
    assert cls(4, input_scale=0.5)(x_for((3, 2, 4))).shape == (3, 2, 4)


# ---- time constants (8) ----------------------------------------------------------------------------

TAUS = [(LIF, "tau_mem"), (LIF, "tau_syn"), (PLIF, "tau_mem"), (PLIF, "tau_syn"), (SPSN, "tau_mem"),
        (SPSN, "tau_syn"), (LI, "tau_mem"), (LI, "tau_syn"), (RLIF, "tau_mem"), (RLIF, "tau_syn"),
        (SingleSpikeLIF, "tau"), (MaxMembraneReadout, "tau")]


@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("cls, tau_name", TAUS, ids=[f"{c.__name__}-{n}" for c, n in TAUS])
def test_time_constant_whose_decay_rounds_to_0_or_1_is_rejected(cls, tau_name, learn):
    """Before: PLIF(tau_mem=1e-12) "math domain error", PLIF(tau_mem=1e20) ZeroDivisionError, the
    others a decay of exactly 0 or 1.  With dt = 1e-3 the usable range is about (1.342e-06, 1.801e+13)."""
    kw = {"learn_tau": True} if learn else {}
    for tau, effect in ((1e-12, "exactly 0"), (1e20, "exactly 1")):
        with pytest.raises(ValueError, match=rf"{tau_name}={re.escape(repr(tau))} with dt=0.001 .* {effect} .*"
                                             rf"use about 1.342e-06 < {tau_name} < 1.801e\+13 seconds"):
            cls(4, **{tau_name: tau}, **kw)
    for bad in (0.0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match=rf"{tau_name} must be a positive finite number"):
            cls(4, **{tau_name: bad}, **kw)


@pytest.mark.parametrize("tau", [1e-3 / 745.0, 1e-3 * 1e16])
def test_time_constants_at_the_edges_of_the_range_work(tau):
    """Just inside the range the decay is in (0, 1) in float64 and PLIF's logit is finite."""
    plif = PLIF(4, tau_mem=tau)
    assert torch.isfinite(plif.mem.w).all()
    assert 0.0 < LIF(4, tau_mem=tau).mem() < 1.0
    assert plif(x_for((5, 2, 4))).shape == (5, 2, 4)


def test_dt_is_checked_too():
    with pytest.raises(ValueError, match="dt must be a positive finite number"):
        LIF(4, dt=0.0)
    with pytest.raises(ValueError, match=r"tau_mem=0.02 with dt=100.0 .* exactly 0"):
        LIF(4, tau_syn=None, dt=100.0)


# ---- dtypes (10) -------------------------------------------------------------------------------------

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", MODULES)
def test_output_dtype_is_the_input_dtype_and_half_computes_in_float32(name, dtype):
    """The rule of spikescan.nn: every output in x.dtype, computed in float32 for half inputs.

    Before: PLIF (and LIF with a learned tau) returned float32 for float16/bfloat16 input.  The
    half result must equal the float32 computation on the same (half-rounded) values, rounded
    once at the end: bit for bit, since it is the same float32 arithmetic."""
    x = x_for(dtype=dtype).requires_grad_()
    kw = MODULES[name][2]
    m = make(name)
    outs = outputs(m(x, **kw))
    assert all(o.dtype == dtype for o in outs)
    sum(o.float().sum() for o in outs).backward()
    assert x.grad.dtype == dtype
    if dtype in (torch.float16, torch.bfloat16):
        ref = outputs(make_like(name, m)(x.detach().float(), **kw))
        got = outputs(make_like(name, m)(x.detach(), **kw))
        for a, b in zip(got, ref):
            assert torch.equal(a, b.to(dtype))
        assert sum(float(o.detach().float().abs().sum()) for o in ref) > 0  # not a vacuous comparison


def make_like(name, m):
    """A fresh module with ``m``'s parameters (and a freshly seeded generator for SPSN)."""
    twin = make(name)
    twin.load_state_dict(m.state_dict())
    return twin


@pytest.mark.parametrize("name", MODULES)
def test_float64_parameters_keep_the_float32_input_dtype(name):
    """Parameters in another dtype than x do not change the output dtype."""
    m = make_like(name, make(name)).double()
    x = x_for().requires_grad_()
    outs = outputs(m(x, **MODULES[name][2]))
    assert all(o.dtype == torch.float32 for o in outs)
    sum(o.sum() for o in outs).backward()
    assert x.grad.dtype == torch.float32
