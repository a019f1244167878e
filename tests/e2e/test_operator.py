"""The operator against the real control plane (kube-apiserver + etcd + kube-controller-manager).

One operator (kopf's KopfRunner, in this process, all namespaces) serves every test in this
module; each test has its own namespace. The only stand-in is the TEST-ONLY `LwsStatusStandIn`,
which writes LeaderWorkerSet status as the (absent) LWS controller would.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner
from prometheus_client.parser import text_string_to_metric_families
from tests.support.cluster import REPO_ROOT, ControlPlane
from tests.support.operator_e2e import (
    Cluster,
    LwsStatusStandIn,
    collect_leaked_transports,
    operator_env,
    wait_event,
    wait_until,
)

from dsv4_operator.api import parse_deployment, quantity_bytes
from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.planning import Plan, plan, plan_to_dict
from dsv4_operator.planning.from_spec import request_from_spec
from dsv4_runtime.config import RuntimeConfig

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
LWS_V = "leaderworkerset.x-k8s.io/v1"
RESYNC_SECONDS = 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _expected(body: dict[str, Any]) -> tuple[DeepSeekV4DeploymentSpec, Plan]:
    spec = parse_deployment(body).spec
    return spec, plan(request_from_spec(spec))


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane,
    upstream_crds: object,
    dsv4_crd: object,
    metrics_port: int,
) -> Iterator[KopfRunner]:
    """The operator under test, watching every namespace, resync every second."""
    env = operator_env(
        control_plane.kubeconfig,
        resync_seconds=RESYNC_SECONDS,
        retry_delay_seconds=1,
        metrics_port=metrics_port,
        runtime_image="dsv4-runtime:e2e",
    )
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        args = ["run", "-A", "--standalone", "-m", "dsv4_operator.handlers.registered"]
        with KopfRunner(args, timeout=60) as runner:
            wait_until(lambda: _scrape(metrics_port) is not None, "operator metrics up", 30)
            yield runner
    collect_leaked_transports()
    failure: BaseException | None = runner.exception  # kopf types it as never None
    assert failure is None, runner.output[-4000:]
    assert runner.exit_code == 0, runner.output[-4000:]


@pytest.fixture
def cluster(kube_api: Any) -> Cluster:
    return Cluster(kube_api)


def _scrape(port: int) -> dict[str, float] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + json.dumps(sample.labels, sort_keys=True)
            out[key] = sample.value
    return out


def _apply(plane: ControlPlane, namespace: str, doc: dict[str, Any] | Path) -> None:
    if isinstance(doc, Path):
        plane.kubectl("apply", "-n", namespace, "-f", str(doc))
    else:
        plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(doc))


def _claim(name: str) -> dict[str, Any]:
    """A PersistentVolumeClaim manifest (it stays Pending here: no provisioner runs)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Ti"}}},
    }


def _children(cluster: Cluster, ns: str, name: str, pdb_version: str) -> dict[str, Any]:
    return {
        "ConfigMap": cluster.get("v1", "configmaps", ns, f"{name}-plan"),
        "Service": cluster.get("v1", "services", ns, f"{name}-api"),
        "PodDisruptionBudget": cluster.get(pdb_version, "poddisruptionbudgets", ns, name),
        "LeaderWorkerSet": cluster.get(LWS_V, "leaderworkersets", ns, name),
        "Secret": cluster.get("v1", "secrets", ns, f"{name}-admin"),  # the drain token
    }


