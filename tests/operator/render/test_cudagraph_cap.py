"""The CUDA-graph capture cap the plan counts is the one vLLM runs with.

vLLM's default cap (`VllmConfig._set_cudagraph_sizes`, vllm/config/vllm.py) is
min(max-num-seqs x (1 + k) x 2, 512; 1024 on compute capability 10.x since PR #49390), then at
most max-num-batched-tokens; an explicit `--max-cudagraph-capture-size` replaces it (and the
max-num-seqs bound). The renderer pins the plan's value so another vLLM default cannot change
the graph memory under the plan; a user's own value is counted instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dsv4_operator.api import InvalidSpecError, parse_spec
from dsv4_operator.planning import PlanningError, PlanRequest, engine_args, plan
from dsv4_operator.planning.engine import VLLM_0_33
from dsv4_operator.planning.from_spec import request_from_spec
from dsv4_operator.planning.hardware import GPUS
from dsv4_operator.render.runtime_args import runtime_args

FLAG = "--max-cudagraph-capture-size"
_BASE: dict[str, Any] = {"model": "flash", "gpu": {"types": ["h200-141gb"], "maxNodes": 1}}
_REPO = Path(__file__).resolve().parents[3]
_FLAGS_FILE = (
    Path(os.environ.get("DSV4_FIXTURES", _REPO.parent / "shared" / "fixtures"))
    / "vllm"
    / "vllm-0.33.0-serve-flags.json"
)


def _extra(args: list[str]) -> list[str]:
    return args[args.index("--") + 1 :] if "--" in args else []


def _cap_entries(args: list[str]) -> list[str]:
    return [a for a in _extra(args) if a.split("=", 1)[0] == FLAG]


def test_the_flag_is_a_vllm_0_33_option_taking_one_integer() -> None:
    if not _FLAGS_FILE.is_file():
        pytest.skip(f"vLLM flag list fixture missing: {_FLAGS_FILE} (set DSV4_FIXTURES)")
    flags = json.loads(_FLAGS_FILE.read_text())["flags"]
    entry = next(f for f in flags if FLAG in f["options"])
    assert (entry["dest"], entry["type"], entry["nargs"]) == (
        "max_cudagraph_capture_size",
        "int",
        None,
    )


def test_the_cap_follows_vllms_default_and_lands_on_its_capture_grid() -> None:
    h200 = GPUS["h200-141gb"]
    b200 = GPUS["b200-180gb"]
    hopper = VLLM_0_33.scheduling_defaults(h200.cuda_total_bytes, h200.name, h200.arch)
    blackwell = VLLM_0_33.scheduling_defaults(b200.cuda_total_bytes, b200.name, b200.arch)
    cap = VLLM_0_33.max_cudagraph_capture_size
    assert cap(1024, hopper) == 512
    assert cap(1024, blackwell) == 1024
    assert cap(16, hopper, 1) == 64  # 16 x 2 tokens x 2
    # 13 x 2 x 2 = 52: vLLM captures 1, 2, 4, 8 ... 48 (every 8 below 256), so 48 is the cap.
    assert cap(13, hopper, 1) == 48
    # At most max-num-batched-tokens (vLLM: min(max_num_tokens, cap)), which vLLM captures
    # itself when within the cap: 300, off the 16-grid.
    assert cap(1024, hopper, max_num_batched_tokens=300) == 300
    # A user's cap replaces the default and its max-num-seqs bound.
    assert cap(4, hopper, pinned=2048, max_num_batched_tokens=8192) == 2048
    assert VLLM_0_33.cudagraph_capture_sizes(4, hopper, pinned=2048) == 3 + 2048 // 8


def test_the_renderer_pins_the_cap_the_plan_counted() -> None:
    spec = parse_spec({**_BASE, "maxNumSeqs": 16})
    p = plan(request_from_spec(spec))
    assert p.fits
    assert p.chosen.max_cudagraph_capture_size == 32  # 16 x 2, no speculation
    assert engine_args(p)["max_cudagraph_capture_size"] == 32
    assert _cap_entries(runtime_args(spec, p)) == [f"{FLAG}=32"]
    graphs = VLLM_0_33.cudagraph_capture_sizes(16, _tier())
    assert p.chosen.memory.cuda_graph_bytes == graphs * VLLM_0_33.cuda_graph_bytes_per_size


def test_with_speculation_the_renderer_pins_vllms_whole_default_list() -> None:
    """A bare cap drops vLLM's uniform-decode sizes n x (1 + k) (vLLM issue #54933: the verify
    step then runs eager), so with MTP the plan passes the default list: with one sequence and
    4 draft tokens that is 1, 2, 4, 5 (one request's verify step) and 8."""
    spec = parse_spec(
        {**_BASE, "maxNumSeqs": 1, "speculativeDecoding": {"numSpeculativeTokens": 4}}
    )
    p = plan(request_from_spec(spec))
    assert p.chosen.cudagraph_capture_sizes == (1, 2, 4, 5, 8)
    assert p.chosen.max_cudagraph_capture_size == 8  # vLLM's final cap: the list's last
    extra = _extra(runtime_args(spec, p))
    assert extra[-6:] == ["--cudagraph-capture-sizes", "1", "2", "4", "5", "8"]
    assert _cap_entries(runtime_args(spec, p)) == []
    assert engine_args(p)["cudagraph_capture_sizes"] == [1, 2, 4, 5, 8]
    assert p.chosen.memory.cuda_graph_bytes >= 5 * VLLM_0_33.cuda_graph_bytes_per_size
    # 5 sequences, 1 draft token: the full verify batch is 10 tokens, off the 8-grid.
    five = VLLM_0_33.speculative_capture_list(5, _tier(), 1, max_num_batched_tokens=8192)
    assert five == (1, 2, 4, 8, 10, 16)
    # max-num-batched-tokens bounds the list and, within the cap, is captured itself.
    bounded = VLLM_0_33.speculative_capture_list(512, _tier(), 2, max_num_batched_tokens=300)
    assert bounded[-1] == 300
    assert {3, 6, 12, 264} <= set(bounded)  # 264 = 88 x 3: off the 16-grid above 256
    # Counted at least as many graphs as listed.
    counted = VLLM_0_33.cudagraph_capture_sizes(512, _tier(), 2, max_num_batched_tokens=300)
    assert counted >= len(bounded)


def _tier() -> Any:
    h200 = GPUS["h200-141gb"]
    return VLLM_0_33.scheduling_defaults(h200.cuda_total_bytes, h200.name, h200.arch)


def test_a_users_cap_is_counted_and_passed_once() -> None:
    """`--max-cudagraph-capture-size=2048` in extraArgs: vLLM captures up to 2,048 tokens (not
    the plan's 512), 259 graph sizes instead of 67; the plan counted 67."""
    spec = parse_spec({**_BASE, "engine": {"extraArgs": [f"{FLAG}=2048"]}})
    assert spec.engine.max_cudagraph_capture_size == 2048
    request = request_from_spec(spec)
    assert request.max_cudagraph_capture_size == 2048
    p = plan(request)
    assert p.chosen.max_cudagraph_capture_size == 2048
    sizes = 3 + 2048 // 8
    assert p.chosen.memory.cuda_graph_bytes == sizes * VLLM_0_33.cuda_graph_bytes_per_size
    default = plan(request_from_spec(parse_spec(_BASE)))
    assert default.chosen.memory.cuda_graph_bytes < p.chosen.memory.cuda_graph_bytes
    assert _cap_entries(runtime_args(spec, p)) == [f"{FLAG}=2048"]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        (f"{FLAG}=0", "1 to 1,048,576"),
        (f"{FLAG}=abc", "1 to 1,048,576"),
        (FLAG, "1 to 1,048,576"),
        ("--cudagraph-capture-sizes=8", FLAG),
        ('--compilation-config={"max_cudagraph_capture_size":64}', FLAG),
        ('--compilation-config={"cudagraph_capture_sizes":[1,2,4]}', FLAG),
        ("--max-cudagraph=64", "abbreviates --max-cudagraph-capture-size"),
        ("--cudagraph-capture-size=8", "abbreviates --cudagraph-capture-sizes"),
    ],
)
def test_capture_settings_the_plan_cannot_count_are_refused(arg: str, message: str) -> None:
    with pytest.raises(InvalidSpecError, match=r"max-cudagraph|cudagraph-capture") as caught:
        parse_spec({**_BASE, "engine": {"extraArgs": [arg]}})
    assert message in str(caught.value)


