"""The warp-specialised (Gluon) attention kernel: where it runs, its launch limits, results.

CPU: which devices and shapes select it, and the shared-memory / register checks of its
launch options. CUDA (`pytest -m gpu tests/kernels` on the H200): it matches the reference
where the Triton kernel's own tests do, and `sparse_mla_triton` picks it by default.
"""

from typing import Any

import pytest
import torch

from dsv4_kernels.sparse_mla import gluon_attention, triton_attention
from dsv4_kernels.sparse_mla.triton_attention import sparse_mla_triton
from dsv4_kernels.testing import make_attention_case

from .test_attention import _check, _run

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
needs_hopper = pytest.mark.skipif(not HOPPER, reason="needs an NVIDIA sm_90 GPU (H100/H200)")


@pytest.fixture
def hopper(monkeypatch: pytest.MonkeyPatch) -> torch.device:
    """A compiled-mode sm_90 CUDA device as `unsupported_reason` sees it (no GPU needed)."""
    monkeypatch.setattr(gluon_attention, "INTERPRET", False)
    monkeypatch.setattr(gluon_attention, "HAVE_GLUON", True)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d=None: (9, 0))
    return torch.device("cuda")


def test_runs_on_hopper_with_whole_head_blocks(hopper: torch.device) -> None:
    assert gluon_attention.unsupported_reason(hopper, 64, 128) is None
    assert gluon_attention.unsupported_reason(hopper, 128, 128) is None


@pytest.mark.parametrize(
    ("heads", "window", "words"),
    [(48, 128, "H=48"), (64, 100, "window=100")],
)
def test_names_the_shape_it_cannot_take(
    hopper: torch.device, heads: int, window: int, words: str
) -> None:
    reason = gluon_attention.unsupported_reason(hopper, heads, window)
    assert reason is not None
    assert words in reason


def test_needs_sm90_gluon_and_compiled_kernels(
    hopper: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d=None: (10, 0))
    assert "10.0" in str(gluon_attention.unsupported_reason(hopper, 64, 128))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d=None: (9, 0))
    monkeypatch.setattr(torch.version, "hip", "6.2")
    assert "not an NVIDIA GPU" in str(gluon_attention.unsupported_reason(hopper, 64, 128))
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(gluon_attention, "INTERPRET", True)
    assert "TRITON_INTERPRET" in str(gluon_attention.unsupported_reason(hopper, 64, 128))
    monkeypatch.setattr(gluon_attention, "INTERPRET", False)
    monkeypatch.setattr(gluon_attention, "HAVE_GLUON", False)
    assert "Gluon" in str(gluon_attention.unsupported_reason(hopper, 64, 128))
    cpu = torch.device("cpu")
    monkeypatch.setattr(gluon_attention, "HAVE_GLUON", True)
    assert "not an NVIDIA GPU" in str(gluon_attention.unsupported_reason(cpu, 64, 128))


def test_forcing_it_where_it_cannot_run_says_why() -> None:
    case = make_attention_case([300], 64, 128, None, 3, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"warp_specialized=True cannot run: .+"):
        sparse_mla_triton(**case, warp_specialized=True)


def test_default_launch_fits_shared_memory_and_registers() -> None:
    opts = gluon_attention.launch_options()
    assert gluon_attention.shared_bytes(opts["STAGES"], opts["RAW_STAGES"]) <= (
        gluon_attention.SMEM_LIMIT
    )
    producer = opts["maxnreg"] * 3 - 2 * opts["CONSUMER_REGS"]
    assert producer >= 24
    # All threads' registers fit the SM's 65,536.
    assert opts["maxnreg"] * 384 <= 65536


