"""One reconcile, end to end through the real KubeClient against an in-memory API (FakeApi)."""

from __future__ import annotations

import copy
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest
from tests.operator.kube.fake_api import CoOwnedPorts, FakeApi

from dsv4_operator.api import parse_spec
from dsv4_operator.handlers.reconciler import Reconciler
from dsv4_operator.kube import ApiError, KubeClient
from dsv4_operator.metrics import OperatorMetrics
from dsv4_operator.planning import plan
from dsv4_operator.planning.from_spec import request_from_spec
from dsv4_operator.render import Owner
from dsv4_operator.render.admin import admin_secret, token_from_secret

CR_PATH = "/apis/dsv4.io/v1alpha1/namespaces/ns/deepseekv4deployments/d"
LWS_PATH = "/apis/leaderworkerset.x-k8s.io/v1/namespaces/ns/leaderworkersets/d"
SECRET_PATH = "/api/v1/namespaces/ns/secrets/d-admin"
SPEC: dict[str, Any] = {
    "model": "flash",
    "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8},
    "replicas": 1,
}


class Events(list[tuple[str, str, str]]):
    def __call__(self, kind: str, reason: str, message: str) -> None:
        self.append((kind, reason, message))

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self]


def _setup(spec: dict[str, Any] | None = None, **api: Any) -> tuple[FakeApi, Reconciler]:
    fake = FakeApi(**api)
    fake.objects[CR_PATH] = {
        "apiVersion": "dsv4.io/v1alpha1",
        "kind": "DeepSeekV4Deployment",
        "metadata": {"name": "d", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": copy.deepcopy(spec or SPEC),
    }
    reconciler = Reconciler(
        KubeClient(fake, "dsv4-operator"),
        OperatorMetrics(),
        "img",
        clock=lambda: datetime(2026, 11, 29, tzinfo=UTC),
    )
    return fake, reconciler


HPA_PATH = "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/d"
HPA_SPEC: dict[str, Any] = {
    **SPEC,
    "autoscaling": {"enabled": True, "mode": "hpa", "minReplicas": 1, "maxReplicas": 3},
}


def _setup_hpa() -> tuple[FakeApi, Reconciler]:
    """`_setup` of `HPA_SPEC` (autoscaling mode hpa, 1 to 3) with autoscaling/v2 served."""
    fake, reconciler = _setup(HPA_SPEC)
    fake.served["/apis/autoscaling/v2"] = ["HorizontalPodAutoscaler"]
    return fake, reconciler


def _conditions(fake: FakeApi) -> dict[str, tuple[str, str]]:
    status = fake.objects[CR_PATH].get("status") or {}
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}


def test_valid_spec_rolls_out_once_then_resyncs_without_writes() -> None:
    fake, reconciler = _setup()
    events = Events()
    first = reconciler.reconcile("ns", "d", events)
    assert first.result == "applied"
    assert first.writes == 8  # the admin Secret, 4 children, status, PlanChanged, NoRedundancy
    assert events.reasons() == ["PlanChanged", "NoRedundancy"]
    assert events[1][0] == "Warning"  # 1 replica, no surge: every change stops the service
    assert events[0][2].startswith("GPUs per replica: none -> ")
    assert "x h200-141gb" in events[0][2]
    assert _conditions(fake)["Planned"] == ("True", "PlanReady")
    assert fake.objects[LWS_PATH]["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    second = reconciler.reconcile("ns", "d", events)
    assert (second.result, second.writes) == ("unchanged", 0)
    assert len(events) == 2
    fake.objects[LWS_PATH]["status"] = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    third = reconciler.reconcile("ns", "d", events)
    assert (third.result, third.writes) == ("applied", 2)  # status + the Ready Event
    assert _conditions(fake)["Ready"] == ("True", "AllReplicasReady")
    assert events.reasons()[-1] == "AllReplicasReady"
    text = generate_latest(reconciler.metrics.registry).decode()
    assert 'dsv4_operator_reconciles_total{result="unchanged"} 1.0' in text
    assert "dsv4_operator_managed_deployments 1.0" in text
    assert 'dsv4_operator_planned_gpus{gpu_type="h200-141gb"}' in text


def test_the_admin_secret_is_created_once_and_never_overwritten() -> None:
    fake, reconciler = _setup()
    reconciler.reconcile("ns", "d", Events())
    secret = fake.objects[SECRET_PATH]
    token = token_from_secret(secret)
    assert token is not None
    assert len(token) == 64  # 256 random bits, hex
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    lws = fake.objects[LWS_PATH]["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        (container,) = lws[role]["spec"]["containers"]
        ref = container["env"][0]["valueFrom"]["secretKeyRef"]
        assert (container["env"][0]["name"], ref) == (
            "DSV4_RUNTIME_ADMIN_TOKEN",
            {"name": "d-admin", "key": "token"},
        )
    fake.objects[CR_PATH]["spec"]["replicas"] = 2
    reconciler.reconcile("ns", "d", Events())
    assert token_from_secret(fake.objects[SECRET_PATH]) == token
    # Deleted (e.g. to rotate it): the next reconcile draws a new token, and says it wrote.
    del fake.objects[SECRET_PATH]
    outcome = reconciler.reconcile("ns", "d", Events())
    assert (outcome.result, outcome.writes) == ("applied", 2)  # the Secret, AdminTokenRotated
    rotated = token_from_secret(fake.objects[SECRET_PATH])
    assert rotated is not None
    assert rotated != token


def _secret(owner_uid: str | None, **meta: Any) -> dict[str, Any]:
    secret = admin_secret(Owner("d", "ns", owner_uid or "x"), "flash", "ab" * 32)
    if owner_uid is None:
        del secret["metadata"]["ownerReferences"]
    secret["metadata"].update(meta)
    return secret


def test_an_orphaned_admin_secret_of_this_resource_is_used_as_it_is() -> None:
    """Review finding: after `kubectl delete --cascade=orphan` and a re-create, the orphaned
    admin Secret (this resource's labels, no owner) was refused, so nothing was adopted; the
    orphaned pods hold its token, so it is used, not replaced."""
    fake, reconciler = _setup()
    orphan = _secret(None)
    fake.objects[SECRET_PATH] = copy.deepcopy(orphan)
    assert reconciler.reconcile("ns", "d", Events()).result == "applied"
    assert fake.objects[SECRET_PATH]["data"] == orphan["data"]  # the token the pods hold
    assert LWS_PATH in fake.objects


def test_a_predecessors_admin_secret_is_waited_for_not_used() -> None:
    # Deleted and re-created under the same name before garbage collection: the old Secret
    # goes with its owner, so no pod may be rolled out on it.
    for leftover in (_secret("u-OLD"), _secret("u-1", deletionTimestamp="2026-11-30T00:00:00Z")):
        fake, reconciler = _setup()
        fake.objects[SECRET_PATH] = leftover
        outcome = reconciler.reconcile("ns", "d", Events())
        assert outcome.result == "transient_error"
        assert "left by a deleted DeepSeekV4Deployment" in outcome.message
        assert LWS_PATH not in fake.objects


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (_secret(None, labels={}), "is not owned by this DeepSeekV4Deployment"),
        (_secret("u-other-kind", ownerReferences=[{"kind": "Job", "uid": "j"}]), "is not owned"),
        ({**_secret("u-1"), "data": {}}, "has no valid 'token' key"),
    ],
    ids=["unlabelled-orphan", "foreign", "no-token"],
)
def test_an_unusable_admin_secret_is_reported(secret: dict[str, Any], message: str) -> None:
    fake, reconciler = _setup()
    fake.objects[SECRET_PATH] = secret
    events = Events()
    outcome = reconciler.reconcile("ns", "d", events)
    assert outcome.result == "error"
    assert message in outcome.message
    assert _conditions(fake)["Ready"] == ("False", "ApplyFailed")
    assert LWS_PATH not in fake.objects
    assert fake.objects[SECRET_PATH] == secret  # left as it is


def test_a_forbidden_admin_secret_is_reported_not_raised() -> None:
    fake, reconciler = _setup(fail=[("POST", "/secrets", 403)])
    events = Events()
    outcome = reconciler.reconcile("ns", "d", events)
    assert outcome.result == "error"
    assert _conditions(fake)["Ready"] == ("False", "ApplyFailed")
    assert outcome.message.startswith("Secret ns/d-admin: HTTP 403")  # the object, by kind
    assert LWS_PATH not in fake.objects  # no pods that would wait for a missing Secret


def test_apply_failed_names_the_refused_child_as_kubectl_does_with_the_servers_message() -> None:
    """h42: ApplyFailed named the HTTP request (`PATCH /apis/leaderworkerset.x-k8s.io/v1/
    namespaces/ns/leaderworkersets/d`), not the object a user would `kubectl get`."""
    quota = (
        'leaderworkersets.leaderworkerset.x-k8s.io "d" is forbidden: exceeded quota: no-lws, '
        "requested: count/leaderworkersets.leaderworkerset.x-k8s.io=1, used: "
        "count/leaderworkersets.leaderworkerset.x-k8s.io=0, limited: "
        "count/leaderworkersets.leaderworkerset.x-k8s.io=0"
    )
    fake, reconciler = _setup(fail=[("PATCH", "/leaderworkersets/", 403)], fail_message=quota)
    events = Events()
    assert reconciler.reconcile("ns", "d", events).result == "error"
    ready = next(c for c in fake.objects[CR_PATH]["status"]["conditions"] if c["type"] == "Ready")
    assert ready["message"] == f"LeaderWorkerSet ns/d: HTTP 403: {quota}"
    assert events[-1] == ("Warning", "ApplyFailed", ready["message"])


def test_a_template_change_is_not_reported_ready_on_the_old_counts() -> None:
    # The apply's response carries the LWS status from before the change (the LWS controller
    # has not counted the new revision yet, and sets no observedGeneration to tell).
    fake, reconciler = _setup()
    events = Events()
    reconciler.reconcile("ns", "d", events)
    fake.objects[LWS_PATH]["status"] = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["Ready"] == ("True", "AllReplicasReady")
    fake.objects[CR_PATH]["spec"]["engine"] = {"extraArgs": ["--enforce-eager"]}
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    assert fake.objects[CR_PATH]["status"]["observedGeneration"] == 2
    assert _conditions(fake)["Ready"] == ("False", "ReplicasNotReady")
    assert _conditions(fake)["Progressing"] == ("True", "RollingOut")
    # The next reconcile changes nothing in the LWS and believes its (now fresh) counts.
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    assert _conditions(fake)["Ready"] == ("True", "AllReplicasReady")


def test_lws_counts_older_than_its_generation_are_not_ready() -> None:
    """Review finding: only the reconcile that changed the LWS distrusted its counts; the next
    one, before the LWS controller had observed the change, reported Ready on the old
    revision's counts although LWS says so in status.observedGeneration."""
    fake, reconciler = _setup()
    events = Events()
    reconciler.reconcile("ns", "d", events)
    lws = fake.objects[LWS_PATH]
    lws["metadata"]["generation"] = 2
    lws["status"] = {
        "replicas": 1,
        "readyReplicas": 1,
        "updatedReplicas": 1,
        "observedGeneration": 1,
    }
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["Ready"] == ("False", "ReplicasNotReady")
    lws["status"]["observedGeneration"] = 2
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["Ready"] == ("True", "AllReplicasReady")


