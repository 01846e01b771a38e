"""Progress bars: shown on a terminal for long work, silent in pipes and when asked."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import termios
import subprocess
import sys

from workbench.progress import enabled

_SCRIPT = """
import time
from workbench.progress import progress
for _ in progress(range(3), desc="crunching", delay=0):
    time.sleep(0.05)
"""


def _run(tty: bool, **env) -> str:
    full = {**os.environ, **env}
    if not tty:
        return subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=full).stderr
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT], stdin=child, stdout=child, stderr=child, env=full)
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait()
    os.close(main)
    return out.decode(errors="replace")


def test_bar_on_a_terminal_only():
    assert "crunching" in _run(tty=True)
    assert "crunching" not in _run(tty=False)
    assert "crunching" not in _run(tty=True, WORKBENCH_PROGRESS="0")


def test_policy(monkeypatch):
    monkeypatch.delenv("WORKBENCH_PROGRESS", raising=False)
    assert enabled() is None and enabled(quiet=True) is True
    monkeypatch.setenv("WORKBENCH_PROGRESS", "0")
    assert enabled() is True
