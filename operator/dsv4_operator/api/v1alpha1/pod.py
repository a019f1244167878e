"""`spec.pod`: settings of every worker pod (leaders and workers) that do not change the plan.

Private registries (`imagePullSecrets`), priority and preemption (`priorityClassName`), the
NVIDIA container runtime where it is not the node default (`runtimeClassName`), gang schedulers
such as Volcano or a Kueue-managed scheduler (`schedulerName`), a ServiceAccount for workload
identity (`serviceAccountName`; its API token is still not mounted), and extra labels and
annotations of the pod templates. Names follow core/v1 PodSpec validation (DNS-1123
subdomains); labels and annotations may not use the prefixes the operator and LeaderWorkerSet
own.
"""

import re
from typing import Annotated, Final

from pydantic import Field, field_validator

from dsv4_operator.api.meta import ApiModel, with_cel_rules
from dsv4_operator.api.v1alpha1.gpu import LABEL_KEY_PATTERN
from dsv4_operator.api.v1alpha1.source import ObjectName

__all__ = ["RESERVED_PREFIXES", "PodSettings"]

RESERVED_PREFIXES: Final = ("app.kubernetes.io/", "dsv4.io/", "leaderworkerset.sigs.k8s.io/")
"""Label and annotation key prefixes the operator (`render.labels`) and LWS set on pods."""

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


def _check_keys(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if re.fullmatch(LABEL_KEY_PATTERN, key) is None or len(key) > 316:
            msg = f"{key!r} is not a Kubernetes label key (prefix/name, name <= 63 chars)"
            raise ValueError(msg)
        if key.startswith(RESERVED_PREFIXES):
            msg = f"{key!r}: the prefixes {', '.join(RESERVED_PREFIXES)} are set by the operator"
            raise ValueError(msg)
    return value


class PodSettings(ApiModel):
    """Settings of every worker pod that do not change the plan (all optional)."""

    model_config = with_cel_rules(_no_reserved_keys("labels"), _no_reserved_keys("annotations"))

    image_pull_secrets: Annotated[
        tuple[ObjectName, ...],
        Field(max_length=16, json_schema_extra={"x-kubernetes-list-type": "atomic"}),
    ] = ()
    """Names of Secrets (in the resource's namespace) for pulling the worker image (at most
    16), e.g. `[regcred]`."""
    priority_class_name: ObjectName | None = None
    """PriorityClass of the worker pods (the class must exist, or pod creation is refused)."""
    runtime_class_name: ObjectName | None = None
    """RuntimeClass of the worker pods, e.g. `nvidia` where the NVIDIA runtime is not the
    node's default."""
    scheduler_name: ObjectName | None = None
    """Scheduler of the worker pods, e.g. `volcano` for gang scheduling; unset: the default."""
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

    @field_validator("labels", "annotations")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_keys(value)
