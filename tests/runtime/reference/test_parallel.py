"""TP and DP+EP sharding of the reference engine on 2 CPU ranks (gloo) equal the single process.

Each case starts two `python -m dsv4_runtime.reference.parallel_check` processes with torchrun's
variables (RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, a free MASTER_PORT); each builds `tiny` from
seed 0, shards it and decodes the prompts greedily (a 140-token prompt, crossing the 128-token
window and the first HCA window end, and a 37-token one; prefill + 12 decode steps). The single-
process model decodes the same prompts here. Logits agree within float rounding
(kv_cache_dtype "auto": 1e-4) or, with the FP8 KV cache, within `conftest.FP8_ATOL_PARALLEL` —
a value near an FP8 rounding boundary may round differently after an all-reduce changed its
summation order; the FP8 cases run `conftest.fp8_continuous` models (every compressed entry
and every expert selected, `FP8_RANK_ARGS` on the ranks), whose logits move continuously with
those flips. Tokens are equal up to the first step where the single process's top-2 logits
are within 2·tolerance, which a flip may reorder (`_compare_greedy`).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from tests.runtime.conftest import free_ports

from dsv4_runtime.reference.__main__ import build, parser
from dsv4_runtime.reference.config import TINY
from dsv4_runtime.reference.engine import Engine, Request, SamplingParams
from dsv4_runtime.reference.kvcache import KVBlockPool
from dsv4_runtime.reference.model import StepOutput, Transformer
from dsv4_runtime.reference.parallel import Rendezvous, rendezvous_from_env
from dsv4_runtime.reference.parallel_check import GreedyResult, greedy_decode, make_prompts
from dsv4_runtime.reference.ranks import rank_env
from dsv4_runtime.reference.tokenizer import ByteTokenizer

from .conftest import FP8_ATOL_PARALLEL, fp8_continuous, wait_healthy

PROMPT_LENS = (140, 37)
PROMPT_SEED = 1
STEPS = 12
RANK_TIMEOUT_S = 120
ATOL = {"auto": 1e-4, "fp8_ds_mla": FP8_ATOL_PARALLEL}
FP8_CONFIG = fp8_continuous(TINY)
#: parallel_check's overrides that build FP8_CONFIG from the tiny preset
FP8_RANK_ARGS = [
    "--kv-cache-dtype",
    "fp8_ds_mla",
    "--index-topk",
    str(FP8_CONFIG.index_topk),
    "--experts-per-tok",
    str(FP8_CONFIG.num_experts_per_tok),
]
RANK_ARGS = {"auto": ["--kv-cache-dtype", "auto"], "fp8_ds_mla": FP8_RANK_ARGS}


def _compare_greedy(
    tokens: list[list[int]], logits: torch.Tensor, ref: GreedyResult, ids: list[int], atol: float
) -> float:
    """Max |Δlogit| between a rank's greedy decode and the single process's (prompts `ids`).

    Each prompt's tokens must be equal until the first step where they differ, and there the
    single process's logits of its token and of the rank's must be within 2·atol (a near-tie
    that logits within atol may reorder); later steps continue other sequences, not compared.

    Args:
        tokens: per prompt of `ids`, the rank's steps + 1 tokens.
        logits: (steps + 1, len(ids), vocab), the rank's logits.
        ref: the single-process decode of all prompts.
        ids: the prompts (indices into ref) the rank decoded.
        atol: the logit tolerance.
    """
    worst = 0.0
    for j, i in enumerate(ids):
        for step, (got, want) in enumerate(zip(tokens[j], ref.tokens[i], strict=True)):
            worst = max(worst, (logits[step, j] - ref.logits[step, i]).abs().max().item())
            if got != want:
                gap = float(ref.logits[step, i, want] - ref.logits[step, i, got])
                assert gap <= 2 * atol, f"prompt {i} step {step}: token {got} != {want}, gap {gap}"
                break
    return worst


def _assert_tokens_until_near_tie(got: list[list[int]], ref: GreedyResult, atol: float) -> None:
    """Engine tokens equal the single process's until a step where they may differ (as above)."""
    for i, (seq, want) in enumerate(zip(got, ref.tokens, strict=True)):
        for step, (a, b) in enumerate(zip(seq, want, strict=True)):
            if a != b:
                gap = float(ref.logits[step, i, b] - ref.logits[step, i, a])
                assert gap <= 2 * atol, f"prompt {i} step {step}: token {a} != {b}, gap {gap}"
                break


