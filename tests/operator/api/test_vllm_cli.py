"""extraArgs are checked by vLLM 0.33.0's argparse rules, against its real option list."""

import argparse
import contextlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest

from dsv4_operator.api import InvalidSpecError, parse_spec
from dsv4_operator.api.v1alpha1.vllm_cli import (
    VLLM_VERSION,
    argparse_problem,
    checked_release,
    options_from_parser_dump,
)
from dsv4_operator.api.v1alpha1.vllm_options import SERVE_OPTIONS
from dsv4_operator.planning.engine import VLLM_0_33

REPO_ROOT = Path(__file__).resolve().parents[3]
FIXTURES = Path(os.environ.get("DSV4_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))
DUMP_FILE = FIXTURES / "vllm" / f"vllm-{VLLM_VERSION}-serve-flags.json"
BASE: dict[str, Any] = {"model": "flash", "gpu": {"types": ["h200-141gb"]}}


@pytest.fixture(scope="module")
def dump() -> dict[str, Any]:
    if not DUMP_FILE.is_file():
        pytest.skip(f"vLLM flag list fixture missing: {DUMP_FILE} (set DSV4_FIXTURES)")
    data: dict[str, Any] = json.loads(DUMP_FILE.read_text())
    return data


def test_the_generated_table_is_vllms_parser(dump: dict[str, Any]) -> None:
    assert dump["vllm_version"] == VLLM_VERSION == VLLM_0_33.version
    assert options_from_parser_dump(dump) == SERVE_OPTIONS, "run hack/gen_vllm_options.py"
    long_options = {o for flag in dump["flags"] for o in flag["options"] if o.startswith("--")}
    assert set(SERVE_OPTIONS) == long_options


def _optional_str(value: str) -> str | None:
    """vLLM's `optional_type(str)` (vllm/engine/arg_utils.py): "" and "None" are None."""
    return None if value in ("", "None") else value


def _config_object(value: str) -> dict[str, Any]:
    """vLLM's `parse_dataclass` as far as the shape goes: pydantic validates JSON into a config
    dataclass (an object), after expanding bare `80m`-style numbers outside strings."""
    parts = re.split(r'("(?:[^"\\]|\\.)*")', value)
    parts[::2] = [re.sub(r"\b\d+(?:\.\d+)?[kKmMgGtT]\b", "0", p) for p in parts[::2]]
    parsed: dict[str, Any] = pydantic.TypeAdapter(dict[str, Any]).validate_json("".join(parts))
    return parsed


def _json(value: str) -> object:
    """`json.loads` and vLLM's `parse_type(json.loads)`, as argparse calls them."""
    return json.loads(value)


_TWIN_TYPES: dict[str, Any] = {
    "int": int,
    "float": float,
    "loads": _json,
    "_parse_type": _json,
    "parse_dataclass": _config_object,
}


def _argparse_twin(dump: dict[str, Any]) -> argparse.ArgumentParser:
    """Python's argparse with the dump's options: nargs, builtin types and choices as vLLM's.

    vLLM's other type functions are strings here, as `argparse_problem` leaves them to vLLM.
    """
    parser = argparse.ArgumentParser()  # vLLM's -h/--help: prints and exits
    for flag in dump["flags"]:
        names = [o for o in flag["options"] if o.startswith("--")]
        if not names or flag["action"] == "_HelpAction":
            continue
        if flag["nargs"] == 0:
            parser.add_argument(*names, action="store_true", dest=flag["dest"])
            continue
        kind: Any = _TWIN_TYPES.get(flag["type"] or "", str)
        if flag["type"] == "_optional_type":  # vLLM's optional_type(str)
            kind = _optional_str
        choices = (
            flag["choices"] if flag["type"] in (None, "str", "int", "_optional_type") else None
        )
        if choices is not None and kind in (str, _optional_str):
            choices = [str(c) for c in choices]
        parser.add_argument(
            *names, nargs=flag["nargs"], type=kind, choices=choices, dest=flag["dest"]
        )
    return parser


def _accepted(parser: argparse.ArgumentParser, entry: str) -> bool:
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args([entry])
        except SystemExit:
            return False
    return True


def _entries(dump: dict[str, Any]) -> list[str]:
    """Entries of every shape for every option: values of each type, choices, prefixes, typos."""
    entries = ["--xyz", "--xyz=1", "--seeds=3", "--sed=3", "--enable", "--max", "--e", "--no"]
    for flag in dump["flags"]:
        for name in (o for o in flag["options"] if o.startswith("--")):
            entries += [name, f"{name}=1", f"{name}=x", f"{name}=1.5", f"{name}=", f"{name}=-2"]
            entries += [f'{name}={{"a": 2k}}', f'{name}={{"a": "2k"}}', f"{name}={{'a': 1}}"]
            entries += [f"{name}={choice}" for choice in (flag["choices"] or [])[:3]]
            entries += [name[:cut] for cut in (4, 7, len(name) - 1) if cut < len(name)]
            entries += [f"{name[: len(name) - 2]}=7", name.replace("-", "_", 1)[:3] + name[3:]]
    return [e for e in dict.fromkeys(entries) if e.startswith("--")]


def test_argparse_problem_agrees_with_argparse_on_every_option(dump: dict[str, Any]) -> None:
    parser = _argparse_twin(dump)
    entries = _entries(dump)
    assert len(entries) > 2500
    disagreements = [
        (entry, problem)
        for entry in entries
        if ((problem := argparse_problem(entry, SERVE_OPTIONS)) is None) != _accepted(parser, entry)
    ]
    assert disagreements == []
    refused = sum(argparse_problem(entry, SERVE_OPTIONS) is not None for entry in entries)
    assert 0 < refused < len(entries)  # both outcomes are exercised


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("--sed=3", "--sed is not a `vllm serve` option of vLLM 0.33.0 (did you mean --seed?)"),
        ("--seed", "--seed needs a value in the same entry (--seed=VALUE)"),
        ("--seed=three", "'--seed=three': --seed needs an integer"),
        ("--enable-prefix-caching=true", "--enable-prefix-caching takes no value"),
        ("--max-lora-rank=9", "--max-lora-rank must be one of 1, 8, 16, 32, 64, 128"),
        ("--mm-processor=1", "--mm-processor is ambiguous in vLLM 0.33.0 (it abbreviates --mm-"),
    ],
)
def test_spec_entries_vllm_would_refuse_are_invalid(entry: str, message: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec({**BASE, "engine": {"extraArgs": [entry]}})
    assert message in str(caught.value)
    assert "set spec.engine.version to it" in str(caught.value)


def test_every_bad_entry_is_named_once_and_good_ones_pass() -> None:
    good = [
        "--enable-prefix-caching",
        "--seed=4",
        "--hf-token",
        "--log-level=DEBUG",
        "--max-lora-rank=8",
    ]
    assert parse_spec({**BASE, "engine": {"extraArgs": good}}).engine.extra_args == tuple(good)
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(
            {**BASE, "engine": {"extraArgs": [*good, "--sed=1", "--api-server-count=2", "--xyz"]}}
        )
    text = str(caught.value)
    assert "--sed is not" in text
    assert "--xyz is not" in text
    assert "--api-server-count is not supported" in text
    assert text.count("set spec.engine.version to it") == 1


@pytest.mark.parametrize(
    ("version", "checked"),
    [
        (None, True),
        ("0.33.0", True),
        ("v0.33", True),
        ("0.33.0+cu130", True),
        ("0.33.0.post1", True),
        ("0.33.1", False),
        ("0.34.0", False),
        ("1.0", False),
    ],
)
def test_only_vllm_0_33_is_checked(version: str | None, checked: bool) -> None:
    assert checked_release(version) is checked
    engine: dict[str, Any] = {"extraArgs": ["--new-flag-of-a-later-vllm=1"]}
    if version is not None:
        engine["version"] = version
    if checked:
        with pytest.raises(InvalidSpecError, match="--new-flag-of-a-later-vllm is not"):
            parse_spec({**BASE, "engine": engine})
    else:
        assert parse_spec({**BASE, "engine": engine}).engine.extra_args


def test_the_operators_own_checks_come_first() -> None:
    # Owned and read flags keep their own messages (no vLLM parser note for them).
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec({**BASE, "engine": {"extraArgs": ["--max-model-len=8192", "--enforce-eager=1"]}})
    text = str(caught.value)
    assert "--max-model-len is set by the operator from the spec" in text
    assert "--enforce-eager takes no value" in text
    assert "set spec.engine.version" not in text


@pytest.mark.parametrize("entry", ["--tool-strict-level=None", "--spec-method=None"])
def test_none_is_no_choice_of_an_optional_literal(entry: str) -> None:
    # vLLM's optional_type turns "None" into None before argparse checks the choices, which
    # hold the string "None" (arg_utils `_compute_kwargs` appends it), so vLLM refuses it.
    parser = argparse.ArgumentParser(add_help=False)
    flag = entry.partition("=")[0]
    choices = [*(SERVE_OPTIONS[flag].choices or ()), "None"]
    parser.add_argument(flag, type=_optional_str, choices=choices)
    assert not _accepted(parser, entry)
    assert argparse_problem(entry, SERVE_OPTIONS) is not None


@pytest.mark.parametrize("entry", ["--help", "--hel", "--help=all"])
def test_help_is_refused_as_vllm_would_print_it_and_exit(entry: str) -> None:
    # argparse's help action prints and exits 0 (FlexibleArgumentParser turns --help=KEY into
    # --help): vLLM never starts, and every pod of the group restarts.
    problem = argparse_problem(entry, SERVE_OPTIONS)
    assert problem is not None
    assert "--help" in problem


def test_the_choice_lists_the_planner_reads_start_with_vllms_default(dump: dict[str, Any]) -> None:
    from dsv4_operator.api.v1alpha1.engine import (
        ALL2ALL_BACKENDS,
        OFFLOAD_BACKENDS,
        PERFORMANCE_MODES,
    )

    flags = {option: flag for flag in dump["flags"] for option in flag["options"]}
    for option, listed in (
        ("--all2all-backend", ALL2ALL_BACKENDS),
        ("--offload-backend", OFFLOAD_BACKENDS),
        ("--performance-mode", PERFORMANCE_MODES),
    ):
        assert listed[0] == flags[option]["default"]
        assert sorted(listed) == sorted(flags[option]["choices"])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        # vLLM's type json.loads (frontend options): the recipe's thinking switch as a Python dict
        ("--default-chat-template-kwargs={'thinking': True}", "needs a JSON value"),
        ("--allowed-origins=*", "needs a JSON value"),
        # parse_type(json.loads) (dict-typed engine options, arg_utils `_compute_kwargs`)
        ("--override-generation-config=temperature=0.6", "needs a JSON value"),
        # parse_dataclass: pydantic's TypeAdapter(cls).validate_json needs a JSON object
        ("--compilation-config=3", "needs a JSON object"),
        ("--attention-config=FLASHMLA", "needs a JSON object"),
    ],
)
def test_json_values_vllm_cannot_parse_are_invalid(entry: str, message: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec({**BASE, "engine": {"extraArgs": [entry]}})
    assert message in str(caught.value)
    assert entry.partition("=")[0] in str(caught.value)


@pytest.mark.parametrize(
    "entry",
    [
        '--default-chat-template-kwargs={"thinking": true}',
        '--allowed-origins=["*"]',
        '--override-generation-config={"temperature": 0.6}',
        '--compilation-config={"mode": 3}',
        '--attention-config={"backend": "FLASHMLA"}',
        # vLLM expands bare human-readable numbers in dataclass JSON (80m: 80,000,000)
        '--profiler-config={"max_bytes": 80m}',
    ],
)
def test_json_values_vllm_parses_are_accepted(entry: str) -> None:
    assert parse_spec({**BASE, "engine": {"extraArgs": [entry]}}).engine.extra_args == (entry,)


def test_a_served_model_name_from_a_recipe_is_told_the_name_clients_use() -> None:
    from dsv4_operator.render.runtime_args import served_model_name

    with pytest.raises(InvalidSpecError) as caught:
        parse_spec({**BASE, "engine": {"extraArgs": ["--served-model-name=my-model"]}})
    assert served_model_name(parse_spec(BASE)) in str(caught.value)
    assert "deepseek-v4-pro" in str(caught.value)


@pytest.mark.parametrize(
    ("entries", "hint"),
    [
        (["-tp=8"], "write the long name (--tensor-parallel-size=8, not -tp 8)"),
        (["--seed", "3"], "put a value in its flag's entry (--seed=3, not --seed and 3)"),
        (["--attention_config.use_fp4_indexer_cache=True"], "pass the whole JSON object"),
        (["--max_num_seqs=8"], "lower case with dashes (--max-num-seqs)"),
    ],
)
def test_entries_copied_from_vllm_docs_are_told_the_form_to_use(
    entries: list[str], hint: str
) -> None:
    """New-user trial (h27 finding 8): they got only the pattern."""
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec({**BASE, "engine": {"extraArgs": entries}})
    assert hint in str(caught.value)
    assert "each entry is one long flag, --flag or --flag=value" in str(caught.value)
