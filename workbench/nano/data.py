"""Training data for the nano model: Harmony conversations from the workbench's own task generators.

Each example is one conversation rendered with ``workbench.harmony`` (openai-harmony's rendering, real
o200k_harmony ids): a system message with the reasoning effort (sometimes a date, sometimes the python
tool), sometimes a developer message (instructions, function tools), the user's question, then what
the assistant should write: an analysis message whose depth follows the effort, tool calls followed by
the tool's real answer (the sandboxed ``PythonTool`` runs the code, the function runs), and a final
answer ending in ``<|return|>``. The loss covers exactly the tokens the model generates (``mask``).

Families (``FAMILIES``) and what the effort changes:

- ``addition``: the ``addition`` eval task's question. high: each three-digit group spelled out, the
  digits paired by place, one line per column from the ones up with its carry, the digits read back from
  the top and then in three-digit groups; medium: a working budget: the same working as high when both
  numbers are below ``MEDIUM_BUDGET`` (at most two three-digit groups), otherwise one sentence saying the
  working is over budget and no working; low: no working.
- ``digits``: spell a number's digits, or write the number with given digits (string tasks on numbers).
  high: each group and its digits; medium: the number of groups; low: none.
- ``weekday``: "If today is Friday, what day of the week will it be in 45 days?". high: weeks and days,
  then the days counted out by name; medium: n = 7q + r in one line; low: none.
- ``counting``: the ``counting`` eval task's question. high: the list walked with a running count;
  medium: the matches listed; low: none.
- ``python``: products of two 4-7 digit numbers (some asked as the ``product`` eval task asks, answered in
  ``\\boxed{}``) and powers, which need the python tool: a call to
  ``python`` on the analysis channel (as gpt-oss calls its built-in tools), the printed result, a final
  answer copying it. Effort changes the planning text only.
- ``function``: ``get_weather`` / ``convert_currency`` (``workbench.nano.functions``) called on the
  commentary channel with ``<|constrain|>json`` arguments, their JSON result, a final sentence from it.
- ``greeting``: hello / who are you / what can you do, answered in one line.

Numbers: o200k splits digit runs into chunks of up to three digits from the left, so a digit is only a
token of its own when something separates it. Questions write numbers with thousands separators (the
chunks are then the place-value groups); the high-effort working writes single digits separated by
spaces or operators, so each digit it reasons about is one token.

>>> ex = make_example("addition", "high", random.Random(0))
>>> ex.question
'What is 4,318,154 + 1,937?'
>>> tokens, mask = ex.tokens, ex.mask
>>> len(tokens) == len(mask) and tokens[-1] == 200002    # ends with <|return|>
True
"""

from __future__ import annotations

import json
import random
import re
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterator, Sequence

from openai_harmony import Role

from ..evals.tasks import _counting, _product, addition_question
from ..harmony import Conversation, encoding
from ..harmony import tokens as T
from .functions import CITIES, NANO_FUNCTIONS, RATES

EFFORTS = ("low", "medium", "high")
FAMILIES = {"addition": 0.35, "digits": 0.11, "weekday": 0.11, "counting": 0.09, "python": 0.18, "function": 0.14,
            "greeting": 0.02}
PLACES = ("ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands", "millions", "ten-millions",
          "hundred-millions", "billions")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MEDIUM_BUDGET = 1_000_000  # medium effort works an addition by columns only when both numbers are below this
EFFORT_WEIGHTS = {"addition": (1.0, 1.0, 2.2)}  # more of the long column-by-column working (the hardest skill)
INSTRUCTIONS = ("Answer briefly.", "You are a helpful assistant.", "Be precise.", "Show your answer clearly.")


# ================================================================================================
# what the assistant writes, family by family: a generator of steps that receives tool results
# ================================================================================================

@dataclass
class Step:
    """One assistant message: ``kind`` analysis | final | python | function (``name``, ``args``)."""

    kind: str
    text: str = ""
    name: str | None = None


Plan = Iterator[Step]  # yields steps; a python/function step is answered by .send(tool result text)


