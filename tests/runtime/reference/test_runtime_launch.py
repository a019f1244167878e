"""`dsv4-runtime --engine reference` starts TP × DP reference ranks the way vLLM's are laid out.

Argument-level tests pin the rank launcher's command line of every pod (`reference.ranks`). The
process tests run the real `dsv4-runtime` (preflight, supervisor, admin server) around real ranks
over gloo on CPU: one pod with TP=2, and two pods (an LWS leader and worker, `LWS_*` variables set
as LeaderWorkerSet sets them) with DP=2 + EP=2. Rank 0 answers greedy completions with the
single-process engine's text; SIGTERM to every pod (the group's deletion) lets rank 0 drain, it
stops the followers and every process exits 0. `DSV4_REFERENCE_DEVICE=cuda` (with
`DSV4_REFERENCE_CONFIG=mid`) runs the same process tests with one GPU per rank over NCCL; they
then need 2 GPUs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from tests.runtime.conftest import free_ports

from dsv4_runtime.config import ConfigError, RuntimeConfig
from dsv4_runtime.distributed import Role
from dsv4_runtime.engine import PARALLEL_REFERENCE_MODULE, RANKS_MODULE, reference_launch
from dsv4_runtime.reference.__main__ import build, parser
from dsv4_runtime.reference.config import preset
from dsv4_runtime.reference.engine import SamplingParams
from dsv4_runtime.reference.model import Transformer
from dsv4_runtime.reference.parallel_check import greedy_decode
from dsv4_runtime.reference.ranks import rank_env
from dsv4_runtime.reference.tokenizer import ByteTokenizer
from dsv4_runtime.server import ADMIN_TOKEN_ENV

BASE = RuntimeConfig(engine="reference", model="m", served_model_name="tiny")
READY_TIMEOUT_S = 240.0
EXIT_TIMEOUT_S = 120.0
ADMIN_TOKEN = "9c2e61d4a8f0b7e3"
MAX_TOKENS = 10
# Greedy decoding compares tokens exactly, so every step's top-2 logit gap must exceed what TP's
# changed summation order can close it by: 2 x 3e-2 with the FP8 KV cache when no top-k choice
# flips (`conftest.FP8_ATOL_PARALLEL` per logit; a flipped indexer or router choice moves one ~1).
# The former prompt "data parallel " * 9 had a gap of 0.014 at step 3, and on some CPUs TP2 took
# the runner-up there; these have gaps of at least 0.18 (`_greedy_gaps`).
PROMPTS = ("leader prefill serve " * 7, "heads expert data " * 3)
MIN_GREEDY_GAP = 0.06


def _launcher_options(argv: tuple[str, ...]) -> dict[str, str]:
    assert argv[1:3] == ("-m", RANKS_MODULE)
    cut = argv.index("--")
    assert argv[cut + 1 : cut + 3] == ("-m", PARALLEL_REFERENCE_MODULE)
    opts = argv[3:cut]
    return dict(zip(opts[::2], opts[1::2], strict=True))


def test_single_rank_layout_runs_one_process_on_the_leader() -> None:
    leader = reference_launch(BASE, Role(0, 1, "x"))
    assert leader.argv[1:3] == ("-m", "dsv4_runtime.reference")
    assert leader.serves_api
    assert leader.argv[leader.argv.index("--device") + 1] == "cpu"


def test_tp2_pod_runs_two_ranks() -> None:
    config = BASE.replace(tensor_parallel_size=2, reference_device="cuda")
    launch = reference_launch(config, Role(0, 1, "x"), "127.0.0.1")
    opts = _launcher_options(launch.argv)
    assert opts == {
        "--nnodes": "1",
        "--node-rank": "0",
        "--nproc-per-node": "2",
        "--master-addr": "127.0.0.1",
        "--master-port": str(config.data_parallel_rpc_port),
        "--kill-grace-s": str(config.engine_stop_grace_seconds),
    }
    tail = launch.argv[launch.argv.index(PARALLEL_REFERENCE_MODULE) + 1 :]
    assert tail[tail.index("--tensor-parallel-size") + 1] == "2"
    assert tail[tail.index("--data-parallel-size") + 1] == "1"
    assert tail[tail.index("--backend") + 1] == "nccl"
    assert tail[tail.index("--device") + 1] == "cuda"
    assert "--enable-expert-parallel" in tail
    assert launch.serves_api


def test_multi_node_dp_ep_pods_share_one_rendezvous_at_the_leader() -> None:
    """4 pods × 2 DP ranks: each pod starts 2 ranks, node rank = LWS worker index, the store on
    the leader's IP; only the leader's ranks serve the API."""
    config = BASE.replace(
        nodes=4, data_parallel_size=8, data_parallel_size_local=2, expert_parallel=True
    )
    for index in range(4):
        launch = reference_launch(config, Role(index, 4, "lws-0.lws"), "10.1.2.3")
        opts = _launcher_options(launch.argv)
        assert opts["--nnodes"] == "4"
        assert opts["--node-rank"] == str(index)
        assert opts["--nproc-per-node"] == "2"
        assert opts["--master-addr"] == "10.1.2.3"
        assert launch.serves_api == (index == 0)
        assert launch.argv[launch.argv.index("--backend") + 1] == "gloo"


def test_rank_env_is_torchruns() -> None:
    """Node 1 of 4 with 2 ranks each: global ranks 2 and 3 of 8, at the leader's store."""
    envs = [
        rank_env(
            {"KEEP": "1"},
            nnodes=4,
            node_rank=1,
            nproc_per_node=2,
            local_rank=local,
            master_addr="10.0.0.1",
            master_port=13345,
        )
        for local in range(2)
    ]
    assert [e["RANK"] for e in envs] == ["2", "3"]
    assert [e["LOCAL_RANK"] for e in envs] == ["0", "1"]
    assert {e["WORLD_SIZE"] for e in envs} == {"8"}
    assert {(e["MASTER_ADDR"], e["MASTER_PORT"], e["GROUP_RANK"], e["KEEP"]) for e in envs} == {
        ("10.0.0.1", "13345", "1", "1")
    }
    with pytest.raises(ValueError, match="--node-rank 4"):
        rank_env({}, nnodes=4, node_rank=4, nproc_per_node=1, local_rank=0, master_addr="a",
                 master_port=1)  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"tensor_parallel_size": 2, "data_parallel_size": 2, "data_parallel_size_local": 2},
         "--expert-parallel"),
        ({"nodes": 2, "pipeline_parallel_size": 2, "expected_gpus": 1},
         "--pipeline-parallel-size"),
    ],
)  # fmt: skip
def test_layouts_the_reference_engine_cannot_run_are_refused(
    changes: dict[str, object], flag: str
) -> None:
    config = BASE.replace(**changes)
    with pytest.raises(ConfigError, match=flag):
        reference_launch(config, Role(0, config.nodes, "x"))


