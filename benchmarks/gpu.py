#!/usr/bin/env python
"""GPU checks and benchmarks for the Triton kernels and GPU decode (issues 6, 15). ~5-7 minutes on an H100/H200.

    python benchmarks/gpu.py                                    # on a CUDA machine
    TRITON_INTERPRET=1 python benchmarks/gpu.py --interpret     # tiny shapes on the CPU: the script runs

It builds 20b-shaped random weights directly on the GPU (nothing read from disk) and
1. measures the card's two ceilings: device-to-device copy bandwidth and a bf16 matmul;
2. checks every kernel against its torch reference on the GPU (bf16 inputs);
3. times the MXFP4 MoE for decode (1 token, top-4 of 32) and prefill (2048 tokens): kernel time, GB/s of
   weights read against HBM bandwidth, and a dense-bf16 torch peer doing the same expert math;
4. times attention prefill at 4096 tokens (64 query heads, 8 KV heads, head_dim 64): TFLOP/s of the
   kernel with sinks against torch SDPA (flash) without sinks and against the torch reference with sinks;
5. times decode of a whole 20b-shaped stack: (a) a kernel-path proxy (norms, dense projections,
   attention, router and MoE kernels, unembedding) captured in a CUDA graph, against the bandwidth limit;
   (b) workbench.model itself at batch 1 and 8 (``bench_model_decode``): the Triton backend with the
   whole step in one CUDA graph (workbench.decode) against the bandwidth roofline (3.7 GB per batch-1
   token at the 20b shapes), the same graph recording router/picks/sink traces, the Triton backend
   eager, and the torch backend eager as the in-run peer; first checking graph == eager == torch.
Small tile sweeps pick the best configuration for each kernel; all are reported.
Timings are medians of several timed batches; expert picks rotate so the weights are not served from L2.
Results: $OUT/gpu.json and $OUT/gpu.txt (OUT defaults to ./gpu-results).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

START = time.time()
ROOT = Path(__file__).resolve().parents[1]


def import_kernels():
    """workbench.kernels, also from a plain checkout (no pip install): kernels/ is mapped onto the package."""
    try:
        import workbench.kernels as K
    except ImportError:
        sys.path.insert(0, str(ROOT))
        import workbench

        workbench.__path__.append(str(ROOT))  # what setuptools' package-dir "workbench.kernels" = "kernels" does
        import workbench.kernels as K
    return K
HBM_NOMINAL = {"H200": 4.8e12, "H100 NVL": 3.9e12, "H100 PCIe": 2.0e12, "H100": 3.35e12}  # bytes/s


def log(*a):
    print(f"[{time.time() - START:6.1f}s]", *a, flush=True)


class Bench:
    def __init__(self, interpret: bool, budget_s: float):
        self.interpret, self.budget_s = interpret, budget_s
        self.device = torch.device("cpu" if interpret else "cuda")

    def over_budget(self, frac: float = 1.0) -> bool:
        return time.time() - START > self.budget_s * frac

    def time(self, fn, *, graph: bool = False, per_call: int = 1, target_s: float = 0.15) -> float:
        """Median seconds per call of fn (fn may run per_call calls; the result is divided by it)."""
        if self.interpret:  # one run: correctness of the path only, never a timing
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) / per_call
        fn()
        torch.cuda.synchronize()
        step = fn
        if graph:
            g = torch.cuda.CUDAGraph()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                fn()
            torch.cuda.current_stream().wait_stream(s)
            with torch.cuda.graph(g):
                fn()
            step = g.replay
            step()
        torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        torch.cuda.synchronize()
        once = max(time.perf_counter() - t, 1e-6)
        inner = max(1, min(200, int(target_s / 5 / once)))
        times = []
        for _ in range(5):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(inner):
                step()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3 / inner)
        return statistics.median(times) / per_call


# ---- shapes and weights ---------------------------------------------------------------------------

def shapes(interpret: bool) -> dict:
    if interpret:
        return dict(E=4, k=2, H=64, I=64, Hq=4, Hkv=2, D=16, layers=1, vocab=512, window=8, decode_ctx=40,
                    moe_prefill=24, attn_T=40, check_T=12, tiles=dict(block_m=16, block_n=16))
    return dict(E=32, k=4, H=2880, I=2880, Hq=64, Hkv=8, D=64, layers=24, vocab=201088, window=128,
                decode_ctx=1024, moe_prefill=2048, attn_T=4096, check_T=512, tiles={})


def random_mxfp4(shape_out_in, device, gen):
    """Random MXFP4 weight [..., out, in]: uniform codes, scales 2**-9 .. 2**-4 (values up to ~0.4)."""
    *lead, n_out, n_in = shape_out_in
    blocks = torch.randint(0, 256, (*lead, n_out, n_in // 32, 16), dtype=torch.uint8, device=device, generator=gen)
    scales = torch.randint(118, 124, (*lead, n_out, n_in // 32), dtype=torch.uint8, device=device, generator=gen)
    return blocks, scales


def make_experts(s, device, gen):
    E, H, I = s["E"], s["H"], s["I"]
    b1, s1 = random_mxfp4((E, 2 * I, H), device, gen)
    b2, s2 = random_mxfp4((E, H, I), device, gen)
    bias1 = (torch.randn(E, 2 * I, device=device, generator=gen) * 0.1).bfloat16()
    bias2 = (torch.randn(E, H, device=device, generator=gen) * 0.1).bfloat16()
    return b1, s1, bias1, b2, s2, bias2


def expert_bytes(E_used: int, H: int, I: int) -> int:
    per = (2 * I * H // 2 + 2 * I * H // 32 + 2 * I * 2) + (H * I // 2 + H * I // 32 + H * 2)
    return E_used * per


# ---- 1. ceilings ----------------------------------------------------------------------------------

def ceilings(b: Bench) -> dict:
    if b.interpret:
        return {}
    n = 1 << 29  # 1 GiB of bytes
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t_copy = b.time(lambda: dst.copy_(src))
    del src, dst
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t_mm = b.time(lambda: a @ a)
    del a
    return {"copy_GBps": 2 * n / t_copy / 1e9, "bf16_matmul_TFLOPs": 2 * 8192 ** 3 / t_mm / 1e12}


# ---- 2. checks ------------------------------------------------------------------------------------

def rel_err(got, want) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-6))


def checks(b: Bench, K, s, experts, gen) -> dict:
    out = {}
    dev = b.device
    logits = torch.randn(s["check_T"], s["E"], device=dev, generator=gen).bfloat16()
    idx, w = K.router(logits, s["k"])
    ridx, rw = K.router_stable_torch(logits, s["k"])
    out["router"] = {"idx_equal": bool(torch.equal(idx, ridx)), "weights_rel_err": rel_err(w, rw)}
    out["router"]["ok"] = out["router"]["idx_equal"] and out["router"]["weights_rel_err"] < 1e-2
    for name, T, grouped in (("moe_decode_T1", 1, False), ("moe_decode_T4", 4, False),
                             ("moe_grouped", s["check_T"], True)):
        x = torch.randn(T, s["H"], device=dev, generator=gen).bfloat16()
        lg = torch.randn(T, s["E"], device=dev, generator=gen)
        vals, eidx = lg.topk(s["k"])
        ew = vals.softmax(-1)
        got = K.moe(x, eidx, ew, *experts, 7.0, grouped=grouped)
        want = K.moe_torch(x, eidx, ew, *experts, 7.0)
        e = rel_err(got, want)
        out[name] = {"rel_err": e, "ok": e < 2e-2}
    Hq, Hkv, D, W = s["Hq"], s["Hkv"], s["D"], s["window"]
    sinks = torch.randn(Hq, device=dev, generator=gen)
    for name, T, S, offset, window in (("attn_prefill_full", s["check_T"], s["check_T"], 0, None),
                                       ("attn_prefill_window", s["check_T"], s["check_T"], 0, W),
                                       ("attn_decode_full", 1, s["decode_ctx"], s["decode_ctx"] - 1, None),
                                       ("attn_chunk_window", 16, s["decode_ctx"], s["decode_ctx"] - 16, W)):
        q = torch.randn(T, Hq, D, device=dev, generator=gen).bfloat16()
        k = torch.randn(S, Hkv, D, device=dev, generator=gen).bfloat16()
        v = torch.randn(S, Hkv, D, device=dev, generator=gen).bfloat16()
        got, sp = K.attention(q, k, v, sinks, None, window, offset, return_sink_prob=True, **s["tiles"])
        want, wsp = K.attention_torch(q, k, v, sinks, None, window, offset, return_sink_prob=True)
        e, es = rel_err(got, want), float((sp - wsp).abs().max())
        out[name] = {"rel_err": e, "sink_prob_abs_err": es, "ok": e < 2e-2 and es < 1e-3}
    # explicit positions: a left-padded batch (prefill), and ring-buffer slots in no order (decode)
    S, B = s["check_T"], 3
    q = torch.randn(B, S, Hq, D, device=dev, generator=gen).bfloat16()
    k = torch.randn(B, S, Hkv, D, device=dev, generator=gen).bfloat16()
    v = torch.randn(B, S, Hkv, D, device=dev, generator=gen).bfloat16()
    pads = torch.tensor([0, S // 3, S - 5], device=dev)
    col = torch.arange(S, device=dev)[None]
    kpos = torch.where(col >= pads[:, None], col - pads[:, None], -1)
    for name, qq, qpos, off, window in (("attn_padded_prefill", q, kpos.clamp_min(0), 0, W),
                                        ("attn_ring_decode", q[:, -1:], kpos[:, -1:].clamp_min(0), None, None)):
        ks, vs, kp = k, v, kpos
        if off is None:  # keys scattered over slots in a random order
            perm = torch.randperm(S, device=dev, generator=gen)
            ks, vs, kp = k[:, perm], v[:, perm], kpos[:, perm]
        got, sp = K.attention(qq, ks, vs, sinks, None, window, off, q_pos=qpos, k_pos=kp, return_sink_prob=True,
                              **s["tiles"])
        want, wsp = K.attention_torch(qq, ks, vs, sinks, None, window, off, q_pos=qpos, k_pos=kp,
                                      return_sink_prob=True)
        real = (qpos >= 0) & (kp.amax(1, keepdim=True) >= 0) if off is None else kpos >= 0  # rows at padding: any
        e = rel_err(got[real], want[real])
        es = float((sp - wsp).abs().transpose(1, 2)[real].max())
        out[name] = {"rel_err": e, "sink_prob_abs_err": es, "ok": e < 2e-2 and es < 1e-3}
    return out


# ---- 3. MoE ---------------------------------------------------------------------------------------

DECODE_SWEEP = [dict(), dict(block_n=32, block_n2=32), dict(block_k=512, block_k2=512),
                dict(block_n=8, block_n2=8, num_warps=2), dict(block_n=32, block_n2=32, block_k=128, block_k2=128)]
GROUPED_SWEEP = [dict(), dict(block_n=64, block_k=64, block_n2=64, block_k2=128, num_warps=8, num_stages=4),
                 dict(block_m=128, block_n=32, block_k=64, block_n2=64, block_k2=64, num_warps=8),
                 dict(block_n=64, block_k=128, block_n2=64, block_k2=128, num_warps=8, num_stages=2)]


def sweep(b: Bench, run, configs, **time_kw):
    """[(config, seconds or error)], best first among those that ran."""
    res = []
    for cfg in configs:
        if res and b.over_budget(0.8):
            res.append((cfg, "skipped: time budget"))
            continue
        try:
            res.append((cfg, b.time(lambda: run(cfg), **time_kw)))
        except Exception as e:  # a config that fails to compile (e.g. out of shared memory) is reported
            res.append((cfg, f"error: {type(e).__name__}: {str(e)[:200]}"))
    return sorted(res, key=lambda r: r[1] if isinstance(r[1], float) else math.inf)


def bench_moe(b: Bench, K, s, experts, gen, hbm) -> dict:
    E, k, H, I = s["E"], s["k"], s["H"], s["I"]
    dev = b.device
    out = {}
    # decode: 1 token, top-k; R different pick sets rotate through all experts so L2 does not serve them
    R = max(1, E // k)
    picks = [torch.arange(r * k, (r + 1) * k, device=dev).view(1, k) % E for r in range(R)]
    x1 = torch.randn(1, H, device=dev, generator=gen).bfloat16()
    w1 = torch.full((1, k), 1.0 / k, device=dev)

    def decode(cfg):
        for p in picks:
            K.moe(x1, p, w1, *experts, 7.0, grouped=False, **cfg)

    res = sweep(b, decode, DECODE_SWEEP if not b.interpret else DECODE_SWEEP[:1], graph=True, per_call=R)
    t = res[0][1]
    nbytes = expert_bytes(k, H, I)
    out["decode"] = {"seconds": t, "bytes": nbytes, "GBps": nbytes / t / 1e9, "best_config": res[0][0],
                     "sweep": [(c, r) for c, r in res]}
    if hbm:
        out["decode"]["frac_of_HBM_nominal"] = nbytes / t / hbm
    # dense bf16 torch peer: the same k experts' math with pre-dequantised bf16 weights (2 GEMVs each)
    from workbench.mxfp4 import dequantize

    dense = [(dequantize(experts[0][e], experts[1][e]), dequantize(experts[3][e], experts[4][e]))
             for e in range(min(E, R * k))]

    def dense_decode():
        for r in range(R):
            y = torch.zeros_like(x1)
            for e in range(r * k, (r + 1) * k):
                W1, W2 = dense[e % len(dense)]
                h = F.linear(x1, W1, experts[2][e % E])
                y += F.linear(K.swiglu(h, 7.0), W2, experts[5][e % E]) / k
    t_dense = b.time(dense_decode, graph=True, per_call=R)
    out["decode"]["dense_bf16_torch_seconds"] = t_dense
    out["decode"]["speedup_vs_dense_bf16"] = t_dense / t
    del dense
    if b.over_budget(0.6):
        return out
    # prefill: T tokens, random top-k picks
    T = s["moe_prefill"]
    x = torch.randn(T, H, device=dev, generator=gen).bfloat16()
    vals, idx = torch.randn(T, E, device=dev, generator=gen).topk(k)
    wts = vals.softmax(-1)
    res = sweep(b, lambda cfg: K.moe(x, idx, wts, *experts, 7.0, grouped=True, **cfg),
                GROUPED_SWEEP if not b.interpret else GROUPED_SWEEP[:1])
    t = res[0][1]
    flops = 2 * T * k * (2 * I * H + H * I)
    out["prefill"] = {"tokens": T, "seconds": t, "TFLOPs": flops / t / 1e12,
                      "weights_GBps": expert_bytes(E, H, I) / t / 1e9, "best_config": res[0][0],
                      "sweep": [(c, r) for c, r in res]}
    t_ref = b.time(lambda: K.moe_torch(x, idx, wts, *experts, 7.0), target_s=0.05)
    out["prefill"]["torch_reference_seconds"] = t_ref
    out["prefill"]["speedup_vs_torch_reference"] = t_ref / t
    return out


# ---- 4. attention ---------------------------------------------------------------------------------

ATTN_SWEEP = [dict(), dict(block_m=128, block_n=64, num_warps=8, num_stages=3),
              dict(block_m=128, block_n=128, num_warps=8, num_stages=2), dict(block_m=64, block_n=64, num_warps=4)]


def bench_attention(b: Bench, K, s, gen) -> dict:
    T, Hq, Hkv, D, W = s["attn_T"], s["Hq"], s["Hkv"], s["D"], s["window"]
    dev = b.device
    q = torch.randn(T, Hq, D, device=dev, generator=gen).bfloat16()
    k = torch.randn(T, Hkv, D, device=dev, generator=gen).bfloat16()
    v = torch.randn(T, Hkv, D, device=dev, generator=gen).bfloat16()
    sinks = torch.randn(Hq, device=dev, generator=gen)
    causal_pairs = T * (T + 1) / 2
    window_pairs = sum(min(i + 1, W) for i in range(T))
    fl = lambda pairs: 4 * D * Hq * pairs  # QK^T and PV, 2 flops per multiply-add
    out = {"T": T}
    tiles = s["tiles"]
    res = sweep(b, lambda cfg: K.attention(q, k, v, sinks, None, None, 0, **{**tiles, **cfg}),
                ATTN_SWEEP if not b.interpret else [{}])
    t = res[0][1]
    out["sinks_causal"] = {"seconds": t, "TFLOPs": fl(causal_pairs) / t / 1e12, "best_config": res[0][0],
                           "sweep": [(c, r) for c, r in res]}
    best = {**tiles, **res[0][0]}
    t_w = b.time(lambda: K.attention(q, k, v, sinks, None, W, 0, **best))
    out["sinks_window"] = {"window": W, "seconds": t_w, "TFLOPs": fl(window_pairs) / t_w / 1e12}
    # peer: SDPA (flash) without sinks; K/V expanded to all heads outside the timing
    qs = q.transpose(0, 1)[None]
    ks = k.repeat_interleave(Hq // Hkv, dim=1).transpose(0, 1)[None]
    vs = v.repeat_interleave(Hq // Hkv, dim=1).transpose(0, 1)[None]
    sdpa = lambda: F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        if not b.interpret:
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                t_sdpa = b.time(sdpa)
            peer = "flash"
        else:
            raise RuntimeError("no flash on the CPU")
    except Exception:
        t_sdpa, peer = b.time(sdpa), "default"
    out["sdpa_causal_no_sinks"] = {"backend": peer, "seconds": t_sdpa, "TFLOPs": fl(causal_pairs) / t_sdpa / 1e12}
    out["ratio_vs_sdpa"] = t_sdpa / t
    if not b.over_budget(0.7):
        t_ref = b.time(lambda: K.attention_torch(q, k, v, sinks, None, None, 0), target_s=0.05)
        out["torch_reference_sinks"] = {"seconds": t_ref, "TFLOPs": fl(causal_pairs) / t_ref / 1e12}
        out["speedup_vs_torch_reference"] = t_ref / t
    # decode against a cache of decode_ctx keys (split key range)
    S = s["decode_ctx"]
    q1 = q[:1]
    t_dec = b.time(lambda: K.attention(q1, k[:S], v[:S], sinks, None, None, S - 1), graph=True)
    t_dec_sdpa = b.time(lambda: F.scaled_dot_product_attention(qs[:, :, :1], ks[:, :, :S], vs[:, :, :S]), graph=True)
    out["decode"] = {"S": S, "seconds": t_dec, "sdpa_seconds": t_dec_sdpa,
                     "kv_GBps": 2 * S * Hkv * D * 2 / t_dec / 1e9}
    return out


# ---- 5. whole-model decode ------------------------------------------------------------------------

def random_weights(s, device, gen):
    """Canonical-name weights for a gpt-oss stack of s's shapes, random, on ``device``."""
    from workbench.checkpoint import MXFP4Tensor

    H, I, E, Hq, Hkv, D, V = s["H"], s["I"], s["E"], s["Hq"], s["Hkv"], s["D"], s["vocab"]
    r = lambda *shape, scale=0.02: (torch.randn(*shape, device=device, generator=gen) * scale).bfloat16()
    w = {"embedding.weight": r(V, H, scale=1.0), "norm.scale": torch.ones(H, device=device),
         "unembedding.weight": r(V, H)}
    for i in range(s["layers"]):
        p = f"block.{i}."
        w.update({p + "attn.norm.scale": torch.ones(H, device=device), p + "attn.qkv.weight": r((Hq + 2 * Hkv) * D, H),
                  p + "attn.qkv.bias": r((Hq + 2 * Hkv) * D), p + "attn.sinks": r(Hq, scale=1.0),
                  p + "attn.out.weight": r(H, Hq * D), p + "attn.out.bias": r(H),
                  p + "mlp.norm.scale": torch.ones(H, device=device), p + "mlp.gate.weight": r(E, H, scale=0.1),
                  p + "mlp.gate.bias": r(E), p + "mlp.mlp1_bias": r(E, 2 * I), p + "mlp.mlp2_bias": r(E, H)})
        w[p + "mlp.mlp1_weight"] = MXFP4Tensor(*random_mxfp4((E, 2 * I, H), device, gen))
        w[p + "mlp.mlp2_weight"] = MXFP4Tensor(*random_mxfp4((E, H, I), device, gen))
    return w


