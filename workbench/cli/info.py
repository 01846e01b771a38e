"""``workbench info PATH [--scan]``: config and tensor table of a checkpoint; ``--scan`` adds the MXFP4 scale summary."""

from __future__ import annotations

import argparse

NAME = "info"
HELP = "print a checkpoint's config and its tensors (name, dtype, shape, bytes); --scan adds MXFP4 scale statistics"
ORDER = 20


def register(p) -> None:
    p.add_argument("path", help="checkpoint folder (original or Hugging Face layout)")
    p.add_argument("--scan", action="store_true",
                   help="also read every expert block for MXFP4 scale statistics (minutes on a 20b checkpoint)")
    p.add_argument("--no-scales", action="store_true", help=argparse.SUPPRESS)  # the old default's opt-out; kept
    p.set_defaults(func=run)


def run(args) -> int:
    from ..checkpoint import open_checkpoint
    from ..summary import config_text, mxfp4_summary, tensor_table
    from ._text import terminal_text

    ckpt = open_checkpoint(args.path)
    print(terminal_text(config_text(ckpt)), end="\n\n")  # tensor and file names come from the checkpoint
    print(terminal_text(tensor_table(ckpt)), end="\n\n")
    if args.scan:
        print("MXFP4 block scales (exponent = scale byte - 127)")
        print(terminal_text(mxfp4_summary(ckpt)))
    return 0
