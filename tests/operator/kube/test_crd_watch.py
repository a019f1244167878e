"""`watch_crd`: what it hands on, and how it backs off on a lasting failure (fault injection)."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
from kubernetes import client as k8s
from typing_extensions import override

from dsv4_operator.kube.crd_watch import CRD_WATCH_RETRY_SECONDS, watch_crd


class _Client:
    closed = False

    def close(self) -> None:
        self.closed = True


class _CountingStop(threading.Event):
    """A stop flag that records each pause and sets itself after `limit` of them."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.pauses: list[float] = []

    @override
    def wait(self, timeout: float | None = None) -> bool:
        self.pauses.append(float(timeout or 0))
        if len(self.pauses) >= self.limit:
            self.set()
        return self.is_set()


class _Raw:
    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()


def test_a_lasting_failure_backs_off_to_five_minutes_and_closes_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Forbidden:
        def __init__(self, _client: Any) -> None:
            pass

        def list_custom_resource_definition(self, **_: Any) -> Any:
            raise RuntimeError("403 Forbidden")

    monkeypatch.setattr(k8s, "ApiextensionsV1Api", Forbidden)
    client, stop = _Client(), _CountingStop(limit=9)
    watch_crd(lambda: client, "x.dsv4.io", lambda _: False, stop=stop, logger=logging.getLogger())
    first, most = CRD_WATCH_RETRY_SECONDS
    assert stop.pauses == [first, 10, 20, 40, 80, 160, most, most, most]
    assert client.closed


def test_the_served_crd_is_handed_on_and_true_ends_the_watch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crd = {"metadata": {"name": "x.dsv4.io"}, "spec": {}}

    class Served:
        def __init__(self, _client: Any) -> None:
            pass

        def list_custom_resource_definition(self, **kwargs: Any) -> Any:
            assert kwargs["field_selector"] == "metadata.name=x.dsv4.io"
            return _Raw({"metadata": {"resourceVersion": "7"}, "items": [crd]})

    monkeypatch.setattr(k8s, "ApiextensionsV1Api", Served)
    seen: list[Any] = []

    def on_crd(got: Any) -> bool:
        seen.append(got)
        return True

    client = _Client()
    watch_crd(
        lambda: client,
        "x.dsv4.io",
        on_crd,
        stop=threading.Event(),
        logger=logging.getLogger(),
    )
    assert seen == [crd]
    assert client.closed
