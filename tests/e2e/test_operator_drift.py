"""Day-2 drift: people and other controllers touch what the operator made (real control plane).

What a platform engineer does to the children, and what the operator must do about it:

1. deletes one (`kubectl delete`): created again at once (the operator watches its children's
   deletions, as a Deployment's controller watches its ReplicaSets), not only at the next resync
   (60 s by default), with a `ChildRecreated` Warning, and status follows the new LeaderWorkerSet;
2. `kubectl scale`s or edits what the operator sets on the LeaderWorkerSet (its replicas, the
   image): set back at the next resync (a forced server-side apply of the operator's field
   manager `dsv4-operator`), with a `DriftReverted` Warning naming who changed it; a field the
   operator does not set (a pod-template annotation) stays;
3. adds labels or annotations of their own to the children: kept across resyncs and across a
   spec change that renders the children anew (server-side apply removes only what the
   applier owned: Kubernetes docs, "Server-Side Apply", field management);
4. another manager applies a field the operator sets (Argo CD, another controller): without
   `--force-conflicts` the API server refuses it naming `dsv4-operator`; forced, the operator
   takes it back at each resync, never more often (no apply loop), and says so.

The operator runs as `dsv4 operator run` (a child process, one per test, watching only the
test's namespace) through the TEST-ONLY recording `FaultingProxy` (no faults injected here),
so every request it sends is counted. `LwsStatusStandIn` writes the LeaderWorkerSet status the
absent LWS controller would.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import yaml
from tests.support.cluster import REPO_ROOT, ControlPlane
from tests.support.faulting_proxy import FaultingProxy
from tests.support.operator_e2e import (
    Cluster,
    LwsStatusStandIn,
    collect_leaked_transports,
    operator_env,
    operator_process,
    plane_credentials,
    wait_event,
    wait_until,
    write_kubeconfig,
)

from dsv4_operator.handlers.deployment import CHILD_SELECTOR

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

LWS_V = "leaderworkerset.x-k8s.io/v1"
LWS_KUBECTL = "leaderworkersets.leaderworkerset.x-k8s.io"
EXAMPLE = REPO_ROOT / "examples" / "flash-4x-h100.yaml"
"""Fixed replicas (no scaler), one-node groups: the four children LWS, Service, ConfigMap, PDB."""


@pytest.fixture
def proxy(control_plane: ControlPlane) -> Iterator[FaultingProxy]:
    server, token, ca = plane_credentials(control_plane)
    running = FaultingProxy(upstream=server, ca_file=ca, token=token).start()
    try:
        yield running
    finally:
        running.stop()
        collect_leaked_transports()


@pytest.fixture
def kubeconfig(
    proxy: FaultingProxy, tmp_path: Path, upstream_crds: object, dsv4_crd: object
) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", proxy.url, "unused-proxy-adds-it")


@pytest.fixture
def cluster(kube_api: Any) -> Cluster:
    return Cluster(kube_api)


def _body() -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return body


def _children(cluster: Cluster, plane: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    return {
        "LeaderWorkerSet": cluster.get(LWS_V, "leaderworkersets", ns, name),
        "Service": cluster.get("v1", "services", ns, f"{name}-api"),
        "ConfigMap": cluster.get("v1", "configmaps", ns, f"{name}-plan"),
        "PodDisruptionBudget": cluster.get(
            plane.pdb_api_version(), "poddisruptionbudgets", ns, name
        ),
    }


_KUBECTL_NAMES = {
    "LeaderWorkerSet": (LWS_KUBECTL, ""),
    "Service": ("service", "-api"),
    "ConfigMap": ("configmap", "-plan"),
    "PodDisruptionBudget": ("poddisruptionbudget", ""),
}
"""kubectl resource and name suffix of each child."""


def _ready(
    plane: ControlPlane, cluster: Cluster, ns: str, name: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Apply `body` (the example), report its groups ready, wait for Ready=True; its children."""
    plane.kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump(body or _body()))
    wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", ns, name), "LWS", 60)
    LwsStatusStandIn(cluster).report(ns, name)
    cluster.wait_condition(ns, name, "Ready", "True", timeout=30)
    children: dict[str, Any] = wait_until(
        lambda: (c := _children(cluster, plane, ns, name)) and all(c.values()) and c, "children"
    )
    return children


def _writes(proxy: FaultingProxy, start: int, fragment: str) -> list[tuple[str, str]]:
    return [
        (r.method, r.path)
        for r in proxy.log[start:]
        if r.method in {"POST", "PUT", "PATCH", "DELETE"} and fragment in r.path
    ]


