"""``workbench info PATH``: config, tensor table and MXFP4 scale summary of a checkpoint."""

from __future__ import annotations

NAME = "info"
HELP = "print a checkpoint's config and its tensors (name, dtype, shape, bytes); --scan adds MXFP4 scale statistics"
ORDER = 20


def register(p) -> None:
    p.add_argument("path", help="checkpoint folder (original or Hugging Face layout)")
    p.add_argument("--scan", action="store_true",
                   help="also read every expert block for MXFP4 scale statistics (minutes on a 20b checkpoint)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..checkpoint import open_checkpoint
    from ..summary import config_text, mxfp4_summary, tensor_table

    ckpt = open_checkpoint(args.path)
    print(config_text(ckpt), end="\n\n")
    print(tensor_table(ckpt), end="\n\n")
    if args.scan:
        print("MXFP4 block scales (exponent = scale byte - 127)")
        print(mxfp4_summary(ckpt))
    return 0
