"""Every API permission the operator needs, derived from its code, for the chart's RBAC tests.

Two sources, both read from code rather than restated by hand where possible:

1. Our client, `dsv4_operator.kube.KubeClient`, the only code that sends requests (an
   import-linter contract). `CLIENT_METHOD_VERBS` maps each of its public methods to the RBAC
   verbs its HTTP request needs; a test fails when the client gains a method that is not mapped
   here. The kinds come from the client's `PLURALS` and from what `render_children` renders:
   each child is read (`get`) and server-side applied (`patch`, plus `create` when it does not
   exist yet: the API server authorizes an apply that creates as `create`).
2. kopf itself (kopf docs, "Deployment" RBAC example; kopf 1.45 `_core/reactor/observation.py`,
   `_core/engines/peering.py`): it lists/watches the CRDs and namespaces to find resources,
   lists/watches and patches the resource it serves (its progress annotations), lists/watches
   the children whose deletion it reports (`handlers.deployment.WATCHED_CHILDREN`), posts
   Events, and watches and patches its peering object (the docs' example also grants `get` on
   it; kopf's code never reads it singly, so the chart does not). kopf never creates that
   object: our startup handler does (`dsv4_operator.kube.peering`, `create` only).

The e2e test (tests/e2e/test_chart.py) checks each permission with `kubectl auth can-i --as` the
chart's ServiceAccount, and records every request the operator sends while it runs as that
account: a request outside this list, or any 403, fails it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Final, Literal

from dsv4_operator.api import GROUP, PLURAL
from dsv4_operator.handlers.deployment import WATCHED_CHILDREN
from dsv4_operator.kube import KubeClient
from dsv4_operator.kube.client import PLURALS

Scope = Literal["cluster", "namespace"]

KIND_GROUPS: Final = {
    "ConfigMap": "",
    "Secret": "",
    "Service": "",
    "Event": "",
    "PodDisruptionBudget": "policy",
    "LeaderWorkerSet": "leaderworkerset.x-k8s.io",
    "DeepSeekV4Deployment": GROUP,
    "ScaledObject": "keda.sh",
    "HorizontalPodAutoscaler": "autoscaling",
    "KopfPeering": "kopf.dev",
    "ClusterKopfPeering": "kopf.dev",
    "PersistentVolumeClaim": "",
    "CustomResourceDefinition": "apiextensions.k8s.io",
    "Pod": "",
}
"""API group of each kind in `PLURALS` (a new kind there fails a test until it is added)."""

CLIENT_METHOD_VERBS: Final[dict[str, tuple[str, ...]]] = {
    "get": ("get",),
    "create": ("create",),
    "exists": ("list",),
    "apply": ("create", "patch"),
    "delete": ("delete",),
    "patch_status": ("patch",),
    "patch_replicas": ("patch",),
    "served_kinds": (),
    "custom_resource_definition": ("list",),
    "close": (),
}
"""RBAC verbs of each public `KubeClient` method. `served_kinds` reads discovery documents
(`/apis/GROUP/VERSION`), which every authenticated user may read (role `system:discovery`)."""

OWN_KIND: Final = "DeepSeekV4Deployment"
CREATE_ONLY_KINDS: Final = frozenset({"Secret"})
"""Children the client creates once and reads, never applies over (the admin Secret)."""
DELETED_KINDS: Final = frozenset(
    {"Service", "ConfigMap", "PodDisruptionBudget", "ScaledObject", "HorizontalPodAutoscaler"}
)
"""Children the operator may delete: the recreatable ones (`kube.apply.RECREATABLE_KINDS`) and
a scaler its autoscaling mode no longer renders (`Reconciler._remove_stale_scalers`)."""
PEERING_KINDS: Final = frozenset({"KopfPeering", "ClusterKopfPeering"})
"""Kinds the client only creates (`dsv4_operator.kube.peering`), at startup."""
READ_ONLY_KINDS: Final = frozenset({"PersistentVolumeClaim", "Pod"})
"""Kinds the operator only reads, by name: the claims a spec names (`handlers.references`: do
they exist) and a group's leader pod (`handlers.autoscaler`: is it Ready while its runtime does
not answer)."""
CRD_KIND: Final = "CustomResourceDefinition"
"""Read (LIST by name) and watched by the startup check and the CRD watch
(`handlers.lifecycle`, `kube.crd_watch`), cluster-scoped: the verbs kopf's scan needs too."""


@dataclass(frozen=True, order=True)
class Permission:
    """One RBAC permission: a verb on a resource (`plural` or `plural/subresource`)."""

    group: str
    resource: str
    verb: str
    scope: Scope
    why: str = field(default="", compare=False)

    @property
    def kubectl_resource(self) -> str:
        """The resource as `kubectl auth can-i` takes it: `plural[.group]` (no subresource)."""
        plural = self.resource.split("/")[0]
        return f"{plural}.{self.group}" if self.group else plural

    @property
    def subresource(self) -> str:
        """The subresource, or "" for the resource itself."""
        return self.resource.partition("/")[2]


