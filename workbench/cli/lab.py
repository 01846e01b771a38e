"""``workbench lab``: copy the teaching notebooks into a folder of yours and start JupyterLab there."""

from __future__ import annotations

import os
from pathlib import Path

NAME = "lab"
HELP = "copy the notebooks into a user folder (never overwriting your edits) and start JupyterLab there"
ORDER = 90


def register(p) -> None:
    p.add_argument("--dir", default=str(Path.home() / "gpt-oss-workbench-notebooks"),
                   help="folder for your copy of the notebooks (default ~/gpt-oss-workbench-notebooks)")
    p.add_argument("--port", type=int, default=None, help="JupyterLab port")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--copy-only", action="store_true", help="copy the notebooks and exit")
    p.add_argument("jupyter_args", nargs="*", help="extra arguments passed to JupyterLab (after --)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..lab import copy_notebooks, lab_command
    from ._text import terminal_text

    folder = Path(args.dir).expanduser()
    report = copy_notebooks(folder)
    for what, names in report.items():
        if names and what != "same":
            print(terminal_text(f"{what}: {', '.join(names)}"))
    if report["kept"]:
        print("(kept files you edited; delete one to get the shipped version back)")
    print(terminal_text(f"notebooks in {folder}"))
    if args.copy_only:
        return 0
    cmd = lab_command(folder, args.port, args.no_browser, args.jupyter_args)
    os.execv(cmd[0], cmd)  # replace this process: Ctrl-C goes straight to JupyterLab
    return 0  # pragma: no cover
