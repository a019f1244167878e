"""Test-side handle on the CEL-capable CRD server that `hack/cluster.sh start-cel` runs.

The 1.20 test plane knows no `x-kubernetes-validations`. Beside it runs apiextensions-apiserver
1.36 (built by `hack/cluster.sh build` from Debian sid's Kubernetes Go library packages; recipe in
`../shared/docs/test-cluster.md` §2.7): the same CRD and custom-resource code a 1.36
kube-apiserver runs, so it compiles each CEL rule with its cost estimate when a CRD is created,
and evaluates the rules, structural defaults and strict field validation on every write. It
serves CRDs and custom resources only, shares the plane's etcd under `/aext`, and delegates
authentication and authorization to the plane. kubectl cannot use it (no `/api` discovery);
`Api` talks to it in plain JSON through the Python client.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.cluster import ControlPlane, Json, bin_dir
from typing_extensions import override

CEL_SERVER_BINARY = "apiextensions-apiserver"


def cel_server_unavailable() -> str | None:
    """Why the CEL server cannot start here (a failed or missing build), or None when it can."""
    binary = bin_dir() / CEL_SERVER_BINARY
    failed = binary.with_name(f"{CEL_SERVER_BINARY}.failed")
    if os.access(binary, os.X_OK):
        return None
    if failed.is_file():
        return f"{binary} did not build: {failed.read_text().strip()}"
    return f"CEL CRD server binary missing: {binary} (run: make cluster)"


@dataclass
class Refusal(Exception):
    """The server refused a write: HTTP status, its message, and each cause as `field: message`."""

    status: int
    message: str
    causes: tuple[str, ...]

    @override
    def __str__(self) -> str:
        return f"{self.status}: {self.message}"

    @property
    def text(self) -> str:
        """The message and every cause, one per line (what a user would read)."""
        return "\n".join([self.message, *self.causes])


@dataclass
class CelServer:
    """A running apiextensions-apiserver beside a `ControlPlane`.

    Attributes:
        plane: the control plane it delegates authentication and authorization to.
        kubeconfig: admin kubeconfig for the CEL server (the plane's token, the server's CA).
    """

    plane: ControlPlane
    kubeconfig: Path

    @classmethod
    def start(cls, plane: ControlPlane) -> CelServer:
        """Start it on the plane's port + 3 and wait for `/readyz` (hack/cluster.sh start-cel).

        Raises:
            RuntimeError: it did not become ready; the message holds the script's output.
        """
        proc = plane.script("start-cel")
        if proc.returncode != 0:
            raise RuntimeError(
                f"hack/cluster.sh start-cel failed (rc {proc.returncode}):\n{proc.stderr}"
            )
        return cls(plane=plane, kubeconfig=plane.state_dir / "kubeconfig-cel")

    def api_client(self) -> Any:
        """A new `kubernetes.client.ApiClient` for the CEL server; close it when done."""
        from kubernetes import config

        new_client: Any = config.new_client_from_config  # untyped in the kubernetes package
        return new_client(config_file=str(self.kubeconfig))

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log (for failure messages)."""
        log = self.plane.state_dir / f"{CEL_SERVER_BINARY}.log"
        return "\n".join(log.read_text().splitlines()[-lines:]) if log.exists() else ""


class Api:
    """JSON requests to the CEL server (no client models, so nothing is reshaped on the way).

    Writes use strict field validation, as kubectl does: an unknown field is an error, not
    silently pruned. Every method raises `Refusal` on an HTTP status >= 300.
    """

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, **query: str
    ) -> Json:
        """`method path?query` with `body` as JSON; the response body."""
        response = self.api_client.call_api(
            *self.api_client.param_serialize(
                method=method,
                resource_path=path,
                query_params=list(query.items()),
                header_params={"Accept": "application/json", "Content-Type": "application/json"},
                body=None if body is None else dict(body),
                auth_settings=["BearerToken"],
            )
        )
        response.read()
        data: Json = json.loads(response.data or b"{}")
        if response.status >= 300:
            causes = tuple(
                f"{cause.get('field', '')}: {cause.get('message', '')}"
                for cause in data.get("details", {}).get("causes", [])
            )
            raise Refusal(int(response.status), str(data.get("message", "")), causes)
        return data

    @staticmethod
    def collection(obj: Mapping[str, Any], plural: str) -> str:
        """The collection path of a namespaced custom object (namespace `default` if unset)."""
        namespace = obj.get("metadata", {}).get("namespace") or "default"
        return f"/apis/{obj['apiVersion']}/namespaces/{namespace}/{plural}"

    def create(self, obj: Mapping[str, Any], plural: str, *, dry_run: bool = False) -> Json:
        """POST a namespaced custom object; the stored (defaulted) object, or the would-be one."""
        query = {"fieldValidation": "Strict", **({"dryRun": "All"} if dry_run else {})}
        return self.request("POST", self.collection(obj, plural), obj, **query)

    def replace(self, obj: Mapping[str, Any], plural: str) -> Json:
        """PUT a namespaced custom object (it carries its resourceVersion); the stored object."""
        path = f"{self.collection(obj, plural)}/{obj['metadata']['name']}"
        return self.request("PUT", path, obj, fieldValidation="Strict")

    def delete(self, obj: Mapping[str, Any], plural: str) -> None:
        """DELETE a namespaced custom object by name."""
        self.request("DELETE", f"{self.collection(obj, plural)}/{obj['metadata']['name']}")
