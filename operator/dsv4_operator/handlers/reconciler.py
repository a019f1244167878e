"""One reconcile of a DeepSeekV4Deployment: parse -> plan -> render -> apply -> report.

Kept free of kopf so it can be tested with a fake client; `handlers.deployment` adapts it to
kopf (TemporaryError / PermanentError, Events through kopf's poster).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from dsv4_operator.api import (
    API_VERSION,
    KIND,
    InvalidSpecError,
    check_name,
    parse_spec,
)
from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.handlers.announcements import (
    HAZARDS,
    EmitFn,
    announce_rollout,
    announce_scaling,
    hazards,
    no_fit_message,
)
from dsv4_operator.handlers.locks import ResourceLocks
from dsv4_operator.handlers.notices import Notices
from dsv4_operator.handlers.references import missing_references
from dsv4_operator.kube import (
    ApiError,
    AppliedChild,
    ClusterApis,
    KubeClient,
    TransientApiError,
    apply_children,
    contains,
    discover,
    owner_relation,
)
from dsv4_operator.kube.apply import RENDERED_HASH, Settled, carries_identity
from dsv4_operator.kube.discovery import KEDA_API_VERSION
from dsv4_operator.kube.drift import changed_by, differences, drift_words
from dsv4_operator.kube.peering import NAMESPACE_TERMINATING
from dsv4_operator.metrics import OperatorMetrics, Result
from dsv4_operator.planning import Code, Plan, PlanningError, plan
from dsv4_operator.planning.from_spec import (
    budget_share_words,
    replica_cap_words,
    request_from_spec,
    spec_path,
    spec_words,
)
from dsv4_operator.render import (
    FIELD_MANAGER,
    Observation,
    Owner,
    child_names,
    desired_status,
    endpoint,
    render_children,
    status_patch,
)
from dsv4_operator.render.admin import ADMIN_TOKEN_KEY, admin_secret, token_from_secret
from dsv4_operator.render.autoscaler import DEFAULT_PROMETHEUS_URL
from dsv4_operator.render.leaderworkerset import (
    LWS_API_VERSION,
    running_gpus_per_replica,
)
from dsv4_operator.render.refusal import rollout_refusal
from dsv4_operator.render.rollout import live_rollout, rollout_counts, status_stale
from dsv4_operator.render.status import (
    APPLY_FAILED,
    HPA_NOT_SCALING,
    KEDA_MISSING,
    KEDA_NOT_READY,
    RECONCILE_ERROR,
    REFERENCE_MISSING,
)

__all__ = ["API_RETRY_REPEAT_SECONDS", "DRIFT_REPEAT_SECONDS", "EmitFn", "Outcome", "Reconciler"]

API_RETRY_REPEAT_SECONDS: Final = 60.0
"""A streak of transient failures with one HTTP status posts its ApiRetry Event again after this
long, s: kopf gives up posting an Event after its posting backoffs (54 s by default,
`settings.posting`), so in an outage longer than that the first one is dropped, and a repeat
each minute gets one through within a minute of the server's return."""

DRIFT_REPEAT_SECONDS: Final = 600.0
"""The same `DriftReverted` (one child, the same fields and field managers) is posted again only
this long after the last one, s; the reverts between are counted in it. Another writer that
puts its value back each time (a GitOps tool's self-heal, a controller of its own) and the
operator's resync then alternate: one Event per resync would flood `kubectl describe`."""

log = logging.getLogger("dsv4_operator")


INVALID_SPEC: Final = "InvalidSpec"
PLAN_FAILED: Final = "PlanFailed"
INSUFFICIENT_CAPACITY: Final = "InsufficientCapacity"
_WARNING_REASONS: Final = frozenset(
    {
        INVALID_SPEC,
        PLAN_FAILED,
        INSUFFICIENT_CAPACITY,
        APPLY_FAILED,
        RECONCILE_ERROR,
        "LeaderWorkerSetMissing",
        REFERENCE_MISSING,
    }
)
_ENGINE_REFUSALS: Final = frozenset({Code.ENGINE_TOO_OLD, Code.TRANSFORMERS_TOO_OLD})
"""Planner guards that make a plan unfit whatever its layout (`planning.planner.plan`)."""
_SCALER_FAILURES: Final = frozenset({KEDA_MISSING, KEDA_NOT_READY, HPA_NOT_SCALING})
"""ScalingActive reasons that get a Warning Event when ScalingActive turns to them."""
_UNREPORTED: Final = RECONCILE_ERROR
"""`Reconciler._notices` topic: the message last posted as a `ReconcileError` Event for a failed
reconcile that status could not show either (posted again only when it changes)."""
_FAILED_APPLY: Final = "FailedApply"
"""`Reconciler._notices` topic: the error of a roll-out that failed transiently, so the same
error again is a lasting wait, reported in status (`_report_wait`); a one-off conflict is not."""
_WAIT: Final = "Waiting"
"""`Reconciler._notices` topic: the message of a lasting wait status reports (`WAITING`): its
ApiRetry Event is not posted again each minute (the status write shows the API server answers)."""


@dataclass(frozen=True)
class Outcome:
    """The result of one reconcile.

    Attributes:
        result: the metrics label (`applied`, `unchanged`, `invalid_spec`...).
        message: the error, when there was one.
        retry_after: seconds before a retry when the failure was transient, else None.
        writes: write requests sent through the operator's client (Events included) while this
            reconcile ran; exact when reconciles do not overlap (the client is shared).
        reported: a transient failure that status reports as a wait (Progressing=True,
            `Waiting`): the timers retry it, kopf need not (its retries patch an annotation on
            the resource each time).
        gone: the resource is deleted or being deleted: what was kept of it is dropped.
    """

    result: Result
    message: str = ""
    retry_after: float | None = None
    writes: int = 0
    reported: bool = False
    gone: bool = False

    @property
    def failed(self) -> bool:
        """The spec cannot be rolled out as it is (invalid, not plannable, refused)."""
        return self.result in {"invalid_spec", "plan_failed", "error"}


def _plan_summary(status: Mapping[str, Any] | None) -> tuple[str, int] | None:
    plan_status = (status or {}).get("plan") or {}
    layout = plan_status.get("layout") or {}
    if "gpuType" not in plan_status or "gpusPerReplica" not in layout:
        return None
    return str(plan_status["gpuType"]), int(layout["gpusPerReplica"])


