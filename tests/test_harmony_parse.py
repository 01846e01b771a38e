"""parse_tokens / StreamDecoder: identical to openai-harmony on well-formed streams, never raising
on malformed ones (a corpus of shapes reported against gpt-oss servers), one event per token."""

from __future__ import annotations

import json
import random

import pytest
from openai_harmony import (
    Author,
    Conversation as HConversation,
    DeveloperContent,
    Message,
    Role,
    StreamableParser,
    SystemContent,
)

from workbench.harmony import Conversation, StreamDecoder, Transcript, encoding, parse_tokens
from workbench.harmony import tokens as T

ENC = encoding()


def E(text: str) -> list[int]:
    return ENC.encode(text, allowed_special="all")


def as_dicts(messages):
    return [json.loads(m.to_json()) for m in messages]


def harmony_stream(tokens, role):
    p = StreamableParser(ENC, role)
    for t in tokens:
        p.process(t)
    p.process_eos()
    return p.messages


def random_assistant_messages(rng: random.Random, n: int) -> list[Message]:
    words = ["The", " answer", " is", " 42", ".", " Café", " 日本語", " 😀", "\n", " naïve", " {\"a\": 1}", " ∑x²", " ok"]
    msgs = []
    for i in range(n):
        text = "".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
        kind = rng.choice(["analysis", "final", "fcall", "python", "tool"])
        if kind == "fcall":
            m = Message.from_role_and_content(Role.ASSISTANT, json.dumps({"city": text})).with_channel(
                "commentary").with_recipient("functions.get_weather").with_content_type("<|constrain|>json")
        elif kind == "python":
            m = Message.from_role_and_content(Role.ASSISTANT, f"print({text!r})").with_channel(
                "analysis").with_recipient("python").with_content_type("code")
        elif kind == "tool":
            m = Message.from_author_and_content(Author.new(Role.TOOL, "functions.get_weather"), text).with_channel(
                "commentary").with_recipient("assistant")
        else:
            m = Message.from_role_and_content(Role.ASSISTANT, text).with_channel(kind)
        msgs.append(m)
    return msgs


def render_messages(msgs) -> list[int]:
    out = []
    for m in msgs:
        out += ENC.render(m)
    return out


# ---------------------------------------------------------------------------------------------
# well-formed streams: the same messages as openai-harmony


def test_full_transcripts_match_openai_harmony():
    rng = random.Random(0)
    for trial in range(20):
        conv = Conversation.new("Be brief.", reasoning_effort=rng.choice(["low", "medium", "high"]),
                                date="2025-08-05", python=trial % 2 == 0, browser=trial % 3 == 0)
        conv.user("Hello 👋 world").extend(random_assistant_messages(rng, rng.randint(1, 6)))
        tokens = conv.render_all()
        ours = parse_tokens(tokens, role=None)
        theirs = ENC.parse_messages_from_completion_tokens(tokens, None)
        assert as_dicts(ours.messages) == as_dicts(theirs)
        assert as_dicts(ours.messages) == as_dicts(harmony_stream(tokens, None))
        assert ours.errors == []
        # a full transcript is recognised by its leading <|start|> even when role says "assistant"
        assert as_dicts(parse_tokens(tokens).messages) == as_dicts(theirs)


def test_completions_match_openai_harmony():
    rng = random.Random(1)
    prefix = E("<|start|>assistant")
    for _ in range(40):
        msgs = random_assistant_messages(rng, rng.randint(1, 5))
        msgs[0] = Message.from_role_and_content(Role.ASSISTANT, "first").with_channel("analysis")
        tokens = render_messages(msgs)
        assert tokens[:2] == prefix
        completion = tokens[2:]  # starts right after <|start|>assistant
        ours = parse_tokens(completion, role="assistant")
        assert ours.errors == []
        assert as_dicts(ours.messages) == as_dicts(ENC.parse_messages_from_completion_tokens(completion, Role.ASSISTANT))
        assert as_dicts(ours.messages) == as_dicts(harmony_stream(completion, Role.ASSISTANT))
        assert as_dicts(ours.messages) == as_dicts(msgs)


