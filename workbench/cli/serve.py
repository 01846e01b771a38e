"""``workbench serve PATH --port P``: an OpenAI-compatible server over the local model (see workbench.serve)."""

from __future__ import annotations

NAME = "serve"
HELP = "serve a checkpoint over an OpenAI-compatible HTTP API (chat completions, streaming, reasoning_content)"
ORDER = 70


def register(p) -> None:
    p.add_argument("path", help="checkpoint folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0 picks a free one)")
    p.add_argument("--name", default=None, help="the model's name in requests (default: the folder's name)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-model-len", type=int, default=None, help="context limit (default: the model's)")
    p.add_argument("--default-max-tokens", type=int, default=2048, help="completion tokens when a request names none")
    p.add_argument("--parallel", type=int, default=1, help="generations at once (default: %(default)s)")
    p.add_argument("--max-queue", type=int, default=16, help="requests waiting; more get 503 (default: %(default)s)")
    p.add_argument("--constrained", action="store_true", help="keep decoding inside the Harmony grammar")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..serve import serve

    for flag in ("parallel", "max_queue", "default_max_tokens"):
        if getattr(args, flag) < (0 if flag == "max_queue" else 1):
            raise ValueError(f"--{flag.replace('_', '-')} is out of range: {getattr(args, flag)}")
    server = serve(args.path, host=args.host, port=args.port, name=args.name, device=args.device,
                   max_model_len=args.max_model_len, constrained=args.constrained, parallel=args.parallel,
                   max_queue=args.max_queue, default_max_tokens=args.default_max_tokens, verbose=args.verbose)
    print(f"serving {server.service.model_name!r} at {server.url} (max_model_len {server.service.max_model_len})",
          flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
