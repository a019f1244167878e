"""`dsv4-runtime` fails fast, before launching anything, with the reason in the termination log."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsv4_runtime import vllm_args
from dsv4_runtime.cli import EXIT_LAUNCH, EXIT_NOT_EXECUTABLE, EXIT_PREFLIGHT, EXIT_USAGE, run
from dsv4_runtime.config import RuntimeConfig, parser_help
from dsv4_runtime.preflight import GpuInfo, GpuProbeResult, Probes


def _config(tmp_path: Path, **changes: object) -> RuntimeConfig:
    return RuntimeConfig(
        engine="vllm",
        model="deepseek-ai/DeepSeek-V4-Flash",
        served_model_name="flash",
        nodes=2,
        data_parallel_size=8,
        data_parallel_size_local=4,
        expected_gpus=4,
        shm_path=tmp_path / "shm",
        termination_log=tmp_path / "termination-log",
    ).replace(**changes)


LWS_WORKER = {"LWS_LEADER_ADDRESS": "10.0.0.5", "LWS_GROUP_SIZE": "2", "LWS_WORKER_INDEX": "1"}


def test_bad_argument_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--engine", "sglang"], {}) == EXIT_USAGE
    assert "argument --engine: invalid choice: 'sglang'" in capsys.readouterr().err


def test_missing_lws_env_exits_2_and_writes_the_termination_log(tmp_path: Path) -> None:
    assert run(_config(tmp_path).to_args(), {}) == EXIT_USAGE
    assert "LWS_LEADER_ADDRESS, LWS_GROUP_SIZE, LWS_WORKER_INDEX are not set" in (
        (tmp_path / "termination-log").read_text()
    )


def test_contradicting_extra_args_exit_2(tmp_path: Path) -> None:
    config = _config(tmp_path, extra_engine_args=("-tp", "8"))
    gpus = GpuProbeResult(tuple(GpuInfo(i, "NVIDIA H200", 143_771 << 20) for i in range(4)), "t")
    probes = Probes(
        package_version={"vllm": "0.33.0", "transformers": "4.57.1"}.get, gpus=lambda: gpus
    )
    assert run(config.to_args(), LWS_WORKER, probes=probes) == EXIT_USAGE
    assert "extra engine argument -tp 8 contradicts the plan: --tensor-parallel-size is 1" in (
        (tmp_path / "termination-log").read_text()
    )


def test_old_vllm_exits_3_before_launch(tmp_path: Path) -> None:
    probes = Probes(package_version={"vllm": "0.19.1", "transformers": "4.57.1"}.get)
    assert run(_config(tmp_path).to_args(), LWS_WORKER, probes=probes) == EXIT_PREFLIGHT
    message = (tmp_path / "termination-log").read_text()
    assert message.startswith("preflight versions: vLLM >= 0.20.0 is required")
    assert "found 0.19.1" in message


def test_wrong_shm_size_exits_fast_as_a_process(tmp_path: Path) -> None:
    (tmp_path / "shm").mkdir()
    (tmp_path / "shm" / "nccl-stale").write_bytes(b"x")
    config = RuntimeConfig(
        engine="reference",
        model="tiny",
        served_model_name="tiny",
        expected_shm_bytes=1 << 60,
        shm_path=tmp_path / "shm",
        termination_log=tmp_path / "termination-log",
    )
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "dsv4_runtime", *config.to_args()],
        env={**os.environ, "KUBERNETES_SERVICE_HOST": "10.96.0.1"},  # as in a pod
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    elapsed = time.monotonic() - start
    assert done.returncode == EXIT_PREFLIGHT, done.stderr
    assert "dsv4-runtime: error: preflight shm-size: shared memory" in done.stderr
    assert "expected at least 1152921504606846976 bytes" in done.stderr
    assert not (tmp_path / "shm" / "nccl-stale").exists()
    assert elapsed < 10
    print(f"failed in {elapsed:.2f} s")


def test_help_lists_every_argument() -> None:
    text = parser_help()
    for flag in RuntimeConfig(engine="vllm", model="m", served_model_name="m").to_args():
        if flag.startswith("--"):
            assert flag in text
    assert "--no-expert-parallel" in text


def test_an_engine_that_is_not_installed_exits_127_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A custom image without vllm on PATH: one line and the termination log, not a traceback.
    monkeypatch.setenv("PATH", str(tmp_path))
    with socket.socket() as a, socket.socket() as b:  # two free ports for the admin/API servers
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        admin, api = a.getsockname()[1], b.getsockname()[1]
    config = _config(tmp_path, admin_port=admin, api_port=api, host="127.0.0.1")
    gpus = GpuProbeResult(tuple(GpuInfo(i, "NVIDIA H200", 143_771 << 20) for i in range(4)), "t")
    probes = Probes(
        package_version={"vllm": "0.33.0", "transformers": "4.57.1"}.get, gpus=lambda: gpus
    )
    assert run(config.to_args(), LWS_WORKER, probes=probes) == EXIT_LAUNCH
    message = (tmp_path / "termination-log").read_text()
    assert message.startswith("cannot start ")
    assert "No such file or directory" in message
    # On PATH but not executable: 126, as a shell says.
    (tmp_path / "vllm").write_text("#!/bin/sh\n")
    assert run(config.to_args(), LWS_WORKER, probes=probes) == EXIT_NOT_EXECUTABLE
    assert "Permission denied" in (tmp_path / "termination-log").read_text()


def test_sigterm_while_the_leader_name_does_not_resolve_exits_0_at_once(tmp_path: Path) -> None:
    """h39: the runtime's signal handlers were installed only once supervision began, so a
    SIGTERM while a worker waited (up to 300 s) for its leader's DNS record killed it by
    signal (143) without a log line."""
    config = RuntimeConfig(
        engine="reference",
        model="tiny",
        served_model_name="tiny",
        nodes=2,
        data_parallel_size=2,
        data_parallel_size_local=1,
        shm_path=tmp_path / "shm",
        termination_log=tmp_path / "termination-log",
    )
    env = {
        **os.environ,
        "LWS_LEADER_ADDRESS": "dsv4-0.dsv4.never.invalid",  # RFC 6761: never resolves
        "LWS_GROUP_SIZE": "2",
        "LWS_WORKER_INDEX": "1",
    }
    log = tmp_path / "runtime.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "dsv4_runtime", *config.to_args()],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while "does not resolve yet" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "SIGTERM before the engine started: nothing to drain, exiting 0" in log.read_text()


def test_a_worker_whose_leader_never_answers_names_what_it_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """h39: the wait for the leader's runtime logged nothing when it began, and its timeout was
    logged as the whole Python wait script ("prelaunch /usr/bin/python -c import socket, ...
    exited with status 1"), with nothing in the termination log."""
    monkeypatch.setattr(vllm_args, "LEADER_WAIT_TIMEOUT_SECONDS", 1)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "vllm").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "vllm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with socket.socket() as a, socket.socket() as b:  # free ports; nothing listens on them
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        admin, api = a.getsockname()[1], b.getsockname()[1]
    # The worker listens on 127.0.0.2, so the leader's admin port on 127.0.0.1 stays closed.
    config = _config(tmp_path, admin_port=admin, api_port=api, host="127.0.0.2")
    gpus = GpuProbeResult(tuple(GpuInfo(i, "NVIDIA H200", 143_771 << 20) for i in range(4)), "t")
    probes = Probes(
        package_version={"vllm": "0.33.0", "transformers": "4.57.1"}.get, gpus=lambda: gpus
    )
    env = {**LWS_WORKER, "LWS_LEADER_ADDRESS": "127.0.0.1"}
    with caplog.at_level(logging.INFO, logger="dsv4_runtime"):
        assert run(config.to_args(), env, probes=probes) == 1
    what = f"wait up to 1 s for the leader's runtime at 127.0.0.1:{admin} to accept connections"
    messages = [record.getMessage() for record in caplog.records]
    assert f"prelaunch: {what}" in messages
    assert not [m for m in messages if "import socket" in m], "the wait script was logged"
    assert (tmp_path / "termination-log").read_text() == (
        f"prelaunch step failed with status 1: {what}\n"
    )


