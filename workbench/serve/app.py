"""The routes: ``/v1/chat/completions``, ``/v1/responses``, ``/v1/completions``, ``/v1/models``, ``/health``.

Every POST goes the same way: the ``Guard`` middleware (host, origin, API key, content type, size),
the body read with limits (``read_json``), the request checked and turned into Harmony by
``workbench.wire`` (cheap, no tokenising), admission (``Engine.admit``: 503 when full), then the
generation thread (``generation``), whose payloads go out as one JSON response or as server-sent
events. A client that hangs up cancels its generation.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..wire import chat as wchat
from ..wire import completions as wcomp
from ..wire.common import APIError
from ..wire.responses import parse_responses_request
from . import generation as gen
from .engine import Engine, Job
from .http import Guard, error_response, read_json, wait_disconnect
from .sessions import Sessions


class Service:
    """A backend behind the OpenAI APIs: limits, admission, stored responses, built-in tools."""

    def __init__(self, backend, model_name: str, *, limits: gen.Limits | None = None, parallel: int = 1,
                 max_queue: int = 16, constrained: bool = False, max_body: int = 8 << 20,
                 max_prompt_chars: int = 200_000, body_timeout: float = 30.0,
                 builtins: dict[str, Callable[[], Any]] | None = None, store_size: int = 256,
                 store_chars: int = 64_000_000, max_sessions: int = 32, session_idle: float = 1200.0):
        self.backend, self.model_name = backend, model_name
        self.limits = limits or gen.Limits()
        self.engine = Engine(parallel=parallel, max_queue=max_queue)
        self.constrained = constrained
        self.max_body, self.max_prompt_chars, self.body_timeout = max_body, max_prompt_chars, body_timeout
        factories = dict(builtins or {})  # "python" / "browser" -> tool factory
        self.declared = {name: make() for name, make in factories.items()}  # what requests are told of them
        self.sessions = Sessions(factories, max_sessions=max_sessions, idle_timeout=session_idle)
        self.store = gen.ResponseStore(store_size, store_chars)
        self.created = int(time.time())

    def close(self) -> None:
        """End the built-in tools' sessions (the server is shutting down)."""
        self.sessions.close()

    # -- plumbing shared by the POST routes ----------------------------------------------------------

    async def _body(self, request: Request) -> dict:
        return await read_json(request, max_body=self.max_body, timeout=self.body_timeout,
                               max_chars=self.max_prompt_chars)

    async def _run(self, request: Request, work, stream: bool, sse_event_names: bool = False,
                   done_marker: bool = True) -> Response:
        """Admit, run ``work`` in a generation thread, answer with JSON or server-sent events."""
        ticket = self.engine.admit()
        job = Job()
        payloads = self.engine.stream(ticket, work, job)
        watcher = asyncio.ensure_future(wait_disconnect(request.receive))
        watcher.add_done_callback(lambda _: job.cancel())
        try:
            first = await payloads.__anext__()  # errors before any output become a proper HTTP status
        except StopAsyncIteration:
            watcher.cancel()
            raise APIError(500, "the generation produced no output")
        except BaseException:
            watcher.cancel()
            await payloads.aclose()
            raise
        if not stream:
            watcher.cancel()
            await payloads.aclose()
            return JSONResponse(first)

        async def events() -> AsyncIterator[bytes]:
            try:
                item = first
                while True:
                    head = f"event: {item['type']}\n".encode() if sse_event_names else b""
                    yield head + b"data: " + json.dumps(item, ensure_ascii=False).encode() + b"\n\n"
                    try:
                        item = await payloads.__anext__()
                    except StopAsyncIteration:
                        break
                if done_marker:
                    yield b"data: [DONE]\n\n"
            except APIError as e:  # headers are out: report in the stream, then end it
                head = b"event: error\n" if sse_event_names else b""
                body = {"type": "error", **e.body()["error"]} if sse_event_names else e.body()
                yield head + b"data: " + json.dumps(body).encode() + b"\n\n"
            finally:
                watcher.cancel()
                job.cancel()
                await payloads.aclose()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- routes --------------------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        req = wchat.parse_chat_request(await self._body(request), self.model_name)
        work = gen.chat_work(self.backend, req, self.limits, model=self.model_name, constrained=self.constrained)
        return await self._run(request, work, req.stream)

    async def responses(self, request: Request) -> Response:
        body = await self._body(request)
        req = parse_responses_request(body, self.model_name, previous=self.store.get, builtins=self.declared)
        work = gen.responses_work(self.backend, req, self.limits, constrained=self.constrained,
                                  sessions=self.sessions, store=self.store)
        return await self._run(request, work, req.stream, sse_event_names=True, done_marker=False)

    async def completions(self, request: Request) -> Response:
        req, prompt = wcomp.parse_completion_request(await self._body(request), self.model_name)
        work = gen.completion_work(self.backend, req, prompt, self.limits, model=self.model_name,
                                   constrained=self.constrained)
        return await self._run(request, work, req.stream)

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{
            "id": self.model_name, "object": "model", "created": self.created, "owned_by": "workbench",
            "max_model_len": self.limits.max_model_len}]})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "running": len(self.engine.jobs), "capacity": self.engine.capacity})

    def app(self, *, api_key: str | None = None, allowed_hosts=None, allowed_origins=()) -> Guard:
        def handle(endpoint):
            async def route(request: Request) -> Response:
                try:
                    return await endpoint(request)
                except APIError as e:
                    return error_response(e)
                except Exception as e:  # noqa: BLE001 - one request's bug is not the server's end
                    print(f"workbench serve: error in {request.url.path}: {type(e).__name__}: {e}", file=sys.stderr)
                    return error_response(APIError(500, f"internal error: {type(e).__name__}"))
            return route

        routes = [Route("/v1/chat/completions", handle(self.chat), methods=["POST"]),
                  Route("/v1/responses", handle(self.responses), methods=["POST"]),
                  Route("/v1/completions", handle(self.completions), methods=["POST"]),
                  Route("/v1/models", handle(self.models), methods=["GET"]),
                  Route("/health", handle(self.health), methods=["GET"]),
                  Route("/v1/health", handle(self.health), methods=["GET"])]

        async def not_found(request, exc):
            status = getattr(exc, "status_code", 404)
            message = {404: f"no such endpoint: {request.method} {request.url.path}",
                       405: f"method {request.method} not allowed on {request.url.path}"}.get(status, "bad request")
            return error_response(APIError(status, message))

        app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
        guard_kw = {} if allowed_hosts is None else {"allowed_hosts": allowed_hosts}
        if allowed_hosts == "*":
            guard_kw = {"allowed_hosts": None}
        return Guard(app, api_key=api_key, allowed_origins=allowed_origins, max_body=self.max_body, **guard_kw)
