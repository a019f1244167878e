"""Every child object of a DeepSeekV4Deployment, in apply order."""

from __future__ import annotations

from typing import Any

from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.planning import Plan
from dsv4_operator.render.autoscaler import (
    DEFAULT_PROMETHEUS_URL,
    HPA_API_VERSION,
    autoscaler_children,
)
from dsv4_operator.render.labels import Owner
from dsv4_operator.render.leaderworkerset import leaderworkerset
from dsv4_operator.render.service import (
    PDB_API_VERSION,
    plan_config_map,
    pod_disruption_budget,
    service,
)

__all__ = ["render_children"]


def render_children(
    owner: Owner,
    spec: DeepSeekV4DeploymentSpec,
    plan: Plan,
    *,
    image: str,
    pdb_api_version: str = PDB_API_VERSION,
    prometheus_url: str = DEFAULT_PROMETHEUS_URL,
    hpa_api_version: str = HPA_API_VERSION,
    running_gpus_per_replica: int | None = None,
) -> list[dict[str, Any]]:
    """The ConfigMap, Service, PodDisruptionBudget, LeaderWorkerSet, then the autoscaler child.

    The plan ConfigMap comes first and the LeaderWorkerSet last, so pods never start before the
    plan they run is recorded.

    Args:
        owner: the owning resource; every child gets its ownerReference.
        spec: the parsed spec.
        plan: a plan that fits (`plan.fits`).
        image: worker image when `spec.engine.image` is unset.
        pdb_api_version: `policy/v1`, or `policy/v1beta1` on servers older than 1.21.
        prometheus_url: Prometheus address for a KEDA ScaledObject (mode keda).
        hpa_api_version: HPA version for mode hpa (`autoscaling/v2`, or `v2beta2` before 1.23).
        running_gpus_per_replica: GPUs per group of the last rollout, which bounds the surge
            within `spec.gpu.budget` while a re-plan rolls out.

    Returns:
        Plain dict manifests, each with apiVersion, kind and metadata (name, namespace).
    """
    return [
        plan_config_map(owner, spec, plan),
        service(owner, spec),
        pod_disruption_budget(owner, spec, plan, api_version=pdb_api_version),
        leaderworkerset(
            owner, spec, plan, image=image, running_gpus_per_replica=running_gpus_per_replica
        ),
        *autoscaler_children(
            owner, spec, plan, prometheus_url=prometheus_url, hpa_api_version=hpa_api_version
        ),
    ]
