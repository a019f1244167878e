"""`max-model-len auto` and the batch: the planner lowers an unpinned batch for a longer context.

Each request reserves window and compressor-state blocks for 2 x max-num-batched-tokens tokens
in flight (vLLM 0.33.0, async scheduling), each a whole block of the shared pool. At vLLM's
default batch that reservation can be nearly all of a request: Pro on 4 nodes of 8 L40S planned
`max-model-len auto` = 5,632 tokens at 4,096 batched tokens (211,200 before commit a290dc6).
"""

from __future__ import annotations

import dataclasses

import pytest

from dsv4_operator.api import parse_spec
from dsv4_operator.planning import Code, PlanRequest, plan, plan_to_dict
from dsv4_operator.planning.evaluate import MIN_ADVISED_BATCHED_TOKENS
from dsv4_operator.planning.findings import Setting, Term
from dsv4_operator.planning.from_spec import request_from_spec
from dsv4_operator.planning.planner import Plan

PRO_L40S = PlanRequest(model="pro", gpu_types=("l40s-48gb",))
FLASH_5090 = PlanRequest(
    model="flash", gpu_types=("rtx-5090-32gb",), weights_format="int4", gpus_per_node=2
)


def _on_layout(p: Plan, **changes: object) -> PlanRequest:
    """`p`'s request pinned to its chosen layout, with `changes`."""
    lay = p.chosen.layout
    return dataclasses.replace(
        p.request,
        gpus_per_node=lay.gpus_per_node,
        max_nodes=lay.nodes,
        tensor_parallel=lay.tensor_parallel,
        data_parallel=lay.data_parallel,
        expert_parallel=lay.expert_parallel,
        **changes,  # type: ignore[arg-type]
    )


def _state_and_blocks(p: Plan, batch: int, length: int) -> tuple[int, int]:
    """(window and state bytes, compressed-block bytes) of one `length`-token request."""
    g = p.geometry
    state = g.admission_state_bytes(batch, p.model.sliding_window, length)
    return state, g.growth_bytes(length)


def _codes(p: Plan) -> set[Code]:
    return {w.code for w in p.warnings}


def test_auto_lowers_the_default_batch_while_the_state_outweighs_the_context() -> None:
    p = plan(PRO_L40S)
    assert p.fits
    chosen = p.chosen
    # Each figure below is the plan's own, at the batch pinned on the same layout.
    at = {b: plan(_on_layout(p, max_num_batched_tokens=b)).chosen for b in (4096, 2048, 1024)}
    assert at[4096].max_model_len == 5632  # vLLM's default batch for a 48 GB GPU
    assert at[2048].max_model_len == 300_544
    assert at[1024].max_model_len == 560_128
    # At 4,096 and 2,048 the window and state blocks are the larger part of each request; at
    # 1,024 they are not, so the planner stops there.
    for b in (4096, 2048):
        state, blocks = _state_and_blocks(p, b, at[b].max_model_len)
        assert state > blocks
    state, blocks = _state_and_blocks(p, 1024, at[1024].max_model_len)
    assert state <= blocks
    assert (chosen.max_num_batched_tokens, chosen.max_model_len) == (1024, 560_128)
    assert chosen.request_bytes == at[1024].request_bytes
    assert chosen.batch_lowered_from == (4096, 5632)
    (said,) = [w for w in p.warnings if w.code is Code.BATCH_LOWERED_FOR_CONTEXT]
    assert said.message == (
        "max-num-batched-tokens 1,024 instead of vLLM's default 4,096 for l40s-48gb: each "
        "request reserves window and compressor-state KV blocks for the 2 batches of "
        "max-num-batched-tokens in flight, which at 4,096 left max-model-len auto 5,632 "
        "tokens; at 1,024 it is 560,128 (fewer prompt tokens per engine step: slower prefill "
        "of long prompts; set max-num-batched-tokens to choose)"
    )
    assert Term(Setting.MAX_NUM_BATCHED_TOKENS, 1024) in said.terms
    assert Term(Setting.MAX_MODEL_LEN, 560_128) in said.terms
    data = plan_to_dict(p)
    assert data["max_num_batched_tokens"] == 1024
    assert data["max_model_len"] == 560_128


def test_a_pinned_batch_is_kept() -> None:
    p = plan(dataclasses.replace(PRO_L40S, max_num_batched_tokens=4096))
    assert (p.chosen.max_num_batched_tokens, p.chosen.max_model_len) == (4096, 5632)
    assert Code.BATCH_LOWERED_FOR_CONTEXT not in _codes(p)


