"""The attention kernel and reference read vLLM-shaped, sliced and one-page paged caches.

The expected side restates FlashMLA's MODEL1 / vLLM's fp8_ds_mla block layout independently of
`kv_format`'s paged helpers: token i of page g has its 576-byte record (448 e4m3 NoPE bytes,
64 bf16 RoPE) at byte g * page_stride + i * 576 of the cache and its 8-byte scale record
(7 UE8M0 bytes, pad) at g * page_stride + page * 576 + i * 8. Every other byte is 0x7F (e4m3
NaN), so a read at a wrong offset turns the output NaN.
"""

from typing import Any

import pytest
import torch

from dsv4_kernels.hca import hca_attention
from dsv4_kernels.kv_format import quantize_fp8_ds_mla
from dsv4_kernels.sparse_mla import sparse_mla_reference
from dsv4_kernels.sparse_mla.triton_attention import sparse_mla_triton

WINDOW = 32
RATIO = 4


def _dequant(e: torch.Tensor) -> torch.Tensor:
    """[N, 584] fp8_ds_mla entries -> [N, 512] float64, from the layout table alone."""
    nope = e[:, :448].contiguous().view(torch.float8_e4m3fn).double()
    scale = torch.pow(2.0, e[:, 576:583].double() - 127).repeat_interleave(64, 1)
    rope = e[:, 448:576].contiguous().view(torch.bfloat16).double()
    return torch.cat([nope * scale, rope], 1)


