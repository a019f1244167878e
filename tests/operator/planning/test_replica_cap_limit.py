"""A tokens/s target that needs more replicas than a resource takes is not "raise the cap".

5a2c01f bounded the planner's replica cap at the resource's most (`MAX_REPLICAS`, 1,000: the
CRD's maximum of spec.replicas and spec.autoscaling.maxReplicas). `replica_cap_words` still
told the user to raise the cap ("spec.autoscaling.maxReplicas 1000 caps the replicas
spec.load.tokensPerSecond may use (raise it)"), which the API server refuses above 1,000.
"""

import copy
from typing import Any

import pytest

from dsv4_operator.api import parse_spec
from dsv4_operator.api.v1alpha1.scaling import MAX_REPLICAS
from dsv4_operator.planning import plan
from dsv4_operator.planning.from_spec import replica_cap_words, request_from_spec

_BASE: dict[str, Any] = {
    "model": "flash",
    "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8, "maxNodes": 1},
    "load": {"tokensPerSecond": 100_000_000},  # ~15,500 replicas of 8 H200
}


def _autoscaled(max_replicas: int) -> dict[str, Any]:
    body = copy.deepcopy(_BASE)
    body["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": max_replicas}
    return body


def _fixed(replicas: int) -> dict[str, Any]:
    return {**copy.deepcopy(_BASE), "replicas": replicas}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_autoscaled(MAX_REPLICAS), "spec.autoscaling.maxReplicas"),
        (_autoscaled(4), "spec.autoscaling.maxReplicas"),
        (_fixed(MAX_REPLICAS), "spec.replicas"),
        (_fixed(2), "spec.replicas"),
    ],
)
def test_a_target_beyond_the_most_replicas_names_that_limit(
    body: dict[str, Any], field: str
) -> None:
    spec = parse_spec(body)
    planned = plan(request_from_spec(spec))
    assert not planned.fits
    needed = planned.chosen.replicas_for_target
    assert needed is not None
    assert needed > MAX_REPLICAS
    words = replica_cap_words(spec, planned)
    assert words is not None
    assert words.startswith(f"{field} ")
    assert "raise" not in words, words  # no cap the API server takes holds the target
    assert f"{MAX_REPLICAS:,}" in words
    assert "spec.load.tokensPerSecond" in words


def test_a_target_within_the_most_replicas_still_says_raise_it() -> None:
    body = copy.deepcopy(_autoscaled(2))
    body["load"] = {"tokensPerSecond": 50_000}
    spec = parse_spec(body)
    planned = plan(request_from_spec(spec))
    words = replica_cap_words(spec, planned)
    assert words is not None
    assert "spec.autoscaling.maxReplicas 2 caps" in words
    assert "raise it to " in words
