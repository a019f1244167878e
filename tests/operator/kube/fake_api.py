"""An in-memory stand-in for `kubernetes.client.ApiClient` at the HTTP level (unit tests only).

It answers the requests `KubeClient` sends (GET, POST, apply PATCH, status merge PATCH, DELETE
with a uid precondition, discovery) from a dict of objects, so the real `KubeClient` code runs;
`fail` queues error statuses per method.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from typing_extensions import override


@dataclass
class FakeResponse:
    status: int
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def read(self) -> bytes:
        return self.data

    def getheader(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass
class FakeApi:
    """Objects by path; `served` maps a group/version path to its kinds."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    served: dict[str, list[str]] = field(
        default_factory=lambda: {
            "/apis/leaderworkerset.x-k8s.io/v1": ["LeaderWorkerSet"],
            "/apis/policy/v1": ["PodDisruptionBudget"],
        }
    )
    fail: list[tuple[str, str, int]] = field(default_factory=list)
    fail_details: dict[str, Any] | None = None
    """`details` of the Status that injected failures carry (e.g. {"kind": "namespaces"})."""
    fail_message: str | None = None
    """`message` of the Status that injected failures carry (default `injected CODE`)."""
    requests: list[tuple[str, str]] = field(default_factory=list)
    closed: bool = False
    generation: int = 0

    def param_serialize(self, **kw: Any) -> tuple[Any, ...]:
        query = "&".join(f"{k}={v}" for k, v in kw.get("query_params") or [])
        url = kw["resource_path"] + (f"?{query}" if query else "")
        return (kw["method"], url, kw.get("header_params"), kw.get("body"), None)

    def call_api(  # noqa: PLR0911, PLR0912  (one branch and return per emulated request)
        self, method: str, url: str, headers: Any, body: Any, post: Any, **_: Any
    ) -> FakeResponse:
        path = url.split("?", 1)[0]
        self.requests.append((method, path))
        for i, (m, fragment, code) in enumerate(self.fail):
            if m == method and fragment in path:
                del self.fail[i]
                status: dict[str, Any] = {"message": self.fail_message or f"injected {code}"}
                if self.fail_details is not None:
                    status["details"] = self.fail_details
                return self._json(code, status, {"Retry-After": "2"})
        if method == "GET" and path in self.served:
            resources = [{"name": k.lower() + "s", "kind": k} for k in self.served[path]]
            return self._json(200, {"resources": resources})
        if method == "GET" and "?fieldSelector=metadata.name=" in url:  # LIST by name
            name = url.split("metadata.name=", 1)[1].split("&", 1)[0]
            items = [o for p, o in self.objects.items() if p == f"{path}/{name}"]
            return self._json(200, {"items": items})
        if method == "GET":
            if path in self.objects:
                return self._json(200, self.objects[path])
            return self._json(404, {"message": "not found"})
        if method == "POST" and "dryRun=All" in url:  # validated, never stored
            probe = copy.deepcopy(body if isinstance(body, dict) else json.loads(body))
            meta = probe["metadata"]
            meta.setdefault("name", meta.get("generateName", "") + "x7k2q")
            return self._json(201, probe)
        if method == "POST":  # create in a collection
            created = copy.deepcopy(body if isinstance(body, dict) else json.loads(body))
            key = f"{path}/{created['metadata']['name']}"
            if key in self.objects:
                return self._json(409, {"message": "already exists", "reason": "AlreadyExists"})
            created["metadata"].setdefault("uid", f"uid-{len(self.objects)}")
            self.objects[key] = created
            return self._json(201, created)
        if method == "DELETE":
            if path not in self.objects:
                return self._json(404, {"message": "not found"})
            options = body if isinstance(body, dict) else json.loads(body or "{}")
            uid = (options.get("preconditions") or {}).get("uid")
            if uid is not None and self.objects[path]["metadata"].get("uid") != uid:
                return self._json(409, {"message": "Precondition failed: UID in precondition"})
            return self._json(200, self.objects.pop(path))
        if method == "PATCH" and path.endswith("/status"):
            obj = self.objects[path.removesuffix("/status")]
            patch = body if isinstance(body, dict) else json.loads(body)
            obj["status"] = _merge_patch(obj.get("status") or {}, patch["status"])
            return self._json(200, obj)
        if method == "PATCH" and isinstance(body, dict):  # JSON merge patch of the spec
            return self._merge_spec(path, body)
        if method == "PATCH":
            applied = json.loads(body)
            live = self.objects.get(path)
            obj = copy.deepcopy(applied)
            obj["metadata"].setdefault("uid", f"uid-{len(self.objects)}")
            if live is not None:
                obj["status"] = live.get("status")
            self.objects[path] = obj
            return self._json(200 if live else 201, obj)
        raise AssertionError(f"unexpected {method} {path}")

    def _merge_spec(self, path: str, body: dict[str, Any]) -> FakeResponse:
        merged = self.objects[path]
        merged["spec"] = {**merged.get("spec", {}), **body.get("spec", {})}
        return self._json(200, merged)

    @staticmethod
    def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> FakeResponse:
        return FakeResponse(status, json.dumps(doc).encode(), headers or {})

    def close(self) -> None:
        self.closed = True


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies one: None removes a key, mappings
    merge key by key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


@dataclass
class CoOwnedPorts(FakeApi):
    """Server-side apply as the API server does it on a list-map (`Service.spec.ports`): an
    entry another field manager added stays after our forced apply; `resourceVersion` moves
    only when the stored object changes (a no-op apply writes nothing)."""

    foreign: dict[str, Any] | None = None
    """The port entry another manager added (None: none yet)."""
    version: int = 1

    @override
    def call_api(
        self, method: str, url: str, headers: Any, body: Any, post: Any, **kw: Any
    ) -> FakeResponse:
        path = url.split("?", 1)[0]
        before = copy.deepcopy(self.objects.get(path))
        response = super().call_api(method, url, headers, body, post, **kw)
        obj = self.objects.get(path)
        if method == "PATCH" and obj is not None and self.foreign is not None:
            ports = obj["spec"].setdefault("ports", [])
            if self.foreign not in ports:
                ports.insert(0, copy.deepcopy(self.foreign))
            if _without_version(before) != _without_version(obj):
                self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
            response.data = json.dumps(obj).encode()
        return response


def _without_version(obj: dict[str, Any] | None) -> dict[str, Any]:
    out = copy.deepcopy(obj or {})
    out.get("metadata", {}).pop("resourceVersion", None)
    return out
