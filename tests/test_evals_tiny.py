"""The done-when sweep on the built-in tiny model: 3 efforts x 2 tasks x 20 samples, in-process and through
`workbench serve` on 127.0.0.1 with the openai client. The model is random, so accuracy is ~0: these
tests check the plumbing (every key logged once, well-formed Harmony, the same text both ways)."""

import os
import subprocess
import sys

import pytest

from workbench.evals import local, run_sweep, server, summary, write_plots
from workbench.evals.logs import read_records
from workbench.harmony import parse_tokens, text_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # minutes when the 2 shared cores are busy

TASKS = ["arithmetic", "counting"]
EFFORTS = ["low", "medium", "high"]
MAX_TOKENS = 6  # <|channel|> analysis <|message|> and three tokens of text: plumbing, not quality


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: on a shared 2-core machine the tiny model is several times faster so."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def in_process(tiny_dir, tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("tiny-in-process")
    result = run_sweep(TASKS, [local(tiny_dir, name="tiny", constrained=True)], out=out, efforts=EFFORTS, limit=20,
                       max_tokens=MAX_TOKENS, progress=False)
    return result, {(r["task"], r["sample"], r["effort"]): r for r in read_records(out)}


def test_in_process_sweep(in_process, tmp_path):
    result, records = in_process
    assert (result.ran, result.failed) == (120, 0) and len(records) == 120
    for r in records.values():
        assert r["token_level"] and r["model"] == "tiny"
        assert len(r["tokens"]) == r["completion_tokens"] <= MAX_TOKENS
        assert r["tokens"][:1] == [200005]  # constrained: a completion opens with <|channel|>
        assert set(r["parse_errors"]) <= {"truncated", "invalid_utf8"}  # cut at max_tokens, never malformed
        assert r["reasoning_tokens"] + r["answer_tokens"] <= r["completion_tokens"]
    table = summary(result.load())
    assert len(table) == 6 and (table["n"] == 20).all() and (table["errors"] == 0).all()
    for png in write_plots(table, tmp_path):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_sweep_through_workbench_serve(tiny_dir, in_process, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "serve", str(tiny_dir), "--port", "0",
                             "--name", "tiny", "--constrained"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    try:
        line = proc.stdout.readline()
        assert "serving 'tiny' at http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() else "")
        url = line.split(" at ")[1].split()[0]
        result = run_sweep(TASKS, [server("tiny", url)], out=tmp_path, efforts=EFFORTS, limit=20,
                           max_tokens=MAX_TOKENS, concurrency=2, progress=False)
        assert (result.ran, result.failed) == (120, 0)
    finally:
        proc.kill()
        proc.wait()
    served = {(r["task"], r["sample"], r["effort"]): r for r in read_records(tmp_path)}
    assert served.keys() == in_process[1].keys()
    same = 0
    for key, r in served.items():
        assert r["error"] is None and not r["token_level"]
        # Same prompt, same seed, same model: the server's text is what the model wrote in-process.
        # The chat API gives analysis as reasoning_content and every other message's text as content
        # (commentary preambles too); a message cut before any text comes back as no content at all.
        messages = parse_tokens(in_process[1][key]["tokens"]).messages
        reasoning = "".join(text_of(m) for m in messages if m.channel == "analysis")
        content = "".join(text_of(m) for m in messages if m.channel != "analysis")
        same += (r["reasoning"], r["answer"] or "") == (reasoning, content)
    assert same == 120
