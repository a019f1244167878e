"""Exact Kubernetes quantities and dollar amounts (no floats)."""

from fractions import Fraction

import pytest

from dsv4_operator.api.v1alpha1.quantities import parse_quantity, quantity_bytes, usd_micros


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("16Gi", Fraction(16 * 2**30)),
        ("1Ti", Fraction(2**40)),
        ("1.5G", Fraction(1_500_000_000)),
        ("500m", Fraction(1, 2)),
        ("1e3", Fraction(1000)),
        ("1E-3", Fraction(1, 1000)),
        (".5Ki", Fraction(512)),
        ("+2k", Fraction(2000)),
        ("-1Mi", Fraction(-(2**20))),
        ("1073741824", Fraction(2**30)),
        (64, Fraction(64)),
        # Bad-CR review: the E and Ei suffixes were read as an empty exponent (a traceback on
        # every reconcile, no status).
        ("1Ei", Fraction(2**60)),
        ("2E", Fraction(2 * 10**18)),
        ("1e99", Fraction(10**99)),
    ],
)
def test_parse_quantity(text: str | int, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text",
    # A fractional exponent is refused by Kubernetes' parser too; a huge one took minutes of
    # big-integer arithmetic with the GIL held (bad-CR review: the whole operator stalled).
    ["16 GB", "16GB", "Gi", "1.2.3", "", "1Gb", "0x10", "1e1.5", "1e100000000", "1e", "1" * 65],
)
def test_parse_quantity_refuses_non_quantities(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


def test_quantity_bytes_rounds_up() -> None:
    assert quantity_bytes("1500m") == 2
    assert quantity_bytes("1.1Ki") == 1127  # 1126.4 rounded up, as Kubernetes does
    assert quantity_bytes("96Gi") == 103_079_215_104


def test_usd_micros_is_exact() -> None:
    assert usd_micros("2.49") == 2_490_000
    assert usd_micros("0.0001") == 100
    assert usd_micros("123456.7891") == 123_456_789_100
    with pytest.raises(ValueError, match="dollar amount"):
        usd_micros("2.49999")


def test_the_crd_pattern_and_the_parse_agree() -> None:
    """The CRD's pattern and the parse agree: what admission lets through parses, and what the
    parse refuses (a ValueError, reported as InvalidSpec) admission refuses too."""
    import re

    from dsv4_operator.api.v1alpha1.quantities import QUANTITY_PATTERN

    for text in ("1e99", "9" * 62 + "Ei", "1E", "1Ei", ".5e-99", "1e1.5", "1e100"):
        admitted = re.fullmatch(QUANTITY_PATTERN, text) is not None
        try:
            parse_quantity(text)
        except ValueError:
            assert not admitted, text
        else:
            assert admitted, text
