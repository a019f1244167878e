"""DeepSeek-V4 mixture of experts: hash routing in the first layers, sqrtsoftplus elsewhere.

Reference `inference/model.py` `Gate`, `Expert`, `MoE`; vLLM `DeepseekV4MoE` (facts doc §1):

- Scores s = sqrt(softplus(x·Wgᵀ)) in float32. Hash layers (`layer_id < num_hash_layers`) take the
  experts from the token-id table `tid2eid[vocab, top_k]`; the others take the top-k of s + bias
  (`noaux_tc`: the bias `e_score_correction_bias`, checkpoint `gate.bias`, only selects).
- Weights: the chosen s, normalised to sum 1, times `routed_scaling_factor` (1.5 Flash, 2.5 Pro).
- Experts and the one shared expert are SwiGLU with the clamp `swiglu_limit` (10): up clamped to
  [-limit, limit], gate clamped above at limit; out = w2(silu(gate)·up·weight).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from .config import ModelConfig
from .kvcache import dtype_of
from .layers import Linear


class Gate(nn.Module):
    """Router: `weight` (experts, hidden); `bias` (experts,) fp32, or `tid2eid` (vocab, top_k)."""

    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.topk = config.num_experts_per_tok
        self.route_scale = config.routed_scaling_factor
        self.hash = layer_id < config.num_hash_layers
        self.weight = nn.Parameter(
            torch.empty(config.n_routed_experts, config.hidden_size, dtype=dtype_of(config.dtype))
        )
        self.bias: nn.Parameter | None = None
        self.tid2eid: nn.Parameter | None = None
        if self.hash:
            self.tid2eid = nn.Parameter(
                torch.zeros(config.vocab_size, self.topk, dtype=torch.int64), requires_grad=False
            )
        else:
            self.bias = nn.Parameter(torch.zeros(config.n_routed_experts))

    @override
    def forward(
        self, x: torch.Tensor, input_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Routing of x (T, hidden): weights (T, top_k) float32 and expert ids (T, top_k) int64."""
        scores = F.softplus(F.linear(x.float(), self.weight.float())).sqrt()
        if self.tid2eid is not None:
            indices = self.tid2eid[input_ids]
        else:
            biased = scores + self.bias if self.bias is not None else scores
            indices = biased.topk(self.topk, dim=-1).indices
        weights = scores.gather(1, indices)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights * self.route_scale, indices


class Expert(nn.Module):
    """SwiGLU expert with the `swiglu_limit` clamp: w1 (gate), w3 (up), w2 (down)."""

    def __init__(self, hidden: int, inter: int, swiglu_limit: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.w1 = Linear(hidden, inter, dtype=dtype)
        self.w2 = Linear(inter, hidden, dtype=dtype)
        self.w3 = Linear(hidden, inter, dtype=dtype)
        self.limit = swiglu_limit

    @override
    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """X (n, hidden) → (n, hidden); `weights` (n, 1) scale the activation before w2."""
        gate = self.w1(x).float()
        up = self.w3(x).float()
        if self.limit > 0:
            up = up.clamp(-self.limit, self.limit)
            gate = gate.clamp(max=self.limit)
        h = F.silu(gate) * up
        if weights is not None:
            h = h * weights
        out: torch.Tensor = self.w2(h.to(x.dtype))
        return out


class MoE(nn.Module):
    """Routed experts (`experts.E`) plus one shared expert (`shared_experts`), gate `gate`."""

    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        dtype = dtype_of(config.dtype)
        self.n_experts = config.n_routed_experts
        self.gate = Gate(config, layer_id)
        self.experts = nn.ModuleList(
            Expert(config.hidden_size, config.moe_intermediate_size, config.swiglu_limit, dtype)
            for _ in range(config.n_routed_experts)
        )
        self.shared_experts = Expert(
            config.hidden_size, config.moe_intermediate_size, config.swiglu_limit, dtype
        )

    @override
    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """X (T, hidden), input_ids (T,) → (T, hidden)."""
        weights, indices = self.gate(x, input_ids)
        y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        counts = torch.bincount(indices.flatten(), minlength=self.n_experts).tolist()
        for e, count in enumerate(counts):
            if count == 0:
                continue
            rows, slot = torch.where(indices == e)
            y.index_add_(0, rows, self.experts[e](x[rows], weights[rows, slot, None]).float())
        y += self.shared_experts(x).float()
        return y.to(x.dtype)
