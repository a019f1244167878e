"""The flags refused in spec.engine.extraArgs are real vLLM flags, aliases included."""

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from dsv4_operator.api import InvalidSpecError, parse_spec
from dsv4_operator.api.v1alpha1.engine import (
    FLAG_PATTERN,
    OPERATOR_OWNED_FLAGS,
    OWNED_FLAG_FIELDS,
    UNSUPPORTED_FLAGS,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
FIXTURES = Path(os.environ.get("DSV4_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))
FLAGS_FILE = FIXTURES / "vllm" / "vllm-0.33.0-serve-flags.json"


@pytest.fixture(scope="module")
def vllm_options() -> dict[str, list[str]]:
    if not FLAGS_FILE.is_file():
        pytest.skip(f"vLLM flag list fixture missing: {FLAGS_FILE} (set DSV4_FIXTURES)")
    flags: list[dict[str, Any]] = json.loads(FLAGS_FILE.read_text())["flags"]
    return {option: flag["options"] for flag in flags for option in flag["options"]}


def test_owned_flags_exist_in_vllm(vllm_options: dict[str, list[str]]) -> None:
    assert [flag for flag in OPERATOR_OWNED_FLAGS if flag not in vllm_options] == []


def test_every_long_alias_of_an_owned_flag_is_owned(vllm_options: dict[str, list[str]]) -> None:
    aliases = {alias for flag in OPERATOR_OWNED_FLAGS for alias in vllm_options[flag]}
    long_aliases = {alias for alias in aliases if re.fullmatch(FLAG_PATTERN, alias)}
    assert long_aliases - set(OPERATOR_OWNED_FLAGS) == set()
    assert all(
        alias.startswith("-") and not alias.startswith("--") for alias in aliases - long_aliases
    )


def test_unsupported_flags_exist_in_vllm_and_are_refused(
    vllm_options: dict[str, list[str]],
) -> None:
    assert [flag for flag in UNSUPPORTED_FLAGS if flag not in vllm_options] == []
    base = {"model": "flash", "gpu": {"types": ["h200-141gb"]}}
    for flag, reason in UNSUPPORTED_FLAGS.items():
        with pytest.raises(InvalidSpecError) as caught:
            parse_spec({**base, "engine": {"extraArgs": [f"{flag}=1"]}})
        assert f"{flag} is not supported: {reason}" in str(caught.value)
    # Abbreviations of them too; the API key (the runtime's probe accepts vLLM's 401) is fine.
    with pytest.raises(InvalidSpecError, match="--api-server abbreviates --api-server-count"):
        parse_spec({**base, "engine": {"extraArgs": ["--api-server=2"]}})
    assert parse_spec({**base, "engine": {"extraArgs": ["--api-key=k"]}}).engine.extra_args


@pytest.mark.parametrize(
    ("arg", "accepted"),
    [
        ("--dtype=auto", True),
        ("--dtype=bfloat16", True),
        ("--dtype=float16", False),
        ("--dtype=float32", False),
        ("--dtype", False),
        ("--dty=float32", False),  # an abbreviation vLLM's parser would take
    ],
)
def test_dtype_is_accepted_only_where_it_keeps_the_plan(arg: str, accepted: bool) -> None:
    """Diff review: refusing --dtype outright made resources with `--dtype=auto` InvalidSpec
    after an upgrade, though auto and bfloat16 change nothing the plan counts."""
    from dsv4_operator.api import InvalidSpecError, parse_spec

    spec = {"model": "flash", "gpu": {"types": ["h200-141gb"]}, "engine": {"extraArgs": [arg]}}
    if accepted:
        assert parse_spec(spec).engine.extra_args == (arg,)
    else:
        with pytest.raises(InvalidSpecError, match="--dtype"):
            parse_spec(spec)


@pytest.mark.parametrize("arg", ["--spec-tokens=3", "--spec-method=ngram", "--spec-model=x/y"])
def test_vllm_0_33_speculation_aliases_are_owned_like_the_speculative_config(
    arg: str, vllm_options: dict[str, list[str]]
) -> None:
    """vLLM 0.33.0 serves `--spec-method`, `--spec-model` and `--spec-tokens`, top-level aliases
    of `speculative_config["method" | "model" | "num_speculative_tokens"]`; extraArgs could set
    MTP's draft tokens (or another method) behind the plan's KV and decode-step arithmetic."""
    flag = arg.split("=", 1)[0]
    assert flag in vllm_options
    spec = {"model": "flash", "gpu": {"types": ["h200-141gb"]}, "engine": {"extraArgs": [arg]}}
    with pytest.raises(InvalidSpecError, match=f"{flag} is set by the operator from the spec"):
        parse_spec(spec)


@pytest.mark.parametrize("arg", ["--enable-lora", "--enable-lor", "--enable-lora=true"])
def test_lora_is_refused_before_the_weights_load(arg: str) -> None:
    """vLLM 0.33.0's DeepseekV4ForCausalLM implements SupportsPP only: `--enable-lora` made every
    rank raise "does not support LoRA yet" in load_lora_model, after minutes of loading the
    weights, in a crash loop; it was accepted."""
    spec = {"model": "flash", "gpu": {"types": ["h200-141gb"]}, "engine": {"extraArgs": [arg]}}
    with pytest.raises(InvalidSpecError, match="--enable-lora"):
        parse_spec(spec)


@pytest.mark.parametrize(
    "arg",
    [
        "--prefill-context-parallel-size=2",
        "--prefill-context-parallel-size",
        "--prefill-context=2",  # an abbreviation vLLM's parser would take
    ],
)
def test_prefill_context_parallel_is_refused(arg: str, vllm_options: dict[str, list[str]]) -> None:
    """vLLM 0.33.0's `--prefill-context-parallel-size` (`-pcp`) multiplies the workers of each
    engine: `ParallelConfig.world_size` = PP x TP x PCP (vllm/config/parallel.py), so each DP
    rank would start TP x PCP workers on a pod that has GPUs for TP, and vLLM refuses PCP with
    DP > 1 ("PCP does not support data parallelism yet"). It was accepted."""
    assert "--prefill-context-parallel-size" in vllm_options
    spec = {"model": "flash", "gpu": {"types": ["h200-141gb"]}, "engine": {"extraArgs": [arg]}}
    with pytest.raises(InvalidSpecError, match="--prefill-context-parallel-size"):
        parse_spec(spec)


def _engine(*args: str) -> Any:
    spec = {"model": "pro", "gpu": {"types": ["h200-141gb"]}, "engine": {"extraArgs": list(args)}}
    return parse_spec(spec).engine


def test_eplb_and_its_redundant_experts_are_read_for_the_plan(
    vllm_options: dict[str, list[str]],
) -> None:
    """vLLM 0.33.0 `--enable-eplb` / `--eplb-config` (EPLBConfig.num_redundant_experts): each
    redundant expert is one more physical expert spread over the EP ranks, weights the plan
    did not count."""
    assert vllm_options["--enable-eplb"] == ["--enable-eplb", "--disable-eplb"]
    assert "--eplb-config" in vllm_options
    engine = _engine("--enable-eplb", '--eplb-config={"num_redundant_experts": 32}')
    assert (engine.eplb, engine.redundant_experts) == (True, 32)
    assert (_engine().eplb, _engine().redundant_experts) == (False, 0)
    assert _engine("--enable-eplb", "--disable-eplb").eplb is False
    assert _engine("--enable-eplb", '--eplb-config={"window_size": 500}').redundant_experts == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (['--eplb-config={"num_redundant_experts": 8}'], "needs --enable-eplb"),
        (["--enable-eplb", "--eplb-config=num_redundant_experts=8"], "a JSON object"),
        (["--enable-eplb", '--eplb-config={"num_redundant_experts": -1}'], "0 to 1,024"),
        (["--enable-eplb", '--eplb-config={"num_redundant_experts": 2.5}'], "0 to 1,024"),
        (["--enable-eplb", '--eplb-config={"num_redundant_experts": true}'], "0 to 1,024"),
        (["--enable-eplb=true"], "takes no value"),
        (['--eplb={"num_redundant_experts": 8}'], "abbreviates --eplb-config"),
    ],
)
def test_eplb_settings_vllm_would_refuse_are_refused(args: list[str], words: str) -> None:
    """vLLM refuses num_redundant_experts without EPLB (ParallelConfig._validate_parallel_config:
    "num_redundant_experts is set to ... but EPLB is not enabled"), and the plan reads the
    count, so a value it cannot read, or a spelling past the check, is refused."""
    with pytest.raises(InvalidSpecError, match=words):
        _engine(*args)


@pytest.mark.parametrize(
    ("args", "gib"),
    [
        (["--cpu-offload-gb=8"], 8),
        (["--cpu-offload-gb=8", "--offload-backend=uva"], 8),
        (["--cpu-offload-gb=8", "--offload-backend=prefetch", "--offload-group-size=4"], 0),
        (["--cpu-offload-gb=8", "--offload-group-size=4"], 0),
        (["--cpu-offload-gb=8", "--offload-group-size=4", "--offload-backend=uva"], 8),
        (["--cpu-offload-gb=8", "--offload-group-size=0"], 8),
    ],
)
def test_cpu_offload_counts_only_when_vllm_uses_the_uva_offloader(
    args: list[str], gib: int, vllm_options: dict[str, list[str]]
) -> None:
    """vLLM 0.33.0's OffloadConfig (vllm/config/offload.py) ignores `cpu_offload_gb` when the
    prefetch offloader runs: `--offload-backend=prefetch` ("UVA settings will be ignored"), or
    `auto` with `--offload-group-size` > 0 ("Prefetch backend will be selected"). The plan still
    took the GiB off each GPU: an under-count of all of them."""
    assert {"--offload-backend", "--offload-group-size"} <= set(vllm_options)
    assert _engine(*args).cpu_offload_bytes == gib << 30


@pytest.mark.parametrize(
    ("arg", "words"),
    [
        ("--cpu-offload-params=experts", "--cpu-offload-params is not supported"),
        ("--offload-backend=ram", "--offload-backend needs a value"),
        ("--offload-group-size=x", "--offload-group-size needs a value"),
        ("--offload-back=prefetch", "abbreviates --offload-backend"),
    ],
)
def test_offload_settings_the_plan_cannot_follow_are_refused(arg: str, words: str) -> None:
    """`--cpu-offload-params` offloads only the parameters it names (UVAOffloadConfig), which can
    be fewer bytes than the `--cpu-offload-gb` the plan takes off each GPU; the backend and group
    size decide whether that GiB count applies at all, so the plan must read them."""
    with pytest.raises(InvalidSpecError, match=words):
        _engine(arg)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], None),
        (["--offload-group-size=0"], None),
        (["--offload-group-size=4"], (4, 1, 1)),
        (["--offload-group-size=8", "--offload-num-in-group=2"], (8, 2, 1)),
        (["--offload-group-size=8", "--offload-prefetch-step=3"], (8, 1, 3)),
        (["--offload-group-size=8", "--offload-backend=prefetch"], (8, 1, 1)),
        (["--offload-group-size=8", "--offload-backend=uva"], None),
        (["--offload-group-size=8", "--offload-group-size=0"], None),
        (["--offload-group-size=0", "--offload-prefetch-step=0"], None),
        (["--offload-backend=uva", "--offload-prefetch-step=0"], None),
    ],
)
def test_the_prefetch_offloader_settings_are_read_for_the_plan(
    args: list[str], expected: tuple[int, int, int] | None, vllm_options: dict[str, list[str]]
) -> None:
    """vLLM's `create_offloader` (vllm/model_executor/offloader/base.py) runs the prefetch
    offloader with `--offload-group-size` above 0 unless the backend is `uva`;
    `--offload-num-in-group` and `--offload-prefetch-step` default to 1 (vllm/config/offload.py).
    Before, only the group size was read (to drop `--cpu-offload-gb`): the offloaded layers'
    host memory and GPU buffer pool were nowhere."""
    assert {"--offload-num-in-group", "--offload-prefetch-step"} <= set(vllm_options)
    assert _engine(*args).prefetch_offload == expected


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ["--offload-group-size=4", "--offload-num-in-group=5"],
            "--offload-num-in-group=5 is above --offload-group-size=4",
        ),
        (
            ["--offload-group-size=4", "--offload-prefetch-step=0"],
            "--offload-prefetch-step=0 with --offload-group-size=4",
        ),
        (["--offload-num-in-group=0"], "--offload-num-in-group needs a value .* from 1 to 1,024"),
        (["--offload-prefetch-step=x"], "--offload-prefetch-step needs a value .* from 0 to"),
        (["--offload-group-size=2000"], "--offload-group-size needs a value .* to 1,024"),
        (["--offload-backend=prefetch"], "--offload-backend=prefetch needs --offload-group-size"),
        (
            ["--offload-backend=uva", "--offload-group-size=4", "--offload-num-in-group=5"],
            "--offload-num-in-group=5 is above --offload-group-size=4",
        ),
        (
            ["--offload-backend=prefetch", "--offload-group-size=0"],
            "--offload-backend=prefetch needs --offload-group-size",
        ),
    ],
)
def test_prefetch_settings_vllm_refuses_are_refused(args: list[str], words: str) -> None:
    """vLLM's `OffloadConfig.validate_offload_config` refuses these at start (every pod exits);
    the operator says so on the resource, naming the flag and the limit. The validator checks
    with `offload_backend == "prefetch"` or a group above 0, whatever the backend: an explicit
    prefetch backend with no group (vLLM's default 0) fails there (num-in-group 1 above 0),
    and would otherwise reach `module_index % 0` in `PrefetchOffloader.wrap_modules`
    (prefetch.py at 04db3199)."""
    with pytest.raises(InvalidSpecError, match=words):
        _engine(*args)


