"""Lightning indexer of DeepSeek-V4 CSA layers with a fused top-k.

Public API: `index_topk`. Math: README.md beside this file.
"""

from __future__ import annotations

import torch

from dsv4_kernels.impl import Impl, use_triton
from dsv4_kernels.indexer.reference import index_logits_reference, index_topk_reference

__all__ = ["index_logits_reference", "index_topk", "index_topk_reference"]


def index_topk(
    q: torch.Tensor,
    weights: torch.Tensor,
    key_pages: torch.Tensor,
    block_table: torch.Tensor,
    positions: torch.Tensor,
    seq_ids: torch.Tensor,
    topk: int,
    page_size: int = 64,
    ratio: int = 4,
    max_keys: int | None = None,
    impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score every complete compressed entry and return the `topk` best per query token.

    logit[t, j] = Σ_h weights[t, h] · relu(q[t, h] · k_j) for entries j < (positions[t] + 1) //
    ratio of sequence seq_ids[t]; k_j = e4m3 key * float32 scale. The Triton path never writes
    the logits to memory.

    Args:
        q: [T, H, 128], float8_e4m3fn (or uint8 bytes of it), index queries (H = 64).
        weights: [T, H], float32, per-head weights (softmax scale and q scale folded in).
        key_pages: [P, W], uint8, W >= page_size * 132: per page, page_size*128 e4m3 key bytes,
            then page_size float32 scales (`dsv4_kernels.kv_format.pack_index_pages`); rows
            contiguous, the page stride (row stride) >= page_size * 132 and, like the start and
            W, a multiple of 4 bytes, so vLLM's padded key blocks (8,640 B for 64 keys) are read
            in place.
        block_table: [B, max_pages], int32: entry j of sequence b is key j % page_size of page
            block_table[b, j // page_size].
        positions: [T], int32, absolute position of each query token.
        seq_ids: [T], int32, block-table row of each query token. Values are not checked on
            the Triton path (a sync): seq_ids < B and, for every complete entry, a
            block_table column and a page id < P are the caller's promise; otherwise the
            kernel reads out of bounds (garbage or a crash).
        topk: K, a power of two (512 V4-Flash, 1024 V4-Pro: `index_topk`).
        page_size: keys per page (vLLM C4 block: 64).
        ratio: 4 (CSA).
        max_keys: the largest (positions + 1) // ratio in the batch (computed, with a sync,
            when None; Triton path only, the reference ignores it). Not checked: a smaller
            value makes the Triton path silently skip every key past it (wrong top-k).
        impl: "auto" | "triton" | "reference".

    Returns:
        (indices: [T, K], int32, logical entry ids for `dsv4_kernels.csa.csa_attention`;
        -1 = no entry (fewer than K complete entries); values: [T, K], float32, their logits,
        -inf at -1). The Triton path returns them in no particular order, the reference
        sorted by descending logit; ties at the K-th value may pick different ids.

    Raises:
        ValueError: `topk` not a power of two >= 1 (both paths, so that a CPU run with
            impl="reference" fails as the kernel would), or a bad shape or dtype.
    """
    if topk < 1 or topk & (topk - 1):
        raise ValueError(f"topk must be a power of two (512 Flash, 1024 Pro), got {topk}")
    if use_triton(impl, q.device):
        from dsv4_kernels.indexer.triton_indexer import index_topk_triton  # noqa: PLC0415  (triton loads only when the kernel runs)

        return index_topk_triton(
            q, weights, key_pages, block_table, positions, seq_ids, topk, page_size, ratio, max_keys
        )
    return index_topk_reference(
        q, weights, key_pages, block_table, positions, seq_ids, topk, page_size, ratio
    )
