"""Benchmark: full layout search time of the planner (issue 2 goal: < 20 ms for Pro on H100).

Run: `.venv/bin/python benchmarks/planner_search.py`. Prints the median and p90 over repeated runs
of the complete `plan()` (enumeration, memory, KV, ranking, reasons) for several requests.
"""

from __future__ import annotations

import statistics
import time

from dsv4_operator.planning import PlanRequest, plan

CASES = {
    "pro 1M on h100 nodes (<= 3 x 8)": PlanRequest(
        model="pro", max_model_len=1_048_576, gpu_types=("h100-80gb",), max_nodes=3
    ),
    "pro auto, fallback h100 -> h200 -> b200, <= 4 nodes": PlanRequest(
        model="pro", gpu_types=("h100-80gb", "h200-141gb", "b200-180gb"), max_nodes=4
    ),
    "flash fp8 on 4 x h100": PlanRequest(
        model="flash",
        weights_format="fp8",
        gpu_types=("h100-80gb",),
        gpus_per_node=4,
        max_nodes=1,
        gpu_memory_utilization=0.95,
        max_num_batched_tokens=2048,
    ),
    "flash on 2 x rtx-5090 (no fit, with the explanation search)": PlanRequest(
        model="flash", gpu_types=("rtx-5090-32gb",), gpus_per_node=2, max_nodes=1
    ),
}


def main(repeats: int = 50) -> None:
    """Time each case `repeats` times and print the figures."""
    print(f"{'case':<62} {'median ms':>10} {'p90 ms':>8} {'candidates':>10}")
    for name, req in CASES.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            p = plan(req)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        n = 1 + len(p.runners_up) + len(p.rejected)
        p90 = times[int(0.9 * (len(times) - 1))]
        print(f"{name:<62} {statistics.median(times):>10.2f} {p90:>8.2f} {n:>10}")


if __name__ == "__main__":
    main()
