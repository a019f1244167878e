"""Benchmark: the native autoscaler on a recorded 24-hour synthetic trace (issue 9).

Prints GPU-hours used by the autoscaled deployment against a static deployment sized for the peak,
and the share of time the ready capacity was under the offered load. The trace is synthetic and
seeded (a diurnal curve, noise, three spikes): `python benchmarks/autoscaler_trace.py`.
"""

from __future__ import annotations

import math
import random

from dsv4_operator.autoscaling import AutoscalerConfig, run_simulation

DAY = 24 * 3600.0
SCRAPE = 15.0
TARGET = 2500.0  # generated tokens/s per replica
GPUS = 16  # GPUs per replica (e.g. Pro on 2 nodes of 8)


def trace(seed: int = 7) -> list[float]:
    """Offered tokens/s for each scrape interval of one day."""
    rng = random.Random(seed)
    spikes = [
        (rng.uniform(0, DAY), rng.uniform(600, 1800), rng.uniform(4000, 9000)) for _ in range(3)
    ]
    out = []
    for i in range(int(DAY / SCRAPE) + 1):
        t = i * SCRAPE
        diurnal = 6000 + 5000 * math.sin(2 * math.pi * (t / DAY - 0.3))
        spike = sum(h for start, length, h in spikes if start <= t < start + length)
        out.append(max(0.0, diurnal * (1 + rng.gauss(0, 0.05)) + spike))
    return out


def main() -> None:
    """Run the simulation and print the figures."""
    load = trace()
    cfg = AutoscalerConfig(
        min_replicas=1,
        max_replicas=10,
        target_tokens_per_second=TARGET,
        scale_up_window_seconds=300,
        scale_down_window_seconds=1800,
        gpus_per_replica=GPUS,
    )
    sim = run_simulation(
        cfg,
        lambda t: load[min(int(t / SCRAPE), len(load) - 1)],
        duration_seconds=DAY,
        scrape_seconds=SCRAPE,
        initial_replicas=math.ceil(load[0] / TARGET),
        startup_seconds=1200,
    )
    gpu_hours = sum(s.replicas for s in sim.steps) * GPUS * SCRAPE / 3600
    peak = max(load)
    static_replicas = math.ceil(peak / TARGET)
    static_hours = static_replicas * GPUS * DAY / 3600
    under = sum(1 for s in sim.steps if s.capacity < s.offered) / len(sim.steps)
    under_5 = sum(1 for s in sim.steps if s.capacity < 0.95 * s.offered) / len(sim.steps)
    scales = [d for d in sim.decisions if d.action == "scale"]
    print(f"trace: 24 h, peak {peak:,.0f} tokens/s, mean {sum(load) / len(load):,.0f} tokens/s")
    print(
        f"static peak deployment: {static_replicas} replicas x {GPUS} GPUs = "
        f"{static_hours:,.0f} GPU-hours"
    )
    print(f"autoscaled: {gpu_hours:,.0f} GPU-hours ({gpu_hours / static_hours:.1%} of static)")
    print(f"time under target capacity: {under:.1%} (more than 5 % under: {under_5:.1%})")
    print(
        f"scale decisions: {len(scales)}; "
        f"drains: {sum(1 for d in sim.decisions if d.action == 'drain')}"
    )
    print(f"requests cut off by scale-down: {sum(s.removed_in_flight for s in sim.steps)}")


if __name__ == "__main__":
    main()
