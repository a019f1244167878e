"""dsv4.io/v1alpha1: the DeepSeekV4Deployment types (pydantic, the source of the CRD)."""

from dsv4_operator.api.v1alpha1.deployment import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    DeepSeekV4Deployment,
    parse_deployment,
    parse_spec,
)
from dsv4_operator.api.v1alpha1.engine import (
    OPERATOR_OWNED_FLAGS,
    EngineSpec,
    EnvVar,
    EnvVarSource,
    KeyRef,
    ResourceRequirements,
    SpeculativeDecoding,
)
from dsv4_operator.api.v1alpha1.gpu import CustomGpuType, GpuSpec, Toleration
from dsv4_operator.api.v1alpha1.placement import Placement
from dsv4_operator.api.v1alpha1.pod import PodSettings
from dsv4_operator.api.v1alpha1.quantities import parse_quantity, quantity_bytes, usd_micros
from dsv4_operator.api.v1alpha1.scaling import Autoscaling, Rollout
from dsv4_operator.api.v1alpha1.source import (
    HostPathSource,
    HuggingFaceSource,
    ModelSource,
    PvcSource,
    SecretKeyRef,
)
from dsv4_operator.api.v1alpha1.spec import (
    MAX_MODEL_LEN_LIMIT,
    CostSpec,
    DeepSeekV4DeploymentSpec,
    GpuPrice,
    LoadTarget,
    Parallelism,
    ServiceSpec,
)
from dsv4_operator.api.v1alpha1.status import (
    CostStatus,
    DeepSeekV4DeploymentStatus,
    GpuTypeRejection,
    MemoryBreakdown,
    PlanLayout,
    PlanStatus,
    ScalingDecision,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "MAX_MODEL_LEN_LIMIT",
    "OPERATOR_OWNED_FLAGS",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "Autoscaling",
    "CostSpec",
    "CostStatus",
    "CustomGpuType",
    "DeepSeekV4Deployment",
    "DeepSeekV4DeploymentSpec",
    "DeepSeekV4DeploymentStatus",
    "EngineSpec",
    "EnvVar",
    "EnvVarSource",
    "GpuPrice",
    "GpuSpec",
    "GpuTypeRejection",
    "HostPathSource",
    "HuggingFaceSource",
    "KeyRef",
    "LoadTarget",
    "MemoryBreakdown",
    "ModelSource",
    "Parallelism",
    "Placement",
    "PlanLayout",
    "PlanStatus",
    "PodSettings",
    "PvcSource",
    "ResourceRequirements",
    "Rollout",
    "ScalingDecision",
    "SecretKeyRef",
    "ServiceSpec",
    "SpeculativeDecoding",
    "Toleration",
    "parse_deployment",
    "parse_quantity",
    "parse_spec",
    "quantity_bytes",
    "usd_micros",
]