@pytest.mark.parametrize(
    "arg",
    [
        "--kv-cache-dtype-skip-layers=0",
        "--kv-cache-dtype-skip-layers=sliding_window",
        "--disable-hybrid-kv-cache-manager",
    ],
)
def test_kv_layouts_the_plan_does_not_size_are_refused(
    arg: str, vllm_options: dict[str, list[str]]
) -> None:
    """vLLM 0.33.0 `--kv-cache-dtype-skip-layers` keeps the named layers' KV cache unquantised
    (CacheConfig: "Layer patterns to skip KV cache quantization"), and
    `--disable-hybrid-kv-cache-manager` promotes sliding-window layers to full attention
    (kv_cache_utils.unify_hybrid_kv_cache_specs: no "dropping the KV cache outside the sliding
    window"): either stores more bytes per token than the pool the plan sizes from
    spec.kvCacheDtype and DeepSeek-V4's window, so the plan promised KV that did not exist."""
    flag = arg.split("=", 1)[0]
    assert flag in vllm_options
    with pytest.raises(InvalidSpecError, match=f"{flag} is not supported"):
        _engine(arg)


def test_the_all2all_backend_and_deepep_buffer_size_are_read_for_the_plan(
    vllm_options: dict[str, list[str]],
) -> None:
    """vLLM 0.33.0's `--all2all-backend=deepep_high_throughput` allocates DeepEP buffers of
    VLLM_DEEPEP_BUFFER_SIZE_MB MiB (default 1024) over NVLink, and as much again for RDMA when
    the EP group spans nodes (DeepEPHTAll2AllManager._make_all2all_kwargs); both went unread."""
    assert "--all2all-backend" in vllm_options
    spec = {
        "model": "pro",
        "gpu": {"types": ["h200-141gb"]},
        "engine": {
            "extraArgs": ["--all2all-backend=deepep_high_throughput"],
            "env": [{"name": "VLLM_DEEPEP_BUFFER_SIZE_MB", "value": "4096"}],
        },
    }
    engine = parse_spec(spec).engine
    assert (engine.all2all_backend, engine.deepep_buffer_bytes) == (
        "deepep_high_throughput",
        4096 << 20,
    )
    assert (_engine().all2all_backend, _engine().deepep_buffer_bytes) == (
        "allgather_reducescatter",
        1024 << 20,
    )


