"""Numerics the engine must share with DeepSeek's V4 inference code and vLLM's V4 model.

Each test restates the upstream formula independently (not through the engine's helpers):

- RoPE tables: DeepSeek `inference/model.py` `precompute_freqs_cis` (float32 frequencies,
  `torch.outer(arange(seqlen), freqs)` float32 angles) — vLLM's `DeepseekScalingRotaryEmbedding`
  also builds a float32 cos/sin cache.
- main-KV FP8 rounding: the official `act_quant(kv[..., :-64], 64, "ue8m0", inplace=True)`.
- indexer-key FP8 rounding: vLLM's V4 `_fused_kv_compress_norm_rope_insert_indexer_attn` (one
  power-of-two float32 scale per 128-dim key, amax floor 1e-4).
"""

from __future__ import annotations

import math

import pytest
import torch

from dsv4_runtime.reference.kvquant import (
    pow2_scale,
    quantize_index_queries,
    round_index_keys,
    round_main_kv,
)
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


def test_index_key_rounding_equals_vllms_indexer_insert() -> None:
    """vLLM's V4 indexer key insert (`_fused_kv_compress_norm_rope_insert_indexer_attn`: bf16
    key, absmax = max(max |k|, 1e-4), scale = exp2(ceil(log2(absmax · (1/448)))), e4m3 of
    clamp(k / scale, ±448)), dequantised, on bf16 keys (the engine's keys are bf16-valued in
    the FP8-cache mode). The former scale amax / 448 differs."""
    gen = torch.Generator().manual_seed(6)
    keys = (torch.randn(8, 128, generator=gen) * torch.logspace(-5, 3, 8).unsqueeze(1)).to(
        torch.bfloat16
    )
    keys[0] = 0.0  # all zero: the amax floor, scale 2^-22
    keys[1, 5] = -448.0 * 2.0**-4  # |amax| = 448 · 2^-4 exactly (negative): scale 2^-4
    keys[1, 6:] = keys[1, 6:].clamp(-20, 20)
    scale = _ue8m0(keys.float().abs().amax(dim=-1, keepdim=True), 1e-4)
    want = (_e4m3(keys.float() / scale) * scale).to(torch.bfloat16)
    got = round_index_keys(keys)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert scale[0].item() == 2.0**-22
    assert scale[1].item() == 2.0**-4
    former = keys.float().abs().amax(dim=-1, keepdim=True).clamp_min(1e-4) / 448.0
    assert not torch.equal((_e4m3(keys.float() / former) * former).to(torch.bfloat16), want)


def test_pow2_scale_is_exact_next_to_powers_of_two() -> None:
    """`torch.log2` of a float32 a few ulps above 2^k rounds to k; `pow2_scale` must not (the
    amax element would be clamped to 448 · scale). amax = 448 · 2^k and its float32 neighbours."""
    k = torch.arange(-20, 100, dtype=torch.float32)
    at = 448.0 * torch.exp2(k)
    above = torch.nextafter(at, at * 2)
    below = torch.nextafter(at, torch.zeros_like(at))
    assert torch.equal(pow2_scale(at), torch.exp2(k))
    assert torch.equal(pow2_scale(above), torch.exp2(k + 1))
    assert torch.equal(pow2_scale(below), torch.exp2(k))
    assert torch.equal(pow2_scale(torch.zeros(3)), torch.full((3,), 2.0**-22))


def test_index_query_quantisation_equals_vllms_fused_indexer_q() -> None:
    """vLLM's V4 `_fused_indexer_q_rope_quant_kernel` (the FP8 path): per token and head
    amax = max |q| (bf16 q), q_scale = exp2(ceil(log2(max(amax, 1e-10) · (1/448)))), codes
    e4m3(clamp(q / q_scale, ±448)), weight out = weight · q_scale (the softmax and head scales
    are already in the engine's weights); the former amax / 448 differs. A zero head takes the
    1e-10 floor (2^-42); amax = 448 · 2^3 exactly keeps 2^3."""
    gen = torch.Generator().manual_seed(7)
    q = (torch.randn(5, 4, 128, generator=gen) * torch.logspace(-4, 2, 5)[:, None, None]).to(
        torch.bfloat16
    )
    q[0, 0] = 0.0
    q[1, 2, 9] = 448.0 * 2.0**3
    q[1, 2, 10:] = q[1, 2, 10:].clamp(-100, 100)
    weights = torch.randn(5, 4, generator=gen)
    scale = _ue8m0(q.float().abs().amax(dim=-1, keepdim=True), 1e-10)
    want_q = _e4m3(q.float() / scale)
    want_w = weights * scale.squeeze(-1)
    got_q, got_w = quantize_index_queries(q, weights)
    torch.testing.assert_close(got_q, want_q, rtol=0, atol=0)
    torch.testing.assert_close(got_w, want_w, rtol=0, atol=0)
    assert scale[0, 0].item() == 2.0**-42
    assert scale[1, 2].item() == 2.0**3
    former = q.float().abs().amax(dim=-1, keepdim=True).clamp_min(1e-4) / 448.0
    assert not torch.equal(_e4m3(q.float() / former), want_q)
