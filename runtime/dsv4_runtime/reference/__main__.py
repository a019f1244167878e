"""`python -m dsv4_runtime.reference`: serve the reference engine over an OpenAI-compatible API.

The launcher (`dsv4-runtime --engine reference`) starts it as
`python -m dsv4_runtime.reference --host H --port P --config tiny --served-model-name NAME
--max-num-seqs N --max-model-len N --seed S`; `--checkpoint DIR` loads official-format weights
instead of the seeded random init, `--attention-impl kernels` routes attention through
`dsv4_kernels`. SIGTERM or SIGINT: stop admitting (503), finish running and queued requests, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from aiohttp import web

from .checkpoint import load_checkpoint
from .config import PRESETS, ModelConfig, preset
from .engine import Engine
from .kvcache import DEFAULT_BLOCK_SIZE, KVBlockPool
from .metrics import EngineMetrics
from .model import Transformer
from .ops import AttentionOps, TorchOps
from .server import EngineServer

log = logging.getLogger("dsv4_runtime.reference")


def parser() -> argparse.ArgumentParser:
    """The command-line interface (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m dsv4_runtime.reference", description=__doc__)
    p.add_argument("--host", default="0.0.0.0")  # noqa: S104  (a server in a pod listens on all)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--config", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--max-num-seqs", type=int, default=8)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, default=None, help="official-format checkpoint dir")
    p.add_argument("--attention-impl", choices=["torch", "kernels"], default="torch")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None)
    p.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE)
    p.add_argument(
        "--num-kv-blocks",
        type=int,
        default=None,
        help="KV pool blocks (default: max-num-seqs × blocks of max-model-len, within "
        "--kv-cache-memory)",
    )
    p.add_argument(
        "--kv-cache-memory",
        type=int,
        default=None,
        help="bytes for the paged KV pool (default: 1 GiB on CPU, 40%% of free GPU memory)",
    )
    p.add_argument("--max-num-batched-tokens", type=int, default=2048)
    p.add_argument("--torch-threads", type=int, default=None, help="CPU threads (default 1 on CPU)")
    return p


def attention_ops(impl: str) -> AttentionOps:
    """The attention operators for `--attention-impl`.

    Raises:
        RuntimeError: `kernels` requested but `dsv4_kernels` lacks the functions it needs.
    """
    if impl == "kernels":
        from .kernel_ops import KernelOps  # noqa: PLC0415  (optional dependency on the kernels)

        return KernelOps()
    return TorchOps()


def kv_blocks(args: argparse.Namespace, config: ModelConfig, device: str) -> int:
    """Blocks of the KV pool.

    Enough for `--max-num-seqs` requests of `--max-model-len` tokens, capped by
    `--kv-cache-memory`; `--num-kv-blocks` overrides.

    Raises:
        ValueError: when not even one `--max-model-len` request fits (names the flags).
    """
    per_seq = -(-args.max_model_len // args.block_size)
    if args.num_kv_blocks:
        return int(args.num_kv_blocks)
    block_bytes = KVBlockPool(config, 1, args.block_size, device="meta").bytes_per_block
    budget = args.kv_cache_memory
    if budget is None:
        if device.startswith("cuda"):
            free, _total = torch.cuda.mem_get_info(torch.device(device))
            budget = int(free * 0.4)
        else:
            budget = 2**30
    cap = budget // max(block_bytes, 1)
    if cap < per_seq:
        msg = (
            f"--kv-cache-memory {budget} B holds {cap} blocks of {block_bytes} B; one "
            f"--max-model-len {args.max_model_len} request needs {per_seq}"
        )
        raise ValueError(msg)
    return int(min(args.max_num_seqs * per_seq, cap))


def build(args: argparse.Namespace) -> EngineServer:
    """Model, KV pool, engine and server from parsed arguments."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        torch.set_num_threads(args.torch_threads or 1)
    if args.checkpoint is not None:
        model = load_checkpoint(args.checkpoint, device=device, dtype=args.dtype)
    else:
        config = preset(args.config)
        if args.dtype:
            config = dataclasses.replace(config, dtype=args.dtype)
        with torch.device(device):  # build in place: `mid` is 16 GiB of bf16 weights
            model = Transformer(config)
        model.init_random(args.seed).eval()
    config = model.config
    num_blocks = kv_blocks(args, config, device)
    pool = KVBlockPool(config, num_blocks, args.block_size, device=device)
    name = args.served_model_name or f"deepseek-v4-reference-{args.config}"
    metrics = EngineMetrics(name)
    engine = Engine(
        model,
        pool,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        max_num_batched_tokens=args.max_num_batched_tokens,
        metrics=metrics,
        ops=attention_ops(args.attention_impl),
        seed=args.seed,
    )
    log.info(
        "model %s: %d parameters, %d KV blocks of %d tokens (%d bytes each), attention=%s, %s",
        name,
        model.param_count(),
        num_blocks,
        args.block_size,
        pool.bytes_per_block,
        engine.ops.name,
        device,
    )
    return EngineServer(engine, metrics, name)


async def serve(server: EngineServer, host: str, port: int) -> None:
    """Run until SIGTERM/SIGINT, then drain and stop."""
    runner = web.AppRunner(server.app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("reference engine serving %s on http://%s:%d", server.model_name, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received: draining (new requests get 503)")
    server.drain()
    await server.wait_idle()
    log.info("drained; stopping")
    await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parser().parse_args(argv)
    try:
        server = build(args)
    except (ValueError, OSError, KeyError, RuntimeError) as err:
        log.error("cannot start: %s", err)
        return 2
    asyncio.run(serve(server, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
