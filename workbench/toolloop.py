"""The tool loop: ``chat(backend, conversation, tools=[...])`` until the model answers.

Each step generates an assistant completion (``backend.stream``, which decodes it), appends its messages
to the conversation and, when the last one is addressed to a tool (``browser.*``, ``python``,
``functions.*``), runs that tool and appends its answer as the tool's message (author = the
recipient, ``to=assistant``, on the call's channel). It stops at a final answer, ``<|return|>``, a
message for no one, or ``max_turns`` generations.

Reasoning from earlier steps of the same turn stays in the prompt while tool calls continue:
messages are appended whole, and Harmony rendering drops analysis only once a final answer follows
it (the known pitfall is to drop it between calls). Unknown tools, bad JSON arguments and tool
exceptions become tool messages the model reads; they never end the loop.

>>> from workbench.backends import ScriptedBackend
>>> from workbench.harmony import Conversation
>>> def add(a: int, b: int) -> int:
...     '''Add two integers.'''
...     return a + b
>>> backend = ScriptedBackend([
...     '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a": 2, "b": 3}<|call|>',
...     '<|channel|>final<|message|>2 + 3 = 5<|return|>'])
>>> result = chat(backend, Conversation.new().user("2+3?"), tools=[add])
>>> result.final, result.stop_reason, [s.result for s in result.trace]
('2 + 3 = 5', 'return', ['5'])
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from openai_harmony import Author, Message, Role, TextContent

from .harmony import Conversation, TokenEvent, Transcript
from .tools import FunctionTools, ToolResult, ToolStep, ToolTrace, error_result, handles


@dataclass
class ChatResult:
    """What a chat did: the grown conversation, each generation's transcript, the tool trace."""

    conversation: Conversation
    transcripts: list[Transcript]
    trace: ToolTrace
    stop_reason: str  # return | final | no_recipient | max_turns | length | empty
    final: str | None = None

    @property
    def errors(self):
        """Parse errors of every generation, as (generation, ParseError)."""
        return [(i, e) for i, t in enumerate(self.transcripts) for e in t.errors]

    def to_dict(self) -> dict:
        return {"conversation": self.conversation.to_dict(), "transcripts": [t.to_dict() for t in self.transcripts],
                "trace": self.trace.to_dicts(), "stop_reason": self.stop_reason, "final": self.final}

    def __repr__(self) -> str:
        return (f"ChatResult({self.stop_reason}, {len(self.transcripts)} generations, {len(self.trace)} tool calls, "
                f"final={self.final!r:.60})")


def collect_tools(tools: Iterable[Any], functions: dict[str, Callable] | None = None) -> list[Any]:
    """Tool objects from a mix of tools and plain callables (gathered into one FunctionTools)."""
    objects, callables = [], dict(functions or {})
    for tool in tools:
        if hasattr(tool, "namespace") and hasattr(tool, "call"):
            if isinstance(tool, FunctionTools):
                callables.update(tool.callables)
            else:
                objects.append(tool)
        elif callable(tool):
            callables[getattr(tool, "__name__", repr(tool))] = tool
        else:
            raise TypeError(f"not a tool or a callable: {tool!r}")
    if callables:
        objects.append(FunctionTools(callables))
    return objects


def run_tool(tools: Sequence[Any], recipient: str, arguments: str) -> ToolResult:
    """Route a call by recipient; an unknown recipient or a crashing tool gives an error result."""
    tool = next((t for t in tools if handles(t, recipient)), None)
    if tool is None:
        names = ", ".join(t.namespace for t in tools) or "none"
        return error_result(f"Unknown tool {recipient!r}; available tools: {names}")
    try:
        return tool.call(recipient, arguments)
    except Exception as e:  # a tool bug must not end the conversation
        return error_result(f"{recipient} failed: {type(e).__name__}: {e}", exception=type(e).__name__)


def tool_message(recipient: str, text: str, channel: str | None) -> Message:
    m = Message.from_author_and_content(Author.new(Role.TOOL, recipient), text)
    m.channel, m.recipient = channel or "commentary", "assistant"
    return m


def chat(
    backend,
    conversation: Conversation,
    tools: Iterable[Any] = (),
    *,
    reasoning_effort: str | None = None,
    max_turns: int = 8,
    on_event: Callable[[TokenEvent | ToolStep], None] | None = None,
    **generate_options,
) -> ChatResult:
    """Run the tool loop (see the module docstring). ``on_event`` receives every ``TokenEvent`` as it
    streams and every ``ToolStep`` once its tool answered. ``generate_options`` go to ``backend.generate``
    (max_new_tokens, temperature, top_p, seed...). The given conversation is not modified."""
    conv = conversation.copy()
    tools = collect_tools(tools, conv.functions)
    conv.declare(tools)
    if reasoning_effort is not None:
        conv.set_reasoning_effort(reasoning_effort)
    transcripts: list[Transcript] = []
    trace = ToolTrace()
    stop = "max_turns"
    for generation in range(max_turns):
        turn = backend.stream(conv, reasoning_effort=conv.reasoning_effort, **generate_options)
        for event in turn:
            if on_event:
                on_event(event)
        transcript = turn.transcript
        transcripts.append(transcript)
        conv.extend(transcript.messages)
        if not transcript.messages:
            stop = "empty"
            break
        last, span = transcript.messages[-1], transcript.spans[-1]
        if span.terminator is None:  # cut off by max_new_tokens: do not run a half-written call
            stop = "length"
            break
        if last.recipient and last.recipient != "assistant" and last.author.role == Role.ASSISTANT:
            arguments = "".join(c.text for c in last.content if isinstance(c, TextContent))
            started = time.perf_counter()
            result = run_tool(tools, last.recipient, arguments)
            step = ToolStep(index=len(trace), generation=generation, recipient=last.recipient, arguments=arguments,
                            result=result.text, duration=time.perf_counter() - started,
                            token_span=(span.start, span.end), error=result.error, channel=last.channel,
                            content_type=last.content_type, data=result.data)
            trace.append(step)
            conv.add(tool_message(last.recipient, result.text, last.channel))
            if on_event:
                on_event(step)
            continue
        stop = "return" if span.terminator == "<|return|>" else "final" if last.channel == "final" else "no_recipient"
        break
    finals = [t.final for t in transcripts if t.final is not None]
    return ChatResult(conversation=conv, transcripts=transcripts, trace=trace, stop_reason=stop,
                      final=finals[-1] if finals else None)
