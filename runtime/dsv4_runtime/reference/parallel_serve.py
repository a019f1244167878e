"""`python -m dsv4_runtime.reference.parallel_serve`: the reference server over TP × DP ranks.

Start one process per rank (torchrun, or the LWS variables, see `parallel.rendezvous_from_env`)
with the reference CLI's flags plus `--tensor-parallel-size N`, `--data-parallel-size M`,
optionally `--enable-expert-parallel`, and `--backend gloo|nccl`; the world must have N × M ranks
(`dsv4-runtime --engine reference` starts them through torchrun, one per GPU). Every rank builds
the model and the KV pool as `python -m dsv4_runtime.reference` does, then shards it
(`parallel_shard.shard_model`); global rank 0 serves the API with a `StepLeader` and the other
ranks replay its steps (`parallel_follow.follow`: their DP rank's requests, or idle EP steps) in
their own pools of the same size. On SIGTERM rank 0 drains as the single-process server does, then
stops the followers; all exit 0. With `--device cuda` each rank uses the GPU `LOCAL_RANK`.

While idle, rank 0 sends a keepalive every `min(5 s, --dist-timeout / 4)` (followers wait for
the next step inside a collective, which would fail after `--dist-timeout`). When a collective
fails (a rank died, or one went silent for `--dist-timeout`) the group cannot serve any more, as
vLLM's API server shuts down when an engine core dies: rank 0 stops serving (open requests end
with an error, then the server stops as on SIGTERM) and every rank exits 1, so the launcher
(`reference.ranks`) and the runtime report the failure instead of a server that answers 500.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

import torch
import torch.distributed as dist

from .__main__ import build, parser, serve
from .parallel import (
    DEFAULT_MASTER_PORT,
    ParallelGroups,
    build_groups,
    init_distributed,
    rendezvous_from_env,
)
from .parallel_follow import StepLeader, follow
from .parallel_shard import shard_model
from .server import EngineServer

log = logging.getLogger("dsv4_runtime.reference.parallel_serve")

#: Longest pause between two messages of rank 0 to the followers while idle, seconds.
KEEPALIVE_S = 5.0
#: How often rank 0 checks whether its group failed, seconds.
FAILURE_POLL_S = 0.5


def keepalive_seconds(dist_timeout_s: float) -> float:
    """Rank 0's keepalive period: `KEEPALIVE_S`, or a quarter of a shorter collective timeout."""
    return min(KEEPALIVE_S, dist_timeout_s / 4)


async def _lead(server: EngineServer, leader: StepLeader, host: str, port: int) -> None:
    """Serve (`serve`) until SIGTERM/SIGINT, or until the group fails (`leader.failure`)."""
    serving = asyncio.create_task(serve(server, host, port))
    while not serving.done():
        # serve's own stop (SIGTERM) once its handler is in: open requests have ended in errors
        if leader.failure is not None and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            log.error("rank 0: the rank group failed (%s); stopping the server", leader.failure)
            signal.raise_signal(signal.SIGTERM)
            break
        await asyncio.wait({serving}, timeout=FAILURE_POLL_S)
    await serving


def check_layout(args: argparse.Namespace, world_size: int) -> None:
    """Check the parallel flags against the world before joining it (every rank fails alike).

    Raises:
        ValueError: naming the flags and the limit.
    """
    tp, dp = args.tensor_parallel_size, args.data_parallel_size
    if tp < 1 or dp < 1 or tp * dp != world_size:
        msg = (
            f"--tensor-parallel-size × --data-parallel-size = {tp} × {dp} must equal the world "
            f"size {world_size} (WORLD_SIZE, or LWS_GROUP_SIZE × --procs-per-pod)"
        )
        raise ValueError(msg)
    if args.enable_expert_parallel and tp > 1 and dp > 1:
        msg = (
            "--enable-expert-parallel needs --tensor-parallel-size 1 (DP attention + EP) or "
            f"--data-parallel-size 1 (TP + EP), got {tp} and {dp}"
        )
        raise ValueError(msg)


def _parser() -> argparse.ArgumentParser:
    p = parser()
    p.prog = "python -m dsv4_runtime.reference.parallel_serve"
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="TP ranks per DP rank")
    p.add_argument("--data-parallel-size", type=int, default=1, help="DP (attention) ranks")
    p.add_argument(
        "--enable-expert-parallel", action="store_true", help="routed experts split over the world"
    )
    p.add_argument("--backend", default="gloo", help="gloo (CPU ranks) or nccl (one GPU each)")
    p.add_argument("--dist-timeout", type=float, default=300.0, help="collective timeout, s")
    p.add_argument(
        "--procs-per-pod", type=int, default=1, help="ranks per LWS pod (without torchrun's RANK)"
    )
    p.add_argument(
        "--master-port", type=int, default=DEFAULT_MASTER_PORT, help="TCP store port under LWS"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status (2 when the setup is invalid)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = _parser().parse_args(argv)
    try:
        rdzv = rendezvous_from_env(
            os.environ, procs_per_pod=args.procs_per_pod, master_port=args.master_port
        )
        check_layout(args, rdzv.world_size)
    except ValueError as err:
        log.error("cannot start: %s", err)
        return 2
    if args.device == "cuda":
        torch.cuda.set_device(rdzv.local_rank)  # "cuda" below means this rank's GPU
    init_distributed(rdzv, backend=args.backend, timeout_s=args.dist_timeout)
    try:
        groups = build_groups(
            args.tensor_parallel_size,
            args.data_parallel_size,
            expert_parallel=args.enable_expert_parallel,
        )
        server = build(args)
        engine = server.engine
        shard_model(engine.model, groups)
        n = engine.pool.num_blocks
        blocks = torch.tensor([n, -n], device=engine.device)
        dist.all_reduce(blocks, op=dist.ReduceOp.MIN)  # every rank learns smallest and largest
        smallest, largest = int(blocks[0]), -int(blocks[1])
        if smallest != largest:  # all ranks stop, not only those above the smallest
            msg = (
                f"KV pools differ across ranks ({smallest} to {largest} blocks): set "
                "--num-kv-blocks"
            )
            raise ValueError(msg)
    except (ValueError, OSError, KeyError) as err:
        log.error("cannot start: %s", err)
        dist.destroy_process_group()
        return 2
    try:
        return _run(args, groups, server)
    except RuntimeError as err:  # torch.distributed's errors: a rank died or went silent
        log.error("rank %d: the rank group failed: %s", groups.rank, err)
        return 1
    except OSError as err:  # the API port (the followers were stopped)
        log.error("cannot start: %s", err)
        return 2
    finally:
        dist.destroy_process_group()


def _run(args: argparse.Namespace, groups: ParallelGroups, server: EngineServer) -> int:
    """Follow (ranks > 0) or serve with a `StepLeader` (rank 0); the exit status (1: failed)."""
    engine = server.engine
    if groups.rank > 0:
        steps = follow(engine.model, groups, engine.pool, engine.ops)
        log.info("rank %d: leader stopped after %d steps", groups.rank, steps)
        return 0
    leader = StepLeader(engine.model, groups, keepalive_s=keepalive_seconds(args.dist_timeout))
    try:
        asyncio.run(_lead(server, leader, args.host, args.port))
    finally:
        leader.stop()
    if leader.failure is not None:
        return 1
    log.info("rank 0: stopped %d follower(s) after %d steps", groups.world_size - 1, leader.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
