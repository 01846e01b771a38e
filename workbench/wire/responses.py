"""The Responses API (``POST /v1/responses``) <-> Harmony, both directions, no I/O.

Server side: ``parse_responses_request(body, ...)`` checks a request and builds its conversation (input
items after the conversation stored under ``previous_response_id``); ``ResponseBuilder`` turns the
generated ``TokenEvent``s and the results of server-run tools into output items, the streamed event
sequence and the final response object.

Client side: ``responses_request(conv)`` is the conversation as input items and tools;
``response_tokens`` / ``event_tokens`` re-encode a response (whole or streamed) as Harmony tokens.

Output items (as OpenAI defines them and OpenAI's gpt-oss reference server emits them):

================================================ ============================================================
Harmony                                          Responses
================================================ ============================================================
``analysis`` message                             ``reasoning`` item, its text in ``content[].reasoning_text``
``final`` message, commentary preamble           ``message`` item with ``output_text``
commentary ``to=functions.NAME``                 ``function_call`` (``call_id``, ``name``, ``arguments``)
message from ``functions.NAME`` (input)          ``function_call_output`` input item (paired by ``call_id``)
``to=python`` (run by the server)                ``code_interpreter_call`` (``code``, ``outputs`` logs)
``to=browser.search/open/find`` (server)         ``web_search_call`` (``action`` search / open_page /
                                                 find_in_page)
================================================ ============================================================

Stream: ``response.created``, ``response.in_progress``; per item ``response.output_item.added``, its
parts and deltas (``response.reasoning_text.delta``, ``response.output_text.delta``,
``response.function_call_arguments.delta``, ``response.code_interpreter_call_code.delta``...) and
``response.output_item.done``; then ``response.completed`` (or ``response.incomplete``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from openai_harmony import Role

from ..harmony import Conversation, text_of
from .chat import HarmonyWriter, call_arguments, tool_functions, wire_name
from .common import (APIError, History, Segmenter, allowed_recipients, check_model, effort, flag, function_tool,
                     logprob_entry, new_id, number, reasoning_tokens, sampling, string, text_content)

BROWSER_TYPES = ("web_search", "web_search_preview", "browser_search")
MAX_ITEMS = 10_000


@dataclass
class ResponsesRequest:
    conversation: Conversation
    model: str
    stream: bool = False
    max_output_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    effort: str = "medium"
    instructions: str | None = None
    tools: list[dict] = field(default_factory=list)  # echoed back, normalised
    builtins: tuple[str, ...] = ()  # built-in tools the server runs: python, browser
    functions: tuple[str, ...] = ()
    tool_choice: str | dict = "auto"
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    store: bool = True
    metadata: dict = field(default_factory=dict)
    top_logprobs: int = 0
    max_tool_calls: int | None = None

    calls: dict = field(default_factory=dict)  # call id -> (recipient, channel) of every call so far
    text_format: dict | None = None  # json_object / json_schema (None: text)

    @property
    def allowed_recipients(self) -> tuple[str, ...] | None:
        return allowed_recipients(self.tool_choice, self.functions, getattr(self, "builtins", ()))


def parse_responses_request(body: dict, model_name: str, *,
                            previous: Callable[[str], tuple[Conversation, dict] | None],
                            builtins: dict[str, Any]) -> ResponsesRequest:
    """Check a request (cheap: no tokenising) and build its conversation. ``previous(id)`` returns a
    stored ``(conversation, calls)`` (None if unknown), ``calls`` mapping call ids to (recipient,
    channel); ``builtins`` maps ``python`` / ``browser`` to the tools this server runs (declared to the
    model by their ``config()``)."""
    model = check_model(body, model_name)
    reasoning = body.get("reasoning") or {}
    if not isinstance(reasoning, dict):
        raise APIError(400, "'reasoning' must be an object", "reasoning")
    req_effort = effort(reasoning.get("effort"), "reasoning.effort")
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise APIError(400, "'tools' must be a list", "tools")
    functions, echo, wanted = [], [], []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function":
            desc = function_tool(tool, f"tools[{i}]", "tools")
            functions.append(desc)
            echo.append({"type": "function", "name": desc.name, "description": desc.description,
                         "parameters": desc.parameters, "strict": bool(tool.get("strict", False))})
        elif kind == "code_interpreter" or kind in BROWSER_TYPES:
            name = "python" if kind == "code_interpreter" else "browser"
            if name not in builtins:
                hint = "" if name == "python" else " (start the server with --browser DIR)"
                raise APIError(400, f"tools[{i}]: this server has no {kind} tool{hint}", "tools")
            if name not in wanted:
                wanted.append(name)
            echo.append({"type": "code_interpreter", "container": {"type": "auto"}} if name == "python"
                        else {"type": "web_search"})
        else:
            raise APIError(400, f"tools[{i}]: unsupported tool type {kind!r:.40} "
                                "(function, code_interpreter, web_search, browser_search)", "tools")
    names = tuple(f.name for f in functions)
    choice = _tool_choice(body.get("tool_choice"), names, bool(names or wanted))
    instructions = string(body, "instructions")
    history = History(effort=req_effort, functions=functions, builtins=[builtins[n] for n in wanted])
    history.instruct(instructions or "")
    prev_id = string(body, "previous_response_id")
    base = None
    if prev_id is not None:
        stored = previous(prev_id)
        if stored is None:
            raise APIError(404, f"no stored response has the id {prev_id!r:.80}", "previous_response_id",
                           "previous_response_not_found")
        base, calls = stored
        history.calls.update(calls)
    _add_input(history, body.get("input"))
    text = body.get("text") or {}
    fmt = (text.get("format") or {}) if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type", "text") not in ("text", "json_object", "json_schema"):
        raise APIError(400, "'text.format' must be {'type': 'text' | 'json_object' | 'json_schema', ...}",
                       "text.format")
    if fmt.get("type") == "json_schema" and (not isinstance(fmt.get("schema"), dict)
                                             or not isinstance(fmt.get("name"), str)):
        raise APIError(400, "'text.format' json_schema needs a 'name' and a 'schema' object", "text.format")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise APIError(400, "'metadata' must be an object", "metadata")
    return ResponsesRequest(
        conversation=history.conversation(base), model=model, stream=flag(body, "stream", False),
        max_output_tokens=number(body, "max_output_tokens", None, 1, 2 ** 31, integer=True),
        **sampling(body), effort=req_effort,
        instructions=instructions, tools=echo, builtins=tuple(wanted), functions=names, tool_choice=choice,
        parallel_tool_calls=flag(body, "parallel_tool_calls", True), previous_response_id=prev_id,
        store=flag(body, "store", True), metadata=metadata,
        top_logprobs=number(body, "top_logprobs", 0, 0, 20, integer=True),
        max_tool_calls=number(body, "max_tool_calls", None, 0, 1000, integer=True), calls=dict(history.calls),
        text_format=None if fmt.get("type", "text") == "text" else fmt)


def _tool_choice(value: Any, names: tuple[str, ...], any_tools: bool):
    if value is None or value in ("auto", "none"):
        return value or "auto"
    if value == "required":
        if not any_tools:
            raise APIError(400, "'tool_choice' is 'required' but no tools were given", "tool_choice")
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        if value.get("name") not in names:
            raise APIError(400, f"'tool_choice' names the function {value.get('name')!r:.80}, which is not among "
                                "the tools", "tool_choice")
        return {"name": value["name"]}
    raise APIError(400, "'tool_choice' must be 'auto', 'none', 'required' or {'type': 'function', 'name': ...}",
                   "tool_choice")


def _add_input(history: History, items: Any) -> None:
    if isinstance(items, str):
        history.user(items)
        return
    if not isinstance(items, list) or not items:
        raise APIError(400, "'input' must be a string or a non-empty list of items", "input")
    if len(items) > MAX_ITEMS:
        raise APIError(400, f"too many input items ({len(items)}; at most {MAX_ITEMS})", "input")
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise APIError(400, f"{where} must be an object", "input")
        kind = item.get("type", "message")
        if kind == "message":
            role, content = item.get("role"), item.get("content")
            if role in ("system", "developer"):
                history.instruct(text_content(content, where, "input"))
            elif role == "user":
                history.user(text_content(content, where, "input"))
            elif role == "assistant":
                history.assistant(text_content(content, where, "input"))
            else:
                raise APIError(400, f"{where}: role {role!r:.40} is not supported (system, developer, user, "
                                    "assistant)", "input")
        elif kind == "reasoning":
            parts = item.get("content") or item.get("summary") or []
            history.reasoning(text_content(parts, where, "input", kinds=("reasoning_text", "summary_text")))
        elif kind == "function_call":
            if not isinstance(item.get("name"), str) or not isinstance(item.get("arguments", ""), str):
                raise APIError(400, f"{where}: a function_call needs a 'name' and string 'arguments'", "input")
            history.call(item.get("call_id"), item["name"], item.get("arguments", ""))
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else text_content(output, where, "input")
            history.tool_output(item.get("call_id"), text, where, "input")
        elif kind == "code_interpreter_call":
            call_id = item.get("id") or new_id("ci_")
            history.call(call_id, "python", item.get("code") or "")
            logs = "".join(o.get("logs", "") for o in item.get("outputs") or [] if isinstance(o, dict))
            history.tool_output(call_id, logs, where, "input")
        elif kind in ("web_search_call", "item_reference"):
            continue  # nothing the model needs: the page text is in its later messages
        else:
            raise APIError(400, f"{where}: unsupported input item type {kind!r:.40}", "input")


# -- server: generated events and tool results -> items and stream events ----------------------------

def _function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict:
    return {"id": item_id, "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def browser_action(recipient: str, arguments: str) -> dict:
    try:
        args = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        args = {}
    args = args if isinstance(args, dict) else {}
    op = recipient.partition(".")[2]
    if op == "open":
        return {"type": "open_page", "url": str(args.get("id", args.get("cursor", "")))}
    if op == "find":
        return {"type": "find_in_page", "pattern": str(args.get("pattern", "")), "url": str(args.get("cursor", ""))}
    return {"type": "search", "query": str(args.get("query", ""))}


class ResponseBuilder:
    """Builds the output items and stream events of one response.

    ``push(event, logprob)`` per generated token event, ``end_generation()`` after each generation,
    ``tool_result(text)`` when the server ran the built-in call just generated, ``response(status)``
    at the end. Every method returns the stream events it caused (dicts, numbered in order).
    """

    def __init__(self, request: ResponsesRequest, rid: str | None = None, created: float | None = None):
        self.request = request
        self.id = rid or new_id("resp_")
        self.created = created if created is not None else time.time()
        self.output: list[dict] = []
        self.sequence = 0
        self.segmenter = Segmenter()
        self.item: dict | None = None  # the item being generated
        self.input_tokens = 0
        self.output_tokens = 0
        self.reasoning_tokens = 0
        self.incomplete: str | None = None

    def _event(self, kind: str, **fields) -> dict:
        ev = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return ev

    def snapshot(self, status: str) -> dict:
        r = self.request
        out = {"id": self.id, "object": "response", "created_at": int(self.created), "status": status,
               "model": r.model, "output": [dict(i) for i in self.output], "error": None,
               "incomplete_details": {"reason": self.incomplete} if self.incomplete else None,
               "instructions": r.instructions, "max_output_tokens": r.max_output_tokens,
               "max_tool_calls": r.max_tool_calls, "metadata": r.metadata, "parallel_tool_calls": r.parallel_tool_calls,
               "previous_response_id": r.previous_response_id, "reasoning": {"effort": r.effort, "summary": None},
               "store": r.store, "temperature": r.temperature, "text": {"format": r.text_format or {"type": "text"}},
               "tool_choice": r.tool_choice if isinstance(r.tool_choice, str)
               else {"type": "function", "name": r.tool_choice["name"]},
               "tools": r.tools, "top_p": r.top_p, "truncation": "disabled", "user": None, "usage": None}
        if status in ("completed", "incomplete"):
            out["usage"] = {"input_tokens": self.input_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                            "output_tokens": self.output_tokens,
                            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
                            "total_tokens": self.input_tokens + self.output_tokens}
        return out

    def start(self) -> list[dict]:
        return [self._event("response.created", response=self.snapshot("in_progress")),
                self._event("response.in_progress", response=self.snapshot("in_progress"))]

    # -- items ------------------------------------------------------------------------------------

    def _open(self, seg) -> list[dict]:
        index = len(self.output)
        if seg.kind == "reasoning":
            item = {"id": new_id("rs_"), "type": "reasoning", "summary": [], "content": [], "status": "in_progress"}
            self.item = item
            self.output.append(item)
            part = {"type": "reasoning_text", "text": ""}
            return [self._event("response.output_item.added", output_index=index, item=dict(item, content=[])),
                    self._event("response.content_part.added", item_id=item["id"], output_index=index,
                                content_index=0, part=part)]
        if seg.kind == "content":
            item = {"id": new_id("msg_"), "type": "message", "role": "assistant", "status": "in_progress",
                    "content": []}
            self.item = item
            self.output.append(item)
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            return [self._event("response.output_item.added", output_index=index, item=dict(item, content=[])),
                    self._event("response.content_part.added", item_id=item["id"], output_index=index,
                                content_index=0, part=part)]
        if seg.recipient == "python":
            item = {"id": new_id("ci_"), "type": "code_interpreter_call", "code": "", "container_id": "workbench",
                    "outputs": None, "status": "in_progress"}
            self.item = item
            self.output.append(item)
            return [self._event("response.output_item.added", output_index=index, item=dict(item)),
                    self._event("response.code_interpreter_call.in_progress", item_id=item["id"], output_index=index)]
        if seg.recipient.startswith("browser."):
            item = {"id": new_id("ws_"), "type": "web_search_call", "status": "in_progress",
                    "action": {"type": "search", "query": ""}, "_arguments": ""}
            self.item = item
            self.output.append(item)
            public = {k: v for k, v in item.items() if not k.startswith("_")}
            return [self._event("response.output_item.added", output_index=index, item=public),
                    self._event("response.web_search_call.in_progress", item_id=item["id"], output_index=index)]
        item = _function_call_item(new_id("fc_"), new_id("call_"), seg.name, "", "in_progress")
        self.item = item
        self.output.append(item)
        return [self._event("response.output_item.added", output_index=index, item=dict(item))]

    def _delta(self, seg, text: str, token: int, logprob) -> list[dict]:
        item, index = self.item, len(self.output) - 1
        if item is None:
            return []
        if item["type"] == "reasoning":
            return [self._event("response.reasoning_text.delta", item_id=item["id"], output_index=index,
                                content_index=0, delta=text)]
        if item["type"] == "message":
            lps = [logprob_entry(token, logprob)] if (logprob is not None and self.request.top_logprobs) else []
            return [self._event("response.output_text.delta", item_id=item["id"], output_index=index,
                                content_index=0, delta=text, logprobs=lps)]
        if item["type"] == "code_interpreter_call":
            item["code"] += text
            return [self._event("response.code_interpreter_call_code.delta", item_id=item["id"], output_index=index,
                                delta=text)]
        if item["type"] == "web_search_call":
            item["_arguments"] += text
            return []
        item["arguments"] += text
        return [self._event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                            delta=text)]

    def _close(self, seg, complete: bool) -> list[dict]:
        item, index = self.item, len(self.output) - 1
        if item is None:
            return []
        status = "completed" if complete else "incomplete"
        out: list[dict] = []
        if item["type"] == "reasoning":
            item["content"] = [{"type": "reasoning_text", "text": seg.text}]
            out.append(self._event("response.reasoning_text.done", item_id=item["id"], output_index=index,
                                   content_index=0, text=seg.text))
            out.append(self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                   content_index=0, part={"type": "reasoning_text", "text": seg.text}))
        elif item["type"] == "message":
            part = {"type": "output_text", "text": seg.text, "annotations": [], "logprobs": []}
            item["content"] = [part]
            out.append(self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                   content_index=0, text=seg.text, logprobs=[]))
            out.append(self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                   content_index=0, part=part))
        elif item["type"] == "function_call":
            out.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                   arguments=item["arguments"], name=item["name"]))
        elif item["type"] == "code_interpreter_call":
            out.append(self._event("response.code_interpreter_call_code.done", item_id=item["id"],
                                   output_index=index, code=item["code"]))
            if complete:  # the server runs it next; done when tool_result() comes
                out.append(self._event("response.code_interpreter_call.interpreting", item_id=item["id"],
                                       output_index=index))
                return out
        elif item["type"] == "web_search_call":
            item["action"] = browser_action(seg.recipient, item["_arguments"])
            if complete:
                out.append(self._event("response.web_search_call.searching", item_id=item["id"], output_index=index))
                return out
        item["status"] = status
        self.item = None
        public = {k: v for k, v in item.items() if not k.startswith("_")}
        out.append(self._event("response.output_item.done", output_index=index, item=public))
        return out

    def push(self, event, logprob=None) -> list[dict]:
        out: list[dict] = []
        for action in self.segmenter.push(event):
            if action[0] == "start":
                out += self._open(action[1])
            elif action[0] == "delta":
                out += self._delta(action[1], action[2], event.id, logprob)
            else:
                out += self._close(action[1], action[1].terminator is not None)
        return out

    def end_generation(self, events: list, prompt_tokens: int) -> list[dict]:
        """After one generation: close a message cut short; count its tokens."""
        out = []
        for action in self.segmenter.finish():
            out += self._close(action[1], False)
        self.segmenter = Segmenter()
        self.input_tokens += prompt_tokens
        self.output_tokens += len(events)
        self.reasoning_tokens += reasoning_tokens(events)
        return out

    @property
    def pending_call(self) -> dict | None:
        """The built-in call item waiting for the server to run it."""
        item = self.output[-1] if self.output else None
        if item and item["type"] in ("code_interpreter_call", "web_search_call") and item["status"] == "in_progress":
            return item
        return None

    def tool_result(self, text: str, error: str | None = None) -> list[dict]:
        item = self.pending_call
        if item is None:
            return []
        index = len(self.output) - 1
        out = []
        if item["type"] == "code_interpreter_call":
            item["outputs"] = [{"type": "logs", "logs": text}]
            item["status"] = "completed" if error is None else "failed"
            out.append(self._event("response.code_interpreter_call.completed", item_id=item["id"], output_index=index))
        else:
            item["status"] = "completed" if error is None else "failed"
            out.append(self._event("response.web_search_call.completed", item_id=item["id"], output_index=index))
        self.item = None
        public = {k: v for k, v in item.items() if not k.startswith("_")}
        self.output[index] = public
        out.append(self._event("response.output_item.done", output_index=index, item=public))
        return out

    def finish(self, incomplete: str | None = None) -> list[dict]:
        """The last event: ``response.completed`` (or ``response.incomplete`` with its reason)."""
        self.incomplete = incomplete
        for item in self.output:
            item.pop("_arguments", None)
        status = "incomplete" if incomplete else "completed"
        return [self._event(f"response.{status}", response=self.snapshot(status))]


# -- client: conversation -> request, response -> tokens ------------------------------------------

def responses_request(conv: Conversation, model: str, *, max_tokens: int, temperature: float = 1.0,
                      top_p: float = 1.0, seed: int | None = None, reasoning_effort: str | None = None,
                      stream: bool = True) -> dict:
    """The conversation as a Responses request: developer instructions as ``instructions``, messages as
    input items (reasoning items, function calls with call ids, their outputs), tools as functions."""
    items: list[dict] = []
    pending: list[tuple[str, str]] = []
    for m in conv.messages:
        role = m.author.role
        if role == Role.USER:
            items.append({"type": "message", "role": "user", "content": text_of(m)})
        elif role == Role.ASSISTANT and m.recipient and m.recipient != "assistant":
            call_id = f"call_{len(items)}"
            items.append({"type": "function_call", "call_id": call_id, "name": wire_name(m.recipient),
                          "arguments": call_arguments(m.recipient, text_of(m))})
            pending.append((call_id, m.recipient))
        elif role == Role.ASSISTANT and m.channel == "analysis":
            items.append({"type": "reasoning", "summary": [],
                          "content": [{"type": "reasoning_text", "text": text_of(m)}]})
        elif role == Role.ASSISTANT:
            items.append({"type": "message", "role": "assistant",
                          "content": [{"type": "output_text", "text": text_of(m)}]})
        elif role == Role.TOOL:
            i = next((k for k, (_, r) in enumerate(pending) if r == m.author.name), 0 if pending else None)
            call_id = pending.pop(i)[0] if i is not None else "call_unknown"
            items.append({"type": "function_call_output", "call_id": call_id, "output": text_of(m)})
    body: dict[str, Any] = {"model": model, "input": items, "stream": stream, "max_output_tokens": max_tokens,
                            "temperature": temperature, "top_p": top_p, "store": False}
    dev = conv._developer_content()
    if dev is not None and dev.instructions:
        body["instructions"] = dev.instructions
    tools = [dict(t["function"], type="function") for t in tool_functions(conv)]
    if tools:
        body["tools"] = tools
    effort_ = reasoning_effort or conv.reasoning_effort
    if effort_:
        body["reasoning"] = {"effort": effort_}
    if seed is not None:
        body["seed"] = seed
    return body


def _get(obj, name, default=None):
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def _finish_reason(response, calls: bool) -> str:
    details = _get(response, "incomplete_details")
    if _get(response, "status") == "incomplete" and _get(details, "reason") == "max_output_tokens":
        return "length"
    return "tool_calls" if calls else "stop"


def response_tokens(response, builtins: Iterable[str] = ()) -> list[int]:
    """A whole response's output items -> Harmony completion tokens."""
    writer = HarmonyWriter(builtins)
    out: list[int] = []
    calls = 0
    for item in _get(response, "output") or []:
        kind = _get(item, "type")
        if kind == "reasoning":
            text = "".join(_get(c, "text", "") for c in _get(item, "content") or []) or \
                "".join(_get(c, "text", "") for c in _get(item, "summary") or [])
            out += writer.delta(reasoning=text)
        elif kind == "message":
            out += writer.delta(content="".join(_get(c, "text", "") or "" for c in _get(item, "content") or []))
        elif kind == "function_call":
            out += writer.delta(tool_calls=[{"index": calls, "function": {"name": _get(item, "name"),
                                                                          "arguments": _get(item, "arguments")}}])
            calls += 1
    return out + writer.finish(_finish_reason(response, calls > 0))


