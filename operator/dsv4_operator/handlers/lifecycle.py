"""Operator lifecycle: login, startup (settings, clients in memo, discovery), cleanup."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, Final

import kopf
from typing_extensions import override

from dsv4_operator.api.crd import DEEPSEEK_V4_DEPLOYMENT, crd_manifest, schema_gaps
from dsv4_operator.handlers.autoscaler import Autoscaler, AutoscalerMetrics
from dsv4_operator.handlers.deployment import CHILD_SELECTOR, WATCHED_CHILDREN
from dsv4_operator.handlers.reconciler import Reconciler
from dsv4_operator.kube import (
    ApiError,
    CredentialsError,
    KubeClient,
    TransientApiError,
    build_api_client,
    watch_crd,
)
from dsv4_operator.kube.client import PLURALS
from dsv4_operator.kube.peering import PEERING_API_VERSION, PeeringResult, ensure_peering
from dsv4_operator.metrics import OperatorMetrics
from dsv4_operator.render import FIELD_MANAGER, LWS_API_VERSION
from dsv4_operator.settings import OperatorSettings, listen_host

__all__ = [
    "ANNOTATIONS_LIMIT_BYTES",
    "API_RETRY_BACKOFFS_SECONDS",
    "CRD_GAPS_KEY",
    "PEERING_BACKOFF_SECONDS",
    "PEERING_RECHECK_SECONDS",
    "PEERING_RETRIES",
    "STOP_ON_CRD_GAPS_KEY",
    "TIMER_EXIT_POLL_SECONDS",
    "BoundedAnnotationsDiffBaseStorage",
    "configure_kopf",
    "crd_gaps_message",
    "create_peering_objects",
    "register_lifecycle_handlers",
    "register_peering_handler",
    "watch_missing_namespaces",
]

PEERING_RETRIES = 24
"""Attempts at creating the peering objects before the operator exits (kopf startup retries)."""
PEERING_BACKOFF_SECONDS = 5.0
"""Seconds between them: 2 minutes in all, for CRDs created just before the operator starts."""
TIMER_EXIT_POLL_SECONDS = 1.0
"""How soon kopf looks again at a resource whose timer (resync, progress, autoscale) was still
running when kopf asked it to stop (deletion, a `when=` filter no longer matching), s.

kopf stops the timers of a deleted resource and removes its finalizer only once they have
ended; a sync timer mid-run (a reconcile in its thread) cannot end at once, and kopf then
plans its next look `settings.background.cancellation_polling` later (1.45 default: 60 s,
`kopf/_core/engines/daemons.py` `stop_daemons`). Nothing wakes it when the timer ends, so the
resource stayed on the finalizer a minute after the reconcile had finished. Each look at a
timer still running costs one PATCH of kopf's `touch-dummy` annotation (its sleep-and-touch,
`kopf/_core/actions/application.py` `apply`), so one per second while it runs; not zero, which
would touch in a tight loop."""
API_RETRY_BACKOFFS_SECONDS: tuple[float, ...] = (1, 1, 2, 3, 5, 8, 13) + (15,) * 44
"""Seconds between the attempts of each API request kopf itself sends (watches, its annotation
and finalizer patches, the peering keep-alive): kopf's default backoffs up to 13 s, then every
15 s, 11.5 minutes in all. kopf's default (1, 1, 2, 3, 5, 8, 13, 21: 54 s in all) gave up on
the peering keep-alive during a longer API server outage, and kopf then stopped the whole
operator (day-2 finding); now an outage up to about 11 minutes is ridden out and the server's
return is noticed within 15 s. A longer one still ends a peered operator (its pod restarts).
Set for a single replica too. kopf retries 403 Forbidden as it does 5xx and connection errors
(kopf 1.45 `_cogs/clients/api.py`), so a permission kopf's own requests lack (a watched
namespace without its Role) also ends the operator only after these 11.5 minutes, not ~1."""
ANNOTATIONS_LIMIT_BYTES: Final = 256 * 1024
"""Most bytes of an object's annotation keys and values together (Kubernetes apimachinery
`TotalAnnotationSizeLimitB`); a write beyond it is refused with 422."""


class BoundedAnnotationsDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff-base annotation, left out of a patch where it would pass the size limit.

    kopf keeps a copy of the spec (its diff-base, `last-handled-configuration`) in an
    annotation, and `kubectl apply` keeps another (`last-applied-configuration`): a spec of
    more than about 128 KiB (`spec.pod.annotations` alone may hold 252 KiB) then pushes the
    annotations past `ANNOTATIONS_LIMIT_BYTES`, the API server refuses every kopf patch (422
    `metadata.annotations: Too long`), and since kopf removes its finalizer in such a patch, the
    resource could never be deleted (day-2 finding). Here the copy is written only where the
    annotations stay within the limit, and a stale one is removed otherwise. Without it kopf
    sees each event of the resource as its creation: the reconcile runs then (it is the same
    for a creation and an update, and writes nothing when nothing changed), and the update
    handler's `old` spec is missing (the native autoscaler's undrain probe on leaving native
    mode is skipped; the next resync releases the groups).
    """

    @override
    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        keys = set(self.make_keys(self.key, body=body))
        after: dict[str, str] = dict(body.metadata.annotations)
        for key, value in patch.metadata.annotations.items():
            if value is None:
                after.pop(key, None)
            else:
                after[key] = str(value)
        others = sum(len(k.encode()) + len(v.encode()) for k, v in after.items() if k not in keys)
        encoded = json.dumps(essence, separators=(",", ":")) + "\n"  # as kopf encodes it
        needed = sum(len(k.encode()) + len(encoded.encode()) for k in keys)
        if others + needed <= ANNOTATIONS_LIMIT_BYTES:
            super().store(body=body, patch=patch, essence=essence)
            return
        logging.getLogger("dsv4_operator").warning(
            "%s/%s: kopf's copy of the spec (%d bytes) would take the annotations past %d "
            "bytes; not kept (each change is handled as a creation)",
            body.metadata.namespace,
            body.metadata.name,
            len(encoded),
            ANNOTATIONS_LIMIT_BYTES,
        )
        for key in keys:
            if key in body.metadata.annotations:
                patch.metadata.annotations[key] = None


