"""Kubernetes quantities, percentages and prices as exact (float-free) API types.

The API has no floats (Kube API Linter `nofloats`): memory sizes are Kubernetes quantity strings
(or plain integers of bytes), fractions are integer percents, and prices are decimal strings. This
module holds the annotated types used by the spec and the exact converters the planner needs.
"""

import re
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Final

from pydantic import BeforeValidator, Field, PlainValidator, WithJsonSchema

__all__ = [
    "PERCENT_PATTERN",
    "PRICE_PATTERN",
    "QUANTITY_PATTERN",
    "IntOrPercent",
    "Quantity",
    "UsdAmount",
    "parse_quantity",
    "quantity_bytes",
    "usd_micros",
]

QUANTITY_PATTERN: Final = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
"""Kubernetes' resource.Quantity syntax (k8s.io/apimachinery `pkg/api/resource/quantity.go`, the
pattern controller-gen emits for a Quantity field)."""

PERCENT_PATTERN: Final = r"^(100|[1-9]?[0-9])%$"
"""An integer percentage from 0% to 100%."""

PRICE_PATTERN: Final = r"^(0|[1-9][0-9]{0,5})(\.[0-9]{1,4})?$"
"""A non-negative US-dollar amount with at most 4 decimals and below one million, e.g. `2.49`."""

_SUFFIX: Final[dict[str, Fraction]] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_QUANTITY_RE: Final = re.compile(QUANTITY_PATTERN)
_SPLIT_RE: Final = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?P<suffix>[KMGTPE]i|[eE].*|[numkMGTPE])?$"
)


def parse_quantity(value: str | int) -> Fraction:
    """Return the exact value of a Kubernetes quantity (`"80Gi"`, `"1.5G"`, `"500m"`, `"1e3"`).

    Args:
        value: a quantity string in Kubernetes' syntax, or an integer.

    Returns:
        The value as an exact fraction (for memory: bytes).

    Raises:
        ValueError: `value` is not a Kubernetes quantity.
    """
    if isinstance(value, int):
        return Fraction(value)
    match = _SPLIT_RE.match(value) if _QUANTITY_RE.match(value) else None
    if match is None:
        msg = f"{value!r} is not a Kubernetes quantity (e.g. 16Gi, 512Mi, 1G, 1073741824)"
        raise ValueError(msg)
    number = Fraction(Decimal(match["num"]))
    suffix = match["suffix"] or ""
    if suffix[:1] in {"e", "E"}:
        return number * Fraction(Decimal(f"1e{suffix[1:]}"))
    return number * _SUFFIX[suffix]


def quantity_bytes(value: str | int) -> int:
    """Return a memory quantity in whole bytes, rounded up as Kubernetes does.

    Args:
        value: a quantity string or an integer number of bytes.

    Returns:
        Bytes (int), the ceiling of the exact value.

    Raises:
        ValueError: `value` is not a Kubernetes quantity.
    """
    exact = parse_quantity(value)
    return -((-exact.numerator) // exact.denominator)


def usd_micros(amount: str) -> int:
    """Return a dollar amount string (`"2.49"`) as an integer number of micro-dollars (2_490_000).

    Raises:
        ValueError: `amount` does not match `PRICE_PATTERN`.
    """
    if re.fullmatch(PRICE_PATTERN, amount) is None:
        msg = f"{amount!r} is not a dollar amount like 2.49 (pattern {PRICE_PATTERN})"
        raise ValueError(msg)
    return int(Decimal(amount) * 1_000_000)


def _int_to_str(value: object) -> object:
    """Accept an integer quantity or percent (YAML `shmSize: 1073741824`) as its string form."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _check_quantity(value: object) -> object:
    if isinstance(value, str):
        parse_quantity(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_check_quantity),
    BeforeValidator(_int_to_str),
    Field(max_length=64),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "maxLength": 64,
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes quantity: an integer or a string such as `16Gi` (stored as the string)."""


def _check_int_or_percent(value: object) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        msg = f"must be an integer >= 0 or a percentage string 0% to 100%, got {value!r}"
        raise ValueError(msg)
    if isinstance(value, int) and value < 0:
        msg = f"must be >= 0 or a percentage 0% to 100%, got {value}"
        raise ValueError(msg)
    if isinstance(value, str) and re.fullmatch(PERCENT_PATTERN, value) is None:
        msg = f"must be an integer >= 0 or a percentage 0% to 100% (pattern {PERCENT_PATTERN})"
        raise ValueError(msg)
    return value


IntOrPercent = Annotated[
    int | str,
    PlainValidator(_check_int_or_percent),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "maxLength": 4,
            "minimum": 0,
            "pattern": PERCENT_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A count (integer >= 0) or a percentage string from `0%` to `100%`."""

UsdAmount = Annotated[str, Field(pattern=PRICE_PATTERN, max_length=11)]
"""US dollars as a decimal string with at most 4 decimals, e.g. `2.49` (no floats in the API)."""
