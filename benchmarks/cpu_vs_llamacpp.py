"""The workbench against llama.cpp on the 20b preset, same checkpoint, same threads, one run.

    flock /work/coord/heavy.lock python benchmarks/cpu_vs_llamacpp.py --cache /work/big/llama.cpp \\
        --checkpoint /work/big/20b-hf [--threads 2] [--rounds 2] [--prefill 128] [--decode 16]

Steps (each reuses what an earlier run left in ``--cache``):
1. llama.cpp from the vendored source of the ``llama-cpp-python`` sdist (``pip download --no-deps
   --no-binary :all: llama-cpp-python``), built with cmake (Release, native CPU flags): ``llama-bench``.
2. The checkpoint: the "20b" preset (real shapes, random weights) in the Hugging Face layout with MXFP4
   experts and the tokenizer files a real gpt-oss checkpoint has (made offline from the Harmony
   vocabulary), written by ``workbench make-tiny`` if ``--checkpoint`` does not exist yet.
3. GGUF: the vendored ``convert_hf_to_gguf.py`` (MXFP4 experts kept as MXFP4, the rest bf16).
4. ``--rounds`` times, one after the other: ``llama-bench -p PREFILL -n DECODE -t THREADS`` (pp and tg), then
   the workbench in a fresh process: prefill PREFILL tokens into a KV cache (last-position logits), then
   DECODE greedy single-token steps, and the same decode with ``run_with_trace`` keeping the router logits,
   picks, routing weights and sink mass of every layer; each side's peak RSS from the OS (ru_maxrss).

Prints each round, the best of each side, the ratios workbench / llama.cpp (tokens per second), the
machine's load average before and after, and writes ``--json`` if given.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------------
# 1. llama.cpp
# ------------------------------------------------------------------------------------------------------

def llama_source(cache: Path) -> Path:
    """The vendored llama.cpp folder of the newest llama-cpp-python sdist in ``cache/sdist`` (downloaded if none)."""
    sdists = sorted(glob.glob(str(cache / "sdist" / "llama_cpp_python-*.tar.gz")))
    if not sdists:
        log("downloading the llama-cpp-python sdist")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "llama-cpp-python", "-d", str(cache / "sdist")], check=True)
        sdists = sorted(glob.glob(str(cache / "sdist" / "llama_cpp_python-*.tar.gz")))
    sdist = Path(sdists[-1])
    top = cache / sdist.name[: -len(".tar.gz")]
    src = top / "vendor" / "llama.cpp"
    if not (src / "CMakeLists.txt").is_file():
        log(f"extracting {sdist.name}")
        with tarfile.open(sdist) as tar:
            tar.extractall(cache, filter="data")
    return src


def llama_bench(cache: Path, jobs: int) -> Path:
    """Build (once) and return the llama-bench binary."""
    src = llama_source(cache)
    build = src.parent.parent / "build"
    exe = build / "bin" / "llama-bench"
    if exe.is_file():
        return exe
    log(f"building llama-bench in {build} ({jobs} jobs; ~15 minutes on 2 cores)")
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
                    "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                    "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DBUILD_SHARED_LIBS=OFF"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-bench", "-j", str(jobs)], check=True,
                   stdout=subprocess.DEVNULL)
    return exe



# ------------------------------------------------------------------------------------------------------
# 2./3. checkpoint and GGUF
# ------------------------------------------------------------------------------------------------------

def ensure_checkpoint(path: Path) -> None:
    if not (path / "config.json").is_file():
        log(f"writing the 20b preset (HF layout) to {path} (minutes)")
        subprocess.run([sys.executable, "-m", "workbench.cli", "make-tiny", str(path), "--preset", "20b",
                        "--layout", "hf"], check=True)
    if not (path / "tokenizer.json").is_file():
        from workbench.config import ModelConfig
        from workbench.harmony.hf_tokenizer import write_hf_tokenizer

        log(f"writing tokenizer files into {path}")
        write_hf_tokenizer(path, ModelConfig.load(path / "config.json").vocab_size)


def ensure_gguf(cache: Path, checkpoint: Path) -> Path:
    src = llama_source(cache)
    out = cache / "gguf" / f"{checkpoint.name}.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log(f"converting {checkpoint} to {out} (MXFP4 experts kept, the rest bf16)")
    tmp = out.with_suffix(".gguf.tmp")
    env = {**os.environ, "PYTHONPATH": f"{src / 'gguf-py'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run([sys.executable, str(src / "convert_hf_to_gguf.py"), str(checkpoint), "--outfile", str(tmp),
                    "--outtype", "bf16"], check=True, env=env, stdout=subprocess.DEVNULL)
    os.replace(tmp, out)
    return out


# ------------------------------------------------------------------------------------------------------
# the machine's read bandwidth (the decode roofline)
# ------------------------------------------------------------------------------------------------------

_STREAM_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <omp.h>
int main(int argc, char** argv) {  /* STREAM-like read: sum a 2 GiB array, best of 5 */
    size_t n = (size_t)2 << 30 >> 3; double* a = malloc(n * 8), best = 1e30, s = 0;
    #pragma omp parallel for
    for (size_t i = 0; i < n; ++i) a[i] = 1.0;
    for (int r = 0; r < 5; ++r) {
        double t = omp_get_wtime(), acc = 0;
        #pragma omp parallel for simd reduction(+:acc)
        for (size_t i = 0; i < n; ++i) acc += a[i];
        t = omp_get_wtime() - t; s += acc; if (t < best) best = t;
    }
    printf("%.3f %g\n", n * 8 / best / 1e9, s);
    return 0;
}
"""


