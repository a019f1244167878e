"""Measure the device memory a vLLM-like worker holds before vLLM's start-up memory check.

    python3 benchmarks/startup_memory.py                                  # one GPU
    torchrun --nproc_per_node=2 benchmarks/startup_memory.py              # NCCL, 2 ranks

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
  between two is the planner's `startup_nccl_group_bytes`.

Output: one JSON line per rank on stdout. Needs CUDA (and 2+ GPUs for the NCCL rows).
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist


def main() -> None:
    """Print the in-use bytes after each start-up step, one JSON object per rank."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=6, help="extra NCCL groups to warm")
    groups = parser.parse_args().groups
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
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
        t = torch.ones(1 << 20, device="cuda")
        dist.all_reduce(t)
        torch.cuda.synchronize()
        del t
        torch.cuda.empty_cache()
        used("nccl_world_allreduce")
        for k in range(1, groups + 1):
            group = dist.new_group(list(range(world)))
            t = torch.ones(1 << 20, device="cuda")
            dist.all_reduce(t, group=group)
            torch.cuda.synchronize()
            del t
            torch.cuda.empty_cache()
            used(f"group{k}")
        dist.barrier()
        dist.destroy_process_group()
    out.update(torch=torch.__version__, cuda=torch.version.cuda, gpu=torch.cuda.get_device_name())
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
