"""HCA (heavily compressed attention, ratio 128) of DeepSeek-V4: decode and prefill.

Public API: `hca_attention`, `hca_attention_reference`. Math: README.md beside this file.
"""

from __future__ import annotations

import torch

from dsv4_kernels.impl import Impl
from dsv4_kernels.sparse_mla import sparse_mla_attention

__all__ = ["HCA_RATIO", "hca_attention", "hca_attention_reference"]

HCA_RATIO = 128
"""`compress_ratios` entry of HCA layers (model config)."""


def hca_attention(
    q: torch.Tensor,
    positions: torch.Tensor,
    seq_ids: torch.Tensor,
    swa_cache: torch.Tensor,
    swa_block_table: torch.Tensor,
    swa_page: int,
    comp_cache: torch.Tensor,
    comp_block_table: torch.Tensor,
    comp_page: int,
    sink: torch.Tensor | None,
    softmax_scale: float,
    window: int = 128,
    max_comp: int | None = None,
    impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """HCA attention for decode (T = batch, one token each) or prefill (consecutive positions).

    Query token t at position p sees L = p + 1 tokens: the raw window max(0, L-128) .. L-1 and
    all L // 128 complete compressed entries (entry e pools tokens [128e, 128e + 128); an
    incomplete last window is not attended: the causal limit at compression boundaries).

    Args:
        q: [T, H, 512], bfloat16.
        positions: [T], int32, absolute positions.
        seq_ids: [T], int32, block-table row of each token.
        swa_cache: [P_w, row bytes], uint8, paged fp8_ds_mla raw tokens (vLLM's block
            layout, `dsv4_kernels.kv_format`), paged by `swa_block_table`.
        swa_block_table: [B, P_w], int32.
        swa_page: tokens per SWA page.
        comp_cache: [P_c, row bytes], uint8, paged fp8_ds_mla compressed entries.
        comp_block_table: [B, P_c], int32.
        comp_page: entries per compressed page (256-token blocks: 2).
        sink: [H], float32 per-head sink logit, or None.
        softmax_scale: multiplies q·k (512 ** -0.5).
        window: 128.
        max_comp: the largest L // 128 in the batch (saves a device sync when given).
        impl: "auto" | "triton" | "reference".

    Returns:
        (out: [T, H, 512], bfloat16; lse: [T, H], float32, natural log, sink included).
    """
    return sparse_mla_attention(
        q,
        positions,
        seq_ids,
        swa_cache,
        swa_block_table,
        swa_page,
        comp_cache,
        comp_block_table,
        comp_page,
        HCA_RATIO,
        None,
        sink,
        softmax_scale,
        window,
        max_comp,
        impl,
    )


def hca_attention_reference(
    q: torch.Tensor,
    positions: torch.Tensor,
    seq_ids: torch.Tensor,
    swa_cache: torch.Tensor,
    swa_block_table: torch.Tensor,
    swa_page: int,
    comp_cache: torch.Tensor,
    comp_block_table: torch.Tensor,
    comp_page: int,
    sink: torch.Tensor | None,
    softmax_scale: float,
    window: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch HCA attention (`hca_attention` with impl="reference")."""
    return hca_attention(
        q,
        positions,
        seq_ids,
        swa_cache,
        swa_block_table,
        swa_page,
        comp_cache,
        comp_block_table,
        comp_page,
        sink,
        softmax_scale,
        window,
        impl="reference",
    )
