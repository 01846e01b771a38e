"""The project's own clients against `workbench serve`: `workbench chat --base-url` with the python tool,
`workbench eval --api chat|responses`, a tool-using task with the python tool in the loop, and a
model-graded scorer whose judge is its own server.

The served "model" here is a small Backend that acts like a tool-using model: asked a product, it
calls python with the code that computes it; shown the tool's answer, it answers with that text. So
the number in the final answer is what the real sandboxed python printed, and the expected value is
computed here independently.
"""

from __future__ import annotations

import json
import re

import pytest

from workbench.backends import Backend
from workbench.cli import main
from workbench.evals import get_task, load, model_graded, run_sweep, server
from workbench.evals.fake import FakeServer
from workbench.evals.runner import Target
from workbench.harmony import encoding, text_of
from workbench.serve import make_server


class ToolUser(Backend):
    """Calls python (as a built-in, or as the ``python`` function a chat client offers) with the product
    asked for, then answers with what the tool printed."""

    def generate(self, prompt, *, max_new_tokens=2048, **options):
        if isinstance(prompt, list):  # the server's look-ahead for a second parallel call: there is none
            yield from encoding().encode("<|channel|>final<|message|>", allowed_special="all")
            return
        last = prompt.messages[-1]
        if last.author.role.value == "tool":
            text = f"<|channel|>analysis<|message|>The tool said it.<|end|><|start|>assistant<|channel|>final" \
                   f"<|message|>\\boxed{{{text_of(last).strip()}}}<|return|>"
        else:
            a, b = re.findall(r"[\d,]+(?=\D)", text_of(last).replace(",", ""))[:2] or ("6", "7")
            code = f"print({a} * {b})"
            if "functions.python" in prompt.recipients:  # a chat client offered python as a function
                text = f"<|channel|>commentary to=functions.python <|constrain|>json<|message|>" \
                       f"{json.dumps({'code': code})}<|call|>"
            else:
                text = f"<|channel|>analysis to=python code<|message|>{code}<|call|>"
        yield from encoding().encode(text, allowed_special="all")[:max_new_tokens]


@pytest.fixture(scope="module")
def served():
    with make_server(ToolUser(), "tool-user", port=0, max_model_len=4096).start() as s:
        yield s


def test_chat_cli_runs_python_against_workbench_serve(served, capsys):
    assert main(["chat", "--base-url", served.url, "--model", "tool-user", "--python", "--no-color",
                 "-m", "What is 1234 x 5678?"]) == 0
    out = capsys.readouterr().out
    assert "[python answered" in out and str(1234 * 5678) in out
    for api in ("chat", "responses"):
        assert main(["chat", "--base-url", served.url, "--api", api, "--model", "tool-user", "--python",
                     "--no-color", "-m", "What is 99 x 101?"]) == 0
        assert f"\\boxed{{{99 * 101}}}" in capsys.readouterr().out


@pytest.mark.parametrize("args, needle", [
    (["--model", "nope"], "the server answered 404: the model 'nope' does not exist"),
    (["--model", "tool-user", "--temperature", "9"], "the server answered 400: 'temperature' = 9.0 is out of range"),
])
def test_chat_cli_prints_one_line_errors(served, capsys, args, needle):
    assert main(["chat", "--base-url", served.url, "--no-color", "-m", "hi", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_chat_cli_unreachable_server_is_one_line(capsys):
    assert main(["chat", "--base-url", "http://127.0.0.1:9/v1", "--no-color", "-m", "hi"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("workbench chat: error: cannot reach the server") and len(err.splitlines()) == 1


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_tool_task_sweep_through_the_server_keeps_the_trace(served, tmp_path, api):
    """The product task runs the python tool in the loop (client side, over either API); every sample
    is scored exactly and its record holds the tool trace and the whole token stream."""
    task = get_task("product:1")
    assert task.tools == ("python",)
    result = run_sweep([task], [server("tool-user", served.url, api=api)], out=tmp_path, efforts=["low"], limit=3,
                       progress=False)
    assert (result.ran, result.failed) == (3, 0)
    df = load(tmp_path)
    for _, r in df.iterrows():
        sample = next(s for s in task.samples() if s.id == r["sample"])
        assert r["correct"] and r["target"] == sample.target
        (step,) = r["tool_trace"]
        a, b = (int(x) for x in re.findall(r"[\d,]+(?=\D)", sample.question.replace(",", ""))[:2])
        assert step["recipient"] == "python" and step["result"].strip() == str(a * b) == sample.target
        text = encoding().decode(list(r["tokens"]))
        assert "<|start|>python to=assistant" in text and text.endswith("<|return|>")


def test_tool_task_in_process(tmp_path):
    result = run_sweep(["product:1"], [Target("in-process", [ToolUser()])], out=tmp_path, efforts=["high"], limit=2,
                       progress=False)
    df = load(tmp_path)
    assert result.failed == 0 and df["correct"].all() and all(len(t) == 1 for t in df["tool_trace"])


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_eval_cli_api_flag(tmp_path, api, capsys):
    with FakeServer().start() as fake:
        assert main(["eval", "--base-url", fake.url, "--api", api, "--model", "fake", "--tasks", "arithmetic",
                     "--limit", "2", "--efforts", "low", "--out", str(tmp_path), "--no-plots", "--no-progress"]) == 0
        paths = {b.get("messages") is not None for b in fake.bodies}
    assert paths == {api == "chat"}  # chat sends messages, Responses sends input items
    df = load(tmp_path)
    assert (df["reasoning"] == "Let me think. The answer is clear.").all()


def test_model_graded_scorer_asks_its_own_judge_server():
    """The judge sees question, reference and answer; its GRADE decides."""
    def judge(messages):
        prompt = messages[-1]["content"] if isinstance(messages[-1].get("content"), str) else ""
        ref = prompt.split("[Reference answer]\n")[1].split("\n")[0]
        answer = prompt.split("[Submitted answer]\n")[1]
        return "Comparing.", f"Same value.\nGRADE: {'C' if ref in answer else 'I'}"

    with FakeServer(answer=judge, model="judge").start() as fake:
        scorer = model_graded("judge", fake.url)
        task = get_task("arithmetic")
        sample = task.samples(limit=1)[0]
        assert scorer(f"It is {sample.target}.", sample).correct
        wrong = scorer("It is 12345678.", sample)
        assert not wrong.correct and wrong.answer == "I"
        assert scorer(None, sample).value == 0.0
        assert "judge" in repr(scorer) and len(fake.bodies) == 2
        body = fake.bodies[0]
        assert body["temperature"] == 0.0 and sample.question in body["messages"][-1]["content"]
