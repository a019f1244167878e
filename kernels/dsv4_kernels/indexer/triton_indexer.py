"""Triton lightning indexer with fused top-k: the logits never leave the chip.

Pass 1 (`_score_select_kernel`, grid (chunks, T)): a program streams one chunk of C index keys
(page-sized tiles of FP8 keys, fp8 tensor-core dot with the 64 x 128 query), reduces
ReLU(q·k)·w over heads in registers into a [C] logit vector, then selects the chunk's top-K
exactly (binary search for the K-th largest order-preserving key, then a prefix-sum compaction)
and writes only K (logit, id) candidates. Pass 2 (`_merge_kernel`) reduces groups of candidate
lists the same way until one list of K remains. Candidates are K/C of the logits (1/8 at
C=4096, K=512), never the logits themselves.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from dsv4_kernels.kv_format import INDEX_DIM
from dsv4_kernels.triton_fp8 import NATIVE_FP8, e4m3_bits_to_f32


@triton.jit
def _select_topk(vals, ids, K: tl.constexpr, out_val_ptr, out_id_ptr):
    """Write the K largest of `vals` ([N] float32, N >= K) and their `ids` (any order)."""
    u = vals.to(tl.int32, bitcast=True)
    key = u ^ ((u >> 31) & 0x7FFFFFFF)  # order-preserving signed key
    lo = tl.min(key, axis=0).to(tl.int64)
    hi = tl.max(key, axis=0).to(tl.int64)
    key64 = key.to(tl.int64)
    for _ in range(32):
        mid = lo + (hi - lo + 1) // 2
        cnt = tl.sum((key64 >= mid).to(tl.int32), axis=0)
        ok = cnt >= K
        lo = tl.where(ok, mid, lo)
        hi = tl.where(ok, hi, mid - 1)
    gt = key64 > lo
    eq = key64 == lo
    n_gt = tl.sum(gt.to(tl.int32), axis=0)
    eq_rank = tl.cumsum(eq.to(tl.int32), axis=0) - 1
    take = gt | (eq & (eq_rank < K - n_gt))
    pos = tl.cumsum(take.to(tl.int32), axis=0) - 1
    tl.store(out_val_ptr + pos, vals, mask=take)
    tl.store(out_id_ptr + pos, ids, mask=take)


@triton.jit
def _select_topk_radix(vals, ids, K: tl.constexpr, out_val_ptr, out_id_ptr):
    """As `_select_topk`, by a 4-pass radix select (8 bits a pass, one histogram each)."""
    u = vals.to(tl.int32, bitcast=True)
    key = u ^ ((u >> 31) & 0x7FFFFFFF)
    ukey = key.to(tl.int64) + 2147483648  # order-preserving, 0 .. 2**32 - 1
    bins = tl.arange(0, 512)
    real = bins < 256
    prefix = tl.sum(ukey * 0, axis=0)  # int64 zero scalar
    kk = tl.sum(ids * 0, axis=0) + K  # rank still to place, from the top
    for p in tl.static_range(4):
        shift = 24 - 8 * p
        digit = ((ukey >> shift) & 255).to(tl.int32)
        if p == 0:  # noqa: SIM108  (triton.jit: constexpr branch)
            d = digit
        else:
            d = tl.where((ukey >> (shift + 8)) == prefix, digit, 256)
        h = tl.where(real, tl.histogram(d, 512), 0)
        ge = tl.sum(h, axis=0) - tl.cumsum(h, axis=0) + h  # count(digit >= bin)
        dstar = tl.sum(((ge >= kk) & real).to(tl.int32), axis=0) - 1
        kk = kk - tl.sum(tl.where(bins > dstar, h, 0), axis=0)
        prefix = prefix * 256 + dstar
    gt = ukey > prefix
    eq = ukey == prefix
    eq_rank = tl.cumsum(eq.to(tl.int32), axis=0) - 1
    take = gt | (eq & (eq_rank < kk))
    pos = tl.cumsum(take.to(tl.int32), axis=0) - 1
    tl.store(out_val_ptr + pos, vals, mask=take)
    tl.store(out_id_ptr + pos, ids, mask=take)


@triton.jit
def _score_select_kernel(
    q_ptr,
    w_ptr,
    pages_u8,
    pages_f32,
    bt_ptr,
    bt_stride,
    pos_ptr,
    seq_ptr,
    cand_val_ptr,
    cand_id_ptr,
    n_chunks,
    H: tl.constexpr,
    D: tl.constexpr,
    PAGE: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_K: tl.constexpr,
    K: tl.constexpr,
    RATIO: tl.constexpr,
    NATIVE: tl.constexpr,
    SELECT: tl.constexpr,
):
    c = tl.program_id(0)
    t = tl.program_id(1).to(tl.int64)
    p = tl.load(pos_ptr + t)
    seq = tl.load(seq_ptr + t).to(tl.int64)
    n_valid = (p + 1) // RATIO
    offs_h = tl.arange(0, H)
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BLOCK_K)
    qraw = tl.load(q_ptr + (t * H + offs_h[:, None]) * D + offs_d[None, :])
    w = tl.load(w_ptr + t * H + offs_h)
    TILES: tl.constexpr = CHUNK // BLOCK_K
    rows = tl.arange(0, TILES)
    buf = tl.full((TILES, BLOCK_K), float("-inf"), tl.float32)
    e_first = c * CHUNK
    n_tiles = tl.minimum(TILES, tl.cdiv(tl.maximum(n_valid - e_first, 0), BLOCK_K))
    if NATIVE:
        q8 = qraw.to(tl.float8e4nv, bitcast=True)
    else:
        qf = e4m3_bits_to_f32(qraw)
    for i in range(n_tiles):
        # Only the page-id gather and the key bytes are loaded in the loop (both pipelined
        # into the dot); the per-key scales are applied once after it (scale > 0 commutes
        # with the ReLU).
        e = e_first + i * BLOCK_K + offs_n
        ok = e < n_valid
        pg = tl.load(bt_ptr + seq * bt_stride + e // PAGE, mask=ok, other=0).to(tl.int64)
        kraw = tl.load(
            pages_u8 + (pg * (PAGE * (D + 4)) + (e % PAGE) * D)[:, None] + offs_d[None, :],
            mask=ok[:, None],
            other=0,
        )
        # Keys as the M dimension: the head reduction stays inside each MMA row.
        if NATIVE:
            s = tl.dot(kraw.to(tl.float8e4nv, bitcast=True), tl.trans(q8))
        else:
            s = tl.dot(e4m3_bits_to_f32(kraw), tl.trans(qf), input_precision="ieee")
        part = tl.sum(tl.maximum(s, 0.0) * w[None, :], axis=1)
        buf = tl.where(rows[:, None] == i, part[None, :], buf)
    ent = e_first + tl.arange(0, CHUNK)
    ok_all = ent < n_valid
    pg_all = tl.load(bt_ptr + seq * bt_stride + ent // PAGE, mask=ok_all, other=0).to(tl.int64)
    ks = tl.load(
        pages_f32 + pg_all * (PAGE * (D + 4) // 4) + PAGE * D // 4 + ent % PAGE,
        mask=ok_all,
        other=0.0,
    )
    vals = tl.where(ok_all, tl.where(ok_all, tl.reshape(buf, (CHUNK,)), 0.0) * ks, float("-inf"))
    ids = tl.where(ok_all, ent, -1)
    base = (t * n_chunks + c) * K
    if SELECT == 0:
        _select_topk(vals, ids, K, cand_val_ptr + base, cand_id_ptr + base)
    else:
        _select_topk_radix(vals, ids, K, cand_val_ptr + base, cand_id_ptr + base)


@triton.jit
def _merge_kernel(
    in_val_ptr,
    in_id_ptr,
    out_val_ptr,
    out_id_ptr,
    n_in,
    n_out,
    K: tl.constexpr,
    GROUP: tl.constexpr,
    SELECT: tl.constexpr,
):
    g = tl.program_id(0)
    t = tl.program_id(1).to(tl.int64)
    offs = tl.arange(0, GROUP * K)
    lst = g * GROUP + offs // K
    m = lst < n_in
    src = (t * n_in + g * GROUP) * K + offs
    vals = tl.load(in_val_ptr + src, mask=m, other=float("-inf"))
    ids = tl.load(in_id_ptr + src, mask=m, other=-1)
    base = (t * n_out + g) * K
    if SELECT == 0:
        _select_topk(vals, ids, K, out_val_ptr + base, out_id_ptr + base)
    else:
        _select_topk_radix(vals, ids, K, out_val_ptr + base, out_id_ptr + base)


def choose_chunk(n_tokens: int, n_keys_max: int, topk: int, page_size: int) -> int:
    """Keys per program of pass 1.

    max(2048, 2 * topk), but at most the next power of two of the longest key list (and never
    below topk).

    Measured on the H200 (2026-11-29, L=1M, K=512): chunk 2048 gave 79 µs at B=1 and 535 µs at
    B=32; 1024, 4096 and 8192 were slower at both (kernels/benchmarks/reports/).

    Args:
        n_tokens: query tokens T (kept for future heuristics).
        n_keys_max: most keys any query scores.
        topk: K.
        page_size: keys per page (any; each key finds its page).

    Returns:
        A power of two >= topk.
    """
    del n_tokens, page_size
    c = max(2048, 2 * topk)
    fit = 1 << max(n_keys_max - 1, 1).bit_length()
    return max(topk, min(c, fit))


def index_topk_triton(
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
    chunk: int | None = None,
    merge_group: int = 16,
    block_k: int = 128,
    num_warps: int = 4,
    num_stages: int = 3,
    select: int = 0,
    pass1_only: bool = False,
    out_indices: torch.Tensor | None = None,
    out_values: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused indexer + top-k (API: `dsv4_kernels.indexer.index_topk`).

    Tuning: `chunk` keys per pass-1 program (None: `choose_chunk`), `block_k` keys per
    iteration (any page size: each key finds its page), `num_warps`/`num_stages` of pass 1,
    `merge_group` candidate lists per merge program, `select` (0: 32-step binary search for
    the K-th key, 1: 4-pass radix select with histograms). `pass1_only` stops after pass 1
    (timing breakdown; the result is then not the top-k). `out_indices` [T, K] int32 /
    `out_values` [T, K] float32 optionally receive the results.

    Returns:
        (indices [T, topk] int32, values [T, topk] float32), in no particular order.

    Raises:
        ValueError: topk not a power of two, or q not [T, H, 128].
    """
    t_count, h, d = q.shape
    if d != INDEX_DIM:
        raise ValueError(f"q must be [T, H, {INDEX_DIM}], got {tuple(q.shape)}")
    if topk & (topk - 1):
        raise ValueError(f"topk must be a power of two (512 Flash, 1024 Pro), got {topk}")
    dev = q.device
    qb = q.contiguous().view(torch.uint8)
    w = weights.float().contiguous()
    pages = key_pages.contiguous()
    bt = block_table.to(torch.int32).contiguous()
    pos = positions.to(torch.int32).contiguous()
    seq = seq_ids.to(torch.int32).contiguous()
    if max_keys is None:
        max_keys = int(((pos.long() + 1) // ratio).max()) if t_count else 0
    if chunk is None:
        chunk = choose_chunk(t_count, max_keys, topk, page_size)
    if chunk < topk or chunk & (chunk - 1):
        raise ValueError(f"chunk={chunk} must be a power of two >= topk")
    n_chunks = max(1, math.ceil(max_keys / chunk))
    out_val = (
        out_values
        if out_values is not None
        else torch.empty(t_count, topk, dtype=torch.float32, device=dev)
    )
    out_id = (
        out_indices
        if out_indices is not None
        else torch.empty(t_count, topk, dtype=torch.int32, device=dev)
    )
    if t_count == 0:
        return out_id, out_val
    if n_chunks == 1:
        cv, ci = out_val, out_id
    else:
        cv = torch.empty(t_count, n_chunks, topk, dtype=torch.float32, device=dev)
        ci = torch.empty(t_count, n_chunks, topk, dtype=torch.int32, device=dev)
    _score_select_kernel[(n_chunks, t_count)](
        qb,
        w,
        pages,
        pages.view(torch.float32),
        bt,
        bt.stride(0),
        pos,
        seq,
        cv,
        ci,
        n_chunks,
        H=h,
        D=d,
        PAGE=page_size,
        CHUNK=chunk,
        BLOCK_K=min(block_k, chunk),
        K=topk,
        RATIO=ratio,
        NATIVE=NATIVE_FP8,
        SELECT=select,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    n_in = 1 if pass1_only else n_chunks
    while n_in > 1:
        group = min(merge_group, triton.next_power_of_2(n_in))
        n_out = math.ceil(n_in / group)
        if n_out == 1:
            nv, ni = out_val, out_id
        else:
            nv = torch.empty(t_count, n_out, topk, dtype=torch.float32, device=dev)
            ni = torch.empty(t_count, n_out, topk, dtype=torch.int32, device=dev)
        _merge_kernel[(n_out, t_count)](
            cv,
            ci,
            nv,
            ni,
            n_in,
            n_out,
            K=topk,
            GROUP=group,
            SELECT=select,
            num_warps=16 if group * topk >= 8192 else 8,
        )
        cv, ci, n_in = nv, ni, n_out
    return out_id, out_val
