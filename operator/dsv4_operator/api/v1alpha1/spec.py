"""`spec` of a DeepSeekV4Deployment: what to serve, on which GPUs, at what load.

Cross-field rules live twice, on purpose: as CEL (`x-kubernetes-validations`, enforced by the API
server on Kubernetes >= 1.25) and as pydantic validators (enforced by the operator's parse on any
cluster). Tests check both against the same malformed resources.
"""

from typing import Annotated, Final, Literal

from pydantic import Field, PlainValidator, WithJsonSchema, field_validator, model_validator

from dsv4_operator.api.meta import ApiModel, CelRule, with_cel_rules
from dsv4_operator.api.v1alpha1.engine import EngineSpec, ResourceRequirements, SpeculativeDecoding
from dsv4_operator.api.v1alpha1.enums import (
    ROUTED_EXPERTS,
    KvCacheDtype,
    ModelName,
    ServiceType,
    WeightsFormat,
)
from dsv4_operator.api.v1alpha1.gpu import GPU_NAME_PATTERN, GpuSpec
from dsv4_operator.api.v1alpha1.placement import KUEUE_ANNOTATION_PREFIX, Placement
from dsv4_operator.api.v1alpha1.pod import PodSettings
from dsv4_operator.api.v1alpha1.quantities import Quantity, UsdAmount, quantity_bytes, usd_micros
from dsv4_operator.api.v1alpha1.scaling import MAX_REPLICAS, Autoscaling, Rollout
from dsv4_operator.api.v1alpha1.source import (
    DEFAULT_HUGGING_FACE_REPOS,
    HuggingFaceSource,
    ModelSource,
)

__all__ = [
    "MAX_MODEL_LEN_LIMIT",
    "CostSpec",
    "DeepSeekV4DeploymentSpec",
    "GpuPrice",
    "LoadTarget",
    "Parallelism",
    "ServiceSpec",
]

MAX_MODEL_LEN_LIMIT: Final = 1_048_576
"""Longest context DeepSeek-V4 supports, in tokens (`max_position_embeddings` = 1,048,576 in both
models' config.json; see `deepseek-v4-facts.md`)."""

SHM_MIN_BYTES: Final = 64 * 2**20
SHM_MAX_BYTES: Final = 2**40


def _check_max_model_len(value: object) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f'must be an integer number of tokens (1 to {MAX_MODEL_LEN_LIMIT}) or "auto"'
        raise ValueError(msg)
    if not 1 <= value <= MAX_MODEL_LEN_LIMIT:
        msg = f"must be between 1 and {MAX_MODEL_LEN_LIMIT} tokens (1M), got {value}"
        raise ValueError(msg)
    return value


MaxModelLen = Annotated[
    int | Literal["auto"],
    PlainValidator(_check_max_model_len),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "maxLength": 4,
            "minimum": 1,
            "maximum": MAX_MODEL_LEN_LIMIT,
            "pattern": "^auto$",
            "x-kubernetes-int-or-string": True,
        }
    ),
]


class LoadTarget(ApiModel):
    """The load the deployment must carry in total; the planner and cost estimate use it."""

    model_config = with_cel_rules(
        {
            "rule": "has(self.concurrency) || has(self.tokensPerSecond)",
            "message": "spec.load must set concurrency, tokensPerSecond, or both",
        }
    )

    concurrency: int | None = Field(default=None, ge=1, le=1_000_000)
    """Concurrent sequences in flight across all replicas (a count, 1 to 10^6); with
    autoscaling on, across autoscaling.maxReplicas."""
    tokens_per_second: int | None = Field(default=None, ge=1, le=1_000_000_000)
    """Generated (output) tokens per second across all replicas (1 to 10^9 tokens/s)."""

    @model_validator(mode="after")
    def _one_set(self) -> "LoadTarget":
        if self.concurrency is None and self.tokens_per_second is None:
            msg = "set concurrency, tokensPerSecond, or both"
            raise ValueError(msg)
        return self


