"""The gpt-oss forward pass in plain torch, written to be read top to bottom.

One block, with the hook point each quantity is exposed at (shapes without the optional batch dim;
T new tokens, S keys = cached + new, H hidden, Hq query heads, Hkv key/value heads, D head_dim, E experts,
I expert intermediate size; ``workbench.hooks`` holds these facts as data):

    x = embedding[tokens]                                          "embed"                   [T, H]
    for each block i (prefix "blocks.{i}."):
        t = RMSNorm(x)                                             "attn.in"                 [T, H]
        q, k, v = split(t Wqkv^T + bqkv); q, k = RoPE(q), RoPE(k)  "attn.q" [T,Hq,D]  "attn.k", "attn.v" [T,Hkv,D]
        s_hij = q_hi . k_gj / sqrt(D) + mask_ij    (g = h's KV head) "attn.scores"           [Hq, T, S]
        w_hij = exp(s_hij) / (sum_j exp(s_hij) + exp(sink_h))       "attn.probs"              [Hq, T, S]
        sink_hi = exp(sink_h) / (same denominator)                  "attn.sink_prob"          [Hq, T]
        z_hi = sum_j w_hij v_gj                                     "attn.z"                  [T, Hq, D]
        a = concat_h(z_h) Wo^T + bo                                 "attn.out"                [T, H]
        x = x + a                                                   "resid_mid"               [T, H]
        t = RMSNorm(x)                                              "moe.in"                  [T, H]
        l = t Wg^T + bg                                             "moe.router_logits"       [T, E]
        picks = top-k(l) (sorted); g = softmax(l[picks])            "moe.expert_idx", "moe.expert_weights"  [T, k]
        u_k = swiglu(t W1_{picks_k}^T + b1_{picks_k})               "moe.act"                 [T, k, I]
        y_k = u_k W2_{picks_k}^T + b2_{picks_k}                     "moe.expert_out"          [T, k, H]
        m = sum_k g_k * y_k                                         "moe.out"                 [T, H]
        x = x + m                                                   "resid_post"              [T, H]
    t = RMSNorm(x)                                                 "final_norm"              [T, H]
    logits = t Wu^T                                                "logits"                  [T, V]

    expert_e(t) = swiglu(t W1_e^T + b1_e) W2_e^T + b2_e, swiglu(h) = g * sigmoid(1.702 g) * (u + 1) with
    g = min(h[0::2], 7), u = clamp(h[1::2], -7, 7).

Sliding layers (even index) let query i see key j iff i - window < j <= i; full layers iff j <= i.
RoPE rotates contiguous halves; YaRN stretches the low frequencies and scales cos/sin (see ``yarn``).

Positions, padding, cache. i and j above are *positions*: each sequence's tokens count from 0 at its
first token. A padded batch passes ``attention_mask`` [B, T] (1 = token, 0 = padding; left padding for
generation): padding is never attended to and each row equals its sequence run alone. The KV cache
(``workbench.kv_cache``) is preallocated per layer, sliding layers as rings of their window, with the
positions on the device; ``Positions`` says where the queries and keys of one attention call sit.

Numerics: weights are stored in ``dtype`` (bf16 by default, fp32 on request), RMSNorm, softmaxes and RoPE
are computed in fp32, matmuls accumulate in fp32 and round their output to ``dtype``. Experts stay MXFP4
(as stored, memory-mapped from the checkpoint); each forward dequantizes only the experts its tokens
picked, a few at a time (bounded memory: the 20b shapes run 32 tokens in < 13 GB peak RSS).

Swappable pieces (a backend replaces them; see ``TorchBackend``): the attention core, the router top-k
and the expert computation, each a plain function of tensors. The torch backend runs prefill attention
through torch's fused SDPA in query chunks (``sdpa_with_sinks``: equal to the eager math, no T x S mask,
memory ~chunk x S), which also yields the sink mass; only when a trace or hook asks for attention
scores/probs does the eager ``attention_with_sinks`` run (it materialises [B, Hq, T, S]); when one asks
for ``moe.act`` / ``moe.expert_out`` the reference ``moe_experts`` runs with its per-pick hook. A long
input fed through a cache without hooks goes ``_PREFILL_CHUNK`` tokens at a time (bounded memory).

With no hooks and no trace each hook point is a call to an identity function: nothing measurable.

Gradients: every parameter is created frozen (``requires_grad=False``); ``model.requires_grad_(True)``
makes them trainable (dense experts included), and a hook may return a leaf tensor that requires grad
(d logit / d activation, also through packed MXFP4 experts, which themselves get no gradient). When
autograd is recording, the attention and expert pieces take out-of-place twins of their in-place ops
(``needs_grad``); under ``torch.no_grad()`` they run exactly as before.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_kernels, mxfp4
from .checkpoint import Checkpoint, MXFP4Tensor, open_checkpoint
from .config import ModelConfig
from .hooks import ATTN_INTERNALS, MOE_PER_PICK, Names, hook_names, is_pattern, name_filter
from .kv_cache import KVCache, LayerCache, Positions, column_positions  # noqa: F401 (LayerCache: public here too)
from .progress import progress

if TYPE_CHECKING:
    from .trace import Trace

Tensor = torch.Tensor
HookFn = Callable[[Tensor, str], Union[Tensor, None]]


# ================================================================================================
# numerics helpers
# ================================================================================================

def _native_low_precision_matmul() -> bool:
    """True if this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX tiles); env var overrides."""
    env = os.environ.get("WORKBENCH_CPU_BF16_MATMUL")
    if env is not None:
        return env == "1"
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's run-time CPU checks
    return any(getattr(torch.cpu, c, lambda: False)() for c in checks)


_NATIVE_BF16 = _native_low_precision_matmul()
_GEMM_MIN_ROWS = 16  # from this many rows a bf16 GEMM (native) or an fp32 GEMM of upcast weights is used; below
                     # it the bf16 matrix-vector kernel (workbench.cpu_kernels), which reads W once at bandwidth
_UPCAST_CHUNK_BYTES = 1 << 25  # fp32 weight rows converted at a time: bounded extra memory
_UPCAST_SMALL_WEIGHT = 1 << 16  # weights this small are always multiplied in fp32 (torch 2.13 takes ~8 ms for a
                                # [1, 64] x [64, 96] bf16 GEMM, 0.06 ms upcast)


def compute_dtype(dtype: torch.dtype, device: torch.device | str) -> torch.dtype:
    """The dtype the attention core and the pure-torch experts compute in: ``dtype``, but fp32 on CPUs.

    On a CPU their matmuls are small-K or few-row ones, where bf16 gains little even with native bf16 and
    rounds intermediate scores; ``linear`` takes bf16 GEMMs where they pay.
    """
    if dtype == torch.float32 or torch.device(device).type != "cpu":
        return dtype
    return torch.float32


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, in x's dtype, fp32 accumulation. x [..., in], W [out, in], b [out] -> [..., out].

    On a CPU with bf16 x and W, by row count: fewer than 16 rows go through ``cpu_kernels.bf16_linear`` (reads
    the bf16 weight once, at memory bandwidth; a torch bf16 GEMV is ~3x slower); more rows through a native
    bf16 GEMM where the CPU has one (AVX512-BF16/AMX), else the weight is converted to fp32 a chunk of rows
    at a time and multiplied in fp32 (a bf16 GEMM without native support is ~10x slower). Every route gives
    the fp32-accumulated sum rounded to bf16. Small weights are always multiplied in fp32.
    """
    if x.dtype == torch.float32 or x.device.type != "cpu":
        return F.linear(x, weight, bias)
    rows = x.numel() // max(1, x.shape[-1])
    small = weight.numel() <= _UPCAST_SMALL_WEIGHT
    if (rows < _GEMM_MIN_ROWS and x.dtype == weight.dtype == torch.bfloat16 and cpu_kernels.available()
            and not needs_grad(x, weight, *([] if bias is None else [bias]))):
        return cpu_kernels.bf16_linear(x, weight, bias)
    if not small and (_NATIVE_BF16 or rows < _GEMM_MIN_ROWS):
        return F.linear(x, weight, bias)
    xf = x.float()
    out = torch.empty((*x.shape[:-1], weight.shape[0]), dtype=x.dtype, device=x.device)
    step = max(1, _UPCAST_CHUNK_BYTES // (4 * weight.shape[1]))
    for i in range(0, weight.shape[0], step):
        b = None if bias is None else bias[i:i + step].float()
        out[..., i:i + step] = F.linear(xf, weight[i:i + step].float(), b)
    return out


def needs_grad(*tensors: Tensor) -> bool:
    """True when autograd records ops on any of ``tensors``: then the pieces below avoid in-place ops and
    ``out=`` arguments (which autograd cannot differentiate) and take their out-of-place twins."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def rms_norm(x: Tensor, scale: Tensor, eps: float = 1e-5) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * scale, computed in fp32, returned in x's dtype. x [..., H], scale [H]."""
    t = x.float()
    t = t * torch.rsqrt(t.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (t * scale).to(x.dtype)


def yarn(config: ModelConfig) -> tuple[Tensor, float]:
    """YaRN RoPE: (inv_freq [D/2] fp32, concentration), exactly the reference's formula.

    freq_i = theta^(2i/D); low/high = D/2 * ln(L0 / (beta|alpha * 2 pi)) / ln(theta);
    ramp_i = clamp((i - low) / (high - low), 0, 1); inv_freq_i = ramp_i / (factor * freq_i) + (1 - ramp_i) / freq_i;
    cos and sin are multiplied by concentration = 0.1 ln(factor) + 1. factor <= 1 means plain RoPE.
    """
    d, theta, factor = config.head_dim, config.rope_theta, config.rope_scaling_factor
    freq = theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    if factor <= 1.0:
        return 1.0 / freq, 1.0
    concentration = 0.1 * math.log(factor) + 1.0
    L0 = config.initial_context_length
    low = d / 2 * math.log(L0 / (config.rope_ntk_beta * 2 * math.pi)) / math.log(theta)
    high = d / 2 * math.log(L0 / (config.rope_ntk_alpha * 2 * math.pi)) / math.log(theta)
    ramp = ((torch.arange(d // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    inv_freq = ramp / (factor * freq) + (1 - ramp) / freq
    return inv_freq, concentration


def rope_cos_sin(positions: Tensor, inv_freq: Tensor, concentration: float) -> tuple[Tensor, Tensor]:
    """cos, sin [..., D/2] (fp32) for integer positions [...] (e.g. [T] or [B, T])."""
    angles = positions.to(torch.float32)[..., None] * inv_freq
    return angles.cos() * concentration, angles.sin() * concentration


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate contiguous halves: x [B, T, heads, D], cos/sin [T, D/2] or [B, T, D/2] -> same shape and dtype as x."""
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos.unsqueeze(-2), sin.unsqueeze(-2)
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(x.dtype)


def swiglu(h: Tensor, limit: float, alpha: float = 1.702) -> Tensor:
    """Clamped SwiGLU on interleaved h [..., 2I] (even = gate, odd = up) -> [..., I]."""
    gate, up = h[..., 0::2].clamp(max=limit), h[..., 1::2].clamp(min=-limit, max=limit)
    return gate * torch.sigmoid(alpha * gate) * (up + 1)


# ================================================================================================
# the swappable pieces: attention core, router top-k, experts
# ================================================================================================

def _key_positions(positions: Positions | None, T: int, S: int, offset: int, device) -> Positions:
    return positions if positions is not None else Positions.columns(T, S, offset, device)


def attention_with_sinks(q: Tensor, k: Tensor, v: Tensor, sinks: Tensor, scale: float, window: int | None = None,
                         offset: int = 0, hook: Callable[[str, Tensor], Tensor] | None = None, *,
                         positions: Positions | None = None, return_sink_prob: bool = False):
    """Softmax attention with one sink logit per head, GQA. Eager; exposes its internals to ``hook``.

    q [B, T, Hq, D], k/v [B, S, Hkv, D], sinks [Hq] -> out [B, T, Hq, D] (and sink_prob [B, Hq, T] fp32 with
    ``return_sink_prob``). Where queries and keys sit: ``positions`` (a ``Positions``: per-sequence
    positions, padding, cache slots), or without it the plain layout: query t at position offset + t, key j
    at j (``offset`` = keys before the first query). Query h reads KV head h // (Hq/Hkv). With
    s_hij = scale q_hi.k_j (-inf where key j is not visible) and m = max(max_j s_hij, sink_h):
        w_hij = exp(s_hij - m) / (sum_j exp(s_hij - m) + exp(sink_h - m))
    ``hook(name, tensor)`` sees "scores" [B,Hq,T,S], "probs" [B,Hq,T,S], "sink_prob" [B,Hq,T] and may
    return replacements: new scores are softmaxed again, new probs are what multiplies V (sink_prob then
    becomes 1 - sum_j probs). Materialises [B, Hq, T, S]: meant for decode and for traces that ask for
    scores or probs (``sdpa_with_sinks`` is the bounded-memory path).
    """
    B, T, Hq, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    G = Hq // Hkv
    pos = _key_positions(positions, T, S, offset, q.device)
    cdt = compute_dtype(q.dtype, q.device)
    # rows (g, t) of the G query heads that share a KV head stacked: one batched matmul serves GQA
    qg = q.to(cdt).view(B, T, Hkv, G, D).permute(0, 2, 3, 1, 4).reshape(B * Hkv, G * T, D)
    kt = k.to(cdt).permute(0, 2, 3, 1).reshape(B * Hkv, D, S)
    scores = torch.bmm(qg, kt).mul_(scale).view(B, Hkv, G, T, S).float()
    scores = scores.masked_fill_(~pos.visible(window)[:, None, None], float("-inf")).view(B, Hq, T, S)
    if hook is not None:
        scores = hook("scores", scores)
    sink = sinks.float().view(1, Hq, 1, 1)
    m = torch.maximum(scores.amax(dim=-1, keepdim=True), sink)
    grad = needs_grad(scores, sinks)
    probs = torch.sub(scores, m).exp() if grad else torch.sub(scores, m).exp_()
    e_sink = torch.exp(sink - m)
    denom = probs.sum(dim=-1, keepdim=True) + e_sink
    probs = probs / denom if grad else probs.div_(denom)
    sink_prob = (e_sink / denom).squeeze(-1)
    if hook is not None:
        new = hook("probs", probs)
        if new is not probs:
            sink_prob = (1 - new.sum(-1)).clamp_min(0)
        hook("sink_prob", sink_prob)
        probs = new
    vt = v.to(cdt).permute(0, 2, 1, 3).reshape(B * Hkv, S, D)
    out = torch.bmm(probs.to(cdt).reshape(B * Hkv, G * T, S), vt)  # [B*Hkv, G*T, D]
    out = out.view(B, Hq, T, D).transpose(1, 2).to(q.dtype)
    return (out, sink_prob) if return_sink_prob else out


_SDPA_CHUNK = 512  # queries per fused call: the mask and the kernel's buffers stay ~chunk x keys bytes


def _sink_width(D: int, device: torch.device) -> int:
    """Head width with the sink dimension: D + 1 on a CPU (its flash kernel takes any width); a multiple of
    8 elsewhere (CUDA's memory-efficient kernel needs one, else SDPA falls back to the unfused math)."""
    return D + 1 if device.type == "cpu" else -(-(D + 1) // 8) * 8


def sdpa_with_sinks(q: Tensor, k: Tensor, v: Tensor, sinks: Tensor, scale: float, window: int | None = None,
                    offset: int = 0, *, positions: Positions | None = None, return_sink_prob: bool = False,
                    chunk: int | None = None):
    """The same attention as ``attention_with_sinks`` through torch's fused scaled_dot_product_attention,
    in bounded memory, with the sink mass for free.

    The sink is one more key, made with one more head dimension: q' = [q, sink_h / scale], real keys
    k' = [k, 0], the sink key [0, 1], so scale q'.k' = s_hij for real keys and exactly sink_h for the sink.
    Values get the same extra dimension: v' = [v, 0] and [0, 1] for the sink, so the output's last
    dimension is the sink's weight, sink_prob_hi = exp(sink_h) / (sum_j exp(s_hij) + exp(sink_h)) = exp(sink_h -
    logsumexp over keys and sink), and the rest is sum_j w_hij v_j: the sink math exactly, no T x S mask.
    Queries go ``chunk`` at a time (default 512) against only the keys they can see (a sliding layer's
    chunk reads its window's keys, not all S), with a boolean chunk x keys mask: memory stays ~chunk x S
    bytes whatever T. Same arguments as ``attention_with_sinks`` (no hooks).
    """
    B, T, Hq, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    pos = _key_positions(positions, T, S, offset, q.device)
    cdt = compute_dtype(q.dtype, q.device)
    chunk = chunk or _SDPA_CHUNK
    width = _sink_width(D, q.device)  # D + 1, or more (zeros) where fused kernels want a multiple of 8
    # keys with the sink key first: [B, Hkv, 1 + S, width]
    unit = torch.zeros((B, Hkv, 1, width), dtype=cdt, device=q.device)
    unit[..., D] = 1
    pad = lambda x: F.pad(x.to(cdt).transpose(1, 2), (0, width - D))
    k1, v1 = torch.cat([unit, pad(k)], 2), torch.cat([unit, pad(v)], 2)
    sink_col = torch.zeros((1, Hq, 1, width - D), dtype=cdt, device=q.device)
    sink_col[..., 0] = (sinks.float() / scale).clamp(-1e30, 1e30).view(1, Hq, 1)  # finite: -inf * 0 is nan
    outs = []
    for a in range(0, T, chunk):
        b = min(T, a + chunk)
        lo, hi = 0, S  # keys these queries may see (by column, when keys are in column order)
        if pos.offset is not None:
            hi = min(S, pos.offset + b)
            lo = max(0, pos.offset + a - window + 1) if window else 0
        qa = torch.cat([q[:, a:b].to(cdt).transpose(1, 2), sink_col.expand(B, Hq, b - a, width - D)], -1)
        if lo == 0:
            ka, va = k1[:, :, :1 + hi], v1[:, :, :1 + hi]
        else:
            ka = torch.cat([k1[:, :, :1], k1[:, :, 1 + lo:1 + hi]], 2)
            va = torch.cat([v1[:, :, :1], v1[:, :, 1 + lo:1 + hi]], 2)
        seen = pos.visible(window, slice(a, b), slice(lo, hi))  # [B or 1, b-a, hi-lo]
        mask = F.pad(seen, (1, 0), value=True)[:, None]  # the sink is seen by every query
        outs.append(F.scaled_dot_product_attention(qa, ka, va, attn_mask=mask, scale=scale, enable_gqa=Hq != Hkv))
    o = outs[0] if len(outs) == 1 else torch.cat(outs, 2)  # [B, Hq, T, D + 1]
    out = o[..., :D].transpose(1, 2).to(q.dtype)
    return (out, o[..., D].float()) if return_sink_prob else out


_SDPA_MIN_QUERIES = 16  # below this (decode) the eager path is faster
_PREFILL_CHUNK = 2048  # tokens per forward when a long input goes through a cache without hooks (bounded memory)


def router(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k routing: (expert_idx [..., k] (sorted, best first), expert_weights [..., k] fp32 = softmax of
    those k logits)."""
    values, idx = torch.topk(logits, k, dim=-1, sorted=True)
    return idx, torch.softmax(values.float(), dim=-1)


class Experts(nn.Module):
    """The E expert MLPs of one block: W1 [E, 2I, H], b1 [E, 2I], W2 [E, H, I], b2 [E, H].

    W1/W2 are kept as stored: packed MXFP4 (``mlp1_weight`` is then an ``MXFP4Tensor`` over the
    ``*_blocks``/``*_scales`` buffers) or dense (a Hugging Face checkpoint with dense experts).
    ``weight(name, e, dtype)`` materialises one expert's matrix.
    """

    def __init__(self, mlp1_weight, mlp1_bias: Tensor, mlp2_weight, mlp2_bias: Tensor):
        super().__init__()
        for name, w in (("mlp1_weight", mlp1_weight), ("mlp2_weight", mlp2_weight)):
            if isinstance(w, MXFP4Tensor):
                self.register_buffer(f"{name}_blocks", w.blocks)
                self.register_buffer(f"{name}_scales", w.scales)
            else:  # dense: a parameter, so training can update it (frozen like every parameter until asked)
                setattr(self, name, nn.Parameter(w, requires_grad=False))
        self.mlp1_bias = nn.Parameter(mlp1_bias, requires_grad=False)
        self.mlp2_bias = nn.Parameter(mlp2_bias, requires_grad=False)

    def packed(self, name: str) -> MXFP4Tensor | Tensor:
        """``name`` = "mlp1_weight" or "mlp2_weight": the MXFP4Tensor [E, out, in] or the dense tensor."""
        if hasattr(self, f"{name}_blocks"):
            return MXFP4Tensor(getattr(self, f"{name}_blocks"), getattr(self, f"{name}_scales"))
        return getattr(self, name)

    @property
    def is_mxfp4(self) -> bool:
        return hasattr(self, "mlp1_weight_blocks")

    @property
    def num_experts(self) -> int:
        return self.mlp1_bias.shape[0]

    def weights(self, name: str, ids: Sequence[int], dtype: torch.dtype) -> Tensor:
        """Experts ``ids``' dense matrices [len(ids), out, in] in ``dtype``, dequantized now if packed."""
        w = self.packed(name)
        sel = torch.as_tensor(list(ids), dtype=torch.long, device=self.mlp1_bias.device)
        if isinstance(w, MXFP4Tensor):
            return mxfp4.dequantize(w.blocks[sel], w.scales[sel], dtype)
        return w[sel].to(dtype)

    def weight(self, name: str, e: int, dtype: torch.dtype) -> Tensor:
        """Expert e's dense matrix [out, in] in ``dtype``."""
        return self.weights(name, [e], dtype)[0]


_PROGRESS_MIN_TOKENS = 64  # forwards of this many tokens show a progress bar (on a terminal, after 1 s)
_EXPERT_CHUNK_BYTES = 1 << 28  # dequantized expert matrices held at once (bounded: 20b runs in < 16 GB)


def moe_experts(x: Tensor, idx: Tensor, weights: Tensor, experts: Experts, limit: float,
                hook: Callable[[str, Tensor], Tensor] | None = None) -> Tensor:
    """sum_k weights[n, k] * expert_{idx[n, k]}(x[n]), batched by expert.

    x [N, H], idx [N, k] (int), weights [N, k] -> [N, H] in x's dtype. The N*k (token, pick) rows are
    grouped by expert; the picked experts are dequantized (a few at a time, bounded memory), each runs
    its matmul over its rows; SwiGLU runs once over all rows; the weighted outputs are scatter-added
    back to their tokens. Experts nobody picked are never touched.

    ``hook(name, rows)`` (the per-pick path; None on the plain path, which a faster implementation may
    replace) sees "act" [N, k, I] (SwiGLU output) and "expert_out" [N, k, H] (each pick's expert output
    before weighting), both in x's dtype with rows in (token, pick) order, and may return replacements.
    """
    N, k = idx.shape
    H = x.shape[-1]
    # Training and attribution: the same math out of place (dense expert weights may require grad; packed
    # MXFP4 weights never do, but the activations flowing through them may).
    grad = torch.is_grad_enabled() and needs_grad(x, weights, *experts.parameters())
    # Inference on a CPU: fused kernels read the packed MXFP4 weights directly (no dense copy is ever made)
    # and take the activations in the model dtype; their products and fp32 sums are the dequantise path's.
    fused = (not grad and experts.is_mxfp4 and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
             and cpu_kernels.available())
    # Otherwise matmuls in fp32 on CPUs (see ``compute_dtype``; torch's bf16 GEMV for a few rows was
    # measurably less accurate here). SwiGLU, the routing weights and the sum over experts are fp32.
    cdt = x.dtype if fused else compute_dtype(x.dtype, x.device)
    flat = idx.reshape(-1)
    order = torch.argsort(flat, stable=True)
    token = order // k  # token of each (token, pick) row, rows grouped by expert
    counts = torch.bincount(flat, minlength=experts.num_experts).tolist()
    starts = [0]
    for n in counts:
        starts.append(starts[-1] + n)
    used = [e for e, n in enumerate(counts) if n]

    def matmuls(name: str, inp: Tensor, bias: Tensor, out_dim: int) -> Tensor:
        """out[rows of e] = inp[rows of e] W_e^T + b_e for every used expert e."""
        if fused:  # -> fp32
            w = experts.packed(name)
            return cpu_kernels.mxfp4_linear(inp, w.blocks, w.scales, bias, [starts[e] for e in used] + [len(inp)], used)
        out = None if grad else torch.empty((inp.shape[0], out_dim), dtype=cdt, device=x.device)
        pieces = []
        per_expert = out_dim * inp.shape[1] * cdt.itemsize
        step = max(1, _EXPERT_CHUNK_BYTES // per_expert)
        for c in range(0, len(used), step):
            chunk = used[c:c + step]
            W = experts.weights(name, chunk, cdt)  # [len(chunk), out, in]
            for j, e in enumerate(chunk):
                rows = slice(starts[e], starts[e + 1])
                if grad:
                    pieces.append(torch.addmm(bias[e], inp[rows], W[j].T))
                else:
                    torch.addmm(bias[e], inp[rows], W[j].T, out=out[rows])
        if not grad:
            return out
        return torch.cat(pieces) if pieces else inp.new_zeros((0, out_dim))

    def per_pick(name: str, rows: Tensor) -> Tensor:
        """Show the expert-grouped ``rows`` [N*k, X] to ``hook`` as [N, k, X] in token order; a
        replacement comes back expert-grouped (unreplaced rows are returned as they were, unrounded)."""
        if hook is None:
            return rows
        shown = torch.empty_like(rows, dtype=x.dtype)
        shown[order] = rows.to(x.dtype)
        shown = shown.view(N, k, -1)
        new = hook(name, shown)
        if new is shown and not shown.requires_grad:  # (when autograd records, the path runs through
            return rows                                # ``shown``, so its gradient exists)
        return new.reshape(N * k, -1)[order].to(rows.dtype)

    h = matmuls("mlp1_weight", x.to(cdt)[token], experts.mlp1_bias.to(cdt), experts.mlp1_bias.shape[1])
    act = swiglu(h.float(), limit).to(x.dtype).to(cdt)  # rounded to the model dtype between layers, as the reference
    act = per_pick("act", act)
    y = per_pick("expert_out", matmuls("mlp2_weight", act, experts.mlp2_bias.to(cdt), H)).float()
    picked = weights.reshape(-1)[order].float().unsqueeze(-1)
    y = y * picked if grad else y.mul_(picked)
    out = torch.zeros((N, H), dtype=torch.float32, device=x.device)
    out.index_put_((token,), y, accumulate=True)  # (index_add_ is far slower on CPU)
    return out.to(x.dtype)


class TorchBackend:
    """The reference backend: plain torch for every piece. Another backend (e.g. Triton kernels) provides
    the same three callables with the same signatures:

        attention(q [B,T,Hq,D], k, v [B,S,Hkv,D], sinks [Hq], scale, window, positions)
            -> (out [B,T,Hq,D], sink_prob [B,Hq,T] fp32)
        router(logits [N,E] (or [B,T,E]), k) -> (expert_idx [.., k] int64 sorted, expert_weights [.., k] fp32)
        experts(x [N,H], expert_idx [N,k], expert_weights [N,k], experts: Experts, swiglu_limit) -> [N,H]

    ``positions`` is a ``workbench.kv_cache.Positions`` (query and key positions, -1 for missing keys, and
    the column offset when keys are in column order). ``attention`` returns the sink mass of every head
    and query (cheap: it falls out of the softmax normaliser), so tracing ``attn.sink_prob`` costs nothing
    extra; it need not expose scores or probs: the model uses ``attention_with_sinks`` whenever a trace or
    hook asks for those."""

    name = "torch"

    @staticmethod
    def attention(q: Tensor, k: Tensor, v: Tensor, sinks: Tensor, scale: float, window: int | None,
                  positions: Positions) -> tuple[Tensor, Tensor]:
        if q.shape[1] >= _SDPA_MIN_QUERIES:
            return sdpa_with_sinks(q, k, v, sinks, scale, window, positions=positions, return_sink_prob=True)
        return attention_with_sinks(q, k, v, sinks, scale, window, positions=positions, return_sink_prob=True)

    router = staticmethod(router)
    experts = staticmethod(moe_experts)


def _triton_backend() -> object:
    """The Triton kernels (workbench.kernels); raises a ValueError saying why when they cannot run here."""
    try:
        from .kernels.backend import TritonBackend
    except ImportError as e:
        raise ValueError(f"backend='triton' needs workbench.kernels, which cannot be imported: {e}") from None
    return TritonBackend(fallback=TorchBackend())


BACKENDS: dict[str, Callable[[], object]] = {"torch": TorchBackend, "triton": _triton_backend}


def get_backend(backend) -> object:
    """A backend by name ("torch", "triton") or a backend object with attention/router/experts."""
    if not isinstance(backend, str):
        missing = [m for m in ("attention", "router", "experts") if not hasattr(backend, m)]
        if missing:
            raise ValueError(f"backend object {backend!r} lacks {', '.join(missing)}")
        return backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    return BACKENDS[backend]()


# ================================================================================================
# a forward pass's hook state (the hook points themselves are listed in workbench.hooks)
# ================================================================================================

class HookRun:
    """The hook state of one forward pass: which points are hooked or kept, and what was kept.

    ``point(name, x)`` is called at each hook point with the internal (batched) tensor. It returns ``x``
    itself when nothing replaced it, so callers can test ``new is x``.

    ``grad=True`` (autograd recording): the first floating point reached (the embedding) becomes a leaf
    that requires grad, and so does a constant a hook puts in, so every later activation is on the graph;
    ``grad_inputs`` holds, for each kept point, the tensor that carries on forward (d metric / d it is
    that point's gradient). ``backward_hooks`` ({name or glob: fn(grad, name) -> replacement or None})
    are registered on those tensors and may rewrite the gradient flowing back through the point.
    """

    def __init__(self, valid: Sequence[str], *, hooks: Mapping[str, HookFn | Sequence[HookFn]] | None = None,
                 keep: Names = (), batched: bool = True, grad: bool = False,
                 backward_hooks: Mapping[str, HookFn | Sequence[HookFn]] | None = None):
        self.batched = batched
        self.keep = name_filter(keep, valid) if keep != () else (lambda name: False)
        self.hooks = self._validate(hooks, valid)
        self.backward_hooks = self._validate(backward_hooks, valid)
        self.grad = grad or bool(self.backward_hooks)
        self._resolved: dict[tuple[int, str], list[HookFn]] = {}
        self.store: dict[str, Tensor] = {}
        self.grad_inputs: dict[str, Tensor] = {}

    @staticmethod
    def _validate(hooks, valid) -> list[tuple[str, list[HookFn]]]:
        out = []
        for key, fns in (hooks or {}).items():
            name_filter([key], valid)  # validates the name or pattern
            fns = [fns] if callable(fns) else list(fns) if isinstance(fns, (list, tuple)) else [fns]
            if not all(callable(f) for f in fns):
                raise TypeError(f"hook for {key!r} must be a callable fn(tensor, name) or a list of them")
            out.append((key, fns))
        return out

    def fns(self, name: str, backward: bool = False) -> list[HookFn]:
        if (backward, name) not in self._resolved:
            hooks = self.backward_hooks if backward else self.hooks
            self._resolved[backward, name] = [f for key, fns in hooks
                                              if key == name or (is_pattern(key) and fnmatch.fnmatchcase(name, key))
                                              for f in fns]
        return self._resolved[backward, name]

    def wants(self, name: str) -> bool:
        return bool(self.fns(name)) or self.keep(name) or bool(self.backward_hooks and self.fns(name, True))

    def point(self, name: str, x: Tensor) -> Tensor:
        fns, keep = self.fns(name), self.keep(name)
        backward = self.fns(name, True) if self.backward_hooks else ()
        leaf = self.grad and x.is_floating_point() and not x.requires_grad and torch.is_grad_enabled()
        if not (fns or keep or backward or leaf):
            return x
        out = x.detach().requires_grad_() if leaf else x  # the graph starts here
        v, replaced = self._apply(name, fns, out if self.batched else out[0])
        if replaced:
            out = v if self.batched else v.unsqueeze(0)
            if self.grad and out.is_floating_point() and not out.requires_grad and torch.is_grad_enabled():
                out = out.detach().requires_grad_()  # a constant put in: gradients start again below it
                v = out if self.batched else out[0]
        if keep:
            self.store[name] = v.detach()
        if out.requires_grad:
            if keep:
                self.grad_inputs[name] = out
            if backward:
                out.register_hook(lambda g, name=name, fns=backward: self._backward(name, fns, g))
        return out

    def _backward(self, name: str, fns: list[HookFn], g: Tensor) -> Tensor | None:
        v, replaced = self._apply(name, fns, g if self.batched else g[0])
        if not replaced:
            return None
        return v if self.batched else v.unsqueeze(0)

    def _apply(self, name: str, fns: list[HookFn], v: Tensor) -> tuple[Tensor, bool]:
        """Run ``fns`` in order on the (unbatched when the input was) tensor ``v``: (result, replaced?)."""
        replaced = False
        for fn in fns:
            r = fn(v, name)
            if r is not None:
                v = self._check(name, r, v)
                replaced = True
        return v, replaced

    @staticmethod
    def _check(name: str, r, v: Tensor) -> Tensor:
        if not isinstance(r, torch.Tensor):
            raise TypeError(f"hook for {name!r} returned {type(r).__name__}, expected a tensor or None")
        same = tuple(r.shape) == tuple(v.shape)
        if name.endswith("moe.expert_idx"):  # a different number of picks per token is allowed
            same = r.shape[:-1] == v.shape[:-1] and r.shape[-1] >= 1
        if not same:
            raise ValueError(f"hook for {name!r} returned shape {list(r.shape)}, expected {list(v.shape)}")
        return r.to(dtype=v.dtype, device=v.device)


# ================================================================================================
# the model
# ================================================================================================

def _param(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t, requires_grad=False)


class Linear(nn.Module):
    """weight [out, in], bias [out] (no init: the weights come from a checkpoint)."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None):
        super().__init__()
        self.weight = _param(weight)
        self.bias = None if bias is None else _param(bias)

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


class RMSNorm(nn.Module):
    def __init__(self, scale: Tensor, eps: float = 1e-5):
        super().__init__()
        self.scale = _param(scale.float())
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.scale, self.eps)


class AttentionBlock(nn.Module):
    """RMSNorm, qkv projection, RoPE, attention with sinks (sliding window on even layers), out projection."""

    def __init__(self, config: ModelConfig, layer: int, w: Mapping[str, Tensor]):
        super().__init__()
        self.layer = layer
        self.num_heads, self.num_kv_heads, self.head_dim = (config.num_attention_heads, config.num_key_value_heads,
                                                            config.head_dim)
        self.window = config.sliding_window if config.is_sliding(layer) else None
        self.scale = 1.0 / math.sqrt(config.head_dim)
        self.norm = RMSNorm(w["norm.scale"])
        self.qkv = Linear(w["qkv.weight"], w["qkv.bias"])
        self.sinks = _param(w["sinks"].float())
        self.out = Linear(w["out.weight"], w["out.bias"])

    def forward(self, x: Tensor, ctx: "_Step") -> Tensor:
        """x [B, T, H] -> attention output [B, T, H] (not yet added to the residual)."""
        hp = ctx.hook_prefix(f"blocks.{self.layer}.")
        B, T, _ = x.shape
        Hq, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        t = hp("attn.in", self.norm(x))
        qkv = self.qkv(t)
        q = qkv[..., : Hq * D].view(B, T, Hq, D)
        k = qkv[..., Hq * D: (Hq + Hkv) * D].view(B, T, Hkv, D)
        v = qkv[..., (Hq + Hkv) * D:].view(B, T, Hkv, D)
        q = hp("attn.q", apply_rope(q, ctx.cos, ctx.sin))
        k = hp("attn.k", apply_rope(k, ctx.cos, ctx.sin))
        v = hp("attn.v", v)
        k, v, where = ctx.keys(self.layer, k, v)
        if ctx.run is not None and any(ctx.run.wants(f"blocks.{self.layer}.{p}") for p in ATTN_INTERNALS):
            a = attention_with_sinks(q, k, v, self.sinks, self.scale, self.window,
                                     hook=lambda name, t: hp(f"attn.{name}", t), positions=where)
        else:
            a, sink_prob = ctx.backend.attention(q, k, v, self.sinks, self.scale, self.window, where)
            hp("attn.sink_prob", sink_prob)  # read-only here as in the eager path: replace attn.probs to change it
        a = hp("attn.z", a)  # [B, T, Hq, D]
        return hp("attn.out", self.out(a.reshape(B, T, Hq * D)))


class MLPBlock(nn.Module):
    """RMSNorm, router (linear with bias), top-k, softmax over the k, clamped-SwiGLU experts, weighted sum."""

    def __init__(self, config: ModelConfig, layer: int, w: Mapping[str, Tensor]):
        super().__init__()
        self.layer = layer
        self.k = config.experts_per_token
        self.limit = config.swiglu_limit
        self.norm = RMSNorm(w["norm.scale"])
        self.gate = Linear(w["gate.weight"], w["gate.bias"])
        self.experts = Experts(w["mlp1_weight"], w["mlp1_bias"], w["mlp2_weight"], w["mlp2_bias"])

    def forward(self, x: Tensor, ctx: "_Step") -> Tensor:
        """x [B, T, H] -> MoE output [B, T, H] (not yet added to the residual)."""
        hp = ctx.hook_prefix(f"blocks.{self.layer}.")
        B, T, H = x.shape
        t = hp("moe.in", self.norm(x))
        logits = hp("moe.router_logits", self.gate(t))  # [B, T, E]
        idx, weights = ctx.backend.router(logits, self.k)
        new_idx = hp("moe.expert_idx", idx)
        if new_idx is not idx:  # new picks: weights = softmax of the router logits at the new picks
            if new_idx.min() < 0 or new_idx.max() >= self.experts.num_experts:
                raise ValueError(f"blocks.{self.layer}.moe.expert_idx replacement has expert ids outside "
                                 f"0..{self.experts.num_experts - 1}")
            idx = new_idx
            weights = torch.softmax(logits.float().gather(-1, idx), dim=-1)
        weights = hp("moe.expert_weights", weights)
        args = (t.reshape(B * T, H), idx.reshape(B * T, -1), weights.reshape(B * T, -1), self.experts, self.limit)
        if ctx.run is not None and any(ctx.run.wants(f"blocks.{self.layer}.{p}") for p in MOE_PER_PICK):
            def per_pick(name: str, rows: Tensor) -> Tensor:  # rows [B*T, k, X] <-> the hook point's [B, T, k, X]
                shown = rows.view(B, T, *rows.shape[1:])
                new = hp(f"moe.{name}", shown)
                return rows if new is shown and not shown.requires_grad else new.flatten(0, 1)

            y = moe_experts(*args, hook=per_pick)
        else:
            y = ctx.backend.experts(*args)
        return hp("moe.out", y.view(B, T, H))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int, w: Mapping[str, Tensor]):
        super().__init__()
        self.layer = layer
        self.attn = AttentionBlock(config, layer, {k[5:]: v for k, v in w.items() if k.startswith("attn.")})
        self.mlp = MLPBlock(config, layer, {k[4:]: v for k, v in w.items() if k.startswith("mlp.")})

    def forward(self, x: Tensor, ctx: "_Step") -> Tensor:
        hp = ctx.hook_prefix(f"blocks.{self.layer}.")
        x = hp("resid_mid", x + self.attn(x, ctx))
        return hp("resid_post", x + self.mlp(x, ctx))


class _Step:
    """What every block needs for one forward call: positions, RoPE tables, cache, hooks, backend.

    ``q_pos`` / ``k_pos`` [B or 1, T]: the new tokens' positions as queries and as keys (-1 at padding).
    ``col``: a device-side column (0-dim tensor) for a static decode step (``Model.decode_step``); then the
    cache is written at that column and no host-side number is used.
    """

    def __init__(self, model: "Model", q_pos: Tensor, k_pos: Tensor, plain: bool, cache: KVCache | None,
                 run: HookRun | None, col: Tensor | None = None):
        self.q_pos, self.k_pos, self.plain, self.col = q_pos, k_pos, plain, col
        self.cache, self.run, self.backend = cache, run, model.backend
        self.start = cache.length if cache is not None else 0
        self.cos, self.sin = rope_cos_sin(q_pos, model.inv_freq, model.concentration)

    def keys(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Positions]:
        """The keys and values the new queries attend to (the cache's, with these written in) and where they sit."""
        if self.cache is None:
            return k, v, Positions(self.q_pos, self.k_pos, 0, self.plain)
        lc = self.cache.layers[layer]
        if self.col is not None:
            k, v, kp = lc.write_at(k, v, self.k_pos, self.col)
            return k, v, Positions(self.q_pos, kp, None, False)
        k, v, kp, offset = lc.update(k, v, self.k_pos, self.start)
        return k, v, Positions(self.q_pos, kp, offset, self.plain and offset is not None)

    def hook_prefix(self, prefix: str) -> Callable[[str, Tensor], Tensor]:
        if self.run is None:
            return _identity
        run = self.run
        return lambda name, x: run.point(prefix + name, x)


def _identity(name: str, x: Tensor) -> Tensor:
    return x


class Model(nn.Module):
    """gpt-oss: embedding, blocks of (attention, MoE), final RMSNorm, unembedding.

    ``model(tokens)``: LongTensor [T] or [B, T] -> logits [T, V] or [B, T, V] (in ``model.dtype``).
    ``run_with_trace`` / ``run_with_hooks`` expose the hook points listed in the module docstring.
    Parameter names follow the checkpoint's canonical names (``block.0.attn.qkv.weight``, ...).
    """

    def __init__(self, config: ModelConfig, weights: Mapping[str, Tensor | MXFP4Tensor], *,
                 dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu", backend="torch"):
        super().__init__()
        self.config = config
        self.dtype = dtype
        self.backend = get_backend(backend)
        dev = torch.device(device)

        def get(name: str):
            w = weights[name]
            if isinstance(w, MXFP4Tensor):
                return w.to(dev)
            if name.endswith(("mlp1_weight", "mlp2_weight")):
                return w.to(dev)  # dense experts stay in their stored dtype; converted per use
            return w.to(device=dev, dtype=dtype)

        self.embedding = _param(get("embedding.weight"))
        self.block = nn.ModuleList()
        for i in progress(range(config.num_hidden_layers), desc="loading", unit="block"):
            prefix = f"block.{i}."
            names = [n for n in weights if n.startswith(prefix)]
            self.block.append(Block(config, i, {n[len(prefix):]: get(n) for n in names}))
        self.norm = RMSNorm(get("norm.scale"))
        self.unembedding = _param(get("unembedding.weight"))
        inv_freq, self.concentration = yarn(config)
        self.register_buffer("inv_freq", inv_freq.to(dev), persistent=False)
        self._hook_names = hook_names(config.num_hidden_layers)

    # ---- public API --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.embedding.device

    def hook_names(self) -> list[str]:
        """Every hook point name, in forward order."""
        return list(self._hook_names)

    def canonical_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters under the checkpoint's canonical names (``embedding.weight``, ``block.0.mlp.mlp1_weight``,
        ...): what training updates and what a checkpoint stores (packed MXFP4 experts are buffers, not here)."""
        rename = {"embedding": "embedding.weight", "unembedding": "unembedding.weight"}
        return {rename.get(n, n.replace(".mlp.experts.", ".mlp.")): p for n, p in self.named_parameters()}

    def new_cache(self, batch: int = 1, *, max_len: int | None = None) -> KVCache:
        """An empty KV cache for ``batch`` sequences, allocated now on the model's device. ``max_len``: room for
        this many columns, fixed (needed for CUDA-graph decode); None: grows by doubling as needed. Keys and
        values are held in the attention's compute dtype (fp32 on a CPU: the model's bf16 values exactly,
        not converted again at every step)."""
        return KVCache(self.config, batch, max_len=max_len, dtype=compute_dtype(self.dtype, self.device),
                       device=self.device)

    def forward(self, tokens, cache: KVCache | None = None, *, last_only: bool = False,
                attention_mask=None) -> Tensor:
        """tokens [T] or [B, T] -> logits [T, V] / [B, T, V]. With ``cache`` the tokens continue the cached
        sequences and the cache is extended. ``last_only`` computes logits for the last position only
        ([1, V] / [B, 1, V]). ``attention_mask`` [B, T] (1 = token, 0 = padding; use left padding for
        generation): padding is never attended to, and each sequence's positions start at 0 at its first
        token, so each row's logits at its tokens equal those of that sequence run alone (rows at padding
        hold meaningless values). With a cache the mask covers the new tokens only."""
        return self._forward(tokens, cache=cache, run=None, last_only=last_only, attention_mask=attention_mask)

    def run_with_trace(self, tokens, names: Names = None, *, hooks=None, cache: KVCache | None = None,
                       last_only: bool = False, attention_mask=None, grad_of: Callable[[Tensor], Tensor] | None = None,
                       backward_hooks=None) -> tuple[Tensor, "Trace"]:
        """(logits, trace): ``trace[name]`` holds the activation at each hook point ``names`` selects
        (None = all; names, globs, or a predicate). Only those are kept. ``hooks`` may be given too.
        ``attention_mask`` as in ``forward`` (traced rows at padding hold meaningless values).

        ``grad_of(logits) -> scalar`` (e.g. a logit difference or a loss) also computes, in one backward
        pass, the gradient of that scalar with respect to every kept activation: ``trace.grads[name]``
        (same shape as ``trace[name]``; ``trace.metric`` is the scalar). Points whose value does not feed
        forward (``attn.sink_prob``; integer points) get none. ``backward_hooks`` ({name: fn(grad, name) ->
        replacement or None}) rewrite the gradient flowing back through a point. Logits come back detached.
        """
        from .trace import Trace

        tokens_t, batched = self._as_batch(tokens)
        grad = grad_of is not None
        run = HookRun(self._hook_names, hooks=hooks, keep=names, batched=batched, grad=grad,
                      backward_hooks=backward_hooks)
        with torch.enable_grad() if grad else contextlib.nullcontext():
            logits = self._forward(tokens_t, cache=cache, run=run, last_only=last_only, batched=batched,
                                   attention_mask=attention_mask)
            trace = Trace(run.store, config=self.config, tokens=tokens_t if batched else tokens_t[0])
            if not grad:
                return logits, trace
            metric = grad_of(logits)
            if not isinstance(metric, Tensor) or metric.numel() != 1:
                raise ValueError(f"grad_of must return a scalar tensor, got {type(metric).__name__} "
                                 f"{list(getattr(metric, 'shape', []))}")
            inputs = {n: t for n, t in run.grad_inputs.items() if n in run.store}
            grads = torch.autograd.grad(metric, list(inputs.values()), allow_unused=True) if inputs else ()
        trace.metric = float(metric.detach())
        trace.grads = {n: (g if batched else g[0]).detach() for n, g in zip(inputs, grads) if g is not None}
        return logits.detach(), trace

    def run_with_hooks(self, tokens, hooks: Mapping[str, HookFn | Sequence[HookFn]], *,
                       cache: KVCache | None = None, last_only: bool = False, attention_mask=None,
                       backward_hooks=None) -> Tensor:
        """Logits with ``hooks = {name or glob: fn(tensor, name) -> replacement or None}`` applied.

        Replacing ``blocks.i.moe.expert_idx`` re-derives the weights as the softmax of the router logits
        at the new picks; replacing ``expert_weights`` uses them as given; replacing ``attn.probs`` changes
        what multiplies V. Replacements must keep the shape (expert_idx may change the number of picks).
        ``attention_mask`` as in ``forward``. ``backward_hooks`` ({name: fn(grad, name) -> replacement or
        None}) act when a backward pass runs through the returned logits (the graph is recorded for them).
        """
        tokens_t, batched = self._as_batch(tokens)
        run = HookRun(self._hook_names, hooks=hooks, batched=batched, backward_hooks=backward_hooks)
        return self._forward(tokens_t, cache=cache, run=run, last_only=last_only, batched=batched,
                             attention_mask=attention_mask)

    # ---- the forward pass --------------------------------------------------------------------
    def _as_batch(self, tokens) -> tuple[Tensor, bool]:
        if not isinstance(tokens, torch.Tensor):
            tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.dim() not in (1, 2) or tokens.shape[-1] == 0:
            raise ValueError(f"tokens must be a non-empty LongTensor [T] or [B, T], got shape {list(tokens.shape)}")
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be integer ids, got dtype {tokens.dtype}")
        V = self.config.vocab_size
        bad = (tokens < 0) | (tokens >= V)
        if bad.any():
            where = bad.nonzero()[0].tolist()
            raise ValueError(f"token id {int(tokens[tuple(where)])} at position {where} is outside the "
                             f"vocabulary 0..{V - 1}")
        batched = tokens.dim() == 2
        return (tokens if batched else tokens[None]).to(self.device, torch.long), batched

    def final_hidden(self, tokens, hooks: Mapping[str, HookFn | Sequence[HookFn]] | None = None) -> Tensor:
        """The final RMSNorm's output [T, H] / [B, T, H]: the forward pass without the unembedding (a trainer
        that computes logits over a subset of rows, or only at some positions, starts from here). ``hooks`` as
        in ``run_with_hooks``."""
        tokens_t, batched = self._as_batch(tokens)
        run = HookRun(self._hook_names, hooks=hooks, batched=batched) if hooks else None
        return self._forward(tokens_t, cache=None, run=run, last_only=False, batched=batched, unembed=False)

    def _check_mask(self, attention_mask, shape: tuple[int, int], batched: bool) -> Tensor | None:
        if attention_mask is None:
            return None
        m = torch.as_tensor(attention_mask, device=self.device)
        m = m if batched or m.dim() != 1 else m[None]
        if tuple(m.shape) != shape:
            raise ValueError(f"attention_mask has shape {list(m.shape)}, expected {list(shape)} (one entry per "
                             "new token: 1 = token, 0 = padding)")
        if m.dtype != torch.bool and ((m != 0) & (m != 1)).any():
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
        m = m.bool()
        starts = m[:, :1].long().sum(1) + (m[:, 1:] & ~m[:, :-1]).sum(1)  # runs of tokens per row
        if (starts > 1).any():
            row = int((starts > 1).nonzero()[0])
            raise ValueError(f"attention_mask row {row} has padding between tokens; a sequence's tokens must be "
                             "one run (padding before them, left padding, or after them)")
        return m

    def _forward(self, tokens, *, cache: KVCache | None, run: HookRun | None, last_only: bool,
                 batched: bool | None = None, attention_mask=None, unembed: bool = True) -> Tensor:
        if batched is None:
            tokens, batched = self._as_batch(tokens)
        B, T = tokens.shape
        mask = self._check_mask(attention_mask, (B, T), batched)
        if cache is not None and cache.batch != B:
            raise ValueError(f"cache was made for batch {cache.batch}, tokens have batch {B}")
        if cache is not None and run is None and T > _PREFILL_CHUNK:  # bounded memory: chunks through the cache
            parts = []
            for a in range(0, T, _PREFILL_CHUNK):
                last = a + _PREFILL_CHUNK >= T  # with last_only, earlier chunks only fill the cache (no logits)
                parts.append(self._forward(tokens[:, a:a + _PREFILL_CHUNK], cache=cache, run=None, batched=True,
                                           last_only=last_only, unembed=unembed and (last or not last_only),
                                           attention_mask=None if mask is None else mask[:, a:a + _PREFILL_CHUNK]))
            logits = parts[-1] if last_only else torch.cat(parts, 1)
            return logits if batched else logits[0]
        if cache is not None:
            q_pos, k_pos, plain = cache.positions(T, mask)
        else:
            q_pos, k_pos, plain = column_positions(T, mask, None, 0, self.device)
        logits = self._run(tokens, _Step(self, q_pos, k_pos, plain, cache, run), last_only, unembed)
        if cache is not None:
            cache.advance(T)
        return logits if batched else logits[0]

    def decode_step(self, tokens: Tensor, cache: KVCache, run: HookRun | None = None) -> Tensor:
        """One token per sequence through a preallocated cache, reading no host-side number: tokens [B, 1]
        (on the model's device, not validated) -> logits [B, 1, V]. Positions come from ``cache.next_pos``
        and the slot from ``cache.col``, both advanced on the device, so a CUDA graph can capture this call
        and replay it per token (``workbench.decode``). The caller keeps ``cache.length`` in step and makes
        sure a full layer has room (``cache.length < cache.max_len``)."""
        pos = cache.next_pos[:, None]
        logits = self._run(tokens, _Step(self, pos, pos, False, cache, run, col=cache.col), last_only=True)
        cache.next_pos += 1
        cache.col += 1
        return logits

    def _run(self, tokens: Tensor, ctx: _Step, last_only: bool, unembed: bool = True) -> Tensor:
        """tokens [B, T] -> logits [B, T or 1, V] through every block (``unembed=False``: final_norm [B, T, H])."""
        hp = ctx.hook_prefix("")
        x = hp("embed", self.embedding[tokens])  # [B, T, H]
        T = tokens.shape[1]
        blocks = self.block if T < _PROGRESS_MIN_TOKENS else progress(self.block, desc=f"{T} tokens", unit="block")
        for block in blocks:
            x = block(x, ctx)
        x = hp("final_norm", self.norm(x))
        if not unembed:
            return x
        if last_only:
            x = x[:, -1:]
        return hp("logits", linear(x, self.unembedding))

    def extra_repr(self) -> str:
        c = self.config
        moe = "MXFP4" if self.block[0].mlp.experts.is_mxfp4 else "dense"
        return (f"layers={c.num_hidden_layers}, hidden={c.hidden_size}, heads={c.num_attention_heads}/"
                f"{c.num_key_value_heads}x{c.head_dim}, experts={c.num_experts} top-{c.experts_per_token} ({moe}), "
                f"vocab={c.vocab_size}, window={c.sliding_window}, dtype={self.dtype}, "
                f"backend={getattr(self.backend, 'name', type(self.backend).__name__)}")


_DTYPES = {None: torch.bfloat16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32,
           "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16}


def load_model(path: str | Path | Checkpoint, *, device: str | torch.device = "cpu", dtype=None,
               backend="torch") -> Model:
    """Load a gpt-oss checkpoint (original or Hugging Face layout, MXFP4 or dense experts).

    ``dtype``: bf16 (default, as the reference) or fp32 (also accepts "bf16"/"fp32"). Expert weights stay
    as stored (MXFP4 packed) and are dequantized per step, only for the experts a batch picks.
    """
    if isinstance(dtype, str) or dtype is None:
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use torch.bfloat16, torch.float32 or 'bf16'/'fp32'")
        dtype = _DTYPES[dtype]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
    backend_obj = get_backend(backend)  # fail fast, before reading weights
    ckpt = path if isinstance(path, Checkpoint) else open_checkpoint(path)
    with torch.no_grad():
        model = Model(ckpt.config, ckpt, dtype=dtype, device=device, backend=backend_obj)
    model.checkpoint_path = ckpt.path
    return model.eval()
