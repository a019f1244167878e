"""The DeepSeek-V4 transformer: embedding → mHC streams → blocks → hc_head → norm → head; MTP.

Module and parameter names equal the official checkpoint's (`embed.weight`,
`layers.N.attn.wq_a.weight`, `layers.N.ffn.experts.E.w1.weight`, `layers.N.hc_attn_fn`,
`hc_head_fn`, `head.weight`, `mtp.0.e_proj.weight` …), so `checkpoint.py` maps names 1:1.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from typing_extensions import override

from .attention import Attention
from .config import ModelConfig
from .kvcache import SequenceKV, dtype_of
from .layers import Linear, RMSNorm, hc_head, hc_post, hc_pre
from .moe import MoE
from .ops import AttentionOps, TorchOps


class Block(nn.Module):
    """Attention and MoE sublayers, each wrapped by mHC (hc_pre → norm → sublayer → hc_post).

    mHC params per sublayer (fp32): `hc_*_fn` ((2 + hc)·hc, hc·hidden), `hc_*_base` ((2 + hc)·hc,),
    `hc_*_scale` (3,) — facts doc §3.
    """

    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.config = config
        self.attn = Attention(config, layer_id)
        self.ffn = MoE(config, layer_id)
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.ffn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        hc = config.hc_mult
        mix, dim = (2 + hc) * hc, hc * config.hidden_size
        self.hc_attn_fn = nn.Parameter(torch.zeros(mix, dim))
        self.hc_ffn_fn = nn.Parameter(torch.zeros(mix, dim))
        self.hc_attn_base = nn.Parameter(torch.zeros(mix))
        self.hc_ffn_base = nn.Parameter(torch.zeros(mix))
        self.hc_attn_scale = nn.Parameter(torch.ones(3))
        self.hc_ffn_scale = nn.Parameter(torch.ones(3))

    def _pre(
        self, h: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.config
        return hc_pre(
            h,
            fn,
            scale,
            base,
            hc_mult=c.hc_mult,
            iters=c.hc_sinkhorn_iters,
            rms_eps=c.rms_norm_eps,
            hc_eps=c.hc_eps,
        )

    @override
    def forward(
        self,
        h: torch.Tensor,
        positions: torch.Tensor,
        input_ids: torch.Tensor,
        seqs: list[tuple[slice, SequenceKV]],
        ops: AttentionOps,
    ) -> torch.Tensor:
        """Streams h (T, hc, hidden) → (T, hc, hidden)."""
        x, post, comb = self._pre(h, self.hc_attn_fn, self.hc_attn_scale, self.hc_attn_base)
        h = hc_post(self.attn(self.attn_norm(x), positions, seqs, ops), h, post, comb)
        x, post, comb = self._pre(h, self.hc_ffn_fn, self.hc_ffn_scale, self.hc_ffn_base)
        return hc_post(self.ffn(self.ffn_norm(x), input_ids), h, post, comb)


class MTPBlock(Block):
    """Multi-token-prediction (MTP) module, window-only attention.

    Its input is `e_proj(enorm(embed(next token))) + h_proj(hnorm(streams))`; it has its own
    hc_head and norm and shares `embed` and `head` with the main model (reference `MTPBlock`).
    """

    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__(config, layer_id)
        dtype = dtype_of(config.dtype)
        self.e_proj = Linear(config.hidden_size, config.hidden_size, dtype=dtype)
        self.h_proj = Linear(config.hidden_size, config.hidden_size, dtype=dtype)
        self.enorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.hnorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        hc = config.hc_mult
        self.hc_head_fn = nn.Parameter(torch.zeros(hc, hc * config.hidden_size))
        self.hc_head_base = nn.Parameter(torch.zeros(hc))
        self.hc_head_scale = nn.Parameter(torch.ones(1))


@dataclasses.dataclass
class StepOutput:
    """Result of one forward step.

    Holds the logits (requests, vocab) of each request's last new token and the final streams
    (T, hc, hidden) of all new tokens (the MTP module's input).
    """

    logits: torch.Tensor
    hidden: torch.Tensor


class Transformer(nn.Module):
    """DeepSeek-V4 for causal LM (`DeepseekV4ForCausalLM`), one device, no parallelism."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config.validate()
        dtype = dtype_of(config.dtype)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size, dtype=dtype)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.head = Linear(config.hidden_size, config.vocab_size, dtype=torch.float32)
        self.mtp = nn.ModuleList(
            MTPBlock(config, config.num_hidden_layers + i)
            for i in range(config.num_nextn_predict_layers)
        )
        hc = config.hc_mult
        self.hc_head_fn = nn.Parameter(torch.zeros(hc, hc * config.hidden_size))
        self.hc_head_base = nn.Parameter(torch.zeros(hc))
        self.hc_head_scale = nn.Parameter(torch.ones(1))

    def init_random(self, seed: int) -> Transformer:
        """Deterministic random weights: N(0, 1/fan_in) linears, hash tables from `seed`.

        mHC params start small so the streams stay close to a plain residual; attention sinks 0.
        Hash tables draw each slot independently, so a token may name an expert twice (tiny, 8
        experts, top-2: 1 row in 8); the engine then adds that expert twice, the official
        `MoE.forward` (`y[idx] += ...`) once. Real tables name distinct experts: the two agree.
        """
        gens: dict[torch.device, torch.Generator] = {}
        c = self.config
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.device not in gens:  # draw on the parameter's device (no host copy)
                    gens[p.device] = torch.Generator(device=p.device).manual_seed(seed)
                gen = gens[p.device]
                if name.endswith("tid2eid"):
                    p.copy_(
                        torch.randint(
                            0, c.n_routed_experts, p.shape, generator=gen, device=p.device
                        )
                    )
                elif name.endswith("norm.weight"):
                    p.fill_(1.0)
                elif name.endswith(("_scale", "attn_sink", "gate.bias", "_base")) or ".ape" in name:
                    p.copy_(torch.randn(p.shape, generator=gen, device=p.device) * 0.1)
                elif p.dim() == 2:
                    std = 1.0 if name == "embed.weight" else 1.0 / math.sqrt(p.shape[1])
                    p.copy_(torch.randn(p.shape, generator=gen, device=p.device) * std)
                else:
                    p.copy_(torch.randn(p.shape, generator=gen, device=p.device) * 0.1)
        return self

    def forward_step(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        seqs: list[tuple[slice, SequenceKV]],
        ops: AttentionOps | None = None,
    ) -> StepOutput:
        """Run new tokens of several requests through the model, extending their caches.

        Args:
            input_ids: (T,) token ids of all requests' new tokens, request after request.
            positions: (T,) their positions; each request's run continues its cache.
            seqs: per request, its slice of the flat batch and its `SequenceKV`; blocks are reserved
                (MemoryError when the pool is short) and `num_tokens` advanced.
            ops: attention operators (default: pure PyTorch).

        Returns:
            logits (requests, vocab) float32 for each request's last new token, and the streams.
        """
        ops = ops or TorchOps()
        for sl, seq in seqs:
            seq.reserve(sl.stop - sl.start)
        h = self.embed(input_ids).unsqueeze(1).repeat(1, self.config.hc_mult, 1)
        for layer in self.layers:
            h = layer(h, positions, input_ids, seqs, ops)
        last = torch.tensor([sl.stop - 1 for sl, _ in seqs], device=h.device)
        logits = self.logits(
            h[last], self.hc_head_fn, self.hc_head_scale, self.hc_head_base, self.norm
        )
        for sl, seq in seqs:
            seq.num_tokens += sl.stop - sl.start
        return StepOutput(logits=logits, hidden=h)

    def logits(
        self,
        h: torch.Tensor,
        fn: torch.Tensor,
        scale: torch.Tensor,
        base: torch.Tensor,
        norm: RMSNorm,
    ) -> torch.Tensor:
        """Streams (n, hc, hidden) → float32 logits (n, vocab) via hc_head, norm and `head`."""
        c = self.config
        x = norm(hc_head(h, fn, scale, base, rms_eps=c.rms_norm_eps, hc_eps=c.hc_eps))
        out: torch.Tensor = self.head(x.float())
        return out

    def mtp_logits(
        self,
        hidden: torch.Tensor,
        next_ids: torch.Tensor,
        positions: torch.Tensor,
        seq: SequenceKV,
        ops: AttentionOps | None = None,
    ) -> torch.Tensor:
        """MTP draft logits (n, vocab): the next-next token for each of n positions of one request.

        Args:
            hidden: main-model streams (n, hc, hidden) at `positions` (before hc_head).
            next_ids: (n,) the token following each position (the MTP module's embedding input).
            positions: (n,) consecutive positions continuing `seq`'s MTP window.
            seq: the request's KV; its MTP layer state (window only) is updated.
            ops: attention operators (default: pure PyTorch).
        """
        ops = ops or TorchOps()
        mtp = self.mtp[0]
        assert isinstance(mtp, MTPBlock)
        e = mtp.enorm(self.embed(next_ids))
        x = mtp.e_proj(e).unsqueeze(1) + mtp.h_proj(mtp.hnorm(hidden))
        h = mtp(x, positions, next_ids, [(slice(0, next_ids.shape[0]), seq)], ops)
        return self.logits(h, mtp.hc_head_fn, mtp.hc_head_scale, mtp.hc_head_base, mtp.norm)

    def param_count(self) -> int:
        """Number of parameters (elements), MTP included."""
        return sum(p.numel() for p in self.parameters())
