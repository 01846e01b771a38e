"""``workbench serve [PATH]``: gpt-oss behind OpenAI's APIs (chat completions, Responses, completions)."""

from __future__ import annotations

import os

NAME = "serve"
HELP = "serve a checkpoint over OpenAI's APIs (chat completions, Responses with built-in tools, completions)"
ORDER = 70


def register(p) -> None:
    p.add_argument("path", nargs="?", help="checkpoint folder (default: the built-in model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s; others get a warning)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0 picks a free one)")
    p.add_argument("--name", default=None, help="the model's name in requests (default: the folder's name)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' (default: $WORKBENCH_API_KEY; none if unset)")
    p.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                   help="also accept this Host header (the default is the local names and the bound address)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="accept browser requests from this origin (default: none; cross-site requests get 403)")
    p.add_argument("--max-model-len", type=int, default=None, help="context limit (default: the model's)")
    p.add_argument("--default-max-tokens", type=int, default=2048, help="completion tokens when a request names none")
    p.add_argument("--max-tokens-cap", type=int, default=None,
                   help="the most tokens one request may generate (requests asking more get this many)")
    p.add_argument("--max-prompt-chars", type=int, default=200_000,
                   help="characters of text a request may hold, checked before tokenising (default: %(default)s)")
    p.add_argument("--parallel", type=int, default=1, help="generations at once (default: %(default)s)")
    p.add_argument("--max-queue", type=int, default=16, help="requests waiting; more get 503 (default: %(default)s)")
    p.add_argument("--max-connections", type=int, default=256, help="open connections; more get 503")
    p.add_argument("--browser", metavar="DIR", help="offer the browser tool (web_search) over the files in DIR")
    p.add_argument("--no-python", dest="python", action="store_false",
                   help="do not offer the sandboxed python tool (code_interpreter) to Responses requests")
    p.add_argument("--python-sessions", type=int, default=32, metavar="N",
                   help="conversations that keep a python session at once; past it the least recently used idle "
                        "one is closed (default: %(default)s)")
    p.add_argument("--python-idle", type=float, default=1200.0, metavar="SECONDS",
                   help="close a conversation's python session after this long unused (default: %(default)s)")
    p.add_argument("--constrained", action="store_true", help="keep decoding inside the Harmony grammar")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..serve import serve
    from ..serve.http import warn_if_exposed

    for flag in ("parallel", "max_queue", "default_max_tokens", "max_prompt_chars", "max_connections",
                 "python_sessions"):
        if getattr(args, flag) < (0 if flag == "max_queue" else 1):
            raise ValueError(f"--{flag.replace('_', '-')} is out of range: {getattr(args, flag)}")
    if not args.python_idle > 0:
        raise ValueError(f"--python-idle must be more than 0 seconds, not {args.python_idle}")
    path = args.path
    if path is None:
        from ..tiny import default_checkpoint

        path = default_checkpoint()
    api_key = args.api_key or os.environ.get("WORKBENCH_API_KEY") or None
    server = serve(path, host=args.host, port=args.port, name=args.name, device=args.device,
                   max_model_len=args.max_model_len, constrained=args.constrained, parallel=args.parallel,
                   max_queue=args.max_queue, default_max_tokens=args.default_max_tokens,
                   max_tokens_cap=args.max_tokens_cap, max_prompt_chars=args.max_prompt_chars,
                   max_connections=args.max_connections, api_key=api_key, allow_hosts=args.allow_host,
                   allow_origins=args.allow_origin, python=args.python, browser=args.browser,
                   max_sessions=args.python_sessions, session_idle=args.python_idle, verbose=args.verbose)
    warn_if_exposed(args.host, api_key)
    service = server.service
    print(f"serving {service.model_name!r} at {server.url} (max_model_len {service.limits.max_model_len}"
          f"{', API key required' if api_key else ''})", flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()
    return 0
