"""Triton sparse MLA attention over [SWA window | compressed entries] on fp8_ds_mla caches.

Grid: (head blocks, KV splits, query tokens). A program loads its query tile [BLOCK_H, 512]
once, then walks its share of the token list in tiles of BLOCK_N entries: gathers the entries'
576-byte records and 8-byte scale records (vLLM's block layout), dequantises them once for all
BLOCK_H heads (e4m3 * 2**(ue8m0 - 127), bf16 RoPE), and runs an online softmax (base 2) with
bf16 tensor-core dots, fp32 accumulation. With one split the sink and normalisation happen in
place; with several, partial (out, lse) pairs go to a float32 workspace and `_combine_kernel`
merges them with the sink.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import triton
import triton.language as tl

from dsv4_kernels.kv_format import ENTRY_BYTES, page_stride, single_page_rows
from dsv4_kernels.sparse_mla import gluon_attention
from dsv4_kernels.sparse_mla.reference import check_attention_inputs
from dsv4_kernels.triton_fp8 import (
    NATIVE_FP8,
    decode_e4m3,
    mma,
    pow2_from_exponent,
    round_bf16,
)

LOG2E = 1.4426950408889634
MAX_TOKENS_PER_LAUNCH = 65535
"""Query tokens per launch: the grid's token axis is y or z, which CUDA caps at 65,535."""
LAST_KERNEL: dict[str, object] = {}
"""The last compiled kernel launched per op (for register / spill reports in the benchmarks)."""
LN2 = 0.6931471805599453


@triton.jit
def _record_offsets(pg, i, PAGE: tl.constexpr, STRIDE: tl.constexpr):
    """Byte offsets (576-byte record, 8-byte scale record) of token `i` of page `pg`.

    vLLM's block layout (`dsv4_kernels.kv_format`): a page's PAGE records, then its PAGE scale
    records; pages STRIDE bytes apart. int64 (a cache may pass 2**31 bytes).
    """
    base = pg.to(tl.int64) * STRIDE
    return base + i * 576, base + PAGE * 576 + i * 8


