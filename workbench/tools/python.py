"""The ``python`` tool: the model's message is a script, run statelessly in the sandbox.

>>> tool = PythonTool()
>>> tool.call("python", "print(sum(range(10)))").text
'45\\n'

Declared with openai-harmony's own description of the built-in python tool
(``ToolNamespaceConfig.python()``), so prompts match what gpt-oss was trained on. Note that
description speaks of a stateful notebook; this tool is stateless (each call a fresh process).
"""

from __future__ import annotations

from openai_harmony import ToolNamespaceConfig

from .base import ToolResult
from .sandbox import run_python


class PythonTool:
    namespace = "python"
    builtin = True

    def __init__(self, *, timeout: float = 20.0, cpu_seconds: int = 10, memory_mb: int = 1024,
                 max_output: int = 65536, max_processes: int = 16, isolate: bool = True):
        self.limits = dict(timeout=timeout, cpu_seconds=cpu_seconds, memory_mb=memory_mb, max_output=max_output,
                           max_processes=max_processes, isolate=isolate)

    def config(self) -> ToolNamespaceConfig:
        return ToolNamespaceConfig.python()

    def call(self, recipient: str, arguments: str) -> ToolResult:
        if recipient != "python":
            return ToolResult(text=f"Unknown python function {recipient!r}: send the code to `python`.",
                              error=f"unknown recipient {recipient}")
        run = run_python(arguments, **self.limits)
        error = None if run.ok else (run.reason or f"exit code {run.exit_code}")
        return ToolResult(text=run.report(), error=error, data=run.to_dict())

    def __repr__(self) -> str:
        return f"PythonTool({', '.join(f'{k}={v}' for k, v in self.limits.items())})"
