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
    extra = ""
    if args.layout == "hf":  # as a real gpt-oss checkpoint: converters and AutoTokenizer read these
        from ..config import PRESETS
        from ..harmony.hf_tokenizer import write_hf_tokenizer

        write_hf_tokenizer(path, PRESETS[args.preset].vocab_size)
        extra = " with tokenizer files"
    print(f"wrote {args.preset} checkpoint ({args.layout} layout, seed {args.seed}){extra} to {path}")
    return 0
