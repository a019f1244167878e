"""Decode benchmark of the reference engine: tokens/s and the attention share of a step.

`python -m dsv4_runtime.reference.bench --config mid --device cuda --batch 1 16 64
--context 8192 131072 [--attention-impl torch|kernels]` prints one line per (batch, context).

Each request's cache is filled synthetically to `context` tokens (random FP8-rounded window rows,
compressed entries and indexer keys in the paged pool, compressor rings at the right fill), so a
128K context needs no prefill; then `--steps` decode steps of the whole batch are timed. The
attention share comes from a second, synchronised pass that times every attention layer (its
projections included) and, within it, the three attention operators.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .__main__ import attention_ops
from .attention import Attention
from .config import CSA_RATIO, PRESETS, ModelConfig, preset
from .kvcache import KVBlockPool, SequenceKV
from .kvquant import round_index_keys, round_main_kv
from .model import Transformer
from .ops import AttentionOps


def fill_synthetic(seq: SequenceKV, context: int, gen: torch.Generator) -> None:
    """Give `seq` the state of a request that has computed `context` tokens (random values).

    Raises:
        MemoryError: when the pool has too few free blocks.
    """
    config = seq.pool.config
    device, dtype = seq.pool.device, seq.pool.dtype
    seq.reserve(context)
    seq.num_tokens = context

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=device)

    for layer, state in enumerate(seq.layers):
        rows = min(context, config.sliding_window)
        state.window = round_main_kv(randn(rows, config.head_dim), config.qk_rope_head_dim).to(
            dtype
        )
        state.window_start = context - rows
        ratio = config.compress_ratios[layer] if layer < config.num_hidden_layers else 0
        if not ratio or state.compressor is None:
            continue
        entries = context // ratio
        main = round_main_kv(randn(entries, config.head_dim), config.qk_rope_head_dim)
        keys = round_index_keys(randn(entries, config.index_head_dim)) if state.indexer else None
        seq.write(layer, main, keys)
        start = max(0, (entries - (1 if ratio == CSA_RATIO else 0)) * ratio)
        for comp in (state.compressor, state.indexer):
            if comp is not None:
                comp.kv = randn(context - start, comp.kv.shape[1])
                comp.score = randn(context - start, comp.score.shape[1])
                comp.start = start


class _TimedOps:
    """Wraps `AttentionOps`, adding the synchronised time of every call to `seconds`."""

    def __init__(self, inner: AttentionOps, sync: Callable[[], None]) -> None:
        self.inner = inner
        self.name = inner.name
        self.sync = sync
        self.seconds = 0.0

    def _timed(self, fn: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        self.sync()
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.sync()
        self.seconds += time.perf_counter() - t0
        return out

    def compress(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._timed(self.inner.compress, *args, **kwargs)

    def indexer_topk(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._timed(self.inner.indexer_topk, *args, **kwargs)

    def attend(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._timed(self.inner.attend, *args, **kwargs)


@dataclasses.dataclass(frozen=True)
class BenchResult:
    """One measurement: decode tokens/s, mean step seconds, attention-layer and -operator shares."""

    batch: int
    context: int
    tokens_per_s: float
    step_s: float
    attention_share: float
    attention_ops_share: float


def run_case(
    model: Transformer,
    ops: AttentionOps,
    *,
    batch: int,
    context: int,
    steps: int,
    seed: int = 0,
) -> BenchResult:
    """Time `steps` decode steps of `batch` requests at `context` tokens each."""
    config = model.config
    device = next(model.parameters()).device
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    pool = KVBlockPool(config, batch * (-(-(context + 2 * steps) // 256)), device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    seqs = [SequenceKV(pool) for _ in range(batch)]
    for seq in seqs:
        fill_synthetic(seq, context, gen)
    ids = torch.randint(0, 256, (batch,), generator=gen, device=device)

    def step() -> None:
        positions = torch.tensor([s.num_tokens for s in seqs], device=device)
        model.forward_step(ids, positions, [(slice(i, i + 1), s) for i, s in enumerate(seqs)], ops)

    with torch.inference_mode():
        step()  # warm-up
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        elapsed = time.perf_counter() - t0
        timed = _TimedOps(ops, sync)
        layer_seconds = [0.0]
        starts: dict[int, float] = {}

        def pre(mod: torch.nn.Module, _args: object) -> None:
            sync()
            starts[id(mod)] = time.perf_counter()

        def post(mod: torch.nn.Module, _args: object, _out: object) -> None:
            sync()
            layer_seconds[0] += time.perf_counter() - starts[id(mod)]

        hooks = []
        for mod in model.modules():
            if isinstance(mod, Attention):
                hooks += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
        sync()
        t1 = time.perf_counter()
        for _ in range(steps):
            positions = torch.tensor([s.num_tokens for s in seqs], device=device)
            seq_args = [(slice(i, i + 1), s) for i, s in enumerate(seqs)]
            model.forward_step(ids, positions, seq_args, timed)
        sync()
        timed_total = time.perf_counter() - t1
        for h in hooks:
            h.remove()
    return BenchResult(
        batch=batch,
        context=context,
        tokens_per_s=batch * steps / elapsed,
        step_s=elapsed / steps,
        attention_share=layer_seconds[0] / timed_total,
        attention_ops_share=timed.seconds / timed_total,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: print one line per (batch, context)."""
    p = argparse.ArgumentParser(prog="python -m dsv4_runtime.reference.bench")
    p.add_argument("--config", default="mid", choices=sorted(PRESETS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--context", type=int, nargs="+", default=[8192, 131072])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--attention-impl", choices=["torch", "kernels"], default="torch")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    config: ModelConfig = preset(args.config)
    if args.device == "cpu":
        torch.set_num_threads(1)
    with torch.device(args.device):
        model = Transformer(config)
    model.init_random(args.seed).eval()
    ops = attention_ops(args.attention_impl)
    print(
        f"config={args.config} params={model.param_count() / 1e9:.3f}B device={args.device} "
        f"attention={ops.name} steps={args.steps}"
    )
    for context in args.context:
        for batch in args.batch:
            r = run_case(model, ops, batch=batch, context=context, steps=args.steps, seed=args.seed)
            print(
                f"batch={r.batch:4d} context={r.context:7d} tokens/s={r.tokens_per_s:10.1f} "
                f"step_ms={r.step_s * 1e3:9.2f} attention_layers={r.attention_share:6.1%} "
                f"attention_ops={r.attention_ops_share:6.1%}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
