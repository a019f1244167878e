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
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]{1,2}))?$"
)
"""Kubernetes' resource.Quantity syntax (k8s.io/apimachinery `pkg/api/resource/quantity.go`),
with the decimal exponent an integer of at most two digits. controller-gen's pattern also admits
a fractional exponent (`1e1.5`), which Kubernetes' parser refuses (`strconv.ParseInt` of the
suffix), and any length of exponent: `1e100000000` took the operator minutes of big-integer
arithmetic with the GIL held, stalling every resource."""

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
_MAX_LENGTH: Final = 64
"""Longest quantity string the API takes (`Quantity`'s maxLength)."""
_SPLIT_RE: Final = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<suffix>[KMGTPE]i|[numkMGTPE])|[eE](?P<exp>[+-]?[0-9]{1,2}))?$"
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
    match = _SPLIT_RE.match(value) if len(value) <= _MAX_LENGTH else None
    if match is None:
        msg = (
            f"{value[:_MAX_LENGTH]!r} is not a Kubernetes quantity (e.g. 16Gi, 512Mi, 1G, "
            "1073741824, 1e9; an exponent is an integer of at most two digits)"
        )
        raise ValueError(msg)
    number = Fraction(Decimal(match["num"]))
    if match["exp"] is not None:
        return number * Fraction(10) ** int(match["exp"])
    return number * _SUFFIX[match["suffix"] or ""]


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
    Field(max_length=_MAX_LENGTH),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "maxLength": _MAX_LENGTH,
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
