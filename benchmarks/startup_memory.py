"""Measure the device memory a vLLM-like worker holds before vLLM's start-up memory check.

    python3 benchmarks/startup_memory.py                                  # one GPU
    torchrun --nproc_per_node=2 benchmarks/startup_memory.py              # NCCL, 2 ranks
    torchrun --nproc_per_node=8 benchmarks/startup_memory.py --groups 2 --group-sizes 8,4,2

vLLM's worker (`Worker.init_device`, vllm/v1/worker) sets its device, initialises its process
groups (NCCL, with a warm-up collective), then takes a memory snapshot and refuses to start when
the free memory is below total x gpu-memory-utilization. So whatever a process holds at that
point must fit in total x (1 - utilization). This script walks the same steps with plain torch
and prints, per rank, the memory in use (`torch.cuda.mem_get_info`: total - free) after each:

- `set_device`: the CUDA context;
- `first_tensor`: plus torch's first allocation (the planner's `startup_context_bytes`);
- `cublas`: plus a bf16 matmul's cuBLAS handle and workspace, after `empty_cache` (vLLM does
  no matmul before its snapshot; for reference only);
- `nccl_world_allreduce`: plus NCCL after a warm all-reduce on the world group; minus
  `cublas`, the planner's `startup_nccl_first_bytes`;
- `group<k>`: plus an all-reduce on each of `--groups` more groups of the same ranks (vLLM warms
  a communicator per parallel group: TP, DP, EP, PP, each beside the world's); the step
  between two is the planner's `startup_nccl_group_bytes`;
- `size<s>_<k>`: then, for each size s in `--group-sizes`, the world split into groups of s
  consecutive ranks (as vLLM's TP groups), each rank warming the one it is in: the step is what
  a communicator of s ranks holds when the world is larger (a TP4 group in a world of 8);
- `sweep_collectives`, `sweep_alltoall` (with `--sweep`): plus what NCCL connects lazily
  (NCCL_RUNTIME_CONNECT, on by default since NCCL 2.22) when the world group then runs
  all-reduce at every power-of-two size from 1 KiB to 256 MiB, all-gather and reduce-scatter
  (vLLM's TP all-reduce and its default EP all2all backend, allgather_reducescatter), then
  all-to-all (point-to-point channels), as serving does after vLLM's snapshot: the planner's
  in-budget `nccl_bytes` allowance must cover these steps.

Output: one JSON line per rank on stdout. Needs CUDA (and 2+ GPUs for the NCCL rows).
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist


def _warm(group: dist.ProcessGroup | None) -> None:
    """All-reduce 4 MiB on `group` (None: the world), as vLLM's warm-up, then free the tensor."""
    t = torch.ones(1 << 20, device="cuda")
    dist.all_reduce(t, group=group)
    torch.cuda.synchronize()
    del t
    torch.cuda.empty_cache()


def _sweep(world: int, *, all_to_all: bool) -> None:
    """All-reduce 1 KiB .. 256 MiB, all-gather and reduce-scatter, or all-to-all (world)."""
    if not all_to_all:
        for shift in range(8, 27):  # float32: 1 KiB .. 256 MiB
            t = torch.ones(1 << shift, device="cuda")
            dist.all_reduce(t)
            torch.cuda.synchronize()
            del t
    for n in (1 << 10, 1 << 20, 1 << 24):
        src = torch.ones(n, device="cuda")
        dst = torch.empty(n * world, device="cuda")
        if all_to_all:
            dist.all_to_all_single(dst, torch.ones(n * world, device="cuda"))
        else:
            dist.all_gather_into_tensor(dst, src)
            dist.reduce_scatter_tensor(src, dst)
        torch.cuda.synchronize()
        del src, dst
    torch.cuda.empty_cache()


def _group_sizes(text: str) -> list[int]:
    """`--group-sizes`: comma-separated positive integers (empty entries skipped).

    Raises:
        argparse.ArgumentTypeError: an entry that is not a positive integer (0 divided by zero
            after the NCCL set-up; a negative size warmed the world group again).
    """
    sizes = []
    for v in text.split(","):
        if not v:
            continue
        if not v.isdigit() or int(v) < 1:
            raise argparse.ArgumentTypeError(f"{v!r} is not a positive integer")
        sizes.append(int(v))
    return sizes


def main() -> None:
    """Print the in-use bytes after each start-up step, one JSON object per rank."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=6, help="extra NCCL groups to warm")
    parser.add_argument(
        "--group-sizes",
        type=_group_sizes,
        default=[],
        help="comma-separated sizes s: split the world into groups of s ranks and warm each",
    )
    parser.add_argument(
        "--sweep", action="store_true", help="finally run collectives of every size on the world"
    )
    args = parser.parse_args()
    groups = args.groups
    sizes: list[int] = args.group_sizes
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    for size in sizes:
        if world % size:  # before any GPU step, not after the earlier groups were warmed
            parser.error(f"--group-sizes: {size} does not divide the world size {world}")
    out: dict[str, object] = {"rank": rank, "world": world}

    def used(tag: str) -> None:
        free, total = torch.cuda.mem_get_info()
        out[tag] = total - free
        out["total"] = total

    torch.cuda.set_device(rank)
    used("set_device")
    torch.zeros(1, device="cuda")
    used("first_tensor")
    a = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
    (a @ a).sum().item()
    del a
    torch.cuda.empty_cache()
    used("cublas")
    if world > 1 or "MASTER_ADDR" in os.environ:
        dist.init_process_group(
            "nccl", rank=rank, world_size=world, device_id=torch.device(f"cuda:{rank}")
        )
        _warm(None)
        used("nccl_world_allreduce")
        for k in range(1, groups + 1):
            _warm(dist.new_group(list(range(world))))
            used(f"group{k}")
        for k, size in enumerate(sizes):
            mine = None
            for first in range(0, world, size):
                group = dist.new_group(list(range(first, first + size)))
                if first <= rank < first + size:
                    mine = group
            _warm(mine)
            used(f"size{size}_{k}")
        if args.sweep:
            _sweep(world, all_to_all=False)
            used("sweep_collectives")
            _sweep(world, all_to_all=True)
            used("sweep_alltoall")
        dist.barrier()
        dist.destroy_process_group()
    out.update(torch=torch.__version__, cuda=torch.version.cuda, gpu=torch.cuda.get_device_name())
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
