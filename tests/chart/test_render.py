"""`helm lint --strict` and `helm template` of the chart with the real helm 4 binary.

Every rendered object, with the default values and with each file in tests/chart/values/, is
validated against the official Kubernetes schemas (kubernetes-validate, its newest version,
strict: unknown fields are errors); the custom kinds against their CRDs (the upstream
ServiceMonitor CRD fixture, kopf's peering CRDs as the chart ships them).
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version
from tests.chart.chart_support import (
    CHART_DIR,
    CRD_FILE,
    VALUES_DIR,
    Json,
    by_kind,
    helm,
    load_crd_file,
    one,
    template,
    upstream_crd,
)
from typer.testing import CliRunner

from dsv4_operator.cli import app
from dsv4_operator.handlers import lifecycle
from dsv4_operator.settings import ENV_PREFIX, OperatorSettings

SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"
POD_MONITOR_API = "monitoring.coreos.com/v1/PodMonitor"
MONITORING = [SERVICE_MONITOR_API, POD_MONITOR_API]
CASES: list[tuple[str, list[Path], list[str]]] = [
    ("defaults", [], []),
    ("defaults-with-prometheus-operator", [], MONITORING),
    *((p.stem, [p], MONITORING) for p in sorted(VALUES_DIR.glob("*.yaml"))),
]
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "ClusterKopfPeering", "KopfPeering"}


def _draft4(node: Mapping[str, Any]) -> Json:
    """A structural CRD schema as JSON Schema Draft 4, unknown fields refused (kubectl strict)."""
    out: Json = {k: v for k, v in node.items() if not k.startswith("x-kubernetes")}
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable"):
        out["type"] = [out.get("type"), "null"]
        out.pop("nullable")
    if "properties" in node:
        out["properties"] = {k: _draft4(v) for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            out[key] = _draft4(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            out[key] = [_draft4(v) for v in node[key]]
    return out


def _crd_validator(crd: Mapping[str, Any]) -> jsonschema.Draft4Validator:
    schema = dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    props = dict(schema.get("properties", {}))
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props.setdefault("metadata", {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    schema["properties"] = props
    return jsonschema.Draft4Validator(_draft4(schema))


_VALID: set[str] = set()
"""Objects (as sorted JSON) already found valid: the CRD alone takes ~0.4 s to validate."""


def _validate_builtin(obj: Json) -> None:
    key = json.dumps(obj, sort_keys=True)
    if key not in _VALID:
        kubernetes_validate.validate(obj, latest_version(), strict=True)
        _VALID.add(key)


@pytest.fixture(scope="module")
def custom_validators() -> dict[str, jsonschema.Draft4Validator]:
    peering_crds = by_kind(template(), "CustomResourceDefinition")
    crds = [
        upstream_crd("monitoring.coreos.com_servicemonitors.yaml"),
        upstream_crd("monitoring.coreos.com_podmonitors.yaml"),
        *peering_crds,
    ]
    return {crd["spec"]["names"]["kind"]: _crd_validator(crd) for crd in crds}


def test_helm_lint_strict() -> None:
    proc = helm("lint", "--strict", str(CHART_DIR))
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout
    assert "[ERROR]" not in proc.stdout


@pytest.mark.parametrize("values", sorted(VALUES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_helm_lint_strict_with_values(values: Path) -> None:
    helm("lint", "--strict", str(CHART_DIR), "--values", str(values))


@pytest.mark.parametrize(("case", "files", "apis"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("upgrade", [False, True], ids=["install", "upgrade"])
def test_every_rendered_object_is_valid(
    case: str,
    files: list[Path],
    apis: list[str],
    upgrade: bool,
    custom_validators: dict[str, jsonschema.Draft4Validator],
) -> None:
    objects = template(values_files=files, api_versions=apis, is_upgrade=upgrade, include_crds=True)
    assert objects
    for obj in objects:
        what = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in CUSTOM_KINDS:
            errors = [e.message for e in custom_validators[obj["kind"]].iter_errors(obj)]
            assert errors == [], what
        else:
            _validate_builtin(obj)
        for key, value in obj["metadata"].get("labels", {}).items():
            assert len(value) <= 63, f"{what}: label {key}={value!r}"


def test_defaults_render_the_expected_objects() -> None:
    objects = template()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
        ]
    )
    # crds/ holds the generated CRD; on install Helm applies it, on upgrade a hook does.
    crd_names = {
        c["metadata"]["name"]
        for c in by_kind(template(include_crds=True), "CustomResourceDefinition")
    }
    assert load_crd_file()["metadata"]["name"] in crd_names


def test_deployment_runs_the_operator_non_root_with_our_settings() -> None:
    deployment = one(template(namespace="ops", release="r1"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/dsv4/dsv4-operator:0.1.0"
    assert container["command"][:2] == ["/bin/sh", "-c"]
    assert 'exec dsv4 operator run "$@"' in container["command"][2]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["DSV4_OPERATOR_NAMESPACES"] == ""
    assert env["DSV4_OPERATOR_PEERING"] == "dsv4-operator"
    assert env["DSV4_OPERATOR_METRICS_PORT"] == "8080"
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}  # IPv6: listen on ::
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["serviceAccountName"] == "r1-dsv4-operator"
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    # kopf serves /healthz only after its startup handlers, one of which may retry creating
    # the peering objects: the startup probe waits longer than those retries.
    startup = container["startupProbe"]
    assert startup["httpGet"] == container["livenessProbe"]["httpGet"]
    retries = lifecycle.PEERING_RETRIES * lifecycle.PEERING_BACKOFF_SECONDS
    assert startup["periodSeconds"] * startup["failureThreshold"] > retries + 10


def test_operator_settings_reach_the_operator_and_defaults_stay_unset(tmp_path: Path) -> None:
    values = tmp_path / "operator.yaml"
    values.write_text(
        "operator:\n"
        "  runtimeImage: registry.example/dsv4-runtime:0.2.0\n"
        "  prometheusUrl: http://prometheus-operated.monitoring:9090\n"
        "  resyncSeconds: 30\n"
        "  progressSeconds: 2.5\n"
        "  autoscaleSeconds: 20\n"
    )
    (container,) = one(template(values_files=[values]), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = OperatorSettings.from_env(env)  # what the pod's `dsv4 operator run` reads
    assert settings.runtime_image == "registry.example/dsv4-runtime:0.2.0"
    assert settings.prometheus_url == "http://prometheus-operated.monitoring:9090"
    assert (settings.resync_seconds, settings.progress_seconds) == (30.0, 2.5)
    assert settings.autoscale_seconds == 20.0
    (default,) = one(template(), "Deployment")["spec"]["template"]["spec"]["containers"]
    names = {e["name"] for e in default["env"]}
    assert not names & {f"{ENV_PREFIX}RUNTIME_IMAGE", f"{ENV_PREFIX}PROMETHEUS_URL"}
    assert (
        OperatorSettings.from_env(
            {e["name"]: e["value"] for e in default["env"] if "value" in e}
        ).resync_seconds
        == OperatorSettings().resync_seconds
    )


def test_namespaced_mode_grants_namespaced_rights_only_in_watched_namespaces() -> None:
    objects = template(values_files=[VALUES_DIR / "namespaced-ha.yaml"], namespace="ops")
    cluster_rules = one(objects, "ClusterRole")["rules"]
    cluster_resources = {r for rule in cluster_rules for r in rule["resources"]}
    assert cluster_resources == {"customresourcedefinitions", "namespaces"}
    roles = by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = by_kind(objects, "RoleBinding")
    assert all(b["subjects"][0]["namespace"] == "ops" for b in bindings)
    # The operator creates its KopfPeering in each watched namespace; the Roles let it.
    assert by_kind(objects, "KopfPeering") == []
    assert by_kind(objects, "ClusterKopfPeering") == []
    for role in roles:
        (peering,) = [r for r in role["rules"] if r["resources"] == ["kopfpeerings"]]
        assert "create" in peering["verbs"]
    env = {
        e["name"]: e.get("value")
        for e in one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["DSV4_OPERATOR_NAMESPACES"] == "team-a,team-b"


def test_service_monitor_only_when_the_api_is_served() -> None:
    values = [VALUES_DIR / "namespaced-ha.yaml"]
    assert by_kind(template(values_files=values), "ServiceMonitor") == []
    monitor = one(
        template(values_files=values, api_versions=[SERVICE_MONITOR_API]), "ServiceMonitor"
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_engine_pod_monitor_selects_the_leaders_the_operator_renders() -> None:
    # The KEDA/HPA queries and the dashboard read vllm:* series of the leaders; the PodMonitor
    # must select exactly the leader pod template's labels and its admin port.
    from dsv4_operator.api import parse_spec
    from dsv4_operator.planning import plan
    from dsv4_operator.planning.from_spec import request_from_spec
    from dsv4_operator.render import Owner, leaderworkerset

    values = [VALUES_DIR / "namespaced-ha.yaml"]
    assert by_kind(template(values_files=values), "PodMonitor") == []
    monitor = one(template(values_files=values, api_versions=MONITORING), "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    spec = parse_spec({"model": "flash", "gpu": {"types": ["h200-141gb"], "maxNodes": 2}})
    lws = leaderworkerset(Owner("d", "team-a", "u"), spec, plan(request_from_spec(spec)), image="i")
    group = lws["spec"]["leaderWorkerTemplate"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    leader_labels = group["leaderTemplate"]["metadata"]["labels"]
    assert selector.items() <= leader_labels.items()
    assert not selector.items() <= group["workerTemplate"]["metadata"]["labels"].items()
    ports = {p["name"] for p in group["leaderTemplate"]["spec"]["containers"][0]["ports"]}
    assert endpoint["port"] in ports
    # `deployment` for the HPA's adapter rules, from the pod label that holds the name.
    (relabel,) = endpoint["relabelings"]
    assert relabel["targetLabel"] == "deployment"
    (source,) = relabel["sourceLabels"]
    pod_label = source.removeprefix("__meta_kubernetes_pod_label_")
    matching = [k for k in leader_labels if k.replace(".", "_").replace("/", "_") == pod_label]
    assert [leader_labels[k] for k in matching] == ["d"]
    assert endpoint["path"] == "/metrics"
    enabled = ["metrics.podMonitor.enabled=true"]
    cluster_wide = one(template(api_versions=MONITORING, sets=enabled), "PodMonitor")
    assert cluster_wide["spec"]["namespaceSelector"] == {"any": True}


def test_dashboard_configmap_holds_the_dashboard_json() -> None:
    objects = template(values_files=[VALUES_DIR / "namespaced-ha.yaml"])
    (config_map,) = [
        c for c in by_kind(objects, "ConfigMap") if "dashboard" in c["metadata"]["name"]
    ]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = (CHART_DIR / "dashboards" / "dsv4-overview.json").read_text(encoding="utf-8")
    assert config_map["data"]["dsv4-overview.json"] == shipped.rstrip("\n")


def test_upgrade_renders_the_crd_as_a_pre_upgrade_hook() -> None:
    install = template()
    upgrade = template(is_upgrade=True)
    name = load_crd_file()["metadata"]["name"]
    assert name not in {c["metadata"]["name"] for c in by_kind(install, "CustomResourceDefinition")}
    (hook,) = [
        c for c in by_kind(upgrade, "CustomResourceDefinition") if c["metadata"]["name"] == name
    ]
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-upgrade"
    assert "helm.sh/hook-delete-policy" not in hook["metadata"]["annotations"]
    generated = load_crd_file()
    assert hook["spec"] == generated["spec"]
    off = template(is_upgrade=True, sets=["crds.upgrade=false"])
    assert name not in {c["metadata"]["name"] for c in by_kind(off, "CustomResourceDefinition")}
    assert CRD_FILE.is_file()


def test_bring_your_own_renders_no_rbac_no_service_account() -> None:
    objects = template(values_files=[VALUES_DIR / "bring-your-own.yaml"])
    kinds = {o["kind"] for o in objects}
    assert kinds == {"Deployment"}
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "dsv4-operator-admin-managed"


def test_digest_pins_the_image() -> None:
    deployment = one(template(values_files=[VALUES_DIR / "pinned.yaml"]), "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == (
        "registry.example.com/ml/dsv4-operator@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert deployment["metadata"]["name"] == "dsv4"


def test_names_fit_their_limits_with_the_longest_release_name() -> None:
    release = "r" * 53  # Helm's limit on release names
    objects = template(
        release=release,
        values_files=[VALUES_DIR / "namespaced-ha.yaml"],
        api_versions=[SERVICE_MONITOR_API],
    )
    for obj in objects:
        limit = 63 if obj["kind"] == "Service" else 253
        assert len(obj["metadata"]["name"]) <= limit, obj["kind"]
        for value in obj["metadata"].get("labels", {}).values():
            assert len(value) <= 63
    assert one(objects, "Service")["metadata"]["name"].endswith("-metrics")


def test_container_command_starts_dsv4_operator_run_with_distinct_priorities(
    tmp_path: Path,
) -> None:
    # A stand-in `dsv4` on PATH prints what the real one would receive.
    fake = tmp_path / "dsv4"
    fake.write_text('#!/bin/sh\necho "$DSV4_OPERATOR_PRIORITY $*"\n', encoding="utf-8")
    fake.chmod(0o755)
    deployment = one(template(sets=["replicas=3", "logLevel=debug"]), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    argv = [*container["command"], *container["args"]]
    priorities = set()
    for pod in ("dsv4-dsv4-operator-5f7c9d-abcde", "dsv4-dsv4-operator-5f7c9d-fghij"):
        env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "HOSTNAME": pod}
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
        priority, rest = out.split(" ", 1)
        assert rest.strip() == "operator run --verbose"
        assert 1 <= int(priority) <= 2**31 - 1
        priorities.add(int(priority))
    assert len(priorities) == 2


def test_container_env_is_what_the_operator_settings_read() -> None:
    objects = template(sets=["watchNamespaces[0]=a", "watchNamespaces[1]=b", "metrics.port=9100"])
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    ours = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    names = {k.removeprefix(ENV_PREFIX).lower() for k in ours}
    assert names <= set(OperatorSettings.model_fields)
    settings = OperatorSettings.from_env(ours)
    assert settings.namespaces == ("a", "b")
    assert settings.peering == "dsv4-operator"
    assert settings.metrics_port == 9100
    assert settings.liveness_port == 8081
    assert container["ports"][0]["containerPort"] == settings.metrics_port
    disabled = _env(template(sets=["metrics.enabled=false"]))
    assert OperatorSettings.from_env(disabled).metrics_port == 0


def _env(objects: list[Json]) -> dict[str, str]:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {
        e["name"]: e["value"]
        for e in container["env"]
        if "value" in e and e["name"].startswith(ENV_PREFIX)
    }


def test_operator_cli_takes_the_flags_the_chart_passes() -> None:
    result = CliRunner().invoke(app, ["operator", "run", "--help"])
    assert result.exit_code == 0
    assert "--verbose" in result.output


def test_packaged_chart_holds_crds_dashboard_and_schema(tmp_path: Path) -> None:
    helm("package", str(CHART_DIR), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("dsv4-operator-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    for part in ("crds/" + CRD_FILE.name, "dashboards/dsv4-overview.json", "values.schema.json"):
        assert f"dsv4-operator/{part}" in names


def _notes(*sets: str) -> str:
    """The NOTES helm prints for an install with `sets` (client-side dry run: no cluster, so no
    monitoring.coreos.com/v1 kinds are served)."""
    args = ["install", "dsv4", str(CHART_DIR), "--dry-run=client", "-n", "dsv4-system"]
    for item in sets:
        args += ["--set", item]
    out: str = helm(*args).stdout
    return out.partition("NOTES:")[2]


def test_notes_warn_of_an_unserved_pod_monitor_with_or_without_the_operator_metrics() -> None:
    """The PodMonitor scrapes the engines, not the operator: NOTES must say it was not created
    (the keda/hpa modes and the dashboard then read no vLLM metrics) also when the operator's
    own metrics are off; the warning sat inside the metrics.enabled block."""
    for metrics in ("true", "false"):
        notes = _notes(f"metrics.enabled={metrics}", "metrics.podMonitor.enabled=true")
        assert "does not serve monitoring.coreos.com/v1\n   PodMonitor: none was created" in (
            notes
        ), metrics
    assert "PodMonitor" not in _notes("metrics.enabled=false")


def test_standbys_spread_over_nodes_and_a_drain_keeps_one() -> None:
    """Several replicas are hot standbys (kopf peering): on one node, or evicted together by a
    node drain, they fail over to nothing. With replicas above 1 the chart prefers other nodes
    and adds a PodDisruptionBudget; with one replica neither (a PDB would block the drain)."""
    single = template()
    assert by_kind(single, "PodDisruptionBudget") == []
    assert "affinity" not in one(single, "Deployment")["spec"]["template"]["spec"]

    objects = template(sets=["replicas=3"])
    deployment = one(objects, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    (term,) = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    assert pdb["metadata"]["namespace"] == "dsv4-system"

    # A user's affinity replaces the default; the budget can be turned off.
    mine = template(
        sets=[
            "replicas=2",
            "podDisruptionBudget.enabled=false",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0].key=pool",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        ]
    )
    assert by_kind(mine, "PodDisruptionBudget") == []
    affinity = one(mine, "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert list(affinity) == ["nodeAffinity"]


def test_notes_deploy_into_a_watched_namespace_and_say_what_an_unwatched_one_shows() -> None:
    """h38 (README walk-through): NOTES said `kubectl apply -n <namespace>` also for a namespaced
    install; a resource applied to a namespace the operator does not watch gets no status, no
    conditions and no Events at all (an empty STATUS column), with nothing saying why."""
    scoped = _notes("watchNamespaces={team-a,team-b}")
    assert "kubectl apply -n team-a -f examples/flash-4x-h100.yaml" in scoped
    assert "kubectl get dsv4 -n team-a -w" in scoped
    assert "<namespace>" not in scoped
    assert "only team-a, team-b" in scoped
    for notes in (scoped, _notes()):
        assert "empty STATUS" in notes
    cluster_wide = _notes()
    assert "kubectl apply -n <namespace> -f examples/flash-4x-h100.yaml" in cluster_wide
