"""`schema_gaps`: what the operator's CRD defines that a served (older) CRD lacks."""

from __future__ import annotations

import copy
from typing import Any

from tests.support.cluster import transform_crd_for_1_20

from dsv4_operator.api.crd import crd_manifest, schema_gaps


def _root(crd: dict[str, Any]) -> dict[str, Any]:
    root: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def _spec(crd: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = _root(crd)["properties"]["spec"]["properties"]
    return spec


def test_the_same_crd_has_no_gaps() -> None:
    ours = crd_manifest()
    assert schema_gaps(ours, ours) == []


def test_the_crd_the_e2e_server_serves_has_no_gaps() -> None:
    # The 1.20 test server gets the CRD without CEL rules: the operator must start against it.
    ours = crd_manifest()
    for defaults, atomic in ((False, False), (True, True)):
        served, _ = transform_crd_for_1_20(
            ours, drop_empty_defaults=defaults, atomic_list_maps=atomic
        )
        assert schema_gaps(served, ours) == []


def test_a_missing_property_is_named_at_its_first_missing_level() -> None:
    ours = crd_manifest()
    older = copy.deepcopy(ours)
    del _spec(older)["placement"]
    del _root(older)["properties"]["status"]["properties"]["conditions"]
    assert schema_gaps(older, ours) == ["spec.placement (v1alpha1)", "status.conditions (v1alpha1)"]


def test_array_items_and_map_values_are_walked() -> None:
    ours = crd_manifest()
    older = copy.deepcopy(ours)
    env_item = _spec(older)["engine"]["properties"]["env"]["items"]
    del env_item["properties"]["valueFrom"]
    assert schema_gaps(older, ours) == ["spec.engine.env[].valueFrom (v1alpha1)"]
    older = copy.deepcopy(ours)
    del _spec(older)["pod"]["properties"]["labels"]["additionalProperties"]
    assert schema_gaps(older, ours) == ["spec.pod.labels{} (v1alpha1)"]


def test_a_version_not_served_is_a_gap_and_unknown_fields_kept_are_not() -> None:
    ours = crd_manifest()
    older = copy.deepcopy(ours)
    older["spec"]["versions"][0]["name"] = "v1alpha0"
    assert schema_gaps(older, ours) == ["version v1alpha1"]
    older["spec"]["versions"][0]["name"] = "v1alpha1"
    older["spec"]["versions"][0]["served"] = False
    assert schema_gaps(older, ours) == ["version v1alpha1"]
    kept = copy.deepcopy(ours)
    _root(kept)["properties"]["spec"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert schema_gaps(kept, ours) == []
