"""Incremental Harmony decoding: one ``TokenEvent`` per token, errors recorded, never raised.

>>> from workbench.harmony import encoding
>>> enc = encoding()
>>> dec = StreamDecoder(role="assistant")      # a completion: the prompt ended with <|start|>assistant
>>> for t in enc.encode("<|channel|>final<|message|>Hi!<|return|>", allowed_special="all"):
...     event = dec.push(t)
>>> [(e.kind, e.text, e.channel) for e in dec.events][:3]
[('special', '<|channel|>', 'final'), ('header', 'final', 'final'), ('special', '<|message|>', 'final')]
>>> dec.finish().messages[0].content[0].text
'Hi!'

States: expecting ``<|start|>``, in a header, in content. Message-breaking problems (a bad header, a
stray special token in a header, a non-start token where ``<|start|>`` belongs) record a
``ParseError`` and skip to the next ``<|start|>``; the broken message's tokens keep their events but
no message. Problems inside a well-formed message (an unknown channel, a reserved id in content, a
stream that stops mid-message) record an error and keep the message. Error codes:

========================== ============================================================ ==========
code                       meaning                                                      message
========================== ============================================================ ==========
expected_start             a token where ``<|start|>`` must come                          skipped
invalid_token              an id outside the vocabulary (in a header: message broken)    kept
reserved_token             a ``<|reserved_N|>`` id (in a header: message broken)         kept
special_in_header          ``<|endoftext|>`` etc. between ``<|start|>`` and ``<|message|>``  broken
missing_message            the header ended with ``<|end|>``/``<|call|>``/``<|return|>``  recovered
bad_header                 a header openai-harmony refuses (unknown role, stray words,    broken
                           an empty channel, bytes that are not UTF-8)
odd_header                 a header openai-harmony accepts but no well-formed one has     kept
                           (whitespace inside a word, a second ``<|channel|>``, ``to=``
                           with no recipient; ``Header.quirks``)
special_in_content         ``<|channel|>``, ``<|message|>``... inside content                 kept
unterminated_message       ``<|start|>`` inside content (missing ``<|end|>``)              kept
truncated                  the stream ended inside a header or content                     kept
invalid_utf8               content bytes that are not UTF-8                                kept
unknown_channel            a channel the system message does not list                      kept
missing_channel            an assistant message with no channel                            kept
unknown_recipient          a recipient that no declared tool has                           kept
function_call_on_analysis  a ``functions.*`` call on the analysis channel                  kept
========================== ============================================================ ==========

Headers are read exactly as openai-harmony reads them (``header``): where it accepts one, the message
is the same; where it refuses one, ``bad_header``. Other special tokens inside a header
(``<|endoftext|>``, ``<|start|>``, a stop token) are where the workbench parts ways on purpose:
openai-harmony's strict mode folds their names into the header's words, the workbench breaks or
recovers the message and says so.

"recovered": the header's words become the content of a message with the header's role and channel
(what openai-harmony's non-strict mode does for refusals that skip ``<|channel|>`` and ``<|message|>``).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

from openai_harmony import Author, Message, Role, TextContent

from . import tokens as T
from .header import Header, HeaderError, parse_header, recover_header

DEFAULT_CHANNELS = ("analysis", "commentary", "final")
KINDS = ("special", "header", "content", "stray", "invalid")
_FLAGS = {"unknown_channel", "missing_channel", "unknown_recipient", "function_call_on_analysis", "odd_header"}


@dataclass
class TokenEvent:
    """What one token did.

    ``kind``: special (a special token), header (header text), content (message text), stray (text
    outside any message), invalid (an id outside the vocabulary). ``text`` is the text the token adds;
    a character split over several tokens appears on the token that completes it. ``role``,
    ``channel``, ``recipient``, ``content_type`` describe the message the token belongs to (header
    tokens get them when ``<|message|>`` arrives); ``message`` is its index in ``Transcript.messages``
    (None outside a message or in a broken one). ``error`` is the problem found at this token.
    """

    position: int
    id: int
    text: str
    kind: str
    role: str | None = None
    channel: str | None = None
    recipient: str | None = None
    content_type: str | None = None
    message: int | None = None
    error: str | None = None

    @property
    def token(self) -> int:
        return self.id

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TokenEvent":
        return cls(**data)

    def __repr__(self) -> str:
        where = "/".join(x for x in (self.role, self.channel) if x)
        to = f" to={self.recipient}" if self.recipient else ""
        msg = f" msg={self.message}" if self.message is not None else ""
        err = f" ERROR {self.error}" if self.error else ""
        return f"<TokenEvent {self.position} id={self.id} {self.kind} {self.text!r} {where}{to}{msg}{err}>"


@dataclass
class ParseError:
    """A problem at ``position`` (the token's index; ``len(events)`` for the end of the stream)."""

    position: int
    code: str
    detail: str
    token: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ParseError":
        return cls(**data)

    def __str__(self) -> str:
        return f"{self.code} at token {self.position}: {self.detail}"


@dataclass
class MessageSpan:
    """Where message ``index`` lies in the stream: tokens ``start`` to ``end`` inclusive, and how it ended."""

    index: int
    start: int
    end: int
    terminator: str | None  # "<|end|>", "<|call|>", "<|return|>", or None (cut short)

    def to_dict(self) -> dict:
        return asdict(self)


class _Utf8:
    """Incremental UTF-8: bytes in, complete characters out; bad bytes become U+FFFD and are reported."""

    def __init__(self):
        self._dec = codecs.getincrementaldecoder("utf-8")("strict")

    def push(self, data: bytes, final: bool = False) -> tuple[str, bool]:
        try:
            return self._dec.decode(data, final), True
        except UnicodeDecodeError:
            pending = self._dec.getstate()[0]
            self._dec = codecs.getincrementaldecoder("utf-8")("strict")
            return (pending + data).decode("utf-8", "replace"), False


_VALID_CHANNELS = re.compile(r"# Valid channels: ([^\n]*?)\.(?: |$|\n)")


class StreamDecoder:
    """Push token ids one at a time; read ``events``, ``messages``, ``errors``; call ``finish()`` at the end.

    ``role``: the role of the first message when decoding a completion (its ``<|start|>assistant`` was
    in the prompt); None for a full transcript. A stream whose first token is ``<|start|>`` is read as
    a full transcript either way. ``channels``: valid channels ("auto": the standard three, replaced by
    the list of any system message in the stream; None: no check). ``recipients``: the declared
    recipients (None: no check).
    """

    def __init__(
        self,
        role: str | Role | None = "assistant",
        *,
        channels: Sequence[str] | str | None = "auto",
        recipients: Iterable[str] | None = None,
    ):
        self.events: list[TokenEvent] = []
        self.messages: list[Message] = []
        self.errors: list[ParseError] = []
        self.spans: list[MessageSpan] = []
        self.finished = False
        self._auto_channels = channels == "auto"
        self.channels = tuple(DEFAULT_CHANNELS if channels == "auto" else channels) if channels else None
        self.recipients = None if recipients is None else frozenset(recipients)
        role = role.value if isinstance(role, Role) else role
        self._next_role = role
        self._state = "header" if role else "start"
        self._quiet = False  # after an error, say nothing more until the next <|start|>
        self._begin_message(0)

    # -- public --------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """'start' (expecting <|start|>), 'header' or 'content'."""
        return self._state

    @property
    def current(self) -> Header | None:
        """The header of the message being read (None outside content)."""
        return self._header if self._state == "content" else None

    def push(self, token: int) -> TokenEvent:
        """Consume one token id and return its event (also appended to ``events``)."""
        pos = len(self.events)
        if pos == 0 and token == T.START:
            self._next_role, self._state = None, "start"  # a full transcript, not a completion
        ev = TokenEvent(position=pos, id=token if isinstance(token, int) else -1, text="", kind="invalid")
        self.events.append(ev)
        if not T.in_range(token):
            self._bad_id(ev, "invalid_token", f"token id {token!r} is outside the vocabulary [0, {T.VOCAB_SIZE})")
        elif T.is_reserved(token):
            ev.kind, ev.text = "special", T.name_of(token)
            self._bad_id(ev, "reserved_token", f"{T.name_of(token)} has no meaning in Harmony")
        else:
            getattr(self, f"_in_{self._state}")(ev, token)
        return ev

    def extend(self, tokens: Iterable[int]) -> list[TokenEvent]:
        return [self.push(t) for t in tokens]

    def finish(self) -> "Transcript":
        """End of stream: report a message cut short (kept, as openai-harmony does) and return the transcript."""
        if not self.finished:
            self.finished = True
            end = len(self.events)
            if self._state == "content":
                self._error(end, "truncated", "the stream ended inside a message (no <|end|>, <|call|> or <|return|>)")
                self._complete(end - 1, None)
            elif self._state == "header" and self._header_events:
                self._error(end, "truncated", "the stream ended inside a message header (no <|message|>)")
                self._drop_message()
        return self.transcript

    @property
    def transcript(self) -> "Transcript":
        from .transcript import Transcript

        return Transcript(self.events, self.messages, self.errors, self.spans, channels=self.channels)

    # -- states --------------------------------------------------------------------------------

    def _in_start(self, ev: TokenEvent, token: int) -> None:
        if token == T.START:
            ev.kind, ev.text = "special", T.name_of(token)
            self._quiet = False
            self._state = "header"
            self._begin_message(ev.position, start_event=ev)
            return
        if T.is_special(token):
            ev.kind, ev.text = "special", T.name_of(token)
        else:
            ev.kind, ev.text = "stray", T.token_bytes(token).decode("utf-8", "replace")
        if not self._quiet:
            what = T.name_of(token) if T.is_special(token) else repr(ev.text)
            self._error(ev.position, "expected_start", f"expected <|start|>, got {what}", ev)
            self._quiet = True

    def _in_header(self, ev: TokenEvent, token: int) -> None:
        self._header_events.append(ev)
        ev.message = len(self.messages)
        if token == T.MESSAGE:
            ev.kind, ev.text = "special", T.name_of(token)
            self._header_done(ev)
        elif token in T.MESSAGE_END:
            ev.kind, ev.text = "special", T.name_of(token)
            self._missing_message(ev, token)
        elif token == T.START:
            ev.kind, ev.text = "special", T.name_of(token)
            self._header_events.pop()
            self._error(ev.position, "bad_header", "<|start|> inside a header: the previous message never got <|message|>", ev)
            self._drop_message()
            self._state, self._quiet = "header", False
            self._begin_message(ev.position, start_event=ev)
        elif token in (T.CHANNEL, T.CONSTRAIN):
            ev.kind, ev.text = "special", T.name_of(token)
            self._header_push(T.token_bytes(token))  # as bytes, like openai-harmony: it may cut a character
        elif T.is_special(token):
            ev.kind, ev.text = "special", T.name_of(token)
            self._error(ev.position, "special_in_header", f"{ev.text} inside a message header", ev)
            self._drop_message()
        else:
            ev.kind = "header"
            ev.text = self._header_push(T.token_bytes(token))

    def _in_content(self, ev: TokenEvent, token: int) -> None:
        h = self._header
        ev.role, ev.channel, ev.recipient, ev.content_type = h.role, h.channel, h.recipient, h.content_type
        ev.message = len(self.messages)
        if token in T.MESSAGE_END:
            ev.kind, ev.text = "special", T.name_of(token)
            self._complete(ev.position, token)
        elif token == T.START:
            ev.kind, ev.text = "special", T.name_of(token)
            ev.role = ev.channel = ev.recipient = ev.content_type = ev.message = None
            self._error(ev.position, "unterminated_message", "<|start|> inside message content (missing <|end|>)", ev)
            self._complete(ev.position - 1, None)
            self._state = "header"
            self._begin_message(ev.position, start_event=ev)
        elif T.is_special(token):
            ev.kind, ev.text = "special", T.name_of(token)
            self._error(ev.position, "special_in_content", f"{ev.text} inside message content (left out of the text)", ev)
        else:
            ev.kind = "content"
            ev.text, ok = self._utf8.push(T.token_bytes(token))
            if not ok:
                self._error(ev.position, "invalid_utf8", "content bytes are not valid UTF-8", ev)
            self._content.append(ev.text)

    # -- helpers -------------------------------------------------------------------------------

    def _begin_message(self, position: int, start_event: TokenEvent | None = None) -> None:
        self._msg_start = position
        self._header_events = [start_event] if start_event else []
        if start_event:
            start_event.message = len(self.messages)
        self._header_text: list[str] = []
        self._header_utf8 = _Utf8()
        self._header_valid = True
        self._utf8 = _Utf8()
        self._content: list[str] = []
        self._header: Header | None = None

    def _header_push(self, data: bytes) -> str:
        text, ok = self._header_utf8.push(data)
        self._header_text.append(text)
        self._header_valid &= ok
        return text

    def _header_string(self) -> str | None:
        """The header's text, or None when its bytes are not UTF-8 (openai-harmony refuses such a header)."""
        tail, ok = self._header_utf8.push(b"", final=True)
        self._header_text.append(tail)
        self._header_valid &= ok
        return "".join(self._header_text) if self._header_valid else None

    def _error(self, position: int, code: str, detail: str, ev: TokenEvent | None = None) -> None:
        self.errors.append(ParseError(position, code, detail, ev.id if ev else None))
        if ev is not None:
            ev.error = f"{ev.error}; {detail}" if ev.error else detail

    def _bad_id(self, ev: TokenEvent, code: str, detail: str) -> None:
        if self._state == "content":
            h = self._header
            ev.role, ev.channel, ev.recipient, ev.content_type = h.role, h.channel, h.recipient, h.content_type
            ev.message = len(self.messages)
            self._error(ev.position, code, detail + " (left out of the text)", ev)
        elif self._state == "header":
            self._header_events.append(ev)
            self._error(ev.position, code, detail + " (inside a header)", ev)
            self._drop_message()
        elif not self._quiet:
            self._error(ev.position, code, detail, ev)
            self._quiet = True

    def _drop_message(self) -> None:
        for e in self._header_events:
            e.message = None
        self._state, self._quiet = "start", True
        self._begin_message(len(self.events))

    def _header_done(self, ev: TokenEvent) -> None:
        text = self._header_string()
        try:
            if text is None:
                raise HeaderError("the header's bytes are not valid UTF-8")
            header = parse_header(text, self._next_role)
        except HeaderError as e:
            self._error(ev.position, "bad_header", str(e), ev)
            self._drop_message()
            return
        for quirk in header.quirks:
            self._error(ev.position, "odd_header", quirk, ev)
        self._next_role = None
        self._header = header
        for e in self._header_events:
            e.role, e.channel, e.recipient, e.content_type = header.role, header.channel, header.recipient, header.content_type
        self._state = "content"
        self._check(header, ev)

    def _check(self, h: Header, ev: TokenEvent) -> None:
        if h.role != "assistant":
            return
        if self.channels is not None:
            if h.channel is None:
                self._error(ev.position, "missing_channel", "assistant message without a channel", ev)
            elif h.channel not in self.channels:
                self._error(ev.position, "unknown_channel",
                            f"channel {h.channel!r} is not one of {', '.join(self.channels)}", ev)
        if h.recipient and self.recipients is not None and h.recipient not in self.recipients:
            self._error(ev.position, "unknown_recipient", f"no declared tool is called {h.recipient!r}", ev)
        if h.recipient and h.recipient.startswith("functions.") and h.channel == "analysis":
            self._error(ev.position, "function_call_on_analysis",
                        f"call to {h.recipient} on the analysis channel (function calls belong on commentary)", ev)

    def _missing_message(self, ev: TokenEvent, token: int) -> None:
        """A header ended by a stop token: read it as openai-harmony's non-strict mode does (role and
        channel from the header, its other words as the content). Without a known role (not the first
        message of a completion) the first word must be a role; an empty header gives no message."""
        self._error(ev.position, "missing_message", f"{ev.text} before <|message|>: header text kept as content", ev)
        text, role = self._header_string(), self._next_role
        try:
            if not text:  # no header at all, or bytes that are not UTF-8
                raise HeaderError("nothing to recover")
            header, content = recover_header(text, role)
            if role is None and header.role == "tool":  # a full transcript: only a plain role word counts
                raise HeaderError("no role")
        except HeaderError:
            self._drop_message()
            self._quiet = False
            return
        self._next_role = None
        self._header = header
        for e in self._header_events:
            e.role, e.channel = header.role, header.channel
            if e.kind == "header":
                e.kind = "content"
        self._content = [content]
        self._complete(ev.position, token)

    def _complete(self, end: int, terminator: int | None) -> None:
        tail, ok = self._utf8.push(b"", final=True)
        if tail:
            self._content.append(tail)
            last = next((e for e in reversed(self.events) if e.kind == "content"), None)
            if last is not None:
                last.text += tail
        if not ok:
            self._error(end, "invalid_utf8", "content ends inside a UTF-8 character")
        h = self._header
        author = Author(role=Role(h.role), name=h.name)
        message = Message(author=author, content=[TextContent(text="".join(self._content))])
        message.channel, message.recipient, message.content_type = h.channel, h.recipient, h.content_type
        self.spans.append(MessageSpan(len(self.messages), self._msg_start, end,
                                      None if terminator is None else T.name_of(terminator)))
        self.messages.append(message)
        if h.role == "system" and self._auto_channels:
            m = _VALID_CHANNELS.search(message.content[0].text)
            if m:
                self.channels = tuple(c.strip() for c in m.group(1).split(","))
        self._state = "start"
        self._begin_message(end + 1)
