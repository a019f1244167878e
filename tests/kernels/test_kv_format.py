"""fp8_ds_mla packing and the exact e4m3 / bf16 helpers the kernels use under the interpreter."""

import math
import struct

import pytest
import torch
import triton
import triton.language as tl

from dsv4_kernels.kv_format import (
    ENTRY_BYTES,
    check_paged_cache,
    dequantize_fp8_ds_mla,
    flashmla_block_bytes,
    from_flashmla_blocks,
    pack_index_pages,
    page_bytes,
    paged_cache,
    quantize_fp8_ds_mla,
    quantize_index_keys,
    read_entries,
    to_flashmla_blocks,
    ue8m0_scale_exponent,
    unpack_index_pages,
    write_entries,
)
from dsv4_kernels.testing import poisoned_like, rel_err
from dsv4_kernels.triton_fp8 import e4m3_bits_to_f32, f32_to_e4m3_bits, round_bf16


@triton.jit
def _codec_kernel(x_ptr, codes_ptr, dec_ptr, bf_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(x_ptr + offs, mask=m, other=0.0)
    codes = f32_to_e4m3_bits(x)
    tl.store(codes_ptr + offs, codes.to(tl.uint8), mask=m)
    tl.store(dec_ptr + offs, e4m3_bits_to_f32(offs & 0xFF), mask=m)
    tl.store(bf_ptr + offs, round_bf16(x), mask=m)


def test_ds_mla_entry_is_584_bytes_and_round_trips(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(37, 512, generator=gen).to(device) * torch.logspace(-3, 2, 37)[:, None].to(
        device
    )
    packed = quantize_fp8_ds_mla(x)
    assert packed.shape == (37, ENTRY_BYTES)
    back = dequantize_fp8_ds_mla(packed)
    # RoPE is bf16 (rel 2**-9); NoPE is e4m3 with a power-of-two tile scale (rel <= 2**-4).
    assert rel_err(back[:, 448:], x[:, 448:]) < 4e-3
    assert rel_err(back[:, :448], x[:, :448]) < 6e-2
    assert int(packed[:, 583].max()) == 0
    # Every tile fits: |x| / scale <= 448 for the chosen power of two, and half of it would not.
    amax = x[:, :448].reshape(37, 7, 64).abs().amax(-1)
    e = ue8m0_scale_exponent(amax)
    assert bool((amax / torch.pow(2.0, e.float()) <= 448).all())
    assert bool((amax / torch.pow(2.0, e.float() - 1) > 448).all())


def test_index_pages_round_trip(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(2)
    keys = torch.randn(3 * 16, 128, generator=gen).to(device)
    k8, sc = quantize_index_keys(keys)
    back = unpack_index_pages(pack_index_pages(k8, sc, 16), 16)
    assert rel_err(back, keys) < 6e-2
    with pytest.raises(ValueError, match="multiple of page_size"):
        pack_index_pages(k8[:5], sc[:5], 16)


def test_triton_e4m3_and_bf16_helpers_are_exact(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.cat(
        [
            torch.randn(700, generator=gen) * 30,
            torch.randn(300, generator=gen) * 0.01,  # subnormal e4m3 range
            torch.tensor([0.0, -0.0, 448.0, -448.0, 0.001953125, 0.0009765625, 240.0, 232.0]),
        ]
    ).clamp(-448, 448)
    n = x.numel()
    xd = x.to(device)
    codes = poisoned_like(torch.empty(n, dtype=torch.uint8, device=device))
    dec = poisoned_like(torch.empty(n, dtype=torch.float32, device=device))
    bf = poisoned_like(torch.empty(n, dtype=torch.bfloat16, device=device))
    _codec_kernel[(triton.cdiv(n, 256),)](xd, codes, dec, bf, n, BLOCK=256)
    ref_codes = x.to(torch.float8_e4m3fn).view(torch.uint8)
    assert torch.equal(codes.cpu(), ref_codes)
    all_codes = (torch.arange(n) & 0xFF).to(torch.uint8)
    ref_dec = all_codes.view(torch.float8_e4m3fn).float()
    finite = torch.isfinite(ref_dec)
    assert torch.equal(dec.cpu()[finite], ref_dec[finite])
    assert torch.equal(bf.cpu(), x.to(torch.bfloat16))


def _flashmla_model1_block(rows: torch.Tensor) -> torch.Tensor:
    """FlashMLA `tests/quant.py` `quantize_k_cache` (MODEL1_FP8Sparse) of one block, restated.

    rows: [bs, 512] bfloat16 with every NoPE tile's amax / 448 >= 1e-4 (FlashMLA floors the
    scale there, DeepSeek's act_quant floors amax at 1e-4: the same scales above it). Returns the
    block's bytes: bs x (448 e4m3 + 64 bf16), then bs x (7 UE8M0 + 1 pad), zero-padded to a
    multiple of 576 B.
    """
    bs = rows.shape[0]
    size = -(-bs * 584 // 576) * 576
    out = torch.zeros(size, dtype=torch.uint8)
    data = out[: bs * 576].view(bs, 576)
    scales = out[bs * 576 : bs * 584].view(bs, 8)
    data[:, 448:] = rows[:, 448:].contiguous().view(torch.uint8)
    for tile in range(7):
        x = rows[:, 64 * tile : 64 * tile + 64].float()
        scale = torch.pow(2, (x.abs().amax(-1) / 448.0).clamp(min=1e-4).log2().ceil())
        data[:, 64 * tile : 64 * tile + 64] = (
            (x / scale[:, None]).to(torch.float8_e4m3fn).view(torch.uint8)
        )
        scales[:, tile] = (scale.log2() + 127).to(torch.uint8)
    return out


def test_flashmla_block_layout_conversion() -> None:
    gen = torch.Generator().manual_seed(3)
    bs, blocks = 64, 3
    rows = (torch.randn(blocks * bs, 512, generator=gen) + 0.2).to(torch.bfloat16)
    entries = quantize_fp8_ds_mla(rows)
    upstream = torch.stack([_flashmla_model1_block(b) for b in rows.view(blocks, bs, 512)])
    assert upstream.shape == (blocks, flashmla_block_bytes(bs)) == (blocks, 37_440)
    # Our slots are not FlashMLA's block bytes (token 1 starts at 584 here, 576 there) ...
    assert not torch.equal(entries.view(blocks, -1), upstream[:, : bs * 584])
    # ... but repack exactly, both ways.
    assert torch.equal(to_flashmla_blocks(entries, bs), upstream)
    assert torch.equal(from_flashmla_blocks(upstream, bs), entries)
    assert flashmla_block_bytes(2) == 1_728  # HCA: 2 entries per 256-token block (facts §7.2)
    with pytest.raises(ValueError, match="multiple of block_size"):
        to_flashmla_blocks(entries[:10], bs)
    with pytest.raises(ValueError, match="blocks must be"):
        from_flashmla_blocks(upstream[:, :-1], bs)


@pytest.mark.parametrize("page", [1, 2, 3, 64])
def test_paged_cache_is_flashmla_block_layout_and_reads_back(page: int) -> None:
    """The kernels' paged cache is byte for byte FlashMLA's MODEL1 / vLLM's block layout."""
    gen = torch.Generator().manual_seed(page)
    n = 5 * page
    entries = quantize_fp8_ds_mla(torch.randn(n, 512, generator=gen))
    cache = paged_cache(entries, page)
    assert cache.shape == (5, page_bytes(page))
    assert page_bytes(page) % 576 == 0
    assert torch.equal(cache, to_flashmla_blocks(entries, page))
    slots = torch.randperm(n, generator=gen)[: n // 2 + 1]
    assert torch.equal(read_entries(cache, slots, page), entries[slots])
    # A strided view (rows wider than the page, as a larger allocation would give) reads the
    # same, and writes land where reads find them.
    wide = torch.zeros(5, page_bytes(page) + 576, dtype=torch.uint8)[:, : page_bytes(page)]
    write_entries(wide, torch.arange(n), entries, page)
    assert torch.equal(wide, cache)
    assert torch.equal(read_entries(wide, slots, page), entries[slots])


def test_paged_cache_checks_name_the_argument() -> None:
    flat = torch.zeros(128, 584, dtype=torch.uint8)  # the former [slots, 584] form
    with pytest.raises(ValueError, match=r"swa_cache rows hold 584 bytes.*page \* 584 = 37376"):
        check_paged_cache(flat, 64, "swa_cache")
    with pytest.raises(ValueError, match=r"comp_cache must be a \[pages, page_bytes\] uint8"):
        check_paged_cache(torch.zeros(2, 3, 1168, dtype=torch.uint8), 2, "comp_cache")
    with pytest.raises(ValueError, match="contiguous rows"):
        check_paged_cache(torch.zeros(1168, 4, dtype=torch.uint8).t(), 2, "comp_cache")
    check_paged_cache(torch.zeros(3, page_bytes(2), dtype=torch.uint8), 2, "comp_cache")


def test_round_bf16_keeps_nan_and_e4m3_nan_codes_decode_to_nan(device: torch.device) -> None:
    # NaN bit patterns whose mantissa carries into the sign (0x7FFFFFFF: the canonical NaN of
    # NVIDIA GPUs) or whose payload sits in the low 16 bits only must stay NaN, not become
    # -0.0, 0.0 or inf; the e4m3fn NaN codes 0x7F / 0xFF must decode to NaN, not 480.
    nan_bits = [0x7FFFFFFF, 0x7FC00000, 0x7F800001, 0x7FFF8000, -1, -4194304]  # last: 0xFFC00000
    x = torch.tensor(nan_bits, dtype=torch.int32).view(torch.float32)
    bf = torch.zeros(x.numel(), dtype=torch.bfloat16, device=device)
    _round_kernel[(1,)](x.to(device), bf, BLOCK=8, N=x.numel())
    assert bool(torch.isnan(bf.cpu().float()).all()), bf.cpu().tolist()
    codes_in = torch.tensor([0x7F, 0xFF, 0x7E, 0xFE], dtype=torch.uint8, device=device)
    dec2 = poisoned_like(torch.empty(4, dtype=torch.float32, device=device))
    _decode_kernel[(1,)](codes_in, dec2, BLOCK=4)
    assert dec2.cpu()[:2].isnan().all(), dec2.cpu().tolist()
    assert dec2.cpu()[2:].tolist() == [448.0, -448.0]


@triton.jit
def _round_kernel(x_ptr, out_ptr, BLOCK: tl.constexpr, N: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, round_bf16(tl.load(x_ptr + offs, mask=offs < N)), mask=offs < N)


@triton.jit
def _decode_kernel(b_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, e4m3_bits_to_f32(tl.load(b_ptr + offs)))


def test_paged_cache_check_refuses_odd_offsets_and_overlapping_pages() -> None:
    # An odd storage offset passed the check; the Triton path then failed in
    # `cache.view(torch.bfloat16)` with a RuntimeError naming no argument (the reference read it).
    storage = torch.zeros(3, page_bytes(2) + 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"swa_cache starts at byte offset 1 .* even"):
        check_paged_cache(storage[:, 1 : 1 + 2 * ENTRY_BYTES], 2, "swa_cache")
    check_paged_cache(storage[:, 16 : 16 + 2 * ENTRY_BYTES], 2, "swa_cache")  # even: fine
    # A page stride below page * 584 (pages overlap) or 0 (expanded: every page aliases page 0)
    # passed too, so page g + 1's records were read as page g's scales.
    base = torch.zeros(4 * ENTRY_BYTES, dtype=torch.uint8)
    overlapping = base.as_strided((3, 2 * ENTRY_BYTES), (ENTRY_BYTES, 1))
    with pytest.raises(ValueError, match=r"comp_cache page stride 584 .* page \* 584 = 1168"):
        check_paged_cache(overlapping, 2, "comp_cache")
    expanded = torch.zeros(1, 2 * ENTRY_BYTES, dtype=torch.uint8).expand(4, -1)
    with pytest.raises(ValueError, match=r"comp_cache page stride 0 "):
        check_paged_cache(expanded, 2, "comp_cache")


def test_negative_slots_neither_wrap_nor_corrupt_the_last_page() -> None:
    # A slot -1 indexed the flat byte view from its end: read_entries returned bytes of the
    # last page, and write_entries overwrote the last page's last token. vLLM's slot mappings
    # use -1 for padded tokens, which its cache insert skips.
    gen = torch.Generator().manual_seed(5)
    page = 2
    entries = quantize_fp8_ds_mla(torch.randn(6, 512, generator=gen))
    cache = paged_cache(entries, page)
    before = cache.clone()
    new = quantize_fp8_ds_mla(torch.randn(2, 512, generator=gen))
    write_entries(cache, torch.tensor([-1, 0]), new, page)
    assert torch.equal(read_entries(cache, torch.arange(1, 6), page), entries[1:])
    assert torch.equal(read_entries(cache, torch.tensor([0]), page), new[1:])
    assert not torch.equal(cache, before)
    with pytest.raises(ValueError, match=r"slots must be >= 0, got -1"):
        read_entries(cache, torch.tensor([3, -1]), page)


def _e4m3_table() -> list[tuple[float, int]]:
    """(value, byte) of every finite non-negative OCP e4m3fn code, built from the bit layout:
    sign 1, exponent 4 (bias 7), mantissa 3; exponent 0 subnormal (m/8 * 2**-6); 0x7F is NaN."""
    table = []
    for b in range(0x7F):
        e, m = b >> 3, b & 7
        table.append(((m / 8) * 2.0**-6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7), b))
    return table


_E4M3 = _e4m3_table()


def _e4m3_byte(v: float) -> int:
    """Round v (|v| <= 448) to the nearest e4m3 value, ties to the even code (even mantissa)."""
    a = abs(v)
    best = min(_E4M3, key=lambda vb: (abs(vb[0] - a), vb[1] & 1))
    return best[1] | (0x80 if math.copysign(1.0, v) < 0 else 0)


def _f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def _vllm_index_key(row: list[float]) -> tuple[list[int], float]:
    """vLLM's V4 indexer key quantisation restated in plain Python on float32 numbers:
    `_fused_kv_compress_norm_rope_insert_indexer_attn` (vllm/v1/attention/ops/deepseek_v4_ops/
    fused_compress_quant_cache.py): absmax = max(max |x|, 1e-4); raw = absmax * (1 / 448) in
    float32; exponent = ceil(log2(raw)); codes = e4m3(clamp(x * 2**-exponent, -448, 448)),
    scale = 2**exponent stored as float32. The same rule as V3.2's `indexer_k_quant_and_cache`
    with "ue8m0" (its test's `_ue8m0_reference`) and DeepSeek's `act_quant(x, 128, "ue8m0")`."""
    absmax = max(*(abs(v) for v in row), _f32(1e-4))
    raw = _f32(absmax * _f32(1 / 448))
    mant, ex = math.frexp(raw)  # raw = mant * 2**ex, 0.5 <= mant < 1
    exponent = ex - 1 if mant == 0.5 else ex
    scale = 2.0**exponent
    return [_e4m3_byte(max(-448.0, min(448.0, v / scale))) for v in row], scale


def _index_key_cases() -> torch.Tensor:
    gen = torch.Generator().manual_seed(11)
    rows = [
        torch.randn(40, 128, generator=gen),  # random
        torch.randn(8, 128, generator=gen).to(torch.bfloat16).float(),  # bf16 keys, as vLLM's
        torch.zeros(2, 128),  # all zero: the 1e-4 floor
        torch.randn(4, 128, generator=gen) * 1e-6,  # tiny: amax below the floor
        torch.randn(4, 128, generator=gen) * 1e30,  # huge
        -torch.rand(4, 128, generator=gen) - 0.5,  # all negative
        torch.randn(4, 128, generator=gen) * torch.logspace(-6, 2, 128),  # e4m3 subnormals
    ]
    # amax exactly 448 * 2**k and one float32 ulp either side (the power-of-two boundary)
    for k in (-3, 0, 5):
        c = torch.tensor(448.0 * 2.0**k)
        for amax in (c, torch.nextafter(c, torch.tensor(0.0)), torch.nextafter(c, c * 2)):
            row = torch.randn(1, 128, generator=gen).clamp(-1, 1) * amax * 0.9
            row[0, 7] = -amax
            rows.append(row)
    # values on e4m3 rounding midpoints once scaled (ties go to the even code)
    tie = torch.tensor([448.0, 1.0625, 1.1875, 2.125, 0.0029296875, -3.25, 13.0, -208.0])
    rows.append(tie.repeat(16)[None] * 2.0**-3)
    return torch.cat(rows)


def test_quantize_index_keys_equals_vllm_rule_bit_for_bit() -> None:
    """Codes and scales equal the plain-Python restatement of vLLM's rule on random, bf16, zero,
    tiny, huge, negative, subnormal, power-of-two-boundary and tie inputs; amax / 448 (the former
    scale) fails it."""
    keys = _index_key_cases()
    k8, scale = quantize_index_keys(keys)
    assert k8.dtype == torch.float8_e4m3fn
    assert scale.dtype == torch.float32
    codes = k8.view(torch.uint8)
    for i, row in enumerate(keys.tolist()):
        want_codes, want_scale = _vllm_index_key(row)
        assert float(scale[i]) == want_scale, f"row {i}"
        assert codes[i].tolist() == want_codes, f"row {i}"
    assert scale[40 + 8].item() == 2.0**-22  # zero key: ceil(log2(1e-4 / 448)) = -22
    # re-quantising the dequantised keys returns the same values (power-of-two scales divide
    # exactly); a key whose amax / scale rounded to 224 comes back with half the scale
    values = k8.float() * scale[:, None]
    k8b, scale_b = quantize_index_keys(values)
    assert torch.equal(k8b.float() * scale_b[:, None], values)
    # the former rule, scale = amax / 448, gives other codes: the comparison can fail
    old = keys.abs().amax(-1).clamp_min(1e-4) / 448
    old_codes = (keys / old[:, None]).clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8)
    assert not torch.equal(old_codes, codes)


def test_index_key_exponent_same_for_division_and_vllm_multiplication() -> None:
    """vLLM computes amax * fl(1/448), `ue8m0_scale_exponent` amax / 448: the same exponent for
    every float32 within 2,000 ulps of each 448 * 2**k (elsewhere they cannot straddle a power
    of two)."""
    for k in range(-22, 120):
        bits = int(torch.tensor(448.0 * 2.0**k).view(torch.int32))
        amax = torch.arange(bits - 2000, bits + 2000, dtype=torch.int32).view(torch.float32)
        raw = (torch.clamp(amax, min=1e-4) * (1 / 448)).view(torch.int32)
        exact = ((raw >> 23) & 0xFF) - 127 + ((raw & 0x7FFFFF) != 0).int()
        assert torch.equal(ue8m0_scale_exponent(amax), exact), f"k = {k}"


def test_quantize_index_keys_names_the_shape() -> None:
    with pytest.raises(ValueError, match=r"keys must be \[N, 128\], got \(4, 64\)"):
        quantize_index_keys(torch.zeros(4, 64))
