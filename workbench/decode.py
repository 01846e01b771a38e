"""Whole-model decode in one CUDA graph: a static KV cache, device-side positions, capture once, replay per token.

>>> dec = StaticDecoder(model, batch=8, max_len=4096)         # model on CUDA, backend="triton"  # doctest: +SKIP
>>> logits = dec.prefill(prompts_tokens, attention_mask)      # eager, into the static cache     # doctest: +SKIP
>>> logits = dec.step(next_tokens)                            # one graph replay per token        # doctest: +SKIP

A decode step launches a few kernels per layer (norms, projections, RoPE, the cache write, attention,
router, two MoE kernels); at batch 1 on a fast GPU launching them costs more than running them. A CUDA
graph records the whole step once and replays it with one launch. That needs a step that reads no
host-side number and allocates nothing new per token: ``Model.decode_step`` writes the new keys at the
cache's device-side column (``KVCache.col``), takes positions from ``KVCache.next_pos``, attends over the
whole preallocated cache by position (empty slots are at -1 and skipped by the Triton kernel before
their keys are read), and advances both counters on the device. ``max_len`` fixes the full layers'
room; sliding layers are rings of their window.

Graphs are captured once per (model, batch, max_len, trace names) and kept (``decoder_for``):
``generate(..., cuda_graph=True)`` reuses them across calls (``reset`` empties the cache in place).

Traces: ``trace_names`` (router logits, picks, weights, sink mass, residuals: any point that does not
switch to a slower path) are recorded inside the graph: the kept tensors are graph buffers, copied out
after each replay (``trace()``), so a traced step costs a few small copies. Hooks that *replace*
activations (interventions) and the eager-only points (attn.scores / attn.probs, moe.act /
moe.expert_out) cannot live in a graph: ``generate`` then decodes eagerly, kernel by kernel, which on a
GPU costs the launch overhead the graph removes (``benchmarks/gpu.py`` measures both).

``graph=False`` runs the very same static step without capturing: on a CPU (where CUDA graphs do not
exist) that exercises and tests every part of the graph path but the capture itself.
"""

from __future__ import annotations

import torch

from .hooks import ATTN_INTERNALS, MOE_PER_PICK, Names
from .model import HookRun

Tensor = torch.Tensor


def graph_unavailable(model) -> str | None:
    """None when ``model``'s decode step can be captured in a CUDA graph here, else why not (in words)."""
    if model.device.type != "cuda":
        return (f"CUDA graphs need the model on a CUDA GPU (it is on {model.device}); "
                "graph=False runs the same static step without capturing")
    if not getattr(model.backend, "graph_safe", False):
        name = getattr(model.backend, "name", type(model.backend).__name__)
        return (f"backend {name!r} is not graph-safe (its expert path reads expert counts on the host); "
                "load the model with backend='triton'")
    if not model.block[0].mlp.experts.is_mxfp4:
        return "the Triton experts need MXFP4 weights; this checkpoint's experts are dense (torch fallback)"
    return None


def slow_points(model, trace_names: Names) -> list[str]:
    """The hook points ``trace_names`` selects that switch to a slower path (attn.scores / attn.probs,
    moe.act / moe.expert_out): a static decode step cannot record them."""
    if trace_names is None:
        return []
    keep = HookRun(model.hook_names(), keep=trace_names).keep
    return [n for n in model.hook_names() if keep(n) and n.split(".", 2)[-1] in (*ATTN_INTERNALS, *MOE_PER_PICK)]


