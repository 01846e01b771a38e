"""Built-in tasks (answers re-derived independently from the question text) and the file loaders."""

import datetime as dt
import json
import re

import pytest

from workbench.evals import datasets, get_task, task_names
from workbench.evals.tasks import GENERATED


def _independent_answer(kind, question):
    """Solve a generated question from its text alone (an oracle independent of the generator's math)."""
    if kind == "arithmetic":
        expr = re.match(r"Compute (.*)\. Put", question).group(1)
        assert re.fullmatch(r"[\d\s+\-*()]+", expr)
        return str(eval(expr))  # noqa: S307 - checked to be digits and operators only
    if kind == "modular":
        a, b, c, m = map(int, re.findall(r"\d+", question.split("?")[0]))
        return str((a ** b + c) % m if "^" in question else (a * b + c) % m)
    if kind == "dates":
        dates = [dt.date.fromisoformat(d) for d in re.findall(r"\d{4}-\d\d-\d\d", question)]
        if "How many days" in question:
            return str((dates[1] - dates[0]).days)
        n = int(re.search(r"is (\d+) days", question).group(1))
        return (dates[0] + dt.timedelta(days=n if "after" in question else -n)).isoformat()
    if kind == "counting":
        word = re.search(r"word '(\w+)'", question).group(1)
        items = question.split("list: ")[1].split("?")[0].split(", ")
        return str(sum(w == word for w in items))
    if kind == "addition":
        a, b = (int(x.replace(",", "")) for x in re.fullmatch(r"What is ([\d,]+) \+ ([\d,]+)\?", question).groups())
        return str(a + b)
    if kind == "product":
        a, b = (int(x.replace(",", "")) for x in re.match(r"What is ([\d,]+) × ([\d,]+)\?", question).groups())
        return str(a * b)
    if kind == "sorting":
        nums = [int(x) for x in question.split("order: ")[1].split(". Give")[0].split(", ")]
        return ", ".join(map(str, sorted(nums)))


@pytest.mark.parametrize("kind", list(GENERATED))
@pytest.mark.parametrize("difficulty", [1, 3, 5])
def test_generated_tasks_are_right_and_scored(kind, difficulty):
    task = get_task(f"{kind}:{difficulty}")
    samples = task.samples(limit=25)
    assert len(samples) == 25 and len({s.id for s in samples}) == 25
    for s in samples:
        assert s.target == _independent_answer(kind, s.question), s.question
        assert task.scorer(f"So the answer is \\boxed{{{s.target}}}.", s).correct
        assert not task.scorer("I don't know.", s).correct
        if re.fullmatch(r"-?\d+", s.target):  # an integer target: one off is wrong, however large
            off = str(int(s.target) + 1)
            assert not task.scorer(f"\\boxed{{{off}}}", s).correct, (s.target, off)


def test_generated_tasks_are_deterministic_and_prefix_stable():
    a = [s.question for s in get_task("arithmetic:3").samples(limit=10)]
    b = [s.question for s in get_task("arithmetic:3").samples(limit=30)]
    assert a == b[:10]
    assert a != [s.question for s in get_task("arithmetic:3", seed=1).samples(limit=10)]
    assert len(set(a)) == 10
    # the difficulty knob changes the problems and lengthens them
    easy = get_task("sorting:1").samples(limit=5)[0].question
    hard = get_task("sorting:5").samples(limit=5)[0].question
    assert hard.count(",") > easy.count(",")
    assert get_task("arithmetic").name == "arithmetic" and get_task("arithmetic:4").name == "arithmetic:4"
    assert get_task("dates", seed=3).name == "dates@3"
    # addition: (d+2)- to (d+5)-digit operands, 1,000 distinct questions per seed (n >= 200 per effort, no repeats)
    add = get_task("addition:2").samples()
    assert len(add) == 1000 and len({s.question for s in add}) == 1000
    widths = [len(x.replace(",", "")) for s in add for x in re.findall(r"[\d,]+(?=[ ?])", s.question)]
    assert set(widths) == {4, 5, 6, 7} and all(250 < widths.count(w) < 750 for w in range(4, 8))
    assert all(int(s.target) == sum(int(x.replace(",", "")) for x in re.findall(r"[\d,]+(?=[ ?])", s.question))
               for s in add)
    # a task's name is a spec for itself (how a stored sweep finds its tasks again)
    for spec in ("arithmetic", "arithmetic:4", "dates@3", "sorting:5@2"):
        task = get_task(spec)
        assert get_task(task.name).name == task.name
    assert get_task("sorting:5@2").samples(limit=3)[2].question == get_task(
        "sorting:5", seed=2).samples(limit=3)[2].question


@pytest.mark.parametrize("kind", list(GENERATED))
def test_built_in_tasks_declare_their_comparison(kind):
    task = get_task(kind)
    assert repr(task) == f"Task({kind!r}, scorer={task.scorer!r})"
    assert task.comparison == task.scorer.comparison
    assert "tol=" not in task.comparison  # every built-in target is an integer, a date or a list: no tolerance
    if task.scorer.name == "numeric":
        assert task.scorer.settings == {"rel_tol": 0.0, "abs_tol": 0.0}


def test_task_spec_errors():
    for bad, match in [("nope", "unknown task"), ("arithmetic:9", "difficulty"), ("arithmetic:x", "difficulty"),
                       ("gpqa", "needs a file")]:
        with pytest.raises(ValueError, match=match):
            get_task(bad)
    assert task_names()[:len(GENERATED)] == list(GENERATED)


