"""``workbench make-tiny DIR``: write a random gpt-oss checkpoint of a preset's shape."""

from __future__ import annotations

NAME = "make-tiny"
HELP = "write a random checkpoint with the real gpt-oss structure (MXFP4 experts, BF16 elsewhere)"
ORDER = 10


def register(p) -> None:
    from ..config import PRESETS

    p.add_argument("dir", help="output folder")
    p.add_argument("--preset", default="tiny", choices=list(PRESETS), help="shape preset (default tiny)")
    p.add_argument("--layout", default="original", choices=["original", "hf"], help="checkpoint layout")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same weights in both layouts)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..tiny import make_tiny_checkpoint

    path = make_tiny_checkpoint(args.dir, preset=args.preset, layout=args.layout, seed=args.seed)
    print(f"wrote {args.preset} checkpoint ({args.layout} layout, seed {args.seed}) to {path}")
    return 0
