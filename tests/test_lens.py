"""Lenses and decompositions: parts that sum to the residual and the logits, each part checked against
what removing it does to the model (a hook), and the logit lens against the model's own output."""

from __future__ import annotations

import pytest
import torch

from workbench import lens

from test_hooks import CONFIGS, random_model

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = [",".join(f"{k}={v}" for k, v in o.items()) or "base" for o in CONFIGS]


def scale_tol(x: torch.Tensor) -> float:
    return 1e-4 * max(1.0, float(x.abs().max()))


@pytest.mark.parametrize("overrides", CONFIGS, ids=IDS)
def test_decomposition_sums_to_the_last_residual(overrides):
    for seed in range(2):
        model = random_model(seed=seed, num_hidden_layers=3, **overrides)
        tokens = torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(seed))
        _, tr = model.run_with_trace(tokens, names=lens.NAMES)
        for b in range(2):
            vectors, index = lens.decompose_residual(model, tr, batch=b)
            assert vectors.shape == (len(index), 9, model.config.hidden_size)
            last = tr["blocks.2.resid_post"][b]
            assert (vectors.sum(0) - last).abs().max() <= scale_tol(last)
        vectors, _ = lens.decompose_residual(model, tokens[1], positions=[8, 3])
        torch.testing.assert_close(vectors.sum(0), tr["blocks.2.resid_post"][1, [8, 3]], rtol=1e-4, atol=1e-4)


def test_each_part_is_what_removing_it_takes_away(m32):
    """A head's part = attn.out minus attn.out with that head's z zeroed; an expert's part = moe.out minus
    moe.out with that expert's routing weight zeroed (both through the model's own hooks)."""
    tokens = torch.randint(0, m32.config.vocab_size, (12,), generator=torch.Generator().manual_seed(1))
    _, tr = m32.run_with_trace(tokens, names=lens.NAMES + ["blocks.*.attn.out", "blocks.*.moe.out"])
    vectors, index = lens.decompose_residual(m32, tr)
    row = {key: n for n, key in enumerate(index)}
    layer, head = 2, 3

    def zero_head(z, name):
        z = z.clone()
        z[:, head] = 0
        return z

    _, ab = m32.run_with_trace(tokens, names=[f"blocks.{layer}.attn.out"], hooks={f"blocks.{layer}.attn.z": zero_head})
    torch.testing.assert_close(tr[f"blocks.{layer}.attn.out"] - ab[f"blocks.{layer}.attn.out"],
                               vectors[row[("head", layer, head)]], rtol=1e-4, atol=1e-5)
    expert = int(tr["blocks.1.moe.expert_idx"][5, 0])

    def drop_expert(w, name):
        return torch.where(tr["blocks.1.moe.expert_idx"] == expert, torch.zeros_like(w), w)

    _, ab = m32.run_with_trace(tokens, names=["blocks.1.moe.out"], hooks={"blocks.1.moe.expert_weights": drop_expert})
    torch.testing.assert_close(tr["blocks.1.moe.out"] - ab["blocks.1.moe.out"], vectors[row[("expert", 1, expert)]],
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vectors[row[("attn_bias", 0, -1)]][4], m32.block[0].attn.out.bias)
    torch.testing.assert_close(vectors[0], tr["embed"])


