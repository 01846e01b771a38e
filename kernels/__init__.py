"""Triton kernels for gpt-oss, each beside a plain-torch reference with the same signature.

    router(logits [T, E], k)                        -> (expert_idx [T, k] int64, expert_weights [T, k])
    attention(q [T, Hq, D], k, v [S, Hkv, D], sinks [Hq], scale, window, offset, return_sink_prob=False)
                                                    -> out [T, Hq, D] (, sink_prob [Hq, T])
    moe(x [T, H], expert_idx [T, k], expert_weights [T, k], mlp1_blocks, mlp1_scales, mlp1_bias,
        mlp2_blocks, mlp2_scales, mlp2_bias, swiglu_limit)   -> y [T, H]   (MXFP4 experts, never unpacked)

References: ``router_torch``, ``attention_torch``, ``moe_torch``. The kernels run on a CUDA GPU, or on
the CPU under Triton's interpreter when TRITON_INTERPRET=1 is set before this package is imported (slow;
for tests). Otherwise calling a kernel raises ``KernelUnavailable`` saying what is missing;
``available()`` / ``why_unavailable()`` ask first. Without triton installed this package still imports
and the references work.
"""

from ._common import KernelUnavailable, available, interpreting, why_unavailable
from .attention import attention, attention_torch
from .moe import moe, moe_torch, swiglu
from .router import router, router_stable_torch, router_torch

__all__ = [
    "KernelUnavailable", "available", "why_unavailable", "interpreting",
    "attention", "attention_torch", "moe", "moe_torch", "swiglu", "router", "router_torch", "router_stable_torch",
]
