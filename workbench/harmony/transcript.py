"""``Transcript``: the token events, messages and errors of one decoded token stream.

>>> from workbench.harmony import encoding
>>> ids = encoding().encode("<|channel|>analysis<|message|>Think.<|end|>"
...                         "<|start|>assistant<|channel|>final<|message|>Done.<|return|>", allowed_special="all")
>>> t = parse_tokens(ids)
>>> t
Transcript(14 tokens, 2 messages, 0 errors)
>>> t.final
'Done.'
>>> t.to_dataframe()[["position", "kind", "text", "channel"]].iloc[-2:].values.tolist()
[[12, 'content', '.', 'final'], [13, 'special', '<|return|>', 'final']]

A transcript is plain data: ``to_dict()`` gives JSON-ready dicts and ``Transcript.from_dict`` reads
them back, so widgets and eval logs can store and reload it.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from openai_harmony import Message, Role

from .stream import MessageSpan, ParseError, StreamDecoder, TokenEvent


@dataclass
class Transcript:
    events: list[TokenEvent]
    messages: list[Message]
    errors: list[ParseError]
    spans: list[MessageSpan] = field(default_factory=list)
    channels: tuple[str, ...] | None = None

    # -- reading --------------------------------------------------------------------------------

    @property
    def tokens(self) -> list[int]:
        return [e.id for e in self.events]

    @property
    def ok(self) -> bool:
        return not self.errors

    def texts(self, channel: str | None = None) -> list[str]:
        """Text of each message (on ``channel`` if given)."""
        return [_text(m) for m in self.messages if channel is None or m.channel == channel]

    @property
    def stop_reason(self) -> str:
        """How the completion ended: ``return`` (<|return|>: the turn is done), ``call`` (<|call|>: a tool
        call waits for its answer), ``end`` (stopped right after an <|end|>), ``length`` (cut off inside a
        message or header) or ``empty`` (no tokens)."""
        if not self.events:
            return "empty"
        last = self.events[-1]
        if last.kind == "special" and last.text in ("<|return|>", "<|call|>", "<|end|>") and self.spans \
                and self.spans[-1].end == last.position:
            return {"<|return|>": "return", "<|call|>": "call", "<|end|>": "end"}[last.text]
        return "length"

    @property
    def final(self) -> str | None:
        """Text of the last message on the final channel (None if there is none)."""
        finals = self.texts("final")
        return finals[-1] if finals else None

    def message_events(self, index: int) -> list[TokenEvent]:
        return [e for e in self.events if e.message == index]

    # -- tables and JSON ------------------------------------------------------------------------

    def to_dataframe(self):
        """One row per token: position, id, text, kind, role, channel, recipient, content_type, message, error."""
        import pandas as pd

        columns = ["position", "id", "text", "kind", "role", "channel", "recipient", "content_type", "message", "error"]
        df = pd.DataFrame([e.to_dict() for e in self.events], columns=columns)
        df["message"] = df["message"].astype("Int64")
        return df

    def messages_dataframe(self):
        """One row per message: index, role, name, channel, recipient, content_type, text, start, end, terminator."""
        import pandas as pd

        rows = []
        for span, m in zip(self.spans, self.messages):
            rows.append({"index": span.index, "role": m.author.role.value, "name": m.author.name, "channel": m.channel,
                         "recipient": m.recipient, "content_type": m.content_type, "text": _text(m),
                         "start": span.start, "end": span.end, "terminator": span.terminator})
        return pd.DataFrame(rows, columns=["index", "role", "name", "channel", "recipient", "content_type", "text",
                                           "start", "end", "terminator"])

    def to_dict(self) -> dict:
        return {
            "events": [e.to_dict() for e in self.events],
            "messages": [json.loads(m.to_json()) for m in self.messages],
            "errors": [e.to_dict() for e in self.errors],
            "spans": [s.to_dict() for s in self.spans],
            "channels": list(self.channels) if self.channels is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Transcript":
        return cls(
            events=[TokenEvent.from_dict(e) for e in data["events"]],
            messages=[Message.from_dict(m) for m in data["messages"]],
            errors=[ParseError.from_dict(e) for e in data["errors"]],
            spans=[MessageSpan(**s) for s in data.get("spans", [])],
            channels=tuple(data["channels"]) if data.get("channels") is not None else None,
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Transcript":
        return cls.from_dict(json.loads(text))

    # -- display --------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"Transcript({len(self.events)} tokens, {len(self.messages)} messages, {len(self.errors)} errors)"

    def __str__(self) -> str:
        lines = [repr(self)]
        for span, m in zip(self.spans, self.messages):
            who = m.author.name or m.author.role.value
            head = who + (f" [{m.channel}]" if m.channel else "") + (f" to={m.recipient}" if m.recipient else "")
            text = _text(m)
            lines.append(f"  #{span.index} tokens {span.start}-{span.end} {head}: {text[:120]!r}"
                         + ("..." if len(text) > 120 else ""))
        lines += [f"  ! {e}" for e in self.errors]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """Escaped HTML for notebooks (model text is untrusted)."""
        rows = "".join(
            f"<tr><td>{span.index}</td><td>{html.escape(m.author.name or m.author.role.value)}</td>"
            f"<td>{html.escape(m.channel or '')}</td><td>{html.escape(m.recipient or '')}</td>"
            f"<td><pre style='white-space:pre-wrap;margin:0'>{html.escape(_text(m))}</pre></td></tr>"
            for span, m in zip(self.spans, self.messages)
        )
        errors = "".join(f"<li>{html.escape(str(e))}</li>" for e in self.errors)
        return (f"<div><b>{html.escape(repr(self))}</b><table><tr><th>#</th><th>author</th><th>channel</th>"
                f"<th>to</th><th>text</th></tr>{rows}</table>" + (f"<ul>{errors}</ul>" if errors else "") + "</div>")


def _text(m: Message) -> str:
    return "".join(getattr(c, "text", "") for c in m.content)


def parse_tokens(
    tokens: Iterable[int],
    role: str | Role | None = "assistant",
    *,
    channels: Sequence[str] | str | None = "auto",
    recipients: Iterable[str] | None = None,
) -> Transcript:
    """Decode a completion (``role`` given: it starts right after ``<|start|>assistant``) or a full
    transcript (first token ``<|start|>``). Never raises on bad input: see ``StreamDecoder``."""
    decoder = StreamDecoder(role, channels=channels, recipients=recipients)
    for t in tokens:
        decoder.push(t)
    return decoder.finish()
