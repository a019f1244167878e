"""HCA / CSA attention (the shared sparse MLA kernel) vs the PyTorch reference."""

import os
import subprocess
import sys
from typing import Any

import pytest
import torch

from dsv4_kernels.csa import csa_attention, csa_attention_reference
from dsv4_kernels.hca import hca_attention, hca_attention_reference
from dsv4_kernels.sparse_mla import sparse_mla_reference, triton_attention
from dsv4_kernels.sparse_mla.triton_attention import choose_splits, sparse_mla_triton
from dsv4_kernels.testing import assert_close, make_attention_case, poisoned_like

# bf16 q and P operands, exact fp8 dequantisation, fp32 accumulation: ‖Δ‖/‖ref‖ ~ 2e-3.
OUT_REL = 1e-2
LSE_ABS = 1e-2


def _run(case: dict[str, Any], **tune: Any) -> tuple[torch.Tensor, torch.Tensor]:
    q = case["q"]
    out = poisoned_like(torch.empty(q.shape, dtype=torch.bfloat16, device=q.device))
    lse = poisoned_like(torch.empty(q.shape[:2], dtype=torch.float32, device=q.device))
    sparse_mla_triton(**case, out=out, lse_out=lse, **tune)
    return out, lse


def _check(case: dict[str, Any], out: torch.Tensor, lse: torch.Tensor) -> None:
    ref_out, ref_lse = sparse_mla_reference(**case)
    assert_close(out.float(), ref_out.float(), OUT_REL, "attention output")
    fin = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), fin)
    assert float((lse[fin] - ref_lse[fin]).abs().max()) < LSE_ABS


@pytest.mark.parametrize("n_split", [1, 3])
@pytest.mark.parametrize("with_sink", [True, False])
def test_hca_decode_odd_lengths(n_split: int, with_sink: bool, device: torch.device) -> None:
    # 1 token (window only), 127/128/129 around the first compression boundary, 385 = 3 entries.
    case = make_attention_case([1, 127, 128, 129, 385], 5, 128, None, 11, device, swa_page=16)
    if not with_sink:
        case["sink"] = None
    out, lse = _run(case, n_split=n_split, block_h=16, block_n=32, num_warps=4)
    _check(case, out, lse)


@pytest.mark.parametrize(
    ("dv_split", "deq", "block_h"), [(2, 1, 16), (1, 0, 16), (2, 0, 8), (0, 1, 16), (0, 0, 8)]
)
def test_kernel_variants(dv_split: int, deq: int, block_h: int, device: torch.device) -> None:
    case = make_attention_case([300, 129], 9, 128, None, 16, device, swa_page=64)
    out, lse = _run(case, n_split=2, block_h=block_h, block_n=32, dv_split=dv_split, deq=deq)
    _check(case, out, lse)


