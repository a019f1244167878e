"""A "does not fit" answer's numbers and advice, followed, fit (found by property search)."""

import dataclasses

from dsv4_operator.handlers.announcements import no_fit_message
from dsv4_operator.planning import Code, PlanRequest, plan, plan_to_dict
from dsv4_operator.planning.findings import Setting, Term, cli_words
from dsv4_operator.planning.planner import Plan, shortfall_bytes


def _pinned(p: Plan, **changes: object) -> PlanRequest:
    """The request of `p` pinned to its chosen GPU type and layout, with `changes`."""
    lay = p.chosen.layout
    return dataclasses.replace(
        p.request,
        gpu_types=(p.chosen.gpu.name,),
        tensor_parallel=lay.tensor_parallel,
        data_parallel=lay.data_parallel,
        expert_parallel=lay.expert_parallel,
        gpus_per_node=lay.gpus_per_node,
        max_nodes=lay.nodes,
        **changes,  # type: ignore[arg-type]
    )


def test_auto_with_no_room_counts_the_shortfall_of_the_request_it_names() -> None:
    """`auto` with no length fitting names a 4,096-token request: the shortfall, and the minimum
    utilization, must be those of that request, prefill gather workspace at 4,096 included (they
    were 4,190,208 B short: the workspace at a 1-token length)."""
    auto = plan(
        PlanRequest(model="flash", weights_format="bf16", gpu_types=("a100-80gb",), max_nodes=1)
    )
    assert not auto.fits
    assert auto.chosen.max_model_len == 0
    named = plan(_pinned(auto, max_model_len=4096))
    assert shortfall_bytes(auto.chosen) == shortfall_bytes(named.chosen) > 0
    assert auto.chosen.memory.activation_bytes == named.chosen.memory.activation_bytes
    text = " ".join(w.message for w in auto.warnings)
    assert "minimum gpu-memory-utilization for one 4,096-token request: 0.9517" in text
    assert plan(_pinned(auto, max_model_len=4096, gpu_memory_utilization=0.9517)).fits


def test_auto_offload_advice_with_no_room_fits_when_followed() -> None:
    auto = plan(
        PlanRequest(model="pro", weights_format="nvfp4", gpu_types=("l20-48gb",), max_nodes=1)
    )
    assert not auto.fits
    assert auto.advice is not None
    assert auto.advice.offload_gib is not None
    followed = plan(_pinned(auto, cpu_offload_bytes=auto.advice.offload_gib << 30))
    assert followed.fits, [w.message for w in followed.warnings]
    assert Code.NO_FEASIBLE_LAYOUT not in {w.code for w in followed.warnings}


def test_offload_advice_holds_the_concurrency_target() -> None:
    """The offload option was sized for one request: with a target of 2 concurrent requests the
    advised 19 GiB left room for two 1,536-token requests, and the plan still did not fit."""
    p = plan(
        PlanRequest(
            model="flash",
            weights_format="fp8",
            gpu_types=("rtx-4090-24gb",),
            max_nodes=1,
            concurrency=2,
        )
    )
    assert not p.fits
    assert p.advice is not None
    assert p.advice.offload_gib is not None
    followed = plan(_pinned(p, cpu_offload_bytes=p.advice.offload_gib << 30))
    assert followed.fits, [w.message for w in followed.warnings]
    assert followed.chosen.max_concurrency >= 2


def test_a_smaller_batch_that_fits_is_advised_before_more_gpus() -> None:
    """Pro at 1M on 2 nodes of H100: at vLLM's default 8,192 batched tokens it does not fit and
    the advice was 24 GPUs, though the same 16 fit at 4,096 (the plan passes
    --max-num-batched-tokens itself; a 70 GiB GPU fits where a 71 GiB one did not, for the tier's
    larger default). Now 2,048: each request's window and state blocks, for 2 batches in flight,
    come from vLLM 0.33.0's shared pool."""
    request = PlanRequest(model="pro", gpu_types=("h100-80gb",), max_nodes=2, max_model_len=1 << 20)
    p = plan(request)
    assert not p.fits
    assert p.chosen.max_num_batched_tokens == 8192
    assert p.advice is not None
    assert p.advice.max_num_batched_tokens == 2048
    text = next(w.message for w in p.warnings if w.code is Code.NO_FEASIBLE_LAYOUT)
    assert "--max-num-batched-tokens 2048" in text
    followed = plan(_pinned(p, max_num_batched_tokens=2048))
    assert followed.fits, [w.message for w in followed.warnings]
    assert followed.chosen.layout.gpus == 16
    # Unpinned too: the smaller batch fits on these 2 nodes.
    assert plan(dataclasses.replace(request, max_num_batched_tokens=2048)).fits


