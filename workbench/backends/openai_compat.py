"""``OpenAIBackend``: any OpenAI-compatible server (vLLM, Ollama, ``workbench serve``) via ``openai``.

The server runs the model and its own Harmony parsing; we send the conversation in the server's wire
format and re-encode what comes back as a Harmony completion, so the rest of the workbench sees one
kind of stream (the text is the server's; the token ids are ours). Both of OpenAI's APIs, streamed or
not (``api="chat"`` or ``"responses"``, ``stream=True/False``); every tool call of an answer is kept,
in order (parallel calls become consecutive call messages). The mapping lives in ``workbench.wire``
(``wire.chat``: reasoning as ``reasoning`` on messages, calls and ``tool`` answers paired by id;
``wire.responses``: reasoning items, ``function_call`` / ``function_call_output`` items).

Built-in tools are offered as functions: ``python`` (argument ``code``) and ``browser_search``,
``browser_open``, ``browser_find``; calls to them come back addressed to ``python`` / ``browser.*``,
and the tool loop (``workbench.chat``) runs them on this side.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Sequence

from ..harmony import Conversation
from ..wire import chat as wchat
from ..wire import responses as wresp
from ..wire.chat import chat_messages, recipient_for, tool_functions  # noqa: F401 - re-exported
from .base import Backend

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access_token|password|secret)=)[^&\s#]*")


def redact_url(text: str) -> str:
    """``text`` with credentials taken out of every URL in it (``user:pass@`` and key/token query
    values become ``***``), so base URLs can go into logs, reprs and eval records.

    >>> redact_url("http://user:pw@host:8000/v1?api_key=sk-1&x=2")
    'http://***@host:8000/v1?api_key=***&x=2'
    """
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


APIS = ("chat", "responses")
# Request fields the openai client takes as arguments; others travel in extra_body.
_CHAT_ARGS = {"model", "messages", "stream", "max_tokens", "temperature", "top_p", "tools", "seed", "reasoning_effort"}
_RESPONSES_ARGS = {"model", "input", "stream", "max_output_tokens", "temperature", "top_p", "store", "instructions",
                   "tools", "reasoning"}


class OpenAIBackend(Backend):
    """``OpenAIBackend("openai/gpt-oss-20b", base_url="http://127.0.0.1:8000/v1")`` (vLLM),
    ``OpenAIBackend("gpt-oss:20b", base_url="http://127.0.0.1:11434/v1")`` (Ollama), or
    ``OpenAIBackend("tiny", base_url=server.url, api="responses")`` (``workbench serve``)."""

    name = "openai"
    token_level = False

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None, client=None,
                 timeout: float = 600.0, extra_body: dict | None = None, api: str = "chat", stream: bool = True):
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}, not {api!r}")
        if client is None:
            import openai

            client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout)
        self.client, self.model, self.extra_body = client, model, extra_body or {}
        self.api, self.streaming = api, stream

    def generate(self, prompt: Conversation | Sequence[int], *, max_new_tokens: int = 2048, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int | None = None, reasoning_effort: str | None = None) -> Iterator[int]:
        if not isinstance(prompt, Conversation):
            raise TypeError("OpenAIBackend needs a Conversation (a chat server takes messages, not token ids)")
        builtins = [ns for ns in prompt.namespaces if ns != "functions"]
        options = dict(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                       reasoning_effort=reasoning_effort, stream=self.streaming)
        if self.api == "chat":
            kwargs = self._split(wchat.chat_request(prompt, self.model, **options), _CHAT_ARGS)
            answer = self.client.chat.completions.create(**kwargs)
            if self.streaming:
                yield from wchat.stream_tokens(answer, builtins)
            else:
                yield from wchat.message_tokens(answer, builtins)
        else:
            kwargs = self._split(wresp.responses_request(prompt, self.model, **options), _RESPONSES_ARGS)
            answer = self.client.responses.create(**kwargs)
            if self.streaming:
                yield from wresp.event_tokens(answer, builtins)
            else:
                yield from wresp.response_tokens(answer, builtins)

    def _split(self, body: dict, official: set) -> dict[str, Any]:
        kwargs = {k: v for k, v in body.items() if k in official}
        extra = {**{k: v for k, v in body.items() if k not in official}, **self.extra_body}
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    def __repr__(self) -> str:
        return (f"OpenAIBackend({self.model!r}, base_url={redact_url(str(getattr(self.client, 'base_url', '')))!r}, "
                f"api={self.api!r}{'' if self.streaming else ', stream=False'})")
