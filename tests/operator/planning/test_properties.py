"""Property tests of the planner (hypothesis)."""

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsv4_operator.planning import PlanRequest, plan

GPU_NAMES = ["h100-80gb", "h200-141gb", "b200-180gb", "mi355x-288gb", "a100-80gb", "l40s-48gb"]

requests = st.builds(
    PlanRequest,
    model=st.sampled_from(["flash", "pro"]),
    weights_format=st.sampled_from(["official", "nvfp4", "fp8", "int4"]),
    kv_cache_dtype=st.sampled_from(["fp8", "bf16"]),
    gpu_types=st.lists(st.sampled_from(GPU_NAMES), min_size=1, max_size=2, unique=True).map(tuple),
    max_nodes=st.integers(1, 3),
    max_model_len=st.one_of(st.none(), st.integers(4096, 1_048_576)),
    gpu_memory_utilization=st.sampled_from([0.85, 0.9, 0.92, 0.95]),
    concurrency=st.one_of(st.none(), st.integers(1, 64)),
)
SETTINGS = settings(
    max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@SETTINGS
@given(requests)
def test_a_fitting_plan_never_exceeds_its_budget(req: PlanRequest) -> None:
    p = plan(req)
    if not p.fits:
        return
    for e in (p.chosen, *p.runners_up):
        mem = e.memory
        assert mem.kv_cache_bytes >= e.request_bytes
        assert mem.non_kv_bytes + mem.kv_cache_bytes == mem.budget_bytes
        assert mem.budget_bytes <= mem.memory_bytes
        assert e.max_concurrency * e.request_bytes <= e.layout.data_parallel * mem.kv_cache_bytes


@SETTINGS
@given(requests, st.integers(4096, 500_000), st.integers(1, 548_576))
def test_kv_capacity_is_non_increasing_in_context_length(
    req: PlanRequest, short: int, extra: int
) -> None:
    pinned = dataclasses.replace(req, gpu_types=req.gpu_types[:1], concurrency=None)
    a = plan(dataclasses.replace(pinned, max_model_len=short))
    if not a.fits:
        return
    lay = a.chosen.layout
    fixed = dataclasses.replace(
        pinned,
        tensor_parallel=lay.tensor_parallel,
        data_parallel=lay.data_parallel,
        expert_parallel=lay.expert_parallel,
        max_num_seqs=a.chosen.max_num_seqs,
        gpus_per_node=lay.gpus_per_node,
        max_nodes=lay.nodes,
    )
    a = plan(dataclasses.replace(fixed, max_model_len=short))
    b = plan(dataclasses.replace(fixed, max_model_len=short + extra))
    assert b.chosen.kv_tokens_per_replica <= a.chosen.kv_tokens_per_replica
    assert b.chosen.max_concurrency <= a.chosen.max_concurrency


@SETTINGS
@given(requests)
def test_adding_gpus_never_turns_a_fitting_target_infeasible(req: PlanRequest) -> None:
    if not plan(req).fits:
        return
    assert plan(dataclasses.replace(req, max_nodes=req.max_nodes + 1)).fits
    assert plan(dataclasses.replace(req, gpu_types=(*req.gpu_types, "b200-180gb"))).fits
