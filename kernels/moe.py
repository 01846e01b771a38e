"""Mixture-of-experts MLP on packed MXFP4 expert weights, dequantised inside the matmuls.

    moe(x [T, H], expert_idx [T, k], expert_weights [T, k],
        mlp1_blocks [E, 2I, H/32, 16], mlp1_scales [E, 2I, H/32], mlp1_bias [E, 2I],
        mlp2_blocks [E, H, I/32, 16],  mlp2_scales [E, H, I/32],  mlp2_bias [E, H], swiglu_limit) -> y [T, H]

For each token t and slot s, with e = expert_idx[t, s] (W1, W2 the dequantised MXFP4 weights):

    h    = x_t W1[e]^T + b1[e]                          [2I]; gate/up interleaved (even/odd columns)
    gate = min(h[0::2], limit);  up = clamp(h[1::2], -limit, limit)
    act  = gate * sigmoid(1.702 * gate) * (up + 1)      [I]   (rounded to x.dtype)
    y_t += expert_weights[t, s] * (act W2[e]^T + b2[e])

MXFP4 layout (see workbench.mxfp4): byte j of a row holds element 2j in its low nibble and 2j+1 in its high
nibble; each 16 bytes (32 elements) share the scale 2**(scale_byte - 127). The kernels load packed weight
tiles (the matrix-vector path as [rows, blocks, 16] with one scale load per block), build each element's
fp32 bits with integer ops (the scale goes straight into the exponent; see ``_decode``) and feed the
products; dequantised weights
never reach memory. The even and odd elements are two half-width products against x's even and odd
columns, so nothing is interleaved. A scale byte of 0 (2**-127) is read as 1 (2**-126).

Two schedules:
- decode (few tokens; the default when T*k <= 32): one program per (token, slot) and column block runs a
  matrix-vector product on the CUDA cores; no sorting or host work; every picked expert's weights are
  read once per pick; the second kernel sums a token's k experts in registers (loading the k experts'
  tiles together, so k loads are in flight) and writes y directly.
- grouped (prefill): (token, slot) pairs are sorted by expert (argsort, bincount, a tile table built
  on the device: no host sync, so CUDA graphs can capture it); each program takes a tile of up to
  BLOCK_M rows of one expert and a column block, gathers the rows of x and runs tl.dot; the weighted
  second-layer outputs go to a per-pair buffer that is summed over the k slots.
"""

from __future__ import annotations

import torch

from ._common import check, dot, interpreting, next_pow2, tl, triton, upcast_dots

from workbench.mxfp4 import BLOCK, BYTES_PER_BLOCK, dequantize  # the MXFP4 layout facts, nothing else


def swiglu(h: torch.Tensor, limit: float) -> torch.Tensor:
    """h [..., 2I] (gate, up interleaved) -> [..., I]: the clamped SwiGLU of gpt-oss."""
    gate = h[..., 0::2].clamp(max=limit)
    up = h[..., 1::2].clamp(-limit, limit)
    return gate * torch.sigmoid(1.702 * gate) * (up + 1)


def moe_torch(x, expert_idx, expert_weights, mlp1_blocks, mlp1_scales, mlp1_bias, mlp2_blocks, mlp2_scales,
              mlp2_bias, swiglu_limit: float = 7.0) -> torch.Tensor:
    """Reference (same signature as ``moe``): fp32 math, one used expert at a time, dequantised whole.

    Like the kernel, it rounds the activation to x.dtype between the two layers. Returns y [T, H] in x.dtype.
    """
    T, H = x.shape
    xf = x.float()
    y = torch.zeros((T, H), dtype=torch.float32, device=x.device)
    for e in expert_idx.unique().tolist():
        tok, slot = (expert_idx == e).nonzero(as_tuple=True)
        w1 = dequantize(mlp1_blocks[e], mlp1_scales[e], torch.float32)  # [2I, H]
        act = swiglu(xf[tok] @ w1.T + mlp1_bias[e].float(), swiglu_limit).to(x.dtype).float()
        w2 = dequantize(mlp2_blocks[e], mlp2_scales[e], torch.float32)  # [H, I]
        out = act @ w2.T + mlp2_bias[e].float()
        y.index_add_(0, tok, out * expert_weights[tok, slot].float()[:, None])
    return y.to(x.dtype)


