"""Tensor and expert parallelism for the reference `Transformer`, applied in place to a full model.

`shard_model(model, groups)` keeps this rank's slice of every split weight and adds the
collectives; the forward code of `attention.py`, `moe.py` and `model.py` is unchanged. Layout
(Megatron-style, as vLLM and DeepSeek's reference `inference/model.py` split V4):

- **Attention, TP**: heads split by TP rank (contiguous). `wq_b` column-parallel (this rank's
  heads × head_dim rows), `attn_sink` sliced, `wo_a` keeps this rank's o_groups / tp groups (a
  group is heads·head_dim/o_groups of the attention output; tp must divide o_groups), `wo_b`
  row-parallel (columns of those groups), then an all-reduce (sum) over the TP group. The single
  KV head (`wkv`, `kv_norm`), the compressor, the lightning indexer and `wq_a`/`q_norm` stay
  replicated, so every TP rank keeps the whole compressed cache (as vLLM does for V4/MLA).
- **MoE, TP** (no EP): every routed expert and the shared expert split by intermediate size:
  `w1`/`w3` column-parallel, `w2` row-parallel, one all-reduce of the layer output. The gate is
  replicated (routing is computed identically on every rank).
- **MoE, TP + EP** (dp = 1): tokens are replicated, so each rank runs its range of routed experts
  on the tokens routed there plus its TP slice of the shared expert; one all-reduce combines.
- **MoE, EP** (DP attention, tp = 1): routed experts split in contiguous ranges of
  n_routed_experts / ep_size; each rank routes its own tokens, sends every (token, expert) pair
  to the expert's rank with an all-to-all (rows, expert ids, weights), runs its local experts and
  returns the outputs with a second all-to-all; the shared expert and the gate are replicated.
- **Embedding and head, TP**: vocabulary-parallel (rows padded to a multiple of tp); the
  embedding masks foreign ids and all-reduces, the head all-gathers the logits. Replicated under DP.

Numerics: an all-reduce sums partial products in a different order than one matmul, so logits
agree with the single-process model to float rounding, not bit for bit (the test states the
tolerance); the EP combine adds each token's expert outputs in the same order as `MoE.forward`.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from .attention import Attention
from .layers import Linear
from .model import Block, Transformer
from .moe import Expert, Gate, MoE
from .parallel import ParallelGroups


def _slice_linear(layer: Linear, *, rows: slice | None = None, cols: slice | None = None) -> Linear:
    """A new `Linear` holding weight[rows, cols] (copied, contiguous)."""
    w = layer.weight.data
    w = w[rows] if rows is not None else w
    w = w[:, cols] if cols is not None else w
    out = Linear(w.shape[1], w.shape[0], dtype=w.dtype)
    out.weight.data = w.contiguous().clone()
    return out


def _all_reduce_hook(group: dist.ProcessGroup) -> Any:
    """A forward hook that sums the module's output over `group` in place and returns it."""

    def hook(_module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(output, group=group)
        return output

    return hook


def _span(n: int, rank: int, size: int, what: str) -> slice:
    """Rank's contiguous slice of n items split evenly over size ranks.

    Raises:
        ValueError: size does not divide n; the message names `what`.
    """
    if n % size:
        msg = f"{what}={n} is not divisible by the parallel size {size}"
        raise ValueError(msg)
    per = n // size
    return slice(rank * per, (rank + 1) * per)


def shard_attention(attn: Attention, groups: ParallelGroups) -> None:
    """Split `attn`'s heads over the TP group (see the module docstring); in place.

    Raises:
        ValueError: tp does not divide num_attention_heads or o_groups.
    """
    tp, r, group = groups.tp_size, groups.tp_rank, groups.tp_group
    if tp == 1 or group is None:
        return
    heads = _span(attn.n_heads, r, tp, "num_attention_heads")
    grps = _span(attn.n_groups, r, tp, "o_groups")
    d, rank_o = attn.head_dim, attn.o_lora_rank
    attn.wq_b = _slice_linear(attn.wq_b, rows=slice(heads.start * d, heads.stop * d))
    attn.attn_sink = nn.Parameter(attn.attn_sink.data[heads].clone())
    o_span = slice(grps.start * rank_o, grps.stop * rank_o)
    attn.wo_a = _slice_linear(attn.wo_a, rows=o_span)
    attn.wo_b = _slice_linear(attn.wo_b, cols=o_span)
    attn.n_heads = heads.stop - heads.start
    attn.n_groups = grps.stop - grps.start
    attn.register_forward_hook(_all_reduce_hook(group))


def _shard_expert(expert: Expert, part: slice) -> None:
    expert.w1 = _slice_linear(expert.w1, rows=part)
    expert.w3 = _slice_linear(expert.w3, rows=part)
    expert.w2 = _slice_linear(expert.w2, cols=part)


def shard_moe_tp(moe: MoE, groups: ParallelGroups) -> None:
    """Split every expert's intermediate size over the TP group and all-reduce; in place.

    Raises:
        ValueError: tp does not divide moe_intermediate_size.
    """
    tp, r, group = groups.tp_size, groups.tp_rank, groups.tp_group
    if tp == 1 or group is None:
        return
    inter = moe.shared_experts.w1.out_features
    part = _span(inter, r, tp, "moe_intermediate_size")
    for expert in [*moe.experts, moe.shared_experts]:
        assert isinstance(expert, Expert)
        _shard_expert(expert, part)
    moe.register_forward_hook(_all_reduce_hook(group))


class ExpertParallelMoE(nn.Module):
    """MoE with the routed experts split over the EP group and all-to-all dispatch/combine.

    Holds `gate` and `shared_experts` (replicated) and `experts` = the local experts
    first_expert .. first_expert + n_local - 1 (local index i is global expert first_expert + i).
    Counters since construction: `pairs_sent` (token, expert) pairs dispatched, `pairs_remote`
    those sent to another rank, `comm_seconds` wall time inside the all-to-alls (CUDA is
    synchronised around them, so it includes waiting for the slowest rank).

    Args:
        moe: the full layer to take the gate, shared expert and local experts from.
        groups: this rank's groups; `groups.ep_group` must be set.

    Raises:
        ValueError: EP is off or ep_size does not divide n_routed_experts.
    """

    def __init__(self, moe: MoE, groups: ParallelGroups) -> None:
        super().__init__()
        if groups.ep_group is None:
            msg = "ExpertParallelMoE needs groups.ep_group (build_groups(expert_parallel=True))"
            raise ValueError(msg)
        span = _span(moe.n_experts, groups.ep_rank, groups.ep_size, "n_routed_experts")
        self.group = groups.ep_group
        self.ep_size = groups.ep_size
        self.n_experts = moe.n_experts
        self.n_local = span.stop - span.start
        self.first_expert = span.start
        self.gate: Gate = moe.gate
        self.experts = nn.ModuleList(moe.experts[span])
        self.shared_experts: Expert = moe.shared_experts
        self.rank = groups.ep_rank
        self.pairs_sent = 0
        self.pairs_remote = 0
        self.comm_seconds = 0.0

    def _exchange(
        self, tensor: torch.Tensor, out_rows: int, out_split: list[int], in_split: list[int]
    ) -> torch.Tensor:
        out = tensor.new_empty((out_rows, *tensor.shape[1:]))
        if tensor.is_cuda:
            torch.cuda.synchronize(tensor.device)
        t0 = time.perf_counter()
        dist.all_to_all_single(
            out,
            tensor.contiguous(),
            output_split_sizes=out_split,
            input_split_sizes=in_split,
            group=self.group,
        )
        if tensor.is_cuda:
            torch.cuda.synchronize(tensor.device)
        self.comm_seconds += time.perf_counter() - t0
        return out

    @override
    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """X (T, hidden) of this rank's tokens, input_ids (T,) → (T, hidden).

        Collective over the EP group: every rank must call it in the same step (with T = 0 when it
        has no tokens).
        """
        weights, indices = self.gate(x, input_ids)
        n_tok, k = indices.shape
        token = torch.arange(n_tok, device=x.device).repeat_interleave(k)
        dest = indices.flatten() // self.n_local
        order = torch.argsort(dest, stable=True)
        token, expert, weight = token[order], indices.flatten()[order], weights.flatten()[order]
        send = torch.bincount(dest, minlength=self.ep_size)
        recv = self._exchange(send, self.ep_size, [1] * self.ep_size, [1] * self.ep_size)
        send_split, recv_split = send.tolist(), recv.tolist()
        self.pairs_sent += token.shape[0]
        self.pairs_remote += token.shape[0] - send_split[self.rank]
        n_recv = sum(recv_split)
        rx = self._exchange(x[token], n_recv, recv_split, send_split)
        r_expert = self._exchange(expert, n_recv, recv_split, send_split) - self.first_expert
        r_weight = self._exchange(weight, n_recv, recv_split, send_split)
        out = torch.zeros((n_recv, x.shape[1]), dtype=torch.float32, device=x.device)
        counts = torch.bincount(r_expert, minlength=self.n_local).tolist()
        for e, count in enumerate(counts):
            if count == 0:
                continue
            rows = torch.where(r_expert == e)[0]
            out[rows] = self.experts[e](rx[rows], r_weight[rows, None]).float()
        back = self._exchange(out, token.shape[0], send_split, recv_split)
        y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        y.index_add_(0, token, back)
        y += self.shared_experts(x).float()
        return y.to(x.dtype)


class TensorExpertParallelMoE(nn.Module):
    """MoE under TP attention with EP = TP: tokens are replicated, so no dispatch is needed.

    Each rank runs its contiguous range of routed experts (`experts`, local index i = global
    expert first_expert + i) on the tokens routed to them and its TP slice of the shared expert;
    one fp32 all-reduce over the group sums the experts' outputs.

    Raises:
        ValueError: no TP/EP group, or ep_size does not divide n_routed_experts or tp_size the
            intermediate size.
    """

    def __init__(self, moe: MoE, groups: ParallelGroups) -> None:
        super().__init__()
        if groups.ep_group is None or groups.tp_group is None:
            msg = "TensorExpertParallelMoE needs tp_size > 1 and expert_parallel"
            raise ValueError(msg)
        span = _span(moe.n_experts, groups.ep_rank, groups.ep_size, "n_routed_experts")
        self.group = groups.tp_group
        self.n_local = span.stop - span.start
        self.first_expert = span.start
        self.gate: Gate = moe.gate
        self.experts = nn.ModuleList(moe.experts[span])
        inter = moe.shared_experts.w1.out_features
        _shard_expert(moe.shared_experts, _span(inter, groups.tp_rank, groups.tp_size, "moe_inter"))
        self.shared_experts: Expert = moe.shared_experts

    @override
    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """X (T, hidden), input_ids (T,), the same on every rank of the group → (T, hidden)."""
        weights, indices = self.gate(x, input_ids)
        local = indices - self.first_expert
        y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for e in range(self.n_local):
            rows, slot = torch.where(local == e)
            if rows.numel():
                y.index_add_(0, rows, self.experts[e](x[rows], weights[rows, slot, None]).float())
        y += self.shared_experts(x).float()
        dist.all_reduce(y, group=self.group)
        return y.to(x.dtype)


class VocabParallelEmbedding(nn.Module):
    """`embed` split by vocabulary rows over the TP group: weight (ceil(V/tp), hidden), zero-padded.

    Ids outside this rank's rows embed to zero; the all-reduce sums the one non-zero row.
    """

    def __init__(self, embed: nn.Embedding, groups: ParallelGroups) -> None:
        super().__init__()
        if groups.tp_group is None:
            msg = "VocabParallelEmbedding needs a TP group (tp_size > 1)"
            raise ValueError(msg)
        self.group = groups.tp_group
        vocab = embed.weight.shape[0]
        per = -(-vocab // groups.tp_size)
        self.start = groups.tp_rank * per
        rows = embed.weight.data[self.start : self.start + per]
        self.weight = nn.Parameter(F.pad(rows, (0, 0, 0, per - rows.shape[0])).clone())

    @override
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids (T,) int64 → (T, hidden) in the weight dtype."""
        local = ids - self.start
        mine = (local >= 0) & (local < self.weight.shape[0])
        out = F.embedding(local.clamp(0, self.weight.shape[0] - 1), self.weight)
        out = out * mine.unsqueeze(-1).to(out.dtype)
        dist.all_reduce(out, group=self.group)
        return out


class VocabParallelHead(nn.Module):
    """`head` split by vocabulary rows over the TP group; logits all-gathered and unpadded."""

    def __init__(self, head: Linear, groups: ParallelGroups) -> None:
        super().__init__()
        if groups.tp_group is None:
            msg = "VocabParallelHead needs a TP group (tp_size > 1)"
            raise ValueError(msg)
        self.group = groups.tp_group
        self.tp_size = groups.tp_size
        self.vocab = head.weight.shape[0]
        per = -(-self.vocab // groups.tp_size)
        rows = head.weight.data[groups.tp_rank * per : (groups.tp_rank + 1) * per]
        self.weight = nn.Parameter(F.pad(rows, (0, 0, 0, per - rows.shape[0])).clone())

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """X (n, hidden) → logits (n, vocab) in the weight dtype."""
        local = F.linear(x.to(self.weight.dtype), self.weight)
        parts = [torch.empty_like(local) for _ in range(self.tp_size)]
        dist.all_gather(parts, local.contiguous(), group=self.group)
        return torch.cat(parts, dim=-1)[..., : self.vocab]


def shard_model(model: Transformer, groups: ParallelGroups) -> Transformer:
    """Shard `model` (built with the full config and weights on every rank) for `groups`; in place.

    TP > 1: attention heads, expert widths (or with EP, whole experts: `TensorExpertParallelMoE`),
    embedding and head split over the TP group. EP with tp = 1: routed experts split over the
    world with all-to-all (each rank then runs its own requests: DP attention). The MTP block is
    sharded the same way. Returns the model.

    Raises:
        ValueError: a parallel size does not divide the dimension it splits (named in the message).
    """
    blocks = [*model.layers, *model.mtp]
    for block in blocks:
        assert isinstance(block, Block)
        shard_attention(block.attn, groups)
        if groups.ep_group is not None and groups.tp_size > 1:
            assert isinstance(block.ffn, MoE)
            block.ffn = TensorExpertParallelMoE(block.ffn, groups)  # type: ignore[assignment]
        elif groups.ep_group is not None:
            assert isinstance(block.ffn, MoE)
            block.ffn = ExpertParallelMoE(block.ffn, groups)  # type: ignore[assignment]
        else:
            shard_moe_tp(block.ffn, groups)
    if groups.tp_size > 1:
        model.embed = VocabParallelEmbedding(model.embed, groups)  # type: ignore[assignment]
        model.head = VocabParallelHead(model.head, groups)  # type: ignore[assignment]
    return model


def idle_step(model: Transformer) -> None:
    """An idle DP rank's part of one step: the EP all-to-alls of every main layer with 0 tokens.

    Under DP attention + EP every rank must enter each layer's all-to-alls in every step; a rank
    with no scheduled tokens calls this instead of `forward_step` (attention is rank-local under
    DP, so only the MoE layers take part). No-op without EP.
    """
    for block in model.layers:
        assert isinstance(block, Block)
        if isinstance(block.ffn, ExpertParallelMoE):
            dev = block.ffn.gate.weight.device
            x = torch.zeros((0, model.config.hidden_size), dtype=block.ffn.gate.weight.dtype)
            ids = torch.zeros(0, dtype=torch.int64, device=dev)
            block.ffn(x.to(dev), ids)
