"""Router kernel (top-k + softmax over the picks) vs the torch references vs a naive Python oracle."""

from __future__ import annotations

import math

import pytest
import torch

from _kernels_interp import interpret_env, load_interpreted  # noqa: F401 (fixture)

K = load_interpreted()
pytestmark = pytest.mark.usefixtures("interpret_env")


def naive_router(logits: torch.Tensor, k: int):
    """Row by row: experts sorted by (-logit, index), softmax of the first k logits in float64."""
    idx, weights = [], []
    for row in logits.double().tolist():
        pick = sorted(range(len(row)), key=lambda e: (-row[e], e))[:k]
        top = max(row[e] for e in pick)
        ex = [math.exp(row[e] - top) for e in pick]
        idx.append(pick)
        weights.append([v / sum(ex) for v in ex])
    return torch.tensor(idx), torch.tensor(weights, dtype=torch.float64)


@pytest.mark.parametrize("T,E,k", [(1, 4, 1), (5, 32, 4), (37, 33, 3), (6, 7, 2)])
def test_router_matches_naive_and_topk(T, E, k):
    logits = torch.randn(T, E, generator=torch.Generator().manual_seed(T * E + k))  # no ties
    want_idx, want_w = naive_router(logits, k)
    for idx, w in (K.router(logits, k), K.router_torch(logits, k), K.router_stable_torch(logits, k)):
        assert idx.dtype == torch.int64 and idx.shape == (T, k) and w.shape == (T, k)
        assert torch.equal(idx, want_idx)
        torch.testing.assert_close(w.double(), want_w, atol=1e-6, rtol=1e-5)


def test_router_ties_lowest_index_first_bf16():
    g = torch.Generator().manual_seed(1)
    logits = torch.randint(-2, 3, (9, 12), generator=g).to(torch.bfloat16)  # many equal logits
    logits[0] = 1.0  # a row of equal logits
    idx, w = K.router(logits, 4)
    want_idx, want_w = naive_router(logits.float(), 4)
    assert torch.equal(idx, want_idx)
    assert torch.equal(K.router_stable_torch(logits, 4)[0], want_idx)
    torch.testing.assert_close(w.double(), want_w, atol=4e-3, rtol=0)  # one bf16 rounding
    assert w.dtype == torch.bfloat16
    # torch.topk may order ties differently, but it picks the same logit values
    values = torch.topk(logits, 4).values
    torch.testing.assert_close(torch.gather(logits, 1, idx), values)


def test_router_minus_inf_and_strided_input():
    logits = torch.randn(6, 16, generator=torch.Generator().manual_seed(2))[:, :9]  # row stride 16, 9 experts
    logits[2, :] = float("-inf")
    logits[2, 5] = 0.5
    idx, w = K.router(logits, 3)
    want_idx, _ = naive_router(logits, 3)
    assert torch.equal(idx, want_idx)
    assert idx[2].tolist() == [5, 0, 1] and w[2].tolist() == [1.0, 0.0, 0.0]


def test_router_bad_k():
    with pytest.raises(ValueError, match="k=5"):
        K.router(torch.randn(2, 4), 5)
