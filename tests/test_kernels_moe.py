"""MXFP4 MoE kernel vs the torch reference vs a naive float64 oracle with its own E2M1 decoding."""

from __future__ import annotations

import math

import pytest
import torch

from _kernels_interp import interpret_env, load_interpreted  # noqa: F401 (fixture)
from workbench.mxfp4 import quantize

K = load_interpreted()
pytestmark = pytest.mark.usefixtures("interpret_env")

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]  # from DESIGN.md


def naive_unpack(blocks, scales):
    """[..., G, 16] bytes + [..., G] scales -> float64 [..., G*32]; low nibble = even element."""
    lut = torch.tensor(E2M1, dtype=torch.float64)
    b = blocks.long()
    pairs = torch.stack([lut[b & 15], lut[b >> 4]], dim=-1)  # [..., G, 16, 2]
    vals = pairs.flatten(-2) * torch.pow(2.0, scales.double() - 127)[..., None]
    return vals.flatten(-2)


def naive_moe(x, idx, wts, b1, s1, bias1, b2, s2, bias2, limit):
    T, H = x.shape
    y = torch.zeros(T, H, dtype=torch.float64)
    for t in range(T):
        for slot in range(idx.shape[1]):
            e = int(idx[t, slot])
            h = naive_unpack(b1[e], s1[e]) @ x[t].double() + bias1[e].double()
            gate, up = h[0::2].clamp(max=limit), h[1::2].clamp(-limit, limit)
            act = gate / (1 + torch.exp(-1.702 * gate)) * (up + 1)
            y[t] += float(wts[t, slot]) * (naive_unpack(b2[e], s2[e]) @ act + bias2[e].double())
    return y


def make(T, E, H, I, k, dtype=torch.float32, seed=0, w_scale=0.5):
    g = torch.Generator().manual_seed(seed)
    b1, s1 = quantize(torch.randn(E, 2 * I, H, generator=g) * w_scale)
    b2, s2 = quantize(torch.randn(E, H, I, generator=g) * w_scale / 4)
    logits = torch.randn(T, E, generator=g)
    vals, idx = logits.topk(k)
    x = torch.randn(T, H, generator=g)
    return (x.to(dtype), idx, vals.softmax(-1).to(dtype), b1, s1, torch.randn(E, 2 * I, generator=g).to(dtype),
            b2, s2, torch.randn(E, H, generator=g).to(dtype))


def test_reference_matches_naive_and_hits_the_clamp():
    args = make(T=5, E=4, H=64, I=32, k=3)
    want = naive_moe(*args, 7.0)
    torch.testing.assert_close(K.moe_torch(*args, 7.0).double(), want, atol=1e-4, rtol=1e-5)
    x, idx, _, b1, s1, bias1 = args[:6]
    h = x.double() @ naive_unpack(b1[idx[0, 0]], s1[idx[0, 0]]).T + bias1[idx[0, 0]].double()
    assert (h[:, 0::2] > 7).any() and (h[:, 1::2].abs() > 7).any()  # both clamps matter in these cases
    assert not torch.allclose(K.moe_torch(*args, 100.0), K.moe_torch(*args, 7.0))


CASES = [  # T, E, H, I, k, grouped
    (1, 4, 96, 64, 1, False),   # decode, top-1
    (1, 6, 96, 64, 4, False),   # decode, top-4
    (3, 5, 64, 96, 3, False),   # a few tokens
    (9, 5, 96, 64, 2, True),    # grouped, ragged expert runs
    (20, 5, 64, 32, 4, True),   # grouped, some experts need two 16-row tiles
    (7, 8, 64, 32, 2, None),    # automatic choice (decode), an expert picked by no token
]


@pytest.mark.parametrize("T,E,H,I,k,grouped", CASES)
def test_kernel_matches_reference(T, E, H, I, k, grouped):
    args = make(T, E, H, I, k, seed=T * 7 + E)
    # block_k=64 < H: two reduction steps, the last partly masked when H or I is 96
    y = K.moe(*args, 7.0, grouped=grouped, block_m=16, block_n=32, block_k=64, block_n2=32, block_k2=64)
    want = K.moe_torch(*args, 7.0)
    assert y.shape == (T, H) and y.dtype == torch.float32
    torch.testing.assert_close(y, want, atol=2e-4 * want.abs().max().item(), rtol=1e-4)


@pytest.mark.parametrize("grouped", [False, True])
def test_kernel_bf16(grouped):
    args = make(6, 4, 64, 64, 2, dtype=torch.bfloat16, seed=3)
    y = K.moe(*args, 7.0, grouped=grouped, block_m=16, block_n=32, block_k=64, block_n2=32, block_k2=64)
    want = K.moe_torch(*args, 7.0)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), want.float(), atol=2e-2 * want.float().abs().max().item(), rtol=2e-2)


def test_tile_table_covers_every_pair_once():
    from workbench.kernels.moe import _tile_table

    idx = torch.tensor([3, 0, 3, 3, 1, 3, 0, 3, 3, 3])
    order, te, r0, r1 = _tile_table(idx, E=5, block_m=3)
    assert te.numel() == math.ceil(10 / 3) + 5
    rows = [r for t in range(te.numel()) for r in range(int(r0[t]), int(r1[t]))]
    assert sorted(rows) == list(range(10))  # each sorted position in exactly one tile
    for t in range(te.numel()):
        assert 0 <= r1[t] - r0[t] <= 3
        assert all(int(idx[order[r]]) == int(te[t]) for r in range(int(r0[t]), int(r1[t])))


def test_bad_shapes_name_the_tensor():
    args = list(make(2, 3, 64, 32, 2))
    args[4] = args[4][:, :, :1]  # mlp1_scales cut short
    with pytest.raises(ValueError, match="mlp1_scales"):
        K.moe(*args, 7.0)
