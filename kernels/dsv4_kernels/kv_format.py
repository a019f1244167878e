"""Byte layouts of the DeepSeek-V4 caches, with plain PyTorch (de)quantisation.

fp8_ds_mla main-KV entry, 584 bytes (sizes from `../shared/docs/deepseek-v4-facts.md` §2.1),
in two layouts:

- an **entry** (`quantize_fp8_ds_mla`, the compressor's fp8 output): one token's 584 bytes
  together, as below;
- a **paged cache** (what the attention kernels read), FlashMLA's `MODEL1_FP8Sparse` / vLLM's V4
  `fp8_ds_mla` block layout: FlashMLA `tests/quant.py` (`quantize_k_cache`, MODEL1) and vLLM
  `fused_compress_quant_cache.py` (`_fused_kv_compress_norm_rope_insert_sparse_attn`: "[0,
  bs*576): token data (448 fp8 + 128 bf16 each); [bs*576, +bs*8): uint8 UE8M0 scales (7 real +
  1 pad each)"). A page of `page` tokens is `page` 576-byte records (bytes 0..575 below), then
  `page` 8-byte scale records (bytes 576..583 below); vLLM pads a compressed page to a
  multiple of 576 B (`page_bytes`; its SWA blocks are 64 x 584 B, facts §5.3 item 5). A cache
  is `[pages, row bytes]` uint8: rows of at least `page * 584` bytes whose row stride, the
  page stride, is at least that too; width, page stride and storage offset even
  (`check_paged_cache`). A vLLM cache block is read in place: pass vLLM's
  `[num_blocks, block_size, 584]` tensor as `cache.flatten(1)` (a view, padded blocks too).
  Where the cache's start and page stride are multiples of 16 (vLLM's blocks: 576 = 36 x 16,
  37,376 = 2,336 x 16) every token's record starts 16-byte aligned, as the Gluon attention
  kernel needs
  (`sparse_mla.gluon_attention.cache_alignment_reason`; the Triton kernel needs no more than
  the check). `to_flashmla_blocks` / `write_entries` / `read_entries` convert.

| bytes     | content                                                                 |
|-----------|-------------------------------------------------------------------------|
| 0..447    | NoPE dims 0..447 as float8 e4m3 (OCP e4m3fn, max 448)                   |
| 448..575  | RoPE dims 448..511 as 64 bfloat16, little-endian                        |
| 576..582  | 7 UE8M0 scales, one per 64-wide NoPE tile: scale = 2 ** (byte - 127)    |
| 583       | pad (0)                                                                 |

Value of NoPE dim d: `e4m3[d] * 2 ** (scales[d // 64] - 127)`. The scale of a tile is the
smallest power of two with `amax / scale <= 448` (amax floored at 1e-4), as DeepSeek's
`act_quant` with `scale_fmt="ue8m0"` and block 64 does.

Indexer key page (FP8, 132 bytes per key, DeepGEMM / vLLM paged layout): a page of P keys is
`P * 128` e4m3 bytes (key-major) followed by `P` float32 scales; value = e4m3 * scale. Layout and
scale are vLLM's: the scale of a key is the power of two 2 ** ceil(log2(max(amax, 1e-4) / 448))
stored as a float32 (vLLM's V4 `_fused_kv_compress_norm_rope_insert_indexer_attn`, and V3.2's
`indexer_k_quant_and_cache` with scale_fmt "ue8m0"; DeepSeek's `act_quant` with
`scale_fmt="ue8m0"` and block 128), so `quantize_index_keys` gives vLLM's e4m3 codes and scales
for the same (bf16) keys.
"""

from __future__ import annotations

import torch

