"""Attribution patching against real activation patching on the shipped nano model, per hook point and pair.

    python benchmarks/attribution.py [--pairs 5] [--setups high:ones low:answer] [--points resid_post moe.out ...]

For the first ``--pairs`` held-out addition questions (``data.heldout_tasks``; a pair that does not line up is
skipped and said so) in each setup (effort:cut): ``nano.pairs.addition_pair`` (b's ones digit changed by one;
cut after the working's ``ones x+y+0=`` or before the final answer's last token; metric = logit difference of
the two next tokens) and ``compare_with_patching`` over every layer x every position at each point. Prints the
metric on both runs and Pearson r per point, and where the estimate misses most (the (layer, position) with the
largest |estimate - actual|, and r without layer 0 / without the differing positions). 1 thread.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--setups", nargs="+", default=["high:ones"], help="effort:cut, cut = ones or answer")
    ap.add_argument("--points", nargs="+", default=["resid_post", "resid_mid", "attn.out", "moe.out"])
    args = ap.parse_args()
    torch.set_num_threads(1)

    import workbench
    from workbench.attribution import compare_with_patching
    from workbench.nano import data
    from workbench.nano.pairs import addition_pair

    model = workbench.load_model(workbench.default_checkpoint(), dtype=torch.float32)

    def r(df) -> float:
        if len(df) < 3:
            return float("nan")
        return float(torch.corrcoef(torch.tensor(df[["estimate", "actual"]].to_numpy().T))[0, 1])

    print("| setup | pair | T | clean | corrupt | point | pearson | r without layer 0 | r off the differing positions "
          "| worst (layer, position): estimate vs actual |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for setup in args.setups:
        effort, at = setup.split(":")
        for task in data.heldout_tasks("addition", args.pairs):
            a, b = task.meta["a"], task.meta["b"]
            try:
                pair = addition_pair(a, b, effort, at=at)
            except ValueError as e:
                print(f"skipped: {e}")
                continue
            for point in args.points:
                t0 = time.perf_counter()
                df = compare_with_patching(model, pair.clean, pair.corrupt, pair.metric, point=point, last_only=True)
                worst = df.loc[(df.estimate - df.actual).abs().idxmax()]
                print(f"| {setup} | {a:,} + {b:,} | {len(pair.clean)} | {df.attrs['clean']:.2f} "
                      f"| {df.attrs['corrupt']:.2f} | {point} | {df.attrs['pearson']:.3f} | {r(df[df.layer > 0]):.3f} "
                      f"| {r(df[~df.position.isin(pair.differ)]):.3f} "
                      f"| ({int(worst.layer)}, {int(worst.position)}): {worst.estimate:.2f} vs {worst.actual:.2f} |"
                      f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
