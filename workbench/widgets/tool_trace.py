"""``ToolTraceView``: the steps of a tool loop as an expandable timeline.

Each step (a ``workbench.tools.ToolStep``) shows its recipient, duration (a bar placed on the loop's
time axis), error, and, expanded, the arguments, the result and the token span of the message that
made the call. ``transcripts`` (one per generation, or one) adds the text of that span; ``streams``
(a ``TokenStreamView`` per generation, or one) links the two: selecting a step highlights its span in
the stream view (needs a kernel). Steps are JSON text (model text, inserted with textContent).
"""

from __future__ import annotations

import traitlets

from ._base import WorkbenchWidget


def _per_generation(x):
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


class ToolTraceView(WorkbenchWidget):
    _module = "tool_trace"

    steps = traitlets.List(traitlets.Dict()).tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(self, tool_trace=(), *, transcripts=None, streams=None, title: str = "", **kwargs):
        self._transcripts = _per_generation(transcripts)
        self._streams = _per_generation(streams)
        self._steps = list(tool_trace)
        super().__init__(steps=[self._row(s) for s in self._steps], title=title, **kwargs)
        self.observe(self._link, "selected")

    def append(self, step) -> None:
        """Add a step (live tool loops)."""
        self._steps.append(step)
        self.steps = self.steps + [self._row(step)]

    def _row(self, step) -> dict:
        d = step.to_dict() if hasattr(step, "to_dict") else dict(step)
        d.pop("data", None)
        span, gen = d.get("token_span"), d.get("generation") or 0
        d["span_text"] = None
        if span is not None and gen < len(self._transcripts):
            events = self._transcripts[gen].events
            d["span_text"] = "".join(e.text for e in events[span[0]: span[1] + 1])
        d["linked"] = span is not None and gen < len(self._streams)
        return {k: d.get(k) for k in ("index", "generation", "recipient", "arguments", "result", "error", "duration",
                                      "token_span", "channel", "content_type", "span_text", "linked")}

    def _link(self, change) -> None:
        i = change["new"]
        if not 0 <= i < len(self.steps):
            return
        row = self.steps[i]
        gen = row.get("generation") or 0
        if row.get("token_span") is not None and gen < len(self._streams):
            self._streams[gen].highlight = list(row["token_span"])

    def fallback_text(self) -> str:
        lines = [f"ToolTraceView: {len(self.steps)} steps"]
        for s in self.steps:
            err = f" ERROR {s['error']}" if s.get("error") else ""
            lines.append(f"#{s['index']} {s['recipient']} {s['duration'] or 0:.3f}s{err}: {s['arguments']!r} -> {s['result']!r}")
        return "\n".join(lines)
