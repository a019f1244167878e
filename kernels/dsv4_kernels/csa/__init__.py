"""CSA (compressed sparse attention, ratio 4) of DeepSeek-V4: top-k entries + the window.

Public API: `csa_attention`, `csa_attention_reference`. Math: README.md beside this file.
"""

from __future__ import annotations

import torch

from dsv4_kernels.impl import Impl
from dsv4_kernels.sparse_mla import sparse_mla_attention

__all__ = ["CSA_RATIO", "csa_attention", "csa_attention_reference"]

CSA_RATIO = 4
"""`compress_ratios` entry of CSA layers (model config)."""


def csa_attention(
    q: torch.Tensor,
    positions: torch.Tensor,
    seq_ids: torch.Tensor,
    swa_cache: torch.Tensor,
    swa_block_table: torch.Tensor,
    swa_page: int,
    comp_cache: torch.Tensor,
    comp_block_table: torch.Tensor,
    comp_page: int,
    topk_indices: torch.Tensor,
    sink: torch.Tensor | None,
    softmax_scale: float,
    window: int = 128,
    impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """CSA attention of each query token over its indexer-selected entries and its window.

    Args:
        q: [T, H, 512], bfloat16.
        positions: [T], int32, absolute positions (L = position + 1 tokens seen).
        seq_ids: [T], int32, block-table row of each token.
        swa_cache: [P_w, row bytes], uint8, paged fp8_ds_mla raw tokens (vLLM's block
            layout, `dsv4_kernels.kv_format`), paged by `swa_block_table`.
        swa_block_table: [B, P_w], int32.
        swa_page: tokens per SWA page.
        comp_cache: [P_c, row bytes], uint8, paged fp8_ds_mla ratio-4 entries.
        comp_block_table: [B, P_c], int32.
        comp_page: entries per compressed page (256-token blocks: 64).
        topk_indices: [T, K], int32, logical entry ids from `dsv4_kernels.indexer.index_topk`
            (K = 512 Flash, 1024 Pro); -1 = no entry, skipped; ids >= L // 4 are skipped too;
            an id listed twice is attended twice (`index_topk` never repeats one).
        sink: [H], float32 per-head sink logit, or None.
        softmax_scale: multiplies q·k (512 ** -0.5).
        window: 128.
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
        CSA_RATIO,
        topk_indices,
        sink,
        softmax_scale,
        window,
        None,
        impl,
    )


def csa_attention_reference(
    q: torch.Tensor,
    positions: torch.Tensor,
    seq_ids: torch.Tensor,
    swa_cache: torch.Tensor,
    swa_block_table: torch.Tensor,
    swa_page: int,
    comp_cache: torch.Tensor,
    comp_block_table: torch.Tensor,
    comp_page: int,
    topk_indices: torch.Tensor,
    sink: torch.Tensor | None,
    softmax_scale: float,
    window: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch CSA attention (`csa_attention` with impl="reference")."""
    return csa_attention(
        q,
        positions,
        seq_ids,
        swa_cache,
        swa_block_table,
        swa_page,
        comp_cache,
        comp_block_table,
        comp_page,
        topk_indices,
        sink,
        softmax_scale,
        window,
        impl="reference",
    )
