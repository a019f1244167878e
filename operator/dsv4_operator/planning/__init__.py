"""The memory planner and layout search for DeepSeek-V4 (pure: no I/O, clock, env or logging).

`plan(PlanRequest(...))` answers: which GPU type, how many GPUs and nodes, which TP/EP/DP layout,
how
much KV cache per GPU, and how much /dev/shm, with the runners-up and every rejected layout.
`plan_to_dict` is the stable JSON contract of `dsv4 plan --output json`.
"""

from dsv4_operator.planning.engine import VLLM_0_33, EngineProfile
from dsv4_operator.planning.findings import Code, Finding, PlanningError
from dsv4_operator.planning.hardware import GPUS, GpuType, get_gpu
from dsv4_operator.planning.kvcache import KvGeometry, growth_bytes_per_token, kv_geometry
from dsv4_operator.planning.memory import Layout, MemoryBreakdown
from dsv4_operator.planning.models import FLASH, MODELS, PRO, ModelSpec, get_model
from dsv4_operator.planning.output import engine_args, plan_to_dict
from dsv4_operator.planning.planner import (
    FitAdvice,
    Plan,
    Rejection,
    budget_need,
    fit_option,
    layout_settings_parts,
    offload_sizing,
    plan,
    settings_option,
)
from dsv4_operator.planning.request import PlanRequest
from dsv4_operator.planning.weights import checkpoint_bytes, per_gpu_weight_bytes

__all__ = [
    "FLASH",
    "GPUS",
    "MODELS",
    "PRO",
    "VLLM_0_33",
    "Code",
    "EngineProfile",
    "Finding",
    "FitAdvice",
    "GpuType",
    "KvGeometry",
    "Layout",
    "MemoryBreakdown",
    "ModelSpec",
    "Plan",
    "PlanRequest",
    "PlanningError",
    "Rejection",
    "budget_need",
    "checkpoint_bytes",
    "engine_args",
    "fit_option",
    "get_gpu",
    "get_model",
    "growth_bytes_per_token",
    "kv_geometry",
    "layout_settings_parts",
    "offload_sizing",
    "per_gpu_weight_bytes",
    "plan",
    "plan_to_dict",
    "settings_option",
]
