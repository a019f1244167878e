"""A tiny checkpoint in the official names and formats is written, read back and served."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from dsv4_runtime.reference.checkpoint import INDEX_FILE, load_checkpoint, save_checkpoint
from dsv4_runtime.reference.config import TINY
from dsv4_runtime.reference.engine import Engine, SamplingParams
from dsv4_runtime.reference.kvcache import KVBlockPool
from dsv4_runtime.reference.model import Transformer

from .conftest import random_ids

OFFICIAL_NAMES = [
    "embed.weight",
    "head.weight",
    "norm.weight",
    "hc_head_fn",
    "hc_head_base",
    "hc_head_scale",
    "layers.0.attn.wq_a.weight",
    "layers.0.attn.wq_a.scale",
    "layers.0.attn.wkv.weight",
    "layers.0.attn.wq_b.weight",
    "layers.0.attn.wo_a.weight",
    "layers.0.attn.wo_b.weight",
    "layers.0.attn.attn_sink",
    "layers.0.attn_norm.weight",
    "layers.0.ffn_norm.weight",
    "layers.0.hc_attn_fn",
    "layers.0.hc_ffn_base",
    "layers.0.ffn.gate.weight",
    "layers.0.ffn.gate.tid2eid",
    "layers.0.ffn.experts.7.w1.weight",
    "layers.0.ffn.experts.7.w1.scale",
    "layers.0.ffn.shared_experts.w2.weight",
    "layers.0.ffn.shared_experts.w2.scale",
    "layers.1.attn.compressor.ape",
    "layers.1.attn.compressor.wkv.weight",
    "layers.1.attn.compressor.wgate.weight",
    "layers.1.attn.compressor.norm.weight",
    "layers.1.attn.indexer.wq_b.weight",
    "layers.1.attn.indexer.weights_proj.weight",
    "layers.1.attn.indexer.compressor.ape",
    "layers.2.attn.compressor.ape",
    "layers.3.ffn.gate.bias",
    "mtp.0.e_proj.weight",
    "mtp.0.h_proj.scale",
    "mtp.0.enorm.weight",
    "mtp.0.hc_head_fn",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_model: Transformer) -> Path:
    directory = tmp_path_factory.mktemp("tiny-ckpt")
    save_checkpoint(tiny_model, directory, num_shards=3)
    return directory


def _dtypes(directory: Path) -> dict[str, tuple[str, list[int]]]:
    index = json.loads((directory / INDEX_FILE).read_text())
    out: dict[str, tuple[str, list[int]]] = {}
    for name, shard in index["weight_map"].items():
        with safe_open(str(directory / shard), framework="pt") as f:
            t = f.get_tensor(name)
            out[name] = (str(t.dtype).removeprefix("torch."), list(t.shape))
    return out


def test_checkpoint_uses_official_names_and_formats(checkpoint: Path) -> None:
    index = json.loads((checkpoint / INDEX_FILE).read_text())
    shards = sorted(p.name for p in checkpoint.glob("*.safetensors"))
    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert set(index["weight_map"].values()) == set(shards)
    sizes = sum((checkpoint / s).stat().st_size for s in shards)
    assert 0 < index["metadata"]["total_size"] <= sizes
    dtypes = _dtypes(checkpoint)
    missing = [n for n in OFFICIAL_NAMES if n not in dtypes]
    assert not missing
    h, inter = TINY.hidden_size, TINY.moe_intermediate_size
    assert dtypes["layers.0.attn.wq_a.weight"] == ("float8_e4m3fn", [TINY.q_lora_rank, h])
    assert dtypes["layers.0.attn.wq_a.scale"] == ("float8_e8m0fnu", [1, 1])
    assert dtypes["layers.0.attn.wq_b.scale"] == ("float8_e8m0fnu", [16, 1])  # 2048 × 32
    assert dtypes["layers.0.ffn.experts.7.w1.weight"] == ("int8", [inter, h // 2])
    assert dtypes["layers.0.ffn.experts.7.w1.scale"] == ("float8_e8m0fnu", [inter, h // 32])
    assert dtypes["layers.0.ffn.experts.7.w2.weight"] == ("int8", [h, inter // 2])
    assert dtypes["layers.0.ffn.gate.weight"] == ("bfloat16", [TINY.n_routed_experts, h])
    assert dtypes["layers.0.ffn.gate.tid2eid"] == ("int64", [TINY.vocab_size, 2])
    assert "layers.0.ffn.gate.bias" not in dtypes  # hash layers have no score bias
    assert dtypes["layers.3.ffn.gate.bias"][0] == "float32"
    assert dtypes["layers.0.hc_attn_fn"] == ("float32", [24, 4 * h])
    assert dtypes["layers.1.attn.compressor.ape"] == ("float32", [4, 2 * TINY.head_dim])
    assert dtypes["layers.2.attn.compressor.ape"] == ("float32", [128, TINY.head_dim])
    assert dtypes["layers.1.attn.compressor.wkv.weight"][0] == "bfloat16"
    assert dtypes["embed.weight"][0] == "bfloat16"
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["compress_ratios"] == list(TINY.compress_ratios)
    assert config["quantization_config"]["scale_fmt"] == "ue8m0"
    assert config["quantization_config"]["weight_block_size"] == [128, 128]
    assert config["expert_dtype"] == "fp4"


def test_loaded_model_matches_within_quantisation_error(
    checkpoint: Path, tiny_model: Transformer
) -> None:
    loaded = load_checkpoint(checkpoint, dtype="float32")
    original = tiny_model.state_dict()
    for name, value in loaded.state_dict().items():
        ref = original[name]
        if name.endswith("tid2eid"):
            assert torch.equal(value, ref)
            continue
        amax = float(ref.abs().max()) or 1.0
        err = float((value.float() - ref.float()).abs().max())
        if ".experts." in name and "shared" not in name:
            bound = amax / 3  # e2m1: spacing ≤ 2 scale units, scale ≤ 2·amax/6
        elif any(k in name for k in ("wq_a", "wq_b", "wkv", "wo_a", "wo_b", "shared", "_proj.")):
            bound = amax / 14  # e4m3: half-spacing ≤ 16/448 of a power-of-two scale ≥ amax
        else:
            bound = amax * 2**-8  # bf16 (or exact fp32)
        assert err <= bound, (name, err, bound)


def test_loaded_checkpoint_decodes_deterministically(checkpoint: Path) -> None:
    prompts = [random_ids(40, seed=7), random_ids(150, seed=8)]
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    runs = []
    for _ in range(2):
        model = load_checkpoint(checkpoint, dtype="float32")
        engine = Engine(model, KVBlockPool(model.config, 4), max_num_seqs=2, max_model_len=256)
        runs.append(engine.generate(prompts, params))
    assert runs[0] == runs[1]
    assert all(len(r) == 8 for r in runs[0])


def test_load_reports_missing_tensors(checkpoint: Path, tmp_path: Path) -> None:
    for f in checkpoint.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    del index["weight_map"]["layers.0.attn.wkv.weight"]
    (tmp_path / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(KeyError, match=r"layers\.0\.attn\.wkv\.weight"):
        load_checkpoint(tmp_path)