@pytest.mark.parametrize(
    ("arg", "words"),
    [
        ("--all2all-backend=deepep", "--all2all-backend needs a value"),
        ("--all2all=deepep_high_throughput", "abbreviates --all2all-backend"),
    ],
)
def test_all2all_backends_the_plan_cannot_read_are_refused(arg: str, words: str) -> None:
    with pytest.raises(InvalidSpecError, match=words):
        _engine(arg)


def test_max_logprobs_is_read_for_the_plan_and_no_cap_is_refused(
    vllm_options: dict[str, list[str]],
) -> None:
    """vLLM 0.33.0's `--max-logprobs` (default 20) is how many logprobs the sampler returns per
    row, which the plan counts; -1 (no cap: the whole 129,280-entry vocabulary) went unread."""
    assert "--max-logprobs" in vllm_options
    assert _engine().max_logprobs == 20
    assert _engine("--max-logprobs=5", "--max-logprobs=1024").max_logprobs == 1024
    for arg in ("--max-logprobs=-1", "--max-logprobs=1025", "--max-logprobs"):
        with pytest.raises(InvalidSpecError, match=r"spec\.engine\.extraArgs: --max-logprobs"):
            _engine(arg)
    with pytest.raises(InvalidSpecError, match="abbreviates --max-logprobs"):
        _engine("--max-logprob=5")


