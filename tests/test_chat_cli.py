"""``workbench chat``: the terminal printer (colours, escaping) and a one-shot run on the tiny model."""

from __future__ import annotations

import io

from workbench.backends import ScriptedBackend
from workbench.toolloop import chat
from workbench.cli import main
from workbench.cli.chat import COLORS, Printer, safe
from workbench.harmony import Conversation


def test_printer_colours_channels_and_escapes_control_characters():
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    backend = ScriptedBackend([
        '<|channel|>analysis<|message|>Use add.<|end|>'
        '<|start|>assistant<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a": 1, "b": 2}<|call|>',
        '<|channel|>final<|message|>It is 3 \x1b[2J\x07done.<|return|>',
    ])
    out = io.StringIO()
    chat(backend, Conversation.new().user("1+2"), tools=[add], on_event=Printer(out, color=True))
    text = out.getvalue()
    assert COLORS["analysis"] + "[analysis] " in text and COLORS["analysis"] + "Use" in text
    assert COLORS["call"] + "[commentary → functions.add] " in text
    assert COLORS["tool"] + "[functions.add answered in " in text and COLORS["tool"] + "3\n" in text
    assert COLORS["final"] + "[final] " in text
    bare = text
    for code in COLORS.values():
        bare = bare.replace(code, "")
    assert "\x1b" not in bare and "\x07" not in bare and "It is 3 \\x1b[2J\\x07done." in bare
    plain = io.StringIO()
    chat(ScriptedBackend(['<|channel|>final<|message|>Hi<|return|>']), Conversation.new().user("x"),
         on_event=Printer(plain, color=False))
    assert plain.getvalue() == "[final] Hi\n"
    assert safe("a\tb\nc\x1b]0;title\x07\u202e") == "a\tb\nc\\x1b]0;title\\x07\\u202e"  # escaped, visible


def test_cli_one_shot_on_tiny_model(tiny_dir, capsys):
    code = main(["chat", str(tiny_dir), "-m", "Hello", "--constrained", "--max-new-tokens", "12", "--seed", "0",
                 "--no-color", "--max-turns", "1", "--reasoning-effort", "low"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("[")  # a channel label first: the constrained model wrote a header
    assert "\x1b[" not in out


def test_cli_help_lists_options(capsys):
    try:
        main(["chat", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    for flag in ("--reasoning-effort", "--python", "--browser", "--base-url", "--constrained"):
        assert flag in out
