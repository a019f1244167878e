"""Start the operator: register the handlers on a fresh registry and run kopf with our settings."""

from __future__ import annotations

import os

import kopf

from dsv4_operator.handlers.deployment import register_deployment_handlers
from dsv4_operator.handlers.lifecycle import (
    CRD_GAPS_KEY,
    STOP_ON_CRD_GAPS_KEY,
    crd_gaps_message,
    register_lifecycle_handlers,
)
from dsv4_operator.settings import OperatorSettings, listen_host

__all__ = ["build_registry", "configure_logging", "run"]


def build_registry(
    config: OperatorSettings, registry: kopf.OperatorRegistry | None = None
) -> kopf.OperatorRegistry:
    """Register every handler of the operator on `registry` (a new one when None)."""
    target = registry if registry is not None else kopf.OperatorRegistry()
    register_lifecycle_handlers(target, config)
    register_deployment_handlers(target, config)
    return target


def configure_logging(config: OperatorSettings, *, verbose: bool = False) -> None:
    """Install kopf's stderr log handler on the root logger in `config.log_format`.

    Lines kopf logs about a resource name it: `[namespace/name]` before the message (full and
    plain formats) or an `object` key with apiVersion, kind, namespace, name and uid (json).
    INFO level, DEBUG with `verbose`.
    """
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat[config.log_format.upper()],
        log_prefix=config.log_format != "json",  # json names it in "object"
        log_refkey="object",
    )


def run(config: OperatorSettings, *, verbose: bool = False) -> None:
    """Run the operator until it is signalled to stop (blocks).

    Watches `config.namespaces`, or every namespace when empty. With `config.peering` set, kopf
    peering is on (the highest-priority operator runs, others pause: HA with distinct
    priorities); otherwise the operator runs standalone. When the served CRD loses fields this
    operator's has (an older CRD applied over it), the operator stops and exits 1
    (`handlers.lifecycle`).

    Raises:
        SystemExit: with the CRD's gaps, after kopf stopped for them.
    """
    configure_logging(config, verbose=verbose)
    host = listen_host(os.environ)
    bound = f"[{host}]" if ":" in host else host
    liveness = f"http://{bound}:{config.liveness_port}/healthz" if config.liveness_port else None
    memo = kopf.Memo({STOP_ON_CRD_GAPS_KEY: True})  # the CRD watch may stop this process
    kopf.run(
        registry=build_registry(config),
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=config.peering is None,
        peering_name=config.peering,
        priority=config.priority,
        liveness_endpoint=liveness,
        memo=memo,
    )
    gaps = memo.get(CRD_GAPS_KEY)
    if gaps:
        raise SystemExit(f"dsv4 operator: {crd_gaps_message(gaps)}")
