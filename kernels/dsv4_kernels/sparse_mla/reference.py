"""Plain PyTorch reference of V4 sparse MLA attention over [window | compressed entries].

Each query token t (sequence `seq_ids[t]`, absolute position `positions[t]`, so it sees
L = positions[t] + 1 tokens) attends, with all H heads sharing one 512-d KV head (K = V):

- the window: raw tokens max(0, L - window) .. L - 1 of the SWA cache;
- compressed entries: all n_c = L // ratio complete entries (HCA, `comp_indices` None), or the
  listed entry ids (CSA top-k), -1 = no entry, ids >= n_c are ignored (not yet complete).

    s_j = softmax_scale * q · k_j
    out = Σ_j exp(s_j) k_j / (exp(sink_h) + Σ_j exp(s_j));   lse = log(exp(sink_h) + Σ_j exp(s_j))

Caches are paged: token (or entry) i of a sequence lives in slot
`block_table[seq, i // page] * page + i % page`, i.e. token i % page of page
`block_table[seq, i // page]` of a [pages, page_stride] uint8 fp8_ds_mla cache in vLLM's block
layout (`dsv4_kernels.kv_format`).
"""

from __future__ import annotations

import torch

from dsv4_kernels.kv_format import HEAD_DIM, check_paged_cache, dequantize_fp8_ds_mla, read_entries


