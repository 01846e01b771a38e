"""`/v1/responses` with OpenAI's own client: one python session per conversation, and parallel function calls.

The served "model" is scripted so that what runs is known by construction: ``Coder`` sends the text
after ``RUN:`` in the last user message to the python tool and then repeats the tool's answer as its
final answer; ``Replay`` (from test_serve_http) replays fixed Harmony completions. The python tool is
the real sandbox, so the outputs checked here (a variable from an earlier response, a file in
/mnt/data) are what the sandbox computed; the expected values are worked out by hand. Whether a
sandbox is left running is read from /proc (this process's descendants).
"""

from __future__ import annotations

import json
import os
import time

import openai
import pytest
from openai.types.responses import Response

from _openai_checks import sse, validate_stream
from test_serve_http import ANSWER, CALL, SECOND, STOP, Replay

from workbench.backends import Backend
from workbench.harmony import Conversation, encoding, text_of
from workbench.serve import ResponseStore, make_server

CI = [{"type": "code_interpreter", "container": {"type": "auto"}}]
NOTICE = "[The python session of this conversation was restarted"


class Coder(Backend):
    """Runs ``RUN: code`` through python, then answers with what python said; answers other messages."""

    def generate(self, prompt, *, max_new_tokens=2048, **options):
        last = prompt.messages[-1]
        if last.author.role.value == "tool":
            text = f"<|channel|>final<|message|>{text_of(last)}<|return|>"
        elif "RUN:" not in text_of(last):
            text = "<|channel|>final<|message|>Nothing to run.<|return|>"
        else:
            code = text_of(last).partition("RUN:")[2].strip()
            text = f"<|channel|>analysis to=python code<|message|>{code}<|call|>"
        yield from encoding().encode(text, allowed_special="all")[:max_new_tokens]


def sandboxes(exclude=frozenset()) -> set[int]:
    """Live (not zombie) processes descended from this one, read from /proc, less ``exclude``."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            except OSError:
                continue
            if state != "Z":
                parent[int(d)] = int(ppid)
    out, todo = set(), [os.getpid()]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out.update(kids)
        todo += kids
    return out - set(exclude)


def run(client, code, previous=None, **kw):
    """One response that runs ``code``; returns (response, its code_interpreter_call's logs)."""
    r = client.responses.create(model="coder", input=f"RUN: {code}", tools=CI, previous_response_id=previous, **kw)
    Response.model_validate(r.model_dump())
    calls = [o for o in r.output if o.type == "code_interpreter_call"]
    assert len(calls) == 1 and calls[0].code == code
    logs = calls[0].outputs[0].logs
    assert r.status == "completed" and r.output_text == logs  # the model was shown what python said
    return r, logs


def served(**options):
    return make_server(Coder(), "coder", port=0, max_model_len=4096, **options).start()


def client_of(server):
    return openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120)


def test_python_state_persists_along_previous_response_id():
    before = sandboxes()
    with served() as server:
        c = client_of(server)
        r1, out = run(c, "x = 41\n_ = open('/mnt/data/note.txt', 'w').write('kept')")
        assert out == ""
        r2, out = run(c, "print(x + 1, open('/mnt/data/note.txt').read())", r1.id)
        assert out == "42 kept\n" and r2.previous_response_id == r1.id
        # streamed, with the event sequence checked by the client's types, still the same session
        events = sse(server, "/responses", {"model": "coder", "input": "RUN: x * 2", "tools": CI, "stream": True,
                                            "previous_response_id": r2.id})
        final = validate_stream(events)
        call = next(o for o in final["output"] if o["type"] == "code_interpreter_call")
        assert call["outputs"] == [{"type": "logs", "logs": "82\n"}]
        # a new conversation has its own session, and is not told of a restart (it never ran python)
        _, out = run(c, "print(x)")
        assert "NameError" in out and NOTICE not in out
        # a continuation that does not offer python keeps the session for the next one that does
        r3 = c.responses.create(model="coder", input="Thanks.", previous_response_id=final["id"])
        assert r3.output_text == "Nothing to run."
        _, out = run(c, "print(x - 1)", r3.id)
        assert out == "40\n"
        assert len(server.service.sessions) == 2 and sandboxes(before)
    assert not sandboxes(before)  # every sandbox ended with the server


