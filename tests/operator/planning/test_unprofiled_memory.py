"""Memory vLLM's profiling run does not see: the sampler's runtime peak and NCCL buffer settings.

vLLM sizes its KV cache from gpu-memory-utilization minus what it measured while profiling;
what the engine allocates later beyond that peak lands in the (1 - utilization) headroom, where
the plan keeps the CUDA context and the NCCL buffers held at start-up.
"""

import dataclasses

import pytest

from dsv4_operator.planning import Code, PlanningError, PlanRequest, plan
from dsv4_operator.planning.evaluate import startup_reserve_bytes
from dsv4_operator.planning.hardware import GPUS
from dsv4_operator.planning.memory import activation_bytes
from dsv4_operator.planning.models import MODELS

VOCAB = 129_280  # DeepSeek-V4 vocab_size (shared/docs/deepseek-v4-facts.md)
CONTEXT, FIRST, GROUP = 651_034_624, 880_803_840, 509_607_936  # benchmarks/reports, 2 x H200

_BASE = PlanRequest(
    model="flash",
    gpu_types=("h200-141gb",),
    gpus_per_node=8,
    max_nodes=1,
    tensor_parallel=1,
    data_parallel=8,
    expert_parallel=True,
    max_model_len=65_536,
    max_num_seqs=1024,
)


def _forward_peak(req: PlanRequest) -> int:
    """The plan's forward-pass activation peak: its activation count less its sampler term."""
    p = plan(req)
    full = activation_bytes(
        MODELS[req.model],
        p.chosen.layout,
        req.engine,
        max_num_batched_tokens=8192,
        max_num_seqs=req.max_num_seqs or 0,
        max_model_len=req.max_model_len or 0,
    )
    return full - (req.max_num_seqs or 0) * VOCAB * 4 * req.engine.sampler_copies


def test_the_sampler_peak_with_mtp_is_kept_outside_the_budget() -> None:
    """With MTP vLLM samples 1 + k logits rows per sequence (the target's rows for rejection
    sampling) where its profiling run sampled one per sequence without top-k/top-p or logprobs
    (Model Runner V2 `_dummy_sampler_run`: "the sampler may skip top_k, top_p, and logprobs").
    At 1,024 sequences and k = 1 the runtime peak (2,048 rows x 129,280 x 30 B: logits, their
    FP32 copy and top-p's sort) is above the forward peak vLLM measured, by about 1.4 GB that
    come out of the headroom: 0.98 on 8 H200 left 3.00 GB there for 2.55 GB at start-up."""
    mtp = dataclasses.replace(_BASE, speculative_tokens=1, gpu_memory_utilization=0.98)
    rows = 1024 * 2
    runtime = rows * VOCAB * 30 + rows * (20 + 1) * 24  # + vLLM's default 20 logprobs
    profiled = max(_forward_peak(mtp), 1024 * VOCAB * 6)
    unprofiled = runtime - profiled
    assert 1.3e9 < unprofiled < 1.6e9
    p = plan(mtp)
    assert not p.fits
    assert p.chosen.memory.unprofiled_bytes == unprofiled
    reserve = startup_reserve_bytes(mtp.engine, GPUS["h200-141gb"], p.chosen.layout)
    assert reserve == CONTEXT + FIRST + 2 * GROUP
    total = GPUS["h200-141gb"].cuda_total_bytes
    most = int((total - reserve - unprofiled) * 100 / total) / 100
    assert most == 0.97
    startup = next(w for w in p.warnings if w.code is Code.SAMPLER_PEAK_OUTSIDE_BUDGET)
    assert f"at most {most}" in startup.message
    assert f"{unprofiled:,} B" in startup.message
    assert "sampler" in startup.message
    assert plan(dataclasses.replace(mtp, gpu_memory_utilization=0.97)).fits


def test_without_mtp_the_forward_peak_covers_the_sampler() -> None:
    """One row per sequence: 1,024 x 129,280 x 30 B is under the 6.5 GB forward peak vLLM
    measures, so nothing lands outside the budget and 0.98 still plans."""
    p = plan(dataclasses.replace(_BASE, gpu_memory_utilization=0.98))
    assert p.fits
    assert p.chosen.memory.unprofiled_bytes == 0
    assert _forward_peak(_BASE) > 1024 * VOCAB * 30


