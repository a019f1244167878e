"""Lightning indexer + fused top-k vs logits + torch.topk."""

from typing import Any

import pytest
import torch
import triton
import triton.language as tl

from dsv4_kernels.impl import Impl
from dsv4_kernels.indexer import index_logits_reference, index_topk, index_topk_reference
from dsv4_kernels.indexer.selection import (
    _order_key,
    _select_topk,
    _select_topk_fast,
    _select_topk_radix,
)
from dsv4_kernels.indexer.triton_indexer import choose_chunk, index_topk_triton
from dsv4_kernels.testing import make_index_case, poisoned_like

# Logits, relative to the largest |logit|: under the interpreter the same fp8 products are
# summed in fp32 (1e-5); Hopper's fp8 tensor cores accumulate with fewer mantissa bits
# (DeepSeek-V3 report §3.3.2), measured 4e-4 on the H200, so 2e-3 there.
LOGIT_REL_CPU = 1e-5
LOGIT_REL_GPU = 2e-3


def check_topk(case: dict[str, Any], topk: int, idx: torch.Tensor, val: torch.Tensor) -> None:
    """Same selected values as torch.topk, every id distinct, valid, and scored as stated."""
    rel = LOGIT_REL_GPU if idx.is_cuda else LOGIT_REL_CPU
    logits = index_logits_reference(**case)
    _ref_idx, ref_val = index_topk_reference(**case, topk=topk)
    got = val.sort(dim=1, descending=True).values
    fin = torch.isfinite(ref_val)
    assert torch.equal(torch.isfinite(got), fin), "number of valid entries differs"
    assert torch.equal(idx >= 0, torch.isfinite(val))
    if not bool(fin.any()):  # no token has a complete entry: nothing more to compare
        assert bool((idx == -1).all())
        return
    scale = ref_val[fin].abs().max().clamp(min=1e-30)
    assert float((got[fin] - ref_val[fin]).abs().max() / scale) < rel
    for t in range(idx.shape[0]):
        ids = idx[t][idx[t] >= 0].long()
        assert torch.unique(ids).numel() == ids.numel()
        if ids.numel():
            s = logits[t, ids]
            assert float((s - val[t][idx[t] >= 0]).abs().max() / scale) < rel


@pytest.mark.parametrize(
    ("chunk", "group", "select", "sample"),
    [(64, 2, 0, 0), (128, 8, 0, 0), (64, 4, 1, 0), (64, 16, 2, 128), (64, 16, 2, 8)],
)
def test_fused_topk_matches_torch_topk(
    chunk: int, group: int, select: int, sample: int, device: torch.device
) -> None:
    # Entries per query: 0 (3 tokens), 20 (< top-k), 250, 1000 (16 chunks of 64 -> 3 merges
    # on the full path, sample=0; sample > 0: the sampled-threshold mode, the default).
    case = make_index_case([3, 81, 1001, 4000], 21, device, heads=64, page=16)
    topk = 32
    idx = poisoned_like(torch.empty(4, topk, dtype=torch.int32, device=device))
    val = poisoned_like(torch.empty(4, topk, dtype=torch.float32, device=device))
    index_topk_triton(
        **case,
        topk=topk,
        chunk=chunk,
        merge_group=group,
        select=select,
        sample=sample,
        out_indices=idx,
        out_values=val,
    )
    check_topk(case, topk, idx, val)
    assert int((idx[0] >= 0).sum()) == 0
    assert int((idx[1] >= 0).sum()) == 20


def test_prefill_queries_see_only_complete_entries(device: torch.device) -> None:
    case = make_index_case([259], 22, device, heads=64, page=16, queries_per_seq=4)
    idx, val = index_topk(**case, topk=64, impl="triton")
    check_topk(case, 64, idx, val)
    # positions 255..258: 64 entries exist for all (L // 4 = 64), none beyond.
    assert int(idx.max()) == 63


def test_choose_chunk_bounds() -> None:
    assert choose_chunk(1, 262144, 512, 64) == 2048
    assert choose_chunk(64, 262144, 1024, 64) == 2048
    assert choose_chunk(1, 100, 1024, 64) == 1024
    assert choose_chunk(1, 700, 64, 16) == 1024


