"""The spec-to-request mapping: what replicas share the load target and the GPU budget."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dsv4_operator.api import parse_spec
from dsv4_operator.handlers.autoscaler import config_from
from dsv4_operator.planning import plan
from dsv4_operator.planning.findings import Code, Finding, Setting, Term
from dsv4_operator.planning.from_spec import (
    SPEC_FIELDS,
    planning_replicas,
    request_from_spec,
    spec_path,
    spec_words,
)
from dsv4_operator.render.labels import Owner
from dsv4_operator.render.leaderworkerset import READY_FAILURE_THRESHOLD, READY_PERIOD_SECONDS
from dsv4_operator.render.manifests import render_children

AUTOSCALED: dict[str, Any] = {
    "model": "flash",
    "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8, "budget": 32},
    "load": {"concurrency": 256},
    "autoscaling": {"enabled": True, "mode": "native", "minReplicas": 1, "maxReplicas": 4},
}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(base)
    body.update(changes)
    return body


@pytest.mark.parametrize("mode", ["native", "keda", "hpa"])
def test_autoscaled_plan_does_not_follow_the_replicas_the_autoscaler_writes(mode: str) -> None:
    """Review finding: each scale event re-planned (budget and concurrency divided by the new
    spec.replicas), which changed the pod template (every group rolled) and lowered the default
    tokens/s target as replicas rose, so the autoscaler ran away to maxReplicas."""
    templates, targets, requests = set(), set(), set()
    for replicas in (1, 2, 3, 4):
        body = _with(AUTOSCALED, replicas=replicas)
        body["autoscaling"] = {**body["autoscaling"], "mode": mode}
        spec = parse_spec(body)
        planned = plan(request_from_spec(spec))
        assert planned.fits
        lws = next(
            c
            for c in render_children(Owner("d", "ns", "u"), spec, planned, image="img:1")
            if c["kind"] == "LeaderWorkerSet"
        )
        templates.add(repr(lws["spec"]["leaderWorkerTemplate"]))
        targets.add(config_from(spec, planned).target_tokens_per_second)
        requests.add(repr(request_from_spec(spec)))
    assert len(requests) == 1
    assert len(templates) == 1
    assert len(targets) == 1


def test_autoscaled_shares_concurrency_over_max_and_budget_over_min() -> None:
    spec = parse_spec(_with(AUTOSCALED, replicas=2))
    assert planning_replicas(spec) == (4, 1)
    req = request_from_spec(spec)
    assert req.concurrency == 64  # 256 over maxReplicas 4: the target holds at full scale
    assert req.gpu_budget == 32  # the floor of 1 replica may use the whole budget
    assert req.total_gpu_budget == 32
    # The autoscaler then keeps replicas x GPUs within the budget.
    cfg = config_from(spec, plan(req))
    assert cfg.ceiling * cfg.gpus_per_replica <= 32
    # A drained group is removed only after its last failing readiness probe and one period
    # more for the endpoint update (h33: exactly 3 x 10 s left no margin).
    assert cfg.drain_settle_seconds > READY_PERIOD_SECONDS * READY_FAILURE_THRESHOLD


def test_scale_to_zero_floor_counts_one_replica() -> None:
    body = _with(AUTOSCALED, replicas=0)
    body["autoscaling"] = {**body["autoscaling"], "minReplicas": 0, "scaleToZeroIdleSeconds": 600}
    assert planning_replicas(parse_spec(body)) == (4, 1)


def test_fixed_replicas_share_both_over_spec_replicas() -> None:
    body = _with(AUTOSCALED, replicas=3)
    body["autoscaling"] = {"enabled": False}
    spec = parse_spec(body)
    assert planning_replicas(spec) == (3, 3)
    req = request_from_spec(spec)
    assert req.concurrency == 86  # ceil(256 / 3)
    assert req.gpu_budget == 10  # 32 // 3


@pytest.mark.parametrize(("gpu", "per_node"), [("gb200-186gb", 4), ("gh200-96gb", 4)])
def test_unset_gpus_per_node_takes_the_types_node_size(gpu: str, per_node: int) -> None:
    """Planner audit: `gpusPerNode` defaulted to 8, so a GB200 or GH200 resource (4 GPUs per
    node) was planned as pods of 8 GPUs that no node could hold."""
    spec = parse_spec({"model": "pro", "gpu": {"types": [gpu], "maxNodes": 4}})
    assert spec.gpu.gpus_per_node is None
    chosen = plan(request_from_spec(spec)).chosen.layout
    assert chosen.gpus_per_node <= per_node
    pinned = parse_spec({"model": "flash", "gpu": {"types": [gpu], "gpusPerNode": 2}})
    assert plan(request_from_spec(pinned)).chosen.layout.gpus_per_node <= 2
    # Objects stored under the old CRD default keep gpusPerNode 8 (diff review): say so.
    stored = parse_spec({"model": "pro", "gpu": {"types": [gpu], "gpusPerNode": 8}})
    warned = plan(request_from_spec(stored))
    assert warned.chosen.layout.gpus_per_node == 8
    assert "GPUS_PER_NODE_ABOVE_TYPE" in {str(w.code) for w in warned.warnings}
    assert "GPUS_PER_NODE_ABOVE_TYPE" not in {
        str(w.code) for w in plan(request_from_spec(spec)).warnings
    }


@pytest.mark.parametrize(
    ("term", "said"),
    [
        (Term(Setting.GPU_MEMORY_UTILIZATION, 0.98, "most"), "98"),
        (Term(Setting.GPU_MEMORY_UTILIZATION, 0.9799, "most"), "97"),
        (Term(Setting.GPU_MEMORY_UTILIZATION, 0.6349, "least"), "64"),
        (Term(Setting.GPU_MEMORY_UTILIZATION, 0.63, "least"), "63"),  # not 64: 0.63 x 100 exactly
        (Term(Setting.GPU_MEMORY_UTILIZATION, 0.05, "least"), "10"),  # the field's minimum
        (Term(Setting.GPU_MEMORY_UTILIZATION, 0.57), "57"),
        (Term(Setting.MAX_MODEL_LEN, 595_712, "most"), "595712"),
        (Term(Setting.MAX_MODEL_LEN), "spec.maxModelLen"),
        (Term(Setting.SPECULATIVE_TOKENS), "spec.speculativeDecoding"),
    ],
)
def test_spec_words_give_the_field_and_a_value_it_takes(term: Term, said: str) -> None:
    assert spec_words(term) == said


def test_every_setting_and_request_field_has_a_spec_field_the_crd_holds() -> None:
    assert set(SPEC_FIELDS) == set(Setting)
    from dsv4_operator.crdgen import crd_dict
    from dsv4_operator.planning.from_spec import _SPEC_PATHS

    assert spec_path("tensor_parallel") == "spec.parallelism.tensor"
    assert spec_path("not_a_field") == "not_a_field"
    # Each field exists in the CRD's schema under spec (camelCase path).
    schema = crd_dict()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path in [*SPEC_FIELDS.values(), *_SPEC_PATHS.values()]:
        node = schema
        for key in path.split(".")[1:]:
            node = node["properties"][key]


def test_a_finding_keeps_its_cli_words_and_gives_the_operator_spec_fields() -> None:
    util = Setting.GPU_MEMORY_UTILIZATION
    f = Finding.said(Code.STARTUP_MEMORY_RESERVE, "use a {", Term(util), "} of ", Term(util, 0.98))
    assert f.message == "use a {gpu-memory-utilization} of 0.98"
    assert f.as_dict() == {"code": "STARTUP_MEMORY_RESERVE", "message": f.message}
    assert f.worded(spec_words) == "use a {spec.gpuMemoryUtilizationPercent} of 98"
    plain = Finding.said(Code.WEIGHTS_REPACKED, "a {literal}", " brace")
    assert plain.message == plain.worded(spec_words) == "a {literal} brace"


def test_eplb_in_extra_args_reaches_the_plan() -> None:
    """`--enable-eplb` and `--eplb-config` in spec.engine.extraArgs were passed to vLLM but not
    to the planner, which counted E / EP experts per GPU where vLLM loads (E + R) / EP."""
    spec = parse_spec(
        {
            "model": "pro",
            "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8},
            "maxModelLen": 65536,
            "engine": {
                "extraArgs": ["--enable-eplb", '--eplb-config={"num_redundant_experts": 32}']
            },
        }
    )
    request = request_from_spec(spec)
    assert (request.eplb, request.redundant_experts) == (True, 32)
    chosen = plan(request).chosen
    assert chosen.layout.expert_parallel
    assert chosen.memory.weights.eplb_buffer_bytes > 0
    assert spec_path("redundant_experts") == "spec.engine.extraArgs"


def test_deepep_low_latency_and_its_moe_chunk_reach_the_plan() -> None:
    """`--all2all-backend=deepep_low_latency` and VLLM_MOE_DP_CHUNK_SIZE size DeepEP's
    low-latency RDMA buffer (Pro: 5,725,228,160 B at 256 tokens, 2,862,615,680 B at 128)."""
    spec: dict[str, Any] = {
        "model": "pro",
        "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8, "maxNodes": 1},
        "parallelism": {"tensor": 1, "data": 8, "expert": 8},
        "maxModelLen": 65_536,
        "engine": {
            "extraArgs": ["--all2all-backend=deepep_low_latency"],
            "env": [{"name": "VLLM_MOE_DP_CHUNK_SIZE", "value": "128"}],
        },
    }
    req = request_from_spec(parse_spec(spec))
    assert (req.all2all_backend, req.moe_dp_chunk_tokens) == ("deepep_low_latency", 128)
    default = copy.deepcopy(spec)
    del default["engine"]["env"]
    assert (
        plan(request_from_spec(parse_spec(default))).chosen.memory.overhead_bytes
        - plan(req).chosen.memory.overhead_bytes
        == 5_725_228_160 - 2_862_615_680
    )
