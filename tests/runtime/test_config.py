"""RuntimeConfig: render -> parse gives the same values; bad values name the flag and the limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsv4_runtime.config import ConfigError, RuntimeConfig

FLASH_ONE_NODE = RuntimeConfig(
    engine="vllm",
    model="deepseek-ai/DeepSeek-V4-Flash",
    served_model_name="dsv4-flash",
    nodes=1,
    data_parallel_size=4,
    data_parallel_size_local=4,
    expected_gpus=4,
)


def _layout(nodes: int, local: int, **more: object) -> RuntimeConfig:
    return RuntimeConfig(
        engine="vllm",
        model="deepseek-ai/DeepSeek-V4-Pro",
        served_model_name="dsv4-pro",
        weights="/models/DeepSeek-V4-Pro",
        nodes=nodes,
        data_parallel_size=nodes * local,
        data_parallel_size_local=local,
        expected_gpus=local,
        expected_shm_bytes=2 << 30,
        expected_gpu_memory_bytes=150_754_820_096,
        max_model_len=200_000,
        max_num_seqs=16,
        max_num_batched_tokens=8192,
        gpu_memory_utilization=0.95,
        num_speculative_tokens=1,
        drain_timeout_seconds=120,
        **more,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("nodes", [1, 2, 3, 4], ids=lambda n: f"{n}-node")
def test_round_trip_for_each_layout(nodes: int) -> None:
    config = _layout(nodes, 8, extra_engine_args=("--compilation-config", '{"mode":0}'))
    args = config.to_args()
    assert RuntimeConfig.from_args(args) == config
    assert args[args.index("--nodes") + 1] == str(nodes)
    assert args[args.index("--data-parallel-size") + 1] == str(8 * nodes)
    assert args[-3:] == ["--", "--compilation-config", '{"mode":0}']


def test_round_trip_pipeline_layout() -> None:
    config = RuntimeConfig(
        engine="vllm",
        model="deepseek-ai/DeepSeek-V4-Flash",
        served_model_name="flash",
        nodes=3,
        tensor_parallel_size=8,
        pipeline_parallel_size=3,
        expected_gpus=8,
        expert_parallel=False,
    )
    args = config.to_args()
    assert "--no-expert-parallel" in args
    assert RuntimeConfig.from_args(args) == config


def test_to_args_order_is_the_documented_contract() -> None:
    args = FLASH_ONE_NODE.to_args()
    flags = [a for a in args if a.startswith("--")]
    assert flags == [
        "--engine", "--model", "--served-model-name", "--nodes", "--tensor-parallel-size",
        "--pipeline-parallel-size", "--data-parallel-size", "--data-parallel-size-local",
        "--expert-parallel", "--kv-cache-dtype", "--block-size", "--max-model-len",
        "--max-num-seqs", "--max-num-batched-tokens", "--gpu-memory-utilization",
        "--num-speculative-tokens", "--drain-timeout-seconds", "--engine-stop-grace-seconds",
        "--expected-shm-bytes", "--expected-gpus", "--expected-gpu-memory-bytes", "--host",
        "--api-port", "--admin-port", "--data-parallel-rpc-port", "--ray-port", "--seed",
        "--reference-config", "--reference-module", "--reference-device", "--shm-path",
        "--termination-log",
    ]  # fmt: skip
    assert "--weights" not in args


@st.composite
def _configs(draw: st.DrawFn) -> RuntimeConfig:
    nodes = draw(st.integers(1, 8))
    local = draw(st.sampled_from([1, 2, 4, 8]))
    tp = draw(st.sampled_from([1, 2]))
    seqs = draw(st.integers(1, 1024))
    extra = draw(
        st.lists(st.sampled_from(["--enforce-eager", "--seed", "7", "{}", "--", "-x"]), max_size=4)
    )
    return RuntimeConfig(
        engine=draw(st.sampled_from(["vllm", "reference"])),
        model="m",
        served_model_name="n",
        weights=draw(st.none() | st.just("/models/w")),
        nodes=nodes,
        tensor_parallel_size=tp,
        data_parallel_size=nodes * local,
        data_parallel_size_local=local,
        expected_gpus=tp * local,
        max_model_len=draw(st.integers(1, 1 << 20)),
        max_num_seqs=seqs,
        max_num_batched_tokens=seqs + draw(st.integers(0, 1 << 16)),
        gpu_memory_utilization=draw(st.floats(min_value=0.01, max_value=1.0)),
        num_speculative_tokens=draw(st.integers(0, 4)),
        expert_parallel=draw(st.booleans()),
        drain_timeout_seconds=draw(st.integers(0, 3600)),
        expected_shm_bytes=draw(st.integers(0, 1 << 40)),
        extra_engine_args=tuple(extra),
    )


@given(config=_configs())
def test_round_trip_property(config: RuntimeConfig) -> None:
    assert RuntimeConfig.from_args(config.to_args()) == config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data_parallel_size": 12}, "--data-parallel-size must equal --nodes × "),
        ({"expected_gpus": 6}, "--expected-gpus must equal --tensor-parallel-size × "),
        ({"block_size": 64}, "--block-size must be 256 for DeepSeek-V4 on vLLM, got 64"),
        ({"gpu_memory_utilization": 1.5}, "--gpu-memory-utilization must be in (0, 1], got 1.5"),
        ({"max_num_seqs": 0}, "--max-num-seqs must be >= 1, got 0"),
        ({"max_num_batched_tokens": 8}, "--max-num-batched-tokens must be >= --max-num-seqs"),
        ({"admin_port": 8000}, "--admin-port must differ from --api-port (8000)"),
        # runtime review: only API vs admin was checked; a clash failed late as a bind error
        ({"admin_port": 13345}, "--data-parallel-rpc-port must differ from --admin-port (13345)"),
        ({"ray_port": 8000}, "--ray-port must differ from --api-port (8000)"),
        ({"api_port": 70000}, "--api-port must be <= 65535, got 70000"),
        ({"served_model_name": ""}, "--served-model-name must be a non-empty name"),
        ({"pipeline_parallel_size": 2}, "--data-parallel-size must be 1"),
    ],
)
def test_bad_values_name_the_flag(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        _layout(2, 4).replace(**changes)
    assert message in str(caught.value)


def test_pipeline_layout_must_cover_the_group_gpus() -> None:
    with pytest.raises(ConfigError) as caught:
        RuntimeConfig(
            engine="vllm",
            model="m",
            served_model_name="m",
            nodes=3,
            tensor_parallel_size=8,
            pipeline_parallel_size=2,
            expected_gpus=8,
        )
    assert "8 × 2 = 16 must equal --nodes × --expected-gpus = 3 × 8 = 24" in str(caught.value)


def test_from_args_rejects_unknown_and_missing_arguments() -> None:
    with pytest.raises(ConfigError, match="unrecognized arguments: --tensor-parallel"):
        RuntimeConfig.from_args([*FLASH_ONE_NODE.to_args(), "--tensor-parallel", "2"])
    with pytest.raises(ConfigError, match="the following arguments are required: --engine"):
        RuntimeConfig.from_args(["--model", "m", "--served-model-name", "m"])
    with pytest.raises(ConfigError, match="invalid int value: 'eight'"):
        RuntimeConfig.from_args(
            ["--engine", "vllm", "--model", "m", "--served-model-name", "m", "--nodes", "eight"]
        )


def test_everything_after_the_separator_is_extra() -> None:
    args = [*FLASH_ONE_NODE.to_args(), "--", "--max-cudagraph-capture-size", "128", "--", "x"]
    parsed = RuntimeConfig.from_args(args)
    assert parsed.extra_engine_args == ("--max-cudagraph-capture-size", "128", "--", "x")
    assert parsed.shm_path == Path("/dev/shm")


def test_readme_documents_every_argument() -> None:
    readme = (Path(__file__).resolve().parents[2] / "runtime/dsv4_runtime/README.md").read_text()
    config = FLASH_ONE_NODE.replace(weights="/models/x")
    for flag in [a for a in config.to_args() if a.startswith("--")] + ["--no-expert-parallel"]:
        assert f"`{flag}" in readme, f"{flag} is not documented in runtime/dsv4_runtime/README.md"


def test_the_reference_engine_loads_the_weights_it_is_given_or_refuses_them() -> None:
    import dataclasses
    import sys

    from dsv4_runtime.config import ConfigError
    from dsv4_runtime.distributed import Role
    from dsv4_runtime.engine import build_launch

    base = RuntimeConfig.from_args(
        ["--engine", "reference", "--model", "m", "--served-model-name", "m"]
    )
    leader = Role(0, 1, "leader")
    one = dataclasses.replace(base, weights="/models/ckpt")
    argv = build_launch(one, leader, "127.0.0.1").argv
    assert argv[:3] == (sys.executable, "-m", one.reference_module)
    assert argv[-2:] == ("--checkpoint", "/models/ckpt")
    assert "--checkpoint" not in build_launch(base, leader, "127.0.0.1").argv
    two = dataclasses.replace(one, tensor_parallel_size=2)
    with pytest.raises(ConfigError, match="--weights the multi-rank reference engine"):
        build_launch(two, leader, "127.0.0.1")


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        # `vllm serve ''` fails late and obscurely; a relative path that does not exist in the
        # container's working directory is taken by vLLM for a Hugging Face repository id and
        # downloaded from the Hub under the served name.
        ("", "--weights must be an absolute directory path"),
        ("models/DeepSeek-V4-Flash", "--weights must be an absolute directory path"),
        (" /models/x", "--weights must be an absolute directory path"),
        ("/models/x ", "--weights must be an absolute directory path"),
    ],
)
def test_weights_must_be_an_absolute_path(weights: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        FLASH_ONE_NODE.replace(weights=weights)
    assert message in str(caught.value)
    with pytest.raises(ConfigError):
        RuntimeConfig.from_args([*FLASH_ONE_NODE.to_args(), "--weights", weights])
    assert FLASH_ONE_NODE.replace(weights="/models/pvc/DeepSeek-V4-Flash").weights is not None
