"""Data-parallel training and time-split execution on ``torch.distributed`` (gloo on CPU, NCCL on GPU).

- :mod:`.time_parallel`: one network's time axis split over the ranks of a process group
  (temporal-parallelization paper §3.2): exact split leaky integration / SPSN / LI with one
  collective each way, the exact LIF as a pipeline with micro-batches, and :class:`TimeSplit`
  for whole feed-forward networks.
- :mod:`.ddp`: helpers for DistributedDataParallel training under ``torchrun``.
- :mod:`.launch`: :func:`spawn`, N local gloo processes for tests and benchmarks, never hanging.
"""

from ._comm import PeerFailure
from .ddp import (all_reduce_metrics, barrier, cleanup, init_from_env, is_distributed, is_main, make_sampler,
                  wrap_model)
from .launch import RankOutcome, SpawnError, spawn
from .time_parallel import (SUPPORTED_LAYERS, TimeSplit, gather_time, leaky_integrate_split, lif_split,
                            local_segment, segment_bounds, spsn_split)

__all__ = ["PeerFailure", "RankOutcome", "SUPPORTED_LAYERS", "SpawnError", "TimeSplit", "all_reduce_metrics",
           "barrier", "cleanup", "gather_time", "init_from_env", "is_distributed", "is_main",
           "leaky_integrate_split", "lif_split", "local_segment", "make_sampler", "segment_bounds", "spawn",
           "spsn_split", "wrap_model"]
