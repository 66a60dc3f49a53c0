"""A dead or stuck rank makes the others fail with a clear error instead of hanging.

Structural check, no timing assertion: the surviving ranks must REPORT a PeerFailure
themselves (status "error"); had they hung, spawn() would have had to kill them (status
"killed") once its grace period ran out.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from spikescan.distributed import SpawnError, leaky_integrate_split, lif_split, local_segment, spawn


def _killed_mid_collective(rank, world):
    x = local_segment(torch.randn(12, 2, 3))
    if rank == world - 1:
        time.sleep(1.0)  # the others are inside the all_gather by now
        os.kill(os.getpid(), signal.SIGKILL)
    leaky_integrate_split(x, 0.9)
    return "finished"


def _killed_before_sending_state(rank, world):
    x = local_segment(torch.rand(12, 2, 3))
    if rank == 0:
        time.sleep(0.5)
        os._exit(3)
    lif_split(x, 0.9, 0.5)  # rank 1 waits in recv for rank 0's final state
    return "finished"


def _stuck_rank(rank, world):
    if rank == 1:
        time.sleep(600)  # alive but never joins: only the group timeout can end rank 0's wait
    leaky_integrate_split(local_segment(torch.randn(6, 2)), 0.5)
    return "finished"


def test_killed_rank_makes_the_others_raise():
    with pytest.raises(SpawnError) as info:
        spawn(_killed_mid_collective, 3, timeout=90, pg_timeout_s=15, grace_s=25)
    ranks = info.value.ranks
    assert ranks[2].status == "died" and ranks[2].exitcode == -signal.SIGKILL
    for r in ranks[:2]:
        assert r.status == "error", r.line()
        assert "PeerFailure" in r.error and "all_gather" in r.error and f"rank {r.rank} of 3" in r.error
    assert "rank 2: died without reporting" in str(info.value)


def test_dead_pipeline_predecessor_makes_the_successor_raise():
    with pytest.raises(SpawnError) as info:
        spawn(_killed_before_sending_state, 2, timeout=90, pg_timeout_s=15, grace_s=25)
    ranks = info.value.ranks
    assert ranks[0].status == "died" and ranks[0].exitcode == 3
    assert ranks[1].status == "error", ranks[1].line()
    assert "PeerFailure" in ranks[1].error and "recv of the state from rank 0" in ranks[1].error


def test_stuck_rank_hits_the_group_timeout():
    with pytest.raises(SpawnError) as info:
        # the group timeout also bounds init_process_group: 10 s leaves room for a late start on a
        # loaded host, while rank 1 sleeps far longer than that
        spawn(_stuck_rank, 2, timeout=90, pg_timeout_s=10, grace_s=3)
    ranks = info.value.ranks
    assert ranks[0].status == "error" and "PeerFailure" in ranks[0].error, ranks[0].line()
    assert ranks[1].status == "killed"  # spawn() ended the stuck process after the grace period