@pytest.mark.parametrize("topk", [None, 16])
def test_more_tokens_than_one_launch(
    topk: int | None, monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    # CUDA caps the grid's token axis at 65,535: beyond it the wrapper launches per slice.
    # A limit of 2 makes 3 slices of 5 query tokens (prefill of 3 + decode of 2 sequences).
    ratio = 128 if topk is None else 4
    case = make_attention_case([300, 129], 9, ratio, topk, 17, device, queries_per_seq=3)
    case["q"] = case["q"][:5]
    case["positions"] = case["positions"][:5]
    case["seq_ids"] = case["seq_ids"][:5]
    if topk is not None:
        case["comp_indices"] = case["comp_indices"][:5]
    whole = _run(case, block_h=16, block_n=32)
    monkeypatch.setattr(triton_attention, "MAX_TOKENS_PER_LAUNCH", 2)
    sliced = _run(case, block_h=16, block_n=32)
    _check(case, *sliced)
    assert torch.equal(sliced[0], whole[0])
    assert torch.equal(sliced[1], whole[1])
    out, lse = sparse_mla_triton(**case, block_h=16, block_n=32)  # allocated by the wrapper
    assert torch.equal(out, whole[0])
    assert torch.equal(lse, whole[1])


def test_dv_split_validation(device: torch.device) -> None:
    case = make_attention_case([129], 9, 128, None, 18, device)
    with pytest.raises(ValueError, match="dv_split=3"):
        sparse_mla_triton(**case, dv_split=3)


def test_hca_prefill_crosses_boundaries(device: torch.device) -> None:
    # 6 queries at positions 250..255 of one sequence: entry 1 (tokens 128..255) becomes
    # visible only to the last query (L = 256).
    case = make_attention_case([256], 3, 128, None, 12, device, queries_per_seq=6, swa_page=32)
    out, lse = _run(case, n_split=2, block_h=16, block_n=32, num_warps=4)
    _check(case, out, lse)
    # The causal limit matters: hiding entry 1 changes only the last query.
    ref_out, _ = sparse_mla_reference(**case)
    case2 = dict(case)
    case2["positions"] = case["positions"].clone()
    case2["positions"][-1] -= 0  # same positions; now make entry 1 garbage and compare
    cc = case["comp_cache"].clone()
    bt = case["comp_block_table"]
    cc[int(bt[0, 0]), 576 : 576 + 448] = 0x38  # entry 1 of the page := 1.0 * scale everywhere
    case2["comp_cache"] = cc
    ref2, _ = sparse_mla_reference(**case2)
    assert torch.equal(ref2[:-1], ref_out[:-1])
    assert not torch.equal(ref2[-1], ref_out[-1])


def test_csa_topk_with_holes_and_short_rows(device: torch.device) -> None:
    # Sequence 0 has fewer entries (25) than top-k (32): -1 padding; holes in every row.
    case = make_attention_case([101, 333, 1030], 7, 4, 32, 13, device, swa_page=64)
    out, lse = _run(case, n_split=2, block_h=8, block_n=16, num_warps=4)
    _check(case, out, lse)


def test_public_api_paths_agree(device: torch.device) -> None:
    case = make_attention_case([200, 77], 4, 128, None, 14, device, swa_page=64)
    args = {k: v for k, v in case.items() if k not in ("ratio", "comp_indices")}
    out, _ = hca_attention(**args)
    ref, _ = hca_attention_reference(**args)
    assert_close(out.float(), ref.float(), OUT_REL, "hca output")
    case = make_attention_case([200, 77], 4, 4, 16, 15, device, swa_page=64)
    args = {k: v for k, v in case.items() if k != "ratio"}
    args["topk_indices"] = args.pop("comp_indices")
    out, _ = csa_attention(**args)
    ref, _ = csa_attention_reference(**args)
    assert_close(out.float(), ref.float(), OUT_REL, "csa output")


def test_choose_splits_fills_the_gpu() -> None:
    assert choose_splits(256, 1, 640, 64) == 1
    # 128 programs already fill 128 of 132 SMs: 2 splits would only add a second wave.
    assert choose_splits(128, 1, 640, 64) == 1
    # 40 programs: 2 splits = 1 wave of half the work; 4 would be 2 waves of a quarter (a tie).
    assert choose_splits(40, 1, 8320, 64) == 2
    assert choose_splits(64, 1, 8320, 64) == 2
    assert choose_splits(1, 1, 8320, 64) == 32
    assert choose_splits(1, 1, 128, 64) == 1
    # The Gluon kernel's two tiles per split: V4-Flash CSA at B=1 (20 tiles of 32) takes 8
    # splits instead of 4, and HCA at L=1M stops at the 64-split ceiling.
    assert choose_splits(1, 1, 640, 32) == 4
    assert choose_splits(1, 1, 640, 32, min_tiles=2) == 8
    assert choose_splits(1, 1, 8320, 32, min_tiles=2) == 64


def test_reference_path_needs_no_triton() -> None:
    # The reference engine runs these on CPU hosts: impl="reference" must not import triton.
    code = (
        "import sys, torch\n"
        "from dsv4_kernels.hca import hca_attention_reference\n"
        "from dsv4_kernels.indexer import index_topk\n"
        "from dsv4_kernels.compressor import compress\n"
        "from dsv4_kernels.testing import make_attention_case, make_index_case\n"
        "c = make_attention_case([300], 2, 128, None, 1, torch.device('cpu'))\n"
        "a = {k: v for k, v in c.items() if k not in ('ratio', 'comp_indices')}\n"
        "hca_attention_reference(**a)\n"
        "i = make_index_case([400], 2, torch.device('cpu'), heads=4, page=16)\n"
        "index_topk(**i, topk=8, impl='reference')\n"
        "assert 'triton' not in sys.modules, 'triton imported'\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "ok"


def test_combine_block_h_halves_for_programs_and_registers() -> None:
    assert triton_attention.combine_block_h(64, 64, 2) == 8  # 64 x 8 = 512 programs
    assert triton_attention.combine_block_h(32, 64, 4) == 4  # 32 x 8 = 256 < 264; 32 x 16 = 512
    assert triton_attention.combine_block_h(1, 64, 64) == 1  # as many programs as heads
    assert triton_attention.combine_block_h(16, 64, 8) == 2  # 16 x 32 = 512; 16 x 16 = 256
    assert triton_attention.combine_block_h(64, 64, 16) == 4  # 8 x 16 loads would be 128
    assert triton_attention.combine_block_h(256, 64, 64) == 1


@pytest.mark.parametrize("with_sink", [True, False])
def test_combine_merges_partials_like_the_formula(with_sink: bool, device: torch.device) -> None:
    """`_combine_kernel` alone on synthetic partials: 12 heads (a masked head block of 8),
    3 splits, empty splits (lse -inf, partial 0) and a token whose splits are all empty."""
    t_count, n_split, h = 3, 3, 12
    gen = torch.Generator(device=device).manual_seed(3)
    part_o = torch.randn(t_count, n_split, h, 512, generator=gen, device=device)
    part_lse = torch.randn(t_count, n_split, h, generator=gen, device=device) * 4
    part_lse[0, 1] = float("-inf")
    part_o[0, 1] = 0.0
    part_lse[2] = float("-inf")
    part_o[2] = 0.0
    sink = torch.randn(h, generator=gen, device=device)
    out = poisoned_like(torch.empty(t_count, h, 512, dtype=torch.bfloat16, device=device))
    lse = poisoned_like(torch.empty(t_count, h, dtype=torch.float32, device=device))
    triton_attention._combine_kernel[(t_count, 2)](
        part_o, part_lse, sink, out, lse, h, HAS_SINK=with_sink, N_SPLIT=n_split, BLOCK_H=8
    )
    sink2 = sink * 1.4426950408889634 if with_sink else torch.full_like(sink, float("-inf"))
    mm = torch.maximum(part_lse.amax(dim=1), sink2[None, :])
    mm = torch.where(torch.isinf(mm), torch.zeros_like(mm), mm)
    w = torch.exp2(part_lse - mm[:, None, :])
    den = w.sum(dim=1) + torch.exp2(sink2[None, :] - mm)
    ref = (w[..., None] * part_o).sum(dim=1) / torch.where(den > 0, den, 1.0)[..., None]
    ref_lse = torch.where(den > 0, (mm + torch.log2(den)) * 0.6931471805599453, float("-inf"))
    assert_close(out.float(), ref, 1e-2, "combined output")
    assert torch.equal(torch.isfinite(lse), torch.isfinite(ref_lse))
    fin = torch.isfinite(ref_lse)
    assert float((lse[fin] - ref_lse[fin]).abs().max()) < 1e-4
    if not with_sink:
        assert torch.equal(out[2].float(), torch.zeros_like(out[2].float()))


@pytest.mark.parametrize("topk", [None, 8])
def test_poison_in_slot_zero_never_reaches_the_output(
    topk: int | None, device: torch.device
) -> None:
    # Masked entries (window before token 0, -1 ids, ids >= L // ratio, HCA padding) gather
    # slot 0; a NaN there (page 0 as vLLM's null block, or never written) must not leak, in the
    # reference (probability 0 times NaN is NaN) or in the kernel.
    ratio = 128 if topk is None else 4
    case = make_attention_case([70, 300], 3, ratio, topk, 19, device, swa_page=16)
    ref_out, ref_lse = sparse_mla_reference(**case)
    for kind in ("swa", "comp"):
        cache = case[f"{kind}_cache"]
        pois = torch.full((1, cache.shape[1]), 0xFF, dtype=torch.uint8, device=device)  # NaN
        case[f"{kind}_cache"] = torch.cat([pois, cache])  # page 0: poison everywhere
        case[f"{kind}_block_table"] = case[f"{kind}_block_table"] + 1
    out, lse = sparse_mla_reference(**case)
    assert torch.equal(out, ref_out)
    assert torch.equal(lse, ref_lse)
    _check(case, *_run(case, n_split=2, block_h=16, block_n=32, num_warps=4))


@pytest.mark.parametrize("impl", ["triton", "reference"])
@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("positions", lambda c: c["positions"][:1]),
        ("seq_ids", lambda c: c["seq_ids"][:1]),
        ("comp_indices", lambda c: c["comp_indices"][:1]),
        ("sink", lambda c: c["sink"][:1]),
        ("swa_cache", lambda c: c["swa_cache"][:, :580]),
        ("comp_cache", lambda c: c["comp_cache"].view(torch.int8)),
        ("q", lambda c: c["q"][..., :256]),
        ("comp_block_table", lambda c: c["comp_block_table"].float()),
    ],
)
def test_wrong_shapes_and_dtypes_raise_naming_the_argument(
    impl: str, field: str, bad: Any, device: torch.device
) -> None:
    # Before: the kernel read past short positions / comp_indices / sink / 580-byte rows
    # (garbage, NaN) and the reference broadcast a [1] seq_ids or a [1, K] comp_indices.
    case = make_attention_case([70, 300], 3, 4, 8, 21, device, swa_page=16)
    args = {k: v for k, v in case.items() if k != "ratio"}
    args["topk_indices"] = args.pop("comp_indices")
    key = "topk_indices" if field == "comp_indices" else field
    args[key] = bad(case)
    with pytest.raises(ValueError, match=field):
        csa_attention(**args, impl=impl)  # type: ignore[arg-type]


