"""``workbench demo``: the main job on the built-in model, with no set-up."""

from __future__ import annotations

NAME = "demo"
HELP = "run the workbench on the built-in small model (made on first use in the user cache)"
ORDER = 1


def register(p) -> None:
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the built-in tiny model)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..checkpoint import open_checkpoint
    from ..summary import config_text, mxfp4_summary
    from ..tiny import default_checkpoint

    path = args.checkpoint or default_checkpoint()
    ckpt = open_checkpoint(path)
    print(config_text(ckpt), end="\n\n")
    print(mxfp4_summary(ckpt))
    return 0
