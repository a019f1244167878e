"""Sparse MLA attention over [SWA window | compressed entries] (shared by HCA and CSA).

Public API: `sparse_mla_attention`. Math: README.md beside this file.
"""

from __future__ import annotations

import torch

from dsv4_kernels.impl import Impl, use_triton
from dsv4_kernels.sparse_mla.reference import entry_slots, sparse_mla_reference, window_slots

__all__ = ["entry_slots", "sparse_mla_attention", "sparse_mla_reference", "window_slots"]


def sparse_mla_attention(
    q: torch.Tensor,
    positions: torch.Tensor,
    seq_ids: torch.Tensor,
    swa_cache: torch.Tensor,
    swa_block_table: torch.Tensor,
    swa_page: int,
    comp_cache: torch.Tensor,
    comp_block_table: torch.Tensor,
    comp_page: int,
    ratio: int,
    comp_indices: torch.Tensor | None,
    sink: torch.Tensor | None,
    softmax_scale: float,
    window: int = 128,
    max_comp: int | None = None,
    impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of query tokens over their SWA window and compressed KV entries.

    Query token t belongs to sequence `seq_ids[t]` at absolute position `positions[t]`; it sees
    L = positions[t] + 1 tokens (its own KV already written). It attends to the raw tokens
    max(0, L - window) .. L - 1 and to compressed entries e < L // ratio (complete entries only:
    the causal limit at compression boundaries). Decode is T = batch (one token each); prefill
    and MTP are several tokens of one sequence with consecutive positions.

    Args:
        q: [T, H, 512], bfloat16, queries after RoPE (H = 64 Flash, 128 Pro).
        positions: [T], int32, absolute positions.
        seq_ids: [T], int32, block-table row of each token.
        swa_cache: [P_w, row bytes], uint8, paged fp8_ds_mla raw-token cache in vLLM's block
            layout (`dsv4_kernels.kv_format`: `swa_page` 576-byte records, then `swa_page`
            8-byte scale records; rows of >= swa_page * 584 bytes at a row stride, the page
            stride, >= that, e.g. a vLLM cache block; `kv_format.check_paged_cache`);
            token i of sequence b is token i % swa_page of page `swa_block_table[b, i //
            swa_page]`.
        swa_block_table: [B, P_w], int32.
        swa_page: tokens per SWA page (vLLM: 64).
        comp_cache: [P_c, row bytes], uint8, paged fp8_ds_mla compressed cache (same
            layout, pages of `comp_page` entries); entry e of sequence b is entry e % comp_page
            of page `comp_block_table[b, e // comp_page]`.
        comp_block_table: [B, P_c], int32.
        comp_page: entries per compressed page (256-token blocks: 256 // ratio, i.e. 2 for HCA
            and 64 for CSA).
        ratio: compression ratio (128 HCA, 4 CSA).
        comp_indices: None for HCA (attend to all complete entries), or [T, K] int32 CSA top-k
            logical entry ids; -1 means "no entry" and is skipped, as are ids >= L // ratio
            (any negative id is skipped); an id listed twice is attended twice.
        sink: [H], float32, per-head sink logit (denominator only), or None.
        softmax_scale: multiplies q·k (V4: 512 ** -0.5).
        window: SWA length (128).
        max_comp: HCA only: the largest L // ratio in the batch (computed, with a device sync,
            when None).
        impl: "auto" | "triton" | "reference".

    Index values are the caller's promise on the Triton path (checking them needs a device
    sync): 0 <= seq_ids < B, positions >= 0, a block-table column for every page a token reads
    and page ids < the cache's pages. Otherwise the kernel reads out of bounds (garbage, a
    crash). The reference path checks them (`reference.check_attention_values`).

    Returns:
        (out: [T, H, 512], bfloat16; lse: [T, H], float32, natural-log softmax denominator
        including the sink; -inf and out = 0 when nothing is attended and there is no sink).
    """
    if use_triton(impl, q.device):
        from dsv4_kernels.sparse_mla.triton_attention import sparse_mla_triton  # noqa: PLC0415  (triton loads only when the kernel runs)

        return sparse_mla_triton(
            q,
            positions,
            seq_ids,
            swa_cache,
            swa_block_table,
            swa_page,
            comp_cache,
            comp_block_table,
            comp_page,
            ratio,
            comp_indices,
            sink,
            softmax_scale,
            window,
            max_comp,
        )
    return sparse_mla_reference(
        q,
        positions,
        seq_ids,
        swa_cache,
        swa_block_table,
        swa_page,
        comp_cache,
        comp_block_table,
        comp_page,
        ratio,
        comp_indices,
        sink,
        softmax_scale,
        window,
    )
