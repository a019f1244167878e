"""Base model and shared metadata types of the dsv4.io API.

Every API type derives from `ApiModel`: camelCase wire names (Python attributes stay snake_case),
unknown fields rejected, instances frozen, and attribute docstrings used as field descriptions, so
the docstring under each field is what `kubectl explain` prints.
"""

from datetime import datetime
from typing import Final, cast

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

from dsv4_operator.api.v1alpha1.enums import ConditionStatus, ConditionType

__all__ = ["API_MODEL_CONFIG", "ApiModel", "CelRule", "Condition", "with_cel_rules"]

API_MODEL_CONFIG: Final = ConfigDict(
    alias_generator=to_camel,
    populate_by_name=True,
    extra="forbid",
    frozen=True,
    use_attribute_docstrings=True,
)
"""Model config of every dsv4.io type."""

CelRule = dict[str, str]
"""An `x-kubernetes-validations` entry: `rule` (CEL, `self` is the object) and `message`."""


def with_cel_rules(*rules: CelRule) -> ConfigDict:
    """Return `API_MODEL_CONFIG` plus CEL rules that the CRD carries on this type's schema."""
    return ConfigDict(
        **API_MODEL_CONFIG,
        json_schema_extra={"x-kubernetes-validations": cast("list[JsonValue]", list(rules))},
    )


class ApiModel(BaseModel):
    """Base of every dsv4.io type: camelCase aliases, `extra="forbid"`, frozen, documented."""

    model_config = API_MODEL_CONFIG


class Condition(ApiModel):
    """One observation of the resource's state (the shape of Kubernetes' `metav1.Condition`)."""

    type: ConditionType
    """Condition type: Ready, Planned, Progressing, Available, Degraded or ScalingActive."""
    status: ConditionStatus
    """Whether the condition holds: True, False or Unknown."""
    reason: str = Field(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    )
    """Machine-readable CamelCase reason for the last transition, e.g. `InvalidSpec`,
    `InsufficientCapacity` (1 to 1024 characters)."""
    message: str = Field(default="", max_length=32768)
    """Human-readable details of the transition (at most 32768 characters)."""
    last_transition_time: datetime
    """When the status last changed (RFC 3339 date-time, UTC)."""
    observed_generation: int = Field(default=0, ge=0)
    """`metadata.generation` the condition was computed from (a count, >= 0)."""
