"""FP8 KV-cache numerics (`kv_cache_dtype = "fp8_ds_mla"`), simulated in the model's dtype.

The official reference simulates FP8 on the KV NoPE dims (`act_quant(kv[..., :-rd], 64,
scale_fmt="ue8m0")`, QAT) and vLLM stores `fp8_ds_mla` entries: 448 NoPE dims as e4m3 with one
UE8M0 scale per 64-wide tile, the 64 RoPE dims as bf16 (facts doc §2.1, 584 B). The lightning
indexer's keys are FP8 with one float32 scale per key (132 B), the power of two
2 ** ceil(log2(max(amax, 1e-4) / 448)) as vLLM's V4 indexer and
`dsv4_kernels.kv_format.quantize_index_keys` pick it, and its queries FP8 with one scale per
token and head, 2 ** ceil(log2(max(amax, 1e-10) / 448)) as vLLM's
`_fused_indexer_q_rope_quant_kernel` picks it, folded into the head weights (vLLM / DeepGEMM
`fp8_mqa_logits` layout). These functions round values to exactly what the
`dsv4_kernels` formats hold, so the PyTorch path and the `dsv4_kernels` path (real FP8 bytes)
see the same numbers.
"""

from __future__ import annotations

import torch

from dsv4_kernels.kv_format import pow2, ue8m0_scale_exponent

FP8_MAX = 448.0
AMAX_FLOOR = 1e-4
"""amax floor of the KV and index-key scales (DeepSeek's act_quant, vLLM's cache inserts)."""
Q_AMAX_FLOOR = 1e-10
"""amax floor of the index queries' scales (vLLM's `_fused_indexer_q_rope_quant_kernel`)."""
TILE = 64


def _e4m3(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float()


def round_main_kv(x: torch.Tensor, rope_dim: int) -> torch.Tensor:
    """Round KV rows (..., D) as an fp8_ds_mla cache stores them; same dtype as x.

    Raises:
        ValueError: when the NoPE width D - rope_dim is not a multiple of 64.
    """
    nope_dim = x.shape[-1] - rope_dim
    if nope_dim % TILE:
        msg = f"NoPE width {nope_dim} must be a multiple of {TILE} for the FP8 KV cache"
        raise ValueError(msg)
    xf = x.float()
    nope = xf[..., :nope_dim].reshape(*x.shape[:-1], nope_dim // TILE, TILE)
    scale = pow2_scale(nope.abs().amax(dim=-1, keepdim=True))
    nope = (_e4m3(nope / scale) * scale).reshape(*x.shape[:-1], nope_dim)
    rope = xf[..., nope_dim:].to(torch.bfloat16).float()
    return torch.cat((nope, rope), dim=-1).to(x.dtype)


def pow2_scale(amax: torch.Tensor, floor: float = AMAX_FLOOR) -> torch.Tensor:
    """2 ** ceil(log2(max(amax, floor) / 448)), float32, exact (from the float bits).

    The UE8M0 scale rule of vLLM's V4 caches and DeepSeek's `act_quant(..., scale_fmt="ue8m0")`;
    `torch.log2` rounds log2 of a value a few ulps above a power of two down to that power,
    which would pick half the scale: the same values except in the e4m3 subnormal range
    (elements below 2^-6 of the scale), but not the bytes `dsv4_kernels.kv_format` stores.

    Args:
        amax: [...], the absolute maxima (>= 0) of the blocks.
        floor: the amax floor (1e-4: KV and keys, scale >= 2**-22; 1e-10: index queries,
            >= 2**-42).

    Returns:
        [...], float32 powers of two, at most 2**120: `dsv4_kernels.kv_format.ue8m0_scale_exponent`,
        the exponent the kernels' formats store, built into a float from its bits.
    """
    return pow2(ue8m0_scale_exponent(amax, floor))


def round_index_keys(k: torch.Tensor) -> torch.Tensor:
    """Round indexer keys (m, d) as FP8 with one power-of-two float32 scale per key (`pow2_scale`).

    The values `dsv4_kernels.kv_format.quantize_index_keys` stores (vLLM's rule); same dtype as k.
    """
    kf = k.float()
    scale = pow2_scale(kf.abs().amax(dim=-1, keepdim=True))
    return (_e4m3(kf / scale) * scale).to(k.dtype)


def quantize_index_queries(
    q: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 queries (n, h, d) as float32 e4m3 values, and weights (n, h) times the query scales.

    The scale per (token, head) is vLLM's: `pow2_scale(amax, 1e-10)`. relu(s·q·k) = s·relu(q·k)
    for s > 0, so folding it into the weight is exact.
    """
    qf = q.float()
    scale = pow2_scale(qf.abs().amax(dim=-1), Q_AMAX_FLOOR)
    return _e4m3(qf / scale.unsqueeze(-1)), weights.float() * scale
