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
from .config import PRESETS, preset
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
        help="KV pool blocks (default: max-num-seqs × blocks of max-model-len)",
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
    per_seq = -(-args.max_model_len // args.block_size)
    num_blocks = args.num_kv_blocks or args.max_num_seqs * per_seq
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