def _container(lws: dict[str, Any], template: str) -> dict[str, Any]:
    pod = lws["spec"]["leaderWorkerTemplate"][template]["spec"]
    container: dict[str, Any] = pod["containers"][0]
    return container


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_rolls_out_with_owned_children(
    operator: KopfRunner,
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    example: Path,
) -> None:
    body = yaml.safe_load(example.read_text())
    name = body["metadata"]["name"]
    spec, expected = _expected(body)
    _apply(control_plane, namespace, example)
    pdb_version = control_plane.pdb_api_version()
    if not expected.fits:
        # An example the planner cannot fit is reported, not rolled out.
        ready = cluster.wait_condition(namespace, name, "Ready", "False", "InsufficientCapacity")
        assert "no layout" in ready["message"]
        assert cluster.get(LWS_V, "leaderworkersets", namespace, name) is None
        return
    cluster.wait_condition(namespace, name, "Planned", "True", "PlanReady")
    children = wait_until(
        lambda: (c := _children(cluster, namespace, name, pdb_version)) and all(c.values()) and c,
        "all five children",
    )
    cr = cluster.dsv4(namespace, name)
    assert cr is not None
    for kind, child in children.items():
        refs = child["metadata"]["ownerReferences"]
        assert [(r["uid"], r["controller"], r["kind"]) for r in refs] == [
            (cr["metadata"]["uid"], True, "DeepSeekV4Deployment")
        ], kind
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "dsv4-operator", kind
        assert labels["app.kubernetes.io/instance"] == name, kind

    want = plan_to_dict(expected)
    lws = children["LeaderWorkerSet"]
    group = lws["spec"]["leaderWorkerTemplate"]
    assert lws["spec"]["replicas"] == spec.replicas
    assert group["size"] == want["layout"]["nodes"]
    assert group["restartPolicy"] == "RecreateGroupAfterStart"
    assert lws["spec"]["startupPolicy"] == "LeaderCreated"
    for template in ("leaderTemplate", "workerTemplate"):
        container = _container(lws, template)
        limits = container["resources"]["limits"]
        assert limits[want["gpu"]["resource"]] == str(want["layout"]["gpus_per_node"])
        pod = group[template]["spec"]
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
        shm_bytes = spec.shm_bytes or want["shm_size_bytes"]
        assert shm["emptyDir"]["medium"] == "Memory"
        assert quantity_bytes(shm["emptyDir"]["sizeLimit"]) == shm_bytes
        assert quantity_bytes(container["resources"]["requests"]["memory"]) >= shm_bytes
        assert pod["nodeSelector"].items() >= want["gpu"]["node_label"].items()
        token_ref = next(e for e in container["env"] if e["name"] == "DSV4_RUNTIME_ADMIN_TOKEN")
        assert token_ref["valueFrom"]["secretKeyRef"] == {"name": f"{name}-admin", "key": "token"}
        config = RuntimeConfig.from_args(container["args"])
        assert (
            config.nodes,
            config.tensor_parallel_size,
            config.data_parallel_size,
            config.max_model_len,
            config.max_num_seqs,
            config.expected_gpus,
            config.expected_shm_bytes,
        ) == (
            want["layout"]["nodes"],
            want["layout"]["tensor_parallel"],
            want["layout"]["data_parallel"],
            want["max_model_len"],
            want["max_num_seqs"],
            want["layout"]["gpus_per_node"],
            shm_bytes,
        )
    assert json.loads(children["ConfigMap"]["data"]["plan.json"]) == json.loads(json.dumps(want))
    assert children["Service"]["spec"]["selector"]["dsv4.io/role"] == "leader"
    assert len(base64.b64decode(children["Secret"]["data"]["token"])) == 64

    status = cluster.dsv4(namespace, name)["status"]  # type: ignore[index]
    assert status["plan"]["gpuType"] == want["gpu"]["type"]
    assert status["plan"]["layout"]["gpusPerReplica"] == want["layout"]["gpus"]
    assert status["endpoint"] == f"http://{name}-api.{namespace}.svc:{spec.service.port}/v1"
    assert status["observedGeneration"] == cr["metadata"]["generation"]
    hub = spec.model_source.hugging_face if spec.model_source else None
    if hub is not None and hub.token_secret_ref is not None:
        # The Hub token Secret the example names does not exist yet: the pods could not start.
        ref = hub.token_secret_ref
        missing = cluster.wait_condition(namespace, name, "Ready", "False", "ReferenceMissing")
        assert (
            f"Secret {ref.name} (spec.modelSource.huggingFace.tokenSecretRef)"
            in (missing["message"])
        )
        control_plane.kubectl(
            "create",
            "secret",
            "generic",
            ref.name,
            f"--from-literal={ref.key}=hf_x",
            "-n",
            namespace,
        )
    source = spec.effective_model_source
    claims = [source.pvc.claim_name] if source.pvc else []
    if source.hugging_face and source.hugging_face.cache and source.hugging_face.cache.claim_name:
        claims.append(source.hugging_face.cache.claim_name)
    if claims:
        # So do absent PersistentVolumeClaims (the pods would stay Pending).
        missing = cluster.wait_condition(namespace, name, "Ready", "False", "ReferenceMissing")
        assert f"PersistentVolumeClaim {claims[0]} (spec.modelSource." in missing["message"]
        for claim in claims:
            _apply(control_plane, namespace, _claim(claim))
    cluster.wait_condition(namespace, name, "Ready", "False", "ReplicasNotReady")

    LwsStatusStandIn(cluster).report(namespace, name)
    cluster.wait_condition(namespace, name, "Ready", "True", "AllReplicasReady", timeout=15)
    final = cluster.dsv4(namespace, name)["status"]  # type: ignore[index]
    assert (final["replicas"], final["readyReplicas"]) == (spec.replicas, spec.replicas)
    assert final["selector"] == f"leaderworkerset.sigs.k8s.io/name={name}"  # from LWS status
    first = f"none -> {want['layout']['gpus']} x {want['gpu']['type']}"
    assert wait_event(cluster, namespace, name, "PlanChanged", first)["type"] == "Normal"


