"""Serving under TP and DP: global rank 0 runs the engine, every other rank replays its steps.

Only rank 0 schedules (it holds the API and the queue, so arrivals need not be deterministic).
`StepLeader` wraps its model's `forward_step`: before each step it broadcasts over the whole world
the step's token ids, positions, per request (slice, request key, DP rank) and the keys of requests
whose `SequenceKV` was dropped since the last step (finished or preempted: the engine sets
`req.seq` to None, and a `weakref.finalize` queues the key). Every rank (rank 0 included) then runs
the requests of its own DP rank (`ParallelGroups.dp_rank`) through its model in its own KV pool;
the collectives inside the sharded model pair up within the TP group and, with expert
parallelism, across the world. A DP rank with no request in a step runs `idle_step` (the EP
all-to-alls with 0 tokens), so DP ranks stay in lockstep as vLLM's DP+EP ranks do. With DP > 1 the
last-token logits are gathered to rank 0, which returns them to the engine in its order.

Placement (DP attention): a new request goes to the DP rank with the fewest live requests
(lowest index on ties) and stays there until it is dropped; a preempted request that comes back
gets a new key and may move.

KV accounting: rank 0's engine admits and preempts against rank 0's pool, so rank 0 also reserves
blocks for the requests it placed on other DP ranks. Its pool therefore bounds the whole DP group
(every rank has a pool of the same size: `parallel_serve` checks it), and a remote rank can never
run out first. The price: with DP the group caches no more tokens than one rank.

Messages are int64 tensors on the model's device (NCCL needs GPU tensors): a 3-element header
(tokens, requests, releases), then ids, positions, (start, stop, key, dp rank) per request,
released keys. A header with -1 tokens stops the followers (`StepLeader.stop`).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable

import torch
import torch.distributed as dist

from .kvcache import KVBlockPool, SequenceKV
from .model import StepOutput, Transformer
from .ops import AttentionOps
from .parallel import ParallelGroups
from .parallel_shard import idle_step

Forward = Callable[
    [torch.Tensor, torch.Tensor, list[tuple[slice, SequenceKV]], AttentionOps | None], StepOutput
]
"""`Transformer.forward_step`'s signature."""

_HEADER = 3
_PER_REQUEST = 4
_SRC = 0


@dataclasses.dataclass(frozen=True)
class _Step:
    """One broadcast step: the flat batch and, per request, (start, stop, key, dp rank)."""

    ids: torch.Tensor
    positions: torch.Tensor
    table: list[tuple[int, int, int, int]]

    def local(self, dp_rank: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[slice, int]]]:
        """The requests of `dp_rank`: their ids (T',), positions (T',), (slice in T', key)."""
        parts, batch, start = [], [], 0
        for lo, hi, key, dp in self.table:
            if dp == dp_rank:
                parts.append(torch.arange(lo, hi, device=self.ids.device))
                batch.append((slice(start, start + hi - lo), key))
                start += hi - lo
        if not parts:
            return self.ids[:0], self.positions[:0], []
        idx = torch.cat(parts)
        return self.ids[idx], self.positions[idx], batch

    def counts(self, dp_size: int) -> list[int]:
        """Requests per DP rank."""
        out = [0] * dp_size
        for _, _, _, dp in self.table:
            out[dp] += 1
        return out


def _run_local(
    forward: Forward,
    model: Transformer,
    groups: ParallelGroups,
    step: _Step,
    seqs: dict[int, SequenceKV],
    ops: AttentionOps | None,
) -> torch.Tensor | None:
    """Run this rank's DP share of `step`, or the idle EP step when it has none.

    `forward` is the model's unwrapped `forward_step`. Returns the share's logits (n, vocab)
    float32, or None when idle.
    """
    ids, pos, batch = step.local(groups.dp_rank)
    with torch.inference_mode():
        if not batch:
            idle_step(model)
            return None
        return forward(ids, pos, [(sl, seqs[key]) for sl, key in batch], ops).logits


def _gather_logits(
    groups: ParallelGroups,
    step: _Step,
    logits: torch.Tensor | None,
    vocab: int,
    device: torch.device,
) -> list[torch.Tensor] | None:
    """Gather every rank's (padded) logits to rank 0; rank 0 gets one (n_max, vocab) per rank."""
    n_max = max(step.counts(groups.dp_size))
    buf = torch.zeros(n_max, vocab, dtype=torch.float32, device=device)
    if logits is not None:
        buf[: logits.shape[0]] = logits
    if groups.rank == _SRC:
        parts = [torch.empty_like(buf) for _ in range(groups.world_size)]
        dist.gather(buf, parts, dst=_SRC)
        return parts
    dist.gather(buf, None, dst=_SRC)
    return None