def read_bandwidth(cache: Path, threads: int) -> float:
    """GB/s of a STREAM-like read (2 GiB, ``threads`` OpenMP threads, best of 5)."""
    exe = cache / f"stream_read-{hashlib.sha256(_STREAM_C.encode()).hexdigest()[:8]}"
    if not exe.is_file():
        (cache / "stream_read.c").write_text(_STREAM_C)
        subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", str(cache / "stream_read.c"), "-o", str(exe)],
                       check=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return float(r.stdout.split()[0])


def bytes_per_token(checkpoint: Path) -> dict[str, float]:
    """Bytes one decoded token reads: attention, router and unembedding weights (bf16), the k picked experts."""
    from workbench.config import ModelConfig

    c = ModelConfig.load(checkpoint / "config.json")
    H, I, L = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    attn = L * 2 * (H * (c.q_dim + 2 * c.kv_dim) + c.q_dim * H)
    router = L * 2 * H * c.num_experts
    experts = L * c.experts_per_token * (2 * I * H + H * I) * 17 / 32  # 4-bit codes + one scale byte per 32
    unembed = 2 * c.vocab_size * H
    return {"attention": attn, "router": router, "experts": experts, "unembedding": unembed,
            "total": attn + router + experts + unembed}


# ------------------------------------------------------------------------------------------------------
# 4. the two sides
# ------------------------------------------------------------------------------------------------------

def run_llama(exe: Path, gguf: Path, prefill: int, decode: int, threads: int, reps: int) -> dict:
    cmd = [str(exe), "-m", str(gguf), "-p", str(prefill), "-n", str(decode), "-t", str(threads), "-r", str(reps),
           "-o", "json"]
    out, rss = _with_peak_rss(cmd)
    rows = json.loads(out)
    pp = next(r for r in rows if r["n_prompt"] == prefill and r["n_gen"] == 0)
    tg = next(r for r in rows if r["n_gen"] == decode and r["n_prompt"] == 0)
    return {"prefill_tok_s": pp["avg_ts"], "decode_tok_s": tg["avg_ts"], "peak_rss_gb": rss / 2**30,
            "build": rows[0].get("build_commit", "?")}


def run_workbench(checkpoint: Path, prefill: int, decode: int, threads: int, reps: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--checkpoint", str(checkpoint),
           "--prefill", str(prefill), "--decode", str(decode), "--threads", str(threads), "--reps", str(reps)]
    out, rss = _with_peak_rss(cmd)
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_gb"] = rss / 2**30
    return result


def _with_peak_rss(cmd: list[str]) -> tuple[str, int]:
    """Run ``cmd`` in a fresh wrapper process; return its stdout and its peak RSS in bytes (ru_maxrss)."""
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True);"
               "sys.stdout.write(r.stdout); sys.stderr.write('RSS %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN)"
               ".ru_maxrss); sys.exit(r.returncode)")
    r = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr[-2000:]}")
    rss = int(next(line for line in r.stderr.splitlines() if line.startswith("RSS ")).split()[1]) * 1024
    return r.stdout, rss


