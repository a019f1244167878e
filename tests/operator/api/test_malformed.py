"""Malformed DeepSeekV4Deployments: each is refused with a message naming the field and the limit.

Every case goes through both gates the operator has:

- the API server (offline: defaults + JSON Schema + CEL, see conftest.py), where `crd` lists
  substrings its message must contain, or None when the schema lets the resource through;
- the operator's pydantic parse (`parse_deployment`), which must refuse every case, since on a
  cluster without CEL (Kubernetes < 1.25) it is the only cross-field check; `py` lists substrings
  of its `InvalidSpecError` message.
"""

import copy
from dataclasses import dataclass
from typing import Any

import pytest

from dsv4_operator.api import InvalidSpecError, parse_deployment

DELETE = object()

BASE: dict[str, Any] = {
    "apiVersion": "dsv4.io/v1alpha1",
    "kind": "DeepSeekV4Deployment",
    "metadata": {"name": "bad", "namespace": "default"},
    "spec": {"model": "flash", "gpu": {"types": ["h100-80gb"], "gpusPerNode": 8}},
}


@dataclass(frozen=True)
class Case:
    """A malformed resource: `patch` maps dotted paths to values (or DELETE) on BASE."""

    id: str
    patch: dict[str, Any]
    crd: tuple[str, ...] | None
    py: tuple[str, ...]

    def body(self) -> dict[str, Any]:
        body = copy.deepcopy(BASE)
        for dotted, value in self.patch.items():
            *parents, leaf = dotted.split(".")
            node = body
            for part in parents:
                node = node.setdefault(part, {})
            if value is DELETE:
                del node[leaf]
            else:
                node[leaf] = value
        return body