def test_a_leader_name_that_never_resolves_exits_1_not_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """h39 B: a leader still Pending (a GPU node being provisioned) has no DNS record; after
    the resolution wait the worker exited 2, the status of bad arguments, so its restarts
    blamed its configuration. It is a wait that ran out: 1, as the leader-runtime wait."""
    import functools

    from dsv4_runtime import cli, distributed

    monkeypatch.setattr(
        cli,
        "resolve_leader_ip",
        functools.partial(distributed.resolve_leader_ip, timeout_seconds=0.0),
    )

    def pending(host: str) -> str:
        raise OSError(f"[Errno -2] Name or service not known: {host}")

    gpus = GpuProbeResult(tuple(GpuInfo(i, "NVIDIA H200", 143_771 << 20) for i in range(4)), "t")
    probes = Probes(
        package_version={"vllm": "0.33.0", "transformers": "4.57.1"}.get, gpus=lambda: gpus
    )
    env = dict(LWS_WORKER, LWS_LEADER_ADDRESS="d-0.d.ns")
    status = run(_config(tmp_path).to_args(), env, probes=probes, resolver=pending)
    assert status == 1
    assert status != EXIT_USAGE
    message = (tmp_path / "termination-log").read_text()
    assert "LWS_LEADER_ADDRESS=d-0.d.ns did not resolve to an IP within 0 s" in message
    assert "still Pending" in message