class Parallelism(ApiModel):
    """Pinned parallel sizes of one replica; each unset size is chosen by the planner."""

    tensor: int | None = Field(default=None, ge=1, le=16)
    """Tensor-parallel size (vLLM `--tensor-parallel-size`), 1 to 16; must divide
    spec.gpu.gpusPerNode (tensor parallelism stays inside a node)."""
    data: int | None = Field(default=None, ge=1, le=1024)
    """Data-parallel size per replica (vLLM `--data-parallel-size`), 1 to 1024."""
    pipeline: int | None = Field(default=None, ge=1, le=64)
    """Pipeline-parallel size (vLLM `--pipeline-parallel-size`), 1 to 64."""
    expert: int | None = Field(default=None, ge=1, le=1024)
    """Expert-parallel size, 1 (off) or tensor x data (vLLM's EP size with
    `--enable-expert-parallel`); must divide the routed experts (256 flash, 384 pro)."""


RUNTIME_ADMIN_PORT: Final = 8081
"""The runtime's admin port (`render.runtime_args.ADMIN_PORT`), which a ClusterIP Service also
exposes as `metrics`; `spec.service.port` may not take it."""


class ServiceSpec(ApiModel):
    """The Service in front of the replicas' OpenAI-compatible HTTP endpoint."""

    model_config = with_cel_rules(
        {
            "rule": (
                f"!has(self.port) || self.port != {RUNTIME_ADMIN_PORT} || "
                "(has(self.type) && self.type != 'ClusterIP')"
            ),
            "message": f"spec.service.port must not be {RUNTIME_ADMIN_PORT} on a ClusterIP "
            "Service: it is the runtime's admin port (the Service's metrics port)",
        }
    )

    type: ServiceType = "ClusterIP"
    """Service type: ClusterIP (also exposes the runtime's `/metrics` as port `metrics`, 8081,
    inside the cluster), NodePort or LoadBalancer (the API port only)."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Service port (TCP, 1 to 65535; not 8081 on a ClusterIP Service) for the OpenAI-compatible
    API."""

    @model_validator(mode="after")
    def _not_the_admin_port(self) -> "ServiceSpec":
        if self.type == "ClusterIP" and self.port == RUNTIME_ADMIN_PORT:
            msg = (
                f"port must not be {RUNTIME_ADMIN_PORT} on a ClusterIP Service, the runtime's "
                "admin (metrics) port"
            )
            raise ValueError(msg)
        return self


class GpuPrice(ApiModel):
    """Price of one GPU type."""

    gpu_type: Annotated[str, Field(max_length=63, pattern=GPU_NAME_PATTERN)]
    """GPU type name (as in spec.gpu.types, case-insensitive)."""
    usd_per_gpu_hour: UsdAmount
    """US dollars per GPU per hour as a decimal string, e.g. `2.49` (at most 4 decimals)."""

    @property
    def micro_usd_per_gpu_hour(self) -> int:
        """Micro-dollars (10^-6 USD) per GPU-hour, exact."""
        return usd_micros(self.usd_per_gpu_hour)


