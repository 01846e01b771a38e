"""What registered-but-unused hook points cost: this checkout against itself without the new points.

    python benchmarks/hooks_overhead.py [--presets tiny,small] [--rounds 5] [--threads 1] [--against REV]

The peer is this checkout's ``workbench`` copied to a temporary folder with the three points of the
research toolkit taken out: ``attn.z`` is not called, the per-pick branch for ``moe.act`` /
``moe.expert_out`` is never taken and ``workbench.hooks.POINTS`` does not list them (the edits are
checked, so the script fails if the code moves). ``--against REV`` compares with a git revision instead
(``git archive``; other changes since then count too). Each round runs one child process per side
(which side goes first alternates from round to round) on the same checkpoint; each child times (best of 3):

- forward: ``model(tokens)`` on a 64-token prompt (no hooks: no hook state at all);
- decode: 16 cached single-token steps (where per-call overhead would show first);
- traced forward / traced decode: the same with ``run_with_trace(names="blocks.*.resid_post")``: a hook
  state exists, so every point (the new ones too) is asked whether it is wanted, and none of the new
  ones is.

Prints the median over rounds of each time and the ratio this / peer (1.00 = the same). The children
use only API both sides have. Absolute times on a shared machine mean little; compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[2]))
import workbench
assert workbench.__file__.startswith(sys.argv[3]), workbench.__file__
model = workbench.load_model(sys.argv[1])
g = torch.Generator().manual_seed(0)
prompt = torch.randint(0, model.config.vocab_size, (64,), generator=g)
steps = torch.randint(0, model.config.vocab_size, (16,), generator=g)

def best(fn, n=3):
    fn()
    out = []
    for _ in range(n):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return min(out)

def decode(traced):
    cache = model.new_cache()
    model(prompt, cache, last_only=True)
    for s in steps:
        if traced:
            model.run_with_trace(s[None], "blocks.*.resid_post", cache=cache, last_only=True)
        else:
            model(s[None], cache, last_only=True)

with torch.no_grad():
    print(json.dumps({
        "hook points": len(model.hook_names()),
        "forward": best(lambda: model(prompt)),
        "traced forward": best(lambda: model.run_with_trace(prompt, "blocks.*.resid_post")),
        "decode": best(lambda: decode(False)),
        "traced decode": best(lambda: decode(True)),
    }))
"""


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def run_child(checkout: Path, ckpt: Path, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    out = subprocess.run([sys.executable, "-c", CHILD, str(ckpt), str(threads), str(checkout / "workbench")],
                         check=True, capture_output=True, text=True, env=env, cwd=checkout)
    return json.loads(out.stdout.strip().splitlines()[-1])


STRIP = {  # file -> (text, replacement): the new points taken out of the peer
    "model.py": [('        a = hp("attn.z", a)  # [B, T, Hq, D]\n', ""),
                 ("        if ctx.run is not None and any(ctx.run.wants(f\"blocks.{self.layer}.{p}\") for p in MOE_PER_PICK):",
                  "        if False:")],
    "hooks.py": [("\n)\n\n_BY_SUFFIX", "\n)\nPOINTS = tuple(p for p in POINTS if p.suffix not in "
                  "(\"attn.z\", \"moe.act\", \"moe.expert_out\"))\n\n_BY_SUFFIX")],
}


def stripped_copy(dest: Path) -> None:
    """This checkout's workbench package without the new points, at ``dest/workbench``."""
    shutil.copytree(ROOT / "workbench", dest / "workbench", ignore=shutil.ignore_patterns("__pycache__"))
    for name, edits in STRIP.items():
        path = dest / "workbench" / name
        text = path.read_text()
        for old, new in edits:
            if text.count(old) != 1:
                raise SystemExit(f"benchmarks/hooks_overhead.py: {name} no longer has {old!r} once; update STRIP")
            text = text.replace(old, new)
        path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", default=None, help="a git revision to compare with instead of the stripped copy")
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from workbench import make_tiny_checkpoint

    rev = git("rev-parse", "--short", args.against) if args.against else "stripped"
    print(f"this checkout ({git('rev-parse', '--short', 'HEAD')}, plus uncommitted changes) vs "
          f"{rev if args.against else 'itself without attn.z / moe.act / moe.expert_out'}; "
          f"{args.threads} thread(s), {args.rounds} rounds, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="hooks-overhead-") as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        if args.against:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        else:
            stripped_copy(base)
        for preset in args.presets.split(","):
            ckpt = make_tiny_checkpoint(Path(tmp) / preset, preset=preset)
            times: dict[str, dict[str, list[float]]] = {"this": {}, "base": {}}
            for r in range(args.rounds):
                sides = (("this", ROOT), ("base", base))
                for side, checkout in sides if r % 2 == 0 else sides[::-1]:  # alternate who goes first
                    for k, v in run_child(checkout, ckpt, args.threads).items():
                        times[side].setdefault(k, []).append(v)
            print(f"\n{preset}: median of {args.rounds} rounds (each best of 3)")
            print(f"{'':16} {'this':>10} {rev:>10} {'ratio':>7}")
            print(f"{'hook points':16} {times['this']['hook points'][0]:>10} {times['base']['hook points'][0]:>10}")
            for k in list(times["this"])[1:]:
                a, b = statistics.median(times["this"][k]), statistics.median(times["base"][k])
                print(f"{k:16} {a * 1e3:8.2f}ms {b * 1e3:8.2f}ms {a / b:6.3f}x")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
