"""A stand-in OpenAI-compatible server: answers every request after a fixed delay, in either API.

For the runner's benchmark (a "server with capacity": requests sleep concurrently) and for tests of
retries and resumption over real HTTP. ``answer(messages) -> (reasoning, content)`` decides what it
says (default: a little reasoning and "42"); ``messages`` are the chat messages (for a Responses
request, its input items). ``failures`` is a list consumed one per request, each an HTTP status to
answer with instead or ``"drop"`` to break the connection without an answer.

The answer is written as a Harmony completion and served through the same wire format as
``workbench serve`` (``workbench.wire``): chat completions (streamed in ``chunks`` pieces or whole)
and the Responses API.

>>> with FakeServer(delay=0.01).start() as fake:          # doctest: +SKIP
...     run_sweep(["arithmetic"], [server("fake", fake.url)], out="runs/x")
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Callable

from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from workbench.harmony import encoding, parse_tokens
from workbench.serve.http import HTTPServer, error_response, read_json
from workbench.wire import chat as wchat
from workbench.wire import responses as wresp
from workbench.wire.common import APIError


def _default_answer(messages) -> tuple[str, str]:
    return "Let me think. The answer is clear.", "The answer is \\boxed{42}."


def _pieces(text: str, n: int) -> list[str]:
    step = max(1, -(-len(text) // n))
    return [text[i:i + step] for i in range(0, len(text), step)]


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
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"]),
                                Route("/v1/responses", self._responses, methods=["POST"]),
                                Route("/v1/models", self._models, methods=["GET"])])
        self.server = HTTPServer(app, host, port, max_connections=1024)

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

    async def _models(self, request):
        return JSONResponse({"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "fake"}]})

    async def _serve(self, request, respond):
        try:
            body = await read_json(request, max_body=64 << 20, timeout=30, max_chars=1 << 30)
        except APIError as e:
            return error_response(e)
        with self._lock:
            self.requests += 1
            self.bodies.append(body)
            failure = self.failures.pop(0) if self.failures else None
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if failure == "drop":  # promise a body, then break off: the client sees the connection fail
                return _Dropped()
            if failure is not None:
                return error_response(APIError(int(failure), f"injected failure {failure}"))
            if body.get("model") != self.model:
                return error_response(APIError(404, f"the model {body.get('model')!r} does not exist", "model"))
            await asyncio.sleep(self.delay)
            reasoning, content = self.answer(body.get("messages", body.get("input", [])))
            events = parse_tokens(encoding().encode(
                f"<|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant<|channel|>final<|message|>"
                f"{content}<|return|>", allowed_special="all")).events
            return respond(body, events)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _chat(self, request):
        return await self._serve(request, self._chat_answer)

    async def _responses(self, request):
        return await self._serve(request, self._responses_answer)

    def _chat_answer(self, body, events):
        rid, created = f"chatcmpl-{self.requests}", int(time.time())
        builder = wchat.ChoiceBuilder(0)
        deltas = [d for e in events for d in builder.push(e)] + builder.finish()
        if not body.get("stream"):
            return JSONResponse(wchat.completion(rid, created, self.model, [wchat.choice(builder, "return")],
                                                 wchat.usage(1, [events])))
        merged: dict[str, str] = {}  # re-cut the token deltas into `chunks` pieces per field, like a server would
        for d in deltas:
            for k, v in d.items():
                merged[k] = merged.get(k, "") + v
        out = [wchat.chunk(rid, created, self.model, 0, {"role": "assistant", "content": ""})]
        for key in ("reasoning", "content"):
            for piece in _pieces(merged.get(key, ""), self.chunks):
                out.append(wchat.chunk(rid, created, self.model, 0, {key: piece, **(
                    {"reasoning_content": piece} if key == "reasoning" else {})}))
        out.append(wchat.chunk(rid, created, self.model, 0, {}, builder.finish_reason("return")))
        return _sse([json.dumps(c) for c in out] + ["[DONE]"])

    def _responses_answer(self, body, events):
        req = wresp.ResponsesRequest(conversation=None, model=self.model, stream=bool(body.get("stream")))
        builder = wresp.ResponseBuilder(req)
        stream = builder.start() + [ev for e in events for ev in builder.push(e)]
        stream += builder.end_generation(events, 1) + builder.finish()
        if not req.stream:
            return JSONResponse(stream[-1]["response"])
        return _sse([json.dumps(e) for e in stream], [e["type"] for e in stream])


def _sse(data: list[str], names: list[str] | None = None) -> StreamingResponse:
    async def gen():
        for i, d in enumerate(data):
            yield (f"event: {names[i]}\n" if names else "") + f"data: {d}\n\n"
    return StreamingResponse(gen(), media_type="text/event-stream")


class _Dropped:
    """An ASGI response that announces a body and closes the connection without sending it."""

    async def __call__(self, scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")]})
        raise ConnectionAbortedError("dropped on purpose (FakeServer failure injection)")
