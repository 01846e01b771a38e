"""Workbench forward pass against transformers' GptOssForCausalLM on the same "small" weights, one run.

    python benchmarks/forward_cpu.py [--dtypes fp32,bf16] [--prefill 512] [--decode 64] [--repeats 3]

Both load the same checkpoint (the "small" preset, Hugging Face layout, MXFP4 experts; transformers
dequantizes them at load with ``Mxfp4Config(dequantize=True)``, the workbench keeps them packed and
dequantizes the picked experts each step). Timed, best of ``--repeats``, the two models interleaved:

- prefill: ``--prefill`` tokens into an empty KV cache, logits for the last position (what generation
  does: transformers' ``logits_to_keep=1``, the workbench's ``last_only=True``);
- full forward: the same tokens without a cache, logits for every position (dominated by the
  201088-wide unembedding, the same GEMM on both sides);
- decode: ``--decode`` single-token steps with a KV cache after an (untimed) prefill, greedy;
- tracing: the workbench prefill and decode with every hook point traced (``run_with_trace(names=None)``)
  against the same without tracing; and the prefill traced at every point but the attention internals
  (scores/probs need the eager [Hq, T, S] attention instead of the fused kernel; sink_prob comes free).

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
def hf_prefill(model, prompt):
    from transformers import DynamicCache

    return model(prompt[None], cache=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1).logits


def _not_attention_internals(name: str) -> bool:
    return not name.endswith(("attn.scores", "attn.probs"))


@torch.no_grad()
def wb_prefill(model, prompt, trace=False):
    if trace:
        names = None if trace == "all" else _not_attention_internals
        return model.run_with_trace(prompt, names, cache=model.new_cache(), last_only=True)[0]
    return model(prompt, model.new_cache(), last_only=True)


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
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--checkpoint", default=None, help="use this checkpoint instead of making the small preset")
    args = ap.parse_args()

    from workbench import load_model, make_tiny_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)

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
            t_wb = best(lambda: wb_prefill(wb, tokens), args.repeats)
            t_hf = best(lambda: hf_prefill(hf, tokens), args.repeats)
            t_tr = best(lambda: wb_prefill(wb, tokens, trace="all"), args.repeats)
            t_tr2 = best(lambda: wb_prefill(wb, tokens, trace="no-attn-internals"), args.repeats)
            t_wb = min(t_wb, best(lambda: wb_prefill(wb, tokens), args.repeats))  # interleaved: noise hits both
            f_wb = best(lambda: wb(tokens), args.repeats)
            f_hf = best(lambda: hf(tokens[None]), args.repeats)
        d_wb = min(wb_decode(wb, tokens, args.decode) for _ in range(args.repeats))
        d_hf = min(hf_decode(hf, tokens, args.decode) for _ in range(args.repeats))
        d_tr = min(wb_decode(wb, tokens, args.decode, trace=True) for _ in range(args.repeats))
        d_wb = min(d_wb, min(wb_decode(wb, tokens, args.decode) for _ in range(args.repeats)))
        n = args.decode
        print(f"prefill {args.prefill} (last logits): workbench {t_wb:.3f} s, transformers {t_hf:.3f} s -> "
              f"{t_hf / t_wb:.2f}x; traced (all hooks) {t_tr:.3f} s ({100 * (t_tr / t_wb - 1):+.1f}%), "
              f"traced (all but attn scores/probs) {t_tr2:.3f} s ({100 * (t_tr2 / t_wb - 1):+.1f}%)")
        print(f"full forward {args.prefill} (all logits): workbench {f_wb:.3f} s, transformers {f_hf:.3f} s -> "
              f"{f_hf / f_wb:.2f}x")
        print(f"decode {n} steps: workbench {1e3 * d_wb / n:.1f} ms/step, transformers {1e3 * d_hf / n:.1f} ms/step "
              f"-> {d_hf / d_wb:.2f}x; traced (all hooks) {1e3 * d_tr / n:.1f} ms/step (+{100 * (d_tr / d_wb - 1):.1f}%)")
        rows.append((name, t_wb, t_hf, t_tr, f_wb, f_hf, d_wb / n, d_hf / n, d_tr / n, rel))
    print("\n| dtype | prefill wb / hf | prefill ratio | traced prefill | full fwd wb / hf | full fwd ratio | "
          "decode wb / hf | decode ratio | traced decode | logits rel diff |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, t_wb, t_hf, t_tr, f_wb, f_hf, d_wb, d_hf, d_tr, rel in rows:
        print(f"| {name} | {t_wb:.2f} / {t_hf:.2f} s | {t_hf / t_wb:.2f}x | {100 * (t_tr / t_wb - 1):+.1f}% | "
              f"{f_wb:.2f} / {f_hf:.2f} s | {f_hf / f_wb:.2f}x | {1e3 * d_wb:.0f} / {1e3 * d_hf:.0f} ms | "
              f"{d_hf / d_wb:.2f}x | {100 * (d_tr / d_wb - 1):+.1f}% | {rel:.1e} |")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