def test_other_compilation_settings_pass() -> None:
    arg = '--compilation-config={"cudagraph_mode":"PIECEWISE"}'
    spec = parse_spec({**_BASE, "engine": {"extraArgs": [arg]}})
    assert spec.engine.max_cudagraph_capture_size is None
    assert arg in _extra(runtime_args(spec, plan(request_from_spec(spec))))


def test_the_planner_refuses_a_cap_below_one() -> None:
    with pytest.raises(PlanningError, match="max_cudagraph_capture_size"):
        plan(PlanRequest(gpu_types=("h200-141gb",), max_cudagraph_capture_size=0))


@pytest.mark.parametrize(
    "arg",
    [
        # vLLM 0.33.0 CompilationConfig has decoder_replay_cudagraph_capture_sizes (its
        # --compilation-config default in the fixture's flag list): another setting.
        '--compilation-config={"decoder_replay_cudagraph_capture_sizes":[8,16]}',
        # compile_sizes may name the capture sizes as a value (Inductor compiles for them).
        '--compilation-config={"compile_sizes":["cudagraph_capture_sizes"]}',
    ],
)
def test_compilation_settings_that_only_mention_capture_sizes_pass(arg: str) -> None:
    spec = parse_spec({**_BASE, "engine": {"extraArgs": [arg]}})
    assert arg in _extra(runtime_args(spec, plan(request_from_spec(spec))))
