"""`workbench serve` on the built-in model, driven by the official `openai` client (streaming and not).

The model decodes under the Harmony constraint with fixed seeds, so every run is deterministic; what
it says is the model's own. The checks are properties and independent oracles: OpenAI's own pydantic
types validate every raw chunk, event and response; the streamed pieces add up to the whole answer
for the same seed; tool calls obey tool_choice; token log-probabilities agree with a full forward
pass of the model without the KV cache; the python tool's output in a code_interpreter_call is what
the tool prints for that code when run here. ``SERVE_TEST_CHECKPOINT=PATH`` runs them on another
checkpoint (they passed on the trained nano model and on the random tiny one).
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import torch
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response

from workbench.backends import LocalBackend
from workbench.harmony import Conversation, encoding
from workbench.model import load_model
from workbench.serve import make_server
from workbench.tiny import default_checkpoint

from _openai_checks import sse, validate_stream

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(900)]

TOOLS = [{"type": "function", "function": {"name": name, "description": f"Tool {name}.",
                                           "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}
         for name in ("alpha", "beta")]
RESPONSE_TOOLS = [dict(t["function"], type="function") for t in TOOLS]
USER = [{"role": "user", "content": "Use the tools."}]


@pytest.fixture(scope="module")
def model():
    import os

    return load_model(os.environ.get("SERVE_TEST_CHECKPOINT") or default_checkpoint(), dtype=torch.float32)


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    docs = tmp_path_factory.mktemp("docs")
    (docs / "sinks.md").write_text("# Attention sinks\nEach head has one learned sink logit.")
    backend = LocalBackend(model, constrained=True, max_content_tokens=8)
    with make_server(backend, "builtin", port=0, max_model_len=4096, default_max_tokens=48, constrained=True,
                     browser=docs).start() as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=300)


def assemble(chunks: list[dict]) -> dict:
    """Streamed chat chunks -> the message they add up to (choice 0)."""
    msg = {"content": "", "reasoning": "", "calls": {}, "finish": None}
    for c in chunks:
        for ch in c["choices"]:
            d = ch["delta"]
            msg["content"] += d.get("content") or ""
            msg["reasoning"] += d.get("reasoning") or ""
            for tc in d.get("tool_calls") or []:
                e = msg["calls"].setdefault(tc["index"], {"id": None, "name": "", "arguments": ""})
                e["id"] = tc.get("id") or e["id"]
                e["name"] += tc.get("function", {}).get("name") or ""
                e["arguments"] += tc.get("function", {}).get("arguments") or ""
            msg["finish"] = ch["finish_reason"] or msg["finish"]
    return msg


def whole(m) -> dict:
    return {"content": m.content or "", "reasoning": getattr(m, "reasoning", None) or "",
            "calls": [(t.function.name, t.function.arguments) for t in m.tool_calls or []]}


@pytest.mark.parametrize("choice, seed", [("auto", 0), ("required", 1), ("required", 2),
                                          ({"type": "function", "function": {"name": "beta"}}, 3), ("none", 4)])
def test_chat_tool_choice_streamed_and_whole(server, client, choice, seed):
    body = dict(model="builtin", messages=USER, tools=TOOLS, tool_choice=choice, seed=seed, max_tokens=96)
    r = client.chat.completions.create(**body)
    ChatCompletion.model_validate(r.model_dump())
    m = r.choices[0].message
    names = [t.function.name for t in m.tool_calls or []]
    if choice == "none":
        assert not names
    if choice == "required" or isinstance(choice, dict):
        assert r.choices[0].finish_reason == "tool_calls" and names
    if isinstance(choice, dict):
        assert set(names) == {"beta"}
    assert set(names) <= {"alpha", "beta"}
    assert (r.choices[0].finish_reason == "tool_calls") == bool(names)
    chunks = sse(server, "/chat/completions", dict(body, stream=True))
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    streamed = assemble(chunks)
    assert streamed["finish"] == r.choices[0].finish_reason
    assert (streamed["content"], streamed["reasoning"]) == (whole(m)["content"], whole(m)["reasoning"])
    assert [(v["name"], v["arguments"]) for _, v in sorted(streamed["calls"].items())] == whole(m)["calls"]


def test_tool_round_trip_with_history_and_parallel_calls(client):
    """Some seed makes the model write two calls in one turn (the look-ahead); the answer to both
    results is then accepted and rendered (the rendering itself is checked in test_serve_http)."""
    for seed in range(40):
        r = client.chat.completions.create(model="builtin", messages=USER, tools=TOOLS, tool_choice="required",
                                           seed=seed, max_tokens=160)
        calls = r.choices[0].message.tool_calls or []
        if len(calls) >= 2:
            break
    else:
        pytest.fail("no seed in 0..39 gave parallel calls")
    assert len({c.id for c in calls}) == len(calls)
    history = USER + [r.choices[0].message.model_dump(exclude_none=True)] + [
        {"role": "tool", "tool_call_id": c.id, "content": f"result {i}"} for i, c in enumerate(calls)]
    again = client.chat.completions.create(model="builtin", messages=history, tools=TOOLS, tool_choice="none",
                                           seed=seed, max_tokens=48)
    assert again.usage.prompt_tokens > r.usage.prompt_tokens + r.usage.completion_tokens - 48
    assert not again.choices[0].message.tool_calls


def test_logprobs_match_a_full_forward_pass(server, client, model):
    """Completion logprobs from the cached, incremental generation against log-softmax of one uncached
    forward pass over prompt + completion; chat logprobs cover exactly the content's tokens."""
    prompt = Conversation.new().user("Say something.").render()
    r = httpx.post(server.url + "/completions", json={"model": "builtin", "prompt": prompt, "max_tokens": 24,
                                                       "seed": 3, "logprobs": 2}, timeout=300).json()
    choice = r["choices"][0]
    tokens = choice["token_ids"]
    with torch.no_grad():
        logits = model(torch.tensor(prompt + tokens)).float()
    expected = torch.log_softmax(logits[len(prompt) - 1:-1], dim=-1)[torch.arange(len(tokens)), torch.tensor(tokens)]
    assert torch.allclose(torch.tensor(choice["logprobs"]["token_logprobs"]), expected, atol=2e-3)
    assert encoding().decode(tokens) == choice["text"]
    c = client.chat.completions.create(model="builtin", messages=[{"role": "user", "content": "Hi"}], seed=5,
                                       max_tokens=64, logprobs=True, top_logprobs=3)
    entries = c.choices[0].logprobs.content
    assert b"".join(bytes(e.bytes) for e in entries).decode() == c.choices[0].message.content
    for e in entries:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True) and e.logprob <= tops[0] + 1e-6


