"""Rendered children validate against the official Kubernetes schemas and the real LWS CRD.

Core kinds: kubernetes-validate's newest bundled schemas, strict (unknown fields are errors),
every error listed. LeaderWorkerSet: the untransformed upstream CRD's openAPIV3Schema from
`$DSV4_FIXTURES/crds/` (jsonschema), plus each pod template as a strict core/v1 PodTemplate.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml
from kubernetes_validate import utils as kv_utils
from tests.operator.render.conftest import Case

from dsv4_operator.render import render_children

KUBE_VERSION = kv_utils.latest_version()


@cache
def _kube_validator(kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    """The strict schema of `kind` as kubernetes-validate loads it (all errors, not the first)."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{KUBE_VERSION}-local-strict"
    schema = kv_utils.schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", KUBE_VERSION)
    defs = kv_utils.schema_contents(f"{folder}/_definitions.json", KUBE_VERSION)
    registry: referencing.Registry[Any] = (
        referencing.Resource.from_contents(schema) @ referencing.Registry()
    )
    registry = referencing.Resource.from_contents(defs) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _kube_errors(obj: dict[str, Any]) -> list[str]:
    validator = _kube_validator(obj["kind"], obj["apiVersion"])
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]


@pytest.fixture(scope="module")
def keda_validator(fixtures_dir: Path) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((fixtures_dir / "crds" / "keda.sh_scaledobjects.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return jsonschema.Draft7Validator(version["schema"]["openAPIV3Schema"])


def test_hpa_mode_renders_a_valid_hpa(case: Case) -> None:
    auto = case.spec.autoscaling.model_copy(
        update={"enabled": True, "mode": "hpa", "min_replicas": 1, "max_replicas": 4}
    )
    spec = case.spec.model_copy(update={"autoscaling": auto})
    children = render_children(case.owner, spec, case.plan, image="dsv4-runtime:test")
    hpa = children[-1]
    assert hpa["kind"] == "HorizontalPodAutoscaler"
    assert _kube_errors(hpa) == []
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "DeepSeekV4Deployment"
    budget = spec.gpu.budget
    if budget is not None:
        assert hpa["spec"]["maxReplicas"] * case.plan.chosen.layout.gpus <= budget


@pytest.fixture(scope="module")
def lws_validator(lws_schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(lws_schema)


def test_newest_kubernetes_schemas_are_used() -> None:
    assert kv_utils.all_versions()[-1] == KUBE_VERSION
    assert tuple(int(x) for x in KUBE_VERSION.split(".")) >= (1, 37)


def test_children_validate(
    case: Case,
    lws_validator: jsonschema.Draft7Validator,
    keda_validator: jsonschema.Draft7Validator,
) -> None:
    children = render_children(case.owner, case.spec, case.plan, image="dsv4-runtime:test")
    scaler = {"keda": ["ScaledObject"], "hpa": ["HorizontalPodAutoscaler"]}
    auto = case.spec.autoscaling
    extra = scaler.get(auto.mode, []) if auto.enabled else []
    assert [c["kind"] for c in children] == [
        "ConfigMap",
        "Service",
        "PodDisruptionBudget",
        "LeaderWorkerSet",
        *extra,
    ]
    for child in children[4:]:
        owner_refs = child["metadata"]["ownerReferences"]
        assert owner_refs[0]["uid"] == case.owner.uid
        if child["kind"] == "ScaledObject":
            errors = [
                f"{list(e.absolute_path)}: {e.message}" for e in keda_validator.iter_errors(child)
            ]
            assert errors == []
        else:
            assert _kube_errors(child) == []
    for child in children[:3]:
        assert _kube_errors(child) == [], child["kind"]
        # The library's own entry point agrees (first error only, raises on failure).
        kubernetes_validate.validate(child, KUBE_VERSION, strict=True)
    lws = children[3]
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in lws_validator.iter_errors(lws)]
    assert errors == []
    for template in ("leaderTemplate", "workerTemplate"):
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "t", "namespace": "inference"},
            "template": lws["spec"]["leaderWorkerTemplate"][template],
        }
        assert _kube_errors(pod_template) == [], template
    json.dumps(children)  # plain JSON data, nothing else


def test_validation_catches_a_broken_manifest(
    case: Case, lws_validator: jsonschema.Draft7Validator
) -> None:
    """The validators above are not vacuous: a wrong type and an unknown field are reported."""
    children = render_children(case.owner, case.spec, case.plan, image="img")
    service, lws = children[1], children[3]
    service["spec"]["ports"][0]["port"] = "eight-thousand"
    service["spec"]["sessionAffinityy"] = "None"
    assert len(_kube_errors(service)) == 2
    lws["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "Always"
    lws["spec"]["startupPolicy"] = "Whenever"
    assert len(list(lws_validator.iter_errors(lws))) == 2


@pytest.mark.parametrize("kind", ["ConfigMap", "Service", "PodDisruptionBudget"])
def test_each_core_kind_has_a_schema(kind: str) -> None:
    version = "policy/v1" if kind == "PodDisruptionBudget" else "v1"
    schema: Any = _kube_validator(kind, version).schema
    assert schema["properties"]["kind"]
