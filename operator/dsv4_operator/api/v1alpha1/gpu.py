"""`spec.gpu`: which GPUs a replica may run on, how many, and where.

The `types` list is an ordered fallback: the planner tries each type in turn and takes the first
one whose layout fits `gpusPerNode` x `maxNodes` (and `budget`). Names are matched
case-insensitively against the built-in catalog (`enums.GPU_TYPE_NAMES`) and `customTypes`.
"""

import re
from typing import Annotated, Any, Final

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from dsv4_operator.api.meta import ApiModel, with_cel_rules
from dsv4_operator.api.v1alpha1.enums import (
    GPU_TYPE_NAMES,
    GpuVendor,
    TaintEffect,
    TolerationOperator,
)
from dsv4_operator.api.v1alpha1.quantities import Quantity, quantity_bytes

__all__ = [
    "GPU_NAME_PATTERN",
    "MAX_GPU_BUDGET",
    "CustomGpuType",
    "GpuSpec",
    "Toleration",
    "label_key_error",
]

MAX_GPU_BUDGET: Final = 100_000
"""Most `spec.gpu.budget`, GPUs over all replicas (our bound; the planner's budgets take it too)."""

GPU_NAME_PATTERN: Final = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
"""A GPU type name: letters, digits and dashes, 1 to 63 characters (matched case-insensitively)."""

_DNS_LABEL: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME_PART: Final = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"


