"""Apply rendered children with server-side apply, skipping those already as rendered.

A no-op resync must write nothing, so each child is read first and applied only when some field
we render differs from the live object (`contains`). The live object may carry more (defaults,
other managers' fields, status); only our fields count. Quantities are compared by value, since
the API server rewrites them in canonical form (`1024Mi` is stored as `1Gi`).

A field we stop rendering (a toleration removed from the spec) is still "contained", so each
child also carries the hash of what was rendered (`dsv4.io/rendered-hash`): a different hash
means a different rendering, and server-side apply then drops the fields we no longer own.

The reverse cannot be repaired by applying: an entry another field manager added to a list-map
(`kubectl patch` adding a Service port; on a cluster with the upstream LWS CRD, an env var or
volume of the LeaderWorkerSet's pod template) stays after our forced apply, since server-side
apply removes only fields the applier owns. Such a child never again holds exactly the
rendered lists, so the caller's `settled` map remembers the `resourceVersion` our apply left it
at (with the rendered hash): while both are the same, applying again could change nothing and
is skipped, instead of one apply per resync forever (day-2 finding). The entry stays; a
warning names the child once.

An existing object is applied over only when it is the owner's (an ownerReference with the
owner's uid), or an orphan that carries the owner's identity labels (`MANAGED_BY_LABEL` and
`DEPLOYMENT_LABEL` equal to what is rendered: left by `kubectl delete --cascade=orphan`);
one left by a deleted owner of the same name is waited for, and any other object of that name
is refused, so nobody's Service or ConfigMap is taken over (and later garbage-collected).

A Service, ConfigMap or PodDisruptionBudget that the API server refuses to update (422: e.g.
another manager changed a Service port, so ours would duplicate its port name) is deleted and
created again, each being cheap to replace, but only after a dry-run create of what we render
(under a generated name) passes validation and admission: an update refused for our own content
(a policy that forbids it) leaves the working object in place. Never a LoadBalancer Service
(its external address would change) nor the LeaderWorkerSet (its pods would restart).
Every child is tried even when one fails, except that a LeaderWorkerSet is not created while
an earlier child failed (pods never start before the plan they run is recorded); the first
failure is raised at the end.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from dsv4_operator.api.v1alpha1.quantities import parse_quantity
from dsv4_operator.kube.client import ApiError, KubeClient, TransientApiError

__all__ = [
    "DEPLOYMENT_LABEL",
    "MANAGED_BY_LABEL",
    "RECREATABLE_KINDS",
    "RENDERED_HASH",
    "AppliedChild",
    "OwnerRelation",
    "Settled",
    "apply_children",
    "carries_identity",
    "contains",
    "owner_relation",
    "with_rendered_hash",
]

RENDERED_HASH: Final = "dsv4.io/rendered-hash"
"""Annotation holding the SHA-256 (first 16 hex digits) of the rendered child."""
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
DEPLOYMENT_LABEL: Final = "dsv4.io/deployment"
"""Identity labels every child is rendered with (`render.labels`): an orphan carrying the same
values was this owner's child and is adopted."""
RECREATABLE_KINDS: Final = frozenset({"Service", "ConfigMap", "PodDisruptionBudget"})
"""Kinds deleted and created again when the API server refuses an update (422)."""

Settled = dict[tuple[str, str, str], tuple[str, str]]
"""(kind, namespace, name) -> (`resourceVersion`, rendered hash) of a child that still differed
from its rendering right after our apply (another manager's list entries): applied again only
once either changes."""

log = logging.getLogger("dsv4_operator")

_QUANTITY_MAPS: Final = frozenset({"requests", "limits"})
"""Keys of mappings whose values are quantities (container resources)."""
_QUANTITY_KEYS: Final = frozenset({"sizeLimit"})
"""Keys whose value is a quantity (emptyDir sizeLimit)."""


def _same_quantity(live: str, desired: str) -> bool:
    try:
        return parse_quantity(live) == parse_quantity(desired)
    except ValueError:
        return False


def contains(live: Any, desired: Any, key: str = "", parent: str = "") -> bool:
    """True when every field of `desired` is present in `live` with the same value.

    Lists must match item by item (same length); mappings may have extra keys in `live`.
    Values inside `requests`/`limits` and `sizeLimit` compare as Kubernetes quantities.

    Args:
        live: the object (or part) as the API server returns it.
        desired: the rendered object (or part).
        key: the key `desired` sits under (for quantity detection).
        parent: the key of the mapping holding `key`.
    """
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            k in live and contains(live[k], v, str(k), key) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b, key, parent) for a, b in zip(live, desired, strict=True))
        )
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if isinstance(desired, str) and isinstance(live, str) and desired != live:
        quantity = parent in _QUANTITY_MAPS or key in _QUANTITY_KEYS
        return quantity and _same_quantity(live, desired)
    return bool(live == desired)