def test_no_batch_advice_when_the_batch_is_pinned() -> None:
    request = PlanRequest(
        model="pro",
        gpu_types=("h100-80gb",),
        max_nodes=2,
        max_model_len=1 << 20,
        max_num_batched_tokens=8192,
    )
    p = plan(request)
    assert not p.fits
    assert p.advice is not None
    assert p.advice.max_num_batched_tokens is None


def test_the_operator_names_the_batch_advice_as_a_spec_field() -> None:
    p = plan(PlanRequest(model="pro", gpu_types=("h100-80gb",), max_nodes=2, max_model_len=1 << 20))
    assert "spec.maxNumBatchedTokens: 2048 on this layout" in no_fit_message(p)


def test_a_pinned_layout_no_node_shape_holds_is_shown_with_its_gpus() -> None:
    """TP8 pinned with GB200 (4 per node) in the list: the rejected GB200 entry showed
    `gpus: 4` with `tensor_parallel: 8`, a layout whose sizes do not multiply to its GPUs."""
    p = plan(PlanRequest(gpu_types=("h100-80gb", "gb200-186gb"), tensor_parallel=8, max_nodes=1))
    assert p.fits
    gb200 = [r for r in p.rejected if r.gpu == "gb200-186gb"]
    assert gb200
    for r in gb200:
        lay = r.layout
        assert lay.gpus == lay.tensor_parallel * lay.data_parallel * lay.pipeline_parallel
        assert lay.gpus_per_node <= 4
        assert Code.TP_EXCEEDS_NODE in {f.code for f in r.reasons}


def test_offload_advice_says_it_is_sized_for_the_concurrency_target_and_fits_when_followed() -> (
    None
):
    """h12 (README walk-through): Pro at 1M on 2x8 H100 for 8 concurrent requests was "short by
    1,436,908,947 B per GPU ... for one 1,048,576-token request" yet advised 29 GiB of CPU
    offload per GPU, with nothing saying the offload covers the 8 requests, not the one. (6
    requests: 8 no longer fit 2 nodes at any offload, each reserving its window and state
    blocks from vLLM 0.33.0's shared pool.)"""
    request = PlanRequest(
        model="pro", gpu_types=("h100-80gb",), max_nodes=2, max_model_len=1 << 20, concurrency=6
    )
    p = plan(request)
    assert not p.fits
    assert p.advice is not None
    assert p.advice.offload_gib is not None
    gib = p.advice.offload_gib
    text = next(w.message for w in p.warnings if w.code is Code.NO_FEASIBLE_LAYOUT)
    assert f"(--cpu-offload-gb {gib}; slow; sized for 6 concurrent requests)" in text
    assert f"--cpu-offload-gb={gib}; slow; sized for 6 concurrent requests)" in no_fit_message(p)
    assert plan(dataclasses.replace(request, cpu_offload_bytes=gib * 2**30)).fits
    # One request (no target): nothing to add.
    one = plan(dataclasses.replace(request, concurrency=None, max_nodes=1))
    assert one.advice is not None
    assert one.advice.offload_gib is not None
    assert "sized for" not in no_fit_message(one)


def _no_fit_text(p: Plan) -> str:
    return next(w.message for w in p.warnings if w.code is Code.NO_FEASIBLE_LAYOUT)


