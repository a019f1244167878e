"""Weight formats and per-GPU shards."""

import pytest

from dsv4_operator.planning import PlanRequest, plan
from dsv4_operator.planning.hardware import GPUS
from dsv4_operator.planning.models import FLASH, PRO, ModelSpec
from dsv4_operator.planning.weights import (
    checkpoint_bytes,
    in_gpu_format,
    per_gpu_weight_bytes,
    repack_rule,
)

FLASH_INDEX_TOTAL_SIZE = 159_609_485_896  # model.safetensors.index.json total_size (facts W1)


def test_flash_official_checkpoint_size() -> None:
    """Every tensor of the official checkpoint is counted: the index's total_size to the byte.

    Shorter by 304,148 B without the main compressors' RMSNorm weights (41 x 512 bf16) and the
    MTP layer's hc_head (4 x 16,384 + 4 + 1 fp32).
    """
    assert checkpoint_bytes(FLASH, "official") == FLASH_INDEX_TOTAL_SIZE


def test_pro_official_checkpoint_size() -> None:
    assert checkpoint_bytes(PRO, "official") == pytest.approx(864.7e9, rel=0.01)


def test_pro_nvfp4_against_the_published_repack() -> None:
    assert checkpoint_bytes(PRO, "nvfp4") == pytest.approx(913.09e9, rel=0.01)


@pytest.mark.parametrize(
    ("fmt", "flash_gb", "pro_gb"),
    [("fp8", 292.5, 1602.0), ("bf16", 582, 3198), ("nvfp4", 168.4, 913.8)],
)
def test_other_formats_match_the_facts_table(fmt: str, flash_gb: float, pro_gb: float) -> None:
    assert checkpoint_bytes(FLASH, fmt) == pytest.approx(flash_gb * 1e9, rel=0.005)
    assert checkpoint_bytes(PRO, fmt) == pytest.approx(pro_gb * 1e9, rel=0.005)


def test_int4_is_about_160_gb_for_flash() -> None:
    assert 145e9 < checkpoint_bytes(FLASH, "int4") < 165e9


@pytest.mark.parametrize(
    ("model", "tp", "dp", "ep", "gb"),
    [
        (FLASH, 4, 1, True, 40.9),
        (FLASH, 1, 4, True, 46.6),
        (FLASH, 8, 1, True, 21.1),
        (FLASH, 1, 8, True, 27.8),
        (PRO, 4, 1, True, 218.9),
        (PRO, 1, 4, True, 238.0),
        (PRO, 8, 1, True, 111.3),
        (PRO, 1, 8, True, 133.6),
    ],
)
def test_per_gpu_weights_match_the_facts_table(
    model: ModelSpec, tp: int, dp: int, ep: bool, gb: float
) -> None:
    w = per_gpu_weight_bytes(
        model, "official", tensor_parallel=tp, data_parallel=dp, expert_parallel=ep
    )
    assert w.total_bytes == pytest.approx(gb * 1e9, rel=0.02)


def test_routed_experts_are_divided_by_ep_not_replicated() -> None:
    one = per_gpu_weight_bytes(
        PRO, "official", tensor_parallel=1, data_parallel=1, expert_parallel=True
    )
    eight = per_gpu_weight_bytes(
        PRO, "official", tensor_parallel=1, data_parallel=8, expert_parallel=True
    )
    sixteen = per_gpu_weight_bytes(
        PRO, "official", tensor_parallel=2, data_parallel=8, expert_parallel=True
    )
    assert eight.expert_bytes == pytest.approx(one.expert_bytes / 8, abs=8)
    assert sixteen.expert_bytes == pytest.approx(one.expert_bytes / 16, abs=16)
    # Without EP vLLM splits every expert over a flattened TP group of size TP x DP: same bytes.
    no_ep = per_gpu_weight_bytes(
        PRO, "official", tensor_parallel=1, data_parallel=8, expert_parallel=False
    )
    assert no_ep.expert_bytes == eight.expert_bytes


def test_only_nvfp4_experts_are_repacked_and_only_on_gfx942() -> None:
    """Planner audit: MXFP4 experts were counted as FP8 on MI300X (twice the memory: a whole
    extra node for Pro), though vLLM runs them weight-only there (module docstring)."""
    assert in_gpu_format("official", GPUS["mi300x-192gb"]) == "official"
    assert repack_rule("official", GPUS["mi300x-192gb"]) is None
    assert in_gpu_format("nvfp4", GPUS["mi300x-192gb"]) == "fp8"
    assert repack_rule("nvfp4", GPUS["mi300x-192gb"]) is not None
    pro = plan(PlanRequest(model="pro", gpu_types=("mi300x-192gb",), max_model_len=1_048_576))
    assert (pro.fits, pro.chosen.layout.nodes) == (True, 1)  # was 2 nodes of 8
    assert "FP4_WEIGHT_ONLY" in {str(w.code) for w in pro.warnings}
    for name in ("h100-80gb", "a100-80gb", "b200-180gb", "mi355x-288gb", "rtx-4090-24gb"):
        assert in_gpu_format("official", GPUS[name]) == "official"
        assert repack_rule("official", GPUS[name]) is None
    assert in_gpu_format("int4", GPUS["mi300x-192gb"]) == "int4"
