"""The CustomResourceDefinition of DeepSeekV4Deployment, built from the pydantic types.

`CRDInfo` plays the role of kubebuilder's root markers (names, scope, subresources, printer
columns); `crd_manifest` assembles the `apiextensions.k8s.io/v1` object that `dsv4 crdgen` writes.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel

from dsv4_operator.api.names import NAME_MAX_LENGTH, NAME_PATTERN
from dsv4_operator.api.schema import Schema, structural_schema
from dsv4_operator.api.v1alpha1 import deployment
from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.api.v1alpha1.status import DeepSeekV4DeploymentStatus

__all__ = [
    "DEEPSEEK_V4_DEPLOYMENT",
    "CRDInfo",
    "PrinterColumn",
    "crd_manifest",
    "crd_schema",
    "schema_gaps",
]


@dataclass(frozen=True)
class PrinterColumn:
    """A column of `kubectl get` (an `additionalPrinterColumns` entry)."""

    name: str
    """Column header."""
    json_path: str
    """JSONPath of the value in the object, e.g. `.spec.model`."""
    type: str
    """OpenAPI type of the value: string, integer, date, ..."""
    description: str
    """What the column shows (kubectl get -o wide and API docs)."""
    priority: int = 0
    """0: shown by `kubectl get`; above 0: only with `-o wide` (apiextensions.k8s.io/v1
    `CustomResourceColumnDefinition.priority`)."""


@dataclass(frozen=True)
class CRDInfo:
    """Everything of a CRD besides its schema."""

    group: str
    """API group, e.g. `dsv4.io`."""
    version: str
    """Served and stored version, e.g. `v1alpha1`."""
    kind: str
    """Kind, e.g. `DeepSeekV4Deployment`."""
    plural: str
    """Resource name in URLs, lowercase plural."""
    singular: str
    """Lowercase singular name."""
    short_names: tuple[str, ...]
    """Short names for kubectl."""
    description: str
    """Root description of the schema (`kubectl explain` of the kind)."""
    spec_model: type[BaseModel]
    """pydantic model of `spec`."""
    status_model: type[BaseModel]
    """pydantic model of `status`."""
    printer_columns: tuple[PrinterColumn, ...] = ()
    """Columns of `kubectl get`, after NAME."""
    scale: dict[str, str] = field(default_factory=dict)
    """The scale subresource's paths (specReplicasPath, statusReplicasPath, labelSelectorPath)."""
    namespaced: bool = True
    """Namespaced (True) or cluster-scoped."""
    name_rules: dict[str, Any] = field(default_factory=dict)
    """Schema keywords for `metadata.name` (`maxLength`, `pattern`): the only metadata field,
    with generateName, that a CRD schema may restrict."""

    @property
    def name(self) -> str:
        """CRD object name: `<plural>.<group>`."""
        return f"{self.plural}.{self.group}"


DEEPSEEK_V4_DEPLOYMENT: Final = CRDInfo(
    group=deployment.GROUP,
    version=deployment.VERSION,
    kind=deployment.KIND,
    plural=deployment.PLURAL,
    singular=deployment.SINGULAR,
    short_names=deployment.SHORT_NAMES,
    description=(
        "DeepSeekV4Deployment serves DeepSeek-V4 (Flash or Pro) with vLLM: the operator plans "
        "GPU type, layout and memory, rolls out LeaderWorkerSet replica groups and scales them on "
        "token throughput."
    ),
    spec_model=DeepSeekV4DeploymentSpec,
    status_model=DeepSeekV4DeploymentStatus,
    printer_columns=(
        PrinterColumn("Model", ".spec.model", "string", "DeepSeek-V4 variant: flash or pro."),
        PrinterColumn("GPU", ".status.plan.gpuType", "string", "Planned GPU type."),
        PrinterColumn("GPUs", ".status.plan.layout.gpusPerReplica", "integer", "GPUs per replica."),
        PrinterColumn("Replicas", ".spec.replicas", "integer", "Desired replicas."),
        PrinterColumn("Ready", ".status.readyReplicas", "integer", "Ready replicas."),
        PrinterColumn(
            "Status",
            '.status.conditions[?(@.type=="Ready")].reason',
            "string",
            "Reason of the Ready condition (AllReplicasReady, ReplicasNotReady, InvalidSpec, ...).",
        ),
        PrinterColumn(
            "Paused",
            ".spec.paused",
            "boolean",
            "spec.paused: the operator changes nothing (spec edits wait), so the other columns "
            "describe the groups as they were.",
        ),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date", "Time since creation."),
        # As cert-manager's Certificate shows its Ready message (`Status`, priority 1): what a
        # failure is (the refused child and the API server's text) without `kubectl describe`.
        PrinterColumn(
            "Message",
            '.status.conditions[?(@.type=="Ready")].message',
            "string",
            "Message of the Ready condition: why it is not ready (e.g. the refused child and the "
            "API server's message), or the replica counts.",
            priority=1,
        ),
    ),
    scale={
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    },
    name_rules={"maxLength": NAME_MAX_LENGTH, "pattern": NAME_PATTERN},
)
"""The one CRD of the dsv4.io group."""