def _lws_target(live: Mapping[str, Any]) -> tuple[int, int]:
    """(replicas, partition) of a live LeaderWorkerSet."""
    counts = live_rollout(live)
    return counts.want, counts.partition


def _lws_stale(applied: AppliedChild | None) -> bool:
    """Whether the LeaderWorkerSet's status counts predate the spec just applied.

    True when this reconcile created it or changed its pod template or replicas (a change of
    the rollout strategy alone rolls no pod; an update always leaves `observedGeneration`
    behind for a moment, so it does not decide here), or, when this reconcile changed nothing,
    when its `status.observedGeneration` (LWS releases that set it) is older than its
    generation.
    """
    if applied is None:
        return False
    if applied.action == "created":
        return True
    if applied.action == "unchanged":
        return status_stale(applied.live)
    before = (applied.previous or {}).get("spec") or {}
    after = applied.live.get("spec") or {}
    return any(before.get(k) != after.get(k) for k in ("leaderWorkerTemplate", "replicas"))


_SCALER_KINDS: Final = frozenset({"HorizontalPodAutoscaler", "ScaledObject"})


def _announce_lws(
    owner: Owner,
    spec: DeepSeekV4DeploymentSpec,
    applied: list[AppliedChild],
    children: list[dict[str, Any]],
    emit: EmitFn,
) -> None:
    """`announce_rollout` and `announce_scaling` for the LeaderWorkerSet in `applied`, if any.

    `children` are those rendered this reconcile: in modes hpa and keda a change of
    spec.replicas is the scaler's only when one is rendered (KEDA or the HPA API served).
    """
    lws = next((a for a in applied if a.kind == "LeaderWorkerSet"), None)
    announce_rollout(owner, spec, lws, emit)
    scaler = any(c["kind"] in _SCALER_KINDS for c in children)
    announce_scaling(spec, lws, emit, scaler_rendered=scaler)


def _apply_announced(
    kube: KubeClient,
    owner: Owner,
    spec: DeepSeekV4DeploymentSpec,
    children: list[dict[str, Any]],
    known: Mapping[str, dict[str, Any] | None] | None,
    emit: EmitFn,
    settled: Settled | None = None,
) -> list[AppliedChild]:
    """`apply_children`; when a child fails, first the Events of the LWS applied before it.

    The LWS's change is posted by the reconcile that made it: the retry finds the LWS
    unchanged, so without this no Event would say its groups are being replaced (e.g. an
    updated template followed by a ScaledObject that KEDA's webhook refuses). On success the
    caller posts them, after `PlanChanged`.

    Raises:
        ApiError: as `apply_children` (TransientApiError included).
    """
    done: list[AppliedChild] = []
    try:
        return apply_children(kube, children, known, done, settled)
    except ApiError as error:
        if not (error.status == 403 and NAMESPACE_TERMINATING in error.reason):
            _announce_lws(owner, spec, done, children, emit)
        raise


def _stored_since(status: Mapping[str, Any], generation: int, now: datetime) -> datetime:
    """When groups started, as `status.startingSince` recorded it before an operator restart.

    Trusted only when the status is of the current generation (a spec changed while no
    operator ran starts a new rollout) and not in the future; otherwise `now`.
    """
    stored = status.get("startingSince")
    if not isinstance(stored, str) or status.get("observedGeneration") != generation:
        return now
    try:
        since = datetime.fromisoformat(stored)
    except ValueError:
        return now
    if since.tzinfo is None:
        return now
    return min(since, now)


@dataclass
class _Attempt:
    """How far one reconcile got, so that a `ReconcileError` can report this generation.

    Attributes:
        generation: `metadata.generation` of the resource as this reconcile read it.
        spec: its parsed spec, once it is to be rolled out (parsed, planned, not refused).
        plan: the plan of `spec` (None until then).
        applied: every child of `plan` was applied, the LeaderWorkerSet's template not held.
    """

    generation: int | None = None
    spec: DeepSeekV4DeploymentSpec | None = None
    plan: Plan | None = None
    applied: bool = False


def _condition(status: Mapping[str, Any] | None, ctype: str) -> Mapping[str, Any]:
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == ctype:
            return dict(condition)
    return {}


