"""The teaching notebooks as a user's working copy, and JupyterLab started on it.

``copy_notebooks(dest)`` copies the shipped notebooks into ``dest`` without ever overwriting a user's
edits: it records the hash of each file it writes in ``dest/.workbench-notebooks.json``; on a later call
a file whose hash still matches the record is unedited and is updated to the shipped version, a file
that differs is left alone (and reported), a missing one is copied again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from importlib import resources
from pathlib import Path

from .cache import atomic_path

MANIFEST = ".workbench-notebooks.json"


def shipped_notebooks() -> list[Path]:
    folder = resources.files("workbench.notebooks")
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".ipynb"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_notebooks(dest: str | Path) -> dict[str, list[str]]:
    """Copy or update the notebooks in ``dest``; return {"copied": [...], "updated": [...], "kept": [...], "same": [...]}."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    manifest_path = dest / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError):
        manifest = {}
    if not isinstance(manifest, dict):  # a damaged or foreign manifest: trust none of it (files are kept)
        manifest = {}
    manifest = {k: v for k, v in manifest.items() if isinstance(k, str) and isinstance(v, str)}
    report: dict[str, list[str]] = {"copied": [], "updated": [], "kept": [], "same": []}
    for src in shipped_notebooks():
        target = dest / src.name
        new_hash = _sha(src)
        if target.exists():
            current = _sha(target)
            if current == new_hash:
                report["same"].append(src.name)
                manifest[src.name] = new_hash
                continue
            if manifest.get(src.name) != current:
                report["kept"].append(src.name)  # the user edited it: never overwrite
                continue
            report["updated"].append(src.name)
        else:
            report["copied"].append(src.name)
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
        manifest[src.name] = new_hash
    with atomic_path(manifest_path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return report


def lab_command(folder: Path, port: int | None = None, no_browser: bool = False, extra: list[str] | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}"]
    if port:
        cmd.append(f"--port={port}")
    if no_browser:
        cmd.append("--no-browser")
    return cmd + list(extra or [])
