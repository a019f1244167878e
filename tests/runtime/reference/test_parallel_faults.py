"""Faults of multi-rank reference serving on 2 CPU ranks (gloo): aborts, idle time, a dead rank.

- Aborts and preemptions under DP=2 (with and without EP) and TP=2: rank 0's outputs equal the
  single-process engine's with the same aborts, both ranks take the same steps, and once every
  request is done the follower's pool is wholly free (every dropped cache reached it, the last
  ones with the stop message).
- `parallel_serve`: an idle group outlives its collective timeout (rank 0's keepalive), and when
  a follower dies rank 0 stops serving and exits 1 by itself, without waiting for a request or
  the timeout. `DSV4_REFERENCE_DEVICE=cuda` runs it on 2 GPUs over NCCL (the keepalive then
  comes from a second thread; NCCL has no prompt peer-loss error, so rank 0 ends through the
  NCCL watchdog after the timeout, with a non-zero status).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from tests.runtime.conftest import free_ports

from dsv4_runtime.reference.config import TINY
from dsv4_runtime.reference.engine import Engine, Request
from dsv4_runtime.reference.kvcache import KVBlockPool
from dsv4_runtime.reference.model import Transformer
from dsv4_runtime.reference.parallel_check import make_prompts

from .conftest import wait_healthy
from .follow_ranks import MAX_MODEL_LEN, PROMPT_SEED, scenario
from .test_parallel import _communicate, _kill_leftovers, _rank_env

SCRIPT = Path(__file__).with_name("follow_ranks.py")
RANK_TIMEOUT_S = 120
LENS, MAX_TOKENS, BLOCKS = (250, 250, 250, 30), 10, 3
# request 1 (placed on DP rank 1) and later request 2 leave mid-decode; the 250-token prompts
# crossing token 256 preempt each other (3 blocks of 256 tokens); the last to finish, request 3,
# runs on DP rank 1, so its release travels with the stop message
ABORTS = {3: 1, 9: 2}


def _device() -> str:
    return os.environ.get("DSV4_REFERENCE_DEVICE", "cpu")


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(["--dp", "2", "--expert-parallel"], id="dp2-ep2"),
        pytest.param(["--dp", "2"], id="dp2"),
        pytest.param(["--dp", "1"], id="tp2"),
    ],
)
def test_aborts_and_preemptions_leave_the_follower_pool_free(
    layout: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = Transformer(TINY).init_random(0).eval()
    engine = Engine(model, KVBlockPool(TINY, BLOCKS), max_num_seqs=4, max_model_len=MAX_MODEL_LEN)
    preemptions = [0]
    preempt = engine._preempt

    def counting_preempt(victim: Request) -> None:
        preemptions[0] += 1
        preempt(victim)

    monkeypatch.setattr(engine, "_preempt", counting_preempt)
    expected, _ = scenario(engine, make_prompts(LENS, PROMPT_SEED), MAX_TOKENS, ABORTS)
    assert 0 < len(expected[1]) < MAX_TOKENS  # aborted mid-decode
    assert 0 < len(expected[2]) < MAX_TOKENS
    assert preemptions[0] > 0
    port = free_ports(1)[0]
    cmd = [sys.executable, str(SCRIPT), str(tmp_path), *layout, "--blocks", str(BLOCKS)]
    cmd += ["--prompt-lens", *map(str, LENS), "--max-tokens", str(MAX_TOKENS), "--abort"]
    cmd += [f"{s}:{i}" for s, i in ABORTS.items()]
    procs = [
        subprocess.Popen(
            cmd, env=_rank_env(r, 2, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for r in range(2)
    ]
    logs = _communicate(procs, RANK_TIMEOUT_S)
    for p, text in zip(procs, logs, strict=True):
        assert p.returncode == 0, text
    leader, follower = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    print(f"leader {leader}\nfollower {follower}")
    assert leader["outputs"] == expected
    assert leader["steps"] == follower["steps"]
    assert leader["free_blocks"] == follower["free_blocks"] == BLOCKS


def _start_serving(
    tmp_path: Path, dist_timeout_s: float
) -> tuple[list[subprocess.Popen[bytes]], str]:
    port, http_port = free_ports(2)
    procs = []
    for rank in range(2):
        cmd = [sys.executable, "-m", "dsv4_runtime.reference.parallel_serve", "--config", "tiny"]
        cmd += ["--served-model-name", "t", "--max-num-seqs", "2", "--max-model-len", "512"]
        cmd += ["--host", "127.0.0.1", "--port", str(http_port), "--data-parallel-size", "2"]
        cmd += ["--enable-expert-parallel", "--dist-timeout", str(dist_timeout_s)]
        if _device() == "cuda":
            cmd += ["--device", "cuda", "--backend", "nccl"]
        with (tmp_path / f"rank{rank}.log").open("wb") as out:
            procs.append(
                subprocess.Popen(
                    cmd, env=_rank_env(rank, 2, port), stdout=out, stderr=subprocess.STDOUT
                )
            )
    url = f"http://127.0.0.1:{http_port}"
    wait_healthy(url, procs)
    return procs, url


def _complete(url: str) -> str:
    body = {"model": "t", "prompt": "idle ranks", "max_tokens": 4, "temperature": 0}
    r = httpx.post(f"{url}/v1/completions", json={**body, "ignore_eos": True}, timeout=60)
    assert r.status_code == 200, r.text
    text: str = r.json()["choices"][0]["text"]
    return text


def test_an_idle_group_outlives_the_timeout_and_a_dead_follower_stops_rank_0(
    tmp_path: Path,
) -> None:
    """Idle for 2.5 collective timeouts, the group still serves (before the keepalive, the
    follower's wait for the next step timed out and the next request got 500). Then the follower
    is killed while idle: rank 0 notices at its next keepalive and exits 1 (before, it kept
    answering /health 200 and failed the next request, then lived on with 503)."""
    if _device() == "cuda" and torch.cuda.device_count() < 2:
        pytest.skip("DSV4_REFERENCE_DEVICE=cuda needs 2 CUDA GPUs")
    # the timeout also bounds the rendezvous and model build: 5 s leaves room on a loaded CI
    timeout_s = 5.0 if _device() == "cpu" else 10.0
    procs, url = _start_serving(tmp_path, timeout_s)
    try:
        first = _complete(url)
        time.sleep(2.5 * timeout_s)
        assert [p.poll() for p in procs] == [None, None]
        assert _complete(url) == first
        procs[1].send_signal(signal.SIGKILL)
        status = procs[0].wait(timeout=RANK_TIMEOUT_S)
    finally:
        _kill_leftovers(procs)
    if _device() == "cuda":
        assert status != 0
        return
    assert status == 1
    log = (tmp_path / "rank0.log").read_text()
    assert "rank 0: the rank group failed" in log


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tensor-parallel-size", "3"], "--tensor-parallel-size × --data-parallel-size = 3 × 1"),
        (
            [
                "--tensor-parallel-size",
                "2",
                "--data-parallel-size",
                "2",
                "--enable-expert-parallel",
            ],
            "--enable-expert-parallel needs --tensor-parallel-size 1",
        ),
    ],
    ids=["tp-times-dp-is-not-the-world", "ep-with-tp-and-dp"],
)
def test_a_layout_that_does_not_fit_the_world_fails_before_the_rendezvous(
    flags: list[str], message: str
) -> None:
    """Rank 0 of a world of 4 alone: the bad flags end it at once with status 2 and a message
    naming them (before, it waited in the rendezvous for ranks that would fail alike, up to
    the timeout)."""
    env = _rank_env(0, 2, free_ports(1)[0])
    env["WORLD_SIZE"] = "4"
    cmd = [sys.executable, "-m", "dsv4_runtime.reference.parallel_serve", *flags]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert message in done.stderr


def test_kv_pools_that_differ_stop_every_rank(tmp_path: Path) -> None:
    """Rank 0 with 4 KV blocks, rank 1 with 5: both exit 2 naming --num-kv-blocks (before, only
    the rank above the smallest pool did; rank 0 went on serving a group that had lost a rank)."""
    port, http_port = free_ports(2)
    procs = []
    for rank, blocks in enumerate((4, 5)):
        cmd = [sys.executable, "-m", "dsv4_runtime.reference.parallel_serve", "--config", "tiny"]
        cmd += ["--host", "127.0.0.1", "--port", str(http_port), "--max-model-len", "512"]
        cmd += ["--num-kv-blocks", str(blocks), "--tensor-parallel-size", "2"]
        cmd += ["--dist-timeout", "30"]
        procs.append(
            subprocess.Popen(
                cmd, env=_rank_env(rank, 2, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        )
    logs = _communicate(procs, RANK_TIMEOUT_S)
    for p, text in zip(procs, logs, strict=True):
        assert p.returncode == 2, text
        assert "KV pools differ across ranks (4 to 5 blocks): set --num-kv-blocks" in text
