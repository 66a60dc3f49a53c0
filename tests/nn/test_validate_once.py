"""A module's forward validates its input and parameters once: the ops it calls trust them."""

from __future__ import annotations

import pytest
import torch

from spikescan import _checks
from spikescan.nn import LI, LIF, PLIF, SPSN, SingleSpikeLIF


def _count(monkeypatch, name):
    calls = []
    real = getattr(_checks, name)
    monkeypatch.setattr(_checks, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


MODULES = {
    "LIF-learned": lambda: LIF(6, learn_tau=True, learn_threshold=True, threshold=0.3),
    "PLIF": lambda: PLIF(6, threshold=0.3),
    "LI": lambda: LI(6, learn_tau=True),
    "SPSN": lambda: SPSN(6, learn_tau=True),
    "SingleSpikeLIF": lambda: SingleSpikeLIF(6, learn_tau=True, threshold=0.3),
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_forward_checks_x_once(name, monkeypatch):
    m = MODULES[name]()
    x = torch.rand(20, 3, 6)
    layout = _count(monkeypatch, "check_float")  # the body of check_time_first
    m(x)
    assert len(layout) == 1


def test_learned_parameters_are_value_checked_once(monkeypatch):
    """LIF with learned decay and threshold: one range check (the threshold, by the module); the
    decays are in (0, 1) by construction and finite by the module's parameter check."""
    m = MODULES["LIF-learned"]()
    values = _count(monkeypatch, "_bad_mask")
    m(torch.rand(20, 3, 6))
    assert len(values) == 1


def test_the_ops_still_check_when_called_directly():
    from spikescan.ops import lif

    with pytest.raises(ValueError, match="decay must lie in"):
        lif(torch.rand(5, 2), torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="x must be time-first|at least one time step"):
        lif(torch.rand(0, 2), 0.5)


def test_a_learned_threshold_that_went_negative_is_still_an_error():
    m = MODULES["LIF-learned"]()
    with torch.no_grad():
        m.threshold[2] = -0.1
    with pytest.raises(ValueError, match="threshold must lie in"):
        m(torch.rand(20, 3, 6))


def test_trust_ends_with_the_forward():
    from spikescan._checks import _CALLER_CHECKED

    MODULES["LIF-learned"]()(torch.rand(5, 2, 6))
    assert _CALLER_CHECKED.get() is False
