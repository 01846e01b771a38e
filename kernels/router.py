"""MoE router: top-k of the router logits, then a softmax over the k picked logits only.

    router(logits [T, E], k) -> (expert_idx [T, k] int64, expert_weights [T, k] in logits.dtype)

``expert_idx`` is sorted by logit, largest first; ``expert_weights = softmax(logits[expert_idx])`` row by row.

Ties: the kernel takes equal logits in index order (the lowest expert index first), exactly like
``torch.sort(logits, descending=True, stable=True)[:, :k]``. ``torch.topk`` does not specify an order
among equal values (on the CPU it often returns higher indices first), so with ties the two can differ in
the order of tied experts, and, when a tie straddles the k-th place, in which of the tied experts is
picked; the picked logit values and so the weights agree in any case. ``router_torch`` uses torch.topk
(what the model does); ``router_stable_torch`` gives the kernel's exact order.
NaN logits are not supported.
"""

from __future__ import annotations

import torch

from ._common import check, next_pow2, tl, triton


def router_torch(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: torch.topk (sorted) and a softmax over the k values. logits [T, E] -> ([T, k], [T, k])."""
    values, idx = torch.topk(logits, k, dim=-1, sorted=True)
    return idx, torch.softmax(values.float(), dim=-1).to(logits.dtype)


def router_stable_torch(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference with the kernel's tie order (lowest index first among equal logits)."""
    values, idx = torch.sort(logits, dim=-1, descending=True, stable=True)
    values, idx = values[..., :k], idx[..., :k]
    return idx, torch.softmax(values.float(), dim=-1).to(logits.dtype)


@triton.jit
def _router_kernel(L, Idx, Wt, T, E, stride_l,
                   K: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_E)
    ks = tl.arange(0, BLOCK_K)
    row_ok = rows < T
    x = tl.load(L + rows[:, None] * stride_l + cols[None, :],
                mask=row_ok[:, None] & (cols[None, :] < E), other=0.0).to(tl.float32)
    taken = (cols[None, :] + tl.zeros((BLOCK_T, 1), tl.int32)) >= E  # [BLOCK_T, BLOCK_E]; padding counts as taken
    vals = tl.full((BLOCK_T, BLOCK_K), float("-inf"), tl.float32)
    idx = tl.zeros((BLOCK_T, BLOCK_K), tl.int32)
    for j in tl.static_range(K):
        cand = tl.where(taken, float("-inf"), x)
        best = tl.max(cand, axis=1)
        is_best = (cand == best[:, None]) & (taken == 0)
        pick = tl.min(tl.where(is_best, cols[None, :], BLOCK_E), axis=1)  # lowest index among the maxima
        taken = taken | (cols[None, :] == pick[:, None])
        vals = tl.where(ks[None, :] == j, best[:, None], vals)
        idx = tl.where(ks[None, :] == j, pick[:, None], idx)
    p = tl.exp(vals - tl.max(vals, axis=1)[:, None])  # vals[:, 0] is the max; unused columns give 0
    w = p / tl.sum(p, axis=1)[:, None]
    out = rows[:, None] * K + ks[None, :]
    ok = row_ok[:, None] & (ks[None, :] < K)
    tl.store(Idx + out, idx.to(Idx.dtype.element_ty), mask=ok)
    tl.store(Wt + out, w.to(Wt.dtype.element_ty), mask=ok)


def router(logits: torch.Tensor, k: int, *, weights_dtype: torch.dtype | None = None,
           block_t: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused top-k + softmax. logits [T, E] (any float dtype) -> (idx [T, k] int64, weights [T, k]).

    The softmax is computed in fp32 and stored as ``weights_dtype`` (default logits.dtype)."""
    check(_router_kernel, logits)
    if logits.dim() != 2:
        raise ValueError(f"router logits must be [T, E], got shape {list(logits.shape)}")
    T, E = logits.shape
    if not 1 <= k <= E:
        raise ValueError(f"k={k} must be in 1..E={E}")
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    idx = torch.empty((T, k), dtype=torch.int64, device=logits.device)
    weights = torch.empty((T, k), dtype=weights_dtype or logits.dtype, device=logits.device)
    if T == 0:
        return idx, weights
    block_e = next_pow2(E)
    block_t = block_t or max(1, min(next_pow2(T), 4096 // block_e, 64))
    _router_kernel[(triton.cdiv(T, block_t),)](
        logits, idx, weights, T, E, logits.stride(0),
        K=k, BLOCK_K=next_pow2(k), BLOCK_T=block_t, BLOCK_E=block_e)
    return idx, weights
