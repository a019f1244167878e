"""KEDA ScaledObject and autoscaling/v2 HPA for `spec.autoscaling.mode` keda and hpa.

Both scale the DeepSeekV4Deployment itself through its scale subresource (`spec.replicas`), so the
operator stays the only writer of the LeaderWorkerSet. Queries select the replica leaders' series:
leader pods of a LeaderWorkerSet are named `<lws>-<group index>` (workers `<lws>-<group>-<worker>`),
and only leaders run the OpenAI server that exports vLLM's metrics.

KEDA (Prometheus scaler, like production-stack's operator): tokens/s per replica as AverageValue,
plus the guard rails: the fullest KV cache as a Value trigger (HPA raises replicas by
usage/threshold), waiting requests per replica as AverageValue. HPA mode expects prometheus-adapter
external metrics `dsv4_generation_tokens_per_second`, `dsv4_kv_cache_usage` and
`dsv4_requests_waiting`, labelled `namespace` and `deployment` (README gives the adapter rules).
"""

from __future__ import annotations

import math
from typing import Any

from dsv4_operator.api.v1alpha1.deployment import API_VERSION, KIND
from dsv4_operator.api.v1alpha1.scaling import Autoscaling

__all__ = ["hpa", "leader_selector", "scaled_object"]

_RATE_WINDOW = "2m"
_HPA_MAX_PERIOD_SECONDS = 1800
"""Longest `periodSeconds` of an HPA scaling policy (autoscaling/v2 validation)."""


HPA_TOLERANCE = 0.1
"""The HPA leaves replicas as they are while |metric / target - 1| <= this
(kube-controller-manager `--horizontal-pod-autoscaler-tolerance`, default 0.1;
kubernetes `pkg/controller/podautoscaler/replica_calculator.go` compares with `<=`)."""
_KV_STEP_TARGET = "0.5"
"""KEDA target of the KV guard rail's 0/1 query. With the raw usage against the threshold (as
before h29), the HPA acted only above 1.1 x the threshold, so a threshold above 90 % never
fired (usage cannot exceed 1)."""


def hpa_kv_target_milli(a: Autoscaling) -> int:
    """The HPA's `dsv4_kv_cache_usage` target, in thousandths: the threshold / (1 + tolerance).

    prometheus-adapter serves the raw usage (0..1), and the HPA acts only beyond its tolerance:
    against the threshold itself it would first scale up above 1.1 x the threshold (88 % for the
    default 80, never for a threshold above 90). Against threshold / 1.1, rounded down, the
    usage ratio passes 1 + tolerance at the threshold, with the cluster's default tolerance.
    The HPA divides the milli-values as floats, so where that quotient is exactly 1.1 (33 %:
    330 / 300) it is within the tolerance: the target is one thousandth lower there.
    """
    usage = a.kv_cache_usage_percent_threshold * 10  # thousandths, as the HPA reads it
    target = math.floor(usage / (1 + HPA_TOLERANCE))
    return target if usage / target > 1 + HPA_TOLERANCE else target - 1


def leader_selector(namespace: str, lws_name: str) -> str:
    """PromQL label matchers for the leader pods of one LeaderWorkerSet."""
    return f'namespace="{namespace}",pod=~"{lws_name}-[0-9]+"'


def _behavior(a: Autoscaling, period_seconds: int, group_start_seconds: int) -> dict[str, Any]:
    """HPA behavior: the spec's windows and steps.

    Scale-up adds at most `scaleUpMaxStep` groups per group start time (`group_start_seconds`,
    within HPA's 1800 s limit): HPA does not see that a group is still loading, so a guard
    rail that stays high while it loads (the queue) would otherwise add a group every period
    up to maxReplicas; the native autoscaler counts a starting group as the fix.
    """
    up_period = min(max(group_start_seconds, period_seconds), _HPA_MAX_PERIOD_SECONDS)
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": a.scale_up_stabilization_seconds,
            "policies": [
                {"type": "Pods", "value": a.scale_up_max_step, "periodSeconds": up_period}
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": a.scale_down_stabilization_seconds,
            "policies": [
                {"type": "Pods", "value": a.scale_down_max_step, "periodSeconds": period_seconds}
            ],
        },
    }


