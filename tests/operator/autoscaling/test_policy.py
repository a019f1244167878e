"""Single decisions of the autoscaling policy, for cases the simulations do not reach."""

from dsv4_operator.autoscaling import run_simulation
from dsv4_operator.autoscaling.policy import (
    AutoscalerConfig,
    AutoscalerState,
    Cause,
    GroupSample,
    Observation,
    decide,
)


def test_a_group_left_drained_by_a_lost_state_is_undrained_when_load_needs_it() -> None:
    # The operator restarted mid-drain: its state is empty, but group 1 still reports that the
    # autoscaler drained it. The load needs both replicas, so the drain is cancelled instead
    # of holding with one group serving (or buying a third replica).
    cfg = AutoscalerConfig(min_replicas=1, max_replicas=4, target_tokens_per_second=100.0)
    groups = (
        GroupSample(0, ready=True, generation_tps=180.0),
        GroupSample(1, ready=True, draining=True),
    )
    decision, state = decide(cfg, AutoscalerState(), Observation(1000.0, 2, groups))
    assert decision.action == "undrain"
    assert decision.groups == (1,)
    assert state.draining == ()


def test_a_drained_group_with_waiting_requests_is_not_removed() -> None:
    # Group 1 was drained for a 2 -> 1 scale-down; nothing runs on it any more, but 3 requests
    # admitted before the drain still wait in its queue. Removing it now would drop them.
    cfg = AutoscalerConfig(
        min_replicas=1,
        max_replicas=4,
        target_tokens_per_second=5000.0,
        scale_down_window_seconds=60.0,
    )
    state = AutoscalerState()
    quiet = (
        GroupSample(0, ready=True, generation_tps=1000.0, running=5),
        GroupSample(1, ready=True, generation_tps=0.0),
    )
    for t in range(0, 75, 15):
        decision, state = decide(cfg, state, Observation(float(t), 2, quiet))
    assert (decision.action, decision.groups) == ("drain", (1,))
    queued = (quiet[0], GroupSample(1, ready=True, draining=True, running=0, waiting=3))
    decision, state = decide(cfg, state, Observation(75.0, 2, queued))
    assert decision.action == "hold"
    assert "[1]" in decision.reason
    done = (quiet[0], GroupSample(1, ready=True, draining=True))
    decision, state = decide(cfg, state, Observation(90.0, 2, done))
    assert (decision.action, decision.replicas_to) == ("scale", 1)


def test_a_drained_group_is_removed_only_once_the_service_stopped_routing_to_it() -> None:
    # The drain only fails the group's /ready; the Service sends it new requests until the
    # kubelet's readiness probe has failed 3 times 10 s apart. A removal 15 s after the drain
    # (the next scrape, nothing running at that instant) cut requests admitted after it.
    cfg = AutoscalerConfig(
        min_replicas=1,
        max_replicas=4,
        target_tokens_per_second=5000.0,
        scale_down_window_seconds=60.0,
    )
    state = AutoscalerState()
    quiet = (
        GroupSample(0, ready=True, generation_tps=1000.0, running=5),
        GroupSample(1, ready=True, generation_tps=0.0),
    )
    for t in range(0, 75, 15):
        decision, state = decide(cfg, state, Observation(float(t), 2, quiet))
    assert (decision.time, decision.action, decision.groups) == (60.0, "drain", (1,))
    drained = (quiet[0], GroupSample(1, ready=True, draining=True))
    decision, state = decide(cfg, state, Observation(75.0, 2, drained))
    assert decision.action == "hold"
    assert "readiness" in decision.reason
    decision, state = decide(cfg, state, Observation(90.0, 2, drained))
    assert (decision.action, decision.replicas_to) == ("scale", 1)


