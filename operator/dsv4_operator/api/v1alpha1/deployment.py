"""The DeepSeekV4Deployment resource and the operator's entry points to parse it."""

import json
from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import Field, ValidationError

from dsv4_operator.api.errors import InvalidSpecError
from dsv4_operator.api.meta import ApiModel
from dsv4_operator.api.names import check_name
from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.api.v1alpha1.status import DeepSeekV4DeploymentStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "DeepSeekV4Deployment",
    "parse_deployment",
    "parse_spec",
]

GROUP: Final = "dsv4.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "DeepSeekV4Deployment"
PLURAL: Final = "deepseekv4deployments"
SINGULAR: Final = "deepseekv4deployment"
SHORT_NAMES: Final = ("dsv4", "dsv4d")


class DeepSeekV4Deployment(ApiModel):
    """A DeepSeek-V4 (Flash or Pro) inference service: planned, rolled out and scaled."""

    api_version: Literal["dsv4.io/v1alpha1"] = "dsv4.io/v1alpha1"
    """API group and version: dsv4.io/v1alpha1."""
    kind: Literal["DeepSeekV4Deployment"] = "DeepSeekV4Deployment"
    """Kind: DeepSeekV4Deployment."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Standard Kubernetes object metadata; only `name` is checked (`parse_deployment`)."""
    spec: DeepSeekV4DeploymentSpec
    """Desired state."""
    status: DeepSeekV4DeploymentStatus | None = None
    """Observed state, written by the operator."""


def _prune_nulls(value: Any) -> Any:
    """Drop null-valued keys, as the API server does for non-nullable fields (all of ours).

    The server prunes such nulls before defaulting, so `replicas: null` means "use the default".
    """
    if isinstance(value, Mapping):
        return {key: _prune_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_prune_nulls(item) for item in value]
    return value


def _json(obj: Mapping[str, Any]) -> str:
    """Serialise as the API server would send it (timestamps and other scalars as strings)."""
    return json.dumps(_prune_nulls(obj), default=str)


def parse_spec(spec: Mapping[str, Any]) -> DeepSeekV4DeploymentSpec:
    """Parse a resource's `spec` (camelCase keys, as the API server returns it).

    Args:
        spec: the `spec` mapping of a DeepSeekV4Deployment (e.g. kopf's `spec` kwarg).

    Returns:
        The frozen, validated spec.

    Parsing is strict, in JSON mode: no type coercion (`"8"` for an integer is refused), as the
    CRD schema would refuse it.

    Raises:
        InvalidSpecError: a field is missing, has the wrong type, breaks a bound or a cross-field
            rule; the message names each field path (`spec.gpu.gpusPerNode`) and the limit.
    """
    try:
        return DeepSeekV4DeploymentSpec.model_validate_json(
            _json(spec), strict=True, by_alias=True, by_name=False
        )
    except ValidationError as error:
        raise InvalidSpecError.from_validation_error(error, prefix="spec") from None


def parse_deployment(body: Mapping[str, Any]) -> DeepSeekV4Deployment:
    """Parse a whole DeepSeekV4Deployment object (apiVersion, kind, metadata, spec, status).

    Args:
        body: the object as the API server returns it (e.g. kopf's `body`).

    Returns:
        The frozen, validated resource.

    Raises:
        InvalidSpecError: as `parse_spec`, with paths from the object root (`spec.replicas`);
            or `metadata.name`, when given, breaks `api.names.check_name`.
    """
    try:
        parsed = DeepSeekV4Deployment.model_validate_json(
            _json(body), strict=True, by_alias=True, by_name=False
        )
    except ValidationError as error:
        raise InvalidSpecError.from_validation_error(error) from None
    name = parsed.metadata.get("name")
    if isinstance(name, str):
        check_name(name)
    return parsed
