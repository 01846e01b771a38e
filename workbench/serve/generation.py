"""The blocking side of each endpoint: render the prompt, generate, turn events into wire payloads.

Each ``*_work`` function returns ``work(job)``, a generator run by ``Engine.stream`` in a generation
thread: tokenising happens here (after admission, off the event loop), events come from
``Backend.stream`` (the one decoder), payloads from ``workbench.wire``. A stream yields chunk or
event dicts; a non-streamed request yields one response dict. ``job.cancelled`` is checked between
tokens.

Decoding constraints: a ``HarmonyConstraint`` is applied when the server runs constrained (the random
built-in models) and whenever a request restricts tool use (``tool_choice`` none / required / a named
function): its recipients are then only the allowed ones, and for required / named the turn may open
with one analysis message and must then be a call.

Parallel calls (both APIs, one ``AssistantTurn``): gpt-oss writes one call per generation, stopping at
``<|call|>``. After a call to a function the model is asked to continue with ``<|start|>assistant``; if
its next header is another function call, that call is kept once it is complete (its stream deltas or
events are held until then), otherwise the look-ahead is dropped. Usage counts every generated token,
look-ahead included. Built-in tool calls (python, browser) are never looked past: the server runs them
and the model continues after their results (Responses).

Responses: the built-in tools of a conversation live in ``workbench.serve.sessions`` (one python session
per ``previous_response_id`` chain); the stored conversations in ``ResponseStore`` (bounded in count and
characters).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator

from ..harmony import Conversation, HarmonyConstraint, encoding
from ..harmony import tokens as T
from ..wire import chat as wchat
from ..wire import completions as wcomp
from ..wire.common import APIError, new_id
from ..wire.responses import ResponseBuilder, ResponsesRequest
from .engine import Job
from .sessions import Sessions

MAX_PARALLEL_CALLS = 8


@dataclass
class Limits:
    max_model_len: int = 4096
    max_tokens_cap: int | None = None  # the most tokens any request may generate (None: the context)
    default_max_tokens: int = 2048
    max_tool_rounds: int = 8  # built-in tool calls the server runs for one response


def budget(limits: Limits, prompt_len: int, asked: int | None) -> int:
    """Tokens to generate: what was asked (or the default), cut to the server's cap and the context
    left (as vLLM does); a prompt that leaves no room is refused."""
    room = limits.max_model_len - prompt_len
    if room < 1:
        raise APIError(400, f"This model's maximum context length is {limits.max_model_len} tokens. However, your "
                            f"messages resulted in {prompt_len} tokens.", "messages", "context_length_exceeded")
    n = asked if asked is not None else limits.default_max_tokens
    return max(1, min(n, room, limits.max_tokens_cap or n))


def constraint(backend, conv: Conversation, *, server_constrained: bool, allowed=None, must_call: bool = False,
               final_format=None):
    """The logits processor for one generation, or None (see the module docstring). ``final_format``
    (a ``workbench.harmony.jsonformat`` format) makes the final message's text a JSON value of it."""
    if not getattr(backend, "constrainable", False) or (not server_constrained and allowed is None
                                                         and final_format is None):
        return None
    recipients = conv.recipients if allowed is None else allowed
    return HarmonyConstraint(conv.channels, recipients, max_content_tokens=getattr(backend, "max_content_tokens", None),
                             require_call=must_call and bool(recipients), final_format=final_format)


def response_format(backend, fmt: dict | None, param: str):
    """A request's JSON output format as a constraint format (None for plain text); 400 when it cannot
    be enforced here."""
    if fmt is None:
        return None
    from ..harmony.jsonformat import json_format

    if not getattr(backend, "constrainable", False):
        raise APIError(400, f"'{param}': this server's backend cannot constrain decoding, so it cannot promise JSON",
                       param)
    schema = None
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or fmt).get("schema") or {}
    try:
        return json_format(schema)
    except ValueError as e:
        raise APIError(400, f"'{param}': the Harmony constraint cannot enforce this schema: {e}", param) from None


