"""Release numbers of software a spec names (vLLM, transformers), as tuples to compare."""

__all__ = ["parse_version"]


def parse_version(text: str) -> tuple[int, ...]:
    """Numeric release tuple, padded to three parts (`v0.20rc1+cu130` -> (0, 20, 0)).

    A leading `v` is allowed (the CRD accepts it); missing parts count as zero, so `0.20` equals
    `0.20.0`.

    Raises:
        ValueError: when the string does not start with a number.
    """
    parts: list[int] = []
    for piece in text.strip().removeprefix("v").split("+", maxsplit=1)[0].split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    if not parts:
        msg = f"not a version: {text!r}"
        raise ValueError(msg)
    return tuple(parts + [0] * (3 - len(parts)))
