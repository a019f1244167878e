"""Batches in flight: when vLLM 0.33.0 runs async scheduling, and what each request then reserves.

`VllmConfig.max_concurrent_batches` (vllm/config/vllm.py in the 0.33.0 wheel) is 2 with async
scheduling and no PP, the PP size (1) without it; `VllmConfig.__post_init__` keeps an explicit
`--async-scheduling` / `--no-async-scheduling` and resolves None to on, except (for the launches
the operator renders) on ROCm with `--enable-dbo` and `--all2all-backend=deepep_high_throughput`.
Each request reserves its window and compressor-state blocks for `max_concurrent_batches` x
max-num-batched-tokens tokens in flight (`VllmConfig.max_in_flight_tokens`).

The request sizes are vLLM 0.33.0's own: its `_get_packed_kv_cache_groups`,
`max_memory_usage_pages` and `_pool_bytes_per_block` (vllm/v1/core/kv_cache_planning.py) run
on DeepSeek-V4-Flash's layer specs with `max_in_flight_tokens` 1 x and 2 x 8,192 (the audit
behind commit a290dc6 ran both): 7,466,688,000 B (7,450 blocks of 1,002,240 B) and
10,802,142,720 B (10,778 blocks) at 1,048,576 tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dsv4_operator.api import parse_spec
from dsv4_operator.planning import Code, plan
from dsv4_operator.planning.findings import PlanningError
from dsv4_operator.planning.from_spec import request_from_spec, spec_path
from dsv4_operator.planning.request import PlanRequest

SYNC_FLASH_1M = 7_466_688_000
"""vLLM 0.33.0's bytes for one 1,048,576-token Flash request at mnbt 8,192, 1 batch in flight."""
ASYNC_FLASH_1M = 10_802_142_720
"""The same with 2 batches in flight (async scheduling)."""

FLASH_1M = PlanRequest(
    model="flash",
    gpu_types=("h200-141gb",),
    max_nodes=1,
    max_model_len=1 << 20,
    max_num_batched_tokens=8192,
)


def _spec(extra: list[str], gpu: str = "h200-141gb") -> dict[str, Any]:
    return {
        "model": "flash",
        "gpu": {"types": [gpu], "gpusPerNode": 8, "maxNodes": 1},
        "maxModelLen": 1 << 20,
        "maxNumBatchedTokens": 8192,
        "engine": {"extraArgs": extra},
    }


def _request_bytes(req: PlanRequest) -> int:
    return plan(req).chosen.request_bytes


def test_vllm_default_keeps_two_batches_in_flight() -> None:
    assert _request_bytes(FLASH_1M) == ASYNC_FLASH_1M
    assert _request_bytes(dataclasses.replace(FLASH_1M, async_scheduling=True)) == ASYNC_FLASH_1M


def test_no_async_scheduling_reserves_for_one_batch() -> None:
    """With `--no-async-scheduling` vLLM keeps 1 batch in flight; the plan charged 2."""
    sync = dataclasses.replace(FLASH_1M, async_scheduling=False)
    assert _request_bytes(sync) == SYNC_FLASH_1M
    # The smaller reservation holds more requests in the same pool.
    assert plan(sync).chosen.max_concurrency > plan(FLASH_1M).chosen.max_concurrency


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], None),
        (["--no-async-scheduling"], False),
        (["--async-scheduling"], True),
        (["--async-scheduling", "--no-async-scheduling"], False),  # the last one wins
        (["--no-async-scheduling", "--async-scheduling"], True),
    ],
)
def test_async_scheduling_in_extra_args_reaches_the_plan(
    extra: list[str], expected: bool | None
) -> None:
    request = request_from_spec(parse_spec(_spec(extra)))
    assert request.async_scheduling is expected
    bytes_ = SYNC_FLASH_1M if expected is False else ASYNC_FLASH_1M
    assert _request_bytes(request) == bytes_
    assert spec_path("async_scheduling") == "spec.engine.extraArgs"


_ROCM_DBO = ["--enable-dbo", "--all2all-backend=deepep_high_throughput"]


@pytest.mark.parametrize(
    ("gpu", "extra", "batches"),
    [
        # vLLM turns async scheduling off for ROCm DeepEP high-throughput with DBO ...
        ("mi355x-288gb", _ROCM_DBO, 1),
        # ... and extraArgs may say so too (an explicit `--async-scheduling` there makes vLLM
        # refuse to start: "Async scheduling is not compatible with ROCm DeepEP").
        ("mi355x-288gb", [*_ROCM_DBO, "--no-async-scheduling"], 1),
        # Not on CUDA, not without DBO, not with another backend.
        ("h200-141gb", _ROCM_DBO, 2),
        ("mi355x-288gb", ["--all2all-backend=deepep_high_throughput"], 2),
        ("mi355x-288gb", [*_ROCM_DBO, "--disable-dbo"], 2),
        ("mi355x-288gb", ["--enable-dbo"], 2),
    ],
)
def test_rocm_dbo_with_deepep_high_throughput_turns_async_scheduling_off(
    gpu: str, extra: list[str], batches: int
) -> None:
    request = request_from_spec(parse_spec(_spec(extra, gpu)))
    chosen = plan(request).chosen
    assert chosen.request_bytes == (SYNC_FLASH_1M if batches == 1 else ASYNC_FLASH_1M)


@pytest.mark.parametrize(
    "arg",
    ["--no-async-scheduling=true", "--async-scheduling=1", "--enable-dbo=1"],
)
def test_the_async_and_dbo_switches_take_no_value(arg: str) -> None:
    with pytest.raises(ValueError, match="takes no value"):
        parse_spec(_spec([arg]))


@pytest.mark.parametrize(("arg", "full"), [("--no-async", "--no-async-scheduling")])
def test_an_abbreviated_async_switch_is_refused(arg: str, full: str) -> None:
    """vLLM's parser takes `--no-async` for `--no-async-scheduling`, out of the plan's sight."""
    with pytest.raises(ValueError, match=f"abbreviates {full}"):
        parse_spec(_spec([arg]))


def test_explicit_async_scheduling_with_rocm_dbo_deepep_is_refused_naming_the_field() -> None:
    """vLLM 0.33.0 hard-fails an explicit `--async-scheduling` with ROCm DeepEP high-throughput
    DBO (`VllmConfig.__post_init__`): every pod would exit at start."""
    extra = ["--async-scheduling", *_ROCM_DBO]
    request = request_from_spec(parse_spec(_spec(extra, "mi355x-288gb")))
    with pytest.raises(PlanningError) as error:
        plan(request)
    assert error.value.field == "async_scheduling"
    assert spec_path(error.value.field) == "spec.engine.extraArgs"
    assert "vLLM refuses to start" in error.value.detail
    # With a CUDA type in the list, that type is planned; the ROCm layouts are rejected.
    both = dataclasses.replace(request, gpu_types=("mi355x-288gb", "h200-141gb"))
    p = plan(both)
    assert p.chosen.gpu.name == "h200-141gb"
    assert all(
        Code.ASYNC_SCHEDULING_REFUSED in {f.code for f in r.reasons}
        for r in p.rejected
        if r.gpu == "mi355x-288gb"
    )
