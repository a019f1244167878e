"""DeepSeek-V4 model catalog: every architecture constant, with its source, and the tensor groups.

Sources (labels as in `shared/docs/deepseek-v4-facts.md` §8): C1 = V4-Pro `config.json`, C2 =
V4-Flash
config (NeMo AutoModel `DeepseekV4Config` and validators), S1 = vLLM
`vllm/model_executor/models/deepseek_v4.py`, S4 = vLLM `deepseek_compressor.py`, X1 = Flash
checkpoint
tensor listing, M1 = model card.

Parameter counts are derived from tensor shapes, not copied: `ModelSpec.parameter_groups()` lists
every
tensor family with its element count, and the weight and sharding arithmetic of the planner is built
on
those groups. `tests/operator/planning/test_models.py` checks the totals against the model card.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "FLASH",
    "MODELS",
    "PRO",
    "LayerKind",
    "ModelSpec",
    "ParamGroup",
    "Placement",
    "Storage",
    "get_model",
]


class LayerKind(Enum):
    """Attention type of one layer, from `compress_ratios` (0 = window only, 4 = CSA, 128 = HCA)."""

    SWA = 0
    CSA = 4
    HCA = 128


class Storage(Enum):
    """How a tensor family is stored in the official checkpoint (facts §4)."""

    EXPERT = "expert"  # routed experts: MXFP4 in the official checkpoint
    LINEAR = "linear"  # block-FP8 (e4m3, UE8M0 128x128 scales) linears
    BF16 = "bf16"  # embeddings, LM head, router, compressor and indexer projections, norms
    FP32 = "fp32"  # mHC parameters, compressor positional bias, attention sinks, router bias
    INT64 = "int64"  # hash-routing table tid2eid


class Placement(Enum):
    """How a tensor family is laid out across ranks (vLLM, facts §4 "Per-GPU weights")."""

    EXPERT = "expert"  # divided by EP (or split by TP inside each expert when EP is off)
    SHARDED = "sharded"  # split by TP (column/row parallel, vocab parallel)
    REPLICATED = "replicated"  # a full copy on every rank


@dataclass(frozen=True, slots=True)
class ParamGroup:
    """One family of tensors: its name, element count, storage format and placement.

    Attributes:
        name: stable identifier, e.g. `attn.wq_b`.
        elements: number of parameters (elements) across all layers.
        storage: checkpoint storage class.
        placement: how the family is laid out across tensor/expert-parallel ranks.
        mtp: True when the family belongs to the MTP (next-token prediction) layer only.
    """

    name: str
    elements: int
    storage: Storage
    placement: Placement
    mtp: bool = False


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Architecture constants of one DeepSeek-V4 variant (all from C1/C2 unless noted).

    Attributes:
        name: `flash` or `pro`.
        hf_repo: Hugging Face repository of the official checkpoint.
        num_layers: `num_hidden_layers` (MTP layer not included).
        hidden_size: `hidden_size` H.
        num_heads: query heads (`num_attention_heads`); one shared KV head.
        head_dim: 512 for q, k and v; K and V are the same vector (S1).
        rope_dim: RoPE part of the head (last 64 dims); NoPE part is head_dim - rope_dim.
        q_lora_rank: rank of the query down-projection `wq_a`.
        o_groups: groups of the grouped low-rank output projection `wo_a`.
        o_lora_rank: rank per output group.
        vocab_size: vocabulary size (embedding and LM head rows).
        max_position_embeddings: longest context, tokens (1,048,576).
        n_routed_experts: routed experts per MoE layer.
        n_shared_experts: shared experts per layer (1).
        experts_per_token: routed experts chosen per token (`num_experts_per_tok`, 6).
        moe_intermediate_size: intermediate size of routed and shared experts.
        num_hash_layers: first layers routed by the token-id table `tid2eid[vocab, 6]`.
        routed_scaling_factor: gate scale (1.5 Flash, 2.5 Pro).
        index_n_heads: lightning-indexer heads (64).
        index_head_dim: lightning-indexer head size (128).
        index_topk: compressed entries selected per query in CSA layers (512 Flash, 1024 Pro).
        sliding_window: raw tokens kept uncompressed in every layer (128).
        hc_mult: mHC residual streams (4).
        hc_sinkhorn_iters: Sinkhorn-Knopp iterations of mHC (20).
        num_mtp_layers: `num_nextn_predict_layers` (1).
        compress_ratios: one ratio per layer, MTP excluded (0, 4 or 128).
        card_total_params: total parameters stated by the model card (M1).
        card_active_params: activated parameters per token stated by the model card (M1).
    """

    name: str
    hf_repo: str
    num_layers: int
    hidden_size: int
    num_heads: int
    head_dim: int
    rope_dim: int
    q_lora_rank: int
    o_groups: int
    o_lora_rank: int
    vocab_size: int
    max_position_embeddings: int
    n_routed_experts: int
    n_shared_experts: int
    experts_per_token: int
    moe_intermediate_size: int
    num_hash_layers: int
    routed_scaling_factor: float
    index_n_heads: int
    index_head_dim: int
    index_topk: int
    sliding_window: int
    hc_mult: int
    hc_sinkhorn_iters: int
    num_mtp_layers: int
    compress_ratios: tuple[int, ...]
    card_total_params: int
    card_active_params: int

    def __post_init__(self) -> None:
        """Check that the per-layer list matches the layer count.

        Raises:
            ValueError: if `compress_ratios` does not have one entry per layer.
        """
        if len(self.compress_ratios) != self.num_layers:
            msg = f"{self.name}: {len(self.compress_ratios)} compress ratios for {self.num_layers}"
            raise ValueError(msg)

    @property
    def layer_kinds(self) -> tuple[LayerKind, ...]:
        """Attention type of each layer (MTP excluded)."""
        return tuple(LayerKind(r) for r in self.compress_ratios)

    def count(self, kind: LayerKind) -> int:
        """Number of layers (MTP excluded) of one attention type."""
        return sum(1 for k in self.layer_kinds if k is kind)

    @property
    def num_layers_with_mtp(self) -> int:
        """Layers that hold a full transformer block: the main layers plus the MTP layers."""
        return self.num_layers + self.num_mtp_layers

    @property
    def expert_elements_per_layer(self) -> int:
        """Elements of all routed experts of one layer: E x 3 x H x I (w1, w2, w3)."""
        return self.n_routed_experts * 3 * self.hidden_size * self.moe_intermediate_size

    def parameter_groups(self) -> tuple[ParamGroup, ...]:
        """Every tensor family with its element count, storage and placement.

        The MTP layer is a full block (attention + MoE) with window-only attention (vLLM gives it
        compress ratio 1, S1), plus `e_proj`/`h_proj` (H x H each) and its norms; it shares the
        embedding and LM head with the main model. Shapes follow facts §7.1 and the Flash checkpoint
        listing (X1); norms and small fp32 tensors are counted too.

        Returns:
            The groups, main-model groups first, then `mtp=True` groups.
        """
        return self._groups(mtp=False) + self._groups(mtp=True)

    def layer_groups(self, layer: int) -> tuple[ParamGroup, ...]:
        """The tensor families of one main-model decoder layer, with that layer's elements.

        The same formulas as `parameter_groups` for one layer of kind `layer_kinds[layer]`, a
        hash layer when `layer < num_hash_layers`; the model-level tensors (embedding, LM head,
        `hc_head`, final norm) are in no layer. Summed over every layer, each family's elements
        equal its `parameter_groups` entry (tests/operator/planning/test_offload.py). vLLM's
        weight offloaders move decoder layers (`make_layers` hands them to `wrap_modules`,
        vllm/model_executor/offloader/base.py), so they are counted per layer from these.

        Args:
            layer: main-model layer index, 0 to `num_layers - 1`.

        Raises:
            ValueError: an index outside the main model's layers.
        """
        if not 0 <= layer < self.num_layers:
            msg = f"{self.name}: layer {layer} is not in 0..{self.num_layers - 1}"
            raise ValueError(msg)
        kind = self.layer_kinds[layer]
        return self._layer_families(
            n=1,
            n_csa=int(kind is LayerKind.CSA),
            n_hca=int(kind is LayerKind.HCA),
            n_hash=int(layer < self.num_hash_layers),
            mtp=False,
        )

    def _groups(self, *, mtp: bool) -> tuple[ParamGroup, ...]:
        groups = self._layer_families(
            n=self.num_mtp_layers if mtp else self.num_layers,
            n_csa=0 if mtp else self.count(LayerKind.CSA),
            n_hca=0 if mtp else self.count(LayerKind.HCA),
            n_hash=0 if mtp else self.num_hash_layers,
            mtp=mtp,
        )
        h = self.hidden_size
        hc_width = self.hc_mult * h
        p = "mtp." if mtp else ""

        def g(name: str, elements: int, storage: Storage, placement: Placement) -> ParamGroup:
            return ParamGroup(p + name, elements, storage, placement, mtp)

        rep, shard = Placement.REPLICATED, Placement.SHARDED
        if mtp:
            n = self.num_mtp_layers
            extra = [
                g("e_proj_h_proj", n * 2 * h * h, Storage.LINEAR, rep),
                g("mtp_norms", n * 3 * h, Storage.BF16, rep),
                # Each MTP layer has its own hc_head_fn [hc_mult, hc_mult x H], hc_head_base
                # [hc_mult] and hc_head_scale [1], fp32 (vLLM deepseek_v4_mtp.py
                # `DeepSeekV4MultiTokenPredictorLayer.__init__` @023da1fc; checkpoint name
                # `mtp.0.hc_head_fn`).
                g("hc_head", n * (self.hc_mult * hc_width + self.hc_mult + 1), Storage.FP32, rep),
            ]
        else:
            extra = [
                g("embed", self.vocab_size * h, Storage.BF16, shard),
                g("head", self.vocab_size * h, Storage.BF16, shard),
                g("hc_head", self.hc_mult * hc_width + self.hc_mult + 1, Storage.FP32, rep),
                g("norm", h, Storage.BF16, rep),
            ]
        return groups + tuple(x for x in extra if x.elements > 0)

    def _layer_families(
        self, *, n: int, n_csa: int, n_hca: int, n_hash: int, mtp: bool
    ) -> tuple[ParamGroup, ...]:
        """The per-layer families over `n` layers, `n_csa` CSA, `n_hca` HCA, `n_hash` hashed."""
        h, e, i = self.hidden_size, self.n_routed_experts, self.moe_intermediate_size
        q_dim = self.num_heads * self.head_dim
        o_dim = self.o_groups * self.o_lora_rank
        idx_dim = self.index_n_heads * self.index_head_dim
        hc_rows = (2 + self.hc_mult) * self.hc_mult  # 24 for hc_mult 4 (S1)
        hc_width = self.hc_mult * h
        p = "mtp." if mtp else ""

        def g(name: str, elements: int, storage: Storage, placement: Placement) -> ParamGroup:
            return ParamGroup(p + name, elements, storage, placement, mtp)

        rep, shard, exp = Placement.REPLICATED, Placement.SHARDED, Placement.EXPERT
        groups = [
            g("ffn.experts", n * self.expert_elements_per_layer, Storage.EXPERT, exp),
            g("ffn.shared_experts", n * self.n_shared_experts * 3 * h * i, Storage.LINEAR, shard),
            # vLLM replicates wq_a and wkv (small down-projections) and shards the rest (facts §4).
            g("attn.wq_a", n * h * self.q_lora_rank, Storage.LINEAR, rep),
            g("attn.wkv", n * h * self.head_dim, Storage.LINEAR, rep),
            g("attn.wq_b", n * self.q_lora_rank * q_dim, Storage.LINEAR, shard),
            g("attn.wo_a", n * (q_dim // self.o_groups) * o_dim, Storage.LINEAR, shard),
            g("attn.wo_b", n * o_dim * h, Storage.LINEAR, shard),
            g("attn.indexer.wq_b", n_csa * self.q_lora_rank * idx_dim, Storage.LINEAR, rep),
            g("attn.indexer.weights_proj", n_csa * h * self.index_n_heads, Storage.BF16, rep),
            # Compressor wkv + wgate: ratio 4 overlaps (coff 2) so each emits 2 x 512 (S4).
            g("attn.compressor.csa", n_csa * 2 * h * 2 * self.head_dim, Storage.BF16, rep),
            g("attn.compressor.hca", n_hca * 2 * h * self.head_dim, Storage.BF16, rep),
            g(
                "attn.indexer.compressor",
                n_csa * 2 * h * 2 * self.index_head_dim,
                Storage.BF16,
                rep,
            ),
            # RMSNorm of each main compressor's pooled entry, [head_dim] (S4 @0de10a27:
            # `DeepseekCompressor.__init__` builds `self.norm = RMSNorm(self.head_dim)`; checkpoint
            # name `layers.N.attn.compressor.norm.weight`). The indexer compressor's [128] norm is
            # in `norms` below.
            g("attn.compressor.norm", (n_csa + n_hca) * self.head_dim, Storage.BF16, rep),
            # Positional bias (ape) of the compressors: [ratio, coff x dim] fp32 (S4).
            g(
                "attn.compressor.ape",
                n_csa * 4 * 2 * (self.head_dim + self.index_head_dim) + n_hca * 128 * self.head_dim,
                Storage.FP32,
                rep,
            ),
            g("attn.sink", n * self.num_heads, Storage.FP32, rep),
            g("ffn.gate.weight", n * e * h, Storage.BF16, rep),
            g("ffn.gate.bias", (n - n_hash) * e, Storage.FP32, rep),
            g(
                "ffn.gate.tid2eid",
                n_hash * self.vocab_size * self.experts_per_token,
                Storage.INT64,
                rep,
            ),
            # mHC: hc_fn [24, 4H] + base [24] + scale [3] per sublayer (attn, ffn) (S1).
            g("hc", n * 2 * (hc_rows * hc_width + hc_rows + 3), Storage.FP32, rep),
            # RMSNorm weights: attn_norm, ffn_norm (H), q_norm (q_lora), kv_norm (512), and in CSA
            # layers the indexer compressor's norm (index_head_dim, S4).
            g(
                "norms",
                n * (2 * h + self.q_lora_rank + self.head_dim) + n_csa * self.index_head_dim,
                Storage.BF16,
                rep,
            ),
        ]
        return tuple(x for x in groups if x.elements > 0)

    def total_params(self, *, include_mtp: bool) -> int:
        """Total parameters (elements), with or without the MTP layer."""
        return sum(g.elements for g in self.parameter_groups() if include_mtp or not g.mtp)

    def active_params(self) -> int:
        """Parameters used per token, MTP excluded, DeepSeek's convention.

        Every non-expert parameter except the embedding lookup table, plus `experts_per_token` of
        the routed experts in each layer. DeepSeek-V3's 36.7B "activated" figure follows the same
        convention (embedding excluded, LM head included).
        """
        main = [g for g in self.parameter_groups() if not g.mtp]
        dense = sum(g.elements for g in main if g.name not in {"ffn.experts", "embed"})
        routed = self.num_layers * self.experts_per_token * 3 * self.hidden_size
        return dense + routed * self.moe_intermediate_size


FLASH = ModelSpec(
    name="flash",
    hf_repo="deepseek-ai/DeepSeek-V4-Flash",
    num_layers=43,
    hidden_size=4096,
    num_heads=64,
    head_dim=512,
    rope_dim=64,
    q_lora_rank=1024,
    o_groups=8,
    o_lora_rank=1024,
    vocab_size=129280,
    max_position_embeddings=1_048_576,
    n_routed_experts=256,
    n_shared_experts=1,
    experts_per_token=6,
    moe_intermediate_size=2048,
    num_hash_layers=3,
    routed_scaling_factor=1.5,
    index_n_heads=64,
    index_head_dim=128,
    index_topk=512,
    sliding_window=128,
    hc_mult=4,
    hc_sinkhorn_iters=20,
    num_mtp_layers=1,
    # [0, 0] + [4, 128] * 20 + [4] (X2, M1): 2 SWA, 21 CSA, 20 HCA.
    compress_ratios=(0, 0, *(4, 128) * 20, 4),
    card_total_params=284_000_000_000,
    card_active_params=13_000_000_000,
)

PRO = ModelSpec(
    name="pro",
    hf_repo="deepseek-ai/DeepSeek-V4-Pro",
    num_layers=61,
    hidden_size=7168,
    num_heads=128,
    head_dim=512,
    rope_dim=64,
    q_lora_rank=1536,
    o_groups=16,
    o_lora_rank=1024,
    vocab_size=129280,
    max_position_embeddings=1_048_576,
    n_routed_experts=384,
    n_shared_experts=1,
    experts_per_token=6,
    moe_intermediate_size=3072,
    num_hash_layers=3,
    routed_scaling_factor=2.5,
    index_n_heads=64,
    index_head_dim=128,
    index_topk=1024,
    sliding_window=128,
    hc_mult=4,
    hc_sinkhorn_iters=20,
    num_mtp_layers=1,
    # [128, 128] + [4, 128] * 29 + [4] (C1): 30 CSA, 31 HCA.
    compress_ratios=(128, 128, *(4, 128) * 29, 4),
    card_total_params=1_600_000_000_000,
    card_active_params=49_000_000_000,
)

MODELS: dict[str, ModelSpec] = {m.name: m for m in (FLASH, PRO)}


def get_model(name: str) -> ModelSpec:
    """Return the catalog entry for `flash` or `pro` (case-insensitive).

    Raises:
        KeyError: for any other name; the message lists the known models.
    """
    try:
        return MODELS[name.lower()]
    except KeyError:
        msg = f"unknown model {name!r}: expected one of {', '.join(MODELS)}"
        raise KeyError(msg) from None
