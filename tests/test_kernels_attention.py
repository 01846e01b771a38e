"""Attention-with-sinks kernel vs the torch reference vs a naive float64 oracle (loops over heads and queries)."""

from __future__ import annotations

import math

import pytest
import torch

from _kernels_interp import interpret_env, load_interpreted  # noqa: F401 (fixture)

K = load_interpreted()
pytestmark = pytest.mark.usefixtures("interpret_env")


def naive_attention(q, k, v, sinks, scale, window, offset):
    """float64, one (head, query) at a time, straight from the formula; returns (out [T,Hq,D], sink_prob [Hq,T])."""
    T, Hq, D = q.shape
    S, Hkv, _ = k.shape
    q, k, v, sinks = q.double(), k.double(), v.double(), sinks.double()
    out = torch.zeros(T, Hq, D, dtype=torch.float64)
    sink_prob = torch.zeros(Hq, T, dtype=torch.float64)
    for h in range(Hq):
        kvh = h // (Hq // Hkv)
        for t in range(T):
            i = offset + t
            keys = [j for j in range(S) if j <= i and (not window or j > i - window)]
            s = [scale * float(q[t, h] @ k[j, kvh]) for j in keys]
            denom = sum(math.exp(x) for x in s) + math.exp(float(sinks[h]))
            for x, j in zip(s, keys):
                out[t, h] += math.exp(x) / denom * v[j, kvh]
            sink_prob[h, t] = math.exp(float(sinks[h])) / denom
    return out, sink_prob


