"""Compiled kernels (numba on CPU, Triton on GPU), imported lazily by the ops that use them."""
