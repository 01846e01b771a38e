"""Every hook point's facts in one place: name pattern, shape, token axis, dtype and meaning.

The model exposes its activations at named hook points; traces, interventions, generation, the research
tools and the widgets all read this table instead of keeping their own copies of the facts.

>>> from workbench import hooks
>>> hooks.point("blocks.3.attn.z").dims
('T', 'Hq', 'D')
>>> hooks.token_axis("blocks.0.attn.sink_prob")      # counted from the end: [Hq, T]
-1
>>> hooks.hook_names(1)[:3]
['embed', 'blocks.0.attn.in', 'blocks.0.attn.q']

Shapes are written without the optional leading batch dim (present when tokens were [B, T]). Dims:
T new tokens of this forward call, S keys (cached + new), H hidden, Hq query heads, Hkv key/value heads,
D head_dim, E experts, k experts per token, I expert intermediate size, V vocabulary.

Cost: a point nobody hooks or keeps is an identity call. Two groups change which code runs when asked
for: ``ATTN_INTERNALS`` (scores, probs) need the eager attention instead of the fused one,
and ``MOE_PER_PICK`` (act, expert_out) need the per-(token, pick) expert rows in token order, which the
plain expert path never materialises; both are computed only when hooked or kept.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from typing import Callable, Sequence, Union

__all__ = ["HookPoint", "POINTS", "ATTN_INTERNALS", "MOE_PER_PICK", "point", "hook_names", "token_axis",
           "shape", "name_filter", "table"]

Names = Union[None, str, Sequence[str], Callable[[str], bool]]


@dataclasses.dataclass(frozen=True)
class HookPoint:
    """One hook point: ``pattern`` ("embed", "blocks.{i}.attn.q"), ``dims`` (shape without batch, as dim
    names), ``dtype`` ("model" = the model's dtype, or "float32" / "int64"), ``meaning`` (one line),
    ``needs`` (None, or the slower path it switches on when hooked: "eager attention", "per-pick experts").
    """

    pattern: str
    dims: tuple[str, ...]
    dtype: str
    meaning: str
    needs: str | None = None

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.pattern

    @property
    def suffix(self) -> str:
        """The name after ``blocks.{i}.`` ("attn.q"), or the whole name for top-level points."""
        return self.pattern.removeprefix("blocks.{i}.")

    @property
    def token_axis(self) -> int:
        """The axis indexing token positions, counted from the end (so it holds with or without batch)."""
        return self.dims.index("T") - len(self.dims)

    def shape(self, config, T: int, S: int | None = None) -> tuple[int, ...]:
        """The concrete shape (without batch) for ``T`` tokens and ``S`` keys (default T) under ``config``."""
        sizes = {"T": T, "S": T if S is None else S, "H": config.hidden_size, "Hq": config.num_attention_heads,
                 "Hkv": config.num_key_value_heads, "D": config.head_dim, "E": config.num_experts,
                 "k": config.experts_per_token, "I": config.intermediate_size, "V": config.vocab_size}
        return tuple(sizes[d] for d in self.dims)


_B = "blocks.{i}."
POINTS: tuple[HookPoint, ...] = (
    HookPoint("embed", ("T", "H"), "model", "token embeddings: the residual stream entering block 0"),
    HookPoint(_B + "attn.in", ("T", "H"), "model", "RMSNorm of the residual, the attention's input"),
    HookPoint(_B + "attn.q", ("T", "Hq", "D"), "model", "queries after RoPE"),
    HookPoint(_B + "attn.k", ("T", "Hkv", "D"), "model", "keys after RoPE (this call's tokens only)"),
    HookPoint(_B + "attn.v", ("T", "Hkv", "D"), "model", "values (this call's tokens only)"),
    HookPoint(_B + "attn.scores", ("Hq", "T", "S"), "float32",
              "q.k / sqrt(D) plus the mask (-inf where a key is not visible), before the softmax",
              "eager attention"),
    HookPoint(_B + "attn.probs", ("Hq", "T", "S"), "float32",
              "attention weights on the real keys; a row sums to 1 - sink_prob", "eager attention"),
    HookPoint(_B + "attn.sink_prob", ("Hq", "T"), "float32",
              "the weight each head's sink took (free: every attention path returns it)"),
    HookPoint(_B + "attn.z", ("T", "Hq", "D"), "model",
              "each head's output sum_j probs_hij v_j, before the output projection (TransformerLens hook_z)"),
    HookPoint(_B + "attn.out", ("T", "H"), "model", "the attention output z Wo^T + bo, added to the residual"),
    HookPoint(_B + "resid_mid", ("T", "H"), "model", "the residual stream after attention"),
    HookPoint(_B + "moe.in", ("T", "H"), "model", "RMSNorm of the residual, the MoE's input"),
    HookPoint(_B + "moe.router_logits", ("T", "E"), "model", "router logits t Wg^T + bg"),
    HookPoint(_B + "moe.expert_idx", ("T", "k"), "int64",
              "the k picked experts, best first; a replacement re-derives the weights from the router logits"),
    HookPoint(_B + "moe.expert_weights", ("T", "k"), "float32", "softmax of the k picked router logits"),
    HookPoint(_B + "moe.act", ("T", "k", "I"), "model",
              "each pick's SwiGLU activations, the input of its expert's second matmul", "per-pick experts"),
    HookPoint(_B + "moe.expert_out", ("T", "k", "H"), "model",
              "each picked expert's output (with its bias), before weighting", "per-pick experts"),
    HookPoint(_B + "moe.out", ("T", "H"), "model", "the MoE output sum_k weight_k expert_out_k, added to the residual"),
    HookPoint(_B + "resid_post", ("T", "H"), "model", "the residual stream after the block"),
    HookPoint("final_norm", ("T", "H"), "model", "RMSNorm of the last residual, the unembedding's input"),
    HookPoint("logits", ("T", "V"), "model", "final_norm Wu^T (no bias)"),
)

_BY_SUFFIX = {p.suffix: p for p in POINTS}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
BLOCK_POINTS: tuple[str, ...] = tuple(p.suffix for p in POINTS if p.per_layer)
ATTN_INTERNALS: tuple[str, ...] = tuple(p.suffix for p in POINTS if p.needs == "eager attention")
MOE_PER_PICK: tuple[str, ...] = tuple(p.suffix for p in POINTS if p.needs == "per-pick experts")


def point(name: str) -> HookPoint:
    """The ``HookPoint`` for a concrete name ("blocks.3.attn.q") or a pattern ("blocks.{i}.attn.q")."""
    m = _BLOCK.match(name)
    suffix = m.group(2) if m else name.removeprefix(_B)
    p = _BY_SUFFIX.get(suffix)
    if p is None or p.per_layer != (m is not None or name.startswith(_B)):
        raise KeyError(_unknown_name(name, [q.pattern for q in POINTS]))
    return p


def token_axis(name: str) -> int:
    """The axis (counted from the end) indexing token positions in hook point ``name``'s tensor."""
    return point(name).token_axis


def shape(name: str, config, T: int, S: int | None = None) -> tuple[int, ...]:
    """Hook point ``name``'s shape (without batch) for ``T`` tokens and ``S`` keys under ``config``."""
    return point(name).shape(config, T, S)


def hook_names(num_layers: int) -> list[str]:
    """Every hook point name of a model with ``num_layers`` blocks, in the order a forward pass reaches them."""
    first = next(n for n, p in enumerate(POINTS) if p.per_layer)
    before = [p.pattern for p in POINTS[:first]]
    after = [p.pattern for p in POINTS[first:] if not p.per_layer]
    return before + [f"blocks.{i}.{s}" for i in range(num_layers) for s in BLOCK_POINTS] + after


def table(config=None, T: int | None = None):
    """A DataFrame of every hook point: pattern, dims (or the concrete shape for ``config`` and ``T``),
    token_axis, dtype, meaning, needs."""
    import pandas as pd

    rows = [{"name": p.pattern, "shape": list(p.shape(config, T)) if config is not None and T else list(p.dims),
             "token_axis": p.token_axis, "dtype": p.dtype, "meaning": p.meaning, "needs": p.needs or ""}
            for p in POINTS]
    return pd.DataFrame(rows).set_index("name")


def is_pattern(s: str) -> bool:
    return any(c in s for c in "*?[")


def name_filter(names: Names, valid: Sequence[str]) -> Callable[[str], bool]:
    """A predicate from None (everything), a name or glob, a list of them, or a predicate.

    Names and globs are checked against ``valid``: one that matches no hook point is an error.
    """
    if names is None:
        return lambda name: True
    if callable(names):
        return names
    patterns = [names] if isinstance(names, str) else list(names)
    exact, globs = set(), []
    for p in patterns:
        if not isinstance(p, str):
            raise TypeError(f"hook names must be strings or glob patterns, got {p!r}")
        if is_pattern(p):
            if not any(fnmatch.fnmatchcase(v, p) for v in valid):
                raise ValueError(f"pattern {p!r} matches no hook point (names look like 'blocks.0.attn.q')")
            globs.append(p)
        elif p not in valid:
            raise ValueError(_unknown_name(p, valid))
        else:
            exact.add(p)
    return lambda name: name in exact or any(fnmatch.fnmatchcase(name, g) for g in globs)


def _unknown_name(name: str, valid: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, valid, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else " (names look like 'blocks.0.attn.q')"
    return f"no hook point named {name!r}{hint}"
