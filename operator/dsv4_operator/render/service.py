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
    "PLAN_JSON_MAX_BYTES",
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


PLAN_JSON_MAX_BYTES: Final = 512 * 1024
"""Most bytes of `plan.json`, UTF-8. Kubernetes refuses a ConfigMap whose data exceed 1 MiB
(`core.MaxSecretSize`, checked in `ValidateConfigMap`, pkg/apis/core/validation); half leaves
room for `runtime-args.json` and the metadata. A plan over many GPU types and nodes lists
thousands of rejected layouts (Pro at 1M context over six types and 64 nodes: 3.8 MB)."""


def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, indent=1)


def _round_robin(rejected: list[Any]) -> list[int]:
    """Indices of `rejected`, each GPU type's next entry in turn (types in first-seen order).

    So a prefix of the result keeps every type's first layouts.
    """
    by_type: dict[str, list[int]] = {}
    for i, entry in enumerate(rejected):
        by_type.setdefault(str(entry["gpu"]), []).append(i)
    queues = list(by_type.values())
    return [q[k] for k in range(max(map(len, queues), default=0)) for q in queues if k < len(q)]


def plan_json(plan: Plan) -> str:
    """The plan as stable JSON (sorted keys, so an unchanged plan is byte-identical).

    `plan_to_dict(plan)` (the `dsv4 plan --output json` contract) as it is while it fits in
    `PLAN_JSON_MAX_BYTES`; else the most `rejected` entries that fit, taken in turn from each
    GPU type and kept in their order, with `rejected_omitted` (added later, only then): how
    many were left out. The rest of the plan is whole. Before, such a plan's ConfigMap was
    refused and nothing rolled out (ApplyFailed).
    """
    doc = plan_to_dict(plan)
    text = _dumps(doc)
    if len(text.encode()) <= PLAN_JSON_MAX_BYTES:
        return text
    rejected = doc["rejected"]
    order = _round_robin(rejected)

    def kept(n: int) -> str:
        doc["rejected"] = [rejected[i] for i in sorted(order[:n])]
        doc["rejected_omitted"] = len(rejected) - n
        return _dumps(doc)

    low, high = 0, len(order)  # the most entries that fit lies in [low, high)
    while high - low > 1:
        mid = (low + high) // 2
        if len(kept(mid).encode()) <= PLAN_JSON_MAX_BYTES:
            low = mid
        else:
            high = mid
    return kept(low)


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