@dataclass(frozen=True)
class AppliedChild:
    """What happened to one child.

    Attributes:
        kind: the child's kind.
        name: its name.
        action: `created`, `updated` or `unchanged`.
        live: the object after the call (the GET result when unchanged).
        previous: the object before an update, or the one deleted to be replaced (created
            after the API server refused an update); None when created where there was none.
    """

    kind: str
    name: str
    action: Literal["created", "updated", "unchanged"]
    live: dict[str, Any]
    previous: dict[str, Any] | None = None


def with_rendered_hash(child: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `child` with `RENDERED_HASH` set to the hash of its JSON (sorted keys)."""
    digest = hashlib.sha256(json.dumps(child, sort_keys=True).encode()).hexdigest()[:16]
    out = copy.deepcopy(dict(child))
    meta = out["metadata"]
    meta["annotations"] = {**(meta.get("annotations") or {}), RENDERED_HASH: digest}
    return out


def _is_current(live: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    if live.get("metadata", {}).get("deletionTimestamp"):
        return False
    body = {k: v for k, v in desired.items() if k not in {"apiVersion", "kind"}}
    return contains(live, body)


OwnerRelation = Literal["own", "predecessor", "orphan", "foreign"]


def owner_relation(live: Mapping[str, Any], owner_ref: Mapping[str, Any]) -> OwnerRelation:
    """How an existing object stands to the owner that `owner_ref` (an ownerReference) names.

    Returns:
        `own`: an ownerReference carries the owner's uid; `predecessor`: it is being deleted,
        or another object of the owner's kind owns it (a deleted owner of the same name);
        `orphan`: it has no ownerReferences; `foreign`: something else owns it.
    """
    meta = live.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    if any(r.get("uid") == owner_ref.get("uid") for r in refs):
        return "own"
    if meta.get("deletionTimestamp") or any(r.get("kind") == owner_ref.get("kind") for r in refs):
        return "predecessor"
    return "foreign" if refs else "orphan"


def carries_identity(live: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether `live` carries the owner's identity labels.

    `MANAGED_BY_LABEL` and `DEPLOYMENT_LABEL` equal to `labels` (the rendered ones): how an
    orphan left by `kubectl delete --cascade=orphan` is told from someone else's object.
    """
    found = (live.get("metadata") or {}).get("labels") or {}
    identity = (MANAGED_BY_LABEL, DEPLOYMENT_LABEL)
    return all(k in labels and found.get(k) == labels[k] for k in identity)


def _check_ownership(live: Mapping[str, Any], child: Mapping[str, Any], what: str) -> None:
    """Raise unless `live` may be applied over as `child` (module docstring)."""
    want = (child["metadata"].get("ownerReferences") or [{}])[0]
    if not want:
        return
    relation = owner_relation(live, want)
    if relation == "own":
        return
    if relation == "predecessor":
        reason = (
            f"left by a deleted {want.get('kind')} of the same name, or another one's: waiting "
            "for garbage collection"
        )
        raise TransientApiError(409, reason, what, None)
    if relation == "orphan" and carries_identity(live, child["metadata"].get("labels") or {}):
        return  # an orphan of this owner (kubectl delete --cascade=orphan): adopted
    refs = (live.get("metadata") or {}).get("ownerReferences") or []
    holder = f" (owned by {refs[0].get('kind')} {refs[0].get('name')})" if refs else ""
    reason = (
        f"exists and is not this {want.get('kind')}'s{holder}: delete or rename it, or rename "
        "the resource"
    )
    raise ApiError(409, reason, what)


def _replaceable(kind: str, live: Mapping[str, Any], child: Mapping[str, Any]) -> bool:
    if kind not in RECREATABLE_KINDS:
        return False
    types = {(obj.get("spec") or {}).get("type") for obj in (live, child)}
    return "LoadBalancer" not in types


def _recreate(
    kube: KubeClient, child: dict[str, Any], live: Mapping[str, Any], refused: ApiError
) -> AppliedChild:
    """Delete `live` and create `child`, once a dry-run create shows `child` itself is valid."""
    meta = child["metadata"]
    kind, name, namespace = str(child["kind"]), str(meta["name"]), str(meta["namespace"])
    probe = copy.deepcopy(child)
    probe["metadata"] = {k: v for k, v in meta.items() if k != "name"}
    probe["metadata"]["generateName"] = f"{name}-"
    try:
        kube.create(probe, dry_run=True)
    except ApiError:
        raise refused from None  # our own content is refused: keep the working object
    uid = str((live.get("metadata") or {}).get("uid", ""))
    kube.delete(child["apiVersion"], kind, namespace, name, uid)
    now = kube.get(child["apiVersion"], kind, namespace, name)
    if now is not None:  # someone else's took the name, or ours is still being deleted
        _check_ownership(now, child, f"{kind} {namespace}/{name}")
        raise TransientApiError(409, "being replaced: retrying", f"{kind} {namespace}/{name}", None)
    return AppliedChild(kind, name, "created", kube.apply(child), dict(live))


def _mark(obj: Mapping[str, Any], child: Mapping[str, Any]) -> tuple[str, str]:
    """`Settled`'s value for object `obj` as applied from rendered `child`.

    (its resourceVersion, the rendered hash); the version is "" when `obj` has none.
    """
    version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return version, str(child["metadata"]["annotations"][RENDERED_HASH])


def _remember(
    settled: Settled | None, child: Mapping[str, Any], result: Mapping[str, Any]
) -> Mapping[str, Any]:
    """Record in `settled` whether `result` (what our apply left) still differs from `child`."""
    if settled is None:
        return result
    meta = child["metadata"]
    key = (str(child["kind"]), str(meta["namespace"]), str(meta["name"]))
    mark = _mark(result, child)
    if _is_current(result, child) or not mark[0]:
        settled.pop(key, None)
        return result
    if settled.get(key) != mark:
        log.warning(
            "%s %s/%s differs from its rendering after a forced apply: another field manager's "
            "list entries (e.g. a port or env var added by hand) stay, since server-side apply "
            "removes only the operator's own; not applied again until it or the spec changes",
            *key,
        )
    settled[key] = mark
    return result


def _apply_one(
    kube: KubeClient,
    rendered: Mapping[str, Any],
    known: Mapping[str, dict[str, Any] | None],
    *,
    may_create_lws: bool = True,
    settled: Settled | None = None,
) -> AppliedChild | None:
    child = with_rendered_hash(rendered)
    meta = child["metadata"]
    kind, name, namespace = str(child["kind"]), str(meta["name"]), str(meta["namespace"])
    # What the caller read this reconcile is not read again.
    live = known[kind] if kind in known else kube.get(child["apiVersion"], kind, namespace, name)
    if live is None:
        if kind == "LeaderWorkerSet" and not may_create_lws:
            return None
        return AppliedChild(
            kind, name, "created", dict(_remember(settled, child, kube.apply(child)))
        )
    _check_ownership(live, child, f"{kind} {namespace}/{name}")
    if _is_current(live, child):
        return AppliedChild(kind, name, "unchanged", live)
    if (settled or {}).get((kind, namespace, name)) == _mark(live, child):
        return AppliedChild(kind, name, "unchanged", live)  # as our last apply left it
    try:
        applied = kube.apply(child)
    except TransientApiError:
        raise
    except ApiError as error:
        if error.status != 422 or not _replaceable(kind, live, child):
            raise
        return _recreate(kube, child, live, error)
    return AppliedChild(kind, name, "updated", dict(_remember(settled, child, applied)), dict(live))


def apply_children(
    kube: KubeClient,
    children: Sequence[Mapping[str, Any]],
    known: Mapping[str, dict[str, Any] | None] | None = None,
    done: list[AppliedChild] | None = None,
    settled: Settled | None = None,
) -> list[AppliedChild]:
    """Apply each child unless the live object already holds every rendered field.

    Args:
        kube: the API client.
        children: rendered manifests, applied in order; a failure does not stop the others.
        known: live objects the caller has just read, by kind (None: it does not exist); the
            others are read here.
        done: a list that receives each child's `AppliedChild` as soon as it is applied, so a
            caller still knows what changed when a later child fails and this raises (the
            LeaderWorkerSet updated before its autoscaler was refused: its `RollingUpdate`
            is news now, and the retry finds it unchanged).
        settled: the caller's memory of children that differ from their rendering only by
            another manager's list entries (`Settled`; read and updated here), kept across
            reconciles; None: every differing child is applied.

    Returns:
        One `AppliedChild` per child, in order.

    Raises:
        TransientApiError: the first failure, when it is retryable (the children after it were
            still tried; applying is idempotent, so the retry converges).
        ApiError: the first failure otherwise, e.g. an object of a child's name that is not
            the owner's (409), or a refused update of a LeaderWorkerSet (422).
    """
    results: list[AppliedChild] = []
    failures: list[ApiError] = []
    for rendered in children:
        try:
            applied = _apply_one(
                kube, rendered, known or {}, may_create_lws=not failures, settled=settled
            )
        except ApiError as error:
            failures.append(error)
            continue
        if applied is not None:
            results.append(applied)
            if done is not None:
                done.append(applied)
    if failures:
        raise failures[0]
    return results