class CostSpec(ApiModel):
    """GPU prices used for status.cost ($ per million tokens, GPU-hours per day)."""

    gpu_hourly_prices: Annotated[
        tuple[GpuPrice, ...],
        Field(
            max_length=32,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["gpuType"],
            },
        ),
    ] = ()
    """USD per GPU-hour per GPU type (at most 32 entries, one per type, case-insensitive)."""

    @field_validator("gpu_hourly_prices")
    @classmethod
    def _one_per_type(cls, value: tuple[GpuPrice, ...]) -> tuple[GpuPrice, ...]:
        names = [price.gpu_type.lower() for price in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            msg = f"{repeated} priced more than once (GPU type names are case-insensitive)"
            raise ValueError(msg)
        return value

    def micro_usd_per_gpu_hour(self, gpu_type: str) -> int | None:
        """Micro-dollars per GPU-hour of `gpu_type` (case-insensitive), or None if not priced."""
        for price in self.gpu_hourly_prices:
            if price.gpu_type.lower() == gpu_type.lower():
                return price.micro_usd_per_gpu_hour
        return None


_DOWNLOADABLE_FORMATS: Final = sorted({fmt for _, fmt in DEFAULT_HUGGING_FACE_REPOS})

_SPEC_RULES: Final[list[CelRule]] = [
    {
        "rule": (
            "has(self.modelSource) || self.weightsFormat in ["
            + ", ".join(f"'{fmt}'" for fmt in _DOWNLOADABLE_FORMATS)
            + "]"
        ),
        "message": (
            "spec.modelSource is required unless spec.weightsFormat is one of "
            + ", ".join(_DOWNLOADABLE_FORMATS)
            + " (no public checkpoint to download)"
        ),
    },
    {
        "rule": (
            "!has(self.parallelism) || !has(self.parallelism.tensor) || "
            "!has(self.gpu.gpusPerNode) || self.gpu.gpusPerNode % self.parallelism.tensor == 0"
        ),
        "message": (
            "spec.parallelism.tensor must divide spec.gpu.gpusPerNode "
            "(tensor parallelism stays inside one node)"
        ),
    },
    {
        "rule": (
            "!has(self.parallelism) || !has(self.parallelism.tensor) || "
            "!has(self.parallelism.data) || !has(self.parallelism.pipeline) || "
            "!has(self.gpu.gpusPerNode) || "
            "self.parallelism.tensor * self.parallelism.data * self.parallelism.pipeline <= "
            "self.gpu.gpusPerNode * self.gpu.maxNodes"
        ),
        "message": (
            "spec.parallelism: tensor x data x pipeline (GPUs per replica) must be <= "
            "spec.gpu.gpusPerNode x spec.gpu.maxNodes"
        ),
    },
    {
        "rule": (
            "!has(self.parallelism) || !has(self.parallelism.tensor) || "
            "!has(self.parallelism.data) || !has(self.parallelism.pipeline) || "
            "!has(self.gpu.gpusPerNode) || "
            "(self.parallelism.tensor * self.parallelism.data * self.parallelism.pipeline) "
            "% self.gpu.gpusPerNode == 0 || self.gpu.gpusPerNode % "
            "(self.parallelism.tensor * self.parallelism.data * self.parallelism.pipeline) == 0"
        ),
        "message": (
            "spec.parallelism: tensor x data x pipeline (GPUs per replica) must be a multiple "
            "or a divisor of spec.gpu.gpusPerNode (whole nodes, or part of one node)"
        ),
    },
    {
        "rule": (
            "!has(self.parallelism) || !has(self.parallelism.expert) || "
            "self.parallelism.expert == 1 || !has(self.parallelism.tensor) || "
            "!has(self.parallelism.data) || "
            "self.parallelism.expert == self.parallelism.tensor * self.parallelism.data"
        ),
        "message": (
            "spec.parallelism.expert must be 1 or tensor x data (vLLM's expert-parallel size)"
        ),
    },
    {
        "rule": (
            "!has(self.parallelism) || !has(self.parallelism.expert) || "
            "(self.model == 'flash' ? "
            f"{ROUTED_EXPERTS['flash']} : {ROUTED_EXPERTS['pro']}) % self.parallelism.expert == 0"
        ),
        "message": (
            "spec.parallelism.expert must divide the routed experts "
            f"({ROUTED_EXPERTS['flash']} for flash, {ROUTED_EXPERTS['pro']} for pro)"
        ),
    },
    {
        "rule": (
            "!has(self.placement) || !has(self.placement.topologyKey) || !has(self.pod) || "
            "!has(self.pod.annotations) || "
            f"!self.pod.annotations.exists(k, k.startsWith('{KUEUE_ANNOTATION_PREFIX}'))"
        ),
        "message": (
            f"spec.pod.annotations: keys under {KUEUE_ANNOTATION_PREFIX} are set by "
            "spec.placement.topologyKey; set the topology there only"
        ),
    },
    {
        "rule": (
            "!has(self.engine) || !has(self.engine.env) || "
            "(has(self.modelSource) && !has(self.modelSource.huggingFace)) || "
            "!self.engine.env.exists(e, e.name == 'HF_HOME')"
        ),
        "message": (
            "spec.engine.env: HF_HOME is set by the operator for a Hugging Face source (the "
            "download cache); choose the cache with spec.modelSource.huggingFace.cache"
        ),
    },
    {
        # A transition rule (runs on update only): Kueue's LeaderWorkerSet webhook refuses to
        # set, change or remove the queue label of an existing LeaderWorkerSet
        # (kueue pkg/controller/jobs/leaderworkerset/leaderworkerset_webhook.go ValidateUpdate).
        "rule": (
            "(has(self.placement) && has(self.placement.queueName) ? "
            "self.placement.queueName : '') == (has(oldSelf.placement) && "
            "has(oldSelf.placement.queueName) ? oldSelf.placement.queueName : '')"
        ),
        "message": (
            "spec.placement.queueName is immutable (Kueue refuses to set, change or remove the "
            "queue of an existing LeaderWorkerSet): create a new DeepSeekV4Deployment instead"
        ),
    },
    {
        # Below minReplicas is allowed: the autoscaler raises it, as the HPA raises a target
        # "below Spec.MinReplicas" (kubernetes pkg/controller/podautoscaler/horizontal.go), so
        # a manifest can leave spec.replicas out (default 1) whatever minReplicas is, and a
        # GitOps sync never puts the scaled count back. 0 is not: the HPA does not scale a
        # target at zero replicas when minReplicas is not 0 ("scaling is disabled since the
        # replica count of the target is zero", same file).
        "rule": (
            "!has(self.autoscaling) || !self.autoscaling.enabled || "
            "(self.replicas <= self.autoscaling.maxReplicas && "
            "(self.replicas >= 1 || self.autoscaling.minReplicas == 0))"
        ),
        "message": (
            "spec.replicas must be at most spec.autoscaling.maxReplicas, and at least 1 unless "
            "spec.autoscaling.minReplicas is 0, when autoscaling is enabled (a count below "
            "minReplicas is raised to it by the autoscaler)"
        ),
    },
    {
        "rule": (
            "!has(self.rollout) || !has(self.rollout.partition) || self.rollout.partition == 0 "
            "|| ((!has(self.autoscaling) || !self.autoscaling.enabled) && "
            "self.rollout.partition <= self.replicas)"
        ),
        "message": (
            "spec.rollout.partition (a canary) must be at most spec.replicas, and needs "
            "autoscaling disabled: the autoscaler adds and removes groups by index, the "
            "highest (the canary's) first"
        ),
    },
]


def _pinned_layout_problems(p: Parallelism, per_node: int, max_nodes: int) -> list[str]:
    """What is wrong with pinned tensor/data/pipeline sizes on nodes of `per_node` GPUs."""
    problems = []
    if p.tensor is not None and per_node % p.tensor:
        problems.append(
            f"parallelism.tensor ({p.tensor}) must divide gpu.gpusPerNode "
            f"({per_node}): tensor parallelism stays inside one node"
        )
    if None not in (p.tensor, p.data, p.pipeline):
        per_replica = (p.tensor or 1) * (p.data or 1) * (p.pipeline or 1)
        limit = per_node * max_nodes
        if per_replica > limit:
            problems.append(
                f"parallelism: tensor x data x pipeline = {per_replica} GPUs per replica "
                f"exceeds gpu.gpusPerNode x gpu.maxNodes = {limit}"
            )
        if per_replica % per_node and per_node % per_replica:
            problems.append(
                f"parallelism: tensor x data x pipeline = {per_replica} GPUs per replica must"
                f" be a multiple or a divisor of gpu.gpusPerNode ({per_node})"
            )
    return problems


class DeepSeekV4DeploymentSpec(ApiModel):
    """Desired state: a DeepSeek-V4 model served by vLLM on Kubernetes GPU nodes."""

    model_config = with_cel_rules(*_SPEC_RULES)

    model: Annotated[
        ModelName,
        Field(
            json_schema_extra={
                "x-kubernetes-validations": [
                    {
                        "rule": "self == oldSelf",
                        "message": (
                            "spec.model is immutable: create a new DeepSeekV4Deployment to "
                            "switch between flash and pro"
                        ),
                    }
                ]
            }
        ),
    ]
    """Model: flash (DeepSeek-V4-Flash, 284B total / 13B active parameters) or pro
    (DeepSeek-V4-Pro, 1.6T / 49B). Immutable."""
    model_source: ModelSource | None = None
    """Where the checkpoint comes from; unset downloads from the Hugging Face Hub:
    deepseek-ai/DeepSeek-V4-{Flash,Pro} (official), nvidia/DeepSeek-V4-{Flash,Pro}-NVFP4 (nvfp4),
    sgl-project/DeepSeek-V4-{Flash,Pro}-FP8 (fp8); required for bf16 and int4."""
    weights_format: WeightsFormat = "official"
    """Checkpoint format: official (FP4 experts + FP8), nvfp4, fp8, bf16 or int4."""
    kv_cache_dtype: KvCacheDtype = "fp8"
    """KV cache dtype: fp8 (vLLM fp8_ds_mla, 584 bytes per entry) or bf16 (1024 bytes)."""
    max_model_len: MaxModelLen = "auto"
    """Longest sequence (prompt + output) in tokens, 1 to 1048576, or "auto" for the longest
    that fits the plan."""
    max_num_seqs: int | None = Field(default=None, ge=1, le=16_384)
    """Most sequences one engine runs at once (vLLM `--max-num-seqs`), 1 to 16384; unset lets
    the planner choose."""
    max_num_batched_tokens: int | None = Field(default=None, ge=64, le=MAX_MODEL_LEN_LIMIT)
    """Most tokens in one scheduler step (vLLM `--max-num-batched-tokens`), 64 to 1048576;
    unset lets the planner choose."""
    gpu_memory_utilization_percent: int = Field(default=92, ge=10, le=99)
    """Percent of each GPU's memory vLLM may use (vLLM `--gpu-memory-utilization` x 100), 10 to
    99; the default 92 is vLLM 0.33's own."""
    load: LoadTarget | None = None
    """Target load (concurrency and/or tokens per second) for sizing and cost."""
    gpu: GpuSpec
    """GPU types (ordered fallback), counts per node and replica, and placement."""
    parallelism: Parallelism | None = None
    """Pinned tensor/data/pipeline/expert parallel sizes; unset sizes are planned."""
    replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    """Replicas (each a LeaderWorkerSet group of 1 to maxNodes pods), 0 to 1000; the scale
    subresource writes it. With autoscaling enabled the autoscaler owns it: leave it out of
    manifests (a GitOps sync would put the scaled count back); at most maxReplicas, 0 only
    with minReplicas 0, and a count below minReplicas (such as the default 1) is raised to
    minReplicas by the autoscaler, as an HPA raises its target."""
    speculative_decoding: SpeculativeDecoding | None = None
    """MTP speculative decoding; unset disables it."""
    engine: EngineSpec = Field(default_factory=EngineSpec)
    """Engine image, version, extra vLLM flags and environment."""
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    """CPU and memory requests/limits of each worker pod (GPUs come from the plan)."""
    shm_size: Quantity | None = None
    """Size of /dev/shm per worker pod as a quantity (64Mi to 1Ti, e.g. `16Gi`); unset uses the
    planned size. The host KV cache of a `--kv-offloading-size` in `spec.engine.extraArgs`,
    which vLLM keeps in /dev/shm, is added to either, so leave it out of the figure."""
    pod: PodSettings = Field(default_factory=PodSettings)
    """Pull secrets, priority, runtime class, scheduler, ServiceAccount, labels and annotations
    of the worker pods."""
    placement: Placement = Field(default_factory=Placement)
    """How replica groups are placed and admitted: LeaderWorkerSet exclusive topology, Kueue
    queue, priority and topology-aware scheduling."""
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    """Token-throughput autoscaling of replicas."""
    rollout: Rollout = Field(default_factory=Rollout)
    """How updates replace replica groups."""
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    """The Service exposing the OpenAI-compatible API."""
    cost: CostSpec = Field(default_factory=CostSpec)
    """GPU prices for the cost estimate in status; when every type in spec.gpu.types is priced,
    they also choose the GPU type and layout (the cheapest that fits), so a price change can
    re-plan and roll every group."""
    paused: bool = False
    """When true the operator stops reconciling (no rollout, no scaling) until set false."""

    @field_validator("shm_size")
    @classmethod
    def _shm_in_range(cls, value: str | None) -> str | None:
        if value is not None and not SHM_MIN_BYTES <= quantity_bytes(value) <= SHM_MAX_BYTES:
            msg = f"must be between 64Mi and 1Ti, got {value} ({quantity_bytes(value)} bytes)"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> "DeepSeekV4DeploymentSpec":
        problems = self._problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _problems(self) -> list[str]:
        problems = []
        if self.model_source is None and self.weights_format not in _DOWNLOADABLE_FORMATS:
            problems.append(
                f"modelSource is required for weightsFormat {self.weights_format} (no public "
                f"checkpoint to download; downloadable: {', '.join(_DOWNLOADABLE_FORMATS)})"
            )
        p, per_node = self.parallelism, self.gpu.gpus_per_node
        # With gpusPerNode unset the node size is each type's (the planner checks the pins).
        if p is not None and per_node is not None:
            problems += _pinned_layout_problems(p, per_node, self.gpu.max_nodes)
        if p is not None and p.expert is not None and p.expert != 1:
            if p.tensor is not None and p.data is not None and p.expert != p.tensor * p.data:
                problems.append(
                    f"parallelism.expert ({p.expert}) must be 1 or tensor x data "
                    f"({p.tensor * p.data})"
                )
            if ROUTED_EXPERTS[self.model] % p.expert:
                problems.append(
                    f"parallelism.expert ({p.expert}) must divide the {ROUTED_EXPERTS[self.model]}"
                    f" routed experts of {self.model}"
                )
        problems += self._env_problems()
        if self.placement.topology_key is not None:
            clash = sorted(k for k in self.pod.annotations if k.startswith(KUEUE_ANNOTATION_PREFIX))
            if clash:
                problems.append(
                    f"pod.annotations {clash}: keys under {KUEUE_ANNOTATION_PREFIX} are set by "
                    "placement.topologyKey; set the topology there only"
                )
        return problems + self._replica_problems()

    def _replica_problems(self) -> list[str]:
        """`spec.replicas` against autoscaling and the rollout's partition."""
        problems = []
        scaling = self.autoscaling
        if scaling.enabled and self.replicas > scaling.max_replicas:
            problems.append(
                f"replicas ({self.replicas}) must be at most autoscaling.maxReplicas "
                f"({scaling.max_replicas}) when autoscaling is enabled"
            )
        elif scaling.enabled and self.replicas == 0 and scaling.min_replicas > 0:
            problems.append(
                f"replicas 0 with autoscaling.minReplicas {scaling.min_replicas}: set replicas "
                "to 1 or more, or leave it out (default 1); a count below minReplicas is raised "
                "to it by the autoscaler, but an HPA (modes keda and hpa) does not scale a "
                "target at zero replicas"
            )
        partition = self.rollout.partition
        if partition and scaling.enabled:
            problems.append(
                f"rollout.partition ({partition}, a canary) needs autoscaling disabled: the "
                "autoscaler adds and removes groups by index, the highest (the canary's) first"
            )
        elif partition > self.replicas:
            problems.append(
                f"rollout.partition ({partition}) must be at most replicas ({self.replicas}): "
                "groups below it keep the previous template (at replicas, a staged rollout "
                "updates none)"
            )
        return problems

    def _env_problems(self) -> list[str]:
        """`spec.engine.env` names the operator sets for a Hugging Face source."""
        source = self.model_source
        hub = source.hugging_face if source is not None else None
        downloads = hub is not None or (
            source is None and self.weights_format in _DOWNLOADABLE_FORMATS
        )
        names = {var.name for var in self.engine.env}
        problems = []
        if downloads and "HF_HOME" in names:
            problems.append(
                "engine.env: HF_HOME is set by the operator for a Hugging Face source (the "
                "download cache); choose the cache with modelSource.huggingFace.cache"
            )
        if hub is not None and hub.token_secret_ref is not None and "HF_TOKEN" in names:
            problems.append(
                "engine.env: HF_TOKEN is set by the operator from "
                "modelSource.huggingFace.tokenSecretRef; set it in one place"
            )
        return problems

    @property
    def effective_model_source(self) -> ModelSource:
        """`model_source`, or the default Hugging Face repository of (model, weightsFormat)."""
        if self.model_source is not None:
            return self.model_source
        repo = DEFAULT_HUGGING_FACE_REPOS[(self.model, self.weights_format)]
        return ModelSource(hugging_face=HuggingFaceSource(repo=repo))

    @property
    def shm_bytes(self) -> int | None:
        """The /dev/shm override in bytes, or None when the planner sizes it."""
        return None if self.shm_size is None else quantity_bytes(self.shm_size)
