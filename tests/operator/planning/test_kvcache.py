"""KV cache bytes: entries, growth, paging, fixed per-request state."""

import pytest

from dsv4_operator.planning.kvcache import growth_bytes_per_token, kv_geometry, page_bytes
from dsv4_operator.planning.models import FLASH, PRO

GIB = 2**30
ONE_M = 1_048_576


def test_pro_bf16_accounting_is_9_62_gib_per_million_tokens() -> None:
    # vLLM blog: 9.62 GiB per 1M-token sequence with BF16 main and BF16 indexer accounting.
    per_token = growth_bytes_per_token(PRO.compress_ratios, 1024, 256)
    assert per_token == 9848
    assert per_token * ONE_M / GIB == pytest.approx(9.62, abs=0.005)


def test_fp8_raw_and_paged_sizes() -> None:
    pro = kv_geometry(PRO, "fp8")
    flash = kv_geometry(FLASH, "fp8")
    assert pro.raw_bytes_per_token * ONE_M / GIB == pytest.approx(5.38, abs=0.01)
    assert pro.growth_bytes(ONE_M) / GIB == pytest.approx(5.48, abs=0.01)
    assert flash.raw_bytes_per_token * ONE_M / GIB == pytest.approx(3.76, abs=0.01)
    assert flash.block_bytes == 1_002_240
    assert pro.block_bytes == 1_435_968


def test_page_rounding_to_576_bytes() -> None:
    assert page_bytes(64, 584) == 37_440
    assert page_bytes(2, 584) == 1_728
    assert page_bytes(64, 132) == 8_640
    assert page_bytes(64, 68) == 4_608


# One max-model-len request as vLLM 0.33.0 sizes it at start-up (bytes_per_block x the blocks of
# every KV-cache group, `_max_memory_usage_bytes_from_groups`), with async scheduling's 2 x mnbt
# in flight: computed by running the 0.33.0 wheel's vllm/v1/core/kv_cache_planning.py
# (`_get_packed_kv_cache_groups`, `_pool_bytes_per_block`) on the layer specs that its
# deepseek_v4 modules build (FP8 ds_mla main cache, FP8 indexer). (model, max-model-len, mnbt,
# MTP) -> bytes.
VLLM_0_33_REQUEST_BYTES = {
    (FLASH, ONE_M, 8192, False): 10_802_142_720,  # 10,778 blocks x 1,002,240 B
    (FLASH, 131_072, 8192, False): 7_210_114_560,
    (FLASH, 131_072, 4096, True): 3_874_659_840,
    (FLASH, 4096, 2048, True): 1_687_772_160,
    (PRO, ONE_M, 8192, False): 15_476_863_104,  # 10,778 blocks x 1,435,968 B
    (PRO, 131_072, 8192, False): 10_330_353_792,
    (PRO, 131_072, 4096, True): 5_551_452_288,
    (PRO, 4096, 2048, True): 2_418_170_112,
}


@pytest.mark.parametrize(("key", "want"), VLLM_0_33_REQUEST_BYTES.items())
def test_one_request_is_what_vllm_0_33_reserves_at_start_up(
    key: tuple[object, int, int, bool], want: int
) -> None:
    """Window and compressor-state blocks come from the one shared pool, each as large as a
    256-token compressed block, for 2 x mnbt tokens in flight (vLLM 0.33.0's async default)."""
    model, length, mnbt, mtp = key
    assert model is FLASH or model is PRO
    geo = kv_geometry(model, "fp8", mtp=mtp)
    state = geo.admission_state_bytes(mnbt, 128, length)
    assert geo.request_bytes(length, state) == want


def test_the_shared_pool_block_and_the_groups_vllm_0_33_packs() -> None:
    """Flash: 43 window layers in 2 groups (22 + 21), CSA states (21 main + 21 indexer) in 1, HCA
    states (20) in 1, the compressed MLA + indexer pages in 1: every block holds 1,002,240 B."""
    flash, pro = kv_geometry(FLASH, "fp8"), kv_geometry(PRO, "fp8")
    assert (flash.window_groups, flash.csa_state_groups, flash.hca_state_groups) == (2, 1, 1)
    assert (pro.window_groups, pro.csa_state_groups, pro.hca_state_groups) == (2, 1, 1)
    assert flash.pool_block == flash.block_bytes == 1_002_240
    assert pro.pool_block == pro.block_bytes == 1_435_968
    # Without async scheduling (--no-async-scheduling) one batch is in flight.
    one = flash.admission_state_blocks(8192, 128, ONE_M, concurrent_batches=1)
    assert one == 2 * 131 + 2051 + 1041


def test_steady_state_is_tens_of_megabytes() -> None:
    assert kv_geometry(FLASH, "fp8").steady_state_bytes() == pytest.approx(18.6e6, rel=0.01)
    assert kv_geometry(PRO, "fp8").steady_state_bytes() == pytest.approx(27.9e6, rel=0.01)


def test_swa_layers_do_not_grow_and_mtp_adds_a_window() -> None:
    assert growth_bytes_per_token([0, 0, 0], 584, 132) == 0
    assert growth_bytes_per_token([128], 584, 132) == pytest.approx(584 / 128)
    with_mtp = kv_geometry(FLASH, "fp8", mtp=True)
    assert with_mtp.window_layers == FLASH.num_layers + 1
    assert with_mtp.steady_state_bytes() > kv_geometry(FLASH, "fp8").steady_state_bytes()


def test_unknown_ratio_is_refused() -> None:
    with pytest.raises(ValueError, match="64"):
        growth_bytes_per_token([64], 584, 132)
