"""``workbench demo``: the main job on the built-in small model, with no set-up."""

from __future__ import annotations

import sys

NAME = "demo"
HELP = ("a traced Harmony generation with a tool loop on the built-in model: prints a summary and "
        "writes a self-contained HTML report")
ORDER = 1


def register(p) -> None:
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the built-in tiny model)")
    p.add_argument("--out", default="workbench-demo.html", help="where to write the HTML report")
    p.add_argument("--question", default="What is 2 + 3? Use a tool.")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--max-turns", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import run_demo

    print("generating (Harmony-constrained, tools: functions.add, python)", end="", flush=True)
    dots = iter(range(10**9))
    result = run_demo(args.checkpoint, question=args.question, seed=args.seed, max_turns=args.max_turns,
                      max_new_tokens=args.max_new_tokens,
                      on_event=lambda e: next(dots) % 8 == 0 and print(".", end="", flush=True, file=sys.stdout))
    print()
    print(result.summary())
    path = result.write_html(args.out).resolve()
    print(f"\nreport: {path}")
    return 0
