"""Single decisions of the autoscaling policy, for cases the simulations do not reach."""

from dsv4_operator.autoscaling.policy import (
    AutoscalerConfig,
    AutoscalerState,
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
