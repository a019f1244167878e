"""The stable JSON contract of `dsv4 plan --output json`."""

import json

from dsv4_operator.planning import PlanRequest, plan, plan_to_dict

CONTRACT = {
    "": {
        "model",
        "weights_format",
        "kv_cache_dtype",
        "fits",
        "gpu",
        "layout",
        "memory_per_gpu",
        "kv_cache",
        "max_model_len",
        "max_num_seqs",
        "shm_size_bytes",
        "engine_args",
        "warnings",
        "reasons",
    },
    "gpu": {"type", "memory_bytes"},
    "layout": {
        "nodes",
        "gpus_per_node",
        "gpus",
        "tensor_parallel",
        "data_parallel",
        "pipeline_parallel",
        "expert_parallel",
    },
    "memory_per_gpu": {
        "budget_bytes",
        "weights_bytes",
        "activation_bytes",
        "cuda_graph_bytes",
        "overhead_bytes",
        "kv_cache_bytes",
    },
    "kv_cache": {"bytes_per_token", "tokens_per_replica", "max_concurrency"},
}


def test_contract_keys_are_present_and_bytes_are_ints() -> None:
    data = plan_to_dict(plan(PlanRequest(model="pro", max_model_len=1_048_576, max_nodes=3)))
    for section, keys in CONTRACT.items():
        node = data if not section else data[section]
        assert keys <= set(node), (section, keys - set(node))
    for key, value in data["memory_per_gpu"].items():
        if key.endswith("_bytes"):
            assert isinstance(value, int)
    assert isinstance(data["shm_size_bytes"], int)
    # The contract only grows: `terms` was added (h18).
    assert all(set(w) == {"code", "message", "terms"} for w in data["warnings"])
    json.dumps(data)


def test_engine_args_carry_the_layout() -> None:
    data = plan_to_dict(plan(PlanRequest(model="pro", max_model_len=1_048_576, max_nodes=3)))
    args, lay = data["engine_args"], data["layout"]
    assert args["tensor_parallel_size"] == lay["tensor_parallel"]
    assert args["data_parallel_size"] == lay["data_parallel"]
    assert args["data_parallel_size_local"] * lay["tensor_parallel"] == lay["gpus_per_node"]
    assert args["enable_expert_parallel"] is (lay["expert_parallel"] > 1)
    assert args["block_size"] == 256
    assert args["max_model_len"] == data["max_model_len"]


def test_unfit_plan_keeps_the_shape() -> None:
    data = plan_to_dict(
        plan(PlanRequest(model="flash", gpu_types=("rtx-5090-32gb",), gpus_per_node=2, max_nodes=1))
    )
    assert data["fits"] is False
    assert data["memory_per_gpu"]["kv_cache_bytes"] == 0
    assert data["memory_per_gpu"]["shortfall_bytes"] > 0
    assert data["warnings"][0]["code"] == "NO_FEASIBLE_LAYOUT"


def test_the_budget_is_reproducible_from_the_json() -> None:
    """Planner audit: `budget_bytes` is utilization x CUDA's total, which the JSON did not
    carry (only nvidia-smi's total), so a reader could not reproduce the budget."""
    for gpu in ("h100-80gb", "h200-141gb", "mi300x-192gb"):
        data = plan_to_dict(plan(PlanRequest(model="flash", gpu_types=(gpu,))))
        g, mem = data["gpu"], data["memory_per_gpu"]
        assert g["cuda_total_bytes"] < g["memory_bytes"] or gpu.startswith("mi")
        assert mem["budget_bytes"] == int(g["cuda_total_bytes"] * mem["gpu_memory_utilization"])
