"""The Service (OpenAI API on the leaders), the PodDisruptionBudget and the plan ConfigMap."""

from __future__ import annotations

import json
import math
from typing import Any, Final

from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.planning import Plan, plan_to_dict
from dsv4_operator.render.labels import (
    LABEL_ROLE,
    Owner,
    child_names,
    pod_selector,
    standard_labels,
)
from dsv4_operator.render.runtime_args import ADMIN_PORT, API_PORT, runtime_args

__all__ = [
    "PDB_API_VERSION",
    "PLAN_KEY",
    "RUNTIME_ARGS_KEY",
    "endpoint",
    "plan_config_map",
    "plan_json",
    "pod_disruption_budget",
    "service",
]

PDB_API_VERSION: Final = "policy/v1"
"""PodDisruptionBudget version of current clusters (1.21+); the kube layer picks `policy/v1beta1`
from discovery on older servers such as the 1.20 test server (same fields for what we render)."""
PLAN_KEY: Final = "plan.json"
"""ConfigMap key holding `plan_to_dict(plan)` (the `dsv4 plan --output json` contract)."""
RUNTIME_ARGS_KEY: Final = "runtime-args.json"
"""ConfigMap key holding the `dsv4-runtime` argument list as a JSON array."""


def plan_json(plan: Plan) -> str:
    """The plan as stable JSON (sorted keys, so an unchanged plan is byte-identical)."""
    return json.dumps(plan_to_dict(plan), sort_keys=True, indent=1)


def plan_config_map(owner: Owner, spec: DeepSeekV4DeploymentSpec, plan: Plan) -> dict[str, Any]:
    """The ConfigMap with the plan JSON and the rendered runtime arguments."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": child_names(owner).config_map,
            "namespace": owner.namespace,
            "labels": standard_labels(owner, spec.model, "plan"),
            "ownerReferences": [owner.reference()],
        },
        "data": {
            PLAN_KEY: plan_json(plan),
            RUNTIME_ARGS_KEY: json.dumps(runtime_args(spec, plan)),
        },
    }


def service(owner: Owner, spec: DeepSeekV4DeploymentSpec) -> dict[str, Any]:
    """The Service of the OpenAI-compatible API; it selects only leader pods (LWS index 0).

    Port `http` (spec.service.port) targets the engine's API port. A ClusterIP Service also
    has port `metrics` on the runtime's admin port (`/metrics`) for in-cluster scraping; a
    NodePort or LoadBalancer Service does not, so the admin endpoints (`/metrics`, `/ready`,
    the token-guarded `/drain`) are never exposed outside the cluster.
    """
    ports: list[dict[str, Any]] = [
        {"name": "http", "port": spec.service.port, "targetPort": API_PORT, "protocol": "TCP"}
    ]
    if spec.service.type == "ClusterIP":
        ports.append(
            {"name": "metrics", "port": ADMIN_PORT, "targetPort": ADMIN_PORT, "protocol": "TCP"}
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": child_names(owner).service,
            "namespace": owner.namespace,
            "labels": standard_labels(owner, spec.model, "api"),
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "type": spec.service.type,
            "selector": {**pod_selector(owner), LABEL_ROLE: "leader"},
            "ports": ports,
        },
    }


def endpoint(owner: Owner, spec: DeepSeekV4DeploymentSpec) -> str:
    """In-cluster base URL of the OpenAI API, e.g. `http://NAME-api.NS.svc:8000/v1`."""
    name = child_names(owner).service
    return f"http://{name}.{owner.namespace}.svc:{spec.service.port}/v1"


def _pdb_max_unavailable(spec: DeepSeekV4DeploymentSpec, plan: Plan) -> int | str:
    """Pods that may be evicted at once: `spec.rollout.maxUnavailable` groups' worth, one pod each.

    Losing any pod stops its whole group, and a PodDisruptionBudget counts pods, not groups:
    a budget of groups x nodes per replica would let that many pods of as many different groups
    go at once (two concurrent node drains, one pod from each of two 2-pod groups, would stop
    both). One pod per group that may be unavailable bounds the groups stopped. Once a group
    is broken its pods are unhealthy until LeaderWorkerSet has recreated it, so drains of its
    other nodes wait for that. At least one pod may be evicted, or drains would block forever.
    """
    del plan  # the budget no longer scales with nodes per replica (docstring)
    value = spec.rollout.max_unavailable
    if isinstance(value, str):
        percent = int(value.rstrip("%"))
        groups = math.floor(percent * spec.replicas / 100)
    else:
        groups = value
    return max(groups, 1)


def pod_disruption_budget(
    owner: Owner,
    spec: DeepSeekV4DeploymentSpec,
    plan: Plan,
    *,
    api_version: str = PDB_API_VERSION,
) -> dict[str, Any]:
    """The PodDisruptionBudget of every worker pod of the deployment."""
    return {
        "apiVersion": api_version,
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": child_names(owner).pod_disruption_budget,
            "namespace": owner.namespace,
            "labels": standard_labels(owner, spec.model, "inference"),
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "maxUnavailable": _pdb_max_unavailable(spec, plan),
            "selector": {"matchLabels": pod_selector(owner)},
        },
    }