def _env(*pairs: tuple[str, str]) -> Any:
    env = [{"name": name, "value": value} for name, value in pairs]
    spec = {"model": "pro", "gpu": {"types": ["h200-141gb"]}, "engine": {"env": env}}
    return parse_spec(spec).engine


def test_nccl_buffer_sizes_are_read_for_the_plan() -> None:
    """NCCL sizes each connection's buffers per protocol: NCCL_BUFFSIZE (Simple, default
    4 MiB), NCCL_LL_BUFFSIZE (512 KiB) and NCCL_LL128_BUFFSIZE (4,800 KiB) (NCCL src/init.cc
    computeBuffSizes); the plan's NCCL figures were measured at those defaults and the
    variables went unread."""
    assert _env().nccl_buffer_bytes == 4_194_304 + 524_288 + 4_915_200
    engine = _env(("NCCL_BUFFSIZE", "16777216"), ("NCCL_LL128_BUFFSIZE", "1048576"))
    assert engine.nccl_buffer_bytes == 16_777_216 + 524_288 + 1_048_576
    # Networking and debugging variables, and settings that can only lower memory, pass.
    for name, value in (
        ("NCCL_IB_HCA", "mlx5_0,mlx5_1"),
        ("NCCL_SOCKET_IFNAME", "eth0"),
        ("NCCL_DEBUG", "INFO"),
        ("NCCL_MAX_NCHANNELS", "8"),
        ("NCCL_NVLS_ENABLE", "0"),
        ("NCCL_P2P_NET_CHUNKSIZE", "65536"),
    ):
        assert _env((name, value)).nccl_buffer_bytes == 9_633_792


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("NCCL_BUFFSIZE", "8M", "NCCL_BUFFSIZE must be a literal whole number of bytes"),
        ("NCCL_LL_BUFFSIZE", "", "NCCL_LL_BUFFSIZE must be a literal whole number of bytes"),
        ("NCCL_MIN_NCHANNELS", "32", "NCCL_MIN_NCHANNELS"),
        ("NCCL_NCHANNELS", "32", "NCCL_NCHANNELS"),
        ("NCCL_MIN_CTAS", "32", "NCCL_MIN_CTAS"),
        ("NCCL_P2P_NET_CHUNKSIZE", "524288", "at most 131072"),
        ("NCCL_P2P_PCI_CHUNKSIZE", "262144", "at most 131072"),
        ("NCCL_P2P_NVL_CHUNKSIZE", "1048576", "at most 524288"),
    ],
)
def test_nccl_settings_the_plan_cannot_count_are_refused(name: str, value: str, words: str) -> None:
    """More channels than NCCL picks (NCCL_MIN_NCHANNELS and its aliases) multiply every
    communicator's buffers, and larger P2P chunks (NCCL_P2P_*_CHUNKSIZE, defaults 128 KiB,
    128 KiB, 512 KiB: NCCL src/init.cc) its point-to-point buffers, beyond the figures the
    plan measured at NCCL's defaults."""
    with pytest.raises(InvalidSpecError, match=rf"spec\.engine\.env\[0\]: .*{words}"):
        _env((name, value))


