"""Fast CPU kernels: MXFP4 expert matmuls that read the packed weights directly, and bf16 matrix-vector products.

The kernels are C++ (``workbench/csrc/cpu_kernels.cpp``, shipped with the package), compiled with the system's
C++ compiler on first use (a few seconds) into the user cache (``cache_dir()/cpu-kernels/<hash>/``) and
loaded with ctypes; later processes load the cached library. One build serves every x86-64 CPU: it detects
AVX-512 (with or without BF16), AVX2+FMA or neither at run time and takes the best kernels the CPU has
(``WORKBENCH_CPU_ISA=scalar|avx2|avx512|avx512bf16`` caps the choice). On other CPUs the portable scalar
kernels run. Threads: torch's OpenMP pool (``torch.get_num_threads()``).

When no compiler is found or the build fails, the model keeps its pure-torch path and prints one line
saying why. ``WORKBENCH_CPU_KERNELS=0`` turns the kernels off.

What they compute (see the C++ file's header for the exact summation order):

- ``mxfp4_linear(x, blocks, scales, bias, starts, experts)``: for activation rows grouped by expert,
  out[rows of e] = x[rows of e] W_e^T + b_e in fp32, with W_e decoded from E2M1 codes and E8M0 scales as it
  is read (never written out). Every product is exact in fp32 and accumulates in fp32: the numbers a
  dequantise-to-fp32-then-matmul computes, summed in another order (relative differences ~1e-7).
- ``bf16_linear(x, weight, bias)``: y = x W^T + b for bf16 x and W, fp32 accumulation, rounded to bf16 - what
  ``F.linear`` in bf16 or an fp32 matmul of the widened values gives, at memory bandwidth for a few rows.

Why ctypes and not ``torch.utils.cpp_extension``: the kernels need no torch headers, so a plain compile takes
~2 s instead of ~40 s (torch's headers) and needs no ninja; the call overhead (~5 us) is small next to the work.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Sequence

import torch

from .cache import atomic_dir, cache_dir

__all__ = ["available", "bf16_linear", "build", "disabled", "isa", "library", "mxfp4_linear", "status", "using",
           "KernelBuildError", "ISAS"]

SOURCE = Path(__file__).parent / "csrc" / "cpu_kernels.cpp"
ISAS = ("scalar", "avx2", "avx512", "avx512bf16")  # index = the C++ enum
_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp"]
_ABI = 2

_lock = threading.Lock()
_state: dict = {}  # "lib": CDLL | None, "why": str, "isa": int
_off = 0  # > 0 inside ``disabled()``


class KernelBuildError(RuntimeError):
    """The C++ kernels could not be compiled or loaded (the message says why)."""


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def build(dest_root: Path | None = None) -> Path:
    """Compile the kernels (if not already cached) and return the library's path. Raises KernelBuildError."""
    cxx = _compiler()
    if cxx is None:
        raise KernelBuildError("no C++ compiler found (set CXX, or install g++)")
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelBuildError(f"{cxx} --version failed: {e}") from None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(_FLAGS).encode(),
                                     platform.machine().encode()])).hexdigest()[:16]
    final = (dest_root or cache_dir() / "cpu-kernels") / key
    lib = final / "libwbcpu.so"
    if lib.is_file():
        return lib
    with atomic_dir(final) as tmp:
        for flags in (_FLAGS, [f for f in _FLAGS if f != "-fopenmp"]):  # a compiler without OpenMP: one thread
            cmd = [cxx, *flags, str(SOURCE), "-o", str(tmp / "libwbcpu.so")]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.SubprocessError) as e:
                raise KernelBuildError(f"{' '.join(cmd)}: {e}") from None
            if r.returncode == 0:
                break
        else:
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            raise KernelBuildError(f"compiling {SOURCE.name} failed: {' | '.join(tail)}")
    return lib


