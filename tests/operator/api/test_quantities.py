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
    ],
)
def test_parse_quantity(text: str | int, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["16 GB", "16GB", "Gi", "1.2.3", "", "1Gb", "0x10"])
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
