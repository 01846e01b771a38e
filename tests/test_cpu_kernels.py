"""The C++ CPU kernels (workbench.cpu_kernels) against float64 oracles and against the pure-torch path.

Every kernel variant this CPU can run (scalar, AVX2, AVX-512, AVX-512 BF16) is checked, on random shapes:
odd row counts, odd numbers of output rows, K with an odd number of MXFP4 blocks, fp32 and bf16
activations and biases, scales at the ends of the E8M0 range.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from workbench import cpu_kernels, mxfp4
from workbench.model import Experts, moe_experts

pytestmark = pytest.mark.skipif(not cpu_kernels.available(), reason=f"{cpu_kernels.status()}")

U = 2.0 ** -24  # fp32 unit roundoff
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]  # OCP MX v1.0


def runnable_isas() -> list[str]:
    best = cpu_kernels.library().wb_best_isa()
    return list(cpu_kernels.ISAS[: best + 1])


def decode64(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """An independent float64 MXFP4 decoder: low nibble = even element, value = E2M1 * 2^(scale - 127)."""
    lut = torch.tensor(E2M1, dtype=torch.float64)
    b = blocks.long()
    pairs = torch.stack([lut[b & 15], lut[b >> 4]], dim=-1).flatten(-2)  # [..., G, 32]
    vals = pairs * torch.ldexp(torch.ones(scales.shape, dtype=torch.float64), scales.long() - 127)[..., None]
    return vals.flatten(-2)


def random_mxfp4(gen: torch.Generator, E: int, O: int, K: int, extreme: bool = True):
    """Random codes and scales around 2^-4 .. 2^4; with ``extreme`` a few blocks get scale bytes 0, 1 (fp32
    subnormal results) and 200."""
    G = K // 32
    blocks = torch.randint(0, 256, (E, O, G, 16), generator=gen, dtype=torch.uint8)
    scales = torch.randint(123, 132, (E, O, G), generator=gen, dtype=torch.uint8)
    if extreme:
        flat = scales.view(-1)
        pos = torch.randint(0, flat.numel(), (6,), generator=gen)
        flat[pos] = torch.tensor([0, 1, 0, 1, 200, 2], dtype=torch.uint8)
    return blocks, scales


def random_groups(gen: torch.Generator, E: int, R: int) -> tuple[list[int], list[int]]:
    """Split R rows into groups, each with a distinct random expert (odd sizes welcome)."""
    n = int(torch.randint(1, min(E, R) + 1, (), generator=gen))
    cuts = sorted(torch.randperm(R - 1, generator=gen)[: n - 1].add(1).tolist())
    experts = torch.randperm(E, generator=gen)[:n].tolist()
    return [0, *cuts, R], experts


CASES = [  # E, O, K, R
    (3, 7, 32, 1), (4, 33, 96, 5), (2, 64, 64, 9), (5, 19, 320, 3), (3, 12, 2880, 2), (6, 41, 160, 13),
    (2, 50, 128, 24), (3, 35, 256, 40),  # groups of 8+ rows: the decoded-tile path
]


@pytest.mark.parametrize("E,O,K,R", CASES)
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
def test_mxfp4_linear_matches_float64(E, O, K, R, x_dtype):
    gen = torch.Generator().manual_seed(E * 1000 + O * 10 + K + R)
    blocks, scales = random_mxfp4(gen, E, O, K)
    x = torch.randn(R, K, generator=gen).to(x_dtype)
    starts, experts = random_groups(gen, E, R)
    W = decode64(blocks, scales)  # [E, O, K]
    for bias in (None, torch.randn(E, O, generator=gen), torch.randn(E, O, generator=gen).bfloat16()):
        exact = torch.zeros(R, O, dtype=torch.float64)
        bound = torch.zeros(R, O, dtype=torch.float64)  # sum |w x|: any fp32 summation order errs by <= K u of it
        for g, e in enumerate(experts):
            rows = slice(starts[g], starts[g + 1])
            xr = x[rows].double()
            exact[rows] = xr @ W[e].T + (0 if bias is None else bias[e].double())
            bound[rows] = xr.abs() @ W[e].abs().T + (0 if bias is None else bias[e].double().abs())
        for isa in runnable_isas():
            out = cpu_kernels.mxfp4_linear(x, blocks, scales, bias, starts, experts, isa=isa)
            assert out.dtype == torch.float32 and out.shape == (R, O)
            err = (out.double() - exact).abs()
            assert bool((err <= (K + 2) * U * bound + 1e-44).all()), (isa, float(err.max()))


@pytest.mark.parametrize("E,O,K,R", CASES[:4])
def test_mxfp4_linear_equals_dequantize_then_matmul(E, O, K, R):
    """fp32: the fused kernel and today's dequantize-to-fp32 + addmm agree to 1e-6 of the output scale."""
    gen = torch.Generator().manual_seed(7 + K)
    blocks, scales = random_mxfp4(gen, E, O, K, extreme=False)
    x = torch.randn(R, K, generator=gen)
    bias = torch.randn(E, O, generator=gen)
    starts, experts = random_groups(gen, E, R)
    ref = torch.cat([torch.addmm(bias[e], x[starts[g]:starts[g + 1]],
                                 mxfp4.dequantize(blocks[e], scales[e], torch.float32).T)
                     for g, e in enumerate(experts)])
    for isa in runnable_isas():
        out = cpu_kernels.mxfp4_linear(x, blocks, scales, bias, starts, experts, isa=isa)
        assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-6, isa


