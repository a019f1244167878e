"""Apply rendered children with server-side apply, skipping those already as rendered.

A no-op resync must write nothing, so each child is read first and applied only when some field
we render differs from the live object (`contains`). The live object may carry more (defaults,
other managers' fields, status); only our fields count. Quantities are compared by value, since
the API server rewrites them in canonical form (`1024Mi` is stored as `1Gi`).

A field we stop rendering (a toleration removed from the spec) is still "contained", so each
child also carries the hash of what was rendered (`dsv4.io/rendered-hash`): a different hash
means a different rendering, and server-side apply then drops the fields we no longer own.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from dsv4_operator.api.v1alpha1.quantities import parse_quantity
from dsv4_operator.kube.client import KubeClient

__all__ = ["RENDERED_HASH", "AppliedChild", "apply_children", "contains", "with_rendered_hash"]

RENDERED_HASH: Final = "dsv4.io/rendered-hash"
"""Annotation holding the SHA-256 (first 16 hex digits) of the rendered child."""

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
    """

    kind: str
    name: str
    action: Literal["created", "updated", "unchanged"]
    live: dict[str, Any]


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


def apply_children(kube: KubeClient, children: Sequence[Mapping[str, Any]]) -> list[AppliedChild]:
    """Apply each child unless the live object already holds every rendered field.

    Args:
        kube: the API client.
        children: rendered manifests, applied in order.

    Returns:
        One `AppliedChild` per child, in order.

    Raises:
        TransientApiError: a retryable failure; children before it may have been applied
            (applying is idempotent, so the retry converges).
        ApiError: any other failure.
    """
    results: list[AppliedChild] = []
    for rendered in children:
        child = with_rendered_hash(rendered)
        meta = child["metadata"]
        kind, name = str(child["kind"]), str(meta["name"])
        live = kube.get(child["apiVersion"], kind, meta["namespace"], name)
        if live is not None and _is_current(live, child):
            results.append(AppliedChild(kind, name, "unchanged", live))
            continue
        applied = kube.apply(child)
        results.append(AppliedChild(kind, name, "created" if live is None else "updated", applied))
    return results
