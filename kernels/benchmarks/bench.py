"""Benchmark harness for the DeepSeek-V4 attention kernels on one GPU (H200).

Registry of ops x shapes (V4-Flash and V4-Pro first). For every shape the Triton kernel is
checked against its PyTorch reference first; a shape that fails the check prints FAIL and no
timings. Timings are medians of `triton.testing.do_bench` (L2 flushed between runs), or with
`--graph` of CUDA-graph replays (`bench_graph`: no host launch overhead, as vLLM runs decode)
for the kernels and the indexer's torch baselines; the torch references stay on do_bench. Bytes
and FLOPs follow `../shared/docs/kernel-yardstick.md` §7.2 (split-KV partials, candidate
lists and the compressor's state excluded unless a column says otherwise).

Run (not installed; from the repository root):
    PYTHONPATH=kernels python kernels/benchmarks/bench.py --out /tmp/bench [--ops hca,csa] [--tune]
    [--graph]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import triton
import triton.testing

from dsv4_kernels.compressor.reference import compress_reference, compress_reference_fp8
from dsv4_kernels.compressor.triton_compressor import compress_triton
from dsv4_kernels.indexer.reference import index_topk_reference
from dsv4_kernels.indexer.triton_indexer import index_topk_triton
from dsv4_kernels.kv_format import dequantize_fp8_ds_mla
from dsv4_kernels.sparse_mla.reference import sparse_mla_reference
from dsv4_kernels.sparse_mla.triton_attention import sparse_mla_triton
from dsv4_kernels.testing import make_attention_case, make_index_case, rel_err

HBM_TBS = 4.3
"""Copy bandwidth ceiling, TB/s (yardstick §2, measured)."""
BF16_TFLOPS = 795.0
"""cuBLAS BF16 8192^3, TFLOP/s (yardstick §2, measured)."""
FP8_TFLOPS = 1480.0
"""FP8 dense GEMM, TFLOP/s (yardstick §1)."""
K128 = 131072
M1 = 1048576
DEV = torch.device("cuda")


@dataclass
class Row:
    """One printed line: a kernel or a baseline at one shape."""

    op: str
    model: str
    shape: str
    impl: str
    us: float | None
    bytes_: float
    flops: float
    check: str
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """TB/s, TFLOP/s and fractions of the ceilings (empty without a time)."""
        if self.us is None or self.us <= 0:
            return {}
        t = self.us * 1e-6
        tbs = self.bytes_ / t / 1e12
        tfl = self.flops / t / 1e12
        floor = max(self.bytes_ / (HBM_TBS * 1e12), self.flops / (BF16_TFLOPS * 1e12))
        return {
            "TB/s": tbs,
            "TFLOP/s": tfl,
            "bw_frac": tbs / HBM_TBS,
            "mma_frac": tfl / BF16_TFLOPS,
            "roofline": floor / t,
            **self.extra,
        }


def bench(fn: Callable[[], object], rep_ms: int = 200) -> float:
    """Median microseconds of `fn` (do_bench: warm-up, L2 flush before each run)."""
    return float(triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median")) * 1e3


TIMING = {"graph": False}
"""`--graph`: time kernels with `bench_graph` instead of `bench` (`time_us`)."""


def time_us(fn: Callable[[], object]) -> float:
    """µs of a kernel call: `bench_graph` under `--graph` (do_bench if capture fails), else `bench`.

    Eager calls of the attention and indexer wrappers cost 80-125 µs of host time on the H200
    host (2026-11-29), so do_bench times short calls by their host overhead.
    """
    if TIMING["graph"]:
        us = bench_graph(fn)
        if not math.isnan(us):
            return us
    return bench(fn)


def bench_graph(fn: Callable[[], object], n: int = 20, reps: int = 10) -> float:
    """Median µs of `fn` without host launch overhead.

    n calls, each after a 256 MB L2 flush, are captured in one CUDA graph; the time of the
    flush-only graph is subtracted.
    """
    try:
        return _bench_graph(fn, n, reps)
    except RuntimeError as exc:  # capture failed: report it, keep the run going
        print(f"cuda graph timing failed: {exc}", flush=True)
        return float("nan")


def flushed_graph(fn: Callable[[], object], cache: torch.Tensor, n: int) -> torch.cuda.CUDAGraph:
    """A CUDA graph of n x (zero `cache`, i.e. flush L2; call fn), after 3 warm-up calls.

    The warm-up runs on a side stream (as CUDA-graph capture requires); returns the graph
    captured, not yet replayed.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(n):
            cache.zero_()
            fn()
    return graph


