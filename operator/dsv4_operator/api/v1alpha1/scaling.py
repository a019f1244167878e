"""`spec.autoscaling` and `spec.rollout`: how replicas (whole LeaderWorkerSet groups) change."""

import math
from typing import Final

from pydantic import Field, model_validator

from dsv4_operator.api.meta import ApiModel, with_cel_rules
from dsv4_operator.api.v1alpha1.enums import AutoscalingMode
from dsv4_operator.api.v1alpha1.quantities import IntOrPercent

__all__ = [
    "HPA_MAX_STABILIZATION_SECONDS",
    "MAX_REPLICAS",
    "Autoscaling",
    "Rollout",
    "surge_groups",
]

MAX_REPLICAS: Final = 1000
"""Most replicas a resource takes (`spec.replicas`, `spec.autoscaling.minReplicas` and
`maxReplicas`; our bound): the planner holds a tokens/s target to it too."""

HPA_MAX_STABILIZATION_SECONDS = 3600
"""The HPA's limit on `behavior.*.stabilizationWindowSeconds` (Kubernetes API validation,
`pkg/apis/autoscaling/validation`; KEDA's CRD states the same)."""


class Autoscaling(ApiModel):
    """Scale replicas on generated tokens per second, with KV-cache and queue guard rails."""

    model_config = with_cel_rules(
        {
            "rule": "self.minReplicas <= self.maxReplicas",
            "message": ("spec.autoscaling.minReplicas must be <= spec.autoscaling.maxReplicas"),
        },
        {
            "rule": "self.minReplicas > 0 || has(self.scaleToZeroIdleSeconds)",
            "message": (
                "spec.autoscaling.minReplicas 0 (scale to zero) needs "
                "spec.autoscaling.scaleToZeroIdleSeconds"
            ),
        },
        {
            "rule": "!has(self.scaleToZeroIdleSeconds) || self.minReplicas == 0",
            "message": (
                "spec.autoscaling.scaleToZeroIdleSeconds needs spec.autoscaling.minReplicas 0"
            ),
        },
        {
            "rule": "self.mode != 'hpa' || self.minReplicas >= 1",
            "message": (
                "spec.autoscaling.mode hpa cannot scale to zero: minReplicas must be "
                ">= 1 (use native or keda)"
            ),
        },
        {
            "rule": "self.mode != 'hpa' || !has(self.wakeUpQuery)",
            "message": (
                "spec.autoscaling.wakeUpQuery applies to mode native or keda (an HPA cannot "
                "scale from zero)"
            ),
        },
        {
            "rule": (
                "!self.enabled || self.mode != 'keda' || self.minReplicas >= 1 || "
                "has(self.wakeUpQuery)"
            ),
            "message": (
                "spec.autoscaling.mode keda with minReplicas 0 needs spec.autoscaling.wakeUpQuery:"
                " at zero replicas no leader exports metrics, so KEDA would never scale up again"
            ),
        },
        {
            "rule": (
                "!self.enabled || self.mode == 'native' || "
                "(self.scaleUpStabilizationSeconds <= 3600 && "
                "self.scaleDownStabilizationSeconds <= 3600)"
            ),
            "message": (
                "spec.autoscaling stabilization windows above 3600 s need mode native (the HPA "
                "that keda and hpa create allows at most 3600)"
            ),
        },
    )

    enabled: bool = False
    """Whether the autoscaler drives spec.replicas (default false: replicas are fixed)."""
    mode: AutoscalingMode = "native"
    """Who scales: native (the operator's loop), keda (a KEDA ScaledObject) or hpa."""
    min_replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    """Fewest replicas, 0 to 1000; 0 allows scale to zero (needs scaleToZeroIdleSeconds)."""
    max_replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    """Most replicas, 1 to 1000; also bounded by spec.gpu.budget."""
    target_tokens_per_second_per_replica: int | None = Field(default=None, ge=1, le=10_000_000)
    """Generated tokens per second one replica should carry (1 to 10^7 tokens/s); unset uses the
    plan's capacity estimate at its max concurrency."""
    kv_cache_usage_percent_threshold: int = Field(default=80, ge=1, le=100)
    """KV-cache usage (percent of blocks, 1 to 100) at which a replica counts as saturated and
    scale-up is forced."""
    queue_length_threshold: int = Field(default=5, ge=1, le=100_000)
    """Waiting requests per replica (a count, 1 to 100000) that force a scale-up."""
    scale_up_stabilization_seconds: int = Field(default=300, ge=0, le=86_400)
    """Seconds the metrics must ask for more replicas before scaling up (0 to 86400)."""
    scale_down_stabilization_seconds: int = Field(default=1800, ge=0, le=86_400)
    """Seconds the metrics must allow fewer replicas before scaling down (0 to 86400)."""
    scale_up_max_step: int = Field(default=1, ge=1, le=100)
    """Most replicas added in one step (1 to 100)."""
    scale_down_max_step: int = Field(default=1, ge=1, le=100)
    """Most replicas removed in one step (1 to 100)."""
    scale_to_zero_idle_seconds: int | None = Field(default=None, ge=60, le=604_800)
    """With minReplicas 0: seconds without requests before the last replica is removed (60 to
    604800; not sooner than the scale-down window after a scale-up)."""
    wake_up_query: str | None = Field(default=None, min_length=1, max_length=4096)
    """PromQL whose value counts requests waiting for this deployment outside its pods (at a
    gateway or ingress), the signal that scales up from zero replicas, where no leader exports
    metrics. native: the operator runs it on its Prometheus (`DSV4_OPERATOR_PROMETHEUS_URL`),
    summing the result, at each scrape; keda: an extra trigger (required with minReplicas 0).
    Without it a native deployment at zero stays there until `kubectl scale`."""

    @model_validator(mode="after")
    def _bounds(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            msg = f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
            raise ValueError(msg)
        if (self.min_replicas == 0) != (self.scale_to_zero_idle_seconds is not None):
            msg = "minReplicas 0 (scale to zero) and scaleToZeroIdleSeconds go together"
            raise ValueError(msg)
        if self.mode == "hpa" and self.min_replicas == 0:
            msg = "mode hpa cannot scale to zero: minReplicas must be >= 1 (use native or keda)"
            raise ValueError(msg)
        if self.mode == "hpa" and self.wake_up_query is not None:
            msg = "wakeUpQuery applies to mode native or keda (an HPA cannot scale from zero)"
            raise ValueError(msg)
        if not self.enabled:
            return self  # the scaler-specific limits below bind only a scaler that runs
        if self.mode == "keda" and self.min_replicas == 0 and self.wake_up_query is None:
            msg = (
                "mode keda with minReplicas 0 needs wakeUpQuery: at zero replicas no leader "
                "exports metrics, so KEDA would never scale up again"
            )
            raise ValueError(msg)
        if self.mode != "native":
            for field_name, value in (
                ("scaleUpStabilizationSeconds", self.scale_up_stabilization_seconds),
                ("scaleDownStabilizationSeconds", self.scale_down_stabilization_seconds),
            ):
                if value > HPA_MAX_STABILIZATION_SECONDS:
                    msg = (
                        f"{field_name} {value} exceeds {HPA_MAX_STABILIZATION_SECONDS}, the most "
                        f"the HPA that mode {self.mode} creates allows (use mode native)"
                    )
                    raise ValueError(msg)
        return self

    @property
    def active_mode(self) -> AutoscalingMode | None:
        """Who scales spec.replicas: `mode` when autoscaling is enabled, else None."""
        return self.mode if self.enabled else None


class Rollout(ApiModel):
    """How a spec change replaces replica groups (each replica is 1 to 64 nodes of GPUs)."""

    model_config = with_cel_rules(
        {
            "rule": (
                # int-or-string values are dyn in Kubernetes CEL: test the type first
                "!(type(self.maxSurge) == int ? self.maxSurge == 0 : self.maxSurge == '0%') || "
                "!(type(self.maxUnavailable) == int ? self.maxUnavailable == 0 "
                ": self.maxUnavailable == '0%')"
            ),
            "message": ("spec.rollout.maxSurge and spec.rollout.maxUnavailable must not both be 0"),
        }
    )

    max_surge: IntOrPercent = 0
    """Extra replica groups (count or percent) created during an update; default 0, since one
    surge group is another 8 to 64 GPUs."""
    max_unavailable: IntOrPercent = 1
    """Replica groups (count or percent) that may be down during an update; default 1."""
    partition: int = Field(default=0, ge=0, le=1000)
    """Replica groups with an index below this keep the old spec (a canary: 0 updates all)."""
    drain_seconds: int = Field(default=30, ge=0, le=3600)
    """Seconds in-flight requests get to finish when a pod stops (updates, scale-down, node
    drains, evictions), 0 to 3600: the runtime's `--drain-timeout-seconds` (vLLM
    `--shutdown-timeout`); the pods' terminationGracePeriodSeconds is this plus 25 s, and for
    groups of several pods this plus 65 s (a stopping worker first serves its leader's requests
    for the 40 s route settle time, `render.runtime_args.termination_grace`). A request still
    running after it is cut: long prefills and generations (1M-token contexts) need more than
    the default 30. It is part of the pod template: changing it replaces every group (as an
    image change does), and a stopping group holds its GPUs up to that grace period."""

    @model_validator(mode="after")
    def _progress(self) -> "Rollout":
        if self.max_surge in (0, "0%") and self.max_unavailable in (0, "0%"):
            msg = "maxSurge and maxUnavailable must not both be 0 (the rollout could not proceed)"
            raise ValueError(msg)
        return self


def surge_groups(value: int | str, replicas: int) -> int:
    """Groups a maxSurge allows: percentages round up (LWS webhook, as a Deployment's)."""
    if isinstance(value, int):
        return value
    return math.ceil(int(value.rstrip("%")) * replicas / 100)
