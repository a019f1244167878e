"""Two runtimes as the leader and a worker of a 2-node vLLM group, with a stand-in `vllm` binary.

The stand-in records its argv and then acts like vLLM: `vllm serve` on the leader becomes the
engine double (API, health, metrics); `vllm serve --headless` on the worker idles until SIGTERM.
Package metadata for vllm 0.33.0 and transformers 4.57.1 is provided on PYTHONPATH, so the whole
production path runs: arguments, LWS env, preflight, leader-address resolution, command lines,
supervision, drain.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.support.ipv6 import ipv6_loopback

from dsv4_runtime.config import RuntimeConfig
from dsv4_runtime.distributed import Role
from dsv4_runtime.vllm_args import vllm_serve_argv

FAKE_VLLM = """\
import json, os, signal, sys
with open(os.environ["DSV4_FAKE_VLLM_RECORD"], "w") as record:
    json.dump(sys.argv[1:], record)
args = sys.argv[1:]
if "--headless" in args:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.pause()
value = lambda flag: args[args.index(flag) + 1]
os.execv(sys.executable, [sys.executable, "-m", "engine_double", "--host", value("--host"),
         "--port", value("--port"), "--served-model-name", value("--served-model-name")])
"""


def _install_fakes(root: Path) -> tuple[Path, Path]:
    bin_dir, site = root / "bin", root / "site"
    bin_dir.mkdir()
    for name, version in (("vllm", "0.33.0"), ("transformers", "4.57.1")):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    vllm = bin_dir / "vllm"
    vllm.write_text(f"#!{sys.executable}\n{FAKE_VLLM}")
    vllm.chmod(0o755)
    return bin_dir, site


def _wait_ready(url: str, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} never ready\n{log.read_text()}")


Pod = tuple[subprocess.Popen[bytes], str, Path]
"""A runtime process, its admin base URL, its log."""


def _start_group(
    tmp_path: Path,
    double_env: dict[str, str],
    ports: list[int],
    extra_env: dict[str, str],
    *,
    one_admin_port: bool = False,
) -> tuple[RuntimeConfig, list[Pod]]:
    """Start the leader (index 0) and the worker (index 1) runtimes of one 2-node group.

    With `one_admin_port` both use the leader's admin port, as pods do, the worker bound to
    127.0.0.2 (the loopback network): its runtime reaches the leader's admin server as a
    worker pod would.
    """
    bin_dir, site = _install_fakes(tmp_path)
    api, leader_admin, worker_admin = ports
    config = RuntimeConfig(
        engine="vllm",
        model="deepseek-ai/DeepSeek-V4-Flash",
        served_model_name="flash",
        nodes=2,
        data_parallel_size=8,
        data_parallel_size_local=4,
        host="127.0.0.1",
        api_port=api,
        admin_port=leader_admin,
        drain_timeout_seconds=2,
        engine_stop_grace_seconds=3,
        shm_path=tmp_path / "shm",
        termination_log=tmp_path / "termination-log",
        extra_engine_args=("--max-cudagraph-capture-size", "128"),
    )
    env = {
        **double_env,
        "PATH": f"{bin_dir}{os.pathsep}{double_env['PATH']}",
        "PYTHONPATH": f"{site}{os.pathsep}{double_env['PYTHONPATH']}",
        "LWS_LEADER_ADDRESS": "localhost",
        "LWS_GROUP_SIZE": "2",
        **extra_env,
    }
    pods: list[Pod] = []
    for index, admin in ((0, leader_admin), (1, leader_admin if one_admin_port else worker_admin)):
        host = "127.0.0.2" if index and one_admin_port else "127.0.0.1"
        pods.append(_start_pod(tmp_path, config.replace(admin_port=admin, host=host), env, index))
    return config, pods


def _start_pod(
    tmp_path: Path, config: RuntimeConfig, env: dict[str, str], index: int, attempt: int = 0
) -> Pod:
    """One runtime process as pod `index` of the group (`attempt`: a restarted container)."""
    log = tmp_path / f"pod-{index}{'.' + str(attempt) if attempt else ''}.log"
    pod_env = {
        **env,
        "LWS_WORKER_INDEX": str(index),
        "DSV4_FAKE_VLLM_RECORD": str(tmp_path / f"argv-{index}.json"),
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "dsv4_runtime", *config.to_args()],
            env=pod_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pods_env[index] = (config, pod_env)
    return process, f"http://{config.host}:{config.admin_port}", log


pods_env: dict[int, tuple[RuntimeConfig, dict[str, str]]] = {}
"""The config and environment each pod index was last started with (to restart one)."""


def _stop(pods: list[Pod]) -> None:
    for process, _, _ in pods:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_leader_and_worker_launch_vllm_and_drain(
    tmp_path: Path, double_env: dict[str, str], ports: list[int]
) -> None:
    api = ports[0]
    config, pods = _start_group(tmp_path, double_env, ports, {})
    try:
        for _, admin, log in pods:
            _wait_ready(f"{admin}/ready", log)
        for index, (_, admin, _) in enumerate(pods):
            recorded = json.loads((tmp_path / f"argv-{index}.json").read_text())
            role = Role(worker_index=index, group_size=2, leader_address="localhost")
            port = int(admin.rsplit(":", 1)[1])
            expected = vllm_serve_argv(config.replace(admin_port=port), role, "127.0.0.1")
            assert ["vllm", *recorded] == expected
        assert "--headless" not in json.loads((tmp_path / "argv-0.json").read_text())
        worker_argv = json.loads((tmp_path / "argv-1.json").read_text())
        assert worker_argv[worker_argv.index("--data-parallel-start-rank") + 1] == "4"
        assert worker_argv[worker_argv.index("--data-parallel-address") + 1] == "127.0.0.1"
        answer = httpx.post(
            f"http://127.0.0.1:{api}/v1/completions",
            json={"model": "flash", "prompt": "hi", "max_tokens": 3},
            timeout=5.0,
        )
        assert answer.status_code == 200
        sent = time.monotonic()
        for process, _, _ in pods:
            process.send_signal(signal.SIGTERM)
        leader, worker = pods[0][0], pods[1][0]
        assert leader.wait(timeout=8) == 0, pods[0][2].read_text()
        assert worker.wait(timeout=8) == 0, pods[1][2].read_text()
        worker_done = time.monotonic() - sent
        assert worker_done >= 2.0, "the worker must keep its ranks up for the drain timeout"
        print(f"worker engine stopped {worker_done:.2f} s after SIGTERM (drain timeout 2 s)")
    finally:
        _stop(pods)


def test_an_evicted_worker_takes_its_group_out_of_service_while_it_drains(
    tmp_path: Path, double_env: dict[str, str], ports: list[int]
) -> None:
    """Runtime review: when only a worker pod was evicted (a node drain; the PodDisruptionBudget
    allows one pod per group), the leader stayed Ready and admitted requests for the worker's
    whole hold-back, all lost when the worker's ranks exited."""
    token = {"DSV4_RUNTIME_ADMIN_TOKEN": "t0k"}
    _, pods = _start_group(tmp_path, double_env, ports, token, one_admin_port=True)
    (leader, leader_admin, leader_log), (worker, _, worker_log) = pods
    try:
        for _, admin, log in pods:
            _wait_ready(f"{admin}/ready", log)
        worker.send_signal(signal.SIGTERM)
        deadline, answer = time.monotonic() + 1.5, None
        while time.monotonic() < deadline:
            answer = httpx.get(f"{leader_admin}/ready", timeout=1.0)
            if answer.status_code == 503:
                break
            time.sleep(0.05)
        assert answer is not None
        assert answer.status_code == 503, leader_log.read_text()
        assert answer.json()["reason"] == "a worker of this group is stopping"
        assert worker.poll() is None  # still holding its ranks for the leader's requests
        assert worker.wait(timeout=8) == 0, worker_log.read_text()
        assert "told the leader to take no new requests for 35 s" in worker_log.read_text()
        assert leader.poll() is None
    finally:
        _stop(pods)


