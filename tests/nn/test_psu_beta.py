"""PSU / IPSU / RPSU built from the decay per step (``beta=``) instead of ``tau`` (in steps)."""

import inspect
import math
import random

import pytest
import torch

from spikescan.nn import IPSU, PSU, RPSU
from spikescan.nn.psu import tau_from_beta
from spikescan.ops.psu import leak_coefficients

BETAS = [0.5, 0.6, 0.75, 0.8, 0.9, 0.95, 0.99, 0.1, 0.25, 0.3, 0.45] + [random.Random(0).random() for _ in range(50)]


def _build(cls, **kw):
    return cls(**kw) if cls is PSU else cls(6, **kw)


def _tolerance(beta, leak):
    # The ops take tau, so the decay is fl(1/tau) ("psu_code") or 1 - fl(1/tau) ("exact"), and not
    # every double is a rounded reciprocal: one ulp of beta at worst.  With leak="exact" and
    # beta < 0.5, k = fl(1/tau) lies in (0.5, 1), 1 - k is exact (Sterbenz) and a multiple of
    # 2**-53 = ulp(0.5), so the nearest achievable decay is within 2**-53 of beta.
    return max(math.ulp(beta), 2.0 ** -53) if leak == "exact" else math.ulp(beta)


@pytest.mark.parametrize("leak", ["exact", "psu_code"])
@pytest.mark.parametrize("beta", BETAS)
def test_effective_decay_is_beta(beta, leak):
    tau = tau_from_beta(beta, leak)
    decay, _ = leak_coefficients(tau, leak)
    assert abs(decay - beta) <= _tolerance(beta, leak)


def test_most_decays_are_exact():
    exact = sum(leak_coefficients(tau_from_beta(b, "psu_code"), "psu_code")[0] == b for b in BETAS)
    assert exact >= len(BETAS) // 2
    assert leak_coefficients(tau_from_beta(0.5), "exact")[0] == 0.5
    assert tau_from_beta(0.5) == 2.0  # the authors' tau


@pytest.mark.parametrize("cls", [PSU, IPSU, RPSU])
@pytest.mark.parametrize("leak", ["exact", "psu_code"])
def test_module_from_beta_is_the_module_from_its_tau(cls, leak):
    beta = 0.8
    m = _build(cls, beta=beta, leak=leak)
    assert abs(leak_coefficients(m.tau, leak)[0] - beta) <= _tolerance(beta, leak)
    torch.manual_seed(0)
    m = _build(cls, beta=beta, leak=leak, backend="sequential")
    torch.manual_seed(0)
    ref = _build(cls, tau=m.tau, leak=leak, backend="sequential")
    naive = 1.0 / (1.0 - beta) if leak == "exact" else 1.0 / beta
    assert math.isclose(m.tau, naive, rel_tol=1e-15)
    x = torch.rand(6, 2, 4, dtype=torch.float64) * 3
    assert torch.equal(m.double()(x), ref.double()(x))


@pytest.mark.parametrize("cls", [PSU, IPSU, RPSU])
def test_beta_and_tau_is_an_error_and_beta_keyword_only(cls):
    with pytest.raises(ValueError, match="beta=.*tau="):
        _build(cls, beta=0.9, tau=2.0)
    with pytest.raises(ValueError, match=r"beta .*\(0, 1\)"):
        _build(cls, beta=1.0)
    params = inspect.signature(cls).parameters
    assert params["beta"].kind is inspect.Parameter.KEYWORD_ONLY and params["beta"].default is None
    assert repr(params["tau"].default) == "2.0"
    assert _build(cls).tau == 2.0 and _build(cls, tau=3.0).tau == 3.0


def test_registry_builds_a_psu_from_beta():
    from spikescan.nn.registry import build_neuron

    m = build_neuron("psu", 4, beta=0.75)
    assert leak_coefficients(m.tau, m.leak)[0] == 0.75


def test_the_builder_takes_beta_and_refuses_it_with_an_explicit_tau():
    import spikescan.nn  # noqa: F401 (registers the kinds)
    from spikescan.nn.registry import build_neuron

    assert build_neuron("psu", 8, beta=0.5).tau == 2.0  # 1 - 1/tau = 0.5
    with pytest.raises(ValueError, match="not both"):
        build_neuron("psu", 8, tau=2.0, beta=0.5)