def test_each_scale_decision_carries_its_cause_and_no_other_decision_does() -> None:
    """h36: the operator recorded a scale's reason from words of `Decision.reason`; the policy
    now says it (`Decision.cause`), and the words may change without changing the record."""
    cfg = AutoscalerConfig(
        min_replicas=0,
        max_replicas=4,
        target_tokens_per_second=1000.0,
        scale_up_window_seconds=0.0,
        scale_down_window_seconds=60.0,
        scale_to_zero_idle_seconds=60.0,
        drain_settle_seconds=0.0,
    )

    def one(replicas: int, *groups: GroupSample, pending: int = 0) -> Cause | None:
        state = AutoscalerState(observed_since=-3600.0)
        decision, _ = decide(cfg, state, Observation(0.0, replicas, groups, pending))
        assert (decision.cause is None) == (decision.action != "scale")
        return decision.cause

    assert one(1, GroupSample(0, ready=True, generation_tps=2500.0)) == Cause.LOAD_HIGH
    full = GroupSample(0, ready=True, generation_tps=500.0, kv_usage=0.9)
    assert one(1, full) == Cause.GUARD_RAIL
    queued = GroupSample(0, ready=True, generation_tps=500.0, waiting=5)
    assert one(1, queued) == Cause.GUARD_RAIL
    # A group starting is the guard rail's fix: no forced scale-up, nothing to cause.
    assert one(2, full, GroupSample(1, ready=False, starting=True)) is None
    assert one(0, pending=3) == Cause.REQUESTS_WAITING
    idle = (GroupSample(0, ready=True), GroupSample(1, ready=True, draining=True))
    assert one(2, *idle) == Cause.LOAD_LOW
    # The last replica, idle since before the scale-to-zero window.
    state = AutoscalerState(observed_since=-3600.0, idle_since=-3600.0)
    last = (GroupSample(0, ready=True, draining=True),)
    decision, _ = decide(cfg, state, Observation(0.0, 1, last))
    assert (decision.action, decision.replicas_to, decision.cause) == ("scale", 0, Cause.IDLE)
    # Over a day of load steps the same holds for every decision, and a cause names the
    # direction: up causes raise replicas, down causes lower them.
    up = {Cause.LOAD_HIGH, Cause.GUARD_RAIL, Cause.REQUESTS_WAITING, Cause.MIN_REPLICAS}
    sim = run_simulation(
        cfg,
        lambda t: [0.0, 3500.0, 800.0, 0.0][int(t // 3000) % 4],
        duration_seconds=24 * 3600,
        startup_seconds=300,
    )
    scales = [d for d in sim.decisions if d.action == "scale"]
    assert {d.cause for d in scales} >= {Cause.LOAD_HIGH, Cause.LOAD_LOW, Cause.IDLE}
    for d in sim.decisions:
        assert (d.cause is None) == (d.action != "scale"), d
        if d.cause is not None:
            assert (d.cause in up) == (d.replicas_to > d.replicas_from), d
            assert (d.cause == Cause.IDLE) == (d.replicas_to == 0), d


def test_replicas_over_a_lowered_gpu_budget_are_removed_under_load() -> None:
    """h36: `spec.gpu.budget` lowered below the running replicas (no CEL rule ties it to
    spec.replicas) under a load that wants them all: the scale-down's safety check ("3500
    tokens/s over 3 replicas exceeds the target") held the replicas over the budget for good,
    while the ScalingLimited Warning said at most 2 may run. The budget (and maxReplicas) is
    a bound, as for the HPA: the groups over it go, drained first; the record says why."""
    cfg = AutoscalerConfig(
        min_replicas=1,
        max_replicas=8,
        target_tokens_per_second=1000.0,
        scale_up_window_seconds=0.0,
        scale_down_window_seconds=60.0,
        gpus_per_replica=8,
        gpu_budget=16,
        drain_settle_seconds=0.0,
    )
    state = AutoscalerState()
    replicas, scales = 4, []
    for t in range(0, 900, 15):
        # 3,500 tokens/s over the groups that serve (a drained one's share moves to the rest).
        serving = [i for i in range(replicas) if i not in state.draining]
        groups = tuple(
            GroupSample(
                i,
                ready=True,
                draining=i not in serving,
                generation_tps=3500.0 / len(serving) if i in serving else 0.0,
            )
            for i in range(replicas)
        )
        decision, state = decide(cfg, state, Observation(float(t), replicas, groups))
        if decision.action == "scale":
            scales.append(decision)
            replicas = decision.replicas_to
    assert replicas == 2
    # To the bound in one step, as the HPA goes to its maximum (h40 6).
    assert [(d.replicas_from, d.replicas_to) for d in scales] == [(4, 2)]
    assert {d.cause for d in scales} == {Cause.REPLICA_LIMIT}
    assert scales[0].reason == (
        "at most 2 replicas may run (spec.gpu.budget of 16 GPUs allows 2 replicas of 8 GPUs "
        "(spec.autoscaling.maxReplicas is 8)): 3500 tokens/s wants 4; drained groups [2, 3]"
    )
    # Drained at the first scrape, removed once the drain has settled: no scale-down window
    # (60 s here, 1,800 s by default) of observations first.
    assert scales[0].time < cfg.scale_down_window_seconds


def test_replicas_over_max_go_right_after_an_operator_restart_with_unknown_metrics() -> None:
    """h40 6: the removal of groups over the bound waited for a whole scale-down window of
    observations (30 minutes by default after an operator restart) and for every group's
    metrics, holding GPUs over the user's budget or maxReplicas; the HPA goes to its maximum
    at once. They are still drained first, and the drain still settles."""
    cfg = AutoscalerConfig(min_replicas=1, max_replicas=2, target_tokens_per_second=1000.0)
    state = AutoscalerState()
    replicas, t = 4, 0.0
    for _ in range(20):
        groups = tuple(
            GroupSample(i, ready=True, draining=i in state.draining, known=i != 0)
            for i in range(replicas)
        )
        decision, state = decide(cfg, state, Observation(t, replicas, groups))
        if decision.action == "scale":
            replicas = decision.replicas_to
            break
        t += 15.0
    assert replicas == 2, decision
    assert decision.cause == Cause.REPLICA_LIMIT
    # drain at 0 s, then the drain settle (30 s by default) before the removal
    assert cfg.drain_settle_seconds <= t <= cfg.drain_settle_seconds + 15.0


def test_a_scale_up_to_min_replicas_is_not_recorded_as_a_high_token_rate() -> None:
    """h36: with minReplicas above the running replicas (a manifest without `replicas`, which
    defaults to 1) the scale-up at 200 tokens/s was `TokenRateHigh`, "token load: ..."."""
    cfg = AutoscalerConfig(
        min_replicas=3, max_replicas=5, target_tokens_per_second=1000.0, scale_up_window_seconds=0
    )
    groups = (GroupSample(0, ready=True, generation_tps=200.0),)
    decision, _ = decide(cfg, AutoscalerState(), Observation(0.0, 1, groups))
    # Straight to the minimum, past the step limit of 1, as the HPA does (test_below_minimum).
    assert (decision.action, decision.replicas_to) == ("scale", 3)
    assert decision.cause == Cause.MIN_REPLICAS
    assert decision.reason == "spec.autoscaling.minReplicas is 3: 200 tokens/s, 3 replicas wanted"
    # A load that wants the replicas is the token rate, whatever minReplicas says.
    busy = (GroupSample(0, ready=True, generation_tps=2500.0),)
    decision, _ = decide(cfg, AutoscalerState(), Observation(0.0, 1, busy))
    assert (decision.cause, decision.reason) == (
        Cause.LOAD_HIGH,
        "token load: 2500 tokens/s, 3 replicas wanted",
    )
