"""Padded batches (left padding + attention_mask) equal each sequence run alone: forward, cache, traces, hooks.

The oracle is the model itself on one unpadded sequence at a time (whose logits the transformers parity
tests pin down). Random in-memory models cover GQA ratios 1..4, top-k 1..4 and windows shorter than the
sequences; fp32 everywhere, tolerance 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from workbench.checkpoint import expected_shapes
from workbench.config import ModelConfig
from workbench.interventions import ban_experts, combine, remove_sink
from workbench.model import Model
from workbench.tiny import random_tensor
from workbench.trace import token_axis

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = {  # name: (heads, kv heads, experts, k, window)
    "gqa2-top2-w5": (4, 2, 6, 2, 5),
    "gqa4-top1-w3": (8, 2, 4, 1, 3),
    "gqa1-top3-w7": (3, 3, 5, 3, 7),
    "gqa4-top4-w4": (4, 1, 8, 4, 4),
}
VOCAB = 97


def make_model(name: str) -> Model:
    Hq, Hkv, E, k, W = CONFIGS[name]
    cfg = ModelConfig(num_hidden_layers=3, num_experts=E, experts_per_token=k, vocab_size=VOCAB, hidden_size=64,
                      intermediate_size=32, head_dim=8, num_attention_heads=Hq, num_key_value_heads=Hkv,
                      sliding_window=W, initial_context_length=64, rope_scaling_factor=4.0)
    weights = {n: random_tensor(cfg, n, seed=len(name)) for n in expected_shapes(cfg)}
    return Model(cfg, weights, dtype=torch.float32).eval()


@pytest.fixture(scope="module", params=list(CONFIGS))
def model(request):
    return make_model(request.param)


def left_pad(seqs: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(s) for s in seqs)
    tokens = torch.tensor([[pad] * (T - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (T - len(s)) + [1] * len(s) for s in seqs])
    return tokens, mask


def sequences(lengths, seed=0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


LENGTHS = [(1, 6, 13, 19), (9, 9), (17, 2, 11), (20,)]


@pytest.mark.parametrize("lengths", LENGTHS)
def test_padded_forward_equals_each_sequence_alone(model, lengths):
    seqs = sequences(lengths, seed=sum(lengths))
    tokens, mask = left_pad(seqs)
    logits = model(tokens, attention_mask=mask)
    T = tokens.shape[1]
    for b, s in enumerate(seqs):
        torch.testing.assert_close(logits[b, T - len(s):], model(torch.tensor(s)), rtol=1e-5, atol=1e-5)
    assert torch.isfinite(logits).all()  # rows at padding are meaningless but finite


def test_all_ones_mask_is_no_mask_and_right_padding_works_too(model):
    seqs = sequences((7, 12), seed=3)
    tokens, _ = left_pad([s[:7] for s in seqs] * 1)
    torch.testing.assert_close(model(tokens, attention_mask=torch.ones_like(tokens)), model(tokens), rtol=0, atol=0)
    # any padding pattern works in a forward pass: padding after the tokens (right padding)
    T = 12
    right = torch.tensor([s + [5] * (T - len(s)) for s in (seqs[0], seqs[1])])
    rmask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in (seqs[0], seqs[1])])
    out = model(right, attention_mask=rmask)
    for b, s in enumerate(seqs):
        torch.testing.assert_close(out[b, :len(s)], model(torch.tensor(s)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("schedule", [(1, 1, 1, 1, 1, 1, 1, 1), (3, 1, 4, 1), (9,)])
def test_padded_prefill_then_cached_decode_equals_each_alone(model, schedule):
    """Left-padded prompts, then tokens appended in chunks: positions continue per sequence, padding is
    never seen, the sliding layers' rings wrap."""
    seqs = sequences((2, 7, 11), seed=11)
    tokens, mask = left_pad(seqs)
    more = sequences((sum(schedule),) * 3, seed=12)
    cache = model.new_cache(3)
    outs = [model(tokens, cache, attention_mask=mask)]
    t = 0
    for T in schedule:
        outs.append(model(torch.tensor([m[t:t + T] for m in more]), cache))
        t += T
    for b, s in enumerate(seqs):
        got = torch.cat([outs[0][b, tokens.shape[1] - len(s):]] + [o[b] for o in outs[1:]])
        torch.testing.assert_close(got, model(torch.tensor(s + more[b])), rtol=1e-5, atol=1e-5)


