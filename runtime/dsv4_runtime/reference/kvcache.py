"""Paged compressed KV cache and the per-request fixed state.

Layout (facts doc §2, §5.1, §7.2):

- The compressed entries of every layer live in a shared pool of blocks. One block covers
  `block_size` tokens of a request (256, vLLM's `--block-size` for V4) and holds, per layer,
  `block_size / ratio` main entries of `head_dim` elements (CSA: 64, HCA: 2) plus, for CSA layers,
  `block_size / 4` indexer keys of `index_head_dim` elements. SWA-only layers hold nothing there.
  So a block costs `block_size × growth_bytes_per_token` bytes, with growth per layer and token
  SWA 0, CSA e_main/4 + e_idx/4, HCA e_main/128.
- Fixed per running request (not paged): the last `sliding_window` raw KV rows of every layer and
  the compressors' rings of raw projections not yet pooled (C4: ≤ 8 tokens, C128: ≤ 128 tokens).
"""

from __future__ import annotations

import dataclasses

import torch

from .config import CSA_RATIO, ModelConfig

#: Tokens per KV block: vLLM requires `--block-size 256` for DeepSeek-V4 (facts §5.1, S3/R1).
DEFAULT_BLOCK_SIZE = 256


def dtype_of(name: str) -> torch.dtype:
    """Torch dtype for a config dtype name ("float32" | "bfloat16")."""
    return torch.float32 if name == "float32" else torch.bfloat16


@dataclasses.dataclass
class CompressorState:
    """Raw projections (float32) of tokens not yet pooled, from position `start` on.

    `kv` and `score` are (rows, coff·d); `score` has the positional bias `ape` added. `start` is a
    multiple of the ratio: the previous complete window (CSA, overlap) or the current one (HCA).
    """

    kv: torch.Tensor
    score: torch.Tensor
    start: int = 0


@dataclasses.dataclass
class LayerState:
    """One request's fixed state in one layer: window rows and compressor rings."""

    window: torch.Tensor
    window_start: int = 0
    compressor: CompressorState | None = None
    indexer: CompressorState | None = None
    entries: int = 0


