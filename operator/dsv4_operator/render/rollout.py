"""Where a LeaderWorkerSet's rolling update stands, from its spec and status.

LWS counts every leader in `status.replicas`, `readyReplicas` and `updatedReplicas`, surge
groups (index >= replicas, always on the new template) included, keeps surge groups while a
partition is set, and reports `status.observedGeneration` (kubernetes-sigs/lws
`pkg/controllers/leaderworkerset_controller.go`, `updateStatus` / `updateConditions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "RolloutCounts",
    "live_rollout",
    "rolling_update",
    "rollout_counts",
    "status_stale",
]


@dataclass(frozen=True, slots=True)
class RolloutCounts:
    """A LeaderWorkerSet's group counts against the replicas and partition it should reach.

    LWS counts every leader in `status.replicas`, `readyReplicas` and `updatedReplicas`,
    surge groups (index >= replicas, always on the new template) included, and keeps surge
    groups while a partition is set (kubernetes-sigs/lws `leaderworkerset_controller.go`).

    Attributes:
        want: groups the spec asks for.
        partition: the canary partition (groups below it keep the previous template).
        ready: ready groups, less the surge groups.
        serving: ready groups, surge groups included (what serves requests).
        rolled: every group at or above the partition runs the current template, and no surge
            group is left but those LWS keeps for a partition.
        text: the counts in words.
    """

    want: int
    partition: int
    ready: int
    serving: int
    rolled: bool
    text: str


def rollout_counts(
    want: int, partition: int, status: Mapping[str, Any] | None, stale: bool
) -> RolloutCounts:
    """Counts of a LeaderWorkerSet status against `want` groups and a `partition`.

    `stale`: the status predates the current spec (nothing is rolled then).
    """
    st = status or {}
    have, ready = int(st.get("replicas") or 0), int(st.get("readyReplicas") or 0)
    serving = ready
    updated = int(st.get("updatedReplicas") or 0)
    surge = max(0, have - want)
    # A canary: groups below the partition keep the previous template.
    kept = min(partition, want)
    done = updated - surge >= want - kept and (surge == 0 or kept > 0)  # LWS's figures
    rolled = have >= want and done and not stale
    # The spec's groups: a surge group counts in all three of LWS's figures (conservatively,
    # as if it were the ready or updated one).
    ready, updated = max(0, ready - surge), max(0, updated - surge)
    text = f"{ready}/{want} replicas ready, {updated} updated"
    if surge:
        text += f", {surge} group(s) above spec.replicas (surge, or being removed)"
    if kept:
        text += f" (rollout.partition {kept}: groups 0-{kept - 1} keep the previous template)"
    if stale and have:
        text = f"the LeaderWorkerSet has not counted the current spec yet (last counts: {text})"
    return RolloutCounts(want, partition, ready, serving, rolled, text)


def status_stale(live: Mapping[str, Any]) -> bool:
    """The LWS status predates its spec: `status.observedGeneration` < `metadata.generation`.

    False for LWS releases that do not set `observedGeneration`.
    """
    observed = (live.get("status") or {}).get("observedGeneration")
    generation = (live.get("metadata") or {}).get("generation")
    return observed is not None and generation is not None and int(observed) < int(generation)


def rolling_update(lws_spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """A LeaderWorkerSet spec's `rolloutStrategy.rollingUpdateConfiguration` ({} when unset)."""
    return (lws_spec.get("rolloutStrategy") or {}).get("rollingUpdateConfiguration") or {}


def live_rollout(live: Mapping[str, Any]) -> RolloutCounts:
    """Counts of a live LeaderWorkerSet against its own replicas and partition."""
    spec = live.get("spec") or {}
    config = rolling_update(spec)
    return rollout_counts(
        int(spec.get("replicas") or 0),
        int(config.get("partition") or 0),
        live.get("status"),
        status_stale(live),
    )
