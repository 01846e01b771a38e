"""Dequantize a 20b-shaped MXFP4 expert tensor: the workbench against transformers, in one run.

    python benchmarks/mxfp4.py [--repeats 3] [--experts 32]

Peer: ``transformers.integrations.mxfp4.convert_moe_packed_tensors`` (what users have today; it returns
the transposed [E, in, out] layout). Both results are checked equal first. Prints GB/s of bf16 output
for each, their ratio, and a plain torch copy of the same output size as the memory-bandwidth limit.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from workbench import mxfp4


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--experts", type=int, default=32, help="32 = one gpt-oss-20b mlp1 tensor")
    args = ap.parse_args()
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    g = torch.Generator().manual_seed(0)
    shape = (args.experts, 5760, 90, 16)  # mlp1 of gpt-oss-20b: [E, 2I, H/32, 16]
    blocks = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    scales = torch.randint(115, 130, shape[:-1], generator=g, dtype=torch.uint8)
    out = torch.empty(*shape[:-2], shape[-2] * 32, dtype=torch.bfloat16)

    ours = mxfp4.dequantize(blocks, scales, out=out)
    theirs = convert_moe_packed_tensors(blocks, scales, dtype=torch.bfloat16)
    assert torch.equal(ours, theirs.transpose(1, 2)), "results differ"
    del theirs
    gb = out.numel() * out.element_size() / 1e9

    t_ours = best_time(lambda: mxfp4.dequantize(blocks, scales, out=out), args.repeats)
    t_ours_alloc = best_time(lambda: mxfp4.dequantize(blocks, scales), args.repeats)
    t_theirs = best_time(lambda: convert_moe_packed_tensors(blocks, scales, dtype=torch.bfloat16), args.repeats)
    copy_dst = torch.empty_like(out)
    t_copy = best_time(lambda: copy_dst.copy_(out), args.repeats)

    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"tensor: blocks {list(shape)} -> bf16 {list(out.shape)} ({gb:.2f} GB of output); values identical")
    print(f"workbench dequantize (into out)   {t_ours:7.3f} s  {gb / t_ours:6.2f} GB/s")
    print(f"workbench dequantize (allocating) {t_ours_alloc:7.3f} s  {gb / t_ours_alloc:6.2f} GB/s")
    print(f"transformers convert_moe_packed   {t_theirs:7.3f} s  {gb / t_theirs:6.2f} GB/s")
    print(f"torch copy of the output size     {t_copy:7.3f} s  {gb / t_copy:6.2f} GB/s (memory limit)")
    print(f"ratio workbench/transformers: {t_theirs / t_ours_alloc:.1f}x (allocating), {t_theirs / t_ours:.1f}x (into out); "
          f"workbench at {t_copy / t_ours:.0%} of copy speed")


if __name__ == "__main__":
    main()
