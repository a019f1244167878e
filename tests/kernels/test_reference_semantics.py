"""The PyTorch references against DeepSeek-V4's own inference code, restated independently.

The kernels are tested against `compress_reference`, `sparse_mla_reference`,
`index_topk_reference` and `kv_format`; these tests check the references themselves against a
second, differently organised statement of what DeepSeek's `inference/model.py` (V4-Flash /
V4-Pro Hugging Face repositories, `Compressor`, `Indexer`, `Attention`,
`get_window_topk_idxs`, `get_compress_topk_idxs`) and its `kernel.py` (`act_quant`,
`sparse_attn`) compute:

- the compressor's token-by-token decode branch (state ring of 2·ratio rows for ratio 4, `-inf`
  scores before the first window, RoPE at position `start_pos + 1 - ratio`, the window's first
  token) must give the entries of the reference's whole-window form, also when a prefill is cut
  into chunks that pass the previous window;
- attention: the index lists of the official prefill path (window `max(0, t-127)..t`, entries
  `e < (t+1) // ratio`, -1 = masked) with the sink only in the denominator;
- the indexer's prefill path: logits masked at `e >= (t+1) // ratio`, top-min(k, n), -1 for the
  rest;
- `act_quant(x, 64, "ue8m0", inplace=True)`: amax floored at 1e-4, scale
  2^ceil(log2(amax / 448)), values clamped to ±448 and rounded to e4m3.
"""

from __future__ import annotations

import torch

from dsv4_kernels.compressor import compress_reference
from dsv4_kernels.indexer import index_topk_reference
from dsv4_kernels.kv_format import (
    dequantize_fp8_ds_mla,
    pack_index_pages,
    quantize_fp8_ds_mla,
    quantize_index_keys,
    to_flashmla_blocks,
)
from dsv4_kernels.sparse_mla import sparse_mla_reference

ROPE = 64
THETA = 160000.0  # compress_rope_theta; any table works, both sides use the same one
INV_FREQ = 1.0 / THETA ** (torch.arange(0, ROPE, 2, dtype=torch.float64) / ROPE)


def _angles(pos: torch.Tensor) -> torch.Tensor:
    """[..., 32] float32 RoPE angles of absolute positions."""
    return (pos.double()[..., None] * INV_FREQ).float()


def _official_rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """Official `RMSNorm.forward` on a bf16 input: float32 inside, bf16 out."""
    xf = x.float()
    return (w * (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps))).to(x.dtype)


