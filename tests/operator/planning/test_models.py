"""Model catalog: architecture constants and parameter counts derived from tensor shapes."""

import pytest

from dsv4_operator.planning.models import FLASH, PRO, LayerKind, Storage, get_model


def test_layer_types_match_compress_ratios() -> None:
    assert (FLASH.count(LayerKind.SWA), FLASH.count(LayerKind.CSA), FLASH.count(LayerKind.HCA)) == (
        2,
        21,
        20,
    )
    assert (PRO.count(LayerKind.SWA), PRO.count(LayerKind.CSA), PRO.count(LayerKind.HCA)) == (
        0,
        30,
        31,
    )


def test_group_totals_match_the_facts_formulas() -> None:
    # facts §7.1: routed experts 283.5B / 1572.8B; FP8 linears ~6.0B / ~23.2B; BF16 ~1.41B / ~2.82B.
    def by_storage(model: object, storage: Storage) -> int:
        return sum(g.elements for g in model.parameter_groups() if g.storage is storage)  # type: ignore[attr-defined]

    assert by_storage(FLASH, Storage.EXPERT) == 44 * 256 * 3 * 4096 * 2048
    assert by_storage(PRO, Storage.EXPERT) == 62 * 384 * 3 * 7168 * 3072
    assert by_storage(FLASH, Storage.LINEAR) == pytest.approx(6.0e9, rel=0.01)
    assert by_storage(PRO, Storage.LINEAR) == pytest.approx(23.2e9, rel=0.01)
    assert by_storage(FLASH, Storage.BF16) == pytest.approx(1.41e9, rel=0.01)
    assert by_storage(PRO, Storage.BF16) == pytest.approx(2.82e9, rel=0.01)


def test_flash_total_without_mtp_reproduces_the_card() -> None:
    assert FLASH.total_params(include_mtp=False) == pytest.approx(284e9, rel=0.01)


def test_pro_totals_against_the_card() -> None:
    # The card's "1.6T" has two significant digits. Without MTP our count is 1.573T (1.7 % under
    # 1.6T, inside the card's rounding); with MTP it is 1.599T, within 1 % of 1.6T.
    without = PRO.total_params(include_mtp=False)
    assert 1.55e12 <= without < 1.65e12
    assert PRO.total_params(include_mtp=True) == pytest.approx(1.6e12, rel=0.01)


def test_active_parameters_against_the_card() -> None:
    # DeepSeek's convention (embedding lookup excluded): Pro 48.85B vs 49B (0.3 %); Flash 13.27B
    # vs the card's rounded "13B" (2.1 % over, inside its whole-billion precision).
    assert PRO.active_params() == pytest.approx(49e9, rel=0.01)
    assert 12.5e9 <= FLASH.active_params() < 13.5e9


def test_mtp_layer_adds_one_block_of_experts() -> None:
    mtp = sum(g.elements for g in FLASH.parameter_groups() if g.mtp)
    assert mtp > FLASH.expert_elements_per_layer
    assert mtp < 2 * FLASH.expert_elements_per_layer


def test_get_model_is_case_insensitive_and_names_the_choices() -> None:
    assert get_model("PRO") is PRO
    with pytest.raises(KeyError, match="flash, pro"):
        get_model("v3")
