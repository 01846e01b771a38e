"""Re-scoring a stored sweep offline: a sweep scored by the old, tolerant scorer is corrected in place,
atomically, with the old scores kept. Expected flips come from integer arithmetic on the scripted answers."""

import json
import math
import os
import subprocess

import pytest

from workbench.backends.scripted import ScriptedBackend
from workbench.evals import datasets, get_task, load, rescore, run_sweep
from workbench.evals.logs import LogWriter, read_records
from workbench.evals.runner import Target
from workbench.evals.scorers import Score, Scorer, extract_boxed
from workbench.evals.tasks import Task

N = 12


def _old_numeric(output, sample) -> Score:
    """The scorer sweeps used before: floats compared with math.isclose(rel_tol=1e-6)."""
    box = extract_boxed(output)
    try:
        ok = box is not None and math.isclose(float(box.replace(",", "")), float(sample.target), rel_tol=1e-6)
    except ValueError:
        ok = False
    return Score(float(ok), box)


def _reply(text: str) -> str:
    return (f"<|channel|>analysis<|message|>Working it out.<|end|><|start|>assistant<|channel|>final<|message|>"
            f"So the answer is \\boxed{{{text}}}.<|return|>")


def _stored_sweep(out, task_spec="arithmetic:5"):
    """A sweep of N samples scored by the old scorer; answers right, off by one, or right with separators."""
    current = get_task(task_spec)
    samples = current.samples(limit=N)
    answers = []
    for i, s in enumerate(samples):
        t = int(s.target)
        answers.append([str(t), str(t + 1), f"{t:,}"][i % 3])
    old = Task(current.name, current.dataset, Scorer("numeric", _old_numeric, "old float isclose"),
               current.instructions)
    run_sweep([old], [Target("scripted", [ScriptedBackend(_reply(a) for a in answers)])], efforts=["low"],
              limit=N, out=out, progress=False)
    return samples, answers


def test_rescore_corrects_a_stored_sweep_offline(tmp_path):
    out = tmp_path / "sweep"
    samples, answers = _stored_sweep(out)
    truth = {s.id: int(a.replace(",", "")) == int(s.target) for s, a in zip(samples, answers)}
    old = {r["sample"]: r for r in read_records(out)}
    assert len(old) == N and all("rescored_from" not in r for r in old.values())
    flips = {sid for sid, r in old.items() if r["correct"] and not truth[sid]}
    assert flips, "the old scorer must have accepted some off-by-one answers for this test to mean anything"
    # the answers with separators stay right; only what was extracted changes ('9,066,850' -> '9066850')
    regrouped = {s.id for s, a in zip(samples, answers) if "," in a}
    before = (out / "samples.jsonl").read_bytes()

    dry = rescore(out, dry_run=True)
    assert not dry.written and (out / "samples.jsonl").read_bytes() == before
    assert {c["sample"] for c in dry.changes} == flips | regrouped

    result = rescore(out)
    assert result.written and result.records == result.scored == N and result.now_wrong == len(flips)
    assert result.now_right == 0 and not result.unresolved
    assert "now wrong" in repr(result) and set(result.frame()["sample"]) == flips | regrouped
    new = {r["sample"]: r for r in read_records(out)}
    assert {sid: r["correct"] for sid, r in new.items()} == truth
    old_lines = before.decode().splitlines()
    new_lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(new_lines) == N
    for line_old, line_new in zip(old_lines, new_lines):
        sid = json.loads(line_old)["sample"]
        rec = json.loads(line_new)
        if sid in regrouped:
            assert rec["correct"] and rec["extracted"] == str(int(rec["extracted"]))
            assert rec["rescored_from"][0]["extracted"] == old[sid]["extracted"] and "," in old[sid]["extracted"]
        elif sid in flips:
            assert rec["score"] == 0.0 and rec["scorer"] == "numeric(rel_tol=0.0, abs_tol=0.0)"
            assert rec["rescored_from"] == [{"score": 1.0, "correct": True, "extracted": old[sid]["extracted"],
                                             "target": old[sid]["target"], "scorer": "numeric()",
                                             "time": old[sid]["time"]}]
            assert {k: v for k, v in rec.items() if k not in ("score", "correct", "extracted", "scorer", "rescored_at",
                                                               "rescored_from")} == {
                k: v for k, v in old[sid].items() if k not in ("score", "correct", "extracted", "scorer")}
        else:
            assert line_new == line_old  # unchanged records stay byte for byte
    assert load(out)["correct"].sum() == sum(truth.values())

    again = rescore(out)  # scoring again with the same scorers changes nothing and writes nothing
    assert not again.changes and not again.written and again.scored == N


