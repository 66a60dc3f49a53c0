"""spikescan: spiking neural networks trained fast by computing neuron dynamics in parallel over time.

Layers: ``spikescan.ops`` (pure functions with autograd, one file per algorithm, each with its
sequential reference), ``spikescan.nn`` (``torch.nn`` modules on top), and data / training /
benchmarks / CLI above that.  Tensors are time-first, ``[T, B, *features]``.
"""

from ._checks import debug_mode, set_debug

__version__ = "0.1.0"

__all__ = ["__version__", "debug_mode", "set_debug"]
