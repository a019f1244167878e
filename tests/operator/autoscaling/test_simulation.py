"""Load simulations that drive the native autoscaler (issue 9 acceptance)."""

import itertools

import pytest

from dsv4_operator.autoscaling import AutoscalerConfig, Simulation, run_simulation

SCRAPE = 15.0
TARGET = 2000.0
CFG = AutoscalerConfig(
    min_replicas=1,
    max_replicas=6,
    target_tokens_per_second=TARGET,
    scale_up_window_seconds=120,
    scale_down_window_seconds=600,
    gpus_per_replica=16,
    gpu_budget=16 * 5,
)


def check_invariants(sim: Simulation, cfg: AutoscalerConfig) -> None:
    ceiling = cfg.ceiling
    for step in sim.steps:
        assert step.replicas <= cfg.max_replicas
        assert step.replicas * cfg.gpus_per_replica <= (cfg.gpu_budget or 10**9)
        assert step.replicas <= ceiling
        if cfg.min_replicas > 0:
            assert step.replicas >= cfg.min_replicas
        assert step.removed_in_flight == 0, f"requests cut off at t={step.time}"
    flips = []
    last_dir = 0
    for d in sim.decisions:
        if d.action != "scale":
            continue
        direction = 1 if d.replicas_to > d.replicas_from else -1
        if last_dir and direction != last_dir:
            flips.append(d.time)
        last_dir = direction
    window = min(cfg.scale_up_window_seconds, cfg.scale_down_window_seconds)
    for a, b in itertools.pairwise(flips):
        assert b - a >= window, f"two changes of direction within {window}s: {a}, {b}"


def test_step_up_is_decided_within_two_scrapes_without_overshoot() -> None:
    step_at = 600.0
    sim = run_simulation(CFG, lambda t: 1500.0 if t < step_at else 3800.0, duration_seconds=3600)
    check_invariants(sim, CFG)
    first = next(d for d in sim.decisions if d.action == "scale")
    assert first.time - step_at <= 2 * SCRAPE
    assert first.replicas_to == 2
    # While the new group loads (20 minutes), no further group is added: 2 replicas carry 3800.
    during = [s.replicas for s in sim.steps if step_at <= s.time < step_at + 1200]
    assert max(during) == 2
    assert sim.steps[-1].replicas == 2


def test_sawtooth_does_not_flap() -> None:
    def saw(t: float) -> float:
        return 1000.0 + 3000.0 * ((t % 900.0) / 900.0)

    sim = run_simulation(CFG, saw, duration_seconds=4 * 3600, startup_seconds=300)
    check_invariants(sim, CFG)
    scales = [d for d in sim.decisions if d.action == "scale"]
    assert len(scales) <= 8


def test_spike_is_bounded_by_max_and_gpu_budget() -> None:
    sim = run_simulation(
        CFG,
        lambda t: 40_000.0 if 300 <= t < 2400 else 500.0,
        duration_seconds=3 * 3600,
        startup_seconds=120,
    )
    check_invariants(sim, CFG)
    assert max(s.replicas for s in sim.steps) == CFG.ceiling == 5
    assert sim.steps[-1].replicas == 1


def test_scale_to_zero_after_idle_window_and_back_on_load() -> None:
    cfg = AutoscalerConfig(
        min_replicas=0,
        max_replicas=3,
        target_tokens_per_second=TARGET,
        scale_up_window_seconds=60,
        scale_down_window_seconds=300,
        scale_to_zero_idle_seconds=900,
        gpus_per_replica=8,
    )

    def load(t: float) -> float:
        return 1000.0 if t < 600 or t >= 4000 else 0.0

    sim = run_simulation(cfg, load, duration_seconds=6000, startup_seconds=300)
    check_invariants(sim, cfg)
    zero = next(s for s in sim.steps if s.replicas == 0)
    assert zero.time >= 600 + 900
    back = next(s for s in sim.steps if s.time >= 4000 and s.replicas >= 1)
    assert back.time - 4000 <= 2 * SCRAPE
    assert sim.steps[-1].ready >= 1


def test_idle_window_is_respected_when_load_pauses_briefly() -> None:
    cfg = AutoscalerConfig(
        min_replicas=0,
        max_replicas=2,
        target_tokens_per_second=TARGET,
        scale_to_zero_idle_seconds=900,
        scale_down_window_seconds=300,
        gpus_per_replica=8,
    )
    sim = run_simulation(
        cfg, lambda t: 0.0 if 600 <= t < 1200 else 800.0, duration_seconds=2400, startup_seconds=60
    )
    assert min(s.replicas for s in sim.steps) == 1


@pytest.mark.parametrize("drain", [30.0, 300.0])
def test_groups_are_drained_before_removal(drain: float) -> None:
    sim = run_simulation(
        CFG,
        lambda t: 7000.0 if t < 1800 else 1000.0,
        duration_seconds=6000,
        initial_replicas=4,
        drain_seconds=drain,
    )
    check_invariants(sim, CFG)
    drains = [d for d in sim.decisions if d.action == "drain"]
    downs = [d for d in sim.decisions if d.action == "scale" and d.replicas_to < d.replicas_from]
    assert drains
    assert downs
    for down in downs:
        before = [d for d in drains if d.time < down.time]
        assert before, "scaled down without draining first"
        assert down.time - before[-1].time >= drain - 1e-9
