"""``MXFP4View``: one expert's MXFP4 weight taken apart: block scale exponents, E2M1 codes, and the
quantisation error against a reference when one is given.

Sources: a checkpoint (``open_checkpoint(path)``), a path, a model (``load_model``: its experts'
packed weights, ``model.block[layer].mlp.experts.packed(weight)``), or an ``MXFP4Tensor``. A checkpoint that stores experts dense (Hugging Face, not quantised) is quantised
here and the dense weight becomes the reference. Counts travel as binary int32 arrays.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import traitlets

from .. import mxfp4
from ..checkpoint import MXFP4Tensor
from ._base import WorkbenchWidget, as_bytes

E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
ERROR_BINS = 24


def _expert_weight(source, layer: int | None, expert: int | None, weight: str):
    if isinstance(source, (str, os.PathLike)):
        from ..checkpoint import open_checkpoint

        source = open_checkpoint(source)
    if not isinstance(source, (MXFP4Tensor, torch.Tensor)):
        if layer is None:
            raise ValueError("MXFP4View needs a layer for a checkpoint or model")
        blocks = getattr(source, "block", None)
        if blocks is not None and hasattr(blocks, "__len__"):  # a workbench Model
            if not 0 <= layer < len(blocks):
                raise IndexError(f"layer {layer} out of range: the model has {len(blocks)} blocks")
            source = blocks[layer].mlp.experts.packed(weight)
        else:
            name = f"block.{layer}.mlp.{weight}"
            try:
                source = source[name]
            except KeyError:
                raise KeyError(f"{name!r} is not in the {type(source).__name__} (layer {layer} out of range?)") from None
    w = source
    lead = len(w.shape) - 2
    if lead == 1:
        if expert is None:
            raise ValueError(f"{weight} holds {w.shape[0]} experts: pass expert=")
        if not 0 <= expert < w.shape[0]:
            raise IndexError(f"expert {expert} out of range: {weight} has {w.shape[0]} experts")
        w = w[expert]
    elif lead != 0:
        raise ValueError(f"expected an [E, out, in] or [out, in] weight, got shape {list(w.shape)}")
    return w


class MXFP4View(WorkbenchWidget):
    """``MXFP4View(checkpoint_or_model, layer, expert, weight="mlp1_weight", reference=None)``."""

    _module = "mxfp4_view"

    title = traitlets.Unicode("").tag(sync=True)
    scale_counts = traitlets.Bytes(b"").tag(sync=True)  # int32 [256] per biased scale byte
    code_counts = traitlets.Bytes(b"").tag(sync=True)  # int32 [16] per E2M1 nibble
    error_counts = traitlets.Bytes(b"").tag(sync=True)  # int32 [ERROR_BINS] relative block error
    error_edges = traitlets.Bytes(b"").tag(sync=True)  # float32 [ERROR_BINS + 1]
    summary = traitlets.Dict().tag(sync=True)

    def __init__(self, source, layer: int | None = None, expert: int | None = None, *, weight: str = "mlp1_weight",
                 reference: torch.Tensor | None = None, title: str = "", **kwargs):
        w = _expert_weight(source, layer, expert, weight)
        if isinstance(w, torch.Tensor):  # dense expert weights: quantise them, compare against them
            reference = w if reference is None else reference
            w = MXFP4Tensor.quantize(w.float())
        if reference is not None and reference.dim() == 3 and expert is not None:
            reference = reference[expert]
        stats = mxfp4.block_stats(w.blocks, w.scales, reference)
        self.stats = stats
        lo, hi = stats.exponent_range
        summary = {"shape": list(w.shape), "blocks": stats.n_blocks, "exponent_min": lo, "exponent_max": hi,
                   "layer": layer, "expert": expert, "weight": weight, "zero_codes": int(stats.codes[0] + stats.codes[8])}
        error_counts = error_edges = b""
        if reference is not None:
            deq = w.dequantize(torch.float32)
            ref = reference.float().reshape(deq.shape)
            diff = deq - ref
            rel = stats.block_rel_error.clamp(0, 1).numpy()
            counts, edges = np.histogram(rel, bins=ERROR_BINS, range=(0.0, float(max(rel.max(), 1e-6))))
            error_counts, error_edges = as_bytes(counts, "int32"), as_bytes(edges, "float32")
            summary |= {"max_abs_error": float(diff.abs().max()), "rmse": float(diff.pow(2).mean().sqrt()),
                        "relative_error": float(diff.norm() / ref.norm().clamp_min(1e-30)),
                        "max_block_rel_error": float(stats.block_rel_error.max())}
        name = title or (f"layer {layer} · expert {expert} · {weight}" if layer is not None else "MXFP4 tensor")
        super().__init__(title=name, scale_counts=as_bytes(stats.scale_exponents, "int32"),
                         code_counts=as_bytes(stats.codes, "int32"), error_counts=error_counts,
                         error_edges=error_edges, summary=summary, **kwargs)

    def fallback_text(self) -> str:
        s = self.summary
        text = (f"MXFP4View {self.title}: {s['blocks']} blocks, scale exponents {s['exponent_min']}..{s['exponent_max']}, "
                f"E2M1 code counts {self.stats.codes.tolist()}")
        if "relative_error" in s:
            text += f", relative error {s['relative_error']:.4g}, max abs error {s['max_abs_error']:.4g}"
        return text
