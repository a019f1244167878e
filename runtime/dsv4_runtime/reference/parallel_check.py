"""Greedy decoding of a sharded reference model on one rank: the TP / DP+EP equality check.

Every rank builds the full model from the same seed, shards it (`parallel_shard.shard_model`) and
decodes fixed random prompts greedily; rank 0 (and every DP rank) saves its tokens and logits so
they can be compared with the single-process run. Launch one process per rank, e.g.

```
torchrun --nproc-per-node 2 -m dsv4_runtime.reference.parallel_check --tp 2 --out /tmp/tp2
torchrun --nproc-per-node 2 -m dsv4_runtime.reference.parallel_check --dp 2 --expert-parallel \
    --config mid --device cuda --backend nccl --out /tmp/dp2ep
```

With `--dp` > 1 the prompts are dealt round-robin to the DP ranks (prompt i on DP rank i mod dp),
each DP rank decodes only its own (DP attention); all ranks take the same number of steps, so the
EP all-to-alls stay in lockstep.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from .config import preset
from .engine import Engine, SamplingParams
from .kvcache import KVBlockPool, SequenceKV
from .model import Transformer
from .ops import AttentionOps, TorchOps
from .parallel import ParallelGroups, build_groups, init_distributed, rendezvous_from_env
from .parallel_follow import StepLeader, follow
from .parallel_shard import ExpertParallelMoE, idle_step, shard_model


@dataclasses.dataclass
class GreedyResult:
    """Greedy decode of a batch of prompts.

    Attributes:
        tokens: per prompt, the steps + 1 generated ids (first from the prefill).
        logits: (steps + 1, prompts, vocab) float32 logits that chose them.
        step_seconds: wall time of each forward step (the first is the batched prefill).
    """

    tokens: list[list[int]]
    logits: torch.Tensor
    step_seconds: list[float]


def make_prompts(lengths: Sequence[int], seed: int) -> list[list[int]]:
    """Byte-range prompts (ids 0..255) of the given lengths, prompt i from generator seed + i."""
    return [
        torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed + i)).tolist()
        for i, n in enumerate(lengths)
    ]


def greedy_decode(
    model: Transformer,
    prompts: list[list[int]],
    steps: int,
    device: torch.device | str = "cpu",
    ops: AttentionOps | None = None,
) -> GreedyResult:
    """Prefill all prompts in one step, then `steps` batched decode steps, greedy (argmax).

    The KV pool gets enough 256-token blocks for every prompt plus `steps` + 1 tokens.
    """
    block = 256
    need = sum(-(-(len(p) + steps + 1) // block) for p in prompts)
    pool = KVBlockPool(model.config, need, device=device)
    seqs = [SequenceKV(pool) for _ in prompts]
    ids = [t for p in prompts for t in p]
    pos = [i for p in prompts for i in range(len(p))]
    slices, start = [], 0
    for p in prompts:
        slices.append(slice(start, start + len(p)))
        start += len(p)
    lengths = [len(p) for p in prompts]
    tokens: list[list[int]] = [[] for _ in prompts]
    logits, times = [], []
    with torch.inference_mode():
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            out = model.forward_step(
                torch.tensor(ids, device=device),
                torch.tensor(pos, device=device),
                list(zip(slices, seqs, strict=True)),
                ops,
            )
            nxt = out.logits.argmax(-1).tolist()  # the host copy synchronises a GPU
            times.append(time.perf_counter() - t0)
            logits.append(out.logits.float().cpu())
            for i, t in enumerate(nxt):
                tokens[i].append(t)
            ids, pos = nxt, list(lengths)
            lengths = [n + 1 for n in lengths]
            slices = [slice(i, i + 1) for i in range(len(prompts))]
    return GreedyResult(tokens=tokens, logits=torch.stack(logits), step_seconds=times)


def _attention_ops(impl: str) -> AttentionOps:
    """`TorchOps` or, for "kernels", `dsv4_kernels` through `KernelOps` (as `--attention-impl`)."""
    if impl == "kernels":
        from .kernel_ops import KernelOps  # noqa: PLC0415  (optional dependency on the kernels)

        return KernelOps()
    return TorchOps()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dsv4_runtime.reference.parallel_check")
    p.add_argument("--config", default="tiny", help="model preset (tiny, mid)")
    p.add_argument("--seed", type=int, default=0, help="weight seed (same on every rank)")
    p.add_argument("--kv-cache-dtype", default=None, help="override: fp8_ds_mla or auto")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="override")
    p.add_argument(
        "--index-topk",
        type=int,
        default=None,
        help="override: indexer top-k (at least a request's CSA entries selects all of them)",
    )
    p.add_argument(
        "--experts-per-tok",
        type=int,
        default=None,
        help="override: routed experts per token (n_routed_experts routes to all of them)",
    )
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
    p.add_argument("--dp", type=int, default=1, help="data-parallel (DP attention) size")
    p.add_argument("--expert-parallel", action="store_true", help="EP over all ranks")
    p.add_argument("--backend", default="gloo", help="gloo (CPU) or nccl (GPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (rank's GPU = LOCAL_RANK)")
    p.add_argument("--prompt-lens", type=int, nargs="+", default=[140, 37])
    p.add_argument("--prompt-seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=12, help="decode steps after the prefill")
    p.add_argument("--attention-impl", choices=["torch", "kernels"], default="torch")
    p.add_argument(
        "--stagger",
        action="store_true",
        help="DP rank r idles r steps before decoding and dp-1-r after (tests idle EP steps)",
    )
    p.add_argument(
        "--engine", action="store_true", help="also decode through Engine (dp 1, or --follow)"
    )
    p.add_argument(
        "--follow",
        action="store_true",
        help="with --engine: only rank 0 schedules, the others replay its steps (TP and DP)",
    )
    p.add_argument("--engine-blocks", type=int, default=None, help="KV blocks of the engine")
    p.add_argument("--timeout-s", type=float, default=300.0, help="collective timeout")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True, help="directory for rank<R>.pt")
    return p.parse_args(argv)


def _build(args: argparse.Namespace, groups: ParallelGroups, device: torch.device) -> Transformer:
    """The full model from `--config`/`--seed`, sharded for `groups`."""
    config = preset(args.config)
    if args.kv_cache_dtype:
        config = dataclasses.replace(config, kv_cache_dtype=args.kv_cache_dtype)
    if args.dtype:
        config = dataclasses.replace(config, dtype=args.dtype)
    if args.index_topk is not None:
        if args.index_topk < 1:
            raise SystemExit(f"--index-topk must be >= 1, got {args.index_topk}")
        config = dataclasses.replace(config, index_topk=args.index_topk)
    if args.experts_per_tok is not None:
        if args.experts_per_tok < 1:
            raise SystemExit(f"--experts-per-tok must be >= 1, got {args.experts_per_tok}")
        config = dataclasses.replace(config, num_experts_per_tok=args.experts_per_tok).validate()
    with torch.device(device):
        model = Transformer(config)
    return shard_model(model.init_random(args.seed).eval(), groups)


def _idle(model: Transformer, steps: int) -> None:
    with torch.inference_mode():
        for _ in range(steps):
            idle_step(model)


def _run_rank(
    args: argparse.Namespace, groups: ParallelGroups, device: torch.device
) -> dict[str, object]:
    """Decode this rank's prompts; return the record saved as rank<R>.pt."""
    prompts = make_prompts(args.prompt_lens, args.prompt_seed)
    if len(prompts) < args.dp:
        msg = f"{len(prompts)} prompts for dp={args.dp}: every DP rank needs one"
        raise ValueError(msg)
    mine = list(range(groups.dp_rank, len(prompts), args.dp))
    model = _build(args, groups, device)
    ops = _attention_ops(args.attention_impl)
    _idle(model, groups.dp_rank if args.stagger else 0)
    moes = [m for m in model.modules() if isinstance(m, ExpertParallelMoE)]  # all-to-all
    for m in moes:  # count the decode steps only
        m.pairs_sent, m.pairs_remote, m.comm_seconds = 0, 0, 0.0
    result = greedy_decode(model, [prompts[i] for i in mine], args.steps, device, ops)
    step_s = sum(result.step_seconds)
    record: dict[str, object] = {
        "rank": groups.rank,
        "request_ids": mine,
        "tokens": result.tokens,
        "logits": result.logits,
        "step_seconds": result.step_seconds,
        "param_count": model.param_count(),
    }
    decode_s = sum(result.step_seconds[1:])
    line = f"rank {groups.rank}: {sum(len(t) for t in result.tokens)} tokens in {step_s:.3f} s"
    if decode_s > 0:
        record["decode_tokens_per_s"] = len(mine) * args.steps / decode_s
        line += f" (decode {len(mine) * args.steps / decode_s:.1f} tokens/s)"
    if moes:
        a2a_s = sum(m.comm_seconds for m in moes)
        record["local_experts"] = [m.n_local for m in moes]
        record["pairs_sent"] = sum(m.pairs_sent for m in moes)
        record["pairs_remote"] = sum(m.pairs_remote for m in moes)
        record["all_to_all_seconds"] = a2a_s
        line += f", all-to-all {100 * a2a_s / step_s:.1f} % of step time"
    print(line, flush=True)
    _idle(model, args.dp - 1 - groups.dp_rank if args.stagger else 0)
    if args.engine and (args.dp == 1 or args.follow):
        record.update(_run_engine(args, model, groups, prompts, ops))
    return record


