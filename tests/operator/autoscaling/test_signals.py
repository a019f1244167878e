"""Scrape parsing and counter rates."""

from pathlib import Path

import pytest

from dsv4_operator.autoscaling import CounterSample, counter_rate, parse_snapshot, signals

TEXT = """\
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="dsv4"} 1200.0
vllm:generation_tokens_total{engine="1",model_name="dsv4"} 800.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="dsv4"} 5000.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="dsv4"} 3.0
vllm:num_requests_running{engine="1",model_name="dsv4"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="dsv4"} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="dsv4"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="dsv4"} 0.75
"""


def test_parse_sums_engines_and_takes_the_fullest_kv() -> None:
    snap = parse_snapshot(TEXT)
    assert snap.generation_tokens == 2000.0
    assert snap.prompt_tokens == 5000.0
    assert snap.running == 5
    assert snap.waiting == 1
    assert snap.kv_usage == 0.75


def test_missing_series_count_as_zero() -> None:
    snap = parse_snapshot("")
    assert (snap.generation_tokens, snap.running, snap.kv_usage) == (0.0, 0, 0.0)


def test_counter_rate_and_reset() -> None:
    assert counter_rate(None, CounterSample(10, 100)) == 0.0
    assert counter_rate(CounterSample(0, 100), CounterSample(10, 600)) == 50.0
    # The engine restarted: the counter began again at zero and reached 200.
    assert counter_rate(CounterSample(0, 10_000), CounterSample(20, 200)) == 10.0
    assert counter_rate(CounterSample(5, 1), CounterSample(5, 2)) == 0.0


def test_metric_names_exist_in_vllm(fixtures_dir: Path) -> None:
    names = set((fixtures_dir / "vllm" / "vllm-0.33.0-metric-names.txt").read_text().split())
    for name in (
        signals.GENERATION_TOKENS,
        signals.PROMPT_TOKENS,
        signals.RUNNING,
        signals.WAITING,
        signals.KV_USAGE,
    ):
        assert name in names


def test_bad_exposition_raises() -> None:
    with pytest.raises(ValueError, match=r".+"):
        parse_snapshot("vllm:num_requests_running{engine= 3\n")


@pytest.mark.parametrize(
    ("series", "value"),
    [
        ("vllm:generation_tokens_total", "NaN"),
        ("vllm:generation_tokens_total", "+Inf"),
        ("vllm:num_requests_waiting", "+Inf"),
        ("vllm:num_requests_running", "NaN"),
        ("vllm:kv_cache_usage_perc", "NaN"),
    ],
)
def test_a_non_finite_value_is_refused_not_read_as_a_number(series: str, value: str) -> None:
    # NaN compares false with everything: a NaN tokens/s read as "no load" (a scale-down), a
    # NaN KV usage as empty, and int(+Inf) raised OverflowError out of the autoscaler's step.
    text = TEXT + f'{series}{{engine="2",model_name="dsv4"}} {value}\n'
    with pytest.raises(ValueError, match=series):
        parse_snapshot(text)