class StepLeader:
    """Broadcasts every `forward_step` of `model` to the other ranks (install on global rank 0).

    Replaces `model.forward_step` on the instance, so an unchanged `Engine` drives the followers.
    The wrapped call returns logits (requests, vocab) float32 for all of the engine's requests, in
    its order; `hidden` holds only rank 0's own tokens' streams (the engine does not use them).

    Raises:
        ValueError: not global rank 0, or a world of one rank.
    """

    def __init__(self, model: Transformer, groups: ParallelGroups) -> None:
        if groups.rank != _SRC:
            msg = f"StepLeader belongs on global rank 0, this is rank {groups.rank}"
            raise ValueError(msg)
        if groups.world_size < 2:
            msg = "leader/follower stepping needs a world of at least 2 ranks"
            raise ValueError(msg)
        self.model = model
        self.groups = groups
        self.device = next(model.parameters()).device
        self._forward = model.forward_step
        self._keys: dict[int, int] = {}
        self._dp_of: dict[int, int] = {}
        self._load = [0] * groups.dp_size
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
            dp = min(range(self.groups.dp_size), key=lambda r: (self._load[r], r))
            self._dp_of[key] = dp
            self._load[dp] += 1
            weakref.finalize(seq, self._dropped, id(seq), key)
        return key

    def _dropped(self, seq_id: int, key: int) -> None:
        self._keys.pop(seq_id, None)
        self._load[self._dp_of.pop(key)] -= 1
        self._released.append(key)

    def _send(self, n_tokens: int, n_requests: int, released: list[int]) -> None:
        header = [n_tokens, n_requests, len(released)]
        dist.broadcast(torch.tensor(header, device=self.device), _SRC)

    def forward_step(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        seqs: list[tuple[slice, SequenceKV]],
        ops: AttentionOps | None = None,
    ) -> StepOutput:
        """Broadcast the step, run rank 0's share (same contract as `Transformer.forward_step`).

        Raises:
            MemoryError: rank 0's pool is short for the step (as `Transformer.forward_step`).
        """
        keys = [self._key(seq) for _, seq in seqs]
        table = [
            (sl.start, sl.stop, key, self._dp_of[key])
            for (sl, _), key in zip(seqs, keys, strict=True)
        ]
        released, self._released = self._released, []
        self._send(input_ids.shape[0], len(table), released)
        flat = [v for row in table for v in row]
        payload = torch.cat(
            (
                input_ids.to(self.device, torch.int64),
                positions.to(self.device, torch.int64),
                torch.tensor(flat + released, dtype=torch.int64, device=self.device),
            )
        )
        dist.broadcast(payload, _SRC)
        self.steps += 1
        step = _Step(input_ids.to(self.device), positions.to(self.device), table)
        if self.groups.dp_size == 1:
            return self._forward(input_ids, positions, seqs, ops)
        for (sl, seq), (_, _, _, dp) in zip(seqs, table, strict=True):
            if dp != self.groups.dp_rank:  # accounted here, cached on its DP rank
                seq.reserve(sl.stop - sl.start)
        by_key = {key: seq for (_, seq), key in zip(seqs, keys, strict=True)}
        local = _run_local(self._forward, self.model, self.groups, step, by_key, ops)
        for (sl, seq), (_, _, _, dp) in zip(seqs, table, strict=True):
            if dp != self.groups.dp_rank:
                seq.num_tokens += sl.stop - sl.start
        vocab = self.model.config.vocab_size
        parts = _gather_logits(self.groups, step, local, vocab, self.device)
        assert parts is not None
        rows, seen = [], [0] * self.groups.dp_size
        for _, _, _, dp in table:
            rows.append(parts[dp * self.groups.tp_size][seen[dp]])
            seen[dp] += 1
        return StepOutput(logits=torch.stack(rows), hidden=torch.empty(0, device=self.device))

    def stop(self) -> None:
        """Tell the followers to return."""
        self._send(-1, 0, [])


def follow(
    model: Transformer, groups: ParallelGroups, pool: KVBlockPool, ops: AttentionOps | None = None
) -> int:
    """Replay rank 0's steps on this rank until it stops; return the number of steps.

    Runs the requests rank 0 placed on this rank's DP rank, in `pool` (at least as many blocks
    as rank 0's, same block size), or an idle EP step when there are none.

    Raises:
        ValueError: this is rank 0.
        MemoryError: this rank's pool is smaller than rank 0's.
    """
    if groups.rank == _SRC:
        msg = "rank 0 leads (StepLeader); follow runs on the other ranks"
        raise ValueError(msg)
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    live: dict[int, SequenceKV] = {}
    steps = 0
    while True:
        header = torch.empty(_HEADER, dtype=torch.int64, device=device)
        dist.broadcast(header, _SRC)
        n_tok, n_seq, n_rel = header.tolist()
        if n_tok < 0:
            return steps
        payload = torch.empty(
            2 * n_tok + _PER_REQUEST * n_seq + n_rel, dtype=torch.int64, device=device
        )
        dist.broadcast(payload, _SRC)
        rest = payload[2 * n_tok :].tolist()
        flat, released = rest[: _PER_REQUEST * n_seq], rest[_PER_REQUEST * n_seq :]
        table = [
            (flat[i], flat[i + 1], flat[i + 2], flat[i + 3])
            for i in range(0, len(flat), _PER_REQUEST)
        ]
        step = _Step(payload[:n_tok], payload[n_tok : 2 * n_tok], table)
        for key in released:
            seq = live.pop(key, None)
            if seq is not None:
                seq.release()
        for _, _, key, dp in table:
            if dp == groups.dp_rank and key not in live:
                live[key] = SequenceKV(pool)
        if groups.dp_size == 1:
            with torch.inference_mode():
                model.forward_step(
                    step.ids,
                    step.positions,
                    [(slice(lo, hi), live[key]) for lo, hi, key, _ in table],
                    ops,
                )
        else:
            logits = _run_local(model.forward_step, model, groups, step, live, ops)
            _gather_logits(groups, step, logits, vocab, device)
        steps += 1