def test_max_logprobs_is_counted_and_checked() -> None:
    """`--max-logprobs=N`: Model Runner V2 returns the top N + 1 (token ids int64, logprobs
    fp32; torch.topk's values and indices) per row without materialising the full vocabulary
    (`compute_topk_logprobs`), 24 B per row per logprob; N from 0 to 1,024 is counted."""
    mtp = dataclasses.replace(_BASE, speculative_tokens=1, gpu_memory_utilization=0.97)
    rows = 2048
    base = plan(mtp).chosen.memory.unprofiled_bytes
    wide = plan(dataclasses.replace(mtp, max_logprobs=1024)).chosen.memory.unprofiled_bytes
    assert wide - base == rows * (1024 - 20) * 24
    with pytest.raises(PlanningError, match=r"max_logprobs: -1 .*0\.\.1,024"):
        plan(dataclasses.replace(mtp, max_logprobs=-1))


def test_nccl_figures_scale_with_the_protocol_buffer_sizes() -> None:
    """The NCCL figures (start-up world and group communicators, the lazily connected
    allowance) were measured at NCCL's default buffers, 9,633,792 B per connection (Simple
    4 MiB + LL 512 KiB + LL128 4,800 KiB); NCCL_BUFFSIZE=16 MiB makes them 22,216,704 B, and the
    plan scales the terms by that ratio (rounded up), keeping today's figures at the
    defaults and below them."""
    h200 = GPUS["h200-141gb"]
    default, big = 9_633_792, 16_777_216 + 524_288 + 4_915_200

    def scaled(x: int) -> int:
        return -(-x * big // default)

    tp8 = dataclasses.replace(
        _BASE, tensor_parallel=8, data_parallel=1, expert_parallel=False, max_num_seqs=64
    )
    lay = plan(tp8).chosen.layout
    assert startup_reserve_bytes(tp8.engine, h200, lay) == CONTEXT + FIRST + GROUP
    wide = dataclasses.replace(tp8, nccl_buffer_bytes=big)
    assert startup_reserve_bytes(wide.engine, h200, lay, nccl_buffer_bytes=big) == (
        CONTEXT + scaled(FIRST) + scaled(GROUP)
    )
    nccl = tp8.engine.nccl_bytes
    assert plan(wide).chosen.memory.overhead_bytes - plan(tp8).chosen.memory.overhead_bytes == (
        scaled(nccl) - nccl
    )
    small = dataclasses.replace(tp8, nccl_buffer_bytes=default // 2)
    assert plan(small).chosen.memory == plan(tp8).chosen.memory
    # 0.98 left 3.00 GB outside the budget for 2.04 GB held at start-up; with 16 MiB buffers
    # NCCL's start-up buffers grow from 1.39 GB to 3.21 GB, so 0.98 no longer plans.
    at_98 = plan(dataclasses.replace(wide, gpu_memory_utilization=0.98))
    assert not at_98.fits
    assert any(w.code is Code.STARTUP_MEMORY_RESERVE for w in at_98.warnings)
    with pytest.raises(PlanningError, match="nccl_buffer_bytes"):
        plan(dataclasses.replace(tp8, nccl_buffer_bytes=0))


def test_the_spec_settings_reach_the_plan() -> None:
    """`--max-logprobs` in spec.engine.extraArgs and NCCL buffer sizes in spec.engine.env are
    what the plan counts; each is named by its spec field when the planner refuses it."""
    from dsv4_operator.api import parse_spec
    from dsv4_operator.planning.from_spec import request_from_spec, spec_path

    spec = parse_spec(
        {
            "model": "flash",
            "gpu": {"types": ["h200-141gb"]},
            "engine": {
                "extraArgs": ["--max-logprobs=64"],
                "env": [{"name": "NCCL_BUFFSIZE", "value": "8388608"}],
            },
        }
    )
    req = request_from_spec(spec)
    assert req.max_logprobs == 64
    assert req.nccl_buffer_bytes == 8_388_608 + 524_288 + 4_915_200
    assert spec_path("max_logprobs") == "spec.engine.extraArgs"
    assert spec_path("nccl_buffer_bytes") == "spec.engine.env"
