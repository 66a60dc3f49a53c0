import math

import pytest
import torch

from spikescan import surrogate as sg
from spikescan.surrogate import ATan, FastSigmoid, Sigmoid, Triangle, get, surrogate_grad

ALL = [FastSigmoid(), FastSigmoid(slope=100.0), ATan(), ATan(alpha=0.5), Sigmoid(), Sigmoid(slope=10.0),
       Triangle(), Triangle(width=0.3)]


@pytest.mark.parametrize("s", ALL, ids=repr)
def test_grad_is_derivative_of_primitive(s):
    # central finite differences of the primitive, away from the kinks (0 and +-width)
    x = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64)
    x = x[(x.abs() > 1e-3)]
    if isinstance(s, Triangle):
        x = x[((x.abs() - s.width).abs() > 1e-3)]
    h = 1e-6
    fd = (s.primitive(x + h) - s.primitive(x - h)) / (2 * h)
    torch.testing.assert_close(s.grad(x), fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("s", ALL, ids=repr)
def test_grad_matches_pure_function_and_keeps_dtype(s):
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        x = torch.linspace(-2, 2, 33, dtype=dtype).reshape(3, 11)
        g = s.grad(x)
        assert g.shape == x.shape and g.dtype == dtype
        assert torch.equal(g, surrogate_grad(s.kind, s.param, x))
        assert bool((g >= 0).all())


def test_hand_values():
    x = torch.tensor([0.0, 0.1, -0.1, 0.5, 2.0], dtype=torch.float64)
    torch.testing.assert_close(FastSigmoid(slope=25.0).grad(x),
                               torch.tensor([1.0, 1 / 3.5**2, 1 / 3.5**2, 1 / 13.5**2, 1 / 51.0**2],
                                            dtype=torch.float64))
    # SPSN LIF baseline 1/(100|u|+1)^2
    torch.testing.assert_close(FastSigmoid(slope=100.0).grad(x), 1.0 / (100 * x.abs() + 1) ** 2)
    # ATan alpha=2: peak alpha/2 = 1; at x = 1/pi: 1 / (1 + 1) = 0.5
    a = ATan(alpha=2.0).grad(torch.tensor([0.0, 1 / math.pi, -1 / math.pi], dtype=torch.float64))
    torch.testing.assert_close(a, torch.tensor([1.0, 0.5, 0.5], dtype=torch.float64))
    # Sigmoid slope=4: peak slope/4 = 1
    torch.testing.assert_close(Sigmoid(slope=4.0).grad(torch.zeros(1, dtype=torch.float64)),
                               torch.ones(1, dtype=torch.float64))
    # Triangle width=0.5: peak 2, half at 0.25, 0 outside
    t = Triangle(width=0.5).grad(torch.tensor([0.0, 0.25, -0.25, 0.5, 0.7], dtype=torch.float64))
    torch.testing.assert_close(t, torch.tensor([2.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("s", [ATan(), Sigmoid(), Triangle(), Triangle(width=0.2)], ids=repr)
def test_normalised_surrogates_integrate_to_one(s):
    x = torch.linspace(-200, 200, 2_000_001, dtype=torch.float64)
    integral = torch.trapezoid(s.grad(x), x)
    assert abs(float(integral) - 1.0) < 1e-2
    # primitive goes from 0 to 1 like H
    ends = s.primitive(torch.tensor([-1e6, 1e6], dtype=torch.float64))
    torch.testing.assert_close(ends, torch.tensor([0.0, 1.0], dtype=torch.float64), atol=1e-5, rtol=0)


def test_kind_and_param():
    assert (FastSigmoid(100).kind, FastSigmoid(100).param) == ("fast_sigmoid", 100.0)
    assert isinstance(FastSigmoid(100).param, float)
    assert (ATan().kind, ATan().param) == ("atan", 2.0)
    assert (Sigmoid().kind, Sigmoid().param) == ("sigmoid", 4.0)
    assert (Triangle(0.5).kind, Triangle(0.5).param) == ("triangle", 0.5)
    with pytest.raises(Exception):
        FastSigmoid().slope = 3.0  # frozen
    assert FastSigmoid(25) == FastSigmoid(25.0) and hash(FastSigmoid(25)) == hash(FastSigmoid(25.0))


def test_get():
    assert get(None) == FastSigmoid(25.0) == sg.DEFAULT
    inst = ATan(alpha=3.0)
    assert get(inst) is inst
    assert get("superspike") == FastSigmoid()
    assert get("fast_sigmoid", slope=100) == FastSigmoid(100.0)
    assert get("Fast-Sigmoid") == FastSigmoid()
    assert get("atan", alpha=1.0) == ATan(1.0)
    assert get("arctan") == ATan()
    assert get("sigmoid") == Sigmoid()
    assert get("triangle", width=0.2) == Triangle(0.2)


def test_get_errors():
    with pytest.raises(ValueError, match="unknown surrogate 'relu'"):
        get("relu")
    with pytest.raises(ValueError, match="slope"):
        get("fast_sigmoid", slope=0.0)
    with pytest.raises(ValueError, match="alpha"):
        get("atan", alpha=-1.0)
    with pytest.raises(ValueError, match="width"):
        Triangle(width=float("nan"))
    with pytest.raises(ValueError, match="'slope'"):
        get("sigmoid", alpha=2.0)
    with pytest.raises(ValueError, match="instance"):
        get(ATan(), alpha=3.0)
    with pytest.raises(TypeError):
        get(3.0)
    with pytest.raises(TypeError, match="slope"):
        FastSigmoid(slope=True)


def test_surrogate_grad_errors():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="unknown surrogate"):
        surrogate_grad("gauss", 1.0, x)
    with pytest.raises(ValueError, match="param"):
        surrogate_grad("atan", 0.0, x)
    # aliases dispatch to the same formula
    assert torch.equal(surrogate_grad("superspike", 5.0, x), surrogate_grad("fast_sigmoid", 5.0, x))
