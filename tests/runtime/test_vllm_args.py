"""Exact `vllm serve` command lines per layout, every flag checked against vLLM 0.33.0's parser."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import pytest

from dsv4_runtime.config import RuntimeConfig
from dsv4_runtime.distributed import Role
from dsv4_runtime.engine import build_launch
from dsv4_runtime.launch import Launch
from dsv4_runtime.vllm_args import (
    RAY_WAIT_FOR_NODES,
    WAIT_FOR_PORT,
    ExtraArgsError,
    merge_extra_args,
    vllm_serve_argv,
)

LEADER_IP = "10.42.0.17"
MODEL = "/models/DeepSeek-V4-Pro"

# Flags after the layout flags, for the plan used below (fp8 KV, 200K context, MTP 1, drain 120 s).
PLAN_TAIL = [
    "--enable-expert-parallel",
    "--kv-cache-dtype", "fp8",
    "--block-size", "256",
    "--max-model-len", "200000",
    "--max-num-seqs", "16",
    "--max-num-batched-tokens", "8192",
    "--gpu-memory-utilization", "0.95",
    "--speculative-config", '{"method":"mtp","num_speculative_tokens":1}',
    "--shutdown-timeout", "120",
    "--trust-remote-code",
    "--tokenizer-mode", "deepseek_v4",
    "--tool-call-parser", "deepseek_v4",
    "--enable-auto-tool-choice",
    "--reasoning-parser", "deepseek_v4",
]  # fmt: skip
HEAD = ["vllm", "serve", MODEL]
NAME_AND_PORT = ["--served-model-name", "dsv4-pro", "--host", "0.0.0.0", "--port", "8000"]


def _plan(nodes: int, tp: int, local: int, **more: Any) -> RuntimeConfig:
    return RuntimeConfig(
        engine="vllm",
        model="deepseek-ai/DeepSeek-V4-Pro",
        served_model_name="dsv4-pro",
        weights=MODEL,
        nodes=nodes,
        tensor_parallel_size=tp,
        data_parallel_size=nodes * local,
        data_parallel_size_local=local,
        expected_gpus=tp * local,
        max_model_len=200_000,
        max_num_seqs=16,
        max_num_batched_tokens=8192,
        gpu_memory_utilization=0.95,
        num_speculative_tokens=1,
        drain_timeout_seconds=120,
        **more,
    )


def _argv(config: RuntimeConfig, index: int) -> list[str]:
    role = Role(worker_index=index, group_size=config.nodes, leader_address="leader.dsv4")
    return vllm_serve_argv(config, role, LEADER_IP)


# (nodes, TP, DP local) → exact argv of each pod, leader first.
LAYOUTS: dict[str, tuple[RuntimeConfig, list[list[str]]]] = {
    "1-node-dp8-ep": (
        _plan(1, 1, 8),
        [
            [*HEAD, *NAME_AND_PORT, "--tensor-parallel-size", "1", "--data-parallel-size", "8",
             "--data-parallel-size-local", "8", *PLAN_TAIL],
        ],
    ),
    "2-node-dp16-ep": (
        _plan(2, 1, 8),
        [
            [*HEAD, *NAME_AND_PORT, "--tensor-parallel-size", "1", "--data-parallel-size", "16",
             "--data-parallel-size-local", "8", "--data-parallel-address", LEADER_IP,
             "--data-parallel-rpc-port", "13345", *PLAN_TAIL],
            [*HEAD, "--headless", *NAME_AND_PORT, "--tensor-parallel-size", "1",
             "--data-parallel-size", "16", "--data-parallel-size-local", "8",
             "--data-parallel-start-rank", "8", "--data-parallel-address", LEADER_IP,
             "--data-parallel-rpc-port", "13345", *PLAN_TAIL],
        ],
    ),
    "3-node-dp24-ep": (
        _plan(3, 1, 8),
        [
            [*HEAD, *NAME_AND_PORT, "--tensor-parallel-size", "1", "--data-parallel-size", "24",
             "--data-parallel-size-local", "8", "--data-parallel-address", LEADER_IP,
             "--data-parallel-rpc-port", "13345", *PLAN_TAIL],
            [*HEAD, "--headless", *NAME_AND_PORT, "--tensor-parallel-size", "1",
             "--data-parallel-size", "24", "--data-parallel-size-local", "8",
             "--data-parallel-start-rank", "8", "--data-parallel-address", LEADER_IP,
             "--data-parallel-rpc-port", "13345", *PLAN_TAIL],
            [*HEAD, "--headless", *NAME_AND_PORT, "--tensor-parallel-size", "1",
             "--data-parallel-size", "24", "--data-parallel-size-local", "8",
             "--data-parallel-start-rank", "16", "--data-parallel-address", LEADER_IP,
             "--data-parallel-rpc-port", "13345", *PLAN_TAIL],
        ],
    ),
    "4-node-tp2-dp16-ep": (
        _plan(4, 2, 4),
        [
            [*HEAD, *NAME_AND_PORT, "--tensor-parallel-size", "2", "--data-parallel-size", "16",
             "--data-parallel-size-local", "4", "--data-parallel-address", LEADER_IP,
             "--data-parallel-rpc-port", "13345", *PLAN_TAIL],
            *[
                [*HEAD, "--headless", *NAME_AND_PORT, "--tensor-parallel-size", "2",
                 "--data-parallel-size", "16", "--data-parallel-size-local", "4",
                 "--data-parallel-start-rank", str(4 * index), "--data-parallel-address",
                 LEADER_IP, "--data-parallel-rpc-port", "13345", *PLAN_TAIL]
                for index in (1, 2, 3)
            ],
        ],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_exact_command_lines(name: str) -> None:
    config, expected = LAYOUTS[name]
    actual = [_argv(config, index) for index in range(config.nodes)]
    assert actual == expected
    # The runtime's own args survive the operator → pod → runtime trip unchanged.
    reparsed = RuntimeConfig.from_args(config.to_args())
    assert [_argv(reparsed, index) for index in range(config.nodes)] == expected


def _check_against_vllm(argv: list[str], flags: dict[str, dict[str, Any]]) -> list[str]:
    """Walk argv like vLLM's parser would; return the options used. Fails on anything unknown."""
    assert argv[:2] == ["vllm", "serve"]
    assert not argv[2].startswith("-"), "the model is the positional argument"
    used: list[str] = []
    i = 3
    while i < len(argv):
        option = argv[i]
        assert option in flags, f"{option} is not a vllm serve 0.33.0 option"
        entry = flags[option]
        used.append(option)
        i += 1
        if entry["nargs"] == 0:
            continue
        value = argv[i]
        assert not value.startswith("--"), f"{option} needs a value"
        if entry["type"] == "int":
            int(value)
        elif entry["type"] == "float":
            float(value)
        if entry["choices"] is not None:
            assert value in entry["choices"], f"{option} {value} not in {entry['choices']}"
        i += 1
    return used


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_flag_is_a_vllm_option(name: str, vllm_flags: dict[str, dict[str, Any]]) -> None:
    config, _ = LAYOUTS[name]
    for index in range(config.nodes):
        used = _check_against_vllm(_argv(config, index), vllm_flags)
        assert len(used) == len(set(used)), f"duplicate flags in {used}"