def _fitting_example() -> tuple[dict[str, Any], str]:
    for path in EXAMPLES:
        body = yaml.safe_load(path.read_text())
        if _expected(body)[1].fits:
            return body, body["metadata"]["name"]
    pytest.fail("no example plans (dsv4 plan examples/*.yaml all exit non-zero)")


def test_spec_change_rerenders_and_reports_the_plan_change(
    operator: KopfRunner, control_plane: ControlPlane, cluster: Cluster, namespace: str
) -> None:
    body, name = _fitting_example()
    body["spec"]["replicas"] = 1
    body["spec"].pop("autoscaling", None)
    _apply(control_plane, namespace, body)
    cluster.wait_condition(namespace, name, "Planned", "True")
    wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", namespace, name), "LWS")
    LwsStatusStandIn(cluster).report(namespace, name)
    cluster.wait_condition(namespace, name, "Ready", "True")

    changed = json.loads(json.dumps(body))
    changed["spec"]["replicas"] = 2
    changed["spec"]["maxModelLen"] = 32768
    _, new_plan = _expected(changed)
    assert new_plan.fits
    _apply(control_plane, namespace, changed)

    def rerendered() -> bool:
        lws = cluster.get(LWS_V, "leaderworkersets", namespace, name) or {}
        args = _container(lws, "leaderTemplate")["args"] if lws else []
        return lws.get("spec", {}).get("replicas") == 2 and "32768" in args

    wait_until(rerendered, "LWS re-rendered with replicas 2 and --max-model-len 32768")
    cluster.wait_condition(namespace, name, "Ready", "False", "ReplicasNotReady")
    LwsStatusStandIn(cluster).report(namespace, name, ready=1)
    # Every group updated, one still loading: within the plan's startup budget, not degraded.
    cluster.wait_condition(namespace, name, "Degraded", "False", "ReplicasStarting")
    LwsStatusStandIn(cluster).report(namespace, name)
    cluster.wait_condition(namespace, name, "Ready", "True")
    status = cluster.dsv4(namespace, name)["status"]  # type: ignore[index]
    assert status["observedGeneration"] == 2
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    assert status["plan"]["maxModelLen"] == 32768


def test_gpu_type_change_emits_old_and_new_gpu_counts(
    operator: KopfRunner, control_plane: ControlPlane, cluster: Cluster, namespace: str
) -> None:
    body, name = _fitting_example()
    _, first = _expected(body)
    _apply(control_plane, namespace, body)
    cluster.wait_condition(namespace, name, "Planned", "True")
    alternatives = ["h200-141gb", "b200-180gb", "h100-80gb", "mi300x-192gb"]
    changed = json.loads(json.dumps(body))
    for gpu in alternatives:
        if gpu == first.chosen.gpu.name:
            continue
        changed["spec"]["gpu"]["types"] = [gpu]
        changed["spec"].pop("cost", None)
        if _expected(changed)[1].fits:
            break
    _, second = _expected(changed)
    assert second.fits
    assert second.chosen.gpu.name != first.chosen.gpu.name
    _apply(control_plane, namespace, changed)
    old = f"{first.chosen.layout.gpus} x {first.chosen.gpu.name}"
    new = f"{second.chosen.layout.gpus} x {second.chosen.gpu.name}"

    wait_event(cluster, namespace, name, "PlanChanged", f"{old} -> {new}")
    lws = cluster.get(LWS_V, "leaderworkersets", namespace, name)
    assert lws is not None
    label = second.chosen.gpu.label
    assert label in _lws_pod(lws)["nodeSelector"].values()