def event_tokens(events: Iterable, builtins: Iterable[str] = ()) -> Iterator[int]:
    """Streamed Responses events -> Harmony completion tokens, as they come."""
    writer = HarmonyWriter(builtins)
    calls: dict[str, int] = {}
    final = None
    for ev in events:
        kind = _get(ev, "type")
        if kind == "response.reasoning_text.delta":
            yield from writer.delta(reasoning=_get(ev, "delta"))
        elif kind == "response.output_text.delta":
            yield from writer.delta(content=_get(ev, "delta"))
        elif kind == "response.output_item.added" and _get(_get(ev, "item"), "type") == "function_call":
            item = _get(ev, "item")
            calls[_get(item, "id")] = len(calls)
            yield from writer.delta(tool_calls=[{"index": calls[_get(item, "id")],
                                                 "function": {"name": _get(item, "name"), "arguments": ""}}])
        elif kind == "response.function_call_arguments.delta":
            index = calls.get(_get(ev, "item_id"), 0)
            yield from writer.delta(tool_calls=[{"index": index, "function": {"arguments": _get(ev, "delta")}}])
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            final = _get(ev, "response")
            if kind == "response.failed":
                error = _get(final, "error")
                raise APIError(500, f"the response failed: {_get(error, 'message', 'unknown error')}")
    yield from writer.finish(_finish_reason(final, bool(calls)) if final is not None else "length")
