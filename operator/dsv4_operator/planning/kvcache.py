"""KV cache of DeepSeek-V4's hybrid attention: bytes per entry, per token, per block, per request.

One 512-d vector per token is both K and V for all heads (a single KV head), so the cache holds one
entry per compressed position per layer, whatever the head count (facts §2):

- SWA-only layers keep only the last `sliding_window` (128) raw tokens: no growth.
- CSA layers (ratio 4) grow by `e_main/4 + e_idx/4` bytes per token (main entry + indexer key).
- HCA layers (ratio 128) grow by `e_main/128` bytes per token.
- Every layer holds a 128-token window, CSA layers a compressor state ring of 8 raw tokens (main +
  indexer) and HCA layers a ring of 128 raw tokens (fp32): a fixed cost per request.

Entry sizes (facts §2.1): main `fp8_ds_mla` 584 B (448 e4m3 NoPE + 64 bf16 RoPE + 7 UE8M0
scales + 1 pad), main bf16 1024 B; indexer fp8 132 B (128 e4m3 + fp32 scale), mxfp4 68 B, bf16
256 B (used only by the vLLM blog's accounting). Compressor state per raw-token slot, fp32: CSA main
2x2x512x4 = 8192 B, CSA indexer 2x2x128x4 = 2048 B, HCA 2x1x512x4 = 4096 B
(vLLM `deepseek_compressor.py`, S4).

vLLM paging (S5, `vllm/v1/kv_cache_interface.py`): 256-token blocks (`--block-size 256`); a page of
a compressed layer holds 256/ratio entries and is rounded up to a multiple of 576 B (FlashMLA
alignment); window pages hold 64 tokens; state pages hold 4 (CSA) or 8 (HCA) slots.

One shared block pool (vLLM 0.33.0, read in its wheel): DeepSeek-V4's indexer backend asks for a
block-outermost layout (`DeepseekV4IndexerBackend.supported_kv_cache_layouts`, BLHNC/BLNHC), so
`get_kv_cache_groups` packs the layers with `_get_packed_kv_cache_groups`
(vllm/v1/core/kv_cache_planning.py): one bucket per cache type (compressed MLA + indexer pages;
64-token window pages; CSA compressor states, main and indexer; HCA states), buckets whose page
sizes repeat 1:1 split into groups of `_approximate_gcd` repeats, and every group draws its block
ids from the same pool, each block holding the widest group's pages
(`_get_kv_cache_bytes_per_block`: `pool_block_bytes`). So a window or state block costs as much
as a 256-token compressed block: "a request consumes the sum of the per-group block counts, i.e.
bytes_per_block * total_blocks" (`_max_memory_usage_bytes_from_groups`, the start-up check;
`get_max_concurrency_for_kv_cache_config` the same).

Admission (`SlidingWindowSpec.max_admission_blocks_per_request`): a request needs its compressed
blocks for `max_model_len` plus, in each window/state group, blocks for
`min(window - 1 + in-flight tokens, max_model_len)` tokens, plus one. In-flight tokens are
`VllmConfig.max_in_flight_tokens` = `max_concurrent_batches` x mnbt: 2 x mnbt with async
scheduling, which vLLM 0.33.0 turns on by default (`VllmConfig.max_concurrent_batches`,
vllm/config/vllm.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from dsv4_operator.planning.models import LayerKind, ModelSpec

__all__ = [
    "ASYNC_SCHEDULING_BATCHES",
    "BLOCK_TOKENS",
    "INDEXER_ENTRY_BYTES",
    "MAIN_ENTRY_BYTES",
    "PAGE_ALIGN_BYTES",
    "KvGeometry",
    "growth_bytes_per_token",
    "kv_geometry",
    "page_bytes",
]

BLOCK_TOKENS = 256
"""vLLM block size required by DeepSeek-V4 (`--block-size 256`, S3, R1)."""

PAGE_ALIGN_BYTES = 576
"""FlashMLA page alignment: compressed pages are rounded up to a multiple of 576 B (S5)."""

MAIN_ENTRY_BYTES: dict[str, int] = {"fp8": 584, "bf16": 1024}
"""Bytes per main KV entry by `--kv-cache-dtype` (facts §2.1)."""

INDEXER_ENTRY_BYTES: dict[str, int] = {"fp8": 132, "mxfp4": 68, "bf16": 256}
"""Bytes per lightning-indexer key by indexer cache dtype (facts §2.1)."""

ASYNC_SCHEDULING_BATCHES = 2
"""Concurrent batches vLLM 0.33.0 keeps in flight with async scheduling, its default: PP size + 1
on Model Runner V2, 2 on V1 without PP (`VllmConfig.max_concurrent_batches`); the admission of
window and state groups holds this many batches of mnbt tokens (`max_in_flight_tokens`)."""

_WINDOW_PAGE_TOKENS = 64  # SWA block = 64 tokens (S3)
_CSA_STATE_WINDOW = 8  # C4 compressor state window: coff 2 x ratio 4 (CompressorStateCache, S4)
_CSA_STATE_SLOTS, _HCA_STATE_SLOTS = 4, 8  # compressor-state slots per page (facts §7.3)
_CSA_MAIN_STATE, _CSA_INDEX_STATE, _HCA_STATE = 8192, 2048, 4096  # fp32 bytes per slot (S4)
_STEADY_WINDOW_PAGES, _STEADY_CSA_PAGES, _STEADY_HCA_PAGES = 3, 3, 17  # facts §7.3


def growth_bytes_per_token(
    compress_ratios: Sequence[int], main_entry_bytes: int, indexer_entry_bytes: int
) -> float:
    """Unpaged KV growth per token over all layers, bytes (facts §7.2).

    Args:
        compress_ratios: one ratio per layer: 0 (SWA only), 4 (CSA) or 128 (HCA).
        main_entry_bytes: bytes per main entry (584 fp8_ds_mla, 1024 bf16).
        indexer_entry_bytes: bytes per indexer key (132 fp8, 68 mxfp4, 256 bf16 accounting).

    Returns:
        Bytes per token (fractional: HCA adds e_main/128).

    Raises:
        ValueError: for a ratio other than 0, 4 or 128.
    """
    total = Fraction(0)
    for ratio in compress_ratios:
        kind = LayerKind(ratio)
        if kind is LayerKind.CSA:
            total += Fraction(main_entry_bytes + indexer_entry_bytes, 4)
        elif kind is LayerKind.HCA:
            total += Fraction(main_entry_bytes, 128)
    return float(total)


def page_bytes(entries: int, entry_bytes: int) -> int:
    """Bytes of one page of `entries` entries, rounded up to the 576-B alignment (S5)."""
    raw = entries * entry_bytes
    return -(-raw // PAGE_ALIGN_BYTES) * PAGE_ALIGN_BYTES


@dataclass(frozen=True, slots=True)
class KvGeometry:
    """Paged KV cache sizes of one model and cache dtype, per GPU holding a request.

    Attributes:
        block_bytes: bytes of one 256-token block across all compressed layers (main + indexer).
        raw_bytes_per_token: unpaged growth per token, bytes (for reports).
        window_page_bytes: one 64-token window page of one layer.
        csa_state_page_bytes: one CSA compressor state page (main + indexer) of one layer.
        hca_state_page_bytes: one HCA compressor state page of one layer.
        window_layers: layers that keep a window (all layers, plus the MTP layer when speculating).
        csa_layers: CSA layer count.
        hca_layers: HCA layer count.
        pool_block_bytes: bytes one block id of vLLM's shared pool holds: the widest KV-cache
            group's pages (module docstring); at least `block_bytes`.
        window_groups: KV-cache groups the window layers are split into.
        csa_state_groups: groups of the CSA compressor states (main and indexer).
        hca_state_groups: groups of the HCA compressor states.
    """

    block_bytes: int
    raw_bytes_per_token: float
    window_page_bytes: int
    csa_state_page_bytes: int
    hca_state_page_bytes: int
    window_layers: int
    csa_layers: int
    hca_layers: int
    pool_block_bytes: int = 0
    window_groups: int = 1
    csa_state_groups: int = 1
    hca_state_groups: int = 1

    @property
    def bytes_per_token(self) -> float:
        """Paged growth per token, bytes (block bytes / 256)."""
        return self.block_bytes / BLOCK_TOKENS

    @property
    def pool_block(self) -> int:
        """Bytes per block id of the shared pool (`pool_block_bytes`, else `block_bytes`)."""
        return max(self.pool_block_bytes, self.block_bytes)

    def growth_bytes(self, tokens: int) -> int:
        """Bytes of the compressed blocks a sequence of `tokens` tokens occupies (pool blocks)."""
        return -(-tokens // BLOCK_TOKENS) * self.pool_block

    def steady_state_bytes(self) -> int:
        """Fixed bytes per request in steady decode: window + compressor rings (facts §7.3)."""
        return (
            self.window_layers * _STEADY_WINDOW_PAGES * self.window_page_bytes
            + self.csa_layers * _STEADY_CSA_PAGES * self.csa_state_page_bytes
            + self.hca_layers * _STEADY_HCA_PAGES * self.hca_state_page_bytes
        )

    def admission_state_blocks(
        self,
        max_num_batched_tokens: int,
        sliding_window: int,
        max_model_len: int | None = None,
        *,
        concurrent_batches: int = ASYNC_SCHEDULING_BATCHES,
    ) -> int:
        """Pool blocks one request holds in the window and state groups at admission.

        Each group of a window/state bucket is sized by vLLM's
        `SlidingWindowSpec.max_admission_blocks_per_request`: `min(span - 1 + F, max_model_len)`
        tokens in blocks of the group's block size, plus one, with F the in-flight tokens
        `concurrent_batches` x m. The span is the window (128) for the 64-token window blocks and
        the 8-slot HCA state blocks, and 8 for the 4-slot CSA state blocks.

        Args:
            max_num_batched_tokens: `--max-num-batched-tokens` m, tokens.
            sliding_window: window length, tokens (128).
            max_model_len: context cap, tokens (None: no cap).
            concurrent_batches: `VllmConfig.max_concurrent_batches` (2 with async scheduling,
                vLLM 0.33.0's default; 1 without).

        Returns:
            `Gw(ceil(a/64)+1) + G4(ceil(b/4)+1) + G128(ceil(a/8)+1)` blocks with
            `a = min(W-1+F, T)`, `b = min(7+F, T)` and G the groups of each bucket.
        """
        f, w = concurrent_batches * max_num_batched_tokens, sliding_window
        cap = max_model_len if max_model_len is not None else w + _CSA_STATE_WINDOW + f
        a, b = min(w - 1 + f, cap), min(_CSA_STATE_WINDOW - 1 + f, cap)
        win = self.window_groups * (-(-a // _WINDOW_PAGE_TOKENS) + 1)
        csa = self.csa_state_groups * (-(-b // _CSA_STATE_SLOTS) + 1) if self.csa_layers else 0
        hca = self.hca_state_groups * (-(-a // _HCA_STATE_SLOTS) + 1) if self.hca_layers else 0
        return win + csa + hca

    def admission_state_bytes(
        self,
        max_num_batched_tokens: int,
        sliding_window: int,
        max_model_len: int | None = None,
        *,
        concurrent_batches: int = ASYNC_SCHEDULING_BATCHES,
    ) -> int:
        """Fixed bytes vLLM reserves per request at admission, beyond the compressed blocks.

        `admission_state_blocks` x `pool_block`: every block id of the shared pool holds the
        widest group's pages, whichever group draws it (`_max_memory_usage_bytes_from_groups`,
        vLLM 0.33.0 vllm/v1/core/kv_cache_planning.py). Arguments as `admission_state_blocks`.

        Returns:
            Bytes. Flash at mnbt 8,192 and 1,048,576 tokens: 10,778 - 4,096 = 6,682 blocks x
            1,002,240 B = 6,696,967,680 B, as vLLM 0.33.0's own sizing code gives it.
        """
        blocks = self.admission_state_blocks(
            max_num_batched_tokens,
            sliding_window,
            max_model_len,
            concurrent_batches=concurrent_batches,
        )
        return blocks * self.pool_block

    def request_bytes(self, tokens: int, state_bytes: int) -> int:
        """Bytes of one request of `tokens` tokens with the given fixed state."""
        return self.growth_bytes(tokens) + state_bytes


def kv_geometry(
    model: ModelSpec, kv_cache_dtype: str, indexer_dtype: str = "fp8", *, mtp: bool = False
) -> KvGeometry:
    """Paged sizes for a model, main cache dtype and indexer cache dtype.

    Args:
        model: catalog entry.
        kv_cache_dtype: `fp8` (fp8_ds_mla, 584 B) or `bf16` (1024 B).
        indexer_dtype: `fp8` (132 B, vLLM default), `mxfp4` (68 B) or `bf16` (256 B).
        mtp: MTP speculative decoding on: the MTP layer keeps a window too.

    Raises:
        KeyError: for an unknown dtype.
    """
    e_main = MAIN_ENTRY_BYTES[kv_cache_dtype]
    e_idx = INDEXER_ENTRY_BYTES[indexer_dtype]
    n4, n128 = model.count(LayerKind.CSA), model.count(LayerKind.HCA)
    entries4, entries128 = BLOCK_TOKENS // 4, BLOCK_TOKENS // 128
    block = n4 * (page_bytes(entries4, e_main) + page_bytes(entries4, e_idx))
    block += n128 * page_bytes(entries128, e_main)
    window_layers = model.num_layers + (model.num_mtp_layers if mtp else 0)
    win_page = page_bytes(_WINDOW_PAGE_TOKENS, e_main)
    csa_main, csa_index = (
        page_bytes(_CSA_STATE_SLOTS, _CSA_MAIN_STATE),
        page_bytes(_CSA_STATE_SLOTS, _CSA_INDEX_STATE),
    )
    hca_page = page_bytes(_HCA_STATE_SLOTS, _HCA_STATE)
    buckets: list[tuple[dict[int, int], bool]] = [
        # (layers per page size, whether it is a sliding-window bucket)
        (
            _pages(
                (page_bytes(entries4, e_main), n4),
                (page_bytes(entries4, e_idx), n4),
                (page_bytes(entries128, e_main), n128),
            ),
            False,
        ),
        (_pages((win_page, window_layers)), True),
        (_pages((csa_main, n4), (csa_index, n4)), True),
        (_pages((hca_page, n128)), True),
    ]
    groups, pool_block = _packed_groups(buckets)
    return KvGeometry(
        block_bytes=block,
        raw_bytes_per_token=growth_bytes_per_token(model.compress_ratios, e_main, e_idx),
        window_page_bytes=win_page,
        csa_state_page_bytes=csa_main + csa_index,
        hca_state_page_bytes=hca_page,
        window_layers=window_layers,
        csa_layers=n4,
        hca_layers=n128,
        pool_block_bytes=pool_block,
        window_groups=groups[1],
        csa_state_groups=groups[2],
        hca_state_groups=groups[3],
    )


def _pages(*pairs: tuple[int, int]) -> dict[int, int]:
    """Layers per page size of one bucket from (page bytes, layers) pairs, equal pages summed."""
    out: dict[int, int] = {}
    for page, layers in pairs:
        if layers > 0:
            out[page] = out.get(page, 0) + layers
    return out


def _approximate_gcd(values: Sequence[int], lower_bound: int) -> int:
    """The repeats per group that pad the buckets least, as vLLM 0.33.0's `_approximate_gcd`.

    vllm/v1/core/kv_cache_planning.py: the d in [lower_bound, max(values)] with the least
    padding sum((d - x % d) % d), ties to the larger d.
    """
    best, best_pad = lower_bound, None
    for d in range(max(1, lower_bound), max(values) + 1):
        pad = sum((d - x % d) % d for x in values)
        if best_pad is None or pad <= best_pad:
            best, best_pad = d, pad
    return best


def _packed_groups(buckets: Sequence[tuple[dict[int, int], bool]]) -> tuple[list[int], int]:
    """Groups per bucket and bytes per pool block, as vLLM 0.33.0 packs DeepSeek-V4's caches.

    A mirror of `_get_packed_kv_cache_groups` and `_get_kv_cache_bytes_per_block`
    (vllm/v1/core/kv_cache_planning.py) for buckets given as layers per page size: a bucket is
    balanced when every page size has as many layers; the largest balanced bucket of several
    page sizes sets the least repeats per group, `_approximate_gcd` over the balanced buckets'
    layer counts picks the repeats, and a balanced bucket splits into ceil(layers / repeats)
    groups (an unbalanced one stays whole). A group's block holds its layers' pages; the pool's
    block holds the widest group's. Without a balanced bucket of several page sizes, vLLM
    treats sliding-window buckets as state buckets: each group holds as many layers as fit the
    widest other bucket's block.

    Args:
        buckets: per bucket, its layers per page size (bytes -> layers) and whether it is a
            sliding-window bucket; an empty bucket gets 0 groups.

    Returns:
        (groups per bucket, bytes per pool block).
    """
    balanced = [len(set(b.values())) == 1 for b, _ in buckets]
    floors = [
        max(b.values()) for (b, _), ok in zip(buckets, balanced, strict=True) if ok and len(b) > 1
    ]
    repeats = None
    if floors:
        counts = [max(b.values()) for (b, _), ok in zip(buckets, balanced, strict=True) if ok and b]
        repeats = _approximate_gcd(counts, max(floors))

    def widest(pages: dict[int, int], n: int) -> int:
        return sum(-(-layers // n) * page for page, layers in pages.items())

    groups = [
        -(-max(b.values()) // repeats) if b and ok and repeats else (1 if b else 0)
        for (b, _), ok in zip(buckets, balanced, strict=True)
    ]
    state = [sliding and repeats is None for _, sliding in buckets]
    anchor = max(
        (
            widest(b, sum(b.values()) if is_state else n)
            for (b, _), n, is_state in zip(buckets, groups, state, strict=True)
            if b
        ),
        default=0,
    )
    for i, ((b, _), is_state) in enumerate(zip(buckets, state, strict=True)):
        if b and is_state:
            per_block = max(anchor // next(iter(b)), 1)
            groups[i] = max(groups[i], -(-sum(b.values()) // per_block))
    pool_block = max(
        (widest(b, n) for (b, _), n in zip(buckets, groups, strict=True) if b), default=0
    )
    return groups, pool_block