@pytest.mark.parametrize("overrides", CONFIGS, ids=IDS)
def test_direct_logit_attribution_sums_to_the_logits(overrides):
    model = random_model(seed=3, **overrides)
    V, T = model.config.vocab_size, 8
    tokens = torch.randint(0, V, (T,), generator=torch.Generator().manual_seed(2))
    logits, tr = model.run_with_trace(tokens, names=lens.NAMES)
    nxt = torch.randint(0, V, (T,), generator=torch.Generator().manual_seed(4))
    for target, want in ((5, logits[:, 5]), ((7, 11), logits[:, 7] - logits[:, 11]),
                         (nxt, logits.gather(1, nxt[:, None])[:, 0])):
        dla = lens.direct_logit_attribution(model, tr, target)
        assert list(dla.columns) == list(range(T)) and dla.index.names == ["kind", "layer", "unit"]
        sums = torch.tensor(dla.sum().to_numpy(), dtype=torch.float32)
        assert (sums - want).abs().max() <= scale_tol(want), target
        torch.testing.assert_close(torch.tensor(dla.attrs["logit"]), want)
    # by hand, independent of the module: the embedding's part of logit 5 at position 2 with r frozen
    x = tr[f"blocks.{model.config.num_hidden_layers - 1}.resid_post"][2]
    r = torch.sqrt(x.pow(2).mean() + 1e-5)
    by_hand = (tr["embed"][2] / r * model.norm.scale) @ model.unembedding[5]
    dla = lens.direct_logit_attribution(model, tr, 5, positions=[2])
    assert dla.loc[("embed", -1, -1), 2] == pytest.approx(float(by_hand), rel=1e-5, abs=1e-6)
    # experts nobody picked at a position contribute exactly 0
    picked = set(tr["blocks.0.moe.expert_idx"][2].tolist())
    for e in range(model.config.num_experts):
        if e not in picked:
            assert dla.loc[("expert", 0, e), 2] == 0


def test_logit_lens_last_stage_is_the_model_output_and_embed_by_hand(m32):
    tokens = torch.randint(0, m32.config.vocab_size, (6,), generator=torch.Generator().manual_seed(5))
    logits = m32(tokens)
    target = int(logits[3].argmax())
    table = lens.logit_lens(m32, tokens, top=3, target=target)
    assert len(table) == (1 + 2 * 4) * 6 and list(table.stage.unique())[:3] == ["embed", "0.mid", "0.post"]
    last = table[table.stage == "3.post"].set_index("position")
    assert last.loc[3, "top_tokens"][0] == target and last.loc[3, "target_rank"] == 0
    for p in range(6):
        assert last.loc[p, "top_tokens"] == tuple(logits[p].topk(3).indices.tolist())
        assert last.loc[p, "target_logit"] == pytest.approx(float(logits[p, target]), rel=1e-5, abs=1e-5)
        assert last.loc[p, "target_prob"] == pytest.approx(float(torch.softmax(logits[p], -1)[target]), rel=1e-4)
    # the embed stage, by hand: RMSNorm (eps 1e-5) then the unembedding
    e = m32.embedding[tokens[0]]
    by_hand = (e / torch.sqrt(e.pow(2).mean() + 1e-5) * m32.norm.scale) @ m32.unembedding.T
    first = table[(table.stage == "embed") & (table.position == 0)].iloc[0]
    assert first.top_tokens[0] == int(by_hand.argmax())
    assert first.target_rank == int((by_hand > by_hand[target]).sum())
    pair = lens.logit_lens(m32, tokens, positions=[5], target=(1, 2), mid=False)
    assert len(pair) == 5 and "target_prob" not in pair
    assert pair.iloc[-1].target_logit == pytest.approx(float(logits[5, 1] - logits[5, 2]), abs=1e-4)


def test_errors_are_clear(m32):
    tokens = torch.randint(0, m32.config.vocab_size, (2, 4), generator=torch.Generator().manual_seed(6))
    _, tr = m32.run_with_trace(tokens, names=lens.NAMES)
    with pytest.raises(ValueError, match="batch=i"):
        lens.direct_logit_attribution(m32, tr, 3)
    with pytest.raises(IndexError, match="position 9"):
        lens.logit_lens(m32, tr, batch=0, positions=[9])
    with pytest.raises(ValueError, match="4 token ids"):
        lens.direct_logit_attribution(m32, tr, [1, 2], batch=1)
    _, partial = m32.run_with_trace(tokens[0], names=["embed"])
    with pytest.raises(KeyError, match="was not traced"):
        lens.decompose_residual(m32, partial)
