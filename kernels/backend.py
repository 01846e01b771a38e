"""The Triton backend for ``workbench.model``: the model's three swappable pieces, run on the kernels.

Same signatures as the model's ``TorchBackend`` (B batch, T new tokens, S keys, N = B*T):

    attention(q [B,T,Hq,D], k [B,S,Hkv,D], v [B,S,Hkv,D], sinks [Hq], scale, window, positions)
        -> (out [B,T,Hq,D], sink_prob [B,Hq,T] fp32)
    router(logits [..., E], k) -> (expert_idx [..., k] int64 sorted best first, expert_weights [..., k] fp32)
    experts(x [N,H], expert_idx [N,k], expert_weights [N,k], experts, swiglu_limit) -> [N,H]

``experts`` is the model's ``Experts`` module, read by duck typing (``packed(name)`` giving ``.blocks`` and
``.scales``, ``mlp1_bias``, ``mlp2_bias``), so this module imports nothing from the model. Checkpoints
with dense (unquantised) experts go to ``fallback.experts`` (the model passes its TorchBackend).

``positions`` is the model's ``Positions`` (read by duck typing: ``.q`` [B or 1, T] and ``.k`` [B or 1, S]
int64 positions, -1 = no key; ``.offset``, the key column of query 0 or None for keys in cache-slot order;
``.plain``, positions equal columns). Plain layouts run the kernel on ``offset`` alone; others load the
positions. The sink mass comes out of the kernel's softmax normaliser for free; scores and probs are
not materialised: the model computes them with its reference attention only when a trace or hook asks.

Every piece reads no device value on the host, so a decode step on this backend can be captured in a
CUDA graph (``graph_safe``; see ``workbench.decode``), except dense-expert checkpoints, which fall back
to the torch experts.

Router ties: the kernel takes equal logits lowest expert index first; torch.topk leaves their order
unspecified (see ``workbench.kernels.router``).
"""

from __future__ import annotations

import torch

from ._common import KernelUnavailable, why_unavailable
from .attention import attention as _attention
from .moe import moe as _moe
from .router import router as _router


class TritonBackend:
    name = "triton"

    def __init__(self, fallback=None):
        """Raises ``KernelUnavailable`` (saying what is missing) when the kernels cannot run here."""
        reason = why_unavailable()
        if reason:
            raise KernelUnavailable(f"backend='triton' cannot run: {reason}")
        self.fallback = fallback

    graph_safe = True

    @staticmethod
    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor, scale: float,
                  window: int | None, positions) -> tuple[torch.Tensor, torch.Tensor]:
        if positions.plain:
            return _attention(q, k, v, sinks, scale, window, positions.offset, return_sink_prob=True)
        return _attention(q, k, v, sinks, scale, window, positions.offset, q_pos=positions.q, k_pos=positions.k,
                          return_sink_prob=True)

    @staticmethod
    def router(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        lead, E = logits.shape[:-1], logits.shape[-1]
        idx, weights = _router(logits.reshape(-1, E), k, weights_dtype=torch.float32)
        return idx.view(*lead, k), weights.view(*lead, k)

    def experts(self, x: torch.Tensor, expert_idx: torch.Tensor, expert_weights: torch.Tensor, experts,
                swiglu_limit: float) -> torch.Tensor:
        w1, w2 = experts.packed("mlp1_weight"), experts.packed("mlp2_weight")
        if not (hasattr(w1, "blocks") and hasattr(w2, "blocks")):
            if self.fallback is None:
                raise KernelUnavailable("the Triton MoE kernel needs MXFP4 experts; this model's are dense")
            return self.fallback.experts(x, expert_idx, expert_weights, experts, swiglu_limit)
        return _moe(x, expert_idx, expert_weights, w1.blocks, w1.scales, experts.mlp1_bias, w2.blocks, w2.scales,
                    experts.mlp2_bias, swiglu_limit)
