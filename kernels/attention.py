"""Attention with per-head sinks, causal or sliding-window masks, GQA, prefill and decode over a KV cache.

    attention(q [T, Hq, D], k [S, Hkv, D], v [S, Hkv, D], sinks [Hq], scale, window=None, offset=0,
              q_pos=None, k_pos=None)
        -> out [T, Hq, D]                       (and sink_prob [Hq, T] with return_sink_prob=True)

Query t sits at absolute position i = offset + t and sees key j iff j <= i, and i - window < j when
``window`` is set (None or 0: full causal). Keys at or beyond S do not exist. With explicit positions
(``q_pos`` [(B,) T], ``k_pos`` [(B,) S], int64; a key at -1 does not exist: padding, an empty cache
slot) query i sees key j iff 0 <= k_pos_j <= q_pos_i and q_pos_i - window < k_pos_j; ``offset`` then
says which key column query 0 sits at when the keys are in column order (used only to skip key tiles
nobody can see), or is None when they are not (a ring buffer): every key tile is then visited, and a
tile whose loaded positions show no visible key is skipped before its keys and values are read.
With s_ij = scale * q_i.k_j (head h reading KV head h // (Hq / Hkv)):

    w_ij = exp(s_ij) / (sum_j' exp(s_ij') + exp(sink_h))        out_i = sum_j w_ij v_j
    sink_prob_hi = exp(sink_h) / (sum_j' exp(s_ij') + exp(sink_h))

The sink is a logit that is neither scaled nor paired with a value.

The kernel is FlashAttention-style: online softmax over key tiles, fp32 accumulators, the sink folded in
as the running maximum's starting value. GQA without copying: the query heads that share a KV head are
packed into the rows of one tile (row r = t * G + g for G = Hq / Hkv), so each program reads its K/V
tiles once for all G heads. Key tiles entirely inside every row's visible range skip the mask. For few
rows over many keys (decode) the key range is split over several programs (flash-decoding) and the
partial results are merged, the sink added once, in torch.
"""

from __future__ import annotations

import math

import torch

from ._common import check, dot, next_pow2, num_sms, tl, triton, upcast_dots

LOG2E = 1.4426950408889634
NO_WINDOW = 1 << 30  # "window" value meaning full causal attention


def attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor, scale: float | None = None,
                    window: int | None = None, offset: int | None = 0, *, q_pos: torch.Tensor | None = None,
                    k_pos: torch.Tensor | None = None, return_sink_prob: bool = False):
    """Reference in fp32 torch ops; same signature and result as ``attention``. Materialises [Hq, T, S]."""
    if q.dim() == 4:  # batch: one sequence at a time
        qp = [None] * q.shape[0] if q_pos is None else q_pos.expand(q.shape[0], q.shape[1])
        kp = [None] * q.shape[0] if k_pos is None else k_pos.expand(q.shape[0], k.shape[1])
        res = [attention_torch(*a, sinks, scale, window, offset, q_pos=p, k_pos=r, return_sink_prob=True)
               for *a, p, r in zip(q, k, v, qp, kp)]
        out, sp = torch.stack([r[0] for r in res]), torch.stack([r[1] for r in res])
        return (out, sp) if return_sink_prob else out
    T, Hq, D = q.shape
    S, Hkv, _ = k.shape
    G = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    qf = q.float().view(T, Hkv, G, D)
    scores = torch.einsum("tkgd,skd->kgts", qf, k.float()).reshape(Hq, T, S) * scale
    if q_pos is None:
        i = offset + torch.arange(T, device=q.device)[:, None]
        j = torch.arange(S, device=q.device)[None, :]
    else:
        i, j = q_pos.reshape(T)[:, None], k_pos.reshape(S)[None, :]
    visible = (j <= i) & (j >= 0)
    if window:
        visible &= j > i - window
    scores = scores.masked_fill(~visible, float("-inf"))
    sink = sinks.float().view(Hq, 1, 1).expand(Hq, T, 1)
    probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)  # [Hq, T, S + 1]
    out = torch.einsum("kgts,skd->tkgd", probs[..., :S].view(Hkv, G, T, S), v.float()).reshape(T, Hq, D)
    out = out.to(q.dtype)
    return (out, probs[..., S]) if return_sink_prob else out


