"""The chart's values: pydantic model, generated values.schema.json, values.yaml, Chart.yaml.

Bad values must be refused by the schema that Helm 4 itself checks (`helm template` / `install`
exit non-zero naming the value), and by the pydantic model the schema comes from.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from tests.chart.chart_support import CHART_DIR, VALUES_DIR, helm, template, upstream_crd
from tests.support.cluster import REPO_ROOT

import dsv4_operator
from dsv4_operator import chart_values
from dsv4_operator.chart_values import ChartValues
from dsv4_operator.settings import DEFAULT_RUNTIME_IMAGE

GOOD_VALUES = sorted(VALUES_DIR.glob("*.yaml"))

BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("replicas-zero", {"replicas": 0}, "/replicas"),
    ("replicas-string", {"replicas": "two"}, "/replicas"),
    ("unknown-top-level-key", {"replica": 2}, "replica"),
    ("unknown-nested-key", {"metrics": {"serviceMonitor": {"enable": True}}}, "enable"),
    ("log-level", {"logLevel": "verbose"}, "/logLevel"),
    ("pull-policy", {"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ("namespace-name", {"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    ("root-user", {"podSecurityContext": {"runAsUser": 0}}, "/podSecurityContext/runAsUser"),
    (
        "run-as-root-allowed",
        {"podSecurityContext": {"runAsNonRoot": False}},
        "/podSecurityContext/runAsNonRoot",
    ),
    (
        "privilege-escalation",
        {"securityContext": {"allowPrivilegeEscalation": True}},
        "/securityContext/allowPrivilegeEscalation",
    ),
    ("metrics-port", {"metrics": {"port": 70000}}, "/metrics/port"),
    (
        "scrape-interval",
        {"metrics": {"serviceMonitor": {"interval": "soon"}}},
        "/metrics/serviceMonitor/interval",
    ),
    # The Prometheus-operator CRDs refuse these (units out of order, repeated): they rendered,
    # then the API server refused the ServiceMonitor / PodMonitor at install.
    (
        "scrape-interval-out-of-order",
        {"metrics": {"podMonitor": {"interval": "30s1m"}}},
        "/metrics/podMonitor/interval",
    ),
    (
        "scrape-interval-repeated-unit",
        {"metrics": {"serviceMonitor": {"interval": "1h1h"}}},
        "/metrics/serviceMonitor/interval",
    ),
    ("memory-quantity", {"resources": {"limits": {"memory": "lots"}}}, "/resources/limits"),
    ("digest", {"image": {"digest": "latest"}}, "/image/digest"),
    (
        "seccomp-unconfined",
        {"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}},
        "/podSecurityContext/seccompProfile/type",
    ),
    # Chart trial: each of these passed `helm lint` and `helm template`, then failed to install.
    (
        "seccomp-localhost-without-profile",
        {"podSecurityContext": {"seccompProfile": {"type": "Localhost"}}},
        "/podSecurityContext/seccompProfile",
    ),
    ("fullname-override", {"fullnameOverride": "Bad_Name"}, "/fullnameOverride"),
    ("name-override", {"nameOverride": "Bad_Name"}, "/nameOverride"),
    ("priority-class", {"priorityClassName": "Bad_PC"}, "/priorityClassName"),
    (
        "selector-pod-label",
        {"podLabels": {"app.kubernetes.io/name": "x"}},
        "invalid propertyName 'app.kubernetes.io/name'",
    ),
    # The selector has a third label: this one rendered, then the API server refused the
    # Deployment ("`selector` does not match template `labels`").
    (
        "selector-pod-label-component",
        {"podLabels": {"app.kubernetes.io/component": "x"}},
        "invalid propertyName 'app.kubernetes.io/component'",
    ),
    ("image-repository-with-tag", {"image": {"repository": "repo:1.2"}}, "/image/repository"),
    # ... or weakened Pod Security `restricted`, or rendered the same Role twice.
    ("capabilities-kept", {"securityContext": {"capabilities": {"drop": []}}}, "/drop"),
    ("duplicate-namespaces", {"watchNamespaces": ["a", "a"]}, "/watchNamespaces"),
    # A number Helm cannot hold exactly as a float would render as a different tag.
    ("numeric-tag-beyond-2^53", {"image": {"tag": 20250101123045123}}, "/image/tag"),
]


def test_schema_file_is_generated_from_the_model() -> None:
    committed = (REPO_ROOT / chart_values.SCHEMA_FILE).read_text(encoding="utf-8")
    assert committed == chart_values.render_schema(), (
        "values.schema.json is stale: run python -m dsv4_operator.chart_values"
    )


def test_check_mode_reports_a_stale_schema(tmp_path: Path) -> None:
    assert chart_values.main(["--root", str(tmp_path), "--check"]) == 1
    assert chart_values.main(["--root", str(tmp_path)]) == 0
    assert chart_values.main(["--root", str(tmp_path), "--check"]) == 0
    path = tmp_path / chart_values.SCHEMA_FILE
    path.write_text(path.read_text() + " ", encoding="utf-8")
    assert chart_values.main(["--root", str(tmp_path), "--check"]) == 1


def test_values_yaml_holds_exactly_the_model_defaults() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
    defaults = ChartValues().model_dump(by_alias=True, exclude_none=True)
    assert defaults == values


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text(encoding="utf-8"))
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert chart["appVersion"] == dsv4_operator.__version__ == project["project"]["version"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == CHART_DIR.name
    # The worker image the operator defaults to is the same release: a runtime of another
    # release may not take the arguments this operator renders.
    assert DEFAULT_RUNTIME_IMAGE.rpartition(":")[2] == dsv4_operator.__version__


@pytest.mark.parametrize("path", GOOD_VALUES, ids=lambda p: p.stem)
def test_example_values_files_are_valid(path: Path) -> None:
    ChartValues.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize(("case", "values", "where"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_values_are_refused_by_the_model(case: str, values: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError):
        ChartValues.model_validate(values)


@pytest.mark.parametrize(("case", "values", "where"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_values_are_refused_by_helm(
    case: str, values: dict[str, Any], where: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    proc = helm("template", "dsv4", str(CHART_DIR), "--values", str(path), check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert where in proc.stderr


def test_good_values_render_with_helm() -> None:
    assert template(sets=["replicas=3", "logLevel=debug"])
    # A registry port is not a tag; an all-digit tag given with --set is a number.
    rendered = template(sets=["image.repository=localhost:5000/op", "image.tag=20250101"])
    (deployment,) = [o for o in rendered if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "localhost:5000/op:20250101"


def test_an_all_digit_tag_from_a_values_file_renders_as_written(tmp_path: Path) -> None:
    """Diff review: a values file hands Helm numbers as float64, which toString printed as
    `2.0250101e+07`: the operator pod would sit in InvalidImageName."""
    values = tmp_path / "values.yaml"
    values.write_text("image:\n  tag: 20250101\n", encoding="utf-8")
    (deployment,) = [o for o in template(values_files=[values]) if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(":20250101")


def test_metrics_and_health_ports_must_differ() -> None:
    """Chart trial: `metrics.port=8081` (the health port) rendered duplicate containerPorts,
    refused only at install."""
    with pytest.raises(ValidationError, match="must differ from healthPort"):
        ChartValues.model_validate({"metrics": {"port": 8081}})
    proc = helm("template", "dsv4", str(CHART_DIR), "--set", "metrics.port=8081", check=False)
    assert proc.returncode != 0
    assert "metrics.port (8081) must differ from healthPort (8081)" in proc.stderr
    assert template(sets=["metrics.port=8081", "metrics.enabled=false"])


def test_schema_is_draft_2020_12_and_closed() -> None:
    schema = json.loads((REPO_ROOT / chart_values.SCHEMA_FILE).read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {
        field.alias or name for name, field in ChartValues.model_fields.items()
    }


def test_module_exports_every_public_name() -> None:
    public = {
        name
        for name, obj in vars(chart_values).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) == chart_values.__name__
    }
    assert public <= set(chart_values.__all__)
    assert all(hasattr(chart_values, name) for name in chart_values.__all__)


def test_pod_labels_may_not_set_any_label_the_deployment_selects_by() -> None:
    """Every selector label the chart renders is refused in podLabels (read from the rendered
    Deployment, so a label added to `selectorLabels` later is covered too)."""
    (deployment,) = [o for o in template() if o["kind"] == "Deployment"]
    selector = set(deployment["spec"]["selector"]["matchLabels"])
    assert selector == set(chart_values.SELECTOR_LABELS)
    for label in sorted(selector):
        with pytest.raises(ValidationError, match="selects its pods by it"):
            ChartValues.model_validate({"podLabels": {label: "x"}})


INTERVALS = ["30s", "1m30s", "2h", "1d", "1w2d", "1y2w3d4h5m6s7ms", "500ms", "30s1m", "1h1h"]
INTERVALS += ["", "15", "1.5s", "ms", "1M", "0"]


def _interval_patterns(node: Any) -> set[str]:
    """The `pattern` of every `interval` property in a CRD schema, at any depth."""
    found: set[str] = set()
    if isinstance(node, dict):
        interval = (node.get("properties") or {}).get("interval") or {}
        if isinstance(interval, dict) and "pattern" in interval:
            found.add(str(interval["pattern"]))
        for value in node.values():
            found |= _interval_patterns(value)
    elif isinstance(node, list):
        for item in node:
            found |= _interval_patterns(item)
    return found


@pytest.mark.parametrize("interval", INTERVALS)
def test_scrape_intervals_are_those_the_monitor_crds_accept(interval: str) -> None:
    """An interval the chart takes must pass the Prometheus-operator CRDs' own pattern (read
    from the upstream fixtures), so no accepted value fails at install; plain ones pass."""
    patterns = _interval_patterns(upstream_crd("monitoring.coreos.com_servicemonitors.yaml"))
    patterns |= _interval_patterns(upstream_crd("monitoring.coreos.com_podmonitors.yaml"))
    assert patterns, "no interval pattern found in the monitor CRDs"
    for section in ("serviceMonitor", "podMonitor"):
        values = {"metrics": {section: {"interval": interval}}}
        try:
            ChartValues.model_validate(values)
        except ValidationError:
            continue
        for pattern in patterns:
            assert re.search(pattern, interval), (section, interval, pattern)
    if interval in {"1m30s", "1d", "1y2w3d4h5m6s7ms"}:
        ChartValues.model_validate({"metrics": {"podMonitor": {"interval": interval}}})
