"""KV compressor of DeepSeek-V4 (CSA ratio 4 with overlapping windows, HCA ratio 128).

Public API: `compress`. Math: README.md beside this file.
"""

from __future__ import annotations

from typing import Literal

import torch

from dsv4_kernels.compressor.reference import (
    compress_reference,
    compress_reference_fp8,
)
from dsv4_kernels.impl import Impl, use_triton

__all__ = ["compress", "compress_reference", "compress_reference_fp8"]


def compress(
    kv: torch.Tensor,
    score: torch.Tensor,
    ape: torch.Tensor,
    norm_weight: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    ratio: int,
    prev_kv: torch.Tensor | None = None,
    prev_score: torch.Tensor | None = None,
    eps: float = 1e-6,
    out_format: Literal["bf16", "fp8_ds_mla"] = "bf16",
    impl: Impl = "auto",
) -> torch.Tensor:
    """Compress complete windows of `ratio` tokens into KV cache entries.

    Entry g of a sequence pools tokens [g*ratio, (g+1)*ratio) and, when ratio == 4, also the
    previous window's tokens [(g-1)*4, g*4) through the first half of the projected features
    (8 tokens per entry). Weights: softmax over the rows, per dim, of `score + ape`. Then
    RMSNorm(norm_weight, eps), RoPE on the last 64 dims (interleaved pairs) with `cos`/`sin`.

    Args:
        kv: [B, T, C*D], float32, `wkv(x)` of T tokens that start at a window boundary;
            C = 2 for ratio 4 (overlap), 1 for ratio 128; T a multiple of ratio. D = 512 (main
            KV) or 128 (indexer keys, bf16 output only).
        score: [B, T, C*D], float32, `wgate(x)`.
        ape: [ratio, C*D], float32, learned positional bias (row within the window).
        norm_weight: [D], float32.
        cos: [B, T//ratio, 32], float32, cos of each entry's RoPE angles at absolute position
            g*ratio for entry g, the first token of its window (official
            `freqs_cis[:cutoff:ratio]`; vLLM `(positions // compress_ratio) * compress_ratio`),
            from the caller's table (`compress_rope_theta` 160000, YaRN). Not position g.
        sin: [B, T//ratio, 32], float32.
        ratio: 4 or 128 (`compress_ratios` of the model config).
        prev_kv: [B, ratio, C*D], float32, the window just before `kv` (ratio 4 only); None at
            a sequence start, where those rows carry zero weight.
        prev_score: [B, ratio, C*D], float32, its `wgate` rows; given together with prev_kv.
        eps: RMSNorm epsilon (`norm_eps`).
        out_format: "bf16" -> [B, T//ratio, D] bfloat16; "fp8_ds_mla" -> [B, T//ratio, 584]
            uint8 (layout in `dsv4_kernels.kv_format`).
        impl: "auto" | "triton" | "reference" (`dsv4_kernels.impl.Impl`).

    Returns:
        The entries, in `out_format`.

    Raises:
        ValueError: ratio not 4 or 128, T not a multiple of ratio, a tensor of another shape
            than listed above, only one of prev_kv/prev_score, a previous window with ratio 128,
            an unknown out_format, or fp8 with D != 512.
    """
    # Shapes are checked by each path (`reference.check_compress_inputs`).
    if out_format not in ("bf16", "fp8_ds_mla"):
        raise ValueError(f"out_format must be 'bf16' or 'fp8_ds_mla', got {out_format!r}")
    if use_triton(impl, kv.device):
        from dsv4_kernels.compressor.triton_compressor import compress_triton  # noqa: PLC0415  (triton loads only when the kernel runs)

        return compress_triton(
            kv, score, ape, norm_weight, cos, sin, ratio, prev_kv, prev_score, eps, 64, out_format
        )
    if out_format == "fp8_ds_mla":
        return compress_reference_fp8(
            kv, score, ape, norm_weight, cos, sin, ratio, prev_kv, prev_score, eps
        )
    return compress_reference(
        kv, score, ape, norm_weight, cos, sin, ratio, prev_kv, prev_score, eps
    )
