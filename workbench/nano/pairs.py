"""Clean/corrupt prompt pairs for patching studies on nano: one addition, two questions a digit apart.

``addition_pair(a, b, effort, at=...)`` writes ``a + b`` as the training data writes it (``data.solve``: system,
user, analysis, final channel, no extras) and cuts it before the token the model is to predict; the corrupt
prompt does the same for ``b'``, b with its ones digit changed by one (b + 1, or b - 1 when b ends in 9). Where:

- ``at="ones"`` (high effort only): just after the ``=`` of the working's ones column (``ones 5+1+0=``): the
  next token is that column's digit sum (``6`` vs ``7``), the arithmetic the model really does;
- ``at="answer"``: before the last token of the final answer (o200k writes numbers in three-digit chunks:
  ``3,471 + 1,791 = 5,`` then ``262`` vs ``263``); at high effort the sum is already in the working above.

The two prompts have one length and differ only where b (and, above the cut, the sum) is written.
``Pair.metric`` is the logit difference of the two next tokens at the last position: the metric of activation
and attribution patching.

>>> pair = addition_pair(3471, 1791, "high", at="ones")                                     # doctest: +SKIP
>>> compare_with_patching(model, pair.clean, pair.corrupt, pair.metric, last_only=True)     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..harmony import encoding
from . import data


@dataclass(frozen=True)
class Pair:
    """Two prompts of one length (token ids [T]) and the token each should be followed by."""

    clean: torch.Tensor
    corrupt: torch.Tensor
    answer: int  # the clean prompt's next token
    corrupt_answer: int  # the corrupt prompt's next token
    questions: tuple[str, str]

    def metric(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [..., T, V] (or [..., 1, V] with last_only) -> logit[answer] - logit[corrupt_answer] at the last
        position: positive when the model prefers the clean answer."""
        return logits[..., -1, self.answer] - logits[..., -1, self.corrupt_answer]

    @property
    def differ(self) -> list[int]:
        """The positions where the two prompts differ."""
        return (self.clean != self.corrupt).nonzero()[:, 0].tolist()

    def __repr__(self) -> str:
        enc = encoding()
        return (f"Pair({self.questions[0]!r} -> {enc.decode([self.answer])!r} vs {self.questions[1]!r} -> "
                f"{enc.decode([self.corrupt_answer])!r}; {len(self.clean)} tokens, differ at {self.differ})")


def _cut(a: int, b: int, effort: str, at: str) -> tuple[list[int], int, str]:
    """(prompt ids, the id that follows, question) for ``a + b``."""
    task = data.addition_task(a, b)
    ids, _ = data.tokens_and_mask(data.solve(task, effort, data.prompt(task, effort)))
    if at == "answer":
        return ids[:-2], ids[-2], task.question  # ids[-1] is <|return|>, ids[-2] the answer's last chunk
    column = f"\n{data.PLACES[0]} {a % 10}+{b % 10}+0="
    enc = encoding()
    text = ""
    for i, t in enumerate(ids):
        text += enc.decode([t])
        if text.endswith(column):
            return ids[:i + 1], ids[i + 1], task.question
    raise ValueError(f"no {column.strip()!r} column in the {effort}-effort working of {task.question!r}")


def addition_pair(a: int, b: int, effort: str = "high", *, at: str = "ones") -> Pair:
    """The pair for ``a + b`` at ``effort``, cut ``at`` "ones" or "answer" (see the module docstring). Raises
    ValueError when the two do not line up (e.g. 999 + 0 vs 999 + 1: the corrupt sum needs one more token)."""
    if a < 0 or b < 0:
        raise ValueError(f"the nano data adds non-negative numbers, not {a} and {b}")
    if at not in ("ones", "answer") or (at == "ones" and effort != "high"):
        raise ValueError(f"at is 'ones' (high effort: the working's ones column) or 'answer', not {at!r} at {effort}")
    b2 = b - 1 if b % 10 == 9 else b + 1
    clean, answer, q = _cut(a, b, effort, at)
    corrupt, corrupt_answer, q2 = _cut(a, b2, effort, at)
    if len(clean) != len(corrupt):
        raise ValueError(f"{q!r} and {q2!r} render to {len(clean)} and {len(corrupt)} tokens: pick another pair")
    return Pair(torch.tensor(clean), torch.tensor(corrupt), answer, corrupt_answer, (q, q2))
