"""Every kernel compiles for an H100/H200 (sm_90) with its GPU tile defaults, on this CPU-only machine.

The interpreter checks the numbers but not what only the compiler sees (constexpr shapes, layouts, types).
``benchmarks/gpu.py --compile-sm90`` uses Triton's ahead-of-time path (``triton.compile`` with a
GPUTarget), which builds PTX and a cubin without a GPU. It runs in a subprocess: this test session's
kernels are set up for the interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_every_kernel_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, str(SCRIPT), "--compile-sm90"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(res) == {"mlp1_decode", "mlp2_decode", "mlp1_grouped", "mlp2_grouped", "attention_prefill",
                        "attention_decode_split", "attention_prefill_positions", "attention_decode_positions", "router"}
    for name in ("mlp1_grouped", "mlp2_grouped", "attention_prefill", "attention_prefill_positions"):
        assert res[name]["wgmma"], name  # Hopper tensor cores
    assert all(r["cubin_bytes"] > 0 for r in res.values())
    for name in ("attention_prefill_positions", "attention_decode_positions"):  # the defaults do not spill
        assert res[name].get("stack", 0) == 0, (name, res[name])
