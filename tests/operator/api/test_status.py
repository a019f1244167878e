"""The status types serialise into objects the CRD's status schema accepts."""

from datetime import UTC, datetime
from typing import Any

from dsv4_operator.api import (
    Condition,
    CostStatus,
    DeepSeekV4DeploymentStatus,
    MemoryBreakdown,
    PlanLayout,
    PlanStatus,
    ScalingDecision,
    parse_deployment,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _status() -> DeepSeekV4DeploymentStatus:
    plan = PlanStatus(
        gpu_type="h200-141gb",
        reason="first type in spec.gpu.types that fits one node",
        layout=PlanLayout(
            nodes_per_replica=1,
            gpus_per_node=8,
            gpus_per_replica=8,
            tensor=1,
            data=8,
            pipeline=1,
            expert=8,
        ),
        memory_per_gpu=MemoryBreakdown(
            capacity_bytes=150_754_820_096,
            budget_bytes=143_217_079_091,
            weights_bytes=116_000_000_000,
            kv_cache_bytes=18_000_000_000,
            activations_bytes=6_000_000_000,
            overhead_bytes=3_217_079_091,
        ),
        max_model_len=200_000,
        kv_cache_tokens=1_600_000,
        max_concurrency=8,
        shm_bytes=2 * 2**30,
        warnings=("little KV room",),
    )
    return DeepSeekV4DeploymentStatus(
        observed_generation=3,
        conditions=(
            Condition(
                type="Ready",
                status="True",
                reason="Available",
                last_transition_time=NOW,
                observed_generation=3,
            ),
            Condition(
                type="Planned",
                status="True",
                reason="Planned",
                message="fits",
                last_transition_time=NOW,
                observed_generation=3,
            ),
        ),
        plan=plan,
        replicas=1,
        ready_replicas=1,
        selector="dsv4.io/deployment=x",
        endpoint="http://x.default.svc:8000/v1",
        cost=CostStatus(
            usd_per_million_tokens="0.4200", usd_per_hour="28.00", gpu_hours_per_day=192
        ),
        recent_scaling_decisions=(
            ScalingDecision(time=NOW, from_replicas=0, to_replicas=1, reason="TokenRateHigh"),
        ),
    )


def test_status_round_trips_through_the_crd_schema(validate: Any) -> None:
    status = _status().model_dump(mode="json", by_alias=True, exclude_defaults=True)
    body = {
        "apiVersion": "dsv4.io/v1alpha1",
        "kind": "DeepSeekV4Deployment",
        "metadata": {"name": "x"},
        "spec": {"model": "pro", "gpu": {"types": ["h200-141gb"]}},
        "status": status,
    }
    assert validate(body) == []
    assert status["plan"]["layout"]["gpusPerReplica"] == 8
    assert status["conditions"][0]["lastTransitionTime"] == "2026-11-29T12:00:00Z"
    assert parse_deployment(body).status == _status()


def test_condition_reason_must_be_camel_case(validate: Any) -> None:
    body = {
        "apiVersion": "dsv4.io/v1alpha1",
        "kind": "DeepSeekV4Deployment",
        "metadata": {"name": "x"},
        "spec": {"model": "pro", "gpu": {"types": ["h200-141gb"]}},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "invalid spec!",
                    "lastTransitionTime": "2026-11-29T12:00:00Z",
                }
            ]
        },
    }
    assert any("status.conditions[0].reason" in error for error in validate(body))