def test_responses_reasoning_stream_equals_whole(server, client):
    for seed in range(20):
        body = dict(model="builtin", input="Think first.", reasoning={"effort": "high"}, max_output_tokens=128,
                    extra_body={"seed": seed})
        r = client.responses.create(**body)
        if any(o.type == "reasoning" for o in r.output) and r.status == "completed":
            break
    else:
        pytest.fail("no seed in 0..19 gave a completed response with a reasoning item")
    Response.model_validate(r.model_dump())
    reasoning = next(o for o in r.output if o.type == "reasoning")
    assert reasoning.content[0].text and r.usage.output_tokens_details.reasoning_tokens > 0
    events = sse(server, "/responses", {"model": "builtin", "input": "Think first.", "reasoning": {"effort": "high"},
                                        "max_output_tokens": 128, "seed": seed, "stream": True})
    final = validate_stream(events)
    strip = lambda out: [{k: v for k, v in o.items() if k != "id"} for o in out]  # noqa: E731 - ids are fresh
    assert strip(final["output"]) == strip(r.model_dump(exclude_none=True)["output"])
    with client.responses.stream(model="builtin", input="Think first.", reasoning={"effort": "high"},
                                 max_output_tokens=128, extra_body={"seed": seed}) as stream:
        for _ in stream:
            pass
        assert stream.get_final_response().output_text == r.output_text


def test_responses_function_call_round_trip_and_previous_response_id(client):
    r = client.responses.create(model="builtin", input="Use a tool.", tools=RESPONSE_TOOLS, tool_choice="required",
                                max_output_tokens=96, extra_body={"seed": 1})
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls and {c.name for c in calls} <= {"alpha", "beta"}
    follow = client.responses.create(
        model="builtin", previous_response_id=r.id, max_output_tokens=32, extra_body={"seed": 2},
        input=[{"type": "function_call_output", "call_id": c.call_id, "output": "42"} for c in calls])
    assert follow.previous_response_id == r.id
    assert follow.usage.input_tokens > r.usage.input_tokens + r.usage.output_tokens - 96
    with pytest.raises(openai.BadRequestError, match="no earlier tool call"):
        client.responses.create(model="builtin", previous_response_id=r.id,
                                input=[{"type": "function_call_output", "call_id": "call_nope", "output": "1"}])
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="builtin", previous_response_id="resp_unknown", input="x")


