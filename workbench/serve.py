"""``workbench serve PATH``: an OpenAI-compatible HTTP server over the workbench's own model.

    workbench serve ~/models/tiny --port 8000
    openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none").chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], reasoning_effort="low")

Endpoints: ``POST /v1/chat/completions`` (with ``stream``), ``GET /v1/models``, ``GET /health``. Like
vLLM, the reasoning (the Harmony ``analysis`` channel) comes back as ``reasoning_content`` and the
answer (``final``, and commentary preambles, which Harmony means for the user) as ``content``; ``usage`` counts prompt, completion and reasoning tokens. ``system``
and ``developer`` messages become the Harmony developer instructions; ``reasoning_effort`` goes into
the Harmony system message.

Every request is validated before it reaches the model: bad JSON, unknown fields' bad values, an
unknown model, a prompt that does not fit the context, out-of-range parameters get a 4xx with a message
(OpenAI's error shape, naming the ``param``). At most ``parallel`` generations run at once and at most
``max_queue`` more wait; past that a request gets 503 at once. A request that breaks the handler gets a
500; the server itself keeps serving. Standard library only (``http.server``, one thread per connection).
"""

from __future__ import annotations

import json
import math
import socket
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

EFFORTS = ("low", "medium", "high")
MAX_BODY = 8 << 20  # bytes


