"""Invariants of `dsv4 plan` searched with hypothesis (derandomized: the same examples every run).

Each property was first run with thousands of random examples (counts in the commit message);
the committed example counts keep the file to a few seconds. The invariants:

- the JSON adds up: budget = weights + activations + CUDA graphs + overhead + KV pool, weights per
  GPU x GPUs cover the checkpoint, TP x DP x PP = GPUs = nodes x GPUs per node, EP divides the
  routed experts, and a plan that fits holds one max-model-len request (admission size) and its
  concurrency target within its pins, nodes and budget, at a utilization vLLM starts with;
- with the layout and batch pinned, a higher utilization (up to the most vLLM starts with), a
  shorter max-model-len, or more memory per GPU (same vLLM scheduling tier) never turns "fits"
  into "does not fit", and the first two never shrink the KV pool;
- the advice of a "does not fit" answer fits when followed (layout, CPU offload, batch size,
  minimum utilization, largest max-model-len);
- `dsv4 plan` exits 0 or 1 with JSON whose `fits` agrees, or 2 naming the option, never a
  traceback; a DeepSeekV4Deployment file and the same request as flags give the same plan.
"""

import dataclasses
import json
import math
import re
from fractions import Fraction

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dsv4_operator.cli import app
from dsv4_operator.planning import GPUS, Code, PlanningError, PlanRequest, plan, plan_to_dict
from dsv4_operator.planning.evaluate import startup_reserve_bytes
from dsv4_operator.planning.findings import Setting
from dsv4_operator.planning.kvcache import BLOCK_TOKENS
from dsv4_operator.planning.models import get_model
from dsv4_operator.planning.planner import Plan
from dsv4_operator.planning.weights import checkpoint_bytes

GPU_NAMES = sorted(GPUS)


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


requests = st.builds(
    PlanRequest,
    model=st.sampled_from(["flash", "pro"]),
    weights_format=st.sampled_from(["official", "nvfp4", "fp8", "bf16", "int4"]),
    kv_cache_dtype=st.sampled_from(["fp8", "bf16"]),
    gpu_types=st.sampled_from(GPU_NAMES).map(lambda g: (g,)),
    gpus_per_node=st.one_of(st.none(), st.sampled_from([1, 2, 4, 8])),
    max_nodes=st.integers(1, 3),
    max_model_len=st.one_of(st.none(), st.integers(1, 1_048_576)),
    max_num_seqs=st.one_of(st.none(), st.integers(1, 512)),
    max_num_batched_tokens=st.one_of(st.none(), st.integers(256, 16_384)),
    gpu_memory_utilization=st.one_of(st.none(), st.integers(50, 99).map(lambda p: p / 100)),
    speculative_tokens=st.sampled_from([0, 0, 1, 2]),
    concurrency=st.one_of(st.none(), st.integers(1, 256)),
)
"""Requests a user would type: every catalog GPU and format, layout left to the planner."""

pinned_requests = st.builds(
    PlanRequest,
    model=st.sampled_from(["flash", "pro"]),
    weights_format=st.sampled_from(["official", "nvfp4", "fp8", "bf16", "int4"]),
    gpu_types=st.lists(st.sampled_from(GPU_NAMES), min_size=1, max_size=2, unique=True).map(tuple),
    gpus_per_node=st.one_of(st.none(), st.integers(1, 16)),
    max_nodes=st.integers(1, 4),
    tensor_parallel=st.one_of(st.none(), st.sampled_from([1, 2, 4, 8, 16])),
    data_parallel=st.one_of(st.none(), st.integers(1, 32)),
    expert_parallel=st.one_of(st.none(), st.booleans()),
    max_model_len=st.one_of(st.none(), st.integers(1, 1_048_576)),
    max_num_seqs=st.one_of(st.none(), st.integers(1, 2048)),
    max_num_batched_tokens=st.one_of(st.none(), st.integers(1, 65_536)),
    gpu_memory_utilization=st.one_of(st.none(), st.floats(0.01, 1.0)),
    concurrency=st.one_of(st.none(), st.integers(1, 2000)),
    tokens_per_second=st.one_of(st.none(), st.integers(1, 100_000)),
    cpu_offload_bytes=st.one_of(st.just(0), st.integers(0, 200).map(lambda g: g << 30)),
    prefetch_offload=st.one_of(
        st.none(),
        st.tuples(st.integers(1, 70), st.integers(1, 70), st.integers(1, 70)).map(
            lambda t: (t[0], min(t[1], t[0]), t[2])
        ),
    ),
    gpu_budget=st.one_of(st.none(), st.integers(1, 64)),
)
"""Requests with pinned sizes, targets, budgets and offload, valid or not."""


