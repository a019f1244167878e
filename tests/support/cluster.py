"""Test-side handle on the local control plane that `hack/cluster.sh` builds and starts.

The control plane is real: kube-apiserver 1.20.2 + etcd 3.4 + kube-controller-manager 1.20.2 on
127.0.0.1, with the official kubectl 1.35 and helm 4 binaries, all in `$DSV4_CACHE/bin`
(see `../shared/docs/test-cluster.md` §2 and `hack/cluster.sh`). There is no scheduler and no
kubelet: `KubeletStandIn` (test-only) binds Pending pods to fake Nodes and reports them Running and
Ready, which is what a kubelet would report (test-cluster.md §2.6).

This module holds no pytest fixtures (those are in `tests/e2e/conftest.py`); it is plain code that
fixtures and tests share.
"""

from __future__ import annotations

import copy
import json
import os
import random
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO_ROOT / "hack" / "cluster.sh"
CONTROL_PLANE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")

Json = dict[str, Any]
# libyaml's safe loader when present: the LWS CRD is 18k lines (≈1.5 s with the pure-Python one).
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def cache_dir() -> Path:
    """The build cache root: `$DSV4_CACHE`, default `~/.cache/dsv4` (as in hack/cluster.sh)."""
    return Path(os.environ.get("DSV4_CACHE") or Path.home() / ".cache" / "dsv4")


def bin_dir() -> Path:
    """The folder holding etcd, kube-apiserver, kube-controller-manager, kubectl and helm."""
    return cache_dir() / "bin"


def fixtures_dir() -> Path:
    """Upstream fixtures: `$DSV4_FIXTURES`, default `../shared/fixtures` from the repo root."""
    return Path(os.environ.get("DSV4_FIXTURES") or REPO_ROOT.parent / "shared" / "fixtures")


def missing_binaries() -> list[str]:
    """Paths of the control-plane binaries that are absent or not executable (empty when ready)."""
    return [
        str(bin_dir() / name)
        for name in CONTROL_PLANE_BINARIES
        if not os.access(bin_dir() / name, os.X_OK)
    ]


def free_port_block(low: int = 20000, high: int = 60000, attempts: int = 200) -> int:
    """Find P such that 127.0.0.1 ports P .. P+3 are all free right now.

    kube-apiserver listens on P, etcd on P+1 (clients) and P+2 (peers), the CEL CRD server (when
    started) on P+3.

    Raises:
        RuntimeError: no free block found after `attempts` random tries.
    """
    rng = random.Random()
    for _ in range(attempts):
        port = rng.randrange(low, high - 3)
        socks: list[socket.socket] = []
        try:
            for offset in range(4):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return port
    raise RuntimeError(f"no four consecutive free ports in [{low}, {high}) after {attempts} tries")


