"""One interface for generation: ``Backend.generate(prompt, ...)`` streams token ids.

``prompt`` is a ``Conversation`` (rendered for an assistant turn) or token ids ending with
``<|start|>assistant``. The ids that come back are a Harmony completion: the first token follows
``<|start|>assistant`` (normally ``<|channel|>``), and the stream stops after ``<|call|>`` or
``<|return|>`` (or at ``max_new_tokens``).

``stream()`` is the one place generated tokens become ``TokenEvent``s: it returns a ``Turn`` that
yields one event per token as it comes (with the token's log-probability where the backend knows it),
can be cancelled between tokens, and afterwards holds the ``transcript`` and its ``stop_reason``.
``events()`` and ``complete()`` are shorthands over it.

Backends that see real token ids (the local model, a scripted replay) have ``token_level = True``.
Servers that only return text (OpenAI-compatible APIs) re-encode their text into Harmony tokens, so
the rest of the workbench sees one kind of stream; their ids are then not the model's own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from ..harmony import Conversation, StreamDecoder, TokenEvent, Transcript


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability under the model and, if asked for, the most likely
    alternatives at that step as ``(token id, logprob)``, best first."""

    logprob: float
    top: tuple[tuple[int, float], ...] = ()


class Turn:
    """One assistant completion as it is generated: iterate it for ``TokenEvent``s.

    ``logprobs[i]`` is event i's ``TokenLogprob`` (None where the backend does not know it).
    ``cancel()`` (from any thread) stops generation before the next token; ``close()`` also releases
    the backend's generator. After iteration, ``transcript`` is the decoded completion and
    ``stop_reason`` says how it ended (``Transcript.stop_reason``: return, call, end, length, empty).
    """

    def __init__(self, steps: Iterator[tuple[int, TokenLogprob | None]], decoder: StreamDecoder):
        self._steps, self.decoder = steps, decoder
        self.logprobs: list[TokenLogprob | None] = []
        self._cancel = threading.Event()

    def __iter__(self) -> Iterator[TokenEvent]:
        try:
            for token, logprob in self._steps:
                if self._cancel.is_set():
                    break
                event = self.decoder.push(token)
                self.logprobs.append(logprob)
                yield event
                if self._cancel.is_set():
                    break
        finally:
            self.close()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def close(self) -> None:
        close = getattr(self._steps, "close", None)
        if close is not None:
            close()

    @property
    def events(self) -> list[TokenEvent]:
        return self.decoder.events

    @property
    def tokens(self) -> list[int]:
        return [e.id for e in self.decoder.events]

    @property
    def transcript(self) -> Transcript:
        return self.decoder.finish()

    @property
    def stop_reason(self) -> str:
        return self.transcript.stop_reason

    def finish(self) -> Transcript:
        """Run to the end (if not yet) and return the transcript."""
        for _ in self:
            pass
        return self.transcript


class Backend:
    name = "backend"
    token_level = True
    constrainable = False  # steps() accepts a logits_processor (it sees the model's logits)

    def generate(
        self,
        prompt: Conversation | Sequence[int],
        *,
        max_new_tokens: int = 2048,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        reasoning_effort: str | None = None,
    ) -> Iterator[int]:
        raise NotImplementedError

    def steps(self, prompt: Conversation | Sequence[int], *, top_logprobs: int = 0,
              logits_processor: Callable | None = None, **options) -> Iterator[tuple[int, TokenLogprob | None]]:
        """``(token id, TokenLogprob or None)`` per generated token. Backends that see the model's
        distribution override this; ``logits_processor`` (constrained decoding) needs such a backend."""
        if logits_processor is not None:
            raise ValueError(f"{type(self).__name__} cannot constrain decoding (it does not see the logits)")
        for token in self.generate(prompt, **options):
            yield token, None

    def stream(self, prompt: Conversation | Sequence[int], *, channels=None, recipients=None, **options) -> Turn:
        """A ``Turn`` over ``steps(prompt, **options)``. The decoder checks channels and recipients
        against the conversation's (or the given ones)."""
        return Turn(self.steps(prompt, **options), decoder_for(prompt, channels, recipients))

    def generate_batch(self, prompts: Sequence[Conversation | Sequence[int]], *,
                       seeds: Sequence[int | None] | None = None, **options) -> list[list[int]]:
        """Token ids for several prompts, one list per prompt, prompt i sampled with ``seeds[i]``; the other
        ``options`` as for ``generate``. This default runs them one after the other; a backend that decodes
        a batch at once (``LocalBackend``) overrides it with the same results."""
        seeds = [None] * len(prompts) if seeds is None else list(seeds)
        if len(seeds) != len(prompts):
            raise ValueError(f"generate_batch: {len(seeds)} seeds for {len(prompts)} prompts")
        return [list(self.generate(p, seed=s, **options)) for p, s in zip(prompts, seeds)]

    def events(self, prompt: Conversation | Sequence[int], **options) -> Iterator[TokenEvent]:
        yield from self.stream(prompt, **options)

    def complete(self, prompt: Conversation | Sequence[int], **options) -> Transcript:
        return self.stream(prompt, **options).finish()


def decoder_for(prompt, channels=None, recipients=None) -> StreamDecoder:
    """The decoder for a completion of ``prompt`` (channels and recipients from a Conversation)."""
    if isinstance(prompt, Conversation):
        channels = channels or prompt.channels
        recipients = recipients if recipients is not None else (prompt.recipients or None)
    return StreamDecoder("assistant", channels=channels or "auto", recipients=recipients)


def prompt_tokens(prompt: Conversation | Sequence[int]) -> list[int]:
    """Token ids of a prompt: a Conversation is rendered for an assistant turn."""
    if isinstance(prompt, Conversation):
        return prompt.render("assistant")
    return [int(t) for t in prompt]