def test_rescore_from_the_command_line(tmp_path):
    out = tmp_path / "sweep"
    samples, answers = _stored_sweep(out)
    r = subprocess.run(["workbench", "eval", "--rescore", "--out", str(out), "--no-plots"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    wrong = sum(int(a.replace(",", "")) != int(s.target) for s, a in zip(samples, answers))
    assert "now wrong" in r.stdout and "written" in r.stdout
    summary = [line.split() for line in r.stdout.splitlines() if line.split()[:3] == ["scripted", "low", "arithmetic:5"]]
    assert summary and summary[0][3:5] == [str(N), str(N - wrong)]  # n, correct


def test_file_tasks_need_their_spec_and_targets_follow_the_task(tmp_path):
    data = tmp_path / "nums.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"{i} * 1000003?", "answer": str(i * 1000003)})
                              for i in range(1, 5)))
    task = datasets.jsonl(data)
    old = Task(task.name, task.dataset, Scorer("numeric", _old_numeric, "old"), task.instructions)
    answers = [str(i * 1000003 + 1) for i in range(1, 5)]  # all off by one
    out = tmp_path / "sweep"
    run_sweep([old], [Target("m", [ScriptedBackend(_reply(a) for a in answers)])], efforts=["high"], out=out,
              progress=False)
    before = (out / "samples.jsonl").read_bytes()
    result = rescore(out)  # the file task's spec was not given: left alone, and said so
    assert result.unresolved == {"jsonl:nums": 4} and not result.changes and not result.written
    assert "not found" in repr(result) and (out / "samples.jsonl").read_bytes() == before
    result = rescore(out, [f"jsonl:{data}"])
    assert result.now_wrong == 4 and not result.unresolved
    # A target fixed in the data file since the sweep is picked up: the question is the same.
    data.write_text("\n".join(json.dumps({"question": f"{i} * 1000003?", "answer": str(i * 1000003 + 1)})
                              for i in range(1, 5)))
    result = rescore(out, [f"jsonl:{data}"])
    assert result.now_right == 4
    assert all(r["target"] == str(int(r["extracted"])) and r["rescored_from"][-1]["target"] != r["target"]
               for r in read_records(out))
    assert [len(r["rescored_from"]) for r in read_records(out)] == [2] * 4  # both earlier scorings kept


def test_rescore_is_atomic_and_respects_the_sweep_lock(tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    _stored_sweep(out)
    log = out / "samples.jsonl"
    with LogWriter(out):  # a sweep writing this folder: rescore refuses
        with pytest.raises(RuntimeError, match="another sweep is writing"):
            rescore(out)
    # a corrupt line in the middle and a torn last record survive a rewrite untouched
    lines = log.read_bytes().split(b"\n")
    lines.insert(3, b"{not json")
    log.write_bytes(b"\n".join(lines) + b'{"task": "arithmetic:5", "sam')
    with pytest.warns(RuntimeWarning, match="corrupt"):
        before = list(read_records(out))

    def crash(*args):
        raise OSError("disk full")

    data = log.read_bytes()
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        rescore(out)
    assert log.read_bytes() == data and sorted(p.name for p in out.iterdir() if "tmp" in p.name) == []
    monkeypatch.undo()
    result = rescore(out)
    assert result.written and result.records == N
    after = log.read_bytes()
    assert after.split(b"\n")[3] == b"{not json" and after.endswith(b'{"task": "arithmetic:5", "sam')
    with pytest.warns(RuntimeWarning, match="corrupt"):
        assert len(list(read_records(out))) == len(before) == N