@dataclass
class Task:
    """A question, its target answer (for scoring) and the steps that solve it at one effort."""

    family: str
    question: str
    target: str
    steps: Callable[[str], Plan]  # effort -> plan
    tools: tuple[str, ...] = ()  # tools the solution needs ("python", "functions")
    meta: dict = field(default_factory=dict)


def _digits(n: int, width: int) -> list[int]:
    """Decimal digits of n, most significant first, zero-padded to ``width``."""
    return [int(c) for c in str(n).zfill(width)]


def _columns(a: int, b: int) -> tuple[list[str], list[int]]:
    """One line per column of a + b from the ones up ("tens 2+9+0=11 carry 1"), and the digits of the sum from
    the ones up."""
    width = max(len(str(a)), len(str(b)))
    da, db = _digits(a, width), _digits(b, width)
    lines, written, carry = [], [], 0
    for p in range(width):
        x, y = da[width - 1 - p], db[width - 1 - p]
        s = x + y + carry
        lines.append(f"{PLACES[p]} {x}+{y}+{carry}={s} carry {s // 10}")
        written.append(s % 10)
        carry = s // 10
    if carry:
        lines.append(f"{PLACES[width]} 0+0+{carry}={carry} carry 0")
        written.append(carry)
    return lines, written


def _read_back(total: int, written: list[int]) -> list[str]:
    """The lines that turn the column digits into the sum: the digits from the top, by place, then the digits
    spelled in three-digit groups, each group then written as its o200k chunk."""
    top = ", ".join(f"{PLACES[p]} {written[p]}" for p in range(len(written) - 1, -1, -1))
    groups = ", ".join(f"{' '.join(g)} is {g}" for g in f"{total:,}".split(","))
    return [f"From the top: {top}.", f"In groups: {groups}."]


def addition_analysis(a: int, b: int, effort: str) -> str:
    """The analysis text for a + b at one effort (see the module docstring)."""
    if effort == "low":
        return f"Add {a:,} and {b:,}."
    if effort == "medium" and max(a, b) >= MEDIUM_BUDGET:
        return f"Add {a:,} and {b:,}: too long to work by columns at medium effort."
    columns, written = _columns(a, b)
    width = max(len(str(a)), len(str(b)))
    da, db = _digits(a, width), _digits(b, width)
    groups = "; ".join(", ".join(f"{g} is {' '.join(g)}" for g in f"{n:,}".split(",")) for n in (a, b))
    pairs = ", ".join(f"{PLACES[width - 1 - i]} {x} {y}" for i, (x, y) in enumerate(zip(da, db)))
    return "\n".join([f"Add {a:,} and {b:,} column by column, from the ones up.", f"Groups: {groups}.",
                      f"By place: {pairs}.", *columns, *_read_back(a + b, written), f"So the sum is {a + b:,}."])


def _operand(rng: random.Random) -> int:
    n = rng.choices(range(1, 8), weights=(1, 2, 3, 4, 4, 4, 3))[0]
    return rng.randint(10 ** (n - 1) if n > 1 else 0, 10 ** n - 1)


def addition(rng: random.Random) -> Task:
    return addition_task(_operand(rng), _operand(rng))


def addition_task(a: int, b: int) -> Task:
    """The task a + b: the analysis at each effort (``addition_analysis``), then ``a + b = sum`` on the final channel."""
    def steps(effort: str) -> Plan:
        yield Step("analysis", addition_analysis(a, b, effort))
        yield Step("final", f"{a:,} + {b:,} = {a + b:,}")
    return Task("addition", addition_question(a, b), str(a + b), steps, meta={"a": a, "b": b})


def weekday_question(day: str, n: int) -> str:
    return f"If today is {day}, what day of the week will it be in {n} days?"


