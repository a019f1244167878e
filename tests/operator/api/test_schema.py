"""One test per pydantic → structural rewrite rule (design-lessons.md §7)."""

from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from dsv4_operator.api import schema
from dsv4_operator.api.meta import ApiModel


def test_inline_refs_replaces_refs_and_keeps_the_field_description() -> None:
    raw = {
        "$defs": {"Inner": {"description": "class doc", "type": "object", "properties": {}}},
        "type": "object",
        "properties": {
            "a": {"$ref": "#/$defs/Inner", "description": "field doc"},
            "b": {"allOf": [{"$ref": "#/$defs/Inner"}]},
        },
    }
    assert schema.inline_refs(raw) == {
        "type": "object",
        "properties": {
            "a": {"description": "field doc", "type": "object", "properties": {}},
            "b": {"description": "class doc", "type": "object", "properties": {}},
        },
    }


def test_inline_refs_refuses_recursive_types() -> None:
    raw = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    }
    with pytest.raises(schema.SchemaError, match="recursive type Node"):
        schema.inline_refs(raw)


def test_collapse_optional_keeps_the_type_and_field_keys() -> None:
    node = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "description": "d"}
    assert schema.collapse_optional(node) == {"type": "integer", "minimum": 1, "description": "d"}
    assert schema.collapse_optional({"type": "string"}) == {"type": "string"}
    with pytest.raises(schema.SchemaError):
        schema.collapse_optional(
            {"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]}
        )


def test_drop_useless_defaults() -> None:
    empties: tuple[Any, ...] = (None, "", [], {})
    for empty in empties:
        assert schema.drop_useless_defaults({"type": "string", "default": empty}) == {
            "type": "string"
        }
    assert schema.drop_useless_defaults({"default": 0}) == {"default": 0}
    assert schema.drop_useless_defaults({"default": False}) == {"default": False}


def test_drop_forbidden_additional_properties() -> None:
    node = {"type": "object", "properties": {}, "additionalProperties": False}
    assert schema.drop_forbidden_additional_properties(node) == {"type": "object", "properties": {}}
    mapping = {"type": "object", "additionalProperties": {"type": "string"}}
    assert schema.drop_forbidden_additional_properties(mapping) == mapping
    with pytest.raises(schema.SchemaError, match="preserve-unknown-fields"):
        schema.drop_forbidden_additional_properties(
            {"type": "object", "additionalProperties": True}
        )


def test_const_to_enum() -> None:
    assert schema.const_to_enum({"const": "mtp", "type": "string"}) == {
        "type": "string",
        "enum": ["mtp"],
    }


def test_exclusive_bounds_to_openapi() -> None:
    assert schema.exclusive_bounds_to_openapi({"type": "integer", "exclusiveMinimum": 0}) == {
        "type": "integer",
        "minimum": 0,
        "exclusiveMinimum": True,
    }
    assert schema.exclusive_bounds_to_openapi({"exclusiveMaximum": 10}) == {
        "maximum": 10,
        "exclusiveMaximum": True,
    }


def test_drop_unwanted_keys_and_normalize_description() -> None:
    node = {"title": "T", "examples": [1], "type": "integer", "description": "two\n    lines"}
    assert schema.normalize_description(schema.drop_unwanted_keys(node)) == {
        "type": "integer",
        "description": "two lines",
    }


class _Leaf(ApiModel):
    """A leaf."""

    count: int = Field(gt=0)
    """How many."""
    kind: Literal["only"] = "only"
    """The one kind."""


class _Root(ApiModel):
    """The root."""

    leaf: _Leaf | None = None
    """An optional leaf."""
    leaves: tuple[_Leaf, ...] = ()
    """Leaves."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels."""


def test_structural_schema_end_to_end() -> None:
    leaf = {
        "description": "A leaf.",
        "type": "object",
        "properties": {
            "count": {
                "description": "How many.",
                "type": "integer",
                "minimum": 0,
                "exclusiveMinimum": True,
            },
            "kind": {
                "description": "The one kind.",
                "type": "string",
                "enum": ["only"],
                "default": "only",
            },
        },
        "required": ["count"],
    }
    expected: dict[str, Any] = {
        "description": "The root.",
        "type": "object",
        "properties": {
            "leaf": {**leaf, "description": "An optional leaf."},
            "leaves": {"description": "Leaves.", "type": "array", "items": leaf},
            "labels": {
                "description": "Labels.",
                "type": "object",
                "additionalProperties": {"type": "string"},
            },
        },
    }
    assert schema.structural_schema(_Root) == expected


def test_free_form_dict_without_explicit_schema_is_refused() -> None:
    class Loose(BaseModel):
        model_config = ConfigDict(use_attribute_docstrings=True)

        blob: Annotated[dict[str, Any], Field(description="anything")]

    with pytest.raises(schema.SchemaError):
        schema.structural_schema(Loose)