class KubectlError(RuntimeError):
    """A kubectl (or helm) command exited non-zero; the message holds its command and stderr."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(f"{' '.join(args)} -> rc {returncode}\n{stderr.strip()}")
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


@dataclass
class ControlPlane:
    """A running local control plane and the tools to talk to it.

    Attributes:
        state_dir: folder with the kubeconfig, certificates, logs and PID files.
        port: the kube-apiserver's port on 127.0.0.1 (etcd uses port+1 and port+2).
        kubeconfig: admin kubeconfig (token in group system:masters, namespace `default`).
        kubectl_path: the kubectl binary (1.35).
        helm_path: the helm binary (4.x).
        startup_seconds: wall time from `start` to `kubectl get ns default` answering.
    """

    state_dir: Path
    port: int
    kubeconfig: Path
    kubectl_path: Path
    helm_path: Path
    startup_seconds: float = 0.0
    _env: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def start(cls, state_dir: Path, *, controller_manager: bool = True) -> ControlPlane:
        """Start etcd + kube-apiserver (+ kube-controller-manager) on free loopback ports.

        Waits until `kubectl get ns default` succeeds (hack/cluster.sh start). The processes are
        tied to this Python process: if it dies without calling `stop`, a watchdog stops them.

        Raises:
            FileNotFoundError: a binary is missing (run `make cluster`).
            RuntimeError: the control plane did not come up; the message holds the script output.
        """
        if missing := missing_binaries():
            raise FileNotFoundError(f"missing {', '.join(missing)} (run: make cluster)")
        port = free_port_block()
        env = {
            **os.environ,
            "DSV4_CACHE": str(cache_dir()),
            "DSV4_CLUSTER_DIR": str(state_dir),
            "DSV4_CLUSTER_PORT": str(port),
            "DSV4_CLUSTER_CM": "1" if controller_manager else "0",
            "DSV4_CLUSTER_WATCH_PID": str(os.getpid()),
        }
        t0 = time.monotonic()
        proc = subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), "start"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"hack/cluster.sh start failed (rc {proc.returncode}):\n{proc.stderr}"
            )
        plane = cls(
            state_dir=state_dir,
            port=port,
            kubeconfig=state_dir / "kubeconfig",
            kubectl_path=bin_dir() / "kubectl",
            helm_path=bin_dir() / "helm",
            startup_seconds=time.monotonic() - t0,
            _env=env,
        )
        return plane

    def script(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `hack/cluster.sh COMMAND` with this plane's settings (state folder, ports)."""
        return subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), command],
            env=self._env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop(self) -> None:
        """Stop exactly the processes this control plane started (hack/cluster.sh stop)."""
        self.script("stop", timeout=60)

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses: KUBECONFIG set, `$DSV4_CACHE/bin` first on PATH."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def pids(self) -> dict[str, int]:
        """PIDs of the running components, by binary name (from the state folder)."""
        out: dict[str, int] = {}
        for name in (
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "apiextensions-apiserver",
        ):
            pid_file = self.state_dir / f"{name}.pid"
            if pid_file.exists():
                out[name] = int(pid_file.read_text().strip())
        return out

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running component in bytes (VmRSS from /proc)."""
        out: dict[str, int] = {}
        for name, pid in self.pids().items():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    out[name] = int(line.split()[1]) * 1024
        return out

    def run_tool(
        self,
        tool: Path,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl or helm against this control plane.

        Raises:
            KubectlError: the command exited non-zero and `check` is true.
        """
        argv = [str(tool), *args]
        proc = subprocess.run(
            argv,
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise KubectlError(argv, proc.returncode, proc.stdout, proc.stderr)
        return proc

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run `kubectl --kubeconfig <ours> ARGS...`; raise KubectlError on failure if `check`."""
        return self.run_tool(
            self.kubectl_path,
            "--kubeconfig",
            str(self.kubeconfig),
            *args,
            stdin=stdin,
            check=check,
            timeout=timeout,
        )

    def kubectl_json(self, *args: str) -> Json:
        """Run `kubectl ARGS... -o json` and parse the output."""
        out: Json = json.loads(self.kubectl(*args, "-o", "json").stdout)
        return out

    def apply(self, *objects: Mapping[str, Any], namespace: str | None = None) -> str:
        """`kubectl apply --server-side` the given objects (field manager `dsv4-e2e`); stdout."""
        ns = ["-n", namespace] if namespace else []
        docs = json.dumps({"apiVersion": "v1", "kind": "List", "items": [dict(o) for o in objects]})
        args = ["apply", "--server-side", "--field-manager", "dsv4-e2e", *ns, "-f", "-"]
        return self.kubectl(*args, stdin=docs).stdout

    def helm(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run `helm --kubeconfig <ours> ARGS...`; raise KubectlError on failure if `check`."""
        return self.run_tool(
            self.helm_path,
            "--kubeconfig",
            str(self.kubeconfig),
            *args,
            stdin=stdin,
            check=check,
            timeout=timeout,
        )

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path, duration_seconds: int = 3600
    ) -> Path:
        """Write a kubeconfig at `path` that authenticates as ServiceAccount `namespace/name`.

        The token is a real one from the TokenRequest API (`kubectl create token`), so every
        client (kubectl, helm, the kubernetes Python client, kopf) runs with exactly that
        ServiceAccount's RBAC permissions — stronger than `--as` impersonation, which needs the
        admin's credentials and only some clients support. The ServiceAccount must exist.
        """
        token = self.kubectl(
            "create", "token", name, "-n", namespace, "--duration", f"{duration_seconds}s"
        ).stdout.strip()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "dsv4-local",
                    "cluster": {
                        "server": f"https://127.0.0.1:{self.port}",
                        "certificate-authority": str(self.state_dir / "certs" / "apiserver.crt"),
                    },
                }
            ],
            "users": [{"name": f"{namespace}-{name}", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "sa",
                    "context": {
                        "cluster": "dsv4-local",
                        "user": f"{namespace}-{name}",
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "sa",
        }
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def api_client(self) -> Any:
        """A new `kubernetes.client.ApiClient` for this control plane; close it when done."""
        from kubernetes import config

        new_client: Any = config.new_client_from_config  # untyped in the kubernetes package
        return new_client(config_file=str(self.kubeconfig))

    def wait_for(
        self,
        predicate: Callable[[], bool],
        what: str,
        timeout: float = 30,
        interval: float = 0.2,
    ) -> float:
        """Poll `predicate` until it is true; return the seconds it took.

        Raises:
            TimeoutError: still false after `timeout` seconds; the message names `what`.
        """
        t0 = time.monotonic()
        while True:
            if predicate():
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{what}: not true after {timeout} s")
            time.sleep(interval)

    def wait_crd_established(self, *names: str, timeout: float = 30) -> None:
        """Wait until each named CRD reports condition Established=True.

        Polls instead of `kubectl wait`, which (kubectl 1.35) fails at once while a new CRD has no
        `status.conditions` yet.

        Raises:
            TimeoutError: a CRD is not established after `timeout` seconds.
        """

        def established() -> bool:
            got = self.kubectl("get", "crd", *names, "-o", "json", check=False)
            if got.returncode != 0:
                return False
            doc = json.loads(got.stdout)
            items = doc.get("items", []) if doc.get("kind") == "List" else [doc]
            return len(items) == len(names) and all(
                any(
                    c.get("type") == "Established" and c.get("status") == "True"
                    for c in (item.get("status") or {}).get("conditions") or []
                )
                for item in items
            )

        self.wait_for(established, f"CRDs {', '.join(names)} established", timeout=timeout)

    def served_api_version(self, group: str, kind: str, candidates: Sequence[str]) -> str | None:
        """The first of `candidates` (e.g. ["v1", "v1beta1"]) in which `group` serves `kind`.

        Uses API discovery (`/apis/GROUP/VERSION`), so tests do not hard-code what the 1.20 test
        server serves (policy/v1beta1 PDB, autoscaling/v2beta2 HPA) versus current clusters
        (policy/v1, autoscaling/v2). Returns "group/version", or None when none is served.
        """
        served = set(self.kubectl("api-versions").stdout.split())
        for version in candidates:
            group_version = f"{group}/{version}" if group else version
            if group_version not in served:
                continue
            path = f"/apis/{group_version}" if group else f"/api/{version}"
            resources = json.loads(self.kubectl("get", "--raw", path).stdout)["resources"]
            if any(r["kind"] == kind and "/" not in r["name"] for r in resources):
                return group_version
        return None

    def pdb_api_version(self) -> str:
        """PodDisruptionBudget's apiVersion on this server (policy/v1, else policy/v1beta1)."""
        found = self.served_api_version("policy", "PodDisruptionBudget", ["v1", "v1beta1"])
        if found is None:
            raise LookupError("the server serves no PodDisruptionBudget API")
        return found

    def hpa_api_version(self) -> str:
        """HorizontalPodAutoscaler's apiVersion (autoscaling/v2, else v2beta2, else v1)."""
        found = self.served_api_version(
            "autoscaling", "HorizontalPodAutoscaler", ["v2", "v2beta2", "v1"]
        )
        if found is None:
            raise LookupError("the server serves no HorizontalPodAutoscaler API")
        return found


# ---------------------------------------------------------------------------------------------
# Upstream CRDs on the 1.20 test server (test-cluster.md §2.8)

UPSTREAM_CRD_FILES = (
    "leaderworkerset.x-k8s.io_leaderworkersets.yaml",
    "keda.sh_scaledobjects.yaml",
    "monitoring.coreos.com_servicemonitors.yaml",
    "monitoring.coreos.com_podmonitors.yaml",
)


@dataclass
class TransformReport:
    """What `transform_crd_for_1_20` changed: counts of each of the three edits."""

    validations_dropped: int = 0
    empty_defaults_dropped: int = 0
    list_map_keys_made_atomic: int = 0


def transform_crd_for_1_20(
    crd: Mapping[str, Any],
    *,
    drop_empty_defaults: bool = True,
    atomic_list_maps: bool = True,
) -> tuple[Json, TransformReport]:
    """A copy of an upstream CRD that Kubernetes 1.20 accepts (test-cluster.md §2.8).

    Three edits, applied throughout every version's schema:
      1. drop every `x-kubernetes-validations` key (1.20 has no CEL; CEL is checked offline);
      2. drop every `default` whose value is "" or null (1.20 refuses empty-string defaults on
         object-reference `name` fields);
      3. where a list declares `x-kubernetes-list-map-keys`, drop the keys and make the list
         `x-kubernetes-list-type: atomic` (1.20 requires map keys to be required or defaulted).

    Edits 2 and 3 can be turned off (`drop_empty_defaults`, `atomic_list_maps`) to apply only
    what a given CRD needs; edit 1 is always made. The input is not modified. Only for the test
    server: validate rendered objects against the
    untransformed schema offline, so that this looser copy hides nothing.
    """
    out: Json = copy.deepcopy(dict(crd))
    report = TransformReport()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.pop("x-kubernetes-validations", None) is not None:
                report.validations_dropped += 1
            if drop_empty_defaults and "default" in node and node["default"] in ("", None):
                del node["default"]
                report.empty_defaults_dropped += 1
            if atomic_list_maps and node.pop("x-kubernetes-list-map-keys", None) is not None:
                node["x-kubernetes-list-type"] = "atomic"
                report.list_map_keys_made_atomic += 1
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for version in out.get("spec", {}).get("versions", []):
        walk(version.get("schema"))
    return out, report


def namespaced_crd(group: str, kind: str, plural: str, schema: Json, **version: Any) -> Json:
    """A CustomResourceDefinition serving and storing one version, `v1`, of a namespaced `kind`.

    Args:
        group: API group, e.g. `e2e.dsv4.io`.
        kind: e.g. `Widget` (singular: its lowercase).
        plural: e.g. `widgets`.
        schema: the version's `openAPIV3Schema`.
        **version: more fields of the version, e.g. `subresources={"status": {}}`.
    """
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    **version,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def load_upstream_crd(file_name: str) -> Json:
    """Read one upstream CRD from `$DSV4_FIXTURES/crds/` (untransformed)."""
    path = fixtures_dir() / "crds" / file_name
    loaded: Json = yaml.load(path.read_text(), Loader=_YAML_LOADER)
    return loaded


@dataclass(frozen=True)
class InstalledCrd:
    """The generated CRD as installed on the 1.20 test server.

    Attributes:
        name: the CRD's name (`deepseekv4deployments.dsv4.io`).
        path: the generated file in `crds/`.
        generated: the file's CRD, untouched.
        installed: what was sent to the server: `generated` minus `x-kubernetes-validations`
            (1.20 has no CEL: its typed server-side apply refuses the unknown field, and kubectl's
            client-side check too). The CEL rules are tested offline with a Python CEL evaluator.
        cel_rules_dropped: how many `x-kubernetes-validations` lists were removed.
    """

    name: str
    path: Path
    generated: Json
    installed: Json
    cel_rules_dropped: int


# ---------------------------------------------------------------------------------------------
# Kubelet stand-in (test-only)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class KubeletStandIn:
    """TEST-ONLY stand-in for a scheduler + kubelet: no containers ever run.

    Creates `Node` objects with GPU capacity and labels, binds Pending pods to a Node whose labels
    match the pod's `nodeSelector` (POST `pods/NAME/binding`), then reports them as a kubelet
    would: `status.phase: Running` and conditions PodScheduled/Initialized/ContainersReady/Ready
    True, through the pod's status subresource (test-cluster.md §2.6). The control plane runs the
    controller-manager without the node-lifecycle controller, so these Nodes never turn NotReady.
    """

    def __init__(self, plane: ControlPlane) -> None:
        from kubernetes import client

        self._client_mod = client
        self.api_client = plane.api_client()
        # Any: the stand-in sends plain dict bodies and reads replies loosely.
        self.core: Any = client.CoreV1Api(self.api_client)
        self.nodes: dict[str, dict[str, str]] = {}

    def close(self) -> None:
        """Close the API client."""
        self.api_client.close()

    def add_node(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        gpus: int = 8,
        cpu: str = "96",
        memory: str = "1024Gi",
    ) -> None:
        """Create (or keep) a Ready Node with `gpus` × `nvidia.com/gpu` capacity and `labels`."""
        all_labels = {"kubernetes.io/hostname": name, **(labels or {})}
        capacity = {"cpu": cpu, "memory": memory, "pods": "110", "nvidia.com/gpu": str(gpus)}
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": all_labels},
        }
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletStandIn",
                    "message": "test-only kubelet stand-in",
                    "lastHeartbeatTime": _utc_now(),
                    "lastTransitionTime": _utc_now(),
                }
            ],
        }
        try:
            self.core.create_node(body)
        except self._client_mod.ApiException as exc:
            if exc.status != 409:
                raise
        self.core.patch_node_status(name, {"status": status})
        self.nodes[name] = all_labels

    def _pick_node(self, pod: Any) -> str | None:
        selector: dict[str, str] = pod.spec.node_selector or {}
        for node, labels in self.nodes.items():
            if all(labels.get(k) == v for k, v in selector.items()):
                return node
        return None

    def run_pending(self, namespace: str) -> list[str]:
        """Bind and start every Pending, unbound pod in `namespace` that fits a Node.

        Returns the names of the pods it started (pods whose nodeSelector matches no Node stay
        Pending, as with a real scheduler). Also finishes the deletion of bound pods that are
        terminating (`reap_terminating`), as a kubelet would once their containers stopped.
        """
        started: list[str] = []
        self.reap_terminating(namespace)
        pods = self.core.list_namespaced_pod(namespace).items
        for pod in pods:
            if pod.metadata.deletion_timestamp is not None:
                continue
            node = pod.spec.node_name
            if node is None:
                node = self._pick_node(pod)
                if node is None:
                    continue
                binding = {
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": pod.metadata.name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node},
                }
                # The client cannot deserialize the Binding reply (known client bug): raw reply.
                self.core.create_namespaced_binding(
                    namespace, binding, _preload_content=False
                ).release_conn()
            if pod.status.phase == "Running" and _is_ready(pod):
                continue
            self.core.patch_namespaced_pod_status(
                pod.metadata.name, namespace, {"status": self._running_status(pod)}
            )
            started.append(pod.metadata.name)
        return started

    def reap_terminating(self, namespace: str) -> list[str]:
        """Delete, with grace period 0, every bound pod in `namespace` that is terminating.

        Without a kubelet, a pod bound to a Node stays `Terminating` forever after its deletion
        (the API server waits for the kubelet's final delete); this is that final delete.
        Returns the names of the pods it removed.
        """
        reaped: list[str] = []
        for pod in self.core.list_namespaced_pod(namespace).items:
            if pod.metadata.deletion_timestamp is None or pod.spec.node_name is None:
                continue
            try:
                self.core.delete_namespaced_pod(
                    pod.metadata.name, namespace, grace_period_seconds=0
                )
            except self._client_mod.ApiException as exc:
                if exc.status != 404:
                    raise
            reaped.append(pod.metadata.name)
        return reaped

    def _running_status(self, pod: Any) -> Json:
        now = _utc_now()
        conditions = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        containers = [
            {
                "name": c.name,
                "image": c.image,
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in pod.spec.containers
        ]
        return {
            "phase": "Running",
            "conditions": conditions,
            "containerStatuses": containers,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "startTime": now,
        }


def _is_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def iter_yaml_documents(path: Path) -> Iterator[Json]:
    """The non-empty YAML documents in `path`."""
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            yield doc