def test_a_deleted_child_is_created_again_at_once_not_at_the_next_resync(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    proxy: FaultingProxy,
    kubeconfig: Path,
    tmp_path: Path,
) -> None:
    """Scenario 1, with the default resync (60 s) and a 1 s progress timer that stops at Ready.

    Before: a deleted LeaderWorkerSet (every group's pods gone), Service (no endpoint) or
    ConfigMap stayed missing until the next resync, up to a minute, and status kept saying
    Ready=True meanwhile. Now each deletion is watched: created again within seconds, with a
    ChildRecreated Warning, and Ready follows the new LeaderWorkerSet's groups."""
    name = _body()["metadata"]["name"]
    env = operator_env(
        kubeconfig,
        resync_seconds=60,
        progress_seconds=1,
        retry_delay_seconds=1,
        metrics_port=0,
        runtime_image="e2e",
    )
    with operator_process(env, "--namespace", namespace, log=tmp_path / "operator.log"):
        before = _ready(control_plane, cluster, namespace, name)
        deleted = time.monotonic()
        for resource, suffix in _KUBECTL_NAMES.values():
            control_plane.kubectl("delete", "-n", namespace, resource, name + suffix)
        again = wait_until(
            lambda: (
                (c := _children(cluster, control_plane, namespace, name))
                and all(c[k] and c[k]["metadata"]["uid"] != before[k]["metadata"]["uid"] for k in c)
                and c
            ),
            "every deleted child created again",
            timeout=15,
        )
        took = time.monotonic() - deleted
        for kind, (_, suffix) in _KUBECTL_NAMES.items():
            wait_event(cluster, namespace, name, "ChildRecreated", f"{kind} {name + suffix} was")
        # The new LeaderWorkerSet's groups are not ready: status says so, not the old Ready.
        cluster.wait_condition(namespace, name, "Ready", "False", "ReplicasNotReady", timeout=10)
    assert took < 15, took
    assert (
        again["LeaderWorkerSet"]["spec"]["replicas"]
        == before["LeaderWorkerSet"]["spec"]["replicas"]
    )
    # The watches (and their initial lists) asked the API server for the operator's children
    # only: kopf's handler `labels` filter alone is client-side, and would stream every
    # Service and ConfigMap of the watched namespaces to the operator.
    collections = re.compile(
        rf"/namespaces/{namespace}/(leaderworkersets|services|configmaps|poddisruptionbudgets)$"
    )
    listed = [
        (match[1], parse_qs(r.query).get("labelSelector"))
        for r in proxy.log
        if r.method == "GET" and (match := collections.search(r.path))
    ]
    assert {kind for kind, _ in listed} == {
        "leaderworkersets",
        "services",
        "configmaps",
        "poddisruptionbudgets",
    }, listed
    assert all(selector == [CHILD_SELECTOR] for _, selector in listed), listed


def test_a_deleted_hpa_is_created_again_at_once(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    kubeconfig: Path,
    tmp_path: Path,
) -> None:
    """Scenario 1 for the scaler (autoscaling mode hpa, default resync): a deleted
    HorizontalPodAutoscaler left `spec.replicas` unscaled until the next resync; now it is
    created again within seconds, with a ChildRecreated Warning."""
    body = _body()
    name = body["metadata"]["name"]
    body["spec"]["autoscaling"] = {"enabled": True, "mode": "hpa", "minReplicas": 1}
    body["spec"]["autoscaling"]["maxReplicas"] = 2
    env = operator_env(
        kubeconfig,
        resync_seconds=60,
        progress_seconds=1,
        retry_delay_seconds=1,
        metrics_port=0,
        runtime_image="e2e",
    )
    hpa_version = "autoscaling/v2beta2"  # what the 1.20 plane serves (the operator's discovery)

    def hpa() -> dict[str, Any] | None:
        return cluster.get(hpa_version, "horizontalpodautoscalers", namespace, name)

    with operator_process(env, "--namespace", namespace, log=tmp_path / "operator.log"):
        _ready(control_plane, cluster, namespace, name, body)
        before = wait_until(hpa, "the HPA", 30)
        control_plane.kubectl("delete", "-n", namespace, "horizontalpodautoscaler", name)
        wait_until(
            lambda: (h := hpa()) and h["metadata"]["uid"] != before["metadata"]["uid"],
            "the HPA created again",
            timeout=15,
        )
        wait_event(cluster, namespace, name, "ChildRecreated", f"HorizontalPodAutoscaler {name}")


