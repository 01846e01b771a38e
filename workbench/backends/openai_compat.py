"""``OpenAIBackend``: any OpenAI-compatible chat-completions server (vLLM, Ollama, ...) via ``openai``.

The server runs the model and its own Harmony parsing; we send the conversation as chat messages
and stream back reasoning (``reasoning_content`` in vLLM's older convention, ``reasoning`` in newer
vLLM and Ollama), content and tool calls. To give the rest of the workbench one kind of stream, the
deltas are re-encoded as a Harmony completion: reasoning as an ``analysis`` message, content as a
``final`` message ending in ``<|return|>``, a tool call as ``commentary to=functions.NAME
<|constrain|>json`` ending in ``<|call|>``. The text is the server's; the token ids are ours.

Conversation -> chat messages: developer instructions become a ``system`` message, function tools the
``tools`` parameter, analysis is passed back as ``reasoning`` on the next assistant message (so
reasoning survives between tool calls), tool calls and tool answers pair up by ``tool_call_id``.
Built-in tools are offered as functions: ``python`` (argument ``code``) and ``browser_search``,
``browser_open``, ``browser_find``; calls to them come back addressed to ``python`` / ``browser.*``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator, Sequence

from openai_harmony import Role, TextContent

from ..harmony import Conversation, encoding
from ..harmony import tokens as T
from .base import Backend

PYTHON_FUNCTION = {"name": "python", "description": "Run Python code statelessly; returns its output.",
                   "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access_token|password|secret)=)[^&\s#]*")


def redact_url(text: str) -> str:
    """``text`` with credentials taken out of every URL in it (``user:pass@`` and key/token query
    values become ``***``), so base URLs can go into logs, reprs and eval records.

    >>> redact_url("http://user:pw@host:8000/v1?api_key=sk-1&x=2")
    'http://***@host:8000/v1?api_key=***&x=2'
    """
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def _text(message) -> str:
    return "".join(c.text for c in message.content if isinstance(c, TextContent))


def tool_functions(conv: Conversation) -> list[dict]:
    """The conversation's tools as chat-completions ``tools`` entries."""
    out = []
    for ns_name, ns in conv.namespaces.items():
        if ns_name == "python":  # the declared description (PythonTool states its real limits), if any
            out.append({"type": "function", "function": {**PYTHON_FUNCTION,
                                                         "description": ns.description or PYTHON_FUNCTION["description"]}})
            continue
        for tool in ns.tools:
            name = tool.name if ns_name == "functions" else f"{ns_name}_{tool.name}"
            fn = {"name": name, "description": tool.description,
                  "parameters": tool.parameters or {"type": "object", "properties": {}}}
            out.append({"type": "function", "function": fn})
    return out


def recipient_for(name: str, builtins: Sequence[str]) -> str:
    """Map a returned function name back to a Harmony recipient."""
    if name == "python" and "python" in builtins:
        return "python"
    for ns in builtins:
        if name.startswith(ns + "_"):
            return f"{ns}.{name[len(ns) + 1:]}"
    return f"functions.{name}"


def chat_messages(conv: Conversation) -> list[dict]:
    """The conversation as chat-completions messages (see the module docstring)."""
    out: list[dict] = []
    dev = conv._developer_content()
    if dev is not None and dev.instructions:
        out.append({"role": "system", "content": dev.instructions})
    reasoning: list[str] = []
    pending_ids: list[str] = []
    for m in conv.messages:
        role = m.author.role
        if role == Role.USER:
            out.append({"role": "user", "content": _text(m)})
        elif role == Role.ASSISTANT and m.channel == "analysis" and not m.recipient:
            reasoning.append(_text(m))
        elif role == Role.ASSISTANT:
            msg: dict[str, Any] = {"role": "assistant", "content": None if m.recipient else _text(m)}
            if reasoning:
                msg["reasoning"] = "\n".join(reasoning)
                reasoning = []
            if m.recipient:
                call_id = f"call_{len(out)}"
                pending_ids.append(call_id)
                name, args = m.recipient, _text(m)
                if name == "python":
                    args = json.dumps({"code": args})
                elif not name.startswith("functions."):
                    name = name.replace(".", "_", 1)
                msg["tool_calls"] = [{"id": call_id, "type": "function",
                                      "function": {"name": name.removeprefix("functions."), "arguments": args}}]
            out.append(msg)
        elif role == Role.TOOL:
            call_id = pending_ids.pop(0) if pending_ids else "call_unknown"
            out.append({"role": "tool", "tool_call_id": call_id, "content": _text(m)})
    return out


