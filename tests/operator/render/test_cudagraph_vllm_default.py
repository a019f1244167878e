"""The pinned cap or list is exactly vLLM's own default capture list, whatever the sizes.

`_vllm_default` restates `VllmConfig._set_cudagraph_sizes` (vllm-project/vllm
vllm/config/vllm.py at 000fc94b, balanced performance mode, sequence parallelism off, no
dynamic speculation) line by line; what vLLM then captures with the operator's pinned
`--max-cudagraph-capture-size` follows the same function with the cap given. The pin must
change nothing: the same sizes, and the plan counts at least as many graphs as vLLM captures.
"""

from __future__ import annotations

import pytest

from dsv4_operator.planning.engine import VLLM_0_33, SchedulingDefaults
from dsv4_operator.planning.hardware import GPUS


def _grid(cap: int, interactivity: bool = False) -> list[int]:
    if interactivity:
        sizes = list(range(1, min(cap, 32) + 1))
    else:
        sizes = [i for i in (1, 2, 4) if i <= cap]
    if cap >= 8:
        sizes += list(range(8, min(cap + 1, 256), 8))
    if cap >= 256:
        sizes += list(range(256, cap + 1, 16))
    return sizes


def _vllm_sizes(
    max_num_seqs: int,
    k: int,
    mnbt: int,
    ceiling: int,
    explicit: int | None = None,
    *,
    interactivity: bool = False,
    listed: tuple[int, ...] | None = None,
) -> list[int]:
    """vLLM's capture sizes (`explicit`: `--max-cudagraph-capture-size`, `listed`: a
    `--cudagraph-capture-sizes` list, which vLLM takes as given whatever the mode)."""
    if listed is not None:
        return sorted({s for s in listed if s <= mnbt})
    cap = explicit
    decode: list[int] = []
    if cap is None:
        query = 1 + k
        cap = min(max_num_seqs * query * 2, ceiling)
        if query > 1:
            most = min(max_num_seqs, ceiling)
            counts = sorted({*_grid(most), most})
            decode = sorted({n * query for n in counts if n * query <= cap})
    cap = min(mnbt, cap)
    sizes = _grid(cap, interactivity)
    if mnbt <= cap and mnbt not in sizes:
        sizes.append(mnbt)
    sizes += [d for d in decode if d <= mnbt]
    return sorted(set(sizes))


def _tier() -> SchedulingDefaults:
    h200 = GPUS["h200-141gb"]
    return VLLM_0_33.scheduling_defaults(h200.cuda_total_bytes, h200.name, h200.arch)


@pytest.mark.parametrize(
    ("seqs", "mnbt"),
    # vLLM refuses max-num-seqs above max-num-batched-tokens: only pairs it starts with.
    [
        (s, m)
        for s in (1, 5, 13, 200, 1024)
        for m in (64, 100, 257, 260, 300, 511, 512, 8192)
        if s <= m
    ],
)
def test_the_bare_cap_captures_vllms_default_list(seqs: int, mnbt: int) -> None:
    """Without speculation: pinning the plan's cap makes vLLM capture its default list.

    vLLM appends max-num-batched-tokens when it is within the cap ("ensure max_num_tokens is
    captured"), so a budget of 300 tokens is captured at 300 by default; a pin rounded down to
    288 would drop that graph, the one every full prefill chunk uses."""
    tier = _tier()
    ceiling = tier.max_cudagraph_capture_size
    default = _vllm_sizes(seqs, 0, mnbt, ceiling)
    pin = VLLM_0_33.max_cudagraph_capture_size(seqs, tier, max_num_batched_tokens=mnbt)
    assert _vllm_sizes(seqs, 0, mnbt, ceiling, explicit=pin) == default
    counted = VLLM_0_33.cudagraph_capture_sizes(seqs, tier, max_num_batched_tokens=mnbt)
    assert counted >= len(default)


@pytest.mark.parametrize(
    ("seqs", "k", "mnbt"),
    [
        (s, k, m)
        for s, k in ((1, 4), (5, 1), (13, 2), (200, 3), (512, 2))
        for m in (64, 100, 300, 8192)
        if s <= m
    ],
)
def test_the_speculative_list_is_vllms_default_list(seqs: int, k: int, mnbt: int) -> None:
    tier = _tier()
    default = _vllm_sizes(seqs, k, mnbt, tier.max_cudagraph_capture_size)
    listed = VLLM_0_33.speculative_capture_list(seqs, tier, k, max_num_batched_tokens=mnbt)
    assert list(listed) == default
    counted = VLLM_0_33.cudagraph_capture_sizes(seqs, tier, k, max_num_batched_tokens=mnbt)
    assert counted >= len(default)


@pytest.mark.parametrize(("pinned", "mnbt"), [(2048, 300), (300, 8192), (100, 100), (97, 8192)])
def test_a_users_cap_is_counted_as_vllm_captures_it(pinned: int, mnbt: int) -> None:
    tier = _tier()
    sizes = _vllm_sizes(4, 0, mnbt, tier.max_cudagraph_capture_size, explicit=pinned)
    cap = VLLM_0_33.max_cudagraph_capture_size(4, tier, max_num_batched_tokens=mnbt, pinned=pinned)
    assert cap == sizes[-1]
    counted = VLLM_0_33.cudagraph_capture_sizes(4, tier, max_num_batched_tokens=mnbt, pinned=pinned)
    assert counted >= len(sizes)