GPQA_HEADER = "Record ID,Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3,Subdomain\n"


def test_gpqa_shuffles_choices_per_repeat(tmp_path):
    path = tmp_path / "gpqa_diamond.csv"
    rows = [f'rec{i},"Which is right, {i}?",right{i},wrong{i}a,wrong{i}b,"wrong{i}c, with a comma",Physics\n'
            for i in range(12)]
    path.write_text(GPQA_HEADER + "".join(rows))
    task = get_task(f"gpqa:{path}")
    assert task.name == "gpqa:gpqa_diamond"
    orders = []
    for repeat in range(3):
        samples = task.samples(repeat)
        assert [s.id for s in samples] == [f"rec{i}" for i in range(12)]
        for i, s in enumerate(samples):
            assert sorted(s.choices) == sorted([f"right{i}", f"wrong{i}a", f"wrong{i}b", f"wrong{i}c, with a comma"])
            assert s.choices["ABCD".index(s.target)] == f"right{i}"  # the target letter follows the shuffle
            assert task.scorer(f"Answer: {s.target}", s).correct
        orders.append([s.target for s in samples])
        assert task.samples(repeat)[0].choices == samples[0].choices  # same repeat, same order
    assert orders[0] != orders[1] or orders[1] != orders[2]  # repeats see other orders
    assert len({t for o in orders for t in o}) > 1  # the right answer is not always A
    prompt = task.prompt(task.samples(0)[0])
    assert "A) " in prompt and "D) " in prompt and "Which is right, 0?" in prompt


def test_gpqa_errors(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("Question,Correct Answer\nq,a\n")
    with pytest.raises(ValueError, match="missing columns"):
        datasets.gpqa(path)
    path.write_text(GPQA_HEADER + "r1,q,,b,c,d,x\n")
    with pytest.raises(ValueError, match="row 2.*Correct Answer"):
        datasets.gpqa(path)


def test_aime_jsonl(tmp_path):
    path = tmp_path / "aime24.jsonl"
    path.write_text("\n".join([
        json.dumps({"ID": "2024-I-1", "Problem": "Find x.", "Answer": 33}),
        json.dumps({"id": "2024-I-2", "problem": "Find y.", "solution": r"... \boxed{5} then \boxed{204}"}),
        "",
    ]))
    task = get_task(f"aime:{path}")
    a, b = task.samples()
    assert (a.id, a.target, b.id, b.target) == ("2024-I-1", "33", "2024-I-2", "204")
    assert task.scorer(r"\boxed{033}", a).correct and not task.scorer("33", a).correct
    path.write_text(json.dumps({"problem": "p", "solution": "no box"}) + "\n")
    with pytest.raises(ValueError, match=r"aime24.jsonl:1: no 'answer'"):
        datasets.aime(path)
    path.write_text('{"problem": "p", "answer": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"aime24.jsonl:2: not valid JSON"):
        datasets.aime(path)


def test_generic_jsonl(tmp_path):
    mc = tmp_path / "mc.jsonl"
    mc.write_text("\n".join(json.dumps(r) for r in [
        {"question": "2+2?", "choices": ["3", "4"], "answer": "4"},
        {"question": "Sky?", "choices": ["blue", "green", "red"], "answer": 0},
        {"question": "Last?", "choices": ["x", "y", "z"], "answer": "c"},
    ]))
    task = datasets.jsonl(mc)
    assert [s.target for s in task.samples()] == ["B", "A", "C"]
    assert task.scorer("Answer: B", task.samples()[0]).correct
    num = tmp_path / "num.jsonl"
    num.write_text('{"question": "6*7?", "answer": "42"}\n{"question": "1/4?", "answer": 0.25}\n')
    task = datasets.jsonl(num)
    assert task.scorer("it is 42", task.samples()[0]).correct
    assert not task.scorer("it is 42.00001", task.samples()[0]).correct  # integers exactly
    assert task.scorer(r"\boxed{\frac{1}{4}}", task.samples()[1]).correct
    assert repr(task.scorer) == "numeric(rel_tol=1e-06, abs_tol=0.0)"  # 0.25 is not an integer
    assert repr(datasets.jsonl(num, rel_tol=0.01).scorer) == "numeric(rel_tol=0.01, abs_tol=0.0)"
    num.write_text('{"question": "6*7?", "answer": "42"}\n{"question": "big?", "answer": "9,066,850"}\n')
    task = datasets.jsonl(num)
    assert repr(task.scorer) == "numeric(rel_tol=0.0, abs_tol=0.0)"  # all integers: exact, and says so
    assert task.scorer(r"\boxed{9066850}", task.samples()[1]).correct
    assert not task.scorer(r"\boxed{9066851}", task.samples()[1]).correct
    text = tmp_path / "text.jsonl"
    text.write_text('{"question": "Capital of France?", "answer": "Paris", "id": "fr"}\n')
    task = datasets.jsonl(text)
    assert task.samples()[0].id == "fr" and task.scorer(r"\boxed{Paris}", task.samples()[0]).correct
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "choices": ["a", "b"], "answer": "z"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: answer 'z'"):
        datasets.jsonl(bad)
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: missing field 'answer'"):
        datasets.jsonl(bad)
    bad.write_text('[1, 2]\n')
    with pytest.raises(ValueError, match="expected a JSON object"):
        datasets.jsonl(bad)
