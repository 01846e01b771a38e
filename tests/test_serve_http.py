"""`workbench serve` over real HTTP on 127.0.0.1: the openai client's path, malformed and hostile requests.

The backend here replays fixed Harmony completions (optionally gated token by token), so the expected
reasoning, content, calls and token counts are known by construction; the built-in model runs in
test_serve_openai.py.
"""

import http.client
import json
import resource
import socket
import threading
import time

import openai
import pytest

from workbench.backends import Backend, prompt_tokens
from workbench.harmony import encoding
from workbench.serve import make_server

REPLY = "<|channel|>analysis<|message|>Two plus two is four.<|end|><|start|>assistant<|channel|>final<|message|>4<|return|>"


def ids(text):
    return encoding().encode(text, allowed_special="all")


class Replay(Backend):
    """Thread-safe: call i replays script[i % len(script)] (cut at max_new_tokens), `delay` s per token."""

    def __init__(self, *script, delay=0.0):
        self.script = [ids(s) for s in (script or (REPLY,))]
        self.delay = delay
        self.calls = []

    def generate(self, prompt, *, max_new_tokens=2048, **options):
        reply = self.script[len(self.calls) % len(self.script)]
        self.calls.append({"prompt": prompt_tokens(prompt), "max_new_tokens": max_new_tokens, **options})
        for t in reply[:max_new_tokens]:
            time.sleep(self.delay)
            yield t
            if t in (200002, 200012):
                return


@pytest.fixture(scope="module")
def served():
    backend = Replay()
    server = make_server(backend, "tiny", port=0, max_model_len=512, max_queue=2).start()
    yield server, backend
    server.close()


def client(server, **kw):
    return openai.OpenAI(base_url=server.url, api_key=kw.pop("api_key", "none"), max_retries=0, **kw)


def raw(server, method, path, body=b"", headers=None):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, (json.loads(data) if data.startswith(b"{") else data)


def post(server, body, headers=None):
    return raw(server, "POST", "/v1/chat/completions", body if isinstance(body, bytes) else json.dumps(body).encode(),
               {"Content-Type": "application/json", **(headers or {})})


def test_chat_completion_with_openai_client(served):
    server, backend = served
    c = client(server)
    r = c.chat.completions.create(model="tiny", messages=[{"role": "system", "content": "Be brief."},
                                                          {"role": "user", "content": "2+2?"}],
                                  reasoning_effort="high", max_tokens=100, temperature=0.5, seed=7)
    m = r.choices[0].message
    assert (m.content, m.reasoning, m.reasoning_content) == ("4", "Two plus two is four.", "Two plus two is four.")
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == len(ids(REPLY))
    assert r.usage.completion_tokens_details.reasoning_tokens == len(ids(
        "<|channel|>analysis<|message|>Two plus two is four.<|end|>"))
    call = backend.calls[-1]
    assert r.usage.prompt_tokens == len(call["prompt"])
    assert (call["max_new_tokens"], call["temperature"], call["seed"], call["reasoning_effort"]) == (100, 0.5, 7, "high")
    prompt = encoding().decode(call["prompt"])
    assert "Reasoning: high" in prompt and "Be brief." in prompt and prompt.endswith("2+2?<|end|><|start|>assistant")
    assert [m.id for m in c.models.list().data] == ["tiny"]


def test_streaming_and_length(served):
    server, _ = served
    c = client(server)
    stream = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True,
                                       stream_options={"include_usage": True})
    reasoning, content, finish, usage = "", "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            reasoning += getattr(choice.delta, "reasoning", None) or ""
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert (reasoning, content, finish) == ("Two plus two is four.", "4", "stop")
    assert usage.completion_tokens == len(ids(REPLY))
    r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5
    assert r.choices[0].message.content == "" and r.choices[0].message.reasoning == "Two plus"


def test_max_tokens_past_the_context_is_cut_to_what_is_left(served):
    """As vLLM does (and OpenAI's gpt-oss samplers rely on: they ask for 131072 tokens)."""
    server, backend = served
    r = client(server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                               max_tokens=100_000)
    assert backend.calls[-1]["max_new_tokens"] == 512 - r.usage.prompt_tokens


