"""The tokens/s target's replica count: its limits are checked, and its warning has terms.

h37: `max_replicas` and `total_gpu_budget` (the replica cap and `spec.gpu.budget` a tokens/s
target is held to) were not checked: 0 and -1 planned ("at most -1 are allowed") and NaN
silently lifted the cap; without a cap a target planned at any replica count (1e9 tokens/s:
15,806 replicas "fit", though a resource takes at most 1,000). And TOKENS_TARGET_EXCEEDS_REPLICAS
was the only setting-naming warning without `terms`: a script had to parse the English.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from dsv4_operator.api import parse_spec
from dsv4_operator.api.v1alpha1.scaling import MAX_REPLICAS
from dsv4_operator.planning import Code, Plan, PlanningError, PlanRequest, plan, plan_to_dict
from dsv4_operator.planning.findings import Setting
from dsv4_operator.planning.from_spec import request_from_spec, spec_words

BASE = PlanRequest(model="flash", gpu_types=("h200-141gb",), gpus_per_node=8)


def _with(field: str, value: float) -> PlanRequest:
    """`BASE` at 5,000 tokens/s with request field `field` set to `value`."""
    changes: dict[str, Any] = {"tokens_per_second": 5000, field: value}
    return dataclasses.replace(BASE, **changes)


@pytest.mark.parametrize("field", ["max_replicas", "total_gpu_budget", "gpu_budget"])
@pytest.mark.parametrize(
    ("value", "words"),
    [(0, "at least 1"), (-1, "at least 1"), (math.nan, "at least 1"), (10**30, "the limit of")],
)
def test_a_bad_replica_cap_or_budget_is_refused_naming_the_field(
    field: str, value: float, words: str
) -> None:
    with pytest.raises(PlanningError) as caught:
        plan(_with(field, value))
    assert caught.value.field == field
    assert words in caught.value.detail


@pytest.mark.parametrize(("field", "most"), [("max_replicas", 1000), ("total_gpu_budget", 100_000)])
def test_the_limits_are_the_resources(field: str, most: int) -> None:
    assert plan(_with(field, most)).fits
    with pytest.raises(PlanningError, match=f"limit of {most:,}"):
        plan(_with(field, most + 1))


def _replica_findings(p: Plan) -> list[dict[str, Any]]:
    doc = plan_to_dict(p)
    found = [w for w in doc["warnings"] if w["code"] == "TOKENS_TARGET_EXCEEDS_REPLICAS"]
    for r in doc["rejected"]:
        found += [f for f in r["reasons"] if f["code"] == "TOKENS_TARGET_EXCEEDS_REPLICAS"]
    return found


def test_without_a_cap_a_target_is_held_to_the_resources_replica_limit() -> None:
    p = plan(dataclasses.replace(BASE, tokens_per_second=1_000_000_000))
    assert not p.fits
    assert p.chosen.replicas_for_target is not None
    assert p.chosen.replicas_for_target > MAX_REPLICAS
    (finding,) = [w for w in p.warnings if w.code is Code.TOKENS_TARGET_EXCEEDS_REPLICAS]
    assert f"at most {MAX_REPLICAS:,} are allowed" in finding.message


def test_the_replica_cap_warning_has_the_target_as_a_term() -> None:
    p = plan(dataclasses.replace(BASE, tokens_per_second=1_000_000, max_replicas=2))
    assert not p.fits
    (finding,) = [w for w in p.warnings if w.code is Code.TOKENS_TARGET_EXCEEDS_REPLICAS]
    # The sentence is as before (the --output json contract); the term carries its target.
    assert finding.message == (
        f"1,000,000 tokens/s at ~{p.chosen.tokens_per_second:,} tokens/s per replica needs "
        f"{p.chosen.replicas_for_target} replicas; at most 2 are allowed"
    )
    (target,) = finding.terms
    assert (target.setting, target.value, target.bound) == (
        Setting.TOKENS_PER_SECOND,
        1_000_000,
        "exact",
    )
    (data,) = [w for w in plan_to_dict(p)["warnings"] if w["code"] == finding.code]
    assert data["terms"] == [
        {
            "setting": "tokens_per_second",
            "value": 1_000_000,
            "bound": "exact",
            "flag": "--tokens-per-second",
            "spec_field": "spec.load.tokensPerSecond",
            "spec_value": 1_000_000,
        }
    ]


def test_the_budget_warning_has_terms_too() -> None:
    p = plan(dataclasses.replace(BASE, tokens_per_second=100_000, total_gpu_budget=4))
    assert not p.fits
    found = _replica_findings(p)
    assert found
    for f in found:
        settings = [t["setting"] for t in f["terms"]]
        assert settings
        assert set(settings) == {"tokens_per_second"}


def test_the_operator_says_the_terms_in_spec_fields() -> None:
    spec = parse_spec(
        {
            "model": "flash",
            "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8},
            "load": {"tokensPerSecond": 100_000},
        }
    )
    p = plan(request_from_spec(spec))
    (finding,) = [w for w in p.warnings if w.code is Code.TOKENS_TARGET_EXCEEDS_REPLICAS]
    words = finding.worded(spec_words)
    assert words.startswith("100000 tokens/s at ~")  # as spec.load.tokensPerSecond takes it
    assert words.endswith("; at most 1 are allowed")