def _cache(kind: str, pages: int, page: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(storage poisoned with 0x7F, the [pages, row] cache view of it) of one `kind`."""
    need = page * 584
    padded = -(-need // 576) * 576
    if kind == "vllm":  # [blocks, padded + 576] storage seen as [blocks, page, 584], flattened
        storage = torch.full((pages, padded + 576), 0x7F, dtype=torch.uint8)
        cache = storage.as_strided((pages, page, 584), (padded + 576, 584, 1)).flatten(1)
    elif kind == "slice":  # storage offset != 0, row stride larger than the row
        storage = torch.full((pages + 2, padded + 48), 0x7F, dtype=torch.uint8)
        cache = storage[1 : pages + 1, 16 : 16 + need]
    elif kind == "odd_stride":  # one page cut from rows of an odd width (stride unused)
        storage = torch.full((pages + 1, need + 1), 0x7F, dtype=torch.uint8)
        cache = storage[:pages, :need]
    else:  # rows of exactly page * 584 bytes
        storage = torch.full((pages, need), 0x7F, dtype=torch.uint8)
        cache = storage
    return storage, cache


def _place(
    storage: torch.Tensor, cache: torch.Tensor, page: int, slot: int, e: torch.Tensor
) -> None:
    """Write entry `e` [584] into `slot` of `cache` (a view of `storage`) byte by byte."""
    flat = storage.view(-1)
    stride = cache.stride(0) if cache.shape[0] > 1 else cache.shape[1]
    g, i = divmod(slot, page)
    rec = cache.storage_offset() + g * stride + i * 576
    sc = cache.storage_offset() + g * stride + page * 576 + i * 8
    flat[rec : rec + 576] = e[:576]
    flat[sc : sc + 8] = e[576:]


def _case(
    kind: str,
    swa_page: int,
    comp_page: int,
    lengths: list[int],
    topk: int | None,
    device: torch.device,
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """(sparse_mla_attention arguments on `device`, expected out and lse in float64)."""
    gen = torch.Generator().manual_seed(swa_page * 100 + comp_page)
    n_comp = [n // RATIO for n in lengths]
    tables, caches, entries = [], [], []
    for page, counts in ((swa_page, lengths), (comp_page, n_comp)):
        per_seq = [max(1, -(-n // page)) for n in counts]
        perm = torch.randperm(sum(per_seq), generator=gen).tolist()
        last = perm.index(len(perm) - 1)  # sequence 0's last page is the cache's last page
        perm[last], perm[per_seq[0] - 1] = perm[per_seq[0] - 1], perm[last]
        table = torch.zeros(len(counts), max(per_seq), dtype=torch.int32)
        storage, cache = _cache(kind, len(perm), page)
        seq_entries = []
        at = 0
        for b, n in enumerate(counts):
            table[b, : per_seq[b]] = torch.tensor(perm[at : at + per_seq[b]])
            at += per_seq[b]
            e = quantize_fp8_ds_mla(torch.randn(n, 512, generator=gen) * 2)
            for i in range(n):
                _place(storage, cache, page, int(table[b, i // page]) * page + i % page, e[i])
            seq_entries.append(e)
        tables.append(table.to(device))
        moved = storage.to(device)  # the same view of the moved storage
        caches.append(moved.as_strided(cache.shape, cache.stride(), cache.storage_offset()))
        entries.append(seq_entries)
    heads = 4
    q = torch.randn(len(lengths), heads, 512, generator=gen).to(torch.bfloat16)
    sink = torch.randn(heads, generator=gen)
    idx = None
    if topk is not None:
        idx = torch.full((len(lengths), topk), -1, dtype=torch.int32)
        for b, n in enumerate(n_comp):
            pick = torch.randperm(n, generator=gen)[: topk - 1]
            idx[b, : len(pick)] = pick.to(torch.int32)
    exp_out = torch.zeros(len(lengths), heads, 512, dtype=torch.float64)
    exp_lse = torch.zeros(len(lengths), heads, dtype=torch.float64)
    for b, n in enumerate(lengths):
        ids = (
            list(range(n_comp[b]))
            if idx is None
            else [int(x) for x in idx[b] if 0 <= x < n_comp[b]]
        )
        kv = torch.cat(
            [
                _dequant(entries[0][b][max(0, n - WINDOW) : n]),
                _dequant(entries[1][b][ids]),
            ]
        )
        s = (q[b].double() @ kv.T) * 512**-0.5
        lse = torch.logsumexp(torch.cat([s, sink.double()[:, None]], 1), 1)
        exp_out[b] = torch.exp(s - lse[:, None]) @ kv
        exp_lse[b] = lse
    args: dict[str, Any] = {
        "q": q.to(device),
        "positions": torch.tensor([n - 1 for n in lengths], dtype=torch.int32, device=device),
        "seq_ids": torch.arange(len(lengths), dtype=torch.int32, device=device),
        "swa_cache": caches[0],
        "swa_block_table": tables[0],
        "swa_page": swa_page,
        "comp_cache": caches[1],
        "comp_block_table": tables[1],
        "comp_page": comp_page,
        "ratio": RATIO,
        "comp_indices": None if idx is None else idx.to(device),
        "sink": sink.to(device),
        "softmax_scale": 512**-0.5,
        "window": WINDOW,
    }
    return args, exp_out, exp_lse


@pytest.mark.parametrize("kind", ["vllm", "slice", "exact"])
@pytest.mark.parametrize(
    ("swa_page", "comp_page", "lengths"),
    [(1, 1, [37, 20]), (2, 2, [37, 20]), (3, 3, [37, 20]), (64, 2, [37, 20]), (64, 64, [37])],
)
@pytest.mark.parametrize("topk", [None, 5])
def test_kernel_and_reference_read_the_block_layout_bytes(
    kind: str,
    swa_page: int,
    comp_page: int,
    lengths: list[int],
    topk: int | None,
    device: torch.device,
) -> None:
    args, exp_out, exp_lse = _case(kind, swa_page, comp_page, lengths, topk, device)
    assert args["swa_cache"].shape[0] > 1 or lengths == [37]  # [37] with page 64: one page
    ref = sparse_mla_reference(**args)
    ker = sparse_mla_triton(**args, block_h=16, block_n=16, num_warps=4, n_split=2)
    for out, lse in (ref, ker):
        assert float((out.cpu().double() - exp_out).norm() / exp_out.norm()) < 1e-2
        assert float((lse.cpu().double() - exp_lse).abs().max()) < 1e-2


@pytest.mark.parametrize("topk", [None, 5])
def test_one_page_caches_with_an_odd_row_stride(topk: int | None, device: torch.device) -> None:
    # A one-page cache's row stride is never used, and check_paged_cache does not look at it;
    # the Triton path's `cache.view(torch.bfloat16)` refused an odd one (RuntimeError).
    args, exp_out, exp_lse = _case("odd_stride", 64, 64, [37], topk, device)
    assert args["swa_cache"].stride(0) % 2 == 1
    ref = sparse_mla_reference(**args)
    ker = sparse_mla_triton(**args, block_h=16, block_n=16, num_warps=4, n_split=2)
    for out, lse in (ref, ker):
        assert float((out.cpu().double() - exp_out).norm() / exp_out.norm()) < 1e-2
        assert float((lse.cpu().double() - exp_lse).abs().max()) < 1e-2


@pytest.mark.parametrize("impl", ["reference", "triton"])
@pytest.mark.parametrize(
    ("field", "width", "message"),
    [
        ("swa_cache", 64 * 584 + 1, r"swa_cache rows hold 37377 bytes: need an even count"),
        ("comp_cache", 2 * 584 - 2, r"comp_cache rows hold 1166 bytes: .* = 1168"),
        ("comp_cache", 3 * 584, r"comp_cache must be a \[pages, page_bytes\] uint8"),
    ],
)
def test_bad_cache_widths_are_refused_naming_the_argument(
    impl: str, field: str, width: int, message: str, device: torch.device
) -> None:
    args, _, _ = _case("exact", 64, 2, [300], None, device)
    args.pop("comp_indices")
    args.pop("ratio")  # hca_attention's is 128
    pages = args[field].shape[0]
    if width == 3 * 584:  # vLLM's [blocks, block_size, 584] form, not flattened
        args[field] = torch.zeros(pages, 3, 584, dtype=torch.uint8, device=device)
    else:
        args[field] = torch.zeros(pages, width, dtype=torch.uint8, device=device)
    with pytest.raises(ValueError, match=message):
        hca_attention(**args, impl=impl)  # type: ignore[arg-type]
