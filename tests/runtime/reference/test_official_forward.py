"""The engine's forward pass against a restatement of DeepSeek's official V4 prefill.

`_official_logits` re-derives the whole model from DeepSeek's `inference/model.py` (`Block`,
`Attention`, `Compressor`, `Gate`, `Expert`, `MoE`, `ParallelHead`, `MTPBlock`) and the
`hc_split_sinkhorn` / `sparse_attn` kernels, written here line by line from that source with plain
torch ops on the engine's parameters (none of the engine's helpers). It runs a one-request prefill
(`start_pos == 0`) in float32 without the QAT rounding (`kv_cache_dtype = "auto"` in the engine).
So a formula shared by every engine path (kernels vs torch, cached vs recomputed, TP vs one
process) is checked against the upstream one.

The prompt (200 tokens) is longer than the window (128) and reaches an HCA entry; `index_topk` is
raised to 64 so the CSA top-k keeps every one of the 50 complete entries, which makes attention
independent of the indexer's quantiser (official: Hadamard + FP4 simulation; engine: FP8).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from dsv4_runtime.reference.attention import Attention, Compressor
from dsv4_runtime.reference.config import TINY, ModelConfig
from dsv4_runtime.reference.kvcache import KVBlockPool, SequenceKV
from dsv4_runtime.reference.layers import RMSNorm
from dsv4_runtime.reference.model import Block, MTPBlock, Transformer
from dsv4_runtime.reference.moe import Expert, MoE

from .conftest import random_ids

CONFIG = dataclasses.replace(TINY, kv_cache_dtype="auto", index_topk=64).validate()


def _freqs_cis(c: ModelConfig, compressed: bool, seqlen: int) -> torch.Tensor:
    """Official `precompute_freqs_cis` as `Attention.__init__` calls it, (seqlen, rd/2) complex."""
    dim = c.qk_rope_head_dim
    if compressed:
        original, base = c.original_max_position_embeddings, c.compress_rope_theta
    else:
        original, base = 0, c.rope_theta
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if original > 0:

        def cdim(rot: float) -> float:
            return dim * math.log(original / (rot * 2 * math.pi)) / (2 * math.log(base))

        low = max(math.floor(cdim(c.beta_fast)), 0)
        high = min(math.ceil(cdim(c.beta_slow)), dim - 1)
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        smooth = 1 - ramp
        freqs = freqs / c.rope_factor * (1 - smooth) + freqs * smooth
    angles = torch.outer(torch.arange(seqlen), freqs)
    return torch.polar(torch.ones_like(angles), angles)


def _rotary(x: torch.Tensor, cis: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Official `apply_rotary_emb` on the last rd dims of x (s, ..., d); cis (s, rd/2)."""
    rd = 2 * cis.shape[-1]
    xc = torch.view_as_complex(x[..., -rd:].float().reshape(*x.shape[:-1], -1, 2).contiguous())
    cis = cis.conj() if inverse else cis
    cis = cis.view(cis.shape[0], *([1] * (xc.dim() - 2)), cis.shape[-1])
    out = torch.view_as_real(xc * cis).flatten(-2)
    return torch.cat((x[..., :-rd], out.to(x.dtype)), dim=-1)


def _rms(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    y = x.float() * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + eps)
    return y if weight is None else weight.float() * y


