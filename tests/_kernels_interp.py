"""Test helper: workbench.kernels under Triton's CPU interpreter (TRITON_INTERPRET=1).

Triton decides at ``@triton.jit`` time whether a kernel is interpreted, so the kernel modules are imported
(or re-imported, if something imported them earlier without the interpreter) with the variable set. The
variable itself is set only while a kernel test runs (fixture ``interpret_env``), so other tests see the
process environment unchanged.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest

MODULES = ("_common", "router", "attention", "moe")  # _common first: the others import its jit helpers


def load_interpreted():
    """Import workbench.kernels' kernel modules for the interpreter; returns the package."""
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        pytest.importorskip("triton")
        _interpret_triton_language()
        import workbench.kernels as pkg

        mods = [importlib.import_module(f"workbench.kernels.{m}") for m in MODULES]
        if type(mods[0].dot).__name__ != "InterpretedFunction":
            for m in mods:
                importlib.reload(m)
            for name in sorted(sys.modules):  # anything else built on them (e.g. kernels.backend)
                if name.startswith("workbench.kernels.") and name.rsplit(".", 1)[1] not in MODULES:
                    importlib.reload(sys.modules[name])
            importlib.reload(pkg)
        return pkg
    finally:
        if old is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old


def _interpret_triton_language():
    """triton.language's own jit helpers (tl.zeros, tl.sum, ...) are also fixed at import: if triton was
    imported before TRITON_INTERPRET was set, re-import those modules so the interpreter can call them."""
    import triton.language as tl

    if type(tl.zeros).__name__ == "InterpretedFunction":
        return
    for name in sorted(n for n in sys.modules if n.startswith("triton.language.")):
        importlib.reload(sys.modules[name])
    importlib.reload(tl)
    if type(tl.zeros).__name__ != "InterpretedFunction":
        raise RuntimeError("triton was imported before TRITON_INTERPRET=1 was set and could not be switched over")


@pytest.fixture
def interpret_env(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