def weekday(rng: random.Random) -> Task:
    start, n = rng.randrange(7), rng.choice([rng.randint(1, 30), rng.randint(1, 400)])
    q, r = divmod(n, 7)
    day, answer = DAYS[start], DAYS[(start + n) % 7]

    def steps(effort: str) -> Plan:
        if effort == "high":
            if r:
                walk = ", ".join(DAYS[(start + i) % 7] for i in range(1, r + 1))
                count = f"Whole weeks do not change the weekday, so count {r} days on from {day}: {walk}."
            else:
                count = f"Whole weeks do not change the weekday, so it is {day} again."
            text = f"{n} days is {q} weeks and {r} days, because 7*{q}={7 * q} and {n}-{7 * q}={r}.\n{count}"
        elif effort == "medium":
            text = f"{n} = 7*{q} + {r}, so {r} days after {day}: {answer}."
        else:
            text = f"{n} days after {day}."
        yield Step("analysis", text)
        yield Step("final", f"In {n} days it will be {answer}.")
    return Task("weekday", weekday_question(day, n), answer, steps, meta={"day": day, "n": n})


_COUNTING = re.compile(r"the word '(\w+)' appear in this list: (.*)\? ")


def counting(rng: random.Random) -> Task:
    question, target = _counting(rng, rng.randint(1, 3))
    word, listed = _COUNTING.search(question).groups()
    items = listed.split(", ")

    def steps(effort: str) -> Plan:
        if effort == "high":
            seen, walk = 0, []
            for item in items:
                seen += item == word
                walk.append(f"{item} {seen}" if item == word else item)
            text = f"Go through the list and count '{word}':\n{', '.join(walk)}.\nSo '{word}' appears {seen} times."
        elif effort == "medium":
            matches = ", ".join([word] * int(target)) or "none"
            text = f"The matches are: {matches}. That is {target}."
        else:
            text = f"Count '{word}'."
        yield Step("analysis", text)
        yield Step("final", f"\\boxed{{{target}}}")
    return Task("counting", question, target, steps, meta={"word": word, "items": items})


def python_question(rng: random.Random) -> tuple[str, str, str, str]:
    """(question, code, target, what): a product of two 4-7 digit numbers (half of them as the ``product`` eval
    task asks it), or a power."""
    r = rng.random()
    if r < 0.4:
        question, target = _product(rng, rng.randint(1, 4))
        a, b = (int(x.replace(",", "")) for x in re.findall(r"[\d,]+(?= ×|\?)", question))
        return question, f'print(f"{{{a:_} * {b:_}:,}}")', target, "product"
    if r < 0.8:
        a, b = (rng.randint(10 ** (n - 1), 10 ** n - 1) for n in (rng.randint(4, 7), rng.randint(4, 7)))
        return (f"What is {a:,} × {b:,}?", f'print(f"{{{a:_} * {b:_}:,}}")', str(a * b), "product")
    base, exp = rng.randint(11, 99), rng.randint(6, 15)
    return f"What is {base}^{exp}?", f'print(f"{{{base} ** {exp}:,}}")', str(base ** exp), "power"


def python_task(rng: random.Random) -> Task:
    question, code, target, what = python_question(rng)
    shown = question.removeprefix("What is ").split("?")[0]
    boxed = "\\boxed{}" in question

    def steps(effort: str) -> Plan:
        if effort == "high":
            yield Step("analysis", f"This {what} is too long to do reliably by hand. I will compute it exactly with "
                                   f"python and print it with thousands separators.")
        elif effort == "medium":
            yield Step("analysis", f"Compute the exact {what} with python.")
        result = (yield Step("python", code)).strip()
        if effort == "high":
            yield Step("analysis", f"python printed {result}.")
        yield Step("final", f"{shown} = \\boxed{{{result}}}" if boxed else f"{shown} = {result}")
    return Task("python", question, target, steps, tools=("python",), meta={"code": code})


