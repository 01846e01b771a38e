"""HTTP plumbing for the workbench's servers: uvicorn (as vLLM uses) under a Starlette app.

Why a library: the earlier hand-written ``http.server`` kept one thread per connection, so 64 slow
clients starved everyone; uvicorn's event loop holds thousands of idle connections for little, and
Starlette gives routing, streaming responses and disconnect notices. What this module adds for
hostile clients:

- ``RequestDeadline`` (uvicorn's h11 protocol plus a timer): a connection must send a complete request
  head within ``header_timeout`` seconds of opening (or of its previous response), else it is closed;
  a client dripping one byte a second no longer holds a connection for ever (slowloris).
- ``Guard`` (ASGI middleware, before any route runs): the ``Host`` header must be an allowed host
  (against DNS rebinding), a browser ``Origin`` must be allowed (cross-site requests are refused),
  ``Authorization: Bearer KEY`` when the server has an API key (compared in constant time), a POST must
  be ``application/json`` (a cross-site form or ``text/plain`` POST cannot be made to look like one
  without a CORS preflight, which we never grant), and a ``Content-Length`` over the limit is refused
  before the body is read.
- ``read_json``: the body read with a size limit (also for chunked bodies) and a deadline, parsed as a
  JSON object, and checked against a character budget before anything tokenises it.
- ``HTTPServer``: binds the socket itself (port 0 gives a free port), caps open connections
  (uvicorn's ``limit_concurrency``: past it, 503), serves in the foreground or in a daemon thread.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import sys
import threading
from typing import Iterable

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..wire.common import APIError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
WILDCARDS = ("0.0.0.0", "::", "")


def error_response(err: APIError, headers: dict | None = None) -> JSONResponse:
    if err.status in (429, 503):
        headers = {"Retry-After": "1", **(headers or {})}
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def _host_name(value: str) -> str:
    """``example.org:8000`` -> ``example.org``; ``[::1]:80`` -> ``[::1]``."""
    if value.startswith("["):
        return value[:value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware: Host and Origin allow-lists, API key, JSON content type, body size (see module doc).

    ``allowed_hosts`` None accepts any Host (a server bound to a wildcard address without --allow-host);
    ``open_paths`` need no API key (health checks)."""

    def __init__(self, app, *, api_key: str | None = None, allowed_hosts: Iterable[str] | None = LOCAL_HOSTS,
                 allowed_origins: Iterable[str] = (), max_body: int = 8 << 20, open_paths=("/health",)):
        self.app, self.api_key, self.max_body = app, api_key, max_body
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins}
        self.open_paths = set(open_paths)

    def check(self, scope) -> APIError | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _host_name(host.lower()) not in self.allowed_hosts:
            return APIError(403, f"host {host!r:.100} is not allowed (start the server with --allow-host to add it)",
                            code="host_not_allowed")
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/").lower() not in self.allowed_origins:
            return APIError(403, f"cross-origin requests from {origin!r:.100} are not allowed "
                                 "(start the server with --allow-origin to add it)", code="origin_not_allowed")
        if self.api_key is not None and scope["path"].rstrip("/") not in self.open_paths:
            auth = headers.get("authorization", "")
            scheme, _, key = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
                return APIError(401, "a valid API key is required (Authorization: Bearer KEY)",
                                code="invalid_api_key")
        if scope["method"] == "POST":
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return APIError(415, f"the body must be JSON with Content-Type: application/json, not {ctype!r:.60}",
                                code="unsupported_media_type")
            length = headers.get("content-length")
            if length is not None:
                if not length.isdigit():
                    return APIError(400, "the Content-Length header is not a number")
                if int(length) > self.max_body:
                    return APIError(413, f"request body of {length} bytes is over the limit of {self.max_body}",
                                    code="body_too_large")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            err = self.check(scope)
            if err is not None:
                headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else {}
                if err.status in (413, 415):
                    headers["Connection"] = "close"  # the body is not read: the connection cannot be reused
                await error_response(err, headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def text_size(value) -> int:
    """Characters in every string of a parsed JSON value (keys included), without recursion."""
    total, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v)
        elif isinstance(v, dict):
            total += sum(len(k) for k in v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return total


async def read_json(request: Request, *, max_body: int, timeout: float, max_chars: int) -> dict:
    """The request body as a JSON object: at most ``max_body`` bytes, all of it within ``timeout`` seconds,
    at most ``max_chars`` characters of text in it (raises ``APIError``)."""
    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise APIError(413, f"request body is over the limit of {max_body} bytes", code="body_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        raw = await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise APIError(408, f"the request body did not arrive within {timeout:g} s", code="timeout") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise APIError(400, "request body is not UTF-8") from None
    except RecursionError:
        raise APIError(400, "request body is nested too deeply") from None
    except ValueError as e:
        raise APIError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise APIError(400, f"request body must be a JSON object, not {type(data).__name__}")
    n = text_size(data)
    if n > max_chars:
        raise APIError(400, f"the request holds {n} characters of text; this server accepts at most {max_chars} "
                            "(--max-prompt-chars)", code="prompt_too_long")
    return data


async def wait_disconnect(receive) -> None:
    """Return when the client hangs up (the body must have been read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _deadline_protocol():
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class RequestDeadline(H11Protocol):
        """uvicorn's h11 protocol, plus: a request head must be complete within ``header_timeout`` s."""

        header_timeout = 10.0
        _deadline = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(self.header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()  # no complete request head in time

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return RequestDeadline


class HTTPServer:
    """uvicorn serving ``app`` on ``host:port`` (0: a free port). ``serve_forever()`` in the foreground,
    or ``start()`` / ``close()`` in a daemon thread (notebooks, tests); also a context manager."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 8000, *, max_connections: int = 256,
                 header_timeout: float = 10.0, keep_alive: float = 5.0, verbose: bool = False):
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.socket.listen(2048)
        self.socket.setblocking(False)
        protocol = type("Protocol", (_deadline_protocol(),), {"header_timeout": header_timeout})
        config = uvicorn.Config(app, http=protocol, lifespan="off", ws="none", log_level="info" if verbose else "error",
                                access_log=verbose, limit_concurrency=max_connections, timeout_keep_alive=keep_alive,
                                h11_max_incomplete_event_size=64 * 1024, timeout_graceful_shutdown=2,
                                server_header=False)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def server_address(self) -> tuple:
        return self.socket.getsockname()[:2]

    @property
    def url(self) -> str:
        host, port = self.server_address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/v1"

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.socket])

    def start(self) -> "HTTPServer":
        self._thread = threading.Thread(target=self.serve_forever, name="workbench-http", daemon=True)
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the HTTP server stopped while starting")
            self._thread.join(0.01)
        return self

    def close(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        try:
            self.socket.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def warn_if_exposed(host: str, api_key: str | None) -> None:
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"workbench serve: WARNING: listening on {host}, reachable from other machines"
              + ("" if api_key else " with no API key (--api-key or WORKBENCH_API_KEY)")
              + "; model output and the python tool then serve anyone who can connect.", file=sys.stderr)
