"""The LeaderWorkerSet's group shape, resources, probes, placement and rollout."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.operator.render.conftest import Case

from dsv4_operator import crdgen
from dsv4_operator.api import parse_spec, quantity_bytes
from dsv4_operator.planning import plan, plan_to_dict
from dsv4_operator.planning.from_spec import request_from_spec
from dsv4_operator.planning.models import FLASH
from dsv4_operator.planning.weights import layer_weight_bytes
from dsv4_operator.render import leaderworkerset
from dsv4_operator.render import runtime_args as ra
from dsv4_operator.render.leaderworkerset import RESTART_POLICY, bytes_quantity, rollout_strategy


def _pod(lws: dict[str, Any], template: str = "leaderTemplate") -> dict[str, Any]:
    pod: dict[str, Any] = lws["spec"]["leaderWorkerTemplate"][template]["spec"]
    return pod


def test_group_shape_and_policies(case: Case, lws_schema: dict[str, Any]) -> None:
    lws = leaderworkerset(case.owner, case.spec, case.plan, image="img")
    want = plan_to_dict(case.plan)
    group = lws["spec"]["leaderWorkerTemplate"]
    assert lws["spec"]["replicas"] == case.spec.replicas
    assert group["size"] == want["layout"]["nodes"]
    assert lws["spec"]["startupPolicy"] == "LeaderCreated"
    template = lws_schema["properties"]["spec"]["properties"]["leaderWorkerTemplate"]
    enum = template["properties"]["restartPolicy"]["enum"]
    assert RESTART_POLICY in enum
    assert group["restartPolicy"] == "RecreateGroupAfterStart"
    assert lws["metadata"]["ownerReferences"] == [case.owner.reference()]
    leader, worker = _pod(lws), _pod(lws, "workerTemplate")
    assert leader == worker  # the role comes from LWS_WORKER_INDEX, not from the template
    assert leader is not worker


def test_resources_shm_and_probes(case: Case) -> None:
    lws = leaderworkerset(case.owner, case.spec, case.plan, image="img")
    pod = _pod(lws)
    (container,) = pod["containers"]
    want = plan_to_dict(case.plan)
    resource = want["gpu"]["resource"]
    gpus = str(want["layout"]["gpus_per_node"])
    assert container["resources"]["limits"][resource] == gpus
    assert container["resources"]["requests"][resource] == gpus
    shm = case.spec.shm_bytes or want["shm_size_bytes"]
    (dshm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert dshm["emptyDir"] == {"medium": "Memory", "sizeLimit": bytes_quantity(shm)}
    user = quantity_bytes(case.spec.resources.requests.get("memory", "0"))
    assert quantity_bytes(container["resources"]["requests"]["memory"]) == user + shm
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    startup = container["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert want["startup_budget_seconds"] <= budget < want["startup_budget_seconds"] + 10
    assert startup["httpGet"]["path"] == ra.READY_PATH
    assert container["readinessProbe"]["httpGet"]["path"] == ra.READY_PATH
    assert container["livenessProbe"]["httpGet"]["path"] == ra.HEALTH_PATH
    # Multi-node groups: a worker evicted alone holds its ranks while its leader leaves the
    # Service (readiness period x (failureThreshold + 1)), then drains.
    settle = ra.ROUTE_SETTLE_SECONDS if want["layout"]["nodes"] > 1 else 0
    assert pod["terminationGracePeriodSeconds"] == ra.TERMINATION_GRACE_SECONDS + settle
    assert (
        container["readinessProbe"]["periodSeconds"]
        * (container["readinessProbe"]["failureThreshold"] + 1)
        == ra.ROUTE_SETTLE_SECONDS
    )
    # As a variable, which a runtime image that predates it ignores (a flag would exit 2).
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env.get(ra.ROUTE_SETTLE_ENV) == (str(settle) if settle else None)
    assert not any("route-settle" in arg for arg in container["args"])
    assert container["lifecycle"]["preStop"]["exec"]["command"] == [
        "sleep",
        str(ra.PRESTOP_SLEEP_SECONDS),
    ]
    node_label = want["gpu"]["node_label"]
    assert pod["nodeSelector"] == {**node_label, **case.spec.gpu.node_selector}


def test_memory_limit_covers_shm_and_placement_passes_through() -> None:
    spec = parse_spec(
        {
            "model": "flash",
            "gpu": {
                "types": ["h200-141gb"],
                "nodeSelector": {"pool": "a"},
                "tolerations": [{"key": "gpu", "operator": "Equal", "value": "x"}],
                "affinity": {
                    "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}
                },
            },
            "resources": {"requests": {"memory": "100Gi"}, "limits": {"memory": "200Gi"}},
            "shmSize": "20Gi",
            "engine": {"image": "my/image:1", "env": [{"name": "A", "value": "b"}]},
            "modelSource": {
                "huggingFace": {"repo": "a/b", "tokenSecretRef": {"name": "hf", "key": "t"}}
            },
        }
    )
    planned = plan(request_from_spec(spec))
    pod = _pod(leaderworkerset(_owner(), spec, planned, image="default"))
    (c,) = pod["containers"]
    assert c["image"] == "my/image:1"
    assert c["resources"]["requests"]["memory"] == "120Gi"
    assert c["resources"]["limits"]["memory"] == "220Gi"
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Equal", "value": "x"}]
    assert pod["affinity"] == {
        "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}
    }
    assert pod["nodeSelector"]["pool"] == "a"
    assert c["env"] == [
        {
            "name": "DSV4_RUNTIME_ADMIN_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "x-admin", "key": "token"}},
        },
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "HF_HOME", "value": "/var/cache/huggingface"},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}}},
        {"name": "NCCL_NVLS_ENABLE", "value": "0"},
        {"name": "A", "value": "b"},
    ]


def _owner() -> Any:
    from dsv4_operator.render import Owner

    return Owner("x", "ns", "uid")


def test_gpu_budget_caps_the_surge() -> None:
    raw: dict[str, Any] = {
        "model": "flash",
        "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8, "budget": 16},
        "parallelism": {"tensor": 1, "data": 8, "pipeline": 1},
        "replicas": 2,
        "rollout": {"maxSurge": 2, "maxUnavailable": 0},
    }
    spec = parse_spec(raw)
    planned = plan(request_from_spec(spec))
    assert planned.chosen.layout.gpus == 8
    # 2 replicas x 8 GPUs already use the budget of 16: no surge group fits, so the rollout
    # replaces one group at a time instead.
    assert rollout_strategy(spec, planned)["rollingUpdateConfiguration"] == {
        "maxSurge": 0,
        "maxUnavailable": 1,
        "partition": 0,
    }
    roomy = parse_spec({**raw, "gpu": {**raw["gpu"], "budget": 24}})
    assert rollout_strategy(roomy, planned)["rollingUpdateConfiguration"]["maxSurge"] == 1
    percent = parse_spec(
        {**raw, "gpu": {**raw["gpu"], "budget": 100}, "rollout": {"maxSurge": "50%"}}
    )
    assert rollout_strategy(percent, planned)["rollingUpdateConfiguration"]["maxSurge"] == "50%"


@pytest.mark.parametrize(
    ("replicas", "max_unavailable", "rendered"),
    [
        (1, "50%", 1),
        (3, "25%", 1),
        (2, "50%", "50%"),
        (4, "25%", "25%"),
        (3, 2, 2),
        (0, "50%", "50%"),
    ],  # the webhook checks nothing at 0 replicas
)
def test_percent_max_unavailable_that_rounds_to_no_group_becomes_one(
    replicas: int, max_unavailable: int | str, rendered: int | str
) -> None:
    # The LWS webhook rounds maxUnavailable percentages down: with no surge, "50%" of one
    # replica is 0 groups and the webhook refuses the object, so one group is allowed instead.
    spec = parse_spec(
        {
            "model": "flash",
            "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8},
            "replicas": replicas,
            "rollout": {"maxSurge": 0, "maxUnavailable": max_unavailable},
        }
    )
    planned = plan(request_from_spec(spec))
    config = rollout_strategy(spec, planned)["rollingUpdateConfiguration"]
    assert config["maxSurge"] == 0
    assert config["maxUnavailable"] == rendered


def test_bytes_quantity_is_exact() -> None:
    for size in (1, 1000, 1024, 3 * 2**20, 16 * 2**30, 2**40, 2**30 + 1):
        assert quantity_bytes(bytes_quantity(size)) == size
    assert bytes_quantity(16 * 2**30) == "16Gi"
    assert math.isclose(quantity_bytes("1536Mi"), 1.5 * 2**30)


def test_pods_get_no_service_links_and_no_api_token() -> None:
    # With service links, a ClusterIP Service named `vllm` in the namespace would give every
    # pod VLLM_PORT=tcp://<ip>:<port>, which vLLM refuses at start.
    from dsv4_operator.render import Owner

    spec = parse_spec({"model": "flash", "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8}})
    lws = leaderworkerset(
        Owner("vllm", "ns", "uid"), spec, plan(request_from_spec(spec)), image="i"
    )
    for role in ("leaderTemplate", "workerTemplate"):
        pod = lws["spec"]["leaderWorkerTemplate"][role]["spec"]
        assert pod["enableServiceLinks"] is False
        assert pod["automountServiceAccountToken"] is False


def test_pod_settings_reach_both_templates() -> None:
    from dsv4_operator.render import Owner

    spec = parse_spec(
        {
            "model": "flash",
            "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8},
            "pod": {
                "imagePullSecrets": ["regcred", "mirror"],
                "priorityClassName": "inference-high",
                "runtimeClassName": "nvidia",
                "schedulerName": "volcano",
                "serviceAccountName": "weights-reader",
                "labels": {"team": "llm"},
                "annotations": {"sidecar.istio.io/inject": "false"},
            },
        }
    )
    lws = leaderworkerset(Owner("d", "ns", "uid"), spec, plan(request_from_spec(spec)), image="i")
    for role, name in (("leaderTemplate", "leader"), ("workerTemplate", "worker")):
        template = lws["spec"]["leaderWorkerTemplate"][role]
        pod = template["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
        assert (
            pod["priorityClassName"],
            pod["runtimeClassName"],
            pod["schedulerName"],
            pod["serviceAccountName"],
        ) == ("inference-high", "nvidia", "volcano", "weights-reader")
        assert pod["automountServiceAccountToken"] is False
        labels = template["metadata"]["labels"]
        assert labels["team"] == "llm"
        assert labels["dsv4.io/role"] == name
        assert labels["dsv4.io/deployment"] == "d"
        assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    # Unset: none of the keys appear (the cluster's defaults apply).
    bare = parse_spec({"model": "flash", "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8}})
    pod = leaderworkerset(Owner("d", "ns", "uid"), bare, plan(request_from_spec(bare)), image="i")[
        "spec"
    ]["leaderWorkerTemplate"]["leaderTemplate"]
    assert not {
        "imagePullSecrets",
        "priorityClassName",
        "runtimeClassName",
        "schedulerName",
        "serviceAccountName",
    } & set(pod["spec"])
    assert "annotations" not in pod["metadata"]


def _placed(placement: dict[str, Any], max_nodes: int = 1) -> dict[str, Any]:
    from dsv4_operator.render import Owner

    spec = parse_spec(
        {
            "model": "pro",
            "maxModelLen": 1048576,
            "load": {"concurrency": 4},
            "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8, "maxNodes": max_nodes},
            "pod": {"annotations": {"sidecar.istio.io/inject": "false"}},
            "placement": placement,
        }
    )
    return leaderworkerset(
        Owner("pro", "ns", "uid"), spec, plan(request_from_spec(spec)), image="i"
    )


def test_placement_reaches_the_lws_and_both_templates() -> None:
    lws = _placed(
        {
            "exclusiveTopologyKey": "example.com/rack",
            "queueName": "inference",
            "workloadPriorityClassName": "production",
            "topologyKey": "cloud.google.com/gce-topology-block",
        },
        max_nodes=2,
    )
    group = lws["spec"]["leaderWorkerTemplate"]
    assert group["size"] == 2  # Pro at 1M on H200 with 4 requests needs two nodes per group
    meta = lws["metadata"]
    assert meta["annotations"] == {
        "leaderworkerset.sigs.k8s.io/exclusive-topology": "example.com/rack",
        "dsv4.io/gpus-per-replica": "16",
        "dsv4.io/rollout-peak-gpus-per-replica": "16",
        "dsv4.io/requested-rollout": "0,1",
    }
    assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "inference"
    assert meta["labels"]["kueue.x-k8s.io/priority-class"] == "production"
    assert meta["labels"]["dsv4.io/deployment"] == "pro"  # ours are kept
    for role in ("leaderTemplate", "workerTemplate"):
        assert group[role]["metadata"]["annotations"] == {
            "sidecar.istio.io/inject": "false",
            "kueue.x-k8s.io/podset-required-topology": "cloud.google.com/gce-topology-block",
            # One name on both PodSets: Kueue finds one block for the leader and its worker.
            "kueue.x-k8s.io/podset-group-name": meta["name"],
        }
        # Kueue reads the queue from the LeaderWorkerSet, not from the pods.
        assert "kueue.x-k8s.io/queue-name" not in group[role]["metadata"]["labels"]


def test_preferred_topology_and_single_pod_groups() -> None:
    lws = _placed({"topologyKey": "example.com/rack", "topologyPolicy": "Preferred"}, max_nodes=2)
    annotations = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["metadata"]["annotations"]
    assert annotations["kueue.x-k8s.io/podset-preferred-topology"] == "example.com/rack"
    assert "kueue.x-k8s.io/podset-required-topology" not in annotations
    # One pod per group (Flash on one node): no worker PodSet to co-locate, so no group name.
    from dsv4_operator.render import Owner

    spec = parse_spec(
        {
            "model": "flash",
            "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8},
            "placement": {"topologyKey": "example.com/rack"},
        }
    )
    single = leaderworkerset(Owner("f", "ns", "u"), spec, plan(request_from_spec(spec)), image="i")
    group = single["spec"]["leaderWorkerTemplate"]
    assert group["size"] == 1
    assert group["leaderTemplate"]["metadata"]["annotations"] == {
        "kueue.x-k8s.io/podset-required-topology": "example.com/rack"
    }


def test_no_placement_adds_no_keys() -> None:
    lws = _placed({}, max_nodes=2)
    assert set(lws["metadata"]["annotations"]) == {
        "dsv4.io/gpus-per-replica",
        "dsv4.io/rollout-peak-gpus-per-replica",
        "dsv4.io/requested-rollout",
    }
    assert not any(k.startswith("kueue.x-k8s.io/") for k in lws["metadata"]["labels"])
    group = lws["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        assert group[role]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}


@pytest.mark.parametrize(
    ("placement", "max_nodes", "message"),
    [
        ({"exclusiveTopologyKey": "kubernetes.io/hostname"}, 2,
         "exclusiveTopologyKey kubernetes.io/hostname puts a whole group on one node, but the "
         "plan's group spans 2 nodes"),
        ({"topologyKey": "kubernetes.io/hostname"}, 2,
         "topologyKey kubernetes.io/hostname with topologyPolicy Required"),
        ({"exclusiveTopologyKey": "kubernetes.io/hostname"}, 1, None),
        ({"topologyKey": "kubernetes.io/hostname", "topologyPolicy": "Preferred"}, 2, None),
        ({"exclusiveTopologyKey": "example.com/rack"}, 2, None),
    ],
)  # fmt: skip
def test_a_host_level_domain_cannot_hold_a_multi_node_group(
    placement: dict[str, Any], max_nodes: int, message: str | None
) -> None:
    from dsv4_operator.render.placement import placement_error

    model = "pro" if max_nodes > 1 else "flash"
    spec = parse_spec(
        {
            "model": model,
            "maxModelLen": 1048576,
            "load": {"concurrency": 4},
            "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8, "maxNodes": max_nodes},
            "placement": placement,
        }
    )
    nodes = plan(request_from_spec(spec)).chosen.layout.nodes
    assert nodes == max_nodes
    error = placement_error(spec.placement, nodes)
    if message is None:
        assert error is None
    else:
        assert error is not None
        assert message in error


def _hub_pod(source: dict[str, Any], resources: dict[str, Any] | None = None) -> Any:
    body: dict[str, Any] = {
        "model": "pro",
        "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8},
        "modelSource": {"huggingFace": {"repo": "deepseek-ai/DeepSeek-V4-Pro", **source}},
    }
    if resources is not None:
        body["resources"] = resources
    spec = parse_spec(body)
    planned = plan(request_from_spec(spec))
    return _pod(leaderworkerset(_owner(), spec, planned, image="i")), planned


def test_a_hub_download_gets_a_cache_volume_sized_for_the_checkpoint() -> None:
    from dsv4_operator.render.leaderworkerset import hf_cache_bytes

    pod, planned = _hub_pod({})
    (c,) = pod["containers"]
    (cache,) = [v for v in pod["volumes"] if v["name"] == "hf-cache"]
    size = planned.checkpoint_bytes + planned.checkpoint_bytes // 20 + 2**30
    assert hf_cache_bytes(planned) == size
    assert quantity_bytes(cache["emptyDir"]["sizeLimit"]) == size
    assert quantity_bytes(c["resources"]["requests"]["ephemeral-storage"]) == size
    assert "ephemeral-storage" not in c["resources"]["limits"]
    assert {"name": "hf-cache", "mountPath": "/var/cache/huggingface"} in c["volumeMounts"]
    assert {"name": "HF_HOME", "value": "/var/cache/huggingface"} in c["env"]
    # The first-boot budget allows for downloading the whole checkpoint on every node.
    assert planned.startup_budget_seconds >= planned.checkpoint_bytes // 250_000_000
    # A user's own ephemeral-storage request is kept.
    pod, _ = _hub_pod({}, {"requests": {"ephemeral-storage": "2Ti"}})
    assert pod["containers"][0]["resources"]["requests"]["ephemeral-storage"] == "2Ti"


@pytest.mark.parametrize(
    ("cache", "volume"),
    [
        ({"claimName": "hf-cache"}, {"persistentVolumeClaim": {"claimName": "hf-cache"}}),
        ({"hostPath": "/mnt/hf"}, {"hostPath": {"path": "/mnt/hf", "type": "DirectoryOrCreate"}}),
    ],
)  # fmt: skip
def test_a_hub_cache_can_be_a_shared_claim_or_a_node_directory(
    cache: dict[str, str], volume: dict[str, Any]
) -> None:
    pod, _ = _hub_pod({"cache": cache})
    (found,) = [v for v in pod["volumes"] if v["name"] == "hf-cache"]
    assert found == {"name": "hf-cache", **volume}
    assert "ephemeral-storage" not in pod["containers"][0]["resources"]["requests"]


def test_a_volume_source_gets_no_hub_cache() -> None:
    spec = parse_spec(
        {
            "model": "flash",
            "gpu": {"types": ["h200-141gb"]},
            "modelSource": {"pvc": {"claimName": "weights"}},
        }
    )
    planned = plan(request_from_spec(spec))
    pod = _pod(leaderworkerset(_owner(), spec, planned, image="i"))
    assert not [v for v in pod["volumes"] if v["name"] == "hf-cache"]
    assert not [e for e in pod["containers"][0]["env"] if e["name"] == "HF_HOME"]
    assert not planned.request.weights_download


def test_an_ephemeral_storage_limit_below_the_download_is_reported() -> None:
    from dsv4_operator.render.leaderworkerset import hf_cache_bytes, hf_cache_error

    def error(resources: dict[str, Any], source: dict[str, Any]) -> str | None:
        spec = parse_spec(
            {
                "model": "flash",
                "gpu": {"types": ["h200-141gb"]},
                "resources": resources,
                "modelSource": source,
            }
        )
        return hf_cache_error(spec, plan(request_from_spec(spec)))

    hub = {"huggingFace": {"repo": "deepseek-ai/DeepSeek-V4-Flash"}}
    small = {"limits": {"ephemeral-storage": "100Gi"}}
    message = error(small, hub)
    assert message is not None
    assert "limits.ephemeral-storage (100Gi) is below the" in message
    spec = parse_spec({"model": "flash", "gpu": {"types": ["h200-141gb"]}})
    need = hf_cache_bytes(plan(request_from_spec(spec)))
    assert f"{need + 2**30:,} B" in message
    assert error({"limits": {"ephemeral-storage": "1Ti"}}, hub) is None
    assert (
        error(small, {"huggingFace": {**hub["huggingFace"], "cache": {"claimName": "c"}}}) is None
    )
    assert error(small, {"pvc": {"claimName": "weights"}}) is None


def test_the_surge_leaves_room_for_the_groups_a_replan_has_not_updated_yet() -> None:
    """Review finding: lowering GPUs per replica (24 -> 16) sized the surge on the new count
    while the 3 groups not yet updated held 24 each: 3 x 24 + 2 x 16 = 104 GPUs over a budget
    of 96."""
    from dsv4_operator.render import Owner
    from dsv4_operator.render.leaderworkerset import running_gpus_per_replica

    root = Path(__file__).resolve().parents[3]
    body = yaml.safe_load((root / "examples" / "pro-1m-h100.yaml").read_text())["spec"]
    # 4,096 batched tokens: at the default 8,192 the window and state blocks each request
    # reserves in vLLM 0.33.0's shared pool take a third node.
    body |= {
        "replicas": 3,
        "maxModelLen": 262144,
        "maxNumBatchedTokens": 4096,
        "rollout": {"maxSurge": 2, "maxUnavailable": 0},
    }
    body["gpu"] = {**body["gpu"], "budget": 96}
    spec = parse_spec(body)
    planned = plan(request_from_spec(spec))
    gpus = planned.chosen.layout.gpus
    assert gpus == 16
    live = {
        "metadata": {
            "generation": 7,
            "annotations": {
                "dsv4.io/gpus-per-replica": "24",
                "dsv4.io/rollout-peak-gpus-per-replica": "24",
            },
        },
        "spec": {"replicas": 3},
        "status": {"replicas": 3, "updatedReplicas": 3, "observedGeneration": 7},
    }
    running = running_gpus_per_replica(live)
    assert running == 24
    surge = rollout_strategy(spec, planned, running)["rollingUpdateConfiguration"]["maxSurge"]
    assert 3 * 24 + surge * gpus <= 96
    # Mid-rollout the LWS already carries the new plan; its peak annotation keeps the old count.
    lws = leaderworkerset(
        Owner("p", "ns", "u"), spec, planned, image="i", running_gpus_per_replica=24
    )
    live = {**lws, "status": {"replicas": 4, "updatedReplicas": 1}}
    assert running_gpus_per_replica(live) == 24
    # Once every group is updated, the current plan's count applies again.
    done = {**lws, "status": {"replicas": 3, "updatedReplicas": 3}}
    assert running_gpus_per_replica(done) == 16


def test_the_peak_gpu_count_outlives_a_finished_canary() -> None:
    """Final review: a finished canary counts as rolled, which dropped the peak annotation while
    the groups below the partition still held the previous plan's GPUs."""
    from dsv4_operator.render.leaderworkerset import running_gpus_per_replica

    live = {
        "metadata": {
            "annotations": {
                "dsv4.io/gpus-per-replica": "8",
                "dsv4.io/rollout-peak-gpus-per-replica": "16",
            }
        },
        "spec": {
            "replicas": 2,
            "rolloutStrategy": {"rollingUpdateConfiguration": {"partition": 1}},
        },
        "status": {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 1},
    }
    assert running_gpus_per_replica(live) == 16


