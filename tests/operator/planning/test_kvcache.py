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


def test_admission_state_matches_the_facts_table() -> None:
    flash, pro = kv_geometry(FLASH, "fp8"), kv_geometry(PRO, "fp8")
    for m, f_gib, p_gib in ((2048, 0.64, 0.93), (8192, 2.50, 3.64), (16384, 4.98, 7.26)):
        assert flash.admission_state_bytes(m, 128) / GIB == pytest.approx(f_gib, abs=0.01)
        assert pro.admission_state_bytes(m, 128) / GIB == pytest.approx(p_gib, abs=0.01)


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