def test_stop_strings_and_n(served):
    server, backend = served
    c = client(server)
    r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], n=3, seed=5)
    assert [ch.index for ch in r.choices] == [0, 1, 2] and {ch.message.content for ch in r.choices} == {"4"}
    assert [call["seed"] for call in backend.calls[-3:]] == [5, 6, 7]
    assert r.usage.completion_tokens == 3 * len(ids(REPLY))
    r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], stop=["4"])
    assert r.choices[0].message.content == "" and r.choices[0].finish_reason == "stop"


BAD = [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not UTF-8"),
    (b"[1, 2]", 400, "JSON object"),
    (b"[" * 100000 + b"]" * 100000, 400, "nested too deeply"),
    ({"messages": [{"role": "user", "content": "x"}]}, 400, "'model' is required"),
    ({"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]}, 404, "does not exist"),
    ({"model": "tiny"}, 400, "'messages'"),
    ({"model": "tiny", "messages": []}, 400, "'messages'"),
    ({"model": "tiny", "messages": ["hi"]}, 400, "messages[0] must be an object"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, 400, "wizard"),
    ({"model": "tiny", "messages": [{"role": "user", "content": 5}]}, 400, "content"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "text content"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, 400,
     "'temperature' = 3 is out of range"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400, "finite"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "top_p": 0}, 400, "top_p"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}, 400, "integer"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": True}, 400, "integer"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 0}, 400, "'n'"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, 400, "stream"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "extreme"}, 400,
     "reasoning_effort"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": [{}]}, 400, "needs a 'name'"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}, 400, "tool_choice"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}, 400,
     "no tools"),
    ({"model": "tiny", "messages": [{"role": "tool", "tool_call_id": "c9", "content": "x"}]}, 400,
     "no earlier tool call has the id 'c9'"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}, 400, "logprobs"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 5}, 400, "stop"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "word " * 600}]}, 400, "maximum context length is 512"),
]


@pytest.mark.parametrize("body, status, needle", BAD)
def test_bad_requests_get_4xx_with_a_message_and_the_server_keeps_serving(served, body, status, needle):
    server, backend = served
    calls = len(backend.calls)
    got, data = post(server, body)
    assert got == status, data
    assert needle in data["error"]["message"]
    assert len(backend.calls) == calls  # nothing reached the model
    r = client(server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "ok?"}])
    assert r.choices[0].message.content == "4"


def test_openai_client_sees_typed_errors(served):
    server, _ = served
    c = client(server)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], temperature=-1)
    assert e.value.body["param"] == "temperature"


def test_hostile_http(served):
    server, _ = served
    host, port = server.server_address[:2]
    assert raw(server, "GET", "/v1/nothing")[0] == 404
    assert raw(server, "DELETE", "/v1/models")[0] == 405
    assert raw(server, "GET", "/health")[1]["status"] == "ok"
    # a body over the limit is refused unread, also when it comes chunked
    assert post(server, b"", {"Content-Length": str(1 << 40)})[0] == 413
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(9):
                s.sendall(b"100000\r\n" + b"x" * (1 << 20) + b"\r\n")
        except OSError:
            pass  # the server answered and closed before the client finished sending
        assert s.recv(4096).startswith(b"HTTP/1.1 413 ")
    # garbage instead of HTTP, a request line that never ends, a client that connects and leaves,
    # a body shorter than announced
    for junk in [b"\x00\x01\x02 garbage\r\n\r\n", b"GET /" + b"a" * 70000, b"",
                 b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"model\""]:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            try:
                s.recv(4096)
            except OSError:
                pass
    # still serving, with keep-alive
    c = client(server)
    for _ in range(3):
        assert c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}]).choices[0].message.content == "4"


@pytest.mark.parametrize("headers, status", [
    ({"Content-Type": "text/plain"}, 415),  # a cross-site form POST needs no preflight: refused by type
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ({"Origin": "http://evil.example"}, 403),  # a browser page on another site
    ({"Host": "evil.example"}, 403),  # DNS rebinding: a name that resolves to us but is not ours
    ({"Host": "evil.example:8000", "Origin": "http://evil.example:8000"}, 403),
])
def test_cross_site_requests_are_refused(served, headers, status):
    server, backend = served
    calls = len(backend.calls)
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}]}).encode()
    got, data = raw(server, "POST", "/v1/chat/completions", body, {"Content-Type": "application/json", **headers})
    assert got == status, data
    assert len(backend.calls) == calls


