"""`kube.drift`: the fields another writer changed in a child, and the managers holding them."""

from __future__ import annotations

from typing import Any

from dsv4_operator.kube.drift import NO_MANAGER, changed_by, differences, drift_words

RENDERED: dict[str, Any] = {
    "apiVersion": "leaderworkerset.x-k8s.io/v1",
    "kind": "LeaderWorkerSet",
    "metadata": {"name": "d", "labels": {"app": "d"}},
    "spec": {
        "replicas": 2,
        "template": {
            "containers": [
                {"name": "main", "image": "ours:1", "resources": {"requests": {"memory": "1Gi"}}}
            ]
        },
    },
}


def _live(**spec: Any) -> dict[str, Any]:
    containers = [
        {"name": "main", "image": spec.get("image", "ours:1"), "resources": {"requests": {}}}
    ]
    containers[0]["resources"]["requests"]["memory"] = spec.get("memory", "1024Mi")
    return {
        "metadata": {
            "name": "d",
            "labels": {"app": "d", "cost-center": "ml"},
            "managedFields": spec.get("managed", []),
        },
        "spec": {"replicas": spec.get("replicas", 2), "template": {"containers": containers}},
        "status": {"replicas": 2},
    }


def test_differences_name_only_the_rendered_fields_that_changed() -> None:
    # Another writer's label and the status do not count; 1024Mi is 1Gi.
    assert differences(_live(), RENDERED) == []
    changed = differences(_live(replicas=5, image="evil"), RENDERED)
    assert changed == [("spec", "replicas"), ("spec", "template", "containers", 0, "image")]
    words = drift_words(changed, ["kubectl-edit"])
    assert words == ("spec.replicas, spec.template.containers[0].image changed by kubectl-edit")


def test_the_managers_holding_a_changed_field_are_named_but_not_ours_or_status() -> None:
    managed = [
        {"manager": "dsv4-operator", "operation": "Apply", "fieldsV1": {"f:spec": {}}},
        {  # an atomic list owned whole
            "manager": "kubectl-patch",
            "operation": "Update",
            "fieldsV1": {"f:spec": {"f:template": {"f:containers": {}}}},
        },
        {  # a list-map item, by key
            "manager": "argocd-controller",
            "operation": "Apply",
            "fieldsV1": {
                "f:spec": {"f:template": {"f:containers": {'k:{"name":"main"}': {"f:image": {}}}}}
            },
        },
        {  # another item of the list-map: not this one
            "manager": "sidecar-injector",
            "operation": "Update",
            "fieldsV1": {
                "f:spec": {"f:template": {"f:containers": {'k:{"name":"proxy"}': {".": {}}}}}
            },
        },
        {
            "manager": "lws-controller",
            "operation": "Update",
            "subresource": "status",
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        },
        {"manager": "kubectl-label", "operation": "Update", "fieldsV1": {"f:metadata": {}}},
    ]
    live = _live(image="evil", managed=managed)
    paths = differences(live, RENDERED)
    assert changed_by(live, paths, "dsv4-operator") == [
        "kubectl-patch",
        "argocd-controller (Apply)",
    ]


def test_a_field_nobody_holds_says_so() -> None:
    # `kubectl scale` of a custom resource: its scale subresource records no manager.
    live = _live(replicas=5)
    paths = differences(live, RENDERED)
    assert changed_by(live, paths, "dsv4-operator") == []
    assert drift_words(paths, []) == f"spec.replicas changed by {NO_MANAGER}"


def test_many_fields_are_cut_with_a_count() -> None:
    paths = [("spec", f"f{i}") for i in range(6)]
    assert drift_words(paths, ["m"]) == "spec.f0, spec.f1, spec.f2, spec.f3 and 2 more changed by m"
