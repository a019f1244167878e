"""The native autoscaler reads a leader pod's Ready condition from the real API server (h32).

The autoscaler runs in this process (`Autoscaler.step`, with a test clock) through the real
`KubeClient` against the local control plane; only the leader runtimes are stubbed (group 0
answers, group 1 never does: a network fault between the operator and that leader). There is
no kubelet: the test writes the leader pod's status through the pod's status subresource, as
a kubelet would (and as `KubeletStandIn` does).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tests.support.cluster import ControlPlane

from dsv4_operator.handlers.autoscaler import Autoscaler, AutoscalerMetrics
from dsv4_operator.kube import KubeClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

NAME = "d"
SPEC: dict[str, Any] = {
    "model": "flash",
    "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8, "budget": 24},
    "replicas": 2,
    "autoscaling": {
        "enabled": True,
        "mode": "native",
        "minReplicas": 1,
        "maxReplicas": 5,
        "targetTokensPerSecondPerReplica": 1000,
        "scaleUpStabilizationSeconds": 0,
        "scaleDownStabilizationSeconds": 60,
    },
}


class Group0Only:
    """Leader runtimes: group 0 serves 300 tokens/s, group 1 never answers the operator."""

    def __init__(self) -> None:
        self.tokens = 0.0

    def __call__(self, method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        if f"//{NAME}-0." not in url:
            return None
        if url.endswith("/ready"):
            return 200, '{"ready": true}'
        self.tokens += 300 * 15
        return 200, (
            f'vllm:generation_tokens_total{{engine="0"}} {self.tokens}\n'
            'vllm:kv_cache_usage_perc{engine="0"} 0.1\n'
            'vllm:num_requests_running{engine="0"} 0\n'
            'vllm:num_requests_waiting{engine="0"} 0\n'
        )


def _set_ready(core: Any, namespace: str, pod: str, ready: bool) -> None:
    """Write the pod's status as a kubelet would (status subresource)."""
    value = "True" if ready else "False"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {
        "phase": "Running",
        "conditions": [
            {"type": t, "status": v, "lastTransitionTime": now}
            for t, v in [
                ("PodScheduled", "True"),
                ("Initialized", "True"),
                ("ContainersReady", value),
                ("Ready", value),
            ]
        ],
    }
    core.patch_namespaced_pod_status(pod, namespace, {"status": status})


def test_a_ready_leader_pod_keeps_an_unreachable_group_until_it_is_not_ready(
    control_plane: ControlPlane, dsv4_crd: Any, namespace: str, kube_api: Any
) -> None:
    from kubernetes import client

    control_plane.apply(
        {
            "apiVersion": "dsv4.io/v1alpha1",
            "kind": "DeepSeekV4Deployment",
            "metadata": {"name": NAME},
            "spec": copy.deepcopy(SPEC),
        },
        namespace=namespace,
    )
    core: Any = client.CoreV1Api(kube_api)  # Any: plain dict bodies, as KubeletStandIn sends
    # Group 1's leader pod, as LeaderWorkerSet names it (`<lws>-<group index>`).
    pod = f"{NAME}-1"
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod},
            "spec": {"containers": [{"name": "engine", "image": "img:1"}]},
        },
    )
    _set_ready(core, namespace, pod, ready=True)
    kube = KubeClient(kube_api, "dsv4-operator")
    clock = [0.0]
    scaler = Autoscaler(
        kube,
        AutoscalerMetrics(CollectorRegistry()),
        http=Group0Only(),
        clock=lambda: clock[0],
    )
    events: list[tuple[str, str, str]] = []

    def step() -> Any:
        clock[0] += 15
        return scaler.step(namespace, NAME, lambda *e: events.append(e))

    def replicas() -> int:
        cr = kube.get("dsv4.io/v1alpha1", "DeepSeekV4Deployment", namespace, NAME)
        assert cr is not None
        return int(cr["spec"]["replicas"])

    # 10 minutes, ten scale-down windows: 300 tokens/s fits one replica, but group 1's pod
    # is Ready (the Service routes to it), so its load is unknown and it is not removed.
    for _ in range(40):
        decision = step()
    assert replicas() == 2
    assert "metrics of groups [1] could not be read" in decision.reason
    warned = [e for e in events if e[1] == "LeaderUnreachable"]
    assert len(warned) == 1, events
    assert f"leader pod {pod} is Ready" in warned[0][2]

    # The kubelet marks it not Ready (the leader crashed): the group is restarting, and the
    # scale-down goes on as before h32.
    _set_ready(core, namespace, pod, ready=False)
    for _ in range(20):
        step()
        if replicas() == 1:
            break
    assert replicas() == 1
    assert [e for e in events if e[1] == "ScaledDown"]


def test_an_autoscaled_resource_without_replicas_is_raised_to_min_replicas(
    control_plane: ControlPlane, dsv4_crd: Any, namespace: str, kube_api: Any
) -> None:
    # The manifest leaves `replicas` out (default 1) with minReplicas 3: the API server
    # accepts it, and the first scrape raises it to 3 in one step, as an HPA would, although
    # no leader answers yet and the step limit is 1.
    spec = copy.deepcopy(SPEC)
    del spec["replicas"]
    spec["autoscaling"] |= {"minReplicas": 3, "scaleUpStabilizationSeconds": 300}
    control_plane.apply(
        {
            "apiVersion": "dsv4.io/v1alpha1",
            "kind": "DeepSeekV4Deployment",
            "metadata": {"name": NAME},
            "spec": spec,
        },
        namespace=namespace,
    )
    kube = KubeClient(kube_api, "dsv4-operator")
    scaler = Autoscaler(
        kube,
        AutoscalerMetrics(CollectorRegistry()),
        http=lambda method, url, headers: None,
        clock=lambda: 15.0,
    )
    events: list[tuple[str, str, str]] = []
    decision = scaler.step(namespace, NAME, lambda *e: events.append(e))
    cr = kube.get("dsv4.io/v1alpha1", "DeepSeekV4Deployment", namespace, NAME)
    assert cr is not None
    assert cr["spec"]["replicas"] == 3, decision
    assert [e[1] for e in events if e[1].startswith("Scaled")] == ["ScaledUp"], events
    recorded = cr["status"]["recentScalingDecisions"][-1]
    assert (recorded["fromReplicas"], recorded["toReplicas"]) == (1, 3)
    assert recorded["reason"] == "MinReplicas"
