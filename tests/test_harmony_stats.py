"""Harmony labels on traced tokens, and statistics grouped by them, against hand computations."""

from __future__ import annotations

import pytest
import torch

from workbench.harmony import Conversation, encoding
from workbench.harmony_stats import LabelledTrace, compare, summarise, token_labels

pytestmark = pytest.mark.usefixtures("one_thread")


def enc(text: str) -> list[int]:
    return encoding().encode(text, allowed_special="all")


COMPLETION = ("<|channel|>analysis<|message|>Two and two make four.<|end|>"
              "<|start|>assistant<|channel|>final<|message|>4<|return|>")


def question(effort: str) -> Conversation:
    return Conversation.new("Answer briefly.", reasoning_effort=effort, date="2025-08-05").user("What is 2 + 2?")


def test_labels_follow_each_message(m32):
    conv = question("low")
    prompt = conv.render()
    completion = enc(COMPLETION)
    labels = token_labels(prompt + completion, prompt_length=len(prompt), effort="low")
    assert len(labels) == len(prompt) + len(completion)
    # oracle: openai-harmony renders each message alone; the prompt is their concatenation + <|start|>assistant
    pos = 0
    for n, message in enumerate(conv.messages):
        ids = encoding().render(message)
        assert prompt[pos:pos + len(ids)] == ids
        rows = labels.iloc[pos:pos + len(ids)]
        assert set(rows.role) == {message.author.role.value} and set(rows.message) == {n}
        pos += len(ids)
    rest = labels.iloc[pos:]
    assert (rest.part.iloc[:2] == "prompt").all() and (rest.part.iloc[2:] == "completion").all()
    channels = rest.channel.tolist()
    analysis = enc("<|start|>assistant<|channel|>analysis<|message|>Two and two make four.<|end|>")
    assert channels[:len(analysis)] == ["analysis"] * len(analysis)
    assert channels[len(analysis):] == ["final"] * (len(rest) - len(analysis))
    assert set(labels.effort) == {"low"} and set(labels.iloc[:pos].channel) == {"-"}


def entropy(logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(logits.double(), -1)
    return -(p * p.log()).sum(-1)


def test_statistics_by_channel_match_hand_computation(m32):
    run = LabelledTrace.run(m32, question("high"), enc(COMPLETION))
    assert run.name == "high" and "analysis" in repr(run)
    tr, labels = run.trace, run.labels
    final = torch.tensor((labels.channel == "final").to_numpy())
    ent = run.router_entropy()
    assert ent.attrs["tokens"]["final"] == int(final.sum())
    for layer in range(4):
        want = entropy(tr[f"blocks.{layer}.moe.router_logits"])[final].mean()
        assert ent.loc["final", layer] == pytest.approx(float(want), rel=1e-5)
        sink = tr[f"blocks.{layer}.attn.sink_prob"].mean(0)[final].mean()
        assert run.sink_mass().loc["final", layer] == pytest.approx(float(sink), rel=1e-5)
        norm = tr[f"blocks.{layer}.resid_post"].norm(dim=-1)[final].mean()
        assert run.residual_norm().loc["final", layer] == pytest.approx(float(norm), rel=1e-5)
    load = run.expert_load(by=["part", "channel"])
    assert load.sum(axis=1).to_numpy() == pytest.approx(1.0)
    idx = tr["blocks.2.moe.expert_idx"][final]
    for e in range(m32.config.num_experts):
        assert load.loc[("completion", "final", 2), e] == pytest.approx(float((idx == e).sum()) / idx.numel())
    wload = run.expert_load(weighted=True)
    w = tr["blocks.1.moe.expert_weights"][final]
    e0 = int(tr["blocks.1.moe.expert_idx"][final][0, 0])
    want = float(w[tr["blocks.1.moe.expert_idx"][final] == e0].sum() / w.sum())
    assert wload.loc[("final", 1), e0] == pytest.approx(want, rel=1e-5)


def test_efforts_side_by_side(m32):
    low = LabelledTrace.run(m32, question("low"), enc(COMPLETION))
    high = LabelledTrace.run(m32, question("high"), enc(COMPLETION))
    both = summarise([low, high], "sink_mass", by=["effort", "channel"])
    assert {"low", "high"} == set(both.index.get_level_values("effort"))
    diff = compare(low, high, "router_entropy", by="channel")
    assert list(diff.columns.get_level_values(0).unique()) == ["low", "high", "difference"]
    torch.testing.assert_close(torch.tensor(diff["difference"].to_numpy()),
                               torch.tensor((diff["high"] - diff["low"]).to_numpy()))
    loads = compare(low, high, "expert_load", by="channel")
    assert loads["low"].sum(axis=1).to_numpy() == pytest.approx(1.0)
    assert loads["difference"].sum(axis=1).to_numpy() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="both runs are named"):
        compare(low, low, "sink_mass")


def test_errors_name_what_is_missing(m32):
    tokens = enc(COMPLETION)
    _, tr = m32.run_with_trace(torch.tensor(tokens), names=["blocks.*.attn.sink_prob"])
    run = LabelledTrace(tr, token_labels(tokens), name="x")
    with pytest.raises(KeyError, match="blocks.\\*.moe.router_logits"):
        run.router_entropy()
    with pytest.raises(KeyError, match="expert_idx"):
        run.expert_load()
    with pytest.raises(ValueError, match="unknown statistic"):
        summarise([run], "entropy")
    with pytest.raises(KeyError, match="no label column 'chanel'"):
        run.sink_mass(by="chanel")
    with pytest.raises(ValueError, match="labels have 3 rows"):
        LabelledTrace(tr, token_labels(tokens[:3]))
