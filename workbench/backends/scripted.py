"""``ScriptedBackend``: replays prepared token sequences, one per ``generate`` call (for tests and demos).

>>> backend = ScriptedBackend(["<|channel|>final<|message|>Hello!<|return|>"])
>>> backend.complete([200006, 173781]).final
'Hello!'

A script item is a list of token ids or Harmony text (encoded with special tokens allowed). Each
call records the prompt's token ids in ``prompts`` so tests can check what the model was shown.
Like a real model, a replay stops after the first ``<|call|>`` or ``<|return|>``.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

from ..harmony import Conversation, encoding
from ..harmony import tokens as T
from .base import Backend, prompt_tokens


class ScriptExhausted(RuntimeError):
    """generate() was called more often than the script has replies."""


class ScriptedBackend(Backend):
    name = "scripted"

    def __init__(self, script: Iterable[Sequence[int] | str]):
        enc = encoding()
        self.script = [enc.encode(s, allowed_special="all") if isinstance(s, str) else list(s) for s in script]
        self.prompts: list[list[int]] = []
        self.options: list[dict] = []

    def generate(self, prompt: Conversation | Sequence[int], *, max_new_tokens: int = 2048, **options) -> Iterator[int]:
        n = len(self.prompts)
        if n >= len(self.script):
            raise ScriptExhausted(f"the script has {len(self.script)} replies; generate() was called {n + 1} times")
        self.prompts.append(prompt_tokens(prompt))
        self.options.append({"max_new_tokens": max_new_tokens, **options})
        for i, token in enumerate(self.script[n][:max_new_tokens]):
            yield token
            if token in T.STOP_FOR_ACTIONS:
                return

    def __repr__(self) -> str:
        return f"ScriptedBackend({len(self.script)} replies, {len(self.prompts)} used)"
