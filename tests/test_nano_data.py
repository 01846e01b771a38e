"""The nano model's training data: Harmony rendering (openai-harmony is the oracle), loss masks, effort-dependent
working that is arithmetically right (checked by independent code here), real tool results, held-out splits."""

from __future__ import annotations

import random
import re

import pytest

from workbench.evals.tasks import generated
from workbench.harmony import Conversation, StreamDecoder, encoding
from workbench.harmony import tokens as T
from workbench.nano import data


@pytest.fixture(scope="module")
def examples():
    return data.training_examples(240, seed=123)


def _conversation(family: str, effort: str, seed: int) -> tuple[data.Task, Conversation]:
    rng = random.Random(seed)
    task = data.MAKERS[family](rng)
    return task, data.solve(task, effort, data.prompt(task, effort, rng))


@pytest.mark.parametrize("family", list(data.MAKERS))
@pytest.mark.parametrize("effort", data.EFFORTS)
def test_tokens_are_harmony_and_mask_is_what_the_model_generates(family, effort):
    task, conv = _conversation(family, effort, seed=hash((family, effort)) % 1000)
    ids, mask = data.tokens_and_mask(conv)
    enc = encoding()
    want = enc.render_conversation(conv.to_harmony(), _keep_analysis())
    assert ids[:-1] == want[:-1] and want[-1] == T.END and ids[-1] == T.RETURN
    # Independently: each generation starts where openai-harmony's completion prompt for the conversation so far
    # ends, and runs to the next <|call|> or the final <|return|>; the mask is exactly the union of those spans.
    expected = [False] * len(ids)
    msgs = conv.messages
    for k, m in enumerate(msgs):
        if m.author.role.value == "assistant" and msgs[k - 1].author.role.value != "assistant":
            start = len(Conversation(msgs[:k]).render())
            assert ids[:start] == Conversation(msgs[:k]).render()
            end = next(j for j in range(start, len(ids)) if ids[j] in (T.CALL, T.RETURN))
            expected[start:end + 1] = [True] * (end + 1 - start)
    assert mask == expected
    # every generated span parses as a clean completion under the conversation's channels and tools
    spans = re.findall(r"1+", "".join("1" if x else "0" for x in mask))
    pos = 0
    for span in spans:
        pos = "".join("1" if x else "0" for x in mask).index(span, pos)
        decoder = StreamDecoder("assistant", channels=conv.channels, recipients=conv.recipients or None)
        for t in ids[pos:pos + len(span)]:
            decoder.push(t)
        transcript = decoder.finish()
        assert not transcript.errors, (family, effort, transcript.errors)
        pos += len(span)


def _keep_analysis():
    from openai_harmony import RenderConversationConfig

    return RenderConversationConfig(auto_drop_analysis=False)


def _analysis(conv: Conversation) -> str:
    return "\n".join(m.content[0].text for m in conv.messages if m.channel == "analysis"
                     and m.author.role.value == "assistant" and m.recipient is None)


def _check_columns(text: str, a: int, b: int) -> int:
    """Every column line of an addition working re-checked from the numbers; returns how many there are."""
    width = max(len(str(a)), len(str(b)))
    carry = 0
    cols = re.findall(r"^([a-z-]+) (\d)\+(\d)\+(\d)=(\d+) carry (\d)$", text, re.M)
    for p, col in enumerate(cols):
        place, x, y = col[:3]
        assert place == data.PLACES[p]
        if p < width:
            assert int(x) == a // 10 ** p % 10 and int(y) == b // 10 ** p % 10
        c, s, c2 = map(int, col[3:])
        assert c == carry and s == int(x) + int(y) + carry and c2 == s // 10
        carry = c2
    assert len(cols) == len(str(a + b)) or a + b == 0
    assert re.search(r"So the sum is ([\d,]+)\.$", text).group(1) == f"{a + b:,}"
    return len(cols)