def _lws_pod(lws: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]
    return pod


def test_an_hpa_without_metrics_is_reported_on_scaling_active(
    operator: KopfRunner, control_plane: ControlPlane, cluster: Cluster, namespace: str
) -> None:
    """mode: hpa on a cluster whose HPA controller (kube-controller-manager's, real) finds no
    external metrics API: its ScalingActive=False reaches the resource's ScalingActive."""
    body, name = _fitting_example()
    body["spec"]["replicas"] = 1
    body["spec"]["autoscaling"] = {
        "enabled": True,
        "mode": "hpa",
        "minReplicas": 1,
        "maxReplicas": 2,
    }
    _apply(control_plane, namespace, body)
    hpa_version = control_plane.hpa_api_version()
    wait_until(
        lambda: cluster.get(hpa_version, "horizontalpodautoscalers", namespace, name), "the HPA"
    )
    # The HPA controller syncs every 15 s; the operator reads the HPA back at each resync.
    # Until kube-controller-manager's RESTMapper (reset every 30 s) knows the just-installed
    # CRD, the HPA reports AbleToScale=False (FailedGetScale: no matches for kind), which the
    # operator reports the same way: wait for the metrics failure that follows it.
    reported = f"the HorizontalPodAutoscaler {name} reports ScalingActive=False"

    def metrics_failure() -> dict[str, Any] | None:
        c = cluster.condition(namespace, name, "ScalingActive")
        ok = c.get("reason") == "HPANotScaling" and reported in str(c.get("message"))
        return c if ok else None

    found = wait_until(metrics_failure, "ScalingActive=False from the HPA's metrics", 120)
    assert found["status"] == "False"
    assert reported in found["message"]
    assert "(FailedGetExternalMetric)" in found["message"]
    assert "prometheus-adapter must serve" in found["message"]
    assert wait_event(cluster, namespace, name, "HPANotScaling")["type"] == "Warning"
    # Autoscaling disabled: the HPA goes and so does the condition.
    body["spec"]["autoscaling"]["enabled"] = False
    _apply(control_plane, namespace, body)
    wait_until(
        lambda: not cluster.condition(namespace, name, "ScalingActive"),
        "ScalingActive removed",
    )
    assert cluster.get(hpa_version, "horizontalpodautoscalers", namespace, name) is None