def _rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """Local rank `rank` of a one-node world, as `reference.ranks` (torchrun's variables) sets it.

    tests/kernels/conftest.py turns the Triton interpreter on for the whole session; the ranks
    run the kernels' PyTorch references on CPU (the interpreter is far too slow for two processes
    decoding a model; the kernels' own tests cover the interpreted kernels).
    """
    base = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return rank_env(
        base,
        nnodes=1,
        node_rank=0,
        nproc_per_node=world,
        local_rank=rank,
        master_addr="127.0.0.1",
        master_port=port,
    )


def _kill_leftovers(procs: list[subprocess.Popen[Any]]) -> None:
    """Kill and reap the processes still running (a test's cleanup)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _communicate(procs: list[subprocess.Popen[Any]], timeout_s: float) -> list[str]:
    """Wait for each process (piped output) and return its output; kill what is left on error."""
    try:
        outs = [p.communicate(timeout=timeout_s)[0] for p in procs]
    finally:
        _kill_leftovers(procs)
    return [o.decode() if isinstance(o, bytes) else o for o in outs]


def _run_ranks(
    out: Path, extra: list[str], world: int = 2, timeout_s: int = RANK_TIMEOUT_S
) -> list[dict[str, object]]:
    """Start `world` ranks of parallel_check, wait up to `timeout_s`, return their records.

    Collectives time out after half of it, so a lost rank fails the others first.
    """
    port = free_ports(1)[0]
    procs = []
    for rank in range(world):
        cmd = [sys.executable, "-m", "dsv4_runtime.reference.parallel_check", "--out", str(out)]
        cmd += ["--prompt-lens", *map(str, PROMPT_LENS), "--prompt-seed", str(PROMPT_SEED)]
        cmd += ["--steps", str(STEPS), "--timeout-s", str(timeout_s // 2), *extra]
        procs.append(
            subprocess.Popen(
                cmd,
                env=_rank_env(rank, world, port),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = _communicate(procs, timeout_s)
    for p, text in zip(procs, logs, strict=True):
        assert p.returncode == 0, text
    print(*logs, sep="")  # the ranks' token counts and all-to-all share
    return [torch.load(out / f"rank{r}.pt") for r in range(world)]


@pytest.fixture(scope="module")
def single_process() -> dict[str, GreedyResult]:
    """Greedy decode of the prompts by the unsharded `tiny` model, per kv_cache_dtype."""
    prompts = make_prompts(PROMPT_LENS, PROMPT_SEED)
    results = {}
    configs = {"auto": dataclasses.replace(TINY, kv_cache_dtype="auto"), "fp8_ds_mla": FP8_CONFIG}
    for kv, config in configs.items():
        model = Transformer(config).init_random(0).eval()
        results[kv] = greedy_decode(model, prompts, STEPS)
    return results


@pytest.mark.parametrize("kv", ["fp8_ds_mla", "auto"])
@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(["--tp", "2", "--engine"], id="tp2"),
        pytest.param(["--dp", "2", "--expert-parallel"], id="dp2-ep2"),
        pytest.param(["--dp", "2", "--expert-parallel", "--stagger"], id="dp2-ep2-idle"),
    ],
)
def test_sharded_greedy_decode_equals_single_process(
    layout: list[str], kv: str, single_process: dict[str, GreedyResult], tmp_path: Path
) -> None:
    """TP=2 (heads, expert widths, vocabulary split; every rank decodes both prompts) and DP=2
    attention + EP=2 (each rank decodes one prompt, 4 of 8 experts per rank, all-to-all) give the
    single-process tokens and its logits within ATOL[kv] (`_compare_greedy`). In "dp2-ep2-idle"
    rank 1 first runs one idle step (`idle_step`: the all-to-alls with no tokens) and rank 0 one
    at the end, so every step pairs a prefill or decode with a different one or with an idle
    rank."""
    ref = single_process[kv]
    records = _run_ranks(tmp_path, [*layout, *RANK_ARGS[kv]])
    full_params = Transformer(TINY).param_count()
    for rec in records:
        ids = rec["request_ids"]
        assert isinstance(ids, list)
        tokens, logits = rec["tokens"], rec["logits"]
        assert isinstance(logits, torch.Tensor)
        assert isinstance(tokens, list)
        diff = _compare_greedy(tokens, logits, ref, ids, ATOL[kv])
        print(f"rank {rec['rank']} requests {ids}: max |Δlogit| = {diff:.2e} (atol {ATOL[kv]})")
        assert diff <= ATOL[kv]
        param_count = rec["param_count"]
        assert isinstance(param_count, int)
        assert param_count < full_params  # this rank holds only its shard
        if "--tp" in layout:
            assert ids == [0, 1]
            engine_tokens = rec["engine_tokens"]  # the unchanged Engine over the TP model
            assert isinstance(engine_tokens, list)
            _assert_tokens_until_near_tie(engine_tokens, ref, ATOL[kv])
        else:
            assert ids == [rec["rank"]]  # DP attention: one prompt per rank
            assert rec["local_experts"] == [TINY.n_routed_experts // 2] * (
                TINY.num_hidden_layers + TINY.num_nextn_predict_layers
            )
            sent, remote = rec["pairs_sent"], rec["pairs_remote"]
            assert isinstance(sent, int)
            assert isinstance(remote, int)
            assert 0 < remote < sent  # the all-to-all moved rows both ways


def test_rendezvous_from_torchrun_env() -> None:
    env = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.5", "LOCAL_RANK": "1"}
    assert rendezvous_from_env(env) == Rendezvous(1, 2, "10.0.0.5", 29500, 1)
    assert rendezvous_from_env({**env, "MASTER_PORT": "1234"}).master_port == 1234


def test_rendezvous_from_lws_env() -> None:
    """Pod 1 of a 2-pod LWS group with 4 ranks per pod: LOCAL_RANK 3 is global rank 7 of 8."""
    env = {
        "LWS_LEADER_ADDRESS": " leader.svc ",
        "LWS_GROUP_SIZE": "2",
        "LWS_WORKER_INDEX": "1",
        "LOCAL_RANK": "3",
    }
    got = rendezvous_from_env(env, procs_per_pod=4, master_port=29600)
    assert got == Rendezvous(7, 8, "leader.svc", 29600, 3)
    assert rendezvous_from_env({}) == Rendezvous(0, 1, "127.0.0.1", 29500, 0)


@pytest.mark.parametrize(
    ("env", "procs", "message"),
    [
        ({"RANK": "0", "MASTER_ADDR": "h"}, 1, "WORLD_SIZE"),
        ({"RANK": "x", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, 1, "RANK='x'"),
        ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, 1, r"rank=2 is outside \[0, 1\]"),
        ({"LOCAL_RANK": "2"}, 2, "LOCAL_RANK=2"),
        ({"LWS_WORKER_INDEX": "0", "LWS_GROUP_SIZE": "2"}, 1, "LWS_LEADER_ADDRESS"),
    ],
)
def test_rendezvous_errors_name_the_variable(env: dict[str, str], procs: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rendezvous_from_env(env, procs_per_pod=procs)


def test_tp2_kernel_path_equals_single_process_torch_path(
    single_process: dict[str, GreedyResult], tmp_path: Path
) -> None:
    """TP=2 with `--attention-impl kernels` (each rank's 2 heads through `dsv4_kernels`, their
    PyTorch references on CPU), decoding and through the Engine: the single-process torch-path
    tokens, logits within the FP8 tolerance (FP8_CONFIG: index_topk 128 is a power of two, as the
    kernels need)."""
    ref = single_process["fp8_ds_mla"]
    records = _run_ranks(
        tmp_path, ["--tp", "2", "--engine", "--attention-impl", "kernels", *FP8_RANK_ARGS]
    )
    for rec in records:
        logits, tokens, engine_tokens = rec["logits"], rec["tokens"], rec["engine_tokens"]
        assert isinstance(logits, torch.Tensor)
        assert isinstance(tokens, list)
        assert isinstance(engine_tokens, list)
        diff = _compare_greedy(tokens, logits, ref, [0, 1], ATOL["fp8_ds_mla"])
        _assert_tokens_until_near_tie(engine_tokens, ref, ATOL["fp8_ds_mla"])
        print(f"rank {rec['rank']} kernels: max |Δlogit| = {diff:.2e}")
        assert diff <= ATOL["fp8_ds_mla"]


@pytest.mark.parametrize("kv", ["fp8_ds_mla", "auto"])
def test_tp2_with_ep2_equals_single_process(
    kv: str, single_process: dict[str, GreedyResult], tmp_path: Path
) -> None:
    """TP=2 attention with EP=2 (`TensorExpertParallelMoE`: 4 of 8 whole experts per rank on the
    replicated tokens, shared expert TP-split, one all-reduce), decoding and through the Engine:
    the single-process tokens and logits within ATOL[kv]. (With the FP8 cache on top-2 routing a
    logit moved by 1.6e-2 at seed 0, a near-tie; the FP8 case runs FP8_CONFIG.)"""
    ref = single_process[kv]
    records = _run_ranks(tmp_path, ["--tp", "2", "--expert-parallel", "--engine", *RANK_ARGS[kv]])
    full_params = Transformer(TINY).param_count()
    for rec in records:
        logits, param_count = rec["logits"], rec["param_count"]
        tokens, engine_tokens = rec["tokens"], rec["engine_tokens"]
        assert isinstance(logits, torch.Tensor)
        assert isinstance(param_count, int)
        assert isinstance(tokens, list)
        assert isinstance(engine_tokens, list)
        diff = _compare_greedy(tokens, logits, ref, [0, 1], ATOL[kv])
        _assert_tokens_until_near_tie(engine_tokens, ref, ATOL[kv])
        print(f"rank {rec['rank']} tp2+ep2: max |Δlogit| = {diff:.2e}")
        assert diff <= ATOL[kv]
        assert param_count < full_params


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(["--tp", "2"], id="tp2"),
        pytest.param(["--dp", "2", "--expert-parallel"], id="dp2-ep2"),
    ],
)
def test_leader_follower_engine_equals_single_process(
    layout: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serving under TP or DP+EP: only rank 0 runs the Engine (`StepLeader`), rank 1 replays its
    steps (`follow`): under TP all of them, under DP the requests placed on DP rank 1 (idle EP
    steps when it has none). Three 250-token prompts and a 30-token one in a 3-block pool:
    admission waits for blocks and requests crossing token 256 preempt others, so the follower
    must free and recreate caches exactly when the leader does. Rank 0 produces the single-process
    Engine's tokens and both ranks run the same number of steps."""
    lens, max_tokens, blocks = ["250", "250", "250", "30"], 10, 3
    model = Transformer(TINY).init_random(0).eval()
    engine = Engine(model, KVBlockPool(TINY, blocks), max_num_seqs=4, max_model_len=1024)
    preemptions, steps = [0], [0]
    preempt, forward = engine._preempt, model.forward_step

    def counting_preempt(victim: Request) -> None:
        preemptions[0] += 1
        preempt(victim)

    def counting_forward(*args: Any, **kwargs: Any) -> StepOutput:
        steps[0] += 1
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine, "_preempt", counting_preempt)
    monkeypatch.setattr(model, "forward_step", counting_forward)
    prompts = make_prompts([int(n) for n in lens], PROMPT_SEED)
    ref = engine.generate(prompts, SamplingParams(max_tokens=max_tokens, ignore_eos=True))
    assert preemptions[0] > 0
    args = [*layout, "--engine", "--follow", "--engine-blocks", str(blocks)]
    args += ["--prompt-lens", *lens, "--steps", str(max_tokens - 1)]
    leader, follower = _run_ranks(tmp_path, args)
    print(f"{preemptions[0]} preemptions, {steps[0]} steps")
    assert leader["engine_tokens"] == ref
    assert leader["leader_steps"] == follower["follower_steps"] == steps[0]
    assert "engine_tokens" not in follower


