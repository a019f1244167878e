"""Benchmark: the reference engine on 1 GPU vs 2 GPUs at TP=2, TP=2+EP=2 and DP=2+EP=2 (issue 10).

    PYTHONPATH=runtime python3 benchmarks/reference_parallel.py --out OUT [--config mid]
        [--batches 8 32] [--steps 32] [--prompt-len 512]

For each batch size B it decodes B fixed random prompts greedily (one batched prefill, then
`--steps` batched decode steps) with `dsv4_runtime.reference.parallel_check`, started by the same
rank launcher `dsv4-runtime` uses (`dsv4_runtime.reference.ranks`, one rank per GPU, NCCL):

- 1 GPU (world of one rank): the reference tokens and logits;
- TP=2: attention heads, expert widths and the vocabulary split, all-reduces;
- TP=2 + EP=2: attention heads split, whole experts split (TP all-reduce combines);
- DP=2 + EP=2: prompts dealt round-robin to 2 DP attention ranks, experts split, all-to-all
  dispatch/combine (the all-to-all share of step time is measured with CUDA synchronised around
  each all-to-all: `ExpertParallelMoE.comm_seconds`).

Printed and written (OUT/reference_parallel.json, OUT/reference_parallel.md): decode tokens/s
(B × steps / the slowest rank's decode time), prefill seconds, the all-to-all share, and whether
every request's tokens equal the 1-GPU tokens (max |Δlogit| too). Tokens that differ are reported,
never hidden: the report says which requests and from which step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

LAYOUTS: dict[str, list[str]] = {
    "1 GPU": [],
    "TP=2": ["--tp", "2"],
    "TP=2 + EP=2": ["--tp", "2", "--expert-parallel"],
    "DP=2 + EP=2": ["--dp", "2", "--expert-parallel"],
}


def _world(layout: list[str]) -> int:
    return 1 if not layout else 2


def _run(
    out: Path, layout: list[str], args: argparse.Namespace, lens: list[int], port: int
) -> list[dict[str, Any]]:
    world = _world(layout)
    cmd = [sys.executable, "-m", "dsv4_runtime.reference.ranks", "--nnodes", "1"]
    cmd += ["--node-rank", "0", "--nproc-per-node", str(world), "--master-addr", "127.0.0.1"]
    cmd += ["--master-port", str(port), "--", "-m", "dsv4_runtime.reference.parallel_check"]
    backend = "nccl" if args.device == "cuda" else "gloo"
    cmd += ["--config", args.config, "--device", args.device, "--backend", backend]
    cmd += ["--steps", str(args.steps)]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    if args.kv_cache_dtype:
        cmd += ["--kv-cache-dtype", args.kv_cache_dtype]
    cmd += ["--prompt-lens", *map(str, lens), "--out", str(out), *layout]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"  {' '.join(layout) or '1 GPU'}: {time.perf_counter() - t0:.1f} s wall", flush=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(world)]


def _summary(
    name: str, records: list[dict[str, Any]], ref: dict[str, Any] | None, batch: int, steps: int
) -> dict[str, Any]:
    decode_s = max(sum(r["step_seconds"][1:]) for r in records)
    prefill_s = max(r["step_seconds"][0] for r in records)
    step_s = max(sum(r["step_seconds"]) for r in records)
    row: dict[str, Any] = {
        "layout": name,
        "batch": batch,
        "steps": steps,
        "decode_tokens_per_s": batch * steps / decode_s,
        "decode_ms_per_step": 1e3 * decode_s / steps,
        "prefill_s": prefill_s,
    }
    a2a = [r["all_to_all_seconds"] for r in records if "all_to_all_seconds" in r]
    if a2a:
        row["all_to_all_share"] = max(a2a) / step_s
        row["pairs_remote_fraction"] = sum(r["pairs_remote"] for r in records) / max(
            1, sum(r["pairs_sent"] for r in records)
        )
    if ref is None:
        row["tokens_equal"] = True
        row["max_abs_logit_diff"] = 0.0
        return row
    mismatches, diff = [], 0.0
    seen: set[int] = set()
    for rec in records:
        ids = rec["request_ids"]
        if set(ids) <= seen:
            continue  # TP ranks hold the same requests
        seen |= set(ids)
        logits = rec["logits"]
        diff = max(diff, (logits - ref["logits"][:, ids]).abs().max().item())
        for j, i in enumerate(ids):
            got, want = rec["tokens"][j], ref["tokens"][i]
            if got != want:
                first = next(k for k, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
                mismatches.append({"request": i, "first_step": first})
    row["tokens_equal"] = not mismatches and seen == set(range(batch))
    row["mismatches"] = mismatches
    row["max_abs_logit_diff"] = diff
    return row


def _markdown(rows: list[dict[str, Any]], meta: dict[str, str]) -> str:
    lines = [f"- {k}: {v}" for k, v in meta.items()]
    lines += [
        "",
        "| B | layout | decode tokens/s | ms/step | prefill s | all-to-all share | tokens = 1 GPU |"
        " max abs Δlogit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = f"{100 * r['all_to_all_share']:.1f} %" if "all_to_all_share" in r else "—"
        equal = "yes" if r["tokens_equal"] else f"**no** {r.get('mismatches')}"
        lines.append(
            f"| {r['batch']} | {r['layout']} | {r['decode_tokens_per_s']:.1f} | "
            f"{r['decode_ms_per_step']:.1f} | {r['prefill_s']:.2f} | {share} | {equal} | "
            f"{r['max_abs_logit_diff']:.2e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    """Run every layout at every batch size; print and write the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", default="mid")
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--port", type=int, default=29517)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="override")
    ap.add_argument("--kv-cache-dtype", choices=["fp8_ds_mla", "auto"], default=None)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: smoke test")
    ap.add_argument("--work", type=Path, default=Path("/tmp/reference_parallel"))
    args = ap.parse_args()
    if args.device == "cuda" and torch.cuda.device_count() < 2:
        print("needs 2 CUDA GPUs", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for batch in args.batches:
        lens = [args.prompt_len - 37 * (i % 5) for i in range(batch)]  # uneven, deterministic
        ref: dict[str, Any] | None = None
        for k, (name, layout) in enumerate(LAYOUTS.items()):
            run_dir = args.work / f"b{batch}-{k}"
            records = _run(run_dir, layout, args, lens, args.port + k)
            row = _summary(name, records, ref, batch, args.steps)
            if ref is None:
                ref = records[0]
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {
        "devices": ", ".join(
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        )
        or "cpu",
        "torch": torch.__version__,
        "config": args.config,
        "dtype": args.dtype or "the config's",
        "kv cache": args.kv_cache_dtype or "the config's",
        "prompt lengths": f"{args.prompt_len} - 37 × (i mod 5)",
        "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE", "(unset)"),
    }
    (args.out / "reference_parallel.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    table = _markdown(rows, meta)
    (args.out / "reference_parallel.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