def test_cpu_offload_host_memory_is_added_to_the_memory_request_and_limit() -> None:
    """h22 (README trial): following the advice to add `--cpu-offload-gb=2` planned, and the
    warning said 17.2 GB per node stay in pinned host memory, but each pod still requested
    only the /dev/shm size: the scheduler could place it on a node without that memory."""
    base: dict[str, Any] = {
        "model": "flash",
        "gpu": {"types": ["h100-80gb"], "maxNodes": 1},
        "resources": {"requests": {"memory": "100Gi"}, "limits": {"memory": "200Gi"}},
        "shmSize": "20Gi",
    }
    memory = {}
    for extra in ([], ["--cpu-offload-gb=2"]):
        spec = parse_spec({**base, "engine": {"extraArgs": extra}})
        planned = plan(request_from_spec(spec))
        (c,) = _pod(leaderworkerset(_owner(), spec, planned, image="i"))["containers"]
        gpus = planned.chosen.layout.gpus_per_node
        memory[bool(extra)] = (
            quantity_bytes(c["resources"]["requests"]["memory"]),
            quantity_bytes(c["resources"]["limits"]["memory"]),
            gpus,
        )
    (req0, lim0, _), (req2, lim2, gpus) = memory[False], memory[True]
    assert (req0, lim0) == (120 << 30, 220 << 30)
    # h31: vLLM's UVA offloader moves up to one parameter past 2 GiB and PyTorch pins each at
    # its power-of-two ceiling: up to 2 x (2 GiB + the largest parameter) per GPU, bounded by
    # the largest layer or the embedding's TP share (planning.offload.uva_host_bytes), which
    # exact 2 GiB under-requested.
    layout = plan(request_from_spec(parse_spec({**base, "engine": {"extraArgs": []}}))).chosen
    largest = max(
        sum(
            layer_weight_bytes(
                FLASH,
                "official",
                layer,
                tensor_parallel=layout.layout.tensor_parallel,
                data_parallel=layout.layout.data_parallel,
            ).values()
        )
        for layer in range(FLASH.num_layers)
    )
    vocab_share = -(-129280 * 4096 * 2 // layout.layout.tensor_parallel)  # BF16 rows over TP
    host = gpus * 2 * ((2 << 30) + max(largest, vocab_share))
    assert (req2, lim2) == (req0 + host, lim0 + host)


def test_prefetch_offload_host_memory_is_added_to_the_memory_request_and_limit() -> None:
    """h31: the prefetch offloader (`--offload-group-size=4`: layers 3, 7, ..., 39 of Flash, the
    last of each group of 4) pins those layers in host memory, which no memory request counted.
    Restated: 10 layers x their bytes per GPU x 2 (power-of-two bound) x the pod's GPUs."""
    base: dict[str, Any] = {
        "model": "flash",
        "gpu": {"types": ["h100-80gb"], "maxNodes": 1},
        "resources": {"requests": {"memory": "100Gi"}, "limits": {"memory": "200Gi"}},
        "shmSize": "20Gi",
        "engine": {"extraArgs": ["--offload-group-size=4"]},
    }
    spec = parse_spec(base)
    planned = plan(request_from_spec(spec))
    (c,) = _pod(leaderworkerset(_owner(), spec, planned, image="i"))["containers"]
    lay = planned.chosen.layout
    layers = sum(
        sum(
            layer_weight_bytes(
                FLASH,
                "official",
                layer,
                tensor_parallel=lay.tensor_parallel,
                data_parallel=lay.data_parallel,
            ).values()
        )
        for layer in range(3, 40, 4)
    )
    host = lay.gpus_per_node * 2 * layers
    assert host > 0
    assert quantity_bytes(c["resources"]["requests"]["memory"]) == (120 << 30) + host
    assert quantity_bytes(c["resources"]["limits"]["memory"]) == (220 << 30) + host
    assert plan_to_dict(planned)["weight_offload_host_bytes"] == host


def test_the_crd_says_the_shm_size_is_added_to_the_memory_request_and_limit() -> None:
    """h12 (README walk-through): `kubectl explain dsv4.spec.resources.limits` said "memory should
    cover /dev/shm", while the operator adds the /dev/shm size itself (the test above): a limit
    sized to cover it, as told, was raised by the shm size a second time."""
    schema = crdgen.crd_dict()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    resources = schema["properties"]["spec"]["properties"]["resources"]["properties"]
    for field in ("requests", "limits"):
        text = " ".join(resources[field]["description"].split())
        assert "adds the /dev/shm size" in text, (field, text)
        assert "--cpu-offload-gb" in text, (field, text)
        assert "should cover" not in text, (field, text)


def test_host_kv_cache_is_added_to_shm_and_the_memory_request_and_limit() -> None:
    """h28: `--kv-offloading-size=N` makes vLLM keep N GiB per engine in /dev/shm (one mmap file
    per engine, `SharedOffloadRegion`, which checks the free /dev/shm space first), which the
    pod neither sized its /dev/shm for nor requested: vLLM refused to start ("Insufficient space
    in /dev/shm"), or, with a bigger tmpfs, the pod was OOM-killed at its limit or overcommitted
    the node. Restated by hand: TP4 DP2 on one 8-GPU node is 2 engines per pod, so 1.5 GiB per
    engine is 3 GiB per pod on top of the user's 100Gi/200Gi and the 20Gi shmSize."""
    base: dict[str, Any] = {
        "model": "flash",
        "gpu": {"types": ["h100-80gb"], "gpusPerNode": 8, "maxNodes": 1},
        "parallelism": {"tensor": 4, "data": 2},
        "resources": {"requests": {"memory": "100Gi"}, "limits": {"memory": "200Gi"}},
    }
    for shm in ("20Gi", None):
        seen = {}
        for extra in ([], ["--kv-offloading-size=1.5"]):
            raw = {**base, "engine": {"extraArgs": extra}}
            if shm is not None:
                raw["shmSize"] = shm
            spec = parse_spec(raw)
            planned = plan(request_from_spec(spec))
            pod = _pod(leaderworkerset(_owner(), spec, planned, image="i"))
            (c,) = pod["containers"]
            (dshm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
            seen[bool(extra)] = (
                quantity_bytes(c["resources"]["requests"]["memory"]),
                quantity_bytes(c["resources"]["limits"]["memory"]),
                quantity_bytes(dshm["emptyDir"]["sizeLimit"]),
                ra.runtime_launch(spec, planned).expected_shm_bytes,
            )
        (req0, lim0, shm0, want0), (req1, lim1, shm1, want1) = seen[False], seen[True]
        added = 3 << 30  # 2 engines x 1.5 GiB
        if shm is not None:
            assert (req0, lim0, shm0) == (120 << 30, 220 << 30, 20 << 30)
            assert (req1, lim1, shm1) == (123 << 30, 223 << 30, 23 << 30)
        assert (req1, lim1, shm1) == (req0 + added, lim0 + added, shm0 + added)
        # the runtime checks the mount against the same size
        assert (want0, want1) == (shm0, shm1)


def test_a_kv_transfer_config_offload_is_counted_like_the_size_flag() -> None:
    """The same budget given as `OffloadingConnector`'s `cpu_bytes_to_use` (bytes per engine)
    grows the pod exactly as `--kv-offloading-size` does."""
    base: dict[str, Any] = {
        "model": "flash",
        "gpu": {"types": ["h100-80gb"], "gpusPerNode": 8, "maxNodes": 1},
        "parallelism": {"tensor": 4, "data": 2},
        "shmSize": "20Gi",
    }
    config = {
        "kv_connector": "OffloadingConnector",
        "kv_role": "kv_both",
        "kv_connector_extra_config": {"cpu_bytes_to_use": 2 << 30},
    }
    requests = []
    for extra in (["--kv-offloading-size=2"], ["--kv-transfer-config=" + json.dumps(config)]):
        spec = parse_spec({**base, "engine": {"extraArgs": extra}})
        planned = plan(request_from_spec(spec))
        (c,) = _pod(leaderworkerset(_owner(), spec, planned, image="i"))["containers"]
        requests.append(quantity_bytes(c["resources"]["requests"]["memory"]))
    assert requests == [(20 << 30) + 2 * (2 << 30)] * 2


@pytest.mark.parametrize(
    "extra",
    [
        ["--kv-offloading-size=64", "--kv-offloading-backend=lmcache"],
        ['--kv-transfer-config={"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}'],
        ['--kv-transfer-config={"kv_connector": "LMCacheMPConnector", "kv_role": "kv_both"}'],
        [
            '--kv-transfer-config={"kv_connector": "OffloadingConnector", "kv_role": "kv_both", '
            '"kv_connector_extra_config": {"cpu_bytes_to_use": 1073741824, "spec_name": '
            '"TieringOffloadingSpec"}}'
        ],
    ],
)
def test_an_uncounted_host_kv_cache_renders_the_pod_unchanged_with_a_warning(
    extra: list[str],
) -> None:
    """h34: vLLM 0.33.0 runs these host KV caches, which the operator refused (InvalidSpec), so
    an operator upgrade stopped reconciling resources that used them. They render now: the
    memory request, limit and /dev/shm stay those of the spec without them (the plan cannot
    size them), and the plan warns, naming them and the fix."""
    base: dict[str, Any] = {
        "model": "flash",
        "gpu": {"types": ["h100-80gb"], "gpusPerNode": 8, "maxNodes": 1},
        "parallelism": {"tensor": 4, "data": 2},
        "resources": {"requests": {"memory": "100Gi"}, "limits": {"memory": "200Gi"}},
    }
    seen = []
    for args in ([], extra):
        spec = parse_spec({**base, "engine": {"extraArgs": args}})
        planned = plan(request_from_spec(spec))
        pod = _pod(leaderworkerset(_owner(), spec, planned, image="i"))
        (c,) = pod["containers"]
        (dshm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
        seen.append(
            (
                c["resources"]["requests"]["memory"],
                c["resources"]["limits"]["memory"],
                dshm["emptyDir"]["sizeLimit"],
            )
        )
        codes = [w["code"] for w in plan_to_dict(planned)["warnings"]]
        assert ("HOST_KV_NOT_COUNTED" in codes) is bool(args)
        assert "KV_OFFLOAD" not in codes
    assert seen[0] == seen[1]


def test_a_per_rank_host_kv_cache_is_counted_per_tp_rank() -> None:
    """h34: SimpleCPUOffloadConnector's `cpu_bytes_to_use_per_rank` was refused; it is bytes per
    TP rank (it overrides cpu_bytes_to_use / world_size). Restated by hand: TP4 DP2 on one
    8-GPU node is 2 engines x 4 ranks, so 1 GiB per rank is 8 GiB on top of the 20Gi shmSize."""
    config = {
        "kv_connector": "SimpleCPUOffloadConnector",
        "kv_role": "kv_both",
        "kv_connector_extra_config": {"cpu_bytes_to_use_per_rank": 1 << 30},
    }
    spec = parse_spec(
        {
            "model": "flash",
            "gpu": {"types": ["h100-80gb"], "gpusPerNode": 8, "maxNodes": 1},
            "parallelism": {"tensor": 4, "data": 2},
            "shmSize": "20Gi",
            "engine": {"extraArgs": ["--kv-transfer-config=" + json.dumps(config)]},
        }
    )
    planned = plan(request_from_spec(spec))
    pod = _pod(leaderworkerset(_owner(), spec, planned, image="i"))
    (c,) = pod["containers"]
    (dshm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert quantity_bytes(c["resources"]["requests"]["memory"]) == 28 << 30
    assert quantity_bytes(dshm["emptyDir"]["sizeLimit"]) == 28 << 30
    codes = [w["code"] for w in plan_to_dict(planned)["warnings"]]
    assert "KV_OFFLOAD" in codes
    assert "HOST_KV_NOT_COUNTED" not in codes


def test_the_crd_says_the_host_kv_cache_is_added_to_shm_and_memory() -> None:
    """h28: the CRD told users of `--kv-offloading-size` nothing of the /dev/shm and memory
    it takes, so a memory limit sized without it was what the operator rendered."""
    schema = crdgen.crd_dict()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]["properties"]
    resources = spec["resources"]["properties"]
    for field in ("requests", "limits"):
        assert "host KV cache" in " ".join(resources[field]["description"].split()), field
    extra = " ".join(spec["engine"]["properties"]["extraArgs"]["description"].split())
    assert "--kv-offloading-size=N" in extra
    assert "--kv-transfer-config" in extra
    assert "host KV cache" in " ".join(spec["shmSize"]["description"].split())
