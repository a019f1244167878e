"""Enumerations shared by the CRD, the planner and the CLIs.

Every name here is part of the public API (CRD enum values, `dsv4 plan` flags, plan JSON), so
values are only ever added, never renamed.
"""

from typing import Literal, get_args

__all__ = [
    "GPU_TYPE_NAMES",
    "KV_CACHE_DTYPES",
    "MODEL_NAMES",
    "WEIGHTS_FORMATS",
    "GpuTypeName",
    "KvCacheDtype",
    "ModelName",
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
