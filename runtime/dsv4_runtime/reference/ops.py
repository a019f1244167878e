"""Attention operators of the reference engine: the pure-PyTorch path.

Three operators carry all of V4's attention-specific maths; `AttentionOps` is their interface so
that `kernel_ops.KernelOps` can route the same calls to `dsv4_kernels`:

- `compress_pool`: the compressor's gated pooling — per feature, a softmax over the window's slots
  of the gate scores (with the positional bias `ape` already added) weights the KV projections.
- `indexer_topk`: the CSA lightning indexer — score(t, i) = Σ_h w[t, h]·relu(q[t, h]·k[i]) over
  causal entries i < (t + 1) // ratio, then the top-k entries (padding -1).
- `sparse_attn`: multi-query attention of every head over one 512-d latent per key (K = V), the
  keys chosen by index lists (padding -1), with a per-head sink logit in the softmax denominator.

Semantics follow DeepSeek-V4's reference `inference/model.py` (`Compressor.forward`,
`Indexer.forward`) and its `sparse_attn` kernel.
"""

from __future__ import annotations

from typing import Protocol

import torch


class AttentionOps(Protocol):
    """The three attention operators (see the module docstring for their maths)."""

    name: str

    def compress_pool(self, kv: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Pool windows: kv, score (e, slots, d) float32 → (e, d) float32."""
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
        """Top-k compressed entries per query: q (n, h, d), weights (n, h), k (m, d) → (n, K) int64.

        K = min(topk, m); entries at or beyond (position + 1) // ratio are invalid and come back -1.
        """
        ...

    def sparse_attn(
        self,
        q: torch.Tensor,
        kv: torch.Tensor,
        sink: torch.Tensor,
        idxs: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """Attention of q (n, h, d) over kv rows (m, d) chosen by idxs (n, K) (-1 = none).

        The softmax over the chosen keys includes the per-head sink logit `sink` (h,) in its
        denominator; returns (n, h, d) in q's dtype.
        """
        ...


class TorchOps:
    """Pure-PyTorch implementation of `AttentionOps` (float32 maths)."""

    name = "torch"

    def compress_pool(self, kv: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """See `AttentionOps.compress_pool`."""
        return (kv * score.softmax(dim=1)).sum(dim=1)

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
        scores = torch.einsum("nhd,md->nhm", q.float(), k.float()).relu()
        scores = (scores * weights.float().unsqueeze(-1)).sum(dim=1)
        valid = torch.arange(m, device=q.device).unsqueeze(0) < (
            (positions + 1) // ratio
        ).unsqueeze(1)
        scores = scores.masked_fill(~valid, float("-inf"))
        kk = min(topk, m)
        # a stable sort breaks ties (relu makes exact zeros common) by the lower index, the same
        # way for any batch shape; `topk` does not promise an order among equal scores
        top = torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :kk]
        chosen_valid = valid.gather(1, top)
        return torch.where(chosen_valid, top, torch.full_like(top, -1))

    def sparse_attn(
        self,
        q: torch.Tensor,
        kv: torch.Tensor,
        sink: torch.Tensor,
        idxs: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """See `AttentionOps.sparse_attn`."""
        valid = idxs >= 0
        gathered = kv.float()[idxs.clamp_min(0)]  # (n, K, d)
        scores = torch.einsum("nhd,nkd->nhk", q.float(), gathered) * scale
        scores = scores.masked_fill(~valid.unsqueeze(1), float("-inf"))
        sink_col = sink.float().view(1, -1, 1).expand(q.shape[0], -1, 1)
        probs = torch.softmax(torch.cat((scores, sink_col), dim=-1), dim=-1)[..., :-1]
        return torch.einsum("nhk,nkd->nhd", probs, gathered).to(q.dtype)
