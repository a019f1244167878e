"""What the operator tells about a deployment beyond its conditions: Events and messages.

`announce_rollout` posts `RollingUpdate`, `NoRedundancy` and `RolloutAdjusted`;
`announce_scaling` posts `ScalingLeaderWorkerSet` for a replicas change; `hazards` picks
the plan warnings that become `PlanWarning` Events (`HAZARDS`; the others, `REMARKS`, stay in
status); `no_fit_message` is InsufficientCapacity's message with the planner's advice in spec
fields.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

from dsv4_operator.api.v1alpha1.engine import CUDAGRAPH_CAP_FLAG, CUDAGRAPH_LIST_FLAG
from dsv4_operator.api.v1alpha1.scaling import surge_groups
from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.kube import AppliedChild
from dsv4_operator.planning import (
    Code,
    Finding,
    FitAdvice,
    Plan,
    budget_need,
    fit_option,
    layout_settings_parts,
    offload_sizing,
    settings_option,
)
from dsv4_operator.planning.from_spec import spec_words
from dsv4_operator.render import Owner
from dsv4_operator.render.leaderworkerset import (
    GPUS_ANNOTATION,
    ROLLOUT_ANNOTATION,
    lws_annotation,
)
from dsv4_operator.render.rollout import rolling_update

__all__ = [
    "HAZARDS",
    "REMARKS",
    "EmitFn",
    "announce_rollout",
    "announce_scaling",
    "hazards",
    "no_fit_message",
]

EmitFn = Callable[[str, str, str], None]
"""Posts an Event on the resource: (type `Normal`/`Warning`, reason, message)."""


CAUSE_CHARS = 640
"""Most characters of the cause in a `RollingUpdate` message, a longer one is clipped: the rest
of the message (the groups replaced, maxSurge and maxUnavailable) stays within the 1,024
characters an Event message is cut to (kopf `_cogs/clients/events.py` MAX_MESSAGE_LENGTH; the
operator's `handlers.deployment._emitter` cuts there too). extraArgs alone may hold 64 x 1,024
characters (the CRD's maxItems and maxLength), and the cause names them before and after."""

HAZARDS: frozenset[str] = frozenset(
    str(code)
    for code in (
        Code.MTP_LONG_CONTEXT_HANG,  # the engine hangs: disable speculation or cap the length
        Code.HOST_KV_NOT_COUNTED,  # OOM-kill or eviction: add the cache to spec.resources
        Code.NVLS_NOT_COUNTED,  # KV pool and headroom short of the plan: unset NCCL_NVLS_ENABLE
        Code.GPUS_PER_NODE_ABOVE_TYPE,  # pods stay Pending: nodes that large, or unset the field
        Code.SPECULATIVE_STEP_EXCEEDS_BATCHED_TOKENS,  # drafts dropped: raise or lower a field
        Code.CUDAGRAPH_CAP_WITH_SPECULATION,  # eager verify steps (5x slower): drop the cap
    )
)
"""Plan warnings that predict a failure or a loss the platform engineer must act on (change a
spec field, add memory to `spec.resources`, provide nodes): posted as a Warning Event
`PlanWarning` when they appear, besides `status.plan.warnings` (`hazards`: once, not at each
resync). The plan rolls out either way; a plan that does not fit posts InsufficientCapacity or
InvalidSpec instead, with its problems."""

REMARKS: frozenset[str] = frozenset(
    str(code)
    for code in (
        Code.CUDA_GRAPHS_OFF,  # the user's choice in extraArgs; the plan counts no graphs
        Code.WEIGHTS_REPACKED,  # how vLLM loads the weights on this GPU type
        Code.FP4_WEIGHT_ONLY,  # the GPU type's kernels: memory as planned
        Code.FP8_WEIGHT_ONLY,
        Code.CPU_OFFLOAD,  # counted in the pod's memory request
        Code.PREFETCH_OFFLOAD,
        Code.KV_OFFLOAD,  # counted in /dev/shm and the memory request
        Code.FIRST_BOOT_WARMUP,  # the startup probe allows it
        Code.SHM_LONG_CONTEXT,  # the operator sizes /dev/shm to it
        Code.BATCH_LOWERED_FOR_CONTEXT,  # the plan's choice, with its trade-off: pin to change
        Code.BATCH_FITS_FEWER_GPUS,  # an option with its trade-off; the plan rolls out as is
    )
)
"""Plan warnings that say what the plan counted or how the engine will run, with nothing left
for the user to do: `status.plan.warnings` only, no Event. Every warning a plan that rolls out
can carry is in `HAZARDS` or here (tests/operator/handlers/test_plan_warning_events.py)."""


def hazards(warnings: Iterable[str]) -> set[str]:
    """The hazard codes among `status.plan.warnings` lines (`CODE: message`)."""
    return {w.split(":", 1)[0] for w in warnings} & HAZARDS


def _images(template: Any) -> list[str]:
    """The container images of a leaderWorkerTemplate (leader first), without repeats."""
    out: list[str] = []
    for part in ("leaderTemplate", "workerTemplate"):
        pod = ((template or {}).get(part) or {}).get("spec") or {}
        for container in pod.get("containers") or []:
            image = str(container.get("image", ""))
            if image not in out:
                out.append(image)
    return out


def _leader_args(template: Any) -> tuple[list[str], list[str]]:
    """The leader container's runtime arguments, and the engine arguments after `--`."""
    pod = ((template or {}).get("leaderTemplate") or {}).get("spec") or {}
    args = [str(a) for c in (pod.get("containers") or [])[:1] for a in c.get("args") or []]
    if "--" in args:
        cut = args.index("--")
        return args[:cut], args[cut + 1 :]
    return args, []


def _flag_values(args: list[str]) -> dict[str, str]:
    """`--flag value` pairs of runtime arguments (a flag without a value: "(set)")."""
    out: dict[str, str] = {}
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else ""
            out[arg] = value or "(set)"
    return out


def _clip(text: str, limit: int = CAUSE_CHARS) -> str:
    """`text`, or its first characters and how long it was when longer than `limit` characters."""
    if len(text) <= limit:
        return text
    tail = f"... ({len(text)} characters)"
    return text[: limit - len(tail)] + tail


def _graph_cap(extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """The engine arguments without the CUDA-graph capture settings, and those settings.

    The operator appends the plan's `--max-cudagraph-capture-size=N` (or, with speculation,
    `--cudagraph-capture-sizes` and its sizes) unless extraArgs sets a cap
    (`render.runtime_args`); either way they are reported as flags, not as extraArgs the user
    did not write.
    """
    rest: list[str] = []
    found: dict[str, str] = {}
    i = 0
    while i < len(extra):
        flag, _, value = extra[i].partition("=")
        i += 1
        if flag == CUDAGRAPH_CAP_FLAG:
            found[flag] = value
        elif flag == CUDAGRAPH_LIST_FLAG:
            start = i
            while i < len(extra) and not extra[i].startswith("-"):
                i += 1
            found[flag] = " ".join(extra[start:i])
        else:
            rest.append(extra[i - 1])
    return rest, found


def _changed_flags(before: Any, after: Any) -> list[str]:
    """What differs in the leader's arguments.

    `--flag old -> new` for the runtime's own (added or removed too) and the CUDA-graph cap,
    then `extraArgs a b -> c` for the other engine arguments after `--`, compared as a list.
    """
    (old_args, old_extra), (new_args, new_extra) = _leader_args(before), _leader_args(after)
    (old_extra, old_cap), (new_extra, new_cap) = _graph_cap(old_extra), _graph_cap(new_extra)
    old, new = _flag_values(old_args) | old_cap, _flag_values(new_args) | new_cap
    out = [
        f"{flag} {old.get(flag, '(unset)')} -> {new.get(flag, '(unset)')}"
        for flag in dict.fromkeys([*old, *new])
        if old.get(flag) != new.get(flag)
    ]
    if old_extra != new_extra:
        out.append(f"extraArgs {_list_change(old_extra, new_extra)}")
    return out


def _list_change(old: list[str], new: list[str]) -> str:
    """`a b -> c` for each stretch of `old` that `new` replaces, inserts or deletes, by `, `.

    Items both lists keep in place are left out, so one changed entry of a long extraArgs list
    is named rather than lost to the clip (`CAUSE_CHARS`); a list set or emptied whole reads
    `(none) -> a b` or `a b -> (none)`.
    """
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    return ", ".join(
        f"{' '.join(old[i1:i2]) or '(none)'} -> {' '.join(new[j1:j2]) or '(none)'}"
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    )


_ROLE = {"leaderTemplate": "leader", "workerTemplate": "worker"}


def _changed_fields(before: Any, after: Any) -> list[str]:
    """The pod-template fields that differ, beside the image and the leader's arguments.

    `size` and the other leaderWorkerTemplate fields by name; in each pod template `leader` /
    `worker` then `metadata.<key>`, `<pod spec key>` or `<container> <key>` (containers
    matched by name; a container added or removed as `containers`). The image and the leader's
    arguments are left out: `_images` and `_changed_flags` describe them.
    """
    before, after = before or {}, after or {}
    out = [
        key
        for key in dict.fromkeys([*before, *after])
        if key not in _ROLE and before.get(key) != after.get(key)
    ]
    for part, role in _ROLE.items():
        old, new = before.get(part) or {}, after.get(part) or {}
        found: list[str] = []
        for section in ("metadata", "spec"):
            a, b = old.get(section) or {}, new.get(section) or {}
            for key in dict.fromkeys([*a, *b]):
                if key == "containers" or a.get(key) == b.get(key):
                    continue
                found.append(f"metadata.{key}" if section == "metadata" else key)
        old_c = {c.get("name"): c for c in (old.get("spec") or {}).get("containers") or []}
        new_c = {c.get("name"): c for c in (new.get("spec") or {}).get("containers") or []}
        if old_c.keys() != new_c.keys():
            found.append("containers")
        for name in old_c.keys() & new_c.keys():
            a, b = old_c[name], new_c[name]
            skip = {"image", "args"} if role == "leader" else {"image"}
            found += [
                f"{name} {key}"
                for key in dict.fromkeys([*a, *b])
                if key not in skip and a.get(key) != b.get(key)
            ]
        out += [f"{role} {field}" for field in found]
    return out


def announce_rollout(
    owner: Owner,
    spec: DeepSeekV4DeploymentSpec,
    applied: AppliedChild | None,
    emit: EmitFn,
) -> None:
    """Events for an LWS change that replaces groups, and for a strategy the budget changed.

    `RollingUpdate` (Normal) names what changed in the pod template (the image, as after an
    operator upgrade, and the leader's arguments; else the spec's generation with the fields
    that changed, such as `leader vllm env`); `RolloutAdjusted` (Warning) says that
    `spec.gpu.budget` lowered the surge (and so raised maxUnavailable) below what
    `spec.rollout` asks. The cause is clipped to `CAUSE_CHARS` characters, so the message stays
    within an Event's 1,024.
    """
    if applied is None or applied.action == "unchanged":
        return
    old_spec = (applied.previous or {}).get("spec") or {}
    new_spec = applied.live.get("spec") or {}
    before, after = old_spec.get("leaderWorkerTemplate"), new_spec.get("leaderWorkerTemplate")
    config = rolling_update(new_spec)
    surge, unavailable = config.get("maxSurge"), config.get("maxUnavailable")
    if applied.action == "updated" and before != after:
        images = [_images(t) for t in (before, after)]
        flags = _changed_flags(before, after)
        fields = _changed_fields(before, after)
        changed = []
        if images[0] != images[1]:
            changed.append(f"image {', '.join(images[0])} -> {', '.join(images[1])}")
        if flags:  # with the image too: one edit may change both (day-2 finding)
            changed.append(f"arguments {'; '.join(flags[:6])}")
        if changed:
            cause = "; ".join(changed)
        elif fields:
            more = f" and {len(fields) - 6} more" if len(fields) > 6 else ""
            cause = f"spec generation {owner.generation}: {', '.join(fields[:6])}{more}"
        else:
            cause = f"spec generation {owner.generation}"
        cause = _clip(cause)
        kept = config.get("partition") or 0
        groups = f"groups {kept} and up" if kept else "groups"
        emit(
            "Normal",
            "RollingUpdate",
            f"pod template changed ({cause}): {groups} are replaced with maxSurge {surge}, "
            f"maxUnavailable {unavailable}",
        )
    asked = (spec.rollout.max_surge, spec.rollout.max_unavailable)
    previous_config = rolling_update(old_spec)
    requested = [
        lws_annotation(obj, ROLLOUT_ANNOTATION) for obj in (applied.previous, applied.live)
    ]
    moved = (
        applied.action == "created"
        or (previous_config.get("maxSurge"), previous_config.get("maxUnavailable"))
        != (surge, unavailable)
        # spec.rollout asks anew, whatever the budget leaves (an LWS of an operator before
        # the annotation carries none: its first reconcile after the upgrade is no news)
        or (requested[0] is not None and requested[0] != requested[1])
    )
    was = old_spec.get("replicas")
    fixed = not spec.autoscaling.enabled  # an autoscaler at 1 replica is not news
    if fixed and (moved or was != 1) and spec.replicas == 1 and surge_groups(surge or 0, 1) == 0:
        emit(
            "Warning",
            "NoRedundancy",
            "1 replica without a surge group: every pod-template change, and a node drain, "
            "stops the service until the group has started again (minutes; the startup "
            "probe allows the plan's first-boot budget); set spec.rollout.maxSurge 1 (with "
            "a spec.gpu.budget that holds it) or spec.replicas 2"
            + (
                " (set maxSurge first: with spec.load.concurrency a new replica count re-plans "
                "max-num-seqs, which replaces this group)"
                if spec.load is not None and spec.load.concurrency is not None
                else ""
            ),
        )
    if (surge, unavailable) != asked and moved:
        per = lws_annotation(applied.live, GPUS_ANNOTATION) or ""
        wanted = surge_groups(asked[0], spec.replicas)
        enough = (
            f" (a budget of {(spec.replicas + wanted) * int(per)} would hold {wanted})"
            if per.isdigit()
            else ""
        )
        why = (
            f"spec.gpu.budget ({spec.gpu.budget} GPUs) holds {surge} surge group(s) beside "
            f"{spec.replicas} replica(s){enough}"
            if surge != asked[0]
            else f"no surge group, and {asked[1]} of {spec.replicas} replica(s) rounds down "
            "to 0 unavailable: a rollout must be able to replace a group"
        )
        emit(
            "Warning",
            "RolloutAdjusted",
            f"{why}: the rollout uses maxSurge {surge}, maxUnavailable {unavailable} instead "
            f"of spec.rollout's {asked[0]}, {asked[1]}",
        )


def announce_scaling(
    spec: DeepSeekV4DeploymentSpec,
    applied: AppliedChild | None,
    emit: EmitFn,
    *,
    scaler_rendered: bool = True,
) -> None:
    """`ScalingLeaderWorkerSet` (Normal) when this reconcile changed the LWS's replicas.

    As a Deployment's `ScalingReplicaSet`: `Scaled up LeaderWorkerSet d from 1 to 3 replica
    groups (spec.replicas 3)`, for `kubectl scale` (the scale subresource writes
    spec.replicas), an edit of spec.replicas, or an LWS scaled by hand that the operator sets
    back. Posted by the reconcile that updates the LWS, so once per change (a resync finds it
    unchanged; a paused resource's change is posted when it resumes). With autoscaling modes
    hpa and keda the message names the mode (`spec.replicas 3, set by autoscaling mode hpa`):
    their HPA posts `SuccessfulRescale` on itself only, where `kubectl describe` of the
    resource does not show it (as a Deployment scaled by an HPA still posts
    `ScalingReplicaSet`). Not with mode native: the native autoscaler posts
    `ScaledUp`/`ScaledDown` with its reason on the resource (`handlers.autoscaler`). In mode
    hpa or keda without its scaler rendered (`scaler_rendered` False: KEDA or the HPA API not
    served) a person changed spec.replicas, and the message names no mode.
    """
    mode = spec.autoscaling.active_mode
    if mode in ("hpa", "keda") and not scaler_rendered:
        mode = None
    if applied is None or applied.action != "updated" or mode == "native":
        return
    was = ((applied.previous or {}).get("spec") or {}).get("replicas")
    now = (applied.live.get("spec") or {}).get("replicas")
    if not isinstance(was, int) or not isinstance(now, int) or was == now:
        return
    direction = "up" if now > was else "down"
    by = "" if mode is None else f", set by autoscaling mode {mode}"
    emit(
        "Normal",
        "ScalingLeaderWorkerSet",
        f"Scaled {direction} LeaderWorkerSet {applied.name} from {was} to {now} replica groups "
        f"(spec.replicas {spec.replicas}{by})",
    )


def _layout_fields(advice: FitAdvice, planned: Plan) -> str:
    """The spec fields that would allow `advice.layout`: `; spec.gpu.maxNodes >= N`..."""
    req, layout, needs = planned.request, advice.layout, []
    if layout is None:
        return ""
    if layout.nodes > req.max_nodes:
        needs.append(f"spec.gpu.maxNodes >= {layout.nodes}")
    if (budget := budget_need(req, layout)) is not None:
        needs.append(budget)
    return f"; {', '.join(needs)}" if needs else ""


def no_fit_message(planned: Plan) -> str:
    """`InsufficientCapacity`'s message: the closest layout, its problems, and what would fit.

    What would fit is the planner's `FitAdvice` in spec fields: a setting and its value
    (`spec.maxNumSeqs`...) where one makes it fit, `spec.engine.extraArgs` for CPU offload,
    `spec.maxNumBatchedTokens` for a smaller batch, and the `spec.gpu.maxNodes` or
    `spec.gpu.budget` a larger layout needs (none when a setting fixes it and no layout
    does); the problems name settings in spec fields too (`spec_words`:
    `spec.gpuMemoryUtilizationPercent` 98, not gpu-memory-utilization 0.98).
    """
    problems = "; ".join(f.worded(spec_words) for f in planned.chosen.problems[:3])
    c = planned.chosen
    message = (
        f"no layout of {', '.join(planned.request.gpu_types)} within spec.gpu fits: closest is "
        f"{c.layout.gpus} x {c.gpu.name} ({c.layout.describe()}): {problems}"
    )
    advice = planned.advice
    if advice is None:
        return message
    options = [
        Finding.said(Code.NO_FEASIBLE_LAYOUT, *settings_option(t)).worded(spec_words)
        for t in advice.settings
    ]
    if advice.offload_gib is not None:
        gib = advice.offload_gib
        options.append(
            f"CPU offload of {gib} GiB per GPU (spec.engine.extraArgs: --cpu-offload-gb={gib}; "
            f"slow{offload_sizing(planned.request.concurrency)})"
        )
    if advice.max_num_batched_tokens is not None:
        options.append(
            f"spec.maxNumBatchedTokens: {advice.max_num_batched_tokens} on this layout (slower "
            "prefill)"
        )
    if advice.layout_advised:
        with_settings = (
            Finding.said(Code.NO_FEASIBLE_LAYOUT, *layout_settings_parts(advice)).worded(spec_words)
            if advice.layout_settings
            else ""
        )
        options.append(with_settings + fit_option(advice, _layout_fields(advice, planned)))
    return f"{message}; what would fit: {' or '.join(options)}"
