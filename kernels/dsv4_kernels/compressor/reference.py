"""Plain PyTorch reference of the V4 KV compressor (DeepSeek's `Compressor.forward`, prefill path).

Follows the official inference code (and vLLM `deepseek_compressor.py`): per window of `ratio`
tokens, a softmax over the window's rows (per dim) of `score + ape` weights the rows of `kv`;
with overlap (ratio 4) the previous window's rows, projected by the first half of the features,
join the softmax (2 * ratio rows, each entry sees 8 tokens). Then RMSNorm, RoPE on the last
64 dims (interleaved pairs), and optionally the fp8_ds_mla packing.
"""

from __future__ import annotations

import torch

from dsv4_kernels.kv_format import quantize_fp8_ds_mla


def rms_norm_bf16(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in float32 of bf16-rounded input, rounded to bf16 (returned as float32).

    Args:
        x: [..., D], float32.
        weight: [D], float32.
        eps: added to the mean square.

    Returns:
        [..., D], float32 holding bf16-representable values.
    """
    x = x.to(torch.bfloat16).float()
    y = x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps) * weight.float()
    return y.to(torch.bfloat16).float()


def rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (x[2i], x[2i+1]) by the angle whose cos/sin are given.

    Args:
        x: [..., R], float32, R even.
        cos: [..., R // 2], float32.
        sin: [..., R // 2], float32.

    Returns:
        [..., R], float32.
    """
    pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)


def check_compress_inputs(
    kv: torch.Tensor,
    score: torch.Tensor,
    ape: torch.Tensor,
    norm_weight: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    ratio: int,
    prev_kv: torch.Tensor | None,
    prev_score: torch.Tensor | None,
    rope_dim: int = 64,
) -> None:
    """Check the shapes of a `compress` call (arguments as `compress_reference`).

    Raises:
        ValueError: naming the field and the shape it must have: ratio not 4 or 128
            (`compress_ratios`), kv not [B, T, C*D] with T a multiple of ratio, score, ape,
            norm_weight, cos/sin or prev_kv/prev_score of another shape, only one of
            prev_kv/prev_score given, or a previous window with ratio 128 (no overlap).
    """
    if ratio not in (4, 128):
        raise ValueError(f"ratio must be 4 or 128 (V4 compress_ratios), got {ratio}")
    c = 2 if ratio == 4 else 1
    if kv.ndim != 3 or kv.shape[-1] % c or kv.shape[-1] // c <= rope_dim:
        raise ValueError(
            f"kv must be [B, T, {c}*D] with D > rope_dim={rope_dim}, got {tuple(kv.shape)}"
        )
    b, t, cd = kv.shape
    d, g = cd // c, t // ratio
    if t % ratio:
        raise ValueError(f"T={t} is not a multiple of ratio={ratio}")
    if score.shape != kv.shape:
        raise ValueError(
            f"score must have the shape of kv {tuple(kv.shape)}, got {tuple(score.shape)}"
        )
    if ape.shape != (ratio, cd):
        raise ValueError(f"ape must be [ratio, C*D] = [{ratio}, {cd}], got {tuple(ape.shape)}")
    if norm_weight.shape != (d,):
        raise ValueError(f"norm_weight must be [D] = [{d}], got {tuple(norm_weight.shape)}")
    want = (b, g, rope_dim // 2)
    if cos.shape != want or sin.shape != want:
        raise ValueError(
            f"cos and sin must be [B, T/ratio, rope_dim/2] = {list(want)}, "
            f"got {tuple(cos.shape)} and {tuple(sin.shape)}"
        )
    if (prev_kv is None) != (prev_score is None):
        raise ValueError("prev_kv and prev_score must be given together (or both None)")
    if prev_kv is not None and prev_score is not None:
        if ratio != 4:
            raise ValueError(f"a previous window (prev_kv) applies to only ratio 4, got {ratio}")
        if prev_kv.shape != (b, ratio, cd) or prev_score.shape != (b, ratio, cd):
            raise ValueError(
                f"prev_kv and prev_score must be [B, ratio, C*D] = [{b}, {ratio}, {cd}], "
                f"got {tuple(prev_kv.shape)} and {tuple(prev_score.shape)}"
            )


def compress_reference(
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
    rope_dim: int = 64,
) -> torch.Tensor:
    """Compress complete windows of projected tokens into entries (bf16 values).

    Args:
        kv: [B, T, C * D], float32, `wkv(x)`; C = 2 when ratio == 4 (overlap), else 1; T a
            multiple of `ratio`.
        score: [B, T, C * D], float32, `wgate(x)`.
        ape: [ratio, C * D], float32, learned positional bias.
        norm_weight: [D], float32, RMSNorm weight.
        cos: [B, T // ratio, rope_dim // 2], float32, rotation of each entry: entry g at
            absolute position g * ratio (its window's first token), as the official code.
        sin: [B, T // ratio, rope_dim // 2], float32.
        ratio: 4 (CSA, overlapping) or 128 (HCA).
        prev_kv: [B, ratio, C * D], float32, the window before the first one (overlap only);
            None at the start of a sequence (those rows get weight 0).
        prev_score: [B, ratio, C * D], float32, its `wgate` rows (None with prev_kv None).
        eps: RMSNorm epsilon.
        rope_dim: rotated trailing dims.

    Returns:
        [B, T // ratio, D], bfloat16.

    Raises:
        ValueError: inconsistent shapes (`check_compress_inputs`).
    """
    check_compress_inputs(
        kv, score, ape, norm_weight, cos, sin, ratio, prev_kv, prev_score, rope_dim
    )
    b, t, cd = kv.shape
    overlap = ratio == 4
    c = 2 if overlap else 1
    d = cd // c
    g = t // ratio
    kvw = kv.float().reshape(b, g, ratio, cd)
    scw = score.float().reshape(b, g, ratio, cd) + ape.float()
    if overlap:
        rows_kv = torch.zeros(b, g, 2 * ratio, d, dtype=torch.float32, device=kv.device)
        rows_sc = torch.full_like(rows_kv, float("-inf"))
        rows_kv[:, :, ratio:] = kvw[..., d:]
        rows_sc[:, :, ratio:] = scw[..., d:]
        rows_kv[:, 1:, :ratio] = kvw[:, :-1, :, :d]
        rows_sc[:, 1:, :ratio] = scw[:, :-1, :, :d]
        if prev_kv is not None and prev_score is not None:
            rows_kv[:, 0, :ratio] = prev_kv.float()[..., :d]
            rows_sc[:, 0, :ratio] = prev_score.float()[..., :d] + ape.float()[:, :d]
    else:
        rows_kv, rows_sc = kvw, scw
    pooled = (rows_kv * torch.softmax(rows_sc, dim=2)).sum(dim=2)
    y = rms_norm_bf16(pooled, norm_weight, eps)
    rot = rope_interleaved(y[..., d - rope_dim :], cos.float(), sin.float())
    y = torch.cat([y[..., : d - rope_dim], rot], dim=-1)
    return y.to(torch.bfloat16)


def compress_reference_fp8(
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
) -> torch.Tensor:
    """As `compress_reference` (D = 512), as fp8_ds_mla entries: [B, T // ratio, 584] uint8."""
    y = compress_reference(kv, score, ape, norm_weight, cos, sin, ratio, prev_kv, prev_score, eps)
    return quantize_fp8_ds_mla(y)
