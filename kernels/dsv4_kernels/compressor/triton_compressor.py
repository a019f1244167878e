"""Triton KV compressor: gated-softmax pooling + RMSNorm + RoPE + fp8_ds_mla/bf16 store.

One program per (sequence, entry): an online softmax over the entry's rows (per dim) keeps the
registers at 3 x D float32 whatever the ratio (8 rows for ratio 4, 128 for ratio 128).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dsv4_kernels.compressor.reference import check_compress_inputs
from dsv4_kernels.kv_format import ENTRY_BYTES, HEAD_DIM
from dsv4_kernels.triton_fp8 import (
    f32_to_e4m3_bits,
    pow2_from_exponent,
    round_bf16,
    ue8m0_exponent,
)


@triton.jit
def _pool_rows(
    kv_ptr,
    sc_ptr,
    ape_ptr,
    row0,
    n_rows,
    row_stride,
    col0,
    m,
    lsum,
    acc,
    D: tl.constexpr,
    RB: tl.constexpr,
):
    """Fold rows [row0, row0 + n_rows) (columns col0..col0+D) into the online softmax."""
    offs_r = tl.arange(0, RB)
    offs_d = tl.arange(0, D)
    for r in range(0, n_rows, RB):
        rows = r + offs_r
        rmask = rows < n_rows
        ptr = (row0 + rows).to(tl.int64)[:, None] * row_stride + col0 + offs_d[None, :]
        x = tl.load(kv_ptr + ptr, mask=rmask[:, None], other=0.0)
        s = tl.load(sc_ptr + ptr, mask=rmask[:, None], other=float("-inf"))
        a = tl.load(
            ape_ptr + rows[:, None] * row_stride + col0 + offs_d[None, :],
            mask=rmask[:, None],
            other=0.0,
        )
        s = s + a
        m_new = tl.maximum(m, tl.max(s, axis=0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_safe)
        p = tl.exp(s - m_safe[None, :])
        lsum = lsum * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p * x, axis=0)
        m = m_new
    return m, lsum, acc


@triton.jit
def _compress_kernel(  # noqa: PLR0915  (one kernel = one launch)
    kv_ptr,
    sc_ptr,
    ape_ptr,
    prev_kv_ptr,
    prev_sc_ptr,
    w_ptr,
    cos_ptr,
    sin_ptr,
    out_bf16_ptr,
    out_fp8_ptr,
    T,
    G,
    eps,
    RATIO: tl.constexpr,
    OVERLAP: tl.constexpr,
    HAS_PREV: tl.constexpr,
    D: tl.constexpr,
    ROPE: tl.constexpr,
    RB: tl.constexpr,
    WRITE_BF16: tl.constexpr,
    WRITE_FP8: tl.constexpr,
    ENTRY: tl.constexpr,
):
    pid = tl.program_id(0)
    bi = (pid // G).to(tl.int64)  # 64-bit offsets: B * T * 2D passes 2**31 (B=3, T=1M, D=512)
    g = pid % G
    CD: tl.constexpr = 2 * D if OVERLAP else D
    offs_d = tl.arange(0, D)
    m = tl.full((D,), float("-inf"), tl.float32)
    lsum = tl.zeros((D,), tl.float32)
    acc = tl.zeros((D,), tl.float32)
    base = bi * T * CD
    if OVERLAP:
        if g > 0:
            m, lsum, acc = _pool_rows(
                kv_ptr + base,
                sc_ptr + base,
                ape_ptr,
                (g - 1) * RATIO,
                RATIO,
                CD,
                0,
                m,
                lsum,
                acc,
                D,
                RB,
            )
        elif HAS_PREV:
            pbase = bi * RATIO * CD
            m, lsum, acc = _pool_rows(
                prev_kv_ptr + pbase,
                prev_sc_ptr + pbase,
                ape_ptr,
                0,
                RATIO,
                CD,
                0,
                m,
                lsum,
                acc,
                D,
                RB,
            )
        m, lsum, acc = _pool_rows(
            kv_ptr + base, sc_ptr + base, ape_ptr, g * RATIO, RATIO, CD, D, m, lsum, acc, D, RB
        )
    else:
        m, lsum, acc = _pool_rows(
            kv_ptr + base, sc_ptr + base, ape_ptr, g * RATIO, RATIO, CD, 0, m, lsum, acc, D, RB
        )
    pooled = round_bf16(acc / lsum).to(tl.float32)
    w = tl.load(w_ptr + offs_d)
    ms = tl.sum(pooled * pooled, axis=0) / D
    y = round_bf16(pooled * tl.rsqrt(ms + eps) * w).to(tl.float32)
    # RoPE on the last ROPE dims, interleaved pairs (2i, 2i + 1).
    half = tl.arange(0, D // 2)
    ridx = half - (D - ROPE) // 2
    rmask = ridx >= 0
    cs_base = (bi * G + g) * (ROPE // 2)
    c = tl.load(cos_ptr + cs_base + ridx, mask=rmask, other=1.0)
    s = tl.load(sin_ptr + cs_base + ridx, mask=rmask, other=0.0)
    ye, yo = tl.split(tl.reshape(y, (D // 2, 2)))
    y = tl.reshape(tl.join(ye * c - yo * s, ye * s + yo * c), (D,))
    yb = round_bf16(y)
    entry = bi * G + g
    if WRITE_BF16:
        tl.store(out_bf16_ptr + entry * D + offs_d, yb)
    if WRITE_FP8:
        # fp8_ds_mla: 7 tiles of 64 NoPE dims in e4m3 with UE8M0 scales, then bf16 RoPE.
        y2 = tl.reshape(yb.to(tl.float32), (D // 64, 64))
        tile = tl.arange(0, D // 64)
        col = tl.arange(0, 64)
        e = ue8m0_exponent(tl.max(tl.abs(y2), axis=1))
        q = y2 * pow2_from_exponent(-e)[:, None]
        q = tl.minimum(tl.maximum(q, -448.0), 448.0)
        codes = f32_to_e4m3_bits(q)
        obase = out_fp8_ptr + entry * ENTRY
        nope_tiles: tl.constexpr = (D - ROPE) // 64
        is_nope = tile < nope_tiles
        tl.store(
            obase + tile[:, None] * 64 + col[None, :], codes.to(tl.uint8), mask=is_nope[:, None]
        )
        tl.store(obase + (D + ROPE) + tile, (e + 127).to(tl.uint8), mask=is_nope)
        tl.store(obase + (ENTRY - 1), tl.zeros((), tl.uint8))
        rbits = yb.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        rope_pos = offs_d - (D - ROPE)
        is_rope = rope_pos >= 0
        dst = obase + (D - ROPE) + 2 * rope_pos
        tl.store(dst, (rbits & 0xFF).to(tl.uint8), mask=is_rope)
        tl.store(dst + 1, (rbits >> 8).to(tl.uint8), mask=is_rope)


def compress_triton(
    kv: torch.Tensor,
    score: torch.Tensor,
    ape: torch.Tensor,
    norm_weight: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    ratio: int,
    prev_kv: torch.Tensor | None = None,
    prev_score: torch.Tensor | None = None,
    eps: float = 1e-6,
    rope_dim: int = 64,
    out_format: str = "bf16",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton form of `compress_reference`; see `dsv4_kernels.compressor.compress` for the API.

    `out` (optional) receives the result: [B, T//ratio, D] bfloat16 or [B, T//ratio, 584] uint8.

    Raises:
        ValueError: inconsistent shapes (`reference.check_compress_inputs`), or fp8 with
            D != 512.
    """
    check_compress_inputs(
        kv, score, ape, norm_weight, cos, sin, ratio, prev_kv, prev_score, rope_dim
    )
    b, t, cd = kv.shape
    overlap = ratio == 4
    d = cd // (2 if overlap else 1)
    g = t // ratio
    kv = kv.float().contiguous()
    score = score.float().contiguous()
    ape = ape.float().contiguous()
    w = norm_weight.float().contiguous()
    cos = cos.float().contiguous()
    sin = sin.float().contiguous()
    has_prev = prev_kv is not None and prev_score is not None
    pk = prev_kv.float().contiguous() if prev_kv is not None and has_prev else kv
    ps = prev_score.float().contiguous() if prev_score is not None and has_prev else score
    write_fp8 = out_format == "fp8_ds_mla"
    if write_fp8 and d != HEAD_DIM:
        raise ValueError(f"fp8_ds_mla needs D={HEAD_DIM}, got D={d}")
    if write_fp8:
        out_fp8 = (
            out
            if out is not None
            else torch.empty(b, g, ENTRY_BYTES, dtype=torch.uint8, device=kv.device)
        )
        out_bf16 = torch.empty(1, dtype=torch.bfloat16, device=kv.device)
    else:
        out_bf16 = (
            out if out is not None else torch.empty(b, g, d, dtype=torch.bfloat16, device=kv.device)
        )
        out_fp8 = torch.empty(1, dtype=torch.uint8, device=kv.device)
    if b * g == 0:
        return out_fp8 if write_fp8 else out_bf16
    _compress_kernel[(b * g,)](
        kv,
        score,
        ape,
        pk,
        ps,
        w,
        cos,
        sin,
        out_bf16,
        out_fp8,
        t,
        g,
        eps,
        RATIO=ratio,
        OVERLAP=overlap,
        HAS_PREV=has_prev,
        D=d,
        ROPE=rope_dim,
        RB=min(ratio, 16),
        WRITE_BF16=not write_fp8,
        WRITE_FP8=write_fp8,
        ENTRY=ENTRY_BYTES,
        num_warps=4,
    )
    return out_fp8 if write_fp8 else out_bf16