S = "spec"
CASES = [
    # --- model, format, context
    Case(
        "unknown-model",
        {"spec.model": "ultra"},
        ("spec.model", "not one of ['flash', 'pro']"),
        ("spec.model", "'flash' or 'pro'"),
    ),
    Case(
        "missing-model",
        {"spec.model": DELETE},
        ("spec", "'model' is a required property"),
        ("spec.model", "Field required"),
    ),
    Case(
        "unknown-weights-format",
        {"spec.weightsFormat": "fp16"},
        ("spec.weightsFormat", "not one of"),
        ("spec.weightsFormat", "'int4'"),
    ),
    Case(
        "unknown-kv-dtype",
        {"spec.kvCacheDtype": "int8"},
        ("spec.kvCacheDtype", "not one of"),
        ("spec.kvCacheDtype", "'fp8' or 'bf16'"),
    ),
    Case(
        "context-over-1m",
        {"spec.maxModelLen": 1_048_577},
        ("spec.maxModelLen", "greater than the maximum of 1048576"),
        ("spec.maxModelLen", "1048576"),
    ),
    Case(
        "context-zero",
        {"spec.maxModelLen": 0},
        ("spec.maxModelLen", "less than the minimum of 1"),
        ("spec.maxModelLen", "between 1 and 1048576"),
    ),
    Case(
        "context-word",
        {"spec.maxModelLen": "max"},
        ("spec.maxModelLen", "'^auto$'"),
        ("spec.maxModelLen", '"auto"'),
    ),
    Case(
        "context-float",
        {"spec.maxModelLen": 1.5},
        ("spec.maxModelLen", "not valid under any"),
        ("spec.maxModelLen", "1048576"),
    ),
    Case(
        "max-num-seqs-zero",
        {"spec.maxNumSeqs": 0},
        ("spec.maxNumSeqs", "minimum of 1"),
        ("spec.maxNumSeqs", "greater than or equal to 1"),
    ),
    Case(
        "max-num-batched-tokens-small",
        {"spec.maxNumBatchedTokens": 32},
        ("spec.maxNumBatchedTokens", "minimum of 64"),
        ("spec.maxNumBatchedTokens", "greater than or equal to 64"),
    ),
    Case(
        "gpu-util-100",
        {"spec.gpuMemoryUtilizationPercent": 100},
        ("spec.gpuMemoryUtilizationPercent", "maximum of 99"),
        ("spec.gpuMemoryUtilizationPercent", "less than or equal to 99"),
    ),
    Case(
        "gpu-util-fraction",
        {"spec.gpuMemoryUtilizationPercent": 0.9},
        ("spec.gpuMemoryUtilizationPercent", "not of type 'integer'"),
        ("spec.gpuMemoryUtilizationPercent", "valid integer"),
    ),
    # --- unknown fields and wrong types
    Case(
        "unknown-spec-field",
        {"spec.gpus": 8},
        ("spec", "'gpus' was unexpected"),
        ("spec.gpus", "unknown field"),
    ),
    Case(
        "unknown-gpu-field",
        {"spec.gpu.count": 8},
        ("spec.gpu", "'count' was unexpected"),
        ("spec.gpu.count", "unknown field"),
    ),
    Case(
        "snake-case-field",
        {"spec.max_model_len": 4096},
        ("spec", "'max_model_len' was unexpected"),
        ("spec.max_model_len", "unknown field"),
    ),
    Case(
        "replicas-string",
        {"spec.replicas": "two"},
        ("spec.replicas", "not of type 'integer'"),
        ("spec.replicas", "valid integer"),
    ),
    Case(
        "replicas-negative",
        {"spec.replicas": -1},
        ("spec.replicas", "minimum of 0"),
        ("spec.replicas", "greater than or equal to 0"),
    ),
    Case(
        "paused-string",
        {"spec.paused": "yes"},
        ("spec.paused", "not of type 'boolean'"),
        ("spec.paused", "valid boolean"),
    ),
    # --- gpu
    Case(
        "missing-gpu",
        {"spec.gpu": DELETE},
        ("spec", "'gpu' is a required property"),
        ("spec.gpu", "Field required"),
    ),
    Case(
        "gpu-types-empty",
        {"spec.gpu.types": []},
        ("spec.gpu.types", "non-empty"),
        ("spec.gpu.types", "at least 1 item"),
    ),
    Case(
        "gpu-type-unknown",
        {"spec.gpu.types": ["h100-81gb"]},
        ("spec.gpu", "built-in GPU type", "h100-80gb", "customTypes"),
        ("spec.gpu", "h100-81gb", "unknown"),
    ),
    Case(
        "gpu-type-bad-name",
        {"spec.gpu.types": ["H100_80GB"]},
        ("spec.gpu.types[0]", "does not match"),
        ("spec.gpu.types[0]", "pattern"),
    ),
    Case(
        "gpu-type-duplicate",
        {"spec.gpu.types": ["h100-80gb", "H100-80GB"]},
        None,
        ("spec.gpu", "unique"),
    ),
    Case(
        "gpus-per-node-zero",
        {"spec.gpu.gpusPerNode": 0},
        ("spec.gpu.gpusPerNode", "minimum of 1"),
        ("spec.gpu.gpusPerNode", "greater than or equal to 1"),
    ),
    Case(
        "gpus-per-node-32",
        {"spec.gpu.gpusPerNode": 32},
        ("spec.gpu.gpusPerNode", "maximum of 16"),
        ("spec.gpu.gpusPerNode", "less than or equal to 16"),
    ),
    Case(
        "gpus-per-node-string",
        {"spec.gpu.gpusPerNode": "8"},
        ("spec.gpu.gpusPerNode", "not of type 'integer'"),
        ("spec.gpu.gpusPerNode", "valid integer"),
    ),
    Case(
        "max-nodes-zero",
        {"spec.gpu.maxNodes": 0},
        ("spec.gpu.maxNodes", "minimum of 1"),
        ("spec.gpu.maxNodes", "greater than or equal to 1"),
    ),
    Case(
        "budget-zero",
        {"spec.gpu.budget": 0},
        ("spec.gpu.budget", "minimum of 1"),
        ("spec.gpu.budget", "greater than or equal to 1"),
    ),
    Case(
        "custom-type-shadows-catalog",
        {
            "spec.gpu.customTypes": [
                {
                    "name": "h100-80gb",
                    "memory": "80Gi",
                    "memoryBandwidthGbps": 3350,
                    "denseBf16Tflops": 989,
                }
            ]
        },
        ("spec.gpu.customTypes", "must not be a built-in GPU type name"),
        ("spec.gpu", "built-in GPU type names"),
    ),
    Case(
        "custom-type-tiny-memory",
        {
            "spec.gpu.types": ["my-gpu"],
            "spec.gpu.customTypes": [
                {
                    "name": "my-gpu",
                    "memory": "4Gi",
                    "memoryBandwidthGbps": 900,
                    "denseBf16Tflops": 100,
                }
            ],
        },
        None,
        ("spec.gpu.customTypes[0].memory", "between 8Gi and 1Ti"),
    ),
    Case(
        "custom-type-missing-bandwidth",
        {
            "spec.gpu.types": ["my-gpu"],
            "spec.gpu.customTypes": [{"name": "my-gpu", "memory": "48Gi", "denseBf16Tflops": 100}],
        },
        ("spec.gpu.customTypes[0]", "'memoryBandwidthGbps' is a required property"),
        ("spec.gpu.customTypes[0].memoryBandwidthGbps", "Field required"),
    ),
    Case(
        "toleration-bad-operator",
        {"spec.gpu.tolerations": [{"key": "k", "operator": "Maybe"}]},
        ("spec.gpu.tolerations[0].operator", "not one of ['Exists', 'Equal']"),
        ("spec.gpu.tolerations[0].operator", "'Exists' or 'Equal'"),
    ),
    Case(
        "toleration-empty-key-equal",
        {"spec.gpu.tolerations": [{"operator": "Equal", "value": "x"}]},
        ("spec.gpu.tolerations[0]", "an empty key needs operator Exists"),
        ("spec.gpu.tolerations[0]", "an empty key needs operator Exists"),
    ),
    Case(  # bad-CR review: "" passed both gates; Kubernetes refuses the pods
        "toleration-blank-key-equal",
        {"spec.gpu.tolerations": [{"key": "", "operator": "Equal", "value": "x"}]},
        ("spec.gpu.tolerations[0]", "an empty key needs operator Exists"),
        ("spec.gpu.tolerations[0]", "an empty key needs operator Exists"),
    ),
    Case(
        "toleration-exists-with-value",
        {"spec.gpu.tolerations": [{"key": "k", "operator": "Exists", "value": "x"}]},
        ("spec.gpu.tolerations[0]", "operator Exists takes no value"),
        ("spec.gpu.tolerations[0]", "operator Exists takes no value"),
    ),
    Case(
        "node-selector-bad-key",
        {"spec.gpu.nodeSelector": {"bad key!": "x"}},
        None,
        ("spec.gpu.nodeSelector", "not a Kubernetes label key"),
    ),
    # --- parallelism
    Case(
        "tensor-not-dividing-node",
        {"spec.parallelism": {"tensor": 3}},
        ("spec", "spec.parallelism.tensor must divide spec.gpu.gpusPerNode"),
        ("spec", "parallelism.tensor (3) must divide gpu.gpusPerNode (8)"),
    ),
    Case(
        "tensor-zero",
        {"spec.parallelism": {"tensor": 0}},
        ("spec.parallelism.tensor", "minimum of 1"),
        ("spec.parallelism.tensor", "greater than or equal to 1"),
    ),
    Case(
        "layout-exceeds-nodes",
        {"spec.gpu.maxNodes": 2, "spec.parallelism": {"tensor": 8, "data": 4, "pipeline": 1}},
        ("spec", "<= spec.gpu.gpusPerNode x spec.gpu.maxNodes"),
        ("spec", "32 GPUs per replica exceeds gpu.gpusPerNode x gpu.maxNodes = 16"),
    ),
    Case(
        "layout-partial-nodes",
        {"spec.gpu.maxNodes": 2, "spec.parallelism": {"tensor": 4, "data": 3, "pipeline": 1}},
        ("spec", "multiple or a divisor of spec.gpu.gpusPerNode"),
        ("spec", "12 GPUs per replica must be a multiple or a divisor of gpu.gpusPerNode (8)"),
    ),
    Case(
        "expert-not-tp-times-dp",
        {"spec.parallelism": {"tensor": 1, "data": 8, "expert": 16}},
        ("spec", "spec.parallelism.expert must be 1 or tensor x data"),
        ("spec", "parallelism.expert (16) must be 1 or tensor x data (8)"),
    ),
    Case(
        "expert-not-dividing-experts",
        {"spec.parallelism": {"expert": 5}},
        ("spec", "must divide the routed experts (256 for flash, 384 for pro)"),
        ("spec", "must divide the 256 routed experts of flash"),
    ),
    # --- autoscaling
    Case(
        "min-over-max",
        {
            "spec.autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 2},
            "spec.replicas": 3,
        },
        ("spec.autoscaling", "minReplicas must be <= spec.autoscaling.maxReplicas"),
        ("spec.autoscaling", "minReplicas (3) must be <= maxReplicas (2)"),
    ),
    Case(
        "replicas-above-autoscaling-max",
        {
            "spec.autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4},
            "spec.replicas": 5,
        },
        ("spec", "spec.replicas must be at most spec.autoscaling.maxReplicas"),
        ("spec", "replicas (5) must be at most autoscaling.maxReplicas (4)"),
    ),
    Case(
        "autoscaling-replicas-zero-above-min-zero",
        # An HPA does not scale a target at zero replicas unless its minimum is 0.
        {
            "spec.autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4},
            "spec.replicas": 0,
        },
        ("spec", "at least 1 unless spec.autoscaling.minReplicas is 0"),
        ("spec", "replicas 0 with autoscaling.minReplicas 2: set replicas to 1 or more"),
    ),
    Case(
        "scale-to-zero-without-idle-window",
        {"spec.autoscaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 2}},
        ("spec.autoscaling", "needs spec.autoscaling.scaleToZeroIdleSeconds"),
        ("spec.autoscaling", "scaleToZeroIdleSeconds"),
    ),
    Case(
        "hpa-scale-to-zero",
        {
            "spec.autoscaling": {
                "enabled": True,
                "mode": "hpa",
                "minReplicas": 0,
                "maxReplicas": 2,
                "scaleToZeroIdleSeconds": 600,
            }
        },
        ("spec.autoscaling", "hpa cannot scale to zero"),
        ("spec.autoscaling", "hpa cannot scale to zero"),
    ),
    Case(
        "autoscaling-unknown-mode",
        {"spec.autoscaling": {"mode": "vpa"}},
        ("spec.autoscaling.mode", "not one of ['native', 'keda', 'hpa']"),
        ("spec.autoscaling.mode", "'native', 'keda' or 'hpa'"),
    ),
    Case(
        "kv-threshold-over-100",
        {"spec.autoscaling": {"kvCacheUsagePercentThreshold": 120}},
        ("spec.autoscaling.kvCacheUsagePercentThreshold", "maximum of 100"),
        ("spec.autoscaling.kvCacheUsagePercentThreshold", "less than or equal to 100"),
    ),
    Case(
        "negative-stabilization",
        {"spec.autoscaling": {"scaleDownStabilizationSeconds": -5}},
        ("spec.autoscaling.scaleDownStabilizationSeconds", "minimum of 0"),
        ("spec.autoscaling.scaleDownStabilizationSeconds", "greater than or equal to 0"),
    ),
    Case(
        "idle-window-too-short",
        {"spec.autoscaling": {"minReplicas": 0, "scaleToZeroIdleSeconds": 10}},
        ("spec.autoscaling.scaleToZeroIdleSeconds", "minimum of 60"),
        ("spec.autoscaling.scaleToZeroIdleSeconds", "greater than or equal to 60"),
    ),
    # --- rollout
    Case(
        "rollout-cannot-progress",
        {"spec.rollout": {"maxSurge": 0, "maxUnavailable": "0%"}},
        ("spec.rollout", "must not both be 0"),
        ("spec.rollout", "must not both be 0"),
    ),
    Case(
        "rollout-percent-over-100",
        {"spec.rollout": {"maxUnavailable": "150%"}},
        ("spec.rollout.maxUnavailable", "does not match"),
        ("spec.rollout.maxUnavailable", "0% to 100%"),
    ),
    Case(
        "rollout-negative-surge",
        {"spec.rollout": {"maxSurge": -1}},
        ("spec.rollout.maxSurge", "minimum of 0"),
        ("spec.rollout.maxSurge", ">= 0"),
    ),
    Case(
        "rollout-negative-partition",
        {"spec.rollout": {"partition": -1}},
        ("spec.rollout.partition", "minimum of 0"),
        ("spec.rollout.partition", "greater than or equal to 0"),
    ),
    # --- quantities
    Case(
        "shm-not-a-quantity",
        {"spec.shmSize": "16 GB"},
        ("spec.shmSize", "does not match"),
        ("spec.shmSize", "not a Kubernetes quantity"),
    ),
    Case("shm-too-small", {"spec.shmSize": "1Mi"}, None, ("spec.shmSize", "between 64Mi and 1Ti")),
    Case("shm-negative", {"spec.shmSize": "-1Gi"}, None, ("spec.shmSize", "between 64Mi and 1Ti")),
    Case(
        "memory-request-not-a-quantity",
        {"spec.resources": {"requests": {"memory": "lots"}}},
        ("spec.resources.requests.memory", "does not match"),
        ("spec.resources.requests.memory", "not a Kubernetes quantity"),
    ),
    # --- engine, speculative decoding, service, cost, load
    Case(
        "extra-arg-owned-flag",
        {"spec.engine": {"extraArgs": ["--tensor-parallel-size=4"]}},
        ("spec.engine", "must not set flags the operator derives", "--tensor-parallel-size"),
        ("spec.engine.extraArgs", "--tensor-parallel-size is set by the operator"),
    ),
    Case(
        "extra-arg-runtime-flag",
        {"spec.engine": {"extraArgs": ["--enforce-eager", "--block-size=64"]}},
        ("spec.engine", "or the runtime sets", "--block-size"),
        ("spec.engine.extraArgs", "--block-size is set by the runtime"),
    ),
    Case(
        "extra-arg-disables-the-metrics",
        {"spec.engine": {"extraArgs": ["--enable-prefix-caching", "--disable-log-stats"]}},
        ("spec.engine", "that break how a group runs", "--disable-log-stats"),
        ("spec.engine.extraArgs", "--disable-log-stats is not supported", "no vllm:* metrics"),
    ),
    Case(
        "gpu-priced-twice-in-two-cases",
        {
            "spec.cost": {
                "gpuHourlyPrices": [
                    {"gpuType": "h100-80gb", "usdPerGpuHour": "2.49"},
                    {"gpuType": "H100-80GB", "usdPerGpuHour": "1.00"},
                ]
            }
        },
        None,
        ("spec.cost.gpuHourlyPrices", "['h100-80gb'] priced more than once"),
    ),
    Case(
        "env-sets-the-hub-cache",
        {"spec.engine": {"env": [{"name": "HF_HOME", "value": "/tmp/hf"}]}},
        ("spec", "HF_HOME is set by the operator for a Hugging Face source"),
        ("spec", "HF_HOME is set by the operator for a Hugging Face source"),
    ),
    Case(
        "env-and-token-ref-both-set-the-hub-token",
        {
            "spec.modelSource": {
                "huggingFace": {
                    "repo": "deepseek-ai/DeepSeek-V4-Flash",
                    "tokenSecretRef": {"name": "hf"},
                }
            },
            "spec.engine": {"env": [{"name": "HF_TOKEN", "value": "x"}]},
        },
        None,
        ("spec", "HF_TOKEN is set by the operator from modelSource.huggingFace.tokenSecretRef"),
    ),
    Case(
        "host-path-with-parent-segment",
        {"spec.modelSource": {"hostPath": {"path": "/models/../etc"}}},
        None,
        ("spec.modelSource.hostPath.path", "must not contain '..' segments"),
    ),
    Case(
        "canary-partition-beyond-the-replicas",
        {"spec.replicas": 2, "spec.rollout": {"partition": 5}},
        ("spec", "spec.rollout.partition (a canary) must be at most spec.replicas"),
        ("spec", "rollout.partition (5) must be at most replicas (2): groups below it keep"),
    ),
    Case(
        "canary-partition-with-autoscaling",
        {
            "spec.rollout": {"partition": 1},
            "spec.autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4},
        },
        ("spec", "needs autoscaling disabled"),
        ("spec", "rollout.partition (1, a canary) needs autoscaling disabled"),
    ),
    Case(
        "service-port-is-the-admin-port",
        {"spec.service": {"port": 8081}},
        ("spec.service", "must not be 8081 on a ClusterIP Service: it is the runtime's admin port"),
        ("spec.service", "port must not be 8081 on a ClusterIP Service"),
    ),
    Case(
        "extra-arg-short-flag",
        {"spec.engine": {"extraArgs": ["-tp", "4"]}},
        ("spec.engine.extraArgs[0]", "does not match"),
        (
            "spec.engine.extraArgs",
            "extraArgs[0] '-tp'",
            "write the long name",
            "extraArgs[1] '4'",
            "put a value in its flag's entry",
        ),
    ),
    Case(
        "engine-image-with-space",
        {"spec.engine": {"image": "my image"}},
        ("spec.engine.image", "does not match"),
        ("spec.engine.image", "pattern"),
    ),
    Case(
        "engine-image-uppercase-repository-empty-tag",
        {"spec.engine": {"image": "Foo/BAR:@@"}},
        ("spec.engine.image", "does not match"),
        ("spec.engine.image", "pattern"),
    ),
    Case(
        "resources-negative-cpu",
        {"spec.resources": {"requests": {"cpu": "-1"}}},
        None,
        ("spec.resources", "requests.cpu (-1) must be greater than or equal to 0"),
    ),
    Case(
        "pvc-path-leaves-the-volume",
        {"spec.modelSource": {"pvc": {"claimName": "w", "path": "/../../etc"}}},
        None,
        ("spec.modelSource.pvc.path", "must not contain '..' segments"),
    ),
    Case(
        "env-sets-the-drain-token",
        {"spec.engine": {"env": [{"name": "DSV4_RUNTIME_ADMIN_TOKEN", "value": "guess"}]}},
        ("spec.engine.env[0]", "DSV4_RUNTIME_ADMIN_TOKEN is set by the operator"),
        ("spec.engine.env[0].name", "DSV4_RUNTIME_ADMIN_TOKEN is set by the operator"),
    ),
    Case(
        "env-turns-off-the-cuda-graph-estimate",
        {
            "spec.engine": {
                "env": [{"name": "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS", "value": "0"}]
            }
        },
        ("spec.engine.env[0]", "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS", "only be 1"),
        ("spec.engine.env[0]", "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS", "only be 1"),
    ),
    Case(
        "env-takes-the-cuda-graph-estimate-from-a-config-map",
        {
            "spec.engine": {
                "env": [
                    {
                        "name": "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS",
                        "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}},
                    }
                ]
            }
        },
        ("spec.engine.env[0]", "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS", "only be 1"),
        ("spec.engine.env[0]", "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS", "only be 1"),
    ),
    Case(
        "env-deepep-buffer-size-is-not-a-number",
        {"spec.engine": {"env": [{"name": "VLLM_DEEPEP_BUFFER_SIZE_MB", "value": "1GiB"}]}},
        None,  # the CEL rule checks the length only (a regex on the value costs too much)
        ("spec.engine.env[0]", "VLLM_DEEPEP_BUFFER_SIZE_MB", "whole number of MiB"),
    ),
    Case(
        "env-deepep-buffer-size-too-long",
        {"spec.engine": {"env": [{"name": "VLLM_DEEPEP_BUFFER_SIZE_MB", "value": "10000000"}]}},
        ("spec.engine.env[0]", "VLLM_DEEPEP_BUFFER_SIZE_MB", "whole number of MiB"),
        ("spec.engine.env[0]", "VLLM_DEEPEP_BUFFER_SIZE_MB", "whole number of MiB"),
    ),
    Case(
        "env-moe-dp-chunk-is-not-a-number",
        {"spec.engine": {"env": [{"name": "VLLM_MOE_DP_CHUNK_SIZE", "value": "2k"}]}},
        None,  # the CEL rule checks the length only (a regex on the value costs too much)
        ("spec.engine.env[0]", "VLLM_MOE_DP_CHUNK_SIZE", "whole number of tokens"),
    ),
    Case(
        "env-moe-dp-chunk-is-zero",
        {"spec.engine": {"env": [{"name": "VLLM_MOE_DP_CHUNK_SIZE", "value": "0"}]}},
        None,
        ("spec.engine.env[0]", "VLLM_MOE_DP_CHUNK_SIZE", "whole number of tokens"),
    ),
    Case(
        "env-moe-dp-chunk-too-long",
        {"spec.engine": {"env": [{"name": "VLLM_MOE_DP_CHUNK_SIZE", "value": "10000000"}]}},
        ("spec.engine.env[0]", "VLLM_MOE_DP_CHUNK_SIZE", "whole number of tokens"),
        ("spec.engine.env[0]", "VLLM_MOE_DP_CHUNK_SIZE", "whole number of tokens"),
    ),
    Case(
        "env-moe-dp-chunk-from-a-config-map",
        {
            "spec.engine": {
                "env": [
                    {
                        "name": "VLLM_MOE_DP_CHUNK_SIZE",
                        "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}},
                    }
                ]
            }
        },
        ("spec.engine.env[0]", "VLLM_MOE_DP_CHUNK_SIZE", "whole number of tokens"),
        ("spec.engine.env[0]", "VLLM_MOE_DP_CHUNK_SIZE", "whole number of tokens"),
    ),
    Case(
        "extra-args-all2all-backend-whose-buffers-are-not-counted",
        {"spec.engine": {"extraArgs": ["--all2all-backend=flashinfer_nvlink_one_sided"]}},
        ("spec.engine", "--all2all-backend", "flashinfer_nvlink_one_sided", "not counted"),
        ("spec.engine.extraArgs", "--all2all-backend=flashinfer_nvlink_one_sided", "not counted"),
    ),
    Case(
        "env-nccl-raises-the-channel-minimum",
        {"spec.engine": {"env": [{"name": "NCCL_MIN_NCHANNELS", "value": "32"}]}},
        ("spec.engine.env[0]", "NCCL_MIN_NCHANNELS", "not supported"),
        ("spec.engine.env[0]", "NCCL_MIN_NCHANNELS is not supported"),
    ),
    Case(
        "env-nccl-buffer-size-from-a-secret",
        {
            "spec.engine": {
                "env": [
                    {
                        "name": "NCCL_BUFFSIZE",
                        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                    }
                ]
            }
        },
        ("spec.engine.env[0]", "literal whole numbers of bytes"),
        ("spec.engine.env[0]", "NCCL_BUFFSIZE must be a literal whole number of bytes"),
    ),
    Case(
        "env-nccl-p2p-chunk-above-the-default",
        {"spec.engine": {"env": [{"name": "NCCL_P2P_NET_CHUNKSIZE", "value": "524288"}]}},
        None,  # the CEL rule checks the length only; the operator's parse checks the bound
        ("spec.engine.env[0]", "NCCL_P2P_NET_CHUNKSIZE may be at most 131072"),
    ),
    Case(
        "env-deepep-buffer-size-from-a-secret",
        {
            "spec.engine": {
                "env": [
                    {
                        "name": "VLLM_DEEPEP_BUFFER_SIZE_MB",
                        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                    }
                ]
            }
        },
        ("spec.engine.env[0]", "VLLM_DEEPEP_BUFFER_SIZE_MB", "whole number of MiB"),
        ("spec.engine.env[0]", "VLLM_DEEPEP_BUFFER_SIZE_MB", "whole number of MiB"),
    ),
    Case(
        "pod-label-under-an-owned-prefix",
        {"spec.pod": {"labels": {"dsv4.io/deployment": "other"}}},
        ("spec.pod", "keys must not start with", "dsv4.io/"),
        ("spec.pod.labels", "are set by the operator"),
    ),
    Case(
        "pod-annotation-under-an-lws-prefix",
        {"spec.pod": {"annotations": {"leaderworkerset.sigs.k8s.io/size": "4"}}},
        ("spec.pod", "keys must not start with", "leaderworkerset.sigs.k8s.io/"),
        ("spec.pod.annotations", "are set by the operator"),
    ),
    Case(
        "pod-priority-class-not-a-name",
        {"spec.pod": {"priorityClassName": "High_Priority"}},
        ("spec.pod.priorityClassName", "does not match"),
        ("spec.pod.priorityClassName", "pattern"),
    ),
    Case(
        "pod-label-value-not-a-label",
        {"spec.pod": {"labels": {"team": "a b"}}},
        ("spec.pod.labels.team", "does not match"),
        ("spec.pod.labels.team", "pattern"),
    ),
    Case(
        "pod-duplicate-pull-secret",
        {"spec.pod": {"imagePullSecrets": ["regcred", "regcred"]}},
        ("spec.pod.imagePullSecrets", "non-unique"),
        ("spec.pod.imagePullSecrets", "must be unique"),
    ),
    Case(
        "pod-label-name-over-63",
        {"spec.pod": {"labels": {"x" * 64: "y"}}},
        None,
        ("spec.pod.labels", "1 to 63 characters"),
    ),
    Case(
        "pod-annotations-over-256k",
        {"spec.pod": {"annotations": {f"k{i}": "\u4e00" * 4096 for i in range(32)}}},
        None,
        ("spec.pod.annotations", "bytes of keys and values"),
    ),
    Case(
        "hub-cache-with-both-volumes",
        {
            "spec.modelSource": {
                "huggingFace": {
                    "repo": "deepseek-ai/DeepSeek-V4-Flash",
                    "cache": {"claimName": "hf", "hostPath": "/mnt/hf"},
                }
            }
        },
        ("spec.modelSource.huggingFace.cache", "exactly one of claimName, hostPath"),
        ("spec.modelSource.huggingFace.cache", "exactly one of claimName, hostPath"),
    ),
    Case(
        "placement-exclusive-topology-not-a-label-key",
        {"spec.placement": {"exclusiveTopologyKey": "racks/"}},
        None,
        ("spec.placement.exclusiveTopologyKey", "is not a Kubernetes label key"),
    ),
    Case(
        "placement-queue-name-not-a-label-value",
        {"spec.placement": {"queueName": "Team_A"}},
        ("spec.placement.queueName", "does not match"),
        ("spec.placement.queueName", "pattern"),
    ),
    Case(
        "placement-unknown-topology-policy",
        {"spec.placement": {"topologyKey": "example.com/rack", "topologyPolicy": "Sometimes"}},
        ("spec.placement.topologyPolicy", "not one of ['Required', 'Preferred']"),
        ("spec.placement.topologyPolicy", "'Required' or 'Preferred'"),
    ),
    Case(
        "placement-topology-also-in-pod-annotations",
        {
            "spec.placement": {"topologyKey": "example.com/rack"},
            "spec.pod": {"annotations": {"kueue.x-k8s.io/podset-group-name": "mine"}},
        },
        ("spec", "keys under kueue.x-k8s.io/podset- are set by spec.placement.topologyKey"),
        ("spec", "keys under kueue.x-k8s.io/podset- are set by placement.topologyKey"),
    ),
    Case(
        "env-without-name",
        {"spec.engine": {"env": [{"value": "1"}]}},
        ("spec.engine.env[0]", "'name' is a required property"),
        ("spec.engine.env[0].name", "Field required"),
    ),
    Case(
        "env-value-and-value-from",
        {
            "spec.engine": {
                "env": [
                    {
                        "name": "HF_TOKEN",
                        "value": "x",
                        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
                    }
                ]
            }
        },
        ("spec.engine.env[0]", "set value or valueFrom, not both"),
        ("spec.engine.env[0]", "set value or valueFrom, not both"),
    ),
    Case(
        "env-value-from-without-key",
        {"spec.engine": {"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c"}}}]}},
        ("spec.engine.env[0].valueFrom.configMapKeyRef", "'key' is a required property"),
        ("spec.engine.env[0].valueFrom.configMapKeyRef.key", "Field required"),
    ),
    Case(
        "unknown-speculative-method",
        {"spec.speculativeDecoding": {"method": "eagle"}},
        ("spec.speculativeDecoding.method", "not one of ['mtp']"),
        ("spec.speculativeDecoding.method", "'mtp'"),
    ),
    Case(
        "too-many-speculative-tokens",
        {"spec.speculativeDecoding": {"numSpeculativeTokens": 9}},
        ("spec.speculativeDecoding.numSpeculativeTokens", "maximum of 4"),
        ("spec.speculativeDecoding.numSpeculativeTokens", "less than or equal to 4"),
    ),
    Case(
        "service-port-70000",
        {"spec.service": {"port": 70000}},
        ("spec.service.port", "maximum of 65535"),
        ("spec.service.port", "less than or equal to 65535"),
    ),
    Case(
        "service-type-ingress",
        {"spec.service": {"type": "Ingress"}},
        ("spec.service.type", "not one of"),
        ("spec.service.type", "'LoadBalancer'"),
    ),
    Case(
        "price-with-dollar-sign",
        {"spec.cost": {"gpuHourlyPrices": [{"gpuType": "h100-80gb", "usdPerGpuHour": "$2.49"}]}},
        ("spec.cost.gpuHourlyPrices[0].usdPerGpuHour", "does not match"),
        ("spec.cost.gpuHourlyPrices[0].usdPerGpuHour", "pattern"),
    ),
    Case(
        "price-as-float",
        {"spec.cost": {"gpuHourlyPrices": [{"gpuType": "h100-80gb", "usdPerGpuHour": 2.49}]}},
        ("spec.cost.gpuHourlyPrices[0].usdPerGpuHour", "not of type 'string'"),
        ("spec.cost.gpuHourlyPrices[0].usdPerGpuHour", "valid string"),
    ),
    Case(
        "load-empty",
        {"spec.load": {}},
        ("spec.load", "must set concurrency, tokensPerSecond, or both"),
        ("spec.load", "set concurrency, tokensPerSecond, or both"),
    ),
    Case(
        "load-negative-concurrency",
        {"spec.load": {"concurrency": -1}},
        ("spec.load.concurrency", "minimum of 1"),
        ("spec.load.concurrency", "greater than or equal to 1"),
    ),
    # --- model source
    Case(
        "two-model-sources",
        {"spec.modelSource": {"hostPath": {"path": "/models"}, "pvc": {"claimName": "weights"}}},
        ("spec.modelSource", "exactly one of huggingFace, pvc, hostPath"),
        ("spec.modelSource", "exactly one of huggingFace, pvc, hostPath (got 2)"),
    ),
    Case(
        "no-model-source",
        {"spec.modelSource": {}},
        ("spec.modelSource", "exactly one of huggingFace, pvc, hostPath"),
        ("spec.modelSource", "exactly one of huggingFace, pvc, hostPath (got 0)"),
    ),
    Case(
        "int4-without-model-source",
        {"spec.weightsFormat": "int4"},
        ("spec", "spec.modelSource is required unless spec.weightsFormat is one of fp8, nvfp4"),
        ("spec", "modelSource is required for weightsFormat int4"),
    ),
    Case(
        "bad-hf-repo",
        {"spec.modelSource": {"huggingFace": {"repo": "not a repo"}}},
        ("spec.modelSource.huggingFace.repo", "does not match"),
        ("spec.modelSource.huggingFace.repo", "pattern"),
    ),
    Case(
        "relative-pvc-path",
        {"spec.modelSource": {"pvc": {"claimName": "weights", "path": "models"}}},
        ("spec.modelSource.pvc.path", "does not match"),
        ("spec.modelSource.pvc.path", "pattern"),
    ),
    Case(
        "bad-secret-name",
        {
            "spec.modelSource": {
                "huggingFace": {
                    "repo": "deepseek-ai/DeepSeek-V4-Flash",
                    "tokenSecretRef": {"name": "Bad_Name"},
                }
            }
        },
        ("spec.modelSource.huggingFace.tokenSecretRef.name", "does not match"),
        ("spec.modelSource.huggingFace.tokenSecretRef.name", "pattern"),
    ),
]