HEAD_DIM = 512
"""q = k = v head dim of V4 (model config `head_dim`)."""
ROPE_DIM = 64
"""RoPE part, the last 64 dims (`qk_rope_head_dim`)."""
NOPE_DIM = HEAD_DIM - ROPE_DIM
"""NoPE part, 448 dims."""
QUANT_TILE = 64
"""Width of one UE8M0-scaled NoPE tile."""
N_SCALES = NOPE_DIM // QUANT_TILE
"""7 scales per entry."""
ENTRY_BYTES = NOPE_DIM + 2 * ROPE_DIM + N_SCALES + 1
"""584 bytes per fp8_ds_mla entry."""
ROPE_OFFSET = NOPE_DIM
"""Byte offset of the bf16 RoPE part (448)."""
SCALE_OFFSET = NOPE_DIM + 2 * ROPE_DIM
"""Byte offset of the 7 UE8M0 scales (576)."""
FP8_MAX = 448.0
"""Largest finite float8 e4m3fn value."""
AMAX_FLOOR = 1e-4
"""amax floor of DeepSeek's act_quant (keeps all-zero tiles finite)."""
INDEX_DIM = 128
"""Indexer head dim (`index_head_dim`)."""
INDEX_KEY_BYTES = INDEX_DIM + 4
"""132 bytes per FP8 index key (128 e4m3 + one float32 scale)."""

assert ENTRY_BYTES == 584


def ue8m0_scale_exponent(amax: torch.Tensor, floor: float = AMAX_FLOOR) -> torch.Tensor:
    """Exponent e of the UE8M0 scale 2**e for tiles whose absolute maximum is ``amax``.

    Args:
        amax: [...], float32, the per-tile max |x| (>= 0).
        floor: the amax floor: 1e-4 for KV entries and index keys (vLLM's cache inserts);
            1e-10 for vLLM's index queries (`_fused_indexer_q_rope_quant_kernel`).

    Returns:
        [...], int32: ``ceil(log2(max(amax, floor) / 448))``, computed exactly from the float
        bits (`torch.log2` of a value a few ulps above a power of two rounds down to it).
    """
    y = torch.clamp(amax.float(), min=floor) / FP8_MAX
    bits = y.view(torch.int32)
    exp = ((bits >> 23) & 0xFF) - 127
    return (exp + ((bits & 0x7FFFFF) != 0).to(torch.int32)).to(torch.int32)


def pow2(exp: torch.Tensor) -> torch.Tensor:
    """2 ** exp as float32, built from its bits (exact; no `torch.exp2` rounding).

    Args:
        exp: [...], int32 exponents in [-126, 127] (normal floats).

    Returns:
        [...], float32.
    """
    return ((exp + 127) << 23).view(torch.float32)


