"""Random gpt-oss checkpoints of the real structure, made on this machine.

``make_tiny_checkpoint(path, preset="tiny", layout="original", seed=0)`` writes config.json and
safetensors with MXFP4 experts and BF16 everything else, byte-for-byte deterministic for a seed, the
same weights in both layouts. Each tensor (each expert, for expert weights) draws from its own
generator seeded by (seed, name), so tensors are streamed to disk one at a time with bounded memory.

Values are chosen to exercise every code path: non-zero biases, sink logits spread over several units,
expert scales such that some SwiGLU pre-activations pass the +-7 clamp, router logits far enough apart
that top-k picks vary by token.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import torch

from . import mxfp4
from .cache import atomic_dir, cache_dir
from .checkpoint import MXFP4Tensor, Producer, expected_shapes, is_expert_weight, save_checkpoint
from .config import PRESETS, ModelConfig

# rms of a uniformly random E2M1 code: sqrt(mean of squared grid values over all 16 codes)
_E2M1_RMS = math.sqrt(sum(v * v for v in mxfp4.E2M1_VALUES) / 16)


def _generator(seed: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}/{name}".encode()) + (seed << 32))


def _dense(seed: int, name: str, shape, std: float, mean: float = 0.0) -> torch.Tensor:
    t = torch.randn(shape, generator=_generator(seed, name)) * std + mean
    return t.to(torch.bfloat16)


def _random_mxfp4(seed: int, name: str, shape, rms: float) -> MXFP4Tensor:
    """Uniformly random E2M1 codes with block exponents around log2(rms / rms(E2M1)) +- 1, per expert."""
    experts, rows, cols = shape
    groups = cols // mxfp4.BLOCK
    center = round(math.log2(rms / _E2M1_RMS)) + mxfp4.SCALE_BIAS
    blocks = torch.empty((experts, rows, groups, mxfp4.BYTES_PER_BLOCK), dtype=torch.uint8)
    scales = torch.empty((experts, rows, groups), dtype=torch.uint8)
    for e in range(experts):
        g = _generator(seed, f"{name}[{e}]")
        torch.randint(0, 256, blocks.shape[1:], generator=g, dtype=torch.uint8, out=blocks[e])
        torch.randint(center - 1, center + 2, scales.shape[1:], generator=g, dtype=torch.uint8, out=scales[e])
    return MXFP4Tensor(blocks, scales)


def random_tensor(cfg: ModelConfig, name: str, seed: int = 0):
    """The built-in model's value for one canonical tensor."""
    shape = expected_shapes(cfg)[name]
    H, I = cfg.hidden_size, cfg.intermediate_size
    kind = name.split(".", 2)[-1] if name.startswith("block.") else name
    if is_expert_weight(name):
        # mlp1: pre-activations h = x W1^T with |x| ~ 1 per coordinate; rms(h) ~ 5 puts a fair share past 7.
        rms = 5.0 / math.sqrt(H) if kind.endswith("mlp1_weight") else 0.5 / math.sqrt(I)
        return _random_mxfp4(seed, name, shape, rms)
    std, mean = {
        "embedding.weight": (1.0, 0.0),
        "unembedding.weight": (1.0 / math.sqrt(H), 0.0),
        "norm.scale": (0.1, 1.0),
        "attn.norm.scale": (0.1, 1.0),
        "mlp.norm.scale": (0.1, 1.0),
        "attn.qkv.weight": (1.0 / math.sqrt(H), 0.0),
        "attn.qkv.bias": (0.2, 0.0),
        "attn.sinks": (1.5, 0.0),  # spread: some heads park most mass on the sink, some little
        "attn.out.weight": (1.0 / math.sqrt(cfg.q_dim), 0.0),
        "attn.out.bias": (0.05, 0.0),
        "mlp.gate.weight": (2.0 / math.sqrt(H), 0.0),
        "mlp.gate.bias": (0.5, 0.0),
        "mlp.mlp1_bias": (0.5, 0.0),
        "mlp.mlp2_bias": (0.05, 0.0),
    }[kind]
    return _dense(seed, name, shape, std, mean)


def make_tiny_checkpoint(path: str | Path, *, preset: str = "tiny", layout: str = "original", seed: int = 0,
                         config: ModelConfig | None = None) -> Path:
    """Write a random checkpoint of the gpt-oss structure to ``path``; return ``path``.

    ``preset``: "tiny" (tests, seconds), "small" (benchmarks), "20b" or "120b" (real shapes, ~13 / ~65 GB,
    streamed to disk). ``config`` overrides the preset's shapes. Same seed, same weights in both layouts.
    """
    if config is None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        config = PRESETS[preset]
    producers: dict[str, Producer] = {
        name: (lambda name=name: random_tensor(config, name, seed)) for name in expected_shapes(config)
    }
    return save_checkpoint(path, config, producers, layout=layout)


def default_checkpoint(preset: str = "nano", layout: str = "original", seed: int = 0) -> Path:
    """The built-in checkpoint in the user cache, made atomically on first use.

    ``preset="nano"`` (the default): the trained nano model shipped with the package (``workbench.nano``;
    ``seed`` does not apply). A random preset ("tiny", "small", "20b", "120b"): random weights of that shape,
    for tests, shapes and benchmarks.
    """
    if preset == "nano":
        from .nano.ship import nano_checkpoint  # a format module: tensors in, checkpoint out

        return nano_checkpoint(layout)
    final = cache_dir() / "models" / f"{preset}-{layout}-seed{seed}"
    if not (final / "config.json").is_file():
        with atomic_dir(final) as tmp:
            make_tiny_checkpoint(tmp, preset=preset, layout=layout, seed=seed)
    return final