class StaticDecoder:
    """Decode ``batch`` sequences of up to ``max_len`` columns (prompt + new tokens) through a static cache.

    ``graph``: True captures the decode step in a CUDA graph (raises, saying why, where that cannot be
    done); False runs it eagerly; None captures when possible. ``trace_names``: hook points to record at
    every step (see the module docstring for which may be).
    """

    def __init__(self, model, batch: int, max_len: int, *, trace_names: Names = None, graph: bool | None = None):
        self.model, self.batch, self.max_len = model, batch, max_len
        why = graph_unavailable(model)
        if graph and why:
            raise RuntimeError(f"cannot capture a CUDA graph: {why}")
        self.graph = why is None if graph is None else graph
        self.run = None
        if trace_names is not None:
            slow = slow_points(model, trace_names)
            if slow:
                raise ValueError(f"{slow[0]!r} needs a slower path that a static decode step does not take; "
                                 "trace it with the eager generate (cuda_graph=False)")
            self.run = HookRun(model.hook_names(), keep=trace_names, batched=True)
        self.cache = model.new_cache(batch, max_len=max_len)
        self.tokens = torch.zeros((batch, 1), dtype=torch.long, device=model.device)
        self._graph = None
        self._logits: Tensor | None = None
        self._prefill_trace: dict | None = None
        if self.graph:
            self._capture()

    def _step(self) -> Tensor:
        return self.model.decode_step(self.tokens, self.cache, self.run)

    def _capture(self) -> None:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(s):
            for _ in range(2):  # compile and warm the kernels outside the capture
                self._step()
        torch.cuda.current_stream().wait_stream(s)
        self._graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self._graph):
            self._logits = self._step()
        self.reset()

    def reset(self) -> None:
        """Empty the cache in place (the captured graph stays valid)."""
        self.cache.reset()

    def prefill(self, tokens: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Prompts [B, T] (left-padded with ``attention_mask``) into the emptied cache, eagerly; returns the
        last position's logits [B, V]."""
        self.reset()
        with torch.no_grad():
            if self.run is None:
                logits = self.model(tokens, self.cache, last_only=True, attention_mask=attention_mask)
            else:
                logits, trace = self.model.run_with_trace(tokens, self.run.keep, cache=self.cache, last_only=True,
                                                          attention_mask=attention_mask)
                self._prefill_trace = dict(trace)
        return logits[:, -1]

    def step(self, tokens: Tensor) -> Tensor:
        """One token per sequence, tokens [B] -> logits [B, V] (a graph buffer when captured: overwritten by
        the next step; clone it to keep it)."""
        if self.cache.length >= self.max_len:
            raise ValueError(f"the static cache holds max_len={self.max_len} columns; all are used")
        self._prefill_trace = None
        self.tokens.copy_(tokens.view(self.batch, 1))
        if self._graph is not None:
            self._graph.replay()
            logits = self._logits
        else:
            with torch.no_grad():
                logits = self._step()
        self.cache.length += 1
        return logits[:, -1]

    def trace(self) -> dict[str, Tensor]:
        """The traced activations of the latest step or prefill (copies, batched [B, ...])."""
        if self._prefill_trace is not None:
            return self._prefill_trace
        return {} if self.run is None else {n: t.clone() for n, t in self.run.store.items()}

    def __repr__(self) -> str:
        return (f"StaticDecoder(batch={self.batch}, max_len={self.max_len}, "
                f"{'CUDA graph' if self._graph is not None else 'eager'}, length={self.cache.length})")


def decoder_for(model, batch: int, max_len: int, trace_names: Names = None, graph: bool | None = None) -> StaticDecoder:
    """The model's decoder for (batch, max_len, trace_names), made (and captured) on first use, then reused.
    ``max_len`` is rounded up to a multiple of 256 so nearby lengths share one graph."""
    max_len = -(-max_len // 256) * 256
    key = (batch, max_len, repr(trace_names), graph)
    decoders = model.__dict__.setdefault("_static_decoders", {})  # (insertion order = least recently used first)
    dec = decoders.pop(key, None) or StaticDecoder(model, batch, max_len, trace_names=trace_names, graph=graph)
    decoders[key] = dec
    while len(decoders) > _KEEP_DECODERS:  # each holds a whole cache: keep a few
        decoders.pop(next(iter(decoders)))
    return dec


_KEEP_DECODERS = 8  # e.g. one per batch size 1..8