def _options(backend, *, temperature, top_p, seed, effort, top_logprobs, processor, max_tokens=None) -> dict:
    options = dict(temperature=temperature, top_p=top_p, seed=seed, reasoning_effort=effort, top_logprobs=top_logprobs)
    if max_tokens is not None:
        options["max_new_tokens"] = max_tokens
    if processor is not None:
        options["logits_processor"] = processor
    return options


_ASSISTANT: list[int] = []


def assistant_header() -> list[int]:
    """``<|start|>assistant`` as token ids."""
    if not _ASSISTANT:
        _ASSISTANT.extend(encoding().encode("<|start|>assistant", allowed_special="all"))
    return list(_ASSISTANT)


# -- one assistant turn, with look-ahead for parallel calls -------------------------------------------

def parallel_allowed(parallel_tool_calls: bool, tool_choice) -> bool:
    """Whether a request lets the model add calls after its first (not for tool_choice none or a named one)."""
    return parallel_tool_calls and tool_choice != "none" and not isinstance(tool_choice, dict)


class AssistantTurn:
    """One assistant turn as both APIs send it: a generation and, when it ends in a function call and
    ``parallel`` is set, look-ahead generations that may add more calls (see the module docstring).

    Iterate for ``(event, logprob)`` of what is kept, in order: the first generation's as they come, a
    look-ahead's only once its call is complete (a dropped look-ahead yields nothing). ``options(lookahead)``
    gives ``backend.stream``'s sampling options for the first generation (False) and a look-ahead (True).
    Afterwards: ``messages`` (the kept Harmony messages), ``stop_reason`` (of the last kept generation),
    ``generated`` (every generated event, dropped look-ahead included: usage counts them all).
    ``close()`` stops it between tokens (a client's stop string); ``job.cancelled`` is checked per token.
    """

    def __init__(self, backend, conv: Conversation, prompt: list[int], options: Callable[[bool], dict], *,
                 max_tokens: int, parallel: bool, job: Job, max_calls: int = MAX_PARALLEL_CALLS):
        self.backend, self.conv, self.prompt, self.options = backend, conv, prompt, options
        self.max_tokens, self.parallel, self.job, self.max_calls = max_tokens, parallel, job, max_calls
        self.messages: list = []
        self.generated: list = []
        self.stop_reason = "empty"
        self._iter: Iterator | None = None

    def __iter__(self) -> Iterator[tuple]:
        self._iter = self._run()
        return self._iter

    def close(self) -> None:
        if self._iter is not None:
            self._iter.close()

    def _run(self) -> Iterator[tuple]:
        context, left, calls = self.conv, self.max_tokens, 0
        while left > 0 and not self.job.cancelled:
            lookahead = context is not self.conv
            turn = self.backend.stream(context, channels=self.conv.channels, recipients=self.conv.recipients or None,
                                       max_new_tokens=left, **self.options(lookahead))
            held, kept = [], True
            try:
                for event in turn:
                    if self.job.cancelled:
                        break
                    self.generated.append(event)
                    self.job.tokens += 1
                    if not lookahead:
                        yield event, turn.logprobs[-1]
                    elif event.id == T.MESSAGE and not (event.recipient or "").startswith("functions."):
                        kept = False  # the model went on with something other than another call: drop it
                        break
                    else:
                        held.append((event, turn.logprobs[-1]))  # a speculative call is sent only once complete
            finally:
                turn.cancel()
                turn.close()
            left -= len(turn.events)
            if not kept or (lookahead and turn.stop_reason != "call"):
                return  # cut off (tokens, cancel) or not a call: the look-ahead is dropped
            yield from held
            self.messages += turn.transcript.messages
            self.stop_reason = turn.stop_reason
            last = self.messages[-1] if self.messages else None
            if not (self.parallel and self.stop_reason == "call" and last is not None
                    and (last.recipient or "").startswith("functions.") and calls + 1 < self.max_calls):
                return
            calls += 1
            context = (context if isinstance(context, list) else self.prompt) + turn.tokens + assistant_header()


# -- chat completions ------------------------------------------------------------------------------

