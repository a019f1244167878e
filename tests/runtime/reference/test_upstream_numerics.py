"""Numerics the engine must share with DeepSeek's V4 inference code and vLLM's V4 model.

Each test restates the upstream formula independently (not through the engine's helpers):

- RoPE tables: DeepSeek `inference/model.py` `precompute_freqs_cis` (float32 frequencies,
  `torch.outer(arange(seqlen), freqs)` float32 angles) — vLLM's `DeepseekScalingRotaryEmbedding`
  also builds a float32 cos/sin cache.
"""

from __future__ import annotations

import math

import pytest
import torch

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