def test_pipeline_parallel_uses_ray(vllm_flags: dict[str, dict[str, Any]]) -> None:
    config = RuntimeConfig(
        engine="vllm",
        model="deepseek-ai/DeepSeek-V4-Flash",
        served_model_name="flash",
        nodes=3,
        tensor_parallel_size=8,
        pipeline_parallel_size=3,
        expected_gpus=8,
        max_model_len=65536,
        max_num_seqs=32,
        max_num_batched_tokens=4096,
        drain_timeout_seconds=60,
    )
    launches = [
        build_launch(config, Role(index, 3, "leader.dsv4"), LEADER_IP) for index in range(3)
    ]
    assert launches[0] == Launch(
        prelaunch=(
            ("ray", "start", "--head", "--port=6379"),
            (sys.executable, "-c", RAY_WAIT_FOR_NODES, "3", "600"),
        ),
        argv=(
            "vllm", "serve", "deepseek-ai/DeepSeek-V4-Flash",
            "--served-model-name", "flash", "--host", "0.0.0.0", "--port", "8000",
            "--tensor-parallel-size", "8", "--pipeline-parallel-size", "3",
            "--distributed-executor-backend", "ray", "--enable-expert-parallel",
            "--kv-cache-dtype", "fp8", "--block-size", "256", "--max-model-len", "65536",
            "--max-num-seqs", "32", "--max-num-batched-tokens", "4096",
            "--gpu-memory-utilization", "0.9", "--shutdown-timeout", "60",
            "--trust-remote-code", "--tokenizer-mode", "deepseek_v4",
            "--tool-call-parser", "deepseek_v4", "--enable-auto-tool-choice",
            "--reasoning-parser", "deepseek_v4",
        ),
        serves_api=True,
    )  # fmt: skip
    for launch in launches[1:]:
        assert launch == Launch(
            prelaunch=((sys.executable, "-c", WAIT_FOR_PORT, LEADER_IP, "6379", "600"),),
            argv=("ray", "start", f"--address={LEADER_IP}:6379", "--block"),
            serves_api=False,
        )
        assert launch.prelaunch_purposes == (
            f"wait up to 600 s for the leader's Ray head at {LEADER_IP}:6379 to accept connections",
        )
    assert launches[0].prelaunch_purposes == (
        "start the Ray head on port 6379",
        "wait up to 600 s for all 3 pods of the group to join the Ray cluster",
    )
    _check_against_vllm(list(launches[0].argv), vllm_flags)


