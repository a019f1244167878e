"""Values of the Helm chart `charts/dsv4-operator`, and the generated `values.schema.json`.

`ChartValues` is the source of truth of what the chart accepts: `values.yaml` holds exactly its
defaults (a test compares them), and `python -m dsv4_operator.chart_values` writes
`charts/dsv4-operator/values.schema.json` from it (JSON Schema 2020-12, which Helm 4 checks
before rendering: `helm install/upgrade/template/lint` refuse values that do not match). Unknown
keys are refused at every level that the chart itself interprets (`extra="forbid"` becomes
`additionalProperties: false`), so a typo such as `replica: 2` fails instead of being ignored.
Kubernetes objects passed through verbatim (affinity, tolerations, resources) are checked by the
API server, not here.

`python -m dsv4_operator.chart_values --check` exits 1 when the committed schema is stale.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

__all__ = [
    "CHART_DIR",
    "SCHEMA_FILE",
    "CapabilitiesValues",
    "ChartValues",
    "CrdValues",
    "DashboardValues",
    "ImageValues",
    "MetricsValues",
    "OperatorValues",
    "PeeringValues",
    "PodDisruptionBudgetValues",
    "PodMonitorValues",
    "PodSecurityContextValues",
    "RbacValues",
    "ResourcesValues",
    "SeccompProfileValues",
    "SecurityContextValues",
    "ServiceAccountValues",
    "ServiceMonitorValues",
    "main",
    "render_schema",
    "values_schema",
]

CHART_DIR: Final = Path("charts") / "dsv4-operator"
"""The chart's folder, relative to the repository root."""
SCHEMA_FILE: Final = CHART_DIR / "values.schema.json"
"""The generated schema, relative to the repository root."""

DNS_LABEL: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""RFC 1123 label (namespace and Service names; Kubernetes `IsDNS1123Label`)."""
DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""RFC 1123 subdomain (object names such as ServiceAccounts; `IsDNS1123Subdomain`)."""
QUANTITY: Final = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$"
"""A non-negative Kubernetes resource quantity (apimachinery `resource.Quantity`)."""
IMAGE_REPOSITORY: Final = r"^([^/@:]+(:[0-9]+)?/)?[^@:]+$"
"""An image reference without tag or digest: an optional `host[:port]/` then no `:` or `@`."""
SELECTOR_LABELS: Final = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
)
"""Pod labels the chart's Deployment selects by (`_helpers.tpl` selectorLabels): `podLabels`
may not set them (another value makes the API server refuse the Deployment: its selector would
not match its template's labels)."""
DURATION: Final = (
    r"^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$"
)
"""A Prometheus duration as the ServiceMonitor and PodMonitor CRDs accept it (`30s`, `1m30s`):
their `interval` pattern (prometheus-operator `Duration`) without its bare `0`, each unit at
most once and from the largest down; non-empty (`min_length`)."""

