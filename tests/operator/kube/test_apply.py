"""Server-side apply that skips unchanged children; the drift comparison; error mapping."""

from __future__ import annotations

from typing import Any

import pytest
from tests.operator.kube.fake_api import CoOwnedPorts, FakeApi

from dsv4_operator.kube import (
    RENDERED_HASH,
    ApiError,
    KubeClient,
    TransientApiError,
    apply_children,
    contains,
    discover,
    resource_path,
    with_rendered_hash,
)


def _cm(value: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "ns", "labels": {"a": "b"}},
        "data": {"k": value},
    }


def test_contains_ignores_extra_live_fields_and_compares_quantities() -> None:
    desired: dict[str, Any] = {
        "spec": {
            "replicas": 2,
            "template": {
                "containers": [
                    {"resources": {"requests": {"memory": "1024Mi", "nvidia.com/gpu": "8"}}}
                ],
                "volumes": [{"emptyDir": {"sizeLimit": "2Gi", "medium": "Memory"}}],
            },
        }
    }
    live: dict[str, Any] = {
        "metadata": {"resourceVersion": "7"},
        "spec": {
            "replicas": 2,
            "template": {
                "containers": [
                    {
                        "resources": {"requests": {"memory": "1Gi", "nvidia.com/gpu": "8"}},
                        "imagePullPolicy": "IfNotPresent",
                    }
                ],
                "volumes": [{"emptyDir": {"sizeLimit": "2048Mi", "medium": "Memory"}}],
            },
        },
        "status": {},
    }
    assert contains(live, desired)
    live["spec"]["template"]["containers"][0]["resources"]["requests"]["memory"] = "2Gi"
    assert not contains(live, desired)


@pytest.mark.parametrize(
    ("live", "desired", "expected"),
    [
        ({"a": [1, 2]}, {"a": [1]}, False),  # list length differs
        ({"a": 1}, {"a": True}, False),  # bool is not int
        ({"a": "1Gi"}, {"a": "1024Mi"}, False),  # quantities only where quantities live
        ({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}, False),  # desired key missing
        ({"a": None}, {"a": {}}, False),
        ({"a": "x", "b": 2}, {"a": "x"}, True),
    ],
)
def test_contains_cases(live: Any, desired: Any, expected: bool) -> None:
    assert contains(live, desired) is expected


def test_apply_creates_then_skips_then_repairs_drift() -> None:
    api = FakeApi()
    kube = KubeClient(api, "dsv4-operator")
    (first,) = apply_children(kube, [_cm()])
    assert first.action == "created"
    assert ("PATCH", "/api/v1/namespaces/ns/configmaps/c") in api.requests
    (second,) = apply_children(kube, [_cm()])
    assert second.action == "unchanged"
    assert kube.writes.total == 1
    api.objects["/api/v1/namespaces/ns/configmaps/c"]["data"]["k"] = "edited by hand"
    (third,) = apply_children(kube, [_cm()])
    assert third.action == "updated"
    assert api.objects["/api/v1/namespaces/ns/configmaps/c"]["data"]["k"] == "1"
    assert kube.writes.counts == {("apply", "ConfigMap"): 2}


def test_apply_sends_server_side_apply_with_our_field_manager() -> None:
    api = FakeApi()
    seen: list[tuple[str, str]] = []
    kube = KubeClient(api, "dsv4-operator", on_write=lambda verb, kind: seen.append((verb, kind)))
    captured: dict[str, Any] = {}
    original = api.param_serialize

    def spy(**kw: Any) -> tuple[Any, ...]:
        if kw["method"] == "PATCH":
            captured.update(kw)
        return original(**kw)

    api.param_serialize = spy  # type: ignore[method-assign]
    kube.apply(_cm())
    assert captured["header_params"]["Content-Type"] == "application/apply-patch+yaml"
    assert ("fieldManager", "dsv4-operator") in captured["query_params"]
    assert ("force", "true") in captured["query_params"]
    assert seen == [("apply", "ConfigMap")]


@pytest.mark.parametrize("status", [409, 429, 500, 503])
def test_transient_statuses_raise_transient(status: int) -> None:
    api = FakeApi(fail=[("PATCH", "/configmaps/", status)])
    kube = KubeClient(api, "m")
    with pytest.raises(TransientApiError) as caught:
        apply_children(kube, [_cm()])
    assert caught.value.status == status
    assert caught.value.retry_after == 2.0
    (retried,) = apply_children(kube, [_cm()])
    assert retried.action == "created"


@pytest.mark.parametrize("status", [403, 422])
def test_other_statuses_raise_api_error(status: int) -> None:
    kube = KubeClient(FakeApi(fail=[("PATCH", "/configmaps/", status)]), "m")
    with pytest.raises(ApiError) as caught:
        apply_children(kube, [_cm()])
    assert not isinstance(caught.value, TransientApiError)
    assert f"HTTP {status}" in str(caught.value)