def window_slots(
    positions: torch.Tensor,
    seq_ids: torch.Tensor,
    block_table: torch.Tensor,
    page: int,
    window: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cache slots of each query token's window.

    Args:
        positions: [T], int, absolute position of each query token.
        seq_ids: [T], int, sequence (block-table row) of each query token.
        block_table: [B, max_pages], int32, page ids of the SWA cache.
        page: tokens per SWA page.
        window: window length (128 in V4).

    Returns:
        (slots: [T, window], int64, 0 where invalid; valid: [T, window], bool).
    """
    pos = positions.long()[:, None] - window + 1 + torch.arange(window, device=positions.device)
    valid = pos >= 0
    pos = pos.clamp(min=0)
    pages = block_table.long()[seq_ids.long()[:, None], pos // page]
    return torch.where(valid, pages * page + pos % page, 0), valid


def entry_slots(
    entries: torch.Tensor,
    n_valid: torch.Tensor,
    seq_ids: torch.Tensor,
    block_table: torch.Tensor,
    page: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cache slots of compressed entry ids (-1 or >= n_valid: invalid).

    Args:
        entries: [T, K], int, logical entry ids per query token.
        n_valid: [T], int, complete entries for each query token.
        seq_ids: [T], int.
        block_table: [B, max_pages], int32, page ids of the compressed cache.
        page: entries per compressed page.

    Returns:
        (slots: [T, K], int64, 0 where invalid; valid: [T, K], bool).
    """
    e = entries.long()
    valid = (e >= 0) & (e < n_valid.long()[:, None])
    e = torch.where(valid, e, 0)
    pages = block_table.long()[seq_ids.long()[:, None], e // page]
    return torch.where(valid, pages * page + e % page, 0), valid


def check_attention_inputs(
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
    window: int,
) -> None:
    """Check shapes and dtypes (no device sync) as `sparse_mla_attention` documents them.

    A wrong shape made the Triton kernel read past a tensor (garbage output, or a crash) and
    the reference broadcast it (a [1] seq_ids or a [1, K] comp_indices served every token).
    Values (seq_ids < B, positions inside the block tables) are not checked: that needs a sync.

    Raises:
        ValueError: naming the argument, its shape or dtype and the one expected.
    """
    if q.dim() != 3 or q.shape[2] != HEAD_DIM or not q.is_floating_point():
        raise ValueError(f"q must be [T, H, {HEAD_DIM}] floating, got {tuple(q.shape)} {q.dtype}")
    t_count, h = q.shape[0], q.shape[1]
    for name, v in (("positions", positions), ("seq_ids", seq_ids)):
        if v.shape != (t_count,) or v.is_floating_point() or v.dtype == torch.bool:
            raise ValueError(
                f"{name} must be [T={t_count}] integer, got {tuple(v.shape)} {v.dtype}"
            )
    for name, n in (("swa_page", swa_page), ("comp_page", comp_page), ("ratio", ratio)):
        if n < 1:
            raise ValueError(f"{name} must be >= 1, got {n}")
    check_paged_cache(swa_cache, swa_page, "swa_cache")
    check_paged_cache(comp_cache, comp_page, "comp_cache")
    for name, bt in (("swa_block_table", swa_block_table), ("comp_block_table", comp_block_table)):
        if bt.dim() != 2 or bt.is_floating_point() or bt.dtype == torch.bool:
            raise ValueError(f"{name} must be [B, pages] integer, got {tuple(bt.shape)} {bt.dtype}")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    if comp_indices is not None and (
        comp_indices.dim() != 2
        or comp_indices.shape[0] != t_count
        or comp_indices.is_floating_point()
        or comp_indices.dtype == torch.bool
    ):
        raise ValueError(
            f"comp_indices must be [T={t_count}, K] integer, got "
            f"{tuple(comp_indices.shape)} {comp_indices.dtype}"
        )
    if sink is not None and sink.shape != (h,):
        raise ValueError(f"sink must be [H={h}], got {tuple(sink.shape)}")


def check_attention_values(
    positions: torch.Tensor,
    seq_ids: torch.Tensor,
    swa_block_table: torch.Tensor,
    swa_page: int,
    swa_pages: int,
    comp_block_table: torch.Tensor,
    comp_page: int,
    comp_pages: int,
    ratio: int,
    comp_indices: torch.Tensor | None,
    window: int,
) -> None:
    """Check the index values the attention reads through (device syncs: reference path only).

    The Triton kernel does not check these (it would need a sync): out-of-range values read
    outside the tensors there (garbage or a crash). Here they raise instead of an IndexError
    that names no argument.

    Args:
        positions: [T], int, absolute positions (>= 0).
        seq_ids: [T], int, rows of both block tables (0 <= seq_id < B).
        swa_block_table: [B, P_w], int, page ids < `swa_pages`.
        swa_page: tokens per SWA page.
        swa_pages: pages of the SWA cache (its dim 0).
        comp_block_table: [B, P_c], int, page ids < `comp_pages`.
        comp_page: entries per compressed page.
        comp_pages: pages of the compressed cache (its dim 0).
        ratio: compression ratio.
        comp_indices: None (all L // ratio entries) or [T, K] entry ids.
        window: SWA length.

    Raises:
        ValueError: naming the argument, the bad value and the limit.
    """
    t_count = positions.shape[0]
    if t_count == 0:
        return
    pos = positions.long()
    sid = seq_ids.long()
    if int(pos.min()) < 0:
        raise ValueError(f"positions must be >= 0, got {int(pos.min())}")
    for name, bt in (("swa_block_table", swa_block_table), ("comp_block_table", comp_block_table)):
        if int(sid.min()) < 0 or int(sid.max()) >= bt.shape[0]:
            raise ValueError(
                f"seq_ids must index rows of {name} (0 <= seq_id < {bt.shape[0]}), got "
                f"{int(sid.min())} .. {int(sid.max())}"
            )
    need_w = pos // swa_page if window > 0 else None  # positions are >= 0 here
    if need_w is not None and int(need_w.max()) >= swa_block_table.shape[1]:
        raise ValueError(
            f"swa_block_table has {swa_block_table.shape[1]} pages per sequence; position "
            f"{int(pos.max())} needs page {int(need_w.max())} (swa_page={swa_page})"
        )
    n_c = (pos + 1) // ratio
    if comp_indices is None:
        last = n_c - 1
    else:
        e = comp_indices.long()
        ok = (e >= 0) & (e < n_c[:, None])  # the ids a token reads
        last = torch.where(ok, e, -1).amax(dim=1) if e.shape[1] else torch.full_like(n_c, -1)
    need_c = torch.where(last >= 0, last // comp_page, -1)
    if int(need_c.max()) >= comp_block_table.shape[1]:
        raise ValueError(
            f"comp_block_table has {comp_block_table.shape[1]} pages per sequence; entry "
            f"{int(last.max())} needs page {int(need_c.max())} (comp_page={comp_page})"
        )
    cols_w = torch.arange(swa_block_table.shape[1], device=pos.device)
    if need_w is not None:
        lo_w = (pos - window + 1).clamp(min=0) // swa_page
        read_w = (cols_w[None, :] >= lo_w[:, None]) & (cols_w[None, :] <= need_w[:, None])
        _check_page_ids("swa_block_table", swa_block_table.long()[sid][read_w], swa_pages)
    if comp_indices is None:
        cols_c = torch.arange(comp_block_table.shape[1], device=pos.device)
        used_c = comp_block_table.long()[sid][cols_c[None, :] <= need_c[:, None]]
    else:
        col = torch.where(ok, e // comp_page, 0)
        used_c = comp_block_table.long()[sid[:, None].expand_as(col), col][ok]
    _check_page_ids("comp_block_table", used_c, comp_pages)


def _check_page_ids(name: str, used: torch.Tensor, pages: int) -> None:
    """Raise a ValueError naming `name` when a page id that is read lies outside [0, pages)."""
    if used.numel() == 0:
        return
    lo, hi = int(used.min()), int(used.max())
    if lo < 0 or hi >= pages:
        raise ValueError(
            f"{name} holds page id {lo if lo < 0 else hi} where a token reads: page ids must "
            f"be in [0, {pages}) (the cache's pages)"
        )


def sparse_mla_reference(
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention; argument meanings as `dsv4_kernels.sparse_mla.sparse_mla_attention`.

    Returns:
        (out: [T, H, 512], bfloat16; lse: [T, H], float32, natural log, sink included).

    Raises:
        ValueError: a shape or dtype other than documented (`check_attention_inputs`), or a
            seq_id, position or page id outside the block tables or caches
            (`check_attention_values`).
    """
    check_attention_inputs(
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
        window,
    )
    check_attention_values(
        positions,
        seq_ids,
        swa_block_table,
        swa_page,
        swa_cache.shape[0],
        comp_block_table,
        comp_page,
        comp_cache.shape[0],
        ratio,
        comp_indices,
        window,
    )
    t_count = q.shape[0]
    dev = q.device
    n_c = (positions.long() + 1) // ratio
    w_slots, w_valid = window_slots(positions, seq_ids, swa_block_table, swa_page, window)
    if comp_indices is None:
        nc_max = int(n_c.max()) if t_count else 0
        ent = torch.arange(nc_max, device=dev).expand(t_count, nc_max)
    else:
        ent = comp_indices
    c_slots, c_valid = entry_slots(ent, n_c, seq_ids, comp_block_table, comp_page)
    kv = torch.cat(
        [
            dequantize_fp8_ds_mla(read_entries(swa_cache, w_slots, swa_page)),
            dequantize_fp8_ds_mla(read_entries(comp_cache, c_slots, comp_page)),
        ],
        dim=1,
    )  # [T, N, 512]
    valid = torch.cat([w_valid, c_valid], dim=1)  # [T, N]
    # Masked entries gathered slot 0; whatever it holds (NaN included) must not reach the
    # output through probability 0 * value.
    kv = kv.masked_fill(~valid[..., None], 0.0)
    scores = torch.einsum("thd,tnd->thn", q.float(), kv) * softmax_scale
    scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
    sink_logit = (
        sink.float()[None, :, None].expand(t_count, -1, 1)
        if sink is not None
        else torch.full((t_count, q.shape[1], 1), float("-inf"), device=dev)
    )
    allz = torch.cat([scores, sink_logit], dim=-1)
    lse = torch.logsumexp(allz, dim=-1)  # [T, H]
    # lse = -inf: nothing attended (probs 0 either way); +inf (a +inf sink): probs 0, not e^s.
    probs = torch.exp(scores - torch.where(lse == float("-inf"), 0.0, lse)[..., None])
    out = torch.einsum("thn,tnd->thd", probs, kv)
    return out.to(torch.bfloat16), lse
