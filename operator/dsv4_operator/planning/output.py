"""The plan as data: the stable `dsv4 plan --output json` contract.

Keys guaranteed (tests pin them; later versions only add keys):
`model, weights_format, kv_cache_dtype, fits, gpu.type, gpu.memory_bytes,
layout.{nodes,gpus_per_node,gpus,tensor_parallel,data_parallel,pipeline_parallel,expert_parallel},
memory_per_gpu.{budget_bytes,weights_bytes,activation_bytes,cuda_graph_bytes,overhead_bytes,kv_cache_bytes},
kv_cache.{bytes_per_token,tokens_per_replica,max_concurrency}, max_model_len, max_num_seqs,
shm_size_bytes, engine_args, warnings[{code,message}], reasons[]`.

`layout.expert_parallel` is the EP size (1 = off). All byte counts are integers;
`kv_cache.bytes_per_token` and `raw_bytes_per_token` are averages per token (a 256-token block's
bytes / 256), so they may be fractional.
`weights_download` says whether `startup_budget_seconds` includes a Hugging Face Hub download
(added later; `dsv4 plan` without FILE assumes one, as the resource's default source does).
`gpu.memory_bytes` is nvidia-smi's total; `gpu.cuda_total_bytes` (added later) is what CUDA, and
so vLLM, reports (less the driver's reservation): `budget_bytes` is that x gpu_memory_utilization.
`memory_per_gpu.unprofiled_sampler_bytes` (added later) is the sampler's runtime peak above
what vLLM's profiling run measures: outside the budget, beside what a worker holds from
start-up, so it lowers the most gpu-memory-utilization the plan allows (0 when the forward peak
covers it).
`memory_per_gpu.shortfall_bytes` is what one GPU lacks for the weights, activations and one
max-model-len request (0 when that fits).
`engine_args.max_cudagraph_capture_size` (added later) is the largest CUDA-graph batch, tokens,
that `cuda_graph_bytes` counts and the renderer passes as `--max-cudagraph-capture-size`; with
speculation (and no cap given) `engine_args.cudagraph_capture_sizes` (added later) lists vLLM's
default sizes, ending at that cap, which the renderer passes instead. When extraArgs turn CUDA
graphs off (warning `CUDA_GRAPHS_OFF`: `--enforce-eager`, `cudagraph_mode` NONE,
`--optimization-level=0`) `cuda_graph_bytes` is 0; the cap is still passed, and vLLM drops it
with the graphs.

`kv_offload_bytes` (added later) is the host KV cache of one pod's engines, bytes
(`--kv-offloading-size` GiB, or an offloading `--kv-transfer-config`'s `cpu_bytes_to_use`, per
engine, plus `SimpleCPUOffloadConnector`'s `cpu_bytes_to_use_per_rank` times the engine's TP
ranks, times the engines per pod; 0 without): included in `shm_size_bytes` (vLLM keeps it in
/dev/shm) and so in the pod's memory request (warning `KV_OFFLOAD`).

`weight_offload_host_bytes` (added later) is the host memory of one pod's offloaded weights,
bytes: an upper bound of what vLLM's weight offloaders pin (`--cpu-offload-gb`, warning
`CPU_OFFLOAD`, or the prefetch offloader's layers, warning `PREFETCH_OFFLOAD`; PyTorch pins each
parameter at its power-of-two ceiling, `planning.offload`) times the pod's GPUs; 0 without.
Added to the pod's memory request (and limit, when set), not to `shm_size_bytes`.
`memory_per_gpu.weights_offload_buffer_bytes` (added later) is what the prefetch offloader's GPU
buffer pool holds beyond the offloaded layers, included in `weights_bytes`.

`warnings[].terms` and `rejected[].reasons[].terms` (added later) are the request settings the
`message` names, in its order, as data, so a script need not parse the English: each
`{setting, value, bound, flag, spec_field, spec_value}`, where `setting` is the `PlanRequest`
field (`max_num_seqs`), `value` the number the message states in the request's unit
(utilization a fraction of 1, lengths and counts in tokens or sequences) or null where the
message names the setting only, `bound` says what the value is (`most`: an upper limit, or a
value to lower the setting to; `least`: a lower limit, or a value to raise it to; `exact`: the
value as it is), `flag` the `dsv4 plan` option that takes `value` as it is
(`--max-num-seqs`), `spec_field` the DeepSeekV4Deployment field that sets it
(`spec.maxNumSeqs`) and `spec_value` the value as that field takes it (utilization in whole
percent, rounded down for `most` and up for `least`; null with `value`, and where the field
cannot take it: a utilization above its 99 %, which says no utilization would do). Built from
the same `Term`s as the message (`findings.Finding`), so the two cannot disagree.

`advice` (added later) is what would make a plan that does not fit fit, as data: the
NO_FEASIBLE_LAYOUT warning's options, from the same `planner.FitAdvice`. Null when the plan
fits (or when only a lower gpu-memory-utilization would, which the warnings' terms give);
else `{settings, cpu_offload_gib, max_num_batched_tokens, layout, layout_advised, more_gpus}`:
`settings` are terms as above, each a value that on its own makes the request plan (bound
`most`: lower the setting to it; `least`: raise it to it); `cpu_offload_gib` the
`--cpu-offload-gb` (GiB per GPU) and `max_num_batched_tokens` the smaller batch (tokens) at
which the closest layout (`layout` at the top level) fits, or null; `layout` the layout
of that GPU type that the planner picks with more nodes allowed and no budget (fewest nodes,
then GPUs; the cheapest first when priced; keys as `layout`), so `--nodes` set to its `nodes`
plans it, or null when none within the search does; `layout_advised` whether the warning offers that
option (false when a setting fixes it and no layout does); `more_gpus` whether `layout` takes
more GPUs than the closest one. `layout_settings` (added later) are terms as above that `layout`
fits only with (empty unless a setting keeps every layout from fitting and the request's own
limits are too small for it changed: the warning then says "lower max-num-seqs to N with at
least G GPUs ...").
`budget_gpus` (added later) is the GPUs per replica the GPU budget (`spec.gpu.budget`'s share)
must allow for `layout`, or null when there is no budget or it allows `layout` already.

Invalid input (exit 2; added later) writes, instead of a plan, `{"error": {code, field, where,
message, problems}}` to stdout with `--output json` or `yaml` (`cli.error_document`): a plan
never has a top-level `error` key. Option syntax that typer itself refuses (`--nodes x`) is
reported on stderr only, as before.

The operator's plan ConfigMap (`plan.json`) holds this document; where it would exceed 512 KiB
(thousands of rejected layouts: Kubernetes refuses a ConfigMap over 1 MiB) it keeps some of
`rejected`, from every GPU type in turn, and adds `rejected_omitted` (added later, only then):
the number left out (`render.service.plan_json`). `dsv4 plan` prints the whole list.
"""