@pytest.mark.parametrize(
    ("value", "seconds"), [(None, 0), ("", 0), ("0", 0), ("40", 40), (" 40 ", 40), ("3600", 3600)]
)
def test_the_route_settle_variable_is_read(value: str | None, seconds: int) -> None:
    from dsv4_runtime.cli import route_settle_seconds

    env = {} if value is None else {"DSV4_ROUTE_SETTLE_SECONDS": value}
    assert route_settle_seconds(env) == seconds


@pytest.mark.parametrize("value", ["-1", "3601", "40s", "4.5", "nan"])
def test_a_garbled_route_settle_variable_exits_2_naming_it(tmp_path: Path, value: str) -> None:
    env = dict(LWS_WORKER, DSV4_ROUTE_SETTLE_SECONDS=value)
    assert run(_config(tmp_path).to_args(), env) == EXIT_USAGE
    message = (tmp_path / "termination-log").read_text()
    assert f"DSV4_ROUTE_SETTLE_SECONDS={value!r} must be a whole number of seconds" in message


@pytest.mark.parametrize(
    ("env", "seconds"),
    [
        ({}, 600),  # twice vLLM's VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS default (300)
        ({"DSV4_ENGINE_STALL_SECONDS": ""}, 600),
        ({"VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": "1800"}, 3600),
        ({"DSV4_ENGINE_STALL_SECONDS": "0"}, 0),
        ({"DSV4_ENGINE_STALL_SECONDS": " 120 "}, 120),
        ({"DSV4_ENGINE_STALL_SECONDS": "30", "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": "900"}, 30),
        ({"DSV4_ENGINE_STALL_SECONDS": "86400"}, 86400),
    ],
)
def test_the_stall_variable_is_read(env: dict[str, str], seconds: int) -> None:
    from dsv4_runtime.cli import stall_seconds

    assert stall_seconds(env) == seconds


@pytest.mark.parametrize("value", ["-1", "29", "86401", "600s", "4.5"])
def test_a_garbled_stall_variable_exits_2_naming_it(tmp_path: Path, value: str) -> None:
    env = dict(LWS_WORKER, DSV4_ENGINE_STALL_SECONDS=value)
    assert run(_config(tmp_path).to_args(), env) == EXIT_USAGE
    message = (tmp_path / "termination-log").read_text()
    assert f"DSV4_ENGINE_STALL_SECONDS={value!r} must be 0 (no stall watchdog) or a whole" in (
        message
    )
