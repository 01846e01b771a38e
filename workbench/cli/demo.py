"""``workbench demo``: the built-in nano model solving a task with the python tool, traced, with no set-up."""

from __future__ import annotations

import sys

NAME = "demo"
HELP = ("the built-in model reasons, calls python and answers, traced: prints a summary and writes a "
        "self-contained HTML report")
ORDER = 1


def register(p) -> None:
    from ..demo import DEMO_QUESTION

    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the built-in nano model)")
    p.add_argument("--out", default="workbench-demo.html", help="where to write the HTML report")
    p.add_argument("--question", default=DEMO_QUESTION, help="default: %(default)r (it needs the python tool)")
    p.add_argument("--reasoning-effort", default="high", choices=["low", "medium", "high"])
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): the most likely token each step")
    p.add_argument("--seed", type=int, default=0, help="sampling seed when --temperature > 0")
    p.add_argument("--max-turns", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=400)
    p.add_argument("--constrained", action="store_true", help="keep decoding inside the Harmony grammar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import run_demo

    print("generating (tools: python, functions.get_weather, functions.convert_currency)", end="", flush=True)
    dots = iter(range(10**9))
    result = run_demo(args.checkpoint, question=args.question, reasoning_effort=args.reasoning_effort,
                      temperature=args.temperature, seed=args.seed, max_turns=args.max_turns,
                      max_new_tokens=args.max_new_tokens, constrained=args.constrained,
                      on_event=lambda e: next(dots) % 8 == 0 and print(".", end="", flush=True, file=sys.stdout))
    print()
    print(result.summary())
    path = result.write_html(args.out).resolve()
    print(f"\nreport: {path}")
    return 0