def test_keda_mode_reports_scaling_only_once_keda_has_reported_the_scaled_object(
    operator: KopfRunner, control_plane: ControlPlane, cluster: Cluster, namespace: str
) -> None:
    """h29 N6: in keda mode ScalingActive said True as soon as the ScaledObject existed, before
    KEDA had written any condition on it (here: KEDA's CRD and no KEDA operator, as on a
    cluster where KEDA's operator is not running). No KEDA controller runs here: the test
    writes the ScaledObject's status through its status subresource (KEDA's real CRD) as
    KEDA's controller does: first Ready/Active/Fallback/Paused all Unknown
    (GetInitializedConditions), then Ready=True, and Ready=False (TriggerError) when the
    triggers fail (kedacore/keda pkg/scaling/executor/scale_scaledobjects.go)."""
    body, name = _fitting_example()
    body["spec"]["replicas"] = 1
    body["spec"]["autoscaling"] = {
        "enabled": True,
        "mode": "keda",
        "minReplicas": 1,
        "maxReplicas": 2,
    }
    _apply(control_plane, namespace, body)
    keda = ("keda.sh", "v1alpha1", namespace, "scaledobjects", name)
    wait_until(lambda: cluster.get("keda.sh/v1alpha1", "scaledobjects", namespace, name), "SO")
    awaiting = cluster.wait_condition(namespace, name, "ScalingActive", "Unknown", "AwaitingKEDA")
    assert f"the ScaledObject {name} has not reported Ready yet" in awaiting["message"]

    def keda_writes(*conditions: tuple[str, str, str, str]) -> None:
        # KEDA's Condition leaves out an empty reason and message (`omitempty`).
        written = [{"type": t, "status": v, "reason": r, "message": m} for t, v, r, m in conditions]
        status = {"conditions": [{k: v for k, v in c.items() if v} for c in written]}
        cluster.custom.patch_namespaced_custom_object_status(*keda, {"status": status})

    keda_writes(
        ("Ready", "Unknown", "", ""),
        ("Active", "Unknown", "", ""),
        ("Fallback", "Unknown", "", ""),
        ("Paused", "Unknown", "", ""),
    )
    time.sleep(4 * RESYNC_SECONDS)  # a few resyncs read it back: still nothing confirmed
    assert cluster.condition(namespace, name, "ScalingActive")["reason"] == "AwaitingKEDA"
    keda_writes(
        ("Ready", "True", "ScaledObjectReady", "ScaledObject is defined correctly and is ready"),
        ("Active", "False", "ScalerNotActive", "Scaling is not performed"),
        ("Fallback", "False", "NoFallbackFound", "No fallbacks are active on this scaled object"),
        ("Paused", "Unknown", "", ""),
    )
    active = cluster.wait_condition(namespace, name, "ScalingActive", "True", "KEDA")
    assert active["message"] == "a KEDA ScaledObject scales this resource"
    keda_writes(
        ("Ready", "False", "TriggerError", "Triggers defined in ScaledObject are not working"),
        ("Active", "False", "ScalerNotActive", "Scaling is not performed"),
    )
    failing = cluster.wait_condition(namespace, name, "ScalingActive", "False", "KEDANotReady")
    assert f"the ScaledObject {name} reports Ready=False (TriggerError)" in failing["message"]
    assert wait_event(cluster, namespace, name, "KEDANotReady")["type"] == "Warning"
    # Waiting on KEDA is no failure: no Event said so.
    assert not [e for e in cluster.events(namespace, name) if e["reason"] == "AwaitingKEDA"]


def test_reapplying_the_autoscaled_example_keeps_the_scaled_replicas(
    operator: KopfRunner, control_plane: ControlPlane, cluster: Cluster, namespace: str
) -> None:
    """h29: examples/flash-autoscaled.yaml set `spec.replicas: 1` beside `autoscaling`, so
    every `kubectl apply` of it (a GitOps sync, any edit) put the count the scaler had chosen
    back to 1: kubectl's three-way merge patches a field the manifest states whenever the live
    value differs. That removes groups past the native autoscaler's drain."""
    path = REPO_ROOT / "examples" / "flash-autoscaled.yaml"
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    _apply(control_plane, namespace, path)
    cluster.wait_condition(namespace, name, "Planned", "True")
    # What KEDA (or the native autoscaler) does through the scale subresource.
    control_plane.kubectl("scale", "dsv4", name, "-n", namespace, "--replicas", "3")
    _apply(control_plane, namespace, path)
    live = cluster.get("dsv4.io/v1alpha1", "deepseekv4deployments", namespace, name)
    assert live is not None
    assert live["spec"]["replicas"] == 3


def test_dropping_replicas_from_a_manifest_applied_with_them_needs_set_last_applied(
    control_plane: ControlPlane, dsv4_crd: object, namespace: str, tmp_path: Path
) -> None:
    """h33: a resource applied from the example as it was before h29 (`spec.replicas: 1`) and
    then from today's (no `replicas`) went back to 1 replica: kubectl's three-way merge deletes
    a field the last-applied configuration has and the new manifest lacks, and the schema
    default puts 1 there. `kubectl apply set-last-applied` with the new manifest first keeps
    the scaled count (README, Autoscaling)."""
    path = REPO_ROOT / "examples" / "flash-autoscaled.yaml"
    doc = yaml.safe_load(path.read_text())
    name = doc["metadata"]["name"]
    before = {**doc, "spec": {**doc["spec"], "replicas": 1}}

    def scaled_then_applied(*first: str) -> int:
        _apply(control_plane, namespace, before)
        control_plane.kubectl("scale", "dsv4", name, "-n", namespace, "--replicas", "3")
        if first:
            control_plane.kubectl(*first, "-n", namespace, "-f", str(path))
        _apply(control_plane, namespace, path)
        live = control_plane.kubectl_json("get", "dsv4", name, "-n", namespace)
        control_plane.kubectl("delete", "dsv4", name, "-n", namespace, "--wait=true")
        return int(live["spec"]["replicas"])

    assert scaled_then_applied() == 1  # the hazard the README warns of
    assert scaled_then_applied("apply", "set-last-applied") == 3