def make(T, S, Hq, Hkv, D, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(T, Hq, D, generator=g).to(dtype)
    k = torch.randn(S, Hkv, D, generator=g).to(dtype)
    v = torch.randn(S, Hkv, D, generator=g).to(dtype)
    sinks = (torch.randn(Hq, generator=g) * 2).to(dtype)
    return q, k, v, sinks


@pytest.mark.parametrize("T,S,offset,Hq,Hkv,window", [(7, 7, 0, 4, 2, None), (3, 12, 9, 4, 1, 4), (2, 9, 3, 2, 2, 50)])
def test_reference_matches_naive(T, S, offset, Hq, Hkv, window):
    q, k, v, sinks = make(T, S, Hq, Hkv, 8)
    out, sp = K.attention_torch(q, k, v, sinks, 0.3, window, offset, return_sink_prob=True)
    want_out, want_sp = naive_attention(q, k, v, sinks, 0.3, window, offset)
    torch.testing.assert_close(out.double(), want_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sp.double(), want_sp, atol=1e-6, rtol=1e-5)


CASES = [  # T, S, offset, Hq, Hkv, D, window, splits; tiles are 16 x 16
    (19, 19, 0, 2, 2, 16, None, 1),     # prefill, no GQA, T not a multiple of the tile
    (21, 21, 0, 4, 2, 16, 5, 1),        # GQA 2, window shorter than the sequence
    (13, 13, 0, 4, 1, 16, 64, 1),       # GQA 4, window longer than the sequence
    (1, 37, 36, 8, 2, 16, None, None),  # decode over a KV cache, automatic split
    (1, 40, 39, 4, 2, 64, 8, 1),        # decode, sliding window, head_dim 64
    (5, 50, 25, 4, 4, 16, 7, 3),        # chunked prefill mid-cache, window; cache longer than used
    (6, 45, 39, 4, 1, 16, None, 3),     # split key range, GQA 4
    (4, 4, 0, 2, 1, 16, 1, 1),          # window 1: each query sees only itself
    (1, 100, 99, 2, 1, 16, 40, 1),      # decode: masked tile, unmasked tiles, masked tile
    (40, 40, 0, 1, 1, 16, 30, 1),       # prefill row tile 2: masked, unmasked, masked key tiles
]


@pytest.mark.parametrize("T,S,offset,Hq,Hkv,D,window,splits", CASES)
def test_kernel_matches_reference(T, S, offset, Hq, Hkv, D, window, splits):
    q, k, v, sinks = make(T, S, Hq, Hkv, D, seed=T + S)
    scale = 1 / math.sqrt(D)
    out, sp = K.attention(q, k, v, sinks, scale, window, offset, return_sink_prob=True,
                          block_m=16, block_n=16, num_splits=splits)
    want_out, want_sp = K.attention_torch(q, k, v, sinks, scale, window, offset, return_sink_prob=True)
    assert out.shape == (T, Hq, D) and out.dtype == q.dtype and sp.shape == (Hq, T)
    torch.testing.assert_close(out, want_out, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(sp, want_sp, atol=2e-6, rtol=1e-4)


def test_kernel_bf16_gqa_strided_q():
    qkv = torch.randn(11, 8 + 2 * 2, 64).to(torch.bfloat16)  # q, k, v slices of one projection, like the model's
    q, k, v = qkv[:, :8], qkv[:, 8:10], qkv[:, 10:12]
    sinks = torch.randn(8).to(torch.bfloat16)
    out = K.attention(q, k, v, sinks, 0.125, 4, 0, block_m=16, block_n=16)
    want = K.attention_torch(q, k, v, sinks, 0.125, 4, 0)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), want.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("splits", [1, 2])
def test_kernel_batch(splits):
    q, k, v, sinks = make(3 * 2, 20 * 2, 4, 2, 16, seed=5)
    q, k, v = q.view(2, 3, 4, 16), k.view(2, 20, 2, 16), v.view(2, 20, 2, 16)
    out, sp = K.attention(q, k, v, sinks, None, 6, 17, return_sink_prob=True, block_m=16, block_n=16,
                          num_splits=splits)
    want, want_sp = K.attention_torch(q, k, v, sinks, None, 6, 17, return_sink_prob=True)
    assert out.shape == (2, 3, 4, 16) and sp.shape == (2, 4, 3)
    torch.testing.assert_close(out, want, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(sp, want_sp, atol=2e-6, rtol=1e-4)


def test_queries_without_visible_keys_give_zero_and_all_sink():
    q, k, v, sinks = make(3, 10, 2, 1, 16)
    out, sp = K.attention(q, k, v, sinks, None, 2, 20, return_sink_prob=True, block_m=16, block_n=16)  # keys < 19
    assert torch.count_nonzero(out) == 0 and torch.equal(sp, torch.ones(2, 3))


def test_bad_shapes():
    q, k, v, sinks = make(2, 4, 3, 2, 16)
    with pytest.raises(ValueError, match="Hq % Hkv"):
        K.attention(q, k, v, sinks)


# ---- explicit positions: padding and ring-buffer (slot-order) keys --------------------------------------

def _scatter_to_slots(k, v, C, seed):
    """Keys of one sequence [S, Hkv, D] put into C >= S slots in a random order, the rest garbage at -1."""
    S = k.shape[0]
    g = torch.Generator().manual_seed(seed)
    slots = torch.randperm(C, generator=g)[:S]
    ks, vs = torch.randn(C, *k.shape[1:], generator=g) * 50, torch.randn(C, *v.shape[1:], generator=g) * 50
    pos = torch.full((C,), -1, dtype=torch.long)
    ks[slots], vs[slots], pos[slots] = k, v, torch.arange(S)
    return ks, vs, pos


@pytest.mark.parametrize("T,S,C,Hq,Hkv,window,splits", [(1, 12, 16, 4, 2, 5, 1), (1, 30, 70, 2, 1, None, 3),
                                                         (3, 20, 20, 4, 4, 8, None), (1, 9, 40, 8, 2, None, 2)])
def test_kernel_keys_in_slot_order_equal_keys_in_order(T, S, C, Hq, Hkv, window, splits):
    """Keys scattered over cache slots (a ring buffer; empty slots hold garbage at position -1), found by
    position only (offset None): the same result as the keys in column order."""
    q, k, v, sinks = make(T, S, Hq, Hkv, 16, seed=S + C)
    want, want_sp = K.attention(q, k, v, sinks, None, window, S - T, return_sink_prob=True, block_m=16, block_n=16)
    ks, vs, kpos = _scatter_to_slots(k, v, C, seed=C)
    qpos = torch.arange(S - T, S)
    for fn, kw in ((K.attention, dict(block_m=16, block_n=16, num_splits=splits)), (K.attention_torch, {})):
        out, sp = fn(q, ks, vs, sinks, None, window, None, q_pos=qpos, k_pos=kpos, return_sink_prob=True, **kw)
        torch.testing.assert_close(out, want, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(sp, want_sp, atol=2e-6, rtol=1e-4)


@pytest.mark.parametrize("window,splits", [(None, 1), (4, 1), (None, 2), (3, 3)])
def test_kernel_left_padding_equals_each_sequence_alone(window, splits):
    """A batch of left-padded sequences (positions from 0 at each one's first token, pads at -1) equals each
    sequence run alone, at its real queries."""
    B, S, Hq, Hkv, D = 3, 11, 4, 2, 16
    pads = [0, 4, 9]
    q, k, v, sinks = make(B * S, B * S, Hq, Hkv, D, seed=7)
    q, k, v = q.view(B, S, Hq, D), k.view(B, S, Hkv, D), v.view(B, S, Hkv, D)
    kpos = torch.stack([torch.cat([torch.full((p,), -1), torch.arange(S - p)]) for p in pads])
    qpos = kpos.clamp_min(0)
    for fn, kw in ((K.attention, dict(block_m=16, block_n=16, num_splits=splits)), (K.attention_torch, {})):
        out, sp = fn(q, k, v, sinks, None, window, 0, q_pos=qpos, k_pos=kpos, return_sink_prob=True, **kw)
        for b, p in enumerate(pads):
            alone, alone_sp = K.attention_torch(q[b, p:], k[b, p:], v[b, p:], sinks, None, window, 0,
                                                return_sink_prob=True)
            torch.testing.assert_close(out[b, p:], alone, atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(sp[b, :, p:], alone_sp, atol=2e-6, rtol=1e-4)
            if p:
                assert torch.isfinite(out[b, :p]).all()


def test_positions_errors():
    q, k, v, sinks = make(2, 4, 2, 2, 16)
    with pytest.raises(ValueError, match="together"):
        K.attention(q, k, v, sinks, None, None, None)
    with pytest.raises(ValueError, match="do not fit"):
        K.attention(q, k, v, sinks, None, None, 0, q_pos=torch.arange(3), k_pos=torch.arange(4))
