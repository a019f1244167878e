"""Regressions from a break-the-planner review: each case once misbehaved."""

import dataclasses

import pytest

from dsv4_operator.planning import (
    GPUS,
    Code,
    PlanningError,
    PlanRequest,
    kv_geometry,
    plan,
    plan_to_dict,
)
from dsv4_operator.planning.models import FLASH


def codes(p: object) -> set[str]:
    return {str(w.code) for w in p.warnings}  # type: ignore[attr-defined]


def all_codes(p: object) -> set[str]:
    found = codes(p)
    for r in p.rejected:  # type: ignore[attr-defined]
        found |= {str(f.code) for f in r.reasons}
    return found


def test_engine_versions_with_v_prefix_and_two_parts() -> None:
    base = PlanRequest(model="flash", gpu_types=("h200-141gb",))
    assert plan(dataclasses.replace(base, engine_version="v0.21.0")).fits
    assert plan(dataclasses.replace(base, engine_version="0.20")).fits
    assert Code.ENGINE_TOO_OLD in codes(plan(dataclasses.replace(base, engine_version="v0.19")))
    with pytest.raises(PlanningError, match="engine_version"):
        plan(dataclasses.replace(base, engine_version="latest"))


def test_tokens_target_respects_max_replicas_and_the_gpu_budget() -> None:
    req = PlanRequest(model="flash", gpu_types=("h200-141gb",), tokens_per_second=1_000_000)
    p = plan(dataclasses.replace(req, max_replicas=4))
    assert not p.fits
    assert Code.TOKENS_TARGET_EXCEEDS_REPLICAS in all_codes(p)
    p = plan(dataclasses.replace(req, total_gpu_budget=40))
    assert not p.fits
    ok = plan(dataclasses.replace(req, tokens_per_second=1000, max_replicas=4, total_gpu_budget=40))
    assert ok.fits
    assert ok.chosen.replicas_for_target == 1


def test_concurrency_target_needs_enough_sequences() -> None:
    p = plan(
        PlanRequest(
            model="flash",
            gpu_types=("h200-141gb",),
            concurrency=64,
            max_num_seqs=1,
            max_model_len=32_768,
            max_nodes=1,
        )
    )
    assert Code.CONCURRENCY_EXCEEDS_MAX_NUM_SEQS in all_codes(p)
    for e in (p.chosen, *p.runners_up):
        if p.fits:
            assert e.max_num_seqs * e.layout.data_parallel >= 64


def test_auto_length_honours_the_concurrency_target() -> None:
    p = plan(PlanRequest(model="flash", gpu_types=("h100-80gb",), concurrency=64, max_nodes=1))
    assert p.fits
    c = p.chosen
    assert 4096 <= c.max_model_len < 1_048_576
    assert c.max_concurrency >= 64


def test_more_gpus_per_node_never_loses_a_layout() -> None:
    req = PlanRequest(
        model="flash",
        weights_format="int4",
        gpu_types=("rtx-4090-24gb",),
        gpus_per_node=8,
        max_nodes=2,
        max_model_len=32_768,
        gpu_memory_utilization=0.95,
        max_num_batched_tokens=512,
    )
    assert plan(req).fits
    assert plan(dataclasses.replace(req, gpus_per_node=10)).fits
    small = dataclasses.replace(req, gpus_per_node=2)
    if plan(small).fits:
        assert plan(dataclasses.replace(small, gpus_per_node=3)).fits


def test_planner_never_picks_more_sequences_than_batched_tokens() -> None:
    p = plan(
        PlanRequest(
            model="flash", gpu_types=("h200-141gb",), max_num_batched_tokens=256, max_model_len=8192
        )
    )
    assert p.fits
    assert p.chosen.max_num_seqs <= 256
    pinned = plan(
        PlanRequest(
            model="flash",
            gpu_types=("h200-141gb",),
            max_num_batched_tokens=64,
            max_num_seqs=128,
            max_model_len=8192,
        )
    )
    assert Code.MAX_NUM_SEQS_EXCEEDS_BATCHED_TOKENS in all_codes(pinned)
    assert not pinned.fits


def test_budget_uses_the_memory_cuda_sees() -> None:
    h200 = GPUS["h200-141gb"]
    assert h200.cuda_total_bytes == 150_109_880_320 - (150_109_880_320 - h200.cuda_total_bytes)
    assert h200.memory_bytes - h200.cuda_total_bytes == 616 * 2**20
    p = plan(PlanRequest(model="flash", gpu_types=("h200-141gb",), gpu_memory_utilization=0.9))
    assert p.chosen.memory.budget_bytes == h200.cuda_total_bytes * 9 // 10


