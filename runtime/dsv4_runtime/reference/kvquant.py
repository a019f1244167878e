"""FP8 KV-cache numerics (`kv_cache_dtype = "fp8_ds_mla"`), simulated in the model's dtype.

The official reference simulates FP8 on the KV NoPE dims (`act_quant(kv[..., :-rd], 64,
scale_fmt="ue8m0")`, QAT) and vLLM stores `fp8_ds_mla` entries: 448 NoPE dims as e4m3 with one
UE8M0 scale per 64-wide tile, the 64 RoPE dims as bf16 (facts doc §2.1, 584 B). The lightning
indexer's keys are FP8 with one power-of-two scale per key, stored as a float32 (132 B), and its
queries FP8 with one power-of-two scale per token and head, folded into the head weights: vLLM's
V4 `_fused_kv_compress_norm_rope_insert_indexer_attn` (keys, amax floored at 1e-4) and
`_fused_indexer_q_rope_quant_kernel` (queries, amax floored at 1e-10) both take
2 ** ceil(log2(amax / 448)) (UE8M0), consumed by DeepGEMM `fp8_mqa_logits`. These functions round
values to exactly what such a cache would return, so the PyTorch path and the `dsv4_kernels` path
(real FP8 bytes) see the same numbers.
"""

from __future__ import annotations

import torch

FP8_MAX = 448.0
#: amax floor of DeepSeek's `act_quant` and of vLLM's KV / index-key quantisers.
AMAX_FLOOR = 1e-4
#: amax floor of vLLM's indexer query quantiser (`_fused_indexer_q_rope_quant_kernel`).
QUERY_AMAX_FLOOR = 1e-10
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
    amax = nope.abs().amax(dim=-1, keepdim=True).clamp_min(AMAX_FLOOR)
    scale = torch.exp2(torch.ceil(torch.log2(amax / FP8_MAX)))
    nope = (_e4m3(nope / scale) * scale).reshape(*x.shape[:-1], nope_dim)
    rope = xf[..., nope_dim:].to(torch.bfloat16).float()
    return torch.cat((nope, rope), dim=-1).to(x.dtype)


def ue8m0_scale(amax: torch.Tensor, floor: float = AMAX_FLOOR) -> torch.Tensor:
    """Power-of-two FP8 scale 2 ** ceil(log2(max(amax, floor) / 448)), float32, amax's shape.

    vLLM's V4 quantisers compute amax · (1 / 448) before the log2; so does this.
    """
    return torch.exp2(torch.ceil(torch.log2(amax.float().clamp_min(floor) * (1.0 / FP8_MAX))))


def round_index_keys(k: torch.Tensor) -> torch.Tensor:
    """Round indexer keys (m, d) as FP8 with one power-of-two scale per key (`ue8m0_scale`)."""
    kf = k.float()
    scale = ue8m0_scale(kf.abs().amax(dim=-1, keepdim=True))
    return (_e4m3(kf / scale) * scale).to(k.dtype)


def quantize_index_queries(
    q: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 queries (n, h, d) as float32 e4m3 values, and weights (n, h) times the query scales.

    One power-of-two scale per (token, head) (`ue8m0_scale`, amax floored at 1e-10, as vLLM).
    relu(s·q·k) = s·relu(q·k) for s > 0, so folding the scale into the weight is exact.
    """
    qf = q.float()
    scale = ue8m0_scale(qf.abs().amax(dim=-1), QUERY_AMAX_FLOOR)
    return _e4m3(qf / scale.unsqueeze(-1)), weights.float() * scale