@triton.jit
def _load_kv_cols(
    cache_u8,
    cache_bf16,
    row,
    srow,
    valid,
    BLOCK_N: tl.constexpr,
    C0: tl.constexpr,
    NT: tl.constexpr,
    NATIVE: tl.constexpr,
    DEQ: tl.constexpr,
):
    """[BLOCK_N, NT*64] bf16 KV columns 64*C0 .. 64*(C0+NT) of fp8_ds_mla entries.

    An entry's 576-byte record starts at byte `row` of the cache, its 8-byte scale record at
    `srow` (vLLM's block layout, `dsv4_kernels.kv_format`).
    Column tile 7 is the bf16 RoPE part; tiles 0..6 are e4m3 * 2**(ue8m0 - 127). DEQ selects
    the dequantisation: 0 = hardware e4m3 -> bf16 -> f32 multiply; 1 = bit placement
    (e4m3 bits moved into a bf16 pattern that is the value * 2**-120, exact for subnormals
    too), then one float32 multiply by 2**(120 + scale exponent).
    """
    tile = C0 + tl.arange(0, NT)
    col = tl.arange(0, 64)
    is_nope = tile < 7
    raw = tl.load(
        cache_u8 + row[:, None, None] + tile[None, :, None] * 64 + col[None, None, :],
        mask=valid[:, None, None] & is_nope[None, :, None],
        other=0,
    )
    sc = tl.load(
        cache_u8 + srow[:, None] + tile[None, :],
        mask=valid[:, None] & is_nope[None, :],
        other=127,
    ).to(tl.int32)
    if DEQ == 0:
        scale = pow2_from_exponent(sc - 127)
        nope = decode_e4m3(raw, NATIVE).to(tl.float32) * scale[:, :, None]
    else:
        b = raw.to(tl.int32)
        bits = ((b & 0x80) << 24) | ((b & 0x7F) << 20)
        scale = pow2_from_exponent(sc - 7)  # 2**(120 + sc - 127)
        nope = bits.to(tl.float32, bitcast=True) * scale[:, :, None]
    if C0 + NT > 7:
        rope = tl.load(
            cache_bf16 + (row // 2 + 224)[:, None] + col[None, :],
            mask=valid[:, None],
            other=0.0,
        )
        k3 = tl.where((tile == 7)[None, :, None], rope.to(tl.float32)[:, None, :], nope)
    else:
        k3 = nope
    return tl.reshape(k3, (BLOCK_N, NT * 64)).to(tl.bfloat16)


@triton.jit
def _attend_tile(
    cache_u8,
    cache_bf16,
    row,
    srow,
    valid,
    q_lo,
    q_hi,
    m,
    lsum,
    acc,
    qk_scale,
    dv,
    BLOCK_N: tl.constexpr,
    DV_SPLIT: tl.constexpr,
    NATIVE: tl.constexpr,
    DEQ: tl.constexpr,
):
    """One online-softmax step (base 2) over a KV tile for a block of heads.

    DV_SPLIT == 1: q_lo is the whole [BLOCK_H, 512] query, acc [BLOCK_H, 512].
    DV_SPLIT == 2: q_lo / q_hi are dims 0..255 / 256..511; this program accumulates only the
    output half `dv` (acc [BLOCK_H, 256]); scores use both halves.
    """
    if DV_SPLIT == 1:
        kt = _load_kv_cols(cache_u8, cache_bf16, row, srow, valid, BLOCK_N, 0, 8, NATIVE, DEQ)
        zero = tl.zeros((q_lo.shape[0], BLOCK_N), tl.float32)
        s = mma(q_lo, tl.trans(kt), zero, NATIVE)
    else:
        k_lo = _load_kv_cols(cache_u8, cache_bf16, row, srow, valid, BLOCK_N, 0, 4, NATIVE, DEQ)
        k_hi = _load_kv_cols(cache_u8, cache_bf16, row, srow, valid, BLOCK_N, 4, 4, NATIVE, DEQ)
        zero = tl.zeros((q_lo.shape[0], BLOCK_N), tl.float32)
        s = mma(q_lo, tl.trans(k_lo), zero, NATIVE)
        s = mma(q_hi, tl.trans(k_hi), s, NATIVE)
    s = s * qk_scale
    s = tl.where(valid[None, :], s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    lsum = lsum * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None]
    pb = p.to(tl.bfloat16)
    if DV_SPLIT == 1:
        acc = mma(pb, kt, acc, NATIVE)
    elif dv == 0:
        acc = mma(pb, k_lo, acc, NATIVE)
    else:
        acc = mma(pb, k_hi, acc, NATIVE)
    return m_new, lsum, acc


@triton.jit
def _sparse_mla_kernel(  # noqa: PLR0912, PLR0915  (one kernel = one launch)
    q_ptr,
    pos_ptr,
    seq_ptr,
    swa_u8,
    swa_bf16,
    swa_bt,
    swa_bt_stride,
    comp_u8,
    comp_bf16,
    comp_bt,
    comp_bt_stride,
    idx_ptr,
    idx_stride,
    sink_ptr,
    out_ptr,
    lse_ptr,
    part_o_ptr,
    part_lse_ptr,
    H,
    n_comp_list,
    qk_scale,
    WINDOW: tl.constexpr,
    SWA_PAGE: tl.constexpr,
    COMP_PAGE: tl.constexpr,
    SWA_STRIDE: tl.constexpr,
    COMP_STRIDE: tl.constexpr,
    RATIO: tl.constexpr,
    DENSE: tl.constexpr,
    HAS_SINK: tl.constexpr,
    N_SPLIT: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DV_SPLIT: tl.constexpr,
    NATIVE: tl.constexpr,
    DEQ: tl.constexpr,
):
    pid0 = tl.program_id(0)
    hb = pid0 // DV_SPLIT
    dv = pid0 % DV_SPLIT
    split = tl.program_id(1)
    t = tl.program_id(2)
    D: tl.constexpr = 512
    DO: tl.constexpr = 512 // DV_SPLIT
    offs_h = hb * BLOCK_H + tl.arange(0, BLOCK_H)
    hmask = offs_h < H
    t64 = t.to(tl.int64)
    q_row = q_ptr + (t64 * H + offs_h[:, None]) * D
    if DV_SPLIT == 1:
        q_lo = tl.load(q_row + tl.arange(0, D)[None, :], mask=hmask[:, None], other=0.0)
        q_hi = q_lo
    else:
        q_lo = tl.load(q_row + tl.arange(0, 256)[None, :], mask=hmask[:, None], other=0.0)
        q_hi = tl.load(q_row + 256 + tl.arange(0, 256)[None, :], mask=hmask[:, None], other=0.0)
    p = tl.load(pos_ptr + t)
    seq = tl.load(seq_ptr + t).to(tl.int64)
    n_c = (p + 1) // RATIO
    m = tl.full((BLOCK_H,), float("-inf"), tl.float32)
    lsum = tl.zeros((BLOCK_H,), tl.float32)
    acc = tl.zeros((BLOCK_H, DO), tl.float32)
    WT: tl.constexpr = WINDOW // BLOCK_N
    if DENSE:  # noqa: SIM108  (triton.jit: constexpr branch)
        n_list = n_c
    else:
        n_list = n_comp_list
    n_tiles = WT + tl.cdiv(n_list, BLOCK_N)
    per = tl.cdiv(n_tiles, N_SPLIT)
    t0 = split * per
    t1 = tl.minimum(t0 + per, n_tiles)
    offs_n = tl.arange(0, BLOCK_N)
    for ti in range(t0, tl.minimum(t1, WT)):
        tok = p - WINDOW + 1 + ti * BLOCK_N + offs_n
        valid = tok >= 0
        tok = tl.maximum(tok, 0)
        pg = tl.load(swa_bt + seq * swa_bt_stride + tok // SWA_PAGE, mask=valid, other=0)
        row, srow = _record_offsets(pg, tok % SWA_PAGE, SWA_PAGE, SWA_STRIDE)
        m, lsum, acc = _attend_tile(
            swa_u8,
            swa_bf16,
            row,
            srow,
            valid,
            q_lo,
            q_hi,
            m,
            lsum,
            acc,
            qk_scale,
            dv,
            BLOCK_N,
            DV_SPLIT,
            NATIVE,
            DEQ,
        )
    for ti in range(tl.maximum(t0, WT), t1):
        j = (ti - WT) * BLOCK_N + offs_n
        if DENSE:
            e = j
            valid = j < n_c
        else:
            e = tl.load(idx_ptr + t64 * idx_stride + j, mask=j < n_list, other=-1)
            valid = (e >= 0) & (e < n_c)
        e = tl.where(valid, e, 0)
        pg = tl.load(comp_bt + seq * comp_bt_stride + e // COMP_PAGE, mask=valid, other=0)
        row, srow = _record_offsets(pg, e % COMP_PAGE, COMP_PAGE, COMP_STRIDE)
        m, lsum, acc = _attend_tile(
            comp_u8,
            comp_bf16,
            row,
            srow,
            valid,
            q_lo,
            q_hi,
            m,
            lsum,
            acc,
            qk_scale,
            dv,
            BLOCK_N,
            DV_SPLIT,
            NATIVE,
            DEQ,
        )
    offs_o = dv * DO + tl.arange(0, DO)
    if N_SPLIT == 1:
        if HAS_SINK:
            sink2 = tl.load(sink_ptr + offs_h, mask=hmask, other=0.0) * 1.4426950408889634
        else:
            sink2 = tl.full((BLOCK_H,), float("-inf"), tl.float32)
        mm = tl.maximum(m, sink2)
        mm_safe = tl.where((mm == float("-inf")) | (mm == float("inf")), 0.0, mm)
        den = lsum * tl.exp2(m - mm_safe) + tl.exp2(sink2 - mm_safe)
        # A +inf sink takes all the probability: scale 0 (exp2(m - 0) / inf was inf / inf
        # = NaN once m > 128).
        scale_o = tl.where((den > 0) & (sink2 != float("inf")), tl.exp2(m - mm_safe) / den, 0.0)
        o = acc * scale_o[:, None]
        lse = (mm_safe + tl.log2(tl.maximum(den, 1e-30))) * 0.6931471805599453
        lse = tl.where(den > 0, lse, float("-inf"))
        tl.store(
            out_ptr + (t64 * H + offs_h[:, None]) * D + offs_o[None, :],
            round_bf16(o),
            mask=hmask[:, None],
        )
        if dv == 0:
            tl.store(lse_ptr + t64 * H + offs_h, lse, mask=hmask)
    else:
        o = acc / tl.where(lsum > 0, lsum, 1.0)[:, None]
        lse2 = tl.where(lsum > 0, m + tl.log2(tl.maximum(lsum, 1e-30)), float("-inf"))
        row = (t64 * N_SPLIT + split) * H + offs_h
        tl.store(part_o_ptr + row[:, None] * D + offs_o[None, :], o, mask=hmask[:, None])
        if dv == 0:
            tl.store(part_lse_ptr + row, lse2, mask=hmask)


@triton.jit
def _load_kv_chunk(
    cache_u8, cache_bf16, row, srow, valid, C: tl.constexpr, NATIVE: tl.constexpr, DEQ: tl.constexpr
):
    """[BLOCK_N, 64] bf16 column tile C (0..6 NoPE e4m3 * scale, 7 RoPE) of the entries."""
    col = tl.arange(0, 64)
    if C < 7:
        raw = tl.load(cache_u8 + row[:, None] + C * 64 + col[None, :], mask=valid[:, None], other=0)
        sc = tl.load(cache_u8 + srow + C, mask=valid, other=127).to(tl.int32)
        if DEQ == 0:
            k = decode_e4m3(raw, NATIVE).to(tl.float32) * pow2_from_exponent(sc - 127)[:, None]
        else:
            b = raw.to(tl.int32)
            bits = ((b & 0x80) << 24) | ((b & 0x7F) << 20)
            k = bits.to(tl.float32, bitcast=True) * pow2_from_exponent(sc - 7)[:, None]
        return k.to(tl.bfloat16)
    else:
        return tl.load(
            cache_bf16 + (row // 2 + 224)[:, None] + col[None, :],
            mask=valid[:, None],
            other=0.0,
        )


@triton.jit
def _attend_tile_chunked(
    cache_u8,
    cache_bf16,
    row,
    srow,
    valid,
    q0,
    q1,
    q2,
    q3,
    q4,
    q5,
    q6,
    q7,
    m,
    lsum,
    a0,
    a1,
    a2,
    a3,
    a4,
    a5,
    a6,
    a7,
    qk_scale,
    BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr,
    NATIVE: tl.constexpr,
    DEQ: tl.constexpr,
):
    """Online-softmax step over a tile held as eight 64-column chunks.

    q0..q7: the query's [BLOCK_H, 64] column chunks (loaded once, before the tile loop);
    a0..a7: the [BLOCK_H, 64] float32 output accumulators. Each KV chunk ([BLOCK_N, 64] bf16,
    `_load_kv_chunk`) is gathered and dequantised once and serves both S = sum_c q_c k_c^T
    and a_c += P k_c, so no [*, 512] tensor is assembled (no 3-D gather and reshape, and
    their hoisted 64-bit offsets, which spilled most in the one-tile form).
    """
    k0 = _load_kv_chunk(cache_u8, cache_bf16, row, srow, valid, 0, NATIVE, DEQ)
    k1 = _load_kv_chunk(cache_u8, cache_bf16, row, srow, valid, 1, NATIVE, DEQ)
    k2 = _load_kv_chunk(cache_u8, cache_bf16, row, srow, valid, 2, NATIVE, DEQ)
    k3 = _load_kv_chunk(cache_u8, cache_bf16, row, srow, valid, 3, NATIVE, DEQ)
    k4 = _load_kv_chunk(cache_u8, cache_bf16, row, srow, valid, 4, NATIVE, DEQ)
    k5 = _load_kv_chunk(cache_u8, cache_bf16, row, srow, valid, 5, NATIVE, DEQ)
    k6 = _load_kv_chunk(cache_u8, cache_bf16, row, srow, valid, 6, NATIVE, DEQ)
    k7 = _load_kv_chunk(cache_u8, cache_bf16, row, srow, valid, 7, NATIVE, DEQ)
    s = tl.zeros((BLOCK_H, BLOCK_N), tl.float32)
    s = mma(q0, tl.trans(k0), s, NATIVE)
    s = mma(q1, tl.trans(k1), s, NATIVE)
    s = mma(q2, tl.trans(k2), s, NATIVE)
    s = mma(q3, tl.trans(k3), s, NATIVE)
    s = mma(q4, tl.trans(k4), s, NATIVE)
    s = mma(q5, tl.trans(k5), s, NATIVE)
    s = mma(q6, tl.trans(k6), s, NATIVE)
    s = mma(q7, tl.trans(k7), s, NATIVE)
    s = s * qk_scale
    s = tl.where(valid[None, :], s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    lsum = lsum * alpha + tl.sum(p, axis=1)
    pb = p.to(tl.bfloat16)
    al = alpha[:, None]
    a0 = mma(pb, k0, a0 * al, NATIVE)
    a1 = mma(pb, k1, a1 * al, NATIVE)
    a2 = mma(pb, k2, a2 * al, NATIVE)
    a3 = mma(pb, k3, a3 * al, NATIVE)
    a4 = mma(pb, k4, a4 * al, NATIVE)
    a5 = mma(pb, k5, a5 * al, NATIVE)
    a6 = mma(pb, k6, a6 * al, NATIVE)
    a7 = mma(pb, k7, a7 * al, NATIVE)
    return m_new, lsum, a0, a1, a2, a3, a4, a5, a6, a7


@triton.jit
def _store_chunk(ptr, acc, scale, hmask, C: tl.constexpr, ROUND: tl.constexpr):
    """Store acc * scale[:, None] ([BLOCK_H, 64]) into columns 64*C.. of rows at `ptr`."""
    col = C * 64 + tl.arange(0, 64)
    o = acc * scale[:, None]
    if ROUND:
        tl.store(ptr + col[None, :], round_bf16(o), mask=hmask[:, None])
    else:
        tl.store(ptr + col[None, :], o, mask=hmask[:, None])


@triton.jit
def _sparse_mla_chunked_kernel(  # noqa: PLR0915  (one kernel = one launch)
    q_ptr,
    pos_ptr,
    seq_ptr,
    swa_u8,
    swa_bf16,
    swa_bt,
    swa_bt_stride,
    comp_u8,
    comp_bf16,
    comp_bt,
    comp_bt_stride,
    idx_ptr,
    idx_stride,
    sink_ptr,
    out_ptr,
    lse_ptr,
    part_o_ptr,
    part_lse_ptr,
    H,
    n_comp_list,
    qk_scale,
    WINDOW: tl.constexpr,
    SWA_PAGE: tl.constexpr,
    COMP_PAGE: tl.constexpr,
    SWA_STRIDE: tl.constexpr,
    COMP_STRIDE: tl.constexpr,
    RATIO: tl.constexpr,
    DENSE: tl.constexpr,
    HAS_SINK: tl.constexpr,
    N_SPLIT: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr,
    NATIVE: tl.constexpr,
    DEQ: tl.constexpr,
):
    hb = tl.program_id(0)
    split = tl.program_id(1)
    t = tl.program_id(2)
    offs_h = hb * BLOCK_H + tl.arange(0, BLOCK_H)
    hmask = offs_h < H
    t64 = t.to(tl.int64)
    q_row = q_ptr + (t64 * H + offs_h[:, None]) * 512
    p = tl.load(pos_ptr + t)
    seq = tl.load(seq_ptr + t).to(tl.int64)
    n_c = (p + 1) // RATIO
    m = tl.full((BLOCK_H,), float("-inf"), tl.float32)
    lsum = tl.zeros((BLOCK_H,), tl.float32)
    q0 = tl.load(q_row + 0 * 64 + tl.arange(0, 64)[None, :], mask=hmask[:, None], other=0.0)
    q1 = tl.load(q_row + 1 * 64 + tl.arange(0, 64)[None, :], mask=hmask[:, None], other=0.0)
    q2 = tl.load(q_row + 2 * 64 + tl.arange(0, 64)[None, :], mask=hmask[:, None], other=0.0)
    q3 = tl.load(q_row + 3 * 64 + tl.arange(0, 64)[None, :], mask=hmask[:, None], other=0.0)
    q4 = tl.load(q_row + 4 * 64 + tl.arange(0, 64)[None, :], mask=hmask[:, None], other=0.0)
    q5 = tl.load(q_row + 5 * 64 + tl.arange(0, 64)[None, :], mask=hmask[:, None], other=0.0)
    q6 = tl.load(q_row + 6 * 64 + tl.arange(0, 64)[None, :], mask=hmask[:, None], other=0.0)
    q7 = tl.load(q_row + 7 * 64 + tl.arange(0, 64)[None, :], mask=hmask[:, None], other=0.0)
    a0 = tl.zeros((BLOCK_H, 64), tl.float32)
    a1 = tl.zeros((BLOCK_H, 64), tl.float32)
    a2 = tl.zeros((BLOCK_H, 64), tl.float32)
    a3 = tl.zeros((BLOCK_H, 64), tl.float32)
    a4 = tl.zeros((BLOCK_H, 64), tl.float32)
    a5 = tl.zeros((BLOCK_H, 64), tl.float32)
    a6 = tl.zeros((BLOCK_H, 64), tl.float32)
    a7 = tl.zeros((BLOCK_H, 64), tl.float32)
    WT: tl.constexpr = WINDOW // BLOCK_N
    if DENSE:  # noqa: SIM108  (triton.jit: constexpr branch)
        n_list = n_c
    else:
        n_list = n_comp_list
    n_tiles = WT + tl.cdiv(n_list, BLOCK_N)
    per = tl.cdiv(n_tiles, N_SPLIT)
    t0 = split * per
    t1 = tl.minimum(t0 + per, n_tiles)
    offs_n = tl.arange(0, BLOCK_N)
    for ti in range(t0, tl.minimum(t1, WT)):
        tok = p - WINDOW + 1 + ti * BLOCK_N + offs_n
        valid = tok >= 0
        tok = tl.maximum(tok, 0)
        pg = tl.load(swa_bt + seq * swa_bt_stride + tok // SWA_PAGE, mask=valid, other=0)
        row, srow = _record_offsets(pg, tok % SWA_PAGE, SWA_PAGE, SWA_STRIDE)
        m, lsum, a0, a1, a2, a3, a4, a5, a6, a7 = _attend_tile_chunked(
            swa_u8,
            swa_bf16,
            row,
            srow,
            valid,
            q0,
            q1,
            q2,
            q3,
            q4,
            q5,
            q6,
            q7,
            m,
            lsum,
            a0,
            a1,
            a2,
            a3,
            a4,
            a5,
            a6,
            a7,
            qk_scale,
            BLOCK_H,
            BLOCK_N,
            NATIVE,
            DEQ,
        )
    for ti in range(tl.maximum(t0, WT), t1):
        j = (ti - WT) * BLOCK_N + offs_n
        if DENSE:
            e = j
            valid = j < n_c
        else:
            e = tl.load(idx_ptr + t64 * idx_stride + j, mask=j < n_list, other=-1)
            valid = (e >= 0) & (e < n_c)
        e = tl.where(valid, e, 0)
        pg = tl.load(comp_bt + seq * comp_bt_stride + e // COMP_PAGE, mask=valid, other=0)
        row, srow = _record_offsets(pg, e % COMP_PAGE, COMP_PAGE, COMP_STRIDE)
        m, lsum, a0, a1, a2, a3, a4, a5, a6, a7 = _attend_tile_chunked(
            comp_u8,
            comp_bf16,
            row,
            srow,
            valid,
            q0,
            q1,
            q2,
            q3,
            q4,
            q5,
            q6,
            q7,
            m,
            lsum,
            a0,
            a1,
            a2,
            a3,
            a4,
            a5,
            a6,
            a7,
            qk_scale,
            BLOCK_H,
            BLOCK_N,
            NATIVE,
            DEQ,
        )
    if N_SPLIT == 1:
        if HAS_SINK:
            sink2 = tl.load(sink_ptr + offs_h, mask=hmask, other=0.0) * 1.4426950408889634
        else:
            sink2 = tl.full((BLOCK_H,), float("-inf"), tl.float32)
        mm = tl.maximum(m, sink2)
        mm_safe = tl.where((mm == float("-inf")) | (mm == float("inf")), 0.0, mm)
        den = lsum * tl.exp2(m - mm_safe) + tl.exp2(sink2 - mm_safe)
        # A +inf sink takes all the probability: scale 0 (exp2(m - 0) / inf was inf / inf
        # = NaN once m > 128).
        sc = tl.where((den > 0) & (sink2 != float("inf")), tl.exp2(m - mm_safe) / den, 0.0)
        lse = (mm_safe + tl.log2(tl.maximum(den, 1e-30))) * 0.6931471805599453
        tl.store(lse_ptr + t64 * H + offs_h, tl.where(den > 0, lse, float("-inf")), mask=hmask)
        optr = out_ptr + (t64 * H + offs_h[:, None]) * 512
    else:
        sc = 1.0 / tl.where(lsum > 0, lsum, 1.0)
        lse2 = tl.where(lsum > 0, m + tl.log2(tl.maximum(lsum, 1e-30)), float("-inf"))
        row = (t64 * N_SPLIT + split) * H + offs_h
        tl.store(part_lse_ptr + row, lse2, mask=hmask)
        optr = part_o_ptr + row[:, None] * 512
    rnd: tl.constexpr = N_SPLIT == 1
    _store_chunk(optr, a0, sc, hmask, 0, rnd)
    _store_chunk(optr, a1, sc, hmask, 1, rnd)
    _store_chunk(optr, a2, sc, hmask, 2, rnd)
    _store_chunk(optr, a3, sc, hmask, 3, rnd)
    _store_chunk(optr, a4, sc, hmask, 4, rnd)
    _store_chunk(optr, a5, sc, hmask, 5, rnd)
    _store_chunk(optr, a6, sc, hmask, 6, rnd)
    _store_chunk(optr, a7, sc, hmask, 7, rnd)


@triton.jit
def _combine_kernel(
    part_o_ptr,
    part_lse_ptr,
    sink_ptr,
    out_ptr,
    lse_ptr,
    H,
    HAS_SINK: tl.constexpr,
    N_SPLIT: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """Merge the N_SPLIT partials of BLOCK_H heads of one token (with the sink).

    The splits are unrolled, so every split's [BLOCK_H, 512] partial is loaded independently
    and the loads overlap (the former [splits, 128]-chunk loop with its cross-warp reduction
    took 24 us at B=32 x 4 splits on the H200, 2026-11-29, now 4.2; see `combine_block_h`).
    """
    t = tl.program_id(0).to(tl.int64)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    hmask = offs_h < H
    offs_d = tl.arange(0, 512)
    if HAS_SINK:
        sink2 = tl.load(sink_ptr + offs_h, mask=hmask, other=0.0) * 1.4426950408889634
    else:
        sink2 = tl.full([BLOCK_H], float("-inf"), tl.float32)
    mm = sink2
    for s in tl.static_range(N_SPLIT):
        mm = tl.maximum(mm, tl.load(part_lse_ptr + (t * N_SPLIT + s) * H + offs_h, mask=hmask))
    mm_safe = tl.where((mm == float("-inf")) | (mm == float("inf")), 0.0, mm)
    den = tl.exp2(sink2 - mm_safe)
    acc = tl.zeros([BLOCK_H, 512], tl.float32)
    for s in tl.static_range(N_SPLIT):
        row = (t * N_SPLIT + s) * H + offs_h
        # weight 0 under a +inf sink (exp2(lse - 0) overflowed for lse > 128: inf * 0 = NaN)
        w = tl.where(
            sink2 == float("inf"), 0.0, tl.exp2(tl.load(part_lse_ptr + row, mask=hmask) - mm_safe)
        )
        den += w
        po = tl.load(part_o_ptr + row[:, None] * 512 + offs_d[None, :], mask=hmask[:, None])
        acc += po * w[:, None]
    scale = tl.where(den > 0, 1.0 / tl.where(den > 0, den, 1.0), 0.0)
    o = acc * scale[:, None]
    tl.store(
        out_ptr + (t * H + offs_h[:, None]) * 512 + offs_d[None, :],
        round_bf16(o),
        mask=hmask[:, None],
    )
    lse = (mm_safe + tl.log2(tl.maximum(den, 1e-30))) * 0.6931471805599453
    tl.store(lse_ptr + t * H + offs_h, tl.where(den > 0, lse, float("-inf")), mask=hmask)


def combine_block_h(n_query_tokens: int, n_heads: int, n_split: int) -> int:
    """Heads per `_combine_kernel` program: 8, halved down to 1 while needed.

    Halved while there would be fewer than 264 programs (two per SM of an H200's 132) or more
    than 64 [heads, 512] partial loads per program. The unrolled split loop keeps all BLOCK_H x
    n_split partial loads in flight; at BLOCK_H x n_split <= 64 ptxas (sm_90, Triton 3.6) needs
    at most 184 registers and spills nothing, while 8 x 32 spills 304 B. `choose_splits` stays
    within 64 splits; an explicit n_split above 64 still runs correctly, with spills.
    """
    bh = 8
    while bh > 1 and (n_query_tokens * triton.cdiv(n_heads, bh) < 264 or bh * n_split > 64):
        bh //= 2
    return bh


def choose_splits(
    n_query_tokens: int, n_head_blocks: int, n_list_max: int, block_n: int, min_tiles: int = 4
) -> int:
    """KV splits (flash-decoding): the power of two with the fewest waves per unit of work.

    With P = T x head blocks programs and n splits, the grid runs ceil(P * n / 132) waves
    (132 SMs of an H200, one CTA each) of programs doing 1/n of the work: the cost
    ceil(P * n / 132) / n is minimised over n = 1, 2, 4, ... up to the next power of two of
    ceil(132 / P), one split per `min_tiles` tiles of the longest list and 64 splits; ties keep
    fewer splits (no combine launch).

    `min_tiles` is 4 for the Triton kernel (below) and 2 for the Gluon kernel, whose fixed
    cost per program is lower (H200, 2026-11-29, CUDA graph, best of 2; V4-Flash CSA L=128K:
    B=1 4 splits 21.5 µs, 8 splits 17.3; B=8 4 splits 22.3, 8 splits 19.3; HCA L=128K B=1 8
    splits 19.8, 16 splits 17.4). The 64-split ceiling: HCA L=1M B=1 ran 26.3 µs with 64
    splits and 28.3 with 128.

    The Triton kernel, measured on the H200 (V4-Flash CSA, L=128K, 2026-11-29, CUDA graph, best
    of 3): B=128 (P=128) 1 split 95.8 µs vs 2 splits 126.7 µs; B=64 2 splits 67.3 µs vs 1
    split 89.1 µs. Above 132 programs the cap keeps 1 split: B=134 / 140 ran 2 % faster with 2
    splits (165.2 vs 168.1, 167.9 vs 171.0 µs), B=200 / 260 25-34 % slower (221.5 vs 177.7,
    244.6 vs 182.9 µs): the combine and the extra programs cost more than the model says.

    Args:
        n_query_tokens: T.
        n_head_blocks: ceil(H / BLOCK_H).
        n_list_max: most entries any query attends to (window + compressed list).
        block_n: entries per tile.
        min_tiles: fewest tiles of the longest list per split.

    Returns:
        Splits, >= 1.
    """
    sms = 132
    programs = max(n_query_tokens * n_head_blocks, 1)
    tiles = math.ceil(n_list_max / block_n)
    cap = min(1 << math.ceil(math.log2(math.ceil(sms / programs))), max(1, tiles // min_tiles), 64)
    best, best_cost = 1, 1.0  # n = 1: one wave whenever the loop below runs (P <= 132)
    n = 2
    while n <= cap:
        cost = math.ceil(programs * n / sms) / n
        if cost < best_cost:
            best, best_cost = n, cost
        n *= 2
    return best


def sparse_mla_triton(  # noqa: PLR0912, PLR0915  (validation, token slices, one launch)
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
    n_split: int | None = None,
    block_h: int = 64,
    block_n: int = 64,
    num_warps: int = 8,
    num_stages: int = 1,
    dv_split: int = 0,
    deq: int = 0,
    warp_specialized: bool | None = None,
    ws_options: dict[str, int] | None = None,
    out: torch.Tensor | None = None,
    lse_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton form of `sparse_mla_reference` (API: `dsv4_kernels.sparse_mla.sparse_mla_attention`).

    Tuning: `n_split` KV splits (None: `choose_splits`), `block_h` heads and `block_n` entries
    per tile, `num_warps`, `num_stages`, `dv_split` (0, the default: the tile as eight
    64-column chunks, `_attend_tile_chunked`; 1: one [BLOCK_N, 512] tile; 2: two programs per
    head block, each owning half of the output dims),
    `deq` (dequantisation variant, see `_load_kv_cols`). `warp_specialized`: None (default)
    runs the Gluon kernel of `gluon_attention` (producer / two-consumer warpgroups, 1.36-1.98x
    faster on the H200) wherever `gluon_attention.unsupported_reason` and
    `gluon_attention.cache_alignment_reason` (16-byte aligned records) are None and no Triton
    tuning argument above was changed, else this module's kernel; True forces it, False never
    uses it (with it, block_h, block_n, num_warps, num_stages, dv_split and deq do not apply);
    `ws_options` go to `gluon_attention.launch_options` (None: its defaults for dense lists,
    `gluon_attention.SELECTED_OPTIONS` for selected ones). `out` [T, H, 512] bf16 and
    `lse_out` [T, H] float32 optionally receive the results. More than `MAX_TOKENS_PER_LAUNCH` query
    tokens (a CUDA grid's y/z limit) run as consecutive launches over slices of the tokens.

    Raises:
        ValueError: an input's shape or dtype (`reference.check_attention_inputs`), `out` /
            `lse_out` not contiguous [T, H, 512] bf16 / [T, H] float32, block_n not dividing
            the window, dv_split not 0, 1 or 2, warp_specialized=True where the Gluon kernel
            cannot run (the message says why), or `ws_options` out of range.
    """
    params = dict(locals())
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
    t_count, h, d = q.shape
    for name, o, shape, dt in (
        ("out", out, (t_count, h, d), torch.bfloat16),
        ("lse_out", lse_out, (t_count, h), torch.float32),
    ):
        if o is not None and (o.shape != shape or o.dtype != dt or not o.is_contiguous()):
            raise ValueError(
                f"{name} must be a contiguous {list(shape)} {dt}, got {tuple(o.shape)} {o.dtype}"
            )
    if window % block_n:
        raise ValueError(f"block_n={block_n} must divide window={window}")
    if dv_split not in (0, 1, 2):
        raise ValueError(f"dv_split={dv_split} must be 0 (chunked tile), 1 or 2")
    if comp_indices is None and max_comp is None:  # once, so token slices agree on it
        max_comp = int(((positions.long() + 1) // ratio).max()) if t_count else 0
    if t_count > MAX_TOKENS_PER_LAUNCH:
        out = out if out is not None else q.new_empty(t_count, h, d, dtype=torch.bfloat16)
        lse_out = lse_out if lse_out is not None else q.new_empty(t_count, h, dtype=torch.float32)
        for i in range(0, t_count, MAX_TOKENS_PER_LAUNCH):
            j = min(i + MAX_TOKENS_PER_LAUNCH, t_count)
            part = {"q": q[i:j], "positions": positions[i:j], "seq_ids": seq_ids[i:j]}
            if comp_indices is not None:
                part["comp_indices"] = comp_indices[i:j]
            sparse_mla_triton(
                **{**params, **part, "max_comp": max_comp, "out": out[i:j], "lse_out": lse_out[i:j]}
            )
        return out, lse_out
    dev = q.device
    q = q.to(torch.bfloat16).contiguous()
    positions = positions.to(torch.int32).contiguous()
    seq_ids = seq_ids.to(torch.int32).contiguous()
    swa_bt = swa_block_table.to(torch.int32).contiguous()
    comp_bt = comp_block_table.to(torch.int32).contiguous()
    dense = comp_indices is None
    if dense:
        assert max_comp is not None
        idx = positions  # unused
        idx_stride = 0
        n_comp_list = max_comp
    else:
        assert comp_indices is not None
        idx = comp_indices.to(torch.int32).contiguous()
        idx_stride = idx.shape[1]
        n_comp_list = idx.shape[1]
    if out is None:
        out = torch.empty(t_count, h, d, dtype=torch.bfloat16, device=dev)
    lse = (
        lse_out if lse_out is not None else torch.empty(t_count, h, dtype=torch.float32, device=dev)
    )
    if t_count == 0:
        return out, lse
    if warp_specialized is not False:
        reason = gluon_attention.unsupported_reason(
            q.device, h, window
        ) or gluon_attention.cache_alignment_reason(swa_cache, comp_cache)
        if warp_specialized and reason is not None:
            raise ValueError(f"warp_specialized=True cannot run: {reason}")
        tuned = (block_h, block_n, num_warps, num_stages, dv_split, deq) != (64, 64, 8, 1, 0, 0)
        warp_specialized = reason is None and (bool(warp_specialized) or not tuned)
    if warp_specialized:
        block_h, block_n = gluon_attention.BLOCK_H, gluon_attention.BLOCK_N
    n_hb = triton.cdiv(h, block_h)
    if n_split is None:
        n_split = choose_splits(
            t_count, n_hb, window + n_comp_list, block_n, 2 if warp_specialized else 4
        )
    if n_split > 1:
        part_o = torch.empty(t_count, n_split, h, d, dtype=torch.float32, device=dev)
        part_lse = torch.empty(t_count, n_split, h, dtype=torch.float32, device=dev)
    else:  # unused; distinct tensors (the interpreter copies aliased arguments back in turn)
        part_o = torch.empty(1, dtype=torch.float32, device=dev)
        part_lse = torch.empty(1, dtype=torch.float32, device=dev)
    sink_t = (
        sink.float().contiguous()
        if sink is not None
        else torch.zeros(1, dtype=torch.float32, device=dev)
    )
    swa_u8, comp_u8 = single_page_rows(swa_cache), single_page_rows(comp_cache)
    # Per-kernel constexprs and launch options; the rest of the arguments are shared.
    if warp_specialized:
        kern = gluon_attention._sparse_mla_ws_kernel
        if ws_options is None:
            ws_options = {} if dense else gluon_attention.SELECTED_OPTIONS
        own: dict[str, Any] = gluon_attention.launch_options(**ws_options)
        head_programs = n_hb
    else:
        kern = _sparse_mla_chunked_kernel if dv_split == 0 else _sparse_mla_kernel
        own = {"BLOCK_H": block_h, "NATIVE": NATIVE_FP8, "DEQ": deq}
        own |= {"num_warps": num_warps, "num_stages": num_stages}
        if dv_split:
            own["DV_SPLIT"] = dv_split
        head_programs = n_hb * max(dv_split, 1)
    kernel = kern[(head_programs, n_split, t_count)](
        q,
        positions,
        seq_ids,
        swa_u8,
        swa_u8.view(torch.bfloat16),
        swa_bt,
        swa_bt.stride(0),
        comp_u8,
        comp_u8.view(torch.bfloat16),
        comp_bt,
        comp_bt.stride(0),
        idx,
        idx_stride,
        sink_t,
        out,
        lse,
        part_o,
        part_lse,
        h,
        n_comp_list,
        softmax_scale * LOG2E,
        WINDOW=window,
        SWA_PAGE=swa_page,
        COMP_PAGE=comp_page,
        SWA_STRIDE=page_stride(swa_cache),
        COMP_STRIDE=page_stride(comp_cache),
        RATIO=ratio,
        DENSE=dense,
        HAS_SINK=sink is not None,
        N_SPLIT=n_split,
        BLOCK_N=block_n,
        **own,
    )
    LAST_KERNEL["sparse_mla"] = kernel
    if n_split > 1:
        bh = combine_block_h(t_count, h, n_split)
        _combine_kernel[(t_count, triton.cdiv(h, bh))](
            part_o,
            part_lse,
            sink_t,
            out,
            lse,
            h,
            HAS_SINK=sink is not None,
            N_SPLIT=n_split,
            BLOCK_H=bh,
            num_warps=4,
        )
    return out, lse


__all__ = ["ENTRY_BYTES", "MAX_TOKENS_PER_LAUNCH", "choose_splits", "sparse_mla_triton"]
