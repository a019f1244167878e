"""Operator settings: one frozen value built from CLI flags or `DSV4_OPERATOR_*` variables.

The settings travel in kopf's `memo` (never a module global), so tests can run several operators
with different settings in one process.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from dsv4_operator.render.autoscaler import DEFAULT_PROMETHEUS_URL

__all__ = [
    "DEFAULT_RUNTIME_IMAGE",
    "ENV_PREFIX",
    "POD_IP_ENV",
    "LogFormat",
    "OperatorSettings",
    "listen_host",
]

DEFAULT_RUNTIME_IMAGE: Final = "ghcr.io/dsv4/dsv4-runtime:0.1.0"
"""Worker image when `spec.engine.image` is unset: built from `runtime/Dockerfile` (vLLM 0.33.0 +
`dsv4-runtime` behind tini)."""

LogFormat = Literal["full", "plain", "json"]
"""Operator log formats (kopf's `LogFormat`): `full` (time, logger, level, message), `plain`
(message only), `json` (one object per line). Lines about a resource name it: `[ns/name]`
before the message in `full`/`plain`, an `object` key (apiVersion, kind, namespace, name, uid)
in `json`."""

ENV_PREFIX: Final = "DSV4_OPERATOR_"
"""Prefix of the environment variables read by `OperatorSettings.from_env`."""
POD_IP_ENV: Final = "POD_IP"
"""The operator pod's primary IP (the chart sets it from the downward API, `status.podIP`)."""


def listen_host(env: Mapping[str, str]) -> str:
    """Where the operator's health and metrics servers listen: `::` when the pod's IP is IPv6.

    On an IPv6-only or IPv6-primary cluster kubelet probes the pod's IPv6 address, which a
    server bound to `0.0.0.0` never answers (the chart's startup and liveness probes would
    restart the operator for ever). `0.0.0.0` otherwise, and without `POD_IP` (run by hand).
    """
    try:
        ip = ipaddress.ip_address(env.get(POD_IP_ENV, "").strip())
    except ValueError:
        return "0.0.0.0"  # noqa: S104  (a pod listens on all interfaces)
    return "::" if ip.version == 6 else "0.0.0.0"  # noqa: S104


class OperatorSettings(BaseModel):
    """How the operator runs. Every field can be set as `DSV4_OPERATOR_<NAME>` (upper case).

    Raises:
        pydantic.ValidationError: from the constructor when a value is out of range.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    runtime_image: str = Field(default=DEFAULT_RUNTIME_IMAGE, min_length=1)
    """Worker image used when `spec.engine.image` is unset."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty watches every namespace (cluster-wide)."""
    peering: str | None = None
    """kopf peering object name for HA (`KopfPeering`/`ClusterKopfPeering`); None = standalone."""
    priority: int = Field(default=0, ge=0, le=2**31 - 1)
    """kopf peering priority: the highest-priority operator runs, the others pause; give each
    replica a distinct one (kopf `docs/peering.rst`)."""
    resync_seconds: float = Field(default=60.0, gt=0, le=86_400)
    """Interval of the periodic resync (re-reads LWS status, repairs drifted children), s."""
    progress_seconds: float = Field(default=10.0, gt=0, le=86_400)
    """Interval of the faster resync while a rollout is in progress (Ready=False with reason
    ReplicasNotReady), so readiness shows up in status without waiting for the full resync;
    not used when it is not shorter than `resync_seconds`, s."""
    retry_delay_seconds: float = Field(default=10.0, gt=0, le=3600)
    """Delay before retrying after a transient API error (409, 429, 5xx), s."""
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    """Port of the operator's Prometheus `/metrics` (0: not served)."""
    liveness_port: int = Field(default=0, ge=0, le=65535)
    """Port of kopf's `/healthz` liveness endpoint (0: not served)."""
    workers: int = Field(default=16, ge=1, le=256)
    """Thread-pool size for the (synchronous) handlers."""
    prometheus_url: str = Field(default=DEFAULT_PROMETHEUS_URL, min_length=1)
    """Prometheus address the KEDA ScaledObjects query (`spec.autoscaling.mode: keda`), and where
    the native autoscaler runs `spec.autoscaling.wakeUpQuery`."""
    autoscale_seconds: float = Field(default=15.0, gt=0, le=3600)
    """Scrape-and-decide interval of the native autoscaler (`spec.autoscaling.mode: native`), s."""
    log_format: LogFormat = "full"
    """Log line format (`LogFormat`); every format names the resource a line is about."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """Build from `DSV4_OPERATOR_*` variables; unset ones keep their defaults.

        `DSV4_OPERATOR_NAMESPACES` is a comma-separated list.

        Raises:
            pydantic.ValidationError: a value does not parse or is out of range.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None or raw == "":
                continue
            if name == "namespaces":
                values[name] = tuple(n.strip() for n in raw.split(",") if n.strip())
            else:
                values[name] = raw
        return cls.model_validate(values)

    def to_env(self) -> dict[str, str]:
        """The `DSV4_OPERATOR_*` variables that `from_env` reads back into these settings."""
        out: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            out[ENV_PREFIX + name.upper()] = text
        return out