def rms(x, scale):
    return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5) * scale).bfloat16()


def bench_proxy_decode(b: Bench, K, s, weights, hbm) -> dict:
    """One token through the stack on the kernel path (no RoPE, no KV write: small elementwise work)."""
    H, Hq, Hkv, D, L = s["H"], s["Hq"], s["Hkv"], s["D"], s["layers"]
    dev = b.device
    ctx = s["decode_ctx"]
    caches = []
    for i in range(L):
        S = min(ctx, s["window"]) if i % 2 == 0 else ctx
        caches.append((torch.randn(S, Hkv, D, device=dev).bfloat16(), torch.randn(S, Hkv, D, device=dev).bfloat16()))
    x0 = torch.randn(1, H, device=dev).bfloat16()

    def step():
        x = x0
        for i in range(L):
            p = f"block.{i}."
            t = rms(x, weights[p + "attn.norm.scale"])
            qkv = F.linear(t, weights[p + "attn.qkv.weight"], weights[p + "attn.qkv.bias"])
            q = qkv[:, : Hq * D].view(1, Hq, D)
            kc, vc = caches[i]
            a = K.attention(q, kc, vc, weights[p + "attn.sinks"], None, s["window"] if i % 2 == 0 else None,
                            kc.shape[0] - 1)
            x = x + F.linear(a.view(1, Hq * D), weights[p + "attn.out.weight"], weights[p + "attn.out.bias"])
            t = rms(x, weights[p + "mlp.norm.scale"])
            idx, wts = K.router(F.linear(t, weights[p + "mlp.gate.weight"], weights[p + "mlp.gate.bias"]), s["k"],
                                weights_dtype=torch.float32)
            m1, m2 = weights[p + "mlp.mlp1_weight"], weights[p + "mlp.mlp2_weight"]
            x = x + K.moe(t, idx, wts, m1.blocks, m1.scales, weights[p + "mlp.mlp1_bias"], m2.blocks, m2.scales,
                          weights[p + "mlp.mlp2_bias"], 7.0)
        return F.linear(rms(x, weights["norm.scale"]), weights["unembedding.weight"])

    t = b.time(step, graph=True, target_s=0.3)
    per_layer_dense = sum(weights[f"block.0.{n}"].nbytes for n in ("attn.qkv.weight", "attn.out.weight",
                                                                   "mlp.gate.weight"))
    kv = sum(2 * c[0].nbytes for c in caches)
    nbytes = L * (per_layer_dense + expert_bytes(s["k"], s["H"], s["I"])) + kv + weights["unembedding.weight"].nbytes
    out = {"tok_per_s": 1 / t, "seconds_per_token": t, "bytes_per_token": nbytes, "GBps": nbytes / t / 1e9,
           "context": ctx}
    if hbm:
        out["bandwidth_limit_tok_per_s"] = hbm / nbytes
        out["frac_of_limit"] = (1 / t) / (hbm / nbytes)
    return out


