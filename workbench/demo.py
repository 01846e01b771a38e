"""The workbench end to end on one model: a traced, Harmony-structured generation with a tool loop.

``run_demo(path)`` asks the model a question with a function tool and the python tool declared, runs
the tool loop with Harmony-constrained decoding (so even the random built-in model writes well-formed
Harmony), traces routing and attention sinks over the whole conversation, and returns a ``DemoResult``
with a compact text summary and a self-contained HTML report (token stream, tool trace, routing
heatmap, sink view) written by ``DemoResult.write_html``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import torch

TRACE_NAMES = ["blocks.*.moe.expert_idx", "blocks.*.moe.expert_weights", "blocks.*.moe.router_logits",
               "blocks.*.attn.sink_prob", "blocks.*.attn.probs"]
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


@dataclasses.dataclass
class DemoResult:
    model: object
    chat: object  # workbench.toolloop.ChatResult
    tokens: list[int]  # the whole conversation, rendered
    trace: object  # workbench.trace.Trace over ``tokens``
    seconds: float

    def summary(self, width: int = 100) -> str:
        """A compact plain-text account: messages by channel, tool steps, routing and sink tables."""
        def clip(text: str) -> str:
            text = _CONTROL.sub("", text).replace("\n", " ")
            return text if len(text) <= width else text[: width - 1] + "…"

        from .summary import format_table

        lines = [f"model: {self.model.extra_repr()}", ""]
        lines.append(f"tool loop: {len(self.chat.transcripts)} generations, {len(self.chat.trace)} tool calls, "
                     f"stopped by {self.chat.stop_reason} in {self.seconds:.1f} s")
        for g, transcript in enumerate(self.chat.transcripts):
            for m, span in zip(transcript.messages, transcript.spans):
                head = f"[{g}] {m.channel or '-'}" + (f" to={m.recipient}" if m.recipient else "")
                text = "".join(getattr(c, "text", "") for c in m.content)
                lines.append(f"  {head:32s} {clip(text)}")
            for e in transcript.errors:
                lines.append(f"  [{g}] parse error: {clip(str(e))}")
        for step in self.chat.trace:
            lines.append(f"  tool {step.recipient}({clip(step.arguments)}) -> "
                         f"{clip(step.error or step.result)} [{step.duration * 1000:.0f} ms]")
        load = self.trace.expert_load()
        lines += ["", f"expert load over {len(self.tokens)} tokens (picks per expert, per layer):",
                  format_table([[str(i), *map(str, row)] for i, row in zip(load.index, load.values.tolist())],
                               ["layer", *map(str, load.columns)], "l" + "r" * len(load.columns))]
        sink = self.trace.sink_mass()
        lines += ["", "mean attention-sink mass per head:",
                  format_table([[str(i), *(f"{v:.2f}" for v in row)] for i, row in zip(sink.index, sink.values.tolist())],
                               ["layer", *(f"h{h}" for h in sink.columns)], "l" + "r" * len(sink.columns))]
        return "\n".join(lines)

    def widgets(self) -> list:
        from .harmony import parse_tokens
        from .widgets import RouterView, SinkView, TokenStreamView, ToolTraceView

        return [
            TokenStreamView(parse_tokens(self.tokens, role=None), title="The conversation, token by token"),
            ToolTraceView(self.chat.trace, transcripts=self.chat.transcripts, title="Tool calls"),
            RouterView(self.trace, tokens=self.tokens, title="Expert routing"),
            SinkView(self.trace, tokens=self.tokens, title="Attention sinks", max_pattern_bytes=4 << 20),
        ]

    def write_html(self, path: str | Path) -> Path:
        from .widgets import export_html

        return export_html(path, self.widgets(), title="gpt-oss workbench demo")


def run_demo(path: str | Path | None = None, *, question: str = "What is 2 + 3? Use a tool.", seed: int = 3,
             max_turns: int = 3, max_new_tokens: int = 64, max_content_tokens: int = 12,
             reasoning_effort: str = "low", on_event=None) -> DemoResult:
    """Run the demo on ``path`` (default: the built-in tiny model, made on first use)."""
    from .backends import LocalBackend
    from .harmony import Conversation
    from .model import load_model
    from .tiny import default_checkpoint
    from .tools import PythonTool
    from .toolloop import chat

    model = load_model(path or default_checkpoint(), dtype=torch.float32)
    conv = Conversation.new("Use the tools when they help.", reasoning_effort=reasoning_effort,
                            functions=[add]).user(question)
    backend = LocalBackend(model, constrained=True, max_content_tokens=max_content_tokens)
    start = time.perf_counter()
    python = PythonTool()  # one stateful session for this conversation, ended with it
    try:
        result = chat(backend, conv, tools=[python], max_turns=max_turns, max_new_tokens=max_new_tokens,
                      seed=seed, on_event=on_event)
    finally:
        python.close()
    tokens = result.conversation.render_all()
    _, trace = model.run_with_trace(torch.tensor(tokens), names=TRACE_NAMES)
    return DemoResult(model, result, tokens, trace, time.perf_counter() - start)
