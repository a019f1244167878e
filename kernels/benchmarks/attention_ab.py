"""A/B timing of sparse-MLA attention kernels at the acceptance shapes (CUDA graphs).

The Triton kernel (`warp_specialized=False`) against the default, which on sm_90 is the
warp-specialised Gluon kernel (`gluon_attention`).

Each configuration is checked against `sparse_mla_reference` (relative 1e-2, as bench.py),
then timed three times, interleaved with the others, with `bench.bench_graph` (L2 flushed
before each call, host launch overhead excluded), so a drifting clock shows up as spread
between repetitions instead of as a difference between configurations.

Run (repository root, on the GPU): PYTHONPATH=kernels python3 kernels/benchmarks/attention_ab.py
[--splits: 1 vs 2 KV splits at 134-260 programs instead] [--ws=k=v,k=v ...: further
configurations, each `ws_options` of the Gluon kernel, e.g. --ws=stages=3,raw_stages=3]
"""

from __future__ import annotations

import sys
from typing import Any

import bench  # type: ignore[import-not-found]  # kernels/benchmarks/bench.py, this folder
import torch

from dsv4_kernels.sparse_mla.reference import sparse_mla_reference
from dsv4_kernels.sparse_mla.triton_attention import sparse_mla_triton
from dsv4_kernels.testing import make_attention_case, rel_err

M1, K128 = 2**20, 2**17
# (name, lengths, topk, query tokens per sequence, splits of the former choose_splits)
SHAPES: list[tuple[str, list[int], int | None, int, int]] = [
    ("hca B=64 L=128K", [K128] * 64, None, 1, 2),
    ("hca B=64 L=1M", [M1] * 64, None, 1, 2),
    ("csa B=128 s=1", [K128] * 128, 512, 1, 2),
    ("csa B=64 s=1", [K128] * 64, 512, 1, 2),
    ("csa B=128 s=2", [K128] * 128, 512, 2, 1),
]


def splits() -> None:
    """`--splits`: graph µs of 1 vs 2 KV splits where programs slightly exceed the 132 SMs."""
    for b in (134, 140, 200, 260):
        case = make_attention_case([K128] * b, 64, 4, 512, 101, torch.device("cuda"))
        got: dict[int, float] = {}
        for n in (1, 2):

            def fn(n: int = n, case: dict[str, Any] = case) -> object:
                return sparse_mla_triton(**case, n_split=n)

            got[n] = min(bench.bench_graph(fn) for _ in range(2))
        print(f"csa B={b} s=1 (P={b}): 1 split {got[1]:.1f} µs, 2 splits {got[2]:.1f} µs")


def main() -> None:
    """Print per-shape graph µs of the Triton kernel, the default (Gluon on sm_90), their ratio."""
    if "--splits" in sys.argv:
        splits()
        return
    for name, lengths, topk, mtp, _old_split in SHAPES:
        ratio = 128 if topk is None else 4
        case = make_attention_case(lengths, 64, ratio, topk, 101, torch.device("cuda"), mtp)
        run = dict(case, max_comp=max(lengths) // 128) if topk is None else case
        cfgs: dict[str, dict[str, Any]] = {
            "triton kernel": {"warp_specialized": False},
            "default (gluon ws)": {},
        }
        for arg in sys.argv[1:]:
            if arg.startswith("--ws="):  # e.g. --ws=stages=3,raw_stages=3
                opts = dict(kv.split("=") for kv in arg[5:].split(","))
                cfgs[arg[5:]] = {"ws_options": {k: int(v) for k, v in opts.items()}}
        ref, _ = sparse_mla_reference(**case)
        times: dict[str, list[float]] = {k: [] for k in cfgs}
        for k, cfg in cfgs.items():
            out, _lse = sparse_mla_triton(**run, **cfg)
            err = rel_err(out.float(), ref.float())
            if not err <= 1e-2:
                print(f"{name} {k}: FAIL rel {err:.1e}", flush=True)
                return
        for _rep in range(3):
            for k, cfg in cfgs.items():
                times[k].append(
                    bench.bench_graph(lambda cfg=cfg, run=run: sparse_mla_triton(**run, **cfg))
                )
        line = "; ".join(f"{k}: " + "/".join(f"{t:.1f}" for t in v) for k, v in times.items())
        best = [min(v) for v in times.values()]
        ups = ", ".join(f"{best[0] / b:.2f}x" for b in best[1:])
        print(f"{name}: {line} µs; best-of-3 speed-up over Triton {ups}", flush=True)


if __name__ == "__main__":
    main()