def test_responses_parallel_calls_streamed_and_whole(server, client):
    """Some seed makes the model write two function calls in one response (the look-ahead shared with
    chat); the stream for that seed carries the same calls, item by item, arguments as deltas."""
    body = dict(model="builtin", input="Use the tools.", tools=RESPONSE_TOOLS, tool_choice="required",
                max_output_tokens=160)
    for seed in range(40):
        r = client.responses.create(**body, extra_body={"seed": seed})
        calls = [(o.name, o.arguments) for o in r.output if o.type == "function_call"]
        if len(calls) >= 2:
            break
    else:
        pytest.fail("no seed in 0..39 gave parallel calls")
    Response.model_validate(r.model_dump())
    assert {name for name, _ in calls} <= {"alpha", "beta"}
    assert len({o.call_id for o in r.output if o.type == "function_call"}) == len(calls)
    final = validate_stream(sse(server, "/responses", dict(body, seed=seed, stream=True)))
    assert [(o["name"], o["arguments"]) for o in final["output"] if o["type"] == "function_call"] == calls


def test_responses_runs_the_python_tool_on_the_server(server, client):
    from workbench.tools import PythonTool

    for seed in range(20):
        events = sse(server, "/responses", {"model": "builtin", "input": "Compute it in python.",
                                            "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
                                            "tool_choice": "required", "max_output_tokens": 96, "seed": seed,
                                            "stream": True})
        final = validate_stream(events)
        runs = [o for o in final["output"] if o["type"] == "code_interpreter_call"]
        if runs:
            break
    else:
        pytest.fail("no seed in 0..19 made the model call python")
    kinds = [e["type"] for e in events]
    for k in ("response.code_interpreter_call.in_progress", "response.code_interpreter_call.interpreting",
              "response.code_interpreter_call.completed"):
        assert k in kinds
    run = runs[0]
    tool = PythonTool()
    try:
        assert run["outputs"] == [{"type": "logs", "logs": tool.call("python", run["code"]).text}]
    finally:
        tool.close()
    # the model saw the tool's answer: the next generation's prompt was longer by it
    assert final["usage"]["input_tokens"] > 0 and run["status"] in ("completed", "failed")


def test_responses_browser_tool_runs_on_the_server(client):
    for seed in range(20):
        r = client.responses.create(model="builtin", input="Search the docs.", tools=[{"type": "web_search"}],
                                    tool_choice="required", max_output_tokens=96, extra_body={"seed": seed})
        searches = [o for o in r.output if o.type == "web_search_call"]
        if searches:
            break
    else:
        pytest.fail("no seed in 0..19 made the model use the browser")
    assert searches[0].status in ("completed", "failed") and searches[0].action.type in ("search", "open_page",
                                                                                          "find_in_page")


def test_no_browser_without_a_folder(model):
    with make_server(LocalBackend(model), "builtin", port=0).start() as s:
        c = openai.OpenAI(base_url=s.url, api_key="none", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="--browser"):
            c.responses.create(model="builtin", input="x", tools=[{"type": "web_search"}])


def test_response_format_json_schema_is_enforced(client):
    import jsonschema

    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"},
                                               "colour": {"enum": ["red", "blue"]}}, "required": ["n", "ok"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    for seed in range(10):
        r = client.chat.completions.create(model="builtin", messages=USER, response_format=fmt, seed=seed,
                                           max_tokens=160)
        if r.choices[0].finish_reason == "stop" and r.choices[0].message.content:
            break
    else:
        pytest.fail("no seed in 0..9 finished a final answer")
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    r = client.chat.completions.create(model="builtin", messages=USER, response_format={"type": "json_object"},
                                       seed=seed, max_tokens=160)
    if r.choices[0].finish_reason == "stop" and r.choices[0].message.content:
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    with pytest.raises(openai.BadRequestError, match="cannot enforce"):
        client.chat.completions.create(model="builtin", messages=USER, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
                "inner": {"type": "object"}}}}})


def test_responses_text_format_json_schema(client):
    import jsonschema

    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}},
              "required": ["n", "ok"]}
    for seed in range(10):
        r = client.responses.create(model="builtin", input="Answer in JSON.", max_output_tokens=160,
                                    text={"format": {"type": "json_schema", "name": "answer", "schema": schema}},
                                    extra_body={"seed": seed})
        if r.status == "completed" and r.output_text:
            break
    else:
        pytest.fail("no seed in 0..9 finished a final answer")
    Response.model_validate(r.model_dump(by_alias=True))
    jsonschema.validate(json.loads(r.output_text), schema)
    assert r.text.format.type == "json_schema"
