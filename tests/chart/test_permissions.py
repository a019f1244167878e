"""The chart's RBAC grants exactly what the operator's code needs (see operator_permissions.py).

Rendered with the real helm binary, in both modes: cluster-wide (one ClusterRole) and namespaced
(a ClusterRole for the cluster-scoped part, a Role per watched namespace). A permission the
operator needs and the chart lacks fails here; so does one the chart grants and nothing needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.chart.chart_support import Json, by_kind, one, template
from tests.chart.operator_permissions import (
    CLIENT_METHOD_VERBS,
    KIND_GROUPS,
    Permission,
    child_kinds,
    client_methods,
    operator_permissions,
)
from tests.support.cluster import REPO_ROOT

from dsv4_operator.api.v1alpha1.deployment import parse_deployment
from dsv4_operator.kube.client import PLURALS
from dsv4_operator.planning import plan
from dsv4_operator.planning.from_spec import request_from_spec
from dsv4_operator.render.labels import Owner
from dsv4_operator.render.manifests import render_children

Grant = tuple[str, str, str]


def grants(rules: Iterable[Mapping[str, Any]]) -> set[Grant]:
    """(group, resource, verb) triples a list of PolicyRules grants (no wildcards allowed)."""
    out: set[Grant] = set()
    for rule in rules:
        for part in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(part, []), f"wildcard in {part}: {rule}"
        assert not rule.get("resourceNames"), rule
        out |= {
            (group, resource, verb)
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
    return out


def missing_and_extra(
    needs: set[Permission], objects: Sequence[Json], watched: Sequence[str]
) -> tuple[list[Permission], list[str]]:
    """Needs the rendered RBAC does not grant, and grants that no need explains.

    Cluster-scoped needs must come from the ClusterRole; namespaced needs from the ClusterRole
    (cluster-wide mode) or from the Role of every watched namespace (namespaced mode).
    """
    cluster = grants(one(objects, "ClusterRole")["rules"])
    roles = {r["metadata"]["namespace"]: grants(r["rules"]) for r in by_kind(objects, "Role")}
    missing: list[Permission] = []
    for need in sorted(needs):
        triple = (need.group, need.resource, need.verb)
        if need.scope == "cluster" or not watched:
            ok = triple in cluster
        else:
            ok = all(triple in roles.get(ns, set()) for ns in watched)
        if not ok:
            missing.append(need)
    wanted = {(n.group, n.resource, n.verb) for n in needs}
    extra = sorted(
        f"{where}: {g or 'core'}/{r} {v}"
        for where, granted in [("ClusterRole", cluster), *roles.items()]
        for g, r, v in granted
        if (g, r, v) not in wanted
    )
    return missing, extra


MODES = [([], "cluster-wide"), (["team-a", "team-b"], "namespaced")]


@pytest.mark.parametrize(("watched", "mode"), MODES, ids=[m for _, m in MODES])
def test_rendered_rbac_grants_exactly_what_the_operator_needs(
    watched: list[str], mode: str
) -> None:
    sets = [f"watchNamespaces[{i}]={ns}" for i, ns in enumerate(watched)]
    objects = template(sets=sets)
    needs = operator_permissions(clusterwide=not watched)
    missing, extra = missing_and_extra(needs, objects, watched)
    assert missing == []
    assert extra == []
    (binding,) = by_kind(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(objects, "ClusterRole")["metadata"]["name"]
    account = one(objects, "ServiceAccount")["metadata"]
    subjects = [binding["subjects"], *(b["subjects"] for b in by_kind(objects, "RoleBinding"))]
    for subject_list in subjects:
        assert subject_list == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
        ]


def test_a_permission_the_chart_lacks_is_reported() -> None:
    objects = template()
    for role in by_kind(objects, "ClusterRole"):
        role["rules"] = [r for r in role["rules"] if "poddisruptionbudgets" not in r["resources"]]
    missing, _ = missing_and_extra(operator_permissions(clusterwide=True), objects, [])
    assert {(p.group, p.resource) for p in missing} == {("policy", "poddisruptionbudgets")}
    # list and watch: kopf's watch of deleted children (handlers.deployment.WATCHED_CHILDREN)
    assert {p.verb for p in missing} == {"get", "list", "watch", "create", "patch", "delete"}


def test_every_client_method_is_mapped_to_verbs() -> None:
    # A new KubeClient method (delete, list, ...) must be mapped, and granted by the chart.
    assert client_methods() == set(CLIENT_METHOD_VERBS)


def test_every_kind_the_client_knows_has_a_group() -> None:
    assert set(PLURALS) <= set(KIND_GROUPS)


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "examples").glob("*.yaml")), ids=str)
def test_child_kinds_are_what_the_reconciler_renders(path: Path) -> None:
    body = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec = parse_deployment(body).spec
    planned = plan(request_from_spec(spec))
    if not planned.fits:
        pytest.skip(f"{path.name} does not fit, so nothing is rendered for it")
    owner = Owner(name=body["metadata"]["name"], namespace="ns", uid="u-1", generation=1)
    children = render_children(owner, spec, planned, image="img:1")
    kinds = {c["kind"] for c in children}
    # Every example renders the four workload children; the autoscaler child (ScaledObject or
    # HPA) only for `spec.autoscaling.mode` keda or hpa.
    assert {"ConfigMap", "Service", "PodDisruptionBudget", "LeaderWorkerSet"} <= kinds
    assert kinds <= child_kinds()
    for child in children:
        group = child["apiVersion"].rpartition("/")[0]
        assert KIND_GROUPS[child["kind"]] == group, child["kind"]
