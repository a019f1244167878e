"""Enumerations shared by the CRD, the planner and the CLIs.

Every name here is part of the public API (CRD enum values, `dsv4 plan` flags, plan JSON), so
values are only ever added, never renamed.
"""

from typing import Literal, get_args

__all__ = [
    "AUTOSCALING_MODES",
    "CONDITION_TYPES",
    "GPU_TYPE_NAMES",
    "KV_CACHE_DTYPES",
    "MODEL_NAMES",
    "ROUTED_EXPERTS",
    "WEIGHTS_FORMATS",
    "AutoscalingMode",
    "ConditionStatus",
    "ConditionType",
    "GpuTypeName",
    "GpuVendor",
    "KvCacheDtype",
    "ModelName",
    "ServiceType",
    "SpeculativeMethod",
    "TaintEffect",
    "TolerationOperator",
    "WeightsFormat",
]

ModelName = Literal["flash", "pro"]
"""DeepSeek-V4 variant: `flash` (284B total / 13B active) or `pro` (1.6T / 49B)."""

WeightsFormat = Literal["official", "nvfp4", "fp8", "bf16", "int4"]
"""Checkpoint format of the weights.

- `official`: the published checkpoint; routed experts MXFP4 (e2m1 + UE8M0 scale per 32 values),
  other linears block-FP8 (e4m3, UE8M0 scale per 128x128 block), BF16 embeddings/router/norms.
- `nvfp4`: NVIDIA's repack; routed experts NVFP4 (e2m1 + e4m3 scale per 16 values), rest official.
- `fp8`: routed experts block-FP8 too (sgl-project FP8 repack, or the -Base checkpoints).
- `bf16`: every linear in BF16 (dequantised checkpoint).
- `int4`: w4a16 group-quantised experts and linears (group 128, BF16 scales), BF16 embeddings.
"""

KvCacheDtype = Literal["fp8", "bf16"]
"""KV cache dtype: `fp8` (vLLM `fp8_ds_mla`, 584 B per entry) or `bf16` (1024 B per entry)."""

GpuTypeName = Literal[
    "h100-80gb",
    "h200-141gb",
    "h20-96gb",
    "a100-80gb",
    "l40s-48gb",
    "l20-48gb",
    "rtx-a6000-48gb",
    "rtx-4090-24gb",
    "rtx-5090-32gb",
    "gh200-96gb",
    "b200-180gb",
    "gb200-186gb",
    "mi300x-192gb",
    "mi355x-288gb",
]
"""GPU types in the built-in catalog (lowercase, with memory; matched case-insensitively)."""

MODEL_NAMES: tuple[str, ...] = get_args(ModelName)
WEIGHTS_FORMATS: tuple[str, ...] = get_args(WeightsFormat)
KV_CACHE_DTYPES: tuple[str, ...] = get_args(KvCacheDtype)
GPU_TYPE_NAMES: tuple[str, ...] = get_args(GpuTypeName)

ROUTED_EXPERTS: dict[str, int] = {"flash": 256, "pro": 384}
"""Routed experts per MoE layer (`n_routed_experts` in each model's config.json; see
`deepseek-v4-facts.md`). An expert-parallel size must divide it."""

AutoscalingMode = Literal["native", "keda", "hpa"]
"""Who drives `spec.replicas`: `native` (the operator's own token-rate loop through `/scale`),
`keda` (a KEDA ScaledObject on the token-rate metric), or `hpa` (a HorizontalPodAutoscaler on the
same metric through a metrics adapter; cannot scale to zero)."""

ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer"]
"""Kubernetes Service type of the OpenAI-compatible endpoint."""

SpeculativeMethod = Literal["mtp"]
"""Speculative decoding method: `mtp`, DeepSeek-V4's own multi-token-prediction layer."""

GpuVendor = Literal["nvidia", "amd"]
"""GPU vendor: decides the device plugin resource (`nvidia.com/gpu`, `amd.com/gpu`) and kernels."""

TolerationOperator = Literal["Exists", "Equal"]
"""Operator of a Kubernetes toleration."""

TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
"""Taint effect matched by a Kubernetes toleration."""

ConditionType = Literal["Ready", "Planned", "Progressing", "Available", "Degraded", "ScalingActive"]
"""Condition types in `status.conditions`.

- `Ready`: the summary; False with reason `InvalidSpec` when the spec fails validation.
- `Planned`: a GPU type and layout were found for the spec (`status.plan`).
- `Progressing`: a rollout is creating or replacing replica groups.
- `Available`: at least one replica serves requests.
- `Degraded`: fewer ready replicas than wanted, or a replica group keeps failing.
- `ScalingActive`: the autoscaler (native, or the KEDA ScaledObject or HPA it repeats) is able
  to compute and apply replica counts; Unknown in keda or hpa mode until KEDA or the HPA
  controller has reported on its object (`AwaitingKEDA`, `AwaitingHPA`); absent while
  autoscaling is disabled.
"""

ConditionStatus = Literal["True", "False", "Unknown"]
"""Status of a condition, as in Kubernetes' `metav1.Condition`."""

AUTOSCALING_MODES: tuple[str, ...] = get_args(AutoscalingMode)
CONDITION_TYPES: tuple[str, ...] = get_args(ConditionType)