def _model(s, weights, device, backend):
    import workbench.model as wm
    from workbench.config import ModelConfig

    cfg = ModelConfig(num_hidden_layers=s["layers"], num_experts=s["E"], experts_per_token=s["k"],
                      vocab_size=s["vocab"], hidden_size=s["H"], intermediate_size=s["I"], head_dim=s["D"],
                      num_attention_heads=s["Hq"], num_key_value_heads=s["Hkv"], sliding_window=s["window"])
    return wm.Model(cfg, weights, dtype=torch.bfloat16, device=device, backend=backend).eval()  # weights shared


def _sync(b: Bench) -> None:
    if not b.interpret:
        torch.cuda.synchronize()


def _per_step(b: Bench, step, first, n: int) -> float:
    """Seconds per decode step: ``step(tokens [B]) -> logits [B, V]`` fed its own argmax (no host sync
    between steps), timed over n steps after one warm step."""
    nxt = step(first).argmax(-1)
    _sync(b)
    t = time.perf_counter()
    for _ in range(n):
        nxt = step(nxt).argmax(-1)
    _sync(b)
    return (time.perf_counter() - t) / n


def decode_bytes(s, weights, picked_per_layer: list[int], batch: int, ctx: int) -> int:
    """Bytes one decode step must read: attention and router weights, the picked experts (their union
    over the batch), the KV cache each sequence sees, the unembedding."""
    dense = sum(weights[f"block.0.{n}"].nbytes for n in ("attn.qkv.weight", "attn.out.weight", "mlp.gate.weight"))
    kv = sum(2 * batch * (min(ctx, s["window"]) if i % 2 == 0 else ctx) * s["Hkv"] * s["D"] * 2
             for i in range(s["layers"]))
    experts = sum(expert_bytes(n, s["H"], s["I"]) for n in picked_per_layer)
    return s["layers"] * dense + experts + kv + weights["unembedding.weight"].nbytes


