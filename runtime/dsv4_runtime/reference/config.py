"""Model configuration of the reference engine, with the official `config.json` field names.

Field names and Flash values come from the DeepSeek-V4 `config.json` (facts doc §1, sources
C1/C2); the `tiny` and `mid` presets keep every architectural rule (hash layers first,
`compress_ratios` with ratio 4 = CSA and 128 = HCA, the 128-token window, hc_mult 4, 20 Sinkhorn
iterations) and shrink only widths, depths and expert counts.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

#: Compress ratio of a CSA layer (overlapping windows, lightning indexer). Facts §2.
CSA_RATIO = 4
#: Compress ratio of an HCA layer (non-overlapping windows, no indexer). Facts §2.
HCA_RATIO = 128


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """DeepSeek-V4 hyper-parameters (official `config.json` names).

    `compress_ratios` has one entry per layer plus one per MTP layer (facts §1): 0 = sliding window
    only, 4 = CSA, 128 = HCA. Sizes are element counts; `dtype` is the compute/storage dtype of
    activations and the KV cache ("float32" or "bfloat16"). `kv_cache_dtype` (not in the official
    config): "fp8_ds_mla" rounds KV values as vLLM's FP8 cache stores them (see `kvquant.py`),
    "auto" keeps them in `dtype`.

    Raises:
        ValueError: from `validate` when a field breaks an architectural rule; the message names the
            field and the limit.
    """

    vocab_size: int = 129280
    hidden_size: int = 4096
    num_hidden_layers: int = 43
    num_attention_heads: int = 64
    head_dim: int = 512
    qk_rope_head_dim: int = 64
    q_lora_rank: int = 1024
    o_groups: int = 8
    o_lora_rank: int = 1024
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    num_experts_per_tok: int = 6
    moe_intermediate_size: int = 2048
    num_hash_layers: int = 3
    scoring_func: str = "sqrtsoftplus"
    routed_scaling_factor: float = 1.5
    swiglu_limit: float = 10.0
    num_nextn_predict_layers: int = 1
    sliding_window: int = 128
    compress_ratios: tuple[int, ...] = (0, 0, *(4, 128) * 20, 4, 0)
    index_n_heads: int = 64
    index_head_dim: int = 128
    index_topk: int = 512
    hc_mult: int = 4
    hc_sinkhorn_iters: int = 20
    hc_eps: float = 1e-6
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    compress_rope_theta: float = 160000.0
    rope_factor: float = 16.0
    original_max_position_embeddings: int = 65536
    beta_fast: int = 32
    beta_slow: int = 1
    max_position_embeddings: int = 1048576
    bos_token_id: int = 0
    eos_token_id: int = 1
    dtype: str = "bfloat16"
    kv_cache_dtype: str = "fp8_ds_mla"

    def validate(self) -> ModelConfig:
        """Check the architectural rules; return self.

        Raises:
            ValueError: naming the offending field and its limit.
        """
        n_ratios = self.num_hidden_layers + self.num_nextn_predict_layers
        if len(self.compress_ratios) != n_ratios:
            msg = (
                f"compress_ratios has {len(self.compress_ratios)} entries; it needs "
                f"num_hidden_layers + num_nextn_predict_layers = {n_ratios}"
            )
            raise ValueError(msg)
        bad = [r for r in self.compress_ratios if r not in (0, CSA_RATIO, HCA_RATIO)]
        if bad:
            msg = f"compress_ratios may hold only 0, 4 or 128, got {sorted(set(bad))}"
            raise ValueError(msg)
        if self.num_hash_layers > self.num_hidden_layers:
            msg = (
                f"num_hash_layers={self.num_hash_layers} exceeds "
                f"num_hidden_layers={self.num_hidden_layers}"
            )
            raise ValueError(msg)
        if self.qk_rope_head_dim % 2 or self.qk_rope_head_dim >= self.head_dim:
            msg = f"qk_rope_head_dim={self.qk_rope_head_dim} must be even and below head_dim"
            raise ValueError(msg)
        if (self.num_attention_heads * self.head_dim) % self.o_groups:
            msg = f"o_groups={self.o_groups} must divide num_attention_heads × head_dim"
            raise ValueError(msg)
        if self.num_experts_per_tok > self.n_routed_experts:
            msg = (
                f"num_experts_per_tok={self.num_experts_per_tok} exceeds "
                f"n_routed_experts={self.n_routed_experts}"
            )
            raise ValueError(msg)
        if self.n_shared_experts != 1:
            msg = f"n_shared_experts must be 1 (DeepSeek-V4), got {self.n_shared_experts}"
            raise ValueError(msg)
        if self.dtype not in ("float32", "bfloat16"):
            msg = f"dtype must be float32 or bfloat16, got {self.dtype!r}"
            raise ValueError(msg)
        if self.kv_cache_dtype not in ("fp8_ds_mla", "auto"):
            msg = f"kv_cache_dtype must be fp8_ds_mla or auto, got {self.kv_cache_dtype!r}"
            raise ValueError(msg)
        if self.kv_cache_dtype == "fp8_ds_mla" and (self.head_dim - self.qk_rope_head_dim) % 64:
            msg = "kv_cache_dtype fp8_ds_mla needs head_dim - qk_rope_head_dim divisible by 64"
            raise ValueError(msg)
        if self.scoring_func != "sqrtsoftplus":
            msg = f"scoring_func must be sqrtsoftplus (DeepSeek-V4), got {self.scoring_func!r}"
            raise ValueError(msg)
        return self

    @property
    def layer_ratios(self) -> tuple[int, ...]:
        """Compress ratio of each main layer (without the MTP entries)."""
        return self.compress_ratios[: self.num_hidden_layers]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build a config from an official `config.json` dictionary; unknown keys are ignored.

        `rope_scaling` (`factor`, `original_max_position_embeddings`, `beta_fast`, `beta_slow`)
        is flattened into the matching fields.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in names}
        rope = data.get("rope_scaling") or {}
        if "factor" in rope:
            kwargs["rope_factor"] = float(rope["factor"])
        for key in ("original_max_position_embeddings", "beta_fast", "beta_slow"):
            if key in rope:
                kwargs[key] = rope[key]
        if "compress_ratios" in kwargs:
            kwargs["compress_ratios"] = tuple(int(r) for r in kwargs["compress_ratios"])
        if data.get("torch_dtype") in ("float32", "bfloat16") and "dtype" not in data:
            kwargs["dtype"] = data["torch_dtype"]
        return cls(**kwargs).validate()

    def to_dict(self) -> dict[str, Any]:
        """Official-style `config.json` dictionary (inverse of `from_dict`)."""
        data = dataclasses.asdict(self)
        data["compress_ratios"] = list(self.compress_ratios)
        data["rope_scaling"] = {
            "type": "yarn",
            "factor": data.pop("rope_factor"),
            "original_max_position_embeddings": data.pop("original_max_position_embeddings"),
            "beta_fast": data.pop("beta_fast"),
            "beta_slow": data.pop("beta_slow"),
        }
        data["architectures"] = ["DeepseekV4ForCausalLM"]
        data["model_type"] = "deepseek_v4"
        return data

    @classmethod
    def from_json(cls, path: Path) -> ModelConfig:
        """Read a `config.json` file.

        Raises:
            OSError: when the file cannot be read.
            ValueError: when a field breaks a rule (see `validate`).
        """
        return cls.from_dict(json.loads(path.read_text()))


#: Byte-level tokenizer size used by `tiny` and `mid`: 256 bytes + BOS + EOS (see tokenizer.py).
BYTE_VOCAB_SIZE = 258

#: CPU test model: 5 layers covering SWA, CSA and HCA, 3 hash layers, 8 experts (top-2), float32;
#: attention keeps V4's per-head sizes (512 = 448 NoPE + 64 RoPE, indexer 128) so the kernels run.
TINY = ModelConfig(
    vocab_size=BYTE_VOCAB_SIZE,
    hidden_size=64,
    num_hidden_layers=5,
    num_attention_heads=4,
    head_dim=512,
    qk_rope_head_dim=64,
    q_lora_rank=32,
    o_groups=2,
    o_lora_rank=32,
    n_routed_experts=8,
    num_experts_per_tok=2,
    moe_intermediate_size=32,
    num_hash_layers=3,
    routed_scaling_factor=1.5,
    compress_ratios=(0, 4, 128, 4, 128, 0),
    index_n_heads=16,
    index_head_dim=128,
    index_topk=16,
    bos_token_id=256,
    eos_token_id=257,
    dtype="float32",
).validate()

#: One-H200 model for kernel measurements: Flash widths (hidden 4096, 64 heads × 512, indexer
#: 64 × 128, top-512) with 8 layers ([0, 0] + [4, 128] × 3 + MTP 0) and 32 experts (top-6), bf16.
MID = ModelConfig(
    vocab_size=BYTE_VOCAB_SIZE,
    hidden_size=4096,
    num_hidden_layers=8,
    num_attention_heads=64,
    head_dim=512,
    qk_rope_head_dim=64,
    q_lora_rank=1024,
    o_groups=8,
    o_lora_rank=1024,
    n_routed_experts=32,
    num_experts_per_tok=6,
    moe_intermediate_size=2048,
    num_hash_layers=3,
    compress_ratios=(0, 0, 4, 128, 4, 128, 4, 128, 0),
    index_n_heads=64,
    index_head_dim=128,
    index_topk=512,
    bos_token_id=256,
    eos_token_id=257,
    dtype="bfloat16",
).validate()

#: DeepSeek-V4-Flash as published (facts §1).
FLASH = ModelConfig().validate()

PRESETS: dict[str, ModelConfig] = {"tiny": TINY, "mid": MID, "flash": FLASH}


def preset(name: str) -> ModelConfig:
    """Return the named preset (`tiny`, `mid`, `flash`).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    try:
        return PRESETS[name]
    except KeyError:
        msg = f"unknown config {name!r}; known: {', '.join(sorted(PRESETS))}"
        raise ValueError(msg) from None