Namespace = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL)]
ObjectName = Annotated[str, StringConstraints(max_length=253, pattern=DNS_SUBDOMAIN)]
Quantity = Annotated[str, StringConstraints(pattern=QUANTITY)] | Annotated[int, Field(ge=0)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Values(BaseModel):
    """Base of every values section: unknown keys refused, attribute docstrings as schema text."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, populate_by_name=True
    )


def _quantities(**by_name: str | int) -> dict[str, str | int]:
    return dict(by_name)


class ImageValues(_Values):
    """The operator image (built by `operator/Dockerfile`; entrypoint `dsv4`)."""

    repository: Annotated[str, StringConstraints(min_length=1, pattern=IMAGE_REPOSITORY)] = (
        "ghcr.io/dsv4/dsv4-operator"
    )
    """Image repository, without a tag or digest (`image.tag`, `image.digest` set those); a
    registry port (`registry:5000/dsv4-operator`) is fine."""
    tag: str | Annotated[int, Field(ge=0, le=2**53 - 1)] = ""
    """Image tag; empty means the chart's appVersion (the dsv4 package version). Quote a tag
    that YAML reads as a number in a values file (`tag: "20250101"`, `tag: "1.0"`): leading
    zeros are lost, and Helm hands `1.0` to the chart as the number 1, indistinguishable from
    `1`, so it renders as `:1` (another image); unquoted integers up to 2^53 - 1 (exact in a
    float) render as written."""
    digest: Annotated[str, StringConstraints(pattern=r"^(sha256:[a-f0-9]{64})?$")] = ""
    """Image digest (`sha256:...`); when set it pins the image and the tag is ignored."""
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", alias="pullPolicy"
    )
    """Kubernetes imagePullPolicy."""


class ResourcesValues(_Values):
    """CPU and memory of the operator container (requests and limits by resource name)."""

    requests: dict[str, Quantity] = Field(
        default_factory=lambda: _quantities(cpu="100m", memory="256Mi")
    )
    """Requested resources, e.g. `{cpu: 100m, memory: 256Mi}`."""
    limits: dict[str, Quantity] = Field(default_factory=lambda: _quantities(memory="512Mi"))
    """Resource limits; no CPU limit by default (throttling slows reconciles for no gain)."""


class SeccompProfileValues(_Values):
    """The pod's seccomp profile."""

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"type": {"const": "Localhost"}}, "required": ["type"]},
            "then": {"required": ["localhostProfile"]},
        }
    )

    type: Literal["RuntimeDefault", "Localhost"] = "RuntimeDefault"
    """RuntimeDefault (the container runtime's profile) or Localhost; Unconfined is refused."""
    localhost_profile: str | None = Field(default=None, alias="localhostProfile")
    """Profile file on the node, required with type Localhost."""

    @model_validator(mode="after")
    def _localhost_has_a_profile(self) -> "SeccompProfileValues":
        if self.type == "Localhost" and not self.localhost_profile:
            msg = "localhostProfile is required with type Localhost"
            raise ValueError(msg)
        return self


class PodSecurityContextValues(_Values):
    """The pod security context: the operator never runs as root (Pod Security `restricted`)."""

    run_as_non_root: Literal[True] = Field(default=True, alias="runAsNonRoot")
    """Always true: the kubelet refuses to start the container as UID 0."""
    run_as_user: int = Field(default=65532, ge=1, alias="runAsUser")
    """UID of the process (65532, the image's `USER`); 0 is refused."""
    run_as_group: int = Field(default=65532, ge=1, alias="runAsGroup")
    """GID of the process; 0 is refused."""
    fs_group: int | None = Field(default=None, ge=1, alias="fsGroup")
    """Group owning mounted volumes (none are mounted by default)."""
    seccomp_profile: SeccompProfileValues = Field(
        default_factory=SeccompProfileValues, alias="seccompProfile"
    )
    """Seccomp profile of the pod."""


class CapabilitiesValues(_Values):
    """Linux capabilities of the container."""

    drop: list[str] = Field(
        default_factory=lambda: ["ALL"], json_schema_extra={"contains": {"const": "ALL"}}
    )
    """Capabilities dropped: must include `ALL` (Pod Security `restricted`)."""

    @field_validator("drop")
    @classmethod
    def _drops_all(cls, drop: list[str]) -> list[str]:
        if "ALL" not in drop:
            msg = "must include ALL (Pod Security restricted)"
            raise ValueError(msg)
        return drop


class SecurityContextValues(_Values):
    """The container security context (Pod Security `restricted` profile)."""

    allow_privilege_escalation: Literal[False] = Field(
        default=False, alias="allowPrivilegeEscalation"
    )
    """Always false."""
    read_only_root_filesystem: bool = Field(default=True, alias="readOnlyRootFilesystem")
    """The operator writes no files; /tmp is an emptyDir."""
    capabilities: CapabilitiesValues = Field(default_factory=CapabilitiesValues)
    """Capabilities dropped."""


