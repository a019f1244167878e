"""The LeaderWorkerSet (`leaderworkerset.x-k8s.io/v1`) that runs a DeepSeekV4Deployment.

One LWS group is one model replica: `size` = nodes per replica from the plan; the leader (worker
index 0) serves the OpenAI API, the other pods run vLLM headless (the runtime reads its role from
the LWS environment). Every pod runs `dsv4-runtime` with the plan's arguments.

Choices, with their sources:

- `startupPolicy: LeaderCreated` (the LWS default): workers are created with the leader. Not
  `LeaderReady`, which creates them only once the leader pod is Ready: the leader's readiness is
  vLLM's `/health`, which vLLM serves only after every DP engine of the group, the workers'
  headless ones included, has connected (`wait_for_engine_startup`, vllm/v1/engine/utils.py), so
  a multi-node group would wait for itself forever. Workers resolve the leader's address with
  retries while it starts (runtime `distributed.py`).
- `restartPolicy: RecreateGroupAfterStart`: the LWS CRD (fixture) allows `RecreateGroupOnPodRestart`
  (its default), `RecreateGroupAfterStart`, `None` and the deprecated `Default`. With the default,
  a pod that fails while its peers are still pulling a 20 GB image or downloading 160-865 GB of
  weights recreates the whole group, which restarts the pulls and loops forever (lws #726, #167).
  `RecreateGroupAfterStart` skips the recreation while a pod of the group is still Pending (or
  the group is not fully created: lws docs, failure handling, "recreated if and only if there
  are no pods currently pending"; the controller's `pendingPodsInGroup` checks phase Pending),
  so a group whose peers still pull the image is not restarted as a group, while a failure in a
  group whose pods all run (loading the model counts) restarts it as a unit, which vLLM's
  multi-node DP needs (a lone restarted rank cannot rejoin).
  `None` would leave a running group half-dead after a pod failure.
- /dev/shm: a memory-backed emptyDir with `sizeLimit` = the plan's size (or `spec.shmSize`); tmpfs
  pages count against the pod's memory, so the size is added to the memory request (and limit).
- Weight offload in extraArgs (`--cpu-offload-gb`, or the prefetch offloader's
  `--offload-group-size`): vLLM pins the offloaded weights in host memory, each parameter at
  PyTorch's power-of-two ceiling, so the plan's bound of them (`weight_offload_host_bytes`,
  `planning.offload`: up to twice the offloaded bytes, plus one parameter for
  `--cpu-offload-gb`) is added to the memory request (and limit) too: a pod would otherwise
  request 2 GiB and pin 17 GB or more, and the scheduler could overcommit the node.
- Probes on the runtime's admin port: startup on `/ready` with a budget of the plan's
  `startup_budget_seconds` (weight load + first-boot kernel warm-up), readiness on `/ready`,
  liveness on `/health` (200 while loading and draining, so it never kills a loading engine).
- preStop sleep + `terminationGracePeriodSeconds` covering the runtime's drain (runtime_args).
- `enableServiceLinks: false` (a ClusterIP Service named `vllm` in the namespace would inject a
  `VLLM_PORT` that vLLM refuses, one named `master` a `MASTER_PORT`) and
  `automountServiceAccountToken: false` (nothing in the pod calls the API).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, Final

from dsv4_operator.api.v1alpha1.engine import NVLS_ENV, NVLS_OFF, POD_IP_ENV
from dsv4_operator.api.v1alpha1.quantities import quantity_bytes
from dsv4_operator.api.v1alpha1.scaling import surge_groups
from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.planning import Plan
from dsv4_operator.render.admin import admin_token_env
from dsv4_operator.render.labels import LABEL_ROLE, Owner, child_names, standard_labels
from dsv4_operator.render.placement import lws_annotations, lws_labels, template_annotations
from dsv4_operator.render.rollout import live_rollout
from dsv4_operator.render.runtime_args import (
    ADMIN_PORT,
    API_PORT,
    HEALTH_PATH,
    MODEL_MOUNT_PATH,
    PRESTOP_SLEEP_SECONDS,
    READY_FAILURE_THRESHOLD,
    READY_PATH,
    READY_PERIOD_SECONDS,
    ROUTE_SETTLE_ENV,
    ROUTE_SETTLE_SECONDS,
    SHM_PATH,
    runtime_args,
    shm_size_bytes,
    termination_grace,
)

__all__ = [
    "GPUS_ANNOTATION",
    "HF_CACHE_PATH",
    "LWS_API_VERSION",
    "PEAK_GPUS_ANNOTATION",
    "READY_FAILURE_THRESHOLD",
    "READY_PERIOD_SECONDS",
    "RESTART_POLICY",
    "ROLLOUT_ANNOTATION",
    "STARTUP_PERIOD_SECONDS",
    "STARTUP_POLICY",
    "bytes_quantity",
    "hf_cache_bytes",
    "hf_cache_error",
    "leaderworkerset",
    "lws_annotation",
    "rollout_strategy",
    "running_gpus_per_replica",
    "surge_groups",
]

LWS_API_VERSION: Final = "leaderworkerset.x-k8s.io/v1"
"""LeaderWorkerSet API version (the fixture CRD serves and stores only v1)."""
RESTART_POLICY: Final = "RecreateGroupAfterStart"
"""Group restart policy (module docstring explains the choice)."""
STARTUP_POLICY: Final = "LeaderCreated"
"""Workers are created together with the leader (module docstring explains why not LeaderReady)."""
STARTUP_PERIOD_SECONDS: Final = 10
"""startupProbe period; failureThreshold = ceil(budget / period)."""
CONTAINER: Final = "engine"
"""Name of the runtime container."""
HF_CACHE_PATH: Final = "/var/cache/huggingface"
"""`HF_HOME` of the worker pods with a Hugging Face source: the cache volume's mount point
(`spec.modelSource.huggingFace.cache`, an emptyDir sized for the checkpoint by default)."""
_KI: Final = 1 << 10
_GI: Final = 1 << 30


def bytes_quantity(size: int) -> str:
    """A byte count as the shortest exact Kubernetes quantity (`16Gi`, `1536Mi`, `1000`)."""
    for suffix, unit in (("Ti", _KI**4), ("Gi", _KI**3), ("Mi", _KI**2), ("Ki", _KI)):
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def hf_cache_bytes(plan: Plan) -> int:
    """Size of a pod's emptyDir Hugging Face cache: the checkpoint plus 5 % and 1 GiB.

    The margin covers the Hub's metadata, `.incomplete` files of an interrupted download and
    the tokenizer files; vLLM downloads the whole checkpoint on every node.
    """
    return plan.checkpoint_bytes + plan.checkpoint_bytes // 20 + _GI


def _resources(spec: DeepSeekV4DeploymentSpec, plan: Plan) -> dict[str, Any]:
    shm = shm_size_bytes(spec, plan)
    gpu = plan.chosen.gpu
    gpus = str(plan.chosen.layout.gpus_per_node)
    requests: dict[str, str] = dict(spec.resources.requests)
    limits: dict[str, str] = dict(spec.resources.limits)
    if _hf_cache_is_empty_dir(spec) and "ephemeral-storage" not in requests:
        # The download lands on the node's local disk: schedule only where it fits.
        requests["ephemeral-storage"] = bytes_quantity(hf_cache_bytes(plan))
    # tmpfs pages of /dev/shm and the weights the offloaders pin count against the pod.
    host = shm + plan.weight_offload_host_bytes
    requests["memory"] = bytes_quantity(quantity_bytes(requests.get("memory", "0")) + host)
    if "memory" in limits:
        limits["memory"] = bytes_quantity(quantity_bytes(limits["memory"]) + host)
    requests[gpu.resource] = gpus
    limits[gpu.resource] = gpus
    return {"requests": requests, "limits": limits}


def _env(owner: Owner, spec: DeepSeekV4DeploymentSpec, nodes: int) -> list[dict[str, Any]]:
    # The drain token first, from its Secret (render.admin); the spec cannot set that name.
    env: list[dict[str, Any]] = [admin_token_env(owner)]
    if nodes > 1 and spec.engine.env_var(ROUTE_SETTLE_ENV) is None:
        # A worker evicted alone holds its ranks while its leader leaves the Service.
        env.append({"name": ROUTE_SETTLE_ENV, "value": str(ROUTE_SETTLE_SECONDS)})
    # The pod's primary IP: on an IPv6 cluster the runtime listens on `::`, where kubelet
    # probes it (dsv4_runtime.distributed.bind_host).
    if spec.engine.env_var(POD_IP_ENV) is None:
        env.append({"name": POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    hub = spec.effective_model_source.hugging_face
    if hub is not None:
        env.append({"name": "HF_HOME", "value": HF_CACHE_PATH})
        token = hub.token_secret_ref
        if token is not None:
            token_ref = {"name": token.name, "key": token.key}
            env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": token_ref}})
    if spec.engine.env_var(NVLS_ENV) is None:
        # The plan's NCCL memory is NCCL's without NVLink SHARP (api NVLS_ENV).
        env.append({"name": NVLS_ENV, "value": NVLS_OFF})
    for var in spec.engine.env:
        if var.value_from is not None:
            kind, ref = var.value_from.kind_and_ref
            key_ref: dict[str, Any] = {"name": ref.name, "key": ref.key}
            if ref.optional:
                key_ref["optional"] = True
            field = "secretKeyRef" if kind == "Secret" else "configMapKeyRef"
            env.append({"name": var.name, "valueFrom": {field: key_ref}})
        else:
            env.append({"name": var.name, "value": var.value or ""})
    return env


def _volumes(spec: DeepSeekV4DeploymentSpec, plan: Plan) -> tuple[list[Any], list[Any]]:
    shm = bytes_quantity(shm_size_bytes(spec, plan))
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}}
    ]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": SHM_PATH}]
    source = spec.model_source
    if source is not None and source.pvc is not None:
        claim = {"claimName": source.pvc.claim_name, "readOnly": True}
        volumes.append({"name": "model", "persistentVolumeClaim": claim})
        mounts.append({"name": "model", "mountPath": MODEL_MOUNT_PATH, "readOnly": True})
    elif source is not None and source.host_path is not None:
        host = {"path": source.host_path.path, "type": "Directory"}
        volumes.append({"name": "model", "hostPath": host})
        mounts.append({"name": "model", "mountPath": MODEL_MOUNT_PATH, "readOnly": True})
    hub = spec.effective_model_source.hugging_face
    if hub is not None:
        if hub.cache is None:
            cache: dict[str, Any] = {
                "emptyDir": {"sizeLimit": bytes_quantity(hf_cache_bytes(plan))}
            }
        elif hub.cache.claim_name is not None:
            cache = {"persistentVolumeClaim": {"claimName": hub.cache.claim_name}}
        else:
            cache = {"hostPath": {"path": hub.cache.host_path, "type": "DirectoryOrCreate"}}
        volumes.append({"name": "hf-cache", **cache})
        mounts.append({"name": "hf-cache", "mountPath": HF_CACHE_PATH})
    return volumes, mounts


def hf_cache_error(spec: DeepSeekV4DeploymentSpec, plan: Plan) -> str | None:
    """Why the pods could never hold their Hugging Face download, or None.

    With the default emptyDir cache the download counts against the container's ephemeral
    storage: a `spec.resources.limits.ephemeral-storage` below it, plus 1 GiB for the
    container's writable layer and logs, would get the pod evicted mid-download (and a request
    above the limit is refused by the API server).
    """
    limit = spec.resources.limits.get("ephemeral-storage")
    if not _hf_cache_is_empty_dir(spec) or limit is None:
        return None
    need = hf_cache_bytes(plan) + _GI  # + the container's writable layer and logs
    if quantity_bytes(limit) >= need:
        return None
    return (
        f"spec.resources.limits.ephemeral-storage ({limit}) is below the {need:,} B the "
        "Hugging Face download needs in the pod's cache: raise it, or give "
        "spec.modelSource.huggingFace.cache a PVC or host path"
    )


def _hf_cache_is_empty_dir(spec: DeepSeekV4DeploymentSpec) -> bool:
    """Whether the pods download into the default per-pod emptyDir (a Hub source, no cache)."""
    hub = spec.effective_model_source.hugging_face
    return hub is not None and hub.cache is None


def _probe(path: str, period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "admin"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def _pod_spec(
    owner: Owner, spec: DeepSeekV4DeploymentSpec, plan: Plan, image: str
) -> dict[str, Any]:
    volumes, mounts = _volumes(spec, plan)
    startup_failures = max(1, math.ceil(plan.startup_budget_seconds / STARTUP_PERIOD_SECONDS))
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.engine.image or image,
        "args": runtime_args(spec, plan),
        "ports": [
            {"name": "http", "containerPort": API_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        "env": _env(owner, spec, plan.chosen.layout.nodes),
        "resources": _resources(spec, plan),
        "volumeMounts": mounts,
        "startupProbe": _probe(READY_PATH, STARTUP_PERIOD_SECONDS, startup_failures, 5),
        "readinessProbe": _probe(READY_PATH, READY_PERIOD_SECONDS, READY_FAILURE_THRESHOLD, 5),
        "livenessProbe": _probe(HEALTH_PATH, 15, 4, 10),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_SECONDS)]}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if not container["env"]:
        del container["env"]
    gpu = plan.chosen.gpu
    pod: dict[str, Any] = {
        "containers": [container],
        # No `<SERVICE>_PORT` variables: any ClusterIP Service named `vllm` in the namespace
        # (another vLLM install, say) would set VLLM_PORT=tcp://..., which vLLM refuses at
        # start (vllm/envs.py get_vllm_port; vllm-project/vllm#34199), and one named `master`
        # would set MASTER_PORT, which torch.distributed reads.
        "enableServiceLinks": False,
        # The runtime and vLLM never call the Kubernetes API: no token in a pod that serves
        # user traffic.
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": termination_grace(spec, plan.chosen.layout.nodes),
        "nodeSelector": {gpu.label_key: gpu.label, **spec.gpu.node_selector},
        "volumes": volumes,
    }
    if spec.gpu.tolerations:
        pod["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True, mode="json")
            for t in spec.gpu.tolerations
        ]
    if spec.gpu.affinity:
        pod["affinity"] = dict(spec.gpu.affinity)
    settings = spec.pod
    if settings.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    for key, value in (
        ("priorityClassName", settings.priority_class_name),
        ("runtimeClassName", settings.runtime_class_name),
        ("schedulerName", settings.scheduler_name),
        ("serviceAccountName", settings.service_account_name),
    ):
        if value is not None:
            pod[key] = value
    return pod


def _template_metadata(
    spec: DeepSeekV4DeploymentSpec, labels: dict[str, str], role: str, placement: dict[str, str]
) -> dict[str, Any]:
    """A pod template's metadata: `spec.pod` labels and annotations, then ours.

    Ours are never overridden: the API parse refuses keys under the operator's prefixes, and
    Kueue topology keys in `spec.pod.annotations` when `spec.placement.topologyKey` sets them.
    """
    meta: dict[str, Any] = {"labels": {**spec.pod.labels, **labels, LABEL_ROLE: role}}
    annotations = {**spec.pod.annotations, **placement}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _unavailable_groups(value: int | str, replicas: int) -> int:
    """Groups a maxUnavailable allows: percentages round down (LWS webhook, as a Deployment's)."""
    if isinstance(value, int):
        return value
    return int(value.rstrip("%")) * replicas // 100


GPUS_ANNOTATION: Final = "dsv4.io/gpus-per-replica"
"""LeaderWorkerSet annotation: GPUs per group of the plan its template runs."""
PEAK_GPUS_ANNOTATION: Final = "dsv4.io/rollout-peak-gpus-per-replica"
"""LeaderWorkerSet annotation: the most GPUs per group its running groups may hold while a
rollout goes on (the previous plan's, until every group is updated); the surge is sized on it."""
ROLLOUT_ANNOTATION: Final = "dsv4.io/requested-rollout"
"""LWS annotation: `spec.rollout`'s maxSurge and maxUnavailable as asked (`1,25%`), beside the
strategy the budget may have lowered: a new request the budget cannot hold is announced
(`RolloutAdjusted`) even when the applied strategy stays the same."""


def lws_annotation(lws: Mapping[str, Any] | None, key: str) -> str | None:
    """Annotation `key` of a LeaderWorkerSet manifest or live object (None when absent)."""
    value = (((lws or {}).get("metadata") or {}).get("annotations") or {}).get(key)
    return None if value is None else str(value)


def running_gpus_per_replica(live: Mapping[str, Any] | None) -> int | None:
    """GPUs per group the live LeaderWorkerSet's groups may hold, for `rollout_strategy`.

    While a rollout goes on (groups not yet updated, surge groups, or a generation the LWS
    controller has not observed: `rollout.live_rollout`) the peak annotation, which keeps the
    previous plan's count; once it is done, the current plan's. None without a live object or
    our annotations (created before them).
    """
    if live is None:
        return None
    counts = live_rollout(live)
    # Groups below a canary partition keep the previous plan's GPUs even once it is "rolled".
    rolling = not counts.rolled or counts.partition > 0
    value = lws_annotation(live, PEAK_GPUS_ANNOTATION if rolling else GPUS_ANNOTATION)
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def rollout_strategy(
    spec: DeepSeekV4DeploymentSpec, plan: Plan, running_gpus_per_replica: int | None = None
) -> dict[str, Any]:
    """LWS rolloutStrategy from `spec.rollout`, with the surge capped by `spec.gpu.budget`.

    A surge group costs a whole replica's GPUs (8-32 for V4), so maxSurge is lowered until
    `(replicas + surge) x GPUs per replica <= budget`. When that leaves no surge group and
    maxUnavailable allows none either, maxUnavailable becomes 1: a rollout must be able to make
    progress, and the LWS webhook refuses the object otherwise ("must not be 0 when `maxSurge`
    is 0", kubernetes-sigs/lws `pkg/webhooks/leaderworkerset_webhook.go`, which scales
    percentages of `replicas` with maxSurge rounded up and maxUnavailable rounded down; so
    "50%" of 1 replica is 0 groups).

    `running_gpus_per_replica` is what the groups of the last rollout hold: while a re-plan
    rolls out, groups not yet updated keep it, so the surge is what the budget holds beside
    `replicas` groups of the larger of the two.
    """
    rollout = spec.rollout
    max_surge: int | str = rollout.max_surge
    max_unavailable: int | str = rollout.max_unavailable
    budget = spec.gpu.budget
    if budget is not None:
        gpus = plan.chosen.layout.gpus
        widest = max(gpus, running_gpus_per_replica or 0)
        allowed = max(0, (budget - spec.replicas * widest) // gpus)
        if surge_groups(max_surge, spec.replicas) > allowed:
            max_surge = allowed
    if (
        spec.replicas
        and surge_groups(max_surge, spec.replicas) == 0
        and _unavailable_groups(max_unavailable, spec.replicas) == 0
    ):
        max_unavailable = 1
    return {
        "type": "RollingUpdate",
        "rollingUpdateConfiguration": {
            "maxSurge": max_surge,
            "maxUnavailable": max_unavailable,
            "partition": rollout.partition,
        },
    }


def leaderworkerset(
    owner: Owner,
    spec: DeepSeekV4DeploymentSpec,
    plan: Plan,
    *,
    image: str,
    running_gpus_per_replica: int | None = None,
) -> dict[str, Any]:
    """The LeaderWorkerSet of a planned DeepSeekV4Deployment.

    Args:
        owner: the owning resource (name, namespace, uid).
        spec: the parsed spec.
        plan: a plan that fits.
        image: worker image when `spec.engine.image` is unset.
        running_gpus_per_replica: GPUs per group of the last rollout (`rollout_strategy`).

    Returns:
        The manifest as a dict (apiVersion, kind, metadata with ownerReferences, spec).
    """
    labels = standard_labels(owner, spec.model, "inference")
    pod = _pod_spec(owner, spec, plan, image)
    name = child_names(owner).leaderworkerset
    size = plan.chosen.layout.nodes
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": {**lws_labels(spec.placement), **labels},
        "ownerReferences": [owner.reference()],
    }
    gpus = plan.chosen.layout.gpus
    metadata["annotations"] = {
        **lws_annotations(spec.placement),
        GPUS_ANNOTATION: str(gpus),
        PEAK_GPUS_ANNOTATION: str(max(gpus, running_gpus_per_replica or 0)),
        ROLLOUT_ANNOTATION: f"{spec.rollout.max_surge},{spec.rollout.max_unavailable}",
    }
    tas = template_annotations(spec.placement, name, size)
    return {
        "apiVersion": LWS_API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": metadata,
        "spec": {
            "replicas": spec.replicas,
            "startupPolicy": STARTUP_POLICY,
            "rolloutStrategy": rollout_strategy(spec, plan, running_gpus_per_replica),
            "leaderWorkerTemplate": {
                "size": size,
                "restartPolicy": RESTART_POLICY,
                "leaderTemplate": {
                    "metadata": _template_metadata(spec, labels, "leader", tas),
                    "spec": pod,
                },
                "workerTemplate": {
                    "metadata": _template_metadata(spec, labels, "worker", tas),
                    "spec": copy.deepcopy(pod),
                },
            },
        },
    }
