"""Legacy completions (``POST /v1/completions``) for Harmony-native clients, no I/O.

The prompt is raw: a string (encoded with Harmony's special tokens allowed, so a client can send a
rendered conversation ending ``<|start|>assistant``) or a list of token ids. Generation stops after
``<|return|>`` or ``<|call|>``. The text is the completion as written, special tokens included (a
Harmony parser reads it back); each choice also carries its ``token_ids``.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from ..harmony import encoding
from ..harmony import tokens as T
from .common import APIError, StopStrings, check_model, flag, new_id, number, sampling, stop_list, token_text


@dataclass
class CompletionRequest:
    prompt: list[int]
    model: str
    stream: bool = False
    include_usage: bool = False
    n: int = 1
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None
    echo: bool = False


def parse_prompt(prompt) -> list[int]:
    """A raw prompt as token ids (a string is tokenised: call this after admission)."""
    if isinstance(prompt, str):
        return encoding().encode(prompt, allowed_special="all")
    return list(prompt)


def parse_completion_request(body: dict, model_name: str) -> tuple[CompletionRequest, str | list[int]]:
    """Check a request; returns it with the raw prompt (tokenise it with ``parse_prompt`` once admitted)."""
    model = check_model(body, model_name)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise APIError(400, "'prompt' is empty", "prompt")
    elif isinstance(prompt, list) and prompt and all(T.in_range(t) for t in prompt):
        pass
    else:
        raise APIError(400, f"'prompt' must be a string or a list of token ids in [0, {T.VOCAB_SIZE})", "prompt")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise APIError(400, "'stream_options' must be an object", "stream_options")
    req = CompletionRequest(
        prompt=[], model=model, stream=flag(body, "stream", False),
        include_usage=bool(stream_options.get("include_usage", False)), n=number(body, "n", 1, 1, 16, integer=True),
        max_tokens=number(body, "max_tokens", None, 1, 2 ** 31, integer=True),
        **sampling(body), stop=stop_list(body),
        logprobs=number(body, "logprobs", None, 0, 20, integer=True), echo=flag(body, "echo", False))
    if req.echo:
        raise APIError(400, "'echo' is not supported", "echo")
    return req, prompt


class TextBuilder:
    """One choice: ``push(token, logprob) -> text delta``; special tokens appear by name."""

    def __init__(self, index: int = 0, *, stop=(), logprobs: int | None = None):
        self.index = index
        self.utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self.stops = StopStrings(stop)
        self.text: list[str] = []
        self.tokens: list[int] = []
        self.want_logprobs = logprobs is not None
        self.lp = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        self.stopped = False

    def push(self, token: int, logprob=None) -> str:
        self.tokens.append(token)
        piece = (self.utf8.decode(b"", True) + token_text(token)) if T.is_special(token) \
            else self.utf8.decode(T.token_bytes(token))
        if self.want_logprobs and logprob is not None:
            self.lp["tokens"].append(token_text(token))
            self.lp["token_logprobs"].append(logprob.logprob)
            self.lp["top_logprobs"].append({token_text(t): lp for t, lp in logprob.top})
            self.lp["text_offset"].append(sum(map(len, self.text)))
        emit, self.stopped = self.stops.push(piece)
        self.text.append(emit)
        return emit

    def finish(self) -> str:
        rest = "" if self.stopped else self.stops.push(self.utf8.decode(b"", True))[0] + self.stops.flush()
        self.text.append(rest)
        return rest

    def finish_reason(self) -> str:
        if self.stopped or (self.tokens and self.tokens[-1] in T.STOP_FOR_ACTIONS):
            return "stop"
        return "length"

    def choice(self) -> dict:
        return {"index": self.index, "text": "".join(self.text), "finish_reason": self.finish_reason(),
                "logprobs": self.lp if self.want_logprobs else None, "token_ids": list(self.tokens)}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(rid: str, created: int, model: str, choices: list[dict], usage_: dict | None) -> dict:
    return {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": choices,
            "usage": usage_}


def chunk(rid: str, created: int, model: str, index: int, text: str, finish: str | None = None,
          logprobs=None) -> dict:
    return completion(rid, created, model, [{"index": index, "text": text, "finish_reason": finish,
                                             "logprobs": logprobs}], None)


def new_completion_id() -> str:
    return new_id("cmpl-")
