"""kopf's peering objects: the operator creates the ones it needs before kopf starts watching.

With a peering name set, kopf (1.45, `_core/reactor/orchestration.py`) starts every watch
paused and resumes only on an event from the peering object that shows no live peer of higher
or equal priority. kopf never creates that object, so when it is missing the operator stays
paused for good, logging "not found" only at debug level. Creating it at startup (before kopf's
observers run: startup handlers come first, kopf `running.py`) removes that silent stall and
keeps the peering objects out of the Helm chart, whose hooks could not map the kopf kinds on a
cluster where the peering CRDs were created a moment earlier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from dsv4_operator.kube.client import ApiError, KubeClient

__all__ = [
    "GLOB_CHARS",
    "NAMESPACE_TERMINATING",
    "PEERING_API_VERSION",
    "PeeringResult",
    "ensure_peering",
    "peering_objects",
]

PEERING_API_VERSION: Final = "kopf.dev/v1"
"""API version of kopf's KopfPeering / ClusterKopfPeering (kopf `_cogs/structs/references.py`)."""


def peering_objects(name: str, namespaces: Sequence[str]) -> list[dict[str, Any]]:
    """The peering objects kopf watches for an operator with peering name `name`.

    One ClusterKopfPeering when `namespaces` is empty (the operator watches every namespace),
    else one KopfPeering per watched namespace, as kopf's `peering.guess_selectors` picks.
    kopf keeps its records in `status`; the objects start empty.
    """
    labels = {"app.kubernetes.io/managed-by": "dsv4-operator"}
    if not namespaces:
        meta: dict[str, Any] = {"name": name, "labels": labels}
        return [{"apiVersion": PEERING_API_VERSION, "kind": "ClusterKopfPeering", "metadata": meta}]
    return [
        {
            "apiVersion": PEERING_API_VERSION,
            "kind": "KopfPeering",
            "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
        }
        for ns in namespaces
    ]


NAMESPACE_TERMINATING: Final = "because it is being terminated"
"""Part of the API server's 403 message for a create in a namespace being deleted (Kubernetes
`plugin/pkg/admission/namespace/lifecycle`: "unable to create new content in namespace %s
because it is being terminated"), which is no RBAC refusal."""

GLOB_CHARS: Final = frozenset("*?[!,")
"""Characters that make a watched namespace a kopf pattern (kopf 1.45
`_cogs/structs/references.py`, `select_specific_namespaces`: globs, `!` exclusions and
comma-separated lists), not a namespace the operator can create an object in."""


@dataclass(frozen=True)
class PeeringResult:
    """What `ensure_peering` did, per object ("NAMESPACE/NAME" or "NAME" cluster-wide).

    Attributes:
        created: objects this call created.
        existing: objects that were already there (409 on create, or found after a 403).
        forbidden: missing objects the operator may not create (403): kopf keeps the operator
            paused in that namespace (cluster-wide: everywhere) until they exist.
        no_namespace: objects in a watched namespace that does not exist (404 on the
            namespace) or is being deleted (403 `NAMESPACE_TERMINATING`: it may be created
            again); kopf keeps that namespace paused until the object exists.
        patterns: watched namespaces that are kopf patterns (globs, exclusions), skipped.
    """

    created: tuple[str, ...] = ()
    existing: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()
    no_namespace: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()

    @property
    def missing_namespaces(self) -> tuple[str, ...]:
        """The watched namespaces of `no_namespace` (the part of each key before the '/')."""
        return tuple(key.split("/", 1)[0] for key in self.no_namespace)


def ensure_peering(kube: KubeClient, name: str, namespaces: Sequence[str]) -> PeeringResult:
    """Create the peering objects of `peering_objects(name, namespaces)` that do not exist.

    Only `create` is sent (RBAC `create` on kopfpeerings or clusterkopfpeerings); an existing
    object answers 409 and is left as it is. The API server checks `create` before existence,
    so after a 403 a LIST by name (RBAC `list`, which kopf needs anyway) tells a missing object
    from an existing one.

    Raises:
        TransientApiError: throttling, a server error or no connection; retry.
        ApiError: 404 when the kind is not served (kopf's peering CRDs are not installed, or
            not yet established), or another failure than those `PeeringResult` records.
    """
    patterns = [ns for ns in namespaces if GLOB_CHARS & set(ns)]
    plain = [ns for ns in namespaces if ns not in patterns]
    found: dict[str, list[str]] = {
        "created": [],
        "existing": [],
        "forbidden": [],
        "no_namespace": [],
        "patterns": patterns,
    }
    if namespaces and not plain:
        return PeeringResult(patterns=tuple(found["patterns"]))
    for obj in peering_objects(name, plain):
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        key = f"{ns}/{meta['name']}" if ns else meta["name"]
        found[_create(kube, obj, ns)].append(key)
    return PeeringResult(**{k: tuple(v) for k, v in found.items()})


def _create(kube: KubeClient, obj: dict[str, Any], namespace: str) -> str:
    """Create one object; which `PeeringResult` field it belongs to.

    A `TransientApiError` (never a 403 or 404) propagates through the status checks.
    """
    try:
        return "created" if kube.create(obj) is not None else "existing"
    except ApiError as error:
        if error.status == 404 and error.kind == "namespaces":
            return "no_namespace"
        if error.status == 403 and NAMESPACE_TERMINATING in error.reason:
            return "no_namespace"  # it goes away (and may come back): tried again, like a 404
        if error.status != 403:
            raise
    try:
        there = kube.exists(PEERING_API_VERSION, obj["kind"], namespace, obj["metadata"]["name"])
    except ApiError as error:
        if error.status != 403:
            raise
        there = False  # kopf cannot list it either: it will say so itself
    return "existing" if there else "forbidden"