@triton.jit
def _attn_step(acc, m_i, l_i, q, K, V, stride_kt, stride_vt, j, j_ok, visible, scale_log2, d, d_ok,
               MASK: tl.constexpr, UPCAST: tl.constexpr):
    """One key tile of the online softmax (log2 domain)."""
    kt = tl.load(K + j[None, :] * stride_kt + d[:, None], mask=d_ok[:, None] & j_ok[None, :], other=0.0)  # [D, N]
    s = dot(q, kt, tl.zeros((q.shape[0], j.shape[0]), tl.float32), UPCAST) * scale_log2
    if MASK:
        s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    vt = tl.load(V + j[:, None] * stride_vt + d[None, :], mask=j_ok[:, None] & d_ok[None, :], other=0.0)  # [N, D]
    acc = dot(p.to(vt.dtype), vt, acc * alpha[:, None], UPCAST)
    return acc, m_new, l_i


@triton.jit
def _attn_tiles(acc, m_i, l_i, q, K, V, KP, stride_kt, stride_vt, lo, hi, pos, S, window, scale_log2,
                d, d_ok, MASK: tl.constexpr, HAS_POS: tl.constexpr, BLOCK_N: tl.constexpr, UPCAST: tl.constexpr):
    """Online softmax over key tiles starting at lo, lo + BLOCK_N, ... < hi (log2 domain).

    Without HAS_POS key j sits at position j and MASK says whether the tile needs the mask; with HAS_POS
    the key positions are loaded from KP (-1 = no key), every tile is masked by them, and a tile with no
    visible key is skipped before its keys and values are read."""
    for start in range(lo, hi, BLOCK_N):
        j = start + tl.arange(0, BLOCK_N)
        if MASK:
            j_ok = j < S
        else:
            j_ok = j >= 0
        if HAS_POS:
            kp = tl.load(KP + j, mask=j_ok, other=-1)
            visible = (kp[None, :] >= 0) & (kp[None, :] <= pos[:, None]) & (kp[None, :] > pos[:, None] - window)
            if tl.max(tl.max(visible.to(tl.int32), axis=1), axis=0) > 0:
                acc, m_i, l_i = _attn_step(acc, m_i, l_i, q, K, V, stride_kt, stride_vt, j, j_ok, visible,
                                           scale_log2, d, d_ok, True, UPCAST)
        else:
            visible = (j[None, :] <= pos[:, None]) & (j[None, :] > pos[:, None] - window) & j_ok[None, :]
            acc, m_i, l_i = _attn_step(acc, m_i, l_i, q, K, V, stride_kt, stride_vt, j, j_ok, visible,
                                       scale_log2, d, d_ok, MASK, UPCAST)
    return acc, m_i, l_i


