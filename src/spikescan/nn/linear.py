"""The input layer of a spiking network: ``nn.Linear`` that runs event-driven on sparse spike input."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice
from ..ops.events import EVENT_LINEAR_BACKENDS, SpikeEvents, event_linear

__all__ = ["EventLinear", "EVENT_DENSITY_THRESHOLD"]

#: Inputs at or below this density (nonzero entries / all entries) run event-driven in
#: ``mode="auto"``.  Measured by ``spikescan bench event-linear`` (results/bench-event-linear*)
#: on the 2-core development CPU (Xeon, AVX-512, 2 threads; T=784, B=128, C=784, O=200, float32,
#: forward + weight gradient): the numba event kernel costs ~45 ms + 0.2 us per event, the dense
#: GEMM pair ~300-600 ms whatever the density, so events win 4-9x at 0.1 %, 1.3-2.2x at 1 %, tie
#: at 2 % (from events; converting a dense tensor first costs more) and lose 3-5x at 5-10 %.
#: 1 % keeps auto on the winning side for both kinds of input.
EVENT_DENSITY_THRESHOLD = 0.01

MODES = ("auto", "events", "dense")


class EventLinear(nn.Linear):
    """``y[t, b] = W x[t, b] + bias`` over time-first input, event-driven where the input is sparse.

    A drop-in ``nn.Linear`` (same parameters and state-dict keys) for the first layer of a
    network (its input is data) and for the layers after rarely firing spiking ones:

    - a :class:`~spikescan.ops.events.SpikeEvents` input runs
      :func:`~spikescan.ops.events.event_linear` (cost proportional to the events), unless
      ``mode="dense"``, or ``mode="auto"`` and its density exceeds ``density_threshold``;
    - a dense tensor ``[T, B, C]`` runs event-driven when ``mode="events"``, or with
      ``mode="auto"`` when its density is at most ``density_threshold`` (one counting pass
      decides; :data:`EVENT_DENSITY_THRESHOLD`); when it requires grad (a hidden layer's
      spikes) it gets the dense gradient ``gy W``, only the forward and the weight gradient
      being event-driven;
    - anything else (``mode="dense"``, other shapes, a dense input under ``torch.compile``) is plain
      ``F.linear``.

    ``backend`` is :func:`~spikescan.ops.events.event_linear`'s.  Outputs equal ``nn.Linear``'s
    up to float reassociation.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, mode: str = "auto",
                 density_threshold: float = EVENT_DENSITY_THRESHOLD, backend: str = "auto", device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        check_choice(mode, "mode", MODES)
        check_choice(backend, "backend", EVENT_LINEAR_BACKENDS)
        if isinstance(density_threshold, bool) or not isinstance(density_threshold, (int, float)) \
                or not 0.0 <= density_threshold <= 1.0:
            raise ValueError(f"density_threshold must be a number in [0, 1], got {density_threshold!r}")
        self.mode, self.density_threshold, self.backend = mode, float(density_threshold), backend

    def runs_events(self, x: SpikeEvents, kernel: str | None = None) -> bool:
        """Whether events ``x`` run event-driven here (not densified by ``mode`` / density); with
        ``kernel``, also whether ``backend`` allows that event kernel (``"auto"`` allows any)."""
        if self.mode == "dense" or (self.mode == "auto" and x.density > self.density_threshold):
            return False
        return kernel is None or self.backend in ("auto", kernel)

    def forward(self, x):
        if isinstance(x, SpikeEvents):
            if not self.runs_events(x):
                return F.linear(x.dense().to(self.weight.dtype), self.weight, self.bias)
            return event_linear(x, self.weight, self.bias, backend=self.backend)
        # Under torch.compile a dense input stays dense: finding the events reads the values (a
        # data-dependent shape), which the compiler cannot trace; the compiled matmul is the fast path.
        if (self.mode != "dense" and isinstance(x, torch.Tensor) and x.dim() == 3 and x.is_floating_point()
                and x.numel() and not torch.compiler.is_compiling()):
            limit = None if self.mode == "events" else self.density_threshold
            events = SpikeEvents.from_dense(x, max_density=limit)  # None: too dense (only counted)
            if events is not None:
                return event_linear(events, self.weight, self.bias, backend=self.backend,
                                    source=x if x.requires_grad else None)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode!r}, density_threshold={self.density_threshold}"
