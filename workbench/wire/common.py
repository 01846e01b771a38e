"""What every OpenAI wire format shares: errors, request checks, Harmony <-> wire mappings, stop strings.

No I/O here: these are functions of dicts, Harmony messages and ``TokenEvent``s.

- ``APIError``: a refused request in OpenAI's error shape (``{"error": {message, type, param, code}}``).
- ``number`` / ``flag`` / ``text_content`` / ``effort``: request checks that name the offending field.
- ``History``: builds the Harmony conversation from wire messages (instructions, user text, reasoning,
  tool calls and their outputs paired by call id).
- ``Segmenter``: a completion's ``TokenEvent``s -> segments (reasoning, content, call) with text deltas,
  the view every API's responses and stream chunks are made from.
- ``StopStrings``: cut content at the first stop string, holding back text that may start one.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

from openai_harmony import Author, Message, Role, ToolDescription

from ..harmony import Conversation, TokenEvent
from ..harmony import tokens as T

EFFORTS = ("low", "medium", "high")
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 408: "timeout_error", 411: "invalid_request_error",
          413: "invalid_request_error", 415: "invalid_request_error", 429: "rate_limit_error",
          503: "server_overloaded"}


class APIError(Exception):
    """A request we refuse (or could not serve): HTTP status, message, offending parameter, error code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    @property
    def type(self) -> str:
        return _TYPES.get(self.status, "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    @classmethod
    def from_body(cls, status: int, body: Any) -> "APIError":
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            return cls(status, str(body)[:500])
        return cls(status, str(err.get("message")), err.get("param"), err.get("code"))

    def __repr__(self) -> str:
        return f"APIError({self.status}, {self.message!r}, param={self.param!r})"


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


# -- request checks ----------------------------------------------------------------------------------

def number(body: dict, name: str, default, low, high, *, integer: bool = False, low_open: bool = False):
    """``body[name]`` checked to be a finite number in [low, high] (``default`` when absent or null)."""
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise APIError(400, f"'{name}' must be {'an integer' if integer else 'a number'}, not {value!r:.40}", name)
    if isinstance(value, float) and not math.isfinite(value):
        raise APIError(400, f"'{name}' must be finite", name)
    if value < low or value > high or (low_open and value == low):
        raise APIError(400, f"'{name}' = {value} is out of range {'(' if low_open else '['}{low}, {high}]", name)
    return value


def flag(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise APIError(400, f"'{name}' must be true or false, not {value!r:.40}", name)
    return value


def string(body: dict, name: str, default: str | None = None) -> str | None:
    value = body.get(name, default)
    if value is not None and not isinstance(value, str):
        raise APIError(400, f"'{name}' must be a string, not {type(value).__name__}", name)
    return value


def text_content(content: Any, where: str, param: str, kinds=("text", "input_text", "output_text")) -> str:
    """A message's content as text: a string, or a list of text parts (other parts are refused)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in kinds or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise APIError(400, f"{where}.content[{i}]: only text content parts are supported, not {kind!r:.40}",
                               param)
            parts.append(part["text"])
        return "".join(parts)
    raise APIError(400, f"{where}: 'content' must be a string or a list of text parts", param)


def effort(value: Any, param: str, default: str = "medium") -> str:
    if value is None:
        return default
    if value not in EFFORTS:
        raise APIError(400, f"'{param}' must be one of {', '.join(EFFORTS)}, not {value!r:.40}", param)
    return value


def check_model(body: dict, model_name: str) -> str:
    model = body.get("model")
    if not isinstance(model, str):
        raise APIError(400, "'model' is required and must be a string", "model")
    if model != model_name:
        raise APIError(404, f"the model {model!r:.80} does not exist; this server serves {model_name!r}", "model",
                       "model_not_found")
    return model


def sampling(body: dict) -> dict:
    """``temperature`` [0, 2], ``top_p`` (0, 1] and ``seed`` of a request, checked."""
    return {"temperature": float(number(body, "temperature", 1.0, 0.0, 2.0)),
            "top_p": float(number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)),
            "seed": number(body, "seed", None, -(2 ** 63), 2 ** 64 - 1, integer=True)}


BUILTIN_RECIPIENTS = {"python": ("python",), "browser": ("browser.search", "browser.open", "browser.find")}


def allowed_recipients(tool_choice, functions, builtins=()) -> tuple[str, ...] | None:
    """Recipients decoding may address under ``tool_choice`` (None: any declared): none -> no calls;
    required -> any declared function or built-in; a named function -> that one only."""
    if tool_choice == "auto":
        return None
    if tool_choice == "none":
        return ()
    if isinstance(tool_choice, dict):
        return (f"functions.{tool_choice['name']}",)
    return tuple(f"functions.{f}" for f in functions) + tuple(r for b in builtins for r in BUILTIN_RECIPIENTS[b])


def stop_list(body: dict, name: str = "stop") -> list[str]:
    stop = body.get(name)
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
        raise APIError(400, f"'{name}' must be a non-empty string or a list of up to 4 of them", name)
    return stops


def function_tool(spec: Any, where: str, param: str) -> ToolDescription:
    """``{"name", "description", "parameters"}`` (chat's ``function`` object or a Responses tool) -> Harmony."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise APIError(400, f"{where}: a function needs a 'name'", param)
    name = spec["name"]
    if not all(c.isalnum() or c in "_-" for c in name) or len(name) > 64:
        raise APIError(400, f"{where}: function name {name!r:.80} must be 1-64 letters, digits, '_' or '-'", param)
    params = spec.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise APIError(400, f"{where}: 'parameters' must be a JSON schema object", param)
    description = spec.get("description") or ""
    if not isinstance(description, str):
        raise APIError(400, f"{where}: 'description' must be a string", param)
    return ToolDescription.new(name, description, params or {"type": "object", "properties": {}})


# -- Harmony recipients <-> wire function names ------------------------------------------------------

def function_name(recipient: str) -> str:
    """``functions.get_weather`` -> ``get_weather``; a built-in (``python``, ``browser.search``) as is."""
    return recipient[len("functions."):] if recipient.startswith("functions.") else recipient


def is_function_call(message: Message) -> bool:
    return message.author.role == Role.ASSISTANT and bool(message.recipient) and message.recipient != "assistant" \
        and message.recipient.startswith("functions.")


# -- building a conversation from wire messages ------------------------------------------------------

class History:
    """Wire messages -> a Harmony ``Conversation`` (in order, as gpt-oss was trained to read them).

    System and developer texts become the developer instructions; reasoning becomes an ``analysis``
    message; a tool call a commentary message ``to=functions.NAME <|constrain|>json``; a tool output a
    message from ``functions.NAME`` to the assistant (its name found from the call id). Harmony's
    rendering drops earlier turns' reasoning once a final answer follows, and keeps it between calls.
    """

    def __init__(self, *, effort: str = "medium", functions: Iterable[ToolDescription] = (), builtins=()):
        self.instructions: list[str] = []
        self.functions = list(functions)
        self.builtins = list(builtins)  # tool objects with .namespace and .config()
        self.effort = effort
        self.body: list[Message] = []
        self.calls: dict[str, tuple[str, str | None]] = {}  # call id -> (recipient, channel)

    def instruct(self, text: str) -> None:
        if text:
            self.instructions.append(text)

    def user(self, text: str) -> None:
        self.body.append(Message.from_role_and_content(Role.USER, text))

    def assistant(self, text: str, channel: str = "final") -> None:
        m = Message.from_role_and_content(Role.ASSISTANT, text)
        m.channel = channel
        self.body.append(m)

    def reasoning(self, text: str) -> None:
        if text:
            self.assistant(text, "analysis")

    def call(self, call_id: str | None, name: str, arguments: str) -> None:
        recipient = name if name in ("python",) or name.startswith("browser.") else f"functions.{name}"
        m = Message.from_role_and_content(Role.ASSISTANT, arguments)
        if recipient.startswith("functions."):
            m.channel, m.content_type = "commentary", "<|constrain|>json"
        else:
            m.channel, m.content_type = "analysis", "code" if recipient == "python" else None
        m.recipient = recipient
        self.body.append(m)
        if call_id:
            self.calls[call_id] = (recipient, m.channel)

    def tool_output(self, call_id: str | None, text: str, where: str, param: str) -> None:
        if call_id not in self.calls:
            known = ", ".join(self.calls) or "none"
            raise APIError(400, f"{where}: no earlier tool call has the id {call_id!r:.80} (known: {known:.200})", param)
        recipient, channel = self.calls[call_id]
        m = Message.from_author_and_content(Author.new(Role.TOOL, recipient), text)
        m.channel, m.recipient = channel or "commentary", "assistant"
        self.body.append(m)

    def conversation(self, base: Conversation | None = None) -> Conversation:
        """The conversation (continuing ``base``, a stored earlier one, when given)."""
        if base is not None:
            conv = base.copy()
            conv.set_reasoning_effort(self.effort)
            if self.instructions:
                conv.developer("\n\n".join(self.instructions))
        else:
            conv = Conversation.new("\n\n".join(self.instructions) if self.instructions else None,
                                    reasoning_effort=self.effort)
        for fn in self.functions:
            conv.add_function(fn)
        conv.declare(self.builtins)
        return conv.extend(self.body)


# -- generated tokens -> segments ----------------------------------------------------------------------

@dataclass
class Segment:
    """One generated message as the wire sees it: ``kind`` reasoning (analysis), content (final, or a
    commentary preamble for the user) or call (addressed to a tool); ``text`` grows with each delta."""

    message: int
    kind: str
    channel: str | None
    recipient: str | None
    content_type: str | None
    text: str = ""
    terminator: str | None = None  # <|end|>, <|call|>, <|return|>, or None while open / when cut off
    positions: list[int] = field(default_factory=list)  # event positions of its content tokens

    @property
    def name(self) -> str:
        return function_name(self.recipient or "")


def segment_kind(channel: str | None, recipient: str | None) -> str:
    if recipient and recipient != "assistant":
        return "call"
    return "reasoning" if channel == "analysis" else "content"


class Segmenter:
    """Feed a completion's events; get ``("start", seg)``, ``("delta", seg, text, position)``, ``("end", seg)``.

    A segment starts at its ``<|message|>`` (when the header is known) and ends at its terminator or
    at ``finish()``. Broken messages (bad headers) never start a segment.
    """

    def __init__(self):
        self.segments: list[Segment] = []
        self.current: Segment | None = None

    def push(self, event: TokenEvent) -> list[tuple]:
        out: list[tuple] = []
        if event.kind == "special" and event.id == T.MESSAGE and event.message is not None and event.role == "assistant":
            self.current = Segment(event.message, segment_kind(event.channel, event.recipient), event.channel,
                                   event.recipient, event.content_type)
            self.segments.append(self.current)
            out.append(("start", self.current))
        elif self.current is not None and event.message == self.current.message:
            if event.kind == "content" and event.text:
                self.current.text += event.text
                self.current.positions.append(event.position)
                out.append(("delta", self.current, event.text, event.position))
            elif event.kind == "special" and event.id in T.MESSAGE_END:
                self.current.terminator = event.text
                out.append(("end", self.current))
                self.current = None
        elif self.current is not None and event.kind == "special" and event.id == T.START:
            out.append(("end", self.current))  # an unterminated message: <|start|> inside content
            self.current = None
        return out

    def finish(self) -> list[tuple]:
        if self.current is None:
            return []
        seg, self.current = self.current, None
        return [("end", seg)]


def reasoning_tokens(events: Iterable[TokenEvent]) -> int:
    """Tokens of analysis messages (headers included), counted on finished events."""
    return sum(e.channel == "analysis" for e in events)


def token_text(token: int) -> str:
    return T.name_of(token) if T.is_special(token) else T.token_bytes(token).decode("utf-8", "replace")


def logprob_entry(token: int, logprob) -> dict:
    """OpenAI's per-token logprob object from a ``TokenLogprob``."""
    def one(t: int, lp: float) -> dict:
        return {"token": token_text(t), "logprob": max(lp, -9999.0), "bytes": list(T.token_bytes(t))
                if not T.is_special(t) else list(T.name_of(t).encode())}

    return {**one(token, logprob.logprob), "top_logprobs": [one(t, lp) for t, lp in logprob.top]}


# -- stop strings ------------------------------------------------------------------------------------

class StopStrings:
    """``push(text) -> (text to emit now, stopped)``; text that could begin a stop string is held back
    until it can be told apart; ``flush()`` returns what is held when the stream ends without a stop."""

    def __init__(self, stops: Iterable[str]):
        self.stops = [s for s in stops if s]
        self.held = ""

    def push(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        buf = self.held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.held = ""
            return buf[:min(hits)], True
        keep = 0
        for s in self.stops:  # the longest tail of buf that is a proper prefix of a stop string
            for k in range(min(len(s) - 1, len(buf)), keep, -1):
                if buf.endswith(s[:k]):
                    keep = k
                    break
        self.held = buf[len(buf) - keep:] if keep else ""
        return buf[:len(buf) - keep], False

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held
