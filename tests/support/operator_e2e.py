"""Shared code of the operator's e2e tests and benchmark: kubeconfigs, waits, the LWS stand-in.

`LwsStatusStandIn` is TEST-ONLY: there is no LeaderWorkerSet controller on the test control
plane (and no kubelet to run its pods), so it only writes what the LWS controller would report in
a LeaderWorkerSet's status once its groups are up. Nothing else in the flow is faked.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from tests.support.cluster import REPO_ROOT, ControlPlane

Json = dict[str, Any]
GROUP, VERSION, PLURAL = "dsv4.io", "v1alpha1", "deepseekv4deployments"
LWS = ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets")


def plane_credentials(plane: ControlPlane) -> tuple[str, str, str]:
    """(server URL, bearer token, CA file) of the plane's admin kubeconfig."""
    doc = yaml.safe_load(plane.kubeconfig.read_text())
    cluster = doc["clusters"][0]["cluster"]
    return cluster["server"], doc["users"][0]["user"]["token"], cluster["certificate-authority"]


def write_kubeconfig(path: Path, server: str, token: str, ca_file: str | None = None) -> Path:
    """Write a one-context kubeconfig (CA only for https servers)."""
    cluster: Json = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = ca_file
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def operator_env(kubeconfig: Path, **settings: object) -> dict[str, str]:
    """Environment for an operator process: KUBECONFIG and `DSV4_OPERATOR_*` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSV4_OPERATOR_")}
    env["KUBECONFIG"] = str(kubeconfig)
    for name, value in settings.items():
        env[f"DSV4_OPERATOR_{name.upper()}"] = str(value)
    return env


@contextmanager
def operator_process(
    env: Mapping[str, str], *args: str, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`dsv4 operator run ARGS` as a child process (killed, if still running, on exit).

    Its output goes to `log` (appended), or is discarded: never to an unread pipe, which fills
    up and blocks the operator's logging.
    """
    dsv4 = Path(sys.executable).parent / "dsv4"
    sink = open(log, "ab") if log is not None else open(os.devnull, "wb")  # noqa: SIM115
    with sink:
        proc = subprocess.Popen(
            [str(dsv4), "operator", "run", *args],
            env=dict(env),
            cwd=REPO_ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll `predicate` every 0.2 s until it returns something truthy; return that.

    Raises:
        TimeoutError: still falsy after `timeout` seconds; the message names `what`.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not true after {timeout} s")
        time.sleep(0.2)


class Cluster:
    """Reads and writes the test objects through the Python client."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.errors = client.ApiException
        self.custom: Any = client.CustomObjectsApi(api_client)
        self.core: Any = client.CoreV1Api(api_client)

    def _raw(self, method: str, path: str) -> Any:
        response = self.api_client.call_api(
            *self.api_client.param_serialize(
                method=method,
                resource_path=path,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
            )
        )
        response.read()
        if response.status == 404:
            return None
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}: {response.data!r}")
        return json.loads(response.data)

    def get(self, api_version: str, plural: str, namespace: str, name: str) -> Json | None:
        """Any namespaced object by apiVersion and plural; None when absent."""
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        found: Json | None = self._raw("GET", f"{base}/namespaces/{namespace}/{plural}/{name}")
        return found

    def objects(self, api_version: str, plural: str, namespace: str) -> list[Json]:
        """All objects of a kind in a namespace."""
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        found = self._raw("GET", f"{base}/namespaces/{namespace}/{plural}") or {}
        items: list[Json] = found.get("items", [])
        return items

    def dsv4(self, namespace: str, name: str) -> Json | None:
        """The DeepSeekV4Deployment, or None."""
        return self.get(f"{GROUP}/{VERSION}", PLURAL, namespace, name)

    def condition(self, namespace: str, name: str, ctype: str) -> Json:
        """The condition of that type ({} when absent or the object is gone)."""
        body = self.dsv4(namespace, name) or {}
        for c in (body.get("status") or {}).get("conditions") or []:
            if c.get("type") == ctype:
                return dict(c)
        return {}

    def wait_condition(
        self,
        namespace: str,
        name: str,
        ctype: str,
        status: str,
        reason: str | None = None,
        timeout: float = 30,
    ) -> Json:
        """Wait until condition `ctype` has `status` (and `reason`); return it."""

        def check() -> Json | None:
            c = self.condition(namespace, name, ctype)
            ok = c.get("status") == status and (reason is None or c.get("reason") == reason)
            return c if ok else None

        found: Json = wait_until(check, f"{namespace}/{name} {ctype}={status} {reason}", timeout)
        return found

    def events(self, namespace: str, name: str) -> list[Json]:
        """Events whose involvedObject is the named DeepSeekV4Deployment."""
        return [
            e
            for e in self.objects("v1", "events", namespace)
            if e.get("involvedObject", {}).get("name") == name
            and e.get("involvedObject", {}).get("kind") == "DeepSeekV4Deployment"
        ]


def wait_event(
    cluster: Cluster, namespace: str, name: str, reason: str, text: str = "", timeout: float = 30
) -> Json:
    """Wait for an Event on the DeepSeekV4Deployment with `reason` whose message has `text`.

    kopf posts Events from a queue, so they may land a moment after the status they go with.
    """

    def find() -> Json | None:
        for event in cluster.events(namespace, name):
            if event.get("reason") == reason and text in event.get("message", ""):
                return event
        return None

    found: Json = wait_until(find, f"Event {reason!r} on {namespace}/{name}", timeout)
    return found


class LwsStatusStandIn:
    """TEST-ONLY stand-in for the LWS controller: writes LeaderWorkerSet status, nothing else."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def report(self, namespace: str, name: str, ready: int | None = None) -> Json:
        """Report every group as created and updated, and `ready` (default: all) as ready."""
        lws = self.cluster.get("/".join(LWS[:2]), LWS[2], namespace, name)
        if lws is None:
            raise LookupError(f"no LeaderWorkerSet {namespace}/{name}")
        replicas = int(lws["spec"].get("replicas", 1))
        status = {
            "replicas": replicas,
            "readyReplicas": replicas if ready is None else ready,
            "updatedReplicas": replicas,
            "hpaPodSelector": f"leaderworkerset.sigs.k8s.io/name={name}",
            "observedGeneration": lws["metadata"].get("generation", 1),
        }
        patched: Json = self.cluster.custom.patch_namespaced_custom_object_status(
            LWS[0], LWS[1], namespace, LWS[2], name, {"status": status}
        )
        return patched


def apiserver_write_counts(plane: ControlPlane, resources: set[str]) -> dict[str, int]:
    """Successful (2xx) POST/PUT/PATCH requests on `resources` by verb/resource/subresource, from
    the apiserver's `apiserver_request_total`: every writer counts, not only the operator.

    DELETE is left out: the operator never deletes (the garbage collector and the namespace
    controller do, e.g. while earlier tests' namespaces are being removed).
    """
    text = plane.kubectl("get", "--raw", "/metrics").stdout
    total: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(
            part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(",")
        )
        verb = labels.get("verb", "").strip('"')
        resource = labels.get("resource", "").strip('"')
        code = labels.get("code", "").strip('"')
        write = verb in {"POST", "PUT", "PATCH", "APPLY"} and code.startswith("2")
        if write and resource in resources:
            key = f"{verb} {resource}/{labels.get('subresource', '').strip(chr(34))}"
            total[key] = total.get(key, 0) + int(float(line.rsplit(" ", 1)[1]))
    return total


def crds_for_local_plane() -> list[Json]:
    """The DeepSeekV4Deployment CRD (`crds/`) and the upstream LWS CRD, adapted to the 1.20 server.

    As the e2e fixtures do (test-cluster.md §2.8): CEL rules dropped from both; the LWS CRD also
    loses empty-string defaults and list-map keys. For the local plane only, never for a cluster.
    """
    from tests.support.cluster import load_upstream_crd, transform_crd_for_1_20

    lws, _ = transform_crd_for_1_20(
        load_upstream_crd("leaderworkerset.x-k8s.io_leaderworkersets.yaml")
    )
    generated = yaml.safe_load(
        next((REPO_ROOT / "crds").glob("*deepseekv4deployments*.yaml")).read_text()
    )
    ours, _ = transform_crd_for_1_20(generated, drop_empty_defaults=False, atomic_list_maps=False)
    return [ours, lws]


def _install_crds_main() -> int:
    """`python -m tests.support.operator_e2e install-crds`: apply both CRDs with `kubectl`.

    With `--force-conflicts`: this is how the README restores this repository's CRD after
    another manager applied an older one (the operator then stops, naming the missing fields).
    """
    docs = yaml.safe_dump_all(crds_for_local_plane(), sort_keys=False)
    apply = ["kubectl", "apply", "--server-side", "--force-conflicts"]
    apply += ["--field-manager", "dsv4-local", "-f", "-"]
    done = subprocess.run(apply, input=docs, text=True, check=False)
    return done.returncode


LOCAL_CHART_KUBE_VERSION = ">=1.20.0-0"
"""Chart.yaml `kubeVersion` of the local-plane chart copy: the plane runs kube-apiserver 1.20.2
(hack/cluster.sh), which the chart's own `>=1.25.0-0` (for its CEL rules) refuses."""


def local_chart(dest: Path) -> Path:
    """Write `dest/dsv4-operator`: the chart, installable on the local 1.20 control plane.

    The same chart with its CRD's CEL rules dropped (as `crds_for_local_plane` does) and
    Chart.yaml `kubeVersion` set to `LOCAL_CHART_KUBE_VERSION`; templates and values unchanged.
    As the e2e tests install it (tests/e2e/test_chart.py). For the local plane only, never for
    a cluster: the CEL rules are the CRD's admission checks.

    Args:
        dest: a folder (created if missing) that must not hold a `dsv4-operator` already.

    Returns:
        The copy's folder, `dest/dsv4-operator`.

    Raises:
        FileExistsError: `dest/dsv4-operator` exists.
    """
    from tests.support.cluster import transform_crd_for_1_20

    chart = REPO_ROOT / "charts" / "dsv4-operator"
    target = dest / chart.name
    if target.exists():
        raise FileExistsError(f"{target} exists: remove it or pass another folder")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(chart, target)
    chart_yaml = target / "Chart.yaml"
    meta = yaml.safe_load(chart_yaml.read_text(encoding="utf-8"))
    meta["kubeVersion"] = LOCAL_CHART_KUBE_VERSION
    chart_yaml.write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    for crd_file in (target / "crds").glob("*.yaml"):
        crd, _ = transform_crd_for_1_20(
            yaml.safe_load(crd_file.read_text(encoding="utf-8")),
            drop_empty_defaults=False,
            atomic_list_maps=False,
        )
        crd_file.write_text(yaml.safe_dump(crd, sort_keys=False), encoding="utf-8")
    return target


_USAGE = (
    "usage: python -m tests.support.operator_e2e install-crds\n"
    "       python -m tests.support.operator_e2e local-chart DIR"
    "   (writes DIR/dsv4-operator, the chart for the local 1.20 control plane)"
)


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["install-crds"]:
            raise SystemExit(_install_crds_main())
        case ["local-chart", folder]:
            try:
                print(local_chart(Path(folder)))
            except FileExistsError as exc:
                print(f"error: {exc}", file=sys.stderr)
                raise SystemExit(1) from exc
            raise SystemExit(0)
        case _:
            print(_USAGE, file=sys.stderr)
            raise SystemExit(2)


def collect_leaked_transports() -> None:
    """Garbage-collect asyncio transports left open by a stopped event loop, without warnings.

    kopf (under KopfRunner) and aiohttp stop their loops with a few keep-alive connections to
    the apiserver still open; their `__del__` then warns (ResourceWarning) at some later,
    unrelated point of the session, which `filterwarnings = error` turns into a failure. They
    are collected here, right after the loop stopped, with that one warning silenced.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
