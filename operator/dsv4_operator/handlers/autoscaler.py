"""The native autoscaler loop: scrape each replica's leader, decide, apply (issue 9, mode native).

One `step` per DeepSeekV4Deployment per scrape interval (a kopf timer):

1. read the resource; act only when `spec.autoscaling.enabled`, mode `native`, not paused, and
   the spec plans;
2. for each group `i < spec.replicas`, ask the leader's runtime admin server, addressed by the
   LeaderWorkerSet's stable DNS name `<lws>-<i>.<lws>.<namespace>` (the same name the workers use
   as `LWS_LEADER_ADDRESS`), for `/ready` and `/metrics`: ready groups report tokens/s (counter
   deltas, resets handled), KV usage, running and waiting requests; a group the autoscaler drained
   reports so in `/ready`'s reason; a group that does not answer is unknown while it may serve
   (it answered within `UNREACHABLE_GRACE_SECONDS`, or its leader pod `<lws>-<i>` is Ready and
   not terminating, or that pod cannot be read: a `LeaderUnreachable` Warning says so), else
   starting;
3. `autoscaling.decide` (pure) returns the decision;
4. scale by patching `spec.replicas` (the same field the scale subresource serves), drain or
   undrain groups through their runtime (`POST /drain`, `/undrain`, with the bearer token from
   the admin Secret, `render.admin`; a refused or unreachable one is a DrainFailed Warning and
   a partial drain is rolled back), record the last 10
   replica changes in `status.recentScalingDecisions`, post an Event, and export
   `dsv4_autoscaler_*` metrics; the ScalingActive condition says whether any group reports
   metrics, and at zero replicas whether the wake-up query answers (written only when it
   changes).
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from dsv4_operator.api import API_VERSION, KIND, InvalidSpecError, parse_spec
from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.autoscaling import (
    AutoscalerConfig,
    AutoscalerState,
    CounterSample,
    Decision,
    GroupSample,
    Observation,
    ceiling_words,
    counter_rate,
    decide,
    parse_snapshot,
    wanted_replicas,
)
from dsv4_operator.handlers.locks import ResourceLocks
from dsv4_operator.handlers.notices import Notices
from dsv4_operator.handlers.reconciler import EmitFn
from dsv4_operator.kube import ApiError, KubeClient, TransientApiError
from dsv4_operator.planning import PlanningError, plan
from dsv4_operator.planning.from_spec import request_from_spec
from dsv4_operator.planning.planner import Plan
from dsv4_operator.render.admin import bearer_header, token_from_secret
from dsv4_operator.render.autoscaler import DEFAULT_PROMETHEUS_URL
from dsv4_operator.render.labels import Owner, child_names
from dsv4_operator.render.runtime_args import ADMIN_PORT, ROUTE_SETTLE_SECONDS
from dsv4_operator.render.status import (
    NATIVE_NO_METRICS,
    NATIVE_SCALED_TO_ZERO,
    NATIVE_SCALING,
    NATIVE_WAKE_UP,
    NATIVE_WAKE_UP_FAILED,
    rfc3339,
)

__all__ = ["Autoscaler", "AutoscalerMetrics", "HttpCall", "config_from", "http_call"]

HttpCall = Callable[[str, str, Mapping[str, str]], tuple[int, str] | None]
"""`(method, url, headers) -> (status, body)`, or None when the peer cannot be reached."""

HELD_REASON = "drained by the autoscaler"
"""`/ready`'s reason while a group is drained (dsv4_runtime.server)."""
UNREACHABLE_GRACE_SECONDS = 120.0
"""How long a group that answered before and now does not (a timeout, a network blip, a
restarting pod) counts as unknown, which holds any scale-down, rather than as starting; past it
the group counts as starting again (LeaderWorkerSet recreates a failed group). Our choice: 8
scrapes at the default 15 s interval. Not while no leader answers at all (`_unreachable`), nor
while the group's leader pod is Ready (`leader_pod_serves`): the kubelet's readiness probe on
the node still passes, so the Service routes requests to it, and only the operator's path to it
fails (a NetworkPolicy, a CNI fault, the operator's node). A crashed leader fails that probe
within 30 s (`render.runtime_args.READY_PERIOD_SECONDS` x `READY_FAILURE_THRESHOLD`), well
inside this grace."""
_TIMEOUT_SECONDS = 2.0
_DECISIONS_KEPT = 10


