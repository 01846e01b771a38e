"""`workbench serve` under load: requests/s and time to first token, chat completions and Responses,
at concurrency 1, 4 and 16, next to an older server's figures measured in the same run.

    flock /work/coord/heavy.lock python benchmarks/serve.py [--old c0cab3c] [--requests 16] [--repeats 2]

Each server runs in its own process (``python -m workbench.cli serve CHECKPOINT --port 0``) on the random
"tiny" preset (``workbench.default_checkpoint("tiny")``, or ``--checkpoint``). ``--old COMMIT`` extracts that
commit's ``workbench/`` package into a temporary folder and serves the same checkpoint with it (the old
server with the old model code: the whole stack of that commit); the old hand-written server had no
Responses API. Both servers run at once and take turns, round by round, the one going first
alternating between repeats, so a change in the machine's load (these machines are shared) falls on
both; the summary gives medians over the repeats and new/old ratios of those medians.
The client is the official ``openai`` package, one thread per concurrent stream, every request
streamed with the same seed, ``max_tokens`` and reasoning effort. Time to first token is the time
from sending a request to the first chunk or event that carries text (reasoning or answer); requests
per second is completed requests over the wall time of the whole round; tokens per second the tokens
the server reports generating (its usage) over the same wall time, so servers that stop at different
lengths are compared fairly.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_server(checkpoint: Path, pythonpath: str | None, extra: list[str]) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [sys.executable, "-m", "workbench.cli", "serve", str(checkpoint), "--port", "0", "--constrained",
           "--name", "bench", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=pythonpath or None)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"(http://[\w.\[\]:]+/v1)", line)
        if m:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain the log
            return proc, m.group(1)
    proc.kill()
    raise RuntimeError(f"server did not start: {' '.join(cmd)}")


def one_request(client, api: str, max_tokens: int, seed: int) -> tuple[float | None, int | None]:
    """Stream one request; return seconds to the first text (None if no text came) and the tokens the
    server says it generated (usage; None if it sent none)."""
    start = time.perf_counter()
    first = tokens = None
    if api == "chat":
        stream = client.chat.completions.create(
            model="bench", messages=[{"role": "user", "content": "What is 17 + 25?"}], stream=True,
            max_tokens=max_tokens, seed=seed, reasoning_effort="low", stream_options={"include_usage": True})
        for chunk in stream:
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
            for c in chunk.choices:
                d = c.delta
                text = (d.content or getattr(d, "reasoning_content", None) or getattr(d, "reasoning", None)
                        or (d.tool_calls and "call"))
                if text and first is None:
                    first = time.perf_counter() - start
    else:
        stream = client.responses.create(model="bench", input="What is 17 + 25?", stream=True,
                                         max_output_tokens=max_tokens, reasoning={"effort": "low"},
                                         extra_body={"seed": seed})
        for event in stream:
            if event.type.endswith(".delta") and first is None:
                first = time.perf_counter() - start
            if event.type in ("response.completed", "response.incomplete"):
                tokens = event.response.usage.output_tokens
    return first, tokens


def round_(url: str, api: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)
    todo = list(range(requests))
    lock = threading.Lock()
    ttft: list[float] = []
    tokens: list[int] = []
    errors: list[str] = []

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            try:
                t, n = one_request(client, api, max_tokens, seed=i)
                with lock:
                    if t is not None:
                        ttft.append(t)
                    if n is not None:
                        tokens.append(n)
            except Exception as e:  # noqa: BLE001 - counted, not fatal
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:200])

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    done = requests - len(errors)
    return {"api": api, "concurrency": concurrency, "requests": requests, "ok": done, "wall": wall,
            "rps": done / wall, "tokens": sum(tokens) / len(tokens) if tokens else float("nan"),
            "tps": sum(tokens) / wall if len(tokens) == done else float("nan"),
            "ttft_p50": statistics.median(ttft) if ttft else float("nan"),
            "ttft_p90": sorted(ttft)[int(0.9 * (len(ttft) - 1))] if ttft else float("nan"),
            "errors": errors[:3]}


def supports(url: str, api: str) -> bool:
    import openai

    try:
        one_request(openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=120), api, 2, 0)
        return True
    except openai.NotFoundError:
        return False


def show(r: dict) -> None:
    print(f"{r['server']:>11} {r['api']:>9} c={r['concurrency']:<3} {r['rps']:6.2f} req/s {r['tps']:6.1f} tok/s "
          f"({r['tokens']:4.1f} tok/req)  ttft p50 {r['ttft_p50'] * 1000:8.1f} ms  p90 {r['ttft_p90'] * 1000:8.1f} ms"
          f"  ok {r['ok']}/{r['requests']}  load {r['load']:.2f}" + (f"  errors: {r['errors']}" if r["errors"] else ""),
          flush=True)


def measure(servers: dict[str, str], args) -> list[dict]:
    """Rounds for every API and concurrency, the servers taking turns (the first one alternating), so
    that a change in the machine's load falls on both."""
    rows = []
    for api in args.apis:
        able = [label for label, url in servers.items() if supports(url, api)]
        for label in servers:
            if label not in able:
                print(f"{label}: no {api} API", flush=True)
        for label in able:
            round_(servers[label], api, 1, 2, args.max_tokens)  # warm-up
        for c in args.concurrency:
            for rep in range(args.repeats):
                for label in (able if rep % 2 == 0 else able[::-1]):
                    r = round_(servers[label], api, c, max(args.requests, c), args.max_tokens)
                    r.update(server=label, repeat=rep, load=os.getloadavg()[0])
                    rows.append(r)
                    show(r)
    return rows