def test_a_max_num_seqs_above_the_batch_is_advised_as_a_setting_not_more_gpus() -> None:
    """h18: max-num-seqs 512 over max-num-batched-tokens 256 fits no layout (vLLM refuses to
    start), and NO_FEASIBLE_LAYOUT advised "more than 16 nodes of 8 GPUs of this type, or a
    larger GPU": GPUs to buy for a setting. The advice names the settings and values that work,
    and each, pasted back into the same request, plans."""
    request = PlanRequest(gpu_types=("h200-141gb",), max_num_seqs=512, max_num_batched_tokens=256)
    p = plan(request)
    assert not p.fits
    text = _no_fit_text(p)
    assert "more than" not in text
    assert "larger GPU" not in text
    assert "what would fit: lower max-num-seqs to 256 or raise max-num-batched-tokens to 512" in (
        text
    )
    assert plan(dataclasses.replace(request, max_num_seqs=256)).fits
    assert plan(dataclasses.replace(request, max_num_batched_tokens=512)).fits
    # The closest layout is one that only the setting keeps from fitting, not the largest.
    assert {f.code for f in p.chosen.problems} == {Code.MAX_NUM_SEQS_EXCEEDS_BATCHED_TOKENS}
    assert plan(dataclasses.replace(_pinned(p), max_num_seqs=256)).fits
    # The operator says the same in spec fields.
    said = no_fit_message(p)
    assert (
        "what would fit: lower spec.maxNumSeqs to 256 or raise spec.maxNumBatchedTokens to 512"
        in (said)
    )
    assert "more than" not in said


def test_setting_advice_is_given_only_where_it_fits_when_followed() -> None:
    """4,096 sequences on one node of 4 H100s with a 512-token batch (examples/flash-4x-h100
    with --max-num-seqs 4096): up to 128 sequences the activations still leave no room for two
    64K requests, so max-num-seqs is advised at 64 (it fits then), not at the batch's 512,
    and raising the batch to 4,096 is not advised (it does not fit)."""
    request = PlanRequest(
        model="flash",
        weights_format="fp8",
        gpu_types=("h100-80gb",),
        gpus_per_node=4,
        max_nodes=1,
        max_model_len=65536,
        max_num_batched_tokens=512,
        gpu_memory_utilization=0.95,
        concurrency=2,
        max_num_seqs=4096,
    )
    p = plan(request)
    assert not p.fits
    text = _no_fit_text(p)
    assert "what would fit: lower max-num-seqs to 64" in text
    assert plan(dataclasses.replace(request, max_num_seqs=64)).fits
    assert not plan(dataclasses.replace(request, max_num_seqs=128)).fits
    assert not plan(dataclasses.replace(request, max_num_batched_tokens=4096)).fits
    assert "raise max-num-batched-tokens to" not in text.split("what would fit:")[1]
    assert "more than" not in text


def test_a_pinned_batch_too_large_for_any_layout_is_advised_as_the_batch() -> None:
    """h18: Pro at 1M on 2 nodes of H100 with --max-num-batched-tokens 65536: the activations
    of that batch fit no layout of up to 16 nodes, and the advice was "more than 16 nodes of
    8 GPUs of this type, or a larger GPU", though a batch of 4,096 fits on the 2 nodes given
    (2,048 now that each request's window and state blocks are counted as vLLM 0.33.0 reserves
    them). The batch is named with a value that plans when pasted back."""
    request = PlanRequest(
        model="pro",
        gpu_types=("h100-80gb",),
        max_nodes=2,
        max_model_len=1 << 20,
        max_num_batched_tokens=65536,
    )
    p = plan(request)
    assert not p.fits
    text = _no_fit_text(p)
    assert text.endswith("what would fit: lower max-num-batched-tokens to 2,048"), text
    assert "larger GPU" not in text
    assert plan(dataclasses.replace(request, max_num_batched_tokens=2048)).fits
    assert not plan(dataclasses.replace(request, max_num_batched_tokens=4096)).fits
    assert "what would fit: lower spec.maxNumBatchedTokens to 2048" in no_fit_message(p)


