r"""Parse a Harmony message header (the text between ``<|start|>`` and ``<|message|>``) exactly as
openai-harmony does.

openai-harmony's Rust parser (``StreamableParser::parse_header_from_string`` in its ``src/encoding.rs``)
is the specification, and this module follows it step by step:

1. the channel is the text after the first ``<|channel|>`` up to the first character that is Unicode
   ``White_Space`` (Rust's ``char::is_whitespace``) or ``<``; an empty channel is refused. That text
   and the marker are cut out of the header;
2. the rest is trimmed of ``White_Space``; a space is put before every ``<|constrain|>``;
3. it is split into words on **ASCII whitespace only** (Rust's ``split_ascii_whitespace``: space, tab,
   line feed, form feed, carriage return; not the vertical tab, a no-break space, U+001C and friends);
4. without a known role, the first word is the role; an unknown first word followed by more words (or
   starting with ``to=``) is a tool's name (role ``tool``; the word ``tool`` itself is also the name);
   anything else is refused. A word equal to the role right after it is dropped;
5. the last word is the recipient if it starts with ``to=`` or is the only word; otherwise it is the
   content type and the word before it the recipient (``to=`` stripped if present). Any word left
   over is refused ("unexpected tokens remaining in message header").

So ``commentary to=functions.f\u00a0<|constrain|>json`` has the recipient ``functions.f\u00a0`` (the
no-break space is part of the word), and ``to=functions.f\x0bjson`` is one recipient: Python's
``str.split()`` would have split both. Where openai-harmony accepts a header that no well-formed one
looks like, the parse is the same and ``Header.quirks`` says what is odd (the stream decoder reports
each as an ``odd_header`` error and keeps the message):

>>> parse_header("assistant to=functions.get_weather<|channel|>commentary <|constrain|>json")
Header(role='assistant', name=None, channel='commentary', recipient='functions.get_weather', content_type='<|constrain|>json')
>>> parse_header("<|channel|>analysis", role="assistant").channel
'analysis'
>>> parse_header("functions.lookup to=assistant<|channel|>commentary")
Header(role='tool', name='functions.lookup', channel='commentary', recipient='assistant', content_type=None)
>>> h = parse_header("<|channel|>commentary to=functions.f\u00a0<|constrain|>json", role="assistant")
>>> h.recipient, h.quirks
('functions.f\xa0', ("recipient 'functions.f\\xa0' holds U+00A0 (whitespace openai-harmony does not split on)",))
>>> parse_header("assistant<|channel|>commentary to=functions.f ––commentary json")
Traceback (most recent call last):
...
workbench.harmony.header.HeaderError: unexpected text in header: 'to=functions.f'
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

ROLES = ("user", "assistant", "system", "developer", "tool")
CHANNEL_MARK = "<|channel|>"
CONSTRAIN_MARK = "<|constrain|>"

#: Unicode White_Space (Rust's ``char::is_whitespace`` and ``str::trim``). Python's ``str.isspace`` also
#: says yes to U+001C..U+001F, which are not White_Space.
WHITE_SPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
                        + "\u2028\u2029\u202f\u205f\u3000")
#: What openai-harmony splits header words on (Rust's ``split_ascii_whitespace``, the WHATWG set: no U+000B).
ASCII_WHITESPACE = frozenset(" \t\n\x0c\r")


class HeaderError(ValueError):
    """The header text is one openai-harmony refuses."""


@dataclass(frozen=True)
class Header:
    role: str
    name: str | None = None
    channel: str | None = None
    recipient: str | None = None
    content_type: str | None = None
    #: what openai-harmony accepts here but no well-formed header has (each a sentence); not compared
    quirks: tuple[str, ...] = field(default=(), repr=False, compare=False)


def _split_ascii_whitespace(text: str) -> list[str]:
    words, word = [], []
    for c in text:
        if c in ASCII_WHITESPACE:
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(c)
    if word:
        words.append("".join(word))
    return words


def _words(text: str, role: str | None) -> tuple[str, str | None, str | None, list[str]]:
    """Steps 1-4: (role, tool name, channel, the words after the role)."""
    channel = None
    idx = text.find(CHANNEL_MARK)
    if idx >= 0:
        after = text[idx + len(CHANNEL_MARK):]
        end = next((i for i, c in enumerate(after) if c in WHITE_SPACE or c == "<"), len(after))
        channel = after[:end]
        if not channel:
            raise HeaderError("channel marker present but no channel value found in header")
        text = text[:idx] + after[end:]
    text = text.strip("".join(WHITE_SPACE))
    if CONSTRAIN_MARK in text:
        text = text.replace(CONSTRAIN_MARK, " " + CONSTRAIN_MARK).strip("".join(WHITE_SPACE))
    parts = _split_ascii_whitespace(text)
    name = None
    if role is None:
        if not parts:
            raise HeaderError("message header did not contain a role")
        first = parts[0]
        if first in ROLES:
            role = first
            name = first if first == "tool" else None
        elif len(parts) > 1 or first.startswith("to="):
            role, name = "tool", first  # a tool answering: its name stands in the role's place
            parts.pop(0)
        else:
            raise HeaderError(f"unknown role: {first!r}")
    if parts and parts[0] == role:
        parts.pop(0)
    return role, name, channel, parts


def parse_header(text: str, role: str | None = None) -> Header:
    """Parse header text (special tokens written as their names) as openai-harmony does; ``HeaderError``
    where it refuses. ``role`` is the role already known (the first message of a completion, whose
    ``<|start|>assistant`` was in the prompt)."""
    role, name, channel, parts = _words(text, role)
    recipient = content_type = None
    if parts:
        n = len(parts)
        last = parts.pop()
        if last.startswith("to="):
            recipient = last[3:]
        elif n == 1:
            recipient = last
        else:
            content_type = last
            raw = parts.pop()
            recipient = raw[3:] if raw.startswith("to=") else raw
    if parts:
        raise HeaderError("unexpected text in header: " + ", ".join(repr(p) for p in parts))
    header = Header(role, name, channel, recipient, content_type)
    return replace(header, quirks=_quirks(header, text))


def recover_header(text: str, role: str | None = None) -> tuple[Header, str]:
    """openai-harmony's non-strict reading of a header that a stop token ended before ``<|message|>``:
    the role and channel as above, and every other word, joined by single spaces, as the content."""
    role, name, channel, parts = _words(text, role)
    return Header(role, name, channel), " ".join(parts)


def _quirks(h: Header, text: str) -> tuple[str, ...]:
    out = []
    if text.count(CHANNEL_MARK) > 1:
        out.append(f"more than one {CHANNEL_MARK}: the second stays in the header's words")
    for what, value in (("role", h.name), ("channel", h.channel), ("recipient", h.recipient),
                        ("content type", h.content_type)):
        if value is None:
            continue
        spaces = sorted({c for c in value if c in WHITE_SPACE or c.isspace()})
        if spaces:
            names = ", ".join(f"U+{ord(c):04X}" for c in spaces)
            out.append(f"{what} {value!r} holds {names} (whitespace openai-harmony does not split on)")
        special = value[len(CONSTRAIN_MARK):] if what == "content type" and value.startswith(CONSTRAIN_MARK) else value
        if "<|" in special:
            out.append(f"{what} {value!r} holds a special token's name")
    if h.recipient == "":
        out.append("empty recipient after 'to='")
    return tuple(out)