def test_topk_must_be_power_of_two(device: torch.device) -> None:
    case = make_index_case([100], 23, device, heads=64, page=16)
    with pytest.raises(ValueError, match="power of two"):
        index_topk_triton(**case, topk=24)


@triton.jit
def _select_kernel(
    v_ptr, i_ptr, ov_ptr, oi_ptr, N: tl.constexpr, K: tl.constexpr, SEL: tl.constexpr
):
    vals = tl.load(v_ptr + tl.arange(0, N))
    ids = tl.load(i_ptr + tl.arange(0, N))
    if SEL == 0:
        _select_topk(vals, ids, K, ov_ptr, oi_ptr)
    else:
        _select_topk_radix(vals, ids, K, ov_ptr, oi_ptr)


@pytest.mark.parametrize("select", [0, 1])
def test_selection_with_ties_and_infinities(select: int, device: torch.device) -> None:
    gen = torch.Generator().manual_seed(24)
    n, k = 256, 32
    # Heavy ties (4 distinct values), -inf padding, negative values and -0.0.
    vals = torch.tensor([3.0, -0.0, -2.5, float("-inf")])[torch.randint(0, 4, (n,), generator=gen)]
    vals[:5] = 7.0
    ids = torch.randperm(n, generator=gen).to(torch.int32)
    ov = poisoned_like(torch.empty(k, device=device))
    oi = poisoned_like(torch.empty(k, dtype=torch.int32, device=device))
    _select_kernel[(1,)](vals.to(device), ids.to(device), ov, oi, N=n, K=k, SEL=select)
    ref = torch.topk(vals, k).values
    assert torch.equal(ov.cpu().sort(descending=True).values, ref)
    assert torch.equal(vals[torch.argsort(ids)][oi.cpu().long()], ov.cpu())
    assert torch.unique(oi).numel() == k


@triton.jit
def fast_select_kernel(v_ptr, i_ptr, ov_ptr, oi_ptr, lo_ptr, tau, N: tl.constexpr, K: tl.constexpr):
    """Harness: `_select_topk_fast` on one [N] list (test_indexer_variants)."""
    vals = tl.load(v_ptr + tl.arange(0, N))
    ids = tl.load(i_ptr + tl.arange(0, N))
    lo, n_ge = _select_topk_fast(vals, ids, K, ov_ptr, oi_ptr, tau)
    tl.store(lo_ptr, lo)
    tl.store(lo_ptr + 1, n_ge)


@triton.jit
def order_key_kernel(v_ptr, k_ptr, N: tl.constexpr):
    """Harness: `_order_key` of [N] floats."""
    tl.store(k_ptr + tl.arange(0, N), _order_key(tl.load(v_ptr + tl.arange(0, N))))


@pytest.mark.parametrize("impl", ["triton", "reference"])
@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("q", lambda c: {"q": c["q"].float().to(torch.bfloat16)}),
        ("weights", lambda c: {"weights": c["weights"][:, :2]}),
        ("positions", lambda c: {"positions": c["positions"].repeat(2)}),
        ("seq_ids", lambda c: {"seq_ids": c["seq_ids"][:0]}),
        ("key_pages", lambda c: {"key_pages": c["key_pages"][:, :-4]}),
        ("block_table", lambda c: {"block_table": c["block_table"][0]}),
    ],
)
def test_wrong_shapes_and_dtypes_raise_naming_the_argument(
    impl: Impl, field: str, change: Any, device: torch.device
) -> None:
    # Before: the kernel read a bf16 q's bytes as e4m3 codes and read past short weights /
    # positions, and both paths used key pages of the wrong width as if they were right.
    case = make_index_case([41], 40, device, heads=4, page=16)
    with pytest.raises(ValueError, match=field):
        index_topk(**{**case, **change(case)}, topk=16, impl=impl)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter's numpy