class RequestError(Exception):
    """A request we refuse: HTTP status, message, offending parameter."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error",
                429: "rate_limit_error", 503: "server_overloaded"}.get(self.status, "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


# -- HTTP plumbing shared with evals.fake -------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    """JSON in, JSON or server-sent events out; every error becomes a JSON answer, never a crash."""

    protocol_version = "HTTP/1.1"  # keep-alive; streams use chunked transfer encoding
    timeout = 30  # seconds a client may take to send its request (no slowloris)
    server_version = "workbench-serve"
    routes: dict[tuple[str, str], Callable] = {}

    def log_message(self, fmt, *args):  # quiet unless the server asks for access logs
        if getattr(self.server, "verbose", False):
            super().log_message(fmt, *args)

    streaming = False

    def _dispatch(self, method: str) -> None:
        self.streaming = False
        path = self.path.split("?", 1)[0].rstrip("/")
        route = self.routes.get((method, path))
        try:
            if route is None:
                self.close_connection = True  # a body we do not read must not be taken for the next request
                allowed = [m for (m, p) in self.routes if p == path]
                if allowed:
                    raise RequestError(405, f"method {method} not allowed on {path}; use {', '.join(allowed)}")
                raise RequestError(404, f"no such endpoint: {method} {path}")
            route(self)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - the server must outlive any request
            if self.streaming:  # headers are out: all we can do is end the connection
                self.close_connection = True
                return
            if isinstance(e, RequestError):
                self.send_json(e.status, e.body(), {"Retry-After": "1"} if e.status in (429, 503) else None)
                return
            print(f"workbench serve: error handling {method} {path}: {type(e).__name__}: {e}", file=sys.stderr)
            try:
                self.send_json(500, RequestError(500, f"internal error: {type(e).__name__}").body())
            except OSError:
                self.close_connection = True

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def read_json(self, max_body: int = MAX_BODY) -> dict:
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            raise RequestError(411, "send the body with a Content-Length (chunked requests are not accepted)")
        length = self.headers.get("Content-Length")
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except (TypeError, ValueError):
            self.close_connection = True
            raise RequestError(411 if length is None else 400, "a valid Content-Length header is required") from None
        if n > max_body:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            raise RequestError(413, f"request body of {n} bytes is over the limit of {max_body}")
        raw = self.rfile.read(n)
        if len(raw) < n:
            self.close_connection = True
            raise RequestError(400, "request body shorter than its Content-Length")
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(400, "request body is not UTF-8") from None
        except RecursionError:
            raise RequestError(400, "request body is nested too deeply") from None
        except ValueError as e:
            raise RequestError(400, f"request body is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise RequestError(400, f"request body must be a JSON object, not {type(data).__name__}")
        return data

    def send_json(self, status: int, body: Any, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def start_events(self) -> None:
        self.streaming = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_event(self, data: Any) -> None:
        payload = b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        self.wfile.flush()

    def end_events(self) -> None:
        self.send_event(b"[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on open connections (extra ones get a 503 and are closed)."""

    daemon_threads = True
    allow_reuse_address = True
    max_connections = 64
    verbose = False

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self._connections = threading.BoundedSemaphore(self.max_connections)

    def process_request(self, request, client_address):
        if not self._connections.acquire(blocking=False):
            body = b'{"error": {"message": "too many open connections", "type": "server_overloaded"}}'
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # a client hung up or stalled: routine, not worth a traceback
        print(f"workbench serve: {client_address[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "Server":
        """Serve in a daemon thread (for notebooks and tests); ``close()`` stops it."""
        self._thread = threading.Thread(target=self.serve_forever, args=(0.1,), name="workbench-serve",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- request validation ------------------------------------------------------------------------------

def _number(body: dict, name: str, default, low, high, *, integer=False, low_open=False):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise RequestError(400, f"'{name}' must be {'an integer' if integer else 'a number'}, not {value!r:.40}", name)
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(400, f"'{name}' must be finite", name)
    if value < low or value > high or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise RequestError(400, f"'{name}' = {value} is out of range {interval}", name)
    return value


def _text(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(400, f"{where}: only text content parts are supported", "messages")
            parts.append(part["text"])
        return "".join(parts)
    raise RequestError(400, f"{where}: 'content' must be a string or a list of text parts", "messages")


def parse_chat_request(body: dict, model_name: str, max_tokens_cap: int) -> dict:
    """Validate a chat-completions body; returns the options the engine needs (raises RequestError)."""
    model = body.get("model")
    if not isinstance(model, str):
        raise RequestError(400, "'model' is required and must be a string", "model")
    if model != model_name:
        raise RequestError(404, f"the model {model!r} does not exist; this server serves {model_name!r}", "model",
                           "model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list", "messages")
    if len(messages) > 10_000:
        raise RequestError(400, "too many messages", "messages")
    chat = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(400, f"{where} must be an object", "messages")
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise RequestError(400, f"{where}: role {role!r:.40} is not supported "
                                    "(system, developer, user, assistant)", "messages")
        content = m.get("content")
        if content is None and role == "assistant":
            content = ""
        chat.append((role, _text(content, where)))
    for name in ("tools", "functions", "stop", "logprobs", "response_format"):
        if body.get(name) not in (None, [], False):
            raise RequestError(400, f"'{name}' is not supported by this server", name)
    n = _number(body, "n", 1, 1, 1, integer=True)
    effort = body.get("reasoning_effort", "medium")
    if effort is None:
        effort = "medium"
    if effort not in EFFORTS:
        raise RequestError(400, f"'reasoning_effort' must be one of {', '.join(EFFORTS)}, not {effort!r:.40}",
                           "reasoning_effort")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(400, "'stream' must be true or false", "stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise RequestError(400, "'stream_options' must be an object", "stream_options")
    max_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    return {
        "chat": chat, "effort": effort, "stream": stream, "n": n,
        "include_usage": bool(stream_options.get("include_usage", False)),
        "max_tokens": _number(body, max_key, None, 1, max_tokens_cap, integer=True), "max_key": max_key,
        "temperature": float(_number(body, "temperature", 1.0, 0.0, 2.0)),
        "top_p": float(_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)),
        "seed": _number(body, "seed", None, -(2 ** 63), 2 ** 64 - 1, integer=True),
    }


def conversation_for(chat: list[tuple[str, str]], effort: str):
    """Chat messages -> Harmony conversation (system/developer text -> developer instructions)."""
    from .harmony import Conversation

    instructions = "\n\n".join(text for role, text in chat if role in ("system", "developer"))
    conv = Conversation.new(instructions or None, reasoning_effort=effort)
    for role, text in chat:
        if role == "user":
            conv.user(text)
        elif role == "assistant":
            conv.assistant(text, channel="final")
    return conv


# -- the chat-completions service -------------------------------------------------------------------

class ChatService:
    """Validates, queues and runs chat completions on a token-level ``Backend``."""

    def __init__(self, backend, model_name: str, *, max_model_len: int = 4096, parallel: int = 1,
                 max_queue: int = 16, default_max_tokens: int = 2048):
        self.backend, self.model_name, self.max_model_len = backend, model_name, max_model_len
        self.default_max_tokens = default_max_tokens
        self._slots = threading.Semaphore(parallel)  # generations running at once
        self._admitted = threading.BoundedSemaphore(parallel + max_queue)  # running + waiting
        self.created = int(time.time())

    def models(self, handler: Handler) -> None:
        handler.send_json(200, {"object": "list", "data": [{
            "id": self.model_name, "object": "model", "created": self.created, "owned_by": "workbench",
            "max_model_len": self.max_model_len}]})

    def health(self, handler: Handler) -> None:
        handler.send_json(200, {"status": "ok"})

    def chat(self, handler: Handler) -> None:
        from .backends import prompt_tokens

        req = parse_chat_request(handler.read_json(), self.model_name, self.max_model_len)
        conv = conversation_for(req["chat"], req["effort"])
        prompt = prompt_tokens(conv)
        room = self.max_model_len - len(prompt)
        max_tokens = req["max_tokens"] if req["max_tokens"] is not None else min(self.default_max_tokens, room)
        if room < 1 or max_tokens > room:
            raise RequestError(400, f"This model's maximum context length is {self.max_model_len} tokens. However, "
                                    f"you requested {len(prompt) + max_tokens} tokens ({len(prompt)} in the messages, "
                                    f"{max_tokens} in the completion).", "messages", "context_length_exceeded")
        if not self._admitted.acquire(blocking=False):
            raise RequestError(503, "the server is busy (request queue full); retry later", code="queue_full")
        try:
            with self._slots:
                tokens = self.backend.generate(prompt, max_new_tokens=max_tokens, temperature=req["temperature"],
                                               top_p=req["top_p"], seed=req["seed"],
                                               reasoning_effort=req["effort"])
                rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
                if req["stream"]:
                    self._stream(handler, conv, tokens, len(prompt), max_tokens, rid, created, req["include_usage"])
                else:
                    self._complete(handler, conv, tokens, len(prompt), max_tokens, rid, created)
        finally:
            self._admitted.release()

    def _decode(self, conv, tokens: Iterator[int], max_tokens: int):
        """Yield ("reasoning" | "content", text) deltas; returns (finish_reason, completion, reasoning) counts."""
        from .harmony import StreamDecoder
        from .harmony import tokens as T

        decoder = StreamDecoder("assistant", channels=conv.channels)
        n, last = 0, None
        try:
            for token in tokens:
                n, last = n + 1, token
                event = decoder.push(token)
                if event.kind == "content" and event.text:
                    yield ("reasoning" if event.channel == "analysis" else "content"), event.text
        finally:
            close = getattr(tokens, "close", None)
            if close:
                close()  # stop generating when the client went away
        finish = "stop" if last in (T.RETURN, T.CALL) or n < max_tokens else "length"
        # header tokens learn their channel only at <|message|>: count on the finished transcript
        reasoning = sum(e.channel == "analysis" for e in decoder.finish().events)
        return finish, n, reasoning

    def _usage(self, prompt_n: int, n: int, reasoning: int) -> dict:
        return {"prompt_tokens": prompt_n, "completion_tokens": n, "total_tokens": prompt_n + n,
                "completion_tokens_details": {"reasoning_tokens": reasoning}}

    def _complete(self, handler, conv, tokens, prompt_n, max_tokens, rid, created) -> None:
        parts = {"reasoning": [], "content": []}
        gen = self._decode(conv, tokens, max_tokens)
        while True:
            try:
                kind, text = next(gen)
            except StopIteration as stop:
                finish, n, reasoning = stop.value
                break
            parts[kind].append(text)
        message = {"role": "assistant", "content": "".join(parts["content"]),
                   "reasoning_content": "".join(parts["reasoning"]) or None}
        handler.send_json(200, {"id": rid, "object": "chat.completion", "created": created, "model": self.model_name,
                                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                                "usage": self._usage(prompt_n, n, reasoning)})

    def _stream(self, handler, conv, tokens, prompt_n, max_tokens, rid, created, include_usage) -> None:
        def chunk(delta, finish=None, usage=None):
            body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": self.model_name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if include_usage:
                body["usage"] = usage
            return body

        gen = self._decode(conv, tokens, max_tokens)
        handler.start_events()
        handler.send_event(chunk({"role": "assistant", "content": ""}))
        while True:
            try:
                kind, text = next(gen)
            except StopIteration as stop:
                finish, n, reasoning = stop.value
                break
            handler.send_event(chunk({"reasoning_content": text} if kind == "reasoning" else {"content": text}))
        handler.send_event(chunk({}, finish))
        if include_usage:
            body = chunk({}, None, self._usage(prompt_n, n, reasoning))
            body["choices"] = []
            handler.send_event(body)
        handler.end_events()

    def handler_class(self) -> type[Handler]:
        routes = {("POST", "/v1/chat/completions"): self.chat, ("GET", "/v1/models"): self.models,
                  ("GET", "/health"): self.health, ("GET", "/v1/health"): self.health}
        return type("ChatHandler", (Handler,), {"routes": routes})


def make_server(backend, model_name: str, *, host: str = "127.0.0.1", port: int = 8000, max_model_len: int = 4096,
                parallel: int = 1, max_queue: int = 16, default_max_tokens: int = 2048,
                max_connections: int = 64, verbose: bool = False) -> Server:
    """A server (not yet serving: call ``serve_forever()`` or ``start()``) over a token-level backend."""
    service = ChatService(backend, model_name, max_model_len=max_model_len, parallel=parallel, max_queue=max_queue,
                          default_max_tokens=default_max_tokens)
    cls = type("WorkbenchServer", (Server,), {"max_connections": max_connections, "verbose": verbose})
    server = cls((host, port), service.handler_class())
    server.service = service
    return server


def serve(path, *, host: str = "127.0.0.1", port: int = 8000, name: str | None = None, device: str = "cpu",
          max_model_len: int | None = None, constrained: bool = False, **options) -> Server:
    """Load the checkpoint at ``path`` and return a server for it (call ``serve_forever()`` or ``start()``).

    ``constrained`` keeps decoding inside the Harmony grammar (for the random built-in models)."""
    from pathlib import Path

    from .backends import LocalBackend
    from .model import load_model

    model = load_model(path, device=device)
    cfg = model.config
    context = int(cfg.initial_context_length * cfg.rope_scaling_factor)
    return make_server(LocalBackend(model, constrained=constrained), name or Path(path).name, host=host, port=port,
                       max_model_len=min(max_model_len or context, context), **options)
