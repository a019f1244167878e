"""kopf handlers of DeepSeekV4Deployment: thin adapters around `Reconciler.reconcile`.

- create / update (spec) / resume: reconcile; a transient API failure becomes
  `kopf.TemporaryError(delay=...)` (kopf retries with that delay) unless status already reports
  it as a lasting wait (`Progressing=True`, `Waiting`): the timers retry that one, since each
  kopf retry patches its progress annotation on the resource; a spec that cannot be rolled
  out (invalid, unplannable, refused) becomes `kopf.PermanentError` after `Ready=False` and an
  Event were written: kopf stops retrying until the spec changes, and the operator keeps running.
- a timer every `resync_seconds`: the same reconcile, which writes nothing when nothing changed;
  it refreshes replicas from the LeaderWorkerSet status and repairs drifted children.
- a faster timer every `progress_seconds`, running only while a rollout is in progress
  (`Ready=False`, reason `ReplicasNotReady`, or `Progressing` reason `Waiting`; kopf starts and
  stops it as that filter changes),
  so groups turning ready show up in status soon. (The LeaderWorkerSet watch below reacts to
  deletions only: the LWS controller's status writes would reconcile at each of them.)
- a watch of the children's deletions (LeaderWorkerSet, Service, ConfigMap, PodDisruptionBudget,
  HorizontalPodAutoscaler, ScaledObject carrying `app.kubernetes.io/managed-by: dsv4-operator`):
  the owner named by a child's controller ownerReference is reconciled at once, so a child
  deleted by hand is created again within seconds, not at the next resync (up to
  `resync_seconds`, 60 s by default, meanwhile a deleted LeaderWorkerSet's groups were gone and
  status still said Ready), as the Deployment controller watches its ReplicaSets
  (kubernetes/kubernetes `pkg/controller/deployment/deployment_controller.go`, `deleteReplicaSet`
  enqueues the owner). Deletions only: an edit is set back by the resync (`DriftReverted`), so a
  writer that puts its value back each time meets one apply per resync, not a loop. The admin
  Secret is not watched (that needs `list`/`watch` on every Secret of the namespace); the resync
  creates it again (`AdminTokenRotated`).
- delete: nothing to do (children carry ownerReferences; the garbage collector removes them);
  the handler only frees the per-resource state of the reconciler (its metrics included) and
  of the autoscaler, each after a reconcile or step of the resource in flight. `optional=True`
  alone would add no finalizer, but kopf (1.45 `on.py`: `requires_finalizer=True` on every
  timer) adds its `kopf.zalando.org/KopfFinalizerMarker` to every resource because of the
  timers above, so a resource is deleted only while an operator runs (README: Uninstall).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import kopf

from dsv4_operator.api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from dsv4_operator.handlers.autoscaler import Autoscaler
from dsv4_operator.handlers.reconciler import EmitFn, Outcome, Reconciler
from dsv4_operator.kube import ApiError
from dsv4_operator.render.labels import MANAGED_BY
from dsv4_operator.render.status import REFERENCE_MISSING, WAITING
from dsv4_operator.settings import OperatorSettings

__all__ = [
    "CHILD_SELECTOR",
    "WATCHED_CHILDREN",
    "owner_of",
    "register_deployment_handlers",
    "rolling_out",
]

WATCHED_CHILDREN: tuple[tuple[str, str], ...] = (
    ("leaderworkerset.x-k8s.io", "leaderworkersets"),
    ("v1", "services"),
    ("v1", "configmaps"),
    ("policy", "poddisruptionbudgets"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("keda.sh", "scaledobjects"),
)
"""(group or `v1` for the core group, plural) of the children whose deletion is watched; kopf
serves each kind the cluster has, in its preferred version, and skips the others (no LWS or
KEDA installed)."""
CHILD_SELECTOR: Final = f"app.kubernetes.io/managed-by={MANAGED_BY}"
"""Label selector of the children's watches, sent to the API server (`lifecycle.configure_kopf`):
every child carries it (`render.labels`)."""


def _emitter(body: kopf.Body) -> EmitFn:
    def emit(kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message[:1024])

    return emit


def _run(memo: kopf.Memo, body: kopf.Body) -> Outcome:
    reconciler: Reconciler = memo.reconciler
    return reconciler.reconcile(
        str(body.metadata.namespace), str(body.metadata.name), _emitter(body)
    )


def owner_of(body: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(namespace, name, uid) of the DeepSeekV4Deployment that controls child `body`, or None.

    Its ownerReference with `controller: true` of our apiVersion and kind (`Owner.reference`).
    """
    meta = body.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if (
            ref.get("controller")
            and ref.get("apiVersion") == API_VERSION
            and ref.get("kind") == KIND
        ):
            return str(meta.get("namespace") or ""), str(ref.get("name")), str(ref.get("uid"))
    return None


def rolling_out(spec: Mapping[str, Any], status: Mapping[str, Any], **_: Any) -> bool:
    """Kopf filter: the resource is rolling out.

    Not paused, and Ready=False with reason ReplicasNotReady, or ReferenceMissing (a Secret or
    ConfigMap the pods wait for), or Progressing with reason Waiting (applying the spec waits
    for a cause that clears by itself; these timers are its retries).
    """
    if spec.get("paused"):
        return False
    reasons = {str(c.get("type")): c.get("reason") for c in status.get("conditions") or []}
    return (
        reasons.get("Ready") in {"ReplicasNotReady", REFERENCE_MISSING}
        or reasons.get("Progressing") == WAITING
    )


