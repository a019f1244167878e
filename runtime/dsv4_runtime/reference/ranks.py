r"""`python -m dsv4_runtime.reference.ranks`: start one pod's reference ranks and keep the drain.

    python -m dsv4_runtime.reference.ranks --nnodes N --node-rank R --nproc-per-node P \\
        --master-addr ADDR --master-port PORT -- -m MODULE ARGS...

starts P processes `python -m MODULE ARGS...` with the variables torchrun gives its workers
(`RANK` = R × P + local rank, `LOCAL_RANK`, `WORLD_SIZE` = N × P, `LOCAL_WORLD_SIZE`,
`GROUP_RANK`, `MASTER_ADDR`, `MASTER_PORT`; PyTorch `torch.distributed.run` docs), so
`parallel.rendezvous_from_env` and `torch.distributed` read them unchanged.

Why not torchrun itself: on SIGTERM torchrun sends SIGTERM to every worker at once and SIGKILLs
them after a fixed 30 s (`LocalElasticAgent` shutdown timeout), then exits 1. A reference group
must instead let global rank 0 drain its requests (the followers are still needed for every step
of the drain) and stop the followers itself. So here SIGTERM/SIGINT go only to global rank 0 when
this pod runs it; on the other pods (whose runtime delays SIGTERM by the drain timeout, as for
vLLM workers) they go to every local rank. When a rank exits non-zero the others get SIGTERM,
then SIGKILL after `--kill-grace-s`. The exit status is 0 when every rank exited 0, else the
first failing rank's status (128 + signal number for a signal).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from types import FrameType

POLL_S = 0.1
"""Seconds between checks of the ranks."""


def rank_env(
    base: Mapping[str, str],
    *,
    nnodes: int,
    node_rank: int,
    nproc_per_node: int,
    local_rank: int,
    master_addr: str,
    master_port: int,
) -> dict[str, str]:
    """The environment of local rank `local_rank` on node `node_rank` (torchrun's variables).

    Raises:
        ValueError: a size or index is out of range (names the argument and the limit).
    """
    if nnodes < 1 or nproc_per_node < 1:
        msg = f"--nnodes and --nproc-per-node must be >= 1, got {nnodes}, {nproc_per_node}"
        raise ValueError(msg)
    if not 0 <= node_rank < nnodes:
        msg = f"--node-rank {node_rank} is outside [0, {nnodes - 1}]"
        raise ValueError(msg)
    if not 0 <= local_rank < nproc_per_node:
        msg = f"local rank {local_rank} is outside [0, {nproc_per_node - 1}]"
        raise ValueError(msg)
    return {
        **base,
        "RANK": str(node_rank * nproc_per_node + local_rank),
        "LOCAL_RANK": str(local_rank),
        "WORLD_SIZE": str(nnodes * nproc_per_node),
        "LOCAL_WORLD_SIZE": str(nproc_per_node),
        "GROUP_RANK": str(node_rank),
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
    }


def _status(code: int) -> int:
    return 128 - code if code < 0 else code


def supervise(procs: Sequence[subprocess.Popen[bytes]], kill_grace_s: float) -> int:
    """Wait for `procs`; on the first failure stop the rest. Returns the exit status.

    The status is 0 when every process exited 0, else the first failure's (128 + N for signal N;
    the lowest local rank among failures seen in the same poll), also when that failure was the
    last process to exit (a pod with one rank, or all ranks dying at once).
    """
    failed: int | None = None
    deadline: float | None = None
    while True:
        codes = [p.poll() for p in procs]
        bad = [c for c in codes if c not in (None, 0)]
        if bad and failed is None:
            failed = _status(bad[0])
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            deadline = time.monotonic() + kill_grace_s
        if all(c is not None for c in codes):
            return failed if failed is not None else 0
        if deadline is not None and time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            deadline = None
        time.sleep(POLL_S)


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" not in argv:
        msg = "usage: ... -- -m MODULE ARGS (the rank command follows a lone '--')"
        raise SystemExit(msg)
    cut = list(argv).index("--")
    p = argparse.ArgumentParser(prog="python -m dsv4_runtime.reference.ranks")
    p.add_argument("--nnodes", type=int, required=True, help="pods in the group")
    p.add_argument("--node-rank", type=int, required=True, help="this pod's LWS worker index")
    p.add_argument("--nproc-per-node", type=int, required=True, help="ranks on this pod")
    p.add_argument("--master-addr", required=True, help="global rank 0's host")
    p.add_argument("--master-port", type=int, required=True, help="rendezvous port")
    p.add_argument("--kill-grace-s", type=float, default=30.0, help="SIGTERM → SIGKILL, s")
    return p.parse_args(list(argv[:cut])), list(argv[cut + 1 :])


def main(argv: Sequence[str] | None = None) -> int:
    """Start the ranks, forward SIGTERM as the module docstring says, return the exit status."""
    args, command = _parse(sys.argv[1:] if argv is None else argv)
    try:
        envs = [
            rank_env(
                os.environ,
                nnodes=args.nnodes,
                node_rank=args.node_rank,
                nproc_per_node=args.nproc_per_node,
                local_rank=local,
                master_addr=args.master_addr,
                master_port=args.master_port,
            )
            for local in range(args.nproc_per_node)
        ]
    except ValueError as err:
        print(f"ranks: error: {err}", file=sys.stderr)
        return 2
    procs = [
        subprocess.Popen([sys.executable, *command], env=env)  # noqa: S603  (our own argv)
        for env in envs
    ]
    targets = procs[:1] if args.node_rank == 0 else procs

    def forward(signum: int, _frame: FrameType | None) -> None:
        for p in targets:
            if p.poll() is None:
                p.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    return supervise(procs, args.kill_grace_s)


if __name__ == "__main__":
    raise SystemExit(main())
