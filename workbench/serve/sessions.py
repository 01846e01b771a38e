"""The built-in tools' state per conversation: one python session (and browser page stack) per chain of
``previous_response_id``, bounded in number and time.

The python tool tells the model that variables, imports and the files in /mnt/data persist between
its calls; over the Responses API a conversation is a chain of responses, each continuing the one
before (``previous_response_id``). So a response that starts a conversation gets fresh tools, and a
response that continues one takes over the tools of the response it continues: a definition made in
one response's python call is there in the next response's. The browser's page stack (the cursors
the model cites) travels with them.

Bounds (a server holds sandboxes for clients it cannot trust):

- at most ``max_sessions`` conversations hold tools; past that the least recently used idle one is
  closed (its sandbox ends);
- a conversation's tools are closed after ``idle_timeout`` seconds unused (a reaper thread);
- ``close()`` (server shutdown) closes every one; tools in use are closed when their response ends.

The tools follow one line of a conversation: they are held under the id of the last response that
used them (its ``head``). A request that continues an older response of the chain (a branch), one
that continues a response while another request is using the same tools, or one whose tools were
closed gets fresh tools; if its conversation already called python, the first python result starts
with a notice saying that the session was restarted and why, so the model is never told that
state persists when it does not.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from ..tools.base import ToolResult

ENDED_KEPT = 4096  # why the tools of a response ended, remembered for this many responses


def notice(reason: str) -> str:
    return (f"[The python session of this conversation was restarted: {reason}. Variables, imports and files "
            "in /mnt/data from earlier calls are gone; this call ran in a new session.]\n")


class RestartNotice:
    """A built-in tool whose first python result carries the restart notice (the tool is used as is)."""

    def __init__(self, tool, text: str):
        self.tool, self.text = tool, text
        self.namespace, self.builtin = tool.namespace, tool.builtin

    def config(self):
        return self.tool.config()

    def call(self, recipient: str, arguments: str) -> ToolResult:
        result = self.tool.call(recipient, arguments)
        text, self.text = self.text, None
        if text is None:
            return result
        return ToolResult(text=text + result.text, error=result.error, data={**result.data, "restarted": True})


@dataclass
class Entry:
    """One conversation's built-in tools (name -> tool), held under the id of its last response."""

    tools: dict[str, Any] = field(default_factory=dict)
    head: str | None = None
    used: float = 0.0

    def close(self) -> None:
        for tool in self.tools.values():
            close = getattr(tool, "close", None)
            if close is not None:
                close()


class Lease:
    """The tools one response uses: ``tools`` in the order asked for; give it back with ``Sessions.release``."""

    def __init__(self, entry: Entry, tools: list):
        self.entry, self.tools = entry, tools
        self.released = False


class Sessions:
    """Per-conversation built-in tools (see the module docstring). ``factories`` maps a built-in name
    (``python``, ``browser``) to a function making a fresh tool. Thread-safe."""

    def __init__(self, factories: dict[str, Callable[[], Any]], *, max_sessions: int = 32,
                 idle_timeout: float = 1200.0):
        if max_sessions < 1 or idle_timeout <= 0:
            raise ValueError(f"max_sessions must be >= 1 and idle_timeout > 0, not {max_sessions} and {idle_timeout}")
        self.factories = dict(factories)
        self.max_sessions, self.idle_timeout = max_sessions, idle_timeout
        self._held: OrderedDict[str, Entry] = OrderedDict()  # head -> idle entry, least recently used first
        self._busy: dict[int, Entry] = {}  # entries in use, by id
        self._ended: OrderedDict[str, str] = OrderedDict()  # head -> why its tools ended
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def __len__(self) -> int:
        """Conversations holding tools now (idle or in use)."""
        with self._lock:
            return len(self._held) + len(self._busy)

    def lease(self, names, previous_id: str | None, *, called_python: bool) -> Lease | None:
        """The tools ``names`` for a response continuing ``previous_id`` (None: a new conversation), or None
        when it needs none and continues none. ``called_python``: the conversation so far has python calls
        (a fresh session then carries the restart notice)."""
        closing: list[Entry] = []
        why = None
        with self._lock:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            entry = self._held.pop(previous_id, None) if previous_id is not None else None
            if entry is None and not names:
                return None
            if entry is None:
                entry = Entry()
                why = self._why_gone(previous_id) if called_python else None
                while self._held and len(self._held) + len(self._busy) >= self.max_sessions:
                    head, old = self._held.popitem(last=False)
                    self._end(head, f"the server's limit of {self.max_sessions} live sessions was reached and this "
                                    "one was the least recently used")
                    closing.append(old)
            self._busy[id(entry)] = entry
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="workbench-sessions", daemon=True)
                self._reaper.start()
        for old in closing:
            old.close()
        tools = []
        for name in names:
            if name not in entry.tools:
                entry.tools[name] = self.factories[name]()
            tool = entry.tools[name]
            tools.append(RestartNotice(tool, notice(why)) if why and name == "python" else tool)
        return Lease(entry, tools)

    def _why_gone(self, previous_id: str | None) -> str:
        if previous_id is None:
            return "this request continues no stored response (previous_response_id), so it has no session"
        if any(entry.head == previous_id for entry in self._busy.values()):
            return "another request continuing the same response is using its session"
        return self._ended.get(previous_id, "the server holds no session for that response (it may have restarted)")

    def _end(self, head: str | None, reason: str) -> None:
        if head is None:
            return
        self._ended[head] = reason
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    def release(self, lease: Lease | None, head: str | None) -> None:
        """The response using ``lease`` ended; ``head`` is its id if it was stored (else nobody can
        continue it and its tools are closed). Once per lease; later calls do nothing."""
        if lease is None:
            return
        entry = lease.entry
        with self._lock:
            if lease.released:
                return
            lease.released = True
            self._busy.pop(id(entry), None)
            previous, entry.head, entry.used = entry.head, head, time.monotonic()
            keep = head is not None and not self._closed
            if keep:
                self._held[head] = entry
            if previous is not None and previous != head:
                self._end(previous, f"a later response ({head}) continued it, and this request continues an "
                                    "earlier response" if head else "a later request continued it and was not stored "
                                    "(store=false, cancelled or failed)")
        if not keep:
            entry.close()

    def _reap(self) -> None:
        period = min(max(self.idle_timeout / 4, 0.05), 30.0)
        while not self._stop.wait(period):
            now, closing = time.monotonic(), []
            with self._lock:
                for head, entry in list(self._held.items()):
                    if now - entry.used >= self.idle_timeout:
                        del self._held[head]
                        self._end(head, f"it was idle for more than {self.idle_timeout:g} s")
                        closing.append(entry)
            for entry in closing:
                entry.close()

    def close(self) -> None:
        """Close every idle conversation's tools now, and the ones in use when their response ends."""
        with self._lock:
            self._closed = True
            closing = list(self._held.values())
            for head in self._held:
                self._end(head, "the server shut down")
            self._held.clear()
        self._stop.set()
        for entry in closing:
            entry.close()
        if self._reaper is not None and self._reaper is not threading.current_thread():
            self._reaper.join(5)
