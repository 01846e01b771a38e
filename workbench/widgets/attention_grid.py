"""``AttentionGridView``: every head's attention pattern of one layer side by side, sink column first.

Reads ``blocks.{layer}.attn.probs`` [Hq,T,S] and ``blocks.{layer}.attn.sink_prob`` [Hq,T] (when absent,
1 - the row sums of probs) from a trace (any mapping). Sent as binary float32: ``probs`` [Hq,T,S] and
``sink_prob`` [Hq,T]. Each head is a small canvas of T rows and S + 1 columns: column 0 is the sink,
coloured 255 - p * (255 - orange (234, 88, 12)); columns 1.. are the keys, 255 - w * (255 - blue
(29, 78, 216)) (SinkView's colours). Click a head to enlarge it; hover a cell for query, key and weight.
"""

from __future__ import annotations

import torch
import traitlets

from ._base import WorkbenchWidget, as_bytes, token_labels, trace_layers, trace_tensor


class AttentionGridView(WorkbenchWidget):
    """All heads of ``layer`` (default: the first traced one) as a grid of attention patterns; ``tokens``
    label positions (default: the trace's own). ``selected``: the enlarged head."""

    _module = "attention_grid"

    layer = traitlets.Int(0).tag(sync=True)
    num_heads = traitlets.Int(0).tag(sync=True)
    num_tokens = traitlets.Int(0).tag(sync=True)
    num_keys = traitlets.Int(0).tag(sync=True)
    probs = traitlets.Bytes(b"").tag(sync=True)
    sink_prob = traitlets.Bytes(b"").tag(sync=True)
    selected = traitlets.Int(0).tag(sync=True)
    labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(self, trace, layer: int | None = None, tokens=None, *, batch: int = 0, selected: int = 0,
                 title: str = "", max_bytes: int = 64 << 20, **kwargs):
        layers = trace_layers(trace, "attn.probs")
        layer = layers[0] if layer is None else int(layer)
        if layer not in layers:
            raise KeyError(f"blocks.{layer}.attn.probs is not in the trace; it has layers {layers}")
        probs = trace_tensor(trace, f"blocks.{layer}.attn.probs", batch).float()
        H, T, S = probs.shape
        if probs.numel() * 4 > max_bytes:
            raise ValueError(f"layer {layer}'s patterns take {probs.numel() * 4 / 2**20:.0f} MiB (> max_bytes "
                             f"{max_bytes / 2**20:.0f} MiB): trace fewer tokens or raise max_bytes")
        name = f"blocks.{layer}.attn.sink_prob"
        sink = (trace_tensor(trace, name, batch).float() if name in trace else (1 - probs.sum(-1)).clamp_min(0))
        if tuple(sink.shape) != (H, T):
            raise ValueError(f"{name} {list(sink.shape)} does not match attn.probs [{H}, {T}, {S}]")
        self.attention, self.sink = probs, sink
        super().__init__(layer=layer, num_heads=H, num_tokens=T, num_keys=S, probs=as_bytes(probs, "float32"),
                         sink_prob=as_bytes(sink, "float32"), selected=min(max(int(selected), 0), H - 1),
                         labels=token_labels(getattr(trace, "tokens", None) if tokens is None else tokens, T, batch),
                         title=title, **kwargs)

    def fallback_text(self) -> str:
        means = self.sink.mean(-1)
        return (f"AttentionGridView: layer {self.layer}, {self.num_heads} heads, {self.num_tokens} queries x "
                f"{self.num_keys} keys; mean sink mass per head: {' '.join(f'{float(m):.2f}' for m in means)}")