def chat_work(backend, req: wchat.ChatRequest, limits: Limits, *, model: str, constrained: bool) -> Callable:
    final_format = response_format(backend, req.response_format, "response_format")

    def work(job: Job) -> Iterator[dict]:
        conv = req.conversation
        prompt = conv.render()
        max_tokens = budget(limits, len(prompt), req.max_tokens)
        rid, created = new_id("chatcmpl-"), int(time.time())
        choices, completions = [], []
        for i in range(req.n):
            builder = wchat.ChoiceBuilder(i, stop=req.stop, logprobs=req.logprobs)
            if req.stream:
                yield wchat.chunk(rid, created, model, i, {"role": "assistant", "content": ""})
            seed = None if req.seed is None else req.seed + i

            def options(lookahead: bool, seed=seed) -> dict:
                processor = constraint(backend, conv, server_constrained=constrained, allowed=req.allowed_recipients,
                                       must_call=req.must_call and not lookahead,  # a call was made: choice is free
                                       final_format=final_format)
                return _options(backend, temperature=req.temperature, top_p=req.top_p, seed=seed,
                                effort=conv.reasoning_effort, top_logprobs=req.top_logprobs, processor=processor)

            turn = AssistantTurn(backend, conv, prompt, options, max_tokens=max_tokens, job=job,
                                 parallel=parallel_allowed(req.parallel_tool_calls, req.tool_choice))
            for event, logprob in turn:
                if builder.stopped:
                    turn.close()
                    break
                for d in builder.push(event, logprob):
                    if req.stream:
                        yield wchat.chunk(rid, created, model, i, d)
            for d in builder.finish():
                if req.stream:
                    yield wchat.chunk(rid, created, model, i, d)
            completions.append(turn.generated)
            if req.stream:
                yield wchat.chunk(rid, created, model, i, {}, builder.finish_reason(turn.stop_reason))
            else:
                choices.append(wchat.choice(builder, turn.stop_reason))
        usage = wchat.usage(len(prompt), completions)
        if req.stream:
            if req.include_usage:
                yield wchat.usage_chunk(rid, created, model, usage)
        else:
            yield wchat.completion(rid, created, model, choices, usage)

    return work


# -- responses -------------------------------------------------------------------------------------

