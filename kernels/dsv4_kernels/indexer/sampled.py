"""Sampled-threshold mode of the fused indexer + top-k (`index_topk_triton(sample=S)`).

Instead of an exact top-K per pass-1 chunk followed by merges (the full path), four launches
(three when one sample program per token suffices), the same for every input:

1. `_sample_kernel` (grid (G, T)): program g of token t scores sample i = key b·S + h(b) of
   block b = i·G + g (h a fixed hash < S, so the positions behave like a random sample of one
   key in S) and stores the logits' order keys. With G = 1 it also does step 2 itself.
2. `_threshold_kernel` (grid (T,)): τ_t = the R-th largest of the token's U sampled logits
   (`_store_threshold`); zeroes the token's two list counters.
3. Pass 1 with `SELECT=3` (`scoring._score_select_body`): every chunk appends its keys above
   the band τ_t ± 64 order-key steps to the token's list (CAP slots) and its keys in the band
   to K more slots (a tied block needs at most K), one `atomic_add` per chunk and list (and an
   atomic min/max of the band's keys). No per-chunk search, no merge.
4. `_filtered_select_kernel` (grid (T,)): the exact top-K of the lists.

Exact whatever the data: every key at or above the band is a candidate. With K keys above
the band (at most CAP) their top-K is the token's; with fewer, the rest comes from the band,
exact when the band was stored whole (<= K keys) or all its keys are equal (ties). Otherwise
(or when fewer than min(K, n) keys reached the lists) the selection program redoes the token
alone, chunk after chunk (exact, slow).

How many keys pass: the R-th largest of a random 1/S sample has about R·S keys of the token
at or above it, whatever the logits' distribution (ranks of a random sample; the count is
≈ S·Gamma(R)). Defaults (`triton_indexer.sample_settings`): S = 128, R = the smallest rank
with P(Gamma(R) < K / S) <= 5e-6 (`triton_indexer.sample_rank`: 16 for K = 512, 24 for
K = 1024), CAP = 16·K: fewer than K keys pass with probability P(Gamma(16) < 4) ≈ 4.9e-6 per
token (K = 1024: P(Gamma(24) < 8) ≈ 3.7e-6), more than CAP ≈ 2e-13 (K = 1024: far less);
neither depends on where the top keys lie. (The hashed strata make the sample stratified
rather than purely random; these figures are estimates.) Keys whose logits equal, or lie
within 64 float steps of, τ_t go to their own K slots, so a block of tied logits at τ_t
(zeros, repeated keys) needs no fallback.

Programmatic dependent launch (PDL, `pdl=True`: the default on Hopper and later GPUs): every
launch of the mode is started with `launch_pdl`, so it becomes resident while the previous one
runs, and waits (`gdc_wait`: the previous grid complete, its writes visible) before it reads
what that one wrote. The order of `gdc_wait` and `gdc_launch_dependents` in each kernel is
what makes this safe:

- the sample kernel waits first, then lets the next launch start;
- the threshold kernel lets pass 1 start at once, then waits for the samples (with one
  sample program per token there is no threshold launch: pass 1 follows the sample kernel,
  which triggers only after its wait, so the argument below holds the same);
- pass 1 lets the selection launch start, streams and scores its chunk, and waits only then,
  before it reads τ_t or writes anything. Its early reads of the query, weights and keys are
  safe: pass 1 can start only once every threshold program has started, which happens only
  after every sample program has passed its own wait, i.e. after the kernels before this
  call completed;
- the selection kernel waits first.

Nothing is written before a kernel's wait, so no launch can overwrite what an earlier one
still reads. (The early reads rest on completion order in time: the kernels before the call
completed and flushed before pass 1 was launched. The PTX memory model states visibility only
for a grid that itself waited; a review helper judged this sound in practice, not formally
promised. The compiled PTX keeps every global store and atomic after `griddepcontrol.wait`.)
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from dsv4_kernels.indexer.scoring import _score_select_body, _token_query
from dsv4_kernels.indexer.selection import _bisect, _order_key, _select_topk_fast
from dsv4_kernels.triton_fp8 import e4m3_bits_to_f32


@triton.jit
def _sample_kernel(
    q_ptr,
    w_ptr,
    pages_key,
    pages_f32,
    bt_ptr,
    bt_stride,
    pos_ptr,
    seq_ptr,
    samp_ptr,
    thr_ptr,
    count_ptr,
    H: tl.constexpr,
    D: tl.constexpr,
    PAGE: tl.constexpr,
    KEY_STRIDE: tl.constexpr,
    RATIO: tl.constexpr,
    STRIDE: tl.constexpr,
    G: tl.constexpr,
    SPB: tl.constexpr,
    BLOCK: tl.constexpr,
    NATIVE: tl.constexpr,
    RANK: tl.constexpr,
    PDL: tl.constexpr,
):
    """samp[t, g·SPB + i] = order key of the logit of sample key i of program g of token t.

    Sample i of program g is key j = b·STRIDE + h(b) of block b = i·G + g; INT32_MIN where
    j >= the token's key count. SPB (a power of two, a multiple of BLOCK) slots per program.
    G == 1 (one program holds the token's whole sample): the program also does
    `_threshold_kernel`'s work (thr[t], count[t] = 0) and writes no samples.

    PDL (programmatic dependent launch): waits for the previous kernel before reading
    anything, then lets the next launch start (the chain that lets pass 1 read its inputs
    early rests on this order; `sampled` module docstring).
    """
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
    g = tl.program_id(0)
    t = tl.program_id(1).to(tl.int64)
    seq, n_valid, qraw, w = _token_query(t, q_ptr, w_ptr, pos_ptr, seq_ptr, H, D, RATIO)
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BLOCK)
    if NATIVE:
        qt = tl.trans(qraw.to(tl.float8e4nv, bitcast=True))
    else:
        qt = tl.trans(e4m3_bits_to_f32(qraw))
    TILES: tl.constexpr = SPB // BLOCK
    rows = tl.arange(0, TILES)
    buf = tl.full((TILES, BLOCK), -2147483648, tl.int32)
    for i in range(TILES):
        b = (i * BLOCK + offs_n) * G + g
        # Offset hash: 0x45D9F3B, a common 32-bit integer-hash multiplier.
        off = ((b.to(tl.int64) * 73244475) >> 13) & (STRIDE - 1)
        j = b.to(tl.int64) * STRIDE + off
        ok = j < n_valid
        pg = tl.load(bt_ptr + seq * bt_stride + j // PAGE, mask=ok, other=0).to(tl.int64)
        # Unmasked: a sample past the end reads page 0 (real memory), dropped below.
        kk = tl.load(pages_key + (pg * KEY_STRIDE + (j % PAGE) * D)[:, None] + offs_d[None, :])
        if NATIVE:  # noqa: SIM108  (triton.jit: constexpr branch)
            s = tl.dot(kk, qt)
        else:
            s = tl.dot(e4m3_bits_to_f32(kk), qt, input_precision="ieee")
        part = tl.sum(tl.maximum(s, 0.0) * w[None, :], axis=1)
        sc = tl.load(
            pages_f32 + pg * (KEY_STRIDE // 4) + PAGE * D // 4 + j % PAGE, mask=ok, other=0.0
        )
        key = tl.where(ok, _order_key(part * sc), -2147483648)
        if G == 1:
            buf = tl.where(rows[:, None] == i, key[None, :], buf)
        else:
            tl.store(samp_ptr + (t * G + g) * SPB + i * BLOCK + offs_n, key)
    if G == 1:
        _store_threshold(tl.reshape(buf, (SPB,)), thr_ptr, count_ptr, t, RANK)


@triton.jit
def _threshold_kernel(
    samp_ptr, thr_ptr, count_ptr, U: tl.constexpr, RANK: tl.constexpr, PDL: tl.constexpr
):
    """`_store_threshold` of token t's U sample keys (G > 1 sample programs wrote them).

    PDL: lets pass 1 launch at once (it streams its keys meanwhile), then waits for the
    sample kernel before reading its samples.
    """
    if PDL:
        gdc_launch_dependents()
        gdc_wait()
    t = tl.program_id(0).to(tl.int64)
    _store_threshold(tl.load(samp_ptr + t * U + tl.arange(0, U)), thr_ptr, count_ptr, t, RANK)


@triton.jit
def _store_threshold(key, thr_ptr, count_ptr, t, RANK: tl.constexpr):
    """thr[t] = a key with at least RANK of the sample keys `key` ([U] int32) at or above it.

    (`_bisect`: the RANK-th largest, or a lower key with exactly RANK above it.) INT32_MIN (no
    filtering) when the sample holds fewer than RANK keys. Also resets count[t] (two list
    counters 0, the band's min / max order key INT32_MAX / INT32_MIN).
    """
    valid = key > -2147483648
    n_ok = tl.sum(valid.to(tl.int32), axis=0)
    lo_start = tl.min(tl.where(valid, key, 2147483647), axis=0)
    thr = n_ok * 0 + -2147483648
    if n_ok >= RANK:
        thr, _cnt = _bisect(key, RANK, lo_start, tl.max(key, axis=0))
    tl.store(thr_ptr + t, thr)
    c = tl.arange(0, 4)
    init = tl.where(c == 2, 2147483647, tl.where(c == 3, -2147483648, 0))
    tl.store(count_ptr + 4 * t + c, init)


@triton.jit
def _select_list(val_ptr, id_ptr, n, BLOCK: tl.constexpr, K: tl.constexpr, out_val_ptr, out_id_ptr):
    """Exact top-K of the first n (<= BLOCK, >= K) entries of a list, read as one [BLOCK] block."""
    offs = tl.arange(0, BLOCK)
    m = offs < n
    vals = tl.load(val_ptr + offs, mask=m, other=float("-inf"))
    ids = tl.load(id_ptr + offs, mask=m, other=-1)
    _select_topk_fast(vals, ids, K, out_val_ptr, out_id_ptr, -2147483648)


@triton.jit
def _filtered_select_kernel(
    cand_val_ptr,
    cand_id_ptr,
    count_ptr,
    out_val_ptr,
    out_id_ptr,
    flag_ptr,
    q_ptr,
    w_ptr,
    pages_key,
    pages_f32,
    bt_ptr,
    bt_stride,
    pos_ptr,
    seq_ptr,
    H: tl.constexpr,
    D: tl.constexpr,
    PAGE: tl.constexpr,
    KEY_STRIDE: tl.constexpr,
    RATIO: tl.constexpr,
    K: tl.constexpr,
    CAP: tl.constexpr,
    SMALL: tl.constexpr,
    FB_CHUNK: tl.constexpr,
    BLOCK_K: tl.constexpr,
    NATIVE: tl.constexpr,
    LEAN: tl.constexpr,
    IDX32: tl.constexpr,
    PDL: tl.constexpr,
):
    """Top-K of token t's candidates into out[t].

    Row t of cand: CAP slots of keys above the band τ_t ± 64 order-key steps (count[t, 0]
    appended), then K slots of keys in the band (count[t, 1] appended, the first K kept;
    count[t, 2:4] their smallest / largest order key). With K keys above the band the top-K
    is among them (a list of at most SMALL, <= CAP and >= K, is searched in a [SMALL] block);
    otherwise it is those plus the best of the band, exact when the whole band was stored or
    all its keys are equal (then any of them are ties).

    Flagged (flag[t] = 1): more than CAP keys above the band (some were not stored); fewer
    than K keys in or above it while the token has more keys than that (τ_t was above its
    K-th logit); or fewer than K keys above the band and a band of more than K unequal keys
    (also when it holds all of the token's keys). This program then redoes the token
    exactly by itself: chunk after chunk of FB_CHUNK keys (pass 1's `_score_select_body`, then
    a top-K of the running list and the chunk's), with the token's candidate slots as scratch.
    Serial, so slow (2.8 ms for 262,144 keys on the H200, against 31 µs unflagged), but no
    launch is spent on it when nothing is flagged; with the default settings it is expected
    for ~5e-6 of tokens at K = 512 (module docstring).

    PDL: waits for pass 1 before reading anything (launched during pass 1's last wave).
    """
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
    t = tl.program_id(0).to(tl.int64)
    n_gt = tl.load(count_ptr + 4 * t)
    n_band = tl.load(count_ptr + 4 * t + 1)
    tied = tl.load(count_ptr + 4 * t + 2) == tl.load(count_ptr + 4 * t + 3)
    n_ge = n_gt + n_band
    n_valid = (tl.load(pos_ptr + t) + 1) // RATIO
    row = t * (CAP + K)
    # Enough: K keys above the band; or K above or in it, the band all stored or all equal
    # (any of its keys then completes the top-K); or every key of the token stored (in or
    # above the band, and the band within its K slots: with more, only the first K appended
    # were kept, and a band of unequal keys needs its best ones).
    whole = (n_band <= K) | tied
    enough = (n_gt >= K) | ((n_ge >= K) & whole) | ((n_ge >= n_valid) & whole)
    ok = (n_gt <= CAP) & enough
    tl.store(flag_ptr + t, (~ok).to(tl.int32))
    dst_v = out_val_ptr + t * K
    dst_i = out_id_ptr + t * K
    if ok:
        if n_gt >= K:  # the top-K lies above the band
            if n_gt <= SMALL:  # the usual case: a smaller block, cheaper reductions
                _select_list(cand_val_ptr + row, cand_id_ptr + row, n_gt, SMALL, K, dst_v, dst_i)
            else:
                _select_list(cand_val_ptr + row, cand_id_ptr + row, n_gt, CAP, K, dst_v, dst_i)
        else:  # every key above the band, completed from the band's stored keys (and padding)
            offs_2k = tl.arange(0, 2 * K)
            in_gt = offs_2k < n_gt
            in_band = (offs_2k >= K) & (offs_2k - K < tl.minimum(n_band, K))
            src = tl.where(offs_2k < K, offs_2k, CAP + offs_2k - K)
            v = tl.load(cand_val_ptr + row + src, mask=in_gt | in_band, other=float("-inf"))
            i = tl.load(cand_id_ptr + row + src, mask=in_gt | in_band, other=-1)
            _select_topk_fast(v, i, K, dst_v, dst_i, -2147483648)
    else:
        # Slots [0, K): the running top-K; [K, 2K): the current chunk's top-K.
        run_v = cand_val_ptr + row
        run_i = cand_id_ptr + row
        offs_k = tl.arange(0, K)
        offs_2k = tl.arange(0, 2 * K)
        tl.store(run_v + offs_k, tl.full((K,), float("-inf"), tl.float32))
        tl.store(run_i + offs_k, tl.full((K,), -1, tl.int32))
        for c in range(tl.cdiv(n_valid, FB_CHUNK)):
            # With n_chunks = 0 the body writes its K candidates at ptr + c*K: aim at [K, 2K).
            _score_select_body(
                c,
                t,
                q_ptr,
                w_ptr,
                pages_key,
                pages_f32,
                bt_ptr,
                bt_stride,
                pos_ptr,
                seq_ptr,
                run_v + K - c * K,
                run_i + K - c * K,
                pos_ptr,
                pos_ptr,
                0,
                H,
                D,
                PAGE,
                KEY_STRIDE,
                FB_CHUNK,
                BLOCK_K,
                K,
                RATIO,
                NATIVE,
                2,
                False,
                False,
                False,
                0,
                LEAN,
                IDX32,
                0,
                False,
            )
            tl.debug_barrier()  # the chunk's list is written before it is read
            v2 = tl.load(run_v + offs_2k)
            i2 = tl.load(run_i + offs_2k)
            tl.debug_barrier()  # and read before the running list is overwritten
            _select_topk_fast(v2, i2, K, run_v, run_i, -2147483648)
            tl.debug_barrier()
        tl.store(dst_v + offs_k, tl.load(run_v + offs_k))
        tl.store(dst_i + offs_k, tl.load(run_i + offs_k))
