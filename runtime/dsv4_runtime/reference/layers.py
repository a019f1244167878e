"""Building blocks: RMSNorm, RoPE with YaRN, Sinkhorn-projected hyper-connections (mHC).

Formulas follow DeepSeek-V4's reference `inference/model.py` (RMSNorm, `precompute_freqs_cis`,
`apply_rotary_emb`, `Block.hc_pre/hc_post`, `ParallelHead.hc_head`) and its kernel
`hc_split_sinkhorn`; vLLM's `deepseek_v4.py` uses the same parameters (facts doc §3, source S1).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dim with a learned gain (fp32 math).

    Args:
        dim: size of the normalised (last) dimension.
        eps: added to the mean square; `rms_norm_eps` = 1e-6 in the config.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise `x` (..., dim); returns the same shape and dtype."""
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.eps)
        return (self.weight.float() * xf).to(dtype)


def rms_scale(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Weightless RMS normalisation over the last dim (the per-head query norm of V4 attention)."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)).to(x.dtype)


@lru_cache(maxsize=16)
def _inv_freq(
    dim: int,
    base: float,
    *,
    factor: float,
    original_seq_len: int,
    beta_fast: int,
    beta_slow: int,
) -> torch.Tensor:
    """Per-pair inverse frequencies (dim/2,) float32, YaRN-interpolated when `original_seq_len` > 0.

    float32 as DeepSeek's `precompute_freqs_cis` and vLLM's `DeepseekScalingRotaryEmbedding`
    compute them: the model's RoPE tables are float32 tables, and float64 ones differ from them
    by up to 0.025 in cos/sin at 1M positions.
    """

    def correction_dim(num_rotations: float) -> float:
        return (
            dim * math.log(original_seq_len / (num_rotations * 2 * math.pi)) / (2 * math.log(base))
        )

    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") / dim))
    if original_seq_len > 0:
        low = max(math.floor(correction_dim(beta_fast)), 0)
        high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
        if low == high:
            high += 0.001  # type: ignore[assignment]  # the reference's guard against a zero range
        ramp = (
            (torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low)
        ).clamp(0, 1)
        smooth = 1 - ramp
        freqs = freqs / factor * (1 - smooth) + freqs * smooth
    return freqs


class Rope:
    """Interleaved-pair rotary embedding on the last `dim` features (is_neox_style=False).

    Layers with compression use `compress_rope_theta` and YaRN (factor 16, original 65536,
    beta 32/1); window-only layers use `rope_theta` without YaRN, as in the reference
    `Attention.__init__`. No YaRN mscale (vLLM sets mscale = 0, the reference has none).
    """

    def __init__(
        self,
        dim: int,
        base: float,
        *,
        factor: float,
        original_seq_len: int,
        beta_fast: int,
        beta_slow: int,
    ) -> None:
        self.dim = dim
        self.inv_freq = _inv_freq(
            dim,
            base,
            factor=factor,
            original_seq_len=original_seq_len,
            beta_fast=beta_fast,
            beta_slow=beta_slow,
        )

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cos and sin tables (n, dim/2), float32, for integer `positions` (n,).

        Angles are float32 products position × inverse frequency, as in DeepSeek's
        `precompute_freqs_cis` (`torch.outer(t, freqs)`) and vLLM's float32 cos/sin cache;
        positions stay exact in float32 up to 2**24 (> `max_position_embeddings`, 2**20).
        """
        angles = positions.to(torch.float32).unsqueeze(-1) * self.inv_freq.to(positions.device)
        return angles.cos(), angles.sin()

    def apply(
        self, x: torch.Tensor, positions: torch.Tensor, inverse: bool = False
    ) -> torch.Tensor:
        """Rotate the last `dim` features of `x` (n, ..., D) by `positions` (n,); returns a copy.

        `inverse=True` rotates back (used on the attention output, as the reference does).
        """
        cos, sin = self.cos_sin(positions)
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (self.dim // 2,)
        cos = cos.view(shape)
        sin = sin.view(shape) * (-1.0 if inverse else 1.0)
        rot = x[..., -self.dim :].float().reshape(*x.shape[:-1], self.dim // 2, 2)
        a, b = rot[..., 0], rot[..., 1]
        out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
        return torch.cat((x[..., : -self.dim], out.to(x.dtype)), dim=-1)


def hc_split_sinkhorn(
    mixes: torch.Tensor,
    hc_scale: torch.Tensor,
    hc_base: torch.Tensor,
    *,
    hc_mult: int,
    iters: int,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split mHC mixing logits into pre (n, hc), post (n, hc) and comb (n, hc, hc) weights.

    pre = sigmoid(·) + eps; post = 2·sigmoid(·); comb = row softmax + eps, then alternating
    column/row normalisation for `iters` Sinkhorn-Knopp iterations in total (20 in the config,
    eps = hc_eps = 1e-6), which projects comb onto (near) doubly-stochastic matrices [mHC paper,
    DeepSeek `hc_split_sinkhorn` kernel].
    """
    hc = hc_mult
    pre = torch.sigmoid(mixes[..., :hc] * hc_scale[0] + hc_base[:hc]) + eps
    post = 2 * torch.sigmoid(mixes[..., hc : 2 * hc] * hc_scale[1] + hc_base[hc : 2 * hc])
    logits = mixes[..., 2 * hc :].reshape(*mixes.shape[:-1], hc, hc) * hc_scale[2] + hc_base[
        2 * hc :
    ].view(hc, hc)
    comb = torch.softmax(logits, dim=-1) + eps
    comb = comb / (comb.sum(dim=-2, keepdim=True) + eps)
    for _ in range(iters - 1):
        comb = comb / (comb.sum(dim=-1, keepdim=True) + eps)
        comb = comb / (comb.sum(dim=-2, keepdim=True) + eps)
    return pre, post, comb


def hc_mixes(x: torch.Tensor, hc_fn: torch.Tensor, eps: float) -> torch.Tensor:
    """RMS-scaled mixing logits: (n, hc, d) streams → (n, rows of hc_fn), float32."""
    flat = x.flatten(1).float()
    return F.linear(flat, hc_fn.float()) * torch.rsqrt(flat.square().mean(-1, keepdim=True) + eps)


def hc_pre(
    x: torch.Tensor,
    hc_fn: torch.Tensor,
    hc_scale: torch.Tensor,
    hc_base: torch.Tensor,
    *,
    hc_mult: int,
    iters: int,
    rms_eps: float,
    hc_eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Collapse the residual streams (n, hc, d) into one sublayer input (n, d).

    Returns the input and the post (n, hc) and comb (n, hc, hc) weights for `hc_post`.
    """
    mixes = hc_mixes(x, hc_fn, rms_eps)
    pre, post, comb = hc_split_sinkhorn(
        mixes, hc_scale, hc_base, hc_mult=hc_mult, iters=iters, eps=hc_eps
    )
    y = (pre.unsqueeze(-1) * x.float()).sum(dim=1)
    return y.to(x.dtype), post, comb


def hc_post(
    out: torch.Tensor, residual: torch.Tensor, post: torch.Tensor, comb: torch.Tensor
) -> torch.Tensor:
    """New streams (n, hc, d): stream j = post_j·out + Σ_i comb[i, j]·residual_i."""
    y = post.unsqueeze(-1) * out.float().unsqueeze(1) + torch.einsum(
        "nij,nid->njd", comb, residual.float()
    )
    return y.to(out.dtype)


def hc_head(
    x: torch.Tensor,
    hc_fn: torch.Tensor,
    hc_scale: torch.Tensor,
    hc_base: torch.Tensor,
    *,
    rms_eps: float,
    hc_eps: float,
) -> torch.Tensor:
    """Merge the streams (n, hc, d) into (n, d) before the final norm: sigmoid weights + eps."""
    mixes = hc_mixes(x, hc_fn, rms_eps)
    pre = torch.sigmoid(mixes * hc_scale + hc_base) + hc_eps
    return (pre.unsqueeze(-1) * x.float()).sum(dim=1).to(x.dtype)


class Linear(nn.Module):
    """Bias-free linear layer holding a dense (dequantised) weight (out, in).

    Checkpoint formats (FP8 block, MXFP4) are dequantised on load by `checkpoint.py`, so the
    forward pass is a plain matmul in the weight's dtype.
    """

    def __init__(
        self, in_features: int, out_features: int, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype))

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map x (..., in) → (..., out) in the dtype of the weight."""
        return F.linear(x.to(self.weight.dtype), self.weight)
