"""What a tool is to the tool loop.

A tool owns a recipient namespace (``python``, ``browser``, ``functions``), describes itself the way
Harmony declares tools (``config()`` -> openai_harmony ``ToolNamespaceConfig``), and answers a call:
``call(recipient, arguments) -> ToolResult``, where ``arguments`` is the raw text of the model's
message (JSON for browser and function tools, code for python). Tools never raise for bad input
from the model: they return a ``ToolResult`` with ``error`` set, whose ``text`` the model reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from openai_harmony import ToolNamespaceConfig


@dataclass
class ToolResult:
    """``text`` goes back to the model as the tool's message; ``error`` says what went wrong, if anything."""

    text: str
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class Tool(Protocol):
    namespace: str
    builtin: bool  # declared in the system message (browser, python) rather than the developer message

    def config(self) -> ToolNamespaceConfig: ...

    def call(self, recipient: str, arguments: str) -> ToolResult: ...


def handles(tool: Tool, recipient: str) -> bool:
    """Whether ``recipient`` (``browser.search``, ``python``...) belongs to ``tool``'s namespace."""
    return recipient == tool.namespace or recipient.startswith(tool.namespace + ".")


def error_result(message: str, **data) -> ToolResult:
    """A tool error the model can read (as JSON ``{"error": ...}``, like the gpt-oss reference tools)."""
    import json

    return ToolResult(text=json.dumps({"error": message}, ensure_ascii=False), error=message, data=data)