@dataclass
class Pod:
    process: subprocess.Popen[bytes]
    admin: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _device() -> str:
    return os.environ.get("DSV4_REFERENCE_DEVICE", "cpu")


def _model_config() -> str:
    return os.environ.get("DSV4_REFERENCE_CONFIG", "tiny")


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[list[Pod]]:
    started: list[Pod] = []
    yield started
    for pod in started:
        if pod.process.poll() is None:
            pod.process.kill()
            pod.process.wait()


def _start_pod(
    tmp_path: Path, config: RuntimeConfig, index: int, admin_port: int, started: list[Pod]
) -> Pod:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)  # the ranks run the PyTorch attention path
    env[ADMIN_TOKEN_ENV] = ADMIN_TOKEN  # as the operator's pod template sets it
    if config.reference_device == "cuda" and config.nodes > 1:
        env["CUDA_VISIBLE_DEVICES"] = str(index)  # as the device plugin gives each pod its GPU
    if config.nodes > 1:
        env.update(
            LWS_LEADER_ADDRESS="127.0.0.1", LWS_GROUP_SIZE=str(config.nodes),
            LWS_WORKER_INDEX=str(index),
        )  # fmt: skip
    pod_dir = tmp_path / f"pod{index}"
    (pod_dir / "shm").mkdir(parents=True)
    config = config.replace(
        admin_port=admin_port,
        shm_path=pod_dir / "shm",
        termination_log=pod_dir / "termination-log",
    )
    log = pod_dir / "runtime.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "dsv4_runtime", *config.to_args()],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    pod = Pod(process, f"http://127.0.0.1:{admin_port}", log)
    started.append(pod)
    return pod


