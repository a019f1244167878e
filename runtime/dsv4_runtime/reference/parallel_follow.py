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
released keys. A header with -1 tokens stops the followers (`StepLeader.stop`); one with -2 is a
keepalive. Either carries the keys released since the last message (then only those follow).

Idle periods: a follower waits for the next header inside a collective, which fails after the
process group's timeout (`--dist-timeout`, 300 s by default). So while the engine has nothing to
run, the leader's keepalive thread (`keepalive_s`) sends a keepalive header whenever no message
went out for `keepalive_s` seconds; without it an idle server lost every follower after the
timeout. A failed collective (a rank died: gloo reports the closed connection at once) is kept in
`StepLeader.failure`, so the server can stop instead of serving with a broken group; the
keepalive finds it while idle too.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
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
_STOP = -1
_KEEPALIVE = -2

log = logging.getLogger(__name__)


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

    Args:
        model: rank 0's sharded model.
        groups: the world's groups (this must be global rank 0).
        keepalive_s: with a value, a daemon thread sends a keepalive header whenever no message
            went out for this many seconds (keep it well below the process group's timeout);
            None sends none (callers that step without pauses, as `Engine.generate`).

    Attributes:
        failure: the first error of a collective (a step or a keepalive), else None; the group is
            then unusable and `stop` sends nothing.
        steps: steps broadcast so far.

    Raises:
        ValueError: not global rank 0, a world of one rank, or `keepalive_s` ≤ 0.
    """

    def __init__(
        self, model: Transformer, groups: ParallelGroups, keepalive_s: float | None = None
    ) -> None:
        if groups.rank != _SRC:
            msg = f"StepLeader belongs on global rank 0, this is rank {groups.rank}"
            raise ValueError(msg)
        if groups.world_size < 2:
            msg = "leader/follower stepping needs a world of at least 2 ranks"
            raise ValueError(msg)
        if keepalive_s is not None and keepalive_s <= 0:
            msg = f"keepalive_s must be > 0 seconds, got {keepalive_s}"
            raise ValueError(msg)
        self.model = model
        self.groups = groups
        self.device = next(model.parameters()).device
        self._forward = model.forward_step
        self._keys: dict[int, int] = {}
        self._dp_of: dict[int, int] = {}
        self._load = [0] * groups.dp_size
        self._next_key = 0
        # (id, key) of dropped caches; appended by finalizers on any thread, drained under _lock
        self._drops: collections.deque[tuple[int, int]] = collections.deque()
        self._lock = threading.Lock()  # one message (and its step's collectives) at a time
        self._last_send = time.monotonic()
        self._halt = threading.Event()
        self._stopped = False
        self.failure: BaseException | None = None
        self.steps = 0
        model.forward_step = self.forward_step  # type: ignore[method-assign]
        self._thread: threading.Thread | None = None
        if keepalive_s is not None:
            self._thread = threading.Thread(
                target=self._keep_alive, args=(keepalive_s,), name="step-keepalive", daemon=True
            )
            self._thread.start()

    def _key(self, seq: SequenceKV) -> int:
        key = self._keys.get(id(seq))
        if key is None:
            key = self._next_key
            self._next_key += 1
            self._keys[id(seq)] = key
            dp = min(range(self.groups.dp_size), key=lambda r: (self._load[r], r))
            self._dp_of[key] = dp
            self._load[dp] += 1
            weakref.finalize(seq, self._drops.append, (id(seq), key))
        return key

    def _released(self) -> list[int]:
        """Keys whose caches were dropped since the last message (call with `_lock` held)."""
        keys = []
        while self._drops:
            seq_id, key = self._drops.popleft()
            if self._keys.get(seq_id) == key:
                del self._keys[seq_id]
            self._load[self._dp_of.pop(key)] -= 1
            keys.append(key)
        return keys

    def _send(self, n_tokens: int, n_requests: int, released: list[int]) -> None:
        header = [n_tokens, n_requests, len(released)]
        dist.broadcast(torch.tensor(header, device=self.device), _SRC)
        self._last_send = time.monotonic()

    def _send_control(self, code: int) -> None:
        """A stop or keepalive header, then its released keys (call with `_lock` held)."""
        released = self._released()
        self._send(code, 0, released)
        if released:
            dist.broadcast(torch.tensor(released, dtype=torch.int64, device=self.device), _SRC)

    def _keep_alive(self, interval_s: float) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # a new thread starts on GPU 0
        while not self._halt.wait(interval_s / 4):
            with self._lock:
                if self._stopped or self.failure is not None:
                    return
                if time.monotonic() - self._last_send < interval_s:
                    continue
                try:
                    self._send_control(_KEEPALIVE)
                except Exception as err:  # any collective error: record it, send no more
                    self.failure = err
                    log.error("keepalive to the followers failed: %s", err)
                    return

    def forward_step(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        seqs: list[tuple[slice, SequenceKV]],
        ops: AttentionOps | None = None,
    ) -> StepOutput:
        """Broadcast the step, run rank 0's share (same contract as `Transformer.forward_step`).

        Any error of the step is kept in `failure` (the followers are then out of step).

        Raises:
            ValueError: no request in the step (nothing is sent; the group stays usable).
            MemoryError: rank 0's pool is short for the step (as `Transformer.forward_step`).
            RuntimeError: the group failed now (torch.distributed's error) or earlier.
        """
        if not seqs or input_ids.shape[0] == 0:  # the Transformer has no empty step either
            msg = "a step needs at least one request with at least one token"
            raise ValueError(msg)
        with self._lock:
            if self.failure is not None:
                msg = f"the rank group failed earlier: {self.failure}"
                raise RuntimeError(msg) from self.failure
            try:
                return self._step(input_ids, positions, seqs, ops)
            except Exception as err:  # after the broadcast, the followers are out of step
                self.failure = err
                raise

    def _step(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        seqs: list[tuple[slice, SequenceKV]],
        ops: AttentionOps | None,
    ) -> StepOutput:
        released = self._released()  # first: a dropped cache's id may be reused by a new one
        keys = [self._key(seq) for _, seq in seqs]
        table = [
            (sl.start, sl.stop, key, self._dp_of[key])
            for (sl, _), key in zip(seqs, keys, strict=True)
        ]
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
        """Stop the keepalive and tell the followers to return (with the last released keys).

        Sends nothing when the group has failed (`failure`). Idempotent.

        Raises:
            RuntimeError: torch.distributed's error when the stop message cannot be sent.
        """
        self._halt.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._stopped or self.failure is not None:
                return
            self._stopped = True
            self._send_control(_STOP)


def _release(live: dict[int, SequenceKV], keys: list[int]) -> None:
    """Free the caches of `keys` that this rank holds (others ran on another DP rank)."""
    for key in keys:
        seq = live.pop(key, None)
        if seq is not None:
            seq.release()


def follow(
    model: Transformer, groups: ParallelGroups, pool: KVBlockPool, ops: AttentionOps | None = None
) -> int:
    """Replay rank 0's steps on this rank until it stops; return the number of steps.

    Runs the requests rank 0 placed on this rank's DP rank, in `pool` (at least as many blocks
    as rank 0's, same block size), or an idle EP step when there are none. Keepalives are not
    steps. Released keys free their caches before the step that comes with them, and those sent
    with the stop too, so once rank 0 has finished every request `pool` is wholly free again.

    Raises:
        ValueError: this is rank 0.
        MemoryError: this rank's pool is smaller than rank 0's.
        RuntimeError: a collective failed (torch.distributed's error: the leader died, or sent
            nothing for the process group's timeout).
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
        if n_tok < 0:  # stop or keepalive: only released keys follow
            if n_rel:
                keys = torch.empty(n_rel, dtype=torch.int64, device=device)
                dist.broadcast(keys, _SRC)
                _release(live, keys.tolist())
            if n_tok == _STOP:
                return steps
            continue
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
        _release(live, released)
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
