"""The autoscaler child for `spec.autoscaling.mode` keda or hpa (none for native or disabled).

The manifests come from `dsv4_operator.autoscaling.manifests`; this module adds the child's name,
labels and ownerReference, the GPU-budget bound on replicas, and the tokens/s target (the spec's,
or the plan's throughput estimate per replica).
"""

from __future__ import annotations

from typing import Any, Final

from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.autoscaling.manifests import hpa, scaled_object
from dsv4_operator.planning import Plan
from dsv4_operator.render.labels import Owner, child_names, standard_labels

__all__ = ["DEFAULT_PROMETHEUS_URL", "HPA_API_VERSION", "autoscaler_children", "max_replicas"]

DEFAULT_PROMETHEUS_URL: Final = "http://prometheus-operated.monitoring.svc:9090"
"""Prometheus address KEDA queries (the prometheus-operator's default Service)."""
HPA_API_VERSION: Final = "autoscaling/v2"


def max_replicas(spec: DeepSeekV4DeploymentSpec, plan: Plan) -> int:
    """`autoscaling.maxReplicas`, bounded by the GPU budget (`budget // GPUs per replica`)."""
    most = spec.autoscaling.max_replicas
    if spec.gpu.budget is not None:
        most = min(most, max(spec.gpu.budget // plan.chosen.layout.gpus, 1))
    return most


def autoscaler_children(
    owner: Owner,
    spec: DeepSeekV4DeploymentSpec,
    plan: Plan,
    *,
    prometheus_url: str = DEFAULT_PROMETHEUS_URL,
    hpa_api_version: str = HPA_API_VERSION,
) -> list[dict[str, Any]]:
    """A KEDA ScaledObject or an HPA on the DeepSeekV4Deployment, or nothing.

    Args:
        owner: the owning resource.
        spec: the parsed spec.
        plan: the fitting plan (GPUs per replica, throughput estimate).
        prometheus_url: Prometheus address for KEDA's triggers.
        hpa_api_version: `autoscaling/v2`, or `autoscaling/v2beta2` on servers older than 1.23.

    Returns:
        Zero or one manifest, with ownerReference and standard labels.
    """
    a = spec.autoscaling
    if a.active_mode in (None, "native"):
        return []
    target = a.target_tokens_per_second_per_replica or max(plan.chosen.tokens_per_second, 1)
    labels = standard_labels(owner, spec.model, "autoscaler")
    lws = child_names(owner).leaderworkerset
    if a.mode == "keda":
        obj = scaled_object(
            name=owner.name,
            namespace=owner.namespace,
            lws_name=lws,
            autoscaling=a,
            target_tokens_per_second=target,
            max_replicas=max_replicas(spec, plan),
            prometheus_url=prometheus_url,
            labels=labels,
            group_start_seconds=plan.startup_budget_seconds,
        )
    else:
        obj = hpa(
            name=owner.name,
            namespace=owner.namespace,
            autoscaling=a,
            target_tokens_per_second=target,
            max_replicas=max_replicas(spec, plan),
            labels=labels,
            api_version=hpa_api_version,
            group_start_seconds=plan.startup_budget_seconds,
        )
    obj["metadata"]["ownerReferences"] = [owner.reference()]
    return [obj]
