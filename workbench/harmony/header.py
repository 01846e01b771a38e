"""Parse a Harmony message header (the text between ``<|start|>`` and ``<|message|>``).

The rules are openai-harmony's (so well-formed headers parse identically), with errors for what it
would silently accept or reject less clearly:

>>> parse_header("assistant to=functions.get_weather<|channel|>commentary <|constrain|>json")
Header(role='assistant', name=None, channel='commentary', recipient='functions.get_weather', content_type='<|constrain|>json')
>>> parse_header("<|channel|>analysis", role="assistant").channel
'analysis'
>>> parse_header("functions.lookup to=assistant<|channel|>commentary")
Header(role='tool', name='functions.lookup', channel='commentary', recipient='assistant', content_type=None)
>>> parse_header("assistant<|channel|>commentary to=functions.f ––commentary json")
Traceback (most recent call last):
...
workbench.harmony.header.HeaderError: unexpected text in header: 'to=functions.f'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROLES = ("user", "assistant", "system", "developer", "tool")
CHANNEL_MARK = "<|channel|>"
CONSTRAIN_MARK = "<|constrain|>"


class HeaderError(ValueError):
    """The header text does not follow the Harmony grammar."""


@dataclass(frozen=True)
class Header:
    role: str
    name: str | None = None
    channel: str | None = None
    recipient: str | None = None
    content_type: str | None = None


def parse_header(text: str, role: str | None = None) -> Header:
    """Parse header text (special tokens written as their names). ``role`` is the role already known
    (the first message of a completion, whose ``<|start|>assistant`` was in the prompt)."""
    channel = None
    if text.count(CHANNEL_MARK) > 1:
        raise HeaderError(f"more than one {CHANNEL_MARK} in header: {text!r}")
    idx = text.find(CHANNEL_MARK)
    if idx >= 0:
        after = text[idx + len(CHANNEL_MARK):]
        m = re.search(r"\s|<", after)
        end = m.start() if m else len(after)
        channel = after[:end]
        if not channel:
            raise HeaderError("channel marker present but no channel value found in header")
        text = text[:idx] + after[end:]
    text = text.strip()
    if CONSTRAIN_MARK in text:
        if text.count(CONSTRAIN_MARK) > 1:
            raise HeaderError(f"more than one {CONSTRAIN_MARK} in header")
        text = text.replace(CONSTRAIN_MARK, " " + CONSTRAIN_MARK).strip()
    parts = text.split()
    name = None
    if role is None:
        if not parts:
            raise HeaderError("message header did not contain a role")
        first = parts[0]
        if first in ROLES:
            role = first
        elif len(parts) > 1 or first.startswith("to="):
            role, name = "tool", first  # a tool answering: its name stands in the role's place
            parts.pop(0)
        else:
            raise HeaderError(f"unknown role: {first!r}")
    if parts and parts[0] == role:
        parts.pop(0)
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
    if recipient == "":
        raise HeaderError("empty recipient after 'to='")
    if content_type is not None and content_type.count("<|") and not content_type.startswith(CONSTRAIN_MARK):
        raise HeaderError(f"unexpected special token in content type {content_type!r}")
    return Header(role=role, name=name, channel=channel, recipient=recipient, content_type=content_type)