class KVBlockPool:
    """Fixed pool of KV blocks shared by all requests (the paged compressed cache).

    Args:
        config: model configuration (layer ratios, head sizes, dtype).
        num_blocks: blocks in the pool; each covers `block_size` tokens of one request.
        block_size: tokens per block; a multiple of the largest compress ratio (128).
        device: where the pool lives.

    Raises:
        ValueError: when `block_size` is not a positive multiple of 128 or `num_blocks` < 1.
    """

    def __init__(
        self,
        config: ModelConfig,
        num_blocks: int,
        block_size: int = DEFAULT_BLOCK_SIZE,
        device: torch.device | str = "cpu",
    ) -> None:
        max_ratio = max([r for r in config.layer_ratios if r] or [1])
        if block_size <= 0 or block_size % max_ratio:
            msg = f"block_size={block_size} must be a positive multiple of {max_ratio}"
            raise ValueError(msg)
        if num_blocks < 1:
            msg = f"num_blocks={num_blocks} must be at least 1"
            raise ValueError(msg)
        self.config = config
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.dtype = dtype_of(config.dtype)
        self.device = torch.device(device)
        self.main: dict[int, torch.Tensor] = {}
        self.index: dict[int, torch.Tensor] = {}
        for layer, ratio in enumerate(config.layer_ratios):
            if ratio == 0:
                continue
            self.main[layer] = torch.zeros(
                num_blocks, block_size // ratio, config.head_dim, dtype=self.dtype, device=device
            )
            if ratio == CSA_RATIO:
                self.index[layer] = torch.zeros(
                    num_blocks,
                    block_size // ratio,
                    config.index_head_dim,
                    dtype=self.dtype,
                    device=device,
                )
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))

    @property
    def entry_bytes(self) -> tuple[int, int]:
        """(main entry, indexer entry) bytes: head_dim and index_head_dim × element size."""
        elem = torch.empty((), dtype=self.dtype).element_size()
        return self.config.head_dim * elem, self.config.index_head_dim * elem

    @property
    def bytes_per_block(self) -> int:
        """Bytes of one block over all layers (main + indexer entries)."""
        total = sum(t[0].numel() * t.element_size() for t in self.main.values())
        return total + sum(t[0].numel() * t.element_size() for t in self.index.values())

    @property
    def free_blocks(self) -> int:
        """Blocks not held by any request."""
        return len(self._free)

    @property
    def usage(self) -> float:
        """Share of blocks in use, 0..1 (`vllm:kv_cache_usage_perc`)."""
        return 1.0 - len(self._free) / self.num_blocks

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks a request of `num_tokens` tokens needs."""
        return -(-num_tokens // self.block_size)

    def allocate(self, count: int) -> list[int]:
        """Take `count` free blocks.

        Raises:
            MemoryError: when fewer than `count` blocks are free (callers check `free_blocks`).
        """
        if count > len(self._free):
            msg = f"KV pool exhausted: need {count} blocks, {len(self._free)} free"
            raise MemoryError(msg)
        return [self._free.pop() for _ in range(count)]

    def release(self, blocks: list[int]) -> None:
        """Return blocks to the pool."""
        self._free.extend(reversed(blocks))


class SequenceKV:
    """One request's KV: its block table in the pool plus its fixed per-layer state."""

    def __init__(self, pool: KVBlockPool) -> None:
        self.pool = pool
        config = pool.config
        self.blocks: list[int] = []
        self.num_tokens = 0
        device = pool.device
        self.layers: list[LayerState] = []
        for ratio in config.compress_ratios:  # main layers, then MTP layers (window only)
            state = LayerState(
                window=torch.zeros(0, config.head_dim, dtype=pool.dtype, device=device)
            )
            if ratio and len(self.layers) < config.num_hidden_layers:
                coff = 2 if ratio == CSA_RATIO else 1
                empty = torch.zeros(0, coff * config.head_dim, device=device)
                state.compressor = CompressorState(kv=empty, score=empty.clone())
                if ratio == CSA_RATIO:
                    iempty = torch.zeros(0, 2 * config.index_head_dim, device=device)
                    state.indexer = CompressorState(kv=iempty, score=iempty.clone())
            self.layers.append(state)

    def blocks_needed(self, new_tokens: int) -> int:
        """Extra blocks needed to append `new_tokens` tokens."""
        return max(0, self.pool.blocks_for(self.num_tokens + new_tokens) - len(self.blocks))

    def reserve(self, new_tokens: int) -> None:
        """Allocate the blocks for `new_tokens` more tokens.

        Raises:
            MemoryError: when the pool has too few free blocks.
        """
        need = self.blocks_needed(new_tokens)
        if need:
            self.blocks.extend(self.pool.allocate(need))

    def release(self) -> None:
        """Give all blocks back (finish or preemption)."""
        self.pool.release(self.blocks)
        self.blocks = []

    def _slots(self, layer: int, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        per_block = self.pool.main[layer].shape[1]
        device = self.pool.main[layer].device
        idx = torch.arange(start, start + count, device=device)
        table = torch.tensor(self.blocks, dtype=torch.long, device=device)
        return table[idx // per_block], idx % per_block

    def write(self, layer: int, main: torch.Tensor, index: torch.Tensor | None) -> None:
        """Append compressed entries (e, head_dim) and indexer keys (e, index_head_dim)."""
        state = self.layers[layer]
        count = main.shape[0]
        if count == 0:
            return
        blk, off = self._slots(layer, state.entries, count)
        self.pool.main[layer][blk, off] = main.to(self.pool.dtype)
        if index is not None:
            self.pool.index[layer][blk, off] = index.to(self.pool.dtype)
        state.entries += count

    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All compressed entries of a layer, (entries, head_dim), and its indexer keys or None."""
        state = self.layers[layer]
        blk, off = self._slots(layer, 0, state.entries)
        main = self.pool.main[layer][blk, off]
        index = self.pool.index[layer][blk, off] if layer in self.pool.index else None
        return main, index

    def compressed_bytes(self) -> int:
        """Bytes of compressed entries written for this request (main + indexer), all layers."""
        e_main, e_idx = self.pool.entry_bytes
        total = 0
        for layer, state in enumerate(self.layers):
            total += state.entries * e_main
            if layer in self.pool.index:
                total += state.entries * e_idx
        return total

    def block_bytes(self) -> int:
        """Bytes of the pool blocks this request holds."""
        return len(self.blocks) * self.pool.bytes_per_block

    def state_bytes(self) -> int:
        """Bytes of the fixed state now held (windows and compressor rings)."""
        total = 0
        for state in self.layers:
            total += state.window.numel() * state.window.element_size()
            for comp in (state.compressor, state.indexer):
                if comp is not None:
                    total += (comp.kv.numel() + comp.score.numel()) * 4
        return total
