"""Smoke tests of the local control plane itself (hack/cluster.sh, tests/support/cluster.py).

They show that what the other e2e tests rely on is real: CRD validation, server-side apply of the
upstream LeaderWorkerSet CRD, the controller-manager's garbage collector and Deployment
controller, RBAC with impersonation, API discovery, and the test-only kubelet stand-in.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from tests.support.cel_server import cel_server_unavailable
from tests.support.cluster import (
    CLUSTER_SCRIPT,
    ControlPlane,
    KubectlError,
    KubeletStandIn,
    bin_dir,
    free_port_block,
    load_upstream_crd,
    namespaced_crd,
    transform_crd_for_1_20,
)

WIDGET_CRD: dict[str, Any] = namespaced_crd(
    "e2e.dsv4.io",
    "Widget",
    "widgets",
    {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {"size": {"type": "integer", "minimum": 1, "maximum": 10}},
            },
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
        },
    },
    subresources={"status": {}},
)


def widget(name: str, size: Any) -> dict[str, Any]:
    return {
        "apiVersion": "e2e.dsv4.io/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size},
    }


@pytest.fixture(scope="module")
def widget_crd(control_plane: ControlPlane) -> str:
    control_plane.apply(WIDGET_CRD)
    control_plane.wait_crd_established("widgets.e2e.dsv4.io")
    return "widgets.e2e.dsv4.io"


@pytest.mark.e2e
def test_control_plane_is_real(control_plane: ControlPlane) -> None:
    version = control_plane.kubectl_json("version")
    assert version["serverVersion"]["gitVersion"] == "v1.20.2"
    assert version["clientVersion"]["minor"] == "35"
    assert control_plane.helm("version", "--short").stdout.startswith("v4.")
    rss = control_plane.rss_bytes()
    # The CEL CRD server runs beside them once a test has asked for it (tests/e2e/test_crd_cel.py).
    assert set(rss) - {"apiextensions-apiserver"} == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
    }
    mib = {name: round(b / 2**20) for name, b in rss.items()}
    print(f"control plane ready in {control_plane.startup_seconds:.2f} s; RSS MiB {mib}")


@pytest.mark.e2e
def test_custom_resource_is_validated_by_the_schema(
    control_plane: ControlPlane, widget_crd: str, namespace: str
) -> None:
    control_plane.apply(widget("ok", 3), namespace=namespace)
    got = control_plane.kubectl_json("get", "widget", "ok", "-n", namespace)
    assert got["spec"] == {"size": 3}
    assert got["metadata"]["generation"] == 1

    with pytest.raises(KubectlError) as too_big:
        control_plane.apply(widget("big", 99), namespace=namespace)
    assert "spec.size" in too_big.value.stderr
    assert "less than or equal to 10" in too_big.value.stderr

    with pytest.raises(KubectlError) as wrong_type:
        control_plane.apply(widget("word", "three"), namespace=namespace)
    assert "spec.size" in wrong_type.value.stderr


@pytest.mark.e2e
def test_status_subresource_is_separate_from_spec(
    control_plane: ControlPlane, widget_crd: str, namespace: str
) -> None:
    control_plane.apply(widget("st", 2), namespace=namespace)
    patch = json.dumps({"status": {"phase": "Ready"}})
    # A main-resource patch of .status is ignored when the status subresource is enabled...
    control_plane.kubectl("patch", "widget", "st", "-n", namespace, "--type=merge", "-p", patch)
    assert "status" not in control_plane.kubectl_json("get", "widget", "st", "-n", namespace)
    # ...and the status subresource changes it without moving metadata.generation.
    control_plane.kubectl(
        "patch",
        "widget",
        "st",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    )
    got = control_plane.kubectl_json("get", "widget", "st", "-n", namespace)
    assert got["status"] == {"phase": "Ready"}
    assert got["metadata"]["generation"] == 1


def test_crd_transform_for_1_20_counts_the_three_edits() -> None:
    lws = load_upstream_crd("leaderworkerset.x-k8s.io_leaderworkersets.yaml")
    transformed, report = transform_crd_for_1_20(lws)
    # Figures of test-cluster.md §2.8 for this fixture: 66 empty defaults, 52 list-map lists.
    assert report.empty_defaults_dropped == 66
    assert report.list_map_keys_made_atomic == 52
    assert "x-kubernetes-list-map-keys" not in json.dumps(transformed)
    assert "x-kubernetes-list-map-keys" in json.dumps(lws), "the input must stay untouched"
    keda, keda_report = transform_crd_for_1_20(load_upstream_crd("keda.sh_scaledobjects.yaml"))
    assert keda_report.validations_dropped > 0
    assert "x-kubernetes-validations" not in json.dumps(keda)


@pytest.mark.e2e
def test_upstream_lws_crd_installs_and_lws_applies_server_side(
    control_plane: ControlPlane, upstream_crds: dict[str, Any], namespace: str
) -> None:
    assert set(upstream_crds) == {
        "leaderworkersets.leaderworkerset.x-k8s.io",
        "scaledobjects.keda.sh",
        "servicemonitors.monitoring.coreos.com",
        "podmonitors.monitoring.coreos.com",
    }
    lws: dict[str, Any] = {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": "smoke"},
        "spec": {
            "replicas": 2,
            "startupPolicy": "LeaderCreated",
            "leaderWorkerTemplate": {
                "size": 2,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "workerTemplate": {
                    "spec": {
                        "containers": [
                            {
                                "name": "worker",
                                "image": "example.invalid/worker:1",
                                "resources": {"limits": {"nvidia.com/gpu": "8"}},
                            }
                        ]
                    }
                },
            },
        },
    }
    control_plane.apply(lws, namespace=namespace)
    got = control_plane.kubectl_json(
        "get", "leaderworkerset", "smoke", "-n", namespace, "--show-managed-fields"
    )
    assert got["spec"]["leaderWorkerTemplate"]["size"] == 2
    managers = {f["manager"] for f in got["metadata"]["managedFields"]}
    assert managers == {"dsv4-e2e"}
    # A second manager that changes a field owned by dsv4-e2e conflicts (real SSA semantics).
    lws["spec"]["replicas"] = 3
    with pytest.raises(KubectlError) as conflict:
        control_plane.kubectl(
            "apply",
            "--server-side",
            "--field-manager",
            "intruder",
            "-n",
            namespace,
            "-f",
            "-",
            stdin=json.dumps(lws),
        )
    assert "conflict" in conflict.value.stderr.lower()
    # An unknown enum value is still rejected by the transformed schema.
    lws["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "Sometimes"
    with pytest.raises(KubectlError) as bad_enum:
        control_plane.apply(lws, namespace=namespace)
    assert "restartPolicy" in bad_enum.value.stderr


@pytest.mark.e2e
def test_scaledobject_and_servicemonitor_apply(
    control_plane: ControlPlane, upstream_crds: dict[str, Any], namespace: str
) -> None:
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "smoke"},
        "spec": {
            "scaleTargetRef": {"name": "smoke"},
            "minReplicaCount": 1,
            "maxReplicaCount": 4,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": "http://prometheus:9090",
                        "query": "sum(rate(vllm:generation_tokens_total[1m]))",
                        "threshold": "1000",
                    },
                }
            ],
        },
    }
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "smoke"},
        "spec": {
            "selector": {"matchLabels": {"app": "smoke"}},
            "endpoints": [{"port": "metrics", "interval": "15s"}],
        },
    }
    control_plane.apply(scaled, monitor, namespace=namespace)
    names = control_plane.kubectl(
        "get", "scaledobjects,servicemonitors", "-n", namespace, "-o", "name"
    ).stdout.split()
    assert sorted(names) == [
        "scaledobject.keda.sh/smoke",
        "servicemonitor.monitoring.coreos.com/smoke",
    ]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("types", "refusal"),
    # 1.16 MB: ConfigMap validation; 3.8 MB: over the API server's 3 MiB request limit first.
    [(2, "must have at most 1048576 bytes"), (6, "Request entity too large")],
)
def test_the_server_takes_the_config_map_of_a_plan_with_thousands_of_rejections(
    control_plane: ControlPlane, namespace: str, types: int, refusal: str
) -> None:
    """The rendered ConfigMap of a plan with thousands of rejected layouts is accepted; with the
    whole plan JSON the API server refuses it, as it did at every reconcile before."""
    from tests.operator.render.test_service import wide_config_map

    cm, full = wide_config_map(types)
    cm["metadata"]["namespace"] = namespace
    cm["metadata"].pop("ownerReferences")
    create = ["create", "--dry-run=server", "-o", "name", "-f", "-"]
    assert control_plane.kubectl(*create, stdin=json.dumps(cm)).stdout.startswith("configmap/")
    cm["data"]["plan.json"] = json.dumps(full, sort_keys=True, indent=1)
    refused = control_plane.kubectl(*create, stdin=json.dumps(cm), check=False)
    assert refused.returncode != 0
    assert refusal in refused.stderr


def test_garbage_collector_deletes_owned_child(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "configmap", "owner", "-n", namespace)
    owner_uid = control_plane.kubectl_json("get", "configmap", "owner", "-n", namespace)[
        "metadata"
    ]["uid"]
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
            ],
        },
        "data": {"k": "v"},
    }
    orphan = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unowned"}}
    control_plane.apply(child, orphan, namespace=namespace)
    control_plane.kubectl("delete", "configmap", "owner", "-n", namespace)

    def child_gone() -> bool:
        got = control_plane.kubectl("get", "configmap", "child", "-n", namespace, check=False)
        return got.returncode != 0 and "NotFound" in got.stderr

    seconds = control_plane.wait_for(child_gone, "child ConfigMap garbage-collected", timeout=60)
    print(f"child garbage-collected {seconds:.2f} s after the owner's deletion")
    # Only the owned object went.
    control_plane.kubectl("get", "configmap", "unowned", "-n", namespace)


@pytest.mark.e2e
def test_deployment_becomes_available_with_kubelet_standin(
    control_plane: ControlPlane, kubelet: KubeletStandIn, namespace: str
) -> None:
    kubelet.add_node("standin-h100-0", labels={"dsv4.io/gpu-type": "h100-80gb"}, gpus=8)
    control_plane.kubectl(
        "create", "deployment", "web", "-n", namespace, "--replicas=2", "--image=example.invalid/w"
    )
    # The controller-manager's Deployment and ReplicaSet controllers create two Pending pods.
    control_plane.wait_for(
        lambda: (
            len(kubelet.run_pending(namespace)) == 0
            and len(control_plane.kubectl_json("get", "pods", "-n", namespace)["items"]) == 2
            and all(
                p["status"].get("phase") == "Running"
                for p in control_plane.kubectl_json("get", "pods", "-n", namespace)["items"]
            )
        ),
        "two pods bound and Running",
        timeout=60,
    )
    pods = control_plane.kubectl_json("get", "pods", "-n", namespace)["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {"standin-h100-0"}
    control_plane.wait_for(
        lambda: (
            control_plane.kubectl_json("get", "deployment", "web", "-n", namespace)["status"].get(
                "availableReplicas"
            )
            == 2
        ),
        "deployment/web 2/2 available",
        timeout=60,
    )
    # Deleting a bound pod leaves it Terminating until the stand-in's final delete; the
    # ReplicaSet controller then creates a replacement that the stand-in starts again.
    victim = pods[0]["metadata"]["name"]
    control_plane.kubectl("delete", "pod", victim, "-n", namespace, "--wait=false")
    assert (
        "deletionTimestamp"
        in control_plane.kubectl_json("get", "pod", victim, "-n", namespace)["metadata"]
    )
    assert victim in kubelet.reap_terminating(namespace)

    def replaced() -> bool:
        kubelet.run_pending(namespace)
        items = control_plane.kubectl_json("get", "pods", "-n", namespace)["items"]
        names = {p["metadata"]["name"] for p in items}
        return (
            victim not in names
            and len(names) == 2
            and all(p["status"].get("phase") == "Running" for p in items)
        )

    control_plane.wait_for(replaced, "deleted pod replaced and Running", timeout=60)


@pytest.mark.e2e
def test_kubelet_standin_leaves_unmatched_pods_pending(
    control_plane: ControlPlane, kubelet: KubeletStandIn, namespace: str
) -> None:
    kubelet.add_node("standin-h100-0", labels={"dsv4.io/gpu-type": "h100-80gb"}, gpus=8)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "wants-h200"},
        "spec": {
            "nodeSelector": {"dsv4.io/gpu-type": "h200-141gb"},
            "containers": [{"name": "c", "image": "example.invalid/w"}],
        },
    }
    control_plane.apply(pod, namespace=namespace)
    assert kubelet.run_pending(namespace) == []
    got = control_plane.kubectl_json("get", "pod", "wants-h200", "-n", namespace)
    assert got["status"]["phase"] == "Pending"
    assert "nodeName" not in got["spec"]


@pytest.mark.e2e
def test_rbac_impersonation(control_plane: ControlPlane, namespace: str) -> None:
    sa = f"system:serviceaccount:{namespace}:op"

    def can_i(*args: str) -> str:
        out = control_plane.kubectl(
            "auth", "can-i", *args, "-n", namespace, "--as", sa, check=False
        )
        return out.stdout.strip()

    assert can_i("create", "configmaps") == "no"
    control_plane.kubectl("create", "serviceaccount", "op", "-n", namespace)
    control_plane.kubectl(
        "create", "role", "cm-writer", "-n", namespace, "--verb=create,get", "--resource=configmaps"
    )
    control_plane.kubectl(
        "create",
        "rolebinding",
        "op-cm",
        "-n",
        namespace,
        "--role=cm-writer",
        f"--serviceaccount={namespace}:op",
    )
    assert can_i("create", "configmaps") == "yes"
    assert can_i("delete", "configmaps") == "no"
    assert can_i("create", "pods") == "no"
    # Impersonation also applies to real requests, not only to the access review.
    denied = control_plane.kubectl("get", "pods", "-n", namespace, "--as", sa, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()


@pytest.mark.e2e
def test_service_account_token_kubeconfig_has_only_its_rbac(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    control_plane.kubectl("create", "serviceaccount", "op", "-n", namespace)
    control_plane.kubectl(
        "create", "role", "cm-writer", "-n", namespace, "--verb=create,get", "--resource=configmaps"
    )
    control_plane.kubectl(
        "create",
        "rolebinding",
        "op-cm",
        "-n",
        namespace,
        "--role=cm-writer",
        f"--serviceaccount={namespace}:op",
    )
    kubeconfig = control_plane.service_account_kubeconfig(
        namespace, "op", tmp_path / "op.kubeconfig"
    )
    whoami = control_plane.kubectl(
        "--kubeconfig", str(kubeconfig), "create", "configmap", "by-op", "-n", namespace
    )
    assert "configmap/by-op created" in whoami.stdout
    denied = control_plane.kubectl(
        "--kubeconfig", str(kubeconfig), "get", "pods", "-n", namespace, check=False
    )
    assert denied.returncode != 0
    assert f"system:serviceaccount:{namespace}:op" in denied.stderr
    # The Python client honours it too (what kopf and the operator use).
    from kubernetes import client, config

    new_client: Any = config.new_client_from_config
    api = new_client(config_file=str(kubeconfig))
    try:
        core = client.CoreV1Api(api)
        assert core.read_namespaced_config_map("by-op", namespace).data is None
        with pytest.raises(client.ApiException) as forbidden:
            core.list_namespaced_config_map(namespace)  # only create and get are granted
        assert forbidden.value.status == 403
    finally:
        api.close()


@pytest.mark.e2e
def test_discovery_picks_pdb_and_hpa_versions(control_plane: ControlPlane) -> None:
    # The 1.20 test server serves PDB only as policy/v1beta1 and HPA up to v2beta2; current
    # clusters serve policy/v1 and autoscaling/v2. Code must ask discovery, not hard-code.
    assert control_plane.pdb_api_version() == "policy/v1beta1"
    assert control_plane.hpa_api_version() == "autoscaling/v2beta2"
    assert control_plane.served_api_version("apps", "Deployment", ["v1"]) == "apps/v1"
    assert control_plane.served_api_version("policy", "NoSuchKind", ["v1", "v1beta1"]) is None


@pytest.mark.e2e
def test_cluster_script_stops_exactly_its_processes(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """hack/cluster.sh start/status/env/stop on a second plane, and its watchdog."""
    watched = subprocess.Popen(["sleep", "120"])  # stands in for a test run that dies
    env = {
        **os.environ,
        "DSV4_CLUSTER_DIR": str(tmp_path / "second"),
        "DSV4_CLUSTER_PORT": str(free_port_block()),
        "DSV4_CLUSTER_CM": "0",
        "DSV4_CLUSTER_WATCH_PID": str(watched.pid),
    }

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    try:
        started = script("start")
        assert started.returncode == 0, started.stderr
        status = script("status").stdout
        assert "etcd: running" in status
        assert "kube-apiserver: running" in status
        exported = script("env").stdout
        assert f"export KUBECONFIG={tmp_path / 'second' / 'kubeconfig'}" in exported
        # ... and the plane's folder and port, so a later `stop` in that shell finds it.
        assert f"export DSV4_CLUSTER_DIR={tmp_path / 'second'} DSV4_CLUSTER_PORT=" in exported
        names = ["etcd", "kube-apiserver"]
        if cel_server_unavailable() is None:  # the watchdog stops the CEL CRD server too
            cel = script("start-cel")
            assert cel.returncode == 0, cel.stderr
            assert "apiextensions-apiserver: running" in script("status").stdout
            names.append("apiextensions-apiserver")
        pids = [int((tmp_path / "second" / f"{n}.pid").read_text()) for n in names]
        assert not set(pids) & set(control_plane.pids().values())
        # The watched process dies: the watchdog stops the second plane, and only it.
        watched.kill()
        watched.wait()
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        assert "etcd: stopped" in script("status").stdout
        control_plane.kubectl("get", "ns", "default")  # the session's plane is untouched
        assert set(control_plane.rss_bytes()) - {"apiextensions-apiserver"} == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
        }
    finally:
        watched.kill()
        script("stop")


@pytest.mark.e2e
@pytest.mark.parametrize(("offset", "role"), [(0, "kube-apiserver"), (1, "etcd")])
def test_cluster_script_start_names_a_taken_port_and_the_setting_to_change(
    tmp_path: Path, offset: int, role: str
) -> None:
    """h38 (README walk-through): `start` with DSV4_CLUSTER_PORT's block in use (another plane
    on the default 16443, a second user on a shared machine) stopped with "etcd exited" or
    "kube-apiserver exited" and a bind error inside a log tail; it now says which port is
    taken, by which of its servers, and which setting picks another block, and starts nothing."""
    if not (bin_dir() / "kube-apiserver").is_file():
        pytest.skip(f"control plane binaries missing in {bin_dir()} (run: make cluster)")
    port = free_port_block()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + offset))
        taken.listen()
        env = {
            **os.environ,
            "DSV4_CLUSTER_DIR": str(tmp_path / "plane"),
            "DSV4_CLUSTER_PORT": str(port),
        }
        done = subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), "start"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 1
    assert f"127.0.0.1:{port + offset} ({role}) is in use" in done.stderr
    assert "DSV4_CLUSTER_PORT" in done.stderr
    assert not list((tmp_path / "plane").glob("*.pid"))  # nothing was started
