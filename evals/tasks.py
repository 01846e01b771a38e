"""Tasks: a dataset, a prompt and a scorer (the inspect_ai decomposition).

Built-in tasks are made on the spot, verifiable and deterministic for a seed, with a difficulty knob.
Each declares its comparison (``task.scorer``, shown in its repr; ``task.comparison`` in words):

============== ============================================ ============================================
task           problems                                     scored by
============== ============================================ ============================================
``arithmetic`` multi-step integer expressions               ``numeric``: the integer, exactly
``modular``    modular powers and sums                      ``numeric``: the integer, exactly
``dates``      date offsets and differences                 ``date``: the ISO date, or the day count exactly
``counting``   occurrences of a word in a list              ``numeric``: the integer, exactly
``sorting``    sort a list of integers                      ``number_list``: the integers, in order
``addition``   two integers of d+2 to d+5 digits each,      ``numeric``: the integer, exactly
               1,000 per seed
``product``    two (d+3)-digit integers multiplied, with    ``numeric``: the integer, exactly
               the python tool in the loop
============== ============================================ ============================================

A task with ``tools`` (``product``: python) runs each sample through the tool loop
(``workbench.chat``) with those tools, and its record keeps the tool trace.

Every target of a built-in task is an integer (or a date, or a list of integers), so no tolerance
applies anywhere. Sample ``i`` depends only on (task, difficulty, seed, i), so a smaller ``limit`` is
a prefix of a larger one and a resumed sweep sees the same problems.

>>> task = get_task("arithmetic:1")
>>> s = task.samples(limit=2)[0]
>>> s.id, task.name
('0', 'arithmetic:1')
>>> task.scorer("so \\\\boxed{" + s.target + "}", s).correct
True
>>> task
Task('arithmetic:1', scorer=numeric(rel_tol=0.0, abs_tol=0.0))

A task spec is ``name`` or ``name:arg``: for built-ins the arg is the difficulty (1-5), and a
``@SEED`` suffix (as in the names of tasks made with a seed) picks the seed; for file loaders the arg is a path (``gpqa:PATH``, ``aime:PATH``, ``jsonl:PATH``); see ``datasets``.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

from . import scorers

BOXED = "Put your final answer in \\boxed{}."


@dataclass
class Sample:
    id: str
    question: str
    target: str
    choices: list[str] | None = None
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "question": self.question, "target": self.target, "choices": self.choices,
                "metadata": self.metadata}


@dataclass
class Task:
    """``dataset(repeat)`` -> samples (a repeat may reorder choices); ``scorer(output, sample)`` -> Score.

    ``instructions`` go in the developer message; ``prompt(sample)`` is the user message.
    """

    name: str
    dataset: Callable[[int], Sequence[Sample]]
    scorer: scorers.Scorer
    instructions: str | None = None
    default_limit: int | None = None
    tools: tuple[str, ...] = ()  # tools the model may call, run in the loop: "python" (the sandboxed PythonTool)

    def samples(self, repeat: int = 0, limit: int | None = None) -> list[Sample]:
        items = list(self.dataset(repeat))
        limit = limit if limit is not None else self.default_limit
        return items if limit is None else items[:limit]

    def prompt(self, sample: Sample) -> str:
        if not sample.choices:
            return sample.question
        options = "\n".join(f"{scorers.LETTERS[i]}) {c}" for i, c in enumerate(sample.choices))
        return f"{sample.question}\n\n{options}"

    @property
    def comparison(self) -> str:
        """How answers are compared with targets, in words (the scorer's rule)."""
        return getattr(self.scorer, "comparison", None) or getattr(self.scorer, "__doc__", None) or repr(self.scorer)

    def __repr__(self) -> str:
        return f"Task({self.name!r}, scorer={self.scorer!r})"


def _rng(*parts) -> random.Random:
    return random.Random("/".join(map(str, parts)))  # str seeds hash with sha512: stable across runs


# -- built-in generators: (rng, difficulty) -> (question, target) ---------------------------------

def _arithmetic(rng: random.Random, d: int) -> tuple[str, str]:
    """d+1 operations on integers below 10**min(d, 3); * binds tighter, parentheses where needed."""
    hi = 10 ** min(d, 3)
    value = rng.randint(1, hi)
    expr, top = str(value), "atom"  # top: the loosest operator at the top of expr
    for _ in range(d + 1):
        op, n = rng.choice("+-*"), rng.randint(1, hi)
        if op == "*":
            if top == "sum":
                expr = f"({expr})"
            expr, value, top = f"{expr} * {n}", value * n, "product"
        else:
            expr, value, top = f"{expr} {op} {n}", value + n if op == "+" else value - n, "sum"
    return f"Compute {expr}. {BOXED}", str(value)


def _modular(rng: random.Random, d: int) -> tuple[str, str]:
    m = rng.randint(3, 10 * d + 7)
    a, b = rng.randint(2, 10 ** d), rng.randint(2, 4 * d + 2)
    if d == 1:
        c = rng.randint(1, 20)
        return f"What is ({a} * {b} + {c}) mod {m}? {BOXED}", str((a * b + c) % m)
    c = rng.randint(1, 10 ** d)
    return f"What is ({a}^{b} + {c}) mod {m}? {BOXED}", str((pow(a, b, m) + c) % m)


def _dates(rng: random.Random, d: int) -> tuple[str, str]:
    start = dt.date(1990, 1, 1) + dt.timedelta(days=rng.randint(0, 365 * 40))
    n = rng.randint(1, 10 ** d)
    if rng.random() < 0.5:
        sign = rng.choice([1, -1])
        word = "after" if sign > 0 else "before"
        return (f"What date is {n} days {word} {start.isoformat()}? Answer as YYYY-MM-DD. {BOXED}",
                (start + dt.timedelta(days=sign * n)).isoformat())
    end = start + dt.timedelta(days=n)
    return f"How many days are there from {start.isoformat()} to {end.isoformat()}? {BOXED}", str(n)


def addition_question(a: int, b: int) -> str:
    """The addition task's question (also what the built-in nano model trains on)."""
    return f"What is {a:,} + {b:,}?"


def _addition(rng: random.Random, d: int) -> tuple[str, str]:
    """Two integers written with thousands separators, each of d+2 to d+5 digits (4-7 at the default difficulty)."""
    a, b = (rng.randint(10 ** (n - 1), 10 ** n - 1) for n in (rng.randint(d + 2, d + 5) for _ in range(2)))
    return addition_question(a, b), str(a + b)


_WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "grape", "melon", "peach", "mango", "lemon"]


