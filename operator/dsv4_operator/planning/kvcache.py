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
alignment); window pages hold 64 tokens; state pages hold 4 (CSA) or 8 (HCA) slots. Admission
(`max_admission_blocks_per_request`): a request needs its compressed blocks for `max_model_len`
plus,
for each window/state group, blocks for `min(window - 1 + mnbt, max_model_len)` tokens, plus one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from dsv4_operator.planning.models import LayerKind, ModelSpec

__all__ = [
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

_WINDOW_PAGE_TOKENS = 64  # SWA block = 64 tokens (S3)
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
    """

    block_bytes: int
    raw_bytes_per_token: float
    window_page_bytes: int
    csa_state_page_bytes: int
    hca_state_page_bytes: int
    window_layers: int
    csa_layers: int
    hca_layers: int

    @property
    def bytes_per_token(self) -> float:
        """Paged growth per token, bytes (block bytes / 256)."""
        return self.block_bytes / BLOCK_TOKENS

    def growth_bytes(self, tokens: int) -> int:
        """Bytes of the compressed blocks a sequence of `tokens` tokens occupies."""
        return -(-tokens // BLOCK_TOKENS) * self.block_bytes

    def steady_state_bytes(self) -> int:
        """Fixed bytes per request in steady decode: window + compressor rings (facts §7.3)."""
        return (
            self.window_layers * _STEADY_WINDOW_PAGES * self.window_page_bytes
            + self.csa_layers * _STEADY_CSA_PAGES * self.csa_state_page_bytes
            + self.hca_layers * _STEADY_HCA_PAGES * self.hca_state_page_bytes
        )

    def admission_state_bytes(
        self, max_num_batched_tokens: int, sliding_window: int, max_model_len: int | None = None
    ) -> int:
        """Fixed bytes vLLM reserves per request at admission (`max_admission_blocks_per_request`).

        Each window/state group is sized for `min(span - 1 + m, max_model_len)` tokens plus one
        block, where the span is the window (128) for window pages and HCA rings and 8 for CSA
        rings.

        Args:
            max_num_batched_tokens: `--max-num-batched-tokens` m, tokens.
            sliding_window: window length, tokens (128).
            max_model_len: context cap, tokens (None: no cap).

        Returns:
            `L(ceil(a/64)+1) win + n4(ceil(b/4)+1) csa_state + n128(ceil(a/8)+1) hca_state` with
            `a = min(W-1+m, T)`, `b = min(7+m, T)`, bytes (facts §5.3 item 6, §7.3).
        """
        m, w = max_num_batched_tokens, sliding_window
        cap = max_model_len if max_model_len is not None else w + 7 + m
        a, b = min(w - 1 + m, cap), min(7 + m, cap)
        win = (-(-a // _WINDOW_PAGE_TOKENS) + 1) * self.window_page_bytes
        csa = (-(-b // _CSA_STATE_SLOTS) + 1) * self.csa_state_page_bytes
        hca = (-(-a // _HCA_STATE_SLOTS) + 1) * self.hca_state_page_bytes
        return self.window_layers * win + self.csa_layers * csa + self.hca_layers * hca

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
    return KvGeometry(
        block_bytes=block,
        raw_bytes_per_token=growth_bytes_per_token(model.compress_ratios, e_main, e_idx),
        window_page_bytes=page_bytes(_WINDOW_PAGE_TOKENS, e_main),
        csa_state_page_bytes=page_bytes(_CSA_STATE_SLOTS, _CSA_MAIN_STATE)
        + page_bytes(_CSA_STATE_SLOTS, _CSA_INDEX_STATE),
        hca_state_page_bytes=page_bytes(_HCA_STATE_SLOTS, _HCA_STATE),
        window_layers=model.num_layers + (model.num_mtp_layers if mtp else 0),
        csa_layers=n4,
        hca_layers=n128,
    )