def _plan_or_none(req: PlanRequest) -> Plan | None:
    try:
        return plan(req)
    except PlanningError:
        return None


def _fitting(req: PlanRequest) -> Plan:
    p = _plan_or_none(req)
    assume(p is not None and p.fits)
    assert p is not None
    return p


def _unfit(req: PlanRequest) -> Plan:
    p = _plan_or_none(req)
    assume(p is not None and not p.fits)
    assert p is not None
    return p


def _pinned(p: Plan, **changes: object) -> PlanRequest:
    """`p`'s request on its chosen GPU type and layout, batch and sequences pinned too."""
    c = p.chosen
    lay = c.layout
    fixed = {
        "gpu_types": (c.gpu.name,),
        "tensor_parallel": lay.tensor_parallel,
        "data_parallel": lay.data_parallel,
        "expert_parallel": lay.expert_parallel,
        "gpus_per_node": lay.gpus_per_node,
        "max_nodes": lay.nodes,
        "gpu_budget": None,
        "max_num_seqs": c.max_num_seqs,
        "max_num_batched_tokens": c.max_num_batched_tokens,
    }
    return dataclasses.replace(p.request, **{**fixed, **changes})  # type: ignore[arg-type]


def _most_utilization(p: Plan) -> float:
    """The highest utilization (2 decimals) at which vLLM starts on `p`'s chosen layout."""
    c = p.chosen
    reserve = startup_reserve_bytes(p.request.engine, c.gpu, c.layout)
    total = c.memory.memory_bytes
    return math.floor((total - reserve) * 100 / total) / 100


@_settings(150)
@given(pinned_requests)
def test_the_json_adds_up(req: PlanRequest) -> None:
    p = _plan_or_none(req)
    assume(p is not None)
    assert p is not None
    d = plan_to_dict(p)
    lay, mem, kv, c = d["layout"], d["memory_per_gpu"], d["kv_cache"], p.chosen
    model = get_model(req.model)
    for shown in [lay] + [e["layout"] for e in d["runners_up"] + d["rejected"]]:
        assert shown["gpus"] == shown["nodes"] * shown["gpus_per_node"]
        sizes = shown["tensor_parallel"] * shown["data_parallel"] * shown["pipeline_parallel"]
        assert sizes == shown["gpus"], shown
    assert lay["expert_parallel"] in {1, lay["tensor_parallel"] * lay["data_parallel"]}
    assert model.n_routed_experts % lay["expert_parallel"] == 0
    assert mem["weights_bytes"] == (
        mem["weights_expert_bytes"]
        + mem["weights_sharded_bytes"]
        + mem["weights_replicated_bytes"]
        + mem["weights_eplb_buffer_bytes"]
        + mem["weights_offload_buffer_bytes"]
    )
    # Offloaded weights are pinned in host memory, which the pod requests (h31).
    if req.cpu_offload_bytes == 0 and req.prefetch_offload is None:
        assert d["weight_offload_host_bytes"] == 0
    elif req.cpu_offload_bytes:
        assert d["weight_offload_host_bytes"] > 0
    util = Fraction(str(mem["gpu_memory_utilization"]))
    assert mem["budget_bytes"] == c.memory.memory_bytes * util.numerator // util.denominator
    if c.memory.kv_cache_bytes >= 0:
        terms = ("weights_bytes", "activation_bytes", "cuda_graph_bytes", "overhead_bytes")
        assert mem["budget_bytes"] == sum(mem[t] for t in terms) + mem["kv_cache_bytes"]
    if req.cpu_offload_bytes == 0:
        held = checkpoint_bytes(model, d["weights_format_in_gpu"])
        assert mem["weights_bytes"] * lay["gpus"] >= held
    args = d["engine_args"]
    assert args["tensor_parallel_size"] * args["data_parallel_size"] == lay["gpus"]
    assert args["data_parallel_size_local"] * args["tensor_parallel_size"] == lay["gpus_per_node"]
    assert args["max_model_len"] == d["max_model_len"]
    blocks = mem["kv_cache_bytes"] // kv["block_bytes"]
    assert kv["tokens_per_replica"] == lay["data_parallel"] * blocks * BLOCK_TOKENS
    if not d["fits"]:
        assert Code.NO_FEASIBLE_LAYOUT in {w["code"] for w in d["warnings"]}
        return
    assert mem["shortfall_bytes"] == 0
    assert lay["nodes"] <= req.max_nodes
    assert req.gpu_budget is None or lay["gpus"] <= req.gpu_budget
    for key, pin in (
        ("tensor_parallel", req.tensor_parallel),
        ("data_parallel", req.data_parallel),
    ):
        assert pin is None or lay[key] == pin
    assert req.expert_parallel is None or c.layout.expert_parallel == req.expert_parallel
    assert req.max_model_len is None or d["max_model_len"] == req.max_model_len
    assert d["max_model_len"] >= 1
    assert mem["kv_cache_bytes"] >= kv["request_bytes"]
    assert kv["max_concurrency"] >= (req.concurrency or 1)
    assert d["max_num_seqs"] * lay["data_parallel"] >= (req.concurrency or 1)
    assert d["max_num_seqs"] <= d["max_num_batched_tokens"]
    assert c.memory.memory_bytes - mem["budget_bytes"] >= startup_reserve_bytes(
        req.engine, c.gpu, c.layout
    )
    if req.tokens_per_second:
        through = d["throughput"]
        replicas = through["replicas_for_target"]
        assert replicas * through["estimated_tokens_per_second"] >= req.tokens_per_second


