"""Exact top-K selection inside one Triton program (device functions of the indexer).

Every function works on a [N] block held by one program: float32 logits are mapped to int32
order keys (`_order_key`), the K-th largest key is found by a search over counts, and a
prefix-sum compaction writes the selected (value, id) pairs to consecutive slots.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _order_key(vals):
    """float32 -> int32 whose signed order is the float order (an involution on the bits)."""
    u = vals.to(tl.int32, bitcast=True)
    return u ^ ((u >> 31) & 0x7FFFFFFF)


@triton.jit
def _key_to_f32(k):
    """Inverse of `_order_key` (int32 key -> float32)."""
    return (k ^ ((k >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)


@triton.jit
def _bisect(key, K: tl.constexpr, lo, hi):
    """Raise `lo` towards the K-th largest of `key` ([N] int32 order keys) by bisection.

    `lo` starts where count(key >= lo) >= K (else nothing is done); the search stops early
    once exactly K keys lie at or above it. Midpoints are taken in the float domain for the
    first 24 steps (values cluster, so the K-th / K+1-th gap is reached in ~12-16 steps
    instead of 32), then in the integer key domain (at most 56 steps in all).

    Returns:
        (lo, count(key >= lo)): either that count is <= K (then every key >= lo is in the top-K)
        or lo == the K-th largest key (ties at it).
    """
    cnt_lo = tl.sum((key >= lo).to(tl.int32), axis=0)
    step = cnt_lo * 0
    while (lo < hi) & (cnt_lo > K):
        lo64 = lo.to(tl.int64)
        int_mid = (lo64 + (hi.to(tl.int64) - lo64 + 1) // 2).to(tl.int32)
        flo = _key_to_f32(lo)
        fhi = _key_to_f32(hi)
        fkm = _order_key(flo * 0.5 + fhi * 0.5)
        finite = (flo > float("-inf")) & (fhi < float("inf"))
        use_f = (step < 24) & finite & (fkm > lo) & (fkm <= hi)
        mid = tl.where(use_f, fkm, int_mid)
        c = tl.sum((key >= mid).to(tl.int32), axis=0)
        ok = c >= K
        lo = tl.where(ok, mid, lo)
        cnt_lo = tl.where(ok, c, cnt_lo)
        hi = tl.where(ok, hi, mid - 1)
        step += 1
    return lo, cnt_lo


@triton.jit
def _take(key, lo, cnt_lo, K: tl.constexpr):
    """Mask of the keys > lo plus, in index order, as many keys == lo as fit in K.

    cnt_lo = count(key >= lo) (from `_bisect`): at most K (the usual early exit) means every
    key >= lo fits, and the tie-rank scan is skipped.
    """
    take = key >= lo
    if cnt_lo > K:
        gt = key > lo
        eq = key == lo
        n_gt = tl.sum(gt.to(tl.int32), axis=0)
        eq_rank = tl.cumsum(eq.to(tl.int32), axis=0) - 1
        take = gt | (eq & (eq_rank < K - n_gt))
    return take


@triton.jit
def _select_topk_fast(vals, ids, K: tl.constexpr, out_val_ptr, out_id_ptr, tau):
    """Exact top-K of `vals` ([N] float32, N >= K) with early exit and a lower bound `tau`.

    `_bisect` for the K-th largest order key. `tau` (int32 key; -2**31 = none) is a known lower
    bound of the value the caller needs (every value < tau can be dropped): when at most K keys
    are >= tau no search runs, those keys are written and the rest of the K slots padded with
    (-inf, -1).

    Returns:
        (lo, n_ge): lo (int32 key) bounds what was dropped (every dropped key is <= lo and
        every written finite key is >= lo); n_ge = number of keys >= lo (K after a search:
        then lo is a lower bound of the K-th largest and may be published as a threshold).
    """
    key = _order_key(vals)
    lo, cnt_lo = _bisect(key, K, tl.maximum(tl.min(key, axis=0), tau), tl.max(key, axis=0))
    take = _take(key, lo, cnt_lo, K)
    pos = tl.cumsum(take.to(tl.int32), axis=0) - 1
    tl.store(out_val_ptr + pos, vals, mask=take)
    tl.store(out_id_ptr + pos, ids, mask=take)
    n_take = tl.sum(take.to(tl.int32), axis=0)
    if n_take < K:  # only after a threshold skip: pad the list
        offs_k = tl.arange(0, K)
        pad = offs_k >= n_take
        tl.store(out_val_ptr + offs_k, tl.full((K,), float("-inf"), tl.float32), mask=pad)
        tl.store(out_id_ptr + offs_k, tl.full((K,), -1, tl.int32), mask=pad)
    return lo, cnt_lo


@triton.jit
def _select_tiered(vals, ids, K: tl.constexpr, M: tl.constexpr, out_val_ptr, out_id_ptr, tau):
    """As `_select_topk_fast`, but the written list is in two tiers.

    Slots [0, M) hold the top-M, [M, K) the rest of the top-K (each tier padded with
    (-inf, -1) where short).

    Returns:
        (lo_k, n_ge_k, lo_m): `_select_topk_fast`'s (lo, n_ge) of the K list, and lo_m >= every
        key left out of the first tier.
    """
    key = _order_key(vals)
    hi = tl.max(key, axis=0)
    lo_k, cnt_k = _bisect(key, K, tl.maximum(tl.min(key, axis=0), tau), hi)
    take_k = _take(key, lo_k, cnt_k, K)
    lo_m, cnt_m = _bisect(key, M, lo_k, hi)
    take_m = _take(key, lo_m, cnt_m, M) & take_k
    tier2 = take_k & (~take_m)
    pos = tl.where(
        take_m,
        tl.cumsum(take_m.to(tl.int32), axis=0) - 1,
        M + tl.cumsum(tier2.to(tl.int32), axis=0) - 1,
    )
    tl.store(out_val_ptr + pos, vals, mask=take_k)
    tl.store(out_id_ptr + pos, ids, mask=take_k)
    n1 = tl.sum(take_m.to(tl.int32), axis=0)
    n2 = tl.sum(tier2.to(tl.int32), axis=0)
    if (n1 < M) | (n2 < K - M):
        offs_k = tl.arange(0, K)
        pad = ((offs_k >= n1) & (offs_k < M)) | (offs_k >= M + n2)
        tl.store(out_val_ptr + offs_k, tl.full((K,), float("-inf"), tl.float32), mask=pad)
        tl.store(out_id_ptr + offs_k, tl.full((K,), -1, tl.int32), mask=pad)
    return lo_k, cnt_k, lo_m


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
