"""benchmarks/gpu.py runs end to end on the CPU (interpreter, tiny shapes) and writes its JSON and summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_gpu_script_interpret_dry_run(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "OUT": str(tmp_path)}
    r = subprocess.run([sys.executable, str(SCRIPT), "--interpret"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "gpu.json").read_text())
    assert res["errors"] == {}
    assert res["checks"] and all(c["ok"] for c in res["checks"].values())
    for part in ("moe", "attention", "proxy_decode", "model_decode"):
        assert part in res, part
    for B in (1, 2):  # batch 1 and 8 on a GPU
        r = res["model_decode"][f"batch{B}"]
        assert r["ok"] and r["graph_vs_eager_rel_err"] < 1e-5, r  # fp32-exact on the CPU: same kernels
        for key in ("graph", "graph_traced", "triton_eager", "torch_eager"):
            assert r[f"{key}_tok_per_s"] > 0
    assert {"attn_padded_prefill", "attn_ring_decode"} <= set(res["checks"])
    assert "checks vs torch references: all ok" in (tmp_path / "gpu.txt").read_text()


def test_gpu_script_refuses_without_gpu_or_interpreter(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "no CUDA GPU" in r.stderr
