"""Token-by-token generation with a KV cache: ``generate(model, prompt_tokens, ...)`` yields tokens as they come.

>>> for tok in generate(model, prompt, max_new_tokens=20, temperature=0):   # doctest: +SKIP
...     print(tok.token, tok.logprob)

One prompt (a list of ids or a 1-D tensor) or a batch (a list of prompts of any lengths, or a 2-D
tensor): the prompts are left-padded into one batch, prefilled in one forward pass (logits for the last
position only), then every step decodes one token per sequence with the cache. Each yielded
``GeneratedToken`` names its ``sequence``; a sequence stops on its own stop tokens, and finished
sequences leave the batch. Each sequence equals that prompt generated alone (same seed, same tokens).

Sampling: ``logits_processor`` first (constrained decoding), then temperature (0 = greedy), then
nucleus (top-p), drawn from a ``torch.Generator`` per sequence seeded by ``seed``: the same seed gives
the same tokens. ``hooks`` (interventions, e.g. ``ban_experts`` or ``steer``) apply at every forward
step, prefill and decode; ``trace_names`` attaches each step's activations to its tokens.

Long prompts: without hooks a prompt goes through the cache in chunks (``model._PREFILL_CHUNK`` tokens),
so memory stays bounded; with hooks the prompt is one forward call (hooks see it whole).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch

from .hooks import token_axis
from .model import Names

Tensor = torch.Tensor
LogitsProcessor = Callable[[list, Tensor], Tensor]


@dataclasses.dataclass(frozen=True)
class GeneratedToken:
    """One generated token.

    ``token``: the id. ``logprob``: its log-probability under the model's own distribution at that step
    (log-softmax of the raw logits, before the processor, temperature and top-p). ``position``: its
    index in its whole sequence (prompt length + i). ``trace``: when ``trace_names`` was given, the
    activations of the forward step that predicted this token, restricted to its sequence and to the
    position that predicted it: a dict name -> tensor shaped as the hook point with T = 1 (e.g.
    ``expert_idx`` [1, k], ``sink_prob`` [Hq, 1], ``scores`` [Hq, 1, S]); else None. ``sequence``: which
    prompt of a batch it continues (0 for a single prompt).
    """

    token: int
    logprob: float
    position: int
    trace: dict | None = None
    sequence: int = 0


def sample_rows(logits: Tensor, *, temperature: float = 1.0, top_p: float = 1.0,
                generators: Sequence[torch.Generator | None] | None = None) -> list[int]:
    """One token id per row of logits [B, V], each row drawn with its own generator (see ``sample``)."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1).tolist()
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass strictly above each token
        sorted_p[before >= top_p] = 0.0  # keep a token while the mass above it is still below top_p
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    # Inverse-CDF draw: one uniform u per row, the first token whose cumulative probability exceeds
    # u * total. Same distribution as torch.multinomial, ~20x faster over a 201k vocabulary on a CPU.
    cdf = torch.cumsum(probs, dim=-1)
    gens = generators if generators is not None else [None] * logits.shape[0]
    u = torch.cat([torch.rand((1,), generator=g, device=probs.device, dtype=cdf.dtype) for g in gens])
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
    return idx.clamp_max(probs.shape[-1] - 1).tolist()


