"""A stand-in OpenAI-compatible server: answers every chat completion after a fixed delay.

For the runner's benchmark (a "server with capacity": requests sleep concurrently) and for tests of
retries and resumption over real HTTP. ``answer(messages) -> (reasoning, content)`` decides what it
says (default: a little reasoning and "42"); ``failures`` is a list consumed one per request, each an
HTTP status to answer with instead or ``"drop"`` to close the connection without an answer.

>>> with FakeServer(delay=0.01).start() as fake:          # doctest: +SKIP
...     run_sweep(["arithmetic"], [server("fake", fake.url)], out="runs/x")
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Callable

from workbench.serve import Handler, RequestError, Server


def _default_answer(messages) -> tuple[str, str]:
    return "Let me think. The answer is clear.", "The answer is \\boxed{42}."


class FakeServer:
    def __init__(self, *, delay: float = 0.0, answer: Callable | None = None, failures=(), model: str = "fake",
                 host: str = "127.0.0.1", port: int = 0, chunks: int = 4):
        self.delay, self.answer, self.model, self.chunks = delay, answer or _default_answer, model, chunks
        self.failures = list(failures)
        self.requests = 0
        self.bodies: list[dict] = []  # every request body, in arrival order
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        routes = {("POST", "/v1/chat/completions"): self._chat, ("GET", "/v1/models"): self._models}
        handler = type("FakeHandler", (Handler,), {"routes": routes})
        self.server = type("FakeHTTPServer", (Server,), {"max_connections": 256})((host, port), handler)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> "FakeServer":
        self.server.start()
        return self

    def close(self) -> None:
        self.server.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _models(self, h: Handler) -> None:
        h.send_json(200, {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "fake"}]})

    def _chat(self, h: Handler) -> None:
        body = h.read_json()
        with self._lock:
            self.requests += 1
            self.bodies.append(body)
            failure = self.failures.pop(0) if self.failures else None
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if failure == "drop":
                h.close_connection = True
                h.connection.shutdown(2)
                return
            if failure is not None:
                raise RequestError(int(failure), f"injected failure {failure}")
            if body.get("model") != self.model:
                raise RequestError(404, f"the model {body.get('model')!r} does not exist", "model")
            time.sleep(self.delay)
            reasoning, content = self.answer(body.get("messages", []))
            rid, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
            if not body.get("stream"):
                h.send_json(200, {"id": rid, "object": "chat.completion", "created": created, "model": self.model,
                                  "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                      "role": "assistant", "content": content, "reasoning_content": reasoning}}],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
                return

            def chunk(delta, finish=None):
                return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": self.model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

            h.start_events()
            h.send_event(chunk({"role": "assistant", "content": ""}))
            for key, text in (("reasoning_content", reasoning), ("content", content)):
                step = max(1, -(-len(text) // self.chunks))
                for i in range(0, len(text), step):
                    h.send_event(chunk({key: text[i:i + step]}))
            h.send_event(chunk({}, "stop"))
            h.end_events()
        finally:
            with self._lock:
                self._in_flight -= 1
