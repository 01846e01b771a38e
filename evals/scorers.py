"""Scorers: pull an answer out of a model's final text and compare it with the target.

A scorer is a callable ``scorer(output, sample) -> Score``; ``output`` is the final-channel text (None
when the model gave no final answer, which scores 0). Extraction helpers are public so notebooks can
check what a scorer saw:

>>> extract_boxed(r"so \\boxed{\\frac{1}{2}} and finally \\boxed{42}.")
'42'
>>> extract_number("The total is $1,234.50.")
'1234.50'
>>> extract_choice("A is tempting, but the answer is (C).", 4)
'C'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Score:
    value: float  # 1.0 correct, 0.0 wrong (partial credit allowed)
    answer: str | None  # what was extracted from the output (None: nothing found)

    @property
    def correct(self) -> bool:
        return self.value >= 1.0


Scorer = Callable[[str | None, object], Score]


# -- extraction -----------------------------------------------------------------------------------

def extract_boxed(text: str | None) -> str | None:
    r"""Content of the last ``\boxed{...}`` (or ``\fbox{...}``), braces balanced; ``\boxed 5`` too."""
    if not text:
        return None
    found = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*(\{)?", text):
        if m.group(1) is None:  # \boxed 5
            rest = re.match(r"\s*([^\s$]+)", text[m.end():])
            if rest:
                found = rest.group(1)
            continue
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found = text[m.end():i - 1].strip()
    return found


_NUMBER = re.compile(r"(?<![\w.])[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*\d+)?")


def extract_number(text: str | None) -> str | None:
    """The last number in the text (thousands separators dropped, a unicode minus made ASCII)."""
    if not text:
        return None
    matches = _NUMBER.findall(text.replace("\\frac{", " ").replace("}{", "/"))
    if not matches:
        return None
    return re.sub(r"\s+", "", matches[-1]).replace(",", "").replace("\u2212", "-")


def parse_number(s: str | None) -> float | None:
    """'3', '-2.5', '1e3', '3/4', '1,000', '$5', '\\frac{3}{4}', '50%' -> float (None if not a number)."""
    if s is None:
        return None
    t = s.strip().replace(",", "").replace("\u2212", "-").replace("$", "").replace("\\%", "%").strip()
    t = re.sub(r"^\\frac\{(-?\d+)\}\{(\d+)\}$", r"\1/\2", t)
    t = re.sub(r"^\\d?frac\{(-?\d+)\}\{(\d+)\}$", r"\1/\2", t)
    percent = t.endswith("%")
    t = t.rstrip("%").rstrip(".").strip()
    try:
        value = float(Fraction(t.replace(" ", ""))) if "/" in t else float(t)
    except (ValueError, ZeroDivisionError):
        return None
    if math.isnan(value) or math.isinf(value):
        return None
    return value / 100 if percent else value


def extract_choice(text: str | None, n_choices: int = 4) -> str | None:
    """The letter a model picked among ``n_choices`` options (A, B, ...), or None.

    Looks, in order, for: "answer: X" / "answer is X" (the last one), a boxed letter, a bold or
    bracketed letter ("**C**", "(C)", "[C]"), a line that is only a letter ("C", "C)", "C."). Lone
    capitals inside prose ("A good start") are not read as choices.
    """
    if not text:
        return None
    valid = LETTERS[:n_choices]
    L = f"[{valid}]"
    patterns = [
        rf"(?i:answer)\s*(?i:is|:)?\s*(?i:option|choice)?\s*[:\-]?\s*[\*\(\[]*\s*({L})\b(?![\w'])",
        rf"\\boxed\s*\{{\s*(?:\\text\{{)?\s*\(?({L})\)?\s*\}}?\s*\}}",
        rf"\*\*\s*\(?({L})\)?\s*[\).:]?\s*\*\*",
        rf"[\(\[]({L})[\)\]]",
        rf"(?m)^\s*({L}|{L.lower()})\s*[\).:]?\s*$",
    ]
    for pattern in patterns:
        hits = re.findall(pattern, text)
        if hits:
            return hits[-1].upper()
    return None


def normalize(text: str | None) -> str:
    """Lower-case, collapse whitespace, drop surrounding punctuation, quotes and markdown emphasis."""
    if text is None:
        return ""
    t = re.sub(r"\s+", " ", text).strip().lower()
    t = re.sub(r"^\\text\{(.*)\}$", r"\1", t)
    return t.strip(" \t.,;:!*_`\"'").strip()


# -- scorers --------------------------------------------------------------------------------------

def _target(sample) -> str:
    return str(getattr(sample, "target", sample))


def exact(extract: Callable[[str | None], str | None] | None = None) -> Scorer:
    """Correct when the (extracted) output equals the target after ``normalize``.

    Without ``extract`` the last ``\\boxed{}`` is used when there is one, else the whole output.
    """
    def score(output, sample) -> Score:
        answer = extract(output) if extract else (extract_boxed(output) or output)
        ok = answer is not None and normalize(answer) == normalize(_target(sample))
        return Score(1.0 if ok else 0.0, answer)
    return score


def numeric(rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> Scorer:
    """Correct when the number in the output is within tolerance of the target.

    The number is the content of the last ``\\boxed{}`` if any, else the last number in the text.
    """
    def score(output, sample) -> Score:
        boxed = extract_boxed(output)
        answer = boxed if boxed is not None and parse_number(boxed) is not None else extract_number(
            boxed if boxed is not None else output)
        value, target = parse_number(answer), parse_number(_target(sample))
        ok = value is not None and target is not None and math.isclose(value, target, rel_tol=rel_tol, abs_tol=abs_tol)
        return Score(1.0 if ok else 0.0, answer)
    return score


def choice() -> Scorer:
    """Multiple choice: the extracted letter must equal the target letter."""
    def score(output, sample) -> Score:
        n = len(getattr(sample, "choices", None) or LETTERS[:4])
        answer = extract_choice(output, n)
        return Score(1.0 if answer is not None and answer == _target(sample).strip().upper() else 0.0, answer)
    return score


def boxed(compare: str = "auto", rel_tol: float = 1e-9) -> Scorer:
    r"""Only the last ``\boxed{}`` counts (AIME style); compared as numbers when both parse, else as text."""
    def score(output, sample) -> Score:
        answer = extract_boxed(output)
        if answer is None:
            return Score(0.0, None)
        a, t = parse_number(answer), parse_number(_target(sample))
        if compare != "text" and a is not None and t is not None:
            ok = math.isclose(a, t, rel_tol=rel_tol, abs_tol=1e-12)
        else:
            ok = normalize(answer) == normalize(_target(sample))
        return Score(1.0 if ok else 0.0, answer)
    return score


def number_list() -> Scorer:
    """The output's list of integers (boxed if any, else its last line that has numbers) equals the target's."""
    def numbers(text):
        return [int(x) for x in re.findall(r"-?\d+", text.replace("\u2212", "-"))]

    def score(output, sample) -> Score:
        answer = extract_boxed(output)
        if answer is None and output:
            lines = [line for line in output.strip().splitlines() if re.search(r"\d", line)]
            answer = lines[-1] if lines else None
        ok = answer is not None and numbers(answer) == numbers(_target(sample))
        return Score(1.0 if ok else 0.0, answer)
    return score


def date() -> Scorer:
    """An ISO date (YYYY-MM-DD): the boxed one if any, else the last one in the text. A target that is not
    a date (a day count) is scored with ``numeric``."""
    as_number = numeric()

    def score(output, sample) -> Score:
        if not re.fullmatch(r"\d{4}-\d\d-\d\d", _target(sample).strip()):
            return as_number(output, sample)
        text = extract_boxed(output) or output or ""
        dates = re.findall(r"\d{4}-\d{1,2}-\d{1,2}", text)
        answer = dates[-1] if dates else None
        if answer:
            y, m, d = answer.split("-")
            answer = f"{int(y):04d}-{int(m):02d}-{int(d):02d}"
        return Score(1.0 if answer == _target(sample).strip() else 0.0, answer)
    return score


SCORERS = {"exact": exact, "numeric": numeric, "choice": choice, "boxed": boxed, "number_list": number_list,
           "date": date}


def get(name: str | Scorer) -> Scorer:
    """A scorer by name (``exact``, ``numeric``, ``choice``, ``boxed``, ``number_list``, ``date``) or as given."""
    if callable(name):
        return name
    try:
        return SCORERS[name]()
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; expected one of {sorted(SCORERS)}") from None
