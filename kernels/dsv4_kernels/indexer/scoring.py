"""Pass-1 device code of the indexer: score one chunk of FP8 keys, then select from it.

`_score_select_body` is shared by the pass-1 kernel (`triton_indexer._score_select_kernel`) and
the sampled mode's in-kernel fallback (`sampled._filtered_select_kernel`).
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_wait

from dsv4_kernels.indexer.selection import (
    _order_key,
    _select_tiered,
    _select_topk,
    _select_topk_fast,
    _select_topk_radix,
)
from dsv4_kernels.triton_fp8 import e4m3_bits_to_f32


@triton.jit
def _chunk_scales(
    bt_ptr,
    seq,
    bt_stride,
    pages_f32,
    ent,
    ok_all,
    PAGE: tl.constexpr,
    KEY_STRIDE: tl.constexpr,
    D: tl.constexpr,
    IDX32: tl.constexpr,
):
    """The float32 scales of keys `ent` ([CHUNK] entry ids; 0.0 where not ok_all)."""
    pg_all = tl.load(bt_ptr + seq * bt_stride + ent // PAGE, mask=ok_all, other=0)
    if not IDX32:
        pg_all = pg_all.to(tl.int64)
    return tl.load(
        pages_f32 + pg_all * (KEY_STRIDE // 4) + PAGE * D // 4 + ent % PAGE,
        mask=ok_all,
        other=0.0,
    )


@triton.jit
def _token_query(
    t, q_ptr, w_ptr, pos_ptr, seq_ptr, H: tl.constexpr, D: tl.constexpr, RATIO: tl.constexpr
):
    """What every indexer program reads first about query token t.

    Returns:
        (seq: int64 block-table row, n_valid: the token's key count (position + 1) // RATIO,
        qraw: [H, D] query bytes (e4m3), w: [H] float32 head weights).
    """
    p = tl.load(pos_ptr + t)
    seq = tl.load(seq_ptr + t).to(tl.int64)
    n_valid = (p + 1) // RATIO
    offs_h = tl.arange(0, H)
    qraw = tl.load(q_ptr + (t * H + offs_h[:, None]) * D + tl.arange(0, D)[None, :])
    w = tl.load(w_ptr + t * H + offs_h)
    return seq, n_valid, qraw, w


@triton.jit
def _append(take, vals, ids, counter_ptr, val_ptr, id_ptr, SLOTS: tl.constexpr):
    """Append the (vals, ids) where `take` to a shared list of SLOTS slots.

    One `atomic_add` on the list's counter reserves consecutive slots (skipped when nothing is
    taken); entries past SLOTS are counted but not stored.

    Returns:
        The number of entries taken (int32 scalar).
    """
    n = tl.sum(take.to(tl.int32), axis=0)
    if n > 0:
        start = tl.atomic_add(counter_ptr, n)
        slot = start + tl.cumsum(take.to(tl.int32), axis=0) - 1
        keep = take & (slot < SLOTS)
        tl.store(val_ptr + slot, vals, mask=keep)
        tl.store(id_ptr + slot, ids, mask=keep)
    return n


@triton.jit
def _score_select_body(  # noqa: PLR0912, PLR0915  (constexpr variant dispatch)
    c,
    t,
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
    thr_ptr,
    kth_ptr,
    n_chunks,
    H: tl.constexpr,
    D: tl.constexpr,
    PAGE: tl.constexpr,
    KEY_STRIDE: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_K: tl.constexpr,
    K: tl.constexpr,
    RATIO: tl.constexpr,
    NATIVE: tl.constexpr,
    SELECT: tl.constexpr,
    SCORE_ONLY: tl.constexpr,
    THRESH: tl.constexpr,
    STORE_KTH: tl.constexpr,
    TIER_M: tl.constexpr,
    LEAN: tl.constexpr,
    IDX32: tl.constexpr,
    EQ_SLOTS: tl.constexpr,
    PDL: tl.constexpr,
):
    """Score chunk c of token t's keys and select from it (SELECT); see the kernels using it.

    PDL (SELECT == 3 only): the keys are streamed and scored first, then `gdc_wait` waits for
    the launch before pass 1 (threshold, or sample with one sample program per token) before
    thr/count are read or anything is written.
    """
    seq, n_valid, qraw, w = _token_query(t, q_ptr, w_ptr, pos_ptr, seq_ptr, H, D, RATIO)
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BLOCK_K)
    TILES: tl.constexpr = CHUNK // BLOCK_K
    rows = tl.arange(0, TILES)
    buf = tl.full((TILES, BLOCK_K), float("-inf"), tl.float32)
    e_first = c * CHUNK
    n_tiles = tl.minimum(TILES, tl.cdiv(tl.maximum(n_valid - e_first, 0), BLOCK_K))
    if NATIVE:
        q8 = qraw.to(tl.float8e4nv, bitcast=True)
    else:
        qf = e4m3_bits_to_f32(qraw)
    if LEAN == 3:  # the scales' gather is issued first, its latency hidden by the tile loop
        ent = e_first + tl.arange(0, CHUNK)
        ok_all = ent < n_valid
        ks = _chunk_scales(
            bt_ptr, seq, bt_stride, pages_f32, ent, ok_all, PAGE, KEY_STRIDE, D, IDX32
        )
    if LEAN >= 2:
        # As LEAN == 1, with the page ids gathered as a [BLOCK_K, 1] column (no 1-D -> 2-D
        # layout conversion of the addresses) and the chunk's logits kept as [BLOCK_K, TILES]
        # columns in the MMA's row layout (no conversion per tile); transposed once after.
        if NATIVE:  # noqa: SIM108  (triton.jit: constexpr branch)
            qt = tl.trans(q8)
        else:
            qt = tl.trans(qf)
        cols = tl.arange(0, TILES)
        buf_t = tl.full((BLOCK_K, TILES), float("-inf"), tl.float32)
        for i in range(n_tiles):
            e2 = e_first + i * BLOCK_K + offs_n[:, None]
            pg2 = tl.load(bt_ptr + seq * bt_stride + e2 // PAGE, mask=e2 < n_valid, other=0)
            if IDX32:
                row2 = pg2 * KEY_STRIDE + (e2 % PAGE) * D
            else:
                row2 = pg2.to(tl.int64) * KEY_STRIDE + (e2 % PAGE) * D
            kk = tl.load(pages_u8 + row2 + offs_d[None, :])
            if NATIVE:
                s = tl.dot(kk, qt)
            else:
                s = tl.dot(e4m3_bits_to_f32(kk), qt, input_precision="ieee")
            part = tl.sum(tl.maximum(s, 0.0) * w[None, :], axis=1)
            buf_t = tl.where(cols[None, :] == i, part[:, None], buf_t)
        buf = tl.trans(buf_t)
    elif LEAN:
        # The query operand transposed once; keys loaded without a mask (a key past the end
        # reads page 0, row e % PAGE: real memory, masked to -inf after the loop) and, on
        # the GPU, through a float8 pointer so the MMA can read them from shared memory.
        if NATIVE:  # noqa: SIM108  (triton.jit: constexpr branch)
            qt = tl.trans(q8)
        else:
            qt = tl.trans(qf)
        for i in range(n_tiles):
            e = e_first + i * BLOCK_K + offs_n
            pg = tl.load(bt_ptr + seq * bt_stride + e // PAGE, mask=e < n_valid, other=0)
            if IDX32:
                row = pg * KEY_STRIDE + (e % PAGE) * D
            else:
                row = pg.to(tl.int64) * KEY_STRIDE + (e % PAGE) * D
            kk = tl.load(pages_u8 + row[:, None] + offs_d[None, :])
            if NATIVE:
                s = tl.dot(kk, qt)
            else:
                s = tl.dot(e4m3_bits_to_f32(kk), qt, input_precision="ieee")
            part = tl.sum(tl.maximum(s, 0.0) * w[None, :], axis=1)
            buf = tl.where(rows[:, None] == i, part[None, :], buf)
    else:
        for i in range(n_tiles):
            # Only the page-id gather and the key bytes are loaded in the loop (both pipelined
            # into the dot); the per-key scales are applied once after it (scale > 0 commutes
            # with the ReLU).
            e = e_first + i * BLOCK_K + offs_n
            ok = e < n_valid
            pg = tl.load(bt_ptr + seq * bt_stride + e // PAGE, mask=ok, other=0).to(tl.int64)
            kraw = tl.load(
                pages_u8 + (pg * KEY_STRIDE + (e % PAGE) * D)[:, None] + offs_d[None, :],
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
    if LEAN != 3:
        ent = e_first + tl.arange(0, CHUNK)
        ok_all = ent < n_valid
        ks = _chunk_scales(
            bt_ptr, seq, bt_stride, pages_f32, ent, ok_all, PAGE, KEY_STRIDE, D, IDX32
        )
    vals = tl.where(ok_all, tl.where(ok_all, tl.reshape(buf, (CHUNK,)), 0.0) * ks, float("-inf"))
    ids = tl.where(ok_all, ent, -1)
    base = (t * n_chunks + c) * K
    if SCORE_ONLY:
        # Diagnostic (not a top-k): the chunk's largest logit, so the scoring stream can be
        # timed without the selection.
        tl.store(cand_val_ptr + base, tl.max(vals, axis=0))
    elif SELECT == 0:
        _select_topk(vals, ids, K, cand_val_ptr + base, cand_id_ptr + base)
    elif SELECT == 1:
        _select_topk_radix(vals, ids, K, cand_val_ptr + base, cand_id_ptr + base)
    elif SELECT == 3:
        # Sampled-threshold mode (`sampled.py`). Row t holds K (= the list's capacity) slots
        # for the keys above the band [tau_t - 64, tau_t + 64] (order keys, i.e. 64 float
        # steps; tau_t = thr[t]), then EQ_SLOTS (= topk) slots for the keys in the band: a
        # block of equal logits near tau_t lands there whatever the sample kernel's rounding
        # of the same logit. kth_ptr holds each row's counters ([T, 4]: keys above the band,
        # keys in it, the band keys' smallest and largest order key).
        if PDL:
            gdc_wait()
        tau = tl.load(thr_ptr + t, volatile=True).to(tl.int64)
        key = _order_key(vals)
        key64 = key.to(tl.int64)
        gt = ok_all & (key64 > tau + 64)
        band = ok_all & (key64 >= tau - 64) & (key64 <= tau + 64)
        row = t * (K + EQ_SLOTS)
        _append(gt, vals, ids, kth_ptr + 4 * t, cand_val_ptr + row, cand_id_ptr + row, K)
        n_band = _append(
            band,
            vals,
            ids,
            kth_ptr + 4 * t + 1,
            cand_val_ptr + row + K,
            cand_id_ptr + row + K,
            EQ_SLOTS,
        )
        if n_band > 0:
            tl.atomic_min(kth_ptr + 4 * t + 2, tl.min(tl.where(band, key, 2147483647), axis=0))
            tl.atomic_max(kth_ptr + 4 * t + 3, tl.max(tl.where(band, key, -2147483648), axis=0))
    else:
        if THRESH:  # noqa: SIM108  (triton.jit: constexpr branch)
            tau = tl.load(thr_ptr + t, volatile=True)
        else:
            tau = -2147483648  # no bound
        if TIER_M > 0:
            lo, n_ge, kth = _select_tiered(
                vals, ids, K, TIER_M, cand_val_ptr + base, cand_id_ptr + base, tau
            )
        else:
            lo, n_ge = _select_topk_fast(vals, ids, K, cand_val_ptr + base, cand_id_ptr + base, tau)
            kth = lo
        if THRESH:
            # K keys >= lo exist, so lo is a lower bound of the token's K-th largest logit.
            tl.atomic_max(thr_ptr + t, tl.where(n_ge >= K, lo, -2147483648))
        if STORE_KTH:
            tl.store(kth_ptr + t * n_chunks + c, kth)