def test_scaling_or_editing_the_leaderworkerset_is_set_back_and_said_keeping_foreign_fields(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    kubeconfig: Path,
    tmp_path: Path,
) -> None:
    """Scenario 2. `kubectl scale` and `kubectl patch` of the image: the operator owns
    `.spec.replicas` (in every autoscaling mode: HPA and KEDA scale the DeepSeekV4Deployment,
    whose scale subresource is `spec.replicas`) and the template it renders, so both are set
    back at the next resync, with an Event naming the field manager that changed them; a
    pod-template annotation the operator does not set survives."""
    name = _body()["metadata"]["name"]
    env = operator_env(
        kubeconfig, resync_seconds=1, retry_delay_seconds=1, metrics_port=0, runtime_image="e2e"
    )
    with operator_process(env, "--namespace", namespace, log=tmp_path / "operator.log"):
        before = _ready(control_plane, cluster, namespace, name)["LeaderWorkerSet"]
        want = before["spec"]["replicas"]
        image = before["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0][
            "image"
        ]
        control_plane.kubectl("scale", "-n", namespace, LWS_KUBECTL, name, "--replicas=7")
        wait_until(
            lambda: (
                (lws := cluster.get(LWS_V, "leaderworkersets", namespace, name))
                and lws["spec"]["replicas"] == want
            ),
            "replicas set back",
            timeout=15,
        )
        event = wait_event(cluster, namespace, name, "DriftReverted", "spec.replicas")
        assert event["type"] == "Warning"
        # A custom resource's scale subresource records no field manager
        # (kubernetes/kubernetes#131892): the Event says so instead of naming one.
        assert "kubectl scale" in event["message"], event["message"]
        patch = {
            "spec": {
                "leaderWorkerTemplate": {
                    "leaderTemplate": {
                        "metadata": {"annotations": {"team.example.com/owner": "ml-infra"}},
                    }
                }
            }
        }
        control_plane.kubectl(
            "patch", "-n", namespace, LWS_KUBECTL, name, "--type=merge", "-p", json.dumps(patch)
        )
        image_patch = [
            {
                "op": "replace",
                "path": "/spec/leaderWorkerTemplate/leaderTemplate/spec/containers/0/image",
                "value": "evil:latest",
            }
        ]
        control_plane.kubectl(
            "patch",
            "-n",
            namespace,
            LWS_KUBECTL,
            name,
            "--type=json",
            "-p",
            json.dumps(image_patch),
        )
        wait_until(
            lambda: (
                (lws := cluster.get(LWS_V, "leaderworkersets", namespace, name))
                and lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0][
                    "image"
                ]
                == image
            ),
            "image set back",
            timeout=15,
        )
        wait_event(cluster, namespace, name, "DriftReverted", "image changed by kubectl-patch")
        time.sleep(3)  # more resyncs: nothing else to set back
        lws = cluster.get(LWS_V, "leaderworkersets", namespace, name)
    assert lws is not None
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]
    assert leader["metadata"]["annotations"]["team.example.com/owner"] == "ml-infra"
    reverted = [e for e in cluster.events(namespace, name) if e["reason"] == "DriftReverted"]
    assert len(reverted) == 2, [e["message"] for e in reverted]


