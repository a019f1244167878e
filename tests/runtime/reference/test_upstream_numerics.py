"""Numerics the engine must share with DeepSeek's V4 inference code and vLLM's V4 model.

Each test restates the upstream formula independently (not through the engine's helpers):

- RoPE tables: DeepSeek `inference/model.py` `precompute_freqs_cis` (float32 frequencies,
  `torch.outer(arange(seqlen), freqs)` float32 angles) — vLLM's `DeepseekScalingRotaryEmbedding`
  also builds a float32 cos/sin cache.
- main-KV FP8 rounding: the official `act_quant(kv[..., :-64], 64, "ue8m0", inplace=True)`.
"""

from __future__ import annotations

import math

import pytest
import torch

from dsv4_runtime.reference.kvquant import round_main_kv
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
