"""Real V4-Flash / V4-Pro shapes on CUDA (`pytest -m gpu tests/kernels` on the H200)."""

from typing import Any

import pytest
import torch

from dsv4_kernels.compressor.reference import compress_reference, compress_reference_fp8
from dsv4_kernels.compressor.triton_compressor import compress_triton
from dsv4_kernels.indexer.triton_indexer import index_topk_triton
from dsv4_kernels.kv_format import dequantize_fp8_ds_mla
from dsv4_kernels.sparse_mla import sparse_mla_attention
from dsv4_kernels.testing import (
    assert_close,
    make_attention_case,
    make_index_case,
    poisoned_like,
)

from .test_attention import LSE_ABS, OUT_REL, _check, _run
from .test_indexer import check_topk

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs CUDA: run `pytest -m gpu tests/kernels` on the H200",
    ),
]
CUDA = torch.device("cuda")
K128 = 131072
M1 = 1048576


@pytest.mark.parametrize(
    ("heads", "lengths"),
    [(64, [K128, M1, 70001, 129, 1]), (128, [M1, 4097])],
    ids=["flash", "pro"],
)
@pytest.mark.parametrize("ws", [None, False], ids=["default", "triton"])
def test_hca_decode_v4(heads: int, lengths: list[int], ws: bool | None) -> None:
    case = make_attention_case(lengths, heads, 128, None, 31, CUDA)
    out, lse = _run(case, warp_specialized=ws)
    _check(case, out, lse)


def test_hca_prefill_v4_flash() -> None:
    case = make_attention_case([8192 + 77], 64, 128, None, 32, CUDA, queries_per_seq=200)
    out, lse = _run(case)
    _check(case, out, lse)


@pytest.mark.parametrize(
    ("heads", "topk", "lengths", "mtp"),
    [(64, 512, [K128, 1000, M1, 2049], 1), (128, 1024, [K128, 5000], 2)],
    ids=["flash", "pro-mtp2"],
)
@pytest.mark.parametrize("ws", [None, False], ids=["default", "triton"])
def test_csa_decode_v4(
    heads: int, topk: int, lengths: list[int], mtp: int, ws: bool | None
) -> None:
    case = make_attention_case(lengths, heads, 4, topk, 33, CUDA, queries_per_seq=mtp)
    out, lse = _run(case, warp_specialized=ws)
    _check(case, out, lse)


@pytest.mark.parametrize(
    ("topk", "lengths", "mtp"),
    [(512, [M1, 4000, 777], 1), (1024, [K128, 300000], 2)],
    ids=["flash-1m", "pro-mtp2"],
)
def test_indexer_topk_v4(topk: int, lengths: list[int], mtp: int) -> None:
    case = make_index_case(lengths, 34, CUDA, queries_per_seq=mtp)
    t = len(lengths) * mtp
    idx = poisoned_like(torch.empty(t, topk, dtype=torch.int32, device=CUDA))
    val = poisoned_like(torch.empty(t, topk, dtype=torch.float32, device=CUDA))
    index_topk_triton(**case, topk=topk, out_indices=idx, out_values=val)
    check_topk(case, topk, idx, val)


@pytest.mark.slow
def test_compressor_offsets_past_2_to_the_31() -> None:
    """Batch element 2 of [3, 1M, 1024] starts at element 2**31 of kv: 32-bit offsets wrapped."""
    b, t, ratio = 3, M1, 4
    kv = torch.randn(b, t, 1024, device=CUDA)
    sc = torch.randn(b, t, 1024, device=CUDA)
    gen = torch.Generator().manual_seed(36)
    ape = (torch.randn(ratio, 1024, generator=gen) * 0.3).to(CUDA)
    w = (torch.rand(512, generator=gen) + 0.5).to(CUDA)
    ang = torch.rand(1, t // ratio, 32, generator=gen).to(CUDA).expand(b, -1, -1) * 6.28
    out = compress_triton(kv, sc, ape, w, ang.cos(), ang.sin(), ratio)
    last = slice(b - 1, b)
    ref = compress_reference(kv[last], sc[last], ape, w, ang[last].cos(), ang[last].sin(), ratio)
    assert_close(out[last].float(), ref.float(), 4e-3)


@pytest.mark.parametrize("ratio", [4, 128])
def test_compressor_v4_prefill(ratio: int) -> None:
    gen = torch.Generator().manual_seed(35)
    c = 2 if ratio == 4 else 1
    t = 8192
    kv = torch.randn(2, t, c * 512, generator=gen).to(CUDA)
    sc = torch.randn(2, t, c * 512, generator=gen).to(CUDA)
    ape = torch.randn(ratio, c * 512, generator=gen).to(CUDA) * 0.3
    w = torch.rand(512, generator=gen).to(CUDA) + 0.5
    ang = torch.rand(2, t // ratio, 32, generator=gen).to(CUDA) * 6.28
    args = (kv, sc, ape, w, ang.cos(), ang.sin(), ratio)
    out = poisoned_like(torch.empty(2, t // ratio, 584, dtype=torch.uint8, device=CUDA))
    compress_triton(*args, out_format="fp8_ds_mla", out=out)
    assert_close(
        dequantize_fp8_ds_mla(out), dequantize_fp8_ds_mla(compress_reference_fp8(*args)), 2e-2
    )
    outb = poisoned_like(torch.empty(2, t // ratio, 512, dtype=torch.bfloat16, device=CUDA))
    compress_triton(*args, out=outb)
    assert_close(outb.float(), compress_reference(*args).float(), 4e-3)


def test_public_attention_api_on_cuda() -> None:
    case = make_attention_case([K128, 3000], 64, 4, 512, 36, CUDA)
    out, lse = sparse_mla_attention(**case)
    _check(case, out, lse)
    assert LSE_ABS > 0
    assert OUT_REL > 0


def _token_subset(case: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """The case restricted to the query tokens `rows` (same caches and block tables)."""
    keep = torch.tensor(rows, device=CUDA)
    sub = dict(case)
    for name in ("q", "weights", "positions", "seq_ids", "comp_indices"):
        value = case.get(name)
        if isinstance(value, torch.Tensor):
            sub[name] = value.index_select(0, keep)
    return sub


def test_attention_over_more_tokens_than_one_launch() -> None:
    # 65,635 prefill tokens of one 70,000-token sequence: more than a grid axis holds (65,535),
    # so the wrapper launches twice; tokens at both ends and across the seam match the reference.
    t = 65635
    case = make_attention_case([70000], 16, 128, None, 35, CUDA, queries_per_seq=t)
    out, lse = _run(case, block_h=16)
    rows = [0, 1, 65534, 65535, 65536, t - 1]
    sub = _token_subset(case, rows)
    _check(sub, out[rows], lse[rows])


def test_indexer_over_more_tokens_than_one_launch() -> None:
    t = 65635
    case = make_index_case([70000], 36, CUDA, queries_per_seq=t)
    idx, val = index_topk_triton(**case, topk=512)
    rows = [0, 65534, 65535, t - 1]
    check_topk(_token_subset(case, rows), 512, idx[rows], val[rows])
