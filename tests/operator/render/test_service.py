"""Service (leaders only), PodDisruptionBudget and plan ConfigMap."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.operator.render.conftest import Case

from dsv4_operator.api import parse_spec
from dsv4_operator.planning import plan, plan_to_dict
from dsv4_operator.planning.from_spec import request_from_spec
from dsv4_operator.render import Owner, endpoint, plan_config_map, pod_disruption_budget, service
from dsv4_operator.render.runtime_args import runtime_args
from dsv4_operator.render.service import PLAN_JSON_MAX_BYTES, PLAN_KEY


def test_service_selects_leaders_on_the_openai_port(case: Case) -> None:
    svc = service(case.owner, case.spec)
    assert svc["spec"]["selector"]["dsv4.io/role"] == "leader"
    assert svc["spec"]["selector"]["dsv4.io/deployment"] == case.owner.name
    http = svc["spec"]["ports"][0]
    assert (http["name"], http["port"], http["targetPort"]) == (
        "http",
        case.spec.service.port,
        8000,
    )
    assert svc["spec"]["type"] == case.spec.service.type
    assert svc["metadata"]["name"] != case.owner.name  # LWS names its headless Service NAME
    url = endpoint(case.owner, case.spec)
    assert url == f"http://{case.owner.name}-api.inference.svc:{case.spec.service.port}/v1"


def test_pdb_lets_no_more_pods_go_than_groups_may(case: Case) -> None:
    # k evicted pods stop at most k groups, whatever the nodes per replica; counting nodes
    # would let two drains take one pod each from two multi-node groups.
    pdb = pod_disruption_budget(case.owner, case.spec, case.plan)
    value = case.spec.rollout.max_unavailable
    groups = int(value.rstrip("%")) * case.spec.replicas // 100 if isinstance(value, str) else value
    assert pdb["spec"]["maxUnavailable"] == max(groups, 1)
    assert pdb["spec"]["selector"]["matchLabels"]["dsv4.io/deployment"] == case.owner.name
    assert (
        pod_disruption_budget(case.owner, case.spec, case.plan, api_version="policy/v1beta1")[
            "apiVersion"
        ]
        == "policy/v1beta1"
    )


def test_config_map_holds_the_plan_json_and_args(case: Case) -> None:
    cm = plan_config_map(case.owner, case.spec, case.plan)
    assert json.loads(cm["data"]["plan.json"]) == json.loads(json.dumps(plan_to_dict(case.plan)))
    assert json.loads(cm["data"]["runtime-args.json"]) == runtime_args(case.spec, case.plan)
    assert cm["metadata"]["labels"]["app.kubernetes.io/component"] == "plan"
    # Stable bytes for an unchanged plan: the no-op resync compares and writes nothing.
    assert plan_config_map(case.owner, case.spec, case.plan) == cm


def test_only_a_cluster_ip_service_carries_the_admin_port(case: Case) -> None:
    from dsv4_operator.api.v1alpha1.spec import ServiceSpec

    for kind in ("ClusterIP", "NodePort", "LoadBalancer"):
        spec = case.spec.model_copy(update={"service": ServiceSpec(type=kind, port=443)})
        ports = {p["name"]: p for p in service(case.owner, spec)["spec"]["ports"]}
        assert ports["http"]["port"] == 443
        if kind == "ClusterIP":
            assert ports["metrics"]["port"] == ports["metrics"]["targetPort"] == 8081
        else:
            # /metrics, /ready and the token-guarded /drain stay inside the cluster.
            assert set(ports) == {"http"}


def test_port_8081_is_refused_only_where_the_admin_port_is(case: Case) -> None:
    from dsv4_operator.api.v1alpha1.spec import ServiceSpec

    with pytest.raises(ValueError, match="must not be 8081 on a ClusterIP Service"):
        ServiceSpec(type="ClusterIP", port=8081)
    for kind in ("NodePort", "LoadBalancer"):  # no admin port on these: 8081 is free
        spec = case.spec.model_copy(update={"service": ServiceSpec(type=kind, port=8081)})
        ports = service(case.owner, spec)["spec"]["ports"]
        assert [(p["name"], p["port"]) for p in ports] == [("http", 8081)]


WIDE_TYPES: tuple[str, ...] = (
    "h100-80gb",
    "h200-141gb",
    "h20-96gb",
    "a100-80gb",
    "b200-180gb",
    "mi300x-192gb",
)
"""Six GPU types: Pro at 1M context over 64 nodes of them is a valid spec whose plan lists
7,128 rejected layouts, 3.8 MB of plan JSON (the first two alone: 2,380 layouts, 1.16 MB)."""


def wide_config_map(types: int = 6) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the ConfigMap rendered for Pro at 1M over the first `types` of `WIDE_TYPES` and 64
    nodes, `plan_to_dict` of its plan)."""
    spec = parse_spec(
        {
            "model": "pro",
            "maxModelLen": 1_048_576,
            "gpu": {"types": list(WIDE_TYPES[:types]), "maxNodes": 64, "gpusPerNode": 8},
        }
    )
    planned = plan(request_from_spec(spec))
    owner = Owner(name="wide", namespace="default", uid="u-1", generation=1)
    return plan_config_map(owner, spec, planned), plan_to_dict(planned)


@pytest.mark.parametrize("types", [2, 6])
def test_a_plan_with_thousands_of_rejections_keeps_the_config_map_under_1_mib(types: int) -> None:
    """h18: the ConfigMap held the whole plan JSON, 1.16 / 3.8 MB here, and Kubernetes refuses
    a ConfigMap whose data exceed 1 MiB: ApplyFailed, nothing rolled out, for a valid spec."""
    cm, full = wide_config_map(types)
    assert sum(len(v.encode()) for v in cm["data"].values()) < 1 << 20
    text = cm["data"][PLAN_KEY]
    assert len(text.encode()) <= PLAN_JSON_MAX_BYTES
    kept = json.loads(text)
    omitted = kept.pop("rejected_omitted")
    assert omitted > 0
    assert len(kept["rejected"]) + omitted == len(full["rejected"])
    # Every GPU type keeps layouts, in the plan's order; the rest of the plan is whole.
    assert {r["gpu"] for r in kept["rejected"]} == {r["gpu"] for r in full["rejected"]}
    positions = [full["rejected"].index(r) for r in kept["rejected"]]
    assert positions == sorted(positions)
    assert {k: v for k, v in kept.items() if k != "rejected"} == {
        k: v for k, v in full.items() if k != "rejected"
    }
