"""Serving under TP: TP rank 0 runs the engine, the other TP ranks replay its steps.

Only TP rank 0 schedules (it holds the API and the queue, so arrivals need not be deterministic).
`StepLeader` wraps its model's `forward_step`: before each step it broadcasts over the TP group the
step's token ids, positions, per request (slice, request key) and the keys of requests whose
`SequenceKV` was dropped since the last step (finished or preempted: the engine sets `req.seq` to
None, and a `weakref.finalize` queues the key). `follow` on the other ranks receives that, frees the
dropped requests' blocks in its own pool, creates a `SequenceKV` for new keys and runs the same
`forward_step`; the collectives inside the sharded model then pair up. A header with -1 tokens
stops the followers (`StepLeader.stop`).

Messages are int64 tensors on the model's device (NCCL needs GPU tensors): a 3-element header
(tokens, requests, releases), then ids, positions, (start, stop, key) per request, released keys.
"""

from __future__ import annotations

import weakref

import torch
import torch.distributed as dist

from .kvcache import KVBlockPool, SequenceKV
from .model import StepOutput, Transformer
from .ops import AttentionOps
from .parallel import ParallelGroups

_HEADER = 3


def _tp_source(groups: ParallelGroups) -> tuple[dist.ProcessGroup, int]:
    if groups.tp_group is None:
        msg = "leader/follower stepping needs a TP group (tp_size > 1)"
        raise ValueError(msg)
    return groups.tp_group, groups.rank - groups.tp_rank


class StepLeader:
    """Broadcasts every `forward_step` of `model` to its TP followers (install on TP rank 0).

    Replaces `model.forward_step` on the instance, so an unchanged `Engine` drives the followers.

    Raises:
        ValueError: not TP rank 0, or no TP group.
    """

    def __init__(self, model: Transformer, groups: ParallelGroups) -> None:
        self.group, self.src = _tp_source(groups)
        if groups.tp_rank != 0:
            msg = f"StepLeader belongs on TP rank 0, this is TP rank {groups.tp_rank}"
            raise ValueError(msg)
        self.device = next(model.parameters()).device
        self._forward = model.forward_step
        self._keys: dict[int, int] = {}
        self._next_key = 0
        self._released: list[int] = []
        self.steps = 0
        model.forward_step = self.forward_step  # type: ignore[method-assign]

    def _key(self, seq: SequenceKV) -> int:
        key = self._keys.get(id(seq))
        if key is None:
            key = self._next_key
            self._next_key += 1
            self._keys[id(seq)] = key
            weakref.finalize(seq, self._dropped, id(seq), key)
        return key

    def _dropped(self, seq_id: int, key: int) -> None:
        self._keys.pop(seq_id, None)
        self._released.append(key)

    def _send(self, n_tokens: int, table: list[int], released: list[int]) -> None:
        header = [n_tokens, len(table) // 3, len(released)]
        dist.broadcast(torch.tensor(header, device=self.device), self.src, group=self.group)

    def forward_step(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        seqs: list[tuple[slice, SequenceKV]],
        ops: AttentionOps | None = None,
    ) -> StepOutput:
        """Broadcast the step, then run it here (same contract as `Transformer.forward_step`)."""
        table = [v for sl, seq in seqs for v in (sl.start, sl.stop, self._key(seq))]
        released, self._released = self._released, []
        self._send(input_ids.shape[0], table, released)
        payload = torch.cat(
            (
                input_ids.to(self.device, torch.int64),
                positions.to(self.device, torch.int64),
                torch.tensor(table + released, dtype=torch.int64, device=self.device),
            )
        )
        dist.broadcast(payload, self.src, group=self.group)
        self.steps += 1
        return self._forward(input_ids, positions, seqs, ops)

    def stop(self) -> None:
        """Tell the followers to return."""
        self._send(-1, [], [])


def follow(
    model: Transformer, groups: ParallelGroups, pool: KVBlockPool, ops: AttentionOps | None = None
) -> int:
    """Replay TP rank 0's steps on this rank until it stops; return the number of steps.

    `pool` must have at least as many blocks as the leader's (same block size).

    Raises:
        ValueError: no TP group.
        MemoryError: this rank's pool is smaller than the leader's.
    """
    group, src = _tp_source(groups)
    device = next(model.parameters()).device
    live: dict[int, SequenceKV] = {}
    steps = 0
    while True:
        header = torch.empty(_HEADER, dtype=torch.int64, device=device)
        dist.broadcast(header, src, group=group)
        n_tok, n_seq, n_rel = header.tolist()
        if n_tok < 0:
            return steps
        payload = torch.empty(2 * n_tok + 3 * n_seq + n_rel, dtype=torch.int64, device=device)
        dist.broadcast(payload, src, group=group)
        ids, pos = payload[:n_tok], payload[n_tok : 2 * n_tok]
        rest = payload[2 * n_tok :].tolist()
        table, released = rest[: 3 * n_seq], rest[3 * n_seq :]
        for key in released:
            seq = live.pop(key, None)
            if seq is not None:
                seq.release()
        batch = []
        for i in range(n_seq):
            start, stop, key = table[3 * i : 3 * i + 3]
            if key not in live:
                live[key] = SequenceKV(pool)
            batch.append((slice(start, stop), live[key]))
        with torch.inference_mode():
            model.forward_step(ids, pos, batch, ops)
        steps += 1
