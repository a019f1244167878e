"""The operator through a recording, fault-injecting proxy, against the real control plane.

The operator runs as `dsv4 operator run` (a child process, so it can be SIGKILLed), watches only
the test's namespace, and talks to the apiserver through the TEST-ONLY `FaultingProxy`, which
records every request, answers chosen ones with 409, 429 or 500 (or holds one back), and forwards
everything else unchanged. Every request the operator sends (kopf's included) is in the record.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.chart.chart_support import by_kind, template
from tests.support.cluster import REPO_ROOT, ControlPlane
from tests.support.faulting_proxy import Fault, FaultingProxy
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

from dsv4_operator.api import parse_deployment
from dsv4_operator.planning import plan
from dsv4_operator.planning.from_spec import request_from_spec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

LWS_V = "leaderworkerset.x-k8s.io/v1"
KINDS = (
    ("v1", "configmaps"),
    ("v1", "services"),
    (LWS_V, "leaderworkersets"),
)


def _fitting_example() -> dict[str, Any]:
    for path in sorted((REPO_ROOT / "examples").glob("*.yaml")):
        body: dict[str, Any] = yaml.safe_load(path.read_text())
        if plan(request_from_spec(parse_deployment(body).spec)).fits:
            return body
    pytest.fail("no example plans (dsv4 plan examples/*.yaml all exit non-zero)")


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
def proxied_env(
    proxy: FaultingProxy, tmp_path: Path, upstream_crds: object, dsv4_crd: object
) -> dict[str, str]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", proxy.url, "unused-proxy-adds-it")
    return operator_env(
        kubeconfig, resync_seconds=1, retry_delay_seconds=1, metrics_port=0, runtime_image="e2e"
    )


@pytest.fixture
def cluster(kube_api: Any) -> Cluster:
    return Cluster(kube_api)


def _owned(cluster: Cluster, namespace: str, uid: str, pdb: str) -> dict[str, list[str]]:
    """Names of the operator-managed objects per plural; fails on any not owned by `uid`."""
    out: dict[str, list[str]] = {}
    for api_version, plural in (*KINDS, (pdb, "poddisruptionbudgets")):
        for item in cluster.objects(api_version, plural, namespace):
            meta = item["metadata"]
            if (meta.get("labels") or {}).get("app.kubernetes.io/managed-by") != "dsv4-operator":
                continue
            assert [r["uid"] for r in meta.get("ownerReferences", [])] == [uid], meta["name"]
            out.setdefault(plural, []).append(meta["name"])
    return out


def test_killed_mid_reconcile_then_restarted_converges_without_duplicates(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    proxy: FaultingProxy,
    proxied_env: dict[str, str],
    tmp_path: Path,
) -> None:
    body = _fitting_example()
    name = body["metadata"]["name"]
    # Hold the first LeaderWorkerSet apply for 5 s: the operator is killed while it waits.
    held = proxy.add(Fault("PATCH", rf"/namespaces/{namespace}/leaderworkersets/", 0, delay=5))
    with operator_process(
        proxied_env, "--namespace", namespace, log=tmp_path / "operator.log"
    ) as first:
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        wait_until(lambda: held.hits == 1, "operator mid-reconcile (LWS apply in flight)", 60)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    assert cluster.get("v1", "configmaps", namespace, f"{name}-plan") is not None
    wait_until(lambda: proxy.records("PATCH", r"/leaderworkersets/"), "held request dropped", 10)
    assert cluster.get(LWS_V, "leaderworkersets", namespace, name) is None

    with operator_process(proxied_env, "--namespace", namespace, log=tmp_path / "operator.log"):
        cluster.wait_condition(namespace, name, "Planned", "True", timeout=60)
        wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", namespace, name), "LWS", 30)
        cr = cluster.dsv4(namespace, name)
        assert cr is not None
        owned = _owned(cluster, namespace, cr["metadata"]["uid"], control_plane.pdb_api_version())
    assert owned == {
        "configmaps": [f"{name}-plan"],
        "services": [f"{name}-api"],
        "leaderworkersets": [name],
        "poddisruptionbudgets": [name],
    }


def test_conflicts_throttling_and_server_errors_are_retried(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    proxy: FaultingProxy,
    proxied_env: dict[str, str],
    tmp_path: Path,
) -> None:
    body = _fitting_example()
    name = body["metadata"]["name"]
    lws_path = rf"/namespaces/{namespace}/leaderworkersets/{name}$"
    proxy.add(Fault("PATCH", lws_path, 409, times=2))
    proxy.add(Fault("PATCH", rf"/namespaces/{namespace}/configmaps/", 429, retry_after=1))
    proxy.add(Fault("PATCH", rf"/namespaces/{namespace}/deepseekv4deployments/{name}/status", 500))
    with operator_process(proxied_env, "--namespace", namespace, log=tmp_path / "operator.log"):
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        cluster.wait_condition(namespace, name, "Planned", "True", timeout=60)
        wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", namespace, name), "LWS", 30)
    for path, status in (
        (lws_path, 409),
        (rf"/namespaces/{namespace}/configmaps/", 429),
        (rf"/deepseekv4deployments/{name}/status", 500),
    ):
        seen = [(r.status, r.injected) for r in proxy.records("PATCH", path)]
        assert (status, True) in seen, (path, seen)
        first_ok = next(i for i, (code, injected) in enumerate(seen) if not injected)
        assert all(injected for _, injected in seen[:first_ok]), seen
        assert 200 <= seen[first_ok][0] < 300, seen
    assert wait_event(cluster, namespace, name, "ApiRetry", "HTTP 409")["type"] == "Warning"


def test_missing_lws_api_is_reported_then_picked_up(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    proxy: FaultingProxy,
    proxied_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Discovery of leaderworkerset.x-k8s.io/v1 answers 404 (LWS not installed) until it is."""
    body = _fitting_example()
    name = body["metadata"]["name"]
    hidden = proxy.add(Fault("GET", r"^/apis/leaderworkerset\.x-k8s\.io/v1$", 404, times=10**6))
    log = tmp_path / "operator.log"
    with operator_process(proxied_env, "--namespace", namespace, log=log):
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        degraded = cluster.wait_condition(
            namespace, name, "Degraded", "True", "LeaderWorkerSetMissing", timeout=60
        )
        assert "leaderworkerset.x-k8s.io/v1" in degraded["message"]
        assert cluster.condition(namespace, name, "Ready")["reason"] == "LeaderWorkerSetMissing"
        assert cluster.get("v1", "configmaps", namespace, f"{name}-plan") is not None
        assert cluster.get(LWS_V, "leaderworkersets", namespace, name) is None
        event = wait_event(cluster, namespace, name, "LeaderWorkerSetMissing")
        assert event["type"] == "Warning"
        assert "LeaderWorkerSet API" in log.read_text()  # the startup log says it clearly
        hidden.times = hidden.hits  # "install" LWS: discovery answers again
        wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", namespace, name), "LWS", 30)
        cluster.wait_condition(namespace, name, "Degraded", "False", timeout=30)


