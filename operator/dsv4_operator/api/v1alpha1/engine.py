"""`spec.engine`, `spec.resources` and `spec.speculativeDecoding`: how the vLLM server is run."""

import json
import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from dsv4_operator.api.meta import ApiModel, CelRule, with_cel_rules
from dsv4_operator.api.v1alpha1.enums import SpeculativeMethod
from dsv4_operator.api.v1alpha1.quantities import Quantity, parse_quantity
from dsv4_operator.api.v1alpha1.source import ObjectName
from dsv4_operator.api.v1alpha1.vllm_cli import VLLM_VERSION, argparse_problem, checked_release
from dsv4_operator.api.v1alpha1.vllm_options import SERVE_OPTIONS

__all__ = [
    "ADMIN_TOKEN_ENV",
    "ALL2ALL_BACKENDS",
    "ALL2ALL_COUNTED",
    "ALL2ALL_NOT_COUNTED",
    "ASYNC_SCHEDULING_FLAGS",
    "CUDAGRAPH_CAP_FLAG",
    "CUDAGRAPH_ESTIMATE_ENV",
    "CUDAGRAPH_LIST_FLAG",
    "DBO_FLAGS",
    "DEEPEP_BUFFER_ENV",
    "EPLB_CONFIG_FLAG",
    "EPLB_FLAGS",
    "KV_OFFLOADING_SIZE_FLAG",
    "KV_OFFLOAD_CONNECTORS",
    "KV_OFFLOAD_NOT_COUNTED",
    "MAX_KV_OFFLOADING_GIB",
    "MOE_DP_CHUNK_ENV",
    "NCCL_BUFFER_DEFAULTS",
    "NCCL_CHUNK_DEFAULTS",
    "NCCL_DEFAULT_BUFFER_BYTES",
    "NCCL_REFUSED_ENV",
    "NVLS_ENV",
    "NVLS_OFF",
    "OPERATOR_OWNED_FLAGS",
    "OWNED_FLAG_FIELDS",
    "PERFORMANCE_MODES",
    "POD_IP_ENV",
    "PREFIX_FLAGS",
    "RUNTIME_OWNED_FLAGS",
    "UNSUPPORTED_FLAGS",
    "EngineSpec",
    "EnvVar",
    "EnvVarSource",
    "KeyRef",
    "ResourceRequirements",
    "SpeculativeDecoding",
    "kv_offloading_bound",
]


def _choices(flag: str, default: str) -> tuple[str, ...]:
    """The choices of a vLLM 0.33.0 `vllm serve` option, `default` (vLLM's) first.

    From `vllm_options.SERVE_OPTIONS`, generated from vLLM's own parser; `default` is the
    option's default in the same parser dump.

    Raises:
        ValueError: at import, when the option has no choices or `default` is not one of them.
    """
    choices = SERVE_OPTIONS[flag].choices
    if choices is None or default not in choices:
        msg = f"{flag}: {default!r} is not among vLLM's choices {choices}"
        raise ValueError(msg)
    return (default, *(choice for choice in choices if choice != default))


OPERATOR_OWNED_FLAGS: Final = (
    "--model",
    "--port",
    "--host",
    "--tensor-parallel-size",
    "--data-parallel-size",
    "--data-parallel-size-local",
    "--data-parallel-start-rank",
    "--data-parallel-rank",
    "--data-parallel-address",
    "--data-parallel-rpc-port",
    "--pipeline-parallel-size",
    "--enable-expert-parallel",
    "--disable-expert-parallel",
    "--headless",
    "--max-model-len",
    "--max-num-seqs",
    "--max-num-batched-tokens",
    "--kv-cache-dtype",
    "--gpu-memory-utilization",
    "--device-memory-utilization",
    "--speculative-config",
    "--spec-method",
    "--spec-model",
    "--spec-tokens",
)
"""vLLM flags (with their long aliases) the operator derives from the spec, as named by `vllm serve`
(`vllm/engine/arg_utils.py`; checked against the vLLM 0.33.0 flag list in the fixtures). Setting
one in `extraArgs` would contradict the plan, so it is rejected; short aliases (`-tp`) and
underscore spellings (`--max_model_len`) already fail `FLAG_PATTERN`. `--spec-method`,
`--spec-model` and `--spec-tokens` are vLLM 0.33.0's top-level aliases of the speculative
config's method, model and num_speculative_tokens."""

_LAYOUT: Final = (
    "the runtime sets it per pod from the planned layout (pin the layout with spec.parallelism)"
)
_UTILIZATION: Final = "use spec.gpuMemoryUtilizationPercent (a percent: 0.9 is 90) instead"
_SPECULATION: Final = "use spec.speculativeDecoding (method mtp, numSpeculativeTokens) instead"
OWNED_FLAG_FIELDS: Final[dict[str, str]] = {
    "--model": "use spec.model and spec.modelSource instead",
    "--port": "use spec.service.port (the Service's port; the engine listens on 8000) instead",
    "--host": "the runtime listens on all addresses of the pod IP's family; remove it",
    "--tensor-parallel-size": "use spec.parallelism.tensor instead",
    "--data-parallel-size": "use spec.parallelism.data instead",
    "--data-parallel-size-local": _LAYOUT,
    "--data-parallel-start-rank": _LAYOUT,
    "--data-parallel-rank": _LAYOUT,
    "--data-parallel-address": _LAYOUT,
    "--data-parallel-rpc-port": _LAYOUT,
    "--pipeline-parallel-size": "use spec.parallelism.pipeline instead",
    "--enable-expert-parallel": "use spec.parallelism.expert instead",
    "--disable-expert-parallel": "use spec.parallelism.expert: 1 instead",
    "--headless": _LAYOUT,
    "--max-model-len": "use spec.maxModelLen instead",
    "--max-num-seqs": "use spec.maxNumSeqs instead",
    "--max-num-batched-tokens": "use spec.maxNumBatchedTokens instead",
    "--kv-cache-dtype": "use spec.kvCacheDtype instead",
    "--gpu-memory-utilization": _UTILIZATION,
    "--device-memory-utilization": _UTILIZATION,
    "--speculative-config": _SPECULATION,
    "--spec-method": _SPECULATION,
    "--spec-model": _SPECULATION,
    "--spec-tokens": _SPECULATION,
}
"""What to do instead of each `OPERATOR_OWNED_FLAGS` entry, as the `InvalidSpec` message says it:
the spec field that sets it, or why none does."""

RUNTIME_OWNED_FLAGS: Final = (
    "--served-model-name",
    "--block-size",
    "--shutdown-timeout",
    "--nnodes",
    "--node-rank",
    "--distributed-executor-backend",
    "--data-parallel-hybrid-lb",
    "--no-data-parallel-hybrid-lb",
    "--data-parallel-external-lb",
    "--no-data-parallel-external-lb",
    "--trust-remote-code",
    "--no-trust-remote-code",
    "--tokenizer-mode",
    "--tool-call-parser",
    "--enable-auto-tool-choice",
    "--disable-auto-tool-choice",
    "--reasoning-parser",
)
"""The other long flags the runtime sets (`dsv4_runtime.vllm_args.OWNED_FLAGS`: block size,
drain timeout, node ranks, the DeepSeek-V4 recipe's parsers). Refused in `extraArgs` by the
CRD's CEL rule and the operator's parse, so a CR that sets one is refused at apply time (or gets
`Ready=False`, `InvalidSpec`, on a cluster without CEL) instead of running pods that exit 2."""
SERVED_NAME_FLAG: Final = "--served-model-name"
"""Runtime-owned: the runtime serves the model as `deepseek-v4-<spec.model>`
(`render.runtime_args.served_model_name`)."""
UNSUPPORTED_FLAGS: Final = {
    "--api-server-count": (
        "the runtime runs the group's API servers (one per DP rank on the leader, none on the "
        "headless workers, which vLLM refuses to combine with it)"
    ),
    "--data-parallel-multi-port-external-lb": (
        "with the workers' start ranks vLLM would pick multi-port mode over headless workers"
    ),
    "--data-parallel-backend": "the runtime launches the DP ranks itself (no Ray)",
    "--prefill-context-parallel-size": (
        "it multiplies the GPU workers of each engine (vLLM's world size is PP x TP x PCP, "
        "vllm/config/parallel.py), so a pod would need more GPUs than the plan gives it, and "
        "vLLM refuses it with data parallelism; the plan sizes TP and DP ranks only"
    ),
    "--enable-elastic-ep": "groups have the fixed size of the plan",
    "--elastic-ep-max-dp-size": "groups have the fixed size of the plan",
    "--disable-log-stats": (
        "without vLLM's stat logging it exports no vllm:* metrics, and the autoscaler, KEDA "
        "and the HPA would read no load"
    ),
    "--uds": "the runtime and the Service reach the API on its TCP port",
    "--ssl-keyfile": "the runtime probes the API over plain HTTP on 127.0.0.1",
    "--ssl-certfile": "the runtime probes the API over plain HTTP on 127.0.0.1",
    "--ssl-ca-certs": "the runtime probes the API over plain HTTP on 127.0.0.1",
    "--kv-cache-memory-bytes": "the plan sizes the KV cache through gpu-memory-utilization",
    "--num-gpu-blocks-override": "the plan sizes the KV cache through gpu-memory-utilization",
    "--quantization": (
        "the plan counts the weights in spec.weightsFormat; another quantization method "
        "changes their bytes"
    ),
    "--hf-overrides": (
        "overriding the model config can change what the plan counts (layers, experts, "
        "context length)"
    ),
    "--kv-cache-dtype-skip-layers": (
        "it keeps the named layers' KV cache unquantized (vLLM CacheConfig), more bytes per "
        "token than the spec.kvCacheDtype the plan sizes the pool with; set spec.kvCacheDtype "
        "instead"
    ),
    "--disable-hybrid-kv-cache-manager": (
        "vLLM then keeps sliding-window layers' KV for every token like full attention "
        "(kv_cache_utils.unify_hybrid_kv_cache_specs), far more per token than DeepSeek-V4's "
        "window the plan sizes the pool with"
    ),
    "--cpu-offload-params": (
        "it offloads only the parameters it names (vLLM UVAOffloadConfig), which can be fewer "
        "bytes than the --cpu-offload-gb the plan takes off each GPU"
    ),
    "--config": (
        "a vLLM config file can set flags the operator and the runtime derive from the spec, "
        "out of the operator's sight (vLLM reads the file's keys as flags: "
        "FlexibleArgumentParser.load_config_file); put its flags in extraArgs instead"
    ),
    "--enable-lora": (
        "vLLM's DeepSeek-V4 model class does not support LoRA (DeepseekV4ForCausalLM "
        "implements SupportsPP only, vllm/model_executor/models/deepseek_v4.py): every rank "
        "would fail after loading the weights ('does not support LoRA yet', load_lora_model)"
    ),
}
"""vLLM 0.33.0 flags that break how the operator and the runtime run a group, with the reason:
refused in `extraArgs` like the owned flags (CRD CEL rule and the operator's parse)."""
PREFIX_FLAGS: Final = ("--tokenizer",)
"""vLLM 0.33.0 flags that are also the start of an owned flag (`--tokenizer` of
`--tokenizer-mode`); any other start of an owned flag abbreviates it, which vLLM's argparse
parser accepts, so it is refused too (`--max-model=1048576` would set `--max-model-len`)."""

ADMIN_TOKEN_ENV: Final = "DSV4_RUNTIME_ADMIN_TOKEN"  # noqa: S105  (a variable name)
"""The variable the operator sets in every pod to the runtime's drain token (`render.admin`;
`dsv4_runtime.server.ADMIN_TOKEN_ENV`); `spec.engine.env` may not set it."""