def test_header_variants_match_openai_harmony():
    """to= before or after the channel, content types with and without <|constrain|>, tool authors."""
    shapes = [
        " to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{}<|call|>",
        "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{}<|call|>",
        "<|channel|>commentary to=functions.get_weather json<|message|>{}<|call|>",
        "<|channel|>commentary to=functions.get_weather<|constrain|>json<|message|>{}<|call|>",
        "<|channel|>analysis to=python code<|message|>print(1)<|call|>",
        "<|channel|>analysis to=browser.search code<|message|>{\"query\": \"x\"}<|call|>",
        "<|channel|>final<|message|>a<|end|><|start|>functions.f to=assistant<|channel|>commentary<|message|>1<|end|>",
        "<|channel|>final<|message|><|return|>",
    ]
    for s in shapes:
        ours = parse_tokens(E(s))
        assert ours.errors == [], (s, ours.errors)
        assert as_dicts(ours.messages) == as_dicts(ENC.parse_messages_from_completion_tokens(E(s), Role.ASSISTANT))


# ---------------------------------------------------------------------------------------------
# events


def test_one_event_per_token_and_texts_rebuild_messages():
    rng = random.Random(2)
    msgs = random_assistant_messages(rng, 30)
    tokens = render_messages(msgs)
    t = parse_tokens(tokens, role=None)
    assert [e.id for e in t.events] == tokens
    assert [e.position for e in t.events] == list(range(len(tokens)))
    for i, m in enumerate(t.messages):
        content = "".join(e.text for e in t.events if e.message == i and e.kind == "content")
        assert content == m.content[0].text
        span = t.spans[i]
        assert all(e.message == i for e in t.events[span.start: span.end + 1])
        assert {e.channel for e in t.events[span.start: span.end + 1]} == {m.channel}
    assert "".join(e.text for e in t.events) == ENC.decode(tokens)


def test_multibyte_characters_split_across_tokens():
    text = "🦜🦜 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ﷽"
    content = E(text)
    partial = [tok for tok in content if not _decodes(tok)]
    assert partial, "this text should contain tokens that are only part of a UTF-8 character"
    tokens = E("<|channel|>final<|message|>") + content + [T.RETURN]
    t = parse_tokens(tokens)
    assert t.errors == [] and t.final == text
    events = [e for e in t.events if e.kind == "content"]
    assert "".join(e.text for e in events) == text
    assert any(e.text == "" for e in events)  # a token holding half a character adds no text yet
    assert all("\ufffd" not in e.text for e in events)


def _decodes(tok):
    try:
        T.token_bytes(tok).decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_streaming_push_returns_the_same_events_as_batch():
    tokens = E("<|channel|>analysis<|message|>Let me see.<|end|><|start|>assistant<|channel|>final<|message|>Yes<|return|>")
    dec = StreamDecoder("assistant")
    counts = []
    pushed = [dec.push(tok) for tok in tokens if not counts.append(len(dec.messages))]
    t = dec.finish()
    assert pushed == t.events == parse_tokens(tokens).events
    # the first message appears exactly when its <|end|> is pushed
    end = tokens.index(T.END)
    assert counts[end] == 0 and counts[end + 1] == 1
    # header events get the header's fields once <|message|> arrives
    assert t.events[0].channel == "analysis" and t.events[0].kind == "special"


def test_transcript_json_round_trip_and_dataframe():
    tokens = E("<|channel|>analysis<|message|>Hmm 日本<|end|><|start|>assistant<|channel|>final<|message|>Yes<|return|>")
    tokens += [T.START, 5, 99999999]
    t = parse_tokens(tokens)
    text = json.dumps(t.to_dict())
    back = Transcript.from_dict(json.loads(text))
    assert back.events == t.events and back.errors == t.errors and back.spans == t.spans
    assert as_dicts(back.messages) == as_dicts(t.messages)
    df = t.to_dataframe()
    assert len(df) == len(tokens) and list(df["id"]) == [e.id for e in t.events]
    assert df["error"].notna().sum() == len({e.position for e in t.errors if e.position < len(tokens)})
    mdf = t.messages_dataframe()
    assert list(mdf["channel"]) == ["analysis", "final"] and list(mdf["terminator"]) == ["<|end|>", "<|return|>"]
    assert "Transcript(" in repr(t) and "final" in str(t)
    assert "<script>" not in parse_tokens(E("<|channel|>final<|message|><script>x</script><|return|>"))._repr_html_()


