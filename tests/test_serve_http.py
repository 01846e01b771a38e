"""`workbench serve` over real HTTP on 127.0.0.1: the openai client's path, malformed and hostile requests.

The backend here replays one fixed Harmony completion (optionally slowly), so the expected reasoning,
content and token counts are known by construction; the tiny model runs in test_serve_model.py.
"""

import http.client
import json
import socket
import threading
import time

import openai
import pytest

from workbench.backends import Backend
from workbench.harmony import encoding
from workbench.serve import make_server

REPLY = "<|channel|>analysis<|message|>Two plus two is four.<|end|><|start|>assistant<|channel|>final<|message|>4<|return|>"


class Replay(Backend):
    """Thread-safe: every call yields the same completion (cut at max_new_tokens), `delay` s per token."""

    def __init__(self, text=REPLY, delay=0.0):
        self.ids = encoding().encode(text, allowed_special="all")
        self.delay = delay
        self.calls = []

    def generate(self, prompt, *, max_new_tokens=2048, **options):
        self.calls.append({"prompt": list(prompt), "max_new_tokens": max_new_tokens, **options})
        for t in self.ids[:max_new_tokens]:
            time.sleep(self.delay)
            yield t


@pytest.fixture(scope="module")
def served():
    backend = Replay()
    server = make_server(backend, "tiny", port=0, max_model_len=512, max_queue=2).start()
    yield server, backend
    server.close()


def client(server, **kw):
    return openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, **kw)


def raw(server, method, path, body=b"", headers=None):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, (json.loads(data) if data.startswith(b"{") else data)


def test_chat_completion_with_openai_client(served):
    server, backend = served
    c = client(server)
    r = c.chat.completions.create(model="tiny", messages=[{"role": "system", "content": "Be brief."},
                                                          {"role": "user", "content": "2+2?"}],
                                  reasoning_effort="high", max_tokens=100, temperature=0.5, seed=7)
    assert r.choices[0].message.content == "4"
    assert r.choices[0].message.reasoning_content == "Two plus two is four."
    assert r.choices[0].finish_reason == "stop"
    n = len(Replay().ids)
    assert r.usage.completion_tokens == n
    assert r.usage.completion_tokens_details.reasoning_tokens == len(encoding().encode(
        "<|channel|>analysis<|message|>Two plus two is four.<|end|>", allowed_special="all"))
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
            reasoning += getattr(choice.delta, "reasoning_content", None) or ""
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert (reasoning, content, finish) == ("Two plus two is four.", "4", "stop")
    assert usage.completion_tokens == len(Replay().ids)
    r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5
    assert r.choices[0].message.content == "" and r.choices[0].message.reasoning_content == "Two plus"  # <|channel|> analysis <|message|> Two " plus"


@pytest.mark.parametrize("body, status, needle", [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not UTF-8"),
    (b"[1, 2]", 400, "JSON object"),
    (b"[" * 100000 + b"]" * 100000, 400, "nested too deeply"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400, "'model' is required"),
    (json.dumps({"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]}).encode(), 404, "does not exist"),
    (json.dumps({"model": "tiny"}).encode(), 400, "'messages'"),
    (json.dumps({"model": "tiny", "messages": []}).encode(), 400, "'messages'"),
    (json.dumps({"model": "tiny", "messages": ["hi"]}).encode(), 400, "messages[0] must be an object"),
    (json.dumps({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}).encode(), 400, "wizard"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": 5}]}).encode(), 400, "content"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).encode(),
     400, "text content"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 3}).encode(),
     400, "'temperature' = 3 is out of range"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400, "finite"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "top_p": 0}).encode(), 400, "top_p"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}).encode(),
     400, "max_tokens"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}).encode(),
     400, "integer"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": True}).encode(),
     400, "integer"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 2}).encode(), 400, "'n'"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}).encode(),
     400, "stream"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                 "reasoning_effort": "extreme"}).encode(), 400, "reasoning_effort"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": [{}]}).encode(),
     400, "'tools' is not supported"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "word " * 600}]}).encode(),
     400, "maximum context length is 512"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 500}).encode(),
     400, "maximum context length"),
])
def test_bad_requests_get_4xx_with_a_message_and_the_server_keeps_serving(served, body, status, needle):
    server, backend = served
    calls = len(backend.calls)
    got, data = raw(server, "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
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
    assert raw(server, "GET", "/health") == (200, {"status": "ok"})
    # a body over the limit is refused unread
    status, data = raw(server, "POST", "/v1/chat/completions", b"", {"Content-Length": str(1 << 40)})
    assert status == 413
    # no Content-Length, a negative one, a chunked body
    for headers, code in [({}, 411), ({"Content-Length": "-5"}, 400), ({"Transfer-Encoding": "chunked"}, 411)]:
        with socket.create_connection((host, port), timeout=5) as s:
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
            assert f" {code} ".encode() in s.recv(4096)
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
    # a client that disconnects in the middle of a stream
    with socket.create_connection((host, port), timeout=5) as s:
        body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": True}).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        s.recv(10)
    # still serving, with keep-alive
    c = client(server)
    for _ in range(3):
        assert c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}]).choices[0].message.content == "4"


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
            t.join(30)
        # one running + two waiting are served; the rest are turned away at once
        assert sorted(results, key=str) == sorted(["4"] * 3 + [503] * 5, key=str), results
        assert client(server).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}]).choices[0].message.content == "4"
