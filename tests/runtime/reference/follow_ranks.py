"""One rank of the leader/follower fault tests (`test_parallel_faults.py`); run as a script.

    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python follow_ranks.py OUT_DIR \
        --dp 2 [--expert-parallel] --blocks 3 --prompt-lens 250 250 250 30 --max-tokens 10 \
        --abort STEP:INDEX ...

Rank 0 runs an `Engine` under a `StepLeader` (no keepalive) over `tiny` (seed 0) and aborts
request INDEX before engine step STEP (as the server does when a client disconnects), then stops
the followers; every other rank runs `follow`. Each writes OUT_DIR/rank<R>.json: rank 0 its
requests' output ids and step count, the others their step count and their pool's free blocks
after the stop.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from dsv4_runtime.reference.config import TINY
from dsv4_runtime.reference.engine import Engine, Request, SamplingParams
from dsv4_runtime.reference.kvcache import KVBlockPool
from dsv4_runtime.reference.model import Transformer
from dsv4_runtime.reference.parallel import build_groups, init_distributed, rendezvous_from_env
from dsv4_runtime.reference.parallel_check import make_prompts
from dsv4_runtime.reference.parallel_follow import StepLeader, follow
from dsv4_runtime.reference.parallel_shard import shard_model

PROMPT_SEED = 1
MAX_MODEL_LEN = 1024


def scenario(
    engine: Engine, prompts: list[list[int]], max_tokens: int, aborts: dict[int, int]
) -> tuple[list[list[int]], int]:
    """Queue every prompt, step until done, abort request i before step s for each s: i.

    Returns each request's output ids and the number of engine steps.
    """
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    reqs = [Request(f"r{i}", list(p), params) for i, p in enumerate(prompts)]
    for req in reqs:
        engine.add_request(req)
    step = 0
    while engine.has_work:
        if step in aborts:
            engine.abort(reqs[aborts[step]].request_id)
        engine.step()
        step += 1
    return [r.output_ids for r in reqs], step


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="follow_ranks.py")
    p.add_argument("out", type=Path)
    p.add_argument("--dp", type=int, default=2)
    p.add_argument("--expert-parallel", action="store_true")
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--prompt-lens", type=int, nargs="+", default=[250, 250, 250, 30])
    p.add_argument("--max-tokens", type=int, default=10)
    p.add_argument("--abort", nargs="*", default=[], help="STEP:INDEX")
    p.add_argument("--timeout-s", type=float, default=60.0)
    return p.parse_args()


def main() -> int:
    """Run this rank (placement from torchrun's variables)."""
    args = _parse()
    torch.set_num_threads(1)
    init_distributed(rendezvous_from_env(os.environ), timeout_s=args.timeout_s)
    try:
        world = dist.get_world_size()
        groups = build_groups(world // args.dp, args.dp, expert_parallel=args.expert_parallel)
        model = shard_model(Transformer(TINY).init_random(0).eval(), groups)
        pool = KVBlockPool(TINY, args.blocks)
        record: dict[str, object] = {"rank": groups.rank}
        if groups.rank > 0:
            record["steps"] = follow(model, groups, pool)
            record["free_blocks"] = pool.free_blocks
        else:
            leader = StepLeader(model, groups)
            engine = Engine(model, pool, max_num_seqs=4, max_model_len=MAX_MODEL_LEN)
            aborts = {int(a.split(":")[0]): int(a.split(":")[1]) for a in args.abort}
            prompts = make_prompts(args.prompt_lens, PROMPT_SEED)
            record["outputs"], _ = scenario(engine, prompts, args.max_tokens, aborts)
            leader.stop()
            record["steps"] = leader.steps
            record["free_blocks"] = pool.free_blocks
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"rank{groups.rank}.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