CRD_GAPS_KEY = "crd_gaps"
"""The memo key under which the CRD watch leaves the gaps it found before stopping the
operator (`runner.run` then exits 1)."""
STOP_ON_CRD_GAPS_KEY = "stop_on_crd_gaps"
"""Set in the memo by `runner.run`: the CRD watch may stop this process (SIGTERM to itself,
kopf's graceful stop, as on pod termination). Not set under a test's in-process runner, where
the watch only logs."""
PEERING_RECHECK_SECONDS = 30.0
"""How often each watched namespace's KopfPeering is checked: created soon after a namespace
that did not exist at startup appears, and again after a namespace is deleted and re-created
(which deletes it), so kopf resumes there."""


def register_lifecycle_handlers(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """Register login, startup and cleanup handlers on `registry`."""

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the service account; elsewhere: $KUBECONFIG, read now (not at import).
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        return info or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def startup(
        settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        configure_kopf(settings, config)
        metrics = OperatorMetrics()
        if config.metrics_port:
            try:
                metrics.serve(config.metrics_port, listen_host(os.environ))
            except OSError as error:
                # e.g. EADDRINUSE: retrying every minute behind a traceback fixed nothing.
                raise kopf.PermanentError(
                    f"--metrics-port (DSV4_OPERATOR_METRICS_PORT) {config.metrics_port}: cannot "
                    f"serve /metrics there: {error}; pick a free port, or 0 to serve none"
                ) from error

        def count(verb: str, kind: str) -> None:
            metrics.api_writes.labels(verb=verb, kind=kind).inc()

        try:
            api_client = build_api_client()
        except CredentialsError as error:
            # No retry can fix missing credentials: kopf stops the operator (exit 1) instead of
            # retrying this handler every minute behind a traceback.
            raise kopf.PermanentError(str(error)) from error
        kube = KubeClient(api_client, FIELD_MANAGER, on_write=count)
        _check_served_crd(kube, memo, logger)
        reconciler = Reconciler(
            kube,
            metrics,
            config.runtime_image,
            retry_delay_seconds=config.retry_delay_seconds,
            prometheus_url=config.prometheus_url,
        )
        memo.reconciler = reconciler
        memo.autoscaler = Autoscaler(
            kube, AutoscalerMetrics(metrics.registry), prometheus_url=config.prometheus_url
        )
        try:
            apis = reconciler.cluster_apis()
        except ApiError as error:
            logger.error("API discovery failed at startup (retried on each reconcile): %s", error)
            return
        if not apis.lws:
            logger.error(
                "The LeaderWorkerSet API (%s) is not served by this cluster: install LWS "
                "(https://github.com/kubernetes-sigs/lws). Until then every DeepSeekV4Deployment "
                "reports Ready=False and Degraded=True with reason LeaderWorkerSetMissing, and "
                "an Event; the operator re-checks on every reconcile.",
                LWS_API_VERSION,
            )
        logger.info(
            "dsv4-operator ready: LWS %s, PodDisruptionBudget %s, resync every %g s",
            "served" if apis.lws else "MISSING",
            apis.pdb_api_version,
            config.resync_seconds,
        )

    if config.peering is not None:
        register_peering_handler(registry, config.peering, config.namespaces)

    @kopf.on.cleanup(registry=registry)
    def cleanup(memo: kopf.Memo, **_: Any) -> None:
        for key in ("peering_stop", "crd_watch_stop"):
            stop: threading.Event | None = memo.get(key)
            if stop is not None:
                stop.set()
        reconciler: Reconciler | None = memo.get("reconciler")
        if reconciler is not None:
            reconciler.kube.close()


def crd_gaps_message(gaps: list[str]) -> str:
    """Why the operator stops: the served CRD lacks `gaps` (`api.crd.schema_gaps`)."""
    shown = ", ".join(gaps[:12]) + (f" and {len(gaps) - 12} more" if len(gaps) > 12 else "")
    return (
        f"the served CustomResourceDefinition {DEEPSEEK_V4_DEPLOYMENT.name} lacks what this "
        f"operator's has: {shown}. An older CRD was applied over it (another Helm release of an "
        "older chart, a revert): the API server hides those fields of every "
        "DeepSeekV4Deployment and deletes them at the next write of each, so the operator "
        "stops instead of writing. Apply this operator's CRD (its chart's crds/, README "
        "'Upgrading') and start it again"
    )


def _check_served_crd(kube: KubeClient, memo: kopf.Memo, logger: kopf.Logger) -> None:
    """Refuse to start on an older served CRD, then watch it and stop the operator if one lands.

    The watch runs in a thread with its own client; on gaps it logs them, leaves them in
    `memo` under `CRD_GAPS_KEY` and, when `STOP_ON_CRD_GAPS_KEY` is set there (`runner.run`),
    sends this process SIGTERM, which kopf handles as a graceful stop. (kopf's `stop_flag`
    would do, but kopf waits for a thread-side flag in an executor thread that then blocks
    the loop's shutdown on every other way of stopping.)

    Raises:
        kopf.PermanentError: the served CRD lacks a version or property of this operator's
            (kopf then stops the operator, which exits 1).
    """
    ours = crd_manifest()
    try:
        served = kube.custom_resource_definition(DEEPSEEK_V4_DEPLOYMENT.name)
    except ApiError as error:
        logger.error("could not read the served CRD to compare it (not checked): %s", error)
        served = None
    if served is not None and (gaps := schema_gaps(served, ours)):
        raise kopf.PermanentError(crd_gaps_message(gaps))

    def on_crd(crd: Any) -> bool:
        found = schema_gaps(crd, ours)
        if not found:
            return False
        logger.critical("stopping: %s", crd_gaps_message(found))
        memo[CRD_GAPS_KEY] = found
        if memo.get(STOP_ON_CRD_GAPS_KEY):
            os.kill(os.getpid(), signal.SIGTERM)
        return True

    stop = threading.Event()
    memo.crd_watch_stop = stop  # set by the cleanup handler
    threading.Thread(
        target=watch_crd,
        args=(build_api_client, DEEPSEEK_V4_DEPLOYMENT.name, on_crd),
        kwargs={"stop": stop, "logger": logger},
        name="dsv4-crd-watch",
        daemon=True,
    ).start()


def configure_kopf(settings: kopf.OperatorSettings, config: OperatorSettings) -> None:
    """Set kopf's settings for this operator (the startup handler calls this).

    kopf keeps its progress in annotations (our status keys stay apart; its copy of the spec
    only where it fits, `BoundedAnnotationsDiffBaseStorage`), runs at most
    `config.workers` sync handlers at once, posts Events from INFO up, and retries each of its
    own API requests for `API_RETRY_BACKOFFS_SECONDS` (11.5 minutes) before giving up, and
    looks again every `TIMER_EXIT_POLL_SECONDS` at a timer that must stop (a deleted resource
    keeps kopf's finalizer until its timers have ended). The watches of the children's kinds
    (`deployment.WATCHED_CHILDREN`) ask the API server for this operator's children only
    (`CHILD_SELECTOR`, kopf's `settings.watching.label_selectors`: a `labelSelector` on the
    list and watch requests, kopf `_cogs/clients/watching.py`), so a cluster's other Services
    and ConfigMaps are neither listed nor streamed to the operator; the handler's own `labels`
    filter is client-side only.
    """
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    settings.persistence.diffbase_storage = BoundedAnnotationsDiffBaseStorage()
    settings.execution.max_workers = config.workers
    settings.posting.level = logging.INFO
    settings.networking.error_backoffs = API_RETRY_BACKOFFS_SECONDS
    settings.background.cancellation_polling = TIMER_EXIT_POLL_SECONDS
    for group, plural in WATCHED_CHILDREN:
        settings.watching.label_selectors[group, plural] = CHILD_SELECTOR


def register_peering_handler(
    registry: kopf.OperatorRegistry, name: str, namespaces: tuple[str, ...]
) -> None:
    """Register the startup handler that creates kopf's peering objects (`ensure_peering`).

    It runs after the main startup handler (registration order) and before kopf's watches.
    Retried every `PEERING_BACKOFF_SECONDS` while the peering kind is not served (404: CRDs
    missing or not yet established) or the API server fails transiently; after
    `PEERING_RETRIES` attempts kopf stops the operator, so the pod restarts visibly instead of
    staying paused (the chart's startupProbe allows for that time before the liveness probe,
    since kopf serves /healthz only after every startup handler).
    """

    @kopf.on.startup(
        registry=registry,
        id="peering-objects",
        retries=PEERING_RETRIES,
        backoff=PEERING_BACKOFF_SECONDS,
    )
    def peering_objects(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        reconciler: Reconciler | None = memo.get("reconciler")
        if reconciler is not None:
            result = create_peering_objects(reconciler.kube, name, namespaces, logger)
        else:
            kube = _new_kube()
            try:
                result = create_peering_objects(kube, name, namespaces, logger)
            finally:
                kube.close()
        # Every watched namespace is looked after, not only those missing now: deleting a
        # namespace deletes its KopfPeering, and kopf, which paused a standby replica there on
        # that DELETED event, resumes only on an event from a new one; it pauses the whole
        # operator meanwhile (day-2 finding: failover stalled until a restart).
        looked_after = (
            tuple(
                key.split("/", 1)[0]
                for key in (*result.created, *result.existing, *result.no_namespace)
            )
            if namespaces  # a ClusterKopfPeering goes with no namespace
            else ()
        )
        if looked_after:
            stop = threading.Event()
            memo.peering_stop = stop  # set by the cleanup handler
            threading.Thread(
                target=watch_missing_namespaces,
                args=(_new_kube, name, looked_after),
                kwargs={
                    "stop": stop,
                    "logger": logger,
                    "interval": PEERING_RECHECK_SECONDS,
                    "keep": True,
                },
                name="dsv4-peering-namespaces",
                daemon=True,
            ).start()


def _new_kube() -> KubeClient:
    """A client of its own for work outside the reconciler's (closed by the caller)."""
    return KubeClient(build_api_client(), FIELD_MANAGER)


def watch_missing_namespaces(
    make_kube: Callable[[], KubeClient],
    name: str,
    namespaces: tuple[str, ...],
    *,
    stop: threading.Event,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    interval: float = PEERING_RECHECK_SECONDS,
    keep: bool = False,
) -> None:
    """Create the KopfPeering `name` in watched namespaces where it is missing.

    Every `interval` seconds until `stop` is set, `ensure_peering` runs for the namespaces
    whose object is missing; kopf resumes in a namespace once its peering object exists. A
    namespace where creation is forbidden (403) is logged and no longer tried. Without `keep`,
    `namespaces` are those that did not exist at startup, and the watch ends once none is
    missing; with `keep`, `namespaces` are all the watched ones, each checked every time (a
    LIST by name), since deleting a namespace deletes its KopfPeering and a namespace created
    again needs a new one; a namespace whose LIST is refused (403: a namespace deleted for good
    takes the chart's Role in it along) is skipped that time, logged once, and does not stop
    the others' checks.

    Args:
        make_kube: a fresh API client per attempt (closed after it).
        name: the peering name.
        namespaces: the namespaces to look after.
        stop: set by the operator's cleanup.
        logger: where progress and failures go.
        interval: seconds between attempts.
        keep: go on after every object exists, and re-create one that disappears.
    """
    watched, missing = namespaces, namespaces
    refused: dict[str, str] = {}  # namespace -> the refusal of its LIST last logged
    while ((keep and watched) or missing) and not stop.wait(interval):
        try:
            kube = make_kube()
            try:
                if keep:
                    missing = tuple(
                        ns
                        for ns in watched
                        if _peering_missing(kube, ns, name, refused, logger, interval)
                    )
                result = ensure_peering(kube, name, missing) if missing else PeeringResult()
            finally:
                kube.close()
        except Exception as error:  # a background watch logs and goes on
            logger.warning("Creating KopfPeering %r in %s failed: %s", name, missing, error)
            continue
        if result.created:
            logger.info(
                "Created kopf peering object(s) in namespaces that appeared: %s",
                ", ".join(result.created),
            )
        for key in result.forbidden:
            logger.error("The KopfPeering %s may not be created (403); not retried.", key)
        forbidden = {key.split("/", 1)[0] for key in result.forbidden}
        watched = tuple(ns for ns in watched if ns not in forbidden)
        missing = result.missing_namespaces


def _peering_missing(
    kube: KubeClient,
    namespace: str,
    name: str,
    refused: dict[str, str],
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    interval: float,
) -> bool:
    """Whether the KopfPeering `name` is missing in `namespace` (a LIST by name).

    False when the LIST is refused (not retryable: 403, 404): logged when the refusal differs
    from the one in `refused` (per namespace, updated here), and checked again next time.

    Raises:
        TransientApiError: a retryable failure (the caller's round is tried again).
    """
    try:
        there = kube.exists(PEERING_API_VERSION, "KopfPeering", namespace, name)
    except TransientApiError:
        raise
    except ApiError as error:
        if refused.get(namespace) != str(error):
            refused[namespace] = str(error)
            logger.warning(
                "Cannot check the KopfPeering %s/%s (checked again every %g s): %s",
                namespace,
                name,
                interval,
                error,
            )
        return False
    refused.pop(namespace, None)
    return not there


def create_peering_objects(
    kube: KubeClient, name: str, namespaces: tuple[str, ...], logger: kopf.Logger
) -> PeeringResult:
    """`ensure_peering`, with its failures as kopf wants them from a startup handler.

    Returns:
        What `ensure_peering` did (its `no_namespace` entries are retried by
        `watch_missing_namespaces`).

    What `ensure_peering` could not create (forbidden, namespace missing, patterns) is logged
    as an error or warning and startup goes on.

    Raises:
        kopf.TemporaryError: the peering kind is not served (404) or a transient failure;
            kopf retries after `PEERING_BACKOFF_SECONDS`.
        kopf.PermanentError: any other failure.
    """
    kind = "KopfPeering" if namespaces else "ClusterKopfPeering"
    try:
        result = ensure_peering(kube, name, namespaces)
    except TransientApiError as error:
        raise kopf.TemporaryError(
            f"creating the {kind} {name!r} failed, retrying: {error}",
            delay=PEERING_BACKOFF_SECONDS,
        ) from None
    except ApiError as error:
        if error.status != 404:
            raise kopf.PermanentError(f"creating the {kind} {name!r} failed: {error}") from None
        raise kopf.TemporaryError(
            f"{PEERING_API_VERSION} {kind} is not served: install kopf's peering CRDs "
            "(the Helm chart does with peering.createCRDs=true) or run without --peering; "
            f"retrying: {error}",
            delay=PEERING_BACKOFF_SECONDS,
        ) from None
    if result.created:
        logger.info("Created kopf peering object(s): %s", ", ".join(result.created))
    for key in result.forbidden:
        logger.error(
            "The %s %s does not exist and creating it was forbidden (403: RBAC create on %s "
            "in kopf.dev, or an admission policy): kopf keeps the operator paused there until "
            "it exists.",
            kind,
            key,
            PLURALS[kind],
        )
    for namespace, key in zip(result.missing_namespaces, result.no_namespace, strict=True):
        logger.error(
            "Watched namespace %s does not exist (or is being deleted): its KopfPeering %s is "
            "created when the namespace appears (checked every %g s); until then kopf keeps it "
            "paused.",
            namespace,
            key,
            PEERING_RECHECK_SECONDS,
        )
    if result.patterns:
        logger.warning(
            "Watched namespace patterns %s: create the KopfPeering %r in each namespace they "
            "match; kopf keeps a namespace paused while it is missing.",
            ", ".join(result.patterns),
            name,
        )
    return result