def test_a_worker_restarts_when_its_leader_restarts_during_the_first_boot(
    tmp_path: Path, double_env: dict[str, str], ports: list[int]
) -> None:
    """Runtime review: vLLM's headless ranks cannot rejoin a restarted leader engine, and LWS
    recreates a group only after it has started once, so a leader that crashed during its
    first load waited for the old workers for good. The worker now exits when its leader's
    runtime is a new instance, and its container restart rejoins."""
    token = {"DSV4_RUNTIME_ADMIN_TOKEN": "t0k"}
    _, pods = _start_group(tmp_path, double_env, ports, token, one_admin_port=True)
    try:
        for _, admin, log in pods:
            _wait_ready(f"{admin}/ready", log)
        leader, worker = pods[0][0], pods[1][0]
        deadline = time.monotonic() + 10
        while "leader runtime instance" not in pods[1][2].read_text():
            assert time.monotonic() < deadline, pods[1][2].read_text()
            time.sleep(0.05)
        # The leader container crashes: its runtime and the engine (in a session of its own).
        engine = re.search(r"engine started \(pid (\d+)\)", pods[0][2].read_text())
        assert engine is not None
        os.killpg(int(engine[1]), signal.SIGKILL)
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
        config, env = pods_env[0]
        pods.append(_start_pod(tmp_path, config, env, 0, attempt=1))  # ... and restarts
        assert worker.wait(timeout=15) == 1, pods[1][2].read_text()
        assert "the leader's runtime restarted" in pods[1][2].read_text()
    finally:
        _stop(pods)


