"""Tools the model can call: ``python`` (a sandboxed, stateful session), ``browser`` (search/open/find), ``functions``.

Tools know Harmony, not the model. Each has a ``namespace``, ``config()`` (its Harmony declaration)
and ``call(recipient, arguments) -> ToolResult``; ``trace`` records calls as ``ToolStep``s.
"""

from .base import Tool, ToolResult, error_result, handles
from .browser import CITATION, BrowserTool, ToolUsageError, wrap_lines
from .functions import FunctionTools, validate
from .python import PythonTool, describe
from .sandbox import Limits, PythonRun, PythonSession, SandboxUnavailable, run_python
from .search import BackendError, LocalSearch, Page, SearchBackend, SearchResult, html_to_page, text_to_page
from .trace import ToolStep, ToolTrace

__all__ = [
    "Tool", "ToolResult", "error_result", "handles",
    "BrowserTool", "ToolUsageError", "wrap_lines", "CITATION",
    "FunctionTools", "validate",
    "PythonTool", "describe", "Limits", "PythonRun", "PythonSession", "SandboxUnavailable", "run_python",
    "BackendError", "LocalSearch", "Page", "SearchBackend", "SearchResult", "html_to_page", "text_to_page",
    "ToolStep", "ToolTrace",
]
