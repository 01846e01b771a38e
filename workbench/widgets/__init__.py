"""JupyterLab widgets (anywidget) for what the workbench produces; each also exports static HTML.

- ``TokenStreamView(transcript | token ids | None)``: a Harmony token stream, finished or live
  (``push(token, logprob)``, ``finish()``), coloured by channel and role.
- ``ToolTraceView(tool_trace, transcripts=None, streams=None)``: tool calls as a timeline.
- ``RouterView(trace, tokens=None)``: expert picks (tokens x layers), expert load, router logits.
- ``SinkView(trace, tokens=None)``: attention-sink mass per layer/head/position, a head's pattern.
- ``MXFP4View(checkpoint_or_model, layer, expert, weight=, reference=)``: scales, codes, error.
- ``SweepView(samples, summary)``: an eval sweep's summary and samples, as ``workbench.evals`` made them (``sweep.py``).
- ``AttentionGridView(trace, layer)``: every head's attention pattern of one layer, sink column first.
- ``LogitLensView(workbench.lens.logit_lens(...), tokens)``: stages x positions, top next token per cell.

Every widget has ``export_html(path)`` and ``_repr_html_`` (self-contained HTML, JavaScript inlined,
works from file:// without a kernel or network); ``export_html(path, widgets)`` puts several on one
page. Model text is always inserted as text, never as HTML. To convert an executed notebook with
nbconvert for offline reading, drop its saved widget state first (``without_widget_state(nb)``):
nbconvert then uses the widgets' static HTML.

Token colours (backgrounds): analysis #fef3c7, commentary #dbeafe, final #dcfce7, other channel
#fce7f3, assistant without channel #f3f4f6; non-assistant roles: user #e0e7ff, system and developer
#f1f5f9, tool #ffedd5. Parse errors: red wavy underline.
"""

from ._base import WorkbenchWidget, export_html, without_widget_state
from .attention_grid import AttentionGridView
from .logit_lens import LogitLensView
from .mxfp4_view import MXFP4View
from .router import RouterView
from .sinks import SinkView
from .sweep import SweepView
from .token_stream import TokenStreamView
from .tool_trace import ToolTraceView

__all__ = ["WorkbenchWidget", "export_html", "without_widget_state", "TokenStreamView", "ToolTraceView", "RouterView", "SinkView",
           "MXFP4View", "SweepView", "AttentionGridView", "LogitLensView"]
