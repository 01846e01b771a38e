"""The whole tiny model on the Triton backend (interpreted) against the torch backend; availability errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from _kernels_interp import interpret_env, load_interpreted  # noqa: F401 (fixture)

K = load_interpreted()
import workbench.kernels.backend as kb  # noqa: E402  (after the interpreter is set up)
from workbench.model import TorchBackend, load_model  # noqa: E402


def test_tiny_model_triton_matches_torch(tiny_dir, interpret_env):
    ref = load_model(tiny_dir, dtype=torch.float32)
    tri = load_model(tiny_dir, dtype=torch.float32, backend=kb.TritonBackend(fallback=TorchBackend()))
    tokens = torch.randint(0, 1000, (21,), generator=torch.Generator().manual_seed(0))  # longer than window 16
    want = ref(tokens)
    torch.testing.assert_close(tri(tokens), want, atol=2e-3, rtol=1e-3)
    # prefill then two decode steps against the KV cache (the sliding layers' cache wraps past 16)
    cache_r, cache_t = ref.new_cache(), tri.new_cache()
    for chunk in (tokens[:17], tokens[17:18], tokens[18:19]):
        torch.testing.assert_close(tri(chunk, cache=cache_t), ref(chunk, cache=cache_r), atol=2e-3, rtol=1e-3)
    # a trace that asks for attention internals still gets them (from the reference attention)
    _, trace = tri.run_with_trace(tokens[:6], names=["blocks.0.attn.probs", "blocks.0.attn.sink_prob"])
    total = trace["blocks.0.attn.probs"].sum(-1) + trace["blocks.0.attn.sink_prob"]
    torch.testing.assert_close(total, torch.ones_like(total))


def test_backend_says_what_is_missing(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    with pytest.raises(K.KernelUnavailable, match="TRITON_INTERPRET=1"):
        kb.TritonBackend()
    with pytest.raises(K.KernelUnavailable, match="no CUDA GPU"):
        K.router(torch.randn(2, 4), 2)


def test_registry_hookup(tiny_dir, monkeypatch):
    """The hook-up proposed for workbench/model.py: BACKENDS["triton"] builds a TritonBackend lazily."""
    import workbench.model as wm

    def _triton_backend():
        from workbench.kernels.backend import TritonBackend

        return TritonBackend(fallback=wm.TorchBackend())

    monkeypatch.setitem(wm.BACKENDS, "triton", _triton_backend)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="backend='triton' cannot run: no CUDA GPU.*TRITON_INTERPRET=1"):
        load_model(tiny_dir, backend="triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert isinstance(load_model(tiny_dir, backend="triton").backend, kb.TritonBackend)


def test_package_imports_without_triton():
    code = ("import sys; sys.modules['triton'] = None; sys.modules['triton.language'] = None\n"
            "import torch, workbench.kernels as k\n"
            "assert not k.available() and 'triton is not installed' in k.why_unavailable()\n"
            "idx, w = k.router_torch(torch.randn(3, 5), 2); assert idx.shape == (3, 2)\n"
            "try:\n    k.moe(*[torch.zeros(1)] * 9)\nexcept k.KernelUnavailable as e:\n    print('OK', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK triton is not installed")
