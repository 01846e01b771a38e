"""The per-user cache folder and atomic file writes.

Everything the workbench makes for itself (the Harmony vocabulary, the built-in model) lives in one
folder: ``$WORKBENCH_CACHE`` if set, else ``$XDG_CACHE_HOME/gpt-oss-workbench``, else
``~/.cache/gpt-oss-workbench``. Files are written to a temporary name in the same folder and renamed
into place, so a reader never sees half a file and concurrent writers cannot corrupt each other.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def cache_dir() -> Path:
    """The workbench's per-user cache folder (created on demand)."""
    root = os.environ.get("WORKBENCH_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "gpt-oss-workbench")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _umask() -> int:
    """This process's umask, read without changing it (Linux /proc), else by setting it back at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success fsync it and rename it to ``final``.

    On an exception the temporary file (or folder) is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp made it 0600; a new file gets the user's umask
        os.replace(tmp_path, final)
    except BaseException:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        else:
            tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final``; on success rename it to ``final``.

    If another process created ``final`` first, ours is discarded and theirs kept (first writer wins).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