def test_delete_garbage_collects_every_child(
    operator: KopfRunner, control_plane: ControlPlane, cluster: Cluster, namespace: str
) -> None:
    body, name = _fitting_example()
    _apply(control_plane, namespace, body)
    pdb_version = control_plane.pdb_api_version()
    wait_until(lambda: all(_children(cluster, namespace, name, pdb_version).values()), "children")
    control_plane.kubectl("delete", "dsv4", name, "-n", namespace, "--wait=false")
    wait_until(
        lambda: not any(_children(cluster, namespace, name, pdb_version).values()),
        "every child garbage-collected",
        timeout=60,
    )
    assert cluster.dsv4(namespace, name) is None


def test_invalid_and_unplannable_crs_report_while_valid_ones_reconcile(
    operator: KopfRunner, control_plane: ControlPlane, cluster: Cluster, namespace: str
) -> None:
    good, good_name = _fitting_example()
    # Passes the 1.20 server's schema (it has no CEL) but fails the operator's parse: TP 3 does
    # not divide 8 GPUs per node.
    invalid: dict[str, Any] = {
        "apiVersion": "dsv4.io/v1alpha1",
        "kind": "DeepSeekV4Deployment",
        "metadata": {"name": "bad-tp"},
        "spec": {
            "model": "flash",
            "gpu": {"types": ["h100-80gb"], "gpusPerNode": 8},
            "parallelism": {"tensor": 3},
        },
    }
    too_small = {
        "apiVersion": "dsv4.io/v1alpha1",
        "kind": "DeepSeekV4Deployment",
        "metadata": {"name": "pro-on-one-4090"},
        "spec": {
            "model": "pro",
            "gpu": {"types": ["rtx-4090-24gb"], "gpusPerNode": 1, "maxNodes": 1},
        },
    }
    # A typo in extraArgs: vLLM 0.33.0 would exit 2 in every pod; the parse says so at apply.
    typo: dict[str, Any] = {
        "apiVersion": "dsv4.io/v1alpha1",
        "kind": "DeepSeekV4Deployment",
        "metadata": {"name": "bad-flag"},
        "spec": {**good["spec"], "engine": {"extraArgs": ["--enable-prefix-cache"]}},
    }
    for doc in (invalid, too_small, good, typo):
        _apply(control_plane, namespace, doc)
    ready = cluster.wait_condition(namespace, "bad-tp", "Ready", "False", "InvalidSpec")
    flagged = cluster.wait_condition(namespace, "bad-flag", "Ready", "False", "InvalidSpec")
    assert "did you mean --enable-prefix-caching" in flagged["message"]
    assert cluster.get(LWS_V, "leaderworkersets", namespace, "bad-flag") is None
    assert "spec.parallelism.tensor" in ready["message"] or "parallelism.tensor" in ready["message"]
    assert "gpusPerNode" in ready["message"]
    cluster.wait_condition(namespace, "pro-on-one-4090", "Ready", "False", "InsufficientCapacity")
    cluster.wait_condition(namespace, good_name, "Planned", "True")
    assert wait_event(cluster, namespace, "bad-tp", "InvalidSpec")["type"] == "Warning"
    too_small_event = wait_event(cluster, namespace, "pro-on-one-4090", "InsufficientCapacity")
    assert too_small_event["type"] == "Warning"
    # h13: the planner's advice in the resource's terms, not the CLI's.
    said = too_small_event["message"]
    assert "minimum spec.gpuMemoryUtilizationPercent for one 4,096-token request" in said
    assert "gpu-memory-utilization" not in said
    assert cluster.get(LWS_V, "leaderworkersets", namespace, "bad-tp") is None

    # Fixing the spec recovers it: the operator did not give up on the resource.
    invalid["spec"]["parallelism"] = {"tensor": 4}
    invalid["spec"]["gpu"]["gpusPerNode"] = 8
    assert _expected(invalid)[1].fits
    _apply(control_plane, namespace, invalid)
    cluster.wait_condition(namespace, "bad-tp", "Planned", "True")
    wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", namespace, "bad-tp"), "LWS")