def _counting(rng: random.Random, d: int) -> tuple[str, str]:
    words = rng.sample(_WORDS, min(2 + d, len(_WORDS)))
    items = [rng.choice(words) for _ in range(4 + 4 * d)]
    word = rng.choice(words)
    return (f"How many times does the word '{word}' appear in this list: {', '.join(items)}? {BOXED}",
            str(items.count(word)))


def _sorting(rng: random.Random, d: int) -> tuple[str, str]:
    numbers = [rng.randint(-10 ** d, 10 ** (d + 1)) for _ in range(3 + 2 * d)]
    return (f"Sort these numbers in ascending order: {', '.join(map(str, numbers))}. "
            f"Give the sorted list, comma-separated, in \\boxed{{}}.", ", ".join(map(str, sorted(numbers))))


def _product(rng: random.Random, d: int) -> tuple[str, str]:
    """A product of two numbers of 3+d digits: too long to do reliably by hand, one line of python."""
    a, b = (rng.randint(10 ** (d + 2), 10 ** (d + 3) - 1) for _ in range(2))
    return f"What is {a:,} × {b:,}? Use python to compute it exactly. {BOXED}", str(a * b)


GENERATED = {  # kind: (generator, scorer); every target is an integer, a date or a list of integers
    "arithmetic": (_arithmetic, scorers.numeric(rel_tol=0.0)),
    "modular": (_modular, scorers.numeric(rel_tol=0.0)),
    "dates": (_dates, scorers.date()),
    "counting": (_counting, scorers.numeric(rel_tol=0.0)),
    "sorting": (_sorting, scorers.number_list()),
    "addition": (_addition, scorers.numeric(rel_tol=0.0)),
    "product": (_product, scorers.numeric(rel_tol=0.0)),
}
TOOLS = {"product": ("python",)}  # kind: tools its samples run with (the tool loop, a tool trace per sample)
DEFAULT_DIFFICULTY = 2
DEFAULT_SIZE = 100
SIZES = {"addition": 1000}  # enough samples for n >= 200 per reasoning effort with distinct questions


def generated(kind: str, difficulty: int = DEFAULT_DIFFICULTY, *, seed: int = 0, size: int | None = None) -> Task:
    """A built-in task. ``difficulty`` 1-5 widens numbers, lengthens lists and adds steps."""
    if kind not in GENERATED:
        raise ValueError(f"unknown task {kind!r}; built-in tasks: {', '.join(GENERATED)}")
    if not 1 <= int(difficulty) <= 5:
        raise ValueError(f"difficulty must be 1-5, not {difficulty!r}")
    make, scorer = GENERATED[kind]
    d = int(difficulty)
    size = SIZES.get(kind, DEFAULT_SIZE) if size is None else size

    def dataset(repeat: int) -> list[Sample]:
        out = []
        for i in range(size):
            question, target = make(_rng(kind, d, seed, i), d)
            out.append(Sample(str(i), question, target, metadata={"difficulty": d}))
        return out

    name = kind if d == DEFAULT_DIFFICULTY else f"{kind}:{d}"
    if seed:
        name += f"@{seed}"
    return Task(name, dataset, scorer, tools=TOOLS.get(kind, ()))


def task_names() -> list[str]:
    """Built-in task names, then the file loaders (which take a path)."""
    return [*GENERATED, "gpqa:PATH", "aime:PATH", "jsonl:PATH"]


def get_task(spec: str | Task, *, seed: int = 0) -> Task:
    """``arithmetic``, ``arithmetic:3`` (difficulty), ``arithmetic:3@7`` (seed 7, overriding ``seed``),
    ``gpqa:PATH``, ``aime:PATH``, ``jsonl:PATH``, or a Task. A built-in task's name is a spec for itself."""
    if isinstance(spec, Task):
        return spec
    name, _, arg = str(spec).partition(":")
    name = name.strip()
    if name.partition("@")[0] in GENERATED:
        if "@" in name:  # 'arithmetic@7': the default difficulty with seed 7
            name, arg = name.partition("@")[0], "@" + name.partition("@")[2] + arg
        arg, at, seed_text = arg.partition("@")
        try:
            difficulty = int(arg) if arg else DEFAULT_DIFFICULTY
            seed = int(seed_text) if at else seed
        except ValueError:
            raise ValueError(f"task {spec!r}: the part after ':' is the difficulty (1-5), then optionally @SEED") from None
        return generated(name, difficulty, seed=seed)
    from . import datasets

    loaders = {"gpqa": datasets.gpqa, "aime": datasets.aime, "jsonl": datasets.jsonl}
    if name in loaders:
        if not arg:
            raise ValueError(f"task {spec!r} needs a file: {name}:PATH")
        return loaders[name](arg, seed=seed)
    raise ValueError(f"unknown task {spec!r}; expected one of: {', '.join(task_names())}")
