"""Attention operators of the reference engine: the pure-PyTorch path.

Three operators carry V4's attention-specific maths; `AttentionOps` is their interface so that
`kernel_ops.KernelOps` can route the same calls to `dsv4_kernels`:

- `compress`: the compressor's gated pooling of complete windows — per feature, a softmax over
  the window's rows of `score + ape` weights the KV projections (ratio 4: the previous window's
  rows join through the first half of the features, 8 rows per entry) — then RMSNorm and RoPE on
  the last dims at the window's first position.
- `indexer_topk`: the CSA lightning indexer — logit(t, i) = Σ_h w[t, h]·relu(q[t, h]·k[i]) over
  entries i < (t + 1) // ratio, then the top-k entries (padding -1).
- `attend`: multi-query attention of every head over one `head_dim` latent per key (K = V): the
  raw rows of positions t-window+1..t and the compressed entries (all complete ones for HCA, the
  chosen ones for CSA), with a per-head sink logit in the softmax denominator.

Semantics: DeepSeek-V4's reference `inference/model.py` (`Compressor`, `Indexer`, `sparse_attn`).
With `bf16_rounding` (the FP8-cache mode, see `kvquant.py`) the compressor rounds to bf16 where
bf16 activations would (pooled input of the norm, norm output, rotated output), as vLLM and
`dsv4_kernels` do.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import torch


@dataclasses.dataclass(frozen=True)
class CompressArgs:
    """Parameters of one compressor call (shapes for g windows of `ratio` rows, C·D features).

    Attributes:
        ape: (ratio, C·D) float32 positional bias, added to the gate scores by row in window.
        norm_weight: (D,) RMSNorm weight of the entries.
        eps: RMSNorm epsilon (`rms_norm_eps`).
        cos: (g, rope_dim/2) float32 cos of each entry's RoPE angles (its first position).
        sin: (g, rope_dim/2) float32 sin.
        ratio: 4 (CSA, overlapping) or 128 (HCA).
        bf16_rounding: round to bf16 as bf16 activations would (FP8-cache mode).
    """

    ape: torch.Tensor
    norm_weight: torch.Tensor
    eps: float
    cos: torch.Tensor
    sin: torch.Tensor
    ratio: int
    bf16_rounding: bool


class AttentionOps(Protocol):
    """The three attention operators (see the module docstring for their maths)."""

    name: str

    def compress(
        self,
        kv: torch.Tensor,
        score: torch.Tensor,
        prev: tuple[torch.Tensor, torch.Tensor] | None,
        args: CompressArgs,
    ) -> torch.Tensor:
        """Entries (g, D) float32 of g complete windows.

        Args:
            kv: (g·ratio, C·D) float32 `wkv` rows of the windows, first row at a window start.
            score: (g·ratio, C·D) float32 `wgate` rows (without `ape`).
            prev: for ratio 4, the (kv, score) rows (ratio, C·D) of the window before the first,
                or None at the sequence start (those rows get weight 0).
            args: the other parameters.
        """
        ...

    def indexer_topk(
        self,
        q: torch.Tensor,
        weights: torch.Tensor,
        k: torch.Tensor,
        positions: torch.Tensor,
        *,
        ratio: int,
        topk: int,
    ) -> torch.Tensor:
        """Chosen entries per query: q (n, h, d), weights (n, h), k (m, d) → (n, K) int64.

        Entries at or beyond (position + 1) // ratio are never chosen; -1 pads. K ≥ min(topk, m).
        """
        ...

    def attend(
        self,
        q: torch.Tensor,
        positions: torch.Tensor,
        window_rows: torch.Tensor,
        window_start: int,
        entries: torch.Tensor,
        chosen: torch.Tensor | None,
        *,
        ratio: int,
        sink: torch.Tensor,
        scale: float,
        window: int,
    ) -> torch.Tensor:
        """Attention output (n, h, D) in q's dtype for one request's n new queries.

        Args:
            q: (n, h, D) queries at consecutive `positions` (n,).
            positions: (n,) int64.
            window_rows: (w, D) raw KV rows of positions window_start..window_start+w-1, which
                include every position t-window+1..t of each query t.
            window_start: position of window_rows[0].
            entries: (m, D) compressed entries (m may be 0); unused when ratio is 0.
            chosen: (n, K) entry ids (CSA; -1 = none) or None (HCA: all entries < (t+1)//ratio).
            ratio: the layer's compress ratio (0: window only).
            sink: (h,) per-head sink logit.
            scale: softmax scale (head_dim ** -0.5).
            window: sliding window (128).
        """
        ...


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in float32: x (..., D), weight (D,)."""
    xf = x.float()
    return xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps) * weight.float()


