"""Per-GPU budget arithmetic and its calibration against published measurements."""

import pytest

from dsv4_operator.planning.engine import VLLM_0_33, parse_version
from dsv4_operator.planning.hardware import GPUS
from dsv4_operator.planning.memory import Layout, activation_bytes, budget_bytes, cuda_graph_bytes
from dsv4_operator.planning.models import PRO

GIB = 2**30


@pytest.mark.parametrize(("mnbt", "published_gib"), [(8192, 8.9), (16384, 11.44)])
def test_activation_peak_reproduces_the_mi355x_recipe(mnbt: int, published_gib: float) -> None:
    # Pro TP8 on MI355X, --max-num-seqs 512: peak activation 8.9 GiB at mnbt 8192 and 11.44 GiB at
    # 16384 (vLLM recipe, facts §5.2).
    tp8 = Layout(
        nodes=1, gpus_per_node=8, tensor_parallel=8, data_parallel=1, expert_parallel=False
    )
    got = activation_bytes(
        PRO,
        tp8,
        VLLM_0_33,
        max_num_batched_tokens=mnbt,
        max_num_seqs=512,
        max_model_len=1_048_576,
    )
    assert got / GIB == pytest.approx(published_gib, rel=0.05)


def test_budget_is_exact_decimal_arithmetic() -> None:
    h100 = GPUS["h100-80gb"].memory_bytes
    assert budget_bytes(h100, 0.9) == h100 * 9 // 10
    assert budget_bytes(1000, 0.333) == 333


def test_scheduling_tiers_follow_vllm() -> None:
    h200, a100, l40s, r4090 = (
        GPUS[n] for n in ("h200-141gb", "a100-80gb", "l40s-48gb", "rtx-4090-24gb")
    )
    assert (
        VLLM_0_33.scheduling_defaults(h200.memory_bytes, h200.name).max_num_batched_tokens == 8192
    )
    assert (
        VLLM_0_33.scheduling_defaults(a100.memory_bytes, a100.name).max_num_batched_tokens == 2048
    )
    assert (
        VLLM_0_33.scheduling_defaults(l40s.memory_bytes, l40s.name).max_num_batched_tokens == 4096
    )
    assert VLLM_0_33.scheduling_defaults(r4090.memory_bytes, r4090.name).max_num_seqs == 256


def test_cuda_graph_estimate_grows_with_capture_sizes() -> None:
    tier = VLLM_0_33.scheduling_defaults(GPUS["h200-141gb"].memory_bytes, "h200-141gb")
    assert cuda_graph_bytes(VLLM_0_33, 1, tier) < cuda_graph_bytes(VLLM_0_33, 256, tier)
    # 1, 2, 4 and every 8 up to 512: 67 sizes.
    assert VLLM_0_33.cudagraph_capture_sizes(1024, tier) == 67
    # MTP: graphs are sized in tokens, 1 + k per decoding sequence (vLLM decode_query_len).
    assert VLLM_0_33.cudagraph_capture_sizes(64, tier) == 3 + 128 // 8
    assert VLLM_0_33.cudagraph_capture_sizes(64, tier, speculative_tokens=3) == 3 + 512 // 8
    assert cuda_graph_bytes(VLLM_0_33, 64, tier, 3) == 67 * VLLM_0_33.cuda_graph_bytes_per_size


def test_data_centre_blackwell_captures_cuda_graphs_up_to_1024() -> None:
    """Property-test review (F8): vLLM PR #49390 raised the capture cap from 512 to 1024 on
    compute capability 10.x; the planner counted B200/GB200 graphs up to 512 only."""
    for name in ("b200-180gb", "gb200-186gb"):
        gpu = GPUS[name]
        tier = VLLM_0_33.scheduling_defaults(gpu.cuda_total_bytes, gpu.name, gpu.arch)
        assert tier.max_cudagraph_capture_size == 1024
        assert VLLM_0_33.cudagraph_capture_sizes(1024, tier) == 3 + 1024 // 8
        # The max-num-seqs x 2 bound still applies.
        assert VLLM_0_33.cudagraph_capture_sizes(200, tier) == 3 + 400 // 8
    for name in ("h200-141gb", "rtx-5090-32gb", "mi355x-288gb"):  # sm90, sm120 (12.x), AMD
        gpu = GPUS[name]
        tier = VLLM_0_33.scheduling_defaults(gpu.cuda_total_bytes, gpu.name, gpu.arch)
        assert tier.max_cudagraph_capture_size <= 512


def test_parse_version() -> None:
    assert parse_version("0.20.0rc1+cu130") == (0, 20, 0)
    assert parse_version("4.51.1") < parse_version("4.52")
    with pytest.raises(ValueError, match="not a version"):
        parse_version("latest")


@pytest.mark.parametrize("speculative_tokens", [0, 1])
def test_the_mtp_hidden_buffer_is_counted_with_or_without_speculation(
    speculative_tokens: int,
) -> None:
    # vLLM's DeepseekV4Model allocates _mtp_hidden_buffer [mnbt, 4 x H] bf16 at init on the last
    # PP rank whether or not a drafter runs (S1 @023da1fc): Pro, mnbt 8192 -> 469,762,048 B.
    from dsv4_operator.planning import PlanRequest, plan
    from dsv4_operator.planning.memory import mtp_hidden_buffer_bytes

    assert mtp_hidden_buffer_bytes(PRO, 8192) == 8192 * 4 * 7168 * 2 == 469_762_048
    p = plan(
        PlanRequest(
            model="pro",
            gpu_types=("h200-141gb",),
            gpus_per_node=8,
            max_nodes=1,
            max_model_len=131_072,
            max_num_batched_tokens=8192,
            max_num_seqs=4,
            speculative_tokens=speculative_tokens,
        )
    )
    c = p.chosen
    layout = Layout(
        nodes=c.layout.nodes,
        gpus_per_node=8,
        tensor_parallel=c.layout.tensor_parallel,
        data_parallel=c.layout.data_parallel,
        expert_parallel=c.layout.expert_parallel,
    )
    peak = activation_bytes(
        PRO,
        layout,
        VLLM_0_33,
        max_num_batched_tokens=8192,
        max_num_seqs=c.max_num_seqs,
        max_model_len=c.max_model_len,
    )
    assert c.memory.activation_bytes == peak + 469_762_048
