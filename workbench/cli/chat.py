"""``workbench chat [PATH]``: chat in the terminal, channels in colours, with optional tools.

PATH is a checkpoint folder (default: the built-in nano model); ``--base-url`` talks to an
OpenAI-compatible server instead. Analysis shows dim, commentary yellow, the final answer green,
tool calls cyan and tool results magenta. Model text is untrusted: control characters (terminal
escape sequences included) and bidi overrides are escaped before printing.
"""

from __future__ import annotations

import sys

NAME = "chat"
HELP = "chat with a model in the terminal (Harmony channels in colours; --python, --browser DIR tools)"
ORDER = 40

COLORS = {"analysis": "\033[2m", "commentary": "\033[33m", "final": "\033[32m", "call": "\033[36m",
          "tool": "\033[35m", "error": "\033[31m", "reset": "\033[0m"}
def safe(text: str) -> str:
    """Text fit for a terminal: control characters and bidi overrides escaped, newlines and tabs kept."""
    from ._text import terminal_text

    return terminal_text(text)


def register(p) -> None:
    p.add_argument("path", nargs="?", help="checkpoint folder (default: the built-in nano model)")
    p.add_argument("--base-url", help="an OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1) instead of PATH")
    p.add_argument("--model", default="openai/gpt-oss-20b", help="model name on the server (with --base-url)")
    p.add_argument("--api", choices=["chat", "responses"], default="chat",
                   help="with --base-url: chat completions or the Responses API (default: %(default)s)")
    p.add_argument("--api-key", default=None, help="with --base-url: the server's API key (default: $OPENAI_API_KEY)")
    p.add_argument("--reasoning-effort", choices=["low", "medium", "high"], default="medium")
    p.add_argument("--python", action="store_true", help="let the model run Python (a sandboxed session that keeps state; needs bubblewrap)")
    p.add_argument("--browser", metavar="DIR", help="let the model search and read the text/HTML/Markdown files in DIR")
    p.add_argument("--instructions", help="developer instructions")
    p.add_argument("-m", "--message", action="append", help="send this message (repeatable) instead of reading stdin")
    p.add_argument("--constrained", action="store_true", help="keep a local model inside the Harmony grammar")
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--max-turns", type=int, default=8, help="model generations per user message")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int)
    p.add_argument("--no-color", action="store_true", help="plain text, no ANSI colours")
    p.set_defaults(func=run)


class Printer:
    """``on_event`` for ``chat``: prints tokens as they stream and tool steps as they finish."""

    def __init__(self, out=None, color: bool = True):
        self.out, self.color, self.current = out or sys.stdout, color, None

    def _c(self, name: str) -> str:
        return COLORS[name] if self.color else ""

    def write(self, text: str, color: str | None = None) -> None:
        if color:
            text = self._c(color) + text + self._c("reset")
        self.out.write(text)
        self.out.flush()

    def __call__(self, event) -> None:
        from ..tools import ToolStep

        if isinstance(event, ToolStep):
            note = f" ERROR {event.error}" if event.error else ""
            self.write(f"[{event.recipient} answered in {event.duration:.2f} s{safe(note)}]\n", "tool")
            result = safe(event.result)
            self.write((result[:2000] + ("…" if len(result) > 2000 else "")).rstrip() + "\n", "tool")
            self.current = None
            return
        if event.kind != "content":
            if event.kind == "special" and event.text in ("<|end|>", "<|call|>", "<|return|>") and self.current is not None:
                self.write("\n")
                self.current = None
            if event.error:
                self.write(f"\n[parse error: {safe(event.error)}]\n", "error")
            return
        color = "call" if event.recipient and event.recipient != "assistant" else event.channel or "final"
        color = color if color in COLORS else "commentary"
        if event.message != self.current:
            self.current = event.message
            label = (event.channel or "no channel") + (f" → {event.recipient}" if event.recipient else "")
            self.write(f"[{safe(label)}] ", color)
        self.write(safe(event.text), color)


def run(args) -> int:
    from ..backends import LocalBackend, OpenAIBackend
    from ..toolloop import chat
    from ..harmony import Conversation
    from ..tools import BrowserTool, LocalSearch, PythonTool

    tools = []
    if args.python:
        tools.append(PythonTool())
    if args.browser:
        tools.append(BrowserTool(LocalSearch(args.browser)))
    if args.base_url:
        import os

        backend = OpenAIBackend(args.model, base_url=args.base_url, api=args.api,
                                api_key=args.api_key or os.environ.get("OPENAI_API_KEY"))
    else:
        path = args.path
        if path is None:
            from ..tiny import default_checkpoint

            path = default_checkpoint()
        backend = LocalBackend(path, constrained=args.constrained)
    conv = Conversation.new(args.instructions, reasoning_effort=args.reasoning_effort)
    printer = Printer(color=not args.no_color and sys.stdout.isatty() if not args.no_color else False)
    messages = iter(args.message) if args.message else None
    while True:
        if messages is not None:
            text = next(messages, None)
        else:
            try:
                text = input("you> ")
            except EOFError:
                text = None
        if text is None or text.strip() in ("/exit", "/quit"):
            return 0
        if not text.strip():
            continue
        conv.user(text)
        try:
            result = chat(backend, conv, tools, max_turns=args.max_turns, on_event=printer,
                          max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
        except Exception as e:  # the server's refusal or a lost connection: one line, not a traceback
            if not _is_api_error(e):
                raise
            print(f"workbench chat: error: {safe(api_error_line(e))}", file=sys.stderr)
            return 1
        if printer.current is not None:
            printer.write("\n")
            printer.current = None
        if result.stop_reason not in ("return", "final"):
            printer.write(f"[stopped: {result.stop_reason}]\n", "error")
            last = result.transcripts[-1] if result.transcripts else None
            if last is not None and not last.messages and last.events:  # nothing parsed: show what was written
                raw = "".join(e.text for e in last.events)
                printer.write(f"[no message formed; the model wrote {len(last.events)} tokens: {safe(raw[:1000])!r}]\n",
                              "error")
        conv = result.conversation


def _is_api_error(e: Exception) -> bool:
    import openai

    return isinstance(e, openai.APIError)


def api_error_line(e: Exception) -> str:
    """An openai client error as one line: the status, the server's message, the field at fault."""
    import openai

    if isinstance(e, openai.APIStatusError):
        body = e.body if isinstance(e.body, dict) else {}
        err = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
        message = err.get("message") or e.message
        param = f" (param: {err['param']})" if err.get("param") else ""
        return f"the server answered {e.status_code}: {message}{param}".replace("\n", " ")
    if isinstance(e, openai.APIConnectionError):
        return f"cannot reach the server: {e.__cause__ or e}".replace("\n", " ")
    return f"{type(e).__name__}: {e}".replace("\n", " ")