from __future__ import annotations

from typing import Any

from dsv4_operator.planning.evaluate import Evaluation
from dsv4_operator.planning.findings import CLI_FLAGS, Finding, Setting, Term
from dsv4_operator.planning.from_spec import PERCENT_RANGE, SPEC_FIELDS, spec_words
from dsv4_operator.planning.memory import Layout
from dsv4_operator.planning.planner import FitAdvice, Plan, budget_need, shortfall_bytes
from dsv4_operator.planning.request import PlanRequest

__all__ = ["engine_args", "plan_to_dict"]


def engine_args(plan: Plan) -> dict[str, Any]:
    """VLLM engine arguments (argparse `dest` names) that realise the plan.

    The worker runtime renders these as `vllm serve` flags; it never re-plans.
    """
    c, req = plan.chosen, plan.request
    lay = c.layout
    args: dict[str, Any] = {
        "tensor_parallel_size": lay.tensor_parallel,
        "data_parallel_size": lay.data_parallel,
        "data_parallel_size_local": lay.data_parallel_local,
        "enable_expert_parallel": lay.expert_parallel,
        "kv_cache_dtype": "fp8" if req.kv_cache_dtype == "fp8" else "bfloat16",
        "block_size": 256,
        "max_model_len": c.max_model_len,
        "max_num_seqs": c.max_num_seqs,
        "max_num_batched_tokens": c.max_num_batched_tokens,
        "gpu_memory_utilization": c.memory.gpu_memory_utilization,
        "max_cudagraph_capture_size": c.max_cudagraph_capture_size,
    }
    if lay.pipeline_parallel > 1:
        args["pipeline_parallel_size"] = lay.pipeline_parallel
    if req.speculative_tokens > 0:
        args["speculative_config"] = {
            "method": "mtp",
            "num_speculative_tokens": req.speculative_tokens,
        }
    if c.cudagraph_capture_sizes:
        args["cudagraph_capture_sizes"] = list(c.cudagraph_capture_sizes)
    if req.cpu_offload_bytes:
        args["cpu_offload_gb"] = req.cpu_offload_bytes / (1 << 30)
    if req.indexer_cache_dtype == "mxfp4":
        args["attention_config"] = {"indexer_kv_dtype": "mxfp4"}
    return args


def _layout(lay: Layout) -> dict[str, int]:
    return {
        "nodes": lay.nodes,
        "gpus_per_node": lay.gpus_per_node,
        "gpus": lay.gpus,
        "tensor_parallel": lay.tensor_parallel,
        "data_parallel": lay.data_parallel,
        "pipeline_parallel": lay.pipeline_parallel,
        "expert_parallel": lay.expert_parallel_size,
    }


def _term(t: Term) -> dict[str, Any]:
    """One setting a finding names, as data (module docstring: `terms`)."""
    return {
        "setting": t.setting.value,
        "value": t.value,
        "bound": t.bound,
        "flag": CLI_FLAGS[t.setting],
        "spec_field": SPEC_FIELDS[t.setting],
        "spec_value": _spec_value(t),
    }


