"""Headers read exactly as openai-harmony reads them: property tests over generated headers (arbitrary
Unicode whitespace and separators, ``to=`` before or after the channel, ``<|constrain|>`` anywhere,
stray text) compared with openai-harmony's own parser on every input; hand-picked shapes from issue 17.

Where openai-harmony accepts, the workbench gives the same messages; where it refuses, the workbench
records ``bad_header`` at the header's ``<|message|>`` and keeps one event per token. Runs are bounded
and deterministic (``derandomize``, no example database)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai_harmony import Role, StreamableParser

from workbench.harmony import encoding, parse_header, parse_tokens
from workbench.harmony import tokens as T
from workbench.harmony.header import ASCII_WHITESPACE, WHITE_SPACE, HeaderError

ENC = encoding()
GOOD = "<|start|>assistant<|channel|>final<|message|>The answer.<|return|>"
FLAGS = {"odd_header", "unknown_channel", "missing_channel", "unknown_recipient", "function_call_on_analysis"}
BOUNDED = settings(max_examples=250, derandomize=True, database=None, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])


def E(text: str) -> list[int]:
    return ENC.encode(text, allowed_special="all")


def as_dicts(messages):
    return [json.loads(m.to_json()) for m in messages]


def harmony(tokens, role, strict=True):
    """openai-harmony's messages, or None where it refuses the stream."""
    try:
        return ENC.parse_messages_from_completion_tokens(tokens, role, strict=strict)
    except Exception:  # noqa: BLE001 - its refusals are plain exceptions
        return None


# -- the generator -------------------------------------------------------------------------------

# Every character Python or Rust calls whitespace, and some that look like it but are neither.
SPACES = sorted(WHITE_SPACE | ASCII_WHITESPACE | set("\x1c\x1d\x1e\x1f") | {"\u200b", "\ufeff", "\u180e"})
WORDS = ["assistant", "user", "system", "developer", "tool", "analysis", "commentary", "final", "to=functions.f",
         "to=functions.get_weather", "to=python", "to=browser.search", "to=", "to=assistant", "functions.lookup",
         "json", "code", "<|constrain|>json", "<|constrain|>", "<|channel|>", "––commentary", "??", "é", "日本", "<",
         "=", "to", "x"]
separator = st.one_of(st.just(" "), st.just(""), st.text(alphabet=SPACES, max_size=3))
stray = st.text(alphabet=[*SPACES, "a", "<", ">", "=", ".", "–", "é"], min_size=1, max_size=4)
piece = st.one_of(st.sampled_from(WORDS), stray)


@st.composite
def header_text(draw) -> str:
    """Words, markers and stray text joined by arbitrary (often non-ASCII) whitespace."""
    parts = draw(st.lists(piece, min_size=0, max_size=7))
    if draw(st.booleans()):  # most headers have a channel: put one somewhere
        parts.insert(draw(st.integers(0, len(parts))), "<|channel|>" + draw(st.sampled_from(
            ["analysis", "commentary", "final", "x"])))
    out = draw(separator)
    for p in parts:
        out += p + draw(separator)
    return out


def _check_against_harmony(tokens, role, header_end):
    """Same messages where openai-harmony accepts; bad_header at ``header_end`` where it refuses."""
    theirs = harmony(tokens, None if role is None else Role(role))
    ours = parse_tokens(tokens, role=role)
    assert [e.id for e in ours.events] == tokens, "one event per token, none dropped"
    codes = {e.code for e in ours.errors}
    if theirs is not None:
        assert as_dicts(ours.messages) == as_dicts(theirs)
        assert codes <= FLAGS, ours.errors
    else:
        assert any(e.code == "bad_header" and e.position == header_end for e in ours.errors), ours.errors
        assert [m.content[0].text for m in ours.messages] == ["The answer."]  # the good message after survives
        assert all(e.message is None for e in ours.events[:header_end + 1])
    return theirs, ours


@BOUNDED
@given(header=header_text(), content=st.text(alphabet="ab {}\"é", max_size=6))
def test_completion_headers_match_openai_harmony(header, content):
    head = E(header)
    tokens = head + [T.MESSAGE] + E(content) + [T.END] + E(GOOD)
    _check_against_harmony(tokens, "assistant", len(head))


@BOUNDED
@given(header=header_text())
def test_transcript_headers_match_openai_harmony(header):
    head = [T.START] + E(header)
    tokens = head + [T.MESSAGE] + E("hi") + [T.END] + E(GOOD)
    _check_against_harmony(tokens, None, len(head))