def test_an_evicted_session_is_restarted_and_the_model_is_told():
    before = sandboxes()
    with served(max_sessions=1) as server:
        c = client_of(server)
        a, _ = run(c, "x = 1")
        b, _ = run(c, "y = 2")  # a second conversation: the first one's session is closed for it
        assert len(server.service.sessions) == 1
        _, out = run(c, "print(y)", b.id)
        assert out == "2\n"
        r, out = run(c, "print(x)", a.id)
        assert out.startswith(NOTICE) and "limit of 1 live sessions" in out and "NameError" in out
        _, out = run(c, "x = 5\nprint(x)", r.id)  # the new session goes on normally, without a notice
        assert out == "5\n"
        assert len(sandboxes(before)) > 0
    assert not sandboxes(before)


def test_an_idle_session_expires_and_a_branch_gets_a_fresh_one():
    before = sandboxes()
    with served(session_idle=0.5) as server:
        c = client_of(server)
        r1, _ = run(c, "x = 1")
        deadline = time.monotonic() + 30
        while (len(server.service.sessions) or sandboxes(before)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(server.service.sessions) == 0 and not sandboxes(before)  # closed by the reaper
        r2, out = run(c, "print(x)", r1.id)
        assert out.startswith(NOTICE) and "idle for more than 0.5 s" in out and "NameError" in out
    with served() as server:
        c = client_of(server)
        r1, _ = run(c, "x = 1")
        r2, _ = run(c, "x = 2", r1.id)
        _, out = run(c, "print(x)", r2.id)
        assert out == "2\n"
        _, out = run(c, "print(x)", r1.id)  # continues an earlier response: its state is not to be had
        assert out.startswith(NOTICE) and "a later response" in out and "NameError" in out
        # a client that resends the history without previous_response_id is told too
        hist = [{"type": "code_interpreter_call", "id": "ci_1", "code": "z = 3", "container_id": "x",
                 "outputs": [{"type": "logs", "logs": ""}], "status": "completed"},
                {"type": "message", "role": "user", "content": "RUN: print(z)"}]
        r = c.responses.create(model="coder", input=hist, tools=CI)
        logs = next(o for o in r.output if o.type == "code_interpreter_call").outputs[0].logs
        assert logs.startswith(NOTICE) and "NameError" in logs
    assert not sandboxes(before)


def test_store_false_and_closed_servers_keep_no_session():
    before = sandboxes()
    server = served()
    c = client_of(server)
    r, _ = run(c, "x = 1", store=False)
    assert len(server.service.sessions) == 0 and not sandboxes(before)
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model="coder", input="RUN: x", tools=CI, previous_response_id=r.id)
    run(c, "x = 1")
    run(c, "y = 1")
    assert len(sandboxes(before)) > 0
    server.close()
    assert not sandboxes(before)


def test_the_store_is_bounded_in_responses_and_characters():
    store = ResponseStore(size=3, max_chars=20_000)
    convs = {f"r{i}": Conversation.new().user("x" * 3000 * (i % 3 + 1)) for i in range(10)}
    for rid, conv in convs.items():
        assert store.put(rid, conv, {})
        assert len(store) <= 3 and store.chars <= 20_000
        assert store.chars == sum(sum(len(m.to_json()) for m in convs[k].messages) for k in store._items)
    assert store.get("r9") is not None and store.get("r0") is None
    assert not store.put("huge", Conversation.new().user("y" * 30_000), {}) and store.get("huge") is None
    with served(store_chars=5_000) as server:  # a response too big to store cannot be continued
        c = client_of(server)
        r, _ = run(c, "print('a' * 10)")
        big, _ = run(c, "s = " + repr("b" * 6000))
        assert c.responses.create(model="coder", input="RUN: 1", previous_response_id=r.id).status == "completed"
        with pytest.raises(openai.NotFoundError):
            c.responses.create(model="coder", input="RUN: 1", previous_response_id=big.id)


# -- parallel function calls ------------------------------------------------------------------------

