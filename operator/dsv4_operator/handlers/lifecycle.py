"""Operator lifecycle: login, startup (settings, clients in memo, discovery), cleanup."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from dsv4_operator.handlers.autoscaler import Autoscaler, AutoscalerMetrics
from dsv4_operator.handlers.reconciler import Reconciler
from dsv4_operator.kube import ApiError, KubeClient, build_api_client
from dsv4_operator.metrics import OperatorMetrics
from dsv4_operator.render import FIELD_MANAGER, LWS_API_VERSION
from dsv4_operator.settings import OperatorSettings

__all__ = ["register_lifecycle_handlers"]


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
        # Our status keys stay apart from kopf's: kopf keeps progress in its annotations only.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
        settings.execution.max_workers = config.workers
        settings.posting.level = logging.INFO
        metrics = OperatorMetrics()
        if config.metrics_port:
            metrics.serve(config.metrics_port)

        def count(verb: str, kind: str) -> None:
            metrics.api_writes.labels(verb=verb, kind=kind).inc()

        kube = KubeClient(build_api_client(), FIELD_MANAGER, on_write=count)
        reconciler = Reconciler(
            kube,
            metrics,
            config.runtime_image,
            retry_delay_seconds=config.retry_delay_seconds,
            prometheus_url=config.prometheus_url,
        )
        memo.reconciler = reconciler
        memo.autoscaler = Autoscaler(kube, AutoscalerMetrics(metrics.registry))
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

    @kopf.on.cleanup(registry=registry)
    def cleanup(memo: kopf.Memo, **_: Any) -> None:
        reconciler: Reconciler | None = memo.get("reconciler")
        if reconciler is not None:
            reconciler.kube.close()