def test_api_key_is_enforced():
    with make_server(Replay(), "tiny", port=0, max_model_len=512, api_key="s3cret").start() as server:
        for key in ("none", "s3cret-not", "S3CRET"):
            with pytest.raises(openai.AuthenticationError):
                client(server, api_key=key).chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "x"}])
        assert post(server, {"model": "tiny", "messages": [{"role": "user", "content": "x"}]})[0] == 401
        r = client(server, api_key="s3cret").chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}])
        assert r.choices[0].message.content == "4"
        assert raw(server, "GET", "/health")[0] == 200  # health checks need no key


def test_bounded_queue_answers_503_when_full():
    backend = Replay(delay=0.02)  # ~0.5 s per request
    with make_server(backend, "tiny", port=0, max_model_len=512, max_queue=2).start() as server:
        results = []

        def call():
            try:
                r = client(server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
                results.append(r.choices[0].message.content)
            except openai.APIStatusError as e:
                results.append(e.status_code)

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # one running + two waiting are served; the rest are turned away at once
        assert sorted(results, key=str) == sorted(["4"] * 3 + [503] * 5, key=str), results
        assert client(server).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}]).choices[0].message.content == "4"


def test_slow_clients_do_not_starve_others():
    """50 connections dripping a request head (slowloris) and 10 dripping a body: a normal client is
    still answered within 2 s, and a head that does not arrive in time gets its connection closed."""
    with make_server(Replay(), "tiny", port=0, max_model_len=512, header_timeout=4.0).start() as server:
        host, port = server.server_address
        slow = []
        try:
            for i in range(60):
                s = socket.create_connection((host, port), timeout=10)
                if i < 50:
                    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                else:
                    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                              b"application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": ")
                slow.append(s)
            start = time.monotonic()
            r = client(server, timeout=30).chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "x"}])
            assert r.choices[0].message.content == "4"
            assert time.monotonic() - start < 2.0
            slow[0].settimeout(30)
            assert slow[0].recv(100) == b""  # closed by the server once the head was late
        finally:
            for s in slow:
                s.close()


class Gated(Backend):
    """Yields one token per release of `gate`; records how many it produced and whether it was closed."""

    def __init__(self):
        self.gate = threading.Semaphore(0)
        self.produced, self.closed = 0, False
        self.tokens = ids("<|channel|>final<|message|>") + ids("la " * 5000)

    def generate(self, prompt, *, max_new_tokens=2048, **options):
        try:
            for t in self.tokens[:max_new_tokens]:
                self.gate.acquire()
                self.produced += 1
                yield t
        finally:
            self.closed = True


@pytest.mark.parametrize("stream", [True, False])
def test_a_hung_up_client_stops_its_generation_within_one_token(stream):
    backend = Gated()
    with make_server(backend, "tiny", port=0, max_model_len=8192, default_max_tokens=4000).start() as server:
        host, port = server.server_address
        body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": stream}).encode()
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        for _ in range(10):
            backend.gate.release()
        deadline = time.monotonic() + 20
        while backend.produced < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        if stream:  # the generated text reached the client before it hangs up
            got = b""
            while b"la" not in got and time.monotonic() < deadline:
                got += s.recv(65536)
            assert b"la" in got
        s.close()
        deadline = time.monotonic() + 20
        while not any(j.cancelled for j in server.service.engine.jobs) and server.service.engine.jobs \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        at_cancel = backend.produced
        for _ in range(200):  # let it run if it wants to: it must not
            backend.gate.release()
        while server.service.engine.jobs and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not server.service.engine.jobs and backend.closed
        assert backend.produced - at_cancel <= 1, (at_cancel, backend.produced)
        assert backend.produced < 20


