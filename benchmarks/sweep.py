"""The sweep runner's own overhead, against a plain loop of openai client calls to the same server.

    python benchmarks/sweep.py [--delay 0.1] [--samples 60] [--rounds 5] [--scaling-delay 0.5] [--concurrency 1,2,4,8,16]

The server is ``workbench.evals.fake.FakeServer`` in a subprocess: it answers each chat completion
(streamed, a few chunks of reasoning and content, like vLLM) after a fixed sleep, and sleeps for
concurrent requests in parallel, so it is a server with capacity. Both sides send the same requests
(the runner's own chat messages, ``reasoning_effort``, ``max_tokens``, streaming) and read the whole
stream; the runner also builds the Harmony conversation, re-encodes the answer as Harmony tokens,
parses and scores it, and appends an fsynced log record. Rounds alternate baseline and runner and
the best of each is compared. Then the runner alone at higher concurrency against a server that sleeps
``--scaling-delay`` per request: speed-up against its own concurrency-1 time (ideal: the concurrency;
the client's own CPU time per sample, parsing streamed chunks under one GIL, sets the ceiling).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

SERVER = """
import sys
from workbench.evals.fake import FakeServer
fake = FakeServer(delay=float(sys.argv[1])).start()
print(fake.url, flush=True)
sys.stdin.read()
"""


def baseline(url: str, jobs, max_tokens: int) -> float:
    """What a user would write without the runner: a loop of streamed client calls."""
    import openai

    from workbench.backends.openai_compat import chat_messages
    from workbench.evals.runner import conversation

    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    requests = [chat_messages(conversation(j.task, j.sample, j.effort)) for j in jobs]  # prepared up front
    start = time.perf_counter()
    for job, messages in zip(jobs, requests):
        stream = client.chat.completions.create(model="fake", messages=messages, stream=True, max_tokens=max_tokens,
                                                temperature=1.0, top_p=1.0, reasoning_effort=job.effort)
        for _ in stream:
            pass
    return time.perf_counter() - start


def runner(target, tasks, limit: int, efforts, max_tokens: int, concurrency: int) -> tuple[float, float]:
    """(seconds for a fresh sweep, seconds for the same sweep again: its fixed cost, everything skipped)."""
    from workbench.evals import run_sweep

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = run_sweep(tasks, [target], out=out, efforts=efforts, limit=limit, max_tokens=max_tokens,
                           concurrency=concurrency, progress=False)
        elapsed = time.perf_counter() - start
        assert result.failed == 0 and result.ran == limit * len(tasks) * len(efforts), result
        start = time.perf_counter()
        run_sweep(tasks, [target], out=out, efforts=efforts, limit=limit, max_tokens=max_tokens, progress=False)
        fixed = time.perf_counter() - start
    return elapsed, fixed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--delay", type=float, default=0.1, help="server sleep per request, s")
    ap.add_argument("--samples", type=int, default=60, help="samples per run (concurrency 1)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scaling-delay", type=float, default=0.5, help="server sleep per request for the scaling runs")
    ap.add_argument("--concurrency", default="1,2,4,8,16")
    ap.add_argument("--max-tokens", type=int, default=256)
    args = ap.parse_args()

    from workbench.evals.runner import plan

    servers = {d: subprocess.Popen([sys.executable, "-c", SERVER, str(d)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True) for d in {args.delay, args.scaling_delay}}
    urls = {d: p.stdout.readline().strip() for d, p in servers.items()}
    try:
        from workbench.evals import server

        tasks, efforts = ["arithmetic"], ["medium"]
        url = urls[args.delay]
        target = server("fake", url)  # made once, like the baseline's client
        jobs = plan(tasks, [target], efforts, 1, args.samples)
        runner(target, tasks, 3, efforts, args.max_tokens, 1)  # warm up both paths (imports, vocabulary)
        baseline(url, jobs[:3], args.max_tokens)
        base, run, fixed = [], [], []
        for _ in range(args.rounds):
            base.append(baseline(url, jobs, args.max_tokens))
            r, f = runner(target, tasks, args.samples, efforts, args.max_tokens, 1)
            run.append(r)
            fixed.append(f)
        b, r, f = min(base), min(run), min(fixed)
        n = args.samples
        print(f"server delay {args.delay * 1000:.0f} ms, {n} samples, best of {args.rounds} alternating rounds")
        print(f"plain client loop : {b:.3f} s  ({b / n * 1000:.2f} ms/sample)")
        print(f"runner, conc. 1   : {r:.3f} s  ({r / n * 1000:.2f} ms/sample), of which {f * 1000:.0f} ms once per "
              f"sweep (plan, read the log, open files: timed on a re-run that skips everything)")
        print(f"runner overhead   : {(r - b) / n * 1000:+.2f} ms/sample, {(r / b - 1) * 100:+.1f}% wall time; "
              f"per sample without the once-per-sweep part: {(r - f - b) / n * 1000:+.2f} ms, "
              f"{((r - f) / b - 1) * 100:+.1f}%")
        target = server("fake", urls[args.scaling_delay])
        print(f"\nscaling: server delay {args.scaling_delay * 1000:.0f} ms, best of 2")
        print("concurrency  samples  wall s  samples/s  speed-up  ideal")
        one = None
        for c in [int(x) for x in args.concurrency.split(",")]:
            samples = max(n, 4 * c)
            t = min(runner(target, tasks, samples, efforts, args.max_tokens, c)[0] for _ in range(2))
            rate = samples / t
            one = one or rate
            print(f"{c:>11}  {samples:>7}  {t:>6.2f}  {rate:>9.1f}  {rate / one:>8.2f}  {c:>5}")
    finally:
        for p in servers.values():
            p.stdin.close()
            p.wait(10)


if __name__ == "__main__":
    main()