def label_key_error(key: str) -> str | None:
    """Why `key` is not a Kubernetes qualified name (label or annotation key), or None.

    core/v1 `IsQualifiedName`: an optional DNS-1123 subdomain prefix of at most 253 characters
    and `/`, then a name of 1 to 63 characters, alphanumeric at both ends, `-`, `_`, `.` inside.
    """
    prefix, slash, name = key.rpartition("/")
    if slash and (
        not prefix
        or len(prefix) > 253
        or re.fullmatch(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*", prefix) is None
    ):
        return (
            f"{key!r} is not a Kubernetes label key: the prefix must be a DNS subdomain of at "
            "most 253 characters"
        )
    if not 1 <= len(name) <= 63 or re.fullmatch(_NAME_PART, name) is None:
        return (
            f"{key!r} is not a Kubernetes label key: the name must be 1 to 63 characters, "
            "alphanumeric at both ends (-, _ and . inside)"
        )
    return None


_CATALOG_CEL: Final = "[" + ", ".join(f"'{name}'" for name in GPU_TYPE_NAMES) + "]"

GpuName = Annotated[str, Field(pattern=GPU_NAME_PATTERN, max_length=63)]

NodeSelector = Annotated[
    dict[str, Annotated[str, Field(max_length=63)]],
    Field(max_length=32),
]


class CustomGpuType(ApiModel):
    """A GPU type that is not in the built-in catalog, described for the planner."""

    name: GpuName
    """Name used in `spec.gpu.types` (case-insensitive; must not be a built-in type name)."""
    memory: Quantity
    """Memory per GPU as a Kubernetes quantity in bytes (between 8Gi and 1Ti): the total that
    `nvidia-smi --query-gpu=memory.total` reports (e.g. `97871Mi` for 97,871 MiB), not the
    marketing size; the planner subtracts the driver's reservation (616 MiB, as on an H200)
    to get what CUDA, and so vLLM, sees."""
    memory_bandwidth_gbps: int = Field(ge=100, le=100_000)
    """Memory bandwidth per GPU in GB/s (10^9 bytes per second), 100 to 100000."""
    dense_bf16_tflops: int = Field(ge=10, le=100_000)
    """Dense BF16 tensor throughput per GPU in TFLOP/s (10^12 FLOP per second), 10 to 100000."""
    fp8: bool = False
    """Whether the GPU has FP8 (e4m3) tensor cores (Hopper, Ada, Blackwell, MI300 and later)."""
    fp4: bool = False
    """Whether the GPU has FP4 (e2m1) tensor cores (Blackwell, MI355X)."""
    vendor: GpuVendor = "nvidia"
    """GPU vendor: nvidia or amd (decides the device-plugin resource and kernels)."""
    interconnect_gbps: int = Field(default=64, ge=1, le=100_000)
    """GPU-to-GPU bandwidth inside a node per GPU and direction in GB/s (e.g. 450 for NVLink 4,
    64 for PCIe 5 x16)."""
    node_selector: NodeSelector = Field(default_factory=dict)
    """Node labels that select nodes with this GPU type (e.g. `nvidia.com/gpu.product`)."""

    @field_validator("memory")
    @classmethod
    def _memory_in_range(cls, value: str) -> str:
        size = quantity_bytes(value)
        if not 8 * 2**30 <= size <= 2**40:
            msg = f"must be between 8Gi and 1Ti, got {value} ({size} bytes)"
            raise ValueError(msg)
        return value

    @property
    def memory_bytes(self) -> int:
        """Memory per GPU in bytes."""
        return quantity_bytes(self.memory)


class Toleration(ApiModel):
    """A Kubernetes toleration (the fields of core/v1 Toleration) for the worker pods."""

    model_config = with_cel_rules(
        {
            # core/v1 validation: "operator must be Exists when `key` is empty" ("" is empty)
            "rule": "(has(self.key) && self.key != '') || self.operator == 'Exists'",
            "message": "spec.gpu.tolerations: an empty key needs operator Exists",
        },
        {
            "rule": "self.operator != 'Exists' || !has(self.value) || self.value == ''",
            "message": "spec.gpu.tolerations: operator Exists takes no value",
        },
        {
            "rule": (
                "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')"
            ),
            "message": "spec.gpu.tolerations: tolerationSeconds needs effect NoExecute",
        },
    )

    key: Annotated[str, Field(max_length=316)] | None = None
    """Taint key to tolerate; empty with operator Exists tolerates every taint."""
    operator: TolerationOperator = "Equal"
    """Exists (any value) or Equal (the value below)."""
    value: Annotated[str, Field(max_length=63)] | None = None
    """Taint value to match when operator is Equal."""
    effect: TaintEffect | None = None
    """Taint effect to match: NoSchedule, PreferNoSchedule or NoExecute; empty matches all."""
    toleration_seconds: int | None = Field(default=None, ge=0)
    """With effect NoExecute: seconds the pod stays bound after the taint appears (>= 0)."""

    @model_validator(mode="after")
    def _operator_fits(self) -> "Toleration":
        if not self.key and self.operator != "Exists":  # None or "" (bad-CR review)
            msg = "an empty key needs operator Exists"
            raise ValueError(msg)
        if self.operator == "Exists" and self.value:
            msg = "operator Exists takes no value"
            raise ValueError(msg)
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            # core/v1 validation: "effect must be 'NoExecute' when `tolerationSeconds` is set"
            msg = "tolerationSeconds needs effect NoExecute"
            raise ValueError(msg)
        return self


Affinity = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


class GpuSpec(ApiModel):
    """GPU types, counts and placement of the worker pods."""

    model_config = with_cel_rules(
        {
            "rule": (
                "self.types.all(t, t.lowerAscii() in "
                + _CATALOG_CEL
                + " || (has(self.customTypes) && self.customTypes.exists(c, "
                "c.name.lowerAscii() == t.lowerAscii())))"
            ),
            "message": (
                "spec.gpu.types: each entry must be a built-in GPU type ("
                + ", ".join(GPU_TYPE_NAMES)
                + ") or the name of an entry in spec.gpu.customTypes"
            ),
        },
        {
            "rule": (
                "!has(self.customTypes) || self.customTypes.all(c, "
                "!(c.name.lowerAscii() in " + _CATALOG_CEL + "))"
            ),
            "message": ("spec.gpu.customTypes: a name must not be a built-in GPU type name"),
        },
    )

    types: Annotated[
        tuple[GpuName, ...],
        Field(min_length=1, max_length=8, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ]
    """Ordered fallback list of GPU type names (1 to 8), matched case-insensitively: built-in
    types (h100-80gb, h200-141gb, h20-96gb, a100-80gb, l40s-48gb, l20-48gb, rtx-a6000-48gb,
    rtx-4090-24gb, rtx-5090-32gb, gh200-96gb, b200-180gb, gb200-186gb, mi300x-192gb,
    mi355x-288gb) or names from customTypes. The first type whose plan fits is used; when
    spec.cost.gpuHourlyPrices prices every listed type, the cheapest fitting one instead."""
    custom_types: Annotated[
        tuple[CustomGpuType, ...],
        Field(
            max_length=8,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ] = ()
    """Descriptions of GPU types missing from the built-in catalog (at most 8)."""
    gpus_per_node: int | None = Field(default=None, ge=1, le=16)
    """GPUs per node that one worker pod takes, 1 to 16 (a count). Unset: each type's node size
    in the built-in catalog (4 for gh200-96gb and gb200-186gb, 8 for the others and for
    customTypes)."""
    max_nodes: int = Field(default=1, ge=1, le=64)
    """Most nodes (worker pods) one replica may span, 1 to 64; more than 1 makes a multi-node
    LeaderWorkerSet group."""
    budget: int | None = Field(default=None, ge=1, le=MAX_GPU_BUDGET)
    """Most GPUs all replicas together may hold, surge included (a count, 1 to 100000); unset
    means no limit. One replica is planned within budget / replicas (with autoscaling on,
    budget / max(minReplicas, 1); the autoscaler keeps replicas x GPUs within the budget)."""
    node_selector: NodeSelector = Field(default_factory=dict)
    """Extra node labels every worker pod requires (at most 32 entries)."""
    tolerations: Annotated[tuple[Toleration, ...], Field(max_length=32)] = ()
    """Tolerations of the worker pods, e.g. for `nvidia.com/gpu` taints (at most 32)."""
    affinity: Affinity | None = None
    """Kubernetes core/v1 Affinity of the worker pods, passed through unchanged."""

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if (error := label_key_error(key)) is not None:
                raise ValueError(error)
        return value

    @model_validator(mode="after")
    def _types_known(self) -> "GpuSpec":
        custom = [c.name.lower() for c in self.custom_types]
        if len(set(custom)) != len(custom):
            msg = "customTypes: names must be unique (case-insensitive)"
            raise ValueError(msg)
        clash = sorted(set(custom) & set(GPU_TYPE_NAMES))
        if clash:
            msg = f"customTypes: {clash} are built-in GPU type names; pick another name"
            raise ValueError(msg)
        lowered = [t.lower() for t in self.types]
        if len(set(lowered)) != len(lowered):
            msg = "types: entries must be unique (case-insensitive)"
            raise ValueError(msg)
        unknown = [t for t in self.types if t.lower() not in GPU_TYPE_NAMES + tuple(custom)]
        if unknown:
            msg = (
                f"types: {unknown} unknown; use a built-in GPU type ({', '.join(GPU_TYPE_NAMES)})"
                " or describe it in customTypes"
            )
            raise ValueError(msg)
        return self

    @property
    def normalized_types(self) -> tuple[str, ...]:
        """`types` lowercased, in order: the names the planner looks up."""
        return tuple(t.lower() for t in self.types)

    def custom_type(self, name: str) -> CustomGpuType | None:
        """Return the custom description of GPU type `name` (case-insensitive), if any."""
        for custom in self.custom_types:
            if custom.name.lower() == name.lower():
                return custom
        return None
