"""Clean/corrupt prompt pairs for patching studies on nano: one addition, two questions a digit apart.

``addition_pair(a, b)`` writes ``a + b`` as the training data writes it (``data.solve``: system, user,
analysis, final channel, no extras) and cuts it just before the last token of the final answer; the corrupt
prompt does the same for ``b'``, b with its ones digit changed by one (b + 1, or b - 1 when b ends in 9).
o200k writes numbers in three-digit chunks, so the answers' last tokens differ (``3,471 + 1,791 = 5,262``
vs ``... = 5,263``: the tokens ``262`` and ``263``), and the two prompts have one length and differ only where
b's last chunk (and, in the working of higher efforts, its digits and the sum's) appears. ``Pair.metric`` is the logit
difference of the two answer tokens at the last position: the metric of activation and attribution patching.

>>> pair = addition_pair(3471, 1791)                                                        # doctest: +SKIP
>>> compare_with_patching(model, pair.clean, pair.corrupt, pair.metric, last_only=True)     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
        from ..harmony import encoding

        enc = encoding()
        return (f"Pair({self.questions[0]!r} -> {enc.decode([self.answer])!r} vs {self.questions[1]!r} -> "
                f"{enc.decode([self.corrupt_answer])!r}; {len(self.clean)} tokens, differ at {self.differ})")


def _cut(a: int, b: int, effort: str) -> tuple[list[int], int, str]:
    task = data.addition_task(a, b)
    ids, _ = data.tokens_and_mask(data.solve(task, effort, data.prompt(task, effort)))
    return ids[:-2], ids[-2], task.question  # ids[-1] is <|return|>, ids[-2] the answer's last chunk


def addition_pair(a: int, b: int, effort: str = "low") -> Pair:
    """The pair for ``a + b`` at ``effort`` (see the module docstring). Raises ValueError when the corrupt sum
    needs a token more or fewer (a carry into a new chunk, e.g. 999 + 0 vs 999 + 1)."""
    if a < 0 or b < 0:
        raise ValueError(f"the nano data adds non-negative numbers, not {a} and {b}")
    b2 = b - 1 if b % 10 == 9 else b + 1
    clean, answer, q = _cut(a, b, effort)
    corrupt, corrupt_answer, q2 = _cut(a, b2, effort)
    if len(clean) != len(corrupt):
        raise ValueError(f"{q!r} and {q2!r} render to {len(clean)} and {len(corrupt)} tokens: pick another pair")
    return Pair(torch.tensor(clean), torch.tensor(corrupt), answer, corrupt_answer, (q, q2))
