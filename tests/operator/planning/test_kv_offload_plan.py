"""The plan's host KV cache (`--kv-offloading-size`): its finding, its term, its /dev/shm share.

Hand-computed: TP4 DP2 on one 8-GPU node runs 2 engines per pod (DP ranks, each its own vLLM
engine with its own `OffloadingConnector`), so 1.5 GiB per engine is 2 x 1.5 x 2^30 =
3,221,225,472 B per pod, added after the /dev/shm cap and the long-context raise.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from dsv4_operator.planning import plan, plan_to_dict
from dsv4_operator.planning.findings import Code, PlanningError, Setting
from dsv4_operator.planning.from_spec import spec_words
from dsv4_operator.planning.request import PlanRequest
from dsv4_operator.planning.shm import SHM_CAP_BYTES, shm_bytes

_BASE = PlanRequest(
    model="flash",
    gpu_types=("h100-80gb",),
    gpus_per_node=8,
    max_nodes=1,
    tensor_parallel=4,
    data_parallel=2,
)
_POD_BYTES = 3_221_225_472


def test_the_plan_counts_each_engine_s_host_kv_cache_in_the_pod_s_shm() -> None:
    without = plan(_BASE)
    offloaded = plan(dataclasses.replace(_BASE, kv_offloading_gib=1.5))
    assert offloaded.chosen.layout == without.chosen.layout
    assert offloaded.shm.kv_offload_bytes == _POD_BYTES
    assert offloaded.shm.size_bytes == without.shm.size_bytes + _POD_BYTES
    # offloaded prefix blocks live beside the GPU pool: the KV capacity does not change
    assert offloaded.chosen.memory.kv_cache_bytes == without.chosen.memory.kv_cache_bytes
    assert without.shm.kv_offload_bytes == 0
    assert Code.KV_OFFLOAD not in [w.code for w in without.warnings]


def test_the_kv_offload_finding_holds_the_size_as_a_term() -> None:
    offloaded = plan(dataclasses.replace(_BASE, kv_offloading_gib=1.5))
    (finding,) = [w for w in offloaded.warnings if w.code is Code.KV_OFFLOAD]
    (term,) = finding.terms
    assert (term.setting, term.value, term.bound) == (Setting.KV_OFFLOADING_GIB, 1.5, "exact")
    assert "2 engines per pod = 3,221,225,472 B" in finding.message
    # the operator's words give the size as the flag takes it, not truncated to 1
    assert "1.5 GiB per engine" in finding.worded(spec_words)
    doc = plan_to_dict(offloaded)
    assert doc["kv_offload_bytes"] == _POD_BYTES
    assert doc["shm_size_bytes"] == offloaded.shm.size_bytes
    (warning,) = [w for w in doc["warnings"] if w["code"] == "KV_OFFLOAD"]
    assert warning["terms"] == [
        {
            "setting": "kv_offloading_gib",
            "value": 1.5,
            "bound": "exact",
            "flag": "--kv-offloading-size",
            "spec_field": "spec.engine.extraArgs",
            "spec_value": None,
        }
    ]


def test_the_host_kv_cache_is_not_capped_with_the_rest_of_shm() -> None:
    # 100 GiB per engine is beyond the 64 GiB cap of the planned /dev/shm: vLLM needs it whole
    shm = shm_bytes(
        plan(_BASE).chosen.layout,
        nvlink=True,
        max_num_seqs=1,
        max_model_len=4096,
        kv_offload_bytes=2 * (100 << 30),
    )
    assert shm.size_bytes == (2 << 30) + 2 * (100 << 30)  # 1 GiB floor + queues/NCCL -> 2 GiB
    assert shm.size_bytes > SHM_CAP_BYTES


@pytest.mark.parametrize("gib", [-1.0, math.nan, math.inf, 4097.0])
def test_a_bad_host_kv_cache_size_names_the_field(gib: float) -> None:
    with pytest.raises(PlanningError) as caught:
        plan(dataclasses.replace(_BASE, kv_offloading_gib=gib))
    assert caught.value.field == "kv_offloading_gib"
    assert "from 0 to 4096 GiB" in str(caught.value)


def test_a_host_kv_cache_the_plan_cannot_size_is_warned_not_counted() -> None:
    """h34: LMCache and the other host KV caches vLLM runs but the plan cannot size were refused
    (InvalidSpec); they plan now, unchanged, with a warning naming them and the fix."""
    without = plan(_BASE)
    named = plan(dataclasses.replace(_BASE, host_kv_not_counted=("LMCacheConnectorV1 (why)",)))
    assert named.shm == without.shm
    assert named.chosen == without.chosen
    assert Code.HOST_KV_NOT_COUNTED not in [w.code for w in without.warnings]
    (finding,) = [w for w in named.warnings if w.code is Code.HOST_KV_NOT_COUNTED]
    assert "LMCacheConnectorV1 (why)" in finding.message
    assert "spec.resources.requests.memory" in finding.message
    assert "--kv-offloading-size=N" in finding.message
    # the fix first: status cuts a warning at 1,024 characters, and the names can be long
    assert finding.message.index("--kv-offloading-size=N") < finding.message.index("LMCache")
    # the other warnings are those of the plan without it
    assert [w for w in named.warnings if w is not finding] == list(without.warnings)
    doc = plan_to_dict(named)
    assert doc["kv_offload_bytes"] == 0
    assert "HOST_KV_NOT_COUNTED" in [w["code"] for w in doc["warnings"]]


def test_a_counted_cache_beside_an_uncounted_one_stays_counted() -> None:
    both = plan(dataclasses.replace(_BASE, kv_offloading_gib=1.5, host_kv_not_counted=("LMCache",)))
    assert both.shm.kv_offload_bytes == _POD_BYTES
    codes = [w.code for w in both.warnings]
    assert Code.KV_OFFLOAD in codes
    assert Code.HOST_KV_NOT_COUNTED in codes


def test_a_per_rank_host_kv_cache_counts_once_per_tp_rank_of_every_engine() -> None:
    """h34: SimpleCPUOffloadConnector's `cpu_bytes_to_use_per_rank` is bytes per TP rank
    (simple_cpu_offload_connector.py: it overrides cpu_bytes_to_use / world_size). Restated by
    hand: TP4 DP2 on one 8-GPU node is 2 engines x 4 ranks, so 1 GiB per rank is 8 GiB per pod."""
    without = plan(_BASE)
    per_rank = plan(dataclasses.replace(_BASE, kv_offload_rank_bytes=1 << 30))
    assert per_rank.chosen.layout == without.chosen.layout
    assert per_rank.shm.kv_offload_bytes == 8 << 30
    assert per_rank.shm.size_bytes == without.shm.size_bytes + (8 << 30)
    (finding,) = [w for w in per_rank.warnings if w.code is Code.KV_OFFLOAD]
    assert finding.terms == ()
    assert "1,073,741,824 B per TP rank x 4 TP ranks x 2 engines per pod = 8,589,934,592 B" in (
        finding.message
    )
    # beside a per-engine size, both count
    both = plan(dataclasses.replace(_BASE, kv_offloading_gib=1.5, kv_offload_rank_bytes=1 << 30))
    assert both.shm.kv_offload_bytes == _POD_BYTES + (8 << 30)


@pytest.mark.parametrize("size", [-1, (4097 << 30)])
def test_a_bad_per_rank_host_kv_cache_names_the_field(size: int) -> None:
    with pytest.raises(PlanningError) as caught:
        plan(dataclasses.replace(_BASE, kv_offload_rank_bytes=size))
    assert caught.value.field == "kv_offload_rank_bytes"