def test_every_bad_entry_is_reported_at_once() -> None:
    """h22 (README trial): two bad extraArgs took two apply-and-read rounds, because the check
    stopped at the first; both are named in one error now, and a good entry in between is not."""
    spec = {
        "model": "flash",
        "gpu": {"types": ["h200-141gb"]},
        "engine": {"extraArgs": ["--enable-lora", "--seed=3", "--max-model-len=4096"]},
    }
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(spec)
    text = str(caught.value)
    assert "--enable-lora is not supported" in text
    assert "--max-model-len is set by the operator" in text
    assert "--seed" not in text


_NOT_COUNTED = (
    "deepep_v2",
    "flashinfer_all2allv",
    "flashinfer_nvlink_one_sided",
    "flashinfer_nvlink_two_sided",
    "moonep",
    "mori_high_throughput",
    "mori_low_latency",
    "nixl_ep",
)


@pytest.mark.parametrize("backend", _NOT_COUNTED)
def test_all2all_backends_whose_buffers_the_plan_cannot_size_are_refused(backend: str) -> None:
    """vLLM 0.33.0 accepts these `--all2all-backend` choices; each allocates buffers of its own
    library (DeepEP v2 ElasticBuffer, FlashInfer MNNVL workspaces, MoonEP, MoRI, NIXL EP) that
    the plan does not size, and they got the 1 GiB EP allowance as if it held them."""
    entry = f"--all2all-backend={backend}"
    with pytest.raises(InvalidSpecError, match=rf"spec\.engine\.extraArgs: {entry}.*not counted"):
        _engine(entry)


