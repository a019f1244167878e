"""Numerics the engine must share with DeepSeek's V4 inference code and vLLM's V4 model.

Each test restates the upstream formula independently (not through the engine's helpers):

- RoPE tables: DeepSeek `inference/model.py` `precompute_freqs_cis` (float32 frequencies,
  `torch.outer(arange(seqlen), freqs)` float32 angles) — vLLM's `DeepseekScalingRotaryEmbedding`
  also builds a float32 cos/sin cache.
- FP8 indexer cache: vLLM `_fused_kv_compress_norm_rope_insert_indexer_attn` (keys) and
  `_fused_indexer_q_rope_quant_kernel` (queries) use one power-of-two (UE8M0) scale per key and per
  (token, head): 2 ** ceil(log2(amax / 448)).
"""

from __future__ import annotations

import math

import pytest
import torch

from dsv4_runtime.reference.config import TINY
from dsv4_runtime.reference.kvquant import quantize_index_queries, round_index_keys, round_main_kv
from dsv4_runtime.reference.layers import Rope


def _upstream_cos_sin(
    positions: list[int], base: float, original_seq_len: int, factor: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek's `precompute_freqs_cis` (dim 64, beta 32/1), rows at `positions`."""
    dim, beta_fast, beta_slow = 64, 32, 1

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original_seq_len / (rotations * 2 * math.pi)) / (2 * math.log(base))

    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if original_seq_len > 0:
        low = max(math.floor(correction_dim(beta_fast)), 0)
        high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        smooth = 1 - ramp
        freqs = freqs / factor * (1 - smooth) + freqs * smooth
    angles = torch.outer(torch.tensor(positions), freqs)
    cis = torch.polar(torch.ones_like(angles), angles)
    return cis.real, cis.imag


@pytest.mark.parametrize(
    ("base", "original_seq_len", "factor"),
    [(10000.0, 0, 1.0), (160000.0, 65536, 16.0)],
    ids=["window-only", "compressed-yarn"],
)
def test_rope_tables_equal_deepseeks_float32_tables(
    base: float, original_seq_len: int, factor: float
) -> None:
    """At 1M tokens float64 angles differ from the float32 tables by up to 0.025 in cos/sin."""
    rope = Rope(
        64, base, factor=factor, original_seq_len=original_seq_len, beta_fast=32, beta_slow=1
    )
    positions = [0, 1, 127, 65535, 300_001, 1_048_575]
    cos, sin = rope.cos_sin(torch.tensor(positions))
    up_cos, up_sin = _upstream_cos_sin(positions, base, original_seq_len, factor)
    torch.testing.assert_close(cos, up_cos, rtol=0, atol=2e-6)
    torch.testing.assert_close(sin, up_sin, rtol=0, atol=2e-6)


def _ue8m0(amax: torch.Tensor, floor: float) -> torch.Tensor:
    return torch.exp2(torch.ceil(torch.log2(amax.clamp_min(floor) * (1.0 / 448.0))))


def _e4m3(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-448.0, 448.0).to(torch.float8_e4m3fn).float()


def test_index_keys_round_with_a_power_of_two_scale() -> None:
    """A key with amax 1 and an element 0.3: vLLM stores 0.3125 (scale 2^-8), amax/448 gives
    0.2857."""
    keys = torch.randn(9, TINY.index_head_dim, generator=torch.Generator().manual_seed(3))
    keys[0] = 0.0
    keys[0, 0], keys[0, 1] = 1.0, 0.3
    out = round_index_keys(keys)
    scale = _ue8m0(keys.abs().amax(dim=-1, keepdim=True), 1e-4)
    torch.testing.assert_close(out, _e4m3(keys / scale) * scale, rtol=0, atol=0)
    assert out[0, 1].item() == 0.3125


def test_index_queries_fold_a_power_of_two_scale_into_the_weights() -> None:
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(3, 5, TINY.index_head_dim, generator=gen) * 3
    weights = torch.rand(3, 5, generator=gen) + 0.5
    q8, w = quantize_index_queries(q, weights)
    scale = _ue8m0(q.abs().amax(dim=-1), 1e-10)
    torch.testing.assert_close(q8, _e4m3(q / scale.unsqueeze(-1)), rtol=0, atol=0)
    torch.testing.assert_close(w, weights * scale, rtol=0, atol=0)


def test_main_kv_rounding_equals_deepseeks_act_quant() -> None:
    """Official `act_quant(kv[..., :-64], 64, "ue8m0", inplace=True)` (tilelang kernel: scale
    2 ** ceil(log2(max(amax, 1e-4) · (1/448))), e4m3 round trip) on bf16 rows; RoPE dims bf16."""
    gen = torch.Generator().manual_seed(5)
    rows = (torch.randn(6, 512, generator=gen) * torch.logspace(-3, 2, 6).unsqueeze(1)).to(
        torch.bfloat16
    )
    rows[0, :64] = 0.0  # an all-zero tile takes the amax floor
    rows[1, 64:128] = 0.875  # amax = 448 · 2^-9 exactly: scale 2^-9, not 2^-8
    tiles = rows[:, :448].float().view(6, 7, 64)
    scale = _ue8m0(tiles.abs().amax(dim=-1, keepdim=True), 1e-4)
    nope = (_e4m3(tiles / scale) * scale).view(6, 448).to(torch.bfloat16)
    want = torch.cat((nope, rows[:, 448:]), dim=-1)
    torch.testing.assert_close(round_main_kv(rows, 64), want, rtol=0, atol=0)
