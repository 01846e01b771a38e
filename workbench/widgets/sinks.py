"""``SinkView``: attention-sink mass per layer, head and query position, and one head's pattern.

Reads ``blocks.{i}.attn.sink_prob`` [Hq,T] and (optional) ``blocks.{i}.attn.probs`` [Hq,T,S] from a
trace (any mapping). Sent as binary: ``sink_prob`` float32 [L,Hq,T]; the attention patterns either
all at once (``patterns`` float32 [L,Hq,T,S], when they fit in ``max_pattern_bytes``) or one head at a
time (``pattern`` float32 [T,S] for ``pattern_of = [layer_position, head]``, sent when ``selected``
changes; a static export then holds only the selected head's pattern).

Colours: sink mass p is drawn as 255 - p * (255 - orange (234, 88, 12)); attention weights as
255 - w * (255 - blue (29, 78, 216)). In the pattern, column 0 is the sink and columns 1.. the keys.
"""

from __future__ import annotations

import torch
import traitlets

from ._base import WorkbenchWidget, as_bytes, token_labels, trace_layers, trace_tensor


class SinkView(WorkbenchWidget):
    """Attention-sink mass per layer, head and query position, and the pattern of ``selected = [layer
    position, head]`` (click a head). ``tokens`` label positions (default: the trace's own)."""

    _module = "sinks"

    layer_ids = traitlets.List(traitlets.Int()).tag(sync=True)
    num_heads = traitlets.Int(0).tag(sync=True)
    num_tokens = traitlets.Int(0).tag(sync=True)
    num_keys = traitlets.Int(0).tag(sync=True)
    sink_prob = traitlets.Bytes(b"").tag(sync=True)
    patterns = traitlets.Bytes(b"").tag(sync=True)
    pattern = traitlets.Bytes(b"").tag(sync=True)
    pattern_of = traitlets.List(traitlets.Int()).tag(sync=True)
    selected = traitlets.List(traitlets.Int(), [0, 0]).tag(sync=True)
    labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(self, trace, tokens=None, *, batch: int = 0, max_pattern_bytes: int = 4 << 20,
                 selected=(0, 0), title: str = "", **kwargs):
        layers = trace_layers(trace, "attn.sink_prob")
        sink = torch.stack([trace_tensor(trace, f"blocks.{i}.attn.sink_prob", batch) for i in layers]).float()
        L, H, T = sink.shape
        self._probs = None
        if all(f"blocks.{i}.attn.probs" in trace for i in layers):
            self._probs = [trace_tensor(trace, f"blocks.{i}.attn.probs", batch).float() for i in layers]
            if self._probs[0].shape[:2] != (H, T):
                raise ValueError(f"attn.probs {list(self._probs[0].shape)} does not match sink_prob [{H}, {T}]")
        S = self._probs[0].shape[-1] if self._probs is not None else 0
        self.sink = sink
        everything = self._probs is not None and L * H * T * S * 4 <= max_pattern_bytes
        super().__init__(layer_ids=layers, num_heads=H, num_tokens=T, num_keys=S, sink_prob=as_bytes(sink, "float32"),
                         patterns=as_bytes(torch.stack(self._probs), "float32") if everything else b"",
                         labels=token_labels(getattr(trace, "tokens", None) if tokens is None else tokens, T, batch), title=title, **kwargs)
        self.observe(self._send_pattern, "selected")
        self.selected = list(selected)
        self._send_pattern()

    def _send_pattern(self, _change=None) -> None:
        if self._probs is None or self.patterns:
            return
        l, hd = self.selected
        l, hd = min(max(l, 0), len(self.layer_ids) - 1), min(max(hd, 0), self.num_heads - 1)
        with self.hold_sync():
            self.pattern = as_bytes(self._probs[l][hd], "float32")
            self.pattern_of = [l, hd]

    def mean_sink(self) -> torch.Tensor:
        """[L, Hq] mean sink mass over query positions."""
        return self.sink.mean(-1)

    def fallback_text(self) -> str:
        rows = [f"SinkView: {len(self.layer_ids)} layers x {self.num_heads} heads, {self.num_tokens} tokens; "
                "mean sink mass per head:"]
        m = self.mean_sink()
        rows += [f"layer {i}: {' '.join(f'{float(x):.2f}' for x in m[n])}" for n, i in enumerate(self.layer_ids)]
        return "\n".join(rows)
