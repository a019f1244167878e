"""`StepLeader`'s bookkeeping in one process (no collective runs): DP placement and releases."""

from __future__ import annotations

import gc

import pytest
import torch

from dsv4_runtime.reference.config import TINY
from dsv4_runtime.reference.kvcache import KVBlockPool, SequenceKV
from dsv4_runtime.reference.model import Transformer
from dsv4_runtime.reference.parallel import ParallelGroups
from dsv4_runtime.reference.parallel_follow import StepLeader


def _leader(dp: int) -> StepLeader:
    groups = ParallelGroups(
        rank=0, world_size=dp, tp_size=1, dp_size=dp, tp_rank=0, dp_rank=0, tp_group=None,
        ep_group=None,
    )  # fmt: skip
    return StepLeader(Transformer(TINY), groups)


def test_placement_fills_the_emptiest_dp_rank_and_dropped_caches_are_released() -> None:
    """Fewest live requests first, lowest DP rank on ties; a dropped cache (finished, aborted or
    preempted: the engine lets go of its `SequenceKV`) frees its place and its key is sent once."""
    leader = _leader(3)
    pool = KVBlockPool(TINY, 8)
    seqs = [SequenceKV(pool) for _ in range(4)]
    keys = [leader._key(s) for s in seqs]
    assert keys == [0, 1, 2, 3]
    assert [leader._dp_of[k] for k in keys] == [0, 1, 2, 0]
    assert leader._key(seqs[1]) == 1  # a cache keeps its key while it lives
    del seqs[1]
    gc.collect()
    assert leader._released() == [1]
    assert leader._released() == []
    assert leader._key(SequenceKV(pool)) == 4
    assert leader._dp_of[4] == 1  # the place request 1 left
    assert leader._released() == [4]  # the unnamed cache above was dropped at once
    assert leader._load == [2, 0, 1]


def test_an_empty_step_is_refused_before_anything_is_sent() -> None:
    """The Engine never steps with nothing scheduled; a caller that does gets ValueError and the
    group stays usable (no broadcast: torch.distributed is not even initialised here)."""
    leader = _leader(2)
    empty = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="at least one request"):
        leader.forward_step(empty, empty, [])
    assert leader.failure is None
    assert leader.steps == 0
