"""Peak memory of a gpt-oss-20b-shaped forward pass on the CPU: the "20b" preset (random weights, real shapes).

    python benchmarks/memory.py [--tokens 32] [--dir DIR] [--keep] [--prefill]

Writes the "20b" preset checkpoint (original layout, about 13 GB) into a temporary folder (or ``--dir``),
then, in a fresh child process (so its peak RSS is the model's alone): ``load_model`` (bf16, experts
kept MXFP4), one forward pass of ``--tokens`` tokens, and reports the time of each step and the peak RSS
(VmHWM, which counts weight pages mapped from the checkpoint file as well as anonymous memory).
The checkpoint is deleted afterwards unless ``--keep``. Target: peak RSS under 16 GB on a 24 GB machine.
``--prefill``: instead of ``model(tokens)`` (whose logits alone are T x 201088), the prompt goes the way
``generate`` sends it: ``model(tokens, model.new_cache(), last_only=True)`` (bounded memory: chunks of
``_PREFILL_CHUNK`` tokens through the KV cache, chunked fused attention, no T x S mask).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, resource, sys, time
import torch
from workbench import load_model

def status():
    out = {}
    for line in open("/proc/self/status"):
        key = line.split(":")[0]
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(line.split()[1]) * 1024
    return out

path, n, prefill = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "prefill"
t0 = time.perf_counter()
model = load_model(path)
t1 = time.perf_counter()
after_load = status()
tokens = torch.randint(0, model.config.vocab_size, (n,), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    logits = model(tokens, model.new_cache(), last_only=True) if prefill else model(tokens)
t2 = time.perf_counter()
assert logits.shape == (1 if prefill else n, model.config.vocab_size) and torch.isfinite(logits).all()
end = status()
print(json.dumps({"load_s": t1 - t0, "forward_s": t2 - t1, "after_load": after_load, "end": end,
                  "threads": torch.get_num_threads()}))
"""


def gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--preset", default="20b")
    ap.add_argument("--dir", default=None, help="write (or reuse) the checkpoint here")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint afterwards")
    ap.add_argument("--prefill", action="store_true", help="prefill through a KV cache, last logits only")
    ap.add_argument("--layout", default="original", choices=("original", "hf"), help="layout when writing one")
    args = ap.parse_args()
    from workbench import make_tiny_checkpoint

    root = args.dir or tempfile.mkdtemp(prefix=f"wb-{args.preset}-")
    try:
        t = time.perf_counter()
        if not os.path.isfile(os.path.join(root, "config.json")):
            make_tiny_checkpoint(root, preset=args.preset, layout=args.layout)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
        print(f"checkpoint {args.preset}: {gb(size)} on disk, written in {time.perf_counter() - t:.0f} s")
        # drop the checkpoint from the page cache where allowed, so the run reads it like a cold start
        subprocess.run(["sh", "-c", "sync; echo 1 > /proc/sys/vm/drop_caches"], capture_output=True)
        r = subprocess.run([sys.executable, "-c", CHILD, root, str(args.tokens), "prefill" if args.prefill else "full"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr)
            raise SystemExit(f"the child failed with exit code {r.returncode}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        end, load = res["end"], res["after_load"]
        print(f"# {datetime.date.today()} {platform.machine()} {os.cpu_count()} cpus, {res['threads']} threads")
        print(f"load_model: {res['load_s']:.1f} s, RSS after load {gb(load['VmRSS'])} "
              f"(anon {gb(load['RssAnon'])}, file-mapped {gb(load['RssFile'])})")
        print(f"{'prefill (cache, last logits)' if args.prefill else 'forward'} of {args.tokens} tokens: "
              f"{res['forward_s']:.1f} s")
        print(f"peak RSS (VmHWM): {gb(end['VmHWM'])}; at the end anon {gb(end['RssAnon'])}, "
              f"file-mapped {gb(end['RssFile'])}")
        print(f"\n| {datetime.date.today()} | dev CPU | {args.preset} | {gb(size)} | {args.tokens} | "
              f"{res['load_s']:.1f} s | {res['forward_s']:.1f} s | {gb(end['VmHWM'])} |")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
