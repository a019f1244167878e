"""Tokens/s from vLLM's counter, and the merged /metrics exposition parsing as Prometheus text."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dsv4_runtime.metrics import (
    GENERATION_TOKENS_SAMPLE,
    RuntimeMetrics,
    TokenRateMeter,
    generation_tokens_total,
    merge_exposition,
)

ENGINE_TEXT = """\
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="dsv4-pro"} 1000.0
vllm:generation_tokens_total{engine="1",model_name="dsv4-pro"} 500.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="dsv4-pro"} 3.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="dsv4-pro"} 0.25
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.2e+09
"""


def test_rate_over_window() -> None:
    meter = TokenRateMeter(window_seconds=60)
    assert meter.rate() == 0.0
    meter.add(0.0, 1000)
    assert meter.rate() == 0.0
    meter.add(10.0, 3000)
    assert meter.rate() == 200.0
    meter.add(70.0, 9000)  # the 0 s sample drops out; 10 s stays as the window's start
    assert meter.rate() == 100.0
    meter.add(80.0, 9000)
    assert meter.rate() == pytest.approx(6000 / 70)


def test_counter_reset_restarts_the_window() -> None:
    meter = TokenRateMeter()
    meter.add(0.0, 5000)
    meter.add(5.0, 6000)
    meter.add(10.0, 100)  # engine restarted
    assert meter.rate() == 0.0
    meter.add(12.0, 500)
    assert meter.rate() == 200.0


def test_stale_or_repeated_timestamps_are_ignored() -> None:
    meter = TokenRateMeter()
    meter.add(5.0, 100)
    meter.add(5.0, 900)
    meter.add(4.0, 900)
    meter.add(6.0, 200)
    assert meter.rate() == 100.0


def test_generation_total_sums_every_series() -> None:
    assert generation_tokens_total(ENGINE_TEXT) == 1500.0
    assert generation_tokens_total("# no metrics\n") is None


def test_sample_name_is_vllms(vllm_metric_names: frozenset[str]) -> None:
    assert GENERATION_TOKENS_SAMPLE.removesuffix("_total") in vllm_metric_names


def test_merged_exposition_parses_and_carries_the_gauge(
    vllm_metric_names: frozenset[str],
) -> None:
    metrics = RuntimeMetrics()
    metrics.observe_engine(100.0, ENGINE_TEXT)
    metrics.observe_engine(102.0, ENGINE_TEXT.replace("1000.0", "1300.0"))
    body = merge_exposition(metrics.render(), ENGINE_TEXT + "# EOF\n").decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    gauge = families["dsv4_runtime_generation_tokens_per_second"]
    assert gauge.type == "gauge"
    assert gauge.samples[0].value == 150.0
    assert families["vllm:generation_tokens"].type == "counter"
    assert "# EOF" not in body
    ours = {name for name in families if name.startswith("dsv4_runtime")}
    assert ours == {
        "dsv4_runtime_info",
        "dsv4_runtime_engine_ready",
        "dsv4_runtime_draining",
        "dsv4_runtime_generation_tokens_per_second",
        "dsv4_runtime_engine_scrape_errors",
        "dsv4_runtime_engine_scrape_errors_created",
        "dsv4_runtime_engine_startup_seconds",
        "dsv4_runtime_engine_stalled_seconds",
        "dsv4_runtime_engine_stall_limit_seconds",
        "dsv4_runtime_shm_stale_entries_removed",
        "dsv4_runtime_shm_stale_bytes_removed",
    }
    assert not ours & vllm_metric_names


def test_bad_engine_text_raises() -> None:
    with pytest.raises(ValueError, match="could not convert string to float"):
        generation_tokens_total("vllm:generation_tokens_total{engine=} x\n")