CUDAGRAPH_ESTIMATE_ENV: Final = "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS"
"""vLLM's switch for counting CUDA-graph memory before it sizes the KV cache (default on since
vLLM 0.21.0: `bool(int(os.getenv(..., "1")))`, vllm/envs.py). `Worker.determine_available_memory`
(vllm/v1/worker/gpu_worker.py) subtracts the profiled graph estimate from the KV budget only
while it is on; with `0` the KV cache takes the graphs' share too and the graphs, captured
afterwards, land above total x gpu-memory-utilization, where the plan keeps only the CUDA
context and NCCL (an out-of-memory at capture, or a KV pool larger than planned). So
`spec.engine.env` may set it only to its default, `1`, as a literal value."""
DEEPEP_BUFFER_ENV: Final = "VLLM_DEEPEP_BUFFER_SIZE_MB"
"""vLLM's DeepEP buffer size, MiB (`int(os.getenv(..., "1024"))`, vllm/envs.py): with
`--all2all-backend=deepep_high_throughput` each GPU holds that many MiB of NVLink buffer, and as
many again of RDMA buffer when the EP group spans nodes
(`DeepEPHTAll2AllManager._make_all2all_kwargs`, vllm/distributed/device_communicators/
all2all.py). Read by the planner, so `spec.engine.env` may set it only as a literal whole number
of MiB."""
DEEPEP_BUFFER_DEFAULT_MIB: Final = 1024
"""vLLM's default `VLLM_DEEPEP_BUFFER_SIZE_MB` (vllm/envs.py)."""
_DEEPEP_BUFFER_PATTERN: Final = r"^[0-9]{1,7}$"
"""A literal whole number of MiB, at most 9,999,999 (our bound: about 9.5 TiB, beyond any GPU).
The CRD's CEL rule checks only a literal of at most 7 characters (a regular expression on the
value, whose schema allows 32,768 characters, costs 16x the rule budget); the parse checks the
digits."""
_DEEPEP_BUFFER_REASON: Final = (
    f"{DEEPEP_BUFFER_ENV} must be a literal whole number of MiB (at most 7 digits; vLLM's "
    f"default {DEEPEP_BUFFER_DEFAULT_MIB}): the plan counts the DeepEP buffers it sizes"
)
NCCL_BUFFER_DEFAULTS: Final = {
    "NCCL_BUFFSIZE": 1 << 22,
    "NCCL_LL_BUFFSIZE": 8 * 512 * 8 * 16,
    "NCCL_LL128_BUFFSIZE": 120 * 640 * 8 * 8,
}
"""NCCL's per-protocol buffer of each connection (one per channel and peer), bytes, and the
variable that sets it (NCCL src/init.cc `computeBuffSizes`: `DEFAULT_BUFFSIZE (1 << 22)` for
Simple, `DEFAULT_LL_BUFFSIZE` = 8 lines x 512 threads x 8 steps x 16 B, `DEFAULT_LL128_BUFFSIZE`
= 120 elements x 640 threads x 8 steps x 8 B; the NCCL documentation: "NCCL_BUFFSIZE ... The
default is 4194304 (4 MB)"). The plan's NCCL figures were measured at these defaults and scale
with their sum, so `spec.engine.env` may set them only as literal whole numbers of bytes."""
NCCL_DEFAULT_BUFFER_BYTES: Final = sum(NCCL_BUFFER_DEFAULTS.values())
"""9,633,792 B: one connection's buffers at NCCL's defaults."""
NCCL_CHUNK_DEFAULTS: Final = {
    "NCCL_P2P_NET_CHUNKSIZE": 1 << 17,
    "NCCL_P2P_PCI_CHUNKSIZE": 1 << 17,
    "NCCL_P2P_NVL_CHUNKSIZE": 1 << 19,
}
"""NCCL's point-to-point chunk sizes, bytes (src/init.cc: `NCCL_PARAM(P2pNetChunkSize,
"P2P_NET_CHUNKSIZE", (1 << 17))`, PCI the same, NVL `(1 << 19)`): a P2P connection's buffer is
its chunk x NCCL_STEPS, so a larger chunk grows all-to-all buffers beyond the plan's measured
and allowed figures; `spec.engine.env` may set them only as literal byte counts up to these."""
NCCL_REFUSED_ENV: Final = ("NCCL_MIN_NCHANNELS", "NCCL_NCHANNELS", "NCCL_MIN_CTAS")
"""NCCL variables that raise the channel count above NCCL's own choice (NCCL_NCHANNELS and
NCCL_MIN_CTAS are older names of the minimum): every channel holds its own buffers per peer,
and the plan's NCCL figures were measured with the count NCCL picked, so they are refused.
(NCCL_MAX_NCHANNELS can only lower it and is accepted.)"""
NVLS_ENV: Final = "NCCL_NVLS_ENABLE"
"""NCCL's NVLink SHARP switch (NCCL's environment documentation: "NCCL_NVLS_ENABLE ... Enable
the use of NVLink SHARP (NVLS)"; on by default where the NVSwitches support multicast, for
communicators of more than 2 GPUs). NVLS allocates multicast buffers per communicator that the
plan's NCCL figures do not hold: they were measured on 2 GPUs, where NCCL never uses NVLS
(`benchmarks/reports/2026-11-30-startup-memory-h200.md`), and vLLM's own measurement on 8 x H200
(vLLM issue #9699: `nvlsPerRankSize 301989888` per communicator, and 17,595 KV blocks against
about 22,700 with NVLS off, Llama-3.1-405B TP8) shows the KV cache shrinking by a fifth. So the
operator sets it to `NVLS_OFF` in every engine container unless `spec.engine.env` sets it (the
planner then warns that the plan does not count NVLS memory)."""
POD_IP_ENV: Final = "POD_IP"
"""The variable the operator sets in every pod to its primary IP (downward API `status.podIP`;
`dsv4_runtime.distributed.POD_IP`): the runtime listens on `::` when it is IPv6. Left out when
`spec.engine.env` sets it."""
NVLS_OFF: Final = "0"
"""The value of `NVLS_ENV` the operator renders when `spec.engine.env` does not set it."""
_NCCL_LITERAL_PATTERN: Final = r"^[0-9]{1,10}$"
_NCCL_LITERAL_ENV: Final = (*NCCL_BUFFER_DEFAULTS, *NCCL_CHUNK_DEFAULTS)


def _nccl_env_problem(name: str, value: str | None) -> str | None:
    """Why `spec.engine.env` may not set NCCL variable `name` to `value` (None: it may)."""
    if name in NCCL_REFUSED_ENV:
        return (
            f"{name} is not supported: it makes NCCL open more channels than it picks itself, "
            "each with its own buffers, beyond the NCCL memory the plan counts (measured at "
            "NCCL's own channel count); NCCL_MAX_NCHANNELS, which can only lower it, is accepted"
        )
    if name not in _NCCL_LITERAL_ENV:
        return None
    if not re.fullmatch(_NCCL_LITERAL_PATTERN, value or ""):
        return (
            f"{name} must be a literal whole number of bytes (at most 10 digits, no valueFrom): "
            "the plan counts the NCCL buffers it sizes"
        )
    most = NCCL_CHUNK_DEFAULTS.get(name)
    if most is not None and int(value or "0") > most:
        return (
            f"{name} may be at most {most} (NCCL's default): a larger chunk grows the "
            "point-to-point buffers beyond the NCCL memory the plan counts"
        )
    return None


CUDAGRAPH_ESTIMATE_KEPT: Final = "1"
"""The one value of `CUDAGRAPH_ESTIMATE_ENV` accepted (vLLM's default; a valueFrom could hold
anything, so it is refused too)."""
_CUDAGRAPH_ESTIMATE_REASON: Final = (
    f"{CUDAGRAPH_ESTIMATE_ENV} may only be {CUDAGRAPH_ESTIMATE_KEPT} (vLLM's default, as a "
    "literal value): the plan counts CUDA-graph memory inside gpu-memory-utilization, and "
    "with 0 vLLM gives it to the KV cache and captures the graphs above that budget"
)

