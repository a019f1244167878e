"""Every example plans, and the examples behind issue 2's acceptance plan as expected."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from dsv4_operator.api.v1alpha1.deployment import parse_deployment
from dsv4_operator.planning import plan
from dsv4_operator.planning.from_spec import request_from_spec

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))


def plan_example(path: Path) -> object:
    return plan(request_from_spec(parse_deployment(yaml.safe_load(path.read_text())).spec))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_plans(path: Path) -> None:
    p = plan_example(path)
    assert p.fits, [w.message for w in p.warnings]  # type: ignore[attr-defined]


def test_flash_int4_on_rtx_5090_reports_its_reduced_context() -> None:
    path = next(e for e in EXAMPLES if e.stem == "flash-int4-8x-rtx5090")
    spec = parse_deployment(yaml.safe_load(path.read_text())).spec
    pinned = plan(request_from_spec(spec))
    auto = plan(dataclasses.replace(request_from_spec(spec), max_model_len=None))
    assert pinned.fits
    assert auto.fits
    assert pinned.chosen.max_model_len <= auto.chosen.max_model_len < 1_048_576
    assert any(f"max-model-len auto: {auto.chosen.max_model_len:,}" in r for r in auto.reasons)
