"""OpenAIBackend against a real HTTP server on 127.0.0.1 speaking the chat-completions streaming protocol
(a small fake of vLLM / Ollama), through the real ``openai`` client."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workbench.backends.openai_compat import OpenAIBackend
from workbench.toolloop import chat
from workbench.harmony import Conversation


def chunk(delta: dict, finish: str | None = None) -> dict:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "gpt-oss",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


class FakeServer:
    """Replies to POST /v1/chat/completions with the next scripted list of chunks, as SSE."""

    def __init__(self, replies: list[list[dict]]):
        self.replies, self.requests = list(replies), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for c in outer.replies.pop(0):
                    self.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def get_weather(location: str) -> str:
    """Gets the weather.

    Args:
        location: A city.
    """
    return f"sunny in {location}"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])  # vLLM (older) / vLLM (newer) and Ollama
def test_reasoning_and_content_become_harmony_messages(field):
    replies = [[chunk({"role": "assistant"}), chunk({field: "Think"}), chunk({field: "ing…"}),
                chunk({"content": "Hello"}), chunk({"content": " 👋"}), chunk({}, "stop")]]
    with FakeServer(replies) as url:
        backend = OpenAIBackend("gpt-oss-20b", base_url=url, api_key="k")
        conv = Conversation.new("Be kind.", reasoning_effort="low").user("Hi")
        t = backend.complete(conv, max_new_tokens=64, temperature=0.5)
    assert t.errors == []
    assert [(m.channel, m.content[0].text) for m in t.messages] == [("analysis", "Thinking…"), ("final", "Hello 👋")]
    assert t.spans[-1].terminator == "<|return|>"


def test_request_follows_the_protocol():
    replies = [[chunk({"content": "ok"}), chunk({}, "stop")]]
    server = FakeServer(replies)
    with server as url:
        conv = Conversation.new("Be kind.", reasoning_effort="high", functions=[get_weather]).user("Hi")
        list(OpenAIBackend("m", base_url=url, api_key="secret").generate(conv, max_new_tokens=7, seed=3))
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer secret"
    body = req["body"]
    assert body["model"] == "m" and body["stream"] is True and body["max_tokens"] == 7 and body["seed"] == 3
    assert body["reasoning_effort"] == "high"
    assert body["messages"] == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["tools"][0]["function"]["parameters"]["required"] == ["location"]


def test_tool_loop_over_http_keeps_reasoning_between_calls():
    replies = [
        [chunk({"reasoning_content": "Need weather."}),
         chunk({"tool_calls": [{"index": 0, "id": "x1", "type": "function",
                                "function": {"name": "get_weather", "arguments": ""}}]}),
         chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"location": '}}]}),
         chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
         chunk({}, "tool_calls")],
        [chunk({"reasoning_content": "Got it."}), chunk({"content": "Sunny in Oslo."}), chunk({}, "stop")],
    ]
    server = FakeServer(replies)
    with server as url:
        result = chat(OpenAIBackend("m", base_url=url), Conversation.new().user("Weather in Oslo?"), tools=[get_weather])
    assert result.final == "Sunny in Oslo." and result.stop_reason == "return"
    assert [(s.recipient, s.arguments, s.result) for s in result.trace] == [
        ("functions.get_weather", '{"location": "Oslo"}', "sunny in Oslo")]
    assert result.errors == []
    second = server.requests[1]["body"]["messages"]
    call_id = second[1]["tool_calls"][0]["id"]
    assert second[1] == {"role": "assistant", "content": None, "reasoning": "Need weather.",
                         "tool_calls": [{"id": call_id, "type": "function",
                                         "function": {"name": "get_weather", "arguments": '{"location": "Oslo"}'}}]}
    assert second[2] == {"role": "tool", "tool_call_id": call_id, "content": "sunny in Oslo"}


def test_builtin_python_is_offered_as_a_function_and_mapped_back():
    from workbench.tools import PythonTool

    replies = [
        [chunk({"tool_calls": [{"index": 0, "id": "p", "type": "function",
                                "function": {"name": "python", "arguments": '{"code": "print(6*7)"}'}}]}),
         chunk({}, "tool_calls")],
        [chunk({"content": "42"}), chunk({}, "stop")],
    ]
    server = FakeServer(replies)
    with server as url:
        result = chat(OpenAIBackend("m", base_url=url), Conversation.new().user("6*7?"), tools=[PythonTool()])
    assert [(s.recipient, s.arguments, s.result) for s in result.trace] == [("python", "print(6*7)", "42\n")]
    assert server.requests[0]["body"]["tools"][0]["function"]["name"] == "python"
    assert server.requests[1]["body"]["messages"][-2]["tool_calls"][0]["function"] == {
        "name": "python", "arguments": '{"code": "print(6*7)"}'}


def test_length_cut_leaves_message_unterminated():
    with FakeServer([[chunk({"content": "partial"}), chunk({}, "length")]]) as url:
        t = OpenAIBackend("m", base_url=url).complete(Conversation.new().user("x"))
    assert [e.code for e in t.errors] == ["truncated"] and t.final == "partial"


def test_token_prompts_are_refused_clearly():
    with pytest.raises(TypeError, match="needs a Conversation"):
        list(OpenAIBackend("m", base_url="http://127.0.0.1:9/v1").generate([1, 2, 3]))
