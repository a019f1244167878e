"""Plain PyTorch reference of the V4 lightning indexer and its top-k.

For query token t (sequence `seq_ids[t]`, position p = positions[t]) and each complete
compressed entry j < n_valid = (p + 1) // ratio:

    logit[t, j] = Σ_h w[t, h] * relu(q[t, h] · k_j),   k_j = e4m3(k_j) * scale_j

(DeepGEMM `fp8_mqa_logits` semantics), then the `topk` largest logits are selected.
"""

from __future__ import annotations

import torch

from dsv4_kernels.kv_format import INDEX_DIM, INDEX_KEY_BYTES, page_stride


def check_index_inputs(
    q: torch.Tensor,
    weights: torch.Tensor,
    key_pages: torch.Tensor,
    block_table: torch.Tensor,
    positions: torch.Tensor,
    seq_ids: torch.Tensor,
    page_size: int,
    ratio: int,
) -> None:
    """Check shapes and dtypes (no device sync) as `dsv4_kernels.indexer.index_topk` documents.

    The Triton path reads q's bytes as e4m3 (a bfloat16 q became pairs of garbage codes), and
    weights / positions / seq_ids and the page layout with the shapes it derives from q and
    page_size (short ones were read past).

    Raises:
        ValueError: naming the argument, its shape or dtype and the one expected.
    """
    if q.dim() != 3 or q.shape[2] != INDEX_DIM or q.dtype not in (torch.float8_e4m3fn, torch.uint8):
        raise ValueError(
            f"q must be [T, H, {INDEX_DIM}] float8_e4m3fn (or its uint8 bytes), got "
            f"{tuple(q.shape)} {q.dtype}"
        )
    t_count, h = q.shape[0], q.shape[1]
    if weights.shape != (t_count, h):
        raise ValueError(f"weights must be [T={t_count}, H={h}], got {tuple(weights.shape)}")
    for name, v in (("positions", positions), ("seq_ids", seq_ids)):
        if v.shape != (t_count,) or v.is_floating_point() or v.dtype == torch.bool:
            raise ValueError(
                f"{name} must be [T={t_count}] integer, got {tuple(v.shape)} {v.dtype}"
            )
    if page_size < 1 or ratio < 1:
        raise ValueError(f"page_size={page_size} and ratio={ratio} must be >= 1")
    width = page_size * INDEX_KEY_BYTES
    if key_pages.dim() != 2 or key_pages.shape[1] < width or key_pages.dtype != torch.uint8:
        raise ValueError(
            f"key_pages must be [pages, >= page_size * {INDEX_KEY_BYTES} = {width}] uint8, got "
            f"{tuple(key_pages.shape)} {key_pages.dtype}"
            + (
                ": pass a [blocks, block_size, bytes] vLLM cache as key_pages.flatten(1)"
                if key_pages.dim() == 3
                else ""
            )
        )
    stride = page_stride(key_pages)
    if (
        key_pages.stride(1) != 1
        or stride < width
        or stride % 4
        or key_pages.storage_offset() % 4
        or key_pages.shape[1] % 4
    ):
        raise ValueError(
            f"key_pages must have contiguous rows, a page stride >= {width} and a start, row "
            f"width and page stride that are multiples of 4 bytes (the float32 scales), got "
            f"shape {tuple(key_pages.shape)}, strides {key_pages.stride()}, offset "
            f"{key_pages.storage_offset()}"
        )
    if block_table.dim() != 2 or block_table.is_floating_point() or block_table.dtype == torch.bool:
        raise ValueError(
            f"block_table must be [B, pages] integer, got {tuple(block_table.shape)} "
            f"{block_table.dtype}"
        )


