"""The status the operator wants a DeepSeekV4Deployment to show (pure: inputs in, dict out).

The operator owns `observedGeneration`, `plan`, `replicas`, `readyReplicas`, `selector`,
`endpoint`, `cost`, `startingSince` and the conditions Ready, Planned, Progressing, Available and
Degraded, and ScalingActive unless `spec.autoscaling.mode` is native (in keda and hpa mode it
repeats what the ScaledObject or HorizontalPodAutoscaler reports; with autoscaling disabled it is
removed, and so is the native autoscaler's while the resource is paused, since nothing writes it
then). Other keys (the native autoscaler's `recentScalingDecisions` and ScalingActive, kopf's
own keys) are left as they are. `status_patch` returns only the keys that differ, so an
unchanged resource gets no write at all.

A condition's `lastTransitionTime` changes only when its `status` changes (Kubernetes API
conventions), so repeated reconciles of an unchanged resource render identical conditions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.planning import Code, Plan, Rejection
from dsv4_operator.planning.from_spec import spec_words
from dsv4_operator.render.labels import LABEL_ROLE, Owner, child_names, pod_selector
from dsv4_operator.render.rollout import RolloutCounts, rollout_counts
from dsv4_operator.render.runtime_args import shm_size_bytes

__all__ = [
    "APPLY_FAILED",
    "LWS_NOT_FOUND",
    "NATIVE_NO_METRICS",
    "NATIVE_SCALED_TO_ZERO",
    "NATIVE_SCALING",
    "NATIVE_WAKE_UP",
    "NATIVE_WAKE_UP_FAILED",
    "OWNED_CONDITIONS",
    "OWNED_KEYS",
    "RECONCILE_ERROR",
    "REFERENCE_MISSING",
    "WAITING",
    "Observation",
    "desired_status",
    "plan_status",
    "rfc3339",
    "status_patch",
]

APPLY_FAILED: Final = "ApplyFailed"
"""Reason when the API server refused a rendered child for a non-transient cause (e.g. 422)."""
WAITING: Final = "Waiting"
"""Progressing reason (and Ready's, on a resource that has none yet) while applying the spec
keeps failing for a cause that clears by itself: a Secret or child a deleted predecessor of the
same name left still being garbage-collected, a webhook timing out (HTTP 409/429/5xx)."""
RECONCILE_ERROR: Final = "ReconcileError"
"""Reason when a reconcile raised an unexpected exception (an operator bug, or an API refusal no
step expects); retried. Ready, Degraded and Progressing say it (Planned too when the reconcile
did not get as far as a plan), the counts and Available stay live (`_reconcile_error`)."""
OWNED_CONDITIONS: Final = ("Ready", "Planned", "Progressing", "Available", "Degraded")
"""Condition types this operator writes (ScalingActive belongs to the autoscaler)."""
OWNED_KEYS: Final = (
    "observedGeneration",
    "conditions",
    "plan",
    "replicas",
    "readyReplicas",
    "selector",
    "endpoint",
    "cost",
    "startingSince",
)
"""Top-level status keys the operator writes."""
_TEXT_MAX: Final = 1024
_MAX_USD: Final = Decimal("999999.9999")


@dataclass(frozen=True)
class Observation:
    """What one reconcile found, as input to `desired_status`.

    Attributes:
        owner: the resource (its generation becomes observedGeneration).
        spec: the parsed spec, or None when it failed to parse.
        plan: the plan (fitting), or None when planning failed or was skipped; with
            `ApplyFailed`, the plan whose children were refused (written with `applied: false`);
            with `ReconcileError`, this generation's plan when the failed reconcile got that far
            (written with `applied` from `plan_applied`), else None.
        error_reason: `InvalidSpec`, `PlanFailed` or `InsufficientCapacity` when the spec cannot
            be rolled out, `ApplyFailed` when the API server refused a child, `ReconcileError`
            when the reconcile raised something no step expects; None otherwise.
        error_message: the error, naming the field and the limit.
        paused: spec.paused is true: nothing was changed.
        lws_api: the LeaderWorkerSet API is served by the cluster.
        lws_status: the LeaderWorkerSet's `.status` (None when absent).
        lws_changed: `lws_status` predates the applied spec: this reconcile created the
            LeaderWorkerSet or changed its pod template or replicas, or its
            `status.observedGeneration` (set by LWS releases that have it) is older than its
            `metadata.generation`. The rollout is then reported in progress until a later
            reconcile reads counts the LWS controller made for the current spec.
        endpoint: base URL of the OpenAI API.
        keda_api: the KEDA ScaledObject API is served; with `spec.autoscaling.mode: keda` and
            no KEDA the ScaledObject is skipped, and ScalingActive=False (`KEDAMissing`) says so.
        missing: Secrets and ConfigMaps (or keys) the pods reference that do not exist: while
            groups are not ready, Ready=False and Degraded=True say `ReferenceMissing`.
        starting_since: since when every group runs the current template but some are not
            ready; None when that is not the case (the reconciler sets it from the same counts
            `desired_status` reads). Degraded turns True once it is older than the plan's
            startup budget. Written to `status.startingSince` (the reconciler reads it back
            after a restart).
        lws_target: (replicas, partition) of the live LeaderWorkerSet, for a paused resource
            or a spec that cannot be rolled out (whose edits are not applied): its counts and
            Available stay live.
        lws_held: the LeaderWorkerSet was left on its current template because `missing` is
            not empty (its groups keep serving); Ready stays False until the objects exist.
        lws_absent: paused, or a spec that cannot be rolled out, and the LeaderWorkerSet API
            answered that the LeaderWorkerSet does not exist: Ready and Available are False
            (`LWS_NOT_FOUND`) and the replica counts 0, not the last ones read.
        scaler: the live ScaledObject (keda mode) or HorizontalPodAutoscaler (hpa mode) as the
            API server returned it, whose `.status.conditions` ScalingActive repeats; None
            when it was not applied (no KEDA) or in other modes.
        plan_applied: with `ReconcileError` and `plan`, the failed reconcile had applied the
            plan's children (the LeaderWorkerSet's template not held) before it failed.
        waiting: applying the spec failed again for a cause that clears by itself (`WAITING`):
            the error, naming the object; only Progressing (and Ready, when absent) are
            written then, not `observedGeneration` nor the plan, which still describe the
            last generation reported in full.
    """

    owner: Owner
    spec: DeepSeekV4DeploymentSpec | None = None
    plan: Plan | None = None
    error_reason: str | None = None
    error_message: str = ""
    paused: bool = False
    lws_api: bool = True
    lws_status: Mapping[str, Any] | None = None
    lws_changed: bool = False
    endpoint: str = ""
    keda_api: bool = True
    missing: tuple[str, ...] = ()
    starting_since: datetime | None = None
    lws_target: tuple[int, int] | None = None
    lws_held: bool = False
    scaler: Mapping[str, Any] | None = None
    lws_absent: bool = False
    plan_applied: bool = False
    waiting: str = ""


KEDA_SCALING: Final = "KEDA"
"""ScalingActive reason: keda mode, and KEDA reports the ScaledObject `Ready=True` (or
`Active=True`: scaling on the triggers that answer, `PartialTriggerError`)."""
KEDA_AWAITED: Final = "AwaitingKEDA"
"""ScalingActive reason (status Unknown): keda mode, and KEDA has not reported the ScaledObject
ready or failing yet (no conditions, or KEDA's initial all-Unknown ones): no KEDA operator
runs, or it has not reconciled the object."""
KEDA_MISSING: Final = "KEDAMissing"
"""ScalingActive reason: keda mode on a cluster without KEDA."""
KEDA_NOT_READY: Final = "KEDANotReady"
"""ScalingActive reason: the ScaledObject reports `Ready=False` (e.g. `TriggerError`: its
Prometheus queries fail) or `Paused=True`; KEDA keeps the replica count as it is."""
HPA_SCALING: Final = "HPA"
"""ScalingActive reason: hpa mode, and the HorizontalPodAutoscaler reports `ScalingActive=True`
(it computes replica counts) and no failure."""
HPA_AWAITED: Final = "AwaitingHPA"
"""ScalingActive reason (status Unknown): hpa mode, and the HorizontalPodAutoscaler has not
reported ScalingActive yet (the HPA controller has not synced it)."""
HPA_NOT_SCALING: Final = "HPANotScaling"
"""ScalingActive reason: the HorizontalPodAutoscaler reports `ScalingActive=False` (e.g.
`FailedGetExternalMetric`: prometheus-adapter does not serve the metrics) or `AbleToScale=False`
(e.g. `FailedUpdateScale`); it keeps the replica count as it is."""
SCALER_REASONS: Final = frozenset(
    {
        KEDA_SCALING,
        KEDA_AWAITED,
        KEDA_MISSING,
        KEDA_NOT_READY,
        HPA_SCALING,
        HPA_AWAITED,
        HPA_NOT_SCALING,
    }
)
"""ScalingActive reasons the reconciler writes (keda and hpa mode); the native autoscaler
writes its own."""
NATIVE_SCALING: Final = "TokenThroughput"
"""ScalingActive reason: the native autoscaler read some group's engine metrics
(`handlers.autoscaler`)."""
NATIVE_NO_METRICS: Final = "NoMetrics"
"""ScalingActive reason: the native autoscaler read no group's engine metrics."""
NATIVE_WAKE_UP: Final = "WakeUpQuery"
"""ScalingActive reason: no replica runs (native), and `wakeUpQuery` answers."""
NATIVE_WAKE_UP_FAILED: Final = "WakeUpQueryFailed"
"""ScalingActive reason: no replica runs (native), and `wakeUpQuery` fails."""
NATIVE_SCALED_TO_ZERO: Final = "ScaledToZero"
"""ScalingActive reason: no replica runs (native), and no `wakeUpQuery` is set."""
NATIVE_REASONS: Final = frozenset(
    {
        NATIVE_SCALING,
        NATIVE_NO_METRICS,
        NATIVE_WAKE_UP,
        NATIVE_WAKE_UP_FAILED,
        NATIVE_SCALED_TO_ZERO,
    }
)
"""ScalingActive reasons the native autoscaler writes."""
REFERENCE_MISSING: Final = "ReferenceMissing"
"""Ready/Degraded reason: a Secret or ConfigMap (or key) the pods read does not exist."""
LWS_NOT_FOUND: Final = "LeaderWorkerSetNotFound"
"""Ready/Available reason: the spec is paused or cannot be rolled out, so the operator leaves
the LeaderWorkerSet alone, and it does not exist (deleted by hand): no group runs."""


def _text(value: str) -> str:
    return value if len(value) <= _TEXT_MAX else value[: _TEXT_MAX - 3] + "..."


_STRUCTURAL: Final = frozenset(
    {
        Code.TP_EXCEEDS_NODE,
        Code.TP_NOT_DIVIDING_HEADS,
        Code.TP_NOT_DIVIDING_OUTPUT_GROUPS,
        Code.TP_SPLITS_QUANT_BLOCK,
        Code.EP_NOT_DIVIDING_EXPERTS,
        Code.EXPERT_SPLIT_PADDED,
        Code.PIPELINE_PARALLEL_UNSUPPORTED,
        Code.PINNED_LAYOUT_MISMATCH,
        Code.GPU_BUDGET_EXCEEDED,
    }
)
"""Rejection codes of layouts that break a rule rather than run short of memory."""


def _nearness(rejection: Rejection) -> tuple[int, int]:
    """Sort key: how close a rejection came (larger is closer).

    More GPUs first; then KV or concurrency shortfalls before weights that do not fit, before
    broken layout rules.
    """
    codes = {f.code for f in rejection.reasons}
    severity = 2 if codes & _STRUCTURAL else 1 if Code.WEIGHTS_EXCEED_BUDGET in codes else 0
    return rejection.layout.gpus, -severity


def plan_status(
    spec: DeepSeekV4DeploymentSpec, plan: Plan, *, applied: bool = True
) -> dict[str, Any]:
    """`status.plan`: GPU type and why, rejected earlier types, layout, per-GPU memory, shm.

    `applied` is False while the groups do not run this plan (a child refused, or the
    LeaderWorkerSet's template held while a reference is missing).
    """
    c = plan.chosen
    lay, mem = c.layout, c.memory
    # Types with no feasible layout at all, each with the reason of the closest it came (its
    # largest layout, and among those one that holds the weights): a type that fits but lost
    # on order or price is not "rejected".
    closest: dict[str, Rejection] = {}
    for rejection in plan.rejected:
        gpu = rejection.gpu
        if gpu == c.gpu.name or gpu in plan.feasible_gpu_types or not rejection.reasons:
            continue
        if gpu not in closest or _nearness(rejection) > _nearness(closest[gpu]):
            closest[gpu] = rejection
    rejected = {g: _text(r.reasons[0].worded(spec_words)) for g, r in closest.items()}
    return {
        "gpuType": c.gpu.name,
        "reason": _text(plan.reasons[0] if plan.reasons else f"{c.gpu.name} fits"),
        "rejected": [{"gpuType": g, "reason": r} for g, r in list(rejected.items())[:8]],
        "layout": {
            "nodesPerReplica": lay.nodes,
            "gpusPerNode": lay.gpus_per_node,
            "gpusPerReplica": lay.gpus,
            "tensor": lay.tensor_parallel,
            "data": lay.data_parallel,
            "pipeline": lay.pipeline_parallel,
            "expert": lay.expert_parallel_size,
        },
        "memoryPerGpu": {
            "capacityBytes": c.gpu.memory_bytes,
            "budgetBytes": mem.budget_bytes,
            "weightsBytes": mem.weights.total_bytes,
            "kvCacheBytes": max(mem.kv_cache_bytes, 0),
            "activationsBytes": mem.activation_bytes,
            "overheadBytes": mem.overhead_bytes + mem.cuda_graph_bytes,
        },
        "maxModelLen": c.max_model_len,
        "kvCacheTokens": c.kv_tokens_per_replica,
        "maxConcurrency": c.max_concurrency,
        "shmBytes": shm_size_bytes(spec, plan),
        "warnings": [_text(f"{w.code}: {w.worded(spec_words)}") for w in plan.warnings][:32],
        "applied": applied,
    }


def _usd(value: Decimal) -> str | None:
    if value > _MAX_USD:
        return None
    text = f"{value.quantize(Decimal('0.0001')):f}".rstrip("0").rstrip(".")
    return text or "0"


def _replicas_at(spec: DeepSeekV4DeploymentSpec, plan: Plan) -> int:
    """Replicas that serve `spec.load.tokensPerSecond`.

    With autoscaling, what its per-replica target asks (within min/maxReplicas; the plan's
    estimate when unset); else spec.replicas. New-user trial: $ per million tokens had divided
    the current replicas' cost by the target load, 4x too low for an autoscaled example that
    runs 4 replicas at that load.
    """
    a, load = spec.autoscaling, spec.load
    if not a.enabled or load is None or not load.tokens_per_second:
        return max(spec.replicas, 1)
    per = a.target_tokens_per_second_per_replica or max(plan.chosen.tokens_per_second, 1)
    return min(max(-(-load.tokens_per_second // per), a.min_replicas, 1), a.max_replicas)


def _cost(spec: DeepSeekV4DeploymentSpec, plan: Plan) -> dict[str, Any]:
    gpus = plan.chosen.layout.gpus * spec.replicas
    out: dict[str, Any] = {"gpuHoursPerDay": gpus * 24}
    micro = spec.cost.micro_usd_per_gpu_hour(plan.chosen.gpu.name)
    if micro is None:
        return out
    per_hour = Decimal(micro * gpus) / 10**6
    if (text := _usd(per_hour)) is not None:
        out["usdPerHour"] = text
    load = spec.load
    if load is not None and load.tokens_per_second:
        at_load = Decimal(micro * plan.chosen.layout.gpus * _replicas_at(spec, plan)) / 10**6
        per_million = at_load / (Decimal(load.tokens_per_second) * 3600 / 10**6)
        if (text := _usd(per_million)) is not None:
            out["usdPerMillionTokens"] = text
    return out


def _selector(owner: Owner) -> str:
    labels = {**pod_selector(owner), LABEL_ROLE: "leader"}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _planned(obs: Observation) -> tuple[DeepSeekV4DeploymentSpec, Plan]:
    """The spec and plan of an observation without an error (both are set by contract).

    Raises:
        ValueError: the observation has neither an error nor a spec and plan.
    """
    if obs.spec is None or obs.plan is None:
        msg = "an Observation without error_reason or paused needs spec and plan"
        raise ValueError(msg)
    return obs.spec, obs.plan


def _scaler_conditions(scaler: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """The live scaler's `.status.conditions` by type (empty before its controller wrote any)."""
    status = (scaler or {}).get("status") or {}
    conditions = (status.get("conditions") or []) if isinstance(status, Mapping) else []
    return {str(c.get("type")): c for c in conditions if isinstance(c, Mapping)}


def _scaler_name(obs: Observation) -> str:
    """The scaler's name: the live object's, else the resource's (the scaler is named so)."""
    name = ((obs.scaler or {}).get("metadata") or {}).get("name")
    return str(name or obs.owner.name)


def _reported(kind: str, obs: Observation, c: Mapping[str, Any]) -> str:
    """`the HorizontalPodAutoscaler NAME reports ScalingActive=False (REASON): MESSAGE`.

    NAME is `_scaler_name`; `c` is one of the scaler's conditions.
    """
    name = _scaler_name(obs)
    detail = f" ({c['reason']})" if c.get("reason") else ""
    text = f": {c['message']}" if c.get("message") else ""
    return f"the {kind} {name} reports {c.get('type')}={c.get('status')}{detail}{text}"


def _scaling_condition(
    obs: Observation, spec: DeepSeekV4DeploymentSpec
) -> dict[str, tuple[str, str, str]]:
    """ScalingActive under `mode: keda` or `mode: hpa`, from the scaler's own conditions.

    KEDA or the HPA scales; the operator repeats whether it can.

    keda: False/`KEDAMissing` without KEDA; False/`KEDANotReady` when the ScaledObject reports
    `Ready=False` or `Paused=True` (KEDA's `scale_executor`: `TriggerError` when its triggers
    fail and no fallback is set, `ScaledObjectCheckFailed`, `ErrorGettingCurrentReplicas`);
    True/`KEDA` when it reports `Ready=True` (`ScaledObjectReady`) or `Active=True` (KEDA's
    `PartialTriggerError` sets Ready=Unknown beside Active=True: the triggers that answer
    scale); else Unknown/`AwaitingKEDA`: KEDA has written no condition yet, or only the
    all-Unknown ones it starts with (kedacore/keda `apis/keda/v1alpha1/condition_types.go`,
    `GetInitializedConditions`), so nothing has confirmed that it scales. hpa:
    False/`HPANotScaling` when the HPA reports `ScalingActive=False` or `AbleToScale=False`
    (Kubernetes' HPA controller: `FailedGetExternalMetric`, `FailedGetScale`,
    `FailedUpdateScale`, `ScalingDisabled` at zero replicas...); True/`HPA` when it reports
    `ScalingActive=True`; else Unknown/`AwaitingHPA` (not synced yet). Not evaluated while
    the resource is paused: the condition is left as last read.
    """
    mode = spec.autoscaling.active_mode
    if mode == "keda":
        return {"ScalingActive": _keda_scaling(obs)}
    if mode == "hpa":
        return {"ScalingActive": _hpa_scaling(obs)}
    return {}


def _keda_scaling(obs: Observation) -> tuple[str, str, str]:
    """ScalingActive's (status, reason, message) in keda mode (`_scaling_condition`)."""
    if not obs.keda_api:
        return (
            "False",
            KEDA_MISSING,
            "spec.autoscaling.mode is keda but the cluster does not serve "
            "keda.sh/v1alpha1 ScaledObjects: install KEDA (https://keda.sh) or use mode: "
            "native; replicas stay at spec.replicas",
        )
    found = _scaler_conditions(obs.scaler)
    failing = [("Ready", "False"), ("Paused", "True")]
    bad = next((found[t] for t, v in failing if found.get(t, {}).get("status") == v), None)
    if bad is not None:
        message = f"{_reported('ScaledObject', obs, bad)}; replicas stay as they are"
        return ("False", KEDA_NOT_READY, _text(message))
    if any(found.get(t, {}).get("status") == "True" for t in ("Ready", "Active")):
        return ("True", KEDA_SCALING, "a KEDA ScaledObject scales this resource")
    message = (
        f"the ScaledObject {_scaler_name(obs)} has not reported Ready yet: KEDA writes its "
        "conditions once the KEDA operator has read the ScaledObject; until then nothing "
        "has confirmed that it scales this resource (is the KEDA operator running?)"
    )
    return ("Unknown", KEDA_AWAITED, message)


def _hpa_scaling(obs: Observation) -> tuple[str, str, str]:
    """ScalingActive's (status, reason, message) in hpa mode (`_scaling_condition`)."""
    found = _scaler_conditions(obs.scaler)
    for ctype in ("ScalingActive", "AbleToScale"):
        c = found.get(ctype) or {}
        if c.get("status") == "False":
            message = _reported("HorizontalPodAutoscaler", obs, c)
            if c.get("reason") == "FailedGetExternalMetric":
                message += (
                    "; prometheus-adapter must serve dsv4_generation_tokens_per_second, "
                    "dsv4_kv_cache_usage and dsv4_requests_waiting (README, mode: hpa)"
                )
            return ("False", HPA_NOT_SCALING, _text(message))
    if (found.get("ScalingActive") or {}).get("status") == "True":
        return ("True", HPA_SCALING, "a HorizontalPodAutoscaler scales this resource")
    message = (
        f"the HorizontalPodAutoscaler {_scaler_name(obs)} has not reported ScalingActive "
        "yet: kube-controller-manager's HPA controller writes it when it syncs the HPA "
        "(every 15 s by default)"
    )
    return ("Unknown", HPA_AWAITED, message)


def _scaling_active_applies(reason: str, mode: str | None, paused: bool) -> bool:
    """Whether a stored ScalingActive with `reason` still applies under this spec.

    keda/hpa: ours (`SCALER_REASONS`; written again by this reconcile unless paused, when
    nothing else is kept). Native: any but ours, and not the autoscaler's own while paused,
    since it stops writing then (day-2 finding: it said token-throughput scaling was active
    after autoscaling was switched off). Autoscaling disabled: nothing scales, none applies.
    """
    if mode in {"keda", "hpa"}:
        return reason in SCALER_REASONS or not paused
    if mode == "native":
        return reason not in SCALER_REASONS and not (paused and reason in NATIVE_REASONS)
    return False


def _availability(c: RolloutCounts) -> tuple[str, str, str]:
    if c.want == 0:
        return ("False", "ScaledToZero", "spec.replicas is 0")
    if c.serving >= 1:  # a ready surge group serves too
        return ("True", "MinimumReplicasAvailable", c.text)
    return ("False", "NoReplicaReady", c.text)


def _lws_not_found(owner: Owner, until: str) -> str:
    """Why nothing serves: the LeaderWorkerSet is gone and is not created again until `until`."""
    name = child_names(owner).leaderworkerset
    return (
        f"the LeaderWorkerSet {name} does not exist: no group runs; the operator "
        f"creates it once {until}"
    )


def _paused(obs: Observation) -> dict[str, tuple[str, str, str]]:
    """Conditions of a paused resource: the live counts, and that nothing is being changed.

    `obs.lws_target` gives the replicas and partition the live LeaderWorkerSet has (a paused
    spec's edits are not applied).
    """
    message = "spec.paused is true: the operator changes nothing"
    if obs.lws_absent:
        gone = _lws_not_found(obs.owner, "spec.paused is false")
        return {
            "Progressing": ("False", "Paused", message),
            "Ready": ("False", LWS_NOT_FOUND, gone),
            "Available": ("False", LWS_NOT_FOUND, gone),
        }
    if obs.lws_status is None or obs.lws_target is None:
        return {"Progressing": ("False", "Paused", message)}
    c = rollout_counts(*obs.lws_target, obs.lws_status, obs.lws_changed)
    done = c.rolled and c.ready >= c.want
    if not done:
        message += "; a rollout the LeaderWorkerSet already started goes on"
    message += f" ({c.text})"
    return {
        "Progressing": ("False", "Paused", message),
        "Ready": ("True", "AllReplicasReady", c.text)
        if done
        else ("False", "ReplicasNotReady", c.text),
        "Available": _availability(c),
    }


def _rollout(
    obs: Observation, spec: DeepSeekV4DeploymentSpec, plan: Plan, now: datetime
) -> dict[str, tuple[str, str, str]]:
    """Ready, Progressing, Available and Degraded from the LeaderWorkerSet's counts."""
    c = rollout_counts(spec.replicas, spec.rollout.partition, obs.lws_status, obs.lws_changed)
    out: dict[str, tuple[str, str, str]] = {}
    if c.rolled and c.ready >= c.want:
        out["Progressing"] = ("False", "RolloutComplete", c.text)
        out["Ready"] = ("True", "AllReplicasReady", c.text)
    else:
        out["Progressing"] = ("True", "RollingOut", c.text)
        out["Ready"] = ("False", "ReplicasNotReady", c.text)
    out["Available"] = _availability(c)
    since = obs.starting_since or now
    if (
        c.rolled
        and c.ready < c.want
        and (now - since).total_seconds() > plan.startup_budget_seconds
    ):
        out["Degraded"] = ("True", "ReplicasUnavailable", c.text)
    elif c.rolled and c.ready < c.want:
        # Updated groups still within their first-boot budget (weights load for minutes).
        starting = f"{c.text}; within the {plan.startup_budget_seconds} s startup budget"
        out["Degraded"] = ("False", "ReplicasStarting", starting)
    else:
        out["Degraded"] = ("False", "AsExpected", c.text)
    if obs.missing and (obs.lws_held or not (c.rolled and c.ready >= c.want)):
        # No counts in this message: it is posted as an Event whenever it changes.
        held = ""
        if obs.lws_held:
            # "serving" only where a group is ready (new-user trial: a just-created resource
            # whose pods never started was said to keep serving)
            serving = " (its ready groups keep serving)" if c.serving > 0 else ""
            held = f"; the LeaderWorkerSet keeps its current pod template meanwhile{serving}"
        they = "they exist" if len(obs.missing) > 1 else "it exists"
        message = _text("; ".join(obs.missing) + f": pods cannot start until {they}{held}")
        out["Ready"] = ("False", REFERENCE_MISSING, message)
        out["Degraded"] = ("True", REFERENCE_MISSING, message)
    return out


def _planned_text(spec: DeepSeekV4DeploymentSpec, plan: Plan) -> str:
    """Planned's message: `8 x h200-141gb per replica (TP8 ...), 2 replica(s)`."""
    lay = plan.chosen.layout
    return (
        f"{lay.gpus} x {plan.chosen.gpu.name} per replica ({lay.describe()}), "
        f"{spec.replicas} replica(s)"
    )


def _live_availability(obs: Observation) -> dict[str, tuple[str, str, str]]:
    """Available from the live LeaderWorkerSet, for a spec not applied (`lws_target` set).

    The groups of the last rollout keep serving: whether any is ready stays live. Empty when
    the LeaderWorkerSet was not read.
    """
    until = {
        APPLY_FAILED: "the child is accepted",
        RECONCILE_ERROR: "a reconcile succeeds",
    }.get(obs.error_reason or "", "the spec is fixed")
    if obs.lws_absent:
        return {"Available": ("False", LWS_NOT_FOUND, _lws_not_found(obs.owner, until))}
    if obs.lws_status is not None and obs.lws_target is not None:
        counts = rollout_counts(*obs.lws_target, obs.lws_status, obs.lws_changed)
        return {"Available": _availability(counts)}
    return {}


def _reconcile_error(obs: Observation) -> dict[str, tuple[str, str, str]]:
    """Progressing and Planned while reconciles fail with `ReconcileError`.

    Progressing is False with the error, as the Deployment controller sets Progressing=False
    (`ReplicaSetCreateError`) when it cannot create a new ReplicaSet (kubernetes/kubernetes
    `pkg/controller/deployment/sync.go`, `getNewReplicaSet`): the operator applies nothing
    while the error lasts (a rollout the LeaderWorkerSet already started goes on, as when
    paused). Planned is True when the failed reconcile had this generation's plan (then in
    `status.plan`, whose `applied` says whether its children were applied), else Unknown:
    `status.plan` is then the last plan reported, of an earlier generation.
    """
    error, generation = obs.error_message, obs.owner.generation
    if obs.spec is None or obs.plan is None:
        return {
            "Planned": (
                "Unknown",
                RECONCILE_ERROR,
                _text(
                    f"{error}; generation {generation} was not planned: status.plan is the last "
                    "plan reported"
                ),
            ),
            "Progressing": (
                "False",
                RECONCILE_ERROR,
                _text(
                    f"{error}; generation {generation} is not rolled out: the groups keep the "
                    "last applied plan until a reconcile succeeds"
                ),
            ),
        }
    if obs.plan_applied:
        stage = (
            f"the plan in status (generation {generation}) is applied; its rollout is reported "
            "once a reconcile succeeds"
        )
    else:
        stage = (
            f"the plan in status (generation {generation}) is not applied: the groups keep the "
            "last applied one until a reconcile succeeds"
        )
    return {
        "Planned": ("True", "PlanReady", _planned_text(obs.spec, obs.plan)),
        "Progressing": ("False", RECONCILE_ERROR, _text(f"{error}; {stage}")),
    }


def _conditions(obs: Observation, now: datetime) -> dict[str, tuple[str, str, str]]:
    """Owned conditions as type -> (status, reason, message); absent types are left alone."""
    if obs.error_reason in {APPLY_FAILED, RECONCILE_ERROR}:  # children left as they are
        message = _text(obs.error_message)
        out = {
            "Ready": ("False", obs.error_reason, message),
            "Degraded": ("True", obs.error_reason, message),
        }
        out |= _live_availability(obs)
        if obs.error_reason == APPLY_FAILED and obs.spec is not None and obs.plan is not None:
            # status.plan is this spec's plan, marked not applied (`desired_status`).
            refused = (
                f"{obs.error_message}; the plan in status (generation "
                f"{obs.owner.generation}) is not applied: the groups keep the last applied one"
            )
            out |= {
                "Planned": ("True", "PlanReady", _planned_text(obs.spec, obs.plan)),
                "Progressing": ("False", APPLY_FAILED, _text(refused)),
            }
        if obs.error_reason == RECONCILE_ERROR:
            out |= _reconcile_error(obs)
        return out
    if obs.error_reason is not None:  # nothing new rolls out until the spec is fixed
        message = _text(obs.error_message)
        out = {
            "Ready": ("False", obs.error_reason, message),
            "Planned": ("False", obs.error_reason, message),
            "Progressing": ("False", obs.error_reason, message),
        }
        return out | _live_availability(obs)
    if obs.paused:
        return _paused(obs)
    spec, plan = _planned(obs)
    out = {"Planned": ("True", "PlanReady", _planned_text(spec, plan))}
    if not obs.lws_api:
        missing = (
            "the LeaderWorkerSet API (leaderworkerset.x-k8s.io/v1) is not served: "
            "install LWS (https://github.com/kubernetes-sigs/lws)"
        )
        out |= {
            "Ready": ("False", "LeaderWorkerSetMissing", missing),
            "Degraded": ("True", "LeaderWorkerSetMissing", missing),
            "Progressing": ("False", "LeaderWorkerSetMissing", missing),
            "Available": ("False", "LeaderWorkerSetMissing", missing),
        }
        return out
    out |= _rollout(obs, spec, plan, now)
    out |= _scaling_condition(obs, spec)
    return out


def _merge_conditions(
    previous: list[Mapping[str, Any]],
    wanted: dict[str, tuple[str, str, str]],
    obs: Observation,
    now: str,
) -> list[dict[str, Any]]:
    by_type = {str(c.get("type")): dict(c) for c in previous}
    for ctype, (status, reason, message) in wanted.items():
        old = by_type.get(ctype)
        changed = old is None or old.get("status") != status
        by_type[ctype] = {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now if changed or old is None else old["lastTransitionTime"],
            "observedGeneration": obs.owner.generation,
        }
    order = [*OWNED_CONDITIONS, "ScalingActive"]
    return sorted(by_type.values(), key=lambda c: [*order, c["type"]].index(c["type"]))


def rfc3339(now: datetime) -> str:
    """A UTC time as the API writes it in status: `2026-11-29T13:00:00Z` (whole seconds)."""
    return now.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _replica_counts(st: Mapping[str, Any], want: int) -> dict[str, int]:
    """`status.replicas` and `readyReplicas` (the scale subresource's), at most `want`.

    The LWS's counts with its surge groups left out.
    """
    return {
        "replicas": min(int(st.get("replicas") or 0), want),
        "readyReplicas": min(int(st.get("readyReplicas") or 0), want),
    }


def desired_status(
    obs: Observation, previous: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """The owned status keys as they should be after this reconcile.

    Args:
        obs: what the reconcile found.
        previous: the resource's current `.status` (None when empty).
        now: the time of a condition transition (whole seconds are kept).

    Returns:
        A dict with (a subset of) `OWNED_KEYS`; keys not returned are left untouched.
    """
    prev = dict(previous or {})
    stamp = rfc3339(now)
    before = list(prev.get("conditions") or [])
    if obs.waiting:
        message = _text(f"{obs.waiting}; retried until it succeeds")
        waits = {"Progressing": ("True", WAITING, message)}
        if not any(c.get("type") == "Ready" for c in before):  # a new resource: nothing runs
            waits["Ready"] = ("False", WAITING, message)
        return {"conditions": _merge_conditions(before, waits, obs, stamp)}
    wanted = _conditions(obs, now)
    # Degraded names the refusal or the error, not the LeaderWorkerSet it kept from being made.
    gone = obs.lws_absent and obs.error_reason not in {APPLY_FAILED, RECONCILE_ERROR}
    if gone and any(c.get("type") == "Degraded" for c in before):
        # Rolled out once, and its LeaderWorkerSet is gone: Degraded no longer holds the last
        # counts (a new resource that never had one gets no Degraded for it).
        wanted["Degraded"] = ("True", LWS_NOT_FOUND, wanted["Available"][2])
    conditions = _merge_conditions(before, wanted, obs, stamp)
    if obs.spec is not None:
        mode, paused = obs.spec.autoscaling.active_mode, obs.spec.paused
        conditions = [
            c
            for c in conditions
            if c["type"] != "ScalingActive" or _scaling_active_applies(c["reason"], mode, paused)
        ]
    out: dict[str, Any] = {"observedGeneration": obs.owner.generation, "conditions": conditions}
    live = obs.paused or obs.error_reason is not None
    if live and obs.lws_absent:
        out |= {"replicas": 0, "readyReplicas": 0}
    elif live and obs.lws_status is not None and obs.lws_target is not None:
        # Paused, or a spec not rolled out: the live LeaderWorkerSet's counts.
        out |= _replica_counts(obs.lws_status, obs.lws_target[0])
    failed = obs.error_reason in {APPLY_FAILED, RECONCILE_ERROR}
    if failed and obs.spec is not None and obs.plan is not None:
        # This generation's plan, said whether applied: observedGeneration names it, and the
        # previous plan is no longer what the spec asks (day-2 finding; h42 for ReconcileError).
        applied = obs.error_reason == RECONCILE_ERROR and obs.plan_applied
        out["plan"] = plan_status(obs.spec, obs.plan, applied=applied)
    if obs.error_reason is not None or obs.paused:
        return out
    spec, plan = _planned(obs)
    st = obs.lws_status or {}
    out |= {
        "plan": plan_status(spec, plan, applied=not obs.lws_held),
        **_replica_counts(st, spec.replicas),
        # The LWS controller's leader selector when it reports one (what HPA/KEDA count), else
        # the same selection by our labels.
        "selector": str(st.get("hpaPodSelector") or _selector(obs.owner)),
        "endpoint": obs.endpoint,
        "cost": _cost(spec, plan),
        "startingSince": None if obs.starting_since is None else rfc3339(obs.starting_since),
    }
    return out


def status_patch(desired: Mapping[str, Any], current: Mapping[str, Any] | None) -> dict[str, Any]:
    """The JSON merge patch from `current` to `desired` (empty: nothing to write).

    Only keys of `desired` whose value differs; inside a changed mapping (`plan`, `cost`), keys
    the current value has and `desired` lacks are set to None, which a merge patch removes
    (a priced cost switched to an unpriced GPU type had kept its old `usdPerHour`).
    """
    cur = current or {}
    return {k: _merge_value(v, cur.get(k)) for k, v in desired.items() if cur.get(k) != v}


def _merge_value(desired: Any, current: Any) -> Any:
    """`desired` as a merge-patch value over `current`: removed mapping keys become None."""
    if not isinstance(desired, Mapping) or not isinstance(current, Mapping):
        return desired
    out = {k: _merge_value(v, current.get(k)) for k, v in desired.items()}
    return out | {k: None for k in current if k not in desired}
