"""What every kernel module shares: the optional triton import, device checks, interpreter work-arounds.

Triton is optional (it installs on Linux only). Without it these modules still import, so the plain-torch
reference functions stay usable; the kernel wrappers then raise ``KernelUnavailable``.

Where the kernels run:
- on a CUDA GPU, with CUDA tensors;
- on the CPU under Triton's interpreter, which must be switched on (``TRITON_INTERPRET=1``) *before*
  ``workbench.kernels`` is imported, because ``@triton.jit`` decides at decoration time. Slow: for tests.
"""

from __future__ import annotations

import os

import torch

try:  # pragma: no cover - which branch runs depends on the machine
    import triton
    import triton.language as tl

    _IMPORT_ERROR: Exception | None = None
except ImportError as exc:  # pragma: no cover
    _IMPORT_ERROR = exc

    class _Stub:
        """Stands in for ``triton`` / ``triton.language`` so kernel definitions still evaluate."""

        constexpr = None

        @staticmethod
        def jit(fn=None, **_):
            return fn if fn is not None else (lambda f: f)

        def __getattr__(self, name):
            return None

    triton = tl = _Stub()


class KernelUnavailable(RuntimeError, ValueError):
    """The Triton kernels cannot run here (no triton, no CUDA GPU and no interpreter, wrong device).

    Also a ValueError, so ``load_model(..., backend="triton")`` fails like any other bad argument."""


def interpreting() -> bool:
    """True when Triton's CPU interpreter is switched on (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def why_unavailable() -> str | None:
    """None when the kernels can run here, else the reason in words."""
    if _IMPORT_ERROR is not None:
        return f"triton is not installed ({_IMPORT_ERROR}); `pip install triton` (Linux only)"
    if interpreting() or torch.cuda.is_available():
        return None
    return ("no CUDA GPU is visible: the Triton kernels need one, or Triton's CPU interpreter "
            "(set TRITON_INTERPRET=1 before importing workbench.kernels; slow, meant for tests)")


def available() -> bool:
    """Whether the Triton kernels can run on this machine (triton installed, and a GPU or the interpreter)."""
    return why_unavailable() is None


def check(kernel, *tensors: torch.Tensor) -> None:
    """Raise ``KernelUnavailable`` with a clear message unless ``kernel`` can run on ``tensors``."""
    reason = why_unavailable()
    if reason:
        raise KernelUnavailable(reason)
    compiled_for_interpreter = type(kernel).__name__ == "InterpretedFunction"
    if interpreting() and not compiled_for_interpreter:
        raise KernelUnavailable("TRITON_INTERPRET=1 was set after workbench.kernels was imported; "
                                "set it before the first import (triton decides when a kernel is defined)")
    if not compiled_for_interpreter:
        for t in tensors:
            if t.device.type != "cuda":
                raise KernelUnavailable(f"the Triton kernels need CUDA tensors, got one on {t.device} "
                                        "(or run under TRITON_INTERPRET=1 for CPU tensors)")


def upcast_dots(*tensors: torch.Tensor) -> bool:
    """Whether kernels should upcast tl.dot operands to fp32.

    Triton's interpreter (3.9 at least) multiplies the raw uint16 bits of bf16 operands in tl.dot, so
    under the interpreter bf16 dots are done in fp32 instead. On a GPU this is False.
    """
    return interpreting() and any(t.dtype == torch.bfloat16 for t in tensors)


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (a nominal 132, an H100's, under the interpreter)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 132


@triton.jit
def dot(a, b, acc, UPCAST: tl.constexpr):
    """acc + a @ b, in fp32 operands when UPCAST (the interpreter's bf16 work-around)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc)