def function_task(rng: random.Random) -> Task:
    if rng.random() < 0.5:
        city = rng.choice(CITIES)
        question = rng.choice(["What's the weather like in {}?", "How warm is it in {} right now?",
                               "What is the weather in {} today?"]).format(city)
        name, args = "get_weather", {"city": city}
        plan = {"high": f"The user wants the current weather in {city}. get_weather takes a city name, so call it "
                        f"with {city}.", "medium": f"Call get_weather for {city}."}

        def answer(r: dict) -> str:
            return f"In {r['city']} it is {r['temperature_c']} °C and {r['conditions']} right now."
    else:
        src, dst = rng.sample(sorted(RATES), 2)
        amount = rng.choice([rng.randint(1, 100), rng.randint(1, 5000), round(rng.uniform(1, 1000), 2)])
        question = rng.choice(["How much is {} {} in {}?", "Convert {} {} to {}."]).format(amount, src, dst)
        name, args = "convert_currency", {"amount": amount, "from_currency": src, "to_currency": dst}
        plan = {"high": f"The user wants {amount} {src} in {dst}. convert_currency takes the amount and both "
                        f"currency codes.", "medium": "Call convert_currency."}

        def answer(r: dict) -> str:
            return f"{r['amount']} {r['from_currency']} is {r['result']} {r['to_currency']} at the demo rate."

    def steps(effort: str) -> Plan:
        if effort in plan:
            yield Step("analysis", plan[effort])
        result = yield Step("function", json.dumps(args), name=name)
        yield Step("final", answer(json.loads(result)))
    return Task("function", question, "", steps, tools=("functions",), meta={"function": name, "args": args})


def digits_task(rng: random.Random) -> Task:
    """String tasks on numbers: spell a number's digits, or write the number that has given digits."""
    n = _operand(rng) if rng.random() < 0.5 else rng.randint(1000, 10 ** 9 - 1)
    spelled = " ".join(str(n))
    groups = f"{n:,}".split(",")
    if rng.random() < 0.5:
        question, target = f"What are the digits of {n:,}, from the left?", spelled
        work = "; ".join(f"{g} is {' '.join(g)}" for g in groups)
    else:
        question, target = f"Which number has the digits {spelled}, from the left?", f"{n:,}"
        work = "; ".join(f"{' '.join(g)} is {g}" for g in groups)

    def steps(effort: str) -> Plan:
        if effort == "high":
            yield Step("analysis", f"Group the digits in threes from the right: {work}.")
        elif effort == "medium":
            yield Step("analysis", f"{len(groups)} group{'s' if len(groups) > 1 else ''} of digits.")
        else:
            yield Step("analysis", "Read the digits.")
        yield Step("final", target)
    return Task("digits", question, target, steps, meta={"n": n})


GREETINGS = {
    "Hi": "Hello! I am nano, a small gpt-oss model. Ask me to add numbers, count words, find a weekday, or "
          "use my tools.",
    "Hello": "Hello! I am nano, a small gpt-oss model. Ask me to add numbers, count words, find a weekday, or "
             "use my tools.",
    "Who are you?": "I am nano, a small model with the gpt-oss architecture, trained on a CPU by the gpt-oss "
                    "workbench.",
    "What can you do?": "I can add multi-digit numbers, count words in a list, work out weekdays, and call the "
                        "python tool or functions when they are available.",
}


def greeting(rng: random.Random) -> Task:
    question = rng.choice(sorted(GREETINGS))

    def steps(effort: str) -> Plan:
        yield Step("analysis", "The user greets me or asks about me. Answer in one line." if effort == "high"
                   else "Greet back.")
        yield Step("final", GREETINGS[question])
    return Task("greeting", question, GREETINGS[question], steps)


MAKERS: dict[str, Callable[[random.Random], Task]] = {
    "addition": addition, "weekday": weekday, "counting": counting, "python": python_task,
    "function": function_task, "greeting": greeting, "digits": digits_task,
}


# ================================================================================================
# conversations, tools and tokens
# ================================================================================================

@lru_cache(maxsize=1)
def tools():
    """The real tools the data runs: the sandboxed PythonTool and the nano functions."""
    from ..tools import FunctionTools, PythonTool

    return PythonTool(), FunctionTools(NANO_FUNCTIONS)


