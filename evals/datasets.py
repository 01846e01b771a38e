"""Loaders for local copies of public evals in their published formats.

- ``gpqa(path)``: the GPQA CSV (``Question``, ``Correct Answer``, ``Incorrect Answer 1..3``, optional
  ``Record ID``). The four choices are shuffled per (seed, sample, repeat), so each repeat sees
  another order and a re-run sees the same one. Scored by the letter the model picks.
- ``aime(path)``: JSONL with a problem (``problem``/``question``) and an ``answer`` (or a ``solution``
  whose last ``\\boxed{}`` holds it). Scored on the model's last ``\\boxed{}``: as numbers exactly
  (AIME answers are integers), as text when the answer is not a number.
- ``jsonl(path, rel_tol=1e-6)``: any JSONL with ``question`` and ``answer`` and optional ``choices`` and
  ``id``. With choices the answer may be a letter, a 0-based index or the text of a choice, scored by
  the letter picked. Without, when every answer is one number it is scored with ``numeric``: exactly
  when every answer is an integer, else within ``rel_tol`` for the non-integer ones (the repr says
  which); other answers are compared as text (``exact``).

Bad files raise ``ValueError`` naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from . import scorers
from .tasks import Sample, Task

MC_INSTRUCTIONS = "Answer the multiple-choice question. End with a line of the form 'Answer: X', X being the letter."
BOXED_INSTRUCTIONS = "Put your final answer in \\boxed{}."


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            rows.append((n, {str(k).lower(): v for k, v in row.items()}))
    if not rows:
        raise ValueError(f"{path}: no records")
    return rows


def _field(path, n, row: dict, *names, required=True):
    for name in names:
        if row.get(name) not in (None, ""):
            return row[name]
    if required:
        raise ValueError(f"{path}:{n}: missing field {' or '.join(repr(x) for x in names)}")
    return None


def _stem(path: Path) -> str:
    return path.name.rsplit(".", 1)[0]


def gpqa(path, *, seed: int = 0, name: str | None = None) -> Task:
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        needed = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
        missing = [c for c in needed if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a GPQA CSV, missing columns {missing}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no records")
    items = []
    for i, row in enumerate(rows):
        for c in needed:
            if not (row.get(c) or "").strip():
                raise ValueError(f"{path}: row {i + 2}: empty {c!r}")
        sid = (row.get("Record ID") or "").strip() or str(i)
        items.append((sid, row["Question"].strip(), [row[c].strip() for c in needed[1:]]))

    def dataset(repeat: int) -> list[Sample]:
        out = []
        for sid, question, answers in items:
            order = list(range(4))
            random.Random(f"gpqa/{seed}/{sid}/{repeat}").shuffle(order)
            choices = [answers[j] for j in order]
            out.append(Sample(sid, question, scorers.LETTERS[order.index(0)], choices, {"order": order}))
        return out

    return Task(name or f"gpqa:{_stem(path)}", dataset, scorers.choice(), MC_INSTRUCTIONS)


def aime(path, *, seed: int = 0, name: str | None = None) -> Task:
    path = Path(path)
    samples = []
    for i, (n, row) in enumerate(_read_jsonl(path)):
        question = _field(path, n, row, "problem", "question")
        answer = _field(path, n, row, "answer", required=False)
        if answer is None:
            answer = scorers.extract_boxed(_field(path, n, row, "solution"))
            if answer is None:
                raise ValueError(f"{path}:{n}: no 'answer' and no \\boxed{{}} in 'solution'")
        sid = str(_field(path, n, row, "id", required=False) or i)
        samples.append(Sample(sid, str(question), str(answer).strip()))
    return Task(name or f"aime:{_stem(path)}", lambda repeat: samples, scorers.boxed(), BOXED_INSTRUCTIONS)


def jsonl(path, *, seed: int = 0, name: str | None = None, rel_tol: float = 1e-6) -> Task:
    path = Path(path)
    samples, has_choices = [], None
    for i, (n, row) in enumerate(_read_jsonl(path)):
        question, answer = _field(path, n, row, "question"), _field(path, n, row, "answer")
        choices = row.get("choices")
        if choices is not None:
            if not isinstance(choices, list) or len(choices) < 2 or len(choices) > 26:
                raise ValueError(f"{path}:{n}: 'choices' must be a list of 2 to 26 options")
            choices = [str(c) for c in choices]
            answer = _choice_letter(path, n, answer, choices)
        if has_choices is None:
            has_choices = choices is not None
        elif has_choices != (choices is not None):
            raise ValueError(f"{path}:{n}: either every record has 'choices' or none does")
        sid = str(_field(path, n, row, "id", required=False) or i)
        samples.append(Sample(sid, str(question), str(answer).strip(), choices))
    values = [scorers.read_number(s.target) for s in samples]
    if has_choices:
        scorer, instructions = scorers.choice(), MC_INSTRUCTIONS
    elif all(v is not None for v in values):
        integers = all(v.denominator == 1 for v in values)
        scorer, instructions = scorers.numeric(rel_tol=0.0 if integers else rel_tol), BOXED_INSTRUCTIONS
    else:
        scorer, instructions = scorers.exact(), BOXED_INSTRUCTIONS
    return Task(name or f"jsonl:{_stem(path)}", lambda repeat: samples, scorer, instructions)


def _choice_letter(path, n, answer, choices: list[str]) -> str:
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return scorers.LETTERS[answer]
    text = str(answer).strip()
    if len(text) == 1 and text.upper() in scorers.LETTERS[:len(choices)]:
        return text.upper()
    if text in choices:
        return scorers.LETTERS[choices.index(text)]
    raise ValueError(f"{path}:{n}: answer {answer!r} is not a letter, an index or one of the choices")
