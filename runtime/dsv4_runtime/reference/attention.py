"""DeepSeek-V4 hybrid attention: sliding window (SWA), CSA (ratio 4 + indexer) and HCA (ratio 128).

Per layer (facts doc §2; reference `inference/model.py` `Attention`, `Compressor`, `Indexer`):

- Q: `wq_a` → `q_norm` → `wq_b` → per-head RMS scale → RoPE on the last 64 dims.
- KV: `wkv` → `kv_norm` → RoPE on the last 64 dims; one `head_dim` row per token is K and V of all
  heads (one KV head).
- Keys of the query at position t: the raw rows of positions t-127..t (window 128, every layer),
  plus compressed entries i < (t + 1) // ratio — all of them in HCA layers, the indexer's top-k in
  CSA layers. Softmax with a per-head sink logit; the output is rotated back (inverse RoPE), then
  the grouped low-rank output projection `wo_a` (o_groups blocks) and `wo_b`.

The three attention operators go through an `AttentionOps` (pure PyTorch or `dsv4_kernels`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from typing_extensions import override

from .config import CSA_RATIO, ModelConfig
from .kvcache import CompressorState, SequenceKV, dtype_of
from .kvquant import quantize_index_queries, round_index_keys, round_main_kv
from .layers import Linear, RMSNorm, Rope, rms_scale
from .ops import AttentionOps, CompressArgs


class Compressor(nn.Module):
    """Gated pooling of `ratio` tokens into one entry of `head_dim` elements.

    Ratio 4 (CSA) uses overlapping windows: projections are 2·head_dim wide; entry i pools the
    first halves of tokens of window i-1 and the second halves of window i (8 slots, coff = 2).
    Ratio 128 (HCA) pools one window. Parameters (checkpoint names): `ape` (ratio, coff·d) fp32,
    `wkv`/`wgate` (coff·d, hidden) — BF16 in the checkpoint, fp32 here as in the reference — and
    `norm`. The pooled entry is normalised and RoPE'd at the window's first position.
    """

    def __init__(self, config: ModelConfig, ratio: int, head_dim: int) -> None:
        super().__init__()
        self.ratio = ratio
        self.head_dim = head_dim
        self.overlap = ratio == CSA_RATIO
        coff = 2 if self.overlap else 1
        self.ape = nn.Parameter(torch.zeros(ratio, coff * head_dim))
        self.wkv = Linear(config.hidden_size, coff * head_dim, dtype=torch.float32)
        self.wgate = Linear(config.hidden_size, coff * head_dim, dtype=torch.float32)
        self.norm = RMSNorm(head_dim, config.rms_norm_eps)
        self.dtype = dtype_of(config.dtype)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """KV and gate projections (n, coff·d) in float32 of hidden states x (n, hidden)."""
        xf = x.float()
        return self.wkv(xf), self.wgate(xf)

    def append(
        self,
        state: CompressorState,
        kv: torch.Tensor,
        score: torch.Tensor,
        start: int,
        *,
        ops: AttentionOps,
        rope: Rope,
        bf16_rounding: bool,
    ) -> torch.Tensor:
        """Feed the projections of tokens start..start+n-1; return the entries they complete.

        Returns (e, head_dim) entries in the model dtype, e = (start + n) // ratio - start //
        ratio; updates `state` to keep only the rows still needed (the current window, and for
        ratio 4 the previous one).
        """
        r, n = self.ratio, kv.shape[0]
        all_kv = torch.cat((state.kv, kv))
        all_score = torch.cat((state.score, score))
        first, last = start // r, (start + n) // r
        entries = torch.zeros(0, self.head_dim, dtype=self.dtype, device=kv.device)
        if last > first:
            a, b = first * r - state.start, last * r - state.start
            prev = None
            if self.overlap and first > 0:
                p = a - r
                prev = (all_kv[p:a], all_score[p:a])
            cos, sin = rope.cos_sin(torch.arange(first, last, device=kv.device) * r)
            args = CompressArgs(
                ape=self.ape,
                norm_weight=self.norm.weight,
                eps=self.norm.eps,
                cos=cos,
                sin=sin,
                ratio=r,
                bf16_rounding=bf16_rounding,
            )
            entries = ops.compress(all_kv[a:b], all_score[a:b], prev, args).to(self.dtype)
        keep_from = max(0, (last - (1 if self.overlap else 0)) * r)
        cut = keep_from - state.start
        state.kv, state.score, state.start = all_kv[cut:], all_score[cut:], keep_from
        return entries


class Indexer(nn.Module):
    """CSA lightning indexer (checkpoint names `wq_b`, `weights_proj`, `compressor.*`).

    `index_n_heads` × `index_head_dim` queries from the Q latent, its own ratio-4 compressor for
    keys, per-head weights `weights_proj` scaled by d^-0.5 · h^-0.5.

    The reference rotates q and k by a Hadamard matrix and simulates FP4 before scoring; a rotation
    applied to both sides leaves q·k unchanged, so without the FP4 simulation it is omitted here.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.index_n_heads
        self.head_dim = config.index_head_dim
        self.topk = config.index_topk
        dtype = dtype_of(config.dtype)
        self.wq_b = Linear(config.q_lora_rank, self.n_heads * self.head_dim, dtype=dtype)
        self.weights_proj = Linear(config.hidden_size, self.n_heads, dtype=dtype)
        self.compressor = Compressor(config, CSA_RATIO, self.head_dim)
        self.scale = self.head_dim**-0.5 * self.n_heads**-0.5


