"""``RouterView``: which experts each token picked in each layer, how loaded each expert is, and the
router logits of a selected token.

Reads ``blocks.{i}.moe.expert_idx`` [T,k], ``blocks.{i}.moe.expert_weights`` [T,k] and (optional)
``blocks.{i}.moe.router_logits`` [T,E] from a trace (any mapping: ``model.run_with_trace(tokens)[1]``
or a dict). Arrays go to the browser as binary buffers: ``expert_idx`` int16 [L,T,k],
``expert_weights`` float32 [L,T,k], ``router_logits`` float32 [L,T,E] (empty when not traced).

Heatmap: x = token, y = layer; each layer row has k bands (pick 1 on top), coloured by expert
(hue = expert * 137.508 degrees, HSL saturation 65 %, lightness 50 %) and blended with white by the
pick's weight: colour = 255 - weight * (255 - expert colour).
"""

from __future__ import annotations

import torch
import traitlets

from ._base import WorkbenchWidget, as_bytes, token_labels, trace_layers, trace_tensor


class RouterView(WorkbenchWidget):
    """Expert routing of one forward pass. ``tokens``: ids, strings or a transcript, to label positions
    (default: the trace's own ``tokens``, as ``run_with_trace`` records them).

    ``selected = [layer_position, token]`` is the cell whose router logits are shown (click a cell).
    """

    _module = "router"

    layer_ids = traitlets.List(traitlets.Int()).tag(sync=True)
    num_tokens = traitlets.Int(0).tag(sync=True)
    top_k = traitlets.Int(0).tag(sync=True)
    num_experts = traitlets.Int(0).tag(sync=True)
    expert_idx = traitlets.Bytes(b"").tag(sync=True)
    expert_weights = traitlets.Bytes(b"").tag(sync=True)
    router_logits = traitlets.Bytes(b"").tag(sync=True)
    labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    selected = traitlets.List(traitlets.Int(), [0, 0]).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(self, trace, tokens=None, *, batch: int = 0, num_experts: int | None = None, title: str = "",
                 **kwargs):
        layers = trace_layers(trace, "moe.expert_idx")
        idx = torch.stack([trace_tensor(trace, f"blocks.{i}.moe.expert_idx", batch) for i in layers])
        weights = torch.stack([trace_tensor(trace, f"blocks.{i}.moe.expert_weights", batch) for i in layers])
        if weights.shape != idx.shape:
            raise ValueError(f"expert_weights {list(weights.shape)} and expert_idx {list(idx.shape)} differ")
        have_logits = all(f"blocks.{i}.moe.router_logits" in trace for i in layers)
        logits = (torch.stack([trace_tensor(trace, f"blocks.{i}.moe.router_logits", batch) for i in layers])
                  if have_logits else None)
        E = num_experts or (logits.shape[-1] if logits is not None else int(idx.max()) + 1)
        if int(idx.min()) < 0 or int(idx.max()) >= E:
            raise ValueError(f"expert_idx values {int(idx.min())}..{int(idx.max())} are outside 0..{E - 1}")
        L, T, k = idx.shape
        self.idx, self.weights, self.logits = idx.long(), weights.float(), None if logits is None else logits.float()
        super().__init__(
            layer_ids=layers, num_tokens=T, top_k=k, num_experts=E, title=title,
            expert_idx=as_bytes(idx, "int16"), expert_weights=as_bytes(weights, "float32"),
            router_logits=b"" if logits is None else as_bytes(logits, "float32"),
            labels=token_labels(getattr(trace, "tokens", None) if tokens is None else tokens, T, batch), selected=[0, max(T - 1, 0)], **kwargs)

    def expert_load(self) -> torch.Tensor:
        """[L, E] how many (token, pick) slots chose each expert in each layer."""
        L, T, k = self.idx.shape
        load = torch.zeros(L, self.num_experts, dtype=torch.long)
        return load.scatter_add_(1, self.idx.reshape(L, -1), torch.ones(L, T * k, dtype=torch.long))

    def fallback_text(self) -> str:
        load = self.expert_load()
        rows = [f"RouterView: {self.num_tokens} tokens, {len(self.layer_ids)} layers, top-{self.top_k} of "
                f"{self.num_experts} experts; picks per expert:"]
        rows += [f"layer {i}: {' '.join(str(int(c)) for c in load[n])}" for n, i in enumerate(self.layer_ids)]
        return "\n".join(rows)
