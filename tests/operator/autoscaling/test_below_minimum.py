"""The native autoscaler raises `spec.replicas` below minReplicas at once, as the HPA does.

`spec.replicas` may now sit below `spec.autoscaling.minReplicas` (a manifest that leaves it
out gets 1). The HPA behind modes keda and hpa raises such a target in one step ("Current
number of replicas below Spec.MinReplicas", kubernetes horizontal.go); the native policy must
too, without waiting for a stabilization window or metrics, and whatever its step limit.
"""

import pytest

from dsv4_operator.autoscaling.policy import (
    AutoscalerConfig,
    AutoscalerState,
    GroupSample,
    Observation,
    decide,
)


@pytest.mark.parametrize("starting", [True, False])
@pytest.mark.parametrize(("minimum", "current"), [(2, 1), (3, 1), (4, 2)])
def test_first_decision_raises_replicas_to_the_minimum(
    minimum: int, current: int, starting: bool
) -> None:
    cfg = AutoscalerConfig(
        min_replicas=minimum,
        max_replicas=6,
        target_tokens_per_second=5000.0,
        scale_up_max_step=1,
        scale_up_window_seconds=300.0,
    )
    groups = tuple(
        GroupSample(i, ready=not starting, starting=starting, known=not starting)
        for i in range(current)
    )
    decision, _ = decide(cfg, AutoscalerState(), Observation(10.0, current, groups))
    assert decision.action == "scale"
    assert (decision.replicas_from, decision.replicas_to) == (current, minimum)
    assert "minReplicas" in decision.reason


def test_the_minimum_is_not_exceeded_on_idle_groups() -> None:
    cfg = AutoscalerConfig(min_replicas=2, max_replicas=6, target_tokens_per_second=5000.0)
    groups = (GroupSample(0, ready=True), GroupSample(1, ready=True))
    decision, _ = decide(cfg, AutoscalerState(), Observation(10.0, 2, groups))
    assert decision.action == "hold"
    assert decision.replicas_to == 2


def test_the_recorded_cause_names_the_minimum() -> None:
    cfg = AutoscalerConfig(min_replicas=3, max_replicas=6, target_tokens_per_second=5000.0)
    decision, _ = decide(cfg, AutoscalerState(), Observation(10.0, 1, ()))
    assert decision.cause is not None
    assert decision.cause.value == "MinReplicas"
