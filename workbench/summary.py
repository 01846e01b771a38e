"""Plain-text summaries of checkpoints: config, tensor table, MXFP4 scale statistics per layer."""

from __future__ import annotations

import math

import torch

from . import mxfp4
from .checkpoint import Checkpoint, MXFP4Tensor
from .progress import progress


def format_table(rows: list[list[str]], header: list[str], align: str | None = None) -> str:
    """A fixed-width text table; ``align`` is one 'l'/'r' per column (default: left)."""
    align = align or "l" * len(header)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    def line(r):
        return "  ".join(str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(r, widths, align))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def config_text(ckpt: Checkpoint) -> str:
    c = ckpt.config
    fields = [f"{k} = {v}" for k, v in c.to_original_json().items()]
    return f"{ckpt!r}\n  " + "\n  ".join(fields)


def tensor_table(ckpt: Checkpoint) -> str:
    rows, total = [], 0
    for name, fname, dtype, shape in ckpt.stored_tensors():
        nbytes = math.prod(shape) * dtype.itemsize
        total += nbytes
        rows.append([name, str(dtype).removeprefix("torch."), "x".join(map(str, shape)), human_bytes(nbytes), fname])
    return format_table(rows, ["tensor", "dtype", "shape", "bytes", "file"], "lllrl") + f"\n{len(rows)} tensors, {human_bytes(total)}"


def mxfp4_summary(ckpt: Checkpoint) -> str:
    """Per layer and expert weight: the range and mean of the block scale exponents, and zero-code share."""
    rows = []
    for n in progress(range(ckpt.config.num_hidden_layers), desc="scanning MXFP4 scales", unit="layer"):
        for w in ("mlp1_weight", "mlp2_weight"):
            t = ckpt[f"block.{n}.mlp.{w}"]
            if not isinstance(t, MXFP4Tensor):
                rows.append([str(n), w, "dense", "", "", ""])
                continue
            s = mxfp4.block_stats(t.blocks, t.scales)
            exps = torch.arange(256) - mxfp4.SCALE_BIAS
            mean = float((s.scale_exponents * exps).sum() / s.n_blocks)
            zero = float((s.codes[0] + s.codes[8]) / s.codes.sum())
            lo, hi = s.exponent_range
            rows.append([str(n), w, f"{lo}..{hi}", f"{mean:+.2f}", f"{zero:.1%}", str(s.n_blocks)])
    return format_table(rows, ["layer", "weight", "scale exp", "mean exp", "zero codes", "blocks"], "llrrrr")