def _bind(lib: ctypes.CDLL) -> None:
    p, i, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    lib.wb_abi_version.restype = i
    lib.wb_best_isa.restype = i
    lib.wb_mxfp4_linear.restype = None
    lib.wb_mxfp4_linear.argtypes = [p, i, i64, p, p, i64, p, i64, i64, p, i64, i64, i64, p, i, i64, p, i64, i, i]
    lib.wb_bf16_linear.restype = None
    lib.wb_bf16_linear.argtypes = [p, i64, i64, p, i64, i64, p, i, p, i, i64, i, i]


def _load() -> None:
    if os.environ.get("WORKBENCH_CPU_KERNELS", "1") == "0":
        _state.update(lib=None, why="turned off by WORKBENCH_CPU_KERNELS=0")
        return
    try:
        path = build()
        lib = ctypes.CDLL(str(path))
        _bind(lib)
        if lib.wb_abi_version() != _ABI:
            raise KernelBuildError(f"{path} has ABI {lib.wb_abi_version()}, expected {_ABI}")
    except (KernelBuildError, OSError) as e:
        _state.update(lib=None, why=str(e))
        print(f"workbench: fast CPU kernels unavailable ({e}); using the pure-torch path", file=sys.stderr)
        return
    best = lib.wb_best_isa()
    cap = os.environ.get("WORKBENCH_CPU_ISA")
    if cap:
        if cap not in ISAS:
            raise ValueError(f"WORKBENCH_CPU_ISA={cap!r}: expected one of {', '.join(ISAS)}")
        best = min(best, ISAS.index(cap))
    _state.update(lib=lib, why="", isa=best)


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, built on first call; None (after a one-line notice) if it cannot be had."""
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                _load()
    return _state["lib"]


def available() -> bool:
    """True when the kernels are built and loaded here (and not inside ``disabled()``)."""
    return not _off and library() is not None


@contextlib.contextmanager
def disabled():
    """Inside this block the model takes its pure-torch paths (to compare the two, or to time the old path)."""
    global _off
    _off += 1
    try:
        yield
    finally:
        _off -= 1


@contextlib.contextmanager
def using(isa_name: str):
    """Inside this block the kernels run their ``isa_name`` variant (tests run each variant the CPU has)."""
    if library() is None:
        raise KernelBuildError(_state["why"])
    old = _state["isa"]
    _state["isa"] = _isa_arg(isa_name)
    try:
        yield
    finally:
        _state["isa"] = old


def isa() -> str:
    """The instruction set the kernels use here ("avx512bf16", "avx512", "avx2", "scalar"), or "unavailable"."""
    return ISAS[_state["isa"]] if library() is not None else "unavailable"


def status() -> str:
    """One line: which kernels run here, or why none do (for bug reports)."""
    return f"cpu kernels: {isa()}" + (f" ({_state['why']})" if not available() else "")


def _isa_arg(isa_name: str | None) -> int:
    if isa_name is None:
        return _state["isa"]
    if isa_name not in ISAS:
        raise ValueError(f"unknown kernel variant {isa_name!r}; expected one of {', '.join(ISAS)}")
    want = ISAS.index(isa_name)
    if want > library().wb_best_isa():
        raise ValueError(f"this CPU cannot run the {isa_name} kernels")
    return want


def _check_cpu(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.device.type != "cpu":
            raise ValueError(f"CPU kernels need CPU tensors, got one on {t.device}")


def mxfp4_linear(x: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None,
                 starts: Sequence[int], experts: Sequence[int], *, isa: str | None = None) -> torch.Tensor:
    """Grouped MXFP4 matmul: out[starts[g]:starts[g+1]] = x[those rows] W_{experts[g]}^T + bias[experts[g]].

    x [R, K] fp32 or bf16 (rows grouped by expert, R = starts[-1]); blocks uint8 [E, O, K/32, 16], scales
    uint8 [E, O, K/32] (packed MXFP4, as stored); bias [E, O] fp32/bf16 or None -> out [R, O] fp32.
    ``isa`` forces a kernel variant (tests); default the best this CPU has.
    """
    lib = library()
    if lib is None:
        raise KernelBuildError(_state["why"])
    _check_cpu(x, blocks, scales)
    E, O, G, _ = blocks.shape
    R, K = x.shape
    if x.dtype not in (torch.float32, torch.bfloat16) or K != 32 * G or tuple(scales.shape) != (E, O, G):
        raise ValueError(f"mxfp4_linear: x {list(x.shape)} {x.dtype}, blocks {list(blocks.shape)}, scales "
                         f"{list(scales.shape)} do not fit (x must be fp32/bf16 [R, 32*G])")
    if len(starts) != len(experts) + 1 or starts[0] != 0 or starts[-1] != R:
        raise ValueError(f"mxfp4_linear: starts must run from 0 to {R} with one more entry than experts")
    if any(not 0 <= e < E for e in experts):
        raise ValueError(f"mxfp4_linear: expert ids must be in 0..{E - 1}, got {list(experts)}")
    x = x.contiguous()
    if blocks.stride()[2:] != (16, 1):
        blocks = blocks.contiguous()
    if scales.stride(2) != 1:
        scales = scales.contiguous()
    out = torch.empty((R, O), dtype=torch.float32)
    if R == 0:
        return out
    st = torch.tensor(list(starts), dtype=torch.int64)
    ex = torch.tensor(list(experts), dtype=torch.int64)
    if bias is not None:
        _check_cpu(bias)
        if bias.dtype not in (torch.float32, torch.bfloat16) or tuple(bias.shape) != (E, O) or bias.stride(1) != 1:
            bias = bias.float().contiguous()
    lib.wb_mxfp4_linear(
        x.data_ptr(), int(x.dtype == torch.bfloat16), K, st.data_ptr(), ex.data_ptr(), len(ex),
        blocks.data_ptr(), blocks.stride(0), blocks.stride(1), scales.data_ptr(), scales.stride(0), scales.stride(1), O,
        None if bias is None else bias.data_ptr(), int(bias is not None and bias.dtype == torch.bfloat16),
        0 if bias is None else bias.stride(0), out.data_ptr(), O, _isa_arg(isa), torch.get_num_threads())
    return out


def bf16_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                isa: str | None = None) -> torch.Tensor:
    """y = x W^T + b for bf16 x [..., K] and W [O, K] (b [O] bf16/fp32 or None) -> bf16 [..., O], fp32 accumulation.

    Reads W once per call whatever the row count: meant for a few rows (decode), where it runs at memory
    bandwidth; a bf16 GEMM is faster for many rows.
    """
    lib = library()
    if lib is None:
        raise KernelBuildError(_state["why"])
    _check_cpu(x, weight)
    O, K = weight.shape
    if x.dtype != torch.bfloat16 or weight.dtype != torch.bfloat16 or x.shape[-1] != K:
        raise ValueError(f"bf16_linear: x {list(x.shape)} {x.dtype} and weight {list(weight.shape)} {weight.dtype} "
                         f"must be bf16 with matching last dims")
    if weight.stride(1) != 1:
        weight = weight.contiguous()
    x2 = x.reshape(-1, K).contiguous()
    out = torch.empty((x2.shape[0], O), dtype=torch.bfloat16)
    if bias is not None and (bias.dtype not in (torch.float32, torch.bfloat16) or bias.stride(0) != 1):
        bias = bias.float().contiguous()
    lib.wb_bf16_linear(x2.data_ptr(), x2.shape[0], K, weight.data_ptr(), weight.stride(0), O,
                       None if bias is None else bias.data_ptr(), int(bias is not None and bias.dtype == torch.bfloat16),
                       out.data_ptr(), 1, O, _isa_arg(isa), torch.get_num_threads())
    return out.view(*x.shape[:-1], O)