def test_a_plan_warning_that_asks_for_memory_is_one_warning_event(
    operator: KopfRunner, control_plane: ControlPlane, cluster: Cluster, namespace: str
) -> None:
    """h37: HOST_KV_NOT_COUNTED (an LMCache host KV cache the pod's memory request leaves out)
    asks the platform engineer to add memory to spec.resources, but reached only
    status.plan.warnings; now a Warning Event `PlanWarning`, posted once, not at each resync."""
    body, name = _fitting_example()
    body["spec"].pop("autoscaling", None)
    body["spec"]["replicas"] = 1
    config = '{"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}'
    engine = body["spec"].setdefault("engine", {})
    engine["extraArgs"] = [*engine.get("extraArgs", []), "--kv-transfer-config=" + config]
    _apply(control_plane, namespace, body)
    event = wait_event(cluster, namespace, name, "PlanWarning", "HOST_KV_NOT_COUNTED: ")
    assert event["type"] == "Warning"
    assert "spec.resources.requests.memory" in event["message"]
    warnings = cluster.dsv4(namespace, name)["status"]["plan"]["warnings"]  # type: ignore[index]
    assert event["message"] in warnings
    time.sleep(3 * RESYNC_SECONDS)  # resyncs find the warning in status: no repeat
    posted = [e for e in cluster.events(namespace, name) if e.get("reason") == "PlanWarning"]
    assert [(e["message"], e.get("count", 1)) for e in posted] == [(event["message"], 1)]


def test_paused_stops_changes(
    operator: KopfRunner, control_plane: ControlPlane, cluster: Cluster, namespace: str
) -> None:
    body, name = _fitting_example()
    body["spec"].pop("autoscaling", None)
    body["spec"]["replicas"] = 1
    _apply(control_plane, namespace, body)
    wait_until(lambda: cluster.get(LWS_V, "leaderworkersets", namespace, name), "LWS")
    paused = json.loads(json.dumps(body))
    paused["spec"]["paused"] = True
    paused["spec"]["replicas"] = 3
    _apply(control_plane, namespace, paused)
    cluster.wait_condition(namespace, name, "Progressing", "False", "Paused")
    time.sleep(3 * RESYNC_SECONDS)
    lws = cluster.get(LWS_V, "leaderworkersets", namespace, name)
    assert lws is not None
    assert lws["spec"]["replicas"] == 1
    paused["spec"]["paused"] = False
    _apply(control_plane, namespace, paused)
    wait_until(
        lambda: (
            (cluster.get(LWS_V, "leaderworkersets", namespace, name) or {})["spec"]["replicas"] == 3
        ),
        "LWS scaled to 3 after unpausing",
    )
    # h13: a replicas change is a Normal Event naming old and new, posted once (when the
    # change rolls out: here on resuming), as a Deployment's ScalingReplicaSet.
    lws_name = f"LeaderWorkerSet {name}"
    up = wait_event(cluster, namespace, name, "ScalingLeaderWorkerSet", "from 1 to 3")
    assert up["type"] == "Normal"
    assert up["message"] == f"Scaled up {lws_name} from 1 to 3 replica groups (spec.replicas 3)"
    # Through the scale subresource, as `kubectl scale` and any scaler use it.
    control_plane.kubectl("scale", f"dsv4/{name}", "--replicas", "2", "-n", namespace)
    down = wait_event(cluster, namespace, name, "ScalingLeaderWorkerSet", "from 3 to 2")
    assert down["type"] == "Normal"
    assert down["message"] == (
        f"Scaled down {lws_name} from 3 to 2 replica groups (spec.replicas 2)"
    )
    lws = cluster.get(LWS_V, "leaderworkersets", namespace, name)
    assert lws is not None
    assert lws["spec"]["replicas"] == 2
    time.sleep(3 * RESYNC_SECONDS)  # resyncs find the LWS unchanged: no repeat
    scaled = [
        e for e in cluster.events(namespace, name) if e.get("reason") == "ScalingLeaderWorkerSet"
    ]
    assert sorted((e["message"], e.get("count", 1)) for e in scaled) == sorted(
        [(up["message"], 1), (down["message"], 1)]
    )
