"""The blocking side of each endpoint: render the prompt, generate, turn events into wire payloads.

Each ``*_work`` function returns ``work(job)``, a generator run by ``Engine.stream`` in a generation
thread: tokenising happens here (after admission, off the event loop), events come from
``Backend.stream`` (the one decoder), payloads from ``workbench.wire``. A stream yields chunk or
event dicts; a non-streamed request yields one response dict. ``job.cancelled`` is checked between
tokens.

Decoding constraints: a ``HarmonyConstraint`` is applied when the server runs constrained (the random
built-in models) and whenever a request restricts tool use (``tool_choice`` none / required / a named
function): its recipients are then only the allowed ones, and for required / named the turn may open
with one analysis message and must then be a call. Parallel calls (chat): after a call to a
function the model is asked to continue with ``<|start|>assistant``; if its next header is another
function call that call is kept once it is complete (its stream deltas are held until then),
otherwise the look-ahead is dropped (gpt-oss writes one call per generation; this lets it write
several when it means to). Usage counts every generated token, look-ahead included.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator

from ..harmony import Conversation, HarmonyConstraint, encoding
from ..harmony import tokens as T
from ..wire import chat as wchat
from ..wire import completions as wcomp
from ..wire.common import APIError, Segmenter, new_id
from ..wire.responses import ResponseBuilder, ResponsesRequest
from .engine import Job

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


def _options(backend, *, max_tokens, temperature, top_p, seed, effort, top_logprobs, processor) -> dict:
    options = dict(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                   reasoning_effort=effort, top_logprobs=top_logprobs)
    if processor is not None:
        options["logits_processor"] = processor
    return options


_ASSISTANT: list[int] = []


def assistant_header() -> list[int]:
    """``<|start|>assistant`` as token ids."""
    if not _ASSISTANT:
        _ASSISTANT.extend(encoding().encode("<|start|>assistant", allowed_special="all"))
    return list(_ASSISTANT)


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
            events, stop = [], "empty"
            context, left, calls = conv, max_tokens, 0
            seed = None if req.seed is None else req.seed + i
            while left > 0 and not job.cancelled:
                lookahead = context is not conv
                processor = constraint(backend, conv, server_constrained=constrained, allowed=req.allowed_recipients,
                                       must_call=req.must_call and not lookahead,  # a call was made: choice is free
                                       final_format=final_format)
                turn = backend.stream(context, channels=conv.channels, recipients=conv.recipients or None,
                                      **_options(backend, max_tokens=left, temperature=req.temperature, top_p=req.top_p,
                                                 seed=seed, effort=conv.reasoning_effort,
                                                 top_logprobs=req.top_logprobs, processor=processor))
                kept, held, calls_before = True, [], len(builder.calls)
                for event in turn:
                    if job.cancelled or builder.stopped:
                        turn.cancel()
                        break
                    events.append(event)
                    job.tokens += 1
                    if lookahead and event.id == T.MESSAGE and not (event.recipient or "").startswith("functions."):
                        kept = False  # the model went on with something other than another call: drop it
                        turn.cancel()
                        break
                    deltas = builder.push(event, turn.logprobs[-1])
                    if lookahead:
                        held += deltas  # a speculative call is sent only once it is complete
                    elif req.stream:
                        for d in deltas:
                            yield wchat.chunk(rid, created, model, i, d)
                left -= len(turn.events)
                if lookahead and turn.stop_reason != "call":
                    kept = False  # cut off (tokens, cancel): drop the half-written call
                if not kept:
                    del builder.calls[calls_before:]
                    builder.segmenter = Segmenter()
                    break
                if req.stream:
                    for d in held:
                        yield wchat.chunk(rid, created, model, i, d)
                stop = turn.stop_reason
                last = turn.transcript.messages[-1] if turn.transcript.messages else None
                if not (stop == "call" and req.parallel_tool_calls and last is not None and
                        (last.recipient or "").startswith("functions.") and calls + 1 < MAX_PARALLEL_CALLS
                        and req.tool_choice != "none" and not isinstance(req.tool_choice, dict)):
                    break
                calls += 1
                context = (context if isinstance(context, list) else prompt) + turn.tokens + assistant_header()
            for d in builder.finish():
                if req.stream:
                    yield wchat.chunk(rid, created, model, i, d)
            completions.append(events)
            if req.stream:
                yield wchat.chunk(rid, created, model, i, {}, builder.finish_reason(stop))
            else:
                choices.append(wchat.choice(builder, stop))
        usage = wchat.usage(len(prompt), completions)
        if req.stream:
            if req.include_usage:
                yield wchat.usage_chunk(rid, created, model, usage)
        else:
            yield wchat.completion(rid, created, model, choices, usage)

    return work


# -- responses -------------------------------------------------------------------------------------

class ResponseStore:
    """``previous_response_id`` -> (conversation, call ids), in memory, the ``size`` most recent."""

    def __init__(self, size: int = 256):
        self.size = size
        self._items: OrderedDict[str, tuple[Conversation, dict]] = OrderedDict()

    def get(self, rid: str):
        item = self._items.get(rid)
        if item is not None:
            self._items.move_to_end(rid)
        return item

    def put(self, rid: str, conv: Conversation, calls: dict) -> None:
        self._items[rid] = (conv, calls)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


def responses_work(backend, req: ResponsesRequest, limits: Limits, *, constrained: bool, tools: list,
                   store: ResponseStore) -> Callable:
    from ..toolloop import run_tool, tool_message

    final_format = response_format(backend, req.text_format, "text.format")

    def work(job: Job) -> Iterator[dict]:
        try:
            yield from run(job)
        finally:
            for tool in tools:  # e.g. end the python tool's sandboxed session
                close = getattr(tool, "close", None)
                if close is not None:
                    close()

    def run(job: Job) -> Iterator[dict]:
        conv = req.conversation.copy()
        builder = ResponseBuilder(req)
        if req.stream:
            yield from builder.start()
        left, stop = None, "empty"
        builtin = {"python"} | {f"browser.{op}" for op in ("search", "open", "find")}
        for round_ in range(limits.max_tool_rounds + 1):
            prompt = conv.render()
            room = budget(limits, len(prompt), req.max_output_tokens)
            left = room if left is None else min(left, room)
            first = round_ == 0  # tool_choice binds the first generation; after tool results the model is free
            processor = constraint(backend, conv, server_constrained=constrained,
                                   allowed=req.allowed_recipients if first else None,
                                   must_call=first and (req.tool_choice == "required" or isinstance(req.tool_choice, dict)),
                                   final_format=final_format)
            turn = backend.stream(conv, **_options(backend, max_tokens=left, temperature=req.temperature,
                                                   top_p=req.top_p, seed=req.seed, effort=conv.reasoning_effort,
                                                   top_logprobs=req.top_logprobs, processor=processor))
            for event in turn:
                if job.cancelled:
                    turn.cancel()
                    break
                job.tokens += 1
                events = builder.push(event, turn.logprobs[-1])
                if req.stream:
                    yield from events
            ended = builder.end_generation(turn.events, len(prompt))
            if req.stream:
                yield from ended
            left -= len(turn.events)
            transcript = turn.transcript
            conv.extend(transcript.messages)
            stop = turn.stop_reason
            last = transcript.messages[-1] if transcript.messages else None
            for item in builder.output:
                if item["type"] == "function_call":
                    req.calls.setdefault(item["call_id"], (f"functions.{item['name']}", "commentary"))
            if stop != "call" or last is None or last.recipient not in builtin or builder.pending_call is None:
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
        if req.store:
            store.put(builder.id, conv, dict(req.calls))
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
