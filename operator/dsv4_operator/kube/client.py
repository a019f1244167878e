"""The one place that sends HTTP requests to the API server (the `kubernetes` package's client).

`KubeClient` is a thin, typed wrapper over `kubernetes.client.ApiClient` for the handful of calls
the operator makes: GET an object, create one (POST), server-side apply (PATCH
`application/apply-patch+yaml`), merge-patch a status subresource, and API discovery. Failures
become `TransientApiError` (409 conflict, 429 throttling, 5xx, connection errors: retry later)
or `ApiError` (anything else).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config

__all__ = [
    "ApiError",
    "KubeClient",
    "TransientApiError",
    "WriteCounter",
    "build_api_client",
    "object_name",
    "resource_path",
]

_TRANSIENT: Final = frozenset({409, 429, 500, 502, 503, 504})
"""Statuses worth retrying: conflict (another writer won), throttling, server errors."""
_TIMEOUT_SECONDS: Final = 30
CRD_API_VERSION: Final = "apiextensions.k8s.io/v1"
PLURALS: Final = {
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "Service": "services",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "LeaderWorkerSet": "leaderworkersets",
    "DeepSeekV4Deployment": "deepseekv4deployments",
    "Event": "events",
    "ScaledObject": "scaledobjects",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "KopfPeering": "kopfpeerings",
    "ClusterKopfPeering": "clusterkopfpeerings",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "CustomResourceDefinition": "customresourcedefinitions",
    "Pod": "pods",
}
"""Plural resource names of the kinds the operator touches (PersistentVolumeClaims: read only,
to tell whether the ones a spec names exist; Pods: read only, one leader pod by name, when the
native autoscaler gets no answer from its runtime)."""


class ApiError(RuntimeError):
    """An API request failed for a reason retrying will not fix (e.g. 403, 404, 422).

    Attributes:
        status: the HTTP status (0 when no response arrived).
        reason: the API server's message.
        kind: `details.kind` of the API server's Status (e.g. "namespaces" when a 404 is about
            the namespace rather than the object), "" when it sent none.
    """

    def __init__(self, status: int, reason: str, what: str, kind: str = "") -> None:
        super().__init__(f"{what}: HTTP {status}: {reason}")
        self.status = status
        self.reason = reason
        self.kind = kind


class TransientApiError(ApiError):
    """A request failed with 409, 429, 5xx or a connection error: retry after a delay.

    Attributes:
        retry_after: the server's Retry-After in seconds, when it sent one.
    """

    def __init__(self, status: int, reason: str, what: str, retry_after: float | None) -> None:
        super().__init__(status, reason, what)
        self.retry_after = retry_after


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    """REST path of an object, or its collection when `name` is None.

    `namespace` "" gives the path of a cluster-scoped kind.
    """
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    scope = f"/namespaces/{namespace}" if namespace else ""
    path = f"{base}{scope}/{PLURALS[kind]}"
    return path if name is None else f"{path}/{name}"


def object_name(kind: str, namespace: str, name: str) -> str:
    """How an error names an object: `LeaderWorkerSet ns/name` (`name` alone when cluster-scoped).

    What a user passes to `kubectl get KIND NAME -n NS`, rather than the REST request
    (`PATCH /apis/leaderworkerset.x-k8s.io/v1/namespaces/ns/leaderworkersets/name`).
    """
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


class CredentialsError(k8s_config.ConfigException):
    """No usable Kubernetes credentials: the message names the kubeconfig path and its source."""


def build_api_client() -> Any:
    """An `ApiClient` from the in-cluster service account, else `$KUBECONFIG` (read now).

    Reading `$KUBECONFIG` at call time (not import time) matters for tests that set it late.
    Raises `CredentialsError` naming the kubeconfig path (and whether it came from `$KUBECONFIG`,
    which may list several files) when neither gives credentials.
    """
    configuration = k8s.Configuration()
    # Any: the kubernetes package's config loaders are untyped.
    incluster: Any = k8s_config.load_incluster_config
    kubeconfig: Any = k8s_config.load_kube_config
    try:
        incluster(client_configuration=configuration)
    except k8s_config.ConfigException:
        env = os.environ.get("KUBECONFIG")
        path = env or str(Path.home() / ".kube" / "config")
        source = "$KUBECONFIG" if env else "the default kubeconfig, $KUBECONFIG being unset"
        if not any(Path(one).is_file() for one in path.split(os.pathsep) if one):
            raise CredentialsError(
                f"no Kubernetes credentials: not in a pod (no service account) and {path} "
                f"({source}) is not a file; set KUBECONFIG (the local control plane's: "
                '`eval "$(hack/cluster.sh env)"`)'
            ) from None
        try:
            kubeconfig(config_file=path, client_configuration=configuration)
        except k8s_config.ConfigException as error:
            raise CredentialsError(f"kubeconfig {path} ({source}): {error}") from error
    return k8s.ApiClient(configuration)


@dataclass
class WriteCounter:
    """Counts the write requests this client sent, by verb and kind (for metrics and tests)."""

    on_write: Callable[[str, str], None] | None = None
    counts: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, verb: str, kind: str) -> None:
        """Count one request (and tell `on_write`, e.g. a Prometheus counter)."""
        self.counts[verb, kind] = self.counts.get((verb, kind), 0) + 1
        if self.on_write is not None:
            self.on_write(verb, kind)

    @property
    def total(self) -> int:
        """All writes so far."""
        return sum(self.counts.values())


class KubeClient:
    """Typed access to the few API calls the operator makes.

    Args:
        api_client: a `kubernetes.client.ApiClient` (closed by `close`).
        field_manager: server-side-apply field manager.
        on_write: called with (verb, kind) for every write request.
    """

    def __init__(
        self,
        api_client: Any,
        field_manager: str,
        on_write: Callable[[str, str], None] | None = None,
    ) -> None:
        self._api = api_client
        self.field_manager = field_manager
        self.writes = WriteCounter(on_write)

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._api.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        what: str | None = None,
    ) -> Any:
        """Send one request; its decoded JSON answer (None when empty).

        `what` names the request in errors (`object_name` for requests about one object);
        `METHOD PATH` when None (discovery, lists).

        Raises:
            TransientApiError: 409, 429, 5xx or no answer.
            ApiError: any other status outside 2xx.
        """
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        what = what or f"{method} {path}"
        try:
            serialized = self._api.param_serialize(
                method=method,
                resource_path=path,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._api.call_api(*serialized, _request_timeout=_TIMEOUT_SECONDS)
            response.read()
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise TransientApiError(0, str(error), what, None) from None
        if not 200 <= response.status < 300:
            reason, kind = _status_fields(response.data)
            if response.status in _TRANSIENT:
                retry = response.getheader("Retry-After")
                delay = float(retry) if retry and retry.isdigit() else None
                raise TransientApiError(response.status, reason, what, delay)
            raise ApiError(response.status, reason, what, kind)
        return json.loads(response.data) if response.data else None

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist (404).

        Raises:
            TransientApiError: a retryable failure.
            ApiError: any other failure.
        """
        try:
            found: dict[str, Any] = self._request(
                "GET",
                resource_path(api_version, kind, namespace, name),
                what=object_name(kind, namespace, name),
            )
        except ApiError as error:
            if error.status == 404 and not isinstance(error, TransientApiError):
                return None
            raise
        return found

    def create(self, obj: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any] | None:
        """Create `obj` (POST); the created object, or None when it already exists (409).

        Cluster-scoped when `obj` has no metadata.namespace. Unlike `apply`, an existing object
        is left exactly as it is (no field is taken over). With `dry_run` the API server runs
        validation and admission and stores nothing (`dryRun=All`).

        Raises:
            TransientApiError: a retryable failure (429, 5xx, connection).
            ApiError: any other failure (e.g. 403 forbidden, 404 kind not served, 422 invalid).
        """
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace", ""))
        query = [("fieldManager", self.field_manager)]
        if dry_run:
            query.append(("dryRun", "All"))
        else:
            self.writes.add("create", str(obj["kind"]))
        try:
            created: dict[str, Any] = self._request(
                "POST",
                path,
                query=query,
                body=dict(obj),
                content_type="application/json",
                what=object_name(
                    str(obj["kind"]),
                    str(meta.get("namespace", "")),
                    str(meta.get("name") or f"{meta.get('generateName', '')}*"),
                ),
            )
        except TransientApiError as error:
            if error.status == 409:
                return None
            raise
        return created

    def exists(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Whether the object exists, by a LIST filtered on its name (RBAC `list`, not `get`).

        Raises:
            TransientApiError: a retryable failure.
            ApiError: any other failure (e.g. 403, 404 kind not served).
        """
        path = resource_path(api_version, kind, namespace)
        query = [("fieldSelector", f"metadata.name={name}")]
        found = self._request("GET", path, query=query)
        return bool(found and found.get("items"))

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply `obj` (force: the operator owns these fields); returns the result.

        Raises:
            TransientApiError: a retryable failure (409, 429, 5xx).
            ApiError: any other failure (e.g. 422 invalid, 404 kind not served).
        """
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        query = [("fieldManager", self.field_manager), ("force", "true")]
        self.writes.add("apply", str(obj["kind"]))
        applied: dict[str, Any] = self._request(
            "PATCH",
            path,
            query=query,
            body=json.dumps(obj),
            content_type="application/apply-patch+yaml",
            what=object_name(str(obj["kind"]), str(meta["namespace"]), str(meta["name"])),
        )
        return applied

    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> bool:
        """Delete the object whose uid is `uid` (a precondition: a replacement is left alone).

        Dependents are deleted in the background (propagation policy Background).

        Returns:
            True when this call deleted it; False when it was gone or had another uid.

        Raises:
            TransientApiError: a retryable failure.
            ApiError: any other failure (e.g. 403).
        """
        path = resource_path(api_version, kind, namespace, name)
        self.writes.add("delete", kind)
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": uid},
            "propagationPolicy": "Background",
        }
        try:
            self._request(
                "DELETE",
                path,
                body=options,
                content_type="application/json",
                what=object_name(kind, namespace, name),
            )
        except TransientApiError as error:
            if error.status == 409:  # uid precondition failed: another object took the name
                return False
            raise
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def patch_status(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """JSON-merge-patch the `status` subresource with `status` (keys set to None are removed).

        Args:
            api_version: the resource's apiVersion.
            kind: its kind.
            namespace: its namespace.
            name: its name.
            status: the merge patch of `.status`.
            resource_version: when set, the patch applies only to the object at that
                `metadata.resourceVersion` (optimistic concurrency: a write computed from what
                was read then cannot undo a later one); otherwise the API server answers 409.

        Raises:
            TransientApiError: a retryable failure (409 when `resource_version` is outdated).
            ApiError: any other failure.
        """
        path = resource_path(api_version, kind, namespace, name) + "/status"
        self.writes.add("patch-status", kind)
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        patched: dict[str, Any] = self._request(
            "PATCH",
            path,
            body=body,
            content_type="application/merge-patch+json",
            what=f"{object_name(kind, namespace, name)} (status)",
        )
        return patched

    def patch_replicas(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        replicas: int,
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """JSON-merge-patch `spec.replicas` (the field the scale subresource serves).

        Args:
            api_version: the resource's apiVersion.
            kind: its kind.
            namespace: its namespace.
            name: its name.
            replicas: the new count.
            resource_version: when set, the patch applies only to the object at that
                `metadata.resourceVersion`; otherwise the API server answers 409.

        Raises:
            TransientApiError: a retryable failure (409 when `resource_version` is outdated).
            ApiError: any other failure.
        """
        path = resource_path(api_version, kind, namespace, name)
        self.writes.add("patch", kind)
        body: dict[str, Any] = {"spec": {"replicas": replicas}}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        patched: dict[str, Any] = self._request(
            "PATCH",
            path,
            body=body,
            content_type="application/merge-patch+json",
            what=object_name(kind, namespace, name),
        )
        return patched

    def custom_resource_definition(self, name: str) -> dict[str, Any] | None:
        """The CustomResourceDefinition `name` as served, or None when there is none.

        Read with a LIST by name: the chart grants list and watch on CRDs (kopf's scan), not get.

        Raises:
            TransientApiError: a retryable failure.
            ApiError: any other failure.
        """
        path = resource_path(CRD_API_VERSION, "CustomResourceDefinition", "")
        found = self._request("GET", path, query=[("fieldSelector", f"metadata.name={name}")])
        items: list[dict[str, Any]] = found.get("items", [])
        return items[0] if items else None

    def served_kinds(self, api_version: str) -> set[str] | None:
        """Kinds served in `api_version` (e.g. `policy/v1`), or None when it is not served."""
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            found = self._request("GET", base)
        except ApiError as error:
            if error.status == 404 and not isinstance(error, TransientApiError):
                return None
            raise
        return {r["kind"] for r in found.get("resources", []) if "/" not in r["name"]}


def _status_fields(data: bytes | None) -> tuple[str, str]:
    """(message, details.kind) of an error response's Status body; raw text when not JSON."""
    if not data:
        return "", ""
    try:
        doc = json.loads(data)
    except ValueError:
        return data.decode(errors="replace")[:512], ""
    if not isinstance(doc, dict):
        return str(doc)[:512], ""
    details = doc.get("details")
    kind = str(details.get("kind", "")) if isinstance(details, dict) else ""
    return str(doc.get("message", "")), kind
