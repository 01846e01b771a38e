"""Chat completions (``POST /v1/chat/completions``) <-> Harmony, both directions, no I/O.

Server side: ``parse_chat_request(body)`` checks a request and builds its Harmony ``Conversation``;
``ChoiceBuilder`` turns a choice's generated ``TokenEvent``s into stream deltas and the final message;
``completion`` / ``chunk`` wrap them in OpenAI's envelopes.

Client side: ``chat_request(conv)`` is the conversation as a request body (messages and tools), and
``HarmonyWriter`` re-encodes a streamed (or whole) answer as a Harmony completion, token ids included.

The mapping (as vLLM serves gpt-oss, and as OpenAI's gpt-oss clients read it):

======================================== ==================================================================
Harmony                                  chat completions
======================================== ==================================================================
developer instructions                   ``system`` and ``developer`` messages (joined)
function tools (developer message)       ``tools`` (type ``function``)
``analysis`` message                     ``reasoning`` on the assistant message / delta (``reasoning_content``
                                         too, the older name)
``final`` message, commentary preamble   ``content``
commentary ``to=functions.NAME`` call    an entry of ``tool_calls`` (id, name, JSON arguments), streamed as
                                         the name first, then argument deltas; several calls = parallel
message from ``functions.NAME``          a ``tool`` message (``tool_call_id`` names the call)
``<|return|>`` / ``<|call|>`` / cut off  ``finish_reason`` stop / tool_calls / length
======================================== ==================================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from openai_harmony import Role

from ..harmony import Conversation, encoding, text_of
from ..harmony import tokens as T
from .common import (APIError, History, Segmenter, StopStrings, allowed_recipients, check_model, effort, flag,
                     function_name, function_tool, logprob_entry, new_id, number, reasoning_tokens, sampling, stop_list,
                     text_content)

MAX_MESSAGES = 10_000
FINISH = {"return": "stop", "call": "tool_calls", "end": "stop", "length": "length", "empty": "length",
          "stop": "stop"}


@dataclass
class ChatRequest:
    """A checked chat-completions request."""

    conversation: Conversation
    model: str
    stream: bool = False
    include_usage: bool = False
    n: int = 1
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    top_logprobs: int = 0
    tool_choice: str | dict = "auto"  # auto | none | required | {"name": NAME}
    parallel_tool_calls: bool = True
    functions: tuple[str, ...] = ()
    response_format: dict | None = None

    @property
    def allowed_recipients(self) -> tuple[str, ...] | None:
        return allowed_recipients(self.tool_choice, self.functions, getattr(self, "builtins", ()))

    @property
    def must_call(self) -> bool:
        return self.tool_choice == "required" or isinstance(self.tool_choice, dict)


def parse_chat_request(body: dict, model_name: str) -> ChatRequest:
    """Check a request body (cheap: no tokenising) and build its conversation; raises ``APIError``."""
    model = check_model(body, model_name)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", "messages")
    if len(messages) > MAX_MESSAGES:
        raise APIError(400, f"too many messages ({len(messages)}; at most {MAX_MESSAGES})", "messages")
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise APIError(400, "'tools' must be a list", "tools")
    functions = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise APIError(400, f"tools[{i}]: only tools of type 'function' are supported", "tools")
        functions.append(function_tool(tool.get("function"), f"tools[{i}].function", "tools"))
    names = tuple(f.name for f in functions)
    if len(set(names)) != len(names):
        raise APIError(400, "two tools share a name", "tools")
    choice = _tool_choice(body.get("tool_choice"), names)
    req_effort = effort(body.get("reasoning_effort"), "reasoning_effort")
    history = History(effort=req_effort, functions=functions)
    for i, m in enumerate(messages):
        _add_message(history, m, f"messages[{i}]")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise APIError(400, "'stream_options' must be an object", "stream_options")
    max_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    logprobs = flag(body, "logprobs", False)
    top = number(body, "top_logprobs", 0, 0, 20, integer=True)
    if top and not logprobs:
        raise APIError(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema")):
        raise APIError(400, "'response_format' must be {'type': 'text' | 'json_object' | 'json_schema', ...}",
                       "response_format")
    if fmt is not None and fmt["type"] == "json_schema" and not isinstance(
            (fmt.get("json_schema") or {}).get("schema", {}), dict):
        raise APIError(400, "'response_format.json_schema.schema' must be an object", "response_format")
    return ChatRequest(
        conversation=history.conversation(), model=model, stream=flag(body, "stream", False),
        include_usage=bool(stream_options.get("include_usage", False)),
        n=number(body, "n", 1, 1, 16, integer=True),
        max_tokens=number(body, max_key, None, 1, 2 ** 31, integer=True),
        **sampling(body), stop=stop_list(body),
        logprobs=logprobs, top_logprobs=top, tool_choice=choice,
        parallel_tool_calls=flag(body, "parallel_tool_calls", True), functions=names,
        response_format=None if fmt is None or fmt["type"] == "text" else fmt)


def _tool_choice(value: Any, names: tuple[str, ...]):
    if value is None:
        return "auto" if names else "none"
    if value in ("auto", "none", "required"):
        if value == "required" and not names:
            raise APIError(400, "'tool_choice' is 'required' but no tools were given", "tool_choice")
        return value
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict):
        name = value["function"].get("name")
        if name not in names:
            raise APIError(400, f"'tool_choice' names the function {name!r:.80}, which is not among the tools",
                           "tool_choice")
        return {"name": name}
    raise APIError(400, "'tool_choice' must be 'auto', 'none', 'required' or "
                        "{'type': 'function', 'function': {'name': ...}}", "tool_choice")


def _add_message(history: History, m: Any, where: str) -> None:
    if not isinstance(m, dict):
        raise APIError(400, f"{where} must be an object", "messages")
    role = m.get("role")
    if role in ("system", "developer"):
        history.instruct(text_content(m.get("content"), where, "messages"))
    elif role == "user":
        history.user(text_content(m.get("content"), where, "messages"))
    elif role == "assistant":
        reasoning = m.get("reasoning", m.get("reasoning_content"))
        if reasoning is not None:
            if not isinstance(reasoning, str):
                raise APIError(400, f"{where}: 'reasoning' must be a string", "messages")
            history.reasoning(reasoning)
        content = m.get("content")
        text = "" if content is None else text_content(content, where, "messages")
        calls = m.get("tool_calls") or []
        if not isinstance(calls, list):
            raise APIError(400, f"{where}: 'tool_calls' must be a list", "messages")
        if text:
            history.assistant(text, "commentary" if calls else "final")  # text with calls is a preamble
        for j, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(
                    fn.get("arguments", ""), str):
                raise APIError(400, f"{where}.tool_calls[{j}] needs a function with a name and string arguments",
                               "messages")
            history.call(call.get("id"), fn["name"], fn.get("arguments", ""))
    elif role == "tool":
        history.tool_output(m.get("tool_call_id"), text_content(m.get("content"), where, "messages"), where,
                            "messages")
    else:
        raise APIError(400, f"{where}: role {role!r:.40} is not supported (system, developer, user, assistant, tool)",
                       "messages")


# -- server: generated events -> message, deltas -------------------------------------------------------

class ChoiceBuilder:
    """One choice: ``push(event, logprob)`` returns the stream deltas it causes; ``finish(stop_reason)``
    the last ones; ``message()`` the whole assistant message afterwards."""

    def __init__(self, index: int = 0, *, stop: Iterable[str] = (), logprobs: bool = False):
        self.index, self.want_logprobs = index, logprobs
        self.segmenter = Segmenter()
        self.stops = StopStrings(stop)
        self.reasoning, self.content = [], []
        self.calls: list[dict] = []
        self.logprobs: list[dict] = []
        self.stopped = False  # a stop string was seen: the caller should stop generating

    def push(self, event, logprob=None) -> list[dict]:
        out = []
        for action in self.segmenter.push(event):
            if action[0] == "start" and action[1].kind == "call":
                seg = action[1]
                call = {"index": len(self.calls), "id": new_id("call_"), "type": "function",
                        "function": {"name": seg.name, "arguments": ""}}
                self.calls.append(call)
                out.append({"tool_calls": [dict(call, function=dict(call["function"]))]})
            elif action[0] == "delta":
                _, seg, text, _pos = action
                if seg.kind == "reasoning":
                    self.reasoning.append(text)
                    out.append({"reasoning": text, "reasoning_content": text})
                elif seg.kind == "call":
                    self.calls[-1]["function"]["arguments"] += text
                    out.append({"tool_calls": [{"index": self.calls[-1]["index"], "function": {"arguments": text}}]})
                elif not self.stopped:
                    emit, hit = self.stops.push(text)
                    self.stopped = hit
                    if emit:
                        self.content.append(emit)
                        delta = {"content": emit}
                        if self.want_logprobs and logprob is not None:
                            entry = logprob_entry(event.id, logprob)
                            self.logprobs.append(entry)
                            delta["logprobs"] = {"content": [entry]}
                        out.append(delta)
        return out

    def finish(self) -> list[dict]:
        self.segmenter.finish()
        rest = self.stops.flush() if not self.stopped else ""
        if rest:
            self.content.append(rest)
            return [{"content": rest}]
        return []

    def finish_reason(self, stop_reason: str) -> str:
        if self.stopped:
            return "stop"
        if self.calls and stop_reason in ("call", "return", "end"):
            return "tool_calls"
        return FINISH.get(stop_reason, "stop")

    def message(self) -> dict:
        reasoning = "".join(self.reasoning) or None
        message = {"role": "assistant", "content": "".join(self.content) if self.content or not self.calls else None,
                   "reasoning": reasoning, "reasoning_content": reasoning}
        if self.calls:
            message["tool_calls"] = [{"id": c["id"], "type": "function", "function": dict(c["function"])}
                                     for c in self.calls]
        return message


def usage(prompt_tokens: int, completions: Iterable[list]) -> dict:
    """Usage over choices, each given as its list of finished ``TokenEvent``s."""
    completions = list(completions)
    n = sum(len(c) for c in completions)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n,
            "completion_tokens_details": {"reasoning_tokens": sum(reasoning_tokens(c) for c in completions)}}


def completion(rid: str, created: int, model: str, choices: list[dict], usage_: dict) -> dict:
    return {"id": rid, "object": "chat.completion", "created": created, "model": model, "choices": choices,
            "usage": usage_}


def choice(builder: ChoiceBuilder, stop_reason: str) -> dict:
    out = {"index": builder.index, "message": builder.message(), "finish_reason": builder.finish_reason(stop_reason),
           "logprobs": {"content": builder.logprobs} if builder.want_logprobs else None}
    return out


def chunk(rid: str, created: int, model: str, index: int, delta: dict, finish: str | None = None) -> dict:
    logprobs = delta.pop("logprobs", None)
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]}


def usage_chunk(rid: str, created: int, model: str, usage_: dict) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
            "usage": usage_}


# -- client: conversation -> request ---------------------------------------------------------------

PYTHON_FUNCTION = {"name": "python", "description": "Run Python code; returns its output.",
                   "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}


def wire_name(recipient: str) -> str:
    """A recipient as a function name a chat server accepts: ``browser.search`` -> ``browser_search``."""
    return function_name(recipient).replace(".", "_")


def recipient_for(name: str, builtins: Iterable[str]) -> str:
    """A returned function name back to a Harmony recipient (built-ins were offered as functions)."""
    builtins = list(builtins)
    if name == "python" and "python" in builtins:
        return "python"
    for ns in builtins:
        if name.startswith(ns + "_"):
            return f"{ns}.{name[len(ns) + 1:]}"
    return f"functions.{name}"


def tool_functions(conv: Conversation) -> list[dict]:
    """The conversation's tools as ``tools`` entries (built-ins offered as functions)."""
    out = []
    for ns_name, ns in conv.namespaces.items():
        if ns_name == "python":
            # the declared description: PythonTool states its real mode and limits
            out.append({"type": "function", "function": {**PYTHON_FUNCTION, "description": ns.description
                                                         or PYTHON_FUNCTION["description"]}})
            continue
        for tool in ns.tools:
            name = tool.name if ns_name == "functions" else f"{ns_name}_{tool.name}"
            fn = {"name": name, "description": tool.description,
                  "parameters": tool.parameters or {"type": "object", "properties": {}}}
            out.append({"type": "function", "function": fn})
    return out