def _wait_ready(pod: Pod, others: list[Pod]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        for p in [pod, *others]:
            assert p.process.poll() is None, f"a pod exited early:\n{p.output()}"
        try:
            if httpx.get(f"{pod.admin}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"the leader did not become ready:\n{pod.output()}")


def _greedy_gaps(model_config: str) -> list[float]:
    """Per prompt, the smallest top-2 logit gap over the greedy steps of `MAX_TOKENS` tokens."""
    model = Transformer(preset(model_config)).init_random(0).eval()
    tok = ByteTokenizer()
    result = greedy_decode(model, [tok.encode(p) for p in PROMPTS], MAX_TOKENS - 1)
    top2 = result.logits.topk(2, dim=-1).values
    gaps: list[float] = (top2[..., 0] - top2[..., 1]).min(dim=0).values.tolist()
    return gaps


def _expected_texts(model_config: str, device: str) -> list[str]:
    """The single-process engine's greedy texts for `PROMPTS`, decoded together."""
    gaps = _greedy_gaps(model_config)
    assert min(gaps) >= MIN_GREEDY_GAP, (
        f"a greedy step of PROMPTS is a near-tie (top-2 gaps {gaps}): a sharded engine may pick "
        "the runner-up; choose prompts whose gaps exceed MIN_GREEDY_GAP"
    )
    args = ["--config", model_config, "--served-model-name", "x", "--max-num-seqs", "2"]
    args += ["--max-model-len", "512", "--seed", "0", "--device", device]
    single = build(parser().parse_args(args))
    tok = ByteTokenizer()
    params = SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True)
    out = single.engine.generate([tok.encode(p) for p in PROMPTS], params)
    del single
    if device == "cuda":
        torch.cuda.empty_cache()
    return [tok.decode(ids) for ids in out]


def _complete(api: str, prompt: str) -> str:
    body = {
        "model": "tiny",
        "prompt": prompt,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
    }
    r = httpx.post(f"{api}/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    text: str = r.json()["choices"][0]["text"]
    return text


def _group_config(config: RuntimeConfig) -> tuple[RuntimeConfig, list[int]]:
    """`config` on free local ports, small limits and this run's device; the admin ports."""
    rdzv_port, api_port, *admin_ports = sorted(free_ports(2 + config.nodes))
    config = config.replace(
        host="127.0.0.1",
        api_port=api_port,
        max_num_seqs=2,
        max_model_len=512,
        drain_timeout_seconds=10,
        engine_stop_grace_seconds=10,
        reference_config=_model_config(),
        reference_device=_device(),
        data_parallel_rpc_port=rdzv_port,
    )
    return config, admin_ports


def _serve_and_drain(tmp_path: Path, config: RuntimeConfig, started: list[Pod]) -> None:
    config, admin_ports = _group_config(config)
    expected = _expected_texts(config.reference_config, config.reference_device)
    pods = [_start_pod(tmp_path, config, i, port, started) for i, port in enumerate(admin_ports)]
    _wait_ready(pods[0], pods[1:])
    api = f"http://127.0.0.1:{config.api_port}"
    with ThreadPoolExecutor(len(PROMPTS)) as pool:  # concurrent: both DP ranks get one
        texts = list(pool.map(lambda p: _complete(api, p), PROMPTS))
    assert texts == expected
    metrics = httpx.get(f"{pods[0].admin}/metrics", timeout=5).text
    assert "dsv4_runtime_info" in metrics
    # The autoscaler's drain needs the pod's token; with it, the group leaves service.
    leader = pods[0].admin
    assert httpx.post(f"{leader}/drain", timeout=5).status_code == 401
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert httpx.post(f"{leader}/drain", headers=auth, timeout=5).status_code == 200
    assert httpx.get(f"{leader}/ready", timeout=5).json()["reason"] == "drained by the autoscaler"
    assert httpx.post(f"{leader}/undrain", headers=auth, timeout=5).status_code == 200
    assert httpx.get(f"{leader}/ready", timeout=5).status_code == 200
    # The engine processes do not inherit the token.
    engine = _children(pods[0].process.pid)
    assert engine
    for pid in engine:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not [v for v in environ if v.startswith(ADMIN_TOKEN_ENV.encode() + b"=")]
    for pod in pods:  # deleting the group: every pod gets SIGTERM; rank 0 stops the others
        pod.process.send_signal(signal.SIGTERM)
    for pod in pods:
        assert pod.process.wait(timeout=EXIT_TIMEOUT_S) == 0, pod.output()
    logs = "".join(p.output() for p in pods)
    assert f"rank 0: stopped {config.reference_world_size - 1} follower(s)" in logs
    assert logs.count("leader stopped after") == config.reference_world_size - 1
    print(*(line for line in logs.splitlines() if "stopped" in line), sep="\n")


def _needs_devices(count: int) -> None:
    if _device() == "cuda" and torch.cuda.device_count() < count:
        pytest.skip(f"DSV4_REFERENCE_DEVICE=cuda needs {count} CUDA GPUs")


def test_one_pod_tp2_serves_as_the_single_process_engine(tmp_path: Path, pods: list[Pod]) -> None:
    _needs_devices(2)
    _serve_and_drain(tmp_path, BASE.replace(tensor_parallel_size=2), pods)


def test_two_pods_dp2_ep2_serve_as_the_single_process_engine(
    tmp_path: Path, pods: list[Pod]
) -> None:
    _needs_devices(2)
    config = BASE.replace(
        nodes=2, data_parallel_size=2, data_parallel_size_local=1, expert_parallel=True
    )
    _serve_and_drain(tmp_path, config, pods)


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_killed_follower_rank_takes_down_both_pods(tmp_path: Path, pods: list[Pod]) -> None:
    """DP=2 + EP=2 on two pods, idle: the worker pod's rank is SIGKILLed (an OOM kill). The
    worker pod's runtime exits 137 (before, its one-rank launcher reported 0), and the leader pod
    exits 1 by itself within seconds: rank 0's keepalive finds the group broken and the server
    stops (before, it stayed up and ready until a request failed with 500, then stayed up
    unready). So LWS sees both pods fail and recreates the group."""
    if _device() == "cuda":
        pytest.skip("NCCL reports no lost peer: rank 0 ends only after --dist-timeout (300 s)")
    config, admin_ports = _group_config(
        BASE.replace(
            nodes=2, data_parallel_size=2, data_parallel_size_local=1, expert_parallel=True
        )
    )
    group = [_start_pod(tmp_path, config, i, port, pods) for i, port in enumerate(admin_ports)]
    _wait_ready(group[0], group[1:])
    (launcher,) = _children(group[1].process.pid)
    (rank,) = _children(launcher)
    os.kill(rank, signal.SIGKILL)
    assert group[1].process.wait(timeout=EXIT_TIMEOUT_S) == 128 + signal.SIGKILL
    assert group[0].process.wait(timeout=EXIT_TIMEOUT_S) == 1, group[0].output()
    leader_log = group[0].output()
    assert "rank 0: the rank group failed" in leader_log
    assert "engine exited on its own with status 1" in leader_log