def crd_schema(info: CRDInfo = DEEPSEEK_V4_DEPLOYMENT) -> Schema:
    """Return the `openAPIV3Schema` of the kind: apiVersion, kind, metadata, spec, status."""
    return {
        "description": info.description,
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "description": (
                    "APIVersion defines the versioned schema of this representation of an object."
                ),
                "type": "string",
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this "
                "object represents.",
                "type": "string",
            },
            "metadata": (
                {
                    "type": "object",
                    "properties": {
                        "name": {
                            "description": (
                                "Name of the resource; its children are named after it "
                                "(a DNS-1035 label, short enough for their names)."
                            ),
                            "type": "string",
                            **info.name_rules,
                        }
                    },
                }
                if info.name_rules
                else {"type": "object"}
            ),
            "spec": structural_schema(info.spec_model),
            "status": structural_schema(info.status_model),
        },
    }


def crd_manifest(info: CRDInfo = DEEPSEEK_V4_DEPLOYMENT) -> dict[str, Any]:
    """Return the `apiextensions.k8s.io/v1` CustomResourceDefinition object for `info`."""
    version: dict[str, Any] = {
        "name": info.version,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": crd_schema(info)},
        "subresources": {"status": {}, **({"scale": dict(info.scale)} if info.scale else {})},
    }
    if info.printer_columns:
        version["additionalPrinterColumns"] = [
            {
                "name": column.name,
                "type": column.type,
                "jsonPath": column.json_path,
                "description": column.description,
                **({"priority": column.priority} if column.priority else {}),
            }
            for column in info.printer_columns
        ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.name},
        "spec": {
            "group": info.group,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
            },
            "scope": "Namespaced" if info.namespaced else "Cluster",
            "versions": [version],
        },
    }


def schema_gaps(served: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    """What `ours` defines that the served CRD lacks: versions, and schema property paths.

    The API server prunes, from every object it reads or writes, the fields its CRD's schema
    does not list (structural schemas, `apiextensions.k8s.io/v1`). An older CRD applied over
    this operator's (another Helm release of an older chart, a GitOps revert) hides those
    fields at once and deletes them for good at the next write of each object, which this
    operator makes on every reconcile (status, kopf's annotations). So the operator checks for
    gaps before it writes and stops while there are any (`handlers.lifecycle`).

    Args:
        served: the CustomResourceDefinition as the API server returns it.
        ours: `crd_manifest()`, the CRD this operator was built with.

    Returns:
        `version v1alpha1` for a version not served, then `spec.placement (v1alpha1)` for each
        property path missing from a served version (`[]` steps into array items, `{}` into
        map values); the first missing level of a path only. Empty when nothing is missing.
    """
    served_versions = {v.get("name"): v for v in served.get("spec", {}).get("versions", [])}
    gaps: list[str] = []
    for version in ours["spec"]["versions"]:
        name = version["name"]
        live = served_versions.get(name)
        if live is None or not live.get("served", False):
            gaps.append(f"version {name}")
            continue
        live_schema = live.get("schema", {}).get("openAPIV3Schema", {})
        ours_schema = version["schema"]["openAPIV3Schema"]
        gaps += [f"{path} ({name})" for path in _missing(ours_schema, live_schema, "")]
    return gaps


def _missing(ours: Mapping[str, Any], live: Mapping[str, Any], path: str) -> list[str]:
    """Property paths under `ours` that `live` (a served schema node) does not define."""
    found: list[str] = []
    live_properties = live.get("properties") or {}
    for name, child in (ours.get("properties") or {}).items():
        at = f"{path}.{name}" if path else name
        if name in live_properties:
            found += _missing(child, live_properties[name], at)
        elif not live.get("x-kubernetes-preserve-unknown-fields"):
            found.append(at)
    for key, step in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(ours.get(key), Mapping):
            live_child = live.get(key)
            if isinstance(live_child, Mapping):
                found += _missing(ours[key], live_child, f"{path}{step}")
            elif not (live.get("x-kubernetes-preserve-unknown-fields") or live_child is True):
                found.append(f"{path}{step}")
    return found