def test_reference_keeps_the_ids_of_overflowing_logits(device: torch.device) -> None:
    # A logit that overflows to +inf is still an entry: -1 (value -inf) only pads. The reference
    # marked every non-finite value -1, so a +inf logit came back as id -1 with value +inf.
    case = make_index_case([41], 41, device, heads=4, page=16)  # 10 entries
    case["weights"] = case["weights"].abs() + 0.1
    case["weights"][:, 0] = 3e38
    idx, val = index_topk_reference(**case, topk=16)
    assert bool((val[:, :10] == float("inf")).any())
    assert torch.equal(idx >= 0, val != float("-inf"))
    assert sorted(idx[0, :10].tolist()) == list(range(10))
    t_idx, t_val = index_topk(**case, topk=16, impl="triton")
    assert sorted(t_idx[0, :10].tolist()) == list(range(10))
    got = t_val.sort(dim=1, descending=True).values
    assert torch.equal(torch.isinf(got), torch.isinf(val))
    fin = torch.isfinite(val)
    rel = LOGIT_REL_GPU if t_val.is_cuda else LOGIT_REL_CPU
    assert torch.allclose(got[fin], val[fin], rtol=rel, atol=0.0)


@pytest.mark.parametrize("sample", [0, 4])
def test_band_wider_than_topk_holding_every_key(sample: int, device: torch.device) -> None:
    # 64 keys with the same bytes and scales 2**-8 * (1 + level * 2**-23), levels < 40: every
    # logit lies within the sampled mode's band (tau +- 64 float steps), more than K = 8 of
    # them, none above it. Only K band keys are stored, so "every key is in or above the
    # band" does not mean every key was stored: the kernel returned the first 8 keys appended
    # (levels 39, 27, 23, ..., 0) instead of flagging the token for the exact redo.
    page, n, k = 16, 64, 8
    case = make_index_case([4 * n], 60, device, heads=4, page=page)
    case["weights"] = case["weights"].abs() + 0.1
    kp = case["key_pages"].cpu().clone()
    bt = case["block_table"].cpu()
    lvl = torch.randint(0, 40, (n,), generator=torch.Generator().manual_seed(0))
    first = int(bt[0, 0])
    key0 = kp[first, :128].clone()
    for j in range(n):
        pg, r = int(bt[0, j // page]), j % page
        kp[pg, r * 128 : (r + 1) * 128] = key0
        sc = kp[pg, page * 128 :].view(torch.float32).clone()
        sc[r] = 2.0**-8 * (1 + float(lvl[j]) * 2.0**-23)
        kp[pg, page * 128 :] = sc.view(torch.uint8)
    case["key_pages"] = kp.to(device)
    extra: dict[str, Any] = {"chunk": 16, "sample_rank": 4} if sample else {}
    idx, _ = index_topk_triton(**case, topk=k, sample=sample, **extra)
    got = sorted(lvl[idx[0].cpu().long()].tolist(), reverse=True)
    assert got == sorted(lvl.tolist(), reverse=True)[:k]


@pytest.mark.parametrize("impl", ["triton", "reference"])
def test_padded_key_pages_are_read_in_place(impl: Impl, device: torch.device) -> None:
    """vLLM pads each 64-key block to a multiple of 576 B (8,640 B, facts §7.2): the pages are
    read through their row stride, the padding (NaN bytes here) is never read, and the result
    equals the packed cache's."""
    case = make_index_case([81, 1001], 23, device, heads=64, page=16)
    packed = case["key_pages"]
    pages, width = packed.shape  # 16 keys: 2,112 B
    storage = torch.full((pages, 2304), 0x7F, dtype=torch.uint8, device=device)  # 4 x 576
    storage[:, :width] = packed
    padded = storage[:, :width]
    assert padded.stride(0) == 2304
    ref_idx, ref_val = index_topk(**case, topk=32, impl=impl)
    idx, val = index_topk(**{**case, "key_pages": padded}, topk=32, impl=impl)
    assert torch.equal(idx, ref_idx)
    assert torch.equal(val, ref_val)
    whole = index_topk(**{**case, "key_pages": storage}, topk=32, impl=impl)  # wider rows too
    assert torch.equal(whole[0], ref_idx)
    odd = torch.zeros(pages, 2306, dtype=torch.uint8, device=device)[:, :width]
    with pytest.raises(ValueError, match="key_pages must have contiguous rows"):
        index_topk(**{**case, "key_pages": odd}, topk=32, impl=impl)
