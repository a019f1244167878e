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

from dsv4_operator.kube.client import ApiError, KubeClient, TransientApiError

__all__ = ["PEERING_API_VERSION", "PeeringResult", "ensure_peering", "peering_objects"]

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


@dataclass(frozen=True)
class PeeringResult:
    """What `ensure_peering` did, per object ("NAMESPACE/NAME" or "NAME" cluster-wide).

    Attributes:
        created: objects this call created.
        existing: objects that were already there (409 on create).
        forbidden: objects the operator may not create (403): kopf stays paused unless they
            exist; the message names the permission.
    """

    created: tuple[str, ...]
    existing: tuple[str, ...]
    forbidden: tuple[str, ...]


def ensure_peering(kube: KubeClient, name: str, namespaces: Sequence[str]) -> PeeringResult:
    """Create the peering objects of `peering_objects(name, namespaces)` that do not exist.

    Only `create` is sent (needs RBAC `create` on kopfpeerings or clusterkopfpeerings); an
    existing object answers 409 and is left as it is.

    Raises:
        TransientApiError: throttling, a server error or no connection; retry.
        ApiError: 404 when the kind is not served (kopf's peering CRDs are not installed, or
            not yet established), or another non-retryable failure than 403.
    """
    created: list[str] = []
    existing: list[str] = []
    forbidden: list[str] = []
    for obj in peering_objects(name, namespaces):
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}" if "namespace" in meta else meta["name"]
        try:
            done = kube.create(obj)
        except TransientApiError:
            raise
        except ApiError as error:
            if error.status == 403:
                forbidden.append(key)
                continue
            raise
        (created if done is not None else existing).append(key)
    return PeeringResult(tuple(created), tuple(existing), tuple(forbidden))