FUNCTIONS = [{"type": "function", "name": "get_weather", "description": "Weather in a city.",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
USER = "Warmer: Oslo or Rome?"


def test_responses_parallel_calls_streamed_and_whole_then_the_round_trip():
    """Call, the look-ahead finds a second call, the next finds none (dropped); the same through the
    stream (events in order, argument deltas adding up); then both results in one follow-up."""
    backend = Replay(CALL, SECOND, STOP, CALL, SECOND, STOP, ANSWER)
    with make_server(backend, "tiny", port=0, max_model_len=2048).start() as server:
        c = client_of(server)
        r = c.responses.create(model="tiny", input=USER, tools=FUNCTIONS)
        Response.model_validate(r.model_dump())
        assert [o.type for o in r.output] == ["reasoning", "function_call", "function_call"]
        assert r.output[0].content[0].text == "Need both cities."
        calls = r.output[1:]
        assert [(o.name, json.loads(o.arguments)) for o in calls] == [("get_weather", {"city": "Oslo"}),
                                                                       ("get_weather", {"city": "Rome"})]
        assert len({o.call_id for o in calls}) == 2 and r.status == "completed"
        assert encoding().decode(backend.calls[1]["prompt"]).endswith('{"city": "Oslo"}<|call|><|start|>assistant')
        # the dropped look-ahead was generated up to its <|message|>, where it showed it is no call
        n = sum(len(encoding().encode(t, allowed_special="all")) for t in (CALL, SECOND, "<|channel|>final<|message|>"))
        assert r.usage.output_tokens == n
        events = sse(server, "/responses", {"model": "tiny", "input": USER, "tools": FUNCTIONS, "stream": True})
        final = validate_stream(events)
        strip = lambda out: [{k: v for k, v in o.items() if k not in ("id", "call_id")} for o in out]  # noqa: E731
        assert strip(final["output"]) == strip(r.model_dump(exclude_none=True)["output"])
        deltas = [(e["output_index"], e["delta"]) for e in events
                  if e["type"] == "response.function_call_arguments.delta"]
        assert [i for i, _ in deltas] == sorted(i for i, _ in deltas) and {i for i, _ in deltas} == {1, 2}
        follow = c.responses.create(model="tiny", previous_response_id=final["id"], tools=FUNCTIONS, input=[
            {"type": "function_call_output", "call_id": o["call_id"], "output": f"{o['arguments']} -> {i}"}
            for i, o in enumerate(final["output"][1:])])
        assert follow.output_text == "Rome."
        prompt = encoding().decode(backend.calls[-1]["prompt"])
        assert ('{"city": "Oslo"}<|call|><|start|>assistant to=functions.get_weather<|channel|>commentary '
                '<|constrain|>json<|message|>{"city": "Rome"}<|call|>'
                '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"city": "Oslo"} -> 0<|end|>'
                '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"city": "Rome"} -> 1<|end|>'
                '<|start|>assistant') in prompt


@pytest.mark.parametrize("options", [{"parallel_tool_calls": False},
                                     {"tool_choice": {"type": "function", "name": "get_weather"}}])
def test_responses_one_call_when_parallel_calls_are_off(options):
    backend = Replay(CALL, SECOND)
    with make_server(backend, "tiny", port=0, max_model_len=2048).start() as server:
        r = client_of(server).responses.create(model="tiny", input=USER, tools=FUNCTIONS, **options)
        assert [o.type for o in r.output].count("function_call") == 1 and len(backend.calls) == 1


def test_responses_a_cut_off_look_ahead_is_dropped():
    """The look-ahead runs out of tokens inside its call: the half-written call is not sent."""
    backend = Replay(CALL, SECOND)
    n = len(encoding().encode(CALL, allowed_special="all"))
    with make_server(backend, "tiny", port=0, max_model_len=2048).start() as server:
        events = sse(server, "/responses", {"model": "tiny", "input": USER, "tools": FUNCTIONS, "stream": True,
                                            "max_output_tokens": n + 5})
        final = validate_stream(events)
        assert [o["type"] for o in final["output"]] == ["reasoning", "function_call"]
        assert final["usage"]["output_tokens"] == n + 5 and len(backend.calls) == 2
