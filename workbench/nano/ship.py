"""The nano model's shipped weights: only the trained rows, in the package; the full checkpoint on first use.

``nano.safetensors`` (package data, a few MB) holds ``vocab`` (int32 [U], the ids training updated), the
embedding and unembedding rows of those ids (bf16 [U, H]), ``unembedding.untrained`` (bf16 [H], the
unembedding row every other id shares; see ``train``), the expert matrices packed as MXFP4 (``*.blocks``,
``*.scales``, exactly what the checkpoint stores) and every other tensor in bf16; its metadata holds the
model config (full vocabulary), the training config, commit and thread count. ``write_checkpoint`` expands it
into an ordinary gpt-oss checkpoint with all V = 201088 rows (untrained ids: zero embedding rows, the shared
unembedding row) in either layout, so
every loader, transformers included, reads it unchanged. ``nano_checkpoint()`` does that once per layout into
the user cache (``workbench.default_checkpoint()`` is this).

This module is a format module: it reads and writes tensors and knows nothing of the model or of Harmony.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..cache import atomic_dir, atomic_path, cache_dir
from ..checkpoint import MXFP4Tensor, expected_shapes, is_expert_weight, save_checkpoint
from ..config import ModelConfig

WEIGHTS = Path(__file__).parent / "weights" / "nano.safetensors"
ROWS = ("embedding.weight", "unembedding.weight")
UNTRAINED = "unembedding.untrained"  # [H]: the unembedding row of every id outside ``vocab``


def save_weights(path: str | Path, train_config, vocab: list[int], params: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write the trained model (canonical names, U-row embedding/unembedding, fp32 masters) as shipped weights."""
    from safetensors.torch import save_file

    cfg = train_config.model_config
    tensors = {"vocab": torch.tensor(vocab, dtype=torch.int32)}
    for name, p in params.items():
        if name in ROWS:
            tensors[name.replace(".weight", ".rows")] = p.to(torch.bfloat16).contiguous()
        elif is_expert_weight(name):
            q = MXFP4Tensor.quantize(p.float())
            tensors[f"{name}.blocks"], tensors[f"{name}.scales"] = q.blocks.contiguous(), q.scales.contiguous()
        else:
            tensors[name] = p.to(torch.bfloat16).contiguous()
    metadata = {"config": json.dumps(cfg.to_original_json()), "train": json.dumps(meta, default=str)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def read_weights(path: str | Path = WEIGHTS) -> tuple[ModelConfig, dict[str, torch.Tensor | MXFP4Tensor], dict]:
    """(config, canonical tensors with all V rows, metadata) from a shipped weights file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the nano weights are missing (train them with `workbench train-nano`)")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        raw = {k: f.get_tensor(k) for k in f.keys()}
    if "config" not in meta or "vocab" not in raw:
        raise ValueError(f"{path}: not a nano weights file (no config metadata or vocab tensor)")
    cfg = ModelConfig.from_original_json(json.loads(meta["config"]), str(path))
    vocab = raw.pop("vocab").long()
    tensors = {UNTRAINED: raw[UNTRAINED]} if UNTRAINED in raw else {}
    for name in expected_shapes(cfg):
        if name in ROWS:
            tensors[name.replace(".weight", ".rows")] = raw[name.replace(".weight", ".rows")]
        elif is_expert_weight(name):
            tensors[name] = MXFP4Tensor(raw[f"{name}.blocks"], raw[f"{name}.scales"])
        else:
            tensors[name] = raw[name]
    return cfg, expand(cfg, vocab, tensors), {k: json.loads(v) for k, v in meta.items()}


def expand(cfg: ModelConfig, vocab: torch.Tensor, tensors: dict) -> dict:
    """Canonical tensors with all V rows: the embedding and unembedding ``*.rows`` [U, H] scattered at ``vocab``
    into [V, H] matrices whose other rows are zero (embedding) or ``tensors[UNTRAINED]`` (unembedding; zero
    when absent); everything else as given."""
    out = dict(tensors)
    shared = out.pop(UNTRAINED, None)
    for name in ROWS:
        rows = out.pop(name.replace(".weight", ".rows"))
        full = torch.zeros(expected_shapes(cfg)[name], dtype=rows.dtype)
        if name == "unembedding.weight" and shared is not None:
            full[:] = shared.to(rows.dtype)
        full[vocab] = rows
        out[name] = full
    return out


def dense_checkpoint_from_state(state_path: str | Path, out: str | Path, *, layout: str = "original") -> Path:
    """A checkpoint with dense (bf16) experts from a training state's fp32 weights: the model before MXFP4
    quantisation, to measure what quantisation costs."""
    state = torch.load(state_path, weights_only=False)
    cfg = ModelConfig(**dict(state["config"]["model"]))
    weights = {(n.replace(".weight", ".rows") if n in ROWS else n): w for n, w in state["weights"].items()}
    return save_checkpoint(out, cfg, expand(cfg, torch.tensor(state["vocab"]), weights), layout=layout)


def write_checkpoint(out: str | Path, *, layout: str = "original", weights: str | Path = WEIGHTS) -> Path:
    """The full nano checkpoint (V rows, MXFP4 experts) in ``layout`` ("original" or "hf") at ``out``."""
    cfg, tensors, _ = read_weights(weights)
    return save_checkpoint(out, cfg, tensors, layout=layout)


def nano_checkpoint(layout: str = "original", weights: str | Path = WEIGHTS) -> Path:
    """The nano checkpoint in the user cache (``.../models/nano-<layout>-<hash of the weights>``), written
    atomically on first use; a new shipped version gets a new folder."""
    if layout not in ("original", "hf"):
        raise ValueError(f"layout must be 'original' or 'hf', got {layout!r}")
    digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:12] if Path(weights).is_file() else "missing"
    final = cache_dir() / "models" / f"nano-{layout}-{digest}"
    if not (final / "config.json").is_file():
        with atomic_dir(final) as tmp:
            write_checkpoint(tmp, layout=layout, weights=weights)
    return final