def test_a_fixed_max_model_len_keeps_the_default_batch() -> None:
    p = plan(dataclasses.replace(PRO_L40S, max_model_len=5632))
    assert p.chosen.max_num_batched_tokens == 4096
    assert Code.BATCH_LOWERED_FOR_CONTEXT not in _codes(p)


def test_a_batch_pinned_in_the_spec_is_kept() -> None:
    body = {"model": "pro", "gpu": {"types": ["l40s-48gb"], "maxNodes": 4}, "maxModelLen": "auto"}
    unpinned = plan(request_from_spec(parse_spec(body)))
    assert unpinned.chosen.max_num_batched_tokens == 1024
    pinned = plan(request_from_spec(parse_spec({**body, "maxNumBatchedTokens": 4096})))
    assert pinned.chosen.max_num_batched_tokens == 4096


def test_auto_keeps_the_default_batch_when_the_context_outweighs_the_state() -> None:
    """Flash int4 on 4 nodes of 2 RTX 5090: 478,464 tokens at vLLM's default 2,048, whose
    window and state blocks are under half of each request; the batch stays vLLM's."""
    p = plan(FLASH_5090)
    chosen = p.chosen
    assert (chosen.max_num_batched_tokens, chosen.max_model_len) == (2048, 478_464)
    state, blocks = _state_and_blocks(p, 2048, chosen.max_model_len)
    assert 0 < state <= blocks
    assert chosen.batch_lowered_from is None
    assert Code.BATCH_LOWERED_FOR_CONTEXT not in _codes(p)


@pytest.mark.parametrize("seqs", [600, 1024])
def test_the_batch_is_not_lowered_below_the_sequences_a_step_needs(seqs: int) -> None:
    """max-num-seqs above the batch is refused by vLLM: the planner never lowers it so far."""
    p = plan(dataclasses.replace(PRO_L40S, max_num_seqs=seqs))
    assert p.chosen.max_num_batched_tokens >= max(seqs, MIN_ADVISED_BATCHED_TOKENS)
    assert Code.MAX_NUM_SEQS_EXCEEDS_BATCHED_TOKENS not in {f.code for f in p.chosen.problems}


def _fewer(p: Plan) -> list[str]:
    return [w.message for w in p.warnings if w.code is Code.BATCH_FITS_FEWER_GPUS]


def test_a_fixed_length_that_a_smaller_batch_fits_on_fewer_gpus_is_advised() -> None:
    """Pro at 300,000 tokens on L40S within 6 nodes: 48 GPUs at vLLM's 4,096 batched tokens,
    32 at 2,048 (the window and state blocks of 2 x 4,096 in flight outweigh the context's)."""
    request = dataclasses.replace(PRO_L40S, max_model_len=300_000, max_nodes=6)
    p = plan(request)
    assert p.fits
    assert (p.chosen.layout.gpus, p.chosen.max_num_batched_tokens) == (48, 4096)
    state, blocks = _state_and_blocks(p, 4096, 300_000)
    assert state > blocks
    (said,) = [w for w in p.warnings if w.code is Code.BATCH_FITS_FEWER_GPUS]
    assert Term(Setting.MAX_NUM_BATCHED_TOKENS, 2048, "most") in said.terms
    assert said.message == (
        "each max-model-len request reserves window and compressor-state KV blocks for the 2 "
        "batches of max-num-batched-tokens in flight, more than its own context's blocks at "
        "vLLM's default 4,096 for l40s-48gb; at 2,048 it fits on 32 l40s-48gb GPUs (4x8 TP8 "
        "DP4 EP32) instead of 48 (6x8 TP4 DP12 EP48): fewer prompt tokens per engine step "
        "(slower prefill of long prompts); set max-num-batched-tokens to take it"
    )
    # Followed, it plans that layout; the plan itself keeps vLLM's default (advice only).
    followed = plan(dataclasses.replace(request, max_num_batched_tokens=2048))
    assert followed.fits
    assert followed.chosen.layout.describe() == "4x8 TP8 DP4 EP32"
    assert _fewer(followed) == []


def test_no_fewer_gpus_advice_for_a_pinned_batch_or_when_the_context_outweighs_the_state() -> None:
    pinned = dataclasses.replace(
        PRO_L40S, max_model_len=300_000, max_nodes=6, max_num_batched_tokens=4096
    )
    assert _fewer(plan(pinned)) == []
    # Pro at 200,000 tokens on 8 H200 with mnbt 8,192: one node, nothing fewer to advise.
    one_node = PlanRequest(model="pro", gpu_types=("h200-141gb",), max_model_len=200_000)
    assert plan(one_node).chosen.layout.gpus == 8
    assert _fewer(plan(one_node)) == []