def test_recipe_and_layout_flags_are_known_to_vllm(vllm_flags: dict[str, dict[str, Any]]) -> None:
    from dsv4_runtime.vllm_args import OWNED_FLAGS

    for owned in OWNED_FLAGS:
        for spelling in (owned.name, *owned.aliases, *owned.negations):
            assert spelling in vllm_flags, spelling
        assert set(vllm_flags[owned.name]["options"]) == {
            owned.name,
            *owned.aliases,
            *owned.negations,
        }, f"alias table of {owned.name} differs from vLLM's"


def test_extra_args_pass_through_and_duplicates_drop() -> None:
    config = _plan(
        2,
        1,
        8,
        extra_engine_args=(
            "--compilation-config", '{"mode":0,"cudagraph_mode":"FULL_DECODE_ONLY"}',
            "--tensor_parallel_size=1",
            "-dp", "16",
            "--gpu-memory-utilization", "0.950",
            "--enable-expert-parallel",
            "--attention_config.use_fp4_indexer_cache=True",
        ),
    )  # fmt: skip
    argv = _argv(config, 0)
    assert argv[-3:] == [
        "--compilation-config",
        '{"mode":0,"cudagraph_mode":"FULL_DECODE_ONLY"}',
        "--attention_config.use_fp4_indexer_cache=True",
    ]
    assert argv.count("--tensor-parallel-size") == 1


@pytest.mark.parametrize(
    ("extra", "index", "message"),
    [
        (["--tensor-parallel-size", "4"], 0,
         "extra engine argument --tensor-parallel-size 4 contradicts the plan: "
         "--tensor-parallel-size is 1 for this pod"),
        (["-tp=2"], 0, "extra engine argument -tp=2 contradicts the plan: "
         "--tensor-parallel-size is 1"),
        (["--max-model-len", "-1"], 0, "--max-model-len is 200000"),
        (["--headless"], 0, "--headless is false for this pod"),
        (["--data-parallel-start-rank", "0"], 1, "--data-parallel-start-rank is 8"),
        (["--data-parallel-rank", "3"], 1, "--data-parallel-rank is not set"),
        (["--disable-expert-parallel"], 0, "--enable-expert-parallel is true"),
        (["--served-model-name", "other", "alias"], 0, "--served-model-name is dsv4-pro"),
        (["--speculative-config", '{"method":"mtp","num_speculative_tokens":3}'], 0,
         "--speculative-config is"),
        (["--speculative-config.num_speculative_tokens", "3"], 0,
         "changes --speculative-config, which the runtime sets from the plan"),
        (["--distributed-executor-backend", "ray"], 0, "is not set for this pod"),
        (["--model", "deepseek-ai/DeepSeek-V4-Flash"], 0, f"--model is {MODEL}"),
    ],
)  # fmt: skip
def test_contradicting_extra_args_are_rejected(extra: list[str], index: int, message: str) -> None:
    config = _plan(2, 1, 8, extra_engine_args=tuple(extra))
    with pytest.raises(ExtraArgsError) as caught:
        _argv(config, index)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "abbreviated"),
    [
        (["--max-model=1048576"], "--max-model-len"),
        (["--gpu-memory", "0.99"], "--gpu-memory-utilization"),
        (["--max_num_batched=4096"], "--max-num-batched-tokens"),
        (["--max-num", "8"], "--max-num-batched-tokens, --max-num-seqs"),
    ],
)
def test_abbreviations_of_owned_flags_are_rejected(extra: list[str], abbreviated: str) -> None:
    # vLLM's argparse parser accepts abbreviations: these would override the plan (or fail).
    with pytest.raises(ExtraArgsError) as caught:
        _argv(_plan(2, 1, 8, extra_engine_args=tuple(extra)), 0)
    assert f"abbreviates {abbreviated}, which the runtime sets from the plan" in str(caught.value)


