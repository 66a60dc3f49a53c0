"""Export trained networks for neuromorphic hardware: the Neuromorphic Intermediate Representation."""

from .nir import PEERS, from_nir, module_map, node_map, read, to_nir, write

__all__ = ["to_nir", "from_nir", "write", "read", "node_map", "module_map", "PEERS"]