# ---------------------------------------------------------------------------------------------
# malformed shapes from real reports: every token gets an event, errors are recorded with
# positions, and the good messages on both sides survive.

GOOD_BEFORE = "<|channel|>analysis<|message|>Plan it.<|end|>"
GOOD_AFTER = "<|start|>assistant<|channel|>final<|message|>The answer.<|return|>"

CORPUS = {
    # vLLM/harmony: "unexpected tokens remaining in message header: ['––commentary']"
    "stray words in header": (
        GOOD_BEFORE + "<|start|>assistant<|channel|>commentary to=functions.f ––commentary json<|message|>{}<|call|>"
        + GOOD_AFTER, {"bad_header"}),
    # "unexpected tokens remaining in message header: ['<|constrain|>response']"
    "constrain response without tools": (
        GOOD_BEFORE + "<|start|>assistant<|channel|>final to=x <|constrain|>response extra<|message|>hi<|end|>"
        + GOOD_AFTER, {"bad_header"}),
    # "Unexpected token 12606 while expecting start token 200006": 'commentary' right after <|end|>
    "non-start token where <|start|> belongs": (
        GOOD_BEFORE + "commentary to=functions.f<|channel|>commentary<|message|>{}<|call|>" + GOOD_AFTER,
        {"expected_start"}),
    # a refusal with no channel and no <|message|> (harmony issue #80)
    "refusal without channel or message": (
        "I can't help with that.<|end|>" + GOOD_AFTER, {"missing_message"}),
    # the model closes its final message with <|end|> and then samples <|return|> (vLLM #50690)
    "return after end": (GOOD_BEFORE + GOOD_AFTER.replace("<|return|>", "<|end|><|return|>"), {"expected_start"}),
    # doubled channel / free text after <|channel|> (llama.cpp report): openai-harmony accepts it (the
    # second marker ends up in the recipient), so the message is kept and the oddity flagged
    "doubled channel": (
        GOOD_BEFORE + "<|start|>assistant<|channel|>commentary to=assistant<|channel|>commentary?<|message|>x<|end|>"
        + GOOD_AFTER, {"odd_header"}),
    "question marks as channel": (
        GOOD_BEFORE + "<|start|>assistant<|channel|>??<|message|>hm<|end|>" + GOOD_AFTER, {"unknown_channel"}),
    "empty channel": (GOOD_BEFORE + "<|start|>assistant<|channel|><|message|>x<|end|>" + GOOD_AFTER, {"bad_header"}),
    # "Unknown role: assistantassistant"
    "doubled role": (GOOD_BEFORE + "<|start|>assistantassistant<|message|>x<|end|>" + GOOD_AFTER, {"bad_header"}),
    # "Unknown role: <|start|>assistant" -- a header interrupted by a new <|start|>
    "start inside header": (
        GOOD_BEFORE + "<|start|><|start|>assistant<|channel|>final<|message|>The answer.<|return|>", {"bad_header"}),
    # function calls on the analysis channel
    "function call on analysis": (
        GOOD_BEFORE + "<|start|>assistant<|channel|>analysis to=functions.f <|constrain|>json<|message|>{}<|call|>",
        {"function_call_on_analysis"}),
    "stream ends mid-message": (GOOD_BEFORE + "<|start|>assistant<|channel|>final<|message|>The ans", {"truncated"}),
    "stream ends mid-header": (GOOD_BEFORE + "<|start|>assistant<|channel|>fin", {"truncated"}),
    "missing end before next start": (
        "<|channel|>analysis<|message|>Plan it." + GOOD_AFTER, {"unterminated_message"}),
    "endoftext in header": (
        GOOD_BEFORE + "<|start|>assistant<|endoftext|><|channel|>final<|message|>x<|end|>" + GOOD_AFTER,
        {"special_in_header"}),
    "channel token inside content": (
        GOOD_BEFORE + "<|start|>assistant<|channel|>final<|message|>The<|channel|> answer.<|return|>",
        {"special_in_content"}),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_malformed_corpus(name):
    text, codes = CORPUS[name]
    tokens = E(text)
    t = parse_tokens(tokens)
    assert [e.id for e in t.events] == tokens, "one event per token, none dropped"
    assert codes <= {e.code for e in t.errors}, t.errors
    for err in t.errors:
        assert 0 <= err.position <= len(tokens)
        if err.position < len(tokens):
            assert t.events[err.position].error
    texts = [(m.channel, m.content[0].text) for m in t.messages]
    if text.startswith(GOOD_BEFORE):
        assert texts[0] == ("analysis", "Plan it.")
    if text.endswith(GOOD_AFTER) or name in ("start inside header", "return after end"):
        assert ("final", "The answer.") in texts
    # the broken message's tokens are not claimed by any message; its events still have text
    assert "".join(e.text for e in t.events) == ENC.decode(tokens)


def test_corpus_specifics():
    t = parse_tokens(E(CORPUS["refusal without channel or message"][0]))
    assert [(m.channel, m.content[0].text) for m in t.messages] == [(None, "I can't help with that."), ("final", "The answer.")]
    t = parse_tokens(E(CORPUS["stream ends mid-message"][0]))
    assert t.messages[-1].content[0].text == "The ans" and t.spans[-1].terminator is None
    t = parse_tokens(E(CORPUS["channel token inside content"][0]))
    assert t.final == "The answer."
    t = parse_tokens(E(CORPUS["missing end before next start"][0]))
    assert [m.content[0].text for m in t.messages] == ["Plan it.", "The answer."]
    t = parse_tokens(E(CORPUS["non-start token where <|start|> belongs"][0]))
    assert len([e for e in t.errors if e.code == "expected_start"]) == 1  # reported once, then skipped quietly
    broken = [e for e in t.events if e.message is None]
    assert broken and all(e.kind in ("stray", "special") for e in broken)


def test_invalid_and_reserved_ids():
    good = E("<|channel|>final<|message|>Hi")
    for bad in (-1, T.VOCAB_SIZE, 10**9, 200000, 201087):
        t = parse_tokens(good + [bad] + E(" there<|return|>"))
        assert len(t.events) == len(good) + 3
        assert t.errors[0].position == len(good) and t.errors[0].code in ("invalid_token", "reserved_token")
        assert t.final == "Hi there"  # the bad id is left out of the text, the message kept
        t = parse_tokens(E("<|channel|>fi") + [bad] + E("nal<|message|>x<|end|>") + E(GOOD_AFTER))
        assert t.texts() == ["The answer."]  # a bad id in a header breaks that message only
    t = parse_tokens(["x", None, 3.5] + E(GOOD_AFTER), role=None)
    assert len(t.events) == 3 + len(E(GOOD_AFTER)) and t.final == "The answer."


def test_channels_checked_against_system_message():
    conv = Conversation.new(channels=("analysis", "final")).user("hi").assistant("x", channel="commentary")
    t = parse_tokens(conv.render_all(), role=None)
    assert [e.code for e in t.errors] == ["unknown_channel"]
    assert t.channels == ("analysis", "final") and len(t.messages) == 3
    assert parse_tokens(conv.render_all(), role=None, channels=None).errors == []
    t = parse_tokens(E("<|channel|>final<|message|>x<|end|>"), channels=["analysis", "final"],
                     recipients=["functions.f"])
    assert t.errors == []
    t = parse_tokens(E(" to=functions.g<|channel|>commentary json<|message|>{}<|call|>"), recipients=["functions.f"])
    assert [e.code for e in t.errors] == ["unknown_recipient"]


def test_random_garbage_never_raises():
    rng = random.Random(3)
    pool = list(T.NAMES) + [200000, -5, T.VOCAB_SIZE + 1] + E("assistant to=functions.f analysis final json hi 😀")
    for _ in range(300):
        tokens = [rng.choice(pool) if rng.random() < 0.6 else rng.randrange(0, T.VOCAB_SIZE) for _ in range(rng.randint(0, 40))]
        t = parse_tokens(tokens, role=rng.choice(["assistant", None]))
        assert len(t.events) == len(tokens)
        json.dumps(t.to_dict())
