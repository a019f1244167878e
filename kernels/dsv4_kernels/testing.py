"""Test helpers: NaN-poisoned outputs, relative-error checks with stated tolerances."""

from __future__ import annotations

from typing import Any

import torch

from dsv4_kernels.kv_format import (
    ENTRY_BYTES,
    N_SCALES,
    NOPE_DIM,
    ROPE_DIM,
    ROPE_OFFSET,
    SCALE_OFFSET,
    paged_cache,
)

POISON_BYTE = 0xFF
"""Byte written into uint8 outputs before a kernel runs (0xFF is NaN in e4m3 and bf16 pairs)."""


def poisoned_like(t: torch.Tensor) -> torch.Tensor:
    """A tensor shaped like `t` filled with NaN (floats), 0xFF (uint8) or -7 (ints)."""
    out = torch.empty_like(t)
    if out.is_floating_point():
        out.fill_(float("nan"))
    elif out.dtype == torch.uint8:
        out.fill_(POISON_BYTE)
    else:
        out.fill_(-7)
    return out


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill `t` in place as `poisoned_like` does, and return it."""
    t.copy_(poisoned_like(t))
    return t


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖₂ / ‖ref‖₂ in float64 (inf if `out` has a NaN or inf)."""
    o = out.double()
    r = ref.double()
    if not bool(torch.isfinite(o).all()):
        return float("inf")
    denom = float(r.norm())
    return float((o - r).norm()) / max(denom, 1e-30)


