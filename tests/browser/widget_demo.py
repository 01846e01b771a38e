"""Data and widgets for the browser tests: the notebook run in JupyterLab imports this module, and the
static-export test uses it directly, so both check the same widgets.

Traces come from the built-in nano model (``workbench.default_checkpoint()``).
"""

from __future__ import annotations

import json

import torch

from workbench.harmony import Conversation, encoding, parse_tokens
from workbench.tools import ToolStep, ToolTrace

# Strings that would run code if a widget ever inserted model text as HTML or followed it as a link.
HOSTILE = [
    "<script>window.__wbPwned = 1</script>",
    '<img src="wb-pwned.png" onerror="window.__wbPwned = 2">',
    "javascript:window.__wbPwned = 3",
    '<a href="javascript:window.__wbPwned = 4">click</a>',
    '"><svg onload="window.__wbPwned = 5">',
]


def conversation_tokens() -> list[int]:
    """A full transcript: system, user, analysis, a function call, its result, and a final answer."""
    conv = (Conversation.new("Use the weather tool when asked about weather.", date="2025-08-05")
            .user("What is the weather in Paris?")
            .assistant("The user wants the weather in Paris. I should call the tool.", channel="analysis")
            .assistant('{"city": "Paris"}', channel="commentary", recipient="functions.get_weather",
                       content_type="<|constrain|>json")
            .tool("functions.get_weather", '{"temperature_c": 21, "sky": "clear"}')
            .assistant("It is 21 °C and clear in Paris.", channel="final"))
    return conv.render_all()


def completion_tokens() -> list[int]:
    """A completion (what follows <|start|>assistant) with a parse error: an unknown channel."""
    return encoding().encode(
        "<|channel|>analysis<|message|>Let me think step by step.<|end|>"
        "<|start|>assistant<|channel|>commentary to=python<|message|>print(6 * 7)<|call|>"
        "<|start|>assistant<|channel|>reasoning<|message|>An unknown channel.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>The answer is 42.<|return|>",
        allowed_special="all")


def hostile_tokens() -> list[int]:
    """Hostile strings in content, a recipient, a channel name, and stray text outside any message."""
    text = ("<|channel|>analysis<|message|>" + " ".join(HOSTILE) + "<|end|>"
            f"<|start|>assistant<|channel|>commentary to={HOSTILE[1]}<|message|>{HOSTILE[0]}<|call|>"
            f"<|start|>assistant<|channel|>{HOSTILE[4]}<|message|>{HOSTILE[3]}<|end|>"
            f"{HOSTILE[0]}"
            f"<|start|>assistant<|channel|>final<|message|>{HOSTILE[2]} {HOSTILE[1]}<|return|>")
    return encoding().encode(text, allowed_special="all")


def live_tokens(n: int = 3000) -> list[int]:
    """About ``n`` tokens of a long analysis message followed by a final one (a replayed generation)."""
    enc = encoding()
    words = " The router picks two experts per token and the sink soaks up attention mass."
    body = enc.encode(words * (n // 14 + 1))
    head = enc.encode("<|channel|>analysis<|message|>", allowed_special="all")
    tail = enc.encode("<|end|><|start|>assistant<|channel|>final<|message|>Done.<|return|>", allowed_special="all")
    body = body[: n - len(head) - len(tail)]
    return head + body + tail


def tool_trace(transcript) -> ToolTrace:
    """Three tool calls; the first two point at the call messages of ``transcript`` (the conversation)."""
    calls = [span for span, m in zip(transcript.spans, transcript.messages) if m.recipient and m.recipient != "assistant"]
    return ToolTrace([
        ToolStep(index=0, generation=0, recipient="functions.get_weather", arguments='{"city": "Paris"}',
                 result='{"temperature_c": 21, "sky": "clear"}', duration=0.12, token_span=(calls[0].start, calls[0].end),
                 channel="commentary", content_type="<|constrain|>json"),
        ToolStep(index=1, generation=0, recipient="python", arguments=HOSTILE[0] + "\nprint(1/0)",
                 result=HOSTILE[1], duration=0.4, error="ZeroDivisionError: " + HOSTILE[2], token_span=(2, 9)),
        ToolStep(index=2, generation=1, recipient="browser.search", arguments=json.dumps({"query": HOSTILE[3]}),
                 result="【0†Example†example.com】", duration=0.05, token_span=None),
    ])


def model_trace(tokens: list[int]):
    """(trace, source): the built-in nano model's trace of ``tokens``."""
    import workbench

    model = workbench.load_model(workbench.default_checkpoint())
    _, trace = model.run_with_trace(torch.tensor(tokens), names=["*.moe.*", "*.attn.sink_prob", "*.attn.probs"])
    return trace, "nano model"


def checkpoint():
    import workbench

    return workbench.open_checkpoint(workbench.default_checkpoint())


def reference_weight(ckpt, layer: int = 0, expert: int = 1, noise: float = 0.05):
    """A dense weight near the stored MXFP4 one, so the error panel has something to show."""
    w = ckpt[f"block.{layer}.mlp.mlp1_weight"][expert].dequantize(torch.float32)
    g = torch.Generator().manual_seed(1)
    return w + noise * w.abs().mean() * torch.randn(w.shape, generator=g)


def logprobs(n: int) -> list[float]:
    return [-0.25 - 0.001 * i for i in range(n)]


def build_data() -> dict:
    """The inputs of every demo widget (the tests compute what the page must show from these)."""
    conv = conversation_tokens()
    prompt = conv[:40]
    trace, source = model_trace(prompt)
    ckpt = checkpoint()
    transcript = parse_tokens(conv, role=None)
    return {
        "conversation": transcript, "hostile": parse_tokens(hostile_tokens()),
        "completion": parse_tokens(completion_tokens()), "tool_trace": tool_trace(transcript), "prompt": prompt,
        "trace": {k: v for k, v in trace.items()}, "source": source, "ckpt": ckpt, "reference": reference_weight(ckpt),
    }


def build_widgets(data: dict | None = None) -> dict:
    """All widgets of the demo, by name (in the order the notebook and the static page show them)."""
    from workbench.widgets import MXFP4View, RouterView, SinkView, TokenStreamView, ToolTraceView

    d = data or build_data()
    conv = d["conversation"]
    stream = TokenStreamView(conv, logprobs=logprobs(len(conv.events)), title="conversation")
    return {
        "stream": stream,
        "hostile": TokenStreamView(d["hostile"], title=HOSTILE[0]),
        "completion": TokenStreamView(d["completion"], title="completion"),
        "tools": ToolTraceView(d["tool_trace"], transcripts=[conv], streams=[stream], title=HOSTILE[1]),
        "router": RouterView(d["trace"], d["prompt"], title=f"routing ({d['source']})"),
        "sinks": SinkView(d["trace"], d["prompt"], title=f"sinks ({d['source']})"),
        "mxfp4": MXFP4View(d["ckpt"], 0, 1, reference=d["reference"]),
    }
