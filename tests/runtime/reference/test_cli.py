"""`python -m dsv4_runtime.reference` as the launcher starts it: serve, then drain on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from tests.runtime.conftest import free_ports

from dsv4_runtime.reference.__main__ import build, parser
from dsv4_runtime.reference.checkpoint import save_checkpoint
from dsv4_runtime.reference.model import Transformer

from .conftest import wait_healthy


def test_cli_serves_and_drains_on_sigterm(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "dsv4_runtime.reference",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    cmd += ["--config", "tiny", "--served-model-name", "tiny-cli", "--max-num-seqs", "2"]
    cmd += ["--max-model-len", "512", "--seed", "0"]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, [proc], log)
        body = {
            "model": "tiny-cli",
            "prompt": "drain me",
            "max_tokens": 80,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
        }
        tokens = 0
        done = False
        refused = None
        with (
            httpx.Client(base_url=url, timeout=120) as client,
            client.stream("POST", "/v1/completions", json=body) as r,
        ):
            assert r.status_code == 200
            for line in r.iter_lines():
                if not line:
                    continue
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    done = True
                    break
                tokens += len(json.loads(data)["choices"])
                if tokens == 1:
                    proc.send_signal(signal.SIGTERM)
                    time.sleep(0.3)
                    refused = httpx.post(f"{url}/v1/completions", json={**body, "stream": False})
        assert done
        assert tokens == 80  # the in-flight request finished after SIGTERM
        assert refused is not None
        assert refused.status_code == 503
        assert proc.wait(timeout=60) == 0, log.read_text()
        assert "draining" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_build_with_checkpoint_and_kernel_flag(tmp_path: Path, tiny_model: Transformer) -> None:
    save_checkpoint(tiny_model, tmp_path)
    args = parser().parse_args(
        [
            *("--checkpoint", str(tmp_path), "--dtype", "float32", "--max-num-seqs", "2"),
            *("--max-model-len", "1024", "--served-model-name", "ck", "--device", "cpu"),
        ]
    )
    server = build(args)
    assert server.model_name == "ck"
    assert server.engine.pool.num_blocks == 2 * 4
    assert server.engine.ops.name == "torch"
    loaded = server.engine.model.state_dict()["layers.0.attn.wq_a.weight"]
    original = tiny_model.state_dict()["layers.0.attn.wq_a.weight"]
    assert float((loaded - original).abs().max()) <= float(original.abs().max()) / 14
    assert not torch.equal(loaded, original)  # it really went through FP8


def test_kv_pool_is_capped_by_kv_cache_memory(tiny_model: Transformer) -> None:
    from dsv4_runtime.reference.__main__ import kv_blocks
    from dsv4_runtime.reference.config import TINY
    from dsv4_runtime.reference.kvcache import KVBlockPool

    block = KVBlockPool(TINY, 1).bytes_per_block
    base = ["--max-num-seqs", "64", "--max-model-len", "8192"]
    args = parser().parse_args([*base, "--kv-cache-memory", str(100 * block)])
    assert kv_blocks(args, TINY, "cpu") == 100  # not 64 × 32
    args = parser().parse_args([*base, "--kv-cache-memory", str(10**12)])
    assert kv_blocks(args, TINY, "cpu") == 64 * 32
    args = parser().parse_args([*base, "--kv-cache-memory", str(31 * block)])
    with pytest.raises(ValueError, match="--max-model-len 8192 request needs 32"):
        kv_blocks(args, TINY, "cpu")