def call_arguments(recipient: str, text: str) -> str:
    return json.dumps({"code": text}) if recipient == "python" else text


def chat_messages(conv: Conversation) -> list[dict]:
    """The conversation as chat messages: analysis goes back as ``reasoning`` on the next assistant
    message; consecutive calls form one assistant message with several ``tool_calls``; tool answers
    pair with their calls by id (in order per recipient)."""
    out: list[dict] = []
    dev = conv._developer_content()
    if dev is not None and dev.instructions:
        out.append({"role": "system", "content": dev.instructions})
    reasoning: list[str] = []
    pending: list[tuple[str, str]] = []  # (call id, recipient) not yet answered
    for m in conv.messages:
        role = m.author.role
        if role == Role.USER:
            out.append({"role": "user", "content": text_of(m)})
        elif role == Role.ASSISTANT and m.channel == "analysis" and not m.recipient:
            reasoning.append(text_of(m))
        elif role == Role.ASSISTANT and m.recipient:
            call_id = f"call_{len(out)}_{len(pending)}"
            call = {"id": call_id, "type": "function",
                    "function": {"name": wire_name(m.recipient), "arguments": call_arguments(m.recipient, text_of(m))}}
            last = out[-1] if out else None
            if last and last["role"] == "assistant" and last.get("tool_calls") and not reasoning:
                last["tool_calls"].append(call)
            else:
                msg: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
                if reasoning:
                    msg["reasoning"], reasoning = "\n".join(reasoning), []
                out.append(msg)
            pending.append((call_id, m.recipient))
        elif role == Role.ASSISTANT:
            msg = {"role": "assistant", "content": text_of(m)}
            if reasoning:
                msg["reasoning"], reasoning = "\n".join(reasoning), []
            out.append(msg)
        elif role == Role.TOOL:
            name = m.author.name
            i = next((k for k, (_, r) in enumerate(pending) if r == name), 0 if pending else None)
            call_id = pending.pop(i)[0] if i is not None else "call_unknown"
            out.append({"role": "tool", "tool_call_id": call_id, "content": text_of(m)})
    return out