@_settings(60)
@given(requests, st.integers(1, 49))
def test_a_higher_utilization_keeps_the_fit_and_the_pool(req: PlanRequest, step: int) -> None:
    p = _fitting(req)
    low = p.chosen.memory.gpu_memory_utilization
    high = min(round(low + step / 100, 2), _most_utilization(p))
    assume(high > low)
    a = plan(_pinned(p, gpu_memory_utilization=low))
    b = plan(_pinned(p, gpu_memory_utilization=high))
    assert a.fits
    assert b.fits, [w.message for w in b.warnings]
    assert b.chosen.memory.kv_cache_bytes >= a.chosen.memory.kv_cache_bytes


@_settings(60)
@given(requests, st.floats(0.0, 1.0))
def test_a_shorter_max_model_len_keeps_the_fit(req: PlanRequest, fraction: float) -> None:
    p = _fitting(req)
    length = p.chosen.max_model_len
    shorter = max(1, int(length * fraction))
    b = plan(_pinned(p, max_model_len=shorter))
    assert b.fits, [w.message for w in b.warnings]
    assert b.chosen.memory.kv_cache_bytes >= _pinned_pool(p, length)


def _pinned_pool(p: Plan, length: int) -> int:
    return plan(_pinned(p, max_model_len=length)).chosen.memory.kv_cache_bytes


@_settings(60)
@given(requests, st.integers(1, 40))
def test_more_memory_per_gpu_keeps_the_fit(req: PlanRequest, extra_gib: int) -> None:
    """Within one vLLM scheduling tier: its CUDA-graph cap grows at 70 GiB (see the report)."""
    p = _fitting(req)
    gpu = p.chosen.gpu
    bigger = dataclasses.replace(
        gpu, name="bigger", memory_bytes=gpu.memory_bytes + (extra_gib << 30)
    )
    engine = p.request.engine
    assume(
        engine.scheduling_defaults(bigger.cuda_total_bytes, bigger.name)
        == engine.scheduling_defaults(gpu.cuda_total_bytes, gpu.name)
    )
    b = plan(
        _pinned(
            p, gpu_types=("bigger",), custom_gpus=(bigger,), max_model_len=p.chosen.max_model_len
        )
    )
    assert b.fits, [w.message for w in b.warnings]
    assert b.chosen.memory.kv_cache_bytes >= p.chosen.memory.kv_cache_bytes


@_settings(60)
@given(requests)
def test_pinning_a_plan_reproduces_it(req: PlanRequest) -> None:
    p = _fitting(req)
    q = plan(_pinned(p, max_model_len=p.chosen.max_model_len))
    assert q.fits
    assert q.chosen.layout == p.chosen.layout
    assert q.chosen.memory == p.chosen.memory
    assert plan_to_dict(q)["engine_args"] == plan_to_dict(p)["engine_args"]


