"""The generated CRD: up to date, structural, documented, with the promised names and columns."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dsv4_operator import crdgen
from dsv4_operator.api.crd import crd_schema

REPO_ROOT = Path(__file__).resolve().parents[3]
Schema = dict[str, Any]


def _nodes(node: Schema, path: str = "") -> list[tuple[str, Schema]]:
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found += _nodes(child, f"{path}.{name}" if path else name)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            found += _nodes(node[key], f"{path}[*]")
    return found


@pytest.mark.parametrize("folder", crdgen.OUTPUT_DIRS)
def test_committed_crd_matches_the_types(folder: str) -> None:
    committed = (REPO_ROOT / folder / crdgen.CRD_FILE_NAME).read_bytes()
    assert committed == crdgen.render().encode(), (
        f"{folder}/{crdgen.CRD_FILE_NAME} is stale: run `python -m dsv4_operator.crdgen`"
    )


def test_file_starts_with_the_generated_header_and_parses_to_crd_dict() -> None:
    text = crdgen.render()
    assert text.startswith("# GENERATED")
    assert "do not edit" in text.splitlines()[1].lower()
    assert yaml.safe_load(text) == crdgen.crd_dict()


def test_check_mode_reports_stale_and_fresh_files(tmp_path: Path) -> None:
    assert crdgen.main(["--root", str(tmp_path), "--check"]) == 1
    assert crdgen.main(["--root", str(tmp_path)]) == 0
    assert crdgen.main(["--root", str(tmp_path), "--check"]) == 0
    (tmp_path / crdgen.OUTPUT_DIRS[1] / crdgen.CRD_FILE_NAME).write_text("edited\n")
    assert crdgen.main(["--root", str(tmp_path), "--check"]) == 1


def test_names_scope_and_version(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "deepseekv4deployments.dsv4.io"
    assert spec["group"] == "dsv4.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "DeepSeekV4Deployment",
        "listKind": "DeepSeekV4DeploymentList",
        "plural": "deepseekv4deployments",
        "singular": "deepseekv4deployment",
        "shortNames": ["dsv4", "dsv4d"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_printer_columns_point_at_fields_of_the_schema(crd: dict[str, Any]) -> None:
    version = crd["spec"]["versions"][0]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert list(columns) == [
        "Model",
        "GPU",
        "GPUs",
        "Replicas",
        "Ready",
        "Status",
        "Paused",
        "Age",
        "Message",
    ]
    paths = {path for path, _ in _nodes(version["schema"]["openAPIV3Schema"])}
    for name, json_path in columns.items():
        if name != "Age":
            # a list filter (`conditions[?(@.type=="Ready")]`) selects items of the list
            field = re.sub(r"\[\?\(.*?\)\]", "[*]", json_path.lstrip("."))
            assert field in paths, name


def test_the_ready_message_is_a_wide_column_only(crd: dict[str, Any]) -> None:
    """h42: during a failure `kubectl get` showed the reason (ApplyFailed, ReconcileError) but
    not what failed; `-o wide` now shows the Ready message, the default table is unchanged."""
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    wide = [(c["name"], c["jsonPath"], c.get("priority")) for c in columns if c.get("priority")]
    assert wide == [("Message", '.status.conditions[?(@.type=="Ready")].message', 1)]


def test_status_and_scale_subresources(crd: dict[str, Any]) -> None:
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    scale = version["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    nodes = dict(_nodes(version["schema"]["openAPIV3Schema"]))
    assert nodes["spec.replicas"]["type"] == "integer"
    assert nodes["status.replicas"]["type"] == "integer"
    assert nodes["status.selector"]["type"] == "string"


def test_status_keeps_apart_from_kopf_and_has_no_phase() -> None:
    status = crd_schema()["properties"]["status"]["properties"]
    assert "kopf" not in status
    assert "phase" not in status
    assert {"observedGeneration", "conditions", "plan", "replicas", "readyReplicas"} <= set(status)
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    types = conditions["items"]["properties"]["type"]["enum"]
    assert set(types) == {
        "Ready",
        "Planned",
        "Progressing",
        "Available",
        "Degraded",
        "ScalingActive",
    }


def test_every_property_is_documented() -> None:
    undocumented = [
        path
        for path, node in _nodes(crd_schema())
        if path and not path.endswith("[*]") and path != "metadata" and not node.get("description")
    ]
    assert undocumented == []


INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
FORBIDDEN_KEYS = {
    "$ref",
    "$defs",
    "definitions",
    "title",
    "const",
    "examples",
    "prefixItems",
    "oneOf",
}


def test_schema_is_structural() -> None:
    problems = []
    for path, node in _nodes(crd_schema()):
        if FORBIDDEN_KEYS & set(node):
            problems.append(f"{path}: {sorted(FORBIDDEN_KEYS & set(node))}")
        if node.get("x-kubernetes-int-or-string"):
            if "type" in node or node.get("anyOf") != INT_OR_STRING:
                problems.append(f"{path}: int-or-string must be exactly anyOf integer/string")
        elif node.get("x-kubernetes-preserve-unknown-fields"):
            if node.get("type") != "object" or "properties" in node:
                problems.append(f"{path}: preserve-unknown-fields only on a free-form object")
        else:
            if "type" not in node:
                problems.append(f"{path}: no type")
            if "anyOf" in node or "allOf" in node:
                problems.append(f"{path}: anyOf/allOf outside int-or-string")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties beside additionalProperties")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        if isinstance(node.get("exclusiveMinimum"), int | float) and not isinstance(
            node.get("exclusiveMinimum"), bool
        ):
            problems.append(f"{path}: numeric exclusiveMinimum")
    assert problems == []


def test_preserve_unknown_fields_only_where_intended() -> None:
    preserved = [
        path
        for path, node in _nodes(crd_schema())
        if node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert preserved == ["spec.gpu.affinity"]


def test_values_under_cel_rules_are_bounded() -> None:
    """Kubernetes estimates each rule's cost from maxItems/maxLength/maxProperties and refuses a
    CRD whose rules could exceed the budget; bound every list, string and map they may reach."""
    unbounded: list[str] = []

    def walk(node: Schema, path: str, under_rule: bool) -> None:
        under_rule = under_rule or bool(node.get("x-kubernetes-validations"))
        if under_rule:
            kind = node.get("type")
            if kind == "array" and "maxItems" not in node:
                unbounded.append(f"{path}: array without maxItems")
            is_string = kind == "string" or node.get("x-kubernetes-int-or-string")
            if is_string and not {"maxLength", "enum"} & set(node) and "format" not in node:
                unbounded.append(f"{path}: string without maxLength")
            if isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node:
                unbounded.append(f"{path}: map without maxProperties")
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}", under_rule)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{path}[*]", under_rule)

    walk(crd_schema(), "", False)
    assert unbounded == []


def test_no_floats_in_the_api() -> None:
    assert [path for path, node in _nodes(crd_schema()) if node.get("type") == "number"] == []


def test_defaults_are_valid_under_their_own_schema(crd_validator: Any) -> None:
    with_defaults = [(path, node) for path, node in _nodes(crd_schema()) if "default" in node]
    assert len(with_defaults) > 20
    problems = [
        f"{path}: {error}"
        for path, node in with_defaults
        for error in crd_validator.node_errors(node, node["default"])
    ]
    assert problems == []