def prompt(task: Task, effort: str, rng: random.Random | None = None) -> Conversation:
    """The conversation up to the user's question. With ``rng``: random extras (a date, instructions, tools the
    task does not need) so the model meets the prompts people and servers send; without: the plain prompt."""
    python, functions = "python" in task.tools, "functions" in task.tools
    date, instructions = None, None
    if rng is not None:
        python = python or rng.random() < 0.08
        functions = functions or rng.random() < 0.08
        if rng.random() < 0.2:
            date = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if rng.random() < 0.15:
            instructions = rng.choice(INSTRUCTIONS)
    conv = Conversation.new(instructions, reasoning_effort=effort, date=date)
    python_tool, function_tools = tools()
    if python:
        conv.add_builtin("python", python_tool.config())  # the description PythonTool shows at run time
    if functions:
        conv.declare([function_tools])
    return conv.user(task.question)


_PYTHON_RESULTS: dict[str, str] = {}  # code -> what PythonTool answered (filled by prefetch_python)
_MARK = "@@nano-snippet-{}@@"


def prefetch_python(codes: Sequence[str]) -> None:
    """Run many snippets through the real ``PythonTool`` in one sandboxed process (each with fresh globals, as
    a stateless call would run it) and remember each one's output. The first snippet is also run alone and
    must give the same text (the batch is a faster way to make the same calls, not a different tool)."""
    todo = [c for c in dict.fromkeys(codes) if c not in _PYTHON_RESULTS]
    if not todo:
        return
    python_tool = tools()[0]
    script = "\n".join(f"print({_MARK.format(i)!r})\nexec(compile({c!r}, '<python>', 'exec'), {{'__name__': '__main__'}})"
                       for i, c in enumerate(todo))
    result = python_tool.call("python", script)
    if result.error:
        raise RuntimeError(f"the python tool failed on a batch of {len(todo)} training snippets: {result.error}")
    parts = result.text.split("\n")
    outputs, current = {}, None
    for line in parts[:-1] if result.text.endswith("\n") else parts:
        if line.startswith("@@nano-snippet-") and line.endswith("@@"):
            current = int(line[len("@@nano-snippet-"):-2])
            outputs[current] = ""
        elif current is not None:
            outputs[current] += line + "\n"
    if sorted(outputs) != list(range(len(todo))):
        raise RuntimeError("the python tool's batch output lost snippet markers")
    alone = python_tool.call("python", todo[0])
    if alone.error or alone.text != outputs[0]:
        raise RuntimeError(f"batched python output {outputs[0]!r} differs from a single call's {alone.text!r}")
    _PYTHON_RESULTS.update((c, outputs[i]) for i, c in enumerate(todo))


def solve(task: Task, effort: str, conv: Conversation) -> Conversation:
    """Append the assistant's messages and the tools' real answers to ``conv`` (in place)."""
    python_tool, function_tools = tools()
    plan = task.steps(effort)
    step, reply = next(plan), None
    while True:
        if step.kind == "python":
            conv.assistant(step.text, channel="analysis", recipient="python", content_type="code")
            if step.text not in _PYTHON_RESULTS:
                result = python_tool.call("python", step.text)
                if result.error:
                    raise RuntimeError(f"the python tool failed on training code {step.text!r}: {result.error}")
                _PYTHON_RESULTS[step.text] = result.text
            reply = _PYTHON_RESULTS[step.text]
            conv.tool("python", reply, channel="analysis")
        elif step.kind == "function":
            recipient = f"functions.{step.name}"
            conv.assistant(step.text, channel="commentary", recipient=recipient, content_type="<|constrain|>json")
            result = function_tools.call(recipient, step.text)
            if result.error:
                raise RuntimeError(f"{recipient} failed on {step.text!r}: {result.error}")
            conv.tool(recipient, result.text, channel="commentary")
            reply = result.text
        else:
            conv.assistant(step.text, channel=step.kind)
            reply = None
        try:
            step = plan.send(reply)
        except StopIteration:
            return conv


@lru_cache(maxsize=1)
def _assistant_id() -> int:
    (tok,) = encoding().encode("assistant")
    return tok