def sample(logits: Tensor, *, temperature: float = 1.0, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> int:
    """One token id from logits [V]: greedy at temperature 0, else softmax(logits / T) cut to the smallest
    set of most likely tokens whose probability reaches ``top_p``."""
    return sample_rows(logits[None], temperature=temperature, top_p=top_p, generators=[generator])[0]


def _slice_last(trace, row: int) -> dict:
    """Restrict each activation of one step (batched [rows, ...]) to one sequence's ``row`` and its last
    query position (T = 1); a single prompt's trace keeps the unbatched shapes."""
    out = {}
    for name, t in trace.items():
        t = t[row]
        axis = token_axis(name)
        out[name] = t.narrow(axis, t.shape[axis] - 1, 1).clone()  # logits (last_only) already have T = 1
    return out


def _as_prompts(prompt_tokens) -> tuple[list[list[int]], bool]:
    """(prompts, batched): one prompt of ids, or a batch of them."""
    if isinstance(prompt_tokens, Tensor):
        if prompt_tokens.dim() not in (1, 2):
            raise ValueError(f"prompt tokens must be [T] or [B, T], got shape {list(prompt_tokens.shape)}")
        batched = prompt_tokens.dim() == 2
        rows = prompt_tokens.tolist() if batched else [prompt_tokens.tolist()]
    else:
        items = list(prompt_tokens)
        batched = bool(items) and all(isinstance(p, (Sequence, Tensor)) and not isinstance(p, str) for p in items)
        rows = [[int(t) for t in (p.tolist() if isinstance(p, Tensor) else p)] for p in items] if batched \
            else [[int(t) for t in items]]
    for i, r in enumerate(rows):
        if not r:
            where = f" (prompt {i} is empty)" if batched else ""
            raise ValueError(f"generate needs at least one prompt token{where}")
    return rows, batched


def _per_sequence(value, B: int, name: str, is_one: Callable[[object], bool]) -> list:
    """``value`` for every sequence: one value shared by all, or a list with one per sequence."""
    if is_one(value):
        return [value] * B
    values = list(value)
    if len(values) != B:
        raise ValueError(f"{name}: got {len(values)} values for {B} sequences (give one, or one per sequence)")
    return values


def generate(model, prompt_tokens, *, max_new_tokens: int = 256, temperature: float = 1.0, top_p: float = 1.0,
             seed: int | Sequence[int] | None = None, stop_tokens: Iterable[int] | Sequence[Iterable[int]] = (),
             logits_processor: LogitsProcessor | Sequence[LogitsProcessor] | None = None, trace_names: Names = None,
             hooks: Mapping | None = None, cuda_graph: bool | None = None) -> Iterator[GeneratedToken]:
    """Yield up to ``max_new_tokens`` tokens per sequence continuing ``prompt_tokens``, one at a time.

    ``prompt_tokens``: ids [T] (one prompt) or a batch (a list of id lists, any lengths, or [B, T]); a
    batch yields each step's tokens in sequence order, each with its ``sequence`` index. ``seed``: an
    int (a batch's sequence i uses seed + i) or one per sequence; None draws from torch's global RNG.
    A token in ``stop_tokens`` (shared, or one collection per sequence) is yielded and then its sequence
    stops. ``logits_processor(generated_ids, logits)`` (shared, or one per sequence) gets the ids that
    sequence generated so far (a fresh list) and fp32 logits [V], and returns logits (e.g. -inf for
    forbidden tokens). ``trace_names`` (names, globs or a predicate) attaches each step's activations to
    the tokens (see ``GeneratedToken.trace``); e.g. ``["blocks.*.moe.expert_idx", "blocks.*.attn.sink_prob"]``
    for router picks and sink mass per generated token. ``hooks`` ({name or glob: fn}, as for
    ``model.run_with_hooks``; e.g. ``workbench.interventions.ban_experts`` or ``steer``) run at every
    forward step: the prefill (all prompt positions) and each decode step (T = 1; so ``positions=`` of an
    intervention index the positions of each call). With a batch, hooks see [B, ...] tensors.
    ``cuda_graph``: decode by replaying one CUDA graph per token (``workbench.decode``): None = when the
    model can (on a GPU, Triton backend, MXFP4 experts, no hooks); True = insist (an error says why
    not); False = never. Graph decoding keeps finished sequences in the batch (their tokens unseen).
    """
    prompts, batched = _as_prompts(prompt_tokens)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    B = len(prompts)
    seeds = _per_sequence(seed, B, "seed", lambda v: v is None or isinstance(v, int))
    if batched and isinstance(seed, int):
        seeds = [seed + i for i in range(B)]
    stop_tokens = [s if isinstance(s, int) else list(s) for s in stop_tokens]
    stops = _per_sequence(stop_tokens, B, "stop_tokens",
                          lambda v: not batched or all(isinstance(t, int) for t in v))
    stops = [{int(t) for t in s} for s in stops]
    processors = _per_sequence(logits_processor, B, "logits_processor", lambda v: v is None or callable(v))
    generators = [torch.Generator().manual_seed(s) if s is not None else None for s in seeds]
    return _generate(model, prompts, batched, max_new_tokens, temperature, top_p, generators, stops, processors,
                     trace_names, hooks, cuda_graph)


def _left_pad(prompts: list[list[int]], device) -> tuple[Tensor, Tensor | None]:
    T = max(len(p) for p in prompts)
    tokens = torch.tensor([[0] * (T - len(p)) + p for p in prompts], dtype=torch.long, device=device)
    if all(len(p) == T for p in prompts):
        return tokens, None
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts], dtype=torch.bool, device=device)
    return tokens, mask


