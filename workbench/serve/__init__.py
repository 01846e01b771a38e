"""``workbench serve PATH``: gpt-oss behind OpenAI's APIs, for OpenAI's own clients, unmodified.

    workbench serve ~/models/tiny --port 8000
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], reasoning_effort="low")
    client.responses.create(model="tiny", input="Hi", tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])

Endpoints: ``POST /v1/chat/completions`` (tools and tool_choice, parallel calls, reasoning, logprobs,
stop, n, seed, streaming), ``POST /v1/responses`` (reasoning items, function calls,
``previous_response_id``, the built-in python and browser tools run by the server, the streamed event
sequence), ``POST /v1/completions`` (a raw Harmony prompt), ``GET /v1/models``, ``GET /health``.
The wire formats live in ``workbench.wire``; this package is HTTP (``http``), admission and
generation threads (``engine``), the per-endpoint generation (``generation``), the built-in tools kept
per conversation (``sessions``: one python session per ``previous_response_id`` chain) and the routes
(``app``).

Hostile clients are assumed: request heads must arrive within ``header_timeout`` s and bodies within
``body_timeout`` s; bodies over ``max_body`` bytes and requests with more than ``max_prompt_chars``
characters of text are refused before anything is tokenised; at most ``parallel`` generations run and
``max_queue`` wait (then 503); a request generates at most ``max_tokens_cap`` tokens; a client that
hangs up stops its generation within one token; ``api_key`` (Bearer) when set; only allowed
``Host`` headers and no cross-site ``Origin``; ``application/json`` only. It binds 127.0.0.1 unless
told otherwise, and warns when it listens elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from .app import Service
from .engine import Engine, Job
from .generation import Limits, ResponseStore
from .http import LOCAL_HOSTS, WILDCARDS, HTTPServer
from .sessions import Sessions

__all__ = ["Server", "Service", "Engine", "Job", "Limits", "ResponseStore", "Sessions", "HTTPServer", "make_server",
           "serve"]


class Server(HTTPServer):
    """An ``HTTPServer`` running a ``Service`` (``server.service``); closing it (or the end of
    ``serve_forever``) also ends the service's python sessions."""

    service: Service

    def serve_forever(self) -> None:
        try:
            super().serve_forever()
        finally:
            self.service.close()

    def close(self) -> None:
        super().close()
        self.service.close()


def make_server(backend, model_name: str, *, host: str = "127.0.0.1", port: int = 8000, max_model_len: int = 4096,
                parallel: int = 1, max_queue: int = 16, default_max_tokens: int = 2048,
                max_tokens_cap: int | None = None, max_connections: int = 256, api_key: str | None = None,
                allow_hosts=(), allow_origins=(), constrained: bool = False, python: bool = True,
                browser: str | os.PathLike | None = None, max_sessions: int = 32, session_idle: float = 1200.0,
                store_size: int = 256, store_chars: int = 64_000_000, max_body: int = 8 << 20,
                max_prompt_chars: int = 200_000, header_timeout: float = 10.0, body_timeout: float = 30.0,
                verbose: bool = False) -> Server:
    """A server (not yet serving: ``serve_forever()`` or ``start()``) over a token-level ``Backend``.

    ``python``: offer the sandboxed python tool to Responses requests (``code_interpreter``);
    ``browser``: a folder the browser tool searches (``web_search`` / ``browser_search`` tools).
    Each conversation (a ``previous_response_id`` chain) keeps one python session: at most
    ``max_sessions`` at once (the least recently used idle one is closed first), each closed after
    ``session_idle`` seconds unused (see ``workbench.serve.sessions``). ``store_size`` responses (and at
    most ``store_chars`` characters of their conversations) are kept for ``previous_response_id``."""
    builtins = {}
    if python:
        from ..tools import PythonTool

        builtins["python"] = PythonTool
    if browser is not None:
        from ..tools import BrowserTool, LocalSearch

        index = LocalSearch(browser)
        builtins["browser"] = lambda: BrowserTool(index)
    limits = Limits(max_model_len=max_model_len, max_tokens_cap=max_tokens_cap, default_max_tokens=default_max_tokens)
    service = Service(backend, model_name, limits=limits, parallel=parallel, max_queue=max_queue,
                      constrained=constrained, max_body=max_body, max_prompt_chars=max_prompt_chars,
                      body_timeout=body_timeout, builtins=builtins, store_size=store_size, store_chars=store_chars,
                      max_sessions=max_sessions, session_idle=session_idle)
    if host in WILDCARDS:
        hosts = list(allow_hosts) or "*"
    else:
        hosts = [*LOCAL_HOSTS, host, *allow_hosts]
    app = service.app(api_key=api_key, allowed_hosts=hosts, allowed_origins=allow_origins)
    server = Server(app, host, port, max_connections=max_connections, header_timeout=header_timeout,
                    verbose=verbose)
    server.service = service
    return server


def serve(path, *, name: str | None = None, device: str = "cpu", max_model_len: int | None = None,
          constrained: bool = False, **options) -> Server:
    """Load the checkpoint at ``path`` and return a server for it (``serve_forever()`` or ``start()``).

    ``constrained`` keeps decoding inside the Harmony grammar (for the random built-in models)."""
    from ..backends import LocalBackend
    from ..model import load_model

    model = load_model(path, device=device)
    cfg = model.config
    context = int(cfg.initial_context_length * cfg.rope_scaling_factor)
    return make_server(LocalBackend(model, constrained=constrained), name or Path(path).name,
                       max_model_len=min(max_model_len or context, context), constrained=constrained, **options)
