"""Per-resource locks that serialize a resource's handlers and go away when unused."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["ResourceLocks"]

L = TypeVar("L")


class ResourceLocks(Generic[L]):
    """Per resource (`namespace/name`), the lock its handlers hold (kopf runs them in threads).

    An entry lives while a caller holds or waits for its lock (weak references), so the map does
    not grow with every name ever seen.

    Args:
        factory: makes a lock (`threading.Lock`; `threading.RLock` where a handler that holds
            it calls another that takes it too).
    """

    def __init__(self, factory: Callable[[], L]) -> None:
        self._factory = factory
        self._locks: weakref.WeakValueDictionary[str, L] = weakref.WeakValueDictionary()
        self._guard = threading.Lock()

    def __call__(self, key: str) -> L:
        """The lock of resource `key`, shared while anyone references it."""
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._factory()
                self._locks[key] = lock
            return lock

    def __len__(self) -> int:
        """How many resources have a lock now (held, or waited for)."""
        return len(self._locks)
