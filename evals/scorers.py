r"""Scorers: pull an answer out of a model's final text and compare it with the target.

A scorer is a callable ``scorer(output, sample) -> Score``; ``output`` is the final-channel text (None
when the model gave no final answer, which scores 0). Each scorer says what it compares: its repr shows
its settings and ``scorer.comparison`` states the rule in words. Extraction helpers are public so
notebooks can check what a scorer saw:

>>> extract_boxed(r"so \boxed{\frac{1}{2}} and finally \boxed{42}.")
'42'
>>> extract_number("The total is $1,234.50.")
'1234.50'
>>> extract_choice("A is tempting, but the answer is (C).", 4)
'C'
>>> numeric()
numeric(rel_tol=1e-06, abs_tol=0.0)
>>> numeric()(r"\boxed{9066851}", "9066850").correct  # integers compare exactly
False

How numbers are read (``read_number``, ``numbers_in``): exactly, as ``fractions.Fraction``, so no
rounding of big integers or of decimals ever happens.

- A sign is ``-``, ``+`` or the minus sign U+2212, written right before the digits: in ``x - 5`` the
  number is 5, and ``\boxed{- 5}`` holds no number.
- Thousands separators: ``9,066,850``, ``9 066 850`` (a space, no-break space U+00A0, thin space U+2009,
  narrow no-break space U+202F, LaTeX ``\,`` or ``{,}``) and ``9_066_850``. A first group of 1-3 digits,
  then groups of exactly three, one separator throughout; anything else is not a group separator, so
  ``1,5`` is the two numbers 1 and 5 (a decimal comma is not read) and ``12,34`` is 12 and 34.
- Leading zeros are ignored (AIME's ``033`` is 33); ``2.50``, ``2.5e3``, ``2.5 \times 10^{3}`` and
  ``2.5·10^3`` are decimals and exponents; ``3/4``, ``\frac{3}{4}``, ``-\dfrac34`` are fractions.
- ``%`` and currency signs are units and are dropped: ``50%`` reads as 50, and so does a target "50%".
  So "50%" is right for the target 50 and wrong for the target 0.5.
- Trailing punctuation ends a number (``42.``, ``42)``, ``42!`` are 42). Only ASCII digits count;
  digits glued to letters (``v2``, ``model7``, ``x_1``) are not numbers.

How numbers compare (``numeric``, ``boxed``, ``date``'s day counts):

- an integer target (by value: ``9066850``, ``-3``, ``033``, ``5.0``) needs exactly that value:
  ``9066851`` is wrong for ``9066850`` at any tolerance, ``9066850.0`` and ``9.06685e6`` are right;
- any other target is compared within the scorer's ``rel_tol`` / ``abs_tol`` (0 means exact): ``1/2``
  equals ``0.5`` exactly; ``0.333`` is not ``1/3`` unless a tolerance says so.

Which number counts when the output holds several (``answer_number``), as a careful grader reads it:

1. the last ``\boxed{}``: its content (after its last ``=``, if any) must be one number, perhaps with
   units and markup around it (``read_number``). ``\boxed{x = 12}`` and ``\boxed{12 \text{ apples}}``
   are 12; ``\boxed{3, 4}``, ``\boxed{x+1}``, ``\boxed{3x}``, ``\boxed{2^{10}}``, ``\boxed{\sqrt{2}}``
   and ``\boxed{1 1/2}`` are no number and score 0 (expressions are not evaluated);
2. else the number right after the last "answer is" / "answer:" / "answer =" (markup such as ``**``,
   ``$`` or ``(`` may sit between): "the answer is 7, not 8" is 7;
3. else the last number in the text.
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


class Scorer:
    """``scorer(output, sample) -> Score``, with a name, its settings (in the repr) and ``comparison``,
    the rule it applies in words. ``sample`` is a ``Sample`` or the bare target string."""

    def __init__(self, name: str, fn: Callable[[str | None, object], Score], comparison: str, **settings):
        self.name, self._fn, self.comparison, self.settings = name, fn, comparison, settings

    def __call__(self, output: str | None, sample) -> Score:
        return self._fn(output, sample)

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.settings.items())})"


# -- reading numbers ------------------------------------------------------------------------------

_SEPARATORS = (",", "_", " ", "\u00a0", "\u2009", "\u202f", "\\,", "{,}")
_SEP = "|".join(re.escape(s) for s in _SEPARATORS)
_SIGN = "[-+\u2212]"
_NUMBER = re.compile(
    rf"""(?<![\w.])(?P<sign>{_SIGN})?
    (?P<int>[0-9]{{1,3}}(?P<sep>{_SEP})[0-9]{{3}}(?:(?P=sep)[0-9]{{3}})*(?![0-9])|[0-9]+)
    (?:\.(?P<dec>[0-9]+))?
    (?:[eE](?P<exp>[-+]?[0-9]+)
      |\s*(?:\\times|\\cdot|×|·|\*)\s*10\s*\^\s*(?:\{{\s*(?P<exp2>{_SIGN}?[0-9]+)\s*\}}|(?P<exp3>{_SIGN}?[0-9]+)))?
    (?:\s*/\s*(?P<den>[0-9]+)(?![0-9.]))?
    """,
    re.VERBOSE,
)
_FRAC = re.compile(r"\\[dt]?frac\s*(?:\{\s*(" + _SIGN + r"?[0-9]+)\s*\}|([0-9]))\s*(?:\{\s*([0-9]+)\s*\}|([0-9]))")
_MAX_EXPONENT = 1000  # 1e1000000 would build a million-digit integer


@dataclass(frozen=True)
class Number:
    """A number found in text: its exact ``value``, the ``text`` it was written as (normalised: no group
    separators, an ASCII minus, ``a/b``, ``me±k``) and where it was (``start``, ``end`` in the cleaned text)."""

    value: Fraction
    text: str
    start: int
    end: int


def _latex_cleaned(text: str) -> str:
    """``\\frac{a}{b}`` -> ``a/b``; ``\\text{...}``/``\\mathrm{...}`` unwrapped; ``\\left``/``\\right`` dropped."""
    text = _FRAC.sub(lambda m: f"{m.group(1) or m.group(2)}/{m.group(3) or m.group(4)}", text)
    text = re.sub(r"\\(?:text|mathrm|textbf|mathbf)\s*\{([^{}]*)\}", r"\1", text)
    return re.sub(r"\\(?:left|right)\b", "", text)


def _number(m: re.Match) -> Number | None:
    sign = -1 if m.group("sign") in ("-", "\u2212") else 1
    digits = m.group("int")
    if m.group("sep"):
        digits = digits.replace(m.group("sep"), "")
    value = Fraction(int(digits))
    text = digits.lstrip("0") or "0"
    if m.group("dec"):
        value += Fraction(int(m.group("dec")), 10 ** len(m.group("dec")))
        text += "." + m.group("dec")
    exp = m.group("exp") or m.group("exp2") or m.group("exp3")
    if exp is not None:
        k = int(exp.replace("\u2212", "-"))
        if abs(k) > _MAX_EXPONENT:
            return None
        value *= Fraction(10) ** k
        text += f"e{k}"
    if m.group("den"):
        if int(m.group("den")) == 0:
            return None
        value /= int(m.group("den"))
        text += "/" + m.group("den").lstrip("0")
    return Number(sign * value, ("-" if sign < 0 else "") + text, m.start(), m.end())


def numbers_in(text: str | None) -> list[Number]:
    r"""Every number in ``text``, in order (see the module docstring for what counts as one).

    >>> [n.text for n in numbers_in(r"from −3 to 9 066 850, or \frac{1}{2}")]
    ['-3', '9066850', '1/2']
    """
    if not text:
        return []
    return [n for m in _NUMBER.finditer(_latex_cleaned(text)) if (n := _number(m)) is not None]


# What may stand around the one number of an answer or a target: space, brackets, punctuation, $ and %,
# LaTeX spacing and delimiters, degrees, and words (units) not touching the number. Not: digits,
# operators (+ - * / ^ = < >), other LaTeX commands (\sqrt, \pi), letters glued to the number.
_DECORATION = re.compile(
    r"""(?:\s+|[$()\[\]{}.,;:!?%°'"`]|\\[$%,;:!\s()\[\]{}]|\\(?:quad|qquad|displaystyle|approx)(?![A-Za-z])
    |\^\s*\{?\s*\\circ\s*\}?|[A-Za-z]+)*""",
    re.VERBOSE,
)


def read_number(s: str | None) -> Fraction | None:
    r"""The exact value of text that is one number, perhaps with units and markup around it ('3', '-2.5',
    '1e3', '3/4', '1,000', '$5', '\frac{3}{4}', '50%' (-> 50), '12 apples'); None for anything else
    ('x+1', '3x', '2^{10}', '\sqrt{2}', '3, 4', '1 1/2')."""
    if not s:
        return None
    cleaned = _latex_cleaned(s)
    found = [(m, n) for m in _NUMBER.finditer(cleaned) if (n := _number(m)) is not None]
    if len(found) != 1:
        return None
    m, n = found[0]
    before, after = cleaned[:m.start()], cleaned[m.end():]
    if before[-1:].isalpha() or after[:1].isalpha() or not _DECORATION.fullmatch(before + " " + after):
        return None
    return n.value


def parse_number(s: str | None) -> float | None:
    """``read_number`` as a float (None when not exactly one number, or out of float range)."""
    value = read_number(s)
    if value is None:
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return None if math.isinf(f) else f


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


def boxed_number(boxed: str | None) -> Number | None:
    """The number a box's content is (``read_number``; after its last ``=`` when it has one), or None."""
    if boxed is None:
        return None
    part = boxed.rpartition("=")[2]
    if read_number(part) is None:
        return None
    return numbers_in(part)[0]


_ANSWER_PHRASE = re.compile(r"(?i)\banswer\b\s*(?:is\b|:|=)\s*[:=]?[\s*$`(\[{]*(?:\\\(|\\\[)?[\s$]*")


def answer_number(text: str | None) -> Number | None:
    r"""The number a careful grader would read as the answer: the last ``\boxed{}`` (which must hold
    exactly one number), else the number right after the last "answer is"/"answer:", else the last number."""
    if not text:
        return None
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed_number(boxed)
    cleaned = _latex_cleaned(text)
    phrases = list(_ANSWER_PHRASE.finditer(cleaned))
    if phrases:
        m = _NUMBER.match(cleaned, phrases[-1].end())
        if m is not None and not cleaned[m.end():m.end() + 1].isalpha() and (n := _number(m)) is not None:
            return n
    found = numbers_in(text)
    return found[-1] if found else None


def extract_number(text: str | None) -> str | None:
    """The answer number's normalised text (``answer_number``), e.g. '1234.50' for '$1,234.50'."""
    n = answer_number(text)
    return None if n is None else n.text


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


# -- comparing ------------------------------------------------------------------------------------

def numbers_match(answer: Fraction, target: Fraction, rel_tol: float = 0.0, abs_tol: float = 0.0) -> bool:
    """Exact for an integer target; else ``|a - t| <= max(rel_tol * max(|a|, |t|), abs_tol)``, computed exactly."""
    if target.denominator == 1 or (rel_tol == 0 and abs_tol == 0):
        return answer == target
    bound = max(Fraction(rel_tol) * max(abs(answer), abs(target)), Fraction(abs_tol))
    return abs(answer - target) <= bound


def _tolerance_words(rel_tol: float, abs_tol: float) -> str:
    if not rel_tol and not abs_tol:
        return "exactly"
    parts = [f"rel_tol={rel_tol:g}"] * bool(rel_tol) + [f"abs_tol={abs_tol:g}"] * bool(abs_tol)
    return "within " + " or ".join(parts)


def _check_tolerance(rel_tol: float, abs_tol: float) -> None:
    if not (rel_tol >= 0 and abs_tol >= 0):  # also rejects nan
        raise ValueError(f"tolerances must be >= 0, not rel_tol={rel_tol!r}, abs_tol={abs_tol!r}")


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
    settings = {"extract": getattr(extract, "__name__", extract)} if extract else {}
    return Scorer("exact", score, "the boxed text (else the whole output) equals the target after normalize()",
                  **settings)


def numeric(rel_tol: float = 1e-6, abs_tol: float = 0.0) -> Scorer:
    """Correct when the answer number (``answer_number``) equals the target: exactly for an integer
    target, within ``rel_tol``/``abs_tol`` for any other (both 0: exactly)."""
    _check_tolerance(rel_tol, abs_tol)

    def score(output, sample) -> Score:
        n, target = answer_number(output), read_number(_target(sample))
        ok = n is not None and target is not None and numbers_match(n.value, target, rel_tol, abs_tol)
        return Score(1.0 if ok else 0.0, None if n is None else n.text)
    rule = ("the boxed number (else the one after 'answer is', else the last number) equals the target: "
            f"integers exactly, other targets {_tolerance_words(rel_tol, abs_tol)}")
    return Scorer("numeric", score, rule, rel_tol=rel_tol, abs_tol=abs_tol)


def choice() -> Scorer:
    """Multiple choice: the extracted letter must equal the target letter."""
    def score(output, sample) -> Score:
        n = len(getattr(sample, "choices", None) or LETTERS[:4])
        answer = extract_choice(output, n)
        return Score(1.0 if answer is not None and answer == _target(sample).strip().upper() else 0.0, answer)
    return Scorer("choice", score, "the picked letter (extract_choice) equals the target letter")


def boxed(compare: str = "auto", rel_tol: float = 0.0, abs_tol: float = 0.0) -> Scorer:
    r"""Only the last ``\boxed{}`` counts (AIME style). ``compare="auto"``: as numbers when the box and the
    target each hold one number (integers exactly, others within the tolerance), else as text
    (``normalize``); ``"text"``: always as text."""
    if compare not in ("auto", "text"):
        raise ValueError(f"compare must be 'auto' or 'text', not {compare!r}")
    _check_tolerance(rel_tol, abs_tol)

    def score(output, sample) -> Score:
        answer = extract_boxed(output)
        if answer is None:
            return Score(0.0, None)
        n, t = boxed_number(answer), read_number(_target(sample))
        if compare != "text" and n is not None and t is not None:
            ok = numbers_match(n.value, t, rel_tol, abs_tol)
        else:
            ok = normalize(answer) == normalize(_target(sample))
        return Score(1.0 if ok else 0.0, answer)
    rule = "the last box's text equals the target after normalize()" if compare == "text" else (
        "the last box's one number equals the target (integers exactly, other targets "
        f"{_tolerance_words(rel_tol, abs_tol)}); text boxes compare after normalize()")
    return Scorer("boxed", score, rule, compare=compare, rel_tol=rel_tol, abs_tol=abs_tol)


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
    return Scorer("number_list", score, "the boxed (else last numeric line's) integers equal the target's, in order")


def date() -> Scorer:
    """An ISO date (YYYY-MM-DD): the boxed one if any, else the last one in the text. A target that is not
    a date (a day count) is scored with ``numeric`` (an integer: exactly)."""
    as_number = numeric(rel_tol=0.0)

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
    return Scorer("date", score, "the boxed (else last) YYYY-MM-DD date equals the target; day counts as integers, exactly")


GRADER_INSTRUCTIONS = """You are grading an answer to a question against a reference answer. Judge only whether the
submitted answer means the same as the reference (ignore style, working and length). Reply with a one-line
reason and then, on the last line, GRADE: C if it is correct or GRADE: I if it is incorrect."""
GRADER_PROMPT = """[Question]
{question}

[Reference answer]
{target}

[Submitted answer]
{answer}"""
_GRADE = re.compile(r"GRADE\s*:\s*([CI])\b")


def model_graded(model: str, base_url: str, *, api_key: str | None = None, api: str = "chat",
                 reasoning_effort: str = "low", max_tokens: int = 1024, instructions: str = GRADER_INSTRUCTIONS,
                 template: str = GRADER_PROMPT, backend=None) -> Scorer:
    """A judge model grades each answer against the target (a grader role, as inspect_ai's
    ``model_graded_qa`` and the gpt-oss HealthBench eval use one). The grader is its own model behind
    its own OpenAI-compatible server (``model`` at ``base_url``, through chat completions or the
    Responses API), asked at temperature 0 with ``instructions`` and ``template`` (fields
    ``question``, ``target``, ``answer``); its last ``GRADE: C`` / ``GRADE: I`` decides. A reply with no
    grade scores 0 with ``answer`` None. ``backend``: any workbench Backend instead of a server."""
    from workbench.backends.openai_compat import OpenAIBackend, redact_url
    from workbench.harmony import Conversation

    judge = backend or OpenAIBackend(model, base_url=base_url, api_key=api_key, api=api)

    def score(output, sample) -> Score:
        if not output:
            return Score(0.0, None)
        prompt = template.format(question=getattr(sample, "question", ""), target=_target(sample), answer=output)
        conv = Conversation.new(instructions, reasoning_effort=reasoning_effort).user(prompt)
        verdict = judge.complete(conv, max_new_tokens=max_tokens, temperature=0.0).final or ""
        grades = _GRADE.findall(verdict)
        return Score(1.0 if grades and grades[-1] == "C" else 0.0, grades[-1] if grades else None)
    return Scorer("model_graded", score, f"the judge {model} at {redact_url(base_url)} says GRADE: C",
                  model=model, base_url=redact_url(base_url), api=api)


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