# ---- Triton ---------------------------------------------------------------------------------------------

@triton.jit
def _decode(b, sb):
    """Packed bytes b (int32) and scale bits sb = (max(s, 1) - 1) << 23 -> (even, odd) fp32 elements.

    The fp32 bits are built with integer ops, the block scale 2**(s-127) going straight into the exponent:
    for a nibble sign|em (em = 2*exponent + mantissa bit), em >= 2 gives (em << 22) + sb, em == 1 (the
    subnormal 0.5) gives sb, em == 0 gives 0. A scale byte of 0 (2**-127) is read as 1 (2**-126).
    """
    lo = b & 7
    hi = (b >> 4) & 7
    lo = tl.where(lo > 1, (lo << 22) + sb, tl.where(lo == 1, sb, 0)) | ((b & 8) << 28)
    hi = tl.where(hi > 1, (hi << 22) + sb, tl.where(hi == 1, sb, 0)) | ((b & 128) << 24)
    return lo.to(tl.float32, bitcast=True), hi.to(tl.float32, bitcast=True)


@triton.jit
def _x_halves(Rows, row_ok, c0, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, ROW_BYTES: tl.constexpr):
    """Even and odd elements 2j, 2j+1 for byte columns j in [c0, c0 + BLOCK_K/2) of the rows at pointers
    Rows [M]: [1, G, 16] each for BLOCK_M == 1 (G = BLOCK_K / 32 blocks), else [M, BLOCK_K / 2]."""
    if BLOCK_M == 1:
        j = c0 + tl.arange(0, BLOCK_K // 32)[:, None] * 16 + tl.arange(0, 16)[None, :]  # [G, 16]
        m = (row_ok[:, None, None] & (j < ROW_BYTES)[None])
        offs = Rows[:, None, None] + 2 * j[None]
    else:
        j = c0 + tl.arange(0, BLOCK_K // 2)
        m = row_ok[:, None] & (j < ROW_BYTES)[None, :]
        offs = Rows[:, None] + 2 * j[None, :]
    return tl.load(offs, mask=m, other=0.0), tl.load(offs + 1, mask=m, other=0.0)


@triton.jit
def _mac(acc, xe, xo, Wb, Ws, rows, row_ok, c0, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
         BLOCK_K: tl.constexpr, ROW_BYTES: tl.constexpr, UPCAST: tl.constexpr):
    """acc + x . W[rows]^T over byte columns [c0, c0 + BLOCK_K/2) of the MXFP4 matrix (Wb bytes, Ws scales,
    ROW_BYTES bytes a row), with x given as halves from ``_x_halves``. Masked places give 0.
    acc is ``_acc_init``'s: [M, N] for the tensor-core path; for the matrix-vector path (BLOCK_M == 1)
    [N, G, 16] partial products, reduced once at the end by ``_acc_done`` (no shuffles in the loop)."""
    if BLOCK_M == 1:  # matrix-vector on the CUDA cores: tiles [N, G, 16], one scale load per 16 bytes
        g = c0 // 16 + tl.arange(0, BLOCK_K // 32)
        g_ok = g < ROW_BYTES // 16
        j = g[:, None] * 16 + tl.arange(0, 16)[None, :]
        b = tl.load(Wb + rows[:, None, None] * ROW_BYTES + j[None], mask=row_ok[:, None, None] & g_ok[None, :, None],
                    other=0).to(tl.int32)
        s = tl.load(Ws + rows[:, None] * (ROW_BYTES // 16) + g[None, :], mask=row_ok[:, None] & g_ok[None, :], other=1)
        lo, hi = _decode(b, ((tl.maximum(s.to(tl.int32), 1) - 1) << 23)[:, :, None])
        acc += xe.to(tl.float32) * lo + xo.to(tl.float32) * hi
    else:  # tensor cores: tiles [N, BLOCK_K/2] (a scale gathered per byte; amortised over BLOCK_M rows)
        j = c0 + tl.arange(0, BLOCK_K // 2)
        m = row_ok[:, None] & (j < ROW_BYTES)[None, :]
        b = tl.load(Wb + rows[:, None] * ROW_BYTES + j[None, :], mask=m, other=0).to(tl.int32)
        s = tl.load(Ws + rows[:, None] * (ROW_BYTES // 16) + (j // 16)[None, :], mask=m, other=1)
        lo, hi = _decode(b, (tl.maximum(s.to(tl.int32), 1) - 1) << 23)
        acc = dot(xe, tl.trans(lo.to(xe.dtype)), acc, UPCAST)
        acc = dot(xo, tl.trans(hi.to(xo.dtype)), acc, UPCAST)
    return acc


@triton.jit
def _acc_init(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    if BLOCK_M == 1:
        acc = tl.zeros((BLOCK_N, BLOCK_K // 32, 16), tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    return acc


@triton.jit
def _acc_done(acc, BLOCK_M: tl.constexpr):
    """-> [M, N]"""
    if BLOCK_M == 1:
        acc = tl.sum(tl.sum(acc, axis=2), axis=1)[None, :]
    return acc


@triton.jit
def _mlp1_kernel(X, Idx, Order, TileE, TileR0, TileR1, Wb, Ws, Bias, Act, stride_x, K, limit,
                 H: tl.constexpr, I: tl.constexpr, GROUPED: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, UPCAST: tl.constexpr):
    """act[r, n] = swiglu(x[token(r)] W1[e]^T + b1[e])[n] for the rows r of one tile (grouped: sorted
    positions, decode: the pair itself) and a block of BLOCK_N activation columns (2*BLOCK_N rows of W1)."""
    tile = tl.program_id(0)
    if GROUPED:
        e = tl.load(TileE + tile)
        r0 = tl.load(TileR0 + tile)
        r1 = tl.load(TileR1 + tile)
    else:
        e = tl.load(Idx + tile)
        r0 = tile
        r1 = tile + 1
    if r0 >= r1:
        return
    rows = r0 + tl.arange(0, BLOCK_M)
    row_ok = rows < r1
    if GROUPED:
        pair = tl.load(Order + rows, mask=row_ok, other=0)
    else:
        pair = rows
    Xrows = X + (pair // K).to(tl.int64) * stride_x
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < I
    e = e.to(tl.int64)
    W = Wb + e * (2 * I * (H // 2))
    S = Ws + e * (2 * I * (H // 32))
    acc_g = _acc_init(BLOCK_M, BLOCK_N, BLOCK_K)
    acc_u = _acc_init(BLOCK_M, BLOCK_N, BLOCK_K)
    for c0 in range(0, H // 2, BLOCK_K // 2):
        xe, xo = _x_halves(Xrows, row_ok, c0, BLOCK_M, BLOCK_K, H // 2)
        acc_g = _mac(acc_g, xe, xo, W, S, 2 * n, n_ok, c0, BLOCK_M, BLOCK_N, BLOCK_K, H // 2, UPCAST)
        acc_u = _mac(acc_u, xe, xo, W, S, 2 * n + 1, n_ok, c0, BLOCK_M, BLOCK_N, BLOCK_K, H // 2, UPCAST)
    acc_g = _acc_done(acc_g, BLOCK_M)
    acc_u = _acc_done(acc_u, BLOCK_M)
    b_g = tl.load(Bias + e * (2 * I) + 2 * n, mask=n_ok, other=0.0).to(tl.float32)
    b_u = tl.load(Bias + e * (2 * I) + 2 * n + 1, mask=n_ok, other=0.0).to(tl.float32)
    gate = tl.minimum(acc_g + b_g[None, :], limit)
    up = tl.minimum(tl.maximum(acc_u + b_u[None, :], -limit), limit)
    act = gate * tl.sigmoid(1.702 * gate) * (up + 1.0)
    tl.store(Act + rows.to(tl.int64)[:, None] * I + n[None, :], act.to(Act.dtype.element_ty),
             mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _mlp2_grouped_kernel(Act, Order, TileE, TileR0, TileR1, Wt, Wb, Ws, Bias, Ypair,
                         H: tl.constexpr, I: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, UPCAST: tl.constexpr):
    """ypair[pair(r), n] = w[pair(r)] * (act[r] W2[e]^T + b2[e])[n] for the sorted rows r of one tile."""
    tile = tl.program_id(0)
    e = tl.load(TileE + tile)
    r0 = tl.load(TileR0 + tile)
    r1 = tl.load(TileR1 + tile)
    if r0 >= r1:
        return
    rows = r0 + tl.arange(0, BLOCK_M)
    row_ok = rows < r1
    pair = tl.load(Order + rows, mask=row_ok, other=0).to(tl.int64)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < H
    e = e.to(tl.int64)
    W = Wb + e * (H * (I // 2))
    S = Ws + e * (H * (I // 32))
    Arows = Act + rows.to(tl.int64) * I
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for c0 in range(0, I // 2, BLOCK_K // 2):
        ae, ao = _x_halves(Arows, row_ok, c0, BLOCK_M, BLOCK_K, I // 2)
        acc = _mac(acc, ae, ao, W, S, n, n_ok, c0, BLOCK_M, BLOCK_N, BLOCK_K, I // 2, UPCAST)
    bias = tl.load(Bias + e * H + n, mask=n_ok, other=0.0).to(tl.float32)
    wt = tl.load(Wt + pair, mask=row_ok, other=0.0).to(tl.float32)
    y = (acc + bias[None, :]) * wt[:, None]
    tl.store(Ypair + pair[:, None] * H + n[None, :], y, mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _mlp2_token_kernel(Act, Idx, Wt, Wb, Ws, Bias, Y,
                       K: tl.constexpr, H: tl.constexpr, I: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr):
    """y[t, n] = sum_s w[t,s] * (act[t*K+s] W2[e_ts]^T + b2[e_ts])[n]: a token's k experts summed in registers.

    Each step loads all K experts' tiles (K independent loads in flight), the gate weights folded into the
    activations: sum_s w_s (a_s . W_s) = sum_s (w_s a_s) . W_s."""
    t = tl.program_id(0)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < H
    one = tl.zeros((1,), tl.int32)
    acc = _acc_init(1, BLOCK_N, BLOCK_K)
    for c0 in range(0, I // 2, BLOCK_K // 2):
        for s in tl.static_range(K):
            pair = t * K + s + one  # [1]
            e = tl.load(Idx + pair).to(tl.int64)
            wt = tl.load(Wt + pair).to(tl.float32)[:, None, None]
            ae, ao = _x_halves(Act + pair.to(tl.int64) * I, one == 0, c0, 1, BLOCK_K, I // 2)
            acc = _mac(acc, ae.to(tl.float32) * wt, ao.to(tl.float32) * wt, Wb + e * (H * (I // 2)),
                       Ws + e * (H * (I // 32)), n, n_ok, c0, 1, BLOCK_N, BLOCK_K, I // 2, False)
    acc = _acc_done(acc, 1)
    for s in tl.static_range(K):
        pair = t * K + s + one
        e = tl.load(Idx + pair).to(tl.int64)
        bias = tl.load(Bias + e * H + n, mask=n_ok, other=0.0).to(tl.float32)  # [BLOCK_N]
        acc += bias[None, :] * tl.load(Wt + pair).to(tl.float32)[:, None]
    tl.store(Y + t * H + n[None, :], acc.to(Y.dtype.element_ty), mask=n_ok[None, :])


def _check_shapes(x, expert_idx, expert_weights, b1, s1, bias1, b2, s2, bias2):
    T, H = x.shape
    E, two_i = b1.shape[:2]
    I = two_i // 2
    want = {
        "expert_idx": (expert_idx, (T, expert_idx.shape[-1])),
        "expert_weights": (expert_weights, (T, expert_idx.shape[-1])),
        "mlp1_blocks": (b1, (E, 2 * I, H // BLOCK, BYTES_PER_BLOCK)),
        "mlp1_scales": (s1, (E, 2 * I, H // BLOCK)),
        "mlp1_bias": (bias1, (E, 2 * I)),
        "mlp2_blocks": (b2, (E, H, I // BLOCK, BYTES_PER_BLOCK)),
        "mlp2_scales": (s2, (E, H, I // BLOCK)),
        "mlp2_bias": (bias2, (E, H)),
    }
    for name, (t, shape) in want.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"moe: {name} has shape {list(t.shape)}, expected {list(shape)} "
                             f"(from x [T={T}, H={H}] and mlp1_blocks [E={E}, 2I={two_i}, ...])")
    if H % BLOCK or I % BLOCK or two_i % 2:
        raise ValueError(f"moe: H={H} and I={I} must be multiples of {BLOCK}")
    for name, t in (("mlp1_blocks", b1), ("mlp1_scales", s1), ("mlp2_blocks", b2), ("mlp2_scales", s2)):
        if t.dtype != torch.uint8:
            raise ValueError(f"moe: {name} must be uint8 (packed MXFP4), got {t.dtype}")
    return T, H, E, I


def _tile_table(flat_idx: torch.Tensor, E: int, block_m: int):
    """Sort (token, slot) pairs by expert and cut each expert's run into tiles of <= block_m rows.

    Returns order [N] (sorted position -> pair id) and per tile (expert, first row, end row) [n_tiles];
    n_tiles = ceil(N / block_m) + min(E, N) bounds the count, so unused tiles have first == end. All on
    the device: no host synchronisation.
    """
    N = flat_idx.numel()
    order = torch.argsort(flat_idx, stable=True)
    counts = torch.zeros(E, dtype=torch.int64, device=flat_idx.device)
    counts.scatter_add_(0, flat_idx.long(), torch.ones_like(flat_idx, dtype=torch.int64))  # (bincount syncs)
    n_tiles = (counts + block_m - 1) // block_m
    tile_end = torch.cumsum(n_tiles, 0)
    row_begin = torch.cumsum(counts, 0) - counts
    max_tiles = triton.cdiv(N, block_m) + min(E, N)
    tid = torch.arange(max_tiles, device=flat_idx.device)
    te = torch.searchsorted(tile_end, tid, right=True)
    ok = te < E
    tec = te.clamp(max=E - 1)
    r0 = row_begin[tec] + (tid - (tile_end - n_tiles)[tec]) * block_m
    r1 = torch.minimum(r0 + block_m, row_begin[tec] + counts[tec])
    return order, tec, r0, torch.where(ok, r1, r0)


DECODE_TILES = dict(block_n=16, block_k=256, block_n2=16, block_k2=256, num_warps=4, num_stages=None)
GROUPED_TILES = dict(block_n=64, block_k=64, block_n2=64, block_k2=128, num_warps=8, num_stages=3)  # no spills (ptxas)


def moe(x, expert_idx, expert_weights, mlp1_blocks, mlp1_scales, mlp1_bias, mlp2_blocks, mlp2_scales, mlp2_bias,
        swiglu_limit: float = 7.0, *, grouped: bool | None = None, block_m: int | None = None, **tiles) -> torch.Tensor:
    """Triton MoE (see the module docstring). Returns y [T, H] in x.dtype.

    ``grouped``: None picks decode for T*k <= 32, else grouped. ``block_m``: rows per tile (grouped;
    default from the average rows per expert, 16..64). ``tiles`` override DECODE_TILES / GROUPED_TILES:
    ``block_n`` activation columns per program in the first layer, ``block_n2`` output columns in the
    second, ``block_k`` / ``block_k2`` reduction elements per step in each (powers of two >= 32: whole
    MXFP4 blocks), ``num_warps``, ``num_stages``.
    """
    check(_mlp1_kernel, x, expert_idx, mlp1_blocks)
    T, H, E, I = _check_shapes(x, expert_idx, expert_weights, mlp1_blocks, mlp1_scales, mlp1_bias,
                               mlp2_blocks, mlp2_scales, mlp2_bias)
    K = expert_idx.shape[1]
    N = T * K
    if N == 0:
        return torch.zeros_like(x)
    x = x if x.stride(-1) == 1 else x.contiguous()
    flat_idx = expert_idx.reshape(-1).contiguous()
    flat_w = expert_weights.reshape(-1).contiguous()
    b1, s1, bias1 = mlp1_blocks.contiguous(), mlp1_scales.contiguous(), mlp1_bias.contiguous()
    b2, s2, bias2 = mlp2_blocks.contiguous(), mlp2_scales.contiguous(), mlp2_bias.contiguous()
    grouped = N > 32 if grouped is None else grouped
    unknown = set(tiles) - set(DECODE_TILES)
    if unknown:
        raise TypeError(f"moe: unknown tile options {sorted(unknown)}")
    cfg = dict(GROUPED_TILES if grouped else DECODE_TILES)
    if interpreting():  # the interpreter's cost is per operation, not per element: few, large programs
        cfg.update(block_n=min(64, next_pow2(I)), block_n2=min(64, next_pow2(H)),
                   block_k=min(256, max(32, next_pow2(H))), block_k2=min(256, max(32, next_pow2(I))))
    cfg.update({k: v for k, v in tiles.items() if v is not None})
    for name in ("block_k", "block_k2"):
        if cfg[name] < 32 or cfg[name] & (cfg[name] - 1):
            raise ValueError(f"moe: {name}={cfg[name]} must be a power of two >= 32")
    opts = {k: cfg[k] for k in ("num_warps", "num_stages") if cfg[k]}
    act = torch.empty((N, I), dtype=x.dtype, device=x.device)
    if not grouped:
        _mlp1_kernel[(N, triton.cdiv(I, cfg["block_n"]))](
            x, flat_idx, flat_idx, flat_idx, flat_idx, flat_idx, b1, s1, bias1, act, x.stride(0), K,
            float(swiglu_limit), H=H, I=I, GROUPED=False, BLOCK_M=1, BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"],
            UPCAST=False, **opts)
        y = torch.empty_like(x)
        _mlp2_token_kernel[(T, triton.cdiv(H, cfg["block_n2"]))](
            act, flat_idx, flat_w, b2, s2, bias2, y, K=K, H=H, I=I, BLOCK_N=cfg["block_n2"], BLOCK_K=cfg["block_k2"],
            **opts)
        return y
    upcast = upcast_dots(x)
    bm = block_m or max(16, min(64, next_pow2(triton.cdiv(N, E))))
    order, tile_e, tile_r0, tile_r1 = _tile_table(flat_idx, E, bm)
    n_tiles = tile_e.numel()
    _mlp1_kernel[(n_tiles, triton.cdiv(I, cfg["block_n"]))](
        x, flat_idx, order, tile_e, tile_r0, tile_r1, b1, s1, bias1, act, x.stride(0), K, float(swiglu_limit),
        H=H, I=I, GROUPED=True, BLOCK_M=bm, BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"], UPCAST=upcast, **opts)
    ypair = torch.empty((N, H), dtype=torch.float32, device=x.device)
    _mlp2_grouped_kernel[(n_tiles, triton.cdiv(H, cfg["block_n2"]))](
        act, order, tile_e, tile_r0, tile_r1, flat_w, b2, s2, bias2, ypair,
        H=H, I=I, BLOCK_M=bm, BLOCK_N=cfg["block_n2"], BLOCK_K=cfg["block_k2"], UPCAST=upcast, **opts)
    return ypair.view(T, K, H).sum(1).to(x.dtype)