def _scaling_natively(spec: Mapping[str, Any]) -> bool:
    """The native autoscaler acts on `spec`: native mode and not paused."""
    return native_autoscaling(spec) and not spec.get("paused")


def probe_for_drained(reason: str, old: Any, spec: Mapping[str, Any]) -> bool:
    """Whether to ask each group whether it is drained, now that native autoscaling does not act.

    On an update that leaves native mode (kopf gives a `field="spec"` handler the old spec as
    `old`), groups this process drained; on resume of a resource in native mode but disabled or
    paused, groups a previous process may have drained. Other resources are not asked: each
    unreachable group costs a 2 s timeout at operator start.
    """
    if reason == kopf.Reason.RESUME.value:
        return bool((spec.get("autoscaling") or {}).get("mode", "native") == "native")
    return isinstance(old, Mapping) and _scaling_natively(old)


def _release(memo: kopf.Memo, body: kopf.Body, logger: kopf.Logger, *, probe: bool) -> None:
    """Give back the groups the native autoscaler drained when it no longer acts on `body`."""
    if _scaling_natively(body.spec):
        return
    autoscaler: Autoscaler = memo.autoscaler
    try:
        autoscaler.release(dict(body), _emitter(body), probe=probe)
    except ApiError as error:
        logger.warning("autoscaler: undrain failed: %s (the next resync retries)", error)


def native_autoscaling(spec: Mapping[str, Any], **_: Any) -> bool:
    """Kopf `when=` filter: `spec.autoscaling` is enabled in native mode."""
    auto = spec.get("autoscaling") or {}
    return bool(auto.get("enabled")) and auto.get("mode", "native") == "native"


def register_deployment_handlers(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """Register the DeepSeekV4Deployment handlers on `registry` with `config`'s resync interval."""

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    def reconcile(
        body: kopf.Body,
        memo: kopf.Memo,
        logger: kopf.Logger,
        reason: str,
        old: Any,
        **_: Any,
    ) -> None:
        _release(memo, body, logger, probe=probe_for_drained(reason, old, body.spec))
        outcome = _run(memo, body)
        if outcome.reported:  # status says the wait; the resync and progress timers retry
            logger.info("%s (status reports the wait; the timers retry)", outcome.message)
            return
        if outcome.retry_after is not None:
            raise kopf.TemporaryError(outcome.message, delay=outcome.retry_after)
        if outcome.failed:
            raise kopf.PermanentError(outcome.message)

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=config.resync_seconds,
        initial_delay=config.resync_seconds,
        registry=registry,
    )
    def resync(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        _release(memo, body, logger, probe=False)  # retries an undrain that failed
        outcome = _run(memo, body)
        if outcome.retry_after is not None:
            logger.warning("resync: %s (next resync retries)", outcome.message)

    if config.progress_seconds < config.resync_seconds:

        @kopf.timer(
            GROUP,
            VERSION,
            PLURAL,
            id="progress",
            interval=config.progress_seconds,
            initial_delay=config.progress_seconds,
            when=rolling_out,
            registry=registry,
        )
        def progress(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
            outcome = _run(memo, body)
            if outcome.retry_after is not None:
                logger.warning("progress check: %s (retried on the next one)", outcome.message)

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        id="autoscale",
        interval=config.autoscale_seconds,
        initial_delay=config.autoscale_seconds,
        when=native_autoscaling,
        registry=registry,
    )
    def autoscale(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        autoscaler: Autoscaler = memo.autoscaler
        try:
            autoscaler.step(str(body.metadata.namespace), str(body.metadata.name), _emitter(body))
        except ApiError as error:
            logger.warning("autoscaler: %s (the next tick tries again)", error)

    for group, plural in WATCHED_CHILDREN:

        @kopf.on.event(
            group,
            plural,
            id=f"child-{plural}",
            labels={"app.kubernetes.io/managed-by": MANAGED_BY},
            registry=registry,
        )
        def child_deleted(
            event: Mapping[str, Any],
            body: kopf.Body,
            memo: kopf.Memo,
            logger: kopf.Logger,
            **_: Any,
        ) -> None:
            owner = owner_of(body) if event.get("type") == "DELETED" else None
            if owner is None:
                return
            namespace, name = owner[0], owner[1]
            reconciler: Reconciler = memo.reconciler
            # The ownerReference's uid is a predecessor's when the resource was created again
            # under its name (the collector removes the old children, and the successor may be
            # waiting for that): reconcile the live object, with Events under its own uid.
            try:
                uid = reconciler.live_uid(namespace, name)
            except ApiError as error:
                logger.warning("after a child's deletion: %s (the resync retries)", error)
                return
            if uid is None:
                return  # deleted: the collector removes its children
            ref: kopf.RawBody = {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"namespace": namespace, "name": name, "uid": uid},
            }
            outcome = reconciler.reconcile(namespace, name, _emitter(kopf.Body(ref)))
            if outcome.retry_after is not None:
                logger.warning("after a child's deletion: %s (the resync retries)", outcome.message)

    @kopf.on.delete(GROUP, VERSION, PLURAL, optional=True, registry=registry)
    def forget(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        reconciler: Reconciler = memo.reconciler
        reconciler.forget(str(body.metadata.namespace), str(body.metadata.name))
        autoscaler: Autoscaler = memo.autoscaler
        autoscaler.forget(str(body.metadata.namespace), str(body.metadata.name))