def rope_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x (..., R) by cos/sin (..., R/2); float32."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


def _bf16(x: torch.Tensor, on: bool) -> torch.Tensor:
    return x.to(torch.bfloat16).float() if on else x


class TorchOps:
    """Pure-PyTorch implementation of `AttentionOps` (float32 maths)."""

    name = "torch"

    def compress(
        self,
        kv: torch.Tensor,
        score: torch.Tensor,
        prev: tuple[torch.Tensor, torch.Tensor] | None,
        args: CompressArgs,
    ) -> torch.Tensor:
        """See `AttentionOps.compress`."""
        r = args.ratio
        g = kv.shape[0] // r
        cd = kv.shape[1]
        kvw = kv.float().reshape(g, r, cd)
        scw = score.float().reshape(g, r, cd) + args.ape.float()
        if r == 4:  # overlap: previous window's first-half rows, then this window's second half
            d = cd // 2
            prev_kv = kvw.new_zeros(g, r, d)
            prev_sc = kvw.new_full((g, r, d), float("-inf"))
            prev_kv[1:], prev_sc[1:] = kvw[:-1, :, :d], scw[:-1, :, :d]
            if prev is not None:
                prev_kv[0] = prev[0].float()[:, :d]
                prev_sc[0] = prev[1].float()[:, :d] + args.ape.float()[:, :d]
            rows_kv = torch.cat((prev_kv, kvw[..., d:]), dim=1)
            rows_sc = torch.cat((prev_sc, scw[..., d:]), dim=1)
        else:
            d, rows_kv, rows_sc = cd, kvw, scw
        pooled = (rows_kv * rows_sc.softmax(dim=1)).sum(dim=1)
        rb = args.bf16_rounding
        y = _bf16(rms_norm(_bf16(pooled, rb), args.norm_weight, args.eps), rb)
        rd = 2 * args.cos.shape[-1]
        rot = rope_pairs(y[:, d - rd :], args.cos, args.sin)
        return _bf16(torch.cat((y[:, : d - rd], rot), dim=-1), rb)

    def indexer_topk(
        self,
        q: torch.Tensor,
        weights: torch.Tensor,
        k: torch.Tensor,
        positions: torch.Tensor,
        *,
        ratio: int,
        topk: int,
    ) -> torch.Tensor:
        """See `AttentionOps.indexer_topk`."""
        m = k.shape[0]
        logits = torch.einsum("nhd,md->nhm", q.float(), k.float()).relu()
        logits = (logits * weights.float().unsqueeze(-1)).sum(dim=1)
        ar = torch.arange(m, device=q.device).unsqueeze(0)
        valid = ar < ((positions + 1) // ratio).unsqueeze(1)
        logits = logits.masked_fill(~valid, float("-inf"))
        kk = min(topk, m)
        # a stable sort breaks ties (relu makes exact zeros common) by the lower index, the same
        # way for any batch shape; `topk` does not promise an order among equal logits
        top = torch.sort(logits, dim=-1, descending=True, stable=True).indices[:, :kk]
        return torch.where(valid.gather(1, top), top, torch.full_like(top, -1))

    def attend(
        self,
        q: torch.Tensor,
        positions: torch.Tensor,
        window_rows: torch.Tensor,
        window_start: int,
        entries: torch.Tensor,
        chosen: torch.Tensor | None,
        *,
        ratio: int,
        sink: torch.Tensor,
        scale: float,
        window: int,
    ) -> torch.Tensor:
        """See `AttentionOps.attend`."""
        offsets = positions.unsqueeze(1) - window + 1 + torch.arange(window, device=q.device)
        idxs = torch.where(offsets >= 0, offsets - window_start, -1)
        kv = window_rows.float()
        if ratio:
            w = window_rows.shape[0]
            if chosen is None:
                ar = torch.arange(entries.shape[0], device=q.device).unsqueeze(0)
                chosen = torch.where(ar < ((positions + 1) // ratio).unsqueeze(1), ar, -1)
            idxs = torch.cat((idxs, torch.where(chosen >= 0, chosen + w, -1)), dim=1)
            kv = torch.cat((kv, entries.float()))
        valid = idxs >= 0
        gathered = kv[idxs.clamp_min(0)]  # (n, K, D)
        scores = torch.einsum("nhd,nkd->nhk", q.float(), gathered) * scale
        scores = scores.masked_fill(~valid.unsqueeze(1), float("-inf"))
        sink_col = sink.float().view(1, -1, 1).expand(q.shape[0], -1, 1)
        probs = torch.softmax(torch.cat((scores, sink_col), dim=-1), dim=-1)[..., :-1]
        return torch.einsum("nhk,nkd->nhd", probs, gathered).to(q.dtype)
