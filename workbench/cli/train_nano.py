"""``workbench train-nano OUT``: train the built-in nano model on this CPU (resumable, deterministic for a seed).

    workbench train-nano runs/nano                      # the shipped recipe: seed 0, 1 thread
    workbench train-nano runs/nano --steps 20           # a slice of the same run (resume later for the rest)
    workbench train-nano runs/nano --checkpoint runs/nano/ckpt --layout hf   # also a loadable checkpoint

Writes ``train.csv`` (every step), ``loss.png``, ``run.json`` (config, commit, threads), ``state.pt`` (resume
point, written atomically) and at the end ``nano.safetensors`` (the weights as the package ships them).
"""

from __future__ import annotations

NAME = "train-nano"
HELP = "train the built-in nano gpt-oss model on the workbench's Harmony data (CPU, resumable)"
ORDER = 15


def register(p) -> None:
    from ..nano.train import TrainConfig

    d = TrainConfig()
    p.add_argument("out", help="output folder (re-running into it resumes)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for data and initialisation (default %(default)s)")
    p.add_argument("--total-steps", type=int, default=d.steps, help="length of the run and its schedule (default %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps (a slice of the run)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: bit-identical runs need the same count; on a busy machine "
                        "one thread wastes least)")
    p.add_argument("--restart", action="store_true", help="ignore a saved state in OUT and start over")
    p.add_argument("--checkpoint", default=None, metavar="DIR",
                   help="when the run is complete, also write a loadable checkpoint (all 201,088 rows) here")
    p.add_argument("--layout", default="original", choices=["original", "hf"], help="layout for --checkpoint")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..nano.ship import write_checkpoint
    from ..nano.train import TrainConfig, train

    cfg = TrainConfig(seed=args.seed, steps=args.total_steps)
    out = train(args.out, cfg, steps=args.steps, threads=args.threads, progress=args.progress,
                resume=not args.restart)
    weights = out / "nano.safetensors"
    print(f"log: {out / 'train.csv'}  curves: {out / 'loss.png'}")
    if weights.exists():
        print(f"weights: {weights}")
        if args.checkpoint:
            print(f"checkpoint: {write_checkpoint(args.checkpoint, layout=args.layout, weights=weights)}")
    else:
        print(f"stopped at step {args.steps} of {cfg.steps}; run the same command without --steps to finish")
    return 0
