"""Stable codes for everything the planner reports, and its error type.

Codes are part of the `dsv4 plan --output json` contract (`warnings[].code`, `rejected[].reasons[]`)
and of the operator's condition reasons: they are only ever added, never renamed.

A finding that names a request setting (advice such as "use a gpu-memory-utilization of at most
0.98") holds it as a `Term`, and each front end words it: `Finding.message` in the CLI's terms
(vLLM's flag names, `cli_words`), the operator in spec fields (`planning.from_spec.spec_words`),
so a `DeepSeekV4Deployment`'s status and Events say `spec.gpuMemoryUtilizationPercent` and 98.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from string import Formatter
from typing import Literal

__all__ = [
    "CLI_FLAGS",
    "Code",
    "Finding",
    "PlanningError",
    "Setting",
    "Term",
    "Wording",
    "cli_words",
]


class Code(StrEnum):
    """Stable finding codes."""

    WEIGHTS_EXCEED_BUDGET = "WEIGHTS_EXCEED_BUDGET"
    MAX_MODEL_LEN_EXCEEDS_KV_POOL = "MAX_MODEL_LEN_EXCEEDS_KV_POOL"
    CONCURRENCY_EXCEEDS_KV_POOL = "CONCURRENCY_EXCEEDS_KV_POOL"
    CONCURRENCY_EXCEEDS_MAX_NUM_SEQS = "CONCURRENCY_EXCEEDS_MAX_NUM_SEQS"
    MAX_NUM_SEQS_EXCEEDS_BATCHED_TOKENS = "MAX_NUM_SEQS_EXCEEDS_BATCHED_TOKENS"
    TOKENS_TARGET_EXCEEDS_REPLICAS = "TOKENS_TARGET_EXCEEDS_REPLICAS"
    CONTEXT_TOO_SHORT = "CONTEXT_TOO_SHORT"
    NO_FEASIBLE_LAYOUT = "NO_FEASIBLE_LAYOUT"
    PIPELINE_PARALLEL_UNSUPPORTED = "PIPELINE_PARALLEL_UNSUPPORTED"
    TP_EXCEEDS_NODE = "TP_EXCEEDS_NODE"
    TP_NOT_DIVIDING_HEADS = "TP_NOT_DIVIDING_HEADS"
    TP_NOT_DIVIDING_OUTPUT_GROUPS = "TP_NOT_DIVIDING_OUTPUT_GROUPS"
    TP_SPLITS_QUANT_BLOCK = "TP_SPLITS_QUANT_BLOCK"
    TP_SPANS_NODES = "TP_SPANS_NODES"
    EXPERT_SPLIT_UNEVEN = "EXPERT_SPLIT_UNEVEN"
    EP_NOT_DIVIDING_EXPERTS = "EP_NOT_DIVIDING_EXPERTS"
    GPU_BUDGET_EXCEEDED = "GPU_BUDGET_EXCEEDED"
    PINNED_LAYOUT_MISMATCH = "PINNED_LAYOUT_MISMATCH"
    MTP_LONG_CONTEXT_HANG = "MTP_LONG_CONTEXT_HANG"
    ENGINE_TOO_OLD = "ENGINE_TOO_OLD"
    TRANSFORMERS_TOO_OLD = "TRANSFORMERS_TOO_OLD"
    FIRST_BOOT_WARMUP = "FIRST_BOOT_WARMUP"
    WEIGHTS_REPACKED = "WEIGHTS_REPACKED"
    FP8_WEIGHT_ONLY = "FP8_WEIGHT_ONLY"
    FP4_WEIGHT_ONLY = "FP4_WEIGHT_ONLY"
    GPUS_PER_NODE_ABOVE_TYPE = "GPUS_PER_NODE_ABOVE_TYPE"
    SHM_LONG_CONTEXT = "SHM_LONG_CONTEXT"
    CPU_OFFLOAD = "CPU_OFFLOAD"
    PREFETCH_OFFLOAD = "PREFETCH_OFFLOAD"
    INVALID_REQUEST = "INVALID_REQUEST"
    STARTUP_MEMORY_RESERVE = "STARTUP_MEMORY_RESERVE"
    EXPERT_SPLIT_PADDED = "EXPERT_SPLIT_PADDED"
    SPECULATIVE_STEP_EXCEEDS_BATCHED_TOKENS = "SPECULATIVE_STEP_EXCEEDS_BATCHED_TOKENS"
    CUDAGRAPH_CAP_WITH_SPECULATION = "CUDAGRAPH_CAP_WITH_SPECULATION"
    CUDA_GRAPHS_OFF = "CUDA_GRAPHS_OFF"
    SAMPLER_PEAK_OUTSIDE_BUDGET = "SAMPLER_PEAK_OUTSIDE_BUDGET"
    NVLS_NOT_COUNTED = "NVLS_NOT_COUNTED"
    KV_OFFLOAD = "KV_OFFLOAD"
    HOST_KV_NOT_COUNTED = "HOST_KV_NOT_COUNTED"
    BATCH_LOWERED_FOR_CONTEXT = "BATCH_LOWERED_FOR_CONTEXT"
    BATCH_FITS_FEWER_GPUS = "BATCH_FITS_FEWER_GPUS"
    ASYNC_SCHEDULING_REFUSED = "ASYNC_SCHEDULING_REFUSED"


class Setting(StrEnum):
    """Request settings a finding can name; the values are `PlanRequest` field names."""

    GPU_MEMORY_UTILIZATION = "gpu_memory_utilization"
    MAX_MODEL_LEN = "max_model_len"
    MAX_NUM_BATCHED_TOKENS = "max_num_batched_tokens"
    MAX_NUM_SEQS = "max_num_seqs"
    CONCURRENCY = "concurrency"
    SPECULATIVE_TOKENS = "speculative_tokens"
    GPUS_PER_NODE = "gpus_per_node"
    KV_OFFLOADING_GIB = "kv_offloading_gib"
    TOKENS_PER_SECOND = "tokens_per_second"


Bound = Literal["exact", "most", "least"]
"""How a value is rounded to a coarser unit (the spec's whole percent of utilization): `most` is
an upper limit (rounded down), `least` a lower one (rounded up), `exact` the value as it is."""


@dataclass(frozen=True, slots=True)
class Term:
    """A request setting named in a finding's sentence: its name, or one value of it.

    Attributes:
        setting: which setting.
        value: None for the setting's name; else a value in the request's unit (utilization a
            fraction of 1, lengths and counts in tokens or sequences).
        bound: how a front end with a coarser unit rounds `value` (`Bound`).
    """

    setting: Setting
    value: int | float | None = None
    bound: Bound = "exact"


Wording = Callable[[Term], str]
"""A front end's words for a `Term`: a setting's name, or a value as that front end writes it."""

_CLI_NAMES: dict[Setting, str] = {
    Setting.GPU_MEMORY_UTILIZATION: "gpu-memory-utilization",
    Setting.MAX_MODEL_LEN: "max-model-len",
    Setting.MAX_NUM_BATCHED_TOKENS: "max-num-batched-tokens",
    Setting.MAX_NUM_SEQS: "max-num-seqs",
    Setting.CONCURRENCY: "concurrency",
    Setting.SPECULATIVE_TOKENS: "speculation",
    Setting.GPUS_PER_NODE: "spec.gpu.gpusPerNode / --gpus-per-node",
    Setting.KV_OFFLOADING_GIB: "kv-offloading-size",
    Setting.TOKENS_PER_SECOND: "tokens-per-second",
}
"""vLLM's names (`vllm serve --gpu-memory-utilization`...), as `dsv4 plan` prints them; the node
size, which vLLM does not take, as the two places `dsv4 plan` reads it from (FILE, option)."""


CLI_FLAGS: dict[Setting, str] = {
    Setting.GPU_MEMORY_UTILIZATION: "--gpu-memory-utilization",
    Setting.MAX_MODEL_LEN: "--max-model-len",
    Setting.MAX_NUM_BATCHED_TOKENS: "--max-num-batched-tokens",
    Setting.MAX_NUM_SEQS: "--max-num-seqs",
    Setting.CONCURRENCY: "--concurrency",
    Setting.SPECULATIVE_TOKENS: "--speculative-tokens",
    Setting.GPUS_PER_NODE: "--gpus-per-node",
    Setting.KV_OFFLOADING_GIB: "--kv-offloading-size",
    Setting.TOKENS_PER_SECOND: "--tokens-per-second",
}
"""The `dsv4 plan` option that sets each setting (a term's `flag` in `--output json`); it takes
the term's `value` as it is."""


def cli_words(term: Term) -> str:
    """`term` as `dsv4 plan` and its JSON `message` say it: vLLM's names, values as given.

    Utilization as a fraction (`0.98`), token and sequence counts with thousands separators.
    """
    if term.value is None:
        return _CLI_NAMES[term.setting]
    if isinstance(term.value, float):
        return f"{term.value}"
    return f"{term.value:,}"


@dataclass(frozen=True, slots=True)
class Finding:
    """One coded observation: a rejection reason, a guard or a warning.

    Attributes:
        code: stable code.
        template: the sentence naming the numbers involved; with `terms`, a `str.format`
            template whose `{0}`, `{1}`... are the terms, each worded by the front end.
        terms: the request settings the sentence names (`Finding.said` builds both).
    """

    code: Code
    template: str
    terms: tuple[Term, ...] = ()

    @classmethod
    def said(cls, code: Code, *parts: str | Term) -> Finding:
        """A finding whose sentence is `parts` joined, each `Term` worded by the front end."""
        template: list[str] = []
        terms: list[Term] = []
        for part in parts:
            if isinstance(part, Term):
                template.append(f"{{{len(terms)}}}")
                terms.append(part)
            else:
                template.append(part.replace("{", "{{").replace("}", "}}"))
        if not terms:  # a plain sentence: `worded` returns it as it is, braces unescaped
            return cls(code, "".join(p for p in parts if isinstance(p, str)))
        return cls(code, "".join(template), tuple(terms))

    def parts(self) -> tuple[str | Term, ...]:
        """The sentence as `Finding.said` takes it: strings and `Term`s, in order.

        A longer finding quotes this one with its terms, so a front end words them there too.
        """
        if not self.terms:
            return (self.template,)
        out: list[str | Term] = []
        for text, index, _, _ in Formatter().parse(self.template):
            if text:
                out.append(text)
            if index is not None:
                out.append(self.terms[int(index)])
        return tuple(out)

    def worded(self, words: Wording) -> str:
        """The sentence with each term in `words` (`cli_words`, or the operator's spec fields)."""
        if not self.terms:
            return self.template
        return self.template.format(*(words(t) for t in self.terms))

    @property
    def message(self) -> str:
        """The sentence in the CLI's terms (`cli_words`)."""
        return self.worded(cli_words)

    def as_dict(self) -> dict[str, str]:
        """JSON form `{code, message}`."""
        return {"code": str(self.code), "message": self.message}


class PlanningError(ValueError):
    """A request the planner cannot evaluate (unknown model, GPU or format; a bad value).

    Attributes:
        field: the request field at fault (`gpu_types`, `max_model_len`...).
        detail: what is wrong with it (the message after `field: `), for a front end that
            names the field in its own terms (the operator: `from_spec.spec_path`).
        code: stable code (`INVALID_REQUEST`).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message
        self.code = Code.INVALID_REQUEST
