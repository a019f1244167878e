"""pydantic JSON Schema → Kubernetes structural OpenAPI v3 schema.

pydantic emits JSON Schema 2020-12; a CRD needs a *structural* OpenAPI v3.0 schema
(https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema).
Each rewrite below is one small function; `structural_schema` applies them in order. The rules
and their reasons are in design-lessons.md §7.
"""

from collections.abc import Callable
from typing import Any, Final, cast

from pydantic import BaseModel

__all__ = [
    "Schema",
    "SchemaError",
    "collapse_optional",
    "const_to_enum",
    "drop_forbidden_additional_properties",
    "drop_unwanted_keys",
    "drop_useless_defaults",
    "exclusive_bounds_to_openapi",
    "inline_refs",
    "normalize_description",
    "structural_schema",
]

Schema = dict[str, Any]
"""A JSON (Schema) object."""

_DROPPED_KEYS: Final = frozenset({"title", "examples", "$schema"})


class SchemaError(ValueError):
    """The pydantic schema uses a construct that has no structural equivalent."""


def _walk(node: Schema, rewrite: Callable[[Schema], Schema]) -> Schema:
    """Apply `rewrite` bottom-up to `node` and every sub-schema (properties, items, branches)."""
    out = dict(node)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {
            name: _walk(child, rewrite) for name, child in out["properties"].items()
        }
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _walk(out[key], rewrite)
    for key in ("anyOf", "allOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [_walk(child, rewrite) for child in out[key]]
    return rewrite(out)


def inline_refs(schema: Schema) -> Schema:
    """Replace every `$ref: #/$defs/X` with the definition itself and drop `$defs`.

    A field's own keys (its description) win over the definition's (the class docstring). A
    single-element `allOf: [{$ref}]` (older pydantic) is treated as a `$ref`.

    Raises:
        SchemaError: a definition refers to itself (a recursive type cannot be inlined).
    """
    defs: Schema = schema.get("$defs", {})

    def resolve(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [resolve(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        node = dict(node)
        all_of = node.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and "$ref" in all_of[0]:
            node.pop("allOf")
            node["$ref"] = all_of[0]["$ref"]
        ref = node.pop("$ref", None)
        if ref is not None:
            name = str(ref).rsplit("/", 1)[-1]
            if name in seen:
                raise SchemaError(f"recursive type {name} cannot be inlined")
            node = {**resolve(defs[name], (*seen, name)), **node}
        return {
            key: (value if key in {"enum", "default"} else resolve(value, seen))
            for key, value in node.items()
            if key != "$defs"
        }

    return cast(Schema, resolve(schema, ()))


def collapse_optional(node: Schema) -> Schema:
    """`anyOf: [T, {type: null}]` (from `X | None`) → `T`, the field simply optional."""
    any_of = node.get("anyOf")
    if not isinstance(any_of, list):
        return node
    rest = [branch for branch in any_of if branch != {"type": "null"}]
    if len(rest) == len(any_of):
        return node
    if len(rest) != 1:
        raise SchemaError(f"cannot collapse a union of several types with null: {any_of}")
    out = {key: value for key, value in node.items() if key != "anyOf"}
    return {**rest[0], **out}


def drop_useless_defaults(node: Schema) -> Schema:
    """Drop `default: null`, `""` and empty-collection defaults: such fields are simply absent.

    Empty defaults only bloat stored objects (and Kubernetes 1.20 rejects an empty-string
    default that fails the field's own pattern).
    """
    if "default" in node and node["default"] in (None, "", [], {}):
        node = {key: value for key, value in node.items() if key != "default"}
    return node


def drop_forbidden_additional_properties(node: Schema) -> Schema:
    """Drop `additionalProperties: false` (from `extra="forbid"`) next to `properties`.

    A structural schema may not have both; the API server prunes unknown fields instead.

    Raises:
        SchemaError: `additionalProperties: true` (a free-form dict): mark such a field with
            `x-kubernetes-preserve-unknown-fields` through `WithJsonSchema` instead.
    """
    extra = node.get("additionalProperties")
    if extra is True:
        raise SchemaError("free-form object: use x-kubernetes-preserve-unknown-fields explicitly")
    if extra is False:
        node = {key: value for key, value in node.items() if key != "additionalProperties"}
    return node


def const_to_enum(node: Schema) -> Schema:
    """`const: v` → `enum: [v]` (OpenAPI v3.0 has no const)."""
    if "const" not in node:
        return node
    out = {key: value for key, value in node.items() if key != "const"}
    out["enum"] = [node["const"]]
    return out


def exclusive_bounds_to_openapi(node: Schema) -> Schema:
    """Numeric `exclusiveMinimum: n` (2020-12) → `minimum: n, exclusiveMinimum: true` (3.0)."""
    out = dict(node)
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[bound] = value
            out[exclusive] = True
    return out


def normalize_description(node: Schema) -> Schema:
    """Join a multi-line docstring into one line (`kubectl explain` wraps text itself)."""
    description = node.get("description")
    if isinstance(description, str):
        node = {**node, "description": " ".join(description.split())}
    return node


def drop_unwanted_keys(node: Schema) -> Schema:
    """Drop `title`, `examples` and `$schema`, which CRDs do not need or allow."""
    return {key: value for key, value in node.items() if key not in _DROPPED_KEYS}


_REWRITES: Final[tuple[Callable[[Schema], Schema], ...]] = (
    collapse_optional,
    drop_useless_defaults,
    drop_forbidden_additional_properties,
    exclusive_bounds_to_openapi,
    drop_unwanted_keys,
    const_to_enum,
    normalize_description,
)


def structural_schema(model: type[BaseModel]) -> Schema:
    """Return the structural OpenAPI v3 schema of `model` (camelCase names, no `$ref`).

    Raises:
        SchemaError: the model uses a construct with no structural form (recursion, free-form
            dict without an explicit schema, union of several types).
    """
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = inline_refs(raw)
    for rewrite in _REWRITES:
        schema = _walk(schema, rewrite)
    return schema
