"""The dsv4.io API: pydantic types (source of truth), the CRD built from them, parse errors.

`parse_spec` / `parse_deployment` are the operator's entry points; `crd_manifest` is what
`dsv4 crdgen` writes. Everything exported here is public API, pinned by a test.
"""

from dsv4_operator.api.crd import DEEPSEEK_V4_DEPLOYMENT, CRDInfo, PrinterColumn, crd_manifest
from dsv4_operator.api.errors import FieldError, InvalidSpecError
from dsv4_operator.api.meta import Condition
from dsv4_operator.api.names import NAME_MAX_LENGTH, NAME_PATTERN, check_name, check_name_for_groups
from dsv4_operator.api.v1alpha1 import (
    API_VERSION,
    GROUP,
    KIND,
    MAX_MODEL_LEN_LIMIT,
    PLURAL,
    VERSION,
    Autoscaling,
    CostSpec,
    CostStatus,
    CustomGpuType,
    DeepSeekV4Deployment,
    DeepSeekV4DeploymentSpec,
    DeepSeekV4DeploymentStatus,
    EngineSpec,
    GpuSpec,
    LoadTarget,
    MemoryBreakdown,
    ModelSource,
    Parallelism,
    PlanLayout,
    PlanStatus,
    Rollout,
    ScalingDecision,
    parse_deployment,
    parse_spec,
    quantity_bytes,
)

__all__ = [
    "API_VERSION",
    "DEEPSEEK_V4_DEPLOYMENT",
    "GROUP",
    "KIND",
    "MAX_MODEL_LEN_LIMIT",
    "NAME_MAX_LENGTH",
    "NAME_PATTERN",
    "PLURAL",
    "VERSION",
    "Autoscaling",
    "CRDInfo",
    "Condition",
    "CostSpec",
    "CostStatus",
    "CustomGpuType",
    "DeepSeekV4Deployment",
    "DeepSeekV4DeploymentSpec",
    "DeepSeekV4DeploymentStatus",
    "EngineSpec",
    "FieldError",
    "GpuSpec",
    "InvalidSpecError",
    "LoadTarget",
    "MemoryBreakdown",
    "ModelSource",
    "Parallelism",
    "PlanLayout",
    "PlanStatus",
    "PrinterColumn",
    "Rollout",
    "ScalingDecision",
    "check_name",
    "check_name_for_groups",
    "crd_manifest",
    "parse_deployment",
    "parse_spec",
    "quantity_bytes",
]