def test_huge_prompts_are_refused_before_tokenising_with_bounded_memory(served):
    server, backend = served
    calls = len(backend.calls)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    for text in ("a" * 300_000, "word " * 60_000):
        got, data = post(server, {"model": "tiny", "messages": [{"role": "user", "content": text}]})
        assert got == 400 and data["error"]["code"] == "prompt_too_long", data
    assert time.monotonic() - start < 30  # tokenising "a" * 300000 alone takes ~27 s of CPU
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, grown_mb
    assert len(backend.calls) == calls


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
CALL = ("<|channel|>analysis<|message|>Need both cities.<|end|><|start|>assistant to=functions.get_weather"
        "<|channel|>commentary <|constrain|>json<|message|>{\"city\": \"Oslo\"}<|call|>")
SECOND = "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Rome\"}<|call|>"
STOP = "<|channel|>final<|message|>ignored<|return|>"
ANSWER = "<|channel|>analysis<|message|>Oslo 3, Rome 20.<|end|><|start|>assistant<|channel|>final<|message|>Rome.<|return|>"


def test_parallel_tool_calls_streamed_and_whole_then_the_history_round_trip():
    """Call, look-ahead finds a second call, look-ahead finds no third (dropped); then the answer to
    the tool results, whose prompt must hold both calls and both results as Harmony messages."""
    backend = Replay(CALL, SECOND, STOP, CALL, SECOND, STOP, ANSWER)
    with make_server(backend, "tiny", port=0, max_model_len=2048).start() as server:
        c = client(server)
        msgs = [{"role": "user", "content": "Warmer: Oslo or Rome?"}]
        r = c.chat.completions.create(model="tiny", messages=msgs, tools=TOOLS)
        m = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls" and m.reasoning == "Need both cities."
        assert [(t.function.name, json.loads(t.function.arguments)) for t in m.tool_calls] == [
            ("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Rome"})]
        assert len({t.id for t in m.tool_calls}) == 2
        look = encoding().decode(backend.calls[1]["prompt"])  # the look-ahead continues the completion
        assert look.endswith('{"city": "Oslo"}<|call|><|start|>assistant')
        calls, finish = {}, None
        for chunk in c.chat.completions.create(model="tiny", messages=msgs, tools=TOOLS, stream=True):
            for ch in chunk.choices:
                finish = ch.finish_reason or finish
                for tc in ch.delta.tool_calls or []:
                    entry = calls.setdefault(tc.index, {"id": tc.id, "name": "", "arguments": ""})
                    entry["name"] += tc.function.name or ""
                    entry["arguments"] += tc.function.arguments or ""
        assert finish == "tool_calls"
        assert [(v["name"], json.loads(v["arguments"])) for _, v in sorted(calls.items())] == [
            ("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Rome"})]
        history = msgs + [m.model_dump(exclude_none=True)] + [
            {"role": "tool", "tool_call_id": t.id, "content": f"{t.function.arguments} -> {i}"}
            for i, t in enumerate(m.tool_calls)]
        r = c.chat.completions.create(model="tiny", messages=history, tools=TOOLS)
        assert r.choices[0].message.content == "Rome."
        prompt = encoding().decode(backend.calls[-1]["prompt"])
        # reasoning kept between calls; calls and results as gpt-oss reads them
        assert ('<|start|>assistant<|channel|>analysis<|message|>Need both cities.<|end|>'
                '<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>'
                '{"city": "Oslo"}<|call|><|start|>assistant to=functions.get_weather<|channel|>commentary '
                '<|constrain|>json<|message|>{"city": "Rome"}<|call|>'
                '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"city": "Oslo"} -> 0<|end|>'
                '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"city": "Rome"} -> 1<|end|>'
                '<|start|>assistant') in prompt
        assert "get_weather" in prompt.split("<|start|>user")[0]  # declared in the developer message


def test_parallel_tool_calls_false_makes_one_call():
    backend = Replay(CALL, SECOND)
    with make_server(backend, "tiny", port=0, max_model_len=2048).start() as server:
        r = client(server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                                   tools=TOOLS, parallel_tool_calls=False)
        assert len(r.choices[0].message.tool_calls) == 1 and len(backend.calls) == 1