def test_tp2_server_completes_as_the_single_process_engine(tmp_path: Path) -> None:
    """`python -m dsv4_runtime.reference.parallel_serve --tensor-parallel-size 2` on 2 gloo ranks:
    rank 0 serves /v1/completions with the single-process greedy text, then drains on SIGTERM,
    stops the follower, and both exit 0."""
    common = ["--config", "tiny", "--served-model-name", "tiny-tp", "--max-num-seqs", "2"]
    common += ["--max-model-len", "512", "--seed", "0"]
    prompt, max_tokens = "tensor parallel " * 10, 12
    tok = ByteTokenizer()
    single = build(parser().parse_args(common))
    ids = single.engine.generate(
        [tok.encode(prompt)], SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    )[0]
    expected = tok.decode(ids)
    port, http_port = free_ports(2)
    procs, logs = [], []
    for rank in range(2):
        cmd = [sys.executable, "-m", "dsv4_runtime.reference.parallel_serve", *common]
        cmd += ["--host", "127.0.0.1", "--port", str(http_port), "--tensor-parallel-size", "2"]
        cmd += ["--dist-timeout", "60"]
        logs.append(tmp_path / f"rank{rank}.log")
        with logs[-1].open("wb") as out:
            procs.append(
                subprocess.Popen(
                    cmd, env=_rank_env(rank, 2, port), stdout=out, stderr=subprocess.STDOUT
                )
            )
    try:
        url = f"http://127.0.0.1:{http_port}"
        wait_healthy(url, procs)
        body = {
            "model": "tiny-tp",
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
        }
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == expected
        procs[0].send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(timeout=RANK_TIMEOUT_S) == 0
    finally:
        _kill_leftovers(procs)
    follower_log = logs[1].read_text()
    print(follower_log.splitlines()[-1])
    assert "leader stopped after" in follower_log
