"""Fused indexer + top-k: the exact speed variants and the score-only diagnostic.

Each variant of `index_topk_triton` (early-exit selection, per-token threshold, truncated
candidate lists with their verified fallback) must return the same top-k values as
`index_topk_reference` (ties aside); tiny shapes, run under TRITON_INTERPRET=1 on CPU.
"""

import math
from fractions import Fraction
from typing import Any

import pytest
import torch

from dsv4_kernels.indexer import index_logits_reference, triton_indexer
from dsv4_kernels.indexer.triton_indexer import index_topk_triton
from dsv4_kernels.testing import make_index_case, poisoned_like

from .test_indexer import check_topk, fast_select_kernel, order_key_kernel

INT32_MIN = -(2**31)

# Entries per query: 0 (3 tokens), 20 (< top-k), 250, 500 (with two query tokens per sequence
# at positions n - 2 and n - 1: the same counts).
LENGTHS = [3, 81, 1001, 2001]


def _run(case: dict[str, Any], topk: int, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    t = case["q"].shape[0]
    idx = poisoned_like(torch.empty(t, topk, dtype=torch.int32, device=case["q"].device))
    val = poisoned_like(torch.empty(t, topk, dtype=torch.float32, device=case["q"].device))
    index_topk_triton(**case, topk=topk, out_indices=idx, out_values=val, **kw)
    return idx, val


def _skip_threshold_on_gpu(kw: dict[str, Any], device: torch.device) -> None:
    if kw.get("threshold") and device.type == "cuda":
        pytest.skip("threshold=True is disabled on GPUs (see index_topk_triton); CPU CI runs it")


@pytest.mark.parametrize(
    "kw",
    [
        {"chunk": 64, "merge_group": 2, "select": 2, "sample": 0},
        {"chunk": 64, "merge_group": 4, "threshold": True},
        {"chunk": 128, "merge_group": 8, "threshold": True, "block_k": 64},
        {"chunk": 64, "merge_group": 2, "cand": 8},
        {"chunk": 16, "merge_group": 4, "cand": 4},
        {"chunk": 32, "merge_group": 16, "cand": 16, "merge_warps": 4},
        {"chunk": 64, "merge_group": 2, "cand": 8, "tiered": True},
        {"chunk": 32, "merge_group": 4, "cand": 4, "tiered": True, "threshold": True},
        {"chunk": 64, "merge_group": 4, "threshold": True, "lean": 2, "maxnreg": 128},
        {"chunk": 32, "cand": 8, "lean": 1, "block_k": 16, "num_stages": 5},
        {"chunk": 64, "cand": 8, "tiered": True, "lean": 2, "block_k": 32, "maxnreg": 128},
        {"chunk": 64, "cand": 8, "tiered": True, "threshold": True, "lean": 3},
        {"chunk": 64, "sample": 4},
        {"chunk": 32, "sample": 2, "sample_programs": 2, "block_k": 16},
        {"chunk": 16, "sample": 8, "lean": 0, "merge_warps": 4},
        {"chunk": 64, "sample": 4, "sample_programs": 1},
    ],
    ids=[
        "select2",
        "threshold",
        "threshold-c128",
        "cand8",
        "cand4-c16",
        "cand16-1merge",
        "tiered8",
        "tiered4-threshold",
        "lean-threshold",
        "lean-cand8-bk16",
        "lean2-tiered8",
        "lean3-tiered8-threshold",
        "sample4",
        "sample2-g2-bk16",
        "sample8-c16-lean0",
        "sample4-one-program",
    ],
)
def test_variant_matches_reference(kw: dict[str, Any], device: torch.device) -> None:
    _skip_threshold_on_gpu(kw, device)
    # Two query tokens per sequence where the kernel variant matters most (MTP-like).
    mtp = 2 if kw.get("tiered") or kw.get("threshold") or kw.get("sample") else 1
    case = make_index_case(LENGTHS, 41, device, heads=64, page=16, queries_per_seq=mtp)
    idx, val = _run(case, 32, **kw)
    check_topk(case, 32, idx, val)
    assert int((idx[0:mtp] >= 0).sum()) == 0  # no complete entry yet: all -1 / -inf
    assert int((idx[mtp : 2 * mtp] >= 0).sum()) == 20 * mtp  # positions 79, 80: 20 entries


@pytest.mark.parametrize(
    ("topk", "kw"),
    [
        (512, {"chunk": 256, "cand": 64, "merge_group": 2}),
        (512, {"chunk": 512, "threshold": True}),
        (1024, {"chunk": 256, "cand": 64}),
        (1024, {"chunk": 1024, "cand": 32, "tiered": True, "threshold": True, "lean": 2}),
    ],
    ids=["k512-cand64", "k512-threshold", "k1024-cand64-fallback", "k1024-lean-tiered32-fallback"],
)
def test_v4_topk_sizes_at_small_length(topk: int, kw: dict[str, Any], device: torch.device) -> None:
    _skip_threshold_on_gpu(kw, device)
    # 2,500 and 625 entries: K=512 keeps 1/5 of the long one; with K=1024 the 10 chunks x 64
    # candidates cannot hold the top-1024, so the last merge flags the token and the full path
    # redoes it.
    case = make_index_case([10000, 2500], 42, device, heads=64, page=64)
    idx, val = _run(case, topk, **kw)
    check_topk(case, topk, idx, val)
    assert int((idx[1] >= 0).sum()) == min(topk, 625)


def test_tiered_fallback_by_launches_when_many_groups(device: torch.device) -> None:
    # 32 chunks in groups of 1 (> 16 groups): flagged tokens are finished by the merge
    # launches over the full lists instead of inside the verifying merge.
    case = make_index_case(LENGTHS, 47, device, heads=64, page=16)
    idx, val = _run(case, 16, chunk=16, cand=4, tiered=True, merge_group=1)
    check_topk(case, 16, idx, val)
    assert int((idx[1] >= 0).sum()) == 16


def test_cand_fallback_when_top_keys_cluster(device: torch.device) -> None:
    # Scales x1000 on the entries of chunk 0 (the first 32) whose logit is positive: the top-K
    # (K = 16, or 8 when fewer than 16 of them are positive) all lie in chunk 0, which keeps
    # only its top-4, so only the verified fallback can return the right set.
    case = make_index_case([1001], 43, device, heads=64, page=16)
    pages = case["key_pages"]
    positive = index_logits_reference(**case)[0, :32] > 0
    k = 16 if int(positive.sum()) >= 16 else 8
    assert int(positive.sum()) >= k
    for i, pg in enumerate(case["block_table"][0, :2].tolist()):
        sc = pages[pg, 16 * 128 :].view(torch.float32)
        boost = torch.where(positive[16 * i : 16 * i + 16], 1000.0, 1.0)
        pages[pg, 16 * 128 :] = (sc * boost).view(torch.uint8)
    logits = index_logits_reference(**case)
    assert int(logits[0].topk(k).indices.max()) < 32  # the premise: top-K inside chunk 0
    idx, val = _run(case, k, chunk=32, cand=4, merge_group=8)
    check_topk(case, k, idx, val)
    if device.type == "cpu":  # threshold=True is disabled on GPUs
        idx, val = _run(case, k, chunk=32, cand=4, merge_group=2, tiered=True, threshold=True)
        check_topk(case, k, idx, val)
    idx, val = _run(case, k, chunk=32, cand=4, lean=2)
    check_topk(case, k, idx, val)
    idx, val = _run(case, k, chunk=32, sample=4)
    check_topk(case, k, idx, val)


@pytest.mark.parametrize(
    "kw",
    [
        {"chunk": 64, "threshold": True, "merge_group": 2},
        {"chunk": 64, "cand": 4},
        {"chunk": 64, "cand": 4, "tiered": True, "threshold": True},
        {"chunk": 64, "cand": 4, "tiered": True, "threshold": True, "merge_group": 1},
        {"chunk": 64, "sample": 4},
        {"chunk": 64, "sample": 4, "sample_cap": 128},
    ],
    ids=[
        "threshold",
        "cand4",
        "tiered4-threshold",
        "tiered4-threshold-launches",
        "sample4",
        "sample4-overflow",
    ],
)
def test_all_logits_equal(kw: dict[str, Any], device: torch.device) -> None:
    _skip_threshold_on_gpu(kw, device)
    # Zero head weights: every logit is 0.0 (ties everywhere). With tiers, four chunks x 4
    # first-tier entries hold fewer than K=64 keys at or above the threshold: the verifying
    # merge must flag the token and finish it from the full lists (64 real ids, not 16 and
    # padding).
    case = make_index_case([81, 1001], 48, device, heads=64, page=16)
    case["weights"] = torch.zeros_like(case["weights"])
    idx, val = _run(case, 64, **kw)
    check_topk(case, 64, idx, val)
    assert (idx >= 0).sum(dim=1).tolist() == [20, 64]


def test_score_only_writes_each_chunk_max(device: torch.device) -> None:
    case = make_index_case([1001, 500], 44, device, heads=64, page=16)
    _ids, vals = index_topk_triton(**case, topk=32, chunk=64, score_only=True)
    logits = index_logits_reference(**case)  # [2, 250]
    n_chunks = 4
    pad = torch.full((2, n_chunks * 64 - logits.shape[1]), float("-inf"), device=device)
    ref = torch.cat([logits, pad], dim=1).view(2, n_chunks, 64).amax(dim=2)
    got = vals.view(2, n_chunks, 32)[:, :, 0]
    fin = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(got), fin)
    rel = 1e-5 if device.type == "cpu" else 2e-3  # fp8 tensor-core accumulation on GPUs
    assert float((got[fin] - ref[fin]).abs().max() / ref[fin].abs().max()) < rel


