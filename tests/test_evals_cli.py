"""`workbench eval` and `workbench serve` as a user runs them (the console script in a subprocess)."""

import json
import subprocess

from workbench.evals.fake import FakeServer
from workbench.evals.logs import read_records


def wb(*args, timeout=300):
    return subprocess.run(["workbench", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_list_tasks():
    r = wb("eval", "--list-tasks")
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["arithmetic", "modular", "dates", "counting", "sorting", "addition", "product",
                                     "gpqa:PATH", "aime:PATH", "jsonl:PATH"]


def test_eval_against_a_server_prints_summary_and_writes_plots(tmp_path):
    out = tmp_path / "run"
    with FakeServer().start() as fake:
        r = wb("eval", "--base-url", fake.url, "--model", "fake", "--tasks", "sorting:1,modular", "--efforts", "low,high",
               "--limit", "3", "--repeats", "2", "--concurrency", "2", "--max-tokens", "77", "--temperature", "0.5",
               "--seed", "5", "--out", out, "--parquet", "--no-progress")
        assert r.returncode == 0, r.stderr
        bodies = fake.bodies
    assert len(bodies) == 2 * 2 * 3 * 2
    assert {b["max_tokens"] for b in bodies} == {77} and {b["temperature"] for b in bodies} == {0.5}
    lines = r.stdout.splitlines()
    assert any(line.split()[:3] == ["fake", "low", "modular@5"] for line in lines)  # seed 5 names the task variant
    assert any(line.split()[:3] == ["fake", "high", "sorting:1@5"] for line in lines)
    for name in ("accuracy_vs_effort.png", "accuracy_vs_tokens.png", "samples.parquet", "summary.parquet"):
        assert (out / name).stat().st_size > 0 and f"wrote {out / name}" in r.stdout
    assert {rec["repeat"] for rec in read_records(out)} == {0, 1}
    config = json.loads((out / "sweep.json").read_text())
    assert config["efforts"] == ["low", "high"] and config["repeats"] == 2 and config["max_tokens"] == 77


def test_user_errors_are_one_line(tmp_path):
    for args, needle in [(["eval", "--model", "x"], "--out DIR is required"),
                         (["eval", "--out", tmp_path], "--model is required"),
                         (["eval", "--model", "x", "--tasks", "nope", "--out", tmp_path], "unknown task 'nope'"),
                         (["eval", "--model", "x", "--base-url", "http://127.0.0.1:9/v1", "--efforts", "max",
                           "--out", tmp_path], "reasoning effort"),
                         (["serve", tmp_path / "missing"], "does not exist")]:
        r = wb(*args)
        assert r.returncode == 1 and needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