@triton.jit
def _attn_kernel(Q, K, V, Sinks, Out, SinkP, Mbuf, Lbuf, Abuf, QP, KP,
                 stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
                 stride_ob, stride_ot, stride_oh, stride_qpb, stride_kpb, B, T, S, offset, window, col_window, chunk,
                 base, scale_log2,
                 G: tl.constexpr, HQ: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr, HAS_POS: tl.constexpr,
                 UPCAST: tl.constexpr):
    pid_m = tl.program_id(0)
    b = tl.program_id(1) // (HQ // G)  # batch entry
    kvh = tl.program_id(1) % (HQ // G)
    sid = tl.program_id(2)
    Q += b.to(tl.int64) * stride_qb
    K += b.to(tl.int64) * stride_kb
    V += b.to(tl.int64) * stride_vb
    Out += b.to(tl.int64) * stride_ob
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # packed (query position, head in group)
    t = rows // G
    h = kvh * G + rows % G
    row_ok = t < T
    if HAS_POS:
        pos = tl.load(QP + b.to(tl.int64) * stride_qpb + t, mask=row_ok, other=0)
        KP += b.to(tl.int64) * stride_kpb
    else:
        pos = offset + t
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q = tl.load(Q + t[:, None] * stride_qt + h[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    sink = tl.load(Sinks + h, mask=row_ok, other=0.0).to(tl.float32) * 1.4426950408889634

    # Key range of this program (by column): rows see [row_lo, row_hi); all rows see [full_lo, full_hi).
    p0 = offset + (pid_m * BLOCK_M) // G
    p1 = offset + tl.minimum((pid_m * BLOCK_M + BLOCK_M - 1) // G, T - 1)
    row_lo = tl.maximum(p0 - col_window + 1, 0)
    row_hi = tl.minimum(p1 + 1, S)
    full_lo = tl.maximum(p1 - col_window + 1, 0)
    full_hi = tl.minimum(p0 + 1, S)
    chunk_lo = base + sid * chunk  # this split's keys: [chunk_lo, chunk_lo + chunk), BLOCK_N-aligned
    lo = tl.maximum(row_lo, chunk_lo)
    hi = tl.minimum(row_hi, chunk_lo + chunk)
    lo_t = (lo // BLOCK_N) * BLOCK_N
    f_lo = tl.minimum(((tl.maximum(full_lo, lo) + BLOCK_N - 1) // BLOCK_N) * BLOCK_N, hi)
    f_hi = tl.maximum((tl.minimum(full_hi, hi) // BLOCK_N) * BLOCK_N, f_lo)

    if SPLIT:
        m_i = tl.full((BLOCK_M,), -1.0e30, tl.float32)
        l_i = tl.zeros((BLOCK_M,), tl.float32)
    else:
        m_i = sink
        l_i = tl.full((BLOCK_M,), 1.0, tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    Kh = K + kvh * stride_kh
    Vh = V + kvh * stride_vh
    # masked tiles before the fully visible ones, the fully visible ones unmasked, masked tiles after
    acc, m_i, l_i = _attn_tiles(acc, m_i, l_i, q, Kh, Vh, KP, stride_kt, stride_vt, lo_t, f_lo, pos, S, window,
                                scale_log2, d, d_ok, True, HAS_POS, BLOCK_N, UPCAST)
    acc, m_i, l_i = _attn_tiles(acc, m_i, l_i, q, Kh, Vh, KP, stride_kt, stride_vt, f_lo, f_hi, pos, S, window,
                                scale_log2, d, d_ok, False, HAS_POS, BLOCK_N, UPCAST)
    acc, m_i, l_i = _attn_tiles(acc, m_i, l_i, q, Kh, Vh, KP, stride_kt, stride_vt, f_hi, hi, pos, S, window,
                                scale_log2, d, d_ok, True, HAS_POS, BLOCK_N, UPCAST)

    if SPLIT:  # partial results, merged in torch: buffers [splits, B, T, HQ(, D)]
        part = ((sid * B + b) * T + t) * HQ + h
        tl.store(Mbuf + part, m_i, mask=row_ok)
        tl.store(Lbuf + part, l_i, mask=row_ok)
        tl.store(Abuf + part[:, None] * HEAD_DIM + d[None, :], acc, mask=row_ok[:, None] & d_ok[None, :])
    else:
        out = acc / l_i[:, None]
        tl.store(Out + t[:, None] * stride_ot + h[:, None] * stride_oh + d[None, :], out.to(Out.dtype.element_ty),
                 mask=row_ok[:, None] & d_ok[None, :])
        tl.store(SinkP + (b * HQ + h) * T + t, tl.exp2(sink - m_i) / l_i, mask=row_ok)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor, scale: float | None = None,
              window: int | None = None, offset: int | None = 0, *, q_pos: torch.Tensor | None = None,
              k_pos: torch.Tensor | None = None, return_sink_prob: bool = False,
              block_m: int | None = None, block_n: int | None = None, num_splits: int | None = None,
              num_warps: int | None = None, num_stages: int | None = None):
    """Triton attention with sinks; see the module docstring. Tile sizes are parameters (tests use small ones).

    q [T, Hq, D], k/v [S, Hkv, D] (last dim contiguous; a leading batch dim B on all three also works),
    sinks [Hq]; scale defaults to 1/sqrt(D); ``offset``: position of q[0] relative to k[0] (the number of
    keys before it). ``q_pos`` / ``k_pos`` (int64 [(B or 1,) T] / [(B or 1,) S], both or neither): explicit
    positions, -1 for a missing key; ``offset`` None then means the keys are in no particular order. Reads
    no device value on the host, so a CUDA graph can capture it. ``num_splits``: split the key range over
    this many programs per row tile (None: chosen from the device's size). Returns out like q, and
    sink_prob [Hq, T] (or [B, Hq, T]) fp32 when ``return_sink_prob``.
    """
    check(_attn_kernel, q, k, v, sinks)
    batched = q.dim() == 4
    if not batched:
        q, k, v = q[None], k[None], v[None]
    B, T, Hq, D = q.shape
    _, S, Hkv, Dk = k.shape
    has_pos = q_pos is not None
    if has_pos != (k_pos is not None) or (offset is None and not has_pos):
        raise ValueError("attention: give q_pos and k_pos together (offset=None needs them)")
    if has_pos:
        q_pos, k_pos = (p.reshape(-1, p.shape[-1]).to(torch.int64) for p in (q_pos, k_pos))
        q_pos, k_pos = (p if p.stride(-1) == 1 else p.contiguous() for p in (q_pos, k_pos))
        if q_pos.shape[-1] != T or k_pos.shape[-1] != S or q_pos.shape[0] not in (1, B) or k_pos.shape[0] not in (1, B):
            raise ValueError(f"attention: q_pos {list(q_pos.shape)} / k_pos {list(k_pos.shape)} do not fit "
                             f"q [B={B}, T={T}] / k [S={S}]")
    if v.shape != k.shape or k.shape[0] != B or Dk != D or Hq % Hkv or sinks.shape != (Hq,):
        raise ValueError(f"attention shapes do not fit: q {list(q.shape)}, k {list(k.shape)}, v {list(v.shape)}, "
                         f"sinks {list(sinks.shape)} (want q [(B,) T,Hq,D], k/v [(B,) S,Hkv,D], Hq % Hkv == 0, "
                         "sinks [Hq])")
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    sinks = sinks.contiguous()
    G = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    win = int(window) if window else NO_WINDOW
    col_win = win
    if offset is None:  # keys in no order: every column may be seen
        offset, col_win = S - 1, NO_WINDOW
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    sink_prob = torch.empty((B, Hq, T), dtype=torch.float32, device=q.device)
    if T > 0 and B > 0:
        rows = T * G
        # 128-row tiles on a GPU; 64 with loaded positions, on 8 warps (128 rows, or 4 warps, spill: ptxas, sm_90)
        block_m = block_m or max(16, min(128 if q.device.type == "cuda" and not has_pos else 64, next_pow2(rows)))
        block_n = block_n or 64
        m_tiles = triton.cdiv(rows, block_m)
        k_lo = max(0, offset - col_win + 1)  # keys anyone can see: [k_lo, k_hi)
        k_hi = min(S, offset + T)
        base = (k_lo // block_n) * block_n
        span_tiles = max(1, triton.cdiv(k_hi - base, block_n))
        if num_splits is None:
            programs = m_tiles * Hkv * B
            num_splits = 1
            if programs < num_sms(q.device) and span_tiles >= 8:
                num_splits = min(span_tiles // 4, triton.cdiv(2 * num_sms(q.device), programs))
        num_splits = max(1, min(int(num_splits), span_tiles))
        chunk = triton.cdiv(span_tiles, num_splits) * block_n
        num_splits = triton.cdiv(span_tiles * block_n, chunk)
        split = num_splits > 1
        if split:
            mbuf = torch.empty((num_splits, B, T, Hq), dtype=torch.float32, device=q.device)
            lbuf = torch.empty_like(mbuf)
            abuf = torch.empty((num_splits, B, T, Hq, D), dtype=torch.float32, device=q.device)
        else:
            chunk, mbuf, lbuf, abuf = NO_WINDOW, sink_prob, sink_prob, sink_prob
        opts = {"num_warps": num_warps or (8 if block_m >= (64 if has_pos else 128) else 4)}  # fewer spill (ptxas)
        if num_stages:
            opts["num_stages"] = num_stages
        qp, kp = (q_pos, k_pos) if has_pos else (sink_prob, sink_prob)  # (unused pointers without positions)
        pos_strides = (q_pos.stride(0) if q_pos.shape[0] > 1 else 0, k_pos.stride(0) if k_pos.shape[0] > 1 else 0) \
            if has_pos else (0, 0)
        _attn_kernel[(m_tiles, B * Hkv, num_splits)](
            q, k, v, sinks, out, sink_prob, mbuf, lbuf, abuf, qp, kp, *q.stride()[:3], *k.stride()[:3],
            *v.stride()[:3], *out.stride()[:3], *pos_strides, B, T, S, offset, win, col_win, chunk, base,
            scale * LOG2E, G=G, HQ=Hq, HEAD_DIM=D, BLOCK_D=next_pow2(D), BLOCK_M=block_m, BLOCK_N=block_n,
            SPLIT=split, HAS_POS=has_pos, UPCAST=upcast_dots(q), **opts)
        if split:  # merge the splits' (max, sum, acc) and add the sink once
            sink2 = (sinks.float() * LOG2E)[None, None, :]  # [1, 1, Hq]
            m = torch.maximum(mbuf.amax(0), sink2)  # [B, T, Hq]
            w = torch.exp2(mbuf - m)  # [splits, B, T, Hq]
            p_sink = torch.exp2(sink2 - m)
            denom = (lbuf * w).sum(0) + p_sink
            out = ((abuf * w[..., None]).sum(0) / denom[..., None]).to(q.dtype)
            sink_prob = (p_sink / denom).transpose(1, 2).contiguous()
    if not batched:
        out, sink_prob = out[0], sink_prob[0]
    return (out, sink_prob) if return_sink_prob else out