TRACE_NAMES = ["blocks.*.moe.router_logits", "blocks.*.moe.expert_idx", "blocks.*.moe.expert_weights",
               "blocks.*.attn.sink_prob"]


def bench_model_decode(b: Bench, s, weights, K, hbm) -> dict:
    """workbench.model decoding a 20b-shaped stack at batch 1 and 8: the Triton backend with the whole step
    in one CUDA graph (workbench.decode.StaticDecoder), the same graph recording router/picks/sink traces,
    the Triton backend eager (what hooked decode costs), and the torch backend eager (the in-run peer).
    Checks first: graph decode == eager Triton decode, and both near the torch backend."""
    from workbench.decode import StaticDecoder

    tri, ref = _model(s, weights, b.device, "triton"), _model(s, weights, b.device, "torch")
    n_prompt, n_new = (6, 3) if b.interpret else (s["decode_ctx"], 64)
    out = {"prompt": n_prompt, "timed_steps": n_new, "graph": not b.interpret}
    gen = torch.Generator(device=b.device).manual_seed(1)
    for B in (1, 8) if not b.interpret else (1, 2):
        if B > 1 and b.over_budget(1.6):
            out[f"batch{B}_skipped"] = "time budget"
            break
        r = out[f"batch{B}"] = {}
        prompt = torch.randint(0, s["vocab"], (B, n_prompt), device=b.device, generator=gen)
        first = torch.randint(0, s["vocab"], (B,), device=b.device, generator=gen)
        max_len = n_prompt + 2 * n_new + 8
        with torch.no_grad():
            # correctness: 4 steps of graph decode vs eager Triton vs the torch backend
            dec = StaticDecoder(tri, B, max_len, graph=not b.interpret)
            caches = {m: m.new_cache(B, max_len=max_len) for m in (tri, ref)}
            got = [dec.prefill(prompt)]
            want = {m: [m(prompt, caches[m], last_only=True)[:, -1]] for m in (tri, ref)}
            tok = first
            for _ in range(4):
                got.append(dec.step(tok).clone())
                for m in (tri, ref):
                    want[m].append(m(tok[:, None], caches[m], last_only=True)[:, -1])
                tok = got[-1].argmax(-1)
            g, e, t = (torch.stack(x).float() for x in (got, want[tri], want[ref]))
            r["graph_vs_eager_rel_err"] = rel_err(g, e)
            r["triton_vs_torch_rel_err"] = rel_err(e, t)
            r["argmax_agree_triton_torch"] = float((e.argmax(-1) == t.argmax(-1)).float().mean())
            r["ok"] = r["graph_vs_eager_rel_err"] < 1e-2 and r["triton_vs_torch_rel_err"] < 5e-2
            # speed: the graph, the graph with traces, eager Triton, eager torch
            dec.prefill(prompt)
            r["graph_s_per_step"] = _per_step(b, dec.step, first, n_new)
            traced = StaticDecoder(tri, B, max_len, trace_names=TRACE_NAMES, graph=not b.interpret)
            traced.prefill(prompt)
            r["graph_traced_s_per_step"] = _per_step(b, lambda x: (traced.step(x), traced.trace())[0], first, n_new)
            for name, m in (("triton_eager", tri), ("torch_eager", ref)):
                cache = m.new_cache(B, max_len=max_len)
                m(prompt, cache, last_only=True)
                r[f"{name}_s_per_step"] = _per_step(
                    b, lambda x, m=m, cache=cache: m(x[:, None], cache, last_only=True)[:, -1],
                    first, max(2, n_new // (8 if name == "torch_eager" else 2)))
            _, trace = tri.run_with_trace(first[:, None], "blocks.*.moe.expert_idx", cache=caches[tri],
                                          last_only=True)
            picked = [int(trace[f"blocks.{i}.moe.expert_idx"].unique().numel()) for i in range(s["layers"])]
            del dec, traced, caches
        nbytes = decode_bytes(s, weights, picked, B, n_prompt + n_new)
        r.update(bytes_per_step=nbytes, experts_read_per_layer=statistics.mean(picked))
        for key in ("graph", "graph_traced", "triton_eager", "torch_eager"):
            r[f"{key}_tok_per_s"] = B / r[f"{key}_s_per_step"]
        r["graph_GBps"] = nbytes / r["graph_s_per_step"] / 1e9
        r["tracing_cost_in_graph"] = r["graph_traced_s_per_step"] / r["graph_s_per_step"] - 1
        r["graph_speedup_vs_triton_eager"] = r["triton_eager_s_per_step"] / r["graph_s_per_step"]
        r["graph_speedup_vs_torch_eager"] = r["torch_eager_s_per_step"] / r["graph_s_per_step"]
        if hbm:
            r["bandwidth_limit_tok_per_s"] = B * hbm / nbytes
            r["frac_of_limit"] = r["graph_tok_per_s"] / r["bandwidth_limit_tok_per_s"]
    return out


# ---- compile check (no GPU needed) ----------------------------------------------------------------

def compile_check() -> dict:
    """Compile every kernel with its GPU defaults for sm_90 (H100/H200) through Triton's ahead-of-time path;
    report registers and spill stack per thread (cuobjdump) and whether the Hopper tensor-core path is used."""
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import_kernels()
    moe, att, rt = (sys.modules[f"workbench.kernels.{m}"] for m in ("moe", "attention", "router"))
    ptrs = {"X": "*bf16", "Act": "*bf16", "Bias": "*bf16", "Y": "*bf16", "Wt": "*fp32", "Ypair": "*fp32",
            "Wb": "*u8", "Ws": "*u8", "Idx": "*i64", "Order": "*i64", "TileE": "*i64", "TileR0": "*i64",
            "TileR1": "*i64", "Q": "*bf16", "K": "*bf16", "V": "*bf16", "Sinks": "*fp32", "Out": "*bf16",
            "SinkP": "*fp32", "Mbuf": "*fp32", "Lbuf": "*fp32", "Abuf": "*fp32", "L": "*bf16", "QP": "*i64", "KP": "*i64",
            "limit": "fp32", "scale_log2": "fp32"}
    d, g, H = moe.DECODE_TILES, moe.GROUPED_TILES, 2880
    cases = {
        "mlp1_decode": (moe._mlp1_kernel, dict(H=H, I=H, GROUPED=False, BLOCK_M=1, BLOCK_N=d["block_n"],
                                               BLOCK_K=d["block_k"], UPCAST=False), d["num_warps"], 3, {"K": "i32"}),
        "mlp2_decode": (moe._mlp2_token_kernel, dict(K=4, H=H, I=H, BLOCK_N=d["block_n2"], BLOCK_K=d["block_k2"]),
                        d["num_warps"], 3, {}),
        "mlp1_grouped": (moe._mlp1_kernel, dict(H=H, I=H, GROUPED=True, BLOCK_M=64, BLOCK_N=g["block_n"],
                                                BLOCK_K=g["block_k"], UPCAST=False), g["num_warps"], g["num_stages"],
                         {"K": "i32"}),
        "mlp2_grouped": (moe._mlp2_grouped_kernel, dict(H=H, I=H, BLOCK_M=64, BLOCK_N=g["block_n2"],
                                                        BLOCK_K=g["block_k2"], UPCAST=False),
                         g["num_warps"], g["num_stages"], {}),
        "attention_prefill": (att._attn_kernel, dict(G=8, HQ=64, HEAD_DIM=64, BLOCK_D=64, BLOCK_M=128, BLOCK_N=64,
                                                     SPLIT=False, HAS_POS=False, UPCAST=False), 8, 3, {}),
        "attention_decode_split": (att._attn_kernel, dict(G=8, HQ=64, HEAD_DIM=64, BLOCK_D=64, BLOCK_M=16,
                                                          BLOCK_N=64, SPLIT=True, HAS_POS=False, UPCAST=False), 4, 3, {}),
        "attention_prefill_positions": (att._attn_kernel, dict(G=8, HQ=64, HEAD_DIM=64, BLOCK_D=64, BLOCK_M=64,
                                                               BLOCK_N=64, SPLIT=False, HAS_POS=True, UPCAST=False),
                                        8, 3, {}),
        "attention_decode_positions": (att._attn_kernel, dict(G=8, HQ=64, HEAD_DIM=64, BLOCK_D=64, BLOCK_M=16,
                                                              BLOCK_N=64, SPLIT=True, HAS_POS=True, UPCAST=False),
                                       4, 3, {}),
        "router": (rt._router_kernel, dict(K=4, BLOCK_K=4, BLOCK_T=64, BLOCK_E=32), 4, 3, {}),
    }
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    out = {}
    for name, (fn, consts, warps, stages, types) in cases.items():
        t = time.time()
        sig = {a: "constexpr" if a in consts else types.get(a, ptrs.get(a, "i32")) for a in fn.arg_names}
        k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=GPUTarget("cuda", 90, 32),
                           options={"num_warps": warps, "num_stages": stages})
        r = {"seconds": round(time.time() - t, 1), "wgmma": "warp_group_dot" in k.asm["ttgir"],
             "shared_bytes": k.metadata.shared, "cubin_bytes": len(k.asm["cubin"])}
        if cuobjdump.exists():
            with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                f.write(k.asm["cubin"])
                f.flush()
                usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", f.name], capture_output=True,
                                       text=True).stdout
            for field in usage.split():
                if field.startswith(("REG:", "STACK:")):
                    key, val = field.split(":")
                    r[key.lower()] = int(val)
        out[name] = r
        log(name, r)
    return out