def _spec_value(t: Term) -> int | None:
    """`t`'s value as its spec field takes it, or None.

    None without a value, for one the field refuses: a utilization above its 99 % (no
    utilization would do, as the message says), and for a setting made in extraArgs, which
    takes a flag, not a number (`flag` and `value` say it).
    """
    if t.value is None or SPEC_FIELDS[t.setting] == "spec.engine.extraArgs":
        return None
    value = int(spec_words(t))
    low, high = PERCENT_RANGE
    if t.setting is Setting.GPU_MEMORY_UTILIZATION and not low <= value <= high:
        return None
    return value


def _advice(advice: FitAdvice | None, req: PlanRequest) -> dict[str, Any] | None:
    """What would fit, as data (module docstring: `advice`)."""
    if advice is None:
        return None
    over_budget = advice.layout is not None and budget_need(req, advice.layout) is not None
    return {
        "settings": [_term(t) for t in advice.settings],
        "cpu_offload_gib": advice.offload_gib,
        "max_num_batched_tokens": advice.max_num_batched_tokens,
        "layout": None if advice.layout is None else _layout(advice.layout),
        "layout_advised": advice.layout_advised,
        "more_gpus": advice.more_gpus,
        "layout_settings": [_term(t) for t in advice.layout_settings],
        "budget_gpus": advice.layout.gpus if advice.layout is not None and over_budget else None,
    }


def _finding(f: Finding) -> dict[str, Any]:
    """`{code, message, terms}`: the message in the CLI's words and its terms as data."""
    return {**f.as_dict(), "terms": [_term(t) for t in f.terms]}


def _candidate(e: Evaluation) -> dict[str, Any]:
    return {
        "gpu": e.gpu.name,
        "layout": _layout(e.layout),
        "kv_tokens_per_replica": e.kv_tokens_per_replica,
        "max_concurrency": e.max_concurrency,
        "max_model_len": e.max_model_len,
        "estimated_tokens_per_second": e.tokens_per_second,
    }


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The JSON-ready plan (module docstring lists the guaranteed keys)."""
    c = plan.chosen
    mem = c.memory
    w = mem.weights
    geo = plan.geometry
    return {
        "model": plan.model.name,
        "weights_format": plan.weights_format,
        "weights_format_in_gpu": plan.weights_format_in_gpu,
        "kv_cache_dtype": plan.request.kv_cache_dtype,
        "indexer_cache_dtype": plan.request.indexer_cache_dtype,
        "fits": plan.fits,
        "gpu": {
            "type": c.gpu.name,
            "memory_bytes": c.gpu.memory_bytes,
            "cuda_total_bytes": c.gpu.cuda_total_bytes,
            "node_label": {c.gpu.label_key: c.gpu.label},
            "resource": c.gpu.resource,
        },
        "layout": _layout(c.layout),
        "memory_per_gpu": {
            "budget_bytes": mem.budget_bytes,
            "gpu_memory_utilization": mem.gpu_memory_utilization,
            "weights_bytes": w.total_bytes,
            "weights_expert_bytes": w.expert_bytes,
            "weights_sharded_bytes": w.sharded_bytes,
            "weights_replicated_bytes": w.replicated_bytes,
            "weights_eplb_buffer_bytes": w.eplb_buffer_bytes,
            "weights_offload_buffer_bytes": w.offload_buffer_bytes,
            "activation_bytes": mem.activation_bytes,
            "cuda_graph_bytes": mem.cuda_graph_bytes,
            "overhead_bytes": mem.overhead_bytes,
            "unprofiled_sampler_bytes": mem.unprofiled_bytes,
            "kv_cache_bytes": max(mem.kv_cache_bytes, 0),
            "shortfall_bytes": shortfall_bytes(c),
        },
        "kv_cache": {
            "bytes_per_token": geo.bytes_per_token,
            "raw_bytes_per_token": geo.raw_bytes_per_token,
            "block_bytes": geo.block_bytes,
            "request_bytes": c.request_bytes,
            "tokens_per_replica": c.kv_tokens_per_replica,
            "max_concurrency": c.max_concurrency,
        },
        "max_model_len": c.max_model_len,
        "max_num_seqs": c.max_num_seqs,
        "max_num_batched_tokens": c.max_num_batched_tokens,
        "shm_size_bytes": plan.shm.size_bytes,
        "kv_offload_bytes": plan.shm.kv_offload_bytes,
        "weight_offload_host_bytes": plan.weight_offload_host_bytes,
        "checkpoint_bytes": plan.checkpoint_bytes,
        "startup_budget_seconds": plan.startup_budget_seconds,
        "weights_download": plan.request.weights_download,
        "throughput": {
            "estimated_tokens_per_second": c.tokens_per_second,
            "replicas_for_target": c.replicas_for_target,
        },
        "engine": {"name": plan.request.engine.name, "version": plan.request.engine.version},
        "engine_args": engine_args(plan),
        "warnings": [_finding(f) for f in plan.warnings],
        "reasons": list(plan.reasons),
        "advice": _advice(plan.advice, plan.request),
        "runners_up": [_candidate(e) for e in plan.runners_up],
        "rejected": [
            {
                "gpu": r.gpu,
                "layout": _layout(r.layout),
                "reasons": [_finding(f) for f in r.reasons],
            }
            for r in plan.rejected
        ],
    }