def test_the_counted_all2all_backends_are_vllms_other_choices() -> None:
    flags = json.loads(FLAGS_FILE.read_text())["flags"] if FLAGS_FILE.is_file() else []
    choices = next((f["choices"] for f in flags if "--all2all-backend" in f["options"]), None)
    if choices is None:
        pytest.skip(f"vLLM flag list fixture missing: {FLAGS_FILE} (set DSV4_FIXTURES)")
    counted = [c for c in choices if c not in _NOT_COUNTED]
    assert counted == [
        "allgather_reducescatter",
        "deepep_high_throughput",
        "deepep_low_latency",
        "naive",
        "pplx",
    ]
    for backend in counted:
        assert _engine(f"--all2all-backend={backend}").all2all_backend == backend


def test_the_moe_dp_chunk_is_read_for_deepep_low_latency() -> None:
    """DeepEP low-latency's RDMA buffer grows with VLLM_MOE_DP_CHUNK_SIZE (vLLM's
    `FusedMoEConfig.max_num_tokens`, default 256), which went unread."""
    spec = {
        "model": "pro",
        "gpu": {"types": ["h200-141gb"]},
        "engine": {
            "extraArgs": ["--all2all-backend=deepep_low_latency"],
            "env": [{"name": "VLLM_MOE_DP_CHUNK_SIZE", "value": "128"}],
        },
    }
    engine = parse_spec(spec).engine
    assert (engine.all2all_backend, engine.moe_dp_chunk_tokens) == ("deepep_low_latency", 128)
    assert _engine().moe_dp_chunk_tokens == 256


@pytest.mark.parametrize(
    ("arg", "field"),
    [
        ("--max-num-seqs=256", "spec.maxNumSeqs"),
        ("--max-model-len=65536", "spec.maxModelLen"),
        ("--max-num-batched-tokens=8192", "spec.maxNumBatchedTokens"),
        ("--kv-cache-dtype=fp8", "spec.kvCacheDtype"),
        ("--gpu-memory-utilization=0.9", "spec.gpuMemoryUtilizationPercent (a percent: 0.9 is 90)"),
        ("--speculative-config={}", "spec.speculativeDecoding"),
        ("--tensor-parallel-size=8", "spec.parallelism.tensor"),
        ("--enable-expert-parallel", "spec.parallelism.expert"),
        ("--model=deepseek-ai/DeepSeek-V4-Pro", "spec.model"),
    ],
)
def test_an_owned_flag_names_the_spec_field_to_use(arg: str, field: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(
            {"model": "flash", "gpu": {"types": ["h200-141gb"]}, "engine": {"extraArgs": [arg]}}
        )
    assert field in str(caught.value)


def test_every_operator_owned_flag_says_what_to_use_instead() -> None:
    assert set(OWNED_FLAG_FIELDS) == set(OPERATOR_OWNED_FLAGS)
    assert all(OWNED_FLAG_FIELDS.values())


def test_an_unknown_all2all_backend_is_told_only_the_backends_the_plan_takes() -> None:
    """'--all2all-backend=bogus' listed every vLLM choice, deepep_v2 and the FlashInfer ones
    included, which the next apply then refused as not counted by the plan."""
    from dsv4_operator.api.v1alpha1.engine import ALL2ALL_NOT_COUNTED

    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(
            {
                "model": "flash",
                "gpu": {"types": ["h200-141gb"]},
                "engine": {"extraArgs": ["--all2all-backend=bogus"]},
            }
        )
    text = str(caught.value)
    assert "deepep_high_throughput" in text
    assert [backend for backend in ALL2ALL_NOT_COUNTED if backend in text] == []
