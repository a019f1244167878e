"""Checkpoint number formats of DeepSeek-V4 (facts doc §4): FP8 and MXFP4 with UE8M0 scales.

- FP8: e4m3 weights, one UE8M0 (power-of-two, `float8_e8m0fnu`) scale per 128 × 128 block;
  scale = 2^ceil(log2(amax / 448)) (448 = e4m3 max), so weight ≈ fp8 × scale.
- MXFP4 (routed experts): e2m1 values, two per int8 byte (element 2j in the low nibble, 2j+1 in
  the high nibble; nibble = sign bit 3, magnitude code 0..7 for 0, .5, 1, 1.5, 2, 3, 4, 6), one
  UE8M0 scale per 32 elements along the input dim; scale = 2^ceil(log2(amax / 6)).
"""

from __future__ import annotations

import torch

FP8_BLOCK = 128
FP8_MAX = 448.0
FP4_BLOCK = 32
FP4_MAX = 6.0
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def _pow2_scale(amax: torch.Tensor, qmax: float) -> torch.Tensor:
    """Smallest power of two ≥ amax / qmax (UE8M0), float32."""
    return torch.exp2(torch.ceil(torch.log2(amax.clamp_min(1e-30) / qmax)))


def quantize_fp8_block(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W (out, in) → (e4m3 (out, in), UE8M0 scale (⌈out/128⌉, ⌈in/128⌉))."""
    out_f, in_f = w.shape
    rows, cols = -(-out_f // FP8_BLOCK), -(-in_f // FP8_BLOCK)
    padded = torch.zeros(rows * FP8_BLOCK, cols * FP8_BLOCK)
    padded[:out_f, :in_f] = w.float()
    blocks = padded.view(rows, FP8_BLOCK, cols, FP8_BLOCK)
    amax = blocks.abs().amax(dim=(1, 3)).clamp_min(1e-4)
    scale = _pow2_scale(amax, FP8_MAX)
    q = (blocks / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX)
    q8 = q.reshape(rows * FP8_BLOCK, cols * FP8_BLOCK)[:out_f, :in_f].to(torch.float8_e4m3fn)
    return q8, scale.to(torch.float8_e8m0fnu)


def dequantize_fp8_block(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of `quantize_fp8_block`: float32 (out, in)."""
    out_f, in_f = q.shape
    s = scale.float().repeat_interleave(FP8_BLOCK, 0).repeat_interleave(FP8_BLOCK, 1)
    return q.float() * s[:out_f, :in_f]


def quantize_mxfp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W (out, in), in % 32 == 0 → (packed int8 (out, in/2), UE8M0 scale (out, in/32)).

    Raises:
        ValueError: when `in` is not a multiple of 32.
    """
    out_f, in_f = w.shape
    if in_f % FP4_BLOCK:
        msg = f"MXFP4 needs the input dim to be a multiple of {FP4_BLOCK}, got {in_f}"
        raise ValueError(msg)
    blocks = w.float().view(out_f, in_f // FP4_BLOCK, FP4_BLOCK)
    scale = _pow2_scale(blocks.abs().amax(dim=-1), FP4_MAX)
    x = (blocks / scale.unsqueeze(-1)).view(out_f, in_f)
    table = torch.tensor(E2M1_VALUES)
    code = (x.abs().unsqueeze(-1) - table).abs().argmin(dim=-1)
    nibble = code | ((x < 0) & (code > 0)).to(torch.int64) << 3
    packed = nibble[:, 0::2] | (nibble[:, 1::2] << 4)
    return packed.to(torch.uint8).view(torch.int8), scale.to(torch.float8_e8m0fnu)


def dequantize_mxfp4(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of `quantize_mxfp4`: float32 (out, in)."""
    raw = packed.view(torch.uint8).to(torch.int64)
    table = torch.tensor(E2M1_VALUES + tuple(-v for v in E2M1_VALUES))
    low, high = table[raw & 0x0F], table[(raw >> 4) & 0x0F]
    values = torch.stack((low, high), dim=-1).flatten(1)
    return values * scale.float().repeat_interleave(FP4_BLOCK, dim=1)
