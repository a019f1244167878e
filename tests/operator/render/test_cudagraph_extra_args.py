"""extraArgs that change what vLLM captures in CUDA graphs are counted as vLLM captures them.

`_vllm_sizes` restates `VllmConfig._set_cudagraph_sizes` (vllm-project/vllm vllm/config/vllm.py
at 000fc94b, sequence parallelism off, no dynamic speculation) with its `performance_mode`
branch: `interactivity` captures every size from 1 to min(cap, 32) where the other modes capture
1, 2, 4 and every 8. vLLM captures nothing with `--enforce-eager` or `cudagraph_mode` NONE
(`VllmConfig.__post_init__` sets the sizes to [] and `Worker.determine_available_memory` profiles
no graph memory), and `--optimization-level=0` makes NONE the default mode
(`OPTIMIZATION_LEVEL_00`, applied only where the compilation config leaves it unset).
"""

from __future__ import annotations

from typing import Any

import pytest

from dsv4_operator.api import InvalidSpecError, parse_spec
from dsv4_operator.planning import Code, PlanRequest, engine_args, plan
from dsv4_operator.planning.engine import VLLM_0_33
from dsv4_operator.planning.from_spec import request_from_spec
from dsv4_operator.render.runtime_args import runtime_args

from .test_cudagraph_vllm_default import _tier, _vllm_sizes

_BASE: dict[str, Any] = {"model": "flash", "gpu": {"types": ["h200-141gb"], "maxNodes": 1}}
_MIB8 = VLLM_0_33.cuda_graph_bytes_per_size


def _plan(extra: list[str], **spec: Any) -> Any:
    parsed = parse_spec({**_BASE, **spec, "engine": {"extraArgs": extra}})
    return parsed, plan(request_from_spec(parsed))


def test_interactivity_counts_every_size_up_to_32() -> None:
    """16 sequences: the plan pins 32 tokens; interactivity then captures 1, 2, 3, ... 32 (32
    graphs), not 1, 2, 4, 8, 16, 24, 32 (7): 200 MiB per GPU more than balanced counts."""
    _, balanced = _plan([], maxNumSeqs=16)
    spec, fine = _plan(["--performance-mode=interactivity"], maxNumSeqs=16)
    assert spec.engine.performance_mode == "interactivity"
    assert balanced.chosen.memory.cuda_graph_bytes == 7 * _MIB8
    assert fine.chosen.memory.cuda_graph_bytes == 32 * _MIB8
    assert fine.chosen.max_cudagraph_capture_size == 32
    assert "--max-cudagraph-capture-size=32" in runtime_args(spec, fine)


@pytest.mark.parametrize(
    ("seqs", "mnbt", "explicit"),
    [
        (s, m, e)
        for s in (1, 5, 13, 200, 1024)
        for m in (6, 64, 100, 300, 8192)
        for e in (None, 3, 13, 29, 40, 300, 2048)
        if s <= m
    ],
)
def test_interactivity_is_counted_as_vllm_captures_it(
    seqs: int, mnbt: int, explicit: int | None
) -> None:
    """Without speculation, with or without a user's cap: the plan's pin makes vLLM capture its
    own interactivity default, which the plan counts (exactly while the cap is at most 256)."""
    tier = _tier()
    ceiling = tier.max_cudagraph_capture_size
    default = _vllm_sizes(seqs, 0, mnbt, ceiling, explicit, interactivity=True)
    pin = VLLM_0_33.max_cudagraph_capture_size(
        seqs, tier, max_num_batched_tokens=mnbt, pinned=explicit, interactivity=True
    )
    assert pin == default[-1]
    if explicit is None:  # the operator passes its pin; vLLM must capture the same list
        assert _vllm_sizes(seqs, 0, mnbt, ceiling, pin, interactivity=True) == default
    counted = VLLM_0_33.cudagraph_capture_sizes(
        seqs, tier, max_num_batched_tokens=mnbt, pinned=explicit, interactivity=True
    )
    assert counted >= len(default)
    if pin <= 256:
        assert counted == len(default)


@pytest.mark.parametrize(
    ("seqs", "k", "mnbt"),
    [(s, k, m) for s, k in ((1, 4), (5, 1), (13, 2), (200, 3)) for m in (64, 300, 8192) if s <= m],
)
def test_with_speculation_the_pinned_list_keeps_interactivity(seqs: int, k: int, mnbt: int) -> None:
    """With MTP the operator passes a list, which vLLM takes as given in every mode: the list
    must be vLLM's own interactivity default, fine sizes included, and all of it is counted."""
    tier = _tier()
    default = _vllm_sizes(seqs, k, mnbt, tier.max_cudagraph_capture_size, interactivity=True)
    listed = VLLM_0_33.speculative_capture_list(
        seqs, tier, k, max_num_batched_tokens=mnbt, interactivity=True
    )
    assert list(listed) == default
    assert _vllm_sizes(seqs, k, mnbt, 0, listed=listed, interactivity=True) == default
    counted = VLLM_0_33.cudagraph_capture_sizes(
        seqs, tier, k, max_num_batched_tokens=mnbt, interactivity=True
    )
    assert counted >= len(default)