def test_mxfp4_linear_same_bits_for_any_thread_count():
    """Each output is summed by one thread in a fixed order: the thread count cannot change a bit."""
    gen = torch.Generator().manual_seed(3)
    blocks, scales = random_mxfp4(gen, 4, 300, 256)
    x = torch.randn(11, 256, generator=gen).bfloat16()
    n = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            outs.append(cpu_kernels.mxfp4_linear(x, blocks, scales, None, [0, 4, 11], [3, 1]))
    finally:
        torch.set_num_threads(n)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_mxfp4_linear_rejects_bad_input():
    gen = torch.Generator().manual_seed(0)
    blocks, scales = random_mxfp4(gen, 2, 8, 64)
    x = torch.randn(3, 64)
    with pytest.raises(ValueError, match="do not fit"):
        cpu_kernels.mxfp4_linear(torch.randn(3, 96), blocks, scales, None, [0, 3], [0])
    with pytest.raises(ValueError, match="expert ids"):
        cpu_kernels.mxfp4_linear(x, blocks, scales, None, [0, 3], [2])
    with pytest.raises(ValueError, match="starts"):
        cpu_kernels.mxfp4_linear(x, blocks, scales, None, [0, 2], [0])
    with pytest.raises(ValueError, match="do not fit"):
        cpu_kernels.mxfp4_linear(x.half(), blocks, scales, None, [0, 3], [0])


@pytest.mark.parametrize("O,K,R", [(37, 100, 1), (64, 2880, 3), (5, 33, 7), (130, 64, 2), (9, 4096, 15)])
def test_bf16_linear_is_rounded_fp32_sum(O, K, R):
    gen = torch.Generator().manual_seed(O + K + R)
    W = torch.randn(O, K, generator=gen).bfloat16()
    x = torch.randn(R, K, generator=gen).bfloat16()
    for bias in (None, torch.randn(O, generator=gen).bfloat16(), torch.randn(O, generator=gen)):
        exact = x.double() @ W.double().T + (0 if bias is None else bias.double())
        bound = x.double().abs() @ W.double().abs().T + (0 if bias is None else bias.double().abs())
        near = (K + 2) * U * bound  # how far an fp32 sum may be from exact
        for isa in runnable_isas():
            out = cpu_kernels.bf16_linear(x, W, bias, isa=isa)
            assert out.dtype == torch.bfloat16 and out.shape == (R, O)
            # out is the bf16 rounding of a value within ``near`` of exact: within half a bf16 ulp of it
            err = (out.double() - exact).abs()
            assert bool((err <= 2.0 ** -8 * (exact.abs() + near) + near).all()), isa
    # batched leading dims are kept
    assert cpu_kernels.bf16_linear(x.view(1, R, K), W).shape == (1, R, O)


