"""`workbench serve` under load: requests/s and time to first token, chat completions and Responses,
at concurrency 1, 4 and 16, next to an older server's figures measured in the same run.

    flock /work/coord/heavy.lock python benchmarks/serve.py [--old c0cab3c] [--requests 32] [--max-tokens 32]

Each server runs in its own process (``python -m workbench.cli serve CHECKPOINT --port 0``) on the built-in
model (``workbench.tiny.default_checkpoint()``, or ``--checkpoint``). ``--old COMMIT`` extracts that
commit's ``workbench/`` package into a temporary folder and serves the same checkpoint with it, so both
servers are measured on one machine under one load; the old hand-written server had no Responses API.
The client is the official ``openai`` package, one thread per concurrent stream, every request
streamed with the same seed, ``max_tokens`` and reasoning effort. Time to first token is the time
from sending a request to the first chunk or event that carries text (reasoning or answer); requests
per second is completed requests over the wall time of the whole round.
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


def one_request(client, api: str, max_tokens: int, seed: int) -> float | None:
    """Stream one request; return seconds to the first text (None if no text came)."""
    start = time.perf_counter()
    first = None
    if api == "chat":
        stream = client.chat.completions.create(
            model="bench", messages=[{"role": "user", "content": "What is 17 + 25?"}], stream=True,
            max_tokens=max_tokens, seed=seed, reasoning_effort="low")
        for chunk in stream:
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
    return first


def round_(url: str, api: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)
    todo = list(range(requests))
    lock = threading.Lock()
    ttft: list[float] = []
    errors: list[str] = []

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            try:
                t = one_request(client, api, max_tokens, seed=i)
                with lock:
                    if t is not None:
                        ttft.append(t)
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
            "rps": done / wall, "ttft_p50": statistics.median(ttft) if ttft else float("nan"),
            "ttft_p90": sorted(ttft)[int(0.9 * (len(ttft) - 1))] if ttft else float("nan"),
            "errors": errors[:3]}


def supports(url: str, api: str) -> bool:
    import openai

    try:
        one_request(openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=120), api, 2, 0)
        return True
    except openai.NotFoundError:
        return False


def measure(label: str, checkpoint: Path, pythonpath: str | None, args) -> list[dict]:
    proc, url = start_server(checkpoint, pythonpath, args.server_arg or [])
    rows = []
    try:
        for api in args.apis:
            if not supports(url, api):
                print(f"{label}: no {api} API", flush=True)
                continue
            round_(url, api, 1, 2, args.max_tokens)  # warm-up
            for c in args.concurrency:
                r = round_(url, api, c, max(args.requests, c), args.max_tokens)
                r["server"] = label
                rows.append(r)
                print(f"{label:>8} {api:>9} c={c:<3} {r['rps']:6.2f} req/s  ttft p50 {r['ttft_p50'] * 1000:8.1f} ms"
                      f"  p90 {r['ttft_p90'] * 1000:8.1f} ms  ok {r['ok']}/{r['requests']}"
                      + (f"  errors: {r['errors']}" if r["errors"] else ""), flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the built-in model")
    p.add_argument("--old", default=None, help="a git commit whose server to measure too (e.g. c0cab3c)")
    p.add_argument("--only-old", action="store_true", help="measure only the --old server")
    p.add_argument("--requests", type=int, default=32, help="requests per round (at least the concurrency)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    p.add_argument("--apis", type=lambda s: s.split(","), default=["chat", "responses"])
    p.add_argument("--server-arg", action="append", help="extra argument for both servers (repeatable)")
    args = p.parse_args()
    if args.checkpoint is None:
        from workbench.tiny import default_checkpoint

        args.checkpoint = default_checkpoint()
    print(f"load before: {os.getloadavg()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.old:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old, "workbench"], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            rows += measure(f"old {args.old[:7]}", args.checkpoint, tmp, args)
        if not args.only_old:
            rows += measure("new", args.checkpoint, None, args)
    print(f"load after: {os.getloadavg()}", flush=True)
    old = {(r["api"], r["concurrency"]): r for r in rows if r["server"].startswith("old")}
    new = {(r["api"], r["concurrency"]): r for r in rows if r["server"] == "new"}
    if old and new:
        print("\nnew / old (chat completions):")
        for key in sorted(set(old) & set(new)):
            print(f"  c={key[1]:<3} req/s x{new[key]['rps'] / old[key]['rps']:.2f}   "
                  f"ttft p50 x{new[key]['ttft_p50'] / old[key]['ttft_p50']:.2f}")


if __name__ == "__main__":
    main()