def test_cache_accepts_more_left_padding_but_not_padding_after_tokens(model):
    cache = model.new_cache(2)
    model(torch.tensor([[1, 2], [3, 4]]), cache, attention_mask=torch.tensor([[1, 1], [0, 0]]))
    model(torch.tensor([[1, 2], [3, 4]]), cache, attention_mask=torch.tensor([[1, 1], [0, 1]]))  # row 1 starts
    with pytest.raises(ValueError, match="row 0.*left padding"):
        model(torch.tensor([[1], [3]]), cache, attention_mask=torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="row 1.*left padding"):
        model(torch.tensor([[1, 1], [3, 3]]), model.new_cache(2), attention_mask=torch.tensor([[1, 1], [1, 0]]))


def _real(name: str, t: torch.Tensor, b: int, pad: int) -> torch.Tensor:
    """Row b of a batched activation, real positions only (and real keys for scores/probs)."""
    x = t[b]
    x = x.narrow(x.dim() + token_axis(name), pad, x.shape[token_axis(name)] - pad)
    if name.endswith(("attn.scores", "attn.probs")):
        x = x[..., pad:]
    return x


def test_padded_traces_and_interventions_equal_each_alone(model):
    seqs = sequences((4, 15, 9), seed=5)
    tokens, mask = left_pad(seqs)
    T = tokens.shape[1]
    E, k = model.config.num_experts, model.config.experts_per_token
    hooks = combine(remove_sink(layers=[0], heads=[1]), ban_experts([0], layers=[2]) if E - 1 >= k else {})
    logits, trace = model.run_with_trace(tokens, hooks=hooks, attention_mask=mask)
    for b, s in enumerate(seqs):
        pad = T - len(s)
        want_logits, want = model.run_with_trace(torch.tensor(s), hooks=hooks)
        torch.testing.assert_close(logits[b, pad:], want_logits, rtol=1e-5, atol=1e-5)
        assert set(trace) == set(want)
        for name in want:
            got = _real(name, trace[name], b, pad)
            if name.endswith("expert_idx"):
                assert torch.equal(got, want[name]), name
            else:
                scale = float(want[name].float().abs().max().clamp_min(1))  # 1e-5 of the activation's scale
                torch.testing.assert_close(got.float(), want[name].float(), rtol=0, atol=1e-5 * scale, msg=name)
        if E - 1 >= k:
            assert 0 not in trace["blocks.2.moe.expert_idx"][b, pad:].flatten().tolist()


def test_sink_prob_without_scores_takes_the_fused_path_and_equals_eager(model):
    """Tracing attn.sink_prob alone needs no T x S probabilities: the fused path returns it, equal to the
    eager path's (which runs when scores or probs are asked for)."""
    seqs = sequences((18, 30), seed=8)
    tokens, mask = left_pad(seqs)
    _, fast = model.run_with_trace(tokens, names="blocks.*.attn.sink_prob", attention_mask=mask)
    _, eager = model.run_with_trace(tokens, names=["blocks.*.attn.sink_prob", "blocks.0.attn.probs"],
                                    attention_mask=mask)
    for name in fast:
        torch.testing.assert_close(fast[name], eager[name], rtol=1e-5, atol=1e-6)
    probs = eager["blocks.0.attn.probs"]
    torch.testing.assert_close(probs.sum(-1) + eager["blocks.0.attn.sink_prob"], torch.ones_like(probs[..., 0]))


def test_mask_errors(model):
    tokens, mask = left_pad(sequences((3, 5)))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(tokens, attention_mask=mask[:, 1:])
    with pytest.raises(ValueError, match="only 0"):
        model(tokens, attention_mask=mask * 2)
    with pytest.raises(ValueError, match="row 1 has padding between tokens"):
        model(tokens, attention_mask=torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 1, 1]]))
