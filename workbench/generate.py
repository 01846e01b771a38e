"""Token-by-token generation with a KV cache: ``generate(model, prompt_tokens, ...)`` yields tokens as they come.

>>> for tok in generate(model, prompt, max_new_tokens=20, temperature=0):   # doctest: +SKIP
...     print(tok.token, tok.logprob)

The prompt is processed in one forward pass (prefill, logits for its last position only); each new
token is then one cached step. Sliding-window layers keep only their window of keys. Sampling:
``logits_processor`` first (constrained decoding), then temperature (0 = greedy), then nucleus (top-p),
drawn from a ``torch.Generator`` seeded by ``seed``: the same seed gives the same tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, Sequence

import torch

from .model import Names
from .hooks import token_axis

Tensor = torch.Tensor
LogitsProcessor = Callable[[list, Tensor], Tensor]


@dataclasses.dataclass(frozen=True)
class GeneratedToken:
    """One generated token.

    ``token``: the id. ``logprob``: its log-probability under the model's own distribution at that step
    (log-softmax of the raw logits, before the processor, temperature and top-p). ``position``: its
    index in the whole sequence (prompt length + i). ``trace``: when ``trace_names`` was given, the
    activations of the forward step that predicted this token, restricted to the position that
    predicted it: a dict name -> tensor shaped as the hook point with T = 1 (e.g. ``expert_idx`` [1, k],
    ``sink_prob`` [Hq, 1], ``scores`` [Hq, 1, S]); else None.
    """

    token: int
    logprob: float
    position: int
    trace: dict | None = None


def sample(logits: Tensor, *, temperature: float = 1.0, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> int:
    """One token id from logits [V]: greedy at temperature 0, else softmax(logits / T) cut to the smallest
    set of most likely tokens whose probability reaches ``top_p``."""
    logits = logits.float()
    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass strictly above each token
        sorted_p[before >= top_p] = 0.0  # keep a token while the mass above it is still below top_p
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    # Inverse-CDF draw: one uniform u, the first token whose cumulative probability exceeds u * total.
    # Same distribution as torch.multinomial, ~20x faster over a 201k vocabulary on a CPU.
    cdf = torch.cumsum(probs, dim=-1)
    u = torch.rand((1,), generator=generator, device=probs.device, dtype=cdf.dtype) * cdf[-1]
    return min(int(torch.searchsorted(cdf, u, right=True)), probs.shape[-1] - 1)


def _slice_last(trace, T: int) -> dict:
    """Restrict each activation of one (unbatched) step to its last query position (T = 1)."""
    out = {}
    for name, t in trace.items():
        axis = token_axis(name)
        out[name] = t.narrow(axis, t.shape[axis] - 1, 1).clone()  # logits (last_only) already have T = 1
    return out


def generate(model, prompt_tokens: Sequence[int] | Tensor, *, max_new_tokens: int = 256, temperature: float = 1.0,
             top_p: float = 1.0, seed: int | None = None, stop_tokens: Iterable[int] = (),
             logits_processor: LogitsProcessor | None = None, trace_names: Names = None) -> Iterator[GeneratedToken]:
    """Yield up to ``max_new_tokens`` tokens continuing ``prompt_tokens``, one at a time.

    A token in ``stop_tokens`` is yielded and then generation stops. ``logits_processor(generated_ids,
    logits)`` gets the ids generated so far (a fresh list) and fp32 logits [V], and returns logits
    (e.g. -inf for forbidden tokens). ``trace_names`` (names, globs or a predicate) attaches each step's
    activations to the tokens (see ``GeneratedToken.trace``); e.g. ``["blocks.*.moe.expert_idx",
    "blocks.*.attn.sink_prob"]`` for router picks and sink mass per generated token.
    """
    prompt = torch.as_tensor(prompt_tokens, dtype=torch.long).reshape(-1)
    if prompt.numel() == 0:
        raise ValueError("generate needs at least one prompt token")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    stops = {int(t) for t in stop_tokens}
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return _generate(model, prompt, max_new_tokens, temperature, top_p, generator, stops, logits_processor,
                     trace_names)


def _generate(model, prompt, max_new_tokens, temperature, top_p, generator, stops, processor, trace_names):
    cache = model.new_cache()
    generated: list[int] = []
    inputs = prompt
    with torch.no_grad():
        for step in range(max_new_tokens):
            if trace_names is not None:
                logits, trace = model.run_with_trace(inputs, trace_names, cache=cache, last_only=True)
                step_trace = _slice_last(trace, inputs.shape[0])
            else:
                logits, step_trace = model(inputs, cache, last_only=True), None
            raw = logits[-1].float().cpu()
            logprobs = torch.log_softmax(raw, dim=-1)
            scores = raw
            if processor is not None:
                scores = processor(list(generated), raw.clone())
                if not isinstance(scores, Tensor) or scores.shape != raw.shape:
                    raise ValueError(f"logits_processor must return a tensor of shape {list(raw.shape)}")
                if not torch.isfinite(scores).any():
                    raise ValueError("logits_processor masked every token")
            token = sample(scores, temperature=temperature, top_p=top_p, generator=generator)
            yield GeneratedToken(token, float(logprobs[token]), prompt.numel() + step, step_trace)
            if token in stops:
                return
            generated.append(token)
            inputs = torch.tensor([token], dtype=torch.long)