@pytest.mark.parametrize("seed", range(30))
def test_addition_working_is_right(seed):
    """Every column line and the read-back of the high-effort working, and every column line of the medium one,
    re-checked from the question's numbers."""
    task, high = _conversation("addition", "high", seed)
    a, b = (int(x.replace(",", "")) for x in re.findall(r"[\d,]+(?=[ ?])", task.question))
    text = _analysis(high)
    n = _check_columns(text, a, b)
    top = re.search(r"From the top: (.*)\.", text).group(1)
    assert [int(d) for d in re.findall(r"\d", top)] == [int(c) for c in str(a + b).zfill(n)]
    regroup = re.search(r"In groups: (.*)\.", text).group(1)
    assert regroup == ", ".join(f"{' '.join(g)} is {g}" for g in f"{a + b:,}".split(","))
    assert high.messages[-1].content[0].text == f"{a:,} + {b:,} = {a + b:,}"
    medium = _analysis(_conversation("addition", "medium", seed)[1])  # the same question, its working on a budget
    within = max(a, b) < data.MEDIUM_BUDGET
    assert (medium == text) == within and (within or "too long to work by columns" in medium), (a, b, medium)


def test_effort_sets_the_depth_of_the_analysis():
    enc = encoding()
    for family in ("addition", "weekday", "counting"):
        for seed in range(8):
            lengths = [len(enc.encode(_analysis(_conversation(family, e, seed)[1]))) for e in data.EFFORTS]
            if family == "addition" and lengths[1] == lengths[2]:  # medium's working is high's, within its budget
                assert lengths[0] < lengths[1], (seed, lengths)
            else:
                assert lengths[0] < lengths[1] < lengths[2], (family, seed, lengths)
            assert lengths[0] <= 16  # low: one short sentence restating the task


def test_tools_are_real_and_on_the_real_channels():
    """Python on the analysis channel with content type code, its answer exactly what PythonTool prints for the
    code run alone; functions on commentary with <|constrain|>json and the function's real result."""
    from workbench.nano.functions import convert_currency, get_weather
    from workbench.tools import PythonTool

    tool = PythonTool()
    for seed in range(3):
        task, conv = _conversation("python", "medium", seed)
        call = next(m for m in conv.messages if m.recipient == "python")
        answer = next(m for m in conv.messages if m.author.name == "python")
        assert call.channel == "analysis" and call.content_type == "code"
        assert answer.content[0].text == tool.call("python", call.content[0].text).text
        assert answer.content[0].text.strip().replace(",", "") == task.target
        # the system message describes the python tool with the text PythonTool itself declares
        assert conv.system_content.tools["python"].description == tool.config().description
    for seed in range(6):
        task, conv = _conversation("function", "high", seed)
        call = next(m for m in conv.messages if (m.recipient or "").startswith("functions."))
        answer = next(m for m in conv.messages if (m.author.name or "").startswith("functions."))
        assert call.channel == "commentary" and call.content_type == "<|constrain|>json"
        fn = {"functions.get_weather": get_weather, "functions.convert_currency": convert_currency}[call.recipient]
        import json
        assert json.loads(answer.content[0].text) == fn(**json.loads(call.content[0].text))


def test_batched_python_runs_equal_single_calls():
    from workbench.tools import PythonTool

    codes = [data.python_question(random.Random(f"batch{i}"))[1] for i in range(4)]
    data._PYTHON_RESULTS.clear()
    data.prefetch_python(codes)
    tool = PythonTool()
    assert [data._PYTHON_RESULTS[c] for c in codes] == [tool.call("python", c).text for c in codes]


def test_deterministic_and_disjoint_from_held_out(examples):
    again = data.training_examples(240, seed=123)
    assert [e.tokens for e in again] == [e.tokens for e in examples]
    assert [e.tokens for e in data.training_examples(20, seed=124)] != [e.tokens for e in examples[:20]]
    questions = {e.question for e in examples if e.family != "greeting"}
    assert not any(data.is_heldout(q) for q in questions)
    for family in data.MAKERS:
        if family != "greeting":
            held = {t.question for t in data.heldout_tasks(family, 200)}
            assert len(held) > 20 and not held & questions
    evals = {s.question for kind in ("addition", "product") for d in range(1, 6) for s in generated(kind, d).samples()}
    assert not evals & questions and evals <= data.eval_task_questions()
    assert {e.family for e in examples} == set(data.MAKERS) and {e.effort for e in examples} == set(data.EFFORTS)
