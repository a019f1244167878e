"""NVLink SHARP: off in every engine container unless the spec sets it, and then a warning.

The plan's NCCL memory was measured on 2 GPUs, where NCCL never uses NVLS
(benchmarks/reports/2026-11-30-startup-memory-h200.md); on NVSwitch nodes NCCL turns it on by
default for communicators of more than 2 GPUs and allocates multicast buffers the plan does
not hold (vLLM issue #9699).
"""

from __future__ import annotations

from typing import Any

import pytest

from dsv4_operator.api import parse_spec
from dsv4_operator.planning import Code, plan
from dsv4_operator.planning.from_spec import request_from_spec
from dsv4_operator.render import Owner
from dsv4_operator.render.leaderworkerset import leaderworkerset

_BASE: dict[str, Any] = {
    "model": "flash",
    "gpu": {"types": ["h200-141gb"], "maxNodes": 1},
    "load": {"concurrency": 512},  # DP8: communicators of 8 GPUs, where NCCL may use NVLS
}


def _rendered(env: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Code]]:
    spec = parse_spec({**_BASE, "engine": {"env": env}})
    planned = plan(request_from_spec(spec))
    assert planned.chosen.layout.gpus_per_node == 8
    lws = leaderworkerset(Owner("x", "ns", "uid"), spec, planned, image="default")
    templates = [
        lws["spec"]["leaderWorkerTemplate"][key]["spec"]
        for key in ("leaderTemplate", "workerTemplate")
        if key in lws["spec"]["leaderWorkerTemplate"]
    ]
    assert templates
    nvls = []
    for template in templates:
        found = [e for e in template["containers"][0]["env"] if e["name"] == "NCCL_NVLS_ENABLE"]
        assert len(found) == 1  # once per container: the user's entry or the operator's
        nvls += found
    return nvls, [w.code for w in planned.warnings]


def test_nvls_is_off_by_default_and_the_plan_says_nothing() -> None:
    nvls, warnings = _rendered([])
    assert nvls
    assert all(e == {"name": "NCCL_NVLS_ENABLE", "value": "0"} for e in nvls)
    assert Code.NVLS_NOT_COUNTED not in warnings


@pytest.mark.parametrize(
    ("var", "warned"),
    [
        ({"name": "NCCL_NVLS_ENABLE", "value": "0"}, False),
        ({"name": "NCCL_NVLS_ENABLE", "value": "1"}, True),
        ({"name": "NCCL_NVLS_ENABLE", "value": "2"}, True),
        (
            {
                "name": "NCCL_NVLS_ENABLE",
                "valueFrom": {"configMapKeyRef": {"name": "nccl", "key": "nvls"}},
            },
            True,
        ),
    ],
)
def test_the_specs_value_is_kept_and_nvls_on_is_warned(var: dict[str, Any], warned: bool) -> None:
    nvls, warnings = _rendered([var])
    assert nvls
    assert all(e == var for e in nvls)  # the user's entry only, never a second one
    assert (Code.NVLS_NOT_COUNTED in warnings) is warned


def test_no_warning_where_no_communicator_spans_more_than_two_gpus() -> None:
    spec = parse_spec(
        {
            "model": "flash",
            "gpu": {"types": ["h200-141gb"], "maxNodes": 1},
            "engine": {"env": [{"name": "NCCL_NVLS_ENABLE", "value": "1"}]},
        }
    )
    planned = plan(request_from_spec(spec))
    assert planned.chosen.layout.gpus_per_node == 2
    assert Code.NVLS_NOT_COUNTED not in [w.code for w in planned.warnings]