class Attention(nn.Module):
    """One V4 attention layer (see the module docstring).

    Checkpoint names: `wq_a`, `q_norm`, `wq_b`, `wkv`, `kv_norm`, `wo_a`, `wo_b`, `attn_sink`,
    `compressor.*`, `indexer.*`.
    """

    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.n_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.rope_dim = config.qk_rope_head_dim
        self.n_groups = config.o_groups
        self.o_lora_rank = config.o_lora_rank
        self.window = config.sliding_window
        self.ratio = config.compress_ratios[layer_id]
        self.eps = config.rms_norm_eps
        self.fp8 = config.kv_cache_dtype == "fp8_ds_mla"
        dtype = dtype_of(config.dtype)
        self.attn_sink = nn.Parameter(torch.zeros(self.n_heads))
        self.wq_a = Linear(config.hidden_size, config.q_lora_rank, dtype=dtype)
        self.q_norm = RMSNorm(config.q_lora_rank, self.eps)
        self.wq_b = Linear(config.q_lora_rank, self.n_heads * self.head_dim, dtype=dtype)
        self.wkv = Linear(config.hidden_size, self.head_dim, dtype=dtype)
        self.kv_norm = RMSNorm(self.head_dim, self.eps)
        self.wo_a = Linear(
            self.n_heads * self.head_dim // self.n_groups,
            self.n_groups * self.o_lora_rank,
            dtype=dtype,
        )
        self.wo_b = Linear(self.n_groups * self.o_lora_rank, config.hidden_size, dtype=dtype)
        self.scale = self.head_dim**-0.5
        self.compressor: Compressor | None = None
        self.indexer: Indexer | None = None
        if self.ratio:
            self.compressor = Compressor(config, self.ratio, self.head_dim)
            if self.ratio == CSA_RATIO:
                self.indexer = Indexer(config)
            self.rope = Rope(
                self.rope_dim,
                config.compress_rope_theta,
                factor=config.rope_factor,
                original_seq_len=config.original_max_position_embeddings,
                beta_fast=config.beta_fast,
                beta_slow=config.beta_slow,
            )
        else:  # window-only layers: base theta, YaRN off (reference `Attention.__init__`)
            self.rope = Rope(
                self.rope_dim,
                config.rope_theta,
                factor=1.0,
                original_seq_len=0,
                beta_fast=config.beta_fast,
                beta_slow=config.beta_slow,
            )

    @override
    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        seqs: list[tuple[slice, SequenceKV]],
        ops: AttentionOps,
    ) -> torch.Tensor:
        """Attention for a flat batch of new tokens.

        Args:
            x: normalised hidden states (T, hidden) of all new tokens of all requests.
            positions: their positions (T,), int64.
            seqs: per request, the slice of its tokens in `x` (consecutive positions continuing its
                cache) and its `SequenceKV`, which is updated.
            ops: the attention operators.

        Returns:
            (T, hidden) attention output.
        """
        t_total = x.shape[0]
        fp8 = self.fp8
        qr = self.q_norm(self.wq_a(x))
        q = self.wq_b(qr).view(t_total, self.n_heads, self.head_dim)
        q = self.rope.apply(rms_scale(q, self.eps), positions)
        kv = self.rope.apply(self.kv_norm(self.wkv(x)), positions)
        if fp8:  # bf16 queries, FP8-cache KV rows (kvquant.py)
            q = q.to(torch.bfloat16).to(q.dtype)
            kv = round_main_kv(kv, self.rope_dim)
        proj = _Projections()
        if self.compressor is not None:
            proj.comp = self.compressor.project(x)
        if self.indexer is not None:
            idx_q = self.indexer.wq_b(qr).view(t_total, self.indexer.n_heads, -1)
            proj.idx_q = self.rope.apply(idx_q, positions)
            proj.idx_w = self.indexer.weights_proj(x).float() * self.indexer.scale
            if fp8:
                proj.idx_q, proj.idx_w = quantize_index_queries(proj.idx_q, proj.idx_w)
            proj.idx = self.indexer.compressor.project(x)
        out = torch.empty_like(q)
        for sl, seq in seqs:
            state = seq.layers[self.layer_id]
            pos = positions[sl]
            local = torch.cat((state.window, kv[sl]))
            chosen, entries = None, local[:0]
            if self.compressor is not None:
                chosen, entries = self._compressed(seq, sl, pos, proj, ops)
            out[sl] = ops.attend(
                q[sl],
                pos,
                local,
                state.window_start,
                entries,
                chosen,
                ratio=self.ratio,
                sink=self.attn_sink,
                scale=self.scale,
                window=self.window,
            )
            state.window = local[-self.window :]
            state.window_start = int(pos[-1]) + 1 - state.window.shape[0]
        if fp8:
            out = out.to(torch.bfloat16).to(q.dtype)
        o = self.rope.apply(out, positions, inverse=True)
        o = o.view(t_total, self.n_groups, -1)
        wo_a = self.wo_a.weight.view(self.n_groups, self.o_lora_rank, -1)
        o = torch.einsum("tgd,grd->tgr", o.to(wo_a.dtype), wo_a)
        result: torch.Tensor = self.wo_b(o.flatten(1))
        return result

    def _compressed(
        self,
        seq: SequenceKV,
        sl: slice,
        pos: torch.Tensor,
        proj: _Projections,
        ops: AttentionOps,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Extend the compressed cache; return (chosen entry ids (n, K) or None, entries (m, d))."""
        state = seq.layers[self.layer_id]
        start = int(pos[0])
        if self.compressor is None or state.compressor is None or proj.comp is None:
            msg = f"layer {self.layer_id} has no compressor state"
            raise RuntimeError(msg)
        entries = self.compressor.append(
            state.compressor,
            proj.comp[0][sl],
            proj.comp[1][sl],
            start,
            ops=ops,
            rope=self.rope,
            bf16_rounding=self.fp8,
        )
        if self.fp8:
            entries = round_main_kv(entries, self.rope_dim)
        index_keys = None
        if self.indexer is not None and proj.idx is not None and state.indexer is not None:
            index_keys = self.indexer.compressor.append(
                state.indexer,
                proj.idx[0][sl],
                proj.idx[1][sl],
                start,
                ops=ops,
                rope=self.rope,
                bf16_rounding=self.fp8,
            )
            if self.fp8:
                index_keys = round_index_keys(index_keys)
        seq.write(self.layer_id, entries, index_keys)
        main, keys = seq.read(self.layer_id)
        if self.indexer is None or keys is None:
            return None, main
        if proj.idx_q is None or proj.idx_w is None:
            msg = f"layer {self.layer_id}: indexer projections missing"
            raise RuntimeError(msg)
        chosen = ops.indexer_topk(
            proj.idx_q[sl], proj.idx_w[sl], keys, pos, ratio=self.ratio, topk=self.indexer.topk
        )
        return chosen, main


@dataclasses.dataclass
class _Projections:
    """Per-step projections of the compressor and indexer (float32 pairs: kv, gate)."""

    comp: tuple[torch.Tensor, torch.Tensor] | None = None
    idx: tuple[torch.Tensor, torch.Tensor] | None = None
    idx_q: torch.Tensor | None = None
    idx_w: torch.Tensor | None = None
