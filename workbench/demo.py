"""The workbench end to end on one model: a traced Harmony conversation with a real tool call.

``run_demo(path)`` asks the model (by default the built-in nano model) a question it needs the python tool
for, with the python tool and the nano functions declared and reasoning effort high, and runs the tool loop
unconstrained: the model reasons on the analysis channel, sends code to ``python`` (run in the sandbox), reads
the result and answers on the final channel. It traces routing and attention sinks over the whole
conversation and returns a ``DemoResult`` with a compact text summary (messages, the tool call, expert load
by channel, sink mass) and a self-contained HTML report (token stream, tool trace, routing, sinks and the
MXFP4 view of the expert the final answer used most) written by ``DemoResult.write_html``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from pathlib import Path

import torch

TRACE_NAMES = ["blocks.*.moe.expert_idx", "blocks.*.moe.expert_weights", "blocks.*.moe.router_logits",
               "blocks.*.attn.sink_prob", "blocks.*.attn.probs"]
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


DEMO_QUESTION = "What is 7,919 × 48,611?"


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
        calls = [s for s in self.chat.trace if s.recipient == "python"]
        ok = [s for s in calls if s.error is None]
        lines.append(f"python calls: {len(calls)}, ran without error: {len(ok)}; final answer: "
                     f"{clip(self.chat.final) if self.chat.final is not None else '(none)'}")
        by_channel = self.load_by_channel()
        if len(by_channel):
            from .nano.routing import entropy

            ent = entropy(by_channel)
            lines += ["", "expert load entropy by channel (bits; uniform = "
                      f"{math.log2(self.model.config.num_experts):.0f}):",
                      format_table([[str(i), *(f"{v:.2f}" for v in row)] for i, row in zip(ent.index, ent.values.tolist())],
                                   ["layer", *ent.columns], "l" + "r" * len(ent.columns))]
        load = self.trace.expert_load()
        lines += ["", f"expert load over {len(self.tokens)} tokens (picks per expert, per layer):",
                  format_table([[str(i), *map(str, row)] for i, row in zip(load.index, load.values.tolist())],
                               ["layer", *map(str, load.columns)], "l" + "r" * len(load.columns))]
        sink = self.trace.sink_mass()
        lines += ["", "mean attention-sink mass per head:",
                  format_table([[str(i), *(f"{v:.2f}" for v in row)] for i, row in zip(sink.index, sink.values.tolist())],
                               ["layer", *(f"h{h}" for h in sink.columns)], "l" + "r" * len(sink.columns))]
        return "\n".join(lines)

    def load_by_channel(self):
        """Expert load per layer by Harmony channel over this conversation (``workbench.nano.routing``)."""
        from .nano.routing import load_by_channel

        return load_by_channel(self.model, [self.tokens])

    def final_expert(self) -> tuple[int, int]:
        """(layer, expert): the expert that took the largest share of the final answer's picks (layer 0 if the
        model wrote no final answer)."""
        df = self.load_by_channel()
        final = df[(df.channel == "final") & (df.picks > 0)]
        if not len(final):
            return 0, 0
        row = final.sort_values("picks", ascending=False).iloc[0]
        return int(row.layer), int(row.expert)

    def widgets(self) -> list:
        from .harmony import parse_tokens
        from .widgets import MXFP4View, RouterView, SinkView, TokenStreamView, ToolTraceView

        layer, expert = self.final_expert()
        return [
            TokenStreamView(parse_tokens(self.tokens, role=None), title="The conversation, token by token"),
            ToolTraceView(self.chat.trace, transcripts=self.chat.transcripts, title="Tool calls"),
            RouterView(self.trace, tokens=self.tokens, title="Expert routing"),
            SinkView(self.trace, tokens=self.tokens, title="Attention sinks", max_pattern_bytes=4 << 20),
            MXFP4View(self.model, layer, expert,
                      title=f"MXFP4 weights of layer {layer}, expert {expert} (the final answer's most used expert)"),
        ]

    def write_html(self, path: str | Path) -> Path:
        from .widgets import export_html

        return export_html(path, self.widgets(), title="gpt-oss workbench demo")


def run_demo(path: str | Path | None = None, *, question: str = DEMO_QUESTION, reasoning_effort: str = "high",
             temperature: float = 0.0, seed: int = 0, max_turns: int = 4, max_new_tokens: int = 400,
             constrained: bool = False, on_event=None) -> DemoResult:
    """Run the demo on ``path`` (default: the built-in nano model, written to the cache on first use).

    ``temperature=0`` (the default) follows the model's most likely token at each step, so the demo shows the
    same conversation on every machine; a higher temperature samples (seeded by ``seed``)."""
    from .backends import LocalBackend
    from .harmony import Conversation
    from .model import load_model
    from .nano.functions import NANO_FUNCTIONS
    from .tiny import default_checkpoint
    from .tools import PythonTool
    from .toolloop import chat

    model = load_model(path or default_checkpoint(), dtype=torch.float32)
    conv = Conversation.new(reasoning_effort=reasoning_effort).user(question)
    backend = LocalBackend(model, constrained=constrained)
    python = PythonTool()
    start = time.perf_counter()
    try:
        result = chat(backend, conv, tools=[python, *NANO_FUNCTIONS], max_turns=max_turns,
                      max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, on_event=on_event)
    finally:
        close = getattr(python, "close", None)
        if close:
            close()
    tokens = result.conversation.render_all(auto_drop_analysis=False)
    _, trace = model.run_with_trace(torch.tensor(tokens), names=TRACE_NAMES)
    return DemoResult(model, result, tokens, trace, time.perf_counter() - start)