def test_noop_resync_sends_no_write_requests(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    proxy: FaultingProxy,
    proxied_env: dict[str, str],
    tmp_path: Path,
) -> None:
    body = _fitting_example()
    name = body["metadata"]["name"]
    log = tmp_path / "operator.log"
    with operator_process(proxied_env, "--namespace", namespace, log=log):
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", namespace, name), "LWS", 60)
        LwsStatusStandIn(cluster).report(namespace, name)
        cluster.wait_condition(namespace, name, "Ready", "True", timeout=30)
        time.sleep(2)  # resyncs (every 1 s) pick up the final state
        start = len(proxy.log)
        time.sleep(5)
        window = proxy.log[start:]
    reads = [r for r in window if r.method == "GET" and "/leaderworkersets/" in r.path]
    writes = [(r.method, r.path) for r in window if r.method in {"POST", "PUT", "PATCH", "DELETE"}]
    assert len(reads) >= 3, "the resync did not run (no LWS reads in 5 s)"
    assert writes == []


def test_a_port_added_by_hand_does_not_make_every_resync_apply_the_service(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    proxy: FaultingProxy,
    proxied_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Day-2 finding: server-side apply keeps a Service port another manager added (ports are
    a list-map), so the live Service never again held exactly the rendered ports and every
    resync re-applied it, changing nothing, for as long as the port stayed."""
    body = _fitting_example()
    name = body["metadata"]["name"]
    log = tmp_path / "operator.log"
    with operator_process(proxied_env, "--namespace", namespace, log=log):
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", namespace, name), "LWS", 60)
        LwsStatusStandIn(cluster).report(namespace, name)
        cluster.wait_condition(namespace, name, "Ready", "True", timeout=30)
        debug = {"name": "debug", "port": 9090, "targetPort": 9090, "protocol": "TCP"}
        patch = json.dumps({"spec": {"ports": [debug]}})
        control_plane.kubectl("patch", "-n", namespace, "service", f"{name}-api", "-p", patch)
        time.sleep(3)  # resyncs (every 1 s) apply it once
        start = len(proxy.log)
        time.sleep(5)
        window = proxy.log[start:]
    service = cluster.get("v1", "services", namespace, f"{name}-api")
    assert service is not None
    assert "debug" in [p["name"] for p in service["spec"]["ports"]]  # not ours to remove
    reads = [r for r in window if r.method == "GET" and "/services/" in r.path]
    writes = [(r.method, r.path) for r in window if r.method in {"POST", "PUT", "PATCH", "DELETE"}]
    assert len(reads) >= 3, "the resync did not run (no Service reads in 5 s)"
    assert writes == []
    assert "differs from its rendering after a forced apply" in log.read_text()


def test_a_spec_near_the_annotation_limit_is_handled_and_deleted(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    proxied_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Day-2 finding: spec.pod.annotations at 32 x 4,096 (which the operator accepts) applied
    with `kubectl apply` (its last-applied annotation holds a copy of the spec): kopf's own
    copy took the annotations past the API server's 256 KiB, each of kopf's patches was
    refused with 422, and the finalizer's removal with them, so the resource could never be
    deleted."""
    body = _fitting_example()
    name = body["metadata"]["name"]
    notes = {f"example.com/note-{i:02d}": "x" * 4096 for i in range(32)}
    body["spec"].setdefault("pod", {})["annotations"] = notes
    log = tmp_path / "operator.log"
    with operator_process(proxied_env, "--namespace", namespace, log=log):
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", namespace, name), "LWS", 60)
        body["spec"]["replicas"] = int(body["spec"].get("replicas", 1)) + 1
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        wait_until(
            lambda: (
                (cluster.get(LWS_V, "leaderworkersets", namespace, name) or {})["spec"]["replicas"]
                == body["spec"]["replicas"]
            ),
            "the edit rolled out",
        )
        control_plane.kubectl("delete", "dsv4", name, "-n", namespace, "--wait=false")
        try:
            wait_until(lambda: cluster.dsv4(namespace, name) is None, "the resource deleted", 30)
        except TimeoutError:
            print(log.read_text()[-6000:])
            raise
    assert "Too long" not in log.read_text()


def test_a_resource_deleted_while_a_timer_runs_is_released_soon_after_the_timer_ends(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    proxy: FaultingProxy,
    proxied_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A deletion noticed while a resync (a sync kopf timer, in a thread) is mid-run.

    kopf asks the timer to stop, waits ten zero-time loop cycles, then (1.45 defaults) plans
    its next look at `settings.background.cancellation_polling` = 60 s later; when the timer
    ends nothing else wakes it, so the finalizer stayed 60 s after the timer had finished
    (the flaky 30 s deletion wait of the annotation-limit test). Here the timer is made to
    run during the deletion by holding its LeaderWorkerSet read for `hold` seconds.
    """
    hold = 3.0
    body = _fitting_example()
    name = body["metadata"]["name"]
    log = tmp_path / "operator.log"
    with operator_process(proxied_env, "--namespace", namespace, log=log):
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", namespace, name), "LWS", 60)
        held = proxy.add(Fault("GET", rf"/leaderworkersets/{name}$", 0, delay=hold))
        wait_until(lambda: held.hits == 1, "a timer's LWS read held", 30)
        control_plane.kubectl("delete", "dsv4", name, "-n", namespace, "--wait=false")
        start = time.monotonic()
        try:
            wait_until(lambda: cluster.dsv4(namespace, name) is None, "the resource deleted", 30)
        except TimeoutError:
            print(log.read_text()[-6000:])
            raise
        took = time.monotonic() - start
    # The held read ends `hold` s after it began (so at most that after the delete); the
    # finalizer goes within about one polling period after that.
    assert took < hold + 8, f"deletion took {took:.1f} s"


def test_progress_timer_reports_readiness_then_stops(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    proxy: FaultingProxy,
    proxied_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """With a 60 s resync, readiness still shows within seconds (the 1 s progress timer)."""
    body = _fitting_example()
    name = body["metadata"]["name"]
    env = {
        **proxied_env,
        "DSV4_OPERATOR_RESYNC_SECONDS": "60",
        "DSV4_OPERATOR_PROGRESS_SECONDS": "1",
    }
    with operator_process(env, "--namespace", namespace, log=tmp_path / "operator.log"):
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        cluster.wait_condition(namespace, name, "Ready", "False", "ReplicasNotReady", timeout=60)
        LwsStatusStandIn(cluster).report(namespace, name)
        # Nothing about the DeepSeekV4Deployment changed: only a timer can notice.
        cluster.wait_condition(namespace, name, "Ready", "True", timeout=15)
        time.sleep(2)
        start = len(proxy.log)
        time.sleep(4)
        window = proxy.log[start:]
    lws_reads = [r for r in window if r.method == "GET" and "/leaderworkersets/" in r.path]
    assert lws_reads == [], "the progress timer kept running after Ready=True"


@pytest.fixture
def peering_crds(control_plane: ControlPlane) -> None:
    """kopf's peering CRDs, as the chart's hook renders them (only those missing)."""
    crds = by_kind(template(), "CustomResourceDefinition")
    names = [c["metadata"]["name"] for c in crds]
    exists = [control_plane.kubectl("get", "crd", n, check=False).returncode == 0 for n in names]
    if missing := [c for c, there in zip(crds, exists, strict=True) if not there]:
        control_plane.apply(*missing)
    control_plane.wait_crd_established(*names)


def test_a_peered_operator_rides_out_an_api_outage_of_its_keep_alive(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    proxy: FaultingProxy,
    proxied_env: dict[str, str],
    peering_crds: None,
    tmp_path: Path,
) -> None:
    """Day-2 finding: with kube-apiserver down for 90 s, a peered replica's keep-alive PATCH
    used up kopf's default retries (54 s) and kopf stopped the operator. Here the API server
    answers every KopfPeering PATCH with 503 for 100 s: the operator must still run, and act on
    an edit once the server answers again."""
    body = _fitting_example()
    name = body["metadata"]["name"]
    down = proxy.add(Fault("PATCH", rf"/namespaces/{namespace}/kopfpeerings/", 503, times=10**6))
    log = tmp_path / "operator.log"
    peered = ("--namespace", namespace, "--peering", "dsv4-operator", "--priority", "100")
    with operator_process(proxied_env, *peered, log=log) as operator:
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        wait_until(lambda: down.hits >= 1, "the first keep-alive", 60)
        started = time.monotonic()
        while time.monotonic() - started < 100:  # the 90 s outage, and time to escalate
            assert operator.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        down.times = down.hits  # the API server answers again
        wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", namespace, name), "LWS", 30)
        edit = {"spec": {"engine": {"image": "example.com/dsv4:after-outage"}}}
        control_plane.kubectl(
            "patch", "dsv4", name, "-n", namespace, "--type", "merge", "-p", json.dumps(edit)
        )

        def image() -> str:
            lws = cluster.get(LWS_V, "leaderworkersets", namespace, name) or {}
            pod = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]
            return str(pod["spec"]["containers"][0]["image"])

        wait_until(lambda: image().endswith(":after-outage"), "the edit rolled out", 60)
        wait_until(  # the keep-alive still retries (every 15 s), and gets through
            lambda: any(r.status == 200 for r in proxy.records("PATCH", r"/kopfpeerings/")),
            "a keep-alive after the outage",
            30,
        )
        assert operator.poll() is None
    assert "multitasker has failed" not in log.read_text()  # kopf was not stopping it either


def _plan_args(cluster: Cluster, namespace: str, name: str) -> str:
    lws = cluster.get(LWS_V, "leaderworkersets", namespace, name) or {}
    pod = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]
    return " ".join(str(a) for c in pod["spec"]["containers"] for a in c.get("args") or [])


def test_a_refused_apply_reports_the_new_plan_as_not_applied(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    proxy: FaultingProxy,
    proxied_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Day-2 finding: the API server refusing the LeaderWorkerSet's update (a webhook, a 422)
    left the previous plan in status beside an observedGeneration of the new spec, so status
    described neither what the spec asks nor said that it was not rolled out."""
    body = _fitting_example()
    name = body["metadata"]["name"]
    lws_path = rf"/namespaces/{namespace}/leaderworkersets/{name}$"
    with operator_process(proxied_env, "--namespace", namespace, log=tmp_path / "operator.log"):
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", namespace, name), "LWS", 60)
        LwsStatusStandIn(cluster).report(namespace, name)
        cluster.wait_condition(namespace, name, "Ready", "True", timeout=30)
        before = (cluster.dsv4(namespace, name) or {})["status"]["plan"]
        args_before = _plan_args(cluster, namespace, name)
        refused = proxy.add(Fault("PATCH", lws_path, 422, times=10**6))
        body["spec"]["maxModelLen"] = before["maxModelLen"] // 2
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        ready = cluster.wait_condition(namespace, name, "Ready", "False", "ApplyFailed", timeout=60)
        cr = cluster.dsv4(namespace, name) or {}
        status = cr["status"]
        # the child as `kubectl get` names it, and the error
        assert f"LeaderWorkerSet {namespace}/{name}: HTTP 422" in ready["message"]
        assert status["observedGeneration"] == cr["metadata"]["generation"]
        # status.plan is the spec's plan, and says it is not applied: the groups keep the old.
        assert status["plan"]["maxModelLen"] == body["spec"]["maxModelLen"]
        assert status["plan"]["applied"] is False
        progressing = cluster.condition(namespace, name, "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("False", "ApplyFailed")
        assert "not applied" in progressing["message"]
        assert _plan_args(cluster, namespace, name) == args_before
        refused.times = refused.hits  # the webhook lets it through again
        wait_until(
            lambda: (cluster.dsv4(namespace, name) or {})["status"]["plan"].get("applied"),
            "the plan applied",
            60,
        )
        assert _plan_args(cluster, namespace, name) != args_before
        assert cluster.condition(namespace, name, "Progressing")["reason"] != "ApplyFailed"


def test_a_lasting_wait_is_reported_once_without_a_kopf_patch_per_retry(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    proxy: FaultingProxy,
    proxied_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Day-2 finding: a predecessor's admin Secret still being finalized made every reconcile
    a transient failure: no status was written at all (a new resource showed none), and kopf
    patched its retry annotation on the resource at every retry."""
    body = _fitting_example()
    name = body["metadata"]["name"]
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"{name}-admin",
            "finalizers": ["e2e.dsv4.io/hold"],
            "ownerReferences": [
                {
                    "apiVersion": "dsv4.io/v1alpha1",
                    "kind": "DeepSeekV4Deployment",
                    "name": name,
                    "uid": "00000000-0000-4000-8000-000000000001",
                }
            ],
        },
        "stringData": {"token": "ab" * 32},
    }
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(secret))
    cr_path = rf"/namespaces/{namespace}/deepseekv4deployments/{name}$"
    with operator_process(proxied_env, "--namespace", namespace, log=tmp_path / "operator.log"):
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        waiting = cluster.wait_condition(
            namespace, name, "Progressing", "True", "Waiting", timeout=60
        )
        assert f"Secret {namespace}/{name}-admin" in waiting["message"]
        assert cluster.condition(namespace, name, "Ready")["reason"] == "Waiting"
        time.sleep(3)  # the handler's first retry, and the status write, settle
        start = len(proxy.log)
        time.sleep(6)  # resyncs every 1 s, kopf's retry delay 1 s
        window = proxy.log[start:]
        assert [r for r in window if r.method == "GET" and r.path.endswith(f"/{name}-admin")]
        writes = [(r.method, r.path) for r in window if r.method in {"PATCH", "POST", "PUT"}]
        assert [w for w in writes if w[0] == "PATCH" and "deepseekv4deployments" in w[1]] == []
        assert [w for w in writes if "/events" in w[1]] == []
        retries = [e for e in cluster.events(namespace, name) if e["reason"] == "ApiRetry"]
        assert len(retries) <= 1
        patch = json.dumps({"metadata": {"finalizers": None}})
        control_plane.kubectl("patch", "-n", namespace, "secret", f"{name}-admin", "-p", patch)
        wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", namespace, name), "LWS", 60)
        cluster.wait_condition(namespace, name, "Progressing", "True", "RollingOut", timeout=30)
    assert proxy.records("PATCH", cr_path)  # kopf's own bookkeeping still ran


def test_a_quota_refusing_the_lws_shows_the_plan_not_applied_until_raised(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    proxied_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A real refusal: the namespace's ResourceQuota allows no LeaderWorkerSet, so the API
    server's quota admission refuses its creation (403). Status says so and shows the plan,
    marked not applied; raising the quota lets the next resync create it."""
    body = _fitting_example()
    name = body["metadata"]["name"]
    counted = "count/leaderworkersets.leaderworkerset.x-k8s.io"

    def quota(lws: int) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-lws"},
            "spec": {"hard": {counted: str(lws)}},
        }

    control_plane.apply(quota(0), namespace=namespace)
    with operator_process(proxied_env, "--namespace", namespace, log=tmp_path / "operator.log"):
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        ready = cluster.wait_condition(namespace, name, "Ready", "False", "ApplyFailed", timeout=60)
        assert "exceeded quota: no-lws" in ready["message"]
        # h42: the child as `kubectl get` names it, not the HTTP request, and the server's text
        assert ready["message"].startswith(f"LeaderWorkerSet {namespace}/{name}: HTTP 403: ")
        assert "PATCH /apis/" not in ready["message"]
        cr = cluster.dsv4(namespace, name) or {}
        assert cr["status"]["observedGeneration"] == cr["metadata"]["generation"]
        assert cr["status"]["plan"]["applied"] is False
        assert cr["status"]["plan"]["gpuType"] in body["spec"]["gpu"]["types"]
        progressing = cluster.condition(namespace, name, "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("False", "ApplyFailed")
        assert cluster.get(LWS_V, "leaderworkersets", namespace, name) is None
        control_plane.apply(quota(1), namespace=namespace)
        wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", namespace, name), "LWS", 60)
        wait_until(
            lambda: (cluster.dsv4(namespace, name) or {})["status"]["plan"]["applied"],
            "the plan applied",
            30,
        )
        assert cluster.condition(namespace, name, "Progressing")["reason"] == "RollingOut"


def test_a_reconcile_error_reports_the_new_generation_and_the_live_counts(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    proxy: FaultingProxy,
    proxied_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """h42: a `ReconcileError` (an API refusal no step expects: here API discovery of
    leaderworkerset.x-k8s.io/v1 answered 403) set only Ready and Degraded. Status kept
    Progressing `RolloutComplete`, the previous generation's plan beside the new
    observedGeneration, and the ready count and Available of the last rollout, while a group
    had failed meanwhile."""
    body = _fitting_example()
    name = body["metadata"]["name"]
    log = tmp_path / "operator.log"
    with operator_process(proxied_env, "--namespace", namespace, log=log):
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
        wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", namespace, name), "LWS", 60)
        LwsStatusStandIn(cluster).report(namespace, name)
        cluster.wait_condition(namespace, name, "Ready", "True", timeout=30)
        before = (cluster.dsv4(namespace, name) or {})["status"]
    args_before = _plan_args(cluster, namespace, name)
    # The operator asks discovery once per start; from its next start on it is refused to the
    # operator's client only: kopf discovers the group too, for its watch of deleted
    # LeaderWorkerSets, and retries a refused discovery for 11.5 minutes before serving anything
    # (API_RETRY_BACKOFFS_SECONDS), so refusing it to kopf tests kopf's startup, not this report.
    lws_discovery = r"^/apis/leaderworkerset\.x-k8s\.io/v1$"
    refused = proxy.add(Fault("GET", lws_discovery, 403, times=10**6, agent="^(?!kopf/)"))
    body["spec"]["maxModelLen"] = before["plan"]["maxModelLen"] // 2
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
    lws = LwsStatusStandIn(cluster).report(namespace, name, ready=0)  # every group failed
    with operator_process(proxied_env, "--namespace", namespace, log=log):
        ready = cluster.wait_condition(
            namespace, name, "Ready", "False", "ReconcileError", timeout=60
        )
        assert "HTTP 403" in ready["message"]
        assert cluster.condition(namespace, name, "Degraded")["reason"] == "ReconcileError"
        cr = cluster.dsv4(namespace, name) or {}
        status = cr["status"]
        assert status["observedGeneration"] == cr["metadata"]["generation"]
        # status.plan is this generation's plan, not applied: the groups keep the old one.
        assert status["plan"]["maxModelLen"] == body["spec"]["maxModelLen"]
        assert status["plan"]["applied"] is False
        assert cluster.condition(namespace, name, "Planned")["status"] == "True"
        progressing = cluster.condition(namespace, name, "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("False", "ReconcileError")
        assert progressing["observedGeneration"] == cr["metadata"]["generation"]
        assert "not applied" in progressing["message"]
        # The counts and Available are the live LeaderWorkerSet's, not the last rollout's.
        assert status["readyReplicas"] == lws["status"]["readyReplicas"] == 0
        assert before["readyReplicas"] > 0
        available = cluster.condition(namespace, name, "Available")
        assert (available["status"], available["reason"]) == ("False", "NoReplicaReady")
        assert _plan_args(cluster, namespace, name) == args_before
        assert wait_event(cluster, namespace, name, "ReconcileError")["type"] == "Warning"
        refused.times = refused.hits  # discovery answers again: the next reconcile applies it
        wait_until(
            lambda: (cluster.dsv4(namespace, name) or {})["status"]["plan"].get("applied"),
            "the plan applied",
            60,
        )
        assert _plan_args(cluster, namespace, name) != args_before
        assert cluster.condition(namespace, name, "Progressing")["reason"] != "ReconcileError"
        assert cluster.condition(namespace, name, "Ready")["reason"] != "ReconcileError"
