"""``LocalBackend``: the workbench's own model, streaming real token ids (the full token-level view).

>>> backend = LocalBackend(load_model(make_tiny_checkpoint(tmp)), constrained=True)   # doctest: +SKIP
>>> backend.complete(Conversation.new().user("Hi"), max_new_tokens=40, seed=0)      # doctest: +SKIP

``constrained=True`` adds a ``HarmonyConstraint`` built from the conversation's channels and tools,
so even a small random model writes well-formed Harmony. Each call keeps the generated steps (token,
logprob, position, and activations if ``trace_names`` was given) in ``last_steps``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..harmony import Conversation, HarmonyConstraint
from ..harmony import tokens as T
from .base import Backend, TokenLogprob, prompt_tokens


class LocalBackend(Backend):
    name = "local"
    token_level = True
    constrainable = True

    def __init__(self, model, *, constrained: bool = False, max_content_tokens: int | None = None,
                 trace_names=None, device: str = "cpu"):
        if isinstance(model, (str, Path)):
            from ..model import load_model

            model = load_model(model, device=device)
        self.model = model
        self.constrained = constrained
        self.max_content_tokens = max_content_tokens
        self.trace_names = trace_names
        self.last_steps: list = []

    def processor(self, prompt: Conversation | Sequence[int]) -> HarmonyConstraint | None:
        if not self.constrained:
            return None
        if isinstance(prompt, Conversation):
            return HarmonyConstraint.from_conversation(prompt, max_content_tokens=self.max_content_tokens)
        return HarmonyConstraint(max_content_tokens=self.max_content_tokens)

    def generate(self, prompt: Conversation | Sequence[int], *, max_new_tokens: int = 2048, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int | None = None, reasoning_effort: str | None = None) -> Iterator[int]:
        self.last_steps = []
        for step in self._generate(prompt, max_new_tokens, temperature, top_p, seed, reasoning_effort,
                                   self.processor(prompt), self.trace_names):
            self.last_steps.append(step)
            yield step.token

    def steps(self, prompt: Conversation | Sequence[int], *, top_logprobs: int = 0,
              logits_processor: Callable | None = None, max_new_tokens: int = 2048, temperature: float = 1.0,
              top_p: float = 1.0, seed: int | None = None, reasoning_effort: str | None = None):
        """Tokens with their log-probabilities (and the ``top_logprobs`` best alternatives, from the raw
        logits). ``logits_processor`` replaces the backend's own constraint for this call. Thread-safe:
        unlike ``generate`` it keeps nothing on the backend, so one model can serve several requests."""
        import torch

        processor = logits_processor if logits_processor is not None else self.processor(prompt)
        tops: list[tuple[tuple[int, float], ...]] = []
        if top_logprobs:
            inner = processor

            def processor(generated, logits):  # sees the raw logits [V] of each step before sampling
                values, ids = torch.topk(torch.log_softmax(logits.float(), dim=-1), top_logprobs)
                tops.append(tuple(zip(ids.tolist(), values.tolist())))
                return inner(generated, logits) if inner is not None else logits
        for i, step in enumerate(self._generate(prompt, max_new_tokens, temperature, top_p, seed, reasoning_effort,
                                                processor, None)):
            yield step.token, TokenLogprob(step.logprob, tops[i] if top_logprobs else ())

    def _generate(self, prompt, max_new_tokens, temperature, top_p, seed, reasoning_effort, processor, trace_names):
        from ..generate import generate

        if reasoning_effort is not None and isinstance(prompt, Conversation) and prompt.reasoning_effort != reasoning_effort:
            prompt = prompt.copy().set_reasoning_effort(reasoning_effort)
        return generate(self.model, prompt_tokens(prompt), max_new_tokens=max_new_tokens, temperature=temperature,
                        top_p=top_p, seed=seed, stop_tokens=T.STOP_FOR_ACTIONS, logits_processor=processor,
                        trace_names=trace_names)

    def generate_batch(self, prompts: Sequence[Conversation | Sequence[int]], *,
                       seeds: Sequence[int | None] | None = None, max_new_tokens: int = 2048, temperature: float = 1.0,
                       top_p: float = 1.0, reasoning_effort: str | None = None) -> list[list[int]]:
        """Several prompts decoded as one batch (``workbench.generate`` with left padding), each with its own
        seed, Harmony constraint and stop: the same ids as ``generate`` gives each prompt alone, in less
        time (one forward step serves every sequence). ``last_steps`` then holds one list of steps per prompt."""
        from ..generate import generate

        seeds = [None] * len(prompts) if seeds is None else list(seeds)
        if len(seeds) != len(prompts):
            raise ValueError(f"generate_batch: {len(seeds)} seeds for {len(prompts)} prompts")
        if not prompts:
            return []
        prompts = [p.copy().set_reasoning_effort(reasoning_effort) if reasoning_effort is not None and
                   isinstance(p, Conversation) and p.reasoning_effort != reasoning_effort else p for p in prompts]
        steps: list[list] = [[] for _ in prompts]
        for step in generate(self.model, [prompt_tokens(p) for p in prompts], max_new_tokens=max_new_tokens,
                             temperature=temperature, top_p=top_p, seed=seeds, stop_tokens=T.STOP_FOR_ACTIONS,
                             logits_processor=[self.processor(p) for p in prompts], trace_names=self.trace_names):
            steps[step.sequence].append(step)
        self.last_steps = steps
        return [[s.token for s in seq] for seq in steps]

    def __repr__(self) -> str:
        return f"LocalBackend({type(self.model).__name__}, constrained={self.constrained})"
