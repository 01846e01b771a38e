"""Workbench forward pass against transformers' GptOssForCausalLM on the same "small" weights, one run.

    python benchmarks/forward_cpu.py [--dtypes fp32,bf16] [--prefill 512] [--decode 64] [--repeats 3]

Both load the same checkpoint (the "small" preset, Hugging Face layout, MXFP4 experts; transformers
dequantizes them at load with ``Mxfp4Config(dequantize=True)``, the workbench keeps them packed and
dequantizes the picked experts each step). Timed, best of ``--repeats``, the two models interleaved:

- prefill: one forward over ``--prefill`` tokens, logits for every position (both);
- decode: ``--decode`` single-token steps with a KV cache after an (untimed) prefill, greedy;
- tracing: the workbench prefill with every hook point traced (``run_with_trace(names=None)``) and the
  decode steps with every hook traced, against the same without tracing.

Logits are compared first (max abs difference relative to the logit scale) so the two really compute the
same thing. Prints ratios; absolute times on a shared machine mean little.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
import warnings

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def load_hf(path, dtype):
    import transformers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        m = transformers.GptOssForCausalLM.from_pretrained(
            path, quantization_config=transformers.Mxfp4Config(dequantize=True), dtype=dtype)
    return m.eval()


@torch.no_grad()
def hf_decode(model, prompt, steps):
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out = model(prompt[None], cache=cache, use_cache=True, logits_to_keep=1)
    t = time.perf_counter()
    nxt = out.logits[:, -1:].argmax(-1)
    for _ in range(steps):
        out = model(nxt, cache=cache, use_cache=True)
        nxt = out.logits[:, -1:].argmax(-1)
    return time.perf_counter() - t


@torch.no_grad()
def wb_decode(model, prompt, steps, trace=False):
    cache = model.new_cache()
    logits = model(prompt, cache, last_only=True)
    t = time.perf_counter()
    nxt = logits[-1:].argmax(-1)
    for _ in range(steps):
        if trace:
            logits, _ = model.run_with_trace(nxt, cache=cache)
        else:
            logits = model(nxt, cache)
        nxt = logits[-1:].argmax(-1)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--checkpoint", default=None, help="use this checkpoint instead of making the small preset")
    args = ap.parse_args()

    from workbench import load_model, make_tiny_checkpoint

    tmp = None
    path = args.checkpoint
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="wb-bench-")
        path = make_tiny_checkpoint(os.path.join(tmp.name, "small"), preset="small", layout="hf")
    import transformers

    print(f"# {datetime.date.today()} {platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), transformers {transformers.__version__}")
    tokens = torch.randint(0, 200000, (args.prefill,), generator=torch.Generator().manual_seed(0))
    rows = []
    for name in args.dtypes.split(","):
        dtype = DTYPES[name]
        wb = load_model(path, dtype=dtype)
        hf = load_hf(path, dtype)
        print(f"\n## {name}: {wb.extra_repr()}")
        print(f"transformers: attn_implementation={hf.config._attn_implementation}, "
              f"experts_implementation={getattr(hf.config, '_experts_implementation', '?')}")
        with torch.no_grad():
            a, b = wb(tokens).float(), hf(tokens[None]).logits[0].float()
        rel = float((a - b).abs().max() / b.abs().max())
        print(f"logits agree: max |wb - hf| / max |hf| = {rel:.2e}")

        with torch.no_grad():
            t_wb = best(lambda: wb(tokens), args.repeats)
            t_hf = best(lambda: hf(tokens[None]), args.repeats)
            t_tr = best(lambda: wb.run_with_trace(tokens), args.repeats)
            t_wb = min(t_wb, best(lambda: wb(tokens), args.repeats))  # interleave: noise hits both
        d_wb = min(wb_decode(wb, tokens, args.decode) for _ in range(args.repeats))
        d_hf = min(hf_decode(hf, tokens, args.decode) for _ in range(args.repeats))
        d_tr = min(wb_decode(wb, tokens, args.decode, trace=True) for _ in range(args.repeats))
        d_wb = min(d_wb, min(wb_decode(wb, tokens, args.decode) for _ in range(args.repeats)))
        n = args.decode
        print(f"prefill {args.prefill}: workbench {t_wb:.3f} s, transformers {t_hf:.3f} s -> {t_hf / t_wb:.2f}x; "
              f"traced (all hooks) {t_tr:.3f} s (+{100 * (t_tr / t_wb - 1):.1f}%)")
        print(f"decode {n} steps: workbench {1e3 * d_wb / n:.1f} ms/step, transformers {1e3 * d_hf / n:.1f} ms/step "
              f"-> {d_hf / d_wb:.2f}x; traced (all hooks) {1e3 * d_tr / n:.1f} ms/step (+{100 * (d_tr / d_wb - 1):.1f}%)")
        rows.append((name, t_wb, t_hf, t_tr, d_wb / n, d_hf / n, d_tr / n, rel))
        del wb, hf
    print("\n| dtype | prefill wb | prefill hf | prefill ratio | traced prefill | decode wb | decode hf | "
          "decode ratio | traced decode | logits rel diff |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, t_wb, t_hf, t_tr, d_wb, d_hf, d_tr, rel in rows:
        print(f"| {name} | {t_wb:.2f} s | {t_hf:.2f} s | {t_hf / t_wb:.2f}x | +{100 * (t_tr / t_wb - 1):.1f}% | "
              f"{1e3 * d_wb:.1f} ms | {1e3 * d_hf:.1f} ms | {d_hf / d_wb:.2f}x | +{100 * (d_tr / d_wb - 1):.1f}% | "
              f"{rel:.1e} |")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
