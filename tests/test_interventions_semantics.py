"""Interventions: each checked against an independent way of getting the same model behaviour
(editing weights directly, or a hand-written hook)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from workbench.interventions import (ablate_heads, ban_experts, combine, force_experts, patch, patching_sweep,
                                     remove_sink, scale_sink)



pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 201088, (19,), generator=torch.Generator().manual_seed(2))


def test_force_experts(m32, tokens):
    names = "blocks.*.moe.*"
    _, base = m32.run_with_trace(tokens, names=names)
    _, tr = m32.run_with_trace(tokens, names=names, hooks=force_experts(6, layers=[1], positions=[3, 4, 10]))
    idx = tr["blocks.1.moe.expert_idx"]
    for p in range(tokens.shape[0]):
        if p in (3, 4, 10):
            assert 6 in idx[p].tolist()
            # the other slot is the best remaining router logit; picks sorted by logit
            logits = tr["blocks.1.moe.router_logits"][p]
            others = [e for e in logits.argsort(descending=True).tolist() if e != 6]
            assert sorted(idx[p].tolist()) == sorted([6, others[0]])
            assert logits[idx[p, 0]] >= logits[idx[p, 1]]
        else:
            assert torch.equal(idx[p], base["blocks.1.moe.expert_idx"][p])
    torch.testing.assert_close(tr["blocks.1.moe.expert_weights"],
                               torch.softmax(tr["blocks.1.moe.router_logits"].gather(-1, idx), -1))
    assert torch.equal(tr["blocks.0.moe.expert_idx"], base["blocks.0.moe.expert_idx"])  # other layers untouched
    # all of top-k forced, every layer, every position
    _, tr = m32.run_with_trace(tokens, names=names, hooks=force_experts([2, 5]))
    for i in range(4):
        assert (tr[f"blocks.{i}.moe.expert_idx"].sort(-1).values == torch.tensor([2, 5])).all()
    with pytest.raises(ValueError, match="cannot force 3 experts into top-2"):
        m32.run_with_hooks(tokens, force_experts([1, 2, 3]))
    with pytest.raises(ValueError, match="expert 9 does not exist"):
        m32.run_with_hooks(tokens, force_experts(9))


def test_force_equals_a_hand_written_expert_idx_hook(m32, tokens):
    _, base = m32.run_with_trace(tokens, names="blocks.2.moe.router_logits")
    logits = base["blocks.2.moe.router_logits"]
    scores = logits.clone()
    scores[:, 0] = float("inf")
    picks = scores.topk(2, -1).indices
    out_hand = m32.run_with_hooks(tokens, {"blocks.2.moe.expert_idx": lambda t, n: picks})
    out_force = m32.run_with_hooks(tokens, force_experts(0, layers=2))
    torch.testing.assert_close(out_force, out_hand)


def test_ban_experts(m32, tokens):
    _, base = m32.run_with_trace(tokens, names="blocks.*.moe.expert_idx")
    common = int(base["blocks.3.moe.expert_idx"].flatten().mode().values)
    _, tr = m32.run_with_trace(tokens, names="blocks.*.moe.*", hooks=ban_experts([common], layers=3))
    assert common not in tr["blocks.3.moe.expert_idx"].flatten().tolist()
    logits = tr["blocks.3.moe.router_logits"].clone()
    logits[:, common] = -float("inf")
    assert torch.equal(tr["blocks.3.moe.expert_idx"].sort(-1).values, logits.topk(2, -1).indices.sort(-1).values)
    assert torch.equal(tr["blocks.2.moe.expert_idx"], base["blocks.2.moe.expert_idx"])
    with pytest.raises(ValueError, match="fewer than k=2"):
        m32.run_with_hooks(tokens, ban_experts(list(range(7))))


def _with_sink(model, layer, head, value):
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.block[layer].attn.sinks[head] = value
    return m


def test_remove_sink_equals_sink_logit_minus_infinity(m32, tokens):
    got = m32.run_with_hooks(tokens, remove_sink(layers=[2], heads=[1]))
    want = _with_sink(m32, 2, 1, -float("inf"))(tokens)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, m32(tokens), atol=1e-3)
    _, tr = m32.run_with_trace(tokens, names="blocks.2.attn.sink_prob", hooks=remove_sink(layers=2, heads=1))
    assert tr["blocks.2.attn.sink_prob"][1].abs().max() < 1e-6
    assert tr["blocks.2.attn.sink_prob"][0].min() > 0  # other heads keep theirs


@pytest.mark.parametrize("factor", [0.25, 3.0])
def test_scale_sink_equals_adding_log_factor_to_the_sink_logit(m32, tokens, factor):
    sink = float(m32.block[0].attn.sinks[3])
    got = m32.run_with_hooks(tokens, scale_sink(factor, layers=0, heads=3))
    want = _with_sink(m32, 0, 3, sink + math.log(factor))(tokens)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_scale_sink_all_heads_and_positions(m32, tokens):
    _, base = m32.run_with_trace(tokens, names="blocks.1.attn.sink_prob")
    _, tr = m32.run_with_trace(tokens, names="blocks.1.attn.sink_prob", hooks=scale_sink(2.0, layers=1, positions=[0]))
    p0, p1 = base["blocks.1.attn.sink_prob"], tr["blocks.1.attn.sink_prob"]
    torch.testing.assert_close(p1[:, 0], 2 * p0[:, 0] / (1 + p0[:, 0]))  # s' = f s / (1 - s + f s)
    torch.testing.assert_close(p1[:, 1:], p0[:, 1:])
    with pytest.raises(ValueError, match=">= 0"):
        scale_sink(-1.0)


def test_ablate_head_equals_zeroing_its_out_projection_columns(m32, tokens):
    D = m32.config.head_dim
    got = m32.run_with_hooks(tokens, ablate_heads([2], layers=[1]))
    m = copy.deepcopy(m32)
    with torch.no_grad():
        m.block[1].attn.out.weight[:, 2 * D: 3 * D] = 0
    torch.testing.assert_close(got, m(tokens), rtol=1e-4, atol=1e-4)
    # positions limit it
    _, tr = m32.run_with_trace(tokens, names="blocks.1.attn.probs", hooks=ablate_heads(2, layers=1, positions=[5]))
    probs = tr["blocks.1.attn.probs"]
    assert (probs[2, 5] == 0).all() and probs[2, 6].sum() > 0 and probs[1, 5].sum() > 0


def test_patch_whole_residual_reproduces_the_source_run(m32, tokens):
    corrupt = tokens.flip(0)
    clean_logits, clean = m32.run_with_trace(tokens, names="blocks.*.resid_post")
    out = m32.run_with_hooks(corrupt, patch(clean, "blocks.3.resid_post"))
    torch.testing.assert_close(out, clean_logits)
    # the residual stream at any layer, all positions, carries everything later layers see
    out1 = m32.run_with_hooks(corrupt, patch(clean, "blocks.1.resid_post"))
    torch.testing.assert_close(out1, clean_logits)
    assert not torch.allclose(m32(corrupt), clean_logits)


def test_patch_one_position_is_causal(m32, tokens):
    corrupt = tokens.clone()
    corrupt[4] = 7
    corrupt_logits = m32(corrupt)
    _, clean = m32.run_with_trace(tokens, names="blocks.0.resid_post")
    out = m32.run_with_hooks(corrupt, patch(clean, "blocks.0.resid_post", positions=[8]))
    torch.testing.assert_close(out[:8], corrupt_logits[:8])  # earlier positions cannot see position 8
    assert not torch.allclose(out[8], corrupt_logits[8])


def test_patch_attention_pattern_and_errors(m32, tokens):
    clean_logits, clean = m32.run_with_trace(tokens, names=["blocks.*.attn.q", "blocks.0.attn.sink_prob"])
    # patching q at every layer from the source: the attention patterns now follow the source queries
    out = m32.run_with_hooks(tokens.flip(0), patch(clean, [f"blocks.{i}.attn.q" for i in range(4)], positions=[0, 1]))
    assert out.shape == clean_logits.shape
    with pytest.raises(KeyError, match="source has no 'embed'"):
        patch(clean, "embed")
    with pytest.raises(ValueError, match="cannot patch"):
        m32.run_with_hooks(tokens[:5], patch(clean, "blocks.0.attn.q"))


def test_patching_sweep(m32, tokens):
    corrupt = tokens.clone()
    corrupt[2] = 11
    target = int(m32(tokens)[-1].argmax())

    def metric(logits):
        return float(logits[-1].log_softmax(-1)[target])

    df = patching_sweep(m32, tokens, corrupt, metric, layers=[0, 3], positions=[2, 18])
    assert df.shape == (2, 2) and list(df.index) == [0, 3] and list(df.columns) == [2, 18]
    # patching the last layer's residual at the last position restores the clean metric exactly
    assert df.loc[3, 18] == pytest.approx(df.attrs["clean"], abs=1e-5)
    # each cell is exactly what a hand-made patch gives
    _, clean = m32.run_with_trace(tokens, names="blocks.0.resid_post")
    hand = metric(m32.run_with_hooks(corrupt, patch(clean, "blocks.0.resid_post", positions=[2])))
    assert df.loc[0, 2] == pytest.approx(hand, abs=1e-6)
    assert df.attrs["clean"] != pytest.approx(df.attrs["corrupt"], abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        patching_sweep(m32, tokens, tokens[:3], metric)


def test_combine_and_position_errors(m32, tokens):
    hooks = combine(ban_experts(0, layers=1), ban_experts(1, layers=1), remove_sink(layers=0))
    assert len(hooks["blocks.1.moe.expert_idx"]) == 2
    _, tr = m32.run_with_trace(tokens, names="blocks.1.moe.expert_idx", hooks=hooks)
    assert not set(tr["blocks.1.moe.expert_idx"].flatten().tolist()) & {0, 1}
    with pytest.raises(IndexError, match="position 40 is out of range"):
        m32.run_with_hooks(tokens, force_experts(1, positions=[40]))
    with pytest.raises(IndexError, match="head 9 is out of range"):
        m32.run_with_hooks(tokens, ablate_heads(9))


def test_interventions_work_on_batched_input(m32, tokens):
    batch = torch.stack([tokens, tokens.flip(0)])
    got = m32.run_with_hooks(batch, combine(remove_sink(layers=2, heads=1), ban_experts(3)))
    for b in range(2):
        one = m32.run_with_hooks(batch[b], combine(remove_sink(layers=2, heads=1), ban_experts(3)))
        torch.testing.assert_close(got[b], one, rtol=1e-5, atol=1e-5)