def scaled_object(
    *,
    name: str,
    namespace: str,
    lws_name: str,
    autoscaling: Autoscaling,
    target_tokens_per_second: int,
    max_replicas: int,
    prometheus_url: str,
    labels: dict[str, str],
    group_start_seconds: int = 0,
    polling_seconds: int = 15,
) -> dict[str, Any]:
    """A `keda.sh/v1alpha1` ScaledObject scaling the DeepSeekV4Deployment on tokens/s.

    Args:
        name: the DeepSeekV4Deployment's name (also the ScaledObject's).
        namespace: its namespace.
        lws_name: the LeaderWorkerSet whose leaders export the metrics.
        autoscaling: `spec.autoscaling`.
        target_tokens_per_second: generated tokens/s per replica.
        max_replicas: most replicas, already bounded by the GPU budget.
        prometheus_url: Prometheus server address KEDA queries.
        labels: labels for the object.
        group_start_seconds: how long a new group takes to serve (the plan's first-boot
            budget), s: at most `scaleUpMaxStep` groups are added per that time (`_behavior`).
        polling_seconds: KEDA polling interval, s.

    Returns:
        The manifest.
    """
    sel = leader_selector(namespace, lws_name)
    a = autoscaling
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "name": "generation-tokens-per-second",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": prometheus_url,
                "query": f"sum(rate(vllm:generation_tokens_total{{{sel}}}[{_RATE_WINDOW}]))",
                "threshold": str(target_tokens_per_second),
                "activationThreshold": "0",
            },
        },
        {
            "type": "prometheus",
            "name": "kv-cache-usage",
            "metricType": "Value",
            "metadata": {
                "serverAddress": prometheus_url,
                # 1 once the fullest cache reaches the threshold, else 0, against a target of
                # 0.5: a usage ratio of 2 (a scale-up, bounded by the behavior's step) or 0 (no
                # say), never inside the HPA's tolerance band (`_KV_STEP_TARGET`).
                "query": (
                    f"max(vllm:kv_cache_usage_perc{{{sel}}}) "
                    f">= bool {a.kv_cache_usage_percent_threshold / 100:g}"
                ),
                "threshold": _KV_STEP_TARGET,
            },
        },
        {
            "type": "prometheus",
            "name": "requests-waiting",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": prometheus_url,
                "query": f"sum(vllm:num_requests_waiting{{{sel}}})",
                "threshold": str(a.queue_length_threshold),
            },
        },
    ]
    if a.min_replicas >= 1:
        # Leaders always exist here, so an empty result is a lost scrape (a PodMonitor that
        # Prometheus does not select, a scrape gap), not an idle deployment. KEDA's Prometheus
        # scaler reads empty as 0 by default (`ignoreNullValues: true`), which scaled down to
        # minReplicas under load; with "false" it returns an error instead, and the HPA does not
        # scale on a metric it cannot read (KEDA docs, Prometheus scaler: "Set to `false` the
        # scaler will return error when Prometheus target is lost"). At minReplicas 0 the leader
        # series are absent at zero replicas by design, so the default stays.
        for trigger in triggers:
            trigger["metadata"]["ignoreNullValues"] = "false"
    if a.wake_up_query is not None:
        # Requests waiting outside the pods: the one series that exists at zero replicas. It
        # activates the ScaledObject from zero and, per replica, counts like the queue guard rail.
        triggers.append(
            {
                "type": "prometheus",
                "name": "wake-up",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": prometheus_url,
                    # on lines of its own: a trailing `# comment` must not swallow the `)`
                    "query": f"sum(\n{a.wake_up_query}\n)",
                    "threshold": str(a.queue_length_threshold),
                    "activationThreshold": "0",
                },
            }
        )
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": name},
        "pollingInterval": polling_seconds,
        "minReplicaCount": a.min_replicas,
        "maxReplicaCount": max_replicas,
        "advanced": {
            "horizontalPodAutoscalerConfig": {
                "behavior": _behavior(a, polling_seconds, group_start_seconds)
            },
        },
        "triggers": triggers,
    }
    if a.min_replicas == 0 and a.scale_to_zero_idle_seconds is not None:
        # KEDA goes from any replicas straight to 0 once no trigger was active for
        # cooldownPeriod, without HPA's scale-down window or step, and right after creation
        # unless initialCooldownPeriod holds it (default 0): both are at least the window.
        cooldown = max(a.scale_to_zero_idle_seconds, a.scale_down_stabilization_seconds)
        spec["cooldownPeriod"] = cooldown
        spec["initialCooldownPeriod"] = cooldown
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }


def hpa(
    *,
    name: str,
    namespace: str,
    autoscaling: Autoscaling,
    target_tokens_per_second: int,
    max_replicas: int,
    labels: dict[str, str],
    api_version: str = "autoscaling/v2",
    group_start_seconds: int = 0,
) -> dict[str, Any]:
    """An HPA on the DeepSeekV4Deployment's scale subresource with prometheus-adapter metrics.

    Args:
        name: the DeepSeekV4Deployment's name (also the HPA's).
        namespace: its namespace.
        autoscaling: `spec.autoscaling` (mode hpa needs minReplicas >= 1).
        target_tokens_per_second: generated tokens/s per replica.
        max_replicas: most replicas, already bounded by the GPU budget.
        labels: labels for the object.
        api_version: `autoscaling/v2` (or `autoscaling/v2beta2` on old clusters, from discovery).
        group_start_seconds: how long a new group takes to serve, s (`_behavior`).

    Returns:
        The manifest.
    """
    a = autoscaling
    selector = {"matchLabels": {"namespace": namespace, "deployment": name}}

    def external(metric: str, target: dict[str, str]) -> dict[str, Any]:
        return {
            "type": "External",
            "external": {"metric": {"name": metric, "selector": selector}, "target": target},
        }

    return {
        "apiVersion": api_version,
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": name},
            "minReplicas": max(a.min_replicas, 1),
            "maxReplicas": max_replicas,
            "metrics": [
                external(
                    "dsv4_generation_tokens_per_second",
                    {"type": "AverageValue", "averageValue": str(target_tokens_per_second)},
                ),
                external(
                    "dsv4_kv_cache_usage",
                    {"type": "Value", "value": f"{hpa_kv_target_milli(a)}m"},
                ),
                external(
                    "dsv4_requests_waiting",
                    {"type": "AverageValue", "averageValue": str(a.queue_length_threshold)},
                ),
            ],
            "behavior": _behavior(a, 60, group_start_seconds),
        },
    }
