"""Offline CRD validation: structural defaulting, JSON Schema (Draft 4) and CEL rules.

The 1.20 test API server has no CEL (test-cluster.md §2.7), so the CRD's `x-kubernetes-validations`
are checked here with cel-expr-python (cel-cpp), as test-cluster.md §6 describes:

1. apply the schema's defaults (structural defaulting, as the API server does before validation);
2. validate with `jsonschema.Draft4Validator` over a rewrite of the `openAPIV3Schema`
   (`nullable` → null type, `x-kubernetes-list-type: set` → `uniqueItems`,
   `additionalProperties: false` wherever `properties` is set and unknown fields are not
   preserved: kubectl's strict field validation);
3. walk schema and object together and evaluate every rule with `self` bound (and `oldSelf` on
   updates, for transition rules).

Not emulated: `messageExpression`, CEL cost limits, Kubernetes-only CEL libraries (the CRD uses
none), `oldSelf` correlation inside list-type=map lists (the CRD has no transition rule there).
"""

import copy
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema
import pytest
from cel_expr_python import cel
from cel_expr_python.ext import ext_optional, ext_strings

from dsv4_operator import crdgen

Schema = dict[str, Any]
Validate = Callable[..., list[str]]


def to_draft4(node: Schema) -> Schema:
    """Rewrite a structural OpenAPI v3 schema for `jsonschema.Draft4Validator`."""
    out: Schema = {key: value for key, value in node.items() if not key.startswith("x-kubernetes")}
    if node.get("nullable"):
        out["type"] = [out["type"], "null"]
        out.pop("nullable")
    if "properties" in node:
        out["properties"] = {name: to_draft4(child) for name, child in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_draft4(node["additionalProperties"])
    if isinstance(node.get("items"), dict):
        out["items"] = to_draft4(node["items"])
    if node.get("x-kubernetes-list-type") == "set":  # the API server refuses duplicates
        out["uniqueItems"] = True
    if "anyOf" in node:
        out["anyOf"] = [to_draft4(child) for child in node["anyOf"]]
    return out


def apply_defaults(node: Schema, value: Any) -> Any:
    """Return `value` with the schema's defaults filled in, recursively (structural defaulting)."""
    if isinstance(value, dict) and "properties" in node:
        out = dict(value)
        for name, child in node["properties"].items():
            if name not in out and "default" in child:
                out[name] = copy.deepcopy(child["default"])
            if name in out:
                out[name] = apply_defaults(child, out[name])
        return out
    if isinstance(value, dict) and isinstance(node.get("additionalProperties"), dict):
        return {k: apply_defaults(node["additionalProperties"], v) for k, v in value.items()}
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [apply_defaults(node["items"], item) for item in value]
    return value


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"


class CrdValidator:
    """Validates objects against one CRD version's schema and CEL rules, like the API server."""

    def __init__(self, crd: Mapping[str, Any]) -> None:
        self.schema: Schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        draft4 = to_draft4(self.schema)
        # The server validates ObjectMeta itself: the CRD may only restrict metadata.name (and
        # generateName), and other metadata fields are never unknown.
        draft4["properties"]["metadata"].pop("additionalProperties", None)
        self.draft4 = jsonschema.Draft4Validator(draft4)
        self.env = cel.NewEnv(
            variables={"self": cel.Type.DYN, "oldSelf": cel.Type.DYN},
            extensions=[ext_strings.ExtStrings(), ext_optional.ExtOptional()],
        )
        self._compiled: dict[str, Any] = {}

    @staticmethod
    def node_errors(node: Schema, value: Any) -> list[str]:
        """JSON Schema errors of `value` against one schema node (e.g. a field's default)."""
        validator = jsonschema.Draft4Validator(to_draft4(node))
        return [error.message for error in validator.iter_errors(value)]

    def compile(self, rule: str) -> Any:
        """Compile (once) and return a CEL rule."""
        if rule not in self._compiled:
            self._compiled[rule] = self.env.compile(rule)
        return self._compiled[rule]

    def rules(self) -> list[tuple[str, Schema]]:
        """Every (path, rule entry) in the schema."""
        found: list[tuple[str, Schema]] = []

        def walk(node: Schema, path: str) -> None:
            found.extend((path, entry) for entry in node.get("x-kubernetes-validations", []))
            for name, child in node.get("properties", {}).items():
                walk(child, f"{path}.{name}" if path else name)
            if isinstance(node.get("items"), dict):
                walk(node["items"], f"{path}[*]")
            if isinstance(node.get("additionalProperties"), dict):
                walk(node["additionalProperties"], f"{path}[*]")

        walk(self.schema, "")
        return found

    def validate(self, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[str]:
        """Return the API server's complaints about `obj` (an update of `old` if given), or []."""
        new = apply_defaults(self.schema, copy.deepcopy(dict(obj)))
        errors = [
            f"{_path(error.absolute_path)}: {error.message}"
            for error in sorted(self.draft4.iter_errors(new), key=lambda e: list(e.absolute_path))
        ]
        if errors:
            return errors  # the API server does not run CEL over ill-typed data either
        previous = None if old is None else apply_defaults(self.schema, copy.deepcopy(dict(old)))
        return self._cel(self.schema, new, previous, "")

    def _cel(self, node: Schema, value: Any, old: Any, path: str) -> list[str]:
        errors: list[str] = []
        for entry in node.get("x-kubernetes-validations", []):
            rule = entry["rule"]
            if "oldSelf" in rule and old is None:
                continue  # transition rules run on updates only
            data = {"self": value} if old is None else {"self": value, "oldSelf": old}
            try:
                result = self.compile(rule).eval(data=data).value()
            except Exception as error:  # reported, as the API server reports a rule error
                errors.append(f"{path or '<root>'}: rule {rule!r} failed to evaluate: {error}")
                continue
            if result is not True:
                errors.append(f"{path or '<root>'}: {entry.get('message', rule)}")
        if isinstance(value, dict):
            for name, child in node.get("properties", {}).items():
                if name in value:
                    old_child = old.get(name) if isinstance(old, dict) else None
                    child_path = f"{path}.{name}" if path else name
                    errors += self._cel(child, value[name], old_child, child_path)
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                for key, child_value in value.items():
                    errors += self._cel(extra, child_value, None, f"{path}.{key}")
        if isinstance(value, list) and isinstance(node.get("items"), dict):
            for index, item in enumerate(value):
                errors += self._cel(node["items"], item, None, f"{path}[{index}]")
        return errors


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    """The generated CRD (in memory, from the pydantic types)."""
    return crdgen.crd_dict()


@pytest.fixture(scope="session")
def crd_validator(crd: dict[str, Any]) -> CrdValidator:
    """A validator for the generated CRD."""
    return CrdValidator(crd)


@pytest.fixture(scope="session")
def validate(crd_validator: CrdValidator) -> Validate:
    """`validate(obj, old=None) -> [messages]`: the API server's verdict on `obj`."""
    return crd_validator.validate
