"""The CustomResourceDefinition of DeepSeekV4Deployment, built from the pydantic types.

`CRDInfo` plays the role of kubebuilder's root markers (names, scope, subresources, printer
columns); `crd_manifest` assembles the `apiextensions.k8s.io/v1` object that `dsv4 crdgen` writes.
"""

from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel

from dsv4_operator.api.names import NAME_MAX_LENGTH, NAME_PATTERN
from dsv4_operator.api.schema import Schema, structural_schema
from dsv4_operator.api.v1alpha1 import deployment
from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.api.v1alpha1.status import DeepSeekV4DeploymentStatus

__all__ = ["DEEPSEEK_V4_DEPLOYMENT", "CRDInfo", "PrinterColumn", "crd_manifest", "crd_schema"]


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
