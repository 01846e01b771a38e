"""MXFP4 (OCP Microscaling v1.0): E2M1 elements in blocks of 32 sharing one E8M0 scale.

Layout as stored by gpt-oss: ``blocks`` uint8 [..., G, 16] (two 4-bit codes per byte, the low nibble is
the even element), ``scales`` uint8 [..., G] (a biased exponent), for a logical tensor [..., G*32]:

    value[..., 32*g + 2*i]     = E2M1[blocks[..., g, i] & 0xF] * 2**(scales[..., g] - 127)
    value[..., 32*g + 2*i + 1] = E2M1[blocks[..., g, i] >> 4]  * 2**(scales[..., g] - 127)

Both directions work in row chunks so the extra memory stays bounded whatever the tensor's size.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

BLOCK = 32  # elements per block
BYTES_PER_BLOCK = BLOCK // 2
SCALE_BIAS = 127
E2M1_EMAX = 2  # the largest E2M1 magnitude, 6 = 1.5 * 2**2
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
CHUNK_BYTES = 1 << 24  # packed bytes processed per step (16 MiB in, 64 MiB of bf16 out)


class MXFP4Error(ValueError):
    """Blocks and scales that do not fit together, or a tensor that cannot be quantized."""


def _check_pair(blocks: torch.Tensor, scales: torch.Tensor) -> None:
    if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise MXFP4Error(f"blocks and scales must be uint8, got {blocks.dtype} and {scales.dtype}")
    if blocks.dim() < 2 or blocks.shape[-1] != BYTES_PER_BLOCK:
        raise MXFP4Error(f"blocks must have shape [..., G, 16], got {list(blocks.shape)}")
    if tuple(scales.shape) != tuple(blocks.shape[:-1]):
        raise MXFP4Error(f"scales shape {list(scales.shape)} does not match blocks {list(blocks.shape)}[:-1]")


@functools.lru_cache(maxsize=None)
@torch.no_grad()
def _pair_table(dtype: torch.dtype) -> torch.Tensor:
    """[256, 2] table: for a byte, its (even, odd) element values."""
    lut = torch.tensor(E2M1_VALUES, dtype=torch.float32)
    byte = torch.arange(256)
    return torch.stack([lut[byte & 0xF], lut[byte >> 4]], dim=-1).to(dtype)


@functools.lru_cache(maxsize=None)
@torch.no_grad()
def _scale_table(dtype: torch.dtype) -> torch.Tensor:
    """[256] table: 2**(byte - 127) in ``dtype``, built exactly in fp32 (byte 255 gives inf)."""
    return torch.ldexp(torch.ones(256), torch.arange(256) - SCALE_BIAS).to(dtype)


def dequantize(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.bfloat16,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """Unpack MXFP4 ``blocks`` [..., G, 16] and ``scales`` [..., G] into ``dtype`` [..., G*32].

    Exact for bf16/fp16/fp32 while the scaled values stay in the dtype's normal range (real checkpoints
    do). Works in chunks of rows; ``out`` may be given to write into existing memory.
    """
    _check_pair(blocks, scales)
    *lead, groups, _ = blocks.shape
    shape = (*lead, groups * BLOCK)
    if out is None:
        out = torch.empty(shape, dtype=dtype, device=blocks.device)
    elif tuple(out.shape) != shape or not out.is_contiguous():
        raise MXFP4Error(f"out must be a contiguous tensor of shape {list(shape)}")
    flat_b = blocks.reshape(-1, BYTES_PER_BLOCK)  # [N, 16], N = all blocks
    flat_s = scales.reshape(-1)
    flat_o = out.view(-1, BYTES_PER_BLOCK, 2)  # [N, 16, 2] views the same memory as [N, 32]
    table = _pair_table(out.dtype).to(blocks.device)
    powers = _scale_table(out.dtype).to(blocks.device)
    # Gather each byte's (even, odd) pair as one integer of twice the width: one scalar gather per byte
    # is ~3x faster on CPU than gathering 2-element rows.
    pair_int = {2: torch.int32, 4: torch.int64}.get(out.dtype.itemsize)
    if pair_int is not None:
        table = table.view(pair_int).view(-1)  # [256]
    step = max(1, CHUNK_BYTES // BYTES_PER_BLOCK)
    for i in range(0, flat_b.shape[0], step):
        b, s, o = flat_b[i : i + step], flat_s[i : i + step], flat_o[i : i + step]
        dest = o.view(-1, 2) if pair_int is None else o.view(-1, 2).view(pair_int).view(-1)
        torch.index_select(table, 0, b.reshape(-1).to(torch.int32), out=dest)
        o.mul_(torch.index_select(powers, 0, s.to(torch.int32)).view(-1, 1, 1))
    return out


def _e2m1_code(x: torch.Tensor) -> torch.Tensor:
    """Round x (already divided by its block scale) to the nearest E2M1 code, ties to even, saturating.

    Grid magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6 (codes 0..7). A midpoint goes to the even code: the
    midpoints .25, 1.25, 2.5, 5 round down; .75, 1.75, 3.5 round up.
    """
    a = x.abs()
    code = torch.zeros(a.shape, dtype=torch.uint8, device=a.device)
    for mid in (0.25, 1.25, 2.5, 5.0):
        code += a > mid
    for mid in (0.75, 1.75, 3.5):
        code += a >= mid
    return code | (torch.signbit(x).to(torch.uint8) << 3)


def quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``w`` [..., K] (K a multiple of 32) to MXFP4 ``(blocks [..., K/32, 16], scales [..., K/32])``.

    OCP MX v1.0: the shared exponent is floor(log2(max |w| in the block)) - 2 (E2M1's emax), clamped to
    the E8M0 range [-127, 127]; elements are w / 2**exponent rounded to nearest-even on the E2M1 grid and
    saturated to +-6. An all-zero block gets exponent -127. NaN or Inf raise MXFP4Error.
    """
    if not w.is_floating_point():
        raise MXFP4Error(f"quantize needs a floating-point tensor, got {w.dtype}")
    if w.dim() == 0 or w.shape[-1] % BLOCK:
        raise MXFP4Error(f"the last dimension must be a multiple of {BLOCK}, got shape {list(w.shape)}")
    *lead, k = w.shape
    groups = k // BLOCK
    flat = w.reshape(-1, BLOCK)
    blocks = torch.empty((flat.shape[0], BYTES_PER_BLOCK), dtype=torch.uint8, device=w.device)
    scales = torch.empty((flat.shape[0],), dtype=torch.uint8, device=w.device)
    step = max(1, CHUNK_BYTES // (BLOCK * 4))
    for i in range(0, flat.shape[0], step):
        x = flat[i : i + step].float()
        bad = ~torch.isfinite(x)
        if bad.any():
            pos = int(bad.flatten().nonzero()[0]) + i * BLOCK
            raise MXFP4Error(f"cannot quantize: non-finite value {flat.flatten()[pos].item()} at flat index {pos}")
        amax = x.abs().amax(dim=-1)
        _, e = torch.frexp(amax)  # amax = m * 2**e with m in [0.5, 1), so floor(log2(amax)) = e - 1
        shared = torch.where(amax > 0, e - 1 - E2M1_EMAX, torch.full_like(e, -SCALE_BIAS))
        shared = shared.clamp(-SCALE_BIAS, SCALE_BIAS)
        codes = _e2m1_code(torch.ldexp(x, (-shared).unsqueeze(-1)))
        blocks[i : i + step] = codes[:, 0::2] | (codes[:, 1::2] << 4)
        scales[i : i + step] = (shared + SCALE_BIAS).to(torch.uint8)
    return blocks.view(*lead, groups, BYTES_PER_BLOCK), scales.view(*lead, groups)


@dataclasses.dataclass
class BlockStats:
    """Summary of an MXFP4 tensor: how its scales and codes are spread, and its error against a reference."""

    scale_exponents: torch.Tensor  # [256] counts of each biased scale byte
    codes: torch.Tensor  # [16] counts of each E2M1 code
    n_blocks: int
    block_error: torch.Tensor | None = None  # [N] max abs error per block, if a reference was given
    block_rel_error: torch.Tensor | None = None  # [N] error / block absmax

    @property
    def exponent_range(self) -> tuple[int, int]:
        nz = self.scale_exponents.nonzero().flatten()
        return (int(nz.min()) - SCALE_BIAS, int(nz.max()) - SCALE_BIAS) if len(nz) else (0, 0)

    def __repr__(self) -> str:
        lo, hi = self.exponent_range
        s = f"BlockStats(n_blocks={self.n_blocks}, scale exponents {lo}..{hi}"
        if self.block_error is not None:
            s += f", max block error {self.block_error.max().item():.4g}"
        return s + ")"


def block_stats(blocks: torch.Tensor, scales: torch.Tensor, reference: torch.Tensor | None = None) -> BlockStats:
    """Histogram of scale exponents and E2M1 codes; per-block error if ``reference`` [..., G*32] is given."""
    _check_pair(blocks, scales)
    b = blocks.reshape(-1)
    codes = torch.bincount((b & 0xF).long(), minlength=16) + torch.bincount((b >> 4).long(), minlength=16)
    stats = BlockStats(torch.bincount(scales.reshape(-1).long(), minlength=256), codes, scales.numel())
    if reference is not None:
        deq = dequantize(blocks, scales, torch.float32).reshape(-1, BLOCK)
        ref = reference.float().reshape(-1, BLOCK)
        if ref.shape != deq.shape:
            raise MXFP4Error(f"reference has {reference.numel()} elements, the MXFP4 tensor {deq.numel()}")
        stats.block_error = (deq - ref).abs().amax(dim=-1)
        stats.block_rel_error = stats.block_error / ref.abs().amax(dim=-1).clamp_min(torch.finfo(torch.float32).tiny)
    return stats


def error_bound(scales: torch.Tensor) -> torch.Tensor:
    """Upper bound on |w - dequantize(quantize(w))| per block, from the scales ``quantize`` chose.

    With X = 2**(scale-127), |w|/X < 8 in every block; inside the grid (|w|/X <= 6) the error is at most
    half the widest step (2/2 = 1) times X, and values in (6, 8) saturate to 6, an error below 2 X.
    """
    return torch.ldexp(torch.full(scales.shape, 2.0), scales.to(torch.int32) - SCALE_BIAS)