def test_a_worker_starts_vllm_only_once_its_leader_runtime_answers(
    tmp_path: Path, double_env: dict[str, str], ports: list[int]
) -> None:
    """Runtime review: vLLM's engine cores give up on the front-end after 5 minutes
    (HANDSHAKE_TIMEOUT_MINS, vllm/v1/engine/core.py), so a worker pod that started vLLM long
    before its leader crash-looped. It now waits for the leader's runtime first."""
    token = {"DSV4_RUNTIME_ADMIN_TOKEN": "t0k"}
    _, pods = _start_group(tmp_path, double_env, ports, token, one_admin_port=True)
    for _, admin, log in pods:  # only for the pods' config and environment
        _wait_ready(f"{admin}/ready", log)
    # A worker's /ready does not wait for its engine double to record its argv (CI race).
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"argv-{i}.json").exists() for i in (0, 1)):
        assert time.monotonic() < deadline, "the engine doubles never recorded their argv"
        time.sleep(0.05)
    for _, _, log in pods:
        engine = re.search(r"engine started \(pid (\d+)\)", log.read_text())
        assert engine is not None
        os.killpg(int(engine[1]), signal.SIGKILL)
    _stop(pods)
    (tmp_path / "argv-1.json").unlink()
    # A new group whose leader pod is not there yet.
    worker, _, worker_log = _start_pod(tmp_path, *pods_env[1], 1, attempt=1)
    pods.append((worker, "", worker_log))
    try:
        time.sleep(3.0)
        assert worker.poll() is None, worker_log.read_text()
        assert not (tmp_path / "argv-1.json").exists(), "vLLM started before its leader"
        config, env = pods_env[0]
        pods.append(_start_pod(tmp_path, config, env, 0, attempt=1))
        deadline = time.monotonic() + 30  # leader start-up, then a 2 s poll
        while not (tmp_path / "argv-1.json").exists():
            assert time.monotonic() < deadline, worker_log.read_text()
            time.sleep(0.05)
    finally:
        _stop(pods)


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_on_an_ipv6_pod_ip_the_runtime_and_vllm_listen_on_ipv6(
    tmp_path: Path, double_env: dict[str, str], ports: list[int]
) -> None:
    """Runtime review (h23 A): the operator renders `--host 0.0.0.0`, which an IPv6-only or
    IPv6-primary pod is never probed on. With the downward API's IPv6 `POD_IP` the runtime's
    admin server and vLLM listen on `::`, and the runtime probes vLLM on ::1."""
    bin_dir, site = _install_fakes(tmp_path)
    api, admin, _ = ports
    config = RuntimeConfig(
        engine="vllm",
        model="deepseek-ai/DeepSeek-V4-Flash",
        served_model_name="flash",
        host="0.0.0.0",
        api_port=api,
        admin_port=admin,
        drain_timeout_seconds=2,
        engine_stop_grace_seconds=3,
        shm_path=tmp_path / "shm",
        termination_log=tmp_path / "termination-log",
    )
    env = {
        **double_env,
        "PATH": f"{bin_dir}{os.pathsep}{double_env['PATH']}",
        "PYTHONPATH": f"{site}{os.pathsep}{double_env['PYTHONPATH']}",
        "LWS_LEADER_ADDRESS": "localhost",
        "LWS_GROUP_SIZE": "1",
        "POD_IP": "::1",
    }
    process, _, log = _start_pod(tmp_path, config, env, 0)
    try:
        _wait_ready(f"http://[::1]:{admin}/ready", log)
        recorded = json.loads((tmp_path / "argv-0.json").read_text())
        assert recorded[recorded.index("--host") + 1] == "::"
        answer = httpx.post(
            f"http://[::1]:{api}/v1/completions",
            json={"model": "flash", "prompt": "hi", "max_tokens": 3},
            timeout=5.0,
        )
        assert answer.status_code == 200
    finally:
        _stop([(process, "", log)])