def http_call(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
    """One HTTP request with a short timeout; None when the peer cannot be reached."""
    request = urllib.request.Request(url, method=method, headers=dict(headers))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS) as response:  # noqa: S310
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, TimeoutError):
        return None


def leader_pod_serves(pod: Mapping[str, Any] | None) -> bool:
    """Whether a leader pod may serve requests: it exists, is not terminating, and is Ready.

    Ready is the pod's `status.conditions` entry of type `Ready` with status `"True"`, which the
    kubelet sets while the readiness probe (the runtime's `/ready`) passes and which the
    EndpointSlice controller follows to route the Service's traffic. A terminating pod
    (`metadata.deletionTimestamp` set) is leaving: LeaderWorkerSet recreates the group.

    Args:
        pod: the Pod object as the API server serves it, or None when there is none.
    """
    if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in conditions
    )


def _reason(ready: tuple[int, str]) -> str:
    """The `reason` of a `/ready` answer (its whole body when that is not a JSON object)."""
    try:
        answer = json.loads(ready[1])
    except ValueError:
        return ready[1]
    return str(answer.get("reason", "")) if isinstance(answer, dict) else ready[1]


def _held(ready: tuple[int, str] | None) -> bool:
    """Whether a `/ready` answer says the autoscaler drained a group that otherwise serves.

    Its reason is exactly `HELD_REASON`: an undrain brings the group's capacity back. A held
    group whose engine is not ready (reason "engine not ready; drained by the autoscaler")
    is not: it counts as starting.
    """
    return ready is not None and ready[0] != 200 and _reason(ready) == HELD_REASON


def _marked_held(ready: tuple[int, str] | None) -> bool:
    """Whether a `/ready` answer says the group is drained by the autoscaler, serving or not.

    What `release` undrains: a held group whose engine is briefly unhealthy must not stay out
    of the Service once it recovers.
    """
    return ready is not None and ready[0] != 200 and HELD_REASON in _reason(ready)


def _leader_pod_name(owner: Owner, index: int) -> str:
    """Group `index`'s leader pod name: `<lws>-<index>`.

    LeaderWorkerSet names a group's leader pod so, its workers `<lws>-<index>-<worker>`
    (`autoscaling.manifests.leader_selector` matches the same names).
    """
    return f"{child_names(owner).leaderworkerset}-{index}"


def _admin_url(owner: Owner, index: int) -> str:
    """Group `index`'s leader runtime admin server: the LWS leader's stable DNS name."""
    lws = child_names(owner).leaderworkerset
    return f"http://{_leader_pod_name(owner, index)}.{lws}.{owner.namespace}:{ADMIN_PORT}"


def config_from(spec: DeepSeekV4DeploymentSpec, planned: Plan) -> AutoscalerConfig:
    """Autoscaler settings from the spec; the plan gives GPUs per replica and a default target."""
    a = spec.autoscaling
    target = a.target_tokens_per_second_per_replica or max(planned.chosen.tokens_per_second, 1)
    return AutoscalerConfig(
        min_replicas=a.min_replicas,
        max_replicas=a.max_replicas,
        target_tokens_per_second=float(target),
        kv_usage_threshold=a.kv_cache_usage_percent_threshold / 100,
        queue_threshold=a.queue_length_threshold,
        scale_up_window_seconds=a.scale_up_stabilization_seconds,
        scale_down_window_seconds=a.scale_down_stabilization_seconds,
        scale_up_max_step=a.scale_up_max_step,
        scale_down_max_step=a.scale_down_max_step,
        scale_to_zero_idle_seconds=a.scale_to_zero_idle_seconds,
        gpus_per_replica=planned.chosen.layout.gpus,
        gpu_budget=spec.gpu.budget,
        # The last failing probe comes at most failureThreshold periods after the drain; one
        # period more covers the EndpointSlice and kube-proxy update after it (h33).
        # The readiness probe's failures plus the endpoint update, as a worker's route settle.
        drain_settle_seconds=ROUTE_SETTLE_SECONDS,
    )


