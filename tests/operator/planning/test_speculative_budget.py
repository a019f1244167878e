"""MTP speculation and `--max-num-batched-tokens`: the planner does what vLLM does.

vLLM refuses max-num-batched-tokens below max-num-seqs (`SchedulerConfig.verify_max_model_len`,
vllm/config/scheduler.py) and nothing more for MTP: `VllmConfig._set_max_num_scheduled_tokens`
(vllm/config/vllm.py) only refuses a budget at or below `max_num_new_slots_for_drafting`, which is
0 for method `mtp` (vllm/config/speculative.py). A decode step of max-num-seqs x (1 + k) tokens
above the budget is accepted and silently cut: the scheduler (vllm/v1/core/sched/scheduler.py,
`schedule`) gives each running request min(1 + k, what is left) tokens, trims its drafts, and
leaves the rest of the running queue for the next step.
"""

import dataclasses

from dsv4_operator.planning import Code, PlanRequest, plan
from dsv4_operator.planning.from_spec import spec_words

_H200_TP8 = PlanRequest(
    model="flash",
    gpu_types=("h200-141gb",),
    max_nodes=1,
    tensor_parallel=8,
    data_parallel=1,
    expert_parallel=True,
    max_model_len=8192,
    max_num_batched_tokens=512,
)


