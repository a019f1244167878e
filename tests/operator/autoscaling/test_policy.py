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