def tokens_and_mask(conv: Conversation) -> tuple[list[int], list[bool]]:
    """Token ids of the whole conversation (analysis kept, the last message ending in ``<|return|>``) and the
    loss mask: True on every token the model generates. That is each assistant message from its header on,
    including ``<|start|>assistant`` when it follows another assistant message (the model writes it), but
    not when a prompt hands it over (after a user or tool message), and including its end token."""
    ids = conv.render_all(auto_drop_analysis=False)
    if ids[-1] != T.END:
        raise ValueError("the conversation must end with a complete message")
    ids[-1] = T.RETURN
    mask = [False] * len(ids)
    assistant, prev_assistant, i = _assistant_id(), False, 0
    while i < len(ids):
        if ids[i] != T.START:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(ids)) if ids[j] in T.MESSAGE_END)
        is_assistant = ids[i + 1] == assistant
        if is_assistant:
            for j in range(i if prev_assistant else i + 2, end + 1):
                mask[j] = True
        prev_assistant, i = is_assistant, end + 1
    return ids, mask


@dataclass
class Example:
    family: str
    effort: str
    question: str
    target: str
    tokens: list[int]
    mask: list[bool]


def make_example(family: str, effort: str, rng: random.Random) -> Example:
    """One example (held-out or not: for inspection; ``training_examples`` filters)."""
    task = MAKERS[family](rng)
    ids, mask = tokens_and_mask(solve(task, effort, prompt(task, effort, rng)))
    return Example(family, effort, task.question, task.target, ids, mask)


# ================================================================================================
# train / held-out splits
# ================================================================================================

def is_heldout(question: str) -> bool:
    """A fifth of each family's question space, chosen by a hash of the question text, is held out: never
    trained on, drawn from by ``heldout_tasks`` (small spaces such as the weekday questions stay disjoint)."""
    return zlib.crc32(question.encode()) % 5 == 0


def heldout_tasks(family: str, n: int, seed: int = 0) -> list[Task]:
    """``n`` held-out tasks of one family, from their own seed space (``nano/heldout/...``)."""
    out, i = [], 0
    while len(out) < n:
        task = MAKERS[family](random.Random(f"nano/heldout/{family}/{seed}/{i}"))
        i += 1
        if is_heldout(task.question):
            out.append(task)
    return out


@lru_cache(maxsize=1)
def eval_task_questions() -> frozenset[str]:
    """The questions of the ``addition``, ``counting`` and ``product`` eval tasks (difficulties 1-5, seeds 0-2):
    the held-out measurements through ``workbench eval`` ask these, so training never does."""
    from ..evals.tasks import generated

    return frozenset(x.question for kind in ("addition", "counting", "product") for d in range(1, 6) for s in range(3)
                     for x in generated(kind, d, seed=s).samples())


def trainable(family: str, question: str) -> bool:
    return family == "greeting" or not (is_heldout(question) or question in eval_task_questions())


def training_examples(n: int, seed: int = 0, *, families: dict[str, float] | None = None,
                      progress: bool = False) -> list[Example]:
    """``n`` training examples, deterministic for ``seed``: families drawn by weight, efforts uniformly;
    held-out questions (``is_heldout``, ``eval_task_questions``) are skipped."""
    weights = families or FAMILIES
    names = list(weights)
    rng = random.Random(f"nano/train/{seed}")
    chosen, i = [], 0
    while len(chosen) < n:
        family = rng.choices(names, weights=[weights[f] for f in names])[0]
        effort = rng.choices(EFFORTS, weights=EFFORT_WEIGHTS.get(family, (1, 1, 1)))[0]
        task_rng = random.Random(f"nano/train/{seed}/{i}")
        i += 1
        task = MAKERS[family](task_rng)
        if trainable(family, task.question):
            chosen.append((task, effort, task_rng))
    prefetch_python([t.meta["code"] for t, _, _ in chosen if "code" in t.meta])
    out = []
    for task, effort, task_rng in _bar(chosen, progress):
        ids, mask = tokens_and_mask(solve(task, effort, prompt(task, effort, task_rng)))
        out.append(Example(task.family, effort, task.question, task.target, ids, mask))
    return out


def _bar(items, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc="data", unit="conv", disable=not enabled, leave=False)


def used_ids(examples: Sequence[Example]) -> list[int]:
    """Sorted ids that occur anywhere in the examples (the rows training updates)."""
    seen: set[int] = set()
    for ex in examples:
        seen.update(ex.tokens)
    return sorted(seen)