def _setting_with_layout(request: PlanRequest, setting: Setting) -> tuple[Plan, int, int]:
    """Check a no-fit plan whose advice is `setting` lowered together with a layout.

    Asserts: no "more than 16 nodes" advice; one `layout_settings` term, of `setting`, worded
    "lower <setting> to N with at least"; the request with both changes plans, with the
    setting alone it does not. Returns (the plan, the advised nodes, N).
    """
    p = plan(request)
    assert not p.fits
    text = _no_fit_text(p)
    assert "more than 16 nodes" not in text, text
    assert p.advice is not None
    assert p.advice.layout is not None
    (term,) = p.advice.layout_settings
    assert term.setting is setting
    assert isinstance(term.value, int)
    assert f"lower {cli_words(Term(setting))} to {term.value:,} with at least" in text, text
    if setting is Setting.MAX_NUM_SEQS:
        changed = dataclasses.replace(request, max_num_seqs=term.value)
    else:
        changed = dataclasses.replace(request, max_num_batched_tokens=term.value)
    nodes = p.advice.layout.nodes
    assert plan(dataclasses.replace(changed, max_nodes=nodes)).fits
    assert not plan(changed).fits
    return p, nodes, term.value


def test_a_setting_that_blocks_every_layout_is_advised_with_the_layout_it_needs() -> None:
    """h19: Pro on one node of H100 with --max-num-seqs 4096 over a 1,024-token batch was
    advised "more than 16 nodes of 8 GPUs of this type, or a larger GPU": the wider layout
    search kept the setting that vLLM refuses on every layout, so it found none; lowering
    max-num-seqs to the batch fits on 16 GPUs. The advice names the setting and the layout
    together, and the two, pasted back, plan."""
    request = PlanRequest(
        model="pro",
        gpu_types=("h100-80gb",),
        max_nodes=1,
        speculative_tokens=2,
        max_num_seqs=4096,
        max_num_batched_tokens=1024,
    )
    p, nodes, value = _setting_with_layout(request, Setting.MAX_NUM_SEQS)
    # Nor does the layout alone, with the setting as given.
    assert not plan(dataclasses.replace(request, max_nodes=nodes)).fits
    said = no_fit_message(p)
    assert f"lower spec.maxNumSeqs to {value} with at least" in said, said
    assert "spec.gpu.maxNodes >= 2" in said


def test_a_pinned_batch_too_large_for_the_nodes_given_is_advised_with_the_layout() -> None:
    """h19: Pro at 1M on one node of H100 with --max-num-batched-tokens 65536: no layout of
    any size fits that batch, and no smaller batch fits one node, so the advice was "more
    than 16 nodes of 8 GPUs of this type, or a larger GPU"; a batch of 4,096 fits on 2
    nodes."""
    request = PlanRequest(
        model="pro",
        gpu_types=("h100-80gb",),
        max_nodes=1,
        max_model_len=1 << 20,
        max_num_batched_tokens=65536,
    )
    _setting_with_layout(request, Setting.MAX_NUM_BATCHED_TOKENS)


def test_with_mtp_the_setting_advice_holds_a_whole_decode_step() -> None:
    """h19: with 2 MTP draft tokens, max-num-seqs 512 over a 256-token batch was advised
    "lower max-num-seqs to 256 or raise max-num-batched-tokens to 512"; either, followed,
    planned with SPECULATIVE_STEP_EXCEEDS_BATCHED_TOKENS (a decode step of 256 or 512
    sequences x 3 tokens exceeds the batch), which asks for a batch of 1,536 or 170 sequences
    next. The advice is values at which a decode step fits (the rule `_batch_that_fits`
    follows), so following it leaves no such warning."""
    request = PlanRequest(
        gpu_types=("h200-141gb",),
        max_num_seqs=512,
        max_num_batched_tokens=256,
        speculative_tokens=2,
    )
    p = plan(request)
    assert not p.fits
    assert p.advice is not None
    advised = {t.setting: t.value for t in p.advice.settings}
    assert advised == {Setting.MAX_NUM_SEQS: 85, Setting.MAX_NUM_BATCHED_TOKENS: 1536}
    for followed in (
        dataclasses.replace(request, max_num_seqs=85),
        dataclasses.replace(request, max_num_batched_tokens=1536),
    ):
        after = plan(followed)
        assert after.fits
        codes = {w.code for w in after.warnings}
        assert Code.SPECULATIVE_STEP_EXCEEDS_BATCHED_TOKENS not in codes
    text = _no_fit_text(p)
    assert text.endswith("lower max-num-seqs to 85 or raise max-num-batched-tokens to 1,536"), text


