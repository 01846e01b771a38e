"""Activation store size and speed: recording conversations against tracing them without storing, then
reading one hook point back (lazily, a channel's rows) against loading it whole.

    python benchmarks/store.py [--presets tiny,small] [--conversations 50] [--threads 1] [--dtype bf16] [--shard-mib 4]

For each preset (a fresh random checkpoint, or ``--checkpoint PATH`` for one you have) the same
``--conversations`` Harmony conversations (a system prompt, a user question, an analysis and a final
answer; ~100 tokens each) are

- traced: ``run_with_trace`` with the stored points, nothing kept (the peer);
- recorded: ``record_activations`` into a temporary store (trace + Harmony labels + shards on disk);

and then ``store[name][labels.channel == "final"]`` (memory-mapped rows, across ``--shard-mib`` shards) is
timed against ``store[name].load()`` (every row). Points: every layer's ``resid_post``, ``attn.z``, ``attn.sink_prob``
and ``moe.expert_idx``. Prints bytes per token, tokens per second and the ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

NAMES = ["blocks.*.resid_post", "blocks.*.attn.z", "blocks.*.attn.sink_prob", "blocks.*.moe.expert_idx"]


def conversations(n: int):
    from workbench.harmony import Conversation, encoding

    enc = encoding()
    out = []
    for i in range(n):
        effort = ("low", "medium", "high")[i % 3]
        conv = Conversation.new("Answer with a number.", reasoning_effort=effort).user(f"What is {i} + {2 * i + 7}?")
        completion = enc.encode(f"<|channel|>analysis<|message|>We add {i} and {2 * i + 7}, which gives "
                                f"{3 * i + 7}. Check: {3 * i + 7} - {i} = {2 * i + 7}.<|end|><|start|>assistant"
                                f"<|channel|>final<|message|>{3 * i + 7}<|return|>", allowed_special="all")
        out.append((conv, completion))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--checkpoint", default=None, help="a checkpoint folder instead of the presets")
    ap.add_argument("--conversations", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--shard-mib", type=float, default=4.0, help="shard size (the store's default is 256)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import workbench
    from workbench.store import record_activations

    items = conversations(args.conversations)
    print(f"{args.conversations} conversations, points {NAMES}, {args.threads} thread(s), {args.dtype}, "
          f"load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        targets = [("checkpoint", Path(args.checkpoint))] if args.checkpoint else [
            (p, workbench.make_tiny_checkpoint(Path(tmp) / p, preset=p)) for p in args.presets.split(",")]
        for label, path in targets:
            model = workbench.load_model(path, dtype=args.dtype)
            seqs = [torch.tensor(c.render() + comp) for c, comp in items]
            tokens = sum(len(s) for s in seqs)
            with torch.no_grad():
                model.run_with_trace(seqs[0], names=NAMES, last_only=True)  # warm up
                t = time.perf_counter()
                for s in seqs:
                    model.run_with_trace(s, names=NAMES, last_only=True)
                traced = time.perf_counter() - t
            folder = Path(tmp) / f"store-{label}"
            t = time.perf_counter()
            store = record_activations(model, items, folder, NAMES, progress=False,
                                       shard_bytes=int(args.shard_mib * 2**20))
            recorded = time.perf_counter() - t
            size = store.nbytes
            name = f"blocks.{model.config.num_hidden_layers - 1}.resid_post"
            final = store.labels.channel == "final"
            t = time.perf_counter()
            part = store[name][final]
            lazy = time.perf_counter() - t
            t = time.perf_counter()
            whole = store[name].load()
            full = time.perf_counter() - t
            assert torch.equal(part, whole[torch.tensor(final.to_numpy())])
            print(f"\n{label}: {tokens} tokens, {len(store._markers)} shards, {size / 2**20:.1f} MiB on disk "
                  f"({size / tokens / 1024:.1f} KiB per token)")
            print(f"  trace only        {traced:7.2f} s  {tokens / traced:8.0f} tok/s")
            print(f"  record (store)    {recorded:7.2f} s  {tokens / recorded:8.0f} tok/s   {recorded / traced:.2f}x the trace")
            print(f"  read {name}: {int(final.sum())} final-channel rows {lazy * 1e3:.1f} ms, all {len(whole)} rows "
                  f"{full * 1e3:.1f} ms")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