def _sinkhorn(
    mixes: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, c: ModelConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Official `hc_split_sinkhorn` (tilelang kernel semantics)."""
    hc, eps = c.hc_mult, c.hc_eps
    pre = torch.sigmoid(mixes[..., :hc] * scale[0] + base[:hc]) + eps
    post = 2 * torch.sigmoid(mixes[..., hc : 2 * hc] * scale[1] + base[hc : 2 * hc])
    comb = mixes[..., 2 * hc :].reshape(*mixes.shape[:-1], hc, hc) * scale[2] + base[2 * hc :].view(
        hc, hc
    )
    comb = F.softmax(comb, dim=-1) + eps
    comb = comb / (comb.sum(dim=-2, keepdim=True) + eps)
    for _ in range(c.hc_sinkhorn_iters - 1):
        comb = comb / (comb.sum(dim=-1, keepdim=True) + eps)
        comb = comb / (comb.sum(dim=-2, keepdim=True) + eps)
    return pre, post, comb


def _hc_mixes(x: torch.Tensor, fn: torch.Tensor, eps: float) -> torch.Tensor:
    flat = x.flatten(1).float()
    return F.linear(flat, fn) * torch.rsqrt(flat.square().mean(-1, keepdim=True) + eps)


def _compress(comp: Compressor, x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """Official `Compressor.forward` at start_pos 0 (entries of the complete windows)."""
    ratio, d = comp.ratio, comp.head_dim
    s = x.shape[0]
    cutoff = s - s % ratio
    kv = F.linear(x.float(), comp.wkv.weight)[:cutoff].view(-1, ratio, 2 * d if ratio == 4 else d)
    score = F.linear(x.float(), comp.wgate.weight)[:cutoff].view(kv.shape) + comp.ape
    if ratio == 4:  # overlap_transform: previous window's first half, this window's second half

        def overlap(t: torch.Tensor, value: float) -> torch.Tensor:
            new = t.new_full((t.shape[0], 2 * ratio, d), value)
            new[:, ratio:] = t[:, :, d:]
            new[1:, :ratio] = t[:-1, :, :d]
            return new

        kv, score = overlap(kv, 0.0), overlap(score, float("-inf"))
    pooled = (kv * score.softmax(dim=1)).sum(dim=1)
    normed = _rms(pooled, comp.norm.weight, comp.norm.eps)
    return _rotary(normed, cis[:cutoff:ratio])


def _attention(attn: Attention, x: torch.Tensor, c: ModelConfig) -> torch.Tensor:
    """Official `Attention.forward` + `sparse_attn` at start_pos 0, one sequence."""
    s, eps, win = x.shape[0], c.rms_norm_eps, c.sliding_window
    ratio = c.compress_ratios[attn.layer_id]
    cis = _freqs_cis(c, bool(ratio), s)
    qr = _rms(F.linear(x, attn.wq_a.weight), attn.q_norm.weight, eps)
    q = F.linear(qr, attn.wq_b.weight).view(s, c.num_attention_heads, c.head_dim)
    q = _rotary(_rms(q, None, eps), cis)
    kv = _rotary(_rms(F.linear(x, attn.wkv.weight), attn.kv_norm.weight, eps), cis)
    t = torch.arange(s).unsqueeze(1)
    keys = torch.arange(s).unsqueeze(0)
    valid = (keys <= t) & (keys > t - win)  # get_window_topk_idxs
    if attn.compressor is not None:
        entries = _compress(attn.compressor, x, cis)
        # get_compress_topk_idxs / indexer top-k keeping all (index_topk >= entries)
        ent_valid = torch.arange(entries.shape[0]).unsqueeze(0) < (t + 1) // ratio
        kv = torch.cat((kv, entries))
        valid = torch.cat((valid, ent_valid), dim=1)
    scores = torch.einsum("shd,kd->shk", q.float(), kv.float()) * c.head_dim**-0.5
    scores = scores.masked_fill(~valid.unsqueeze(1), float("-inf"))
    m = scores.amax(dim=-1)
    e = torch.exp(scores - m.unsqueeze(-1))
    denom = e.sum(-1) + torch.exp(attn.attn_sink.view(1, -1) - m)
    o = torch.einsum("shk,kd->shd", e / denom.unsqueeze(-1), kv.float())
    o = _rotary(o, cis, inverse=True).view(s, c.o_groups, -1)
    wo_a = attn.wo_a.weight.view(c.o_groups, c.o_lora_rank, -1)
    return F.linear(torch.einsum("sgd,grd->sgr", o, wo_a).flatten(1), attn.wo_b.weight)


def _expert(ex: Expert, x: torch.Tensor, limit: float) -> torch.Tensor:
    gate = F.linear(x, ex.w1.weight).clamp(max=limit)
    up = F.linear(x, ex.w3.weight).clamp(-limit, limit)
    return F.silu(gate) * up


def _moe(ffn: MoE, x: torch.Tensor, ids: torch.Tensor, c: ModelConfig) -> torch.Tensor:
    """Official `Gate` + `MoE.forward` (routed experts, then the shared one)."""
    scores = F.softplus(F.linear(x.float(), ffn.gate.weight.float())).sqrt()
    if ffn.gate.tid2eid is not None:
        indices = ffn.gate.tid2eid[ids]
    else:
        assert ffn.gate.bias is not None
        indices = (scores + ffn.gate.bias).topk(c.num_experts_per_tok, dim=-1)[1]
    weights = scores.gather(1, indices)
    weights = weights / weights.sum(dim=-1, keepdim=True) * c.routed_scaling_factor
    y = torch.zeros_like(x)
    for i in range(c.n_routed_experts):
        idx, top = torch.where(indices == i)
        if idx.numel():
            ex = ffn.experts[i]
            assert isinstance(ex, Expert)
            h = weights[idx, top, None] * _expert(ex, x[idx], c.swiglu_limit)
            y[idx] += F.linear(h, ex.w2.weight)
    sh = ffn.shared_experts
    return y + F.linear(_expert(sh, x, c.swiglu_limit), sh.w2.weight)


def _block(blk: Block, h: torch.Tensor, ids: torch.Tensor, c: ModelConfig) -> torch.Tensor:
    """Official `Block.forward`: hc_pre → norm → sublayer → hc_post, twice."""
    for fn, scale, base, norm, sub in (
        (blk.hc_attn_fn, blk.hc_attn_scale, blk.hc_attn_base, blk.attn_norm, "attn"),
        (blk.hc_ffn_fn, blk.hc_ffn_scale, blk.hc_ffn_base, blk.ffn_norm, "ffn"),
    ):
        pre, post, comb = _sinkhorn(_hc_mixes(h, fn, c.rms_norm_eps), scale, base, c)
        x = _rms((pre.unsqueeze(-1) * h).sum(dim=1), norm.weight, c.rms_norm_eps)
        out = _attention(blk.attn, x, c) if sub == "attn" else _moe(blk.ffn, x, ids, c)
        h = post.unsqueeze(-1) * out.unsqueeze(-2) + torch.sum(
            comb.unsqueeze(-1) * h.unsqueeze(-2), dim=1
        )
    return h


def _head(
    model: Transformer, h: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor,
    base: torch.Tensor, norm: RMSNorm,
) -> torch.Tensor:  # fmt: skip
    """Official `ParallelHead.hc_head` → norm → fp32 head, every position."""
    c = model.config
    pre = torch.sigmoid(_hc_mixes(h, fn, c.rms_norm_eps) * scale + base) + c.hc_eps
    x = _rms((pre.unsqueeze(-1) * h).sum(dim=1), norm.weight, c.rms_norm_eps)
    return F.linear(x.float(), model.head.weight)


def _official(model: Transformer, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Official `Transformer.forward` at start_pos 0: logits (s, vocab) and final streams."""
    h = model.embed.weight[ids].unsqueeze(1).repeat(1, model.config.hc_mult, 1)
    for blk in model.layers:
        assert isinstance(blk, Block)
        h = _block(blk, h, ids, model.config)
    logits = _head(model, h, model.hc_head_fn, model.hc_head_scale, model.hc_head_base, model.norm)
    return logits, h


def _distinct_hash_tables(model: Transformer, seed: int) -> Transformer:
    """Give every hash layer a table naming distinct experts per token, as a real `tid2eid`.

    `init_random` draws each slot independently (13 % of tiny's rows repeat an expert); the
    official `MoE.forward` adds a repeated expert once (`y[idx] += ...`), the engine's
    `index_add_` twice, so such a row would make the two differ for a reason no checkpoint has.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in model.layers:
            assert isinstance(blk, Block)
            table = blk.ffn.gate.tid2eid
            if table is not None:
                noise = torch.rand(table.shape[0], model.config.n_routed_experts, generator=gen)
                table.copy_(noise.argsort(dim=-1)[:, : table.shape[1]])
    return model


def test_engine_prefill_equals_the_official_forward() -> None:
    model = _distinct_hash_tables(Transformer(CONFIG).init_random(5).eval(), 5)
    ids = torch.tensor(random_ids(200, seed=7))
    seq = SequenceKV(KVBlockPool(CONFIG, 4))
    with torch.inference_mode():
        out = model.forward_step(ids, torch.arange(200), [(slice(0, 200), seq)])
        logits, streams = _official(model, ids)
    assert logits.abs().max() > 1.0  # a non-degenerate model
    torch.testing.assert_close(out.hidden, streams, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(out.logits[0], logits[-1], rtol=2e-5, atol=2e-5)


def test_engine_mtp_equals_the_official_mtp_block() -> None:
    """Official `MTPBlock.forward`: e_proj(enorm(embed(ids))) + h_proj(hnorm(streams)) → window-
    only block → its own hc_head and norm → the shared head."""
    model = Transformer(CONFIG).init_random(6).eval()
    ids = torch.tensor(random_ids(140, seed=8))
    seq = SequenceKV(KVBlockPool(CONFIG, 4))
    gen = torch.Generator().manual_seed(9)
    streams = torch.randn(140, CONFIG.hc_mult, CONFIG.hidden_size, generator=gen)
    mtp = model.mtp[0]
    assert isinstance(mtp, MTPBlock)
    c = CONFIG
    with torch.inference_mode():
        got = model.mtp_logits(streams, ids, torch.arange(140), seq)
        e = _rms(model.embed.weight[ids], mtp.enorm.weight, c.rms_norm_eps)
        x = F.linear(e, mtp.e_proj.weight).unsqueeze(1) + F.linear(
            _rms(streams, mtp.hnorm.weight, c.rms_norm_eps), mtp.h_proj.weight
        )
        h = _block(mtp, x, ids, c)
        want = _head(model, h, mtp.hc_head_fn, mtp.hc_head_scale, mtp.hc_head_base, mtp.norm)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)
