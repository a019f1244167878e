"""The operator's peering objects against the real kube-apiserver (kopf's CRDs as the chart ships
them): created when missing, left alone when present (409), cluster-scoped or per namespace; a
watched namespace that does not exist is reported, not fatal.

The operator's startup handler that calls this runs in tests/e2e/test_chart.py (the chart's
container command, with only the chart's permissions).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from tests.chart.chart_support import by_kind, template
from tests.support.cluster import ControlPlane

from dsv4_operator.kube import KubeClient
from dsv4_operator.kube.peering import ensure_peering

pytestmark = pytest.mark.e2e


@pytest.fixture
def kube(control_plane: ControlPlane, kube_api: Any) -> KubeClient:
    """A client with kopf's peering CRDs served (applied as the chart's hook renders them)."""
    crds = by_kind(template(), "CustomResourceDefinition")
    names = [c["metadata"]["name"] for c in crds]
    assert sorted(names) == ["clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"], names
    # Only those missing, as the chart's hook does (`lookup`): a chart test may have created
    # them already, with Helm as their field manager.
    missing = [c for c in crds if not _crd_exists(control_plane, c["metadata"]["name"])]
    if missing:
        control_plane.apply(*missing)
    control_plane.wait_crd_established(*names)
    return KubeClient(kube_api, "dsv4-operator")


def _crd_exists(plane: ControlPlane, name: str) -> bool:
    return plane.kubectl("get", "crd", name, check=False).returncode == 0


@pytest.fixture
def cluster_name(control_plane: ControlPlane) -> Iterator[str]:
    """A ClusterKopfPeering name no other test uses; the object is deleted afterwards."""
    name = f"dsv4-e2e-{secrets.token_hex(3)}"
    yield name
    control_plane.kubectl("delete", "clusterkopfpeering", name, "--ignore-not-found")


def test_kopfpeering_is_created_once_per_namespace(
    control_plane: ControlPlane, kube: KubeClient, namespace: str
) -> None:
    first = ensure_peering(kube, "dsv4-operator", (namespace,))
    assert first.created == (f"{namespace}/dsv4-operator",)
    body = control_plane.kubectl_json("get", "kopfpeering", "dsv4-operator", "-n", namespace)
    assert body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "dsv4-operator"
    version = body["metadata"]["resourceVersion"]
    again = ensure_peering(kube, "dsv4-operator", (namespace,))
    assert (again.created, again.existing) == ((), (f"{namespace}/dsv4-operator",))
    body = control_plane.kubectl_json("get", "kopfpeering", "dsv4-operator", "-n", namespace)
    assert body["metadata"]["resourceVersion"] == version  # not written again


def test_clusterkopfpeering_is_cluster_scoped(
    control_plane: ControlPlane, kube: KubeClient, cluster_name: str
) -> None:
    assert ensure_peering(kube, cluster_name, ()).created == (cluster_name,)
    body = control_plane.kubectl_json("get", "clusterkopfpeering", cluster_name)
    assert "namespace" not in body["metadata"]
    assert ensure_peering(kube, cluster_name, ()).existing == (cluster_name,)


def test_a_watched_namespace_that_does_not_exist_is_reported(
    kube: KubeClient, namespace: str
) -> None:
    gone = f"{namespace}-none"
    result = ensure_peering(kube, "dsv4-operator", (gone, namespace))
    assert result.no_namespace == (f"{gone}/dsv4-operator",)
    assert result.created == (f"{namespace}/dsv4-operator",)