def test_the_follower_dequantises_by_default_when_the_ring_allows() -> None:
    # Its share of a tile is dequantised an iteration before its own release of that bf16
    # stage's previous tile, so a 1-stage ring would deadlock: it falls back to 0 there.
    assert gluon_attention.launch_options()["FOLLOWER_CHUNKS"] == gluon_attention.FOLLOWER_CHUNKS
    selected = gluon_attention.launch_options(**gluon_attention.SELECTED_OPTIONS)
    assert selected["FOLLOWER_CHUNKS"] == gluon_attention.FOLLOWER_CHUNKS > 0
    assert gluon_attention.launch_options(stages=1, raw_stages=5)["FOLLOWER_CHUNKS"] == 0
    assert gluon_attention.launch_options(follower_chunks=0)["FOLLOWER_CHUNKS"] == 0


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"stages": 3, "raw_stages": 4}, "232448"),
        ({"stages": 0}, "stages=0"),
        ({"raw_stages": 1}, "raw_stages=1"),
        ({"consumer_regs": 244}, "consumer_regs=244"),
        ({"consumer_regs": 250}, "multiple of 8"),
        ({"follower_chunks": 8}, "follower_chunks=8"),
        ({"follower_chunks": 2, "stages": 1}, "needs stages >= 2"),
    ],
)
def test_launch_options_out_of_range(kwargs: dict[str, int], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        gluon_attention.launch_options(**kwargs)


def _last_kernel() -> Any:
    return triton_attention.LAST_KERNEL["sparse_mla"]


def _other_ring(topk: int | None) -> dict[str, int]:
    """The ring depths a list kind does not get by default (both stay covered for both)."""
    return dict(gluon_attention.SELECTED_OPTIONS) if topk is None else {}


@pytest.mark.gpu
@needs_hopper
@pytest.mark.parametrize("other_ring", [False, True], ids=["default-ring", "other-ring"])
@pytest.mark.parametrize("n_split", [1, 3])
@pytest.mark.parametrize("with_sink", [True, False])
@pytest.mark.parametrize("topk", [None, 512], ids=["hca", "csa"])
def test_matches_reference_at_odd_lengths(
    n_split: int, with_sink: bool, topk: int | None, other_ring: bool
) -> None:
    # 1 token (window only), around the first compression boundaries, and a long sequence;
    # CSA lists carry -1 holes. SWA pages of 16, so window tiles cross pages.
    ratio = 128 if topk is None else 4
    lengths = [1, 31, 127, 128, 129, 385, 70001]
    case = make_attention_case(lengths, 64, ratio, topk, 41, torch.device("cuda"), swa_page=16)
    if not with_sink:
        case["sink"] = None
    ws = _other_ring(topk) if other_ring else None
    out, lse = _run(case, n_split=n_split, warp_specialized=True, ws_options=ws)
    _check(case, out, lse)
    assert _last_kernel().name == "_sparse_mla_ws_kernel"


@pytest.mark.gpu
@needs_hopper
@pytest.mark.parametrize("follower_chunks", [1, 3, 7])
@pytest.mark.parametrize("ring", [(2, 4), (3, 3), (2, 2)], ids=["2-4", "3-3", "2-2"])
@pytest.mark.parametrize("n_split", [1, 3])
@pytest.mark.parametrize("topk", [None, 512], ids=["hca", "csa"])
def test_follower_dequantisation_matches_reference(
    follower_chunks: int, ring: tuple[int, int], n_split: int, topk: int | None
) -> None:
    # The follower dequantises the last chunks and RoPE of the next tile: same lengths as the
    # odd-length test (a split with no tile, one tile, many), with a raw ring of 2 where the
    # producer waits on the follower's raw_free for every stage it reuses.
    ratio = 128 if topk is None else 4
    lengths = [1, 31, 127, 128, 129, 385, 70001]
    case = make_attention_case(lengths, 64, ratio, topk, 44, torch.device("cuda"), swa_page=16)
    ws = {"stages": ring[0], "raw_stages": ring[1], "follower_chunks": follower_chunks}
    out, lse = _run(case, n_split=n_split, warp_specialized=True, ws_options=ws)
    _check(case, out, lse)
    assert _last_kernel().name == "_sparse_mla_ws_kernel"


@pytest.mark.gpu
@needs_hopper
@pytest.mark.parametrize("other_ring", [False, True], ids=["default-ring", "other-ring"])
@pytest.mark.parametrize(
    ("topk", "queries", "n_split"), [(1024, 2, 2), (None, 200, 1)], ids=["pro-csa-mtp2", "prefill"]
)
def test_matches_reference_with_two_head_blocks(
    topk: int | None, queries: int, n_split: int, other_ring: bool
) -> None:
    ratio = 128 if topk is None else 4
    case = make_attention_case(
        [5000, 131072], 128, ratio, topk, 42, torch.device("cuda"), queries_per_seq=queries
    )
    ws = _other_ring(topk) if other_ring else None
    out, lse = _run(case, n_split=n_split, warp_specialized=True, ws_options=ws)
    _check(case, out, lse)


@pytest.mark.gpu
@needs_hopper
def test_is_the_default_on_hopper_unless_tuned() -> None:
    case = make_attention_case([70001, 300], 64, 4, 512, 43, torch.device("cuda"))
    out, lse = _run(case)
    _check(case, out, lse)
    kernel = _last_kernel()
    assert kernel.name == "_sparse_mla_ws_kernel"
    # Selected (CSA) lists get SELECTED_OPTIONS' deeper bf16 ring, dense (HCA) ones the
    # launch_options defaults.
    assert kernel.metadata.shared >= gluon_attention.shared_bytes(3, 3)
    hca = make_attention_case([70001, 300], 64, 128, None, 43, torch.device("cuda"))
    _check(hca, *_run(hca))
    assert gluon_attention.shared_bytes(2, 4) <= _last_kernel().metadata.shared
    assert _last_kernel().metadata.shared < gluon_attention.shared_bytes(3, 3)
    _run(case, block_h=32)
    assert _last_kernel().name == "_sparse_mla_chunked_kernel"
    _run(case, warp_specialized=False)
    assert _last_kernel().name == "_sparse_mla_chunked_kernel"
    # Triton-only arguments do not change the Gluon launch (its grid has one program per
    # 64-head block whatever dv_split says).
    out, lse = _run(case, warp_specialized=True, dv_split=2, block_h=32)
    _check(case, out, lse)
    assert _last_kernel().name == "_sparse_mla_ws_kernel"


def _moved(cache: torch.Tensor, lead: int, extra: int) -> torch.Tensor:
    """`cache` copied into a wider allocation: `lead` bytes before each row, rows `extra` wider."""
    pages, width = cache.shape
    storage = torch.zeros(pages, lead + width + extra, dtype=torch.uint8, device=cache.device)
    view = storage[:, lead : lead + width]
    view.copy_(cache)
    return view


@pytest.mark.parametrize(("lead", "extra"), [(8, 0), (0, 8), (2, 0)])
def test_caches_without_16_byte_aligned_records_do_not_take_the_gluon_kernel(
    lead: int, extra: int, monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    # The Gluon producer copies 16 bytes per cp.async (bb1efe4), which needs every record
    # 16-byte aligned; check_paged_cache accepts any even offset and page stride (a vLLM
    # cache slice, rows of page * 584 bytes). Such caches must use the Triton kernel (default)
    # or be refused (warp_specialized=True), not reach the Gluon kernel. On CPU the Triton
    # kernel runs in the interpreter; on the H200 the default dispatch is checked for real.
    case = make_attention_case([300], 64, 128, None, 3, device, swa_page=2)
    case["swa_cache"] = _moved(case["swa_cache"], lead, extra)
    assert gluon_attention.cache_alignment_reason(case["swa_cache"], case["comp_cache"])
    monkeypatch.setattr(gluon_attention, "unsupported_reason", lambda *_a: None)
    with pytest.raises(ValueError, match=r"cannot run: swa_cache .*16"):
        sparse_mla_triton(**case, warp_specialized=True)
    _check(case, *_run(case, n_split=2))  # default: the Triton kernel, same result


def test_aligned_caches_pass_the_alignment_check() -> None:
    case = make_attention_case([300], 64, 128, None, 3, torch.device("cpu"), swa_page=2)
    assert gluon_attention.cache_alignment_reason(case["swa_cache"], case["comp_cache"]) is None
    wide = _moved(case["comp_cache"], 16, 576)  # a vLLM-style padded block stride
    assert gluon_attention.cache_alignment_reason(case["swa_cache"], wide) is None
    one_page = case["comp_cache"][:1, : 2 * 584 + 8]  # one page: its stride is never used
    assert gluon_attention.cache_alignment_reason(one_page, case["comp_cache"]) is None
