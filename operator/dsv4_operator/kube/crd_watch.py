"""Watch one CustomResourceDefinition, so the operator stops before an older one prunes data."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

__all__ = ["CRD_WATCH_RETRY_SECONDS", "CRD_WATCH_TIMEOUT_SECONDS", "watch_crd"]

CRD_WATCH_TIMEOUT_SECONDS: Final = 15
"""Seconds each watch request lasts before it is renewed (the API server's `timeoutSeconds`),
so also the longest `watch_crd` takes to notice `stop` when no event comes."""
CRD_WATCH_RETRY_SECONDS: Final = (5.0, 300.0)
"""Pause after a failed list or watch before the next attempt: the first, doubled after each
further failure up to the second (a lasting 403 under hand-made RBAC logs every 5 minutes, not
every 5 seconds); back to the first after a success."""


def watch_crd(
    make_api_client: Callable[[], Any],
    name: str,
    on_crd: Callable[[Mapping[str, Any]], bool],
    *,
    stop: threading.Event,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """Call `on_crd` with the CRD `name` as served now and after every change, until `stop`.

    A LIST by name gives the object and a resourceVersion; a WATCH from there (renewed every
    `CRD_WATCH_TIMEOUT_SECONDS`, re-listed after an error or a 410 Gone) gives each change, so
    a CRD replaced under a running operator is seen within the watch's latency, not a poll's
    period. Uses list and watch only, what the chart grants on CRDs.

    Args:
        make_api_client: gives the `kubernetes.client.ApiClient` to use (closed at the end).
        name: the CRD's name (`deepseekv4deployments.dsv4.io`).
        on_crd: called with each served version of the object (a dict, as the API server
            sends it); returning True ends the watch.
        stop: ends the watch when set (checked between events and requests).
        logger: where failures go (they are retried).
    """
    api_client = make_api_client()
    try:
        _watch(api_client, name, on_crd, stop=stop, logger=logger)
    finally:
        api_client.close()


def _watch(
    api_client: Any,
    name: str,
    on_crd: Callable[[Mapping[str, Any]], bool],
    *,
    stop: threading.Event,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """The loop of `watch_crd` on one client."""
    # Any: the kubernetes package's watch module is untyped, and a raw list has `.data`.
    api: Any = k8s.ApiextensionsV1Api(api_client)
    new_watch: Any = k8s_watch.Watch
    selector = f"metadata.name={name}"
    delay = CRD_WATCH_RETRY_SECONDS[0]
    while not stop.is_set():
        try:
            listed = api.list_custom_resource_definition(
                field_selector=selector, _preload_content=False, _request_timeout=30
            )
            body = _json(listed.data)
            version = body["metadata"]["resourceVersion"]
            delay = CRD_WATCH_RETRY_SECONDS[0]
            for item in body.get("items", []):
                if on_crd(item):
                    return
            watcher = new_watch()
            for event in watcher.stream(
                api.list_custom_resource_definition,
                field_selector=selector,
                resource_version=version,
                timeout_seconds=CRD_WATCH_TIMEOUT_SECONDS,
                _request_timeout=CRD_WATCH_TIMEOUT_SECONDS + 10,
            ):
                if event["type"] == "ERROR":  # e.g. 410 Gone: list again
                    break
                if event["type"] in ("ADDED", "MODIFIED") and on_crd(event["raw_object"]):
                    watcher.stop()
                    return
                if stop.is_set():
                    watcher.stop()
                    return
        except Exception as error:  # any failure: log, wait, list again
            logger.warning("watching CRD %s failed (again in %g s): %s", name, delay, error)
            stop.wait(delay)
            delay = min(2 * delay, CRD_WATCH_RETRY_SECONDS[1])


def _json(data: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(data)
    return parsed