def _official_rope(x: torch.Tensor, ang: torch.Tensor) -> torch.Tensor:
    """Official `apply_rotary_emb`: complex product of interleaved pairs, back to x's dtype."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2).contiguous())
    rot = torch.view_as_real(xc * torch.polar(torch.ones_like(ang), ang)).flatten(-2)
    return rot.to(x.dtype)


def _official_decode_compressor(
    kv: torch.Tensor, score: torch.Tensor, ape: torch.Tensor, w: torch.Tensor, ratio: int
) -> torch.Tensor:
    """The decode branch of the official `Compressor.forward`, one token at a time.

    kv, score: [T, C*D] float32 of one sequence from position 0. Returns [T // ratio, D] bf16.
    """
    eps = 1e-6
    overlap = ratio == 4
    coff = 2 if overlap else 1
    d = kv.shape[1] // coff
    kv_state = torch.zeros(coff * ratio, coff * d)
    score_state = torch.full((coff * ratio, coff * d), float("-inf"))
    entries = []
    for p in range(kv.shape[0]):
        s = score[p] + ape[p % ratio]
        slot = (ratio if overlap else 0) + p % ratio
        kv_state[slot], score_state[slot] = kv[p], s
        if (p + 1) % ratio:
            continue
        if overlap:
            rows_kv = torch.cat([kv_state[:ratio, :d], kv_state[ratio:, d:]])
            rows_sc = torch.cat([score_state[:ratio, :d], score_state[ratio:, d:]])
            kv_state[:ratio], score_state[:ratio] = (
                kv_state[ratio:].clone(),
                score_state[ratio:].clone(),
            )
        else:
            rows_kv, rows_sc = kv_state, score_state
        y = (rows_kv * rows_sc.softmax(dim=0)).sum(dim=0)
        y = _official_rms_norm(y.to(torch.bfloat16), w, eps)
        rope = _official_rope(y[-ROPE:], _angles(torch.tensor(p + 1 - ratio)))
        entries.append(torch.cat([y[:-ROPE], rope]))
    return torch.stack(entries)


def test_compressor_reference_matches_official_decode_path() -> None:
    gen = torch.Generator().manual_seed(11)
    for ratio, d, t in [(4, 512, 24), (4, 128, 20), (128, 512, 256)]:
        c = 2 if ratio == 4 else 1
        kv = torch.randn(t, c * d, generator=gen)
        score = torch.randn(t, c * d, generator=gen) * 2
        ape = torch.randn(ratio, c * d, generator=gen) * 0.5
        w = torch.rand(d, generator=gen) + 0.5
        official = _official_decode_compressor(kv, score, ape, w, ratio)
        # Entry g is rotated at position g * ratio, the first token of its window (official
        # freqs_cis[:cutoff:ratio]; vLLM: (positions // compress_ratio) * compress_ratio).
        ang = _angles(torch.arange(t // ratio) * ratio)[None]
        whole = compress_reference(kv[None], score[None], ape, w, ang.cos(), ang.sin(), ratio)[0]
        assert torch.equal(whole, official), f"ratio {ratio}, D {d}"
        if ratio == 4:  # a chunked prefill passes the window before its first one
            h = t // 2 - (t // 2) % ratio
            g = h // ratio
            first = compress_reference(
                kv[None, :h], score[None, :h], ape, w, ang[:, :g].cos(), ang[:, :g].sin(), ratio
            )[0]
            second = compress_reference(
                kv[None, h:],
                score[None, h:],
                ape,
                w,
                ang[:, g:].cos(),
                ang[:, g:].sin(),
                ratio,
                prev_kv=kv[None, h - ratio : h],
                prev_score=score[None, h - ratio : h],
            )[0]
            assert torch.equal(torch.cat([first, second]), official), f"chunked, D {d}"


def _official_index_lists(seqlen: int, window: int, ratio: int) -> torch.Tensor:
    """Official prefill lists: get_window_topk_idxs then get_compress_topk_idxs (offset seqlen)."""
    base = torch.arange(seqlen)[:, None]
    win = (base - window + 1).clamp(min=0) + torch.arange(min(seqlen, window))
    win = torch.where(win > base, -1, win)
    comp = torch.arange(seqlen // ratio).repeat(seqlen, 1)
    comp = torch.where(comp >= (base + 1) // ratio, -1, comp + seqlen)
    return torch.cat([win, comp], dim=1)


def _official_sparse_attn(
    q: torch.Tensor, kv: torch.Tensor, sink: torch.Tensor, idx: torch.Tensor, scale: float
) -> torch.Tensor:
    """Official `sparse_attn` maths: gathered keys, -1 masked, exp(sink) in the denominator."""
    keys = kv[idx.clamp(min=0)]  # [S, N, D]
    s = torch.einsum("shd,snd->shn", q.double(), keys.double()) * scale
    s = s.masked_fill((idx == -1)[:, None, :], float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    p = torch.exp(s - m)
    den = p.sum(-1) + torch.exp(sink.double()[None] - m[..., 0])
    return torch.einsum("shn,snd->shd", p / den[..., None], keys.double())


def _paged(
    rows: torch.Tensor, page: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp8_ds_mla bytes of rows in shuffled pages, laid out as FlashMLA's MODEL1 blocks
    (`to_flashmla_blocks`): (cache [pages, block bytes], table [1, pages])."""
    n = rows.shape[0]
    pages = max(1, -(-n // page))
    perm = torch.randperm(pages, generator=gen)
    entries = torch.zeros(pages * page, 584, dtype=torch.uint8)
    slots = perm[torch.arange(n) // page] * page + torch.arange(n) % page
    entries[slots] = quantize_fp8_ds_mla(rows)
    return to_flashmla_blocks(entries, page), perm[None].to(torch.int32)


def test_attention_reference_matches_official_index_lists_and_sink() -> None:
    gen = torch.Generator().manual_seed(12)
    heads, window, scale = 4, 128, 512**-0.5
    for ratio, seqlen in [(128, 300), (4, 150)]:
        n_comp = seqlen // ratio
        raw = dequantize_fp8_ds_mla(quantize_fp8_ds_mla(torch.randn(seqlen, 512, generator=gen)))
        comp = dequantize_fp8_ds_mla(quantize_fp8_ds_mla(torch.randn(n_comp, 512, generator=gen)))
        q = torch.randn(seqlen, heads, 512, generator=gen).to(torch.bfloat16)
        sink = torch.randn(heads, generator=gen)
        official = _official_sparse_attn(
            q, torch.cat([raw, comp]), sink, _official_index_lists(seqlen, window, ratio), scale
        )
        swa_cache, swa_table = _paged(raw, 64, gen)
        comp_cache, comp_table = _paged(comp, 256 // ratio, gen)
        indices = None
        if ratio == 4:  # every entry, plus ids the reference must skip: too large, and -1
            indices = torch.arange(n_comp + 3, dtype=torch.int32).repeat(seqlen, 1)
            indices[:, -1] = -1
        out, _ = sparse_mla_reference(
            q,
            torch.arange(seqlen, dtype=torch.int32),
            torch.zeros(seqlen, dtype=torch.int32),
            swa_cache,
            swa_table,
            64,
            comp_cache,
            comp_table,
            256 // ratio,
            ratio,
            indices,
            sink,
            scale,
            window,
        )
        # out is bf16: within half a bf16 step (2**-9 relative) of the float64 result.
        bound = official.abs() * 2**-8 + 1e-6
        assert bool(((out.double() - official).abs() <= bound).all()), f"ratio {ratio}"


def test_indexer_reference_matches_official_prefill_selection() -> None:
    gen = torch.Generator().manual_seed(13)
    seqlen, heads, topk, ratio = 200, 8, 16, 4
    n_comp = seqlen // ratio
    k8, k_scale = quantize_index_keys(torch.randn(64, 128, generator=gen))
    keys = (k8.float() * k_scale[:, None])[:n_comp]
    q8 = torch.randn(seqlen, heads, 128, generator=gen).to(torch.float8_e4m3fn)
    weights = torch.randn(seqlen, heads, generator=gen) * (128**-0.5 * heads**-0.5)
    # Official Indexer.forward, start_pos == 0.
    logits = (
        torch.einsum("shd,nd->shn", q8.double(), keys.double()).relu() * weights.double()[..., None]
    ).sum(1)
    visible = (torch.arange(1, seqlen + 1) // ratio)[:, None]
    logits = logits.masked_fill(torch.arange(n_comp)[None] >= visible, float("-inf"))
    chosen = logits.topk(min(topk, n_comp), dim=-1).indices
    chosen = torch.where(chosen >= visible, -1, chosen)
    idx, _ = index_topk_reference(
        q8,
        weights,
        pack_index_pages(k8, k_scale, 64),
        torch.zeros(1, 1, dtype=torch.int32),
        torch.arange(seqlen, dtype=torch.int32),
        torch.zeros(seqlen, dtype=torch.int32),
        topk,
    )
    for t in range(seqlen):
        want = sorted(int(i) for i in chosen[t] if i >= 0)
        got = sorted(int(i) for i in idx[t] if i >= 0)
        assert got == want, f"token {t}"
        assert int((idx[t] == -1).sum()) == topk - min(topk, int(visible[t, 0]))


def _official_act_quant_ue8m0(x: torch.Tensor, block: int = 64) -> torch.Tensor:
    """`act_quant(x, block, "ue8m0", inplace=True)` on bf16 x: the values it writes back."""
    tiles = x.float().reshape(*x.shape[:-1], -1, block)
    amax = tiles.abs().amax(dim=-1, keepdim=True).clamp(min=1e-4)
    scale = torch.exp2(torch.ceil(torch.log2(amax.double() / 448.0))).float()
    q = (tiles / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn).float()
    out: torch.Tensor = (q * scale).reshape(x.shape).to(x.dtype)
    return out


def test_fp8_ds_mla_values_match_official_act_quant() -> None:
    gen = torch.Generator().manual_seed(14)
    rows = torch.randn(6, 512, generator=gen) * torch.logspace(-6, 3, 6)[:, None]
    rows[0, :64] = 0.0  # an all-zero tile (amax floor)
    rows[1, 64:128] = 1e-7  # amax below the floor
    rows[2, 128] = 1.75  # amax = 448 * 2**-8 exactly: scale 2**-8, code 448
    rows[2, 129:192] = 0.001
    x = rows.to(torch.bfloat16)
    got = dequantize_fp8_ds_mla(quantize_fp8_ds_mla(x))
    assert torch.equal(got[:, :448], _official_act_quant_ue8m0(x[:, :448]).float())
    assert torch.equal(got[:, 448:], x[:, 448:].float())  # RoPE dims stay bf16
    assert float(got[2, 128]) == 1.75