def summary(rows: list[dict]) -> None:
    """Medians over the repeats per server, API and concurrency, and new/old ratios of those medians."""
    med: dict[tuple, dict] = {}
    for key in sorted({(r["server"], r["api"], r["concurrency"]) for r in rows}):
        group = [r for r in rows if (r["server"], r["api"], r["concurrency"]) == key]
        med[key] = {k: statistics.median(r[k] for r in group) for k in ("rps", "tps", "ttft_p50", "ttft_p90")}
        m = med[key]
        print(f"median of {len(group)}: {key[0]:>11} {key[1]:>9} c={key[2]:<3} {m['rps']:6.2f} req/s "
              f"{m['tps']:6.1f} tok/s  ttft p50 {m['ttft_p50'] * 1000:8.1f} ms  p90 {m['ttft_p90'] * 1000:8.1f} ms")
    olds = [k for k in med if k[0].startswith("old")]
    for old in olds:
        new = ("new", old[1], old[2])
        if new in med:
            o, n = med[old], med[new]
            print(f"new / old {old[1]:>9} c={old[2]:<3} req/s x{n['rps'] / o['rps']:.2f}   tok/s x{n['tps'] / o['tps']:.2f}"
                  f"   ttft p50 x{n['ttft_p50'] / o['ttft_p50']:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the built-in model")
    p.add_argument("--old", default=None, help="a git commit whose server to measure too (e.g. c0cab3c)")
    p.add_argument("--only-old", action="store_true", help="measure only the --old server")
    p.add_argument("--requests", type=int, default=16, help="requests per round (at least the concurrency)")
    p.add_argument("--repeats", type=int, default=2, help="rounds per server, API and concurrency")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    p.add_argument("--apis", type=lambda s: s.split(","), default=["chat", "responses"])
    p.add_argument("--server-arg", action="append", help="extra argument for both servers (repeatable)")
    args = p.parse_args()
    if args.checkpoint is None:
        from workbench.tiny import default_checkpoint

        args.checkpoint = default_checkpoint("tiny")
    print(f"load before: {os.getloadavg()}", flush=True)
    procs, servers = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if args.old:
                archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old, "workbench"], check=True,
                                         capture_output=True).stdout
                subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
                proc, servers[f"old {args.old[:7]}"] = start_server(args.checkpoint, tmp, args.server_arg or [])
                procs.append(proc)
            if not args.only_old:
                proc, servers["new"] = start_server(args.checkpoint, None, args.server_arg or [])
                procs.append(proc)
            rows = measure(servers, args)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
    print(f"load after: {os.getloadavg()}", flush=True)
    summary(rows)


if __name__ == "__main__":
    main()
