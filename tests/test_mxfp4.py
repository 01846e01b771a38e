"""MXFP4 codec: the format table, OCP rounding, round-trip properties, error bounds, chunking, an oracle."""

import pytest
import torch

from workbench import mxfp4

# Hand-written from the OCP MX v1.0 E2M1 table: code -> value.
TABLE = {0: 0.0, 1: 0.5, 2: 1.0, 3: 1.5, 4: 2.0, 5: 3.0, 6: 4.0, 7: 6.0,
         8: -0.0, 9: -0.5, 10: -1.0, 11: -1.5, 12: -2.0, 13: -3.0, 14: -4.0, 15: -6.0}


def _pack(codes, scale=127):
    """Pack 32 codes (even element in the low nibble) into one block."""
    b = torch.tensor([codes[2 * i] | (codes[2 * i + 1] << 4) for i in range(16)], dtype=torch.uint8)
    return b.view(1, 16), torch.tensor([scale], dtype=torch.uint8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_every_code_and_nibble_order(dtype):
    codes = [c for c in range(16)] * 2
    blocks, scales = _pack(codes, 127 + 3)
    out = mxfp4.dequantize(blocks, scales, dtype)
    assert out.dtype == dtype and out.shape == (32,)
    assert out.float().tolist() == [TABLE[c] * 8 for c in codes]


def test_scale_is_a_power_of_two_of_the_biased_byte():
    for s in (0, 1, 100, 127, 130, 254):
        blocks, _ = _pack([2] * 32)  # element value 1.0
        out = mxfp4.dequantize(blocks, torch.tensor([s], dtype=torch.uint8), torch.float32)
        assert out[0].item() == 2.0 ** (s - 127)


def test_quantize_hand_values_round_to_nearest_even():
    # One block, scale chosen by the max (6 -> floor(log2 6) - 2 = 0, scale byte 127).
    vals = [6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -5.0, 0.3, 2.9, 0.0, -6.0] + [0.0] * 18
    blocks, scales = mxfp4.quantize(torch.tensor(vals))
    assert scales.tolist() == [127]
    got = mxfp4.dequantize(blocks, scales, torch.float32).tolist()
    want = [6.0, 0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -0.0, -4.0, 0.5, 3.0, 0.0, -6.0] + [0.0] * 18
    assert got == want


def test_quantize_saturates_and_picks_the_shared_exponent():
    # max 7.9 -> floor(log2 7.9) = 2 -> exponent 0 -> 7.9 saturates to 6
    blocks, scales = mxfp4.quantize(torch.tensor([7.9] + [1.0] * 31))
    assert scales.tolist() == [127]
    assert mxfp4.dequantize(blocks, scales, torch.float32)[0].item() == 6.0
    # max 0.1 -> floor(log2 0.1) = -4 -> exponent -6: 0.1 / 2**-6 = 6.4 -> 6
    blocks, scales = mxfp4.quantize(torch.tensor([0.1] + [0.0] * 31))
    assert scales.tolist() == [127 - 6]


def test_zero_and_tiny_blocks():
    blocks, scales = mxfp4.quantize(torch.zeros(2, 64))
    assert scales.tolist() == [[0, 0], [0, 0]] and blocks.eq(0).all()
    tiny = torch.full((32,), 2.0 ** -140)  # exponent below the E8M0 range: clamped to -127
    blocks, scales = mxfp4.quantize(tiny)
    assert scales.tolist() == [0]
    assert mxfp4.dequantize(blocks, scales, torch.float32).eq(0).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_rejected(bad):
    w = torch.randn(3, 64)
    w[1, 40] = bad
    with pytest.raises(mxfp4.MXFP4Error, match="non-finite"):
        mxfp4.quantize(w)


def test_shape_and_dtype_errors():
    with pytest.raises(mxfp4.MXFP4Error, match="multiple of 32"):
        mxfp4.quantize(torch.randn(4, 33))
    with pytest.raises(mxfp4.MXFP4Error, match="floating"):
        mxfp4.quantize(torch.ones(32, dtype=torch.int32))
    with pytest.raises(mxfp4.MXFP4Error, match="does not match"):
        mxfp4.dequantize(torch.zeros(2, 3, 16, dtype=torch.uint8), torch.zeros(2, 4, dtype=torch.uint8))
    with pytest.raises(mxfp4.MXFP4Error, match="uint8"):
        mxfp4.dequantize(torch.zeros(2, 16, dtype=torch.int8), torch.zeros(2, dtype=torch.uint8))


@pytest.mark.parametrize("seed", range(5))
def test_requantizing_dequantized_values_is_exact(seed):
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (3, 5, 4, 16), generator=g, dtype=torch.uint8)
    scales = torch.randint(90, 160, (3, 5, 4), generator=g, dtype=torch.uint8)
    d = mxfp4.dequantize(blocks, scales, torch.float32)
    d2 = mxfp4.dequantize(*mxfp4.quantize(d), torch.float32)
    assert torch.equal(d, d2)


