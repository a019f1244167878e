"""The public surface of the api package is explicit and pinned."""

import importlib

import pytest

import dsv4_operator.api
import dsv4_operator.api.v1alpha1

API_EXPORTS = {
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
}

V1ALPHA1_EXPORTS = {
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
    "PlanLayout",
    "Placement",
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
}

MODULES = [
    "dsv4_operator.api.crd",
    "dsv4_operator.api.errors",
    "dsv4_operator.api.meta",
    "dsv4_operator.api.schema",
    "dsv4_operator.api.v1alpha1.deployment",
    "dsv4_operator.api.v1alpha1.engine",
    "dsv4_operator.api.v1alpha1.enums",
    "dsv4_operator.api.v1alpha1.gpu",
    "dsv4_operator.api.v1alpha1.quantities",
    "dsv4_operator.api.v1alpha1.scaling",
    "dsv4_operator.api.v1alpha1.source",
    "dsv4_operator.api.v1alpha1.spec",
    "dsv4_operator.api.v1alpha1.status",
    "dsv4_operator.crdgen",
]


def test_api_package_exports() -> None:
    assert set(dsv4_operator.api.__all__) == API_EXPORTS
    assert len(dsv4_operator.api.__all__) == len(API_EXPORTS)


def test_v1alpha1_package_exports() -> None:
    assert set(dsv4_operator.api.v1alpha1.__all__) == V1ALPHA1_EXPORTS


@pytest.mark.parametrize("name", MODULES)
def test_every_module_declares_all_and_its_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    for symbol in exported:
        assert hasattr(module, symbol), f"{name}.{symbol}"
        assert not symbol.startswith("_")
