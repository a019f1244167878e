"""The native autoscaler's decision: replicas (whole LeaderWorkerSet groups) from token throughput.

One call of `decide` per scrape. Rules, in order:

1. Load = generated tokens/s of the serving groups (+ prompt tokens/s x a weight).
   Recommendation = ceil(load / target tokens/s per replica).
2. Guard rails force a scale-up: a serving group at or above the KV-usage threshold or with at least
   the queue threshold of waiting requests asks for one more group than runs, unless a group is
   already starting, which counts as the fix (no overshoot while a 20-minute load is in progress).
   A forced scale-up skips the scale-up stabilization window.
3. Bounds: at least `min_replicas` (1 when `min_replicas` is 0 until the deployment has been idle,
   no load, no request and no group starting, for the scale-to-zero window), at most
   `max_replicas` and the GPU budget
   (budget // GPUs per replica). With no group and requests waiting at the gateway: at least 1.
   Replicas below `min_replicas` (a manifest without `spec.replicas` has 1) go to it at once, past
   the stabilization window and the step limit, as the HPA raises a target below its minimum.
4. Stabilization as the HPA does it: a scale-up goes to the smallest recommendation of the scale-up
   window, a scale-down to the largest of the scale-down window; steps are limited; a change
   opposite to the last one waits for the new direction's window (at most one change of direction
   per window).
5. Scale-down safety: after removing the groups, the remaining ones must stay under the guard rails
   (load per group within target, KV usage and queue under their thresholds); otherwise hold.
   Not for groups over the ceiling (`max_replicas`, the GPU budget lowered below the running
   replicas): those go all the same, drained first.
6. Drain first: LeaderWorkerSet removes the highest-index groups. Those are drained (their
   runtime stops admitting, in-flight requests finish) and the replica count drops only when no
   request runs or waits on them. The drain is cancelled if load returns meanwhile, if some
   group's load becomes unknown, or if this state has not yet watched a whole scale-down window (an
   operator restart).
7. Unknown load (a group's first counter sample, unreadable metrics, a group that served and
   stops answering, or one that does not answer while its leader pod is Ready: the operator
   sets `GroupSample.known`, `handlers.autoscaler`): the known groups' load is a lower bound,
   enough to scale up, never to scale down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal

__all__ = [
    "AutoscalerConfig",
    "AutoscalerState",
    "Cause",
    "Decision",
    "GroupSample",
    "Observation",
    "decide",
]

Action = Literal["scale", "drain", "undrain", "hold"]


class Cause(StrEnum):
    """Why a `scale` decision changes the replicas.

    The values are the reasons `status.recentScalingDecisions[].reason` records
    (`api.v1alpha1.status.ScalingDecision`), so the operator writes the code, not words
    read back from `Decision.reason`.
    """

    LOAD_HIGH = "TokenRateHigh"
    """Up: the token load (rule 1) wants more replicas, stable over the scale-up window."""
    GUARD_RAIL = "GuardRail"
    """Up: a serving group at or over the KV-usage or queue threshold, no group starting
    (rule 2): the scale-up window is skipped."""
    REQUESTS_WAITING = "RequestsWaiting"
    """Up from zero replicas: requests wait (in a group, or at the gateway: the wake-up query)."""
    MIN_REPLICAS = "MinReplicas"
    """Up: fewer replicas run than `min_replicas`, more than the load wants (rule 3; a manifest
    without `spec.replicas` has 1: raised to the minimum at once)."""
    LOAD_LOW = "TokenRateLow"
    """Down: the remaining replicas carry the load within the guard rails (rules 4-6)."""
    REPLICA_LIMIT = "ReplicaLimit"
    """Down: more replicas run than `max_replicas` or the GPU budget allow (`ceiling`), or the
    load wants more than they allow: the bound wins over the windows, the step limit and the
    guard rails (rules 4-5), as for the HPA."""
    IDLE = "Idle"
    """Down to zero: idle for the scale-to-zero window (rule 3)."""


@dataclass(frozen=True, slots=True)
class AutoscalerConfig:
    """Autoscaling settings (from `spec.autoscaling`, the plan and `spec.gpu.budget`).

    Attributes:
        min_replicas: fewest replicas (0 allows scale to zero).
        max_replicas: most replicas.
        target_tokens_per_second: generated tokens/s one replica should carry.
        kv_usage_threshold: KV-cache usage fraction (0..1) that forces a scale-up.
        queue_threshold: waiting requests per group that force a scale-up.
        scale_up_window_seconds: scale-up stabilization window, s.
        scale_down_window_seconds: scale-down stabilization window, s.
        scale_up_max_step: most replicas added per decision.
        scale_down_max_step: most replicas removed per decision.
        scale_to_zero_idle_seconds: idle time before the last replica goes (None: never).
        gpus_per_replica: GPUs of one group.
        gpu_budget: most GPUs all replicas may hold (None: unbounded).
        prompt_token_weight: weight of prompt tokens/s in the load (0 = generated tokens only).
        drain_settle_seconds: time from a drain until the Service stops routing to the drained
            groups, s: the drain fails their `/ready`, and the kubelet marks a pod unready after
            its readinessProbe failed `failureThreshold` times `periodSeconds` apart (3 x 10 s,
            `render.leaderworkerset`), and the EndpointSlice follows; a removal waits for it
            (the operator passes 4 x 10 s: one period for the endpoint update), so requests
            admitted meanwhile are seen running first.
    """

    min_replicas: int
    max_replicas: int
    target_tokens_per_second: float
    kv_usage_threshold: float = 0.8
    queue_threshold: int = 5
    scale_up_window_seconds: float = 300
    scale_down_window_seconds: float = 1800
    scale_up_max_step: int = 1
    scale_down_max_step: int = 1
    scale_to_zero_idle_seconds: float | None = None
    gpus_per_replica: int = 8
    gpu_budget: int | None = None
    prompt_token_weight: float = 0.0
    drain_settle_seconds: float = 30.0

    @property
    def ceiling(self) -> int:
        """Most replicas allowed by `max_replicas` and the GPU budget."""
        if self.gpu_budget is None:
            return self.max_replicas
        return min(self.max_replicas, self.gpu_budget // self.gpus_per_replica)


def ceiling_words(cfg: AutoscalerConfig) -> str:
    """What caps the replicas at `cfg.ceiling`, in spec fields.

    `spec.gpu.budget` when it allows fewer than `max_replicas` groups, else
    `spec.autoscaling.maxReplicas`.
    """
    if cfg.gpu_budget is not None and cfg.ceiling < cfg.max_replicas:
        return (
            f"spec.gpu.budget of {cfg.gpu_budget} GPUs allows {cfg.ceiling} replicas of "
            f"{cfg.gpus_per_replica} GPUs (spec.autoscaling.maxReplicas is {cfg.max_replicas})"
        )
    return f"spec.autoscaling.maxReplicas is {cfg.max_replicas}"


def wanted_replicas(cfg: AutoscalerConfig, load: float) -> int:
    """Replicas the token load alone asks for, before any bound: ceil(load / target), 0 idle.

    Args:
        cfg: the settings (`target_tokens_per_second` per replica).
        load: tokens/s (`Decision.load_tokens_per_second`).
    """
    return math.ceil(load / cfg.target_tokens_per_second) if load > 0 else 0


@dataclass(frozen=True, slots=True)
class GroupSample:
    """What one replica group reported at a scrape.

    Attributes:
        index: LeaderWorkerSet group index.
        ready: the group serves (leader ready).
        starting: the group exists but is not ready yet (pulling, loading, warming up).
        draining: the group was told to stop admitting requests.
        generation_tps: generated tokens/s.
        prompt_tps: prompt tokens/s.
        kv_usage: KV-cache usage fraction, 0..1.
        running: requests running.
        waiting: requests waiting.
        known: its load figures were read; False when a ready group's metrics could not be
            scraped (its zeros are then unknown, not idle: no scale-down rests on them).
    """

    index: int
    ready: bool
    starting: bool = False
    draining: bool = False
    generation_tps: float = 0.0
    prompt_tps: float = 0.0
    kv_usage: float = 0.0
    running: int = 0
    waiting: int = 0
    known: bool = True


@dataclass(frozen=True, slots=True)
class Observation:
    """One scrape of all groups.

    Attributes:
        time: seconds (monotonic).
        replicas: the current `spec.replicas`.
        groups: per-group samples.
        pending_outside: requests waiting in front of the Service (gateway metric), used to scale
            from zero.
    """

    time: float
    replicas: int
    groups: tuple[GroupSample, ...]
    pending_outside: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """What the autoscaler decided at one scrape.

    Attributes:
        time: seconds.
        action: `scale` (set replicas), `drain` / `undrain` (groups), or `hold`.
        replicas_from: replicas before.
        replicas_to: replicas after (equal to `replicas_from` unless `action` is `scale`).
        groups: groups drained or undrained.
        load_tokens_per_second: the load that was measured.
        reason: one sentence with the numbers.
        cause: why the replicas change (`Cause`); set exactly when `action` is `scale`.
    """

    time: float
    action: Action
    replicas_from: int
    replicas_to: int
    groups: tuple[int, ...]
    load_tokens_per_second: float
    reason: str
    cause: Cause | None = None


@dataclass(frozen=True, slots=True)
class AutoscalerState:
    """Memory between decisions (kept by the operator per deployment).

    Attributes:
        recommendations: (time, recommended replicas for scaling up, for scaling down) within
            the longest window. The two differ only while some group's load is unknown: the
            known groups' load is then a lower bound, good for scaling up, and no evidence for
            scaling down (that entry is at least the replicas then running).
        last_change: (time, +1 or -1) of the last replica change.
        idle_since: when the deployment became idle (no load, no request), or None while busy.
        draining: groups being drained.
        observed_since: the first observation this state has seen (None before it): no
            scale-down until a whole scale-down window of observations exists, so an operator
            restart (which starts a new state) never scales down on a few samples.
        drained_since: when the groups held out of service were drained (first seen so,
            after an operator restart), or None while none is.
    """

    recommendations: tuple[tuple[float, int, int], ...] = ()
    last_change: tuple[float, int] | None = None
    idle_since: float | None = None
    draining: tuple[int, ...] = field(default=())
    observed_since: float | None = None
    drained_since: float | None = None


def _hold(obs: Observation, load: float, reason: str) -> Decision:
    return Decision(obs.time, "hold", obs.replicas, obs.replicas, (), load, reason)


def _safe_after(cfg: AutoscalerConfig, serving: list[GroupSample], load: float, n: int) -> str:
    """Why removing groups down to `n` would break a guard rail ('' when it is safe)."""
    if n == 0:
        busy = any(g.running or g.waiting for g in serving)
        return "requests are still running" if busy or load > 0 else ""
    if load / n > cfg.target_tokens_per_second:
        return f"{load:.0f} tokens/s over {n} replicas exceeds the target"
    kv = sum(g.kv_usage for g in serving) / n
    if kv >= cfg.kv_usage_threshold:
        return f"KV usage would reach {kv:.0%} on {n} replicas"
    waiting = sum(g.waiting for g in serving) / n
    if waiting >= cfg.queue_threshold:
        return f"{waiting:.1f} waiting requests per replica on {n} replicas"
    return ""


@dataclass(frozen=True, slots=True)
class _Reading:
    """What one observation says, before stabilization."""

    load: float
    desired: int
    urgent: bool
    saturated: tuple[int, ...]
    serving: tuple[GroupSample, ...]
    waking: int = 0
    """Requests waiting while no replica runs (0 unless scaling up from zero on them)."""


def _read(cfg: AutoscalerConfig, obs: Observation, idle_since: float | None) -> _Reading:
    """Rules 1-3: load, guard rails and bounds give the recommended replicas."""
    current = obs.replicas
    serving = tuple(g for g in obs.groups if g.ready and not g.draining)
    starting = sum(1 for g in obs.groups if g.starting)
    load = sum(g.generation_tps + cfg.prompt_token_weight * g.prompt_tps for g in serving)
    requests = sum(g.running + g.waiting for g in obs.groups) + obs.pending_outside
    raw = wanted_replicas(cfg, load)
    saturated = tuple(
        g.index
        for g in serving
        if g.kv_usage >= cfg.kv_usage_threshold or g.waiting >= cfg.queue_threshold
    )
    urgent = False
    if saturated and starting == 0:
        raw, urgent = max(raw, current + 1), True
    elif saturated:
        raw = max(raw, current)
    waking = requests if current == 0 else 0
    if waking > 0:
        raw, urgent = max(raw, 1), True
    floor = cfg.min_replicas
    idle_long = (
        cfg.scale_to_zero_idle_seconds is not None
        and idle_since is not None
        and obs.time - idle_since >= cfg.scale_to_zero_idle_seconds
    )
    if floor == 0 and not idle_long:
        floor = 1 if (load > 0 or requests > 0 or current > 0) else 0
    desired = max(floor, min(raw, cfg.ceiling))
    return _Reading(load, desired, urgent, saturated, serving, waking)


def _scale_up(
    cfg: AutoscalerConfig, state: AutoscalerState, obs: Observation, r: _Reading
) -> tuple[Decision, bool]:
    """Rule 4 upwards; returns the decision and whether replicas changed."""
    t, current = obs.time, obs.replicas
    window = [n for ts, n, _ in state.recommendations if ts >= t - cfg.scale_up_window_seconds]
    target = r.desired if r.urgent else min(window)
    target = min(max(target, current), current + cfg.scale_up_max_step, cfg.ceiling)
    # Below minReplicas (a manifest without `replicas` has 1): straight to the minimum, with no
    # window and no step limit, as the HPA does ("Current number of replicas below
    # Spec.MinReplicas", kubernetes pkg/controller/podautoscaler/horizontal.go).
    floor = min(cfg.min_replicas, cfg.ceiling)
    below = current < floor
    target = max(target, floor)
    last = state.last_change
    if (
        last
        and last[1] < 0
        and t - last[0] < cfg.scale_up_window_seconds
        and not r.urgent
        and not below
    ):
        return _hold(
            obs, r.load, "scale-up waits for the scale-up window after a scale-down"
        ), False
    if target <= current:
        return _hold(obs, r.load, f"recommendation {r.desired} not yet stable"), False
    if r.urgent and r.saturated:
        cause, why = Cause.GUARD_RAIL, f"guard rail on groups {list(r.saturated)}"
    elif r.waking:
        cause, why = Cause.REQUESTS_WAITING, f"{r.waking} requests wait with no replica"
    elif wanted_replicas(cfg, r.load) < target:  # not the load: the floor (rule 3)
        cause, why = Cause.MIN_REPLICAS, f"spec.autoscaling.minReplicas is {cfg.min_replicas}"
    else:
        cause, why = Cause.LOAD_HIGH, "token load"
    reason = f"{why}: {r.load:.0f} tokens/s, {r.desired} replicas wanted"
    return Decision(t, "scale", current, target, (), r.load, reason, cause), True


def _down_target(
    cfg: AutoscalerConfig, state: AutoscalerState, obs: Observation, r: _Reading
) -> int | str:
    """Rule 4 downwards: the replicas to go down to, or why not to scale down now."""
    t, current = obs.time, obs.replicas
    if current > cfg.ceiling:
        # Over maxReplicas or the GPU budget (lowered under running groups): to the bound at
        # once, past the windows, the step limit and unknown metrics, as the HPA goes to its
        # maximum ("Current number of replicas above Spec.MaxReplicas", kubernetes
        # pkg/controller/podautoscaler/horizontal.go); the groups are still drained first.
        return cfg.ceiling
    unknown = [g.index for g in obs.groups if not g.known]
    if unknown:
        return f"not removing groups: the metrics of groups {unknown} could not be read"
    if r.desired == 0 and current == 1:
        # The last replica: the scale-to-zero idle time (already elapsed, or `desired` would be
        # 1) is this step's stabilization, not the scale-down window on top of it.
        target = 0
    else:
        observed = t - (state.observed_since if state.observed_since is not None else t)
        if observed < cfg.scale_down_window_seconds:
            return (
                f"scale-down waits for a whole scale-down window of observations ({observed:.0f}"
                f" of {cfg.scale_down_window_seconds:.0f} s)"
            )
        window = [
            n for ts, _, n in state.recommendations if ts >= t - cfg.scale_down_window_seconds
        ]
        target = max(*window, current - cfg.scale_down_max_step)
    last = state.last_change
    if target >= current:
        return f"recommendation {r.desired} not yet stable"
    if last and last[1] > 0 and t - last[0] < cfg.scale_down_window_seconds:
        return "scale-down waits for the scale-down window after a scale-up"
    # Groups over the ceiling go even when the rest would pass a guard rail: the user's bound.
    unsafe = "" if target >= cfg.ceiling else _safe_after(cfg, list(r.serving), r.load, target)
    return f"not removing groups: {unsafe}" if unsafe else target


def _scale_down(
    cfg: AutoscalerConfig, state: AutoscalerState, obs: Observation, r: _Reading
) -> tuple[Decision, tuple[int, ...] | None]:
    """Rules 4-6 downwards; returns the decision and the groups now draining (None: unchanged)."""
    t, current = obs.time, obs.replicas
    target = _down_target(cfg, state, obs, r)
    if isinstance(target, str):
        return _hold(obs, r.load, target), None
    victims = tuple(range(target, current))
    by_index = {g.index: g for g in obs.groups}
    undrained = [i for i in victims if i in by_index and not by_index[i].draining]
    if undrained and any(by_index[i].ready for i in undrained):
        reason = f"draining groups {undrained} before scaling {current} -> {target}"
        return Decision(t, "drain", current, current, tuple(undrained), r.load, reason), victims
    # Queued requests are in flight too: admitted before the drain, they have not started yet.
    in_flight = [
        i for i in victims if i in by_index and (by_index[i].running or by_index[i].waiting)
    ]
    if in_flight:
        return _hold(obs, r.load, f"groups {in_flight} still finish requests"), None
    drained = [i for i in victims if i in by_index and by_index[i].draining]
    settled = t - (state.drained_since if state.drained_since is not None else t)
    if drained and settled < cfg.drain_settle_seconds:
        reason = (
            f"groups {drained} drained {settled:.0f} s ago: the Service routes to them until"
            f" their readiness probe has failed ({cfg.drain_settle_seconds:.0f} s)"
        )
        return _hold(obs, r.load, reason), None
    removed = f"drained groups {drained}" if drained else f"groups {list(victims)} served nothing"
    wanted = wanted_replicas(cfg, r.load)
    if target > 0 and (wanted > target or current > cfg.ceiling):  # the bound (`_down_target`)
        cause = Cause.REPLICA_LIMIT
        load = (
            f"{r.load:.0f} tokens/s wants {wanted}" if wanted > target else f"{r.load:.0f} tokens/s"
        )
        reason = f"at most {cfg.ceiling} replicas may run ({ceiling_words(cfg)}): {load}; {removed}"
    else:
        cause = Cause.IDLE if target == 0 else Cause.LOAD_LOW
        reason = f"{r.load:.0f} tokens/s fits {target} replicas; {removed}"
    return Decision(t, "scale", current, target, victims, r.load, reason, cause), ()


def decide(
    cfg: AutoscalerConfig, state: AutoscalerState, obs: Observation
) -> tuple[Decision, AutoscalerState]:
    """One autoscaling decision (module docstring gives the rules).

    Args:
        cfg: settings.
        state: memory from the previous decision.
        obs: this scrape.

    Returns:
        The decision and the new state.
    """
    t, current = obs.time, obs.replicas
    # A starting group is busy too: someone (the wake-up signal, `kubectl scale`) wanted it,
    # and idle time counts from when it serves (a woken group was removed while it loaded).
    busy = any(
        g.generation_tps > 0 or g.running or g.waiting or not g.known or g.starting
        for g in obs.groups
    )
    busy = busy or obs.pending_outside > 0
    idle_since = None if busy else (state.idle_since if state.idle_since is not None else t)
    r = _read(cfg, obs, idle_since)
    horizon = max(cfg.scale_up_window_seconds, cfg.scale_down_window_seconds)
    recs = tuple(rec for rec in state.recommendations if rec[0] > t - horizon)
    # A load with unknown parts (a group not yet sampled twice, or not answering) is a lower
    # bound: it may ask for more replicas, never for fewer.
    down = r.desired if all(g.known for g in obs.groups) else max(r.desired, current)
    recs = (*recs, (t, r.desired, down))
    since = state.observed_since if state.observed_since is not None else t
    state = replace(state, recommendations=recs, idle_since=idle_since, observed_since=since)

    # Groups held out of service: the ones this state drained, and any a group reports (the
    # operator may have restarted mid-drain and lost its state: it cancels such a drain until
    # it has watched a whole scale-down window itself).
    held = tuple(sorted(set(state.draining) | {g.index for g in obs.groups if g.draining}))
    if held and state.drained_since is None:  # a drain this state did not start: from now
        state = replace(state, drained_since=t)
    warm = t - since >= cfg.scale_down_window_seconds
    unknown = [g.index for g in obs.groups if not g.known]
    over = current > cfg.ceiling  # the bound, not the load: no window or metric holds it back
    if held and (r.desired >= current or (not over and (unknown or not (warm or r.desired == 0)))):
        if r.desired >= current:
            reason = f"load {r.load:.0f} tokens/s needs {r.desired} replicas: drain cancelled"
        elif unknown:  # no scale-down can rest on it for a window: give the group back now
            reason = f"the metrics of groups {unknown} could not be read: drain cancelled"
        else:
            reason = f"load {r.load:.0f} tokens/s is not yet stable: drain cancelled"
        decision = Decision(t, "undrain", current, current, held, r.load, reason)
        return decision, replace(state, draining=(), drained_since=None)
    if r.desired > current:
        decision, changed = _scale_up(cfg, state, obs, r)
        return decision, replace(state, last_change=(t, +1)) if changed else state
    if r.desired < current:
        decision, draining = _scale_down(cfg, state, obs, r)
        if draining is None:
            return decision, state
        if decision.action == "scale":
            return decision, replace(state, last_change=(t, -1), draining=(), drained_since=None)
        return decision, replace(state, draining=draining, drained_since=t)
    return _hold(obs, r.load, f"{current} replicas match {r.load:.0f} tokens/s"), state