def test_there_are_at_least_40_cases_with_unique_ids() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


def test_the_base_resource_is_valid(validate: Any) -> None:
    assert validate(BASE) == []
    assert parse_deployment(BASE).spec.gpu.gpus_per_node == 8


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_api_server_refuses_with_field_and_limit(case: Case, validate: Any) -> None:
    errors = validate(case.body())
    if case.crd is None:
        assert errors == [], "expected the schema to let this through to the pydantic parse"
        return
    matching = [error for error in errors if all(part in error for part in case.crd)]
    assert matching, f"no error contains {case.crd}: {errors}"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_operator_parse_refuses_with_field_and_limit(case: Case) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_deployment(case.body())
    message = str(caught.value)
    assert all(part in message for part in case.py), message
    assert caught.value.reason == "InvalidSpec"
    assert caught.value.errors
    assert all(error.path.startswith(S) for error in caught.value.errors)


def test_null_means_default_as_on_the_api_server() -> None:
    body = copy.deepcopy(BASE)
    body["spec"]["replicas"] = None
    body["spec"]["gpu"]["maxNodes"] = None
    spec = parse_deployment(body).spec
    assert (spec.replicas, spec.gpu.max_nodes) == (1, 1)


def test_parse_spec_paths_start_at_spec() -> None:
    from dsv4_operator.api import parse_spec

    with pytest.raises(InvalidSpecError) as caught:
        parse_spec({"model": "flash", "gpu": {"types": ["h100-80gb"], "gpusPerNode": 0}})
    assert [error.path for error in caught.value.errors] == ["spec.gpu.gpusPerNode"]
    assert str(caught.value) == "spec.gpu.gpusPerNode: Input should be greater than or equal to 1"
