"""The sequence/batch/cache engine against an earlier checkout (the cat-per-step KV cache and dense-mask
prefill), interleaved, plus batched against sequential generation.

    flock /work/coord/heavy.lock python benchmarks/engine.py [--against REV] [--preset small] [--rounds 3]
        [--threads 2] [--context 2048] [--long 8192] [--batch 8]

``--against`` (default d11daf3, main before the static cache landed) is exported with ``git archive`` into a
temporary folder. Each measurement runs in a child process (one per checkout, alternating, on the same
checkpoint), with API both checkouts have:

- decode: 32 cached single-token steps after a ``--context``-token prompt (a cache that concatenates pays
  O(context) per step and layer; a preallocated one writes one slot);
- long prefill: ``model(prompt, cache, last_only=True)`` on a ``--long``-token prompt: time and peak RSS
  (the old fused path built an additive [Hq, T, S+1] fp32 mask per layer; the new one goes in query chunks
  with a boolean chunk x keys mask and, through a cache, ``_PREFILL_CHUNK`` tokens at a time);
- (this checkout only) ``generate`` of ``--batch`` prompts of mixed lengths as one batch against one after
  the other (32 new tokens each, greedy), and the share of a decode step's profile spent in the KV cache.

Prints medians and ratios (this / against), with the load average before and after. Absolute times on a
shared machine mean little; the ratios in one run are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time, torch
ckpt, threads, where, what, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
torch.set_num_threads(threads)
import workbench
assert workbench.__file__.startswith(where), workbench.__file__
model = workbench.load_model(ckpt)
g = torch.Generator().manual_seed(0)
V = model.config.vocab_size
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss is KiB on Linux)
out = {}
with torch.no_grad():
    if what == "decode":
        prompt, steps = torch.randint(0, V, (n,), generator=g), torch.randint(0, V, (32,), generator=g)
        cache = model.new_cache()
        model(prompt, cache, last_only=True)
        model(steps[:1], cache, last_only=True)
        t = time.perf_counter()
        for s in steps[1:]:
            model(s[None], cache, last_only=True)
        out["decode step"] = (time.perf_counter() - t) / 31
    elif what == "prefill":
        model(torch.randint(0, V, (8,), generator=g), model.new_cache(), last_only=True)
        out["rss after load (GiB)"] = rss()
        prompt = torch.randint(0, V, (n,), generator=g)
        t = time.perf_counter()
        model(prompt, model.new_cache(), last_only=True)
        out["long prefill"] = time.perf_counter() - t
        out["peak rss (GiB)"] = rss()
    elif what == "batch":
        from workbench.generate import generate
        prompts = [torch.randint(0, V, (m,), generator=g).tolist() for m in (5, 40, 17, 64, 9, 33, 50, 21)[:n]]
        t = time.perf_counter()
        for p in prompts:
            list(generate(model, p, max_new_tokens=32, temperature=0))
        out["sequential generate"] = time.perf_counter() - t
        t = time.perf_counter()
        list(generate(model, prompts, max_new_tokens=32, temperature=0))
        out["batched generate"] = time.perf_counter() - t
    elif what == "profile":
        import cProfile, pstats
        cache = model.new_cache()
        model(torch.randint(0, V, (n,), generator=g), cache, last_only=True)
        steps = torch.randint(0, V, (64,), generator=g)
        prof = cProfile.Profile()
        prof.enable()
        for s in steps:
            model(s[None], cache, last_only=True)
        prof.disable()
        st = pstats.Stats(prof).stats
        total = sum(v[2] for v in st.values())  # tottime of everything
        mine = sum(v[3] for k, v in st.items() if k[0].endswith("kv_cache.py") and k[2] in ("update", "positions"))
        out["kv cache share of a decode step's profile"] = mine / total
print(json.dumps(out))
"""


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def run_child(checkout: Path, ckpt: Path, threads: int, what: str, n: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    out = subprocess.run([sys.executable, "-c", CHILD, str(ckpt), str(threads), str(checkout / "workbench"), what,
                          str(n)], check=True, capture_output=True, text=True, env=env, cwd=checkout)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", default="d11daf3", help="git revision to compare with")
    ap.add_argument("--this", default=None, help="a git revision to measure instead of this checkout")
    ap.add_argument("--only", default="decode,prefill,batch,profile", help="which measurements (comma list)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context", type=int, default=2048, help="prompt tokens before the timed decode steps")
    ap.add_argument("--long", type=int, default=8192, help="prompt tokens of the long prefill")
    ap.add_argument("--batch", type=int, default=8, help="prompts generated as one batch")
    args = ap.parse_args()
    from workbench import make_tiny_checkpoint

    rev = git("rev-parse", "--short", args.against)
    this = git("rev-parse", "--short", args.this) if args.this else None
    only = set(args.only.split(","))
    what = this or f"this checkout ({git('rev-parse', '--short', 'HEAD')}, plus uncommitted changes)"
    print(f"{what} vs {rev}; "
          f"preset {args.preset}, {args.threads} thread(s), {args.rounds} rounds, load {os.getloadavg()[0]:.1f}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        def export(r: str, name: str) -> Path:
            folder = Path(tmp) / name
            folder.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", r], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
            return folder

        base = export(rev, "base")
        mine = export(this, "this") if this else ROOT
        ckpt = make_tiny_checkpoint(Path(tmp) / args.preset, preset=args.preset)
        times: dict[str, dict[str, list[float]]] = {"this": {}, "base": {}}
        for _ in range(args.rounds):
            for what, n in (("decode", args.context), ("prefill", args.long)):
                for side, checkout in (("this", mine), ("base", base)):
                    if what in only:
                        for k, v in run_child(checkout, ckpt, args.threads, what, n).items():
                            times[side].setdefault(k, []).append(v)
            for what, n in (("batch", args.batch), ("profile", args.context)):
                if what in only:
                    for k, v in run_child(mine, ckpt, args.threads, what, n).items():
                        times["this"].setdefault(k, []).append(v)
        print(f"\nmedian of {args.rounds} rounds")
        print(f"{'':44} {'this':>10} {rev:>10} {'ratio':>7}")
        for k, vals in times["this"].items():
            a = statistics.median(vals)
            unit = "" if "GiB" in k or "share" in k else "s"
            if k in times["base"]:
                b = statistics.median(times["base"][k])
                print(f"{k:44} {a:9.3f}{unit} {b:9.3f}{unit} {a / b:6.3f}x")
            else:
                print(f"{k:44} {a:9.3f}{unit}")
        if "batch" in only:
            seq, bat = (statistics.median(times["this"][k]) for k in ("sequential generate", "batched generate"))
            print(f"\nbatched / sequential generate ({args.batch} prompts): {bat / seq:.3f}x the time")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