def test_bf16_linear_rejects_bad_input():
    W = torch.randn(4, 8).bfloat16()
    with pytest.raises(ValueError, match="must be bf16"):
        cpu_kernels.bf16_linear(torch.randn(2, 8), W)
    with pytest.raises(ValueError, match="must be bf16"):
        cpu_kernels.bf16_linear(torch.randn(2, 9).bfloat16(), W)


# --------------------------------------------------------------------------------------------------------
# the model's expert path: fused kernels vs the dequantize path
# --------------------------------------------------------------------------------------------------------

def random_experts(gen: torch.Generator, E: int, H: int, I: int, dtype: torch.dtype) -> Experts:
    w1 = torch.randn(E, 2 * I, H, generator=gen) * 0.3
    w2 = torch.randn(E, H, I, generator=gen) * 0.3
    from workbench.checkpoint import MXFP4Tensor
    return Experts(MXFP4Tensor(*mxfp4.quantize(w1)), torch.randn(E, 2 * I, generator=gen).to(dtype),
                   MXFP4Tensor(*mxfp4.quantize(w2)), torch.randn(E, H, generator=gen).to(dtype))


@pytest.mark.parametrize("E,H,I,N,k", [(4, 64, 32, 1, 1), (8, 96, 64, 7, 2), (5, 128, 96, 3, 3),
                                       (16, 64, 64, 33, 4), (6, 160, 32, 1, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_moe_experts_fused_matches_dequantize_path(E, H, I, N, k, dtype):
    gen = torch.Generator().manual_seed(E + H + I + N + k)
    experts = random_experts(gen, E, H, I, dtype)
    x = torch.randn(N, H, generator=gen).to(dtype)
    idx = torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(N)])
    weights = torch.softmax(torch.randn(N, k, generator=gen), -1)
    with torch.no_grad():
        with cpu_kernels.disabled():
            ref = moe_experts(x, idx, weights, experts, 7.0).float()
        for isa in runnable_isas():
            with cpu_kernels.using(isa):
                out = moe_experts(x, idx, weights, experts, 7.0).float()
            scale = ref.abs().max()
            # fp32: sums in another order; bf16: the SwiGLU output may round to the neighbouring bf16 value
            tol = 1e-6 if dtype == torch.float32 else 2.0 ** -7
            assert float((out - ref).abs().max() / scale) <= tol, isa


def test_model_logits_fused_vs_dequantize_both_layouts(tiny_dir, tiny_hf_dir):
    from workbench import load_model

    tokens = torch.tensor([[200006, 17, 1000, 5, 99, 123, 4444, 200008, 12, 13, 14]])
    for path in (tiny_dir, tiny_hf_dir):
        for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 0.05)):
            m = load_model(path, dtype=dtype)
            with torch.no_grad():
                fast = m(tokens).float()
                with cpu_kernels.disabled():
                    ref = m(tokens).float()
            assert float((fast - ref).abs().max() / ref.abs().max()) <= tol, (path.name, dtype)


