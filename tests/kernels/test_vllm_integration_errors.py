"""Errors an integrator calling the kernels on vLLM-allocated caches runs into (session h6).

Inputs are built from the docs only: vLLM's [num_blocks, block_size, 584] main-KV storage,
block tables, positions. Each test checks that a mistake raises a ValueError that names the
argument and says what to do, instead of an IndexError naming no argument or a bad read.
"""

from __future__ import annotations

import pytest
import torch

from dsv4_kernels import kv_format as kvf
from dsv4_kernels.hca import hca_attention
from dsv4_kernels.indexer import index_topk

H = 8
SWA_PAGE = 64
HCA_PAGE = 2


def _inputs(length: int = 200) -> dict[str, torch.Tensor]:
    """One sequence of `length` tokens: SWA and HCA caches in vLLM's block layout."""
    g = torch.Generator().manual_seed(0)
    raw = kvf.quantize_fp8_ds_mla(torch.randn(length, 512, generator=g))
    comp = kvf.quantize_fp8_ds_mla(torch.randn(length // 128, 512, generator=g))
    swa = torch.zeros(-(-length // SWA_PAGE), SWA_PAGE * 584, dtype=torch.uint8)  # vLLM SWA
    kvf.write_entries(swa, torch.arange(length), raw, SWA_PAGE)
    hca = kvf.paged_cache(comp, HCA_PAGE)
    return {
        "q": torch.randn(1, H, 512, generator=g).to(torch.bfloat16),
        "positions": torch.tensor([length - 1], dtype=torch.int32),
        "seq_ids": torch.zeros(1, dtype=torch.int32),
        "swa": swa,
        "swa_bt": torch.arange(swa.shape[0], dtype=torch.int32)[None],
        "hca": hca,
        "hca_bt": torch.arange(hca.shape[0], dtype=torch.int32)[None],
    }


def _hca(x: dict[str, torch.Tensor], impl: str = "reference") -> tuple[torch.Tensor, torch.Tensor]:
    return hca_attention(
        x["q"],
        x["positions"],
        x["seq_ids"],
        x["swa"],
        x["swa_bt"],
        SWA_PAGE,
        x["hca"],
        x["hca_bt"],
        HCA_PAGE,
        None,
        512**-0.5,
        impl=impl,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_vllm_3d_main_cache_error_says_how_to_pass_it(impl: str) -> None:
    """vLLM allocates [num_blocks, block_size, 584]: the error must say to flatten(1) it."""
    x = _inputs()
    x["swa"] = x["swa"].view(x["swa"].shape[0], SWA_PAGE, 584)
    with pytest.raises(ValueError, match=r"swa_cache.*flatten\(1\)"):
        _hca(x, impl)


def test_vllm_3d_main_cache_flattened_is_read_in_place() -> None:
    """The advice of the error works: flatten(1) of the 3-D storage gives the 2-D result."""
    x = _inputs()
    want = _hca(x)
    x["swa"] = x["swa"].view(x["swa"].shape[0], SWA_PAGE, 584).flatten(1)
    got = _hca(x)
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[1], want[1])


def _index_args(**over: torch.Tensor) -> dict[str, torch.Tensor]:
    """A 2-page vLLM-padded key cache (8,640 B rows), one token at position 20 (5 keys)."""
    args = {
        "q": torch.ones(1, 64, 128).to(torch.float8_e4m3fn),
        "weights": torch.ones(1, 64),
        "key_pages": torch.zeros(2, 8640, dtype=torch.uint8),
        "block_table": torch.zeros(1, 1, dtype=torch.int32),
        "positions": torch.tensor([20], dtype=torch.int32),
        "seq_ids": torch.zeros(1, dtype=torch.int32),
    }
    args.update(over)
    return args


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_vllm_3d_index_key_cache_error_says_how_to_pass_it(impl: str) -> None:
    """vLLM's indexer key cache as [blocks, 64, 135]: the error must say to flatten(1) it."""
    keys = torch.zeros(2, 64 * 135, dtype=torch.uint8).view(2, 64, 135)
    with pytest.raises(ValueError, match=r"key_pages.*flatten\(1\)"):
        index_topk(**_index_args(key_pages=keys), topk=16, impl=impl)  # type: ignore[arg-type]


def test_reference_seq_id_past_block_table_names_seq_ids() -> None:
    x = _inputs()
    x["seq_ids"] = torch.tensor([3], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"seq_ids.*0 <= seq_id < 1"):
        _hca(x)


def test_reference_block_table_too_short_names_it() -> None:
    x = _inputs()
    x["swa_bt"] = x["swa_bt"][:, :2]  # position 199 needs page 3
    with pytest.raises(ValueError, match=r"swa_block_table has 2 pages.*needs page 3"):
        _hca(x)


def test_reference_page_id_past_cache_names_it() -> None:
    x = _inputs()
    x["hca_bt"] = torch.tensor([[7]], dtype=torch.int32)  # the cache has 1 page
    with pytest.raises(ValueError, match=r"comp_block_table holds page id 7.*\[0, 1\)"):
        _hca(x)


def test_reference_stale_swa_pages_outside_window_are_not_checked() -> None:
    """Pages wholly before the window are not read (vLLM may free them): no error."""
    x = _inputs(length=300)
    x["swa_bt"] = x["swa_bt"].clone()
    x["swa_bt"][0, 0] = 999  # tokens 0..63, outside the window 172..299
    want = _hca(_inputs(length=300))
    got = _hca(x)
    assert torch.equal(got[1], want[1])


@pytest.mark.parametrize("impl", ["reference", "triton"])
@pytest.mark.parametrize("topk", [48, 0, -4])
def test_index_topk_rejects_topk_the_kernel_cannot_run_on_both_paths(impl: str, topk: int) -> None:
    """`topk` is documented as a power of two; the reference took 48 and the kernel refused it.

    A CPU integration tested with impl="reference" must fail the same way it would on the GPU.
    """
    keys = torch.zeros(1, 64 * 132, dtype=torch.uint8)
    with pytest.raises(ValueError, match=rf"topk must be a power of two.*got {topk}"):
        index_topk(**_index_args(key_pages=keys), topk=topk, impl=impl)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"seq_ids": torch.tensor([4], dtype=torch.int32)}, r"seq_ids.*0 <= seq_id < 1"),
        ({"block_table": torch.tensor([[9]], dtype=torch.int32)}, r"block_table.*9.*\[0, 2\)"),
        ({"positions": torch.tensor([400], dtype=torch.int32)}, r"block_table has 1 pages"),
    ],
)
def test_index_reference_names_out_of_range_values(
    over: dict[str, torch.Tensor], match: str
) -> None:
    """The reference raised 'IndexError: index 4 is out of bounds for dimension 0 with size 1'."""
    with pytest.raises(ValueError, match=match):
        index_topk(**_index_args(**over), topk=16, impl="reference")  # type: ignore[arg-type]


def test_unpack_index_pages_reads_vllm_padded_blocks() -> None:
    """vLLM pads a 64-key block to 8,640 B; unpack_index_pages took the padding for scales."""
    g = torch.Generator().manual_seed(3)
    k8, scale = kvf.quantize_index_keys(torch.randn(128, 128, generator=g))
    packed = kvf.pack_index_pages(k8, scale, 64)  # [2, 8448]
    padded = torch.zeros(2, 8640, dtype=torch.uint8)
    padded[:, : packed.shape[1]] = packed
    assert torch.equal(kvf.unpack_index_pages(padded, 64), kvf.unpack_index_pages(packed, 64))