def test_the_advised_layout_is_the_one_the_planner_picks_with_the_nodes_it_names() -> None:
    """h22: Pro NVFP4 on one node of 8 MI300X was advised "at least 12 GPUs of this type (3x4 TP1
    DP12; spec.gpu.maxNodes >= 3)": the fewest GPUs, spread over 3 nodes, while the planner ranks
    fewer nodes first (`_rank_key`), so following the advice planned 2x8 TP1 DP16 EP16 instead,
    and 2 nodes, not 3, were enough. Unpriced types rank nodes first; priced ones price first."""
    request = PlanRequest(
        model="pro", weights_format="nvfp4", gpu_types=("mi300x-192gb",), max_nodes=1
    )
    p = plan(request)
    assert not p.fits
    assert p.advice is not None
    assert p.advice.layout is not None
    followed = plan(dataclasses.replace(request, max_nodes=p.advice.layout.nodes))
    assert followed.fits
    assert followed.chosen.layout == p.advice.layout
    assert p.advice.layout.nodes == 2
    # Priced, the planner takes the cheapest (fewest GPUs) first: the advice does too.
    priced = dataclasses.replace(request, usd_per_gpu_hour={"mi300x-192gb": "2.00"})
    q = plan(priced)
    assert q.advice is not None
    assert q.advice.layout is not None
    followed = plan(dataclasses.replace(priced, max_nodes=q.advice.layout.nodes))
    assert followed.chosen.layout == q.advice.layout
    assert q.advice.layout.gpus < p.advice.layout.gpus  # 12 GPUs cost less than 16


def test_layout_advice_beyond_the_gpu_budget_says_the_budget_must_allow_it() -> None:
    """`dsv4 plan FILE` with spec.gpu.budget 8: the advice "at least 12 GPUs (6x2 TP1 DP12)"
    did not say that the budget bars that layout, so a user who set spec.gpu.maxNodes to 6 as
    advised planned the same 8 GPUs and the same refusal (the operator's message said it)."""
    req = PlanRequest(
        model="pro",
        max_model_len=1_048_576,
        gpu_types=("h200-141gb",),
        gpus_per_node=2,
        max_nodes=1,
        gpu_budget=8,
    )
    p = plan(req)
    assert not p.fits
    assert p.advice is not None
    assert p.advice.layout is not None
    assert p.advice.layout.gpus > 8
    said = next(w.message for w in p.warnings if w.code is Code.NO_FEASIBLE_LAYOUT)
    assert f"spec.gpu.budget allowing {p.advice.layout.gpus} GPUs per replica" in said
    nodes = p.advice.layout.nodes
    assert not plan(dataclasses.replace(req, max_nodes=nodes)).fits  # the budget still bars it
    followed = plan(dataclasses.replace(req, max_nodes=nodes, gpu_budget=p.advice.layout.gpus))
    assert followed.fits
    assert followed.chosen.layout == p.advice.layout
    # The JSON says it as data (h27: a script had to parse the message).
    advice = plan_to_dict(p)["advice"]
    assert advice["budget_gpus"] == advice["layout"]["gpus"] == p.advice.layout.gpus
    followed = plan(
        dataclasses.replace(
            req, max_nodes=advice["layout"]["nodes"], gpu_budget=advice["budget_gpus"]
        )
    )
    assert followed.fits


def test_layout_advice_within_the_gpu_budget_does_not_name_it() -> None:
    req = PlanRequest(
        model="pro",
        max_model_len=1_048_576,
        gpu_types=("h200-141gb",),
        gpus_per_node=2,
        max_nodes=1,
        gpu_budget=64,
    )
    p = plan(req)
    said = next(w.message for w in p.warnings if w.code is Code.NO_FEASIBLE_LAYOUT)
    assert "spec.gpu.budget" not in said
    advice = plan_to_dict(p)["advice"]
    assert advice["layout"] is not None
    assert advice["budget_gpus"] is None
    # Without a budget there is nothing to raise either.
    unbounded = plan_to_dict(plan(dataclasses.replace(req, gpu_budget=None)))["advice"]
    assert unbounded["layout"] is not None
    assert unbounded["budget_gpus"] is None
