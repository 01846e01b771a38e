"""One interface for generation: ``Backend.generate(prompt, ...)`` streams token ids.

``prompt`` is a ``Conversation`` (rendered for an assistant turn) or token ids ending with
``<|start|>assistant``. The ids that come back are a Harmony completion: the first token follows
``<|start|>assistant`` (normally ``<|channel|>``), and the stream stops after ``<|call|>`` or
``<|return|>`` (or at ``max_new_tokens``). ``events()`` decodes the same stream into ``TokenEvent``s
and ``complete()`` into a ``Transcript``.

Backends that see real token ids (the local model, a scripted replay) have ``token_level = True``.
Servers that only return text (OpenAI-compatible APIs) re-encode their text into Harmony tokens, so
the rest of the workbench sees one kind of stream; their ids are then not the model's own.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from ..harmony import Conversation, StreamDecoder, TokenEvent, Transcript


class Backend:
    name = "backend"
    token_level = True

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

    def events(self, prompt: Conversation | Sequence[int], **options) -> Iterator[TokenEvent]:
        decoder = _decoder_for(prompt)
        for token in self.generate(prompt, **options):
            yield decoder.push(token)

    def complete(self, prompt: Conversation | Sequence[int], **options) -> Transcript:
        decoder = _decoder_for(prompt)
        for token in self.generate(prompt, **options):
            decoder.push(token)
        return decoder.finish()


def _decoder_for(prompt) -> StreamDecoder:
    if isinstance(prompt, Conversation):
        return StreamDecoder("assistant", channels=prompt.channels, recipients=prompt.recipients or None)
    return StreamDecoder("assistant")


def prompt_tokens(prompt: Conversation | Sequence[int]) -> list[int]:
    """Token ids of a prompt: a Conversation is rendered for an assistant turn."""
    if isinstance(prompt, Conversation):
        return prompt.render("assistant")
    return [int(t) for t in prompt]
