"""Export trained networks for neuromorphic hardware: the Neuromorphic Intermediate Representation."""

from .nir import from_nir, read, to_nir, write

__all__ = ["to_nir", "from_nir", "write", "read"]