def index_logits_reference(
    q: torch.Tensor,
    weights: torch.Tensor,
    key_pages: torch.Tensor,
    block_table: torch.Tensor,
    positions: torch.Tensor,
    seq_ids: torch.Tensor,
    page_size: int = 64,
    ratio: int = 4,
) -> torch.Tensor:
    """All logits (the tensor the fused kernel never writes).

    Args:
        q: [T, H, 128], float8_e4m3fn (or its uint8 bytes), index queries.
        weights: [T, H], float32, per-head weights.
        key_pages: [P, page_size * 132], uint8, FP8 index keys (layout in `kv_format`).
        block_table: [B, max_pages], int32.
        positions: [T], int, absolute positions.
        seq_ids: [T], int.
        page_size: keys per page.
        ratio: compression ratio of the keys (4).

    Returns:
        [T, N_max], float32, N_max = max over t of n_valid; -inf at j >= n_valid[t].

    Raises:
        ValueError: a shape or dtype other than documented (`check_index_inputs`), or a
            seq_id, block-table width or page id that a token's keys fall outside of.
    """
    check_index_inputs(q, weights, key_pages, block_table, positions, seq_ids, page_size, ratio)
    qf = (q.view(torch.float8_e4m3fn) if q.dtype == torch.uint8 else q).float()
    n_valid = (positions.long() + 1) // ratio
    t_count = q.shape[0]
    n_max = int(n_valid.max()) if t_count else 0
    out = torch.full((t_count, n_max), float("-inf"), dtype=torch.float32, device=q.device)
    width = page_size * INDEX_KEY_BYTES  # a vLLM page may be padded past it
    kb = key_pages[:, : page_size * INDEX_DIM].contiguous().view(torch.float8_e4m3fn)
    kb = kb.reshape(-1, page_size, INDEX_DIM)
    ks = key_pages[:, page_size * INDEX_DIM : width].contiguous().view(torch.float32)
    for t in range(t_count):
        n = int(n_valid[t])
        if n == 0:
            continue
        j = torch.arange(n, device=q.device)
        b = int(seq_ids[t])
        if not 0 <= b < block_table.shape[0]:
            raise ValueError(
                f"seq_ids must index rows of block_table (0 <= seq_id < "
                f"{block_table.shape[0]}), got {b} for token {t}"
            )
        if (n - 1) // page_size >= block_table.shape[1]:
            raise ValueError(
                f"block_table has {block_table.shape[1]} pages per sequence; token {t} "
                f"(position {int(positions[t])}) needs page {(n - 1) // page_size} "
                f"(page_size={page_size})"
            )
        pg = block_table[b].long()[j // page_size]
        if int(pg.min()) < 0 or int(pg.max()) >= kb.shape[0]:
            bad = int(pg.min()) if int(pg.min()) < 0 else int(pg.max())
            raise ValueError(
                f"block_table holds page id {bad} where token {t} reads: page ids must be in "
                f"[0, {kb.shape[0]}) (key_pages' pages)"
            )
        keys = kb[pg, j % page_size].float() * ks[pg, j % page_size][:, None]  # [n, 128]
        s = torch.relu(qf[t] @ keys.T)  # [H, n]
        out[t, :n] = (weights[t].float()[:, None] * s).sum(dim=0)
    return out


def index_topk_reference(
    q: torch.Tensor,
    weights: torch.Tensor,
    key_pages: torch.Tensor,
    block_table: torch.Tensor,
    positions: torch.Tensor,
    seq_ids: torch.Tensor,
    topk: int,
    page_size: int = 64,
    ratio: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits, then `torch.topk`; arguments as `index_logits_reference`.

    Returns:
        (indices: [T, topk], int32, entry ids, -1 where fewer than topk entries exist;
        values: [T, topk], float32, their logits, -inf at -1), sorted by descending logit.
    """
    logits = index_logits_reference(
        q, weights, key_pages, block_table, positions, seq_ids, page_size, ratio
    )
    t_count, n_max = logits.shape
    if n_max < topk:
        pad = torch.full((t_count, topk - n_max), float("-inf"), device=logits.device)
        logits = torch.cat([logits, pad], dim=1)
    vals, idx = torch.topk(logits, topk, dim=1)
    # -1 exactly at the -inf padding: a real entry whose logit overflowed to +inf (or is NaN)
    # keeps its id, as the kernel's.
    idx = torch.where(vals == float("-inf"), -1, idx).to(torch.int32)
    return idx, vals


__all__ = ["INDEX_KEY_BYTES", "index_logits_reference", "index_topk_reference"]