class _EagerSteps:
    """Forward steps through a growable cache; finished sequences leave the batch."""

    def __init__(self, model, batched, B, trace_names, hooks):
        self.model, self.batched, self.trace_names, self.hooks = model, batched, trace_names, hooks
        self.cache = model.new_cache(B)

    def __call__(self, inputs: Tensor, mask: Tensor | None):
        """inputs [rows, T] -> (last logits [rows, V] fp32 on the CPU, trace or None)."""
        model, x = self.model, inputs if self.batched else inputs[0]
        m = mask if self.batched or mask is None else mask[0]
        trace = None
        if self.trace_names is not None:
            logits, trace = model.run_with_trace(x, self.trace_names, hooks=self.hooks, cache=self.cache,
                                                 last_only=True, attention_mask=m)
        elif self.hooks:
            logits = model.run_with_hooks(x, self.hooks, cache=self.cache, last_only=True, attention_mask=m)
        else:
            logits = model(x, self.cache, last_only=True, attention_mask=m)
        trace = None if trace is None else trace if self.batched else {n: t[None] for n, t in trace.items()}
        return (logits if self.batched else logits[None])[:, -1].float().cpu(), trace

    def keep(self, rows: list[int]) -> None:
        self.cache.select(torch.tensor(rows, device=self.model.device))


class _GraphSteps:
    """Decode steps replayed from a CUDA graph (``workbench.decode``); the batch keeps its rows, finished
    ones decode on unseen."""

    def __init__(self, model, B, max_len, trace_names, graph):
        from .decode import decoder_for

        self.decoder = decoder_for(model, B, max_len, trace_names, graph)
        self.decoder.reset()  # (a reused decoder still holds the previous generation)
        self.rows = list(range(B))
        self.last = torch.zeros(B, dtype=torch.long, device=model.device)

    def __call__(self, inputs: Tensor, mask: Tensor | None):
        d = self.decoder
        if d.cache.length == 0:  # the prompts
            logits = d.prefill(inputs, mask)
        else:
            self.last[self.rows] = inputs[:, -1]
            logits = d.step(self.last)
        trace = d.trace() if d.run is not None else None
        sel = torch.tensor(self.rows, device=logits.device)
        trace = None if trace is None else {n: t[sel] for n, t in trace.items()}
        return logits[sel].float().cpu(), trace

    def keep(self, rows: list[int]) -> None:
        self.rows = [self.rows[r] for r in rows]


def _use_graph(model, cuda_graph, hooks, trace_names) -> bool:
    from .decode import graph_unavailable, slow_points

    if cuda_graph is False:
        return False
    slow = slow_points(model, trace_names)
    why = (graph_unavailable(model) or ("hooks that replace activations run eagerly" if hooks else None)
           or (f"tracing {slow[0]!r} needs the eager path" if slow else None))
    if why and cuda_graph:
        raise ValueError(f"cuda_graph=True: {why}")
    return why is None


def _generate(model, prompts, batched, max_new_tokens, temperature, top_p, generators, stops, processors,
              trace_names, hooks, cuda_graph):
    B = len(prompts)
    if _use_graph(model, cuda_graph, hooks, trace_names):
        step = _GraphSteps(model, B, max(len(p) for p in prompts) + max_new_tokens, trace_names, True)
    else:
        step = _EagerSteps(model, batched, B, trace_names, hooks)
    live = list(range(B))  # the sequence held in each row
    generated: list[list[int]] = [[] for _ in range(B)]
    inputs, mask = _left_pad(prompts, model.device)
    with torch.no_grad():
        for n in range(max_new_tokens):
            raw, trace = step(inputs, mask)
            logprobs = torch.log_softmax(raw, dim=-1)
            scores = raw
            if any(p is not None for p in processors):
                scores = raw.clone()
                for r, i in enumerate(live):
                    if processors[i] is not None:
                        scores[r] = _processed(processors[i], generated[i], raw[r])
            tokens = sample_rows(scores, temperature=temperature, top_p=top_p,
                                 generators=[generators[i] for i in live])
            keep = []
            for r, (i, token) in enumerate(zip(live, tokens)):
                step_trace = _slice_last(trace, r) if trace is not None else None
                yield GeneratedToken(token, float(logprobs[r, token]), len(prompts[i]) + n, step_trace, i)
                if token not in stops[i]:
                    generated[i].append(token)
                    keep.append(r)
            if not keep:
                return
            if len(keep) < len(live):  # finished sequences leave the batch
                step.keep(keep)
                live = [live[r] for r in keep]
            inputs = torch.tensor([[generated[i][-1]] for i in live], dtype=torch.long, device=model.device)
            mask = None


def _processed(processor: LogitsProcessor, generated: list[int], raw: Tensor) -> Tensor:
    scores = processor(list(generated), raw.clone())
    if not isinstance(scores, Tensor) or scores.shape != raw.shape:
        raise ValueError(f"logits_processor must return a tensor of shape {list(raw.shape)}")
    if not torch.isfinite(scores).any():
        raise ValueError("logits_processor masked every token")
    return scores