def assert_close(out: torch.Tensor, ref: torch.Tensor, rel: float, what: str = "output") -> None:
    """Assert same shape, all finite, and ‖out − ref‖ / ‖ref‖ <= rel.

    Raises:
        AssertionError: naming `what`, the error and the tolerance.
    """
    if out.shape != ref.shape:
        raise AssertionError(f"{what}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    n_bad = int((~torch.isfinite(out.double())).sum())
    if n_bad:
        raise AssertionError(f"{what}: {n_bad} non-finite elements (unwritten or overflow)")
    err = rel_err(out, ref)
    if err > rel:
        raise AssertionError(f"{what}: relative error {err:.3e} > tolerance {rel:.1e}")


def random_fp8_bytes(
    shape: tuple[int, ...], gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Random float8 e4m3fn bytes (no NaN codes), magnitudes spread over the whole range.

    Args:
        shape: output shape.
        gen: generator on `device` (seeded by the caller).
        device: where the result goes.

    Returns:
        `shape`, uint8.
    """
    b = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8, device=device)
    nan = (b & 0x7F) == 0x7F
    return torch.where(nan, b - 1, b)


def random_kv_entries(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Random fp8_ds_mla entries, n of them, drawn on `device` with `gen` (a generator there).

    NoPE ~ N(0, 1) clipped at 4, scales 2**-6 or 2**-5, RoPE ~ N(0, 1).

    Returns:
        [n, 584], uint8; NoPE values ~ O(1), so attention scores are well spread.
    """
    out = torch.zeros(n, 584, dtype=torch.uint8, device=device)
    nope = torch.randn(n, NOPE_DIM, generator=gen, device=device).clamp(-4, 4)
    exp = torch.randint(-6, -4, (n, N_SCALES), generator=gen, device=device)
    scaled = nope * torch.pow(2.0, -exp.float()).repeat_interleave(64, dim=1)
    out[:, :NOPE_DIM] = scaled.to(torch.float8_e4m3fn).view(torch.uint8)
    rope = torch.randn(n, ROPE_DIM, generator=gen, device=device).to(torch.bfloat16)
    out[:, ROPE_OFFSET:SCALE_OFFSET] = rope.view(torch.uint8).reshape(n, 2 * ROPE_DIM)
    out[:, SCALE_OFFSET : SCALE_OFFSET + N_SCALES] = (exp + 127).to(torch.uint8)
    return out


def paged_with_poisoned_tail(entries: torch.Tensor, page: int) -> torch.Tensor:
    """`kv_format.paged_cache` of `entries`, each page's padding set to 0x7F (an e4m3 NaN).

    vLLM allocates the padding (bytes page * 584 and up) but never fills it: a kernel that
    reads it by a wrong offset produces NaN.

    Returns:
        [ceil(N / page), kv_format.page_bytes(page)], uint8.
    """
    cache = paged_cache(entries, page)
    cache[:, page * ENTRY_BYTES :] = 0x7F
    return cache


def paged_layout(
    n_per_seq: list[int], page: int, gen: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, int]:
    """A shuffled block table giving every sequence ceil(n / page) distinct pages.

    Returns:
        (block_table: [B, max_pages], int32; total pages).
    """
    pages = [max(1, -(-n // page)) for n in n_per_seq]
    total = sum(pages)
    perm = torch.randperm(total, generator=gen).to(torch.int32)
    bt = torch.zeros(len(pages), max(pages), dtype=torch.int32)
    at = 0
    for i, p in enumerate(pages):
        bt[i, :p] = perm[at : at + p]
        at += p
    return bt.to(device), total


def window_layout(
    lengths: list[int], window: int, page: int, gen: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, int]:
    """A block table for SWA caches that backs only the pages holding each window.

    Pages outside [L - window, L) point at page 0 (never read), so 1M-token contexts need
    only a few pages per sequence.

    Returns:
        (block_table: [B, ceil(max L / page)], int32; total backed pages).
    """
    width = max(1, -(-max(lengths) // page))
    needed = []
    for n in lengths:
        first = max(0, n - window) // page
        last = max(0, n - 1) // page
        needed.append(list(range(first, last + 1)))
    total = sum(len(x) for x in needed)
    perm = torch.randperm(total, generator=gen).to(torch.int32)
    bt = torch.zeros(len(lengths), width, dtype=torch.int32)
    at = 0
    for i, pg in enumerate(needed):
        for j in pg:
            bt[i, j] = perm[at]
            at += 1
    return bt.to(device), total


def make_attention_case(
    lengths: list[int],
    heads: int,
    ratio: int,
    topk: int | None,
    seed: int,
    device: torch.device,
    queries_per_seq: int = 1,
    window: int = 128,
    swa_page: int = 64,
    comp_page: int | None = None,
) -> dict[str, Any]:
    """Random inputs for `dsv4_kernels.sparse_mla.sparse_mla_attention` (keyword arguments).

    Sequence b has `lengths[b]` tokens; its `queries_per_seq` query tokens sit at the last
    positions (1 = decode; more = prefill / MTP). HCA when `topk` is None, else CSA with
    `topk` distinct random entry ids per query (padded with -1, plus a few -1 holes).

    Returns:
        dict with q, positions, seq_ids, swa_cache, swa_block_table, swa_page, comp_cache,
        comp_block_table, comp_page, ratio, comp_indices, sink, softmax_scale, window, and
        max_comp (HCA).
    """
    gen = torch.Generator().manual_seed(seed)
    dgen = torch.Generator(device=device).manual_seed(seed)
    if comp_page is None:
        comp_page = max(1, 256 // ratio)
    b = len(lengths)
    s = queries_per_seq
    positions = torch.tensor(
        [n - s + i for n in lengths for i in range(s)], dtype=torch.int32, device=device
    )
    seq_ids = torch.arange(b, dtype=torch.int32).repeat_interleave(s).to(device)
    t_count = b * s
    q = torch.randn(t_count, heads, 512, generator=dgen, device=device).to(torch.bfloat16)
    swa_bt, swa_pages = window_layout(lengths, window + s, swa_page, gen, device)
    swa_cache = paged_with_poisoned_tail(
        random_kv_entries(swa_pages * swa_page, dgen, device), swa_page
    )
    n_entries = [n // ratio for n in lengths]
    comp_bt, comp_pages = paged_layout(n_entries, comp_page, gen, device)
    comp_cache = paged_with_poisoned_tail(
        random_kv_entries(comp_pages * comp_page, dgen, device), comp_page
    )
    sink = torch.randn(heads, generator=dgen, device=device)
    idx = None
    if topk is not None:
        # topk distinct random complete entries per query (random scores, top-k of them),
        # -1 where a query has fewer entries, plus a few -1 holes.
        n_c = (positions.long() + 1) // ratio
        width = max(int(n_c.max()), topk)
        r = torch.rand(t_count, width, generator=dgen, device=device)
        r = r.masked_fill(torch.arange(width, device=device)[None, :] >= n_c[:, None], -1.0)
        val, ids = torch.topk(r, topk, dim=1)
        idx = torch.where(val >= 0, ids, -1).to(torch.int32)
        holes = torch.randint(0, topk, (t_count, max(1, topk // 64)), generator=dgen, device=device)
        idx.scatter_(1, holes, -1)
    return {
        "q": q,
        "positions": positions,
        "seq_ids": seq_ids,
        "swa_cache": swa_cache,
        "swa_block_table": swa_bt,
        "swa_page": swa_page,
        "comp_cache": comp_cache,
        "comp_block_table": comp_bt,
        "comp_page": comp_page,
        "ratio": ratio,
        "comp_indices": idx,
        "sink": sink,
        "softmax_scale": 512**-0.5,
        "window": window,
    }


def make_index_case(
    lengths: list[int],
    seed: int,
    device: torch.device,
    heads: int = 64,
    page: int = 64,
    ratio: int = 4,
    queries_per_seq: int = 1,
) -> dict[str, Any]:
    """Random inputs for `dsv4_kernels.indexer.index_topk` (keyword arguments except topk).

    Returns:
        dict with q ([T, heads, 128] float8_e4m3fn), weights, key_pages, block_table,
        positions, seq_ids, page_size, ratio.
    """
    gen = torch.Generator().manual_seed(seed)
    dgen = torch.Generator(device=device).manual_seed(seed)
    s = queries_per_seq
    positions = torch.tensor(
        [n - s + i for n in lengths for i in range(s)], dtype=torch.int32, device=device
    )
    seq_ids = torch.arange(len(lengths), dtype=torch.int32).repeat_interleave(s).to(device)
    t_count = len(lengths) * s
    q = (torch.randn(t_count, heads, 128, generator=dgen, device=device) * 4).to(
        torch.float8_e4m3fn
    )
    weights = torch.randn(t_count, heads, generator=dgen, device=device) * heads**-0.5
    bt, n_pages = paged_layout([n // ratio for n in lengths], page, gen, device)
    keys = random_fp8_bytes((n_pages, page * 128), dgen, device)
    scales = torch.rand(n_pages, page, generator=dgen, device=device) * 0.01 + 0.002
    key_pages = torch.cat([keys, scales.view(torch.uint8).reshape(n_pages, page * 4)], dim=1)
    return {
        "q": q,
        "weights": weights,
        "key_pages": key_pages.contiguous(),
        "block_table": bt,
        "positions": positions,
        "seq_ids": seq_ids,
        "page_size": page,
        "ratio": ratio,
    }
