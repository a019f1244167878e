"""The kernel path: `AttentionOps` served by `dsv4_kernels` (Triton on CUDA, references on CPU).

Each call packs the engine's KV rows into the kernels' formats (`dsv4_kernels.kv_format`):
fp8_ds_mla entries (584 B) for the window rows and compressed entries, laid out in vLLM's paged
block layout (`kv_format.paged_cache`: one token per SWA page, compressed entries in pages of
`comp_page_entries(ratio)` covering 256 tokens each, as vLLM blocks them), FP8 index-key pages
(132 B per key, 64 keys per page), and block tables that map this request's positions and entries
onto them. In the engine's FP8-cache mode (`kv_cache_dtype = "fp8_ds_mla"`, `kvquant.py`) the
stored values are exactly representable in those formats, so packing loses nothing and both paths
see the same numbers. Shapes the kernels fix: head_dim 512 (448 NoPE + 64 RoPE), index_head_dim
128, a power-of-two index_topk.

The packing is per call and per request, so this path measures the kernels, not a zero-copy
cache integration.
"""

from __future__ import annotations

import torch

from dsv4_kernels.compressor import compress
from dsv4_kernels.csa import CSA_RATIO, csa_attention
from dsv4_kernels.hca import HCA_RATIO, hca_attention
from dsv4_kernels.indexer import index_topk
from dsv4_kernels.kv_format import (
    HEAD_DIM,
    INDEX_DIM,
    pack_index_pages,
    paged_cache,
    quantize_fp8_ds_mla,
    quantize_index_keys,
)
from dsv4_kernels.sparse_mla import sparse_mla_attention

from .ops import CompressArgs

#: Keys per index page (vLLM C4 block: 64 entries), `dsv4_kernels.indexer.index_topk`.
INDEX_PAGE = 64

#: Tokens per vLLM KV-cache block for DeepSeek-V4 (256); a compressed page holds
#: BLOCK_TOKENS // ratio entries: 2 for HCA, 64 for CSA (`dsv4_kernels.hca`/`csa` docstrings).
BLOCK_TOKENS = 256


def comp_page_entries(ratio: int) -> int:
    """Compressed entries per cache page for `ratio` (0: window-only layers, laid out as CSA).

    Fixed per ratio, as vLLM's block size is, so the Triton kernels (whose page size is a
    compile-time constant) compile once per layer kind rather than once per entry count.
    """
    return BLOCK_TOKENS // (ratio or CSA_RATIO)


class KernelOps:
    """`AttentionOps` over `dsv4_kernels` (see the module docstring)."""

    name = "kernels"

    def compress(
        self,
        kv: torch.Tensor,
        score: torch.Tensor,
        prev: tuple[torch.Tensor, torch.Tensor] | None,
        args: CompressArgs,
    ) -> torch.Tensor:
        """`dsv4_kernels.compressor.compress` on one request's complete windows → (g, D)."""
        prev_kv = prev_score = None
        if prev is not None:
            prev_kv, prev_score = prev[0].float()[None], prev[1].float()[None]
        out = compress(
            kv.float()[None],
            score.float()[None],
            args.ape.float(),
            args.norm_weight.float(),
            args.cos[None],
            args.sin[None],
            args.ratio,
            prev_kv=prev_kv,
            prev_score=prev_score,
            eps=args.eps,
            out_format="bf16",
        )
        return out[0].float()

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
        """`dsv4_kernels.indexer.index_topk` over this request's keys → (n, topk) int64.

        q must already hold FP8 values (the engine's FP8 mode folds the query scales into
        `weights`); keys are packed into FP8 pages.

        Raises:
            ValueError: when the index head dim is not 128.
        """
        if k.shape[1] != INDEX_DIM:
            msg = f"the kernel path needs index_head_dim {INDEX_DIM}, got {k.shape[1]}"
            raise ValueError(msg)
        m = k.shape[0]
        pages = max(1, -(-m // INDEX_PAGE))
        padded = torch.zeros(pages * INDEX_PAGE, INDEX_DIM, device=k.device)
        padded[:m] = k.float()
        k8, scale = quantize_index_keys(padded)
        key_pages = pack_index_pages(k8, scale, INDEX_PAGE)
        table = torch.arange(pages, dtype=torch.int32, device=k.device)[None]
        n = q.shape[0]
        idx, _ = index_topk(
            q.float().to(torch.float8_e4m3fn),
            weights.float().contiguous(),
            key_pages,
            table,
            positions.to(torch.int32),
            torch.zeros(n, dtype=torch.int32, device=q.device),
            topk,
            page_size=INDEX_PAGE,
            ratio=ratio,
        )
        return idx.long()

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
        """Attention of one request through the kernels → (n, h, 512).

        `dsv4_kernels.hca.hca_attention` for HCA layers, `csa.csa_attention` for CSA layers, the
        shared `sparse_mla.sparse_mla_attention` for window-only layers.

        Raises:
            ValueError: when head_dim is not 512.
        """
        if q.shape[-1] != HEAD_DIM:
            msg = f"the kernel path needs head_dim {HEAD_DIM}, got {q.shape[-1]}"
            raise ValueError(msg)
        dev = q.device
        n = q.shape[0]
        length = int(positions[-1]) + 1
        # SWA cache, one token per page: page 0 is a dummy; position i of the window lives in
        # page i - window_start + 1
        swa_cache = paged_cache(
            quantize_fp8_ds_mla(
                torch.cat((window_rows.new_zeros(1, HEAD_DIM), window_rows)).float()
            ),
            1,
        )
        pos = torch.arange(length, device=dev)
        swa_table = torch.where(pos >= window_start, pos - window_start + 1, 0)
        m = entries.shape[0] if ratio else 0
        comp_rows = entries.float() if m else window_rows.new_zeros(1, HEAD_DIM).float()
        comp_page = comp_page_entries(ratio)
        comp_cache = paged_cache(quantize_fp8_ds_mla(comp_rows), comp_page)
        comp_table = torch.arange(comp_cache.shape[0], dtype=torch.int32, device=dev)[None]
        swa = (swa_cache, swa_table.to(torch.int32)[None], 1)
        comp = (comp_cache, comp_table, comp_page)
        seq_ids = torch.zeros(n, dtype=torch.int32, device=dev)
        pos32 = positions.to(torch.int32)
        if ratio == HCA_RATIO:
            out, _ = hca_attention(
                q.to(torch.bfloat16), pos32, seq_ids, *swa, *comp, sink.float(), scale,
                window=window, max_comp=m,
            )  # fmt: skip
        elif ratio == CSA_RATIO and chosen is not None:
            out, _ = csa_attention(
                q.to(torch.bfloat16), pos32, seq_ids, *swa, *comp, chosen.to(torch.int32),
                sink.float(), scale, window=window,
            )  # fmt: skip
        else:  # window only: the shared kernel with no compressed entry chosen
            none = torch.full((n, 1), -1, dtype=torch.int32, device=dev)
            out, _ = sparse_mla_attention(
                q.to(torch.bfloat16), pos32, seq_ids, *swa, *comp, CSA_RATIO, none,
                sink.float(), scale, window=window,
            )  # fmt: skip
        return out.to(q.dtype)
