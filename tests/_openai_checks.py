"""Checks shared by the server tests: raw server-sent events, and a streamed Responses event sequence
validated by the official openai client's own types."""

from __future__ import annotations

import json

import httpx
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter


def sse(server, path: str, body: dict) -> list[dict]:
    """The raw server-sent events of a streamed request, parsed as JSON (``[DONE]`` dropped)."""
    out = []
    with httpx.stream("POST", server.url + path, json=body, timeout=300) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


def validate_stream(events: list[dict]) -> dict:
    """OpenAI's types accept every event; numbering, nesting and deltas are consistent; returns the final response."""
    adapter = TypeAdapter(ResponseStreamEvent)
    for e in events:
        adapter.validate_python(e)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    final = events[-1]["response"]
    Response.model_validate(final)
    current, opened = None, 0  # items come one at a time: each one's events lie between its added and done
    for e in events[2:-1]:
        if e["type"] == "response.output_item.added":
            assert current is None and e["output_index"] == opened
            current, opened = opened, opened + 1
        elif "output_index" in e:
            assert e["output_index"] == current, e
        if e["type"] == "response.output_item.done":
            current = None
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    done = {e["output_index"]: e["item"] for e in events if e["type"] == "response.output_item.done"}
    assert added == list(range(len(final["output"]))) and sorted(done) == added
    for i, item in enumerate(final["output"]):
        assert done[i] == item
        kind = {"reasoning": "response.reasoning_text.delta", "message": "response.output_text.delta",
                "function_call": "response.function_call_arguments.delta",
                "code_interpreter_call": "response.code_interpreter_call_code.delta"}.get(item["type"])
        text = "".join(e["delta"] for e in events if e["type"] == kind and e["output_index"] == i)
        if item["type"] == "reasoning":
            assert text == item["content"][0]["text"]
        elif item["type"] == "message":
            assert text == item["content"][0]["text"]
        elif item["type"] == "function_call":
            assert text == item["arguments"]
        elif item["type"] == "code_interpreter_call":
            assert text == item["code"]
    return final
