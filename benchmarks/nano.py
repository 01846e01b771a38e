"""The nano model's measured behaviour on held-out tasks (issue 11's figures), in process.

    python benchmarks/nano.py --n 200                       # the shipped model, every family, n per effort
    python benchmarks/nano.py --n 200 --families addition --dense runs/nano/state.pt   # + MXFP4 cost

For each family and effort: accuracy with its Wilson 95% interval, the share of generations that parse with
zero Harmony errors, python calls well-formed and run, the mean probability on untrained ids per generated
step, mean analysis tokens. Sampling at temperature 1, unconstrained, seeded; held-out questions only
(``workbench.nano.data.heldout_tasks``). ``--dense STATE`` also measures the model before MXFP4 quantisation
(a training state's weights with bf16 dense experts) on the same questions and seeds. The routing figure
(expert load per layer by Harmony channel, from the sampled conversations) goes to ``--routing``. Everything
lands in ``--json`` with the command, the machine load before and after, the commit and the time taken.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="default: the shipped nano model")
    p.add_argument("--n", type=int, default=200, help="held-out questions per family and effort")
    p.add_argument("--families", default="addition,python,function,weekday,counting")
    p.add_argument("--efforts", default="low,medium,high")
    p.add_argument("--dense", default=None, metavar="STATE", help="training state.pt: also measure it unquantised")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                   help="compute dtype (the weights are bf16 and MXFP4 either way; default %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "nano.json"))
    p.add_argument("--routing", default=str(ROOT / "docs" / "nano-routing.png"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from workbench import default_checkpoint, load_model
    from workbench.nano import evaluate as ev
    from workbench.nano.routing import entropy, load_by_channel, plot_load_by_channel

    load_before = os.getloadavg()
    started = time.perf_counter()
    path = args.checkpoint or default_checkpoint()
    model = load_model(path, dtype=args.dtype)
    families, efforts = args.families.split(","), args.efforts.split(",")
    records, timings = [], {}
    for family in families:
        for effort in efforts:
            t0 = time.perf_counter()
            records += ev.measure(model, family, effort, args.n, progress=True)
            timings[f"{family}/{effort}"] = time.perf_counter() - t0
            print(ev.format_summary(ev.summarize([r for r in records if (r.family, r.effort) == (family, effort)])),
                  flush=True)
    rows = ev.summarize(records)
    print(ev.format_summary(rows))
    all_gens = sum(r.generations for r in records)
    clean = sum(r.clean_generations for r in records) / max(1, all_gens)
    masses = [m for r in records for m in r.untrained_mass]
    out = {"checkpoint": str(path), "dtype": args.dtype, "summary": [dataclasses.asdict(r) for r in rows], "parse_clean_all": clean,
           "generations": all_gens, "mean_untrained_mass": sum(masses) / max(1, len(masses)),
           "max_untrained_mass": max(masses, default=0.0), "timings_s": timings}
    print(f"all generations: {all_gens}, clean {clean:.2%}; untrained mass mean {out['mean_untrained_mass']:.2e}")

    df = load_by_channel(model, [r.tokens for r in records])
    plot_load_by_channel(df, args.routing, title="nano: expert load by Harmony channel (held-out conversations)")
    out["routing_entropy_bits"] = json.loads(entropy(df).to_json())
    print(entropy(df))

    if args.dense:
        from workbench.nano.ship import dense_checkpoint_from_state

        with tempfile.TemporaryDirectory() as tmp:
            dense = load_model(dense_checkpoint_from_state(args.dense, Path(tmp) / "dense"), dtype=args.dtype)
            drecs = [r for f in families for e in efforts for r in ev.measure(dense, f, e, args.n, progress=True)]
        drows = ev.summarize(drecs)
        print("before MXFP4 quantisation (bf16 dense experts):")
        print(ev.format_summary(drows))
        out["dense_summary"] = [dataclasses.asdict(r) for r in drows]
    out.update(command=" ".join([Path(sys.executable).name, *sys.argv]), load_before=load_before,
               load_after=os.getloadavg(), seconds=time.perf_counter() - started, threads=args.threads,
               commit=subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                     text=True).stdout.strip(), date=time.strftime("%Y-%m-%d %H:%M"))
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json} and {args.routing} in {out['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