@_settings(50)
@given(requests)
def test_the_advice_fits_when_followed(req: PlanRequest) -> None:
    p = _unfit(req)
    advice = p.advice
    assume(advice is not None)
    assert advice is not None
    closest = dataclasses.replace(_pinned(p), max_num_seqs=req.max_num_seqs)
    if advice.layout is not None:
        lay = advice.layout
        follow = dataclasses.replace(
            req,
            gpu_types=(p.chosen.gpu.name,),
            tensor_parallel=lay.tensor_parallel,
            data_parallel=lay.data_parallel,
            expert_parallel=lay.expert_parallel,
            gpus_per_node=lay.gpus_per_node,
            max_nodes=lay.nodes,
        )
        for term in advice.layout_settings:  # the setting the layout needs, as its own advice
            assert isinstance(term.value, int)
            if term.setting is Setting.MAX_NUM_SEQS:
                follow = dataclasses.replace(follow, max_num_seqs=term.value)
            else:
                follow = dataclasses.replace(follow, max_num_batched_tokens=term.value)
        assert plan(follow).fits
    if advice.offload_gib is not None:
        offload = dataclasses.replace(
            closest,
            max_num_batched_tokens=req.max_num_batched_tokens,
            cpu_offload_bytes=advice.offload_gib << 30,
        )
        assert plan(offload).fits
    if advice.max_num_batched_tokens is not None:
        assert plan(
            dataclasses.replace(closest, max_num_batched_tokens=advice.max_num_batched_tokens)
        ).fits


@_settings(60)
@given(requests)
def test_the_utilization_and_length_in_the_warnings_fit_when_followed(req: PlanRequest) -> None:
    p = _unfit(req)
    text = " ".join(w.message for w in p.warnings)
    closest = dataclasses.replace(
        _pinned(p), max_num_seqs=req.max_num_seqs, max_num_batched_tokens=req.max_num_batched_tokens
    )
    least = re.search(
        r"minimum gpu-memory-utilization for one ([\d,]+)-token request: ([\d.]+)", text
    )
    if least:
        length = req.max_model_len or int(least.group(1).replace(",", ""))
        one = dataclasses.replace(closest, concurrency=None, max_model_len=length)
        assert plan(dataclasses.replace(one, gpu_memory_utilization=float(least.group(2)))).fits
    most = re.search(r"use a gpu-memory-utilization of at most ([\d.]+)", text)
    if most:
        startable = plan(dataclasses.replace(closest, gpu_memory_utilization=float(most.group(1))))
        assert Code.STARTUP_MEMORY_RESERVE not in {f.code for f in startable.chosen.problems}
    longest = re.search(r"largest max-model-len that fits: ([\d,]+)", text)
    if longest:
        length = int(longest.group(1).replace(",", ""))
        one = dataclasses.replace(closest, concurrency=None, max_model_len=length)
        assert length >= 1
        assert plan(one).fits


runner = CliRunner()
_NUMBER = st.one_of(
    st.integers(-3, 3),
    st.integers(-(10**7), 10**7),
    st.sampled_from(["nan", "inf", "1e3", "0x10", " 8 ", "", "1_000", "+5"]),
)
_FLOAT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["nan", "inf", "", "92"])
)


def _option(name: str, values: st.SearchStrategy[object]) -> st.SearchStrategy[list[str]]:
    return st.one_of(st.just([]), values.map(lambda v: [name, str(v)]))


_ARGV = st.tuples(
    _option("--model", st.sampled_from(["flash", "pro", "Pro", "x"])),
    _option("--weights", st.sampled_from(["official", "NVFP4", "fp8", "bf16", "int4", "mxfp4"])),
    _option("--kv-cache-dtype", st.sampled_from(["fp8", "BF16", "fp16"])),
    st.lists(st.sampled_from([*GPU_NAMES, "H100-80GB", "foo"]), max_size=2).map(
        lambda names: [arg for name in names for arg in ("--gpu", name)]
    ),
    _option("--gpus-per-node", _NUMBER),
    _option("--nodes", _NUMBER),
    _option("--tensor-parallel", _NUMBER),
    _option("--data-parallel", _NUMBER),
    _option("--pipeline-parallel", _NUMBER),
    st.sampled_from([[], ["--expert-parallel"], ["--no-expert-parallel"]]),
    _option("--max-model-len", st.one_of(_NUMBER, st.sampled_from(["auto", "1048577"]))),
    _option("--max-num-seqs", _NUMBER),
    _option("--max-num-batched-tokens", _NUMBER),
    _option("--gpu-memory-utilization", _FLOAT),
    _option("--speculative-tokens", _NUMBER),
    _option("--concurrency", _NUMBER),
    _option("--cpu-offload-gb", _FLOAT),
).map(lambda parts: ["plan", "--output", "json", *(a for part in parts for a in part)])