def test_with_speculation_the_rendered_list_has_the_fine_sizes() -> None:
    spec, p = _plan(
        ["--performance-mode=interactivity"],
        maxNumSeqs=4,
        speculativeDecoding={"numSpeculativeTokens": 1},
    )
    # cap 4 x 2 x 2 = 16: every size 1..16 (interactivity), the decode sizes 2, 4, 8 among them
    assert p.chosen.cudagraph_capture_sizes == tuple(range(1, 17))
    assert engine_args(p)["cudagraph_capture_sizes"] == list(range(1, 17))
    args = runtime_args(spec, p)
    at = args.index("--cudagraph-capture-sizes")
    assert args[at + 1 : at + 17] == [str(s) for s in range(1, 17)]
    assert p.chosen.memory.cuda_graph_bytes >= 16 * _MIB8


def test_throughput_mode_captures_what_balanced_does() -> None:
    """`throughput` doubles only vLLM's default max-num-seqs and max-num-batched-tokens
    (`EngineArgs._set_default_max_num_seqs_and_batched_tokens_args`), and the runtime always
    passes both; `_set_cudagraph_sizes` reads only `interactivity`."""
    _, balanced = _plan([])
    spec, throughput = _plan(["--performance-mode=throughput"])
    assert spec.engine.performance_mode == "throughput"
    assert throughput.chosen.memory.cuda_graph_bytes == balanced.chosen.memory.cuda_graph_bytes
    assert throughput.chosen.max_num_seqs == balanced.chosen.max_num_seqs


@pytest.mark.parametrize(
    "extra",
    [
        ["--enforce-eager"],
        ["--no-enforce-eager", "--enforce-eager"],
        ['--compilation-config={"cudagraph_mode":"NONE"}'],
        ['--compilation-config={"mode":0,"cudagraph_mode":"none"}'],
        ['--compilation-config={"cudagraph_mode":0}'],
        ["--optimization-level=0"],
        ['--compilation-config={"mode":0}', "--optimization-level=0"],
        ['--compilation-config={"cudagraph_mode":"PIECEWISE"}', "--enforce-eager"],
    ],
)
def test_extra_args_without_cuda_graphs_count_no_graph_memory(extra: list[str]) -> None:
    spec, p = _plan(extra)
    assert not spec.engine.cuda_graphs
    assert p.chosen.memory.cuda_graph_bytes == 0
    assert Code.CUDA_GRAPHS_OFF in [w.code for w in p.warnings]
    # The pin still goes to vLLM, which drops it with the graphs (no error: it sets the
    # sizes to [] itself); the user's flags come first, unchanged.
    args = runtime_args(spec, p)
    assert args[args.index("--") + 1 :][: len(extra)] == extra


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--enforce-eager", "--no-enforce-eager"],
        ['--compilation-config={"cudagraph_mode":"FULL_DECODE_ONLY"}'],
        ['--compilation-config={"mode":0,"cudagraph_mode":"FULL_DECODE_ONLY"}'],
        ['--compilation-config={"cudagraph_mode":"NONE"}', "--compilation-config={}"],
        ["--optimization-level=0", '--compilation-config={"cudagraph_mode":"PIECEWISE"}'],
        ["--optimization-level=0", "--optimization-level=3"],
        ["--optimization-level=1"],
        ['--compilation-config={"cudagraph_mode":"FULL"}'],
    ],
)
def test_extra_args_with_cuda_graphs_count_them(extra: list[str]) -> None:
    """A mode other than NONE captures the same sizes (FULL_AND_PIECEWISE, vLLM's default at
    -O2, captures the most graphs of them); a user's cudagraph_mode outranks -O0's default; the
    last of a repeated flag wins."""
    spec, p = _plan(extra)
    _, default = _plan([])
    assert spec.engine.cuda_graphs
    assert p.chosen.memory.cuda_graph_bytes == default.chosen.memory.cuda_graph_bytes > 0
    assert Code.CUDA_GRAPHS_OFF not in [w.code for w in p.warnings]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("--performance-mode=fast", "balanced, interactivity or throughput"),
        ("--performance-mode", "balanced, interactivity or throughput"),
        ("--enforce-eager=true", "takes no value"),
        ("--no-enforce-eager=1", "takes no value"),
        ("--perf=interactivity", "abbreviates --performance-mode"),
        ("--enforce=1", "abbreviates --enforce-eager"),
        ("--optimization=0", "abbreviates --optimization-level"),
        ('--compilation={"cudagraph_capture_sizes":[8]}', "abbreviates --compilation-config"),
        ('--compilation-c={"cudagraph_mode":"NONE"}', "abbreviates --compilation-config"),
        ('--compilation-c={"max_cudagraph_capture_size":8}', "abbreviates --compilation-config"),
    ],
)
def test_graph_settings_the_plan_cannot_read_are_refused(arg: str, message: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec({**_BASE, "engine": {"extraArgs": [arg]}})
    assert "spec.engine.extraArgs" in str(caught.value)
    assert message in str(caught.value)


def test_the_planner_refuses_an_unknown_performance_mode() -> None:
    from dsv4_operator.planning import PlanningError

    with pytest.raises(PlanningError, match="performance_mode"):
        plan(PlanRequest(gpu_types=("h200-141gb",), performance_mode="fast"))
