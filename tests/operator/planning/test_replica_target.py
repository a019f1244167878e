"""The tokens/s target's replica count: its limits are checked.

h37: `max_replicas` and `total_gpu_budget` (the replica cap and `spec.gpu.budget` a tokens/s
target is held to) were not checked: 0 and -1 planned ("at most -1 are allowed") and NaN
silently lifted the cap; without a cap a target planned at any replica count (1e9 tokens/s:
15,806 replicas "fit", though a resource takes at most 1,000).
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from dsv4_operator.api.v1alpha1.scaling import MAX_REPLICAS
from dsv4_operator.planning import Code, PlanningError, PlanRequest, plan

BASE = PlanRequest(model="flash", gpu_types=("h200-141gb",), gpus_per_node=8)


@pytest.mark.parametrize("field", ["max_replicas", "total_gpu_budget", "gpu_budget"])
@pytest.mark.parametrize(
    ("value", "words"),
    [(0, "at least 1"), (-1, "at least 1"), (math.nan, "at least 1"), (10**30, "the limit of")],
)
def test_a_bad_replica_cap_or_budget_is_refused_naming_the_field(
    field: str, value: float, words: str
) -> None:
    with pytest.raises(PlanningError) as caught:
        plan(dataclasses.replace(BASE, tokens_per_second=5000, **{field: value}))
    assert caught.value.field == field
    assert words in caught.value.detail


@pytest.mark.parametrize(("field", "most"), [("max_replicas", 1000), ("total_gpu_budget", 100_000)])
def test_the_limits_are_the_resources(field: str, most: int) -> None:
    assert plan(dataclasses.replace(BASE, tokens_per_second=5000, **{field: most})).fits
    with pytest.raises(PlanningError, match=f"limit of {most:,}"):
        plan(dataclasses.replace(BASE, tokens_per_second=5000, **{field: most + 1}))


def test_without_a_cap_a_target_is_held_to_the_resources_replica_limit() -> None:
    p = plan(dataclasses.replace(BASE, tokens_per_second=1_000_000_000))
    assert not p.fits
    assert p.chosen.replicas_for_target is not None
    assert p.chosen.replicas_for_target > MAX_REPLICAS
    (finding,) = [w for w in p.warnings if w.code is Code.TOKENS_TARGET_EXCEEDS_REPLICAS]
    assert f"at most {MAX_REPLICAS:,} are allowed" in finding.message