def client_methods() -> set[str]:
    """Public methods of `KubeClient` (what the operator can ask the API server)."""
    return {
        name
        for name, member in inspect.getmembers(KubeClient, inspect.isfunction)
        if not name.startswith("_")
    }


def child_kinds() -> set[str]:
    """Kinds the reconciler reads and applies: every kind the client knows but ours, Event and
    kopf's peering objects."""
    return (
        set(PLURALS)
        - {OWN_KIND, "Event", CRD_KIND}
        - PEERING_KINDS
        - CREATE_ONLY_KINDS
        - READ_ONLY_KINDS
    )


def client_permissions() -> set[Permission]:
    """What `KubeClient`'s calls need, namespaced, per the reconciler's use of them."""
    needs: set[Permission] = set()
    for kind in sorted(child_kinds()):
        group, plural = KIND_GROUPS[kind], PLURALS[kind]
        for verb in (*CLIENT_METHOD_VERBS["get"], *CLIENT_METHOD_VERBS["apply"]):
            needs.add(Permission(group, plural, verb, "namespace", f"read and apply {kind}"))
    for kind in sorted(DELETED_KINDS):
        group, plural = KIND_GROUPS[kind], PLURALS[kind]
        for verb in CLIENT_METHOD_VERBS["delete"]:
            needs.add(Permission(group, plural, verb, "namespace", f"replace or remove {kind}"))
    needs.add(Permission(GROUP, PLURAL, "get", "namespace", "reconciler reads the resource"))
    for kind in sorted(CREATE_ONLY_KINDS):
        group, plural = KIND_GROUPS[kind], PLURALS[kind]
        for verb in (*CLIENT_METHOD_VERBS["get"], *CLIENT_METHOD_VERBS["create"]):
            needs.add(Permission(group, plural, verb, "namespace", f"create once and read {kind}"))
    for kind in sorted(READ_ONLY_KINDS):
        group, plural = KIND_GROUPS[kind], PLURALS[kind]
        for verb in CLIENT_METHOD_VERBS["get"]:
            needs.add(Permission(group, plural, verb, "namespace", f"read {kind}"))
    for verb in (*CLIENT_METHOD_VERBS["custom_resource_definition"], "watch"):
        group, plural = KIND_GROUPS[CRD_KIND], PLURALS[CRD_KIND]
        needs.add(Permission(group, plural, verb, "cluster", "the served CRD is not older"))
    for verb in CLIENT_METHOD_VERBS["patch_status"]:
        needs.add(Permission(GROUP, f"{PLURAL}/status", verb, "namespace", "status patch"))
    needs.add(
        Permission(
            GROUP,
            f"{PLURAL}/finalizers",
            "update",
            "namespace",
            "children's blockOwnerDeletion (admission plugin OwnerReferencesPermissionEnforcement)",
        )
    )
    for verb in CLIENT_METHOD_VERBS["patch_replicas"]:
        needs.add(Permission(GROUP, PLURAL, verb, "namespace", "autoscaler sets spec.replicas"))
    return needs


def kopf_permissions(*, clusterwide: bool) -> set[Permission]:
    """What kopf itself needs (kopf docs' RBAC example), for a cluster-wide or namespaced run."""
    needs = {
        Permission("apiextensions.k8s.io", "customresourcedefinitions", v, "cluster", "kopf scan")
        for v in ("list", "watch")
    }
    needs |= {Permission("", "namespaces", v, "cluster", "kopf scan") for v in ("list", "watch")}
    needs |= {
        Permission(GROUP, PLURAL, v, "namespace", "kopf watch and annotations")
        for v in ("list", "watch", "patch")
    }
    needs.add(Permission("", "events", "create", "namespace", "kopf.event"))
    for group, plural in WATCHED_CHILDREN:  # kopf watches the children's deletions
        api_group = "" if group == "v1" else group
        needs |= {
            Permission(api_group, plural, v, "namespace", "kopf watch of deleted children")
            for v in ("list", "watch")
        }
    peering = (
        Permission("kopf.dev", "clusterkopfpeerings", "", "cluster")
        if clusterwide
        else Permission("kopf.dev", "kopfpeerings", "", "namespace")
    )
    needs |= {
        Permission(peering.group, peering.resource, v, peering.scope, "kopf peering")
        for v in ("list", "watch", "patch")
    }
    for verb in CLIENT_METHOD_VERBS["create"]:  # our startup handler, before kopf watches
        needs.add(
            Permission(peering.group, peering.resource, verb, peering.scope, "peering object")
        )
    return needs


def operator_permissions(*, clusterwide: bool) -> set[Permission]:
    """Everything the operator needs: our client's calls plus kopf's."""
    return client_permissions() | kopf_permissions(clusterwide=clusterwide)