@dataclass
class Reconciler:
    """Reconciles DeepSeekV4Deployments with one API client (shared by kopf's worker threads).

    Args:
        kube: the API client.
        metrics: the operator's metrics.
        image: worker image used when `spec.engine.image` is unset.
        retry_delay_seconds: delay before retrying after a transient API error.
        prometheus_url: Prometheus address for KEDA ScaledObjects (mode keda).
        clock: returns the current UTC time (tests pin it).
        apis: discovery result (filled on first use; asked again while LWS is missing).
    """

    kube: KubeClient
    metrics: OperatorMetrics
    image: str
    retry_delay_seconds: float = 10.0
    prometheus_url: str = DEFAULT_PROMETHEUS_URL
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    apis: ClusterApis | None = None
    _locks: ResourceLocks[threading.Lock] = field(
        default_factory=lambda: ResourceLocks(threading.Lock)
    )
    """Per resource name, the lock its reconciles and `forget` hold."""
    _scalers_checked: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Per resource, the (uid, autoscaling mode) for which stale scalers were last removed."""
    _children_seen: dict[str, tuple[str, frozenset[tuple[str, str]]]] = field(default_factory=dict)
    """Per resource, (uid, the (kind, name) of the children the last reconcile found or made):
    a child among them that has to be created again was deleted or replaced meanwhile."""
    _starting_since: dict[str, datetime] = field(default_factory=dict)
    """Per resource, since when every group runs the current template but some are not ready
    (also in `status.startingSince`, read back after an operator restart: `_stored_since`)."""
    _settled: dict[str, Settled] = field(default_factory=dict)
    """Per resource, its children that differ from their rendering only by another manager's
    list entries, as our last apply left them (`kube.apply.Settled`): not applied again."""
    _drift: dict[str, dict[tuple[str, str], tuple[str, datetime, int]]] = field(
        default_factory=dict
    )
    """Per resource, per child (kind, name): the last `DriftReverted` said (fields and field
    managers), when, and the reverts of the same drift since, not posted (`_announce_drift`)."""
    _notices: Notices = field(default_factory=Notices)
    """Per resource, what was last said of a lasting failure, by topic: `_UNREPORTED`,
    `_FAILED_APPLY`, `_WAIT`."""
    _retrying: dict[str, dict[int, datetime]] = field(default_factory=dict)
    """Per resource whose last reconcile failed transiently, the HTTP statuses (0: no answer)
    an ApiRetry Event was posted for in this streak, and when: a status seen again within
    `API_RETRY_REPEAT_SECONDS` only logs (an API server outage fails every resync and
    progress tick alike, and kopf posts the queued Events when it returns)."""

    def live_uid(self, namespace: str, name: str) -> str | None:
        """The uid of DeepSeekV4Deployment `namespace/name`; None when it is gone or being deleted.

        A child's deletion names its owner by the uid in its ownerReference, which is a
        predecessor's when the resource was deleted and created again under its name (the
        garbage collector then removes the old children): Events go to the live object's uid.

        Raises:
            ApiError: the read failed (TransientApiError when retryable).
        """
        body = self.kube.get(API_VERSION, KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        return str(body["metadata"].get("uid") or "")

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept per resource for `namespace/name` (its delete handler calls this).

        The children seen, the scaler check, the startup wait, the children as our last
        apply left them (`_settled`), the ApiRetry streak, what was said of lasting failures
        (`_notices`) and its metrics (`OperatorMetrics.forget`); a resource created again under
        this name starts afresh (the children seen and the scaler check are also keyed by uid).

        Waits for a reconcile of it in flight: kopf runs the delete handler while it stops the
        resource's timers, not after they stopped (kopf 1.45 `_core/reactor/processing.py`,
        `process_spawning_cause`), and what such a reconcile wrote after this was kept for the
        life of the process.
        """
        key = f"{namespace}/{name}"
        with self._lock(key):
            self._drop(key)

    def _drop(self, key: str) -> None:
        """`forget` of resource `key`, whose lock the caller holds."""
        for kept in (self._children_seen, self._scalers_checked, self._starting_since):
            kept.pop(key, None)
        self._retrying.pop(key, None)
        self._settled.pop(key, None)
        self._drift.pop(key, None)
        self._notices.forget(key)
        self.metrics.forget(key)

    def _lock(self, key: str) -> threading.Lock:
        """The lock of resource `key` (`namespace/name`), shared while anyone references it."""
        return self._locks(key)

    def cluster_apis(self, *, need_keda: bool = False) -> ClusterApis:
        """Discovery result, cached; asked again while an API a resource needs is missing.

        That is LWS always, and KEDA for a resource in `mode: keda`, so installing either
        later is noticed; an apply answered 404 (a CRD deleted since) clears the cache, so
        removing either is noticed too.
        """
        apis = self.apis  # one read: another thread may clear it (a 404 on apply)
        if apis is None or not apis.lws or (need_keda and not apis.keda):
            apis = discover(self.kube)
            self.apis = apis
        return apis

    def reconcile(self, namespace: str, name: str, emit: EmitFn) -> Outcome:
        """Bring the children and status of `namespace/name` in line with its spec.

        Reads the resource fresh (so concurrent triggers see each other's status), and
        serializes reconciles of one resource.

        A transient API failure posts a Warning Event `ApiRetry` once per HTTP status per streak
        of them (until a reconcile of the resource ends otherwise); repeats are only logged. A
        roll-out that fails twice in a row with the same error is a lasting wait: status says it
        once (`_report_wait`) and the outcome is `reported`.

        Returns:
            The outcome; transient API failures are returned (with `retry_after`), not raised.
        """
        key = f"{namespace}/{name}"
        started, writes_before = time.monotonic(), self.kube.writes.total

        def counted(kind: str, reason: str, message: str) -> None:
            # kopf posts the Event; it is one more write to the API server.
            self.kube.writes.add("post", "Event")
            emit(kind, reason, message)

        with self._lock(key):
            attempt = _Attempt()
            try:
                outcome = self._reconcile(namespace, name, counted, attempt)
            except TransientApiError as error:
                delay = error.retry_after or self.retry_delay_seconds
                announced = self._retrying.setdefault(key, {})
                now = self.clock()
                last = announced.get(error.status)
                reported = self._notices.last(key, _WAIT) == str(error)  # this very failure
                # Repeated each minute in an outage (kopf drops what it cannot post), not while
                # status reports the wait: that write got through, and so did the Event.
                if last is not None and (
                    reported or (now - last).total_seconds() < API_RETRY_REPEAT_SECONDS
                ):
                    log.warning("%s: %s; retrying in %g s", key, error, delay)  # said already
                else:
                    counted("Warning", "ApiRetry", f"{error}; retrying in {delay:g} s")
                    announced[error.status] = now
                outcome = Outcome("transient_error", str(error), delay, reported=reported)
            except Exception as error:  # a bug: reported on the resource, retried
                outcome = self._internal_error(namespace, name, error, counted, attempt)
            if outcome.result != "transient_error":
                self._retrying.pop(key, None)
                self._notices.clear(key, _FAILED_APPLY)
            if not outcome.reported:
                self._notices.clear(key, _WAIT)
            if outcome.result != "internal_error":
                self._notices.clear(key, _UNREPORTED)
            self.metrics.observe(key, outcome.result, time.monotonic() - started)
            if outcome.gone:  # one waiting while the delete handler ran finds it so
                self._drop(key)
        writes = self.kube.writes.total - writes_before
        return Outcome(
            outcome.result,
            outcome.message,
            outcome.retry_after,
            writes,
            outcome.reported,
            outcome.gone,
        )

    def _internal_error(
        self,
        namespace: str,
        name: str,
        error: Exception,
        emit: EmitFn,
        attempt: _Attempt | None = None,
    ) -> Outcome:
        """Report an unexpected exception on the resource, and retry later.

        An operator bug, or an API refusal no reconcile step expects (a 403 under RBAC
        narrower than the chart's).

        Ready=False and Degraded=True with reason `ReconcileError` and a Warning Event, so the
        failure shows in `kubectl describe` rather than only as a traceback in the operator's
        log; the children are left as they are. As on the other error paths (InvalidSpec,
        PlanFailed, ApplyFailed), the rest of status describes this generation
        (`observedGeneration`): Progressing=False says nothing is applied while the error lasts;
        when `attempt` got as far as this generation's plan, status.plan is that plan (with
        `applied` as far as it got) and PlanChanged is posted as for a rollout, else Planned is
        Unknown; replicas, readyReplicas and Available follow the live LeaderWorkerSet when it
        can be read (best effort: they are left as they were otherwise).
        """
        delay = self.retry_delay_seconds
        log.error("reconcile of %s/%s failed", namespace, name, exc_info=error)
        cause = (
            "the API server refused a request"  # e.g. 403: RBAC narrower than the chart's
            if isinstance(error, ApiError)
            else "internal error (an operator bug: please report it)"
        )
        message = f"{cause}, retried every {delay:g} s: {type(error).__name__}: {error}"
        key = f"{namespace}/{name}"
        try:
            body = self.kube.get(API_VERSION, KIND, namespace, name)
            if body is not None:
                owner, status = Owner.from_body(body), body.get("status") or {}
                got = attempt if attempt and attempt.generation == owner.generation else None
                spec, planned = (got.spec, got.plan) if got else (None, None)
                obs = Observation(
                    owner,
                    spec=spec,
                    plan=planned,
                    plan_applied=bool(got and got.applied),
                    error_reason=RECONCILE_ERROR,
                    error_message=message,
                    **self._live_or_nothing(owner),
                )
                desired, result = self._write_status(obs, status, "internal_error")
                if spec is not None and planned is not None:
                    self._announce_plan(spec, planned, status, emit)
                self._post_status_events(status, desired, emit, result, message)
        except Exception:  # the report is best effort; the retry stands
            log.exception("reporting the failed reconcile of %s/%s failed", namespace, name)
            # The status cannot say it (e.g. a 403 on the status subresource itself): an Event
            # does, once per message while the failure lasts, not at every retry.
            if self._notices.news(key, _UNREPORTED, message):
                emit("Warning", RECONCILE_ERROR, message)
        else:
            self._notices.clear(key, _UNREPORTED)
        return Outcome("internal_error", message, retry_after=delay)

    def _reconcile(
        self, namespace: str, name: str, emit: EmitFn, attempt: _Attempt | None = None
    ) -> Outcome:
        """One reconcile; `attempt` records how far it got (for `_internal_error`)."""
        attempt = attempt or _Attempt()
        body = self.kube.get(API_VERSION, KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return Outcome("unchanged", gone=True)
        owner = Owner.from_body(body)
        attempt.generation = owner.generation
        status = body.get("status") or {}
        try:
            check_name(name)  # the CRD's schema has the same rule; older objects may not
            spec = parse_spec(body.get("spec") or {})
        except InvalidSpecError as error:
            obs = Observation(
                owner,
                error_reason=INVALID_SPEC,
                error_message=str(error),
                **self._live(owner, best_effort=True),
            )
            return self._report(obs, status, emit, "invalid_spec", str(error))
        if spec.paused:
            # Nothing is changed, but a rollout the LWS already started goes on: report it.
            obs = Observation(owner, spec=spec, paused=True, **self._live(owner))
            return self._report(obs, status, emit, "paused")
        try:
            planned = plan(request_from_spec(spec))
        except PlanningError as error:
            # In the resource's terms: `spec.parallelism.tensor`, not the request's field.
            message = f"{spec_path(error.field)}: {error.detail}"
            shared = budget_share_words(spec)
            if error.field == "gpu_budget" and shared is not None and shared not in message:
                message += f"; {shared}"  # the planner's budget is one replica's share
            obs = Observation(
                owner,
                error_reason=PLAN_FAILED,
                error_message=message,
                **self._live(owner, best_effort=True),
            )
            return self._report(obs, status, emit, "plan_failed", message)
        if (refusal := _plan_refusal(name, spec, planned)) is not None:
            reason, result, message = refusal
            obs = Observation(
                owner,
                error_reason=reason,
                error_message=message,
                **self._live(owner, best_effort=True),
            )
            return self._report(obs, status, emit, result, message)
        attempt.spec, attempt.plan = spec, planned
        return self._roll_out(owner, spec, planned, status, emit, attempt)

    def _live(self, owner: Owner, *, best_effort: bool = False) -> dict[str, Any]:
        """The live LeaderWorkerSet's counts as `Observation` fields, for a spec not applied.

        Paused, or a spec that cannot be rolled out: the groups of the last rollout keep
        serving, so status keeps counting them (`lws_status`, `lws_changed`, `lws_target`);
        `lws_absent` when the API says there is no LeaderWorkerSet; empty when it cannot be
        read (no LWS API, 403), and
        with `best_effort` (a spec error to report, which the counts must not hold up) also
        when reading it failed retryably: the counts are refreshed at the next reconcile.

        Raises:
            TransientApiError: reading it failed retryably (not with `best_effort`).
        """
        try:
            read, lws = self._read_lws(owner)
        except TransientApiError as error:
            if not best_effort:
                raise
            log.warning("live counts of %s/%s not read: %s", owner.namespace, owner.name, error)
            return {}
        if lws is None:
            # Read and absent (deleted by hand): nothing serves, whatever the last counts said.
            # (Unless discovery said the LWS API is not served: a GET there is a 404 too.)
            served = self.apis is None or self.apis.lws
            return {"lws_absent": True} if read and served else {}
        return {
            "lws_status": lws.get("status"),
            "lws_changed": status_stale(lws),
            "lws_target": _lws_target(lws),
        }

    def _live_or_nothing(self, owner: Owner) -> dict[str, Any]:
        """`_live` with `best_effort`, and empty on any failure: for reporting an error."""
        try:
            return self._live(owner, best_effort=True)
        except Exception:  # the error report must not fail for the counts
            log.exception("live counts of %s/%s not read", owner.namespace, owner.name)
            return {}

    def _read_lws(self, owner: Owner) -> tuple[bool, dict[str, Any] | None]:
        """(whether it could be read, the live LeaderWorkerSet or None when absent).

        Unreadable: no LWS API, or 403.

        Raises:
            TransientApiError: a retryable failure.
        """
        name = child_names(owner).leaderworkerset
        try:
            return True, self.kube.get(LWS_API_VERSION, "LeaderWorkerSet", owner.namespace, name)
        except TransientApiError:
            raise
        except ApiError:
            return False, None

    def _remove_stale_scalers(
        self, owner: Owner, spec: DeepSeekV4DeploymentSpec, apis: ClusterApis, emit: EmitFn
    ) -> None:
        """Delete this resource's KEDA ScaledObject or HPA once its mode no longer renders it.

        Two scalers writing `spec.replicas` (an old HPA beside the native autoscaler, or one
        left after autoscaling is disabled) would fight; each is named after the resource and
        deleted only when its ownerReference is this resource's uid. Checked when the
        autoscaling mode changes (and once per operator start), not at every resync.

        Raises:
            TransientApiError: a retryable failure.
            ApiError: any other failure (e.g. 403 without `delete` on them).
        """
        key = f"{owner.namespace}/{owner.name}"
        mode = spec.autoscaling.active_mode or "off"
        if self._scalers_checked.get(key) == (owner.uid, mode):
            return
        scalers = [("HorizontalPodAutoscaler", apis.hpa_api_version, "hpa")]
        if apis.keda:
            scalers.append(("ScaledObject", KEDA_API_VERSION, "keda"))
        for kind, api_version, kept_mode in scalers:
            if mode == kept_mode:
                continue
            live = self.kube.get(api_version, kind, owner.namespace, owner.name)
            if live is None or owner_relation(live, owner.reference()) != "own":
                continue
            uid = live["metadata"]["uid"]
            if self.kube.delete(api_version, kind, owner.namespace, owner.name, uid):
                emit(
                    "Normal",
                    "ScalerRemoved",
                    f"deleted {kind} {owner.name}: spec.autoscaling is now {mode}",
                )
        self._scalers_checked[key] = (owner.uid, mode)

    def _admin_secret(
        self, owner: Owner, model: str, live: Mapping[str, Any] | None, emit: EmitFn
    ) -> bool:
        """`_ensure_admin_secret`, and a Warning when it drew a new token under running groups.

        A LeaderWorkerSet exists, so the Secret was deleted (by hand, or to rotate it): its
        pods read the token at start and keep the old one until they restart, and the native
        autoscaler's drains, sent with the new one, are refused meanwhile (day-2 finding: no
        Event said so).

        Raises:
            ApiError: as `_ensure_admin_secret`.
        """
        created = self._ensure_admin_secret(owner, model)
        if created and live is not None:
            name = child_names(owner).admin_secret
            emit(
                "Warning",
                "AdminTokenRotated",
                f"Secret {name} was missing and was created again with a new drain token: the "
                "running groups hold the old one until they restart, so drains (the native "
                "autoscaler's scale-down) are refused with HTTP 401 until then; any pod-template "
                "change (e.g. a spec.pod.annotations edit) restarts them",
            )
        return created

    def _ensure_admin_secret(self, owner: Owner, model: str) -> bool:
        """Create the drain-token Secret (`render.admin`) unless it exists; whether it created it.

        A random 256-bit token; created with POST, never applied over, so it stays what the
        pods read (one GET when it exists). A 409 (created meanwhile) keeps the existing one.
        An existing Secret must be this resource's (or an orphan with its identity labels)
        and hold a token, or no pod is rolled out on it: one left by a deleted resource of the
        same name (another owner uid, or being deleted) is waited for until garbage collection
        removes it; any other is an error.

        Raises:
            TransientApiError: a retryable failure, or the old resource's Secret still exists.
            ApiError: any other failure (e.g. 403 without RBAC on secrets), or a Secret of that
                name that is not this resource's or holds no token (status 409).
        """
        name = child_names(owner).admin_secret
        what = f"Secret {owner.namespace}/{name}"
        found = self.kube.get("v1", "Secret", owner.namespace, name)
        if found is None:
            return self.kube.create(admin_secret(owner, model, secrets.token_hex(32))) is not None
        relation = owner_relation(found, owner.reference())
        if relation == "predecessor" or (found.get("metadata") or {}).get("deletionTimestamp"):
            reason = "left by a deleted DeepSeekV4Deployment of the same name: waiting for it to go"
            raise TransientApiError(409, reason, what, self.retry_delay_seconds)
        ours = admin_secret(owner, model, "")["metadata"]["labels"]
        # An orphan with this resource's identity labels (`kubectl delete --cascade=orphan`) is
        # used as it is: its token is the one the orphaned pods hold. It is not adopted (that
        # would need `patch` on Secrets), so deleting the resource later leaves it behind.
        if relation != "own" and not (relation == "orphan" and carries_identity(found, ours)):
            reason = (
                "exists and is not owned by this DeepSeekV4Deployment (it holds the runtimes' "
                "drain token): delete or rename it"
            )
            raise ApiError(409, reason, what)
        if token_from_secret(found) is None:
            raise ApiError(409, f"has no valid '{ADMIN_TOKEN_KEY}' key: delete it to rotate", what)
        return False

    def _scale_down_held(
        self, owner: Owner, spec: DeepSeekV4DeploymentSpec, live: Mapping[str, Any] | None
    ) -> AppliedChild | None:
        """Set a lower `spec.replicas` on a LeaderWorkerSet whose pod template is held.

        While a claim, Secret or ConfigMap the pods use is missing, the LeaderWorkerSet is
        not applied (`missing_references`: the serving groups keep their template), but
        scaling down needs no reference, and scaling to zero is how one frees the GPUs of
        groups that cannot start (day-2 finding: it was held too, and status said the 0/0
        rollout was complete). A merge patch of `spec.replicas` alone (as the scale
        subresource writes it); scaling up still waits, its new groups could not start.

        Returns:
            The LeaderWorkerSet as changed (`updated`, the live one as `previous`), or None
            when `spec.replicas` is not below its replicas.

        Raises:
            ApiError: the patch failed (TransientApiError when retryable).
        """
        have = ((live or {}).get("spec") or {}).get("replicas")
        if live is None or not isinstance(have, int) or spec.replicas >= have:
            return None
        name = child_names(owner).leaderworkerset
        after = self.kube.patch_replicas(
            LWS_API_VERSION, "LeaderWorkerSet", owner.namespace, name, spec.replicas
        )
        return AppliedChild("LeaderWorkerSet", name, "updated", after, dict(live))

    def _check_subdomain(self, owner: Owner, planned: Plan, children: list[dict[str, Any]]) -> None:
        """Refuse to create a LeaderWorkerSet of several pods per group whose name a Service has.

        The LWS controller names its headless Service (the pods' subdomain) after the
        LeaderWorkerSet and creates it only where no Service of that name exists
        (kubernetes-sigs/lws `reconcileHeadlessServices`: `CreateHeadlessServiceIfNotExists`).
        Another Service there, such as resource `a`'s API Service `a-api` under a resource
        named `a-api`, becomes the subdomain: its DNS has no record of each pod, so the workers
        never resolve their leader and no group starts (day-2 finding). A one-pod group needs
        no such name. One GET, only when the LeaderWorkerSet is to be created.

        Raises:
            ApiError: 409, the Service and its owner named.
            TransientApiError: a retryable failure.
        """
        if planned.chosen.layout.nodes < 2 or not any(
            c["kind"] == "LeaderWorkerSet" for c in children
        ):
            return
        name = child_names(owner).leaderworkerset
        found = self.kube.get("v1", "Service", owner.namespace, name)
        if found is None:
            return
        refs = (found.get("metadata") or {}).get("ownerReferences") or []
        if any(r.get("kind") == "LeaderWorkerSet" and r.get("name") == name for r in refs):
            return  # a headless Service of a LeaderWorkerSet of this name
        holder = f"owned by {refs[0].get('kind')} {refs[0].get('name')}" if refs else "no owner"
        reason = (
            f"Service {owner.namespace}/{name} exists ({holder}): the LWS controller would take "
            "it as this LeaderWorkerSet's headless Service (it creates one named after the "
            "LeaderWorkerSet only where none exists), and the worker pods could not resolve "
            "their leader; rename this resource, or delete or rename that Service"
        )
        raise ApiError(409, reason, f"LeaderWorkerSet {owner.namespace}/{name}")

    def _roll_out(
        self,
        owner: Owner,
        spec: DeepSeekV4DeploymentSpec,
        planned: Plan,
        status: Mapping[str, Any],
        emit: EmitFn,
        attempt: _Attempt,
    ) -> Outcome:
        apis = self.cluster_apis(need_keda=spec.autoscaling.active_mode == "keda")
        read, live = self._read_lws(owner) if apis.lws else (False, None)
        missing = missing_references(self.kube, owner.namespace, spec)
        # Pods of a new template that reference a missing object cannot start: while one is
        # missing, a LeaderWorkerSet that exists keeps its template (its groups keep serving).
        held = bool(missing) and live is not None
        running = running_gpus_per_replica(live) if spec.gpu.budget is not None else None
        children = render_children(
            owner,
            spec,
            planned,
            image=self.image,
            pdb_api_version=apis.pdb_api_version,
            prometheus_url=self.prometheus_url,
            hpa_api_version=apis.hpa_api_version,
            running_gpus_per_replica=running,
        )
        # Said as held only where the template would change: a new resource's LWS, created
        # while the object was missing, runs the desired template already.
        template_held = held and any(
            c["kind"] == "LeaderWorkerSet"
            and not contains(
                ((live or {}).get("spec") or {}).get("leaderWorkerTemplate"),
                c["spec"]["leaderWorkerTemplate"],
            )
            for c in children
        )
        if not apis.lws or held:
            children = [c for c in children if c["kind"] != "LeaderWorkerSet"]
        if not apis.keda:  # mode keda without KEDA installed: nothing to scale with
            children = [c for c in children if c["kind"] != "ScaledObject"]
        try:
            secret_created = self._admin_secret(owner, spec.model, live, emit)
            if read and live is None:
                self._check_subdomain(owner, planned, children)
            # Before the new scaler: KEDA's webhook refuses a ScaledObject while another
            # scaler (our old HPA) targets the same resource.
            self._remove_stale_scalers(owner, spec, apis, emit)
            applied = _apply_announced(
                self.kube,
                owner,
                spec,
                children,
                {"LeaderWorkerSet": live} if read else None,
                emit,
                self._settled.setdefault(f"{owner.namespace}/{owner.name}", {}),
            )
            if held and (scaled := self._scale_down_held(owner, spec, live)) is not None:
                applied.append(scaled)
            attempt.applied = not template_held
        except TransientApiError as error:
            self._report_wait(owner, status, error)
            raise
        except ApiError as error:
            if error.status == 403 and NAMESPACE_TERMINATING in error.reason:
                # The namespace is being deleted: its objects go away with it; nothing to report.
                return Outcome("unchanged")
            if error.status == 404 and error.kind != "namespaces":
                # A kind discovery said was served is gone (its CRD deleted: LWS or KEDA):
                # discover again and retry, so the condition names what is missing.
                self.apis = None
                raise TransientApiError(
                    404, error.reason, "apply", self.retry_delay_seconds
                ) from None
            return self._report_refused(owner, spec, planned, status, emit, error)
        lws_applied = next((a for a in applied if a.kind == "LeaderWorkerSet"), None)
        lws = lws_applied.live if lws_applied else live
        stale = _lws_stale(lws_applied) if lws_applied else live is not None and status_stale(live)
        counts = rollout_counts(
            spec.replicas, spec.rollout.partition, (lws or {}).get("status"), stale
        )
        key = f"{owner.namespace}/{owner.name}"
        if counts.rolled and counts.ready < counts.want:  # updated groups still starting
            starting_since = self._starting_since.get(key) or _stored_since(
                status, owner.generation, self.clock()
            )
            self._starting_since[key] = starting_since
        else:
            starting_since = None
            self._starting_since.pop(key, None)
        obs = Observation(
            owner,
            spec=spec,
            plan=planned,
            lws_api=apis.lws,
            lws_status=(lws or {}).get("status"),
            lws_changed=stale,
            starting_since=starting_since,
            endpoint=endpoint(owner, spec),
            keda_api=apis.keda,
            missing=missing,
            lws_held=template_held,
            scaler=next(
                (a.live for a in applied if a.kind in {"ScaledObject", "HorizontalPodAutoscaler"}),
                None,
            ),
        )
        gpus = planned.chosen.layout.gpus
        self.metrics.set_plan(
            f"{owner.namespace}/{owner.name}", planned.chosen.gpu.name, gpus * spec.replicas
        )
        # Status first: PlanChanged and PlanWarning compare with the stored status, so posted
        # before a status write that then failed (a 403 without RBAC on the status
        # subresource) they were posted again at every retry (day-2 finding). The children's
        # Events compare with what this reconcile applied, and are posted either way.
        try:
            desired, result = self._write_status(
                obs, status, "applied" if secret_created or _any_change(applied) else "unchanged"
            )
        except Exception:
            self._announce_children(owner, spec, applied, children, emit)
            raise
        self._announce_plan(spec, planned, status, emit, after=(owner, applied, children))
        return self._post_status_events(status, desired, emit, result)

    def _announce_plan(
        self,
        spec: DeepSeekV4DeploymentSpec,
        planned: Plan,
        status: Mapping[str, Any],
        emit: EmitFn,
        after: tuple[Owner, list[AppliedChild], list[dict[str, Any]]] | None = None,
    ) -> None:
        """Post `PlanChanged`, the children's Events, then `PlanWarning`.

        `PlanChanged` against `status` (the one before the write); the children's Events of
        `after` (owner, applied, rendered) when given; `PlanWarning` for hazards `status` did
        not list yet.

        Also posted when a child was refused (`ApplyFailed`): status.plan shows the new plan
        then (not applied), so the reconcile that later applies it finds no change to post.
        """
        gpus = planned.chosen.layout.gpus
        old = _plan_summary(status)
        new = (planned.chosen.gpu.name, gpus)
        if old != new:
            before = "none" if old is None else f"{old[1]} x {old[0]}"
            emit(
                "Normal",
                "PlanChanged",
                f"GPUs per replica: {before} -> {gpus} x {new[0]} "
                f"({planned.chosen.layout.describe()}); {spec.replicas} replica(s), "
                f"{gpus * spec.replicas} GPUs in total",
            )
        if after is not None:
            owner, applied, children = after
            self._announce_children(owner, spec, applied, children, emit)
        known = hazards((status.get("plan") or {}).get("warnings") or [])
        for w in planned.warnings:
            if str(w.code) in HAZARDS - known:
                emit("Warning", "PlanWarning", f"{w.code}: {w.worded(spec_words)}")

    def _announce_children(
        self,
        owner: Owner,
        spec: DeepSeekV4DeploymentSpec,
        applied: list[AppliedChild],
        children: list[dict[str, Any]],
        emit: EmitFn,
    ) -> None:
        """The Events of what this reconcile did to the children it `applied`.

        The LeaderWorkerSet's rollout and scaling, children created again, and drift set back
        (against `children`, as rendered).
        """
        _announce_lws(owner, spec, applied, children, emit)
        self._announce_recreated(owner, applied, emit)
        self._announce_drift(owner, applied, children, emit)

    def _announce_recreated(self, owner: Owner, applied: list[AppliedChild], emit: EmitFn) -> None:
        """Post an Event for each child that had to be created again.

        Replaced after the API server refused an update over someone's change (Normal; a
        Service gets a new ClusterIP): always, since the replaced object says so. Deleted by
        hand (Warning): those an earlier reconcile of this process saw; children rendered
        anew (another autoscaling mode) were not seen before: no Event.
        """
        key = f"{owner.namespace}/{owner.name}"
        uid, before = self._children_seen.get(key, ("", frozenset()))
        seen = before if uid == owner.uid else frozenset()
        for child in applied:
            if child.action != "created":
                continue
            if child.previous is None and (child.kind, child.name) not in seen:
                continue
            if child.previous is None:
                emit(
                    "Warning",
                    "ChildRecreated",
                    f"{child.kind} {child.name} was missing (deleted by someone other than "
                    "the operator): created again from the spec",
                )
            else:
                emit(
                    "Normal",
                    "ChildRecreated",
                    f"{child.kind} {child.name} was replaced (deleted and created again): the "
                    "API server refused the update in place (an immutable field, changed by "
                    "another manager or by a new rendering)",
                )
        self._children_seen[key] = (owner.uid, frozenset((a.kind, a.name) for a in applied))

    def _announce_drift(
        self,
        owner: Owner,
        applied: list[AppliedChild],
        children: list[dict[str, Any]],
        emit: EmitFn,
    ) -> None:
        """Post `DriftReverted` (Warning) for each child set back over another writer's change.

        A child updated while its rendering did not change (the `RENDERED_HASH` it carried is
        the one applied) differed from the spec because someone else wrote it: `kubectl scale`
        or `kubectl edit` of the LeaderWorkerSet, a GitOps tool or controller forcing its own
        value (server-side apply `--force-conflicts` moves the field to its manager). The
        forced apply of the operator's field manager took the fields back; the Event names
        them (only those set back: another manager's entry in a list keyed by name or port
        stays, `kube.apply.Settled`) and the field managers that held them (`kube.drift`),
        so a fight with another writer is visible instead of a silent revert at every resync.
        The same drift again is posted after `DRIFT_REPEAT_SECONDS` at the earliest, with the
        count of the reverts between; each revert is logged.
        """
        key = f"{owner.namespace}/{owner.name}"
        rendered = {(str(c["kind"]), str(c["metadata"]["name"])): c for c in children}
        now = self.clock()
        for child in applied:
            desired = rendered.get((child.kind, child.name))
            if child.action != "updated" or child.previous is None or desired is None:
                continue
            hashes = {
                ((obj.get("metadata") or {}).get("annotations") or {}).get(RENDERED_HASH)
                for obj in (child.previous, child.live)
            }
            if len(hashes) != 1 or None in hashes:
                continue  # a new rendering (the spec or the operator changed), not drift
            left = set(differences(child.live, desired))  # not ours to remove: logged by apply
            paths = [p for p in differences(child.previous, desired) if p not in left]
            if not paths:
                continue
            words = drift_words(paths, changed_by(child.previous, paths, FIELD_MANAGER))
            log.warning("%s: %s %s: %s; set back to the spec", key, child.kind, child.name, words)
            said = self._drift.setdefault(key, {})
            last = said.get((child.kind, child.name))
            same = last is not None and last[0] == words
            if last is not None and same and (now - last[1]).total_seconds() < DRIFT_REPEAT_SECONDS:
                said[(child.kind, child.name)] = (words, last[1], last[2] + 1)
                continue
            since = f" ({last[2]} more time(s) since the last such Event)" if last and same else ""
            said[(child.kind, child.name)] = (words, now, 0)
            emit(
                "Warning",
                "DriftReverted",
                f"{child.kind} {child.name}: {words}; set back to the spec{since} (the "
                f"operator applies its fields with force as field manager {FIELD_MANAGER} "
                "at every resync: change the DeepSeekV4Deployment instead, or stop the other "
                "writer)",
            )

    def _report_refused(
        self,
        owner: Owner,
        spec: DeepSeekV4DeploymentSpec,
        planned: Plan,
        status: Mapping[str, Any],
        emit: EmitFn,
        error: ApiError,
    ) -> Outcome:
        """Report a child the API server refused (`ApplyFailed`), and the plan it belongs to.

        status.plan becomes this generation's plan with `applied: false` (it had kept the
        previous plan beside this generation's observedGeneration: day-2 finding), Progressing
        False says it is not applied; PlanChanged and PlanWarning are posted as for a rollout.
        The live LeaderWorkerSet's counts keep status.replicas, readyReplicas and Available
        current while the refusal lasts (they had stayed as the last rollout left them).
        """
        obs = Observation(
            owner,
            spec=spec,
            plan=planned,
            error_reason=APPLY_FAILED,
            error_message=str(error),
            **self._live(owner, best_effort=True),
        )
        desired, result = self._write_status(obs, status, "error")
        self._announce_plan(spec, planned, status, emit)
        return self._post_status_events(status, desired, emit, result, str(error))

    def _report_wait(self, owner: Owner, status: Mapping[str, Any], error: ApiError) -> None:
        """Say a lasting wait in status: Progressing=True, reason `Waiting`, naming the error.

        Only when this roll-out failed with the same error last time (one conflict is retried
        at once and is not news); written once per message (`status_patch` writes nothing when
        status already says it), without an Event beyond the streak's ApiRetry. Best effort: a
        status write that fails too (an outage) leaves the retry to kopf, as before.
        """
        key = f"{owner.namespace}/{owner.name}"
        message = str(error)
        if self._notices.news(key, _FAILED_APPLY, message):  # not the same error as last time
            self._notices.clear(key, _WAIT)
            return
        try:
            self._write_status(Observation(owner, waiting=message), status, "transient_error")
        except ApiError as failed:
            log.warning("%s: the wait (%s) not written to status: %s", key, message, failed)
            self._notices.clear(key, _WAIT)
            return
        self._notices.note(key, _WAIT, message)

    def _report(
        self,
        obs: Observation,
        status: Mapping[str, Any],
        emit: EmitFn,
        result: Result,
        message: str = "",
    ) -> Outcome:
        desired, result = self._write_status(obs, status, result)
        return self._post_status_events(status, desired, emit, result, message)

    def _write_status(
        self, obs: Observation, status: Mapping[str, Any], result: Result
    ) -> tuple[dict[str, Any], Result]:
        """Patch the status `obs` calls for, if it differs; (that status, the result).

        `unchanged` becomes `applied` when the status was written.

        Raises:
            ApiError: the status write failed (TransientApiError when retryable).
        """
        desired = desired_status(obs, status, self.clock())
        patch = status_patch(desired, status)
        if patch:
            self.kube.patch_status(API_VERSION, KIND, obs.owner.namespace, obs.owner.name, patch)
            if result == "unchanged":
                result = "applied"
        return desired, result

    def _post_status_events(
        self,
        status: Mapping[str, Any],
        desired: Mapping[str, Any],
        emit: EmitFn,
        result: Result,
        message: str = "",
    ) -> Outcome:
        """The Events of a status change from `status` to `desired` (already written)."""
        before, after = _condition(status, "Ready"), _condition(desired, "Ready")
        warning = after.get("reason") in _WARNING_REASONS
        # Events: every error (again when its message changes), and Ready turning True; a
        # rollout in progress (Ready=False, ReplicasNotReady) is not news.
        fields = ("reason", "status", "message") if warning else ("reason", "status")
        newsworthy = warning or after.get("status") == "True"
        if after and newsworthy and any(after.get(f) != before.get(f) for f in fields):
            kind = "Warning" if warning else "Normal"
            emit(kind, str(after["reason"]), str(after.get("message", "")))
        scaling = _condition(desired, "ScalingActive")
        reason = scaling.get("reason")
        if reason in _SCALER_FAILURES and reason != _condition(status, "ScalingActive").get(
            "reason"
        ):
            emit("Warning", str(reason), str(scaling.get("message", "")))
        return Outcome(result, message)


def _any_change(applied: list[AppliedChild]) -> bool:
    return any(a.action != "unchanged" for a in applied)


def _plan_refusal(
    name: str, spec: DeepSeekV4DeploymentSpec, planned: Plan
) -> tuple[str, Result, str] | None:
    """Why a plan cannot be rolled out, as (condition reason, outcome, message), or None.

    No layout fits (`InsufficientCapacity`); or (`InvalidSpec`) an engine the planner refuses
    whatever the layout (`ENGINE_TOO_OLD`: `spec.engine.version` before the model's
    architecture), a group of several pods whose worker StatefulSet names would be too long
    (LWS creates none for one-pod groups), `spec.placement` that can never schedule the
    planned group, or an ephemeral-storage limit below the Hub download.
    """
    refused = [w for w in planned.warnings if w.code in _ENGINE_REFUSALS]
    if not planned.fits and planned.chosen.fits and refused:  # a layout fits; not the engine
        message = "; ".join(f"{w.code}: {w.worded(spec_words)}" for w in refused)
        return INVALID_SPEC, "invalid_spec", f"spec.engine.version {spec.engine.version}: {message}"
    if not planned.fits:
        message = no_fit_message(planned)
        if (shared := budget_share_words(spec)) is not None:
            message = f"{shared}; {message}"
        if (capped := replica_cap_words(spec, planned)) is not None:
            message = f"{capped}; {message}"
        return INSUFFICIENT_CAPACITY, "plan_failed", message
    if (problem := rollout_refusal(name, spec, planned)) is not None:
        return INVALID_SPEC, "invalid_spec", problem
    return None