@pytest.mark.parametrize("seed", range(5))
def test_quantization_error_is_within_the_per_block_bound(seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(7, 96, generator=g) * torch.logspace(-3, 3, 7).unsqueeze(1)
    blocks, scales = mxfp4.quantize(w)
    err = (mxfp4.dequantize(blocks, scales, torch.float32) - w).abs().view(-1, 32).amax(-1)
    assert (err <= mxfp4.error_bound(scales).view(-1)).all()
    # and the error is no worse than rounding each element to the nearest point of its block's grid
    grid = torch.tensor(sorted({abs(v) for v in mxfp4.E2M1_VALUES}))
    scale = (2.0 ** (scales.float() - 127)).view(-1, 1)
    x = (w.view(-1, 32) / scale).abs().clamp(max=6.0)
    best = (x.unsqueeze(-1) - grid).abs().amin(-1) * scale
    sat = (w.view(-1, 32).abs() - 6 * scale).clamp(min=0)
    assert torch.allclose((mxfp4.dequantize(blocks, scales, torch.float32) - w).abs().view(-1, 32), best + sat,
                          rtol=1e-6, atol=0)


def test_chunked_paths_agree_with_one_chunk(monkeypatch):
    g = torch.Generator().manual_seed(1)
    blocks = torch.randint(0, 256, (5, 7, 3, 16), generator=g, dtype=torch.uint8)
    scales = torch.randint(110, 140, (5, 7, 3), generator=g, dtype=torch.uint8)
    w = torch.randn(9, 11, 64, generator=g)
    full_d, full_q = mxfp4.dequantize(blocks, scales), mxfp4.quantize(w)
    monkeypatch.setattr(mxfp4, "CHUNK_BYTES", 48)  # 3 blocks per dequantize step, 0.375 -> 1 per quantize step
    assert torch.equal(mxfp4.dequantize(blocks, scales), full_d)
    q = mxfp4.quantize(w)
    assert torch.equal(q[0], full_q[0]) and torch.equal(q[1], full_q[1])


def test_dequantize_into_out_buffer():
    blocks = torch.randint(0, 256, (2, 3, 16), dtype=torch.uint8)
    scales = torch.full((2, 3), 127, dtype=torch.uint8)
    out = torch.empty(2, 96, dtype=torch.bfloat16)
    assert mxfp4.dequantize(blocks, scales, out=out) is out
    with pytest.raises(mxfp4.MXFP4Error, match="out must be"):
        mxfp4.dequantize(blocks, scales, out=torch.empty(2, 95))


def test_agrees_with_transformers_unpacking():
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    g = torch.Generator().manual_seed(3)
    blocks = torch.randint(0, 256, (3, 10, 5, 16), generator=g, dtype=torch.uint8)
    scales = torch.randint(115, 135, (3, 10, 5), generator=g, dtype=torch.uint8)
    theirs = convert_moe_packed_tensors(blocks, scales, dtype=torch.bfloat16)  # [E, in, out]
    assert torch.equal(mxfp4.dequantize(blocks, scales), theirs.transpose(1, 2))


def test_block_stats_counts_and_errors():
    blocks, scales = _pack([1] * 16 + [7] * 16, 130)
    s = mxfp4.block_stats(blocks, scales, reference=torch.tensor([0.5 * 8] * 16 + [6.5 * 8] * 16))
    assert s.n_blocks == 1 and s.scale_exponents[130] == 1 and s.exponent_range == (3, 3)
    assert s.codes[1] == 16 and s.codes[7] == 16 and s.codes.sum() == 32
    assert s.block_error.tolist() == [4.0]  # 6.5*8 stored as 6*8
    assert s.block_rel_error.tolist() == [pytest.approx(4.0 / 52.0)]