def quantize_fp8_ds_mla(kv: torch.Tensor) -> torch.Tensor:
    """Pack bf16/fp32 KV rows into the 584-byte fp8_ds_mla layout (module docstring).

    Args:
        kv: [..., 512], bfloat16 or float32; dims 448..511 are the (already rotated) RoPE part.

    Returns:
        [..., 584], uint8.
    """
    if kv.shape[-1] != HEAD_DIM:
        raise ValueError(f"kv last dim must be {HEAD_DIM}, got {kv.shape[-1]}")
    lead = kv.shape[:-1]
    x = kv.float()
    nope = x[..., :NOPE_DIM].reshape(*lead, N_SCALES, QUANT_TILE)
    exp = ue8m0_scale_exponent(nope.abs().amax(dim=-1))
    scaled = nope * torch.pow(2.0, -exp.float()).unsqueeze(-1)
    q8 = torch.clamp(scaled, -FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    out = torch.zeros(*lead, ENTRY_BYTES, dtype=torch.uint8, device=kv.device)
    out[..., :NOPE_DIM] = q8.reshape(*lead, NOPE_DIM).view(torch.uint8)
    rope = x[..., NOPE_DIM:].to(torch.bfloat16).contiguous()
    out[..., ROPE_OFFSET:SCALE_OFFSET] = rope.view(torch.uint8).reshape(*lead, 2 * ROPE_DIM)
    out[..., SCALE_OFFSET : SCALE_OFFSET + N_SCALES] = (exp + 127).to(torch.uint8)
    return out


def dequantize_fp8_ds_mla(entries: torch.Tensor) -> torch.Tensor:
    """Unpack fp8_ds_mla entries to float32 rows (exact: every stored value is representable).

    Args:
        entries: [..., 584], uint8.

    Returns:
        [..., 512], float32.
    """
    if entries.shape[-1] != ENTRY_BYTES or entries.dtype != torch.uint8:
        raise ValueError(f"entries must be [..., {ENTRY_BYTES}] uint8, got {entries.shape}")
    lead = entries.shape[:-1]
    e = entries.contiguous()
    nope = e[..., :NOPE_DIM].view(torch.float8_e4m3fn).float()
    exp = e[..., SCALE_OFFSET : SCALE_OFFSET + N_SCALES].to(torch.int32) - 127
    scale = torch.pow(2.0, exp.float()).repeat_interleave(QUANT_TILE, dim=-1)
    rope = e[..., ROPE_OFFSET:SCALE_OFFSET].contiguous().view(torch.bfloat16).float()
    return torch.cat([nope * scale, rope], dim=-1).reshape(*lead, HEAD_DIM)


FLASHMLA_ALIGN = 576
"""FlashMLA / vLLM pad each fp8_ds_mla block to a multiple of 576 bytes (facts §5.3 item 5)."""
RECORD_BYTES = NOPE_DIM + 2 * ROPE_DIM
"""576: one token's NoPE e4m3 + RoPE bf16 bytes, the record FlashMLA stores per token."""
SCALE_RECORD_BYTES = ENTRY_BYTES - RECORD_BYTES
"""8: one token's 7 UE8M0 scales and the pad byte."""


def flashmla_block_bytes(block_size: int) -> int:
    """Bytes of one FlashMLA / vLLM fp8_ds_mla block of `block_size` tokens (padded to 576)."""
    return -(-block_size * ENTRY_BYTES // FLASHMLA_ALIGN) * FLASHMLA_ALIGN


def to_flashmla_blocks(entries: torch.Tensor, block_size: int) -> torch.Tensor:
    """Repack [N, 584] entries into FlashMLA / vLLM blocks (what `paged_cache` writes).

    Block layout (FlashMLA `tests/quant.py` MODEL1, vLLM `fused_compress_quant_cache.py`):
    `block_size` records of 576 bytes (NoPE e4m3, RoPE bf16), then `block_size` records of
    8 bytes (7 UE8M0 scales, pad), then zeros up to `flashmla_block_bytes(block_size)`.

    Args:
        entries: [N, 584], uint8, N a multiple of block_size; slot i goes to block
            i // block_size, token i % block_size.
        block_size: tokens per block (vLLM: 64 for SWA and CSA, 2 for HCA).

    Returns:
        [N // block_size, flashmla_block_bytes(block_size)], uint8.

    Raises:
        ValueError: entries not [N, 584] uint8, or N not a multiple of block_size.
    """
    if entries.ndim != 2 or entries.shape[1] != ENTRY_BYTES or entries.dtype != torch.uint8:
        raise ValueError(f"entries must be [N, {ENTRY_BYTES}] uint8, got {tuple(entries.shape)}")
    n = entries.shape[0]
    if block_size < 1 or n % block_size:
        raise ValueError(f"number of entries {n} is not a multiple of block_size {block_size}")
    return paged_cache(entries, block_size)


def from_flashmla_blocks(blocks: torch.Tensor, block_size: int) -> torch.Tensor:
    """Inverse of `to_flashmla_blocks`: FlashMLA / vLLM blocks back to [N, 584] entries.

    Args:
        blocks: [B, flashmla_block_bytes(block_size)], uint8.
        block_size: tokens per block.

    Returns:
        [B * block_size, 584], uint8.

    Raises:
        ValueError: blocks of another shape or dtype.
    """
    size = flashmla_block_bytes(block_size)
    if blocks.ndim != 2 or blocks.shape[1] != size or blocks.dtype != torch.uint8:
        raise ValueError(f"blocks must be [B, {size}] uint8, got {tuple(blocks.shape)}")
    slots = torch.arange(blocks.shape[0] * block_size, device=blocks.device)
    return read_entries(blocks, slots, block_size)


def page_bytes(page: int) -> int:
    """Bytes of one page of `page` tokens, padded to a multiple of 576 B.

    vLLM allocates compressed pages so; its SWA blocks are exactly page * 584 B. The kernels
    take either.

    Raises:
        ValueError: page < 1.
    """
    if page < 1:
        raise ValueError(f"page must be >= 1 token, got {page}")
    return flashmla_block_bytes(page)


def check_paged_cache(cache: torch.Tensor, page: int, name: str) -> None:
    """Validate a paged fp8_ds_mla cache: [pages, page_stride] uint8, rows of >= page * 584 B.

    Raises:
        ValueError: naming `name`, when the dtype, rank, row width, strides or storage offset
            are wrong: the last dim must be contiguous, the row stride and the storage offset
            even (the kernels read the RoPE part through a bf16 view of the cache), and the
            row stride (the page stride) at least page * 584 so that pages do not overlap.
    """
    if cache.dtype != torch.uint8 or cache.ndim != 2:
        raise ValueError(
            f"{name} must be a [pages, page_bytes] uint8 paged fp8_ds_mla cache, "
            f"got {tuple(cache.shape)} {cache.dtype}"
            + (
                f": pass vLLM's [num_blocks, block_size, 584] cache as {name}.flatten(1) "
                "(a view, also of padded blocks)"
                if cache.ndim == 3
                else ""
            )
        )
    if page < 1 or cache.shape[1] < page * ENTRY_BYTES or cache.shape[1] % 2:
        raise ValueError(
            f"{name} rows hold {cache.shape[1]} bytes: need an even count of at least "
            f"page * 584 = {page * ENTRY_BYTES} for a page of {page} tokens"
        )
    if cache.shape[0] > 1 and (cache.stride(1) != 1 or cache.stride(0) % 2):
        raise ValueError(
            f"{name} must have contiguous rows and an even row stride, got strides {cache.stride()}"
        )
    if cache.shape[0] == 1 and cache.stride(1) != 1:
        raise ValueError(f"{name} must have contiguous rows, got strides {cache.stride()}")
    if cache.shape[0] > 1 and cache.stride(0) < page * ENTRY_BYTES:
        raise ValueError(
            f"{name} page stride {cache.stride(0)} bytes is below page * 584 = "
            f"{page * ENTRY_BYTES}: its pages overlap"
        )
    if cache.storage_offset() % 2:
        raise ValueError(
            f"{name} starts at byte offset {cache.storage_offset()} of its storage: the offset "
            "must be even (the RoPE part is read as bfloat16)"
        )


def page_stride(pages: torch.Tensor) -> int:
    """Bytes from one page of a [pages, row bytes] cache (main KV or index keys) to the next.

    The row stride; the row width when there is one page (its stride is never used).
    """
    return int(pages.stride(0)) if pages.shape[0] > 1 else int(pages.shape[1])


def single_page_rows(pages: torch.Tensor) -> torch.Tensor:
    """`pages` ([pages, row bytes] uint8) with row stride = `page_stride` when it has one page.

    A one-page cache's row stride is never used and not checked, but a dtype view of the cache
    (the kernels' bf16 or float32 view, `Tensor.view`) refuses one that is not a multiple of
    the element size.
    """
    if pages.shape[0] == 1:
        return pages.as_strided(tuple(pages.shape), (int(pages.shape[1]), 1))
    return pages


def _flat_bytes(cache: torch.Tensor) -> torch.Tensor:
    """The bytes a [pages, row bytes] cache spans, as one 1-D view (writes go through)."""
    stride = page_stride(cache)
    return cache.as_strided((cache.shape[0] * stride - stride + cache.shape[1],), (1,))


def _byte_offsets(slots: torch.Tensor, page: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(record, scale record) byte offsets of slots `page_id * page + i` in a paged cache."""
    s = slots.long()
    base = (s // page) * stride
    i = s % page
    return base + i * RECORD_BYTES, base + page * RECORD_BYTES + i * SCALE_RECORD_BYTES


def read_entries(cache: torch.Tensor, slots: torch.Tensor, page: int) -> torch.Tensor:
    """Gather entries from a paged cache as 584-byte entries (module docstring).

    Args:
        cache: [pages, page_stride], uint8, paged fp8_ds_mla (`check_paged_cache`).
        slots: [...], int, `page_id * page + token_in_page`, >= 0 (checked: a device sync).
        page: tokens per page.

    Returns:
        [..., 584], uint8.

    Raises:
        ValueError: a bad cache (`check_paged_cache`) or a negative slot (it would index the
            flat byte view from its end); a slot past the cache raises IndexError.
    """
    check_paged_cache(cache, page, "cache")
    if slots.numel() and int(slots.min()) < 0:
        raise ValueError(f"slots must be >= 0, got {int(slots.min())}")
    flat = _flat_bytes(cache)
    rec, sc = _byte_offsets(slots, page, page_stride(cache))
    data = flat[rec[..., None] + torch.arange(RECORD_BYTES, device=cache.device)]
    scales = flat[sc[..., None] + torch.arange(SCALE_RECORD_BYTES, device=cache.device)]
    return torch.cat([data, scales], dim=-1)


def write_entries(
    cache: torch.Tensor, slots: torch.Tensor, entries: torch.Tensor, page: int
) -> None:
    """Scatter 584-byte entries into a paged cache in place (what vLLM's cache insert does).

    Args:
        cache: [pages, page_stride], uint8, paged fp8_ds_mla (`check_paged_cache`).
        slots: [N], int, distinct `page_id * page + token_in_page`; negative slots (vLLM's
            padded tokens, slot -1) are skipped, as vLLM's cache insert skips them.
        entries: [N, 584], uint8.
        page: tokens per page.

    Raises:
        ValueError: entries not [N, 584] uint8 for N slots.
    """
    check_paged_cache(cache, page, "cache")
    if entries.shape != (slots.numel(), ENTRY_BYTES) or entries.dtype != torch.uint8:
        raise ValueError(
            f"entries must be [{slots.numel()}, {ENTRY_BYTES}] uint8, got "
            f"{tuple(entries.shape)} {entries.dtype}"
        )
    flat = _flat_bytes(cache)
    keep = slots.reshape(-1) >= 0
    entries = entries[keep]
    rec, sc = _byte_offsets(slots.reshape(-1)[keep], page, page_stride(cache))
    flat[rec[:, None] + torch.arange(RECORD_BYTES, device=cache.device)] = entries[:, :RECORD_BYTES]
    flat[sc[:, None] + torch.arange(SCALE_RECORD_BYTES, device=cache.device)] = entries[
        :, RECORD_BYTES:
    ]


def paged_cache(entries: torch.Tensor, page: int) -> torch.Tensor:
    """A paged cache holding `entries` in slots 0..N-1 (the last page zero-padded).

    Args:
        entries: [N, 584], uint8.
        page: tokens per page.

    Returns:
        [ceil(N / page), page_bytes(page)], uint8.
    """
    n = entries.shape[0]
    pages = max(1, -(-n // page))
    cache = torch.zeros(pages, page_bytes(page), dtype=torch.uint8, device=entries.device)
    write_entries(cache, torch.arange(n, device=entries.device), entries, page)
    return cache


def quantize_index_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise index keys to FP8 with one power-of-two float32 scale per key, as vLLM does.

    scale = 2 ** ceil(log2(max(amax, 1e-4) / 448)) with amax = max |key| (`ue8m0_scale_exponent`,
    exact from the float bits), code = e4m3(clamp(key / scale, -448, 448)) rounded to nearest
    even: vLLM's V4 indexer key insert (`_fused_kv_compress_norm_rope_insert_indexer_attn`:
    `absmax = max(absmax, 1e-4)`, `exponent = ceil(log2(absmax * (1 / 448)))`, scale
    `exp2(exponent)`; amax * fl(1/448) and amax / 448 give the same exponent, checked for every
    float32 amax next to a power-of-two boundary in `tests/kernels/test_kv_format.py`). vLLM
    rounds the key to bf16 first, so bf16 (or bf16-valued) keys give its codes bit for bit;
    float32 keys are quantised as they are. Dividing by a power of two is exact, so quantising
    dequantised keys again gives the same values.

    Args:
        keys: [N, 128], float32 or bfloat16.

    Returns:
        (k8: [N, 128], float8_e4m3fn; scale: [N], float32, a power of two in [2**-22, 2**120])
        with keys ≈ k8 * scale.

    Raises:
        ValueError: keys not [N, 128].
    """
    if keys.ndim != 2 or keys.shape[1] != INDEX_DIM:
        raise ValueError(f"keys must be [N, {INDEX_DIM}], got {tuple(keys.shape)}")
    x = keys.float()
    exp = ue8m0_scale_exponent(x.abs().amax(dim=-1))
    scale = pow2(exp)
    inv = pow2(-exp)  # exp >= -22: a normal float
    k8 = torch.clamp(x * inv[:, None], -FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return k8, scale


def pack_index_pages(k8: torch.Tensor, scale: torch.Tensor, page_size: int) -> torch.Tensor:
    """Lay out FP8 index keys in pages: ``page_size*128`` e4m3 bytes, then the float32 scales.

    Args:
        k8: [N, 128], float8_e4m3fn, with N a multiple of page_size.
        scale: [N], float32.
        page_size: keys per page (vLLM C4 block: 64 entries).

    Returns:
        [N // page_size, page_size * 132], uint8.
    """
    n = k8.shape[0]
    if n % page_size:
        raise ValueError(f"number of keys {n} is not a multiple of page_size {page_size}")
    pages = n // page_size
    kb = k8.contiguous().view(torch.uint8).reshape(pages, page_size * INDEX_DIM)
    sb = scale.float().contiguous().view(torch.uint8).reshape(pages, page_size * 4)
    return torch.cat([kb, sb], dim=1).contiguous()


def unpack_index_pages(pages: torch.Tensor, page_size: int) -> torch.Tensor:
    """Dequantise paged FP8 index keys.

    Args:
        pages: [P, W], uint8, W >= page_size * 132 (vLLM pads a 64-key block to 8,640 B; the
            bytes past page_size * 132 are ignored).
        page_size: keys per page.

    Returns:
        [P * page_size, 128], float32.

    Raises:
        ValueError: pages not [P, >= page_size * 132] uint8.
    """
    width = page_size * INDEX_KEY_BYTES
    if pages.ndim != 2 or pages.shape[1] < width or pages.dtype != torch.uint8:
        raise ValueError(
            f"pages must be [P, >= page_size * {INDEX_KEY_BYTES} = {width}] uint8, got "
            f"{tuple(pages.shape)} {pages.dtype}"
        )
    p = pages.shape[0]
    kb = pages[:, : page_size * INDEX_DIM].contiguous().view(torch.float8_e4m3fn).float()
    sb = pages[:, page_size * INDEX_DIM : width].contiguous().view(torch.float32)
    return (kb.reshape(p, page_size, INDEX_DIM) * sb[:, :, None]).reshape(-1, INDEX_DIM)
