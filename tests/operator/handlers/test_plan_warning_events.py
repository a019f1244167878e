"""Which plan warnings become `PlanWarning` Events, and that each is posted once.

h37: only `MTP_LONG_CONTEXT_HANG` was posted; warnings that ask the platform engineer to act
(`HOST_KV_NOT_COUNTED`: add the host KV cache to spec.resources, or the pod is OOM-killed;
`NVLS_NOT_COUNTED`: unset NCCL_NVLS_ENABLE, or the KV pool falls short of the plan...) reached
`status.plan.warnings` only, where nobody watching Events sees them.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.operator.handlers.test_reconciler import CR_PATH, SPEC, Events, _setup

from dsv4_operator.handlers.announcements import HAZARDS, REMARKS
from dsv4_operator.planning import Code

_LMCACHE = '{"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}'

ACTIONABLE: dict[str, dict[str, Any]] = {
    "HOST_KV_NOT_COUNTED": {**SPEC, "engine": {"extraArgs": ["--kv-transfer-config=" + _LMCACHE]}},
    "NVLS_NOT_COUNTED": {
        **SPEC,
        # DP8: communicators of 8 GPUs, where NCCL may use NVLS. (512 no longer fit one node:
        # each request reserves its window and state blocks in vLLM 0.33.0's shared pool.)
        "load": {"concurrency": 256},
        "engine": {"env": [{"name": "NCCL_NVLS_ENABLE", "value": "1"}]},
    },
    "GPUS_PER_NODE_ABOVE_TYPE": {
        **SPEC,
        "gpu": {"types": ["h200-141gb"], "gpusPerNode": 16},
        "parallelism": {"tensor": 8, "data": 2},
    },
    "SPECULATIVE_STEP_EXCEEDS_BATCHED_TOKENS": {
        **SPEC,
        "speculativeDecoding": {"method": "mtp", "numSpeculativeTokens": 3},
        "maxNumSeqs": 256,
        "maxNumBatchedTokens": 512,
    },
    "CUDAGRAPH_CAP_WITH_SPECULATION": {
        **SPEC,
        "speculativeDecoding": {"method": "mtp", "numSpeculativeTokens": 1},
        "engine": {"extraArgs": ["--max-cudagraph-capture-size=64"]},
    },
}
"""A spec that plans (fits) with each warning that asks for an action."""

REMARKED: dict[str, dict[str, Any]] = {
    "KV_OFFLOAD": {**SPEC, "engine": {"extraArgs": ["--kv-offloading-size=1"]}},
    "CPU_OFFLOAD": {**SPEC, "engine": {"extraArgs": ["--cpu-offload-gb=8"]}},
    "CUDA_GRAPHS_OFF": {**SPEC, "engine": {"extraArgs": ["--enforce-eager"]}},
    # Pro with maxModelLen auto on L40S: 1,024 batched tokens instead of vLLM's 4,096.
    "BATCH_LOWERED_FOR_CONTEXT": {
        **SPEC,
        "model": "pro",
        "gpu": {"types": ["l40s-48gb"], "gpusPerNode": 8, "maxNodes": 4},
    },
    # Pro at 300,000 tokens on 6 nodes of L40S: 48 GPUs at 4,096 batched tokens, 32 at 2,048.
    "BATCH_FITS_FEWER_GPUS": {
        **SPEC,
        "model": "pro",
        "maxModelLen": 300000,
        "gpu": {"types": ["l40s-48gb"], "gpusPerNode": 8, "maxNodes": 6},
    },
}
"""A spec that plans with a warning that only says what the plan counted or did."""

NOT_ON_A_PLAN_ROLLED_OUT: frozenset[Code] = frozenset(
    {
        # Problems of a layout: a plan with one does not fit (InsufficientCapacity, whose
        # Warning Event and message carry them) or the layout is rejected.
        Code.WEIGHTS_EXCEED_BUDGET,
        Code.MAX_MODEL_LEN_EXCEEDS_KV_POOL,
        Code.CONCURRENCY_EXCEEDS_KV_POOL,
        Code.CONCURRENCY_EXCEEDS_MAX_NUM_SEQS,
        Code.MAX_NUM_SEQS_EXCEEDS_BATCHED_TOKENS,
        Code.TOKENS_TARGET_EXCEEDS_REPLICAS,
        Code.CONTEXT_TOO_SHORT,
        Code.NO_FEASIBLE_LAYOUT,
        Code.PIPELINE_PARALLEL_UNSUPPORTED,
        Code.TP_EXCEEDS_NODE,
        Code.TP_NOT_DIVIDING_HEADS,
        Code.TP_NOT_DIVIDING_OUTPUT_GROUPS,
        Code.TP_SPLITS_QUANT_BLOCK,
        Code.TP_SPANS_NODES,
        Code.EXPERT_SPLIT_UNEVEN,
        Code.EP_NOT_DIVIDING_EXPERTS,
        Code.EXPERT_SPLIT_PADDED,
        Code.GPU_BUDGET_EXCEEDED,
        Code.PINNED_LAYOUT_MISMATCH,
        Code.ASYNC_SCHEDULING_REFUSED,
        Code.STARTUP_MEMORY_RESERVE,
        Code.SAMPLER_PEAK_OUTSIDE_BUDGET,
        # Guards that make the plan unfit whatever the layout (InvalidSpec).
        Code.ENGINE_TOO_OLD,
        Code.TRANSFORMERS_TOO_OLD,
        Code.INVALID_REQUEST,
    }
)


def test_every_code_is_an_event_a_remark_or_never_on_a_plan_rolled_out() -> None:
    """A new warning code must be sorted: posted as an Event, or left to status."""
    codes = {str(c) for c in Code}
    rest = {str(c) for c in NOT_ON_A_PLAN_ROLLED_OUT}
    assert HAZARDS.isdisjoint(REMARKS)
    assert HAZARDS.isdisjoint(rest)
    assert REMARKS.isdisjoint(rest)
    assert HAZARDS | REMARKS | rest == codes


def test_the_warnings_that_ask_for_an_action_are_events() -> None:
    assert set(ACTIONABLE) | {"MTP_LONG_CONTEXT_HANG"} == HAZARDS


@pytest.mark.parametrize("code", sorted(ACTIONABLE))
def test_an_actionable_warning_is_a_warning_event_once(code: str) -> None:
    fake, reconciler = _setup(ACTIONABLE[code])
    events = Events()
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    reconciler.reconcile("ns", "d", events)  # a resync: not again
    reconciler.reconcile("ns", "d", events)
    posted = [(kind, message) for kind, reason, message in events if reason == "PlanWarning"]
    assert [kind for kind, _ in posted] == ["Warning"]
    message = posted[0][1]
    assert message.startswith(f"{code}: ")
    # The same line as status.plan.warnings: spec fields, not vLLM's flag names.
    assert message in fake.objects[CR_PATH]["status"]["plan"]["warnings"]


def test_the_host_kv_event_names_the_spec_field_to_raise() -> None:
    _, reconciler = _setup(ACTIONABLE["HOST_KV_NOT_COUNTED"])
    events = Events()
    reconciler.reconcile("ns", "d", events)
    (message,) = [m for _, r, m in events if r == "PlanWarning"]
    assert "spec.resources.requests.memory" in message
    assert "LMCacheConnectorV1" in message


@pytest.mark.parametrize("code", sorted(REMARKED))
def test_a_remark_stays_in_status(code: str) -> None:
    fake, reconciler = _setup(REMARKED[code])
    events = Events()
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    warnings = fake.objects[CR_PATH]["status"]["plan"]["warnings"]
    assert any(w.startswith(f"{code}: ") for w in warnings)
    assert "PlanWarning" not in events.reasons()


def test_a_warning_that_goes_and_comes_back_is_posted_again() -> None:
    """The Event is posted when the warning appears in status, as MTP_LONG_CONTEXT_HANG's."""
    fake, reconciler = _setup(ACTIONABLE["NVLS_NOT_COUNTED"])
    events = Events()
    reconciler.reconcile("ns", "d", events)
    spec = fake.objects[CR_PATH]["spec"]
    spec["engine"] = {"env": [{"name": "NCCL_NVLS_ENABLE", "value": "0"}]}
    fake.objects[CR_PATH]["metadata"]["generation"] = 2
    reconciler.reconcile("ns", "d", events)
    assert not any(
        w.startswith("NVLS_") for w in fake.objects[CR_PATH]["status"]["plan"]["warnings"]
    )
    spec["engine"] = {"env": [{"name": "NCCL_NVLS_ENABLE", "value": "1"}]}
    fake.objects[CR_PATH]["metadata"]["generation"] = 3
    reconciler.reconcile("ns", "d", events)
    reconciler.reconcile("ns", "d", events)
    posted = [m for _, r, m in events if r == "PlanWarning"]
    assert len(posted) == 2
    assert all(m.startswith("NVLS_NOT_COUNTED: ") for m in posted)