def test_get_absent_is_none_and_discovery() -> None:
    api = FakeApi()
    kube = KubeClient(api, "m")
    assert kube.get("v1", "ConfigMap", "ns", "nope") is None
    apis = discover(kube)
    assert (apis.lws, apis.pdb_api_version) == (True, "policy/v1")
    old = KubeClient(FakeApi(served={}), "m")
    assert (discover(old).lws, discover(old).pdb_api_version) == (False, "policy/v1beta1")
    kube.close()
    assert api.closed


def test_resource_paths() -> None:
    assert resource_path("v1", "Service", "ns", "s") == "/api/v1/namespaces/ns/services/s"
    assert (
        resource_path("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "ns")
        == "/apis/leaderworkerset.x-k8s.io/v1/namespaces/ns/leaderworkersets"
    )


def test_a_field_no_longer_rendered_is_applied_away() -> None:
    api = FakeApi()
    kube = KubeClient(api, "m")
    with_label = _cm()
    with_label["metadata"]["labels"]["extra"] = "yes"
    apply_children(kube, [with_label])
    # The live object still "contains" the smaller rendering; the hash tells them apart.
    (result,) = apply_children(kube, [_cm()])
    assert result.action == "updated"
    live = api.objects["/api/v1/namespaces/ns/configmaps/c"]
    assert (
        live["metadata"]["annotations"][RENDERED_HASH]
        == (with_rendered_hash(_cm())["metadata"]["annotations"][RENDERED_HASH])
    )
    assert apply_children(kube, [_cm()])[0].action == "unchanged"


OWNER_REF = {
    "apiVersion": "dsv4.io/v1alpha1",
    "kind": "DeepSeekV4Deployment",
    "name": "d",
    "uid": "owner-1",
    "controller": True,
    "blockOwnerDeletion": True,
}
IDENTITY = {"app.kubernetes.io/managed-by": "dsv4-operator", "dsv4.io/deployment": "d"}


def _child(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    version = {"Service": "v1", "ConfigMap": "v1"}.get(kind, "leaderworkerset.x-k8s.io/v1")
    return {
        "apiVersion": version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": dict(IDENTITY),
            "ownerReferences": [dict(OWNER_REF)],
        },
        "spec": spec,
    }


def _live(kind: str, name: str, **meta: Any) -> tuple[str, dict[str, Any]]:
    version = {"Service": "v1", "ConfigMap": "v1"}.get(kind, "leaderworkerset.x-k8s.io/v1")
    path = resource_path(version, kind, "ns", name)
    obj = {"apiVersion": version, "kind": kind, "metadata": {"name": name, "uid": "x", **meta}}
    return path, obj


def test_an_object_that_is_not_the_owners_is_refused_and_the_others_still_applied() -> None:
    api = FakeApi()
    path, foreign = _live("Service", "d-api", labels={"team": "web"})
    api.objects[path] = foreign
    kube = KubeClient(api, "dsv4-operator")
    children = [_child("Service", "d-api", type="ClusterIP"), _child("ConfigMap", "d-plan")]
    with pytest.raises(ApiError) as caught:
        apply_children(kube, children)
    assert not isinstance(caught.value, TransientApiError)
    assert caught.value.status == 409
    assert "Service ns/d-api: HTTP 409: exists and is not this DeepSeekV4Deployment's" in str(
        caught.value
    )
    assert api.objects[path] == foreign  # not taken over
    assert resource_path("v1", "ConfigMap", "ns", "d-plan") in api.objects  # still applied
    # Owned by another controller: the message names it.
    api.objects[path]["metadata"]["ownerReferences"] = [
        {"kind": "LeaderWorkerSet", "name": "d-api", "uid": "lws-9"}
    ]
    with pytest.raises(ApiError, match=r"owned by LeaderWorkerSet d-api"):
        apply_children(kube, children[:1])


def test_an_orphan_with_the_owners_labels_is_adopted_and_a_predecessors_child_waited_for() -> None:
    api = FakeApi()
    path, orphan = _live("Service", "d-api", labels=dict(IDENTITY))
    api.objects[path] = orphan
    kube = KubeClient(api, "dsv4-operator")
    (applied,) = apply_children(kube, [_child("Service", "d-api", type="ClusterIP")])
    assert applied.action == "updated"
    assert api.objects[path]["metadata"]["ownerReferences"][0]["uid"] == "owner-1"
    # Left by a deleted resource of the same name (its uid differs): a retryable wait.
    api.objects[path]["metadata"]["ownerReferences"] = [{**OWNER_REF, "uid": "owner-0"}]
    with pytest.raises(TransientApiError, match="left by a deleted DeepSeekV4Deployment"):
        apply_children(kube, [_child("Service", "d-api", type="NodePort")])


def test_a_refused_service_update_is_replaced_but_a_leaderworkerset_never_is() -> None:
    api = FakeApi()
    kube = KubeClient(api, "dsv4-operator")
    service = _child("Service", "d-api", type="ClusterIP")
    apply_children(kube, [service])
    path = resource_path("v1", "Service", "ns", "d-api")
    api.objects[path]["spec"]["type"] = "NodePort"  # drift that our apply must fix
    api.fail.append(("PATCH", "/services/d-api", 422))
    (applied,) = apply_children(kube, [service])
    assert applied.action == "created"
    assert ("DELETE", path) in api.requests
    assert api.objects[path]["spec"]["type"] == "ClusterIP"
    # Our own content refused (a dry-run create of it fails too, e.g. an admission policy):
    # the working Service stays.
    api.objects[path]["spec"]["type"] = "NodePort"
    api.fail += [("PATCH", "/services/d-api", 422), ("POST", "/services", 422)]
    with pytest.raises(ApiError) as refused:
        apply_children(kube, [service])
    assert refused.value.status == 422
    assert api.objects[path]["spec"]["type"] == "NodePort"
    # A LoadBalancer Service is never replaced (its external address would change).
    balancer = _child("Service", "d-api", type="LoadBalancer")
    api.fail.append(("PATCH", "/services/d-api", 422))
    with pytest.raises(ApiError):
        apply_children(kube, [balancer])
    assert path in api.objects
    lws = _child("LeaderWorkerSet", "d", replicas=1)
    apply_children(kube, [lws])
    lws_path = resource_path("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "ns", "d")
    api.objects[lws_path]["spec"]["replicas"] = 3
    api.fail.append(("PATCH", "/leaderworkersets/d", 422))
    with pytest.raises(ApiError) as caught:
        apply_children(kube, [lws])
    assert caught.value.status == 422
    assert ("DELETE", lws_path) not in api.requests


def test_no_leaderworkerset_is_created_while_an_earlier_child_failed() -> None:
    # Pods never start before the plan they run is recorded (and hold no GPUs for a resource
    # whose Service cannot be made), but an existing LeaderWorkerSet is still updated.
    api = FakeApi()
    kube = KubeClient(api, "dsv4-operator")
    lws_path = resource_path("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "ns", "d")
    children = [_child("ConfigMap", "d-plan"), _child("LeaderWorkerSet", "d", replicas=1)]
    api.fail.append(("PATCH", "/configmaps/d-plan", 403))
    with pytest.raises(ApiError):
        apply_children(kube, children)
    assert lws_path not in api.objects
    apply_children(kube, children)
    assert lws_path in api.objects
    children[1] = _child("LeaderWorkerSet", "d", replicas=2)
    api.fail.append(("PATCH", "/configmaps/d-plan", 403))
    live_cm = api.objects[resource_path("v1", "ConfigMap", "ns", "d-plan")]
    live_cm["metadata"]["annotations"][RENDERED_HASH] = "stale"  # so it is applied again
    with pytest.raises(ApiError):
        apply_children(kube, children)
    assert api.objects[lws_path]["spec"]["replicas"] == 2


def test_a_list_entry_of_another_manager_does_not_make_every_resync_apply_again() -> None:
    """Day-2 finding (local control plane): `kubectl patch svc NAME-api` adding a port (or, on
    a cluster with the upstream LWS CRD, `kubectl set env` on the LeaderWorkerSet: env,
    containers and volumes are list-maps there) leaves an entry our forced apply does not
    remove, since server-side apply keeps another manager's list entries. The live list then
    never equals the rendered one, so every resync and progress tick sent the same apply
    again (14 APPLY requests in 20 s on the plane at resync 5 s / progress 2 s), forever. An
    apply that could change nothing (the object is as our last apply left it) is skipped."""
    api = CoOwnedPorts()
    kube = KubeClient(api, "dsv4-operator")
    settled: dict[tuple[str, str, str], tuple[str, str]] = {}
    port = {"name": "http", "port": 8000, "protocol": "TCP"}
    service = _child("Service", "d-api", type="ClusterIP", ports=[port])
    apply_children(kube, [service], settled=settled)
    path = resource_path("v1", "Service", "ns", "d-api")
    api.foreign = {"name": "debug", "port": 9090, "protocol": "TCP"}
    api.objects[path]["spec"]["ports"].append(dict(api.foreign))  # kubectl patch
    api.objects[path]["metadata"]["resourceVersion"] = "50"
    (drifted,) = apply_children(kube, [service], settled=settled)
    assert drifted.action == "updated"  # the first time it is applied (and cannot remove it)
    writes = kube.writes.total
    for _ in range(3):
        (again,) = apply_children(kube, [service], settled=settled)
        assert again.action == "unchanged"
    assert kube.writes.total == writes
    # Changed since (by hand, or a new rendering): applied again.
    api.objects[path]["spec"]["type"] = "NodePort"
    api.objects[path]["metadata"]["resourceVersion"] = "99"
    (repaired,) = apply_children(kube, [service], settled=settled)
    assert repaired.action == "updated"
    assert api.objects[path]["spec"]["type"] == "ClusterIP"
    moved = _child("Service", "d-api", type="ClusterIP", ports=[{**port, "port": 8001}])
    (rerendered,) = apply_children(kube, [moved], settled=settled)
    assert rerendered.action == "updated"