class ResponseStore:
    """``previous_response_id`` -> (conversation, call ids), in memory: at most ``size`` responses and
    ``max_chars`` characters of their messages (as JSON), the least recently used dropped first."""

    def __init__(self, size: int = 256, max_chars: int = 64_000_000):
        self.size, self.max_chars = size, max_chars
        self.chars = 0
        self._items: OrderedDict[str, tuple[Conversation, dict, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, rid: str):
        with self._lock:
            item = self._items.get(rid)
            if item is None:
                return None
            self._items.move_to_end(rid)
            return item[:2]

    def put(self, rid: str, conv: Conversation, calls: dict) -> bool:
        """Store a response's conversation; False when it alone is over ``max_chars`` (not stored)."""
        chars = sum(len(m.to_json()) for m in conv.messages)
        with self._lock:
            if chars > self.max_chars:
                return False
            self._items[rid] = (conv, calls, chars)
            self.chars += chars
            while len(self._items) > self.size or self.chars > self.max_chars:
                self.chars -= self._items.popitem(last=False)[1][2]
            return True


def responses_work(backend, req: ResponsesRequest, limits: Limits, *, constrained: bool, sessions: Sessions,
                   store: ResponseStore) -> Callable:
    from ..toolloop import run_tool, tool_message

    final_format = response_format(backend, req.text_format, "text.format")

    def work(job: Job) -> Iterator[dict]:
        called_python = any(m.recipient == "python" for m in req.conversation.messages)
        lease = sessions.lease(req.builtins, req.previous_response_id, called_python=called_python)
        try:
            yield from run(job, lease)
        finally:
            sessions.release(lease, None)  # failed or cancelled: nobody can continue it (no-op once released)

    def run(job: Job, lease) -> Iterator[dict]:
        tools = lease.tools if lease is not None else []
        conv = req.conversation.copy()
        builder = ResponseBuilder(req)
        if req.stream:
            yield from builder.start()
        left, stop = None, "empty"
        builtin = {"python"} | {f"browser.{op}" for op in ("search", "open", "find")}
        must_call = req.tool_choice == "required" or isinstance(req.tool_choice, dict)
        for round_ in range(limits.max_tool_rounds + 1):
            prompt = conv.render()
            room = budget(limits, len(prompt), req.max_output_tokens)
            left = room if left is None else min(left, room)
            first = round_ == 0  # tool_choice binds the first generation; after tool results the model is free

            def options(lookahead: bool, first=first) -> dict:
                processor = constraint(backend, conv, server_constrained=constrained,
                                       allowed=req.allowed_recipients if first else None,
                                       must_call=first and must_call and not lookahead, final_format=final_format)
                return _options(backend, temperature=req.temperature, top_p=req.top_p, seed=req.seed,
                                effort=conv.reasoning_effort, top_logprobs=req.top_logprobs, processor=processor)

            turn = AssistantTurn(backend, conv, prompt, options, max_tokens=left, job=job,
                                 parallel=parallel_allowed(req.parallel_tool_calls, req.tool_choice))
            for event, logprob in turn:
                events = builder.push(event, logprob)
                if req.stream:
                    yield from events
            ended = builder.end_generation(turn.generated, len(prompt))
            if req.stream:
                yield from ended
            left -= len(turn.generated)
            conv.extend(turn.messages)
            stop = turn.stop_reason
            last = turn.messages[-1] if turn.messages else None
            for item in builder.output:
                if item["type"] == "function_call":
                    req.calls.setdefault(item["call_id"], (f"functions.{item['name']}", "commentary"))
            if job.cancelled or stop != "call" or last is None or last.recipient not in builtin \
                    or builder.pending_call is None:
                break
            if left <= 0 or round_ == limits.max_tool_rounds or (req.max_tool_calls is not None
                                                                  and round_ + 1 > req.max_tool_calls):
                stop = "length"
                break
            arguments = "".join(getattr(c, "text", "") for c in last.content)
            result = run_tool(tools, last.recipient, arguments)
            conv.add(tool_message(last.recipient, result.text, last.channel))
            done = builder.tool_result(result.text, result.error)
            if req.stream:
                yield from done
        stored = req.store and not job.cancelled and store.put(builder.id, conv, dict(req.calls))
        # before the client sees the response (and may continue it at once), its tools wait under its id
        sessions.release(lease, builder.id if stored else None)
        final = builder.finish("max_output_tokens" if stop == "length" else None)
        if req.stream:
            yield from final
        else:
            yield final[-1]["response"]

    return work


# -- completions -----------------------------------------------------------------------------------

def completion_work(backend, req: wcomp.CompletionRequest, raw_prompt, limits: Limits, *, model: str,
                    constrained: bool) -> Callable:
    def work(job: Job) -> Iterator[dict]:
        prompt = wcomp.parse_prompt(raw_prompt)
        max_tokens = budget(limits, len(prompt), req.max_tokens)
        rid, created = wcomp.new_completion_id(), int(time.time())
        choices, generated = [], 0
        for i in range(req.n):
            builder = wcomp.TextBuilder(i, stop=req.stop, logprobs=req.logprobs)
            processor = HarmonyConstraint() if constrained and getattr(backend, "constrainable", False) else None
            turn = backend.stream(prompt, **_options(backend, max_tokens=max_tokens, temperature=req.temperature,
                                                     top_p=req.top_p, seed=None if req.seed is None else req.seed + i,
                                                     effort=None, top_logprobs=req.logprobs or 0,
                                                     processor=processor))
            for event in turn:
                if job.cancelled or builder.stopped:
                    turn.cancel()
                    break
                job.tokens += 1
                text = builder.push(event.id, turn.logprobs[-1])
                if req.stream and text:
                    yield wcomp.chunk(rid, created, model, i, text)
            generated += len(turn.events)
            rest = builder.finish()
            if req.stream:
                yield wcomp.chunk(rid, created, model, i, rest, builder.finish_reason())
            else:
                choices.append(builder.choice())
        usage = wcomp.usage(len(prompt), generated)
        if req.stream:
            if req.include_usage:
                yield wcomp.completion(rid, created, model, [], usage)
        else:
            yield wcomp.completion(rid, created, model, choices, usage)

    return work
