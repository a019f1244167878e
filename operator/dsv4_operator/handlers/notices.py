"""What the operator last said about each resource, so a lasting condition is said once per change.

A reconcile or autoscaler step repeats every few seconds while a fault lasts (kopf's retries,
the resync and progress timers, the autoscale timer); an Event or status write at each one
floods `kubectl describe` and the API server (kopf queues the Events it cannot post and posts
the backlog when the server returns). `Notices` keeps, per resource and topic, what was last
said, so each is said again only when it changes, or after the condition cleared.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

__all__ = ["Notices"]


class Notices:
    """Per resource (`namespace/name`) and topic, what the operator last said about it.

    A topic is what is said: an Event reason (`DrainFailed`, `ReconcileError`) or another
    lasting report (a transient failure, a wait written to status). What was said is any
    hashable value compared with `==`: an Event's message, or the part of it that matters
    (`ScalingLimited`'s ceiling, `LeaderUnreachable`'s groups and causes).

    Shared by kopf's handler threads: each method is atomic. Memory is one entry per resource
    and topic said and not cleared; the delete handler calls `forget`, so it does not grow with
    every resource ever seen.
    """

    def __init__(self) -> None:
        self._said: dict[str, dict[str, Hashable]] = {}
        self._guard = threading.Lock()

    def news(self, resource: str, topic: str, said: Hashable | None) -> bool:
        """Whether `said` is news on `topic` (differs from what was last said); noted either way.

        `said` None means the condition is over: the topic is cleared (a later one is news
        again), and nothing is news.
        """
        if said is None:
            self.clear(resource, topic)
            return False
        with self._guard:
            topics = self._said.setdefault(resource, {})
            if topic in topics and topics[topic] == said:
                return False
            topics[topic] = said
            return True

    def last(self, resource: str, topic: str) -> Hashable | None:
        """What was last said on `topic` about `resource` (None: nothing, or cleared since)."""
        with self._guard:
            return self._said.get(resource, {}).get(topic)

    def note(self, resource: str, topic: str, said: Hashable) -> None:
        """Record `said` as what was last said on `topic`, news or not."""
        with self._guard:
            self._said.setdefault(resource, {})[topic] = said

    def clear(self, resource: str, topic: str) -> None:
        """Forget `topic` for `resource` (the condition is over): what is said next is news."""
        with self._guard:
            topics = self._said.get(resource)
            if topics is None:
                return
            topics.pop(topic, None)
            if not topics:
                del self._said[resource]

    def forget(self, resource: str) -> None:
        """Forget every topic of `resource` (deleted, or no longer handled)."""
        with self._guard:
            self._said.pop(resource, None)

    def resources(self) -> frozenset[str]:
        """The resources something is noted for (to check that deleted ones are forgotten)."""
        with self._guard:
            return frozenset(self._said)