def _bench_graph(fn: Callable[[], object], n: int, reps: int) -> float:
    cache = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device=DEV)
    g_all = flushed_graph(fn, cache, n)
    g_flush = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g_flush):
        for _ in range(n):
            cache.zero_()

    def timed(g: torch.cuda.CUDAGraph) -> float:
        out = []
        for _ in range(reps):
            s0 = torch.cuda.Event(enable_timing=True)
            s1 = torch.cuda.Event(enable_timing=True)
            s0.record()
            g.replay()
            s1.record()
            torch.cuda.synchronize()
            out.append(s0.elapsed_time(s1))
        return sorted(out)[len(out) // 2]

    timed(g_all)
    return (timed(g_all) - timed(g_flush)) * 1e3 / n


def latency_rows() -> list[Row]:
    """B=1 shapes, timed both ways: do_bench (host launch overhead included) and a CUDA graph."""
    rows: list[Row] = []
    case = make_attention_case([M1], 64, 128, None, 101, DEV)
    run = dict(case, max_comp=M1 // 128)
    bytes_, flops = attn_counts(case, 64, None)
    out, _ = sparse_mla_triton(**run)
    ref, _ = sparse_mla_reference(**case)
    err = rel_err(out.float(), ref.float())
    if err <= 1e-2:
        for how, f in (("do_bench", bench), ("cuda graph", bench_graph)):
            us = f(lambda: sparse_mla_triton(**run))
            rows.append(
                Row(
                    "hca decode",
                    "V4-Flash",
                    "B=1 L=1M h=64",
                    f"triton ({how})",
                    us,
                    bytes_,
                    flops,
                    f"ok rel {err:.1e}",
                )
            )
            if how == "do_bench":  # the reference syncs (no graph capture)
                rus = f(lambda: sparse_mla_reference(**case))
                rows.append(
                    Row(
                        "hca decode",
                        "V4-Flash",
                        "B=1 L=1M h=64",
                        f"torch ref ({how})",
                        rus,
                        bytes_,
                        flops,
                        "-",
                    )
                )
    else:
        rows.append(
            Row(
                "hca decode",
                "V4-Flash",
                "B=1 L=1M h=64",
                "triton",
                None,
                bytes_,
                flops,
                f"FAIL rel {err:.1e}",
            )
        )
    for model, topk in (("V4-Flash", 512), ("V4-Pro", 1024)):
        icase = make_index_case([M1], 202, DEV)
        n = M1 // 4
        key_bytes = n * 132.0
        flops_i = 2.0 * 64 * 128 * n
        _i, val = index_topk_triton(**icase, topk=topk, max_keys=n)
        _ri, rval = index_topk_reference(**icase, topk=topk)
        got = val.sort(dim=1, descending=True).values
        err = float((got - rval).abs().max() / rval.abs().max())
        shape = f"B=1 L=1M k={topk}"
        if err > 2e-3:
            rows.append(
                Row(
                    "indexer+topk",
                    model,
                    shape,
                    "triton fused",
                    None,
                    key_bytes,
                    flops_i,
                    f"FAIL rel {err:.1e}",
                )
            )
            continue
        logits = torch_scores(icase)
        for how, f in (("do_bench", bench), ("cuda graph", bench_graph)):
            us = f(lambda: index_topk_triton(**icase, topk=topk, max_keys=n))  # noqa: B023
            sus = f(lambda: torch_scores(icase, n))  # noqa: B023
            tus = f(lambda: torch.topk(logits, topk, dim=1))  # noqa: B023
            rows.append(
                Row(
                    "indexer+topk",
                    model,
                    shape,
                    f"triton fused ({how})",
                    us,
                    key_bytes,
                    flops_i,
                    f"ok rel {err:.1e}",
                    f"{(sus + tus) / us:.1f}x vs scores+torch.topk",
                    {"key TB/s": key_bytes / (us * 1e-6) / 1e12},
                )
            )
            rows.append(
                Row(
                    "indexer+topk",
                    model,
                    shape,
                    f"scores+torch.topk ({how})",
                    sus + tus,
                    key_bytes,
                    flops_i,
                    "-",
                    f"torch.topk alone {tus:.1f} µs",
                )
            )
    return rows


# ----------------------------------------------------------------------------- attention


def attn_counts(case: dict[str, Any], heads: int, topk: int | None) -> tuple[float, float]:
    """Yardstick bytes and FLOPs of a decode/prefill attention call (§7.2)."""
    pos = case["positions"].long() + 1
    w = case["window"]
    if topk is None:
        n = torch.clamp(pos, max=w) + pos // 128
    else:
        n = torch.clamp(pos, max=w) + torch.clamp(pos // 4, max=topk)
    # KV once per sequence (queries of one sequence share it), Q in / O out bf16, int32 ids.
    seq = case["seq_ids"].long()
    n_seq = torch.zeros(int(seq.max()) + 1, dtype=torch.long, device=n.device)
    n_seq.scatter_reduce_(0, seq, n, reduce="amax")
    t = pos.numel()
    bytes_ = float(n_seq.sum()) * (584 + 4) + t * heads * 1024 * 2
    flops = 4.0 * heads * 512 * float(n.sum())
    return bytes_, flops


def attention_rows(
    op: str,
    model: str,
    heads: int,
    lengths: list[int],
    topk: int | None,
    mtp: int = 1,
    tune: dict[str, Any] | None = None,
    with_ref_time: bool = True,
) -> list[Row]:
    """Check, then time the Triton kernel (and the torch reference) for one shape."""
    ratio = 128 if topk is None else 4
    case = make_attention_case(lengths, heads, ratio, topk, 101, DEV, queries_per_seq=mtp)
    case_run = dict(case, max_comp=max(lengths) // 128) if topk is None else case
    tune = tune or {}
    b = len(lengths)
    shape = (
        f"B={b} L={_fmt_len(lengths)} h={heads}"
        + (f" k={topk}" if topk else "")
        + (f" s={mtp}" if mtp > 1 else "")
    )
    bytes_, flops = attn_counts(case, heads, topk)
    out, lse = sparse_mla_triton(**case_run, **tune)
    impl = _attention_impl()
    ref_out, ref_lse = sparse_mla_reference(**case)
    err = rel_err(out.float(), ref_out.float())
    fin = torch.isfinite(ref_lse)
    lse_err = float((lse[fin] - ref_lse[fin]).abs().max()) if bool(fin.any()) else 0.0
    ok = err <= 1e-2 and lse_err <= 1e-2 and bool((torch.isfinite(lse) == fin).all())
    check = f"rel {err:.1e}, lse {lse_err:.1e}"
    del ref_out, ref_lse
    if not ok:
        return [Row(op, model, shape, impl, None, bytes_, flops, "FAIL " + check)]
    us = time_us(lambda: sparse_mla_triton(**case_run, **tune))
    note = ",".join(f"{k}={v}" for k, v in tune.items())
    rows = [Row(op, model, shape, impl, us, bytes_, flops, "ok " + check, note)]
    if with_ref_time:
        try:
            rus = bench(lambda: sparse_mla_reference(**case), rep_ms=100)
            rows.append(Row(op, model, shape, "torch ref", rus, bytes_, flops, "-"))
        except torch.OutOfMemoryError:
            rows.append(Row(op, model, shape, "torch ref", None, bytes_, flops, "OOM"))
        torch.cuda.empty_cache()
    return rows


def _attention_impl() -> str:
    """Which attention kernel the last `sparse_mla_triton` call launched (impl column)."""
    from dsv4_kernels.sparse_mla.triton_attention import LAST_KERNEL  # noqa: PLC0415

    name = str(getattr(LAST_KERNEL.get("sparse_mla"), "name", ""))
    return "gluon ws" if name == "_sparse_mla_ws_kernel" else "triton"


def _fmt_len(lengths: list[int]) -> str:
    n = lengths[0]
    same = all(x == n for x in lengths)
    s = f"{n // 1024}K" if n % 1024 == 0 and n < M1 else ("1M" if n == M1 else str(n))
    return s if same else s + "+mixed"


# ------------------------------------------------------------------------------- indexer


def torch_scores(case: dict[str, Any], n_max: int | None = None) -> torch.Tensor:
    """Vectorised torch indexer logits [T, N_max] (the unfused baseline's first half)."""
    q = case["q"].to(torch.bfloat16)
    w = case["weights"]
    pages = case["key_pages"]
    page = case["page_size"]
    bt = case["block_table"].long()
    if n_max is None:
        n_max = int(((case["positions"].long() + 1) // 4).max())
    n_pages = math.ceil(n_max / page)
    kb = pages[:, : page * 128].view(torch.float8_e4m3fn).reshape(-1, page, 128)
    ks = pages[:, page * 128 :].contiguous().view(torch.float32)
    rows = bt[case["seq_ids"].long(), :n_pages]  # [T, n_pages]
    keys = kb[rows].reshape(rows.shape[0], -1, 128)[:, :n_max].to(torch.bfloat16)
    scales = ks[rows].reshape(rows.shape[0], -1)[:, :n_max]
    s = torch.relu(torch.einsum("thd,tnd->thn", q, keys).float())
    logits = torch.einsum("th,thn->tn", w, s) * scales
    valid = (
        torch.arange(n_max, device=DEV)[None, :] < ((case["positions"].long() + 1) // 4)[:, None]
    )
    return logits.masked_fill(~valid, float("-inf"))


def indexer_rows(
    model: str,
    lengths: list[int],
    topk: int,
    mtp: int = 1,
    tune: dict[str, Any] | None = None,
    baselines: bool = True,
) -> list[Row]:
    """Check and time fused indexer + top-k vs torch scores + torch.topk."""
    case = make_index_case(lengths, 202, DEV, queries_per_seq=mtp)
    tune = tune or {}
    t = len(lengths) * mtp
    n = [x // 4 for x in lengths]
    key_bytes = float(sum(n)) * 132
    bytes_ = key_bytes + t * (64 * 128 + 64 * 4) + t * topk * 8
    flops = 2.0 * 64 * 128 * float(sum(n)) * mtp
    shape = f"B={len(lengths)} L={_fmt_len(lengths)} k={topk}" + (f" s={mtp}" if mtp > 1 else "")
    max_keys = max(n)
    _idx, val = index_topk_triton(**case, topk=topk, max_keys=max_keys, **tune)
    ref_idx, ref_val = index_topk_reference(**case, topk=topk)
    got = val.sort(dim=1, descending=True).values
    fin = torch.isfinite(ref_val)
    same_valid = bool(torch.equal(torch.isfinite(got), fin))
    scale = float(ref_val[fin].abs().max()) if bool(fin.any()) else 1.0
    err = float((got[fin] - ref_val[fin]).abs().max()) / scale if same_valid else float("inf")
    ok = same_valid and err <= 2e-3  # fp8 tensor-core accumulation (tests/kernels/test_indexer.py)
    check = f"top-k values rel {err:.1e}"
    del ref_idx, ref_val
    if not ok:
        return [
            Row("indexer+topk", model, shape, "triton fused", None, bytes_, flops, "FAIL " + check)
        ]
    us = time_us(lambda: index_topk_triton(**case, topk=topk, max_keys=max_keys, **tune))
    note = ",".join(f"{k}={v}" for k, v in tune.items())
    extra = {"key TB/s": key_bytes / (us * 1e-6) / 1e12}
    rows = [
        Row(
            "indexer+topk",
            model,
            shape,
            "triton fused",
            us,
            bytes_,
            flops,
            "ok " + check,
            note,
            extra,
        )
    ]
    if not baselines:
        return rows
    try:
        logits = torch_scores(case)
        sus = time_us(lambda: torch_scores(case))
        tus = time_us(lambda: torch.topk(logits, topk, dim=1))
        lbytes = key_bytes + t * max_keys * 4
        rows.append(
            Row(
                "indexer+topk",
                model,
                shape,
                "torch scores",
                sus,
                key_bytes,
                flops,
                "-",
                extra={"key TB/s": key_bytes / (sus * 1e-6) / 1e12},
            )
        )
        rows.append(
            Row("indexer+topk", model, shape, "torch.topk", tus, t * max_keys * 4.0, 0.0, "-")
        )
        rows.append(
            Row(
                "indexer+topk",
                model,
                shape,
                "scores+torch.topk",
                sus + tus,
                lbytes,
                flops,
                "-",
                note=f"fused speedup {(sus + tus) / us:.1f}x",
            )
        )
    except torch.OutOfMemoryError:
        rows.append(
            Row("indexer+topk", model, shape, "torch scores", None, key_bytes, flops, "OOM")
        )
    torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------- compressor


def compressor_rows(model: str, ratio: int, tokens: int, fmt: str) -> list[Row]:
    """Check and time the compressor on a prefill of `tokens` tokens (one sequence)."""
    gen = torch.Generator().manual_seed(303)
    c = 2 if ratio == 4 else 1
    kv = torch.randn(1, tokens, c * 512, generator=gen).to(DEV)
    sc = torch.randn(1, tokens, c * 512, generator=gen).to(DEV)
    ape = torch.randn(ratio, c * 512, generator=gen).to(DEV) * 0.3
    w = torch.rand(512, generator=gen).to(DEV) + 0.5
    ang = torch.rand(1, tokens // ratio, 32, generator=gen).to(DEV) * 6.28
    args = (kv, sc, ape, w, ang.cos(), ang.sin(), ratio)
    g = tokens // ratio
    out_b = 584 if fmt == "fp8_ds_mla" else 1024
    bytes_ = 2.0 * tokens * c * 512 * 4 + g * out_b
    shape = f"T={tokens} ratio={ratio} {fmt}"
    out = compress_triton(*args, out_format=fmt)
    if fmt == "fp8_ds_mla":
        ref = compress_reference_fp8(*args)
        err = rel_err(dequantize_fp8_ds_mla(out), dequantize_fp8_ds_mla(ref))
        tol = 2e-2
        ref_fn: Callable[[], object] = lambda: compress_reference_fp8(*args)  # noqa: E731
    else:
        ref = compress_reference(*args)
        err = rel_err(out.float(), ref.float())
        tol = 4e-3
        ref_fn = lambda: compress_reference(*args)  # noqa: E731
    if err > tol:
        return [Row("compressor", model, shape, "triton", None, bytes_, 0.0, f"FAIL rel {err:.1e}")]
    us = time_us(lambda: compress_triton(*args, out_format=fmt))
    rus = bench(ref_fn, rep_ms=100)
    return [
        Row("compressor", model, shape, "triton", us, bytes_, 0.0, f"ok rel {err:.1e}"),
        Row("compressor", model, shape, "torch ref", rus, bytes_, 0.0, "-"),
    ]


# ------------------------------------------------------------------------------ registry


def registry(quick: bool) -> dict[str, list[Callable[[], list[Row]]]]:
    """Ops -> shape thunks, V4-Flash and V4-Pro shapes first (tuning from BEST when set)."""
    b64 = 64
    h64 = BEST.get("hca64") or None
    hc = BEST.get("hca") or None
    cs = BEST.get("csa") or None
    i1 = BEST.get("index1") or None
    ib = BEST.get("index") or None
    ops: dict[str, list[Callable[[], list[Row]]]] = {
        "hca": [
            lambda: attention_rows("hca decode", "V4-Flash", 64, [K128] * b64, None, tune=h64),
            lambda: attention_rows("hca decode", "V4-Flash", 64, [M1] * b64, None, tune=h64),
            lambda: attention_rows(
                "hca decode", "V4-Flash", 64, [M1] * 128, None, tune=hc, with_ref_time=False
            ),
            lambda: attention_rows(
                "hca decode", "V4-Pro", 128, [M1] * b64, None, tune=hc, with_ref_time=False
            ),
            lambda: attention_rows("hca decode", "V4-Flash", 64, [M1], None, tune=hc),
            lambda: attention_rows(
                "hca prefill", "V4-Flash", 64, [K128], None, mtp=512, tune=hc, with_ref_time=False
            ),
        ],
        "csa": [
            lambda: attention_rows("csa decode", "V4-Flash", 64, [K128] * 128, 512, tune=cs),
            lambda: attention_rows("csa decode", "V4-Flash", 64, [K128] * 64, 512, tune=cs),
            lambda: attention_rows("csa decode", "V4-Pro", 128, [K128] * 128, 1024, tune=cs),
            lambda: attention_rows("csa decode", "V4-Flash", 64, [K128] * 128, 512, mtp=2, tune=cs),
        ],
        "indexer": [
            lambda: indexer_rows("V4-Flash", [M1], 512, tune=i1),
            lambda: indexer_rows("V4-Flash", [M1] * 8, 512, tune=ib),
            lambda: indexer_rows("V4-Flash", [M1] * 32, 512, tune=ib),
            lambda: indexer_rows("V4-Flash", [K128] * 64, 512, tune=ib),
            lambda: indexer_rows("V4-Pro", [M1], 1024, tune=i1),
            lambda: indexer_rows("V4-Pro", [M1] * 32, 1024, tune=ib),
        ],
        "latency": [latency_rows],
        "compressor": [
            lambda: compressor_rows("V4 (both)", 4, 65536, "fp8_ds_mla"),
            lambda: compressor_rows("V4 (both)", 128, 65536, "fp8_ds_mla"),
            lambda: compressor_rows("V4 (both)", 4, 65536, "bf16"),
        ],
    }
    if quick:
        ops = {k: v[:2] for k, v in ops.items()}
    return ops


ATTN_CONFIGS: list[dict[str, int]] = [
    {"block_n": 64, "num_warps": 8, "num_stages": 1, "dv_split": 0, "deq": 0},  # the default
    {"block_n": 64, "num_warps": 8, "num_stages": 1, "dv_split": 1, "deq": 0},
    {"block_n": 32, "num_warps": 8, "num_stages": 1, "dv_split": 1, "deq": 1},
    {"block_n": 16, "num_warps": 8, "num_stages": 2, "dv_split": 1, "deq": 1},
    {"block_n": 64, "num_warps": 8, "num_stages": 1, "dv_split": 0, "deq": 1},
    {"block_n": 32, "num_warps": 8, "num_stages": 2, "dv_split": 0, "deq": 1},
    {"block_n": 64, "num_warps": 4, "num_stages": 2, "dv_split": 0, "deq": 1},
    {"block_n": 32, "num_warps": 4, "num_stages": 2, "dv_split": 0, "deq": 1},
]
INDEX_CONFIGS: list[dict[str, int]] = [
    {
        "chunk": 2048,
        "block_k": 128,
        "num_warps": 4,
        "num_stages": 3,
        "merge_group": 16,
        "select": 0,
    },
    {
        "chunk": 2048,
        "block_k": 128,
        "num_warps": 4,
        "num_stages": 3,
        "merge_group": 16,
        "select": 1,
    },
    {
        "chunk": 1024,
        "block_k": 128,
        "num_warps": 4,
        "num_stages": 3,
        "merge_group": 16,
        "select": 1,
    },
    {
        "chunk": 4096,
        "block_k": 128,
        "num_warps": 4,
        "num_stages": 3,
        "merge_group": 32,
        "select": 1,
    },
    {
        "chunk": 2048,
        "block_k": 128,
        "num_warps": 4,
        "num_stages": 4,
        "merge_group": 32,
        "select": 1,
    },
]
ATTN_MINI: list[dict[str, int]] = [
    {},
    {"block_h": 32, "num_warps": 8, "block_n": 64},
    {"block_h": 32, "num_warps": 8, "block_n": 32},
]
TUNE_ATTENTION = False
"""Attention sweep (10 min of H200 time); the report's main table then uses its winner."""
BEST: dict[str, dict[str, int]] = {}
"""Best tuning per op found by `tune_rows` in this process (used by the report that follows)."""


def sweep_attention(
    op: str, heads: int, lengths: list[int], topk: int | None, configs: list[dict[str, int]]
) -> list[Row]:
    """Time each config at one shape (reference computed once; a config that fails is shown)."""
    from dsv4_kernels.sparse_mla.triton_attention import LAST_KERNEL  # noqa: PLC0415  (diagnostic import)

    ratio = 128 if topk is None else 4
    case = make_attention_case(lengths, heads, ratio, topk, 101, DEV)
    run = dict(case, max_comp=max(lengths) // 128) if topk is None else case
    ref_out, _ref_lse = sparse_mla_reference(**case)
    bytes_, flops = attn_counts(case, heads, topk)
    shape = f"B={len(lengths)} L={_fmt_len(lengths)} h={heads}" + (f" k={topk}" if topk else "")
    rows = []
    for cfg in configs:
        note = ",".join(f"{k}={v}" for k, v in cfg.items())
        try:
            out, _lse = sparse_mla_triton(**run, **cfg)
            err = rel_err(out.float(), ref_out.float())
            k = LAST_KERNEL.get("sparse_mla")
            regs = f"regs {getattr(k, 'n_regs', '?')} spills {getattr(k, 'n_spills', '?')}"
            if err > 1e-2:
                rows.append(
                    Row(op, "V4", shape, "triton", None, bytes_, flops, f"FAIL rel {err:.1e}", note)
                )
                continue
            us = bench(lambda: sparse_mla_triton(**run, **cfg), rep_ms=100)  # noqa: B023
            rows.append(
                Row(op, "V4", shape, "triton", us, bytes_, flops, f"ok {err:.1e} {regs}", note)
            )
        except Exception as exc:
            rows.append(
                Row(
                    op,
                    "V4",
                    shape,
                    "triton",
                    None,
                    bytes_,
                    flops,
                    f"ERROR {type(exc).__name__}: {str(exc)[:60]}",
                    note,
                )
            )
        print(rows[-1].shape, rows[-1].note, rows[-1].us, rows[-1].check, flush=True)
    return rows


def _best(rows: list[Row], key: str) -> dict[str, int]:
    timed = [r for r in rows if r.us is not None]
    if not timed:
        return {}
    r = min(timed, key=lambda x: x.us or 0.0)
    return {k: int(v) for k, v in (kv.split("=") for kv in r.note.split(",") if kv)}


def tune_rows() -> list[Row]:
    """Sweep the attention and indexer knobs at the acceptance shapes; record the best in BEST."""
    rows: list[Row] = []
    if not TUNE_ATTENTION:
        hca = sweep_attention("hca decode", 64, [M1] * 64, None, ATTN_MINI)
        csa = sweep_attention("csa decode", 64, [K128] * 128, 512, ATTN_MINI)
        BEST["hca64"] = BEST["hca"] = _best(hca, "")
        BEST["csa"] = _best(csa, "")
        return rows + hca + csa + tune_indexer()
    hca = sweep_attention("hca decode", 64, [M1] * 64, None, ATTN_CONFIGS)
    csa = sweep_attention("csa decode", 64, [K128] * 128, 512, ATTN_CONFIGS)
    ranked = sorted([r for r in hca if r.us is not None], key=lambda r: r.us or 0.0)[:2]
    top = [_best([r], "") for r in ranked]
    hca2 = sweep_attention(
        "hca decode", 64, [M1] * 64, None, [dict(c, n_split=n) for c in top for n in (2, 4)]
    )
    rows += hca + csa + hca2
    BEST["hca64"] = _best(hca + hca2, "")
    BEST["hca"] = {k: v for k, v in BEST["hca64"].items() if k != "n_split"}
    BEST["csa"] = _best(csa, "")
    return rows + tune_indexer()


def tune_indexer() -> list[Row]:
    """Sweep the fused indexer's knobs at L=1M, B=1 and B=32; record the best in BEST."""
    idx_rows: list[Row] = []
    for cfg in INDEX_CONFIGS:
        for lens in ([M1], [M1] * 32):
            got = indexer_rows("V4-Flash", lens, 512, tune=cfg, baselines=False)
            idx_rows += got
            print(got[-1].shape, got[-1].note, got[-1].us, got[-1].check, flush=True)
    BEST["index1"] = _best([r for r in idx_rows if r.shape.startswith("B=1 ")], "")
    BEST["index"] = _best([r for r in idx_rows if not r.shape.startswith("B=1 ")], "")
    for key, lens in (("index1", [M1]), ("index", [M1] * 32)):
        case = make_index_case(lens, 202, DEV)
        cfg = dict(BEST[key], pass1_only=1)
        us = bench(lambda: index_topk_triton(**case, topk=512, max_keys=M1 // 4, **cfg))  # noqa: B023
        key_bytes = len(lens) * (M1 // 4) * 132.0
        idx_rows.append(
            Row(
                "indexer pass 1 only",
                "V4-Flash",
                f"B={len(lens)} L=1M k=512",
                "triton",
                us,
                key_bytes,
                2.0 * 64 * 128 * len(lens) * (M1 // 4),
                "-",
                ",".join(f"{k}={v}" for k, v in cfg.items()),
                {"key TB/s": key_bytes / (us * 1e-6) / 1e12},
            )
        )
        print("pass1", key, us, flush=True)
    print("BEST", BEST, flush=True)
    return idx_rows


def render(rows: list[Row], header: str) -> str:
    """Markdown table of the rows."""
    lines = [
        header,
        "",
        "| op | model | shape | impl | µs | TB/s | TFLOP/s | % of 4.3 TB/s | % of 795 TFLOP/s "
        "| roofline | check | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r.metrics()
        if not m:
            lines.append(
                f"| {r.op} | {r.model} | {r.shape} | {r.impl} | — | — | — | — | — | — "
                f"| {r.check} | {r.note} |"
            )
            continue
        note = r.note
        if "key TB/s" in m:
            note = (note + "; " if note else "") + f"key stream {m['key TB/s']:.2f} TB/s"
        lines.append(
            f"| {r.op} | {r.model} | {r.shape} | {r.impl} | {r.us:.1f} | {m['TB/s']:.2f} | "
            f"{m['TFLOP/s']:.0f} | {100 * m['bw_frac']:.0f}% | {100 * m['mma_frac']:.0f}% | "
            f"{100 * m['roofline']:.0f}% | {r.check} | {note} |"
        )
    return "\n".join(lines)


def environment() -> dict[str, str]:
    """GPU, versions, commit."""
    commit = os.environ.get("DSV4_COMMIT", "")
    try:
        commit = (
            commit
            or subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607  (git from PATH, read-only)
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        )
    except OSError:
        commit = "unknown"
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "gpu": torch.cuda.get_device_name(0),
        "sms": str(torch.cuda.get_device_properties(0).multi_processor_count),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": str(torch.version.cuda),
        "python": platform.python_version(),
        "commit": commit or "unknown",
    }


def main() -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ops", default="hca,csa,indexer,compressor")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tune", action="store_true", help="sweep first, then bench with the best")
    ap.add_argument("--tune-only", action="store_true")
    ap.add_argument(
        "--graph", action="store_true", help="time kernels with CUDA graphs instead of do_bench"
    )
    args = ap.parse_args()
    TIMING["graph"] = args.graph
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment()
    env["timing"] = "cuda graph" if args.graph else "do_bench"
    header = " · ".join(f"{k} {v}" for k, v in env.items())
    rows: list[Row] = []
    t0 = time.time()
    if args.tune:
        trows = tune_rows()
        text = render(trows, "## Tuning sweep\n\n" + header + f"\n\nBEST {BEST}")
        (args.out / "tune.md").write_text(text + "\n")
        if args.tune_only:
            print(text, flush=True)
            return 0
    reg = registry(args.quick)
    for op in args.ops.split(","):
        for thunk in reg[op]:
            got = thunk()
            rows += got
            for r in got:
                print(
                    f"[{time.time() - t0:6.1f}s] {r.op} {r.model} {r.shape} {r.impl}: "
                    f"{r.us if r.us is None else round(r.us, 1)} us {r.check} {r.note}",
                    flush=True,
                )
            (args.out / "bench.md").write_text(render(rows, header) + "\n")
    text = render(rows, header)
    (args.out / "bench.md").write_text(text + "\n")
    (args.out / "bench.json").write_text(
        json.dumps(
            {"env": env, "rows": [dict(r.__dict__, metrics=r.metrics()) for r in rows]}, indent=1
        )
        + "\n"
    )
    print(text)
    fails = [r for r in rows if r.check.startswith("FAIL")]
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
