"""Small shared pieces of the distributed layer: group queries and the peer-failure error.

Every collective and point-to-point exchange of :mod:`spikescan.distributed` runs inside
:func:`guard`, so that a dead or stuck peer surfaces as one :class:`PeerFailure` naming this
rank and the exchange, instead of a bare transport message (gloo's ``Connection closed by
peer``) or a hang.  The hang itself is prevented by the process group's ``timeout``: gloo
fails a collective or ``recv`` that waits longer than that.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch.distributed as dist

__all__ = ["PeerFailure", "guard", "rank_of", "world_of", "global_rank"]


class PeerFailure(RuntimeError):
    """A collective or point-to-point exchange failed: a peer rank died, or did not answer in time."""


def _require_initialized() -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("torch.distributed is not initialized: call spikescan.distributed.init_from_env() "
                           "(under torchrun) or run inside spikescan.distributed.spawn()")


def rank_of(group: Optional[dist.ProcessGroup] = None) -> int:
    """This process's rank inside ``group`` (default: the world)."""
    _require_initialized()
    return dist.get_rank(group)


def world_of(group: Optional[dist.ProcessGroup] = None) -> int:
    """Number of ranks in ``group`` (default: the world)."""
    _require_initialized()
    return dist.get_world_size(group)


def global_rank(group: Optional[dist.ProcessGroup], rank: int) -> int:
    """The world rank of ``group``'s rank ``rank`` (point-to-point calls address world ranks)."""
    return rank if group is None else dist.get_global_rank(group, rank)


@contextlib.contextmanager
def guard(what: str, group: Optional[dist.ProcessGroup] = None) -> Iterator[None]:
    """Re-raise a failing exchange as :class:`PeerFailure` naming this rank and ``what``."""
    try:
        yield
    except PeerFailure:
        raise
    except RuntimeError as exc:  # gloo/NCCL errors (DistBackendError is a RuntimeError)
        try:
            me = f"rank {dist.get_rank(group)} of {dist.get_world_size(group)}"
        except Exception:  # the group itself may be broken
            me = "this rank"
        raise PeerFailure(
            f"{me}: {what} failed - a peer rank probably died or did not answer within the process "
            f"group's timeout. Transport error: {exc}") from exc
