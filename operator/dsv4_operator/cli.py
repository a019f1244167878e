"""The `dsv4` command line: `dsv4 plan`, `dsv4 crdgen`, `dsv4 operator run`.

`dsv4 plan` exit codes: 0 the plan fits, 1 it does not (the plan is still printed, `fits: false`),
2 the input is invalid (the message names the field and the limit). With `--output json` or
`yaml` invalid input also writes an error document to stdout (`error_document`), so a script
never has to parse the English on stderr.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table
from typing_extensions import override

from dsv4_operator.planning import PlanningError, PlanRequest, plan, plan_to_dict
from dsv4_operator.planning.findings import CLI_FLAGS
from dsv4_operator.planning.planner import Plan, shortfall_bytes, shortfall_tokens
from dsv4_operator.settings import OperatorSettings

if TYPE_CHECKING:
    from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec

__all__ = ["app", "main"]

app = typer.Typer(
    name="dsv4",
    help="Plan, deploy and scale DeepSeek-V4 on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"max_content_width": 100},
)
operator_app = typer.Typer(help="Run the operator.", no_args_is_help=True)
app.add_typer(operator_app, name="operator")

_GB = 10**9
_GIB = 1 << 30
_WIDTH = 100


class Output(StrEnum):
    """Output formats of `dsv4 plan`."""

    table = "table"
    json = "json"
    yaml = "yaml"


class SpecFileError(PlanningError):
    """FILE's resource failed the API parse: a `PlanningError` on field `file`.

    It keeps the parse's individual problems for `error_document`.

    Attributes:
        problems: `(path, message)` of every failing field of the resource, in the parse's
            order (`spec.gpu.types`, "Field required").
    """

    def __init__(self, message: str, problems: tuple[tuple[str, str], ...]) -> None:
        super().__init__("file", message)
        self.problems = problems


def error_document(error: PlanningError, where: str, message: str) -> dict[str, Any]:
    """The document `dsv4 plan --output json|yaml` writes to stdout for invalid input (exit 2).

    `{"error": {"code", "field", "where", "message", "problems"}}`: `code` the stable
    `INVALID_REQUEST`; `field` the planner request field at fault (`gpu_types`, `max_nodes`,
    `file` for a FILE that does not parse); `where` the option and/or spec field as the stderr
    message names it (`--gpu (gpu_types)`); `message` what is wrong and the limit (the stderr
    text after `where: `); `problems` for a FILE whose resource fails the API parse, one
    `{path, message}` per failing field (`spec.gpu.types`), else empty. A plan document never
    has a top-level `error` key, so a script tells the two apart by it.
    """
    problems = error.problems if isinstance(error, SpecFileError) else ()
    return {
        "error": {
            "code": str(error.code),
            "field": error.field,
            "where": where,
            "message": message,
            "problems": [{"path": path, "message": text} for path, text in problems],
        }
    }


def _load_request(
    path: Path | None,
) -> tuple[PlanRequest, DeepSeekV4DeploymentSpec | None, str]:
    """The request FILE (or nothing) sets, FILE's spec (None without FILE) and its name.

    The spec says what the planner's messages cannot name: how replicas share
    `spec.gpu.budget` (its budget is one replica's share, "the GPU budget of N") and which
    field caps the replicas of a tokens/s target (h22).
    """
    if path is None:
        return PlanRequest(), None, ""
    try:
        body = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:  # unreadable, not text, not YAML
        raise PlanningError("file", f"{path}: {e}") from None
    except RecursionError:  # PyYAML's constructor recurses once per nesting level
        raise PlanningError("file", f"{path}: nested too deeply to load as YAML") from None
    if not isinstance(body, dict):
        raise PlanningError("file", f"{path}: not a DeepSeekV4Deployment mapping")
    # The API types (pydantic, the CRD) load only when a file is given: keeps flag-only runs fast.
    from dsv4_operator.api.errors import InvalidSpecError  # noqa: PLC0415
    from dsv4_operator.api.v1alpha1.deployment import parse_deployment  # noqa: PLC0415
    from dsv4_operator.planning.from_spec import request_from_spec  # noqa: PLC0415

    try:
        resource = parse_deployment(body)
        name = str(resource.metadata.get("name") or "")
        return request_from_spec(resource.spec), resource.spec, name
    except InvalidSpecError as e:
        raise SpecFileError(
            f"{path}: {e}", tuple((err.path, err.message) for err in e.errors)
        ) from None


def _max_model_len(value: str | None) -> int | str | None:
    if value is None:
        return "keep"
    if value.strip().lower() == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise PlanningError(
            "max_model_len", f"{value!r} is neither an integer nor 'auto'"
        ) from None


def _kv_offloading_gib(gib: float) -> float:
    """`--kv-offloading-size` (GiB of host KV cache per engine), checked as the resource checks it.

    The resource's extraArgs take `--kv-offloading-size=N` above 0 and at most
    `MAX_KV_OFFLOADING_GIB` (`api.v1alpha1.engine`), and so does the option: vLLM 0.33.0 reads
    any size but None as "on" (`VllmConfig._post_init_kv_transfer_config`, vllm/config/vllm.py
    at 000fc94b), so 0 gives the native backend's `OffloadingConnector` `cpu_bytes_to_use` 0,
    which `CPUOffloadingSpec` refuses at start (vllm/v1/kv_offload/cpu/spec.py). No host KV
    cache is the option left out.

    Raises:
        PlanningError: for 0, a negative size, NaN, or one above `MAX_KV_OFFLOADING_GIB`.
    """
    from dsv4_operator.api.v1alpha1.engine import (  # noqa: PLC0415
        MAX_KV_OFFLOADING_GIB,
        kv_offloading_bound,
    )

    if not 0 < gib <= MAX_KV_OFFLOADING_GIB:  # False for NaN too
        raise PlanningError(
            "kv_offloading_gib",
            f"{gib} GiB must be {kv_offloading_bound()}, as the resource's extraArgs take it "
            "(vLLM 0.33.0 refuses 0 with the "
            "native backend: its OffloadingConnector gets cpu_bytes_to_use 0 and stops with "
            "'cpu_bytes_to_use must be specified'); leave --kv-offloading-size out to plan "
            "without a host KV cache",
        )
    return gib


def _host_kv_with_option(spec: DeepSeekV4DeploymentSpec, gib: float) -> dict[str, Any]:
    """The host KV cache request fields of FILE's extraArgs with `--kv-offloading-size=GIB` last.

    vLLM 0.33.0's `--kv-offloading-size` decides the connector whatever `--kv-transfer-config`
    names (`VllmConfig._post_init_kv_transfer_config`, vllm/config/vllm.py at 000fc94b): the
    native backend configures `OffloadingConnector` with the size, `--kv-offloading-backend=
    lmcache` runs `LMCacheMPConnector` without it. So the option over a FILE is planned as that
    flag appended to `spec.engine.extraArgs` (`EngineSpec`'s reading, the last entry counts),
    not added to the host KV cache FILE configures.

    Args:
        spec: FILE's spec.
        gib: the option's GiB per engine (`_kv_offloading_gib` checked it).

    Returns:
        `kv_offloading_gib` (GiB per engine), `kv_offload_rank_bytes` (bytes per TP rank) and
        `host_kv_not_counted` (descriptions) for `PlanRequest`.
    """
    extra = (*spec.engine.extra_args, f"--kv-offloading-size={gib!r}")
    engine = spec.engine.model_copy(update={"extra_args": extra})
    return {
        "kv_offloading_gib": engine.kv_offloading_gib,
        "kv_offload_rank_bytes": engine.kv_offload_rank_bytes,
        "host_kv_not_counted": engine.kv_offload_not_counted,
    }


def _offload_bytes(gib: float | None) -> int | None:
    """`--cpu-offload-gb` (GiB, as vLLM's flag) in bytes; None when not given.

    Raises:
        PlanningError: for NaN, an infinite size, or one above `MAX_CPU_OFFLOAD_GIB` (4096, the
            resource's own limit for `--cpu-offload-gb` in extraArgs; 1e300 GiB overflowed to
            an infinite byte count); the planner checks the sign.
    """
    from dsv4_operator.api.v1alpha1.engine import MAX_CPU_OFFLOAD_GIB  # noqa: PLC0415

    if gib is None:
        return None
    if not math.isfinite(gib):
        raise PlanningError("cpu_offload_bytes", f"{gib} GiB is not a finite size")
    if gib > MAX_CPU_OFFLOAD_GIB:
        raise PlanningError(
            "cpu_offload_bytes", f"{gib} GiB is above the limit of {MAX_CPU_OFFLOAD_GIB} GiB"
        )
    return int(gib * (1 << 30))


class _PipeConsole(Console):
    """A rich Console whose closed pipe raises BrokenPipeError.

    rich exits 1 itself, the code `dsv4 plan` reserves for a plan that does not fit.
    """

    @override
    def on_broken_pipe(self) -> None:
        """Point stdout at /dev/null (so the exit flush cannot fail) and raise."""
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise BrokenPipeError


def _table(p: Plan, console: Console, notes: list[str]) -> None:
    c = p.chosen
    mem, lay = c.memory, c.layout
    verdict = "[green]fits[/green]" if p.fits else "[red]does not fit[/red]"
    console.print(
        f"[bold]DeepSeek-V4-{p.model.name.capitalize()}[/bold] {p.weights_format} weights "
        f"({p.checkpoint_bytes / _GB:,.1f} GB), KV {p.request.kv_cache_dtype}: {verdict}"
    )
    console.print(
        f"{lay.gpus}x {c.gpu.name} = {lay.nodes} node(s) x {lay.gpus_per_node}; {lay.describe()}"
    )
    length = f"{c.max_model_len:,}" if c.max_model_len else "none fits"
    console.print(
        f"max-model-len {length}; max-num-seqs {c.max_num_seqs}; "
        f"max-num-batched-tokens {c.max_num_batched_tokens:,}"
    )
    if c.replicas_for_target:
        console.print(
            f"{p.request.tokens_per_second:,} tokens/s needs {c.replicas_for_target} "
            f"replica{'s' * (c.replicas_for_target != 1)} "
            f"({c.total_gpus} GPUs) at ~{c.tokens_per_second:,} tokens/s each"
        )
    t = Table(title="Per GPU", title_justify="left", width=_WIDTH)
    t.add_column("item")
    t.add_column("bytes", justify="right")
    t.add_column("GB", justify="right")
    rows = [
        (f"budget ({mem.gpu_memory_utilization} x {mem.memory_bytes:,})", mem.budget_bytes),
        ("weights: routed experts", mem.weights.expert_bytes),
        ("weights: TP-sharded", mem.weights.sharded_bytes),
        ("weights: replicated", mem.weights.replicated_bytes),
        *(
            [("weights: EPLB transfer buffer", mem.weights.eplb_buffer_bytes)]
            if mem.weights.eplb_buffer_bytes
            else []
        ),
        *(
            [("weights: prefetch buffer pool beyond offload", mem.weights.offload_buffer_bytes)]
            if mem.weights.offload_buffer_bytes
            else []
        ),
        ("activations", mem.activation_bytes),
        ("CUDA graphs", mem.cuda_graph_bytes),
        ("non-torch overhead", mem.overhead_bytes),
        ("KV cache pool", max(mem.kv_cache_bytes, 0)),
    ]
    short = shortfall_bytes(c)
    if short:
        rows.append((f"short for one {shortfall_tokens(p.request, c):,}-token request", short))
    for name, value in rows:
        t.add_row(name, f"{value:,}", f"{value / _GB:,.2f}")
    console.print(t)
    kv_line = (
        f"KV: {p.geometry.bytes_per_token:,.2f} B/token "
        f"({p.geometry.block_bytes:,} B per 256-token block); "
    )
    if c.max_concurrency and c.max_model_len:
        # KV room (max_concurrency) and what vLLM runs at once (max-num-seqs per DP rank) differ.
        seqs = c.max_num_seqs * lay.data_parallel
        requests = "request" if c.max_concurrency == 1 else "requests"
        sequences = "sequence" if seqs == 1 else "sequences"
        kv_line += (
            f"{c.kv_tokens_per_replica:,} tokens per replica, room for {c.max_concurrency:,} "
            f"{c.max_model_len:,}-token {requests}; max-num-seqs {c.max_num_seqs} x DP "
            f"{lay.data_parallel} = {seqs:,} {sequences} at once; ~{c.tokens_per_second:,} "
            "tokens/s (estimate)"
        )
    else:
        kv_line += "no room for one request (see the warnings below)"
    console.print(kv_line)
    console.print(
        f"/dev/shm {p.shm.size_bytes // _GIB} GiB; first boot budget {p.startup_budget_seconds:,} s"
    )
    for w in p.warnings:
        console.print(f"[yellow]{w.code}[/yellow]: {w.message}", soft_wrap=False)
    console.print("[bold]Why[/bold]")
    for note in notes:
        console.print(f"- {note}")
    for line in p.reasons:
        console.print(f"- {line}")
    if p.rejected:
        console.print(f"{len(p.rejected)} candidate layouts rejected (see --output json)")


_FIELD_FLAGS: dict[str, str] = {
    **{setting.value: flag for setting, flag in CLI_FLAGS.items()},
    "model": "--model",
    "weights_format": "--weights",
    "kv_cache_dtype": "--kv-cache-dtype",
    "gpu_types": "--gpu",
    "max_nodes": "--nodes",
    "tensor_parallel": "--tensor-parallel",
    "data_parallel": "--data-parallel",
    "pipeline_parallel": "--pipeline-parallel",
    "expert_parallel": "--expert-parallel",
    "tokens_per_second": "--tokens-per-second",
    "cpu_offload_bytes": "--cpu-offload-gb",
    "kv_offloading_gib": "--kv-offloading-size",
    "max_cudagraph_capture_size": "--max-cudagraph-capture-size",
    "weights_download": "--download",
}
"""The `dsv4 plan` option behind each planner request field, for error messages."""


def _spec_notes(spec: DeepSeekV4DeploymentSpec | None, p: Plan | None) -> list[str]:
    """What FILE's spec says that the plan's messages cannot name (Why lines of the table).

    Its budget share (`budget_share_words`), then, for a plan `p` that does not fit because
    its tokens/s target needs more replicas than FILE allows, the field that caps them
    (`replica_cap_words`).
    """
    if spec is None:
        return []
    # The API types load only when a file is given: keeps flag-only runs fast.
    from dsv4_operator.planning.from_spec import (  # noqa: PLC0415
        budget_share_words,
        replica_cap_words,
    )

    notes = [budget_share_words(spec)]
    if p is not None and not p.fits:
        notes.append(replica_cap_words(spec, p))
    return [n for n in notes if n is not None]


def _where(field: str, file: Path | None, given: set[str]) -> str:
    """How an error names request field `field`: the option, the spec field, or both.

    `given` are the request fields set by options on the command line: such a field is named
    as its option; one FILE may have set is named by its spec field too
    (`spec.parallelism.tensor / --tensor-parallel`), and one no option sets (`spec.gpu.budget`)
    by its spec field alone.
    """
    flag = _FIELD_FLAGS.get(field)
    path = None
    if file is not None and field not in given:
        # The API types load only when a file is given: keeps flag-only runs fast.
        from dsv4_operator.planning.from_spec import spec_path  # noqa: PLC0415

        path = spec_path(field)
    if path == field:
        path = None
    names = " / ".join(n for n in (path, flag) if n)
    return f"{names} ({field})" if names else field


def _write(data: dict[str, Any], output: Output) -> None:
    """Write `data` to stdout as JSON (indent 2) or YAML (keys in order).

    A closed pipe is not an error (`dsv4 plan ... | head`).
    """
    try:
        if output is Output.json:
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
        else:
            sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
        sys.stdout.flush()
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (stop the flush at exit)


@app.command("plan")
def plan_command(
    file: Annotated[
        Path | None,
        typer.Argument(help="A DeepSeekV4Deployment YAML; flags override its values."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="flash or pro (without FILE: flash).")] = None,
    weights: Annotated[str | None, typer.Option(help="official, nvfp4, fp8, bf16 or int4.")] = None,
    kv_cache_dtype: Annotated[str | None, typer.Option(help="fp8 or bf16.")] = None,
    gpu: Annotated[
        list[str] | None,
        typer.Option(help="GPU type; repeat in order of preference (e.g. h100-80gb)."),
    ] = None,
    gpus_per_node: Annotated[
        int | None,
        typer.Option(
            help="GPUs per node (default: the type's usual node, 4 for gh200/gb200, else 8)."
        ),
    ] = None,
    nodes: Annotated[int | None, typer.Option(help="Most nodes per replica.")] = None,
    tensor_parallel: Annotated[int | None, typer.Option(help="Pin TP.")] = None,
    data_parallel: Annotated[int | None, typer.Option(help="Pin DP.")] = None,
    pipeline_parallel: Annotated[int | None, typer.Option(help="Pin PP.")] = None,
    expert_parallel: Annotated[
        bool | None, typer.Option("--expert-parallel/--no-expert-parallel", help="Pin EP.")
    ] = None,
    max_model_len: Annotated[str | None, typer.Option(help="Tokens, or auto.")] = None,
    max_num_seqs: Annotated[int | None, typer.Option(help="Sequences per DP rank.")] = None,
    max_num_batched_tokens: Annotated[int | None, typer.Option(help="Tokens per step.")] = None,
    gpu_memory_utilization: Annotated[
        float | None, typer.Option(help="Fraction of GPU memory vLLM may use.")
    ] = None,
    speculative_tokens: Annotated[int | None, typer.Option(help="MTP draft tokens.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Target concurrent requests.")] = None,
    tokens_per_second: Annotated[int | None, typer.Option(help="Target tokens/s.")] = None,
    cpu_offload_gb: Annotated[
        float | None, typer.Option(help="Weights offloaded to host memory per GPU, GiB.")
    ] = None,
    kv_offloading_size: Annotated[
        float | None,
        typer.Option(
            help="Host KV cache per engine (DP rank), GiB, above 0 (vLLM's --kv-offloading-size, "
            "native backend, which refuses 0; leave it out for none): added, times the engines "
            "per pod, to /dev/shm and the memory request. With FILE: as that flag appended to "
            "its spec.engine.extraArgs (it replaces their KV connector)."
        ),
    ] = None,
    max_cudagraph_capture_size: Annotated[
        int | None,
        typer.Option(
            help="Largest CUDA-graph batch, tokens (vLLM's --max-cudagraph-capture-size; "
            "default: vLLM's own for the planned sizes, which the operator passes)."
        ),
    ] = None,
    download: Annotated[
        bool | None,
        typer.Option(
            "--download/--no-download",
            help="Weights come from the Hugging Face Hub, so the first-boot budget includes "
            "the download (the resource's default; without FILE default on; with FILE its "
            "spec.modelSource decides).",
        ),
    ] = None,
    output: Annotated[Output, typer.Option(help="table, json or yaml.")] = Output.table,
) -> None:
    """Plan GPUs, nodes, layout, KV cache and /dev/shm for DeepSeek-V4."""
    console = _PipeConsole(width=_WIDTH, stderr=False)
    spec: DeepSeekV4DeploymentSpec | None = None
    options = {
        "model": model,
        "weights_format": weights,
        "kv_cache_dtype": kv_cache_dtype,
        "cpu_offload_bytes": cpu_offload_gb,
        "kv_offloading_gib": kv_offloading_size,
        "gpu_types": gpu,
        "gpus_per_node": gpus_per_node,
        "max_nodes": nodes,
        "tensor_parallel": tensor_parallel,
        "data_parallel": data_parallel,
        "pipeline_parallel": pipeline_parallel,
        "expert_parallel": expert_parallel,
        "max_model_len": max_model_len,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": max_num_batched_tokens,
        "gpu_memory_utilization": gpu_memory_utilization,
        "speculative_tokens": speculative_tokens,
        "concurrency": concurrency,
        "tokens_per_second": tokens_per_second,
        "max_cudagraph_capture_size": max_cudagraph_capture_size,
        "weights_download": download,
    }
    given = {k for k, v in options.items() if v is not None}
    try:
        req, spec, name = _load_request(file)
        mml = _max_model_len(max_model_len)
        # Empty names and lists count as not given.
        convert: dict[str, Callable[[Any], Any]] = {
            "weights_format": lambda name: name.lower() or None,
            "kv_cache_dtype": lambda name: name.lower() or None,
            "cpu_offload_bytes": _offload_bytes,
            "kv_offloading_gib": _kv_offloading_gib,
            "gpu_types": lambda types: tuple(g.lower() for g in types) or None,
        }
        # The options as request fields (`max_model_len` and `weights_download` below).
        converted = {
            k: convert[k](v) if k in convert else v
            for k, v in options.items()
            if v is not None and k not in ("max_model_len", "weights_download")
        }
        changes: dict[str, Any] = {k: v for k, v in converted.items() if v is not None}
        if spec is not None and "kv_offloading_gib" in changes:
            changes |= _host_kv_with_option(spec, changes["kv_offloading_gib"])
        if download is not None or file is None:
            changes["weights_download"] = True if download is None else download
        if mml != "keep":
            changes["max_model_len"] = mml
        result = plan(dataclasses.replace(req, **changes))
        if spec is not None and result.fits:
            # What the operator refuses (InvalidSpec) only once it has the plan (h38).
            from dsv4_operator.render.refusal import rollout_refusal  # noqa: PLC0415

            if (problem := rollout_refusal(name, spec, result)) is not None:
                raise PlanningError("file", f"{file}: {problem}")
    except PlanningError as e:
        detail = str(e).removeprefix(f"{e.field}: ")
        if e.field == "gpu_budget":  # the planner's budget is one replica's share
            detail += "".join(f"; {n}" for n in _spec_notes(spec, None) if n not in detail)
        where = _where(e.field, file, given)
        typer.echo(f"error: {where}: {detail}", err=True)
        if output is not Output.table:
            _write(error_document(e, where, detail), output)
        raise typer.Exit(2) from None
    if output is Output.table:
        try:
            _table(result, console, _spec_notes(spec, result))
            sys.stdout.flush()
        except BrokenPipeError:  # `dsv4 plan | head`: the reader left, not an error of the plan
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (stop the flush at exit)
    else:
        _write(plan_to_dict(result), output)
    if not result.fits:
        raise typer.Exit(1)


@app.command("crdgen")
def crdgen_command(
    root: Annotated[
        Path | None, typer.Option(help="Repository root to write crds/ and charts/ under.")
    ] = None,
) -> None:
    """Regenerate the CRD (crds/ and the chart's crds/) from the pydantic types."""
    from dsv4_operator import crdgen  # noqa: PLC0415  (keeps `dsv4 plan` start-up light)

    raise typer.Exit(crdgen.main(["--root", str(root)] if root else []))


def _default(setting: str) -> str:
    """`default X` for `--help`: the `OperatorSettings` field's default."""
    value = OperatorSettings.model_fields[setting].default
    return f"default {value:g}" if isinstance(value, float) else f"default {value}"


@operator_app.command("run")
def operator_run_command(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Namespace to watch; repeat. Default: all."),
    ] = None,
    peering: Annotated[
        str | None,
        typer.Option(help="kopf peering object for HA (replicas need distinct --priority)."),
    ] = None,
    priority: Annotated[int | None, typer.Option(help="kopf peering priority.")] = None,
    runtime_image: Annotated[
        str | None,
        typer.Option(
            help=f"Worker image when spec.engine.image is unset ({_default('runtime_image')})."
        ),
    ] = None,
    resync_seconds: Annotated[
        float | None,
        typer.Option(help=f"Periodic resync interval, seconds ({_default('resync_seconds')})."),
    ] = None,
    progress_seconds: Annotated[
        float | None,
        typer.Option(
            help="Faster resync while a rollout is in progress, seconds "
            f"({_default('progress_seconds')})."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help=f"Prometheus /metrics port (0: off; {_default('metrics_port')})."),
    ] = None,
    liveness_port: Annotated[int | None, typer.Option(help="kopf /healthz port (0: off).")] = None,
    log_format: Annotated[
        str | None,
        typer.Option(help=f"Log format: full, plain or json ({_default('log_format')})."),
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Log at DEBUG level.")] = False,
) -> None:
    """Run the operator (kopf): reconcile DeepSeekV4Deployments into LeaderWorkerSets.

    Flags override the DSV4_OPERATOR_* environment variables (each setting's name in upper case,
    e.g. DSV4_OPERATOR_RESYNC_SECONDS); DSV4_OPERATOR_PROMETHEUS_URL, _AUTOSCALE_SECONDS,
    _RETRY_DELAY_SECONDS and _WORKERS are read from the environment only.
    """
    # Imported here: kopf and the Kubernetes client stay out of `dsv4 plan`'s start-up.
    from dsv4_operator.handlers import run  # noqa: PLC0415

    flags: dict[str, Any] = {
        "namespaces": tuple(namespace) if namespace else None,
        "peering": peering,
        "priority": priority,
        "runtime_image": runtime_image,
        "resync_seconds": resync_seconds,
        "progress_seconds": progress_seconds,
        "metrics_port": metrics_port,
        "liveness_port": liveness_port,
        "log_format": log_format,
    }
    from pydantic import ValidationError  # noqa: PLC0415

    try:
        base = OperatorSettings.from_env()
        config = base.model_copy(update={k: v for k, v in flags.items() if v is not None})
        settings = OperatorSettings.model_validate(config.model_dump())
    except ValidationError as error:
        for detail in error.errors(include_url=False):
            name = str(detail["loc"][0]) if detail["loc"] else "settings"
            flag = "namespace" if name == "namespaces" else name.replace("_", "-")
            where = f"DSV4_OPERATOR_{name.upper()}"
            if name in flags:  # settings without a flag are read from the environment only
                where = f"--{flag} / {where}"
            typer.echo(f"error: {where}: {detail['msg']} (got {detail['input']!r})", err=True)
        raise typer.Exit(2) from None
    run(settings, verbose=verbose)


def main() -> None:
    """Console-script entry point."""
    app()