def test_the_planners_own_max_num_seqs_leaves_every_sequence_its_decode_slots() -> None:
    """With 512 batched tokens the planner chose 500 sequences whatever k: with k = 3 a decode
    step needs 2,000 token slots, vLLM schedules 512, and 372 running requests wait each step."""
    # Without speculation the choice is what the KV pool holds: 231 requests (each reserves its
    # window and compressor-state blocks from vLLM 0.33.0's shared pool, for 2 x 512 tokens in
    # flight), below 512.
    held = plan(_H200_TP8).chosen.max_num_seqs
    assert held == 231
    for k in (1, 3):
        p = plan(dataclasses.replace(_H200_TP8, speculative_tokens=k))
        assert p.fits
        assert p.chosen.max_num_seqs * (1 + k) <= 512, (k, p.chosen.max_num_seqs)
        assert p.chosen.max_num_seqs == min(512 // (1 + k), held)
        assert Code.SPECULATIVE_STEP_EXCEEDS_BATCHED_TOKENS not in {w.code for w in p.warnings}


def test_a_pinned_decode_step_above_the_budget_is_planned_with_a_warning_naming_both_flags() -> (
    None
):
    """vLLM starts with max-num-seqs 500, 1 draft token and 512 batched tokens (no refusal), so
    the plan fits; it says that only 256 sequences advance per step."""
    p = plan(dataclasses.replace(_H200_TP8, speculative_tokens=1, max_num_seqs=500))
    assert p.fits
    assert Code.MAX_NUM_SEQS_EXCEEDS_BATCHED_TOKENS not in {f.code for f in p.chosen.problems}
    warning = next(w for w in p.warnings if w.code is Code.SPECULATIVE_STEP_EXCEEDS_BATCHED_TOKENS)
    for text in ("max-num-seqs 500", "max-num-batched-tokens 512", "at least 1,000", "to 256"):
        assert text in warning.message, (text, warning.message)
    # A resource's status and Events say it in spec fields, with values to paste.
    said = warning.worded(spec_words)
    for text in ("spec.maxNumSeqs 500", "spec.maxNumBatchedTokens to at least 1000", "to 256"):
        assert text in said, (text, said)
    # At 1,000 batched tokens every sequence gets its 2 slots: no warning.
    enough = plan(
        dataclasses.replace(
            _H200_TP8, speculative_tokens=1, max_num_seqs=500, max_num_batched_tokens=1000
        )
    )
    assert Code.SPECULATIVE_STEP_EXCEEDS_BATCHED_TOKENS not in {w.code for w in enough.warnings}


def test_max_num_seqs_above_the_budget_is_still_refused_as_vllm_does() -> None:
    p = plan(dataclasses.replace(_H200_TP8, speculative_tokens=1, max_num_seqs=513))
    assert not p.fits
    assert Code.MAX_NUM_SEQS_EXCEEDS_BATCHED_TOKENS in {f.code for f in p.chosen.problems}


def test_batch_advice_keeps_a_decode_step_of_the_concurrency_target_within_the_budget() -> None:
    """Flash on one H100 node at 200 concurrent 8K requests with 3 draft tokens was advised
    --max-num-batched-tokens 512: 200 x 4 = 800 slots a step, so vLLM would advance 128 of
    the 200 requests per step. Without speculation the same advice stays (200 <= 512). (105
    requests and 4 draft tokens, 525 slots: with vLLM 0.33.0's admission of window and state
    blocks from the shared pool, 200 no longer fit one node at any batch.)"""
    request = PlanRequest(
        model="flash", gpu_types=("h100-80gb",), max_nodes=1, max_model_len=8192, concurrency=105
    )
    plain = plan(request)
    assert not plain.fits
    assert plain.advice is not None
    assert plain.advice.max_num_batched_tokens == 512
    mtp = plan(dataclasses.replace(request, speculative_tokens=4))
    assert not mtp.fits
    assert mtp.advice is not None
    advised = mtp.advice.max_num_batched_tokens
    assert advised is None or advised >= 105 * 5, advised
    text = next(w.message for w in mtp.warnings if w.code is Code.NO_FEASIBLE_LAYOUT)
    assert "--max-num-batched-tokens 512" not in text


def test_a_decode_step_from_the_concurrency_target_does_not_name_spec_max_num_seqs() -> None:
    """Without spec.maxNumSeqs the step's max-num-seqs is the concurrency target per DP rank;
    the resource's PlanWarning said 'spec.maxNumSeqs 200 x ...', a field the user never set.
    `dsv4 plan` keeps its text."""
    request = dataclasses.replace(_H200_TP8, speculative_tokens=3, concurrency=200)
    p = plan(request)
    step = next(w for w in p.warnings if w.code is Code.SPECULATIVE_STEP_EXCEEDS_BATCHED_TOKENS)
    said = step.worded(spec_words)
    assert "spec.maxNumSeqs" not in said
    assert said.startswith("max-num-seqs 200 x (1 + 3 MTP draft tokens) = 800 token slots")
    # spec.load.concurrency is a total over DP ranks and replicas: no per-rank value to paste
    assert said.endswith(
        "lower spec.load.concurrency until each DP rank holds at most 128 sequences"
    )
    assert step.message.startswith("max-num-seqs 200 x (1 + 3 MTP draft tokens)")
    pinned = plan(dataclasses.replace(request, concurrency=None, max_num_seqs=200))
    said = next(
        w for w in pinned.warnings if w.code is Code.SPECULATIVE_STEP_EXCEEDS_BATCHED_TOKENS
    ).worded(spec_words)
    assert said.startswith("spec.maxNumSeqs 200 x")


def test_a_pinned_graph_cap_with_speculation_is_warned() -> None:
    """vLLM issue #54933: an explicit scalar cap drops the uniform-decode sizes n x (1 + k)
    that MTP verify steps need, so they can run without CUDA graphs. Only the cap together
    with speculation is warned; the plan without a cap pins vLLM's default list instead."""

    def codes(k: int, cap: int | None) -> set[Code]:
        request = dataclasses.replace(
            _H200_TP8, speculative_tokens=k, max_cudagraph_capture_size=cap
        )
        return {w.code for w in plan(request).warnings}

    warned = Code.CUDAGRAPH_CAP_WITH_SPECULATION
    assert warned in codes(1, 64)
    assert warned not in codes(1, None)
    assert warned not in codes(0, 64)
    p = plan(dataclasses.replace(_H200_TP8, speculative_tokens=2, max_cudagraph_capture_size=64))
    message = next(w.message for w in p.warnings if w.code is warned)
    assert "--max-cudagraph-capture-size 64" in message
    assert "n x (1 + 2)" in message
