"""Per-launch device time of the fused indexer + top-k, and its end-to-end time.

Diagnostic for tuning: which launch (pass 1, each merge level, memsets) costs what at V4-Flash
L=1M, for each configuration (keyword arguments of `index_topk_triton`). Every configuration is
first checked against `index_topk_reference` (sorted values, relative 2e-3, as
`indexer_sweep.py`); a failing one prints FAIL and no time. Per-launch times: torch.profiler
CUDA activity, mean over 20 calls each after a 256 MB L2 flush (the flush's own kernel is
listed). End to end: median µs of do_bench and of a CUDA graph (`bench.bench_graph`).

Run (repository root, on the GPU):
    PYTHONPATH=kernels python3 kernels/benchmarks/indexer_profile.py --b 1,32
    (options: --topk 512, --cfgs JSON list of configurations, default [{}]; --ab N: instead,
    N rounds of CUDA-graph timing that alternate the configurations, min / median / max each,
    for differences below the run-to-run noise of a single timing; --timeline: instead, each
    launch's start and end inside a CUDA-graph replay, in µs after the L2 flush, which shows
    how launches overlap under programmatic dependent launch)
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

import bench  # type: ignore[import-not-found]  # kernels/benchmarks/bench.py, this folder
import torch
from torch.profiler import ProfilerActivity, profile

from dsv4_kernels.indexer.reference import index_topk_reference
from dsv4_kernels.indexer.triton_indexer import index_topk_triton
from dsv4_kernels.testing import make_index_case

M1 = 1048576
TOL = 2e-3


def per_launch(fn: Any, reps: int = 20) -> dict[str, float]:
    """Mean device µs per call of each kernel name (with its launches per call)."""
    flush = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            flush.zero_()
            fn()
        torch.cuda.synchronize()
    tot: dict[str, float] = defaultdict(float)
    cnt: dict[str, int] = defaultdict(int)
    for ev in prof.events():
        if ev.device_type.name != "CUDA":
            continue
        tot[ev.name[:48]] += ev.device_time
        cnt[ev.name[:48]] += 1
    return {f"{k} (x{cnt[k] / reps:g})": v / reps for k, v in tot.items()}


def run(b: int, topk: int, cfg: dict[str, Any]) -> None:
    """Check, then print per-launch and end-to-end times of one configuration."""
    case = make_index_case([M1] * b, seed=1, device=torch.device("cuda"))
    n = M1 // 4

    def fn() -> tuple[torch.Tensor, torch.Tensor]:
        return index_topk_triton(topk=topk, max_keys=n, **case, **cfg)

    _i, val = fn()
    _ri, rval = index_topk_reference(topk=topk, **case)
    got = torch.sort(val, dim=1, descending=True).values
    rel = float((got - rval).abs().max() / rval.abs().max())
    head = f"== B={b} topk={topk} cfg={cfg}"
    if not rel < TOL:
        print(f"{head}: FAIL rel {rel:.2e}", flush=True)
        return
    e2e = bench.bench(fn)
    graph = bench.bench_graph(fn)
    tbs = b * n * 132 / (graph * 1e-6) / 1e12
    print(f"{head}: ok rel {rel:.1e}; do_bench {e2e:.1f} us; graph {graph:.1f} us ({tbs:.2f} TB/s)")
    for k, v in sorted(per_launch(fn).items(), key=lambda kv: -kv[1]):
        print(f"   {v:9.1f} us  {k}", flush=True)


def ab(b: int, topk: int, cfgs: list[dict[str, Any]], rounds: int) -> None:
    """Check every configuration, then time them alternately (CUDA graph) `rounds` times."""
    case = make_index_case([M1] * b, seed=1, device=torch.device("cuda"))
    n = M1 // 4
    _ri, rval = index_topk_reference(topk=topk, **case)
    fns = []
    for cfg in cfgs:

        def fn(cfg: dict[str, Any] = cfg) -> tuple[torch.Tensor, torch.Tensor]:
            return index_topk_triton(topk=topk, max_keys=n, **case, **cfg)

        got = torch.sort(fn()[1], dim=1, descending=True).values
        rel = float((got - rval).abs().max() / rval.abs().max())
        if not rel < TOL:
            print(f"== B={b} topk={topk} cfg={cfg}: FAIL rel {rel:.2e}", flush=True)
            return
        fns.append(fn)
    times: list[list[float]] = [[] for _ in cfgs]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            times[i].append(bench.bench_graph(fn))
    for cfg, ts in zip(cfgs, times, strict=True):
        ts.sort()
        med = ts[len(ts) // 2]
        tbs = b * n * 132 / (med * 1e-6) / 1e12
        print(
            f"== B={b} topk={topk} cfg={cfg}: graph µs min {ts[0]:.1f} median {med:.1f} "
            f"max {ts[-1]:.1f} over {rounds} ({tbs:.2f} TB/s at the median)",
            flush=True,
        )


def timeline(b: int, topk: int, cfg: dict[str, Any], calls: int = 4) -> None:
    """Print start / end / duration (µs after the preceding L2 flush) of every launch.

    `calls` calls, each after a 256 MB flush, are captured in one CUDA graph; the last of
    three profiled replays is printed, call by call (CUPTI kernel records of graph replays).
    """
    case = make_index_case([M1] * b, seed=1, device=torch.device("cuda"))
    flush = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")

    def fn() -> tuple[torch.Tensor, torch.Tensor]:
        return index_topk_triton(topk=topk, max_keys=M1 // 4, **case, **cfg)

    graph = bench.flushed_graph(fn, flush, calls)
    graph.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            graph.replay()
        torch.cuda.synchronize()
    evs = [e for e in prof.events() if e.device_type.name == "CUDA"]
    evs.sort(key=lambda e: e.time_range.start)
    per_replay = len(evs) // 3
    print(f"== B={b} topk={topk} cfg={cfg}: timeline of {calls} graph calls", flush=True)
    t0 = evs[-per_replay].time_range.start
    for e in evs[-per_replay:]:
        if "elementwise" in e.name or "fill" in e.name.lower():  # the flush
            t0 = e.time_range.end
            print("   -- flush done", flush=True)
            continue
        start, end = e.time_range.start - t0, e.time_range.end - t0
        print(f"   {e.name[:32]:32s} start {start:7.1f} end {end:7.1f} us ({end - start:.1f})")


def main() -> None:
    """Parse --b, --topk, --cfgs, --ab, --timeline and run every configuration at every batch."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--b", default="1,32")
    ap.add_argument("--topk", type=int, default=512)
    ap.add_argument("--cfgs", default="[{}]")
    ap.add_argument("--ab", type=int, default=0, help="rounds of alternating graph timing")
    ap.add_argument("--timeline", action="store_true", help="launch start/end in a graph")
    args = ap.parse_args()
    if args.timeline:
        for cfg in json.loads(args.cfgs):
            for b in [int(x) for x in args.b.split(",")]:
                timeline(b, args.topk, cfg)
        return
    if args.ab:
        for b in [int(x) for x in args.b.split(",")]:
            ab(b, args.topk, json.loads(args.cfgs), args.ab)
        return
    for cfg in json.loads(args.cfgs):
        for b in [int(x) for x in args.b.split(",")]:
            run(b, args.topk, cfg)


if __name__ == "__main__":
    main()