def test_a_rollout_strategy_change_rolls_no_pod_and_keeps_ready() -> None:
    """Review finding: any LWS change, even of maxSurge alone, flipped Ready to False for one
    reconcile (a new lastTransitionTime and another AllReplicasReady Event)."""
    fake, reconciler = _setup({**SPEC, "replicas": 2})
    events = Events()
    reconciler.reconcile("ns", "d", events)
    fake.objects[LWS_PATH]["status"] = {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["Ready"] == ("True", "AllReplicasReady")
    ready_events = events.reasons().count("AllReplicasReady")
    fake.objects[CR_PATH]["spec"]["rollout"] = {"maxSurge": 2, "maxUnavailable": 0}
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    rolling = fake.objects[LWS_PATH]["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"]
    assert rolling["maxSurge"] == 2
    assert _conditions(fake)["Ready"] == ("True", "AllReplicasReady")
    assert events.reasons().count("AllReplicasReady") == ready_events


TWO_NODE_SPEC: dict[str, Any] = {
    "model": "pro",
    "maxModelLen": 1048576,
    "load": {"concurrency": 4},
    "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8, "maxNodes": 2},
}
"""Plans 2 nodes per group: LeaderWorkerSet creates a worker StatefulSet per group."""


def test_one_pod_groups_have_no_worker_statefulsets_to_name() -> None:
    # LWS creates no worker StatefulSet for groups of one pod, so a 49-character name takes
    # 101 one-node groups (the leaders' StatefulSet is named after the resource alone).
    name = "b" * 49
    fake, reconciler = _setup({**SPEC, "replicas": 101})
    path = CR_PATH.removesuffix("/d") + f"/{name}"
    fake.objects[path] = fake.objects.pop(CR_PATH)
    fake.objects[path]["metadata"]["name"] = name
    assert reconciler.reconcile("ns", name, Events()).result == "applied"


@pytest.mark.parametrize(
    ("name", "replicas", "message"),
    [
        # Stored before the CRD had the name rule: over 50 never works.
        ("a" * 51, 1, "metadata.name: 51 characters, more than 50"),
        # 49 characters fit up to 100 groups; the 101st group's StatefulSet has 53.
        ("b" * 49, 101, "the worker StatefulSet '" + "b" * 49 + "-100' has 53 characters"),
    ],
)
def test_a_name_the_children_cannot_take_is_an_invalid_spec(
    name: str, replicas: int, message: str
) -> None:
    # The load is per deployment: 4 concurrent 1M requests per replica keep groups 2 nodes.
    load = {"concurrency": 4 * replicas}
    fake, reconciler = _setup({**TWO_NODE_SPEC, "replicas": replicas, "load": load})
    path = CR_PATH.removesuffix("/d") + f"/{name}"
    fake.objects[path] = fake.objects.pop(CR_PATH)
    fake.objects[path]["metadata"]["name"] = name
    events = Events()
    assert reconciler.reconcile("ns", name, events).result == "invalid_spec"
    conditions = fake.objects[path]["status"]["conditions"]
    ready = next(c for c in conditions if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert events[0][:2] == ("Warning", "InvalidSpec")
    assert message in events[0][2]
    assert not any("leaderworkersets" in key for key in fake.objects)


def test_invalid_spec_reports_once_and_keeps_going() -> None:
    fake, reconciler = _setup(
        {**SPEC, "gpu": {"types": ["h100-80gb"], "gpusPerNode": 8}, "parallelism": {"tensor": 3}}
    )
    events = Events()
    outcome = reconciler.reconcile("ns", "d", events)
    assert outcome.result == "invalid_spec"
    assert outcome.failed
    assert _conditions(fake)["Ready"] == ("False", "InvalidSpec")
    assert events[0][:2] == ("Warning", "InvalidSpec")
    assert "parallelism.tensor (3) must divide gpu.gpusPerNode (8)" in events[0][2]
    assert LWS_PATH not in fake.objects
    again = reconciler.reconcile("ns", "d", events)
    assert (again.result, again.writes, len(events)) == ("invalid_spec", 0, 1)
    fake.objects[CR_PATH]["spec"] = copy.deepcopy(SPEC)
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    assert _conditions(fake)["Planned"] == ("True", "PlanReady")


def test_planned_gpus_stay_while_a_later_spec_cannot_be_planned() -> None:
    # The groups of the last rollout keep running under an invalid or unfittable spec, so the
    # GPU gauge keeps their count instead of dropping to 0.
    fake, reconciler = _setup()
    reconciler.reconcile("ns", "d", Events())

    def gauge() -> str:
        text = generate_latest(reconciler.metrics.registry).decode()
        return next(line for line in text.splitlines() if line.startswith("dsv4_operator_planned"))

    running = gauge()
    assert running == 'dsv4_operator_planned_gpus{gpu_type="h200-141gb"} 2.0'  # 1x2 TP1 DP2
    unfit = {"model": "pro", "gpu": {"types": ["rtx-4090-24gb"], "gpusPerNode": 1}}
    for spec in ({**SPEC, "parallelism": {"tensor": 3}}, unfit):
        fake.objects[CR_PATH]["spec"] = spec
        assert reconciler.reconcile("ns", "d", Events()).result in {"invalid_spec", "plan_failed"}
        assert gauge() == running


def test_a_placement_the_planned_group_cannot_take_is_an_invalid_spec() -> None:
    # Pro at 1M with 4 requests plans 2 nodes of 8x H200 per group: one host cannot hold it.
    spec = {
        "model": "pro",
        "maxModelLen": 1048576,
        "load": {"concurrency": 4},
        "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8, "maxNodes": 2},
        "placement": {"exclusiveTopologyKey": "kubernetes.io/hostname"},
    }
    fake, reconciler = _setup(spec)
    events = Events()
    assert reconciler.reconcile("ns", "d", events).result == "invalid_spec"
    assert _conditions(fake)["Ready"] == ("False", "InvalidSpec")
    assert events[0][:2] == ("Warning", "InvalidSpec")
    assert "the plan's group spans 2 nodes: use a rack or network-block label" in events[0][2]
    assert LWS_PATH not in fake.objects
    # A rack-level domain is fine: the group rolls out with the annotation.
    fake.objects[CR_PATH]["spec"]["placement"] = {"exclusiveTopologyKey": "example.com/rack"}
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    lws = fake.objects[LWS_PATH]
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    annotations = lws["metadata"]["annotations"]
    assert annotations["leaderworkerset.sigs.k8s.io/exclusive-topology"] == "example.com/rack"


def test_unplannable_spec_is_insufficient_capacity() -> None:
    fake, reconciler = _setup(
        {"model": "pro", "gpu": {"types": ["rtx-4090-24gb"], "gpusPerNode": 1, "maxNodes": 1}}
    )
    events = Events()
    assert reconciler.reconcile("ns", "d", events).result == "plan_failed"
    assert _conditions(fake)["Ready"] == ("False", "InsufficientCapacity")
    assert events.reasons() == ["InsufficientCapacity"]


def test_insufficient_capacity_says_what_would_fit_in_spec_fields() -> None:
    """New-user trial: the CLI's advice (offload, more nodes) was missing from the status, and
    `--cpu-offload-gb` in extraArgs was accepted but not planned."""
    spec = {
        "model": "pro",
        "maxModelLen": 1_048_576,
        "gpu": {"types": ["h100-80gb"], "gpusPerNode": 8, "maxNodes": 1},
    }
    fake, reconciler = _setup(spec)
    reconciler.reconcile("ns", "d", Events())
    message = next(
        c["message"] for c in fake.objects[CR_PATH]["status"]["conditions"] if c["type"] == "Ready"
    )
    # 54 GiB (49 before each request's window and state blocks were counted as vLLM 0.33.0
    # reserves them in its shared pool).
    assert "what would fit: CPU offload of 54 GiB per GPU" in message
    assert "(spec.engine.extraArgs: --cpu-offload-gb=54; slow)" in message
    assert "(3x8 TP2 DP12; spec.gpu.maxNodes >= 3)" in message
    # Following the offload advice now plans (the planner reads the flag).
    spec["engine"] = {"extraArgs": ["--cpu-offload-gb=54"]}
    fake, reconciler = _setup(spec)
    events = Events()
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    assert _conditions(fake)["Ready"][1] != "InsufficientCapacity"
    warnings = fake.objects[CR_PATH]["status"]["plan"]["warnings"]
    assert any(w.startswith("CPU_OFFLOAD: ") for w in warnings)


def test_an_lmcache_host_kv_cache_is_reconciled_with_a_plan_warning() -> None:
    """h34: vLLM 0.33.0 runs LMCache (vLLM production-stack's KV offloading), but the operator
    refused it (InvalidSpec), so an upgrade stopped reconciling every resource that used it.
    It is applied now, its uncounted host memory named in status.plan.warnings."""
    config = '{"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}'
    spec = {**SPEC, "engine": {"extraArgs": ["--kv-transfer-config=" + config]}}
    fake, reconciler = _setup(spec)
    assert reconciler.reconcile("ns", "d", Events()).result == "applied"
    assert _conditions(fake)["Ready"][1] != "InvalidSpec"
    warnings = fake.objects[CR_PATH]["status"]["plan"]["warnings"]
    (line,) = [w for w in warnings if w.startswith("HOST_KV_NOT_COUNTED: ")]
    assert "LMCacheConnectorV1" in line
    assert "spec.resources.requests.memory" in line


def _ready(fake: FakeApi) -> str:
    conditions = fake.objects[CR_PATH]["status"]["conditions"]
    return str(next(c["message"] for c in conditions if c["type"] == "Ready"))


def _applies(spec: dict[str, Any]) -> bool:
    _, reconciler = _setup(spec)
    return reconciler.reconcile("ns", "d", Events()).result == "applied"


_H200_X8 = {"types": ["h200-141gb"], "gpusPerNode": 8, "maxNodes": 1}
_H200_X2 = {"types": ["h200-141gb"], "gpusPerNode": 2, "maxNodes": 1}


def test_a_utilization_vllm_refuses_is_advised_as_the_spec_percent() -> None:
    """h13: InsufficientCapacity said "use a gpu-memory-utilization of at most 0.98", the CLI's
    option, where the resource's field is spec.gpuMemoryUtilizationPercent, in percent."""
    spec = {
        "model": "flash",
        "gpuMemoryUtilizationPercent": 99,
        "gpu": _H200_X8,
        "parallelism": {"tensor": 8, "data": 1},
    }
    fake, reconciler = _setup(spec)
    events = Events()
    assert reconciler.reconcile("ns", "d", events).result == "plan_failed"
    message = _ready(fake)
    assert message.startswith("no layout of h200-141gb within spec.gpu fits")
    assert "spec.gpuMemoryUtilizationPercent 99 leaves " in message
    assert "use a spec.gpuMemoryUtilizationPercent of at most 98" in message
    assert "gpu-memory-utilization" not in message
    assert events == [("Warning", "InsufficientCapacity", message)]
    # The value pasted into the spec plans.
    assert _applies({**spec, "gpuMemoryUtilizationPercent": 98})


@pytest.mark.parametrize("percent", [50, 62])
def test_the_minimum_utilization_and_the_longest_context_are_advised_in_spec_fields(
    percent: int,
) -> None:
    """h13: "minimum gpu-memory-utilization ...: 0.6349" and "largest max-model-len that fits:
    595,712" reached the condition as the CLI says them: neither field name nor value (a
    fraction; thousands separators) can be pasted into the spec."""
    spec = {
        "model": "flash",
        "maxModelLen": 1_048_576,
        "gpuMemoryUtilizationPercent": percent,
        "gpu": _H200_X2,
    }
    fake, reconciler = _setup(spec)
    assert reconciler.reconcile("ns", "d", Events()).result == "plan_failed"
    message = _ready(fake)
    assert "gpu-memory-utilization" not in message
    assert "max-model-len" not in message
    need = re.search(
        r"minimum spec\.gpuMemoryUtilizationPercent for one 1,048,576-token request: (\d+);",
        message,
    )
    assert need is not None, message
    assert int(need[1]) > percent
    assert _applies({**spec, "gpuMemoryUtilizationPercent": int(need[1])})
    assert not _applies({**spec, "gpuMemoryUtilizationPercent": int(need[1]) - 1})
    longest = re.search(r"largest spec\.maxModelLen that fits: (\d+);", message)
    if percent == 62:  # the pool holds a shorter context (at 50 the weights leave none)
        assert longest is not None, message
        assert _applies({**spec, "maxModelLen": int(longest[1])})
    else:
        assert longest is None
    # The CLI keeps its own terms (`dsv4 plan`, and its JSON).
    cli = " ".join(f.message for f in plan(request_from_spec(parse_spec(spec))).warnings)
    assert "minimum gpu-memory-utilization for one 1,048,576-token request: 0." in cli
    assert "spec.gpuMemoryUtilizationPercent" not in cli
    assert "spec.maxModelLen" not in cli


def test_a_batch_below_max_num_seqs_is_advised_in_spec_fields() -> None:
    """h13: "raise max-num-batched-tokens or lower the concurrency per DP rank" named neither
    spec.maxNumBatchedTokens nor the value vLLM needs."""
    spec = {"model": "flash", "maxNumSeqs": 2000, "maxNumBatchedTokens": 1024, "gpu": _H200_X8}
    fake, reconciler = _setup(spec)
    assert reconciler.reconcile("ns", "d", Events()).result == "plan_failed"
    message = _ready(fake)
    assert "(raise spec.maxNumBatchedTokens to at least 2000 or lower spec.maxNumSeqs)" in message
    assert _applies({**spec, "maxNumBatchedTokens": 2000})
    # Set by spec.load.concurrency: that is the field to lower.
    spec = {"model": "flash", "load": {"concurrency": 4000}, "maxNumBatchedTokens": 1024}
    fake, reconciler = _setup({**spec, "gpu": _H200_X8, "parallelism": {"data": 1}})
    reconciler.reconcile("ns", "d", Events())
    message = _ready(fake)
    assert "raise spec.maxNumBatchedTokens to at least 4000 or lower the spec.load.concurrency" in (
        message
    )


def test_an_engine_too_old_for_the_model_is_an_invalid_spec_naming_the_version() -> None:
    """h13: a spec.engine.version before DeepseekV4ForCausalLM plans a fitting layout that the
    planner then refuses (ENGINE_TOO_OLD); the condition said "no layout ... fits: closest is
    2 x h200-141gb (1x2 TP1 DP2): " and nothing after: neither the version nor the cause."""
    fake, reconciler = _setup({**SPEC, "engine": {"version": "0.10.0"}})
    events = Events()
    assert reconciler.reconcile("ns", "d", events).result == "invalid_spec"
    assert _conditions(fake)["Ready"] == ("False", "InvalidSpec")
    message = _ready(fake)
    assert message.startswith("spec.engine.version 0.10.0: ")
    assert "is older than 0.20.0, the first release with DeepseekV4ForCausalLM" in message
    assert "Unrecognized model architecture" in message
    assert events == [("Warning", "InvalidSpec", message)]


@pytest.mark.parametrize(
    ("change", "field", "cause"),
    [
        ({"parallelism": {"tensor": 3}}, "spec.parallelism.tensor", "TP=3 does not divide"),
        ({"parallelism": {"data": 3}}, "spec.parallelism.data", "TP x DP=3 does not divide"),
        ({"parallelism": {"pipeline": 2}}, "spec.parallelism.pipeline", "PP=2: vllm"),
        (
            {"gpu": {"types": ["h200-141gb"], "budget": 1}, "parallelism": {"tensor": 8}},
            "spec.gpu.budget",
            "8 GPUs exceed the GPU budget of 1",
        ),
    ],
)
def test_a_spec_no_layout_can_take_names_the_spec_field(
    change: dict[str, Any], field: str, cause: str
) -> None:
    """h13: PlanFailed named the planner's request field (`tensor_parallel: no layout can be
    evaluated: TP=3 ...`), not the resource's (gpusPerNode unset: the CRD's own check of the
    pinned sizes does not apply)."""
    spec = {"model": "flash", "gpu": {"types": ["h200-141gb"]}, **change}
    fake, reconciler = _setup(spec)
    events = Events()
    assert reconciler.reconcile("ns", "d", events).result == "plan_failed"
    assert _conditions(fake)["Ready"] == ("False", "PlanFailed")
    message = _ready(fake)
    assert message.startswith(f"{field}: no layout can be evaluated: {cause}")
    assert events == [("Warning", "PlanFailed", message)]


def test_a_node_size_above_the_types_is_advised_in_the_spec_field_only() -> None:
    """h13: status.plan.warnings advised "leave spec.gpu.gpusPerNode / --gpus-per-node unset",
    a CLI flag the resource has no use for."""
    spec = {"model": "flash", "gpu": {"types": ["h200-141gb"], "gpusPerNode": 16}}
    fake, reconciler = _setup({**spec, "parallelism": {"tensor": 8, "data": 2}})
    assert reconciler.reconcile("ns", "d", Events()).result == "applied"
    warnings = fake.objects[CR_PATH]["status"]["plan"]["warnings"]
    (above,) = [w for w in warnings if w.startswith("GPUS_PER_NODE_ABOVE_TYPE: ")]
    assert above.endswith("(leave spec.gpu.gpusPerNode unset for the type's node size)")
    assert "--gpus-per-node" not in above
    # `dsv4 plan` reads a file or flags: it names both.
    cli = plan(request_from_spec(parse_spec({**spec, "parallelism": {"tensor": 8, "data": 2}})))
    (said,) = [w.message for w in cli.warnings if w.code == "GPUS_PER_NODE_ABOVE_TYPE"]
    assert said.endswith(
        "(leave spec.gpu.gpusPerNode / --gpus-per-node unset for the type's node size)"
    )


def test_a_budget_shared_by_replicas_says_its_share_when_no_layout_can_take_it() -> None:
    """h13: "spec.gpu.budget: ... 8 GPUs exceed the GPU budget of 4" under a budget of 8: the
    planner's budget is per replica (spec.gpu.budget // replicas)."""
    spec = {
        "model": "flash",
        "replicas": 2,
        "gpu": {"types": ["h200-141gb"], "budget": 8},
        "parallelism": {"tensor": 8},
    }
    fake, reconciler = _setup(spec)
    assert reconciler.reconcile("ns", "d", Events()).result == "plan_failed"
    assert _ready(fake) == (
        "spec.gpu.budget: no layout can be evaluated: 8 GPUs exceed the GPU budget of 4; "
        "spec.gpu.budget 8 shared by spec.replicas 2 leaves 4 GPUs per replica (lower "
        "spec.replicas or raise the budget)"
    )


def test_a_budget_shared_by_the_autoscaling_floor_says_so_when_no_layout_can_take_it() -> None:
    """PlanFailed and InsufficientCapacity word the share with one helper
    (`budget_share_words`): with autoscaling on, minReplicas sets it."""
    spec = {
        "model": "flash",
        "replicas": 2,
        "gpu": {"types": ["h200-141gb"], "budget": 8},
        "parallelism": {"tensor": 8},
        "autoscaling": {"enabled": True, "mode": "native", "minReplicas": 2, "maxReplicas": 3},
    }
    fake, reconciler = _setup(spec)
    assert reconciler.reconcile("ns", "d", Events()).result == "plan_failed"
    assert _ready(fake).endswith(
        "; spec.gpu.budget 8 shared by spec.autoscaling.minReplicas 2 leaves 4 GPUs per replica "
        "(lower spec.autoscaling.minReplicas or raise the budget)"
    )


def test_a_rejected_gpu_types_reason_in_status_is_in_spec_fields() -> None:
    """h13: status.plan.rejected gave the CLI's "minimum gpu-memory-utilization ... would be
    1.5738" for a type that did not fit beside one that did."""
    spec = {
        "model": "flash",
        "maxModelLen": 1_048_576,
        "gpu": {"types": ["rtx-4090-24gb", "h200-141gb"], "maxNodes": 1},
    }
    fake, reconciler = _setup(spec)
    assert reconciler.reconcile("ns", "d", Events()).result == "applied"
    (rejected,) = fake.objects[CR_PATH]["status"]["plan"]["rejected"]
    assert rejected["gpuType"] == "rtx-4090-24gb"
    assert (
        "minimum spec.gpuMemoryUtilizationPercent for one 1,048,576-token request would be "
        in (rejected["reason"])
    )
    assert "gpu-memory-utilization" not in rejected["reason"]


@pytest.mark.parametrize("offload", [None, 5, 7])
def test_the_offload_advice_is_the_total_to_set(offload: int | None) -> None:
    """Review finding: with --cpu-offload-gb already set, the advice gave only the GiB still
    missing (12, then 7, then 5: it never converged)."""
    spec: dict[str, Any] = {
        "model": "flash",
        "maxModelLen": 8192,
        "gpu": {"types": ["h100-80gb"], "gpusPerNode": 2, "maxNodes": 1},
    }
    if offload is not None:
        spec["engine"] = {"extraArgs": [f"--cpu-offload-gb={offload}"]}
    fake, reconciler = _setup(spec)
    reconciler.reconcile("ns", "d", Events())
    ready = next(c for c in fake.objects[CR_PATH]["status"]["conditions"] if c["type"] == "Ready")
    assert "(spec.engine.extraArgs: --cpu-offload-gb=12; slow)" in ready["message"]
    spec["engine"] = {"extraArgs": ["--cpu-offload-gb=12"]}
    fake, reconciler = _setup(spec)
    assert reconciler.reconcile("ns", "d", Events()).result == "applied"


@pytest.mark.parametrize("arg", ["--cpu-offload-gb", "--cpu-offload-gb=x", "--cpu-offload-gb=-1"])
def test_a_bad_cpu_offload_value_is_an_invalid_spec(arg: str) -> None:
    fake, reconciler = _setup({**SPEC, "engine": {"extraArgs": [arg]}})
    assert reconciler.reconcile("ns", "d", Events()).result == "invalid_spec"
    ready = next(c for c in fake.objects[CR_PATH]["status"]["conditions"] if c["type"] == "Ready")
    assert "--cpu-offload-gb needs a value in the same entry" in ready["message"]


def test_a_missing_token_secret_or_key_is_reported_until_it_exists() -> None:
    """New-user trial: without the `hf-token` Secret the pods never start, yet the resource
    said only RollingOut."""
    spec = {
        **SPEC,
        "modelSource": {
            "huggingFace": {
                "repo": "deepseek-ai/DeepSeek-V4-Flash",
                "tokenSecretRef": {"name": "hf"},
            }
        },
        "engine": {
            "env": [{"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]
        },
    }
    fake, reconciler = _setup(spec)
    events = Events()
    reconciler.reconcile("ns", "d", events)
    ready = next(c for c in fake.objects[CR_PATH]["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ReferenceMissing"
    assert (
        "Secret hf (spec.modelSource.huggingFace.tokenSecretRef) does not exist" in ready["message"]
    )
    assert "ConfigMap cfg (spec.engine.env CFG) does not exist" in ready["message"]
    assert _conditions(fake)["Degraded"] == ("True", "ReferenceMissing")
    assert ("Warning", "ReferenceMissing") in [(k, r) for k, r, _ in events]
    assert LWS_PATH in fake.objects  # the rollout goes on: pods start once the objects exist
    fake.objects["/api/v1/namespaces/ns/secrets/hf"] = {"metadata": {"name": "hf"}, "data": {}}
    fake.objects["/api/v1/namespaces/ns/configmaps/cfg"] = {"metadata": {}, "data": {"k": "v"}}
    reconciler.reconcile("ns", "d", events)
    ready = next(c for c in fake.objects[CR_PATH]["status"]["conditions"] if c["type"] == "Ready")
    assert ready["message"].startswith("Secret hf has no key token (")
    fake.objects["/api/v1/namespaces/ns/secrets/hf"]["data"] = {"token": "aGY="}
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["Ready"] == ("False", "ReplicasNotReady")
    assert _conditions(fake)["Degraded"] == ("False", "AsExpected")


def test_plan_change_event_names_old_and_new_gpu_counts() -> None:
    fake, reconciler = _setup()
    events = Events()
    reconciler.reconcile("ns", "d", events)
    fake.objects[CR_PATH]["spec"]["gpu"] = {"types": ["h100-80gb"], "gpusPerNode": 8}
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    reconciler.reconcile("ns", "d", events)
    changes = [m for _, r, m in events if r == "PlanChanged"]
    assert len(changes) == 2
    assert "x h200-141gb -> " in changes[1]
    assert "x h100-80gb" in changes[1]


def _scaling(events: Events) -> list[tuple[str, str]]:
    return [
        (kind, message) for kind, reason, message in events if reason == "ScalingLeaderWorkerSet"
    ]


def test_a_replicas_change_is_a_normal_event_once_naming_old_and_new() -> None:
    """h13: `kubectl scale dsv4/d --replicas 3` (or an edit of spec.replicas alone) scaled the
    LeaderWorkerSet without an Event; a Deployment says ScalingReplicaSet."""
    fake, reconciler = _setup()
    events = Events()
    reconciler.reconcile("ns", "d", events)
    assert _scaling(events) == []  # created at 1: PlanChanged says so
    fake.objects[CR_PATH]["spec"]["replicas"] = 3  # what the scale subresource writes
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    reconciler.reconcile("ns", "d", events)
    assert fake.objects[LWS_PATH]["spec"]["replicas"] == 3
    assert _scaling(events) == [
        ("Normal", "Scaled up LeaderWorkerSet d from 1 to 3 replica groups (spec.replicas 3)")
    ]
    reconciler.reconcile("ns", "d", events)  # a resync: not again
    assert len(_scaling(events)) == 1
    fake.objects[CR_PATH]["spec"]["replicas"] = 0
    reconciler.reconcile("ns", "d", events)
    assert _scaling(events)[1:] == [
        ("Normal", "Scaled down LeaderWorkerSet d from 3 to 0 replica groups (spec.replicas 0)")
    ]


def test_a_native_autoscaler_change_posts_no_second_event() -> None:
    """The native autoscaler posts ScaledUp/ScaledDown on the resource itself
    (`handlers.autoscaler`): the rollout of its change adds none."""
    spec = {**SPEC, "autoscaling": {"enabled": True, "mode": "native", "maxReplicas": 3}}
    fake, reconciler = _setup(spec)
    events = Events()
    reconciler.reconcile("ns", "d", events)
    fake.objects[CR_PATH]["spec"]["replicas"] = 2
    reconciler.reconcile("ns", "d", events)
    assert fake.objects[LWS_PATH]["spec"]["replicas"] == 2
    assert _scaling(events) == []


@pytest.mark.parametrize("mode", ["hpa", "keda"])
def test_an_hpa_driven_change_is_posted_on_the_resource(mode: str) -> None:
    """Sixteenth-session note: in modes hpa and keda the HPA posts SuccessfulRescale on itself
    only, so `kubectl describe` of the resource showed no scaling at all."""
    spec = {**SPEC, "autoscaling": {"enabled": True, "mode": mode, "maxReplicas": 3}}
    fake, reconciler = _setup(spec)
    fake.served["/apis/autoscaling/v2"] = ["HorizontalPodAutoscaler"]
    fake.served["/apis/keda.sh/v1alpha1"] = ["ScaledObject"]
    events = Events()
    reconciler.reconcile("ns", "d", events)
    fake.objects[CR_PATH]["spec"]["replicas"] = 2  # what the HPA writes (scale subresource)
    reconciler.reconcile("ns", "d", events)
    assert fake.objects[LWS_PATH]["spec"]["replicas"] == 2
    assert _scaling(events) == [
        (
            "Normal",
            "Scaled up LeaderWorkerSet d from 1 to 2 replica groups "
            f"(spec.replicas 2, set by autoscaling mode {mode})",
        )
    ]
    reconciler.reconcile("ns", "d", events)  # a resync: not again
    assert len(_scaling(events)) == 1


def test_keda_mode_without_keda_names_no_scaler() -> None:
    """h19: in mode keda without KEDA installed no ScaledObject is rendered, so a change of
    spec.replicas is a person's (kubectl scale), not KEDA's; the Event said "set by
    autoscaling mode keda"."""
    spec = {**SPEC, "autoscaling": {"enabled": True, "mode": "keda", "maxReplicas": 3}}
    fake, reconciler = _setup(spec)  # keda.sh not served
    events = Events()
    reconciler.reconcile("ns", "d", events)
    fake.objects[CR_PATH]["spec"]["replicas"] = 2
    reconciler.reconcile("ns", "d", events)
    assert fake.objects[LWS_PATH]["spec"]["replicas"] == 2
    assert _scaling(events) == [
        ("Normal", "Scaled up LeaderWorkerSet d from 1 to 2 replica groups (spec.replicas 2)")
    ]


def test_a_plan_that_predicts_a_hang_is_a_warning_event_once() -> None:
    """New-user trial: MTP at 1M context plans (fits), but the plan's hang warning reached only
    status.plan.warnings: nothing a platform engineer watching Events would see."""
    spec = {**SPEC, "maxModelLen": 1_048_576}
    spec["speculativeDecoding"] = {"method": "mtp", "numSpeculativeTokens": 1}
    fake, reconciler = _setup(spec)
    events = Events()
    reconciler.reconcile("ns", "d", events)
    reconciler.reconcile("ns", "d", events)  # a resync: not again
    hang = [(k, m) for k, r, m in events if r == "PlanWarning"]
    assert len(hang) == 1
    assert hang[0][0] == "Warning"
    assert hang[0][1].startswith("MTP_LONG_CONTEXT_HANG: ")
    # h13: in spec fields (it said "disable speculation or cap max-model-len at 32,768"), in
    # the Event and in status.plan.warnings alike; the value pasted plans without the hazard.
    assert hang[0][1].endswith("disable spec.speculativeDecoding or cap spec.maxModelLen at 32768")
    assert "max-model-len" not in hang[0][1]
    warnings = fake.objects[CR_PATH]["status"]["plan"]["warnings"]
    assert hang[0][1] in warnings
    capped = Events()
    fake, reconciler = _setup({**spec, "maxModelLen": 32768})
    reconciler.reconcile("ns", "d", capped)
    assert "PlanWarning" not in capped.reasons()
    assert not any(
        w.startswith("MTP_") for w in fake.objects[CR_PATH]["status"]["plan"]["warnings"]
    )
    # Without speculation: no such Event.
    _, reconciler = _setup({**SPEC, "maxModelLen": 1_048_576})
    quiet = Events()
    reconciler.reconcile("ns", "d", quiet)
    assert "PlanWarning" not in quiet.reasons()


def test_transient_error_is_returned_with_a_delay_and_an_event() -> None:
    fake, reconciler = _setup(fail=[("PATCH", "/leaderworkersets/", 409)])
    events = Events()
    outcome = reconciler.reconcile("ns", "d", events)
    assert outcome.result == "transient_error"
    assert outcome.retry_after == 2.0  # the server's Retry-After
    assert events.reasons()[-1] == "ApiRetry"
    assert "HTTP 409" in events[-1][2]
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    assert LWS_PATH in fake.objects


def test_an_outage_posts_one_api_retry_event_per_status_and_streak_not_per_attempt() -> None:
    """While the API server is down every resync and progress tick fails the same way: one
    ApiRetry Event per HTTP status in the streak, not one per attempt (kopf queues them all and
    posts the backlog when the server returns: 52 Events per resource after a 2-minute outage
    with a 10 s resync and 3 s progress timer). A success ends the streak.
    """
    fail = [("GET", "/deepseekv4deployments/", 503)] * 4 + [("GET", "/deepseekv4deployments/", 500)]
    fake, reconciler = _setup(fail=[*fail, ("GET", "/deepseekv4deployments/", 503)])
    events = Events()
    outcomes = [reconciler.reconcile("ns", "d", events) for _ in range(6)]
    assert [o.result for o in outcomes] == ["transient_error"] * 6
    assert all(o.retry_after == 2.0 for o in outcomes)
    assert events.reasons() == ["ApiRetry", "ApiRetry"]
    assert ["HTTP 503" in m for _, _, m in events] == [True, False]
    assert "HTTP 500" in events[1][2]
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    fake.fail.append(("GET", "/deepseekv4deployments/", 503))
    assert reconciler.reconcile("ns", "d", events).result == "transient_error"
    assert events.reasons().count("ApiRetry") == 3  # a new streak
    assert "HTTP 503" in events[-1][2]


def test_a_long_outage_posts_its_api_retry_event_again_each_minute() -> None:
    """Day-2 fault review: kopf drops an Event it could not post within 54 s, so after an
    outage longer than that the streak's one ApiRetry Event was lost; it is posted again once
    a minute while the streak lasts."""
    from dsv4_operator.handlers.reconciler import API_RETRY_REPEAT_SECONDS

    now = [datetime(2026, 11, 29, tzinfo=UTC)]
    _fake, reconciler = _setup(fail=[("GET", "/deepseekv4deployments/", 503)] * 4)
    reconciler.clock = lambda: now[0]
    events = Events()
    for step in (0.0, 30.0, API_RETRY_REPEAT_SECONDS - 0.5, API_RETRY_REPEAT_SECONDS + 1):
        now[0] = datetime(2026, 11, 29, tzinfo=UTC) + timedelta(seconds=step)
        assert reconciler.reconcile("ns", "d", events).result == "transient_error"
    assert events.reasons() == ["ApiRetry", "ApiRetry"]


def test_non_transient_apply_failure_is_reported() -> None:
    fake, reconciler = _setup(fail=[("PATCH", "/services/", 422)])
    events = Events()
    outcome = reconciler.reconcile("ns", "d", events)
    assert outcome.result == "error"
    assert _conditions(fake)["Ready"] == ("False", "ApplyFailed")
    assert events[-1][:2] == ("Warning", "ApplyFailed")


@pytest.mark.parametrize("code", [422, 503])
def test_a_rollout_is_announced_when_a_later_child_fails(code: int) -> None:
    """Sixteenth-session note: the LWS is applied before the autoscaler; when the autoscaler's
    apply failed, the reconcile returned before its Events, and the retry found the LWS
    unchanged, so no RollingUpdate ever said that the groups were being replaced."""
    fake, reconciler = _setup_hpa()
    events = Events()
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    hpa_path = HPA_PATH
    del fake.objects[hpa_path]  # applied again next time, and refused
    fake.fail = [("PATCH", "/horizontalpodautoscalers/", code)]
    fake.objects[CR_PATH]["spec"]["engine"] = {"env": [{"name": "FOO", "value": "1"}]}
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    failed = reconciler.reconcile("ns", "d", events)
    assert failed.result == ("error" if code == 422 else "transient_error")
    assert "env" in str(fake.objects[LWS_PATH]["spec"])  # the LWS was updated
    rolling = [m for _, r, m in events if r == "RollingUpdate"]
    assert len(rolling) == 1
    assert rolling[0].startswith("pod template changed (spec generation 2: leader ")
    # The retry applies the autoscaler and finds the LWS unchanged: not posted again.
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    assert hpa_path in fake.objects
    assert len([r for r in events.reasons() if r == "RollingUpdate"]) == 1


def test_paused_changes_nothing() -> None:
    fake, reconciler = _setup()
    events = Events()
    reconciler.reconcile("ns", "d", events)
    lws_before = copy.deepcopy(fake.objects[LWS_PATH])
    fake.objects[CR_PATH]["spec"].update(paused=True, replicas=3)
    assert reconciler.reconcile("ns", "d", events).result == "paused"
    assert fake.objects[LWS_PATH] == lws_before
    assert _conditions(fake)["Progressing"] == ("False", "Paused")
    # The live LWS still has 1 replica (the paused edit to 3 is not applied): counts are
    # against it, and "goes on" only while its rollout does (review finding).
    fake.objects[LWS_PATH]["status"] = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["Ready"] == ("True", "AllReplicasReady")
    assert "goes on" not in _message(fake, "Progressing")
    # A rollout the LWS already started goes on while paused: the live counts are reported
    # (review finding: status froze at the last counts and said nothing changes).
    fake.objects[LWS_PATH]["status"] = {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 1}
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["Ready"] == ("False", "ReplicasNotReady")
    assert fake.objects[CR_PATH]["status"]["readyReplicas"] == 1
    assert "a rollout the LeaderWorkerSet already started goes on (0/1 replicas" in _message(
        fake, "Progressing"
    )


def _message(fake: FakeApi, ctype: str) -> str:
    status = fake.objects[CR_PATH]["status"]
    return str(next(c for c in status["conditions"] if c["type"] == ctype)["message"])


def test_missing_lws_api_is_reported_and_rechecked() -> None:
    fake, reconciler = _setup(served={"/apis/policy/v1": ["PodDisruptionBudget"]})
    events = Events()
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["Degraded"] == ("True", "LeaderWorkerSetMissing")
    assert ("Warning", "LeaderWorkerSetMissing") in [e[:2] for e in events]
    assert LWS_PATH not in fake.objects
    fake.served["/apis/leaderworkerset.x-k8s.io/v1"] = ["LeaderWorkerSet"]
    reconciler.reconcile("ns", "d", events)
    assert LWS_PATH in fake.objects
    assert _conditions(fake)["Degraded"] == ("False", "AsExpected")


def test_keda_mode_without_keda_warns_once_and_notices_keda_later() -> None:
    spec = {**SPEC, "autoscaling": {"enabled": True, "mode": "keda", "maxReplicas": 3}}
    fake, reconciler = _setup(spec)
    events = Events()
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["ScalingActive"] == ("False", "KEDAMissing")
    assert [e[:2] for e in events].count(("Warning", "KEDAMissing")) == 1
    assert not any("scaledobjects" in key for key in fake.objects)
    reconciler.reconcile("ns", "d", events)  # a resync: no second Event
    assert [e[:2] for e in events].count(("Warning", "KEDAMissing")) == 1
    fake.served["/apis/keda.sh/v1alpha1"] = ["ScaledObject"]
    reconciler.reconcile("ns", "d", events)
    # KEDA has not reported the ScaledObject yet: unknown, not scaling, and no Warning (h36).
    assert _conditions(fake)["ScalingActive"] == ("Unknown", "AwaitingKEDA")
    (so_path,) = [key for key in fake.objects if "scaledobjects" in key]
    assert not [e for e in events if e[0] == "Warning" and e[1] != "KEDAMissing"]
    # What KEDA's controller writes once it has checked the object.
    ready = {"type": "Ready", "status": "True", "reason": "ScaledObjectReady", "message": ""}
    fake.objects[so_path]["status"] = {"conditions": [ready]}
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["ScalingActive"] == ("True", "KEDA")


def test_deleted_resource_is_left_alone() -> None:
    fake, reconciler = _setup()
    del fake.objects[CR_PATH]
    outcome = reconciler.reconcile("ns", "d", Events())
    assert (outcome.result, outcome.writes) == ("unchanged", 0)


@pytest.mark.parametrize("status", [429, 500])
def test_status_write_errors_are_transient(status: int) -> None:
    _, reconciler = _setup(fail=[("PATCH", "/status", status)])
    assert reconciler.reconcile("ns", "d", Events()).result == "transient_error"


def test_a_scaler_the_autoscaling_mode_no_longer_renders_is_deleted() -> None:
    # An HPA left beside the native autoscaler (or after autoscaling is disabled) would keep
    # writing spec.replicas: the operator deletes its own, and only its own.
    fake, reconciler = _setup_hpa()
    events = Events()
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    hpa_path = HPA_PATH
    assert hpa_path in fake.objects
    fake.objects[CR_PATH]["spec"]["autoscaling"]["enabled"] = False
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    assert hpa_path not in fake.objects
    assert events.reasons()[-1] == "ScalerRemoved"
    assert "deleted HorizontalPodAutoscaler d: spec.autoscaling is now off" in events[-1][2]
    # Checked once per mode: a resync sends no GET for it.
    fake.requests.clear()
    assert reconciler.reconcile("ns", "d", events).writes == 0
    assert ("GET", hpa_path) not in fake.requests
    # Someone else's HPA of that name is left alone.
    fake.objects[hpa_path] = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "d", "namespace": "ns", "uid": "h-1"},
    }
    fake.objects[CR_PATH]["spec"]["autoscaling"] = {"enabled": True, "mode": "native"}
    fake.requests.clear()
    assert not reconciler.reconcile("ns", "d", events).failed
    assert ("GET", hpa_path) in fake.requests  # the mode changed: looked again
    assert hpa_path in fake.objects


def test_an_hpa_that_cannot_scale_is_reported_once_with_its_message() -> None:
    """ScalingActive repeats the live HPA's conditions, read back from the API at each resync."""
    fake, reconciler = _setup_hpa()
    events = Events()
    reconciler.reconcile("ns", "d", events)
    # Not synced by the HPA controller yet (h36): unknown, and no Warning.
    assert _conditions(fake)["ScalingActive"] == ("Unknown", "AwaitingHPA")
    assert not [e for e in events if e[0] == "Warning"]
    hpa_path = HPA_PATH
    # What Kubernetes' HPA controller writes when no external metrics API is served.
    fake.objects[hpa_path]["status"] = {
        "conditions": [
            {"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale"},
            {
                "type": "ScalingActive",
                "status": "False",
                "reason": "FailedGetExternalMetric",
                "message": "the HPA was unable to compute the replica count: unable to get "
                "external metric ns/dsv4_generation_tokens_per_second",
            },
        ]
    }
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["ScalingActive"] == ("False", "HPANotScaling")
    assert "(FailedGetExternalMetric): the HPA was unable" in _message(fake, "ScalingActive")
    warnings = [e for e in events if e[:2] == ("Warning", "HPANotScaling")]
    assert len(warnings) == 1
    assert "HorizontalPodAutoscaler d reports ScalingActive=False" in warnings[0][2]
    reconciler.reconcile("ns", "d", events)  # a resync: no second Event
    assert [e[:2] for e in events].count(("Warning", "HPANotScaling")) == 1
    assert _conditions(fake)["Ready"] == ("False", "ReplicasNotReady")  # Ready is not about it
    fake.objects[hpa_path]["status"]["conditions"][1]["status"] = "True"
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["ScalingActive"] == ("True", "HPA")


def test_a_crd_deleted_under_a_running_operator_is_noticed() -> None:
    # Discovery is cached; an apply answered 404 (the LWS CRD deleted since) clears it, so the
    # next reconcile reports LeaderWorkerSetMissing instead of a raw 404 forever.
    fake, reconciler = _setup()
    events = Events()
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    del fake.served["/apis/leaderworkerset.x-k8s.io/v1"]
    del fake.objects[LWS_PATH]
    fake.fail.append(("PATCH", "/leaderworkersets/d", 404))
    fake.objects[CR_PATH]["spec"]["replicas"] = 2
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    assert reconciler.reconcile("ns", "d", events).result == "transient_error"
    again = reconciler.reconcile("ns", "d", events)
    assert again.result == "applied"
    assert _conditions(fake)["Ready"] == ("False", "LeaderWorkerSetMissing")


def test_switching_from_hpa_to_keda_removes_the_hpa_before_creating_the_scaled_object() -> None:
    # KEDA's webhook refuses a ScaledObject while another scaler targets the resource.
    fake, reconciler = _setup_hpa()
    fake.served["/apis/keda.sh/v1alpha1"] = ["ScaledObject"]
    events = Events()
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    hpa_path = HPA_PATH
    scaled_path = "/apis/keda.sh/v1alpha1/namespaces/ns/scaledobjects/d"
    fake.objects[CR_PATH]["spec"]["autoscaling"]["mode"] = "keda"
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    fake.requests.clear()
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    deleted = fake.requests.index(("DELETE", hpa_path))
    created = fake.requests.index(("PATCH", scaled_path))
    assert deleted < created
    assert hpa_path not in fake.objects
    # And back to native: the ScaledObject goes.
    fake.objects[CR_PATH]["spec"]["autoscaling"]["mode"] = "native"
    reconciler.reconcile("ns", "d", events)
    assert scaled_path not in fake.objects
    assert "deleted ScaledObject d: spec.autoscaling is now native" in events[-1][2]


def test_a_template_change_and_a_budget_lowered_surge_are_events() -> None:
    """Review findings: an operator upgrade (another runtime image) re-rolled every group with
    no Event naming the cause; a budget that left no surge turned maxUnavailable 0 into 1 with
    no word."""
    spec = {
        **SPEC,
        "replicas": 2,
        "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8, "budget": 4},
        "rollout": {"maxSurge": 1, "maxUnavailable": 0},
    }
    _, reconciler = _setup(spec)
    events = Events()
    reconciler.reconcile("ns", "d", events)
    adjusted = [m for k, r, m in events if r == "RolloutAdjusted"]
    assert len(adjusted) == 1
    assert "maxSurge 0, maxUnavailable 1 instead of spec.rollout's 1, 0" in adjusted[0]
    assert "(a budget of 6 would hold 1)" in adjusted[0]  # 3 groups of 2 GPUs
    upgraded = Reconciler(
        reconciler.kube,
        reconciler.metrics,
        "img:2",
        clock=lambda: datetime(2026, 11, 29, tzinfo=UTC),
    )
    upgraded.reconcile("ns", "d", events)
    rolling = [m for k, r, m in events if r == "RollingUpdate"]
    assert rolling == [
        "pod template changed (image img -> img:2): groups are replaced with maxSurge 0, "
        "maxUnavailable 1"
    ]
    assert len([r for _, r, _ in events if r == "RolloutAdjusted"]) == 1  # not repeated


def test_an_update_that_leaves_the_template_alone_is_not_stale() -> None:
    """Review finding: right after any update the live LWS's observedGeneration lags its new
    generation, so a rollout-strategy-only change still read as stale counts."""
    from dsv4_operator.handlers.reconciler import _lws_stale
    from dsv4_operator.kube import AppliedChild

    template: dict[str, Any] = {
        "size": 1,
        "leaderTemplate": {"spec": {"containers": [{"image": "i"}]}},
    }
    prev: dict[str, Any] = {
        "metadata": {"generation": 4},
        "spec": {"replicas": 2, "leaderWorkerTemplate": template, "rolloutStrategy": {"a": 1}},
        "status": {"observedGeneration": 4},
    }
    live = copy.deepcopy(prev)
    live["metadata"]["generation"] = 5
    live["spec"]["rolloutStrategy"] = {"a": 2}
    assert not _lws_stale(AppliedChild("LeaderWorkerSet", "d", "updated", live, prev))
    live["spec"]["leaderWorkerTemplate"] = {**template, "size": 2}
    assert _lws_stale(AppliedChild("LeaderWorkerSet", "d", "updated", live, prev))
    # A later reconcile that changes nothing believes observedGeneration.
    assert _lws_stale(AppliedChild("LeaderWorkerSet", "d", "unchanged", live))
    live["status"]["observedGeneration"] = 5
    assert not _lws_stale(AppliedChild("LeaderWorkerSet", "d", "unchanged", live))


def test_degraded_counts_from_when_every_group_was_updated_and_scale_to_one_warns() -> None:
    """Review findings: Degraded was timed from when Ready turned False (a long rollout made a
    just-updated group look overdue); NoRedundancy was not posted on a scale-down to 1."""
    clock = [datetime(2026, 11, 29, tzinfo=UTC)]
    fake, reconciler = _setup({**SPEC, "replicas": 2})
    reconciler.clock = lambda: clock[0]
    events = Events()
    reconciler.reconcile("ns", "d", events)
    budget = plan(request_from_spec(parse_spec(fake.objects[CR_PATH]["spec"])))
    budget_seconds = budget.startup_budget_seconds
    fake.objects[LWS_PATH]["status"] = {"replicas": 2, "readyReplicas": 0, "updatedReplicas": 1}
    clock[0] += timedelta(
        seconds=2 * budget_seconds
    )  # a long rollout: group 0 is still being replaced
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["Degraded"] == ("False", "AsExpected")
    fake.objects[LWS_PATH]["status"] = {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2}
    clock[0] += timedelta(seconds=60)  # every group updated now; group 0 is loading
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["Degraded"] == ("False", "ReplicasStarting")
    clock[0] += timedelta(seconds=budget_seconds + 1)
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["Degraded"] == ("True", "ReplicasUnavailable")
    assert "NoRedundancy" not in events.reasons()
    fake.objects[CR_PATH]["spec"]["replicas"] = 1
    reconciler.reconcile("ns", "d", events)
    assert "NoRedundancy" in events.reasons()


def test_rollout_adjusted_says_why_and_the_advice_names_the_binding_field() -> None:
    """Final review: RolloutAdjusted blamed spec.gpu.budget when there was none (a percentage
    of 1 replica rounds down to 0 unavailable); the no-fit advice suggested maxNodes >= 1 when
    the budget was what bound."""
    spec = {**SPEC, "rollout": {"maxSurge": 0, "maxUnavailable": "50%"}}
    _, reconciler = _setup(spec)
    events = Events()
    reconciler.reconcile("ns", "d", events)
    adjusted = [m for _, r, m in events if r == "RolloutAdjusted"]
    assert len(adjusted) == 1
    assert "budget" not in adjusted[0]
    assert "50% of 1 replica(s) rounds down to 0 unavailable" in adjusted[0]
    tight = {
        "model": "pro",
        "maxModelLen": 1_048_576,
        "gpu": {"types": ["h100-80gb"], "gpusPerNode": 8, "maxNodes": 3, "budget": 8},
    }
    fake, reconciler = _setup(tight)
    reconciler.reconcile("ns", "d", Events())
    message = _message(fake, "Ready")
    assert "spec.gpu.budget allowing 24 GPUs per replica" in message
    assert "spec.gpu.maxNodes >=" not in message


def test_rolling_update_names_the_arguments_that_changed() -> None:
    """New-user trial: a replica change that re-plans (load.concurrency is split over
    spec.replicas) rolled every group with only "spec generation N" as the cause."""
    fake, reconciler = _setup({**SPEC, "load": {"concurrency": 8}})
    events = Events()
    reconciler.reconcile("ns", "d", events)
    fake.objects[CR_PATH]["spec"]["replicas"] = 2
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    reconciler.reconcile("ns", "d", events)
    rolling = [m for _, r, m in events if r == "RollingUpdate"]
    assert len(rolling) == 1
    # The CUDA-graph cap the operator passes follows max-num-seqs (4 x 2 -> 2 x 2): a flag, not
    # extraArgs the user did not write.
    assert (
        "pod template changed (arguments --max-num-seqs 4 -> 2; "
        "--max-cudagraph-capture-size 8 -> 4)" in rolling[0]
    )


def test_rolling_update_names_the_template_fields_that_changed() -> None:
    """Fourteenth-session note: an env or resources edit rolled every group with only "spec
    generation N" as the cause. The Event now names the fields, leader and worker apart."""
    fake, reconciler = _setup()
    events = Events()
    reconciler.reconcile("ns", "d", events)
    fake.objects[CR_PATH]["spec"]["engine"] = {"env": [{"name": "FOO", "value": "1"}]}
    fake.objects[CR_PATH]["spec"]["resources"] = {"requests": {"cpu": "8"}}
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    reconciler.reconcile("ns", "d", events)
    fake.objects[CR_PATH]["spec"]["pod"] = {"labels": {"team": "a"}}
    fake.objects[CR_PATH]["metadata"]["generation"] = 3
    reconciler.reconcile("ns", "d", events)
    first, second = [m for _, r, m in events if r == "RollingUpdate"]
    lws = fake.objects[LWS_PATH]["spec"]["leaderWorkerTemplate"]
    name = lws["leaderTemplate"]["spec"]["containers"][0]["name"]
    assert first.startswith(
        f"pod template changed (spec generation 2: leader {name} env, leader {name} resources, "
        f"worker {name} env, worker {name} resources)"
    )
    assert second.startswith(
        "pod template changed (spec generation 3: leader metadata.labels, worker metadata.labels)"
    )


def test_changed_fields_counts_containers_and_group_fields() -> None:
    from dsv4_operator.handlers.announcements import _changed_fields

    pod: dict[str, Any] = {"spec": {"containers": [{"name": "a", "image": "i", "args": ["--x"]}]}}
    before: dict[str, Any] = {
        "size": 2,
        "leaderTemplate": pod,
        "workerTemplate": copy.deepcopy(pod),
    }
    after = copy.deepcopy(before)
    after["size"] = 3
    after["leaderTemplate"]["spec"]["containers"][0]["args"] = ["--y"]  # said by the flags
    after["workerTemplate"]["spec"]["containers"][0]["args"] = ["--y"]
    after["workerTemplate"]["spec"]["containers"].append({"name": "b"})
    after["workerTemplate"]["spec"]["tolerations"] = [{"operator": "Exists"}]
    assert _changed_fields(before, after) == [
        "size",
        "worker tolerations",
        "worker containers",
        "worker a args",
    ]
    assert _changed_fields(before, copy.deepcopy(before)) == []


def test_rolling_update_lists_extra_args_as_they_are() -> None:
    """Bad-CR review: extraArgs changes read "-- (unset) -> ; --seed=1 (unset) -> ": the `--`
    separator was taken for a flag, valueless flags showed empty values, repeats collapsed."""
    fake, reconciler = _setup()
    events = Events()
    reconciler.reconcile("ns", "d", events)
    extra = ["--seed=1", "--seed=2", "--enforce-eager", "--enforce-eager"]
    for generation, args in ((2, extra), (3, [])):
        fake.objects[CR_PATH]["spec"]["engine"] = {"extraArgs": args}
        fake.objects[CR_PATH]["metadata"]["generation"] = generation
        reconciler.reconcile("ns", "d", events)
    added, removed = [m for _, r, m in events if r == "RollingUpdate"]
    joined = " ".join(extra)
    assert f"pod template changed (arguments extraArgs (none) -> {joined})" in added
    assert f"pod template changed (arguments extraArgs {joined} -> (none))" in removed


def test_a_change_that_references_a_missing_secret_is_held_off_the_serving_groups() -> None:
    """New-user trial: adding an env ref to a missing Secret rolled the only serving group onto
    pods that could not start. The LWS now keeps its template until the Secret exists."""
    fake, reconciler = _setup()
    events = Events()
    reconciler.reconcile("ns", "d", events)
    fake.objects[LWS_PATH]["status"] = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    reconciler.reconcile("ns", "d", events)
    template = copy.deepcopy(fake.objects[LWS_PATH]["spec"]["leaderWorkerTemplate"])
    env = [{"name": "FOO", "valueFrom": {"secretKeyRef": {"name": "missing-sec", "key": "k"}}}]
    fake.objects[CR_PATH]["spec"]["engine"] = {"env": env}
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    reconciler.reconcile("ns", "d", events)
    assert fake.objects[LWS_PATH]["spec"]["leaderWorkerTemplate"] == template
    assert _conditions(fake)["Ready"] == ("False", "ReferenceMissing")
    assert "keeps its current pod template meanwhile (its ready groups keep serving)" in (
        _message(fake, "Ready")
    )
    assert "RollingUpdate" not in events.reasons()
    fake.objects["/api/v1/namespaces/ns/secrets/missing-sec"] = {"data": {"k": "dg=="}}
    reconciler.reconcile("ns", "d", events)
    assert fake.objects[LWS_PATH]["spec"]["leaderWorkerTemplate"] != template
    assert "RollingUpdate" in events.reasons()


def test_a_new_resource_with_a_missing_secret_is_not_said_to_hold_its_template() -> None:
    """README trial: a new resource whose Secret is missing got a second ReferenceMissing
    Event a few seconds later saying the LeaderWorkerSet "keeps its current pod template",
    though that template was the desired one and nothing was held back."""
    env = [{"name": "FOO", "valueFrom": {"secretKeyRef": {"name": "missing-sec", "key": "k"}}}]
    fake, reconciler = _setup({**SPEC, "engine": {"env": env}})
    events = Events()
    for _ in range(3):
        reconciler.reconcile("ns", "d", events)
    assert LWS_PATH in fake.objects
    assert _conditions(fake)["Ready"] == ("False", "ReferenceMissing")
    assert "keeps its current pod template" not in _message(fake, "Ready")
    assert len([r for r in events.reasons() if r == "ReferenceMissing"]) == 1


def test_a_budget_too_small_for_the_replicas_says_so() -> None:
    """New-user trial: scaling to 3 replicas under a budget of 8 reported the model as too big
    for 2 GPUs, never naming spec.replicas or the budget, and Progressing stayed RollingOut."""
    spec = {**SPEC, "replicas": 3, "gpu": {"types": ["h100-80gb"], "gpusPerNode": 8, "budget": 8}}
    fake, reconciler = _setup(spec)
    assert reconciler.reconcile("ns", "d", Events()).result == "plan_failed"
    assert _message(fake, "Ready").startswith(
        "spec.gpu.budget 8 shared by spec.replicas 3 leaves 2 GPUs per replica (lower "
        "spec.replicas or raise the budget); "
    )
    assert _conditions(fake)["Progressing"] == ("False", "InsufficientCapacity")


def test_a_missing_claim_is_reported_like_a_missing_secret() -> None:
    """New-user trial: examples naming an absent PersistentVolumeClaim left pods Pending with
    Degraded=False AsExpected and no Event."""
    spec = {**SPEC, "modelSource": {"pvc": {"claimName": "weights", "path": "/w"}}}
    fake, reconciler = _setup(spec)
    events = Events()
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["Ready"] == ("False", "ReferenceMissing")
    assert _message(fake, "Ready").startswith(
        "PersistentVolumeClaim weights (spec.modelSource.pvc.claimName) does not exist"
    )
    fake.objects["/api/v1/namespaces/ns/persistentvolumeclaims/weights"] = {"metadata": {}}
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["Ready"] == ("False", "ReplicasNotReady")


def test_a_resync_reads_the_leaderworkerset_once() -> None:
    # The reconciler reads it (references, surge sizing) and hands it to apply, which had read
    # it a second time.
    fake, reconciler = _setup({**SPEC, "gpu": {**SPEC["gpu"], "budget": 16}})
    reconciler.reconcile("ns", "d", Events())
    fake.requests.clear()
    assert reconciler.reconcile("ns", "d", Events()).result == "unchanged"
    assert fake.requests.count(("GET", LWS_PATH)) == 1


def test_the_startup_wait_survives_an_operator_restart() -> None:
    """Noticed in the twelfth session: the moment groups started was kept in memory only, so an
    operator restart (an upgrade, a node drain) began the startup budget again and hid a group
    that never came up for another budget."""
    t0 = datetime(2026, 11, 29, tzinfo=UTC)
    clock = [t0]
    fake, reconciler = _setup({**SPEC, "replicas": 2})
    reconciler.clock = lambda: clock[0]
    events = Events()
    reconciler.reconcile("ns", "d", events)
    budget = plan(request_from_spec(parse_spec(fake.objects[CR_PATH]["spec"])))
    fake.objects[LWS_PATH]["status"] = {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2}
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["Degraded"] == ("False", "ReplicasStarting")
    assert fake.objects[CR_PATH]["status"]["startingSince"] == "2026-11-29T00:00:00Z"

    def restarted(after: timedelta) -> Reconciler:
        clock[0] = t0 + after
        fresh = Reconciler(KubeClient(fake, "dsv4-operator"), OperatorMetrics(), "img")
        fresh.clock = lambda: clock[0]
        return fresh

    late = timedelta(seconds=budget.startup_budget_seconds + 1)
    restarted(late).reconcile("ns", "d", events)
    assert _conditions(fake)["Degraded"] == ("True", "ReplicasUnavailable")
    assert fake.objects[CR_PATH]["status"]["startingSince"] == "2026-11-29T00:00:00Z"
    # A stored time of an older generation is not trusted: the spec changed while no operator
    # ran, so the groups start a new rollout.
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    restarted(late * 2).reconcile("ns", "d", events)
    assert _conditions(fake)["Degraded"] == ("False", "ReplicasStarting")
    stamp = fake.objects[CR_PATH]["status"]["startingSince"]
    assert datetime.fromisoformat(stamp) == t0 + late * 2
    # Every group ready: the time is removed.
    fake.objects[LWS_PATH]["status"] = {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}
    reconciler.reconcile("ns", "d", events)
    assert "startingSince" not in fake.objects[CR_PATH]["status"]
    assert _conditions(fake)["Degraded"] == ("False", "AsExpected")


def test_an_optional_env_ref_is_rendered_optional_and_never_reported_missing() -> None:
    """Noticed in the twelfth session: env refs could not say `optional: true`, so a variable
    the engine can do without (a tracing endpoint) held every rollout while its Secret was
    absent."""
    optional = {"optional": True}
    env = [
        {"name": "OTEL", "valueFrom": {"secretKeyRef": {"name": "otel", "key": "u", **optional}}},
        {"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k", **optional}}},
        {"name": "MUST", "valueFrom": {"configMapKeyRef": {"name": "must", "key": "k"}}},
    ]
    fake, reconciler = _setup({**SPEC, "engine": {"env": env}})
    reconciler.reconcile("ns", "d", Events())
    ready = next(c for c in fake.objects[CR_PATH]["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ReferenceMissing"
    assert "must" in ready["message"]
    assert "otel" not in ready["message"]
    assert "cfg" not in ready["message"]
    template = fake.objects[LWS_PATH]["spec"]["leaderWorkerTemplate"]["leaderTemplate"]
    rendered = {e["name"]: e.get("valueFrom") for e in template["spec"]["containers"][0]["env"]}
    assert rendered["OTEL"] == {"secretKeyRef": {"name": "otel", "key": "u", "optional": True}}
    assert rendered["CFG"] == {"configMapKeyRef": {"name": "cfg", "key": "k", "optional": True}}
    assert rendered["MUST"] == {"configMapKeyRef": {"name": "must", "key": "k"}}
    fake.objects["/api/v1/namespaces/ns/configmaps/must"] = {"metadata": {}, "data": {"k": "v"}}
    reconciler.reconcile("ns", "d", Events())
    assert _conditions(fake)["Ready"] == ("False", "ReplicasNotReady")


def test_an_unexpected_exception_is_reported_on_the_resource_and_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bad-CR review: a parse bug (decimal.InvalidOperation on `1Ei`) escaped the reconciler:
    a traceback in the operator's log on every resync, and the resource kept its old status
    with no Event. Any such bug now shows as Ready=False / Degraded=True, ReconcileError."""
    from dsv4_operator.handlers import reconciler as module

    fake, reconciler = _setup()
    events = Events()
    reconciler.reconcile("ns", "d", events)
    lws_before = copy.deepcopy(fake.objects[LWS_PATH])

    def broken(*_: Any, **__: Any) -> Any:
        raise ArithmeticError("boom")

    monkeypatch.setattr(module, "plan", broken)
    outcome = reconciler.reconcile("ns", "d", events)
    assert outcome.result == "internal_error"
    assert outcome.retry_after == reconciler.retry_delay_seconds
    assert _conditions(fake)["Ready"] == ("False", "ReconcileError")
    assert _conditions(fake)["Degraded"] == ("True", "ReconcileError")
    kind, reason, message = events[-1]
    assert (kind, reason) == ("Warning", "ReconcileError")
    assert "ArithmeticError: boom" in message
    assert fake.objects[LWS_PATH] == lws_before  # the running groups are left alone
    assert "operator bug" in message

    def refused(*_: Any, **__: Any) -> Any:
        raise ApiError(403, "Forbidden", "get secrets")

    monkeypatch.setattr(module, "plan", refused)
    reconciler.reconcile("ns", "d", events)
    kind, reason, message = events[-1]
    assert reason == "ReconcileError"
    assert message.startswith("the API server refused a request, retried every")
    assert "HTTP 403: Forbidden" in message
    monkeypatch.undo()
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    assert _conditions(fake)["Degraded"] == ("False", "AsExpected")


def test_a_new_surge_request_the_budget_cannot_hold_is_announced() -> None:
    """Bad-CR review: with a budget of one replica and maxSurge 0, asking maxSurge 1 left the
    applied strategy as it was (the budget holds no surge), so the LWS did not change and no
    RolloutAdjusted Event said why the request had no effect."""
    fake, reconciler = _setup({**SPEC, "rollout": {"maxSurge": 0, "maxUnavailable": 1}})
    events = Events()
    reconciler.reconcile("ns", "d", events)
    per_replica = int(fake.objects[LWS_PATH]["metadata"]["annotations"]["dsv4.io/gpus-per-replica"])
    fake.objects[CR_PATH]["spec"]["gpu"]["budget"] = per_replica
    reconciler.reconcile("ns", "d", events)
    assert "RolloutAdjusted" not in events.reasons()
    strategy = copy.deepcopy(fake.objects[LWS_PATH]["spec"]["rolloutStrategy"])
    fake.objects[CR_PATH]["spec"]["rollout"] = {"maxSurge": 1, "maxUnavailable": 1}
    reconciler.reconcile("ns", "d", events)
    assert fake.objects[LWS_PATH]["spec"]["rolloutStrategy"] == strategy  # nothing to apply
    adjusted = [m for _, r, m in events if r == "RolloutAdjusted"]
    assert len(adjusted) == 1
    assert f"spec.gpu.budget ({per_replica} GPUs) holds 0 surge group(s)" in adjusted[0]
    reconciler.reconcile("ns", "d", events)  # said once, not at every resync
    assert len([r for r in events.reasons() if r == "RolloutAdjusted"]) == 1


def test_an_operator_upgrade_posts_no_rollout_warnings_for_unchanged_resources() -> None:
    """Diff review: LWSs made before the requested-rollout annotation got it on the first
    reconcile after an upgrade, which counted as a new request: one NoRedundancy or
    RolloutAdjusted Warning per resource, across the fleet."""
    for spec in (SPEC, {**SPEC, "rollout": {"maxSurge": 1, "maxUnavailable": 1}}):
        fake, reconciler = _setup(spec)
        reconciler.reconcile("ns", "d", Events())
        per = fake.objects[LWS_PATH]["metadata"]["annotations"]["dsv4.io/gpus-per-replica"]
        fake.objects[CR_PATH]["spec"]["gpu"]["budget"] = int(per)
        reconciler.reconcile("ns", "d", Events())
        annotations = fake.objects[LWS_PATH]["metadata"]["annotations"]
        del annotations["dsv4.io/requested-rollout"]
        # As the older operator left it: its rendering (without the annotation) had another
        # hash. (The same hash would be someone removing our annotation: DriftReverted.)
        annotations["dsv4.io/rendered-hash"] = "0123456789abcdef"
        events = Events()
        assert reconciler.reconcile("ns", "d", events).result == "applied"  # annotation back
        assert events.reasons() == []


def test_a_new_resource_waiting_for_a_reference_is_not_said_to_serve() -> None:
    """New-user trial: a just-created resource whose PVC did not exist was reported as keeping
    its groups serving (its own LeaderWorkerSet, created seconds before, counted as live)."""
    spec = {**SPEC, "modelSource": {"pvc": {"claimName": "weights"}}}
    fake, reconciler = _setup(spec)
    reconciler.reconcile("ns", "d", Events())
    reconciler.reconcile("ns", "d", Events())  # the LWS exists now, with no group ready
    message = _message(fake, "Ready")
    assert message.startswith("PersistentVolumeClaim weights (spec.modelSource.pvc.claimName)")
    assert "serving" not in message


def test_a_cost_without_a_price_loses_its_dollar_figures_once() -> None:
    """New-user trial: switching to a GPU type without a price kept the old type's usdPerHour
    in status (a merge patch keeps keys the new mapping leaves out)."""
    prices = {"gpuHourlyPrices": [{"gpuType": "h200-141gb", "usdPerGpuHour": "3.00"}]}
    fake, reconciler = _setup({**SPEC, "cost": prices})
    reconciler.reconcile("ns", "d", Events())
    assert "usdPerHour" in fake.objects[CR_PATH]["status"]["cost"]
    fake.objects[CR_PATH]["spec"]["gpu"]["types"] = ["h100-80gb"]
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    reconciler.reconcile("ns", "d", Events())
    assert set(fake.objects[CR_PATH]["status"]["cost"]) == {"gpuHoursPerDay"}
    again = reconciler.reconcile("ns", "d", Events())
    assert (again.result, again.writes) == ("unchanged", 0)


def test_no_redundancy_advice_warns_that_a_concurrency_split_re_plans() -> None:
    """New-user trial: following NoRedundancy's "spec.replicas 2" with load.concurrency set
    re-planned max-num-seqs and replaced the one group it meant to protect."""
    for load, warned in (({"concurrency": 8}, True), (None, False)):
        spec = {**SPEC, **({"load": load} if load else {})}
        _, reconciler = _setup(spec)
        events = Events()
        reconciler.reconcile("ns", "d", events)
        (message,) = [m for _, r, m in events if r == "NoRedundancy"]
        assert ("set maxSurge first" in message) is warned


def _native_scaling_active(generation: int = 1) -> dict[str, Any]:
    """The ScalingActive condition the native autoscaler writes (`Autoscaler._report_active`)."""
    return {
        "type": "ScalingActive",
        "status": "True",
        "reason": "TokenThroughput",
        "message": "1 of 1 replica groups report metrics",
        "lastTransitionTime": "2026-11-28T00:00:00Z",
        "observedGeneration": generation,
    }


@pytest.mark.parametrize(
    "autoscaling",
    [
        {"enabled": False},
        {"enabled": True, "mode": "hpa", "maxReplicas": 3},
        {"enabled": True, "mode": "native", "maxReplicas": 3, "paused": True},
    ],
    ids=["disabled", "hpa", "paused"],
)
def test_the_native_autoscalers_condition_goes_when_it_no_longer_scales(
    autoscaling: dict[str, Any],
) -> None:
    """Day-2 finding: after switching native autoscaling off (or to hpa, or pausing), the
    native autoscaler's `ScalingActive=True TokenThroughput` stayed on the resource for good:
    `kubectl describe` said token-throughput scaling was active while nothing scaled."""
    native = {"enabled": True, "mode": "native", "maxReplicas": 3}
    fake, reconciler = _setup({**SPEC, "autoscaling": native})
    fake.served["/apis/autoscaling/v2"] = ["HorizontalPodAutoscaler"]
    reconciler.reconcile("ns", "d", Events())
    status = fake.objects[CR_PATH]["status"]
    status["conditions"] = [*status["conditions"], _native_scaling_active()]
    reconciler.reconcile("ns", "d", Events())  # still native: the autoscaler's own, kept
    assert _conditions(fake)["ScalingActive"] == ("True", "TokenThroughput")
    paused = bool(autoscaling.pop("paused", False))
    fake.objects[CR_PATH]["spec"]["autoscaling"] = autoscaling
    fake.objects[CR_PATH]["spec"]["paused"] = paused
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    reconciler.reconcile("ns", "d", Events())
    if autoscaling.get("mode") == "hpa":  # the HPA's own (none synced yet) replaces it
        assert _conditions(fake)["ScalingActive"] == ("Unknown", "AwaitingHPA")
    else:
        assert "ScalingActive" not in _conditions(fake)


@pytest.mark.parametrize(
    "bad",
    [
        {**SPEC, "gpu": {"types": ["h100-80gb"], "gpusPerNode": 8}, "parallelism": {"tensor": 3}},
        {"model": "pro", "gpu": {"types": ["rtx-4090-24gb"], "gpusPerNode": 1}},
    ],
    ids=["invalid", "unplannable"],
)
def test_live_counts_stay_truthful_while_the_spec_cannot_be_rolled_out(
    bad: dict[str, Any],
) -> None:
    """Day-2 finding: once an edit made the spec invalid or unplannable, the groups of the
    last rollout kept serving, but status froze: `readyReplicas` (kubectl's Ready column) and
    Available=True stayed as they were when a group then failed, for as long as the spec
    stayed broken."""
    fake, reconciler = _setup({**SPEC, "replicas": 2})
    reconciler.reconcile("ns", "d", Events())
    fake.objects[LWS_PATH]["status"] = {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}
    reconciler.reconcile("ns", "d", Events())
    assert fake.objects[CR_PATH]["status"]["readyReplicas"] == 2
    assert _conditions(fake)["Available"] == ("True", "MinimumReplicasAvailable")
    fake.objects[CR_PATH]["spec"] = copy.deepcopy(bad)
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    assert reconciler.reconcile("ns", "d", Events()).failed
    # Both groups of the last rollout fail while the spec is still broken.
    fake.objects[LWS_PATH]["status"] = {"replicas": 2, "readyReplicas": 0, "updatedReplicas": 2}
    reconciler.reconcile("ns", "d", Events())
    status = fake.objects[CR_PATH]["status"]
    assert status["readyReplicas"] == 0
    assert _conditions(fake)["Available"] == ("False", "NoReplicaReady")
    assert _conditions(fake)["Ready"][1] in {"InvalidSpec", "InsufficientCapacity"}


SERVICE_PATH = "/api/v1/namespaces/ns/services/d-api"


def test_a_child_repaired_or_replaced_after_the_rollout_is_an_event() -> None:
    """Day-2 finding (local control plane): a Service or LeaderWorkerSet deleted by hand was
    re-created at the next resync, and a Service whose update the API server refused was
    deleted and created again (a new ClusterIP), without any Event: `kubectl describe` did not
    say why the Service's address changed or that the LeaderWorkerSet's groups were new."""
    fake, reconciler = _setup()
    first = Events()
    reconciler.reconcile("ns", "d", first)
    assert "ChildRecreated" not in first.reasons()  # the first rollout creates, that is all
    del fake.objects[SERVICE_PATH]
    events = Events()
    reconciler.reconcile("ns", "d", events)
    assert SERVICE_PATH in fake.objects
    (recreated,) = [e for e in events if e[1] == "ChildRecreated"]
    assert recreated[0] == "Warning"
    assert "Service d-api" in recreated[2]
    assert "missing" in recreated[2]
    # Drift the API server refuses to update over (another manager changed the port): the
    # Service is replaced.
    fake.objects[SERVICE_PATH]["spec"]["type"] = "NodePort"
    fake.fail.append(("PATCH", "/services/d-api", 422))
    events = Events()
    reconciler.reconcile("ns", "d", events)
    (replaced,) = [e for e in events if e[1] == "ChildRecreated"]
    assert "Service d-api" in replaced[2]
    assert "replaced" in replaced[2]


def test_a_deleted_resource_leaves_no_per_resource_state() -> None:
    """The reconciler's per-resource memory (`_children_seen`, added for ChildRecreated, and
    `_scalers_checked`) was never freed: an operator that saw many short-lived resources
    (e.g. a CI namespace per run) kept an entry for each until it restarted. The delete
    handler frees them, as it does the metrics' and the autoscaler's."""
    import kopf
    from prometheus_client import CollectorRegistry

    from dsv4_operator.handlers import build_registry
    from dsv4_operator.handlers.autoscaler import Autoscaler, AutoscalerMetrics
    from dsv4_operator.settings import OperatorSettings

    fake, reconciler = _setup()
    reconciler.reconcile("ns", "d", Events())
    assert "ns/d" in reconciler._children_seen
    assert "ns/d" in reconciler._scalers_checked
    registry = build_registry(OperatorSettings())
    (forget,) = [h for h in registry._changing.get_all_handlers() if h.id.endswith("forget")]
    autoscaler = Autoscaler(reconciler.kube, AutoscalerMetrics(CollectorRegistry()))
    memo = kopf.Memo(reconciler=reconciler, autoscaler=autoscaler)
    fn: Any = forget.fn  # kopf's handler protocol names every kwarg; it takes **_
    raw: Any = fake.objects.pop(CR_PATH)
    fn(body=kopf.Body(raw), memo=memo)
    assert "ns/d" not in reconciler._children_seen
    assert "ns/d" not in reconciler._scalers_checked


def test_a_child_replaced_at_the_first_reconcile_after_a_restart_is_an_event() -> None:
    """A replaced child (deleted and created again after the API server refused the update:
    a Service gets a new ClusterIP) was announced only when this process had seen it before,
    so the replacement at the first reconcile after an operator restart or upgrade, when
    rendering changes most, went without an Event. Its replaced object (`previous`) says
    so whatever this process saw."""
    fake, reconciler = _setup()
    reconciler.reconcile("ns", "d", Events())
    restarted = Reconciler(
        KubeClient(fake, "dsv4-operator"),
        OperatorMetrics(),
        "img",
        clock=lambda: datetime(2026, 11, 29, tzinfo=UTC),
    )
    fake.objects[SERVICE_PATH]["spec"]["type"] = "NodePort"
    fake.fail.append(("PATCH", "/services/d-api", 422))
    events = Events()
    restarted.reconcile("ns", "d", events)
    (replaced,) = [e for e in events if e[1] == "ChildRecreated"]
    assert replaced[0] == "Normal"
    assert "Service d-api was replaced" in replaced[2]


def test_an_invalid_spec_is_reported_when_the_live_counts_cannot_be_read() -> None:
    """The error paths read the live LeaderWorkerSet for its counts (kept truthful while the
    spec cannot be rolled out); a retryable failure of that read turned the InvalidSpec report
    into an ApiRetry, so the spec error waited for the API server. The counts are best effort
    there: the error is reported without them."""
    bad = {**SPEC, "gpu": {"types": ["h100-80gb"], "gpusPerNode": 8}, "parallelism": {"tensor": 3}}
    fake, reconciler = _setup(bad, fail=[("GET", "/leaderworkersets/", 503)])
    events = Events()
    outcome = reconciler.reconcile("ns", "d", events)
    assert outcome.result == "invalid_spec"
    assert _conditions(fake)["Ready"] == ("False", "InvalidSpec")
    assert "ApiRetry" not in events.reasons()


def test_per_resource_locks_do_not_outlive_their_reconciles() -> None:
    """Day-2 review: `_locks` kept one lock per namespace/name ever reconciled."""
    import gc
    import threading

    fake, reconciler = _setup()
    for i in range(5):
        path = CR_PATH.replace("/d", f"/d{i}")
        fake.objects[path] = copy.deepcopy(fake.objects[CR_PATH])
        fake.objects[path]["metadata"]["name"] = f"d{i}"
        reconciler.reconcile("ns", f"d{i}", Events())
    gc.collect()
    assert len(reconciler._locks) == 0
    # While one caller holds a resource's lock, others get the same lock.
    held = reconciler._lock("ns/x")
    with held:
        assert reconciler._lock("ns/x") is held
        assert not reconciler._lock("ns/x").acquire(blocking=False)
    assert isinstance(held, type(threading.Lock()))


def test_rolling_update_stays_within_the_event_message_limit() -> None:
    """Operator-change review: extraArgs (up to 64 items of 1,024 characters, CRD schema) went
    into the RollingUpdate message whole, old and new; the operator cuts Event messages at
    1,024 characters (kopf's limit), so a long one lost its end: which groups are replaced and
    with what maxSurge / maxUnavailable."""
    fake, reconciler = _setup()
    events = Events()
    reconciler.reconcile("ns", "d", events)
    config = '--compilation-config={"compile_sizes": [' + ", ".join(str(n) for n in range(1, 200))
    extra = [config + "]}", "--seed=1"]
    for generation, args in ((2, extra), (3, [*extra[:1], "--seed=2"])):
        fake.objects[CR_PATH]["spec"]["engine"] = {"extraArgs": args}
        fake.objects[CR_PATH]["metadata"]["generation"] = generation
        reconciler.reconcile("ns", "d", events)
    rolling = [m for _, r, m in events if r == "RollingUpdate"]
    assert len(rolling) == 2
    for message in rolling:
        assert len(message) <= 1024, len(message)
        assert message.startswith("pod template changed (arguments extraArgs ")
        assert message.endswith("groups are replaced with maxSurge 0, maxUnavailable 1")
    # The second change names the one entry that changed, not the clipped long list.
    assert rolling[1].startswith("pod template changed (arguments extraArgs --seed=1 -> --seed=2)")


def test_a_budget_shared_by_the_autoscaling_floor_names_min_replicas() -> None:
    """h18: with autoscaling on, spec.autoscaling.minReplicas shares the budget
    (planning_replicas), but InsufficientCapacity said "lower spec.replicas", a field the
    autoscaler moves and the plan ignores."""
    spec = {
        **SPEC,
        "replicas": 3,
        "gpu": {"types": ["h100-80gb"], "gpusPerNode": 8, "budget": 8},
        "autoscaling": {"enabled": True, "mode": "native", "minReplicas": 3, "maxReplicas": 4},
    }
    fake, reconciler = _setup(spec)
    assert reconciler.reconcile("ns", "d", Events()).result == "plan_failed"
    message = _message(fake, "Ready")
    assert message.startswith(
        "spec.gpu.budget 8 shared by spec.autoscaling.minReplicas 3 leaves 2 GPUs per replica "
        "(lower spec.autoscaling.minReplicas or raise the budget); "
    ), message
    assert "spec.replicas" not in message
    assert _conditions(fake)["Progressing"] == ("False", "InsufficientCapacity")


def test_a_budget_under_one_gpu_per_replica_is_refused_not_exceeded() -> None:
    """h18: spec.gpu.budget 2 over spec.replicas 3 planned 1 GPU per replica (the share was
    floored at 1), so a one-GPU model rolled out 3 replicas x 1 GPU = 3 GPUs over a budget of
    2, with Planned True. The share is 0: PlanFailed, naming the field that sets it."""
    spec = {"model": "flash", "replicas": 3, "gpu": {"types": ["mi355x-288gb"], "budget": 2}}
    fake, reconciler = _setup(spec)
    assert reconciler.reconcile("ns", "d", Events()).result == "plan_failed"
    message = _ready(fake)
    assert message == (
        "spec.gpu.budget: spec.gpu.budget 2 shared by spec.replicas 3 leaves 0 GPUs per "
        "replica (lower spec.replicas or raise the budget)"
    ), message
    assert LWS_PATH not in fake.objects
    # Two GPUs for two replicas of one GPU each still plan.
    fake, reconciler = _setup({**spec, "replicas": 2})
    assert reconciler.reconcile("ns", "d", Events()).result == "applied"


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            {},
            "spec.replicas 1 caps the replicas spec.load.tokensPerSecond may use (raise "
            "spec.replicas to 27, or enable spec.autoscaling with maxReplicas 27)",
        ),
        (
            {
                "replicas": 2,
                "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 3},
            },
            "spec.autoscaling.maxReplicas 3 caps the replicas spec.load.tokensPerSecond may use "
            "(raise it to 27)",
        ),
    ],
)
def test_a_tokens_target_over_the_replica_cap_names_the_field_that_caps_it(
    change: dict[str, Any], said: str
) -> None:
    """h22: Flash at 60,000 tokens/s on one H200 node said "needs 24 replicas; at most 1 are
    allowed" and advised 32 GPUs in one replica: the 1 is spec.replicas (default 1), which the
    message never named, and raising it (or maxReplicas) is the plain fix. (27 replicas since
    each request reserves its window and compressor-state blocks from vLLM 0.33.0's shared pool,
    so a replica holds fewer sequences.)"""
    spec = {
        "model": "flash",
        "load": {"tokensPerSecond": 60000},
        "gpu": {"types": ["h200-141gb"], "maxNodes": 1},
        **change,
    }
    fake, reconciler = _setup(spec)
    assert reconciler.reconcile("ns", "d", Events()).result == "plan_failed"
    assert _conditions(fake)["Ready"] == ("False", "InsufficientCapacity")
    message = _ready(fake)
    assert "needs 27 replicas" in message
    assert said in message
    # Followed, it plans.
    followed = copy.deepcopy(spec)
    if "autoscaling" in change:
        followed["autoscaling"]["maxReplicas"] = 27
    else:
        followed["replicas"] = 27
    assert _applies(followed)


def test_the_replica_count_advised_for_a_tokens_target_plans_when_followed() -> None:
    """h22: with a concurrency target split over the replicas, each replica's throughput falls
    as they grow: Flash at 5,000 tokens/s and 8 concurrent requests needs 3 replicas at
    spec.replicas 1 but 4 at 3, so "raise spec.replicas to 3" would not have planned."""
    spec = {
        "model": "flash",
        "load": {"concurrency": 8, "tokensPerSecond": 5000},
        "gpu": {"types": ["h200-141gb"]},
    }
    fake, reconciler = _setup(spec)
    assert reconciler.reconcile("ns", "d", Events()).result == "plan_failed"
    message = _ready(fake)
    assert "needs 3 replicas; at most 1 are allowed" in message
    assert "(raise spec.replicas to 4, or enable spec.autoscaling with maxReplicas 4)" in message
    assert not _applies({**spec, "replicas": 3})
    assert _applies({**spec, "replicas": 4})


def test_no_replica_count_is_named_when_none_plans() -> None:
    """A spec.gpu.budget the replicas would share keeps every count from planning: the cap is
    named with no count (a count that does not plan would be false advice)."""
    spec = {
        "model": "pro",
        "load": {"tokensPerSecond": 100000},  # ~380 replicas: within the most (1,000)
        "gpu": {"types": ["h200-141gb"], "budget": 32},
    }
    fake, reconciler = _setup(spec)
    assert reconciler.reconcile("ns", "d", Events()).result == "plan_failed"
    assert _ready(fake).startswith(
        "spec.replicas 1 caps the replicas spec.load.tokensPerSecond may use (raise "
        "spec.replicas, or enable spec.autoscaling with a larger maxReplicas, with a "
        "spec.gpu.budget that holds them); "
    )


@pytest.mark.parametrize(
    "held",
    [
        {"paused": True},
        {"model": "pro", "gpu": {"types": ["rtx-4090-24gb"], "gpusPerNode": 1}},
    ],
    ids=["paused", "unplannable"],
)
def test_a_deleted_leaderworkerset_is_not_reported_as_serving(held: dict[str, Any]) -> None:
    """Day-2 finding (local control plane): while the spec is paused or cannot be rolled out
    the operator leaves the LeaderWorkerSet alone, and when someone then deleted it, status
    went on saying `readyReplicas: 1`, Available=True (and, paused, Ready=True) from the last
    counts: nothing served and nothing said so, for as long as the spec stayed as it was."""
    fake, reconciler = _setup()
    reconciler.reconcile("ns", "d", Events())
    fake.objects[LWS_PATH]["status"] = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    reconciler.reconcile("ns", "d", Events())
    assert _conditions(fake)["Available"] == ("True", "MinimumReplicasAvailable")
    fake.objects[CR_PATH]["spec"].update(copy.deepcopy(held))
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    reconciler.reconcile("ns", "d", Events())
    del fake.objects[LWS_PATH]  # kubectl delete leaderworkerset d
    reconciler.reconcile("ns", "d", Events())
    assert LWS_PATH not in fake.objects  # still left alone
    status = fake.objects[CR_PATH]["status"]
    assert (status["replicas"], status["readyReplicas"]) == (0, 0)
    assert _conditions(fake)["Available"] == ("False", "LeaderWorkerSetNotFound")
    assert _conditions(fake)["Ready"][0] == "False"
    assert "LeaderWorkerSet d does not exist" in _message(fake, "Available")
    assert _conditions(fake)["Degraded"] == ("True", "LeaderWorkerSetNotFound")
    # Once the spec can be rolled out again the LWS is created, and counted as new.
    fake.objects[CR_PATH]["spec"] = copy.deepcopy(SPEC)
    fake.objects[CR_PATH]["metadata"]["generation"] = 3
    reconciler.reconcile("ns", "d", Events())
    assert LWS_PATH in fake.objects
    assert _conditions(fake)["Available"] == ("False", "NoReplicaReady")


def test_a_port_another_manager_added_to_the_service_costs_one_apply_not_one_per_resync() -> None:
    """Day-2 finding (local control plane, `kubectl patch svc d-api` adding a port): server-side
    apply keeps another manager's list-map entry, so the Service never again held exactly the
    rendered ports, and every resync (and progress tick) re-applied it: a write per resource
    per resync, forever, each changing nothing."""
    fake = CoOwnedPorts()
    fake.objects[CR_PATH] = {
        "apiVersion": "dsv4.io/v1alpha1",
        "kind": "DeepSeekV4Deployment",
        "metadata": {"name": "d", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": copy.deepcopy(SPEC),
    }
    reconciler = Reconciler(KubeClient(fake, "dsv4-operator"), OperatorMetrics(), "img")
    reconciler.reconcile("ns", "d", Events())
    fake.foreign = {"name": "debug", "port": 9090, "protocol": "TCP", "targetPort": 9090}
    fake.objects[SERVICE_PATH]["spec"]["ports"].append(dict(fake.foreign))  # kubectl patch
    fake.objects[SERVICE_PATH]["metadata"]["resourceVersion"] = "50"
    reconciler.reconcile("ns", "d", Events())  # applies once; the entry stays (not ours)
    assert fake.foreign in fake.objects[SERVICE_PATH]["spec"]["ports"]
    resyncs = [reconciler.reconcile("ns", "d", Events()) for _ in range(3)]
    assert [(o.result, o.writes) for o in resyncs] == [("unchanged", 0)] * 3


def test_a_refused_status_write_is_one_event_not_plan_changed_at_every_retry() -> None:
    """Day-2 finding (local control plane, the chart's ClusterRole without `patch` on
    `deepseekv4deployments/status`): `PlanChanged` was posted before the status write, and
    compared with the stored status, which the refused write never changed, so every retry,
    resync and progress tick posted it again (12 Events in 15 s on the plane), while the
    refusal itself, the one thing to fix, never reached an Event: the ReconcileError report
    is a status write too."""
    fake, reconciler = _setup(fail=[("PATCH", "/status", 403)] * 20)
    fake.fail_message = 'cannot patch resource "deepseekv4deployments/status"'
    events = Events()
    outcomes = [reconciler.reconcile("ns", "d", events) for _ in range(4)]
    assert {o.result for o in outcomes} == {"internal_error"}
    assert events.reasons().count("PlanChanged") <= 1
    errors = [e for e in events if e[1] == "ReconcileError"]
    assert len(errors) == 1  # once per streak of the same refusal, not at every retry
    assert errors[0][0] == "Warning"
    assert 'HTTP 403: cannot patch resource "deepseekv4deployments/status"' in errors[0][2]
    fake.fail.clear()  # RBAC fixed
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    assert events.reasons().count("PlanChanged") == 1
    assert _conditions(fake)["Planned"] == ("True", "PlanReady")


def test_a_new_resource_that_cannot_be_rolled_out_says_nothing_runs() -> None:
    """An unplannable resource that never had a LeaderWorkerSet: Available=False says so,
    without claiming one existed before."""
    fake, reconciler = _setup({"model": "pro", "gpu": {"types": ["rtx-4090-24gb"]}})
    assert reconciler.reconcile("ns", "d", Events()).failed
    assert LWS_PATH not in fake.objects
    assert _conditions(fake)["Available"] == ("False", "LeaderWorkerSetNotFound")
    assert _message(fake, "Available").endswith("the operator creates it once the spec is fixed")
    assert "Degraded" not in _conditions(fake)


def test_an_image_and_extra_args_edited_together_are_both_named() -> None:
    """Day-2 finding (local control plane): one edit of spec.engine.image and extraArgs posted
    `pod template changed (image A -> B)` only: the image won over the arguments, so the
    Event hid the engine flag change that replaces the groups too."""
    fake, reconciler = _setup()
    reconciler.reconcile("ns", "d", Events())
    fake.objects[CR_PATH]["spec"]["engine"] = {
        "image": "registry.example.com/dsv4:1.2",
        "extraArgs": ["--enable-prefix-caching"],
    }
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    events = Events()
    reconciler.reconcile("ns", "d", events)
    (rolling,) = [m for _, r, m in events if r == "RollingUpdate"]
    assert "image img -> registry.example.com/dsv4:1.2" in rolling
    assert "extraArgs (none) -> --enable-prefix-caching" in rolling


MULTI_NODE: dict[str, Any] = {
    "model": "pro",
    "gpu": {"types": ["h100-80gb"], "gpusPerNode": 8, "maxNodes": 4},
    "replicas": 1,
}


def test_a_service_named_like_the_new_leaderworkerset_is_refused_before_creating_it() -> None:
    """Day-2 finding (local control plane): resources `a` and `a-api` in one namespace. The
    LWS controller names its headless Service after the LeaderWorkerSet and creates it only
    if no Service of that name exists (kubernetes-sigs/lws `reconcileHeadlessServices`,
    `CreateHeadlessServiceIfNotExists`), so LeaderWorkerSet `a-api` took resource `a`'s API
    Service `a-api` (ClusterIP, a's leaders) as its subdomain: the workers' DNS name of their
    leader never resolves and the groups never start, while both resources reported nothing."""
    fake, reconciler = _setup(MULTI_NODE)
    taken = "/api/v1/namespaces/ns/services/d"
    fake.objects[taken] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "d",
            "namespace": "ns",
            "uid": "svc-1",
            "ownerReferences": [
                {"apiVersion": "dsv4.io/v1alpha1", "kind": "DeepSeekV4Deployment", "name": "x"}
            ],
        },
        "spec": {"clusterIP": "10.0.0.20", "selector": {"dsv4.io/deployment": "x"}},
    }
    events = Events()
    outcome = reconciler.reconcile("ns", "d", events)
    assert outcome.failed
    assert LWS_PATH not in fake.objects
    assert _conditions(fake)["Ready"] == ("False", "ApplyFailed")
    message = _message(fake, "Ready")
    assert "Service ns/d exists (owned by DeepSeekV4Deployment x)" in message
    assert "headless Service" in message
    assert ("Warning", "ApplyFailed") in [e[:2] for e in events]
    del fake.objects[taken]  # renamed or deleted
    reconciler.reconcile("ns", "d", events)
    assert LWS_PATH in fake.objects


def test_an_existing_leaderworkerset_is_not_refused_for_its_own_headless_service() -> None:
    fake, reconciler = _setup(MULTI_NODE)
    reconciler.reconcile("ns", "d", Events())
    assert LWS_PATH in fake.objects
    fake.objects["/api/v1/namespaces/ns/services/d"] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "d",
            "namespace": "ns",
            "ownerReferences": [{"kind": "LeaderWorkerSet", "name": "d"}],
        },
        "spec": {"clusterIP": "None"},
    }
    fake.objects[CR_PATH]["spec"]["replicas"] = 2
    assert not reconciler.reconcile("ns", "d", Events()).failed
    assert fake.objects[LWS_PATH]["spec"]["replicas"] == 2


def test_a_paused_resource_without_the_lws_api_is_not_said_to_lack_its_leaderworkerset() -> None:
    """A GET of a kind the cluster does not serve is a 404 too: with no LWS API the paused
    resource's LeaderWorkerSet is not 'not found' (LeaderWorkerSetMissing says why)."""
    fake, reconciler = _setup(
        {**SPEC, "paused": True}, served={"/apis/policy/v1": ["PodDisruptionBudget"]}
    )
    reconciler.cluster_apis()
    reconciler.reconcile("ns", "d", Events())
    assert "Available" not in _conditions(fake)
    assert _conditions(fake)["Progressing"] == ("False", "Paused")


def test_scaling_down_is_not_held_while_a_reference_is_missing() -> None:
    """Day-2 finding (local control plane): while a claim or Secret the pods use is missing,
    the LeaderWorkerSet was left out of the apply entirely, not just its pod template, so
    `kubectl scale dsv4 --replicas=0` (how one frees the GPUs of groups that cannot start)
    never reached it: the LWS kept 1 group, and status said Ready=True AllReplicasReady
    "0/0 replicas ready" with Progressing=False RolloutComplete. Scaling down needs no
    reference; it is applied (scaling up still waits: its new pods could not start)."""
    spec = {**SPEC, "replicas": 2, "modelSource": {"pvc": {"claimName": "weights", "path": "/w"}}}
    fake, reconciler = _setup(spec)
    reconciler.reconcile("ns", "d", Events())
    assert fake.objects[LWS_PATH]["spec"]["replicas"] == 2
    template = copy.deepcopy(fake.objects[LWS_PATH]["spec"]["leaderWorkerTemplate"])
    fake.objects[LWS_PATH]["status"] = {"replicas": 2, "readyReplicas": 0, "updatedReplicas": 2}
    fake.objects[CR_PATH]["spec"]["replicas"] = 0  # kubectl scale --replicas=0
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    events = Events()
    reconciler.reconcile("ns", "d", events)
    assert fake.objects[LWS_PATH]["spec"]["replicas"] == 0
    assert fake.objects[LWS_PATH]["spec"]["leaderWorkerTemplate"] == template
    assert "ScalingLeaderWorkerSet" in events.reasons()
    # Up again while the claim is still missing: held (the new groups could not start), and
    # status does not say the rollout is complete.
    fake.objects[LWS_PATH]["status"] = {"replicas": 0, "readyReplicas": 0, "updatedReplicas": 0}
    fake.objects[CR_PATH]["spec"]["replicas"] = 1
    fake.objects[CR_PATH]["metadata"]["generation"] = 3
    reconciler.reconcile("ns", "d", Events())
    assert fake.objects[LWS_PATH]["spec"]["replicas"] == 0
    assert _conditions(fake)["Ready"] == ("False", "ReferenceMissing")
    assert _conditions(fake)["Progressing"][1] == "RollingOut"


def test_an_admin_secret_created_again_under_running_groups_is_a_warning() -> None:
    """Day-2 finding (local control plane): `kubectl delete secret NAME-admin` under running
    groups was answered by a new Secret with a new token and no Event at all; the running
    pods hold the old token until they restart, so the native autoscaler's drains are refused
    (HTTP 401, DrainFailed) with nothing on the resource saying why the token changed."""
    fake, reconciler = _setup()
    first = Events()
    reconciler.reconcile("ns", "d", first)
    assert "AdminTokenRotated" not in first.reasons()  # a new resource's Secret: no news
    del fake.objects[SECRET_PATH]
    events = Events()
    reconciler.reconcile("ns", "d", events)
    (rotated,) = [e for e in events if e[1] == "AdminTokenRotated"]
    assert rotated[0] == "Warning"
    assert "Secret d-admin" in rotated[2]
    assert "until they restart" in rotated[2]
    again = Events()
    reconciler.reconcile("ns", "d", again)
    assert "AdminTokenRotated" not in again.reasons()


def test_a_reconcile_error_reports_this_generation_and_the_live_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """h42: a `ReconcileError` (here a 403 on discovery, which no step expects) set Ready and
    Degraded only: status kept Progressing `RolloutComplete`, the previous generation's plan
    beside the new observedGeneration, and the counts the last rollout read."""
    from dsv4_operator.handlers import reconciler as module

    fake, reconciler = _setup()
    events = Events()
    reconciler.reconcile("ns", "d", events)
    fake.objects[LWS_PATH]["status"] = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    reconciler.reconcile("ns", "d", events)
    assert _conditions(fake)["Progressing"] == ("False", "RolloutComplete")
    lws_before = copy.deepcopy(fake.objects[LWS_PATH]["spec"])
    fake.objects[CR_PATH]["spec"]["gpu"] = {"types": ["h100-80gb"], "gpusPerNode": 8}
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    reconciler.apis = None  # discovery is asked again, and refused
    fake.fail = [("GET", "/apis/leaderworkerset.x-k8s.io/v1", 403)]
    fake.objects[LWS_PATH]["status"]["readyReplicas"] = 0  # a group failed meanwhile
    outcome = reconciler.reconcile("ns", "d", events)
    assert outcome.result == "internal_error"
    status = fake.objects[CR_PATH]["status"]
    assert status["observedGeneration"] == 2
    assert status["plan"]["gpuType"] == "h100-80gb"  # this generation's plan, not applied
    assert status["plan"]["applied"] is False
    assert _conditions(fake)["Planned"] == ("True", "PlanReady")
    assert _conditions(fake)["Ready"] == ("False", "ReconcileError")
    assert _conditions(fake)["Progressing"] == ("False", "ReconcileError")
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert "HTTP 403" in progressing["message"]
    assert "not applied" in progressing["message"]
    assert (status["replicas"], status["readyReplicas"]) == (1, 0)  # the live LeaderWorkerSet
    assert _conditions(fake)["Available"] == ("False", "NoReplicaReady")
    assert fake.objects[LWS_PATH]["spec"] == lws_before  # the groups keep the old plan
    assert events.reasons()[-2:] == ["PlanChanged", "ReconcileError"]
    # A failure before the plan (a planner bug): Planned is Unknown, status.plan is left.
    fake.objects[CR_PATH]["metadata"]["generation"] = 3
    fake.objects[CR_PATH]["spec"]["maxModelLen"] = 65536

    def broken(*_: Any, **__: Any) -> Any:
        raise ArithmeticError("boom")

    with monkeypatch.context() as patched:
        patched.setattr(module, "plan", broken)
        assert reconciler.reconcile("ns", "d", events).result == "internal_error"
    status = fake.objects[CR_PATH]["status"]
    assert status["observedGeneration"] == 3
    assert status["plan"]["gpuType"] == "h100-80gb"
    assert _conditions(fake)["Planned"] == ("Unknown", "ReconcileError")
    assert _conditions(fake)["Progressing"] == ("False", "ReconcileError")
    # Once a reconcile succeeds the plan is applied, and PlanChanged is not posted again.
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    status = fake.objects[CR_PATH]["status"]
    assert status["plan"]["applied"] is True
    assert _conditions(fake)["Planned"] == ("True", "PlanReady")
    assert _conditions(fake)["Progressing"] == ("True", "RollingOut")
    assert events.reasons().count("PlanChanged") == 2  # none -> h200, h200 -> h100


def test_a_refused_apply_shows_the_new_plan_not_applied_and_announces_it_once() -> None:
    """Day-2 finding: an `ApplyFailed` reconcile left the previous plan in status.plan beside
    the new generation. Now status.plan is the spec's plan with `applied: false` until a
    reconcile applies it; PlanChanged is posted with it, not again when it is applied."""
    fake, reconciler = _setup()
    events = Events()
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    old = fake.objects[CR_PATH]["status"]["plan"]
    assert old["applied"] is True
    lws_before = copy.deepcopy(fake.objects[LWS_PATH]["spec"])
    fake.objects[CR_PATH]["spec"]["gpu"] = {"types": ["h100-80gb"], "gpusPerNode": 8}
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    fake.fail = [("PATCH", "/leaderworkersets/", 422)]
    outcome = reconciler.reconcile("ns", "d", events)
    assert outcome.result == "error"
    status = fake.objects[CR_PATH]["status"]
    assert status["observedGeneration"] == 2
    assert status["plan"]["gpuType"] == "h100-80gb"
    assert status["plan"]["applied"] is False
    assert _conditions(fake)["Progressing"] == ("False", "ApplyFailed")
    assert _conditions(fake)["Planned"] == ("True", "PlanReady")
    assert fake.objects[LWS_PATH]["spec"] == lws_before  # the groups keep the old plan
    assert events.reasons()[-2:] == ["PlanChanged", "ApplyFailed"]
    assert "x h200-141gb -> " in events[-2][2]
    assert "LeaderWorkerSet ns/d: HTTP 422" in events[-1][2]
    assert reconciler.reconcile("ns", "d", events).result == "applied"  # the refusal is gone
    assert fake.objects[CR_PATH]["status"]["plan"]["applied"] is True
    assert _conditions(fake)["Progressing"] == ("True", "RollingOut")
    assert [r for r in events.reasons() if r == "PlanChanged"] == ["PlanChanged"] * 2


def test_a_lasting_wait_is_reported_once_and_left_to_the_timers() -> None:
    """Day-2 finding: a predecessor's admin Secret still being finalized failed every reconcile
    transiently and no status said so. The same failure twice is a lasting wait: status says
    it once (Progressing=True, Waiting), the outcome is `reported` (the handler leaves the
    retries to the timers rather than to kopf, which patches an annotation at each), and its
    ApiRetry Event is not repeated each minute."""
    from dsv4_operator.handlers.reconciler import API_RETRY_REPEAT_SECONDS

    now = [datetime(2026, 11, 29, tzinfo=UTC)]
    fake, reconciler = _setup()
    reconciler.clock = lambda: now[0]
    fake.objects[SECRET_PATH] = _secret("u-OLD")
    events = Events()
    first = reconciler.reconcile("ns", "d", events)
    assert (first.result, first.reported) == ("transient_error", False)  # maybe a one-off
    assert "status" not in fake.objects[CR_PATH]
    outcomes = []
    for step in range(4):
        now[0] += timedelta(seconds=API_RETRY_REPEAT_SECONDS * step)
        outcomes.append(reconciler.reconcile("ns", "d", events))
    assert [(o.result, o.reported) for o in outcomes] == [("transient_error", True)] * 4
    assert [o.writes for o in outcomes] == [1, 0, 0, 0]  # the status, once
    status = fake.objects[CR_PATH]["status"]
    assert set(status) == {"conditions"}
    assert _conditions(fake) == {"Ready": ("False", "Waiting"), "Progressing": ("True", "Waiting")}
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert "Secret ns/d-admin" in progressing["message"]
    assert "left by a deleted DeepSeekV4Deployment" in progressing["message"]
    assert events.reasons() == ["ApiRetry"]
    del fake.objects[SECRET_PATH]  # garbage-collected at last
    done = reconciler.reconcile("ns", "d", events)
    assert (done.result, done.reported) == ("applied", False)
    assert _conditions(fake)["Progressing"] == ("True", "RollingOut")
    assert LWS_PATH in fake.objects


def test_a_wait_status_cannot_be_written_is_left_to_kopfs_retry() -> None:
    fake, reconciler = _setup()
    fake.objects[SECRET_PATH] = _secret("u-OLD")
    reconciler.reconcile("ns", "d", Events())
    fake.fail = [("PATCH", "/status", 503)]
    outcome = reconciler.reconcile("ns", "d", Events())
    assert (outcome.result, outcome.reported) == ("transient_error", False)
    assert "left by a deleted" in outcome.message  # the wait, not the failed status write
    assert reconciler.reconcile("ns", "d", Events()).reported  # written now


def test_a_lasting_refusal_keeps_the_replica_counts_and_available_live() -> None:
    """Day-2 finding: while a child stayed refused (e.g. Kueue's webhook refusing a template
    change of a queued LeaderWorkerSet, which the README says lasts), status kept the counts
    and Available of the last successful reconcile: groups that stopped being ready still
    showed as ready. They follow the live LeaderWorkerSet, as for a spec that cannot be
    rolled out."""
    fake, reconciler = _setup()
    reconciler.reconcile("ns", "d", Events())
    fake.objects[LWS_PATH]["status"] = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    reconciler.reconcile("ns", "d", Events())
    assert _conditions(fake)["Available"] == ("True", "MinimumReplicasAvailable")
    fake.objects[CR_PATH]["spec"]["engine"] = {"env": [{"name": "FOO", "value": "1"}]}
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    fake.fail = [("PATCH", "/leaderworkersets/", 422)] * 2
    assert reconciler.reconcile("ns", "d", Events()).result == "error"
    assert fake.objects[CR_PATH]["status"]["readyReplicas"] == 1
    fake.objects[LWS_PATH]["status"] = {"replicas": 1, "readyReplicas": 0, "updatedReplicas": 1}
    assert reconciler.reconcile("ns", "d", Events()).result == "error"
    status = fake.objects[CR_PATH]["status"]
    assert (status["replicas"], status["readyReplicas"]) == (1, 0)
    assert _conditions(fake)["Available"] == ("False", "NoReplicaReady")
    assert _conditions(fake)["Ready"] == ("False", "ApplyFailed")


def test_drift_set_back_is_a_warning_once_per_drift_not_at_every_resync() -> None:
    """Day-2 finding (h46, local control plane): `kubectl scale` or an edit of the
    LeaderWorkerSet, or another manager's forced apply, was set back at the next resync without
    a word; a writer that put its value back each time fought the resync silently. Now a
    `DriftReverted` Warning names the fields (and the field managers holding them), once per
    drift for `DRIFT_REPEAT_SECONDS`, then again with the count of the reverts between; a new
    rendering (a spec change) is not drift."""
    from dsv4_operator.handlers.reconciler import DRIFT_REPEAT_SECONDS

    now = [datetime(2026, 11, 29, tzinfo=UTC)]
    fake, reconciler = _setup({**SPEC, "replicas": 2})
    reconciler.clock = lambda: now[0]
    reconciler.reconcile("ns", "d", Events())
    theirs = [
        {
            "manager": "argocd-controller",
            "operation": "Apply",
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        }
    ]
    events = Events()
    for _ in range(3):  # three reverts within the window
        fake.objects[LWS_PATH]["spec"]["replicas"] = 5
        fake.objects[LWS_PATH]["metadata"]["managedFields"] = copy.deepcopy(theirs)
        reconciler.reconcile("ns", "d", events)
        assert fake.objects[LWS_PATH]["spec"]["replicas"] == 2
        now[0] += timedelta(seconds=60)
    (drift,) = [e for e in events if e[1] == "DriftReverted"]
    assert drift[0] == "Warning"
    assert "LeaderWorkerSet d: spec.replicas changed by argocd-controller (Apply)" in drift[2]
    now[0] += timedelta(seconds=DRIFT_REPEAT_SECONDS)
    fake.objects[LWS_PATH]["spec"]["replicas"] = 5
    fake.objects[LWS_PATH]["metadata"]["managedFields"] = copy.deepcopy(theirs)
    later = Events()
    reconciler.reconcile("ns", "d", later)
    (again,) = [e for e in later if e[1] == "DriftReverted"]
    assert "(2 more time(s) since the last such Event)" in again[2]
    # A spec change renders the LeaderWorkerSet anew: not drift.
    fake.objects[CR_PATH]["spec"]["replicas"] = 3
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    changed = Events()
    reconciler.reconcile("ns", "d", changed)
    assert fake.objects[LWS_PATH]["spec"]["replicas"] == 3
    assert "DriftReverted" not in changed.reasons()


def test_a_deleted_child_reconciles_its_owner_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Day-2 finding (h46): a child deleted by hand was created again only at the next resync
    (60 s by default). The operator registers a kopf watch of each child kind
    (`WATCHED_CHILDREN`), and a DELETED event of a child reconciles the resource its controller
    ownerReference names; other events, and objects of other owners, do nothing."""
    import kopf

    from dsv4_operator.handlers import build_registry
    from dsv4_operator.handlers.deployment import WATCHED_CHILDREN, owner_of
    from dsv4_operator.settings import OperatorSettings

    registry = build_registry(OperatorSettings())
    watching = {str(h.id): h for h in registry._watching.get_all_handlers()}
    assert {f"child-{plural}" for _, plural in WATCHED_CHILDREN} <= set(watching)
    assert ("v1", "services") in WATCHED_CHILDREN
    assert all(plural != "secrets" for _, plural in WATCHED_CHILDREN)  # no list on Secrets
    fake, reconciler = _setup()
    reconciler.reconcile("ns", "d", Events())
    child: Any = copy.deepcopy(fake.objects[SERVICE_PATH])
    assert owner_of(child) == ("ns", "d", "u-1")
    assert owner_of({"metadata": {"ownerReferences": [{"kind": "Deployment"}]}}) is None
    del fake.objects[SERVICE_PATH]
    fn: Any = watching["child-services"].fn
    memo = kopf.Memo(reconciler=reconciler)
    logger: Any = logging.getLogger("test")
    fn(event={"type": "MODIFIED"}, body=kopf.Body(child), memo=memo, logger=logger)
    assert SERVICE_PATH not in fake.objects  # only deletions
    posted: list[Any] = []
    monkeypatch.setattr(kopf, "event", lambda body, **kw: posted.append((dict(body), kw)))
    fn(event={"type": "DELETED"}, body=kopf.Body(child), memo=memo, logger=logger)
    assert SERVICE_PATH in fake.objects
    ((owner, event),) = [p for p in posted if p[1]["reason"] == "ChildRecreated"]
    assert owner["kind"] == "DeepSeekV4Deployment"
    assert owner["metadata"] == {"namespace": "ns", "name": "d", "uid": "u-1"}
    assert "Service d-api" in event["message"]


def test_a_predecessors_deleted_child_reconciles_its_successor_under_its_own_uid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review finding (h48): a resource deleted and created again under its name gets a new uid,
    and waits for the garbage collector to remove its predecessor's children, whose
    ownerReference names the old uid. Their DELETED events reconciled the successor at once (as
    they should) but posted its Events under the old uid, where `kubectl describe` of the new
    object never shows them. Now they go to the live object's uid; a deletion after the resource
    itself is gone reconciles nothing."""
    import kopf

    from dsv4_operator.handlers import build_registry
    from dsv4_operator.settings import OperatorSettings

    registry = build_registry(OperatorSettings())
    watching = {str(h.id): h for h in registry._watching.get_all_handlers()}
    fn: Any = watching["child-services"].fn
    fake, reconciler = _setup()
    reconciler.reconcile("ns", "d", Events())
    old_child: Any = copy.deepcopy(fake.objects[SERVICE_PATH])
    fake.objects[CR_PATH]["metadata"]["uid"] = "u-2"  # deleted and created again
    waiting = reconciler.reconcile("ns", "d", Events())  # the predecessor's children remain
    assert waiting.retry_after is not None
    for path in [p for p in fake.objects if p != CR_PATH]:  # the collector removes them
        del fake.objects[path]
    posted: list[Any] = []
    monkeypatch.setattr(kopf, "event", lambda body, **kw: posted.append((dict(body), kw)))
    memo = kopf.Memo(reconciler=reconciler)
    logger: Any = logging.getLogger("test")
    fn(event={"type": "DELETED"}, body=kopf.Body(old_child), memo=memo, logger=logger)
    assert SERVICE_PATH in fake.objects
    assert posted
    assert {p[0]["metadata"]["uid"] for p in posted} == {"u-2"}
    del fake.objects[CR_PATH]
    posted.clear()
    fn(event={"type": "DELETED"}, body=kopf.Body(old_child), memo=memo, logger=logger)
    assert posted == []


def test_a_list_entry_the_apply_cannot_remove_is_not_said_to_be_set_back() -> None:
    """DriftReverted names only what the forced apply set back: a Service port another manager
    added stays (server-side apply removes only the applier's own list entries), so it is not
    reported as set back (the operator logs it once instead)."""
    fake = CoOwnedPorts()
    fake.objects[CR_PATH] = {
        "apiVersion": "dsv4.io/v1alpha1",
        "kind": "DeepSeekV4Deployment",
        "metadata": {"name": "d", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": copy.deepcopy(SPEC),
    }
    reconciler = Reconciler(KubeClient(fake, "dsv4-operator"), OperatorMetrics(), "img")
    reconciler.reconcile("ns", "d", Events())
    fake.foreign = {"name": "debug", "port": 9090, "protocol": "TCP", "targetPort": 9090}
    fake.objects[SERVICE_PATH]["spec"]["ports"].append(dict(fake.foreign))  # kubectl patch
    fake.objects[SERVICE_PATH]["metadata"]["resourceVersion"] = "50"
    events = Events()
    reconciler.reconcile("ns", "d", events)
    assert fake.foreign in fake.objects[SERVICE_PATH]["spec"]["ports"]
    assert "DriftReverted" not in events.reasons()
