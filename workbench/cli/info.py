"""``workbench info PATH``: config, tensor table and MXFP4 scale summary of a checkpoint."""

from __future__ import annotations

NAME = "info"
HELP = "print a checkpoint's config, its tensors (name, dtype, shape, bytes) and MXFP4 scale statistics"
ORDER = 20


def register(p) -> None:
    p.add_argument("path", help="checkpoint folder (original or Hugging Face layout)")
    p.add_argument("--no-scales", action="store_true", help="skip the MXFP4 scale summary (reads no weights)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..checkpoint import open_checkpoint
    from ..summary import config_text, mxfp4_summary, tensor_table
    from ._text import terminal_text

    ckpt = open_checkpoint(args.path)
    print(terminal_text(config_text(ckpt)), end="\n\n")  # tensor and file names come from the checkpoint
    print(terminal_text(tensor_table(ckpt)), end="\n\n")
    if not args.no_scales:
        print("MXFP4 block scales (exponent = scale byte - 127)")
        print(terminal_text(mxfp4_summary(ckpt)))
    return 0
