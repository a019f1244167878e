"""What another writer changed in a child, and who: for the Event saying it was set back.

Pure functions over objects as the API server returns them. Each child is server-side applied
with force by the operator's field manager at every resync that finds it differing from its
rendering (`kube.apply`), so a field someone else changed (`kubectl scale`, `kubectl edit`, a
GitOps tool's forced apply) is set back; these name the fields that differed and the field
managers that hold them, read from `metadata.managedFields` (`fieldsV1`: `f:<key>` per map
key, `k:<json>` per list-map item, `i:<n>` per list index, `{}` below a field owned whole:
Kubernetes docs, "Server-Side Apply", managed fields;
kubernetes/kubernetes `staging/src/k8s.io/apimachinery/pkg/util/managedfields`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from dsv4_operator.kube.apply import contains

__all__ = ["NO_MANAGER", "SHOWN_FIELDS", "changed_by", "differences", "drift_words"]

SHOWN_FIELDS: Final = 4
"""Fields a drift message names before `and N more` (an Event's message is at most 1,024
characters)."""

NO_MANAGER: Final = (
    "a writer that no field manager names (e.g. `kubectl scale`: a write through a custom "
    "resource's scale subresource records none, kubernetes/kubernetes#131892)"
)
"""Who changed fields that no other field manager holds. Writes through the scale subresource
left managedFields untouched for every kind before Kubernetes 1.22
(kubernetes/kubernetes#82046, fixed for built-in kinds by #98377) and still do for custom
resources such as the LeaderWorkerSet (#131892, open); a field removed by an update is held by
nobody either."""

Segment = str | int


def differences(
    live: Any, desired: Any, path: tuple[Segment, ...] = ()
) -> list[tuple[Segment, ...]]:
    """The paths of `desired` that `live` does not hold as `contains` compares them.

    A path is a tuple of map keys and list indexes; a list of another length differs as a
    whole (its own path). `apiVersion` and `kind` at the top are not compared.

    Args:
        live: the object (or part) as the API server returns it.
        desired: the rendered object (or part).
        path: where `live` and `desired` sit (for the recursion).

    Returns:
        The differing paths, in `desired`'s order; [] when `contains(live, desired)`.
    """
    if contains(live, desired, str(path[-1]) if path else "", _parent(path)):
        return []
    if isinstance(desired, Mapping) and isinstance(live, Mapping):
        out: list[tuple[Segment, ...]] = []
        for key, value in desired.items():
            if not path and key in ("apiVersion", "kind"):
                continue
            if key not in live:
                out.append((*path, str(key)))
            else:
                out.extend(differences(live[key], value, (*path, str(key))))
        return out
    if isinstance(desired, list) and isinstance(live, list) and len(live) == len(desired):
        found: list[tuple[Segment, ...]] = []
        for index, (a, b) in enumerate(zip(live, desired, strict=True)):
            found.extend(differences(a, b, (*path, index)))
        return found
    return [path]


def _parent(path: tuple[Segment, ...]) -> str:
    """The map key above the last one of `path` (as `contains` takes it)."""
    keys = [s for s in path[:-1] if isinstance(s, str)]
    return keys[-1] if keys else ""


def _item_key(node: Mapping[str, Any], item: Any, index: int) -> str | None:
    """The `fieldsV1` key of list item `item` (at `index`) in `node`, if `node` has one."""
    if f"i:{index}" in node:
        return f"i:{index}"
    for key in node:
        if key.startswith("k:") and isinstance(item, Mapping):
            try:
                ident = json.loads(key[2:])
            except ValueError:
                continue
            if isinstance(ident, dict) and all(item.get(k) == v for k, v in ident.items()):
                return str(key)
        elif key.startswith("v:") and key[2:] == json.dumps(item, separators=(",", ":")):
            return str(key)
    return None


def _holds(fields: Any, path: tuple[Segment, ...], live: Any) -> bool:
    """Whether a `fieldsV1` tree holds `path` (or a field above it, owned whole) of `live`."""
    if not isinstance(fields, Mapping) or not fields:
        return False
    node: Any = fields
    value: Any = live
    for segment in path:
        if not isinstance(node, Mapping):
            return False
        if not node:
            return True  # a leaf: owned as a whole from here down (an atomic list or map)
        if isinstance(segment, int):
            item = value[segment] if isinstance(value, list) and segment < len(value) else None
            key = _item_key(node, item, segment)
            value = item
        else:
            key = f"f:{segment}"
            value = value.get(segment) if isinstance(value, Mapping) else None
        if key is None or key not in node:
            return False
        node = node[key]
    return True


def changed_by(
    live: Mapping[str, Any], paths: Sequence[tuple[Segment, ...]], ours: str
) -> list[str]:
    """Field managers other than `ours` that hold any of `paths` in `live`, in managedFields order.

    Entries of the `status` subresource are left out (no rendered field lives there). A manager
    named once per operation: `kubectl-edit`, or `argocd-controller (Apply)` for a server-side
    apply. [] when nobody holds them (a field removed by an update that then owns nothing there).
    """
    found: list[str] = []
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        manager = str(entry.get("manager") or "")
        if not manager or manager == ours or entry.get("subresource") == "status":
            continue
        fields = entry.get("fieldsV1") or {}
        if any(_holds(fields, path, live) for path in paths):
            named = f"{manager} (Apply)" if entry.get("operation") == "Apply" else manager
            if named not in found:
                found.append(named)
    return found


def _dotted(path: tuple[Segment, ...]) -> str:
    out = ""
    for segment in path:
        out += f"[{segment}]" if isinstance(segment, int) else (f".{segment}" if out else segment)
    return out


def drift_words(paths: Sequence[tuple[Segment, ...]], managers: Sequence[str]) -> str:
    """`spec.replicas, metadata.labels.app changed by kubectl-edit`: the fields, then who.

    At most `SHOWN_FIELDS` fields, then `and N more`; `NO_MANAGER` when `managers` is empty.
    """
    shown = ", ".join(_dotted(p) for p in paths[:SHOWN_FIELDS])
    more = f" and {len(paths) - SHOWN_FIELDS} more" if len(paths) > SHOWN_FIELDS else ""
    who = ", ".join(managers) if managers else NO_MANAGER
    return f"{shown}{more} changed by {who}"