def test_wrong_out_buffers_raise(device: torch.device) -> None:
    case = make_attention_case([70], 3, 4, 8, 22, device, swa_page=16)
    q = case["q"]
    with pytest.raises(ValueError, match="out must be"):
        sparse_mla_triton(**case, out=torch.empty(2, 3, 512, dtype=torch.bfloat16, device=q.device))
    with pytest.raises(ValueError, match="lse_out must be"):
        sparse_mla_triton(**case, lse_out=torch.empty(1, 3, dtype=torch.float16, device=q.device))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # interpreter
def test_nan_in_an_attended_entry_reaches_the_output(device: torch.device) -> None:
    # The opposite of poison: a NaN the token does attend to must surface, not be stored as
    # -0.0 (round_bf16 turned the GPUs' canonical NaN 0x7FFFFFFF into -0.0; on the GPU this
    # is the check of that fix, the interpreter's NaN being 0x7FC00000).
    case = make_attention_case([70], 3, 128, None, 23, device, swa_page=16)
    pos = int(case["positions"][0])
    page = int(case["swa_block_table"][0, pos // 16])
    case["swa_cache"] = case["swa_cache"].clone()
    rope = (pos % 16) * 576 + 448  # the token's record in its page, RoPE dim 448: bf16 NaN
    case["swa_cache"][page, rope : rope + 2] = 0xFF
    ref_out, _ = sparse_mla_reference(**case)
    assert bool(ref_out.float().isnan().all())
    for ws in [False, None] if device.type == "cuda" else [False]:
        out, _ = sparse_mla_triton(**case, warp_specialized=ws)
        assert bool(out.float().isnan().all()), f"warp_specialized={ws}"


@pytest.mark.parametrize("n_split", [1, 2])
def test_infinite_sink_takes_all_the_probability(n_split: int, device: torch.device) -> None:
    # sink_h = +inf: the head attends to nothing (out 0) and lse = +inf. The kernel gave
    # lse -inf (exp2(inf - inf) = NaN in the denominator), the reference an unnormalised
    # output (it subtracted 0 for a non-finite lse).
    case = make_attention_case([300], 2, 128, None, 24, device, swa_page=32)
    case["sink"] = torch.tensor([float("inf"), 0.5], device=device)
    ref_out, ref_lse = sparse_mla_reference(**case)
    out, lse = _run(case, n_split=n_split, block_h=16, block_n=32, num_warps=4)
    for o, s in ((ref_out, ref_lse), (out, lse)):
        assert bool((o[:, 0].float() == 0).all())
        assert bool((s[:, 0] == float("inf")).all())
    assert_close(out[:, 1].float(), ref_out[:, 1].float(), OUT_REL, "finite-sink head")
    assert float((lse[:, 1] - ref_lse[:, 1]).abs().max()) < LSE_ABS


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # interpreter
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # interpreter
@pytest.mark.parametrize("n_split", [1, 2])
def test_infinite_sink_with_large_scores(n_split: int, device: torch.device) -> None:
    # With scores above 2**128 in base 2 (q·k * scale > 88.7), exp2(m - 0) overflowed: the
    # epilogue's exp2(m) / den was inf / inf and the combine's weights inf, so a +inf sink
    # gave NaN instead of out 0 (the reference gives 0 for any finite score).
    case = make_attention_case([300], 2, 128, None, 24, device, swa_page=32)
    case["q"] = case["q"] * 40.0
    case["sink"] = torch.tensor([float("inf"), 0.5], device=device)
    ref_out, ref_lse = sparse_mla_reference(**case)
    assert float(ref_lse[:, 1].min()) > 90  # the finite-sink head's scores are that large
    out, lse = _run(case, n_split=n_split, block_h=16, block_n=32, num_warps=4)
    for o, s in ((ref_out, ref_lse), (out, lse)):
        assert bool((o[:, 0].float() == 0).all())
        assert bool((s[:, 0] == float("inf")).all())
