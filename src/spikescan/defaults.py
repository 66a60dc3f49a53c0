"""The one default set of spikescan's LIF family and leaky integrator, shared by every layer.

``spikescan.ops.lif``, ``spikescan.ops.leaky_integrate``, ``spikescan.nn.LIF`` / ``PLIF`` /
``RLIF`` / ``LI`` and their JAX twins (``spikescan.jax.lif``, ``spikescan.jax.nn.LIF`` /
``PLIF`` / ``LI``) take their defaults from here, so that with defaults::

    nn.LIF(n)(x)  ==  ops.lif(x, exp(-DT / TAU_MEM))           bit for bit
    nn.LI(n)(x)   ==  ops.leaky_integrate(x, exp(-DT / TAU_MEM))

The set, with ``b = exp(-dt/tau_mem) = exp(-1/20) = 0.951`` per step::

    v[t]  = b v'[t-1] + x[t]                  no synaptic stage, input not scaled
    s[t]  = H(v[t] - 1)                       surrogate 1 / (25 |v - 1| + 1)^2 (FastSigmoid(25))
    v'[t] = v[t] (1 - s[t])                   reset to 0, the spike not detached in the reset

Why these values: they are the plain discrete LIF every peer can express (snnTorch
``Leaky(beta=0.951, reset_mechanism="zero", reset_delay=False)``, Norse ``LIFBoxCell`` with
``v_reset = 0``, SpikingJelly ``LIFNode(v_reset=0, decay_input=False)``), a zero reset is the
one NIR's ``LIF`` node can carry, the undetached reset is the exact gradient of the forward,
and an unscaled input makes a freshly initialised ``Linear -> LIF`` network fire: with
``nn.Linear``'s default init the currents are O(0.1-1) and the membrane settles at
``x / (1 - b) = 20.5 x``, above the threshold for a share of the neurons.  (With the
``(1 - b)`` factor of the SPSN paper's eq. 6 it settles at ``x`` and a fresh network is silent.)

Neurons that come from one paper keep that paper's formulation in ``ops`` and ``nn`` alike:
:class:`~spikescan.nn.SPSN` (a synaptic stage, the ``(1 - b)`` factor; SPSN eq. 5-6),
:class:`~spikescan.nn.SingleSpikeLIF` / :class:`~spikescan.nn.MaxMembraneReadout` (the
``(1 - b)`` factor of FastSNN eq. 2, surrogate slope 100) and the PSU family (PSU paper).
The training command states the settings of every experiment it runs explicitly
(:mod:`spikescan.train.models`, the presets), so results do not depend on these defaults.
"""

from __future__ import annotations

__all__ = ["DT", "TAU_MEM", "TAU_SYN", "THRESHOLD", "RESET", "V_RESET", "DETACH_RESET", "INPUT_SCALE",
           "SURROGATE", "SURROGATE_SLOPE", "SPSN_LIF_BASELINE"]

#: time step in seconds (the time constants are in seconds too)
DT = 1e-3
#: membrane time constant in seconds: decay ``exp(-DT / TAU_MEM) = 0.951`` per step
TAU_MEM = 0.02
#: synaptic time constant: ``None``, no synaptic stage (the membrane integrates ``x`` itself)
TAU_SYN = None
#: firing threshold
THRESHOLD = 1.0
#: reset after a spike: ``"zero"`` sets the membrane to :data:`V_RESET` (``"subtract"``: ``v - threshold``)
RESET = "zero"
#: the membrane after a spike with ``reset="zero"``
V_RESET = 0.0
#: whether the reset term's spike is detached from the gradient
DETACH_RESET = False
#: factor on the (synaptic) current entering the membrane (``"one_minus_decay"``: ``1 - b``)
INPUT_SCALE = 1.0
#: surrogate derivative of the Heaviside step: ``1 / (SURROGATE_SLOPE |v - threshold| + 1)^2``
SURROGATE = "fast_sigmoid"
SURROGATE_SLOPE = 25.0

#: not a default: the SPSN paper's LIF baseline (Table II, its authors' code), what ``spikescan
#: train`` builds for lif/plif/rlif and the ``spsn-shd-lif`` preset states -- the ``(1 - b)``
#: input factor of eq. 6, hard reset to 0 at the spike's step with the reset's spike detached,
#: surrogate ``1 / (100 |v - 1| + 1)^2`` (the synaptic stage comes from the run's ``tau_syn``)
SPSN_LIF_BASELINE = {"reset": "zero", "detach_reset": True, "surrogate": "fast_sigmoid(slope=100)",
                     "input_scale": "one_minus_decay"}