def test_more_tokens_than_one_launch(monkeypatch: pytest.MonkeyPatch, device: torch.device) -> None:
    # CUDA caps the grid's token axis at 65,535: beyond it the wrapper calls itself per slice.
    # A limit of 3 makes 3 slices of the 8 query tokens (4 sequences x 2, MTP-like).
    case = make_index_case(LENGTHS, 49, device, heads=64, page=16, queries_per_seq=2)
    whole = _run(case, 32, chunk=64)
    monkeypatch.setattr(triton_indexer, "MAX_TOKENS_PER_LAUNCH", 3)
    idx, val = _run(case, 32, chunk=64)
    check_topk(case, 32, idx, val)
    assert torch.equal(val.sort(dim=1).values, whole[1].sort(dim=1).values)
    i2, v2 = index_topk_triton(**case, topk=32, chunk=64)  # allocated by the wrapper
    assert torch.equal(v2.sort(dim=1).values, whole[1].sort(dim=1).values)
    with pytest.raises(ValueError, match="diagnostics"):
        index_topk_triton(**case, topk=32, chunk=64, score_only=True)
    assert i2.shape == (8, 32)


class _Flags:
    """Records the flags (tokens redone by the selection launch) of every sampled-mode call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.flags: list[list[int]] = []
        orig = triton_indexer._sampled_topk

        def spy(*args: Any) -> torch.Tensor:
            flag = orig(*args)
            self.flags.append(flag.tolist())
            return flag

        monkeypatch.setattr(triton_indexer, "_sampled_topk", spy)


@pytest.mark.parametrize(
    ("kw", "flagged"),
    [
        ({}, [0, 0, 0, 0, 0]),
        # 64 slots, rank 32 (S = 4): the 250, 500 and 2,000-key tokens pass ~128 keys, more
        # than fit.
        ({"sample_cap": 64, "sample_rank": 32}, [0, 0, 1, 1, 1]),
        # rank 1 (the sample's maximum): fewer than K=32 keys pass where there are more.
        ({"sample_rank": 1}, [0, 1, 1, 1, 1]),
    ],
    ids=["none", "overflow", "too-few"],
)
def test_sampled_fallback(
    kw: dict[str, Any], flagged: list[int], monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    # Keys per token: 0, 20, 250, 500, 2,000 (K = 32, one key in 4 sampled). A token whose list
    # overflowed or got fewer than min(K, n) keys is flagged and redone, chunk after chunk, by
    # its selection program.
    spy = _Flags(monkeypatch)
    case = make_index_case([*LENGTHS, 8001], 50, device, heads=64, page=16)
    idx, val = _run(case, 32, chunk=64, sample=4, **kw)
    check_topk(case, 32, idx, val)
    assert spy.flags == [flagged]


def test_sampled_ties_at_the_threshold_need_no_fallback(
    monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    # Zero head weights: every logit is 0.0, so the threshold is 0.0 and every key ties at it
    # (2,000 keys against 64 slots). Keys == the threshold go to their own K slots: the top-K
    # (any K of the tied keys) comes out without the serial fallback.
    spy = _Flags(monkeypatch)
    case = make_index_case([8001, 81], 52, device, heads=64, page=16)
    case["weights"] = torch.zeros_like(case["weights"])
    idx, val = _run(case, 32, chunk=64, sample=4, sample_cap=64)
    check_topk(case, 32, idx, val)
    assert spy.flags == [[0, 0]]
    assert (idx >= 0).sum(dim=1).tolist() == [32, 20]


def test_sampled_few_keys_above_tied_threshold(
    monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    # Keys zeroed except the first 12 of the 2,000: logits are 0.0 for all but those (some
    # positive, some negative). The threshold is 0.0: fewer than K keys lie above it, so the
    # result is every key above it plus zero-logit keys (ties), no fallback.
    spy = _Flags(monkeypatch)
    case = make_index_case([8001], 53, device, heads=64, page=16)
    pages = case["key_pages"]
    bt = case["block_table"][0].long()
    pages[bt, : 16 * 128] = 0
    first = int(bt[0])
    keys = make_index_case([8001], 54, device, heads=64, page=16)["key_pages"][0, : 12 * 128]
    pages[first, : 12 * 128] = keys
    logits = index_logits_reference(**case)[0]
    n_pos = int((logits > 0).sum())
    assert 0 < n_pos < 32  # the premise
    assert int((logits == 0).sum()) > 1900
    idx, val = _run(case, 32, chunk=64, sample=4)
    check_topk(case, 32, idx, val)
    assert spy.flags == [[0]]
    assert int((val > 0).sum()) == n_pos


@pytest.mark.parametrize("chunk", [128, 64])
def test_sampled_identical_keys_need_no_fallback(
    chunk: int, monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    # Every key equal (same bytes, same scale): all logits of a token tie at a nonzero value.
    # The sample kernel (128-key tiles) and pass 1 (min(128, chunk)-key tiles) may round that
    # logit differently in the last bits (6 float steps under the interpreter at chunk 64);
    # the +-64-step band around the threshold still catches every tied key.
    spy = _Flags(monkeypatch)
    case = make_index_case([8000, 1200], 2, device, heads=16, page=16)
    pages = case["key_pages"]
    pages[:, : 16 * 128] = pages[0, :128].repeat(16)
    pages[:, 16 * 128 :] = pages[0, 16 * 128 : 16 * 128 + 4].repeat(16)
    idx, val = _run(case, 32, chunk=chunk, sample=4, sample_cap=64)
    check_topk(case, 32, idx, val)
    assert spy.flags == [[0, 0]]


@pytest.mark.parametrize(("topk", "flagged"), [(16, 1), (32, 0)])
def test_sampled_band_of_unequal_keys(
    topk: int, flagged: int, monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    # Equal key bytes, scales one float step apart: ~1 key per step around the threshold, so
    # its +-64-step band holds ~128 unequal keys. K=16: fewer than K keys lie above the band
    # and the band cannot be cut exactly from K stored keys, so the token is redone alone;
    # K=32: enough keys above the band. Both exact.
    spy = _Flags(monkeypatch)
    case = make_index_case([8001], 55, device, heads=64, page=16)
    pages = case["key_pages"]
    bt = case["block_table"][0].long()
    pages[:, : 16 * 128] = pages[int(bt[0]), :128].repeat(16)
    sc = [torch.tensor(0.004)]
    for _ in range(1999):
        sc.append(torch.nextafter(sc[-1], torch.tensor(1.0)))
    scales = torch.stack(sc).to(device)
    for j0 in range(0, 2000, 16):
        pages[int(bt[j0 // 16]), 16 * 128 :] = scales[j0 : j0 + 16].view(torch.uint8)
    idx, val = _run(case, topk, chunk=64, sample=4)
    check_topk(case, topk, idx, val)
    assert spy.flags == [[flagged]]


def test_sample_settings() -> None:
    # V4-Flash at L = 1M: 262,144 keys, one in 128 sampled by 16 programs of 128; the 16th
    # largest of the 2,048 sampled logits lets ~2,048 keys through.
    st = triton_indexer.sample_settings(2**18, 512, 128)
    assert (st.stride, st.programs, st.per_program, st.rank, st.cap, st.small) == (
        128,
        16,
        128,
        16,
        8192,
        4096,
    )
    # V4-Pro (K = 1024): R = 24, the smallest rank with P(Poisson(8) >= R) <= 5e-6.
    assert triton_indexer.sample_settings(2**18, 1024, 128).rank == 24
    # A token's sample is kept to 16,384 keys: the stride doubles (and R follows it).
    st = triton_indexer.sample_settings(2**23, 1024, 128)
    assert (st.stride, st.programs, st.rank) == (512, 128, 12)


@pytest.mark.parametrize(
    ("topk", "stride"), [(512, 128), (1024, 128), (1024, 512), (32, 4), (1, 128)]
)
def test_sample_rank_is_the_smallest_within_the_fallback_rate(topk: int, stride: int) -> None:
    # P(fewer than K keys pass) = P(Gamma(R) < K/S) = P(Poisson(K/S) >= R), summed here
    # independently of the implementation (exact rational terms, then one float division).
    x = Fraction(topk, stride)

    def tail(r: int) -> float:  # P(Poisson(x) >= r)
        below = sum(x**i / math.factorial(i) for i in range(r))
        return 1.0 - math.exp(-float(x)) * float(below)

    r = triton_indexer.sample_rank(topk, stride)
    assert tail(r) <= triton_indexer.FALLBACK_RATE
    assert r == 1 or tail(r - 1) > triton_indexer.FALLBACK_RATE
    assert triton_indexer.sample_settings(100, 32, 4, small=8192).small == 512  # <= cap
    assert triton_indexer.choose_filter_chunk(1, 2**18, 132) == 1024
    assert triton_indexer.choose_filter_chunk(32, 2**18, 132) == 2048


def test_cand_and_chunk_validation(device: torch.device) -> None:
    case = make_index_case([1001], 45, device, heads=64, page=16)
    with pytest.raises(ValueError, match="cand=48"):
        index_topk_triton(**case, topk=64, cand=48)
    with pytest.raises(ValueError, match="cand=64"):
        index_topk_triton(**case, topk=64, cand=64)
    with pytest.raises(ValueError, match="tiered=True"):
        index_topk_triton(**case, topk=64, cand=8, threshold=True)
    with pytest.raises(ValueError, match="chunk=32"):
        index_topk_triton(**case, topk=64, chunk=32, sample=0)
    with pytest.raises(ValueError, match="chunk=48"):
        index_topk_triton(**case, topk=64, chunk=48)
    with pytest.raises(ValueError, match="sample=12 must be a power of two"):
        index_topk_triton(**case, topk=64, sample=12)
    with pytest.raises(ValueError, match="sample_cap=64 must be >= 2 \\* topk = 128"):
        index_topk_triton(**case, topk=64, sample=4, sample_cap=64)
    with pytest.raises(ValueError, match="sample_rank=0"):
        index_topk_triton(**case, topk=64, sample=4, sample_rank=0)


def test_pdl_option(device: torch.device, monkeypatch: pytest.MonkeyPatch) -> None:
    # Programmatic dependent launch: the default where the GPU has it (Hopper and later), a
    # clear error where it is asked for without it (the CPU interpreter has no gdc_wait). Both
    # launch modes give the exact top-k, and the launches really get (or do not get) the flag.
    case = make_index_case([8001, 2001, 81], 55, device, heads=64, page=16)
    if not triton_indexer.pdl_supported(device):
        with pytest.raises(ValueError, match="pdl=True needs compiled kernels on an NVIDIA GPU"):
            index_topk_triton(**case, topk=32, pdl=True)
        return
    seen: list[bool] = []
    orig = triton_indexer._pdl_args

    def spy(pdl: bool) -> dict[str, Any]:
        seen.append(pdl)
        return orig(pdl)

    monkeypatch.setattr(triton_indexer, "_pdl_args", spy)
    for pdl in (None, True, False):
        seen.clear()
        idx, val = _run(case, 32, chunk=64, sample=4, pdl=pdl)
        check_topk(case, 32, idx, val)
        assert len(seen) >= 3  # sample, pass 1, selection (and threshold)
        assert set(seen) == {pdl is not False}


def test_pdl_is_off_on_rocm(monkeypatch: pytest.MonkeyPatch) -> None:
    # ROCm builds of PyTorch call AMD GPUs "cuda" and report capability 9.x (MI300X: 9.4);
    # Triton's AMD backend has no launch_pdl, so PDL must stay off there.
    monkeypatch.setattr(triton_indexer, "INTERPRET", False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d=None: (9, 4))
    monkeypatch.setattr(torch.version, "hip", None)
    assert triton_indexer.pdl_supported(torch.device("cuda", 0))  # as a CUDA 9.x GPU
    monkeypatch.setattr(torch.version, "hip", "6.2.0")
    assert not triton_indexer.pdl_supported(torch.device("cuda", 0))


def _keys(vals: torch.Tensor) -> torch.Tensor:
    out = torch.empty(vals.numel(), dtype=torch.int32, device=vals.device)
    order_key_kernel[(1,)](vals, out, N=vals.numel())
    return out


@pytest.mark.parametrize("case", ["ties", "normal", "tau-skip", "tau-above-all"])
def test_fast_selection(case: str, device: torch.device) -> None:
    gen = torch.Generator().manual_seed(46)
    n, k = 256, 32
    if case == "ties":  # 4 distinct values, -inf padding, negative values and -0.0
        vals = torch.tensor([3.0, -0.0, -2.5, float("-inf")])[
            torch.randint(0, 4, (n,), generator=gen)
        ]
        vals[:5] = 7.0
    else:
        vals = torch.randn(n, generator=gen)
        vals[200:] = float("-inf")
    ids = torch.randperm(n, generator=gen).to(torch.int32)
    ref = torch.topk(vals, k).values
    vals_d, ids_d = vals.to(device), ids.to(device)
    tau = INT32_MIN
    if case == "tau-skip":  # a bound between the 20th and 21st largest: 20 kept, 12 padded
        tau = int(_keys(vals_d)[int(torch.argsort(vals, descending=True)[20])]) + 1
    if case == "tau-above-all":
        tau = 2**31 - 1
    ov = poisoned_like(torch.empty(k, device=device))
    oi = poisoned_like(torch.empty(k, dtype=torch.int32, device=device))
    lo = torch.empty(2, dtype=torch.int32, device=device)
    fast_select_kernel[(1,)](vals_d, ids_d, ov, oi, lo, tau, N=n, K=k)
    got = ov.cpu().sort(descending=True).values
    kept = {"tau-skip": 20, "tau-above-all": 0}.get(case, k)
    assert torch.equal(got[:kept], ref[:kept])
    assert bool((got[kept:] == float("-inf")).all())
    assert bool((oi.cpu()[ov.cpu() == float("-inf")] < 0).all() or case == "ties")
    real = oi.cpu() >= 0
    assert torch.equal(vals[torch.argsort(ids)][oi.cpu()[real].long()], ov.cpu()[real])
    assert torch.unique(oi.cpu()[real]).numel() == int(real.sum())
    if case == "normal":  # a search ran: K keys >= lo, and lo <= the K-th value
        assert int(lo[1]) == k
        assert int(lo[0]) <= int(_keys(ref.to(device))[k - 1])


GPU_VARIANTS = [
    {"pdl": False},
    {"sample": 0},
    {"cand": 32, "lean": 2, "num_stages": 5},
    {"chunk": 1024, "cand": 16, "tiered": True, "lean": 2, "num_stages": 5},
    {"chunk": 512, "cand": 16, "lean": 2, "block_k": 64, "num_stages": 7, "maxnreg": 128},
]


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs CUDA: run `pytest -m gpu tests/kernels` on the H200",
)
@pytest.mark.parametrize(
    ("topk", "lengths", "mtp"),
    [(512, [2**20, 4000, 777], 1), (1024, [2**17, 300000], 2)],
    ids=["flash-1m", "pro-mtp2"],
)
@pytest.mark.parametrize(
    "kw",
    GPU_VARIANTS,
    ids=["sampled-no-pdl", "full-path", "cand32", "tiered16-c1024", "cand16-c512"],
)
def test_variants_at_v4_shapes(
    kw: dict[str, Any], topk: int, lengths: list[int], mtp: int, device: torch.device
) -> None:
    # Short sequences (777, 4000 tokens) next to long ones: truncated lists flag them and the
    # fallback runs on the GPU too.
    case = make_index_case(lengths, 34, device, queries_per_seq=mtp)
    idx, val = _run(case, topk, **kw)
    check_topk(case, topk, idx, val)
