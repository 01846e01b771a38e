"""Sweep logs that survive: one JSON line per finished sample in ``FOLDER/samples.jsonl``.

Each record is written with a single ``write`` on an ``O_APPEND`` descriptor, then fsynced, so a run
killed at any moment (SIGKILL included) leaves every finished sample on disk and at worst one torn
last line. Readers ignore a torn last line; ``LogWriter`` cuts it off before appending, so it can
never glue itself to the next record. A lock file keeps two sweeps from writing one folder at once.

A record's key is (task, sample, model, effort, repeat). When a key appears more than once (a sample
that failed and was retried on a later run) the last record wins. ``replace_log`` rewrites a whole log
(re-scoring does): a temp file, fsynced, renamed over the old one, so a reader sees the old log or the
new one and never a mix.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Iterator

LOG_NAME = "samples.jsonl"
KEY_FIELDS = ("task", "sample", "model", "effort", "repeat")

#: Fields of a record, in order (``tokens`` is None when the backend does not give token ids).
FIELDS = (
    "task", "sample", "model", "effort", "repeat", "prompt", "target", "tokens", "reasoning", "answer",
    "extracted", "score", "correct", "scorer", "reasoning_tokens", "answer_tokens", "completion_tokens", "stop_reason",
    "parse_errors", "latency", "attempts", "backend", "error", "time",
)


def key_of(record: dict) -> tuple:
    return tuple(record[k] for k in KEY_FIELDS)


def log_path(folder) -> Path:
    folder = Path(folder)
    return folder if folder.suffix == ".jsonl" else folder / LOG_NAME


def read_records(folder) -> Iterator[dict]:
    """Every complete record in write order. A torn last line is skipped silently; a corrupt line
    elsewhere (which no crash of ours can make) is skipped with a warning naming its line."""
    path = log_path(folder)
    if not path.exists():
        return
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        torn = n == len(lines)  # no newline after it: the writer died mid-record
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or any(k not in record for k in KEY_FIELDS):
                raise ValueError("not a sample record")
        except ValueError:
            if not torn:
                warnings.warn(f"{path}:{n}: skipping a corrupt line", RuntimeWarning, stacklevel=2)
            continue
        if torn:
            continue  # even if it parses, a record is only finished once its newline is on disk
        yield record


def latest_records(folder) -> dict[tuple, dict]:
    """The last record for each key."""
    return {key_of(r): r for r in read_records(folder)}


def refuse_symlinks(folder: Path) -> None:
    """An output folder that is a symbolic link, or holds one where we write, is refused: a planted link
    would make a sweep overwrite or append to a file elsewhere (a victim's file, a shell rc file)."""
    if folder.is_symlink():
        raise ValueError(f"{folder}: is a symbolic link; eval output folders refuse symlinks")
    for name in (LOG_NAME, LOG_NAME + ".lock", "sweep.json"):
        if (folder / name).is_symlink():
            raise ValueError(f"{folder / name}: is a symbolic link; eval output folders refuse symlinks")


def lock_log(path: Path) -> int:
    """Take the log's lock (a file descriptor to close to release it); RuntimeError when a sweep holds it."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"another sweep is writing to {path.parent}") from None
    return fd


def replace_log(path: Path, data: bytes) -> None:
    """Replace the log at ``path`` with ``data`` atomically (temp file, fsync, rename, fsync the folder).
    The caller holds ``lock_log(path)``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class LogWriter:
    """Appends records to ``FOLDER/samples.jsonl`` (thread-safe), each flushed to disk before ``write`` returns."""

    def __init__(self, folder):
        self.path = log_path(folder)
        refuse_symlinks(self.path.parent)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_log(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        self._cut_torn_tail()
        self._lock = threading.Lock()

    def _cut_torn_tail(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as f:
            # Find the last newline, reading backwards in chunks.
            end, chunk = size, 1 << 16
            while end > 0:
                start = max(0, end - chunk)
                f.seek(start)
                block = f.read(end - start)
                i = block.rfind(b"\n")
                if i >= 0:
                    keep = start + i + 1
                    break
                end = start
            else:
                keep = 0
        if keep < size:
            os.truncate(self.path, keep)
            os.fsync(self._fd)

    def write(self, record: dict) -> None:
        data = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode()
        with self._lock:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            os.close(self._lock_fd)  # releases the flock
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