class OpenAIBackend(Backend):
    """``OpenAIBackend("openai/gpt-oss-20b", base_url="http://127.0.0.1:8000/v1")`` (vLLM) or
    ``OpenAIBackend("gpt-oss:20b", base_url="http://127.0.0.1:11434/v1")`` (Ollama)."""

    name = "openai"
    token_level = False

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None, client=None,
                 timeout: float = 600.0, extra_body: dict | None = None):
        if client is None:
            import openai

            client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout)
        self.client, self.model, self.extra_body = client, model, extra_body or {}

    def generate(self, prompt: Conversation | Sequence[int], *, max_new_tokens: int = 2048, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int | None = None, reasoning_effort: str | None = None) -> Iterator[int]:
        if not isinstance(prompt, Conversation):
            raise TypeError("OpenAIBackend needs a Conversation (a chat-completions server takes messages, not token ids)")
        tools = tool_functions(prompt)
        kwargs: dict[str, Any] = dict(model=self.model, messages=chat_messages(prompt), stream=True,
                                      max_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        if tools:
            kwargs["tools"] = tools
        if seed is not None:
            kwargs["seed"] = seed
        effort = reasoning_effort or prompt.reasoning_effort
        if effort:
            kwargs["reasoning_effort"] = effort
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        builtins = [ns for ns in prompt.namespaces if ns != "functions"]
        yield from _HarmonyWriter(builtins).run(self.client.chat.completions.create(**kwargs))

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.model!r}, base_url={redact_url(str(getattr(self.client, 'base_url', '')))!r})"


class _HarmonyWriter:
    """Turn streamed chat-completion chunks into Harmony completion tokens."""

    def __init__(self, builtins: Sequence[str]):
        self.enc = encoding()
        self.builtins = builtins
        self.open: str | None = None  # "analysis" | "final" | "call"
        self.started = False
        self.call_name: str | None = None
        self.call_args: list[str] = []

    def _header(self, header: str) -> list[int]:
        prefix = "<|start|>assistant" if self.started else ""
        self.started = True
        return self.enc.encode(prefix + header + "<|message|>", allowed_special="all")

    def _text(self, text: str) -> list[int]:
        return self.enc.encode(text, disallowed_special=())

    def _switch(self, kind: str) -> list[int]:
        out = []
        if self.open == kind:
            return out
        if self.open in ("analysis", "final"):
            out.append(T.END)
        self.open = kind
        if kind in ("analysis", "final"):
            out += self._header(f"<|channel|>{kind}")
        return out

    def run(self, stream) -> Iterator[int]:
        finish = None
        for chunk in stream:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            delta = choice.delta
            reasoning = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
            if reasoning:
                yield from self._switch("analysis") + self._text(reasoning)
            if delta.content:
                yield from self._switch("final") + self._text(delta.content)
            for call in getattr(delta, "tool_calls", None) or []:
                if call.index not in (0, None):
                    continue  # Harmony models make one call at a time; later parallel calls are ignored
                fn = call.function
                if fn is not None and fn.name and self.call_name is None:
                    yield from self._switch("call")
                    self.call_name = fn.name
                if fn is not None and fn.arguments:
                    self.call_args.append(fn.arguments)
            finish = choice.finish_reason or finish
        if self.call_name is not None:
            recipient = recipient_for(self.call_name, self.builtins)
            args = "".join(self.call_args)
            if recipient == "python":
                try:
                    args = json.loads(args)["code"]
                except (ValueError, KeyError, TypeError):
                    pass
                header = "<|channel|>analysis to=python code"
            else:
                header = f"<|channel|>commentary to={recipient} <|constrain|>json"
            yield from self._header(header) + self._text(args)
            if finish != "length":
                yield T.CALL
        elif self.open in ("analysis", "final") and finish != "length":
            yield T.RETURN if self.open == "final" else T.END
