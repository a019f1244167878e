"""The operator <-> runtime contract: rendered args parse back (RuntimeConfig) to the plan's values.

This test may import both sides; the operator itself never imports `dsv4_runtime`.
"""

from __future__ import annotations

import dataclasses
import inspect

from tests.operator.render.conftest import Case

from dsv4_operator.planning import plan_to_dict
from dsv4_operator.render import runtime_args as ra
from dsv4_runtime import server
from dsv4_runtime.config import RuntimeConfig


def test_args_round_trip_to_the_plan(case: Case) -> None:
    args = ra.runtime_args(case.spec, case.plan)
    config = RuntimeConfig.from_args(args)
    assert config.to_args() == args
    want = plan_to_dict(case.plan)
    engine = want["engine_args"]
    assert config.engine == "vllm"
    assert config.nodes == want["layout"]["nodes"]
    assert config.tensor_parallel_size == engine["tensor_parallel_size"]
    assert config.data_parallel_size == engine["data_parallel_size"]
    assert config.data_parallel_size_local == engine["data_parallel_size_local"]
    assert config.pipeline_parallel_size == want["layout"]["pipeline_parallel"]
    assert config.expert_parallel is engine["enable_expert_parallel"]
    assert config.kv_cache_dtype == engine["kv_cache_dtype"]
    assert config.block_size == engine["block_size"]
    assert config.max_model_len == want["max_model_len"]
    assert config.max_num_seqs == want["max_num_seqs"]
    assert config.max_num_batched_tokens == want["max_num_batched_tokens"]
    assert config.gpu_memory_utilization == engine["gpu_memory_utilization"]
    spec_tokens = engine.get("speculative_config", {}).get("num_speculative_tokens", 0)
    assert config.num_speculative_tokens == spec_tokens
    assert config.expected_gpus == want["layout"]["gpus_per_node"]
    assert config.expected_gpu_memory_bytes == want["gpu"]["memory_bytes"]
    assert config.expected_shm_bytes == (case.spec.shm_bytes or want["shm_size_bytes"])
    assert config.drain_timeout_seconds == ra.DRAIN_TIMEOUT_SECONDS
    # The user's extra arguments, then the CUDA-graph cap the plan counted (unless they set
    # it), or with speculation vLLM's default capture list ending at that cap.
    sizes = engine.get("cudagraph_capture_sizes")
    if sizes:
        assert sizes[-1] == engine["max_cudagraph_capture_size"]
        pinned: tuple[str, ...] = ("--cudagraph-capture-sizes", *map(str, sizes))
    else:
        pinned = (f"--max-cudagraph-capture-size={engine['max_cudagraph_capture_size']}",)
    assert config.extra_engine_args == (*case.spec.engine.extra_args, *pinned)


def test_weights_source_and_extra_args() -> None:
    from dsv4_operator.api import parse_spec
    from dsv4_operator.planning import plan
    from dsv4_operator.planning.from_spec import request_from_spec

    base = {"model": "flash", "gpu": {"types": ["h200-141gb"]}}
    hf = {
        **base,
        "modelSource": {"huggingFace": {"repo": "acme/V4-Flash-int", "revision": "abc123"}},
        "engine": {"extraArgs": ["--enforce-eager"]},
    }
    spec = parse_spec(hf)
    config = RuntimeConfig.from_args(ra.runtime_args(spec, plan(request_from_spec(spec))))
    assert (config.model, config.weights) == ("acme/V4-Flash-int", None)
    cap = plan(request_from_spec(spec)).chosen.max_cudagraph_capture_size
    assert config.extra_engine_args == (
        "--enforce-eager",
        "--revision=abc123",
        f"--max-cudagraph-capture-size={cap}",
    )
    host = parse_spec({**base, "modelSource": {"hostPath": {"path": "/data/v4"}}})
    config = RuntimeConfig.from_args(ra.runtime_args(host, plan(request_from_spec(host))))
    assert (config.model, config.weights) == ("deepseek-ai/DeepSeek-V4-Flash", "/models")
    assert config.served_model_name == "deepseek-v4-flash"
    # Without modelSource each weightsFormat downloads its own public checkpoint: the plan's
    # FP8 or NVFP4 weights, never the official MXFP4 repository for every format.
    for fmt, repo in (
        ("official", "deepseek-ai/DeepSeek-V4-Flash"),
        ("fp8", "sgl-project/DeepSeek-V4-Flash-FP8"),
        ("nvfp4", "nvidia/DeepSeek-V4-Flash-NVFP4"),
    ):
        default = parse_spec({**base, "weightsFormat": fmt})
        planned = plan(request_from_spec(default))
        config = RuntimeConfig.from_args(ra.runtime_args(default, planned))
        assert (config.model, config.weights) == (repo, None), fmt


def test_constants_match_the_runtime() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(RuntimeConfig)}
    assert defaults["api_port"] == ra.API_PORT
    assert defaults["admin_port"] == ra.ADMIN_PORT
    assert defaults["data_parallel_rpc_port"] == ra.DATA_PARALLEL_RPC_PORT
    assert defaults["ray_port"] == ra.RAY_PORT
    assert defaults["drain_timeout_seconds"] == ra.DRAIN_TIMEOUT_SECONDS
    assert defaults["engine_stop_grace_seconds"] == ra.ENGINE_STOP_GRACE_SECONDS
    assert str(defaults["shm_path"]) == ra.SHM_PATH
    source = inspect.getsource(server.build_app)
    assert f'"{ra.HEALTH_PATH}"' in source
    assert f'"{ra.READY_PATH}"' in source
    # The kubelet must not SIGKILL a runtime inside preStop + drain + engine stop grace.
    assert ra.TERMINATION_GRACE_SECONDS > (
        ra.PRESTOP_SLEEP_SECONDS + ra.DRAIN_TIMEOUT_SECONDS + ra.ENGINE_STOP_GRACE_SECONDS
    )


def test_drain_seconds_sets_the_runtime_drain_and_the_grace_period() -> None:
    """Runtime review: the drain was fixed at 30 s, so every update, node drain or eviction cut
    any request running longer (a 1M-token prefill alone can)."""
    from dsv4_operator.api import parse_spec
    from dsv4_operator.planning import plan
    from dsv4_operator.planning.from_spec import request_from_spec
    from dsv4_operator.render.labels import Owner
    from dsv4_operator.render.leaderworkerset import leaderworkerset

    spec = parse_spec(
        {"model": "flash", "gpu": {"types": ["h200-141gb"]}, "rollout": {"drainSeconds": 600}}
    )
    planned = plan(request_from_spec(spec))
    config = RuntimeConfig.from_args(ra.runtime_args(spec, planned))
    assert config.drain_timeout_seconds == 600
    lws = leaderworkerset(Owner("x", "ns", "uid"), spec, planned, image="img")
    pod = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    assert grace == ra.termination_grace(spec) == 600 + ra.TERMINATION_GRACE_SECONDS - 30
    # The kubelet never SIGKILLs the runtime inside preStop + drain + engine stop grace.
    stop = ra.PRESTOP_SLEEP_SECONDS + config.drain_timeout_seconds
    assert grace > stop + config.engine_stop_grace_seconds
    assert parse_spec(
        {"model": "flash", "gpu": {"types": ["h200-141gb"]}}
    ).rollout.drain_seconds == (ra.DRAIN_TIMEOUT_SECONDS)