def test_fused_path_only_reads_picked_experts(m32, monkeypatch):
    """The fused kernels are called once per expert matmul with exactly the experts the router picked."""
    calls = []
    original = cpu_kernels.mxfp4_linear

    def spy(x, blocks, scales, bias, starts, experts, **kw):
        calls.append((blocks.data_ptr(), list(experts), list(starts)))
        return original(x, blocks, scales, bias, starts, experts, **kw)

    monkeypatch.setattr(cpu_kernels, "mxfp4_linear", spy)
    tokens = torch.tensor([5, 6, 7])
    with torch.no_grad():
        _, trace = m32.run_with_trace(tokens, names="blocks.*.moe.expert_idx")
    assert len(calls) == 2 * len(m32.block)
    for i, block in enumerate(m32.block):
        picked = sorted(set(trace[f"blocks.{i}.moe.expert_idx"].flatten().tolist()))
        for name, (ptr, experts, starts) in zip(("mlp1_weight", "mlp2_weight"), calls[2 * i: 2 * i + 2]):
            assert ptr == getattr(block.mlp.experts, f"{name}_blocks").data_ptr()
            assert experts == picked and starts[-1] == 3 * m32.config.experts_per_token


def test_gradients_take_the_torch_path(m32):
    """The kernels are inference-only: with autograd recording, the differentiable path runs."""
    x = m32.embedding[torch.tensor([3, 4])].detach().requires_grad_()
    y = m32.block[0].mlp.experts
    idx = torch.tensor([[0, 1], [2, 3]])
    w = torch.full((2, 2), 0.5)
    out = moe_experts(x, idx, w, y, 7.0)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------------------
# building and falling back
# --------------------------------------------------------------------------------------------------------

def test_build_is_cached(tmp_path):
    first = cpu_kernels.build(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert cpu_kernels.build(tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.parent.iterdir()] == [first.parent.name]  # no temp dirs left


_SCRIPT = """
import sys, torch
from workbench import cpu_kernels, load_model, make_tiny_checkpoint
path = make_tiny_checkpoint(sys.argv[1] + "/m", preset="tiny")
m = load_model(path, dtype=torch.float32)
with torch.no_grad():
    print(cpu_kernels.isa(), float(m(torch.tensor([1, 2, 3])).sum()))
"""


def _run(tmp_path, **env):
    full = {**os.environ, "WORKBENCH_CACHE": str(tmp_path / "cache"), **env}
    if "WORKBENCH_CPU_ISA" not in env:
        full.pop("WORKBENCH_CPU_ISA", None)
    return subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          env=full, timeout=300)


def test_no_compiler_means_one_notice_and_the_torch_path(tmp_path):
    broken = _run(tmp_path, CXX="/bin/false")
    assert broken.returncode == 0, broken.stderr
    notices = [line for line in broken.stderr.splitlines() if "fast CPU kernels unavailable" in line]
    assert len(notices) == 1 and "pure-torch path" in notices[0]
    isa, value = broken.stdout.split()
    assert isa == "unavailable"
    off = _run(tmp_path, WORKBENCH_CPU_KERNELS="0")
    assert off.stdout.split() == ["unavailable", value] and "unavailable (" not in off.stderr
    on = _run(tmp_path, WORKBENCH_CPU_ISA="scalar")
    assert on.returncode == 0, on.stderr
    assert on.stdout.split()[0] == "scalar"
    assert abs(float(on.stdout.split()[1]) - float(value)) <= 1e-4 * abs(float(value))


def test_model_linear_routes_by_row_count():
    """model.linear: bf16 with < 16 rows goes through the GEMV kernel, more rows through a GEMM; both give the
    fp32-accumulated sum rounded to bf16 (within one bf16 rounding of the float64 value)."""
    from workbench.model import linear

    gen = torch.Generator().manual_seed(11)
    W = torch.randn(300, 640, generator=gen).bfloat16()
    b = torch.randn(300, generator=gen).bfloat16()
    for rows in (1, 3, 15, 16, 40):
        x = torch.randn(rows, 640, generator=gen).bfloat16()
        out = linear(x, W, b)
        exact = x.double() @ W.double().T + b.double()
        assert out.dtype == torch.bfloat16
        assert bool(((out.double() - exact).abs() <= 2.0 ** -8 * exact.abs() + 1e-3).all()), rows
        if rows < 16:
            assert torch.equal(out, cpu_kernels.bf16_linear(x, W, b))
