"""Continuous-batching engine over the paged compressed KV cache.

Each `step()` (vLLM v1 style, one token budget per step):

1. Running requests, oldest first, get their next tokens (1 while decoding, a chunk while a
   long prompt is still being prefilled). When a request needs a block and none is free, the most
   recently admitted request is preempted: its blocks are freed and it goes back to the head of
   the queue, to be recomputed from its prompt and the tokens it already produced.
2. Waiting requests are admitted, first come first served, while fewer than `max_num_seqs` run,
   the budget `max_num_batched_tokens` lasts and the blocks for all their tokens (+1) are free.
3. One forward pass over all scheduled tokens; each request that has computed all its tokens
   samples one (greedy at temperature 0).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable

import torch

from .kvcache import KVBlockPool, SequenceKV
from .metrics import EngineMetrics
from .model import Transformer
from .ops import AttentionOps, TorchOps


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling parameters.

    `max_tokens` to generate; temperature 0 = greedy; `seed` makes sampling reproducible;
    `ignore_eos` keeps generating past EOS (vLLM's extension).
    """

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False


@dataclasses.dataclass
class Request:
    """A request's tokens, cache and timings (seconds, `time.monotonic`)."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    arrival: float = dataclasses.field(default_factory=time.monotonic)
    output_ids: list[int] = dataclasses.field(default_factory=list)
    seq: SequenceKV | None = None
    num_computed: int = 0
    first_scheduled: float | None = None
    last_token_time: float | None = None
    finish_reason: str | None = None
    generator: torch.Generator | None = None

    @property
    def all_ids(self) -> list[int]:
        """Prompt followed by the generated tokens."""
        return self.prompt_ids + self.output_ids


@dataclasses.dataclass(frozen=True)
class TokenEvent:
    """One generated token of a request; `finish_reason` is set on its last token."""

    request_id: str
    token_id: int
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


class Engine:
    """The scheduler and model runner (one device, one process).

    Args:
        model: the transformer (eval mode).
        pool: the KV block pool.
        max_num_seqs: most requests running at once (`--max-num-seqs`).
        max_model_len: most tokens (prompt + output) of a request (`--max-model-len`).
        max_num_batched_tokens: token budget of one step (prefill chunks + decodes).
        metrics: where to count tokens and latencies, or None.
        ops: attention operators (default: pure PyTorch).
        seed: base seed of sampling for requests without their own `seed`.
        eos_id: end-of-sequence token id.
        clock: time source (seconds), for tests.
    """

    def __init__(
        self,
        model: Transformer,
        pool: KVBlockPool,
        *,
        max_num_seqs: int,
        max_model_len: int,
        max_num_batched_tokens: int = 2048,
        metrics: EngineMetrics | None = None,
        ops: AttentionOps | None = None,
        seed: int = 0,
        eos_id: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_num_seqs < 1 or max_model_len < 2 or max_num_batched_tokens < 1:
            msg = (
                "max_num_seqs ≥ 1, max_model_len ≥ 2 and max_num_batched_tokens ≥ 1 are required, "
                f"got {max_num_seqs}, {max_model_len}, {max_num_batched_tokens}"
            )
            raise ValueError(msg)
        self.model = model
        self.pool = pool
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self.max_num_batched_tokens = max_num_batched_tokens
        self.metrics = metrics
        self.ops = ops or TorchOps()
        self.seed = seed
        self.eos_id = model.config.eos_token_id if eos_id is None else eos_id
        self.clock = clock
        self.waiting: collections.deque[Request] = collections.deque()
        self.running: list[Request] = []
        self._counter = 0
        self.device = next(model.parameters()).device

    # ----------------------------------------------------------------------------- requests
    def add_request(self, req: Request) -> None:
        """Queue a request.

        Raises:
            ValueError: see `validate`.
        """
        self.validate(req)
        seed = req.params.seed if req.params.seed is not None else self.seed + self._counter
        self._counter += 1
        req.generator = torch.Generator().manual_seed(seed)
        req.arrival = self.clock()
        self.waiting.append(req)
        self._update_gauges()

    def validate(self, req: Request) -> None:
        """Check a request against the engine's limits without queueing it.

        Raises:
            ValueError: empty prompt, prompt + max_tokens above `max_model_len`, `max_tokens` < 1,
                a token id outside the vocabulary, or more blocks than the whole pool.
        """
        n_prompt = len(req.prompt_ids)
        if n_prompt == 0:
            raise ValueError("prompt must contain at least one token")
        if req.params.max_tokens < 1:
            msg = f"max_tokens must be at least 1, got {req.params.max_tokens}"
            raise ValueError(msg)
        if n_prompt + req.params.max_tokens > self.max_model_len:
            msg = (
                f"This model's maximum context length is {self.max_model_len} tokens. However, "
                f"you requested {n_prompt + req.params.max_tokens} tokens ({n_prompt} in the "
                f"prompt, {req.params.max_tokens} in the completion)."
            )
            raise ValueError(msg)
        vocab = self.model.config.vocab_size
        if any(not 0 <= t < vocab for t in req.prompt_ids):
            msg = f"prompt token ids must lie in [0, {vocab})"
            raise ValueError(msg)
        if self.pool.blocks_for(n_prompt + req.params.max_tokens) > self.pool.num_blocks:
            msg = (
                f"request needs {self.pool.blocks_for(n_prompt + req.params.max_tokens)} KV "
                f"blocks; the pool has {self.pool.num_blocks}"
            )
            raise ValueError(msg)

    def abort(self, request_id: str) -> bool:
        """Drop a request (client gone); True when it was queued or running."""
        for req in list(self.waiting):
            if req.request_id == request_id:
                self.waiting.remove(req)
                self._finish_metrics(req, "abort")
                self._update_gauges()
                return True
        for req in self.running:
            if req.request_id == request_id:
                self._retire(req, "abort")
                self._update_gauges()
                return True
        return False

    @property
    def has_work(self) -> bool:
        """Whether any request is queued or running."""
        return bool(self.waiting or self.running)

    # ----------------------------------------------------------------------------- scheduling
    def _preempt(self, victim: Request) -> None:
        assert victim.seq is not None
        victim.seq.release()
        victim.seq = None
        victim.num_computed = 0
        self.running.remove(victim)
        self.waiting.appendleft(victim)
        if self.metrics:
            self.metrics.num_preemptions.inc()

    def _schedule(self) -> list[tuple[Request, int]]:
        budget = self.max_num_batched_tokens
        scheduled: list[tuple[Request, int]] = []
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(len(req.all_ids) - req.num_computed, budget)
            seq: SequenceKV | None = req.seq
            while seq is not None and seq.blocks_needed(n) > self.pool.free_blocks:
                self._preempt(self.running[-1])
                seq = req.seq
            if seq is None:  # it preempted itself: nothing later can run either
                break
            seq.reserve(n)
            scheduled.append((req, n))
            budget -= n
            i += 1
        while self.waiting and len(self.running) < self.max_num_seqs and budget > 0:
            req = self.waiting[0]
            if self.pool.blocks_for(len(req.all_ids) + 1) > self.pool.free_blocks:
                break
            self.waiting.popleft()
            req.seq = SequenceKV(self.pool)
            n = min(len(req.all_ids), budget)
            req.seq.reserve(n)
            if req.first_scheduled is None:
                req.first_scheduled = self.clock()
                if self.metrics:
                    self.metrics.queue_time.observe(req.first_scheduled - req.arrival)
            self.running.append(req)
            scheduled.append((req, n))
            budget -= n
        return scheduled

    # ----------------------------------------------------------------------------- stepping
    def step(self) -> list[TokenEvent]:
        """Schedule, run one forward pass, sample; return the tokens produced."""
        scheduled = self._schedule()
        if not scheduled:
            self._update_gauges()
            return []
        ids: list[int] = []
        positions: list[int] = []
        seqs: list[tuple[slice, SequenceKV]] = []
        for req, n in scheduled:
            assert req.seq is not None
            start = len(ids)
            ids.extend(req.all_ids[req.num_computed : req.num_computed + n])
            positions.extend(range(req.num_computed, req.num_computed + n))
            seqs.append((slice(start, start + n), req.seq))
        with torch.inference_mode():
            out = self.model.forward_step(
                torch.tensor(ids, device=self.device),
                torch.tensor(positions, device=self.device),
                seqs,
                self.ops,
            )
        now = self.clock()
        events: list[TokenEvent] = []
        for k, (req, n) in enumerate(scheduled):
            req.num_computed += n
            if req.num_computed < len(req.all_ids):
                continue  # a prompt chunk: no token yet
            token = self._sample(req, out.logits[k])
            events.append(self._emit(req, token, now))
        self._update_gauges()
        return events

    def _sample(self, req: Request, logits: torch.Tensor) -> int:
        p = req.params
        if p.temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.float().cpu() / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            keep = sorted_p.cumsum(0) - sorted_p < p.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs, 1, generator=req.generator))

    def _emit(self, req: Request, token: int, now: float) -> TokenEvent:
        first = not req.output_ids
        req.output_ids.append(token)
        if self.metrics:
            self.metrics.generation_tokens.inc()
            if first:
                self.metrics.prompt_tokens.inc(len(req.prompt_ids))
                self.metrics.ttft.observe(now - req.arrival)
            elif req.last_token_time is not None:
                self.metrics.itl.observe(now - req.last_token_time)
        req.last_token_time = now
        reason = None
        if token == self.eos_id and not req.params.ignore_eos:
            reason = "stop"
        elif len(req.output_ids) >= req.params.max_tokens:
            reason = "length"
        if reason is not None:
            self._retire(req, reason)
        return TokenEvent(req.request_id, token, reason, len(req.prompt_ids), len(req.output_ids))

    def _retire(self, req: Request, reason: str) -> None:
        req.finish_reason = reason
        if req.seq is not None:
            req.seq.release()
            req.seq = None
        if req in self.running:
            self.running.remove(req)
        self._finish_metrics(req, reason)

    def _finish_metrics(self, req: Request, reason: str) -> None:
        if self.metrics:
            self.metrics.request_success(reason)
            self.metrics.request_prompt_tokens.observe(len(req.prompt_ids))
            self.metrics.request_generation_tokens.observe(len(req.output_ids))

    def _update_gauges(self) -> None:
        if self.metrics:
            self.metrics.running.set(len(self.running))
            self.metrics.waiting.set(len(self.waiting))
            self.metrics.kv_usage.set(self.pool.usage)

    # ----------------------------------------------------------------------------- offline use
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
        """Run prompts to completion (batched); return each one's generated ids."""
        reqs = []
        for i, prompt in enumerate(prompts):
            req = Request(
                request_id=f"offline-{self._counter}-{i}", prompt_ids=list(prompt), params=params
            )
            self.add_request(req)
            reqs.append(req)
        while self.has_work:
            self.step()
        return [r.output_ids for r in reqs]
