"""The Grafana dashboard: every metric in every PromQL expression exists, every topic is shown.

Metric names are checked against vLLM 0.33.0's own list (`$DSV4_FIXTURES/vllm/
vllm-0.33.0-metric-names.txt`; counters are exposed with `_total`, histograms as `_bucket`,
`_sum`, `_count`) and against the `dsv4_*` metrics that the operator and runtime define with
prometheus-client (found in their source, with the samples each type exposes).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from tests.chart.chart_support import CHART_DIR
from tests.support.cluster import REPO_ROOT, fixtures_dir

DASHBOARD = CHART_DIR / "dashboards" / "dsv4-overview.json"
SOURCES = [REPO_ROOT / "operator" / "dsv4_operator", REPO_ROOT / "runtime" / "dsv4_runtime"]

_DEFINITION = re.compile(r"\b(Counter|Gauge|Histogram|Summary|Info)\(\s*\"(dsv4_[a-z0-9_]+)\"")
_SAMPLE_SUFFIXES = {
    "Counter": ("_total",),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count"),
    "Summary": ("_sum", "_count"),
    "Info": ("_info",),
}
_VLLM_SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")
_PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "group_left",
    "group_right",
}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """Metric names used by a PromQL expression (functions, labels, keywords removed).

    Label matchers `{...}`, range/subquery brackets `[...]`, grouping clauses `by (...)` etc.,
    string literals and Grafana variables (`$x`, `${x}`, `$__rate_interval`) are dropped first;
    what remains that is not followed by `(` and is not a keyword or number is a metric name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    return {m for m in _IDENTIFIER.findall(text) if m.lower() not in _PROMQL_KEYWORDS}


def our_samples() -> dict[str, str]:
    """Exposed sample name -> defining metric, for every `dsv4_*` metric in our source."""
    found: dict[str, str] = {}
    for root in SOURCES:
        for path in sorted(root.rglob("*.py")):
            for kind, name in _DEFINITION.findall(path.read_text(encoding="utf-8")):
                base = name.removesuffix("_total") if kind == "Counter" else name
                for suffix in _SAMPLE_SUFFIXES[kind]:
                    found[base + suffix] = f"{kind} {name} ({path.relative_to(REPO_ROOT)})"
    return found


def vllm_names() -> set[str]:
    """vLLM 0.33.0's metric names (skips, naming the file, when the fixture is absent)."""
    path = fixtures_dir() / "vllm" / "vllm-0.33.0-metric-names.txt"
    if not path.is_file():
        pytest.skip(f"fixture missing: {path}")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def is_vllm_sample(name: str, names: set[str]) -> bool:
    """True when `name` is a vLLM metric, or one with a counter/histogram sample suffix."""
    return any(name.endswith(s) and name.removesuffix(s) in names for s in _VLLM_SUFFIXES if s) or (
        name in names
    )


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def test_extractor_finds_names_and_ignores_functions_labels_and_variables() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, pod) (rate(vllm:x_bucket{namespace=~"$ns",'
        ' a="b(c)"}[$__rate_interval]))) / on (pod) group_left my_metric * 1e6 + $price'
    )
    assert metric_names(expr) == {"vllm:x_bucket", "my_metric"}


def test_our_metric_definitions_are_found() -> None:
    samples = our_samples()
    assert "dsv4_runtime_engine_ready" in samples
    assert "dsv4_runtime_engine_scrape_errors_total" in samples
    assert "dsv4_runtime_engine_scrape_errors" not in samples


def test_every_promql_metric_exists(dashboard: dict[str, Any]) -> None:
    vllm = vllm_names()
    ours = our_samples()
    unknown = [
        (title, name)
        for title, expr in expressions(dashboard)
        for name in sorted(metric_names(expr))
        if not (name in ours if name.startswith("dsv4_") else is_vllm_sample(name, vllm))
    ]
    assert unknown == []
    used = {name for _, expr in expressions(dashboard) for name in metric_names(expr)}
    assert any(n.startswith("vllm:") for n in used)
    assert any(n.startswith("dsv4_") for n in used)


def test_a_misspelt_metric_would_fail(dashboard: dict[str, Any]) -> None:
    vllm = vllm_names()
    assert not is_vllm_sample("vllm:time_to_first_token_second_bucket", vllm)
    assert not is_vllm_sample("vllm:kv_cache_usage_percent", vllm)
    assert is_vllm_sample("vllm:generation_tokens_total", vllm)
    assert "dsv4_operator_reconciles" not in our_samples()


@pytest.mark.parametrize(
    ("topic", "pattern"),
    [
        ("tokens/s", r"rate\(vllm:generation_tokens_total"),
        ("TTFT p50", r"histogram_quantile\(0\.5, .*vllm:time_to_first_token_seconds_bucket"),
        ("TTFT p99", r"histogram_quantile\(0\.99, .*vllm:time_to_first_token_seconds_bucket"),
        ("ITL p50", r"histogram_quantile\(0\.5, .*vllm:inter_token_latency_seconds_bucket"),
        ("ITL p99", r"histogram_quantile\(0\.99, .*vllm:inter_token_latency_seconds_bucket"),
        ("KV usage", r"vllm:kv_cache_usage_perc"),
        ("queue length", r"vllm:num_requests_waiting"),
        ("replicas", r"dsv4_runtime_engine_ready.*role=\"leader\""),
        ("GPUs", r"dsv4_operator_planned_gpus"),
        ("$ per million tokens", r"\$gpu_hour_usd / .*\* 3600 / 1e6"),
    ],
)
def test_dashboard_shows(dashboard: dict[str, Any], topic: str, pattern: str) -> None:
    assert any(re.search(pattern, expr) for _, expr in expressions(dashboard)), topic


def test_dashboard_variables_and_ids(dashboard: dict[str, Any]) -> None:
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "gpu_hour_usd"} <= names
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "dsv4-overview"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"


def test_dashboard_is_packaged_in_the_chart() -> None:
    ignored = (CHART_DIR / ".helmignore").read_text(encoding="utf-8")
    assert "dashboards" not in ignored
    assert Path(DASHBOARD).stat().st_size > 0


def test_operator_gauges_are_not_summed_over_standby_replicas(dashboard: dict[str, Any]) -> None:
    """Chart trial: with `replicas: 2` the metrics Service selects both operator pods, and a
    paused standby keeps its last gauges, so `sum(dsv4_operator_planned_gpus)` doubled GPUs
    and $ per million tokens. Every replica of one release computes the same plans: one per
    GPU type and release (the scrape's namespace), summed over releases (diff review: a bare
    `max by (gpu_type)` dropped all but the largest of several namespaced releases)."""
    uses = 0
    for _, expr in expressions(dashboard):
        for use in re.finditer(r"(\w+(?: by \([^)]*\))?) ?\(dsv4_operator_planned_gpus\)", expr):
            assert use.group(1) == "max by (gpu_type, namespace)", expr
            uses += 1
    assert uses >= 2