def chat_request(conv: Conversation, model: str, *, max_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 seed: int | None = None, reasoning_effort: str | None = None, stream: bool = True) -> dict:
    body: dict[str, Any] = {"model": model, "messages": chat_messages(conv), "stream": stream,
                            "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
    tools = tool_functions(conv)
    if tools:
        body["tools"] = tools
    if seed is not None:
        body["seed"] = seed
    effort_ = reasoning_effort or conv.reasoning_effort
    if effort_:
        body["reasoning_effort"] = effort_
    return body


# -- client: answer -> Harmony tokens -------------------------------------------------------------------

class HarmonyWriter:
    """Re-encode a chat answer as a Harmony completion: reasoning as an ``analysis`` message, content as
    ``final`` (ending ``<|return|>``), each tool call as ``commentary to=functions.NAME <|constrain|>json``
    (built-ins as ``analysis to=python code`` / ``to=browser.*``) ending ``<|call|>``. The text is the
    server's; the token ids are ours. Feed ``delta(...)`` per streamed delta (or once with a whole
    message), then ``finish(finish_reason)``."""

    def __init__(self, builtins: Iterable[str] = ()):
        self.enc = encoding()
        self.builtins = list(builtins)
        self.open: str | None = None  # "analysis" | "final" while a text message is open
        self.started = False
        self.calls: dict[int, list] = {}  # index -> [name, [argument pieces]]

    def _header(self, header: str) -> list[int]:
        prefix = "<|start|>assistant" if self.started else ""
        self.started = True
        return self.enc.encode(prefix + header + "<|message|>", allowed_special="all")

    def _text(self, text: str) -> list[int]:
        return self.enc.encode(text, disallowed_special=())

    def _switch(self, kind: str) -> list[int]:
        if self.open == kind:
            return []
        out = [T.END] if self.open else []
        self.open = kind
        return out + self._header(f"<|channel|>{kind}")

    def delta(self, reasoning: str | None = None, content: str | None = None, tool_calls=None) -> list[int]:
        out: list[int] = []
        if reasoning:
            out += self._switch("analysis") + self._text(reasoning)
        if content:
            out += self._switch("final") + self._text(content)
        for i, call in enumerate(tool_calls or []):
            index = _get(call, "index", i)
            fn = _get(call, "function", None)
            entry = self.calls.setdefault(index if index is not None else i, [None, []])
            if fn is not None and _get(fn, "name", None) and entry[0] is None:
                entry[0] = _get(fn, "name", None)
            if fn is not None and _get(fn, "arguments", None):
                entry[1].append(_get(fn, "arguments", None))
        return out

    def finish(self, finish_reason: str | None) -> list[int]:
        out: list[int] = []
        if self.calls:
            if self.open:
                out.append(T.END)
                self.open = None
            ordered = [self.calls[k] for k in sorted(self.calls) if self.calls[k][0]]
            for i, (name, pieces) in enumerate(ordered):
                recipient = recipient_for(name, self.builtins)
                args = "".join(pieces)
                if recipient == "python":
                    try:
                        args = json.loads(args)["code"]
                    except (ValueError, KeyError, TypeError):
                        pass
                    header = "<|channel|>analysis to=python code"
                else:
                    header = f"<|channel|>commentary to={recipient} <|constrain|>json"
                out += self._header(header) + self._text(args)
                if finish_reason != "length" or i < len(ordered) - 1:
                    out.append(T.CALL)
        elif self.open and finish_reason != "length":
            out.append(T.RETURN if self.open == "final" else T.END)
        return out


def _get(obj, name, default):
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def stream_tokens(chunks: Iterable, builtins: Iterable[str] = ()) -> Iterator[int]:
    """Streamed chat chunks (openai client objects or dicts) -> Harmony completion token ids."""
    writer = HarmonyWriter(builtins)
    finish = None
    for c in chunks:
        choices = _get(c, "choices", None) or []
        if not choices:
            continue
        ch = choices[0]
        d = _get(ch, "delta", None)
        if d is not None:
            reasoning = _get(d, "reasoning", None) or _get(d, "reasoning_content", None)
            yield from writer.delta(reasoning, _get(d, "content", None), _get(d, "tool_calls", None))
        finish = _get(ch, "finish_reason", None) or finish
    yield from writer.finish(finish)


def message_tokens(response, builtins: Iterable[str] = ()) -> list[int]:
    """A whole chat completion (first choice) -> Harmony completion token ids."""
    ch = _get(response, "choices", [])[0]
    m = _get(ch, "message", None)
    writer = HarmonyWriter(builtins)
    tokens = writer.delta(_get(m, "reasoning", None) or _get(m, "reasoning_content", None), _get(m, "content", None),
                          _get(m, "tool_calls", None))
    return tokens + writer.finish(_get(ch, "finish_reason", None))
