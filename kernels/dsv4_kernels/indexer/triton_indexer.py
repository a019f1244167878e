"""Triton lightning indexer with fused top-k: the logits never leave the chip.

Default (`sample=128`): the sampled-threshold mode of `sampled.py` (a sampled threshold, a
filtering pass 1 with `SELECT=3`, one selection launch; README.md beside this file). The full
path below (`sample=0`) is the reference design and the variants' base.

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
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents

from dsv4_kernels.indexer.reference import check_index_inputs
from dsv4_kernels.indexer.sampled import _filtered_select_kernel, _sample_kernel, _threshold_kernel
from dsv4_kernels.indexer.scoring import _score_select_body
from dsv4_kernels.indexer.selection import _select_topk, _select_topk_fast, _select_topk_radix
from dsv4_kernels.kv_format import page_stride, single_page_rows
from dsv4_kernels.triton_fp8 import INTERPRET, NATIVE_FP8

MAX_TOKENS_PER_LAUNCH = 65535
"""Query tokens per launch: their grid axis is y, which CUDA caps at 65,535."""
SAMPLE_BLOCK = 64
"""Sample keys per tile of `_sample_kernel` with PDL (launched with 4 warps, 2 stages; without
PDL: pass 1's 128-key tiles, 3 stages, as measured before). Lighter than 128-key tiles, so
pass 1's programs become resident beside the sample programs instead of after them. H200,
V4 L=1M, PDL, CUDA graph, median of 7 alternating rounds (2026-11-29, against 128 keys and 3
stages): Flash B=32 311.7 vs 320.9 µs, B=1 27.1 vs 27.8; Pro B=32 313.8 vs 329.6 (5 rounds)
(kernels/benchmarks/reports/2026-11-29-h200.md)."""
INT32_MIN = -2147483648
INT32_MAX = 2147483647


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
    thr_ptr,
    kth_ptr,
    flag_ptr,
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
    USE_FLAG: tl.constexpr,
    LEAN: tl.constexpr,
    IDX32: tl.constexpr,
    EQ_SLOTS: tl.constexpr,
    PDL: tl.constexpr,
):
    """Pass 1: score one chunk of keys for one query token, write its top-K candidates.

    USE_FLAG: run only where flag[t] != 0 (the exact fallback of the truncated-list mode).
    PDL (programmatic dependent launch, SELECT == 3 only): lets the selection launch start
    during the last wave; `_score_select_body` waits for the launch before it (the threshold
    launch, or the sample launch when that computes the threshold itself) only after scoring
    its chunk.
    """
    if PDL:
        gdc_launch_dependents()
    c = tl.program_id(0)
    t = tl.program_id(1).to(tl.int64)
    run = True
    if USE_FLAG:
        run = tl.load(flag_ptr + t) != 0
    if run:
        _score_select_body(
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
            H,
            D,
            PAGE,
            KEY_STRIDE,
            CHUNK,
            BLOCK_K,
            K,
            RATIO,
            NATIVE,
            SELECT,
            SCORE_ONLY,
            THRESH,
            STORE_KTH,
            TIER_M,
            LEAN,
            IDX32,
            EQ_SLOTS,
            PDL,
        )


@triton.jit
def _merge_kernel(  # noqa: PLR0912, PLR0915  (constexpr variant dispatch)
    in_val_ptr,
    in_id_ptr,
    out_val_ptr,
    out_id_ptr,
    thr_ptr,
    kth_ptr,
    flag_ptr,
    fb_val_ptr,
    fb_id_ptr,
    scr_val_ptr,
    scr_id_ptr,
    n_in,
    n_out,
    n_kth,
    KIN: tl.constexpr,
    STRIDE: tl.constexpr,
    K: tl.constexpr,
    GROUP: tl.constexpr,
    SELECT: tl.constexpr,
    THRESH: tl.constexpr,
    VERIFY: tl.constexpr,
    USE_FLAG: tl.constexpr,
    FB_GROUP: tl.constexpr,
    FB_N2: tl.constexpr,
):
    """Pass 2: the top-K of GROUP candidate lists (the first KIN entries of lists STRIDE apart).

    VERIFY (last level of the truncated-list mode, one program per token): flag[t] = 1 when
    some chunk dropped a key above the K-th value found here (kth[t, c] > it), else 0.
    FB_GROUP > 0 (tiered mode): a flagged token is finished here: groups of FB_GROUP of its
    n_kth full lists (fb[t, c, :K]) are reduced one after the other into scr[t, :FB_N2] and
    those into the output (no further launch; serial, so slow, but only when flagged).
    USE_FLAG: run only where flag[t] != 0.
    """
    g = tl.program_id(0)
    t = tl.program_id(1).to(tl.int64)
    run = True
    if USE_FLAG:
        run = tl.load(flag_ptr + t) != 0
    if run:
        offs = tl.arange(0, GROUP * KIN)
        lst = g * GROUP + offs // KIN
        m = lst < n_in
        src = (t * n_in + lst) * STRIDE + offs % KIN
        vals = tl.load(in_val_ptr + src, mask=m, other=float("-inf"))
        ids = tl.load(in_id_ptr + src, mask=m, other=-1)
        base = (t * n_out + g) * K
        if SELECT == 0:
            _select_topk(vals, ids, K, out_val_ptr + base, out_id_ptr + base)
        elif SELECT == 1:
            _select_topk_radix(vals, ids, K, out_val_ptr + base, out_id_ptr + base)
        else:
            if THRESH:  # noqa: SIM108  (triton.jit: constexpr branch)
                tau = tl.load(thr_ptr + t, volatile=True)
            else:
                tau = -2147483648  # no bound
            lo, n_ge = _select_topk_fast(vals, ids, K, out_val_ptr + base, out_id_ptr + base, tau)
            if THRESH:
                tl.atomic_max(thr_ptr + t, tl.where(n_ge >= K, lo, -2147483648))
            if VERIFY:
                # Written keys are >= lo, so lo <= the K-th value of the union: a chunk whose
                # dropped keys are all <= lo (kth <= lo) lost nothing of the top-K.
                offs_c = tl.arange(0, 256)
                viol = tl.sum(offs_c * 0, axis=0)
                for s0 in range(0, n_kth, 256):
                    kv = tl.load(
                        kth_ptr + t * n_kth + s0 + offs_c,
                        mask=s0 + offs_c < n_kth,
                        other=-2147483648,
                    )
                    viol += tl.sum((kv > lo).to(tl.int32), axis=0)
                # Fewer than K written (a threshold skip over the first tiers): the tiers hold
                # fewer than K keys >= a bound of the K-th, so keys are missing (ties included).
                viol += (n_ge < K).to(tl.int32)
                tl.store(flag_ptr + t, (viol > 0).to(tl.int32))
                if FB_GROUP > 0:  # noqa: SIM102  (constexpr test, then a runtime one)
                    if viol > 0:
                        offs_f = tl.arange(0, FB_GROUP * K)
                        n_grp = tl.cdiv(n_kth, FB_GROUP)
                        for g2 in range(n_grp):
                            lf = g2 * FB_GROUP + offs_f // K
                            mf = lf < n_kth
                            sf = (t * n_kth + lf) * K + offs_f % K
                            vf = tl.load(fb_val_ptr + sf, mask=mf, other=float("-inf"))
                            idf = tl.load(fb_id_ptr + sf, mask=mf, other=-1)
                            so = (t * FB_N2 + g2) * K
                            _select_topk_fast(vf, idf, K, scr_val_ptr + so, scr_id_ptr + so, tau)
                        # The group lists (and the verified list's stores) are complete and
                        # visible to the whole CTA before the final pass reads / overwrites.
                        tl.debug_barrier()
                        offs_2 = tl.arange(0, FB_N2 * K)
                        m2 = offs_2 // K < n_grp
                        s2 = t * FB_N2 * K + offs_2
                        v2 = tl.load(scr_val_ptr + s2, mask=m2, other=float("-inf"))
                        i2 = tl.load(scr_id_ptr + s2, mask=m2, other=-1)
                        _select_topk_fast(v2, i2, K, out_val_ptr + base, out_id_ptr + base, tau)


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


def choose_filter_chunk(n_tokens: int, n_keys_max: int, n_sms: int) -> int:
    """Keys per pass-1 program in the sampled-threshold mode (no per-chunk search there).

    2,048, or 1,024 when that leaves fewer than 4 programs per SM. Measured on the H200
    (2026-11-29, V4-Flash L=1M, CUDA graph, 1,024 vs 2,048): B=1 33.8 vs 37.8 µs, B=4 71.5 vs
    78.7, B=8 112.3 vs 111.7, B=32 330.2 vs 319.4 (kernels/benchmarks/reports/2026-11-29-h200.md).

    Args:
        n_tokens: query tokens T.
        n_keys_max: most keys any query scores.
        n_sms: streaming multiprocessors of the GPU.

    Returns:
        1024 or 2048.
    """
    return 1024 if n_tokens * math.ceil(n_keys_max / 2048) < 4 * n_sms else 2048


@dataclass(frozen=True)
class _Pass1:
    """Tensors and settings shared by the pass-1 launches of one call."""

    qb: torch.Tensor
    w: torch.Tensor
    pages: torch.Tensor
    bt: torch.Tensor
    pos: torch.Tensor
    seq: torch.Tensor
    h: int
    d: int
    page_size: int
    ratio: int
    block_k: int
    num_warps: int
    num_stages: int
    lean: int = 0
    maxnreg: int | None = None
    pdl: bool = False

    @property
    def lean_fp8(self) -> bool:
        """Pass-1 code reads the keys as float8 (lean code generation, native fp8 GPU)."""
        return bool(self.lean) and NATIVE_FP8

    @property
    def key_stride(self) -> int:
        """Bytes from one key page to the next (vLLM pads its pages past page_size * 132)."""
        return page_stride(self.pages)

    @property
    def idx32(self) -> bool:
        """Lean pass-1 code may use int32 key-cache offsets (cache under 2**31 bytes)."""
        extent = (self.pages.shape[0] - 1) * self.key_stride + self.pages.shape[1]
        return bool(self.lean) and extent < 2**31

    def key_consts(self) -> dict[str, int]:
        """The constexprs every indexer kernel takes with `key_args`: H, D, PAGE, RATIO."""
        return {
            "H": self.h,
            "D": self.d,
            "PAGE": self.page_size,
            "KEY_STRIDE": self.key_stride,
            "RATIO": self.ratio,
        }

    def key_args(self, fp8_view: bool) -> tuple[torch.Tensor | int, ...]:
        """The query and key-cache arguments every indexer kernel takes first, in order.

        q, weights, key pages (viewed as float8_e4m3fn when `fp8_view`, else uint8), the same
        pages as float32 (the scales), block table, its row stride, positions, seq_ids.
        """
        pages = self.pages.view(torch.float8_e4m3fn) if fp8_view else self.pages
        return (
            self.qb,
            self.w,
            pages,
            self.pages.view(torch.float32),
            self.bt,
            self.bt.stride(0),
            self.pos,
            self.seq,
        )


def _pdl_args(pdl: bool) -> dict[str, Any]:
    """The `PDL` constexpr and the launch option of an indexer kernel, set together.

    A kernel started with `launch_pdl` must run its `gdc_wait` (PDL=True) before it reads what
    the previous launch wrote, so the two never differ.
    """
    return {"PDL": True, "launch_pdl": True} if pdl else {"PDL": False}


def pdl_supported(device: torch.device) -> bool:
    """Whether kernels on `device` can use programmatic dependent launch (PDL).

    Needs an NVIDIA GPU of compute capability 9.0 or later (Hopper; CUDA programming guide,
    "Programmatic Dependent Launch and Synchronization") and compiled kernels: Triton's CPU
    interpreter (TRITON_INTERPRET=1) has no `gdc_wait`, and ROCm builds of PyTorch also call
    AMD GPUs "cuda" (MI300X reports capability 9.4) while Triton's AMD backend has no
    `launch_pdl`.
    """
    if device.type != "cuda" or INTERPRET or torch.version.hip is not None:
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


def _capability(device: torch.device) -> str:
    """`device`'s compute capability as " (capability X.Y)", or "" off CUDA / ROCm."""
    if device.type != "cuda":
        return ""
    major, minor = torch.cuda.get_device_capability(device)
    hip = ", ROCm" if torch.version.hip is not None else ""
    return f" (capability {major}.{minor}{hip})"


def _pass1(
    a: _Pass1,
    t_count: int,
    chunk: int,
    k: int,
    n_chunks: int,
    cv: torch.Tensor,
    ci: torch.Tensor,
    select: int,
    score_only: bool = False,
    thr: torch.Tensor | None = None,
    kth: torch.Tensor | None = None,
    flag: torch.Tensor | None = None,
    tier_m: int = 0,
    eq_slots: int = 0,
) -> None:
    dummy = a.pos
    extra: dict[str, Any] = {} if a.maxnreg is None else {"maxnreg": a.maxnreg}
    extra.update(_pdl_args(a.pdl and select == 3))
    _score_select_kernel[(n_chunks, t_count)](
        *a.key_args(a.lean_fp8),
        cv,
        ci,
        thr if thr is not None else dummy,
        kth if kth is not None else dummy,
        flag if flag is not None else dummy,
        n_chunks,
        **a.key_consts(),
        CHUNK=chunk,
        BLOCK_K=min(a.block_k, chunk),
        K=k,
        NATIVE=NATIVE_FP8,
        SELECT=select,
        SCORE_ONLY=score_only,
        THRESH=thr is not None,
        STORE_KTH=kth is not None,
        TIER_M=tier_m,
        USE_FLAG=flag is not None,
        LEAN=int(a.lean),
        IDX32=a.idx32,
        EQ_SLOTS=eq_slots,
        num_warps=a.num_warps,
        num_stages=a.num_stages,
        **extra,
    )


def _merges(
    cv: torch.Tensor,
    ci: torch.Tensor,
    n_in: int,
    kin: int,
    topk: int,
    out_val: torch.Tensor,
    out_id: torch.Tensor,
    merge_width: int,
    select: int,
    merge_warps: int | None,
    thr: torch.Tensor | None = None,
    kth: torch.Tensor | None = None,
    flag: torch.Tensor | None = None,
    verify: bool = False,
    stride: int | None = None,
    fb_group: int = 0,
) -> None:
    """Reduce n_in candidate lists (first `kin` of every `stride`) per token to topk in out_*.

    fb_group > 0 (tiered mode): the verifying merge finishes flagged tokens itself from the
    full lists cv/ci (groups of fb_group lists).
    """
    t_count = out_val.shape[0]
    dev = out_val.device
    dummy = out_id
    n_kth = kth.shape[1] if kth is not None else 0
    fb_n2 = triton.next_power_of_2(math.ceil(n_kth / fb_group)) if fb_group else 1
    if fb_group:
        scr_v = torch.empty(t_count, fb_n2, topk, dtype=torch.float32, device=dev)
        scr_i = torch.empty(t_count, fb_n2, topk, dtype=torch.int32, device=dev)
    fb_v, fb_i = cv, ci
    while True:
        # At least 2 lists per program, so that every level shrinks (merge_group=1 looped).
        group = max(2, topk // kin, min(merge_width // kin, triton.next_power_of_2(n_in)))
        n_out = math.ceil(n_in / group)
        last = n_out == 1
        if last:
            nv, ni = out_val, out_id
        else:
            nv = torch.empty(t_count, n_out, topk, dtype=torch.float32, device=dev)
            ni = torch.empty(t_count, n_out, topk, dtype=torch.int32, device=dev)
        width = group * kin
        _merge_kernel[(n_out, t_count)](
            cv,
            ci,
            nv,
            ni,
            thr if thr is not None else dummy,
            kth if kth is not None else dummy,
            flag if flag is not None else dummy,
            fb_v,
            fb_i,
            scr_v if fb_group else dummy,
            scr_i if fb_group else dummy,
            n_in,
            n_out,
            n_kth,
            KIN=kin,
            STRIDE=stride or kin,
            K=topk,
            GROUP=group,
            SELECT=select,
            THRESH=thr is not None,
            VERIFY=verify and last,
            USE_FLAG=flag is not None and not verify,
            FB_GROUP=fb_group if verify and last else 0,
            FB_N2=fb_n2,
            num_warps=merge_warps or (16 if width >= 8192 else 8),
        )
        if last:
            return
        cv, ci, n_in, kin, stride = nv, ni, n_out, topk, topk


def _redo_flagged(
    a: _Pass1,
    chunk: int,
    max_keys: int,
    topk: int,
    out_val: torch.Tensor,
    out_id: torch.Tensor,
    flag: torch.Tensor,
    merge_width: int,
    merge_warps: int | None,
) -> None:
    """Exact fallback: tokens with flag[t] != 0 rerun the full path (per-chunk top-K, merges).

    Its launches always run (a fixed launch sequence, CUDA-graph safe) and exit at once for
    unflagged tokens, so they are kept few and small: at most 32 chunks per token (chunks up
    to 8,192 keys) and one merge level when the 32 lists hold at most 16,384 candidates.
    """
    t_count = out_val.shape[0]
    fb_chunk = max(chunk, choose_chunk(t_count, max_keys, topk, a.page_size))
    fb_chunk = max(fb_chunk, min(8192, triton.next_power_of_2(math.ceil(max_keys / 32))))
    n_fb = max(1, math.ceil(max_keys / fb_chunk))
    if n_fb * topk <= 16384:
        merge_width = max(merge_width, triton.next_power_of_2(n_fb) * topk)
    if n_fb == 1:
        _pass1(a, t_count, fb_chunk, topk, 1, out_val, out_id, 2, flag=flag)
        return
    fv = torch.empty(t_count, n_fb, topk, dtype=torch.float32, device=out_val.device)
    fi = torch.empty(t_count, n_fb, topk, dtype=torch.int32, device=out_val.device)
    _pass1(a, t_count, fb_chunk, topk, n_fb, fv, fi, 2, flag=flag)
    _merges(fv, fi, n_fb, topk, topk, out_val, out_id, merge_width, 2, merge_warps, flag=flag)


@dataclass(frozen=True)
class SampleSettings:
    """Settings of the sampled-threshold mode (`sampled.py`), resolved for one call.

    Attributes:
        stride: S, one key in S is sampled (power of two).
        programs: G, sample programs per token (power of two).
        per_program: sample slots of one program (power of two); U = G * per_program.
        rank: R, the threshold is the R-th largest sampled logit (≈ R * S keys pass).
        cap: candidate slots per token (power of two >= topk).
        small: lists of at most this many candidates are searched in a block of this size.
    """

    stride: int
    programs: int
    per_program: int
    rank: int
    cap: int
    small: int


def _check_sample_args(
    topk: int,
    stride: int,
    programs: int | None,
    rank: int | None,
    cap: int | None,
    small: int | None,
) -> None:
    """Raise ValueError naming the first invalid sampled-mode argument (see sample_settings)."""
    named = (("sample", stride), ("sample_programs", programs), ("sample_cap", cap))
    for name, v in (*named, ("sample_small", small)):
        if v is not None and (v < 1 or v & (v - 1)):
            raise ValueError(f"{name}={v} must be a power of two")
    if cap is not None and cap < 2 * topk:
        raise ValueError(f"sample_cap={cap} must be >= 2 * topk = {2 * topk} (fallback scratch)")
    if small is not None and small < topk:
        raise ValueError(f"sample_small={small} must be >= topk={topk}")
    if rank is not None and rank < 1:
        raise ValueError(f"sample_rank={rank} must be >= 1")


FALLBACK_RATE = 5e-6
"""Largest expected share of tokens whose sampled threshold lets fewer than K keys through
(each is then redone serially, `sampled.py`): the rate of the first default, R = 16 at
K = 512, S = 128 (P(Gamma(16) < 4) = 4.9e-6)."""


def sample_rank(topk: int, stride: int) -> int:
    """Smallest rank R whose threshold lets fewer than `topk` keys pass at most FALLBACK_RATE.

    τ is the R-th largest of a 1/S sample, so about S * Gamma(R) keys lie at or above it
    (ranks of a random sample; `sampled.py`): too few pass with probability
    P(Gamma(R) < K / S) = P(Poisson(K / S) >= R). Values: K = 512, S = 128: 16 (4.9e-6);
    K = 1024, S = 128: 24 (3.7e-6; the former ceil(4K/S) = 32 passed a third more keys);
    K = 1024, S = 512: 12.

    Args:
        topk: K.
        stride: S, one key in S sampled.

    Returns:
        R >= 1.
    """
    x = topk / stride
    term = math.exp(-x)  # P(Poisson(x) = 0)
    below = term  # P(Poisson(x) < r) for r = 1
    r = 1
    while 1.0 - below > FALLBACK_RATE:
        term *= x / r
        below += term
        r += 1
    return r


def sample_settings(
    max_keys: int,
    topk: int,
    stride: int,
    programs: int | None = None,
    rank: int | None = None,
    cap: int | None = None,
    small: int | None = None,
) -> SampleSettings:
    """Defaults of the sampled-threshold mode for `max_keys` keys and top-`topk`.

    S is raised (doubled) until a token's sample holds at most 16,384 keys; G = programs of
    at most 128 samples; R = `sample_rank(topk, S)` (16 for K = 512 and 24 for K = 1024 at
    S = 128: ≈ R * S keys pass, ±1/sqrt(R)); cap = 16 * topk; small = 8 * topk.

    Raises:
        ValueError: stride, programs, cap or small not a power of two, cap below 2 * topk,
            small below topk, rank < 1.
    """
    _check_sample_args(topk, stride, programs, rank, cap, small)
    while math.ceil(max_keys / stride) > 16384:
        stride *= 2
    n_samp = max(1, math.ceil(max_keys / stride))
    g = programs or triton.next_power_of_2(math.ceil(n_samp / 128))
    cap = cap or 16 * topk
    return SampleSettings(
        stride=stride,
        programs=g,
        per_program=max(16, triton.next_power_of_2(math.ceil(n_samp / g))),
        rank=rank or sample_rank(topk, stride),
        cap=cap,
        small=min(cap, small or 8 * topk),
    )


def _sampled_topk(
    a: _Pass1,
    chunk: int,
    n_chunks: int,
    max_keys: int,
    topk: int,
    st: SampleSettings,
    out_val: torch.Tensor,
    out_id: torch.Tensor,
    merge_warps: int | None,
) -> torch.Tensor:
    """The sampled-threshold mode: sample, threshold, filtering pass 1, one selection launch.

    Returns:
        flag: [T] int32, 1 where the selection launch redid the token on its own (exact).
    """
    t_count = out_val.shape[0]
    dev = out_val.device
    u = st.programs * st.per_program
    samp = torch.empty(t_count, u if st.programs > 1 else 1, dtype=torch.int32, device=dev)
    thr = torch.empty(t_count, dtype=torch.int32, device=dev)
    count = torch.empty(t_count, 4, dtype=torch.int32, device=dev)
    _sample_kernel[(st.programs, t_count)](
        *a.key_args(NATIVE_FP8),
        samp,
        thr,
        count,
        **a.key_consts(),
        STRIDE=st.stride,
        G=st.programs,
        SPB=st.per_program,
        BLOCK=min(SAMPLE_BLOCK if a.pdl else a.block_k, st.per_program),
        NATIVE=NATIVE_FP8,
        RANK=st.rank,
        num_warps=4,
        num_stages=2 if a.pdl else 3,
        **_pdl_args(a.pdl),
    )
    if st.programs > 1:
        _threshold_kernel[(t_count,)](
            samp,
            thr,
            count,
            U=u,
            RANK=st.rank,
            num_warps=8 if u >= 4096 else 4,
            **_pdl_args(a.pdl),
        )
    cv = torch.empty(t_count, st.cap + topk, dtype=torch.float32, device=dev)
    ci = torch.empty(t_count, st.cap + topk, dtype=torch.int32, device=dev)
    _pass1(a, t_count, chunk, st.cap, n_chunks, cv, ci, 3, thr=thr, kth=count, eq_slots=topk)
    flag = torch.empty(t_count, dtype=torch.int32, device=dev)
    fb_chunk = choose_chunk(t_count, max_keys, topk, a.page_size)
    _filtered_select_kernel[(t_count,)](
        cv,
        ci,
        count,
        out_val,
        out_id,
        flag,
        *a.key_args(a.lean_fp8),
        **a.key_consts(),
        K=topk,
        CAP=st.cap,
        SMALL=st.small,
        FB_CHUNK=fb_chunk,
        BLOCK_K=min(a.block_k, fb_chunk),
        NATIVE=NATIVE_FP8,
        LEAN=int(a.lean),
        IDX32=a.idx32,
        # 8 warps up to an 8,192-slot block (V4-Pro B=1 L=1M on the H200: 31.2 µs against
        # 33.5 with 16; report 2026-11-29, fifth session).
        num_warps=merge_warps or (16 if st.small > 8192 else 8),
        **_pdl_args(a.pdl),
    )
    return flag


def index_topk_triton(  # noqa: PLR0911, PLR0912, PLR0915  (variant selection, documented above)
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
    num_stages: int = 5,
    select: int = 2,
    pass1_only: bool = False,
    out_indices: torch.Tensor | None = None,
    out_values: torch.Tensor | None = None,
    score_only: bool = False,
    threshold: bool = False,
    cand: int | None = None,
    merge_warps: int | None = None,
    tiered: bool = False,
    lean: int = 2,
    maxnreg: int | None = None,
    sample: int = 128,
    sample_programs: int | None = None,
    sample_rank: int | None = None,
    sample_cap: int | None = None,
    sample_small: int | None = None,
    pdl: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused indexer + top-k (API: `dsv4_kernels.indexer.index_topk`).

    `select=1` always runs with `lean=0`: with lean=2 it returned wrong, non-finite values on
    the H200 (Triton 3.6; `test_fused_topk_matches_torch_topk[64-4-1]`).

    Defaults (`lean=2`, `num_stages=5`, `select=2`, chunk 2048, no candidate truncation): the
    fastest configuration measured on the H200 whose work does not depend on where the top keys
    lie (2026-11-29, V4-Flash L=1M K=512: B=32 539 → 362 µs, B=1 75 → 45 µs under a CUDA graph;
    V4-Pro B=32 591 → 401 µs; kernels/benchmarks/reports/2026-11-29-h200.md).

    Sampled-threshold mode (`sample=S` > 0, the default S=128; `sampled.py`): a 1/S sample
    of each token's keys gives a threshold with ~4*topk keys at or above it; pass 1 appends
    those keys (no per-chunk search, no merges) and one launch selects the top-k. Exact for
    any input: a token whose list overflowed or got too few keys is redone inside the
    selection launch. `sample_programs`, `sample_rank`, `sample_cap`, `sample_small` override
    `sample_settings`; `chunk` None there means `choose_filter_chunk`. Used when the longest
    key list exceeds both chunk and topk and no cand/threshold/diagnostic is asked for.
    `pdl` (None: `pdl_supported`, i.e. on Hopper and later NVIDIA GPUs) launches this mode's
    kernels with programmatic dependent launch: each starts while the previous one finishes,
    and pass 1 streams and scores its keys while the sample and threshold launches still run
    (it waits for the threshold only before its appends; `sampled.py`). The other paths
    (`sample=0`, cand, diagnostics) ignore it.

    Tuning: `chunk` keys per pass-1 program (None: `choose_chunk`), `block_k` keys per
    iteration (any page size: each key finds its page), `num_warps`/`num_stages` of pass 1,
    `merge_group` candidate lists of topk per merge program (merge programs hold
    merge_group * topk candidates; `merge_warps` their warps, None: 16 from 8,192 candidates,
    else 8), `select` (0: 32-step binary search for the K-th key; 1: 4-pass radix select with
    histograms; 2: bisection with float-domain midpoints and early exit once exactly K keys
    lie above the probe, `_select_topk_fast`).

    Exact variants (same top-k values as the reference, ties aside):

    - `threshold=True` (implies select=2): a per-token lower bound of the K-th largest logit
      (int32 order key, `tl.atomic_max`) is raised by every pass-1/merge program after its
      search (the K-th of any subset is <= the K-th of all); a program with at most K keys at
      or above the bound skips its search and pads its list with (-inf, -1). One extra fill
      launch ([T] int32).
    - `cand=M` (a power of two < topk, implies select=2 in pass 1 and the merges): pass 1
      writes only each chunk's top-M (and the bound of what it dropped), so the merges read
      M/topk of the candidates (at L=1M, chunk 2048, M <= 64: one merge launch). The last
      merge verifies that no chunk dropped a key above the K-th value found; tokens where one
      did (top keys clustered in a few chunks, or fewer than topk keys in total while a
      chunk truncated) are redone by the full path, whose launches exit at once for the
      other tokens (one pass-1 and the merge launches, all nearly empty normally). `chunk`
      may then be as small as M.
    - `cand=M, tiered=True`: pass 1 writes full top-topk lists ordered in two tiers (top-M
      first; a second search per chunk) and the merge reads the first tier only, verified as
      above; flagged tokens are finished by merging the full lists (no rescoring: robust when
      real top keys cluster, e.g. in the most recent chunk). Combines with `threshold`.

    Pass-1 code generation (same result): `lean=1` transposes the query operand once, loads
    the keys without a mask (past the end: page 0, masked after the loop) through a float8
    pointer on the GPU, so the MMA reads both operands from shared memory (Triton 3.9, sm_90a:
    135 instead of 186 registers per thread, i.e. 3 instead of 2 CTAs per SM, and a second
    key buffer; num_stages=5 gives three buffers with two tiles in flight), and uses int32
    offsets when the key cache is under 2 GiB. `lean=2` also gathers the page ids as a
    [block_k, 1] column and keeps the chunk's logits as [block_k, tiles] columns, which removes
    two of the three layout conversions (shared-memory round trips) per tile (none left at
    block_k=64; num_stages=7 there keeps three 64-key tiles in flight). `maxnreg` caps pass-1
    registers per thread (128: four 4-warp CTAs per SM; no spills with lean at Triton 3.9).
    `lean=3` is lean=2 with the chunk's scale gather issued before the tile loop (its latency
    hidden behind the loop, at the cost of 16 more live registers).

    Diagnostics (the result is then NOT the top-k): `pass1_only` stops after pass 1;
    `score_only` also skips the selection: pass 1 only writes each chunk's largest logit,
    returned as values[t, c * topk] of a [T, n_chunks * topk] tensor (ids undefined).

    `out_indices` [T, K] int32 / `out_values` [T, K] float32 optionally receive the results.

    Returns:
        (indices [T, topk] int32, values [T, topk] float32), in no particular order.

    More than `MAX_TOKENS_PER_LAUNCH` query tokens (the grid's token axis is y, which CUDA
    caps at 65,535) run as consecutive calls over slices of the tokens.

    Raises:
        ValueError: topk, chunk or cand not a power of two, chunk below topk (below cand in
            the untiered cand mode; any power of two in the sampled mode), cand >= topk,
            threshold with untiered cand, or an input's shape or dtype
            (`reference.check_index_inputs`); a diagnostic (pass1_only,
            score_only) over more than MAX_TOKENS_PER_LAUNCH tokens; invalid sample_*
            arguments (`sample_settings`); pdl=True where `pdl_supported` is False.
    """
    params = dict(locals())
    check_index_inputs(q, weights, key_pages, block_table, positions, seq_ids, page_size, ratio)
    t_count, h, d = q.shape
    if topk & (topk - 1):
        raise ValueError(f"topk must be a power of two (512 Flash, 1024 Pro), got {topk}")
    if cand is not None and (cand < 1 or cand & (cand - 1) or cand >= topk):
        raise ValueError(f"cand={cand} must be a power of two below topk={topk}")
    if threshold and cand is not None and not tiered:
        raise ValueError("threshold=True needs full lists: with cand, also pass tiered=True")
    if threshold and q.is_cuda:
        raise ValueError(
            "threshold=True is disabled on GPUs: on the H200 with Triton 3.6 it failed the "
            "reference check at V4-Flash B=32 L=1M (rel 2.3e-3) and its atomic then faulted "
            "(kernels/benchmarks/reports/2026-11-29-h200.md); it runs under TRITON_INTERPRET only"
        )
    if sample:
        _check_sample_args(topk, sample, sample_programs, sample_rank, sample_cap, sample_small)
    if pdl and not pdl_supported(q.device):
        raise ValueError(
            f"pdl=True needs compiled kernels on an NVIDIA GPU of compute capability >= 9.0, "
            f"got device {q.device}{_capability(q.device)} (TRITON_INTERPRET={int(INTERPRET)})"
        )
    if select == 1:
        lean = 0  # radix select + lean=2 returned non-finite garbage on the H200 (Triton 3.6)
    if max_keys is None:  # once, so token slices agree on it
        max_keys = int(((positions.long() + 1) // ratio).max()) if t_count else 0
    if t_count > MAX_TOKENS_PER_LAUNCH:
        if pass1_only or score_only:
            raise ValueError(
                f"pass1_only/score_only are diagnostics for at most {MAX_TOKENS_PER_LAUNCH} "
                f"query tokens, got {t_count}"
            )
        oi = (
            out_indices
            if out_indices is not None
            else q.new_empty(t_count, topk, dtype=torch.int32)
        )
        ov = (
            out_values
            if out_values is not None
            else q.new_empty(t_count, topk, dtype=torch.float32)
        )
        for i in range(0, t_count, MAX_TOKENS_PER_LAUNCH):
            j = min(i + MAX_TOKENS_PER_LAUNCH, t_count)
            index_topk_triton(
                **{
                    **params,
                    "q": q[i:j],
                    "weights": weights[i:j],
                    "positions": positions[i:j],
                    "seq_ids": seq_ids[i:j],
                    "max_keys": max_keys,
                    "out_indices": oi[i:j],
                    "out_values": ov[i:j],
                }
            )
        return oi, ov
    dev = q.device
    a = _Pass1(
        qb=q.contiguous().view(torch.uint8),
        w=weights.float().contiguous(),
        pages=single_page_rows(key_pages),  # the float32 view needs a usable row stride
        bt=block_table.to(torch.int32).contiguous(),
        pos=positions.to(torch.int32).contiguous(),
        seq=seq_ids.to(torch.int32).contiguous(),
        h=h,
        d=d,
        page_size=page_size,
        ratio=ratio,
        block_k=block_k,
        num_warps=num_warps,
        num_stages=num_stages,
        lean=int(lean),
        maxnreg=maxnreg,
        pdl=pdl_supported(dev) if pdl is None else pdl,
    )
    full_chunk = choose_chunk(t_count, max_keys, topk, page_size) if chunk is None else chunk
    if full_chunk & (full_chunk - 1) or full_chunk < (cand or (1 if sample else topk)):
        raise ValueError(
            f"chunk={full_chunk} must be a power of two >= topk ({topk}; >= cand in cand mode)"
        )
    n_chunks = max(1, math.ceil(max_keys / full_chunk))
    # Truncated lists only pay off with several chunks; one chunk selects topk directly.
    m = cand if cand is not None and n_chunks > 1 else None
    # Sampled-threshold mode: only with several chunks and more keys than topk.
    sampled = bool(sample) and m is None and max_keys > max(full_chunk, topk)
    sampled = sampled and not (threshold or pass1_only or score_only)
    if sampled and chunk is None:
        sms = torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else 1
        full_chunk = choose_filter_chunk(t_count, max_keys, sms)
        n_chunks = max(1, math.ceil(max_keys / full_chunk))
    if (m is None or tiered) and full_chunk < topk and not sampled:
        full_chunk = topk
        n_chunks = max(1, math.ceil(max_keys / full_chunk))
    if threshold or m is not None:
        select = 2
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
    width = merge_group * topk
    if sampled:
        st = sample_settings(
            max_keys, topk, sample, sample_programs, sample_rank, sample_cap, sample_small
        )
        _sampled_topk(a, full_chunk, n_chunks, max_keys, topk, st, out_val, out_id, merge_warps)
        return out_id, out_val
    tier_m = m if m is not None and tiered else 0
    kin = topk if m is None or tiered else m
    direct = n_chunks == 1 and not score_only
    if direct:
        cv, ci = out_val, out_id
    else:
        cv = torch.empty(t_count, n_chunks, kin, dtype=torch.float32, device=dev)
        ci = torch.empty(t_count, n_chunks, kin, dtype=torch.int32, device=dev)
    thr = torch.full((t_count,), INT32_MIN, dtype=torch.int32, device=dev) if threshold else None
    kth = torch.empty(t_count, n_chunks, dtype=torch.int32, device=dev) if m is not None else None
    _pass1(
        a, t_count, full_chunk, kin, n_chunks, cv, ci, select, score_only, thr, kth, None, tier_m
    )
    if score_only:
        return ci.view(t_count, -1), cv.view(t_count, -1)
    if pass1_only or direct:
        return out_id, out_val
    if m is None:
        _merges(cv, ci, n_chunks, topk, topk, out_val, out_id, width, select, merge_warps, thr)
        return out_id, out_val
    flag = torch.empty(t_count, dtype=torch.int32, device=dev)
    # Tiered: the verifying merge finishes flagged tokens itself when both of its fallback
    # stages hold at most 8,192 candidates (more spill registers at Triton 3.9, sm_90a).
    fb_group = min(merge_group, max(1, 8192 // topk))
    fits = triton.next_power_of_2(math.ceil(n_chunks / fb_group)) * topk <= 8192
    fb_group = fb_group if tiered and fits and fb_group >= 2 else 0
    _merges(
        cv,
        ci,
        n_chunks,
        m,
        topk,
        out_val,
        out_id,
        width,
        select,
        merge_warps,
        thr,
        kth,
        flag,
        verify=True,
        stride=kin,
        fb_group=fb_group,
    )
    if fb_group:
        return out_id, out_val
    # Exact fallback for the tokens the last merge flagged (these launches exit at once for
    # the others): tiered, merge the full lists; else redo the token on the full path.
    if tiered:
        _merges(
            cv, ci, n_chunks, topk, topk, out_val, out_id, width, 2, merge_warps, thr, None, flag
        )
        return out_id, out_val
    _redo_flagged(a, full_chunk, max_keys, topk, out_val, out_id, flag, width, merge_warps)
    return out_id, out_val
