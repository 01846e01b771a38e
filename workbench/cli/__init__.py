"""``workbench`` command line. Each subcommand lives in its own module in this package.

A module here defines ``NAME`` (the subcommand), ``HELP`` (one line) and ``register(parser)`` (adds its
arguments and sets ``func``); ``main`` discovers them, so adding a command touches no other file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="gpt-oss workbench")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            modules.append(importlib.import_module(f"{__name__}.{info.name}"))
    for module in sorted(modules, key=lambda m: getattr(m, "ORDER", 50)):
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.register(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        # Expected user errors get one clear line, not a traceback.
        from ._text import terminal_text

        print(terminal_text(f"workbench {args.command}: error: {e}"), file=sys.stderr)
        return 1