class ServiceAccountValues(_Values):
    """The operator's ServiceAccount."""

    create: bool = True
    """Create the ServiceAccount; false uses an existing one named `name`."""
    name: ObjectName | Literal[""] = ""
    """ServiceAccount name; empty means the release's full name."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations, e.g. for cloud workload identity."""


class RbacValues(_Values):
    """Roles and bindings that grant the operator exactly what it uses."""

    create: bool = True
    """Create the (Cluster)Roles and bindings; false when an administrator grants them."""


class CrdValues(_Values):
    """The DeepSeekV4Deployment CRD on upgrades (Helm installs `crds/` only on first install)."""

    upgrade: bool = True
    """Apply `crds/` on `helm upgrade` through a pre-upgrade hook (server-side, never deleted;
    refused when the cluster's CRD has fields the chart's lacks, i.e. is newer); false leaves
    CRD upgrades to `kubectl apply --server-side --force-conflicts --field-manager=helm -f
    crds/` before each upgrade (README)."""


class PeeringValues(_Values):
    """kopf peering: with several replicas only the highest-priority one reconciles.

    kopf has no leader election: every operator announces itself in a KopfPeering
    (per namespace) or ClusterKopfPeering (cluster-wide) object; the one with the highest
    priority runs and the others pause. Each pod gets a priority derived from its own name, so
    replicas never tie (a tie pauses all of them: kopf `docs/peering.rst`).
    """

    name: ObjectName = "dsv4-operator"
    """Name of the peering object(s), which the operator creates at startup when missing."""
    create_crds: bool = Field(default=True, alias="createCRDs")
    """Install kopf's ClusterKopfPeering and KopfPeering CRDs in a pre-install/pre-upgrade hook
    (kept on uninstall). CRDs that exist already are left alone either way (`lookup`); false
    also skips the hook (clusters where the CRDs are managed elsewhere)."""


class PodDisruptionBudgetValues(_Values):
    """A PodDisruptionBudget for the operator pods when `replicas` is above 1."""

    enabled: bool = True
    """With more than one replica, keep all but one through voluntary disruptions (node
    drains): `maxUnavailable: 1`, so a drain never takes every hot standby at once. Never with
    one replica, whose drain it would block."""


class ServiceMonitorValues(_Values):
    """A Prometheus-operator ServiceMonitor for the metrics Service."""

    enabled: bool = False
    """Create it; rendered only when the cluster serves `monitoring.coreos.com/v1`."""
    interval: Annotated[str, StringConstraints(min_length=1, pattern=DURATION)] = "30s"
    """Scrape interval."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels, e.g. the `release` label a Prometheus selects ServiceMonitors by."""


class PodMonitorValues(_Values):
    """A Prometheus-operator PodMonitor for the replica leaders' metrics (vLLM's `vllm:*`)."""

    enabled: bool = False
    """Create it; rendered only when the cluster serves `monitoring.coreos.com/v1`. The KEDA and
    HPA autoscaling modes and the dashboard read these series from Prometheus: enable it (or
    scrape the leaders' `admin` port some other way) when you use them."""
    interval: Annotated[str, StringConstraints(min_length=1, pattern=DURATION)] = "15s"
    """Scrape interval (KEDA's queries take a 2-minute rate)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels, e.g. the `release` label a Prometheus selects PodMonitors by."""


class MetricsValues(_Values):
    """The operator's Prometheus metrics (reconciles, latency, managed deployments, GPUs)."""

    enabled: bool = True
    """Serve metrics and create the metrics Service."""
    port: Port = 8080
    """Container and Service port of `/metrics`."""
    service_monitor: ServiceMonitorValues = Field(
        default_factory=ServiceMonitorValues, alias="serviceMonitor"
    )
    """Optional ServiceMonitor."""
    pod_monitor: PodMonitorValues = Field(default_factory=PodMonitorValues, alias="podMonitor")
    """Optional PodMonitor for the worker pods' leaders (the operator's own ServiceMonitor does
    not cover them)."""


