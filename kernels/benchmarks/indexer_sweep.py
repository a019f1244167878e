"""Sweep of the fused indexer + top-k variants at V4 L=1M on one GPU (H200), in one run.

Shapes: V4-Flash (K=512) B=1, 8, 32 and V4-Pro (K=1024) B=32, each 262,144 index keys per query
token (L = 1M, ratio 4). For every variant (keyword arguments of `index_topk_triton`) the
result is first checked against `index_topk_reference` at that shape (sorted top-k values,
relative 2e-3: fp8 tensor-core accumulation, tests/kernels/test_indexer.py); a FAIL or ERROR
row prints no time. Then: median µs (`triton.testing.do_bench`, 256 MB L2 flush before every
run), at B=1 also CUDA-graph µs (bench.py `bench_graph`), key-stream TB/s (132 B per key, as
bench.py counts it) and the speed-up over torch scores + `torch.topk` timed the same way.
Diagnostic rows (`pass1_only`, `score_only`) are not a top-k: they are timed after the check of
the same configuration without the diagnostic switch, and say so. Rows with truncated lists
(`cand`) report how many tokens the last merge sent to the exact fallback in the check run.

Run (from the repository root; < 5 min on the H200 incl. compilation):
    PYTHONPATH=kernels python3 kernels/benchmarks/indexer_sweep.py --out OUT
Options: --shapes b1,b32,b8,pro32 (order/subset; x1, x4, x8, x32, xpro1, xpro32: the
sampled-threshold grid; x32c: B=32 with each token's top keys clustered in its last 4,096
keys), --budget-s 280 (later configs are skipped), --no-graph, --graph-all (CUDA-graph timing
at every B). Without a GPU, `--compile-only 90` compiles every kernel the configurations launch
for sm_90a and prints registers per thread and shared memory (occupancy) instead.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import bench  # type: ignore[import-not-found]  # kernels/benchmarks/bench.py: this script's folder is on sys.path
import torch
import triton

from dsv4_kernels.indexer import triton_indexer
from dsv4_kernels.indexer.reference import index_topk_reference
from dsv4_kernels.indexer.triton_indexer import index_topk_triton
from dsv4_kernels.testing import make_index_case

GRAPH_ALL = False
"""--graph-all: CUDA-graph timing at every batch size, not only B=1."""
M1 = 1048576
N_KEYS = M1 // 4
TOL = 2e-3
DIAG = ("pass1_only", "score_only")

TH = {"threshold": True}
LN = {"lean": 2}
ST5 = {"num_stages": 5}
MR = {"maxnreg": 128}
B64S7 = {"block_k": 64, "num_stages": 7}
B1: list[tuple[str, dict[str, Any]]] = [
    ("base (default)", {}),
    ("lean2 st5", {**LN, **ST5}),
    ("lean2 cand32 st5", {"cand": 32, **LN, **ST5}),
    ("lean2 cand16 chunk1024 st5", {"chunk": 1024, "cand": 16, **LN, **ST5}),
    ("lean2 cand16 chunk512 bk64 st7 mr128", {"chunk": 512, "cand": 16, **LN, **B64S7, **MR}),
    ("lean2 tiered16 chunk1024 st5", {"chunk": 1024, "cand": 16, "tiered": True, **LN, **ST5}),
    ("lean2 tiered32 st5", {"cand": 32, "tiered": True, **LN, **ST5}),
    (
        "lean2 tiered16 chunk1024 st5 w8",
        {"chunk": 1024, "cand": 16, "tiered": True, **LN, **ST5, "num_warps": 8},
    ),
    ("lean3 tiered16 chunk1024 st5", {"chunk": 1024, "cand": 16, "tiered": True, "lean": 3, **ST5}),
    (
        "lean2 tiered16 chunk1024 st5 mw16",
        {"chunk": 1024, "cand": 16, "tiered": True, "merge_warps": 16, **LN, **ST5},
    ),
    (
        "lean2 tiered16 chunk1024 bk64 st7 mr128",
        {"chunk": 1024, "cand": 16, "tiered": True, **LN, **B64S7, **MR},
    ),
    ("lean2 cand16 chunk1024 bk64 st7 mr128", {"chunk": 1024, "cand": 16, **LN, **B64S7, **MR}),
    ("cand32 (old codegen)", {"cand": 32}),
    ("DIAG score only lean2 st5", {"score_only": True, **LN, **ST5}),
    (
        "DIAG pass1 only lean2 tiered16 c1024",
        {"chunk": 1024, "cand": 16, "tiered": True, "pass1_only": True, **LN, **ST5},
    ),
]
B8: list[tuple[str, dict[str, Any]]] = [
    ("base (default)", {}),
    ("lean2 st5", {**LN, **ST5}),
    ("lean2 tiered32 st5", {"cand": 32, "tiered": True, **LN, **ST5}),
    ("lean2 thr st5", {**TH, **LN, **ST5}),
    ("lean2 thr bk64 st7 mr128", {**TH, **LN, **B64S7, **MR}),
    ("lean2 tiered32 thr st5", {"cand": 32, "tiered": True, **TH, **LN, **ST5}),
    ("lean2 tiered16 chunk1024 st5", {"chunk": 1024, "cand": 16, "tiered": True, **LN, **ST5}),
]
B32: list[tuple[str, dict[str, Any]]] = [
    ("base (default)", {}),
    ("lean2 st5", {**LN, **ST5}),
    ("lean2 st5 mg8", {**LN, **ST5, "merge_group": 8}),
    ("lean2 bk64 st7 mr128", {**LN, **B64S7, **MR}),
    ("lean2 tiered32 st5", {"cand": 32, "tiered": True, **LN, **ST5}),
    ("lean2 tiered16 chunk1024 st5", {"chunk": 1024, "cand": 16, "tiered": True, **LN, **ST5}),
    ("lean2 tiered32 chunk1024 st5", {"chunk": 1024, "cand": 32, "tiered": True, **LN, **ST5}),
    ("DIAG pass1 only lean2 st5", {"pass1_only": True, **LN, **ST5}),
    ("DIAG score only lean2 st5", {"score_only": True, **LN, **ST5}),
    ("threshold", TH),
    ("lean2 thr", {**TH, **LN}),
    ("lean2 thr st5", {**TH, **LN, **ST5}),
    ("lean1 thr st5", {**TH, "lean": 1, **ST5}),
    ("lean2 thr bk64 st7", {**TH, **LN, **B64S7}),
    ("lean2 thr bk64 st7 mr128", {**TH, **LN, **B64S7, **MR}),
    ("lean2 thr bk256 w8 st5", {"block_k": 256, "num_warps": 8, **TH, **LN, **ST5}),
    ("lean2 tiered32 thr st5", {"cand": 32, "tiered": True, **TH, **LN, **ST5}),
    ("lean2 cand32 st5", {"cand": 32, **LN, **ST5}),
    ("lean2 thr st5 w8", {**TH, **LN, **ST5, "num_warps": 8}),
    ("lean2 tiered32 thr st5 w8", {"cand": 32, "tiered": True, **TH, **LN, **ST5, "num_warps": 8}),
    ("lean3 thr st5", {**TH, "lean": 3, **ST5}),
    ("lean3 tiered32 thr st5", {"cand": 32, "tiered": True, **TH, "lean": 3, **ST5}),
    ("lean2 thr st4", {"num_stages": 4, **TH, **LN}),
    ("cand32", {"cand": 32}),
    ("DIAG score only base", {"score_only": True}),
    ("DIAG score only lean2 st5", {"score_only": True, **LN, **ST5}),
    ("DIAG score only lean2 bk64 st7 mr128", {"score_only": True, **LN, **B64S7, **MR}),
    ("DIAG pass1 only base", {"pass1_only": True}),
    ("DIAG pass1 only lean2 thr st5", {"pass1_only": True, **TH, **LN, **ST5}),
]
PRO32: list[tuple[str, dict[str, Any]]] = [
    ("base (default)", {}),
    ("lean2 st5", {**LN, **ST5}),
    ("lean2 st5 mg8", {**LN, **ST5, "merge_group": 8}),
    ("lean2 tiered32 st5", {"cand": 32, "tiered": True, **LN, **ST5}),
    ("lean2 thr st5", {**TH, **LN, **ST5}),
    ("lean2 thr st5 mg8", {**TH, **LN, **ST5, "merge_group": 8}),
    ("lean2 thr bk64 st7 mr128", {**TH, **LN, **B64S7, **MR}),
    ("lean2 tiered32 thr st5", {"cand": 32, "tiered": True, **TH, **LN, **ST5}),
    ("lean2 cand32 st5", {"cand": 32, **LN, **ST5}),
]
CAND_GRID: list[tuple[str, dict[str, Any]]] = [
    ("base (default)", {}),
    ("lean2 cand32 st5 w8", {"cand": 32, **LN, **ST5, "num_warps": 8}),
    ("lean2 cand16 st5 w8", {"cand": 16, **LN, **ST5, "num_warps": 8}),
    ("lean2 cand32 st4", {"cand": 32, **LN, "num_stages": 4}),
    ("lean2 cand32 st6", {"cand": 32, **LN, "num_stages": 6}),
    ("lean2 cand32 st5 mr128", {"cand": 32, **LN, **ST5, **MR}),
    (
        "lean2 cand32 bk256 w8 st4",
        {"cand": 32, **LN, "block_k": 256, "num_warps": 8, "num_stages": 4},
    ),
    ("lean3 cand32 st5", {"cand": 32, "lean": 3, **ST5}),
    ("lean2 cand32 bk64 st8", {"cand": 32, **LN, "block_k": 64, "num_stages": 8}),
    ("lean2 cand32 st5", {"cand": 32, **LN, **ST5}),
    ("lean2 cand16 st5", {"cand": 16, **LN, **ST5}),
    ("lean2 cand8 st5", {"cand": 8, **LN, **ST5}),
    ("lean2 cand32 c4096 st5", {"cand": 32, "chunk": 4096, **LN, **ST5}),
    ("lean2 cand16 c4096 st5", {"cand": 16, "chunk": 4096, **LN, **ST5}),
    ("lean2 cand32 bk64 st7 mr128", {"cand": 32, **LN, **B64S7, **MR}),
    ("lean2 cand16 bk64 st7 mr128", {"cand": 16, **LN, **B64S7, **MR}),
    ("lean2 cand32 c4096 bk64 st7 mr128", {"cand": 32, "chunk": 4096, **LN, **B64S7, **MR}),
    ("lean2 tiered16 c1024 st5", {"chunk": 1024, "cand": 16, "tiered": True, **LN, **ST5}),
    ("lean2 tiered16 st5", {"cand": 16, "tiered": True, **LN, **ST5}),
]
SEL_GRID: list[tuple[str, dict[str, Any]]] = [
    ("base (default)", {}),
    ("default sel2", {"select": 2}),
    ("default sel2 c4096", {"select": 2, "chunk": 4096}),
    ("default sel2 c1024", {"select": 2, "chunk": 1024}),
    ("default sel2 bk64 st7 mr128", {"select": 2, **B64S7, **MR}),
    ("default c4096", {"chunk": 4096}),
    ("default mg8", {"merge_group": 8}),
    ("default sel2 mg8", {"select": 2, "merge_group": 8}),
]
SAMPLE_GRID: list[tuple[str, dict[str, Any]]] = [
    ("default (sample=128)", {}),
    ("full path (sample=0)", {"sample": 0}),
    ("sample64", {"sample": 64}),
    ("sample256", {"sample": 256}),
    ("sample128 c1024", {"sample": 128, "chunk": 1024}),
    ("sample128 c2048", {"sample": 128, "chunk": 2048}),
    ("sample128 rank12", {"sample": 128, "sample_rank": 12}),
    ("sample128 G32", {"sample": 128, "sample_programs": 32}),
    ("sample128 st4", {"sample": 128, "num_stages": 4}),
    ("sample128 st6", {"sample": 128, "num_stages": 6}),
    ("sample128 w8 bk256 st4", {"sample": 128, "num_warps": 8, "block_k": 256, "num_stages": 4}),
]
SHAPES: dict[str, tuple[str, int, int, list[tuple[str, dict[str, Any]]]]] = {
    "x1": ("V4-Flash", 1, 512, SAMPLE_GRID),
    "x8": ("V4-Flash", 8, 512, SAMPLE_GRID),
    "x4": ("V4-Flash", 4, 512, SAMPLE_GRID),
    "x32": ("V4-Flash", 32, 512, SAMPLE_GRID),
    "x32c": ("V4-Flash", 32, 512, SAMPLE_GRID),
    "xpro32": ("V4-Pro", 32, 1024, SAMPLE_GRID),
    "xpro1": ("V4-Pro", 1, 1024, SAMPLE_GRID),
    "s1": ("V4-Flash", 1, 512, SEL_GRID),
    "s8": ("V4-Flash", 8, 512, SEL_GRID),
    "s32": ("V4-Flash", 32, 512, SEL_GRID),
    "spro32": ("V4-Pro", 32, 1024, SEL_GRID),
    "c1": ("V4-Flash", 1, 512, CAND_GRID),
    "c8": ("V4-Flash", 8, 512, CAND_GRID),
    "c32": ("V4-Flash", 32, 512, CAND_GRID),
    "cpro32": ("V4-Pro", 32, 1024, CAND_GRID),
    "b1": ("V4-Flash", 1, 512, B1),
    "b8": ("V4-Flash", 8, 512, B8),
    "b32": ("V4-Flash", 32, 512, B32),
    "pro32": ("V4-Pro", 32, 1024, PRO32),
}


class _FlagSpy:
    """Counts the tokens that `cand`/`sample` runs sent to the exact fallback."""

    def __init__(self) -> None:
        self.flags: list[torch.Tensor] = []
        self.orig = triton_indexer._merges
        self.orig_sampled = triton_indexer._sampled_topk

    def __enter__(self) -> _FlagSpy:
        def spy(*args: Any, **kw: Any) -> None:
            if kw.get("verify"):
                self.flags.append(kw["flag"] if "flag" in kw else args[12])
            self.orig(*args, **kw)

        def spy_sampled(*args: Any) -> torch.Tensor:
            flag: torch.Tensor = self.orig_sampled(*args)
            self.flags.append(flag.clone())
            return flag

        triton_indexer._merges = spy
        triton_indexer._sampled_topk = spy_sampled
        return self

    def __exit__(self, *exc: object) -> None:
        triton_indexer._merges = self.orig
        triton_indexer._sampled_topk = self.orig_sampled

    def flagged(self) -> int | None:
        """Flagged tokens of the spied calls (None: no verifying merge ran)."""
        return int(sum(int((f != 0).sum()) for f in self.flags)) if self.flags else None


def check(
    case: dict[str, Any], topk: int, cfg: dict[str, Any], ref_val: torch.Tensor
) -> tuple[bool, str]:
    """Run the configuration without its diagnostic switches and compare with the reference."""
    run = {k: v for k, v in cfg.items() if k not in DIAG}
    with _FlagSpy() as spy:
        _i, val = index_topk_triton(**case, topk=topk, max_keys=N_KEYS, **run)
        torch.cuda.synchronize()
    got = val.sort(dim=1, descending=True).values
    fin = torch.isfinite(ref_val)
    if not torch.equal(torch.isfinite(got), fin):
        return False, "FAIL valid-entry count differs"
    scale = float(ref_val[fin].abs().max())
    err = float((got[fin] - ref_val[fin]).abs().max()) / scale
    ids_ok = bool((_i >= 0).all())  # L=1M: every slot holds a real key
    note = f"rel {err:.1e}"
    if spy.flagged() is not None:
        note += f", fallback tokens {spy.flagged()}"
    ok = err <= TOL and ids_ok
    return ok, ("ok " if ok else "FAIL ") + note + ("" if ids_ok else ", id -1 present")


def _cluster(case: dict[str, Any]) -> None:
    """Give the last 4,096 keys of every sequence 100x scales (in place).

    Each token's top-K then lies in its last chunks, like attention to recent tokens.
    """
    pages = case["key_pages"]
    page = int(case["page_size"])
    last = case["block_table"][:, : N_KEYS // page][:, -4096 // page :].reshape(-1).long()
    sc = pages[last, page * 128 :].view(torch.float32) * 100.0
    pages[last, page * 128 :] = sc.view(torch.uint8)


def _baseline(case: dict[str, Any], topk: int, use_graph: bool) -> dict[str, float]:
    """µs of torch scores and of torch.topk over them (do_bench; CUDA graph if asked)."""
    base: dict[str, float] = {}
    try:
        lg = bench.torch_scores(case, N_KEYS)
        base["scores"] = bench.bench(lambda: bench.torch_scores(case, N_KEYS), rep_ms=100)
        base["topk"] = bench.bench(lambda: torch.topk(lg, topk, dim=1), rep_ms=100)
        if use_graph:
            base["scores_g"] = bench.bench_graph(lambda: bench.torch_scores(case, N_KEYS))
            base["topk_g"] = bench.bench_graph(lambda: torch.topk(lg, topk, dim=1))
    except torch.OutOfMemoryError:
        print("baseline OOM", flush=True)
    lg = torch.empty(0)  # free the logits before the variants run
    torch.cuda.empty_cache()
    return base


def sweep_shape(key: str, deadline: float, graph_b1: bool) -> list[dict[str, Any]]:
    """Check and time every variant of one shape; returns the rows."""
    model, b, topk, configs = SHAPES[key]
    shape = f"{model} B={b} L=1M K={topk}" + (" clustered" if key.endswith("c") else "")
    print(f"== {shape}", flush=True)
    case = make_index_case([M1] * b, 202, bench.DEV)
    if key.endswith("c"):
        _cluster(case)
    key_bytes = float(b * N_KEYS * 132)
    _ri, ref_val = index_topk_reference(**case, topk=topk)
    del _ri
    use_graph = graph_b1 and (b == 1 or GRAPH_ALL)
    base = _baseline(case, topk, use_graph)
    ref_us = base.get("scores", math.nan) + base.get("topk", math.nan)
    ref_g = base.get("scores_g", math.nan) + base.get("topk_g", math.nan)
    rows: list[dict[str, Any]] = [
        {
            "shape": shape,
            "variant": "scores+torch.topk (baseline)",
            "config": "",
            "check": "-",
            "us": ref_us,
            "us_graph": ref_g if use_graph else None,
            "key_tbs": key_bytes / (ref_us * 1e-6) / 1e12,
            "speedup": 1.0,
            "speedup_graph": 1.0 if use_graph else None,
            "note": f"torch.topk alone {base.get('topk', math.nan):.1f} µs",
        }
    ]
    print_row(rows[-1])
    for name, cfg in configs:
        row: dict[str, Any] = {
            "shape": shape,
            "variant": name,
            "config": ",".join(f"{k}={v}" for k, v in cfg.items()),
            "us": None,
            "us_graph": None,
            "key_tbs": None,
            "speedup": None,
            "speedup_graph": None,
            "note": "NOT a top-k (diagnostic)" if any(k in cfg for k in DIAG) else "",
        }
        if time.time() > deadline:
            row["check"] = "SKIPPED (time budget)"
            rows.append(row)
            print_row(row)
            continue
        try:
            ok, msg = check(case, topk, cfg, ref_val)
            row["check"] = msg
            if ok:

                def fn(cfg: dict[str, Any] = cfg) -> object:
                    return index_topk_triton(**case, topk=topk, max_keys=N_KEYS, **cfg)

                us = bench.bench(fn, rep_ms=100)
                row["us"] = us
                row["key_tbs"] = key_bytes / (us * 1e-6) / 1e12
                row["speedup"] = ref_us / us
                if use_graph:
                    ug = bench.bench_graph(fn)
                    row["us_graph"] = ug
                    row["speedup_graph"] = ref_g / ug
        except Exception as exc:  # a variant that does not compile must not stop the sweep
            row["check"] = f"ERROR {type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
            traceback.print_exc(limit=3)
        rows.append(row)
        print_row(row)
        torch.cuda.empty_cache()
    return rows


def _f(x: float | None, fmt: str) -> str:
    return "—" if x is None or math.isnan(x) else format(x, fmt)


def print_row(r: dict[str, Any]) -> None:
    """One progress line."""
    print(
        f"  {r['variant']:<28} {_f(r['us'], '.1f'):>8} µs  graph {_f(r['us_graph'], '.1f'):>7}"
        f"  {_f(r['key_tbs'], '.2f'):>5} TB/s  x{_f(r['speedup'], '.1f'):>5}"
        f"  {r['check']}  {r['config']}  {r['note']}",
        flush=True,
    )


def render(rows: list[dict[str, Any]], header: str) -> str:
    """Markdown table."""
    lines = [
        header,
        "",
        "| shape | variant | µs (do_bench) | µs (CUDA graph) | key stream TB/s | × vs scores+"
        "torch.topk | × (graph) | check | config | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['variant']} | {_f(r['us'], '.1f')} | {_f(r['us_graph'], '.1f')} "
            f"| {_f(r['key_tbs'], '.2f')} | {_f(r['speedup'], '.1f')} "
            f"| {_f(r['speedup_graph'], '.1f')} | {r['check']} | {r['config']} | {r['note']} |"
        )
    return "\n".join(lines)


class _CompileOnly:
    """Stands in for a @triton.jit kernel: compiles each launch for a GPU target, runs nothing."""

    def __init__(self, kernel: Any, target: Any, log: list[str]) -> None:
        self.kernel = kernel
        self.target = target
        self.log = log
        self.seen: dict[tuple[str, ...], str] = {}

    def __getitem__(self, grid: object) -> Any:
        def launch(*args: Any, **kw: Any) -> None:
            import subprocess  # noqa: PLC0415  (diagnostic mode only)
            from tempfile import NamedTemporaryFile  # noqa: PLC0415  (diagnostic mode only)

            from triton.compiler import ASTSource  # noqa: PLC0415  (diagnostic mode only)

            opts: dict[str, Any] = {
                k: kw.pop(k) for k in ("num_warps", "num_stages", "maxnreg") if k in kw
            }
            dtypes = {
                torch.float32: "*fp32",
                torch.int32: "*i32",
                torch.uint8: "*u8",
                torch.float8_e4m3fn: "*fp8e4nv",
            }
            sig: dict[str, str] = {}
            attrs: dict[tuple[int, ...], list[list[Any]]] = {}
            for i, name in enumerate(self.kernel.arg_names):
                if name in kw:
                    sig[name] = "constexpr"
                    continue
                a = args[i]
                sig[name] = dtypes[a.dtype] if isinstance(a, torch.Tensor) else "i32"
                if isinstance(a, torch.Tensor) or a % 16 == 0:
                    attrs[(i,)] = [["tt.divisibility", 16]]
            every: dict[str, Any] = {**sig, **kw, **opts}
            key = tuple(f"{k}={v}" for k, v in sorted(every.items()))
            if key in self.seen:
                return
            t = time.time()
            try:
                src = ASTSource(self.kernel, sig, kw, attrs)
                k = triton.compile(src, target=self.target, options=opts)
                usage = "?"
                tool = Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"
                with NamedTemporaryFile(suffix=".cubin") as fh:
                    fh.write(k.asm["cubin"])
                    fh.flush()
                    out = subprocess.run(  # noqa: S603  (triton's own cuobjdump, our cubin)
                        [str(tool), "--dump-resource-usage", fh.name],
                        capture_output=True,
                        text=True,
                        check=False,
                    ).stdout
                    usage = " ".join(w for w in out.split() if w.startswith(("REG:", "STACK:")))
                msg = f"ok {time.time() - t:.1f}s shared={k.metadata.shared} {usage}"
            except Exception as exc:  # report every failing specialization, go on
                msg = f"FAIL {type(exc).__name__}: {str(exc)[:300]}"
            self.seen[key] = msg
            short = {k: v for k, v in kw.items() if k not in ("H", "D", "RATIO", "NATIVE")}
            self.log.append(f"    {self.kernel.fn.__name__} {opts} {short}: {msg}")

        return launch


def compile_only(keys: list[str], cc: int) -> int:
    """Compile (no GPU needed) every kernel each configuration launches; print registers.

    Registers per thread and shared memory decide how many pass-1 CTAs share an SM (65,536
    registers and 228 KB per SM on the H100/H200): the numbers to read next to the timings.
    """
    from triton.backends.compiler import GPUTarget  # noqa: PLC0415  (diagnostic mode only)

    setattr(triton_indexer, "NATIVE_FP8", True)  # noqa: B010  (the GPU code paths)
    target = GPUTarget("cuda", cc, 32)
    log: list[str] = []
    p1, mg = triton_indexer._score_select_kernel, triton_indexer._merge_kernel
    triton_indexer._score_select_kernel = _CompileOnly(p1, target, log)
    triton_indexer._merge_kernel = _CompileOnly(mg, target, log)
    try:
        for key in keys:
            model, b, topk, configs = SHAPES[key]
            case = make_index_case([4096] * b, 1, torch.device("cpu"))  # grid from max_keys
            for name, cfg in configs:
                print(f"{model} B={b} K={topk} {name}:", flush=True)
                log.clear()
                try:
                    index_topk_triton(**case, topk=topk, max_keys=N_KEYS, **cfg)
                except Exception as exc:
                    log.append(f"    wrapper: {type(exc).__name__}: {exc}")
                print("\n".join(log) or "    (kernels as above)", flush=True)
    finally:
        triton_indexer._score_select_kernel, triton_indexer._merge_kernel = p1, mg
    return 0


def main() -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shapes", default="b1,b32,b8,pro32")
    ap.add_argument("--budget-s", type=float, default=280.0)
    ap.add_argument("--no-graph", action="store_true", help="skip CUDA-graph timing at B=1")
    ap.add_argument("--graph-all", action="store_true", help="CUDA-graph timing at every B")
    ap.add_argument(
        "--no-threshold",
        action="store_true",
        help="skip threshold=True rows (its atomic failed on the H200 with Triton 3.6)",
    )
    ap.add_argument(
        "--compile-only",
        type=int,
        metavar="CC",
        help="no GPU: compile every kernel for sm_CC (90 = H200) and print registers/shared",
    )
    args = ap.parse_args()
    global GRAPH_ALL  # noqa: PLW0603  (a run-wide switch of this script)
    GRAPH_ALL = args.graph_all
    if args.compile_only:
        return compile_only(args.shapes.split(","), args.compile_only)
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    env = bench.environment()
    header = "## Indexer + top-k variant sweep\n\n" + " · ".join(f"{k} {v}" for k, v in env.items())
    t0 = time.time()
    deadline = t0 + args.budget_s
    rows: list[dict[str, Any]] = []
    if args.no_threshold:
        for spec in SHAPES.values():
            spec[3][:] = [(n, kw) for n, kw in spec[3] if not kw.get("threshold")]
    for key in args.shapes.split(","):
        try:
            rows += sweep_shape(key, deadline, not args.no_graph)
        except Exception:  # a whole shape failing (e.g. OOM in the reference) is reported
            traceback.print_exc()
            rows.append(
                {
                    "shape": key,
                    "variant": "(shape)",
                    "config": "",
                    "check": "ERROR (see log)",
                    "us": None,
                    "us_graph": None,
                    "key_tbs": None,
                    "speedup": None,
                    "speedup_graph": None,
                    "note": "",
                }
            )
        (args.out / "indexer_sweep.md").write_text(render(rows, header) + "\n")
        print(f"[{time.time() - t0:.0f}s]", flush=True)
    text = render(rows, header)
    (args.out / "indexer_sweep.md").write_text(text + "\n")
    (args.out / "indexer_sweep.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    print(text)
    print(f"total {time.time() - t0:.0f}s")
    return 1 if any(str(r["check"]).startswith(("FAIL", "ERROR")) for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
