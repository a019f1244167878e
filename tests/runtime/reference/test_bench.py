"""The decode benchmark runs on `tiny` (the H200 run of `mid` is a separate, dated report)."""

from __future__ import annotations

import torch

from dsv4_operator.planning.kvcache import growth_bytes_per_token
from dsv4_runtime.reference.bench import fill_synthetic, run_case
from dsv4_runtime.reference.config import TINY
from dsv4_runtime.reference.kvcache import KVBlockPool, SequenceKV
from dsv4_runtime.reference.model import Transformer
from dsv4_runtime.reference.ops import TorchOps


def test_synthetic_context_has_the_state_of_a_computed_prefix() -> None:
    pool = KVBlockPool(TINY, 4)
    seq = SequenceKV(pool)
    fill_synthetic(seq, 640, torch.Generator().manual_seed(0))
    e_main, e_idx = pool.entry_bytes
    assert seq.compressed_bytes() == 640 * growth_bytes_per_token(TINY.layer_ratios, e_main, e_idx)
    assert len(seq.blocks) == 3
    for ratio, state in zip(TINY.layer_ratios, seq.layers, strict=False):
        assert state.window.shape[0] == 128
        assert state.window_start == 512
        if ratio:
            assert state.compressor is not None
            assert state.compressor.start + state.compressor.kv.shape[0] == 640


def test_bench_reports_throughput_and_attention_share(tiny_model: Transformer) -> None:
    r = run_case(tiny_model, TorchOps(), batch=2, context=300, steps=2)
    assert r.tokens_per_s > 0
    assert 0 < r.attention_ops_share <= r.attention_share <= 1