class OperatorValues(_Values):
    """Operator settings: `dsv4 operator run` flags, passed as `DSV4_OPERATOR_*` variables.

    Unset (null or "") keeps the operator's default (`dsv4_operator.settings.OperatorSettings`).
    """

    runtime_image: str = Field(default="", alias="runtimeImage")
    """Worker image for DeepSeekV4Deployments that set no `spec.engine.image`."""
    prometheus_url: str = Field(default="", alias="prometheusUrl")
    """Prometheus address KEDA's ScaledObjects query (`spec.autoscaling.mode: keda`), e.g.
    `http://prometheus-operated.monitoring:9090`."""
    resync_seconds: float | None = Field(default=None, gt=0, le=86_400, alias="resyncSeconds")
    """Periodic resync interval, s (operator default 60)."""
    progress_seconds: float | None = Field(default=None, gt=0, le=86_400, alias="progressSeconds")
    """Faster resync while a rollout is in progress, s (operator default 10)."""
    autoscale_seconds: float | None = Field(default=None, gt=0, le=3600, alias="autoscaleSeconds")
    """Scrape-and-decide interval of the native autoscaler, s (operator default 15)."""
    log_format: Literal["", "full", "plain", "json"] = Field(default="", alias="logFormat")
    """Log format: `full` (the default), `plain` or `json` (one object per line, with an
    `object` key naming the resource)."""


class DashboardValues(_Values):
    """The Grafana dashboard (ConfigMap picked up by Grafana's dashboard sidecar)."""

    enabled: bool = False
    """Create the dashboard ConfigMap."""
    namespace: Namespace | Literal[""] = ""
    """Namespace of the ConfigMap (where Grafana's sidecar looks); empty means the release's."""
    labels: dict[str, str] = Field(default_factory=lambda: {"grafana_dashboard": "1"})
    """Labels the sidecar selects dashboards by."""