def test_labels_and_annotations_added_to_the_children_survive_resyncs_and_a_rerender(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    kubeconfig: Path,
    proxy: FaultingProxy,
    tmp_path: Path,
) -> None:
    """Scenario 3. `kubectl label` / `kubectl annotate` (cost allocation, Argo CD's tracking
    annotation) on every child, then a spec change that renders every child anew (a new
    `dsv4.io/rendered-hash` on each): the labels and annotations stay, and the operator does not
    treat them as drift (no write at resyncs, no DriftReverted)."""
    body = _body()
    name = body["metadata"]["name"]
    env = operator_env(
        kubeconfig, resync_seconds=1, retry_delay_seconds=1, metrics_port=0, runtime_image="e2e"
    )
    tracking = "argocd.argoproj.io/tracking-id"
    with operator_process(env, "--namespace", namespace, log=tmp_path / "operator.log"):
        before = _ready(control_plane, cluster, namespace, name)
        for resource, suffix in _KUBECTL_NAMES.values():
            target = (resource, name + suffix)
            control_plane.kubectl("label", "-n", namespace, *target, "cost-center=ml-42")
            control_plane.kubectl(
                "annotate", "-n", namespace, *target, f"{tracking}=app:{resource}/{name}"
            )
        time.sleep(3)  # resyncs
        # Something in each child: the PDB, LWS replicas, the plan (ConfigMap), the port.
        body["spec"].update(replicas=2, rollout={"maxUnavailable": 2}, maxModelLen=32768)
        body["spec"]["service"] = {"port": 8080}
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        hash_key = "dsv4.io/rendered-hash"

        def rerendered() -> dict[str, Any] | None:
            now = _children(cluster, control_plane, namespace, name)
            changed = all(
                now[k]
                and now[k]["metadata"]["annotations"][hash_key]
                != before[k]["metadata"]["annotations"][hash_key]
                for k in now
            )
            return now if changed else None

        after: dict[str, Any] = wait_until(rerendered, "every child rendered anew", 20)
        time.sleep(2)  # resyncs after the change
        start = len(proxy.log)
        time.sleep(3)  # resyncs: the labels and annotations are not drift
        window = proxy.log[start:]
        after = _children(cluster, control_plane, namespace, name)
    reads = [r for r in window if r.method == "GET" and "/services/" in r.path]
    assert len(reads) >= 2, "the resync did not run"
    children = ("/leaderworkersets/", "/services/", "/configmaps/", "/poddisruptionbudgets/")
    writes = [
        (r.method, r.path)
        for r in window
        if r.method in {"POST", "PUT", "PATCH", "DELETE"} and any(c in r.path for c in children)
    ]
    assert writes == []
    for kind, child in after.items():
        meta = child["metadata"]
        assert meta["labels"]["cost-center"] == "ml-42", kind
        assert meta["annotations"][tracking].startswith("app:"), kind
        assert meta["uid"] == before[kind]["metadata"]["uid"], kind  # updated, not replaced
    assert [e for e in cluster.events(namespace, name) if e["reason"] == "DriftReverted"] == []


def test_a_forced_apply_by_another_manager_is_taken_back_once_per_resync_and_said(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    kubeconfig: Path,
    proxy: FaultingProxy,
    tmp_path: Path,
) -> None:
    """Scenario 4. Another manager server-side applies `.spec.replicas` of the LeaderWorkerSet.

    Without `--force-conflicts` the API server refuses it, naming `dsv4-operator` (SSA
    conflicts). Forced, as a GitOps tool or controller with its own idea of the field does
    each time it finds it changed: the operator's spec wins at each resync, with exactly one
    apply of the LeaderWorkerSet per revert (never a loop), and a Warning naming the manager
    (`argocd-controller`) and the field, not repeated for each revert of the same fight."""
    name = _body()["metadata"]["name"]
    env = operator_env(
        kubeconfig, resync_seconds=1, retry_delay_seconds=1, metrics_port=0, runtime_image="e2e"
    )
    theirs = {
        "apiVersion": LWS_V,
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": 3},
    }
    # --validate=false: kubectl's client-side schema check wants the whole spec; the API server
    # merges a partial server-side apply into the object and validates the result.
    apply = ["apply", "--server-side", "--field-manager=argocd-controller", "--validate=false"]
    apply += ["-f", "-"]
    with operator_process(env, "--namespace", namespace, log=tmp_path / "operator.log"):
        want = _ready(control_plane, cluster, namespace, name)["LeaderWorkerSet"]["spec"][
            "replicas"
        ]
        refused = control_plane.kubectl(*apply, stdin=json.dumps(theirs), check=False)
        assert refused.returncode != 0
        assert "conflict" in refused.stderr.lower()
        assert "dsv4-operator" in refused.stderr
        start = len(proxy.log)
        reverts = 0
        for _ in range(4):  # the other side re-applies whenever it finds its value gone
            control_plane.kubectl(*apply, "--force-conflicts", stdin=json.dumps(theirs))
            wait_until(
                lambda: (
                    (lws := cluster.get(LWS_V, "leaderworkersets", namespace, name))
                    and lws["spec"]["replicas"] == want
                ),
                "the operator's replicas back",
                timeout=15,
            )
            reverts += 1
        time.sleep(2)  # resyncs: nothing left to set back
        lws_writes = _writes(proxy, start, f"/leaderworkersets/{name}")
    assert len(lws_writes) == reverts, lws_writes
    event = wait_event(cluster, namespace, name, "DriftReverted", "argocd-controller")
    assert "spec.replicas" in event["message"]
    reverted = [e for e in cluster.events(namespace, name) if e["reason"] == "DriftReverted"]
    assert len(reverted) == 1, [e["message"] for e in reverted]