def test_prefix_flags_are_the_vllm_flags_that_start_an_owned_spelling(
    vllm_flags: dict[str, dict[str, Any]],
) -> None:
    from dsv4_runtime.vllm_args import OWNED_FLAGS, PREFIX_FLAGS

    owned = {s for f in OWNED_FLAGS for s in (f.name, *f.aliases, *f.negations)}
    starts = {
        option
        for option in vllm_flags
        if option.startswith("--") and option not in owned
        for spelling in owned
        if spelling.startswith(option)
    }
    assert set(PREFIX_FLAGS) == starts
    # A real flag that starts an owned one passes through.
    argv = _argv(_plan(1, 1, 8, extra_engine_args=("--tokenizer", "/models/tok")), 0)
    assert argv[-2:] == ["--tokenizer", "/models/tok"]


def test_same_speculative_config_in_another_spelling_is_a_duplicate() -> None:
    planned = _argv(_plan(1, 1, 8), 0)
    extra = ["-sc", '{"num_speculative_tokens": 1, "method": "mtp"}', "--seed", "3"]
    assert merge_extra_args(planned, extra) == ["--seed", "3"]


def test_wait_for_port_script_waits_then_connects_or_gives_up() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        done = subprocess.run(
            [sys.executable, "-c", WAIT_FOR_PORT, "127.0.0.1", str(port), "5"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    finally:
        listener.close()
    done = subprocess.run(
        [sys.executable, "-c", WAIT_FOR_PORT, "127.0.0.1", str(port), "0"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 1
    assert f"127.0.0.1:{port} not reachable after 0 s" in done.stderr


def test_ray_wait_script_compiles() -> None:
    compile(RAY_WAIT_FOR_NODES, "<ray-wait>", "exec")


@pytest.mark.parametrize("extra", [["--spec-tokens", "3"], ["--spec-method=ngram"]])
def test_speculation_aliases_contradict_the_plan(extra: list[str]) -> None:
    """vLLM 0.33.0's `--spec-tokens` / `--spec-method` alias the speculative config the plan
    sets (or leaves off); passed through they changed MTP behind the plan."""
    planned = ["--speculative-config", '{"method":"mtp","num_speculative_tokens":1}']
    with pytest.raises(ExtraArgsError, match="contradicts the plan"):
        merge_extra_args(planned, extra)


def test_a_dp_worker_waits_for_its_leader_before_it_starts_vllm() -> None:
    """vLLM's engine cores (headless ones too) send HELLO to the front-end and give up after
    HANDSHAKE_TIMEOUT_MINS = 5 (`vllm/v1/engine/core.py`, startup_handshake): a worker pod that
    started vLLM more than 5 minutes before its leader's front-end (a slower image pull or
    scheduling of the leader pod) crashed and went into CrashLoopBackOff. The worker now waits
    for the leader's runtime admin port, which opens just before the leader starts vLLM."""
    from dsv4_runtime.vllm_args import LEADER_WAIT_TIMEOUT_SECONDS

    config = _plan(2, 1, 8)
    leader = build_launch(config, Role(0, 2, "leader.dsv4"), LEADER_IP)
    worker = build_launch(config, Role(1, 2, "leader.dsv4"), LEADER_IP)
    assert leader.prelaunch == ()
    assert worker.prelaunch == (
        (
            sys.executable, "-c", WAIT_FOR_PORT,
            LEADER_IP, str(config.admin_port), str(LEADER_WAIT_TIMEOUT_SECONDS),
        ),
    )  # fmt: skip
    assert worker.argv == tuple(_argv(config, 1))
    single = build_launch(_plan(1, 1, 8), Role(0, 1, "127.0.0.1"), "127.0.0.1")
    assert single.prelaunch == ()


@pytest.mark.parametrize(
    ("extra", "kept"),
    [
        # vLLM 0.33.0 parses these two with human_readable_int(_or_auto) (serve-flags fixture;
        # vllm/utils/argparse_utils.py): 'K' is 1024, 'k' is 1000, decimals only with 'k'.
        ("--max-model-len=8K", True),
        ("--max-model-len=8.192k", True),
        ("--max-num-batched-tokens=8K", True),
        ("--max-num-batched-tokens=8k", False),  # 8000, not the plan's 8192
        ("--max-model-len=auto", False),
    ],
)
def test_human_readable_token_counts_compare_as_vllm_reads_them(extra: str, kept: bool) -> None:
    config = RuntimeConfig(
        engine="vllm",
        model="m",
        served_model_name="s",
        max_model_len=8192,
        max_num_batched_tokens=8192,
        extra_engine_args=(extra,),
    )
    role = Role(worker_index=0, group_size=1, leader_address="127.0.0.1")
    if kept:
        assert extra not in vllm_serve_argv(config, role, "127.0.0.1")  # a repeat: dropped
    else:
        with pytest.raises(ExtraArgsError, match="contradicts the plan"):
            vllm_serve_argv(config, role, "127.0.0.1")
