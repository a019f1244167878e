"""`spec.replicas` under autoscaling: a count below minReplicas is accepted and left to the scaler.

Before, `minReplicas: 2` without `replicas` (default 1) was refused, so an autoscaled manifest
had to state `replicas`, and every `kubectl apply` or GitOps sync put the scaled count back.
Now both gates (the API server's CEL, offline here and live in tests/e2e/test_crd_cel.py, and
the pydantic parse) accept 1 .. maxReplicas, and 0 only with minReplicas 0, as an HPA treats
its target (kubernetes pkg/controller/podautoscaler/horizontal.go).
"""

import copy
from typing import Any

import pytest
from tests.operator.api.test_malformed import BASE

from dsv4_operator.api import InvalidSpecError, parse_deployment


def _body(scaling: dict[str, Any], replicas: int | None) -> dict[str, Any]:
    body = copy.deepcopy(BASE)
    body["spec"]["autoscaling"] = {"enabled": True, **scaling}
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    return body


@pytest.mark.parametrize("mode", ["native", "keda", "hpa"])
@pytest.mark.parametrize(("minimum", "replicas"), [(2, None), (3, 1), (4, 2), (4, 4)])
def test_below_min_replicas_is_accepted(
    mode: str, minimum: int, replicas: int | None, validate: Any
) -> None:
    body = _body({"mode": mode, "minReplicas": minimum, "maxReplicas": 4}, replicas)
    assert validate(body) == []
    spec = parse_deployment(body).spec
    assert spec.replicas == (1 if replicas is None else replicas)
    assert spec.autoscaling.min_replicas == minimum


def test_zero_replicas_with_scale_to_zero_is_accepted(validate: Any) -> None:
    scaling = {"minReplicas": 0, "maxReplicas": 2, "scaleToZeroIdleSeconds": 600}
    body = _body(scaling, 0)
    assert validate(body) == []
    assert parse_deployment(body).spec.replicas == 0


@pytest.mark.parametrize(("minimum", "replicas"), [(1, 0), (2, 0), (1, 5)])
def test_zero_or_above_max_is_still_refused(minimum: int, replicas: int, validate: Any) -> None:
    body = _body({"minReplicas": minimum, "maxReplicas": 4}, replicas)
    assert validate(body), "the API server must refuse it"
    with pytest.raises(InvalidSpecError, match="replicas"):
        parse_deployment(body)