@dataclass
class AutoscalerMetrics:
    """`dsv4_autoscaler_*` metrics, registered on the operator's registry."""

    registry: CollectorRegistry

    def __post_init__(self) -> None:
        self.desired = Gauge(
            "dsv4_autoscaler_replicas",
            "Replicas after the autoscaler's last decision.",
            ["deployment"],
            registry=self.registry,
        )
        self.load = Gauge(
            "dsv4_autoscaler_load_tokens_per_second",
            "Generated tokens per second measured over the serving groups.",
            ["deployment"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "dsv4_autoscaler_decisions",
            "Autoscaler actions taken (scale, drain, undrain).",
            ["action"],
            registry=self.registry,
        )
        self.scrape_failures = Counter(
            "dsv4_autoscaler_scrape_failures",
            "Leader scrapes that got no answer.",
            registry=self.registry,
        )


def _query_value(answer: dict[str, Any]) -> float:
    """The sum of a Prometheus `/api/v1/query` answer's values (vector or scalar; empty: 0).

    Raises:
        ValueError: the answer is not a success with a vector or scalar result.
    """
    if answer.get("status") != "success":
        raise ValueError(str(answer.get("error") or answer.get("status")))
    data = answer["data"]
    if data["resultType"] == "scalar":
        return float(data["result"][1])
    if data["resultType"] == "vector":
        return sum(float(series["value"][1]) for series in data["result"])
    raise ValueError(f"result type {data['resultType']}, not vector or scalar")


@dataclass
class Autoscaler:
    """The native autoscaler's state across timer calls, per deployment.

    Args:
        kube: the API client.
        metrics: `dsv4_autoscaler_*` metrics.
        http: HTTP transport to the runtimes and Prometheus (tests inject one).
        clock: monotonic seconds.
        now: wall-clock time for status.
        prometheus_url: where `spec.autoscaling.wakeUpQuery` runs.
    """

    kube: KubeClient
    metrics: AutoscalerMetrics
    http: HttpCall = http_call
    prometheus_url: str = DEFAULT_PROMETHEUS_URL
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _states: dict[str, AutoscalerState] = field(default_factory=dict)
    _counters: dict[tuple[str, int], CounterSample] = field(default_factory=dict)
    _answered: dict[tuple[str, int], float] = field(default_factory=dict)
    _locks: ResourceLocks[threading.RLock] = field(
        default_factory=lambda: ResourceLocks(threading.RLock)
    )
    """Per deployment, the lock `step`, `release` and `forget` hold (reentrant: `step` calls
    the other two)."""
    _posted: Notices = field(default_factory=Notices)
    """Per deployment and Event reason, what the last Warning of a lasting condition said
    (`DrainFailed`'s message, `WakeUpQueryFailed`'s failure, `ScalingLimited`'s ceiling,
    `LeaderUnreachable`'s groups and causes): posted again only when that changes, or after the
    condition cleared (`Notices.news`)."""

    def _group(
        self,
        key: str,
        owner: Owner,
        index: int,
        t: float,
        unreached: dict[int, tuple[str, str] | None],
    ) -> GroupSample:
        """Group `index`'s sample.

        When `/ready` got no answer, its index goes into `unreached`, with why its leader pod
        keeps it unknown (None when the pod was not read or does not serve: `_unanswered`).
        """
        base = _admin_url(owner, index)
        ready = self.http("GET", f"{base}/ready", {})
        if ready is None:
            unknown_or_starting, why = self._unanswered(key, owner, index, t)
            unreached[index] = why
            return unknown_or_starting
        status, _ = ready
        held = _held(ready)
        if status != 200 and not held:
            self._answered.pop((key, index), None)
            return GroupSample(index, ready=False, starting=True)
        self._answered[(key, index)] = t
        scraped = self.http("GET", f"{base}/metrics", {})
        if scraped is None or scraped[0] != 200:
            self.metrics.scrape_failures.inc()
            return GroupSample(index, ready=True, draining=held, known=False)
        try:
            snap = parse_snapshot(scraped[1])
        except ValueError:  # not exposition format: one group's bad scrape, not the whole step
            self.metrics.scrape_failures.inc()
            return GroupSample(index, ready=True, draining=held, known=False)
        if not snap.has_engine:  # the runtime could not read its engine: no figures, not zeros
            self.metrics.scrape_failures.inc()
            return GroupSample(index, ready=True, draining=held, known=False)
        sample = CounterSample(t, snap.generation_tokens)
        previous = self._counters.get((key, index))
        self._counters[(key, index)] = sample
        return GroupSample(
            index,
            ready=True,
            draining=held,
            generation_tps=counter_rate(previous, sample),
            kv_usage=snap.kv_usage,
            running=snap.running,
            waiting=snap.waiting,
            # The first sample of a counter gives no rate: its 0 tokens/s is unknown, not idle
            # (after an operator restart it would otherwise drain a group at once).
            known=previous is not None,
        )

    def _unanswered(
        self, key: str, owner: Owner, index: int, t: float
    ) -> tuple[GroupSample, tuple[str, str] | None]:
        """A group whose `/ready` got no answer: unknown or starting, and why its pod keeps it so.

        Unknown if it answered within `UNREACHABLE_GRACE_SECONDS` (its requests may still run
        there). Past that, or when it never answered, its leader pod is read (one GET): unknown
        while the pod is Ready and not terminating (`leader_pod_serves`: the Service routes
        requests to it, only the operator cannot reach it) or cannot be read (the safe side;
        the step goes on), else starting (LeaderWorkerSet recreates a failed group). The reason
        is given for those two pod cases only (None otherwise), as (`ready` or `unread`, words).
        """
        self.metrics.scrape_failures.inc()
        answered = self._answered.get((key, index))
        if answered is not None and t - answered < UNREACHABLE_GRACE_SECONDS:
            return GroupSample(index, ready=False, known=False), None
        name = _leader_pod_name(owner, index)
        try:
            pod = self.kube.get("v1", "Pod", owner.namespace, name)
        except ApiError as error:  # 403 (RBAC without pods get), 5xx, no connection
            forbidden = error.status == 403
            rbac = "; the operator needs RBAC get on pods, as the chart grants" if forbidden else ""
            why = ("unread", f"its leader pod {name} could not be read ({error}{rbac})")
            return GroupSample(index, ready=False, known=False), why
        if leader_pod_serves(pod):
            why = ("ready", f"its leader pod {name} is Ready (the Service routes requests to it)")
            return GroupSample(index, ready=False, known=False), why
        return GroupSample(index, ready=False, starting=True), None

    def _report_unreached(
        self, key: str, owner: Owner, why: Mapping[int, tuple[str, str]], emit: EmitFn
    ) -> None:
        """Post a `LeaderUnreachable` Warning for the groups their leader pod keeps unknown.

        `why` maps each such group to the reason (`_unanswered`). Posted when those groups, or
        what keeps one unknown (a Ready pod, a failed read), change; not at every step. Once
        none is left it is forgotten, so a later fault is reported again.
        """
        causes = tuple((i, cause) for i, (cause, _) in sorted(why.items()))
        if not self._posted.news(key, "LeaderUnreachable", causes or None):
            return
        groups = "; ".join(
            f"group {i} ({_admin_url(owner, i)}/ready): {words}"
            for i, (_, words) in sorted(why.items())
        )
        emit(
            "Warning",
            "LeaderUnreachable",
            f"no answer from the leader runtimes of groups {sorted(why)}, which may still serve: "
            f"{groups}. Their load counts as unknown, so nothing is scaled down until they "
            f"answer; check what keeps the operator from the pods' admin port {ADMIN_PORT} "
            "(NetworkPolicy, CNI, DNS)",
        )

    def _unreachable(self, key: str, groups: tuple[GroupSample, ...]) -> tuple[GroupSample, ...]:
        """`groups` when no leader answered this step: those that answered before are unknown.

        One group that stops answering is restarting or gone once `UNREACHABLE_GRACE_SECONDS`
        have passed; every leader silent at once is the operator's side (a NetworkPolicy, DNS,
        its own network), which says nothing about the groups: counted as starting, they read
        as 0 tokens/s and were removed, requests and all, one scale-down window later.
        """
        return tuple(
            GroupSample(g.index, ready=False, known=False)
            if (key, g.index) in self._answered
            else g
            for g in groups
        )

    def _forget_groups(self, key: str, first: int) -> None:
        """Drop the last answers and token counters of `key`'s groups from index `first` on."""
        # list() snapshots in one C-level step: other handler threads add keys meanwhile.
        for known in (self._answered, self._counters):
            for group in [k for k in list(known) if k[0] == key and k[1] >= first]:
                known.pop(group, None)

    def forget(self, namespace: str, name: str) -> None:
        """Drop the decision state, token counters, Warnings said and metrics of `namespace/name`.

        Waits for a step of it in flight: kopf runs the delete handler while it stops the
        resource's timers, not after they stopped (kopf 1.45 `_core/reactor/processing.py`,
        `process_spawning_cause`), and what such a step wrote after this was kept for the life
        of the process.
        """
        key = f"{namespace}/{name}"
        with self._locks(key):
            self._drop(key)

    def _drop(self, key: str) -> None:
        """`forget` of deployment `key`, whose lock the caller holds."""
        self._states.pop(key, None)
        self._posted.forget(key)
        self._forget_groups(key, 0)
        for gauge in (self.metrics.load, self.metrics.desired):
            with contextlib.suppress(KeyError):  # never scraped: no series
                gauge.remove(key)

    def release(self, body: dict[str, Any], emit: EmitFn, *, probe: bool = False) -> None:
        """`_release` under the deployment's lock."""
        meta = body.get("metadata") or {}
        with self._locks(f"{meta.get('namespace')}/{meta.get('name')}"):
            self._release(body, emit, probe=probe)

    def _release(self, body: dict[str, Any], emit: EmitFn, *, probe: bool = False) -> None:
        """Undrain the groups the native autoscaler holds, and forget its state.

        Called when native autoscaling stops applying (disabled, another mode, paused): on a
        spec change, at every resync (so a failed undrain is retried) and in `step`. Without
        this a group drained for a scale-down stayed out of the Service for good, since nothing
        else sends `/undrain`. The groups are those this process drained and, with `probe`,
        those whose `/ready` says they are drained (a previous operator process drained them:
        asked at operator start and when a spec leaves native mode). A failed undrain keeps the
        state, so the next call tries again.

        Raises:
            TransientApiError: reading the admin Secret failed retryably.
            ApiError: reading it failed otherwise.
        """
        owner = Owner.from_body(body)
        key = f"{owner.namespace}/{owner.name}"
        state = self._states.get(key)
        held = set(state.draining) if state is not None else set()
        if probe:
            replicas = int((body.get("spec") or {}).get("replicas") or 0)
            for i in range(replicas):
                if _marked_held(self.http("GET", f"{_admin_url(owner, i)}/ready", {})):
                    held.add(i)
        if held:
            reason = "native autoscaling no longer applies"
            undrain = Decision(0.0, "undrain", 0, 0, tuple(sorted(held)), 0.0, reason)
            if not self._drain(owner, undrain, emit):
                self._states[key] = replace(state or AutoscalerState(), draining=undrain.groups)
                return  # DrainFailed was posted; the next call tries again
        self.forget(owner.namespace, owner.name)

    def step(self, namespace: str, name: str, emit: EmitFn) -> Decision | None:
        """`_step` under the deployment's lock (a `forget` meanwhile waits for it)."""
        with self._locks(f"{namespace}/{name}"):
            return self._step(namespace, name, emit)

    def _step(self, namespace: str, name: str, emit: EmitFn) -> Decision | None:
        """One scrape-decide-apply round for `namespace/name`; None when it does not apply.

        A deployment deleted, or being deleted, is forgotten (nothing is scaled).

        Raises:
            TransientApiError: a retryable API failure (the next tick tries again).
            ApiError: any other API failure.
        """
        body = self.kube.get(API_VERSION, KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            # Deleted: a resource re-created under this name starts afresh.
            self.forget(namespace, name)
            return None
        try:
            spec = parse_spec(body.get("spec") or {})
            planned = plan(request_from_spec(spec))
        except (InvalidSpecError, PlanningError):
            return None
        a = spec.autoscaling
        if a.active_mode != "native" or spec.paused:
            self.release(body, emit)
            return None
        if not planned.fits:
            return None
        key = f"{namespace}/{name}"
        owner = Owner.from_body(body)
        t = self.clock()
        self._forget_groups(key, spec.replicas)  # a group made later at such an index is new
        unreached: dict[int, tuple[str, str] | None] = {}
        groups = tuple(self._group(key, owner, i, t, unreached) for i in range(spec.replicas))
        if groups and len(unreached) == len(groups):
            groups = self._unreachable(key, groups)
        kept = {i: why for i, why in unreached.items() if why is not None}
        self._report_unreached(key, owner, kept, emit)
        wake: str | None = None  # no wake-up query; else "" when it answered, or its failure
        pending = 0
        if a.wake_up_query is not None:
            pending, wake = self._pending(key, a.wake_up_query, emit)
        obs = Observation(t, spec.replicas, groups, pending_outside=pending)
        read = sum(1 for i in range(spec.replicas) if self._read_at(key, i) == t)
        self._report_active(body, read, len(groups), wake)
        before = self._states.get(key, AutoscalerState())
        cfg = config_from(spec, planned)
        decision, state = decide(cfg, before, obs)
        self._states[key] = state
        if decision.action == "scale" and not self._scale(body, decision, emit):
            # The resource changed while the groups were scraped: nothing was scaled, and the
            # next step decides from what it is now.
            self._states[key] = before
            reason = "the resource changed during the scrape: decided again at the next step"
            load = decision.load_tokens_per_second  # measured all the same
            decision = Decision(t, "hold", spec.replicas, spec.replicas, (), load, reason)
        self._report_limited(key, cfg, decision, emit)
        self.metrics.load.labels(deployment=key).set(decision.load_tokens_per_second)
        self.metrics.desired.labels(deployment=key).set(decision.replicas_to)
        if decision.action in {"drain", "undrain"} and not self._drain(owner, decision, emit):
            # Nothing is held now: the next step decides afresh from what groups report.
            self._states[key] = replace(state, draining=())
            return decision
        if decision.action != "hold":
            self.metrics.decisions.labels(action=decision.action).inc()
        return decision

    def _report_limited(self, key: str, cfg: AutoscalerConfig, d: Decision, emit: EmitFn) -> None:
        """Post a `ScalingLimited` Warning when the token load wants more replicas than may run.

        The native counterpart of the HPA's ScalingLimited condition: without it a deployment
        held at maxReplicas (or its GPU budget) under more load says nothing. Posted when the
        load first exceeds the ceiling and again when the ceiling changes, not at every step.
        """
        wanted = wanted_replicas(cfg, d.load_tokens_per_second)
        if not self._posted.news(
            key, "ScalingLimited", cfg.ceiling if wanted > cfg.ceiling else None
        ):
            return
        emit(
            "Warning",
            "ScalingLimited",
            f"{d.load_tokens_per_second:.0f} tokens/s wants {wanted} replicas at "
            f"{cfg.target_tokens_per_second:.0f} tokens/s each, but at most {cfg.ceiling} may "
            f"run: {ceiling_words(cfg)}",
        )

    def _pending(self, key: str, query: str, emit: EmitFn) -> tuple[int, str]:
        """`wakeUpQuery` on Prometheus: requests waiting outside the pods, and the failure.

        The result summed and rounded up, with "" as the failure; 0 and what failed when the
        query fails, with a `WakeUpQueryFailed` Warning posted again only when the failure
        changes.
        """
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        answer = self.http("GET", url, {})
        failure, value = "", 0.0
        if answer is None:
            failure = f"Prometheus at {self.prometheus_url} did not answer"
        elif answer[0] != 200:
            failure = f"Prometheus answered HTTP {answer[0]}: {answer[1][:200]}"
        else:
            try:
                value = _query_value(json.loads(answer[1]))
            except (ValueError, KeyError, TypeError, IndexError) as error:
                failure = f"unexpected Prometheus answer ({error})"
        if failure:
            self.metrics.scrape_failures.inc()
            if self._posted.news(key, "WakeUpQueryFailed", failure):
                emit(
                    "Warning",
                    "WakeUpQueryFailed",
                    f"spec.autoscaling.wakeUpQuery: {failure} (the operator's Prometheus: "
                    "DSV4_OPERATOR_PROMETHEUS_URL, or the chart's operator.prometheusUrl); at "
                    "zero replicas nothing else scales the deployment up",
                )
            return 0, failure
        self._posted.clear(key, "WakeUpQueryFailed")
        return (math.ceil(value) if math.isfinite(value) and value > 0 else 0), ""

    def _read_at(self, key: str, index: int) -> float | None:
        """When group `index`'s engine metrics were last read (None: never)."""
        sample = self._counters.get((key, index))
        return None if sample is None else sample.time

    def _reread(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The resource `body` was read from, read again, or None when it changed identity.

        None when it was deleted or re-created (another uid) or its spec changed (generation,
        `/scale` included) since. The step's `body` is seconds old by the time it writes (up
        to 2 s per unanswered scrape): a write built on it must not undo what happened
        meanwhile.
        """
        meta = body["metadata"]
        fresh = self.kube.get(API_VERSION, KIND, meta["namespace"], meta["name"])
        if fresh is None or any(
            fresh["metadata"].get(k) != meta.get(k) for k in ("uid", "generation")
        ):
            return None
        return fresh

    def _report_active(
        self, body: dict[str, Any], reporting: int, groups: int, wake: str | None
    ) -> None:
        """Set the ScalingActive condition when its status or reason changes (no write otherwise).

        True/`TokenThroughput` while at least one group's engine metrics were read this step;
        False/`NoMetrics` when none were (all starting, unreachable, or their metrics unreadable).
        With no group (scaled to zero) it says what would scale up from zero, from `wake`
        (`_pending`: None without `wakeUpQuery`, "" when it answered, else its failure):
        True/`WakeUpQuery`, False/`WakeUpQueryFailed` (the Warning of that name gives the
        failure), or False/`ScaledToZero` (no query: only a change of spec.replicas).

        The condition list is a merge patch's whole value, so a write builds it from the
        resource read again then (the step's `body` is seconds old: the reconciler may have changed
        other conditions since) and written only over that version (`resource_version`): a
        write in between is a 409, and the next step tries again, never undone. Nothing is
        written when the spec changed since the step's read (its generation): autoscaling may
        be off, paused or in another mode now.

        Raises:
            TransientApiError: a retryable failure other than that 409.
            ApiError: any other failure.
        """
        status, reason = ("True", NATIVE_SCALING) if reporting else ("False", NATIVE_NO_METRICS)
        message = f"{reporting} of {groups} replica groups report metrics"
        if groups == 0 and wake is None:
            status, reason = "False", NATIVE_SCALED_TO_ZERO
            message = (
                "no replica runs and spec.autoscaling.wakeUpQuery is not set: only a change of "
                "spec.replicas (kubectl scale) scales the deployment up from zero"
            )
        elif groups == 0 and wake:
            status, reason = "False", NATIVE_WAKE_UP_FAILED
            message = (
                "no replica runs and spec.autoscaling.wakeUpQuery fails (the WakeUpQueryFailed "
                "Warning says why): nothing scales the deployment up from zero"
            )
        elif groups == 0:
            status, reason = "True", NATIVE_WAKE_UP
            message = (
                "no replica runs; spec.autoscaling.wakeUpQuery answers and scales the "
                "deployment up from zero"
            )

        def unchanged(obj: Mapping[str, Any]) -> bool:
            found = [
                (c.get("status"), c.get("reason"))
                for c in (obj.get("status") or {}).get("conditions") or []
                if c.get("type") == "ScalingActive"
            ]
            return found == [(status, reason)]

        if unchanged(body):  # the usual case: no second read
            return
        # Deleted, re-created or another spec meanwhile (another mode, paused): this step's
        # finding may no longer apply, and the reconciler may have written its own
        # ScalingActive; the next step decides from the new spec.
        fresh = self._reread(body)
        if fresh is None or unchanged(fresh):
            return
        meta, current = fresh["metadata"], fresh.get("status") or {}
        conditions = [dict(c) for c in current.get("conditions") or []]
        conditions = [c for c in conditions if c.get("type") != "ScalingActive"]
        conditions.append(
            {
                "type": "ScalingActive",
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": rfc3339(self.now()),
                "observedGeneration": int(meta.get("generation") or 0),
            }
        )
        try:
            self.kube.patch_status(
                API_VERSION,
                KIND,
                meta["namespace"],
                meta["name"],
                {"conditions": conditions},
                resource_version=meta.get("resourceVersion"),
            )
        except TransientApiError as error:
            if error.status != 409:
                raise
            # Changed in between: the next step reads it again (the decision goes on now).

    def _post(self, owner: Owner, index: int, action: str, token: str) -> str | None:
        """POST /drain or /undrain to group `index`; the refusal (`HTTP 401`...), or None.

        A group that does not answer counts as done: it serves nothing now, and a runtime that
        comes back starts undrained (the hold lives in its memory).
        """
        answer = self.http("POST", f"{_admin_url(owner, index)}/{action}", bearer_header(token))
        return None if answer is None or answer[0] == 200 else f"HTTP {answer[0]}"

    def _drain(self, owner: Owner, d: Decision, emit: EmitFn) -> bool:
        """Drain or undrain `d.groups` with the token from the admin Secret; whether all took it.

        A drain that some group refuses (answers with an error status) is rolled back on the
        groups that took it, so no group stays out of service while the others keep serving;
        the failure is a DrainFailed Warning, posted again only when what failed changes.

        Raises:
            TransientApiError: reading the Secret failed retryably (the next tick tries again).
            ApiError: reading the Secret failed otherwise.
        """
        key = f"{owner.namespace}/{owner.name}"
        secret_name = child_names(owner).admin_secret
        token = token_from_secret(self.kube.get("v1", "Secret", owner.namespace, secret_name))
        if token is None:
            failed = dict.fromkeys(d.groups, f"no token in Secret {secret_name}")
        else:
            answers = {i: self._post(owner, i, d.action, token) for i in d.groups}
            failed = {i: why for i, why in answers.items() if why is not None}
            if failed and d.action == "drain":
                for i in (i for i, why in answers.items() if why is None):
                    self._post(owner, i, "undrain", token)
        if failed:
            message = f"POST /{d.action} failed for groups " + ", ".join(
                f"{i} ({why})" for i, why in sorted(failed.items())
            )
            if self._posted.news(key, "DrainFailed", message):
                outcome = (
                    "the groups keep serving"
                    if d.action == "drain"
                    else "the groups stay drained; tried again at the next step or resync"
                )
                emit("Warning", "DrainFailed", f"{message}; {outcome}")
            return False
        self._posted.clear(key, "DrainFailed")
        verb = "Draining" if d.action == "drain" else "DrainCancelled"
        emit("Normal", verb, f"groups {list(d.groups)}: {d.reason}")
        return True

    def _scale(self, body: dict[str, Any], d: Decision, emit: EmitFn) -> bool:
        """Set `spec.replicas` to `d.replicas_to`, record and announce it; whether it was set.

        Only over the resource the decision was made from: the step read `body` before
        scraping the groups (seconds, up to 2 s per unanswered request), and a user who
        meanwhile scaled, or disabled or switched autoscaling, must not be undone. Read again,
        it must have the same uid and generation (a spec change, `/scale` included, bumps
        it), and the patch applies only at that `resourceVersion` (else 409: nothing set).

        Raises:
            ValueError: `d` has no `cause` (every `scale` from `decide` has one).
            TransientApiError: a retryable failure other than that 409.
            ApiError: any other failure.
        """
        if d.cause is None:
            msg = f"a scale decision needs a cause (Decision.cause): {d}"
            raise ValueError(msg)
        fresh = self._reread(body)
        if fresh is None:
            return False
        namespace, name = fresh["metadata"]["namespace"], fresh["metadata"]["name"]
        try:
            self.kube.patch_replicas(
                API_VERSION,
                KIND,
                namespace,
                name,
                d.replicas_to,
                resource_version=fresh["metadata"].get("resourceVersion"),
            )
        except TransientApiError as error:
            if error.status != 409:
                raise
            return False
        status = fresh.get("status") or {}
        record = {
            "time": rfc3339(self.now()),
            "fromReplicas": d.replicas_from,
            "toReplicas": d.replicas_to,
            "reason": d.cause.value,
            "message": d.reason[:1024],
        }
        kept = [*list(status.get("recentScalingDecisions") or []), record][-_DECISIONS_KEPT:]
        self.kube.patch_status(API_VERSION, KIND, namespace, name, {"recentScalingDecisions": kept})
        direction = "ScaledUp" if d.replicas_to > d.replicas_from else "ScaledDown"
        load = (
            f"{d.load_tokens_per_second:,.0f}" if math.isfinite(d.load_tokens_per_second) else "?"
        )
        emit(
            "Normal",
            direction,
            f"{d.replicas_from} -> {d.replicas_to} replicas at {load} tokens/s: {d.reason}",
        )
        return True
