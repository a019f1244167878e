"""`vllm serve` command lines for the leader and the workers of one LWS group.

Multi-node DP+EP is launched the way vLLM documents it (docs "Data Parallel Deployment", and
design-lessons lesson 2): every node runs `vllm serve` with the same engine arguments; the leader
(LWS worker index 0) serves the API and coordinates on `--data-parallel-address` (its IP) and
`--data-parallel-rpc-port`; each other node adds `--headless` and `--data-parallel-start-rank` =
worker index × `--data-parallel-size-local`, and starts vLLM only once the leader's runtime
answers (`LEADER_WAIT_TIMEOUT_SECONDS`: vLLM's engine cores wait 5 minutes for the front-end).
Ray is used only when the plan has pipeline parallelism (`--distributed-executor-backend ray`):
the leader starts a Ray head and waits for every pod to join, the workers wait for the head and
join it with `ray start --block`, and only the leader runs `vllm serve` (the LWS multi-node vLLM
example's scheme).

Every flag is a vLLM 0.33.0 `vllm serve` option (checked in tests against vLLM's own parser dump,
`fixtures/vllm/vllm-0.33.0-serve-flags.json`). DeepSeek-V4 recipe flags (`RECIPE_FLAGS`) come
from the vLLM recipes (deepseek-v4-facts §5.1 [R1][R2]).

User extra arguments come last. One that names a flag the runtime sets from the plan is dropped
if it repeats the plan's value and rejected (`ExtraArgsError`) if it contradicts it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dsv4_runtime.config import RuntimeConfig
from dsv4_runtime.distributed import Role, host_port
from dsv4_runtime.launch import Launch

__all__ = [
    "LEADER_WAIT_TIMEOUT_SECONDS",
    "OWNED_FLAGS",
    "PREFIX_FLAGS",
    "RAY_JOIN_TIMEOUT_SECONDS",
    "RAY_WAIT_FOR_NODES",
    "RECIPE_FLAGS",
    "WAIT_FOR_PORT",
    "ExtraArgsError",
    "OwnedFlag",
    "merge_extra_args",
    "vllm_launch",
    "vllm_serve_argv",
]

RECIPE_FLAGS: tuple[str, ...] = (
    "--trust-remote-code",
    "--tokenizer-mode", "deepseek_v4",
    "--tool-call-parser", "deepseek_v4",
    "--enable-auto-tool-choice",
    "--reasoning-parser", "deepseek_v4",
)  # fmt: skip
"""Flags every DeepSeek-V4 vLLM launch passes (recipes [R1][R2], facts §5.1)."""


@dataclass(frozen=True)
class OwnedFlag:
    """A `vllm serve` option the runtime sets itself.

    Attributes:
        name: canonical long option.
        aliases: other spellings vLLM 0.33.0 accepts (from its parser).
        negations: spellings that turn a boolean flag off.
        kind: `bool` (no value), `int`, `tokens` (an int vLLM also takes as `8K` or `8.2k`),
            `float`, `json`, `str`, or `list` (nargs='+').
    """

    name: str
    aliases: tuple[str, ...] = ()
    negations: tuple[str, ...] = ()
    kind: str = "str"


OWNED_FLAGS: tuple[OwnedFlag, ...] = (
    OwnedFlag("--model", kind="str"),
    OwnedFlag("--served-model-name", kind="list"),
    OwnedFlag("--host"),
    OwnedFlag("--port", kind="int"),
    OwnedFlag("--headless", kind="bool"),
    OwnedFlag("--tensor-parallel-size", ("-tp",), kind="int"),
    OwnedFlag("--pipeline-parallel-size", ("-pp",), kind="int"),
    OwnedFlag("--data-parallel-size", ("-dp",), kind="int"),
    OwnedFlag("--data-parallel-size-local", ("-dpl",), kind="int"),
    OwnedFlag("--data-parallel-address", ("-dpa",)),
    OwnedFlag("--data-parallel-rpc-port", ("-dpp",), kind="int"),
    OwnedFlag("--data-parallel-start-rank", ("-dpr",), kind="int"),
    OwnedFlag("--data-parallel-rank", ("-dpn",), kind="int"),
    OwnedFlag(
        "--data-parallel-hybrid-lb", ("-dph",), ("--no-data-parallel-hybrid-lb",), kind="bool"
    ),
    OwnedFlag(
        "--data-parallel-external-lb", ("-dpe",), ("--no-data-parallel-external-lb",), kind="bool"
    ),
    OwnedFlag("--nnodes", ("-n",), kind="int"),
    OwnedFlag("--node-rank", ("-r",), kind="int"),
    OwnedFlag("--distributed-executor-backend"),
    OwnedFlag("--enable-expert-parallel", ("-ep",), ("--disable-expert-parallel",), kind="bool"),
    OwnedFlag("--kv-cache-dtype"),
    OwnedFlag("--block-size", kind="int"),
    OwnedFlag("--max-model-len", kind="tokens"),
    OwnedFlag("--max-num-seqs", kind="int"),
    OwnedFlag("--max-num-batched-tokens", kind="tokens"),
    OwnedFlag("--gpu-memory-utilization", ("--device-memory-utilization",), kind="float"),
    OwnedFlag("--speculative-config", ("-sc",), kind="json"),
    # vLLM 0.33.0's top-level aliases of speculative_config's method, model and
    # num_speculative_tokens: the runtime never sets them, so any value contradicts the plan.
    OwnedFlag("--spec-method"),
    OwnedFlag("--spec-model"),
    OwnedFlag("--spec-tokens", kind="int"),
    OwnedFlag("--shutdown-timeout", kind="int"),
    OwnedFlag("--trust-remote-code", negations=("--no-trust-remote-code",), kind="bool"),
    OwnedFlag("--tokenizer-mode"),
    OwnedFlag("--tool-call-parser"),
    OwnedFlag("--enable-auto-tool-choice", negations=("--disable-auto-tool-choice",), kind="bool"),
    OwnedFlag("--reasoning-parser"),
)
"""Options set from the plan, the layout or the recipe; extra arguments may not change them."""

_BY_SPELLING: dict[str, tuple[OwnedFlag, bool]] = {}
for _flag in OWNED_FLAGS:
    for _spelling in (_flag.name, *_flag.aliases):
        _BY_SPELLING[_spelling] = (_flag, True)
    for _spelling in _flag.negations:
        _BY_SPELLING[_spelling] = (_flag, False)


PREFIX_FLAGS: tuple[str, ...] = ("--tokenizer",)
"""vLLM 0.33.0 flags that are also the start of an owned spelling (`--tokenizer` of
`--tokenizer-mode`); any other start of an owned spelling is an abbreviation of it."""


class ExtraArgsError(ValueError):
    """A user extra engine argument contradicts the plan (names the flag and both values)."""


def vllm_serve_argv(config: RuntimeConfig, role: Role, leader_ip: str) -> list[str]:
    """The `vllm serve` command line for this pod, extra arguments merged in.

    Args:
        config: the operator's plan for the group.
        role: this pod's LWS role.
        leader_ip: the leader's IP (`resolve_leader_ip`), for `--data-parallel-address`.

    Returns:
        argv starting with `vllm serve <weights or model>`.

    Raises:
        ExtraArgsError: an extra argument contradicts a flag the plan sets.
    """
    argv = ["vllm", "serve", config.weights if config.weights is not None else config.model]
    if not role.is_leader and config.pipeline_parallel_size == 1:
        argv.append("--headless")
    argv += ["--served-model-name", config.served_model_name]
    argv += ["--host", config.host, "--port", str(config.api_port)]
    argv += ["--tensor-parallel-size", str(config.tensor_parallel_size)]
    if config.pipeline_parallel_size > 1:
        argv += ["--pipeline-parallel-size", str(config.pipeline_parallel_size)]
        argv += ["--distributed-executor-backend", "ray"]
    else:
        argv += ["--data-parallel-size", str(config.data_parallel_size)]
        argv += ["--data-parallel-size-local", str(config.data_parallel_size_local)]
        if not role.is_leader:
            start_rank = role.worker_index * config.data_parallel_size_local
            argv += ["--data-parallel-start-rank", str(start_rank)]
        if config.nodes > 1:
            argv += ["--data-parallel-address", leader_ip]
            argv += ["--data-parallel-rpc-port", str(config.data_parallel_rpc_port)]
    if config.expert_parallel:
        argv.append("--enable-expert-parallel")
    argv += [
        "--kv-cache-dtype", config.kv_cache_dtype,
        "--block-size", str(config.block_size),
        "--max-model-len", str(config.max_model_len),
        "--max-num-seqs", str(config.max_num_seqs),
        "--max-num-batched-tokens", str(config.max_num_batched_tokens),
        "--gpu-memory-utilization", repr(config.gpu_memory_utilization),
    ]  # fmt: skip
    if config.num_speculative_tokens > 0:
        speculative = {"method": "mtp", "num_speculative_tokens": config.num_speculative_tokens}
        argv += ["--speculative-config", json.dumps(speculative, separators=(",", ":"))]
    argv += ["--shutdown-timeout", str(config.drain_timeout_seconds)]
    argv += RECIPE_FLAGS
    return argv + merge_extra_args(argv, config.extra_engine_args)


RAY_JOIN_TIMEOUT_SECONDS = 600
"""How long the PP leader waits for every pod to join its Ray cluster (and a worker for the
leader's Ray head to listen) before giving up; pods of one group start within minutes of each
other, image pulls included, when gang-scheduled."""

LEADER_WAIT_TIMEOUT_SECONDS = 600
"""How long a DP worker waits for its leader's runtime (admin port) before it starts `vllm serve
--headless`; past it the worker exits and its container restarts. vLLM's engine cores, headless
ones too, send HELLO to the leader's front-end and give up after `HANDSHAKE_TIMEOUT_MINS` = 5
(`vllm/v1/engine/core.py`, `startup_handshake`): a worker that started vLLM more than 5 minutes
before its leader's front-end (the leader pod pulled its image or was scheduled later) crashed
into CrashLoopBackOff. The leader's runtime opens its admin port just before it starts vLLM."""

RAY_WAIT_FOR_NODES = (
    "import sys, time, ray\n"
    "want, limit = int(sys.argv[1]), float(sys.argv[2])\n"
    "deadline = time.monotonic() + limit\n"
    "ray.init(address='auto', logging_level='ERROR')\n"
    "while (alive := sum(1 for n in ray.nodes() if n['Alive'])) < want:\n"
    "    if time.monotonic() > deadline:\n"
    "        sys.exit(f'Ray cluster has {alive} of {want} nodes after {limit:g} s')\n"
    "    time.sleep(2)\n"
)
"""Leader prelaunch step: wait until `argv[1]` Ray nodes are alive (vLLM's Ray executor needs
all TP × PP GPUs in the cluster when it creates its placement group)."""

WAIT_FOR_PORT = (
    "import socket, sys, time\n"
    "host, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])\n"
    "deadline = time.monotonic() + limit\n"
    "while True:\n"
    "    try:\n"
    "        socket.create_connection((host, port), timeout=2).close()\n"
    "        break\n"
    "    except OSError as error:\n"
    "        if time.monotonic() > deadline:\n"
    "            sys.exit(f'{host}:{port} not reachable after {limit:g} s: {error}')\n"
    "        time.sleep(2)\n"
)
"""Worker prelaunch step: wait until the leader's Ray head accepts connections, so
`ray start --address` does not fail (and restart the container) while the leader is starting;
without PP, until the leader's runtime admin port does (`LEADER_WAIT_TIMEOUT_SECONDS`)."""


def vllm_launch(config: RuntimeConfig, role: Role, leader_ip: str) -> Launch:
    """The processes this pod runs for the `vllm` engine.

    Without PP: `vllm serve` on every pod (leader serves the API, workers are headless and
    first wait for the leader's runtime, `LEADER_WAIT_TIMEOUT_SECONDS`). With PP:
    the leader starts a Ray head, waits for every pod to join, and runs `vllm serve`; workers
    wait for the head and run `ray start --block`.

    Raises:
        ExtraArgsError: see `vllm_serve_argv`.
    """
    if config.pipeline_parallel_size == 1:
        argv = vllm_serve_argv(config, role, leader_ip)
        if role.is_leader or config.nodes == 1:
            return Launch(prelaunch=(), argv=tuple(argv), serves_api=True)
        wait_leader = (
            sys.executable, "-c", WAIT_FOR_PORT,
            leader_ip, str(config.admin_port), str(LEADER_WAIT_TIMEOUT_SECONDS),
        )  # fmt: skip
        leader_at = host_port(leader_ip, config.admin_port)
        return Launch(
            prelaunch=(wait_leader,),
            argv=tuple(argv),
            serves_api=False,
            prelaunch_purposes=(
                f"wait up to {LEADER_WAIT_TIMEOUT_SECONDS} s for the leader's runtime at "
                f"{leader_at} to accept connections",
            ),
        )
    timeout = str(RAY_JOIN_TIMEOUT_SECONDS)
    if role.is_leader:
        ray_head = ("ray", "start", "--head", f"--port={config.ray_port}")
        join = (sys.executable, "-c", RAY_WAIT_FOR_NODES, str(config.nodes), timeout)
        argv = vllm_serve_argv(config, role, leader_ip)
        return Launch(
            prelaunch=(ray_head, join),
            argv=tuple(argv),
            serves_api=True,
            prelaunch_purposes=(
                f"start the Ray head on port {config.ray_port}",
                f"wait up to {timeout} s for all {config.nodes} pods of the group to join the "
                "Ray cluster",
            ),
        )
    wait = (sys.executable, "-c", WAIT_FOR_PORT, leader_ip, str(config.ray_port), timeout)
    ray_worker = ("ray", "start", f"--address={leader_ip}:{config.ray_port}", "--block")
    return Launch(
        prelaunch=(wait,),
        argv=ray_worker,
        serves_api=False,
        prelaunch_purposes=(
            f"wait up to {timeout} s for the leader's Ray head at "
            f"{host_port(leader_ip, config.ray_port)} to accept connections",
        ),
    )


def merge_extra_args(planned: Sequence[str], extra: Sequence[str]) -> list[str]:
    """Check user extra arguments against the planned command line.

    Args:
        planned: the runtime's own `vllm serve` argv.
        extra: the user's extra arguments, in order.

    Returns:
        `extra` without the options that repeat a planned value.

    Raises:
        ExtraArgsError: an extra option sets an owned flag to another value than the plan, or
            sets an owned flag the plan leaves unset for this pod (e.g. `--headless` on the
            leader), or uses a dotted sub-key of an owned flag (`--speculative-config.method`).
    """
    ours = _owned_values(planned)
    kept: list[str] = []
    i = 0
    while i < len(extra):
        token = extra[i]
        owned, enabled, inline, dotted = _lookup(token)
        if owned is None:
            kept.append(token)
            i += 1
            continue
        if dotted:
            raise ExtraArgsError(
                f"extra engine argument {token!r} changes {owned.name}, which the runtime sets "
                "from the plan; change the plan instead"
            )
        values, i = _take_values(owned, enabled, inline, extra, i + 1)
        theirs = _normalise(owned, values)
        mine = ours.get(owned.name)
        if mine is None:
            mine = ("false",) if owned.kind == "bool" else None
        if mine != theirs:
            planned_text = "not set" if mine is None else " ".join(mine)
            given = token if inline is not None else f"{token} {' '.join(values)}"
            raise ExtraArgsError(
                f"extra engine argument {given} contradicts the plan: "
                f"{owned.name} is {planned_text} for this pod (set it through the plan)".replace(
                    "  ", " "
                )
            )
    return kept


def _lookup(token: str) -> tuple[OwnedFlag | None, bool, str | None, bool]:
    """(owned flag, enabling spelling?, inline `=value`, dotted sub-key?) for one token."""
    if not token.startswith("-"):
        return None, True, None, False
    option, sep, value = token.partition("=")
    inline = value if sep else None
    head, dot, _ = option.partition(".")
    dashes = len(head) - len(head.lstrip("-"))
    normalised = head[:dashes] + head[dashes:].replace("_", "-")
    found = _BY_SPELLING.get(normalised)
    if found is None:
        _refuse_abbreviation(token, normalised)
        return None, True, None, False
    return found[0], found[1], inline, bool(dot)


def _refuse_abbreviation(token: str, option: str) -> None:
    """Raise when `option` abbreviates an owned spelling.

    vLLM's parser is an argparse parser with abbreviations allowed (`FlexibleArgumentParser`
    does not set `allow_abbrev=False`), so `--max-model=1048576` would set `--max-model-len`
    behind the plan's back, or fail as ambiguous.

    Raises:
        ExtraArgsError: `option` is the start of an owned long spelling and not itself a vLLM
            flag (`PREFIX_FLAGS`).
    """
    if not option.startswith("--") or len(option) < 3 or option in PREFIX_FLAGS:
        return
    matches = sorted(s for s in _BY_SPELLING if s.startswith(option))
    if matches:
        raise ExtraArgsError(
            f"extra engine argument {token!r} abbreviates {', '.join(matches)}, which the "
            "runtime sets from the plan (vLLM's parser accepts abbreviations); spell flags in "
            "full, and set these through the plan"
        )


def _take_values(
    owned: OwnedFlag, enabled: bool, inline: str | None, tokens: Sequence[str], start: int
) -> tuple[list[str], int]:
    """The values of an owned option starting at `tokens[start]`, and the next index."""
    if owned.kind == "bool":
        if inline is not None:
            return [inline], start
        return ["true" if enabled else "false"], start
    if inline is not None:
        return [inline], start
    if owned.kind == "list":
        end = start
        while end < len(tokens) and not tokens[end].startswith("-"):
            end += 1
        return list(tokens[start:end]), end
    if start >= len(tokens):
        raise ExtraArgsError(f"extra engine argument {owned.name} has no value")
    return [tokens[start]], start + 1


def _normalise(owned: OwnedFlag, values: Sequence[str]) -> tuple[str, ...] | None:
    """Values in a comparable form (ints, floats and JSON parsed, booleans lower-cased)."""
    readers: dict[str, Callable[[str], str]] = {
        "int": lambda v: str(int(v)),
        "tokens": lambda v: str(_human_readable_int(v)),
        "float": lambda v: repr(float(v)),
        "json": lambda v: json.dumps(json.loads(v), sort_keys=True),
        "bool": lambda v: "true" if v.lower() in {"true", "1", "yes"} else "false",
    }
    read = readers.get(owned.kind)
    if read is None:
        return tuple(values)
    try:
        return tuple(read(v) for v in values)
    except ValueError:
        return tuple(values)


_DECIMAL_SUFFIXES = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY_SUFFIXES = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _human_readable_int(value: str) -> int:
    """A token count as vLLM 0.33.0 reads `--max-model-len` and `--max-num-batched-tokens`.

    vLLM's `human_readable_int(_or_auto)` (`vllm/utils/argparse_utils.py`): `8k` = 8,000,
    `8K` = 8,192, decimals only with a decimal suffix (`8.192k`), `auto` = -1.

    Raises:
        ValueError: not a number vLLM would take.
    """
    text = value.strip()
    if text.lower() == "auto":
        return -1
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT])", text)
    if match is None:
        return int(text)
    number, suffix = match.groups()
    if suffix in _BINARY_SUFFIXES:
        return int(number) * _BINARY_SUFFIXES[suffix]
    return int(float(number) * _DECIMAL_SUFFIXES[suffix])


def _owned_values(planned: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Owned flag name → normalised values, as set in the planned argv (model positional too)."""
    ours: dict[str, tuple[str, ...]] = {}
    if len(planned) >= 3 and list(planned[:2]) == ["vllm", "serve"]:
        ours["--model"] = (planned[2],)
    i = 3
    while i < len(planned):
        owned, enabled, inline, _ = _lookup(planned[i])
        if owned is None:
            i += 1
            continue
        values, i = _take_values(owned, enabled, inline, planned, i + 1)
        normalised = _normalise(owned, values)
        if normalised is not None:
            ours[owned.name] = normalised
    return ours
