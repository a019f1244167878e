"""Stable codes for everything the planner reports, and its error type.

Codes are part of the `dsv4 plan --output json` contract (`warnings[].code`, `rejected[].reasons[]`)
and of the operator's condition reasons: they are only ever added, never renamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Code", "Finding", "PlanningError"]


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
    INVALID_REQUEST = "INVALID_REQUEST"
    STARTUP_MEMORY_RESERVE = "STARTUP_MEMORY_RESERVE"
    EXPERT_SPLIT_PADDED = "EXPERT_SPLIT_PADDED"


@dataclass(frozen=True, slots=True)
class Finding:
    """One coded observation: a rejection reason, a guard or a warning.

    Attributes:
        code: stable code.
        message: sentence naming the numbers involved.
    """

    code: Code
    message: str

    def as_dict(self) -> dict[str, str]:
        """JSON form `{code, message}`."""
        return {"code": str(self.code), "message": self.message}


class PlanningError(ValueError):
    """A request the planner cannot evaluate (unknown model, GPU or format; a bad value).

    Attributes:
        field: the request field at fault (`gpu_types`, `max_model_len`...).
        code: stable code (`INVALID_REQUEST`).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.code = Code.INVALID_REQUEST
