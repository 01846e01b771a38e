"""OpenAI's gpt-oss reference eval samplers, unmodified, against `workbench serve` on the built-in model.

    # once: the reference package needs Python >= 3.12 (pyenv's python3.12 here), in its own venv
    python3.12 -m venv /work/big/gptoss-venv && /work/big/gptoss-venv/bin/pip install 'gpt-oss[eval]==0.0.9'
    # then, from the workbench's venv:
    python benchmarks/gptoss_samplers.py --reference-python /work/big/gptoss-venv/bin/python

It starts ``workbench serve`` (constrained decoding, ``--max-tokens-cap`` since the samplers ask for
131072 tokens), then with the reference interpreter:

1. ``python -m gpt_oss.evals --eval basic`` with ``--sampler chat_completions`` and ``--sampler responses``
   (the reference's own CLI; its other evals download data sets, which this machine cannot);
2. each sampler class called directly (``ChatCompletionsSampler`` / ``ResponsesSampler``, as the CLI
   builds them, reasoning effort high) until an answer came with reasoning: the chat sampler appends
   the ``reasoning`` it reads to its message list, the Responses sampler reports reasoning tokens in
   the usage it returns.

Not part of CI: it needs a second interpreter and the reference's ~40 dependencies (docker, lxml,
aiohttp, fastapi...) installed on every run, and the reference samplers retry an empty answer for ever
with exponential backoff, which a random built-in model can trigger. Results go in RESULTS.md.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time

PROBE = r"""
import sys
from gpt_oss.evals.chat_completions_sampler import ChatCompletionsSampler
from gpt_oss.evals.responses_sampler import ResponsesSampler
url, model, tries = sys.argv[1], sys.argv[2], int(sys.argv[3])
for name, cls in (("chat_completions", ChatCompletionsSampler), ("responses", ResponsesSampler)):
    sampler = cls(model=model, reasoning_model=True, reasoning_effort="high", temperature=1.0, base_url=url,
                  max_tokens=131_072)
    for i in range(tries):
        r = sampler([sampler._pack_message(role="user", content="What is 17 + 25?")])
        usage = r.response_metadata["usage"]
        if name == "chat_completions":
            got = len(r.actual_queried_message_list) > 1  # the sampler appended the reasoning it read
            detail = r.actual_queried_message_list[-1]["content"][:60] if got else ""
        else:
            got = usage is not None and usage.output_tokens_details.reasoning_tokens > 0
            detail = f"reasoning_tokens={usage.output_tokens_details.reasoning_tokens}" if got else ""
        print(f"{name} try {i}: answer {len(r.response_text)} chars, reasoning received: {got} {detail!r}",
              flush=True)
        if got:
            break
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference-python", default="/work/big/gptoss-venv/bin/python")
    p.add_argument("--checkpoint", default=None, help="default: the built-in model")
    p.add_argument("--max-tokens-cap", type=int, default=200)
    p.add_argument("--tries", type=int, default=8)
    args = p.parse_args()
    cmd = [sys.executable, "-m", "workbench.cli", "serve", *([args.checkpoint] if args.checkpoint else []),
           "--port", "0", "--name", "gpt-oss-builtin", "--constrained", "--max-tokens-cap", str(args.max_tokens_cap)]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        url = re.search(r"(http://\S+/v1)", line).group(1)
        print(f"$ {' '.join(cmd)}\n{line.strip()}", flush=True)
        env = {"OPENAI_API_KEY": "none", "PATH": "/usr/bin:/bin"}
        with tempfile.TemporaryDirectory() as tmp:
            for sampler in ("chat_completions", "responses"):
                ref = [args.reference_python, "-m", "gpt_oss.evals", "--model", "gpt-oss-builtin",
                       "--reasoning-effort", "low", "--sampler", sampler, "--base-url", url, "--eval", "basic",
                       "--n-threads", "1"]
                print(f"$ {' '.join(ref)}", flush=True)
                start = time.monotonic()
                out = subprocess.run(ref, capture_output=True, text=True, env=env, cwd=tmp, timeout=900)
                print("\n".join(out.stdout.strip().splitlines()[-2:]), f"(exit {out.returncode}, "
                      f"{time.monotonic() - start:.0f} s)", flush=True)
            probe = [args.reference_python, "-c", PROBE, url, "gpt-oss-builtin", str(args.tries)]
            subprocess.run(probe, env=env, cwd=tmp, timeout=1800, check=True)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