IMAGE_PATTERN: Final = (
    r"^(([A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]+)?/)?[a-z0-9]+([._-]+[a-z0-9]+)*"
    r"(/[a-z0-9]+([._-]+[a-z0-9]+)*)*)(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
"""A container image reference: [registry[:port]/]lowercase/path[:tag][@algorithm:digest], as
the distribution reference grammar (github.com/distribution/reference) has it; what kubelet
refuses as InvalidImageName (uppercase repository, empty tag) is refused here."""
FLAG_PATTERN: Final = r"^--[a-z0-9][a-z0-9-]*(=.*)?$"
"""A long vLLM flag, alone (`--enforce-eager`) or with its value (`--seed=3`)."""

DTYPE_FLAG: Final = "--dtype"
"""vLLM's model dtype: accepted only with a value in `DTYPES_KEPT`."""
DTYPES_KEPT: Final = ("auto", "bfloat16")
"""`--dtype` values that keep what the plan counts: DeepSeek-V4's activations and unquantised
weights are BF16 (`auto` takes the checkpoint's `torch_dtype`, bfloat16); float16 or float32
would change every byte count."""
CPU_OFFLOAD_FLAG: Final = "--cpu-offload-gb"
"""The one extraArgs flag the planner reads (weights offloaded to host memory per GPU)."""
MAX_CPU_OFFLOAD_GIB: Final = 4096
"""Most `--cpu-offload-gb` accepted, GiB per GPU (our bound: more than any node's memory)."""
CUDAGRAPH_CAP_FLAG: Final = "--max-cudagraph-capture-size"
"""The other extraArgs flag the planner reads: the largest CUDA-graph batch, tokens (vLLM 0.33.0
`vllm serve` option, dest `max_cudagraph_capture_size`, an int). Without it the operator passes
the plan's own value (vLLM's default for the planned sizes), so the graph memory the plan counts
does not change with vLLM's default."""
ALL2ALL_FLAG: Final = "--all2all-backend"
"""vLLM 0.33.0's expert-parallel all-to-all backend (`ParallelConfig.all2all_backend`), read by
the planner: `deepep_high_throughput` holds DeepEP buffers of `DEEPEP_BUFFER_ENV` MiB per GPU
(twice that when the EP group spans nodes) and `deepep_low_latency` one of them plus DeepEP's
low-latency RDMA buffer, which the plan counts beyond its 1 GiB EP allowance; the backends of
`ALL2ALL_NOT_COUNTED` are refused."""
ALL2ALL_BACKENDS: Final = _choices(ALL2ALL_FLAG, "allgather_reducescatter")
"""`--all2all-backend` choices (vLLM 0.33.0 flag list), the first the default."""
ALL2ALL_NOT_COUNTED: Final = {
    "deepep_v2": (
        "DeepEP v2's ElasticBuffer sizes its own buffers from tokens, hidden and top-k "
        "(DeepEPV2All2AllManager) and needs NCCL GIN"
    ),
    "flashinfer_all2allv": "FlashInfer's MNNVL workspaces (MnnvlMoe.get_moe_workspaces)",
    "flashinfer_nvlink_one_sided": (
        "FlashInfer's MoeAlltoAll workspace (moe_a2a_get_workspace_size_per_rank, sized by "
        "max-num-batched-tokens)"
    ),
    "flashinfer_nvlink_two_sided": "FlashInfer's MNNVL workspaces (MnnvlMoe.get_moe_workspaces)",
    "moonep": "MoonEP's buffer pool",
    "mori_high_throughput": "MoRI's dispatch/combine buffers (ROCm gfx942/gfx950 only)",
    "mori_low_latency": "MoRI's dispatch/combine buffers (ROCm gfx942/gfx950 only)",
    "nixl_ep": (
        "NIXL EP's RDMA buffer, sized for VLLM_NIXL_EP_MAX_NUM_RANKS ranks rather than the EP group"
    ),
}
"""`--all2all-backend` choices refused, each with the GPU buffers it allocates that the plan
does not size (vllm/distributed/device_communicators/all2all.py and vllm/model_executor/layers/
fused_moe/all2all_utils.py, read at commits 00143004 and 02bd2a49): counting the 1 GiB EP
allowance for them would be a guess. The others are counted: `allgather_reducescatter`,
`naive` and `pplx` (vLLM 0.33.0 falls back from the removed pplx to allgather_reducescatter)
hold no persistent buffers beyond the allowance; `deepep_high_throughput` and
`deepep_low_latency` hold DeepEP buffers the plan sizes."""
ALL2ALL_COUNTED: Final = tuple(b for b in ALL2ALL_BACKENDS if b not in ALL2ALL_NOT_COUNTED)
"""The `--all2all-backend` choices the plan counts (vLLM's default first): the ones the parse,
the planner and their messages offer."""
MOE_DP_CHUNK_ENV: Final = "VLLM_MOE_DP_CHUNK_SIZE"
"""vLLM's MoE data-parallel chunk, tokens (`int(os.getenv(..., "256"))`, vllm/envs.py): each DP
rank dispatches at most this many tokens at a time (`FusedMoEConfig.max_num_tokens`), which
sizes DeepEP low-latency's RDMA buffer. Read by the planner, so `spec.engine.env` may set it
only as a literal whole number."""
MOE_DP_CHUNK_DEFAULT_TOKENS: Final = 256
"""vLLM's default `VLLM_MOE_DP_CHUNK_SIZE` (vllm/envs.py)."""
_MOE_DP_CHUNK_PATTERN: Final = r"^[1-9][0-9]{0,5}$"
"""A literal whole number of tokens from 1 to 999,999 (our bound, far above any batch). The CRD's
CEL rule checks only a literal of at most 6 characters; the parse checks the digits."""
_MOE_DP_CHUNK_REASON: Final = (
    f"{MOE_DP_CHUNK_ENV} must be a literal whole number of tokens from 1 to 999,999 (vLLM's "
    f"default {MOE_DP_CHUNK_DEFAULT_TOKENS}): the plan sizes DeepEP low-latency's buffers from it"
)
OFFLOAD_BACKEND_FLAG: Final = "--offload-backend"
"""vLLM 0.33.0's weight offloader (`OffloadConfig.offload_backend`, vllm/config/offload.py):
`uva` honours `--cpu-offload-gb`; `prefetch` ignores it ("UVA settings will be ignored"), and
`auto`, the default, picks prefetch whenever `--offload-group-size` is above 0. Read so the plan
takes the offloaded GiB off each GPU only when vLLM does."""
OFFLOAD_BACKENDS: Final = _choices(OFFLOAD_BACKEND_FLAG, "auto")
"""`--offload-backend` choices (vLLM 0.33.0 flag list), default `auto`."""
OFFLOAD_GROUP_FLAG: Final = "--offload-group-size"
"""vLLM 0.33.0's prefetch offloader group size (`PrefetchOffloadConfig.offload_group_size`, an
int, default 0 = off). The layers it offloads are not subtracted by the plan (it counts them on
the GPU, the safe side); their pinned host copies are added to the pod's memory request and its
GPU buffer pool, where it holds more than those layers, to the GPU's weights
(`planning.offload`)."""
OFFLOAD_NUM_IN_GROUP_FLAG: Final = "--offload-num-in-group"
"""The prefetch offloader's layers offloaded per group, the last of each
(`offload_num_in_group`, an int, default 1, at least 1 and at most the group size:
`OffloadConfig.validate_offload_config`, vllm/config/offload.py at 00593fa7)."""
OFFLOAD_NUM_IN_GROUP_DEFAULT: Final = 1
"""vLLM's default `--offload-num-in-group` (vllm/config/offload.py at 00593fa7)."""
OFFLOAD_PREFETCH_STEP_FLAG: Final = "--offload-prefetch-step"
"""The prefetch offloader's layers prefetched ahead (`offload_prefetch_step`, an int, default 1,
at least 1 with a group size above 0, vllm/config/offload.py at 00593fa7): its GPU buffer pool
(`StaticBufferPool`, vllm/model_executor/offloader/prefetch.py at 04db3199) holds this many
copies of every offloaded parameter shape."""
OFFLOAD_PREFETCH_STEP_DEFAULT: Final = 1
"""vLLM's default `--offload-prefetch-step` (vllm/config/offload.py at 00593fa7)."""
MAX_OFFLOAD_LAYERS: Final = 1024
"""Most `--offload-group-size`, `--offload-num-in-group` and `--offload-prefetch-step` accepted,
layers (our bound: DeepSeek-V4-Pro has 61 layers, so every setting that matters is below it)."""
KV_OFFLOADING_SIZE_FLAG: Final = "--kv-offloading-size"
"""vLLM 0.33.0's host KV cache, GiB (`CacheConfig.kv_offloading_size`, a float, default None =
off), read by the planner. With the `native` backend `VllmConfig._post_init_kv_transfer_config`
(vllm/config/vllm.py at 000fc94b) configures `OffloadingConnector` with `cpu_bytes_to_use` =
N x 2^30: the budget of one engine (one DP rank) over all its TP ranks. `CPUOffloadingSpec`
divides it into rows of every TP rank's blocks (`kv_bytes_per_block x world_size`, so each rank
holds at most N GiB / TP) and keeps them in one mmap file in /dev/shm per engine
(`SharedOffloadRegion`, `/dev/shm/vllm_offload_{engine_id}.mmap`, pinned with cudaHostRegister;
vLLM PR #50094, which checks the free /dev/shm space first, PR #50358). With
`VLLM_USE_SIMPLE_KV_OFFLOAD=1` the same budget goes to `SimpleCPUOffloadConnector`, which pins
`cpu_bytes_to_use / world_size` of anonymous memory per rank instead. The operator counts N GiB
per engine, times the engines of a pod, in its /dev/shm size and memory request either way."""
MAX_KV_OFFLOADING_GIB: Final = 4096
"""Most `--kv-offloading-size` (and `cpu_bytes_to_use` of `--kv-transfer-config`) accepted,
GiB per engine (our bound, as `MAX_CPU_OFFLOAD_GIB`: more than any node's memory)."""


def kv_offloading_bound(*, none: bool = False) -> str:
    """The `--kv-offloading-size` bound in words, as its three checks say it.

    `above 0 and at most 4096 GiB of host KV cache per engine (DP rank; ...)`: the resource's
    extraArgs entry (`_kv_offloading_gib`) and `dsv4 plan --kv-offloading-size` take no 0
    (vLLM 0.33.0 reads any size but None as "on", and `CPUOffloadingSpec` refuses 0). With
    `none`, the planner's request (`PlanRequest.kv_offloading_gib`), where 0 is no host KV
    cache: `from 0 to 4096 GiB ... (DP rank; 0: none; ...)`. The bound is
    `MAX_KV_OFFLOADING_GIB`.
    """
    most = MAX_KV_OFFLOADING_GIB
    lowest, zero = ("from 0 to", "0: none; ") if none else ("above 0 and at most", "")
    return (
        f"{lowest} {most} GiB of host KV cache per engine (DP rank; {zero}{most} GiB is more "
        "than a node holds)"
    )


KV_OFFLOADING_BACKEND_FLAG: Final = "--kv-offloading-backend"
"""vLLM 0.33.0's `CacheConfig.kv_offloading_backend` (`native`, the default, or `lmcache`)."""
KV_OFFLOADING_BACKENDS: Final = _choices(KV_OFFLOADING_BACKEND_FLAG, "native")
"""`--kv-offloading-backend` choices (vLLM 0.33.0 flag list), default `native`."""
KV_TRANSFER_CONFIG_FLAG: Final = "--kv-transfer-config"
"""vLLM's `KVTransferConfig` as a JSON object, read by the planner for the connectors that keep
KV blocks in the pod's host memory: `KV_OFFLOAD_CONNECTORS`, whose `cpu_bytes_to_use` it counts
like `--kv-offloading-size` (`SimpleCPUOffloadConnector`'s `cpu_bytes_to_use_per_rank` per TP
rank), and those whose host memory it cannot size (`KV_OFFLOAD_NOT_COUNTED`, another
`spec_name`), which run unsized with a plan warning (`HOST_KV_NOT_COUNTED`); other connectors
pass unread."""
KV_OFFLOAD_CONNECTORS: Final = {
    "OffloadingConnector": None,
    "SimpleCPUOffloadConnector": 8 << 30,
}
"""The vLLM 0.33.0 connectors that keep offloaded KV blocks in host memory sized by
`kv_connector_extra_config.cpu_bytes_to_use` (bytes per engine, over its TP ranks), with the
size each takes without it: `OffloadingConnector`'s `CPUOffloadingSpec` raises ("cpu_bytes_to_use
must be specified"), `SimpleCPUOffloadConnector` takes `DEFAULT_CPU_CAPACITY_BYTES`, 8 GiB
(vllm/distributed/kv_transfer/kv_connector/v1/simple_cpu_offload_connector.py)."""
KV_OFFLOAD_SPECS: Final = ("CPUOffloadingSpec",)
"""`OffloadingConnector`'s `spec_name` values counted (its default, `CPUOffloadingSpec`): another
spec (`TieringOffloadingSpec`'s secondary tiers, a plugin's `spec_module_path`) keeps memory the
plan cannot size, so it runs uncounted with a plan warning."""
KV_OFFLOAD_NOT_COUNTED: Final = {
    "LMCacheConnectorV1": (
        "LMCache sizes its CPU cache itself, per TP rank, from LMCACHE_MAX_LOCAL_CPU_SIZE (5 GB "
        "by default) or a file named by LMCACHE_CONFIG_FILE, which overrides the variables "
        "(LMCache's configuration reference)"
    ),
    "LMCacheMPConnector": (
        "it hands the KV cache to a standalone LMCache server (tcp://localhost:5555 unless the "
        "extra config names one), whose memory is the server's, in this pod or another"
    ),
}
"""KV connectors vLLM 0.33.0 runs whose host memory the plan cannot size, each with why: they
are accepted, and the plan warns (`HOST_KV_NOT_COUNTED`) that the pod's memory request leaves
them out (LMCache is the KV offloading of vLLM's production-stack)."""
_KV_OFFLOAD_INSTEAD: Final = (
    f"use {KV_OFFLOADING_SIZE_FLAG}=N (GiB per engine, the native backend), which the operator "
    "adds to the pod's /dev/shm and memory request"
)
MAX_CUDAGRAPH_CAP: Final = 1 << 20
"""Largest `--max-cudagraph-capture-size` accepted, tokens: the planner's bound for
max-num-batched-tokens (DeepSeek-V4's 1,048,576-token context), above which vLLM would cap it
at max-num-batched-tokens anyway."""
CUDAGRAPH_LIST_FLAG: Final = "--cudagraph-capture-sizes"
"""vLLM's explicit capture-size list: refused in extraArgs (the plan counts a cap, not a list,
and with the rendered cap vLLM refuses a list whose largest size differs from it). The operator
passes it itself with speculation (`render.runtime_args`)."""
_CUDAGRAPH_CONFIG_KEYS: Final = frozenset({"max_cudagraph_capture_size", "cudagraph_capture_sizes"})
"""The `--compilation-config` keys that set capture sizes: vLLM refuses either beside the flag
("mutually exclusive" / "should be consistent", `EngineArgs.create_engine_config`,
`VllmConfig._set_cudagraph_sizes`). Other keys that merely contain the words
(`decoder_replay_cudagraph_capture_sizes`, a vLLM 0.33.0 key) and values (`compile_sizes:
["cudagraph_capture_sizes"]`) set something else."""


def _sets_capture_sizes(config: str) -> bool:
    """Whether a `--compilation-config` value sets one of `_CUDAGRAPH_CONFIG_KEYS`.

    vLLM reads the value as a JSON object of `CompilationConfig` fields
    (`TypeAdapter(CompilationConfig).validate_json`, vllm/engine/arg_utils.py); a value that is
    not one is checked for the key names anywhere, so nothing that sets them slips through.
    """
    try:
        parsed = json.loads(config)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return not _CUDAGRAPH_CONFIG_KEYS.isdisjoint(parsed)
    return any(key in config for key in _CUDAGRAPH_CONFIG_KEYS)


COMPILATION_CONFIG_FLAG: Final = "--compilation-config"
"""vLLM's `CompilationConfig` as JSON: read for the capture keys above (refused) and for
`cudagraph_mode` (`EngineSpec.cuda_graphs`), so an abbreviation of it (`--compilation=...`,
which vLLM's argparse parser takes for it) is refused too; otherwise it would set capture sizes
past that check."""
PERFORMANCE_MODE_FLAG: Final = "--performance-mode"
"""vLLM 0.33.0's `--performance-mode` (dest `performance_mode`), read by the planner: with
`interactivity` vLLM captures a CUDA graph for every size from 1 to min(cap, 32) tokens
(`VllmConfig._set_cudagraph_sizes`, vllm/config/vllm.py at 000fc94b), which the plan counts."""
PERFORMANCE_MODES: Final = _choices(PERFORMANCE_MODE_FLAG, "balanced")
"""`--performance-mode` choices, default `balanced` (vLLM 0.33.0 `vllm serve`; the flag list in
shared/fixtures/vllm/vllm-0.33.0-serve-flags.json). Only `interactivity` changes the CUDA-graph
sizes; `throughput` doubles vLLM's default max-num-seqs and max-num-batched-tokens only when
they are not given (`EngineArgs._set_default_max_num_seqs_and_batched_tokens_args`,
vllm/engine/arg_utils.py), and the runtime always gives both."""
ENFORCE_EAGER_FLAGS: Final = ("--enforce-eager", "--no-enforce-eager")
"""vLLM 0.33.0's `--enforce-eager` and its negation (one `EnableDisableAction`, no value; the
last wins). Eager mode captures no CUDA graphs (`VllmConfig.__post_init__` sets cudagraph_mode
NONE and the capture sizes to []), which the plan counts as no graph memory."""
OPTIMIZATION_LEVEL_FLAG: Final = "--optimization-level"
"""vLLM 0.33.0's `--optimization-level` (dest `optimization_level`, default 2). Level 0 makes
NONE the default `cudagraph_mode` (`OPTIMIZATION_LEVEL_00`, applied by
`VllmConfig._apply_optimization_level_defaults` only where the compilation config leaves the
mode unset); levels 1 to 3 default to PIECEWISE or FULL_AND_PIECEWISE, which capture the same
sizes. (`-O0` is a short form, refused by `FLAG_PATTERN`.)"""
EPLB_FLAGS: Final = ("--enable-eplb", "--disable-eplb")
"""vLLM 0.33.0's `--enable-eplb` and its negation (one `EnableDisableAction`, no value; the last
wins), read by the planner: expert-parallel load balancing keeps a transfer buffer of one MoE
layer's local experts per GPU (`EplbState.add_model`, vllm/distributed/eplb/eplb_state.py), and
vLLM refuses it without expert parallelism, so the plan then takes EP layouts only."""
ASYNC_SCHEDULING_FLAGS: Final = ("--async-scheduling", "--no-async-scheduling")
"""vLLM 0.33.0's `--async-scheduling` and its negation (one `EnableDisableAction`, no value; the
last wins; neither leaves `SchedulerConfig.async_scheduling` None, which `VllmConfig.__post_init__`
resolves, vllm/config/vllm.py), read by the planner: with async scheduling vLLM keeps 2 batches
in flight (`VllmConfig.max_concurrent_batches`), and each request reserves window and
compressor-state KV blocks for all of them (`VllmConfig.max_in_flight_tokens`)."""
DBO_FLAGS: Final = ("--enable-dbo", "--disable-dbo")
"""vLLM 0.33.0's dual batch overlap switch (`ParallelConfig.enable_dbo`, one
`EnableDisableAction`, no value; the last wins, default off), read by the planner: on ROCm with
`--all2all-backend=deepep_high_throughput` it turns async scheduling off unless extraArgs set it
(`VllmConfig.__post_init__`, vllm/config/vllm.py: "can corrupt DP+EP generation accuracy")."""
EPLB_CONFIG_FLAG: Final = "--eplb-config"
"""vLLM 0.33.0's `EPLBConfig` as a JSON object (vllm/config/parallel.py), read by the planner
for `num_redundant_experts` (R, default 0): each MoE layer then holds E + R physical experts,
(E + R) / EP per GPU, which the plan counts; vLLM refuses R > 0 without `--enable-eplb`."""
MAX_REDUNDANT_EXPERTS: Final = 1024
"""Most `num_redundant_experts` accepted (our bound: more than twice Pro's 384 routed experts;
vLLM's EPLBConfig only requires at least 0)."""
MAX_LOGPROBS_FLAG: Final = "--max-logprobs"
"""vLLM's cap on the logprobs a request may ask per token (`ModelConfig.max_logprobs`, default
20; -1 means no cap), read by the planner: the sampler returns that many per sampled row."""
DEFAULT_MAX_LOGPROBS: Final = 20
"""vLLM 0.33.0's `--max-logprobs` default (shared/fixtures/vllm/vllm-0.33.0-serve-flags.json)."""
MAX_COUNTED_LOGPROBS: Final = 1024
"""The largest `--max-logprobs` the plan counts. Model Runner V2 returns the top N + 1 per row
with torch.topk (`compute_topk_logprobs`); up to 1,024 of 129,280 entries that stays a small
top-k, where -1 (the whole vocabulary) turns it into a full sort of every row."""

_UNSET: Final = object()
"""`_cudagraph_mode`'s answer for a `--compilation-config` that leaves the mode unset."""


def _cudagraph_mode(config: str) -> object:
    """The `cudagraph_mode` a `--compilation-config` value sets, or `_UNSET`.

    A value that is not a JSON object but names the key counts as setting it (to something
    other than NONE as far as the plan knows, so its graphs are counted).
    """
    try:
        parsed = json.loads(config)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed.get("cudagraph_mode", _UNSET)
    return "unknown" if "cudagraph_mode" in config else _UNSET


def _is_none_mode(mode: object) -> bool:
    """Whether a `cudagraph_mode` value is NONE.

    vLLM reads a string case-insensitively (`CompilationConfig.validate_cudagraph_mode_before`,
    vllm/config/compilation.py: `CUDAGraphMode[value.upper()]`) and an integer as the enum's
    value (NONE = 0).
    """
    if isinstance(mode, str):
        return mode.upper() == "NONE"
    return type(mode) is int and mode == 0


_REFUSED_FLAGS: Final = (*OPERATOR_OWNED_FLAGS, *RUNTIME_OWNED_FLAGS, *UNSUPPORTED_FLAGS)
_OWNED_CEL: Final = "[" + ", ".join(f"'{flag}'" for flag in _REFUSED_FLAGS) + "]"
"""The owned and unsupported flags as a CEL list."""

_DTYPE_RULE: Final[CelRule] = {
    "rule": (
        "!has(self.extraArgs) || self.extraArgs.all(a, !(a == '--dtype' || "
        "a.startsWith('--dtype=')) || a in ["
        + ", ".join(f"'--dtype={d}'" for d in DTYPES_KEPT)
        + "])"
    ),
    "message": (
        "spec.engine.extraArgs: --dtype may only be "
        + " or ".join(DTYPES_KEPT)
        + " (the plan counts DeepSeek-V4's BF16 activations and weights)"
    ),
}
"""The CRD's check of `--dtype` values (the parse's `_not_owned` makes the same one)."""

_ALL2ALL_RULE: Final[CelRule] = {
    "rule": (
        "!has(self.extraArgs) || self.extraArgs.all(a, !(a in ["
        + ", ".join(f"'{ALL2ALL_FLAG}={b}'" for b in ALL2ALL_NOT_COUNTED)
        + "]))"
    ),
    "message": (
        f"spec.engine.extraArgs: {ALL2ALL_FLAG} may not be "
        + ", ".join(ALL2ALL_NOT_COUNTED)
        + ": their GPU buffers are not counted by the plan"
    ),
}
"""The CEL rule refusing the `ALL2ALL_NOT_COUNTED` backends (the `--flag=value` form; the
operator's parse also refuses abbreviations and names the buffers)."""
_OWNED_RULE: Final[CelRule] = {
    "rule": (
        "!has(self.extraArgs) || self.extraArgs.all(a, !"
        + _OWNED_CEL
        + ".exists(f, a == f || a.startsWith(f + '=')))"
    ),
    "message": (
        "spec.engine.extraArgs must not set flags the operator derives from the spec ("
        + ", ".join(OPERATOR_OWNED_FLAGS)
        + "; use the spec fields) or the runtime sets ("
        + ", ".join(RUNTIME_OWNED_FLAGS)
        + ") or that break how a group runs ("
        + ", ".join(UNSUPPORTED_FLAGS)
        + ")"
    ),
}
"""The CEL rule on `spec.engine`, matching each owned flag exactly (`--flag` or `--flag=...`).
The API server 1.36 estimates its cost at under 1/32 of the per-rule budget (the CRD is still
accepted with extraArgs' maxItems and maxLength both x32; tests/e2e/test_crd_cel.py). The same
rule on each entry, which would name the entry in the error, is estimated much higher (19x over
the budget with every bound x8, against within it for this one); matching abbreviations too
(`f.startsWith(a)`) came to 0.4 of the budget. Both are too close for older servers' estimates,
so the operator's parse names the entry and refuses abbreviations."""

QuantityMap = Annotated[dict[str, Quantity], Field(max_length=16)]
_NATIVE_RESOURCES: Final = frozenset({"cpu", "memory", "ephemeral-storage"})
"""Unqualified resource names a container may request (core/v1 standard container resources)."""


def _standard(name: str) -> bool:
    """A core/v1 standard container resource: cpu, memory, ephemeral-storage, hugepages-*."""
    return name in _NATIVE_RESOURCES or name.startswith("hugepages-")


def _overcommittable(name: str) -> bool:
    """Whether a request may be below its limit (core/v1 validation).

    Yes for cpu, memory, ephemeral-storage and `kubernetes.io/` names; no for hugepages and
    extended (domain-qualified) resources.
    """
    if name.startswith("hugepages-"):
        return False
    if "/" in name:
        domain = name.split("/", 1)[0]
        return domain == "kubernetes.io" or domain.endswith(".kubernetes.io")
    return True


class ResourceRequirements(ApiModel):
    """CPU, memory and other resources of each worker pod (GPUs are set from the plan)."""

    requests: QuantityMap = Field(default_factory=dict)
    """Resources reserved per worker pod, e.g. `cpu: "32"`, `memory: 512Gi` (quantities); the
    operator adds the /dev/shm size (the plan's, or `spec.shmSize`, either way with the host KV
    cache of a `--kv-offloading-size` in `spec.engine.extraArgs`, per engine times the pod's
    engines) and the host memory that the weight offloaders there pin (`--cpu-offload-gb`, or
    the prefetch offloader's `--offload-group-size`: up to twice the offloaded weights, PyTorch
    pinning each parameter at its power-of-two ceiling, per GPU times the pod's GPUs; the plan's
    `weight_offload_host_bytes`) to the memory request."""
    limits: QuantityMap = Field(default_factory=dict)
    """Resource caps per worker pod (quantities); the operator adds the /dev/shm size (with the
    host KV cache) and the weight offloaders' host memory (`--cpu-offload-gb`, the prefetch
    offloader) to a memory limit too (tmpfs pages and pinned memory count against it), so leave
    them out of the figure."""

    @model_validator(mode="after")
    def _valid_for_a_pod(self) -> "ResourceRequirements":
        # What core/v1 pod validation refuses (k8s.io/kubernetes pkg/apis/core/validation:
        # ValidateResourceRequirements), checked here so the CR reports it instead of the
        # LeaderWorkerSet's StatefulSets failing to create pods.
        for name in (*self.requests, *self.limits):
            if not _standard(name) and "/" not in name:
                msg = (
                    f"{name!r} is not a standard resource (cpu, memory, ephemeral-storage, "
                    "hugepages-<size>) nor a domain-qualified one (example.com/foo)"
                )
                raise ValueError(msg)
        for field, values in (("requests", self.requests), ("limits", self.limits)):
            for name, value in values.items():
                if parse_quantity(value) < 0:
                    msg = f"{field}.{name} ({value}) must be greater than or equal to 0"
                    raise ValueError(msg)
        for name, request in self.requests.items():
            limit = self.limits.get(name)
            if limit is not None and parse_quantity(limit) < parse_quantity(request):
                msg = f"limits.{name} ({limit}) is below requests.{name} ({request})"
                raise ValueError(msg)
            if not _overcommittable(name) and (
                limit is None or parse_quantity(limit) != parse_quantity(request)
            ):
                msg = (
                    f"{name} cannot be overcommitted: its request needs an equal limit "
                    "(or give the limit alone)"
                )
                raise ValueError(msg)
        return self


class KeyRef(ApiModel):
    """A key of a Secret or ConfigMap in the resource's namespace."""

    name: ObjectName
    """Name of the Secret or ConfigMap (a Kubernetes object name, at most 253 characters)."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    """Key inside it whose value is used (at most 253 characters)."""
    optional: bool = False
    """The pods start without the variable when the object or key does not exist (Kubernetes'
    `optional`); otherwise they wait for it, and the operator reports `ReferenceMissing`."""


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from: exactly one of the two refs."""

    model_config = with_cel_rules(
        {
            "rule": "has(self.secretKeyRef) != has(self.configMapKeyRef)",
            "message": (
                "spec.engine.env: valueFrom must set exactly one of secretKeyRef, configMapKeyRef"
            ),
        }
    )

    secret_key_ref: KeyRef | None = None
    """A key of a Secret in the resource's namespace."""
    config_map_key_ref: KeyRef | None = None
    """A key of a ConfigMap in the resource's namespace."""

    @property
    def kind_and_ref(self) -> tuple[Literal["Secret", "ConfigMap"], KeyRef]:
        """("Secret" or "ConfigMap", its key ref): the one ref set (the parse enforces one)."""
        if self.secret_key_ref is not None:
            return "Secret", self.secret_key_ref
        assert self.config_map_key_ref is not None  # `_exactly_one`
        return "ConfigMap", self.config_map_key_ref

    @model_validator(mode="after")
    def _exactly_one(self) -> "EnvVarSource":
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            msg = "set exactly one of secretKeyRef, configMapKeyRef"
            raise ValueError(msg)
        return self


class EnvVar(ApiModel):
    """An environment variable of the engine container."""

    model_config = with_cel_rules(
        {
            "rule": "!has(self.value) || !has(self.valueFrom)",
            "message": "spec.engine.env: set value or valueFrom, not both",
        },
        {
            "rule": f"self.name != '{ADMIN_TOKEN_ENV}'",
            "message": f"spec.engine.env: {ADMIN_TOKEN_ENV} is set by the operator (drain token)",
        },
        {
            "rule": (
                f"self.name != '{CUDAGRAPH_ESTIMATE_ENV}' || "
                f"(has(self.value) && self.value == '{CUDAGRAPH_ESTIMATE_KEPT}')"
            ),
            "message": f"spec.engine.env: {_CUDAGRAPH_ESTIMATE_REASON}",
        },
        {
            "rule": (
                f"self.name != '{DEEPEP_BUFFER_ENV}' || (has(self.value) && size(self.value) <= 7)"
            ),
            "message": f"spec.engine.env: {_DEEPEP_BUFFER_REASON}",
        },
        {
            "rule": (
                f"self.name != '{MOE_DP_CHUNK_ENV}' || (has(self.value) && size(self.value) <= 6)"
            ),
            "message": f"spec.engine.env: {_MOE_DP_CHUNK_REASON}",
        },
        {
            "rule": "!(self.name in [" + ", ".join(f"'{n}'" for n in NCCL_REFUSED_ENV) + "])",
            "message": (
                f"spec.engine.env: {', '.join(NCCL_REFUSED_ENV)} are not supported: more "
                "channels than NCCL picks, each with its own buffers, beyond the NCCL memory "
                "the plan counts"
            ),
        },
        {
            "rule": (
                "!(self.name in ["
                + ", ".join(f"'{n}'" for n in _NCCL_LITERAL_ENV)
                + "]) || (has(self.value) && size(self.value) <= 10)"
            ),
            "message": (
                "spec.engine.env: NCCL buffer and P2P chunk sizes must be literal whole numbers "
                "of bytes (at most 10 digits): the plan counts the NCCL buffers they size"
            ),
        },
    )

    name: Annotated[
        str, Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    ]
    """Variable name (letters, digits, `_`, `-`, `.`; not starting with a digit)."""
    value: Annotated[str, Field(max_length=32768)] | None = None
    """Literal value."""
    value_from: EnvVarSource | None = None
    """Take the value from a Secret or ConfigMap key instead."""

    @model_validator(mode="after")
    def _one_value(self) -> "EnvVar":
        if self.value is not None and self.value_from is not None:
            msg = "set value or valueFrom, not both"
            raise ValueError(msg)
        if self.name == CUDAGRAPH_ESTIMATE_ENV and self.value != CUDAGRAPH_ESTIMATE_KEPT:
            raise ValueError(_CUDAGRAPH_ESTIMATE_REASON)
        if self.name == DEEPEP_BUFFER_ENV and not re.fullmatch(
            _DEEPEP_BUFFER_PATTERN, self.value or ""
        ):
            raise ValueError(_DEEPEP_BUFFER_REASON)
        if self.name == MOE_DP_CHUNK_ENV and not re.fullmatch(
            _MOE_DP_CHUNK_PATTERN, self.value or ""
        ):
            raise ValueError(_MOE_DP_CHUNK_REASON)
        if (problem := _nccl_env_problem(self.name, self.value)) is not None:
            raise ValueError(problem)
        return self

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == ADMIN_TOKEN_ENV:
            msg = f"{ADMIN_TOKEN_ENV} is set by the operator (the runtime's drain token)"
            raise ValueError(msg)
        return value


class EngineSpec(ApiModel):
    """The inference engine (vLLM with our runtime) that worker pods run."""

    model_config = with_cel_rules(_OWNED_RULE, _DTYPE_RULE, _ALL2ALL_RULE)

    image: Annotated[str, Field(min_length=1, max_length=512, pattern=IMAGE_PATTERN)] | None = None
    """Container image of the worker pods; unset uses the operator's default runtime image."""
    version: (
        Annotated[
            str,
            Field(max_length=64, pattern=r"^v?[0-9]+\.[0-9]+(\.[0-9]+)?([.+-][0-9A-Za-z.+-]+)?$"),
        ]
        | None
    ) = None
    """vLLM version inside the image (e.g. `0.33.0`): pins metric names and flags; unset uses
    the operator's default."""
    extra_args: Annotated[
        tuple[Annotated[str, Field(max_length=1024, pattern=FLAG_PATTERN)], ...],
        Field(max_length=64, json_schema_extra={"x-kubernetes-list-type": "atomic"}),
    ] = ()
    """Extra vLLM flags as `--flag` or `--flag=value`, a value in the same entry (at most 64,
    each at most 1024 characters, e.g. `--enforce-eager`, `--seed=3`, not `--seed`, `3`); flags
    the operator or the runtime derives from the spec (parallel sizes, max-model-len,
    kv-cache-dtype, block size, ...) and abbreviations of them are refused;
    `--cpu-offload-gb=N` (GiB of weights per GPU kept in host memory; not with the prefetch
    offloader, `--offload-backend=prefetch` or `--offload-group-size` above 0, which ignores
    it; `--cpu-offload-params` is refused; the pod's memory request grows by up to twice N plus
    one parameter per GPU, as PyTorch pins each parameter at its power-of-two ceiling) and the
    prefetch offloader's `--offload-group-size=G`, `--offload-num-in-group=K` (1 to G) and
    `--offload-prefetch-step=S` (whole numbers of layers up to 1,024; it offloads layers i with
    i mod G >= G - K, or only their parameters `--offload-params` names: the pod's memory
    request grows by up to twice those layers' weights per GPU, and the plan counts what its GPU
    buffer pool of S copies of each offloaded tensor holds beyond them) and
    `--max-cudagraph-capture-size=N` (largest CUDA-graph batch, tokens; otherwise the operator
    passes the plan's) and `--kv-offloading-size=N` (GiB of host KV cache per engine, i.e. per
    DP rank over its TP ranks, above 0 to 4,096, native backend: vLLM keeps it in /dev/shm, so
    the pod's /dev/shm and memory request grow by N times the pod's engines; so does the
    `cpu_bytes_to_use` of a `--kv-transfer-config` JSON object naming `OffloadingConnector` or
    `SimpleCPUOffloadConnector` (its `cpu_bytes_to_use_per_rank` times the engine's TP ranks); a
    config that is not a JSON object, or an `OffloadingConnector` without `cpu_bytes_to_use`, is
    refused, as vLLM refuses it at start. Host KV caches whose size the operator cannot read run
    uncounted, with plan warning `HOST_KV_NOT_COUNTED`: the `lmcache` backend, the LMCache
    connectors (also in a `MultiConnector`), and another `spec_name` or a `spec_module_path`;
    add their host memory to `spec.resources.requests.memory` (and `limits.memory`), or use
    `--kv-offloading-size=N`)
    are counted by the plan, and so are the CUDA graphs of
    `--performance-mode=interactivity` and the lack of them with `--enforce-eager`,
    `--optimization-level=0` or `cudagraph_mode` NONE in `--compilation-config`, and EPLB's
    memory with `--enable-eplb` (one MoE layer of experts per GPU as its transfer buffer, and
    the redundant experts of `--eplb-config={"num_redundant_experts": R}`, a JSON object in
    the same entry, R from 0 to 1,024; EP layouts only), and the DeepEP buffers of
    `--all2all-backend=deepep_high_throughput` and `deepep_low_latency` (the other all-to-all
    backends but `naive` and `pplx`, whose buffers the plan does not size, are refused), and
    `--max-logprobs=N` (0 to 1,024; -1 is refused), and the batches each request's window and
    compressor-state KV blocks are reserved for (2 in flight with vLLM's async scheduling, its
    default; 1 with `--no-async-scheduling`, or on AMD GPUs with `--enable-dbo` and
    `--all2all-backend=deepep_high_throughput`, where vLLM turns it off); capture-size lists are
    refused. While
    `version` is unset or vLLM 0.33.0's, each entry must also pass 0.33.0's `vllm serve`
    parser (a known option or a unique prefix of one, a value exactly when the option takes
    one, of its type and among its choices), which vLLM would otherwise refuse by exiting at
    start in every pod."""
    env: Annotated[
        tuple[EnvVar, ...],
        Field(
            max_length=64,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ] = ()
    """Extra environment variables of the engine container (at most 64, unique names);
    `VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS` may only be `1`, vLLM's default (the plan counts
    CUDA-graph memory inside gpu-memory-utilization, which `0` undoes), and
    `VLLM_DEEPEP_BUFFER_SIZE_MB` only a literal whole number of MiB and `VLLM_MOE_DP_CHUNK_SIZE`
    only a literal whole number of tokens (the plan counts the DeepEP buffers of
    `--all2all-backend=deepep_high_throughput` and `deepep_low_latency` they size);
    `NCCL_BUFFSIZE`, `NCCL_LL_BUFFSIZE` and `NCCL_LL128_BUFFSIZE` only literal byte counts (the
    plan scales its NCCL memory with them), `NCCL_P2P_NET_CHUNKSIZE`, `NCCL_P2P_PCI_CHUNKSIZE` and
    `NCCL_P2P_NVL_CHUNKSIZE` only literal byte counts up to NCCL's defaults, and
    `NCCL_MIN_NCHANNELS`, `NCCL_NCHANNELS` and `NCCL_MIN_CTAS` (more channels than NCCL picks)
    are refused; networking and debugging variables (NCCL_IB_HCA, NCCL_SOCKET_IFNAME,
    NCCL_DEBUG, ...) pass unread. Unless set here, `NCCL_NVLS_ENABLE` is `0` (NVLink SHARP
    off: the plan's NCCL memory is NCCL's without it); set to anything else, the plan warns
    `NVLS_NOT_COUNTED`."""

    @field_validator("extra_args", mode="before")
    @classmethod
    def _one_long_flag_per_entry(cls, value: object) -> object:
        """Say how to write an entry that is not `--flag` or `--flag=value` (FLAG_PATTERN).

        Without this the user gets only the pattern; entries copied from vLLM's docs (`-tp 8`,
        `--seed`, `3`, `--max_model_len=...`, `--x.y=...`) each get the form to use instead.
        Entries that are not strings are left to pydantic.
        """
        if not isinstance(value, list | tuple):
            return value
        problems = [
            f"extraArgs[{i}] {arg!r}: {hint}"
            for i, arg in enumerate(value)
            if isinstance(arg, str) and (hint := _flag_form_hint(arg)) is not None
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return tuple(value)  # strict validation of the tuple takes no list from Python

    @field_validator("extra_args")
    @classmethod
    def _not_owned(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        owned = (
            *_REFUSED_FLAGS,
            *_VALUE_READERS,
            DTYPE_FLAG,
            CUDAGRAPH_LIST_FLAG,
            COMPILATION_CONFIG_FLAG,
            OPTIMIZATION_LEVEL_FLAG,
            *ENFORCE_EAGER_FLAGS,
            *EPLB_FLAGS,
            *ASYNC_SCHEDULING_FLAGS,
            *DBO_FLAGS,
        )
        # A version that failed its own pattern is reported on its own: nothing to check by.
        known = "version" in info.data and checked_release(info.data["version"])
        problems = []
        refused_by_vllm = False
        for arg in value:
            try:
                _check_entry(arg, owned)
            except ValueError as error:
                problems.append(str(error))
                continue
            if known and (problem := argparse_problem(arg, SERVE_OPTIONS)) is not None:
                problems.append(problem)
                refused_by_vllm = True
        if problems:  # every bad entry at once, not one per apply
            note = (
                f" (vLLM {VLLM_VERSION} would exit at start; for an image with another vLLM "
                "release, set spec.engine.version to it)"
                if refused_by_vllm
                else ""
            )
            raise ValueError("; ".join(problems) + note)
        _check_eplb(value)
        _prefetch_offload(value)
        return value

    @property
    def max_logprobs(self) -> int:
        """The `--max-logprobs` of extraArgs (the last one), else vLLM's default 20."""
        entry = self._last_entry(MAX_LOGPROBS_FLAG)
        return DEFAULT_MAX_LOGPROBS if entry is None else _max_logprobs(entry)

    @property
    def all2all_backend(self) -> str:
        """The `--all2all-backend` of extraArgs (the last one), else vLLM's default."""
        entry = self._last_entry(ALL2ALL_FLAG)
        return ALL2ALL_BACKENDS[0] if entry is None else _all2all_backend(entry)

    def env_var(self, name: str) -> EnvVar | None:
        """The `env` entry named `name`, or None (names are unique: a list map on `name`)."""
        return next((v for v in self.env if v.name == name), None)

    def _env_int(self, name: str, default: int) -> int:
        """The whole number `env` sets `name` to, else `default` (EnvVar checked the literal)."""
        var = self.env_var(name)
        return default if var is None or var.value is None else int(var.value)

    @property
    def deepep_buffer_bytes(self) -> int:
        """Bytes of one DeepEP buffer (`VLLM_DEEPEP_BUFFER_SIZE_MB` MiB; vLLM's 1024 without).

        The planner counts them with `--all2all-backend=deepep_high_throughput`.
        """
        return self._env_int(DEEPEP_BUFFER_ENV, DEEPEP_BUFFER_DEFAULT_MIB) << 20

    @property
    def moe_dp_chunk_tokens(self) -> int:
        """`VLLM_MOE_DP_CHUNK_SIZE` as `spec.engine.env` sets it, tokens (vLLM's 256 without).

        The planner sizes DeepEP low-latency's RDMA buffer from it.
        """
        return self._env_int(MOE_DP_CHUNK_ENV, MOE_DP_CHUNK_DEFAULT_TOKENS)

    @property
    def nccl_buffer_bytes(self) -> int:
        """One NCCL connection's buffers, bytes (NCCL's defaults: 9,633,792 B).

        The sum of `NCCL_BUFFER_DEFAULTS`' variables as `spec.engine.env` sets them, each else
        its default. The planner scales its NCCL figures, measured at the defaults, by this
        over them.
        """
        given = {
            v.name: int(v.value) for v in self.env if v.name in NCCL_BUFFER_DEFAULTS and v.value
        }
        return sum(given.get(name, default) for name, default in NCCL_BUFFER_DEFAULTS.items())

    @property
    def nvls(self) -> bool:
        """Whether `spec.engine.env` lets NCCL use NVLink SHARP (`NVLS_ENV` set, not to `0`).

        Unset, the operator renders `NVLS_ENV=0`; a `valueFrom` counts as on (its value is not
        known here). The planner then warns that NVLS memory is not counted.
        """
        var = self.env_var(NVLS_ENV)
        return var is not None and (var.value is None or var.value.strip() != NVLS_OFF)

    @property
    def eplb(self) -> bool:
        """Whether extraArgs turn on vLLM's EPLB (the last of `EPLB_FLAGS` is `--enable-eplb`).

        The planner then counts EPLB's one-layer transfer buffer and takes EP layouts only.
        """
        return _switched_on(self.extra_args, EPLB_FLAGS)

    @property
    def async_scheduling(self) -> bool | None:
        """Async scheduling as extraArgs set it: the last of `ASYNC_SCHEDULING_FLAGS`.

        True for `--async-scheduling`, False for `--no-async-scheduling`, None without either
        (vLLM then decides: `VllmConfig.__post_init__`, vllm/config/vllm.py). The planner sizes
        each request's window and compressor-state KV blocks for the batches it keeps in flight.
        """
        return _switch(self.extra_args, ASYNC_SCHEDULING_FLAGS)

    @property
    def dual_batch_overlap(self) -> bool:
        """Whether extraArgs turn on vLLM's dual batch overlap (the last of `DBO_FLAGS` is on).

        The planner reads it for the one case where it turns async scheduling off (`DBO_FLAGS`).
        """
        return _switched_on(self.extra_args, DBO_FLAGS)

    @property
    def redundant_experts(self) -> int:
        """`num_redundant_experts` of the last `--eplb-config` (vLLM's default 0 without one).

        Redundant experts per MoE layer, spread over the EP ranks: the planner counts their
        weights. A config without the key resets it to 0, as vLLM reads the last flag.
        """
        entry = self._last_entry(EPLB_CONFIG_FLAG)
        return _redundant_experts(entry) if entry is not None else 0

    @property
    def cpu_offload_bytes(self) -> int:
        """Bytes per GPU that `--cpu-offload-gb=N` in extraArgs moves to host memory (0 without).

        The planner counts them (vLLM's `--cpu-offload-gb` is GiB per GPU, `vllm/config`'s
        `OffloadConfig`), so the plan matches what the engine holds. 0 too when vLLM runs its
        prefetch offloader instead (`--offload-backend=prefetch`, or `auto` with
        `--offload-group-size` above 0), which ignores the GiB count.
        """
        entry = self._last_entry(CPU_OFFLOAD_FLAG)
        if entry is None or not self._uva_offload:
            return 0
        return int(_offload_gib(entry) * (1 << 30))

    @property
    def kv_offloading_gib(self) -> float:
        """GiB of host KV cache each engine (DP rank) keeps under extraArgs that the plan counts.

        The last `--kv-offloading-size=N` with the native backend (vLLM then configures
        `OffloadingConnector` with N GiB, whatever connector `--kv-transfer-config` names), else
        the `cpu_bytes_to_use` of the `KV_OFFLOAD_CONNECTORS` in the last `--kv-transfer-config`,
        over 2^30 (exact: a power of two); 0.0 without. The operator adds it, times the pod's
        engines, to the pod's /dev/shm size and memory request. What vLLM keeps but the plan
        cannot size is not in it: `kv_offload_not_counted` names it.
        """
        return self._host_kv[0]

    @property
    def kv_offload_not_counted(self) -> tuple[str, ...]:
        """The host KV caches extraArgs configure that the plan cannot size, each described.

        The LMCache connectors (`KV_OFFLOAD_NOT_COUNTED`, also inside a `MultiConnector`, and
        `--kv-offloading-size` with `--kv-offloading-backend=lmcache`, which vLLM 0.33.0 turns
        into `LMCacheMPConnector` without passing the size on), an `OffloadingConnector` with
        another spec than `KV_OFFLOAD_SPECS` or a `spec_module_path`. vLLM runs them; the
        planner warns (`HOST_KV_NOT_COUNTED`)
        that the pod's memory request leaves them out. Empty without.
        """
        return self._host_kv[2]

    @property
    def kv_offload_rank_bytes(self) -> int:
        """Bytes of host KV cache per TP rank of each engine under extraArgs (0 without).

        `cpu_bytes_to_use_per_rank` of a `SimpleCPUOffloadConnector` in the last
        `--kv-transfer-config` (over a `MultiConnector`'s children), which overrides its
        `cpu_bytes_to_use`; none with `--kv-offloading-size`, whose connector vLLM configures
        per engine. The operator adds it, times the engine's TP ranks and the pod's engines, to
        the pod's /dev/shm size and memory request.
        """
        return self._host_kv[1]

    @property
    def _host_kv(self) -> tuple[float, int, tuple[str, ...]]:
        """(GiB per engine, bytes per TP rank, caches not counted) of extraArgs' host KV cache.

        `VllmConfig._post_init_kv_transfer_config` (vllm/config/vllm.py at 000fc94b): with a
        `--kv-offloading-size` the backend replaces the connector (`native`:
        `OffloadingConnector`, the extra config updated with the size; `lmcache`:
        `LMCacheMPConnector`, the size dropped); without one the last `--kv-transfer-config`
        stands as given.
        """
        size = self._last_entry(KV_OFFLOADING_SIZE_FLAG)
        config = self._last_entry(KV_TRANSFER_CONFIG_FLAG)
        if size is None:
            if config is None:
                return 0.0, 0, ()
            counted, per_rank, uncounted = _kv_transfer_offload_bytes(config)
            return counted / (1 << 30), per_rank, uncounted
        backend = self._last_entry(KV_OFFLOADING_BACKEND_FLAG)
        if backend is not None and _kv_offloading_backend(backend) == "lmcache":
            return (
                0.0,
                0,
                (
                    f"{KV_OFFLOADING_BACKEND_FLAG}=lmcache, which vLLM 0.33.0 runs as "
                    f"LMCacheMPConnector without passing {KV_OFFLOADING_SIZE_FLAG} on "
                    f"({KV_OFFLOAD_NOT_COUNTED['LMCacheMPConnector']})",
                ),
            )
        extra = {} if config is None else _extra_config(_kv_transfer_config(config))
        spec = _uncounted_spec("OffloadingConnector", extra)
        return (0.0, 0, (spec,)) if spec is not None else (_kv_offloading_gib(size), 0, ())

    @property
    def prefetch_offload(self) -> tuple[int, int, int] | None:
        """(group size, layers per group, prefetch step) of vLLM's prefetch offloader, or None.

        `_prefetch_offload` of the module on extraArgs (checked when the spec was parsed). The
        planner adds its pinned host copies to the pod's memory request and its GPU buffer
        pool, where it exceeds the offloaded layers, to each GPU's weights
        (`planning.offload`).
        """
        return _prefetch_offload(self.extra_args)

    @property
    def _uva_offload(self) -> bool:
        """Whether vLLM runs the UVA offloader, the one that reads `--cpu-offload-gb`.

        `OffloadConfig` (vllm/config/offload.py): an explicit `uva`, or `auto` with no
        `--offload-group-size` above 0; `prefetch` ignores the GiB count.
        """
        backend = self._last_entry(OFFLOAD_BACKEND_FLAG)
        chosen = OFFLOAD_BACKENDS[0] if backend is None else _offload_backend(backend)
        if chosen != OFFLOAD_BACKENDS[0]:
            return chosen == "uva"
        group = self._last_entry(OFFLOAD_GROUP_FLAG)
        return group is None or _offload_group(group) == 0

    @property
    def max_cudagraph_capture_size(self) -> int | None:
        """Tokens of `--max-cudagraph-capture-size=N` in extraArgs (the last one), else None.

        The planner counts CUDA-graph memory up to it instead of vLLM's default, and the
        operator then passes no cap of its own.
        """
        entry = self._last_entry(CUDAGRAPH_CAP_FLAG)
        return _cudagraph_cap(entry) if entry is not None else None

    @property
    def performance_mode(self) -> str:
        """The `--performance-mode` of extraArgs (the last one), else vLLM's `balanced`.

        The planner counts the CUDA graphs of `interactivity` (every size from 1 to 32 tokens).
        """
        entry = self._last_entry(PERFORMANCE_MODE_FLAG)
        return _performance_mode(entry) if entry is not None else PERFORMANCE_MODES[0]

    @property
    def cuda_graphs(self) -> bool:
        """Whether vLLM captures CUDA graphs under extraArgs; the plan counts none when not.

        False with `--enforce-eager` (the last of it and `--no-enforce-eager`), with
        `cudagraph_mode` NONE in the last `--compilation-config`, or with
        `--optimization-level=0` (the last) when that config leaves `cudagraph_mode` unset
        (vllm/config/vllm.py at 000fc94b: `VllmConfig.__post_init__`,
        `_apply_optimization_level_defaults`, `OPTIMIZATION_LEVEL_00`). Any other mode, or a
        value the plan cannot read, counts the graphs: every mode but NONE captures the same
        sizes, and FULL_AND_PIECEWISE, vLLM's default, the most graphs of them (a mixed-batch
        graph per size, plus a FULL decode graph per size up to max-num-seqs x (1 + k):
        `CudagraphDispatcher.initialize_cudagraph_keys`, vllm/v1/cudagraph_dispatcher.py as
        stored at 009eec3b).
        """
        if _switched_on(self.extra_args, ENFORCE_EAGER_FLAGS):
            return False
        config = self._last_entry(COMPILATION_CONFIG_FLAG)
        mode = _UNSET if config is None else _cudagraph_mode(config.partition("=")[2])
        if mode is not _UNSET:
            return not _is_none_mode(mode)
        level = self._last_entry(OPTIMIZATION_LEVEL_FLAG)
        return level is None or level.partition("=")[2].strip() != "0"

    def _last_entry(self, flag: str) -> str | None:
        """The last extraArgs entry `flag=...` (`_last_entry` of the module), or None.

        Every such entry was parsed by `_not_owned` already, so only the last is read again.
        """
        return _last_entry(self.extra_args, flag)


def _cudagraph_cap(arg: str) -> int:
    """The tokens of a `--max-cudagraph-capture-size=N` entry.

    Raises:
        ValueError: no value, or one that is not an integer from 1 to `MAX_CUDAGRAPH_CAP`
            (vLLM asserts a cap of at least 1 while CUDA graphs are on).
    """
    _, _, raw = arg.partition("=")
    tokens = int(raw) if raw.strip().isdigit() else 0
    if not 1 <= tokens <= MAX_CUDAGRAPH_CAP:
        msg = (
            f"{CUDAGRAPH_CAP_FLAG} needs a value in the same entry, an integer number of tokens "
            f"from 1 to {MAX_CUDAGRAPH_CAP:,} (e.g. {CUDAGRAPH_CAP_FLAG}=512), not {arg!r}"
        )
        raise ValueError(msg)
    return tokens


def _last_entry(args: tuple[str, ...], flag: str) -> str | None:
    """The last entry of `args` that is `flag` or `flag=...`, or None.

    vLLM takes the last of a repeated flag.
    """
    return next((a for a in reversed(args) if a.split("=", 1)[0] == flag), None)


def _switched_on(args: tuple[str, ...], flags: tuple[str, str]) -> bool:
    """Whether the last of an on/off flag pair (`flags`: on, off; no value) in `args` is on.

    vLLM's `EnableDisableAction` flags (`--enable-eplb` / `--disable-eplb`, `--enforce-eager` /
    `--no-enforce-eager`): the last one given wins; neither leaves it off.
    """
    return next((a for a in reversed(args) if a in flags), None) == flags[0]


def _switch(args: tuple[str, ...], flags: tuple[str, str]) -> bool | None:
    """The last of an on/off flag pair (`flags`: on, off; no value) in `args`, as a bool.

    True for on, False for off, None when neither is given (vLLM's `EnableDisableAction` with
    default None: vLLM decides).
    """
    last = next((a for a in reversed(args) if a in flags), None)
    return None if last is None else last == flags[0]


def _check_eplb(args: tuple[str, ...]) -> None:
    """Refuse redundant experts without EPLB (`_check_entry` reads each `--eplb-config`).

    Raises:
        ValueError: when the last entry's count is above 0 and the last of `EPLB_FLAGS` is not
            `--enable-eplb` (vLLM refuses that: `ParallelConfig._validate_parallel_config`,
            "num_redundant_experts is set to ... but EPLB is not enabled").
    """
    last = _last_entry(args, EPLB_CONFIG_FLAG)
    count = 0 if last is None else _redundant_experts(last)
    if count and not _switched_on(args, EPLB_FLAGS):
        msg = (
            f"{EPLB_CONFIG_FLAG} with num_redundant_experts={count} needs "
            f"{EPLB_FLAGS[0]} (vLLM refuses redundant experts without EPLB)"
        )
        raise ValueError(msg)


def _json_object(arg: str, flag: str, example: str) -> dict[str, Any]:
    """The JSON object after the `=` of an entry `arg` of `flag` (`--flag={...}`).

    Raises:
        ValueError: the value is not a JSON object; the message names `flag`, gives `example`
            in parentheses and quotes the entry.
    """
    _, _, raw = arg.partition("=")
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        msg = f"{flag} needs a JSON object in the same entry ({example}), not {arg!r}"
        raise ValueError(msg)
    return parsed


def _redundant_experts(arg: str) -> int:
    """`num_redundant_experts` of an `--eplb-config={...}` entry (0 when the JSON omits it).

    Raises:
        ValueError: a value that is not a JSON object, or a count that is not an integer from
            0 to `MAX_REDUNDANT_EXPERTS`.
    """
    parsed = _json_object(
        arg, EPLB_CONFIG_FLAG, f'e.g. {EPLB_CONFIG_FLAG}={{"num_redundant_experts": 32}}'
    )
    count = parsed.get("num_redundant_experts", 0)
    if type(count) is not int or not 0 <= count <= MAX_REDUNDANT_EXPERTS:
        msg = (
            f"{EPLB_CONFIG_FLAG}: num_redundant_experts must be an integer from 0 to "
            f"{MAX_REDUNDANT_EXPERTS:,} (redundant experts per MoE layer), not {count!r}"
        )
        raise ValueError(msg)
    return count


def _choice_reader(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A reader of `--flag=value` entries whose value must be one of `choices`.

    The reader returns the value, and raises ValueError naming the flag, the choices and the
    entry otherwise.
    """

    def read(arg: str) -> str:
        flag, _, raw = arg.partition("=")
        if raw not in choices:
            msg = (
                f"{flag} needs a value in the same entry, one of {', '.join(choices)}, not {arg!r}"
            )
            raise ValueError(msg)
        return raw

    return read


_all2all_choice = _choice_reader(ALL2ALL_COUNTED)
"""Reads an `--all2all-backend` value among the backends the plan counts (vLLM's default first):
an unknown value is told only those, not the vLLM choices refused as not counted."""


def _all2all_backend(arg: str) -> str:
    """The backend of an `--all2all-backend=...` entry, one the plan counts.

    Raises:
        ValueError: a value not among `ALL2ALL_BACKENDS`, or one of `ALL2ALL_NOT_COUNTED`
            (naming the buffers the plan does not size).
    """
    backend = arg.partition("=")[2]
    held = ALL2ALL_NOT_COUNTED.get(backend)
    if held is None:
        return _all2all_choice(arg)
    msg = (
        f"{arg}: its GPU buffers ({held}) are not counted by the plan, which would size "
        f"the GPU memory wrongly; use one of {', '.join(ALL2ALL_COUNTED)}"
    )
    raise ValueError(msg)


_offload_backend = _choice_reader(OFFLOAD_BACKENDS)
"""The backend of an `--offload-backend=...` entry, checked against `OFFLOAD_BACKENDS`."""


def _max_logprobs(arg: str) -> int:
    """The count of a `--max-logprobs=N` entry, checked.

    Raises:
        ValueError: a value that is not an integer from 0 to `MAX_COUNTED_LOGPROBS` (vLLM's -1,
            no cap, among them).
    """
    _, _, raw = arg.partition("=")
    count = int(raw) if raw.strip().isdigit() else -1
    if not 0 <= count <= MAX_COUNTED_LOGPROBS:
        msg = (
            f"{MAX_LOGPROBS_FLAG} needs a value in the same entry, an integer from 0 to "
            f"{MAX_COUNTED_LOGPROBS:,} (logprobs a request may ask per token; vLLM's default "
            f"{DEFAULT_MAX_LOGPROBS}), not {arg!r}: the plan counts the logprobs the sampler "
            "returns per row, and -1 (no cap) lets one request ask for the whole vocabulary"
        )
        raise ValueError(msg)
    return count


def _offload_layers(flag: str, least: int, *, off: bool = False) -> Callable[[str], int]:
    """A reader of `flag=N`, a layer count from `least` to `MAX_OFFLOAD_LAYERS`.

    Whole numbers only (vLLM's `int`); `off` says in the message that `least` turns the
    offloader off. The reader raises ValueError, naming the flag and the range, for anything else.
    """
    lowest = f"{least} (off)" if off else f"{least}"

    def read(arg: str) -> int:
        _, _, raw = arg.partition("=")
        if not raw.isdigit() or not least <= int(raw) <= MAX_OFFLOAD_LAYERS:
            msg = (
                f"{flag} needs a value in the same entry, a whole number of layers from "
                f"{lowest} to {MAX_OFFLOAD_LAYERS:,}, not {arg!r}"
            )
            raise ValueError(msg)
        return int(raw)

    return read


_offload_group = _offload_layers(OFFLOAD_GROUP_FLAG, 0, off=True)
"""The layers of an `--offload-group-size=N` entry (vLLM: an `int`, 0 = off)."""
_offload_num_in_group = _offload_layers(OFFLOAD_NUM_IN_GROUP_FLAG, 1)
"""The layers of an `--offload-num-in-group=N` entry (vLLM: `ge=1`)."""
_offload_prefetch_step = _offload_layers(OFFLOAD_PREFETCH_STEP_FLAG, 0)
"""The layers of an `--offload-prefetch-step=N` entry (vLLM: `ge=0`; at least 1 with a group
size above 0, which `EngineSpec.prefetch_offload` checks)."""


def _performance_mode(arg: str) -> str:
    """The mode of a `--performance-mode=...` entry, checked.

    Raises:
        ValueError: a value that is not one of `PERFORMANCE_MODES`.
    """
    _, _, raw = arg.partition("=")
    if raw not in PERFORMANCE_MODES:
        msg = (
            f"{arg!r}: {PERFORMANCE_MODE_FLAG} needs a value in the same entry, "
            f"{', '.join(PERFORMANCE_MODES[:-1])} or {PERFORMANCE_MODES[-1]} "
            f"(e.g. {PERFORMANCE_MODE_FLAG}=interactivity)"
        )
        raise ValueError(msg)
    return raw


def _offload_gib(arg: str) -> float:
    """The GiB of a `--cpu-offload-gb=N` entry.

    Raises:
        ValueError: no value, or one that is not a number from 0 to 4096.
    """
    _, _, raw = arg.partition("=")
    try:
        gib = float(raw)
    except ValueError:
        gib = math.nan
    if not 0 <= gib <= MAX_CPU_OFFLOAD_GIB:
        msg = (
            f"{CPU_OFFLOAD_FLAG} needs a value in the same entry, GiB per GPU from 0 to "
            f"{MAX_CPU_OFFLOAD_GIB} (e.g. {CPU_OFFLOAD_FLAG}=8), not {arg!r}"
        )
        raise ValueError(msg)
    return gib


def _kv_offloading_gib(arg: str) -> float:
    """The GiB of a `--kv-offloading-size=N` entry.

    Raises:
        ValueError: no value, or one that is not a number above 0 and at most
            `MAX_KV_OFFLOADING_GIB` (with 0 vLLM's `CPUOffloadingSpec` raises "cpu_bytes_to_use
            must be specified").
    """
    _, _, raw = arg.partition("=")
    try:
        gib = float(raw)
    except ValueError:
        gib = math.nan
    if not 0 < gib <= MAX_KV_OFFLOADING_GIB:
        msg = (
            f"{KV_OFFLOADING_SIZE_FLAG} needs a value in the same entry, "
            f"{kv_offloading_bound()} (e.g. {KV_OFFLOADING_SIZE_FLAG}=64), not {arg!r} "
            "(vLLM 0.33.0 refuses a missing or unreadable value and, with the native backend, 0)"
        )
        raise ValueError(msg)
    return gib


_kv_offloading_backend = _choice_reader(KV_OFFLOADING_BACKENDS)
"""The backend of a `--kv-offloading-backend=...` entry, checked against its choices."""


_HostKv = tuple[int, int, tuple[str, ...]]
"""A host KV cache as the plan sees it: bytes per engine and bytes per TP rank it counts, and a
description of each cache it cannot size (`KV_OFFLOAD_NOT_COUNTED`...), which vLLM runs all the
same."""


def _whole_bytes(size: object) -> int | None:
    """A byte count of a `kv_connector_extra_config` as vLLM reads it (`int()`), or None.

    An integer, a string of digits or a float with no fraction; anything else (a fraction of a
    byte, a unit such as "2g", a bool) is None.
    """
    if type(size) is str and size.isdigit():
        return int(size)
    if type(size) is float and size.is_integer():
        return int(size)
    return size if type(size) is int else None


def _kv_transfer_offload_bytes(arg: str) -> _HostKv:
    """The host KV cache of a `--kv-transfer-config={...}` entry (`_connector_offload_bytes`).

    Raises:
        ValueError: a value that is not a JSON object, or what `_connector_offload_bytes`
            refuses.
    """
    return _connector_offload_bytes(_kv_transfer_config(arg))


def _kv_transfer_config(arg: str) -> dict[str, Any]:
    """The JSON object of a `--kv-transfer-config={...}` entry.

    Raises:
        ValueError: a value that is not a JSON object (vLLM's parser refuses it at start).
    """
    return _json_object(
        arg,
        KV_TRANSFER_CONFIG_FLAG,
        f"vLLM's KVTransferConfig, which vLLM 0.33.0 refuses at start as anything else, e.g. "
        f'{KV_TRANSFER_CONFIG_FLAG}={{"kv_connector": '
        f'"OffloadingConnector", "kv_role": "kv_both", "kv_connector_extra_config": '
        f'{{"cpu_bytes_to_use": 68719476736}}}}',
    )


def _extra_config(config: dict[str, object]) -> dict[str, object]:
    """`kv_connector_extra_config` of one `KVTransferConfig` object ({} without).

    Raises:
        ValueError: one that is not a JSON object (vLLM's `KVTransferConfig` types it
            `dict[str, Any]` and refuses anything else at start).
    """
    extra = config.get("kv_connector_extra_config") or {}
    if not isinstance(extra, dict):
        msg = (
            f"{KV_TRANSFER_CONFIG_FLAG}: kv_connector_extra_config must be a JSON object (vLLM "
            "refuses anything else at start)"
        )
        raise ValueError(msg)
    return extra


def _uncounted_spec(connector: str, extra: dict[str, object]) -> str | None:
    """Why the plan cannot size an `OffloadingConnector`'s host memory, or None when it can.

    `OffloadingConnector` loads `spec_name` (default `CPUOffloadingSpec`) from
    `spec_module_path`; only the default CPU spec is sized by `cpu_bytes_to_use`
    (`KV_OFFLOAD_SPECS`).
    """
    spec = extra.get("spec_name", KV_OFFLOAD_SPECS[0])
    if connector != "OffloadingConnector":
        return None
    if spec in KV_OFFLOAD_SPECS and "spec_module_path" not in extra:
        return None
    where = f" from {extra['spec_module_path']!r}" if "spec_module_path" in extra else ""
    return (
        f"{connector} with spec {spec!r}{where} (only {', '.join(KV_OFFLOAD_SPECS)}, vLLM's "
        "default, keeps a host cache of cpu_bytes_to_use that the plan can size)"
    )


def _connector_offload_bytes(config: dict[str, object]) -> _HostKv:
    """The host KV cache of one `KVTransferConfig` object (`_HostKv`).

    `KV_OFFLOAD_CONNECTORS` count their `cpu_bytes_to_use` (bytes per engine), except a
    `SimpleCPUOffloadConnector` with `cpu_bytes_to_use_per_rank`, which then overrides it and
    counts per TP rank (simple_cpu_offload_connector.py: `cpu_bytes_to_use // world_size`
    unless the per-rank key is given); a `MultiConnector` the sum of its `connectors`; other
    connectors (P/D transfer ones) nothing. What vLLM runs but the plan cannot size is described
    instead of counted: the LMCache connectors (`KV_OFFLOAD_NOT_COUNTED`) and an
    `OffloadingConnector` with another spec (`_uncounted_spec`).

    Raises:
        ValueError: what vLLM 0.33.0 refuses at start (an extra config or `connectors` of the
            wrong type; `OffloadingConnector`'s CPU spec without `cpu_bytes_to_use`, which
            `CPUOffloadingSpec` raises on, or a size `int()` cannot read), a size below 0, and
            one above `MAX_KV_OFFLOADING_GIB` GiB, which no node holds.
    """
    connector = config.get("kv_connector")
    extra = _extra_config(config)
    where = f"{KV_TRANSFER_CONFIG_FLAG} with {connector}"
    if isinstance(connector, str) and connector in KV_OFFLOAD_NOT_COUNTED:
        return 0, 0, (f"{connector} ({KV_OFFLOAD_NOT_COUNTED[connector]})",)
    if connector == "MultiConnector":
        children = extra.get("connectors") or []
        if not isinstance(children, list) or not all(isinstance(c, dict) for c in children):
            msg = (
                f"{where}: kv_connector_extra_config.connectors must be a list of objects "
                "(vLLM refuses anything else at start)"
            )
            raise ValueError(msg)
        parts = [_connector_offload_bytes(child) for child in children]
        return (
            sum(p[0] for p in parts),
            sum(p[1] for p in parts),
            tuple(u for p in parts for u in p[2]),
        )
    if not isinstance(connector, str) or connector not in KV_OFFLOAD_CONNECTORS:
        return 0, 0, ()
    if (spec := _uncounted_spec(connector, extra)) is not None:
        return 0, 0, (spec,)
    most = MAX_KV_OFFLOADING_GIB << 30
    if connector == "SimpleCPUOffloadConnector" and "cpu_bytes_to_use_per_rank" in extra:
        given = extra["cpu_bytes_to_use_per_rank"]
        per_rank = _whole_bytes(given)
        if per_rank is None or not 0 <= per_rank <= most:
            msg = (
                f"{where}: kv_connector_extra_config.cpu_bytes_to_use_per_rank must be a whole "
                f"number of bytes per TP rank from 0 to {most:,} ({MAX_KV_OFFLOADING_GIB} GiB, "
                f"more than a node holds), not {given!r} (vLLM reads it with int())"
            )
            raise ValueError(msg)
        return 0, per_rank, ()
    given = extra.get("cpu_bytes_to_use", KV_OFFLOAD_CONNECTORS[connector])
    size = _whole_bytes(given)
    if size is None or not 0 < size <= most:
        msg = (
            f"{where} needs kv_connector_extra_config.cpu_bytes_to_use, a whole number of bytes "
            f"of host KV cache per engine above 0 and at most {most:,} ({MAX_KV_OFFLOADING_GIB} "
            f"GiB, more than a node holds), not {given!r} (vLLM 0.33.0 refuses a size int() "
            "cannot read at start, and OffloadingConnector a missing or zero one too: "
            f"CPUOffloadingSpec reads it alone, num_cpu_blocks is not read); or "
            f"{_KV_OFFLOAD_INSTEAD}"
        )
        raise ValueError(msg)
    return size, 0, ()


def _prefetch_offload(args: tuple[str, ...]) -> tuple[int, int, int] | None:
    """(group size, layers per group, prefetch step) of vLLM's prefetch offloader, or None.

    The prefetch offloader runs with `--offload-group-size` above 0 and `--offload-backend`
    `auto` (the default) or `prefetch` (`create_offloader`, vllm/model_executor/offloader/
    base.py at 03584c33); `--offload-num-in-group` and `--offload-prefetch-step` default to 1
    (vllm/config/offload.py). The last entry of each flag counts.

    Raises:
        ValueError: what `OffloadConfig.validate_offload_config` (the vllm/config/offload.py
            with `offload_backend`) refuses at start with `--offload-backend=prefetch` or a
            group size above 0: `--offload-num-in-group` above the group size (so an explicit
            prefetch backend without a group, which `PrefetchOffloader.wrap_modules` would
            divide by: `module_index % 0`) or `--offload-prefetch-step=0`.
    """
    group_entry = _last_entry(args, OFFLOAD_GROUP_FLAG)
    group = 0 if group_entry is None else _offload_group(group_entry)
    backend_entry = _last_entry(args, OFFLOAD_BACKEND_FLAG)
    backend = OFFLOAD_BACKENDS[0] if backend_entry is None else _offload_backend(backend_entry)
    if group == 0 and backend != "prefetch":
        return None
    count = _last_entry(args, OFFLOAD_NUM_IN_GROUP_FLAG)
    per_group = OFFLOAD_NUM_IN_GROUP_DEFAULT if count is None else _offload_num_in_group(count)
    step_entry = _last_entry(args, OFFLOAD_PREFETCH_STEP_FLAG)
    step = (
        OFFLOAD_PREFETCH_STEP_DEFAULT if step_entry is None else _offload_prefetch_step(step_entry)
    )
    if group == 0:
        msg = (
            f"{OFFLOAD_BACKEND_FLAG}=prefetch needs {OFFLOAD_GROUP_FLAG} above 0 (layers per "
            f"group, up to {MAX_OFFLOAD_LAYERS:,}): vLLM refuses a group of 0 at start "
            f"({OFFLOAD_NUM_IN_GROUP_FLAG}={per_group} is above it)"
        )
        raise ValueError(msg)
    if per_group > group:
        msg = (
            f"{OFFLOAD_NUM_IN_GROUP_FLAG}={per_group} is above {OFFLOAD_GROUP_FLAG}={group}: "
            "vLLM offloads at most the whole group and refuses this at start"
        )
        raise ValueError(msg)
    if step < 1:
        msg = (
            f"{OFFLOAD_PREFETCH_STEP_FLAG}=0 with {OFFLOAD_GROUP_FLAG}={group}: the prefetch "
            "offloader needs a step from 1 to "
            f"{MAX_OFFLOAD_LAYERS:,} layers (vLLM refuses 0 at start)"
        )
        raise ValueError(msg)
    return None if backend == "uva" else (group, per_group, step)


class SpeculativeDecoding(ApiModel):
    """Speculative decoding with DeepSeek-V4's multi-token-prediction (MTP) layer."""

    method: SpeculativeMethod = "mtp"
    """Method: `mtp` (the checkpoint's own MTP layer; no draft model needed)."""
    num_speculative_tokens: int = Field(default=1, ge=1, le=4)
    """Tokens proposed per step, 1 to 4 (vLLM `num_speculative_tokens`)."""


_VALUE_READERS: Final[dict[str, Callable[[str], object]]] = {
    CPU_OFFLOAD_FLAG: _offload_gib,
    CUDAGRAPH_CAP_FLAG: _cudagraph_cap,
    PERFORMANCE_MODE_FLAG: _performance_mode,
    OFFLOAD_BACKEND_FLAG: _offload_backend,
    OFFLOAD_GROUP_FLAG: _offload_group,
    OFFLOAD_NUM_IN_GROUP_FLAG: _offload_num_in_group,
    OFFLOAD_PREFETCH_STEP_FLAG: _offload_prefetch_step,
    ALL2ALL_FLAG: _all2all_backend,
    MAX_LOGPROBS_FLAG: _max_logprobs,
    EPLB_CONFIG_FLAG: _redundant_experts,
    KV_OFFLOADING_SIZE_FLAG: _kv_offloading_gib,
    KV_OFFLOADING_BACKEND_FLAG: _kv_offloading_backend,
    KV_TRANSFER_CONFIG_FLAG: _kv_transfer_offload_bytes,
}
"""The flags whose value the plan reads, each with the function that reads it and raises
ValueError for a value it cannot (`_check_entry` runs it on every such entry; `EngineSpec`'s
properties on the last)."""


def _flag_form_hint(arg: str) -> str | None:
    """How to write `arg` as one `FLAG_PATTERN` entry, or None when it already is one."""
    if re.fullmatch(FLAG_PATTERN, arg):
        return None
    flag = arg.partition("=")[0]
    form = "each entry is one long flag, --flag or --flag=value"
    if not arg.startswith("-"):
        return f"{form}: put a value in its flag's entry (--seed=3, not --seed and 3)"
    if not arg.startswith("--"):
        return f"{form}: write the long name (--tensor-parallel-size=8, not -tp 8)"
    if "." in flag:
        return f"{form}: pass the whole JSON object (--attention-config={{...}}, not --x.y=)"
    if "_" in flag or flag != flag.lower():
        return f"{form}, lower case with dashes ({flag.lower().replace('_', '-')})"
    return f"{form} (pattern {FLAG_PATTERN})"


def _check_entry(arg: str, owned: tuple[str, ...]) -> None:
    """Check one `spec.engine.extraArgs` entry (`EngineSpec._not_owned` collects the errors).

    Args:
        arg: the entry, `--flag` or `--flag=value`.
        owned: the flags the operator sets, reads or refuses (an abbreviation of one is refused).

    Raises:
        ValueError: naming the entry or flag and why it is refused.
    """
    flag, eq, given = arg.partition("=")
    if (read := _VALUE_READERS.get(flag)) is not None:
        read(arg)
    if flag in (*ENFORCE_EAGER_FLAGS, *EPLB_FLAGS, *ASYNC_SCHEDULING_FLAGS, *DBO_FLAGS) and eq:
        msg = f"{arg!r}: {flag} takes no value (vLLM refuses one); write {flag} alone"
        raise ValueError(msg)
    if flag == CUDAGRAPH_LIST_FLAG or (
        flag == COMPILATION_CONFIG_FLAG and _sets_capture_sizes(given)
    ):
        msg = (
            f"{arg!r}: the plan counts CUDA-graph memory up to one largest batch and the "
            "operator passes it to vLLM, which refuses capture sizes set twice; set "
            f"{CUDAGRAPH_CAP_FLAG}=N (tokens, 1 to {MAX_CUDAGRAPH_CAP:,}) instead"
        )
        raise ValueError(msg)
    if flag == DTYPE_FLAG and given not in DTYPES_KEPT:
        msg = (
            f"{arg!r}: the plan counts DeepSeek-V4's BF16 activations and weights; "
            f"{DTYPE_FLAG} may only be {' or '.join(DTYPES_KEPT)} (value in the same entry)"
        )
        raise ValueError(msg)
    if flag in OPERATOR_OWNED_FLAGS:
        msg = f"{flag} is set by the operator from the spec; {OWNED_FLAG_FIELDS[flag]}"
        raise ValueError(msg)
    if flag in RUNTIME_OWNED_FLAGS:
        msg = f"{flag} is set by the runtime (plan or DeepSeek-V4 recipe); remove it"
        if flag == SERVED_NAME_FLAG:  # the one a recipe user most often brings
            msg += (
                " (clients name the model deepseek-v4-flash or deepseek-v4-pro, after "
                "spec.model, in the OpenAI `model` field)"
            )
        raise ValueError(msg)
    if flag in UNSUPPORTED_FLAGS:
        msg = f"{flag} is not supported: {UNSUPPORTED_FLAGS[flag]}"
        raise ValueError(msg)
    abbreviated = sorted(f for f in owned if f.startswith(flag) and f != flag)
    if flag.startswith("--") and flag not in PREFIX_FLAGS and abbreviated:
        msg = (
            f"{flag} abbreviates {', '.join(abbreviated)}, which the operator sets, "
            "reads or refuses (vLLM's parser accepts abbreviations); spell flags in full"
        )
        raise ValueError(msg)