def _run_engine(
    args: argparse.Namespace,
    model: Transformer,
    groups: ParallelGroups,
    prompts: list[list[int]],
    ops: AttentionOps,
) -> dict[str, object]:
    """`Engine.generate` on every rank in lockstep (dp 1), or with `--follow` on rank 0 only."""
    blocks = args.engine_blocks or 4 * len(prompts)
    pool = KVBlockPool(model.config, blocks, device=next(model.parameters()).device)
    if args.follow and groups.rank > 0:
        return {"follower_steps": follow(model, groups, pool, ops)}
    leader = StepLeader(model, groups) if args.follow else None
    engine = Engine(model, pool, max_num_seqs=len(prompts), max_model_len=1024, ops=ops)
    params = SamplingParams(max_tokens=args.steps + 1, ignore_eos=True)
    out: dict[str, object] = {"engine_tokens": engine.generate(prompts, params)}
    if leader is not None:
        leader.stop()
        out["leader_steps"] = leader.steps
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run one rank (placement from torchrun/LWS env, see `parallel.rendezvous_from_env`)."""
    args = _parse(argv)
    torch.set_num_threads(args.torch_threads)
    rdzv = rendezvous_from_env(os.environ)
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", rdzv.local_rank)
        torch.cuda.set_device(device)
    init_distributed(rdzv, backend=args.backend, timeout_s=args.timeout_s)
    try:
        groups = build_groups(args.tp, args.dp, expert_parallel=args.expert_parallel)
        record = _run_rank(args, groups, device)
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save(record, args.out / f"rank{groups.rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
