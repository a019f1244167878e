"""Continuous batching: batched = alone; queueing and preemption keep outputs; limits."""

from __future__ import annotations

import pytest

from dsv4_runtime.reference.config import TINY
from dsv4_runtime.reference.engine import Engine, Request, SamplingParams
from dsv4_runtime.reference.kvcache import KVBlockPool
from dsv4_runtime.reference.metrics import EngineMetrics
from dsv4_runtime.reference.model import Transformer

from .conftest import random_ids

PARAMS = SamplingParams(max_tokens=10, ignore_eos=True)


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    return [random_ids(n, seed=n) for n in (5, 150, 260, 40)]


@pytest.fixture(scope="module")
def alone(tiny_model: Transformer, prompts: list[list[int]]) -> list[list[int]]:
    out = []
    for p in prompts:
        engine = Engine(tiny_model, KVBlockPool(TINY, 2), max_num_seqs=1, max_model_len=512)
        out.extend(engine.generate([p], PARAMS))
    return out


def test_batched_equals_alone(
    tiny_model: Transformer, prompts: list[list[int]], alone: list[list[int]]
) -> None:
    engine = Engine(tiny_model, KVBlockPool(TINY, 8), max_num_seqs=4, max_model_len=512)
    assert engine.generate(prompts, PARAMS) == alone
    assert engine.pool.free_blocks == 8


def test_queueing_chunked_prefill_and_preemption_keep_outputs(
    tiny_model: Transformer, prompts: list[list[int]], alone: list[list[int]]
) -> None:
    """3 blocks for 4 requests that need 1+1+2+1: some wait and long prompts are prefilled in
    64-token chunks; outputs are unchanged and the counters count each token once."""
    metrics = EngineMetrics("tiny")
    engine = Engine(
        tiny_model,
        KVBlockPool(TINY, 3),
        max_num_seqs=4,
        max_model_len=512,
        max_num_batched_tokens=64,
        metrics=metrics,
    )
    reqs = [Request(f"r{i}", p, PARAMS) for i, p in enumerate(prompts)]
    for r in reqs:
        engine.add_request(r)
    max_waiting = 0
    while engine.has_work:
        engine.step()
        max_waiting = max(max_waiting, len(engine.waiting))
    assert [r.output_ids for r in reqs] == alone
    assert max_waiting >= 1
    assert engine.pool.free_blocks == 3
    assert metrics.generation_tokens._value.get() == 40
    assert metrics.prompt_tokens._value.get() == sum(len(p) for p in prompts)


def test_preemption_recomputes_and_keeps_outputs(tiny_model: Transformer) -> None:
    """Two requests share 2 blocks; the first crosses token 256 and needs a second block, so the
    later one is preempted, requeued and recomputed from its prompt and produced tokens."""
    prompts = [random_ids(250, seed=21), random_ids(100, seed=22)]
    alone = [
        Engine(tiny_model, KVBlockPool(TINY, 2), max_num_seqs=1, max_model_len=512).generate(
            [p], PARAMS
        )[0]
        for p in prompts
    ]
    metrics = EngineMetrics("tiny")
    engine = Engine(
        tiny_model, KVBlockPool(TINY, 2), max_num_seqs=2, max_model_len=512, metrics=metrics
    )
    assert engine.generate(prompts, PARAMS) == alone
    assert metrics.num_preemptions._value.get() >= 1
    assert metrics.generation_tokens._value.get() == 20


def test_limits_are_reported(tiny_model: Transformer) -> None:
    engine = Engine(tiny_model, KVBlockPool(TINY, 2), max_num_seqs=2, max_model_len=64)
    with pytest.raises(ValueError, match="maximum context length is 64"):
        engine.add_request(Request("a", [1] * 60, SamplingParams(max_tokens=5)))
    with pytest.raises(ValueError, match="at least one token"):
        engine.add_request(Request("b", [], SamplingParams(max_tokens=5)))
    with pytest.raises(ValueError, match=r"\[0, 258\)"):
        engine.add_request(Request("c", [999], SamplingParams(max_tokens=5)))
    big = Engine(tiny_model, KVBlockPool(TINY, 1), max_num_seqs=2, max_model_len=1024)
    with pytest.raises(ValueError, match="KV blocks"):
        big.add_request(Request("d", [1] * 300, SamplingParams(max_tokens=5)))


def test_eos_stops_unless_ignored(tiny_model: Transformer) -> None:
    prompt = random_ids(30, seed=11)
    engine = Engine(tiny_model, KVBlockPool(TINY, 2), max_num_seqs=1, max_model_len=512)
    first = engine.generate([prompt], SamplingParams(max_tokens=3))[0]
    eos = first[1]  # pretend the second greedy token is EOS
    stopping = Engine(
        tiny_model, KVBlockPool(TINY, 2), max_num_seqs=1, max_model_len=512, eos_id=eos
    )
    req = Request("s", prompt, SamplingParams(max_tokens=3))
    stopping.add_request(req)
    while stopping.has_work:
        stopping.step()
    assert req.output_ids == first[:2]
    assert req.finish_reason == "stop"


def test_seeded_sampling_is_reproducible(tiny_model: Transformer) -> None:
    prompt = random_ids(20, seed=12)
    params = SamplingParams(max_tokens=6, temperature=1.0, seed=5, ignore_eos=True)
    runs = [
        Engine(tiny_model, KVBlockPool(TINY, 2), max_num_seqs=1, max_model_len=512).generate(
            [prompt], params
        )
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