def test_admission_state_is_capped_by_max_model_len() -> None:
    geo = kv_geometry(FLASH, "fp8")
    assert geo.admission_state_bytes(8192, 128, 1024) < geo.admission_state_bytes(
        8192, 128, 1_048_576
    )
    assert geo.admission_state_bytes(8192, 128, 10**9) == geo.admission_state_bytes(8192, 128)


def test_mtp_with_auto_length_is_capped_at_the_safe_length() -> None:
    p = plan(PlanRequest(model="flash", gpu_types=("h200-141gb",), speculative_tokens=1))
    assert p.fits
    assert p.chosen.max_model_len == 32_768
    assert Code.MTP_LONG_CONTEXT_HANG not in codes(p)


def test_duplicate_gpu_names_are_searched_once() -> None:
    one = plan(PlanRequest(model="flash", gpu_types=("h100-80gb",)))
    two = plan(PlanRequest(model="flash", gpu_types=("h100-80gb", "H100-80GB")))
    assert len(two.rejected) == len(one.rejected)
    assert all(e.layout != two.chosen.layout for e in two.runners_up)


def test_structural_errors_name_the_flag() -> None:
    with pytest.raises(PlanningError) as e:
        plan(PlanRequest(tensor_parallel=3))
    assert e.value.field == "tensor_parallel"
    with pytest.raises(PlanningError) as e:
        plan(PlanRequest(pipeline_parallel=2, max_nodes=2))
    assert e.value.field == "pipeline_parallel"
    assert "EP=" not in str(e.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("speculative_tokens", 5),
        ("max_nodes", 65),
        ("concurrency", 10**7),
        ("max_num_seqs", 20_000),
    ],
)
def test_upper_bounds(field: str, value: int) -> None:
    with pytest.raises(PlanningError, match=f"{field}: {value} exceeds the limit"):
        plan(dataclasses.replace(PlanRequest(), **{field: value}))  # type: ignore[arg-type]


def test_no_fit_message_matches_the_shortfall() -> None:
    p = plan(PlanRequest(model="flash", gpu_types=("rtx-5090-32gb",), gpus_per_node=2, max_nodes=1))
    from dsv4_operator.planning.planner import shortfall_bytes

    short = shortfall_bytes(p.chosen)
    msg = next(w.message for w in p.warnings if w.code is Code.NO_FEASIBLE_LAYOUT)
    assert f"short by {short:,} B per GPU" in msg


def test_the_minimum_utilization_advice_respects_the_startup_reserve() -> None:
    """Planner audit: the advice "minimum gpu-memory-utilization ...: 0.987" was refused when
    followed (STARTUP_MEMORY_RESERVE: at most 0.98 for TP8 on H200). (mnbt 16,384: with vLLM
    0.33.0's admission of window and state blocks the old case's 28,672 needs more than 1.)"""
    request = PlanRequest(
        model="pro",
        gpu_types=("h200-141gb",),
        tensor_parallel=8,
        max_nodes=1,
        max_model_len=1_048_576,
        max_num_batched_tokens=16_384,
    )
    text = " ".join(w["message"] for w in plan_to_dict(plan(request))["warnings"])
    assert "would be 0.9898, above the 0.98 at which vLLM starts here" in text
    followed = plan(dataclasses.replace(request, gpu_memory_utilization=0.9898))
    codes = {w["code"] for w in plan_to_dict(followed)["warnings"]}
    assert "STARTUP_MEMORY_RESERVE" in codes


def test_an_unstartable_utilization_shows_the_layout_that_would_fit_below_it() -> None:
    """New-user trial: at gpu-memory-utilization 0.99 on H200 (vLLM starts at 0.97 at most) the
    plan showed Flash on 32 GPUs, the layout with the most KV, as if Flash needed them."""
    at = dataclasses.replace(PlanRequest(model="flash", gpu_types=("h200-141gb",)), max_nodes=4)
    too_high = plan(dataclasses.replace(at, gpu_memory_utilization=0.99))
    startable = plan(dataclasses.replace(at, gpu_memory_utilization=0.97))
    assert not too_high.fits
    assert startable.fits
    assert too_high.chosen.layout == startable.chosen.layout
    assert {f.code for f in too_high.chosen.problems} == {Code.STARTUP_MEMORY_RESERVE}
