"""The ``python`` tool: the model's messages run in a sandboxed, stateful Python session.

>>> tool = PythonTool()
>>> tool.call("python", "x = sum(range(10))").text, tool.call("python", "x * 2").text
('', '90\\n')
>>> tool.close()

What the model is told is generated from the tool's configuration (``describe``), so it is true:
openai-harmony's stock text promises a stateful Jupyter notebook, a 120 s timeout and a persistent
``/mnt/data``; ours states this tool's real mode, time limit, working directory, disk and memory.

- ``stateful=True`` (default): one session per ``PythonTool`` (use one tool per conversation).
  Variables, functions, imports and the files in /mnt/data persist between calls; the value of a
  last expression is shown, as in Jupyter. A call that runs past ``timeout`` is interrupted
  (KeyboardInterrupt); if it does not stop within ``grace`` seconds the session restarts, and the
  result says that variables and files were lost. ``restart()`` starts over; ``close()`` ends it.
- ``stateful=False``: every call runs in a fresh sandbox that is gone afterwards.

It fails closed: when the sandbox cannot be made (no bubblewrap, user namespaces refused, a layer
that did not take effect), each call returns the reason as an error the model reads, the user gets
one ``RuntimeWarning``, and no code runs. ``isolate=False`` is the explicit opt-out: the code then
runs as you, with your files and network, under the same limits (a loud warning at construction).
See ``workbench.tools.sandbox`` for the layers and what each defends against.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import asdict

from openai_harmony import ToolNamespaceConfig

from .base import ToolResult
from .sandbox import DATA_DIR, Limits, PythonSession, SandboxUnavailable

PREAMBLE = ("Use this tool to execute Python code in your chain of thought. The code will not be shown to the user. "
            "This tool should be used for internal reasoning, but not for code that is intended to be visible to "
            "the user (e.g. when creating plots, tables, or files).")


def describe(limits: Limits, *, stateful: bool = True, isolate: bool = True) -> str:
    """The tool description the model reads, stated from the configured limits and mode."""
    t = f"{limits.timeout:g}"
    drive = f"The drive at '{DATA_DIR}' is the working directory and" if isolate else "The working directory (a temporary folder)"
    disk = f"up to {limits.disk_mb} MB" if isolate else f"files up to {limits.disk_mb} MB each"
    folder = f"The working directory '{DATA_DIR}'" if isolate else "The working directory (a temporary folder)"
    if stateful:
        how = ("it will be executed in a stateful Python session, like a Jupyter notebook: variables, functions, "
               "imports and files persist between calls, and the value of the last expression is shown. "
               f"python will respond with the output of the execution or time out after {t} seconds; a call that "
               "times out is interrupted, and if it does not stop the session restarts, losing its variables and "
               f"files. {drive} can be used to save and persist user "
               f"files for this session ({disk}).")
    else:
        how = ("it will be executed in a fresh Python process: nothing persists between calls (no variables, no "
               "files), so each message must be a complete program that prints what it wants to see. "
               f"python will respond with the output of the execution or time out after {t} seconds. "
               f"{folder} ({disk}) is emptied after each call.")
    network = "disabled" if isolate else "not restricted"
    return (f"{PREAMBLE}\n\nWhen you send a message containing Python code to python, {how} "
            f"Each process may use up to {limits.memory_mb} MB of memory. Internet access for this session is {network}.")


class PythonTool:
    namespace = "python"
    builtin = True

    def __init__(self, *, stateful: bool = True, isolate: bool = True, timeout: float = 30.0, cpu_seconds: int = 30,
                 memory_mb: int = 1024, disk_mb: int = 256, max_output: int = 65536, max_processes: int = 16):
        self.limits = Limits(timeout=timeout, cpu_seconds=cpu_seconds, memory_mb=memory_mb, disk_mb=disk_mb,
                             max_output=max_output, max_processes=max_processes)
        self.stateful, self.isolate = stateful, isolate
        self.session = PythonSession(self.limits, isolate=isolate)
        self._warned = False
        self._lock = threading.Lock()
        if not isolate:
            warnings.warn("PythonTool(isolate=False): model-written code will run WITHOUT the sandbox, as you, with "
                          "your files, processes and network; only the resource limits apply", RuntimeWarning,
                          stacklevel=2)

    def config(self) -> ToolNamespaceConfig:
        return ToolNamespaceConfig(name="python", tools=[],
                                   description=describe(self.limits, stateful=self.stateful, isolate=self.isolate))

    def call(self, recipient: str, arguments: str) -> ToolResult:
        if recipient != "python":
            return ToolResult(text=f"Unknown python function {recipient!r}: send the code to `python`.",
                              error=f"unknown recipient {recipient}")
        with self._lock:
            try:
                run = self.session.run(arguments)
            except SandboxUnavailable as e:
                return self._refuse(str(e))
            finally:
                if not self.stateful:
                    self.session.close()
        error = None if run.ok else (run.reason or f"exit code {run.exit_code}")
        return ToolResult(text=run.report(), error=error, data=run.to_dict())

    def _refuse(self, why: str) -> ToolResult:
        if not self._warned:
            warnings.warn(f"the python tool refused to run code: {why}", RuntimeWarning, stacklevel=3)
            self._warned = True
        text = f"python is unavailable: {why}"
        return ToolResult(text=text, error=text, data={"refused": True})

    def restart(self) -> None:
        """Start the session over (variables and files are lost)."""
        self.session.close()

    def close(self) -> None:
        self.session.close()

    def __repr__(self) -> str:
        limits = ", ".join(f"{k}={v}" for k, v in asdict(self.limits).items())
        return f"PythonTool(stateful={self.stateful}, isolate={self.isolate}, {limits})"
