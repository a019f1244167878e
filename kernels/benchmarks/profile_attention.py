"""Run one acceptance shape of the default attention kernel, for Nsight Compute (`ncu`).

    PYTHONPATH=kernels ncu --kernel-name regex:_sparse_mla_ws_kernel --launch-skip 2 \
        --launch-count 1 --set full -o OUT/hca python3 kernels/benchmarks/profile_attention.py hca

Shapes (V4-Flash, h=64, as `attention_ab.py`): `hca` B=64 L=1M, `hca128k` B=64 L=128K, `csa`
B=128 L=128K top-k 512. The kernel runs three times (the first compiles), after a check against
`sparse_mla_reference` (relative 1e-2); nothing is timed here.
"""

from __future__ import annotations

import sys

import torch

from dsv4_kernels.sparse_mla.reference import sparse_mla_reference
from dsv4_kernels.sparse_mla.triton_attention import sparse_mla_triton
from dsv4_kernels.testing import make_attention_case, rel_err

SHAPES: dict[str, tuple[list[int], int | None]] = {
    "hca": ([2**20] * 64, None),
    "hca128k": ([2**17] * 64, None),
    "csa": ([2**17] * 128, 512),
}


def main() -> None:
    """Check, then run the shape named by argv[1] three times."""
    lengths, topk = SHAPES[sys.argv[1]]
    ratio = 128 if topk is None else 4
    case = make_attention_case(lengths, 64, ratio, topk, 101, torch.device("cuda"))
    run = dict(case, max_comp=max(lengths) // 128) if topk is None else case
    ref, _ = sparse_mla_reference(**case)
    out, _ = sparse_mla_triton(**run)
    err = rel_err(out.float(), ref.float())
    if not err <= 1e-2:
        raise SystemExit(f"{sys.argv[1]}: reference check failed, rel {err:.1e}")
    for _ in range(2):
        sparse_mla_triton(**run)
    torch.cuda.synchronize()
    print(f"{sys.argv[1]}: ok rel {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