def worker(args) -> None:
    """In a fresh process: load the checkpoint, warm up, then time prefill and decode (best of ``reps``)."""
    import torch

    from workbench import cpu_kernels, load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)
    tokens = torch.randint(0, 200000, (args.prefill,), generator=torch.Generator().manual_seed(0))

    def prefill():
        cache = model.new_cache()
        t = time.perf_counter()
        logits = model(tokens, cache, last_only=True)
        return time.perf_counter() - t, cache, logits

    traced = ["blocks.*.moe.router_logits", "blocks.*.moe.expert_idx", "blocks.*.moe.expert_weights",
              "blocks.*.attn.sink_prob"]

    def decode(cache, logits, trace=False):
        nxt = logits[-1:].argmax(-1)
        t = time.perf_counter()
        for _ in range(args.decode):
            out = model.run_with_trace(nxt, traced, cache=cache)[0] if trace else model(nxt, cache)
            nxt = out[-1:].argmax(-1)
        return time.perf_counter() - t

    with torch.no_grad():
        _, cache, logits = prefill()  # warm-up: pages the weights in, builds the kernels
        decode(cache, logits)
        tp = td = tt = float("inf")
        for _ in range(args.reps):  # plain and traced decode interleaved: the machine's noise hits both
            t, cache, logits = prefill()
            tp = min(tp, t)
            td = min(td, decode(cache, logits))
            t, cache, logits = prefill()
            tt = min(tt, decode(cache, logits, trace=True))
    print(json.dumps({"prefill_tok_s": args.prefill / tp, "decode_tok_s": args.decode / td,
                      "traced_decode_tok_s": args.decode / tt, "kernels": cpu_kernels.status()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("WORKBENCH_LLAMA_CACHE", "llama-cache")),
                    help="folder for the sdist, the llama.cpp build and the GGUF (reused)")
    ap.add_argument("--checkpoint", type=Path, default=Path("20b-hf"), help="HF-layout 20b preset (made if missing)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="llama.cpp then workbench, this many times")
    ap.add_argument("--reps", type=int, default=2, help="repetitions inside each side's run (best / mean taken)")
    ap.add_argument("--prefill", type=int, default=128)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="build jobs")
    ap.add_argument("--build-only", action="store_true", help="build llama-bench, make the checkpoint and GGUF, stop")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    args.cache.mkdir(parents=True, exist_ok=True)
    exe = llama_bench(args.cache, args.jobs)
    ensure_checkpoint(args.checkpoint)
    gguf = ensure_gguf(args.cache, args.checkpoint)
    if args.build_only:
        return
    import torch

    load_before = os.getloadavg()
    bw = read_bandwidth(args.cache, args.threads)
    per_token = bytes_per_token(args.checkpoint)
    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M} {platform.machine()}, {os.cpu_count()} cpus, torch "
          f"{torch.__version__}, {args.threads} threads; load average {load_before[0]:.2f} {load_before[1]:.2f}")
    print(f"# STREAM-like read {bw:.1f} GB/s; a decoded token reads {per_token['total'] / 1e9:.2f} GB "
          f"(attention {per_token['attention'] / 1e9:.2f}, experts {per_token['experts'] / 1e9:.2f}, unembedding "
          f"{per_token['unembedding'] / 1e9:.2f}) -> decode limit {bw * 1e9 / per_token['total']:.1f} tok/s")
    rounds = []
    for r in range(args.rounds):
        log(f"round {r + 1}: llama.cpp")
        lc = run_llama(exe, gguf, args.prefill, args.decode, args.threads, args.reps)
        log(f"round {r + 1}: workbench")
        wb = run_workbench(args.checkpoint, args.prefill, args.decode, args.threads, args.reps)
        rounds.append({"llama.cpp": lc, "workbench": wb})
        print(f"round {r + 1}: pp{args.prefill} llama.cpp {lc['prefill_tok_s']:.2f} tok/s, workbench "
              f"{wb['prefill_tok_s']:.2f} tok/s ({wb['prefill_tok_s'] / lc['prefill_tok_s']:.0%}); tg{args.decode} "
              f"llama.cpp {lc['decode_tok_s']:.2f} tok/s, workbench {wb['decode_tok_s']:.2f} tok/s "
              f"({wb['decode_tok_s'] / lc['decode_tok_s']:.0%}), traced (router logits, picks, weights, sink mass) "
              f"{wb['traced_decode_tok_s']:.2f} tok/s ({wb['decode_tok_s'] / wb['traced_decode_tok_s'] - 1:+.0%} time); peak RSS llama.cpp {lc['peak_rss_gb']:.1f} GiB, "
              f"workbench {wb['peak_rss_gb']:.1f} GiB", flush=True)
    load_after = os.getloadavg()
    best = {side: {k: max(rd[side][k] for rd in rounds) for k in ("prefill_tok_s", "decode_tok_s")}
            for side in ("llama.cpp", "workbench")}
    ratio = {k: best["workbench"][k] / best["llama.cpp"][k] for k in ("prefill_tok_s", "decode_tok_s")}
    limit = bw * 1e9 / per_token["total"]
    print(f"best: prefill {ratio['prefill_tok_s']:.0%} of llama.cpp, decode {ratio['decode_tok_s']:.0%} of "
          f"llama.cpp; decode at {best['workbench']['decode_tok_s'] / limit:.0%} (workbench) and "
          f"{best['llama.cpp']['decode_tok_s'] / limit:.0%} (llama.cpp) of the {limit:.1f} tok/s read limit; load "
          f"average after {load_after[0]:.2f} {load_after[1]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "best": best, "ratio": ratio, "read_gb_s": bw,
                                         "bytes_per_token": per_token, "load_before": load_before,
                                         "load_after": load_after, "argv": sys.argv}, indent=2))


if __name__ == "__main__":
    main()
