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
   DECODE greedy single-token steps; each side's peak RSS from the OS (ru_maxrss of its process).

Prints each round, the best of each side, the ratios workbench / llama.cpp (tokens per second), the
machine's load average before and after, and writes ``--json`` if given.
"""

from __future__ import annotations

import argparse
import datetime
import glob
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("WORKBENCH_LLAMA_CACHE", "llama-cache")))
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    print(llama_bench(args.cache, args.jobs))


if __name__ == "__main__":
    main()
