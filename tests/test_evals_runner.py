"""The sweep runner over real HTTP (the fake server on 127.0.0.1 speaks chat completions like vLLM):
scoring end to end, retries, replicas, concurrency bounds, timeouts, resumption, a SIGKILL midway."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from workbench.evals import get_task, load, run_sweep, server, summary
from workbench.evals.fake import FakeServer
from workbench.evals.logs import LOG_NAME, LogWriter, read_records

TASKS = ["arithmetic", "dates"]


def oracle(tasks=TASKS, limit=20):
    """An answer function that knows every target: the fake 'model' is always right."""
    targets = {s.question: s.target for t in tasks for s in get_task(t).samples(limit=limit)}

    def answer(messages):
        question = messages[-1]["content"]
        return f"Reasoning about: {question[:20]}", f"So \\boxed{{{targets[question]}}}."
    return answer


def keys(folder):
    return [(r["task"], r["sample"], r["model"], r["effort"], r["repeat"]) for r in read_records(folder)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sweep_end_to_end_over_http(tmp_path):
    with FakeServer(answer=oracle(limit=15)).start() as fake:
        result = run_sweep(TASKS, [server("fake", fake.url)], out=tmp_path, limit=10, concurrency=4, progress=False)
        assert (result.ran, result.skipped, result.failed) == (60, 0, 0)
        assert fake.requests == 60
        assert sorted(b["reasoning_effort"] for b in fake.bodies) == ["high"] * 20 + ["low"] * 20 + ["medium"] * 20
        assert all(b["stream"] and b["model"] == "fake" and b["max_tokens"] == 1024 for b in fake.bodies)
        df = load(tmp_path)
        assert len(df) == 60 and df["correct"].all() and df["error"].isna().all()
        row = df[(df.task == "dates") & (df["sample"] == "3") & (df.effort == "high")].iloc[0]
        assert row["reasoning"].startswith("Reasoning about: ") and row["answer"] == f"So \\boxed{{{row['target']}}}."
        assert row["stop_reason"] == "return" and row["reasoning_tokens"] > 0 and row["answer_tokens"] > 0
        assert row["reasoning_tokens"] + row["answer_tokens"] == row["completion_tokens"]  # every token is in one message
        table = summary(df)
        assert list(table["effort"].astype(str)) == ["low", "medium", "high"] * 2
        assert (table["accuracy"] == 1.0).all() and (table["n"] == 10).all()
        # the same sweep again: nothing to do, nothing sent
        again = run_sweep(TASKS, [server("fake", fake.url)], out=tmp_path, limit=10, progress=False)
        assert (again.ran, again.skipped, fake.requests) == (0, 60, 60)
        # a larger limit runs only the new samples
        more = run_sweep(["arithmetic"], [server("fake", fake.url)], out=tmp_path, limit=15, efforts=["low"],
                         progress=False)
        assert (more.ran, more.skipped) == (5, 10)
    assert len(keys(tmp_path)) == len(set(keys(tmp_path))) == 65


def test_transient_failures_are_retried_with_backoff(tmp_path):
    failures = [500, 429, "drop", 503, 502]
    with FakeServer(failures=failures).start() as fake:
        t0 = time.monotonic()
        result = run_sweep(["counting"], [server("fake", fake.url)], out=tmp_path, limit=3, efforts=["low"],
                           backoff=0.05, retries=5, progress=False)
        assert result.failed == 0 and fake.requests == 3 + len(failures)
        df = load(tmp_path)
        assert df["error"].isna().all() and df["attempts"].sum() == 3 + len(failures)
        # one sample took all five failures: waits of 0.05, 0.1, 0.2, 0.4, 0.8 s (x 0.5-1.5 jitter) >= 0.775 s
        assert df["attempts"].max() == 6 and time.monotonic() - t0 > 0.7


def test_permanent_errors_are_logged_not_retried_then_retried_on_resume(tmp_path):
    with FakeServer(failures=[400]).start() as fake:
        r = run_sweep(["counting"], [server("fake", fake.url)], out=tmp_path, limit=2, efforts=["low"], progress=False)
        assert r.failed == 1 and fake.requests == 2
        bad = [x for x in read_records(tmp_path) if x["error"]]
        assert len(bad) == 1 and "400" in bad[0]["error"] and bad[0]["attempts"] == 1 and bad[0]["score"] == 0
        df = load(tmp_path)
        assert summary(df)["errors"].tolist() == [1]
        kept = run_sweep(["counting"], [server("fake", fake.url)], out=tmp_path, limit=2, efforts=["low"],
                         retry_errors=False, progress=False)
        assert kept.ran == 0
        redo = run_sweep(["counting"], [server("fake", fake.url)], out=tmp_path, limit=2, efforts=["low"],
                         progress=False)
        assert (redo.ran, redo.failed) == (1, 0)
    assert len(list(read_records(tmp_path))) == 3  # the failure stays in the log...
    assert load(tmp_path)["error"].isna().all()  # ...but the last record of its key wins


def test_replicas_share_the_work_and_cover_for_a_dead_one(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connection refused
    with FakeServer(delay=0.02).start() as a, FakeServer(delay=0.02).start() as b:
        r = run_sweep(["sorting"], [server("fake", [a.url, dead, b.url])], out=tmp_path, limit=10,
                      concurrency=4, backoff=0.01, progress=False)
        assert r.failed == 0
        assert a.requests + b.requests == 30 and a.requests >= 5 and b.requests >= 5
        assert a.max_in_flight + b.max_in_flight <= 4


def test_concurrency_is_bounded_and_used(tmp_path):
    with FakeServer(delay=0.05).start() as fake:
        run_sweep(["modular"], [server("fake", fake.url)], out=tmp_path, limit=8, concurrency=3, progress=False)
        assert fake.max_in_flight == 3


def test_timeouts_are_recorded(tmp_path):
    with FakeServer(delay=2.0).start() as fake:
        t0 = time.monotonic()
        r = run_sweep(["counting"], [server("fake", fake.url, timeout=0.2)], out=tmp_path, limit=1, efforts=["low"],
                      retries=0, timeout=0.2, progress=False)
        assert r.failed == 1 and time.monotonic() - t0 < 1.9
        (rec,) = read_records(tmp_path)
        assert "Timeout" in rec["error"] and rec["answer"] is None and rec["score"] == 0
        assert rec["stop_reason"] == "error" and rec["attempts"] == 1


def test_torn_last_line_is_ignored_and_cut_before_appending(tmp_path):
    with FakeServer().start() as fake:
        run_sweep(["counting"], [server("fake", fake.url)], out=tmp_path, limit=3, efforts=["low"], progress=False)
        log = tmp_path / LOG_NAME
        lines = log.read_bytes().splitlines(keepends=True)
        log.write_bytes(b"".join(lines[:2]) + lines[2][:40])  # the third record torn mid-write
        assert len(list(read_records(tmp_path))) == 2
        # even a torn line that happens to parse is not finished until its newline is on disk
        log.write_bytes(b"".join(lines[:2]) + lines[2].rstrip(b"\n"))
        assert len(list(read_records(tmp_path))) == 2
        r = run_sweep(["counting"], [server("fake", fake.url)], out=tmp_path, limit=3, efforts=["low"], progress=False)
        assert r.ran == 1
    assert all(line.endswith(b"}\n") for line in log.read_bytes().splitlines(keepends=True))
    assert sorted(k[1] for k in keys(tmp_path)) == ["0", "1", "2"]


def test_corrupt_middle_line_warns_and_one_writer_per_folder(tmp_path):
    log = tmp_path / LOG_NAME
    good = {"task": "t", "sample": "1", "model": "m", "effort": "low", "repeat": 0}
    log.write_text("garbage\n" + json.dumps(good) + "\n")
    with pytest.warns(RuntimeWarning, match=f"{LOG_NAME}:1"):
        assert list(read_records(tmp_path)) == [good]
    with LogWriter(tmp_path):
        with pytest.raises(RuntimeError, match="another sweep is writing"):
            LogWriter(tmp_path)
    LogWriter(tmp_path).close()  # released


def test_bad_sweep_arguments(tmp_path):
    with pytest.raises(ValueError, match="reasoning effort"):
        run_sweep(["counting"], [server("fake", "http://127.0.0.1:9/v1")], out=tmp_path, efforts=["max"])
    with pytest.raises(ValueError, match="share the name"):
        run_sweep(["counting", "counting"], [server("fake", "http://127.0.0.1:9/v1")], out=tmp_path)
    with pytest.raises(ValueError, match="concurrency"):
        run_sweep(["counting"], [server("fake", "http://127.0.0.1:9/v1")], out=tmp_path, concurrency=0)


@pytest.mark.slow
def test_sigkill_midway_then_resume_loses_nothing_and_duplicates_nothing(tmp_path):
    """`workbench eval` in a subprocess, SIGKILLed twice while samples are in flight, then resumed."""
    out = tmp_path / "sweep"
    with FakeServer(delay=0.03, answer=oracle()).start() as fake:
        cmd = [sys.executable, "-m", "workbench.cli", "eval", "--base-url", fake.url, "--model", "fake",
               "--tasks", "arithmetic,dates", "--limit", "20", "--concurrency", "4", "--out", str(out),
               "--no-progress", "--no-plots", "--backoff", "0.01"]
        for stop_at in (25, 70):
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                n = sum(1 for _ in read_records(out)) if (out / LOG_NAME).exists() else 0
                if n >= stop_at:
                    break
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.005)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            n = len(list(read_records(out)))
            assert stop_at <= n < 120  # killed midway
        # a kill can land mid-write: leave a torn record behind as well
        with open(out / LOG_NAME, "ab") as f:
            f.write(b'{"task": "arithmetic", "sample": "19", "model": "fa')
        done = subprocess.run(cmd + ["--parquet"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "accuracy [95% CI]" in done.stdout and "1.000 [0.839, 1.000]" in done.stdout  # Wilson, n=20, 20/20
    ks = keys(out)
    assert len(ks) == len(set(ks)) == 120  # exactly one record per (task, sample, model, effort, repeat)
    expected = {(t, str(i), "fake", e, 0) for t in TASKS for i in range(20) for e in ("low", "medium", "high")}
    assert set(ks) == expected
    assert all(r["correct"] for r in read_records(out))
    assert (out / "samples.parquet").exists() and (out / "summary.parquet").exists()


def test_two_models_and_repeats(tmp_path):
    with FakeServer(answer=oracle(["modular"], 4)).start() as fake, FakeServer().start() as other:
        models = [server("fake", fake.url, name="right"), server("fake", other.url, name="wrong")]
        r = run_sweep(["modular"], models, out=tmp_path, limit=4, repeats=2, efforts=["low", "medium"], progress=False)
        assert (r.ran, r.failed) == (4 * 2 * 2 * 2, 0)
        assert fake.requests == other.requests == 16
    table = summary(load(tmp_path))
    assert table.groupby("model")["accuracy"].mean().to_dict() == {"right": 1.0, "wrong": 0.0}
    assert set(table["n"]) == {8}  # 4 samples x 2 repeats per cell
    seeds = {(b["messages"][-1]["content"], b["reasoning_effort"], b["seed"]) for b in fake.bodies}
    assert len({s for _, _, s in seeds}) == 16  # every (sample, effort, repeat) has its own sampling seed