@_settings(80)
@given(_ARGV)
def test_the_cli_exits_0_1_or_2_never_with_a_traceback(argv: list[str]) -> None:
    result = runner.invoke(app, argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(argv) from result.exception
    assert result.exit_code in {0, 1, 2}
    if result.exit_code == 2:
        assert "error: --" in result.output or "Invalid value" in result.output, result.output
    else:
        assert json.loads(result.stdout)["fits"] is (result.exit_code == 0)


def _mixed_case(name: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(name), max_size=len(name))
    return flips.map(
        lambda up: "".join(c.upper() if u else c for c, u in zip(name, up, strict=True))
    )


_SPECS = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["flash", "pro"]),
        "weightsFormat": st.sampled_from(["official", "nvfp4", "fp8", "bf16", "int4"]),
        "kvCacheDtype": st.sampled_from(["fp8", "bf16"]),
        "maxModelLen": st.one_of(st.just("auto"), st.integers(1, 1_048_576)),
        "gpuMemoryUtilizationPercent": st.integers(50, 99),
        "gpu": st.fixed_dictionaries(
            {"types": st.sampled_from(GPU_NAMES).flatmap(_mixed_case).map(lambda n: [n])},
            optional={"gpusPerNode": st.sampled_from([1, 2, 4, 8]), "maxNodes": st.integers(1, 3)},
        ),
    },
    optional={
        "maxNumSeqs": st.integers(1, 512),
        "maxNumBatchedTokens": st.integers(64, 32_768),
        "load": st.fixed_dictionaries({"concurrency": st.integers(1, 300)}),
        "parallelism": st.fixed_dictionaries(
            {}, optional={"tensor": st.sampled_from([1, 2, 4, 8]), "data": st.integers(1, 16)}
        ),
        "speculativeDecoding": st.fixed_dictionaries({"numSpeculativeTokens": st.integers(1, 4)}),
    },
)


def _as_flags(spec: dict[str, object]) -> list[str]:
    """The `dsv4 plan` flags that ask what `spec` asks (the lowercase GPU names)."""
    gpu = spec["gpu"]
    assert isinstance(gpu, dict)
    flags = [
        *("--model", str(spec["model"]), "--weights", str(spec["weightsFormat"])),
        *("--kv-cache-dtype", str(spec["kvCacheDtype"])),
        *("--max-model-len", str(spec["maxModelLen"]), "--no-download"),
        *("--gpu-memory-utilization", str(int(str(spec["gpuMemoryUtilizationPercent"])) / 100)),
        *("--nodes", str(gpu.get("maxNodes", 1)), "--gpu", str(gpu["types"][0]).lower()),
    ]
    singles = {
        "--gpus-per-node": gpu.get("gpusPerNode"),
        "--max-num-seqs": spec.get("maxNumSeqs"),
        "--max-num-batched-tokens": spec.get("maxNumBatchedTokens"),
    }
    load, par, spec_dec = spec.get("load"), spec.get("parallelism"), spec.get("speculativeDecoding")
    if isinstance(load, dict):
        singles["--concurrency"] = load["concurrency"]
    if isinstance(par, dict):
        singles["--tensor-parallel"] = par.get("tensor")
        singles["--data-parallel"] = par.get("data")
    if isinstance(spec_dec, dict):
        singles["--speculative-tokens"] = spec_dec["numSpeculativeTokens"]
    for flag, value in singles.items():
        if value is not None:
            flags += [flag, str(value)]
    return flags


@_settings(25)
@given(_SPECS)
def test_a_deployment_file_and_its_flags_give_the_same_plan(
    tmp_path_factory: pytest.TempPathFactory, spec: dict[str, object]
) -> None:
    spec = {**spec, "modelSource": {"pvc": {"claimName": "weights", "path": "/weights"}}}
    doc = {
        "apiVersion": "dsv4.io/v1alpha1",
        "kind": "DeepSeekV4Deployment",
        "metadata": {"name": "x"},
        "spec": spec,
    }
    path = tmp_path_factory.mktemp("spec") / "d.yaml"
    path.write_text(yaml.safe_dump(doc))
    from_file = runner.invoke(app, ["plan", str(path), "--output", "json"])
    assume(from_file.exit_code != 2)  # the CRD refused the combination
    from_flags = runner.invoke(app, ["plan", "--output", "json", *_as_flags(spec)])
    assert from_flags.exit_code == from_file.exit_code, from_flags.output
    assert json.loads(from_flags.stdout) == json.loads(from_file.stdout)
