"""Ways to multiply by MXFP4 expert weights on a CPU, compared in one run (why workbench.cpu_kernels is C++).

    python benchmarks/cpu_experts.py [--threads 2] [--rows 1,16] [--repeats 5]

One 20b MLP layer's shapes: 4 experts (of 32) of W1 [5760, 2880] and W2 [2880, 2880] as packed MXFP4, picks
rotating so the weights come from memory, not cache. For 1 row per expert (decode) and 16 (a 128-token
prefill's average), bf16 activations:

- ``dequantize + matmul``: the pure-torch path (``mxfp4.dequantize`` each expert to fp32, then ``addmm``);
- ``dequantize into a reused buffer``: the same with ``dequantize(..., out=)`` into one preallocated buffer;
- ``numba``: the same LUT decode + dot as the C++ scalar kernel, ``@njit(parallel=True, fastmath=False)``
  over output rows (only if numba is installed; it is not a dependency);
- ``C++ <isa>``: ``workbench.cpu_kernels.mxfp4_linear`` for every instruction set this CPU runs.

Each result is checked against the first before it is timed. Prints time per layer and the weight bytes
read per second (packed bytes, 4 experts x (W1 + W2)).
"""

from __future__ import annotations

import argparse

import torch
from forward_cpu import best  # (run from the repository root: python benchmarks/cpu_experts.py)

from workbench import cpu_kernels, mxfp4

E, I, H = 32, 2880, 2880


def numba_linear():
    try:
        import numba
        import numpy as np
    except ImportError:
        return None
    lut = np.array(mxfp4.E2M1_VALUES, dtype=np.float32)
    scale = np.ldexp(np.ones(256, dtype=np.float32), np.arange(256) - 127).astype(np.float32)

    @numba.njit(parallel=True, fastmath=False, cache=False)
    def kernel(x, blocks, scales, out):  # x [R, K] f32, blocks [O, G, 16] u8, scales [O, G] u8, out [R, O]
        R, O, G = x.shape[0], blocks.shape[0], blocks.shape[1]
        for o in numba.prange(O):
            for r in range(R):
                acc = np.float32(0.0)
                for g in range(G):
                    part = np.float32(0.0)
                    for i in range(16):
                        b = blocks[o, g, i]
                        part += lut[b & 15] * x[r, 32 * g + 2 * i] + lut[b >> 4] * x[r, 32 * g + 2 * i + 1]
                    acc += part * scale[scales[o, g]]
                out[r, o] = acc

    def run(x, b, s):
        out = np.empty((x.shape[0], b.shape[0]), dtype=np.float32)
        kernel(x.float().numpy(), b.numpy(), s.numpy(), out)
        return torch.from_numpy(out)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", default="1,16")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    w1 = (torch.randint(0, 256, (E, 2 * I, H // 32, 16), generator=gen, dtype=torch.uint8),
          torch.randint(118, 124, (E, 2 * I, H // 32), generator=gen, dtype=torch.uint8))
    w2 = (torch.randint(0, 256, (E, H, I // 32, 16), generator=gen, dtype=torch.uint8),
          torch.randint(118, 124, (E, H, I // 32), generator=gen, dtype=torch.uint8))
    nbytes = 4 * sum(t[0][0].nbytes + t[1][0].nbytes for t in (w1, w2))
    buf = {name: torch.empty(t[0].shape[1], t[0].shape[2] * 32) for name, t in (("w1", w1), ("w2", w2))}
    nb = numba_linear()
    print(f"# torch {torch.__version__}, {args.threads} threads, kernels: {cpu_kernels.status()}; "
          f"{nbytes / 1e6:.0f} MB of packed weights per layer")
    for R in map(int, args.rows.split(",")):
        x = torch.randn(4 * R, H, generator=gen).bfloat16()
        starts = [0, R, 2 * R, 3 * R, 4 * R]
        step = [0]

        def picks():  # rotate through the 32 experts: weights come from memory
            step[0] += 1
            return [(4 * step[0] + j) % E for j in range(4)]

        def torch_path(reuse: bool):
            ex = picks()
            for (b, s), name in ((w1, "w1"), (w2, "w2")):
                for j, e in enumerate(ex):
                    W = mxfp4.dequantize(b[e], s[e], torch.float32, out=buf[name] if reuse else None)
                    (x[starts[j]:starts[j + 1], :W.shape[1]].float() @ W.T)

        def kernel_path(isa):
            ex = picks()
            for b, s in (w1, w2):
                cpu_kernels.mxfp4_linear(x[:, :b.shape[2] * 32], b, s, None, starts, ex, isa=isa)

        candidates = {"dequantize + matmul": lambda: torch_path(False),
                      "dequantize into a reused buffer": lambda: torch_path(True)}
        if nb is not None:
            candidates["numba (njit, parallel)"] = lambda: [nb(x[starts[j]:starts[j + 1]], b[e], s[e])
                                                          for j, e in enumerate(picks()) for b, s in (w1, w2)]
        for isa in cpu_kernels.ISAS[: cpu_kernels.library().wb_best_isa() + 1] if cpu_kernels.available() else []:
            candidates[f"C++ {isa}"] = lambda isa=isa: kernel_path(isa)
        # the same numbers first: expert 5, W1
        ref = x[:R].float() @ mxfp4.dequantize(w1[0][5], w1[1][5], torch.float32).T
        got = cpu_kernels.mxfp4_linear(x[:R], w1[0], w1[1], None, [0, R], [5])
        assert float((got - ref).abs().max() / ref.abs().max()) < 1e-6
        if nb is not None:
            assert float((nb(x[:R], w1[0][5], w1[1][5]) - ref).abs().max() / ref.abs().max()) < 1e-6
            nb(x[:R], w1[0][5], w1[1][5])  # compiled
        print(f"\n## {R} row(s) per expert")
        base = None
        for name, fn in candidates.items():
            t = best(fn, args.repeats)
            base = base or t
            print(f"{name:34s} {1e3 * t:9.2f} ms/layer  {nbytes / t / 1e9:6.2f} GB/s  {base / t:7.1f}x")


if __name__ == "__main__":
    main()
