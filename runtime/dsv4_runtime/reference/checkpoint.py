"""Read and write checkpoints in DeepSeek-V4's official naming and formats (facts doc §1, §4).

A checkpoint directory holds `config.json`, `model.safetensors.index.json` (`weight_map`:
tensor name → shard file, `metadata.total_size`) and the shards. Tensor names are the model's
parameter names (`layers.0.attn.wq_a.weight`, `layers.3.ffn.experts.5.w1.weight`, ...). Formats:

- FP8 e4m3 + `<name>.scale` UE8M0 per 128 × 128 block: attention `wq_a`, `wq_b`, `wkv`, `wo_a`,
  `wo_b`, indexer `wq_b`, shared experts, MTP `e_proj`/`h_proj`.
- MXFP4 (int8, two e2m1 per byte) + `<name>.scale` UE8M0 per 32: routed experts `w1`/`w2`/`w3`.
- BF16: embedding, head, router gate, compressor `wkv`/`wgate`, indexer `weights_proj`, norms.
- FP32: mHC params, compressor `ape`, `attn_sink`, gate `bias`; I64: hash table `gate.tid2eid`.

Everything is dequantised on load into the model's dtype.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import ModelConfig
from .model import Transformer
from .quant import dequantize_fp8_block, dequantize_mxfp4, quantize_fp8_block, quantize_mxfp4

INDEX_FILE = "model.safetensors.index.json"
_FP8 = re.compile(
    r"(attn\.(wq_a|wq_b|wkv|wo_a|wo_b|indexer\.wq_b)|shared_experts\.w[123]|e_proj|h_proj)\.weight$"
)
_FP4 = re.compile(r"\.experts\.\d+\.w[123]\.weight$")
_FP32 = re.compile(r"(hc_\w+|\.ape|attn_sink|gate\.bias)$")
#: `quantization_config` of the official config.json (facts §1, C1/X1).
QUANTIZATION_CONFIG = {
    "quant_method": "fp8",
    "fmt": "e4m3",
    "scale_fmt": "ue8m0",
    "weight_block_size": [128, 128],
    "activation_scheme": "dynamic",
}


def official_format(name: str) -> str:
    """Storage format of a tensor: "fp8", "fp4", "fp32", "int64" or "bf16"."""
    if name.endswith("tid2eid"):
        return "int64"
    if _FP4.search(name):
        return "fp4"
    if _FP8.search(name):
        return "fp8"
    if _FP32.search(name):
        return "fp32"
    return "bf16"


def to_official(model: Transformer) -> dict[str, torch.Tensor]:
    """The model's tensors in the official names and formats (quantised where FP8/FP4)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu()
        fmt = official_format(name)
        if fmt == "fp8":
            out[name], out[name.removesuffix("weight") + "scale"] = quantize_fp8_block(t)
        elif fmt == "fp4":
            out[name], out[name.removesuffix("weight") + "scale"] = quantize_mxfp4(t)
        elif fmt == "fp32":
            out[name] = t.float().contiguous()
        elif fmt == "int64":
            out[name] = t.to(torch.int64).contiguous()
        else:
            out[name] = t.to(torch.bfloat16).contiguous()
    return out


def save_checkpoint(model: Transformer, directory: Path, num_shards: int = 2) -> None:
    """Write `config.json`, the index and `num_shards` safetensors shards into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = to_official(model)
    names = list(tensors)
    per = -(-len(names) // num_shards)
    weight_map: dict[str, str] = {}
    total = 0
    for i in range(num_shards):
        shard = f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[i * per : (i + 1) * per]}
        save_file(part, str(directory / shard), metadata={"format": "pt"})
        for n, t in part.items():
            weight_map[n] = shard
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2))
    config = model.config.to_dict()
    config["quantization_config"] = QUANTIZATION_CONFIG
    config["expert_dtype"] = "fp4"
    config["torch_dtype"] = "bfloat16"
    (directory / "config.json").write_text(json.dumps(config, indent=2))


def read_official(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory, raw (as stored), via its index file.

    Raises:
        FileNotFoundError: when the index or a shard is missing.
    """
    index = json.loads((directory / INDEX_FILE).read_text())
    tensors: dict[str, torch.Tensor] = {}
    by_file: dict[str, list[str]] = {}
    for name, shard in index["weight_map"].items():
        by_file.setdefault(shard, []).append(name)
    for shard, names in by_file.items():
        with safe_open(str(directory / shard), framework="pt") as f:
            for name in names:
                tensors[name] = f.get_tensor(name)
    return tensors


def load_checkpoint(
    directory: Path, device: torch.device | str = "cpu", dtype: str | None = None
) -> Transformer:
    """Build the model from `config.json` and load the dequantised weights.

    Args:
        directory: checkpoint directory (config.json, index, shards).
        device: where to put the model.
        dtype: compute dtype override ("float32" | "bfloat16"); default: the config's.

    Raises:
        FileNotFoundError: missing config, index or shard.
        KeyError: when tensors are missing from or unexpected in the checkpoint (names listed).
        ValueError: when a tensor's shape differs from the model's.
    """
    config = ModelConfig.from_json(directory / "config.json")
    if dtype is not None:
        config = ModelConfig.from_dict({**config.to_dict(), "dtype": dtype})
    model = Transformer(config)
    raw = read_official(directory)
    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for name, param in expected.items():
        if name not in raw:
            continue
        t = raw[name]
        scale = raw.get(name.removesuffix("weight") + "scale")
        if t.dtype == torch.float8_e4m3fn and scale is not None:
            t = dequantize_fp8_block(t, scale)
        elif t.dtype == torch.int8 and scale is not None:
            t = dequantize_mxfp4(t, scale)
        if t.shape != param.shape:
            msg = f"{name}: checkpoint shape {tuple(t.shape)} != model shape {tuple(param.shape)}"
            raise ValueError(msg)
        state[name] = t.to(param.dtype)
    missing = sorted(set(expected) - set(state))
    scales = {n for n in raw if n.endswith(".scale")}
    unexpected = sorted(set(raw) - set(expected) - scales)
    if missing or unexpected:
        msg = f"checkpoint mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}"
        raise KeyError(msg)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