@BOUNDED
@given(header=header_text(), stop=st.sampled_from([T.END, T.CALL, T.RETURN]))
def test_headers_cut_by_a_stop_token_match_non_strict_openai_harmony(header, stop):
    """A refusal with no <|message|>: openai-harmony's non-strict mode keeps the header's words as content."""
    tokens = E(header) + [stop] + E(GOOD)
    theirs = harmony(tokens, Role.ASSISTANT, strict=False)
    ours = parse_tokens(tokens, role="assistant")
    assert [e.id for e in ours.events] == tokens
    assert "missing_message" in {e.code for e in ours.errors}
    if theirs is not None:
        assert as_dicts(ours.messages) == as_dicts(theirs)
    else:
        assert [m.content[0].text for m in ours.messages] == ["The answer."]


@BOUNDED
@given(header=header_text())
def test_parse_header_agrees_with_the_streaming_parser(header):
    """``parse_header`` alone (no tokens) against StreamableParser, which reads the header as it streams."""
    tokens = E(header) + [T.MESSAGE]
    parser = StreamableParser(ENC, Role.ASSISTANT)
    try:
        for t in tokens:
            parser.process(t)
        theirs = (parser.current_role.value, parser.current_channel, parser.current_recipient,
                  parser.current_content_type)
    except Exception:  # noqa: BLE001
        theirs = None
    try:
        h = parse_header(header, "assistant")
        ours = (h.role, h.channel, h.recipient, h.content_type)
    except HeaderError:
        ours = None
    assert ours == theirs


# -- the shapes issue 17 reported, and the whitespace sets ---------------------------------------

@pytest.mark.parametrize("header, recipient, content_type", [
    ("<|channel|>commentary to=functions.f\u00a0<|constrain|>json", "functions.f\u00a0", "<|constrain|>json"),
    ("<|channel|>commentary\u00a0to=functions.f", "functions.f", None),  # NBSP ends the channel (White_Space)
    ("<|channel|>commentary to=functions.f\x0bjson", "functions.f\x0bjson", None),  # no split on VT
    ("<|channel|>commentary to=functions.f\x1cjson", "functions.f\x1cjson", None),  # nor on U+001C
    ("<|channel|>commentary to=functions.f\u2003json", "functions.f\u2003json", None),
    ("<|channel|>commentary to=functions.f\tjson", "functions.f", "json"),  # a tab splits
    ("<|channel|>commentary to=functions.f\x0cjson", "functions.f", "json"),  # so does a form feed
])
def test_reported_shapes(header, recipient, content_type):
    tokens = E(header) + [T.MESSAGE] + E("{}") + [T.CALL]
    theirs, ours = _check_against_harmony(tokens + E(GOOD), "assistant", len(E(header)))
    m = ours.messages[0]
    assert (m.channel, m.recipient, m.content_type) == ("commentary", recipient, content_type)
    assert as_dicts(theirs)[0]["recipient"] == recipient  # the oracle says the same, independently
    odd = [e for e in ours.errors if e.code == "odd_header"]
    assert bool(odd) == any(c.isspace() for c in recipient)  # whitespace kept inside a word is flagged


def test_channel_ending_at_u001c_is_one_word():
    # Python's str.isspace says U+001C is whitespace; Rust's char::is_whitespace does not
    tokens = E("<|channel|>commentary\x1cto=functions.f json") + [T.MESSAGE] + E("{}") + [T.CALL] + E(GOOD)
    _, ours = _check_against_harmony(tokens, "assistant", tokens.index(T.MESSAGE))
    assert ours.messages[0].channel == "commentary\x1cto=functions.f" and ours.messages[0].recipient == "json"
    assert "unknown_channel" in {e.code for e in ours.errors}


def test_tool_role_word_is_its_own_name():
    tokens = E("<|start|>tool<|message|>x<|end|>")
    _, ours = _check_against_harmony(tokens + E(GOOD), None, 2)
    assert ours.messages[0].author.name == "tool"


def test_header_bytes_that_are_not_utf8_are_refused():
    parrot = E("🦜")
    assert len(parrot) > 1, "this character should take more than one token"
    cut = [T.START] + E("assistant") + parrot[:1] + [T.CHANNEL] + parrot[1:] + E("final")
    tokens = cut + [T.MESSAGE] + E("x") + [T.END] + E(GOOD)
    assert harmony(tokens, None) is None  # openai-harmony: "could not decode header"
    _check_against_harmony(tokens, None, len(cut))


def test_whitespace_sets_are_rusts():
    # char::is_whitespace is Unicode White_Space: what str.isspace says, minus U+001C..U+001F
    assert WHITE_SPACE == {chr(i) for i in range(0x110000) if chr(i).isspace()} - set("\x1c\x1d\x1e\x1f")
    assert ASCII_WHITESPACE == set(" \t\n\x0c\r") and "\x0b" not in ASCII_WHITESPACE
