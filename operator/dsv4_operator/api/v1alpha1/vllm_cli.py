"""`vllm serve`'s own command-line rules, so `spec.engine.extraArgs` fails at apply, not in pods.

vLLM parses its arguments with Python's argparse (`FlexibleArgumentParser`,
vllm/utils/argparse_utils.py, which normalises underscores and dotted JSON keys, both refused
by the API's `FLAG_PATTERN`, and otherwise leaves argparse's rules alone). An entry argparse
refuses makes every pod of the group exit 2 at start, a crash loop the operator could only
report after the pods ran. This module applies the same rules as argparse to one entry against
the options of the vLLM release the operator is built for (`VLLM_VERSION`; the table is
`vllm_options.SERVE_OPTIONS`, generated from that release's parser):

- an option is found by its exact name, else by a unique prefix (argparse's `allow_abbrev`,
  on in vLLM); a prefix of several is ambiguous (`ArgumentParser._parse_optional`);
- an option with no value (`store_true`, vLLM's `EnableDisableAction`: nargs 0) refuses
  `=value` ("ignored explicit argument"); one with a value (nargs None or `+`) needs it in the
  same entry, since the API admits no separate value entries and extraArgs come last;
- `--help` (or an abbreviation) is refused: argparse prints the help and exits 0;
- the value is converted by the option's type (`int`, `float`: Python's own functions, as
  argparse calls them) and checked against its choices (`_get_values`, `_check_value`);
- a JSON-typed value must parse: `json.loads` (frontend options) and vLLM's
  `parse_type(json.loads)` (dict-typed options, `_parse_type` in the dump) as Python's `json`
  does, and `parse_dataclass` (config objects: pydantic's `TypeAdapter(cls).validate_json`,
  vllm/engine/arg_utils.py `_compute_kwargs`) as a JSON object, after the bare human-readable
  numbers (`80m`) that some vLLM releases expand there (`_expand_json_human_readable_numbers`).

Other types that are vLLM functions (`human_readable_int`, `_optional_type`, lambdas) are not
re-implemented, nor the fields of a config object: their values pass here and vLLM judges them.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from dsv4_operator.api.versions import parse_version

__all__ = [
    "VLLM_VERSION",
    "ServeOption",
    "argparse_problem",
    "checked_release",
    "options_from_parser_dump",
]

VLLM_VERSION: Final = "0.33.0"
"""The vLLM release whose `vllm serve` options the operator checks extraArgs against, and
whose memory behaviour the planner models (`planning.engine.VLLM_0_33`)."""


def checked_release(version: str | None) -> bool:
    """Whether extraArgs are checked against `VLLM_VERSION`'s options for `spec.engine.version`.

    True when it is unset (the operator's default runtime image runs `VLLM_VERSION`) or names
    that release (`0.33`, `v0.33.0`, `0.33.0+cu130`, `0.33.0.post1`); another release may
    have other options, so its extraArgs go to vLLM unchecked.
    """
    if version is None:
        return True
    try:
        release = parse_version(version)
    except ValueError:
        return False
    return release[:3] == parse_version(VLLM_VERSION)


ValueArity = Literal["none", "one", "optional", "many"]
CheckedType = Literal["int", "float", "json", "json-object"]


@dataclass(frozen=True)
class ServeOption:
    """How argparse reads one long option of `vllm serve`.

    Attributes:
        arity: `none` (nargs 0: no value), `one` (nargs None), `optional` (nargs `?`),
            `many` (nargs `+`; one value per entry here).
        type: `int` or `float` when argparse converts the value with that builtin, `json` when
            it must be any JSON value (`json.loads`), `json-object` when a JSON object (a vLLM
            config dataclass), else None (a string, or a vLLM function not re-implemented here).
        choices: the accepted values as strings (after `type`), or None for any.
    """

    arity: ValueArity
    type: CheckedType | None = None
    choices: tuple[str, ...] | None = None


_ARITY: Final[dict[object, ValueArity]] = {0: "none", None: "one", "?": "optional", "+": "many"}
_JSON_TYPES: Final[dict[str, CheckedType]] = {
    "loads": "json",
    "_parse_type": "json",
    "parse_dataclass": "json-object",
}
"""The dump's type names whose values must be JSON: `json.loads` itself, vLLM's
`parse_type(json.loads)` (its inner function `_parse_type`, used for dict-typed options), and
`parse_dataclass` (a config dataclass validated from JSON, so an object)."""
_HUMAN_NUMBER: Final = re.compile(r"\b\d+(?:\.\d+)?[kKmMgGtT]\b")
"""A bare human-readable number (`80m`, `1.5k`, `2G`) that vLLM may expand inside config JSON."""
_JSON_STRING: Final = re.compile(r'("(?:[^"\\]|\\.)*")')
"""A JSON string literal, left as it is when numbers are expanded."""
_CHOICE_TYPES: Final = (None, "str", "int", "_optional_type")
"""Types whose choices are compared as strings: no conversion, `str`, `int` (compared after
`int()`), and vLLM's `_optional_type` (vllm/engine/arg_utils.py `optional_type`: `""` and
`"None"` become None before argparse checks the choices, while `_compute_kwargs` appends the
string `"None"` to them; None is never among them, so vLLM refuses both and the table leaves
`"None"` out)."""


def options_from_parser_dump(dump: Mapping[str, Any]) -> dict[str, ServeOption]:
    """The long options of a `vllm serve` parser dump, by option string.

    Args:
        dump: the JSON of `shared/fixtures/vllm/vllm-<version>-serve-flags.json`: `flags`, a
            list of `{options, nargs, type, choices, ...}` read from vLLM's `make_arg_parser`.

    Returns:
        Every `--` option string (aliases and negations included) with its `ServeOption`.

    Raises:
        ValueError: an nargs this module does not model.
    """
    table: dict[str, ServeOption] = {}
    for flag in dump["flags"]:
        nargs = flag["nargs"]
        if nargs not in _ARITY:
            msg = f"{flag['options']}: nargs {nargs!r} is not modelled"
            raise ValueError(msg)
        kind = flag["type"]
        checked: CheckedType | None = kind if kind in ("int", "float") else _JSON_TYPES.get(kind)
        raw = flag["choices"]
        choices = tuple(str(c) for c in raw) if raw and kind in _CHOICE_TYPES else None
        if choices is not None and kind == "_optional_type":
            choices = tuple(c for c in choices if c != "None")
        option = ServeOption(_ARITY[nargs], checked, choices)
        table.update({name: option for name in flag["options"] if name.startswith("--")})
    return dict(sorted(table.items()))


def argparse_problem(entry: str, options: Mapping[str, ServeOption]) -> str | None:
    """Why `vllm serve`'s argparse would refuse one extraArgs entry, or None if it would not.

    Args:
        entry: `--flag` or `--flag=value` (the API's `FLAG_PATTERN`).
        options: the release's options (`vllm_options.SERVE_OPTIONS`).

    Returns:
        A message naming the entry and the rule, with the closest option names for a flag
        vLLM does not have; None when argparse accepts the entry.
    """
    flag, eq, value = entry.partition("=")
    found = _lookup(flag, options)
    if isinstance(found, str):
        return found
    flag, option = found
    if flag == "--help":
        # argparse's help action (and FlexibleArgumentParser's `--help=KEY`) prints the help
        # and exits 0: vLLM never starts, and every pod of the group restarts.
        return f"{entry!r} is {flag}: vLLM would print its help and exit instead of serving"
    if option.arity == "none":
        return (
            f"{entry!r}: {flag} takes no value (vLLM refuses one); write {flag} alone"
            if eq
            else None
        )
    if not eq:
        if option.arity == "optional":
            return None
        return f"{flag} needs a value in the same entry ({flag}=VALUE)"
    return _value_problem(entry, flag, value, option)


def _lookup(flag: str, options: Mapping[str, ServeOption]) -> tuple[str, ServeOption] | str:
    """The option `flag` names (exactly, else as a unique prefix), or why argparse finds none."""
    option = options.get(flag)
    if option is not None:
        return flag, option
    matches = [name for name in options if name.startswith(flag)]
    if len(matches) > 1:
        shown = ", ".join(matches[:6]) + (", ..." if len(matches) > 6 else "")
        return f"{flag} is ambiguous in vLLM {VLLM_VERSION} (it abbreviates {shown})"
    if not matches:
        close = difflib.get_close_matches(flag, list(options), n=3, cutoff=0.75)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        return f"{flag} is not a `vllm serve` option of vLLM {VLLM_VERSION}{hint}"
    return matches[0], options[matches[0]]


def _value_problem(entry: str, flag: str, value: str, option: ServeOption) -> str | None:
    """Why argparse would refuse `value` for `option`: its type or choices (None: it would not)."""
    if option.type in ("json", "json-object"):
        return _json_problem(entry, flag, value, object_only=option.type == "json-object")
    converted: Sequence[str] = (value,)
    if option.type is not None:
        try:
            number = int(value) if option.type == "int" else float(value)
        except ValueError:
            return f"{entry!r}: {flag} needs {'an integer' if option.type == 'int' else 'a number'}"
        converted = (str(number),)
    if option.choices is not None and converted[0] not in option.choices:
        return f"{entry!r}: {flag} must be one of {', '.join(option.choices)}"
    return None


def _json_problem(entry: str, flag: str, value: str, *, object_only: bool) -> str | None:
    """Why vLLM's JSON type for `flag` would refuse `value` (None: it would not).

    For a config object (`object_only`) bare human-readable numbers outside strings are
    replaced by a plain number first, as vLLM releases that expand them do, so a value is
    refused only where no vLLM release reads it.
    """
    text = value
    if object_only:
        parts = _JSON_STRING.split(value)
        parts[::2] = [_HUMAN_NUMBER.sub("1", part) for part in parts[::2]]
        text = "".join(parts)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = _NOT_JSON
    if parsed is _NOT_JSON or (object_only and not isinstance(parsed, dict)):
        wanted = "a JSON object" if object_only else "a JSON value"
        example = '{"key": 1}' if object_only else '{"key": true} or ["*"]'
        return (
            f"{entry!r}: {flag} needs {wanted} in the same entry (e.g. {flag}={example}; "
            "JSON strings take double quotes, true/false in lower case)"
        )
    return None


_NOT_JSON: Final = object()
"""`_json_problem`'s marker for a value `json.loads` refuses (None is JSON's null)."""
