"""Static checks of the images: pinned bases, the right extras, no torch in the operator image."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from dsv4_runtime.config import RuntimeConfig
from dsv4_runtime.preflight import MIN_VLLM

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "runtime" / "Dockerfile"
OPERATOR = REPO / "operator" / "Dockerfile"
HEAVY = {"torch", "triton", "vllm", "numpy", "safetensors", "transformers"}


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _from(path: Path) -> list[str]:
    return [args for word, args in _instructions(path) if word == "FROM"]


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.mark.parametrize("path", [RUNTIME, OPERATOR], ids=["runtime", "operator"])
def test_bases_are_pinned(path: Path) -> None:
    bases = _from(path)
    assert bases, f"{path} has no FROM"
    for base in bases:
        image = base.split()[0]
        assert "@sha256:" in image or re.search(r":v?\d+\.\d+\.\d+", image), (
            f"{path.name}: {image} is not pinned to an exact version"
        )
        assert not image.endswith(":latest")


def test_runtime_base_is_a_vllm_with_deepseek_v4() -> None:
    (base,) = _from(RUNTIME)
    match = re.fullmatch(r"vllm/vllm-openai:v(\d+\.\d+\.\d+)", base)
    assert match, base
    assert Version(match.group(1)) >= MIN_VLLM


def test_runtime_base_matches_the_tested_flag_list(vllm_flags: dict[str, Any]) -> None:
    assert "--headless" in vllm_flags  # the fixture is the one the command lines are tested on
    (base,) = _from(RUNTIME)
    assert base == "vllm/vllm-openai:v0.33.0", "bump the fixtures with the image"


def test_runtime_image_installs_the_runtime_extra_and_runs_dsv4_runtime() -> None:
    runs = " ".join(args for word, args in _instructions(RUNTIME) if word == "RUN")
    assert '".[runtime]"' in runs
    assert "-c /tmp/vllm-constraints.txt" in runs, "must not change vLLM's own dependencies"
    entry = [args for word, args in _instructions(RUNTIME) if word == "ENTRYPOINT"]
    assert entry == ['["/usr/bin/tini", "--", "dsv4-runtime"]']
    exposed = [args for word, args in _instructions(RUNTIME) if word == "EXPOSE"]
    defaults = RuntimeConfig(engine="vllm", model="m", served_model_name="m")
    assert exposed == [f"{defaults.api_port} {defaults.admin_port}"]


def test_operator_image_installs_no_torch() -> None:
    (base,) = _from(OPERATOR)
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim(-\w+)?", base), base
    installs = [
        command.strip()
        for word, args in _instructions(OPERATOR)
        if word == "RUN"
        for command in args.split("&&")
        if "pip install" in command
    ]
    assert installs == ['python -m pip install ".[operator]"']
    checks = " ".join(args for word, args in _instructions(OPERATOR) if word == "RUN")
    assert "! python -m pip show torch" in checks, "the build must fail if torch got in"
    project = _pyproject()["project"]
    closure = [*project["dependencies"], *project["optional-dependencies"]["operator"]]
    assert not {Requirement(r).name.lower() for r in closure} & HEAVY


def test_copied_sources_exist_and_are_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests"} <= ignored
    for path in (RUNTIME, OPERATOR):
        for word, args in _instructions(path):
            if word == "COPY":
                *sources, _ = args.split()
                for source in sources:
                    assert (REPO / source).exists(), f"{path.name}: COPY {source} is missing"
                    assert source.split("/")[0] not in ignored, f"{source} is in .dockerignore"
