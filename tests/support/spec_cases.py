"""DeepSeekV4Deployment bodies for checking the CRD's rules against the operator's parse.

Shared by the offline CEL tests (`tests/operator/api/test_cel.py`, cel-expr-python) and the
e2e tests on the CEL-capable CRD server (`tests/e2e/test_crd_cel.py`), so both gates are asked
about the same resources.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from dsv4_operator.api import InvalidSpecError, parse_deployment

BASE: dict[str, Any] = {
    "apiVersion": "dsv4.io/v1alpha1",
    "kind": "DeepSeekV4Deployment",
    "metadata": {"name": "x"},
    "spec": {"model": "flash", "gpu": {"types": ["h200-141gb"]}},
}
"""The smallest valid resource: flash on H200s, every other field defaulted."""


def with_spec(**fields: Any) -> dict[str, Any]:
    """A deep copy of BASE with `fields` set on its spec."""
    body = copy.deepcopy(BASE)
    body["spec"].update(fields)
    return body


def parse_accepts(body: dict[str, Any]) -> bool:
    """Whether the operator's pydantic parse accepts `body`."""
    try:
        parse_deployment(body)
    except InvalidSpecError:
        return False
    return True


OPTIONAL_SIZE = st.one_of(st.none(), st.sampled_from([1, 2, 3, 4, 5, 8, 16]))

PARALLELISM_CASES = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["flash", "pro"]),
        "gpusPerNode": st.sampled_from([None, 1, 2, 4, 6, 8]),  # None: the type's node size
        "maxNodes": st.sampled_from([1, 2, 3]),
        "tensor": OPTIONAL_SIZE,
        "data": OPTIONAL_SIZE,
        "pipeline": OPTIONAL_SIZE,
        "expert": st.one_of(st.none(), st.sampled_from([1, 2, 3, 4, 6, 8, 16, 24, 32])),
    }
)
"""Model, node shape and optional parallel sizes, for the layout rules."""


def parallelism_body(case: dict[str, Any]) -> dict[str, Any]:
    """The resource for one PARALLELISM_CASES draw."""
    sizes = {key: case[key] for key in ("tensor", "data", "pipeline", "expert")}
    return with_spec(
        model=case["model"],
        gpu={
            "types": ["h100-80gb"],
            "maxNodes": case["maxNodes"],
            **({} if case["gpusPerNode"] is None else {"gpusPerNode": case["gpusPerNode"]}),
        },
        parallelism={key: value for key, value in sizes.items() if value is not None},
    )


SCALING_CASES = st.fixed_dictionaries(
    {
        "enabled": st.booleans(),
        "mode": st.sampled_from(["native", "keda", "hpa"]),
        "minReplicas": st.integers(0, 4),
        "maxReplicas": st.integers(1, 4),
        "replicas": st.integers(0, 5),
        "idle": st.one_of(st.none(), st.just(600)),
        "maxSurge": st.sampled_from([0, 1, "0%", "25%"]),
        "maxUnavailable": st.sampled_from([0, 1, "0%", "100%"]),
    }
)
"""Replicas, autoscaling bounds and rollout values, for the scaling rules."""


def scaling_body(case: dict[str, Any]) -> dict[str, Any]:
    """The resource for one SCALING_CASES draw."""
    autoscaling = {key: case[key] for key in ("enabled", "mode", "minReplicas", "maxReplicas")}
    if case["idle"] is not None:
        autoscaling["scaleToZeroIdleSeconds"] = case["idle"]
    return with_spec(
        replicas=case["replicas"],
        autoscaling=autoscaling,
        rollout={"maxSurge": case["maxSurge"], "maxUnavailable": case["maxUnavailable"]},
    )
