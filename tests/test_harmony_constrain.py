"""Harmony-constrained decoding: a random "model" under the constraint always yields well-formed
Harmony that parse_tokens (and openai-harmony) read without errors."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.harmony import Conversation, encoding, parse_tokens
from workbench.harmony import tokens as T
from workbench.harmony.constrain import HarmonyConstraint

ENC = encoding()


def random_model_generate(constraint, seed, steps=400, special_boost=12.0):
    """Sample from random logits through the processor; special tokens get a boost so headers,
    terminators and new messages show up often."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        logits = torch.randn(T.VOCAB_SIZE, generator=g) * 3
        logits[T.FIRST_SPECIAL:] += special_boost
        token = int(torch.argmax(constraint(out, logits)))  # greedy on fresh random logits: a random walk
        out.append(token)
        if token in T.STOP_FOR_ACTIONS:
            break
    return out


@pytest.fixture
def one_thread():
    """Elementwise ops on [V] are far slower with 2 threads when the 2 cores are busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_random_model_always_parses_cleanly(one_thread):
    def get_weather(location: str) -> str:
        """Weather."""

    conv = Conversation.new(python=True, browser=True, functions=[get_weather])
    constraint = HarmonyConstraint.from_conversation(conv, max_content_tokens=6)
    seen_recipients, seen_channels, ended = set(), set(), 0
    for seed in range(8):
        tokens = random_model_generate(constraint, seed, special_boost=12.0 if seed % 2 else 0.0)
        t = parse_tokens(tokens, channels=conv.channels, recipients=conv.recipients)
        complete = tokens[-1] in T.STOP_FOR_ACTIONS
        ended += complete
        assert [e.code for e in t.errors] == ([] if complete else ["truncated"]), (seed, t.errors, ENC.decode(tokens))
        if complete:  # openai-harmony agrees
            theirs = ENC.parse_messages_from_completion_tokens(tokens, role=None if tokens[0] == T.START else
                                                               __import__("openai_harmony").Role.ASSISTANT)
            assert [json.loads(m.to_json()) for m in t.messages] == [json.loads(m.to_json()) for m in theirs]
        for m in t.messages:
            seen_channels.add(m.channel)
            seen_recipients.add(m.recipient)
            if m.recipient and m.recipient.startswith("functions."):
                assert m.channel == "commentary"
            assert m.channel in conv.channels and (m.recipient is None or m.recipient in conv.recipients)
    assert ended >= 6
    assert len(seen_channels) == 3 and len(seen_recipients) >= 3  # the grammar's branches are all reachable


def test_allowed_sets_follow_the_grammar():
    c = HarmonyConstraint(channels=("analysis", "final"), recipients=())
    assert c.allowed_next([]) == {T.CHANNEL}
    header = ENC.encode("<|channel|>final<|message|>", allowed_special="all")
    assert c.allowed_next(header) is None  # free content
    logits = c(header, torch.zeros(T.VOCAB_SIZE))
    finite = torch.isfinite(logits[:T.FIRST_SPECIAL])
    assert finite.sum() > 190_000  # nearly all text tokens...
    for i in torch.nonzero(~finite).flatten().tolist()[:50]:  # ...but none that would break UTF-8
        assert 0x80 <= T.token_bytes(i)[0] <= 0xBF or not _valid_prefix(T.token_bytes(i))
    assert [i for i in range(T.FIRST_SPECIAL, T.VOCAB_SIZE) if torch.isfinite(logits[i])] == [T.RETURN]
    analysis = ENC.encode("<|channel|>analysis<|message|>hm", allowed_special="all")
    assert c.allowed_next(analysis + [T.END]) == {T.START}
    after_start = analysis + [T.END, T.START]
    allowed = c.allowed_next(after_start)
    assert allowed and all(ENC.decode([i]) in "assistant" or "assistant".startswith(ENC.decode([i])) for i in allowed)
    # a new generation (shorter history) resets the state
    assert c.allowed_next([]) == {T.CHANNEL}
    # a channel outside the list can never start
    bad = ENC.encode("<|channel|>comm", allowed_special="all")
    assert not any(ENC.decode([i]).startswith("comm") for i in c.allowed_next(bad[:1]) or ())


def _valid_prefix(b: bytes) -> bool:
    import codecs

    try:
        codecs.getincrementaldecoder("utf-8")().decode(b, False)
        return True
    except UnicodeDecodeError:
        return False


def test_utf8_stays_valid_across_tokens():
    c = HarmonyConstraint(channels=("final",))
    header = ENC.encode("<|channel|>final<|message|>", allowed_special="all")
    content = ENC.encode("🦜")
    partial = [t for t in content if not _valid_prefix(T.token_bytes(t)) or T.token_bytes(t)[-1] >= 0x80]
    first = content[0]
    logits = c(header + [first], torch.zeros(T.VOCAB_SIZE))
    assert torch.isfinite(logits[content[1]]) and not torch.isfinite(logits[T.RETURN])  # mid-character: no end
    assert not torch.isfinite(logits[ENC.encode("a")[0]])
    assert partial


def test_max_content_tokens_forces_the_end():
    c = HarmonyConstraint(channels=("final",), max_content_tokens=2)
    ids = ENC.encode("<|channel|>final<|message|>", allowed_special="all") + ENC.encode(" a b")
    assert c.allowed_next(ids) == {T.RETURN}


@pytest.mark.parametrize("seed", range(6))
def test_require_call_allows_one_analysis_message_then_only_calls(seed, one_thread):
    """tool_choice "required": whatever the logits, the turn is at most one analysis message and then a
    call to one of the allowed recipients, ending <|call|> (openai-harmony parses it the same way)."""
    from openai_harmony import Role

    recipients = ["functions.alpha", "functions.beta"]
    tokens = random_model_generate(HarmonyConstraint(recipients=recipients, max_content_tokens=6, require_call=True),
                                   seed)
    t = parse_tokens(tokens, recipients=recipients)
    assert t.errors == [] and t.stop_reason == "call"
    *before, call = t.messages
    assert [m.channel for m in before] in ([], ["analysis"]) and all(m.recipient is None for m in before)
    assert call.recipient in recipients
    oracle = ENC.parse_messages_from_completion_tokens(tokens, Role.ASSISTANT)
    assert [(m.channel, m.recipient) for m in oracle] == [(m.channel, m.recipient) for m in t.messages]
    with pytest.raises(ValueError, match="recipient"):
        HarmonyConstraint(require_call=True)