class ChartValues(_Values):
    """Every value the `dsv4-operator` chart reads (`values.yaml` holds the defaults)."""

    name_override: (
        Annotated[str, StringConstraints(max_length=63, pattern=DNS_LABEL)] | Literal[""]
    ) = Field(default="", alias="nameOverride")
    """Replaces the chart name in object names (an RFC 1123 label)."""
    full_name_override: (
        Annotated[str, StringConstraints(max_length=63, pattern=DNS_LABEL)] | Literal[""]
    ) = Field(default="", alias="fullnameOverride")
    """Replaces the whole `<release>-<chart>` object name prefix (an RFC 1123 label)."""
    image: ImageValues = Field(default_factory=ImageValues)
    """The operator image."""
    image_pull_secrets: list[dict[str, str]] = Field(default_factory=list, alias="imagePullSecrets")
    """Pull secrets, e.g. `[{name: regcred}]`."""
    replicas: int = Field(default=1, ge=1, le=5)
    """Operator pods; more than one gives hot standbys through kopf peering (one reconciles)."""
    watch_namespaces: list[Namespace] = Field(
        default_factory=list, alias="watchNamespaces", json_schema_extra={"uniqueItems": True}
    )
    """Namespaces to watch; empty means all (cluster-wide RBAC). With a list, the namespaced
    permissions are Roles in those namespaces only."""
    log_level: Literal["info", "debug"] = Field(default="info", alias="logLevel")
    """Operator log level: info, or debug (`dsv4 operator run --verbose`)."""
    health_port: Port = Field(default=8081, alias="healthPort")
    """Port of kopf's liveness endpoint `/healthz`."""
    peering: PeeringValues = Field(default_factory=PeeringValues)
    """kopf peering (several replicas)."""
    crds: CrdValues = Field(default_factory=CrdValues)
    """CRD upgrades."""
    resources: ResourcesValues = Field(default_factory=ResourcesValues)
    """Container resources."""
    pod_security_context: PodSecurityContextValues = Field(
        default_factory=PodSecurityContextValues, alias="podSecurityContext"
    )
    """Pod security context (non-root)."""
    security_context: SecurityContextValues = Field(
        default_factory=SecurityContextValues, alias="securityContext"
    )
    """Container security context."""
    service_account: ServiceAccountValues = Field(
        default_factory=ServiceAccountValues, alias="serviceAccount"
    )
    """The operator's ServiceAccount."""
    rbac: RbacValues = Field(default_factory=RbacValues)
    """RBAC objects."""
    metrics: MetricsValues = Field(default_factory=MetricsValues)
    """Metrics Service and ServiceMonitor."""
    dashboard: DashboardValues = Field(default_factory=DashboardValues)
    """Grafana dashboard."""
    operator: OperatorValues = Field(default_factory=OperatorValues)
    """Operator settings (worker image, Prometheus URL for KEDA, intervals)."""
    pod_annotations: dict[str, str] = Field(default_factory=dict, alias="podAnnotations")
    """Extra pod annotations."""
    pod_labels: dict[str, str] = Field(
        default_factory=dict,
        alias="podLabels",
        json_schema_extra={"propertyNames": {"not": {"enum": list(SELECTOR_LABELS)}}},
    )
    """Extra pod labels (not the Deployment's selector labels, `SELECTOR_LABELS`)."""
    priority_class_name: ObjectName | Literal[""] = Field(default="", alias="priorityClassName")
    """PriorityClass of the operator pods."""
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    """Node selector of the operator pods."""
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    """Tolerations of the operator pods (Kubernetes Toleration objects)."""
    affinity: dict[str, Any] = Field(default_factory=dict)
    """Affinity of the operator pods (a Kubernetes Affinity object). Empty, with more than one
    replica: a preferred pod anti-affinity on `kubernetes.io/hostname`, so standbys land on
    other nodes where they can (it never keeps a pod Pending)."""
    pod_disruption_budget: PodDisruptionBudgetValues = Field(
        default_factory=PodDisruptionBudgetValues, alias="podDisruptionBudget"
    )
    """PodDisruptionBudget of the operator pods (with more than one replica)."""
    global_: dict[str, Any] = Field(default_factory=dict, alias="global")
    """Helm's global values (present when the chart is a subchart); not read."""

    @field_validator("watch_namespaces")
    @classmethod
    def _unique_namespaces(cls, namespaces: list[str]) -> list[str]:
        if len(set(namespaces)) != len(namespaces):
            msg = "namespaces must be unique"
            raise ValueError(msg)
        return namespaces

    @field_validator("pod_labels")
    @classmethod
    def _no_selector_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        taken = sorted(set(labels) & set(SELECTOR_LABELS))
        if taken:
            msg = f"{', '.join(taken)}: the Deployment selects its pods by it"
            raise ValueError(msg)
        return labels

    @model_validator(mode="after")
    def _distinct_ports(self) -> "ChartValues":
        # Checked by the Deployment template too (`fail`): JSON schema cannot compare values.
        if self.metrics.enabled and self.metrics.port == self.health_port:
            msg = f"metrics.port ({self.metrics.port}) must differ from healthPort"
            raise ValueError(msg)
        return self


def values_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of `ChartValues` by alias, as Helm reads it.

    Returns:
        The schema dict with `$schema` and `$id`-free `$defs` references (Helm resolves local
        `#/$defs/...` references).
    """
    schema = ChartValues.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def render_schema() -> str:
    """The exact text of `values.schema.json`: indented JSON, sorted keys, final newline."""
    return json.dumps(values_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: write `values.schema.json`, or with `--check` exit 1 when it is stale.

    Args:
        argv: arguments without the program name (default `sys.argv[1:]`).

    Returns:
        The exit status: 0 written or up to date, 1 stale (with `--check`).
    """
    parser = argparse.ArgumentParser(
        prog="python -m dsv4_operator.chart_values", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root")
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    path: Path = args.root / SCHEMA_FILE
    text = render_schema()
    if args.check:
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            sys.stderr.write(f"stale: {path} (run python -m dsv4_operator.chart_values)\n")
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
