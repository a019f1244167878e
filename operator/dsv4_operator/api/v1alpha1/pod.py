"""`spec.pod`: settings of every worker pod (leaders and workers) that do not change the plan.

Private registries (`imagePullSecrets`), priority and preemption (`priorityClassName`), the
NVIDIA container runtime where it is not the node default (`runtimeClassName`), a scheduler
other than the default (`schedulerName`), a ServiceAccount for workload identity
(`serviceAccountName`; its API token is still not mounted), and extra labels and annotations of
the pod templates. Names follow core/v1 PodSpec validation (DNS-1123 subdomains). The objects
named must exist: a missing PriorityClass, RuntimeClass or ServiceAccount makes admission refuse
the pods; a scheduler that does not run leaves them Pending. Any change here changes the pod
template, so LeaderWorkerSet replaces every group (weights reload) as `spec.rollout` allows.

The CRD's CEL rule refuses label and annotation keys under the prefixes the operator and
LeaderWorkerSet own, at admission; key formats, unique pull secrets and the annotations' total
size are checked by the operator's parse (`Ready=False`, `InvalidSpec`), as for
`spec.gpu.nodeSelector`.
"""

from typing import Annotated, Final

from pydantic import Field, field_validator

from dsv4_operator.api.meta import ApiModel, with_cel_rules
from dsv4_operator.api.v1alpha1.gpu import label_key_error
from dsv4_operator.api.v1alpha1.source import ObjectName

__all__ = ["RESERVED_PREFIXES", "PodSettings"]

RESERVED_PREFIXES: Final = ("app.kubernetes.io/", "dsv4.io/", "leaderworkerset.sigs.k8s.io/")
"""Label and annotation key prefixes the operator (`render.labels`) and LWS set on pods."""

ANNOTATIONS_MAX_BYTES: Final = 256 * 1024 - 4096
"""Bytes of `spec.pod.annotations` keys and values together: core/v1's 256 KiB for all of a
pod's annotations (`TotalAnnotationSizeLimitB`), less 4 KiB for LeaderWorkerSet's own."""

LABEL_VALUE_PATTERN: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
"""A label value: at most 63 characters, alphanumeric at both ends (core/v1 validation)."""

_RESERVED_CEL: Final = "[" + ", ".join(f"'{p}'" for p in RESERVED_PREFIXES) + "]"


def _no_reserved_keys(field: str) -> dict[str, str]:
    return {
        "rule": f"!has(self.{field}) || self.{field}.all(k, !{_RESERVED_CEL}.exists(p, "
        "k.startsWith(p)))",
        "message": f"spec.pod.{field}: keys must not start with "
        + ", ".join(RESERVED_PREFIXES)
        + " (set by the operator and LeaderWorkerSet)",
    }


def _check_keys(value: dict[str, str], *, annotations: bool) -> dict[str, str]:
    """`value` (labels, or annotations), or ValueError naming every bad key at once.

    Raises:
        ValueError: keys that are not label keys (annotation keys checked lowercased, as
            core/v1 ValidateAnnotations does) or start with `RESERVED_PREFIXES`, and, for
            annotations, more than `ANNOTATIONS_MAX_BYTES` in all; one message for all of them,
            so a user fixes them in one apply.
    """
    problems = []
    for key in value:
        if (error := label_key_error(key.lower() if annotations else key)) is not None:
            problems.append(error)
        elif key.lower().startswith(RESERVED_PREFIXES):
            problems.append(
                f"{key!r}: the prefixes {', '.join(RESERVED_PREFIXES)} are set by the operator"
            )
    if annotations:
        size = sum(len(k.encode()) + len(v.encode()) for k, v in value.items())
        if size > ANNOTATIONS_MAX_BYTES:
            problems.append(f"{size} bytes of keys and values; at most {ANNOTATIONS_MAX_BYTES}")
    if problems:
        raise ValueError("; ".join(problems))
    return value


class PodSettings(ApiModel):
    """Settings of every worker pod that do not change the plan (all optional)."""

    model_config = with_cel_rules(_no_reserved_keys("labels"), _no_reserved_keys("annotations"))

    image_pull_secrets: Annotated[
        tuple[ObjectName, ...],
        Field(max_length=16, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = ()
    """Names of Secrets (in the resource's namespace) for pulling the worker image (at most
    16, unique), e.g. `[regcred]`."""
    priority_class_name: ObjectName | None = None
    """PriorityClass of the worker pods (the class must exist, or pod creation is refused)."""
    runtime_class_name: ObjectName | None = None
    """RuntimeClass of the worker pods, e.g. `nvidia` where the NVIDIA runtime is not the
    node's default."""
    scheduler_name: ObjectName | None = None
    """Scheduler of the worker pods; unset: the default. (Gang scheduling of a group also needs
    the scheduler's group object, which LeaderWorkerSet's own integration provides.)"""
    service_account_name: ObjectName | None = None
    """ServiceAccount of the worker pods (e.g. for workload identity to read weights); its API
    token is not mounted either way (`automountServiceAccountToken: false`)."""
    labels: Annotated[
        dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]],
        Field(max_length=32),
    ] = Field(default_factory=dict)
    """Extra labels of the worker pods (at most 32; not under the operator's prefixes)."""
    annotations: Annotated[
        dict[str, Annotated[str, Field(max_length=4096)]],
        Field(max_length=32),
    ] = Field(default_factory=dict)
    """Extra annotations of the worker pods (at most 32, values up to 4,096 characters; not
    under the operator's prefixes)."""

    @field_validator("image_pull_secrets")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            msg = "names must be unique (LeaderWorkerSet keys the list by name)"
            raise ValueError(msg)
        return value

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_keys(value, annotations=False)

    @field_validator("annotations")
    @classmethod
    def _annotation_keys(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_keys(value, annotations=True)