# ---- main -----------------------------------------------------------------------------------------

def summary(res: dict) -> str:
    L = [f"gpt-oss workbench Triton kernels, {res['env'].get('device')} ({res['env'].get('when')})"]
    c = res.get("ceilings", {})
    if c:
        L.append(f"ceilings: copy {c['copy_GBps']:.0f} GB/s, bf16 matmul {c['bf16_matmul_TFLOPs']:.0f} TFLOP/s; "
                 f"nominal HBM {res['env'].get('hbm_nominal_GBps')} GB/s")
    ch = res.get("checks", {})
    if ch:
        bad = [k for k, v in ch.items() if not v.get("ok")]
        L.append("checks vs torch references: " + ("all ok" if not bad else "FAILED " + ", ".join(bad)))
    m = res.get("moe", {})
    if "decode" in m:
        d = m["decode"]
        L.append(f"MoE decode (1 token, top-k): {d['seconds'] * 1e6:.1f} us, {d['GBps']:.0f} GB/s"
                 + (f" = {100 * d['frac_of_HBM_nominal']:.0f}% of HBM" if "frac_of_HBM_nominal" in d else "")
                 + f"; dense-bf16 torch peer {d['dense_bf16_torch_seconds'] * 1e6:.1f} us "
                 f"({d['speedup_vs_dense_bf16']:.2f}x); tiles {d['best_config']}")
    if "prefill" in m:
        p = m["prefill"]
        L.append(f"MoE prefill ({p['tokens']} tokens): {p['seconds'] * 1e3:.2f} ms, {p['TFLOPs']:.0f} TFLOP/s; "
                 f"torch reference {p['torch_reference_seconds'] * 1e3:.1f} ms ({p['speedup_vs_torch_reference']:.1f}x);"
                 f" tiles {p['best_config']}")
    a = res.get("attention", {})
    if "sinks_causal" in a:
        L.append(f"attention prefill T={a['T']}: sinks+causal {a['sinks_causal']['TFLOPs']:.0f} TFLOP/s, "
                 f"SDPA({a['sdpa_causal_no_sinks']['backend']}) no sinks {a['sdpa_causal_no_sinks']['TFLOPs']:.0f} "
                 f"TFLOP/s, ratio {a['ratio_vs_sdpa']:.2f}; sliding {a['sinks_window']['TFLOPs']:.0f} TFLOP/s"
                 + (f"; {a['speedup_vs_torch_reference']:.1f}x the torch reference with sinks"
                    if "speedup_vs_torch_reference" in a else "") + f"; tiles {a['sinks_causal']['best_config']}")
        L.append(f"attention decode S={a['decode']['S']}: {a['decode']['seconds'] * 1e6:.1f} us "
                 f"(SDPA {a['decode']['sdpa_seconds'] * 1e6:.1f} us)")
    p = res.get("proxy_decode", {})
    if "tok_per_s" in p:
        L.append(f"20b-shaped decode, kernel-path proxy (CUDA graph): {p['tok_per_s']:.0f} tok/s, "
                 f"{p['bytes_per_token'] / 1e9:.2f} GB/token, {p['GBps']:.0f} GB/s"
                 + (f" = {100 * p['frac_of_limit']:.0f}% of the {p['bandwidth_limit_tok_per_s']:.0f} tok/s limit"
                    if "frac_of_limit" in p else ""))
    md = res.get("model_decode", {})
    for key in sorted(k for k, v in md.items() if k.startswith("batch") and isinstance(v, dict)):
        r = md[key]
        limit = (f" = {100 * r['frac_of_limit']:.0f}% of the {r['bandwidth_limit_tok_per_s']:.0f} tok/s bandwidth limit"
                 if "frac_of_limit" in r else "")
        L.append(f"workbench.model decode, {key} ({r['bytes_per_step'] / 1e9:.2f} GB/step): "
                 f"{'CUDA graph' if md.get('graph') else 'static step (no graph)'} {r['graph_tok_per_s']:.1f} tok/s, "
                 f"{r['graph_GBps']:.0f} GB/s{limit}; with router/picks/sink traces {r['graph_traced_tok_per_s']:.1f} "
                 f"tok/s ({100 * r['tracing_cost_in_graph']:+.0f}%); Triton eager {r['triton_eager_tok_per_s']:.1f} "
                 f"tok/s; torch eager (peer) {r['torch_eager_tok_per_s']:.1f} tok/s "
                 f"({r['graph_speedup_vs_torch_eager']:.1f}x); graph vs eager rel err {r['graph_vs_eager_rel_err']:.1e}, "
                 f"Triton vs torch {r['triton_vs_torch_rel_err']:.1e} (argmax agree {r['argmax_agree_triton_torch']:.2f})"
                 + ("" if r["ok"] else " FAILED"))
    for k, v in res.get("errors", {}).items():
        L.append(f"ERROR in {k}: {v.splitlines()[-1] if v else v}")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interpret", action="store_true", help="tiny shapes on the CPU under TRITON_INTERPRET=1")
    ap.add_argument("--out", default=os.environ.get("OUT", "./gpu-results"))
    ap.add_argument("--budget-s", type=float, default=270.0, help="stop sweeping past this many seconds")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: moe,attention,proxy,model")
    ap.add_argument("--compile-sm90", action="store_true",
                    help="only compile every kernel for sm_90 (no GPU needed) and print registers/spills as JSON")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if args.compile_sm90:
        if os.environ.get("TRITON_INTERPRET") == "1":
            ap.error("--compile-sm90 needs TRITON_INTERPRET unset")
        print(json.dumps(compile_check()))
        return 0
    if args.interpret and os.environ.get("TRITON_INTERPRET") != "1":
        ap.error("--interpret needs TRITON_INTERPRET=1 in the environment (triton reads it at import)")
    if not args.interpret and not torch.cuda.is_available():
        ap.error("no CUDA GPU; use TRITON_INTERPRET=1 ... --interpret for a CPU run with tiny shapes")
    K = import_kernels()

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    b = Bench(args.interpret, args.budget_s)
    s = shapes(args.interpret)
    import triton

    env = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(), "torch": torch.__version__,
           "triton": triton.__version__, "interpret": args.interpret, "shapes": s}
    hbm = None
    if not args.interpret:
        name = torch.cuda.get_device_name()
        env.update(device=name, sms=torch.cuda.get_device_properties(0).multi_processor_count)
        hbm = next((v for k, v in HBM_NOMINAL.items() if k in name), None)
        env["hbm_nominal_GBps"] = hbm / 1e9 if hbm else None
    else:
        env["device"] = "CPU (Triton interpreter; timings meaningless)"
    res: dict = {"env": env, "errors": {}}
    gen = torch.Generator(device=b.device).manual_seed(0)

    def part(name, fn):
        log(f"{name} ...")
        try:
            res[name] = fn()
        except Exception:
            res["errors"][name] = traceback.format_exc()
            log(f"{name} FAILED:\n{res['errors'][name]}")
        (out_dir / "gpu.json").write_text(json.dumps(res, indent=1, default=str))

    part("ceilings", lambda: ceilings(b))
    experts = make_experts(s, b.device, gen)
    part("checks", lambda: checks(b, K, s, experts, gen))
    if "moe" not in skip:
        part("moe", lambda: bench_moe(b, K, s, experts, gen, hbm))
    del experts
    if "attention" not in skip:
        part("attention", lambda: bench_attention(b, K, s, gen))
    if not ({"proxy", "model"} <= skip):
        weights = random_weights(s, b.device, gen)
        if "proxy" not in skip:
            part("proxy_decode", lambda: bench_proxy_decode(b, K, s, weights, hbm))
        if "model" not in skip:
            part("model_decode", lambda: bench_model_decode(b, s, weights, K, hbm))
    env["seconds"] = time.time() - START
    (out_dir / "gpu.json").write_text(json.dumps(res, indent=1, default=str))
    text = summary(res)
    (out_dir / "gpu.txt").write_text(text)
    print(text)
    failed = [k for k, v in res.get("checks", {}).items() if not v.get("ok")]
    return 1 if res["errors"] or failed else 0


if __name__ == "__main__":
    sys.exit(main())
